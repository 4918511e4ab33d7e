/* TAP skips on top of test.h: a case that cannot run here reports "ok N - name # SKIP why". */
#pragma once

#include "test.h"

extern const char *ms_test_skip_reason;

/* End the current case as skipped; reason says what the machine lacks. */
#define SKIP(reason)                                                                               \
    do {                                                                                           \
        ms_test_skip_reason = (reason);                                                            \
        return;                                                                                    \
    } while (0)

/* MS_TEST_MAIN, with the TAP skip directive for cases that called SKIP(). */
#define MS_TEST_MAIN_WITH_SKIP(...)                                                                \
    int ms_test_failures = 0;                                                                      \
    const char *ms_test_skip_reason = NULL;                                                        \
    int main(void) {                                                                               \
        static const MsTestCase cases[] = {__VA_ARGS__};                                           \
        size_t n = sizeof(cases) / sizeof(cases[0]);                                               \
        int failed = 0;                                                                            \
        printf("1..%zu\n", n);                                                                     \
        for (size_t i = 0; i < n; i++) {                                                           \
            int before = ms_test_failures;                                                         \
            ms_test_skip_reason = NULL;                                                            \
            cases[i].fn();                                                                         \
            bool ok = ms_test_failures == before;                                                  \
            bool skipped = ok && ms_test_skip_reason;                                              \
            failed += !ok;                                                                         \
            printf("%s %zu - %s%s%s\n", ok ? "ok" : "not ok", i + 1, cases[i].name,                \
                   skipped ? " # SKIP " : "", skipped ? ms_test_skip_reason : "");                 \
            fflush(stdout);                                                                        \
        }                                                                                          \
        return failed ? 1 : 0;                                                                     \
    }

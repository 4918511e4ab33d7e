/* A minimal TAP-producing test harness: each file is one executable with TEST() functions. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef void (*ms_test_fn)(void);
typedef struct {
    const char *name;
    ms_test_fn fn;
} MsTestCase;

extern int ms_test_failures;

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "# %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);         \
            ms_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_OK(expr)                                                                            \
    do {                                                                                           \
        long _r = (long) (expr);                                                                   \
        if (_r < 0) {                                                                              \
            fprintf(stderr, "# %s:%d: %s failed: %ld\n", __FILE__, __LINE__, #expr, _r);           \
            ms_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ_INT(a, b)                                                                        \
    do {                                                                                           \
        long long _a = (long long) (a), _b = (long long) (b);                                      \
        if (_a != _b) {                                                                            \
            fprintf(stderr, "# %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,    \
                    #b, _a, _b);                                                                   \
            ms_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *_a = (a), *_b = (b);                                                           \
        if (!_a || !_b || strcmp(_a, _b) != 0) {                                                   \
            fprintf(stderr, "# %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,    \
                    #a, #b, _a ? _a : "(null)", _b ? _b : "(null)");                               \
            ms_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_CONTAINS(haystack, needle)                                                          \
    do {                                                                                           \
        const char *_h = (haystack), *_n = (needle);                                               \
        if (!_h || !strstr(_h, _n)) {                                                              \
            fprintf(stderr, "# %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,       \
                    _h ? _h : "(null)", _n);                                                       \
            ms_test_failures++;                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* sd-event's child sources need SIGCHLD blocked, as mongosnapd blocks it: 0 or -1. */
static inline int ms_test_block_sigchld(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    return sigprocmask(SIG_BLOCK, &mask, NULL);
}

/* A stand-in worker for the agent's tests: body (after "#!/bin/sh") in an executable file at
 * path (path_size bytes, named after tag and the pid). 0, or -1 when it cannot be written. */
static inline int ms_test_write_script(char *path, size_t path_size, const char *tag,
                                       const char *body) {
    snprintf(path, path_size, "/tmp/mongosnap-test-%s-%d", tag, (int) getpid());
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    fprintf(f, "#!/bin/sh\n%s", body);
    if (fclose(f) != 0)
        return -1;
    return chmod(path, 0700);
}

/* Run every case, print TAP, exit non-zero if any failed. */
#define MS_TEST_MAIN(...)                                                                          \
    int ms_test_failures = 0;                                                                      \
    int main(void) {                                                                               \
        static const MsTestCase cases[] = {__VA_ARGS__};                                           \
        size_t n = sizeof(cases) / sizeof(cases[0]);                                               \
        int failed = 0;                                                                            \
        printf("1..%zu\n", n);                                                                     \
        for (size_t i = 0; i < n; i++) {                                                           \
            int before = ms_test_failures;                                                         \
            cases[i].fn();                                                                         \
            bool ok = ms_test_failures == before;                                                  \
            failed += !ok;                                                                         \
            printf("%s %zu - %s\n", ok ? "ok" : "not ok", i + 1, cases[i].name);                   \
            fflush(stdout);                                                                        \
        }                                                                                          \
        return failed ? 1 : 0;                                                                     \
    }

#define TEST_CASE(fn)                                                                              \
    { #fn, fn }

/* Tests for retention: Keep* tiers across day/ISO week/month boundaries, MaxAge, expire times. */
#include <time.h>

#include "common/macro.h"
#include "retention/retention.h"
#include "test.h"

#define USEC_PER_SEC 1000000ULL
#define USEC_PER_HOUR (3600ULL * USEC_PER_SEC)
#define USEC_PER_DAY (24ULL * USEC_PER_HOUR)
#define CASE_SNAPSHOTS_MAX 12

/* "2026-12-31T23:59:59" (UTC) in microseconds. */
static uint64_t at(const char *iso) {
    struct tm tm = {0};
    const char *end = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || *end) {
        fprintf(stderr, "# bad time in test: %s\n", iso);
        abort();
    }
    return (uint64_t) timegm(&tm) * USEC_PER_SEC;
}

typedef struct RetentionCase {
    const char *name;
    MsRetentionRules rules;
    const char *now;
    const char *snapshots[CASE_SNAPSHOTS_MAX]; /* each is its own id */
    const char *kept;                          /* ids kept, in input order, space-separated */
} RetentionCase;

/* Run one case; returns a newly allocated "id id ..." of the kept snapshots, in input order. */
static char *run_case(const RetentionCase *c, MsRetentionDecision *d, size_t *ret_n) {
    MsRetentionSnapshot snaps[CASE_SNAPSHOTS_MAX];
    size_t n = 0;
    for (; n < CASE_SNAPSHOTS_MAX && c->snapshots[n]; n++)
        snaps[n] = (MsRetentionSnapshot){c->snapshots[n], at(c->snapshots[n])};
    MsError e = MS_ERROR_INIT;
    if (ms_retention_decide(&c->rules, at(c->now), snaps, n, d, &e) < 0)
        return NULL;
    char *out = calloc(1, CASE_SNAPSHOTS_MAX * 24);
    for (size_t i = 0; out && i < n; i++)
        if (d[i].keep) {
            if (out[0])
                strcat(out, " ");
            strcat(out, c->snapshots[i]);
        }
    *ret_n = n;
    return out;
}

static const RetentionCase retention_cases[] = {
    {"no rules keep everything",
     {0},
     "2026-06-01T00:00:00",
     {"2020-01-01T00:00:00", "2026-05-31T00:00:00"},
     "2020-01-01T00:00:00 2026-05-31T00:00:00"},
    {"KeepLast=2",
     {.keep_last = 2},
     "2026-06-01T00:00:00",
     {"2026-05-01T00:00:00", "2026-05-03T00:00:00", "2026-05-02T00:00:00", "2026-04-01T00:00:00"},
     "2026-05-03T00:00:00 2026-05-02T00:00:00"},
    {"KeepDaily=3: newest per day, days without snapshots do not count, midnight splits days",
     {.keep_daily = 3},
     "2026-03-10T00:00:00",
     {"2026-03-01T01:00:00", "2026-03-01T23:00:00", "2026-03-02T12:00:00", "2026-03-04T00:00:00",
      "2026-03-04T23:59:59", "2026-02-28T23:59:59"},
     "2026-03-01T23:00:00 2026-03-02T12:00:00 2026-03-04T23:59:59"},
    {"KeepDaily=2: 23:59:59 and 00:00:00 are different days",
     {.keep_daily = 2},
     "2026-03-10T00:00:00",
     {"2026-03-01T23:59:59", "2026-03-02T00:00:00", "2026-02-28T12:00:00"},
     "2026-03-01T23:59:59 2026-03-02T00:00:00"},
    {"KeepWeekly=3 across the ISO year boundary: 2026-12-28..2027-01-03 is one week (2026-W53)",
     {.keep_weekly = 3},
     "2027-02-01T00:00:00",
     {"2026-12-27T12:00:00", "2026-12-28T00:00:00", "2026-12-31T12:00:00", "2027-01-01T12:00:00",
      "2027-01-03T23:59:59", "2027-01-04T00:00:00", "2026-12-20T00:00:00"},
     "2026-12-27T12:00:00 2027-01-03T23:59:59 2027-01-04T00:00:00"},
    {"KeepWeekly=2: 2026-12-31 and 2027-01-01 share a week, so only the Friday counts",
     {.keep_weekly = 2},
     "2027-02-01T00:00:00",
     {"2026-12-31T12:00:00", "2027-01-01T12:00:00", "2026-12-27T00:00:00"},
     "2027-01-01T12:00:00 2026-12-27T00:00:00"},
    {"KeepWeekly=2: 2025-12-29 (Monday) opens 2026-W01; Sunday 2025-12-28 is 2025-W52",
     {.keep_weekly = 2},
     "2026-02-01T00:00:00",
     {"2025-12-28T23:00:00", "2025-12-29T00:00:00", "2026-01-01T00:00:00", "2025-12-27T00:00:00"},
     "2025-12-28T23:00:00 2026-01-01T00:00:00"},
    {"KeepMonthly=3: month ends, a leap day, a year change",
     {.keep_monthly = 3},
     "2028-06-01T00:00:00",
     {"2026-01-31T23:59:59", "2026-02-01T00:00:00", "2026-02-28T12:00:00", "2028-02-29T12:00:00",
      "2028-03-01T00:00:00", "2027-12-31T23:00:00", "2028-01-01T01:00:00"},
     "2028-02-29T12:00:00 2028-03-01T00:00:00 2028-01-01T01:00:00"},
    {"KeepMonthly=2: January 31 23:59:59 and February 1 00:00 are different months",
     {.keep_monthly = 2},
     "2026-06-01T00:00:00",
     {"2026-01-15T00:00:00", "2026-01-31T23:59:59", "2026-02-01T00:00:00"},
     "2026-01-31T23:59:59 2026-02-01T00:00:00"},
    {"KeepMonthly=2: the same month of two years is two months",
     {.keep_monthly = 2},
     "2028-06-01T00:00:00",
     {"2027-02-10T00:00:00", "2028-02-10T00:00:00", "2027-02-01T00:00:00"},
     "2027-02-10T00:00:00 2028-02-10T00:00:00"},
    {"KeepMonthly=2: 2026-12-31 23:00 and 2027-01-01 01:00 are different months",
     {.keep_monthly = 2},
     "2027-06-01T00:00:00",
     {"2026-12-31T23:00:00", "2027-01-01T01:00:00", "2026-12-01T00:00:00"},
     "2026-12-31T23:00:00 2027-01-01T01:00:00"},
    {"tiers combine: KeepLast=1 + KeepDaily=2 + KeepMonthly=2 (a snapshot kept by any rule stays)",
     {.keep_last = 1, .keep_daily = 2, .keep_monthly = 2},
     "2026-06-01T00:00:00",
     {"2026-05-31T18:00:00", "2026-05-31T06:00:00", "2026-05-30T06:00:00", "2026-05-29T06:00:00",
      "2026-04-15T00:00:00", "2026-04-30T00:00:00"},
     "2026-05-31T18:00:00 2026-05-30T06:00:00 2026-04-30T00:00:00"},
    {"MaxAge=30d only: exactly 30 days old is expired",
     {.max_age_usec = 30 * USEC_PER_DAY},
     "2026-06-30T00:00:00",
     {"2026-05-30T00:00:00", "2026-05-31T00:00:00", "2026-05-31T00:00:01", "2026-06-29T23:00:00"},
     "2026-05-31T00:00:01 2026-06-29T23:00:00"},
    {"MaxAge caps KeepLast: KeepLast=5 + MaxAge=2d",
     {.keep_last = 5, .max_age_usec = 2 * USEC_PER_DAY},
     "2026-06-10T12:00:00",
     {"2026-06-10T00:00:00", "2026-06-09T00:00:00", "2026-06-08T00:00:00", "2026-06-07T00:00:00",
      "2026-06-06T00:00:00", "2026-06-05T00:00:00"},
     "2026-06-10T00:00:00 2026-06-09T00:00:00"},
    {"KeepDaily=2 + MaxAge=7d: unselected young snapshots go too",
     {.keep_daily = 2, .max_age_usec = 7 * USEC_PER_DAY},
     "2026-06-10T12:00:00",
     {"2026-06-10T01:00:00", "2026-06-10T02:00:00", "2026-06-09T01:00:00", "2026-06-08T01:00:00"},
     "2026-06-10T02:00:00 2026-06-09T01:00:00"},
    {"the newest is never expired, even past MaxAge",
     {.max_age_usec = USEC_PER_DAY},
     "2026-06-10T00:00:00",
     {"2026-01-01T00:00:00", "2026-01-02T00:00:00"},
     "2026-01-02T00:00:00"},
};

static void table_cases(void) {
    for (size_t i = 0; i < ELEMENTSOF(retention_cases); i++) {
        MsRetentionDecision d[CASE_SNAPSHOTS_MAX];
        size_t n = 0;
        _cleanup_free_ char *kept = run_case(&retention_cases[i], d, &n);
        if (!kept || strcmp(kept, retention_cases[i].kept) != 0) {
            fprintf(stderr, "# case '%s':\n#   kept     %s\n#   expected %s\n",
                    retention_cases[i].name, kept ? kept : "(error)", retention_cases[i].kept);
            ms_test_failures++;
        }
    }
}

static void keep_last_only_reasons_and_expiry(void) {
    MsRetentionRules r = {.keep_last = 2};
    MsRetentionSnapshot s[] = {
        {"a", at("2026-05-01T00:00:00")},
        {"b", at("2026-05-02T00:00:00")},
        {"c", at("2026-05-03T00:00:00")},
    };
    MsRetentionDecision d[3];
    uint64_t now = at("2026-06-01T00:00:00");
    ASSERT_OK(ms_retention_decide(&r, now, s, 3, d, NULL));
    ASSERT(!d[0].keep);
    ASSERT_EQ_INT(d[0].kept_by, 0);
    ASSERT_EQ_INT(d[0].expired_by, MS_RETENTION_EXPIRY_NOT_SELECTED);
    ASSERT_EQ_INT(d[0].expire_usec, now);
    ASSERT(d[1].keep && d[2].keep);
    ASSERT_EQ_INT(d[1].kept_by, MS_RETENTION_KEEP_LAST);
    /* Without MaxAge nothing expires with time alone. */
    ASSERT_EQ_INT(d[1].expire_usec, 0);
    ASSERT_EQ_INT(d[2].expire_usec, 0);
}

static void max_age_expire_times(void) {
    const uint64_t max_age = 30 * USEC_PER_DAY;
    MsRetentionRules r = {.max_age_usec = max_age};
    MsRetentionSnapshot s[] = {
        {"old", at("2026-05-01T00:00:00")},
        {"mid", at("2026-06-10T00:00:00")},
        {"new", at("2026-06-20T00:00:00")},
    };
    MsRetentionDecision d[3];
    uint64_t now = at("2026-06-21T00:00:00");
    ASSERT_OK(ms_retention_decide(&r, now, s, 3, d, NULL));
    ASSERT(!d[0].keep);
    ASSERT_EQ_INT(d[0].expired_by, MS_RETENTION_EXPIRY_MAX_AGE);
    /* A removed snapshot's expire time is when MaxAge made it due. */
    ASSERT_EQ_INT(d[0].expire_usec, s[0].completed_usec + max_age);
    ASSERT(d[1].keep);
    ASSERT_EQ_INT(d[1].kept_by, MS_RETENTION_KEEP_YOUNG);
    ASSERT_EQ_INT(d[1].expire_usec, s[1].completed_usec + max_age);
    /* The newest is kept until a newer one exists, so it has no expire time. */
    ASSERT(d[2].keep);
    ASSERT_EQ_INT(d[2].expire_usec, 0);
}

static void newest_saved_by_safety_rule(void) {
    MsRetentionRules r = {.keep_daily = 7, .max_age_usec = USEC_PER_DAY};
    MsRetentionSnapshot s[] = {
        {"x", at("2026-01-01T00:00:00")},
        {"y", at("2026-01-05T00:00:00")},
    };
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, at("2026-03-01T00:00:00"), s, 2, d, NULL));
    ASSERT(!d[0].keep);
    ASSERT_EQ_INT(d[0].expired_by, MS_RETENTION_EXPIRY_MAX_AGE);
    ASSERT(d[1].keep);
    ASSERT_EQ_INT(d[1].kept_by, MS_RETENTION_KEEP_NEWEST);
    ASSERT_EQ_INT(d[1].expired_by, MS_RETENTION_EXPIRY_NONE);
    ASSERT_EQ_INT(d[1].expire_usec, 0);
}

static void combined_expire_time_is_max_age(void) {
    const uint64_t max_age = 90 * USEC_PER_DAY;
    MsRetentionRules r = {.keep_daily = 7, .keep_monthly = 3, .max_age_usec = max_age};
    MsRetentionSnapshot s[] = {
        {"apr", at("2026-04-15T00:00:00")},
        {"may", at("2026-05-31T00:00:00")},
        {"jun", at("2026-06-01T00:00:00")},
    };
    MsRetentionDecision d[3];
    ASSERT_OK(ms_retention_decide(&r, at("2026-06-02T00:00:00"), s, 3, d, NULL));
    for (size_t i = 0; i < 3; i++)
        ASSERT(d[i].keep);
    ASSERT_EQ_INT(d[0].kept_by, MS_RETENTION_KEEP_DAILY | MS_RETENTION_KEEP_MONTHLY);
    ASSERT_EQ_INT(d[0].expire_usec, s[0].completed_usec + max_age);
    ASSERT_EQ_INT(d[1].expire_usec, s[1].completed_usec + max_age);
    ASSERT_EQ_INT(d[2].expire_usec, 0);
    char buf[MS_RETENTION_KEPT_BY_MAX];
    ms_retention_kept_by_format(d[0].kept_by, buf);
    ASSERT_STREQ(buf, "daily, monthly");
}

static void no_rules_reason(void) {
    MsRetentionRules r = {0};
    MsRetentionSnapshot s[] = {{"a", 1}, {"b", 2}};
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, 3, s, 2, d, NULL));
    ASSERT(d[0].keep && d[1].keep);
    ASSERT_EQ_INT(d[0].kept_by, MS_RETENTION_KEEP_NO_RULES);
    ASSERT_EQ_INT(d[0].expire_usec, 0);
}

static void order_and_ties_do_not_matter(void) {
    MsRetentionRules r = {.keep_last = 1};
    uint64_t t = at("2026-06-01T00:00:00");
    /* Equal times: the larger id counts as newer, wherever it is in the list. */
    MsRetentionSnapshot s1[] = {{"snap-a", t}, {"snap-b", t}};
    MsRetentionSnapshot s2[] = {{"snap-b", t}, {"snap-a", t}};
    MsRetentionDecision d1[2], d2[2];
    ASSERT_OK(ms_retention_decide(&r, t, s1, 2, d1, NULL));
    ASSERT_OK(ms_retention_decide(&r, t, s2, 2, d2, NULL));
    ASSERT(!d1[0].keep && d1[1].keep);
    ASSERT(d2[0].keep && !d2[1].keep);
}

static void huge_max_age_never_expires(void) {
    MsRetentionRules r = {.max_age_usec = UINT64_MAX - 1};
    MsRetentionSnapshot s[] = {{"a", at("2026-01-01T00:00:00")}, {"b", at("2026-01-02T00:00:00")}};
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, at("2026-06-01T00:00:00"), s, 2, d, NULL));
    ASSERT(d[0].keep);
    ASSERT_EQ_INT(d[0].expire_usec, 0);
}

static void empty_and_bad_arguments(void) {
    MsRetentionRules r = {.keep_last = 1};
    ASSERT_OK(ms_retention_decide(&r, 0, NULL, 0, NULL, NULL));
    MsError e = MS_ERROR_INIT;
    MsRetentionDecision d[1];
    ASSERT_EQ_INT(ms_retention_decide(NULL, 0, NULL, 1, d, &e), -EINVAL);
    ASSERT(ms_error_is_set(&e));
    ASSERT_STREQ(ms_retention_expiry_to_string(MS_RETENTION_EXPIRY_MAX_AGE), "max-age");
}

MS_TEST_MAIN(TEST_CASE(table_cases), TEST_CASE(keep_last_only_reasons_and_expiry),
             TEST_CASE(max_age_expire_times), TEST_CASE(newest_saved_by_safety_rule),
             TEST_CASE(combined_expire_time_is_max_age), TEST_CASE(no_rules_reason),
             TEST_CASE(order_and_ties_do_not_matter), TEST_CASE(huge_max_age_never_expires),
             TEST_CASE(empty_and_bad_arguments))

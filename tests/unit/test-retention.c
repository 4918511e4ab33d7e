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
        snaps[n] = (MsRetentionSnapshot){.id = c->snapshots[n], .completed_usec = at(c->snapshots[n])};
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
        {.id = "a", .completed_usec = at("2026-05-01T00:00:00")},
        {.id = "b", .completed_usec = at("2026-05-02T00:00:00")},
        {.id = "c", .completed_usec = at("2026-05-03T00:00:00")},
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
        {.id = "old", .completed_usec = at("2026-05-01T00:00:00")},
        {.id = "mid", .completed_usec = at("2026-06-10T00:00:00")},
        {.id = "new", .completed_usec = at("2026-06-20T00:00:00")},
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
        {.id = "x", .completed_usec = at("2026-01-01T00:00:00")},
        {.id = "y", .completed_usec = at("2026-01-05T00:00:00")},
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
        {.id = "apr", .completed_usec = at("2026-04-15T00:00:00")},
        {.id = "may", .completed_usec = at("2026-05-31T00:00:00")},
        {.id = "jun", .completed_usec = at("2026-06-01T00:00:00")},
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
    MsRetentionSnapshot s[] = {{.id = "a", .completed_usec = 1}, {.id = "b", .completed_usec = 2}};
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
    MsRetentionSnapshot s1[] = {{.id = "snap-a", .completed_usec = t}, {.id = "snap-b", .completed_usec = t}};
    MsRetentionSnapshot s2[] = {{.id = "snap-b", .completed_usec = t}, {.id = "snap-a", .completed_usec = t}};
    MsRetentionDecision d1[2], d2[2];
    ASSERT_OK(ms_retention_decide(&r, t, s1, 2, d1, NULL));
    ASSERT_OK(ms_retention_decide(&r, t, s2, 2, d2, NULL));
    ASSERT(!d1[0].keep && d1[1].keep);
    ASSERT(d2[0].keep && !d2[1].keep);
}

static void huge_max_age_never_expires(void) {
    MsRetentionRules r = {.max_age_usec = UINT64_MAX - 1};
    MsRetentionSnapshot s[] = {{.id = "a", .completed_usec = at("2026-01-01T00:00:00")}, {.id = "b", .completed_usec = at("2026-01-02T00:00:00")}};
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

/* ---- clocks: the adversarial hour's third finding, and its class ---- */

/* A snapshot dated 2030 (a node whose clock was ahead, loaded by resync with no sequence
 * number) must not make KeepLast=1 expire each new snapshot the moment it completes. */
static void future_dated_snapshot_does_not_expire_new_ones(void) {
    MsRetentionRules r = {.keep_last = 1};
    uint64_t now = at("2026-12-06T12:00:00");
    MsRetentionSnapshot s[] = {
        {.id = "stale-2030", .completed_usec = at("2030-01-01T00:00:00"), .seq = 0},
        {.id = "new", .completed_usec = now - 60 * USEC_PER_SEC, .seq = 7},
    };
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, now, s, 2, d, NULL));
    ASSERT(d[1].keep);
    ASSERT(!d[0].keep);
    ASSERT(d[0].future_dated);
    ASSERT(!d[1].future_dated);
    /* Its time for the calendar rules is the newer believable one's. */
    ASSERT_EQ_INT(d[0].effective_usec, s[1].completed_usec);
}

/* The newest by seq but dated in the future is not "the newest": the safety rule protects the
 * newest believable one instead. */
static void future_dated_never_counts_as_newest(void) {
    MsRetentionRules r = {.keep_daily = 1, .max_age_usec = USEC_PER_HOUR};
    uint64_t now = at("2026-12-06T12:00:00");
    MsRetentionSnapshot s[] = {
        {.id = "older", .completed_usec = at("2026-12-01T00:00:00"), .seq = 1},
        {.id = "ahead", .completed_usec = at("2027-12-01T00:00:00"), .seq = 2},
    };
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, now, s, 2, d, NULL));
    ASSERT(d[0].keep);
    ASSERT_EQ_INT(d[0].kept_by, MS_RETENTION_KEEP_NEWEST);
    ASSERT(d[1].future_dated);
    /* "ahead" takes now as its time: young, and the daily bucket of today is its. */
    ASSERT(d[1].keep);
    /* Within the tolerance a time ahead of now is believed. */
    s[1].completed_usec = now + MS_RETENTION_FUTURE_TOLERANCE_USEC;
    ASSERT_OK(ms_retention_decide(&r, now, s, 2, d, NULL));
    ASSERT(!d[1].future_dated);
}

static void pinned_is_never_expired(void) {
    MsRetentionRules r = {.keep_last = 1, .max_age_usec = USEC_PER_HOUR};
    uint64_t now = at("2026-12-06T12:00:00");
    MsRetentionSnapshot s[] = {
        {.id = "mine", .completed_usec = at("2026-12-01T00:00:00"), .seq = 1, .pinned = true},
        {.id = "other", .completed_usec = now, .seq = 2},
    };
    MsRetentionDecision d[2];
    ASSERT_OK(ms_retention_decide(&r, now, s, 2, d, NULL));
    ASSERT(d[0].keep && d[1].keep);
    ASSERT_EQ_INT(d[0].kept_by, MS_RETENTION_KEEP_PINNED);
    ASSERT_EQ_INT(d[0].expire_usec, 0);
}

/* The README's rules (KeepDaily=7 KeepWeekly=4): a snapshot taken by hand at 18:18 is not
 * replaced by the 18:21 timer run. KeepManual= limits manual ones; KeepLast counts both. */
static void manual_snapshots_are_a_series_of_their_own(void) {
    uint64_t now = at("2026-12-06T18:30:00");
    MsRetentionSnapshot s[] = {
        {.id = "manual", .completed_usec = at("2026-12-06T18:18:00"), .seq = 1, .manual = true},
        {.id = "timer", .completed_usec = at("2026-12-06T18:21:00"), .seq = 2},
        {.id = "manual2", .completed_usec = at("2026-12-06T18:25:00"), .seq = 3, .manual = true},
    };
    MsRetentionDecision d[3];
    MsRetentionRules readme = {.keep_daily = 7, .keep_weekly = 4};
    ASSERT_OK(ms_retention_decide(&readme, now, s, 3, d, NULL));
    ASSERT(d[0].keep && d[1].keep && d[2].keep);
    ASSERT(d[0].kept_by & MS_RETENTION_KEEP_MANUAL);
    ASSERT(d[1].kept_by & MS_RETENTION_KEEP_DAILY);
    char text[MS_RETENTION_RULE_TEXT_MAX];
    ms_retention_rule_text(&readme, d[1].kept_by, text);
    ASSERT_STREQ(text, "KeepWeekly=4");
    ms_retention_rule_text(&readme, d[0].kept_by, text);
    ASSERT_STREQ(text, "manual");

    MsRetentionRules one_manual = {.keep_daily = 7, .keep_manual = 1};
    ASSERT_OK(ms_retention_decide(&one_manual, now, s, 3, d, NULL));
    ASSERT(!d[0].keep && d[1].keep && d[2].keep);
    ms_retention_rule_text(&one_manual, d[2].kept_by, text);
    ASSERT_STREQ(text, "KeepManual=1");

    /* KeepLast= counts every snapshot: with it, manual ones follow it (and KeepManual=). */
    MsRetentionRules last = {.keep_last = 1};
    ASSERT_OK(ms_retention_decide(&last, now, s, 3, d, NULL));
    ASSERT(!d[0].keep && !d[1].keep && d[2].keep);
}

/* When will each go if the schedule runs daily at 02:00? */
static void projection_follows_the_schedule(void) {
    MsRetentionRules r = {.keep_daily = 2, .keep_manual = 1};
    uint64_t now = at("2026-12-06T12:00:00");
    MsRetentionSnapshot s[] = {
        {.id = "d5", .completed_usec = at("2026-12-05T02:00:00"), .seq = 1},
        {.id = "d6", .completed_usec = at("2026-12-06T02:00:00"), .seq = 2},
        {.id = "m", .completed_usec = at("2026-12-06T10:00:00"), .seq = 3, .manual = true},
    };
    uint64_t ticks[5];
    for (size_t i = 0; i < 5; i++)
        ticks[i] = at("2026-12-07T02:00:00") + i * USEC_PER_DAY;
    uint64_t expire[3];
    unsigned rule[3];
    ASSERT_OK(ms_retention_project(&r, now, s, 3, ticks, 5, expire, rule, NULL));
    ASSERT_EQ_INT(expire[0], at("2026-12-07T02:00:00")); /* out of the 2 newest days */
    ASSERT_EQ_INT(expire[1], at("2026-12-08T02:00:00"));
    ASSERT_EQ_INT(expire[2], 0); /* KeepManual=1: only a newer manual one would push it out */
    ASSERT(rule[0] & MS_RETENTION_KEEP_DAILY);
    /* MaxAge, when earlier, wins. */
    r.max_age_usec = 12 * USEC_PER_HOUR;
    ASSERT_OK(ms_retention_project(&r, now, s, 3, ticks, 5, expire, rule, NULL));
    ASSERT_EQ_INT(expire[0], now); /* already past it */
    /* the manual one is the newest until the first tick; past MaxAge by then, it goes then */
    ASSERT_EQ_INT(expire[2], at("2026-12-07T02:00:00"));
}

/* The agent pins the newest snapshot it completed; the schedule's next snapshots carry the pin
 * away, so a pinned snapshot still gets a projected date (it showed "-" for every newest
 * snapshot under Keep* rules: the demo's "Expires: -, KeepWeekly=4"). */
static void projection_moves_the_pin(void) {
    MsRetentionRules r = {.keep_daily = 7, .keep_weekly = 4, .keep_manual = 3};
    uint64_t now = at("2026-12-06T21:41:00"); /* a Sunday, the last day of its ISO week */
    MsRetentionSnapshot s[] = {
        {.id = "sun", .completed_usec = at("2026-12-06T21:40:30"), .seq = 1, .pinned = true},
    };
    uint64_t ticks[60];
    for (size_t i = 0; i < 60; i++)
        ticks[i] = at("2026-12-07T21:40:26") + i * USEC_PER_DAY;
    uint64_t expire[1];
    unsigned rule[1];
    ASSERT_OK(ms_retention_project(&r, now, s, 1, ticks, 60, expire, rule, NULL));
    /* Kept by KeepWeekly=4 until a snapshot lands in the fourth week after its own: the
     * Monday of 2026-12-28 (weeks of Dec 7, 14, 21, 28). */
    ASSERT_EQ_INT(expire[0], at("2026-12-28T21:40:26"));
    ASSERT(rule[0] & MS_RETENTION_KEEP_WEEKLY);
}

/* ---- the property: random series, random clocks, random rules ---- */

#define PROPERTY_RUNS 4000u
#define PROPERTY_MAX_SNAPSHOTS 30u

static uint64_t rng;
static uint64_t rnd(uint64_t n) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return n ? (rng >> 17) % n : 0;
}

/* The documented rules, written out plainly: O(n^2), no sorting, as a second opinion. */
static bool ref_newer(const MsRetentionSnapshot *a, size_t ia, const MsRetentionSnapshot *b,
                      size_t ib) {
    if (a->seq != b->seq)
        return a->seq > b->seq;
    if (a->completed_usec != b->completed_usec)
        return a->completed_usec > b->completed_usec;
    int c = strcmp(a->id, b->id);
    if (c != 0)
        return c > 0;
    return ia < ib;
}

static void reference(const MsRetentionRules *r, uint64_t now, const MsRetentionSnapshot *s,
                      size_t n, bool *keep) {
    size_t rank[PROPERTY_MAX_SNAPSHOTS], order[PROPERTY_MAX_SNAPSHOTS];
    for (size_t i = 0; i < n; i++) {
        rank[i] = 0;
        for (size_t j = 0; j < n; j++)
            rank[i] += j != i && ref_newer(&s[j], j, &s[i], i);
        order[rank[i]] = i;
    }
    uint64_t when[PROPERTY_MAX_SNAPSHOTS];
    uint64_t newer = now;
    size_t newest = n;
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        bool future = s[i].completed_usec > now + MS_RETENTION_FUTURE_TOLERANCE_USEC;
        when[i] = future ? newer : s[i].completed_usec;
        if (!future) {
            newer = s[i].completed_usec;
            if (newest == n)
                newest = i;
        }
    }
    if (newest == n)
        newest = order[0];
    bool any_keep = r->keep_last || r->keep_daily || r->keep_weekly || r->keep_monthly ||
                    r->keep_manual;
    bool none = !any_keep && !r->max_age_usec;
    for (size_t i = 0; i < n; i++) {
        bool sel = false;
        if (rank[i] < r->keep_last)
            sel = true;
        if (s[i].manual) {
            size_t newer_manual = 0;
            for (size_t j = 0; j < n; j++)
                newer_manual += s[j].manual && rank[j] < rank[i];
            if (r->keep_manual ? newer_manual < r->keep_manual : r->keep_last == 0)
                sel = true;
        } else {
            /* calendar: i is selected when its bucket is new among scheduled snapshots newer
             * than it, and fewer than N distinct buckets came before it */
            const struct {
                unsigned n;
                uint64_t div;
                int kind;
            } tiers[] = {{r->keep_daily, USEC_PER_DAY, 0}, {r->keep_weekly, USEC_PER_DAY, 1},
                         {r->keep_monthly, USEC_PER_DAY, 2}};
            for (size_t t = 0; t < 3; t++) {
                if (!tiers[t].n)
                    continue;
                uint64_t key_i;
                uint64_t keys[PROPERTY_MAX_SNAPSHOTS];
                size_t n_keys = 0;
                bool mine_seen = false;
                for (size_t k = 0; k < n && !mine_seen; k++) {
                    size_t j = order[k];
                    if (s[j].manual)
                        continue;
                    time_t secs = (time_t) (when[j] / USEC_PER_SEC);
                    struct tm tm;
                    gmtime_r(&secs, &tm);
                    uint64_t day = when[j] / USEC_PER_DAY;
                    uint64_t key = tiers[t].kind == 0   ? day
                                   : tiers[t].kind == 1 ? day - (uint64_t) ((tm.tm_wday + 6) % 7)
                                                        : (uint64_t) tm.tm_year * 12 + (uint64_t) tm.tm_mon;
                    bool dup = false;
                    for (size_t q = 0; q < n_keys; q++)
                        dup |= keys[q] == key;
                    if (j == i) {
                        key_i = key;
                        mine_seen = true;
                        if (!dup && n_keys < tiers[t].n)
                            sel = true;
                        (void) key_i;
                    } else if (!dup)
                        keys[n_keys++] = key;
                }
            }
        }
        bool too_old = r->max_age_usec && when[i] + r->max_age_usec <= now &&
                       when[i] + r->max_age_usec >= when[i];
        keep[i] = none || (!too_old && (any_keep ? sel : true)) || i == newest || s[i].pinned;
    }
}

static void random_series_random_clocks(void) {
    rng = 20261206;
    uint64_t now = at("2026-12-06T12:00:00");
    unsigned checked = 0, skew_checks = 0;
    for (unsigned run = 0; run < PROPERTY_RUNS; run++) {
        size_t n = 1 + rnd(PROPERTY_MAX_SNAPSHOTS);
        MsRetentionSnapshot s[PROPERTY_MAX_SNAPSHOTS];
        char ids[PROPERTY_MAX_SNAPSHOTS][16];
        MsRetentionRules r = {
            .keep_last = rnd(3) ? (unsigned) rnd(6) : 0,
            .keep_daily = rnd(2) ? (unsigned) rnd(8) : 0,
            .keep_weekly = rnd(3) ? 0 : (unsigned) rnd(5),
            .keep_monthly = rnd(3) ? 0 : (unsigned) rnd(4),
            .keep_manual = rnd(3) ? 0 : (unsigned) rnd(3),
            .max_age_usec = rnd(3) ? 0 : (1 + rnd(60)) * USEC_PER_DAY,
        };
        /* a series every ~day back from now, with skews: some hours, some years, some ahead */
        for (size_t i = 0; i < n; i++) {
            snprintf(ids[i], sizeof(ids[i]), "s%02zu", i);
            uint64_t t = now - (n - i) * (USEC_PER_DAY / 2 + rnd(USEC_PER_DAY));
            switch (rnd(8)) {
            case 0:
                t += (1 + rnd(5 * 365)) * USEC_PER_DAY; /* far ahead */
                break;
            case 1:
                t -= rnd(3 * 365) * USEC_PER_DAY; /* far behind */
                break;
            case 2:
                t += rnd(2 * MS_RETENTION_FUTURE_TOLERANCE_USEC);
                break;
            }
            s[i] = (MsRetentionSnapshot){.id = ids[i],
                                         .completed_usec = t,
                                         .seq = rnd(10) ? i + 1 : 0, /* some unnumbered */
                                         .manual = rnd(5) == 0,
                                         .pinned = rnd(15) == 0};
        }
        MsRetentionDecision d[PROPERTY_MAX_SNAPSHOTS];
        ASSERT_OK(ms_retention_decide(&r, now, s, n, d, NULL));
        bool ref[PROPERTY_MAX_SNAPSHOTS];
        reference(&r, now, s, n, ref);

        size_t kept = 0, young = 0, newest = n;
        for (size_t i = 0; i < n; i++) {
            kept += d[i].keep;
            if (ref[i] != d[i].keep) {
                fprintf(stderr, "# run %u: %s keep=%d but the rules say %d\n", run, s[i].id,
                        d[i].keep, ref[i]);
                ms_test_failures++;
                return;
            }
            if (s[i].pinned)
                ASSERT(d[i].keep);
            bool future = s[i].completed_usec > now + MS_RETENTION_FUTURE_TOLERANCE_USEC;
            ASSERT(d[i].future_dated == future);
            if (!future && (newest == n || s[i].seq > s[newest].seq ||
                            (s[i].seq == s[newest].seq &&
                             (s[i].completed_usec > s[newest].completed_usec ||
                              (s[i].completed_usec == s[newest].completed_usec &&
                               strcmp(s[i].id, s[newest].id) > 0)))))
                newest = i;
            young += !(r.max_age_usec && d[i].effective_usec + r.max_age_usec <= now);
        }
        /* the newest good snapshot always survives */
        if (newest < n)
            ASSERT(d[newest].keep);
        ASSERT(kept >= 1);
        /* KeepLast is never undercut but by MaxAge, its ceiling */
        if (!r.max_age_usec)
            ASSERT(kept >= MS_MIN((size_t) r.keep_last, n));
        (void) young;

        /* a wrong clock on one snapshot never changes what happens to newer ones */
        size_t victim = rnd(n);
        MsRetentionSnapshot skewed[PROPERTY_MAX_SNAPSHOTS];
        memcpy(skewed, s, n * sizeof(s[0]));
        skewed[victim].completed_usec =
            rnd(2) ? now + (1 + rnd(3650)) * USEC_PER_DAY : rnd(now);
        MsRetentionDecision d2[PROPERTY_MAX_SNAPSHOTS];
        ASSERT_OK(ms_retention_decide(&r, now, skewed, n, d2, NULL));
        for (size_t i = 0; i < n; i++)
            if (i != victim && s[i].seq > s[victim].seq && d[i].keep != d2[i].keep &&
                !(d2[i].kept_by & MS_RETENTION_KEEP_NEWEST) &&
                !(d[i].kept_by & MS_RETENTION_KEEP_NEWEST)) {
                fprintf(stderr, "# run %u: skewing %s changed newer %s (%d -> %d)\n", run,
                        s[victim].id, s[i].id, d[i].keep, d2[i].keep);
                ms_test_failures++;
                return;
            } else
                skew_checks += i != victim && s[i].seq > s[victim].seq;
        checked += (unsigned) n;
    }
    fprintf(stderr, "# %u runs, %u decisions checked against the reference, %u skew checks\n",
            PROPERTY_RUNS, checked, skew_checks);
}

MS_TEST_MAIN(TEST_CASE(future_dated_snapshot_does_not_expire_new_ones),
             TEST_CASE(future_dated_never_counts_as_newest), TEST_CASE(pinned_is_never_expired),
             TEST_CASE(manual_snapshots_are_a_series_of_their_own),
             TEST_CASE(projection_follows_the_schedule), TEST_CASE(projection_moves_the_pin),
             TEST_CASE(random_series_random_clocks), TEST_CASE(table_cases), TEST_CASE(keep_last_only_reasons_and_expiry),
             TEST_CASE(max_age_expire_times), TEST_CASE(newest_saved_by_safety_rule),
             TEST_CASE(combined_expire_time_is_max_age), TEST_CASE(no_rules_reason),
             TEST_CASE(order_and_ties_do_not_matter), TEST_CASE(huge_max_age_never_expires),
             TEST_CASE(empty_and_bad_arguments))

/* Retention decisions: tiered Keep* selection by UTC day, ISO week and month, capped by MaxAge. */
#include "retention.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

#define USEC_PER_DAY (86400ULL * 1000000ULL)
#define DAYS_PER_WEEK 7
/* 1970-01-01 was a Thursday: day 0 is weekday 3 when Monday is 0. */
#define EPOCH_WEEKDAY_FROM_MONDAY 3
/* Howard Hinnant's civil_from_days(): days from 0000-03-01 to 1970-01-01, and the length of a
 * 400-year era in days. */
#define CIVIL_EPOCH_SHIFT 719468
#define DAYS_PER_ERA 146097
#define MONTHS_PER_YEAR 12

typedef struct Entry {
    size_t index; /* into the caller's arrays */
    uint64_t completed_usec;
    const char *id;
} Entry;

typedef uint64_t (*BucketKey)(uint64_t usec);

static uint64_t day_key(uint64_t usec) {
    return usec / USEC_PER_DAY;
}

/* ISO weeks are runs of seven days starting on Monday, so the Monday's day number names the
 * week without computing ISO years (which differ from calendar years around New Year). */
static uint64_t week_key(uint64_t usec) {
    uint64_t day = day_key(usec);
    return day - (day + EPOCH_WEEKDAY_FROM_MONDAY) % DAYS_PER_WEEK;
}

/* year * 12 + month - 1 of a UTC day (civil_from_days, valid for every uint64 day count we
 * can get from microseconds). */
static uint64_t month_key(uint64_t usec) {
    uint64_t z = day_key(usec) + CIVIL_EPOCH_SHIFT;
    uint64_t era = z / DAYS_PER_ERA;
    uint64_t doe = z - era * DAYS_PER_ERA;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t year = yoe + era * 400;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint64_t mp = (5 * doy + 2) / 153;
    uint64_t month = mp < 10 ? mp + 3 : mp - 9; /* 1..12 */
    if (month <= 2)
        year++;
    return year * MONTHS_PER_YEAR + month - 1;
}

/* Newest first; equal times by id, larger first, then by input order, so the result never
 * depends on how the caller listed them. */
static int compare_newest_first(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    if (x->completed_usec != y->completed_usec)
        return x->completed_usec > y->completed_usec ? -1 : 1;
    int c = strcmp(y->id ? y->id : "", x->id ? x->id : "");
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The newest snapshot of each of the `count` newest buckets that have one. */
static void select_buckets(const Entry *sorted, size_t n, unsigned count, BucketKey key,
                           unsigned flag, MsRetentionDecision *d) {
    unsigned used = 0;
    bool have_last = false;
    uint64_t last = 0;
    for (size_t i = 0; i < n && used < count; i++) {
        uint64_t k = key(sorted[i].completed_usec);
        if (have_last && k == last)
            continue;
        have_last = true;
        last = k;
        d[sorted[i].index].kept_by |= flag;
        used++;
    }
}

bool ms_retention_rules_empty(const MsRetentionRules *r) {
    return r->keep_last == 0 && r->keep_daily == 0 && r->keep_weekly == 0 && r->keep_monthly == 0 &&
           r->max_age_usec == 0;
}

int ms_retention_decide(const MsRetentionRules *rules, uint64_t now_usec,
                        const MsRetentionSnapshot *snapshots, size_t n,
                        MsRetentionDecision *ret_decisions, MsError *e) {
    if (!rules || (n > 0 && (!snapshots || !ret_decisions)))
        return ms_error_set(e, EINVAL, "retention: missing rules, snapshots or result array");
    if (n == 0)
        return 0;

    _cleanup_free_ Entry *sorted = calloc(n, sizeof(Entry));
    if (!sorted)
        return ms_error_set(e, ENOMEM, "retention: out of memory");
    for (size_t i = 0; i < n; i++) {
        sorted[i] = (Entry){i, snapshots[i].completed_usec, snapshots[i].id};
        ret_decisions[i] = (MsRetentionDecision){0};
    }
    qsort(sorted, n, sizeof(Entry), compare_newest_first);

    bool any_keep =
        rules->keep_last || rules->keep_daily || rules->keep_weekly || rules->keep_monthly;
    for (size_t i = 0; i < n && i < rules->keep_last; i++)
        ret_decisions[sorted[i].index].kept_by |= MS_RETENTION_KEEP_LAST;
    select_buckets(sorted, n, rules->keep_daily, day_key, MS_RETENTION_KEEP_DAILY, ret_decisions);
    select_buckets(sorted, n, rules->keep_weekly, week_key, MS_RETENTION_KEEP_WEEKLY,
                   ret_decisions);
    select_buckets(sorted, n, rules->keep_monthly, month_key, MS_RETENTION_KEEP_MONTHLY,
                   ret_decisions);

    for (size_t i = 0; i < n; i++) {
        MsRetentionDecision *d = &ret_decisions[sorted[i].index];
        uint64_t completed = sorted[i].completed_usec;
        uint64_t age_limit = 0; /* when MaxAge expires it; 0: never */
        if (rules->max_age_usec > 0 &&
            __builtin_add_overflow(completed, rules->max_age_usec, &age_limit))
            age_limit = 0; /* beyond the end of time: never */
        bool too_old = age_limit != 0 && age_limit <= now_usec;

        if (ms_retention_rules_empty(rules))
            d->kept_by = MS_RETENTION_KEEP_NO_RULES;
        else if (too_old)
            d->kept_by = 0; /* MaxAge is a ceiling over the Keep* rules */
        else if (!any_keep)
            d->kept_by = MS_RETENTION_KEEP_YOUNG;
        /* else: what the Keep* rules selected above */

        if (d->kept_by == 0)
            d->expired_by =
                too_old ? MS_RETENTION_EXPIRY_MAX_AGE : MS_RETENTION_EXPIRY_NOT_SELECTED;
        if (i == 0 && d->kept_by == 0) {
            d->kept_by = MS_RETENTION_KEEP_NEWEST;
            d->expired_by = MS_RETENTION_EXPIRY_NONE;
        }

        d->keep = d->kept_by != 0;
        if (!d->keep)
            d->expire_usec = too_old ? age_limit : now_usec;
        else if (i == 0)
            d->expire_usec = 0; /* the newest stays until a newer one exists */
        else
            d->expire_usec = age_limit;
    }
    return 0;
}

void ms_retention_kept_by_format(unsigned kept_by, char buf[MS_RETENTION_KEPT_BY_MAX]) {
    static const struct {
        unsigned flag;
        const char *name;
    } names[] = {
        {MS_RETENTION_KEEP_NO_RULES, "no-rules"}, {MS_RETENTION_KEEP_LAST, "last"},
        {MS_RETENTION_KEEP_DAILY, "daily"},       {MS_RETENTION_KEEP_WEEKLY, "weekly"},
        {MS_RETENTION_KEEP_MONTHLY, "monthly"},   {MS_RETENTION_KEEP_YOUNG, "young"},
        {MS_RETENTION_KEEP_NEWEST, "newest"},
    };
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        if (!(kept_by & names[i].flag))
            continue;
        int w =
            snprintf(buf + o, MS_RETENTION_KEPT_BY_MAX - o, "%s%s", o ? ", " : "", names[i].name);
        if (w < 0 || (size_t) w >= MS_RETENTION_KEPT_BY_MAX - o)
            break;
        o += (size_t) w;
    }
}

const char *ms_retention_expiry_to_string(MsRetentionExpiry x) {
    static const char *const names[_MS_RETENTION_EXPIRY_MAX] = {
        [MS_RETENTION_EXPIRY_NONE] = "none",
        [MS_RETENTION_EXPIRY_MAX_AGE] = "max-age",
        [MS_RETENTION_EXPIRY_NOT_SELECTED] = "not-selected",
    };
    return x >= 0 && x < _MS_RETENTION_EXPIRY_MAX ? names[x] : NULL;
}

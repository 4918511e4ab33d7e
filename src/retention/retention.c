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
    uint64_t seq;
    const char *id;
    bool manual;
    bool pinned;
    uint64_t effective_usec; /* filled after sorting */
    bool future;
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

/* Newest first: by seq (the start order no clock can invert), then completion time, then id
 * (larger first), then input order, so the result never depends on how the caller listed
 * them. */
static int compare_newest_first(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq > y->seq ? -1 : 1;
    if (x->completed_usec != y->completed_usec)
        return x->completed_usec > y->completed_usec ? -1 : 1;
    int c = strcmp(y->id ? y->id : "", x->id ? x->id : "");
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The newest scheduled snapshot of each of the `count` first buckets met, walking newest-first
 * by seq. A bucket counts once, the first time it is met, wherever its snapshots lie in the
 * order: a snapshot whose time is wrong takes at most its own bucket. */
static int select_buckets(const Entry *sorted, size_t n, unsigned count, BucketKey key,
                          unsigned flag, MsRetentionDecision *d) {
    if (count == 0)
        return 0;
    _cleanup_free_ uint64_t *used = calloc(MS_MIN((size_t) count, n) + 1, sizeof(uint64_t));
    if (!used)
        return -ENOMEM;
    size_t n_used = 0;
    for (size_t i = 0; i < n && n_used < count; i++) {
        if (sorted[i].manual)
            continue;
        uint64_t k = key(sorted[i].effective_usec);
        bool seen = false;
        for (size_t j = 0; j < n_used && !seen; j++)
            seen = used[j] == k;
        if (seen)
            continue;
        used[n_used++] = k;
        d[sorted[i].index].kept_by |= flag;
    }
    return 0;
}

bool ms_retention_rules_empty(const MsRetentionRules *r) {
    return r->keep_last == 0 && r->keep_daily == 0 && r->keep_weekly == 0 && r->keep_monthly == 0 &&
           r->keep_manual == 0 && r->max_age_usec == 0;
}

static bool any_keep_rule(const MsRetentionRules *r) {
    return r->keep_last || r->keep_daily || r->keep_weekly || r->keep_monthly || r->keep_manual;
}

/* Decide over entries sorted newest first; d is indexed by Entry.index. */
static int decide_sorted(const MsRetentionRules *rules, uint64_t now_usec, Entry *sorted, size_t n,
                         MsRetentionDecision *d) {
    for (size_t i = 0; i < n; i++)
        d[sorted[i].index] = (MsRetentionDecision){0};

    /* Times: a future-dated one takes the place of the next newer believable one (or now). */
    uint64_t limit = now_usec > UINT64_MAX - MS_RETENTION_FUTURE_TOLERANCE_USEC
                         ? UINT64_MAX
                         : now_usec + MS_RETENTION_FUTURE_TOLERANCE_USEC;
    uint64_t newer_time = now_usec;
    size_t newest = n; /* the newest believable one */
    for (size_t i = 0; i < n; i++) {
        Entry *x = &sorted[i];
        x->future = x->completed_usec > limit;
        x->effective_usec = x->future ? newer_time : x->completed_usec;
        if (!x->future) {
            newer_time = x->completed_usec;
            if (newest == n)
                newest = i;
        }
    }
    if (newest == n && n > 0)
        newest = 0;

    bool any_keep = any_keep_rule(rules);
    size_t manual_seen = 0;
    for (size_t i = 0; i < n; i++) {
        MsRetentionDecision *x = &d[sorted[i].index];
        if (i < rules->keep_last)
            x->kept_by |= MS_RETENTION_KEEP_LAST;
        if (sorted[i].manual) {
            manual_seen++;
            if (rules->keep_manual ? manual_seen <= rules->keep_manual
                                   : any_keep && rules->keep_last == 0)
                x->kept_by |= MS_RETENTION_KEEP_MANUAL;
        }
    }
    int r = select_buckets(sorted, n, rules->keep_daily, day_key, MS_RETENTION_KEEP_DAILY, d);
    if (r == 0)
        r = select_buckets(sorted, n, rules->keep_weekly, week_key, MS_RETENTION_KEEP_WEEKLY, d);
    if (r == 0)
        r = select_buckets(sorted, n, rules->keep_monthly, month_key, MS_RETENTION_KEEP_MONTHLY,
                           d);
    if (r < 0)
        return r;

    for (size_t i = 0; i < n; i++) {
        MsRetentionDecision *x = &d[sorted[i].index];
        uint64_t when = sorted[i].effective_usec;
        x->future_dated = sorted[i].future;
        x->effective_usec = when;
        uint64_t age_limit = 0; /* when MaxAge expires it; 0: never */
        if (rules->max_age_usec > 0 && __builtin_add_overflow(when, rules->max_age_usec, &age_limit))
            age_limit = 0; /* beyond the end of time: never */
        bool too_old = age_limit != 0 && age_limit <= now_usec;

        if (ms_retention_rules_empty(rules))
            x->kept_by = MS_RETENTION_KEEP_NO_RULES;
        else if (too_old)
            x->kept_by = 0; /* MaxAge is a ceiling over the Keep* rules */
        else if (!any_keep)
            x->kept_by = MS_RETENTION_KEEP_YOUNG;
        /* else: what the Keep* rules selected above */

        if (x->kept_by == 0)
            x->expired_by =
                too_old ? MS_RETENTION_EXPIRY_MAX_AGE : MS_RETENTION_EXPIRY_NOT_SELECTED;
        if (i == newest && x->kept_by == 0) {
            x->kept_by = MS_RETENTION_KEEP_NEWEST;
            x->expired_by = MS_RETENTION_EXPIRY_NONE;
        }
        if (sorted[i].pinned && x->kept_by == 0) {
            x->kept_by = MS_RETENTION_KEEP_PINNED;
            x->expired_by = MS_RETENTION_EXPIRY_NONE;
        }

        x->keep = x->kept_by != 0;
        if (!x->keep)
            x->expire_usec = too_old ? age_limit : now_usec;
        else if (i == newest || sorted[i].pinned)
            x->expire_usec = 0; /* stays until a newer one exists */
        else
            x->expire_usec = age_limit;
    }
    return 0;
}

static Entry entry_of(const MsRetentionSnapshot *s, size_t i) {
    return (Entry){.index = i,
                   .completed_usec = s->completed_usec,
                   .seq = s->seq,
                   .id = s->id,
                   .manual = s->manual,
                   .pinned = s->pinned};
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
    for (size_t i = 0; i < n; i++)
        sorted[i] = entry_of(&snapshots[i], i);
    qsort(sorted, n, sizeof(Entry), compare_newest_first);
    if (decide_sorted(rules, now_usec, sorted, n, ret_decisions) < 0)
        return ms_error_set(e, ENOMEM, "retention: out of memory");
    return 0;
}

int ms_retention_project(const MsRetentionRules *rules, uint64_t now_usec,
                         const MsRetentionSnapshot *snapshots, size_t n, const uint64_t *ticks,
                         size_t n_ticks, uint64_t *ret_expire, unsigned *ret_rule, MsError *e) {
    if (!rules || (n > 0 && (!snapshots || !ret_expire)) || (n_ticks > 0 && !ticks))
        return ms_error_set(e, EINVAL, "retention: missing rules, snapshots, ticks or results");
    if (n == 0)
        return 0;
    uint64_t max_seq = 0;
    for (size_t i = 0; i < n; i++)
        max_seq = MS_MAX(max_seq, snapshots[i].seq);
    /* The real snapshots, then one hypothetical scheduled snapshot per tick, newest first. */
    _cleanup_free_ Entry *all = calloc(n + n_ticks, sizeof(Entry));
    _cleanup_free_ Entry *work = calloc(n + n_ticks, sizeof(Entry));
    _cleanup_free_ MsRetentionDecision *d = calloc(n + n_ticks, sizeof(MsRetentionDecision));
    if (!all || !work || !d)
        return ms_error_set(e, ENOMEM, "retention: out of memory");
    for (size_t i = 0; i < n; i++)
        all[i] = entry_of(&snapshots[i], i);
    qsort(all, n, sizeof(Entry), compare_newest_first);

    if (decide_sorted(rules, now_usec, all, n, d) < 0)
        return ms_error_set(e, ENOMEM, "retention: out of memory");
    for (size_t i = 0; i < n; i++) {
        ret_expire[i] = d[i].keep ? d[i].expire_usec : now_usec;
        if (ret_rule)
            ret_rule[i] = d[i].kept_by;
    }
    /* Add the ticks' snapshots one by one; the first tick at which a still-kept snapshot is
     * no longer kept is when it goes (unless MaxAge takes it first). */
    for (size_t k = 0; k < n_ticks; k++) {
        size_t m = 0;
        for (size_t t = k + 1; t-- > 0;)
            work[m++] = (Entry){.index = n + t,
                                .completed_usec = ticks[t],
                                .seq = max_seq + 1 + t,
                                .id = ""};
        memcpy(work + m, all, n * sizeof(Entry));
        /* The pin is the newest snapshot the agent completed itself: the ticks' snapshots,
         * taken after the real ones, carry it away (a projection; with several nodes another
         * node may take them, and this node's pin would stay). */
        for (size_t j = m; j < m + n; j++)
            work[j].pinned = false;
        work[0].pinned = true;
        m += n;
        if (decide_sorted(rules, ticks[k], work, m, d) < 0)
            return ms_error_set(e, ENOMEM, "retention: out of memory");
        bool open = false;
        for (size_t i = 0; i < n; i++) {
            if (ret_expire[i] != 0 && ret_expire[i] <= ticks[k])
                continue; /* gone before this tick (by now, or by MaxAge) */
            if (!d[i].keep)
                ret_expire[i] = ticks[k];
            else
                open = true;
        }
        if (!open)
            break;
    }
    return 0;
}

void ms_retention_rule_text(const MsRetentionRules *rules, unsigned kept_by,
                            char buf[MS_RETENTION_RULE_TEXT_MAX]) {
    static const struct {
        unsigned flag;
        const char *key;
    } order[] = {
        {MS_RETENTION_KEEP_NEWEST, NULL},   {MS_RETENTION_KEEP_PINNED, NULL},
        {MS_RETENTION_KEEP_NO_RULES, NULL}, {MS_RETENTION_KEEP_MONTHLY, "KeepMonthly"},
        {MS_RETENTION_KEEP_WEEKLY, "KeepWeekly"}, {MS_RETENTION_KEEP_DAILY, "KeepDaily"},
        {MS_RETENTION_KEEP_LAST, "KeepLast"}, {MS_RETENTION_KEEP_MANUAL, "KeepManual"},
        {MS_RETENTION_KEEP_YOUNG, "MaxAge"},
    };
    buf[0] = '\0';
    for (size_t i = 0; i < ELEMENTSOF(order); i++) {
        if (!(kept_by & order[i].flag))
            continue;
        unsigned value = 0;
        switch (order[i].flag) {
        case MS_RETENTION_KEEP_NEWEST:
            snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "newest");
            return;
        case MS_RETENTION_KEEP_PINNED:
            snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "newest of this node");
            return;
        case MS_RETENTION_KEEP_NO_RULES:
            snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "no rules");
            return;
        case MS_RETENTION_KEEP_YOUNG:
            snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "MaxAge");
            return;
        case MS_RETENTION_KEEP_MONTHLY:
            value = rules->keep_monthly;
            break;
        case MS_RETENTION_KEEP_WEEKLY:
            value = rules->keep_weekly;
            break;
        case MS_RETENTION_KEEP_DAILY:
            value = rules->keep_daily;
            break;
        case MS_RETENTION_KEEP_LAST:
            value = rules->keep_last;
            break;
        case MS_RETENTION_KEEP_MANUAL:
            if (!rules->keep_manual) {
                snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "manual");
                return;
            }
            value = rules->keep_manual;
            break;
        }
        snprintf(buf, MS_RETENTION_RULE_TEXT_MAX, "%s=%u", order[i].key, value);
        return;
    }
}

void ms_retention_kept_by_format(unsigned kept_by, char buf[MS_RETENTION_KEPT_BY_MAX]) {
    static const struct {
        unsigned flag;
        const char *name;
    } names[] = {
        {MS_RETENTION_KEEP_NO_RULES, "no-rules"}, {MS_RETENTION_KEEP_LAST, "last"},
        {MS_RETENTION_KEEP_DAILY, "daily"},       {MS_RETENTION_KEEP_WEEKLY, "weekly"},
        {MS_RETENTION_KEEP_MONTHLY, "monthly"},   {MS_RETENTION_KEEP_YOUNG, "young"},
        {MS_RETENTION_KEEP_NEWEST, "newest"},     {MS_RETENTION_KEEP_MANUAL, "manual"},
        {MS_RETENTION_KEEP_PINNED, "pinned"},
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

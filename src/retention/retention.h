/* Retention: which completed snapshots a policy keeps, and until when (pure logic, no I/O). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "config/conf.h"

/* The rules, from a policy's [Retention] (MsRetentionRules; 0 turns a rule off):
 *
 *   KeepLast=N     the N newest snapshots, whatever started them.
 *   KeepDaily=N    the newest scheduled snapshot of each of the N newest UTC calendar days that
 *                  have one (days without one do not count, as in restic/borg "forget").
 *   KeepWeekly=N   the same per ISO 8601 week (Monday to Sunday, UTC), so 2026-12-31 and
 *                  2027-01-01 fall in the same week (2026-W53).
 *   KeepMonthly=N  the same per UTC calendar month.
 *   KeepManual=N   the N newest manual snapshots (taken on request, not by the schedule).
 *   MaxAge=SPAN    a ceiling: a snapshot completed SPAN or longer before now goes, whatever
 *                  the Keep* rules say (as pgBackRest's and Ops Manager's age limits do).
 *
 * A snapshot is kept when it is younger than MaxAge (if set) AND selected by at least one
 * Keep* rule (if any is set). The Keep* rules look at all completed snapshots, the ones past
 * MaxAge included; MaxAge then removes what is too old.
 *   - No rule at all: everything is kept, forever.
 *   - MaxAge only: everything younger than MaxAge.
 *   - Keep* only: what they select, regardless of age.
 *
 * Manual snapshots: the calendar rules (KeepDaily/Weekly/Monthly) never select, count or
 * expire them, so a snapshot taken by hand before a migration is not replaced by the next
 * timer run of the same day. They are kept while among the KeepLast= newest snapshots or the
 * KeepManual= newest manual ones; a policy that sets neither KeepLast= nor KeepManual= keeps
 * them until MaxAge= (or until deleted).
 *
 * Order and clocks. Which snapshot is newer is decided by seq, a number the agent gives each
 * snapshot of a policy when it starts, in the order they start (0: unknown, e.g. found in a
 * store by resync: older than every numbered one), then by completion time, then by id. No
 * clock can invert it. Completion times (the clock of the node that took the snapshot) are
 * used only to place snapshots in calendar buckets and for MaxAge:
 *   - a time more than MS_RETENTION_FUTURE_TOLERANCE_USEC after now is "future-dated": it is
 *     flagged, never counts as the newest, and its place in time is taken to be that of the
 *     next newer snapshot (by seq) that is not future-dated, or now when there is none;
 *   - the buckets are walked newest-first by seq, and a bucket is taken the first time one of
 *     its snapshots is met, so a snapshot whose time is wrong can take at most its own bucket
 *     and never changes what happens to the snapshots newer than it.
 *
 * Safety:
 *   - the newest snapshot (by seq) that is not future-dated is never expired, not even past
 *     MaxAge (a policy whose schedule stopped keeps its last good snapshot); with only
 *     future-dated snapshots, the newest of them;
 *   - a pinned snapshot (the agent pins the newest one it completed itself) is never expired.
 *
 * Expire time, for a kept snapshot: the moment it would stop being kept if no new snapshot
 * completed. The Keep* selection depends only on the set of snapshots, not on the clock, so
 * without new snapshots only MaxAge can expire anything: expire = effective time + MaxAge, or
 * 0 ("never": kept until newer snapshots push it out of the Keep* rules) when MaxAge is off,
 * and always 0 for the newest snapshot. New snapshots can only make it earlier, so the agent
 * recomputes every expire time whenever a snapshot completes (ms_retention_project() tells
 * when the schedule's next snapshots will push one out).
 * For a snapshot to remove, expire_usec is when it became due: its time + MaxAge when MaxAge
 * expired it, else now. */

/* How far ahead of the agent's clock a completion time may be before it is not believed:
 * clocks under NTP agree to well within this, and a snapshot cannot have completed later than
 * now by more than the skew between two nodes. */
#define MS_RETENTION_FUTURE_TOLERANCE_USEC (5ULL * 60ULL * 1000000ULL)

typedef struct MsRetentionSnapshot {
    const char *id;          /* carried through for tie-breaking only */
    uint64_t completed_usec; /* completion time, CLOCK_REALTIME (UTC) of the node that took it */
    uint64_t seq;            /* start order within the policy; 0: unknown (oldest) */
    bool manual;             /* taken on request, not by the schedule */
    bool pinned;             /* never expired (the newest snapshot this agent completed) */
} MsRetentionSnapshot;

/* Why a snapshot is kept (flags). */
typedef enum MsRetentionKeep {
    MS_RETENTION_KEEP_NO_RULES = 1 << 0, /* no rule at all */
    MS_RETENTION_KEEP_LAST = 1 << 1,
    MS_RETENTION_KEEP_DAILY = 1 << 2,
    MS_RETENTION_KEEP_WEEKLY = 1 << 3,
    MS_RETENTION_KEEP_MONTHLY = 1 << 4,
    MS_RETENTION_KEEP_YOUNG = 1 << 5,  /* MaxAge only, and younger than it */
    MS_RETENTION_KEEP_NEWEST = 1 << 6, /* the safety rule saved it */
    MS_RETENTION_KEEP_MANUAL = 1 << 7, /* KeepManual=, or a manual snapshot no rule limits */
    MS_RETENTION_KEEP_PINNED = 1 << 8, /* the newest this agent completed */
} MsRetentionKeep;

/* Why a snapshot goes. */
typedef enum MsRetentionExpiry {
    MS_RETENTION_EXPIRY_NONE,
    MS_RETENTION_EXPIRY_MAX_AGE,      /* older than MaxAge (whatever Keep* said) */
    MS_RETENTION_EXPIRY_NOT_SELECTED, /* no Keep* rule selected it */
    _MS_RETENTION_EXPIRY_MAX,
} MsRetentionExpiry;

typedef struct MsRetentionDecision {
    bool keep;
    unsigned kept_by; /* MsRetentionKeep flags; 0 when not kept */
    MsRetentionExpiry expired_by;
    uint64_t expire_usec;    /* see above; 0: never */
    bool future_dated;       /* completed more than the tolerance after now: not believed */
    uint64_t effective_usec; /* the time the calendar rules and MaxAge used */
} MsRetentionDecision;

bool ms_retention_rules_empty(const MsRetentionRules *rules);

/* Decide for n snapshots (any order); ret_decisions (caller-allocated, n entries) gets the
 * decision for snapshots[i] at index i. Fails only on bad arguments or out of memory. */
int ms_retention_decide(const MsRetentionRules *rules, uint64_t now_usec,
                        const MsRetentionSnapshot *snapshots, size_t n,
                        MsRetentionDecision *ret_decisions, MsError *e);

/* When would each kept snapshot stop being kept if the schedule's next snapshots completed at
 * ticks[0..n_ticks) (ascending, each after now), one per tick, and nothing else happened?
 * ret_expire[i] (caller-allocated, n entries): the tick whose snapshot pushes snapshots[i] out
 * of the Keep* rules, or the time MaxAge= expires it if earlier, or 0 when neither happens
 * within the ticks given; for a snapshot expired now, now. ret_rule[i] (may be NULL) gets the
 * MsRetentionKeep flags that keep it until then. Fails only on bad arguments or out of
 * memory. */
int ms_retention_project(const MsRetentionRules *rules, uint64_t now_usec,
                         const MsRetentionSnapshot *snapshots, size_t n, const uint64_t *ticks,
                         size_t n_ticks, uint64_t *ret_expire, unsigned *ret_rule, MsError *e);

/* The rule that keeps a snapshot, as a person reads it ("KeepDaily=7", "KeepLast=3", "newest",
 * "manual", "no rules"); the first of several, by strength. "" for 0. */
#define MS_RETENTION_RULE_TEXT_MAX 48
void ms_retention_rule_text(const MsRetentionRules *rules, unsigned kept_by,
                            char buf[MS_RETENTION_RULE_TEXT_MAX]);

/* "daily, weekly" (for logs); "" for 0. */
#define MS_RETENTION_KEPT_BY_MAX 96
void ms_retention_kept_by_format(unsigned kept_by, char buf[MS_RETENTION_KEPT_BY_MAX]);
const char *ms_retention_expiry_to_string(MsRetentionExpiry x);

/* Retention: which completed snapshots a policy keeps, and until when (pure logic, no I/O). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "config/conf.h"

/* The rules, from a policy's [Retention] (MsRetentionRules; 0 turns a rule off):
 *
 *   KeepLast=N     the N newest snapshots.
 *   KeepDaily=N    the newest snapshot of each of the N newest UTC calendar days that have a
 *                  snapshot (days without one do not count, as in restic/borg "forget").
 *   KeepWeekly=N   the same per ISO 8601 week (Monday to Sunday, UTC), so 2026-12-31 and
 *                  2027-01-01 fall in the same week (2026-W53).
 *   KeepMonthly=N  the same per UTC calendar month.
 *   MaxAge=SPAN    a ceiling: a snapshot completed SPAN or longer before now goes, whatever
 *                  the Keep* rules say (as pgBackRest's and Ops Manager's age limits do).
 *
 * A snapshot is kept when it is younger than MaxAge (if set) AND selected by at least one
 * Keep* rule (if any is set). Put differently, it expires when it is older than MaxAge or,
 * with Keep* rules, selected by none. The Keep* rules look at all completed snapshots, the
 * ones past MaxAge included; MaxAge then removes what is too old.
 *   - No rule at all: everything is kept, forever.
 *   - MaxAge only: everything younger than MaxAge.
 *   - Keep* only: what they select, regardless of age.
 *
 * Safety: the newest completed snapshot is never expired, not even past MaxAge (a policy
 * whose schedule stopped keeps its last good snapshot; removing it would leave nothing to
 * restore). Ties in completion time are broken by id (the larger id counts as newer).
 *
 * Expire time, for a kept snapshot: the moment it would stop being kept if no new snapshot
 * completed. The Keep* selection depends only on the set of snapshots, not on the clock, so
 * without new snapshots only MaxAge can expire anything: expire = completed + MaxAge, or 0
 * ("never": kept until newer snapshots push it out of the Keep* rules) when MaxAge is off,
 * and always 0 for the newest snapshot. New snapshots can only make it earlier, so the agent
 * recomputes every expire time whenever a snapshot completes.
 * For a snapshot to remove, expire_usec is when it became due: completed + MaxAge when MaxAge
 * expired it, else now. */

typedef struct MsRetentionSnapshot {
    const char *id;          /* carried through for tie-breaking only */
    uint64_t completed_usec; /* completion time, CLOCK_REALTIME (UTC) */
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
    uint64_t expire_usec; /* see above; 0: never */
} MsRetentionDecision;

bool ms_retention_rules_empty(const MsRetentionRules *rules);

/* Decide for n snapshots (any order); ret_decisions (caller-allocated, n entries) gets the
 * decision for snapshots[i] at index i. Fails only on bad arguments or out of memory. */
int ms_retention_decide(const MsRetentionRules *rules, uint64_t now_usec,
                        const MsRetentionSnapshot *snapshots, size_t n,
                        MsRetentionDecision *ret_decisions, MsError *e);

/* "daily, weekly" (for logs); "" for 0. */
#define MS_RETENTION_KEPT_BY_MAX 64
void ms_retention_kept_by_format(unsigned kept_by, char buf[MS_RETENTION_KEPT_BY_MAX]);
const char *ms_retention_expiry_to_string(MsRetentionExpiry x);

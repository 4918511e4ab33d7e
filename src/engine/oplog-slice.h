/* Oplog slices and their chains: the stored pieces of point-in-time recovery.
 *
 * A slice holds every oplog entry in (start, end] (positions, see manifest.h). Its manifest's
 * key names both ("<prefix>/oplog/<start>-<end>.slice.json", mongosnap.h), so a policy's
 * chains are planned from one listing of the store, without reading a manifest. Slices may
 * overlap (two followers during a takeover, a retried commit); a chain walks from a position to
 * the slice that reaches farthest among those that hold the next entry, so overlap is harmless
 * and a missing piece is a gap, never papered over. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "io/compression.h"
#include "manifest.h"
#include "storage/storage.h"

/* "%010u.%010u": fixed width, so keys sort in position order. */
#define MS_SLICE_POSITION_LEN 21

typedef struct MsSliceRef {
    MsOplogPosition start, end;
    /* An idle slice holds no entry: it says the oplog had none in (start, end] when the
     * follower last looked (end from the server's clock, less a margin). The next slice with
     * entries starts at the same start and replaces it. */
    bool idle;
    char *manifest_key;
    uint64_t manifest_size;
} MsSliceRef;

/* "<prefix>/oplog/" (or "oplog/" without a prefix). */
char *ms_slice_dir(const char *prefix);
char *ms_slice_manifest_key(const char *prefix, MsOplogPosition start, MsOplogPosition end,
                            bool idle);
/* The archive's key: named by its start and a random tag (its end is not known while it is
 * written), with the suffix of what it holds. */
char *ms_slice_archive_key(const char *prefix, MsOplogPosition start, MsCompression compression,
                           bool encrypted);
/* start and end of a slice manifest key (any directory); false when key is not one. */
bool ms_slice_key_parse(const char *key, MsOplogPosition *ret_start, MsOplogPosition *ret_end,
                        bool *ret_idle);
void ms_oplog_position_format(MsOplogPosition p, char buf[MS_SLICE_POSITION_LEN + 1]);

/* Every slice manifest under prefix's slice directory, sorted by start then end. */
int ms_slices_list(MsStorage *s, const char *prefix, MsSliceRef **ret, size_t *ret_n, MsError *e);
void ms_slices_free(MsSliceRef *slices, size_t n);
/* In the order every function here expects: by start, then end. */
void ms_slices_sort(MsSliceRef *slices, size_t n);
/* Remove a slice: its manifest first (so nothing half-removed looks whole), then the archive
 * the manifest names. A missing slice is not an error. */
int ms_slice_remove(MsStorage *s, const char *manifest_key, MsError *e);

/* How far the slices reach from `from` without a gap: the farthest end of a run of slices each
 * holding the entry after the one before. from itself when no slice holds the next entry.
 * Stops once `until` is reached (pass MS_OPLOG_POSITION_MAX for as far as they go). With
 * ret_path: the indexes of the slices used, in order (caller frees). slices sorted as
 * ms_slices_list() returns them. */
#define MS_OPLOG_POSITION_MAX ((MsOplogPosition){UINT32_MAX, UINT32_MAX})
int ms_slices_reach(const MsSliceRef *slices, size_t n, MsOplogPosition from,
                    MsOplogPosition until, MsOplogPosition *ret_reach, size_t **ret_path,
                    size_t *ret_n_path);

/* A completed snapshot as far as point-in-time planning cares. */
typedef struct MsPitSnapshot {
    const char *id;  /* the caller's name for it (task id or key) */
    const char *key; /* its manifest or archive key */
    MsOplogPosition start; /* the manifest's oplog_start: its oplog begins after here */
    MsOplogPosition end; /* the manifest's oplog_end: the snapshot restores to here */
    bool point_in_time;  /* it captured an oplog; without one it cannot start a chain */
} MsPitSnapshot;

typedef struct MsPitRange {
    MsOplogPosition from, to; /* every instant in [from, to] can be restored */
} MsPitRange;

/* The instants a restore can reach: for each point-in-time snapshot, from its end to as far as
 * the slices reach from there; overlapping ranges merged, sorted. */
int ms_pit_ranges(const MsPitSnapshot *snaps, size_t n_snaps, const MsSliceRef *slices,
                  size_t n_slices, MsPitRange **ret, size_t *ret_n);
/* Sorts r and merges the ranges that overlap or touch, in place; returns how many are left. */
size_t ms_pit_ranges_merge(MsPitRange *r, size_t n);
/* "from – to, from – to" in UTC with ordinals, for messages and status; "none" when empty. */
char *ms_pit_ranges_describe(const MsPitRange *ranges, size_t n);

typedef struct MsPitPlan {
    size_t snapshot;  /* index into the snapshots given */
    size_t *slices;   /* indexes into the slices given, in replay order */
    size_t n_slices;
} MsPitPlan;

/* The newest point-in-time snapshot ending at or before target whose chain reaches target.
 * -ERANGE with a message naming the restorable ranges when there is none. */
int ms_pit_plan(const MsPitSnapshot *snaps, size_t n_snaps, const MsSliceRef *slices,
                size_t n_slices, MsOplogPosition target, MsPitPlan *ret, MsError *e);
void ms_pit_plan_clear(MsPitPlan *p);

/* Retention of slices: the position at or before which no slice is needed any more, the start
 * of the oldest point-in-time snapshot (every restorable range begins at a snapshot's end,
 * after its start). false when there is none: then every slice is kept, since the next
 * snapshot may start a range from them. A slice whose end is at or before the cutoff can go. */
bool ms_slices_prune_cutoff(const MsPitSnapshot *snaps, size_t n_snaps, MsOplogPosition *ret);

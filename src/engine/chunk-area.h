/* A policy's chunk area and its users kept apart: snapshots that reuse chunks, and the garbage
 * collector that removes the chunks no snapshot names; and which snapshots a chunk is part of.
 *
 * The race to design against (restic's and kopia's): a snapshot finds chunk X already stored
 * and does not store it again; meanwhile the collector, seeing no committed index that names X
 * (the snapshot's is not committed yet), removes it; the snapshot then commits an index naming
 * a chunk that is gone. The protocol is mutual exclusion through markers in the store, each
 * side writing its own marker before it looks for the other's (so of two that start together,
 * at least one sees the other):
 *
 *   snapshot:  write <area>/locks/snapshot-<name>; while a live collector marker exists, wait;
 *              read the committed indexes (the chunks it may reuse), store chunks, index,
 *              manifest; remove its marker. It rewrites its marker every minute while it runs.
 *   collector: write <area>/locks/gc-<id>; if a live snapshot marker exists, remove its own and
 *              stop (skipped, not failed); otherwise read every committed index (any that cannot
 *              be read stops it before anything is removed), remove every chunk none names, and
 *              its marker. It too rewrites its marker every minute.
 *
 * A marker is live when the store says it was written within MS_CHUNK_LOCK_STALE_USEC of the
 * store's own "now" (the modification time of a marker just written): only the store's clock is
 * compared with itself, never a node's. A marker a crash left behind goes stale and is ignored,
 * then removed by the next collector. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "chunked.h"
#include "common/error.h"
#include "io/filter-encrypt.h"
#include "storage/storage.h"

#define MS_CHUNK_LOCK_REFRESH_USEC (60ULL * 1000000ULL)
/* Long enough for any single storage call of the collector (a listing of millions of keys);
 * short enough that a collector killed outright holds snapshots up for minutes, not hours.
 * The collector looks for snapshots again at every refresh, so one that found it stale in the
 * middle of a long call stops it there. */
#define MS_CHUNK_LOCK_STALE_USEC (5ULL * 60ULL * 1000000ULL)

typedef struct MsChunkLock {
    MsStorage *storage;
    char *key;
    uint64_t written_usec; /* monotonic, for refreshing */
} MsChunkLock;

/* A snapshot's marker, written, then a live collector waited for (at most wait_usec; 0: not at
 * all). -EBUSY with a message naming the collector when it is still running after that. */
int ms_chunk_lock_snapshot(MsStorage *st, const char *area, const char *name, uint64_t wait_usec,
                           MsChunkLock *ret, MsError *e);
/* Rewrite the marker if a refresh is due (cheap to call often). */
int ms_chunk_lock_refresh(MsChunkLock *l, MsError *e);
void ms_chunk_lock_release(MsChunkLock *l);

/* The chunks a new snapshot under prefix may reuse: those the indexes of the newest `newest`
 * committed chunked snapshots name, each index checked against its manifest's size and SHA-256
 * (an index that cannot be read or does not match is left out: its chunks are stored again). */
int ms_chunk_known_set(MsStorage *st, const char *prefix, const MsEncryptKey *key, unsigned newest,
                       MsChunkSet **ret, unsigned *ret_indexes, MsError *e);

typedef struct MsChunkGcResult {
    bool skipped;        /* a snapshot was running: nothing removed */
    char *skipped_because; /* which marker */
    uint64_t snapshots;  /* committed chunked snapshots whose indexes were read */
    uint64_t referenced; /* distinct chunks they name */
    uint64_t chunks;     /* chunks in the area */
    uint64_t removed;
    uint64_t removed_bytes;
    uint64_t stale_markers_removed;
    uint64_t temporaries_removed; /* unfinished chunk writes of killed snapshots */
} MsChunkGcResult;

/* Collect the chunk area of prefix. key opens encrypted indexes (needed when there are any). */
int ms_chunk_gc(MsStorage *st, const char *prefix, const MsEncryptKey *key,
                const volatile sig_atomic_t *cancel, MsChunkGcResult *ret, MsError *e);
void ms_chunk_gc_result_clear(MsChunkGcResult *r);

/* The entries of idx whose chunk is not in the area (a listing: presence, not contents).
 * ret: ids to free, *ret_n of them. */
int ms_chunk_missing(MsStorage *st, const char *area, const MsChunkIndex *idx, uint8_t (**ret)[MS_CHUNK_ID_BYTES],
                     size_t *ret_n, MsError *e);
/* The snapshots under prefix (their names, comma-separated, into buf) whose index names id. */
int ms_chunk_users(MsStorage *st, const char *prefix, const MsEncryptKey *key,
                   const uint8_t id[MS_CHUNK_ID_BYTES], char *buf, size_t size, MsError *e);

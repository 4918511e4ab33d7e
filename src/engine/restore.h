/* Restoring a snapshot (ours or a stock mongodump archive) into a deployment: collections with
 * their options, documents in parallel batches, indexes, views, then the captured oplog. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "common/error.h"
#include "io/filter-encrypt.h"
#include "manifest.h"
#include "nsfilter.h"
#include "progress.h"
#include "storage/storage.h"

typedef struct MsRestoreOptions {
    const char *uri; /* target; may hold a password */
    const char *password;
    /* Either a stored snapshot ... */
    MsStorage *storage;
    const char *snapshot_key;
    /* ... or an archive file (stock mongodump --archive, plain or gzip; "-" = stdin). */
    const char *archive_path;
    const char *manifest_path; /* optional, with archive_path */
    const MsEncryptKey *key;   /* for an encrypted snapshot; NULL: none given */

    const MsNsFilter *filter;
    unsigned parallel;   /* insertion workers */
    unsigned batch_size; /* documents per insert */
    bool drop;           /* drop each target collection first */
    bool replay_oplog;   /* replay the captured oplog (when there is one) */
    /* Point-in-time: oplog slices (their manifest keys, in chain order, oplog-slice.h) whose
     * entries after the snapshot's end are replayed after its own oplog, up to until. */
    char *const *slice_keys;
    size_t n_slices;
    bool has_until;      /* stop replay after this position */
    MsOplogPosition until;
    bool restore_indexes;
    bool bypass_validation;
    MsProgress *progress;
    volatile sig_atomic_t *cancel;
} MsRestoreOptions;

typedef struct MsRestoreResult {
    uint64_t documents;  /* inserted */
    uint64_t duplicates; /* already present in the target (not dropped), left as they were */
    uint64_t namespaces;
    uint64_t indexes;
    uint64_t views;
    uint64_t oplog_applied;
    uint64_t oplog_not_selected; /* left out by --ns-include/--ns-exclude, as asked */
    uint64_t oplog_unplaceable;  /* reached outside the mapping: skipped (oplog-plan.h) */
    uint64_t oplog_uncommitted;  /* operations of transactions not committed at the end */
    uint64_t namespaces_protected; /* admin/local/config/system.* not named literally */
    uint64_t slice_entries; /* read from the slices, after the snapshot's end */
    uint64_t check_usec; /* --drop: how long checking the snapshot whole took, before any drop */
    bool point_in_time;
    MsOplogPosition restored_to;
} MsRestoreResult;

int ms_restore_run(const MsRestoreOptions *o, MsRestoreResult *ret, MsError *e);

/* Parse "T:I" (oplog timestamp) or an ISO 8601 UTC time ("2026-11-22T03:04:05Z"). */
int ms_oplog_position_parse(const char *s, MsOplogPosition *ret);

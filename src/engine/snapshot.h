/* Taking a snapshot: a consistent dump of a deployment into the mongodump archive format,
 * compressed, checksummed and committed to a store with its manifest. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "common/error.h"
#include "io/stream.h"
#include "progress.h"
#include "storage/storage.h"

typedef struct MsSnapshotOptions {
    const char *uri;      /* may hold a password; never printed */
    const char *password; /* optional, from a credential file */
    MsStorage *storage;
    const char *prefix; /* key prefix in the store ("nightly/node1"), may be NULL */
    const char *name;   /* snapshot name, unique within the prefix */
    const char *node;   /* this machine's name for the manifest */
    MsCompression compression;
    int compression_level;   /* 0: codec default */
    int compression_threads; /* zstd workers */
    unsigned parallel_collections;
    bool capture_oplog;      /* when the source has one */
    bool include_users;      /* admin.system.users / system.roles */
    MsProgress *progress;
    volatile sig_atomic_t *cancel; /* set by a signal handler to stop */
} MsSnapshotOptions;

typedef struct MsSnapshotResult {
    char *archive_key;
    char *manifest_key;
    uint64_t documents;
    uint64_t namespaces;
    uint64_t stored_bytes;
    uint64_t uncompressed_bytes;
    bool point_in_time;
} MsSnapshotResult;

int ms_snapshot_run(const MsSnapshotOptions *o, MsSnapshotResult *ret, MsError *e);
void ms_snapshot_result_clear(MsSnapshotResult *r);

/* Taking a snapshot: a consistent dump of a deployment into the mongodump archive format,
 * compressed, checksummed and committed to a store with its manifest. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "common/error.h"
#include "io/filter-encrypt.h"
#include "io/stream.h"
#include "manifest.h" /* MsOplogPosition */
#include "nsfilter.h"
#include "progress.h"
#include "storage/storage.h"

typedef struct MsSnapshotOptions {
    const char *uri;      /* may hold a password; never printed */
    const char *password; /* optional, from a credential file */
    MsStorage *storage;
    const char *prefix; /* key prefix in the store ("nightly/node1"), may be NULL */
    const char *name;   /* snapshot name, unique within the prefix */
    const char *node;   /* this machine's name for the manifest */
    /* For the manifest (manifest.h): the policy's start order and what started it. */
    uint64_t seq;
    const char *origin;
    MsCompression compression;
    int compression_level;   /* 0: codec default */
    int compression_threads; /* zstd workers */
    /* Client-side encryption: non-NULL seals the compressed archive with AES-256-GCM
     * (io/filter-encrypt.h) before it is hashed and stored; the manifest records the key id. */
    const MsEncryptKey *key;
    unsigned parallel_collections;
    /* A collection of at least twice this many bytes (collStats size) is read by up to
     * parallel_collections cursors at once, each an _id range of at least this size
     * (snapshot-split.h). 0: one cursor per collection, as mongodump. */
    uint64_t split_min_bytes;
    /* Format=chunked (engine/chunked.h): the archive stream stored as deduplicated chunks of
     * about chunk_avg bytes (0: 16 KiB) in the chunk area, with an index; compression is zstd
     * per chunk at compression_level. */
    bool chunked;
    size_t chunk_avg;
    bool capture_oplog;      /* when the source has one */
    /* The config database (sharding metadata), skipped otherwise: a cluster snapshot's config
     * part (engine/cluster.h), with a filter naming its collections. */
    bool include_config_db;
    /* A part of a cluster snapshot: called once the collections are dumped, with the newest
     * oplog position then (the part is consistent from there on), before the oplog is
     * captured; it returns when every part got there (a barrier), with the cluster's
     * consistency point in *ret_point: the oplog is then captured only once it is known to
     * hold every entry up to that point (its newest entry is past it, or the clock is two
     * seconds past it: a server without a periodic no-op writer may just be idle). A negative
     * return fails the snapshot (another part failed), with e set. NULL: no barrier. */
    int (*after_dump)(void *userdata, MsOplogPosition dump_end, MsOplogPosition *ret_point,
                      MsError *e);
    void *after_dump_userdata;
    bool include_users;      /* admin.system.users / system.roles, whatever the filter says */
    /* --ns-include/--ns-exclude (validated; renames are ignored). NULL or empty: every
     * namespace. Otherwise only the selected collections, views and time-series collections
     * are dumped and only oplog entries about them are captured. */
    const MsNsFilter *filter;
    MsProgress *progress;
    volatile sig_atomic_t *cancel; /* set by a signal handler to stop */
    /* Refuse a sharded cluster's mongos or config server (-EXDEV, before anything is read or
     * stored), for the caller to take a cluster snapshot instead (engine/cluster.h). */
    bool detect_cluster;
} MsSnapshotOptions;

typedef struct MsSnapshotResult {
    char *archive_key;
    char *manifest_key;
    uint64_t documents;
    uint64_t namespaces;
    uint64_t stored_bytes; /* chunked: the index and the chunks this snapshot added */
    uint64_t uncompressed_bytes;
    uint64_t chunks, chunks_stored; /* chunked: in the index, and of them stored anew */
    MsOplogPosition oplog_start, oplog_end; /* with point_in_time */
    MsOplogPosition dump_end; /* the newest oplog position when the dump ended (after_dump) */
    bool point_in_time;
    /* With a filter: what it left out. */
    uint64_t collections_left_out; /* listed, not selected */
    uint64_t databases_skipped;    /* never listed: no collection of theirs could match */
    uint64_t oplog_entries_left_out;
    /* Patterns that made no difference: an include that selected no collection, an exclude
     * that left none out. Not an error (other patterns selected something), but most likely
     * a typo the caller should see. Owned copies. */
    char **ns_include_unused;
    size_t n_ns_include_unused;
    char **ns_exclude_unused;
    size_t n_ns_exclude_unused;
} MsSnapshotResult;

int ms_snapshot_run(const MsSnapshotOptions *o, MsSnapshotResult *ret, MsError *e);
void ms_snapshot_result_clear(MsSnapshotResult *r);

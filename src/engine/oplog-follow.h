/* The oplog follower of point-in-time recovery: tails local.oplog.rs from the chain's last
 * stored position and commits it to the store as slices (oplog-slice.h), one every slice
 * period and one more when stopped, so that what was read is never lost. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "io/compression.h"
#include "io/filter-encrypt.h"
#include "manifest.h"
#include "oplog-slice.h"
#include "progress.h"
#include "storage/storage.h"

/* The server clock's time, less this, is what an idle slice claims (its entries could still be
 * arriving with earlier timestamps within it). */
#define MS_FOLLOW_IDLE_MARGIN_SEC 2u

typedef struct MsFollowOptions {
    const char *uri; /* may hold a password; never printed */
    const char *password;
    MsStorage *storage;
    const char *prefix; /* the policy's prefix in the store; slices go under <prefix>/oplog/ */
    const char *node;
    MsCompression compression;
    int compression_level;
    const MsEncryptKey *key;
    /* Where a new chain may begin instead of the newest entry: the newest point-in-time
     * snapshot's end in the store, so that it is restorable onward at once. Used only while the
     * oplog still holds it (its oldest entry at or before it). */
    bool has_chain_start_hint;
    MsOplogPosition chain_start_hint;
    uint64_t slice_usec;  /* close a slice after this long */
    uint64_t max_slices;  /* stop after this many slices with entries (0: until cancelled) */
    uint64_t max_usec;    /* stop after this long (0: until cancelled) */
    MsProgress *progress; /* "slice" and "gap" events */
    /* After each committed slice, and once with NULL when following begins (the worker
     * reports the restorable ranges from here). May be NULL. */
    void (*on_slice)(void *userdata, const MsSliceRef *slice);
    void *userdata;
    volatile sig_atomic_t *cancel;
    /* One part of a sharded cluster (a shard's replica set, or the config server, which is
     * otherwise refused as a cluster's source). */
    bool cluster_part;
} MsFollowOptions;

typedef struct MsFollowResult {
    uint64_t slices;      /* committed, with entries */
    uint64_t idle_slices; /* committed, without */
    uint64_t entries;
    uint64_t gaps;
    uint64_t repeated; /* entries the server sent twice, stored once */
    MsOplogPosition position; /* the chain's last stored position */
} MsFollowResult;

/* Runs until cancelled (then commits the open slice and returns 0), the limits are reached, or
 * a failure (the open slice is committed first when it can be). */
int ms_follow_run(const MsFollowOptions *o, MsFollowResult *ret, MsError *e);

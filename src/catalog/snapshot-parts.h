/* A cluster snapshot's parts as its record keeps them (the catalog's snapshots.parts column,
 * the cluster store's "parts" field): a JSON array, one object per part,
 *   [{"shard":"shard01","replica_set":"rs01","manifest":"P/N.parts/shard01.manifest.json",
 *     "documents":N,"stored_bytes":N,"dump_end":{"t":N,"i":N}}, ...]
 * written from the worker's "part" messages (or, for a snapshot found by a scan, from its
 * cluster manifest) and read by the bus's Snapshot.Parts property. NULL for a snapshot of one
 * replica set. The catalog stores the text as it is, as it does a restore's options. */
#pragma once

#include <bson/bson.h>
#include <stdint.h>

#include "common/error.h"

typedef struct MsSnapshotPart {
    const char *shard;       /* the shard's name, or "config" for the config servers' data */
    const char *replica_set; /* "" when unknown */
    const char *manifest;    /* the part's manifest key in the store */
    uint64_t documents;
    uint64_t stored_bytes;
    uint32_t dump_end_t, dump_end_i; /* the oplog position the part's dump ended at */
    const char *node; /* the node that took it; "" when unknown */
} MsSnapshotPart;

/* Appends the part described by doc (a "part" progress message or a cluster manifest's part:
 * the fields above, others ignored) to array, an array being built, as its element number n.
 * -EINVAL when doc lacks the shard or the manifest. */
int ms_snapshot_parts_append(bson_t *array, uint32_t n, const bson_t *doc);

/* The JSON text of array (NULL when it is empty or out of memory). Free with bson_free(). */
char *ms_snapshot_parts_to_json(const bson_t *array);

/* Calls fn for every part of json in order; stops at fn's first negative return and returns it.
 * -EBADMSG with e set when json is not such an array (a damaged catalog row). */
int ms_snapshot_parts_foreach(const char *json, int (*fn)(const MsSnapshotPart *p, void *userdata),
                              void *userdata, MsError *e);

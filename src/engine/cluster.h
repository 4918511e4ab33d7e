/* Sharded clusters: one consistent snapshot of every shard and the config servers, and its
 * restore into a cluster with the same shard names or a mapping.
 *
 * Topology: Source= names a mongos or the config server replica set; the shards come from
 * config.shards ({_id: NAME, host: "RS/h1:p1,h2:p2", state: 1}), each reached as
 * mongodb://[user@]HOSTS/?replicaSet=RS plus the source URI's other options (authSource, TLS):
 * the backup reads the shards directly, as Percona Backup for MongoDB's agents do.
 *
 * A cluster snapshot (ms_cluster_snapshot_run) takes one part per shard and one of the config
 * server (config.databases, config.collections, config.chunks, config.shards, config.version)
 * at once, each an ordinary snapshot with its own oplog capture, stored under
 * <prefix>/<name>.parts/<shard>; with a mongos, the balancer is stopped first (balancerStop)
 * and started again in every outcome. The parts meet at a barrier after their dumps, so every
 * part's oplog is captured past every part's dump; the **consistency point** T is the latest of
 * the parts' dump ends (each part is consistent from its own dump end on, so T is the first time
 * at which all of them are), and every part's oplog reaches T (or the shard wrote nothing
 * between its last entry and the capture, which came after T). The cluster manifest
 * <prefix>/<name>.cluster.json names the parts and T; it is written last, after every part is
 * committed, so a cluster snapshot is complete only when every part is.
 *
 * A restore (ms_cluster_restore_run) restores each shard's part into the target shard of the
 * same name (or the one --shard-map names) and replays its oplog up to T, and the config data
 * into the target's config server with shard names mapped; the target's own config.shards is
 * kept. One shard's part alone restores into a replica set as an ordinary snapshot (restore
 * --snapshot <prefix>/<name>.parts/<shard> --until T). */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "common/error.h"
#include "config/conf.h"
#include "mongosnap/mongosnap.h"
#include "io/filter-encrypt.h"
#include "manifest.h"
#include "progress.h"
#include "storage/storage.h"

#define MS_CLUSTER_MANIFEST_SUFFIX MONGOSNAP_CLUSTER_MANIFEST_SUFFIX
#define MS_CLUSTER_PARTS_SUFFIX MONGOSNAP_CLUSTER_PARTS_SUFFIX
#define MS_CLUSTER_CONFIG_PART "config"
/* <prefix>/<name>.balancer.json: the balancer was stopped by that cluster snapshot and not yet
 * started again (the takeover starts it: ms_cluster_balancer_takeover()). */
#define MS_CLUSTER_BALANCER_SUFFIX ".balancer.json"
#define MS_CLUSTER_MAX_SHARDS 64

typedef struct MsClusterShard {
    char *name;  /* config.shards _id */
    char *rs;    /* the replica set name */
    char *hosts; /* "h1:p1,h2:p2" */
} MsClusterShard;

void ms_cluster_shards_free(MsClusterShard *s, size_t n);

/* What a cluster's parts are read from: every shard's replica set and the config server
 * (named MS_CLUSTER_CONFIG_PART, last), each with the URI that reaches it (the source's user
 * and options: it may hold a password, never printed). */
typedef struct MsClusterSource {
    char *name;
    char *uri;
} MsClusterSource;
int ms_cluster_sources(const char *uri, const char *password, MsClusterSource **ret, size_t *ret_n,
                       MsError *e);
void ms_cluster_sources_free(MsClusterSource *s, size_t n);

/* Where the config server's oplog (config_uri: the config part's source) has the newest change
 * of the shards' names (an insert or delete on config.shards): *ret_found false when it holds
 * none (the change is older than its oplog). */
int ms_cluster_shards_changed_at(const char *config_uri, const char *password, bool *ret_found,
                                 MsOplogPosition *ret, MsError *e);

/* The takeover of a balancer a killed cluster snapshot of prefix left stopped: when its marker
 * is there, balancerStart through the source (a mongos) and the markers removed. only: that
 * snapshot's marker alone (NULL: every one; only the policy's one running task may say so).
 * *ret_started says whether it was started. Nothing to do: 0. */
int ms_cluster_balancer_takeover(const char *uri, const char *password, MsStorage *st,
                                 const char *prefix, const char *only, unsigned *ret_started,
                                 MsError *e);
/* The takeover of a target cluster's balancer a killed restore worker left stopped (a restore
 * keeps no marker: the target's address is not the store's to keep, the agent has it): through
 * a mongos, balancerStart; anything else has no balancer to start (0, *ret_started false). */
int ms_cluster_balancer_start(const char *uri, const char *password, bool *ret_started,
                              MsError *e);
/* A shard's connection string: hosts and replica set from config.shards, user name and options
 * from the source URI (the password travels apart, as for the source). */
int ms_cluster_shard_uri(const char *source_uri, const MsClusterShard *shard, char **ret, MsError *e);

/* The connection string a part taken by another process reads its shard with: through the
 * cluster's source (config.shards), the shard's replica set, or with member (HOST:PORT, one
 * the shard's host list names: anything else is refused before the source's credentials go
 * there) that member alone, directly (a secondary answers reads then). */
int ms_cluster_part_source(const char *source_uri, const char *password, const char *shard_name,
                           const char *member, char **ret, MsError *e);
/* Replies of a mongos, read (tests/unit/test-cluster.c holds them to recorded replies of
 * MongoDB 6.0 and 7.0): hello says "isdbgrid"; getShardMap names the config server. */
bool ms_cluster_hello_is_mongos(const bson_t *hello);
const char *ms_cluster_config_host(const bson_t *shard_map);
/* From balancerStatus's reply ({mode: "full"|"off", inBalancerRound, ...}): 1 when the
 * balancer is off (an operator stopped it: a snapshot leaves it so), 0 when on, -1 when the
 * reply says neither. */
int ms_cluster_balancer_is_off(const bson_t *status);

/* "a=b,c=d": parsed, checked (no name twice on either side). */
typedef struct MsShardMap {
    char **from, **to;
    size_t n;
} MsShardMap;
int ms_shard_map_parse(const char *text, MsShardMap *ret, MsError *e);
const char *ms_shard_map_apply(const MsShardMap *m, const char *name);
void ms_shard_map_clear(MsShardMap *m);

typedef struct MsClusterSnapshotOptions {
    const char *uri; /* a mongos or the config server */
    const char *password;
    MsStorage *storage;
    const char *prefix;
    const char *name;
    const char *node;
    uint64_t seq;       /* the policy's snapshot sequence (agent), 0: none */
    const char *origin; /* what started it ("scheduled", ...), NULL: by hand */
    MsCompression compression;
    int compression_level;
    int compression_threads;
    const MsEncryptKey *key;
    unsigned parallel_collections;
    bool chunked;
    uint64_t balancer_timeout_sec; /* balancerStop's time-out (mongos only) */
    /* Shards whose parts other processes take (`mongosnap-worker cluster-part`, on the nodes
     * beside their members), met through the store (cluster-part.h); part_timeout_sec: how
     * long one may be silent (0: the default; never taken: twice that). */
    char *const *remote_parts;
    size_t n_remote_parts;
    uint64_t part_timeout_sec;
    /* The agents of the deployment, "NODE=HOST:PORT" (each agent's Node= and Member=): a shard
     * one of whose members has an agent beside it is handed to the agent beside the best
     * member by node_priority (progress event part-assigned; that agent runs cluster-part),
     * unless that agent is this node's (node): then it is taken here. */
    char *const *part_agents;
    size_t n_part_agents;
    MsNodePriority node_priority;
    MsProgress *progress;
    volatile sig_atomic_t *cancel;
} MsClusterSnapshotOptions;

typedef struct MsClusterPart {
    char *shard;        /* or MS_CLUSTER_CONFIG_PART */
    char *rs;
    char *manifest_key; /* the part's snapshot */
    MsOplogPosition dump_end, oplog_end;
    uint64_t documents;
    uint64_t stored_bytes;
    char *node; /* the node that took it (NULL: unknown, or taken by hand) */
} MsClusterPart;

typedef struct MsClusterSnapshotResult {
    char *manifest_key;
    MsClusterPart *parts;
    size_t n_parts;
    MsOplogPosition consistency_point;
    bool balancer_stopped; /* through a mongos, and started again */
    uint64_t documents, stored_bytes;
} MsClusterSnapshotResult;

int ms_cluster_snapshot_run(const MsClusterSnapshotOptions *o, MsClusterSnapshotResult *ret,
                            MsError *e);
void ms_cluster_snapshot_result_clear(MsClusterSnapshotResult *r);

/* The cluster manifest, read back. */
typedef struct MsClusterManifest {
    char *name;
    char *node, *origin, *started_at, *finished_at; /* NULL when not recorded */
    uint64_t seq, documents, stored_bytes;
    bool encrypted;
    MsOplogPosition consistency_point;
    MsClusterPart *parts; /* the config part last */
    size_t n_parts;
} MsClusterManifest;
int ms_cluster_manifest_read(MsStorage *st, const char *key, MsClusterManifest *ret, MsError *e);
void ms_cluster_manifest_clear(MsClusterManifest *m);

typedef struct MsClusterRestoreOptions {
    const char *uri; /* the target cluster: a mongos or its config server */
    const char *password;
    MsStorage *storage;
    const char *snapshot_key; /* <prefix>/<name> or the cluster manifest's key */
    const MsShardMap *shard_map;
    const MsEncryptKey *key;
    bool drop;
    unsigned parallel;
    /* To a time at or after the consistency point (point-in-time recovery, cluster-pit.h):
     * every part, the config data's too, replayed to until through its slices in plan (whose
     * snapshot must be snapshot_key's). */
    bool has_until;
    MsOplogPosition until;
    const struct MsClusterPitPlan *plan;
    MsProgress *progress;
    volatile sig_atomic_t *cancel;
} MsClusterRestoreOptions;

typedef struct MsClusterRestoreResult {
    uint64_t documents;
    uint64_t oplog_applied;
    /* Operations of the config server's oplog replayed on the config data (in memory) to
     * bring it to the consistency point before it was written. */
    uint64_t config_oplog_applied;
    size_t shards;
    MsOplogPosition consistency_point;
} MsClusterRestoreResult;

int ms_cluster_restore_run(const MsClusterRestoreOptions *o, MsClusterRestoreResult *ret, MsError *e);

/* Whether key is an object of a cluster snapshot's parts: "<prefix>/<name>.parts/<leaf>", the
 * parts directory below a prefix (never a store's first component, which is a policy's, and a
 * policy may be named "x.parts") and the leaf directly in it. ret_stem (may be NULL): the length
 * of "<prefix>/<name>", to which MS_CLUSTER_MANIFEST_SUFFIX gives the cluster manifest. */
bool ms_cluster_part_key(const char *key, size_t *ret_stem);

/* Whether key (P/N or P/N.cluster.json) names a cluster snapshot in st: its cluster manifest is
 * there. 1, 0, or -errno for a store that cannot say. */
int ms_cluster_snapshot_exists(MsStorage *st, const char *key, MsError *e);

/* Verify a cluster snapshot: its manifest (self-checksum, every part its own), then every part
 * read whole as verify reads a snapshot. A damaged part fails with its shard named. */
typedef struct MsClusterVerifyResult {
    size_t parts;
    uint64_t documents;
    uint64_t oplog_entries;
    uint64_t stored_bytes;
} MsClusterVerifyResult;
int ms_cluster_verify_run(MsStorage *st, const char *key, const MsEncryptKey *enc_key,
                          MsProgress *p, volatile sig_atomic_t *cancel, MsClusterVerifyResult *ret,
                          MsError *e);

/* The keys of a cluster snapshot, in the order a removal takes them: the cluster manifest first
 * (from then on it is no snapshot: never listed complete with a part gone), then every object
 * of its parts (ms_cluster_part_key()). Listed from the store, so that a removal cut short is
 * finished by the next even with the cluster manifest gone. A key without a prefix is refused
 * (-EINVAL): its parts directory would be a store's first component, a policy's. */
int ms_cluster_snapshot_keys(MsStorage *st, const char *key, char ***ret_keys, size_t *ret_n,
                             MsError *e);

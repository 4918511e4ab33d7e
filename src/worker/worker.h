/* What the worker's commands share: their arguments, the store, the result line and the exit
 * code. mongosnap-worker.c parses and dispatches; worker-pitr.c holds point-in-time recovery's
 * commands (follow, list-slices, verify-chain, restore --time). */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "config/conf.h"
#include "engine/manifest.h"
#include "engine/nsfilter.h"
#include "engine/progress.h"
#include "io/compression.h"
#include "io/filter-encrypt.h"
#include "storage/storage.h"

extern volatile sig_atomic_t worker_cancel_requested;
/* SIGUSR1: the policy's snapshots changed (follow reads their manifests again). */
extern volatile sig_atomic_t worker_refresh_requested;

typedef struct Args {
    const char *command;
    char *uri;
    char *password;
    MsEncryptKey *key; /* --key-file: wiped on exit */
    const char *store;
    const char *prefix;
    const char *name;
    const char *node;
    uint64_t seq;
    const char *origin;
    const char *snapshot;
    const char *archive;
    const char *manifest;
    MsCompression compression;
    int level;
    int threads;
    unsigned parallel;
    /* Chunked snapshots (worker-chunked.c). */
    bool chunked;         /* snapshot --format chunked */
    bool compression_set; /* --compression given */
    uint64_t chunk_avg;   /* --chunk-size, 0: default */
    bool gc;              /* remove --gc: collect the chunk area afterwards */
    bool metadata_only;   /* verify --metadata-only */
    const char *output;   /* export --output FILE ("-" or none: standard output) */
    const char *shard_map; /* cluster-restore --shard-map OLD=NEW,... */
    const char *part;      /* restore --part SHARD: one part of a cluster snapshot alone */
    bool resume;           /* cluster-balancer --resume */
    bool start_balancer;   /* cluster-balancer --start */
    /* cluster-snapshot --remote-part SHARD (repeated): parts other processes take; cluster-part
     * --shard SHARD: the part this process takes; --part-timeout SEC for both. */
    char **remote_parts;
    size_t n_remote_parts;
    const char *shard;
    uint64_t part_timeout_sec;
    char **part_agents; /* --part-agent NODE=HOST:PORT (repeated) */
    size_t n_part_agents;
    MsNodePriority node_priority; /* --node-priority */
    bool via_cluster; /* cluster-part --via-cluster: --uri-file names the cluster's source */
    const char *member; /* cluster-part --member HOST:PORT: read that member directly */
    /* restore --time of a cluster snapshot: every part's slices (worker-pitr.c plans them). */
    const struct MsClusterPitPlan *cluster_plan;
    uint64_t split_min;
    bool split_min_set;
    unsigned batch_size;
    bool no_oplog;
    bool include_users;
    bool drop;
    bool no_indexes;
    bool no_bypass_validation;
    bool has_until;
    MsOplogPosition until;
    int progress_fd;
    unsigned progress_interval_ms; /* 0: each task's own */
    bool json;
    MsNsFilter filter;
    size_t n_rename_from, n_rename_to; /* paired after parsing */
    char **keys;                       /* remove --key, in order */
    size_t n_keys;
    /* Point-in-time (worker-pitr.c). */
    bool has_time;
    MsOplogPosition time; /* restore --time */
    unsigned slice_sec;   /* follow --slice-sec */
    unsigned max_slices;  /* follow --max-slices */
    unsigned max_sec;     /* follow --max-sec */
    char **slice_keys;    /* restore --time: the plan's slices */
    size_t n_slices;
} Args;

int worker_open_store(const Args *a, MsStorage **ret);
/* worker-chunked.c */
int worker_run_gc(Args *a, MsProgress *p);
int worker_run_export(Args *a, MsProgress *p);
int worker_verify_metadata(Args *a, MsProgress *p);
/* A chunked snapshot's verify failed naming a chunk: add which snapshots that chunk breaks. */
void worker_name_broken_snapshots(MsStorage *st, const Args *a, MsError *e);
/* worker-cluster.c */
int worker_run_cluster_snapshot(Args *a, MsProgress *p);
int worker_run_cluster_restore(Args *a, MsProgress *p);
int worker_run_cluster_balancer(Args *a, MsProgress *p);
int worker_run_cluster_part(Args *a, MsProgress *p);
/* restore --part SHARD of a cluster snapshot: checks the options and the target (a replica set),
 * sets a->until to the cluster's consistency point and *ret_key to the part's manifest key.
 * -EINVAL for what the caller asked wrong (an exit of MONGOSNAP_EXIT_USAGE). */
int worker_cluster_part(Args *a, MsStorage *storage, char **ret_key, MsError *e);
/* remove --gc */
int worker_collect(MsStorage *st, const Args *a, bson_t *fields, MsError *e);
bool worker_has_suffix(const char *s, const char *suffix);
int worker_exit_code_for(int r);
int worker_stopped_instead(int r, MsError *e);
void worker_report_result(MsProgress *p, const Args *a, int r, const MsError *e, bson_t *fields);

/* Remove unfinished writes of earlier tasks under prefix: the snapshots' (slices false) or the
 * slice directory's (true), each leaving the other's alone. */
void worker_clean_prefix(MsStorage *storage, const char *prefix, bool slices);

int worker_run_restore(Args *a, MsProgress *p);
int worker_run_follow(Args *a, MsProgress *p);
int worker_run_list_slices(Args *a, MsProgress *p);
int worker_run_verify_chain(Args *a, MsProgress *p);
/* restore --time: plans the snapshot and slices from the store, then restores. */
int worker_run_restore_time(Args *a, MsProgress *p);

/* The worker's commands for sharded clusters (engine/cluster.h): cluster-snapshot and
 * cluster-restore. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "engine/cluster-part.h"
#include "engine/cluster.h"
#include "engine/oplog-source.h"
#include "mongosnap/mongosnap.h"
#include "worker.h"

int worker_run_cluster_snapshot(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->uri) {
        log_error("cluster-snapshot needs the cluster: --uri-file FILE naming a mongos or the "
                  "config server");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (!a->name) {
        log_error("cluster-snapshot needs --name NAME");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->chunked) {
        /* Each cluster snapshot's parts live under their own prefix, so chunked parts would
         * share chunks with no other snapshot, and their chunk area would lie inside the
         * policy's, where the policy's collector removes unfinished writes. */
        log_error("cluster-snapshot does not take chunked snapshots yet: leave out --format "
                  "chunked (each part is then one archive)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsClusterSnapshotOptions o = {
        .uri = a->uri,
        .password = a->password,
        .storage = storage,
        .prefix = a->prefix,
        .name = a->name,
        .node = a->node,
        .seq = a->seq,
        .origin = a->origin,
        .compression = a->compression,
        .compression_level = a->level,
        .compression_threads = a->compression == MS_COMPRESSION_ZSTD ? a->threads : 0,
        .key = a->key,
        .parallel_collections = a->parallel ? a->parallel : 2,
        .chunked = a->chunked,
        .balancer_timeout_sec = 60,
        .remote_parts = a->remote_parts,
        .n_remote_parts = a->n_remote_parts,
        .part_timeout_sec = a->part_timeout_sec,
        .part_agents = a->part_agents,
        .n_part_agents = a->n_part_agents,
        .node_priority = a->node_priority,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
    MsClusterSnapshotResult res;
    MsError e = MS_ERROR_INIT;
    ms_progress_set_phase(p, "cluster");
    int r = ms_cluster_snapshot_run(&o, &res, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        /* The cluster manifest is the snapshot's one key: its "archive" for the agent's
         * record (verify, restore and removal take the whole cluster snapshot by it). */
        BSON_APPEND_UTF8(&fields, "archive", res.manifest_key);
        BSON_APPEND_UTF8(&fields, "manifest", res.manifest_key);
        BSON_APPEND_BOOL(&fields, "point_in_time", true);
        BSON_APPEND_BOOL(&fields, "cluster", true);
        ms_oplog_position_append(&fields, "consistency_point", res.consistency_point);
        BSON_APPEND_BOOL(&fields, "balancer_stopped", res.balancer_stopped);
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "stored_bytes", (int64_t) res.stored_bytes);
        bson_t parts;
        BSON_APPEND_ARRAY_BEGIN(&fields, "parts", &parts);
        for (size_t i = 0; i < res.n_parts; i++) {
            char k[16];
            const char *kp;
            bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
            bson_t part;
            BSON_APPEND_DOCUMENT_BEGIN(&parts, kp, &part);
            BSON_APPEND_UTF8(&part, "shard", res.parts[i].shard);
            BSON_APPEND_UTF8(&part, "manifest", res.parts[i].manifest_key);
            ms_oplog_position_append(&part, "dump_end", res.parts[i].dump_end);
            ms_oplog_position_append(&part, "oplog_end", res.parts[i].oplog_end);
            BSON_APPEND_INT64(&part, "documents", (int64_t) res.parts[i].documents);
            bson_append_document_end(&parts, &part);
        }
        bson_append_array_end(&fields, &parts);
        if (!a->json)
            printf("cluster snapshot %s: %zu parts, %" PRIu64 " documents, consistent at %" PRIu32
                   ":%" PRIu32 "\n",
                   res.manifest_key, res.n_parts, res.documents, res.consistency_point.t,
                   res.consistency_point.i);
        ms_cluster_snapshot_result_clear(&res);
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("cluster snapshot stopped: %s", e.message);
    else
        log_error("cluster snapshot failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

int worker_cluster_part(Args *a, MsStorage *storage, char **ret_key, MsError *e) {
    if (a->has_until || a->has_time || a->no_oplog || a->n_slices || a->shard_map)
        return ms_error_set(e, EINVAL,
                            "a part of cluster snapshot %s is restored to the cluster snapshot's "
                            "consistency point: --until, --time, --no-oplog and --shard-map do "
                            "not go with --part",
                            a->snapshot);
    MsClusterManifest cm;
    int r = ms_cluster_manifest_read(storage, a->snapshot, &cm, e);
    if (r < 0)
        return r;
    const MsClusterPart *part = NULL;
    char names[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < cm.n_parts; i++) {
        if (strcmp(cm.parts[i].shard, MS_CLUSTER_CONFIG_PART) == 0)
            continue;
        if (strcmp(cm.parts[i].shard, a->part) == 0)
            part = &cm.parts[i];
        if (used < sizeof(names))
            used += (size_t) snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "",
                                      cm.parts[i].shard);
    }
    if (!part && strcmp(a->part, MS_CLUSTER_CONFIG_PART) == 0)
        r = ms_error_set(e, EINVAL,
                         "the config data's part is restored with the whole cluster snapshot, "
                         "into a cluster's config server; --part takes a shard (%s has %s)",
                         a->snapshot, names);
    else if (!part)
        r = ms_error_set(e, EINVAL, "cluster snapshot %s has no shard '%s' (its shards: %s)",
                         a->snapshot, a->part, names);
    /* Into a replica set: a part written through a mongos would be routed by the target
     * cluster's own chunks, and into its config server it would not be a shard's data. */
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    if (r == 0)
        r = ms_mongo_one_open(a->uri, a->password, &one, e);
    if (r == 0 && ms_mongo_is_sharded_source(one.client))
        r = ms_error_set(e, EINVAL,
                         "the target is a sharded cluster's mongos or config server: a part "
                         "alone goes into a replica set (restore the whole cluster snapshot "
                         "into a cluster). Nothing was restored");
    if (r == 0) {
        a->has_until = true;
        a->until = cm.consistency_point;
        if (!(*ret_key = strdup(part->manifest_key)))
            r = ms_error_oom(e);
        else
            log_info("part %s of cluster snapshot %s (%s), to its consistency point %" PRIu32
                     ":%" PRIu32,
                     part->shard, a->snapshot, part->manifest_key, cm.consistency_point.t,
                     cm.consistency_point.i);
    }
    ms_cluster_manifest_clear(&cm);
    return r;
}

/* One shard's part of a cluster snapshot whose coordinator runs elsewhere (cluster-part.h). */
int worker_run_cluster_part(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->uri || !a->prefix || !a->name || !a->shard) {
        log_error("cluster-part needs the shard (--uri-file FILE: its replica set or the member "
                  "beside this node), --store, --prefix P and --name N (the cluster snapshot's) "
                  "and --shard SHARD (its name in config.shards)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->chunked || a->filter.n_include || a->filter.n_exclude || a->include_users ||
        a->no_oplog) {
        log_error("a cluster snapshot's part takes every namespace of its shard with its oplog, "
                  "as one archive: leave out --format chunked, --ns-include/--ns-exclude, "
                  "--include-users and --no-oplog");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    /* Through the cluster's source (what the agent has: the policy's Source=), the shard's
     * replica set from config.shards, with the source's user and options. */
    _cleanup_free_ char *shard_uri = NULL;
    if (a->member && !a->via_cluster) {
        log_error("--member goes with --via-cluster (the member is found in config.shards)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->via_cluster) {
        MsError se = MS_ERROR_INIT;
        int r = ms_cluster_part_source(a->uri, a->password, a->shard, a->member, &shard_uri, &se);
        if (r < 0) {
            log_error("part %s failed: %s", a->shard, se.message);
            worker_report_result(p, a, r, &se, NULL);
            return worker_exit_code_for(r);
        }
    }
    MsClusterPartOptions o = {
        .snapshot = {.uri = shard_uri ? shard_uri : a->uri,
                     .password = a->password,
                     .storage = storage,
                     .node = a->node,
                     .seq = a->seq,
                     .compression = a->compression,
                     .compression_level = a->level,
                     .compression_threads =
                         a->compression == MS_COMPRESSION_ZSTD ? a->threads : 0,
                     .key = a->key,
                     .parallel_collections = a->parallel ? a->parallel : 2,
                     .progress = p,
                     .cancel = &worker_cancel_requested},
        .prefix = a->prefix,
        .name = a->name,
        .shard = a->shard,
        .timeouts = ms_part_meet_timeouts(a->part_timeout_sec),
    };
    MsSnapshotResult res;
    MsError e = MS_ERROR_INIT;
    ms_progress_set_phase(p, "cluster part");
    int r = ms_cluster_part_run(&o, &res, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_UTF8(&fields, "shard", a->shard);
        BSON_APPEND_UTF8(&fields, "archive", res.archive_key);
        BSON_APPEND_UTF8(&fields, "manifest", res.manifest_key);
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "stored_bytes", (int64_t) res.stored_bytes);
        ms_oplog_position_append(&fields, "dump_end", res.dump_end);
        ms_oplog_position_append(&fields, "oplog_end", res.oplog_end);
        if (!a->json)
            printf("part %s of %s/%s: %" PRIu64 " documents, stored as %s\n", a->shard, a->prefix,
                   a->name, res.documents, res.manifest_key);
        ms_snapshot_result_clear(&res);
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_warning("part %s stopped: %s", a->shard, e.message);
    else
        log_error("part %s failed: %s", a->shard, e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* The takeover of a balancer a killed cluster snapshot left stopped (cluster.h). */
int worker_run_cluster_balancer(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (a->start_balancer && !a->resume && a->uri && !a->store) {
        MsError e = MS_ERROR_INIT;
        bool started = false;
        int r = ms_cluster_balancer_start(a->uri, a->password, &started, &e);
        bson_t fields = BSON_INITIALIZER;
        if (r == 0) {
            BSON_APPEND_BOOL(&fields, "started", started);
            if (!a->json)
                printf("%s\n", started ? "the balancer was started again"
                                       : "the target is no mongos: no balancer to start");
        } else
            log_error("cluster-balancer failed: %s", e.message);
        worker_report_result(p, a, r, &e, &fields);
        bson_destroy(&fields);
        return worker_exit_code_for(r);
    }
    if (!a->resume || a->start_balancer || !a->uri || !a->prefix || !a->prefix[0]) {
        log_error("cluster-balancer --resume needs the cluster (--uri-file FILE: its mongos), "
                  "--store and --prefix (the policy's); --start needs --uri-file alone (a "
                  "restore's target)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    unsigned started = 0;
    int r = ms_cluster_balancer_takeover(a->uri, a->password, storage, a->prefix, a->name,
                                         &started, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_BOOL(&fields, "started", started > 0);
        if (!a->json)
            printf("%s\n", started ? "the balancer a killed cluster snapshot left stopped was "
                                     "started again"
                                   : "no balancer left stopped by this policy");
    } else
        log_error("cluster-balancer failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

int worker_run_cluster_restore(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->uri || !a->snapshot) {
        log_error("cluster-restore needs the target cluster (--uri-file FILE: its mongos or config "
                  "server) and --snapshot PREFIX/NAME (with --store)");
        return MONGOSNAP_EXIT_USAGE;
    }
    MsShardMap map = {0};
    MsError e = MS_ERROR_INIT;
    if (a->shard_map && ms_shard_map_parse(a->shard_map, &map, &e) < 0) {
        log_error("%s", e.message);
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0) {
        ms_shard_map_clear(&map);
        return MONGOSNAP_EXIT_USAGE;
    }
    MsClusterRestoreOptions o = {
        .uri = a->uri,
        .password = a->password,
        .storage = storage,
        .snapshot_key = a->snapshot,
        .shard_map = &map,
        .key = a->key,
        .drop = a->drop,
        .parallel = a->parallel,
        .has_until = a->cluster_plan && a->has_until,
        .until = a->until,
        .plan = a->cluster_plan,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
    MsClusterRestoreResult res;
    ms_progress_set_phase(p, "cluster-restore");
    int r = ms_cluster_restore_run(&o, &res, &e);
    ms_shard_map_clear(&map);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "oplog_applied", (int64_t) res.oplog_applied);
        BSON_APPEND_INT64(&fields, "shards", (int64_t) res.shards);
        BSON_APPEND_INT64(&fields, "config_oplog_applied", (int64_t) res.config_oplog_applied);
        ms_oplog_position_append(&fields, "consistency_point", res.consistency_point);
        if (!a->json)
            printf("restored %zu shards and the config data: %" PRIu64 " documents, %" PRIu64
                   " oplog entries replayed, each shard and the config data (%" PRIu64
                   " entries) to %" PRIu32 ":%" PRIu32 "\n",
                   res.shards, res.documents, res.oplog_applied, res.config_oplog_applied,
                   res.consistency_point.t, res.consistency_point.i);
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("cluster restore stopped: %s", e.message);
    else
        log_error("cluster restore failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

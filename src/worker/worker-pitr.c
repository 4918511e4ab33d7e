/* Point-in-time recovery's worker commands: follow (the oplog follower), list-slices,
 * verify-chain and restore --time. A policy's prefix holds its snapshots and, under oplog/,
 * its slices; every plan is made from what the store holds, so a worker needs no agent. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/strv.h"
#include "engine/cluster-pit.h"
#include "engine/cluster.h"
#include "engine/mongo-client.h"
#include "engine/oplog-follow.h"
#include "engine/oplog-slice.h"
#include "engine/verify.h"
#include "mongosnap/mongosnap.h"
#include "worker.h"

#define DEFAULT_SLICE_SEC 60u
#define SNAPSHOT_MANIFEST_MAX (16u * 1024u * 1024u)

static int need_prefix(const Args *a) {
    if (a->prefix && a->prefix[0])
        return 0;
    log_error("%s needs --prefix: the policy's prefix in the store (its name, for the agent's "
              "policies)",
              a->command);
    return -EINVAL;
}

static void append_position(bson_t *b, const char *key, MsOplogPosition p) {
    bson_append_timestamp(b, key, -1, p.t, p.i);
}

/* The point-in-time snapshots of a prefix, from their manifests (snapshots only: slices live
 * one directory down). Strings owned by the arrays returned. */
typedef struct Snapshots {
    MsPitSnapshot *snaps;
    char **ids, **keys;
    size_t n;
} Snapshots;

static void snapshots_clear(Snapshots *s) {
    ms_strv_free(s->ids);
    ms_strv_free(s->keys);
    free(s->snaps);
    memset(s, 0, sizeof(*s));
}

static int load_snapshots(MsStorage *st, const char *prefix, Snapshots *ret, MsError *e) {
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/", prefix) < 0)
        return ms_error_oom(e);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list_children(st, dir, MONGOSNAP_MANIFEST_SUFFIX, &objs, &n, e);
    if (r < 0)
        return r;
    Snapshots s = {0};
    s.snaps = calloc(n ? n : 1, sizeof(*s.snaps));
    if (!s.snaps)
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        const char *key = objs[i].key;
        _cleanup_free_ char *json = NULL;
        size_t len = 0;
        MsManifest m = {0};
        MsError me = MS_ERROR_INIT;
        int g = ms_storage_get(st, key, SNAPSHOT_MANIFEST_MAX, &json, &len, &me);
        if (g == -ENOENT)
            continue; /* removed since the listing */
        if (g < 0) {
            /* A manifest that could not be read now (the store's error) is not one that is
             * gone: planning and, above all, the retention of slices must not go on without
             * it, or the slices it needs could be removed. */
            *e = me;
            r = g;
            break;
        }
        if (ms_manifest_parse(json, len, &m, &me) < 0) {
            /* Damaged: that snapshot cannot be restored; verify and scan report it. */
            log_warning("%s: %s (left out of point-in-time planning)", key, me.message);
            continue;
        }
        if (!ms_manifest_is_slice(&m)) {
            if (ms_strv_push(&s.ids, m.snapshot ? m.snapshot : key) < 0 ||
                ms_strv_push(&s.keys, key) < 0)
                r = ms_error_oom(e);
            else
                s.snaps[s.n++] = (MsPitSnapshot){
                    .start = m.oplog_start, .end = m.oplog_end, .point_in_time = m.point_in_time};
        }
        ms_manifest_clear(&m);
    }
    ms_storage_objects_free(objs, n);
    for (size_t i = 0; r == 0 && i < s.n; i++) {
        s.snaps[i].id = s.ids[i];
        s.snaps[i].key = s.keys[i];
    }
    if (r < 0) {
        snapshots_clear(&s);
        return r;
    }
    *ret = s;
    return 0;
}

static void append_ranges(bson_t *b, const char *key, const MsPitRange *ranges, size_t n);
static void append_position(bson_t *b, const char *key, MsOplogPosition p);

/* What every follower of this worker shares: the store, compression, key and limits. */
static MsFollowOptions follow_options(const Args *a, MsStorage *storage, MsProgress *p,
                                      const char *uri, const char *prefix) {
    return (MsFollowOptions){
        .uri = uri,
        .password = a->password,
        .storage = storage,
        .prefix = prefix,
        .node = a->node,
        .compression = a->compression,
        .compression_level = a->level,
        .key = a->key,
        .slice_usec = (uint64_t) (a->slice_sec ? a->slice_sec : DEFAULT_SLICE_SEC) * 1000000u,
        .max_slices = a->max_slices,
        .max_usec = (uint64_t) a->max_sec * 1000000u,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
}

/* The restorable ranges, reported by the follower after every slice ("ranges" events), so that
 * the agent shows them without reading the store itself. The slices are listed once and then
 * followed from the commits; the snapshots' manifests are read again every
 * RANGES_SNAPSHOT_REFRESH slices (snapshots come and go beside the follower). */
#define RANGES_SNAPSHOT_REFRESH 10

typedef struct RangesReporter {
    MsStorage *storage;
    const char *prefix;
    MsProgress *progress;
    MsSliceRef *slices;
    size_t n_slices, cap_slices;
    Snapshots snaps;
    unsigned since_refresh;
    bool snaps_loaded; /* read at the start already: the first report needs no second read */
    bool broken; /* a listing failed: nothing more is reported rather than something wrong */
} RangesReporter;

/* Removes the slices of a chain that end at or before cutoff (none when the chain's newest
 * slice does not end after it: a manifest claiming to start after everything the chain holds,
 * from another deployment or damaged past its checksum, would take every slice). part names
 * a cluster's part in the messages, or is NULL. */
static void prune_chain(MsStorage *storage, MsProgress *progress, const char *part,
                        MsSliceRef *slices, size_t *n, MsOplogPosition cutoff) {
    MsOplogPosition newest = {0, 0};
    for (size_t i = 0; i < *n; i++)
        if (ms_oplog_position_after(slices[i].end, newest))
            newest = slices[i].end;
    if (!ms_oplog_position_after(newest, cutoff)) {
        log_warning("not removing oplog slices%s%s: the oldest snapshot starts at %" PRIu32
                    ":%" PRIu32 ", at or after the newest slice; a snapshot's manifest does not "
                    "belong to this chain",
                    part ? " of part " : "", part ? part : "", cutoff.t, cutoff.i);
        return;
    }
    size_t k = 0, removed = 0;
    for (size_t i = 0; i < *n; i++) {
        MsSliceRef *s = &slices[i];
        MsError e = MS_ERROR_INIT;
        if (!ms_oplog_position_after(s->end, cutoff) &&
            ms_slice_remove(storage, s->manifest_key, &e) == 0) {
            free(s->manifest_key);
            removed++;
            continue;
        } else if (e.code)
            log_warning("cannot remove the expired oplog slice %s: %s", s->manifest_key,
                        e.message);
        slices[k++] = *s;
    }
    *n = k;
    if (removed == 0)
        return;
    bson_t ev = BSON_INITIALIZER;
    if (part)
        BSON_APPEND_UTF8(&ev, "part", part);
    BSON_APPEND_INT64(&ev, "removed", (int64_t) removed);
    append_position(&ev, "before", cutoff);
    ms_progress_event(progress, "pruned", &ev);
    bson_destroy(&ev);
    log_info("%s%sremoved %zu oplog slice(s) ending at or before %" PRIu32 ":%" PRIu32
             ", the start of the oldest snapshot",
             part ? part : "", part ? ": " : "", removed, cutoff.t, cutoff.i);
}

/* Retention of slices, by the follower (the slice directory's one writer): those that end at
 * or before the oldest point-in-time snapshot's start are needed by no restorable range. The
 * snapshots are those the store holds now, so a snapshot retention removed takes its slices
 * along at the next refresh, and one being restored is kept by the agent (and so its slices). */
static void prune_slices(RangesReporter *rr) {
    MsOplogPosition cutoff;
    if (ms_slices_prune_cutoff(rr->snaps.snaps, rr->snaps.n, &cutoff))
        prune_chain(rr->storage, rr->progress, NULL, rr->slices, &rr->n_slices, cutoff);
}

static void ranges_on_slice(void *userdata, const MsSliceRef *slice) {
    RangesReporter *rr = userdata;
    MsError e = MS_ERROR_INIT;
    if (rr->broken)
        return;
    if (!slice) {
        if (ms_slices_list(rr->storage, rr->prefix, &rr->slices, &rr->n_slices, &e) < 0) {
            log_warning("cannot list the oplog slices (restorable ranges not reported): %s",
                        e.message);
            rr->broken = true;
            return;
        }
        rr->cap_slices = rr->n_slices;
    } else {
        if (rr->n_slices == rr->cap_slices) {
            size_t cap = rr->cap_slices ? rr->cap_slices * 2 : 64;
            MsSliceRef *grown = realloc(rr->slices, cap * sizeof(*grown));
            if (!grown) {
                rr->broken = true;
                return;
            }
            rr->slices = grown;
            rr->cap_slices = cap;
        }
        MsSliceRef ref = *slice;
        if (!(ref.manifest_key = strdup(slice->manifest_key))) {
            rr->broken = true;
            return;
        }
        rr->slices[rr->n_slices++] = ref;
        ms_slices_sort(rr->slices, rr->n_slices);
    }
    bool asked = worker_refresh_requested;
    worker_refresh_requested = 0;
    if ((!slice && !rr->snaps_loaded) || asked ||
        (slice && ++rr->since_refresh >= RANGES_SNAPSHOT_REFRESH)) {
        Snapshots fresh = {0};
        if (load_snapshots(rr->storage, rr->prefix, &fresh, &e) < 0) {
            log_warning("cannot read the snapshots' manifests (restorable ranges not updated): %s",
                        e.message);
            return;
        }
        snapshots_clear(&rr->snaps);
        rr->snaps = fresh;
        rr->since_refresh = 0;
    }
    prune_slices(rr);
    MsPitRange *ranges = NULL;
    size_t n = 0;
    if (ms_pit_ranges(rr->snaps.snaps, rr->snaps.n, rr->slices, rr->n_slices, &ranges, &n) < 0)
        return;
    bson_t ev = BSON_INITIALIZER;
    append_ranges(&ev, "restorable", ranges, n);
    ms_progress_event(rr->progress, "ranges", &ev);
    bson_destroy(&ev);
    free(ranges);
}

/* ---- a sharded cluster: one follower per part ----
 *
 * Every shard's replica set and the config server are followed at once, each into its own
 * chain under <prefix>/oplog/parts/<part> (cluster-pit.h); the restorable ranges reported are
 * the cluster's (every part's chain intersected from each cluster snapshot's point), and each
 * part's slices are pruned by the oldest cluster snapshot's part. One part that fails stops
 * them all (each commits what it read): the agent starts the follower again, as for any. */

typedef struct ClusterFollow ClusterFollow;

typedef struct PartFollow {
    ClusterFollow *cf;
    const char *name;
    char *prefix;
    MsFollowOptions o;
    MsFollowResult res;
    MsError error;
    int r;
    pthread_t thread;
    bool started;
} PartFollow;

struct ClusterFollow {
    const Args *a;
    const MsClusterSource *sources; /* the parts followed */
    size_t n_sources;
    char changed[512]; /* why following stopped: the cluster's shards are others now */
    MsStorage *storage;
    const char *prefix;
    MsProgress *progress;
    pthread_mutex_t lock;
    MsClusterPit pit;
    bool pit_loaded;
    unsigned since_refresh;
    volatile sig_atomic_t stop;
    unsigned finished;
};

static void cluster_prune(ClusterFollow *cf, const char *part) {
    MsOplogPosition cutoff;
    if (!ms_cluster_pit_prune_cutoff(&cf->pit, part, &cutoff))
        return;
    for (size_t i = 0; i < cf->pit.n_chains; i++)
        if (strcmp(cf->pit.chains[i].part, part) == 0)
            prune_chain(cf->storage, cf->progress, part, cf->pit.chains[i].slices,
                        &cf->pit.chains[i].n, cutoff);
}

/* Records the shards of sources (config part excluded) as a change at the config server's
 * newest insert or delete on config.shards, unless the newest record names them already: a
 * cluster snapshot's range then ends before a change to shards it has no part of (cluster-pit.h).
 * A change no longer in the config oplog is put just after the newest record (it came after the
 * shards that record names). Failing, the ranges may include times a restore refuses (it checks
 * the routing itself), so it is a warning. */
static void record_topology(ClusterFollow *cf, const MsClusterSource *sources, size_t n) {
    _cleanup_free_ char **names = calloc(n + 1, sizeof(*names));
    const char *config_uri = NULL;
    size_t k = 0;
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        if (strcmp(sources[i].name, MS_CLUSTER_CONFIG_PART) == 0)
            config_uri = sources[i].uri;
        else
            names[k++] = sources[i].name;
    MsClusterPit known;
    MsError e = MS_ERROR_INIT;
    if (ms_cluster_pit_topology_load(cf->storage, cf->prefix, &known, &e) < 0) {
        log_warning("cannot read the recorded changes of the cluster's shards: %s", e.message);
        return;
    }
    if (!ms_cluster_pit_topology_is(&known, names, k)) {
        MsOplogPosition last = ms_cluster_pit_topology_last(&known), at = {0, 0};
        bool found = false;
        if (config_uri &&
            ms_cluster_shards_changed_at(config_uri, cf->a->password, &found, &at, &e) < 0)
            log_warning("cannot find the change of the cluster's shards in the config server's "
                        "oplog: %s",
                        e.message);
        if (!found || !ms_oplog_position_after(at, last))
            at = (MsOplogPosition){last.t + 1, 0};
        if (ms_cluster_pit_topology_put(cf->storage, cf->prefix, at, names, k, &e) < 0)
            log_warning("%s (restorable ranges may include times after it, which a restore "
                        "refuses)",
                        e.message);
        else
            log_info("the cluster's shards are %zu from %" PRIu32 ":%" PRIu32 " on (recorded)", k,
                     at.t, at.i);
    }
    ms_cluster_pit_clear(&known);
}

/* Whether config.shards still lists the shards followed: a shard added is not followed (the
 * next cluster snapshots' ranges would end at its part), one removed fails its follower. Asked
 * at every refresh; on a change every part stops (committing what it read) and the worker ends
 * saying so, and the agent starts the follower again, on the shards as they are. */
static void check_sources(ClusterFollow *cf) {
    MsClusterSource *now = NULL;
    size_t n = 0;
    MsError e = MS_ERROR_INIT;
    if (ms_cluster_sources(cf->a->uri, cf->a->password, &now, &n, &e) < 0) {
        log_debug("cannot list the cluster's shards now: %s", e.message);
        return;
    }
    for (size_t i = 0; i < n && !cf->changed[0]; i++) {
        bool followed = false;
        for (size_t k = 0; k < cf->n_sources && !followed; k++)
            followed = strcmp(now[i].name, cf->sources[k].name) == 0;
        if (!followed)
            snprintf(cf->changed, sizeof(cf->changed),
                     "the cluster has a shard '%s' that was not there when following began: "
                     "following again with it",
                     now[i].name);
    }
    for (size_t k = 0; k < cf->n_sources && !cf->changed[0]; k++) {
        bool listed = false;
        for (size_t i = 0; i < n && !listed; i++)
            listed = strcmp(now[i].name, cf->sources[k].name) == 0;
        if (!listed)
            snprintf(cf->changed, sizeof(cf->changed),
                     "shard '%s' is no longer in the cluster: following again without it",
                     cf->sources[k].name);
    }
    if (cf->changed[0]) {
        log_warning("%s", cf->changed);
        record_topology(cf, now, n);
        cf->stop = 1;
    }
    ms_cluster_sources_free(now, n);
}

static void cluster_on_slice(void *userdata, const MsSliceRef *slice) {
    PartFollow *pf = userdata;
    ClusterFollow *cf = pf->cf;
    pthread_mutex_lock(&cf->lock);
    MsError e = MS_ERROR_INIT;
    bool asked = worker_refresh_requested;
    worker_refresh_requested = 0;
    if (!cf->pit_loaded || asked || (slice && ++cf->since_refresh >= RANGES_SNAPSHOT_REFRESH)) {
        if (slice)
            check_sources(cf);
        MsClusterPit fresh;
        if (ms_cluster_pit_load(cf->storage, cf->prefix, &fresh, &e) == 0) {
            ms_cluster_pit_clear(&cf->pit);
            cf->pit = fresh;
            cf->pit_loaded = true;
            cf->since_refresh = 0;
        } else
            log_warning("cannot read the cluster snapshots and slices (restorable ranges not "
                        "updated): %s",
                        e.message);
    } else if (slice && ms_cluster_pit_add_slice(&cf->pit, pf->name, slice) < 0)
        cf->pit_loaded = false; /* read again at the next slice */
    if (cf->pit_loaded) {
        if (slice)
            cluster_prune(cf, pf->name);
        MsPitRange *ranges = NULL;
        size_t n = 0;
        if (ms_cluster_pit_ranges(&cf->pit, &ranges, &n) == 0) {
            bson_t ev = BSON_INITIALIZER;
            append_ranges(&ev, "restorable", ranges, n);
            ms_progress_event(cf->progress, "ranges", &ev);
            bson_destroy(&ev);
            free(ranges);
        }
    }
    pthread_mutex_unlock(&cf->lock);
}

static void *part_follow_main(void *userdata) {
    PartFollow *pf = userdata;
    pf->r = ms_follow_run(&pf->o, &pf->res, &pf->error);
    pthread_mutex_lock(&pf->cf->lock);
    if (pf->r < 0)
        pf->cf->stop = 1;
    pf->cf->finished++;
    pthread_mutex_unlock(&pf->cf->lock);
    return NULL;
}

static int cluster_follow(Args *a, MsStorage *storage, MsProgress *p) {
    MsError e = MS_ERROR_INIT;
    MsClusterSource *sources = NULL;
    size_t n = 0;
    int r = ms_cluster_sources(a->uri, a->password, &sources, &n, &e);
    if (r < 0) {
        log_error("follow failed: %s", e.message);
        worker_report_result(p, a, r, &e, NULL);
        return worker_exit_code_for(r);
    }
    ClusterFollow cf = {.a = a, .sources = sources, .n_sources = n, .storage = storage,
                        .prefix = a->prefix, .progress = p};
    pthread_mutex_init(&cf.lock, NULL);
    MsError le = MS_ERROR_INIT;
    /* The shards followed, recorded when the last record names others (a change while no
     * follower ran) or none (the first start). */
    record_topology(&cf, sources, n);
    cf.pit_loaded = ms_cluster_pit_load(storage, a->prefix, &cf.pit, &le) == 0;
    PartFollow *parts = calloc(n, sizeof(*parts));
    if (!parts)
        r = ms_error_oom(&e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        PartFollow *pf = &parts[i];
        pf->cf = &cf;
        pf->name = sources[i].name;
        if (!(pf->prefix = ms_cluster_part_slice_prefix(a->prefix, sources[i].name))) {
            r = ms_error_set(&e, EINVAL, "shard '%s' has a name no store key can hold",
                             sources[i].name);
            break;
        }
        worker_clean_prefix(storage, pf->prefix, true);
        pf->o = follow_options(a, storage, p, sources[i].uri, pf->prefix);
        pf->o.on_slice = cluster_on_slice;
        pf->o.userdata = pf;
        pf->o.cancel = &cf.stop;
        pf->o.cluster_part = true;
        /* A new chain may begin at the newest cluster snapshot's end of this part. */
        for (size_t s = 0; cf.pit_loaded && s < cf.pit.n_snaps; s++)
            for (size_t k = 0; k < cf.pit.snaps[s].n_parts; k++) {
                const MsClusterPitPart *cp = &cf.pit.snaps[s].parts[k];
                if (strcmp(cp->name, pf->name) == 0 &&
                    (!pf->o.has_chain_start_hint ||
                     ms_oplog_position_after(cp->end, pf->o.chain_start_hint))) {
                    pf->o.chain_start_hint = cp->end;
                    pf->o.has_chain_start_hint = true;
                }
            }
    }
    size_t started = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (pthread_create(&parts[i].thread, NULL, part_follow_main, &parts[i]) != 0) {
            r = ms_error_set(&e, EAGAIN, "cannot start the follower of part %s", parts[i].name);
            cf.stop = 1;
            break;
        }
        parts[i].started = true;
        started++;
    }
    if (started)
        log_info("following the oplog of %zu parts of the cluster (every shard and the config "
                 "server) under %s/" MONGOSNAP_SLICE_DIR "/" MS_CLUSTER_PART_SLICES "/",
                 started, a->prefix);
    /* The signal handler sets worker_cancel_requested: passed on to every part. */
    for (;;) {
        pthread_mutex_lock(&cf.lock);
        bool done = cf.finished >= started;
        pthread_mutex_unlock(&cf.lock);
        if (done)
            break;
        if (worker_cancel_requested)
            cf.stop = 1;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MsFollowResult total = {0};
    bson_t fields = BSON_INITIALIZER, arr;
    BSON_APPEND_ARRAY_BEGIN(&fields, "parts", &arr);
    for (size_t i = 0; parts && i < n; i++) {
        PartFollow *pf = &parts[i];
        if (!pf->started)
            continue;
        pthread_join(pf->thread, NULL);
        total.slices += pf->res.slices;
        total.idle_slices += pf->res.idle_slices;
        total.entries += pf->res.entries;
        total.gaps += pf->res.gaps;
        total.repeated += pf->res.repeated;
        char k[16];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        bson_t item;
        BSON_APPEND_DOCUMENT_BEGIN(&arr, kp, &item);
        BSON_APPEND_UTF8(&item, "part", pf->name);
        BSON_APPEND_INT64(&item, "slices", (int64_t) pf->res.slices);
        BSON_APPEND_INT64(&item, "entries", (int64_t) pf->res.entries);
        append_position(&item, "position", pf->res.position);
        bson_append_document_end(&arr, &item);
        /* The first part that failed on its own names the failure. */
        if (r == 0 && pf->r < 0 && !(worker_cancel_requested && pf->r == -ECANCELED)) {
            r = pf->r;
            e = pf->error;
            ms_error_prefix(&e, "part %s: ", pf->name);
        }
    }
    bson_append_array_end(&fields, &arr);
    /* Ended for a change of shards: a failure, so that the agent starts it again at once. */
    if (r == 0 && cf.changed[0])
        r = ms_error_set(&e, EAGAIN, "%s", cf.changed);
    BSON_APPEND_INT64(&fields, "slices", (int64_t) total.slices);
    BSON_APPEND_INT64(&fields, "idle_slices", (int64_t) total.idle_slices);
    BSON_APPEND_INT64(&fields, "entries", (int64_t) total.entries);
    BSON_APPEND_INT64(&fields, "gaps", (int64_t) total.gaps);
    BSON_APPEND_INT64(&fields, "repeated", (int64_t) total.repeated);
    if (r < 0 && worker_cancel_requested)
        log_warning("cluster follower stopped with an error: %s", e.message);
    else if (r < 0)
        log_error("follow failed: %s", e.message);
    else if (!a->json)
        printf("followed the oplog of %zu parts of the cluster: %" PRIu64 " slice(s), %" PRIu64
               " entries, %" PRIu64 " gap(s)\n",
               started, total.slices, total.entries, total.gaps);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    for (size_t i = 0; parts && i < n; i++)
        free(parts[i].prefix);
    free(parts);
    ms_cluster_pit_clear(&cf.pit);
    pthread_mutex_destroy(&cf.lock);
    ms_cluster_sources_free(sources, n);
    return worker_exit_code_for(r);
}

/* Whether the source is a sharded cluster's mongos or config server (then its oplog is every
 * part's): asked once before following. */
static bool source_is_cluster(const Args *a) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    MsError e = MS_ERROR_INIT;
    if (ms_mongo_one_open(a->uri, a->password, &one, &e) < 0)
        return false; /* ms_follow_run says what is wrong */
    return ms_mongo_is_sharded_source(one.client);
}

int worker_run_follow(Args *a, MsProgress *p) {
    if (!a->uri) {
        log_error("follow needs the source: --uri-file FILE, --uri URI or MONGOSNAP_URI");
        return MONGOSNAP_EXIT_USAGE;
    }
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (need_prefix(a) < 0 || worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    if (source_is_cluster(a))
        return cluster_follow(a, storage, p);
    worker_clean_prefix(storage, a->prefix, true);
    RangesReporter rr = {.storage = storage, .prefix = a->prefix, .progress = p};
    MsFollowOptions o = follow_options(a, storage, p, a->uri, a->prefix);
    o.on_slice = ranges_on_slice;
    o.userdata = &rr;
    /* A new chain may begin at the newest snapshot's end (oplog-follow.h); the snapshots read
     * for it are the reporter's first ones too. */
    MsError se = MS_ERROR_INIT;
    rr.snaps_loaded = load_snapshots(storage, a->prefix, &rr.snaps, &se) == 0;
    for (size_t i = 0; i < rr.snaps.n; i++)
        if (rr.snaps.snaps[i].point_in_time &&
            (!o.has_chain_start_hint ||
             ms_oplog_position_after(rr.snaps.snaps[i].end, o.chain_start_hint))) {
            o.chain_start_hint = rr.snaps.snaps[i].end;
            o.has_chain_start_hint = true;
        }
    MsFollowResult res = {0};
    MsError e = MS_ERROR_INIT;
    int r = ms_follow_run(&o, &res, &e);
    ms_slices_free(rr.slices, rr.n_slices);
    snapshots_clear(&rr.snaps);
    /* Stopping is how a follower ends: what it read is committed, so it succeeded. */
    if (r < 0 && worker_cancel_requested)
        log_warning("follower stopped with an error: %s", e.message);
    else if (r < 0)
        log_error("follow failed: %s", e.message);
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_INT64(&fields, "slices", (int64_t) res.slices);
    BSON_APPEND_INT64(&fields, "idle_slices", (int64_t) res.idle_slices);
    BSON_APPEND_INT64(&fields, "entries", (int64_t) res.entries);
    BSON_APPEND_INT64(&fields, "gaps", (int64_t) res.gaps);
    BSON_APPEND_INT64(&fields, "repeated", (int64_t) res.repeated);
    append_position(&fields, "position", res.position);
    if (r == 0 && !a->json)
        printf("followed the oplog: %" PRIu64 " slice(s), %" PRIu64 " entries, %" PRIu64
               " gap(s); the chain ends at %" PRIu32 ":%" PRIu32 "\n",
               res.slices, res.entries, res.gaps, res.position.t, res.position.i);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

static void append_ranges(bson_t *b, const char *key, const MsPitRange *ranges, size_t n) {
    bson_t arr, item;
    BSON_APPEND_ARRAY_BEGIN(b, key, &arr);
    for (size_t i = 0; i < n; i++) {
        char k[24];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&arr, kp, &item);
        append_position(&item, "from", ranges[i].from);
        append_position(&item, "to", ranges[i].to);
        bson_append_document_end(&arr, &item);
    }
    bson_append_array_end(b, &arr);
}

int worker_run_list_slices(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (need_prefix(a) < 0 || worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    MsSliceRef *slices = NULL;
    size_t n = 0, n_ranges = 0;
    Snapshots snaps = {0};
    MsPitRange *ranges = NULL;
    MsClusterPit pit = {0};
    int r = ms_slices_list(storage, a->prefix, &slices, &n, &e);
    if (r == 0)
        r = load_snapshots(storage, a->prefix, &snaps, &e);
    if (r == 0)
        r = ms_cluster_pit_load(storage, a->prefix, &pit, &e);
    /* A cluster policy: its parts' chains, and the cluster's ranges. */
    bool cluster = r == 0 && pit.n_snaps > 0 && snaps.n == 0;
    if (r == 0 && (cluster ? ms_cluster_pit_ranges(&pit, &ranges, &n_ranges)
                           : ms_pit_ranges(snaps.snaps, snaps.n, slices, n, &ranges, &n_ranges)) < 0)
        r = ms_error_oom(&e);
    size_t listed = 0;
    for (size_t c = 0; r == 0 && c < (cluster ? pit.n_chains + 1 : 1); c++) {
        const MsSliceRef *v = c == 0 ? slices : pit.chains[c - 1].slices;
        size_t nv = c == 0 ? n : pit.chains[c - 1].n;
        for (size_t i = 0; i < nv; i++) {
            bson_t f = BSON_INITIALIZER;
            BSON_APPEND_UTF8(&f, "key", v[i].manifest_key);
            append_position(&f, "start", v[i].start);
            append_position(&f, "end", v[i].end);
            BSON_APPEND_BOOL(&f, "idle", v[i].idle);
            if (c > 0)
                BSON_APPEND_UTF8(&f, "part", pit.chains[c - 1].part);
            ms_progress_event(p, MONGOSNAP_PROGRESS_EVENT_SLICE, &f);
            bson_destroy(&f);
            if (!a->json)
                printf("%s%s\n", v[i].manifest_key, v[i].idle ? "  (idle)" : "");
            listed++;
        }
    }
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_INT64(&fields, "slices", (int64_t) listed);
        BSON_APPEND_INT64(&fields, "snapshots", (int64_t) (cluster ? pit.n_snaps : snaps.n));
        append_ranges(&fields, "restorable", ranges, n_ranges);
        if (!a->json) {
            _cleanup_free_ char *what = ms_pit_ranges_describe(ranges, n_ranges);
            printf("%zu slice(s)%s; restorable: %s\n", listed,
                   cluster ? " of the cluster's parts" : "", what ? what : "?");
        }
    } else
        log_error("list-slices failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    free(ranges);
    snapshots_clear(&snaps);
    ms_cluster_pit_clear(&pit);
    ms_slices_free(slices, n);
    return worker_exit_code_for(r);
}

/* The slices of one chain (the policy's, or a cluster part's) read through their checksums,
 * and the chains they form, appended to arr (each with its part when there is one). */
typedef struct ChainCheck {
    size_t slices, damaged, chains, gaps;
    uint64_t entries;
} ChainCheck;

static int verify_slices(MsStorage *storage, Args *a, MsProgress *p, const char *part,
                         const MsSliceRef *slices, size_t n, bson_t *arr, ChainCheck *cc,
                         MsError *e) {
    int r = 0;
    for (size_t i = 0; r == 0 && i < n && !worker_cancel_requested; i++) {
        /* Each slice's own progress is not this task's: a silent reporter for it. */
        MsProgress quiet;
        ms_progress_init(&quiet, -1);
        MsVerifyOptions vo = {.storage = storage,
                              .snapshot_key = slices[i].manifest_key,
                              .key = a->key,
                              .progress = &quiet,
                              .cancel = &worker_cancel_requested};
        MsVerifyResult vr = {0};
        MsError ve = MS_ERROR_INIT;
        int k = ms_verify_run(&vo, &vr, &ve);
        ms_progress_done(&quiet);
        ms_progress_add_items(p, 1, vr.stored_bytes);
        if (k == -ENOKEY || k == -EKEYREJECTED) {
            r = k;
            *e = ve;
            break;
        }
        if (k < 0) {
            cc->damaged++;
            bson_t f = BSON_INITIALIZER;
            BSON_APPEND_UTF8(&f, "key", slices[i].manifest_key);
            BSON_APPEND_UTF8(&f, "message", ve.message);
            ms_progress_event(p, "problem", &f);
            bson_destroy(&f);
            log_error("%s: %s", slices[i].manifest_key, ve.message);
            continue;
        }
        cc->entries += vr.oplog_entries;
    }
    if (r == 0 && worker_cancel_requested)
        r = ms_error_set(e, ECANCELED, "stopped by a signal");
    /* The chains: from the first slice's start, as far as they reach; the next chain begins at
     * the first slice starting after that. */
    MsOplogPosition cur = {0, 0};
    size_t chains = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (chains > 0 && !ms_oplog_position_after(slices[i].start, cur))
            continue;
        MsOplogPosition reach;
        if (ms_slices_reach(slices, n, slices[i].start, MS_OPLOG_POSITION_MAX, &reach, NULL,
                            NULL) < 0) {
            r = ms_error_oom(e);
            break;
        }
        char k[24];
        const char *kp;
        bson_uint32_to_string((uint32_t) cc->chains, &kp, k, sizeof(k));
        bson_t item;
        BSON_APPEND_DOCUMENT_BEGIN(arr, kp, &item);
        if (part)
            BSON_APPEND_UTF8(&item, "part", part);
        append_position(&item, "from", slices[i].start);
        append_position(&item, "to", reach);
        bson_append_document_end(arr, &item);
        if (chains > 0)
            log_warning("gap in the chain of oplog slices%s%s: nothing holds the entries after "
                        "%" PRIu32 ":%" PRIu32 " up to %" PRIu32 ":%" PRIu32,
                        part ? " of part " : "", part ? part : "", cur.t, cur.i,
                        slices[i].start.t, slices[i].start.i);
        chains++;
        cc->chains++;
        cur = reach;
    }
    cc->gaps += chains ? chains - 1 : 0;
    cc->slices += n;
    return r;
}

/* Every slice read through its checksums, and the chains they form: where each begins and
 * ends, and the gaps between them. A cluster policy's chains are its parts'. */
int worker_run_verify_chain(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (need_prefix(a) < 0 || worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    MsSliceRef *slices = NULL;
    size_t n = 0;
    MsClusterPit pit = {0};
    ChainCheck cc = {0};
    bson_t fields = BSON_INITIALIZER, arr;
    BSON_APPEND_ARRAY_BEGIN(&fields, "chains", &arr);
    int r = ms_slices_list(storage, a->prefix, &slices, &n, &e);
    if (r == 0)
        r = verify_slices(storage, a, p, NULL, slices, n, &arr, &cc, &e);
    if (r == 0)
        r = ms_cluster_pit_load(storage, a->prefix, &pit, &e);
    for (size_t i = 0; r == 0 && i < pit.n_chains; i++)
        r = verify_slices(storage, a, p, pit.chains[i].part, pit.chains[i].slices,
                          pit.chains[i].n, &arr, &cc, &e);
    bson_append_array_end(&fields, &arr);
    BSON_APPEND_INT64(&fields, "slices", (int64_t) cc.slices);
    BSON_APPEND_INT64(&fields, "damaged", (int64_t) cc.damaged);
    BSON_APPEND_INT64(&fields, "gaps", (int64_t) cc.gaps);
    BSON_APPEND_INT64(&fields, "entries", (int64_t) cc.entries);
    if (r == 0 && cc.damaged > 0)
        r = ms_error_set(&e, EBADMSG,
                         "%zu of %zu oplog slice(s) are damaged (named above); restores to times "
                         "they hold will be refused",
                         cc.damaged, cc.slices);
    if (r == 0 && !a->json)
        printf("verified %zu slice(s), %" PRIu64 " entries; %zu chain(s), %zu gap(s)\n",
               cc.slices, cc.entries, cc.chains, cc.gaps);
    else if (r < 0)
        log_error("verify-chain failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    ms_cluster_pit_clear(&pit);
    ms_slices_free(slices, n);
    return worker_exit_code_for(r);
}

/* restore --time of a cluster policy: the newest cluster snapshot (not newer than --snapshot)
 * from which every part's chain reaches the time, each part with its own slices. */
static int restore_cluster_time(Args *a, const MsClusterPit *pit, MsProgress *p) {
    /* Every shard into its counterpart: what applies to one part is refused (checked before
     * anything is read; the agent refuses it too). */
    if (a->filter.n_include || a->filter.n_exclude || a->n_rename_from || a->no_indexes ||
        a->part) {
        log_error("policy %s takes cluster snapshots: a restore to a time puts every shard and "
                  "the config data at that time; namespace filters, renames, --no-indexes and "
                  "--part apply to one part restored alone to its cluster snapshot's point",
                  a->prefix);
        return MONGOSNAP_EXIT_USAGE;
    }
    MsError e = MS_ERROR_INIT;
    MsClusterPitPlan plan;
    int r = ms_cluster_pit_plan(pit, a->time, a->snapshot, &plan, &e);
    if (r < 0) {
        log_error("restore --time: %s", e.message);
        worker_report_result(p, a, r, &e, NULL);
        return worker_exit_code_for(r);
    }
    bson_t ev = BSON_INITIALIZER, parts;
    BSON_APPEND_UTF8(&ev, "snapshot", plan.snapshot->name);
    BSON_APPEND_UTF8(&ev, "snapshot_key", plan.snapshot->key);
    append_position(&ev, "time", a->time);
    BSON_APPEND_DOCUMENT_BEGIN(&ev, "parts", &parts);
    size_t total = 0;
    for (size_t i = 0; i < plan.n_parts; i++) {
        bson_t arr;
        BSON_APPEND_ARRAY_BEGIN(&parts, plan.parts[i].name, &arr);
        for (size_t k = 0; k < plan.parts[i].n_slices; k++) {
            char idx[24];
            const char *kp;
            bson_uint32_to_string((uint32_t) k, &kp, idx, sizeof(idx));
            BSON_APPEND_UTF8(&arr, kp, plan.parts[i].slice_keys[k]);
        }
        bson_append_array_end(&parts, &arr);
        total += plan.parts[i].n_slices;
    }
    bson_append_document_end(&ev, &parts);
    /* Every part's slices in one list too, as a plan of one replica set gives them. */
    bson_t all;
    BSON_APPEND_ARRAY_BEGIN(&ev, "slices", &all);
    for (size_t i = 0, k = 0; i < plan.n_parts; i++)
        for (size_t j = 0; j < plan.parts[i].n_slices; j++, k++) {
            char idx[24];
            const char *kp;
            bson_uint32_to_string((uint32_t) k, &kp, idx, sizeof(idx));
            BSON_APPEND_UTF8(&all, kp, plan.parts[i].slice_keys[j]);
        }
    bson_append_array_end(&ev, &all);
    ms_progress_event(p, "plan", &ev);
    bson_destroy(&ev);
    log_info("restoring the cluster to %" PRIu32 ":%" PRIu32 ": cluster snapshot %s, then %zu "
             "oplog slice(s) of its %zu parts",
             a->time.t, a->time.i, plan.snapshot->name, total, plan.n_parts);
    const char *given = a->snapshot;
    a->snapshot = plan.snapshot->key;
    a->has_until = true;
    a->until = a->time;
    a->cluster_plan = &plan;
    int ret = worker_run_cluster_restore(a, p);
    a->cluster_plan = NULL;
    a->snapshot = given;
    ms_cluster_pit_plan_clear(&plan);
    return ret;
}

int worker_run_restore_time(Args *a, MsProgress *p) {
    if (a->archive || a->has_until) {
        log_error("restore --time reads the policy's snapshots and oplog slices from the store: "
                  "leave out --archive and --until");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->no_oplog) {
        log_error("restore --time replays the oplog: leave out --no-oplog");
        return MONGOSNAP_EXIT_USAGE;
    }
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (need_prefix(a) < 0 || worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    /* A cluster policy's prefix holds cluster snapshots and its parts' chains. */
    MsClusterPit pit = {0};
    int c = ms_cluster_pit_load(storage, a->prefix, &pit, &e);
    if (c == 0 && pit.n_snaps > 0 &&
        (!a->snapshot || worker_has_suffix(a->snapshot, MS_CLUSTER_MANIFEST_SUFFIX) ||
         !strchr(a->snapshot, '/'))) {
        int ret = restore_cluster_time(a, &pit, p);
        ms_cluster_pit_clear(&pit);
        return ret;
    }
    ms_cluster_pit_clear(&pit);
    if (c < 0) {
        log_error("restore --time: %s", e.message);
        worker_report_result(p, a, c, &e, NULL);
        return worker_exit_code_for(c);
    }
    MsSliceRef *slices = NULL;
    size_t n = 0;
    Snapshots snaps = {0};
    MsPitPlan plan = {0};
    int r = ms_slices_list(storage, a->prefix, &slices, &n, &e);
    if (r == 0)
        r = load_snapshots(storage, a->prefix, &snaps, &e);
    /* --snapshot: that one or an older one (the agent names the newest it knows finished
     * by the time; its oplog may end after the time all the same); else any. The plan takes
     * the newest that reaches the time. */
    if (r == 0 && a->snapshot) {
        const MsPitSnapshot *chosen = NULL;
        for (size_t i = 0; i < snaps.n && !chosen; i++)
            if (strcmp(snaps.snaps[i].key, a->snapshot) == 0 ||
                strcmp(snaps.snaps[i].id, a->snapshot) == 0)
                chosen = &snaps.snaps[i];
        if (!chosen)
            r = ms_error_set(&e, ENOENT, "no snapshot '%s' under prefix '%s' in %s", a->snapshot,
                             a->prefix, ms_storage_describe(storage));
        MsOplogPosition limit = chosen ? chosen->end : (MsOplogPosition){0, 0};
        size_t k = 0;
        for (size_t i = 0; i < snaps.n; i++)
            if (!ms_oplog_position_after(snaps.snaps[i].end, limit))
                snaps.snaps[k++] = snaps.snaps[i];
        snaps.n = k;
    }
    if (r == 0)
        r = ms_pit_plan(snaps.snaps, snaps.n, slices, n, a->time, &plan, &e);
    if (r < 0) {
        log_error("restore --time: %s", e.message);
        worker_report_result(p, a, r, &e, NULL);
        snapshots_clear(&snaps);
        ms_slices_free(slices, n);
        return worker_exit_code_for(r);
    }
    const MsPitSnapshot *s = &snaps.snaps[plan.snapshot];
    bson_t ev = BSON_INITIALIZER, arr;
    BSON_APPEND_UTF8(&ev, "snapshot", s->id);
    BSON_APPEND_UTF8(&ev, "snapshot_key", s->key);
    append_position(&ev, "time", a->time);
    BSON_APPEND_ARRAY_BEGIN(&ev, "slices", &arr);
    for (size_t i = 0; i < plan.n_slices && r == 0; i++) {
        char k[24];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kp, slices[plan.slices[i]].manifest_key);
        if (ms_strv_push(&a->slice_keys, slices[plan.slices[i]].manifest_key) < 0)
            r = -ENOMEM;
    }
    bson_append_array_end(&ev, &arr);
    ms_progress_event(p, "plan", &ev);
    bson_destroy(&ev);
    log_info("restoring to %" PRIu32 ":%" PRIu32 ": snapshot %s, then %zu oplog slice(s)",
             a->time.t, a->time.i, s->id, plan.n_slices);
    a->n_slices = plan.n_slices;
    _cleanup_free_ char *snapshot_key = strdup(s->key);
    int ret = MONGOSNAP_EXIT_FAILURE;
    if (r == 0 && snapshot_key) {
        a->snapshot = snapshot_key;
        a->has_until = true;
        a->until = a->time;
        ret = worker_run_restore(a, p);
        a->snapshot = NULL;
    } else
        log_error("out of memory");
    a->slice_keys = ms_strv_free(a->slice_keys);
    a->n_slices = 0;
    ms_pit_plan_clear(&plan);
    snapshots_clear(&snaps);
    ms_slices_free(slices, n);
    return ret;
}

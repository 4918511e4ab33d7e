/* Point-in-time recovery of a sharded cluster: see cluster-pit.h. */
#include "cluster-pit.h"

#include <bson/bson.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/strv.h"
#include "mongosnap/mongosnap.h"

#define PART_MANIFEST_MAX (16u * 1024u * 1024u)

char *ms_cluster_part_slice_prefix(const char *prefix, const char *part) {
    if (!prefix || !*prefix || !part || !*part || part[0] == '.' || strchr(part, '/'))
        return NULL;
    char *p = NULL;
    return asprintf(&p, "%s/" MONGOSNAP_SLICE_DIR "/" MS_CLUSTER_PART_SLICES "/%s", prefix, part) < 0
               ? NULL
               : p;
}

static void snapshot_clear(MsClusterPitSnapshot *s) {
    for (size_t i = 0; i < s->n_parts; i++) {
        free(s->parts[i].name);
    }
    free(s->parts);
    free(s->key);
    free(s->name);
}

void ms_cluster_pit_clear(MsClusterPit *pit) {
    for (size_t i = 0; i < pit->n_snaps; i++)
        snapshot_clear(&pit->snaps[i]);
    free(pit->snaps);
    for (size_t i = 0; i < pit->n_chains; i++) {
        ms_slices_free(pit->chains[i].slices, pit->chains[i].n);
        free(pit->chains[i].part);
    }
    free(pit->chains);
    for (size_t i = 0; i < pit->n_topology; i++)
        ms_strv_free(pit->topology[i].shards);
    free(pit->topology);
    *pit = (MsClusterPit){0};
}

static MsClusterPitChain *chain_of(const MsClusterPit *pit, const char *part) {
    for (size_t i = 0; i < pit->n_chains; i++)
        if (strcmp(pit->chains[i].part, part) == 0)
            return &pit->chains[i];
    return NULL;
}

static int position_cmp(MsOplogPosition a, MsOplogPosition b) {
    return ms_oplog_position_after(a, b) ? 1 : ms_oplog_position_after(b, a) ? -1 : 0;
}

static int compare_snaps(const void *a, const void *b) {
    const MsClusterPitSnapshot *x = a, *y = b;
    int c = position_cmp(x->point, y->point);
    return c ? c : strcmp(x->key, y->key);
}

/* One cluster snapshot with its parts' oplog ends: 1 taken, 0 left out (damaged), <0 error. */
static int load_one(MsStorage *st, const char *key, MsClusterPitSnapshot *ret, MsError *e) {
    MsClusterManifest cm;
    MsError me = MS_ERROR_INIT;
    int r = ms_cluster_manifest_read(st, key, &cm, &me);
    if (r == -ENOENT)
        return 0; /* removed since the listing */
    if (r == -EBADMSG) {
        log_warning("%s: %s (left out of point-in-time planning)", key, me.message);
        return 0;
    }
    if (r < 0) {
        *e = me;
        return r;
    }
    MsClusterPitSnapshot s = {.point = cm.consistency_point};
    s.key = strdup(key);
    s.name = strdup(cm.name ? cm.name : key);
    s.parts = calloc(cm.n_parts ? cm.n_parts : 1, sizeof(*s.parts));
    if (!s.key || !s.name || !s.parts)
        r = ms_error_oom(e);
    bool damaged = false;
    for (size_t i = 0; r == 0 && !damaged && i < cm.n_parts; i++) {
        _cleanup_free_ char *json = NULL;
        size_t len = 0;
        MsManifest m = {0};
        MsError pe = MS_ERROR_INIT;
        int g = ms_storage_get(st, cm.parts[i].manifest_key, PART_MANIFEST_MAX, &json, &len, &pe);
        if (g == -ENOENT || (g == 0 && ms_manifest_parse(json, len, &m, &pe) < 0)) {
            log_warning("%s: part %s: %s (left out of point-in-time planning)", key,
                        cm.parts[i].shard, g == -ENOENT ? "its manifest is missing" : pe.message);
            damaged = true;
            break;
        }
        if (g < 0) {
            *e = pe;
            r = g;
            break;
        }
        MsClusterPitPart *p = &s.parts[s.n_parts++];
        p->start = m.oplog_start;
        p->end = m.oplog_end;
        p->name = strdup(cm.parts[i].shard);
        if (!p->name)
            r = ms_error_oom(e);
        /* Its oplog end may be before the point: a part whose server was idle holds every
         * entry up to the point with its newest one earlier (cluster.c's capture rule). */
        if (!m.point_in_time) {
            log_warning("%s: part %s has no oplog (left out of point-in-time planning)", key,
                        cm.parts[i].shard);
            damaged = true;
        }
        ms_manifest_clear(&m);
    }
    ms_cluster_manifest_clear(&cm);
    if (r < 0 || damaged) {
        snapshot_clear(&s);
        return r < 0 ? r : 0;
    }
    *ret = s;
    return 1;
}

/* ---- changes of the cluster's shards (cluster-pit.h) ---- */

#define TOPOLOGY_MAX (1024u * 1024u)

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool same_names(char *const *sorted, char *const *names, size_t n) {
    if (ms_strv_length(sorted) != n)
        return false;
    _cleanup_free_ char **copy = n ? malloc(n * sizeof(*copy)) : NULL;
    if (n && !copy)
        return false;
    if (n)
        memcpy(copy, names, n * sizeof(*copy));
    if (n > 1)
        qsort(copy, n, sizeof(*copy), compare_names);
    for (size_t i = 0; i < n; i++)
        if (strcmp(sorted[i], copy[i]) != 0)
            return false;
    return true;
}

static char *topology_dir(const char *prefix) {
    char *d = NULL;
    return asprintf(&d, "%s/" MONGOSNAP_SLICE_DIR "/" MS_CLUSTER_PART_SLICES "/", prefix) < 0 ? NULL
                                                                                              : d;
}

int ms_cluster_pit_topology_put(MsStorage *st, const char *prefix, MsOplogPosition at,
                                char *const *names, size_t n, MsError *e) {
    _cleanup_free_ char *dir = topology_dir(prefix), *key = NULL;
    if (!dir || asprintf(&key, "%s%010" PRIu32 ".%010" PRIu32 MS_CLUSTER_TOPOLOGY_SUFFIX, dir,
                         at.t, at.i) < 0)
        return ms_error_oom(e);
    _cleanup_free_ char **sorted = malloc((n ? n : 1) * sizeof(*sorted));
    if (!sorted)
        return ms_error_oom(e);
    if (n)
        memcpy(sorted, names, n * sizeof(*sorted));
    if (n > 1)
        qsort(sorted, n, sizeof(*sorted), compare_names);
    bson_t doc = BSON_INITIALIZER, pos, arr;
    BSON_APPEND_UTF8(&doc, "format", "mongosnap-shards");
    BSON_APPEND_DOCUMENT_BEGIN(&doc, "at", &pos);
    BSON_APPEND_INT64(&pos, "t", at.t);
    BSON_APPEND_INT64(&pos, "i", at.i);
    bson_append_document_end(&doc, &pos);
    BSON_APPEND_ARRAY_BEGIN(&doc, "shards", &arr);
    for (size_t i = 0; i < n; i++) {
        char k[16];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kp, sorted[i]);
    }
    bson_append_array_end(&doc, &arr);
    size_t len = 0;
    char *json = bson_as_relaxed_extended_json(&doc, &len);
    bson_destroy(&doc);
    int r = json ? ms_storage_put(st, key, json, len, e) : ms_error_oom(e);
    bson_free(json);
    if (r < 0)
        ms_error_prefix(e, "cannot record the change of the cluster's shards (%s): ", key);
    return r;
}

static bool read_position_field(const bson_t *doc, const char *path, uint32_t *ret) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) ||
        !BSON_ITER_HOLDS_NUMBER(&it))
        return false;
    int64_t v = bson_iter_as_int64(&it);
    if (v < 0 || v > UINT32_MAX)
        return false;
    *ret = (uint32_t) v;
    return true;
}

/* One recorded change: 1 taken, 0 damaged (left out with a warning), <0 store error. */
static int topology_read(MsStorage *st, const char *key, MsClusterPitTopology *ret, MsError *e) {
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    MsError ge = MS_ERROR_INIT;
    int r = ms_storage_get(st, key, TOPOLOGY_MAX, &json, &len, &ge);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        *e = ge;
        return r;
    }
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *) json, (ssize_t) len, &berr);
    MsClusterPitTopology t = {0};
    bson_iter_t it, arr;
    bool ok = doc && read_position_field(doc, "at.t", &t.at.t) &&
              read_position_field(doc, "at.i", &t.at.i) && bson_iter_init_find(&it, doc, "shards") &&
              BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr);
    while (ok && bson_iter_next(&arr))
        ok = BSON_ITER_HOLDS_UTF8(&arr) && ms_strv_push(&t.shards, bson_iter_utf8(&arr, NULL)) == 0;
    if (doc)
        bson_destroy(doc);
    size_t n = ms_strv_length(t.shards);
    if (ok && n > 1)
        qsort(t.shards, n, sizeof(*t.shards), compare_names);
    if (!ok) {
        ms_strv_free(t.shards);
        log_warning("%s: not a record of the cluster's shards (left out of point-in-time "
                    "planning)",
                    key);
        return 0;
    }
    *ret = t;
    return 1;
}

static int compare_topology(const void *a, const void *b) {
    const MsClusterPitTopology *x = a, *y = b;
    return position_cmp(x->at, y->at);
}

static int topology_load(MsStorage *st, const char *prefix, MsClusterPit *pit, MsError *e) {
    _cleanup_free_ char *dir = topology_dir(prefix);
    if (!dir)
        return ms_error_oom(e);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list_children(st, dir, MS_CLUSTER_TOPOLOGY_SUFFIX, &objs, &n, e);
    if (r == -ENOENT) {
        ms_error_clear(e);
        return 0;
    }
    if (r < 0)
        return r;
    pit->topology = calloc(n ? n : 1, sizeof(*pit->topology));
    if (!pit->topology)
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        int k = topology_read(st, objs[i].key, &pit->topology[pit->n_topology], e);
        if (k < 0)
            r = k;
        else
            pit->n_topology += (size_t) k;
    }
    ms_storage_objects_free(objs, n);
    if (r == 0 && pit->n_topology > 1)
        qsort(pit->topology, pit->n_topology, sizeof(*pit->topology), compare_topology);
    return r;
}

int ms_cluster_pit_topology_load(MsStorage *st, const char *prefix, MsClusterPit *ret, MsError *e) {
    *ret = (MsClusterPit){0};
    int r = topology_load(st, prefix, ret, e);
    if (r < 0)
        ms_cluster_pit_clear(ret);
    return r;
}

bool ms_cluster_pit_topology_is(const MsClusterPit *pit, char *const *names, size_t n) {
    return pit->n_topology > 0 && same_names(pit->topology[pit->n_topology - 1].shards, names, n);
}

MsOplogPosition ms_cluster_pit_topology_last(const MsClusterPit *pit) {
    return pit->n_topology ? pit->topology[pit->n_topology - 1].at : (MsOplogPosition){0, 0};
}

MsOplogPosition ms_cluster_pit_topology_cap(const MsClusterPit *pit, const MsClusterPitSnapshot *s) {
    /* The snapshot's shards: its parts but the config data's. */
    _cleanup_free_ char **shards = calloc(s->n_parts + 1, sizeof(*shards));
    size_t n = 0;
    if (!shards)
        return (MsOplogPosition){0, 0}; /* out of memory: no range rather than a wrong one */
    for (size_t j = 0; j < s->n_parts; j++)
        if (strcmp(s->parts[j].name, MS_CLUSTER_CONFIG_PART) != 0)
            shards[n++] = s->parts[j].name;
    /* Positions of the config server and of the shards do not compare within one second (each
     * server counts its own): a change in the point's second counts as after it, and a range
     * ends at the last second before the change's. */
    size_t first = 0;
    for (size_t k = 0; k < pit->n_topology; k++)
        if (pit->topology[k].at.t < s->point.t)
            first = k;
    for (size_t k = first; k < pit->n_topology; k++) {
        const MsClusterPitTopology *t = &pit->topology[k];
        if (same_names(t->shards, shards, n))
            continue;
        if (t->at.t < s->point.t || t->at.t == 0)
            return (MsOplogPosition){0, 0}; /* other shards at its point */
        return (MsOplogPosition){t->at.t - 1, UINT32_MAX};
    }
    return MS_OPLOG_POSITION_MAX;
}

int ms_cluster_pit_load(MsStorage *st, const char *prefix, MsClusterPit *ret, MsError *e) {
    *ret = (MsClusterPit){0};
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/", prefix) < 0)
        return ms_error_oom(e);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list_children(st, dir, MS_CLUSTER_MANIFEST_SUFFIX, &objs, &n, e);
    if (r < 0)
        return r;
    MsClusterPit pit = {0};
    pit.snaps = calloc(n ? n : 1, sizeof(*pit.snaps));
    if (!pit.snaps)
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        int k = load_one(st, objs[i].key, &pit.snaps[pit.n_snaps], e);
        if (k < 0)
            r = k;
        else
            pit.n_snaps += (size_t) k;
    }
    ms_storage_objects_free(objs, n);
    if (pit.n_snaps > 1)
        qsort(pit.snaps, pit.n_snaps, sizeof(*pit.snaps), compare_snaps);
    /* Every part name's chain. */
    for (size_t i = 0; r == 0 && i < pit.n_snaps; i++)
        for (size_t j = 0; r == 0 && j < pit.snaps[i].n_parts; j++) {
            const char *part = pit.snaps[i].parts[j].name;
            if (chain_of(&pit, part))
                continue;
            _cleanup_free_ char *pp = ms_cluster_part_slice_prefix(prefix, part);
            if (!pp) {
                /* No follower writes under such a name: the part has no chain (a damaged
                 * manifest; the cluster manifest's own checks refuse it at restore). */
                log_warning("%s names a part '%s' that is no plain name: it has no chain",
                            pit.snaps[i].key, part);
                continue;
            }
            MsClusterPitChain *grown = realloc(pit.chains, (pit.n_chains + 1) * sizeof(*grown));
            if (!grown) {
                r = ms_error_oom(e);
                break;
            }
            pit.chains = grown;
            MsClusterPitChain *c = &pit.chains[pit.n_chains];
            *c = (MsClusterPitChain){.part = strdup(part)};
            if (!c->part) {
                r = ms_error_oom(e);
                break;
            }
            pit.n_chains++;
            r = ms_slices_list(st, pp, &c->slices, &c->n, e);
        }
    if (r == 0)
        r = topology_load(st, prefix, &pit, e);
    if (r < 0) {
        ms_cluster_pit_clear(&pit);
        return r;
    }
    *ret = pit;
    return 0;
}

int ms_cluster_pit_add_slice(MsClusterPit *pit, const char *part, const MsSliceRef *slice) {
    MsClusterPitChain *c = chain_of(pit, part);
    if (!c) {
        MsClusterPitChain *grown = realloc(pit->chains, (pit->n_chains + 1) * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        pit->chains = grown;
        c = &pit->chains[pit->n_chains];
        *c = (MsClusterPitChain){.part = strdup(part)};
        if (!c->part)
            return -ENOMEM;
        pit->n_chains++;
    }
    MsSliceRef *grown = realloc(c->slices, (c->n + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    c->slices = grown;
    c->slices[c->n] = *slice;
    if (!(c->slices[c->n].manifest_key = strdup(slice->manifest_key)))
        return -ENOMEM;
    c->n++;
    ms_slices_sort(c->slices, c->n);
    return 0;
}

/* How far part p of a snapshot reaches, stopping at until: its own oplog end, then its chain. */
static int part_reach(const MsClusterPit *pit, const MsClusterPitPart *p, MsOplogPosition until,
                      MsOplogPosition *ret, size_t **ret_path, size_t *ret_n_path) {
    const MsClusterPitChain *c = chain_of(pit, p->name);
    if (ret_path) {
        *ret_path = NULL;
        *ret_n_path = 0;
    }
    if (!ms_oplog_position_after(until, p->end) || !c) {
        *ret = p->end;
        return 0;
    }
    return ms_slices_reach(c->slices, c->n, p->end, until, ret, ret_path, ret_n_path);
}

int ms_cluster_pit_ranges(const MsClusterPit *pit, MsPitRange **ret, size_t *ret_n) {
    MsPitRange *r = calloc(pit->n_snaps ? pit->n_snaps : 1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < pit->n_snaps; i++) {
        const MsClusterPitSnapshot *s = &pit->snaps[i];
        MsOplogPosition to = MS_OPLOG_POSITION_MAX;
        for (size_t j = 0; j < s->n_parts; j++) {
            MsOplogPosition reach;
            int k = part_reach(pit, &s->parts[j], MS_OPLOG_POSITION_MAX, &reach, NULL, NULL);
            if (k < 0) {
                free(r);
                return k;
            }
            if (ms_oplog_position_after(to, reach))
                to = reach;
        }
        MsOplogPosition cap = ms_cluster_pit_topology_cap(pit, s);
        if (ms_oplog_position_after(to, cap))
            to = cap;
        if (s->n_parts > 0 && !ms_oplog_position_after(s->point, to))
            r[n++] = (MsPitRange){s->point, to};
    }
    *ret = r;
    *ret_n = ms_pit_ranges_merge(r, n);
    return 0;
}

void ms_cluster_pit_plan_clear(MsClusterPitPlan *plan) {
    for (size_t i = 0; i < plan->n_parts; i++)
        ms_strv_free(plan->parts[i].slice_keys);
    free(plan->parts);
    *plan = (MsClusterPitPlan){0};
}

const MsClusterPitPlanPart *ms_cluster_pit_plan_part(const MsClusterPitPlan *plan,
                                                     const char *part) {
    for (size_t i = 0; i < plan->n_parts; i++)
        if (strcmp(plan->parts[i].name, part) == 0)
            return &plan->parts[i];
    return NULL;
}

/* The plan from snapshot s, or 0 with nothing set when one part does not reach time. */
static int plan_from(const MsClusterPit *pit, const MsClusterPitSnapshot *s, MsOplogPosition time,
                     MsClusterPitPlan *ret) {
    /* A time after a change to other shards: the new shard's data is in no part. */
    if (ms_oplog_position_after(time, ms_cluster_pit_topology_cap(pit, s)))
        return 0;
    MsClusterPitPlan plan = {.snapshot = s, .time = time};
    plan.parts = calloc(s->n_parts ? s->n_parts : 1, sizeof(*plan.parts));
    if (!plan.parts)
        return -ENOMEM;
    int r = 1;
    for (size_t j = 0; r > 0 && j < s->n_parts; j++) {
        const MsClusterPitPart *p = &s->parts[j];
        MsClusterPitPlanPart *pp = &plan.parts[plan.n_parts++];
        pp->name = p->name;
        MsOplogPosition reach;
        size_t *path = NULL, n_path = 0;
        int k = part_reach(pit, p, time, &reach, &path, &n_path);
        if (k < 0)
            r = k;
        else if (ms_oplog_position_after(time, reach))
            r = 0;
        const MsClusterPitChain *c = chain_of(pit, p->name);
        for (size_t i = 0; r > 0 && i < n_path; i++) {
            if (ms_strv_push(&pp->slice_keys, c->slices[path[i]].manifest_key) < 0)
                r = -ENOMEM;
            pp->n_slices++;
        }
        free(path);
    }
    if (r <= 0) {
        ms_cluster_pit_plan_clear(&plan);
        return r;
    }
    *ret = plan;
    return 1;
}

int ms_cluster_pit_plan(const MsClusterPit *pit, MsOplogPosition time, const char *not_after,
                        MsClusterPitPlan *ret, MsError *e) {
    *ret = (MsClusterPitPlan){0};
    size_t last = pit->n_snaps;
    if (not_after) {
        size_t found = SIZE_MAX;
        for (size_t i = 0; i < pit->n_snaps; i++)
            if (strcmp(pit->snaps[i].key, not_after) == 0 ||
                strcmp(pit->snaps[i].name, not_after) == 0)
                found = i;
        if (found == SIZE_MAX)
            return ms_error_set(e, ENOENT, "no cluster snapshot '%s' among those restorable to a "
                                           "time",
                                not_after);
        last = found + 1;
    }
    for (size_t i = last; i-- > 0;) {
        const MsClusterPitSnapshot *s = &pit->snaps[i];
        if (ms_oplog_position_after(s->point, time))
            continue;
        int k = plan_from(pit, s, time, ret);
        if (k < 0)
            return ms_error_set(e, -k, "out of memory planning the restore");
        if (k > 0)
            return 0;
    }
    MsPitRange *ranges = NULL;
    size_t n = 0;
    if (ms_cluster_pit_ranges(pit, &ranges, &n) < 0)
        return ms_error_oom(e);
    _cleanup_free_ char *described = ms_pit_ranges_describe(ranges, n);
    free(ranges);
    return ms_error_set(e, ERANGE,
                        "no cluster snapshot and oplog slices of every shard and the config "
                        "server reach %" PRIu32 ":%" PRIu32 "; restorable: %s",
                        time.t, time.i, described ? described : "?");
}

bool ms_cluster_pit_prune_cutoff(const MsClusterPit *pit, const char *part, MsOplogPosition *ret) {
    bool found = false;
    for (size_t i = 0; i < pit->n_snaps; i++)
        for (size_t j = 0; j < pit->snaps[i].n_parts; j++) {
            const MsClusterPitPart *p = &pit->snaps[i].parts[j];
            if (strcmp(p->name, part) != 0)
                continue;
            if (!found || ms_oplog_position_after(*ret, p->start))
                *ret = p->start;
            found = true;
        }
    return found;
}

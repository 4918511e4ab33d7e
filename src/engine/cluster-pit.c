/* Point-in-time recovery of a sharded cluster: see cluster-pit.h. */
#include "cluster-pit.h"

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

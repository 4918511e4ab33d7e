/* Resync: rebuild the record of snapshots from the stores alone. Every store the loaded policies
 * use is read by `mongosnap-worker scan` (its manifests), one store at a time, off the event
 * loop; then the records are reconciled with what the stores hold:
 *   - a complete snapshot no record knows is added as this node's (so that its retention manages
 *     it, and, with several nodes, every node lists it);
 *   - this node's record of a complete snapshot that says failed, interrupted or stopped is
 *     corrected to completed (the worker had stored it when the agent lost track);
 *   - this node's completed record whose manifest is gone from a store that was read is marked
 *     deleted ("not in the store");
 *   - other nodes' records are theirs to correct; manifests that cannot be read and archives
 *     missing or of the wrong size are reported, never acted on;
 *   - an archive without a manifest (a worker stopped between its two commits) is removed once
 *     no task can still commit it: its task ended (any final state, any node), or no agent
 *     knows of it and it is older than ORPHAN_GRACE_USEC (a worker run by hand, or an agent
 *     that lost its catalog); until then it is reported. Nothing restorable is ever touched. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-cluster.h"
#include "agent/agent-reader.h"
#include "agent/agent-remover.h"
#include "agent/agent-resync.h"
#include "catalog/snapshot-parts.h"
#include "common/log.h"
#include "eventlog/eventlog.h"
#include "mongosnap/mongosnap.h"

/* Seqs are given one at a time: no agent gets anywhere near this. */
#define RESYNC_SEQ_MAX (UINT64_C(1) << 48)
/* An archive no agent knows of is left this long for whoever writes it to add its manifest: a
 * worker commits the manifest right after the archive, so an hour means it is not coming. */
#define ORPHAN_GRACE_USEC (UINT64_C(3600) * UINT64_C(1000000))

typedef struct Orphan {
    char *store, *key, *id, *policy;
    int64_t mtime_usec;
} Orphan;

typedef struct Found {
    MsSnapshotRecord *record; /* NULL once it became a new record of the catalog */
    char *id;
    bool complete; /* archive present with the size the manifest gives */
} Found;

struct Resync {
    Manager *m;
    ManagerResyncMode mode;
    void *token;
    char **stores;
    size_t n_stores, next;
    bool *store_read; /* the scan of stores[i] worked */
    AgentJob job;     /* the scan of stores[next] */
    Found *found;
    size_t n_found;
    Orphan *orphans;
    size_t n_orphans;
    char **problems;
    size_t n_problems;
    ManagerResyncResult result;
};

static void add_problem(Resync *x, const char *fmt, ...) _printf_(2, 3);
static void add_problem(Resync *x, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int k = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    char **v = realloc(x->problems, (x->n_problems + 1) * sizeof(*v));
    if (!v) {
        free(s);
        return;
    }
    x->problems = v;
    v[x->n_problems++] = s;
    log_warning("resync: %s", s);
}

static Resync *resync_free(Resync *x);
DEFINE_TRIVIAL_CLEANUP_FUNC(Resync *, resync_free);

static Resync *resync_free(Resync *x) {
    if (!x)
        return NULL;
    agent_job_reset(&x->job);
    for (size_t i = 0; i < x->n_stores; i++)
        free(x->stores[i]);
    free(x->stores);
    free(x->store_read);
    for (size_t i = 0; i < x->n_found; i++) {
        ms_snapshot_record_free(x->found[i].record);
        free(x->found[i].id);
    }
    free(x->found);
    for (size_t i = 0; i < x->n_orphans; i++) {
        free(x->orphans[i].store);
        free(x->orphans[i].key);
        free(x->orphans[i].id);
        free(x->orphans[i].policy);
    }
    free(x->orphans);
    for (size_t i = 0; i < x->n_problems; i++)
        free(x->problems[i]);
    free(x->problems);
    free(x);
    return NULL;
}

static int dup_field(char **dst, const bson_t *msg, const char *key) {
    const char *v = ms_bson_str(msg, key);
    if (!v || !*v)
        return 0;
    return (*dst = strdup(v)) ? 0 : -ENOMEM;
}

/* A cluster snapshot's parts as the scan read them from its cluster manifest, as the record
 * keeps them (NULL: none, or out of memory; the record is still taken). */
static char *parts_of(const bson_t *msg) {
    bson_iter_t it, sub;
    if (!bson_iter_init_find(&it, msg, "parts") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &sub))
        return NULL;
    bson_t parts = BSON_INITIALIZER;
    uint32_t n = 0;
    while (bson_iter_next(&sub)) {
        const uint8_t *data;
        uint32_t len;
        bson_t doc;
        if (!BSON_ITER_HOLDS_DOCUMENT(&sub))
            continue;
        bson_iter_document(&sub, &len, &data);
        if (bson_init_static(&doc, data, len) && ms_snapshot_parts_append(&parts, n, &doc) == 0)
            n++;
    }
    char *json = ms_snapshot_parts_to_json(&parts);
    char *ret = json ? strdup(json) : NULL;
    bson_free(json);
    bson_destroy(&parts);
    return ret;
}

static void scan_job_message(AgentJob *j, const bson_t *msg) {
    Resync *x = MS_CONTAINER_OF(j, Resync, job);
    const char *event = ms_bson_str(msg, "event");
    if (!event)
        return;
    const char *store = x->stores[x->next];
    if (strcmp(event, "problem") == 0) {
        add_problem(x, "%s: %s: %s", store, ms_bson_str(msg, "key") ?: "?",
                    ms_bson_str(msg, "message") ?: "unreadable");
        return;
    }
    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) == 0)
        return; /* its words are the job core's (agent_job_take_message) */
    if (strcmp(event, "orphan") == 0) {
        const char *key = ms_bson_str(msg, "key"), *id = ms_bson_str(msg, "id");
        if (!key || !*key || !id || !*id)
            return;
        Orphan *v = realloc(x->orphans, (x->n_orphans + 1) * sizeof(*v));
        if (!v)
            return;
        x->orphans = v;
        Orphan o = {.store = strdup(store),
                    .key = strdup(key),
                    .id = strdup(id),
                    .policy = strdup(ms_bson_str(msg, "policy") ?: ""),
                    .mtime_usec = (int64_t) ms_bson_u64(msg, "mtime_usec")};
        if (!o.store || !o.key || !o.id || !o.policy) {
            free(o.store);
            free(o.key);
            free(o.id);
            free(o.policy);
            return;
        }
        x->orphans[x->n_orphans++] = o;
        return;
    }
    if (strcmp(event, "snapshot") != 0)
        return;
    MsSnapshotRecord *r = calloc(1, sizeof(*r));
    Found *v = realloc(x->found, (x->n_found + 1) * sizeof(*v));
    if (!r || !v) {
        free(r);
        return;
    }
    x->found = v;
    if (dup_field(&r->id, msg, "id") < 0 || dup_field(&r->policy, msg, "policy") < 0 ||
        dup_field(&r->node, msg, "node") < 0 || dup_field(&r->archive_key, msg, "archive") < 0 ||
        dup_field(&r->manifest_key, msg, "manifest") < 0 || !(r->store = strdup(store)) || !r->id ||
        !r->policy) {
        if (r->manifest_key && (!r->id || !r->policy))
            add_problem(x, "%s: %s names no snapshot or policy", store, r->manifest_key);
        ms_snapshot_record_free(r);
        return;
    }
    r->state = MS_SNAPSHOT_COMPLETED;
    /* Its place and origin as the agent that took it numbered them; a number beyond what any
     * agent could have given (a hostile or damaged manifest) counts as unknown. */
    r->seq = ms_bson_u64(msg, "seq");
    if (r->seq > RESYNC_SEQ_MAX)
        r->seq = 0;
    MsSnapshotOrigin origin = ms_snapshot_origin_from_string(ms_bson_str(msg, "origin"));
    r->origin = origin == MS_SNAPSHOT_ORIGIN_SCHEDULED || origin == MS_SNAPSHOT_ORIGIN_MANUAL
                    ? origin
                    : MS_SNAPSHOT_ORIGIN_RESYNC;
    (void) ms_parse_iso8601(ms_bson_str(msg, "started_at"), &r->started_usec);
    (void) ms_parse_iso8601(ms_bson_str(msg, "finished_at"), &r->finished_usec);
    r->created_usec = r->started_usec;
    r->items_done = r->items_total = ms_bson_u64(msg, "documents");
    r->bytes_transferred = ms_bson_u64(msg, "bytes");
    r->progress_pct = MS_PERCENT_DONE;
    r->point_in_time = agent_msg_bool(msg, "point_in_time");
    r->parts = parts_of(msg);
    bool complete =
        agent_msg_bool(msg, "archive_present") && agent_msg_bool(msg, "archive_size_matches");
    if (!complete)
        add_problem(x, "%s: snapshot %s: its archive %s is %s", store, r->id,
                    r->archive_key ? r->archive_key : "?",
                    agent_msg_bool(msg, "archive_present") ? "not the size its manifest gives"
                                                           : "missing");
    char *id = strdup(r->id);
    if (!id) {
        ms_snapshot_record_free(r);
        return;
    }
    x->found[x->n_found++] = (Found){r, id, complete};
}

static void scan_next(Resync *x);

static void scan_job_end(AgentJob *j, const AgentJobEnd *end) {
    Resync *x = MS_CONTAINER_OF(j, Resync, job);
    if (end->outcome == AGENT_JOB_SUCCEEDED)
        x->store_read[x->next] = true;
    else
        add_problem(x, "%s could not be read: %s", x->stores[x->next], end->reason);
    agent_job_reset(&x->job);
    x->next++;
    scan_next(x);
}

/* Seqs are given one at a time: no agent gets anywhere near this. */
#define RESYNC_SEQ_MAX (UINT64_C(1) << 48)

static bool is_local_of(const Manager *m, const MsSnapshotRecord *r) {
    return !r->remote && strcmp(r->node, m->config->node) == 0;
}

/* The catalog needs the policy of a snapshot it records; a policy no longer defined here is
 * recorded as deleted, so that its snapshots are listed but never expired by this node. */
static int ensure_policy_row(Manager *m, const char *name, MsError *e) {
    MsPolicyRuntime *rt = NULL;
    int r = ms_catalog_get_policy(m->catalog, name, &rt, e);
    ms_policy_runtime_free(rt);
    if (r != -ENOENT)
        return r;
    ms_error_clear(e);
    MsPolicyRuntime row = {.name = (char *) name, .state = MS_POLICY_DELETED};
    return ms_catalog_set_policy(m->catalog, &row, e);
}

int manager_adopt_snapshot(Manager *m, MsSnapshotRecord *r, MsError *e) {
    r->remote = strcmp(r->node, m->config->node) != 0;
    /* Another node's, in a cluster: written to the shared records on its behalf, so that every
     * node lists it and that node takes it into its catalog (its retention expires it). */
    if (r->remote && m->cluster) {
        int k = cluster_publish_foreign(m, r, e);
        if (k < 0) {
            ms_snapshot_record_free(r);
            return k;
        }
    }
    MsSnapshotRecord **list = realloc(m->snapshots, (m->n_snapshots + 1) * sizeof(*list));
    if (!list) {
        ms_snapshot_record_free(r);
        return oom(e);
    }
    m->snapshots = list;
    /* Remote ones live in the cluster's records, not in this catalog. */
    if ((!r->remote || !m->cluster) && (ensure_policy_row(m, r->policy, e) < 0 ||
                                        ms_catalog_insert_snapshot(m->catalog, r, e) < 0)) {
        ms_snapshot_record_free(r);
        return -EIO;
    }
    manager_insert_snapshot_record(m, r);
    ManagerPolicy *owner = manager_find_policy(m, r->policy);
    if (!r->remote && owner && r->seq > owner->runtime->last_seq) {
        owner->runtime->last_seq = r->seq;
        MsError se = MS_ERROR_INIT;
        if (ms_catalog_set_policy(m->catalog, owner->runtime, &se) < 0)
            log_warning("cannot record policy '%s': %s", r->policy, se.message);
    }
    MANAGER_EMIT(m, snapshot_added, r);
    cluster_record_changed(m, r);
    return 0;
}

static bool task_may_still_commit(MsSnapshotState state) {
    return state == MS_SNAPSHOT_QUEUED || state == MS_SNAPSHOT_RUNNING ||
           state == MS_SNAPSHOT_COMPLETED; /* completed since the listing: its manifest is there */
}

static void remove_orphans(Resync *x) {
    Manager *m = x->m;
    uint64_t now = now_usec();
    for (size_t i = 0; i < x->n_orphans; i++) {
        const Orphan *o = &x->orphans[i];
        const MsSnapshotRecord *r = manager_find_snapshot(m, o->id);
        char why[MS_ERROR_MESSAGE_MAX];
        if (r && task_may_still_commit(r->state))
            continue;
        if (r)
            snprintf(why, sizeof(why), "its task ended %s and can no longer store the manifest",
                     ms_snapshot_state_to_string(r->state));
        else if (o->mtime_usec > 0 && now > (uint64_t) o->mtime_usec &&
                 now - (uint64_t) o->mtime_usec >= ORPHAN_GRACE_USEC)
            snprintf(why, sizeof(why),
                     "no agent knows of snapshot %s and the archive is %" PRIu64
                     " minutes old: its manifest is not coming",
                     o->id, (now - (uint64_t) o->mtime_usec) / (UINT64_C(60) * 1000000));
        else {
            add_problem(x,
                        "%s: %s is an archive without a manifest that no agent knows of; it is "
                        "removed once it is an hour old, unless its manifest appears",
                        o->store, o->key);
            continue;
        }
        MsError e = MS_ERROR_INIT;
        if (remover_enqueue_orphan(m, o->store, o->key, o->id, r ? r->policy : o->policy, why, &e) <
            0)
            add_problem(x, "%s: %s: cannot remove it: %s", o->store, o->key, e.message);
        else
            x->result.finished++;
    }
}

static void reconcile(Resync *x) {
    Manager *m = x->m;
    for (size_t i = 0; i < x->n_found; i++) {
        Found *f = &x->found[i];
        x->result.found++;
        if (!f->complete)
            continue;
        MsSnapshotRecord *have = manager_snapshot_mutable(m, f->record->id);
        if (have && !is_local_of(m, have))
            continue; /* another node's record */
        if (!have && x->mode == RESYNC_CORRECT_ONLY)
            continue;
        if (have) {
            MsSnapshotState was = have->state;
            if (strcmp(have->store ? have->store : "", f->record->store) == 0 &&
                (was == MS_SNAPSHOT_FAILED || was == MS_SNAPSHOT_INTERRUPTED ||
                 was == MS_SNAPSHOT_STOPPED)) {
                (void) replace_string(&have->archive_key, f->record->archive_key);
                (void) replace_string(&have->manifest_key, f->record->manifest_key);
                (void) replace_string(&have->error, NULL);
                have->items_done = have->items_total = f->record->items_done;
                have->bytes_transferred = f->record->bytes_transferred;
                have->progress_pct = MS_PERCENT_DONE;
                have->point_in_time = f->record->point_in_time;
                (void) replace_string(&have->parts, f->record->parts);
                manager_set_snapshot_state(m, have, MS_SNAPSHOT_COMPLETED);
                (void) ms_event_log(MS_EVENT_TASK_COMPLETED,
                                    &(MsEventFields){.policy = have->policy,
                                                     .task = have->id,
                                                     .node = m->config->node},
                                    "snapshot %s is complete in %s: recorded as completed by a "
                                    "resync (it was listed %s)",
                                    have->id, have->store, ms_snapshot_state_to_string(was));
                x->result.corrected++;
            } else if (strcmp(have->store ? have->store : "", f->record->store) == 0 &&
                       (was == MS_SNAPSHOT_DELETED || was == MS_SNAPSHOT_EXPIRED) &&
                       !reader_uses_snapshot(m, have->id)) {
                /* Listed removed, yet its manifest is there: a removal cut short. */
                manager_finish_removal(m, have,
                                       "finishing a removal cut short earlier (its objects were "
                                       "still in the store)");
                x->result.finished++;
            } else if (was == MS_SNAPSHOT_COMPLETED && !have->parts && f->record->parts &&
                       strcmp(have->store ? have->store : "", f->record->store) == 0) {
                /* A cluster snapshot recorded before records kept their parts. */
                (void) replace_string(&have->parts, f->record->parts);
                manager_set_snapshot_state(m, have, MS_SNAPSHOT_COMPLETED);
            }
            continue;
        }
        MsError e = MS_ERROR_INIT;
        MsSnapshotRecord *r = TAKE_PTR(f->record);
        /* The node the manifest names took it: it stays that node's (listed everywhere, its
         * retention that node's). A manifest without one (taken by hand) becomes this node's. */
        if (!r->node || !r->node[0]) {
            free(r->node);
            r->node = strdup(m->config->node);
        }
        char what[MS_ERROR_MESSAGE_MAX];
        snprintf(what, sizeof(what), "snapshot %s found in %s", r->id, r->store);
        if (!r->node) {
            ms_snapshot_record_free(r);
            add_problem(x, "%s cannot be recorded: out of memory", what);
            continue;
        }
        if (manager_adopt_snapshot(m, r, &e) < 0) { /* r is gone */
            add_problem(x, "%s cannot be recorded: %s", what,
                        e.message[0] ? e.message : "out of memory");
            continue;
        }
        log_info("resync: snapshot %s found in %s and recorded as node %s's", r->id, r->store,
                 r->node);
        x->result.added++;
    }
    /* This node's completed records whose manifest a store that was read no longer holds. */
    for (size_t i = 0; x->mode == RESYNC_FULL && i < m->n_snapshots; i++) {
        MsSnapshotRecord *r = m->snapshots[i];
        if (!is_local_of(m, r) || r->state != MS_SNAPSHOT_COMPLETED || !r->store)
            continue;
        bool read = false, there = false;
        for (size_t s = 0; s < x->n_stores; s++)
            read |= x->store_read[s] && strcmp(x->stores[s], r->store) == 0;
        for (size_t k = 0; k < x->n_found; k++)
            there |= strcmp(x->found[k].id, r->id) == 0;
        if (!read || there || reader_uses_snapshot(m, r->id) || remover_has(m, r->id))
            continue;
        (void) replace_string(&r->error, "not in the store at resync: its manifest is gone");
        manager_set_snapshot_state(m, r, MS_SNAPSHOT_DELETED);
        manager_log_removed(m, r, "its manifest was not found in the store by a resync");
        x->result.missing++;
    }
    remove_orphans(x);
    manager_apply_retention(m, NULL);
}

static void finish(Resync *x) {
    Manager *m = x->m;
    reconcile(x);
    x->result.problems = (const char *const *) x->problems;
    x->result.n_problems = x->n_problems;
    log_info("resync: %u snapshot(s) in %zu store(s): %u added, %u corrected, %u missing, %u "
             "removals finished, %zu problem(s)",
             x->result.found, x->n_stores, x->result.added, x->result.corrected, x->result.missing,
             x->result.finished, x->n_problems);
    m->resync = NULL;
    if (x->token)
        MANAGER_EMIT(m, resync_done, x->token, &x->result, NULL);
    resync_free(x);
    manager_maybe_finish_shutdown(m);
}

static void scan_next(Resync *x) {
    Manager *m = x->m;
    while (x->next < x->n_stores) {
        if (m->stopping) {
            add_problem(x, "%s not read: the agent is stopping", x->stores[x->next]);
            x->next++;
            continue;
        }
        const char *args[] = {"scan", "--store", x->stores[x->next], NULL};
        AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args};
        static const AgentJobType scan_job_type = {
            .name = "store scan",
            .on_message = scan_job_message,
            .on_end = scan_job_end,
        };
        MsError e = MS_ERROR_INIT;
        if (agent_job_spawn(&x->job, &scan_job_type, m->event, &spec, &e) >= 0)
            return;
        add_problem(x, "%s could not be read: %s", x->stores[x->next], e.message);
        x->next++;
    }
    finish(x);
}

int manager_resync(Manager *m, ManagerResyncMode mode, void *token, MsError *e) {
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    if (m->resync)
        return ms_error_set_kind(e, MS_ERROR_KIND_BUSY, EBUSY,
                                 "a resync is under way already; wait for it to end");
    _cleanup_(resync_freep) Resync *x = calloc(1, sizeof(*x));
    if (!x)
        return oom(e);
    x->m = m;
    x->mode = mode;
    for (size_t i = 0; i < m->n_policies; i++) {
        const char *store = ms_policy_effective_store(m->policies[i]->settings, m->config);
        bool seen = !store;
        for (size_t k = 0; store && k < x->n_stores; k++)
            seen |= strcmp(x->stores[k], store) == 0;
        if (seen)
            continue;
        char **v = realloc(x->stores, (x->n_stores + 1) * sizeof(*v));
        if (!v)
            return oom(e);
        x->stores = v;
        if (!(v[x->n_stores] = strdup(store)))
            return oom(e);
        x->n_stores++;
    }
    if (x->n_stores == 0)
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_CONFIGURED, ENXIO,
                                 "no policy names a store: there is nothing to read");
    if (!(x->store_read = calloc(x->n_stores, sizeof(bool))))
        return oom(e);
    x->token = token;
    m->resync = TAKE_PTR(x);
    log_info("resync: reading %zu store(s)", m->resync->n_stores);
    scan_next(m->resync);
    return 0;
}

static bool resync_running(const Manager *m) {
    return m->resync != NULL;
}

static void resync_stop(Manager *m) {
    if (m->resync)
        (void) agent_job_stop(&m->resync->job, INTERRUPTED_BY_SHUTDOWN, false, 0);
}

static void resync_free_all(Manager *m) {
    if (!m->resync)
        return;
    Resync *x = TAKE_PTR(m->resync);
    if (x->token) {
        MsError e = MS_ERROR_INIT;
        ms_error_set_kind(&e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                          "the agent stopped before the resync ended");
        MANAGER_EMIT(m, resync_done, x->token, NULL, &e);
    }
    resync_free(x);
}

/* ---- as a part of the agent (agent-internal.h ManagerPart) ---- */

/* The previous run left tasks unfinished: some may have been stored completely before it died
 * (killed between the worker's commit and the catalog's record). The stores say which; their
 * records are corrected, nothing else is touched. Once, after the first load of the policies. */
static void resync_correct_at_start(Manager *m) {
    if (!m->correct_at_start)
        return;
    m->correct_at_start = false;
    MsError e = MS_ERROR_INIT;
    int r = manager_resync(m, RESYNC_CORRECT_ONLY, NULL, &e);
    if (r < 0 && r != -ENXIO) /* ENXIO: no policy has a store, nothing to check */
        log_warning("cannot check the stores for snapshots stored before the last stop: %s",
                    e.message);
}

const ManagerPart resync_part = {
    .name = "resync",
    .policies_loaded = resync_correct_at_start,
    .busy = resync_running,
    .stop = resync_stop,
    .free_all = resync_free_all,
};

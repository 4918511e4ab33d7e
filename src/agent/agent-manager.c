/* The agent's logic: policies, snapshot tasks run by workers, catalog and Event Log in step. */
#include "agent-manager.h"

#include <bson/bson.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-calendar.h"
#include "agent/agent-internal.h"
#include "catalog/snapshot-parts.h"
#include "common/credential-store.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/timeutil.h"
#include "engine/oplog-slice.h"
#include "engine/uri-auth.h"
#include "eventlog/eventlog.h"
#include "mongosnap/mongosnap.h"
#include "retention/retention.h"
#include "storage/storage.h"

#define STOPPED_FOR_REBUILD "stopped for a rebuild"
#define LOST_THE_LEASE                                                                             \
    "this node lost its cluster lease (cut off from the cluster database for longer than "         \
    "LeaseSec=, or another node took over); stopped so that no two nodes snapshot the policy "     \
    "at once"
/* A second snapshot of a policy in the same second gets "-2", "-3", ... */
#define SNAPSHOT_ID_ATTEMPTS 100
/* Worker arguments besides the namespace filters (two each): the fixed part plus two per
 * option, with room to spare. */
#define CREDENTIALS_DIRECTORY_ENV "CREDENTIALS_DIRECTORY"

/* ---- small helpers ---- */

static void fields_for(const SnapshotTask *t, MsEventFields *f) {
    *f = (MsEventFields){
        .policy = t->record->policy,
        .task = t->record->id,
        .node = t->record->node,
    };
}

void manager_emit_snapshot_changed(Manager *m, const MsSnapshotRecord *r, unsigned changes) {
    manager_coordination->record_changed(m, r);
    MANAGER_EMIT(m, snapshot_changed, r, changes);
}

static void parts_policy_changed(Manager *m) {
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->policy_changed)
            (*part)->policy_changed(m);
}

void manager_emit_policy_changed(Manager *m, const ManagerPolicy *p) {
    MANAGER_EMIT(m, policy_changed, p);
    parts_policy_changed(m);
}

static void emit_policy_removed(Manager *m, const ManagerPolicy *p) {
    MANAGER_EMIT(m, policy_removed, p);
    parts_policy_changed(m);
}

static void forget_stores(Manager *m);

/* ---- the parts (agent-internal.h ManagerPart) ---- */

bool manager_snapshot_in_use(const Manager *m, const char *snapshot_id) {
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->uses_snapshot && (*part)->uses_snapshot(m, snapshot_id))
            return true;
    return false;
}

static int parts_remove_remote(Manager *m, const MsSnapshotRecord *r, const char *why, MsError *e) {
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->remove_remote)
            return (*part)->remove_remote(m, r, why, e);
    return ms_error_set(e, EOPNOTSUPP, "no part of the agent removes from remote stores");
}

/* ---- policies ---- */

static ManagerPolicy *manager_policy_free(ManagerPolicy *p) {
    if (!p)
        return NULL;
    ms_policy_free(p->settings);
    ms_policy_runtime_free(p->runtime);
    free(p->drift);
    free(p->retention_held);
    free(p->problem);
    free(p->schedule_problem);
    free(p->schedule_checked);
    free(p);
    return NULL;
}

static void free_policy_errors(Manager *m) {
    for (size_t i = 0; i < m->n_policy_errors; i++)
        free(m->policy_errors[i]);
    free(m->policy_errors);
    m->policy_errors = NULL;
    m->n_policy_errors = 0;
}

size_t manager_n_policies(const Manager *m) {
    return m->n_policies;
}

ManagerPolicy *manager_policy_at(Manager *m, size_t i) {
    return i < m->n_policies ? m->policies[i] : NULL;
}

ManagerPolicy *manager_find_policy(Manager *m, const char *name) {
    if (!name)
        return NULL;
    for (size_t i = 0; i < m->n_policies; i++)
        if (!m->policies[i]->removed && strcmp(m->policies[i]->settings->name, name) == 0)
            return m->policies[i];
    return NULL;
}

size_t manager_n_policy_errors(const Manager *m) {
    return m->n_policy_errors;
}

const char *manager_policy_error_at(const Manager *m, size_t i) {
    return i < m->n_policy_errors ? m->policy_errors[i] : NULL;
}

/* The catalog row of a policy: created active on first sight, revived when a deleted policy's
 * file comes back. */
static int load_runtime(Manager *m, const char *name, MsPolicyRuntime **ret, MsError *e) {
    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *rt = NULL;
    MsError e2 = MS_ERROR_INIT;
    int r = ms_catalog_get_policy(m->catalog, name, &rt, &e2);
    if (r < 0 && r != -ENOENT)
        return ms_error_set(e, -r, "%s", e2.message);
    if (r == -ENOENT || rt->state == MS_POLICY_DELETED) {
        if (!rt) {
            rt = calloc(1, sizeof(*rt));
            if (!rt || !(rt->name = strdup(name)))
                return oom(e);
        }
        /* A policy created again under a deleted one's name starts a history of its own: the
         * old one's last run and result are not its (its snapshots were detached at Delete).
         * The start order goes on, so that no number is given twice. */
        rt->state = MS_POLICY_ACTIVE;
        rt->last_run_usec = 0;
        rt->next_run_usec = 0;
        free(rt->last_result);
        rt->last_result = NULL;
        r = ms_catalog_set_policy(m->catalog, rt, e);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(rt);
    return 0;
}

static int policy_cmp(const void *a, const void *b) {
    const ManagerPolicy *const *x = a, *const *y = b;
    return strcmp((*x)->settings->name, (*y)->settings->name);
}

static int check_runnable(Manager *m, const MsPolicy *s, MsError *e);

/* A Schedule= systemd refuses makes the timer vanish while the policy looks fine; a missing
 * credential fails every run. Both are said where operators look (the policy's Problem,
 * list-policies, status), when the policy is loaded or changed and when credentials change.
 * The schedule is checked again only when it changed (it runs systemd-analyze). */
static void refresh_problem(ManagerPolicy *p) {
    const char *sched = p->settings->schedule;
    if (!(p->schedule_checked && sched && strcmp(p->schedule_checked, sched) == 0)) {
        free(p->schedule_checked);
        p->schedule_checked = sched ? strdup(sched) : NULL;
        p->next_run_computed_usec = 0;
        free(p->schedule_problem);
        p->schedule_problem = NULL;
        MsError e = MS_ERROR_INIT;
        if (sched && agent_calendar_check(sched, &e) < 0 && e.code == EINVAL)
            p->schedule_problem = strdup(e.message);
    }
    MsError e = MS_ERROR_INIT;
    char *problem = NULL;
    if (p->schedule_problem)
        problem = strdup(p->schedule_problem);
    else if (!p->removed && check_runnable(p->manager, p->settings, &e) < 0)
        problem = strdup(e.message);
    if ((problem == NULL) != (p->problem == NULL) ||
        (problem && strcmp(problem, p->problem) != 0)) {
        if (problem)
            log_error("policy '%s' cannot run as written: %s", p->settings->name, problem);
        else if (p->problem)
            log_info("policy '%s' can run again", p->settings->name);
        free(p->problem);
        p->problem = problem;
        manager_emit_policy_changed(p->manager, p);
    } else
        free(problem);
}

void manager_refresh_problems(Manager *m) {
    for (size_t i = 0; i < m->n_policies; i++)
        refresh_problem(m->policies[i]);
}

static int reload_policies(Manager *m, MsError *e);

int manager_reload_policies(Manager *m, MsError *e) {
    int r = reload_policies(m, e);
    MANAGER_EMIT(m, policies_reloaded, r < 0 ? e : NULL);
    return r;
}

static int reload_policies(Manager *m, MsError *e) {
    _cleanup_(ms_policy_set_freep) MsPolicySet *set = NULL;
    int r = ms_policy_load_dir(m->config->policy_directory, &set, e);
    if (r < 0)
        return r;

    free_policy_errors(m);
    if (set->n_errors > 0) {
        m->policy_errors = calloc(set->n_errors, sizeof(char *));
        if (!m->policy_errors)
            return oom(e);
    }
    for (size_t i = 0; i < set->n_errors; i++) {
        log_error("policy not loaded: %s", set->errors[i].error.message);
        m->policy_errors[m->n_policy_errors] = strdup(set->errors[i].error.message);
        if (m->policy_errors[m->n_policy_errors])
            m->n_policy_errors++;
    }

    /* Files that vanished: their policies go, or wait for their task to end. */
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        bool found = false;
        for (size_t j = 0; j < set->n_policies && !found; j++)
            found = strcmp(set->policies[j]->name, p->settings->name) == 0;
        if (!found && !p->removed) {
            p->removed = true;
            emit_policy_removed(m, p);
        }
    }

    for (size_t j = 0; j < set->n_policies; j++) {
        MsPolicy *np = set->policies[j];
        ManagerPolicy *p = NULL;
        for (size_t i = 0; i < m->n_policies && !p; i++)
            if (strcmp(m->policies[i]->settings->name, np->name) == 0)
                p = m->policies[i];
        if (p) {
            p->removed = false;
            if (!ms_policy_equal(p->settings, np)) {
                ms_policy_free(p->settings);
                p->settings = TAKE_PTR(set->policies[j]);
                manager_emit_policy_changed(m, p);
            }
            continue;
        }
        _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *rt = NULL;
        MsError le = MS_ERROR_INIT;
        if (load_runtime(m, np->name, &rt, &le) < 0) {
            log_error("policy '%s' not loaded: %s", np->name, le.message);
            continue;
        }
        ManagerPolicy **list = realloc(m->policies, (m->n_policies + 1) * sizeof(*list));
        if (!list)
            return oom(e);
        m->policies = list;
        p = calloc(1, sizeof(*p));
        if (!p)
            return oom(e);
        p->manager = m;
        p->settings = TAKE_PTR(set->policies[j]);
        p->runtime = TAKE_PTR(rt);
        m->policies[m->n_policies++] = p;
        p->added = true;
    }

    manager_refresh_problems(m);
    /* Announced once their problems are known: a new policy's first properties are its own. */
    for (size_t i = 0; i < m->n_policies; i++)
        if (m->policies[i]->added) {
            m->policies[i]->added = false;
            MANAGER_EMIT(m, policy_added, m->policies[i]);
        }

    /* Drop the removed policies that have nothing running. */
    size_t k = 0;
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        if (p->removed && !p->task) {
            manager_policy_free(p);
            continue;
        }
        m->policies[k++] = p;
    }
    m->n_policies = k;
    /* qsort()'s array argument must not be NULL, even for no elements. */
    if (m->n_policies > 1)
        qsort(m->policies, m->n_policies, sizeof(*m->policies), policy_cmp);
    log_info("%zu policies loaded from %s%s", m->n_policies, m->config->policy_directory,
             m->n_policy_errors > 0 ? " (some files have errors)" : "");
    /* Credentials may have been rotated with the reload. */
    forget_stores(m);
    /* Rules may have changed, and at start-up snapshots may have expired while the agent was
     * off. */
    manager_apply_retention(m, NULL);
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->policies_loaded)
            (*part)->policies_loaded(m);
    return 0;
}

static void drop_policy_if_removed(Manager *m, ManagerPolicy *p) {
    if (!p->removed || p->task)
        return;
    MS_ARRAY_REMOVE(m->policies, m->n_policies, p);
    manager_policy_free(p);
}

static int save_runtime(Manager *m, ManagerPolicy *p) {
    MsError e = MS_ERROR_INIT;
    int r = ms_catalog_set_policy(m->catalog, p->runtime, &e);
    if (r < 0)
        log_error("cannot record policy '%s' in the catalog: %s", p->settings->name, e.message);
    return r;
}

/* ---- snapshots ---- */

static MsSnapshotRecord *find_snapshot(const Manager *m, const char *id);

size_t manager_n_snapshots(const Manager *m) {
    return m->n_snapshots;
}

const MsSnapshotRecord *manager_snapshot_at(const Manager *m, size_t i) {
    return i < m->n_snapshots ? m->snapshots[i] : NULL;
}

MsSnapshotRecord *manager_snapshot_mutable(Manager *m, const char *id) {
    return find_snapshot(m, id);
}

static MsSnapshotRecord *find_snapshot(const Manager *m, const char *id) {
    if (!id)
        return NULL;
    for (size_t i = 0; i < m->n_snapshots; i++)
        if (strcmp(m->snapshots[i]->id, id) == 0)
            return m->snapshots[i];
    return NULL;
}

const MsSnapshotRecord *manager_find_snapshot(const Manager *m, const char *id) {
    return find_snapshot(m, id);
}

bool manager_policy_known(const Manager *m, const char *name) {
    if (manager_find_policy((Manager *) m, name))
        return true;
    for (size_t i = 0; i < m->n_snapshots; i++)
        if (strcmp(m->snapshots[i]->policy, name) == 0)
            return true;
    return false;
}

uint64_t manager_task_elapsed_usec(const MsTaskCore *c, uint64_t now) {
    if (c->started_usec == 0)
        return 0;
    uint64_t end = c->finished_usec ? c->finished_usec : now;
    return end > c->started_usec ? end - c->started_usec : 0;
}

static int load_snapshots(Manager *m, MsError *e) {
    int r = ms_catalog_list_snapshots(m->catalog, NULL, &m->snapshots, &m->n_snapshots, e);
    if (r < 0)
        return r;
    /* Rows of other nodes' snapshots are copies kept for the restores that read them: listed,
     * never expired, removed or rewritten by this node. */
    for (size_t i = 0; i < m->n_snapshots; i++)
        m->snapshots[i]->remote = strcmp(m->snapshots[i]->node, m->config->node) != 0;
    return 0;
}

/* ---- tasks ---- */

static void snapshot_task_free(SnapshotTask *t) {
    if (!t)
        return;
    agent_queue_remove(&t->manager->queue, &t->job);
    agent_job_reset(&t->job);
    progress_throttle_done(&t->progress);
    free(t->archive_key);
    free(t->manifest_key);
    if (t->parts)
        bson_destroy(t->parts);
    free(t);
}

unsigned manager_running_workers(const Manager *m) {
    return agent_queue_running(&m->queue);
}

bool manager_has_tasks(const Manager *m) {
    for (size_t i = 0; i < m->n_policies; i++)
        if (m->policies[i]->task)
            return true;
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->busy && (*part)->busy(m))
            return true;
    return false;
}

static void flush_progress(void *userdata) {
    SnapshotTask *t = userdata;
    MsError e = MS_ERROR_INIT;
    const MsSnapshotRecord *r = t->record;
    if (ms_catalog_update_snapshot_progress(t->manager->catalog, r->id, r->items_done,
                                            r->items_total, r->progress_pct, r->bytes_transferred,
                                            &e) < 0)
        log_warning("cannot record the progress of %s: %s", r->id, e.message);
}

static void emit_progress(void *userdata) {
    SnapshotTask *t = userdata;
    manager_emit_snapshot_changed(t->manager, t->record, MANAGER_SNAPSHOT_PROGRESS);
}

static void snapshot_job_message(AgentJob *j, const bson_t *msg) {
    SnapshotTask *t = MS_CONTAINER_OF(j, SnapshotTask, job);
    MsSnapshotRecord *r = t->record;
    const char *event = ms_bson_str(msg, "event");
    if (!event)
        return;
    MsEventFields f;
    fields_for(t, &f);

    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_PROGRESS) == 0) {
        r->items_done = ms_bson_u64(msg, "items_done");
        r->items_total = ms_bson_u64(msg, "items_total");
        double pct = ms_bson_double(msg, "percent");
        r->progress_pct = pct < 0 ? 0 : pct > MS_PERCENT_DONE ? MS_PERCENT_DONE : pct;
        /* The documents' bytes read from the server so far: what moves while the task runs
         * (the stored size is known only at the end, and is the record's size). */
        r->bytes_transferred = ms_bson_u64(msg, "bytes_read");
        snprintf(r->phase, sizeof(r->phase), "%s", ms_bson_str(msg, "phase") ?: "");
        progress_throttle_changed(&t->progress);
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_NAMESPACE) == 0) {
        f.ns = ms_bson_str(msg, "namespace");
        f.has_items = true;
        f.items = ms_bson_u64(msg, "documents");
        f.has_bytes = agent_msg_has(msg, "bytes");
        f.bytes = ms_bson_u64(msg, "bytes");
        (void) ms_event_log(MS_EVENT_NAMESPACE_FINISHED, &f, "%s: %s done, %" PRIu64 " documents",
                            r->id, f.ns ? f.ns : "?", f.items);
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_OPLOG) == 0) {
        f.has_items = true;
        f.items = ms_bson_u64(msg, "entries");
        (void) ms_event_log(MS_EVENT_OPLOG_CAPTURED, &f, "%s: %" PRIu64 " oplog entries captured",
                            r->id, f.items);
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_BALANCER) == 0) {
        t->balancer_stopped = agent_msg_bool(msg, "stopped");
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_PART_ASSIGNED) == 0) {
        /* A shard's part handed to the agent beside one of its members: that node is asked to
         * take it (cluster-part); the worker meets it through the store, and gives the
         * cluster snapshot up if it never comes. */
        const char *shard = ms_bson_str(msg, "shard"), *node = ms_bson_str(msg, "node");
        char task[512];
        MsError fe = MS_ERROR_INIT;
        if (shard && node && strchr(shard, '/') == NULL &&
            snprintf(task, sizeof(task), "%s/%s", r->id, shard) < (int) sizeof(task) &&
            manager_coordination->forward(t->manager, MANAGER_OP_TAKE_PART, node, r->policy, task,
                                          &fe) ==
                0) {
            f.node = node;
            (void) ms_event_log(MS_EVENT_TASK_ASSIGNED, &f,
                                "%s: part %s handed to node %s (beside %s)", r->id, shard, node,
                                ms_bson_str(msg, "member") ?: "?");
        } else
            log_warning("%s: part %s cannot be handed to node %s: %s (the worker gives the "
                        "cluster snapshot up when it is not taken)",
                        r->id, shard ? shard : "?", node ? node : "?",
                        fe.message[0] ? fe.message : "a malformed message");
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_PART) == 0) {
        /* A cluster snapshot's part: which shard, how much, and where. */
        f.has_items = true;
        f.items = ms_bson_u64(msg, "documents");
        f.has_bytes = true;
        f.bytes = ms_bson_u64(msg, "stored_bytes");
        const char *shard = ms_bson_str(msg, "shard");
        if (!t->parts)
            t->parts = bson_new();
        if (ms_snapshot_parts_append(t->parts, t->n_parts, msg) == 0)
            t->n_parts++;
        (void) ms_event_log(MS_EVENT_PART_STORED, &f, "%s: part %s stored as %s, %" PRIu64
                            " documents, %" PRIu64 " bytes",
                            r->id, shard ? shard : "?", ms_bson_str(msg, "manifest") ?: "?",
                            f.items, f.bytes);
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) == 0) {
        const char *status = ms_bson_str(msg, "status");
        if (status && strcmp(status, "ok") == 0) {
            (void) replace_string(&t->archive_key, ms_bson_str(msg, "archive"));
            (void) replace_string(&t->manifest_key, ms_bson_str(msg, "manifest"));
            t->point_in_time = agent_msg_bool(msg, "point_in_time");
            if (agent_msg_has(msg, "documents"))
                r->items_done = ms_bson_u64(msg, "documents");
            if (agent_msg_has(msg, "stored_bytes"))
                r->bytes_transferred = ms_bson_u64(msg, "stored_bytes");
            f.has_items = true;
            f.items = r->items_done;
            f.has_bytes = true;
            f.bytes = r->bytes_transferred;
            (void) ms_event_log(MS_EVENT_TASK_STORED, &f, "%s: stored as %s", r->id,
                                t->archive_key ? t->archive_key : "?");
        }
    }
}

bool manager_store_is_local(const char *location) {
    return location[0] == '/' || strncmp(location, "file://", strlen("file://")) == 0;
}

void manager_log_removed(Manager *m, const MsSnapshotRecord *r, const char *why) {
    (void) ms_event_log(r->state == MS_SNAPSHOT_EXPIRED ? MS_EVENT_SNAPSHOT_EXPIRED
                                                        : MS_EVENT_SNAPSHOT_DELETED,
                        &(MsEventFields){.policy = r->policy,
                                         .task = r->id,
                                         .node = r->node,
                                         .has_items = true,
                                         .items = r->items_done,
                                         .has_bytes = true,
                                         .bytes = r->bytes_transferred},
                        "snapshot %s %s from %s: %s", r->id,
                        r->state == MS_SNAPSHOT_EXPIRED ? "expired and removed" : "deleted",
                        r->store ? r->store : "its store", why);
}

/* Records the catalog could not take (its file system full, an I/O error): written again every
 * MANAGER_CATALOG_RETRY_USEC until it takes them, so that a completion recorded only in memory
 * does not turn into "interrupted" at the next start. */
static int on_unsaved_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Manager *m = userdata;
    size_t k = 0;
    for (size_t i = 0; i < m->n_unsaved; i++) {
        MsSnapshotRecord *r = find_snapshot(m, m->unsaved[i]);
        MsError e = MS_ERROR_INIT;
        if (!r || r->remote || ms_catalog_update_snapshot(m->catalog, r, &e) >= 0) {
            if (r && !r->remote)
                log_info("recorded that %s is %s, now that the catalog takes it", r->id,
                         ms_snapshot_state_to_string(r->state));
            free(m->unsaved[i]);
            continue;
        }
        m->unsaved[k++] = m->unsaved[i];
    }
    m->n_unsaved = k;
    if (k > 0)
        (void) sd_event_source_set_time_relative(s, MANAGER_CATALOG_RETRY_USEC);
    (void) sd_event_source_set_enabled(s, k > 0 ? SD_EVENT_ONESHOT : SD_EVENT_OFF);
    return 0;
}

void manager_remember_unsaved(Manager *m, const MsSnapshotRecord *r) {
    for (size_t i = 0; i < m->n_unsaved; i++)
        if (strcmp(m->unsaved[i], r->id) == 0)
            return;
    char **v = realloc(m->unsaved, (m->n_unsaved + 1) * sizeof(*v));
    if (!v || !(v[m->n_unsaved] = strdup(r->id))) {
        if (v)
            m->unsaved = v;
        return;
    }
    m->unsaved = v;
    m->n_unsaved++;
    if (!m->unsaved_timer) {
        if (sd_event_add_time_relative(m->event, &m->unsaved_timer, CLOCK_MONOTONIC,
                                       MANAGER_CATALOG_RETRY_USEC, 0, on_unsaved_timer, m) < 0)
            log_warning("cannot arm the catalog retry; %s is recorded at the next start", r->id);
        return;
    }
    (void) sd_event_source_set_time_relative(m->unsaved_timer, MANAGER_CATALOG_RETRY_USEC);
    (void) sd_event_source_set_enabled(m->unsaved_timer, SD_EVENT_ONESHOT);
}

void manager_set_snapshot_state(Manager *m, MsSnapshotRecord *r, MsSnapshotState state) {
    r->state = state;
    MsError ce = MS_ERROR_INIT;
    if (ms_catalog_update_snapshot(m->catalog, r, &ce) < 0) {
        log_warning("cannot record that %s is %s: %s; trying again every %us", r->id,
                    ms_snapshot_state_to_string(state), ce.message,
                    (unsigned) (MANAGER_CATALOG_RETRY_USEC / 1000000u));
        manager_remember_unsaved(m, r);
    }
    manager_emit_snapshot_changed(m, r, MANAGER_SNAPSHOT_STATE);
}

/* Remove a completed snapshot's objects from its store and record it as gone (expired by
 * retention, or deleted on request). The manifest goes first: without it the snapshot can no
 * longer be taken for a complete one, whatever happens to the archive next. A local store's
 * two unlink()s happen here; a remote store's round trips and retries go to a worker
 * (agent-remover.c), so that a slow or failing S3 never blocks the event loop (nor trips the
 * watchdog). The record says expired/deleted from now on; it returns to completed if the
 * worker removed nothing. */
/* A chunked snapshot (its archive key names an index) leaves chunks behind that a collection
 * must remove, which reads every kept index and lists the chunk area: a worker's job even for
 * a local store. */
static bool record_is_chunked(const MsSnapshotRecord *r) {
    size_t n = r->archive_key ? strlen(r->archive_key) : 0, sfx = strlen(MONGOSNAP_INDEX_SUFFIX);
    return n > sfx && strcmp(r->archive_key + n - sfx, MONGOSNAP_INDEX_SUFFIX) == 0;
}

bool manager_snapshot_is_cluster(const MsSnapshotRecord *r) {
    size_t n = r->archive_key ? strlen(r->archive_key) : 0,
           sfx = strlen(MONGOSNAP_CLUSTER_MANIFEST_SUFFIX);
    return n > sfx && strcmp(r->archive_key + n - sfx, MONGOSNAP_CLUSTER_MANIFEST_SUFFIX) == 0;
}

/* A cluster snapshot's removal lists and removes its parts: a worker's job too. */
static bool removed_by_worker(const MsSnapshotRecord *r) {
    return !manager_store_is_local(r->store) || record_is_chunked(r) ||
           manager_snapshot_is_cluster(r);
}

static int remove_from_store(Manager *m, MsSnapshotRecord *r, MsSnapshotState state,
                             const char *why, MsError *e) {
    if (r->state == MS_SNAPSHOT_COMPLETED && r->store && removed_by_worker(r)) {
        int k = parts_remove_remote(m, r, why, e);
        if (k < 0)
            return k;
        manager_set_snapshot_state(m, r, state);
        return 0;
    }
    if (r->state == MS_SNAPSHOT_COMPLETED && r->store) {
        _cleanup_(ms_storage_freep) MsStorage *s = NULL;
        int k = ms_storage_open(r->store, &s, e);
        if (k >= 0 && r->manifest_key)
            k = ms_storage_remove(s, r->manifest_key, e);
        if (k >= 0 && r->archive_key)
            k = ms_storage_remove(s, r->archive_key, e);
        if (k < 0) {
            ms_error_prefix(e, "cannot remove snapshot %s from %s: ", r->id, r->store);
            return k;
        }
    }
    manager_set_snapshot_state(m, r, state);
    manager_log_removed(m, r, why);
    return 0;
}

void manager_finish_removal(Manager *m, MsSnapshotRecord *r, const char *why) {
    if (!r->store || r->remote || manager_snapshot_in_use(m, r->id))
        return;
    MsError e = MS_ERROR_INIT;
    if (removed_by_worker(r)) {
        if (parts_remove_remote(m, r, why, &e) < 0)
            log_warning("cannot finish removing %s: %s", r->id, e.message);
        return;
    }
    _cleanup_(ms_storage_freep) MsStorage *st = NULL;
    int k = ms_storage_open(r->store, &st, &e);
    if (k >= 0 && r->manifest_key)
        k = ms_storage_remove(st, r->manifest_key, &e);
    if (k >= 0 && r->archive_key)
        k = ms_storage_remove(st, r->archive_key, &e);
    if (k < 0)
        log_warning("cannot finish removing %s from %s: %s", r->id, r->store, e.message);
    else
        manager_log_removed(m, r, why);
}

static int on_retention_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* Wake up when the next snapshot is due to expire by MaxAge= (the only rule the clock alone
 * triggers; Keep* rules act when a snapshot completes). */
static void arm_retention_timer(Manager *m) {
    uint64_t next = 0;
    for (size_t i = 0; i < m->n_snapshots; i++) {
        const MsSnapshotRecord *r = m->snapshots[i];
        if (r->state == MS_SNAPSHOT_COMPLETED && r->expire_usec > 0 && !r->remote &&
            manager_find_policy(m, r->policy) && (next == 0 || r->expire_usec < next))
            next = r->expire_usec;
    }
    m->retention_timer = sd_event_source_disable_unref(m->retention_timer);
    if (next == 0 || m->stopping)
        return;
    if (sd_event_add_time(m->event, &m->retention_timer, CLOCK_REALTIME, next,
                          MANAGER_RETENTION_ACCURACY_USEC, on_retention_timer, m) < 0)
        log_warning("cannot arm the retention timer; expired snapshots are removed at the next "
                    "completion or reload");
}

/* One pass of retention over a policy: every completed snapshot of it that retention manages
 * (not detached by a Delete, not failed at its last verification: those stay until removed by
 * hand), any node's, with the decision for each. */
typedef struct RetentionPlan {
    MsSnapshotRecord **recs;
    MsRetentionDecision *decisions;
    MsRetentionSnapshot *snaps;
    size_t n;
    size_t n_remove; /* this node's to remove now */
} RetentionPlan;

static void retention_plan_done(RetentionPlan *x) {
    free(x->recs);
    free(x->decisions);
    free(x->snaps);
    *x = (RetentionPlan){0};
}

static bool retention_manages(const MsSnapshotRecord *r, const char *policy) {
    return r->state == MS_SNAPSHOT_COMPLETED && r->detached_usec == 0 &&
           r->verify_state != MS_VERIFY_FAILED && strcmp(r->policy, policy) == 0;
}

static int retention_plan(Manager *m, const ManagerPolicy *p, const MsRetentionRules *rules,
                          uint64_t now, RetentionPlan *ret, MsError *e) {
    const char *name = p->settings->name;
    RetentionPlan x = {0};
    for (size_t i = 0; i < m->n_snapshots; i++)
        x.n += retention_manages(m->snapshots[i], name);
    *ret = x;
    if (x.n == 0)
        return 0;
    x.recs = calloc(x.n, sizeof(*x.recs));
    x.decisions = calloc(x.n, sizeof(*x.decisions));
    x.snaps = calloc(x.n, sizeof(*x.snaps));
    if (!x.recs || !x.decisions || !x.snaps) {
        retention_plan_done(&x);
        return oom(e);
    }
    /* The newest snapshot this node completed itself is never expired, whatever the other
     * nodes' records or clocks say. */
    size_t pinned = x.n, k = 0;
    for (size_t i = 0; i < m->n_snapshots; i++) {
        MsSnapshotRecord *r = m->snapshots[i];
        if (!retention_manages(r, name))
            continue;
        x.recs[k] = r;
        x.snaps[k] = (MsRetentionSnapshot){.id = r->id,
                                           .completed_usec = r->finished_usec,
                                           .seq = r->seq,
                                           .manual = r->origin == MS_SNAPSHOT_ORIGIN_MANUAL};
        if (!r->remote && (pinned == x.n || r->seq > x.recs[pinned]->seq))
            pinned = k;
        k++;
    }
    if (pinned < x.n)
        x.snaps[pinned].pinned = true;
    int r = ms_retention_decide(rules, now, x.snaps, x.n, x.decisions, e);
    if (r < 0) {
        retention_plan_done(&x);
        return r;
    }
    for (size_t i = 0; i < x.n; i++)
        x.n_remove += !x.decisions[i].keep && !x.recs[i]->remote;
    *ret = x;
    return 0;
}

/* More removals in one pass than this (or more than half of a policy's snapshots, when that is
 * 3 or more) wait for confirmation: a normal pass removes one or two. */
#define RETENTION_BULK_MAX 10
#define RETENTION_HELD_LIST 5

static bool retention_too_much(const RetentionPlan *x) {
    return x->n_remove > RETENTION_BULK_MAX || (x->n_remove >= 3 && 2 * x->n_remove > x->n);
}

/* "2497 of 2500 snapshots (nightly-1, nightly-2, ... and 2492 more)" */
static char *retention_summary(const RetentionPlan *x) {
    char list[MS_ERROR_MESSAGE_MAX / 2] = "";
    size_t o = 0, shown = 0;
    for (size_t i = 0; i < x->n && shown < RETENTION_HELD_LIST; i++) {
        if (x->decisions[i].keep || x->recs[i]->remote)
            continue;
        int w = snprintf(list + o, sizeof(list) - o, "%s%s", shown ? ", " : "", x->recs[i]->id);
        if (w < 0 || (size_t) w >= sizeof(list) - o)
            break;
        o += (size_t) w;
        shown++;
    }
    char *s = NULL;
    if (asprintf(&s, "%zu of %zu snapshots (%s%s)", x->n_remove, x->n, list,
                 x->n_remove > shown ? ", ..." : "") < 0)
        return NULL;
    return s;
}

int manager_preview_retention(Manager *m, const ManagerPolicy *p, const MsRetentionRules *rules,
                              char **ret_summary, MsError *e) {
    RetentionPlan x;
    int r = retention_plan(m, p, rules, now_usec(), &x, e);
    if (r < 0)
        return r;
    *ret_summary = NULL;
    if (retention_too_much(&x)) {
        *ret_summary = retention_summary(&x);
        r = *ret_summary ? 1 : oom(e);
    }
    retention_plan_done(&x);
    return r;
}

/* How many of the schedule's next runs the expiry projection looks at. */
#define RETENTION_PROJECTION_TICKS 1000u

/* When each kept snapshot will go, from the schedule's next runs (best effort: without a
 * schedule, or when systemd-analyze cannot say, only MaxAge gives a date). */
static void project_expiry(const ManagerPolicy *p, const RetentionPlan *x, uint64_t now) {
    _cleanup_free_ uint64_t *ticks = NULL;
    size_t n_ticks = 0;
    if (p->settings->schedule && p->runtime->state == MS_POLICY_ACTIVE) {
        MsError ce = MS_ERROR_INIT;
        if (agent_calendar_next(p->settings->schedule, now, RETENTION_PROJECTION_TICKS, &ticks,
                                &n_ticks, &ce) < 0)
            log_debug("no expiry projection for policy '%s': %s", p->settings->name, ce.message);
    }
    _cleanup_free_ uint64_t *expire = calloc(x->n, sizeof(uint64_t));
    _cleanup_free_ unsigned *rule = calloc(x->n, sizeof(unsigned));
    MsError e = MS_ERROR_INIT;
    if (!expire || !rule ||
        ms_retention_project(&p->settings->retention, now, x->snaps, x->n, ticks, n_ticks, expire,
                             rule, &e) < 0)
        return;
    for (size_t i = 0; i < x->n; i++) {
        MsSnapshotRecord *r = x->recs[i];
        r->expire_projected_usec = x->decisions[i].keep ? expire[i] : 0;
        char text[MS_RETENTION_RULE_TEXT_MAX];
        ms_retention_rule_text(&p->settings->retention, rule[i], text);
        (void) replace_string(&r->kept_by, text[0] ? text : NULL);
    }
}

/* Decide for every completed snapshot of the policy: new expire times are recorded (a new
 * snapshot can only make the others' earlier) and the expired ones are removed from the store,
 * except those a restore or verification is reading right now (they go when it ends), and
 * except when the pass would remove too much at once without confirmation (then it is held). */
static void apply_retention_to(Manager *m, ManagerPolicy *p) {
    const char *name = p->settings->name;
    uint64_t now = now_usec();
    RetentionPlan x;
    MsError e = MS_ERROR_INIT;
    if (retention_plan(m, p, &p->settings->retention, now, &x, &e) < 0) {
        log_warning("cannot apply retention to policy '%s': %s", name, e.message);
        return;
    }
    project_expiry(p, &x, now);
    for (size_t i = 0; i < x.n; i++) {
        MsSnapshotRecord *r = x.recs[i];
        bool future = x.decisions[i].future_dated;
        if (future && !r->future_dated)
            (void) ms_event_log(MS_EVENT_SNAPSHOT_FUTURE_DATED,
                                &(MsEventFields){.policy = name, .task = r->id, .node = r->node},
                                "snapshot %s of policy %s says it completed in the future; "
                                "retention ranks it by the order it started in and does not "
                                "count it as the newest",
                                r->id, name);
        if (future != r->future_dated) {
            r->future_dated = future;
            manager_emit_snapshot_changed(m, r, MANAGER_SNAPSHOT_STATE);
        }
    }

    bool held = retention_too_much(&x) && !p->retention_confirmed;
    if (held) {
        _cleanup_free_ char *summary = retention_summary(&x);
        if (summary && (!p->retention_held || strcmp(p->retention_held, summary) != 0)) {
            (void) ms_event_log(MS_EVENT_RETENTION_HELD,
                                &(MsEventFields){.policy = name, .error = summary},
                                "retention of policy %s is held: it would remove %s at once; "
                                "confirm with mongosnapctl edit %s --force",
                                name, summary, name);
            free(p->retention_held);
            p->retention_held = TAKE_PTR(summary);
            manager_emit_policy_changed(m, p);
        }
    } else if (p->retention_held) {
        free(p->retention_held);
        p->retention_held = NULL;
        manager_emit_policy_changed(m, p);
    }
    p->retention_confirmed = false;

    for (size_t i = 0; i < x.n; i++) {
        MsSnapshotRecord *r = x.recs[i];
        /* Every node's completed snapshots count in the decision (one policy, one cluster), but
         * each node expires and removes only its own: the same view gives every node the same
         * decisions, and no record has two writers. */
        if (r->remote)
            continue;
        uint64_t expire = held && !x.decisions[i].keep ? 0 : x.decisions[i].expire_usec;
        if (r->expire_usec != expire) {
            r->expire_usec = expire;
            MsError ue = MS_ERROR_INIT;
            if (ms_catalog_update_snapshot(m->catalog, r, &ue) < 0)
                log_warning("cannot record the expire time of %s: %s", r->id, ue.message);
            manager_emit_snapshot_changed(m, r, MANAGER_SNAPSHOT_STATE);
        }
        if (held || x.decisions[i].keep || manager_snapshot_in_use(m, r->id))
            continue;
        MsError re = MS_ERROR_INIT;
        const char *why = x.decisions[i].expired_by == MS_RETENTION_EXPIRY_MAX_AGE
                              ? "older than the policy's MaxAge="
                              : "no longer selected by the policy's Keep*= rules";
        if (remove_from_store(m, r, MS_SNAPSHOT_EXPIRED, why, &re) < 0)
            log_error("retention of policy '%s': %s", name, re.message);
    }
    retention_plan_done(&x);
}

void manager_apply_retention(Manager *m, const char *policy) {
    for (size_t i = 0; i < m->n_policies; i++)
        if (!policy || strcmp(m->policies[i]->settings->name, policy) == 0)
            apply_retention_to(m, m->policies[i]);
    arm_retention_timer(m);
}

static int on_retention_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Manager *m = userdata;
    manager_apply_retention(m, NULL);
    return 0;
}

static void rebuild_done(Manager *m, void *token, const MsSnapshotRecord *r, const MsError *e) {
    MANAGER_EMIT(m, rebuild_done, token, r, e);
}

/* A rebuild whose task has stopped: the policy can no longer be rebuilt, or is rebuilt now. */

/* The task is over (worker exited, or a queued task was stopped): record the outcome, log it,
 * free the task and give its slot to the next queued one. */
static void finish_task(SnapshotTask *t, MsSnapshotState state, const char *error,
                        MsEventKind kind) {
    Manager *m = t->manager;
    ManagerPolicy *p = t->policy;
    MsSnapshotRecord *r = t->record;
    uint64_t now = now_usec();

    r->state = state;
    (void) ms_task_core_finish(&r->core, error, state == MS_SNAPSHOT_COMPLETED, now);
    if (state == MS_SNAPSHOT_COMPLETED) {
        (void) replace_string(&r->archive_key, t->archive_key);
        (void) replace_string(&r->manifest_key, t->manifest_key);
        r->point_in_time = t->point_in_time;
        if (t->parts) {
            free(r->parts);
            char *json = ms_snapshot_parts_to_json(t->parts);
            r->parts = json ? strdup(json) : NULL;
            bson_free(json);
        }
    }
    MsError e = MS_ERROR_INIT;
    if (ms_catalog_update_snapshot(m->catalog, r, &e) < 0) {
        log_error("cannot record the outcome of %s: %s; trying again every %us", r->id, e.message,
                  (unsigned) (MANAGER_CATALOG_RETRY_USEC / 1000000u));
        manager_remember_unsaved(m, r);
    }

    MsEventFields f;
    fields_for(t, &f);
    f.error = error;
    f.has_items = true;
    f.items = r->items_done;
    f.has_bytes = true;
    f.bytes = r->bytes_transferred;
    f.has_elapsed = true;
    f.elapsed_usec = manager_task_elapsed_usec(&r->core, now);
    if (state == MS_SNAPSHOT_COMPLETED)
        (void) ms_event_log(
            kind, &f, "snapshot %s completed: %" PRIu64 " documents, %" PRIu64 " bytes stored",
            r->id, r->items_done, r->bytes_transferred);
    else
        (void) ms_event_log(kind, &f, "snapshot %s %s: %s", r->id,
                            ms_snapshot_state_to_string(state), error ? error : "");

    p->runtime->last_run_usec = r->started_usec ? r->started_usec : now;
    _cleanup_free_ char *result = NULL;
    if (state == MS_SNAPSHOT_COMPLETED)
        result = strdup("completed");
    else if (asprintf(&result, "%s: %s", ms_snapshot_state_to_string(state), error ? error : "") <
             0)
        result = NULL;
    (void) replace_string(&p->runtime->last_result, result);
    if (p->runtime->state != MS_POLICY_DELETED)
        (void) save_runtime(m, p);

    p->task = NULL;
    snapshot_task_free(t);
    manager_coordination->task_finished(m, r);
    if (state == MS_SNAPSHOT_COMPLETED) {
        manager_apply_retention(m, p->settings->name);
        for (const ManagerPart *const *part = manager_parts; *part; part++)
            if ((*part)->snapshots_changed)
                (*part)->snapshots_changed(m, p->settings->name);
    }
    manager_emit_snapshot_changed(m, r, MANAGER_SNAPSHOT_STATE | MANAGER_SNAPSHOT_PROGRESS);
    manager_emit_policy_changed(m, p);
    if (p->rebuild_token)
        manager_rebuild_now(m, p);
    drop_policy_if_removed(m, p);
    manager_start_queued(m);
    manager_maybe_finish_shutdown(m);
}

static void snapshot_job_end(AgentJob *j, const AgentJobEnd *end) {
    SnapshotTask *t = MS_CONTAINER_OF(j, SnapshotTask, job);
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->snapshot_ended)
            (*part)->snapshot_ended(t->manager, t);
    switch (end->outcome) {
    case AGENT_JOB_SUCCEEDED:
        finish_task(t, MS_SNAPSHOT_COMPLETED, NULL, MS_EVENT_TASK_COMPLETED);
        break;
    case AGENT_JOB_STOPPED:
        finish_task(t, MS_SNAPSHOT_STOPPED, end->reason, MS_EVENT_TASK_STOPPED);
        break;
    case AGENT_JOB_INTERRUPTED:
        finish_task(t, MS_SNAPSHOT_INTERRUPTED, end->reason, MS_EVENT_TASK_INTERRUPTED);
        break;
    case AGENT_JOB_FAILED:
        finish_task(t, MS_SNAPSHOT_FAILED, end->reason, MS_EVENT_TASK_FAILED);
        break;
    }
}

static const AgentJobType snapshot_job_type;

/* The worker's command line for a snapshot of p; every string is owned by p or m, a buffer of
 * the caller, or static. The URI is not among them: the spawner passes it in a memfd. */
void manager_build_snapshot_args(Manager *m, const ManagerPolicy *p, const MsSnapshotRecord *rec,
                                 const char *credential, const char *key_path,
                                 char level_buf[MANAGER_NUMBER_ARG_MAX],
                                 char parallel_buf[MANAGER_NUMBER_ARG_MAX],
                                 char seq_buf[MANAGER_SEQ_ARG_MAX], const char **args) {
    const char *id = rec->id;
    const MsPolicy *s = p->settings;
    size_t k = 0;
    args[k++] = "snapshot";
    args[k++] = "--store";
    args[k++] = ms_policy_effective_store(s, m->config);
    args[k++] = "--prefix";
    args[k++] = s->name;
    args[k++] = "--name";
    args[k++] = id;
    args[k++] = "--node";
    args[k++] = m->config->node;
    /* For the manifest, so that a resync from the store alone knows its place and origin. */
    snprintf(seq_buf, MANAGER_SEQ_ARG_MAX, "%" PRIu64, rec->seq);
    args[k++] = "--seq";
    args[k++] = seq_buf;
    args[k++] = "--origin";
    args[k++] = rec->origin == MS_SNAPSHOT_ORIGIN_SCHEDULED ? "scheduled" : "manual";
    args[k++] = "--compression";
    args[k++] = ms_compression_to_string(s->compression);
    if (s->chunked) {
        args[k++] = "--format";
        args[k++] = "chunked";
    }
    if (s->compression_level > 0) {
        snprintf(level_buf, MANAGER_NUMBER_ARG_MAX, "%d", s->compression_level);
        args[k++] = "--level";
        args[k++] = level_buf;
    }
    snprintf(parallel_buf, MANAGER_NUMBER_ARG_MAX, "%u", s->parallel_collections);
    args[k++] = "--parallel";
    args[k++] = parallel_buf;
    if (!s->oplog)
        args[k++] = "--no-oplog";
    if (s->include_users)
        args[k++] = "--include-users";
    if (credential) {
        args[k++] = "--password-file";
        args[k++] = credential;
    }
    /* [Encryption] Key=: like Credential=, a path into $CREDENTIALS_DIRECTORY, never the key. */
    if (key_path) {
        args[k++] = "--key-file";
        args[k++] = key_path;
    }
    for (size_t i = 0; s->include_namespaces && s->include_namespaces[i]; i++) {
        args[k++] = "--ns-include";
        args[k++] = s->include_namespaces[i];
    }
    for (size_t i = 0; s->exclude_namespaces && s->exclude_namespaces[i]; i++) {
        args[k++] = "--ns-exclude";
        args[k++] = s->exclude_namespaces[i];
    }
    args[k] = NULL;
}

/* Where a credential is: the unit's systemd credentials, then mongosnap's credential store
 * (common/credential-store.h). The path is passed to the worker; the secret never is. */
int manager_credential_path(const char *name, char **ret, MsError *e) {
    int r = ms_credential_find(name, ret);
    if (r == -ENOMEM)
        return oom(e);
    if (r < 0)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NO_CREDENTIAL, ENOKEY,
            "credential '%s' is not available: add it with "
            "\"mongosnapctl set-credential %s\" (it goes to %s/%s and is used "
            "from the next task on), or load it with LoadCredential=%s:PATH on "
            "mongosnapd.service",
            name, name, ms_credential_store_dir(), name, name);
    return 0;
}

static int start_worker(SnapshotTask *t, MsError *e) {
    Manager *m = t->manager;
    ManagerPolicy *p = t->policy;
    _cleanup_free_ char *cred = NULL, *key_path = NULL;
    if (p->settings->credential) {
        int r = manager_credential_path(p->settings->credential, &cred, e);
        if (r < 0)
            return r;
    }
    if (p->settings->encryption_key) {
        int r = manager_credential_path(p->settings->encryption_key, &key_path, e);
        if (r < 0)
            return r;
    }
    /* The agents beside the members of a cluster's shards take its parts (a replica set's
     * snapshot has no use for them and leaves them alone). */
    _cleanup_(ms_strv_freep) char **agents = manager_coordination->part_agents(m);
    size_t n_agents = ms_strv_length(agents);
    _cleanup_free_ const char **args =
        calloc(MANAGER_SNAPSHOT_ARGS_MAX + 6 + 2 * n_agents +
                   2 * (ms_strv_length(p->settings->include_namespaces) +
                        ms_strv_length(p->settings->exclude_namespaces)),
               sizeof(char *));
    if (!args)
        return oom(e);
    char level_buf[MANAGER_NUMBER_ARG_MAX], parallel_buf[MANAGER_NUMBER_ARG_MAX],
        seq_buf[MANAGER_SEQ_ARG_MAX], timeout_buf[MANAGER_NUMBER_ARG_MAX];
    manager_build_snapshot_args(m, p, t->record, cred, key_path, level_buf, parallel_buf, seq_buf,
                                args);
    if (n_agents > 0) {
        size_t k = 0;
        while (args[k])
            k++;
        for (size_t i = 0; i < n_agents; i++) {
            args[k++] = "--part-agent";
            args[k++] = agents[i];
        }
        args[k++] = "--node-priority";
        args[k++] = ms_node_priority_to_string(p->settings->node_priority);
        /* A part's process silent for a lease is given up, as a node that stops renewing. */
        snprintf(timeout_buf, sizeof(timeout_buf), "%u", m->config->cluster_lease_sec);
        args[k++] = "--part-timeout";
        args[k++] = timeout_buf;
        args[k] = NULL;
    }
    AgentTaskSpec spec = {
        .worker_path = m->config->worker_path,
        .args = args,
        .uri = p->settings->source,
    };
    int r = agent_job_spawn(&t->job, &snapshot_job_type, m->event, &spec, e);
    if (r < 0)
        return r;

    MsSnapshotRecord *rec = t->record;
    rec->state = MS_SNAPSHOT_RUNNING;
    rec->started_usec = now_usec();
    MsError ce = MS_ERROR_INIT;
    if (ms_catalog_update_snapshot(m->catalog, rec, &ce) < 0)
        log_warning("cannot record that %s started: %s", rec->id, ce.message);
    progress_throttle_init(&t->progress, m->event, flush_progress, emit_progress, t);
    MsEventFields f;
    fields_for(t, &f);
    (void) ms_event_log(MS_EVENT_TASK_STARTED, &f, "snapshot %s started (worker %d)", rec->id,
                        (int) agent_task_pid(t->job.worker));
    manager_emit_snapshot_changed(m, rec, MANAGER_SNAPSHOT_STATE);
    return 0;
}

static int snapshot_job_start(AgentJob *j, MsError *e) {
    return start_worker(MS_CONTAINER_OF(j, SnapshotTask, job), e);
}

static void snapshot_job_fail_to_start(AgentJob *j, const char *message) {
    finish_task(MS_CONTAINER_OF(j, SnapshotTask, job), MS_SNAPSHOT_FAILED, message,
                MS_EVENT_TASK_FAILED);
}

static const AgentJobType snapshot_job_type = {
    .name = "snapshot",
    .start = snapshot_job_start,
    .fail_to_start = snapshot_job_fail_to_start,
    .on_message = snapshot_job_message,
    .on_end = snapshot_job_end,
};

void manager_start_queued(Manager *m) {
    /* The oldest queued task first, whatever its kind (agent-job.c). */
    if (!m->stopping)
        agent_queue_start(&m->queue, m->config->max_concurrent_tasks);
}

static int new_snapshot_id(Manager *m, const char *policy, char ret[SNAPSHOT_ID_MAX]) {
    char stamp[MS_ISO8601_MAX];
    ms_format_compact(now_usec(), stamp);
    for (unsigned i = 1; i <= SNAPSHOT_ID_ATTEMPTS; i++) {
        if (i == 1)
            snprintf(ret, SNAPSHOT_ID_MAX, "%s-%s", policy, stamp);
        else
            snprintf(ret, SNAPSHOT_ID_MAX, "%s-%s-%u", policy, stamp, i);
        if (!find_snapshot(m, ret))
            return 0;
    }
    return -EEXIST;
}

/* What the worker cannot do is refused up front rather than silently left out. Encryption
 * (Key=) is done by the worker (--key-file, AES-256-GCM); it knows no other cipher. */
static int check_policy_supported(const MsPolicy *s, MsError *e) {
    if (s->encryption_key && s->cipher != MS_CIPHER_AES_256_GCM)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
            "policy '%s' asks for encryption with cipher '%s', which this "
            "mongosnap cannot do; use Cipher=aes-256-gcm",
            s->name, ms_cipher_to_string(s->cipher) ? ms_cipher_to_string(s->cipher) : "?");
    return 0;
}

int manager_check_snapshot(Manager *m, ManagerPolicy *p, MsError *e) {
    const MsPolicy *s = p->settings;
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    if (p->task)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_BUSY, EBUSY,
            "policy '%s' already has a snapshot in progress (%s); wait for it or "
            "stop it with Stop()",
            s->name, p->task->record->id);
    if (p->runtime->state == MS_POLICY_STOPPED)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_POLICY_STOPPED, EPERM,
            "policy '%s' is stopped; start it with Start() (mongosnapctl start "
            "%s) first",
            s->name, s->name);
    return check_runnable(m, s, e);
}

/* What the policy's settings need from this machine to run: a store, supported options, its
 * credentials, a password for a Source= that names a user. */
static int check_runnable(Manager *m, const MsPolicy *s, MsError *e) {
    char user[128];
    if (!s->credential && ms_uri_wants_password(s->source, user, sizeof(user)))
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NO_CREDENTIAL, ENOKEY,
            "policy '%s': Source= names user '%s' but the policy has no "
            "Credential=: store the password with \"mongosnapctl set-credential "
            "NAME\" and add Credential=NAME to the policy (mongosnapctl edit %s "
            "Credential=NAME)",
            s->name, user, s->name);
    if (!ms_policy_effective_store(s, m->config))
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NOT_CONFIGURED, ENXIO,
            "policy '%s' has no store: set Store= in its file or DefaultStore= "
            "in the agent configuration",
            s->name);
    int r = check_policy_supported(s, e);
    if (r < 0)
        return r;
    if (s->credential) {
        /* The password goes where Source= says, and only in a way that does not give it away. */
        r = ms_uri_check_auth(s->source, MS_URI_AUTH_SOURCE, false, e);
        if (r < 0) {
            ms_error_prefix(e, "policy '%s': Source=: ", s->name);
            return r;
        }
        _cleanup_free_ char *path = NULL;
        r = manager_credential_path(s->credential, &path, e);
        if (r < 0)
            return r;
    }
    if (s->encryption_key) {
        _cleanup_free_ char *path = NULL;
        r = manager_credential_path(s->encryption_key, &path, e);
        if (r < 0)
            return r;
    }
    return 0;
}

uint64_t manager_policy_next_run(ManagerPolicy *p) {
    uint64_t now = now_usec();
    if (!p->settings->schedule || p->runtime->state != MS_POLICY_ACTIVE || p->schedule_problem)
        return 0;
    if (p->runtime->next_run_usec > now)
        return p->runtime->next_run_usec;
    if (p->next_run_computed_usec > now)
        return p->next_run_computed_usec;
    _cleanup_free_ uint64_t *ticks = NULL;
    size_t n = 0;
    MsError e = MS_ERROR_INIT;
    if (agent_calendar_next(p->settings->schedule, now, 1, &ticks, &n, &e) < 0 || n == 0) {
        log_debug("no next run for policy '%s': %s", p->settings->name, e.message);
        return 0;
    }
    p->next_run_computed_usec = ticks[0];
    return ticks[0];
}

bool manager_store_is_configured(const Manager *m, const char *location) {
    if (!location || !*location)
        return true; /* the default */
    if (m->config->default_store && strcmp(m->config->default_store, location) == 0)
        return true;
    for (size_t i = 0; i < m->n_policies; i++)
        if (m->policies[i]->settings->store &&
            strcmp(m->policies[i]->settings->store, location) == 0)
            return true;
    return false;
}

int manager_new_snapshot_id(Manager *m, const char *policy, char ret[SNAPSHOT_ID_MAX], MsError *e) {
    if (new_snapshot_id(m, policy, ret) < 0)
        return ms_error_set_kind(e, MS_ERROR_KIND_EXISTS, EEXIST,
                                 "too many snapshots of policy '%s' this second", policy);
    return 0;
}

void manager_insert_snapshot_record(Manager *m, MsSnapshotRecord *r) {
    /* Oldest first: another node's records arrive late, so find the place by creation time. */
    size_t at = m->n_snapshots;
    while (at > 0 && m->snapshots[at - 1]->created_usec > r->created_usec)
        at--;
    memmove(m->snapshots + at + 1, m->snapshots + at,
            (m->n_snapshots - at) * sizeof(*m->snapshots));
    m->snapshots[at] = r;
    m->n_snapshots++;
}

uint64_t manager_policy_max_seq(const Manager *m, const ManagerPolicy *p) {
    uint64_t max = p->runtime->last_seq;
    for (size_t i = 0; i < m->n_snapshots; i++)
        if (strcmp(m->snapshots[i]->policy, p->settings->name) == 0)
            max = MS_MAX(max, m->snapshots[i]->seq);
    return max;
}

int manager_enqueue_snapshot(Manager *m, ManagerPolicy *p, const char *id, MsSnapshotOrigin origin,
                             uint64_t seq, const MsSnapshotRecord **ret_record, MsError *e) {
    const MsPolicy *s = p->settings;
    const char *store = ms_policy_effective_store(s, m->config);
    /* A snapshot another node assigned to this one is listed already, as that node's record
     * (remote): it becomes ours now. */
    MsSnapshotRecord *existing = find_snapshot(m, id);
    if (existing && !existing->remote)
        return ms_error_set_kind(e, MS_ERROR_KIND_EXISTS, EEXIST, "snapshot %s exists already", id);
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *rec = calloc(1, sizeof(*rec));
    if (!rec || !(rec->id = strdup(id)) || !(rec->policy = strdup(s->name)) ||
        !(rec->node = strdup(m->config->node)) || !(rec->store = strdup(store)))
        return oom(e);
    /* The location is kept as written: the configuration refuses user info and unknown query
     * options in it, so it holds no secret, and restores and verifications reopen it. */
    rec->state = MS_SNAPSHOT_QUEUED;
    rec->created_usec = existing ? existing->created_usec : now_usec();
    rec->origin = origin;
    rec->seq = seq                         ? seq
               : existing && existing->seq ? existing->seq
                                           : manager_policy_max_seq(m, p) + 1;
    int r = ms_catalog_insert_snapshot(m->catalog, rec, e);
    if (r < 0)
        return r;
    if (!existing) {
        MsSnapshotRecord **list = realloc(m->snapshots, (m->n_snapshots + 1) * sizeof(*list));
        if (!list)
            return oom(e);
        m->snapshots = list;
    }

    SnapshotTask *t = calloc(1, sizeof(*t));
    if (!t)
        return oom(e);
    t->manager = m;
    t->policy = p;
    if (existing) {
        /* Same object, so the bus object and any waiting client follow it. */
        MsSnapshotRecord tmp = *existing;
        *existing = *rec;
        *rec = tmp;
        t->record = existing;
    } else {
        t->record = TAKE_PTR(rec);
        manager_insert_snapshot_record(m, t->record);
    }
    p->task = t;
    agent_queue_add(&m->queue, &t->job, &snapshot_job_type, t->record->created_usec);
    if (t->record->seq > p->runtime->last_seq) {
        p->runtime->last_seq = t->record->seq;
        (void) save_runtime(m, p);
    }

    MsEventFields f;
    fields_for(t, &f);
    (void) ms_event_log(MS_EVENT_TASK_QUEUED, &f, "snapshot %s of policy %s queued", t->record->id,
                        s->name);
    if (existing)
        manager_emit_snapshot_changed(m, t->record, MANAGER_SNAPSHOT_STATE);
    else
        MANAGER_EMIT(m, snapshot_added, t->record);
    manager_coordination->record_changed(m, t->record);
    const MsSnapshotRecord *result = t->record;
    manager_start_queued(m);
    /* manager_start_queued() may have failed and finished the task; the record stays listed. */
    manager_emit_policy_changed(m, p);
    if (ret_record)
        *ret_record = result;
    return 0;
}

/* A snapshot that could not even start (a missing credential, no store, a refused source) is
 * a failed task all the same: it gets a record with the reason, an Event Log entry and the
 * policy's last result, so that a timer's failure shows where operators look. Refusals that
 * are not failures (a task already running, the policy stopped, the agent stopping) do not. */
static bool refusal_is_failure(int r, const MsError *e) {
    if (r == -ENOMEM)
        return false;
    switch (e ? e->kind : MS_ERROR_KIND_NONE) {
    case MS_ERROR_KIND_BUSY:
    case MS_ERROR_KIND_POLICY_STOPPED:
    case MS_ERROR_KIND_SHUTTING_DOWN:
        return false;
    default:
        return true;
    }
}

static void record_refused_snapshot(Manager *m, ManagerPolicy *p, bool scheduled, MsError *e) {
    char id[SNAPSHOT_ID_MAX];
    MsError ie = MS_ERROR_INIT;
    const MsPolicy *s = p->settings;
    refresh_problem(p); /* a credential may have gone since it was last checked */
    if (manager_new_snapshot_id(m, s->name, id, &ie) < 0)
        return;
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *rec = calloc(1, sizeof(*rec));
    const char *store = ms_policy_effective_store(s, m->config);
    uint64_t now = now_usec();
    if (!rec || !(rec->id = strdup(id)) || !(rec->policy = strdup(s->name)) ||
        !(rec->node = strdup(m->config->node)) || (store && !(rec->store = strdup(store))) ||
        !(rec->error = strdup(e->message)))
        return;
    rec->state = MS_SNAPSHOT_FAILED;
    rec->created_usec = rec->started_usec = rec->finished_usec = now;
    rec->origin = scheduled ? MS_SNAPSHOT_ORIGIN_SCHEDULED : MS_SNAPSHOT_ORIGIN_MANUAL;
    rec->seq = manager_policy_max_seq(m, p) + 1;
    MsSnapshotRecord **list = realloc(m->snapshots, (m->n_snapshots + 1) * sizeof(*list));
    if (!list)
        return;
    m->snapshots = list;
    if (ms_catalog_insert_snapshot(m->catalog, rec, &ie) < 0) {
        log_warning("cannot record the failed snapshot of policy '%s': %s", s->name, ie.message);
        return;
    }
    MsSnapshotRecord *r = TAKE_PTR(rec);
    manager_insert_snapshot_record(m, r);
    p->runtime->last_seq = MS_MAX(p->runtime->last_seq, r->seq);
    p->runtime->last_run_usec = now;
    _cleanup_free_ char *result = NULL;
    if (asprintf(&result, "failed: %s", e->message) >= 0)
        (void) replace_string(&p->runtime->last_result, result);
    (void) save_runtime(m, p);
    (void) ms_event_log(
        MS_EVENT_TASK_FAILED,
        &(MsEventFields){
            .policy = s->name, .task = id, .node = m->config->node, .error = e->message},
        "snapshot %s of policy %s could not start: %s", id, s->name, e->message);
    MANAGER_EMIT(m, snapshot_added, r);
    manager_coordination->record_changed(m, r);
    manager_emit_policy_changed(m, p);
    ms_error_prefix(e, "snapshot %s failed: ", id);
}

int manager_take_snapshot_ex(Manager *m, ManagerPolicy *p, bool scheduled,
                             const MsSnapshotRecord **ret_record, MsError *e) {
    if (scheduled && m->cluster && p->task) {
        /* This node runs the tick's snapshot already (another node's timer claimed it for this
         * one, or this timer fired late): follow it, as the other nodes' timers do. */
        if (ret_record)
            *ret_record = p->task->record;
        return 0;
    }
    int r = manager_check_snapshot(m, p, e);
    if (r < 0) {
        if (refusal_is_failure(r, e) && !m->stopping)
            record_refused_snapshot(m, p, scheduled, e);
        return r;
    }
    char id[SNAPSHOT_ID_MAX];
    r = manager_new_snapshot_id(m, p->settings->name, id, e);
    if (r < 0)
        return r;
    if (m->cluster)
        return manager_coordination->take_snapshot(m, p, id, scheduled, ret_record, e);
    return manager_enqueue_snapshot(
        m, p, id, scheduled ? MS_SNAPSHOT_ORIGIN_SCHEDULED : MS_SNAPSHOT_ORIGIN_MANUAL, 0,
        ret_record, e);
}

int manager_take_snapshot(Manager *m, ManagerPolicy *p, const MsSnapshotRecord **ret_record,
                          MsError *e) {
    return manager_take_snapshot_ex(m, p, false, ret_record, e);
}

static void stop_task(SnapshotTask *t, const char *reason, bool on_request) {
    if (!t->job.worker) {
        if (on_request)
            finish_task(t, MS_SNAPSHOT_STOPPED, reason, MS_EVENT_TASK_STOPPED);
        else
            finish_task(t, MS_SNAPSHOT_INTERRUPTED, reason, MS_EVENT_TASK_INTERRUPTED);
        return;
    }
    (void) agent_job_stop(&t->job, reason, on_request, MANAGER_STOP_GRACE_USEC);
}

int manager_stop_policy_here(Manager *m, ManagerPolicy *p, MsError *e) {
    bool changed = p->runtime->state != MS_POLICY_STOPPED;
    if (changed) {
        p->runtime->state = MS_POLICY_STOPPED;
        int r = ms_catalog_set_policy(m->catalog, p->runtime, e);
        if (r < 0)
            return r;
        (void) ms_event_log(MS_EVENT_POLICY_STOPPED,
                            &(MsEventFields){.policy = p->settings->name, .node = m->config->node},
                            "policy %s stopped", p->settings->name);
    }
    if (p->task)
        stop_task(p->task, STOPPED_ON_REQUEST, true);
    if (changed)
        manager_emit_policy_changed(m, p);
    return 0;
}

int manager_start_policy_here(Manager *m, ManagerPolicy *p, MsError *e) {
    if (p->runtime->state == MS_POLICY_ACTIVE)
        return 0;
    p->runtime->state = MS_POLICY_ACTIVE;
    int r = ms_catalog_set_policy(m->catalog, p->runtime, e);
    if (r < 0)
        return r;
    (void) ms_event_log(MS_EVENT_POLICY_STARTED,
                        &(MsEventFields){.policy = p->settings->name, .node = m->config->node},
                        "policy %s started", p->settings->name);
    manager_emit_policy_changed(m, p);
    return 0;
}

void manager_stop_task_lost_lease(Manager *m, ManagerPolicy *p) {
    if (p->task)
        stop_task(p->task, LOST_THE_LEASE, false);
}

int manager_stop_policy(Manager *m, ManagerPolicy *p, MsError *e) {
    int r = manager_stop_policy_here(m, p, e);
    if (r < 0)
        return r;
    /* The other nodes stop its schedule too, and the node running its task stops the task. */
    return manager_coordination->set_stopped(m, p, true, e);
}

int manager_start_policy(Manager *m, ManagerPolicy *p, MsError *e) {
    int r = manager_start_policy_here(m, p, e);
    if (r < 0)
        return r;
    return manager_coordination->set_stopped(m, p, false, e);
}

/* Edits (or a new policy's settings) applied with the checks a file gets; whatever the checks
 * call a refusal, it is the caller's to fix (EINVAL). */
static int apply_settings(MsPolicy *q, const ManagerPolicyEdit *edits, size_t n, MsError *e) {
    for (size_t i = 0; i < n; i++)
        if (ms_policy_apply_edit(q, edits[i].key, edits[i].value, e) < 0) {
            e->code = EINVAL;
            return -EINVAL;
        }
    if (ms_policy_check(q, e) < 0) {
        e->code = EINVAL;
        return -EINVAL;
    }
    return 0;
}

static bool retention_rules_equal(const MsRetentionRules *a, const MsRetentionRules *b) {
    return a->keep_last == b->keep_last && a->keep_daily == b->keep_daily &&
           a->keep_weekly == b->keep_weekly && a->keep_monthly == b->keep_monthly &&
           a->keep_manual == b->keep_manual && a->max_age_usec == b->max_age_usec;
}

int manager_edit_policy(Manager *m, ManagerPolicy *p, const ManagerPolicyEdit *edits, size_t n,
                        MsError *e) {
    return manager_edit_policy_ex(m, p, edits, n, false, e);
}

int manager_edit_policy_ex(Manager *m, ManagerPolicy *p, const ManagerPolicyEdit *edits, size_t n,
                           bool force, MsError *e) {
    if (n == 0 && !force)
        return ms_error_set(e, EINVAL, "no settings to change were given");
    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    int r = ms_policy_dup(p->settings, &q, e);
    if (r < 0)
        return r;
    r = apply_settings(q, edits, n, e);
    if (r < 0)
        return r;
    /* Checked as systemd will read it, before anything changes: a schedule systemd refuses
     * would make the timer vanish while the policy looks fine. */
    if (q->schedule &&
        (!p->settings->schedule || strcmp(q->schedule, p->settings->schedule) != 0)) {
        r = agent_calendar_check(q->schedule, e);
        if (r < 0)
            return r;
    }
    /* Destructive edits are previewed: rules that would remove too much at once need force. */
    if (!force && !retention_rules_equal(&q->retention, &p->settings->retention)) {
        _cleanup_free_ char *summary = NULL;
        r = manager_preview_retention(m, p, &q->retention, &summary, e);
        if (r < 0)
            return r;
        if (r > 0)
            return ms_error_set_kind(e, MS_ERROR_KIND_NEEDS_FORCE, EEXIST,
                                     "with these settings, retention would remove %s of policy "
                                     "'%s' at once; nothing was changed: say so with --force "
                                     "(D-Bus: EditWithOptions with force) to go ahead",
                                     summary, p->settings->name);
    }
    if (n > 0) {
        r = ms_policy_write_atomic(m->config->policy_directory, q, e);
        if (r < 0)
            return r;
        ms_policy_free(p->settings);
        p->settings = TAKE_PTR(q);
        refresh_problem(p);
    }
    if (force)
        p->retention_confirmed = true;
    manager_apply_retention(m, p->settings->name);
    for (size_t i = 0; i < n; i++)
        (void) ms_event_log(MS_EVENT_POLICY_EDITED,
                            &(MsEventFields){.policy = p->settings->name, .node = m->config->node},
                            "policy %s edited: %s=%s", p->settings->name, edits[i].key,
                            edits[i].value);
    manager_emit_policy_changed(m, p);
    return 0;
}

void manager_rebuild_now(Manager *m, ManagerPolicy *p) {
    void *token = TAKE_PTR(p->rebuild_token);
    MsError e = MS_ERROR_INIT;
    if (m->stopping) {
        ms_error_set_kind(&e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                          "the agent is shutting down; rebuild policy '%s' once it is "
                          "back",
                          p->settings->name);
        rebuild_done(m, token, NULL, &e);
        return;
    }
    if (p->removed) {
        ms_error_set(&e, ENOENT, "policy '%s' was deleted before it could be rebuilt",
                     p->settings->name);
        rebuild_done(m, token, NULL, &e);
        return;
    }

    /* In-flight writes of the policy's earlier tasks (killed workers, crashes) leave temporary
     * objects; no task of the policy runs now, so every one under its prefix is stale. */
    unsigned removed = 0;
    const char *store = ms_policy_effective_store(p->settings, m->config);
    if (store) {
        _cleanup_(ms_storage_freep) MsStorage *s = NULL;
        MsError se = MS_ERROR_INIT;
        /* The policy's directory ("nightly/", not every name starting "nightly"); the oplog
         * follower keeps writing its slices meanwhile, so their directory is left alone. */
        _cleanup_free_ char *dir = NULL, *slice_dir = ms_slice_dir(p->settings->name);
        if (asprintf(&dir, "%s/", p->settings->name) < 0 || !slice_dir)
            log_warning("rebuilding policy '%s': out of memory", p->settings->name);
        else if (ms_storage_open(store, &s, &se) < 0 ||
                 s->ops->clean_stale(s, dir, slice_dir, &removed, &se) < 0)
            log_warning("rebuilding policy '%s': cannot clean up %s: %s", p->settings->name, store,
                        se.message);
    }
    (void) ms_event_log(MS_EVENT_POLICY_REBUILT,
                        &(MsEventFields){.policy = p->settings->name, .node = m->config->node},
                        "policy %s rebuilt: %u unfinished object(s) removed from the store, a "
                        "fresh snapshot follows",
                        p->settings->name, removed);
    const MsSnapshotRecord *rec = NULL;
    if (manager_take_snapshot(m, p, &rec, &e) < 0)
        rec = NULL;
    rebuild_done(m, token, rec, &e);
}

int manager_rebuild_policy(Manager *m, ManagerPolicy *p, void *token, MsError *e) {
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    if (p->rebuild_token)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_BUSY, EBUSY,
            "policy '%s' is already being rebuilt; wait for that rebuild to end",
            p->settings->name);
    if (p->runtime->state != MS_POLICY_ACTIVE) {
        p->runtime->state = MS_POLICY_ACTIVE;
        int r = ms_catalog_set_policy(m->catalog, p->runtime, e);
        if (r < 0)
            return r;
        manager_emit_policy_changed(m, p);
    }
    if (!p->task) {
        /* Another node runs the policy's task: ask it to stop; the heartbeat that finds the
         * lease free goes on with the rebuild (agent-cluster.c). */
        _cleanup_free_ char *node = NULL, *task = NULL;
        int r = manager_coordination->lease_elsewhere(m, p, &node, &task, e);
        if (r < 0)
            return r;
        if (node) {
            r = manager_coordination->forward(m, "cancel", node, p->settings->name, task, e);
            if (r < 0)
                return r;
            p->rebuild_token = token;
            return 0;
        }
    }
    p->rebuild_token = token;
    if (p->task)
        /* The rebuild goes on in finish_task() once the worker has exited (at once for a
         * queued task). */
        stop_task(p->task, STOPPED_FOR_REBUILD, true);
    else
        manager_rebuild_now(m, p);
    return 0;
}

int manager_cancel_snapshot(Manager *m, const char *id, MsError *e) {
    for (size_t i = 0; i < m->n_policies; i++) {
        SnapshotTask *t = m->policies[i]->task;
        if (t && strcmp(t->record->id, id) == 0) {
            stop_task(t, STOPPED_ON_REQUEST, true);
            return 0;
        }
    }
    const MsSnapshotRecord *r = find_snapshot(m, id);
    if (r && r->remote && (r->state == MS_SNAPSHOT_QUEUED || r->state == MS_SNAPSHOT_RUNNING))
        return manager_coordination->forward(m, "cancel", r->node, r->policy, id, e);
    return ms_error_set_kind(e, MS_ERROR_KIND_NOT_RUNNING, ESRCH,
                             "snapshot %s is not queued or running; nothing to cancel", id);
}

int manager_delete_policy(Manager *m, ManagerPolicy *p, bool purge_store, MsError *e) {
    const char *name = p->settings->name;
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%s%s", m->config->policy_directory, name, MS_POLICY_FILE_SUFFIX) < 0)
        return oom(e);
    if (unlink(path) < 0 && errno != ENOENT)
        return ms_error_set(e, errno, "cannot remove %s: %s", path, strerror(errno));

    p->runtime->state = MS_POLICY_DELETED;
    int r = ms_catalog_set_policy(m->catalog, p->runtime, e);
    if (r < 0)
        return r;
    /* As the operators' contract says: a policy's local backup data goes with it; what was
     * uploaded to a remote store stays unless a purge is asked for. */
    for (size_t i = 0; i < m->n_snapshots; i++) {
        MsSnapshotRecord *sr = m->snapshots[i];
        if (strcmp(sr->policy, name) != 0 || sr->state != MS_SNAPSHOT_COMPLETED || sr->remote ||
            manager_snapshot_in_use(m, sr->id))
            continue;
        bool local = sr->store && manager_store_is_local(sr->store);
        if (!local && !purge_store)
            continue;
        MsError pe = MS_ERROR_INIT;
        if (remove_from_store(m, sr, MS_SNAPSHOT_DELETED,
                              local ? "its policy was deleted (local data goes with it)"
                                    : "its policy was deleted with purge",
                              &pe) < 0)
            log_error("deleting policy '%s': %s", name, pe.message);
    }
    /* What stays (remote snapshots kept, those being read) no longer belongs to a policy:
     * no later policy of the same name takes it over in its retention. */
    uint64_t now = now_usec();
    for (size_t i = 0; i < m->n_snapshots; i++) {
        MsSnapshotRecord *sr = m->snapshots[i];
        if (strcmp(sr->policy, name) != 0 || sr->remote || sr->detached_usec)
            continue;
        sr->detached_usec = now;
        sr->expire_usec = 0;
        free(sr->kept_by);
        sr->kept_by = NULL;
        sr->expire_projected_usec = 0;
        MsError de = MS_ERROR_INIT;
        if (ms_catalog_update_snapshot(m->catalog, sr, &de) < 0)
            log_warning("cannot record that %s no longer belongs to policy '%s': %s", sr->id, name,
                        de.message);
        manager_emit_snapshot_changed(m, sr, MANAGER_SNAPSHOT_STATE);
        manager_coordination->record_changed(m, sr);
    }
    (void) ms_event_log(
        MS_EVENT_POLICY_DELETED, &(MsEventFields){.policy = name, .node = m->config->node},
        "policy %s deleted%s", name,
        purge_store ? " with its stored snapshots" : "; snapshots in remote stores kept");
    p->removed = true;
    emit_policy_removed(m, p);
    /* Either way p goes: now, or when its worker has exited (finish_task drops it). */
    if (p->task)
        stop_task(p->task, "the policy was deleted", true);
    else
        drop_policy_if_removed(m, p);
    return 0;
}

int manager_delete_snapshot(Manager *m, const char *id, MsError *e) {
    MsSnapshotRecord *r = find_snapshot(m, id);
    if (!r)
        return ms_error_set(e, ENOENT, "no snapshot '%s'", id);
    if (r->remote)
        /* Its record and its removal belong to the node that took it. */
        return manager_coordination->forward(m, "delete-snapshot", r->node, r->policy, id, e);
    switch (r->state) {
    case MS_SNAPSHOT_QUEUED:
    case MS_SNAPSHOT_RUNNING:
        return ms_error_set_kind(e, MS_ERROR_KIND_BUSY, EBUSY,
                                 "snapshot %s is %s; cancel it first (mongosnapctl cancel %s)", id,
                                 ms_snapshot_state_to_string(r->state), id);
    case MS_SNAPSHOT_EXPIRED:
    case MS_SNAPSHOT_DELETED:
        return ms_error_set(e, EALREADY, "snapshot %s is already %s; nothing to delete", id,
                            ms_snapshot_state_to_string(r->state));
    default:
        break;
    }
    if (manager_snapshot_in_use(m, id))
        return ms_error_set_kind(
            e, MS_ERROR_KIND_BUSY, EBUSY,
            "snapshot %s is being restored or verified; cancel that task or wait "
            "for it to end",
            id);
    return remove_from_store(m, r, MS_SNAPSHOT_DELETED, "deleted on request", e);
}

int manager_create_policy(Manager *m, const char *name, const ManagerPolicyEdit *settings, size_t n,
                          ManagerPolicy **ret_policy, MsError *e) {
    if (!ms_policy_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "'%s' is not a valid policy name: use 1 to %d letters, digits, '_', "
                            "'-' or '.', starting with a letter or digit",
                            name, MS_NAME_MAX);
    if (manager_find_policy(m, name))
        return ms_error_set_kind(e, MS_ERROR_KIND_EXISTS, EEXIST,
                                 "a policy named '%s' exists already; change it with Edit", name);
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%s%s", m->config->policy_directory, name, MS_POLICY_FILE_SUFFIX) < 0)
        return oom(e);
    if (access(path, F_OK) == 0)
        return ms_error_set_kind(e, MS_ERROR_KIND_EXISTS, EEXIST,
                                 "%s exists but did not load (see PolicyErrors); fix or remove it "
                                 "first",
                                 path);
    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    int r = ms_policy_new(name, &q, e);
    if (r < 0)
        return r;
    r = apply_settings(q, settings, n, e);
    if (r < 0)
        return r;
    if (q->schedule) {
        r = agent_calendar_check(q->schedule, e);
        if (r < 0)
            return r;
    }
    if (mkdir(m->config->policy_directory, 0755) < 0 && errno != EEXIST)
        return ms_error_set(e, errno, "cannot create %s: %s", m->config->policy_directory,
                            strerror(errno));
    r = ms_policy_write_atomic(m->config->policy_directory, q, e);
    if (r < 0)
        return r;
    r = manager_reload_policies(m, e);
    if (r < 0)
        return r;
    ManagerPolicy *p = manager_find_policy(m, name);
    if (!p)
        return ms_error_set(e, EIO, "%s was written but did not load; see PolicyErrors", path);
    (void) ms_event_log(MS_EVENT_POLICY_CREATED,
                        &(MsEventFields){.policy = name, .node = m->config->node},
                        "policy %s created", name);
    /* manager_reload_policies() announced it. */
    if (ret_policy)
        *ret_policy = p;
    return 0;
}

static void forget_stores(Manager *m) {
    for (size_t i = 0; i < m->n_stores; i++) {
        free(m->store_locations[i]);
        ms_storage_free(m->stores[i]);
    }
    free(m->store_locations);
    free(m->stores);
    m->store_locations = NULL;
    m->stores = NULL;
    m->n_stores = 0;
}

static int cached_store(Manager *m, const char *location, MsStorage **ret, MsError *e) {
    for (size_t i = 0; i < m->n_stores; i++)
        if (strcmp(m->store_locations[i], location) == 0) {
            *ret = m->stores[i];
            return 0;
        }
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    int r = ms_storage_open(location, &s, e);
    if (r < 0)
        return r;
    char **locs = realloc(m->store_locations, (m->n_stores + 1) * sizeof(*locs));
    if (!locs)
        return oom(e);
    m->store_locations = locs;
    MsStorage **stores = realloc(m->stores, (m->n_stores + 1) * sizeof(*stores));
    if (!stores)
        return oom(e);
    m->stores = stores;
    if (!(m->store_locations[m->n_stores] = strdup(location)))
        return oom(e);
    m->stores[m->n_stores++] = s;
    *ret = TAKE_PTR(s);
    return 0;
}

int manager_snapshot_download_url(Manager *m, const MsSnapshotRecord *r, uint64_t expires_usec,
                                  char **ret_url, MsError *e) {
    if (r->state != MS_SNAPSHOT_COMPLETED || !r->archive_key || !r->store)
        return ms_error_set(e, ENOENT,
                            "snapshot %s is %s: only completed snapshots have a "
                            "download address",
                            r->id, ms_snapshot_state_to_string(r->state));
    /* A chunked snapshot is an index and chunks: no single object anyone could download. */
    size_t n = strlen(r->archive_key), sfx = strlen(MONGOSNAP_INDEX_SUFFIX);
    if (n > sfx && strcmp(r->archive_key + n - sfx, MONGOSNAP_INDEX_SUFFIX) == 0)
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
                                 "snapshot %s is chunked (Format=chunked): it has no single object "
                                 "to download; export it as a mongodump archive with "
                                 "\"mongosnapctl export %s > %s.archive\"",
                                 r->id, r->id, r->id);
    if (manager_snapshot_is_cluster(r))
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
                                 "snapshot %s is a cluster snapshot (one part per shard and the "
                                 "config data): it has no single object to download; restore it "
                                 "into a sharded cluster, or a part into a replica set",
                                 r->id);
    /* A local store has none; say so without opening anything. */
    if (manager_store_is_local(r->store))
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
                                 "snapshot %s is in a local store, which has no download address; "
                                 "copy %s from the store's directory",
                                 r->id, r->archive_key);
    MsStorage *s = NULL;
    int k = cached_store(m, r->store, &s, e);
    if (k < 0)
        return k;
    return ms_storage_download_url(s, r->archive_key, expires_usec, ret_url, e);
}

int manager_flush(Manager *m, MsError *e) {
    for (size_t i = 0; i < m->n_policies; i++)
        if (m->policies[i]->task && m->policies[i]->task->job.worker)
            progress_throttle_flush(&m->policies[i]->task->progress);
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->flush)
            (*part)->flush(m);
    return 0;
}

void manager_format_status(const Manager *m, char *buf, size_t size) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_policies; i++)
        if (!m->policies[i]->removed)
            n++;
    int len = snprintf(buf, size, "%zu %s", n, n == 1 ? "policy" : "policies");
    if (m->n_policy_errors > 0 && len >= 0 && (size_t) len < size)
        len += snprintf(buf + len, size - (size_t) len, " (%zu with errors)", m->n_policy_errors);
    bool any = false;
    for (size_t i = 0; i < m->n_policies && len >= 0 && (size_t) len < size; i++) {
        const SnapshotTask *t = m->policies[i]->task;
        if (!t)
            continue;
        len += snprintf(buf + len, size - (size_t) len, "%s %s: snapshot %s", any ? "," : ";",
                        m->policies[i]->settings->name, t->job.worker ? "" : "queued");
        if (t->job.worker && len >= 0 && (size_t) len < size)
            len += snprintf(buf + len, size - (size_t) len, "%.0f %%", t->record->progress_pct);
        any = true;
    }
    for (size_t i = 0; i < m->n_read_tasks && len >= 0 && (size_t) len < size; i++) {
        const ReadTask *t = m->read_tasks[i];
        len += snprintf(buf + len, size - (size_t) len, "%s %s %s%s", any ? "," : ";",
                        t->kind == READ_TASK_RESTORE ? "restore of" : "verify of", t->snapshot_id,
                        t->job.worker ? "" : " queued");
        if (t->job.worker && t->kind == READ_TASK_RESTORE && len >= 0 && (size_t) len < size)
            len += snprintf(buf + len, size - (size_t) len, " %.0f %%", t->restore->progress_pct);
        any = true;
    }
    if (!any && len >= 0 && (size_t) len < size)
        snprintf(buf + len, size - (size_t) len, ", idle");
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
    Manager *m = userdata;
    for (size_t i = 0; i < m->n_policies; i++)
        if (m->policies[i]->task && m->policies[i]->task->job.worker) {
            log_warning("worker for %s did not stop in time; killing it",
                        m->policies[i]->task->record->id);
            (void) agent_task_kill(m->policies[i]->task->job.worker, SIGKILL);
        }
    for (size_t i = 0; i < m->n_read_tasks; i++)
        if (m->read_tasks[i]->job.worker) {
            log_warning("worker reading %s did not stop in time; killing it",
                        m->read_tasks[i]->snapshot_id);
            (void) agent_task_kill(m->read_tasks[i]->job.worker, SIGKILL);
        }
    return 0;
}

void manager_maybe_finish_shutdown(Manager *m) {
    if (m->stopping && !manager_has_tasks(m))
        (void) sd_event_exit(m->event, 0);
}

void manager_begin_shutdown(Manager *m) {
    if (m->stopping)
        return;
    m->stopping = true;
    /* Stopping a queued task finishes it (and may drop its policy): walk a snapshot. */
    for (size_t i = m->n_policies; i > 0; i--) {
        ManagerPolicy *p = m->policies[i - 1];
        if (p->task)
            stop_task(p->task, INTERRUPTED_BY_SHUTDOWN, false);
    }
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->stop)
            (*part)->stop(m);
    if (manager_has_tasks(m)) {
        uint64_t mono;
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &mono) >= 0)
            (void) sd_event_add_time(m->event, &m->stop_timer, CLOCK_MONOTONIC,
                                     mono + MANAGER_STOP_TIMEOUT_USEC, 0, on_stop_timeout, m);
    }
    manager_maybe_finish_shutdown(m);
}

/* ---- life cycle ---- */

void manager_policy_set_next_run(Manager *m, ManagerPolicy *p, uint64_t next) {
    if (p->runtime->next_run_usec == next)
        return;
    p->runtime->next_run_usec = next;
    manager_emit_policy_changed(m, p);
}

int manager_add_observer(Manager *m, const ManagerHooks *hooks, void *userdata, MsError *e) {
    if (m->n_observers >= MANAGER_OBSERVERS_MAX)
        return ms_error_set(e, ENOSPC, "the manager has %d observers already",
                            MANAGER_OBSERVERS_MAX);
    m->observers[m->n_observers].hooks = hooks;
    m->observers[m->n_observers].userdata = userdata;
    m->n_observers++;
    return 0;
}

const MsAgentConfig *manager_agent_config(const Manager *m) {
    return m->config;
}

const char *manager_timer_directory(const Manager *m) {
    return m->timer_directory;
}

static int override_path(char **field, const char *value, const char *what, MsError *e) {
    if (!value)
        return 0;
    if (value[0] != '/')
        return ms_error_set(e, EINVAL, "%s must be an absolute path, not '%s'", what, value);
    return replace_string(field, value) < 0 ? oom(e) : 0;
}

static bool strv_equal(char *const *a, char *const *b) {
    for (; a && *a && b && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return false;
    return !(a && *a) && !(b && *b);
}

static bool str_equal(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* On reload (SIGHUP, systemctl reload): the [Restore] section takes effect at once, so that
 * listing a restore credential needs no restart; what the agent was started with ([Agent],
 * [Cluster]: its node, paths, the cluster's connection) only at the next start, which the log
 * says. A file that does not parse changes nothing. */
int manager_reload_config(Manager *m, MsError *e) {
    _cleanup_(ms_agent_config_freep) MsAgentConfig *fresh = NULL;
    int r = ms_agent_config_load(m->config_path, &fresh, e);
    if (r < 0)
        return r;
    MsAgentConfig *c = m->config;
    bool restore_changed =
        !strv_equal(c->restore_credentials, fresh->restore_credentials) ||
        !strv_equal(c->restore_key_credentials, fresh->restore_key_credentials) ||
        c->restore_allow_cleartext != fresh->restore_allow_cleartext;
    if (restore_changed) {
        char **t = c->restore_credentials;
        c->restore_credentials = fresh->restore_credentials;
        fresh->restore_credentials = t;
        t = c->restore_key_credentials;
        c->restore_key_credentials = fresh->restore_key_credentials;
        fresh->restore_key_credentials = t;
        c->restore_allow_cleartext = fresh->restore_allow_cleartext;
        log_info("[Restore] reloaded: %zu restore credential(s), %zu key credential(s)%s",
                 ms_strv_length(c->restore_credentials), ms_strv_length(c->restore_key_credentials),
                 c->restore_allow_cleartext ? ", AllowCleartext=yes" : "");
    }
    if (!str_equal(c->node, fresh->node) || !str_equal(c->default_store, fresh->default_store) ||
        c->max_concurrent_tasks != fresh->max_concurrent_tasks ||
        !str_equal(c->cluster_uri, fresh->cluster_uri) ||
        !str_equal(c->cluster_credential, fresh->cluster_credential) ||
        !strv_equal(c->cluster_signing_keys, fresh->cluster_signing_keys) ||
        !str_equal(c->cluster_member, fresh->cluster_member))
        log_warning("%s: changes outside [Restore] take effect when mongosnapd starts again "
                    "(systemctl restart mongosnapd)",
                    m->config_path ? m->config_path : MS_AGENT_CONFIG_PATH);
    return 0;
}

int manager_new(sd_event *event, const ManagerOptions *o, Manager **ret_manager, MsError *e) {
    _cleanup_(manager_freep) Manager *m = calloc(1, sizeof(*m));
    if (!m)
        return oom(e);
    m->event = sd_event_ref(event);
    int r = ms_agent_config_load(o->config_path, &m->config, e);
    if (r < 0)
        return r;
    if (o->config_path && !(m->config_path = strdup(o->config_path)))
        return oom(e);
    r = override_path(&m->config->policy_directory, o->policy_directory, "--policy-dir", e);
    if (r < 0)
        return r;
    r = override_path(&m->config->state_directory, o->state_directory, "--state-dir", e);
    if (r < 0)
        return r;
    r = override_path(&m->config->worker_path, o->worker_path, "--worker", e);
    if (r < 0)
        return r;
    r = override_path(&m->timer_directory,
                      o->timer_directory ? o->timer_directory : MANAGER_TIMER_DIRECTORY,
                      "--timer-dir", e);
    if (r < 0)
        return r;

    if (mkdir(m->config->state_directory, 0700) < 0 && errno != EEXIST)
        return ms_error_set(e, errno, "cannot create the state directory %s: %s",
                            m->config->state_directory, strerror(errno));
    /* It holds the catalog (snapshot names, redacted URIs, the restore targets): owner only,
     * whatever the umask or an earlier mode (systemd's StateDirectoryMode=0700 does the same). */
    struct stat st;
    if (stat(m->config->state_directory, &st) == 0 && (st.st_mode & 077)) {
        if (chmod(m->config->state_directory, st.st_mode & 0700) < 0)
            log_warning("the state directory %s is mode %04o and cannot be made 0700: %s",
                        m->config->state_directory, (unsigned) (st.st_mode & 07777),
                        strerror(errno));
        else
            log_info("the state directory %s was mode %04o; it is 0700 now",
                     m->config->state_directory, (unsigned) (st.st_mode & 07777));
    }
    _cleanup_free_ char *db = NULL;
    if (asprintf(&db, "%s/%s", m->config->state_directory, MS_CATALOG_FILE_NAME) < 0)
        return oom(e);
    r = ms_catalog_open(db, &m->catalog, e);
    if (r < 0)
        return r;
    /* Read what is unfinished before marking it, so each one gets its Event Log entry. */
    MsSnapshotRecord **unfinished = NULL;
    size_t n_unfinished = 0;
    MsSnapshotFilter filter = {
        .states = MS_STATE_BIT(MS_SNAPSHOT_QUEUED) | MS_STATE_BIT(MS_SNAPSHOT_RUNNING),
    };
    r = ms_catalog_list_snapshots(m->catalog, &filter, &unfinished, &n_unfinished, e);
    if (r < 0)
        return r;
    MsRestoreRecord **unfinished_restores = NULL;
    size_t n_unfinished_restores = 0;
    MsRestoreFilter rfilter = {
        .states = MS_STATE_BIT(MS_RESTORE_QUEUED) | MS_STATE_BIT(MS_RESTORE_RUNNING),
    };
    r = ms_catalog_list_restores(m->catalog, &rfilter, &unfinished_restores, &n_unfinished_restores,
                                 e);
    if (r < 0) {
        ms_snapshot_record_list_free(unfinished, n_unfinished);
        return r;
    }
    unsigned n = 0;
    r = ms_catalog_mark_unfinished_interrupted(m->catalog, INTERRUPTED_BY_RESTART, &n, e);
    if (r >= 0) {
        for (size_t i = 0; i < n_unfinished; i++) {
            const MsSnapshotRecord *s = unfinished[i];
            (void) ms_event_log(MS_EVENT_TASK_INTERRUPTED,
                                &(MsEventFields){.policy = s->policy,
                                                 .task = s->id,
                                                 .node = s->node,
                                                 .error = INTERRUPTED_BY_RESTART},
                                "snapshot %s interrupted: %s", s->id, INTERRUPTED_BY_RESTART);
        }
        for (size_t i = 0; i < n_unfinished_restores; i++) {
            const MsRestoreRecord *x = unfinished_restores[i];
            (void) ms_event_log(MS_EVENT_TASK_INTERRUPTED,
                                &(MsEventFields){.task = x->id,
                                                 .node = m->config->node,
                                                 .snapshot = x->source_snapshot,
                                                 .error = INTERRUPTED_BY_RESTART},
                                "restore %s interrupted: %s", x->id, INTERRUPTED_BY_RESTART);
        }
        if (n > 0)
            log_warning("%u task(s) left unfinished by the previous run marked interrupted", n);
    }
    /* Every start checks the stores against this node's records: tasks left unfinished may
     * have been stored completely, and removals cut short may have left objects behind. */
    m->correct_at_start = true;
    ms_snapshot_record_list_free(unfinished, n_unfinished);
    ms_restore_record_list_free(unfinished_restores, n_unfinished_restores);
    if (r < 0)
        return r;
    r = load_snapshots(m, e);
    if (r < 0)
        return r;
    for (const ManagerPart *const *part = manager_parts; *part && r >= 0; part++)
        if ((*part)->load)
            r = (*part)->load(m, e);
    if (r < 0)
        return r;
    r = manager_coordination->start(m, e);
    if (r < 0)
        return r;
    *ret_manager = TAKE_PTR(m);
    return 0;
}

Manager *manager_free(Manager *m) {
    if (!m)
        return NULL;
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        if (p->rebuild_token) {
            MsError e = MS_ERROR_INIT;
            ms_error_set_kind(&e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                              "the agent stopped before policy '%s' was rebuilt",
                              p->settings->name);
            rebuild_done(m, TAKE_PTR(p->rebuild_token), NULL, &e);
        }
        snapshot_task_free(p->task);
        manager_policy_free(p);
    }
    manager_coordination->free(m);
    free(m->policies);
    free_policy_errors(m);
    for (const ManagerPart *const *part = manager_parts; *part; part++)
        if ((*part)->free_all)
            (*part)->free_all(m);
    forget_stores(m);
    ms_snapshot_record_list_free(m->snapshots, m->n_snapshots);
    sd_event_source_disable_unref(m->stop_timer);
    sd_event_source_disable_unref(m->unsaved_timer);
    for (size_t i = 0; i < m->n_unsaved; i++)
        free(m->unsaved[i]);
    free(m->unsaved);
    sd_event_source_disable_unref(m->retention_timer);
    ms_catalog_close(m->catalog);
    ms_agent_config_free(m->config);
    free(m->timer_directory);
    free(m->config_path);
    sd_event_unref(m->event);
    free(m);
    return NULL;
}

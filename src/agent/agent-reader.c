/* Restores and verifications: tasks that read a completed snapshot, each run by a worker. */
#include <errno.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-balancer.h"
#include "agent/agent-cluster.h"
#include "agent/agent-reader.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/strv.h"
#include "engine/cluster.h" /* ms_shard_map_parse */
#include "engine/nsfilter.h"
#include "engine/restore.h"
#include "engine/uri-auth.h"
#include "eventlog/eventlog.h"
#include "mongosnap/mongosnap.h"

#define RESTORE_ID_PREFIX "restore-"
#define RESTORE_ID_ATTEMPTS 100
#define RESTORE_ID_MAX                                                                             \
    (sizeof(RESTORE_ID_PREFIX) + 256 + MS_ISO8601_MAX + 10) /* 256: a node name */
#define NUMBER_ARG_MAX 16
/* What a caller sent is repeated at most this long in a message. */
#define BUS_ECHO_LIMIT 128
#define PARALLEL_MAX 64
#define CANCELLED_ON_REQUEST "cancelled on request"

/* ---- records ---- */

size_t manager_n_restores(const Manager *m) {
    return m->n_restores;
}

const MsRestoreRecord *manager_restore_at(const Manager *m, size_t i) {
    return i < m->n_restores ? m->restores[i] : NULL;
}

const MsRestoreRecord *manager_find_restore(const Manager *m, const char *id) {
    if (!id)
        return NULL;
    for (size_t i = 0; i < m->n_restores; i++)
        if (strcmp(m->restores[i]->id, id) == 0)
            return m->restores[i];
    return NULL;
}

static int reader_load(Manager *m, MsError *e) {
    int r = ms_catalog_list_restores(m->catalog, NULL, &m->restores, &m->n_restores, e);
    if (r < 0)
        return r;
    /* The catalog holds this node's restores only; the node is said on the bus (Node). */
    for (size_t i = 0; i < m->n_restores; i++)
        if (!(m->restores[i]->node = strdup(m->config->node)))
            return oom(e);
    return 0;
}

/* ---- the task list ---- */

static ReadTask *reader_free(ReadTask *t) {
    if (!t)
        return NULL;
    if (t->manager)
        agent_queue_remove(&t->manager->queue, &t->job);
    agent_job_reset(&t->job);
    progress_throttle_done(&t->progress);
    ms_secret_free(t->uri);
    ms_secret_free(t->balancer_uri);
    free(t->balancer_credential);
    ms_strv_free(t->args);
    free(t->snapshot_id);
    free(t);
    return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ReadTask *, reader_free);

static void reader_free_all(Manager *m) {
    for (size_t i = 0; i < m->n_read_tasks; i++)
        reader_free(m->read_tasks[i]);
    free(m->read_tasks);
    m->read_tasks = NULL;
    m->n_read_tasks = 0;
    ms_restore_record_list_free(m->restores, m->n_restores);
    m->restores = NULL;
    m->n_restores = 0;
}

static void detach(Manager *m, ReadTask *t) {
    MS_ARRAY_REMOVE(m->read_tasks, m->n_read_tasks, t);
}

bool reader_uses_snapshot(const Manager *m, const char *snapshot_id) {
    for (size_t i = 0; i < m->n_read_tasks; i++)
        if (strcmp(m->read_tasks[i]->snapshot_id, snapshot_id) == 0)
            return true;
    return false;
}

static int args_push(char ***args, size_t *n, const char *a) {
    char **v = realloc(*args, (*n + 2) * sizeof(char *));
    if (!v)
        return -ENOMEM;
    *args = v;
    if (!(v[*n] = strdup(a)))
        return -ENOMEM;
    v[++*n] = NULL;
    return 0;
}

static int args_push_list(char ***args, size_t *n, const char *option, char *const *list) {
    for (size_t i = 0; list && list[i]; i++)
        if (args_push(args, n, option) < 0 || args_push(args, n, list[i]) < 0)
            return -ENOMEM;
    return 0;
}

/* ---- Event Log and notifications ---- */

static void fields_for(const ReadTask *t, MsEventFields *f) {
    const MsSnapshotRecord *s = manager_find_snapshot(t->manager, t->snapshot_id);
    *f = (MsEventFields){
        .policy = s ? s->policy : NULL,
        .task = t->kind == READ_TASK_RESTORE ? t->restore->id : t->snapshot_id,
        .node = t->manager->config->node,
        .snapshot = t->snapshot_id,
    };
}

static void emit_restore(Manager *m, const MsRestoreRecord *r, unsigned changes) {
    cluster_restore_changed(m, r);
    MANAGER_EMIT(m, restore_changed, r, changes);
}

static void set_verify_state(ReadTask *t, MsVerifyState state, const char *error) {
    Manager *m = t->manager;
    MsSnapshotRecord *s = manager_snapshot_mutable(m, t->snapshot_id);
    MsError e = MS_ERROR_INIT;
    if (ms_catalog_set_snapshot_verify(m->catalog, t->snapshot_id, state, error, &e) < 0)
        log_warning("cannot record the verification of %s: %s", t->snapshot_id, e.message);
    if (!s)
        return;
    /* The same rules as the catalog's: only an outcome has a time. */
    s->verify_state = state;
    (void) replace_string(&s->verify_error, error);
    bool outcome =
        state == MS_VERIFY_PASSED || state == MS_VERIFY_FAILED || state == MS_VERIFY_INTERRUPTED;
    s->verify_finished_usec = outcome ? now_usec() : 0;
    manager_emit_snapshot_changed(m, s, MANAGER_SNAPSHOT_STATE);
}

static void flush_restore(void *userdata) {
    ReadTask *t = userdata;
    MsError e = MS_ERROR_INIT;
    if (ms_catalog_update_restore(t->manager->catalog, t->restore, &e) < 0)
        log_warning("cannot record restore %s: %s", t->restore->id, e.message);
}

static void emit_restore_progress(void *userdata) {
    ReadTask *t = userdata;
    emit_restore(t->manager, t->restore, MANAGER_SNAPSHOT_PROGRESS);
}

static void reader_flush_all(Manager *m) {
    for (size_t i = 0; i < m->n_read_tasks; i++)
        if (m->read_tasks[i]->job.worker && m->read_tasks[i]->kind == READ_TASK_RESTORE)
            progress_throttle_flush(&m->read_tasks[i]->progress);
}

/* ---- worker life ---- */

static void reader_job_message(AgentJob *j, const bson_t *msg) {
    ReadTask *t = MS_CONTAINER_OF(j, ReadTask, job);
    const char *event = ms_bson_str(msg, "event");
    if (!event)
        return;
    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) == 0) {
        if (t->kind == READ_TASK_RESTORE && agent_msg_has(msg, "documents"))
            t->restore->items_done = ms_bson_u64(msg, "documents");
        return;
    }
    if (t->kind != READ_TASK_RESTORE)
        return;
    MsRestoreRecord *r = t->restore;
    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_BALANCER) == 0) {
        t->balancer_stopped = agent_msg_bool(msg, "stopped");
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_PROGRESS) == 0) {
        r->items_done = ms_bson_u64(msg, "items_done");
        r->items_total = ms_bson_u64(msg, "items_total");
        double pct = ms_bson_double(msg, "percent");
        r->progress_pct = pct < 0 ? 0 : pct > MS_PERCENT_DONE ? MS_PERCENT_DONE : pct;
        /* Bytes restored: documents and operations the target server took. */
        r->bytes_transferred = ms_bson_u64(msg, "bytes_written");
        snprintf(r->phase, sizeof(r->phase), "%s", ms_bson_str(msg, "phase") ?: "");
        progress_throttle_changed(&t->progress);
    } else if (strcmp(event, "plan") == 0) {
        /* A restore to a time: the snapshot and the slices the worker will replay, in the log
         * (the record names the snapshot; the slices are many and live in the store). */
        bson_iter_t it, arr;
        size_t n = 0;
        char first[256] = "", last[256] = "";
        if (bson_iter_init_find(&it, msg, "slices") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &arr))
            while (bson_iter_next(&arr))
                if (BSON_ITER_HOLDS_UTF8(&arr)) {
                    snprintf(n == 0 ? first : last, sizeof(first), "%s",
                             bson_iter_utf8(&arr, NULL));
                    n++;
                }
        char plan[MS_ERROR_MESSAGE_MAX / 2];
        snprintf(plan, sizeof(plan), "snapshot %s, then %zu oplog slice(s)%s%s%s%s",
                 ms_bson_str(msg, "snapshot") ?: "?", n, n ? " from " : "", first,
                 n > 1 ? " to " : "", n > 1 ? last : "");
        MsEventFields f;
        fields_for(t, &f);
        f.error = plan;
        (void) ms_event_log(MS_EVENT_RESTORE_PLANNED, &f, "restore %s to a time: %s", r->id,
                            plan);
        /* The worker may start from an older snapshot than the agent named (one whose oplog
         * ends before the time): the record and the retention guard follow it. */
        /* The plan joins the record's options (no secret in it): what was restored, to the
         * record, beside the time asked for. */
        bson_t *opts = r->options ? bson_new_from_json((const uint8_t *) r->options, -1, NULL)
                                  : NULL;
        if (opts) {
            BSON_APPEND_UTF8(opts, "plan", plan);
            char *json = bson_as_relaxed_extended_json(opts, NULL);
            char *copy = json ? strdup(json) : NULL;
            bson_free(json);
            if (copy) {
                free(r->options);
                r->options = copy;
            }
            bson_destroy(opts);
        }
        const char *planned = ms_bson_str(msg, "snapshot");
        bool moved = planned && *planned && strcmp(planned, t->snapshot_id) != 0 &&
                     manager_find_snapshot(t->manager, planned);
        if (!moved) {
            MsError ce = MS_ERROR_INIT;
            if (ms_catalog_update_restore(t->manager->catalog, r, &ce) < 0)
                log_warning("cannot record the plan of restore %s: %s", r->id, ce.message);
            emit_restore(t->manager, r, MANAGER_SNAPSHOT_STATE);
        }
        if (moved) {
            char *a = strdup(planned), *b = strdup(planned);
            if (a && b) {
                free(t->snapshot_id);
                t->snapshot_id = a;
                free(r->source_snapshot);
                r->source_snapshot = b;
                MsError ce = MS_ERROR_INIT;
                if (ms_catalog_update_restore(t->manager->catalog, r, &ce) < 0)
                    log_warning("cannot record the snapshot restore %s starts from: %s", r->id,
                                ce.message);
                emit_restore(t->manager, r, MANAGER_SNAPSHOT_STATE);
            } else {
                free(a);
                free(b);
            }
        }
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_NAMESPACE) == 0) {
        MsEventFields f;
        fields_for(t, &f);
        f.ns = ms_bson_str(msg, "namespace");
        f.has_items = true;
        f.items = ms_bson_u64(msg, "documents");
        (void) ms_event_log(MS_EVENT_NAMESPACE_FINISHED, &f,
                            "%s: %s restored, %" PRIu64 " documents", r->id, f.ns ? f.ns : "?",
                            f.items);
    }
}

static void finish_restore(ReadTask *t, MsRestoreState state, const char *error, MsEventKind kind) {
    MsRestoreRecord *r = t->restore;
    uint64_t now = now_usec();
    r->state = state;
    (void) ms_task_core_finish(&r->core, error, state == MS_RESTORE_COMPLETED, now);
    flush_restore(t);
    MsEventFields f;
    fields_for(t, &f);
    f.error = error;
    f.has_items = true;
    f.items = r->items_done;
    f.has_elapsed = true;
    f.elapsed_usec = manager_task_elapsed_usec(&r->core, now);
    if (state == MS_RESTORE_COMPLETED)
        (void) ms_event_log(kind, &f, "restore %s of snapshot %s completed: %" PRIu64 " documents",
                            r->id, t->snapshot_id, r->items_done);
    else
        (void) ms_event_log(kind, &f, "restore %s of snapshot %s %s: %s", r->id, t->snapshot_id,
                            ms_restore_state_to_string(state), error ? error : "");
    emit_restore(t->manager, r, MANAGER_SNAPSHOT_STATE | MANAGER_SNAPSHOT_PROGRESS);
}

static void finish_verify(ReadTask *t, MsVerifyState state, const char *error, MsEventKind kind) {
    set_verify_state(t, state, error);
    MsEventFields f;
    fields_for(t, &f);
    f.error = error;
    /* What was checked: the snapshot's documents and stored bytes. */
    const MsSnapshotRecord *s = manager_find_snapshot(t->manager, t->snapshot_id);
    if (s && state == MS_VERIFY_PASSED) {
        f.has_items = f.has_bytes = true;
        f.items = s->items_done;
        f.bytes = s->bytes_transferred;
    }
    if (state == MS_VERIFY_PASSED)
        (void) ms_event_log(kind, &f,
                            "snapshot %s verified: every checksum and count matches its manifest",
                            t->snapshot_id);
    else
        (void) ms_event_log(kind, &f, "verification of snapshot %s %s: %s", t->snapshot_id,
                            ms_verify_state_to_string(state), error ? error : "");
}

/* The reader is over: out of the list, its slot to the next task, and retention may now
 * remove the snapshot it held on to. */
static void reader_done(ReadTask *t) {
    Manager *m = t->manager;
    const MsSnapshotRecord *s = manager_find_snapshot(m, t->snapshot_id);
    _cleanup_free_ char *policy = s ? strdup(s->policy) : NULL;
    detach(m, t);
    reader_free(t);
    if (policy)
        manager_apply_retention(m, policy);
    manager_start_queued(m);
    manager_maybe_finish_shutdown(m);
}

static void reader_job_end(AgentJob *j, const AgentJobEnd *e) {
    ReadTask *t = MS_CONTAINER_OF(j, ReadTask, job);
    const AgentJobEnd end = *e;
    if (t->kind == READ_TASK_RESTORE) {
        switch (end.outcome) {
        case AGENT_JOB_SUCCEEDED:
            finish_restore(t, MS_RESTORE_COMPLETED, NULL, MS_EVENT_RESTORE_COMPLETED);
            break;
        case AGENT_JOB_STOPPED:
            finish_restore(t, MS_RESTORE_CANCELLED, end.reason, MS_EVENT_TASK_STOPPED);
            break;
        case AGENT_JOB_INTERRUPTED:
            finish_restore(t, MS_RESTORE_INTERRUPTED, end.reason, MS_EVENT_TASK_INTERRUPTED);
            break;
        case AGENT_JOB_FAILED:
            finish_restore(t, MS_RESTORE_FAILED, end.reason, MS_EVENT_RESTORE_FAILED);
            break;
        }
        /* Its worker stopped the target cluster's balancer and never said it runs again. */
        if (t->balancer_stopped && t->balancer_uri)
            manager_balancer_start(t->manager, t->restore->id, t->balancer_uri,
                                   t->balancer_credential);
    } else {
        /* Failed means the worker read the snapshot and found it damaged or incomplete (it
         * says so with its exit status). A worker killed, or one that could not do its job
         * (no key, the store out of reach), reached no verdict: that verification was
         * interrupted, and the snapshot is not marked damaged (a failed verification makes
         * StartRestore refuse it). */
        bool verdict =
            end.outcome == AGENT_JOB_FAILED && !end.by_signal &&
            (end.status == MONGOSNAP_EXIT_CORRUPT || end.status == MONGOSNAP_EXIT_FAILURE);
        if (end.outcome == AGENT_JOB_SUCCEEDED)
            finish_verify(t, MS_VERIFY_PASSED, NULL, MS_EVENT_VERIFY_COMPLETED);
        else if (verdict)
            finish_verify(t, MS_VERIFY_FAILED, end.reason, MS_EVENT_VERIFY_FAILED);
        else
            finish_verify(t, MS_VERIFY_INTERRUPTED, end.reason, MS_EVENT_TASK_INTERRUPTED);
    }
    reader_done(t);
}

static const AgentJobType reader_job_type;

static int reader_start(ReadTask *t, MsError *e) {
    Manager *m = t->manager;
    AgentTaskSpec spec = {
        .worker_path = m->config->worker_path,
        .args = (const char *const *) t->args,
        .uri = t->uri,
    };
    int r = agent_job_spawn(&t->job, &reader_job_type, m->event, &spec, e);
    if (r < 0)
        return r;
    /* The memfd holds the URI now; the agent has no further use for the password. */
    ms_secret_free(TAKE_PTR(t->uri));

    MsEventFields f;
    fields_for(t, &f);
    if (t->kind == READ_TASK_RESTORE) {
        t->restore->state = MS_RESTORE_RUNNING;
        t->restore->started_usec = now_usec();
        flush_restore(t);
        progress_throttle_init(&t->progress, m->event, flush_restore, emit_restore_progress, t);
        (void) ms_event_log(MS_EVENT_RESTORE_STARTED, &f,
                            "restore %s of snapshot %s into %s started (worker %d)", t->restore->id,
                            t->snapshot_id, t->restore->target,
                            (int) agent_task_pid(t->job.worker));
        emit_restore(m, t->restore, MANAGER_SNAPSHOT_STATE);
    } else {
        set_verify_state(t, MS_VERIFY_RUNNING, NULL);
        (void) ms_event_log(MS_EVENT_TASK_STARTED, &f,
                            "verification of snapshot %s started (worker %d)", t->snapshot_id,
                            (int) agent_task_pid(t->job.worker));
    }
    return 0;
}

static void reader_fail_to_start(ReadTask *t, const char *error) {
    if (t->kind == READ_TASK_RESTORE)
        finish_restore(t, MS_RESTORE_FAILED, error, MS_EVENT_RESTORE_FAILED);
    else /* nothing was read: no verdict on the snapshot */
        finish_verify(t, MS_VERIFY_INTERRUPTED, error, MS_EVENT_TASK_INTERRUPTED);
    reader_done(t);
}

static void reader_stop(ReadTask *t, const char *reason, bool on_request) {
    if (!t->job.worker) {
        if (t->kind == READ_TASK_RESTORE)
            finish_restore(t, on_request ? MS_RESTORE_CANCELLED : MS_RESTORE_INTERRUPTED, reason,
                           on_request ? MS_EVENT_TASK_STOPPED : MS_EVENT_TASK_INTERRUPTED);
        else
            finish_verify(t, MS_VERIFY_INTERRUPTED, reason, MS_EVENT_TASK_INTERRUPTED);
        reader_done(t);
        return;
    }
    (void) agent_job_stop(&t->job, reason, on_request, MANAGER_STOP_GRACE_USEC);
}

/* ---- starting ---- */

/* Another node's snapshot in a "local" store is readable here only when that directory is
 * shared (NFS and the like): its manifest is there. */
static bool local_store_has(const char *store, const char *key) {
    _cleanup_(ms_storage_freep) MsStorage *st = NULL;
    MsError e = MS_ERROR_INIT;
    MsStorageObject o = {0};
    bool found = ms_storage_open(store, &st, &e) >= 0 && ms_storage_stat(st, key, &o, &e) >= 0;
    free(o.key);
    return found;
}

/* Is name the credential of something else than a restore target: a policy's source password
 * or encryption key, the cluster's password, the store's keys? */
static const char *credential_other_use(Manager *m, const char *name) {
    if (ms_credential_is_store_key(name))
        return "the store's key";
    if (m->config->cluster_credential && strcmp(m->config->cluster_credential, name) == 0)
        return "the cluster database's password ([Cluster] Credential=)";
    if (ms_strv_contains(m->config->cluster_signing_keys, name))
        return "the cluster's signing key ([Cluster] SigningKeyCredential=)";
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        const MsPolicy *s = manager_policy_at(m, i)->settings;
        if (s->credential && strcmp(s->credential, name) == 0)
            return "a policy's source password (Credential=)";
    }
    return NULL;
}

static bool is_policy_key(Manager *m, const char *name) {
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        const MsPolicy *s = manager_policy_at(m, i)->settings;
        if (s->encryption_key && strcmp(s->encryption_key, name) == 0)
            return true;
    }
    return false;
}

/* Credential scopes (mongosnapd(8)): a restore names only credentials the configuration marks
 * as restore targets' ([Restore] Credentials=), and for decryption only encryption keys
 * (a policy's [Encryption] Key=, or [Restore] KeyCredentials=); never a source's or the
 * cluster's password, nor the store's keys, whatever the lists say. */
static int check_restore_credentials(Manager *m, const char *target, const ManagerRestoreOptions *o,
                                     MsError *e) {
    int r = ms_uri_check_auth(target, MS_URI_AUTH_TARGET, m->config->restore_allow_cleartext, e);
    if (r < 0)
        return r;
    if (o->credential) {
        const char *other = credential_other_use(m, o->credential);
        if (!other && is_policy_key(m, o->credential))
            other = "an encryption key ([Encryption] Key=)";
        if (other)
            return ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                                     "credential '%.*s' is %s and is never sent to a restore "
                                     "target; give the target a credential of its own and list "
                                     "it in [Restore] Credentials= of mongosnap.conf",
                                     BUS_ECHO_LIMIT, o->credential, other);
        if (!ms_strv_contains(m->config->restore_credentials, o->credential))
            return ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                                     "credential '%.*s' is not one of the restore targets' "
                                     "([Restore] Credentials= in mongosnap.conf lists them); an "
                                     "administrator adds it there",
                                     BUS_ECHO_LIMIT, o->credential);
    }
    if (o->key_credential) {
        const char *other = credential_other_use(m, o->key_credential);
        if (!other && ms_strv_contains(m->config->restore_credentials, o->key_credential))
            other = "a restore target's password";
        if (other)
            return ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                                     "key_credential '%.*s' is %s, not an encryption key",
                                     BUS_ECHO_LIMIT, o->key_credential, other);
        if (!is_policy_key(m, o->key_credential) &&
            !ms_strv_contains(m->config->restore_key_credentials, o->key_credential))
            return ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                                     "key_credential '%.*s' is neither a policy's [Encryption] "
                                     "Key= nor listed in [Restore] KeyCredentials= of "
                                     "mongosnap.conf",
                                     BUS_ECHO_LIMIT, o->key_credential);
    }
    char user[128];
    if (!o->credential && ms_uri_wants_password(target, user, sizeof(user)))
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NO_CREDENTIAL, ENOKEY,
            "the target URI names user '%s' but carries no password: name the "
            "credential that holds it (mongosnapctl restore --credential NAME; "
            "D-Bus: the \"credential\" option), one listed in [Restore] "
            "Credentials= of mongosnap.conf",
            user);
    return 0;
}

/* A snapshot can be read when it completed and its objects are where the record says. */
static int check_readable(Manager *m, const char *id, const MsSnapshotRecord **ret, MsError *e) {
    const MsSnapshotRecord *s = manager_find_snapshot(m, id);
    if (!s)
        return ms_error_set(e, ENOENT, "no snapshot '%s'; list them with ListSnapshots", id);
    if (s->state != MS_SNAPSHOT_COMPLETED || !s->manifest_key || !s->store)
        return ms_error_set_kind(
            e, MS_ERROR_KIND_NOT_RESTORABLE, ENOTRECOVERABLE,
            "snapshot %s is %s, not completed: only completed snapshots can be "
            "restored or verified",
            id, ms_snapshot_state_to_string(s->state));
    if (s->remote && manager_store_is_local(s->store) &&
        !local_store_has(s->store, s->manifest_key))
        return ms_error_set_kind(
            e, MS_ERROR_KIND_ON_OTHER_NODE, EREMOTE,
            "snapshot %s is in node %s's local store (%s), which this node cannot "
            "read: restore it on node %s, or give the policy an S3 store that "
            "every node reads",
            id, s->node, s->store, s->node);
    *ret = s;
    return 0;
}

/* The key file a reader of snapshot s passes: the credential named by the caller, else the
 * [Encryption] Key= of the snapshot's policy, else none (NULL). Whether the snapshot is
 * encrypted is the worker's to find out (its manifest says so); a key it does not need is not
 * used. A named credential that is missing is -ENOKEY (NoCredential), as for Credential=. */
static int reader_key_path(Manager *m, const MsSnapshotRecord *s, const char *key_credential,
                           char **ret, MsError *e) {
    const char *name = key_credential;
    if (!name) {
        ManagerPolicy *p = s->policy ? manager_find_policy(m, s->policy) : NULL;
        name = p && p->settings->encryption_key ? p->settings->encryption_key : NULL;
    }
    *ret = NULL;
    if (!name)
        return 0;
    return manager_credential_path(name, ret, e);
}

static int reader_job_start(AgentJob *j, MsError *e) {
    return reader_start(MS_CONTAINER_OF(j, ReadTask, job), e);
}

static void reader_job_fail_to_start(AgentJob *j, const char *message) {
    reader_fail_to_start(MS_CONTAINER_OF(j, ReadTask, job), message);
}

static const AgentJobType reader_job_type = {
    .name = "restore or verification",
    .start = reader_job_start,
    .fail_to_start = reader_job_fail_to_start,
    .on_message = reader_job_message,
    .on_end = reader_job_end,
};

static int add_reader(Manager *m, ReadTask *t, MsError *e) {
    ReadTask **list = realloc(m->read_tasks, (m->n_read_tasks + 1) * sizeof(*list));
    if (!list)
        return oom(e);
    m->read_tasks = list;
    m->read_tasks[m->n_read_tasks++] = t;
    agent_queue_add(&m->queue, &t->job, &reader_job_type, t->created_usec);
    return 0;
}

int manager_verify_snapshot(Manager *m, const char *id, MsError *e) {
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    const MsSnapshotRecord *remote = manager_find_snapshot(m, id);
    if (remote && remote->remote && remote->state == MS_SNAPSHOT_COMPLETED)
        /* The verification's result is part of the record, which its node keeps. */
        return manager_cluster_forward(m, "verify", remote->node, remote->policy, id, e);
    const MsSnapshotRecord *s = NULL;
    int r = check_readable(m, id, &s, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < m->n_read_tasks; i++)
        if (m->read_tasks[i]->kind == READ_TASK_VERIFY &&
            strcmp(m->read_tasks[i]->snapshot_id, id) == 0)
            return ms_error_set_kind(e, MS_ERROR_KIND_BUSY, EBUSY,
                                     "snapshot %s is being verified already", id);

    _cleanup_free_ char *key_path = NULL;
    r = reader_key_path(m, s, NULL, &key_path, e);
    if (r < 0)
        return r;

    _cleanup_(reader_freep) ReadTask *t = calloc(1, sizeof(*t));
    if (!t || !(t->snapshot_id = strdup(id)))
        return oom(e);
    t->manager = m;
    t->kind = READ_TASK_VERIFY;
    t->created_usec = now_usec();
    size_t n = 0;
    if (args_push(&t->args, &n, "verify") < 0 || args_push(&t->args, &n, "--store") < 0 ||
        args_push(&t->args, &n, s->store) < 0 || args_push(&t->args, &n, "--snapshot") < 0 ||
        args_push(&t->args, &n, s->manifest_key) < 0 ||
        (key_path &&
         (args_push(&t->args, &n, "--key-file") < 0 || args_push(&t->args, &n, key_path) < 0)))
        return oom(e);
    r = add_reader(m, t, e);
    if (r < 0)
        return r;
    ReadTask *task = TAKE_PTR(t);
    set_verify_state(task, MS_VERIFY_QUEUED, NULL);
    MsEventFields f;
    fields_for(task, &f);
    (void) ms_event_log(MS_EVENT_TASK_QUEUED, &f, "verification of snapshot %s queued", id);
    manager_start_queued(m);
    return 0;
}

static int new_restore_id(Manager *m, char ret[RESTORE_ID_MAX]) {
    char stamp[MS_ISO8601_MAX];
    ms_format_compact(now_usec(), stamp);
    for (unsigned i = 1; i <= RESTORE_ID_ATTEMPTS; i++) {
        /* With several nodes the id names the node: two nodes may start restores within one
         * second, and the records of all nodes share one collection. */
        const char *node = m->cluster ? m->config->node : NULL;
        if (i == 1)
            snprintf(ret, RESTORE_ID_MAX, RESTORE_ID_PREFIX "%s%s%s", node ? node : "",
                     node ? "-" : "", stamp);
        else
            snprintf(ret, RESTORE_ID_MAX, RESTORE_ID_PREFIX "%s%s%s-%u", node ? node : "",
                     node ? "-" : "", stamp, i);
        if (!manager_find_restore(m, ret))
            return 0;
    }
    return -EEXIST;
}

/* Refuse what the worker would refuse, while the caller is still there to read why. */
static int check_restore_options(const char *target, const ManagerRestoreOptions *o, MsError *e) {
    bson_error_t be;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(target, &be);
    if (!uri) {
        /* be.message may quote the URI, password and all: say what is wrong without it. */
        return ms_error_set(e, EINVAL,
                            "the target is not a MongoDB connection string; give "
                            "mongodb://HOST[:PORT][/?OPTIONS] or mongodb+srv://HOST");
    }
    mongoc_uri_destroy(uri);
    if (ms_strv_length(o->ns_from) != ms_strv_length(o->ns_to))
        return ms_error_set(e, EINVAL,
                            "ns_from and ns_to pair up: %zu patterns against %zu; give one "
                            "target per source pattern",
                            ms_strv_length(o->ns_from), ms_strv_length(o->ns_to));
    MsNsFilter f = {
        .include = o->ns_include,
        .n_include = ms_strv_length(o->ns_include),
        .exclude = o->ns_exclude,
        .n_exclude = ms_strv_length(o->ns_exclude),
        .rename_from = o->ns_from,
        .rename_to = o->ns_to,
        .n_rename = ms_strv_length(o->ns_from),
    };
    int r = ms_ns_filter_validate(&f, e);
    if (r < 0) {
        e->code = EINVAL; /* a bad pattern is the caller's to fix, whatever the check said */
        return -EINVAL;
    }
    if (o->until) {
        MsOplogPosition pos;
        if (ms_oplog_position_parse(o->until, &pos) < 0)
            return ms_error_set(e, EINVAL,
                                "until '%s' is neither T:I (an oplog timestamp) nor an ISO 8601 "
                                "UTC time like 2026-11-22T03:10:26Z",
                                o->until);
    }
    if (o->time) {
        MsOplogPosition pos;
        if (ms_oplog_position_parse(o->time, &pos) < 0)
            return ms_error_set(e, EINVAL,
                                "time '%s' is neither an ISO 8601 UTC time like "
                                "2026-11-22T03:10:26Z nor T:I (an oplog timestamp)",
                                o->time);
        if (o->until)
            return ms_error_set(e, EINVAL,
                                "time and until cannot go together: time restores to an instant "
                                "across snapshots and oplog slices, until within one snapshot");
    }
    if (o->parallel > PARALLEL_MAX)
        return ms_error_set(e, EINVAL, "parallel must be 1 to %d, not %u", PARALLEL_MAX,
                            o->parallel);
    if (o->credential && !ms_credential_name_is_valid(o->credential))
        return ms_error_set(e, EINVAL, "'%s' is not a credential name", o->credential);
    if (o->key_credential && !ms_credential_name_is_valid(o->key_credential))
        return ms_error_set(e, EINVAL, "key_credential '%s' is not a credential name",
                            o->key_credential);
    if (o->shard_map) {
        MsShardMap map = {0};
        r = ms_shard_map_parse(o->shard_map, &map, e);
        ms_shard_map_clear(&map);
        if (r < 0) {
            e->code = EINVAL;
            return -EINVAL;
        }
    }
    return 0;
}

static void append_list(bson_t *doc, const char *key, char *const *list) {
    if (!list || !list[0])
        return;
    bson_t arr;
    char idx[16];
    const char *k;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &arr);
    for (uint32_t i = 0; list[i]; i++) {
        bson_uint32_to_string(i, &k, idx, sizeof(idx));
        bson_append_utf8(&arr, k, -1, list[i], -1);
    }
    bson_append_array_end(doc, &arr);
}

/* The options as the Options property and the catalog show them: no secret is among them. */
static char *options_json(const ManagerRestoreOptions *o) {
    bson_t doc = BSON_INITIALIZER;
    append_list(&doc, "ns_include", o->ns_include);
    append_list(&doc, "ns_exclude", o->ns_exclude);
    append_list(&doc, "ns_from", o->ns_from);
    append_list(&doc, "ns_to", o->ns_to);
    if (o->drop)
        BSON_APPEND_BOOL(&doc, "drop", true);
    if (o->no_indexes)
        BSON_APPEND_BOOL(&doc, "no_indexes", true);
    if (o->until)
        BSON_APPEND_UTF8(&doc, "until", o->until);
    if (o->time)
        BSON_APPEND_UTF8(&doc, "time", o->time);
    if (o->parallel)
        BSON_APPEND_INT32(&doc, "parallel", (int32_t) o->parallel);
    if (o->credential)
        BSON_APPEND_UTF8(&doc, "credential", o->credential);
    if (o->key_credential)
        BSON_APPEND_UTF8(&doc, "key_credential", o->key_credential);
    if (o->force)
        BSON_APPEND_BOOL(&doc, "force", true);
    if (o->shard_map)
        BSON_APPEND_UTF8(&doc, "shard_map", o->shard_map);
    if (o->part)
        BSON_APPEND_UTF8(&doc, "part", o->part);
    char *json = bson_as_relaxed_extended_json(&doc, NULL);
    bson_destroy(&doc);
    char *copy = json ? strdup(json) : NULL;
    bson_free(json);
    return copy;
}

static int restore_args(const MsSnapshotRecord *s, const ManagerRestoreOptions *o,
                        const char *credential_path, const char *key_path, char ***args) {
    size_t n = 0;
    char parallel[NUMBER_ARG_MAX];
    if (args_push(args, &n, "restore") < 0 || args_push(args, &n, "--store") < 0 ||
        args_push(args, &n, s->store) < 0 || args_push(args, &n, "--snapshot") < 0 ||
        args_push(args, &n, s->manifest_key) < 0 ||
        args_push_list(args, &n, "--ns-include", o->ns_include) < 0 ||
        args_push_list(args, &n, "--ns-exclude", o->ns_exclude) < 0)
        return -ENOMEM;
    for (size_t i = 0; o->ns_from && o->ns_from[i]; i++)
        if (args_push(args, &n, "--ns-from") < 0 || args_push(args, &n, o->ns_from[i]) < 0 ||
            args_push(args, &n, "--ns-to") < 0 || args_push(args, &n, o->ns_to[i]) < 0)
            return -ENOMEM;
    if ((o->drop && args_push(args, &n, "--drop") < 0) ||
        (o->no_indexes && args_push(args, &n, "--no-indexes") < 0) ||
        (o->until && (args_push(args, &n, "--until") < 0 || args_push(args, &n, o->until) < 0)))
        return -ENOMEM;
    /* To a time: the worker plans the slices from the policy's chain in the store, after this
     * snapshot (and refuses, changing nothing, when they do not reach the time). */
    if (o->time && (args_push(args, &n, "--prefix") < 0 || args_push(args, &n, s->policy) < 0 ||
                    args_push(args, &n, "--time") < 0 || args_push(args, &n, o->time) < 0))
        return -ENOMEM;
    if (o->shard_map &&
        (args_push(args, &n, "--shard-map") < 0 || args_push(args, &n, o->shard_map) < 0))
        return -ENOMEM;
    if (o->part && (args_push(args, &n, "--part") < 0 || args_push(args, &n, o->part) < 0))
        return -ENOMEM;
    if (o->parallel) {
        snprintf(parallel, sizeof(parallel), "%u", o->parallel);
        if (args_push(args, &n, "--parallel") < 0 || args_push(args, &n, parallel) < 0)
            return -ENOMEM;
    }
    if (credential_path &&
        (args_push(args, &n, "--password-file") < 0 || args_push(args, &n, credential_path) < 0))
        return -ENOMEM;
    if (key_path && (args_push(args, &n, "--key-file") < 0 || args_push(args, &n, key_path) < 0))
        return -ENOMEM;
    return 0;
}

/* The snapshot a restore to time starts from: the newest completed point-in-time snapshot of
 * the policy finished at or before the time (its oplog ends before it finished, so it ends
 * before the time too). The worker then checks that the slices reach the time. */
static int pick_pit_snapshot(Manager *m, const char *policy, const char *time,
                             const char **ret_id, MsError *e) {
    MsOplogPosition pos;
    if (ms_oplog_position_parse(time, &pos) < 0)
        return ms_error_set(e, EINVAL, "time '%s' is not a time", time);
    /* Finished within the time's second: its oplog may still end before the time. The worker
     * falls back to an older snapshot when it does not (and the record follows its plan). */
    uint64_t limit = (uint64_t) pos.t * 1000000u + 999999u;
    const MsSnapshotRecord *best = NULL;
    for (size_t i = 0; i < m->n_snapshots; i++) {
        const MsSnapshotRecord *s = m->snapshots[i];
        if (strcmp(s->policy, policy) != 0 || s->state != MS_SNAPSHOT_COMPLETED ||
            !s->point_in_time || s->finished_usec == 0 || s->finished_usec > limit)
            continue;
        if (!best || s->finished_usec > best->finished_usec)
            best = s;
    }
    if (!best) {
        /* The ranges as the follower last reported them, when it did. */
        char ranges[MS_ERROR_MESSAGE_MAX / 2] = "";
        ManagerFollowerStatus st;
        manager_policy_follower(m, manager_find_policy(m, policy), &st);
        size_t o = 0;
        for (size_t i = 0; i < st.n_ranges && o < sizeof(ranges); i++) {
            char a[MS_ISO8601_MAX], b[MS_ISO8601_MAX];
            ms_format_iso8601(st.ranges_usec[2 * i], a);
            ms_format_iso8601(st.ranges_usec[2 * i + 1], b);
            o += (size_t) snprintf(ranges + o, sizeof(ranges) - o, "%s%s – %s", o ? ", " : "", a,
                                   b);
        }
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_RESTORABLE, ERANGE,
                                 "policy %s has no completed point-in-time snapshot finished "
                                 "before %s, so that time cannot be restored; nothing was "
                                 "changed. Restorable: %s",
                                 policy, time, ranges[0] ? ranges : "none known yet");
    }
    *ret_id = best->id;
    return 0;
}

int manager_start_restore(Manager *m, const char *snapshot_id, const char *target,
                          const ManagerRestoreOptions *o, const MsRestoreRecord **ret_record,
                          MsError *e) {
    static const ManagerRestoreOptions no_options = {0};
    if (!o)
        o = &no_options;
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    int r = check_restore_options(target, o, e);
    if (r < 0)
        return r;
    /* To a time, the first argument may name the policy: its snapshot is picked here. */
    if (o->time && !manager_find_snapshot(m, snapshot_id)) {
        if (!manager_policy_known(m, snapshot_id))
            return ms_error_set(e, ENOENT,
                                "no policy or snapshot '%s' to restore to a time from; list them "
                                "with ListPolicies and ListSnapshots",
                                snapshot_id);
        r = pick_pit_snapshot(m, snapshot_id, o->time, &snapshot_id, e);
        if (r < 0)
            return r;
    }
    const MsSnapshotRecord *s = NULL;
    r = check_readable(m, snapshot_id, &s, e);
    if (r < 0)
        return r;
    bool cluster = manager_snapshot_is_cluster(s);
    if (o->shard_map && !cluster)
        return ms_error_set(e, EINVAL,
                            "shard_map maps a cluster snapshot's shards; snapshot %s is of one "
                            "replica set",
                            s->id);
    if (o->part && !cluster)
        return ms_error_set(e, EINVAL,
                            "part names a shard of a cluster snapshot; snapshot %s is of one "
                            "replica set",
                            s->id);
    if (o->part && (o->until || o->time || o->shard_map))
        return ms_error_set(e, EINVAL,
                            "a part of cluster snapshot %s is restored to the cluster snapshot's "
                            "consistency point, into a replica set: until, time and shard_map do "
                            "not go with part",
                            s->id);
    if (cluster && !o->part && (o->ns_include || o->ns_exclude || o->ns_from || o->until ||
                                o->no_indexes))
        return ms_error_set(e, EINVAL,
                            "snapshot %s is a cluster snapshot: it is restored whole into a "
                            "sharded cluster, each shard to its consistency point or to a time "
                            "(time); namespace filters, renames and no_indexes apply to one "
                            "shard's part restored alone into a replica set (part)",
                            s->id);
    if (o->time && !s->point_in_time)
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_RESTORABLE, EINVAL,
                                 "snapshot %s has no oplog, so no restore to a time can start "
                                 "from it; name its policy instead to have one picked",
                                 s->id);
    r = check_restore_credentials(m, target, o, e);
    if (r < 0)
        return r;
    if (s->verify_state == MS_VERIFY_FAILED && !o->force) {
        char when[MS_ISO8601_MAX] = "?";
        if (s->verify_finished_usec)
            ms_format_iso8601(s->verify_finished_usec, when);
        return ms_error_set_kind(e, MS_ERROR_KIND_SNAPSHOT_DAMAGED, EBADMSG,
                                 "snapshot %s failed its last verification (%s: %s), so it is "
                                 "not restored: verify it again (mongosnapctl verify %s) if the "
                                 "cause has gone, restore another snapshot, or pass force "
                                 "(mongosnapctl restore --force) to restore it anyway",
                                 s->id, when, s->verify_error ? s->verify_error : "damaged", s->id);
    }
    if (s->remote) {
        /* The catalog's restores name their snapshot: keep a copy of the other node's record
         * (it stays that node's: a row whose node is not this one is a cache, see
         * load_snapshots()). */
        MsSnapshotRecord *have = NULL;
        MsError ge = MS_ERROR_INIT;
        if (ms_catalog_get_snapshot(m->catalog, s->id, &have, &ge) == -ENOENT) {
            r = ms_catalog_insert_snapshot(m->catalog, s, e);
            if (r == -ENOENT)
                return ms_error_set(e, ENOENT,
                                    "snapshot %s belongs to policy '%s', which is not defined on "
                                    "this node: define it here, or restore on node %s",
                                    s->id, s->policy, s->node);
            if (r < 0)
                return r;
        }
        ms_snapshot_record_free(have);
    }
    _cleanup_free_ char *cred = NULL, *key_path = NULL;
    if (o->credential) {
        r = manager_credential_path(o->credential, &cred, e);
        if (r < 0)
            return r;
    }
    r = reader_key_path(m, s, o->key_credential, &key_path, e);
    if (r < 0)
        return r;

    char id[RESTORE_ID_MAX];
    if (new_restore_id(m, id) < 0)
        return ms_error_set_kind(e, MS_ERROR_KIND_EXISTS, EEXIST,
                                 "too many restores started this second; try again");
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *rec = calloc(1, sizeof(*rec));
    if (!rec || !(rec->id = strdup(id)) || !(rec->source_snapshot = strdup(snapshot_id)) ||
        !(rec->target = ms_uri_redact(target)) || !(rec->options = options_json(o)) ||
        !(rec->node = strdup(m->config->node)))
        return oom(e);
    rec->state = MS_RESTORE_QUEUED;
    rec->created_usec = now_usec();

    _cleanup_(reader_freep) ReadTask *t = calloc(1, sizeof(*t));
    if (!t || !(t->snapshot_id = strdup(snapshot_id)) || !(t->uri = strdup(target)) ||
        restore_args(s, o, cred, key_path, &t->args) < 0)
        return oom(e);
    t->manager = m;
    t->kind = READ_TASK_RESTORE;
    t->created_usec = rec->created_usec;
    if (manager_snapshot_is_cluster(s) && !o->part &&
        (!(t->balancer_uri = strdup(target)) || (cred && !(t->balancer_credential = strdup(cred)))))
        return oom(e);

    MsRestoreRecord **list = realloc(m->restores, (m->n_restores + 1) * sizeof(*list));
    if (!list)
        return oom(e);
    m->restores = list;
    r = ms_catalog_insert_restore(m->catalog, rec, e);
    if (r < 0)
        return r;
    r = add_reader(m, t, e);
    if (r < 0)
        return r;
    t->restore = TAKE_PTR(rec);
    m->restores[m->n_restores++] = t->restore;
    ReadTask *task = TAKE_PTR(t);
    const MsRestoreRecord *result = task->restore;

    MsEventFields f;
    fields_for(task, &f);
    (void) ms_event_log(MS_EVENT_TASK_QUEUED, &f, "restore %s of snapshot %s into %s queued",
                        result->id, snapshot_id, result->target);
    MANAGER_EMIT(m, restore_added, result);
    cluster_restore_changed(m, result);
    manager_start_queued(m);
    if (ret_record)
        *ret_record = result;
    return 0;
}

int manager_cancel_restore(Manager *m, const char *id, MsError *e) {
    for (size_t i = 0; i < m->n_read_tasks; i++) {
        ReadTask *t = m->read_tasks[i];
        if (t->kind == READ_TASK_RESTORE && strcmp(t->restore->id, id) == 0) {
            reader_stop(t, CANCELLED_ON_REQUEST, true);
            return 0;
        }
    }
    const MsRestoreRecord *r = manager_find_restore(m, id);
    if (!r)
        return ms_error_set(e, ENOENT, "no restore '%s'", id);
    if (r->remote && (r->state == MS_RESTORE_QUEUED || r->state == MS_RESTORE_RUNNING))
        return manager_cluster_forward(m, "cancel", r->node, NULL, id, e);
    return ms_error_set_kind(e, MS_ERROR_KIND_NOT_RUNNING, ESRCH,
                             "restore %s is not queued or running; nothing to cancel", id);
}

/* ---- as a part of the agent (agent-internal.h ManagerPart) ---- */

static bool reader_busy(const Manager *m) {
    return m->n_read_tasks > 0;
}

static void reader_stop_all(Manager *m) {
    /* A queued reader leaves the list when stopped: walk it from the end. */
    for (size_t i = m->n_read_tasks; i > 0; i--)
        reader_stop(m->read_tasks[i - 1], INTERRUPTED_BY_SHUTDOWN, false);
}

const ManagerPart reader_part = {
    .name = "restores and verifications",
    .load = reader_load,
    .busy = reader_busy,
    .uses_snapshot = reader_uses_snapshot,
    .flush = reader_flush_all,
    .stop = reader_stop_all,
    .free_all = reader_free_all,
};

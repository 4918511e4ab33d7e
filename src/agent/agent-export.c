/* Exports: a snapshot streamed to a client (agent-export.h). */
#include "agent/agent-export.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

typedef struct Export {
    AgentJob job;
    Manager *m;
    char *snapshot_id;
    ManagerExportDone done;
    void *userdata;
} Export;

static void export_free(Export *x) {
    if (!x)
        return;
    agent_job_reset(&x->job);
    free(x->snapshot_id);
    free(x);
}

static void export_free_job(AgentJob *j) {
    export_free(MS_CONTAINER_OF(j, Export, job));
}

static void export_end(AgentJob *j, const AgentJobEnd *end) {
    Export *x = MS_CONTAINER_OF(j, Export, job);
    Manager *m = x->m;
    bool ok = end->outcome == AGENT_JOB_SUCCEEDED;
    if (x->done)
        x->done(x->userdata, ok ? 0 : -EIO, ok ? "" : end->reason);
    agent_list_remove(&m->exports, j);
    export_free(x);
    manager_maybe_finish_shutdown(m);
}

static void export_message(AgentJob *j, const bson_t *msg) {
    agent_job_take_message(j, msg);
}

static const AgentJobType export_job_type = {
    .name = "export",
    .on_message = export_message,
    .on_end = export_end,
};

int manager_export_snapshot(Manager *m, const char *id, int fd, ManagerExportDone done,
                            void *userdata, MsError *e) {
    _cleanup_close_ int out = fd;
    const MsSnapshotRecord *r = manager_find_snapshot(m, id);
    if (!r)
        return ms_error_set(e, ENOENT, "no snapshot '%s'", id);
    if (r->state != MS_SNAPSHOT_COMPLETED || !r->manifest_key || !r->store)
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_RESTORABLE, EINVAL,
                                 "snapshot %s is %s: only a completed snapshot can be exported",
                                 id, ms_snapshot_state_to_string(r->state));
    if (manager_snapshot_is_cluster(r))
        return ms_error_set_kind(e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
                                 "snapshot %s is a cluster snapshot: one archive per shard, no "
                                 "single mongodump archive to export",
                                 id);
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is stopping and starts no export");
    if (m->exports.n >= MANAGER_EXPORTS_MAX)
        return ms_error_set_kind(e, MS_ERROR_KIND_BUSY, EBUSY,
                                 "%d exports are running already; try again when one has ended",
                                 MANAGER_EXPORTS_MAX);
    _cleanup_free_ char *key_path = NULL;
    ManagerPolicy *p = r->policy ? manager_find_policy(m, r->policy) : NULL;
    if (p && p->settings->encryption_key) {
        int k = manager_credential_path(p->settings->encryption_key, &key_path, e);
        if (k < 0)
            return k;
    }
    Export *x = calloc(1, sizeof(*x));
    if (!x || !(x->snapshot_id = strdup(id))) {
        export_free(x);
        return oom(e);
    }
    x->m = m;
    x->done = done;
    x->userdata = userdata;
    const char *args[] = {"export", "--store", r->store, "--snapshot", r->manifest_key,
                          key_path ? "--key-file" : NULL, key_path, NULL};
    AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args, .stdout_fd = out};
    int k = agent_job_spawn(&x->job, &export_job_type, m->event, &spec, e);
    if (k < 0) {
        export_free(x);
        return k;
    }
    /* The worker holds the client's pipe now; the agent's copy must go, or the client would
     * never see the end of the archive. */
    agent_list_add(&m->exports, &x->job);
    log_info("exporting snapshot %s to a client", id);
    return 0;
}

void manager_export_forget(Manager *m, void *userdata) {
    AGENT_LIST_FOREACH(j, &m->exports) {
        Export *x = MS_CONTAINER_OF(j, Export, job);
        if (x->userdata == userdata) {
            x->done = NULL;
            (void) agent_job_stop(j, "the client went away", true, 5000000);
        }
    }
}

static bool export_busy(const Manager *m) {
    return m->exports.n > 0;
}

static bool export_uses(const Manager *m, const char *id) {
    AGENT_LIST_FOREACH(j, &m->exports)
        if (strcmp(MS_CONTAINER_OF(j, Export, job)->snapshot_id, id) == 0)
            return true;
    return false;
}

static void export_stop(Manager *m) {
    agent_list_stop(&m->exports, INTERRUPTED_BY_SHUTDOWN, false, 0);
}

static void export_free_all(Manager *m) {
    agent_list_free_all(&m->exports, export_free_job);
}

const ManagerPart export_part = {
    .name = "exports",
    .busy = export_busy,
    .uses_snapshot = export_uses,
    .stop = export_stop,
    .free_all = export_free_all,
};

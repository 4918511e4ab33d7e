/* The takeover of a balancer a dead cluster snapshot's worker left stopped (agent-balancer.h). */
#include "agent/agent-balancer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef struct Takeover {
    AgentJob job;
    Manager *m;
    char *what; /* "policy P: snapshot S" or "restore R" */
} Takeover;

static void takeover_free(Takeover *t) {
    if (!t)
        return;
    agent_job_reset(&t->job);
    free(t->what);
    free(t);
}

static void takeover_free_job(AgentJob *j) {
    takeover_free(MS_CONTAINER_OF(j, Takeover, job));
}

static void takeover_end(AgentJob *j, const AgentJobEnd *end) {
    Takeover *t = MS_CONTAINER_OF(j, Takeover, job);
    Manager *m = t->m;
    if (end->outcome == AGENT_JOB_SUCCEEDED)
        log_info("%s: the balancer its worker left stopped is running again (or was started by "
                 "someone else)",
                 t->what);
    else
        log_error("%s: cannot start again the balancer its worker left stopped: %s; start it by "
                  "hand (sh.startBalancer())%s",
                  t->what, end->reason,
                  strncmp(t->what, "policy", 6) == 0 ? ", or the next snapshot of the policy will"
                                                     : "");
    agent_list_remove(&m->takeovers, j);
    takeover_free(t);
    manager_maybe_finish_shutdown(m);
}

static void takeover_message(AgentJob *j, const bson_t *msg) {
    agent_job_take_message(j, msg);
}

static const AgentJobType takeover_job_type = {
    .name = "balancer takeover",
    .on_message = takeover_message,
    .on_end = takeover_end,
};

/* One worker starting a balancer: what (for the log), its arguments and the cluster's URI. */
static void takeover_spawn(Manager *m, const char *what, const char *const *args,
                           const char *uri) {
    MsError e = MS_ERROR_INIT;
    Takeover *t = calloc(1, sizeof(*t));
    if (!t || !(t->what = strdup(what))) {
        takeover_free(t);
        log_error("%s: out of memory starting the balancer's takeover; start it by hand "
                  "(sh.startBalancer())",
                  what);
        return;
    }
    t->m = m;
    AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args, .uri = uri};
    if (agent_job_spawn(&t->job, &takeover_job_type, m->event, &spec, &e) < 0) {
        log_error("%s: cannot start the balancer's takeover: %s; start it by hand "
                  "(sh.startBalancer())",
                  what, e.message);
        takeover_free(t);
        return;
    }
    agent_list_add(&m->takeovers, &t->job);
    log_warning("%s: its worker died with the balancer stopped: starting it again", what);
}

void manager_balancer_takeover(Manager *m, const ManagerPolicy *p, const char *snapshot_id) {
    const char *name = p->settings->name;
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ char *cred = NULL;
    /* Also while the agent stops: a worker killed when its stop timed out is the main case. */
    if (m->takeovers.n >= MANAGER_TAKEOVERS_MAX ||
        (p->settings->credential && manager_credential_path(p->settings->credential, &cred, &e) < 0)) {
        log_error("policy %s: snapshot %s's worker died with the balancer stopped, and it cannot "
                  "be started again now%s%s; the next snapshot of the policy will, or start it by "
                  "hand (sh.startBalancer())",
                  name, snapshot_id, e.message[0] ? ": " : "", e.message);
        return;
    }
    const char *args[] = {"cluster-balancer", "--resume", "--store",
                          ms_policy_effective_store(p->settings, m->config), "--prefix", name,
                          "--name", snapshot_id, cred ? "--password-file" : NULL, cred, NULL};
    char what[512];
    snprintf(what, sizeof(what), "policy %s: snapshot %s", name, snapshot_id);
    takeover_spawn(m, what, args, p->settings->source);
}

void manager_balancer_start(Manager *m, const char *restore_id, const char *uri,
                            const char *credential) {
    char what[256];
    snprintf(what, sizeof(what), "restore %s", restore_id);
    if (m->takeovers.n >= MANAGER_TAKEOVERS_MAX) {
        log_error("%s: its worker died with the target cluster's balancer stopped, and too many "
                  "takeovers run to start it now: start it by hand (sh.startBalancer())",
                  what);
        return;
    }
    const char *args[] = {"cluster-balancer", "--start",
                          credential ? "--password-file" : NULL, credential, NULL};
    takeover_spawn(m, what, args, uri);
}

/* Its worker stopped a cluster's balancer and never said it runs again: it died. */
static void takeover_snapshot_ended(Manager *m, const SnapshotTask *t) {
    if (t->balancer_stopped)
        manager_balancer_takeover(m, t->policy, t->record->id);
}

static bool takeover_busy(const Manager *m) {
    return m->takeovers.n > 0;
}

/* A takeover is short (one connection, one command): shutdown lets it finish within the agent's
 * stop timeout rather than leave the balancer stopped. */
static void takeover_stop(Manager *m) {
    (void) m;
}

static void takeover_free_all(Manager *m) {
    agent_list_free_all(&m->takeovers, takeover_free_job);
}

const ManagerPart balancer_part = {
    .name = "balancer takeovers",
    .busy = takeover_busy,
    .snapshot_ended = takeover_snapshot_ended,
    .stop = takeover_stop,
    .free_all = takeover_free_all,
};

/* A cluster snapshot's part taken here for another node's coordinator (agent-shard-part.h). */
#include "agent/agent-shard-part.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strv.h"
#include "eventlog/eventlog.h"

typedef struct ShardPart {
    AgentJob job;
    Manager *m;
    char *policy;
    char *snapshot;
    char *shard;
    char *from;
    uint64_t started_usec;
} ShardPart;

static void shard_part_free(ShardPart *t) {
    if (!t)
        return;
    agent_job_reset(&t->job);
    free(t->policy);
    free(t->snapshot);
    free(t->shard);
    free(t->from);
    free(t);
}

static void shard_part_free_job(AgentJob *j) {
    shard_part_free(MS_CONTAINER_OF(j, ShardPart, job));
}

static void fields_for(const ShardPart *t, MsEventFields *f) {
    *f = (MsEventFields){.policy = t->policy, .task = t->snapshot, .node = t->m->config->node};
}

static void shard_part_end(AgentJob *j, const AgentJobEnd *end) {
    ShardPart *t = MS_CONTAINER_OF(j, ShardPart, job);
    Manager *m = t->m;
    MsEventFields f;
    fields_for(t, &f);
    f.has_elapsed = true;
    f.elapsed_usec = now_usec() - t->started_usec;
    if (end->outcome == AGENT_JOB_SUCCEEDED)
        (void) ms_event_log(MS_EVENT_PART_STORED, &f,
                            "%s: part %s taken here for node %s's cluster snapshot, stored", t->snapshot,
                            t->shard, t->from);
    else {
        f.error = end->reason;
        (void) ms_event_log(MS_EVENT_TASK_FAILED, &f,
                            "%s: part %s, taken here for node %s's cluster snapshot, %s: %s",
                            t->snapshot, t->shard, t->from,
                            end->outcome == AGENT_JOB_FAILED ? "failed" : "was stopped",
                            end->reason);
    }
    agent_list_remove(&m->shard_parts, j);
    shard_part_free(t);
    manager_maybe_finish_shutdown(m);
}

static void shard_part_message(AgentJob *j, const bson_t *msg) {
    agent_job_take_message(j, msg);
}

static const AgentJobType shard_part_job_type = {
    .name = "cluster snapshot part",
    .on_message = shard_part_message,
    .on_end = shard_part_end,
};

/* "<policy>-YYYYMMDDTHHMMSSZ[-N]", as new_snapshot_id() names a policy's snapshots. */
static bool snapshot_of_policy(const char *snapshot, const char *policy) {
    size_t n = strlen(policy);
    if (strncmp(snapshot, policy, n) != 0 || snapshot[n] != '-')
        return false;
    static const char stamp[] = "########T######Z"; /* '#': a digit */
    const char *s = snapshot + n + 1;
    for (size_t i = 0; i < sizeof(stamp) - 1; i++) /* stops at the NUL of a short one */
        if (stamp[i] == '#' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != stamp[i])
            return false;
    s += sizeof(stamp) - 1;
    if (!*s)
        return true;
    size_t digits = strspn(s + 1, "0123456789");
    return s[0] == '-' && digits >= 1 && digits <= 3 && !s[1 + digits];
}

int manager_take_part(Manager *m, const char *policy, const char *task, const char *from,
                      MsError *e) {
    const char *slash = task ? strchr(task, '/') : NULL;
    if (!policy || !slash || slash == task || !slash[1] || strchr(slash + 1, '/'))
        return ms_error_set(e, EINVAL, "take-part needs a policy and SNAPSHOT/SHARD, not '%s'",
                            task ? task : "");
    if (m->stopping)
        return ms_error_set(e, ESHUTDOWN, "the agent is shutting down");
    ManagerPolicy *p = manager_find_policy(m, policy);
    if (!p)
        return ms_error_set(e, ENOENT,
                            "no policy '%s' here: every node needs the cluster policy's file",
                            policy);
    if (m->shard_parts.n >= MANAGER_SHARD_PARTS_MAX)
        return ms_error_set(e, EBUSY, "%u cluster snapshot parts run here already",
                            MANAGER_SHARD_PARTS_MAX);
    _cleanup_free_ char *snapshot = strndup(task, (size_t) (slash - task));
    if (!snapshot)
        return ms_error_oom(e);
    /* The command comes through the cluster database, which others may write: the names go
     * into store keys and worker arguments only in the shape this agent gives them. */
    if (!snapshot_of_policy(snapshot, policy) || !ms_policy_name_is_valid(slash + 1))
        return ms_error_set(e, EINVAL,
                            "take-part of '%s' refused: not a snapshot of policy %s "
                            "(%s-YYYYMMDDTHHMMSSZ) and a shard name (letters, digits, '_', '.', "
                            "'-'); no worker was started",
                            task, policy, policy);
    ShardPart *t = calloc(1, sizeof(*t));
    if (!t || !(t->policy = strdup(policy)) || !(t->shard = strdup(slash + 1)) ||
        !(t->from = strdup(from ? from : "?"))) {
        shard_part_free(t);
        return ms_error_oom(e);
    }
    t->snapshot = TAKE_PTR(snapshot);
    AGENT_LIST_FOREACH(j, &m->shard_parts) {
        const ShardPart *running = MS_CONTAINER_OF(j, ShardPart, job);
        if (strcmp(running->snapshot, t->snapshot) == 0 && strcmp(running->shard, t->shard) == 0) {
            shard_part_free(t);
            return 0; /* asked twice: it runs */
        }
    }
    t->m = m;
    _cleanup_free_ char *cred = NULL, *key_path = NULL;
    int r = 0;
    if (p->settings->credential)
        r = manager_credential_path(p->settings->credential, &cred, e);
    if (r == 0 && p->settings->encryption_key)
        r = manager_credential_path(p->settings->encryption_key, &key_path, e);
    /* The policy's own settings (compression, key, credential), as its snapshots take; the
     * coordinator checks the part's manifest against its key. */
    _cleanup_free_ const char **args =
        r == 0 ? calloc(MANAGER_SNAPSHOT_ARGS_MAX + 10 +
                            2 * (ms_strv_length(p->settings->include_namespaces) +
                                 ms_strv_length(p->settings->exclude_namespaces)),
                        sizeof(char *))
               : NULL;
    if (r == 0 && !args)
        r = ms_error_oom(e);
    if (r < 0) {
        shard_part_free(t);
        return r;
    }
    MsSnapshotRecord rec = {.id = t->snapshot, .origin = MS_SNAPSHOT_ORIGIN_SCHEDULED};
    char level_buf[MANAGER_NUMBER_ARG_MAX], parallel_buf[MANAGER_NUMBER_ARG_MAX],
        seq_buf[MANAGER_SEQ_ARG_MAX], timeout_buf[MANAGER_NUMBER_ARG_MAX];
    manager_build_snapshot_args(m, p, &rec, cred, key_path, level_buf, parallel_buf, seq_buf, args);
    size_t k = 0;
    while (args[k])
        k++;
    args[0] = "cluster-part";
    args[k++] = "--shard";
    args[k++] = t->shard;
    args[k++] = "--via-cluster";
    /* The member beside this node, read directly: what NodePriority= chose it for. */
    if (m->config->cluster_member) {
        args[k++] = "--member";
        args[k++] = m->config->cluster_member;
    }
    snprintf(timeout_buf, sizeof(timeout_buf), "%u", m->config->cluster_lease_sec);
    args[k++] = "--part-timeout";
    args[k++] = timeout_buf;
    args[k] = NULL;
    AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args,
                          .uri = p->settings->source};
    r = agent_job_spawn(&t->job, &shard_part_job_type, m->event, &spec, e);
    if (r < 0) {
        shard_part_free(t);
        return r;
    }
    t->started_usec = now_usec();
    agent_list_add(&m->shard_parts, &t->job);
    MsEventFields f;
    fields_for(t, &f);
    (void) ms_event_log(MS_EVENT_TASK_STARTED, &f,
                        "%s: part %s of node %s's cluster snapshot started here (worker %d)",
                        t->snapshot, t->shard, t->from, (int) agent_task_pid(t->job.worker));
    return 0;
}

static bool shard_parts_busy(const Manager *m) {
    return m->shard_parts.n > 0;
}

/* Shutdown: each part stops (its coordinator gives the cluster snapshot up, naming the shard). */
static void shard_parts_stop(Manager *m) {
    agent_list_stop(&m->shard_parts, "the agent is stopping", false, MANAGER_STOP_GRACE_USEC);
}

static void shard_parts_free_all(Manager *m) {
    agent_list_free_all(&m->shard_parts, shard_part_free_job);
}

const ManagerPart shard_part_part = {
    .name = "cluster snapshot parts",
    .busy = shard_parts_busy,
    .stop = shard_parts_stop,
    .free_all = shard_parts_free_all,
};

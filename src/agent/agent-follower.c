/* The oplog followers of point-in-time recovery: one `mongosnap-worker follow` per policy with
 * [PointInTime] Enabled=yes whose policy is active, outside the task queue (it runs for as long
 * as the policy does, so it takes no worker slot).
 *
 * Life cycle: reconcile() compares what should run with what does whenever the policies are
 * loaded or one changes (Stop, Start, Edit, Delete): a follower starts, or is stopped (SIGTERM:
 * it commits what it read, then exits), or is restarted when a setting it depends on changed.
 * A follower that ends on its own failed: it is started again after a delay that doubles with
 * each failure in a row (FOLLOWER_BACKOFF_*), and a committed slice resets the count. The
 * worker lists the store's chain itself, so a restart continues where the last committed slice
 * ends: no entry twice, none missing. At shutdown every follower is stopped and the agent waits
 * for their last slices (busy). */
#include "agent/agent-follower.h"

#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strv.h"
#include "engine/manifest.h"
#include "eventlog/eventlog.h"
#include "mongosnap/mongosnap.h"

#define FOLLOWER_BACKOFF_FIRST_USEC (2ULL * 1000000ULL)
#define FOLLOWER_BACKOFF_MAX_USEC (300ULL * 1000000ULL)
#define FOLLOWER_ARGS_MAX 32
#define CHAIN_READS_MAX 4

typedef enum FollowerState {
    FOLLOWER_STARTING,
    FOLLOWER_FOLLOWING,
    FOLLOWER_RESTARTING,
    FOLLOWER_STOPPING,
    FOLLOWER_STOPPED, /* its policy is stopped: kept, with what it last reported */
} FollowerState;

static const char *const follower_state_names[] = {
    [FOLLOWER_STARTING] = "starting",
    [FOLLOWER_FOLLOWING] = "following",
    [FOLLOWER_RESTARTING] = "restarting",
    [FOLLOWER_STOPPING] = "stopping",
    [FOLLOWER_STOPPED] = "stopped",
};

typedef struct Follower {
    AgentFollowers *all;
    char *policy;
    AgentJob job;
    FollowerState state;
    /* What it was started with: a change of any of them restarts it. */
    char *started_with;
    unsigned failures; /* in a row */
    sd_event_source *restart_timer;
    bool restart_now; /* stopped to be started again (a setting changed) */
    char *last_error;
    uint64_t last_slice_usec, lag_usec, slices;
    uint64_t *ranges_usec; /* pairs */
    size_t n_ranges;
} Follower;

/* A ListSlices or VerifyChain under way: a list-slices or verify-chain worker. */
typedef struct ChainRead {
    AgentFollowers *all;
    AgentJob job;
    ManagerChainDone done;
    void *token;
    ManagerChainResult result;
    struct ChainRead *next;
} ChainRead;

struct AgentFollowers {
    Manager *m;
    Follower **v;
    size_t n;
    bool reconciling;
    ChainRead *reads;
};

static AgentFollowers *followers_of(Manager *m) {
    if (!m->followers) {
        m->followers = calloc(1, sizeof(*m->followers));
        if (m->followers)
            m->followers->m = m;
    }
    return m->followers;
}

static Follower *find(const Manager *m, const char *policy) {
    for (size_t i = 0; m->followers && i < m->followers->n; i++)
        if (strcmp(m->followers->v[i]->policy, policy) == 0)
            return m->followers->v[i];
    return NULL;
}

static void follower_free(Follower *f) {
    if (!f)
        return;
    agent_job_reset(&f->job);
    sd_event_source_disable_unref(f->restart_timer);
    free(f->policy);
    free(f->started_with);
    free(f->last_error);
    free(f->ranges_usec);
    free(f);
}

static void drop(AgentFollowers *all, Follower *f) {
    MS_ARRAY_REMOVE(all->v, all->n, f);
    follower_free(f);
}

static void announce(Follower *f) {
    Manager *m = f->all->m;
    ManagerPolicy *p = manager_find_policy(m, f->policy);
    if (p)
        manager_emit_policy_changed(m, p);
}

/* What the follower depends on, as one string: a change of any restarts it. No secret: the
 * credential and key are names, the source has no password. */
static char *settings_fingerprint(const Manager *m, const MsPolicy *s) {
    char *out = NULL;
    const char *store = ms_policy_effective_store(s, m->config);
    if (asprintf(&out, "%s|%s|%s|%s|%" PRIu64 "|%d|%s", s->source ? s->source : "",
                 store ? store : "", s->credential ? s->credential : "",
                 s->encryption_key ? s->encryption_key : "", s->pit_slice_usec,
                 (int) ms_policy_slice_compression(s), m->config->node) < 0)
        return NULL;
    return out;
}

/* Should p's follower run here now? */
static bool wanted(const Manager *m, const ManagerPolicy *p) {
    return !m->stopping && p && !p->removed && p->settings->pit_enabled &&
           p->runtime->state == MS_POLICY_ACTIVE &&
           ms_policy_effective_store(p->settings, m->config) != NULL &&
           manager_coordination->may_follow(m, p);
}

static void set_error(Follower *f, const char *msg) {
    free(f->last_error);
    f->last_error = msg ? strdup(msg) : NULL;
}

static const AgentJobType follower_job_type;
static void schedule_restart(Follower *f);

/* Not wanted any more: a follower whose policy is only stopped is kept (stopped), so that its
 * last slice and the restorable ranges stay shown; any other goes. */
static void park_or_drop(Follower *f, const ManagerPolicy *p) {
    Manager *m = f->all->m;
    f->restart_timer = sd_event_source_disable_unref(f->restart_timer);
    if (p && !p->removed && !m->stopping && p->settings->pit_enabled &&
        p->runtime->state == MS_POLICY_STOPPED) {
        f->state = FOLLOWER_STOPPED;
        f->restart_now = false;
        return;
    }
    drop(f->all, f);
}

static int start(Follower *f, MsError *e) {
    Manager *m = f->all->m;
    ManagerPolicy *p = manager_find_policy(m, f->policy);
    if (!p)
        return ms_error_set(e, ENOENT, "policy %s is gone", f->policy);
    const MsPolicy *s = p->settings;
    _cleanup_free_ char *cred = NULL, *key_path = NULL;
    if (s->credential && manager_credential_path(s->credential, &cred, e) < 0)
        return -e->code;
    if (s->encryption_key && manager_credential_path(s->encryption_key, &key_path, e) < 0)
        return -e->code;
    char slice_sec[24];
    snprintf(slice_sec, sizeof(slice_sec), "%" PRIu64, s->pit_slice_usec / 1000000u);
    const char *args[FOLLOWER_ARGS_MAX];
    size_t k = 0;
    args[k++] = "follow";
    args[k++] = "--store";
    args[k++] = ms_policy_effective_store(s, m->config);
    args[k++] = "--prefix";
    args[k++] = s->name;
    args[k++] = "--node";
    args[k++] = m->config->node;
    args[k++] = "--slice-sec";
    args[k++] = slice_sec;
    args[k++] = "--compression";
    args[k++] = ms_compression_to_string(ms_policy_slice_compression(s));
    if (cred) {
        args[k++] = "--password-file";
        args[k++] = cred;
    }
    if (key_path) {
        args[k++] = "--key-file";
        args[k++] = key_path;
    }
    args[k] = NULL;
    AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args, .uri = s->source};
    free(f->started_with);
    f->started_with = settings_fingerprint(m, s);
    int r = agent_job_spawn(&f->job, &follower_job_type, m->event, &spec, e);
    if (r < 0)
        return r;
    f->state = FOLLOWER_STARTING;
    (void) ms_event_log(MS_EVENT_FOLLOWER_STARTED,
                        &(MsEventFields){.policy = f->policy, .node = m->config->node},
                        "oplog follower of policy %s started (worker %d, a slice every %s s)",
                        f->policy, (int) agent_task_pid(f->job.worker), slice_sec);
    return 0;
}

static void start_or_retry(Follower *f) {
    MsError e = MS_ERROR_INIT;
    if (start(f, &e) >= 0) {
        announce(f);
        return;
    }
    f->failures++;
    set_error(f, e.message);
    (void) ms_event_log(MS_EVENT_FOLLOWER_FAILED,
                        &(MsEventFields){.policy = f->policy,
                                         .node = f->all->m->config->node,
                                         .error = e.message},
                        "oplog follower of policy %s could not start: %s", f->policy, e.message);
    schedule_restart(f);
}

static int on_restart_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Follower *f = userdata;
    f->restart_timer = sd_event_source_disable_unref(f->restart_timer);
    Manager *m = f->all->m;
    ManagerPolicy *p = manager_find_policy(m, f->policy);
    if (!wanted(m, p)) {
        park_or_drop(f, p);
        return 0;
    }
    start_or_retry(f);
    return 0;
}

static void schedule_restart(Follower *f) {
    uint64_t delay = FOLLOWER_BACKOFF_FIRST_USEC;
    for (unsigned i = 1; i < f->failures && delay < FOLLOWER_BACKOFF_MAX_USEC; i++)
        delay *= 2;
    delay = MS_MIN(delay, FOLLOWER_BACKOFF_MAX_USEC);
    f->state = FOLLOWER_RESTARTING;
    sd_event_source_disable_unref(f->restart_timer);
    f->restart_timer = NULL;
    if (sd_event_add_time_relative(f->all->m->event, &f->restart_timer, CLOCK_MONOTONIC, delay, 0,
                                   on_restart_timer, f) < 0)
        log_error("cannot schedule the restart of the oplog follower of %s", f->policy);
    announce(f);
}

/* ---- the worker's messages ---- */

static bool read_position(const bson_t *doc, const char *key, MsOplogPosition *ret) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key))
        return false;
    if (BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        bson_iter_timestamp(&it, &ret->t, &ret->i);
        return true;
    }
    bson_iter_t child;
    if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &child))
        return false;
    uint64_t t = 0, i = 0;
    while (bson_iter_next(&child)) {
        if (strcmp(bson_iter_key(&child), "t") == 0 && BSON_ITER_HOLDS_NUMBER(&child))
            t = (uint64_t) bson_iter_as_int64(&child);
        else if (strcmp(bson_iter_key(&child), "i") == 0 && BSON_ITER_HOLDS_NUMBER(&child))
            i = (uint64_t) bson_iter_as_int64(&child);
    }
    *ret = (MsOplogPosition){(uint32_t) MS_MIN(t, UINT32_MAX), (uint32_t) MS_MIN(i, UINT32_MAX)};
    return true;
}

/* msg's array key of {from, to} positions as (from, to) pairs of microseconds (to the
 * second); false when it has none. */
static bool read_ranges(const bson_t *msg, const char *key, uint64_t **ret, size_t *ret_n) {
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, msg, key) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return false;
    uint64_t *v = NULL;
    size_t n = 0;
    while (bson_iter_next(&arr)) {
        const uint8_t *data;
        uint32_t len;
        bson_t item;
        MsOplogPosition from, to;
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
            continue;
        bson_iter_document(&arr, &len, &data);
        if (!bson_init_static(&item, data, len) || !read_position(&item, "from", &from) ||
            !read_position(&item, "to", &to))
            continue;
        uint64_t *grown = realloc(v, (n + 1) * 2 * sizeof(*v));
        if (!grown) {
            free(v);
            return false;
        }
        v = grown;
        v[2 * n] = (uint64_t) from.t * 1000000u;
        v[2 * n + 1] = (uint64_t) to.t * 1000000u;
        n++;
    }
    *ret = v;
    *ret_n = n;
    return true;
}

static void take_ranges(Follower *f, const bson_t *msg) {
    uint64_t *v;
    size_t n;
    if (!read_ranges(msg, "restorable", &v, &n))
        return;
    free(f->ranges_usec);
    f->ranges_usec = v;
    f->n_ranges = n;
}

static void follower_job_message(AgentJob *j, const bson_t *msg) {
    Follower *f = MS_CONTAINER_OF(j, Follower, job);
    const char *event = ms_bson_str(msg, "event");
    if (!event)
        return;
    Manager *m = f->all->m;
    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_SLICE) == 0) {
        f->last_slice_usec = now_usec();
        f->lag_usec = ms_bson_u64(msg, "lag_usec");
        f->slices++;
        f->failures = 0;
        if (f->state == FOLLOWER_STARTING)
            f->state = FOLLOWER_FOLLOWING;
        announce(f);
    } else if (strcmp(event, "ranges") == 0) {
        take_ranges(f, msg);
        if (f->state == FOLLOWER_STARTING)
            f->state = FOLLOWER_FOLLOWING;
        announce(f);
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_GAP) == 0) {
        MsOplogPosition from = {0, 0}, to = {0, 0};
        read_position(msg, "from", &from);
        read_position(msg, "to", &to);
        char what[256];
        snprintf(what, sizeof(what),
                 "entries after %" PRIu32 ":%" PRIu32 " and before %" PRIu32 ":%" PRIu32
                 " are no longer in the oplog",
                 from.t, from.i, to.t, to.i);
        (void) ms_event_log(MS_EVENT_OPLOG_GAP,
                            &(MsEventFields){.policy = f->policy, .node = m->config->node,
                                             .error = what},
                            "gap in the oplog chain of policy %s: %s; a new chain begins", f->policy,
                            what);
    }
}

static void follower_job_end(AgentJob *j, const AgentJobEnd *end) {
    Follower *f = MS_CONTAINER_OF(j, Follower, job);
    Manager *m = f->all->m;
    bool asked = j->stop_reason != NULL;
    const char *reason = end->reason[0] ? end->reason : "the worker exited";
    agent_job_reset(&f->job);
    ManagerPolicy *p = manager_find_policy(m, f->policy);
    if (asked) {
        (void) ms_event_log(MS_EVENT_FOLLOWER_STOPPED,
                            &(MsEventFields){.policy = f->policy, .node = m->config->node,
                                             .error = reason},
                            "oplog follower of policy %s stopped: %s", f->policy, reason);
    } else {
        f->failures++;
        set_error(f, reason);
        (void) ms_event_log(MS_EVENT_FOLLOWER_FAILED,
                            &(MsEventFields){.policy = f->policy, .node = m->config->node,
                                             .error = reason},
                            "oplog follower of policy %s failed: %s", f->policy, reason);
    }
    if (!wanted(m, p)) {
        park_or_drop(f, p);
        if (p)
            manager_emit_policy_changed(m, p);
        manager_maybe_finish_shutdown(m);
        return;
    }
    if (f->restart_now) {
        f->restart_now = false;
        start_or_retry(f);
        return;
    }
    schedule_restart(f);
}

static const AgentJobType follower_job_type = {
    .name = "oplog follower",
    .on_message = follower_job_message,
    .on_end = follower_job_end,
};

/* ---- what should run ---- */

static void stop_follower(Follower *f, const char *why, bool restart) {
    f->restart_now = restart;
    if (f->job.worker) {
        f->state = FOLLOWER_STOPPING;
        (void) agent_job_stop(&f->job, why, true, MANAGER_STOP_GRACE_USEC);
        announce(f);
        return;
    }
    /* Waiting to restart, or stopped: nothing runs. */
    if (restart) {
        f->restart_timer = sd_event_source_disable_unref(f->restart_timer);
        start_or_retry(f);
    } else
        park_or_drop(f, manager_find_policy(f->all->m, f->policy));
}

static void reconcile(Manager *m) {
    AgentFollowers *all = followers_of(m);
    if (!all || all->reconciling)
        return;
    all->reconciling = true;
    /* Followers whose policy should not have one now. */
    for (size_t i = all->n; i > 0; i--) {
        Follower *f = all->v[i - 1];
        ManagerPolicy *p = manager_find_policy(m, f->policy);
        if (f->state == FOLLOWER_STOPPING)
            continue;
        if (f->state == FOLLOWER_STOPPED) {
            if (wanted(m, p))
                start_or_retry(f); /* the policy was started again */
            else
                park_or_drop(f, p);
            continue;
        }
        if (!wanted(m, p)) {
            stop_follower(f, p && p->runtime->state == MS_POLICY_STOPPED ? "the policy was stopped"
                             : m->stopping                         ? "the agent is stopping"
                             : p && p->settings->pit_enabled
                                 ? "another node holds the follower's lease (or this one lost it)"
                                 : "point-in-time recovery is off for the policy",
                          false);
            continue;
        }
        _cleanup_free_ char *now = settings_fingerprint(m, p->settings);
        if (now && f->started_with && strcmp(now, f->started_with) != 0)
            stop_follower(f, "the policy's settings changed; it starts again with them", true);
    }
    /* Policies that should have one and do not. */
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        if (!wanted(m, p) || find(m, p->settings->name))
            continue;
        Follower **grown = realloc(all->v, (all->n + 1) * sizeof(*grown));
        Follower *f = calloc(1, sizeof(*f));
        if (grown)
            all->v = grown;
        if (!grown || !f || !(f->policy = strdup(p->settings->name))) {
            free(f);
            log_error("out of memory starting the oplog follower of %s", p->settings->name);
            continue;
        }
        f->all = all;
        all->v[all->n++] = f;
        start_or_retry(f);
    }
    all->reconciling = false;
}

static void followers_policies_loaded(Manager *m) {
    reconcile(m);
}

static void followers_policy_changed(Manager *m) {
    reconcile(m);
}

/* The follower reads the snapshots' manifests again at its next slice (SIGUSR1, the worker's
 * "refresh" signal), so that the restorable ranges include a new snapshot at once rather than
 * at its next periodic refresh. */
static void followers_snapshots_changed(Manager *m, const char *policy) {
    Follower *f = find(m, policy);
    if (f && f->job.worker)
        (void) agent_task_kill(f->job.worker, SIGUSR1);
}

/* ---- ListSlices, VerifyChain ---- */

static void chain_result_clear(ManagerChainResult *r) {
    for (size_t i = 0; i < r->n_slices; i++)
        free(r->slices[i].key);
    free(r->slices);
    free(r->chains_usec);
    ms_strv_free(r->problems);
    memset(r, 0, sizeof(*r));
}

static void chain_read_unlink(ChainRead *c) {
    for (ChainRead **p = &c->all->reads; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
}

static void chain_read_message(AgentJob *j, const bson_t *msg) {
    ChainRead *c = MS_CONTAINER_OF(j, ChainRead, job);
    const char *event = ms_bson_str(msg, "event");
    if (!event)
        return;
    ManagerChainResult *r = &c->result;
    if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_SLICE) == 0) {
        MsOplogPosition a = {0, 0}, b = {0, 0};
        const char *key = ms_bson_str(msg, "key");
        ManagerSlice *grown = realloc(r->slices, (r->n_slices + 1) * sizeof(*grown));
        if (!key || !grown)
            return;
        r->slices = grown;
        read_position(msg, "start", &a);
        read_position(msg, "end", &b);
        bson_iter_t it;
        bool idle = bson_iter_init_find(&it, msg, "idle") && BSON_ITER_HOLDS_BOOL(&it) &&
                    bson_iter_bool(&it);
        char *k = strdup(key);
        if (!k)
            return;
        r->slices[r->n_slices++] = (ManagerSlice){
            .key = k, .start_usec = (uint64_t) a.t * 1000000u, .end_usec = (uint64_t) b.t * 1000000u,
            .idle = idle};
    } else if (strcmp(event, "problem") == 0) {
        char *line = NULL;
        if (asprintf(&line, "%s: %s", ms_bson_str(msg, "key") ?: "?",
                     ms_bson_str(msg, "message") ?: "damaged") >= 0) {
            (void) ms_strv_push(&r->problems, line);
            free(line);
        }
    } else if (strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) == 0 && agent_msg_has(msg, "damaged")) {
        r->verified = true;
        r->damaged = ms_bson_u64(msg, "damaged");
        r->gaps = ms_bson_u64(msg, "gaps");
        r->entries = ms_bson_u64(msg, "entries");
        free(r->chains_usec);
        r->chains_usec = NULL;
        r->n_chains = 0;
        (void) read_ranges(msg, "chains", &r->chains_usec, &r->n_chains);
    }
}

static void chain_read_end(AgentJob *j, const AgentJobEnd *end) {
    ChainRead *c = MS_CONTAINER_OF(j, ChainRead, job);
    Manager *m = c->all->m;
    chain_read_unlink(c);
    /* A damaged slice is an answer (the counts say so), not a failure of the call. */
    if (end->outcome == AGENT_JOB_SUCCEEDED || (c->result.verified && c->result.damaged > 0))
        c->done(m, c->token, &c->result, NULL);
    else {
        MsError e = MS_ERROR_INIT;
        ms_error_set(&e, EIO, "reading the chain of oplog slices failed: %s",
                     end->reason[0] ? end->reason : "the worker failed");
        c->done(m, c->token, NULL, &e);
    }
    agent_job_reset(&c->job);
    chain_result_clear(&c->result);
    free(c);
    manager_maybe_finish_shutdown(m);
}

static const AgentJobType chain_read_type = {
    .name = "oplog slice chain",
    .on_message = chain_read_message,
    .on_end = chain_read_end,
};

int manager_policy_chain(Manager *m, ManagerPolicy *p, bool verify, ManagerChainDone done,
                         void *token, MsError *e) {
    if (m->stopping)
        return ms_error_set_kind(e, MS_ERROR_KIND_SHUTTING_DOWN, ESHUTDOWN,
                                 "the agent is shutting down; try again once it is back");
    const MsPolicy *s = p->settings;
    const char *store = ms_policy_effective_store(s, m->config);
    if (!store)
        return ms_error_set(e, ENXIO, "policy %s has no store (Store= or DefaultStore=)", s->name);
    AgentFollowers *all = followers_of(m);
    /* Each call forks a worker that reads the store: a few at once, so that no caller can
     * make the agent fork without bound. */
    size_t running = 0;
    for (ChainRead *c = all ? all->reads : NULL; c; c = c->next)
        running++;
    if (running >= CHAIN_READS_MAX)
        return ms_error_set_kind(e, MS_ERROR_KIND_BUSY, EBUSY,
                                 "%zu reads of oplog slice chains are under way already; try "
                                 "again when they end",
                                 running);
    _cleanup_free_ char *key_path = NULL;
    if (verify && s->encryption_key && manager_credential_path(s->encryption_key, &key_path, e) < 0)
        return -e->code;
    ChainRead *c = calloc(1, sizeof(*c));
    if (!all || !c) {
        free(c);
        return oom(e);
    }
    const char *args[12];
    size_t k = 0;
    args[k++] = verify ? "verify-chain" : "list-slices";
    args[k++] = "--store";
    args[k++] = store;
    args[k++] = "--prefix";
    args[k++] = s->name;
    if (key_path) {
        args[k++] = "--key-file";
        args[k++] = key_path;
    }
    args[k] = NULL;
    AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args};
    c->all = all;
    c->done = done;
    c->token = token;
    int r = agent_job_spawn(&c->job, &chain_read_type, m->event, &spec, e);
    if (r < 0) {
        free(c);
        return r;
    }
    c->next = all->reads;
    all->reads = c;
    return 0;
}

static bool followers_busy(const Manager *m) {
    if (m->followers && m->followers->reads)
        return true;
    for (size_t i = 0; m->followers && i < m->followers->n; i++)
        if (m->followers->v[i]->job.worker)
            return true;
    return false;
}

static void followers_stop(Manager *m) {
    for (ChainRead *c = m->followers ? m->followers->reads : NULL; c; c = c->next)
        (void) agent_job_stop(&c->job, "the agent is stopping", false, MANAGER_STOP_GRACE_USEC);
    for (size_t i = m->followers ? m->followers->n : 0; i > 0; i--) {
        Follower *f = m->followers->v[i - 1];
        if (f->job.worker) {
            f->state = FOLLOWER_STOPPING;
            (void) agent_job_stop(&f->job, "the agent is stopping", false, MANAGER_STOP_GRACE_USEC);
        } else
            drop(m->followers, f);
    }
}

static void followers_free_all(Manager *m) {
    if (!m->followers)
        return;
    while (m->followers->reads) {
        ChainRead *c = m->followers->reads;
        m->followers->reads = c->next;
        MsError e = MS_ERROR_INIT;
        ms_error_set(&e, ESHUTDOWN, "the agent stopped before the chain was read");
        c->done(m, c->token, NULL, &e);
        agent_job_reset(&c->job);
        chain_result_clear(&c->result);
        free(c);
    }
    for (size_t i = 0; i < m->followers->n; i++)
        follower_free(m->followers->v[i]);
    free(m->followers->v);
    free(m->followers);
    m->followers = NULL;
}

const ManagerPart follower_part = {
    .name = "oplog follower",
    .policies_loaded = followers_policies_loaded,
    .policy_changed = followers_policy_changed,
    .snapshots_changed = followers_snapshots_changed,
    .busy = followers_busy,
    .stop = followers_stop,
    .free_all = followers_free_all,
};

void manager_policy_follower(const Manager *m, const ManagerPolicy *p, ManagerFollowerStatus *ret) {
    *ret = (ManagerFollowerStatus){.state = "off", .last_error = ""};
    if (!p || !p->settings->pit_enabled)
        return;
    const Follower *f = find(m, p->settings->name);
    if (!f) {
        ret->state = p->runtime->state == MS_POLICY_STOPPED   ? "stopped"
                     : !manager_coordination->may_follow(m, p) ? "elsewhere"
                                                              : "off";
        return;
    }
    ret->state = follower_state_names[f->state];
    ret->last_slice_usec = f->last_slice_usec;
    ret->lag_usec = f->lag_usec;
    ret->slices = f->slices;
    ret->last_error = f->last_error ? f->last_error : "";
    ret->ranges_usec = f->ranges_usec;
    ret->n_ranges = f->n_ranges;
}

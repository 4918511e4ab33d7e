/* Several nodes: one snapshot per policy per cluster, the records of every node, operations
 * that reach the node running the task, and policy drift, through the shared collections of
 * cluster/cluster-store.h.
 *
 * Every call into the cluster database is made from the event loop and bounded: a member that
 * refuses connections fails at once, one that does not answer within MS_CLUSTER_TIMEOUT_MS
 * (docs/architecture.md, "Several nodes", says why this beats a thread here). All of it happens
 * in one heartbeat every HeartbeatSec=, plus the claim of a TakeSnapshot call. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-calendar.h"
#include "agent/agent-cluster.h"
#include "agent/agent-internal.h"
#include "agent/agent-shard-part.h"
#include "cluster/cluster-store.h"
#include "cluster/record-mac.h"
#include "common/log.h"
#include "common/redact.h"
#include "config.h"
#include "engine/uri-auth.h"
#include "eventlog/eventlog.h"

#define USEC_PER_SEC 1000000ull
/* A credential file holds one password line. */
#define PASSWORD_MAX 1024

typedef struct AgentCluster {
    Manager *m;
    MsCluster *db;
    sd_event_source *timer;
    bool reachable;       /* the last heartbeat got through */
    bool ever_polled;     /* a heartbeat has run (reachable or not) */
    char *status;         /* "connected" or "unreachable: ..." */
    uint64_t synced_usec; /* records are read from here on at the next heartbeat (0: all) */
    char **dirty_snapshots;
    size_t n_dirty_snapshots;
    char **dirty_restores;
    size_t n_dirty_restores;
    /* "NODE=MEMBER" of each live agent beside a member, as the last heartbeat listed them:
     * a cluster snapshot hands its parts out from here, without a query on the event loop. */
    char **part_agents;
} AgentCluster;

static uint64_t lease_usec(const Manager *m) {
    return (uint64_t) m->config->cluster_lease_sec * USEC_PER_SEC;
}

static const char *self(const Manager *m) {
    return m->config->node;
}

bool manager_cluster_enabled(const Manager *m) {
    return m->cluster != NULL;
}

const char *manager_cluster_status(const Manager *m) {
    if (!m->cluster)
        return "";
    return m->cluster->status ? m->cluster->status : "connecting";
}

/* ---- dirty records: written at the next heartbeat ---- */
static void mark(char ***list, size_t *n, const char *id) {
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*list)[i], id) == 0)
            return;
    char **v = realloc(*list, (*n + 1) * sizeof(char *));
    if (!v)
        return;
    *list = v;
    if ((v[*n] = strdup(id)))
        (*n)++;
}

/* Forget the first done marks (written), keeping the rest for the next call. */
static void clear_marks(char **list, size_t *n, size_t done) {
    for (size_t i = 0; i < done; i++)
        free(list[i]);
    if (done < *n)
        memmove(list, list + done, (*n - done) * sizeof(*list));
    *n -= done;
}

void cluster_record_changed(Manager *m, const MsSnapshotRecord *r) {
    if (m->cluster && !r->remote)
        mark(&m->cluster->dirty_snapshots, &m->cluster->n_dirty_snapshots, r->id);
}

int cluster_publish_foreign(Manager *m, const MsSnapshotRecord *r, MsError *e) {
    if (!m->cluster)
        return 0;
    return ms_cluster_put_snapshot(m->cluster->db, r, now_usec(), e);
}

void cluster_task_finished(Manager *m, const MsSnapshotRecord *r) {
    AgentCluster *c = m->cluster;
    if (!c || r->remote)
        return;
    /* At once rather than at the next heartbeat: the next snapshot of the policy, asked for on
     * any node right after this one ended, must find the lease free. The record first, so that
     * nobody sees the lease free and the record still running. On failure the heartbeat does
     * both later (apply_lease()). */
    MsError e = MS_ERROR_INIT;
    if (ms_cluster_put_snapshot(c->db, r, now_usec(), &e) < 0 ||
        ms_cluster_release(c->db, r->policy, r->id, &e) < 0)
        log_debug("cluster: cannot record the end of %s yet: %s", r->id, e.message);
}

void cluster_restore_changed(Manager *m, const MsRestoreRecord *r) {
    if (m->cluster && !r->remote)
        mark(&m->cluster->dirty_restores, &m->cluster->n_dirty_restores, r->id);
}

/* At most this many records per call: every record is marked when the agent starts, and one
 * write each must not hold the event loop for long (the watchdog). */
#define PUBLISH_BATCH 256

static int publish_dirty(AgentCluster *c, MsError *e) {
    Manager *m = c->m;
    uint64_t now = now_usec();
    size_t done = 0;
    for (; done < c->n_dirty_snapshots && done < PUBLISH_BATCH; done++) {
        const MsSnapshotRecord *r = manager_find_snapshot(m, c->dirty_snapshots[done]);
        if (r && !r->remote) {
            int k = ms_cluster_put_snapshot(c->db, r, now, e);
            if (k < 0) {
                clear_marks(c->dirty_snapshots, &c->n_dirty_snapshots, done);
                return k;
            }
        }
    }
    clear_marks(c->dirty_snapshots, &c->n_dirty_snapshots, done);
    for (done = 0; done < c->n_dirty_restores && done < PUBLISH_BATCH; done++) {
        const MsRestoreRecord *r = manager_find_restore(m, c->dirty_restores[done]);
        if (r && !r->remote) {
            MsRestoreRecord copy = *r;
            copy.node = (char *) self(m);
            int k = ms_cluster_put_restore(c->db, &copy, self(m), now, e);
            if (k < 0) {
                clear_marks(c->dirty_restores, &c->n_dirty_restores, done);
                return k;
            }
        }
    }
    clear_marks(c->dirty_restores, &c->n_dirty_restores, done);
    return 0;
}

/* ---- which node takes a snapshot ---- */
static bool agent_alive(const Manager *m, const MsClusterAgent *a, uint64_t now) {
    if (strcmp(a->node, self(m)) == 0)
        return true;
    return a->heartbeat_usec + lease_usec(m) >= now;
}

/* The node that should take p's next snapshot: the best member by NodePriority= that has a live
 * agent beside it. A deployment that cannot list its members (standalone, FerretDB) gives no
 * ranking: the node that asks takes it. */
static int choose_node(AgentCluster *c, const ManagerPolicy *p, const MsClusterAgent *agents,
                       size_t n_agents, char **ret_node, MsError *e) {
    Manager *m = c->m;
    MsClusterMember *members = NULL;
    size_t n_members = 0;
    MsError me = MS_ERROR_INIT;
    int r = ms_cluster_members(c->db, &members, &n_members, &me);
    if (r == -EOPNOTSUPP) {
        log_debug("cluster: %s; node %s takes policy '%s' itself", me.message, self(m),
                  p->settings->name);
        *ret_node = strdup(self(m));
        return *ret_node ? 0 : oom(e);
    }
    if (r < 0) {
        ms_error_set(e, me.code, "%s", me.message);
        return r;
    }
    /* Agents without Member= (or naming a host the set does not list) cannot be ranked; when
     * none can, every node is as good as the next and the one that asks takes it. */
    uint64_t now = now_usec();
    bool any_mapped = false;
    for (size_t i = 0; i < n_members; i++)
        for (size_t j = 0; j < n_agents; j++)
            any_mapped |= agents[j].member && strcmp(agents[j].member, members[i].host) == 0 &&
                          agent_alive(m, &agents[j], now);
    if (!any_mapped) {
        log_debug("cluster: no live agent names one of the %zu members in Member=; node %s takes "
                  "policy '%s' itself",
                  n_members, self(m), p->settings->name);
        ms_cluster_members_free(members, n_members);
        *ret_node = strdup(self(m));
        return *ret_node ? 0 : oom(e);
    }
    _cleanup_free_ size_t *order = NULL;
    size_t n_order = 0;
    r = ms_cluster_rank(members, n_members, p->settings->node_priority, 0, &order, &n_order, e);
    for (size_t i = 0; r >= 0 && i < n_order; i++) {
        const char *host = members[order[i]].host;
        for (size_t j = 0; j < n_agents; j++)
            if (agents[j].member && strcmp(agents[j].member, host) == 0 &&
                agent_alive(m, &agents[j], now)) {
                *ret_node = strdup(agents[j].node);
                ms_cluster_members_free(members, n_members);
                return *ret_node ? 0 : oom(e);
            }
    }
    if (r >= 0)
        r = ms_error_set(e, ENODEV,
                         "no live agent runs beside a member fit to take policy '%s' "
                         "(NodePriority=%s): set [Cluster] Member= on each node to the member it "
                         "runs beside, and check that those agents are running",
                         p->settings->name, ms_node_priority_to_string(p->settings->node_priority));
    ms_cluster_members_free(members, n_members);
    return r;
}

/* ---- remote records ---- */
static bool same_snapshot(const MsSnapshotRecord *a, const MsSnapshotRecord *b) {
#define SAME_STR(x) ((!a->x && !b->x) || (a->x && b->x && strcmp(a->x, b->x) == 0))
    return a->state == b->state && a->items_done == b->items_done &&
           a->items_total == b->items_total && a->progress_pct == b->progress_pct &&
           a->bytes_transferred == b->bytes_transferred && a->expire_usec == b->expire_usec &&
           a->started_usec == b->started_usec && a->finished_usec == b->finished_usec &&
           a->verify_state == b->verify_state && SAME_STR(error) && SAME_STR(node) &&
           SAME_STR(archive_key) && SAME_STR(manifest_key) && SAME_STR(verify_error) &&
           SAME_STR(parts);
}

/* Another node's record, as read from the cluster: listed (and updated) here, never stored. */
static void merge_snapshot(Manager *m, MsSnapshotRecord *incoming) {
    MsSnapshotRecord *have = manager_snapshot_mutable(m, incoming->id);
    if (have && !have->remote) {
        ms_snapshot_record_free(incoming);
        return; /* ours: the catalog is the truth */
    }
    if (!have && incoming->node && strcmp(incoming->node, self(m)) == 0 &&
        incoming->state == MS_SNAPSHOT_COMPLETED) {
        /* Ours, and not in the catalog: another node's resync found it in a store (its
         * manifest names this node) after this node lost its record. Take it back. */
        MsError e = MS_ERROR_INIT;
        char id[256];
        snprintf(id, sizeof(id), "%s", incoming->id);
        log_info("cluster: snapshot %s, found by another node's resync, is this node's: "
                 "recorded",
                 id);
        if (manager_adopt_snapshot(m, incoming, &e) < 0) /* incoming is gone */
            log_warning("cluster: cannot record snapshot %s: %s", id, e.message);
        return;
    }
    incoming->remote = true;
    if (have) {
        bool same = same_snapshot(have, incoming);
        MsSnapshotRecord tmp = *have;
        *have = *incoming;
        *incoming = tmp;
        ms_snapshot_record_free(incoming);
        if (!same)
            MANAGER_EMIT(m, snapshot_changed, have,
                         MANAGER_SNAPSHOT_STATE | MANAGER_SNAPSHOT_PROGRESS);
        return;
    }
    MsSnapshotRecord **list = realloc(m->snapshots, (m->n_snapshots + 1) * sizeof(*list));
    if (!list) {
        ms_snapshot_record_free(incoming);
        return;
    }
    m->snapshots = list;
    manager_insert_snapshot_record(m, incoming);
    MANAGER_EMIT(m, snapshot_added, incoming);
}

static void merge_restore(Manager *m, MsRestoreRecord *incoming) {
    MsRestoreRecord *have = (MsRestoreRecord *) manager_find_restore(m, incoming->id);
    if (have && !have->remote) {
        ms_restore_record_free(incoming);
        return;
    }
    incoming->remote = true;
    if (have) {
        bool same = have->state == incoming->state && have->items_done == incoming->items_done &&
                    have->progress_pct == incoming->progress_pct &&
                    have->finished_usec == incoming->finished_usec;
        MsRestoreRecord tmp = *have;
        *have = *incoming;
        *incoming = tmp;
        ms_restore_record_free(incoming);
        if (!same)
            MANAGER_EMIT(m, restore_changed, have,
                         MANAGER_SNAPSHOT_STATE | MANAGER_SNAPSHOT_PROGRESS);
        return;
    }
    MsRestoreRecord **list = realloc(m->restores, (m->n_restores + 1) * sizeof(*list));
    if (!list) {
        ms_restore_record_free(incoming);
        return;
    }
    m->restores = list;
    size_t at = m->n_restores;
    while (at > 0 && m->restores[at - 1]->created_usec > incoming->created_usec)
        at--;
    memmove(m->restores + at + 1, m->restores + at, (m->n_restores - at) * sizeof(*m->restores));
    m->restores[at] = incoming;
    m->n_restores++;
    MANAGER_EMIT(m, restore_added, incoming);
}

static int sync_records(AgentCluster *c, uint64_t poll_start, MsError *e) {
    Manager *m = c->m;
    MsSnapshotRecord **snaps = NULL;
    size_t n = 0;
    int r = ms_cluster_list_snapshots(c->db, c->synced_usec, &snaps, &n, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        merge_snapshot(m, snaps[i]);
    free(snaps);
    MsRestoreRecord **rests = NULL;
    r = ms_cluster_list_restores(c->db, c->synced_usec, &rests, &n, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        merge_restore(m, rests[i]);
    free(rests);
    /* Writers stamp "updated" with their own clocks: read again what the last two leases may
     * have written, so that a node whose clock is a little behind is not missed. */
    uint64_t slack = 2 * lease_usec(m);
    c->synced_usec = poll_start > slack ? poll_start - slack : 1;
    return 0;
}

/* ---- a snapshot for a policy ---- */

/* A queued record of a snapshot another node is to take: listed here and in the cluster at
 * once, so that the caller has an object to follow. */
static int record_assignment(AgentCluster *c, const ManagerPolicy *p, const char *id,
                             const char *node, MsSnapshotOrigin origin, uint64_t seq,
                             const MsSnapshotRecord **ret, MsError *e) {
    Manager *m = c->m;
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *rec = calloc(1, sizeof(*rec));
    const char *store = ms_policy_effective_store(p->settings, m->config);
    if (!rec || !(rec->id = strdup(id)) || !(rec->policy = strdup(p->settings->name)) ||
        !(rec->node = strdup(node)) || (store && !(rec->store = strdup(store))))
        return oom(e);
    rec->state = MS_SNAPSHOT_QUEUED;
    rec->created_usec = now_usec();
    rec->origin = origin;
    rec->seq = seq;
    int r = ms_cluster_put_snapshot(c->db, rec, rec->created_usec, e);
    if (r < 0)
        return r;
    MsSnapshotRecord *kept = TAKE_PTR(rec);
    merge_snapshot(m, kept);
    if (ret)
        *ret = manager_find_snapshot(m, id);
    return 0;
}

/* The snapshot a lease names, read from the cluster if this agent has not seen it yet. */
static const MsSnapshotRecord *find_or_sync(AgentCluster *c, const MsClusterLease *l,
                                            const char *id) {
    const MsSnapshotRecord *r = manager_find_snapshot(c->m, id);
    if (r)
        return r;
    MsError e = MS_ERROR_INIT;
    if (sync_records(c, now_usec(), &e) < 0)
        log_debug("cluster: cannot read the records: %s", e.message);
    if ((r = manager_find_snapshot(c->m, id)))
        return r;
    /* Claimed a moment ago and not written yet: list it as the lease says, queued on its node;
     * the next heartbeat brings its real record. */
    MsSnapshotRecord *rec = calloc(1, sizeof(*rec));
    if (!rec || !(rec->id = strdup(id)) || !(rec->policy = strdup(l->policy)) ||
        !(rec->node = strdup(l->node ? l->node : "?"))) {
        ms_snapshot_record_free(rec);
        return NULL;
    }
    rec->state = MS_SNAPSHOT_QUEUED;
    rec->created_usec = now_usec();
    merge_snapshot(c->m, rec);
    return manager_find_snapshot(c->m, id);
}

/* At each heartbeat, and at each snapshot start (cluster_take_snapshot). Out of memory, the
 * list is empty: the parts are then taken here. */
static void keep_part_agents(AgentCluster *c, const MsClusterAgent *agents, size_t n) {
    c->part_agents = ms_strv_free(c->part_agents);
    uint64_t now = now_usec();
    for (size_t i = 0; i < n; i++) {
        if (!agents[i].member || !agent_alive(c->m, &agents[i], now))
            continue;
        _cleanup_free_ char *item = NULL;
        if (asprintf(&item, "%s=%s", agents[i].node, agents[i].member) < 0 ||
            ms_strv_push(&c->part_agents, item) < 0) {
            c->part_agents = ms_strv_free(c->part_agents);
            return;
        }
    }
}

int cluster_take_snapshot(Manager *m, ManagerPolicy *p, const char *id, bool scheduled,
                          const MsSnapshotRecord **ret_record, MsError *e) {
    AgentCluster *c = m->cluster;
    const char *name = p->settings->name;
    MsClusterAgent *agents = NULL;
    size_t n_agents = 0;
    int r = ms_cluster_list_agents(c->db, &agents, &n_agents, e);
    if (r < 0) {
        ms_error_mark(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE);
        ms_error_prefix(e,
                        "cannot coordinate snapshot of policy '%s' with the other agents, so it "
                        "was not started (one agent per cluster takes it): ",
                        name);
        return r;
    }
    _cleanup_free_ char *node = NULL;
    r = choose_node(c, p, agents, n_agents, &node, e);
    keep_part_agents(c, agents, n_agents); /* as fresh as this choice, for the worker's parts */
    ms_cluster_agents_free(agents, n_agents);
    if (r < 0)
        return r;

    uint64_t now = now_usec();
    uint64_t window = scheduled ? (uint64_t) m->config->cluster_tick_window_sec * USEC_PER_SEC +
                                      p->settings->randomized_delay_usec
                                : 0;
    MsClusterLease cur = {0};
    uint64_t seq = 0;
    MsSnapshotOrigin origin = scheduled ? MS_SNAPSHOT_ORIGIN_SCHEDULED : MS_SNAPSHOT_ORIGIN_MANUAL;
    /* The tick this call is for, as every node computes it from the schedule: a persistent
     * timer catching up hours later still names the tick the other nodes took. */
    uint64_t tick = 0;
    if (scheduled && p->settings->schedule) {
        MsError ce = MS_ERROR_INIT;
        if (agent_calendar_prev(p->settings->schedule, now, &tick, &ce) < 0)
            log_debug("cluster: no nominal tick for policy '%s' (%s); the tick window decides",
                      name, ce.message);
    }
    r = ms_cluster_claim(c->db, name, id, node, now, lease_usec(m), window, tick,
                         manager_policy_max_seq(m, p), &seq, &cur, e);
    if (r == 0) {
        if (strcmp(node, self(m)) == 0) {
            p->lease_renewed_usec = now;
            const MsSnapshotRecord *rec = NULL;
            r = manager_enqueue_snapshot(m, p, id, origin, seq, &rec, e);
            if (r < 0) {
                MsError re = MS_ERROR_INIT;
                (void) ms_cluster_release(c->db, name, id, &re);
                return r;
            }
            /* At once, not at the next heartbeat: the other nodes' timers of this tick answer
             * with this record. */
            MsError pe = MS_ERROR_INIT;
            if (ms_cluster_put_snapshot(c->db, rec, now_usec(), &pe) < 0)
                log_debug("cluster: cannot record %s yet: %s", id, pe.message);
            if (ret_record)
                *ret_record = rec;
            return 0;
        }
        r = record_assignment(c, p, id, node, origin, seq, ret_record, e);
        if (r < 0) {
            MsError re = MS_ERROR_INIT;
            (void) ms_cluster_release(c->db, name, id, &re);
            return r;
        }
        (void) ms_event_log(MS_EVENT_TASK_ASSIGNED,
                            &(MsEventFields){.policy = name, .task = id, .node = self(m)},
                            "snapshot %s of policy %s handed to node %s (NodePriority=%s)", id,
                            name, node, ms_node_priority_to_string(p->settings->node_priority));
        return 0;
    }
    if (r == -EPERM) {
        ms_cluster_lease_clear(&cur);
        return ms_error_set_kind(e, MS_ERROR_KIND_POLICY_STOPPED, EPERM,
                                 "policy '%s' is stopped on every node (Stop was given on one of "
                                 "them); start it with mongosnapctl start %s",
                                 name, name);
    }
    if ((r == -EBUSY || r == -EALREADY) && scheduled) {
        /* Every node's timer fires for the tick; the first claim took it. Answer with that
         * snapshot, so that this node's timer unit follows it (and fails if it fails). */
        const char *taken = r == -EBUSY ? cur.task : cur.scheduled_task;
        const MsSnapshotRecord *rec = taken ? find_or_sync(c, &cur, taken) : NULL;
        if (rec) {
            (void) ms_event_log(MS_EVENT_TASK_ASSIGNED,
                                &(MsEventFields){.policy = name, .task = rec->id, .node = self(m)},
                                "this tick of policy %s is taken by node %s (snapshot %s)", name,
                                rec->node, rec->id);
            if (ret_record)
                *ret_record = rec;
            ms_cluster_lease_clear(&cur);
            return 0;
        }
    }
    if (r == -EBUSY || r == -EALREADY) {
        r = ms_error_set_kind(
            e, MS_ERROR_KIND_BUSY, EBUSY,
            r == -EBUSY ? "policy '%s' already has a snapshot in progress on node %s "
                          "(%s); wait for it or stop it with Stop()"
                        : "policy '%s' had its scheduled snapshot for this tick "
                          "taken by node %s (%s) already",
            name, cur.node ? cur.node : "?", (r == -EBUSY ? cur.task : cur.scheduled_task) ?: "?");
    }
    ms_error_mark(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE); /* the claim itself failed */
    ms_cluster_lease_clear(&cur);
    return r;
}

/* The lease names this node for a task it does not run: run it, or say in the cluster why
 * not (and free the lease for the others). */
static void pick_up(AgentCluster *c, const MsClusterLease *l) {
    Manager *m = c->m;
    ManagerPolicy *p = manager_find_policy(m, l->policy);
    MsError e = MS_ERROR_INIT;
    int r;
    if (!p)
        r = ms_error_set(&e, ENOENT, "policy '%s' is not defined on node %s", l->policy, self(m));
    else if ((r = manager_check_snapshot(m, p, &e)) >= 0) {
        p->lease_renewed_usec = now_usec();
        MsSnapshotOrigin origin = ms_snapshot_origin_from_string(l->origin ? l->origin : "");
        r = manager_enqueue_snapshot(
            m, p, l->task, origin < 0 ? MS_SNAPSHOT_ORIGIN_SCHEDULED : origin, l->seq, NULL, &e);
    }
    if (r >= 0) {
        MsError re = MS_ERROR_INIT;
        if (ms_cluster_renew(c->db, l->policy, l->task, self(m), now_usec(), lease_usec(m), &re) <
            0)
            log_debug("cluster: cannot renew the lease of %s: %s", l->task, re.message);
        return;
    }
    log_warning("cannot take snapshot %s assigned to this node: %s", l->task, e.message);
    MsError ce = MS_ERROR_INIT;
    _cleanup_free_ char *why = NULL;
    if (asprintf(&why, "node %s could not take it: %s", self(m), e.message) < 0)
        why = NULL;
    (void) ms_cluster_mark_snapshot(c->db, l->task, MS_SNAPSHOT_FAILED, why, now_usec(), &ce);
    (void) ms_cluster_release(c->db, l->policy, l->task, &ce);
}

/* The node holding a lease stopped renewing it (agent or host down, or cut off from the
 * database): its task is recorded interrupted and a fresh snapshot goes to the best live node. */
static void take_over(AgentCluster *c, const MsClusterLease *l, const MsClusterAgent *agents,
                      size_t n_agents) {
    Manager *m = c->m;
    ManagerPolicy *p = manager_find_policy(m, l->policy);
    if (!p || p->runtime->state != MS_POLICY_ACTIVE || p->task)
        return; /* cannot run it here; an agent that can takes it over */
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ char *node = NULL;
    char id[SNAPSHOT_ID_MAX];
    if (choose_node(c, p, agents, n_agents, &node, &e) < 0 ||
        manager_new_snapshot_id(m, l->policy, id, &e) < 0) {
        log_warning("cluster: cannot take over policy '%s' from node %s: %s", l->policy,
                    l->node ? l->node : "?", e.message);
        return;
    }
    uint64_t now = now_usec();
    uint64_t seq = 0;
    int r = ms_cluster_take_over(c->db, l->policy, l->task, id, node, now, lease_usec(m),
                                 manager_policy_max_seq(m, p), &seq, &e);
    if (r < 0) {
        if (r != -ESTALE)
            log_warning("cluster: cannot take over policy '%s': %s", l->policy, e.message);
        return; /* another agent was first, or the holder came back */
    }
    _cleanup_free_ char *why = NULL;
    if (asprintf(&why,
                 "node %s stopped renewing its lease (its agent or host went down, or lost the "
                 "cluster database); node %s took over with snapshot %s",
                 l->node ? l->node : "?", self(m), id) < 0)
        why = NULL;
    MsError me = MS_ERROR_INIT;
    (void) ms_cluster_mark_snapshot(c->db, l->task, MS_SNAPSHOT_INTERRUPTED, why, now, &me);
    (void) ms_event_log(
        MS_EVENT_TASK_TAKEN_OVER,
        &(MsEventFields){.policy = l->policy, .task = l->task, .node = self(m), .error = why},
        "snapshot %s of policy %s taken over from node %s: %s", l->task, l->policy,
        l->node ? l->node : "?", why ? why : "");
    if (strcmp(node, self(m)) == 0) {
        MsClusterLease mine = {.policy = (char *) l->policy, .task = id};
        pick_up(c, &mine);
        return;
    }
    MsSnapshotOrigin origin = ms_snapshot_origin_from_string(l->origin ? l->origin : "");
    if (record_assignment(c, p, id, node, origin < 0 ? MS_SNAPSHOT_ORIGIN_SCHEDULED : origin, seq,
                          NULL, &e) < 0)
        log_warning("cluster: cannot record snapshot %s for node %s: %s", id, node, e.message);
}

/* Our own task holding a lease: renew it; a lease lost (taken over while this node was cut
 * off) stops the task, so that two nodes never snapshot one policy at once. */
static void renew(AgentCluster *c, ManagerPolicy *p, const MsClusterLease *l) {
    Manager *m = c->m;
    MsError e = MS_ERROR_INIT;
    uint64_t now = now_usec();
    int r = ms_cluster_renew(c->db, l->policy, l->task, self(m), now, lease_usec(m), &e);
    if (r >= 0) {
        p->lease_renewed_usec = now;
        return;
    }
    if (r == -ESTALE && p->task)
        manager_stop_task_lost_lease(m, p);
}

static void apply_lease(AgentCluster *c, const MsClusterLease *l, const MsClusterAgent *agents,
                        size_t n_agents) {
    Manager *m = c->m;
    ManagerPolicy *p = manager_find_policy(m, l->policy);
    uint64_t now = now_usec();
    MsError e = MS_ERROR_INIT;

    /* Stop and Start hold for every node: the flag is the truth once written. */
    if (p && !p->removed) {
        if (l->stopped && p->runtime->state == MS_POLICY_ACTIVE) {
            log_info("policy '%s' was stopped on another node; stopping it here too", l->policy);
            (void) manager_stop_policy_here(m, p, &e);
        } else if (!l->stopped && p->runtime->state == MS_POLICY_STOPPED && !p->rebuild_token) {
            log_info("policy '%s' was started on another node; starting it here too", l->policy);
            (void) manager_start_policy_here(m, p, &e);
        }
    }

    bool held = l->task && l->expires_usec >= now;
    if (p && p->rebuild_token && !p->task && !held) {
        manager_rebuild_now(m, p); /* a Rebuild here was waiting for another node's task */
        return;
    }
    if (!l->task)
        return;
    if (l->node && strcmp(l->node, self(m)) == 0) {
        if (p && p->task && strcmp(p->task->record->id, l->task) == 0) {
            renew(c, p, l);
            return;
        }
        const MsSnapshotRecord *r = manager_find_snapshot(m, l->task);
        if (r && !r->remote) {
            /* Ours and over (or left by a crash of this agent): the record first, then the
             * lease, so that nobody sees the lease free and the record still running. */
            if (r->state == MS_SNAPSHOT_QUEUED || r->state == MS_SNAPSHOT_RUNNING)
                return;
            if (ms_cluster_put_snapshot(c->db, r, now, &e) >= 0)
                (void) ms_cluster_release(c->db, l->policy, l->task, &e);
            return;
        }
        if (l->state && strcmp(l->state, "assigned") == 0 && held)
            pick_up(c, l);
        else if (!held)
            take_over(c, l, agents, n_agents);
        return;
    }
    if (!held)
        take_over(c, l, agents, n_agents);
}

/* ---- the oplog follower's lease ----
 * One follower per point-in-time policy in the cluster: the lease of the pseudo-policy
 * "NAME#oplog" ('#' is in no policy name), held by a node as task "follower@NODE", renewed at
 * every heartbeat. A free or expired lease is claimed or taken over by whichever node's
 * heartbeat comes first; a node that cannot renew (or is cut off for longer than a lease) stops
 * its follower. The new holder's follower continues from the last committed slice in the
 * shared store; for the moments both run, their slices overlap, which the chains allow. */
#define FOLLOWER_LEASE_SUFFIX "#oplog"

static bool is_follower_lease(const MsClusterLease *l) {
    return l->policy && strstr(l->policy, FOLLOWER_LEASE_SUFFIX) != NULL;
}

static void set_follower_lease(Manager *m, ManagerPolicy *p, bool held) {
    if (held)
        p->follower_lease_renewed_usec = now_usec();
    if (p->follower_lease == held)
        return;
    p->follower_lease = held;
    log_info("policy '%s': this node %s its oplog follower", p->settings->name,
             held ? "now runs" : "no longer runs");
    manager_emit_policy_changed(m, p);
}

/* May this node take a free (or expired) follower lease of p? When NodePriority= ranks the
 * members, the node beside the best one with a live agent takes it; the others wait, but only
 * for two leases (that node may not follow: its policy stopped, or its file differs). */
static bool follower_lease_ours_to_take(AgentCluster *c, ManagerPolicy *p,
                                        const MsClusterAgent *agents, size_t n_agents,
                                        uint64_t now) {
    Manager *m = c->m;
    _cleanup_free_ char *node = NULL;
    MsError e = MS_ERROR_INIT;
    if (choose_node(c, p, agents, n_agents, &node, &e) < 0 || strcmp(node, self(m)) == 0) {
        p->follower_lease_free_since = 0;
        return true;
    }
    if (!p->follower_lease_free_since)
        p->follower_lease_free_since = now;
    return now - p->follower_lease_free_since > 2 * lease_usec(m);
}

static void follower_leases(AgentCluster *c, const MsClusterLease *leases, size_t n_leases,
                            const MsClusterAgent *agents, size_t n_agents) {
    Manager *m = c->m;
    uint64_t now = now_usec();
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        _cleanup_free_ char *key = NULL, *task = NULL;
        if (asprintf(&key, "%s" FOLLOWER_LEASE_SUFFIX, p->settings->name) < 0 ||
            asprintf(&task, "follower@%s", self(m)) < 0)
            return;
        const MsClusterLease *l = NULL;
        for (size_t j = 0; j < n_leases && !l; j++)
            if (strcmp(leases[j].policy, key) == 0)
                l = &leases[j];
        bool want = !p->removed && p->settings->pit_enabled &&
                    p->runtime->state == MS_POLICY_ACTIVE && !m->stopping;
        bool mine = l && l->task && l->node && strcmp(l->node, self(m)) == 0 &&
                    strcmp(l->task, task) == 0;
        MsError e = MS_ERROR_INIT;
        if (!want) {
            if (mine)
                (void) ms_cluster_release(c->db, key, task, &e);
            set_follower_lease(m, p, false);
            continue;
        }
        int r;
        bool free_or_expired = !l || !l->task || l->expires_usec < now;
        if (mine)
            r = ms_cluster_renew(c->db, key, task, self(m), now, lease_usec(m), &e);
        else if (free_or_expired && !follower_lease_ours_to_take(c, p, agents, n_agents, now))
            r = -EBUSY; /* the node NodePriority= prefers takes it */
        else if (!l || !l->task)
            r = ms_cluster_claim(c->db, key, task, self(m), now, lease_usec(m), 0, 0, 0, NULL, NULL,
                                 &e);
        else if (l->expires_usec < now)
            r = ms_cluster_take_over(c->db, key, l->task, task, self(m), now, lease_usec(m), 0,
                                     NULL, &e);
        else
            r = -EBUSY; /* another node follows */
        if (r < 0 && r != -EBUSY && r != -ESTALE)
            log_warning("policy '%s': the oplog follower's lease: %s", p->settings->name,
                        e.message);
        set_follower_lease(m, p, r >= 0);
    }
}

static bool cluster_may_follow(const Manager *m, const ManagerPolicy *p) {
    return !m->cluster || p->follower_lease;
}

/* ---- a cluster snapshot's parts, taken beside the shards' members ---- */

char **manager_cluster_part_agents(Manager *m) {
    AgentCluster *c = m->cluster;
    if (!c || !c->reachable)
        return NULL;
    bool failed = false;
    char **out = ms_strv_copy(c->part_agents, &failed);
    if (failed)
        log_warning("cluster: out of memory listing the agents: a cluster snapshot's parts are "
                    "taken by this node");
    return out;
}

/* ---- commands ---- */
static void run_command(AgentCluster *c, const MsClusterCommand *cmd) {
    Manager *m = c->m;
    MsError e = MS_ERROR_INIT;
    int r = -EINVAL;
    if (!cmd->op || !cmd->task)
        ms_error_set(&e, EINVAL, "a command without operation or task");
    else if (strcmp(cmd->op, "cancel") == 0) {
        r = manager_cancel_snapshot(m, cmd->task, &e);
        if (r == -ESRCH) {
            ms_error_clear(&e);
            r = manager_cancel_restore(m, cmd->task, &e);
        }
    } else if (strcmp(cmd->op, "verify") == 0)
        r = manager_verify_snapshot(m, cmd->task, &e);
    else if (strcmp(cmd->op, "delete-snapshot") == 0)
        r = manager_delete_snapshot(m, cmd->task, &e);
    else if (strcmp(cmd->op, MANAGER_OP_TAKE_PART) == 0)
        r = manager_take_part(m, cmd->policy, cmd->task, cmd->from, &e);
    else
        ms_error_set(&e, EINVAL, "unknown operation '%s'", cmd->op);
    if (r < 0)
        log_warning("%s of %s asked by node %s: %s", cmd->op ? cmd->op : "?",
                    cmd->task ? cmd->task : "?", cmd->from ? cmd->from : "?", e.message);
    else
        log_info("%s of %s done as asked by node %s", cmd->op, cmd->task,
                 cmd->from ? cmd->from : "?");
}

int manager_cluster_forward(Manager *m, const char *op, const char *node, const char *policy,
                            const char *task, MsError *e) {
    if (!m->cluster)
        return ms_error_set_kind(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE, EHOSTUNREACH,
                                 "%s of %s belongs to node %s, and this agent has no "
                                 "[Cluster] URI= to reach it",
                                 op, task, node);
    MsClusterCommand cmd = {(char *) op, (char *) policy, (char *) task, (char *) self(m)};
    int r = ms_cluster_send_command(m->cluster->db, node, &cmd, now_usec(), e);
    if (r < 0) {
        ms_error_mark(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE);
        ms_error_prefix(e, "cannot send %s of %s to node %s: ", op, task, node);
        return r;
    }
    log_info("%s of %s sent to node %s, which runs it", op, task, node);
    return 0;
}

int manager_cluster_set_stopped(Manager *m, const ManagerPolicy *p, bool stopped, MsError *e) {
    if (!m->cluster)
        return 0;
    int r = ms_cluster_set_stopped(m->cluster->db, p->settings->name, stopped, e);
    if (r < 0) {
        ms_error_mark(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE);
        ms_error_prefix(e,
                        "policy '%s' is %s on this node, but the other nodes could not be told "
                        "(they follow once the cluster database is reachable and Stop or Start "
                        "is given again): ",
                        p->settings->name, stopped ? "stopped" : "started");
    }
    return r;
}

int manager_cluster_lease_elsewhere(Manager *m, const ManagerPolicy *p, char **ret_node,
                                    char **ret_task, MsError *e) {
    *ret_node = *ret_task = NULL;
    if (!m->cluster)
        return 0;
    MsClusterLease l = {0};
    int r = ms_cluster_get_lease(m->cluster->db, p->settings->name, &l, e);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        ms_error_mark(e, MS_ERROR_KIND_CLUSTER_UNREACHABLE);
        return r;
    }
    if (l.task && l.node && strcmp(l.node, self(m)) != 0 && l.expires_usec >= now_usec()) {
        *ret_node = TAKE_PTR(l.node);
        *ret_task = TAKE_PTR(l.task);
    }
    ms_cluster_lease_clear(&l);
    return 0;
}

/* ---- policy drift ---- */

/* "Section.Key=value" lines of one policy file as ms_policy_to_ini() writes it. */
static char **ini_lines(const char *text, size_t *ret_n) {
    char **v = NULL;
    size_t n = 0;
    char section[128] = "";
    for (const char *s = text; s && *s;) {
        size_t len = strcspn(s, "\n");
        if (len > 0 && s[0] == '[' && s[len - 1] == ']')
            snprintf(section, sizeof(section), "%.*s", (int) (len - 2), s + 1);
        else if (len > 0 && s[0] != '#' && s[0] != ';' && memchr(s, '=', len)) {
            char **nv = realloc(v, (n + 1) * sizeof(*nv));
            if (!nv)
                break;
            v = nv;
            if (asprintf(&v[n], "%s.%.*s", section, (int) len, s) < 0)
                break;
            n++;
        }
        s += len;
        if (*s)
            s++;
    }
    *ret_n = n;
    return v;
}

static void free_lines(char **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static bool has_line(char **v, size_t n, const char *line) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], line) == 0)
            return true;
    return false;
}

/* Append to *out the keys whose values differ between a and b ("Policy.Schedule=, ..."). */
static void append_differing_keys(char **out, const char *a, const char *b) {
    size_t na, nb;
    char **la = ini_lines(a, &na), **lb = ini_lines(b, &nb);
    char *keys = NULL;
    for (int side = 0; side < 2; side++) {
        char **x = side ? lb : la, **y = side ? la : lb;
        size_t nx = side ? nb : na, ny = side ? na : nb;
        for (size_t i = 0; i < nx; i++) {
            if (has_line(y, ny, x[i]))
                continue;
            size_t klen = strcspn(x[i], "=");
            char key[160];
            snprintf(key, sizeof(key), "%.*s=", (int) MS_MIN(klen, sizeof(key) - 2), x[i]);
            if (keys && strstr(keys, key))
                continue;
            char *k2 = NULL;
            if (asprintf(&k2, "%s%s%s", keys ? keys : "", keys ? ", " : "", key) < 0)
                break;
            free(keys);
            keys = k2;
        }
    }
    free_lines(la, na);
    free_lines(lb, nb);
    if (!keys)
        return;
    free(*out);
    *out = keys;
}

static void check_drift(AgentCluster *c, const MsClusterAgent *agents, size_t n_agents) {
    Manager *m = c->m;
    uint64_t now = now_usec();
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        if (p->removed)
            continue;
        _cleanup_free_ char *mine = NULL, *report = NULL;
        MsError e = MS_ERROR_INIT;
        if (ms_policy_to_ini(p->settings, &mine, &e) < 0)
            continue;
        for (size_t j = 0; j < n_agents; j++) {
            const MsClusterAgent *a = &agents[j];
            if (strcmp(a->node, self(m)) == 0 || !agent_alive(m, a, now))
                continue;
            const char *theirs = NULL;
            for (size_t k = 0; k < a->n_policies; k++)
                if (strcmp(a->policy_names[k], p->settings->name) == 0)
                    theirs = a->policy_settings[k];
            _cleanup_free_ char *item = NULL;
            if (!theirs) {
                if (asprintf(&item, "not defined on node %s", a->node) < 0)
                    item = NULL;
            } else if (strcmp(theirs, mine) != 0) {
                _cleanup_free_ char *keys = NULL;
                append_differing_keys(&keys, mine, theirs);
                if (asprintf(&item, "%s differ%s on node %s", keys ? keys : "settings",
                             keys && strchr(keys, ',') ? "" : "s", a->node) < 0)
                    item = NULL;
            }
            if (!item)
                continue;
            char *joined = NULL;
            if (asprintf(&joined, "%s%s%s", report ? report : "", report ? "; " : "", item) < 0)
                continue;
            free(report);
            report = joined;
        }
        const char *old = p->drift ? p->drift : "";
        const char *now_drift = report ? report : "";
        if (strcmp(old, now_drift) == 0)
            continue;
        if (report)
            (void) ms_event_log(MS_EVENT_POLICY_DRIFT,
                                &(MsEventFields){.policy = p->settings->name, .node = self(m)},
                                "policy %s differs between nodes: %s; make the policy files the "
                                "same on every node (mongosnapctl edit on each, or copy the file)",
                                p->settings->name, report);
        else
            log_info("policy '%s' is the same on every node again", p->settings->name);
        free(p->drift);
        p->drift = TAKE_PTR(report);
        manager_emit_policy_changed(m, p);
    }
}

/* ---- the heartbeat ---- */
static int heartbeat(AgentCluster *c, MsClusterAgent **ret_agents, size_t *ret_n, MsError *e) {
    Manager *m = c->m;
    MsClusterAgent me = {
        .node = (char *) self(m),
        .member = m->config->cluster_member,
        .version = (char *) MONGOSNAP_VERSION,
        .heartbeat_usec = now_usec(),
    };
    char **names = calloc(m->n_policies + 1, sizeof(char *));
    char **settings = calloc(m->n_policies + 1, sizeof(char *));
    int r = names && settings ? 0 : oom(e);
    for (size_t i = 0; r >= 0 && i < m->n_policies; i++) {
        if (m->policies[i]->removed)
            continue;
        names[me.n_policies] = m->policies[i]->settings->name;
        r = ms_policy_to_ini(m->policies[i]->settings, &settings[me.n_policies], e);
        if (r >= 0)
            me.n_policies++;
    }
    me.policy_names = names;
    me.policy_settings = settings;
    if (r >= 0)
        r = ms_cluster_heartbeat(c->db, &me, e);
    for (size_t i = 0; settings && i < me.n_policies; i++)
        free(settings[i]);
    free(names);
    free(settings);
    if (r < 0)
        return r;
    return ms_cluster_list_agents(c->db, ret_agents, ret_n, e);
}

static int poll_once(AgentCluster *c, MsError *e) {
    Manager *m = c->m;
    uint64_t start = now_usec();
    MsClusterAgent *agents = NULL;
    size_t n_agents = 0;
    int r = heartbeat(c, &agents, &n_agents, e);
    if (r < 0)
        return r;
    keep_part_agents(c, agents, n_agents);
    MsClusterLease *leases = NULL;
    size_t n_leases = 0;
    r = ms_cluster_list_leases(c->db, &leases, &n_leases, e);
    /* Stopped here before the cluster knew the policy: tell the others. */
    for (size_t i = 0; r >= 0 && i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        bool known = false;
        for (size_t j = 0; j < n_leases; j++)
            known |= strcmp(leases[j].policy, p->settings->name) == 0;
        if (!known && p->runtime->state == MS_POLICY_STOPPED)
            r = ms_cluster_set_stopped(c->db, p->settings->name, true, e);
    }
    if (r >= 0)
        r = publish_dirty(c, e);
    for (size_t i = 0; r >= 0 && i < n_leases && !m->stopping; i++)
        if (!is_follower_lease(&leases[i]))
            apply_lease(c, &leases[i], agents, n_agents);
    if (r >= 0)
        follower_leases(c, leases, n_leases, agents, n_agents);
    if (r >= 0)
        r = publish_dirty(c, e);
    MsClusterCommand *cmds = NULL;
    size_t n_cmds = 0;
    if (r >= 0)
        r = ms_cluster_take_commands(c->db, self(m), now_usec(), &cmds, &n_cmds, e);
    for (size_t i = 0; r >= 0 && i < n_cmds; i++)
        run_command(c, &cmds[i]);
    ms_cluster_commands_free(cmds, n_cmds);
    if (r >= 0)
        r = publish_dirty(c, e);
    if (r >= 0)
        r = sync_records(c, start, e);
    if (r >= 0)
        check_drift(c, agents, n_agents);
    ms_cluster_leases_free(leases, n_leases);
    ms_cluster_agents_free(agents, n_agents);
    return r;
}

static void set_status(AgentCluster *c, bool reachable, const char *why) {
    Manager *m = c->m;
    bool changed = !c->ever_polled || reachable != c->reachable;
    c->ever_polled = true;
    c->reachable = reachable;
    _cleanup_free_ char *status = NULL;
    if (reachable)
        status = strdup("connected");
    else if (asprintf(&status, "unreachable: %s", why) < 0)
        status = NULL;
    free(c->status);
    c->status = TAKE_PTR(status);
    if (!changed)
        return;
    if (reachable)
        (void) ms_event_log(MS_EVENT_CLUSTER_CONNECTED, &(MsEventFields){.node = self(m)},
                            "connected to the cluster database at %s",
                            ms_cluster_redacted_uri(c->db));
    else
        (void) ms_event_log(MS_EVENT_CLUSTER_UNREACHABLE,
                            &(MsEventFields){.node = self(m), .error = why},
                            "cannot reach the cluster database: %s; local records are still "
                            "served, snapshots are not started until it is back",
                            why);
}

/* Cut off from the database for longer than a lease: another node may have taken over the
 * policies this node runs, so their tasks stop here. */
static void fence(AgentCluster *c) {
    Manager *m = c->m;
    uint64_t now = now_usec();
    for (size_t i = 0; i < m->n_policies; i++) {
        ManagerPolicy *p = m->policies[i];
        if (p->task && p->lease_renewed_usec + lease_usec(m) < now)
            manager_stop_task_lost_lease(m, p);
        /* Another node may follow its oplog by now. */
        if (p->follower_lease && p->follower_lease_renewed_usec + lease_usec(m) < now)
            set_follower_lease(m, p, false);
    }
}

/* What the last heartbeat refused (each document once), in the Event Log. */
static void report_refusals(AgentCluster *c) {
    char last[MS_CLUSTER_REFUSAL_MAX];
    uint64_t n = ms_cluster_take_refusals(c->db, last, sizeof(last));
    if (n == 0)
        return;
    (void) ms_event_log(MS_EVENT_CLUSTER_REFUSED,
                        &(MsEventFields){.node = self(c->m), .error = last},
                        "%" PRIu64 " record(s) or command(s) in the cluster database refused%s; "
                        "the latest: %s",
                        n,
                        ms_cluster_signs(c->db) ? " (this agent takes only what is signed with "
                                                  "[Cluster] SigningKeyCredential=)"
                                                : "",
                        last);
}

int manager_cluster_sync(Manager *m, MsError *e) {
    AgentCluster *c = m->cluster;
    if (!c)
        return 0;
    int r = poll_once(c, e);
    report_refusals(c);
    set_status(c, r >= 0, r >= 0 ? NULL : e->message);
    if (r < 0)
        fence(c);
    return r;
}

static int on_heartbeat(sd_event_source *s, uint64_t usec, void *userdata) {
    AgentCluster *c = userdata;
    MsError e = MS_ERROR_INIT;
    (void) manager_cluster_sync(c->m, &e);
    uint64_t next;
    (void) sd_event_now(c->m->event, CLOCK_MONOTONIC, &next);
    next += (uint64_t) c->m->config->cluster_heartbeat_sec * USEC_PER_SEC;
    (void) sd_event_source_set_time(s, next);
    (void) sd_event_source_set_enabled(s, c->m->stopping ? SD_EVENT_OFF : SD_EVENT_ON);
    return 0;
}

/* ---- set-up ---- */
/* A credential's bytes, at most max of them (-EFBIG beyond), with a NUL after them. */
static int read_credential(const char *credential, size_t max, char **ret, size_t *ret_len,
                           MsError *e) {
    _cleanup_free_ char *path = NULL;
    int r = manager_credential_path(credential, &path, e);
    if (r < 0)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ms_error_set(e, errno, "cannot read credential '%s': %s", credential,
                            strerror(errno));
    char *buf = calloc(1, max + 2);
    size_t len = 0;
    ssize_t n = 1;
    while (buf && len <= max && (n = read(fd, buf + len, max + 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t) n;
    }
    int err = errno;
    close(fd);
    if (!buf)
        return oom(e);
    /* A key may hold NUL bytes: all of the buffer is wiped, not its string. */
    if (n < 0) {
        explicit_bzero(buf, max + 2);
        free(buf);
        return ms_error_set(e, err, "cannot read credential '%s': %s", credential, strerror(err));
    }
    if (len > max) {
        explicit_bzero(buf, max + 2);
        free(buf);
        return ms_error_set(e, EFBIG, "credential '%s' is longer than %zu bytes", credential, max);
    }
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* A password is the file's first line. */
static int read_password(const char *credential, char **ret, MsError *e) {
    size_t len;
    int r = read_credential(credential, PASSWORD_MAX, ret, &len, e);
    if (r < 0)
        return r;
    /* What follows the first line is wiped now: the caller's ms_secret_free() wipes the
     * string only. */
    size_t line = strcspn(*ret, "\r\n");
    explicit_bzero(*ret + line, len - line);
    return 0;
}

_Static_assert(MS_CLUSTER_SIGNING_KEYS_MAX <= MS_CLUSTER_KEYS_MAX,
               "the configuration allows no more keys than the cluster store keeps");

/* A cluster key is the file's bytes without a final line break (an editor adds one). */
static int add_signing_key(AgentCluster *c, const char *credential, MsError *e) {
    char *key = NULL;
    size_t len = 0;
    int r = read_credential(credential, MS_CLUSTER_KEY_MAX, &key, &len, e);
    if (r < 0)
        return r;
    size_t used = len;
    if (used > 0 && key[used - 1] == '\n')
        used--;
    if (used > 0 && key[used - 1] == '\r')
        used--;
    r = ms_cluster_add_key(c->db, key, used, e);
    explicit_bzero(key, len);
    free(key);
    if (r < 0)
        ms_error_prefix(e, "credential '%s': ", credential);
    return r;
}

int manager_cluster_start(Manager *m, MsError *e) {
    const MsAgentConfig *cfg = m->config;
    if (!cfg->cluster_uri)
        return 0;
    char *password = NULL;
    if (cfg->cluster_credential) {
        /* The password goes to [Cluster] URI= only, and never in clear text. */
        int r = ms_uri_check_auth(cfg->cluster_uri, MS_URI_AUTH_SOURCE, false, e);
        if (r < 0) {
            ms_error_prefix(e, "[Cluster] URI=: ");
            return r;
        }
        r = read_password(cfg->cluster_credential, &password, e);
        if (r < 0) {
            ms_error_prefix(e, "[Cluster] Credential=: ");
            return r;
        }
    }
    AgentCluster *c = calloc(1, sizeof(*c));
    if (!c) {
        ms_secret_free(password);
        return oom(e);
    }
    c->m = m;
    int r = ms_cluster_open(cfg->cluster_uri, password, cfg->cluster_database, &c->db, e);
    ms_secret_free(password);
    for (char **k = cfg->cluster_signing_keys; r >= 0 && k && *k; k++) {
        r = add_signing_key(c, *k, e);
        if (r < 0)
            ms_error_prefix(e, "[Cluster] SigningKeyCredential=: ");
    }
    if (r < 0) {
        ms_cluster_free(c->db);
        free(c);
        return r;
    }
    m->cluster = c;
    /* Every record of this node is written again, from the catalog, over the next heartbeats:
     * signed if a key was set since they were last written, unsigned if it was removed, and
     * as the catalog has them after a time away. */
    for (size_t i = 0; i < m->n_snapshots; i++)
        cluster_record_changed(m, m->snapshots[i]);
    for (size_t i = 0; i < m->n_restores; i++)
        cluster_restore_changed(m, m->restores[i]);
    /* The first heartbeat right away: the agent lists the other nodes' records from the
     * start. */
    r = sd_event_add_time_relative(m->event, &c->timer, CLOCK_MONOTONIC, 0, 0, on_heartbeat, c);
    if (r < 0) {
        manager_cluster_free(m);
        return ms_error_set(e, -r, "cannot set up the cluster heartbeat: %s", strerror(-r));
    }
    log_info("coordinating with the other nodes through %s (database %s, lease %us; %s)",
             ms_cluster_redacted_uri(c->db), cfg->cluster_database, cfg->cluster_lease_sec,
             ms_cluster_signs(c->db) ? "records and commands signed with the cluster key"
                                     : "records and commands not signed");
    if (ms_strv_length(cfg->cluster_signing_keys) > 1)
        log_info("cluster: signing with the key of credential '%s'; what %zu older key(s) "
                 "signed is still taken: remove them from SigningKeyCredential= once every node "
                 "signs with the new one",
                 cfg->cluster_signing_keys[0], ms_strv_length(cfg->cluster_signing_keys) - 1);
    return 0;
}

void manager_cluster_free(Manager *m) {
    AgentCluster *c = m->cluster;
    if (!c)
        return;
    sd_event_source_disable_unref(c->timer);
    ms_cluster_free(c->db);
    clear_marks(c->dirty_snapshots, &c->n_dirty_snapshots, c->n_dirty_snapshots);
    free(c->dirty_snapshots);
    clear_marks(c->dirty_restores, &c->n_dirty_restores, c->n_dirty_restores);
    free(c->dirty_restores);
    ms_strv_free(c->part_agents);
    free(c->status);
    free(c);
    m->cluster = NULL;
}

/* ---- as the manager sees it (agent-internal.h ManagerCoordination) ---- */

const ManagerCoordination cluster_coordination = {
    .start = manager_cluster_start,
    .free = manager_cluster_free,
    .take_snapshot = cluster_take_snapshot,
    .record_changed = cluster_record_changed,
    .task_finished = cluster_task_finished,
    .forward = manager_cluster_forward,
    .set_stopped = manager_cluster_set_stopped,
    .lease_elsewhere = manager_cluster_lease_elsewhere,
    .may_follow = cluster_may_follow,
    .part_agents = manager_cluster_part_agents,
};

/* What the agent's own files share and nobody else sees: the Manager's fields, the task
 * structures, and the functions agent-manager.c, -reader.c, -remover.c, -resync.c and
 * -cluster.c call in each other. */
#pragma once

#include <bson/bson.h>
#include <signal.h>
#include <string.h>

#include "agent/agent-job.h"
#include "agent/agent-manager.h"
#include "agent/agent-task.h"
#include "agent/agent-throttle.h"
#include "common/timeutil.h"
#include "storage/storage.h"

/* "nightly-20261122T031026Z", "-2" ... when taken twice in a second. */
#define SNAPSHOT_ID_MAX (MS_NAME_MAX + MS_ISO8601_MAX + 8)
#define INTERRUPTED_BY_RESTART "the agent stopped while the task ran (crash or restart)"
#define INTERRUPTED_BY_SHUTDOWN "the agent was stopped while the task ran"
#define STOPPED_ON_REQUEST "stopped on request"

/* A snapshot of a policy, queued or running; at most one per policy. */
struct SnapshotTask {
    Manager *manager;
    ManagerPolicy *policy;
    MsSnapshotRecord *record; /* owned by the manager's snapshot list */
    AgentJob job;             /* its worker (NULL while queued), stop and last word */
    char *archive_key, *manifest_key;
    bool point_in_time;
    /* A cluster snapshot's parts as the worker reports them (catalog/snapshot-parts.h): the
     * record takes them when the snapshot completes. NULL until the first. */
    bson_t *parts;
    uint32_t n_parts;
    /* The worker stopped a cluster's balancer and has not said it started it again: if it
     * dies now, the agent starts it (agent-balancer.c). */
    bool balancer_stopped;
    ProgressThrottle progress;
};

/* Tell every observer that has this hook: MANAGER_EMIT(m, policy_changed, p). */
#define MANAGER_EMIT(m, hook, ...)                                                                 \
    do {                                                                                           \
        for (size_t _o = 0; _o < (m)->n_observers; _o++)                                           \
            if ((m)->observers[_o].hooks->hook)                                                    \
                (m)->observers[_o].hooks->hook((m), __VA_ARGS__, (m)->observers[_o].userdata);     \
    } while (0)

typedef enum ReadTaskKind {
    READ_TASK_RESTORE,
    READ_TASK_VERIFY,
} ReadTaskKind;

/* A task that reads a completed snapshot: a restore into a deployment, or a verification. */
typedef struct ReadTask {
    Manager *manager;
    ReadTaskKind kind;
    char *snapshot_id;        /* the snapshot it reads */
    MsRestoreRecord *restore; /* RESTORE: owned by the manager's restore list */
    char *uri;                /* RESTORE: the target as given, password included; wiped on free */
    char **args;              /* the worker's arguments (NULL-terminated), owned */
    AgentJob job;             /* its worker (NULL while queued), stop and last word */
    uint64_t created_usec;
    ProgressThrottle progress; /* RESTORE */
    /* A cluster snapshot's restore whole (its worker may stop the target's balancer): the
     * target, password included, and the password file, kept until the task ends so that the
     * agent can start a balancer its killed worker left stopped (no marker in the store: the
     * target's address is not the store's to keep); wiped on free. */
    char *balancer_uri;
    char *balancer_credential;
    bool balancer_stopped; /* the worker said it stopped the target's balancer, not yet started */
} ReadTask;

struct Manager {
    sd_event *event;
    MsAgentConfig *config;
    MsCatalog *catalog;

    ManagerPolicy **policies; /* sorted by name */
    size_t n_policies;
    char **policy_errors;
    size_t n_policy_errors;

    MsSnapshotRecord **snapshots; /* oldest first */
    size_t n_snapshots;
    MsRestoreRecord **restores; /* oldest first */
    size_t n_restores;
    ReadTask **read_tasks; /* queued or running restores and verifications */
    AgentJobQueue queue;   /* snapshots, restores and verifications that take a worker slot */
    size_t n_read_tasks;
    struct Removal **removals; /* snapshots to remove from remote stores, oldest first */
    size_t n_removals;
    AgentJob remover; /* the worker removing removals[0] */
    /* The jobs that take no worker slot: snapshots being streamed to a client
     * (agent-export.c), balancers a dead cluster snapshot's worker left stopped, being started
     * (agent-balancer.c), parts of other nodes' cluster snapshots taken here
     * (agent-shard-part.c). */
    AgentJobList exports, takeovers, shard_parts;

    /* Who is told of changes: the bus adapter, the timer reconciler (agent-timer.c). */
    struct {
        const ManagerHooks *hooks;
        void *userdata;
    } observers[MANAGER_OBSERVERS_MAX];
    size_t n_observers;

    sd_event_source *retention_timer; /* the next expiry by MaxAge= */

    /* Stores opened for download addresses, by location; emptied on reload (credentials may
     * have been rotated). */
    char **store_locations;
    MsStorage **stores;
    size_t n_stores;

    bool stopping;
    sd_event_source *stop_timer;

    char *timer_directory; /* ManagerOptions.timer_directory or MANAGER_TIMER_DIRECTORY */
    char *config_path;     /* ManagerOptions.config_path (NULL: MS_AGENT_CONFIG_PATH) */

    struct AgentCluster *cluster; /* NULL: this agent works alone (no [Cluster] URI=) */
    struct Resync *resync;        /* a resync under way (agent-resync.c), or NULL */
    struct AgentFollowers *followers; /* the oplog followers (agent-follower.c), or NULL */
    bool correct_at_start;        /* the last run left tasks unfinished: check the stores */

    char **unsaved; /* ids of records the catalog refused; written again by unsaved_timer */
    size_t n_unsaved;
    sd_event_source *unsaved_timer;
};

static inline uint64_t now_usec(void) {
    return ms_realtime_usec();
}

static inline int oom(MsError *e) {
    return ms_error_oom(e);
}

static inline int replace_string(char **dst, const char *src) {
    char *s = NULL;
    if (src && !(s = strdup(src)))
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* agent-manager.c */
MsSnapshotRecord *manager_snapshot_mutable(Manager *m, const char *id);
unsigned manager_running_workers(const Manager *m);
/* Give free worker slots to queued tasks, oldest first, snapshots and readers alike. */
void manager_start_queued(Manager *m);
void manager_maybe_finish_shutdown(Manager *m);
void manager_emit_snapshot_changed(Manager *m, const MsSnapshotRecord *r, unsigned changes);
/* Apply retention to a policy's snapshots now (expire times, removal of expired ones). */
void manager_apply_retention(Manager *m, const char *policy);
/* Would retention under rules remove too much at once (more than 10 snapshots, or more than
 * half of p's when that is 3 or more)? 1 with *ret_summary (free()) saying what, 0 if not. */
int manager_preview_retention(Manager *m, const ManagerPolicy *p, const MsRetentionRules *rules,
                              char **ret_summary, MsError *e);
/* Where credential name is for the worker ($CREDENTIALS_DIRECTORY/NAME); -ENOKEY if absent. */
int manager_credential_path(const char *name, char **ret, MsError *e);

/* Record a snapshot's state (catalog and signal), and log its removal from the store. */
void manager_set_snapshot_state(Manager *m, MsSnapshotRecord *r, MsSnapshotState state);
/* r is deleted or expired, yet its objects are still in the store (a removal cut short by a
 * crash): remove them now (a worker for remote stores). The record stays as it is. */
void manager_finish_removal(Manager *m, MsSnapshotRecord *r, const char *why);
/* A part reads or removes this snapshot now (ManagerPart.uses_snapshot). */
bool manager_snapshot_in_use(const Manager *m, const char *snapshot_id);
/* r's record could not be written to the catalog: write it again later (until it works). */
void manager_remember_unsaved(Manager *m, const MsSnapshotRecord *r);
void manager_log_removed(Manager *m, const MsSnapshotRecord *r, const char *why);

/* The steps of manager_take_snapshot(), for agent-cluster.c: the checks every new snapshot of
 * p needs, a fresh id, and the local task (which takes over a remote record of the same id:
 * a snapshot another node assigned to this one). */
/* The worker's command line for a snapshot of p ("snapshot" first; a cluster snapshot's part
 * changes it): every string is owned by p or m, rec, a buffer of the caller, or static. The
 * URI is not among them: the spawner passes it in a memfd. args: at least
 * MANAGER_SNAPSHOT_ARGS_MAX + 2 per namespace pattern. */
#define MANAGER_NUMBER_ARG_MAX 16
#define MANAGER_SEQ_ARG_MAX 24 /* a uint64 in decimal and its NUL */
#define MANAGER_SNAPSHOT_ARGS_MAX 32
void manager_build_snapshot_args(Manager *m, const ManagerPolicy *p, const MsSnapshotRecord *rec,
                                 const char *credential, const char *key_path,
                                 char level_buf[MANAGER_NUMBER_ARG_MAX],
                                 char parallel_buf[MANAGER_NUMBER_ARG_MAX],
                                 char seq_buf[MANAGER_SEQ_ARG_MAX], const char **args);
int manager_check_snapshot(Manager *m, ManagerPolicy *p, MsError *e);
int manager_new_snapshot_id(Manager *m, const char *policy, char ret[SNAPSHOT_ID_MAX], MsError *e);
/* Queue snapshot id of p on this node. seq: its place in the policy's start order (0: the
 * next one this agent knows of; several nodes pass the number their lease gave). */
int manager_enqueue_snapshot(Manager *m, ManagerPolicy *p, const char *id, MsSnapshotOrigin origin,
                             uint64_t seq, const MsSnapshotRecord **ret_record, MsError *e);
/* The highest seq of p's snapshots this agent knows (any node), and of its counter. */
uint64_t manager_policy_max_seq(const Manager *m, const ManagerPolicy *p);
/* Into m->snapshots at its place by creation time (the array has room for one more). */
void manager_insert_snapshot_record(Manager *m, MsSnapshotRecord *r);

void manager_emit_policy_changed(Manager *m, const ManagerPolicy *p);
/* A store on this node's file system (only this node can read it). */
bool manager_store_is_local(const char *location);
/* A sharded cluster's snapshot: its archive key names the cluster manifest. */
bool manager_snapshot_is_cluster(const MsSnapshotRecord *r);
/* Stop/Start on this node only (as the cluster's stop flag asks); manager_stop_policy() and
 * manager_start_policy() also tell the other nodes. */
int manager_stop_policy_here(Manager *m, ManagerPolicy *p, MsError *e);
int manager_start_policy_here(Manager *m, ManagerPolicy *p, MsError *e);
/* Stop p's task: its cluster lease is lost (recorded interrupted). */
void manager_stop_task_lost_lease(Manager *m, ManagerPolicy *p);
/* A Rebuild whose policy has no task anywhere any more: clean up and take the fresh snapshot. */
void manager_rebuild_now(Manager *m, ManagerPolicy *p);

/* The other nodes (agent-cluster.c): the manager reaches them only through this table, like a
 * part, so that agent-cluster depends on the manager and not the other way round. Alone (no
 * [Cluster] URI=) every operation is a no-op or answers as a single node would. */
typedef struct ManagerCoordination {
    /* Connect to [Cluster] URI= (nothing is contacted yet) and start the heartbeat. */
    int (*start)(Manager *m, MsError *e);
    void (*free)(Manager *m);
    /* Claim the policy's lease for snapshot id and run it here or hand it to the node the
     * policy's NodePriority= prefers. */
    int (*take_snapshot)(Manager *m, ManagerPolicy *p, const char *id, bool scheduled,
                         const MsSnapshotRecord **ret_record, MsError *e);
    /* A local record changed: it is written to the shared collection at the next heartbeat. */
    void (*record_changed)(Manager *m, const MsSnapshotRecord *r);
    /* r's task ended: its final record and the release of its lease go to the cluster now. */
    void (*task_finished)(Manager *m, const MsSnapshotRecord *r);
    /* An operation on another node's task sent to that node ("cancel", "delete-snapshot"). */
    int (*forward)(Manager *m, const char *op, const char *node, const char *policy,
                   const char *task, MsError *e);
    /* Stop or Start given on this node, for every node. */
    int (*set_stopped)(Manager *m, const ManagerPolicy *p, bool stopped, MsError *e);
    /* The node holding p's lease for a task that is not this node's (ret_node NULL: none). */
    int (*lease_elsewhere)(Manager *m, const ManagerPolicy *p, char **ret_node, char **ret_task,
                           MsError *e);
    /* May p's oplog follower run on this node? Alone: yes; with several nodes: while this
     * node holds the policy's follower lease. */
    bool (*may_follow)(const Manager *m, const ManagerPolicy *p);
    /* "NODE=MEMBER" of every live agent with Member=, for a cluster snapshot's worker to hand
     * the shards' parts to (NULL: none; alone: none). */
    char **(*part_agents)(Manager *m);
} ManagerCoordination;

/* The command a cluster snapshot's coordinator sends the node beside a shard's member
 * (ManagerCoordination.forward; agent-shard-part.c runs it): task is "SNAPSHOT_ID/SHARD". */
#define MANAGER_OP_TAKE_PART "take-part"

/* agent-parts.c */
extern const ManagerCoordination *const manager_coordination;

/* A snapshot found complete in a store that no record knows: recorded as r->node's (this node's
 * in its catalog; another node's published to the cluster, or kept in the catalog when there
 * is no cluster). Takes r (freed on failure). */
int manager_adopt_snapshot(Manager *m, MsSnapshotRecord *r, MsError *e);

/* A part of the agent that works for the manager (agent-reader, agent-remover, agent-resync):
 * the manager reaches it only through this table (agent-parts.c lists them), so that parts
 * depend on the manager and never the other way round. Every operation may be NULL. */
typedef struct ManagerPart {
    const char *name;
    int (*load)(Manager *m, MsError *e); /* at start, once the catalog is open */
    void (*policies_loaded)(Manager *m); /* after each load of the policies */
    /* A policy changed (state, settings) or went: what the part runs for it may have to. */
    void (*policy_changed)(Manager *m);
    /* A snapshot of the policy completed, or retention removed some: what the part knows of
     * the policy's snapshots is stale. */
    void (*snapshots_changed)(Manager *m, const char *policy);
    bool (*busy)(const Manager *m);      /* has work queued or running */
    /* Reads or removes this snapshot now: retention and Delete leave it alone. */
    bool (*uses_snapshot)(const Manager *m, const char *snapshot_id);
    /* Remove a completed snapshot's objects from a remote store, in a worker; the outcome is
     * logged when the worker ends (and the snapshot given back as completed if nothing was
     * removed). The record's state is the caller's to set. */
    int (*remove_remote)(Manager *m, const MsSnapshotRecord *r, const char *why, MsError *e);
    void (*flush)(Manager *m); /* running tasks' latest figures to the catalog */
    /* A snapshot's worker is gone, whatever its outcome: what it may have left undone (a
     * cluster's balancer it stopped and never started again). */
    void (*snapshot_ended)(Manager *m, const SnapshotTask *t);
    void (*stop)(Manager *m);  /* shutdown: stop what runs, give back what waits */
    void (*free_all)(Manager *m);
} ManagerPart;

/* agent-parts.c: every part, NULL-terminated, in the order they are stopped and freed. */
extern const ManagerPart *const manager_parts[];

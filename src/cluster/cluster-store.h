/* The agents' shared state in the MongoDB deployment they back up: leases, heartbeats, task
 * records and commands in a small database ("mongosnap" by default). Blocking calls with short
 * time-outs; the agent makes them from its event loop (see docs/architecture.md, "Several
 * nodes", for why that is bounded).
 *
 * Collections (all _id strings, times int64 microseconds since the epoch, by the writer's clock):
 *   agents     {_id: node, member, version, heartbeat, policies: [{name, settings}]}
 *   leases     {_id: "POLICY#GEN", policy, gen, task, node, state: "assigned"|"running"|
 *               "released", expires, scheduled, scheduled_task (the last scheduled tick)}: one
 *               document per claim, the highest gen is the policy's lease (cluster-store.c
 *               says why)
 *   policies   {_id: policy, stopped}
 *   snapshots  {_id: id, policy, node, state, ...every MsSnapshotRecord field, updated}
 *   restores   {_id: id, source_snapshot, node, target (redacted), ..., updated}
 *   commands   {_id: ObjectId, node (the addressee), op, policy, task, from, created}
 * snapshots, restores and commands also carry "mac": the record's code under the cluster key
 * (cluster/record-mac.h) when the writer signs, else null.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/catalog.h"
#include "cluster/member-select.h"
#include "common/error.h"
#include "common/macro.h"

typedef struct MsCluster MsCluster;

/* uri: the deployment (no password in it; password from a credential, may be NULL). Nothing is
 * contacted yet. Every operation then fails within about MS_CLUSTER_TIMEOUT_MS when the
 * deployment cannot be reached. */
#define MS_CLUSTER_TIMEOUT_MS 2000
int ms_cluster_open(const char *uri, const char *password, const char *database, MsCluster **ret,
                    MsError *e);
MsCluster *ms_cluster_free(MsCluster *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsCluster *, ms_cluster_free);
const char *ms_cluster_redacted_uri(const MsCluster *c);

/* Add a key (a copy is kept; MS_CLUSTER_KEY_MIN..MAX bytes, at most MS_CLUSTER_KEYS_MAX keys).
 * The first one added signs what this agent writes to snapshots, restores and commands; what
 * it reads from them is taken only when signed with one of its keys (a rotation: the new key
 * first, the old ones after it). Without a key nothing is signed and everything is taken, as
 * every agent did before keys. Records whose store keys name another snapshot's files are
 * refused either way. */
#define MS_CLUSTER_KEYS_MAX 4
int ms_cluster_add_key(MsCluster *c, const void *key, size_t len, MsError *e);
bool ms_cluster_signs(const MsCluster *c);
/* The documents refused since the last call (each counted once however often it is read
 * again), and a description of the latest in last ("commands delete-snapshot of X from node
 * Y: not signed; ..."). */
#define MS_CLUSTER_REFUSAL_MAX 512
uint64_t ms_cluster_take_refusals(MsCluster *c, char *last, size_t last_size);

/* ---- agents and heartbeats ---- */
typedef struct MsClusterAgent {
    char *node;
    char *member; /* the replica-set member it runs beside ("db2:27017"); NULL: unknown */
    char *version;
    uint64_t heartbeat_usec;
    size_t n_policies;
    char **policy_names;    /* sorted */
    char **policy_settings; /* each policy's file as ms_policy_to_ini() writes it */
} MsClusterAgent;
void ms_cluster_agent_clear(MsClusterAgent *a);
void ms_cluster_agents_free(MsClusterAgent *a, size_t n);

int ms_cluster_heartbeat(MsCluster *c, const MsClusterAgent *self, MsError *e);
int ms_cluster_list_agents(MsCluster *c, MsClusterAgent **ret, size_t *ret_n, MsError *e);

/* ---- leases: at most one task per policy in the whole cluster ---- */
typedef struct MsClusterLease {
    char *policy;
    uint64_t gen;
    char *task;  /* NULL: free */
    char *node;  /* the node that runs (or is to run) task */
    char *state; /* "assigned" (not started yet), "running"; NULL when free */
    uint64_t expires_usec;
    uint64_t scheduled_usec; /* when the last scheduled tick was claimed; 0: none yet */
    uint64_t tick_usec;      /* that tick's nominal time (calendar); 0: not known */
    char *scheduled_task;    /* the snapshot that tick started */
    bool stopped;            /* Stop given on some node: no new task anywhere until Start */
    /* The policy's start order, carried from generation to generation: each claim numbers its
     * snapshot one past the highest number any node gave (retention ranks by it), and what
     * started it ("scheduled" or "manual"). */
    uint64_t seq;
    char *origin;
} MsClusterLease;
void ms_cluster_lease_clear(MsClusterLease *l);
void ms_cluster_leases_free(MsClusterLease *l, size_t n);

int ms_cluster_list_leases(MsCluster *c, MsClusterLease **ret, size_t *ret_n, MsError *e);
int ms_cluster_get_lease(MsCluster *c, const char *policy, MsClusterLease *ret, MsError *e);

/* Claim policy's lease for task on node (assigned to it) until now + lease_usec, by inserting
 * the lease's next generation (one winner among concurrent claimants). A scheduled
 * claim (tick_window_usec > 0) also needs the last scheduled claim to be more than the window
 * old: the timers of every node fire for the same tick, and only the first claim of it counts.
 *   0          claimed;
 *   -EBUSY     another task holds a lease that has not expired (ret_current says which);
 *   -EALREADY  a scheduled claim for this tick was made already (ret_current);
 *   -EPERM     the policy is stopped cluster-wide.
 * ret_current may be NULL. */
/* seq_floor: the highest seq this agent knows for the policy; the claim's snapshot gets one
 * past the larger of it and the lease's, in *ret_seq (may be NULL). */
/* tick_usec: for a scheduled claim, the tick's nominal time (the latest calendar elapse at or
 * before the call; 0: unknown). When both this claim and the last scheduled one know theirs, a
 * tick is taken when the last scheduled claim was for it or a later one, however late the call
 * (a persistent timer catching up); otherwise the window above decides. */
int ms_cluster_claim(MsCluster *c, const char *policy, const char *task, const char *node,
                     uint64_t now_usec, uint64_t lease_usec, uint64_t tick_window_usec,
                     uint64_t tick_usec, uint64_t seq_floor, uint64_t *ret_seq,
                     MsClusterLease *ret_current, MsError *e);
/* Extend the lease of task on node and mark it running. -ESTALE: the lease is no longer
 * theirs (it expired and was taken over, or was released). */
int ms_cluster_renew(MsCluster *c, const char *policy, const char *task, const char *node,
                     uint64_t now_usec, uint64_t lease_usec, MsError *e);
/* Free the lease if task still holds it (a no-op otherwise). */
int ms_cluster_release(MsCluster *c, const char *policy, const char *task, MsError *e);
/* Move an expired lease of old_task to new_task on node. -ESTALE: somebody else did first, or it
 * was renewed or released meanwhile. */
int ms_cluster_take_over(MsCluster *c, const char *policy, const char *old_task,
                         const char *new_task, const char *node, uint64_t now_usec,
                         uint64_t lease_usec, uint64_t seq_floor, uint64_t *ret_seq, MsError *e);
/* Stop or start policy cluster-wide (the flag every agent follows). */
int ms_cluster_set_stopped(MsCluster *c, const char *policy, bool stopped, MsError *e);

/* ---- records of every node ---- */
int ms_cluster_put_snapshot(MsCluster *c, const MsSnapshotRecord *r, uint64_t now_usec, MsError *e);
int ms_cluster_put_restore(MsCluster *c, const MsRestoreRecord *r, const char *node,
                           uint64_t now_usec, MsError *e);
/* Records written at or after since_usec (0: all), oldest first; restores with their node. */
int ms_cluster_list_snapshots(MsCluster *c, uint64_t since_usec, MsSnapshotRecord ***ret,
                              size_t *ret_n, MsError *e);
int ms_cluster_list_restores(MsCluster *c, uint64_t since_usec, MsRestoreRecord ***ret,
                             size_t *ret_n, MsError *e);
/* Set a snapshot's state and error if it is queued or running (the record of a task whose node
 * died). 0 when changed, -ESTALE when it was not queued or running (or is unknown). */
int ms_cluster_mark_snapshot(MsCluster *c, const char *id, MsSnapshotState state, const char *error,
                             uint64_t now_usec, MsError *e);

/* ---- commands from one node to another ---- */
typedef struct MsClusterCommand {
    char *op; /* "cancel", "verify", "delete-snapshot" */
    char *policy;
    char *task;
    char *from;
} MsClusterCommand;
void ms_cluster_commands_free(MsClusterCommand *c, size_t n);

int ms_cluster_send_command(MsCluster *c, const char *to_node, const MsClusterCommand *cmd,
                            uint64_t now_usec, MsError *e);
/* Remove and return the commands addressed to node (each is returned once, to one caller).
 * When this agent signs, the commands it refuses (see ms_cluster_add_key(), and older than
 * MAX_AGE or further than MAX_AHEAD ahead of now) are removed too and counted as refused. */
#define MS_CLUSTER_COMMAND_MAX_AGE_USEC (24ULL * 3600 * 1000000)
#define MS_CLUSTER_COMMAND_MAX_AHEAD_USEC (10ULL * 60 * 1000000)
int ms_cluster_take_commands(MsCluster *c, const char *node, uint64_t now_usec,
                             MsClusterCommand **ret, size_t *ret_n, MsError *e);

/* ---- the replica set ---- */
/* The members (replSetGetStatus joined with replSetGetConfig, or what hello says when those are
 * not available, as with FerretDB). -EOPNOTSUPP for a standalone server. */
int ms_cluster_members(MsCluster *c, MsClusterMember **ret, size_t *ret_n, MsError *e);

/* Several nodes: the agents of one cluster act as one through shared collections in the
 * deployment they back up (cluster/cluster-store.h). What the bus adapter and the daemon see of
 * it, and what the other parts (reader, resync) call; the manager reaches it through
 * cluster_coordination (agent-internal.h ManagerCoordination). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent/agent-manager.h"
#include "common/error.h"

/* Connect to [Cluster] URI= (nothing is contacted yet) and start the heartbeat. A no-op
 * without URI=. */
int manager_cluster_start(Manager *m, MsError *e);
void manager_cluster_free(Manager *m);

bool manager_cluster_enabled(const Manager *m);
/* "" (alone), "connected", or "unreachable: why" (no secret in it). */
const char *manager_cluster_status(const Manager *m);

/* Heartbeat, leases, commands and records now (Update). -EHOSTUNREACH etc. with a message when
 * the cluster database cannot be reached; a no-op when alone. */
int manager_cluster_sync(Manager *m, MsError *e);

/* Operations on another node's snapshot or restore are sent to that node: op "cancel",
 * "verify", "delete-snapshot". 0 when sent. */
/* "NODE=MEMBER" of every live agent with Member= (this one's too), for a cluster snapshot's
 * worker to hand the shards' parts to; NULL when there is none or no cluster. */
char **manager_cluster_part_agents(Manager *m);
int manager_cluster_forward(Manager *m, const char *op, const char *node, const char *policy,
                            const char *task, MsError *e);

/* Stop or Start given on this node, for every node (the flag the others follow). */
int manager_cluster_set_stopped(Manager *m, const ManagerPolicy *p, bool stopped, MsError *e);

/* The node that holds p's lease for a task that is not this node's, or NULL (alone, free,
 * expired, or this node's own). ret_task: that task. Reads the cluster database. */
int manager_cluster_lease_elsewhere(Manager *m, const ManagerPolicy *p, char **ret_node,
                                    char **ret_task, MsError *e);

/* For the parts of the agent (agent-internal.h). */
typedef struct ManagerCoordination ManagerCoordination;
extern const ManagerCoordination cluster_coordination;
/* Claim the policy's cluster lease for snapshot id and run it here or hand it to the node the
 * policy's NodePriority= prefers. */
int cluster_take_snapshot(Manager *m, ManagerPolicy *p, const char *id, bool scheduled,
                          const MsSnapshotRecord **ret_record, MsError *e);
/* A local record changed: it is written to the shared collection at the next heartbeat. */
void cluster_record_changed(Manager *m, const MsSnapshotRecord *r);
/* Write another node's record (found by a resync) to the cluster's records at once. */
int cluster_publish_foreign(Manager *m, const MsSnapshotRecord *r, MsError *e);
void cluster_restore_changed(Manager *m, const MsRestoreRecord *r);
/* r's task ended: its final record and the release of its lease go to the cluster now. */
void cluster_task_finished(Manager *m, const MsSnapshotRecord *r);

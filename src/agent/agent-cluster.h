/* Several nodes: the agents of one cluster act as one through shared collections in the
 * deployment they back up (cluster/cluster-store.h). What the bus adapter and the daemon see of
 * it; the rest is in agent-internal.h. */
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
int manager_cluster_forward(Manager *m, const char *op, const char *node, const char *policy,
                            const char *task, MsError *e);

/* Stop or Start given on this node, for every node (the flag the others follow). */
int manager_cluster_set_stopped(Manager *m, const ManagerPolicy *p, bool stopped, MsError *e);

/* The node that holds p's lease for a task that is not this node's, or NULL (alone, free,
 * expired, or this node's own). ret_task: that task. Reads the cluster database. */
int manager_cluster_lease_elsewhere(Manager *m, const ManagerPolicy *p, char **ret_node,
                                    char **ret_task, MsError *e);

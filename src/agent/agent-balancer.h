/* agent-balancer.c: the takeover of a sharded cluster's balancer that a cluster snapshot's worker
 * stopped and died before starting again (SIGKILL, a crash): `mongosnap-worker cluster-balancer
 * --resume --name SNAPSHOT` starts it through the policy's source and removes the snapshot's
 * marker. The next cluster snapshot of the policy does the same for any marker left (a node
 * that died whole, whose agent could not). */
#pragma once

#include "agent/agent-internal.h"

/* At most this many takeovers at once (each connects to a mongos). */
#define MANAGER_TAKEOVERS_MAX 8

/* Start the takeover for snapshot snapshot_id of p; failures are logged (the next snapshot of
 * the policy takes over then). */
void manager_balancer_takeover(Manager *m, const ManagerPolicy *p, const char *snapshot_id);

/* Start the balancer of a restore's target cluster that the restore's worker stopped and died
 * before starting again (`mongosnap-worker cluster-balancer --start`, target uri, password
 * file credential or NULL); failures are logged with what to do by hand. */
void manager_balancer_start(Manager *m, const char *restore_id, const char *uri,
                            const char *credential);

extern const ManagerPart balancer_part;

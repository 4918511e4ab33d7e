/* agent-shard-part.c: a sharded cluster snapshot's part that another node's coordinator handed
 * to this node (its agent runs beside one of the shard's members, Member=): a `mongosnap-worker
 * cluster-part` run at once, outside the task queue (the coordinator waits for it), which meets
 * the coordinator's worker through the store (engine/cluster-part.h). Its outcome reaches the
 * coordinator that way; here it is logged and written to the Event Log. */
#pragma once

#include "agent/agent-internal.h"

#define MANAGER_SHARD_PARTS_MAX 16

/* Take part SHARD of cluster snapshot SNAPSHOT_ID of policy, as node `from` asked. */
int manager_take_part(Manager *m, const char *policy, const char *task, const char *from,
                      MsError *e);

extern const ManagerPart shard_part_part;

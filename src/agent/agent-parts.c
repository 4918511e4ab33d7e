/* The parts of the agent that work for the manager (agent-internal.h ManagerPart): the one
 * place that knows them all, so that the manager knows none by name. */
#include "agent/agent-balancer.h"
#include "agent/agent-cluster.h"
#include "agent/agent-export.h"
#include "agent/agent-follower.h"
#include "agent/agent-reader.h"
#include "agent/agent-remover.h"
#include "agent/agent-resync.h"
#include "agent/agent-shard-part.h"

/* Stopped and freed in this order: removals first (their queued ones are given back), then
 * the scan, then restores and verifications, then the oplog followers (each commits what it
 * read before it exits), then exports, then balancer takeovers (let finish: a balancer left
 * stopped is worse than a slower shutdown), then the parts taken for other nodes' cluster
 * snapshots. */
const ManagerPart *const manager_parts[] = {&remover_part,  &resync_part,   &reader_part,
                                            &follower_part, &export_part,   &balancer_part,
                                            &shard_part_part, NULL};

/* The other nodes: agent-cluster.c. */
const ManagerCoordination *const manager_coordination = &cluster_coordination;

/* agent-follower.c: the oplog follower of every policy with [PointInTime] Enabled=yes, a
 * long-running `mongosnap-worker follow` per policy. The manager reaches it through
 * follower_part (policies loaded or changed, shutdown); its state is public through
 * manager_policy_follower() (agent-manager.h). */
#pragma once

#include "agent/agent-internal.h"

typedef struct AgentFollowers AgentFollowers;

extern const ManagerPart follower_part;

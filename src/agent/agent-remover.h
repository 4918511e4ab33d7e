/* agent-remover.c: removals from remote stores, one worker at a time. What the other parts of
 * the agent need of it; the manager reaches it through remover_part. */
#pragma once

#include "agent/agent-internal.h"

extern const ManagerPart remover_part;
bool remover_has(const Manager *m, const char *snapshot_id);
/* An archive without a manifest (key in store, of snapshot_id), which no task can complete any
 * more: removed, and the Event Log says so (orphan-removed); no record changes. */
int remover_enqueue_orphan(Manager *m, const char *store, const char *key, const char *snapshot_id,
                           const char *policy, const char *why, MsError *e);

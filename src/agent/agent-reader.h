/* agent-reader.c: restores and verifications, tasks that read a completed snapshot. What the
 * other parts of the agent need of it; the manager reaches it through reader_part. */
#pragma once

#include "agent/agent-internal.h"

extern const ManagerPart reader_part;
bool reader_uses_snapshot(const Manager *m, const char *snapshot_id);

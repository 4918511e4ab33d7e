/* agent-export.c: a completed snapshot streamed to a client as a stock mongodump archive
 * (Snapshot.Export), by `mongosnap-worker export` writing into the client's file descriptor. */
#pragma once

#include "agent/agent-internal.h"

/* At most this many exports at once (they read the store and take a worker each). */
#define MANAGER_EXPORTS_MAX 4

/* manager_export_snapshot() and manager_export_forget() are in agent-manager.h. */

extern const ManagerPart export_part;

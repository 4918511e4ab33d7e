/* agent-resync.c: records rebuilt from the stores. The manager reaches it through resync_part
 * (the start's check of what the previous run left unfinished); manager_resync() is public. */
#pragma once

#include "agent/agent-internal.h"

typedef struct Resync Resync;

extern const ManagerPart resync_part;

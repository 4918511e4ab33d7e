/* The policies' systemd timers (mongosnap-snapshot@NAME.timer drop-ins) and their NextRun,
 * kept in line with the policies by observing the manager (agent-timer.c says how). */
#pragma once

#include <systemd/sd-bus.h>

#include "agent/agent-manager.h"
#include "common/error.h"

typedef struct AgentTimers AgentTimers;

/* Observe m from now on; bus reaches systemd (NULL: none, drop-ins in a --timer-dir are still
 * written). Free after manager_free(): the manager may announce changes until then. */
int agent_timers_attach(Manager *m, sd_bus *bus, AgentTimers **ret, MsError *e);
AgentTimers *agent_timers_free(AgentTimers *t);
/* Every drop-in rewritten, those of vanished policies removed, every timer started or stopped
 * as its policy says and NextRun asked again (at start and at each reload of the policies). */
void agent_timers_sync_all(AgentTimers *t);

/* NextRun: when systemd's timer for a policy (mongosnap-snapshot@NAME.timer) fires next, asked
 * from systemd over the same bus; the agent itself does not schedule. Asked again whenever the
 * policy changes (edited, stopped, started, a snapshot ended: the timer fired), so no polling. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/log.h"

#define SYSTEMD_BUS_NAME "org.freedesktop.systemd1"
#define SYSTEMD_UNIT_PATH_PREFIX "/org/freedesktop/systemd1/unit"
#define SYSTEMD_TIMER_INTERFACE "org.freedesktop.systemd1.Timer"
#define TIMER_UNIT_FORMAT "mongosnap-snapshot@%s.timer"

typedef struct NextRunQuery {
    Manager *manager;
    char name[]; /* the policy, looked up again on reply: it may be gone by then */
} NextRunQuery;

static int on_next_elapse(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
    NextRunQuery *q = userdata; /* freed with the slot */
    ManagerPolicy *p = manager_find_policy(q->manager, q->name);
    if (!p)
        return 0;
    uint64_t next = 0;
    /* No systemd on this bus, no such timer, a stopped timer: no next run that we know of. */
    if (!sd_bus_message_is_method_error(reply, NULL) &&
        sd_bus_message_read(reply, "v", "t", &next) < 0)
        next = 0;
    if (next == UINT64_MAX || p->runtime->state != MS_POLICY_ACTIVE)
        next = 0;
    if (p->runtime->next_run_usec == next)
        return 0;
    p->runtime->next_run_usec = next;
    bus_policy_emit_changed(sd_bus_message_get_bus(reply), p);
    return 0;
}

void bus_timer_query_next_run(sd_bus *bus, Manager *m, const ManagerPolicy *p) {
    _cleanup_free_ char *unit = NULL, *path = NULL;
    if (asprintf(&unit, TIMER_UNIT_FORMAT, p->settings->name) < 0 ||
        sd_bus_path_encode(SYSTEMD_UNIT_PATH_PREFIX, unit, &path) < 0)
        return;
    size_t len = strlen(p->settings->name) + 1;
    NextRunQuery *q = malloc(sizeof(*q) + len);
    if (!q)
        return;
    q->manager = m;
    memcpy(q->name, p->settings->name, len);
    sd_bus_slot *slot = NULL;
    int r = sd_bus_call_method_async(bus, &slot, SYSTEMD_BUS_NAME, path,
                                     "org.freedesktop.DBus.Properties", "Get", on_next_elapse, q,
                                     "ss", SYSTEMD_TIMER_INTERFACE, "NextElapseUSecRealtime");
    if (r < 0) {
        free(q);
        log_debug("cannot ask systemd about %s: %s", unit, strerror(-r));
        return;
    }
    /* The query goes with the slot: after the reply, or when the bus closes first. */
    (void) sd_bus_slot_set_destroy_callback(slot, free);
    (void) sd_bus_slot_set_floating(slot, true);
    sd_bus_slot_unref(slot);
}

void bus_timer_query_all(sd_bus *bus, Manager *m) {
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        const ManagerPolicy *p = manager_policy_at(m, i);
        if (!p->removed)
            bus_timer_query_next_run(bus, m, p);
    }
}

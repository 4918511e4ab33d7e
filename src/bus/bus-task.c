/* What every task object (io.mongosnap1.Snapshot, io.mongosnap1.Restore) shows of its record's
 * core (catalog.h, MsTaskCore): the getters and the rows' shared parts, written once. Each
 * record embeds its core first, so the object's userdata is its core. */
#include <string.h>

#include "bus/bus.h"
#include "common/timeutil.h"

int bus_task_property_get_string(sd_bus *bus, const char *path, const char *interface,
                                 const char *property, sd_bus_message *reply, void *userdata,
                                 sd_bus_error *ret_error) {
    const MsTaskCore *c = userdata;
    const char *v = strcmp(property, "Id") == 0      ? c->id
                    : strcmp(property, "Node") == 0  ? c->node
                    : strcmp(property, "Error") == 0 ? c->error
                    : strcmp(property, "Phase") == 0 ? c->phase
                                                     : NULL;
    return sd_bus_message_append(reply, "s", empty_if_null(v));
}

int bus_task_property_get_task_log(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *reply, void *userdata,
                                   sd_bus_error *ret_error) {
    const MsTaskCore *c = userdata;
    return bus_append_task_log(reply, c->id);
}

int bus_task_property_get_elapsed(sd_bus *bus, const char *path, const char *interface,
                                  const char *property, sd_bus_message *reply, void *userdata,
                                  sd_bus_error *ret_error) {
    const MsTaskCore *c = userdata;
    return sd_bus_message_append(reply, "t", manager_task_elapsed_usec(c, ms_realtime_usec()));
}

int bus_task_property_get_progress(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *reply, void *userdata,
                                   sd_bus_error *ret_error) {
    const MsTaskCore *c = userdata;
    return sd_bus_message_append(reply, "d", c->progress_pct);
}

void bus_task_emit_changed(sd_bus *bus, const char *prefix, const char *interface,
                           const MsTaskCore *c, unsigned changes) {
    _cleanup_free_ char *path = NULL;
    if (sd_bus_path_encode(prefix, c->id, &path) >= 0)
        bus_emit_task_changed(bus, path, interface, changes);
}

void bus_task_emit_added(sd_bus *bus, const char *prefix, const MsTaskCore *c) {
    _cleanup_free_ char *path = NULL;
    if (sd_bus_path_encode(prefix, c->id, &path) >= 0)
        bus_emit_added(bus, path);
}

int bus_task_method_get_log(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsTaskCore *c = userdata;
    const char *after;
    uint32_t max;
    int k = sd_bus_message_read(message, "su", &after, &max);
    if (k < 0)
        return k;
    return bus_reply_log(message, NULL, c->id, after, max, ret_error);
}

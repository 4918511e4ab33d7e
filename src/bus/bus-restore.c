/* io.mongosnap1.Restore objects: a restore task's columns, live Progress, Cancel, its log. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "mongosnap/mongosnap.h"

static int restore_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **ret_found, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_free_ char *id = NULL;
    int r = sd_bus_path_decode(path, MONGOSNAP_BUS_RESTORE_PREFIX, &id);
    if (r <= 0)
        return r;
    const MsRestoreRecord *rec = manager_find_restore(m, id);
    if (!rec)
        return 0;
    *ret_found = (void *) rec;
    return 1;
}

static const char *restore_id_at(const Manager *m, size_t i) {
    return manager_restore_at(m, i)->id;
}

static int restore_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                             sd_bus_error *ret_error) {
    Manager *m = userdata;
    return bus_enumerate_ids(MONGOSNAP_BUS_RESTORE_PREFIX, m, manager_n_restores(m), restore_id_at,
                             ret_nodes);
}

#define RESTORE_GETTER(fname)                                                                      \
    static int fname(sd_bus *bus, const char *path, const char *interface, const char *property,   \
                     sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)

RESTORE_GETTER(property_get_string) {
    const MsRestoreRecord *r = userdata;
    const char *v = strcmp(property, "SourceSnapshot") == 0   ? r->source_snapshot
                    : strcmp(property, "Target") == 0         ? r->target
                    : strcmp(property, "Options") == 0        ? (r->options ? r->options : "{}")
                                                              : NULL;
    return sd_bus_message_append(reply, "s", empty_if_null(v));
}

RESTORE_GETTER(property_get_state) {
    const MsRestoreRecord *r = userdata;
    return sd_bus_message_append(reply, "s", ms_restore_state_to_string(r->state));
}

static int method_cancel(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsRestoreRecord *r = userdata;
    int k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    MsError e = MS_ERROR_INIT;
    if (manager_cancel_restore(bus_manager_of(message), r->id, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_RESTORE);
    return sd_bus_reply_method_return(message, NULL);
}

#define CHANGING SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE
#define CONST SD_BUS_VTABLE_PROPERTY_CONST

static const sd_bus_vtable restore_vtable[] = {
    SD_BUS_VTABLE_START(0),
    BUS_TASK_CORE_PROPERTIES,
    /* A restore to a time may start from an older snapshot than first named, and its plan
     * joins the options: both can change once, when the worker has planned. */
    SD_BUS_PROPERTY("SourceSnapshot", "s", property_get_string, 0, CHANGING),
    SD_BUS_PROPERTY("Target", "s", property_get_string, 0, CONST),
    SD_BUS_PROPERTY("Options", "s", property_get_string, 0, CHANGING),
    SD_BUS_PROPERTY("State", "s", property_get_state, 0, CHANGING),
    SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_cancel,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetLog", SD_BUS_ARGS("s", after_cursor, "u", max_entries),
                            SD_BUS_RESULT("a" MONGOSNAP_LOG_ENTRY, entries), bus_task_method_get_log,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

int bus_append_restore_row(sd_bus_message *reply, const MsRestoreRecord *r, uint64_t now) {
    _cleanup_free_ char *path = NULL, *log_ref = NULL;
    int k = bus_restore_path(r->id, &path);
    if (k < 0)
        return k;
    k = bus_task_log_reference(r->id, &log_ref);
    if (k < 0)
        return k;
    return sd_bus_message_append(
        reply, MONGOSNAP_RESTORE_ROW, r->id, r->source_snapshot, empty_if_null(r->target), log_ref,
        manager_task_elapsed_usec(&r->core, now), r->items_done, r->items_total, r->progress_pct,
        r->created_usec, ms_restore_state_to_string(r->state), empty_if_null(r->error), path,
        empty_if_null(r->node));
}

void bus_restore_emit_changed(sd_bus *bus, const MsRestoreRecord *r, unsigned changes) {
    bus_task_emit_changed(bus, MONGOSNAP_BUS_RESTORE_PREFIX, MONGOSNAP_BUS_RESTORE_INTERFACE, &r->core,
                          changes);
}

void bus_restore_emit_added(sd_bus *bus, const MsRestoreRecord *r) {
    bus_task_emit_added(bus, MONGOSNAP_BUS_RESTORE_PREFIX, &r->core);
}

int bus_restore_register(Manager *m, sd_bus *bus, MsError *e) {
    int r =
        sd_bus_add_fallback_vtable(bus, NULL, MONGOSNAP_BUS_RESTORE_PREFIX, MONGOSNAP_BUS_RESTORE_INTERFACE,
                                   restore_vtable, restore_find, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register %s: %s", MONGOSNAP_BUS_RESTORE_PREFIX, strerror(-r));
    r = sd_bus_add_node_enumerator(bus, NULL, MONGOSNAP_BUS_RESTORE_PREFIX, restore_enumerate, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register the restore enumerator: %s", strerror(-r));
    return 0;
}

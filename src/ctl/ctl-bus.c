/* mongosnapctl's bus side: connecting, calling mongosnapd, reporting errors, finding objects. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "mongosnap/mongosnap.h"

int ctl_fail(CtlExit code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, CTL_PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int ctl_fail_bus(const char *what, const sd_bus_error *error, int r) {
    bool named = sd_bus_error_is_set(error);
    CtlExit code = ctl_exit_for_error(named ? error->name : NULL, r);
    /* The bus daemon's own refusal names rules and connection ids, nothing a person acts on. */
    if (named && strcmp(error->name, "org.freedesktop.DBus.Error.AccessDenied") == 0)
        return ctl_fail(code,
                        "%s: permission denied: needs root or membership in group " MONGOSNAP_GROUP
                        " (members of " MONGOSNAP_READONLY_GROUP " may only list and read)",
                        what);
    if (named && strcmp(error->name, MONGOSNAP_ERROR_ACCESS_DENIED) == 0)
        return ctl_fail(code, "%s: permission denied: %s", what,
                        error->message ? error->message : error->name);
    const char *message = named ? (error->message ? error->message : error->name) : strerror(-r);
    const char *hint = code == CTL_EXIT_UNREACHABLE ? " (is mongosnapd running?)" : "";
    return ctl_fail(code, "%s: %s%s", what, message, hint);
}

static int connect_bus(const char *address, sd_bus **ret) {
    _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
    int r;
    if (!address)
        /* Honours $DBUS_SYSTEM_BUS_ADDRESS. */
        r = sd_bus_open_system(&bus);
    else {
        r = sd_bus_new(&bus);
        if (r >= 0)
            r = sd_bus_set_address(bus, address);
        if (r >= 0)
            r = sd_bus_set_bus_client(bus, true);
        if (r >= 0)
            r = sd_bus_start(bus);
    }
    if (r < 0)
        return r;
    *ret = TAKE_PTR(bus);
    return 0;
}

int ctl_bus(Ctl *ctl, sd_bus **ret) {
    if (!ctl->bus) {
        int r = connect_bus(ctl->args.address, &ctl->bus);
        if (r < 0)
            return ctl_fail(CTL_EXIT_UNREACHABLE, "cannot connect to %s: %s",
                            ctl->args.address ? ctl->args.address : "the system bus", strerror(-r));
    }
    *ret = ctl->bus;
    return CTL_EXIT_OK;
}

int ctl_call(sd_bus *bus, const char *path, const char *interface, const char *method,
             sd_bus_error *error, sd_bus_message **ret_reply, const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    int r = sd_bus_call_methodv(bus, MONGOSNAP_BUS_NAME, path, interface, method, error, ret_reply,
                                types, ap);
    va_end(ap);
    return r;
}

/* An object is found by its path alone: the agent answers a property of an object it does not
 * have with UnknownObject, so no list of every snapshot crosses the bus to find one. */
_printf_(9, 10) static int find_object(sd_bus *bus, const char *prefix, const char *interface,
                                       const char *property, const char *name, char **ret_path,
                                       sd_bus_error *error, const char *no_such, const char *fmt,
                                       ...) {
    _cleanup_free_ char *path = NULL;
    int r = sd_bus_path_encode(prefix, name, &path);
    if (r < 0)
        return r;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    sd_bus_error probe = SD_BUS_ERROR_NULL;
    r = sd_bus_get_property(bus, MONGOSNAP_BUS_NAME, path, interface, property, &probe, &reply,
                            "s");
    if (r >= 0) {
        *ret_path = TAKE_PTR(path);
        return 0;
    }
    if (!sd_bus_error_has_names(&probe, SD_BUS_ERROR_UNKNOWN_OBJECT,
                                SD_BUS_ERROR_UNKNOWN_INTERFACE, SD_BUS_ERROR_UNKNOWN_PROPERTY)) {
        sd_bus_error_move(error, &probe);
        return r;
    }
    sd_bus_error_free(&probe);
    va_list ap;
    va_start(ap, fmt);
    sd_bus_error_setfv(error, no_such, fmt, ap);
    va_end(ap);
    return -ENOENT;
}

int ctl_find_policy(sd_bus *bus, const char *name, char **ret_path, sd_bus_error *error) {
    return find_object(bus, MONGOSNAP_BUS_POLICY_PREFIX, MONGOSNAP_BUS_POLICY_INTERFACE, "Name",
                       name, ret_path, error, MONGOSNAP_ERROR_NO_SUCH_POLICY,
                       "no policy '%s' is loaded (mongosnapctl list-policies shows them)", name);
}

int ctl_find_snapshot(sd_bus *bus, const char *id, char **ret_path, sd_bus_error *error) {
    return find_object(bus, MONGOSNAP_BUS_SNAPSHOT_PREFIX, MONGOSNAP_BUS_SNAPSHOT_INTERFACE, "Id",
                       id, ret_path, error, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT,
                       "no snapshot '%s' (mongosnapctl list-snapshots shows them)", id);
}

int ctl_find_restore(sd_bus *bus, const char *id, char **ret_path, sd_bus_error *error) {
    return find_object(bus, MONGOSNAP_BUS_RESTORE_PREFIX, MONGOSNAP_BUS_RESTORE_INTERFACE, "Id",
                       id, ret_path, error, MONGOSNAP_ERROR_NO_SUCH_RESTORE,
                       "no restore '%s' (mongosnapctl list-restores shows them)", id);
}

int ctl_object_callv(Ctl *ctl, CtlObject kind, const char *verb, const char *name,
                     const char *method, sd_bus_message **ret_reply, char **ret_path,
                     const char *types, va_list ap) {
    static const struct {
        int (*find)(sd_bus *bus, const char *name, char **ret_path, sd_bus_error *error);
        const char *interface;
    } kinds[] = {
        [CTL_OBJECT_POLICY] = {ctl_find_policy, MONGOSNAP_BUS_POLICY_INTERFACE},
        [CTL_OBJECT_SNAPSHOT] = {ctl_find_snapshot, MONGOSNAP_BUS_SNAPSHOT_INTERFACE},
        [CTL_OBJECT_RESTORE] = {ctl_find_restore, MONGOSNAP_BUS_RESTORE_INTERFACE},
    };
    sd_bus *bus = NULL;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    int r = kinds[kind].find(bus, name, &path, &error);
    if (r >= 0)
        r = sd_bus_call_methodv(bus, MONGOSNAP_BUS_NAME, path, kinds[kind].interface, method,
                                &error, ret_reply, types, ap);
    if (r < 0) {
        char what[CTL_WHAT_MAX];
        snprintf(what, sizeof(what), "%s %s", verb, name);
        return ctl_fail_bus(what, &error, r);
    }
    if (ret_path)
        *ret_path = TAKE_PTR(path);
    return CTL_EXIT_OK;
}

int ctl_object_call(Ctl *ctl, CtlObject kind, const char *verb, const char *name,
                    const char *method, sd_bus_message **ret_reply, char **ret_path,
                    const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    int code = ctl_object_callv(ctl, kind, verb, name, method, ret_reply, ret_path, types, ap);
    va_end(ap);
    return code;
}

int ctl_find_task(sd_bus *bus, const char *id, char **ret_path, CtlObject *ret_kind,
                  sd_bus_error *error) {
    *ret_kind = CTL_OBJECT_SNAPSHOT;
    int r = ctl_find_snapshot(bus, id, ret_path, error);
    if (r != -ENOENT)
        return r;
    sd_bus_error_free(error);
    *ret_kind = CTL_OBJECT_RESTORE;
    r = ctl_find_restore(bus, id, ret_path, error);
    if (r != -ENOENT)
        return r;
    sd_bus_error_free(error);
    sd_bus_error_setf(error, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT,
                      "no snapshot or restore task '%s' (mongosnapctl list-snapshots and "
                      "list-restores show them)",
                      id);
    return -ENOENT;
}

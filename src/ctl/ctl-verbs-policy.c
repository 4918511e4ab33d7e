/* mongosnapctl's policy verbs: snapshot, stop, start, delete, rebuild, edit, create-policy. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* Rebuild answers only once the running worker has stopped and a fresh snapshot is queued. */
#define REBUILD_TIMEOUT_USEC (5 * CTL_SEC_PER_MINUTE * CTL_USEC_PER_SEC)
#define WHAT_MAX 256

/* A method of the policy called name; prints and returns the exit code on failure. */
static int policy_callv(Ctl *ctl, const char *verb, const char *name, const char *method,
                        sd_bus_message **reply, const char *types, va_list ap) {
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "%s %s", verb, name);
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    int r = ctl_find_policy(bus, name, &path, &error);
    if (r >= 0)
        r = sd_bus_call_methodv(bus, MONGOSNAP_BUS_NAME, path, MONGOSNAP_BUS_POLICY_INTERFACE,
                                method, &error, reply, types, ap);
    return r < 0 ? ctl_fail_bus(what, &error, r) : CTL_EXIT_OK;
}

static int policy_call(Ctl *ctl, const char *verb, const char *name, const char *method,
                       sd_bus_message **reply, const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    int code = policy_callv(ctl, verb, name, method, reply, types, ap);
    va_end(ap);
    return code;
}

/* Report the task a method started (its path is in reply), or wait for it with --wait. */
static int task_started(Ctl *ctl, const char *what, sd_bus_message *reply) {
    const char *path;
    int r = sd_bus_message_read(reply, "o", &path);
    if (r < 0)
        return ctl_fail_bus(what, NULL, r);
    return ctl_task_started(ctl, what, path, CTL_TASK_SNAPSHOT);
}

int verb_snapshot(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = ctl->args.scheduled ? policy_call(ctl, "snapshot", argv[1],
                                                 "TakeSnapshotWithOptions", &reply, "a{sv}", 1,
                                                 "scheduled", "b", 1)
                                   : policy_call(ctl, "snapshot", argv[1], "TakeSnapshot", &reply,
                                                 NULL);
    return code != CTL_EXIT_OK ? code : task_started(ctl, "snapshot", reply);
}

int verb_stop(Ctl *ctl, int argc, char **argv) {
    return policy_call(ctl, "stop", argv[1], "Stop", NULL, NULL);
}

int verb_start(Ctl *ctl, int argc, char **argv) {
    return policy_call(ctl, "start", argv[1], "Start", NULL, NULL);
}

int verb_delete(Ctl *ctl, int argc, char **argv) {
    return policy_call(ctl, "delete", argv[1], "Delete", NULL, "b", (int) ctl->args.purge_remote);
}

int verb_rebuild(Ctl *ctl, int argc, char **argv) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    (void) sd_bus_set_method_call_timeout(bus, REBUILD_TIMEOUT_USEC);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    code = policy_call(ctl, "rebuild", argv[1], "Rebuild", &reply, NULL);
    return code != CTL_EXIT_OK ? code : task_started(ctl, "rebuild", reply);
}

/* ---- settings: KEY=VALUE arguments as the a{ss} of Edit and CreatePolicy ---- */

/* Checked before anything is sent, so a typo is a usage error even without an agent. */
static int check_assignments(int n, char **assignments) {
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(assignments[i], '=');
        if (!eq || eq == assignments[i])
            return ctl_fail(CTL_EXIT_USAGE,
                            "'%s' is not KEY=VALUE: write e.g. Schedule=daily, "
                            "Retention.KeepDaily=7, or Key= to restore a default",
                            assignments[i]);
    }
    return CTL_EXIT_OK;
}

static int append_settings(sd_bus_message *m, int n, char **assignments) {
    int r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (int i = 0; r >= 0 && i < n; i++) {
        const char *eq = strchr(assignments[i], '=');
        _cleanup_free_ char *key = strndup(assignments[i], (size_t) (eq - assignments[i]));
        r = key ? sd_bus_message_append(m, "{ss}", key, eq + 1) : -ENOMEM;
    }
    return r < 0 ? r : sd_bus_message_close_container(m);
}

/* Call method at path with optional leading string argument and the settings. */
static int call_with_settings(sd_bus *bus, const char *path, const char *interface,
                              const char *method, const char *name, int n, char **assignments,
                              sd_bus_error *error, sd_bus_message **reply) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
    int r = sd_bus_message_new_method_call(bus, &m, MONGOSNAP_BUS_NAME, path, interface, method);
    if (r >= 0 && name)
        r = sd_bus_message_append(m, "s", name);
    if (r >= 0)
        r = append_settings(m, n, assignments);
    if (r < 0)
        return r;
    return sd_bus_call(bus, m, 0, error, reply);
}

int verb_edit(Ctl *ctl, int argc, char **argv) {
    int code = check_assignments(argc - 2, argv + 2);
    if (code != CTL_EXIT_OK)
        return code;
    sd_bus *bus;
    code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "edit %s", argv[1]);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    if (argc < 3 && !ctl->args.force)
        return ctl_fail(CTL_EXIT_USAGE, "edit needs at least one KEY=VALUE (or --force to "
                                        "confirm a held retention pass)");
    int r = ctl_find_policy(bus, argv[1], &path, &error);
    if (r >= 0 && !ctl->args.force)
        r = call_with_settings(bus, path, MONGOSNAP_BUS_POLICY_INTERFACE, "Edit", NULL, argc - 2,
                               argv + 2, &error, NULL);
    else if (r >= 0) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        r = sd_bus_message_new_method_call(bus, &m, MONGOSNAP_BUS_NAME, path,
                                           MONGOSNAP_BUS_POLICY_INTERFACE, "EditWithOptions");
        if (r >= 0)
            r = append_settings(m, argc - 2, argv + 2);
        if (r >= 0)
            r = sd_bus_message_append(m, "a{sv}", 1, "force", "b", 1);
        if (r >= 0)
            r = sd_bus_call(bus, m, 0, &error, NULL);
    }
    return r < 0 ? ctl_fail_bus(what, &error, r) : CTL_EXIT_OK;
}

int verb_create_policy(Ctl *ctl, int argc, char **argv) {
    int code = check_assignments(argc - 2, argv + 2);
    if (code != CTL_EXIT_OK)
        return code;
    sd_bus *bus;
    code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "create-policy %s", argv[1]);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    const char *path = NULL;
    int r = call_with_settings(bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE,
                               "CreatePolicy", argv[1], argc - 2, argv + 2, &error, &reply);
    if (r >= 0)
        r = sd_bus_message_read(reply, "o", &path);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_field_string(&j, "name", argv[1]);
        ctl_json_field_string(&j, "path", path);
        ctl_json_end_object(&j);
    }
    return CTL_EXIT_OK;
}

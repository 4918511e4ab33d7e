/* io.mongosnap1.Manager at /io/mongosnap1, and the helpers the bus adapter shares. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/redact.h"
#include "common/timeutil.h"
#include "config.h"
#include "mongosnap/mongosnap.h"

#define TASK_LOG_FIELD "MONGOSNAP_TASK="

/* ---- shared helpers ---- */

int bus_error_from_ms(sd_bus_error *ret_error, const MsError *e, const char *not_found) {
    const char *name;
    switch (e->code) {
    case ENOENT:
        name = not_found ? not_found : BUS_ERROR_FAILED;
        break;
    case EINVAL:
        name = BUS_ERROR_INVALID_ARGUMENT;
        break;
    case EBUSY:
        name = BUS_ERROR_BUSY;
        break;
    case EPERM:
        name = BUS_ERROR_POLICY_STOPPED;
        break;
    case ENXIO:
        name = BUS_ERROR_NOT_CONFIGURED;
        break;
    case EOPNOTSUPP:
        name = BUS_ERROR_NOT_SUPPORTED;
        break;
    case ESRCH:
        name = BUS_ERROR_NOT_RUNNING;
        break;
    case ENOKEY:
        name = BUS_ERROR_NO_CREDENTIAL;
        break;
    case ESHUTDOWN:
        name = BUS_ERROR_SHUTTING_DOWN;
        break;
    default:
        name = BUS_ERROR_FAILED;
        break;
    }
    return sd_bus_error_set(ret_error, name, e->message[0] ? e->message : strerror(e->code));
}

int bus_check_privileged(sd_bus_message *message, sd_bus_error *ret_error) {
    /* -1: no capability check, only "same user as the agent" (root for the system service). */
    int r = sd_bus_query_sender_privilege(message, -1);
    if (r < 0)
        return r;
    if (r == 0)
        return sd_bus_error_set(ret_error, BUS_ERROR_ACCESS_DENIED,
                                "only root (the agent's user) may change policies and tasks");
    return 0;
}

int bus_policy_path(const char *name, char **ret_path) {
    return sd_bus_path_encode(BUS_POLICY_PREFIX, name, ret_path);
}

int bus_snapshot_path(const char *id, char **ret_path) {
    return sd_bus_path_encode(BUS_SNAPSHOT_PREFIX, id, ret_path);
}

int bus_task_log_reference(const char *id, char **ret) {
    return asprintf(ret, "%s%s", TASK_LOG_FIELD, id) < 0 ? -ENOMEM : 0;
}

static const char *empty_if_null(const char *s) {
    return s ? s : "";
}

/* ---- rows ---- */

static const char *file_name_of(const char *key) {
    if (!key)
        return "";
    const char *slash = strrchr(key, '/');
    return slash ? slash + 1 : key;
}

int bus_append_snapshot_row(sd_bus_message *reply, const MsSnapshotRecord *r, uint64_t now) {
    _cleanup_free_ char *path = NULL, *log_ref = NULL;
    int k = bus_snapshot_path(r->id, &path);
    if (k < 0)
        return k;
    k = bus_task_log_reference(r->id, &log_ref);
    if (k < 0)
        return k;
    return sd_bus_message_append(reply, BUS_SNAPSHOT_ROW, r->id, r->policy, empty_if_null(r->node),
                                 file_name_of(r->archive_key), empty_if_null(r->download_url),
                                 log_ref, manager_snapshot_elapsed_usec(r, now), r->items_done,
                                 r->items_total, r->progress_pct, r->created_usec, r->expire_usec,
                                 r->bytes_transferred, ms_snapshot_state_to_string(r->state),
                                 empty_if_null(r->error), path);
}

static int append_snapshots(sd_bus_message *reply, Manager *m, const char *policy) {
    uint64_t now = ms_realtime_usec();
    int r = sd_bus_message_open_container(reply, 'a', BUS_SNAPSHOT_ROW);
    if (r < 0)
        return r;
    for (size_t i = 0; i < manager_n_snapshots(m); i++) {
        const MsSnapshotRecord *s = manager_snapshot_at(m, i);
        if (policy && strcmp(s->policy, policy) != 0)
            continue;
        r = bus_append_snapshot_row(reply, s, now);
        if (r < 0)
            return r;
    }
    return sd_bus_message_close_container(reply);
}

static int append_restores(sd_bus_message *reply, Manager *m, sd_bus_error *ret_error) {
    MsRestoreRecord **list = NULL;
    size_t n = 0;
    MsError e = MS_ERROR_INIT;
    int r = manager_list_restores(m, &list, &n, &e);
    if (r < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    uint64_t now = ms_realtime_usec();
    r = sd_bus_message_open_container(reply, 'a', BUS_RESTORE_ROW);
    for (size_t i = 0; r >= 0 && i < n; i++) {
        const MsRestoreRecord *x = list[i];
        _cleanup_free_ char *log_ref = NULL;
        r = bus_task_log_reference(x->id, &log_ref);
        if (r < 0)
            break;
        uint64_t end = x->finished_usec ? x->finished_usec : now;
        uint64_t elapsed = x->started_usec && end > x->started_usec ? end - x->started_usec : 0;
        r = sd_bus_message_append(reply, BUS_RESTORE_ROW, x->id, x->source_snapshot,
                                  empty_if_null(x->target), log_ref, elapsed, x->items_done,
                                  x->items_total, x->progress_pct, x->created_usec,
                                  ms_restore_state_to_string(x->state), empty_if_null(x->error));
    }
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    ms_restore_record_list_free(list, n);
    return r;
}

/* ---- methods ---- */

static int method_list_policies(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = sd_bus_message_open_container(reply, 'a', BUS_POLICY_ROW);
    if (r < 0)
        return r;
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        const ManagerPolicy *p = manager_policy_at(m, i);
        if (p->removed)
            continue;
        _cleanup_free_ char *path = NULL, *source = ms_uri_redact(p->settings->source);
        r = bus_policy_path(p->settings->name, &path);
        if (r < 0)
            return r;
        r = sd_bus_message_append(
            reply, BUS_POLICY_ROW, p->settings->name, path,
            ms_policy_state_to_string(p->runtime->state), empty_if_null(source),
            empty_if_null(p->settings->schedule),
            empty_if_null(ms_policy_effective_store(p->settings, manager_agent_config(m))),
            p->runtime->last_run_usec, empty_if_null(p->runtime->last_result),
            p->runtime->next_run_usec);
        if (r < 0)
            return r;
    }
    r = sd_bus_message_close_container(reply);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

static int method_list_snapshots(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    const char *policy;
    int r = sd_bus_message_read(message, "s", &policy);
    if (r < 0)
        return r;
    if (policy[0] && !ms_policy_name_is_valid(policy))
        return sd_bus_error_setf(ret_error, BUS_ERROR_INVALID_ARGUMENT,
                                 "'%s' is not a policy name: names are 1-64 letters, digits, "
                                 "'_', '.' or '-', starting with a letter or digit; give \"\" for "
                                 "every policy",
                                 policy);
    if (policy[0] && !manager_policy_known(m, policy))
        return sd_bus_error_setf(ret_error, BUS_ERROR_NO_SUCH_POLICY,
                                 "no policy '%s' is loaded and none has snapshots; "
                                 "ListPolicies() shows the loaded ones",
                                 policy);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = append_snapshots(reply, m, policy[0] ? policy : NULL);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

static int method_list_restores(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = append_restores(reply, m, ret_error);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

static int method_update(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    MsError e = MS_ERROR_INIT;
    if (manager_flush(m, &e) < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = append_snapshots(reply, m, NULL);
    if (r < 0)
        return r;
    r = append_restores(reply, m, ret_error);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

static int method_reload(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_reload_policies(m, &e) < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    return sd_bus_reply_method_return(message, NULL);
}

/* ---- properties ---- */

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *ret_error) {
    return sd_bus_message_append(reply, "s", MONGOSNAP_VERSION);
}

static int property_get_node(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *ret_error) {
    Manager *m = userdata;
    return sd_bus_message_append(reply, "s", manager_agent_config(m)->node);
}

static int property_get_policy_errors(sd_bus *bus, const char *path, const char *interface,
                                      const char *property, sd_bus_message *reply, void *userdata,
                                      sd_bus_error *ret_error) {
    Manager *m = userdata;
    int r = sd_bus_message_open_container(reply, 'a', "s");
    for (size_t i = 0; r >= 0 && i < manager_n_policy_errors(m); i++)
        r = sd_bus_message_append(reply, "s", manager_policy_error_at(m, i));
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

static const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Node", "s", property_get_node, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("PolicyErrors", "as", property_get_policy_errors, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD_WITH_ARGS("ListPolicies", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a" BUS_POLICY_ROW, policies), method_list_policies,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("s", policy),
                            SD_BUS_RESULT("a" BUS_SNAPSHOT_ROW, snapshots), method_list_snapshots,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListRestores", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a" BUS_RESTORE_ROW, restores), method_list_restores,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "Update", SD_BUS_NO_ARGS,
        SD_BUS_RESULT("a" BUS_SNAPSHOT_ROW, snapshots, "a" BUS_RESTORE_ROW, restores),
        method_update, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

/* ---- change notifications ---- */

static void hook_snapshot_added(Manager *m, const MsSnapshotRecord *r, void *userdata) {
    bus_snapshot_emit_added(userdata, r);
}

static void hook_snapshot_changed(Manager *m, const MsSnapshotRecord *r, unsigned changes,
                                  void *userdata) {
    bus_snapshot_emit_changed(userdata, r, changes);
}

static void hook_policy_changed(Manager *m, const ManagerPolicy *p, void *userdata) {
    bus_policy_emit_changed(userdata, p);
}

static void hook_rebuild_done(Manager *m, void *token, const MsSnapshotRecord *record,
                              const MsError *e, void *userdata) {
    bus_policy_rebuild_done(token, record, e);
}

int bus_attach(Manager *m, sd_bus *bus, MsError *e) {
    int r = sd_bus_add_object_vtable(bus, NULL, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE,
                                     manager_vtable, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register %s: %s", MONGOSNAP_BUS_PATH, strerror(-r));
    r = sd_bus_add_object_manager(bus, NULL, MONGOSNAP_BUS_PATH);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register the object manager: %s", strerror(-r));
    r = bus_policy_register(m, bus, e);
    if (r < 0)
        return r;
    r = bus_snapshot_register(m, bus, e);
    if (r < 0)
        return r;
    static const ManagerHooks hooks = {
        .snapshot_added = hook_snapshot_added,
        .snapshot_changed = hook_snapshot_changed,
        .policy_changed = hook_policy_changed,
        .rebuild_done = hook_rebuild_done,
    };
    manager_set_hooks(m, &hooks, bus);
    return 0;
}

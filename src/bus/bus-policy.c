/* io.mongosnap1.Policy objects: settings (no secrets), runtime state and task control. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/log.h"
#include "common/redact.h"
#include "mongosnap/mongosnap.h"

#define NO_OBJECT_PATH "/"

static int policy_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                       void **ret_found, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_free_ char *name = NULL;
    int r = sd_bus_path_decode(path, MONGOSNAP_BUS_POLICY_PREFIX, &name);
    if (r <= 0)
        return r;
    ManagerPolicy *p = manager_find_policy(m, name);
    if (!p)
        return 0;
    *ret_found = p;
    return 1;
}

static int policy_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                            sd_bus_error *ret_error) {
    Manager *m = userdata;
    size_t n = manager_n_policies(m), k = 0;
    char **nodes = calloc(n + 1, sizeof(char *));
    if (!nodes)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const ManagerPolicy *p = manager_policy_at(m, i);
        if (p->removed)
            continue;
        int r = bus_policy_path(p->settings->name, &nodes[k]);
        if (r < 0) {
            for (size_t j = 0; j < k; j++)
                free(nodes[j]);
            free(nodes);
            return r;
        }
        k++;
    }
    *ret_nodes = nodes;
    return 0;
}

/* ---- properties ---- */

#define POLICY_GETTER(fname)                                                                       \
    static int fname(sd_bus *bus, const char *path, const char *interface, const char *property,   \
                     sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)

POLICY_GETTER(property_get_name) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", p->settings->name);
}

POLICY_GETTER(property_get_source) {
    const ManagerPolicy *p = userdata;
    /* Source= cannot hold a password (the parser refuses one), but what a bus shows is
     * redacted anyway: a second line of defence costs nothing. */
    _cleanup_free_ char *redacted = ms_uri_redact(p->settings->source);
    if (!redacted)
        return -ENOMEM;
    return sd_bus_message_append(reply, "s", redacted);
}

POLICY_GETTER(property_get_setting) {
    const ManagerPolicy *p = userdata;
    _cleanup_free_ char *v = NULL;
    MsError e = MS_ERROR_INIT;
    /* The property is named as the key: the same text the file would hold. */
    if (ms_policy_get_setting(p->settings, property, &v, &e) < 0)
        return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_FAILED, e.message);
    return sd_bus_message_append(reply, "s", v);
}

POLICY_GETTER(property_get_store) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(
        reply, "s",
        empty_if_null(ms_policy_effective_store(p->settings, manager_agent_config(p->manager))));
}

POLICY_GETTER(property_get_compression) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", ms_compression_to_string(p->settings->compression));
}

POLICY_GETTER(property_get_compression_level) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "i", (int32_t) p->settings->compression_level);
}

POLICY_GETTER(property_get_parallel) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "u", (uint32_t) p->settings->parallel_collections);
}

static int append_strv(sd_bus_message *reply, char **v) {
    int r = sd_bus_message_open_container(reply, 'a', "s");
    for (size_t i = 0; r >= 0 && v && v[i]; i++)
        r = sd_bus_message_append(reply, "s", v[i]);
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

POLICY_GETTER(property_get_include_namespaces) {
    const ManagerPolicy *p = userdata;
    return append_strv(reply, p->settings->include_namespaces);
}

POLICY_GETTER(property_get_exclude_namespaces) {
    const ManagerPolicy *p = userdata;
    return append_strv(reply, p->settings->exclude_namespaces);
}

POLICY_GETTER(property_get_include_users) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "b", (int) p->settings->include_users);
}

POLICY_GETTER(property_get_oplog) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "b", (int) p->settings->oplog);
}

POLICY_GETTER(property_get_persistent) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "b", (int) p->settings->persistent);
}

POLICY_GETTER(property_get_randomized_delay) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "t", p->settings->randomized_delay_usec);
}

POLICY_GETTER(property_get_keep) {
    const ManagerPolicy *p = userdata;
    const MsRetentionRules *k = &p->settings->retention;
    uint32_t v = strcmp(property, "KeepLast") == 0     ? k->keep_last
                 : strcmp(property, "KeepDaily") == 0  ? k->keep_daily
                 : strcmp(property, "KeepWeekly") == 0 ? k->keep_weekly
                 : strcmp(property, "KeepManual") == 0 ? k->keep_manual
                                                       : k->keep_monthly;
    return sd_bus_message_append(reply, "u", v);
}

POLICY_GETTER(property_get_max_age) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "t", p->settings->retention.max_age_usec);
}

POLICY_GETTER(property_get_cipher) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", ms_cipher_to_string(p->settings->cipher));
}

POLICY_GETTER(property_get_state) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", ms_policy_state_to_string(p->runtime->state));
}

POLICY_GETTER(property_get_last_run) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "t", p->runtime->last_run_usec);
}

POLICY_GETTER(property_get_last_result) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", empty_if_null(p->runtime->last_result));
}

POLICY_GETTER(property_get_drift) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", empty_if_null(p->drift));
}

POLICY_GETTER(property_get_retention_held) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", empty_if_null(p->retention_held));
}

/* Point-in-time recovery: the setting and the follower's state (agent-follower.c). */
POLICY_GETTER(property_get_point_in_time) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "b", p->settings->pit_enabled);
}

POLICY_GETTER(property_get_slice_usec) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "t", p->settings->pit_slice_usec);
}

POLICY_GETTER(property_get_slice_compression) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s",
                                 ms_compression_to_string(ms_policy_slice_compression(p->settings)));
}

POLICY_GETTER(property_get_follower) {
    const ManagerPolicy *p = userdata;
    ManagerFollowerStatus st;
    manager_policy_follower(p->manager, p, &st);
    if (strcmp(property, "Follower") == 0)
        return sd_bus_message_append(reply, "s", st.state);
    if (strcmp(property, "FollowerError") == 0)
        return sd_bus_message_append(reply, "s", st.last_error);
    if (strcmp(property, "FollowerLagUSec") == 0)
        return sd_bus_message_append(reply, "t", st.lag_usec);
    if (strcmp(property, "LastSliceUSec") == 0)
        return sd_bus_message_append(reply, "t", st.last_slice_usec);
    int r = sd_bus_message_open_container(reply, 'a', "(tt)");
    for (size_t i = 0; r >= 0 && i < st.n_ranges; i++)
        r = sd_bus_message_append(reply, "(tt)", st.ranges_usec[2 * i], st.ranges_usec[2 * i + 1]);
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

POLICY_GETTER(property_get_problem) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "s", empty_if_null(p->problem));
}

POLICY_GETTER(property_get_next_run) {
    const ManagerPolicy *p = userdata;
    return sd_bus_message_append(reply, "t", manager_policy_next_run((ManagerPolicy *) p));
}

POLICY_GETTER(property_get_running_snapshot) {
    const ManagerPolicy *p = userdata;
    /* The task is private to the manager; the newest queued or running snapshot of the policy is
     * the one it runs (two never run at once). */
    Manager *m = p->manager;
    for (size_t i = manager_n_snapshots(m); p->task && i > 0; i--) {
        const MsSnapshotRecord *r = manager_snapshot_at(m, i - 1);
        if (strcmp(r->policy, p->settings->name) == 0 &&
            (r->state == MS_SNAPSHOT_QUEUED || r->state == MS_SNAPSHOT_RUNNING)) {
            _cleanup_free_ char *snapshot_path = NULL;
            int k = bus_snapshot_path(r->id, &snapshot_path);
            if (k < 0)
                return k;
            return sd_bus_message_append(reply, "o", snapshot_path);
        }
    }
    return sd_bus_message_append(reply, "o", NO_OBJECT_PATH);
}

/* ---- methods ---- */

static int method_take_snapshot(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    const MsSnapshotRecord *rec = NULL;
    MsError e = MS_ERROR_INIT;
    if (manager_take_snapshot(p->manager, p, &rec, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    _cleanup_free_ char *path = NULL;
    r = bus_snapshot_path(rec->id, &path);
    if (r < 0)
        return r;
    return sd_bus_reply_method_return(message, "o", path);
}

/* TakeSnapshotWithOptions(a{sv}): "scheduled" (b) says the policy's timer asks, so that with
 * several nodes only the first of their timers' calls for a tick starts a snapshot. */
static int method_take_snapshot_with_options(sd_bus_message *message, void *userdata,
                                             sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    BusBoolOption scheduled = {.what = "snapshot", .name = "scheduled"};
    int r = bus_read_options(message, bus_read_bool_option, &scheduled, ret_error);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    const MsSnapshotRecord *rec = NULL;
    MsError e = MS_ERROR_INIT;
    if (manager_take_snapshot_ex(p->manager, p, scheduled.value, &rec, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    _cleanup_free_ char *path = NULL;
    r = bus_snapshot_path(rec->id, &path);
    if (r < 0)
        return r;
    return sd_bus_reply_method_return(message, "o", path);
}

static int method_stop(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_stop_policy(p->manager, p, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    return sd_bus_reply_method_return(message, NULL);
}

static int method_start(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_start_policy(p->manager, p, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    return sd_bus_reply_method_return(message, NULL);
}

static int method_delete(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    int purge;
    int r = sd_bus_message_read(message, "b", &purge);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = NULL;
    r = bus_policy_path(p->settings->name, &path);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_delete_policy(p->manager, p, purge, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    /* InterfacesRemoved went with the manager's policy_removed. */
    return sd_bus_reply_method_return(message, NULL);
}

static int method_rebuild(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    /* The reply waits for the running task to stop: bus_policy_rebuild_done() sends it. */
    MsError e = MS_ERROR_INIT;
    if (manager_rebuild_policy(p->manager, p, sd_bus_message_ref(message), &e) < 0) {
        sd_bus_message_unref(message);
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    }
    return 1;
}

void bus_policy_rebuild_done(void *token, const MsSnapshotRecord *record, const MsError *e) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = token;
    int r;
    if (record) {
        _cleanup_free_ char *path = NULL;
        r = bus_snapshot_path(record->id, &path);
        if (r >= 0)
            r = sd_bus_reply_method_return(message, "o", path);
    } else {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        (void) bus_error_from_ms(&error, e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
        r = sd_bus_reply_method_error(message, &error);
    }
    if (r < 0)
        log_debug("cannot answer a Rebuild call: %s", strerror(-r));
}

/* ListSlices() and VerifyChain(): the reply waits for the worker reading the store. */
static void chain_done(Manager *m, void *token, const ManagerChainResult *res, const MsError *e) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = token;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r;
    if (!res) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        (void) bus_error_from_ms(&error, e, MONGOSNAP_ERROR_FAILED);
        r = sd_bus_reply_method_error(message, &error);
    } else {
        bool verify = strcmp(sd_bus_message_get_member(message), "VerifyChain") == 0;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r >= 0 && verify) {
            r = sd_bus_message_append(reply, "ttt", res->entries, res->damaged, res->gaps);
            if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(tt)");
            for (size_t i = 0; r >= 0 && i < res->n_chains; i++)
                r = sd_bus_message_append(reply, "(tt)", res->chains_usec[2 * i],
                                          res->chains_usec[2 * i + 1]);
            if (r >= 0)
                r = sd_bus_message_close_container(reply);
            if (r >= 0)
                r = sd_bus_message_append_strv(reply, res->problems);
        } else if (r >= 0) {
            r = sd_bus_message_open_container(reply, 'a', "(sttb)");
            for (size_t i = 0; r >= 0 && i < res->n_slices; i++)
                r = sd_bus_message_append(reply, "(sttb)", res->slices[i].key,
                                          res->slices[i].start_usec, res->slices[i].end_usec,
                                          res->slices[i].idle);
            if (r >= 0)
                r = sd_bus_message_close_container(reply);
        }
        if (r >= 0)
            r = sd_bus_send(NULL, reply, NULL);
    }
    if (r < 0)
        log_debug("cannot answer a chain call: %s", strerror(-r));
}

static int chain_call(sd_bus_message *message, ManagerPolicy *p, bool verify,
                      sd_bus_error *ret_error) {
    if (verify) {
        int r = bus_check_privileged(message, ret_error);
        if (r < 0)
            return r;
    }
    MsError e = MS_ERROR_INIT;
    if (manager_policy_chain(p->manager, p, verify, chain_done, sd_bus_message_ref(message), &e) <
        0) {
        sd_bus_message_unref(message);
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_FAILED);
    }
    return 1;
}

static int method_list_slices(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    return chain_call(message, userdata, false, ret_error);
}

static int method_verify_chain(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    return chain_call(message, userdata, true, ret_error);
}

static int method_edit(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    ManagerPolicyEdit edits[BUS_SETTINGS_MAX];
    size_t n = 0;
    int r = bus_read_settings(message, edits, &n, ret_error);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    r = bus_check_settings_allowed(message, p->manager, edits, n, false, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_edit_policy(p->manager, p, edits, n, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    return sd_bus_reply_method_return(message, NULL);
}

/* EditWithOptions(a{ss} settings, a{sv} options): "force" (b) goes ahead with (or confirms a
 * held) retention that removes many snapshots at once. */
static int method_edit_with_options(sd_bus_message *message, void *userdata,
                                    sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    ManagerPolicyEdit edits[BUS_SETTINGS_MAX];
    size_t n = 0;
    BusBoolOption force = {.what = "edit", .name = "force"};
    int r = bus_read_settings(message, edits, &n, ret_error);
    if (r >= 0)
        r = bus_read_options(message, bus_read_bool_option, &force, ret_error);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    r = bus_check_settings_allowed(message, p->manager, edits, n, false, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_edit_policy_ex(p->manager, p, edits, n, force.value, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_POLICY);
    return sd_bus_reply_method_return(message, NULL);
}

static int method_get_log(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    ManagerPolicy *p = userdata;
    const char *after;
    uint32_t max;
    int r = sd_bus_message_read(message, "su", &after, &max);
    if (r < 0)
        return r;
    return bus_reply_log(message, p->settings->name, NULL, after, max, ret_error);
}

#define CHANGING SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE

static const sd_bus_vtable policy_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Name", "s", property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Source", "s", property_get_source, 0, CHANGING),
    SD_BUS_PROPERTY("Credential", "s", property_get_setting, 0, CHANGING),
    SD_BUS_PROPERTY("Schedule", "s", property_get_setting, 0, CHANGING),
    SD_BUS_PROPERTY("RandomizedDelayUSec", "t", property_get_randomized_delay, 0, CHANGING),
    SD_BUS_PROPERTY("Persistent", "b", property_get_persistent, 0, CHANGING),
    SD_BUS_PROPERTY("Store", "s", property_get_store, 0, CHANGING),
    SD_BUS_PROPERTY("Compression", "s", property_get_compression, 0, CHANGING),
    SD_BUS_PROPERTY("CompressionLevel", "i", property_get_compression_level, 0, CHANGING),
    SD_BUS_PROPERTY("ParallelCollections", "u", property_get_parallel, 0, CHANGING),
    SD_BUS_PROPERTY("IncludeNamespaces", "as", property_get_include_namespaces, 0, CHANGING),
    SD_BUS_PROPERTY("ExcludeNamespaces", "as", property_get_exclude_namespaces, 0, CHANGING),
    SD_BUS_PROPERTY("IncludeUsers", "b", property_get_include_users, 0, CHANGING),
    SD_BUS_PROPERTY("Oplog", "b", property_get_oplog, 0, CHANGING),
    SD_BUS_PROPERTY("NodePriority", "s", property_get_setting, 0, CHANGING),
    SD_BUS_PROPERTY("KeepLast", "u", property_get_keep, 0, CHANGING),
    SD_BUS_PROPERTY("KeepDaily", "u", property_get_keep, 0, CHANGING),
    SD_BUS_PROPERTY("KeepWeekly", "u", property_get_keep, 0, CHANGING),
    SD_BUS_PROPERTY("KeepMonthly", "u", property_get_keep, 0, CHANGING),
    SD_BUS_PROPERTY("KeepManual", "u", property_get_keep, 0, CHANGING),
    SD_BUS_PROPERTY("MaxAgeUSec", "t", property_get_max_age, 0, CHANGING),
    /* The name of the credential holding the key, never the key. */
    SD_BUS_PROPERTY("Key", "s", property_get_setting, 0, CHANGING),
    SD_BUS_PROPERTY("Cipher", "s", property_get_cipher, 0, CHANGING),
    SD_BUS_PROPERTY("State", "s", property_get_state, 0, CHANGING),
    SD_BUS_PROPERTY("LastRun", "t", property_get_last_run, 0, CHANGING),
    SD_BUS_PROPERTY("LastResult", "s", property_get_last_result, 0, CHANGING),
    SD_BUS_PROPERTY("NextRun", "t", property_get_next_run, 0, CHANGING),
    SD_BUS_PROPERTY("RunningSnapshot", "o", property_get_running_snapshot, 0, CHANGING),
    SD_BUS_PROPERTY("Drift", "s", property_get_drift, 0, CHANGING),
    SD_BUS_PROPERTY("RetentionHeld", "s", property_get_retention_held, 0, CHANGING),
    SD_BUS_PROPERTY("Problem", "s", property_get_problem, 0, CHANGING),
    SD_BUS_PROPERTY("PointInTime", "b", property_get_point_in_time, 0, CHANGING),
    SD_BUS_PROPERTY("SliceUSec", "t", property_get_slice_usec, 0, CHANGING),
    SD_BUS_PROPERTY("SliceCompression", "s", property_get_slice_compression, 0, CHANGING),
    SD_BUS_PROPERTY("Follower", "s", property_get_follower, 0, CHANGING),
    SD_BUS_PROPERTY("FollowerError", "s", property_get_follower, 0, CHANGING),
    SD_BUS_PROPERTY("FollowerLagUSec", "t", property_get_follower, 0, CHANGING),
    SD_BUS_PROPERTY("LastSliceUSec", "t", property_get_follower, 0, CHANGING),
    SD_BUS_PROPERTY("Restorable", "a" MONGOSNAP_RANGE_ROW, property_get_follower, 0, CHANGING),
    SD_BUS_METHOD_WITH_ARGS("TakeSnapshot", SD_BUS_NO_ARGS, SD_BUS_RESULT("o", snapshot),
                            method_take_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("TakeSnapshotWithOptions", SD_BUS_ARGS("a{sv}", options),
                            SD_BUS_RESULT("o", snapshot), method_take_snapshot_with_options,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_stop,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_start,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Edit", SD_BUS_ARGS("a{ss}", settings), SD_BUS_NO_RESULT, method_edit,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("EditWithOptions", SD_BUS_ARGS("a{ss}", settings, "a{sv}", options),
                            SD_BUS_NO_RESULT, method_edit_with_options, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListSlices", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a" MONGOSNAP_SLICE_ROW, slices),
                            method_list_slices, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("VerifyChain", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("t", entries, "t", damaged, "t", gaps,
                                          "a" MONGOSNAP_RANGE_ROW, chains, "as", problems),
                            method_verify_chain, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Rebuild", SD_BUS_NO_ARGS, SD_BUS_RESULT("o", snapshot), method_rebuild,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("b", purge_remote), SD_BUS_NO_RESULT,
                            method_delete, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetLog", SD_BUS_ARGS("s", after_cursor, "u", max_entries),
                            SD_BUS_RESULT("a" MONGOSNAP_LOG_ENTRY, entries), method_get_log,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

void bus_policy_emit_removed(sd_bus *bus, const ManagerPolicy *p) {
    _cleanup_free_ char *path = NULL;
    if (bus_policy_path(p->settings->name, &path) < 0)
        return;
    /* By name: the object is no longer found (removed is set), so sd_bus_emit_object_removed()
     * would list only the standard interfaces. */
    int r = sd_bus_emit_interfaces_removed(bus, path, MONGOSNAP_BUS_POLICY_INTERFACE, NULL);
    if (r < 0)
        log_debug("cannot announce that %s went: %s", path, strerror(-r));
}

void bus_policy_emit_changed(sd_bus *bus, const ManagerPolicy *p) {
    if (p->removed)
        return;
    _cleanup_free_ char *path = NULL;
    if (bus_policy_path(p->settings->name, &path) < 0)
        return;
    /* NULL: every property flagged EMITS_CHANGE. */
    int r = sd_bus_emit_properties_changed_strv(bus, path, MONGOSNAP_BUS_POLICY_INTERFACE, NULL);
    if (r < 0)
        log_debug("cannot announce changes of %s: %s", path, strerror(-r));
}

void bus_policy_emit_added(sd_bus *bus, const ManagerPolicy *p) {
    _cleanup_free_ char *path = NULL;
    if (bus_policy_path(p->settings->name, &path) >= 0)
        bus_emit_added(bus, path);
}

int bus_policy_register(Manager *m, sd_bus *bus, MsError *e) {
    int r =
        sd_bus_add_fallback_vtable(bus, NULL, MONGOSNAP_BUS_POLICY_PREFIX,
                                   MONGOSNAP_BUS_POLICY_INTERFACE, policy_vtable, policy_find, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register %s: %s", MONGOSNAP_BUS_POLICY_PREFIX,
                            strerror(-r));
    r = sd_bus_add_node_enumerator(bus, NULL, MONGOSNAP_BUS_POLICY_PREFIX, policy_enumerate, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register the policy enumerator: %s", strerror(-r));
    return 0;
}

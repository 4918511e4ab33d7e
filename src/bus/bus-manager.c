/* io.mongosnap1.Manager at /io/mongosnap1: its methods, the rows of the list methods, and
 * bus_attach(), which registers every object and turns the manager's events into signals. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-cluster.h"
#include "bus/bus.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/timeutil.h"
#include "config.h"
#include "mongosnap/mongosnap.h"

/* A policy name or task id is far shorter; anything longer is not one. */
#define BUS_LOG_MATCH_VALUE_MAX 256

/* ---- rows ---- */

static const char *file_name_of(const char *key) {
    if (!key)
        return "";
    const char *slash = strrchr(key, '/');
    return slash ? slash + 1 : key;
}

int bus_append_snapshot_row(sd_bus_message *reply, Manager *m, const MsSnapshotRecord *r,
                            uint64_t now, bool with_download) {
    /* A download address reads every document of the snapshot: privileged callers only. */
    _cleanup_free_ char *path = NULL, *log_ref = NULL,
                        *url = with_download ? bus_snapshot_download_address(m, r) : strdup("");
    if (!url)
        return -ENOMEM;
    int k = bus_snapshot_path(r->id, &path);
    if (k < 0)
        return k;
    k = bus_task_log_reference(r->id, &log_ref);
    if (k < 0)
        return k;
    return sd_bus_message_append(
        reply, MONGOSNAP_SNAPSHOT_ROW, r->id, r->policy, empty_if_null(r->node),
        file_name_of(r->archive_key), url, log_ref, manager_task_elapsed_usec(&r->core, now),
        r->items_done, r->items_total, r->progress_pct, r->created_usec, r->expire_usec,
        r->bytes_transferred, ms_snapshot_state_to_string(r->state), empty_if_null(r->error), path,
        ms_verify_state_to_string(r->verify_state), r->seq, ms_snapshot_origin_to_string(r->origin),
        empty_if_null(r->kept_by), r->expire_projected_usec, (int) r->future_dated);
}

static int append_snapshots(sd_bus_message *reply, Manager *m, const char *policy,
                            bool with_download) {
    uint64_t now = ms_realtime_usec();
    int r = sd_bus_message_open_container(reply, 'a', MONGOSNAP_SNAPSHOT_ROW);
    if (r < 0)
        return r;
    for (size_t i = 0; i < manager_n_snapshots(m); i++) {
        const MsSnapshotRecord *s = manager_snapshot_at(m, i);
        if (policy && strcmp(s->policy, policy) != 0)
            continue;
        r = bus_append_snapshot_row(reply, m, s, now, with_download);
        if (r < 0)
            return r;
    }
    return sd_bus_message_close_container(reply);
}

static int append_restores(sd_bus_message *reply, Manager *m) {
    uint64_t now = ms_realtime_usec();
    int r = sd_bus_message_open_container(reply, 'a', MONGOSNAP_RESTORE_ROW);
    for (size_t i = 0; r >= 0 && i < manager_n_restores(m); i++)
        r = bus_append_restore_row(reply, manager_restore_at(m, i), now);
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    return r;
}

/* ---- methods ---- */

static int method_list_policies(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = sd_bus_message_open_container(reply, 'a', MONGOSNAP_POLICY_ROW);
    if (r < 0)
        return r;
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        ManagerPolicy *p = manager_policy_at(m, i);
        if (p->removed)
            continue;
        _cleanup_free_ char *path = NULL, *source = ms_uri_redact(p->settings->source);
        r = bus_policy_path(p->settings->name, &path);
        if (r < 0)
            return r;
        r = sd_bus_message_append(
            reply, MONGOSNAP_POLICY_ROW, p->settings->name, path,
            ms_policy_state_to_string(p->runtime->state), empty_if_null(source),
            empty_if_null(p->settings->schedule),
            empty_if_null(ms_policy_effective_store(p->settings, manager_agent_config(m))),
            p->runtime->last_run_usec, empty_if_null(p->runtime->last_result),
            manager_policy_next_run(p), empty_if_null(p->problem));
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
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "'%.*s' is not a policy name: names are 1-64 letters, digits, "
                                 "'_', '.' or '-', starting with a letter or digit; give \"\" for "
                                 "every policy",
                                 BUS_ECHO_MAX, policy);
    if (policy[0] && !manager_policy_known(m, policy))
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_NO_SUCH_POLICY,
                                 "no policy '%.*s' is loaded and none has snapshots; "
                                 "ListPolicies() shows the loaded ones",
                                 BUS_ECHO_MAX, policy);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = append_snapshots(reply, m, policy[0] ? policy : NULL,
                         bus_caller_is_privileged(message) > 0);
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
    r = append_restores(reply, m);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

static int method_update(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    MsError e = MS_ERROR_INIT;
    if (manager_flush(m, &e) < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    /* The other nodes' records as of now; when the cluster database cannot be reached the
     * answer is what this node knows, and the Cluster property says why. */
    MsError ce = MS_ERROR_INIT;
    if (manager_cluster_sync(m, &ce) < 0)
        log_debug("Update: %s", ce.message);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = append_snapshots(reply, m, NULL, bus_caller_is_privileged(message) > 0);
    if (r < 0)
        return r;
    r = append_restores(reply, m);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

/* Resync(): the reply waits for the stores to be read; hook_resync_done() sends it. */
static int method_resync(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    int r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    MsError e = MS_ERROR_INIT;
    if (manager_resync(m, RESYNC_FULL, sd_bus_message_ref(message), &e) < 0) {
        sd_bus_message_unref(message);
        return bus_error_from_ms(ret_error, &e, NULL);
    }
    return 1;
}

static void hook_resync_done(Manager *m, void *token, const ManagerResyncResult *result,
                             const MsError *e, void *userdata) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = token;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r;
    if (result) {
        r = sd_bus_message_new_method_return(message, &reply);
        if (r >= 0)
            r = sd_bus_message_append(reply, "uuuuu", result->found, result->added,
                                      result->corrected, result->missing, result->finished);
        if (r >= 0)
            r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < result->n_problems; i++)
            r = sd_bus_message_append(reply, "s", result->problems[i]);
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        if (r >= 0)
            r = sd_bus_send(NULL, reply, NULL);
    } else {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        (void) bus_error_from_ms(&error, e, NULL);
        r = sd_bus_reply_method_error(message, &error);
    }
    if (r < 0)
        log_debug("cannot answer a Resync call: %s", strerror(-r));
}

/* SetCredential(s name, h secret): root only; the secret travels as a file descriptor, never
 * in the message body, so no bus monitor sees it. */
static int method_set_credential(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    const char *name;
    int fd;
    int r = sd_bus_message_read(message, "sh", &name, &fd);
    if (r < 0)
        return r;
    r = bus_caller_is_admin(message);
    if (r < 0)
        return sd_bus_error_set_errnof(ret_error, -r, "cannot tell who the caller is: %s",
                                       strerror(-r));
    if (r == 0)
        return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_ACCESS_DENIED,
                                "only root writes credentials");
    MsError e = MS_ERROR_INIT;
    if (manager_set_credential(m, name, fd, &e) < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    return sd_bus_reply_method_return(message, NULL);
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

/* The keys StartRestore's options may have, and the D-Bus type each must be. */
typedef enum RestoreOptionType {
    OPTION_STRV,
    OPTION_BOOL,
    OPTION_STRING,
    OPTION_UINT32,
} RestoreOptionType;

typedef struct RestoreOptionsBuffer {
    ManagerRestoreOptions o;
    char time_buf[32]; /* "time" given in microseconds, as T:I */
    char **lists[4]; /* owned: ns_include, ns_exclude, ns_from, ns_to */
} RestoreOptionsBuffer;

static void restore_options_buffer_done(RestoreOptionsBuffer *b) {
    for (size_t i = 0; i < sizeof(b->lists) / sizeof(b->lists[0]); i++)
        if (b->lists[i]) {
            for (char **s = b->lists[i]; *s; s++)
                free(*s);
            free(b->lists[i]);
        }
}

static int read_restore_option(sd_bus_message *message, const char *key, void *userdata,
                               sd_bus_error *ret_error) {
    RestoreOptionsBuffer *b = userdata;
    static const struct {
        const char *key;
        RestoreOptionType type;
    } known[] = {
        {"ns_include", OPTION_STRV},   {"ns_exclude", OPTION_STRV},
        {"ns_from", OPTION_STRV},      {"ns_to", OPTION_STRV},
        {"drop", OPTION_BOOL},         {"no_indexes", OPTION_BOOL},
        {"until", OPTION_STRING},      {"parallel", OPTION_UINT32},
        {"credential", OPTION_STRING}, {"key_credential", OPTION_STRING},
        {"force", OPTION_BOOL},        {"time", OPTION_STRING},
        {"shard_map", OPTION_STRING},  {"part", OPTION_STRING},
    };
    static const char *const signatures[] = {"as", "b", "s", "u"};
    size_t k = 0;
    while (k < sizeof(known) / sizeof(known[0]) && strcmp(known[k].key, key) != 0)
        k++;
    if (k == sizeof(known) / sizeof(known[0]))
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "unknown restore option '%.*s'; known: ns_include, ns_exclude, "
                                 "ns_from, ns_to, drop, no_indexes, until, parallel, credential, "
                                 "key_credential, force, time, shard_map, part",
                                 BUS_ECHO_MAX, key);
    const char *sig = signatures[known[k].type];
    /* "time" is a string (ISO 8601 or T:I) or microseconds since the epoch (t). */
    if (strcmp(key, "time") == 0 && sd_bus_message_verify_type(message, 'v', "t") > 0) {
        uint64_t usec;
        int q = sd_bus_message_enter_container(message, 'v', "t");
        if (q >= 0)
            q = sd_bus_message_read(message, "t", &usec);
        if (q < 0)
            return q;
        if (usec / 1000000u > UINT32_MAX)
            return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                     "restore option 'time' (%" PRIu64 " µs) is past what an "
                                     "oplog timestamp can hold",
                                     usec);
        /* To the second, that second's entries included (as an ISO 8601 time). */
        snprintf(b->time_buf, sizeof(b->time_buf), "%" PRIu64 ":%u", usec / 1000000u, UINT32_MAX);
        b->o.time = b->time_buf;
        return sd_bus_message_exit_container(message);
    }
    int r = sd_bus_message_enter_container(message, 'v', sig);
    if (r == -ENXIO)
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "restore option '%s' must be of D-Bus type '%s'", key, sig);
    if (r < 0)
        return r;
    int flag;
    const char *str;
    switch (known[k].type) {
    case OPTION_STRV:
        r = sd_bus_message_read_strv(message, &b->lists[k]);
        if (r >= 0) {
            char ***dst[] = {&b->o.ns_include, &b->o.ns_exclude, &b->o.ns_from, &b->o.ns_to};
            *dst[k] = b->lists[k];
        }
        break;
    case OPTION_BOOL:
        r = sd_bus_message_read(message, "b", &flag);
        if (r >= 0 && strcmp(key, "drop") == 0)
            b->o.drop = flag;
        else if (r >= 0 && strcmp(key, "force") == 0)
            b->o.force = flag;
        else if (r >= 0)
            b->o.no_indexes = flag;
        break;
    case OPTION_STRING:
        r = sd_bus_message_read(message, "s", &str);
        if (r >= 0 && strcmp(key, "until") == 0)
            b->o.until = str[0] ? str : NULL;
        else if (r >= 0 && strcmp(key, "time") == 0)
            b->o.time = str[0] ? str : NULL;
        else if (r >= 0 && strcmp(key, "key_credential") == 0)
            b->o.key_credential = str[0] ? str : NULL;
        else if (r >= 0 && strcmp(key, "shard_map") == 0)
            b->o.shard_map = str[0] ? str : NULL;
        else if (r >= 0 && strcmp(key, "part") == 0)
            b->o.part = str[0] ? str : NULL;
        else if (r >= 0)
            b->o.credential = str[0] ? str : NULL;
        break;
    case OPTION_UINT32:
        r = sd_bus_message_read(message, "u", &b->o.parallel);
        break;
    }
    if (r < 0)
        return r;
    return sd_bus_message_exit_container(message);
}

static int method_start_restore(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    const char *snapshot, *target;
    _cleanup_(restore_options_buffer_done) RestoreOptionsBuffer b = {0};
    int r = sd_bus_message_read(message, "ss", &snapshot, &target);
    if (r < 0)
        return r;
    r = bus_read_options(message, read_restore_option, &b, ret_error);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    const MsRestoreRecord *rec;
    MsError e = MS_ERROR_INIT;
    if (manager_start_restore(m, snapshot, target, &b.o, &rec, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT);
    _cleanup_free_ char *path = NULL;
    r = bus_restore_path(rec->id, &path);
    if (r < 0)
        return r;
    return sd_bus_reply_method_return(message, "o", path);
}

static int method_create_policy(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    Manager *m = userdata;
    const char *name;
    ManagerPolicyEdit settings[BUS_SETTINGS_MAX];
    size_t n = 0;
    int r = sd_bus_message_read(message, "s", &name);
    if (r < 0)
        return r;
    r = bus_read_settings(message, settings, &n, ret_error);
    if (r < 0)
        return r;
    r = bus_check_privileged(message, ret_error);
    if (r < 0)
        return r;
    r = bus_check_settings_allowed(message, m, settings, n, true, ret_error);
    if (r < 0)
        return r;
    ManagerPolicy *p;
    MsError e = MS_ERROR_INIT;
    if (manager_create_policy(m, name, settings, n, &p, &e) < 0)
        return bus_error_from_ms(ret_error, &e, NULL);
    _cleanup_free_ char *path = NULL;
    r = bus_policy_path(p->settings->name, &path);
    if (r < 0)
        return r;
    return sd_bus_reply_method_return(message, "o", path);
}

static int method_get_log(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const char *match, *after;
    uint32_t max;
    int r = sd_bus_message_read(message, "ssu", &match, &after, &max);
    if (r < 0)
        return r;
    static const char policy_field[] = "MONGOSNAP_POLICY=", task_field[] = "MONGOSNAP_TASK=";
    const char *policy = NULL, *task = NULL;
    if (strncmp(match, policy_field, strlen(policy_field)) == 0)
        policy = match + strlen(policy_field);
    else if (strncmp(match, task_field, strlen(task_field)) == 0)
        task = match + strlen(task_field);
    const char *value = policy ? policy : task;
    if (!value || !value[0] || strlen(value) > BUS_LOG_MATCH_VALUE_MAX)
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "the match must be MONGOSNAP_POLICY=NAME or MONGOSNAP_TASK=ID "
                                 "(as the TaskLog property gives it)");
    return bus_reply_log(message, policy, task, after, max, ret_error);
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

static int property_get_cluster(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *ret_error) {
    Manager *m = userdata;
    return sd_bus_message_append(reply, "s", manager_cluster_status(m));
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
    /* "" (this agent works alone), "connected" or "unreachable: why"; read on demand. */
    SD_BUS_PROPERTY("Cluster", "s", property_get_cluster, 0, 0),
    SD_BUS_PROPERTY("PolicyErrors", "as", property_get_policy_errors, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD_WITH_ARGS("ListPolicies", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a" MONGOSNAP_POLICY_ROW, policies), method_list_policies,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("s", policy),
                            SD_BUS_RESULT("a" MONGOSNAP_SNAPSHOT_ROW, snapshots),
                            method_list_snapshots, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListRestores", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a" MONGOSNAP_RESTORE_ROW, restores),
                            method_list_restores, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "Update", SD_BUS_NO_ARGS,
        SD_BUS_RESULT("a" MONGOSNAP_SNAPSHOT_ROW, snapshots, "a" MONGOSNAP_RESTORE_ROW, restores),
        method_update, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("SetCredential", SD_BUS_ARGS("s", name, "h", secret), SD_BUS_NO_RESULT,
                            method_set_credential, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Resync", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("u", found, "u", added, "u", corrected, "u", missing, "u",
                                          finished, "as", problems),
                            method_resync, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "StartRestore", SD_BUS_ARGS("s", snapshot, "s", target, "a{sv}", options),
        SD_BUS_RESULT("o", restore), method_start_restore, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("CreatePolicy", SD_BUS_ARGS("s", name, "a{ss}", settings),
                            SD_BUS_RESULT("o", policy), method_create_policy,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetLog", SD_BUS_ARGS("s", match, "s", after_cursor, "u", max_entries),
                            SD_BUS_RESULT("a" MONGOSNAP_LOG_ENTRY, entries), method_get_log,
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

static void hook_policy_added(Manager *m, const ManagerPolicy *p, void *userdata) {
    bus_policy_emit_added(userdata, p);
}

/* Whatever removed it: Delete, a file gone at a reload. */
static void hook_policy_removed(Manager *m, const ManagerPolicy *p, void *userdata) {
    bus_policy_emit_removed(userdata, p);
}

static void hook_restore_added(Manager *m, const MsRestoreRecord *r, void *userdata) {
    bus_restore_emit_added(userdata, r);
}

static void hook_restore_changed(Manager *m, const MsRestoreRecord *r, unsigned changes,
                                 void *userdata) {
    bus_restore_emit_changed(userdata, r, changes);
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
    r = bus_restore_register(m, bus, e);
    if (r < 0)
        return r;
    static const ManagerHooks hooks = {
        .snapshot_added = hook_snapshot_added,
        .snapshot_changed = hook_snapshot_changed,
        .policy_changed = hook_policy_changed,
        .policy_added = hook_policy_added,
        .policy_removed = hook_policy_removed,
        .restore_added = hook_restore_added,
        .restore_changed = hook_restore_changed,
        .rebuild_done = hook_rebuild_done,
        .resync_done = hook_resync_done,
    };
    return manager_add_observer(m, &hooks, bus, e);
}

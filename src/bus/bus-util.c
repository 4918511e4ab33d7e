/* What every file of the bus adapter shares (bus.h): error names from MsError, who the caller
 * is, options and settings read from messages, object paths, signals. Nothing here calls back
 * into bus-manager.c or the object files, so bus/ has no cycle. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/log.h"
#include "mongosnap/mongosnap.h"

/* The journal field that names a task in the Event Log. */
#define TASK_LOG_FIELD "MONGOSNAP_TASK="

/* ---- shared helpers ---- */

int bus_read_options(sd_bus_message *message, BusOptionReader read_one, void *userdata,
                     sd_bus_error *ret_error) {
    int r = sd_bus_message_enter_container(message, 'a', "{sv}");
    if (r < 0)
        return r;
    const char *key;
    while ((r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
        r = sd_bus_message_read(message, "s", &key);
        if (r < 0)
            return r;
        r = read_one(message, key, userdata, ret_error);
        if (r < 0)
            return r;
        r = sd_bus_message_exit_container(message);
        if (r < 0)
            return r;
    }
    if (r < 0)
        return r;
    return sd_bus_message_exit_container(message);
}

int bus_read_bool_option(sd_bus_message *message, const char *key, void *userdata,
                         sd_bus_error *ret_error) {
    BusBoolOption *o = userdata;
    if (strcmp(key, o->name) != 0)
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "unknown %s option '%.*s'; known: %s", o->what, BUS_ECHO_MAX, key,
                                 o->name);
    int r = sd_bus_message_enter_container(message, 'v', "b");
    if (r == -ENXIO)
        return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                 "%s option '%s' must be of D-Bus type 'b'", o->what, o->name);
    if (r < 0)
        return r;
    r = sd_bus_message_read(message, "b", &o->value);
    if (r < 0)
        return r;
    return sd_bus_message_exit_container(message);
}

/* Each domain meaning's error name; errno values carry none (see MsErrorKind). */
static const char *const error_names[_MS_ERROR_KIND_MAX] = {
    [MS_ERROR_KIND_SNAPSHOT_DAMAGED] = MONGOSNAP_ERROR_SNAPSHOT_DAMAGED,
    [MS_ERROR_KIND_NEEDS_FORCE] = MONGOSNAP_ERROR_NEEDS_FORCE,
    [MS_ERROR_KIND_CREDENTIAL_SCOPE] = MONGOSNAP_ERROR_ACCESS_DENIED,
    [MS_ERROR_KIND_POLICY_STOPPED] = MONGOSNAP_ERROR_POLICY_STOPPED,
    [MS_ERROR_KIND_BUSY] = MONGOSNAP_ERROR_BUSY,
    [MS_ERROR_KIND_EXISTS] = MONGOSNAP_ERROR_EXISTS,
    [MS_ERROR_KIND_SHUTTING_DOWN] = MONGOSNAP_ERROR_SHUTTING_DOWN,
    [MS_ERROR_KIND_NOT_CONFIGURED] = MONGOSNAP_ERROR_NOT_CONFIGURED,
    [MS_ERROR_KIND_NOT_SUPPORTED] = MONGOSNAP_ERROR_NOT_SUPPORTED,
    [MS_ERROR_KIND_NOT_RUNNING] = MONGOSNAP_ERROR_NOT_RUNNING,
    [MS_ERROR_KIND_NO_CREDENTIAL] = MONGOSNAP_ERROR_NO_CREDENTIAL,
    [MS_ERROR_KIND_NOT_RESTORABLE] = MONGOSNAP_ERROR_NOT_RESTORABLE,
    [MS_ERROR_KIND_CLUSTER_UNREACHABLE] = MONGOSNAP_ERROR_CLUSTER_UNREACHABLE,
    [MS_ERROR_KIND_ON_OTHER_NODE] = MONGOSNAP_ERROR_ON_OTHER_NODE,
};

const char *bus_error_name_for(const MsError *e, const char *not_found) {
    if (e->kind > MS_ERROR_KIND_NONE && e->kind < _MS_ERROR_KIND_MAX && error_names[e->kind])
        return error_names[e->kind];
    /* Only the two errno values every layer uses in their first meaning: a missing object (the
     * caller names which kind of object) and a refused argument or setting. */
    if (e->code == ENOENT && not_found)
        return not_found;
    if (e->code == EINVAL)
        return MONGOSNAP_ERROR_INVALID_ARGUMENT;
    return MONGOSNAP_ERROR_FAILED;
}

int bus_error_from_ms(sd_bus_error *ret_error, const MsError *e, const char *not_found) {
    return sd_bus_error_set(ret_error, bus_error_name_for(e, not_found),
                            e->message[0] ? e->message : strerror(e->code));
}

/* The caller's uid and groups as the bus daemon knows them from the socket (SO_PEERCRED,
 * SO_PEERGROUPS): GetConnectionCredentials' UnixUserID and UnixGroupIDs, the same groups the
 * bus policy file judges by. Not sd-bus's creds: libsystemd 252 does not read UnixGroupIDs and
 * would complete the creds from /proc/PID/status, which is racy and, with
 * ProtectProc=invisible and no capabilities, hidden from the agent. */
static int sender_credentials(sd_bus_message *message, uid_t *ret_uid, gid_t **ret_gids,
                              size_t *ret_n) {
    const char *sender = sd_bus_message_get_sender(message);
    if (!sender)
        return -ENXIO;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_call_method(sd_bus_message_get_bus(message), "org.freedesktop.DBus",
                               "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetConnectionCredentials", NULL, &reply, "s", sender);
    if (r < 0)
        return r;
    bool have_uid = false;
    uint32_t uid = 0;
    _cleanup_free_ gid_t *gids = NULL;
    size_t n = 0;
    r = sd_bus_message_enter_container(reply, 'a', "{sv}");
    if (r < 0)
        return r;
    while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
        const char *key;
        r = sd_bus_message_read(reply, "s", &key);
        if (r >= 0 && strcmp(key, "UnixUserID") == 0) {
            r = sd_bus_message_read(reply, "v", "u", &uid);
            have_uid = r >= 0;
        } else if (r >= 0 && strcmp(key, "UnixGroupIDs") == 0) {
            const void *data;
            size_t size = 0;
            r = sd_bus_message_enter_container(reply, 'v', "au");
            if (r >= 0)
                r = sd_bus_message_read_array(reply, 'u', &data, &size);
            if (r >= 0 && size > 0) {
                free(gids);
                n = size / sizeof(uint32_t);
                if (!(gids = malloc(n * sizeof(gid_t))))
                    return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                    uint32_t g;
                    memcpy(&g, (const uint8_t *) data + i * sizeof(g), sizeof(g));
                    gids[i] = (gid_t) g;
                }
            }
            if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        } else if (r >= 0)
            r = sd_bus_message_skip(reply, "v");
        if (r >= 0)
            r = sd_bus_message_exit_container(reply);
        if (r < 0)
            return r;
    }
    if (r < 0)
        return r;
    if (!have_uid)
        return -ENODATA;
    *ret_uid = (uid_t) uid;
    *ret_gids = TAKE_PTR(gids);
    *ret_n = n;
    return 0;
}

int bus_caller_is_privileged(sd_bus_message *message) {
    /* As the bus policy file (units/io.mongosnap1.conf): root, or a member of the mongosnap
     * group. Also the agent's own user, for an agent run by hand on a session bus. */
    uid_t uid = (uid_t) -1; /* nobody's: set only on success */
    _cleanup_free_ gid_t *gids = NULL;
    size_t n = 0;
    int r = sender_credentials(message, &uid, &gids, &n);
    if (r < 0)
        return r;
    if (uid == 0 || uid == geteuid())
        return 1;
    /* Looked up at every call: the group may be created after the agent starts. */
    const struct group *g = getgrnam(MONGOSNAP_GROUP);
    for (size_t i = 0; g && i < n; i++)
        if (gids[i] == g->gr_gid)
            return 1;
    return 0;
}

int bus_check_privileged(sd_bus_message *message, sd_bus_error *ret_error) {
    int r = bus_caller_is_privileged(message);
    if (r < 0)
        return sd_bus_error_set_errnof(ret_error, -r, "cannot tell who the caller is: %s",
                                       strerror(-r));
    if (r > 0)
        return 0;
    return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_ACCESS_DENIED,
                            "needs root or membership in group " MONGOSNAP_GROUP
                            " (only root or members of the " MONGOSNAP_GROUP
                            " group may change policies and tasks, or get download addresses)");
}

int bus_caller_is_admin(sd_bus_message *message) {
    uid_t uid = (uid_t) -1;
    _cleanup_free_ gid_t *gids = NULL;
    size_t n = 0;
    int r = sender_credentials(message, &uid, &gids, &n);
    if (r < 0)
        return r;
    return uid == 0 || uid == geteuid();
}

/* The settings that decide where a secret goes: only an administrator binds them. */
static bool setting_binds_secret(const char *key) {
    static const char *const keys[] = {"Source", "Policy.Source", "Credential", "Policy.Credential",
                                       "Store",  "Policy.Store",  "Key",        "Encryption.Key"};
    for (size_t i = 0; i < ELEMENTSOF(keys); i++)
        if (strcmp(key, keys[i]) == 0)
            return true;
    return false;
}

int bus_check_settings_allowed(sd_bus_message *message, Manager *m, const ManagerPolicyEdit *edits,
                               size_t n, bool creating, sd_bus_error *ret_error) {
    bool restricted = false;
    const char *which = NULL;
    for (size_t i = 0; i < n && !restricted; i++) {
        if (!setting_binds_secret(edits[i].key))
            continue;
        const char *key = strchr(edits[i].key, '.') ? strchr(edits[i].key, '.') + 1 : edits[i].key;
        /* A new policy may name a source without a credential (no secret goes anywhere), and
         * a store an administrator configured already (the default, or another policy's). */
        if (creating && strcmp(key, "Source") == 0)
            continue;
        if (creating && strcmp(key, "Store") == 0 && manager_store_is_configured(m, edits[i].value))
            continue;
        restricted = true;
        which = edits[i].key;
    }
    if (!restricted)
        return 0;
    int r = bus_caller_is_admin(message);
    if (r < 0)
        return sd_bus_error_set_errnof(ret_error, -r, "cannot tell who the caller is: %s",
                                       strerror(-r));
    if (r > 0)
        return 0;
    return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_ACCESS_DENIED,
                             "%s= decides where a secret is sent (a password, the store's "
                             "keys, an encryption key): only root changes it, over D-Bus or in "
                             "the policy file; members of the " MONGOSNAP_GROUP
                             " group manage the other settings",
                             which);
}

int bus_policy_path(const char *name, char **ret_path) {
    return sd_bus_path_encode(MONGOSNAP_BUS_POLICY_PREFIX, name, ret_path);
}

int bus_snapshot_path(const char *id, char **ret_path) {
    return sd_bus_path_encode(MONGOSNAP_BUS_SNAPSHOT_PREFIX, id, ret_path);
}

int bus_restore_path(const char *id, char **ret_path) {
    return sd_bus_path_encode(MONGOSNAP_BUS_RESTORE_PREFIX, id, ret_path);
}

Manager *bus_manager_of(sd_bus_message *message) {
    /* A fallback vtable's handler gets the found object; the registration's userdata, which is
     * the manager, is the current slot's. */
    return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(message)));
}

int bus_read_settings(sd_bus_message *message, ManagerPolicyEdit edits[BUS_SETTINGS_MAX],
                      size_t *ret_n, sd_bus_error *ret_error) {
    size_t n = 0;
    int r = sd_bus_message_enter_container(message, 'a', "{ss}");
    if (r < 0)
        return r;
    while ((r = sd_bus_message_read(message, "{ss}", &edits[n].key, &edits[n].value)) > 0)
        if (++n == BUS_SETTINGS_MAX)
            return sd_bus_error_setf(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT,
                                     "too many settings at once (at most %d)",
                                     BUS_SETTINGS_MAX - 1);
    if (r < 0)
        return r;
    r = sd_bus_message_exit_container(message);
    if (r < 0)
        return r;
    *ret_n = n;
    return 0;
}

int bus_task_log_reference(const char *id, char **ret) {
    return asprintf(ret, "%s%s", TASK_LOG_FIELD, id) < 0 ? -ENOMEM : 0;
}

int bus_enumerate_ids(const char *prefix, const Manager *m, size_t n,
                      const char *(*id_at)(const Manager *m, size_t i), char ***ret_nodes) {
    char **nodes = calloc(n + 1, sizeof(char *));
    if (!nodes)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int r = sd_bus_path_encode(prefix, id_at(m, i), &nodes[i]);
        if (r < 0) {
            for (size_t j = 0; j < i; j++)
                free(nodes[j]);
            free(nodes);
            return r;
        }
    }
    *ret_nodes = nodes;
    return 0;
}

void bus_emit_task_changed(sd_bus *bus, const char *path, const char *interface, unsigned changes) {
    int k;
    if (changes & MANAGER_SNAPSHOT_STATE)
        k = sd_bus_emit_properties_changed_strv(bus, path, interface, NULL);
    else
        k = sd_bus_emit_properties_changed(bus, path, interface, "Progress", "Items", "ItemsTotal",
                                           "BytesTransferred", "ElapsedUSec", "Phase", NULL);
    if (k < 0)
        log_debug("cannot announce changes of %s: %s", path, strerror(-k));
}

void bus_emit_added(sd_bus *bus, const char *path) {
    int k = sd_bus_emit_object_added(bus, path);
    if (k < 0)
        log_debug("cannot announce %s: %s", path, strerror(-k));
}

int bus_property_get_u64(sd_bus *bus, const char *path, const char *interface, const char *property,
                         sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
    return sd_bus_message_append(reply, "t", *(const uint64_t *) userdata);
}

int bus_append_task_log(sd_bus_message *reply, const char *id) {
    _cleanup_free_ char *ref = NULL;
    int k = bus_task_log_reference(id, &ref);
    if (k < 0)
        return k;
    return sd_bus_message_append(reply, "s", ref);
}

char *bus_snapshot_download_address(Manager *m, const MsSnapshotRecord *r) {
    char *url = NULL;
    MsError e = MS_ERROR_INIT;
    if (r->state == MS_SNAPSHOT_COMPLETED && manager_snapshot_download_url(m, r, 0, &url, &e) < 0 &&
        e.code != EOPNOTSUPP)
        log_debug("no download address for %s: %s", r->id, e.message);
    return url ? url : strdup("");
}

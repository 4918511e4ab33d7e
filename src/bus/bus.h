/* The D-Bus adapter of mongosnapd: object paths, error names, vtable registration. */
#pragma once

#include <systemd/sd-bus.h>

#include "agent/agent-manager.h"
#include "common/error.h"
#include "mongosnap/mongosnap.h"

/* Error messages echo what the caller sent at most this long ("%.*s" with it): a megabyte-long
 * name is not worth sending back. */
#define BUS_ECHO_MAX 128

/* Root, a member of group mongosnap, or the agent's own user: 1, 0, or -errno. */
int bus_caller_is_privileged(sd_bus_message *message);
/* Root (or the agent's own user): may bind secrets to destinations over D-Bus. 1, 0, -errno. */
int bus_caller_is_admin(sd_bus_message *message);
/* Refuse (AccessDenied) the settings that decide where a secret goes unless the caller is an
 * administrator; creating: a new policy, which may name a source (it has no credential yet)
 * and an already configured store. */
int bus_check_settings_allowed(sd_bus_message *message, Manager *m, const ManagerPolicyEdit *edits,
                               size_t n, bool creating, sd_bus_error *ret_error);

static inline const char *empty_if_null(const char *s) {
    return s ? s : "";
}

/* The object paths under prefix of the n tasks whose ids id_at() gives (a node enumerator). */
int bus_enumerate_ids(const char *prefix, const Manager *m, size_t n,
                      const char *(*id_at)(const Manager *m, size_t i), char ***ret_nodes);
/* PropertiesChanged for a task object: every property on a state change, the progress figures
 * (Progress, Items, ItemsTotal, BytesTransferred, ElapsedUSec, Phase) otherwise. */
void bus_emit_task_changed(sd_bus *bus, const char *path, const char *interface, unsigned changes);
/* InterfacesAdded for a new object. */
void bus_emit_added(sd_bus *bus, const char *path);
/* A "t" property registered with the offset of a uint64_t field of the found object. */
int bus_property_get_u64(sd_bus *bus, const char *path, const char *interface, const char *property,
                         sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);
/* The TaskLog property of the task with this id. */
int bus_append_task_log(sd_bus_message *reply, const char *id);

/* bus-task.c: the properties every task object has, from its record's core (the object's
 * userdata; catalog.h MsTaskCore). BUS_TASK_CORE_PROPERTIES lists them for a vtable. */
#define BUS_TASK_GETTER(fname)                                                                     \
    int fname(sd_bus *bus, const char *path, const char *interface, const char *property,          \
              sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
BUS_TASK_GETTER(bus_task_property_get_string); /* Id, Node, Error, Phase */
BUS_TASK_GETTER(bus_task_property_get_task_log);
BUS_TASK_GETTER(bus_task_property_get_elapsed);
BUS_TASK_GETTER(bus_task_property_get_progress);
/* GetLog(s after_cursor, u max_entries) of a task object: its Event Log. */
int bus_task_method_get_log(sd_bus_message *message, void *userdata, sd_bus_error *ret_error);
#define BUS_TASK_CORE_PROPERTIES                                                                   \
    SD_BUS_PROPERTY("Id", "s", bus_task_property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),     \
        SD_BUS_PROPERTY("Node", "s", bus_task_property_get_string, 0,                              \
                        SD_BUS_VTABLE_PROPERTY_CONST),                                             \
        SD_BUS_PROPERTY("TaskLog", "s", bus_task_property_get_task_log, 0,                         \
                        SD_BUS_VTABLE_PROPERTY_CONST),                                             \
        SD_BUS_PROPERTY("ElapsedUSec", "t", bus_task_property_get_elapsed, 0,                      \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),                                      \
        SD_BUS_PROPERTY("Items", "t", bus_property_get_u64, offsetof(MsTaskCore, items_done),      \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),                                      \
        SD_BUS_PROPERTY("ItemsTotal", "t", bus_property_get_u64,                                   \
                        offsetof(MsTaskCore, items_total), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),   \
        SD_BUS_PROPERTY("Progress", "d", bus_task_property_get_progress, 0,                        \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),                                      \
        SD_BUS_PROPERTY("Phase", "s", bus_task_property_get_string, 0,                             \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),                                      \
        SD_BUS_PROPERTY("BytesTransferred", "t", bus_property_get_u64,                             \
                        offsetof(MsTaskCore, bytes_transferred),                                   \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),                                      \
        SD_BUS_PROPERTY("CreateTime", "t", bus_property_get_u64,                                   \
                        offsetof(MsTaskCore, created_usec), SD_BUS_VTABLE_PROPERTY_CONST),         \
        SD_BUS_PROPERTY("StartTime", "t", bus_property_get_u64,                                    \
                        offsetof(MsTaskCore, started_usec), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),  \
        SD_BUS_PROPERTY("FinishTime", "t", bus_property_get_u64,                                   \
                        offsetof(MsTaskCore, finished_usec), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE), \
        SD_BUS_PROPERTY("Error", "s", bus_task_property_get_string, 0,                             \
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
/* PropertiesChanged / InterfacesAdded for the task object under prefix with the core's id. */
void bus_task_emit_changed(sd_bus *bus, const char *prefix, const char *interface,
                           const MsTaskCore *c, unsigned changes);
void bus_task_emit_added(sd_bus *bus, const char *prefix, const MsTaskCore *c);

/* Register the manager object, the policy and snapshot subtrees and the object manager on
 * bus, and route the manager's change notifications to signals. */
int bus_attach(Manager *m, sd_bus *bus, MsError *e);

/* Read an a{sv} of options: read_one gets each key with the message at its variant, which it
 * enters, reads and leaves (refusing unknown keys and wrong types with InvalidArgument). */
typedef int (*BusOptionReader)(sd_bus_message *message, const char *key, void *userdata,
                               sd_bus_error *ret_error);
int bus_read_options(sd_bus_message *message, BusOptionReader read_one, void *userdata,
                     sd_bus_error *ret_error);
/* A BusOptionReader for an a{sv} of one boolean option: userdata is a BusBoolOption naming it
 * ("snapshot" option "scheduled"); any other key, or another type, is refused saying which. */
typedef struct BusBoolOption {
    const char *what;
    const char *name;
    int value;
} BusBoolOption;
int bus_read_bool_option(sd_bus_message *message, const char *key, void *userdata,
                         sd_bus_error *ret_error);
/* The io.mongosnap1.Error name of a failure: its kind's name; else not_found for ENOENT (when
 * the caller names the kind of object), InvalidArgument for EINVAL, Failed for anything else. */
const char *bus_error_name_for(const MsError *e, const char *not_found);
/* Set ret_error from an MsError of the manager, named as bus_error_name_for() names it. */
int bus_error_from_ms(sd_bus_error *ret_error, const MsError *e, const char *not_found);
/* Mutating methods: only callers with the agent's own user (root for the system service). */
int bus_check_privileged(sd_bus_message *message, sd_bus_error *ret_error);

int bus_policy_path(const char *name, char **ret_path);
int bus_snapshot_path(const char *id, char **ret_path);
int bus_restore_path(const char *id, char **ret_path);
/* The journal match that selects a task's Event Log. */
int bus_task_log_reference(const char *id, char **ret);

int bus_policy_register(Manager *m, sd_bus *bus, MsError *e);
int bus_snapshot_register(Manager *m, sd_bus *bus, MsError *e);
int bus_restore_register(Manager *m, sd_bus *bus, MsError *e);
int bus_append_restore_row(sd_bus_message *reply, const MsRestoreRecord *r, uint64_t now_usec);
void bus_restore_emit_changed(sd_bus *bus, const MsRestoreRecord *r, unsigned changes);
void bus_restore_emit_added(sd_bus *bus, const MsRestoreRecord *r);
void bus_policy_emit_added(sd_bus *bus, const ManagerPolicy *p);
/* Reply to message with the Event Log entries of a policy and/or task (GetLog). */
int bus_reply_log(sd_bus_message *message, const char *policy, const char *task,
                  const char *after_cursor, uint32_t max_entries, sd_bus_error *ret_error);
/* Settings as Edit and CreatePolicy take them (a{ss}: "Key" or "Section.Key" -> value); the
 * strings point into message. More than BUS_SETTINGS_MAX - 1 is refused: a policy has fewer
 * keys. */
#define BUS_SETTINGS_MAX 64
int bus_read_settings(sd_bus_message *message, ManagerPolicyEdit edits[BUS_SETTINGS_MAX],
                      size_t *ret_n, sd_bus_error *ret_error);
/* The manager behind a fallback vtable's found object (its registration's userdata). */
Manager *bus_manager_of(sd_bus_message *message);
/* with_download: the download address in the row (privileged callers only), else "". */
int bus_append_snapshot_row(sd_bus_message *reply, Manager *m, const MsSnapshotRecord *r,
                            uint64_t now_usec, bool with_download);
/* The snapshot's download address as the bus shows it: "" when it has none. */
char *bus_snapshot_download_address(Manager *m, const MsSnapshotRecord *r);
void bus_snapshot_emit_changed(sd_bus *bus, const MsSnapshotRecord *r, unsigned changes);
void bus_snapshot_emit_added(sd_bus *bus, const MsSnapshotRecord *r);
void bus_policy_emit_changed(sd_bus *bus, const ManagerPolicy *p);
/* InterfacesRemoved for a policy that went, whatever removed it. */
void bus_policy_emit_removed(sd_bus *bus, const ManagerPolicy *p);
/* Answer the Rebuild call held in token (a referenced sd_bus_message) and drop it. */
void bus_policy_rebuild_done(void *token, const MsSnapshotRecord *record, const MsError *e);

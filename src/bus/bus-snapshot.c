/* io.mongosnap1.Snapshot objects: the Backup Record columns, live Progress, Cancel, Verify,
 * Delete and the task's Event Log. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "catalog/snapshot-parts.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "mongosnap/mongosnap.h"

static int snapshot_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                         void **ret_found, sd_bus_error *ret_error) {
    Manager *m = userdata;
    _cleanup_free_ char *id = NULL;
    int r = sd_bus_path_decode(path, MONGOSNAP_BUS_SNAPSHOT_PREFIX, &id);
    if (r <= 0)
        return r;
    const MsSnapshotRecord *rec = manager_find_snapshot(m, id);
    if (!rec)
        return 0;
    /* Getters only read; Cancel goes through the manager by id. */
    *ret_found = (void *) rec;
    return 1;
}

static const char *snapshot_id_at(const Manager *m, size_t i) {
    return manager_snapshot_at(m, i)->id;
}

static int snapshot_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                              sd_bus_error *ret_error) {
    Manager *m = userdata;
    return bus_enumerate_ids(MONGOSNAP_BUS_SNAPSHOT_PREFIX, m, manager_n_snapshots(m), snapshot_id_at,
                             ret_nodes);
}

#define SNAPSHOT_GETTER(fname)                                                                     \
    static int fname(sd_bus *bus, const char *path, const char *interface, const char *property,   \
                     sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)

SNAPSHOT_GETTER(property_get_string) {
    const MsSnapshotRecord *r = userdata;
    const char *v = strcmp(property, "Policy") == 0        ? r->policy
                    : strcmp(property, "ArchiveKey") == 0  ? r->archive_key
                    : strcmp(property, "ManifestKey") == 0 ? r->manifest_key
                    : strcmp(property, "Store") == 0       ? r->store
                    : strcmp(property, "VerifyError") == 0 ? r->verify_error
                    : strcmp(property, "KeptBy") == 0      ? r->kept_by
                                                           : NULL;
    return sd_bus_message_append(reply, "s", empty_if_null(v));
}

SNAPSHOT_GETTER(property_get_file_name) {
    const MsSnapshotRecord *r = userdata;
    const char *slash = r->archive_key ? strrchr(r->archive_key, '/') : NULL;
    return sd_bus_message_append(reply, "s", slash ? slash + 1 : empty_if_null(r->archive_key));
}

SNAPSHOT_GETTER(property_get_state) {
    const MsSnapshotRecord *r = userdata;
    return sd_bus_message_append(reply, "s", ms_snapshot_state_to_string(r->state));
}

SNAPSHOT_GETTER(property_get_point_in_time) {
    const MsSnapshotRecord *r = userdata;
    return sd_bus_message_append(reply, "b", (int) r->point_in_time);
}

SNAPSHOT_GETTER(property_get_download_address) {
    const MsSnapshotRecord *r = userdata;
    Manager *m = sd_bus_slot_get_userdata(sd_bus_get_current_slot(bus));
    /* Read access to every document: privileged callers only, as GetDownloadAddress. */
    sd_bus_message *call = sd_bus_get_current_message(bus);
    if (!call || bus_caller_is_privileged(call) <= 0)
        return sd_bus_message_append(reply, "s", "");
    _cleanup_free_ char *url = bus_snapshot_download_address(m, r);
    if (!url)
        return -ENOMEM;
    return sd_bus_message_append(reply, "s", url);
}

static int method_get_download_address(sd_bus_message *message, void *userdata,
                                       sd_bus_error *ret_error) {
    const MsSnapshotRecord *r = userdata;
    uint64_t expires;
    int k = sd_bus_message_read(message, "t", &expires);
    if (k < 0)
        return k;
    k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    _cleanup_free_ char *url = NULL;
    MsError e = MS_ERROR_INIT;
    if (manager_snapshot_download_url(bus_manager_of(message), r, expires, &url, &e) < 0) {
        if (e.code == EOPNOTSUPP)
            return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_NOT_SUPPORTED, e.message);
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NOT_RESTORABLE);
    }
    return sd_bus_reply_method_return(message, "s", url);
}

SNAPSHOT_GETTER(property_get_verify_state) {
    const MsSnapshotRecord *r = userdata;
    return sd_bus_message_append(reply, "s", ms_verify_state_to_string(r->verify_state));
}

SNAPSHOT_GETTER(property_get_origin) {
    const MsSnapshotRecord *r = userdata;
    return sd_bus_message_append(reply, "s", ms_snapshot_origin_to_string(r->origin));
}

SNAPSHOT_GETTER(property_get_future_dated) {
    const MsSnapshotRecord *r = userdata;
    return sd_bus_message_append(reply, "b", (int) r->future_dated);
}

static int method_cancel(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsSnapshotRecord *r = userdata;
    Manager *m = bus_manager_of(message);
    int k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    MsError e = MS_ERROR_INIT;
    if (manager_cancel_snapshot(m, r->id, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT);
    return sd_bus_reply_method_return(message, NULL);
}

static int method_verify(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsSnapshotRecord *r = userdata;
    int k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    MsError e = MS_ERROR_INIT;
    if (manager_verify_snapshot(bus_manager_of(message), r->id, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT);
    return sd_bus_reply_method_return(message, NULL);
}

static int method_delete(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsSnapshotRecord *r = userdata;
    int k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    MsError e = MS_ERROR_INIT;
    if (manager_delete_snapshot(bus_manager_of(message), r->id, &e) < 0)
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT);
    return sd_bus_reply_method_return(message, NULL);
}

/* Export(h fd): the snapshot as a stock mongodump archive written into fd by a worker; the
 * reply comes when the worker has ended (an error then: the archive in fd is incomplete). */
static void export_done(void *userdata, int r, const char *message) {
    sd_bus_message *call = userdata;
    if (r == 0)
        (void) sd_bus_reply_method_return(call, NULL);
    else
        (void) sd_bus_reply_method_errorf(call, MONGOSNAP_ERROR_FAILED,
                                          "the export failed, the archive written is incomplete: %s",
                                          message);
    sd_bus_message_unref(call);
}

static int method_export(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
    const MsSnapshotRecord *r = userdata;
    int fd;
    int k = sd_bus_message_read(message, "h", &fd);
    if (k < 0)
        return k;
    k = bus_check_privileged(message, ret_error);
    if (k < 0)
        return k;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0)
        return sd_bus_error_set_errnof(ret_error, errno, "cannot take the file descriptor: %m");
    MsError e = MS_ERROR_INIT;
    sd_bus_message_ref(message);
    if (manager_export_snapshot(bus_manager_of(message), r->id, copy, export_done, message, &e) < 0) {
        sd_bus_message_unref(message);
        return bus_error_from_ms(ret_error, &e, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT);
    }
    return 1; /* answered by export_done */
}

#define CHANGING SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE
#define CONST SD_BUS_VTABLE_PROPERTY_CONST

static int append_part(const MsSnapshotPart *p, void *userdata) {
    return sd_bus_message_append(userdata, MONGOSNAP_SNAPSHOT_PART_ROW, p->shard, p->replica_set,
                                 p->manifest, p->documents, p->stored_bytes, p->dump_end_t,
                                 p->dump_end_i, p->node);
}

/* A damaged parts column lists none (and says so in the journal) rather than failing the whole
 * GetAll a client asks for. */
SNAPSHOT_GETTER(property_get_parts) {
    const MsSnapshotRecord *r = userdata;
    int k = sd_bus_message_open_container(reply, 'a', MONGOSNAP_SNAPSHOT_PART_ROW);
    if (k < 0)
        return k;
    MsError e = MS_ERROR_INIT;
    k = ms_snapshot_parts_foreach(r->parts, append_part, reply, &e);
    if (k == -EBADMSG)
        log_warning("snapshot %s: %s: its parts are not listed", r->id, e.message);
    else if (k < 0)
        return k;
    return sd_bus_message_close_container(reply);
}

static const sd_bus_vtable snapshot_vtable[] = {
    SD_BUS_VTABLE_START(0),
    BUS_TASK_CORE_PROPERTIES,
    SD_BUS_PROPERTY("Policy", "s", property_get_string, 0, CONST),
    SD_BUS_PROPERTY("Store", "s", property_get_string, 0, CONST),
    SD_BUS_PROPERTY("FileName", "s", property_get_file_name, 0, CHANGING),
    SD_BUS_PROPERTY("ArchiveKey", "s", property_get_string, 0, CHANGING),
    SD_BUS_PROPERTY("ManifestKey", "s", property_get_string, 0, CHANGING),
    /* Not EMITS_CHANGE: a fresh address is signed at every read (they expire). */
    SD_BUS_PROPERTY("DownloadAddress", "s", property_get_download_address, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
    SD_BUS_PROPERTY("ExpireTime", "t", bus_property_get_u64,
                    offsetof(MsSnapshotRecord, expire_usec), CHANGING),
    SD_BUS_PROPERTY("State", "s", property_get_state, 0, CHANGING),
    SD_BUS_PROPERTY("PointInTime", "b", property_get_point_in_time, 0, CHANGING),
    SD_BUS_PROPERTY("VerifyState", "s", property_get_verify_state, 0, CHANGING),
    SD_BUS_PROPERTY("VerifyTime", "t", bus_property_get_u64,
                    offsetof(MsSnapshotRecord, verify_finished_usec), CHANGING),
    SD_BUS_PROPERTY("VerifyError", "s", property_get_string, 0, CHANGING),
    SD_BUS_PROPERTY("Seq", "t", bus_property_get_u64, offsetof(MsSnapshotRecord, seq), CHANGING),
    SD_BUS_PROPERTY("Origin", "s", property_get_origin, 0, CHANGING),
    SD_BUS_PROPERTY("KeptBy", "s", property_get_string, 0, CHANGING),
    SD_BUS_PROPERTY("ExpireProjectedTime", "t", bus_property_get_u64,
                    offsetof(MsSnapshotRecord, expire_projected_usec), CHANGING),
    SD_BUS_PROPERTY("FutureDated", "b", property_get_future_dated, 0, CHANGING),
    SD_BUS_PROPERTY("DetachedTime", "t", bus_property_get_u64,
                    offsetof(MsSnapshotRecord, detached_usec), CHANGING),
    SD_BUS_PROPERTY("Parts", "a" MONGOSNAP_SNAPSHOT_PART_ROW, property_get_parts, 0, CHANGING),
    SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_cancel,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Verify", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_verify,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_delete,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Export", SD_BUS_ARGS("h", fd), SD_BUS_NO_RESULT, method_export,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetLog", SD_BUS_ARGS("s", after_cursor, "u", max_entries),
                            SD_BUS_RESULT("a" MONGOSNAP_LOG_ENTRY, entries), bus_task_method_get_log,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetDownloadAddress", SD_BUS_ARGS("t", expires_usec),
                            SD_BUS_RESULT("s", address), method_get_download_address,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

void bus_snapshot_emit_changed(sd_bus *bus, const MsSnapshotRecord *r, unsigned changes) {
    bus_task_emit_changed(bus, MONGOSNAP_BUS_SNAPSHOT_PREFIX, MONGOSNAP_BUS_SNAPSHOT_INTERFACE, &r->core,
                          changes);
}

void bus_snapshot_emit_added(sd_bus *bus, const MsSnapshotRecord *r) {
    bus_task_emit_added(bus, MONGOSNAP_BUS_SNAPSHOT_PREFIX, &r->core);
}

int bus_snapshot_register(Manager *m, sd_bus *bus, MsError *e) {
    int r =
        sd_bus_add_fallback_vtable(bus, NULL, MONGOSNAP_BUS_SNAPSHOT_PREFIX, MONGOSNAP_BUS_SNAPSHOT_INTERFACE,
                                   snapshot_vtable, snapshot_find, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register %s: %s", MONGOSNAP_BUS_SNAPSHOT_PREFIX, strerror(-r));
    r = sd_bus_add_node_enumerator(bus, NULL, MONGOSNAP_BUS_SNAPSHOT_PREFIX, snapshot_enumerate, m);
    if (r < 0)
        return ms_error_set(e, -r, "cannot register the snapshot enumerator: %s", strerror(-r));
    return 0;
}

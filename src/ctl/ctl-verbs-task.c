/* mongosnapctl's task verbs: restore, verify, cancel, delete-snapshot. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "common/strv.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* ---- restore: the a{sv} options of StartRestore ---- */

static int append_strv_option(sd_bus_message *m, const char *key, char **values) {
    if (ms_strv_length(values) == 0)
        return 0;
    int r = sd_bus_message_open_container(m, 'e', "sv");
    if (r >= 0)
        r = sd_bus_message_append(m, "s", key);
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'v', "as");
    if (r >= 0)
        r = sd_bus_message_append_strv(m, values);
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    return r < 0 ? r : sd_bus_message_close_container(m);
}

static int append_restore_options(sd_bus_message *m, const CtlRestoreArgs *a, bool force) {
    int r = sd_bus_message_open_container(m, 'a', "{sv}");
    if (r >= 0)
        r = append_strv_option(m, "ns_include", a->ns_include);
    if (r >= 0)
        r = append_strv_option(m, "ns_exclude", a->ns_exclude);
    if (r >= 0)
        r = append_strv_option(m, "ns_from", a->ns_from);
    if (r >= 0)
        r = append_strv_option(m, "ns_to", a->ns_to);
    if (r >= 0 && a->drop)
        r = sd_bus_message_append(m, "{sv}", "drop", "b", 1);
    if (r >= 0 && a->no_indexes)
        r = sd_bus_message_append(m, "{sv}", "no_indexes", "b", 1);
    if (r >= 0 && a->until)
        r = sd_bus_message_append(m, "{sv}", "until", "s", a->until);
    if (r >= 0 && a->time)
        r = sd_bus_message_append(m, "{sv}", "time", "s", a->time);
    if (r >= 0 && a->parallel)
        r = sd_bus_message_append(m, "{sv}", "parallel", "u", (uint32_t) a->parallel);
    if (r >= 0 && a->credential)
        r = sd_bus_message_append(m, "{sv}", "credential", "s", a->credential);
    if (r >= 0 && a->key_credential)
        r = sd_bus_message_append(m, "{sv}", "key_credential", "s", a->key_credential);
    if (r >= 0 && a->shard_map)
        r = sd_bus_message_append(m, "{sv}", "shard_map", "s", a->shard_map);
    if (r >= 0 && a->part)
        r = sd_bus_message_append(m, "{sv}", "part", "s", a->part);
    if (r >= 0 && force)
        r = sd_bus_message_append(m, "{sv}", "force", "b", 1);
    return r < 0 ? r : sd_bus_message_close_container(m);
}

static int start_restore(sd_bus *bus, const char *snapshot, const CtlRestoreArgs *a, bool force,
                         sd_bus_error *error, sd_bus_message **reply) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
    int r = sd_bus_message_new_method_call(bus, &m, MONGOSNAP_BUS_NAME, MONGOSNAP_BUS_PATH,
                                           MONGOSNAP_BUS_MANAGER_INTERFACE, "StartRestore");
    if (r >= 0)
        r = sd_bus_message_append(m, "ss", snapshot, a->to);
    if (r >= 0)
        r = append_restore_options(m, a, force);
    return r < 0 ? r : sd_bus_call(bus, m, 0, error, reply);
}

int verb_restore(Ctl *ctl, int argc, char **argv) {
    const CtlRestoreArgs *a = &ctl->args.restore;
    if (!a->to)
        return ctl_fail(CTL_EXIT_USAGE,
                        "restore needs --to URI: the MongoDB deployment to restore into");
    if (a->time && a->until)
        return ctl_fail(CTL_EXIT_USAGE,
                        "--time and --until cannot go together: --time restores the policy to an "
                        "instant across snapshots and oplog slices, --until stops within one "
                        "snapshot");
    if (ms_strv_length(a->ns_from) != ms_strv_length(a->ns_to))
        return ctl_fail(CTL_EXIT_USAGE,
                        "--ns-from and --ns-to pair up: give them the same number of times");
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "restore %s", argv[1]);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    const char *path = NULL;
    int r = start_restore(bus, argv[1], a, ctl->args.force, &error, &reply);
    if (r >= 0)
        r = sd_bus_message_read(reply, "o", &path);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    return ctl_task_started(ctl, what, path, CTL_TASK_RESTORE);
}

/* ---- snapshot objects ---- */

/* A method of the snapshot id; *ret_path (if asked for) is its object's path. */
static int snapshot_call(Ctl *ctl, const char *verb, const char *id, const char *method,
                         char **ret_path) {
    return ctl_object_call(ctl, CTL_OBJECT_SNAPSHOT, verb, id, method, NULL, ret_path, NULL);
}

int verb_verify(Ctl *ctl, int argc, char **argv) {
    _cleanup_free_ char *path = NULL;
    int code = snapshot_call(ctl, "verify", argv[1], "Verify", &path);
    if (code != CTL_EXIT_OK || !ctl->args.wait)
        return code;
    return ctl_wait_task(ctl, path, CTL_TASK_VERIFY, argv[1]);
}

int verb_delete_snapshot(Ctl *ctl, int argc, char **argv) {
    return snapshot_call(ctl, "delete-snapshot", argv[1], "Delete", NULL);
}

int verb_download_url(Ctl *ctl, int argc, char **argv) {
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "download-url %s", argv[1]);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = ctl_object_call(ctl, CTL_OBJECT_SNAPSHOT, "download-url", argv[1],
                               "GetDownloadAddress", &reply, NULL, "t", ctl->args.expires_usec);
    if (code != CTL_EXIT_OK)
        return code;
    const char *url;
    int r = sd_bus_message_read(reply, "s", &url);
    if (r < 0)
        return ctl_fail(CTL_EXIT_FAILED, "%s: unexpected reply: %s", what, strerror(-r));
    if (ctl->args.json)
        printf("{\"snapshot\":\"%s\",\"download_url\":\"%s\"}\n", argv[1], url);
    else
        printf("%s\n", url);
    return CTL_EXIT_OK;
}

/* A task is a snapshot or a restore: whichever list has the id. */
int verb_cancel(Ctl *ctl, int argc, char **argv) {
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "cancel %s", argv[1]);
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    CtlObject kind;
    int r = ctl_find_task(bus, argv[1], &path, &kind, &error);
    if (r >= 0)
        r = ctl_call(bus, path,
                     kind == CTL_OBJECT_SNAPSHOT ? MONGOSNAP_BUS_SNAPSHOT_INTERFACE
                                                 : MONGOSNAP_BUS_RESTORE_INTERFACE,
                     "Cancel", &error, NULL, NULL);
    return r < 0 ? ctl_fail_bus(what, &error, r) : CTL_EXIT_OK;
}

/* export SNAPSHOT > FILE: the agent's worker writes the archive into a pipe, we copy it to
 * standard output, and the call's reply (which comes when the worker has ended) says whether
 * what we wrote is whole. Both are waited for in one poll loop: the reply may come before the
 * pipe is drained, and the pipe fills if nobody drains it while the reply is awaited. */
typedef struct ExportState {
    bool replied;
    int r;
    char message[512];
} ExportState;

static int export_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
    ExportState *st = userdata;
    st->replied = true;
    const sd_bus_error *err = sd_bus_message_get_error(reply);
    if (err) {
        st->r = -sd_bus_error_get_errno(err);
        if (st->r == 0)
            st->r = -EIO;
        snprintf(st->message, sizeof(st->message), "%s", err->message ? err->message : err->name);
    }
    return 0;
}

int verb_export(Ctl *ctl, int argc, char **argv) {
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "export %s", argv[1]);
    if (isatty(STDOUT_FILENO))
        return ctl_fail(CTL_EXIT_USAGE,
                        "%s: the archive is binary; redirect standard output to a file "
                        "(mongosnapctl export %s > dump.archive)",
                        what, argv[1]);
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    int r = ctl_find_snapshot(bus, argv[1], &path, &error);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return ctl_fail(CTL_EXIT_FAILED, "%s: cannot create a pipe: %s", what, strerror(errno));
    _cleanup_close_ int rd = fds[0];
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
    r = sd_bus_message_new_method_call(bus, &call, MONGOSNAP_BUS_NAME, path,
                                       MONGOSNAP_BUS_SNAPSHOT_INTERFACE, "Export");
    if (r >= 0)
        r = sd_bus_message_append(call, "h", fds[1]);
    ExportState st = {0};
    _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
    if (r >= 0) /* no time-out: a large snapshot takes as long as it takes */
        r = sd_bus_call_async(bus, &slot, call, export_reply, &st, UINT64_MAX);
    /* The message holds a copy of the write end: it and ours must go, or the end of the
     * archive never shows (the agent's worker holds the write end now). */
    call = sd_bus_message_unref(call);
    close(fds[1]);
    if (r < 0)
        return ctl_fail(CTL_EXIT_FAILED, "%s: cannot call Export: %s", what, strerror(-r));
    static uint8_t buf[1 << 16];
    bool eof = false;
    uint64_t bytes = 0;
    while (!eof || !st.replied) {
        struct pollfd p[2] = {{.fd = eof ? -1 : rd, .events = POLLIN},
                              {.fd = sd_bus_get_fd(bus), .events = (short) sd_bus_get_events(bus)}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return ctl_fail(CTL_EXIT_FAILED, "%s: poll: %s", what, strerror(errno));
        if (!eof && (p[0].revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(rd, buf, sizeof(buf));
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                return ctl_fail(CTL_EXIT_FAILED, "%s: reading the archive: %s", what, strerror(errno));
            if (n == 0)
                eof = true;
            for (ssize_t off = 0; n > 0 && off < n;) {
                ssize_t w = write(STDOUT_FILENO, buf + off, (size_t) (n - off));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    return ctl_fail(CTL_EXIT_FAILED, "%s: writing the archive: %s", what,
                                    strerror(errno));
                off += w;
            }
            if (n > 0)
                bytes += (uint64_t) n;
        }
        while ((r = sd_bus_process(bus, NULL)) > 0)
            ;
        if (r < 0)
            return ctl_fail(CTL_EXIT_FAILED, "%s: the bus connection failed: %s", what, strerror(-r));
    }
    if (st.r < 0)
        return ctl_fail(CTL_EXIT_FAILED, "%s: %s", what, st.message);
    if (!ctl->args.json)
        fprintf(stderr, "exported %s: %" PRIu64 " bytes of mongodump archive\n", argv[1], bytes);
    return CTL_EXIT_OK;
}

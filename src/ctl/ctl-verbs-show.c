/* mongosnapctl show TASK: every field of one snapshot or restore, its task log with the
 * journalctl command that shows it whole, and its last lines. */
#include <stdio.h>
#include <string.h>

#include "common/timeutil.h"
#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

#define SHOW_LABEL_WIDTH 18
#define SHOW_LOG_LINES 8
#define SHOW_LINE_MAX 1024

static void field(const char *label, const char *value) {
    printf("%*s: %s\n", SHOW_LABEL_WIDTH, label, value && *value ? value : CTL_NONE);
}

static void field_time(const char *label, uint64_t usec) {
    char buf[CTL_TIMESTAMP_MAX];
    ctl_format_timestamp(usec, buf);
    field(label, buf);
}

static void field_u64(const char *label, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long) v);
    field(label, buf);
}

static void field_size(const char *label, uint64_t v) {
    char buf[CTL_SIZE_MAX];
    ctl_format_size(v, buf);
    field(label, v ? buf : "");
}

/* The last lines of the task's Event Log, and how to read all of it. */
static void show_log(sd_bus *bus, const char *id) {
    char match[SHOW_LINE_MAX];
    snprintf(match, sizeof(match), "MONGOSNAP_TASK=%s", id);
    char cmd[2 * SHOW_LINE_MAX + 64];
    snprintf(cmd, sizeof(cmd), "journalctl %s  (or: " CTL_PROGRAM " log %s)", match, id);
    field("Task log", cmd);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = ctl_call(bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE, "GetLog", &error,
                     &reply, "ssu", match, "", (uint32_t) SHOW_LOG_LINES);
    if (r < 0) {
        printf("%*s  (%s)\n", SHOW_LABEL_WIDTH, "", error.message ? error.message : "no log");
        return;
    }
    r = sd_bus_message_enter_container(reply, 'a', "(sta{ss})");
    while (r >= 0) {
        const char *cursor;
        uint64_t t;
        r = sd_bus_message_enter_container(reply, 'r', "sta{ss}");
        if (r <= 0)
            break;
        r = sd_bus_message_read(reply, "st", &cursor, &t);
        const char *message = "";
        if (r >= 0)
            r = sd_bus_message_enter_container(reply, 'a', "{ss}");
        while (r > 0) {
            const char *k, *v;
            r = sd_bus_message_read(reply, "{ss}", &k, &v);
            if (r > 0 && strcmp(k, "MESSAGE") == 0)
                message = v;
        }
        if (r >= 0)
            r = sd_bus_message_exit_container(reply);
        if (r >= 0)
            r = sd_bus_message_exit_container(reply);
        char when[CTL_TIMESTAMP_MAX];
        ctl_format_timestamp(t, when);
        printf("%*s  %s %s\n", SHOW_LABEL_WIDTH, "", when, message);
    }
}

/* A cluster snapshot's parts, one line each; nothing for a snapshot of one replica set. */
static void show_parts(sd_bus *bus, const char *path) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_get_property(bus, MONGOSNAP_BUS_NAME, path, MONGOSNAP_BUS_SNAPSHOT_INTERFACE,
                                "Parts", &error, &reply, "a" MONGOSNAP_SNAPSHOT_PART_ROW);
    if (r < 0)
        return; /* an agent from before parts were recorded */
    r = sd_bus_message_enter_container(reply, 'a', MONGOSNAP_SNAPSHOT_PART_ROW);
    for (unsigned n = 0; r > 0; n++) {
        const char *shard, *rs, *manifest, *node;
        uint64_t documents, stored;
        uint32_t t, i;
        r = sd_bus_message_read(reply, MONGOSNAP_SNAPSHOT_PART_ROW, &shard, &rs, &manifest,
                                &documents, &stored, &t, &i, &node);
        if (r <= 0)
            break;
        char size[CTL_SIZE_MAX], when[CTL_TIMESTAMP_MAX], line[SHOW_LINE_MAX];
        ctl_format_size(stored, size);
        ctl_format_timestamp((uint64_t) t * 1000000u, when);
        snprintf(line, sizeof(line),
                 "%s%s%s%s: %llu documents, %s, dump ended %s (oplog %u:%u), %s%s%s", shard,
                 *rs ? " (" : "", rs, *rs ? ")" : "", (unsigned long long) documents, size, when, t,
                 i, manifest, *node ? ", taken by node " : "", node);
        if (n == 0)
            field("Parts", line);
        else
            printf("%*s  %s\n", SHOW_LABEL_WIDTH, "", line);
    }
}

static int show_snapshot(Ctl *ctl, sd_bus *bus, const char *path) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(ctl_props_done) CtlProps p = {0};
    int r = ctl_get_properties(bus, path, MONGOSNAP_BUS_SNAPSHOT_INTERFACE, &p, &error);
    if (r < 0)
        return ctl_fail_bus("show", &error, r);
    const char *id = ctl_props_str(&p, "Id");
    char line[SHOW_LINE_MAX];
    printf("%s %s\n", ctl->utf8 ? "\xe2\x97\x8f" : "*", id);
    field("Kind", "snapshot");
    field("Policy", ctl_props_str(&p, "Policy"));
    field("Node", ctl_props_str(&p, "Node"));
    snprintf(line, sizeof(line), "%s%s%s", ctl_props_str(&p, "State"),
             *ctl_props_str(&p, "Error") ? ": " : "", ctl_props_str(&p, "Error"));
    field("State", line);
    snprintf(line, sizeof(line), "%s (seq %llu)", ctl_props_str(&p, "Origin"),
             (unsigned long long) ctl_props_u64(&p, "Seq"));
    field("Started by", line);
    field("File", ctl_props_str(&p, "FileName"));
    field("Store", ctl_props_str(&p, "Store"));
    field("Archive key", ctl_props_str(&p, "ArchiveKey"));
    field("Manifest key", ctl_props_str(&p, "ManifestKey"));
    char download[CTL_DOWNLOAD_TEXT_MAX];
    ctl_download_text(ctl_props_str(&p, "Id"), ctl_props_str(&p, "FileName"),
                      ctl_props_str(&p, "DownloadAddress"), download);
    field("Download", download);
    field_u64("Items", ctl_props_u64(&p, "Items"));
    snprintf(line, sizeof(line), "%.1f%%", ctl_props_double(&p, "Progress"));
    field("Progress", line);
    field_size("Transferred", ctl_props_u64(&p, "BytesTransferred"));
    field_time("Created", ctl_props_u64(&p, "CreateTime"));
    field_time("Started", ctl_props_u64(&p, "StartTime"));
    field_time("Finished", ctl_props_u64(&p, "FinishTime"));
    char elapsed[CTL_DURATION_MAX];
    ctl_format_duration(ctl_props_u64(&p, "ElapsedUSec"), elapsed);
    field("Elapsed", elapsed);
    char expiry[CTL_EXPIRY_MAX];
    ctl_format_expiry(ctl_props_str(&p, "State"), ctl_props_u64(&p, "ExpireTime"),
                      ctl_props_u64(&p, "ExpireProjectedTime"), ctl_props_str(&p, "KeptBy"),
                      expiry);
    field("Expires", expiry);
    if (ctl_props_u64(&p, "DetachedTime"))
        field_time("Detached", ctl_props_u64(&p, "DetachedTime"));
    if (ctl_props_bool(&p, "FutureDated"))
        field("Clock", "dated in the future: not counted as the policy's newest");
    field("Point in time", ctl_props_bool(&p, "PointInTime") ? "yes (oplog captured)" : "no");
    show_parts(bus, path);
    const char *verify = ctl_props_str(&p, "VerifyState");
    if (*verify) {
        char when[CTL_TIMESTAMP_MAX];
        ctl_format_timestamp(ctl_props_u64(&p, "VerifyTime"), when);
        snprintf(line, sizeof(line), "%s, %s%s%s", verify, when,
                 *ctl_props_str(&p, "VerifyError") ? ": " : "", ctl_props_str(&p, "VerifyError"));
        field("Verification", line);
    } else
        field("Verification", "never verified (" CTL_PROGRAM " verify TASK)");
    show_log(bus, id);
    return CTL_EXIT_OK;
}

static int show_restore(Ctl *ctl, sd_bus *bus, const char *path) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(ctl_props_done) CtlProps p = {0};
    int r = ctl_get_properties(bus, path, MONGOSNAP_BUS_RESTORE_INTERFACE, &p, &error);
    if (r < 0)
        return ctl_fail_bus("show", &error, r);
    const char *id = ctl_props_str(&p, "Id");
    char line[SHOW_LINE_MAX];
    printf("%s %s\n", ctl->utf8 ? "\xe2\x97\x8f" : "*", id);
    field("Kind", "restore");
    field("Snapshot", ctl_props_str(&p, "SourceSnapshot"));
    field("Target", ctl_props_str(&p, "Target"));
    field("Node", ctl_props_str(&p, "Node"));
    snprintf(line, sizeof(line), "%s%s%s", ctl_props_str(&p, "State"),
             *ctl_props_str(&p, "Error") ? ": " : "", ctl_props_str(&p, "Error"));
    field("State", line);
    field("Options", ctl_props_str(&p, "Options"));
    field_u64("Items", ctl_props_u64(&p, "Items"));
    snprintf(line, sizeof(line), "%.1f%%", ctl_props_double(&p, "Progress"));
    field("Progress", line);
    field_size("Written", ctl_props_u64(&p, "BytesTransferred"));
    field_time("Created", ctl_props_u64(&p, "CreateTime"));
    char elapsed[CTL_DURATION_MAX];
    ctl_format_duration(ctl_props_u64(&p, "ElapsedUSec"), elapsed);
    field("Elapsed", elapsed);
    show_log(bus, id);
    return CTL_EXIT_OK;
}

int verb_show(Ctl *ctl, int argc, char **argv) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL;
    CtlObject kind;
    int r = ctl_find_task(bus, argv[1], &path, &kind, &error);
    if (r < 0)
        return ctl_fail_bus("show", &error, r);
    ctl_pager_open(ctl);
    return kind == CTL_OBJECT_SNAPSHOT ? show_snapshot(ctl, bus, path)
                                       : show_restore(ctl, bus, path);
}

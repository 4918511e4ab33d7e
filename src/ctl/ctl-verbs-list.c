/* mongosnapctl's reading verbs: list-policies, list-snapshots, list-restores, update, status. */
#include <stdio.h>
#include <string.h>

#include "common/strv.h"
#include "common/timeutil.h"
#include "ctl-format.h"
#include "ctl-progress.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* status aligns its labels on the colon, as systemctl status does. */
#define STATUS_LABEL_WIDTH 12
#define NO_OBJECT_PATH "/"
#define STATUS_VALUE_MAX 1024

static int print_policies(Ctl *ctl, const CtlPolicyRow *rows, size_t n) {
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_array(&j);
        for (size_t i = 0; i < n; i++)
            ctl_json_policy_row(&j, &rows[i]);
        ctl_json_end_array(&j);
        return CTL_EXIT_OK;
    }
    _cleanup_(ctl_table_freep) CtlTable *t = NULL;
    int r = ctl_policy_table(rows, n, &t);
    if (r < 0)
        return ctl_fail_bus("list-policies", NULL, r);
    return ctl_print_table(ctl, t, "policy", "policies");
}

static int print_snapshots(Ctl *ctl, const CtlSnapshotRow *rows, size_t n) {
    _cleanup_(ctl_table_freep) CtlTable *t = NULL;
    int r = ctl_snapshot_table(rows, n, ctl->args.full, &t);
    if (r < 0)
        return ctl_fail_bus("list-snapshots", NULL, r);
    return ctl_print_table(ctl, t, "snapshot", "snapshots");
}

static int print_restores(Ctl *ctl, const CtlRestoreRow *rows, size_t n) {
    _cleanup_(ctl_table_freep) CtlTable *t = NULL;
    int r = ctl_restore_table(rows, n, &t);
    if (r < 0)
        return ctl_fail_bus("list-restores", NULL, r);
    return ctl_print_table(ctl, t, "restore", "restores");
}

static void json_snapshots(CtlJson *j, const CtlSnapshotRow *rows, size_t n) {
    ctl_json_begin_array(j);
    for (size_t i = 0; i < n; i++)
        ctl_json_snapshot_row(j, &rows[i]);
    ctl_json_end_array(j);
}

static void json_restores(CtlJson *j, const CtlRestoreRow *rows, size_t n) {
    ctl_json_begin_array(j);
    for (size_t i = 0; i < n; i++)
        ctl_json_restore_row(j, &rows[i]);
    ctl_json_end_array(j);
}

/* Call a Manager method and keep its reply; prints and returns the exit code on failure. */
static int manager_call(Ctl *ctl, const char *what, const char *method, sd_bus_message **reply,
                        const char *types, const char *arg) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = ctl_call(bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE, method, &error,
                     reply, types, arg);
    return r < 0 ? ctl_fail_bus(what, &error, r) : CTL_EXIT_OK;
}

int verb_list_policies(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = manager_call(ctl, "list-policies", "ListPolicies", &reply, NULL, NULL);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_free_ CtlPolicyRow *rows = NULL;
    size_t n = 0;
    int r = ctl_read_policy_rows(reply, &rows, &n);
    if (r < 0)
        return ctl_fail_bus("list-policies: unexpected reply", NULL, r);
    ctl_pager_open(ctl);
    return print_policies(ctl, rows, n);
}

int verb_list_snapshots(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code =
        manager_call(ctl, "list-snapshots", "ListSnapshots", &reply, "s", argc > 1 ? argv[1] : "");
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_free_ CtlSnapshotRow *rows = NULL;
    size_t n = 0;
    int r = ctl_read_snapshot_rows(reply, &rows, &n);
    if (r < 0)
        return ctl_fail_bus("list-snapshots: unexpected reply", NULL, r);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        json_snapshots(&j, rows, n);
        return CTL_EXIT_OK;
    }
    ctl_pager_open(ctl);
    return print_snapshots(ctl, rows, n);
}

int verb_list_restores(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = manager_call(ctl, "list-restores", "ListRestores", &reply, NULL, NULL);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_free_ CtlRestoreRow *rows = NULL;
    size_t n = 0;
    int r = ctl_read_restore_rows(reply, &rows, &n);
    if (r < 0)
        return ctl_fail_bus("list-restores: unexpected reply", NULL, r);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        json_restores(&j, rows, n);
        return CTL_EXIT_OK;
    }
    ctl_pager_open(ctl);
    return print_restores(ctl, rows, n);
}

int verb_update(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = manager_call(ctl, "update", "Update", &reply, NULL, NULL);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_free_ CtlSnapshotRow *snapshots = NULL;
    _cleanup_free_ CtlRestoreRow *restores = NULL;
    size_t n_snapshots = 0, n_restores = 0;
    int r = ctl_read_snapshot_rows(reply, &snapshots, &n_snapshots);
    if (r >= 0)
        r = ctl_read_restore_rows(reply, &restores, &n_restores);
    if (r < 0)
        return ctl_fail_bus("update: unexpected reply", NULL, r);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_key(&j, "snapshots");
        json_snapshots(&j, snapshots, n_snapshots);
        ctl_json_key(&j, "restores");
        json_restores(&j, restores, n_restores);
        ctl_json_end_object(&j);
        return CTL_EXIT_OK;
    }
    ctl_pager_open(ctl);
    code = print_snapshots(ctl, snapshots, n_snapshots);
    if (code != CTL_EXIT_OK)
        return code;
    fputc('\n', stdout);
    return print_restores(ctl, restores, n_restores);
}

/* Resync reads every store; a large S3 bucket takes a while. */
#define RESYNC_TIMEOUT_USEC (30ull * CTL_SEC_PER_MINUTE * CTL_USEC_PER_SEC)

int verb_resync(Ctl *ctl, int argc, char **argv) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    (void) sd_bus_set_method_call_timeout(bus, RESYNC_TIMEOUT_USEC);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    code = manager_call(ctl, "resync", "Resync", &reply, NULL, NULL);
    if (code != CTL_EXIT_OK)
        return code;
    uint32_t found, added, corrected, missing, finished;
    _cleanup_(ms_strv_freep) char **problems = NULL;
    int r = sd_bus_message_read(reply, "uuuuu", &found, &added, &corrected, &missing, &finished);
    if (r >= 0)
        r = sd_bus_message_read_strv(reply, &problems);
    if (r < 0)
        return ctl_fail_bus("resync: unexpected reply", NULL, r);
    size_t n_problems = 0;
    for (char **p = problems; p && *p; p++)
        n_problems++;
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_field_uint(&j, "found", found);
        ctl_json_field_uint(&j, "added", added);
        ctl_json_field_uint(&j, "corrected", corrected);
        ctl_json_field_uint(&j, "missing", missing);
        ctl_json_field_uint(&j, "removals_finished", finished);
        ctl_json_key(&j, "problems");
        ctl_json_begin_array(&j);
        for (char **p = problems; p && *p; p++)
            ctl_json_string(&j, *p);
        ctl_json_end_array(&j);
        ctl_json_end_object(&j);
    } else {
        printf("%u snapshot(s) found in the stores: %u added, %u corrected to completed, %u no "
               "longer in their store, %u removal(s) finished (cut-short removals and "
               "archives without a manifest)\n",
               found, added, corrected, missing, finished);
        for (char **p = problems; p && *p; p++)
            fprintf(stderr, "mongosnapctl: resync: %s\n", *p);
    }
    /* Something could not be read: the record may still be incomplete. */
    return n_problems > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}

/* ---- status ---- */

static void status_line(const char *label, const char *value) {
    printf("%*s: %s\n", STATUS_LABEL_WIDTH, label, value && *value ? value : CTL_NONE);
}

static void status_time(const char *label, uint64_t usec, const char *suffix) {
    char stamp[CTL_TIMESTAMP_MAX], relative[CTL_RELATIVE_MAX], line[STATUS_VALUE_MAX];
    if (usec == 0) {
        status_line(label, suffix && *suffix ? suffix : CTL_NONE);
        return;
    }
    ctl_format_timestamp(usec, stamp);
    ctl_format_relative(usec, ms_realtime_usec(), relative);
    snprintf(line, sizeof(line), "%s (%s)%s%s", stamp, relative, suffix && *suffix ? "; " : "",
             suffix ? suffix : "");
    status_line(label, line);
}

static void status_retention(const CtlProps *p) {
    static const char *const keys[] = {"KeepLast", "KeepDaily", "KeepWeekly", "KeepMonthly",
                                       "KeepManual"};
    char line[STATUS_VALUE_MAX] = "";
    size_t o = 0;
    for (size_t i = 0; i < ELEMENTSOF(keys) && o < sizeof(line); i++) {
        uint64_t v = ctl_props_u64(p, keys[i]);
        if (v)
            o += (size_t) snprintf(line + o, sizeof(line) - o, "%s%s=%llu", o ? " " : "", keys[i],
                                   (unsigned long long) v);
    }
    uint64_t max_age = ctl_props_u64(p, "MaxAgeUSec");
    if (max_age && o < sizeof(line)) {
        char span[CTL_DURATION_MAX];
        ctl_format_duration(max_age, span);
        snprintf(line + o, sizeof(line) - o, "%sMaxAge=%s", o ? " " : "", span);
    }
    status_line("Retention", line[0] ? line : "keep every snapshot");
}

static void status_strv(const char *label, const CtlProps *p, const char *name) {
    const CtlProp *x = ctl_props_find(p, name);
    if (!x || x->type != 'a' || !x->strv || !x->strv[0])
        return;
    char line[STATUS_VALUE_MAX] = "";
    size_t o = 0;
    for (char **s = x->strv; *s && o < sizeof(line); s++)
        o += (size_t) snprintf(line + o, sizeof(line) - o, "%s%s", o ? " " : "", *s);
    status_line(label, line);
}

/* Point-in-time recovery: the follower, and the instants a restore can reach with the gaps
 * between them. */
static void status_point_in_time(const CtlProps *p) {
    if (!ctl_props_bool(p, "PointInTime"))
        return;
    char line[STATUS_VALUE_MAX], span[CTL_DURATION_MAX], lag[CTL_DURATION_MAX];
    ctl_format_duration(ctl_props_u64(p, "SliceUSec"), span);
    uint64_t last = ctl_props_u64(p, "LastSliceUSec");
    ctl_format_duration(ctl_props_u64(p, "FollowerLagUSec"), lag);
    if (last) {
        char relative[CTL_RELATIVE_MAX];
        ctl_format_relative(last, ms_realtime_usec(), relative);
        snprintf(line, sizeof(line), "%s, a slice every %s (%s); last slice %s, lag %s",
                 ctl_props_str(p, "Follower"), span, ctl_props_str(p, "SliceCompression"),
                 relative, lag);
    } else
        snprintf(line, sizeof(line), "%s, a slice every %s (%s); no slice yet",
                 ctl_props_str(p, "Follower"), span, ctl_props_str(p, "SliceCompression"));
    status_line("Point-in-time", line);
    if (*ctl_props_str(p, "FollowerError"))
        status_line("Follower error", ctl_props_str(p, "FollowerError"));
    const CtlProp *x = ctl_props_find(p, "Restorable");
    if (!x || x->type != 'a' || !x->strv || !x->strv[0]) {
        status_line("Restorable", "none yet (a range begins at the end of a snapshot the "
                                  "follower's slices reach from)");
        return;
    }
    /* "A – B, C – D (gaps: B – C)": each interval is "from/to". */
    char ranges[STATUS_VALUE_MAX] = "", gaps[STATUS_VALUE_MAX] = "";
    size_t o = 0, g = 0;
    const char *prev_to = NULL;
    for (char **s = x->strv; *s && o < sizeof(ranges); s++) {
        const char *slash = strchr(*s, '/');
        if (!slash)
            continue;
        o += (size_t) snprintf(ranges + o, sizeof(ranges) - o, "%s%.*s – %s", o ? ", " : "",
                               (int) (slash - *s), *s, slash + 1);
        if (prev_to && g < sizeof(gaps))
            g += (size_t) snprintf(gaps + g, sizeof(gaps) - g, "%s%s – %.*s", g ? ", " : "",
                                   prev_to, (int) (slash - *s), *s);
        prev_to = slash + 1;
    }
    if (g)
        snprintf(line, sizeof(line), "%s (gap%s %s)", ranges, strchr(gaps, ',') ? "s" : "", gaps);
    else
        snprintf(line, sizeof(line), "%s", ranges);
    status_line("Restorable", line);
}

static void status_task(Ctl *ctl, const CtlProps *task) {
    CtlProgress progress = {
        .state = ctl_props_str(task, "State"),
        .has_percent = true,
        .percent = ctl_props_double(task, "Progress"),
        .items = ctl_props_u64(task, "Items"),
        .items_total = ctl_props_u64(task, "ItemsTotal"),
        .bytes = ctl_props_u64(task, "BytesTransferred"),
        .elapsed_usec = ctl_props_u64(task, "ElapsedUSec"),
        .phase = ctl_props_str(task, "Phase"),
    };
    char bar[CTL_PROGRESS_LINE_MAX], line[STATUS_VALUE_MAX];
    ctl_progress_line(&progress, 0, bar, sizeof(bar));
    snprintf(line, sizeof(line), "%s (%s) %s", ctl_props_str(task, "Id"), progress.state, bar);
    status_line("Task", line);
}

static void print_policy_status(Ctl *ctl, const CtlProps *p, const CtlProps *task) {
    char line[STATUS_VALUE_MAX];
    printf("%s %s\n", ctl->utf8 ? "\xe2\x97\x8f" : "*", ctl_props_str(p, "Name"));
    status_line("State", ctl_props_str(p, "State"));
    status_line("Source", ctl_props_str(p, "Source"));
    status_line("Credential", ctl_props_str(p, "Credential"));
    status_line("Schedule",
                *ctl_props_str(p, "Schedule") ? ctl_props_str(p, "Schedule") : "on request only");
    status_line("Store", ctl_props_str(p, "Store"));
    snprintf(line, sizeof(line), "%s, level %lld, %llu collections in parallel",
             ctl_props_str(p, "Compression"), (long long) ctl_props_u64(p, "CompressionLevel"),
             (unsigned long long) ctl_props_u64(p, "ParallelCollections"));
    status_line("Compression", line);
    status_strv("Include", p, "IncludeNamespaces");
    status_strv("Exclude", p, "ExcludeNamespaces");
    status_retention(p);
    if (*ctl_props_str(p, "RetentionHeld")) {
        snprintf(line, sizeof(line), "would remove %s at once; nothing removed. Confirm with "
                 CTL_PROGRAM " edit %s --force",
                 ctl_props_str(p, "RetentionHeld"), ctl_props_str(p, "Name"));
        status_line("Held", line);
    }
    if (*ctl_props_str(p, "Problem"))
        status_line("Problem", ctl_props_str(p, "Problem"));
    if (*ctl_props_str(p, "Key")) {
        snprintf(line, sizeof(line), "%s, key from credential %s", ctl_props_str(p, "Cipher"),
                 ctl_props_str(p, "Key"));
        status_line("Encryption", line);
    }
    status_time("Last run", ctl_props_u64(p, "LastRun"), ctl_props_str(p, "LastResult"));
    status_time("Next run", ctl_props_u64(p, "NextRun"), NULL);
    status_point_in_time(p);
    if (*ctl_props_str(p, "Drift"))
        status_line("Drift", ctl_props_str(p, "Drift"));
    if (task)
        status_task(ctl, task);
}

static int status_policy(Ctl *ctl, const char *name) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *path = NULL, *what = NULL;
    if (asprintf(&what, "status %s", name) < 0)
        return ctl_fail(CTL_EXIT_FAILED, "out of memory");
    _cleanup_(ctl_props_done) CtlProps props = {0}, task = {0};
    int r = ctl_find_policy(bus, name, &path, &error);
    if (r >= 0)
        r = ctl_get_properties(bus, path, MONGOSNAP_BUS_POLICY_INTERFACE, &props, &error);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    const char *running = ctl_props_str(&props, "RunningSnapshot");
    bool has_task = *running && strcmp(running, NO_OBJECT_PATH) != 0;
    /* The task may end between the two calls: then there is simply none to show. */
    if (has_task &&
        ctl_get_properties(bus, running, MONGOSNAP_BUS_SNAPSHOT_INTERFACE, &task, NULL) < 0)
        has_task = false;
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_props(&j, &props);
        ctl_json_key(&j, "running_task");
        if (has_task) {
            ctl_json_begin_object(&j);
            ctl_json_props(&j, &task);
            ctl_json_end_object(&j);
        } else
            ctl_json_null(&j);
        ctl_json_end_object(&j);
        return CTL_EXIT_OK;
    }
    ctl_pager_open(ctl);
    print_policy_status(ctl, &props, has_task ? &task : NULL);
    return CTL_EXIT_OK;
}

static void print_agent_summary(const CtlProps *agent, const CtlPolicyRow *rows, size_t n) {
    size_t stopped = 0;
    for (size_t i = 0; i < n; i++)
        stopped += strcmp(rows[i].state, "stopped") == 0;
    char line[STATUS_VALUE_MAX];
    status_line("Version", ctl_props_str(agent, "Version"));
    status_line("Node", ctl_props_str(agent, "Node"));
    status_line("Cluster", *ctl_props_str(agent, "Cluster") ? ctl_props_str(agent, "Cluster")
                                                             : "none (this agent works alone)");
    snprintf(line, sizeof(line), "%zu (%zu active, %zu stopped)", n, n - stopped, stopped);
    status_line("Policies", line);
    const CtlProp *errors = ctl_props_find(agent, "PolicyErrors");
    bool first = true;
    for (char **e = errors && errors->type == 'a' ? errors->strv : NULL; e && *e; e++) {
        status_line(first ? "PolicyErrors" : "", *e);
        first = false;
    }
    /* A policy that is loaded but cannot run as written is an error of the policies too. */
    for (size_t i = 0; i < n; i++) {
        if (!*rows[i].problem)
            continue;
        char quoted[STATUS_VALUE_MAX];
        snprintf(quoted, sizeof(quoted), "policy '%s'", rows[i].name);
        if (strstr(rows[i].problem, quoted))
            snprintf(line, sizeof(line), "%s", rows[i].problem);
        else
            snprintf(line, sizeof(line), "%s: %s", rows[i].name, rows[i].problem);
        status_line(first ? "PolicyErrors" : "", line);
        first = false;
    }
    if (first)
        status_line("PolicyErrors", "none");
}

static int status_agent(Ctl *ctl) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = manager_call(ctl, "status", "ListPolicies", &reply, NULL, NULL);
    if (code != CTL_EXIT_OK)
        return code;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(ctl_props_done) CtlProps agent = {0};
    _cleanup_free_ CtlPolicyRow *rows = NULL;
    size_t n = 0;
    int r = ctl_get_properties(ctl->bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE,
                               &agent, &error);
    if (r >= 0)
        r = ctl_read_policy_rows(reply, &rows, &n);
    if (r < 0)
        return ctl_fail_bus("status", &error, r);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_props(&j, &agent);
        ctl_json_key(&j, "policies");
        ctl_json_begin_array(&j);
        for (size_t i = 0; i < n; i++)
            ctl_json_policy_row(&j, &rows[i]);
        ctl_json_end_array(&j);
        ctl_json_end_object(&j);
        return CTL_EXIT_OK;
    }
    ctl_pager_open(ctl);
    print_agent_summary(&agent, rows, n);
    fputc('\n', stdout);
    return print_policies(ctl, rows, n);
}

int verb_status(Ctl *ctl, int argc, char **argv) {
    return argc > 1 ? status_policy(ctl, argv[1]) : status_agent(ctl);
}

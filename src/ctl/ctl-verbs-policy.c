/* mongosnapctl's policy verbs: snapshot, stop, start, delete, rebuild, edit, create-policy. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* Rebuild answers only once the running worker has stopped and a fresh snapshot is queued. */
#define REBUILD_TIMEOUT_USEC (5 * CTL_SEC_PER_MINUTE * CTL_USEC_PER_SEC)
#define CTL_LINE_MAX 1024

/* After a change: one line on standard output saying what changed (unless --quiet or --json),
 * then the policy's next run, and on standard error why it cannot run, if it cannot. */
static void report_policy(Ctl *ctl, const char *path, const char *fmt, ...) _printf_(3, 4);
static void report_policy(Ctl *ctl, const char *path, const char *fmt, ...) {
    if (ctl->args.quiet || ctl->args.json)
        return;
    char line[CTL_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    _cleanup_(ctl_props_done) CtlProps props = {0};
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    bool have = path && ctl_get_properties(ctl->bus, path, MONGOSNAP_BUS_POLICY_INTERFACE, &props,
                                           &error) >= 0;
    uint64_t next = have ? ctl_props_u64(&props, "NextRun") : 0;
    if (next > 0) {
        char when[CTL_TIMESTAMP_MAX];
        ctl_format_timestamp(next, when);
        printf("%s; next run %s.\n", line, when);
    } else
        printf("%s.\n", line);
    const char *problem = have ? ctl_props_str(&props, "Problem") : "";
    if (*problem)
        fprintf(stderr, CTL_PROGRAM ": warning: it cannot run as written: %s\n", problem);
}

/* The object path of policy name (NULL when it cannot be found: only the report suffers). */
static char *policy_path_of(Ctl *ctl, const char *name) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    char *path = NULL;
    return ctl->bus && ctl_find_policy(ctl->bus, name, &path, &error) >= 0 ? path : NULL;
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
    int code = ctl->args.scheduled ? ctl_object_call(ctl, CTL_OBJECT_POLICY, "snapshot", argv[1],
                                                 "TakeSnapshotWithOptions", &reply, NULL, "a{sv}", 1,
                                                 "scheduled", "b", 1)
                                   : ctl_object_call(ctl, CTL_OBJECT_POLICY, "snapshot", argv[1], "TakeSnapshot", &reply,
                                                 NULL, NULL);
    return code != CTL_EXIT_OK ? code : task_started(ctl, "snapshot", reply);
}

int verb_stop(Ctl *ctl, int argc, char **argv) {
    int code = ctl_object_call(ctl, CTL_OBJECT_POLICY, "stop", argv[1], "Stop", NULL, NULL, NULL);
    if (code == CTL_EXIT_OK && !ctl->args.quiet && !ctl->args.json)
        printf("Policy %s stopped: its timer is off and a running snapshot was stopped; its "
               "snapshots are kept (mongosnapctl start %s resumes it).\n",
               argv[1], argv[1]);
    return code;
}

int verb_start(Ctl *ctl, int argc, char **argv) {
    int code = ctl_object_call(ctl, CTL_OBJECT_POLICY, "start", argv[1], "Start", NULL, NULL, NULL);
    if (code == CTL_EXIT_OK) {
        _cleanup_free_ char *path = policy_path_of(ctl, argv[1]);
        report_policy(ctl, path, "Policy %s started", argv[1]);
    }
    return code;
}

int verb_delete(Ctl *ctl, int argc, char **argv) {
    int code =
        ctl_object_call(ctl, CTL_OBJECT_POLICY, "delete", argv[1], "Delete", NULL, NULL, "b", (int) ctl->args.purge_remote);
    if (code == CTL_EXIT_OK && !ctl->args.quiet && !ctl->args.json)
        printf("Policy %s deleted: its file and timer are gone and its snapshots in local stores "
               "removed; %s\n",
               argv[1],
               ctl->args.purge_remote
                   ? "its snapshots in remote stores are being removed too."
                   : "its snapshots in remote stores are kept, listed and restorable, and no "
                     "policy's retention removes them.");
    return code;
}

int verb_rebuild(Ctl *ctl, int argc, char **argv) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    (void) sd_bus_set_method_call_timeout(bus, REBUILD_TIMEOUT_USEC);
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    code = ctl_object_call(ctl, CTL_OBJECT_POLICY, "rebuild", argv[1], "Rebuild", &reply, NULL, NULL);
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
    char what[CTL_WHAT_MAX];
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
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    char changed[CTL_LINE_MAX] = "";
    for (int i = 2, o = 0; i < argc && (size_t) o < sizeof(changed); i++)
        o += snprintf(changed + o, sizeof(changed) - (size_t) o, "%s%s", i > 2 ? ", " : "",
                      argv[i]);
    /* A Source= may hold a user name and host: shown as given (no password: those are refused). */
    if (argc > 2)
        report_policy(ctl, path, "Policy %s changed: %s", argv[1], changed);
    else
        report_policy(ctl, path, "Policy %s: the held retention pass is confirmed and runs now",
                      argv[1]);
    return CTL_EXIT_OK;
}

int verb_create_policy(Ctl *ctl, int argc, char **argv) {
    int code = check_assignments(argc - 2, argv + 2);
    if (code != CTL_EXIT_OK)
        return code;
    sd_bus *bus;
    code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[CTL_WHAT_MAX];
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
    report_policy(ctl, path, "Policy %s created", argv[1]);
    return CTL_EXIT_OK;
}

/* ---- set-credential: a secret into the agent's credential store ---- */

#define SECRET_MAX_BYTES (64 * 1024)

/* The secret from standard input: a line typed without echo on a terminal, else everything
 * (one final newline dropped, as `echo` adds it). */
static int read_secret(const char *name, char *buf, size_t size, size_t *ret_len) {
    size_t len = 0;
    if (isatty(STDIN_FILENO)) {
        struct termios old, quiet;
        fprintf(stderr, "Secret for %s: ", name);
        fflush(stderr);
        bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
        if (restore) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t) ECHO;
            (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        ssize_t n = read(STDIN_FILENO, buf, size);
        if (restore)
            (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
        if (n < 0)
            return -errno;
        len = (size_t) n;
    } else
        for (;;) {
            if (len == size)
                return -EFBIG;
            ssize_t n = read(STDIN_FILENO, buf + len, size - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            if (n == 0)
                break;
            len += (size_t) n;
        }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    *ret_len = len;
    return 0;
}

int verb_set_credential(Ctl *ctl, int argc, char **argv) {
    const char *name = argv[1];
    char secret[SECRET_MAX_BYTES];
    size_t len = 0;
    int r = read_secret(name, secret, sizeof(secret), &len);
    if (r < 0 || len == 0) {
        explicit_bzero(secret, sizeof(secret));
        return ctl_fail(CTL_EXIT_USAGE, "set-credential %s: %s", name,
                        r == -EFBIG ? "the secret is larger than 64 KiB"
                        : r < 0     ? strerror(-r)
                                    : "no secret on standard input");
    }
    /* A sealed memfd: the secret never travels in a D-Bus message body. */
    _cleanup_close_ int fd = memfd_create("mongosnap-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    bool ok = fd >= 0 && write(fd, secret, len) == (ssize_t) len &&
              fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0;
    explicit_bzero(secret, sizeof(secret));
    if (!ok)
        return ctl_fail(CTL_EXIT_FAILED, "set-credential %s: cannot pass the secret: %s", name,
                        strerror(errno));
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "set-credential %s", name);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    r = ctl_call(bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE, "SetCredential", &error,
                 NULL, "sh", name, fd);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    if (!ctl->args.quiet)
        printf("Credential %s stored; tasks use it from now on (no restart needed).\n", name);
    return CTL_EXIT_OK;
}

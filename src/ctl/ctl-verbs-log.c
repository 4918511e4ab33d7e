/* mongosnapctl log: a policy's or a task's Event Log through GetLog, and -f to follow it. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

#define LOG_ENTRY "(sta{ss})"
#define POLICY_MATCH "MONGOSNAP_POLICY="
#define TASK_MATCH "MONGOSNAP_TASK="
#define FIELD_PREFIX "MONGOSNAP_"
/* An entry has about a dozen fields (docs/dbus-api.md); more are ignored. */
#define LOG_FIELDS_MAX 32
/* -f asks again this often, as journalctl -f would be woken. */
#define FOLLOW_INTERVAL_USEC CTL_USEC_PER_SEC
/* -f without -n starts with this many entries, as journalctl -f does. */
#define FOLLOW_LINES_DEFAULT 10
#define FIELD_KEY_MAX 64

typedef struct LogEntry {
    const char *cursor;
    uint64_t realtime;
    size_t n_fields;
    const char *keys[LOG_FIELDS_MAX];
    const char *values[LOG_FIELDS_MAX];
} LogEntry;

static const char *entry_field(const LogEntry *e, const char *key) {
    for (size_t i = 0; i < e->n_fields; i++)
        if (strcmp(e->keys[i], key) == 0)
            return e->values[i];
    return NULL;
}

/* "MONGOSNAP_ELAPSED_USEC" -> "elapsed_usec", "MESSAGE_ID" -> "message_id". */
static void field_key(const char *field, char buf[FIELD_KEY_MAX]) {
    if (strncmp(field, FIELD_PREFIX, strlen(FIELD_PREFIX)) == 0)
        field += strlen(FIELD_PREFIX);
    size_t i = 0;
    for (; field[i] && i + 1 < FIELD_KEY_MAX; i++)
        buf[i] = (char) tolower((unsigned char) field[i]);
    buf[i] = '\0';
}

static void print_entry_json(CtlJson *j, const LogEntry *e) {
    ctl_json_begin_object(j);
    ctl_json_field_string(j, "cursor", e->cursor);
    ctl_json_field_time(j, "time", e->realtime);
    for (size_t i = 0; i < e->n_fields; i++) {
        char key[FIELD_KEY_MAX];
        field_key(e->keys[i], key);
        ctl_json_field_string(j, key, e->values[i]);
    }
    ctl_json_end_object(j);
}

static void print_entry_text(const LogEntry *e) {
    char stamp[CTL_TIMESTAMP_MAX];
    ctl_format_timestamp(e->realtime, stamp);
    const char *who = entry_field(e, "MONGOSNAP_TASK");
    if (!who)
        who = entry_field(e, "MONGOSNAP_POLICY");
    const char *message = entry_field(e, "MESSAGE");
    if (!message)
        message = "";
    /* The journal's message stands alone, so it often names its task already: name it once. */
    size_t who_len = who ? strlen(who) : 0;
    if (who && strncmp(message, who, who_len) == 0 && strncmp(message + who_len, ": ", 2) == 0)
        message += who_len + 2;
    if (who && strstr(message, who))
        printf("%s %s\n", stamp, message);
    else
        printf("%s %s: %s\n", stamp, who ? who : "mongosnapd", message);
}

static int read_fields(sd_bus_message *m, LogEntry *e) {
    int r = sd_bus_message_enter_container(m, 'a', "{ss}");
    while (r >= 0) {
        const char *key, *value;
        r = sd_bus_message_read(m, "{ss}", &key, &value);
        if (r <= 0)
            break;
        if (e->n_fields < LOG_FIELDS_MAX) {
            e->keys[e->n_fields] = key;
            e->values[e->n_fields++] = value;
        }
    }
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

/* Print every entry of a GetLog reply (unless !show); *cursor becomes the last entry's. */
static int print_entries(Ctl *ctl, CtlJson *j, sd_bus_message *reply, bool show, char **cursor,
                         size_t *ret_n) {
    size_t n = 0;
    int r = sd_bus_message_enter_container(reply, 'a', LOG_ENTRY);
    while (r >= 0) {
        LogEntry e = {0};
        r = sd_bus_message_enter_container(reply, 'r', "sta{ss}");
        if (r <= 0)
            break;
        r = sd_bus_message_read(reply, "st", &e.cursor, &e.realtime);
        if (r >= 0)
            r = read_fields(reply, &e);
        if (r >= 0)
            r = sd_bus_message_exit_container(reply);
        if (r < 0)
            break;
        if (show && ctl->args.json)
            print_entry_json(j, &e);
        else if (show)
            print_entry_text(&e);
        free(*cursor);
        if (!(*cursor = strdup(e.cursor)))
            return -ENOMEM;
        n++;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(reply);
    *ret_n = n;
    return r;
}

static int get_log(Ctl *ctl, const char *match, const char *after, unsigned max,
                   sd_bus_message **reply, sd_bus_error *error) {
    return ctl_call(ctl->bus, MONGOSNAP_BUS_PATH, MONGOSNAP_BUS_MANAGER_INTERFACE, "GetLog", error,
                    reply, "ssu", match, after, (uint32_t) max);
}

/* A policy's log when a policy of that name is loaded; a task's when a snapshot or restore has
 * that id; else a policy's all the same (a deleted policy's Event Log is still in the journal,
 * under its name). */
static int log_match(Ctl *ctl, const char *name, char **ret, sd_bus_error *error) {
    _cleanup_free_ char *path = NULL;
    int r = ctl_find_policy(ctl->bus, name, &path, error);
    if (r < 0 && r != -ENOENT)
        return r;
    sd_bus_error_free(error);
    bool task = false;
    if (r < 0) {
        _cleanup_free_ char *task_path = NULL;
        CtlObject kind;
        task = ctl_find_task(ctl->bus, name, &task_path, &kind, error) >= 0;
        sd_bus_error_free(error);
    }
    return asprintf(ret, "%s%s", task ? TASK_MATCH : POLICY_MATCH, name) < 0 ? -ENOMEM : 0;
}

static void sleep_interruptibly(uint64_t usec) {
    struct timespec ts = {
        .tv_sec = (time_t) (usec / CTL_USEC_PER_SEC),
        .tv_nsec = (long) (usec % CTL_USEC_PER_SEC * CTL_USEC_PER_MSEC),
    };
    /* SIGINT ends the sleep early (EINTR); the caller sees the flag. */
    (void) nanosleep(&ts, NULL);
}

static int follow(Ctl *ctl, const char *what, const char *match, char **cursor) {
    ctl_catch_sigint();
    while (!ctl_sigint_received()) {
        fflush(stdout);
        sleep_interruptibly(FOLLOW_INTERVAL_USEC);
        if (ctl_sigint_received())
            break;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        CtlJson j;
        ctl_json_init(&j, stdout);
        size_t n;
        int r = get_log(ctl, match, *cursor ? *cursor : "", 0, &reply, &error);
        if (r >= 0)
            r = print_entries(ctl, &j, reply, true, cursor, &n);
        if (r < 0)
            return ctl_fail_bus(what, &error, r);
    }
    /* Ctrl-C is how one stops following: not a failure. */
    return CTL_EXIT_OK;
}

int verb_log(Ctl *ctl, int argc, char **argv) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    char what[CTL_WHAT_MAX];
    snprintf(what, sizeof(what), "log %s", argv[1]);
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    _cleanup_free_ char *match = NULL, *cursor = NULL;
    unsigned lines =
        ctl->args.lines_set ? ctl->args.lines : (ctl->args.follow ? FOLLOW_LINES_DEFAULT : 0);
    /* GetLog's 0 means "all"; -n 0 means none, but -f still needs the newest cursor. */
    bool none = ctl->args.lines_set && lines == 0;
    int r = log_match(ctl, argv[1], &match, &error);
    if (r >= 0)
        r = get_log(ctl, match, "", none ? 1 : lines, &reply, &error);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    if (!ctl->args.follow)
        ctl_pager_open(ctl);
    CtlJson j;
    ctl_json_init(&j, stdout);
    /* Followed JSON is one object per line, so that a reader can act on each as it comes. */
    bool array = ctl->args.json && !ctl->args.follow;
    if (array)
        ctl_json_begin_array(&j);
    size_t n = 0;
    r = print_entries(ctl, &j, reply, !none, &cursor, &n);
    if (array)
        ctl_json_end_array(&j);
    if (r < 0)
        return ctl_fail_bus(what, NULL, r);
    if ((n == 0 || none) && !ctl->args.json && !ctl->args.quiet && !ctl->args.follow)
        printf("-- No entries --\n");
    return ctl->args.follow ? follow(ctl, what, match, &cursor) : CTL_EXIT_OK;
}

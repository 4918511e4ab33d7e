/* mongosnapctl's output: the terminal, the pager, tables with their legend, rows as JSON. */
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl-format.h"
#include "ctl.h"

/* When the terminal does not say how wide it is. */
#define DEFAULT_COLUMNS 80
/* systemd's pager flags: quit if one screen, raw colours, chop long lines, no init, long
 * prompt, quit on Ctrl-C. */
#define DEFAULT_LESS_FLAGS "FRSXMK"
#define PERCENT_CELL_MAX 16
#define NUMBER_CELL_MAX 24
#define COPY_BUFFER 4096

static pid_t pager_pid;

static size_t terminal_columns(int fd) {
    const char *env = getenv("COLUMNS");
    if (env && *env) {
        char *end;
        unsigned long n = strtoul(env, &end, 10);
        if (*end == '\0' && n > 0)
            return n;
    }
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return DEFAULT_COLUMNS;
}

void ctl_output_init(Ctl *ctl) {
    setlocale(LC_ALL, "");
    /* Numbers stay "45.0" whatever the locale: JSON and scripts parse them. */
    setlocale(LC_NUMERIC, "C");
    ctl->utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
    ctl->stdout_tty = isatty(STDOUT_FILENO);
    ctl->stderr_tty = isatty(STDERR_FILENO);
    ctl->columns = ctl->stdout_tty ? terminal_columns(STDOUT_FILENO) : 0;
    ctl->stderr_columns = ctl->stderr_tty ? terminal_columns(STDERR_FILENO) : 0;
}

/* The pager's side of the pipe: never returns. */
static void pager_exec(int read_fd, const char *pager) {
    if (dup2(read_fd, STDIN_FILENO) < 0)
        _exit(EXIT_FAILURE);
    close(read_fd);
    const char *less = getenv("SYSTEMD_LESS");
    setenv("LESS", less ? less : DEFAULT_LESS_FLAGS, 1);
    /* Gone with us if we die before closing the pipe. */
    (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (pager)
        execl("/bin/sh", "sh", "-c", pager, (char *) NULL);
    else {
        execlp("less", "less", (char *) NULL);
        execlp("more", "more", (char *) NULL);
    }
    /* No pager at all: pass the text through rather than lose it. */
    char buf[COPY_BUFFER];
    ssize_t n;
    while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0)
        if (write(STDOUT_FILENO, buf, (size_t) n) != n)
            break;
    _exit(EXIT_SUCCESS);
}

void ctl_pager_open(Ctl *ctl) {
    if (!ctl->args.pager || ctl->args.json || !ctl->stdout_tty || pager_pid > 0)
        return;
    const char *pager = getenv("SYSTEMD_PAGER");
    if (!pager)
        pager = getenv("PAGER");
    if (pager && (!*pager || strcmp(pager, "cat") == 0))
        return;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        pager_exec(fds[0], pager);
    }
    close(fds[0]);
    if (pid > 0 && dup2(fds[1], STDOUT_FILENO) >= 0)
        pager_pid = pid;
    close(fds[1]);
}

void ctl_pager_close(void) {
    if (pager_pid <= 0)
        return;
    fflush(stdout);
    /* The pager reads to the end of the pipe: close our side by replacing stdout. */
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd >= 0) {
        (void) dup2(null_fd, STDOUT_FILENO);
        close(null_fd);
    }
    (void) waitpid(pager_pid, NULL, 0);
    pager_pid = 0;
}

/* text on lines of at most width columns (0: one line), broken at spaces; ASCII text. */
static void print_wrapped(const char *text, size_t width) {
    size_t len = strlen(text);
    if (width == 0 || len <= width) {
        puts(text);
        return;
    }
    while (len > width) {
        size_t cut = width;
        while (cut > 0 && text[cut] != ' ')
            cut--;
        if (cut == 0)
            cut = width; /* one word longer than the line */
        printf("%.*s\n", (int) cut, text);
        text += cut;
        len -= cut;
        while (*text == ' ') {
            text++;
            len--;
        }
    }
    if (len > 0)
        puts(text);
}

int ctl_print_table(Ctl *ctl, const CtlTable *t, const char *noun_singular,
                    const char *noun_plural) {
    CtlTableStyle style = {.width = ctl->columns, .header = ctl->args.legend, .utf8 = ctl->utf8};
    _cleanup_free_ char *text = NULL;
    int r = ctl_table_render(t, &style, &text);
    if (r < 0)
        return ctl_fail(CTL_EXIT_FAILED, "cannot format the table: %s", strerror(-r));
    fputs(text, stdout);
    size_t n = ctl_table_n_rows(t);
    char hidden[256];
    size_t n_hidden = ctl_table_hidden(t, &style, hidden, sizeof(hidden));
    if (ctl->args.legend && n_hidden > 0) {
        char legend[512];
        snprintf(legend, sizeof(legend),
                 "%zu %s listed (not shown for the terminal's width: %s; see -l or " CTL_PROGRAM
                 " show TASK).",
                 n, n == 1 ? noun_singular : noun_plural, hidden);
        putchar('\n');
        print_wrapped(legend, ctl->columns);
    } else if (ctl->args.legend)
        printf("\n%zu %s listed.\n", n, n == 1 ? noun_singular : noun_plural);
    return CTL_EXIT_OK;
}

/* ---- JSON of rows ---- */

void ctl_json_policy_row(CtlJson *j, const CtlPolicyRow *r) {
    ctl_json_begin_object(j);
    ctl_json_field_string(j, "name", r->name);
    ctl_json_field_string(j, "path", r->path);
    ctl_json_field_string(j, "state", r->state);
    ctl_json_field_string(j, "source", r->source);
    ctl_json_field_string(j, "schedule", r->schedule);
    ctl_json_field_string(j, "store", r->store);
    ctl_json_field_time(j, "last_run", r->last_run);
    ctl_json_field_string(j, "last_result", r->last_result);
    ctl_json_field_time(j, "next_run", r->next_run);
    ctl_json_field_string(j, "problem", r->problem);
    ctl_json_end_object(j);
}

void ctl_json_task_core(CtlJson *j, const CtlTaskCore *c) {
    ctl_json_field_string(j, "id", c->id);
    ctl_json_field_string(j, "node", c->node);
    ctl_json_field_string(j, "task_log", c->task_log);
    ctl_json_field_uint(j, "elapsed_usec", c->elapsed_usec);
    ctl_json_field_uint(j, "items", c->items);
    ctl_json_field_uint(j, "items_total", c->items_total);
    ctl_json_field_double(j, "progress", c->progress);
    ctl_json_field_time(j, "create_time", c->create_time);
    ctl_json_field_string(j, "state", c->state);
    ctl_json_field_string(j, "error", c->error);
    ctl_json_field_string(j, "path", c->path);
}

void ctl_json_snapshot_row(CtlJson *j, const CtlSnapshotRow *r) {
    ctl_json_begin_object(j);
    ctl_json_task_core(j, &r->core);
    ctl_json_field_string(j, "policy", r->policy);
    ctl_json_field_string(j, "file_name", r->file_name);
    ctl_json_field_string(j, "download_address", r->download_address);
    ctl_json_field_time(j, "expire_time", r->expire_time);
    ctl_json_field_uint(j, "bytes_transferred", r->bytes);
    ctl_json_field_string(j, "verify_state", r->verify_state);
    ctl_json_field_uint(j, "seq", r->seq);
    ctl_json_field_string(j, "origin", r->origin);
    ctl_json_field_string(j, "kept_by", r->kept_by);
    ctl_json_field_time(j, "expire_projected", r->expire_projected);
    ctl_json_field_bool(j, "future_dated", r->future_dated);
    ctl_json_end_object(j);
}

void ctl_json_restore_row(CtlJson *j, const CtlRestoreRow *r) {
    ctl_json_begin_object(j);
    ctl_json_task_core(j, &r->core);
    ctl_json_field_string(j, "snapshot", r->snapshot);
    ctl_json_field_string(j, "target", r->target);
    ctl_json_end_object(j);
}

/* ---- tables of rows ---- */

/* Text for the cells that hold numbers, "" (shown as CTL_NONE) when there is nothing. */
typedef struct CellText {
    char progress[PERCENT_CELL_MAX];
    char items[NUMBER_CELL_MAX];
    char bytes[CTL_SIZE_MAX];
    char elapsed[CTL_DURATION_MAX];
    char created[CTL_TIMESTAMP_MAX];
    char expires[CTL_EXPIRY_MAX];
    char last_run[CTL_TIMESTAMP_MAX];
    char next_run[CTL_TIMESTAMP_MAX];
} CellText;

static void format_task_cells(CellText *c, double progress, uint64_t items, uint64_t bytes,
                              uint64_t elapsed_usec, uint64_t created) {
    snprintf(c->progress, sizeof(c->progress), "%.1f%%", progress);
    snprintf(c->items, sizeof(c->items), "%llu", (unsigned long long) items);
    c->bytes[0] = c->elapsed[0] = '\0';
    if (bytes > 0)
        ctl_format_size(bytes, c->bytes);
    if (elapsed_usec > 0)
        ctl_format_duration(elapsed_usec, c->elapsed);
    ctl_format_timestamp(created, c->created);
}

static const CtlColumn policy_columns[] = {
    {"POLICY", CTL_ALIGN_LEFT, false},   {"STATE", CTL_ALIGN_LEFT, false},
    {"SCHEDULE", CTL_ALIGN_LEFT, false}, {"LAST RUN", CTL_ALIGN_LEFT, false},
    {"RESULT", CTL_ALIGN_LEFT, true},    {"NEXT RUN", CTL_ALIGN_LEFT, false},
    {"STORE", CTL_ALIGN_LEFT, true},     {"SOURCE", CTL_ALIGN_LEFT, true},
    {"PROBLEM", CTL_ALIGN_LEFT, true},
};

int ctl_policy_table(const CtlPolicyRow *rows, size_t n, CtlTable **ret) {
    _cleanup_(ctl_table_freep) CtlTable *t =
        ctl_table_new(policy_columns, ELEMENTSOF(policy_columns));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const CtlPolicyRow *p = &rows[i];
        CellText c;
        ctl_format_timestamp(p->last_run, c.last_run);
        ctl_format_timestamp(p->next_run, c.next_run);
        /* A policy that cannot run as written says so in its state too. */
        char state[64];
        snprintf(state, sizeof(state), "%s%s", p->state, *p->problem ? " (problem)" : "");
        const char *cells[] = {p->name,        state,      p->schedule, c.last_run,
                               p->last_result, c.next_run, p->store,    p->source,
                               p->problem};
        int r = ctl_table_add_row(t, cells);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(t);
    return 0;
}

static const CtlColumn snapshot_columns_full[] = {
    {"TASK", CTL_ALIGN_LEFT, false},         {"POLICY", CTL_ALIGN_LEFT, false},
    {"NODE", CTL_ALIGN_LEFT, false},         {"STATE", CTL_ALIGN_LEFT, false},
    {"VERIFIED", CTL_ALIGN_LEFT, false},     {"PROGRESS", CTL_ALIGN_RIGHT, false},
    {"ITEMS", CTL_ALIGN_RIGHT, false},       {"TRANSFERRED", CTL_ALIGN_RIGHT, false},
    {"ELAPSED", CTL_ALIGN_RIGHT, false},     {"CREATED", CTL_ALIGN_LEFT, false},
    {"EXPIRES", CTL_ALIGN_LEFT, false},      {"FILE", CTL_ALIGN_LEFT, false},
    {"DOWNLOAD", CTL_ALIGN_LEFT, false},     {"ERROR", CTL_ALIGN_LEFT, false},
};

/* The default: values whole; on a narrow terminal the columns with the highest drop go first
 * (mongosnapctl show TASK and --full have everything). */
static const CtlColumn snapshot_columns[] = {
    {"TASK", CTL_ALIGN_LEFT, false},   {"POLICY", CTL_ALIGN_LEFT, false},
    {"NODE", CTL_ALIGN_LEFT, false},   {"STATE", CTL_ALIGN_LEFT, false},
    {"VERIFIED", CTL_ALIGN_LEFT, false}, {"ITEMS", CTL_ALIGN_RIGHT, false},
    {"SIZE", CTL_ALIGN_RIGHT, false},  {"CREATED", CTL_ALIGN_LEFT, false},
    {"EXPIRES", CTL_ALIGN_LEFT, true}, {"FILE", CTL_ALIGN_LEFT, false},
    {"DL", CTL_ALIGN_LEFT, false},     {"ERROR", CTL_ALIGN_LEFT, true},
};
static const unsigned snapshot_drop[] = {0, 5, 7, 0, 3, 2, 2, 1, 1, 6, 8, 4};
_Static_assert(ELEMENTSOF(snapshot_drop) == ELEMENTSOF(snapshot_columns), "one drop per column");

/* "2026-12-06 18:22" in local time: what a table needs of a date. */
static void format_short_time(uint64_t usec, char buf[CTL_TIMESTAMP_MAX]) {
    time_t t = (time_t) (usec / 1000000u);
    struct tm tm;
    if (usec == 0 || !localtime_r(&t, &tm) || strftime(buf, CTL_TIMESTAMP_MAX, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(buf, CTL_TIMESTAMP_MAX, "%s", CTL_NONE);
}

/* "~2026-12-13 02:00 KeepDaily=7", "2026-12-20 04:00 MaxAge", "- newest" */
static void format_short_expiry(const CtlSnapshotRow *s, char buf[CTL_EXPIRY_MAX]) {
    bool completed = strcmp(s->state, "completed") == 0;
    if (!completed && s->expire_time == 0) {
        buf[0] = '\0';
        return;
    }
    char when[CTL_TIMESTAMP_MAX];
    uint64_t t = s->expire_time ? s->expire_time : s->expire_projected;
    if (t == 0) {
        /* Nothing sets a date: say what keeps it. */
        snprintf(buf, CTL_EXPIRY_MAX, "%s%s%s", *s->kept_by ? "(" : "", s->kept_by,
                 *s->kept_by ? ")" : "");
        return;
    }
    format_short_time(t, when);
    snprintf(buf, CTL_EXPIRY_MAX, "%s%s%s%s", !s->expire_time ? "~" : "", when,
             *s->kept_by ? " " : "", s->kept_by);
}

int ctl_snapshot_table(const CtlSnapshotRow *rows, size_t n, bool full, CtlTable **ret) {
    _cleanup_(ctl_table_freep) CtlTable *t =
        full ? ctl_table_new(snapshot_columns_full, ELEMENTSOF(snapshot_columns_full))
             : ctl_table_new(snapshot_columns, ELEMENTSOF(snapshot_columns));
    if (!t || (!full && ctl_table_set_drop(t, snapshot_drop) < 0))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const CtlSnapshotRow *s = &rows[i];
        char download[CTL_DOWNLOAD_TEXT_MAX];
        ctl_download_text(s->id, s->file_name, s->download_address, download);
        CellText c;
        format_task_cells(&c, s->progress, s->items, s->bytes, s->elapsed_usec, s->create_time);
        int r;
        if (full) {
            ctl_format_expiry(s->state, s->expire_time, s->expire_projected, s->kept_by,
                              c.expires);
            const char *cells[] = {s->id,         s->policy,          s->node,      s->state,
                                   s->verify_state, c.progress,       c.items,      c.bytes,
                                   c.elapsed,     c.created,          c.expires,    s->file_name,
                                   download,      s->error};
            r = ctl_table_add_row(t, cells);
        } else {
            char state[64], created[CTL_TIMESTAMP_MAX];
            /* A running task says how far it is; a finished one, how it ended. */
            if (strcmp(s->state, "running") == 0)
                snprintf(state, sizeof(state), "running %.0f%%", s->progress);
            else
                snprintf(state, sizeof(state), "%s", s->state);
            format_short_time(s->create_time, created);
            format_short_expiry(s, c.expires);
            const char *cells[] = {s->id,    s->policy,   s->node,   state,
                                   s->verify_state, c.items, c.bytes, created,
                                   c.expires, s->file_name,
                                   *s->download_address ? "yes" : *download ? "export" : "",
                                   s->error};
            r = ctl_table_add_row(t, cells);
        }
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(t);
    return 0;
}

static const CtlColumn restore_columns[] = {
    {"TASK", CTL_ALIGN_LEFT, false},    {"SNAPSHOT", CTL_ALIGN_LEFT, false},
    {"TARGET", CTL_ALIGN_LEFT, true},   {"NODE", CTL_ALIGN_LEFT, false},
    {"STATE", CTL_ALIGN_LEFT, false},   {"PROGRESS", CTL_ALIGN_RIGHT, false},
    {"ITEMS", CTL_ALIGN_RIGHT, false},  {"ELAPSED", CTL_ALIGN_RIGHT, false},
    {"CREATED", CTL_ALIGN_LEFT, false}, {"ERROR", CTL_ALIGN_LEFT, true},
};

int ctl_restore_table(const CtlRestoreRow *rows, size_t n, CtlTable **ret) {
    _cleanup_(ctl_table_freep) CtlTable *t =
        ctl_table_new(restore_columns, ELEMENTSOF(restore_columns));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const CtlRestoreRow *x = &rows[i];
        CellText c;
        format_task_cells(&c, x->progress, x->items, 0, x->elapsed_usec, x->create_time);
        const char *cells[] = {x->id,      x->snapshot, x->target, x->node,   x->state,
                               c.progress, c.items,     c.elapsed, c.created, x->error};
        int r = ctl_table_add_row(t, cells);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(t);
    return 0;
}

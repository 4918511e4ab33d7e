/* mongosnapctl --wait: follow a task's properties (PropertiesChanged, with a slow poll as a
 * fallback) until it ends, drawing a progress line on a terminal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl-format.h"
#include "ctl-progress.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* Signals can be lost (a bus without them, a race at the start): ask this often anyway. */
#define WAIT_POLL_USEC (2 * CTL_USEC_PER_SEC)
#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"
/* Erase to the end of the line (ECMA-48 EL). */
#define ANSI_ERASE_LINE "\033[K"

typedef struct TaskKindInfo {
    const char *interface;
    const char *state_property;
    const char *error_property;
    const char *success_state;
    const char *const *final_states;
    bool has_figures; /* Progress, Items, ... describe this task */
} TaskKindInfo;

static const char *const snapshot_final[] = {"completed", "failed",  "interrupted", "stopped",
                                             "expired",   "deleted", NULL};
static const char *const restore_final[] = {"completed", "failed", "interrupted", "cancelled",
                                            NULL};
static const char *const verify_final[] = {"passed", "failed", "interrupted", NULL};

static const TaskKindInfo task_kinds[] = {
    [CTL_TASK_SNAPSHOT] = {MONGOSNAP_BUS_SNAPSHOT_INTERFACE, "State", "Error", "completed",
                           snapshot_final, true},
    [CTL_TASK_RESTORE] = {MONGOSNAP_BUS_RESTORE_INTERFACE, "State", "Error", "completed",
                          restore_final, true},
    [CTL_TASK_VERIFY] = {MONGOSNAP_BUS_SNAPSHOT_INTERFACE, "VerifyState", "VerifyError", "passed",
                         verify_final, false},
};

static volatile sig_atomic_t sigint_received;

static void on_sigint(int sig) {
    sigint_received = 1;
}

void ctl_catch_sigint(void) {
    /* No SA_RESTART: a blocking poll returns with EINTR and the loop sees the flag. */
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    (void) sigaction(SIGINT, &sa, NULL);
}

bool ctl_sigint_received(void) {
    return sigint_received;
}

static uint64_t now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * CTL_USEC_PER_SEC + (uint64_t) ts.tv_nsec / CTL_USEC_PER_MSEC;
}

typedef struct Waiter {
    Ctl *ctl;
    const TaskKindInfo *kind;
    const char *path;
    const char *id;
    CtlProps props;
    bool changed; /* a PropertiesChanged arrived since the last fetch */
    bool drawn;   /* a progress line is on the terminal */
    uint64_t started;
} Waiter;

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
    Waiter *w = userdata;
    w->changed = true;
    return 0;
}

static bool state_is_final(const TaskKindInfo *kind, const char *state) {
    for (const char *const *s = kind->final_states; *s; s++)
        if (strcmp(*s, state) == 0)
            return true;
    return false;
}

static const char *current_state(const Waiter *w) {
    return ctl_props_str(&w->props, w->kind->state_property);
}

static bool drawing(const Waiter *w) {
    return w->ctl->stderr_tty && !w->ctl->args.quiet && !w->ctl->args.json;
}

static void clear_line(Waiter *w) {
    if (w->drawn)
        fprintf(stderr, "\r" ANSI_ERASE_LINE);
    w->drawn = false;
}

static void draw(Waiter *w) {
    if (!drawing(w))
        return;
    const CtlProps *p = &w->props;
    CtlProgress progress = {
        .state = current_state(w),
        .has_percent = w->kind->has_figures,
        .percent = ctl_props_double(p, "Progress"),
        .items = ctl_props_u64(p, "Items"),
        .items_total = ctl_props_u64(p, "ItemsTotal"),
        .bytes = ctl_props_u64(p, "BytesTransferred"),
        .phase = ctl_props_str(p, "Phase"),
        .elapsed_usec =
            w->kind->has_figures ? ctl_props_u64(p, "ElapsedUSec") : now_monotonic() - w->started,
    };
    char line[CTL_PROGRESS_LINE_MAX];
    /* One column short of the edge: a full line would wrap on some terminals. */
    size_t width = w->ctl->stderr_columns > 1 ? w->ctl->stderr_columns - 1 : 0;
    ctl_progress_line(&progress, width, line, sizeof(line));
    fprintf(stderr, "\r%s" ANSI_ERASE_LINE, line);
    fflush(stderr);
    w->drawn = true;
}

static int fetch(Waiter *w, sd_bus_error *error) {
    CtlProps fresh;
    int r = ctl_get_properties(w->ctl->bus, w->path, w->kind->interface, &fresh, error);
    if (r < 0)
        return r;
    ctl_props_done(&w->props);
    w->props = fresh;
    return 0;
}

static int report_final(Waiter *w) {
    const char *state = current_state(w);
    bool ok = strcmp(state, w->kind->success_state) == 0;
    if (w->ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_props(&j, &w->props);
        ctl_json_end_object(&j);
    }
    if (!ok) {
        const char *error = ctl_props_str(&w->props, w->kind->error_property);
        return ctl_fail(CTL_EXIT_FAILED, "%s: %s%s%s", w->id, state, *error ? ": " : "", error);
    }
    if (w->ctl->args.quiet || w->ctl->args.json)
        return CTL_EXIT_OK;
    if (!w->kind->has_figures) {
        printf("%s: verification %s.\n", w->id, state);
        return CTL_EXIT_OK;
    }
    char size[CTL_SIZE_MAX], elapsed[CTL_DURATION_MAX];
    ctl_format_size(ctl_props_u64(&w->props, "BytesTransferred"), size);
    ctl_format_duration(ctl_props_u64(&w->props, "ElapsedUSec"), elapsed);
    printf("%s: %s, %llu items, %s in %s.\n", w->id, state,
           (unsigned long long) ctl_props_u64(&w->props, "Items"), size, elapsed);
    return CTL_EXIT_OK;
}

static int report_interrupted(Waiter *w) {
    clear_line(w);
    fprintf(stderr,
            "Stopped waiting; %s goes on in mongosnapd. Follow it with: " CTL_PROGRAM
            " log %s -f\n",
            w->id, w->id);
    return CTL_EXIT_INTERRUPTED;
}

/* One round: fetch when told to or when the poll is due, then wait for the bus. Returns 1
 * when the task has ended. */
static int wait_step(Waiter *w, uint64_t *next_poll, sd_bus_error *error) {
    uint64_t now = now_monotonic();
    if (w->changed || now >= *next_poll) {
        w->changed = false;
        int r = fetch(w, error);
        if (r < 0)
            return r;
        *next_poll = now + WAIT_POLL_USEC;
        if (state_is_final(w->kind, current_state(w)))
            return 1;
        draw(w);
    }
    int r = sd_bus_process(w->ctl->bus, NULL);
    if (r != 0)
        return r < 0 ? r : 0;
    r = sd_bus_wait(w->ctl->bus, *next_poll > now ? *next_poll - now : 0);
    return r == -EINTR ? 0 : (r < 0 ? r : 0);
}

int ctl_wait_task(Ctl *ctl, const char *path, CtlTaskKind kind, const char *id) {
    Waiter w = {.ctl = ctl, .kind = &task_kinds[kind], .path = path, .id = id};
    w.started = now_monotonic();
    _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    /* Subscribed before the first fetch, so no change falls between the two. */
    int r = sd_bus_match_signal(ctl->bus, &slot, NULL, path, PROPERTIES_INTERFACE,
                                "PropertiesChanged", on_properties_changed, &w);
    if (r < 0)
        return ctl_fail_bus(id, NULL, r);
    ctl_catch_sigint();
    uint64_t next_poll = 0;
    do {
        if (ctl_sigint_received()) {
            ctl_props_done(&w.props);
            return report_interrupted(&w);
        }
        r = wait_step(&w, &next_poll, &error);
    } while (r == 0);
    clear_line(&w);
    int code = r < 0 ? ctl_fail_bus(id, &error, r) : report_final(&w);
    ctl_props_done(&w.props);
    return code;
}

int ctl_task_started(Ctl *ctl, const char *what, const char *path, CtlTaskKind kind) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    _cleanup_free_ char *id = NULL;
    int r = sd_bus_get_property_string(ctl->bus, MONGOSNAP_BUS_NAME, path,
                                       task_kinds[kind].interface, "Id", &error, &id);
    if (r < 0)
        return ctl_fail_bus(what, &error, r);
    if (ctl->args.wait)
        return ctl_wait_task(ctl, path, kind, id);
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_field_string(&j, "id", id);
        ctl_json_field_string(&j, "path", path);
        ctl_json_end_object(&j);
    } else if (!ctl->args.quiet)
        printf("%s\n", id);
    return CTL_EXIT_OK;
}

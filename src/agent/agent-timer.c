/* Policies as systemd timers, and NextRun: an observer of the manager's policy events, so that
 * every change of a policy reaches its timer whoever made it (a D-Bus call, a reload, a task
 * that ended, a policy file that vanished).
 *
 * Every policy has a timer instance, mongosnap-snapshot@NAME.timer (the installed template, with
 * no OnCalendar= of its own), which fires mongosnap-snapshot@NAME.service ("mongosnapctl
 * snapshot NAME --wait"). The agent derives the timer's schedule from the policy file: it writes
 * the runtime drop-in
 *
 *     /run/systemd/system/mongosnap-snapshot@NAME.timer.d/50-mongosnap-policy.conf
 *
 * with OnCalendar= (Schedule=), RandomizedDelaySec=, Persistent= and AccuracySec=, has systemd
 * reload its units (Manager.Reload) and restart the timer when the file changed, or starts it
 * when it did not; a stopped or deleted policy, or one without Schedule=, gets its drop-in
 * removed and its timer stopped. At every start (and reload) the agent rewrites every drop-in
 * and removes those of policies that are gone, like a generator's output: /run is the place for
 * files derived from others.
 *
 * Root may call systemd's manager methods without polkit (systemd checks the caller's uid),
 * which is why the agent runs as root, with no capabilities. The calls are synchronous: a
 * reload takes milliseconds, they happen only when a policy changes, the order of write,
 * reload, start is then simply the code's, and when Edit, Stop or Start return, the timer has
 * changed.
 *
 * Without systemd on the bus (a private dbus-daemon in tests, a manual run) nothing is written
 * to the default directory and nothing is asked; with --timer-dir pointing elsewhere the files
 * are still written (tests read them) and systemd is asked only when it is on the bus.
 *
 * NextRun is asked from systemd (the timer's NextElapseUSecRealtime) after each change, so no
 * polling. A timer just started may not have run its start job when the question arrives
 * (systemd runs jobs after pending bus messages), so an unknown answer for a policy that should
 * have a timer is asked again a few times, a short while apart. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "agent/agent-timer.h"
#include "common/log.h"
#include "config/conf.h"

#define SYSTEMD_BUS_NAME "org.freedesktop.systemd1"
#define SYSTEMD_PATH "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER_INTERFACE "org.freedesktop.systemd1.Manager"
#define SYSTEMD_UNIT_PATH_PREFIX "/org/freedesktop/systemd1/unit"
#define SYSTEMD_TIMER_INTERFACE "org.freedesktop.systemd1.Timer"
#define SYSTEMD_ERROR_NO_SUCH_UNIT "org.freedesktop.systemd1.NoSuchUnit"

#define TIMER_UNIT_PREFIX "mongosnap-snapshot@"
#define TIMER_UNIT_SUFFIX ".timer"
#define TIMER_UNIT_FORMAT TIMER_UNIT_PREFIX "%s" TIMER_UNIT_SUFFIX
#define DROPIN_DIR_SUFFIX ".d"
#define DROPIN_NAME "50-mongosnap-policy.conf"
/* A constant, not a setting: systemd's default of 1min exists to batch wake-ups, which is
 * nothing for a job that runs a few times a day, and 1 s makes list-timers and NextRun say
 * the schedule's own time. Spreading the load is RandomizedDelaySec='s business. */
#define TIMER_ACCURACY "1s"
/* A drop-in is a few lines; anything longer on disk is not ours as written. */
#define DROPIN_MAX 4096

/* NextRun asked again this often, this many times, while a started timer has none yet. */
#define NEXT_RUN_RETRY_USEC (200u * 1000u)
#define NEXT_RUN_ATTEMPTS 10

/* ---- the drop-in files ---- */

static bool policy_wants_timer(const ManagerPolicy *p) {
    return p && !p->removed && p->runtime->state == MS_POLICY_ACTIVE && p->settings->schedule &&
           p->settings->schedule[0];
}

static bool timer_directory_is_default(Manager *m) {
    return strcmp(manager_timer_directory(m), MANAGER_TIMER_DIRECTORY) == 0;
}

/* The drop-in's text; NULL when the schedule cannot be written into a unit file. */
static char *dropin_text(const MsPolicy *s) {
    /* '%' starts a specifier in unit files; a backslash could continue the line. Control
     * characters are refused when the policy is read. */
    if (strchr(s->schedule, '\\')) {
        log_error("policy %s: Schedule='%s' has a backslash, which no calendar expression has; "
                  "no timer",
                  s->name, s->schedule);
        return NULL;
    }
    size_t n = 0;
    for (const char *c = s->schedule; *c; c++)
        n += *c == '%' ? 2 : 1;
    _cleanup_free_ char *schedule = malloc(n + 1);
    if (!schedule)
        return NULL;
    char *o = schedule;
    for (const char *c = s->schedule; *c; c++) {
        *o++ = *c;
        if (*c == '%')
            *o++ = '%';
    }
    *o = '\0';
    char delay[MS_TIMESPAN_MAX];
    ms_timespan_format(s->randomized_delay_usec, delay);
    char *text = NULL;
    if (asprintf(&text,
                 "# Written by mongosnapd from policy %s; rewritten whenever the policy changes\n"
                 "# and at every start of the agent. Change the policy, not this file.\n"
                 "[Timer]\n"
                 "OnCalendar=\n"
                 "OnCalendar=%s\n"
                 "RandomizedDelaySec=%s\n"
                 "Persistent=%s\n"
                 "AccuracySec=" TIMER_ACCURACY "\n",
                 s->name, schedule, delay, s->persistent ? "yes" : "no") < 0)
        return NULL;
    return text;
}

static int dropin_paths(Manager *m, const char *name, char **ret_dir, char **ret_file) {
    if (asprintf(ret_dir, "%s/" TIMER_UNIT_FORMAT DROPIN_DIR_SUFFIX, manager_timer_directory(m),
                 name) < 0)
        return -ENOMEM;
    if (asprintf(ret_file, "%s/" DROPIN_NAME, *ret_dir) < 0) {
        free(*ret_dir);
        *ret_dir = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Whether path holds exactly text. */
static bool file_has(const char *path, const char *text) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    char buf[DROPIN_MAX + 1];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof(buf) && (k = read(fd, buf + n, sizeof(buf) - n)) > 0)
        n += (size_t) k;
    close(fd);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

/* mkdir with the mode given, whatever the umask (the service has UMask=0077; the unit files
 * stay readable for `systemctl cat` by anyone, as systemd's own are). */
static int make_directory(const char *path) {
    if (mkdir(path, 0755) < 0) {
        if (errno != EEXIST)
            return -errno;
        return 0;
    }
    return chmod(path, 0755) < 0 ? -errno : 0;
}

static int write_atomic(const char *dir, const char *path, const char *text) {
    _cleanup_free_ char *tmp = NULL;
    /* Not ending in .conf: systemd ignores it should it ever be left behind. */
    if (asprintf(&tmp, "%s/.#" DROPIN_NAME "XXXXXX", dir) < 0)
        return -ENOMEM;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text), done = 0;
    int r = 0;
    while (done < len && r == 0) {
        ssize_t k = write(fd, text + done, len - done);
        if (k < 0)
            r = errno == EINTR ? 0 : -errno;
        else
            done += (size_t) k;
    }
    if (r == 0 && fchmod(fd, 0644) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        (void) unlink(tmp);
    return r;
}

/* Bring policy name's drop-in in line with settings (NULL: no timer). 1 when a file was
 * written or removed, 0 when it was right already, negative on failure (logged). */
static int sync_dropin(Manager *m, const char *name, const MsPolicy *settings) {
    _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
    if (dropin_paths(m, name, &dir, &path) < 0)
        return -ENOMEM;
    /* A schedule that cannot be written: no timer, and a failure the caller sees. */
    bool refused = settings && !(text = dropin_text(settings));
    if (!text) {
        if (unlink(path) < 0) {
            if (errno == ENOENT)
                return refused ? -EINVAL : 0;
            log_warning("cannot remove %s: %s", path, strerror(errno));
            return -errno;
        }
        (void) rmdir(dir); /* only when empty: other drop-ins are the administrator's */
        return refused ? -EINVAL : 1;
    }
    if (file_has(path, text))
        return 0;
    int r = make_directory(manager_timer_directory(m));
    if (r >= 0)
        r = make_directory(dir);
    if (r >= 0)
        r = write_atomic(dir, path, text);
    if (r < 0) {
        log_error("policy %s: cannot write its timer's drop-in %s: %s", name, path, strerror(-r));
        return r;
    }
    log_debug("policy %s: wrote %s", name, path);
    return 1;
}

/* ---- systemd ---- */

/* Whether systemd answers on this bus. Asked once per bus: systemd does not come and go (at
 * boot, before PID 1 is on the bus, the bus holds the call until it is). */
static bool systemd_on_bus(sd_bus *bus) {
    static sd_bus *asked;
    static bool answer;
    if (asked == bus)
        return answer;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(bus, SYSTEMD_BUS_NAME, SYSTEMD_PATH, "org.freedesktop.DBus.Peer",
                               "Ping", &error, NULL, NULL);
    answer = r >= 0;
    asked = bus;
    if (!answer)
        log_debug("systemd is not on this bus (%s): the policies' timers are left alone",
                  error.message ? error.message : strerror(-r));
    return answer;
}

static void systemd_reload(sd_bus *bus) {
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(bus, SYSTEMD_BUS_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER_INTERFACE,
                               "Reload", &error, NULL, NULL);
    if (r < 0)
        log_warning("systemd did not reload its units for the policies' timers: %s",
                    error.message ? error.message : strerror(-r));
}

typedef enum TimerJob {
    TIMER_STOP,
    TIMER_START,
    /* After a changed drop-in: a timer that had no next elapse (an old schedule without one, or
     * one systemd refused) stays "elapsed" through a daemon-reload, and systemd computes the
     * next elapse of a running timer from its last trigger, so a new schedule could fire at
     * once for a time between the last run and now. A restart arms it afresh: from now, or
     * from its stamp file with Persistent=yes, as any timer start. */
    TIMER_RESTART,
} TimerJob;

static int timer_job_call(sd_bus *bus, const char *unit, TimerJob job, sd_bus_error *error) {
    static const char *const methods[] = {
        [TIMER_STOP] = "StopUnit",
        [TIMER_START] = "StartUnit",
        [TIMER_RESTART] = "RestartUnit",
    };
    return sd_bus_call_method(bus, SYSTEMD_BUS_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER_INTERFACE,
                              methods[job], error, NULL, "ss", unit, "replace");
}

/* Start, restart or stop name's timer; what systemd says against it is logged. */
static void systemd_timer_job(sd_bus *bus, const char *name, const MsPolicy *settings,
                              TimerJob job) {
    _cleanup_free_ char *unit = NULL;
    if (asprintf(&unit, TIMER_UNIT_FORMAT, name) < 0)
        return;
    _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = timer_job_call(bus, unit, job, &error);
    if (r >= 0)
        return;
    const char *why = error.message ? error.message : strerror(-r);
    if (job != TIMER_STOP) {
        /* Typically a calendar expression systemd does not accept: it is the judge. The timer
         * is stopped, so that nothing of an earlier schedule lingers and a corrected one
         * starts afresh. */
        log_error("policy %s has no schedule until Schedule= is corrected: systemd did not "
                  "start %s (Schedule=%s): %s",
                  name, unit, settings && settings->schedule ? settings->schedule : "", why);
        sd_bus_error_free(&error);
        (void) timer_job_call(bus, unit, TIMER_STOP, &error);
    } else if (sd_bus_error_has_name(&error, SYSTEMD_ERROR_NO_SUCH_UNIT))
        log_debug("policy %s: %s is not loaded; nothing to stop", name, unit);
    else
        log_warning("policy %s: systemd did not stop %s: %s", name, unit, why);
}

/* What the timer of a policy needs, given whether it wants one and sync_dropin()'s result. */
static TimerJob timer_job_for(bool want, int dropin_result) {
    if (!want || dropin_result < 0)
        return TIMER_STOP;
    return dropin_result > 0 ? TIMER_RESTART : TIMER_START;
}

/* ---- NextRun ---- */

struct AgentTimers {
    Manager *manager;
    sd_bus *bus;   /* NULL: no bus, no systemd: only drop-ins in a --timer-dir are written */
    bool emitting; /* this module is announcing a NextRun: its own change is no event for it */
};

typedef struct NextRunQuery {
    AgentTimers *timers;
    unsigned attempt;
    char name[]; /* the policy, looked up again on reply: it may be gone by then */
} NextRunQuery;

static void query_next_run(AgentTimers *t, const char *name, unsigned attempt);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
    NextRunQuery *q = userdata; /* freed with the source */
    query_next_run(q->timers, q->name, q->attempt);
    /* Hand the source back from the loop to nobody: it is freed after this dispatch. */
    (void) sd_event_source_set_floating(s, false);
    return 0;
}

static void retry_later(NextRunQuery *q) {
    sd_event *event = sd_bus_get_event(q->timers->bus);
    size_t len = strlen(q->name) + 1;
    NextRunQuery *again = event ? malloc(sizeof(*again) + len) : NULL;
    if (!again)
        return;
    *again = (NextRunQuery){.timers = q->timers, .attempt = q->attempt + 1};
    memcpy(again->name, q->name, len);
    sd_event_source *source = NULL;
    if (sd_event_add_time_relative(event, &source, CLOCK_MONOTONIC, NEXT_RUN_RETRY_USEC, 1,
                                   on_retry, again) < 0) {
        free(again);
        return;
    }
    (void) sd_event_source_set_destroy_callback(source, free);
    /* Owned by the loop until it fires (then freed), or freed with the loop. */
    (void) sd_event_source_set_floating(source, true);
    sd_event_source_unref(source);
}

static int on_next_elapse(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
    NextRunQuery *q = userdata; /* freed with the slot */
    AgentTimers *t = q->timers;
    ManagerPolicy *p = manager_find_policy(t->manager, q->name);
    if (!p)
        return 0;
    uint64_t next = 0;
    /* No systemd on this bus, no such timer, a stopped timer: no next run that we know of. */
    if (!sd_bus_message_is_method_error(reply, NULL) &&
        sd_bus_message_read(reply, "v", "t", &next) < 0)
        next = 0;
    if (next == UINT64_MAX || p->runtime->state != MS_POLICY_ACTIVE)
        next = 0;
    /* A timer started a moment ago may not have run its start job yet. */
    if (next == 0 && policy_wants_timer(p) && q->attempt + 1 < NEXT_RUN_ATTEMPTS &&
        systemd_on_bus(t->bus))
        retry_later(q);
    t->emitting = true;
    manager_policy_set_next_run(t->manager, p, next);
    t->emitting = false;
    return 0;
}

static void query_next_run(AgentTimers *t, const char *name, unsigned attempt) {
    _cleanup_free_ char *unit = NULL, *path = NULL;
    if (!t->bus)
        return;
    if (asprintf(&unit, TIMER_UNIT_FORMAT, name) < 0 ||
        sd_bus_path_encode(SYSTEMD_UNIT_PATH_PREFIX, unit, &path) < 0)
        return;
    size_t len = strlen(name) + 1;
    NextRunQuery *q = malloc(sizeof(*q) + len);
    if (!q)
        return;
    *q = (NextRunQuery){.timers = t, .attempt = attempt};
    memcpy(q->name, name, len);
    sd_bus_slot *slot = NULL;
    int r = sd_bus_call_method_async(t->bus, &slot, SYSTEMD_BUS_NAME, path,
                                     "org.freedesktop.DBus.Properties", "Get", on_next_elapse, q,
                                     "ss", SYSTEMD_TIMER_INTERFACE, "NextElapseUSecRealtime");
    if (r < 0) {
        free(q);
        log_debug("cannot ask systemd about %s: %s", unit, strerror(-r));
        return;
    }
    /* The query goes with the slot: after the reply, or when the bus closes first. */
    (void) sd_bus_slot_set_destroy_callback(slot, free);
    (void) sd_bus_slot_set_floating(slot, true);
    sd_bus_slot_unref(slot);
}

/* ---- the manager's events ---- */

/* Whether to touch files (and systemd): *ret_systemd says whether systemd is on the bus. */
static bool timers_managed(AgentTimers *t, bool *ret_systemd) {
    Manager *m = t->manager;
    *ret_systemd = t->bus && systemd_on_bus(t->bus);
    /* The default directory is systemd's own: written only for a systemd that reads it. */
    return *ret_systemd || !timer_directory_is_default(m);
}

static void sync_policy(AgentTimers *t, const ManagerPolicy *p) {
    Manager *m = t->manager;
    sd_bus *bus = t->bus;
    bool systemd;
    if (timers_managed(t, &systemd)) {
        bool want = policy_wants_timer(p);
        int r = sync_dropin(m, p->settings->name, want ? p->settings : NULL);
        if (systemd) {
            if (r > 0)
                systemd_reload(bus);
            /* Also when nothing changed on disk: the policy's state is the truth, whoever
             * stopped or started the timer meanwhile. */
            systemd_timer_job(bus, p->settings->name, p->settings, timer_job_for(want, r));
        }
    }
    query_next_run(t, p->settings->name, 0);
}

static void on_policy_removed(Manager *m, const ManagerPolicy *p, void *userdata) {
    AgentTimers *t = userdata;
    sd_bus *bus = t->bus;
    bool systemd;
    if (!timers_managed(t, &systemd))
        return;
    int r = sync_dropin(m, p->settings->name, NULL);
    if (systemd) {
        if (r > 0)
            systemd_reload(bus);
        systemd_timer_job(bus, p->settings->name, NULL, TIMER_STOP);
    }
}

/* The names of policies that have a drop-in of ours in the timer directory but are not
 * loaded: their timers must go. NULL-terminated, NULL when none. */
static char **stale_dropins(Manager *m) {
    DIR *d = opendir(manager_timer_directory(m));
    if (!d)
        return NULL;
    char **names = NULL;
    size_t n = 0;
    const size_t prefix = strlen(TIMER_UNIT_PREFIX);
    const size_t suffix = strlen(TIMER_UNIT_SUFFIX DROPIN_DIR_SUFFIX);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len <= prefix + suffix || strncmp(de->d_name, TIMER_UNIT_PREFIX, prefix) != 0 ||
            strcmp(de->d_name + len - suffix, TIMER_UNIT_SUFFIX DROPIN_DIR_SUFFIX) != 0)
            continue;
        char *name = strndup(de->d_name + prefix, len - prefix - suffix);
        if (!name)
            break;
        _cleanup_free_ char *path = NULL;
        if (manager_find_policy(m, name) ||
            asprintf(&path, "%s/%s/" DROPIN_NAME, manager_timer_directory(m), de->d_name) < 0 ||
            access(path, F_OK) < 0) {
            free(name);
            continue;
        }
        char **more = realloc(names, (n + 2) * sizeof(*names));
        if (!more) {
            free(name);
            break;
        }
        names = more;
        names[n++] = name;
        names[n] = NULL;
    }
    closedir(d);
    return names;
}

void agent_timers_sync_all(AgentTimers *t) {
    Manager *m = t->manager;
    sd_bus *bus = t->bus;
    bool systemd;
    if (timers_managed(t, &systemd)) {
        char **stale = stale_dropins(m);
        bool changed = false;
        for (char **s = stale; s && *s; s++)
            changed |= sync_dropin(m, *s, NULL) > 0;
        /* Every drop-in, so that a file edited or removed by hand is put right at start. */
        int *result = calloc(manager_n_policies(m) + 1, sizeof(int));
        for (size_t i = 0; i < manager_n_policies(m); i++) {
            const ManagerPolicy *p = manager_policy_at(m, i);
            int r = sync_dropin(m, p->settings->name, policy_wants_timer(p) ? p->settings : NULL);
            if (result)
                result[i] = r;
            changed |= r > 0;
        }
        if (systemd) {
            if (changed)
                systemd_reload(bus);
            for (char **s = stale; s && *s; s++)
                systemd_timer_job(bus, *s, NULL, TIMER_STOP);
            for (size_t i = 0; i < manager_n_policies(m); i++) {
                const ManagerPolicy *p = manager_policy_at(m, i);
                systemd_timer_job(bus, p->settings->name, p->settings,
                                  timer_job_for(policy_wants_timer(p), result ? result[i] : 0));
            }
        }
        free(result);
        for (char **s = stale; s && *s; s++)
            free(*s);
        free(stale);
    }
    for (size_t i = 0; i < manager_n_policies(m); i++) {
        const ManagerPolicy *p = manager_policy_at(m, i);
        if (!p->removed)
            query_next_run(t, p->settings->name, 0);
    }
}

static void on_policy_changed(Manager *m, const ManagerPolicy *p, void *userdata) {
    AgentTimers *t = userdata;
    if (!p->removed && !t->emitting)
        sync_policy(t, p);
}

static void on_policies_reloaded(Manager *m, const MsError *e, void *userdata) {
    agent_timers_sync_all(userdata);
}

int agent_timers_attach(Manager *m, sd_bus *bus, AgentTimers **ret, MsError *e) {
    /* No policy_added: policies are added only by a load of the policy files, whose
     * policies_reloaded follows and brings every timer in line at once (one systemd reload at
     * start-up, not one per policy). */
    static const ManagerHooks hooks = {
        .policy_changed = on_policy_changed,
        .policy_removed = on_policy_removed,
        .policies_reloaded = on_policies_reloaded,
    };
    AgentTimers *t = calloc(1, sizeof(*t));
    if (!t)
        return ms_error_oom(e);
    *t = (AgentTimers){.manager = m, .bus = bus ? sd_bus_ref(bus) : NULL};
    int r = manager_add_observer(m, &hooks, t, e);
    if (r < 0) {
        agent_timers_free(t);
        return r;
    }
    *ret = t;
    return 0;
}

AgentTimers *agent_timers_free(AgentTimers *t) {
    if (!t)
        return NULL;
    sd_bus_unref(t->bus);
    free(t);
    return NULL;
}

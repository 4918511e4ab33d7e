/* A policy's Schedule= as systemd reads it: checked and its next elapse times computed by
 * systemd-analyze calendar, so that what the agent accepts and predicts is exactly what the
 * timer will do (libsystemd has no public calendar API). */
#include "agent-calendar.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/macro.h"
#include "common/timeutil.h"

extern char **environ;

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
/* systemd-analyze answers in milliseconds; a stuck one must not hold the event loop. */
#define CALENDAR_TIMEOUT_MSEC 3000
#define CALENDAR_OUTPUT_MAX (1024u * 1024u)
#define CALENDAR_PARSE_PREFIX "Failed to parse calendar specification"

static const char *analyze_path(void) {
    const char *p = getenv("MONGOSNAP_SYSTEMD_ANALYZE");
    return p && *p ? p : AGENT_CALENDAR_ANALYZE;
}

/* Run systemd-analyze calendar with TZ=UTC; its stdout and stderr (joined) into *ret_out. */
static int run_analyze(const char *spec, uint64_t base_usec, unsigned iterations, char **ret_out,
                       int *ret_status, MsError *e) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return ms_error_set(e, errno, "cannot check the schedule: pipe: %s", strerror(errno));
    char iter_arg[32], base_arg[48];
    snprintf(iter_arg, sizeof(iter_arg), "--iterations=%u", iterations ? iterations : 1);
    snprintf(base_arg, sizeof(base_arg), "--base-time=@%" PRIu64, base_usec / USEC_PER_SEC);
    char *const argv[] = {(char *) analyze_path(), (char *) "calendar", iter_arg, base_arg,
                          (char *) "--", (char *) spec, NULL};
    /* Only what it needs: UTC, no pager, no colours, no locale surprises. */
    char *const envp[] = {(char *) "TZ=UTC", (char *) "LC_ALL=C", (char *) "SYSTEMD_PAGER=cat",
                          (char *) "SYSTEMD_COLORS=0", (char *) "PATH=/usr/bin:/bin", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (r != 0) {
        close(pipefd[0]);
        return ms_error_set(e, r, "cannot check the schedule: cannot run %s: %s", argv[0],
                            strerror(r));
    }
    size_t len = 0, cap = 4096;
    char *out = malloc(cap);
    int err = out ? 0 : ENOMEM;
    uint64_t deadline = ms_monotonic_usec() + CALENDAR_TIMEOUT_MSEC * USEC_PER_MSEC;
    while (!err) {
        uint64_t now = ms_monotonic_usec();
        if (now >= deadline) {
            err = ETIMEDOUT;
            break;
        }
        struct pollfd pfd = {pipefd[0], POLLIN, 0};
        int k = poll(&pfd, 1, (int) ((deadline - now) / USEC_PER_MSEC) + 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            err = k == 0 ? ETIMEDOUT : errno;
            break;
        }
        if (len + 4096 > cap) {
            if (cap >= CALENDAR_OUTPUT_MAX) {
                err = EFBIG;
                break;
            }
            char *grown = realloc(out, cap * 2);
            if (!grown) {
                err = ENOMEM;
                break;
            }
            out = grown;
            cap *= 2;
        }
        ssize_t n = read(pipefd[0], out + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                err = errno;
            break;
        }
        len += (size_t) n;
    }
    close(pipefd[0]);
    if (err)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (err) {
        free(out);
        return ms_error_set(e, err, "cannot check the schedule with %s: %s", argv[0],
                            strerror(err));
    }
    out[len] = '\0';
    *ret_out = out;
    *ret_status = status;
    return 0;
}

/* "Www YYYY-MM-DD HH:MM:SS UTC" into microseconds. */
static bool parse_elapse(const char *s, uint64_t *ret) {
    struct tm tm = {0};
    char wday[4];
    if (sscanf(s, "%3s %d-%d-%d %d:%d:%d UTC", wday, &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 7)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t < 0)
        return false;
    *ret = (uint64_t) t * USEC_PER_SEC;
    return true;
}

int agent_calendar_next(const char *spec, uint64_t base_usec, unsigned n, uint64_t **ret_ticks,
                        size_t *ret_n, MsError *e) {
    if (!spec || !*spec)
        return ms_error_set(e, EINVAL, "no schedule given");
    _cleanup_free_ char *out = NULL;
    int status = 0;
    int r = run_analyze(spec, base_usec, n, &out, &status, e);
    if (r < 0)
        return r;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* systemd's own words: "Failed to parse calendar specification 'x': Invalid argument" */
        const char *why = strstr(out, CALENDAR_PARSE_PREFIX);
        if (why) {
            char *nl = strchr(why, '\n');
            if (nl)
                *nl = '\0';
            return ms_error_set(e, EINVAL,
                                "Schedule='%.200s' is not a calendar expression systemd accepts "
                                "(%s); see systemd.time(7), e.g. 'daily', '*-*-* 02:00:00', "
                                "'Mon..Fri 22:30'",
                                spec, why);
        }
        /* No next elapse at all ("2001-01-01" in the past) is valid for systemd, but such a
         * timer never fires: say so as plainly. */
        if (strstr(out, "Next elapse: never"))
            return ms_error_set(e, EINVAL,
                                "Schedule='%.200s' never elapses again (it names only times in "
                                "the past): the policy would never run",
                                spec);
        return ms_error_set(e, EIO, "cannot check Schedule='%.200s': %s exited with status %d",
                            spec, analyze_path(), WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    if (strstr(out, "Next elapse: never"))
        return ms_error_set(e, EINVAL,
                            "Schedule='%.200s' never elapses again (it names only times in the "
                            "past): the policy would never run",
                            spec);
    _cleanup_free_ uint64_t *ticks = calloc(n ? n : 1, sizeof(uint64_t));
    if (!ticks)
        return ms_error_set(e, ENOMEM, "out of memory");
    size_t k = 0;
    for (char *line = strtok(out, "\n"); line && k < n; line = strtok(NULL, "\n")) {
        const char *p = strstr(line, "Next elapse: ");
        const char *q = strstr(line, "Iter. #");
        const char *v = p ? p + strlen("Next elapse: ") : q ? strstr(q, ": ") : NULL;
        if (!v)
            continue;
        if (q)
            v += 2;
        uint64_t t;
        if (parse_elapse(v, &t) && (k == 0 || t > ticks[k - 1]))
            ticks[k++] = t;
    }
    if (k == 0 && n > 0)
        return ms_error_set(e, EIO, "cannot read the next runs of Schedule='%.200s' from %s", spec,
                            analyze_path());
    if (ret_ticks)
        *ret_ticks = TAKE_PTR(ticks);
    if (ret_n)
        *ret_n = k;
    return 0;
}

int agent_calendar_check(const char *spec, MsError *e) {
    return agent_calendar_next(spec, ms_realtime_usec(), 1, NULL, NULL, e);
}

/* Walked forward from a base before at_usec in chunks of this many elapses; the base moves back
 * by a factor of 8 from an hour until an elapse is found (minutely: one run; daily: two; a
 * yearly one seven). */
#define PREV_CHUNK 256u
#define PREV_CHUNKS_MAX 16u
#define PREV_SPAN_START_USEC (UINT64_C(3600) * USEC_PER_SEC)
#define PREV_SPAN_MAX_USEC (UINT64_C(5) * 366 * 86400 * USEC_PER_SEC)

int agent_calendar_prev(const char *spec, uint64_t at_usec, uint64_t *ret, MsError *e) {
    uint64_t at = at_usec - at_usec % USEC_PER_SEC;
    *ret = 0;
    for (uint64_t span = PREV_SPAN_START_USEC; span <= PREV_SPAN_MAX_USEC; span *= 8) {
        uint64_t base = at > span ? at - span : 0, best = 0;
        for (unsigned chunk = 0; chunk < PREV_CHUNKS_MAX; chunk++) {
            _cleanup_free_ uint64_t *ticks = NULL;
            size_t n = 0;
            MsError ce = MS_ERROR_INIT;
            int r = agent_calendar_next(spec, base, PREV_CHUNK, &ticks, &n, &ce);
            if (r == -EINVAL && strstr(ce.message, "never elapses again"))
                break; /* nothing after base at all */
            if (r < 0) {
                *e = ce;
                return r;
            }
            for (size_t i = 0; i < n && ticks[i] <= at; i++)
                best = ticks[i];
            if (n < PREV_CHUNK || ticks[n - 1] > at)
                break;
            base = ticks[n - 1]; /* all before at: go on from the last */
        }
        if (best) {
            *ret = best;
            return 0;
        }
        if (base == 0)
            break;
    }
    return 0;
}


/* Progress counters and their JSON-lines reporting to the parent process. */
#include "progress.h"

#include "common/timeutil.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mongosnap/mongosnap.h"

uint64_t ms_now_usec(void) {
    return ms_monotonic_usec();
}

void ms_progress_init(MsProgress *p, int fd) {
    memset(p, 0, sizeof(*p));
    p->fd = fd;
    p->start_usec = ms_now_usec();
    p->phase = "connect";
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->percent_lock, NULL);
    pthread_cond_init(&p->ticker_cond, NULL);
}

void ms_progress_done(MsProgress *p) {
    ms_progress_stop_ticker(p);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->percent_lock);
    pthread_cond_destroy(&p->ticker_cond);
}

void ms_progress_set_phase(MsProgress *p, const char *phase) {
    pthread_mutex_lock(&p->lock);
    bool changed = !p->phase || strcmp(p->phase, phase) != 0;
    p->phase = phase;
    pthread_mutex_unlock(&p->lock);
    /* Said at once: a reader learns what happens now (the agent's Phase) without waiting for
     * the next tick, and a short phase is not missed. */
    if (changed)
        ms_progress_report(p);
}

void ms_progress_set_namespace(MsProgress *p, const char *ns) {
    pthread_mutex_lock(&p->lock);
    snprintf(p->current_namespace, sizeof(p->current_namespace), "%s", ns ? ns : "");
    pthread_mutex_unlock(&p->lock);
}

void ms_progress_add_items(MsProgress *p, uint64_t n, uint64_t bytes) {
    __atomic_add_fetch(&p->items_done, n, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->bytes_read, bytes, __ATOMIC_RELAXED);
}

void ms_progress_add_written(MsProgress *p, uint64_t bytes) {
    __atomic_add_fetch(&p->bytes_written, bytes, __ATOMIC_RELAXED);
}

void ms_progress_add_total(MsProgress *p, uint64_t n) {
    __atomic_add_fetch(&p->items_total, n, __ATOMIC_RELAXED);
}

void ms_progress_mark_completed(MsProgress *p) {
    __atomic_store_n(&p->completed, true, __ATOMIC_RELEASE);
}

/* Until a task completes it is at most this far along: work remains (commit, indexes). */
#define MS_PROGRESS_UNFINISHED_CAP 99.9

double ms_progress_percent(MsProgress *p) {
    if (__atomic_load_n(&p->completed, __ATOMIC_ACQUIRE))
        return 100.0;
    uint64_t done = __atomic_load_n(&p->items_done, __ATOMIC_RELAXED);
    uint64_t total = __atomic_load_n(&p->items_total, __ATOMIC_RELAXED);
    /* Documents added during the dump: count against the revised total, never overshoot.
     * The stored total is revised by whoever learns the real count (the dump, per
     * collection), not here, so nothing is counted twice. */
    if (done > total)
        total = done;
    double pct = total == 0 ? 0.0 : 100.0 * (double) done / (double) total;
    if (pct > MS_PROGRESS_UNFINISHED_CAP)
        pct = MS_PROGRESS_UNFINISHED_CAP;
    /* A revised total may lower the ratio; what a person watches must not go backwards. */
    pthread_mutex_lock(&p->percent_lock);
    if (pct < p->last_percent)
        pct = p->last_percent;
    p->last_percent = pct;
    pthread_mutex_unlock(&p->percent_lock);
    return pct;
}

static void progress_write_line(MsProgress *p, const bson_t *doc) {
    size_t len;
    char *json = bson_as_relaxed_extended_json(doc, &len);
    if (!json)
        return;
    /* One write per line so a reader never sees half a message; a parent that went away
     * (EPIPE) must not kill the task, so errors are ignored here. */
    char *line = bson_malloc(len + 2);
    memcpy(line, json, len);
    line[len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t n = write(p->fd, line + off, len + 1 - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t) n;
    }
    bson_free(line);
    bson_free(json);
}

void ms_progress_event(MsProgress *p, const char *event, const bson_t *fields) {
    if (p->fd < 0)
        return;
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "event", event);
    BSON_APPEND_INT64(&doc, "elapsed_usec", (int64_t) (ms_now_usec() - p->start_usec));
    if (fields)
        bson_concat(&doc, fields);
    pthread_mutex_lock(&p->lock);
    progress_write_line(p, &doc);
    pthread_mutex_unlock(&p->lock);
    bson_destroy(&doc);
}

uint64_t ms_progress_items_total(MsProgress *p) {
    uint64_t done = __atomic_load_n(&p->items_done, __ATOMIC_RELAXED);
    uint64_t total = __atomic_load_n(&p->items_total, __ATOMIC_RELAXED);
    return done > total ? done : total;
}

void ms_progress_report(MsProgress *p) {
    if (p->fd < 0)
        return;
    double pct = ms_progress_percent(p);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "event", MONGOSNAP_PROGRESS_EVENT_PROGRESS);
    pthread_mutex_lock(&p->lock);
    BSON_APPEND_UTF8(&doc, "phase", p->phase);
    BSON_APPEND_INT64(&doc, "items_done",
                      (int64_t) __atomic_load_n(&p->items_done, __ATOMIC_RELAXED));
    BSON_APPEND_INT64(&doc, "items_total", (int64_t) ms_progress_items_total(p));
    BSON_APPEND_DOUBLE(&doc, "percent", pct);
    BSON_APPEND_INT64(&doc, "bytes_read",
                      (int64_t) __atomic_load_n(&p->bytes_read, __ATOMIC_RELAXED));
    BSON_APPEND_INT64(&doc, "bytes_written",
                      (int64_t) __atomic_load_n(&p->bytes_written, __ATOMIC_RELAXED));
    BSON_APPEND_UTF8(&doc, "namespace", p->current_namespace);
    BSON_APPEND_INT64(&doc, "elapsed_usec", (int64_t) (ms_now_usec() - p->start_usec));
    progress_write_line(p, &doc);
    pthread_mutex_unlock(&p->lock);
    bson_destroy(&doc);
}

static void *progress_ticker_main(void *arg) {
    MsProgress *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->ticker_stop) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        uint64_t ns = (uint64_t) deadline.tv_nsec + (uint64_t) p->ticker_interval_ms * 1000000ULL;
        deadline.tv_sec += (time_t) (ns / 1000000000ULL);
        deadline.tv_nsec = (long) (ns % 1000000000ULL);
        pthread_cond_timedwait(&p->ticker_cond, &p->lock, &deadline);
        if (p->ticker_stop)
            break;
        pthread_mutex_unlock(&p->lock);
        ms_progress_report(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int ms_progress_start_ticker(MsProgress *p, unsigned interval_ms) {
    if (p->fd < 0 || p->ticker_running)
        return 0;
    p->ticker_interval_ms =
        p->ticker_interval_override_ms ? p->ticker_interval_override_ms : interval_ms;
    p->ticker_stop = false;
    int r = pthread_create(&p->ticker, NULL, progress_ticker_main, p);
    if (r != 0)
        return -r;
    p->ticker_running = true;
    return 0;
}

void ms_progress_stop_ticker(MsProgress *p) {
    if (!p->ticker_running)
        return;
    pthread_mutex_lock(&p->lock);
    p->ticker_stop = true;
    pthread_cond_signal(&p->ticker_cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->ticker, NULL);
    p->ticker_running = false;
}

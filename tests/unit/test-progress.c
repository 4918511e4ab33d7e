/* Tests for task progress: the percentage rules, JSON lines on a pipe (report, events), and the
 * background ticker. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "common/macro.h"
#include "engine/progress.h"
#include "mongosnap/mongosnap.h"
#include "test.h"

#define UNFINISHED_CAP 99.9
#define EPSILON 1e-9
#define READ_BUF_LEN (256u * 1024u)
#define TICK_MS 20u
#define TICK_RUN_MS 300u
/* Even a slow sanitized build emits a few lines in TICK_RUN_MS at TICK_MS intervals. */
#define TICK_MIN_LINES 3u
#define SLOW_TICK_MS 60000u
/* Stopping must not wait for the next tick. */
#define STOP_MAX_USEC 2000000u
#define QUIET_MS 150u
#define RANDOM_STEPS 20000u
#define RACE_THREADS 4u
#define RACE_ITERATIONS 20000u
#define REPORTS_PER_THREAD 200u
#define COLLECT_BUF_LEN (8u * 1024u * 1024u)

static void sleep_ms(unsigned ms) {
    struct timespec ts = {(time_t) (ms / 1000u), (long) (ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* A pipe whose read end does not block. */
static bool make_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) < 0)
        return false;
    int fl = fcntl(fds[0], F_GETFL);
    return fl >= 0 && fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) == 0;
}

/* Everything readable now (the read end is non-blocking). */
static char *drain(int fd, size_t *ret_len) {
    char *buf = malloc(READ_BUF_LEN + 1);
    if (!buf)
        abort();
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, READ_BUF_LEN - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || len + (size_t) n >= READ_BUF_LEN) {
            if (n > 0)
                len += (size_t) n;
            break;
        }
        len += (size_t) n;
    }
    buf[len] = '\0';
    *ret_len = len;
    return buf;
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static bool get_utf8(const bson_t *b, const char *key, const char **ret) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return false;
    *ret = bson_iter_utf8(&it, NULL);
    return true;
}

static bool get_number(const bson_t *b, const char *key, double *ret) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_NUMBER(&it))
        return false;
    *ret = bson_iter_as_double(&it);
    return true;
}

static bool near(double a, double b) {
    return a - b < EPSILON && b - a < EPSILON;
}

static void percent_rules(void) {
    MsProgress p;
    ms_progress_init(&p, -1);
    double empty = ms_progress_percent(&p);
    ms_progress_add_total(&p, 200);
    ms_progress_add_items(&p, 50, 5000);
    double quarter = ms_progress_percent(&p);
    ms_progress_add_items(&p, 149, 0);
    double almost = ms_progress_percent(&p); /* 99.5 */
    ms_progress_add_items(&p, 1, 0);
    double all_items = ms_progress_percent(&p); /* every item, but not completed */
    ms_progress_mark_completed(&p);
    double done = ms_progress_percent(&p);
    uint64_t bytes = p.bytes_read;
    ms_progress_done(&p);
    ASSERT(near(empty, 0.0));
    ASSERT(near(quarter, 25.0));
    ASSERT(near(almost, 99.5));
    ASSERT(near(all_items, UNFINISHED_CAP));
    ASSERT(near(done, 100.0));
    ASSERT_EQ_INT(bytes, 5000);
}

/* More items than counted at the start (documents inserted during the dump). */
static void total_revised_upward(void) {
    MsProgress p;
    ms_progress_init(&p, -1);
    ms_progress_add_total(&p, 10);
    ms_progress_add_items(&p, 15, 0);
    double over = ms_progress_percent(&p);
    uint64_t revised = ms_progress_items_total(&p);
    ms_progress_add_total(&p, 15); /* another collection counted: the ratio drops to 60 % */
    double after_more_total = ms_progress_percent(&p);
    /* No total at all yet, but items arrive. */
    MsProgress q;
    ms_progress_init(&q, -1);
    ms_progress_add_items(&q, 3, 0);
    double no_total = ms_progress_percent(&q);
    uint64_t q_total = ms_progress_items_total(&q);
    ms_progress_done(&p);
    ms_progress_done(&q);
    ASSERT(near(over, UNFINISHED_CAP));
    ASSERT_EQ_INT(revised, 15);
    /* What a person watches never goes backwards: it stays at the highest value shown. */
    ASSERT(near(after_more_total, UNFINISHED_CAP));
    ASSERT(near(no_total, UNFINISHED_CAP));
    ASSERT_EQ_INT(q_total, 3);
}

static uint64_t xorshift64(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void percent_bounded_under_random_updates(void) {
    MsProgress p;
    ms_progress_init(&p, -1);
    uint64_t seed = UINT64_C(0x9E3779B97F4A7C15);
    size_t out_of_range = 0;
    double last = 0.0;
    for (unsigned i = 0; i < RANDOM_STEPS; i++) {
        uint64_t r = xorshift64(&seed);
        if (r & 1)
            ms_progress_add_items(&p, (r >> 8) % 1000, 0);
        else
            ms_progress_add_total(&p, (r >> 8) % 900);
        double pct = ms_progress_percent(&p);
        if (!(pct >= 0.0 && pct <= UNFINISHED_CAP) || p.items_done > ms_progress_items_total(&p) ||
            pct < last)
            out_of_range++;
        last = pct;
    }
    ms_progress_mark_completed(&p);
    double done = ms_progress_percent(&p);
    ms_progress_done(&p);
    ASSERT_EQ_INT(out_of_range, 0);
    ASSERT(near(done, 100.0));
}

typedef struct {
    MsProgress *p;
    bool reader;
    size_t bad;
} RaceArg;

static void *race_main(void *arg) {
    RaceArg *a = arg;
    for (unsigned i = 0; i < RACE_ITERATIONS; i++) {
        if (a->reader) {
            double pct = ms_progress_percent(a->p);
            if (!(pct >= 0.0 && pct <= UNFINISHED_CAP))
                a->bad++;
        } else {
            ms_progress_add_items(a->p, 3, 1);
            ms_progress_add_total(a->p, 2);
        }
    }
    return NULL;
}

/* Writers and readers at once: the percentage stays within [0, 99.9]. */
static void percent_bounded_under_threads(void) {
    MsProgress p;
    ms_progress_init(&p, -1);
    pthread_t th[RACE_THREADS];
    RaceArg args[RACE_THREADS];
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        args[i] = (RaceArg){&p, i % 2 == 0, 0};
        ASSERT(pthread_create(&th[i], NULL, race_main, &args[i]) == 0);
    }
    size_t bad = 0;
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
    }
    uint64_t done = p.items_done;
    ms_progress_done(&p);
    ASSERT_EQ_INT(bad, 0);
    ASSERT_EQ_INT(done, (uint64_t) (RACE_THREADS / 2) * RACE_ITERATIONS * 3);
}

static void report_writes_one_json_line(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ms_progress_set_phase(&p, "dump");
    ms_progress_set_namespace(&p, "shop.orders \"q\" caf\xc3\xa9");
    ms_progress_add_total(&p, 400);
    ms_progress_add_items(&p, 100, 123456);
    ms_progress_report(&p);
    ms_progress_done(&p);
    size_t len;
    _cleanup_free_ char *out = drain(fds[0], &len);
    close(fds[0]);
    close(fds[1]);
    /* Two lines: the phase change, said at once, then the report. */
    ASSERT_EQ_INT(count_lines(out), 2);
    ASSERT(len > 0 && out[len - 1] == '\n');
    ASSERT(strstr(out, "\"phase\" : \"dump\"") && strstr(out, "\"phase\" : \"dump\"") < strchr(out, '\n'));
    char *last = strchr(out, '\n') + 1;
    len -= (size_t) (last - out);
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *) last, (ssize_t) len - 1, &berr);
    if (!doc)
        fprintf(stderr, "# not JSON: %s: %s\n", berr.message, out);
    ASSERT(doc != NULL);
    const char *event = NULL, *phase = NULL, *ns = NULL;
    double done = -1, total = -1, pct = -1, bytes = -1, elapsed = -1, written = -1;
    bool ok = get_utf8(doc, "event", &event) && get_utf8(doc, "phase", &phase) &&
              get_utf8(doc, "namespace", &ns) && get_number(doc, "items_done", &done) &&
              get_number(doc, "items_total", &total) && get_number(doc, "percent", &pct) &&
              get_number(doc, "bytes_read", &bytes) && get_number(doc, "bytes_written", &written) &&
              get_number(doc, "elapsed_usec", &elapsed);
    bool values = ok && strcmp(event, MONGOSNAP_PROGRESS_EVENT_PROGRESS) == 0 &&
                  strcmp(phase, "dump") == 0 && strcmp(ns, "shop.orders \"q\" caf\xc3\xa9") == 0 &&
                  near(done, 100) && near(total, 400) && near(pct, 25.0) && near(bytes, 123456) &&
                  elapsed >= 0;
    if (!values)
        fprintf(stderr, "# unexpected line: %s", out);
    bson_destroy(doc);
    ASSERT(ok);
    ASSERT(values);
}

/* The reported percent obeys the same rules, including the 99.9 cap and the revised total. */
static void report_percent_capped_and_total_revised(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ms_progress_add_total(&p, 10);
    ms_progress_add_items(&p, 12, 0);
    ms_progress_report(&p);
    ms_progress_mark_completed(&p);
    ms_progress_set_phase(&p, "done");
    ms_progress_report(&p);
    ms_progress_done(&p);
    size_t len;
    _cleanup_free_ char *out = drain(fds[0], &len);
    close(fds[0]);
    close(fds[1]);
    /* The report, the phase change to "done" (said at once), the report again. */
    ASSERT_EQ_INT(count_lines(out), 3);
    char *nl = strchr(out, '\n');
    char *last = strchr(nl + 1, '\n') + 1;
    bson_error_t berr;
    bson_t *first = bson_new_from_json((const uint8_t *) out, nl - out, &berr);
    bson_t *second =
        bson_new_from_json((const uint8_t *) last, (ssize_t) strlen(last) - 1, &berr);
    double pct1 = -1, total1 = -1, pct2 = -1;
    const char *phase2 = NULL;
    bool ok = first && second && get_number(first, "percent", &pct1) &&
              get_number(first, "items_total", &total1) && get_number(second, "percent", &pct2) &&
              get_utf8(second, "phase", &phase2) && strcmp(phase2, "done") == 0;
    if (first)
        bson_destroy(first);
    if (second)
        bson_destroy(second);
    ASSERT(ok);
    ASSERT(near(pct1, UNFINISHED_CAP));
    ASSERT(near(total1, 12));
    ASSERT(near(pct2, 100.0));
}

static void event_adds_event_and_fields(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    bson_t fields = BSON_INITIALIZER, first;
    BSON_APPEND_UTF8(&fields, "namespace", "shop.orders");
    BSON_APPEND_INT64(&fields, "documents", 42);
    BSON_APPEND_DOCUMENT_BEGIN(&fields, "first", &first);
    BSON_APPEND_INT64(&first, "t", 1795316645);
    bson_append_document_end(&fields, &first);
    ms_progress_event(&p, MONGOSNAP_PROGRESS_EVENT_NAMESPACE, &fields);
    ms_progress_event(&p, MONGOSNAP_PROGRESS_EVENT_RESULT, NULL);
    bson_destroy(&fields);
    ms_progress_done(&p);
    size_t len;
    _cleanup_free_ char *out = drain(fds[0], &len);
    close(fds[0]);
    close(fds[1]);
    ASSERT_EQ_INT(count_lines(out), 2);
    char *nl = strchr(out, '\n');
    bson_error_t berr;
    bson_t *a = bson_new_from_json((const uint8_t *) out, nl - out, &berr);
    bson_t *b = bson_new_from_json((const uint8_t *) nl + 1, (ssize_t) strlen(nl + 1) - 1, &berr);
    const char *ev_a = NULL, *ns = NULL, *ev_b = NULL;
    double docs = -1, elapsed = -1, t = -1;
    bson_iter_t it;
    bool ok = a && b && get_utf8(a, "event", &ev_a) && get_utf8(a, "namespace", &ns) &&
              get_number(a, "documents", &docs) && get_number(a, "elapsed_usec", &elapsed) &&
              bson_iter_init(&it, a) && bson_iter_find_descendant(&it, "first.t", &it) &&
              BSON_ITER_HOLDS_NUMBER(&it) && (t = bson_iter_as_double(&it)) > 0 &&
              get_utf8(b, "event", &ev_b);
    bool values = ok && strcmp(ev_a, "namespace") == 0 && strcmp(ns, "shop.orders") == 0 &&
                  near(docs, 42) && elapsed >= 0 && near(t, 1795316645) &&
                  strcmp(ev_b, "result") == 0;
    if (a)
        bson_destroy(a);
    if (b)
        bson_destroy(b);
    if (!values)
        fprintf(stderr, "# unexpected lines: %s", out);
    ASSERT(ok);
    ASSERT(values);
}

/* Without a descriptor nothing is written and nothing fails. */
static void no_fd_is_silent(void) {
    MsProgress p;
    ms_progress_init(&p, -1);
    ms_progress_report(&p);
    ms_progress_event(&p, "x", NULL);
    ASSERT_OK(ms_progress_start_ticker(&p, TICK_MS));
    bool running = p.ticker_running;
    ms_progress_stop_ticker(&p);
    ms_progress_done(&p);
    ASSERT(!running);
}

/* A parent that went away: with SIGPIPE ignored (as the worker does), writes fail quietly. */
static void closed_reader_is_harmless(void) {
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    ASSERT(sigaction(SIGPIPE, &ign, &old) == 0);
    int fds[2];
    ASSERT(make_pipe(fds));
    close(fds[0]);
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ms_progress_report(&p);
    ms_progress_event(&p, "result", NULL);
    ms_progress_done(&p);
    close(fds[1]);
    sigaction(SIGPIPE, &old, NULL);
}

/* The namespace is cut to the buffer, never overflowing it. */
static void long_namespace_is_cut(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    char ns[MS_PROGRESS_NAMESPACE_MAX * 2];
    memset(ns, 'n', sizeof(ns) - 1);
    ns[sizeof(ns) - 1] = '\0';
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ms_progress_set_namespace(&p, ns);
    ms_progress_report(&p);
    ms_progress_set_namespace(&p, NULL);
    ms_progress_report(&p);
    ms_progress_done(&p);
    size_t len;
    _cleanup_free_ char *out = drain(fds[0], &len);
    close(fds[0]);
    close(fds[1]);
    ASSERT_EQ_INT(count_lines(out), 2);
    char *nl = strchr(out, '\n');
    bson_error_t berr;
    bson_t *a = bson_new_from_json((const uint8_t *) out, nl - out, &berr);
    bson_t *b = bson_new_from_json((const uint8_t *) nl + 1, (ssize_t) strlen(nl + 1) - 1, &berr);
    const char *na = NULL, *nb = NULL;
    bool ok = a && b && get_utf8(a, "namespace", &na) && get_utf8(b, "namespace", &nb);
    size_t la = ok ? strlen(na) : 0, lb = ok ? strlen(nb) : 1;
    if (a)
        bson_destroy(a);
    if (b)
        bson_destroy(b);
    ASSERT(ok);
    ASSERT_EQ_INT(la, MS_PROGRESS_NAMESPACE_MAX - 1);
    ASSERT_EQ_INT(lb, 0);
}

/* Every line a parseable "progress" object. Returns the number of lines, or -1. */
static long check_progress_lines(char *out) {
    long n = 0;
    for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        bson_error_t berr;
        bson_t *doc = bson_new_from_json((const uint8_t *) line, nl - line, &berr);
        const char *event = NULL;
        bool ok = doc && get_utf8(doc, "event", &event) && strcmp(event, "progress") == 0;
        if (doc)
            bson_destroy(doc);
        if (!ok) {
            fprintf(stderr, "# bad ticker line: %.*s\n", (int) (nl - line), line);
            return -1;
        }
        n++;
    }
    return n;
}

static void ticker_reports_periodically_and_stops(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ms_progress_set_phase(&p, "dump");
    ms_progress_add_total(&p, 10);
    ASSERT_OK(ms_progress_start_ticker(&p, TICK_MS));
    bool running = p.ticker_running;
    ASSERT_OK(ms_progress_start_ticker(&p, TICK_MS)); /* a second start is a no-op */
    for (unsigned i = 0; i < 10; i++) {
        ms_progress_add_items(&p, 1, 10);
        sleep_ms(TICK_RUN_MS / 10);
    }
    uint64_t t0 = ms_now_usec();
    ms_progress_stop_ticker(&p);
    uint64_t stop_usec = ms_now_usec() - t0;
    bool stopped = !p.ticker_running;
    size_t len;
    _cleanup_free_ char *out = drain(fds[0], &len);
    /* Nothing more once stopped. */
    sleep_ms(QUIET_MS);
    size_t later_len;
    _cleanup_free_ _unused_ char *later = drain(fds[0], &later_len);
    ms_progress_stop_ticker(&p); /* a second stop is a no-op */
    ms_progress_done(&p);
    close(fds[0]);
    close(fds[1]);
    long lines = check_progress_lines(out);
    if (lines >= 0 && (size_t) lines < TICK_MIN_LINES)
        fprintf(stderr, "# only %ld ticker lines in %u ms\n", lines, TICK_RUN_MS);
    ASSERT(running);
    ASSERT(stopped);
    ASSERT(lines >= (long) TICK_MIN_LINES);
    ASSERT(len > 0 && out[len - 1] == '\n'); /* whole lines only */
    ASSERT_EQ_INT(later_len, 0);
    ASSERT(stop_usec < STOP_MAX_USEC);
}

/* A long interval: stopping wakes the ticker instead of waiting for the next tick, and
 * ms_progress_done stops a running ticker by itself. */
static void ticker_stops_promptly(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ASSERT_OK(ms_progress_start_ticker(&p, SLOW_TICK_MS));
    sleep_ms(TICK_MS);
    uint64_t t0 = ms_now_usec();
    ms_progress_stop_ticker(&p);
    uint64_t first_stop = ms_now_usec() - t0;
    ASSERT_OK(ms_progress_start_ticker(&p, SLOW_TICK_MS)); /* restartable */
    bool restarted = p.ticker_running;
    t0 = ms_now_usec();
    ms_progress_done(&p);
    uint64_t done_stop = ms_now_usec() - t0;
    size_t len;
    _cleanup_free_ _unused_ char *out = drain(fds[0], &len);
    close(fds[0]);
    close(fds[1]);
    ASSERT(first_stop < STOP_MAX_USEC);
    ASSERT(restarted);
    ASSERT(done_stop < STOP_MAX_USEC);
    ASSERT_EQ_INT(len, 0); /* no tick was due */
}

/* Reports from several threads never interleave within a line. */
typedef struct {
    MsProgress *p;
} ReportArg;

static void *report_main(void *arg) {
    ReportArg *a = arg;
    for (unsigned i = 0; i < REPORTS_PER_THREAD; i++) {
        ms_progress_add_items(a->p, 1, 0);
        if (i % 2)
            ms_progress_report(a->p);
        else
            ms_progress_set_namespace(a->p, i % 4 ? "a.b" : "shop.a_much_longer_collection_name");
    }
    return NULL;
}

/* Reads the pipe until told to stop and the pipe is empty, so writers never block. */
typedef struct {
    int fd;
    bool stop;
    char *buf;
    size_t len, cap;
} Collector;

static void *collector_main(void *arg) {
    Collector *c = arg;
    for (;;) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        poll(&pfd, 1, 10);
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n > 0) {
            c->len += (size_t) n;
            if (c->len == c->cap)
                break;
            continue;
        }
        if (__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE))
            break;
    }
    c->buf[c->len] = '\0';
    return NULL;
}

static void concurrent_reports_are_whole_lines(void) {
    int fds[2];
    ASSERT(make_pipe(fds));
    Collector col = {fds[0], false, malloc(COLLECT_BUF_LEN + 1), 0, COLLECT_BUF_LEN};
    ASSERT(col.buf != NULL);
    pthread_t reader;
    ASSERT(pthread_create(&reader, NULL, collector_main, &col) == 0);
    MsProgress p;
    ms_progress_init(&p, fds[1]);
    ASSERT_OK(ms_progress_start_ticker(&p, 1));
    pthread_t th[RACE_THREADS];
    ReportArg args[RACE_THREADS];
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        args[i].p = &p;
        if (pthread_create(&th[i], NULL, report_main, &args[i]) != 0)
            abort();
    }
    for (unsigned i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    ms_progress_done(&p);
    __atomic_store_n(&col.stop, true, __ATOMIC_RELEASE);
    pthread_join(reader, NULL);
    close(fds[0]);
    close(fds[1]);
    long lines = check_progress_lines(col.buf);
    bool whole = col.len > 0 && col.buf[col.len - 1] == '\n';
    free(col.buf);
    ASSERT(whole);
    ASSERT(lines >= (long) (RACE_THREADS * REPORTS_PER_THREAD / 2));
}

MS_TEST_MAIN(TEST_CASE(percent_rules), TEST_CASE(total_revised_upward),
             TEST_CASE(percent_bounded_under_random_updates),
             TEST_CASE(percent_bounded_under_threads), TEST_CASE(report_writes_one_json_line),
             TEST_CASE(report_percent_capped_and_total_revised),
             TEST_CASE(event_adds_event_and_fields), TEST_CASE(no_fd_is_silent),
             TEST_CASE(closed_reader_is_harmless), TEST_CASE(long_namespace_is_cut),
             TEST_CASE(ticker_reports_periodically_and_stops), TEST_CASE(ticker_stops_promptly),
             TEST_CASE(concurrent_reports_are_whole_lines))

/* The job core's decisions, without a bus or a server: what every way a worker can end means
 * for its task (for each stop the agent may have asked, each exit and each last word), that the
 * first stop's reason wins, and that a stop reaches a real worker. The worker in the last case is
 * a shell script. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent-job.h"
#include "mongosnap/mongosnap.h"
#include "test.h"

typedef enum Stop { STOP_NONE, STOP_ON_REQUEST, STOP_BY_AGENT } Stop;

typedef struct Exit {
    int status;
    bool by_signal;
} Exit;

static const Exit exits[] = {
    {MONGOSNAP_EXIT_OK, false},
    {MONGOSNAP_EXIT_FAILURE, false},
    {MONGOSNAP_EXIT_USAGE, false},
    {MONGOSNAP_EXIT_CORRUPT, false},
    {MONGOSNAP_EXIT_UNREACHABLE, false},
    {MONGOSNAP_EXIT_CANCELLED, false},
    {AGENT_TASK_STATUS_LOST, false},
    {128 + SIGKILL, true},
    {128 + SIGTERM, true},
    {128 + SIGSEGV, true},
    {128 + SIGABRT, true},
};

/* The reference: what the job's end must be, written out case by case. */
static AgentJobOutcome expected_outcome(Stop stop, Exit x) {
    if (!x.by_signal && x.status == MONGOSNAP_EXIT_OK)
        return AGENT_JOB_SUCCEEDED; /* a worker that finished wins over a late stop */
    if (stop == STOP_ON_REQUEST)
        return AGENT_JOB_STOPPED;
    if (stop == STOP_BY_AGENT)
        return AGENT_JOB_INTERRUPTED;
    if (!x.by_signal && x.status == MONGOSNAP_EXIT_CANCELLED)
        return AGENT_JOB_INTERRUPTED; /* a SIGTERM someone else sent: no verdict */
    return AGENT_JOB_FAILED;
}

static void test_every_end_of_every_worker(void) {
    static const char *const messages[] = {NULL, "", "cannot reach 127.0.0.1:1"};
    unsigned cases = 0;
    for (int stop = STOP_NONE; stop <= STOP_BY_AGENT; stop++)
        for (size_t i = 0; i < sizeof(exits) / sizeof(exits[0]); i++)
            for (size_t k = 0; k < sizeof(messages) / sizeof(messages[0]); k++) {
                AgentJob j = {0};
                if (stop != STOP_NONE) {
                    j.stop_reason = "stopped on request";
                    j.stop_on_request = stop == STOP_ON_REQUEST;
                }
                j.result_message = messages[k] ? strdup(messages[k]) : NULL;
                AgentJobEnd end;
                agent_job_end(&j, exits[i].status, exits[i].by_signal, &end);
                AgentJobOutcome want = expected_outcome((Stop) stop, exits[i]);
                if (end.outcome != want)
                    fprintf(stderr, "# stop %d exit %d/%d message %zu: outcome %d, wanted %d\n",
                            stop, exits[i].status, exits[i].by_signal, k, end.outcome, want);
                ASSERT_EQ_INT(end.outcome, want);
                ASSERT_EQ_INT(end.status, exits[i].status);
                ASSERT_EQ_INT(end.by_signal, exits[i].by_signal);
                /* The reason: none for success, the stop's for a stop, the worker's words
                 * when it left any, else what the exit says; never empty for a failure. */
                if (want == AGENT_JOB_SUCCEEDED)
                    ASSERT_STREQ(end.reason, "");
                else if (stop != STOP_NONE)
                    ASSERT_STREQ(end.reason, "stopped on request");
                else if (want == AGENT_JOB_INTERRUPTED)
                    ASSERT_CONTAINS(end.reason, "not sent by the agent");
                else if (messages[k] && messages[k][0])
                    ASSERT_STREQ(end.reason, messages[k]);
                else if (exits[i].by_signal)
                    ASSERT_CONTAINS(end.reason, "killed by signal");
                else
                    ASSERT_CONTAINS(end.reason, "exited with status");
                if (want != AGENT_JOB_SUCCEEDED)
                    ASSERT(end.reason[0] != '\0');
                agent_job_reset(&j);
                ASSERT(!j.result_message && !j.stop_reason && !j.worker);
                cases++;
            }
    ASSERT_EQ_INT(cases, 3 * (sizeof(exits) / sizeof(exits[0])) * 3);
}

static void test_exit_text_names_the_signal(void) {
    char buf[128];
    agent_job_exit_text(128 + SIGKILL, true, buf, sizeof(buf));
    ASSERT_STREQ(buf, "the worker was killed by signal KILL");
    agent_job_exit_text(128 + 99, true, buf, sizeof(buf));
    ASSERT_STREQ(buf, "the worker was killed by signal ?");
    agent_job_exit_text(7, false, buf, sizeof(buf));
    ASSERT_STREQ(buf, "the worker exited with status 7");
}

static bson_t *json(const char *text) {
    bson_error_t err;
    return bson_new_from_json((const uint8_t *) text, -1, &err);
}

/* Only a result message is the job's last word; a later one replaces it. */
static void test_only_result_messages_are_kept(void) {
    AgentJob j = {0};
    bson_t *progress = json("{\"event\":\"progress\",\"message\":\"not this\"}");
    bson_t *first = json("{\"event\":\"result\",\"status\":\"failed\",\"message\":\"first\"}");
    bson_t *second = json("{\"event\":\"result\",\"status\":\"failed\",\"message\":\"second\"}");
    bson_t *silent = json("{\"event\":\"result\",\"status\":\"failed\"}");
    agent_job_take_message(&j, progress);
    ASSERT(j.result_message == NULL);
    agent_job_take_message(&j, first);
    ASSERT_STREQ(j.result_message, "first");
    agent_job_take_message(&j, second);
    ASSERT_STREQ(j.result_message, "second");
    agent_job_take_message(&j, silent); /* a result without words: none */
    ASSERT(j.result_message == NULL);
    agent_job_reset(&j);
    bson_destroy(progress);
    bson_destroy(first);
    bson_destroy(second);
    bson_destroy(silent);
}

static void test_stop_without_a_worker_is_the_callers(void) {
    AgentJob j = {0};
    ASSERT(!agent_job_stop(&j, "stopped on request", true, 1000));
    ASSERT(j.stop_reason == NULL); /* the caller ends the queued task with its own reason */
}

typedef struct Seen {
    bool ready; /* the script has set its trap (it said so on the progress pipe) */
    bool exited;
    int status;
    bool by_signal;
} Seen;

static void on_message(AgentTask *t, const bson_t *m, void *userdata) {
    ((Seen *) userdata)->ready = true;
}

static void on_exit_cb(AgentTask *t, int status, bool by_signal, void *userdata) {
    Seen *s = userdata;
    s->exited = true;
    s->status = status;
    s->by_signal = by_signal;
}

/* A stop reaches a running worker (SIGTERM; one that ignores it is killed after the grace), the
 * first reason wins, and the end reads as the first stop asked. */
static void test_stop_reaches_a_running_worker(void) {
    char script[64];
    /* Ignores SIGTERM: only the grace's SIGKILL ends it. */
    ASSERT(ms_test_write_script(script, sizeof(script), "job",
                                "trap '' TERM\necho '{\"event\":\"progress\"}' >&4\n"
                                "while :; do sleep 0.05; done\n") == 0);
    ASSERT(ms_test_block_sigchld() == 0);
    sd_event *ev = NULL;
    ASSERT(sd_event_new(&ev) >= 0);
    static const AgentTaskCallbacks cb = {.on_message = on_message, .on_exit = on_exit_cb};
    const char *args[] = {"snapshot", NULL};
    AgentTaskSpec spec = {.worker_path = script, .args = args};
    Seen seen = {0};
    AgentJob j = {0};
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(agent_task_spawn(ev, &spec, &cb, &seen, &j.worker, &e));
    time_t deadline = time(NULL) + 10;
    while (!seen.ready && time(NULL) < deadline)
        ASSERT(sd_event_run(ev, 100 * 1000) >= 0);
    ASSERT(seen.ready);
    ASSERT(agent_job_stop(&j, "stopped on request", true, 300 * 1000));
    ASSERT(agent_job_stop(&j, "the agent was stopped while the task ran", false, 0));
    deadline = time(NULL) + 10;
    while (!seen.exited && time(NULL) < deadline)
        ASSERT(sd_event_run(ev, 100 * 1000) >= 0);
    unlink(script);
    ASSERT(seen.exited);
    ASSERT(seen.by_signal);
    ASSERT_EQ_INT(seen.status, 128 + SIGKILL);
    AgentJobEnd end;
    agent_job_end(&j, seen.status, seen.by_signal, &end);
    ASSERT_EQ_INT(end.outcome, AGENT_JOB_STOPPED);
    ASSERT_STREQ(end.reason, "stopped on request");
    agent_job_reset(&j);
    sd_event_unref(ev);
}

/* ---- a job spawned by the core ---- */

typedef struct SeenJob {
    AgentJob job;
    unsigned messages;
    bool ended;
    AgentJobEnd end;
} SeenJob;

static void seen_message(AgentJob *j, const bson_t *msg) {
    MS_CONTAINER_OF(j, SeenJob, job)->messages++;
}

static void seen_end(AgentJob *j, const AgentJobEnd *end) {
    SeenJob *s = MS_CONTAINER_OF(j, SeenJob, job);
    s->ended = true;
    s->end = *end;
}

/* The core spawns the worker, hands every message to the kind after keeping a result's words,
 * and reads the exit once: a worker that says why it failed and exits 1 ends FAILED with its
 * own words. */
static void test_the_core_spawns_and_reads_the_end(void) {
    char script[64];
    ASSERT(ms_test_write_script(
               script, sizeof(script), "jobspawn",
               "echo '{\"event\":\"progress\",\"items_done\":1}' >&4\n"
               "echo '{\"event\":\"result\",\"status\":\"failed\",\"message\":\"no route\"}' >&4\n"
               "exit 1\n") == 0);
    ASSERT(ms_test_block_sigchld() == 0);
    sd_event *ev = NULL;
    ASSERT(sd_event_new(&ev) >= 0);
    static const AgentJobType type = {
        .name = "seen", .on_message = seen_message, .on_end = seen_end};
    const char *args[] = {"snapshot", NULL};
    AgentTaskSpec spec = {.worker_path = script, .args = args};
    SeenJob s = {0};
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(agent_job_spawn(&s.job, &type, ev, &spec, &e));
    time_t deadline = time(NULL) + 10;
    while (!s.ended && time(NULL) < deadline)
        ASSERT(sd_event_run(ev, 100 * 1000) >= 0);
    unlink(script);
    ASSERT(s.ended);
    ASSERT_EQ_INT(s.messages, 2);
    ASSERT_EQ_INT(s.end.outcome, AGENT_JOB_FAILED);
    ASSERT_EQ_INT(s.end.status, 1);
    ASSERT_STREQ(s.end.reason, "no route");
    agent_job_reset(&s.job);
    sd_event_unref(ev);
}

/* ---- the queue ---- */

/* A stand-in kind for the queue's tests: "starting" records the order and may be told to fail;
 * no process is involved (the queue decides only which job gets a slot). */
typedef struct FakeJob {
    AgentJob job;
    int id;
    bool refuse; /* its start fails */
    bool failed; /* fail_to_start was called */
    int *log;    /* ids in start order */
    size_t *n_log;
} FakeJob;

static int fake_start(AgentJob *j, MsError *e) {
    FakeJob *f = MS_CONTAINER_OF(j, FakeJob, job);
    if (f->refuse)
        return ms_error_set(e, EIO, "job %d cannot start", f->id);
    f->log[(*f->n_log)++] = f->id;
    return 0;
}

static void fake_fail(AgentJob *j, const char *message) {
    FakeJob *f = MS_CONTAINER_OF(j, FakeJob, job);
    f->failed = true;
    ASSERT(!j->in_queue); /* the queue let go of it before handing it over */
    ASSERT_CONTAINS(message, "cannot start");
}

static const AgentJobType fake_type_a = {
    .name = "a", .start = fake_start, .fail_to_start = fake_fail};
static const AgentJobType fake_type_b = {
    .name = "b", .start = fake_start, .fail_to_start = fake_fail};

/* Oldest first whatever the kind, never more than the limit, a slot freed by a job that ends
 * goes to the next oldest, and a job that cannot start gives its turn to the next. */
static void test_queue_order_and_limit(void) {
    int log[16];
    size_t n_log = 0;
    AgentJobQueue q = {0};
    /* Queued at times 50, 10, 40, 20, 30, 20 (a tie: arrival order decides). */
    static const uint64_t at[] = {50, 10, 40, 20, 30, 20};
    FakeJob jobs[6];
    for (int i = 0; i < 6; i++) {
        jobs[i] = (FakeJob){.id = i, .log = log, .n_log = &n_log};
        agent_queue_add(&q, &jobs[i].job, i % 2 ? &fake_type_b : &fake_type_a, at[i]);
    }
    agent_queue_add(&q, &jobs[0].job, &fake_type_a, 1); /* twice: no effect */
    ASSERT_EQ_INT(agent_queue_waiting(&q), 6);
    jobs[3].refuse = true;

    agent_queue_start(&q, 2);
    ASSERT_EQ_INT(agent_queue_running(&q), 2);
    /* 1 (10), then 3 (20) refused, then 5 (20, after 3) */
    ASSERT_EQ_INT(n_log, 2);
    ASSERT_EQ_INT(log[0], 1);
    ASSERT_EQ_INT(log[1], 5);
    ASSERT(jobs[3].failed && !jobs[3].job.in_queue);
    ASSERT_EQ_INT(agent_queue_waiting(&q), 3);

    agent_queue_start(&q, 2); /* full: nothing more */
    ASSERT_EQ_INT(n_log, 2);

    agent_queue_remove(&q, &jobs[1].job); /* job 1 ended */
    agent_queue_remove(&q, &jobs[1].job); /* twice: no effect */
    agent_queue_start(&q, 2);
    ASSERT_EQ_INT(n_log, 3);
    ASSERT_EQ_INT(log[2], 4); /* 30 */

    /* A higher limit (a reload) starts the rest, oldest first. */
    agent_queue_start(&q, 10);
    ASSERT_EQ_INT(n_log, 5);
    ASSERT_EQ_INT(log[3], 2); /* 40 */
    ASSERT_EQ_INT(log[4], 0); /* 50 */
    ASSERT_EQ_INT(agent_queue_running(&q), 4);
    ASSERT_EQ_INT(agent_queue_waiting(&q), 0);
    for (int i = 0; i < 6; i++)
        agent_queue_remove(&q, &jobs[i].job);
    ASSERT(q.head == NULL && q.tail == NULL);
}

/* Property: whatever the order of arrivals, removals and limits, no job starts while the limit
 * is reached, each start is the oldest waiting job, and the list stays consistent. */
static void test_queue_random_schedules(void) {
    uint64_t seed = 0x243f6a8885a308d3u;
#define NEXT() (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17, seed)
    unsigned runs = 0, starts = 0;
    for (int run = 0; run < 500; run++) {
        int log[64];
        size_t n_log = 0;
        AgentJobQueue q = {0};
        FakeJob jobs[32];
        int n = 0;
        unsigned limit = 1 + (unsigned) (NEXT() % 4);
        for (int step = 0; step < 60; step++) {
            uint64_t what = NEXT() % 10;
            if (what < 5 && n < 32) {
                jobs[n] =
                    (FakeJob){.id = n, .log = log, .n_log = &n_log, .refuse = NEXT() % 8 == 0};
                agent_queue_add(&q, &jobs[n].job, &fake_type_a, NEXT() % 100);
                n++;
            } else if (what < 8 && n > 0) {
                agent_queue_remove(&q, &jobs[NEXT() % (uint64_t) n].job);
            } else if (what == 8) {
                limit = 1 + (unsigned) (NEXT() % 4);
            }
            /* Which should start next: the oldest waiting, ties by arrival. */
            size_t before = n_log;
            const FakeJob *expect = NULL;
            for (AgentJob *j = q.head; j; j = j->queue_next) {
                const FakeJob *f = MS_CONTAINER_OF(j, FakeJob, job);
                if (!j->started && !f->refuse &&
                    (!expect || j->queued_usec < expect->job.queued_usec))
                    expect = f;
            }
            unsigned running = agent_queue_running(&q);
            bool room = running < limit;
            agent_queue_start(&q, limit);
            /* A lowered limit stops nothing that runs; it only starts nothing more. */
            ASSERT(agent_queue_running(&q) <= MS_MAX(limit, running));
            if (room && expect) {
                ASSERT(n_log > before);
                ASSERT_EQ_INT(log[before], expect->id);
            }
            if (n_log >= 60)
                n_log = 0; /* only the latest starts are looked at */
            starts += (unsigned) (n_log > before ? n_log - before : 0);
            /* Consistent links both ways. */
            const AgentJob *prev = NULL;
            for (const AgentJob *j = q.head; j; prev = j, j = j->queue_next)
                ASSERT(j->queue_prev == prev && j->in_queue);
            ASSERT(q.tail == prev);
        }
        runs++;
    }
#undef NEXT
    ASSERT_EQ_INT(runs, 500);
    ASSERT(starts > 1000);
}

static int n_freed;
static void fake_free(AgentJob *j) {
    ASSERT(!j->in_queue);
    n_freed++;
}

/* The jobs outside the queue: counted as they come and go (twice is once), iterated in order
 * while the one iterated removes itself, and emptied through the kind's own free. */
static void test_list_outside_the_queue(void) {
    AgentJobList l = {0};
    FakeJob jobs[5];
    for (int i = 0; i < 5; i++) {
        jobs[i] = (FakeJob){.id = i};
        agent_list_add(&l, &jobs[i].job);
    }
    agent_list_add(&l, &jobs[2].job);
    ASSERT_EQ_INT(l.n, 5);
    agent_list_remove(&l, &jobs[1].job);
    agent_list_remove(&l, &jobs[1].job);
    ASSERT_EQ_INT(l.n, 4);
    int seen[5], n_seen = 0;
    AGENT_LIST_FOREACH(j, &l) {
        seen[n_seen++] = MS_CONTAINER_OF(j, FakeJob, job)->id;
        if (MS_CONTAINER_OF(j, FakeJob, job)->id == 2)
            agent_list_remove(&l, j);
    }
    ASSERT_EQ_INT(n_seen, 4);
    ASSERT_EQ_INT(seen[0], 0);
    ASSERT_EQ_INT(seen[1], 2);
    ASSERT_EQ_INT(seen[2], 3);
    ASSERT_EQ_INT(seen[3], 4);
    ASSERT_EQ_INT(l.n, 3);
    /* Stopping jobs without a worker asks nothing of them: their kinds end them. */
    agent_list_stop(&l, "stop", true, 0);
    ASSERT_EQ_INT(l.n, 3);
    n_freed = 0;
    agent_list_free_all(&l, fake_free);
    ASSERT_EQ_INT(n_freed, 3);
    ASSERT(l.n == 0 && l.jobs.head == NULL && l.jobs.tail == NULL);
}

MS_TEST_MAIN(TEST_CASE(test_every_end_of_every_worker), TEST_CASE(test_exit_text_names_the_signal),
             TEST_CASE(test_only_result_messages_are_kept),
             TEST_CASE(test_stop_without_a_worker_is_the_callers),
             TEST_CASE(test_stop_reaches_a_running_worker),
             TEST_CASE(test_the_core_spawns_and_reads_the_end),
             TEST_CASE(test_queue_order_and_limit), TEST_CASE(test_queue_random_schedules),
             TEST_CASE(test_list_outside_the_queue))

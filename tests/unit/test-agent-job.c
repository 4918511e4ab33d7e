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
    snprintf(script, sizeof(script), "/tmp/mongosnap-test-job-%d", (int) getpid());
    FILE *f = fopen(script, "we");
    ASSERT(f);
    /* Ignores SIGTERM: only the grace's SIGKILL ends it. */
    fputs("#!/bin/sh\ntrap '' TERM\necho '{\"event\":\"progress\"}' >&4\n"
          "while :; do sleep 0.05; done\n",
          f);
    fclose(f);
    ASSERT(chmod(script, 0700) == 0);
    /* sd-event's child sources need SIGCHLD blocked, as mongosnapd does. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    ASSERT(sigprocmask(SIG_BLOCK, &mask, NULL) == 0);
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

MS_TEST_MAIN(TEST_CASE(test_every_end_of_every_worker), TEST_CASE(test_exit_text_names_the_signal),
             TEST_CASE(test_only_result_messages_are_kept),
             TEST_CASE(test_stop_without_a_worker_is_the_callers),
             TEST_CASE(test_stop_reaches_a_running_worker))

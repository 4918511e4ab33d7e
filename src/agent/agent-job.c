/* The shared life cycle of the agent's tasks (agent-job.h). */
#include "agent/agent-job.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mongosnap/mongosnap.h"

static void on_job_message(AgentTask *w, const bson_t *msg, void *userdata) {
    AgentJob *j = userdata;
    agent_job_take_message(j, msg);
    if (j->type->on_message)
        j->type->on_message(j, msg);
}

static void on_job_exit(AgentTask *w, int status, bool by_signal, void *userdata) {
    AgentJob *j = userdata;
    AgentJobEnd end;
    agent_job_end(j, status, by_signal, &end);
    j->type->on_end(j, &end);
}

int agent_job_spawn(AgentJob *j, const AgentJobType *type, sd_event *event,
                    const AgentTaskSpec *spec, MsError *e) {
    static const AgentTaskCallbacks callbacks = {
        .on_message = on_job_message,
        .on_exit = on_job_exit,
    };
    j->type = type;
    return agent_task_spawn(event, spec, &callbacks, j, &j->worker, e);
}

void agent_job_take_message(AgentJob *j, const bson_t *msg) {
    const char *event = ms_bson_str(msg, "event");
    if (!event || strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) != 0)
        return;
    const char *text = ms_bson_str(msg, "message");
    char *copy = text ? strdup(text) : NULL;
    if (text && !copy)
        return; /* out of memory: the exit's own text will do */
    free(j->result_message);
    j->result_message = copy;
}

bool agent_job_stop(AgentJob *j, const char *reason, bool on_request, uint64_t grace_usec) {
    if (!j->worker)
        return false;
    if (!j->stop_reason) {
        j->stop_reason = reason;
        j->stop_on_request = on_request;
    }
    if (on_request)
        (void) agent_task_terminate(j->worker, grace_usec);
    else
        (void) agent_task_kill(j->worker, SIGTERM);
    return true;
}

void agent_job_exit_text(int status, bool by_signal, char *buf, size_t size) {
    if (by_signal) {
        const char *name = sigabbrev_np(status - 128);
        snprintf(buf, size, "the worker was killed by signal %s", name ? name : "?");
    } else
        snprintf(buf, size, "the worker exited with status %d", status);
}

void agent_job_end(const AgentJob *j, int status, bool by_signal, AgentJobEnd *ret) {
    *ret = (AgentJobEnd){.status = status, .by_signal = by_signal};
    if (!by_signal && status == MONGOSNAP_EXIT_OK) {
        ret->outcome = AGENT_JOB_SUCCEEDED;
        return;
    }
    /* Asked to stop, it did not succeed: whatever it says (a worker stuck connecting reports
     * the connection failure once its timeout is over), it ended because it was stopped. */
    if (j->stop_reason) {
        ret->outcome = j->stop_on_request ? AGENT_JOB_STOPPED : AGENT_JOB_INTERRUPTED;
        snprintf(ret->reason, sizeof(ret->reason), "%s", j->stop_reason);
        return;
    }
    /* The worker's own exit for a SIGTERM or SIGINT it caught: someone else stopped it. */
    if (!by_signal && status == MONGOSNAP_EXIT_CANCELLED) {
        ret->outcome = AGENT_JOB_INTERRUPTED;
        snprintf(ret->reason, sizeof(ret->reason),
                 "the worker was stopped by a signal not sent by the agent");
        return;
    }
    ret->outcome = AGENT_JOB_FAILED;
    if (j->result_message && j->result_message[0])
        snprintf(ret->reason, sizeof(ret->reason), "%s", j->result_message);
    else
        agent_job_exit_text(status, by_signal, ret->reason, sizeof(ret->reason));
}

void agent_job_reset(AgentJob *j) {
    j->worker = agent_task_free(j->worker);
    free(j->result_message);
    j->result_message = NULL;
    j->stop_reason = NULL;
    j->stop_on_request = false;
}

/* ---- the queue ---- */

static bool link_tail(AgentJobQueue *q, AgentJob *j) {
    if (j->in_queue)
        return false;
    j->queue_next = NULL;
    j->queue_prev = q->tail;
    if (q->tail)
        q->tail->queue_next = j;
    else
        q->head = j;
    q->tail = j;
    j->in_queue = true;
    return true;
}

static bool unlink_job(AgentJobQueue *q, AgentJob *j) {
    if (!j->in_queue)
        return false;
    if (j->queue_prev)
        j->queue_prev->queue_next = j->queue_next;
    else
        q->head = j->queue_next;
    if (j->queue_next)
        j->queue_next->queue_prev = j->queue_prev;
    else
        q->tail = j->queue_prev;
    j->queue_prev = j->queue_next = NULL;
    j->in_queue = false;
    return true;
}

void agent_queue_add(AgentJobQueue *q, AgentJob *j, const AgentJobType *type,
                     uint64_t queued_usec) {
    if (j->in_queue)
        return;
    j->type = type;
    j->queued_usec = queued_usec;
    j->started = false;
    (void) link_tail(q, j);
}

void agent_queue_remove(AgentJobQueue *q, AgentJob *j) {
    (void) unlink_job(q, j);
}

void agent_list_add(AgentJobList *l, AgentJob *j) {
    l->n += link_tail(&l->jobs, j);
}

void agent_list_remove(AgentJobList *l, AgentJob *j) {
    l->n -= unlink_job(&l->jobs, j);
}

void agent_list_stop(AgentJobList *l, const char *reason, bool on_request, uint64_t grace_usec) {
    for (AgentJob *j = l->jobs.head; j; j = j->queue_next)
        (void) agent_job_stop(j, reason, on_request, grace_usec);
}

void agent_list_free_all(AgentJobList *l, void (*free_job)(AgentJob *j)) {
    while (l->jobs.head) {
        AgentJob *j = l->jobs.head;
        agent_list_remove(l, j);
        free_job(j);
    }
}

unsigned agent_queue_running(const AgentJobQueue *q) {
    unsigned n = 0;
    for (const AgentJob *j = q->head; j; j = j->queue_next)
        n += j->started;
    return n;
}

unsigned agent_queue_waiting(const AgentJobQueue *q) {
    unsigned n = 0;
    for (const AgentJob *j = q->head; j; j = j->queue_next)
        n += !j->started;
    return n;
}

static AgentJob *oldest_waiting(const AgentJobQueue *q) {
    AgentJob *next = NULL;
    for (AgentJob *j = q->head; j; j = j->queue_next)
        if (!j->started && (!next || j->queued_usec < next->queued_usec))
            next = j;
    return next;
}

void agent_queue_start(AgentJobQueue *q, unsigned limit) {
    /* Looked up afresh each time: a start or a failure may end other jobs (and free them). */
    while (agent_queue_running(q) < limit) {
        AgentJob *j = oldest_waiting(q);
        if (!j)
            return;
        MsError e = MS_ERROR_INIT;
        j->started = true;
        if (j->type->start(j, &e) >= 0)
            continue;
        agent_queue_remove(q, j);
        j->started = false;
        j->type->fail_to_start(j, e.message[0] ? e.message : "the worker could not be started");
    }
}

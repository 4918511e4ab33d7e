/* The shared life cycle of the agent's tasks (agent-job.h). */
#include "agent/agent-job.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mongosnap/mongosnap.h"

void agent_job_take_message(AgentJob *j, const bson_t *msg) {
    const char *event = agent_msg_str(msg, "event");
    if (!event || strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) != 0)
        return;
    const char *text = agent_msg_str(msg, "message");
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

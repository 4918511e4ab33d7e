/* The life cycle every task kind shares: its worker, a stop the agent asked for (and why), the
 * worker's last word, and what its exit means. Snapshots, restores, verifications, removals and
 * scans embed an AgentJob and map its end (AgentJobEnd) to their own states; none reads an exit
 * status or builds a "killed by signal" text itself. The oplog follower will be one more. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/agent-task.h"
#include "common/error.h"

typedef struct AgentJob AgentJob;

typedef struct AgentJobEnd AgentJobEnd;

/* A kind of job: the table of what differs between snapshots, restores and verifications,
 * removals and scans. The core spawns the worker (agent_job_spawn()), keeps its last word, and
 * reads its exit once for every kind. */
typedef struct AgentJobType {
    const char *name; /* "snapshot", "restore or verification", ... */
    /* Queued kinds: build the worker's arguments and spawn it with agent_job_spawn(), or fail
     * with e set (agent_queue_start() calls it). */
    int (*start)(AgentJob *j, MsError *e);
    /* The worker could not be started: end the job with message (it may free it). */
    void (*fail_to_start)(AgentJob *j, const char *message);
    /* One progress message of the worker, after the core kept a result's words. May be NULL. */
    void (*on_message)(AgentJob *j, const bson_t *msg);
    /* The worker is gone and every message was delivered: what its end means (agent_job_end()).
     * The job may be freed from here. */
    void (*on_end)(AgentJob *j, const AgentJobEnd *end);
} AgentJobType;

struct AgentJob {
    AgentTask *worker;       /* NULL while queued, and once its end was taken */
    const char *stop_reason; /* static text, set by the first agent_job_stop() */
    bool stop_on_request;    /* Stop, Cancel, Rebuild, as opposed to the agent stopping */
    char *result_message;    /* the worker's "result" message, when it sent one */
    /* In a queue (agent_queue_add()): its kind, its place in the order, whether started. */
    const AgentJobType *type;
    uint64_t queued_usec;
    bool started;
    AgentJob *queue_prev, *queue_next;
    bool in_queue;
};

/* The jobs that take a worker slot, queued or running, whatever their kind: started oldest
 * first (by queued_usec, then by arrival), at most a limit at once. Intrusive, so adding cannot
 * fail. */
typedef struct AgentJobQueue {
    AgentJob *head, *tail;
} AgentJobQueue;

void agent_queue_add(AgentJobQueue *q, AgentJob *j, const AgentJobType *type, uint64_t queued_usec);
/* Out of the queue (its slot, if started, is free again); a job not in it is left alone. */
void agent_queue_remove(AgentJobQueue *q, AgentJob *j);
unsigned agent_queue_running(const AgentJobQueue *q);
unsigned agent_queue_waiting(const AgentJobQueue *q);
/* Start the oldest waiting jobs while fewer than limit run. A job that cannot start leaves the
 * queue and is handed to its type's fail_to_start; the next one is tried. */
void agent_queue_start(AgentJobQueue *q, unsigned limit);

/* Jobs that take no worker slot (exports, balancer takeovers, parts taken for other nodes):
 * started at once, bounded by their kind's own limit on n. Intrusive like the queue (a job is in
 * one or the other), so adding cannot fail; removing a job not in it does nothing. */
typedef struct AgentJobList {
    AgentJobQueue jobs;
    size_t n;
} AgentJobList;

void agent_list_add(AgentJobList *l, AgentJob *j);
void agent_list_remove(AgentJobList *l, AgentJob *j);
/* agent_job_stop() of every job in it. */
void agent_list_stop(AgentJobList *l, const char *reason, bool on_request, uint64_t grace_usec);
/* Empty it, handing each job to free_job (the kind's own free, which resets the job). */
void agent_list_free_all(AgentJobList *l, void (*free_job)(AgentJob *j));
/* Each job j of list l, in the order added. The body may not remove any job but j. */
#define AGENT_LIST_FOREACH(j, l)                                                                   \
    for (AgentJob *j = (l)->jobs.head, *j##_next_ = j ? j->queue_next : NULL; j;                \
         j = j##_next_, j##_next_ = j ? j->queue_next : NULL)

typedef enum AgentJobOutcome {
    AGENT_JOB_SUCCEEDED,
    AGENT_JOB_STOPPED,     /* asked to stop on request (Stop, Cancel) and did not succeed */
    AGENT_JOB_INTERRUPTED, /* stopped by the agent (shutdown, policy deleted), or by a signal
                            * the agent did not send: the worker reached no verdict */
    AGENT_JOB_FAILED,      /* the worker failed, crashed or was killed: reason says how */
} AgentJobOutcome;

struct AgentJobEnd {
    AgentJobOutcome outcome;
    int status;     /* the exit code, or 128 + the signal */
    bool by_signal; /* the worker was killed by a signal */
    /* "" when it succeeded; else the stop's reason, the worker's own words, or what its exit
     * says ("the worker was killed by signal KILL", "the worker exited with status 7"). */
    char reason[MS_ERROR_MESSAGE_MAX];
};

/* Spawn the job's worker (agent-task.h says how) as a job of type: its messages and its end go
 * to the type's on_message and on_end. */
int agent_job_spawn(AgentJob *j, const AgentJobType *type, sd_event *event,
                    const AgentTaskSpec *spec, MsError *e);

/* Keep the message of a "result" progress message; other messages are not the job's. */
void agent_job_take_message(AgentJob *j, const bson_t *msg);

/* Ask the job to stop; the first reason wins. With a worker running, SIGTERM: asked for
 * (on_request) it is SIGKILLed if still running grace_usec later, while at shutdown the agent's
 * own timeout applies. Returns false when no worker runs: the caller ends the job itself. */
bool agent_job_stop(AgentJob *j, const char *reason, bool on_request, uint64_t grace_usec);

/* What the worker's exit means for the job. */
void agent_job_end(const AgentJob *j, int status, bool by_signal, AgentJobEnd *ret);

/* The worker freed (SIGKILLed if it still runs), the message dropped, the stop forgotten: the
 * job can run again (a removal's retry) or be freed. */
void agent_job_reset(AgentJob *j);

/* A job's exit read the way every kind's table needs it: the text of an exit without words. */
void agent_job_exit_text(int status, bool by_signal, char *buf, size_t size);

/* A worker process for one task: its inputs on inherited fds, watched on the event loop. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "archive/bson-read.h"
#include "common/error.h"
#include "common/macro.h"

/* A progress line longer than this is not one the worker writes: it is dropped, not parsed. */
#define AGENT_TASK_LINE_MAX (64u * 1024u)

/* The fds the worker finds its inputs on (after stdin, stdout and stderr). */
#define AGENT_TASK_URI_FD 3
#define AGENT_TASK_PROGRESS_FD 4

/* How often a running worker's exit is looked for besides the event loop's own watch, and the
 * exit status given when the worker is gone and its status cannot be had (it was reaped by
 * someone else): see agent_task_spawn(). */
#define AGENT_TASK_REAP_CHECK_USEC (UINT64_C(2) * UINT64_C(1000000))
#define AGENT_TASK_STATUS_LOST 255

typedef struct AgentTask AgentTask;

typedef struct AgentTaskCallbacks {
    /* One progress message (a JSON line parsed to BSON), in the order the worker wrote them. */
    void (*on_message)(AgentTask *t, const bson_t *message, void *userdata);
    /* The worker is gone and every message it wrote was delivered. exit_status is its exit
     * code, or 128 + the signal that killed it (as shells report it); killed_by_signal tells
     * which. The task may be freed from here. */
    void (*on_exit)(AgentTask *t, int exit_status, bool killed_by_signal, void *userdata);
} AgentTaskCallbacks;

typedef struct AgentTaskSpec {
    const char *worker_path; /* absolute */
    /* The worker's arguments after argv[0], NULL-terminated. The spawner appends
     * "--uri-file /dev/fd/3 --progress-fd 4": the URI never appears on a command line. */
    const char *const *args;
    const char *uri; /* may be NULL: then no --uri-file (verify needs none) */
    /* > 0: the worker's standard output (an export's client pipe); 0: the agent's own. */
    int stdout_fd;
} AgentTaskSpec;

/* Fork and exec the worker. The child gets the URI in a sealed memfd, the write end of the
 * progress pipe, /dev/null as stdin, the agent's stdout/stderr, an empty signal mask and
 * SIGTERM when the agent dies (so an agent killed outright cannot leave a worker committing a
 * snapshot the restarted agent has already marked interrupted).
 *
 * Its exit is watched twice: by the event loop's child source, and every
 * AGENT_TASK_REAP_CHECK_USEC by a peek (waitid WNOWAIT). A worker seen exited by two peeks in
 * a row whose exit the loop has not delivered is reaped and delivered by the peek, with its
 * real status; one that is gone without a status (reaped elsewhere) is delivered with
 * AGENT_TASK_STATUS_LOST. Either is logged: a task never stays running after its worker. */
int agent_task_spawn(sd_event *event, const AgentTaskSpec *spec, const AgentTaskCallbacks *cb,
                     void *userdata, AgentTask **ret_task, MsError *e);

pid_t agent_task_pid(const AgentTask *t);
bool agent_task_running(const AgentTask *t);
/* Send sig to the worker if it still runs; 0 when sent or already gone. */
int agent_task_kill(AgentTask *t, int sig);

/* Ask the worker to stop (SIGTERM: it stops cleanly, committing nothing) and SIGKILL it if it
 * still runs grace_usec later (a worker blocked in the driver's server selection cannot act on
 * SIGTERM until the driver gives up). */
int agent_task_terminate(AgentTask *t, uint64_t grace_usec);

/* Frees the task; a worker still running is sent SIGKILL and left to the event loop's reaping. */
/* Test hook: look for the exit now, as the periodic peek does (returns true when delivered). */
bool agent_task_check_exit(AgentTask *t);
/* How many exits the peek delivered because the event loop had not (since the start). */
unsigned agent_task_exits_caught_by_peek(void);
AgentTask *agent_task_free(AgentTask *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentTask *, agent_task_free);

/* Reading a worker's progress message: its numbers and strings with archive/bson-read.h
 * (ms_bson_u64, ms_bson_str, ms_bson_double); whether a field is there at all, and a strict
 * boolean (true only for a BSON true). */
bool agent_msg_has(const bson_t *msg, const char *key);
bool agent_msg_bool(const bson_t *msg, const char *key);

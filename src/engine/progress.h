/* Task progress: counters updated by worker threads, reported as JSON lines on a file descriptor.
 */
#pragma once

#include <bson/bson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/macro.h"

#define MS_PROGRESS_NAMESPACE_MAX 256

typedef struct MsProgress {
    int fd; /* -1: no reporting */
    uint64_t start_usec;
    /* Updated with __atomic builtins from any thread. */
    uint64_t items_done;
    uint64_t items_total;
    uint64_t bytes_read;
    uint64_t bytes_written;
    bool completed;
    pthread_mutex_t lock;         /* guards phase, namespace and writes to fd */
    pthread_mutex_t percent_lock; /* guards last_percent */
    double last_percent;          /* the highest percentage reported: it never goes back */
    const char *phase;
    char current_namespace[MS_PROGRESS_NAMESPACE_MAX];
    /* Ticker thread that reports every interval while a task runs. */
    pthread_t ticker;
    bool ticker_running;
    bool ticker_stop;
    unsigned ticker_interval_ms;
    /* Non-zero: every ticker uses this interval instead of its task's (--progress-interval-ms,
     * for tests that must see ticks at given moments). */
    unsigned ticker_interval_override_ms;
    pthread_cond_t ticker_cond;
} MsProgress;

void ms_progress_init(MsProgress *p, int fd);
void ms_progress_done(MsProgress *p);

/* Set the phase; a change is reported at once (a "progress" line). */
void ms_progress_set_phase(MsProgress *p, const char *phase);
void ms_progress_set_namespace(MsProgress *p, const char *ns);
void ms_progress_add_items(MsProgress *p, uint64_t n, uint64_t bytes);
void ms_progress_add_total(MsProgress *p, uint64_t n);
/* Bytes the task wrote where it writes: a restore's documents and operations the server took. */
void ms_progress_add_written(MsProgress *p, uint64_t bytes);
void ms_progress_mark_completed(MsProgress *p);

/* Percentage: never above 100, 100 only once the task is marked completed, never lower than
 * a value returned before; when more items arrive than counted at the start, they count
 * against a revised total instead of overshooting. */
double ms_progress_percent(MsProgress *p);
/* The total as reported: never below the items done. */
uint64_t ms_progress_items_total(MsProgress *p);

/* Report now (a "progress" line). */
void ms_progress_report(MsProgress *p);
/* Report an arbitrary event: adds "event" and "elapsed_usec" to fields. */
void ms_progress_event(MsProgress *p, const char *event, const bson_t *fields);

/* Start/stop the background reporter (interval in milliseconds). */
int ms_progress_start_ticker(MsProgress *p, unsigned interval_ms);
void ms_progress_stop_ticker(MsProgress *p);

uint64_t ms_now_usec(void);

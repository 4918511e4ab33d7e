/* Progress of a running task, rate-limited: written to the catalog at most once a second,
 * announced on the bus at most twice a second, with a trailing announcement so that the last
 * figures of a burst always go out. Shared by snapshots and restores. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

/* How often a running task's progress is written to the catalog: a crash loses at most this
 * much of the figures, and SQLite sees one small UPDATE a second per task. */
#define MANAGER_PROGRESS_FLUSH_USEC (1000u * 1000u)
/* The fastest Progress is announced on the bus (PropertiesChanged): twice a second. */
#define MANAGER_PROGRESS_EMIT_USEC (500u * 1000u)

typedef struct ProgressThrottle {
    sd_event *event;
    void (*flush)(void *userdata); /* write the figures to the catalog */
    void (*emit)(void *userdata);  /* announce them (PropertiesChanged) */
    void *userdata;
    uint64_t last_flush_usec;
    uint64_t last_emit_usec;
    sd_event_source *emit_timer; /* the trailing announcement of a throttled burst */
} ProgressThrottle;

void progress_throttle_init(ProgressThrottle *t, sd_event *event, void (*flush)(void *),
                            void (*emit)(void *), void *userdata);
/* New figures arrived: flush and announce them if their time has come. */
void progress_throttle_changed(ProgressThrottle *t);
/* Write the figures now (Update(), the task's end), whatever the last write was. */
void progress_throttle_flush(ProgressThrottle *t);
/* Disarm the trailing announcement (the task is gone). */
void progress_throttle_done(ProgressThrottle *t);

/* Rate-limited progress: catalog writes and bus announcements of a running task. */
#include "agent/agent-throttle.h"

#include "common/timeutil.h"

void progress_throttle_init(ProgressThrottle *t, sd_event *event, void (*flush)(void *),
                            void (*emit)(void *), void *userdata) {
    *t = (ProgressThrottle){
        .event = event,
        .flush = flush,
        .emit = emit,
        .userdata = userdata,
        /* A task's start is its first write: the first progress flush waits a second. */
        .last_flush_usec = ms_realtime_usec(),
    };
}

void progress_throttle_flush(ProgressThrottle *t) {
    t->flush(t->userdata);
    t->last_flush_usec = ms_realtime_usec();
}

static int on_emit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    ProgressThrottle *t = userdata;
    t->emit_timer = sd_event_source_disable_unref(t->emit_timer);
    t->last_emit_usec = ms_realtime_usec();
    t->emit(t->userdata);
    return 0;
}

void progress_throttle_changed(ProgressThrottle *t) {
    uint64_t now = ms_realtime_usec();
    if (now - t->last_flush_usec >= MANAGER_PROGRESS_FLUSH_USEC)
        progress_throttle_flush(t);
    if (now - t->last_emit_usec >= MANAGER_PROGRESS_EMIT_USEC) {
        t->last_emit_usec = now;
        t->emit(t->userdata);
        return;
    }
    uint64_t mono;
    if (t->emit_timer || sd_event_now(t->event, CLOCK_MONOTONIC, &mono) < 0)
        return;
    (void) sd_event_add_time(t->event, &t->emit_timer, CLOCK_MONOTONIC,
                             mono + MANAGER_PROGRESS_EMIT_USEC - (now - t->last_emit_usec), 0,
                             on_emit_timer, t);
}

void progress_throttle_done(ProgressThrottle *t) {
    t->emit_timer = sd_event_source_disable_unref(t->emit_timer);
}

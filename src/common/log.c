/* Leveled logging to stderr, with the sd-daemon "<N>" prefix so journald keeps the level. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static MsLogLevel max_level = MS_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void ms_log_set_max_level(MsLogLevel level) {
    max_level = level;
}

MsLogLevel ms_log_get_max_level(void) {
    return max_level;
}

void ms_log(MsLogLevel level, const char *fmt, ...) {
    if (level > max_level)
        return;
    /* Under journald (JOURNAL_STREAM set) a "<N>" prefix carries the priority;
     * on a terminal it would only be noise. */
    static int under_journal = -1;
    if (under_journal < 0)
        under_journal = getenv("JOURNAL_STREAM") != NULL;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log_lock);
    if (under_journal)
        fprintf(stderr, "<%d>", (int) level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&log_lock);
    va_end(ap);
}

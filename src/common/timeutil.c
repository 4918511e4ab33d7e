/* Wall-clock time helpers. */
#include "timeutil.h"

#include <stdio.h>
#include <time.h>

uint64_t ms_realtime_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static struct tm utc_of(uint64_t usec) {
    time_t t = (time_t) (usec / 1000000ULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    return tm;
}

void ms_format_iso8601(uint64_t realtime_usec, char buf[MS_ISO8601_MAX]) {
    struct tm tm = utc_of(realtime_usec);
    if (strftime(buf, MS_ISO8601_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        buf[0] = '\0';
}

void ms_format_compact(uint64_t realtime_usec, char buf[MS_ISO8601_MAX]) {
    struct tm tm = utc_of(realtime_usec);
    if (strftime(buf, MS_ISO8601_MAX, "%Y%m%dT%H%M%SZ", &tm) == 0)
        buf[0] = '\0';
}

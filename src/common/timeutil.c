/* Wall-clock time helpers. */
#include "timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t ms_realtime_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

uint64_t ms_monotonic_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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

int ms_parse_iso8601(const char *s, uint64_t *ret_usec) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
    if (!end || *end)
        return -EINVAL;
    time_t t = timegm(&tm);
    if (t < 0)
        return -EINVAL;
    *ret_usec = (uint64_t) t * 1000000ULL;
    return 0;
}

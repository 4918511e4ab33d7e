/* Wall-clock time helpers: timestamps for names, manifests and logs, all UTC. */
#pragma once

#include <stdint.h>

#define MS_ISO8601_MAX 32

uint64_t ms_realtime_usec(void);
/* CLOCK_MONOTONIC: for time-outs and durations, which a clock change must not stretch. */
uint64_t ms_monotonic_usec(void);
/* "2026-11-22T03:10:26Z" */
void ms_format_iso8601(uint64_t realtime_usec, char buf[MS_ISO8601_MAX]);
/* "20261122T031026Z": sortable, safe in object keys and file names. */
void ms_format_compact(uint64_t realtime_usec, char buf[MS_ISO8601_MAX]);

/* "2026-11-22T03:10:26Z" (as ms_format_iso8601() writes it) to microseconds; -EINVAL for
 * anything else. */
int ms_parse_iso8601(const char *s, uint64_t *ret_usec);

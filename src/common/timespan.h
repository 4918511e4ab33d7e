/* systemd time spans ("90s", "1h 30min", "30d", "0"), shared by the configuration, the store
 * locations and the worker's options. */
#pragma once

#include <stdint.h>

/* Units as systemd.time(7): us, ms, s, min (m), h, d, w, M (month = 30.44 d), y (365.25 d), with
 * their long forms; a bare number is seconds; fractions ("1.5h") are allowed. */
int ms_timespan_parse(const char *s, uint64_t *ret_usec);
#define MS_TIMESPAN_MAX 96
/* "1d 2h 30min", "0" for zero; only d/h/min/s/ms/us so that parsing gives the value back. */
void ms_timespan_format(uint64_t usec, char buf[MS_TIMESPAN_MAX]);

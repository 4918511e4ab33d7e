/* A policy's Schedule= as systemd reads it (systemd-analyze calendar). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Where systemd-analyze is; MONGOSNAP_SYSTEMD_ANALYZE overrides it (tests). */
#define AGENT_CALENDAR_ANALYZE "/usr/bin/systemd-analyze"

/* The next n elapse times of spec after base_usec (microseconds, UTC, ascending). -EINVAL with
 * systemd's reason when spec is not a calendar expression systemd accepts, or elapses never
 * again; other errors when systemd-analyze cannot be run (within a few seconds). ret_ticks
 * (free()) and ret_n may be NULL to only check. */
int agent_calendar_next(const char *spec, uint64_t base_usec, unsigned n, uint64_t **ret_ticks,
                        size_t *ret_n, MsError *e);
/* Only the check. */
int agent_calendar_check(const char *spec, MsError *e);

/* The latest elapse of spec at or before at_usec (whole seconds), in *ret; 0 when there is
 * none within about five years. Errors as agent_calendar_next(). A scheduled call's nominal
 * tick: every node computes the same one for the same tick, however late its timer fired. */
int agent_calendar_prev(const char *spec, uint64_t at_usec, uint64_t *ret, MsError *e);


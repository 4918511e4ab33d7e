/* mongosnapctl's pure text helpers: sizes, durations, times, ellipsis, key names, URI scrubbing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_USEC_PER_MSEC UINT64_C(1000)
#define CTL_USEC_PER_SEC UINT64_C(1000000)
#define CTL_SEC_PER_MINUTE UINT64_C(60)
#define CTL_SEC_PER_HOUR UINT64_C(3600)
#define CTL_SEC_PER_DAY UINT64_C(86400)

/* Buffer sizes, each large enough for the longest text its formatter writes. */
#define CTL_SIZE_MAX 24
#define CTL_DURATION_MAX 64
#define CTL_TIMESTAMP_MAX 64
#define CTL_RELATIVE_MAX 80

/* What a table shows for "nothing": no time, no error, no value. */
#define CTL_NONE "-"

/* Bytes as systemd shows them, base 1024 with one decimal: "900B", "1.0K", "87.6M". */
void ctl_format_size(uint64_t bytes, char buf[CTL_SIZE_MAX]);
/* A duration in the largest units that matter: "0", "450ms", "1min 6s", "2h 5s", "3d 4h". */
void ctl_format_duration(uint64_t usec, char buf[CTL_DURATION_MAX]);
/* A realtime in local time with its zone, "Sun 2026-11-22 05:38:10 UTC"; CTL_NONE for 0. */
void ctl_format_timestamp(uint64_t realtime_usec, char buf[CTL_TIMESTAMP_MAX]);
/* When a snapshot goes and why it stays until then: "Sun 2026-12-20 04:00:00 UTC, MaxAge"
 * (firm), "~Sun 2026-12-13 02:00:00 UTC, KeepDaily=7" (projected from the schedule), "-,
 * newest" (nothing will), "" for a snapshot retention does not manage (not completed). */
#define CTL_EXPIRY_MAX (CTL_TIMESTAMP_MAX + 64)
void ctl_format_expiry(const char *state, uint64_t firm_usec, uint64_t projected_usec,
                       const char *kept_by, char buf[CTL_EXPIRY_MAX]);
/* A realtime relative to now with its two largest units: "2h 3min ago", "5min left". */
void ctl_format_relative(uint64_t realtime_usec, uint64_t now_usec, char buf[CTL_RELATIVE_MAX]);

/* Display width of UTF-8 text, counted in code points (every character one column). */
size_t ctl_text_width(const char *s);
/* s cut to at most width columns, ending in an ellipsis ("…" or "...") when cut; malloc'ed. */
char *ctl_ellipsize(const char *s, size_t width, bool utf8);

/* A D-Bus property name as a JSON key: "RandomizedDelayUSec" -> "randomized_delay_usec". */
char *ctl_snake_case(const char *camel);

/* Overwrite, in place, the password of a MongoDB URI ("mongodb://user:PW@host") with 'x', so
 * that it no longer shows in /proc/PID/cmdline. Returns whether there was one. */
bool ctl_uri_scrub_password(char *uri);

/* What a snapshot's "Download" says: its download address; for a chunked snapshot (FileName
 * ID.index), which has none, the command that exports it; else "". */
#define CTL_DOWNLOAD_TEXT_MAX 2048
void ctl_download_text(const char *id, const char *file_name, const char *address,
                       char buf[CTL_DOWNLOAD_TEXT_MAX]);

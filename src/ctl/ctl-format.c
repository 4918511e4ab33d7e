/* mongosnapctl's pure text helpers: sizes, durations, times, ellipsis, key names, URI scrubbing. */
#include "ctl-format.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mongosnap/mongosnap.h"

#define SIZE_BASE UINT64_C(1024)
#define DECIMAL_BASE UINT64_C(10)
#define ELLIPSIS_UTF8 "\xe2\x80\xa6"
#define ELLIPSIS_ASCII "..."
/* How many units a relative time names at most: "2h 3min ago", not "2h 3min 4s ago". */
#define RELATIVE_PARTS_MAX 2

void ctl_format_size(uint64_t bytes, char buf[CTL_SIZE_MAX]) {
    static const char suffixes[] = "KMGTPE";
    if (bytes < SIZE_BASE) {
        snprintf(buf, CTL_SIZE_MAX, "%lluB", (unsigned long long) bytes);
        return;
    }
    /* Find the largest unit not above the value; one decimal, truncated like systemd's. */
    uint64_t factor = SIZE_BASE;
    size_t i = 0;
    while (i + 1 < sizeof(suffixes) - 1 && bytes / factor >= SIZE_BASE) {
        factor *= SIZE_BASE;
        i++;
    }
    uint64_t whole = bytes / factor;
    /* In floating point: the remainder times ten could overflow for the largest units. */
    uint64_t tenth = (uint64_t) ((double) (bytes % factor) * DECIMAL_BASE / (double) factor);
    if (tenth >= DECIMAL_BASE)
        tenth = DECIMAL_BASE - 1;
    snprintf(buf, CTL_SIZE_MAX, "%llu.%llu%c", (unsigned long long) whole,
             (unsigned long long) tenth, suffixes[i]);
}

typedef struct TimeUnit {
    const char *suffix;
    uint64_t seconds;
} TimeUnit;

static const TimeUnit time_units[] = {
    {"d", CTL_SEC_PER_DAY},
    {"h", CTL_SEC_PER_HOUR},
    {"min", CTL_SEC_PER_MINUTE},
    {"s", 1},
};

/* Whole seconds as "1d 2h 3min 4s", at most max_parts units, zero units left out. */
static void format_seconds(uint64_t seconds, size_t max_parts, char *buf, size_t size) {
    size_t o = 0, parts = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(time_units) / sizeof(time_units[0]) && parts < max_parts; i++) {
        uint64_t n = seconds / time_units[i].seconds;
        if (n == 0)
            continue;
        seconds %= time_units[i].seconds;
        int w = snprintf(buf + o, size - o, "%s%llu%s", parts ? " " : "", (unsigned long long) n,
                         time_units[i].suffix);
        if (w < 0 || (size_t) w >= size - o)
            return;
        o += (size_t) w;
        parts++;
    }
}

void ctl_format_duration(uint64_t usec, char buf[CTL_DURATION_MAX]) {
    if (usec == 0)
        snprintf(buf, CTL_DURATION_MAX, "0");
    else if (usec < CTL_USEC_PER_MSEC)
        snprintf(buf, CTL_DURATION_MAX, "%lluus", (unsigned long long) usec);
    else if (usec < CTL_USEC_PER_SEC)
        snprintf(buf, CTL_DURATION_MAX, "%llums", (unsigned long long) (usec / CTL_USEC_PER_MSEC));
    else
        format_seconds(usec / CTL_USEC_PER_SEC, sizeof(time_units) / sizeof(time_units[0]), buf,
                       CTL_DURATION_MAX);
}

void ctl_format_timestamp(uint64_t realtime_usec, char buf[CTL_TIMESTAMP_MAX]) {
    if (realtime_usec == 0) {
        snprintf(buf, CTL_TIMESTAMP_MAX, "%s", CTL_NONE);
        return;
    }
    time_t t = (time_t) (realtime_usec / CTL_USEC_PER_SEC);
    struct tm tm;
    if (!localtime_r(&t, &tm) ||
        strftime(buf, CTL_TIMESTAMP_MAX, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
        snprintf(buf, CTL_TIMESTAMP_MAX, "%s", CTL_NONE);
}

void ctl_format_expiry(const char *state, uint64_t firm_usec, uint64_t projected_usec,
                       const char *kept_by, char buf[CTL_EXPIRY_MAX]) {
    char when[CTL_TIMESTAMP_MAX];
    bool completed = state && strcmp(state, "completed") == 0;
    if (!completed && firm_usec == 0) {
        buf[0] = '\0';
        return;
    }
    uint64_t t = firm_usec ? firm_usec : projected_usec;
    ctl_format_timestamp(t, when);
    snprintf(buf, CTL_EXPIRY_MAX, "%s%s%s%s", !firm_usec && projected_usec ? "~" : "", when,
             kept_by && *kept_by ? ", " : "", kept_by ? kept_by : "");
}

void ctl_format_relative(uint64_t realtime_usec, uint64_t now_usec, char buf[CTL_RELATIVE_MAX]) {
    if (realtime_usec == 0) {
        snprintf(buf, CTL_RELATIVE_MAX, "%s", CTL_NONE);
        return;
    }
    bool past = realtime_usec <= now_usec;
    uint64_t seconds =
        (past ? now_usec - realtime_usec : realtime_usec - now_usec) / CTL_USEC_PER_SEC;
    if (seconds == 0) {
        snprintf(buf, CTL_RELATIVE_MAX, "%s", past ? "just now" : "now");
        return;
    }
    char span[CTL_DURATION_MAX];
    format_seconds(seconds, RELATIVE_PARTS_MAX, span, sizeof(span));
    snprintf(buf, CTL_RELATIVE_MAX, "%s %s", span, past ? "ago" : "left");
}

/* UTF-8 continuation bytes are 10xxxxxx: they do not start a character. */
#define UTF8_CONTINUATION_MASK 0xC0
#define UTF8_CONTINUATION_BITS 0x80

static bool is_continuation_byte(unsigned char c) {
    return (c & UTF8_CONTINUATION_MASK) == UTF8_CONTINUATION_BITS;
}

size_t ctl_text_width(const char *s) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) s; p && *p; p++)
        n += !is_continuation_byte(*p);
    return n;
}

/* The byte offset where the first `columns` characters of s end. */
static size_t prefix_bytes(const char *s, size_t columns) {
    size_t i = 0, seen = 0;
    for (; s[i]; i++) {
        if (!is_continuation_byte((unsigned char) s[i])) {
            if (seen == columns)
                break;
            seen++;
        }
    }
    return i;
}

char *ctl_ellipsize(const char *s, size_t width, bool utf8) {
    if (!s)
        s = "";
    if (ctl_text_width(s) <= width)
        return strdup(s);
    const char *ellipsis = utf8 ? ELLIPSIS_UTF8 : ELLIPSIS_ASCII;
    size_t ellipsis_width = ctl_text_width(ellipsis);
    if (width < ellipsis_width)
        return strndup(s, prefix_bytes(s, width));
    size_t keep = prefix_bytes(s, width - ellipsis_width);
    char *out = malloc(keep + strlen(ellipsis) + 1);
    if (!out)
        return NULL;
    memcpy(out, s, keep);
    strcpy(out + keep, ellipsis);
    return out;
}

char *ctl_snake_case(const char *camel) {
    /* Twice the length holds an underscore before every character. */
    size_t len = strlen(camel);
    char *out = malloc(2 * len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = camel[i];
        /* "USec" is one word in systemd's property names (TimeoutUSec). */
        if (strncmp(camel + i, "USec", strlen("USec")) == 0) {
            if (o > 0)
                out[o++] = '_';
            memcpy(out + o, "usec", strlen("usec"));
            o += strlen("usec");
            i += strlen("USec") - 1;
            continue;
        }
        bool upper = isupper((unsigned char) c);
        bool after_lower = i > 0 && (islower((unsigned char) camel[i - 1]) ||
                                     isdigit((unsigned char) camel[i - 1]));
        bool acronym_end = i > 0 && isupper((unsigned char) camel[i - 1]) && i + 1 < len &&
                           islower((unsigned char) camel[i + 1]);
        if (upper && o > 0 && (after_lower || acronym_end))
            out[o++] = '_';
        out[o++] = (char) tolower((unsigned char) c);
    }
    out[o] = '\0';
    return out;
}

bool ctl_uri_scrub_password(char *uri) {
    char *authority = uri ? strstr(uri, "://") : NULL;
    if (!authority)
        return false;
    authority += strlen("://");
    size_t authority_len = strcspn(authority, "/?#");
    char *at = NULL;
    for (size_t i = 0; i < authority_len; i++)
        if (authority[i] == '@')
            at = authority + i;
    if (!at)
        return false;
    char *colon = memchr(authority, ':', (size_t) (at - authority));
    if (!colon || colon + 1 == at)
        return false;
    memset(colon + 1, 'x', (size_t) (at - colon - 1));
    return true;
}

void ctl_download_text(const char *id, const char *file_name, const char *address,
                       char buf[CTL_DOWNLOAD_TEXT_MAX]) {
    size_t n = file_name ? strlen(file_name) : 0, sfx = strlen(MONGOSNAP_INDEX_SUFFIX);
    if (address && *address)
        snprintf(buf, CTL_DOWNLOAD_TEXT_MAX, "%s", address);
    else if (n > sfx && strcmp(file_name + n - sfx, MONGOSNAP_INDEX_SUFFIX) == 0)
        snprintf(buf, CTL_DOWNLOAD_TEXT_MAX, "mongosnapctl export %s > %s.archive", id, id);
    else
        buf[0] = '\0';
}

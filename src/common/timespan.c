/* systemd time spans ("90s", "1h 30min", "30d"): parsing as systemd.time(7), canonical output. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/macro.h"
#include "common/timespan.h"

/* The blanks between a number and its unit, and between parts: as the configuration's. */
static bool ascii_isblank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL
#define USEC_PER_MINUTE (60ULL * USEC_PER_SEC)
#define USEC_PER_HOUR (60ULL * USEC_PER_MINUTE)
#define USEC_PER_DAY (24ULL * USEC_PER_HOUR)
#define USEC_PER_WEEK (7ULL * USEC_PER_DAY)
/* systemd.time(7): a month is 30.44 days, a year 365.25 days. */
#define USEC_PER_MONTH (2629800ULL * USEC_PER_SEC)
#define USEC_PER_YEAR (31557600ULL * USEC_PER_SEC)

static const struct {
    const char *suffix;
    uint64_t usec;
} timespan_units[] = {
    {"seconds", USEC_PER_SEC},
    {"second", USEC_PER_SEC},
    {"sec", USEC_PER_SEC},
    {"s", USEC_PER_SEC},
    {"minutes", USEC_PER_MINUTE},
    {"minute", USEC_PER_MINUTE},
    {"min", USEC_PER_MINUTE},
    {"m", USEC_PER_MINUTE},
    {"months", USEC_PER_MONTH},
    {"month", USEC_PER_MONTH},
    {"M", USEC_PER_MONTH},
    {"msec", USEC_PER_MSEC},
    {"ms", USEC_PER_MSEC},
    {"hours", USEC_PER_HOUR},
    {"hour", USEC_PER_HOUR},
    {"hr", USEC_PER_HOUR},
    {"h", USEC_PER_HOUR},
    {"days", USEC_PER_DAY},
    {"day", USEC_PER_DAY},
    {"d", USEC_PER_DAY},
    {"weeks", USEC_PER_WEEK},
    {"week", USEC_PER_WEEK},
    {"w", USEC_PER_WEEK},
    {"years", USEC_PER_YEAR},
    {"year", USEC_PER_YEAR},
    {"y", USEC_PER_YEAR},
    {"usec", 1},
    {"us", 1},
    {"\xc2\xb5s", 1} /* µs */,
    {"\xce\xbcs", 1} /* μs */,
};

static bool timespan_unit(const char *u, size_t len, uint64_t *ret) {
    if (len == 0) {
        *ret = USEC_PER_SEC; /* a bare number is seconds, as in systemd */
        return true;
    }
    for (size_t i = 0; i < ELEMENTSOF(timespan_units); i++)
        if (strlen(timespan_units[i].suffix) == len &&
            memcmp(timespan_units[i].suffix, u, len) == 0) {
            *ret = timespan_units[i].usec;
            return true;
        }
    return false;
}

int ms_timespan_parse(const char *s, uint64_t *ret_usec) {
    if (!s)
        return -EINVAL;
    const char *p = s;
    uint64_t total = 0;
    bool any = false;
    for (;;) {
        while (ascii_isblank(*p))
            p++;
        if (!*p)
            break;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        uint64_t whole = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            if (__builtin_mul_overflow(whole, 10, &whole) ||
                __builtin_add_overflow(whole, (uint64_t) (*p - '0'), &whole))
                return -ERANGE;
        const char *frac = NULL;
        size_t frac_len = 0;
        if (*p == '.') {
            frac = ++p;
            for (; *p >= '0' && *p <= '9'; p++)
                frac_len++;
            if (frac_len == 0)
                return -EINVAL;
        }
        while (ascii_isblank(*p))
            p++;
        const char *unit = p;
        while (*p && !ascii_isblank(*p) && !(*p >= '0' && *p <= '9') && *p != '.')
            p++;
        uint64_t mult;
        if (!timespan_unit(unit, (size_t) (p - unit), &mult))
            return -EINVAL;
        uint64_t part;
        if (__builtin_mul_overflow(whole, mult, &part) ||
            __builtin_add_overflow(total, part, &total))
            return -ERANGE;
        /* Each fractional digit is worth a tenth of the one before; digits finer than a
         * microsecond fall away. */
        uint64_t scale = mult;
        for (size_t i = 0; i < frac_len && scale > 0; i++) {
            scale /= 10;
            if (__builtin_add_overflow(total, (uint64_t) (frac[i] - '0') * scale, &total))
                return -ERANGE;
        }
        any = true;
    }
    if (!any)
        return -EINVAL;
    *ret_usec = total;
    return 0;
}

void ms_timespan_format(uint64_t usec, char buf[MS_TIMESPAN_MAX]) {
    static const struct {
        const char *suffix;
        uint64_t usec;
    } units[] = {
        {"d", USEC_PER_DAY}, {"h", USEC_PER_HOUR},  {"min", USEC_PER_MINUTE},
        {"s", USEC_PER_SEC}, {"ms", USEC_PER_MSEC}, {"us", 1},
    };
    if (usec == 0) {
        snprintf(buf, MS_TIMESPAN_MAX, "0");
        return;
    }
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ELEMENTSOF(units) && usec > 0; i++) {
        if (usec < units[i].usec)
            continue;
        unsigned long long n = usec / units[i].usec;
        usec %= units[i].usec;
        int w =
            snprintf(buf + o, MS_TIMESPAN_MAX - o, "%s%llu%s", o ? " " : "", n, units[i].suffix);
        if (w < 0 || (size_t) w >= MS_TIMESPAN_MAX - o)
            break;
        o += (size_t) w;
    }
}

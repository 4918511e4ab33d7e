/* mongosnapctl's JSON output: a small streaming writer with stable snake_case keys. */
#include "ctl-json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"

#define TIME_KEY_MAX 128
/* Below this, and DEL, characters are escaped as \uXXXX. */
#define JSON_CONTROL_LIMIT 0x20
#define ASCII_DEL 0x7f

void ctl_json_init(CtlJson *j, FILE *f) {
    memset(j, 0, sizeof(*j));
    j->f = f;
}

/* Before any value: the comma that separates it from the previous one in its container. */
static void before_value(CtlJson *j) {
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    /* Top-level values are documents of their own, one per line: no comma between them. */
    if (j->depth > 0 && j->has_items[j->depth])
        fputc(',', j->f);
    j->has_items[j->depth] = true;
}

static void begin(CtlJson *j, char open) {
    before_value(j);
    fputc(open, j->f);
    if (j->depth < CTL_JSON_DEPTH_MAX)
        j->depth++;
    j->has_items[j->depth] = false;
}

static void end(CtlJson *j, char close) {
    fputc(close, j->f);
    if (j->depth > 0)
        j->depth--;
    /* The outermost value ends a document: one per line. */
    if (j->depth == 0)
        fputc('\n', j->f);
}

void ctl_json_begin_object(CtlJson *j) {
    begin(j, '{');
}

void ctl_json_end_object(CtlJson *j) {
    end(j, '}');
}

void ctl_json_begin_array(CtlJson *j) {
    begin(j, '[');
}

void ctl_json_end_array(CtlJson *j) {
    end(j, ']');
}

static void write_escaped(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < JSON_CONTROL_LIMIT || *p == ASCII_DEL)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void ctl_json_key(CtlJson *j, const char *key) {
    before_value(j);
    write_escaped(j->f, key);
    fputc(':', j->f);
    j->after_key = true;
}

void ctl_json_string(CtlJson *j, const char *s) {
    if (!s) {
        ctl_json_null(j);
        return;
    }
    before_value(j);
    write_escaped(j->f, s);
}

void ctl_json_uint(CtlJson *j, uint64_t v) {
    before_value(j);
    fprintf(j->f, "%" PRIu64, v);
}

void ctl_json_int(CtlJson *j, int64_t v) {
    before_value(j);
    fprintf(j->f, "%" PRId64, v);
}

void ctl_json_double(CtlJson *j, double v) {
    /* JSON has no NaN or infinity. */
    if (!isfinite(v)) {
        ctl_json_null(j);
        return;
    }
    before_value(j);
    /* 17 significant digits read back as the same double. */
    fprintf(j->f, "%.17g", v);
}

void ctl_json_bool(CtlJson *j, bool v) {
    before_value(j);
    fputs(v ? "true" : "false", j->f);
}

void ctl_json_null(CtlJson *j) {
    before_value(j);
    fputs("null", j->f);
}

void ctl_json_field_string(CtlJson *j, const char *key, const char *s) {
    ctl_json_key(j, key);
    ctl_json_string(j, s);
}

void ctl_json_field_uint(CtlJson *j, const char *key, uint64_t v) {
    ctl_json_key(j, key);
    ctl_json_uint(j, v);
}

void ctl_json_field_double(CtlJson *j, const char *key, double v) {
    ctl_json_key(j, key);
    ctl_json_double(j, v);
}

void ctl_json_field_bool(CtlJson *j, const char *key, bool v) {
    ctl_json_key(j, key);
    ctl_json_bool(j, v);
}

void ctl_json_field_time(CtlJson *j, const char *key, uint64_t realtime_usec) {
    ctl_json_key(j, key);
    if (realtime_usec == 0)
        ctl_json_null(j);
    else {
        char iso[MS_ISO8601_MAX];
        ms_format_iso8601(realtime_usec, iso);
        ctl_json_string(j, iso);
    }
    char usec_key[TIME_KEY_MAX];
    snprintf(usec_key, sizeof(usec_key), "%s_usec", key);
    ctl_json_field_uint(j, usec_key, realtime_usec);
}

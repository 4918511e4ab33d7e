/* mongosnapctl's JSON output: a small streaming writer with stable snake_case keys. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Objects nest at most this deep in anything mongosnapctl prints. */
#define CTL_JSON_DEPTH_MAX 8

typedef struct CtlJson {
    FILE *f;
    unsigned depth;
    bool has_items[CTL_JSON_DEPTH_MAX + 1]; /* per level: a comma goes before the next value */
    bool after_key;
} CtlJson;

void ctl_json_init(CtlJson *j, FILE *f);
void ctl_json_begin_object(CtlJson *j);
void ctl_json_end_object(CtlJson *j);
void ctl_json_begin_array(CtlJson *j);
void ctl_json_end_array(CtlJson *j);
void ctl_json_key(CtlJson *j, const char *key);

void ctl_json_string(CtlJson *j, const char *s); /* NULL: null */
void ctl_json_uint(CtlJson *j, uint64_t v);
void ctl_json_int(CtlJson *j, int64_t v);
void ctl_json_double(CtlJson *j, double v);
void ctl_json_bool(CtlJson *j, bool v);
void ctl_json_null(CtlJson *j);

/* Key/value shorthands inside an object. */
void ctl_json_field_string(CtlJson *j, const char *key, const char *s);
void ctl_json_field_uint(CtlJson *j, const char *key, uint64_t v);
void ctl_json_field_double(CtlJson *j, const char *key, double v);
void ctl_json_field_bool(CtlJson *j, const char *key, bool v);
/* A point in time as two keys: KEY as ISO 8601 UTC ("2026-11-22T05:38:10Z", null for 0) and
 * KEY_usec with the raw microseconds. */
void ctl_json_field_time(CtlJson *j, const char *key, uint64_t realtime_usec);

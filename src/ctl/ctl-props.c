/* mongosnapctl's copy of an object's properties (Properties.GetAll), and their JSON form. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"
/* Properties of type t whose names end so are points in time (LastRun, CreateTime). */
#define TIME_SUFFIX "Time"
#define RUN_SUFFIX "Run"

static void prop_done(CtlProp *p) {
    free(p->name);
    if (p->type == SD_BUS_TYPE_STRING || p->type == SD_BUS_TYPE_OBJECT_PATH)
        free(p->str);
    else if (p->type == SD_BUS_TYPE_ARRAY) {
        for (char **s = p->strv; s && *s; s++)
            free(*s);
        free(p->strv);
    }
}

void ctl_props_done(CtlProps *p) {
    for (size_t i = 0; i < p->n; i++)
        prop_done(&p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

/* a(tt) of (from, to) microsecond pairs (Restorable): kept as ISO 8601 intervals
 * ("2026-12-06T10:00:00Z/2026-12-06T11:00:00Z"), which both the status and JSON show as is. */
static int read_intervals(sd_bus_message *m, char ***ret) {
    int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "(tt)");
    char **v = calloc(1, sizeof(char *));
    size_t n = 0;
    if (!v)
        return -ENOMEM;
    uint64_t from, to;
    while (r >= 0 && (r = sd_bus_message_read(m, "(tt)", &from, &to)) > 0) {
        char a[MS_ISO8601_MAX], b[MS_ISO8601_MAX], *s = NULL;
        ms_format_iso8601(from, a);
        ms_format_iso8601(to, b);
        char **grown = realloc(v, (n + 2) * sizeof(char *));
        if (!grown || asprintf(&s, "%s/%s", a, b) < 0) {
            r = -ENOMEM;
            if (grown)
                v = grown;
            break;
        }
        v = grown;
        v[n++] = s;
        v[n] = NULL;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        return r;
    }
    *ret = v;
    return 0;
}

/* The value inside the variant m is at, by its type; an unknown type is skipped (-EOPNOTSUPP). */
static int read_value(sd_bus_message *m, const char *contents, CtlProp *p) {
    const char *s;
    int b, r;
    int32_t i32;
    uint32_t u32;
    p->type = contents[0];
    switch (contents[0]) {
    case SD_BUS_TYPE_STRING:
    case SD_BUS_TYPE_OBJECT_PATH:
        r = sd_bus_message_read_basic(m, contents[0], &s);
        if (r >= 0 && !(p->str = strdup(s)))
            r = -ENOMEM;
        return r;
    case SD_BUS_TYPE_BOOLEAN:
        r = sd_bus_message_read_basic(m, 'b', &b);
        p->b = b;
        return r;
    case SD_BUS_TYPE_INT32:
        r = sd_bus_message_read_basic(m, 'i', &i32);
        p->i64 = i32;
        return r;
    case SD_BUS_TYPE_UINT32:
        r = sd_bus_message_read_basic(m, 'u', &u32);
        p->u64 = u32;
        return r;
    case SD_BUS_TYPE_UINT64:
        return sd_bus_message_read_basic(m, 't', &p->u64);
    case SD_BUS_TYPE_DOUBLE:
        return sd_bus_message_read_basic(m, 'd', &p->dbl);
    default:
        if (strcmp(contents, "as") == 0)
            return sd_bus_message_read_strv(m, &p->strv);
        if (strcmp(contents, "a(tt)") == 0) {
            p->type = SD_BUS_TYPE_ARRAY;
            return read_intervals(m, &p->strv);
        }
        p->type = 0;
        r = sd_bus_message_skip(m, contents);
        return r < 0 ? r : -EOPNOTSUPP;
    }
}

/* Append p (taking what it owns, also on failure) under name. */
static int props_append(CtlProps *props, const char *name, CtlProp *p) {
    CtlProp *grown = realloc(props->items, (props->n + 1) * sizeof(CtlProp));
    if (grown)
        props->items = grown;
    p->name = strdup(name);
    if (!grown || !p->name) {
        prop_done(p);
        return -ENOMEM;
    }
    props->items[props->n++] = *p;
    return 0;
}

/* One "{sv}" entry; returns 0 at the end of the array. */
static int read_entry(sd_bus_message *m, CtlProps *props) {
    int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv");
    if (r <= 0)
        return r;
    const char *name, *contents;
    r = sd_bus_message_read(m, "s", &name);
    if (r >= 0)
        r = sd_bus_message_peek_type(m, NULL, &contents);
    if (r >= 0)
        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, contents);
    if (r < 0)
        return r;
    CtlProp p = {0};
    r = read_value(m, contents, &p);
    if (r >= 0)
        r = props_append(props, name, &p);
    else if (r == -EOPNOTSUPP)
        r = 0;
    if (r < 0)
        return r;
    r = sd_bus_message_exit_container(m);
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    return r < 0 ? r : 1;
}

int ctl_get_properties(sd_bus *bus, const char *path, const char *interface, CtlProps *ret,
                       sd_bus_error *error) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_call_method(bus, MONGOSNAP_BUS_NAME, path, PROPERTIES_INTERFACE, "GetAll", error,
                               &reply, "s", interface);
    if (r < 0)
        return r;
    CtlProps props = {0};
    r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{sv}");
    while (r > 0)
        r = read_entry(reply, &props);
    if (r >= 0)
        r = sd_bus_message_exit_container(reply);
    if (r < 0) {
        ctl_props_done(&props);
        return r;
    }
    *ret = props;
    return 0;
}

const CtlProp *ctl_props_find(const CtlProps *p, const char *name) {
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return &p->items[i];
    return NULL;
}

const char *ctl_props_str(const CtlProps *p, const char *name) {
    const CtlProp *x = ctl_props_find(p, name);
    bool text = x && (x->type == SD_BUS_TYPE_STRING || x->type == SD_BUS_TYPE_OBJECT_PATH);
    return text && x->str ? x->str : "";
}

uint64_t ctl_props_u64(const CtlProps *p, const char *name) {
    const CtlProp *x = ctl_props_find(p, name);
    if (!x)
        return 0;
    if (x->type == SD_BUS_TYPE_INT32)
        return (uint64_t) x->i64;
    return x->type == SD_BUS_TYPE_UINT64 || x->type == SD_BUS_TYPE_UINT32 ? x->u64 : 0;
}

double ctl_props_double(const CtlProps *p, const char *name) {
    const CtlProp *x = ctl_props_find(p, name);
    return x && x->type == SD_BUS_TYPE_DOUBLE ? x->dbl : 0;
}

bool ctl_props_bool(const CtlProps *p, const char *name) {
    const CtlProp *x = ctl_props_find(p, name);
    return x && x->type == SD_BUS_TYPE_BOOLEAN && x->b;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void json_value(CtlJson *j, const char *key, const CtlProp *x) {
    switch (x->type) {
    case SD_BUS_TYPE_UINT64:
        if (ends_with(x->name, TIME_SUFFIX) || ends_with(x->name, RUN_SUFFIX))
            ctl_json_field_time(j, key, x->u64);
        else
            ctl_json_field_uint(j, key, x->u64);
        return;
    case SD_BUS_TYPE_UINT32:
        ctl_json_field_uint(j, key, x->u64);
        return;
    case SD_BUS_TYPE_INT32:
        ctl_json_key(j, key);
        ctl_json_int(j, x->i64);
        return;
    case SD_BUS_TYPE_DOUBLE:
        ctl_json_field_double(j, key, x->dbl);
        return;
    case SD_BUS_TYPE_BOOLEAN:
        ctl_json_key(j, key);
        ctl_json_bool(j, x->b);
        return;
    case SD_BUS_TYPE_ARRAY:
        ctl_json_key(j, key);
        ctl_json_begin_array(j);
        for (char **s = x->strv; s && *s; s++)
            ctl_json_string(j, *s);
        ctl_json_end_array(j);
        return;
    default:
        ctl_json_field_string(j, key, x->str ? x->str : "");
    }
}

void ctl_json_props(CtlJson *j, const CtlProps *p) {
    for (size_t i = 0; i < p->n; i++) {
        _cleanup_free_ char *key = ctl_snake_case(p->items[i].name);
        if (key)
            json_value(j, key, &p->items[i]);
    }
}

/* A table-driven INI reader over inih: keys with their setters and getters, FILE:LINE errors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Internal to src/config/: config.c describes mongosnap.conf and policy files with these
 * tables; the syntax rules are documented in config.h. */

static inline bool ascii_isalnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static inline bool ascii_isblank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static inline bool is_control(char c) {
    return (unsigned char) c < 0x20 || c == 0x7f;
}

typedef struct IniKey IniKey;
/* value NULL: reset to unset. append: a repeatable key's file line adds to the list (an
 * edit replaces it). */
typedef int (*IniSetter)(void *obj, const IniKey *k, const char *value, bool append, MsError *e);
/* The value as a file would say it ("" when unset); NULL only when out of memory. */
typedef char *(*IniGetter)(const void *obj, const IniKey *k);

struct IniKey {
    const char *section;
    const char *name;
    size_t offset; /* of the field in the object */
    bool repeatable;
    const char *default_value; /* what "Key=" means; NULL: unset */
    unsigned min, max;         /* numbers */
    IniSetter set;
    IniGetter get;
};

typedef struct IniSchema {
    const char *const *sections;
    size_t n_sections;
    const IniKey *keys;
    size_t n_keys;
} IniSchema;

#define INI_FIELD(obj, k) ((void *) ((char *) (obj) + (k)->offset))
#define INI_CFIELD(obj, k) ((const void *) ((const char *) (obj) + (k)->offset))

/* Parse text (len bytes, no NUL inside) into obj through the schema's setters. The first
 * error stops the parse; its message starts with "path:line: ". */
int ini_schema_parse(const IniSchema *schema, void *obj, const char *path, const char *text,
                     size_t len, MsError *e);
/* Read a whole configuration file (name relative to dir_fd, or AT_FDCWD); path names it in
 * messages. Refuses non-regular files, NUL bytes and more than a configuration file needs. */
int ini_read_file(int dir_fd, const char *name, const char *path, char **ret, size_t *ret_len,
                  MsError *e);

/* The key of section (NULL: any section) called name. */
const IniKey *ini_schema_key(const IniSchema *schema, const char *section, const char *name);
/* "Source, Credential, ..." for one section. */
void ini_schema_list_keys(const IniSchema *schema, const char *section, char *buf, size_t size);
/* Digits only, within [min, max]: -EINVAL or -ERANGE otherwise. */
int ini_parse_unsigned(const char *v, unsigned min, unsigned max, unsigned *ret);

/* Setters and getters for plain fields: unsigned (k->min..k->max), bool (yes/no and the other
 * systemd words), uint64_t microseconds as a systemd time span, and char * (getter only). */
int ini_set_unsigned(void *obj, const IniKey *k, const char *v, bool append, MsError *e);
char *ini_get_unsigned(const void *obj, const IniKey *k);
int ini_set_bool(void *obj, const IniKey *k, const char *v, bool append, MsError *e);
char *ini_get_bool(const void *obj, const IniKey *k);
int ini_set_timespan(void *obj, const IniKey *k, const char *v, bool append, MsError *e);
char *ini_get_timespan(const void *obj, const IniKey *k);
char *ini_get_string(const void *obj, const IniKey *k);

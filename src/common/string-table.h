/* An enum's names as one array indexed by its values (systemd's string tables): the two
 * functions every such enum has, name_to_string() and name_from_string(), written once. */
#pragma once

#include <string.h>
#include <sys/types.h>

#include "common/macro.h"

/* The index of s in table (n entries; NULL entries never match), or -1 when none is s. */
static inline ssize_t ms_string_table_lookup(const char *const *table, size_t n, const char *s) {
    for (size_t i = 0; s && i < n; i++)
        if (table[i] && strcmp(table[i], s) == 0)
            return (ssize_t) i;
    return -1;
}

/* const char *name_to_string(type v): v's name, NULL out of range. */
#define MS_DEFINE_STRING_TABLE_TO_STRING(name, type, table)                                        \
    const char *name##_to_string(type v) {                                                        \
        return v >= 0 && (size_t) v < ELEMENTSOF(table) ? table[v] : NULL;                         \
    }

/* The above, and type name_from_string(const char *s): the value named s, invalid when s is
 * NULL or names none. */
#define MS_DEFINE_STRING_TABLE_LOOKUP(name, type, table, invalid)                                  \
    MS_DEFINE_STRING_TABLE_TO_STRING(name, type, table)                                            \
    type name##_from_string(const char *s) {                                                       \
        ssize_t i = ms_string_table_lookup(table, ELEMENTSOF(table), s);                           \
        return i < 0 ? (invalid) : (type) i;                                                       \
    }

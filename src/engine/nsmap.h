/* The restore's one namespace mapping: selection, rename and the system-database guard, applied
 * alike to the archive's collections and to every namespace an oplog entry names. */
#pragma once

#include <stdbool.h>

#include "nsfilter.h"

/* Where a source namespace goes in the target. */
typedef enum MsNsMapVerdict {
    MS_NS_MAP_MAPPED = 0,   /* written to *ret_target */
    MS_NS_MAP_NOT_SELECTED, /* --ns-include/--ns-exclude leave it out */
    MS_NS_MAP_PROTECTED,    /* admin, local, config or a system collection, on either side,
                             * without a pattern naming it literally */
    MS_NS_MAP_INVALID,      /* not a namespace a restore could write: no '.', an empty part, a
                             * character MongoDB refuses, or a rename producing one */
    _MS_NS_MAP_VERDICT_MAX,
} MsNsMapVerdict;

/* Map src ("db.coll") through the filter f (NULL: everything, no renames).
 *
 * The rules, in order:
 *  1. src must be a valid namespace (ms_ns_is_valid()).
 *  2. The include/exclude patterns must select it.
 *  3. The first rename whose from-pattern matches gives the target; else the target is src.
 *     The target must be a valid namespace too.
 *  4. The guard: a namespace in admin, local or config on the source side needs an include or
 *     rename-from pattern that matches it and names its database literally (no '*' in the
 *     database part: 'admin.*' does, '*.*' does not); on the target side, the rename that
 *     produced it must name that database literally in its to-pattern, or the namespace is
 *     unrenamed and explicit on the source side. A collection named system.* (but system.js,
 *     and system.buckets.X, which maps as X does) needs its whole name, without '*', in an
 *     include or the rename's from-pattern ('admin.system.users'), and is never renamed into.
 *
 * Returns the verdict (>= 0), or -ENOMEM. *ret_target (free()) is set only for MAPPED. */
int ms_ns_map(const MsNsFilter *f, const char *src, char **ret_target);

/* The same for a database and collection given apart. */
int ms_ns_map_parts(const MsNsFilter *f, const char *db, const char *coll, char **ret_db,
                    char **ret_coll);

/* A namespace a restore may write: "db.coll", db 1 to 63 bytes without '/', '\\', '.', ' ', '"',
 * '$' or control characters, coll non-empty and not starting with '$' ("db.$cmd" is no
 * collection), neither holding a NUL. */
bool ms_ns_is_valid(const char *ns);
bool ms_ns_db_is_valid(const char *db);

/* admin, local, config. */
bool ms_ns_db_is_system(const char *db);

const char *ms_ns_map_verdict_to_string(MsNsMapVerdict v);

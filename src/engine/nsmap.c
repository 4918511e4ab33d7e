/* The restore's one namespace mapping (see nsmap.h): every write a restore makes, from the
 * archive or from the oplog, finds its target here and nowhere else. */
#include "nsmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

/* MongoDB's limit on a database name's length is 64 bytes including the NUL. */
#define NS_DB_NAME_MAX 63
#define NS_SYSTEM_PREFIX "system."
#define NS_BUCKETS_PREFIX "system.buckets."
/* Characters MongoDB refuses in database names (besides control characters). */
#define NS_DB_FORBIDDEN "/\\. \"$"

bool ms_ns_db_is_valid(const char *db) {
    size_t len = db ? strlen(db) : 0;
    if (len == 0 || len > NS_DB_NAME_MAX)
        return false;
    for (const unsigned char *c = (const unsigned char *) db; *c; c++)
        if (*c < 0x20 || *c == 0x7f || strchr(NS_DB_FORBIDDEN, *c))
            return false;
    return true;
}

bool ms_ns_is_valid(const char *ns) {
    const char *dot = ns ? strchr(ns, '.') : NULL;
    if (!dot || dot[1] == '\0' || dot[1] == '$')
        return false;
    char db[NS_DB_NAME_MAX + 2];
    size_t len = (size_t) (dot - ns);
    if (len == 0 || len > NS_DB_NAME_MAX)
        return false;
    memcpy(db, ns, len);
    db[len] = '\0';
    return ms_ns_db_is_valid(db);
}

bool ms_ns_db_is_system(const char *db) {
    return strcmp(db, "admin") == 0 || strcmp(db, "local") == 0 || strcmp(db, "config") == 0;
}

/* A system collection the guard protects: system.* but system.js (stored functions, dumped and
 * restored as any collection). Time-series buckets are mapped by their collection's name
 * before this is asked. */
static bool coll_is_system(const char *coll) {
    return strncmp(coll, NS_SYSTEM_PREFIX, strlen(NS_SYSTEM_PREFIX)) == 0 &&
           strcmp(coll, "system.js") != 0;
}

/* Does pattern name database db literally (no '*' before its first '.')? */
static bool pattern_names_db(const char *pattern, const char *db) {
    const char *dot = strchr(pattern, '.');
    if (!dot || memchr(pattern, '*', (size_t) (dot - pattern)))
        return false;
    return strlen(db) == (size_t) (dot - pattern) && strncmp(pattern, db, strlen(db)) == 0;
}

/* Is the source namespace explicitly asked for: an include pattern or the applied rename's
 * from-pattern matches it and names its database literally? */
static bool source_explicit(const MsNsFilter *f, const char *ns, const char *db,
                            ssize_t rename_index) {
    if (!f)
        return false;
    for (size_t i = 0; i < f->n_include; i++)
        if (pattern_names_db(f->include[i], db) && ms_ns_match(f->include[i], ns))
            return true;
    return rename_index >= 0 && pattern_names_db(f->rename_from[rename_index], db);
}

/* A system collection needs its whole name in a pattern without '*' (an include, or the applied
 * rename's from-pattern): 'admin.system.users', never 'admin.*'. */
static bool names_exactly(const MsNsFilter *f, const char *ns, ssize_t rename_index) {
    if (!f)
        return false;
    for (size_t i = 0; i < f->n_include; i++)
        if (strcmp(f->include[i], ns) == 0)
            return true;
    return rename_index >= 0 && strcmp(f->rename_from[rename_index], ns) == 0;
}

/* Split at the first '.' into caller buffers; false when it is not a valid namespace. */
static bool split_valid(const char *ns, char **ret_db, const char **ret_coll) {
    if (!ms_ns_is_valid(ns))
        return false;
    const char *dot = strchr(ns, '.');
    *ret_db = strndup(ns, (size_t) (dot - ns));
    *ret_coll = dot + 1;
    return true;
}

int ms_ns_map(const MsNsFilter *f, const char *src, char **ret_target) {
    _cleanup_free_ char *src_db = NULL;
    const char *src_coll;
    if (!split_valid(src, &src_db, &src_coll))
        return MS_NS_MAP_INVALID;
    if (!src_db)
        return -ENOMEM;

    /* A time-series collection's buckets follow the collection itself. */
    bool buckets = strncmp(src_coll, NS_BUCKETS_PREFIX, strlen(NS_BUCKETS_PREFIX)) == 0 &&
                   src_coll[strlen(NS_BUCKETS_PREFIX)] != '\0';
    _cleanup_free_ char *logical = NULL;
    if (buckets) {
        logical = ms_ns_join(src_db, src_coll + strlen(NS_BUCKETS_PREFIX));
        if (!logical)
            return -ENOMEM;
        src = logical;
        src_coll += strlen(NS_BUCKETS_PREFIX);
    }

    if (f && !ms_ns_filter_selects(f, src))
        return MS_NS_MAP_NOT_SELECTED;
    ssize_t which = -1;
    _cleanup_free_ char *target = f ? ms_ns_filter_rename_which(f, src, &which) : strdup(src);
    if (!target)
        return -ENOMEM;
    _cleanup_free_ char *dst_db = NULL;
    const char *dst_coll;
    if (!split_valid(target, &dst_db, &dst_coll))
        return MS_NS_MAP_INVALID;
    if (!dst_db)
        return -ENOMEM;

    if (ms_ns_db_is_system(src_db) && !source_explicit(f, src, src_db, which))
        return MS_NS_MAP_PROTECTED;
    if (coll_is_system(src_coll) && !names_exactly(f, src, which))
        return MS_NS_MAP_PROTECTED;
    if (ms_ns_db_is_system(dst_db)) {
        bool ok = which >= 0 ? pattern_names_db(f->rename_to[which], dst_db)
                             : source_explicit(f, src, src_db, which);
        if (!ok)
            return MS_NS_MAP_PROTECTED;
    }
    /* A system collection only ever maps to itself: a rename must not make one. */
    if (coll_is_system(dst_coll) && strcmp(dst_coll, src_coll) != 0)
        return MS_NS_MAP_PROTECTED;

    if (buckets) {
        char *b = NULL;
        if (asprintf(&b, "%s." NS_BUCKETS_PREFIX "%s", dst_db, dst_coll) < 0)
            return -ENOMEM;
        free(target);
        target = b;
    }
    *ret_target = TAKE_PTR(target);
    return MS_NS_MAP_MAPPED;
}

int ms_ns_map_parts(const MsNsFilter *f, const char *db, const char *coll, char **ret_db,
                    char **ret_coll) {
    _cleanup_free_ char *src = ms_ns_join(db, coll);
    if (!src)
        return -ENOMEM;
    _cleanup_free_ char *target = NULL;
    int v = ms_ns_map(f, src, &target);
    if (v != MS_NS_MAP_MAPPED)
        return v;
    int r = ms_ns_split(target, ret_db, ret_coll);
    return r < 0 ? r : MS_NS_MAP_MAPPED;
}

const char *ms_ns_map_verdict_to_string(MsNsMapVerdict v) {
    static const char *const names[_MS_NS_MAP_VERDICT_MAX] = {
        [MS_NS_MAP_MAPPED] = "mapped",
        [MS_NS_MAP_NOT_SELECTED] = "not selected",
        [MS_NS_MAP_PROTECTED] = "protected",
        [MS_NS_MAP_INVALID] = "invalid",
    };
    return v >= 0 && v < _MS_NS_MAP_VERDICT_MAX ? names[v] : "?";
}

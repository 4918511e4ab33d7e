/* Namespace patterns: include/exclude and renames with '*' wildcards (mongorestore's --nsFrom/--nsTo),
 * and what a filtered snapshot keeps of databases and oplog entries. */
#include "nsfilter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "archive/bson-read.h"

#define MS_NS_MAX_WILDCARDS 8

/* Glob where only '*' is special, in O(len(pattern) x len(s)): on a mismatch only the most
 * recent '*' grows. That finds a match whenever one exists, and its bindings are the captures
 * renames use (each '*' as short as the match allows, left to right). */
static bool glob_match(const char *pat, const char *s, const char **caps, size_t *cap_lens,
                       size_t max_caps) {
    const char *p = pat, *star_p = NULL, *star_s = NULL;
    size_t star_index = 0, stars_seen = 0;
    while (*s) {
        if (*p == '*') {
            star_index = stars_seen++;
            star_p = ++p;
            star_s = s;
            if (star_index < max_caps) {
                caps[star_index] = s;
                cap_lens[star_index] = 0;
            }
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star_p) {
            /* Grow the last '*' by one character and retry after it. */
            p = star_p;
            s = ++star_s;
            stars_seen = star_index + 1;
            if (star_index < max_caps)
                cap_lens[star_index] = (size_t) (s - caps[star_index]);
        } else
            return false;
    }
    while (*p == '*') {
        if (stars_seen < max_caps) {
            caps[stars_seen] = s;
            cap_lens[stars_seen] = 0;
        }
        stars_seen++;
        p++;
    }
    return *p == '\0';
}


static size_t count_stars(const char *p) {
    size_t n = 0;
    for (; *p; p++)
        n += *p == '*';
    return n;
}

bool ms_ns_match(const char *pattern, const char *ns) {
    const char *caps[MS_NS_MAX_WILDCARDS];
    size_t lens[MS_NS_MAX_WILDCARDS];
    return glob_match(pattern, ns, caps, lens, 0);
}

bool ms_ns_filter_selects(const MsNsFilter *f, const char *ns) {
    bool selected = f->n_include == 0;
    for (size_t i = 0; i < f->n_include && !selected; i++)
        selected = ms_ns_match(f->include[i], ns);
    for (size_t i = 0; i < f->n_exclude && selected; i++)
        if (ms_ns_match(f->exclude[i], ns))
            selected = false;
    return selected;
}

char *ms_ns_filter_rename(const MsNsFilter *f, const char *ns) {
    return ms_ns_filter_rename_which(f, ns, NULL);
}

char *ms_ns_filter_rename_which(const MsNsFilter *f, const char *ns, ssize_t *ret_index) {
    if (ret_index)
        *ret_index = -1;
    for (size_t i = 0; i < f->n_rename; i++) {
        const char *caps[MS_NS_MAX_WILDCARDS];
        size_t lens[MS_NS_MAX_WILDCARDS];
        if (!glob_match(f->rename_from[i], ns, caps, lens, MS_NS_MAX_WILDCARDS))
            continue;
        const char *to = f->rename_to[i];
        size_t out_len = strlen(to) + strlen(ns) + 1;
        char *out = malloc(out_len);
        if (!out)
            return NULL;
        size_t o = 0, c = 0;
        for (const char *p = to; *p; p++) {
            if (*p == '*') {
                memcpy(out + o, caps[c], lens[c]);
                o += lens[c];
                c++;
            } else
                out[o++] = *p;
        }
        out[o] = '\0';
        if (ret_index)
            *ret_index = (ssize_t) i;
        return out;
    }
    return strdup(ns);
}

/* Characters MongoDB refuses in database names (besides '.', the separator, and NUL). */
#define NS_DB_FORBIDDEN_CHARS "/\\\"$"

static int validate_pattern(const char *p, MsError *e) {
    if (*p == '\0')
        return ms_error_set(e, EINVAL,
                            "namespace pattern '' is empty: write it as DB.COLLECTION, e.g. "
                            "'shop.*' or '*.orders'");
    const char *dot = strchr(p, '.');
    if (!dot)
        return ms_error_set(e, EINVAL,
                            "namespace pattern '%s' has no '.': write it as DB.COLLECTION, "
                            "e.g. 'shop.*' or '*.orders'",
                            p);
    /* Both parts must be there: no namespace has an empty database or collection name, so such
     * a pattern can only be a typo that would silently match nothing. */
    if (dot == p)
        return ms_error_set(e, EINVAL, "namespace pattern '%s' has no database before the '.'", p);
    if (dot[1] == '\0')
        return ms_error_set(e, EINVAL, "namespace pattern '%s' has no collection after the '.'",
                            p);
    /* The same rule as policy files (config/conf.c): these never occur in a database name. */
    for (const char *c = p; c < dot; c++)
        if (strchr(NS_DB_FORBIDDEN_CHARS, *c))
            return ms_error_set(e, EINVAL,
                                "namespace pattern '%s': a database name cannot contain '%c'", p,
                                *c);
    if (count_stars(p) > MS_NS_MAX_WILDCARDS)
        return ms_error_set(e, EINVAL, "namespace pattern '%s' has more than %d '*'", p,
                            MS_NS_MAX_WILDCARDS);
    return 0;
}

int ms_ns_filter_validate(const MsNsFilter *f, MsError *e) {
    char **lists[] = {f->include, f->exclude, f->rename_from, f->rename_to};
    size_t counts[] = {f->n_include, f->n_exclude, f->n_rename, f->n_rename};
    for (size_t l = 0; l < ELEMENTSOF(lists); l++)
        for (size_t i = 0; i < counts[l]; i++) {
            int r = validate_pattern(lists[l][i], e);
            if (r < 0)
                return r;
        }
    for (size_t i = 0; i < f->n_rename; i++)
        if (count_stars(f->rename_from[i]) != count_stars(f->rename_to[i]))
            return ms_error_set(e, EINVAL,
                                "rename '%s' -> '%s': both sides need the same number of '*'",
                                f->rename_from[i], f->rename_to[i]);
    return 0;
}

/* ---- database pruning ---- */

/* Is there a collection name X such that pattern matches "db.X"? Compare the literal start of
 * the pattern with "db.": at the first '*' the answer is yes (the '*' takes the rest of "db."
 * and whatever precedes the collection, and the rest of the pattern with its '*'s matching
 * nothing spells some X); a literal that differs from "db." before then means no. */
static bool pattern_could_match_db(const char *pattern, const char *db) {
    size_t db_len = strlen(db);
    for (size_t k = 0;; k++) {
        char t = k < db_len ? db[k] : k == db_len ? '.' : '\0';
        if (t == '\0')
            return true; /* all of "db." matched literally */
        if (pattern[k] == '*')
            return true;
        if (pattern[k] != t) /* also when the pattern ends first */
            return false;
    }
}

/* Does pattern match every "db.X"? Sufficient condition only: the pattern ends in '*' and what
 * precedes that '*' matches a prefix of "db." ("db.*", "d*", "*.*"). Anything subtler answers
 * false, which costs a listing, never a collection. */
static bool pattern_covers_db(const char *pattern, const char *db) {
    size_t len = strlen(pattern);
    size_t head = len;
    while (head > 0 && pattern[head - 1] == '*')
        head--;
    if (head == len)
        return false;
    _cleanup_free_ char *head_pattern = strndup(pattern, head);
    _cleanup_free_ char *text = ms_ns_join(db, "");
    if (!head_pattern || !text)
        return false;
    size_t text_len = strlen(text);
    for (size_t k = 0; k <= text_len; k++) {
        char saved = text[k];
        text[k] = '\0';
        bool m = ms_ns_match(head_pattern, text);
        text[k] = saved;
        if (m)
            return true;
    }
    return false;
}

bool ms_ns_filter_could_select_db(const MsNsFilter *f, const char *db) {
    bool possible = f->n_include == 0;
    for (size_t i = 0; i < f->n_include && !possible; i++)
        possible = pattern_could_match_db(f->include[i], db);
    for (size_t i = 0; i < f->n_exclude && possible; i++)
        if (pattern_covers_db(f->exclude[i], db))
            possible = false;
    return possible;
}

/* ---- oplog entries ---- */

/* applyOps inside applyOps is legal but servers nest at most one level; anything deeper than
 * this is refused rather than followed without bound. */
#define OPLOG_MAX_NESTING 8
#define SYSTEM_BUCKETS_PREFIX "system.buckets."

static bool db_never_dumped(const char *db) {
    return strcmp(db, "local") == 0 || strcmp(db, "config") == 0;
}

/* Is db.coll part of the filtered snapshot? Databases a snapshot never dumps are not; the
 * users and roles follow --include-users, not the filter; a time-series collection's bucket
 * writes (db.system.buckets.X) count as writes to its own namespace db.X. */
static int oplog_ns_selected(const MsNsFilter *f, unsigned flags, const char *db,
                             const char *coll) {
    if (db_never_dumped(db) && !((flags & MS_NS_OPLOG_KEEP_CONFIG) && strcmp(db, "config") == 0))
        return 0;
    if ((flags & MS_NS_OPLOG_KEEP_USERS) && strcmp(db, "admin") == 0 &&
        (strcmp(coll, "system.users") == 0 || strcmp(coll, "system.roles") == 0))
        return 1;
    if (strncmp(coll, SYSTEM_BUCKETS_PREFIX, strlen(SYSTEM_BUCKETS_PREFIX)) == 0)
        coll += strlen(SYSTEM_BUCKETS_PREFIX);
    _cleanup_free_ char *ns = ms_ns_join(db, coll);
    if (!ns)
        return -ENOMEM;
    return ms_ns_filter_selects(f, ns);
}

/* The same for a full "db.coll" as renameCollection names them. */
static int oplog_full_ns_selected(const MsNsFilter *f, unsigned flags, const char *ns) {
    _cleanup_free_ char *db = NULL;
    _cleanup_free_ char *coll = NULL;
    if (!ns || ms_ns_split(ns, &db, &coll) < 0)
        return 0;
    return oplog_ns_selected(f, flags, db, coll);
}

static int filter_entry(const MsNsFilter *f, unsigned flags, const bson_t *entry, unsigned depth,
                        bson_t *ret, MsError *e);

/* The entry with o.applyOps replaced by ops; every other field kept in place and order. */
static void rebuild_apply_ops(const bson_t *entry, const bson_t *o, const bson_t *ops,
                              bson_t *ret) {
    bson_init(ret);
    bson_iter_t it;
    if (!bson_iter_init(&it, entry))
        return;
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "o") != 0) {
            bson_append_iter(ret, NULL, 0, &it);
            continue;
        }
        bson_t new_o;
        bson_iter_t oi;
        bson_append_document_begin(ret, "o", -1, &new_o);
        if (bson_iter_init(&oi, o))
            while (bson_iter_next(&oi)) {
                if (strcmp(bson_iter_key(&oi), "applyOps") == 0)
                    bson_append_array(&new_o, "applyOps", -1, ops);
                else
                    bson_append_iter(&new_o, NULL, 0, &oi);
            }
        bson_append_document_end(ret, &new_o);
    }
}

static int filter_apply_ops(const MsNsFilter *f, unsigned flags, const bson_t *entry,
                            const bson_t *o, bson_iter_t *cmd, unsigned depth, bson_t *ret,
                            MsError *e) {
    bson_iter_t ops;
    if (!BSON_ITER_HOLDS_ARRAY(cmd) || !bson_iter_recurse(cmd, &ops))
        return MS_NS_OPLOG_DROP; /* nothing a restore could replay */
    if (depth >= OPLOG_MAX_NESTING)
        return ms_error_set(e, EBADMSG, "an oplog applyOps nests more than %d levels deep",
                            OPLOG_MAX_NESTING);
    bson_t kept = BSON_INITIALIZER;
    size_t n_kept = 0;
    bool changed = false;
    int r = 0;
    while (bson_iter_next(&ops)) {
        const uint8_t *data;
        uint32_t len;
        bson_t inner;
        if (!BSON_ITER_HOLDS_DOCUMENT(&ops)) {
            changed = true;
            continue;
        }
        bson_iter_document(&ops, &len, &data);
        if (!bson_init_static(&inner, data, len)) {
            changed = true;
            continue;
        }
        bson_t rewritten;
        r = filter_entry(f, flags, &inner, depth + 1, &rewritten, e);
        if (r < 0)
            break;
        char key[24];
        const char *k;
        if (r == MS_NS_OPLOG_KEEP) {
            bson_uint32_to_string((uint32_t) n_kept++, &k, key, sizeof(key));
            bson_append_document(&kept, k, -1, &inner);
        } else if (r == MS_NS_OPLOG_REWRITTEN) {
            bson_uint32_to_string((uint32_t) n_kept++, &k, key, sizeof(key));
            bson_append_document(&kept, k, -1, &rewritten);
            bson_destroy(&rewritten);
            changed = true;
        } else
            changed = true;
    }
    if (r < 0) {
        bson_destroy(&kept);
        return r;
    }
    if (n_kept == 0) /* an empty applyOps changes nothing either */
        r = MS_NS_OPLOG_DROP;
    else if (!changed)
        r = MS_NS_OPLOG_KEEP;
    else {
        rebuild_apply_ops(entry, o, &kept, ret);
        r = MS_NS_OPLOG_REWRITTEN;
    }
    bson_destroy(&kept);
    return r;
}

/* Commands: ns is "db.$cmd" and o's first field names the command. What is kept:
 *  - applyOps: its inner operations, each filtered like an entry of its own; dropped when
 *    none is left, rewritten when some are.
 *  - renameCollection {renameCollection: "db.from", to: "db2.to"}: kept when either side is
 *    selected, since it moves data into or out of the snapshot's namespaces.
 *  - commands naming a collection as their value (create, drop, collMod, createIndexes,
 *    dropIndexes, commitIndexBuild, ...): kept when db.<value> is selected (a view or a
 *    time-series collection by its own name).
 *  - database-level commands with no collection (dropDatabase, and anything else whose value
 *    is not a name): kept when the filters could select some collection of that database
 *    (ms_ns_filter_could_select_db()), because they change or remove the selected
 *    collections too; e.g. dropDatabase of a database with included collections is kept,
 *    dropDatabase of a database the filters leave out entirely is not. A restore replays a
 *    kept dropDatabase on the whole target database, as it would for a full snapshot. */
static int filter_command(const MsNsFilter *f, unsigned flags, const char *db,
                          const bson_t *entry, unsigned depth, bson_t *ret, MsError *e) {
    bson_iter_t it;
    bson_t o;
    const uint8_t *data;
    uint32_t len;
    if (!bson_iter_init_find(&it, entry, "o") || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return MS_NS_OPLOG_DROP;
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&o, data, len) || !bson_iter_init(&it, &o) || !bson_iter_next(&it))
        return MS_NS_OPLOG_DROP;
    const char *cmd = bson_iter_key(&it);
    int r;
    if (strcmp(cmd, "applyOps") == 0)
        return filter_apply_ops(f, flags, entry, &o, &it, depth, ret, e);
    if (strcmp(cmd, "renameCollection") == 0) {
        r = oplog_full_ns_selected(f, flags, BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL)
                                                                       : NULL);
        if (r == 0)
            r = oplog_full_ns_selected(f, flags, ms_bson_str(&o, "to"));
    } else if (BSON_ITER_HOLDS_UTF8(&it))
        r = oplog_ns_selected(f, flags, db, bson_iter_utf8(&it, NULL));
    else
        r = !db_never_dumped(db) && ms_ns_filter_could_select_db(f, db);
    if (r < 0)
        return ms_error_set(e, -r, "out of memory");
    return r ? MS_NS_OPLOG_KEEP : MS_NS_OPLOG_DROP;
}

static int filter_entry(const MsNsFilter *f, unsigned flags, const bson_t *entry, unsigned depth,
                        bson_t *ret, MsError *e) {
    const char *op = ms_bson_str(entry, "op");
    const char *ns = ms_bson_str(entry, "ns");
    /* No-ops (periodic writes, migrations' markers) carry no data of any namespace, and an
     * entry without op or ns cannot be attributed to a selected one. */
    if (!op || !ns || strcmp(op, "n") == 0)
        return MS_NS_OPLOG_DROP;
    _cleanup_free_ char *db = NULL;
    _cleanup_free_ char *coll = NULL;
    int r = ms_ns_split(ns, &db, &coll);
    if (r == -EINVAL)
        return MS_NS_OPLOG_DROP;
    if (r < 0)
        return ms_error_set(e, -r, "out of memory");
    if (strcmp(op, "c") == 0)
        return filter_command(f, flags, db, entry, depth, ret, e);
    /* Inserts, updates, deletes (and any other operation on a collection): by namespace. */
    r = oplog_ns_selected(f, flags, db, coll);
    if (r < 0)
        return ms_error_set(e, -r, "out of memory");
    return r ? MS_NS_OPLOG_KEEP : MS_NS_OPLOG_DROP;
}

int ms_ns_filter_oplog_entry(const MsNsFilter *f, unsigned flags, const bson_t *entry,
                             bson_t *ret_rewritten, MsError *e) {
    return filter_entry(f, flags, entry, 0, ret_rewritten, e);
}

int ms_ns_filter_add(char ***list, size_t *n, const char *pattern) {
    char **l = realloc(*list, (*n + 1) * sizeof(char *));
    if (!l)
        return -ENOMEM;
    *list = l;
    l[*n] = strdup(pattern);
    if (!l[*n])
        return -ENOMEM;
    (*n)++;
    return 0;
}

static void strv_free_n(char **l, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void ms_ns_filter_clear(MsNsFilter *f) {
    strv_free_n(f->include, f->n_include);
    strv_free_n(f->exclude, f->n_exclude);
    strv_free_n(f->rename_from, f->n_rename);
    strv_free_n(f->rename_to, f->n_rename);
    memset(f, 0, sizeof(*f));
}

int ms_ns_split(const char *ns, char **ret_db, char **ret_coll) {
    const char *dot = strchr(ns, '.');
    if (!dot)
        return -EINVAL;
    char *db = strndup(ns, (size_t) (dot - ns));
    char *coll = strdup(dot + 1);
    if (!db || !coll) {
        free(db);
        free(coll);
        return -ENOMEM;
    }
    *ret_db = db;
    *ret_coll = coll;
    return 0;
}

char *ms_ns_join(const char *db, const char *coll) {
    char *s = NULL;
    if (asprintf(&s, "%s.%s", db, coll) < 0)
        return NULL;
    return s;
}

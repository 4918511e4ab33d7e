/* Oplog replay plans: every entry's namespaces through the restore's one mapping (nsmap.h), the
 * commands a dump can meet translated to their mapped form, transactions held until commit. */
#include "oplog-plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "common/string-table.h"
#include "nsmap.h"
#include "archive/bson-read.h"

/* applyOps nests at most one level on real servers; deeper is refused, not followed. */
#define OPLOG_MAX_NESTING 8
/* Operations of open transactions held in memory at most: a transaction bigger than this cannot
 * be replayed in order here, and saying so beats exhausting memory. */
#define OPLOG_TXN_MAX_BYTES (512u * 1024u * 1024u)
/* Longer dotted paths than this are refused rather than cut: a cut path updates another field. */
#define OPLOG_PATH_MAX 4096

typedef struct Txn {
    bson_t *key; /* {lsid, txnNumber} */
    bson_t *ops; /* the held inner operations, as an array-like document "0", "1", ... */
    uint32_t n_ops;
    size_t bytes;
} Txn;

struct MsOplogReplayer {
    const MsNsFilter *filter;
    char **known; /* source namespaces that exist, as far as replay knows */
    size_t n_known, cap_known;
    Txn *txns;
    size_t n_txns;
    size_t txn_bytes;
    MsOplogReplayStats stats;
};

/* ---- small helpers ---- */

void ms_oplog_describe_entry(const bson_t *entry, char *buf, size_t size) {
    uint32_t t = 0, i = 0;
    bson_iter_t it;
    if (bson_iter_init_find(&it, entry, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it))
        bson_iter_timestamp(&it, &t, &i);
    const char *op = ms_bson_str(entry, "op"), *ns = ms_bson_str(entry, "ns");
    snprintf(buf, size, "oplog entry op '%.8s' on '%.200s' at %" PRIu32 ":%" PRIu32,
             op ? op : "?", ns ? ns : "?", t, i);
}

/* ---- the plan ---- */

static void action_clear(MsOplogAction *a) {
    free(a->db);
    free(a->coll);
    for (size_t i = 0; i < MS_OPLOG_ACTION_MAX_TOUCHED; i++)
        free(a->touched[i]);
    if (a->selector)
        bson_destroy(a->selector);
    if (a->doc)
        bson_destroy(a->doc);
}

void ms_oplog_plan_clear(MsOplogPlan *p) {
    for (size_t i = 0; i < p->n_actions; i++)
        action_clear(&p->actions[i]);
    free(p->actions);
    *p = (MsOplogPlan){0};
}

/* A new action on db (and coll, for writes), touching the namespace db.coll. */
static MsOplogAction *plan_add(MsOplogPlan *p, MsOplogActionKind kind, const char *db,
                               const char *coll, const char *touched) {
    if (p->n_actions == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        MsOplogAction *a = realloc(p->actions, cap * sizeof(*a));
        if (!a)
            return NULL;
        p->actions = a;
        p->cap = cap;
    }
    MsOplogAction *a = &p->actions[p->n_actions];
    *a = (MsOplogAction){.kind = kind};
    a->selector = bson_new();
    a->doc = bson_new();
    a->db = strdup(db);
    a->coll = coll ? strdup(coll) : NULL;
    a->touched[0] = touched ? strdup(touched) : NULL;
    if (!a->selector || !a->doc || !a->db || (coll && !a->coll) || (touched && !a->touched[0])) {
        action_clear(a);
        return NULL;
    }
    p->n_actions++;
    return a;
}

/* ---- known namespaces ---- */

static ssize_t known_index(const MsOplogReplayer *r, const char *ns) {
    for (size_t i = 0; i < r->n_known; i++)
        if (strcmp(r->known[i], ns) == 0)
            return (ssize_t) i;
    return -1;
}

int ms_oplog_replayer_know(MsOplogReplayer *r, const char *ns) {
    if (known_index(r, ns) >= 0)
        return 0;
    if (r->n_known == r->cap_known) {
        size_t cap = r->cap_known ? r->cap_known * 2 : 16;
        char **k = realloc(r->known, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        r->known = k;
        r->cap_known = cap;
    }
    if (!(r->known[r->n_known] = strdup(ns)))
        return -ENOMEM;
    r->n_known++;
    return 0;
}

static void forget(MsOplogReplayer *r, const char *ns) {
    ssize_t i = known_index(r, ns);
    if (i < 0)
        return;
    free(r->known[i]);
    r->known[i] = r->known[--r->n_known];
}

/* ---- outcomes ---- */

static void count_unplaceable(MsOplogReplayer *r, const bson_t *entry, const char *why) {
    if (r->stats.unplaceable++ == 0) {
        char what[200];
        ms_oplog_describe_entry(entry, what, sizeof(what));
        snprintf(r->stats.first_unplaceable, sizeof(r->stats.first_unplaceable), "%.200s: %.300s",
                 what, why);
    }
}

/* Count a mapping verdict other than MAPPED; 0 to go on, or -ENOMEM. */
static int count_verdict(MsOplogReplayer *r, const bson_t *entry, int verdict, const char *ns) {
    char why[512];
    switch (verdict) {
    case MS_NS_MAP_NOT_SELECTED:
        r->stats.not_selected++;
        return 0;
    case MS_NS_MAP_PROTECTED:
        snprintf(why, sizeof(why),
                 "'%.200s' is a system namespace (admin, local, config or system.*) that no "
                 "pattern names literally",
                 ns);
        count_unplaceable(r, entry, why);
        return 0;
    case MS_NS_MAP_INVALID:
        snprintf(why, sizeof(why), "'%.200s' does not map to a valid namespace", ns);
        count_unplaceable(r, entry, why);
        return 0;
    default:
        return verdict < 0 ? verdict : -EINVAL;
    }
}

/* Map db.coll; MAPPED gives the target parts, anything else is counted. */
static int map_or_count(MsOplogReplayer *r, const bson_t *entry, const char *db, const char *coll,
                        char **ret_ns, char **ret_db, char **ret_coll, MsError *e) {
    _cleanup_free_ char *src = ms_ns_join(db, coll);
    if (!src)
        return ms_error_oom(e);
    _cleanup_free_ char *target = NULL;
    int v = ms_ns_map(r->filter, src, &target);
    if (v < 0)
        return ms_error_oom(e);
    if (v != MS_NS_MAP_MAPPED) {
        int k = count_verdict(r, entry, v, src);
        return k < 0 ? ms_error_oom(e) : v;
    }
    if (ms_ns_split(target, ret_db, ret_coll) < 0)
        return ms_error_oom(e);
    *ret_ns = TAKE_PTR(target);
    return MS_NS_MAP_MAPPED;
}

/* ---- $v:2 deltas ---- */

static int diff_translate(const bson_t *diff, const char *prefix, bson_t *set, bson_t *unset,
                          MsError *e);

static int path_join(char out[OPLOG_PATH_MAX], const char *prefix, const char *field,
                     const char *suffix, MsError *e) {
    int n = snprintf(out, OPLOG_PATH_MAX, "%s%s%s", prefix, field, suffix);
    if (n < 0 || n >= OPLOG_PATH_MAX)
        return ms_error_set(e, ENAMETOOLONG,
                            "an oplog update names a field path longer than %d bytes ('%.40s...'); "
                            "it cannot be replayed",
                            OPLOG_PATH_MAX - 1, prefix);
    return 0;
}

static int diff_translate_array(const bson_t *diff, const char *prefix, bson_t *set, bson_t *unset,
                                MsError *e) {
    bson_iter_t it;
    if (!bson_iter_init(&it, diff))
        return ms_error_set(e, EBADMSG, "malformed array delta in an oplog entry");
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        char path[OPLOG_PATH_MAX];
        if (strcmp(k, "a") == 0)
            continue;
        if (strcmp(k, "l") == 0)
            return ms_error_set(e, ENOTSUP,
                                "an oplog update shrinks the array '%.*s', which cannot be replayed "
                                "with $set/$unset; restore to the snapshot's start instead",
                                (int) (strlen(prefix) ? strlen(prefix) - 1 : 0), prefix);
        if (k[0] == 'u') {
            if (path_join(path, prefix, k + 1, "", e) < 0)
                return -ENAMETOOLONG;
            bson_append_iter(set, path, -1, &it);
        } else if (k[0] == 's' && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_iter_document(&it, &len, &data);
            bson_t sub;
            if (!bson_init_static(&sub, data, len))
                return ms_error_set(e, EBADMSG, "malformed array delta in an oplog entry");
            char sub_prefix[OPLOG_PATH_MAX];
            if (path_join(sub_prefix, prefix, k + 1, ".", e) < 0)
                return -ENAMETOOLONG;
            int r = diff_translate(&sub, sub_prefix, set, unset, e);
            if (r < 0)
                return r;
        } else
            return ms_error_set(e, ENOTSUP, "unknown array delta key '%s' in an oplog entry", k);
    }
    return 0;
}

static int diff_translate(const bson_t *diff, const char *prefix, bson_t *set, bson_t *unset,
                          MsError *e) {
    bson_t sub;
    /* A sub-diff of an array is marked with "a: true". */
    bson_iter_t probe;
    if (bson_iter_init_find(&probe, diff, "a") && BSON_ITER_HOLDS_BOOL(&probe) &&
        bson_iter_bool(&probe))
        return diff_translate_array(diff, prefix, set, unset, e);

    bson_iter_t it;
    if (!bson_iter_init(&it, diff))
        return ms_error_set(e, EBADMSG, "malformed delta in an oplog entry");
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        char path[OPLOG_PATH_MAX];
        bson_iter_t fields;
        if ((strcmp(k, "u") == 0 || strcmp(k, "i") == 0) && bson_iter_recurse(&it, &fields)) {
            while (bson_iter_next(&fields)) {
                if (path_join(path, prefix, bson_iter_key(&fields), "", e) < 0)
                    return -ENAMETOOLONG;
                bson_append_iter(set, path, -1, &fields);
            }
        } else if (strcmp(k, "d") == 0 && bson_iter_recurse(&it, &fields)) {
            while (bson_iter_next(&fields)) {
                if (path_join(path, prefix, bson_iter_key(&fields), "", e) < 0)
                    return -ENAMETOOLONG;
                BSON_APPEND_UTF8(unset, path, "");
            }
        } else if (k[0] == 's' && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_iter_document(&it, &len, &data);
            if (!bson_init_static(&sub, data, len))
                return ms_error_set(e, EBADMSG, "malformed delta in an oplog entry");
            char sub_prefix[OPLOG_PATH_MAX];
            if (path_join(sub_prefix, prefix, k + 1, ".", e) < 0)
                return -ENAMETOOLONG;
            int r = diff_translate(&sub, sub_prefix, set, unset, e);
            if (r < 0)
                return r;
        } else
            return ms_error_set(e, ENOTSUP, "unknown delta key '%s' in an oplog update", k);
    }
    return 0;
}

int ms_oplog_diff_to_update(const bson_t *diff, bson_t *ret_update, MsError *e) {
    bson_t set = BSON_INITIALIZER, unset = BSON_INITIALIZER;
    int r = diff_translate(diff, "", &set, &unset, e);
    if (r == 0) {
        bson_init(ret_update);
        if (!bson_empty(&set))
            BSON_APPEND_DOCUMENT(ret_update, "$set", &set);
        if (!bson_empty(&unset))
            BSON_APPEND_DOCUMENT(ret_update, "$unset", &unset);
    }
    bson_destroy(&set);
    bson_destroy(&unset);
    return r;
}

/* ---- CRUD ---- */

static int plan_crud(MsOplogReplayer *r, const bson_t *entry, const char *op, const char *ns,
                     MsOplogPlan *plan, MsError *e) {
    _cleanup_free_ char *db = NULL;
    _cleanup_free_ char *coll = NULL;
    if (ms_ns_split(ns, &db, &coll) < 0) {
        count_unplaceable(r, entry, "its namespace has no '.'");
        return 0;
    }
    _cleanup_free_ char *tns = NULL;
    _cleanup_free_ char *tdb = NULL;
    _cleanup_free_ char *tcoll = NULL;
    int v = map_or_count(r, entry, db, coll, &tns, &tdb, &tcoll, e);
    if (v != MS_NS_MAP_MAPPED)
        return v < 0 ? v : 0;

    bson_t o, o2;
    if (!ms_bson_doc(entry, "o", &o))
        return ms_error_set(e, EBADMSG, "an oplog entry has no 'o' document");
    MsOplogAction *a = NULL;
    if (strcmp(op, "i") == 0) {
        bson_iter_t id;
        if (bson_iter_init_find(&id, &o, "_id")) {
            /* Replace by _id so a document the dump already holds is not a duplicate. */
            if (!(a = plan_add(plan, MS_OPLOG_ACTION_UPSERT, tdb, tcoll, tns)))
                return ms_error_oom(e);
            bson_append_iter(a->selector, "_id", -1, &id);
        } else if (!(a = plan_add(plan, MS_OPLOG_ACTION_INSERT, tdb, tcoll, tns)))
            return ms_error_oom(e);
        bson_concat(a->doc, &o);
    } else if (strcmp(op, "u") == 0) {
        if (!ms_bson_doc(entry, "o2", &o2))
            return ms_error_set(e, EBADMSG, "an oplog update has no 'o2' selector");
        bson_iter_t first;
        bool has_ops = bson_iter_init(&first, &o) && bson_iter_next(&first) &&
                       bson_iter_key(&first)[0] == '$';
        bson_t update = BSON_INITIALIZER;
        if (has_ops) {
            bson_t diff;
            bson_iter_t v2;
            bool delta = bson_iter_init_find(&v2, &o, "$v") && bson_iter_as_int64(&v2) == 2 &&
                         ms_bson_doc(&o, "diff", &diff);
            int k = 0;
            if (delta) {
                bson_destroy(&update);
                k = ms_oplog_diff_to_update(&diff, &update, e);
            } else
                /* Classic $set/$unset form; "$v: 1" is a version marker, not an operator. */
                bson_copy_to_excluding_noinit(&o, &update, "$v", NULL);
            if (k < 0)
                return k;
            if (bson_empty(&update)) {
                bson_destroy(&update);
                r->stats.noops++;
                return 0;
            }
        }
        a = plan_add(plan, has_ops ? MS_OPLOG_ACTION_UPDATE : MS_OPLOG_ACTION_REPLACE, tdb, tcoll,
                     tns);
        if (!a) {
            bson_destroy(&update);
            return ms_error_oom(e);
        }
        bson_concat(a->selector, &o2);
        bson_concat(a->doc, has_ops ? &update : &o);
        bson_destroy(&update);
    } else {
        if (!(a = plan_add(plan, MS_OPLOG_ACTION_DELETE, tdb, tcoll, tns)))
            return ms_error_oom(e);
        bson_concat(a->selector, &o);
    }
    /* An insert or update may have created the collection (a time series by its buckets). */
    const char *name = coll;
    if (strncmp(name, "system.buckets.", strlen("system.buckets.")) == 0)
        name += strlen("system.buckets.");
    _cleanup_free_ char *logical = ms_ns_join(db, name);
    if (!logical || ms_oplog_replayer_know(r, logical) < 0)
        return ms_error_oom(e);
    r->stats.applied++;
    return 0;
}

/* ---- commands ---- */

static int plan_entry(MsOplogReplayer *r, const bson_t *entry, unsigned depth, MsOplogPlan *plan,
                      MsError *e);

/* Copy every field of src but skip (by name, NULL-terminated list) into dst. */
static void copy_except(const bson_t *src, bson_t *dst, const char *const *skip) {
    bson_iter_t it;
    if (!bson_iter_init(&it, src))
        return;
    while (bson_iter_next(&it)) {
        bool skipped = false;
        for (size_t i = 0; skip[i] && !skipped; i++)
            skipped = strcmp(bson_iter_key(&it), skip[i]) == 0;
        if (!skipped)
            bson_append_iter(dst, bson_iter_key(&it), -1, &it);
    }
}

/* An index spec as a target takes it: "ns" names the source, and "v" is the source's index
 * format, which the target picks for itself (as the archive's indexes are restored). */
static void append_index_spec(bson_t *arr, uint32_t i, const bson_t *spec) {
    static const char *const skip[] = {"ns", "v", NULL};
    char key[16];
    const char *k;
    bson_uint32_to_string(i, &k, key, sizeof(key));
    bson_t clean;
    bson_append_document_begin(arr, k, -1, &clean);
    copy_except(spec, &clean, skip);
    bson_append_document_end(arr, &clean);
}

/* create/collMod of a view: viewOn names a collection of the view's own database, which must
 * map into the view's target database. Writes the target collection to *ret, or counts the
 * entry as unplaceable (returns 1). */
static int map_view_on(MsOplogReplayer *r, const bson_t *entry, const char *db, const char *tdb,
                       const char *view_on, char **ret, MsError *e) {
    _cleanup_free_ char *vdb = NULL;
    _cleanup_free_ char *vcoll = NULL;
    _cleanup_free_ char *src = ms_ns_join(db, view_on);
    _cleanup_free_ char *target = NULL;
    if (!src)
        return ms_error_oom(e);
    int v = ms_ns_map(r->filter, src, &target);
    if (v < 0)
        return ms_error_oom(e);
    if (v == MS_NS_MAP_MAPPED && ms_ns_split(target, &vdb, &vcoll) < 0)
        return ms_error_oom(e);
    if (v != MS_NS_MAP_MAPPED || strcmp(vdb, tdb) != 0) {
        char why[512];
        snprintf(why, sizeof(why),
                 "the view's source '%.200s' does not map into the view's target database", src);
        count_unplaceable(r, entry, why);
        return 1;
    }
    *ret = TAKE_PTR(vcoll);
    return 0;
}

/* Commands whose value is the name of a collection of the entry's database. */
typedef enum CollCommand {
    CC_CREATE,
    CC_DROP,
    CC_COLL_MOD,
    CC_CREATE_INDEXES,
    CC_DROP_INDEXES,
    CC_CONVERT_TO_CAPPED,
    CC_EMPTY_CAPPED,
    CC_START_INDEX_BUILD,
    CC_COMMIT_INDEX_BUILD,
    CC_ABORT_INDEX_BUILD,
    _CC_MAX,
} CollCommand;

static const char *const coll_command_names[_CC_MAX] = {
    [CC_CREATE] = "create",
    [CC_DROP] = "drop",
    [CC_COLL_MOD] = "collMod",
    [CC_CREATE_INDEXES] = "createIndexes",
    [CC_DROP_INDEXES] = "dropIndexes",
    [CC_CONVERT_TO_CAPPED] = "convertToCapped",
    [CC_EMPTY_CAPPED] = "emptycapped",
    [CC_START_INDEX_BUILD] = "startIndexBuild",
    [CC_COMMIT_INDEX_BUILD] = "commitIndexBuild",
    [CC_ABORT_INDEX_BUILD] = "abortIndexBuild",
};

static int coll_command_from_name(const char *cmd) {
    ssize_t i = ms_string_table_lookup(coll_command_names, _CC_MAX, cmd);
    if (i >= 0)
        return (int) i;
    if (strcmp(cmd, "deleteIndexes") == 0)
        return CC_DROP_INDEXES;
    return -1;
}

static int plan_coll_command(MsOplogReplayer *r, const bson_t *entry, const char *db,
                             CollCommand cc, const bson_t *o, const char *coll, MsOplogPlan *plan,
                             MsError *e) {
    _cleanup_free_ char *tns = NULL;
    _cleanup_free_ char *tdb = NULL;
    _cleanup_free_ char *tcoll = NULL;
    int v = map_or_count(r, entry, db, coll, &tns, &tdb, &tcoll, e);
    if (v != MS_NS_MAP_MAPPED)
        return v < 0 ? v : 0;
    _cleanup_free_ char *src = ms_ns_join(db, coll);
    if (!src)
        return ms_error_oom(e);
    if (cc == CC_START_INDEX_BUILD || cc == CC_ABORT_INDEX_BUILD) {
        r->stats.noops++; /* the build's effect is its commitIndexBuild */
        return 0;
    }

    _cleanup_free_ char *view_on = NULL;
    const char *src_view_on = ms_bson_str(o, "viewOn");
    if ((cc == CC_CREATE || cc == CC_COLL_MOD) && src_view_on) {
        int k = map_view_on(r, entry, db, tdb, src_view_on, &view_on, e);
        if (k != 0)
            return k < 0 ? k : 0;
    }

    MsOplogAction *a = plan_add(plan, MS_OPLOG_ACTION_COMMAND, tdb, NULL, tns);
    if (!a)
        return ms_error_oom(e);
    const char *name = cc == CC_COMMIT_INDEX_BUILD ? "createIndexes"
                                                   : coll_command_names[cc];
    BSON_APPEND_UTF8(a->doc, name, tcoll);
    static const char *const skip_create[] = {"create", "viewOn", "idIndex", NULL};
    static const char *const skip_coll_mod[] = {"collMod", "viewOn", NULL};
    switch (cc) {
    case CC_CREATE: {
        if (view_on)
            BSON_APPEND_UTF8(a->doc, "viewOn", view_on);
        bson_t id_index;
        if (ms_bson_doc(o, "idIndex", &id_index)) {
            /* idIndex.ns names the source collection; the target would refuse it. */
            static const char *const skip_ns[] = {"ns", NULL};
            bson_t clean;
            BSON_APPEND_DOCUMENT_BEGIN(a->doc, "idIndex", &clean);
            copy_except(&id_index, &clean, skip_ns);
            bson_append_document_end(a->doc, &clean);
        }
        copy_except(o, a->doc, skip_create);
        a->tolerate_existing = true;
        if (ms_oplog_replayer_know(r, src) < 0)
            return ms_error_oom(e);
        break;
    }
    case CC_COLL_MOD:
        if (view_on)
            BSON_APPEND_UTF8(a->doc, "viewOn", view_on);
        copy_except(o, a->doc, skip_coll_mod);
        a->tolerate_missing = true;
        break;
    case CC_CREATE_INDEXES: {
        /* The oplog form carries one index spec inline: {createIndexes: c, v, key, name, ...}. */
        bson_t spec = BSON_INITIALIZER, arr;
        static const char *const skip_cmd[] = {"createIndexes", NULL};
        copy_except(o, &spec, skip_cmd);
        BSON_APPEND_ARRAY_BEGIN(a->doc, "indexes", &arr);
        append_index_spec(&arr, 0, &spec);
        bson_append_array_end(a->doc, &arr);
        bson_destroy(&spec);
        break;
    }
    case CC_COMMIT_INDEX_BUILD: {
        bson_t indexes, arr;
        bson_iter_t it;
        uint32_t n = 0;
        BSON_APPEND_ARRAY_BEGIN(a->doc, "indexes", &arr);
        if (ms_bson_doc(o, "indexes", &indexes) && bson_iter_init(&it, &indexes))
            while (bson_iter_next(&it)) {
                bson_t spec;
                if (ms_bson_doc(&indexes, bson_iter_key(&it), &spec))
                    append_index_spec(&arr, n++, &spec);
            }
        bson_append_array_end(a->doc, &arr);
        if (n == 0) {
            plan->n_actions--;
            action_clear(a);
            return ms_error_set(e, EBADMSG, "a commitIndexBuild oplog entry names no index");
        }
        break;
    }
    case CC_DROP:
        a->tolerate_missing = true;
        forget(r, src);
        break;
    case CC_DROP_INDEXES:
        a->tolerate_missing = true;
        /* the index name or key follows as it came */
        __attribute__((fallthrough));
    default: {
        bson_iter_t it;
        if (bson_iter_init(&it, o) && bson_iter_next(&it)) /* past the command's own field */
            while (bson_iter_next(&it))
                bson_append_iter(a->doc, bson_iter_key(&it), -1, &it);
        break;
    }
    }
    r->stats.applied++;
    return 0;
}

/* renameCollection {renameCollection: "db.from", to: "db.to", dropTarget, stayTemp}. */
static int plan_rename(MsOplogReplayer *r, const bson_t *entry, const bson_t *o, const char *from,
                       MsOplogPlan *plan, MsError *e) {
    const char *to = ms_bson_str(o, "to");
    if (!from || !to)
        return ms_error_set(e, EBADMSG, "a renameCollection oplog entry lacks its namespaces");
    _cleanup_free_ char *tfrom = NULL;
    _cleanup_free_ char *tto = NULL;
    int vf = ms_ns_map(r->filter, from, &tfrom);
    int vt = ms_ns_map(r->filter, to, &tto);
    if (vf < 0 || vt < 0)
        return ms_error_oom(e);
    bool mf = vf == MS_NS_MAP_MAPPED, mt = vt == MS_NS_MAP_MAPPED;
    if (!mf && !mt) {
        /* Neither side is the restore's: not selected, or protected/invalid as counted. */
        if (vf == MS_NS_MAP_NOT_SELECTED && vt == MS_NS_MAP_NOT_SELECTED)
            r->stats.not_selected++;
        else
            (void) count_verdict(r, entry, vf != MS_NS_MAP_NOT_SELECTED ? vf : vt,
                                 vf != MS_NS_MAP_NOT_SELECTED ? from : to);
        return 0;
    }
    if (!mf) {
        char why[512];
        snprintf(why, sizeof(why),
                 "it renames '%.120s', which the restore does not map, onto '%.120s', which it "
                 "does: that data is not in the snapshot",
                 from, to);
        count_unplaceable(r, entry, why);
        return 0;
    }
    _cleanup_free_ char *fdb = NULL;
    _cleanup_free_ char *fcoll = NULL;
    if (ms_ns_split(tfrom, &fdb, &fcoll) < 0)
        return ms_error_oom(e);
    if (!mt) {
        /* The data left the restored set: so does its copy in the target. */
        MsOplogAction *a = plan_add(plan, MS_OPLOG_ACTION_COMMAND, fdb, NULL, tfrom);
        if (!a)
            return ms_error_oom(e);
        BSON_APPEND_UTF8(a->doc, "drop", fcoll);
        a->tolerate_missing = true;
    } else {
        /* renameCollection runs on admin, but writes only the two mapped namespaces. */
        MsOplogAction *a = plan_add(plan, MS_OPLOG_ACTION_COMMAND, "admin", NULL, tfrom);
        if (!a || !(a->touched[1] = strdup(tto)))
            return ms_error_oom(e);
        BSON_APPEND_UTF8(a->doc, "renameCollection", tfrom);
        BSON_APPEND_UTF8(a->doc, "to", tto);
        /* In the oplog dropTarget is the dropped collection's UUID, or a bool. */
        bson_iter_t dt;
        bool drop_target = bson_iter_init_find(&dt, o, "dropTarget") &&
                           (BSON_ITER_HOLDS_BINARY(&dt) || bson_iter_as_bool(&dt));
        BSON_APPEND_BOOL(a->doc, "dropTarget", drop_target);
        if (ms_oplog_replayer_know(r, to) < 0)
            return ms_error_oom(e);
    }
    forget(r, from);
    r->stats.applied++;
    return 0;
}

/* dropDatabase: a drop of each collection of db the restore knows, each mapped on its own. */
static int plan_drop_database(MsOplogReplayer *r, const bson_t *entry, const char *db,
                              MsOplogPlan *plan, MsError *e) {
    size_t db_len = strlen(db);
    bool any = false;
    for (size_t i = 0; i < r->n_known;) {
        const char *ns = r->known[i];
        if (strncmp(ns, db, db_len) != 0 || ns[db_len] != '.') {
            i++;
            continue;
        }
        _cleanup_free_ char *target = NULL;
        int v = ms_ns_map(r->filter, ns, &target);
        if (v < 0)
            return ms_error_oom(e);
        if (v == MS_NS_MAP_MAPPED) {
            _cleanup_free_ char *tdb = NULL;
            _cleanup_free_ char *tcoll = NULL;
            if (ms_ns_split(target, &tdb, &tcoll) < 0)
                return ms_error_oom(e);
            MsOplogAction *a = plan_add(plan, MS_OPLOG_ACTION_COMMAND, tdb, NULL, target);
            if (!a)
                return ms_error_oom(e);
            BSON_APPEND_UTF8(a->doc, "drop", tcoll);
            a->tolerate_missing = true;
            any = true;
        }
        forget(r, ns); /* the last known element moved to i */
    }
    if (any)
        r->stats.applied++;
    else
        r->stats.not_selected++;
    (void) entry;
    return 0;
}

/* ---- transactions ---- */

/* {lsid, txnNumber} of an entry, or false when it has none. */
static bool txn_key(const bson_t *entry, bson_t *ret) {
    bson_iter_t lsid, num;
    if (!bson_iter_init_find(&lsid, entry, "lsid") || !bson_iter_init_find(&num, entry, "txnNumber"))
        return false;
    bson_init(ret);
    bson_append_iter(ret, "lsid", -1, &lsid);
    bson_append_iter(ret, "txnNumber", -1, &num);
    return true;
}

static Txn *txn_find(MsOplogReplayer *r, const bson_t *key) {
    for (size_t i = 0; i < r->n_txns; i++)
        if (bson_equal(r->txns[i].key, key))
            return &r->txns[i];
    return NULL;
}

static void txn_remove(MsOplogReplayer *r, Txn *t) {
    r->txn_bytes -= t->bytes;
    bson_destroy(t->key);
    bson_destroy(t->ops);
    *t = r->txns[--r->n_txns]; /* Txn holds pointers only: moving it is fine */
}

/* Hold the inner operations of a transaction's part until it commits. */
static int txn_hold(MsOplogReplayer *r, const bson_t *key, const bson_t *ops, MsError *e) {
    Txn *t = txn_find(r, key);
    if (!t) {
        Txn *list = realloc(r->txns, (r->n_txns + 1) * sizeof(*list));
        if (!list)
            return ms_error_oom(e);
        r->txns = list;
        t = &r->txns[r->n_txns];
        *t = (Txn){.key = bson_copy(key), .ops = bson_new()};
        if (!t->key || !t->ops) {
            if (t->key)
                bson_destroy(t->key);
            if (t->ops)
                bson_destroy(t->ops);
            return ms_error_oom(e);
        }
        r->n_txns++;
    }
    if (r->txn_bytes + ops->len > OPLOG_TXN_MAX_BYTES)
        return ms_error_set(e, EFBIG,
                            "an open transaction in the oplog holds more than %u MiB of "
                            "operations; it cannot be replayed here (restore without the oplog, "
                            "or to a point before it)",
                            OPLOG_TXN_MAX_BYTES / (1024u * 1024u));
    bson_iter_t it;
    if (bson_iter_init(&it, ops))
        while (bson_iter_next(&it)) {
            char key_buf[16];
            const char *k;
            bson_uint32_to_string(t->n_ops++, &k, key_buf, sizeof(key_buf));
            bson_append_iter(t->ops, k, -1, &it);
        }
    t->bytes += ops->len;
    r->txn_bytes += ops->len;
    return 0;
}

/* Plan every operation of an array of inner operations. */
static int plan_ops(MsOplogReplayer *r, const bson_t *ops, unsigned depth, MsOplogPlan *plan,
                    MsError *e) {
    bson_iter_t it;
    if (!bson_iter_init(&it, ops))
        return ms_error_set(e, EBADMSG, "malformed applyOps operations in the oplog");
    while (bson_iter_next(&it)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            return ms_error_set(e, EBADMSG, "an applyOps operation in the oplog is not a document");
        const uint8_t *data;
        uint32_t len;
        bson_t inner;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&inner, data, len))
            return ms_error_set(e, EBADMSG, "malformed applyOps entry in the oplog");
        int k = plan_entry(r, &inner, depth + 1, plan, e);
        if (k < 0)
            return k;
    }
    return 0;
}

/* Commit a held transaction (if any) and then the operations given (may be NULL). */
static int txn_commit(MsOplogReplayer *r, const bson_t *key, const bson_t *last_ops,
                      unsigned depth, MsOplogPlan *plan, MsError *e) {
    Txn *t = key ? txn_find(r, key) : NULL;
    int k = 0;
    if (t) {
        /* Out of the list first: its operations may hold (nested) parts of transactions too. */
        bson_t *ops = t->ops;
        t->ops = bson_new();
        txn_remove(r, t);
        k = plan_ops(r, ops, depth, plan, e);
        bson_destroy(ops);
    }
    if (k == 0 && last_ops)
        k = plan_ops(r, last_ops, depth, plan, e);
    return k;
}

static int plan_apply_ops(MsOplogReplayer *r, const bson_t *entry, const bson_t *o,
                          unsigned depth, MsOplogPlan *plan, MsError *e) {
    bson_t ops;
    if (!ms_bson_doc(o, "applyOps", &ops))
        return ms_error_set(e, EBADMSG, "applyOps without operations in the oplog");
    if (depth >= OPLOG_MAX_NESTING)
        return ms_error_set(e, EBADMSG, "an oplog applyOps nests more than %d levels deep",
                            OPLOG_MAX_NESTING);
    bson_t key;
    bool in_txn = txn_key(entry, &key);
    bool partial = ms_bson_true(entry, "partialTxn") || ms_bson_true(o, "partialTxn");
    bool prepare = ms_bson_true(o, "prepare") || ms_bson_true(entry, "prepare");
    int k;
    if (in_txn && (partial || prepare))
        k = txn_hold(r, &key, &ops, e); /* applied at commit, dropped at abort */
    else if (partial || prepare) {
        /* A transaction's part without its session cannot be matched to its commit. */
        count_unplaceable(r, entry, "a transaction's part without lsid/txnNumber");
        k = 0;
    } else
        k = txn_commit(r, in_txn ? &key : NULL, &ops, depth, plan, e);
    if (in_txn)
        bson_destroy(&key);
    return k;
}

static int plan_command(MsOplogReplayer *r, const bson_t *entry, const char *db, unsigned depth,
                        MsOplogPlan *plan, MsError *e) {
    bson_t o;
    if (!ms_bson_doc(entry, "o", &o))
        return ms_error_set(e, EBADMSG, "an oplog command entry has no 'o' document");
    bson_iter_t it;
    if (!bson_iter_init(&it, &o) || !bson_iter_next(&it))
        return ms_error_set(e, EBADMSG, "an oplog command entry is empty");
    const char *cmd = bson_iter_key(&it);

    if (strcmp(cmd, "applyOps") == 0)
        return plan_apply_ops(r, entry, &o, depth, plan, e);
    if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
        bson_t key;
        if (!txn_key(entry, &key)) {
            count_unplaceable(r, entry, "a transaction's end without lsid/txnNumber");
            return 0;
        }
        int k = 0;
        if (cmd[0] == 'c')
            k = txn_commit(r, &key, NULL, depth, plan, e);
        else {
            Txn *t = txn_find(r, &key);
            if (t) {
                r->stats.uncommitted += t->n_ops;
                txn_remove(r, t);
            }
        }
        bson_destroy(&key);
        return k;
    }
    if (strcmp(cmd, "renameCollection") == 0)
        return plan_rename(r, entry, &o, BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL,
                           plan, e);
    if (!ms_ns_db_is_valid(db)) {
        count_unplaceable(r, entry, "its database name is not valid");
        return 0;
    }
    if (strcmp(cmd, "dropDatabase") == 0)
        return plan_drop_database(r, entry, db, plan, e);
    int cc = coll_command_from_name(cmd);
    if (cc >= 0) {
        if (!BSON_ITER_HOLDS_UTF8(&it)) {
            char what[200];
            ms_oplog_describe_entry(entry, what, sizeof(what));
            return ms_error_set(e, EBADMSG, "%s: '%s' does not name a collection", what, cmd);
        }
        return plan_coll_command(r, entry, db, (CollCommand) cc, &o, bson_iter_utf8(&it, NULL),
                                 plan, e);
    }
    /* Anything else: its effect cannot be mapped. On a database the restore has nothing of, it
     * is simply not selected; otherwise replay stops rather than guess. */
    if (r->filter && !ms_ns_filter_could_select_db(r->filter, db)) {
        r->stats.not_selected++;
        return 0;
    }
    char what[200];
    ms_oplog_describe_entry(entry, what, sizeof(what));
    return ms_error_set(e, ENOTSUP,
                        "cannot replay %s: command '%.64s' is not supported in oplog replay; "
                        "restore without the oplog (--no-oplog) or to a point before it (--until)",
                        what, cmd);
}

static int plan_entry(MsOplogReplayer *r, const bson_t *entry, unsigned depth, MsOplogPlan *plan,
                      MsError *e) {
    const char *op = ms_bson_str(entry, "op");
    const char *ns = ms_bson_str(entry, "ns");
    if (!op || !ns)
        return ms_error_set(e, EBADMSG, "an oplog entry lacks its 'op' or 'ns' field");
    if (strcmp(op, "n") == 0 || strcmp(op, "db") == 0) {
        r->stats.noops++;
        return 0;
    }
    if (strcmp(op, "c") == 0) {
        const char *dot = strchr(ns, '.');
        if (!dot) {
            count_unplaceable(r, entry, "its namespace has no '.'");
            return 0;
        }
        char db[256];
        snprintf(db, sizeof(db), "%.*s", (int) MS_MIN((size_t) (dot - ns), sizeof(db) - 1), ns);
        return plan_command(r, entry, db, depth, plan, e);
    }
    if (strcmp(op, "i") == 0 || strcmp(op, "u") == 0 || strcmp(op, "d") == 0)
        return plan_crud(r, entry, op, ns, plan, e);
    char what[200];
    ms_oplog_describe_entry(entry, what, sizeof(what));
    return ms_error_set(e, ENOTSUP, "cannot replay %s: unknown operation", what);
}

int ms_oplog_replayer_plan(MsOplogReplayer *r, const bson_t *entry, MsOplogPlan *plan,
                           MsError *e) {
    return plan_entry(r, entry, 0, plan, e);
}

/* ---- life cycle ---- */

int ms_oplog_replayer_new(const MsNsFilter *filter, MsOplogReplayer **ret, MsError *e) {
    MsOplogReplayer *r = calloc(1, sizeof(*r));
    if (!r)
        return ms_error_oom(e);
    r->filter = filter;
    *ret = r;
    return 0;
}

void ms_oplog_replayer_finish(MsOplogReplayer *r) {
    while (r->n_txns > 0) {
        r->stats.uncommitted += r->txns[r->n_txns - 1].n_ops;
        txn_remove(r, &r->txns[r->n_txns - 1]);
    }
}

MsOplogReplayer *ms_oplog_replayer_free(MsOplogReplayer *r) {
    if (!r)
        return NULL;
    ms_oplog_replayer_finish(r);
    for (size_t i = 0; i < r->n_known; i++)
        free(r->known[i]);
    free(r->known);
    free(r->txns);
    free(r);
    return NULL;
}

const MsOplogReplayStats *ms_oplog_replayer_stats(const MsOplogReplayer *r) {
    return &r->stats;
}

const char *ms_oplog_action_kind_to_string(MsOplogActionKind k) {
    static const char *const names[_MS_OPLOG_ACTION_KIND_MAX] = {
        [MS_OPLOG_ACTION_UPSERT] = "upsert",   [MS_OPLOG_ACTION_INSERT] = "insert",
        [MS_OPLOG_ACTION_REPLACE] = "replace", [MS_OPLOG_ACTION_UPDATE] = "update",
        [MS_OPLOG_ACTION_DELETE] = "delete",   [MS_OPLOG_ACTION_COMMAND] = "command",
    };
    return k >= 0 && k < _MS_OPLOG_ACTION_KIND_MAX ? names[k] : "?";
}

/* Oplog replay through ordinary commands: CRUD by _id, and the DDL commands a dump can meet. */
#include "oplog-apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/macro.h"

/* Server error codes that replay tolerates: the state it wants is already there. */
#define MONGO_ERROR_NAMESPACE_NOT_FOUND 26
#define MONGO_ERROR_NAMESPACE_EXISTS 48
#define MONGO_ERROR_INDEX_NOT_FOUND 27
/* Longer dotted paths than this are refused rather than cut: a cut path would update a
 * different field. */
#define OPLOG_PATH_MAX 4096

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

static bool get_doc(const bson_t *b, const char *key, bson_t *ret) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return false;
    const uint8_t *data;
    uint32_t len;
    bson_iter_document(&it, &len, &data);
    return bson_init_static(ret, data, len);
}

static const char *get_str(const bson_t *b, const char *key) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* An entry's identity in messages: op, ns and ts. */
static void describe_entry(const bson_t *entry, char *buf, size_t size) {
    uint32_t t = 0, i = 0;
    bson_iter_t it;
    if (bson_iter_init_find(&it, entry, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it))
        bson_iter_timestamp(&it, &t, &i);
    const char *op = get_str(entry, "op"), *ns = get_str(entry, "ns");
    snprintf(buf, size, "oplog entry op '%s' on '%s' at %" PRIu32 ":%" PRIu32, op ? op : "?",
             ns ? ns : "?", t, i);
}

static int write_error(const bson_t *entry, const bson_error_t *berr, MsError *e) {
    char what[512];
    describe_entry(entry, what, sizeof(what));
    return ms_error_set(e, EIO, "replaying %s failed: %s", what, berr->message);
}

static int apply_crud(mongoc_client_t *c, const char *db, const char *coll, const char *op,
                      const bson_t *entry, MsError *e) {
    bson_t o, o2;
    if (!get_doc(entry, "o", &o))
        return ms_error_set(e, EBADMSG, "an oplog entry has no 'o' document");
    mongoc_collection_t *target = mongoc_client_get_collection(c, db, coll);
    bson_error_t berr;
    bool ok = true;
    int r = 0;
    /* Replayed documents are the server's own: skip the driver's client-side key checks. */
    bson_t *upsert = BCON_NEW("upsert", BCON_BOOL(true), "validate", BCON_BOOL(false));
    bson_t *plain = BCON_NEW("validate", BCON_BOOL(false));
    if (strcmp(op, "i") == 0) {
        bson_iter_t id;
        if (bson_iter_init_find(&id, &o, "_id")) {
            /* Replace by _id so a document the dump already holds is not a duplicate. */
            bson_t sel = BSON_INITIALIZER;
            bson_append_iter(&sel, "_id", -1, &id);
            ok = mongoc_collection_replace_one(target, &sel, &o, upsert, NULL, &berr);
            bson_destroy(&sel);
        } else
            ok = mongoc_collection_insert_one(target, &o, plain, NULL, &berr);
    } else if (strcmp(op, "u") == 0) {
        if (!get_doc(entry, "o2", &o2))
            r = ms_error_set(e, EBADMSG, "an oplog update has no 'o2' selector");
        else {
            bson_iter_t first;
            bool has_ops = bson_iter_init(&first, &o) && bson_iter_next(&first) &&
                           bson_iter_key(&first)[0] == '$';
            if (!has_ops)
                ok = mongoc_collection_replace_one(target, &o2, &o, plain, NULL, &berr);
            else {
                bson_t diff, update = BSON_INITIALIZER;
                bson_iter_t v;
                bool delta = bson_iter_init_find(&v, &o, "$v") && bson_iter_as_int64(&v) == 2 &&
                             get_doc(&o, "diff", &diff);
                if (delta) {
                    bson_destroy(&update);
                    r = ms_oplog_diff_to_update(&diff, &update, e);
                } else
                    /* Classic $set/$unset form; "$v: 1" is a version marker, not an operator. */
                    bson_copy_to_excluding_noinit(&o, &update, "$v", NULL);
                if (r == 0 && !bson_empty(&update))
                    ok = mongoc_collection_update_one(target, &o2, &update, NULL, NULL, &berr);
                bson_destroy(&update);
            }
        }
    } else {
        ok = mongoc_collection_delete_one(target, &o, NULL, NULL, &berr);
    }
    bson_destroy(upsert);
    bson_destroy(plain);
    mongoc_collection_destroy(target);
    if (r < 0)
        return r;
    return ok ? 0 : write_error(entry, &berr, e);
}

static bool tolerated(const bson_error_t *berr) {
    return berr->code == MONGO_ERROR_NAMESPACE_NOT_FOUND ||
           berr->code == MONGO_ERROR_NAMESPACE_EXISTS || berr->code == MONGO_ERROR_INDEX_NOT_FOUND;
}

/* Commands: o = {create|drop|createIndexes|dropIndexes|collMod|...: coll, ...}; ns "db.$cmd". */
static int apply_command(mongoc_client_t *c, const MsNsFilter *filter, const char *db,
                         const bson_t *entry, MsOplogApplyStats *stats, MsError *e) {
    bson_t o;
    if (!get_doc(entry, "o", &o))
        return ms_error_set(e, EBADMSG, "an oplog command entry has no 'o' document");
    bson_iter_t it;
    if (!bson_iter_init(&it, &o) || !bson_iter_next(&it))
        return ms_error_set(e, EBADMSG, "an oplog command entry is empty");
    const char *cmd = bson_iter_key(&it);

    if (strcmp(cmd, "applyOps") == 0) {
        bson_iter_t ops;
        if (!bson_iter_recurse(&it, &ops))
            return ms_error_set(e, EBADMSG, "applyOps without operations in the oplog");
        while (bson_iter_next(&ops)) {
            const uint8_t *data;
            uint32_t len;
            bson_t inner;
            if (!BSON_ITER_HOLDS_DOCUMENT(&ops))
                continue;
            bson_iter_document(&ops, &len, &data);
            if (!bson_init_static(&inner, data, len))
                return ms_error_set(e, EBADMSG, "malformed applyOps entry in the oplog");
            int r = ms_oplog_apply_entry(c, filter, &inner, stats, e);
            if (r < 0)
                return r;
        }
        return 0;
    }

    static const char *const collection_commands[] = {"create", "drop", "createIndexes",
                                                      "dropIndexes", "deleteIndexes", "collMod"};
    bool known = false;
    for (size_t k = 0; k < ELEMENTSOF(collection_commands); k++)
        known |= strcmp(cmd, collection_commands[k]) == 0;
    if (strcmp(cmd, "dropDatabase") == 0)
        known = true;
    if (!known) {
        char what[512];
        describe_entry(entry, what, sizeof(what));
        return ms_error_set(e, ENOTSUP,
                            "cannot replay %s: command '%s' is not supported in oplog replay; "
                            "restore without --until/oplog replay, or to the snapshot's start",
                            what, cmd);
    }

    /* Rename the collection argument like the data: ns of the collection is db.<arg>. */
    char target_db[256];
    snprintf(target_db, sizeof(target_db), "%s", db);
    bson_t command = BSON_INITIALIZER;
    bool selected = true;
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        char source_ns[512];
        snprintf(source_ns, sizeof(source_ns), "%s.%s", db, bson_iter_utf8(&it, NULL));
        selected = ms_ns_filter_selects(filter, source_ns);
        _cleanup_free_ char *renamed = ms_ns_filter_rename(filter, source_ns);
        char *dot = renamed ? strchr(renamed, '.') : NULL;
        if (dot) {
            *dot = '\0';
            snprintf(target_db, sizeof(target_db), "%s", renamed);
            BSON_APPEND_UTF8(&command, cmd, dot + 1);
        }
    } else
        bson_append_iter(&command, cmd, -1, &it);
    if (!selected) {
        bson_destroy(&command);
        stats->skipped++;
        return 0;
    }
    if (strcmp(cmd, "createIndexes") == 0) {
        /* The oplog form carries one index spec inline: {createIndexes: c, v, key, name, ...}. */
        bson_t indexes, spec = BSON_INITIALIZER;
        while (bson_iter_next(&it))
            bson_append_iter(&spec, bson_iter_key(&it), -1, &it);
        BSON_APPEND_ARRAY_BEGIN(&command, "indexes", &indexes);
        BSON_APPEND_DOCUMENT(&indexes, "0", &spec);
        bson_append_array_end(&command, &indexes);
        bson_destroy(&spec);
    } else
        while (bson_iter_next(&it))
            bson_append_iter(&command, bson_iter_key(&it), -1, &it);

    bson_error_t berr;
    bson_t reply;
    bool ok = mongoc_client_command_simple(c, target_db, &command, NULL, &reply, &berr);
    bson_destroy(&reply);
    bson_destroy(&command);
    if (!ok && !tolerated(&berr))
        return write_error(entry, &berr, e);
    stats->applied++;
    return 0;
}

int ms_oplog_apply_entry(mongoc_client_t *c, const MsNsFilter *filter, const bson_t *entry,
                         MsOplogApplyStats *stats, MsError *e) {
    const char *op = get_str(entry, "op");
    const char *ns = get_str(entry, "ns");
    if (!op || !ns)
        return ms_error_set(e, EBADMSG, "an oplog entry lacks its 'op' or 'ns' field");
    if (strcmp(op, "n") == 0) {
        stats->skipped++;
        return 0;
    }
    const char *dot = strchr(ns, '.');
    if (!dot) {
        stats->skipped++;
        return 0;
    }
    char db[256];
    snprintf(db, sizeof(db), "%.*s", (int) (dot - ns), ns);
    if (strcmp(op, "c") == 0)
        return apply_command(c, filter, db, entry, stats, e);
    if (strcmp(op, "i") != 0 && strcmp(op, "u") != 0 && strcmp(op, "d") != 0) {
        char what[512];
        describe_entry(entry, what, sizeof(what));
        return ms_error_set(e, ENOTSUP, "cannot replay %s: unknown operation", what);
    }
    /* Writes to internal namespaces (config.*, local.*, system.*) are not part of a restore. */
    if (strcmp(db, "local") == 0 || strcmp(db, "config") == 0 ||
        strncmp(dot + 1, "system.", strlen("system.")) == 0 || !ms_ns_filter_selects(filter, ns)) {
        stats->skipped++;
        return 0;
    }
    _cleanup_free_ char *renamed = ms_ns_filter_rename(filter, ns);
    if (!renamed)
        return ms_error_set(e, ENOMEM, "out of memory");
    char *rdot = strchr(renamed, '.');
    if (!rdot)
        return ms_error_set(e, EINVAL, "renamed namespace '%s' has no '.'", renamed);
    *rdot = '\0';
    int r = apply_crud(c, renamed, rdot + 1, op, entry, e);
    if (r == 0)
        stats->applied++;
    return r;
}

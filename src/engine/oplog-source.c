/* The oplog as the snapshot and the follower read it (oplog-source.h). */
#include "oplog-source.h"

MsOplogPosition ms_oplog_entry_position(const bson_t *entry) {
    MsOplogPosition p = {0, 0};
    bson_iter_t it;
    if (bson_iter_init_find(&it, entry, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it))
        bson_iter_timestamp(&it, &p.t, &p.i);
    return p;
}

int ms_oplog_exists(MsMongo *m, mongoc_client_t *c, bool *ret, MsError *e) {
    mongoc_database_t *db = mongoc_client_get_database(c, MS_OPLOG_DB);
    bson_t *opts = BCON_NEW("filter", "{", "name", BCON_UTF8(MS_OPLOG_COLLECTION), "}");
    mongoc_cursor_t *cur = mongoc_database_find_collections_with_opts(db, opts);
    const bson_t *doc;
    *ret = mongoc_cursor_next(cur, &doc);
    bson_error_t berr;
    int r = 0;
    if (mongoc_cursor_error(cur, &berr))
        r = ms_mongo_error(m, e, &berr, "looking for the oplog (local.oplog.rs)");
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_database_destroy(db);
    return r;
}

static int oplog_edge_of(MsMongo *m, mongoc_client_t *c, const bson_t *filter, bool newest,
                         bool *ret_exists, MsOplogPosition *ret, MsError *e) {
    mongoc_collection_t *coll = mongoc_client_get_collection(c, MS_OPLOG_DB, MS_OPLOG_COLLECTION);
    bson_t *opts = BCON_NEW("sort", "{", "$natural", BCON_INT32(newest ? -1 : 1), "}", "limit",
                            BCON_INT64(1), "projection", "{", "ts", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    const bson_t *doc;
    *ret_exists = mongoc_cursor_next(cur, &doc);
    *ret = *ret_exists ? ms_oplog_entry_position(doc) : (MsOplogPosition){0, 0};
    bson_error_t berr;
    int r = 0;
    if (mongoc_cursor_error(cur, &berr))
        r = ms_mongo_error(m, e, &berr,
                           newest ? "reading the newest oplog entry" : "reading the oldest oplog entry");
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(coll);
    return r;
}

int ms_oplog_edge(MsMongo *m, mongoc_client_t *c, bool newest, bool *ret_exists,
                  MsOplogPosition *ret, MsError *e) {
    bson_t filter = BSON_INITIALIZER;
    int r = oplog_edge_of(m, c, &filter, newest, ret_exists, ret, e);
    bson_destroy(&filter);
    return r;
}

int ms_oplog_newest_of(MsMongo *m, mongoc_client_t *c, const bson_t *filter, bool *ret_exists,
                       MsOplogPosition *ret, MsError *e) {
    return oplog_edge_of(m, c, filter, true, ret_exists, ret, e);
}

void ms_oplog_position_append(bson_t *b, const char *key, MsOplogPosition p) {
    bson_t child;
    BSON_APPEND_DOCUMENT_BEGIN(b, key, &child);
    BSON_APPEND_INT64(&child, "t", p.t);
    BSON_APPEND_INT64(&child, "i", p.i);
    bson_append_document_end(b, &child);
}

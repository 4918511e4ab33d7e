/* Snapshot: list what the deployment holds (or what --ns-include/--ns-exclude select of it),
 * dump collections in parallel into one archive stream, capture the oplog written meanwhile,
 * commit the archive, then the manifest. */
#include "snapshot.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/crc64.h"
#include "common/log.h"
#include "common/strv.h"
#include "common/timeutil.h"
#include "config.h"
#include "io/chain.h"
#include "manifest.h"
#include "mongo-client.h"
#include "mongosnap/mongosnap.h"
#include "oplog-source.h"
#include "snapshot-split.h"
#include "chunk-area.h"
#include "chunked.h"
#include "nsfilter.h"

/* A segment of this many bytes is written to the archive at once: big enough to keep the
 * writer lock cold, small enough to interleave collections and bound memory per worker. */
#define SNAPSHOT_SEGMENT_BYTES (4u * 1024u * 1024u)
/* How often (in documents) a collection worker looks at the cancel flag. */
#define SNAPSHOT_CANCEL_CHECK_DOCS 1024u
#define SNAPSHOT_PROGRESS_INTERVAL_MS 500u
#define SNAPSHOT_MAX_PARALLEL 64u

typedef struct DumpCollection {
    char *db;
    char *name;        /* the name users see */
    char *source_name; /* where the documents are read from (system.buckets.X for time series) */
    char *type;        /* "collection", "view", "timeseries" */
    bool capped;
    char *metadata_json;
    uint32_t n_indexes;
    int64_t estimated_count;
    int64_t estimated_bytes; /* collStats size; -1 when counted without it */
    MsIdSplit split;         /* read in split.n_parts parts at once (snapshot-split.h) */
    /* results: written by the worker that dumped it, or for a split collection summed under
     * DumpContext.parts_lock by its parts, the last of which closes the namespace */
    uint64_t documents;
    uint64_t bytes;
    uint64_t crc;
    unsigned parts_done;
} DumpCollection;

/* One unit of dump work: a collection, or one part of a split one. */
typedef struct DumpItem {
    size_t coll;
    unsigned part;
} DumpItem;

typedef struct DumpContext {
    const MsSnapshotOptions *o;
    MsMongo *mongo;
    MsArchiveWriter *writer;
    DumpCollection *colls;
    size_t n_colls;
    size_t *order; /* dump order: largest first, so the tail of the run stays parallel */
    DumpItem *items; /* the work in that order, a split collection's parts next to each other */
    size_t n_items;
    size_t next; /* index into items, taken atomically */
    pthread_mutex_t parts_lock;
    pthread_mutex_t error_lock;
    MsError error;
    bool failed;
    /* Listing with a filter: collections it selected (users and roles taken for
     * --include-users do not count) and those it left out. */
    size_t n_selected;
    uint64_t left_out;
    /* Per pattern: did it make a difference (see MsSnapshotResult)? */
    bool *include_used;
    bool *exclude_used;
} DumpContext;

static void dump_collection_clear(DumpCollection *c) {
    ms_id_split_clear(&c->split);
    free(c->db);
    free(c->name);
    free(c->source_name);
    free(c->type);
    free(c->metadata_json);
}

/* Renames are a restore's business; a snapshot only selects. */
static bool filter_active(const MsSnapshotOptions *o) {
    return o->filter && (o->filter->n_include > 0 || o->filter->n_exclude > 0);
}

static bool is_cancelled(const MsSnapshotOptions *o) {
    return o->cancel && *o->cancel;
}

static int run_command(MsMongo *m, mongoc_client_t *c, const char *db, const bson_t *cmd,
                       bson_t *reply, const char *context, MsError *e) {
    bson_error_t berr;
    if (!mongoc_client_command_simple(c, db, cmd, NULL, reply, &berr)) {
        bson_destroy(reply);
        bson_init(reply);
        return ms_mongo_error(m, e, &berr, context);
    }
    return 0;
}

/* Databases to dump: all but local, and config (sessions and sharding metadata only: a
 * cluster snapshot's config part asks for it, include_config_db). */
static bool database_is_skipped(const char *name, bool include_config) {
    return strcmp(name, "local") == 0 || (strcmp(name, "config") == 0 && !include_config);
}

static bool is_users_collection(const char *db, const char *name) {
    return strcmp(db, "admin") == 0 &&
           (strcmp(name, "system.users") == 0 || strcmp(name, "system.roles") == 0);
}

static bool collection_is_skipped(const char *db, const char *name, bool include_users) {
    if (strncmp(name, "system.", strlen("system.")) != 0)
        return false;
    if (strcmp(name, "system.js") == 0)
        return false;
    if (include_users && is_users_collection(db, name))
        return false;
    /* system.views is recreated from the views' metadata; system.buckets.* belong to their
     * time-series collection; the rest is server-internal. */
    return true;
}

static int list_databases(MsMongo *m, mongoc_client_t *c, bool include_config, char ***ret,
                          size_t *ret_n, MsError *e) {
    bson_t reply;
    bson_t *cmd = BCON_NEW("listDatabases", BCON_INT32(1), "nameOnly", BCON_BOOL(true));
    int r = run_command(m, c, "admin", cmd, &reply, "listing databases", e);
    bson_destroy(cmd);
    if (r < 0) {
        bson_destroy(&reply);
        return r;
    }
    char **names = NULL;
    size_t n = 0;
    bson_iter_t it, arr, db;
    if (bson_iter_init_find(&it, &reply, "databases") && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (bson_iter_recurse(&arr, &db) && bson_iter_find(&db, "name") &&
                BSON_ITER_HOLDS_UTF8(&db)) {
                const char *name = bson_iter_utf8(&db, NULL);
                if (database_is_skipped(name, include_config))
                    continue;
                ms_ns_filter_add(&names, &n, name);
            }
    bson_destroy(&reply);
    *ret = names;
    *ret_n = n;
    return 0;
}

/* When every include pattern names its database literally ("shop.*", "app.orders"), those
 * databases (and admin for --include-users), without asking the server: listDatabases costs
 * FerretDB time that grows with every collection it holds (0.7 s at 1,000, 6 s at 4,100),
 * also with nameOnly. A database that does not exist then simply lists no collection.
 * *ret_n stays 0 when some include has a '*' in its database part (or there is none). */
static int literal_databases(const MsNsFilter *f, bool include_users, bool include_config,
                             char ***ret, size_t *ret_n) {
    *ret = NULL;
    *ret_n = 0;
    if (!f || f->n_include == 0)
        return 0;
    for (size_t i = 0; i < f->n_include; i++) {
        const char *dot = strchr(f->include[i], '.');
        if (!dot || memchr(f->include[i], '*', (size_t) (dot - f->include[i])))
            return 0;
    }
    char **names = NULL;
    size_t n = 0;
    for (size_t i = 0; i <= f->n_include; i++) {
        _cleanup_free_ char *db = i < f->n_include
                                      ? strndup(f->include[i], strcspn(f->include[i], "."))
                                  : include_users ? strdup("admin")
                                                  : NULL;
        if (i < f->n_include && !db)
            goto oom;
        if (!db || database_is_skipped(db, include_config))
            continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(names[k], db) == 0;
        if (!seen && ms_ns_filter_add(&names, &n, db) < 0)
            goto oom;
    }
    *ret = names;
    *ret_n = n;
    return 0;
oom:
    for (size_t k = 0; k < n; k++)
        free(names[k]);
    free(names);
    return -ENOMEM;
}

static char *hex_of(const uint8_t *data, uint32_t len) {
    char *s = malloc(len * 2 + 1);
    if (!s)
        return NULL;
    for (uint32_t i = 0; i < len; i++)
        snprintf(s + i * 2, 3, "%02x", data[i]);
    return s;
}

/* The metadata mongodump writes for a collection: {options, indexes, uuid, collectionName, type},
 * as canonical extended JSON so every BSON type survives the text form. */
static int build_metadata(MsMongo *m, mongoc_client_t *c, const char *db, const bson_t *info,
                          DumpCollection *out, MsError *e) {
    bson_iter_t it;
    bson_t meta = BSON_INITIALIZER;
    bson_t opts_doc;
    if (bson_iter_init_find(&it, info, "options") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        const uint8_t *data;
        uint32_t len;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&opts_doc, data, len)) {
            BSON_APPEND_DOCUMENT(&meta, "options", &opts_doc);
            bson_iter_t cap;
            if (bson_iter_init_find(&cap, &opts_doc, "capped") && bson_iter_as_bool(&cap))
                out->capped = true;
        }
    } else {
        bson_t empty = BSON_INITIALIZER;
        BSON_APPEND_DOCUMENT(&meta, "options", &empty);
    }

    bson_t indexes;
    BSON_APPEND_ARRAY_BEGIN(&meta, "indexes", &indexes);
    if (strcmp(out->type, "view") != 0) {
        mongoc_collection_t *coll = mongoc_client_get_collection(c, db, out->name);
        mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(coll, NULL);
        const bson_t *idx;
        uint32_t n = 0;
        while (mongoc_cursor_next(cur, &idx)) {
            char key[24];
            snprintf(key, sizeof(key), "%" PRIu32, n++);
            /* "ns" is obsolete and names the source: a restore into another namespace
             * must not carry it. */
            bson_t cleaned = BSON_INITIALIZER;
            bson_copy_to_excluding_noinit(idx, &cleaned, "ns", NULL);
            bson_append_document(&indexes, key, -1, &cleaned);
            bson_destroy(&cleaned);
        }
        bson_error_t berr;
        bool failed = mongoc_cursor_error(cur, &berr);
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
        if (failed) {
            bson_append_array_end(&meta, &indexes);
            bson_destroy(&meta);
            char ctx[512];
            snprintf(ctx, sizeof(ctx), "listing the indexes of %s.%s", db, out->name);
            return ms_mongo_error(m, e, &berr, ctx);
        }
        out->n_indexes = n;
    }
    bson_append_array_end(&meta, &indexes);

    bson_iter_t uuid;
    if (bson_iter_init(&it, info) && bson_iter_find_descendant(&it, "info.uuid", &uuid) &&
        BSON_ITER_HOLDS_BINARY(&uuid)) {
        bson_subtype_t st;
        uint32_t len;
        const uint8_t *data;
        bson_iter_binary(&uuid, &st, &len, &data);
        _cleanup_free_ char *hex = hex_of(data, len);
        if (hex)
            BSON_APPEND_UTF8(&meta, "uuid", hex);
    }
    BSON_APPEND_UTF8(&meta, "collectionName", out->name);
    BSON_APPEND_UTF8(&meta, "type", out->type);
    out->metadata_json = bson_as_canonical_extended_json(&meta, NULL);
    bson_destroy(&meta);
    if (!out->metadata_json)
        return ms_error_set(e, EINVAL, "cannot encode the metadata of %s.%s", db, out->name);
    /* Own it with malloc so clear() can free() it. */
    char *copy = strdup(out->metadata_json);
    bson_free(out->metadata_json);
    out->metadata_json = copy;
    return copy ? 0 : ms_error_set(e, ENOMEM, "out of memory");
}

/* Up to this many collections, each is counted with collStats; beyond, with count. */
#define COLLSTATS_COLLECTIONS_MAX 64

/* Only sizes the progress bar and orders the dump (largest first), both revised as we go, so
 * a metadata count is enough. Which command: collStats answers from metadata on MongoDB and,
 * on FerretDB, beats count on large collections, but its cost there grows with the number of
 * collections on the server (1.6 ms each at 10, 62 ms at 3,000: quadratic in all), where count
 * without a query costs a fraction of a millisecond per small collection (0.4 ms at 1,000;
 * bench/collections-bench). So collStats for a few collections, count for many; each falls
 * back to the other where refused. */
static int64_t count_documents(mongoc_client_t *c, const char *db, const char *name, bool many,
                               int64_t *ret_bytes) {
    bson_error_t berr;
    int64_t n = -1;
    *ret_bytes = -1;
    if (!many) {
        bson_t reply;
        bson_t *cmd = BCON_NEW("collStats", BCON_UTF8(name));
        mongoc_database_t *database = mongoc_client_get_database(c, db);
        if (mongoc_database_command_simple(database, cmd, NULL, &reply, &berr)) {
            bson_iter_t it;
            if (bson_iter_init_find(&it, &reply, "count") && BSON_ITER_HOLDS_NUMBER(&it))
                n = bson_iter_as_int64(&it);
            if (n >= 0 && bson_iter_init_find(&it, &reply, "size") && BSON_ITER_HOLDS_NUMBER(&it))
                *ret_bytes = bson_iter_as_int64(&it);
        }
        bson_destroy(&reply);
        bson_destroy(cmd);
        mongoc_database_destroy(database);
        if (n >= 0)
            return n;
    }
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, name);
    n = mongoc_collection_estimated_document_count(coll, NULL, NULL, NULL, &berr);
    mongoc_collection_destroy(coll);
    if (n < 0 && many)
        return count_documents(c, db, name, false, ret_bytes);
    return n < 0 ? 0 : n;
}

/* Whether the filter selects ns, noting which patterns made a difference: the includes that
 * matched a selected namespace, the excludes that took out one an include had matched. */
static bool note_selection(DumpContext *ctx, const char *ns) {
    const MsNsFilter *f = ctx->o->filter;
    bool selected = ms_ns_filter_selects(f, ns);
    bool included = f->n_include == 0;
    for (size_t i = 0; i < f->n_include; i++)
        if (ms_ns_match(f->include[i], ns)) {
            included = true;
            if (selected)
                ctx->include_used[i] = true;
        }
    if (!selected && included)
        for (size_t i = 0; i < f->n_exclude; i++)
            if (ms_ns_match(f->exclude[i], ns))
                ctx->exclude_used[i] = true;
    return selected;
}

/* A database is skipped unlisted because no include can match it or because an exclude covers
 * all of it; in the second case that exclude made a difference. */
static void note_skipped_database(DumpContext *ctx, const char *db) {
    const MsNsFilter *f = ctx->o->filter;
    MsNsFilter includes_only = {.include = f->include, .n_include = f->n_include};
    if (!ms_ns_filter_could_select_db(&includes_only, db))
        return;
    for (size_t i = 0; i < f->n_exclude; i++) {
        MsNsFilter one = {.exclude = &f->exclude[i], .n_exclude = 1};
        if (!ms_ns_filter_could_select_db(&one, db))
            ctx->exclude_used[i] = true;
    }
}

/* Copies of the patterns that made no difference, with a warning for each. */
static int collect_unused(char *const *patterns, const bool *used, size_t n, const char *option,
                          const char *what, char ***ret, size_t *ret_n) {
    for (size_t i = 0; i < n; i++) {
        if (used[i])
            continue;
        log_warning("%s '%s' %s; check it for a typo", option, patterns[i], what);
        if (ms_ns_filter_add(ret, ret_n, patterns[i]) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int list_collections(DumpContext *ctx, mongoc_client_t *c, const char *db, MsError *e) {
    mongoc_database_t *database = mongoc_client_get_database(c, db);
    mongoc_cursor_t *cur = mongoc_database_find_collections_with_opts(database, NULL);
    const bson_t *info;
    int r = 0;
    while (r == 0 && mongoc_cursor_next(cur, &info)) {
        bson_iter_t it;
        const char *name = NULL, *type = "collection";
        if (bson_iter_init_find(&it, info, "name") && BSON_ITER_HOLDS_UTF8(&it))
            name = bson_iter_utf8(&it, NULL);
        if (bson_iter_init_find(&it, info, "type") && BSON_ITER_HOLDS_UTF8(&it))
            type = bson_iter_utf8(&it, NULL);
        if (!name || collection_is_skipped(db, name, ctx->o->include_users))
            continue;
        /* Users and roles are here only because of --include-users, which the filter does not
         * govern. Everything else, views and time-series collections too, is selected by its
         * own namespace, before any of its metadata is read. */
        bool users = is_users_collection(db, name);
        if (!users && filter_active(ctx->o)) {
            _cleanup_free_ char *ns = ms_ns_join(db, name);
            if (!ns) {
                r = ms_error_set(e, ENOMEM, "out of memory");
                break;
            }
            if (!note_selection(ctx, ns)) {
                log_debug("%s left out by the namespace filters", ns);
                ctx->left_out++;
                continue;
            }
        }
        if (!users)
            ctx->n_selected++;
        DumpCollection *grown = realloc(ctx->colls, (ctx->n_colls + 1) * sizeof(*grown));
        if (!grown) {
            r = ms_error_set(e, ENOMEM, "out of memory");
            break;
        }
        ctx->colls = grown;
        DumpCollection *dc = &ctx->colls[ctx->n_colls++];
        memset(dc, 0, sizeof(*dc));
        dc->split.n_parts = 1;
        dc->estimated_bytes = -1;
        dc->db = strdup(db);
        dc->name = strdup(name);
        dc->type = strdup(type);
        if (strcmp(type, "timeseries") == 0) {
            /* A time-series collection's data lives in its buckets collection. */
            if (asprintf(&dc->source_name, "system.buckets.%s", name) < 0)
                dc->source_name = NULL;
        } else
            dc->source_name = strdup(name);
        if (!dc->db || !dc->name || !dc->type || !dc->source_name) {
            r = ms_error_set(e, ENOMEM, "out of memory");
            break;
        }
        r = build_metadata(ctx->mongo, c, db, info, dc, e);
    }
    bson_error_t berr;
    if (r == 0 && mongoc_cursor_error(cur, &berr)) {
        char context[512];
        snprintf(context, sizeof(context), "listing the collections of database '%s'", db);
        r = ms_mongo_error(ctx->mongo, e, &berr, context);
    }
    mongoc_cursor_destroy(cur);
    mongoc_database_destroy(database);
    return r;
}

static void dump_fail(DumpContext *ctx, const MsError *err) {
    pthread_mutex_lock(&ctx->error_lock);
    if (!ctx->failed) {
        ctx->failed = true;
        ctx->error = *err;
    }
    pthread_mutex_unlock(&ctx->error_lock);
}

static bool dump_should_stop(DumpContext *ctx) {
    return __atomic_load_n(&ctx->failed, __ATOMIC_RELAXED) || is_cancelled(ctx->o);
}


/* The end of one namespace's dump: its totals reported. */
static void namespace_done(DumpContext *ctx, DumpCollection *dc, const char *ns) {
    if (dc->documents > (uint64_t) dc->estimated_count)
        /* More documents than counted at the start: revise the total, never overshoot. */
        ms_progress_add_total(ctx->o->progress, dc->documents - (uint64_t) dc->estimated_count);
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&fields, "namespace", ns);
    BSON_APPEND_INT64(&fields, "documents", (int64_t) dc->documents);
    BSON_APPEND_INT64(&fields, "bytes", (int64_t) dc->bytes);
    ms_progress_event(ctx->o->progress, MONGOSNAP_PROGRESS_EVENT_NAMESPACE, &fields);
    bson_destroy(&fields);
}

/* Documents are streamed in _id order (natural order for capped collections, whose order is
 * their meaning) and written in segments of about SNAPSHOT_SEGMENT_BYTES. A split collection's
 * parts each read their _id range that way; the last part to finish closes the namespace with
 * the CRC the archive writer chained over every part's segments in archive order. */
static int dump_collection(DumpContext *ctx, mongoc_client_t *c, DumpCollection *dc,
                           unsigned part, MsError *e) {
    char ns[512];
    snprintf(ns, sizeof(ns), "%s.%s", dc->db, dc->name);
    ms_progress_set_namespace(ctx->o->progress, ns);
    if (strcmp(dc->type, "view") == 0)
        return ms_archive_writer_write_eof(ctx->writer, dc->db, dc->name, 0, e);

    bool split = dc->split.n_parts > 1;
    mongoc_collection_t *coll = mongoc_client_get_collection(c, dc->db, dc->source_name);
    bson_t filter = BSON_INITIALIZER;
    ms_id_split_filter(&dc->split, part, &filter);
    bson_t *opts = dc->capped ? bson_new() : BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    bson_destroy(opts);
    bson_destroy(&filter);

    /* Time-series data goes under system.buckets.X, as mongodump writes it for servers
     * before 8.3 and as mongorestore expects it. */
    MsArchiveNsStream ss;
    int r = ms_archive_ns_stream_init(&ss, ctx->writer, dc->db, dc->source_name, SNAPSHOT_SEGMENT_BYTES, e);
    const bson_t *doc;
    while (r == 0 && mongoc_cursor_next(cur, &doc)) {
        r = ms_archive_ns_stream_add(&ss, bson_get_data(doc), doc->len, e);
        ms_progress_add_items(ctx->o->progress, 1, doc->len);
        if (r == 0 && ss.documents % SNAPSHOT_CANCEL_CHECK_DOCS == 0 && dump_should_stop(ctx))
            r = -ECANCELED;
    }
    bson_error_t berr;
    if (r == 0 && mongoc_cursor_error(cur, &berr)) {
        char context[600];
        snprintf(context, sizeof(context), "reading %s", ns);
        r = ms_mongo_error(ctx->mongo, e, &berr, context);
    }
    if (r == 0)
        r = split ? ms_archive_ns_stream_flush(&ss, e) : ms_archive_ns_stream_finish(&ss, e);
    ms_archive_ns_stream_clear(&ss);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    if (r < 0)
        return r;
    if (!split) {
        dc->crc = ss.crc;
        dc->bytes = ss.bytes;
        dc->documents = ss.documents;
        namespace_done(ctx, dc, ns);
        return 0;
    }
    pthread_mutex_lock(&ctx->parts_lock);
    dc->documents += ss.documents;
    dc->bytes += ss.bytes;
    bool last = ++dc->parts_done == dc->split.n_parts;
    pthread_mutex_unlock(&ctx->parts_lock);
    if (!last)
        return 0;
    dc->crc = ms_archive_writer_namespace_crc(ctx->writer, dc->db, dc->source_name);
    r = ms_archive_writer_write_eof(ctx->writer, dc->db, dc->source_name, dc->crc, e);
    if (r == 0)
        namespace_done(ctx, dc, ns);
    return r;
}

static void *dump_worker_main(void *arg) {
    DumpContext *ctx = arg;
    mongoc_client_t *c = ms_mongo_pop(ctx->mongo);
    for (;;) {
        size_t i = __atomic_fetch_add(&ctx->next, 1, __ATOMIC_RELAXED);
        if (i >= ctx->n_items || dump_should_stop(ctx))
            break;
        MsError err = MS_ERROR_INIT;
        int r = dump_collection(ctx, c, &ctx->colls[ctx->items[i].coll], ctx->items[i].part, &err);
        if (r == -ECANCELED && !ms_error_is_set(&err))
            break;
        if (r < 0) {
            dump_fail(ctx, &err);
            break;
        }
    }
    ms_mongo_push(ctx->mongo, c);
    return NULL;
}

static int compare_by_size_desc(const void *a, const void *b, void *arg) {
    const DumpCollection *colls = arg;
    int64_t x = colls[*(const size_t *) a].estimated_count;
    int64_t y = colls[*(const size_t *) b].estimated_count;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int compare_by_name(const void *a, const void *b) {
    const DumpCollection *x = a, *y = b;
    int r = strcmp(x->db, y->db);
    return r ? r : strcmp(x->name, y->name);
}

/* ---- oplog ---- */

/* The newest oplog position: where a point-in-time restore starts replaying. */
static int oplog_latest(MsMongo *m, mongoc_client_t *c, MsOplogPosition *ret, MsError *e) {
    bool exists;
    return ms_oplog_edge(m, c, true, &exists, ret, e);
}

/* Copy every oplog entry after start into the archive's oplog namespace. Entries written
 * while we copy are included too: the snapshot then ends at the last one copied. With a
 * filter only the entries about selected namespaces are copied (ms_ns_filter_oplog_entry()
 * says which, applyOps are trimmed); the end is still the last entry read, since the
 * selected namespaces are consistent up to it whatever the others did. */
static int oplog_capture(DumpContext *ctx, mongoc_client_t *c, MsOplogPosition start,
                         MsOplogPosition *ret_end, uint64_t *ret_entries, uint64_t *ret_left_out,
                         MsError *e) {
    mongoc_collection_t *coll = mongoc_client_get_collection(c, MS_OPLOG_DB, MS_OPLOG_COLLECTION);
    bson_t *filter = BCON_NEW("ts", "{", "$gt", BCON_TIMESTAMP(start.t, start.i), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    bson_destroy(filter);
    MsOplogPosition end = start;
    MsArchiveNsStream ss;
    int r =
        ms_archive_ns_stream_init(&ss, ctx->writer, MS_ARCHIVE_OPLOG_DB, MS_ARCHIVE_OPLOG_COLLECTION,
                                  SNAPSHOT_SEGMENT_BYTES, e);
    bool filtered = filter_active(ctx->o);
    unsigned flags = (ctx->o->include_users ? MS_NS_OPLOG_KEEP_USERS : 0) |
                     (ctx->o->include_config_db ? MS_NS_OPLOG_KEEP_CONFIG : 0);
    uint64_t read = 0, left_out = 0;
    const bson_t *doc;
    while (r == 0 && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        MsOplogPosition pos = {0, 0};
        if (bson_iter_init_find(&it, doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it))
            bson_iter_timestamp(&it, &pos.t, &pos.i);
        if (ms_oplog_position_after(pos, end))
            end = pos;
        read++;
        bson_t rewritten;
        int verdict = filtered ? ms_ns_filter_oplog_entry(ctx->o->filter, flags, doc, &rewritten, e)
                               : MS_NS_OPLOG_KEEP;
        if (verdict < 0)
            r = verdict;
        else if (verdict == MS_NS_OPLOG_KEEP)
            r = ms_archive_ns_stream_add(&ss, bson_get_data(doc), doc->len, e);
        else if (verdict == MS_NS_OPLOG_REWRITTEN) {
            /* A trimmed applyOps is never larger than the original, so it fits the limit. */
            r = ms_archive_ns_stream_add(&ss, bson_get_data(&rewritten), rewritten.len, e);
            bson_destroy(&rewritten);
        } else
            left_out++;
        if (r == 0 && read % SNAPSHOT_CANCEL_CHECK_DOCS == 0 && is_cancelled(ctx->o))
            r = -ECANCELED;
    }
    bson_error_t berr;
    if (r == 0 && mongoc_cursor_error(cur, &berr))
        r = ms_mongo_error(ctx->mongo, e, &berr, "reading the oplog");
    if (r == 0)
        r = ms_archive_ns_stream_finish(&ss, e);
    ms_archive_ns_stream_clear(&ss);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    uint64_t n = ss.documents;
    if (r == 0) {
        *ret_end = end;
        *ret_entries = n;
        *ret_left_out = left_out;
    }
    return r;
}

/* The oplog is a capped collection: if the entry we started from was overwritten while we
 * dumped, writes between it and the oldest remaining entry are lost to us. */
static int oplog_check_not_rolled_over(MsMongo *m, mongoc_client_t *c, MsOplogPosition start,
                                       MsError *e) {
    if (start.t == 0 && start.i == 0)
        return 0;
    mongoc_collection_t *coll = mongoc_client_get_collection(c, MS_OPLOG_DB, MS_OPLOG_COLLECTION);
    bson_t *filter = BCON_NEW("ts", BCON_TIMESTAMP(start.t, start.i));
    bson_error_t berr;
    int64_t n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL, &berr);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    if (n < 0)
        return ms_mongo_error(m, e, &berr, "checking the oplog start");
    if (n == 0)
        return ms_error_set(e, ESTALE,
                            "the oplog rolled over while the snapshot ran (its entry %" PRIu32
                            ":%" PRIu32 " is gone), so it cannot be made consistent; enlarge the "
                            "oplog or take the snapshot at a quieter time",
                            start.t, start.i);
    return 0;
}

/* ---- the run ---- */

/* The archive's write chain (io/chain.h) over a new object in the store. */
/* The snapshot's marker kept fresh while chunks are written (engine/chunk-area.h). */
static int refresh_marker(void *userdata, MsError *e) {
    MsChunkLock *l = userdata;
    /* forced: the keep-alive thread calls it at its own pace */
    l->written_usec = 0;
    return ms_chunk_lock_refresh(l, e);
}

static int open_chunked_sink(const MsSnapshotOptions *o, const char *key, const char *area,
                             const MsChunkSet *known, MsChunkLock *lock, MsChunkedResults *results,
                             MsSink **ret_head, MsError *e) {
    MsChunkedSpec spec = {
        .storage = o->storage,
        .area = area,
        .index_key = key,
        .avg = o->chunk_avg,
        .level = o->compression_level,
        .key = o->key,
        .known = known,
        .keepalive = refresh_marker,
        .keepalive_userdata = lock,
        .keepalive_usec = MS_CHUNK_LOCK_REFRESH_USEC / 2,
    };
    return ms_chunked_sink_new(&spec, results, ret_head, e);
}

static int open_archive_sink(const MsSnapshotOptions *o, const char *key, MsChainResults *results,
                             MsSink **ret_head, MsError *e) {
    MsSink *store = NULL;
    int r = ms_storage_open_write(o->storage, key, &store, e);
    if (r < 0)
        return r;
    MsSinkChainSpec spec = {.compression = o->compression,
                            .level = o->compression_level,
                            .threads = o->compression_threads,
                            .key = o->key};
    return ms_sink_chain_new(store, &spec, results, ret_head, e);
}

/* The patterns as the user wrote them, for messages: "--ns-include 'a.*' --ns-include 'b.c'". */
static void describe_patterns(char *buf, size_t size, const char *option, char *const *patterns,
                              size_t n) {
    size_t used = strlen(buf);
    for (size_t i = 0; i < n && used < size; i++) {
        int w =
            snprintf(buf + used, size - used, "%s%s '%s'", used ? " " : "", option, patterns[i]);
        if (w < 0)
            break;
        used += (size_t) w;
    }
}

/* Zero selected collections is a failure, not an empty snapshot: a pattern that matches
 * nothing is almost always a typo, and a "successful" snapshot of nothing would hide it until
 * the day it is restored. */
static int no_collection_selected(const MsNsFilter *f, uint64_t left_out, uint64_t dbs_skipped,
                                  MsError *e) {
    char inc[MS_ERROR_MESSAGE_MAX / 2] = "", exc[MS_ERROR_MESSAGE_MAX / 2] = "";
    describe_patterns(inc, sizeof(inc), "--ns-include", f->include, f->n_include);
    describe_patterns(exc, sizeof(exc), "--ns-exclude", f->exclude, f->n_exclude);
    if (f->n_include == 0)
        return ms_error_set(e, ENOENT,
                            "%s leaves no collection (%" PRIu64 " left out); nothing to snapshot",
                            exc, left_out);
    if (f->n_exclude == 0)
        return ms_error_set(e, ENOENT,
                            "no collection matches %s (%" PRIu64 " collections left out, %" PRIu64
                            " databases skipped); nothing to snapshot",
                            inc, left_out, dbs_skipped);
    return ms_error_set(e, ENOENT,
                        "no collection matches %s without also matching %s (%" PRIu64
                        " collections left out, %" PRIu64 " databases skipped); nothing to "
                        "snapshot",
                        inc, exc, left_out, dbs_skipped);
}

static char *join_key(const char *prefix, const char *name, const char *suffix1,
                      const char *suffix2) {
    char *s = NULL;
    if (asprintf(&s, "%s%s%s%s%s", prefix && *prefix ? prefix : "", prefix && *prefix ? "/" : "",
                 name, suffix1, suffix2) < 0)
        return NULL;
    return s;
}

/* A snapshot name or prefix component: what the message promises, exactly. No leading '.'
 * (hidden files, "." and ".."), nothing else than letters, digits, '-', '_' and '.'. */
#define SNAPSHOT_NAME_MAX 200
static bool name_component_is_valid(const char *s, size_t len) {
    if (len == 0 || len > SNAPSHOT_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(isalnum((unsigned char) s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

static int check_location(const char *prefix, const char *name, MsError *e) {
    if (!name || !name_component_is_valid(name, strlen(name)))
        return ms_error_set(e, EINVAL,
                            "'%s' is not a valid snapshot location: a name is 1 to %d letters, "
                            "digits, '-', '_' and '.', not starting with '.'",
                            name ? name : "", SNAPSHOT_NAME_MAX);
    for (const char *p = prefix; p && *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t) (slash - p) : strlen(p);
        if (!name_component_is_valid(p, len))
            return ms_error_set(e, EINVAL,
                                "'%s' is not a valid snapshot location: a prefix is '/'-separated "
                                "parts of letters, digits, '-', '_' and '.', none empty or "
                                "starting with '.'",
                                prefix);
        p = slash ? slash + 1 : p + len;
    }
    return 0;
}

/* One run of a snapshot: what its steps share. Cleared in every outcome by snapshot_run_done()
 * (the _cleanup_ of ms_snapshot_run): freeing the sink chain before finish() aborts the stored
 * object, so nothing half-written is ever visible. */
typedef struct SnapshotRun {
    const MsSnapshotOptions *o;
    MsProgress *p;
    unsigned parallel;
    uint64_t started_realtime, started;
    char *archive_key, *manifest_key;
    MsMongo *mongo;
    mongoc_client_t *main_client;
    char *server_version;
    DumpContext ctx;
    bool ctx_ready; /* ctx.error_lock initialised */
    bool filtered;
    char **dbs;
    size_t n_dbs;
    uint64_t dbs_skipped;
    MsArchiveCollection *prelude;
    MsSink *head;
    MsChainResults chain; /* the write chain's measurements: raw and stored bytes, SHA-256 */
    MsArchiveWriter *writer;
    bool have_oplog;
    MsOplogPosition oplog_start, oplog_end, dump_end;
    uint64_t oplog_entries, oplog_left_out;
    uint64_t stored_bytes; /* as the store acknowledges them */
    /* chunked */
    char *chunk_area;
    MsChunkLock chunk_lock;
    MsChunkSet *known;
    MsChunkedResults chunked;
} SnapshotRun;

static void snapshot_run_done(SnapshotRun *s) {
    ms_progress_stop_ticker(s->p);
    ms_progress_report(s->p);
    s->writer = ms_archive_writer_free(s->writer);
    s->head = ms_sink_free(s->head);
    for (size_t i = 0; i < s->ctx.n_colls; i++)
        dump_collection_clear(&s->ctx.colls[i]);
    free(s->ctx.colls);
    free(s->ctx.order);
    free(s->ctx.items);
    free(s->ctx.include_used);
    free(s->ctx.exclude_used);
    free(s->prelude);
    for (size_t i = 0; i < s->n_dbs; i++)
        free(s->dbs[i]);
    free(s->dbs);
    if (s->main_client)
        ms_mongo_push(s->mongo, s->main_client);
    ms_mongo_free(s->mongo);
    free(s->server_version);
    free(s->archive_key);
    free(s->manifest_key);
    ms_chunk_lock_release(&s->chunk_lock);
    ms_chunk_set_free(s->known);
    free(s->chunk_area);
    if (s->ctx_ready) {
        pthread_mutex_destroy(&s->ctx.error_lock);
        pthread_mutex_destroy(&s->ctx.parts_lock);
    }
}

/* Where it goes, and that nothing is there yet. */
static int run_locate(SnapshotRun *s, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    int r = check_location(o->prefix, o->name, e);
    if (r < 0)
        return r;
    s->archive_key =
        o->chunked ? join_key(o->prefix, o->name, MS_CHUNKED_INDEX_SUFFIX, "")
                   : join_key(o->prefix, o->name, MONGOSNAP_ARCHIVE_SUFFIX,
                              o->key ? (o->compression == MS_COMPRESSION_NONE   ? ".enc"
                                        : o->compression == MS_COMPRESSION_ZSTD ? ".zst.enc"
                                                                                : ".gz.enc")
                                     : ms_compression_suffix(o->compression));
    s->manifest_key = join_key(o->prefix, o->name, MONGOSNAP_MANIFEST_SUFFIX, "");
    if (!s->archive_key || !s->manifest_key)
        return ms_error_oom(e);
    if (!ms_storage_key_is_valid(s->archive_key))
        return ms_error_set(e, EINVAL,
                            "'%s' is not a valid snapshot location: use letters, digits, '-', "
                            "'_' and '.' in the prefix and name",
                            s->archive_key);
    MsStorageObject existing;
    MsError ignored = MS_ERROR_INIT;
    if (ms_storage_stat(o->storage, s->manifest_key, &existing, &ignored) == 0) {
        free(existing.key);
        return ms_error_set(e, EEXIST,
                            "a snapshot named '%s' already exists in %s; choose another name",
                            o->name, ms_storage_describe(o->storage));
    }
    return 0;
}

/* The server, and the oplog position taken before listing anything: every write after it is in
 * the captured oplog, so replaying it over the dump ends in a consistent state. */
static int run_connect(SnapshotRun *s, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    ms_progress_set_phase(s->p, "connect");
    int r = ms_mongo_open(o->uri, o->password, s->parallel + 1, &s->mongo, e);
    if (r < 0)
        return r;
    s->main_client = ms_mongo_pop(s->mongo);
    s->ctx.mongo = s->mongo;
    r = ms_mongo_ping(s->mongo, s->main_client, &s->server_version, e);
    if (r < 0)
        return r;
    if (o->detect_cluster && ms_mongo_is_sharded_source(s->main_client))
        return ms_error_set(e, EXDEV, "%s is a sharded cluster's mongos or config server: it "
                                      "takes a cluster snapshot",
                            ms_mongo_redacted_uri(s->mongo));
    log_info("snapshot %s of %s (MongoDB %s) to %s", o->name, ms_mongo_redacted_uri(s->mongo),
             s->server_version, ms_storage_describe(o->storage));
    if (!o->capture_oplog)
        return 0;
    r = ms_oplog_exists(s->mongo, s->main_client, &s->have_oplog, e);
    if (r < 0 || !s->have_oplog)
        return r;
    return oplog_latest(s->mongo, s->main_client, &s->oplog_start, e);
}

/* Whether and how to split a collection: plain collections only (a capped one's natural order
 * is its meaning, a time series is read through its buckets), when the parallel threads would
 * otherwise wait on it and it is large enough for parts of o->split_min_bytes. */
static unsigned split_parts(const SnapshotRun *s, const DumpCollection *dc) {
    uint64_t min = s->o->split_min_bytes;
    if (min == 0 || s->parallel < 2 || dc->capped || strcmp(dc->type, "collection") != 0 ||
        dc->estimated_bytes < 0 || dc->estimated_count < 2 || (uint64_t) dc->estimated_bytes < 2 * min)
        return 1;
    uint64_t parts = (uint64_t) dc->estimated_bytes / min;
    return (unsigned) MS_MIN(parts, (uint64_t) s->parallel);
}

/* The dump's work items, largest collection first, each split collection's parts together. */
static int plan_items(SnapshotRun *s, MsError *e) {
    DumpContext *ctx = &s->ctx;
    size_t n = 0;
    for (size_t i = 0; i < ctx->n_colls; i++) {
        DumpCollection *dc = &ctx->colls[i];
        unsigned parts = split_parts(s, dc);
        if (parts > 1) {
            ms_id_split_plan(s->main_client, dc->db, dc->source_name, (uint64_t) dc->estimated_count,
                             parts, &dc->split);
            if (dc->split.n_parts > 1)
                log_info("%s.%s (%" PRId64 " documents, %" PRId64 " bytes) is read in %u parts "
                         "by _id range",
                         dc->db, dc->name, dc->estimated_count, dc->estimated_bytes,
                         dc->split.n_parts);
        }
        n += dc->split.n_parts;
    }
    ctx->items = calloc(n ? n : 1, sizeof(*ctx->items));
    if (!ctx->items)
        return ms_error_oom(e);
    for (size_t i = 0; i < ctx->n_colls; i++) {
        const DumpCollection *dc = &ctx->colls[ctx->order[i]];
        for (unsigned k = 0; k < dc->split.n_parts; k++)
            ctx->items[ctx->n_items++] = (DumpItem){ctx->order[i], k};
    }
    return 0;
}

/* What is dumped, in which order: databases and collections listed (as few as the filters
 * allow), their sizes estimated, the archive's prelude. */
static int run_plan(SnapshotRun *s, MsSnapshotResult *ret, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    DumpContext *ctx = &s->ctx;
    int r = 0;
    ms_progress_set_phase(s->p, "prelude");
    if (s->filtered) {
        ctx->include_used = calloc(o->filter->n_include + 1, sizeof(bool));
        ctx->exclude_used = calloc(o->filter->n_exclude + 1, sizeof(bool));
        if (!ctx->include_used || !ctx->exclude_used)
            return ms_error_oom(e);
        if (literal_databases(o->filter, o->include_users, o->include_config_db, &s->dbs, &s->n_dbs) < 0)
            return ms_error_oom(e);
    }
    if (s->n_dbs > 0)
        log_debug("the namespace filters name %zu database(s) literally: the server's "
                  "databases are not listed",
                  s->n_dbs);
    else
        r = list_databases(s->mongo, s->main_client, o->include_config_db, &s->dbs, &s->n_dbs, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s->n_dbs && r == 0; i++) {
        /* A database none of whose collections the filters could select is not even listed:
         * with "app.*" the other databases cost nothing. admin is still listed for
         * --include-users. */
        if (s->filtered && !ms_ns_filter_could_select_db(o->filter, s->dbs[i]) &&
            !(o->include_users && strcmp(s->dbs[i], "admin") == 0)) {
            log_debug("database %s skipped: the namespace filters cannot select any of its "
                      "collections",
                      s->dbs[i]);
            s->dbs_skipped++;
            note_skipped_database(ctx, s->dbs[i]);
            continue;
        }
        r = list_collections(ctx, s->main_client, s->dbs[i], e);
    }
    if (r < 0)
        return r;
    if (s->filtered) {
        if (ctx->n_selected == 0)
            return no_collection_selected(o->filter, ctx->left_out, s->dbs_skipped, e);
        log_info("the namespace filters select %zu collections; %" PRIu64 " left out, %" PRIu64
                 " databases skipped",
                 ctx->n_selected, ctx->left_out, s->dbs_skipped);
        r = collect_unused(o->filter->include, ctx->include_used, o->filter->n_include,
                           "--ns-include", "selects no collection", &ret->ns_include_unused,
                           &ret->n_ns_include_unused);
        if (r == 0)
            r = collect_unused(o->filter->exclude, ctx->exclude_used, o->filter->n_exclude,
                               "--ns-exclude", "leaves out no collection", &ret->ns_exclude_unused,
                               &ret->n_ns_exclude_unused);
        if (r < 0)
            return ms_error_oom(e);
    }
    /* Counted once every collection is known, so the command fits how many there are. */
    for (size_t i = 0; i < ctx->n_colls; i++)
        if (strcmp(ctx->colls[i].type, "view") != 0)
            ctx->colls[i].estimated_count =
                count_documents(s->main_client, ctx->colls[i].db, ctx->colls[i].source_name,
                                ctx->n_colls > COLLSTATS_COLLECTIONS_MAX,
                                &ctx->colls[i].estimated_bytes);
    if (ctx->n_colls > 0) /* qsort(NULL, 0) is undefined */
        qsort(ctx->colls, ctx->n_colls, sizeof(*ctx->colls), compare_by_name);
    ctx->order = calloc(ctx->n_colls ? ctx->n_colls : 1, sizeof(size_t));
    /* One more slot: the captured oplog is listed in the prelude as db "" collection "oplog",
     * or mongorestore refuses the archive. */
    s->prelude = calloc(ctx->n_colls + 1, sizeof(*s->prelude));
    if (!ctx->order || !s->prelude)
        return ms_error_oom(e);
    for (size_t i = 0; i < ctx->n_colls; i++) {
        ctx->order[i] = i;
        DumpCollection *dc = &ctx->colls[i];
        s->prelude[i] = (MsArchiveCollection){
            .db = dc->db,
            .collection = dc->name,
            .metadata_json = dc->metadata_json,
            .size = 0,
            .type = dc->type,
        };
        ms_progress_add_total(s->p, (uint64_t) dc->estimated_count);
    }
    if (ctx->n_colls > 0)
        qsort_r(ctx->order, ctx->n_colls, sizeof(size_t), compare_by_size_desc, ctx->colls);
    return plan_items(s, e);
}

/* A chunked snapshot's marker (kept apart from garbage collection, engine/chunk-area.h) and the
 * chunks it need not store again: those the newest committed snapshots' indexes name. */
#define CHUNKED_KNOWN_SNAPSHOTS 3
/* A collector killed outright leaves its marker: it goes stale before the snapshot gives up. */
#define CHUNKED_GC_WAIT_USEC (MS_CHUNK_LOCK_STALE_USEC + 60ULL * 1000000ULL)

static int run_chunks_prepare(SnapshotRun *s, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    if (!o->chunked)
        return 0;
    s->chunk_area = ms_chunk_area(o->prefix);
    if (!s->chunk_area)
        return ms_error_oom(e);
    int r = ms_chunk_lock_snapshot(o->storage, s->chunk_area, o->name, CHUNKED_GC_WAIT_USEC,
                                   &s->chunk_lock, e);
    if (r < 0)
        return r;
    unsigned used = 0;
    r = ms_chunk_known_set(o->storage, o->prefix, o->key, CHUNKED_KNOWN_SNAPSHOTS, &s->known, &used, e);
    if (r < 0)
        return r;
    log_info("chunked snapshot: %zu chunks of %u earlier snapshot(s) may be reused",
             ms_chunk_set_size(s->known), used);
    return 0;
}

/* The archive opened in the store, its prelude written, the collections dumped in parallel. */
static int run_dump(SnapshotRun *s, const char *tool_version, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    DumpContext *ctx = &s->ctx;
    int r = o->chunked ? open_chunked_sink(o, s->archive_key, s->chunk_area, s->known,
                                           &s->chunk_lock, &s->chunked, &s->head, e)
                       : open_archive_sink(o, s->archive_key, &s->chain, &s->head, e);
    if (r < 0)
        return r;
    s->writer = ms_archive_writer_new(s->head);
    if (!s->writer)
        return ms_error_oom(e);
    ctx->writer = s->writer;
    MsArchiveHeader header = {
        .concurrent_collections = (int32_t) s->parallel,
        .version = (char *) MS_ARCHIVE_FORMAT_VERSION,
        .server_version = s->server_version,
        .tool_version = (char *) tool_version,
    };
    size_t n_prelude = ctx->n_colls;
    if (s->have_oplog)
        s->prelude[n_prelude++] = (MsArchiveCollection){
            .db = (char *) MS_ARCHIVE_OPLOG_DB,
            .collection = (char *) MS_ARCHIVE_OPLOG_COLLECTION,
            .metadata_json = (char *) "",
            .type = (char *) "",
        };
    r = ms_archive_writer_write_prelude(s->writer, &header, s->prelude, n_prelude, e);
    if (r < 0)
        return r;

    ms_progress_set_phase(s->p, "dump");
    ms_progress_start_ticker(s->p, SNAPSHOT_PROGRESS_INTERVAL_MS);
    pthread_t threads[SNAPSHOT_MAX_PARALLEL];
    unsigned started_threads = 0;
    for (unsigned i = 0; i < s->parallel; i++) {
        if (pthread_create(&threads[i], NULL, dump_worker_main, ctx) != 0)
            break;
        started_threads++;
    }
    if (started_threads == 0)
        return ms_error_set(e, EAGAIN, "cannot start a dump thread");
    for (unsigned i = 0; i < started_threads; i++)
        pthread_join(threads[i], NULL);
    if (ctx->failed) {
        *e = ctx->error;
        return -ctx->error.code;
    }
    if (is_cancelled(o))
        return ms_error_set(e, ECANCELED, "the snapshot was stopped; nothing was stored");
    return 0;
}

/* The oplog written while the collections were dumped, appended to the archive. */
static int run_oplog(SnapshotRun *s, MsError *e) {
    if (!s->have_oplog)
        return 0;
    ms_progress_set_phase(s->p, "oplog");
    ms_progress_set_namespace(s->p, "local.oplog.rs");
    int r = oplog_capture(&s->ctx, s->main_client, s->oplog_start, &s->oplog_end, &s->oplog_entries,
                          &s->oplog_left_out, e);
    if (r == 0)
        r = oplog_check_not_rolled_over(s->mongo, s->main_client, s->oplog_start, e);
    if (r < 0)
        return r;
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_INT64(&fields, "entries", (int64_t) s->oplog_entries);
    ms_oplog_position_append(&fields, "first", s->oplog_start);
    ms_oplog_position_append(&fields, "last", s->oplog_end);
    ms_progress_event(s->p, MONGOSNAP_PROGRESS_EVENT_OPLOG, &fields);
    bson_destroy(&fields);
    return 0;
}

/* A cluster part: the newest oplog position now that the dump is done, then the barrier with
 * the other parts (MsSnapshotOptions.after_dump), then a wait until this server's oplog holds
 * every entry up to the cluster's consistency point. Positions of two servers compare by their
 * seconds; within one second their counters are each server's own, so "every entry up to T" is
 * known only once the oplog has gone past T, or once the clock has left T's second behind
 * (after which no entry can be stamped T.t or earlier). */
#define CLUSTER_CAPTURE_WAIT_POLL_USEC 200000
#define CLUSTER_CAPTURE_CLOCK_MARGIN_SEC 2

static int run_after_dump(SnapshotRun *s, MsError *e) {
    bool exists = false;
    int r = s->have_oplog ? ms_oplog_edge(s->mongo, s->main_client, true, &exists, &s->dump_end, e)
                          : 0;
    if (r < 0)
        return r;
    ms_progress_set_phase(s->p, "barrier");
    MsOplogPosition point = s->dump_end;
    r = s->o->after_dump(s->o->after_dump_userdata, s->dump_end, &point, e);
    while (r == 0 && s->have_oplog) {
        MsOplogPosition newest;
        r = ms_oplog_edge(s->mongo, s->main_client, true, &exists, &newest, e);
        if (r < 0 || ms_oplog_position_after(newest, point) ||
            ms_realtime_usec() / 1000000 > (uint64_t) point.t + CLUSTER_CAPTURE_CLOCK_MARGIN_SEC)
            break;
        if (is_cancelled(s->o))
            return ms_error_set(e, ECANCELED, "the snapshot was stopped");
        usleep(CLUSTER_CAPTURE_WAIT_POLL_USEC);
    }
    return r;
}

/* The archive committed, and the size the store acknowledges checked: that size, not the
 * bytes handed to it, is what the snapshot records and shows (its "backup file size"); a store
 * that holds something else than was sent gets no manifest, so the snapshot is not listed
 * complete. */
static int run_commit_archive(SnapshotRun *s, MsError *e) {
    const MsSnapshotOptions *o = s->o;
    ms_progress_set_phase(s->p, "commit");
    int r = ms_archive_writer_check_complete(s->writer, e);
    if (r == 0)
        r = ms_sink_finish(s->head, e);
    if (r < 0) {
        ms_error_prefix(e, "storing %s: ", s->archive_key);
        return r;
    }
    if (o->chunked) {
        /* The index is the snapshot's stored object; the chunks are checked by id on read. */
        s->chain.raw_bytes = s->chunked.raw_bytes;
        s->chain.stored_bytes = s->chunked.index_bytes;
        memcpy(s->chain.stored_sha256, s->chunked.index_sha256, sizeof(s->chain.stored_sha256));
    }
    MsStorageObject stored = {0};
    r = ms_storage_stat(o->storage, s->archive_key, &stored, e);
    free(stored.key);
    if (r == 0 && stored.size != s->chain.stored_bytes)
        r = ms_error_set(e, EBADMSG,
                         "the store holds %" PRIu64 " bytes of %s after the upload, but %" PRIu64
                         " were sent; the snapshot is not recorded",
                         stored.size, s->archive_key, s->chain.stored_bytes);
    if (r < 0) {
        ms_error_prefix(e, "checking the stored archive: ");
        MsError ignore = MS_ERROR_INIT;
        ms_storage_remove(o->storage, s->archive_key, &ignore);
        return r;
    }
    s->stored_bytes = stored.size;
    __atomic_store_n(&s->p->bytes_written, s->stored_bytes, __ATOMIC_RELAXED);
    return 0;
}

static int dup_to(char **dst, const char *src) {
    if (!src)
        return 0;
    return (*dst = strdup(src)) ? 0 : -ENOMEM;
}

static int dup_patterns(char ***dst, size_t *n_dst, char *const *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ms_strv_push(dst, src[i]) < 0)
            return -ENOMEM;
    *n_dst = n;
    return 0;
}

/* The manifest of this run, owning every string as a parsed one does (ms_manifest_clear()
 * frees either). */
static int build_manifest(const SnapshotRun *s, const char *tool_version, MsManifest *m,
                          MsError *e) {
    const MsSnapshotOptions *o = s->o;
    char hostname[256] = "unknown";
    gethostname(hostname, sizeof(hostname) - 1);
    char started_iso[MS_ISO8601_MAX], finished_iso[MS_ISO8601_MAX];
    ms_format_iso8601(s->started_realtime, started_iso);
    ms_format_iso8601(ms_realtime_usec(), finished_iso);
    *m = (MsManifest){
        .elapsed_usec = ms_now_usec() - s->started,
        .seq = o->seq,
        .archive_size = s->stored_bytes,
        .uncompressed_size = s->chain.raw_bytes,
        .encryption_chunk_size = o->key ? MS_ENCRYPT_DEFAULT_CHUNK_SIZE : 0,
        .point_in_time = s->have_oplog,
        .oplog_start = s->oplog_start,
        .oplog_end = s->oplog_end,
        .oplog_entries = s->oplog_entries,
    };
    const char *why_not_pit =
        s->have_oplog ? NULL
        : o->capture_oplog
            ? "the source has no oplog (local.oplog.rs), so writes made during the snapshot may "
              "be partly included"
            : "oplog capture was turned off";
    /* The agent's Node= names the node it belongs to; taken by hand there is none (resync then
     * adopts it as the resyncing node's), and the host tells where it ran. */
    int r = 0;
    r |= dup_to(&m->snapshot, o->name);
    r |= dup_to(&m->tool_version, tool_version);
    r |= dup_to(&m->started_at, started_iso);
    r |= dup_to(&m->finished_at, finished_iso);
    r |= dup_to(&m->source_uri, ms_mongo_redacted_uri(s->mongo));
    r |= dup_to(&m->server_version, s->server_version);
    r |= dup_to(&m->node, o->node);
    r |= dup_to(&m->host, hostname);
    r |= dup_to(&m->origin, o->origin);
    r |= dup_to(&m->archive_key, s->archive_key);
    r |= dup_to(&m->compression,
                ms_compression_to_string(o->chunked ? MS_COMPRESSION_ZSTD : o->compression));
    if (o->chunked) {
        r |= dup_to(&m->archive_format, MS_MANIFEST_FORMAT_CHUNKED);
        m->chunks = s->chunked.chunks;
        m->chunks_stored = s->chunked.chunks_stored;
        m->chunks_stored_bytes = s->chunked.stored_bytes;
        m->chunk_avg = (uint32_t) (o->chunk_avg ? o->chunk_avg : MS_CHUNK_DEFAULT_AVG);
    }
    r |= dup_to(&m->encryption_cipher, o->key ? MS_ENCRYPT_CIPHER_NAME : NULL);
    r |= dup_to(&m->point_in_time_reason, why_not_pit);
    if (s->filtered) {
        r |= dup_patterns(&m->ns_include, &m->n_ns_include, o->filter->include,
                          o->filter->n_include);
        r |= dup_patterns(&m->ns_exclude, &m->n_ns_exclude, o->filter->exclude,
                          o->filter->n_exclude);
    }
    if (r != 0)
        return ms_error_oom(e);
    memcpy(m->archive_sha256, s->chain.stored_sha256, sizeof(m->archive_sha256));
    if (o->key)
        memcpy(m->encryption_key_id, o->key->id_hex, sizeof(m->encryption_key_id));
    for (size_t i = 0; i < s->ctx.n_colls; i++) {
        const DumpCollection *dc = &s->ctx.colls[i];
        MsManifestNamespace ns = {
            .db = dc->db,
            .collection = dc->name,
            .type = dc->type,
            .documents = dc->documents,
            .bytes = dc->bytes,
            .crc64 = dc->crc,
            .indexes = dc->n_indexes,
        };
        if (ms_manifest_add_namespace(m, &ns) < 0) /* copies the strings */
            return ms_error_oom(e);
        m->total_documents += dc->documents;
        m->total_bytes += dc->bytes;
    }
    return 0;
}

/* The manifest is written last: a snapshot without one is incomplete, never listed. */
static int run_commit_manifest(SnapshotRun *s, const MsManifest *m, MsError *e) {
    _cleanup_free_ char *json = NULL;
    size_t json_len = 0;
    int r = ms_manifest_serialize(m, &json, &json_len, e);
    if (r == 0)
        r = ms_storage_put(s->o->storage, s->manifest_key, json, json_len, e);
    if (r < 0) {
        ms_error_prefix(e, "storing the manifest %s: ", s->manifest_key);
        /* Without its manifest the archive is an orphan: remove it. */
        MsError ignore = MS_ERROR_INIT;
        ms_storage_remove(s->o->storage, s->archive_key, &ignore);
    }
    return r;
}

int ms_snapshot_run(const MsSnapshotOptions *o, MsSnapshotResult *ret, MsError *e) {
    static const char tool_version[] = "mongosnap " MONGOSNAP_VERSION;
    _cleanup_(snapshot_run_done) SnapshotRun s = {
        .o = o,
        .p = o->progress,
        .parallel =
            MS_MIN(o->parallel_collections ? o->parallel_collections : 1, SNAPSHOT_MAX_PARALLEL),
        .started_realtime = ms_realtime_usec(),
        .started = ms_now_usec(),
        .ctx = {.o = o},
        .filtered = filter_active(o),
    };
    pthread_mutex_init(&s.ctx.error_lock, NULL);
    pthread_mutex_init(&s.ctx.parts_lock, NULL);
    s.ctx_ready = true;
    int r = run_locate(&s, e);
    if (r == 0)
        r = run_connect(&s, e);
    if (r == 0)
        r = run_plan(&s, ret, e);
    if (r == 0)
        r = run_chunks_prepare(&s, e);
    if (r == 0)
        r = run_dump(&s, tool_version, e);
    if (r == 0 && o->after_dump)
        r = run_after_dump(&s, e);
    if (r == 0)
        r = run_oplog(&s, e);
    if (r == 0)
        r = run_commit_archive(&s, e);
    _cleanup_(ms_manifest_clear) MsManifest manifest = {0};
    if (r == 0)
        r = build_manifest(&s, tool_version, &manifest, e);
    if (r == 0)
        r = run_commit_manifest(&s, &manifest, e);
    if (r < 0) {
        if (r == -ECANCELED && !ms_error_is_set(e))
            ms_error_set(e, ECANCELED, "the snapshot was stopped; nothing was stored");
        return r;
    }
    ms_progress_mark_completed(s.p);
    ms_progress_set_phase(s.p, "done");
    ret->archive_key = TAKE_PTR(s.archive_key);
    ret->manifest_key = TAKE_PTR(s.manifest_key);
    ret->documents = manifest.total_documents;
    ret->namespaces = s.ctx.n_colls;
    ret->stored_bytes = s.stored_bytes + s.chunked.stored_bytes;
    ret->uncompressed_bytes = s.chain.raw_bytes;
    ret->chunks = s.chunked.chunks;
    ret->chunks_stored = s.chunked.chunks_stored;
    ret->oplog_start = s.oplog_start;
    ret->oplog_end = s.oplog_end;
    ret->dump_end = s.dump_end;
    ret->point_in_time = s.have_oplog;
    ret->collections_left_out = s.ctx.left_out;
    ret->databases_skipped = s.dbs_skipped;
    ret->oplog_entries_left_out = s.oplog_left_out;
    log_info("snapshot %s complete: %" PRIu64 " documents in %zu namespaces, %" PRIu64
             " bytes stored",
             o->name, manifest.total_documents, s.ctx.n_colls, ret->stored_bytes);
    return 0;
}

void ms_snapshot_result_clear(MsSnapshotResult *r) {
    free(r->archive_key);
    free(r->manifest_key);
    for (size_t i = 0; i < r->n_ns_include_unused; i++)
        free(r->ns_include_unused[i]);
    free(r->ns_include_unused);
    for (size_t i = 0; i < r->n_ns_exclude_unused; i++)
        free(r->ns_exclude_unused[i]);
    free(r->ns_exclude_unused);
    memset(r, 0, sizeof(*r));
}

/* Restore: recreate collections, insert documents through parallel workers as the archive
 * streams in, check every count and checksum, build indexes and views, replay the oplog. */
#include "restore.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive/archive.h"
#include "common/log.h"
#include "mongo-client.h"
#include "mongosnap/mongosnap.h"
#include "nsmap.h"
#include "oplog-apply.h"
#include "oplog-source.h"
#include "snapshot-source.h"
#include "archive/bson-read.h"

#define RESTORE_DEFAULT_PARALLEL 4u
#define RESTORE_MAX_PARALLEL 64u
#define RESTORE_DEFAULT_BATCH_DOCS 1000u
/* A batch is sent once it holds this many bytes even if it has fewer documents: the server
 * takes at most 48 MB per message and 100,000 writes per batch. */
#define RESTORE_BATCH_MAX_BYTES (8u * 1024u * 1024u)
#define RESTORE_QUEUE_PER_WORKER 2u
#define RESTORE_PROGRESS_INTERVAL_MS 500u
#define MONGO_ERROR_DUPLICATE_KEY 11000
#define MONGO_ERROR_NAMESPACE_NOT_FOUND 26
#define MONGO_ERROR_NAMESPACE_EXISTS 48

typedef struct RestoreNs {
    char *src_db, *src_coll;
    char *dst_db, *dst_coll;
    char *insert_coll; /* system.buckets.X for time series */
    const char *type;  /* "", "view", "timeseries" (borrowed from the reader) */
    bool selected;
    bson_t *metadata; /* parsed metadata: {options, indexes, ...} */
    struct Batch *pending;
    uint64_t inserted;   /* atomic */
    uint64_t duplicates; /* atomic */
} RestoreNs;

typedef struct Batch {
    RestoreNs *ns;
    uint8_t *data;
    size_t len, cap;
    uint32_t count;
} Batch;

typedef struct RestoreContext {
    const MsRestoreOptions *o;
    MsMongo *mongo;
    RestoreNs *nss;
    size_t n_nss;
    RestoreNs *last; /* lookup cache: segments come in runs */
    uint64_t protected_nss; /* namespaces the system guard left out */
    char first_protected[256];
    /* The batch queue between the archive reader and the insertion workers. */
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    Batch **queue;
    size_t queue_cap, queue_head, queue_len;
    bool closed;
    bool failed;
    MsError error;
} RestoreContext;

static bool is_cancelled(const MsRestoreOptions *o) {
    return o->cancel && *o->cancel;
}

static void batch_free(Batch *b) {
    if (!b)
        return;
    free(b->data);
    free(b);
}

static void restore_fail(RestoreContext *ctx, const MsError *err) {
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->failed) {
        ctx->failed = true;
        ctx->error = *err;
    }
    pthread_cond_broadcast(&ctx->not_full);
    pthread_cond_broadcast(&ctx->not_empty);
    pthread_mutex_unlock(&ctx->lock);
}

static bool restore_failed(RestoreContext *ctx) {
    pthread_mutex_lock(&ctx->lock);
    bool f = ctx->failed;
    pthread_mutex_unlock(&ctx->lock);
    return f;
}

/* Blocks while the queue is full: memory stays bounded by workers x batch size. */
static int queue_push(RestoreContext *ctx, Batch *b) {
    pthread_mutex_lock(&ctx->lock);
    while (ctx->queue_len == ctx->queue_cap && !ctx->failed)
        pthread_cond_wait(&ctx->not_full, &ctx->lock);
    if (ctx->failed) {
        pthread_mutex_unlock(&ctx->lock);
        batch_free(b);
        return -ECANCELED;
    }
    ctx->queue[(ctx->queue_head + ctx->queue_len) % ctx->queue_cap] = b;
    ctx->queue_len++;
    pthread_cond_signal(&ctx->not_empty);
    pthread_mutex_unlock(&ctx->lock);
    return 0;
}

static Batch *queue_pop(RestoreContext *ctx) {
    pthread_mutex_lock(&ctx->lock);
    while (ctx->queue_len == 0 && !ctx->closed && !ctx->failed)
        pthread_cond_wait(&ctx->not_empty, &ctx->lock);
    Batch *b = NULL;
    if (ctx->queue_len > 0 && !ctx->failed) {
        b = ctx->queue[ctx->queue_head];
        ctx->queue_head = (ctx->queue_head + 1) % ctx->queue_cap;
        ctx->queue_len--;
        pthread_cond_signal(&ctx->not_full);
    }
    pthread_mutex_unlock(&ctx->lock);
    return b;
}

static void queue_close(RestoreContext *ctx) {
    pthread_mutex_lock(&ctx->lock);
    ctx->closed = true;
    pthread_cond_broadcast(&ctx->not_empty);
    pthread_mutex_unlock(&ctx->lock);
}

/* Insert a batch unordered. Duplicate-key errors mean the document is already in a target
 * that was not dropped: counted and reported, not fatal (as mongorestore does). */
static int insert_batch(RestoreContext *ctx, mongoc_client_t *c, Batch *b, MsError *e) {
    RestoreNs *ns = b->ns;
    mongoc_collection_t *coll = mongoc_client_get_collection(c, ns->dst_db, ns->insert_coll);
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts);
    bson_destroy(opts);
    if (ctx->o->bypass_validation)
        mongoc_bulk_operation_set_bypass_document_validation(bulk, true);
    bson_error_t berr;
    int r = 0;
    size_t off = 0;
    /* The documents come from a dump, byte for byte: the driver's client-side key checks
     * would refuse names the server accepts (empty, dotted, '$'-prefixed field names). */
    bson_t *insert_opts = BCON_NEW("validate", BCON_BOOL(false));
    for (uint32_t i = 0; i < b->count && r == 0; i++) {
        uint32_t len;
        memcpy(&len, b->data + off, sizeof(len));
        len = BSON_UINT32_FROM_LE(len);
        bson_t doc;
        if (!bson_init_static(&doc, b->data + off, len) ||
            !mongoc_bulk_operation_insert_with_opts(bulk, &doc, insert_opts, &berr))
            r = ms_error_set(e, EINVAL, "cannot queue a document for %s.%s: %s", ns->dst_db,
                             ns->dst_coll, berr.message);
        off += len;
    }
    bson_destroy(insert_opts);
    bson_t reply;
    uint64_t duplicates = 0;
    if (r == 0 && !mongoc_bulk_operation_execute(bulk, &reply, &berr)) {
        bson_iter_t it, errs, one;
        bool only_duplicates = bson_iter_init_find(&it, &reply, "writeErrors") &&
                               bson_iter_recurse(&it, &errs);
        if (only_duplicates) {
            while (bson_iter_next(&errs)) {
                if (bson_iter_recurse(&errs, &one) && bson_iter_find(&one, "code") &&
                    bson_iter_as_int64(&one) == MONGO_ERROR_DUPLICATE_KEY)
                    duplicates++;
                else
                    only_duplicates = false;
            }
        }
        if (!only_duplicates || duplicates == 0) {
            char context[600];
            snprintf(context, sizeof(context), "inserting into %s.%s", ns->dst_db, ns->insert_coll);
            r = ms_mongo_error(ctx->mongo, e, &berr, context);
        }
        bson_destroy(&reply);
    } else if (r == 0)
        bson_destroy(&reply);
    mongoc_bulk_operation_destroy(bulk);
    mongoc_collection_destroy(coll);
    if (r == 0) {
        __atomic_add_fetch(&ns->inserted, b->count - duplicates, __ATOMIC_RELAXED);
        __atomic_add_fetch(&ns->duplicates, duplicates, __ATOMIC_RELAXED);
        ms_progress_add_items(ctx->o->progress, b->count, b->len);
        /* Bytes restored: what the server took (a batch of only duplicates wrote nothing). */
        if (duplicates < b->count)
            ms_progress_add_written(ctx->o->progress, b->len);
    }
    return r;
}

/* The documents the manifest counts in the namespaces this restore selected. */
static uint64_t selected_documents(const RestoreContext *ctx, const MsManifest *m) {
    uint64_t total = 0;
    for (size_t i = 0; i < ctx->n_nss; i++) {
        const MsManifestNamespace *mn =
            ctx->nss[i].selected ? ms_manifest_find(m, ctx->nss[i].src_db, ctx->nss[i].src_coll)
                                 : NULL;
        total += mn ? mn->documents : 0;
    }
    return total;
}

static void *insert_worker_main(void *arg) {
    RestoreContext *ctx = arg;
    mongoc_client_t *c = ms_mongo_pop(ctx->mongo);
    Batch *b;
    while ((b = queue_pop(ctx))) {
        MsError err = MS_ERROR_INIT;
        int r = insert_batch(ctx, c, b, &err);
        batch_free(b);
        if (r < 0) {
            restore_fail(ctx, &err);
            break;
        }
    }
    ms_mongo_push(ctx->mongo, c);
    return NULL;
}

#define BUCKETS_PREFIX "system.buckets."

static RestoreNs *find_ns(RestoreContext *ctx, const char *db, const char *coll) {
    if (ctx->last && strcmp(ctx->last->src_db, db) == 0 && strcmp(ctx->last->src_coll, coll) == 0)
        return ctx->last;
    /* A time-series collection X arrives as its buckets, system.buckets.X. */
    if (strncmp(coll, BUCKETS_PREFIX, strlen(BUCKETS_PREFIX)) == 0) {
        RestoreNs *ts = find_ns(ctx, db, coll + strlen(BUCKETS_PREFIX));
        if (ts && strcmp(ts->type, "timeseries") == 0)
            return ts;
    }
    for (size_t i = 0; i < ctx->n_nss; i++)
        if (strcmp(ctx->nss[i].src_db, db) == 0 && strcmp(ctx->nss[i].src_coll, coll) == 0)
            return ctx->last = &ctx->nss[i];
    return NULL;
}

static int flush_pending(RestoreContext *ctx, RestoreNs *ns) {
    Batch *b = TAKE_PTR(ns->pending);
    if (!b || b->count == 0) {
        batch_free(b);
        return 0;
    }
    return queue_push(ctx, b);
}

static int add_document(RestoreContext *ctx, RestoreNs *ns, const uint8_t *data, size_t len,
                        MsError *e) {
    Batch *b = ns->pending;
    if (!b) {
        b = ns->pending = calloc(1, sizeof(Batch));
        if (!b)
            return ms_error_set(e, ENOMEM, "out of memory");
        b->ns = ns;
    }
    if (b->len + len > b->cap) {
        size_t cap = MS_MAX(b->cap * 2, b->len + len);
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            return ms_error_set(e, ENOMEM, "out of memory");
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->count++;
    unsigned batch_docs = ctx->o->batch_size ? ctx->o->batch_size : RESTORE_DEFAULT_BATCH_DOCS;
    if (b->count >= batch_docs || b->len >= RESTORE_BATCH_MAX_BYTES)
        return flush_pending(ctx, ns);
    return 0;
}

static int run_db_command(RestoreContext *ctx, mongoc_client_t *c, const char *db,
                          const bson_t *cmd, int tolerated_code, const char *context, MsError *e) {
    bson_error_t berr;
    bson_t reply;
    bool ok = mongoc_client_command_simple(c, db, cmd, NULL, &reply, &berr);
    bson_destroy(&reply);
    if (ok || (tolerated_code && berr.code == (uint32_t) tolerated_code))
        return 0;
    return ms_mongo_error(ctx->mongo, e, &berr, context);
}

static int drop_target(RestoreContext *ctx, mongoc_client_t *c, RestoreNs *ns, MsError *e) {
    bson_t *cmd = BCON_NEW("drop", BCON_UTF8(ns->dst_coll));
    char context[600];
    snprintf(context, sizeof(context), "dropping %s.%s before the restore", ns->dst_db,
             ns->dst_coll);
    int r = run_db_command(ctx, c, ns->dst_db, cmd, MONGO_ERROR_NAMESPACE_NOT_FOUND, context, e);
    bson_destroy(cmd);
    return r;
}

/* create {name, <options>}: capped, validator, collation, clusteredIndex, timeseries, or for a
 * view viewOn and pipeline. An existing collection is used as it is. */
static int create_target(RestoreContext *ctx, mongoc_client_t *c, RestoreNs *ns, MsError *e) {
    bson_t *cmd = BCON_NEW("create", BCON_UTF8(ns->dst_coll));
    bson_t options;
    if (ms_bson_doc(ns->metadata, "options", &options)) {
        bson_iter_t it;
        bson_iter_init(&it, &options);
        while (bson_iter_next(&it))
            bson_append_iter(cmd, bson_iter_key(&it), -1, &it);
    }
    char context[600];
    snprintf(context, sizeof(context), "creating %s %s.%s", *ns->type ? ns->type : "collection",
             ns->dst_db, ns->dst_coll);
    int r = run_db_command(ctx, c, ns->dst_db, cmd, MONGO_ERROR_NAMESPACE_EXISTS, context, e);
    bson_destroy(cmd);
    return r;
}

static int create_indexes(RestoreContext *ctx, mongoc_client_t *c, RestoreNs *ns,
                          uint64_t *ret_count, MsError *e) {
    bson_t indexes;
    if (!ms_bson_doc(ns->metadata, "indexes", &indexes))
        return 0;
    bson_t *cmd = BCON_NEW("createIndexes", BCON_UTF8(ns->dst_coll));
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(cmd, "indexes", &arr);
    bson_iter_t it;
    uint32_t n = 0;
    if (bson_iter_init(&it, &indexes))
        while (bson_iter_next(&it)) {
            bson_t spec;
            const uint8_t *data;
            uint32_t len;
            if (!BSON_ITER_HOLDS_DOCUMENT(&it))
                continue;
            bson_iter_document(&it, &len, &data);
            if (!bson_init_static(&spec, data, len))
                continue;
            bson_iter_t name;
            if (bson_iter_init_find(&name, &spec, "name") && BSON_ITER_HOLDS_UTF8(&name) &&
                strcmp(bson_iter_utf8(&name, NULL), "_id_") == 0)
                continue; /* made with the collection */
            char key[24];
            snprintf(key, sizeof(key), "%" PRIu32, n++);
            /* "ns" names the source; "v" is the source's index format, which the target
             * picks for itself (as mongorestore does unless --keepIndexVersion). */
            bson_t cleaned = BSON_INITIALIZER;
            bson_copy_to_excluding_noinit(&spec, &cleaned, "ns", "v", NULL);
            bson_append_document(&arr, key, -1, &cleaned);
            bson_destroy(&cleaned);
        }
    bson_append_array_end(cmd, &arr);
    int r = 0;
    if (n > 0) {
        char context[600];
        snprintf(context, sizeof(context), "building the %" PRIu32 " indexes of %s.%s", n,
                 ns->dst_db, ns->dst_coll);
        r = run_db_command(ctx, c, ns->dst_db, cmd, 0, context, e);
    }
    bson_destroy(cmd);
    if (r == 0)
        *ret_count += n;
    return r;
}

static void restore_ns_clear(RestoreNs *ns) {
    free(ns->src_db);
    free(ns->src_coll);
    free(ns->dst_db);
    free(ns->dst_coll);
    free(ns->insert_coll);
    if (ns->metadata)
        bson_destroy(ns->metadata);
    batch_free(ns->pending);
}

static int plan_namespaces(RestoreContext *ctx, const MsArchiveCollection *colls, size_t n,
                           MsError *e) {
    ctx->nss = calloc(n ? n : 1, sizeof(RestoreNs));
    if (!ctx->nss)
        return ms_error_set(e, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        /* The captured oplog is listed in the prelude too; it is replayed, not restored. */
        if (ms_archive_is_oplog(colls[i].db, colls[i].collection))
            continue;
        RestoreNs *ns = &ctx->nss[ctx->n_nss++];
        ns->src_db = strdup(colls[i].db);
        ns->src_coll = strdup(colls[i].collection);
        ns->type = colls[i].type ? colls[i].type : "";
        _cleanup_free_ char *src = ms_ns_join(colls[i].db, colls[i].collection);
        if (!ns->src_db || !ns->src_coll || !src)
            return ms_error_set(e, ENOMEM, "out of memory");
        /* The same mapping as every oplog entry's (nsmap.h): selection, rename, guard. */
        _cleanup_free_ char *dst = NULL;
        int v = ms_ns_map(ctx->o->filter, src, &dst);
        if (v < 0)
            return ms_error_set(e, ENOMEM, "out of memory");
        if (v == MS_NS_MAP_INVALID)
            return ms_error_set(e, EINVAL,
                                "namespace '%s' of the archive does not map to a valid target "
                                "namespace; check --ns-from/--ns-to",
                                src);
        if (v == MS_NS_MAP_PROTECTED && ctx->protected_nss++ == 0)
            snprintf(ctx->first_protected, sizeof(ctx->first_protected), "%s", src);
        ns->selected = v == MS_NS_MAP_MAPPED;
        if (!ns->selected)
            dst = strdup(src); /* never written; named in messages only */
        if (!dst || ms_ns_split(dst, &ns->dst_db, &ns->dst_coll) < 0)
            return ms_error_set(e, EINVAL, "cannot map namespace '%s' to a target", src);
        if (strcmp(ns->type, "timeseries") == 0) {
            if (asprintf(&ns->insert_coll, "system.buckets.%s", ns->dst_coll) < 0)
                return ms_error_set(e, ENOMEM, "out of memory");
        } else
            ns->insert_coll = strdup(ns->dst_coll);
        bson_error_t berr;
        ns->metadata = colls[i].metadata_json && *colls[i].metadata_json
                           ? bson_new_from_json((const uint8_t *) colls[i].metadata_json, -1, &berr)
                           : bson_new();
        if (!ns->metadata)
            return ms_error_set(e, EBADMSG,
                                "the metadata of namespace '%s' in the archive is not valid "
                                "extended JSON: %s",
                                src, berr.message);
    }
    return 0;
}

int ms_oplog_position_parse(const char *s, MsOplogPosition *ret) {
    unsigned long t, i;
    char tail;
    if (sscanf(s, "%lu:%lu%c", &t, &i, &tail) == 2 && t <= UINT32_MAX && i <= UINT32_MAX) {
        *ret = (MsOplogPosition){(uint32_t) t, (uint32_t) i};
        return 0;
    }
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && ((end[0] == 'Z' && end[1] == '\0') || end[0] == '\0')) {
        struct tm parsed = tm, check;
        time_t when = timegm(&tm);
        /* Oplog seconds are 32-bit; and timegm() quietly turns Feb 30 into Mar 2. */
        if (when < 0 || (uint64_t) when > UINT32_MAX || !gmtime_r(&when, &check) ||
            check.tm_mday != parsed.tm_mday || check.tm_mon != parsed.tm_mon ||
            check.tm_year != parsed.tm_year || check.tm_hour != parsed.tm_hour ||
            check.tm_min != parsed.tm_min || check.tm_sec != parsed.tm_sec)
            return -EINVAL;
        /* The last entry of that second is included: ordinal "all of it". */
        *ret = (MsOplogPosition){(uint32_t) when, UINT32_MAX};
        return 0;
    }
    return -EINVAL;
}

/* The next spooled entry into buf (MS_BSON_MAX_DOCUMENT_SIZE bytes): 1, 0 at the end. */
static int spool_next(FILE *spool, uint8_t *buf, bson_t *ret_entry, MsError *e) {
    uint32_t len;
    if (fread(&len, sizeof(len), 1, spool) != 1)
        return 0;
    len = BSON_UINT32_FROM_LE(len);
    if (len < sizeof(len) || len > MS_BSON_MAX_DOCUMENT_SIZE)
        return ms_error_set(e, EIO, "the oplog spool file is damaged");
    memcpy(buf, &len, sizeof(len));
    if (fread(buf + sizeof(len), len - sizeof(len), 1, spool) != 1 ||
        !bson_init_static(ret_entry, buf, len))
        return ms_error_set(e, EIO, "the oplog spool file is damaged");
    return 1;
}


/* A replayer that knows what exists when replay starts: every collection and view of the
 * archive. */
static int new_replayer(RestoreContext *ctx, MsOplogReplayer **ret, MsError *e) {
    _cleanup_(ms_oplog_replayer_freep) MsOplogReplayer *replayer = NULL;
    int r = ms_oplog_replayer_new(ctx->o->filter, &replayer, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ctx->n_nss; i++) {
        _cleanup_free_ char *ns = ms_ns_join(ctx->nss[i].src_db, ctx->nss[i].src_coll);
        if (!ns || ms_oplog_replayer_know(replayer, ns) < 0)
            return ms_error_set(e, ENOMEM, "out of memory");
    }
    *ret = TAKE_PTR(replayer);
    return 0;
}

/* Before the first entry is applied: every command the replay will send must be one the target
 * has (listCommands), so that a replay the target cannot finish is refused before it begins,
 * instead of stopping half-way. A target without listCommands is not checked. */
static int preflight_oplog(RestoreContext *ctx, mongoc_client_t *c, FILE *spool, uint8_t *buf,
                           bool has_limit, MsOplogPosition limit, MsError *e) {
    bson_t cmd = BSON_INITIALIZER, reply, commands;
    BSON_APPEND_INT32(&cmd, "listCommands", 1);
    bson_error_t berr;
    bool listed = mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, &berr);
    bson_destroy(&cmd);
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    if (!listed || !bson_iter_init_find(&it, &reply, "commands") ||
        !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_destroy(&reply);
        return 0;
    }
    bson_iter_document(&it, &len, &data);
    bson_init_static(&commands, data, len);

    _cleanup_(ms_oplog_replayer_freep) MsOplogReplayer *dry = NULL;
    int r = new_replayer(ctx, &dry, e);
    bson_t entry;
    while (r == 0 && (r = spool_next(spool, buf, &entry, e)) == 1) {
        r = 0;
        if (has_limit && ms_oplog_position_after(ms_oplog_entry_position(&entry), limit))
            break;
        MsOplogPlan plan = {0};
        /* Planning errors are the real pass's to report, with the entry in order. */
        if (ms_oplog_replayer_plan(dry, &entry, &plan, NULL) == 0)
            for (size_t i = 0; i < plan.n_actions && r == 0; i++) {
                const MsOplogAction *a = &plan.actions[i];
                bson_iter_t first, found;
                if (a->kind != MS_OPLOG_ACTION_COMMAND || !bson_iter_init(&first, a->doc) ||
                    !bson_iter_next(&first))
                    continue;
                const char *name = bson_iter_key(&first);
                if (!bson_iter_init_find(&found, &commands, name)) {
                    char what[256];
                    ms_oplog_describe_entry(&entry, what, sizeof(what));
                    r = ms_error_set(e, ENOTSUP,
                                     "the target does not have the command '%s' that replaying "
                                     "%s needs; no oplog entry was replayed: restore without the "
                                     "oplog (--no-oplog), to a point before it (--until), or "
                                     "into a server that has '%s'",
                                     name, what, name);
                }
            }
        ms_oplog_plan_clear(&plan);
    }
    bson_destroy(&reply);
    if (r < 0)
        return r;
    if (fseek(spool, 0, SEEK_SET) != 0)
        return ms_error_set(e, errno, "cannot rewind the oplog spool: %s", strerror(errno));
    return 0;
}

/* Replay the spooled oplog entries in order, up to the limit, each through the one mapping. */
static int replay_oplog(RestoreContext *ctx, mongoc_client_t *c, FILE *spool, bool has_limit,
                        MsOplogPosition limit, MsRestoreResult *res, MsError *e) {
    if (fseek(spool, 0, SEEK_SET) != 0)
        return ms_error_set(e, errno, "cannot rewind the oplog spool: %s", strerror(errno));
    _cleanup_free_ uint8_t *buf = malloc(MS_BSON_MAX_DOCUMENT_SIZE);
    if (!buf)
        return ms_error_set(e, ENOMEM, "out of memory");
    int r = preflight_oplog(ctx, c, spool, buf, has_limit, limit, e);
    if (r < 0)
        return r;
    _cleanup_(ms_oplog_replayer_freep) MsOplogReplayer *replayer = NULL;
    r = new_replayer(ctx, &replayer, e);
    if (r < 0)
        return r;
    bson_t entry;
    while ((r = spool_next(spool, buf, &entry, e)) == 1) {
        r = 0;
        MsOplogPosition pos = ms_oplog_entry_position(&entry);
        if (has_limit && ms_oplog_position_after(pos, limit))
            break;
        MsOplogPlan plan = {0};
        r = ms_oplog_replayer_plan(replayer, &entry, &plan, e);
        if (r == 0)
            r = ms_oplog_plan_execute(c, &plan, &entry, e);
        bool applied = plan.n_actions > 0;
        ms_oplog_plan_clear(&plan);
        if (r < 0)
            break;
        res->restored_to = pos;
        ms_progress_add_items(ctx->o->progress, 1, entry.len);
        if (applied)
            ms_progress_add_written(ctx->o->progress, entry.len);
        if (is_cancelled(ctx->o)) {
            r = ms_error_set(e, ECANCELED, "the restore was stopped during oplog replay");
            break;
        }
    }
    ms_oplog_replayer_finish(replayer);
    const MsOplogReplayStats *st = ms_oplog_replayer_stats(replayer);
    res->oplog_applied = st->applied;
    res->oplog_not_selected = st->not_selected;
    res->oplog_unplaceable = st->unplaceable;
    res->oplog_uncommitted = st->uncommitted;
    if (r == 0 && st->unplaceable > 0)
        log_warning("%" PRIu64 " oplog operation(s) were not replayed because they reach outside "
                    "the restore's namespace mapping; the first: %s",
                    st->unplaceable, st->first_unplaceable);
    if (r == 0 && st->uncommitted > 0)
        log_info("%" PRIu64 " operation(s) of transactions not committed by the end of replay "
                 "were left out",
                 st->uncommitted);
    return r;
}

typedef struct SpoolSlice {
    const MsRestoreOptions *o;
    FILE *spool;
    MsOplogPosition *last;
    uint64_t *spooled;
    const char *archive_name;
    MsError *e;
} SpoolSlice;

/* One document of a slice: spooled when it is an entry after the chain's position. */
static int spool_entry(const MsArchiveEvent *ev, void *userdata) {
    SpoolSlice *ss = userdata;
    if (!ms_archive_is_oplog(ev->db, ev->collection))
        return 0;
    bson_t entry;
    if (!bson_init_static(&entry, ev->data, ev->len))
        return ms_error_set(ss->e, EBADMSG, "%s holds a malformed oplog entry", ss->archive_name);
    MsOplogPosition pos = ms_oplog_entry_position(&entry);
    if (!ms_oplog_position_after(pos, *ss->last))
        return 0; /* held by the snapshot or the slice before */
    if (ss->o->has_until && ms_oplog_position_after(pos, ss->o->until))
        return 0; /* read on to the end all the same: the checksums cover it whole */
    if (fwrite(ev->data, ev->len, 1, ss->spool) != 1)
        return ms_error_set(ss->e, errno, "cannot spool the oplog to a temporary file: %s",
                            strerror(errno));
    *ss->last = pos;
    (*ss->spooled)++;
    return 0;
}

/* The slices' entries after the snapshot's end, appended to the spool in chain order. Each
 * slice is read whole through its checksums (size, SHA-256, CRC, count) before the replay
 * starts, so a damaged slice stops the restore before its first entry is applied. */
static int spool_slices(const MsRestoreOptions *o, MsOplogPosition after, FILE *spool,
                        uint64_t *ret_spooled, MsError *e) {
    MsOplogPosition last = after;
    for (size_t i = 0; i < o->n_slices; i++) {
        MsSnapshotSource src = {0};
        int r = ms_snapshot_source_open_store(o->storage, o->slice_keys[i], o->key, &src, e);
        if (r == 0 && !ms_manifest_is_slice(&src.manifest))
            r = ms_error_set(e, EINVAL, "%s is not an oplog slice", o->slice_keys[i]);
        /* The chain must be continuous: this slice holds the entry after the last one. */
        if (r == 0 && ms_oplog_position_after(src.manifest.oplog_start, last))
            r = ms_error_set(e, EINVAL,
                             "oplog slice %s starts at %" PRIu32 ":%" PRIu32
                             ", after the chain's position %" PRIu32 ":%" PRIu32
                             ": the slices given leave a gap",
                             o->slice_keys[i], src.manifest.oplog_start.t,
                             src.manifest.oplog_start.i, last.t, last.i);
        SpoolSlice ss = {.o = o, .spool = spool, .last = &last, .spooled = ret_spooled,
                         .archive_name = src.archive_name, .e = e};
        if (r == 0)
            r = ms_snapshot_source_read_all(&src, spool_entry, &ss, e);
        if (r == 0 && ms_oplog_position_after(src.manifest.oplog_end, last))
            last = src.manifest.oplog_end;
        if (r < 0 && !strstr(e->message, o->slice_keys[i]))
            ms_error_prefix(e, "oplog slice %s: ", o->slice_keys[i]);
        ms_snapshot_source_close(&src);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Damage found while documents were streaming: those before it may already be inserted. */
static void note_partial_restore(MsError *e) {
    static const char note[] = "; the restore stopped there, but documents read before the damage "
                               "may already be in the target (restore again with --drop from a "
                               "sound snapshot)";
    if (!e || !e->code)
        return;
    size_t len = strlen(e->message);
    if (len + sizeof(note) <= sizeof(e->message))
        memcpy(e->message + len, note, sizeof(note));
}

int ms_restore_run(const MsRestoreOptions *o, MsRestoreResult *ret, MsError *e) {
    MsProgress *p = o->progress;
    unsigned parallel = o->parallel ? MS_MIN(o->parallel, RESTORE_MAX_PARALLEL)
                                    : RESTORE_DEFAULT_PARALLEL;
    MsSnapshotSource src = {0};
    RestoreContext ctx = {.o = o};
    pthread_mutex_init(&ctx.lock, NULL);
    pthread_cond_init(&ctx.not_empty, NULL);
    pthread_cond_init(&ctx.not_full, NULL);
    _cleanup_(ms_mongo_freep) MsMongo *mongo = NULL;
    mongoc_client_t *main_client = NULL;
    FILE *spool = NULL;
    pthread_t threads[RESTORE_MAX_PARALLEL];
    unsigned started_threads = 0;
    MsRestoreResult res = {0};
    _cleanup_free_ char *server_version = NULL;
    uint64_t oplog_spooled = 0;
    bool streaming = false; /* documents may have reached the target */

    int r = 0;
    if (o->drop) {
        /* Nothing is dropped before the snapshot is known to be whole: one read of the stored
         * object (size, SHA-256, every encrypted chunk's authentication) before any change.
         * docs/architecture.md, "Restore --drop", says why this and not staging collections. */
        ms_progress_set_phase(p, "check");
        uint64_t check_started = ms_now_usec();
        r = o->archive_path
                ? ms_snapshot_source_precheck_file(o->archive_path, o->manifest_path, o->key, e)
                : ms_snapshot_source_precheck_store(o->storage, o->snapshot_key, o->key, NULL, e);
        for (size_t i = 0; r == 0 && i < o->n_slices; i++)
            r = ms_snapshot_source_precheck_store(o->storage, o->slice_keys[i], o->key, NULL, e);
        if (r < 0) {
            ms_error_prefix(e, "nothing was dropped or changed in the target: ");
            goto out;
        }
        res.check_usec = ms_now_usec() - check_started;
        log_info("the snapshot checked out whole in %.1f s; restoring", res.check_usec / 1e6);
    } else if (o->n_slices > 0) {
        /* A restore to a time: a slice that is damaged or missing means the chain does not
         * reach the time, which is refused before anything changes (slices are small beside
         * the snapshot, so reading them twice costs little). */
        ms_progress_set_phase(p, "check");
        for (size_t i = 0; r == 0 && i < o->n_slices; i++)
            r = ms_snapshot_source_precheck_store(o->storage, o->slice_keys[i], o->key, NULL, e);
        if (r < 0) {
            ms_error_prefix(e, "nothing was changed in the target: ");
            goto out;
        }
    }
    r = o->archive_path
            ? ms_snapshot_source_open_file(o->archive_path, o->manifest_path, o->key, &src, e)
            : ms_snapshot_source_open_store(o->storage, o->snapshot_key, o->key, &src, e);
    if (r < 0)
        goto out;
    if (src.has_manifest && ms_manifest_is_slice(&src.manifest)) {
        r = ms_error_set(e, EINVAL,
                         "%s is an oplog slice, not a snapshot: restore a snapshot, or restore "
                         "to a time (--time) to have its slices replayed after one",
                         o->snapshot_key);
        goto out;
    }
    if (o->n_slices > 0 && (!src.has_manifest || !src.manifest.point_in_time || !o->replay_oplog ||
                            !o->has_until)) {
        r = ms_error_set(e, EINVAL,
                         "oplog slices are replayed only after a point-in-time snapshot, with "
                         "the oplog replayed, up to a time");
        goto out;
    }
    if (o->has_until && src.has_manifest) {
        if (!src.manifest.point_in_time) {
            r = ms_error_set(e, EINVAL,
                             "snapshot %s has no oplog, so it restores only to its own end; "
                             "leave out --until",
                             src.archive_name);
            goto out;
        }
        if (ms_oplog_position_after(src.manifest.oplog_start, o->until)) {
            r = ms_error_set(e, EINVAL,
                             "snapshot %s starts at oplog time %" PRIu32 ":%" PRIu32
                             "; it cannot be restored to an earlier point (--until)",
                             src.archive_name, src.manifest.oplog_start.t,
                             src.manifest.oplog_start.i);
            goto out;
        }
        if (ms_oplog_position_after(src.manifest.oplog_end, o->until))
            log_warning("restoring to a point before the snapshot's end (%" PRIu32 ":%" PRIu32
                        "): documents copied after that point may already hold later changes",
                        src.manifest.oplog_end.t, src.manifest.oplog_end.i);
    }

    ms_progress_set_phase(p, "connect");
    r = ms_mongo_open(o->uri, o->password, parallel + 1, &mongo, e);
    if (r < 0)
        goto out;
    ctx.mongo = mongo;
    main_client = ms_mongo_pop(mongo);
    r = ms_mongo_ping(mongo, main_client, &server_version, e);
    if (r < 0)
        goto out;

    ms_progress_set_phase(p, "prelude");
    const MsArchiveHeader *header;
    const MsArchiveCollection *colls;
    size_t n_colls;
    r = ms_archive_reader_read_prelude(src.reader, &header, &colls, &n_colls, e);
    if (r < 0) {
        ms_error_prefix(e, "%s: ", src.archive_name);
        goto out;
    }
    r = plan_namespaces(&ctx, colls, n_colls, e);
    if (r < 0)
        goto out;
    /* Progress counts what this restore selected (a partial restore ends at 100%, not at its
     * share of the snapshot); every oplog entry is processed, applied or not. */
    if (src.has_manifest)
        ms_progress_add_total(p, selected_documents(&ctx, &src.manifest) +
                                     (o->replay_oplog ? src.manifest.oplog_entries : 0));
    log_info("restoring %s (%zu namespaces, written by %s) into %s", src.archive_name, n_colls,
             header->tool_version ? header->tool_version : "unknown tool",
             ms_mongo_redacted_uri(mongo));

    for (size_t i = 0; i < ctx.n_nss && r == 0; i++) {
        RestoreNs *ns = &ctx.nss[i];
        if (!ns->selected)
            continue;
        if (o->drop)
            r = drop_target(&ctx, main_client, ns, e);
        if (r == 0 && strcmp(ns->type, "view") != 0)
            r = create_target(&ctx, main_client, ns, e);
    }
    if (r < 0)
        goto out;

    ctx.queue_cap = parallel * RESTORE_QUEUE_PER_WORKER;
    ctx.queue = calloc(ctx.queue_cap, sizeof(Batch *));
    if (!ctx.queue) {
        r = ms_error_set(e, ENOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < parallel; i++) {
        if (pthread_create(&threads[i], NULL, insert_worker_main, &ctx) != 0)
            break;
        started_threads++;
    }
    if (started_threads == 0) {
        r = ms_error_set(e, EAGAIN, "cannot start an insertion thread");
        goto out;
    }

    if (o->replay_oplog) {
        spool = tmpfile();
        if (!spool) {
            r = ms_error_set(e, errno, "cannot create a temporary file for the oplog: %s (set TMPDIR)",
                             strerror(errno));
            goto out;
        }
    }

    ms_progress_set_phase(p, "restore");
    ms_progress_start_ticker(p, RESTORE_PROGRESS_INTERVAL_MS);
    streaming = true;
    for (;;) {
        MsArchiveEvent ev;
        r = ms_archive_reader_next(src.reader, &ev, e);
        if (r < 0) {
            ms_error_prefix(e, "%s: ", src.archive_name);
            break;
        }
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        if (restore_failed(&ctx) || is_cancelled(o))
            break;
        bool is_oplog = ms_archive_is_oplog(ev.db, ev.collection);
        if (is_oplog) {
            if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT && spool) {
                if (fwrite(ev.data, ev.len, 1, spool) != 1) {
                    r = ms_error_set(e, errno, "cannot spool the oplog to a temporary file: %s",
                                     strerror(errno));
                    break;
                }
                oplog_spooled++;
            }
            continue;
        }
        RestoreNs *ns = find_ns(&ctx, ev.db, ev.collection);
        if (!ns) {
            r = ms_error_set(e, EBADMSG,
                             "%s: namespace '%s.%s' at byte offset %" PRIu64
                             " is not in the archive's prelude",
                             src.archive_name, ev.db, ev.collection, ev.offset);
            break;
        }
        if (!ns->selected)
            continue;
        if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT) {
            ms_progress_set_namespace(p, ns->dst_coll);
            r = add_document(&ctx, ns, ev.data, ev.len, e);
        } else if (ev.kind == MS_ARCHIVE_EVENT_NAMESPACE_EOF)
            r = flush_pending(&ctx, ns);
        if (r < 0)
            break;
    }
    for (size_t i = 0; i < ctx.n_nss && r == 0 && !restore_failed(&ctx); i++)
        r = flush_pending(&ctx, &ctx.nss[i]);
    if (r == -ECANCELED && ctx.failed)
        r = 0; /* the worker's error is the real one */
    if (r < 0)
        restore_fail(&ctx, e);
    queue_close(&ctx);
    for (unsigned i = 0; i < started_threads; i++)
        pthread_join(threads[i], NULL);
    started_threads = 0;
    if (ctx.failed) {
        if (r == 0) {
            *e = ctx.error;
            r = -ctx.error.code;
        }
        goto out;
    }
    if (is_cancelled(o)) {
        r = ms_error_set(e, ECANCELED, "the restore was stopped; the target holds part of the data");
        goto out;
    }

    /* Every byte has been read: the whole object must match its manifest before the restore
     * can count as a success. */
    r = ms_snapshot_source_check_stored(&src, e);
    if (r == 0)
        r = ms_snapshot_source_check_namespaces(&src, e);
    if (r < 0)
        goto out;

    ms_progress_set_phase(p, "indexes");
    for (size_t i = 0; i < ctx.n_nss && r == 0; i++) {
        RestoreNs *ns = &ctx.nss[i];
        if (!ns->selected)
            continue;
        if (strcmp(ns->type, "view") == 0) {
            r = create_target(&ctx, main_client, ns, e);
            res.views++;
            continue;
        }
        res.namespaces++;
        res.documents += ns->inserted;
        res.duplicates += ns->duplicates;
        if (o->restore_indexes)
            r = create_indexes(&ctx, main_client, ns, &res.indexes, e);
    }
    if (r < 0)
        goto out;

    if (spool && o->n_slices > 0) {
        ms_progress_set_phase(p, "slices");
        uint64_t before = oplog_spooled;
        r = spool_slices(o, src.manifest.oplog_end, spool, &oplog_spooled, e);
        if (r < 0)
            goto out;
        res.slice_entries = oplog_spooled - before;
        ms_progress_add_total(p, res.slice_entries);
    }
    if (spool && oplog_spooled > 0) {
        ms_progress_set_phase(p, "replay");
        r = replay_oplog(&ctx, main_client, spool, o->has_until, o->until, &res, e);
        if (r < 0)
            goto out;
        res.point_in_time = true;
    }
    res.namespaces_protected = ctx.protected_nss;
    if (ctx.protected_nss > 0)
        log_warning("%" PRIu64 " namespace(s) of the archive in admin, local, config or system.* "
                    "were not restored (the first: %s); name them literally, e.g. "
                    "--ns-include 'admin.*', to restore them",
                    ctx.protected_nss, ctx.first_protected);
    if (res.duplicates > 0)
        log_warning("%" PRIu64 " documents were already in the target and were left as they "
                    "are; use --drop to replace the target collections",
                    res.duplicates);
    ms_progress_mark_completed(p);
    ms_progress_set_phase(p, "done");
    *ret = res;

out:
    if (streaming && (r == -EBADMSG || r == -EPIPE))
        note_partial_restore(e);
    ms_progress_stop_ticker(p);
    ms_progress_report(p);
    if (started_threads > 0) {
        restore_fail(&ctx, e);
        queue_close(&ctx);
        for (unsigned i = 0; i < started_threads; i++)
            pthread_join(threads[i], NULL);
    }
    for (size_t i = 0; ctx.queue && i < ctx.queue_len; i++)
        batch_free(ctx.queue[(ctx.queue_head + i) % ctx.queue_cap]);
    free(ctx.queue);
    for (size_t i = 0; i < ctx.n_nss; i++)
        restore_ns_clear(&ctx.nss[i]);
    free(ctx.nss);
    if (spool)
        fclose(spool);
    if (mongo)
        ms_mongo_push(mongo, main_client);
    ms_snapshot_source_close(&src);
    pthread_mutex_destroy(&ctx.lock);
    pthread_cond_destroy(&ctx.not_empty);
    pthread_cond_destroy(&ctx.not_full);
    return r;
}

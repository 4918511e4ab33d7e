/* wire-source: a benchmark source that speaks the MongoDB wire protocol. NOT a database.
 *
 * It exists so that benchmarks measure the dump and restore tools rather than the server: it
 * serves the benchmark dataset (dataset.h) from memory at memory speed, and as a restore
 * target it decodes, counts and hashes what it is sent, then acknowledges it. It answers
 * exactly what mongodump, mongorestore and mongosnap send (the OP_QUERY handshake, then
 * OP_MSG: hello, buildInfo, listDatabases, listCollections, listIndexes, collStats, count,
 * find with batchSize, _id sort and _id ranges, getMore, killCursors, create, createIndexes,
 * drop, insert, endSessions, ...). Anything else is refused with CommandNotFound and logged,
 * so a benchmark never silently measures a command that did nothing.
 *
 *   wire-source [--bind ADDR] [--port N] [--port-file FILE] [--scale S] [--pool-scale P] [--target]
 *
 * Source mode (default) serves the dataset at scale S (S x 220 MiB of BSON; above P, default 1,
 * copies of a pool of scale P with new _ids, so memory stays at P x 220 MiB); --target serves no data and accepts
 * writes. Both answer {benchDigest: 1} on admin: per namespace the document count, the BSON
 * bytes and an order-independent hash (the sum of every document's XXH3-64), so a benchmark
 * checks that what a restore inserted is what a snapshot read. {benchSetDay: N, update: F,
 * insert: F, delete: F} serves day N of a database that changes every day (the deduplication
 * benchmark: by default 1 % of documents updated, 0.2 % inserted, 0.1 % deleted per day).
 * {benchReset: 1} forgets what a
 * target was sent; {benchStats: 1} tells documents and bytes served and received. */
#include "dataset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#define OP_REPLY 1
#define OP_QUERY 2004
#define OP_MSG 2013
#define MAX_MESSAGE (48000000)
#define MAX_BATCH_BYTES (16u << 20)
#define DEFAULT_FIRST_BATCH 101
#define MSG_CHECKSUM 0x1u
#define MSG_MORE_TO_COME 0x2u

static WsCollection *g_colls;
static size_t g_n_colls;
static bool g_target;
static atomic_uint_fast64_t g_docs_out, g_bytes_out, g_docs_in, g_bytes_in, g_requests;

/* ---- byte buffers and raw BSON ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t more) {
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p)
        abort();
    b->cap = cap;
}

static void buf_put(Buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_i32(Buf *b, int32_t v) {
    buf_put(b, &v, 4);
}

static void buf_u8(Buf *b, uint8_t v) {
    buf_put(b, &v, 1);
}

static size_t raw_begin(Buf *b) {
    size_t at = b->len;
    buf_i32(b, 0);
    return at;
}

static void raw_end(Buf *b, size_t at) {
    buf_u8(b, 0);
    int32_t n = (int32_t) (b->len - at);
    memcpy(b->p + at, &n, 4);
}

static void raw_key(Buf *b, uint8_t type, const char *key) {
    buf_u8(b, type);
    buf_put(b, key, strlen(key) + 1);
}

/* ---- collections: the dataset's, or what a target was sent ---- */

typedef struct {
    char ns[256];
    uint64_t count, bytes, hash, indexes;
} TargetColl;

static pthread_mutex_t g_target_lock = PTHREAD_MUTEX_INITIALIZER;
static TargetColl *g_tcolls;
static size_t g_n_tcolls;

static TargetColl *target_find(const char *ns, bool create) {
    for (size_t k = 0; k < g_n_tcolls; k++)
        if (strcmp(g_tcolls[k].ns, ns) == 0)
            return &g_tcolls[k];
    if (!create)
        return NULL;
    g_tcolls = realloc(g_tcolls, (g_n_tcolls + 1) * sizeof(*g_tcolls));
    if (!g_tcolls)
        abort();
    TargetColl *t = &g_tcolls[g_n_tcolls++];
    memset(t, 0, sizeof(*t));
    snprintf(t->ns, sizeof(t->ns), "%s", ns);
    t->indexes = 1;
    return t;
}

static const WsCollection *source_find(const char *db, const char *name) {
    if (g_target || !db || !name)
        return NULL;
    for (size_t k = 0; k < g_n_colls; k++)
        if (strcmp(g_colls[k].db, db) == 0 && strcmp(g_colls[k].name, name) == 0)
            return &g_colls[k];
    return NULL;
}

/* ---- cursors ---- */

typedef struct Cursor {
    int64_t id;
    const WsCollection *c;
    uint64_t pos, end; /* [pos, end) ascending; descending reads end-1 down to pos */
    int dir;
    int64_t remaining; /* limit left, -1 for none */
    bool id_only;
    char ns[300];
    struct Cursor *next;
} Cursor;

static pthread_mutex_t g_cursor_lock = PTHREAD_MUTEX_INITIALIZER;
static Cursor *g_cursors;
static int64_t g_next_cursor = 1000;

static void cursor_add(Cursor *cu) {
    pthread_mutex_lock(&g_cursor_lock);
    cu->id = g_next_cursor++;
    cu->next = g_cursors;
    g_cursors = cu;
    pthread_mutex_unlock(&g_cursor_lock);
}

/* Takes the cursor out of the table: one connection uses it at a time. */
static Cursor *cursor_take(int64_t id) {
    pthread_mutex_lock(&g_cursor_lock);
    Cursor **pp = &g_cursors;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    Cursor *cu = *pp;
    if (cu)
        *pp = cu->next;
    pthread_mutex_unlock(&g_cursor_lock);
    return cu;
}

static void cursor_put_back(Cursor *cu) {
    pthread_mutex_lock(&g_cursor_lock);
    cu->next = g_cursors;
    g_cursors = cu;
    pthread_mutex_unlock(&g_cursor_lock);
}

static bool cursor_done(const Cursor *cu) {
    return cu->pos >= cu->end || cu->remaining == 0;
}

/* Writes {cursor: {firstBatch|nextBatch: [...], id, ns}, ok: 1} into out. */
static void write_batch(Buf *out, Cursor *cu, int64_t batch_size, bool first) {
    size_t doc = raw_begin(out);
    raw_key(out, BSON_TYPE_DOCUMENT, "cursor");
    size_t cur = raw_begin(out);
    raw_key(out, BSON_TYPE_ARRAY, first ? "firstBatch" : "nextBatch");
    size_t arr = raw_begin(out);
    uint64_t k = 0, bytes = 0;
    char kb[16];
    bson_t idb = BSON_INITIALIZER;
    while (cu->c && !cursor_done(cu) && (batch_size <= 0 || (int64_t) k < batch_size)) {
        uint64_t i = cu->dir > 0 ? cu->pos : cu->end - 1;
        if (!ws_doc_visible(cu->c, i)) { /* deleted on an earlier day */
            if (cu->dir > 0)
                cu->pos++;
            else
                cu->end--;
            continue;
        }
        uint32_t len = cu->id_only ? 0 : ws_doc_len(cu->c, i);
        if (cu->id_only) {
            bson_reinit(&idb);
            ws_append_id(cu->c, i, &idb, "_id");
            len = idb.len;
        }
        if (k > 0 && bytes + len > MAX_BATCH_BYTES)
            break;
        const char *key;
        size_t klen = bson_uint32_to_string((uint32_t) k, &key, kb, sizeof(kb));
        buf_reserve(out, 1 + klen + 1 + len);
        out->p[out->len++] = BSON_TYPE_DOCUMENT;
        memcpy(out->p + out->len, key, klen + 1);
        out->len += klen + 1;
        if (cu->id_only)
            memcpy(out->p + out->len, bson_get_data(&idb), len);
        else
            ws_doc_copy(cu->c, i, out->p + out->len);
        out->len += len;
        bytes += len;
        k++;
        if (cu->dir > 0)
            cu->pos++;
        else
            cu->end--;
        if (cu->remaining > 0)
            cu->remaining--;
    }
    bson_destroy(&idb);
    raw_end(out, arr);
    int64_t id = cu->c && !cursor_done(cu) ? cu->id : 0;
    raw_key(out, BSON_TYPE_INT64, "id");
    buf_put(out, &id, 8);
    raw_key(out, BSON_TYPE_UTF8, "ns");
    buf_i32(out, (int32_t) strlen(cu->ns) + 1);
    buf_put(out, cu->ns, strlen(cu->ns) + 1);
    raw_end(out, cur);
    raw_key(out, BSON_TYPE_DOUBLE, "ok");
    double one = 1;
    buf_put(out, &one, 8);
    raw_end(out, doc);
    atomic_fetch_add(&g_docs_out, k);
    atomic_fetch_add(&g_bytes_out, bytes);
}

/* ---- replies ---- */

static void reply_bson(Buf *out, const bson_t *b) {
    buf_put(out, bson_get_data(b), b->len);
}

static void reply_error(Buf *out, int code, const char *code_name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(Buf *out, int code, const char *code_name, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_DOUBLE(&b, "ok", 0);
    BSON_APPEND_UTF8(&b, "errmsg", msg);
    BSON_APPEND_INT32(&b, "code", code);
    BSON_APPEND_UTF8(&b, "codeName", code_name);
    reply_bson(out, &b);
    bson_destroy(&b);
}

static void reply_ok(Buf *out, bson_t *b) {
    BSON_APPEND_DOUBLE(b, "ok", 1);
    reply_bson(out, b);
    bson_destroy(b);
}

/* A cursor reply holding the given documents and no cursor left open. */
static void reply_docs(Buf *out, const char *ns, bson_t *docs, size_t n) {
    bson_t b = BSON_INITIALIZER, cur, arr;
    BSON_APPEND_DOCUMENT_BEGIN(&b, "cursor", &cur);
    BSON_APPEND_ARRAY_BEGIN(&cur, "firstBatch", &arr);
    char kb[16];
    for (size_t k = 0; k < n; k++) {
        const char *key;
        bson_uint32_to_string((uint32_t) k, &key, kb, sizeof(kb));
        BSON_APPEND_DOCUMENT(&arr, key, &docs[k]);
        bson_destroy(&docs[k]);
    }
    bson_append_array_end(&cur, &arr);
    BSON_APPEND_INT64(&cur, "id", 0);
    BSON_APPEND_UTF8(&cur, "ns", ns);
    bson_append_document_end(&b, &cur);
    reply_ok(out, &b);
}

/* ---- commands ---- */

typedef struct {
    const uint8_t *p; /* the documents of an OP_MSG kind-1 section, or NULL */
    size_t len;
} DocSeq;

static const char *get_str(const bson_t *cmd, const char *key) {
    bson_iter_t it;
    return bson_iter_init_find(&it, cmd, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL)
                                                                           : NULL;
}

static int64_t get_int(const bson_t *cmd, const char *key, int64_t dflt) {
    bson_iter_t it;
    return bson_iter_init_find(&it, cmd, key) && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it)
                                                                             : dflt;
}

static bool get_doc(const bson_t *cmd, const char *key, bson_t *ret) {
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    if (!bson_iter_init_find(&it, cmd, key) ||
        !(BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)))
        return false;
    bson_iter_document(&it, &len, &data);
    if (BSON_ITER_HOLDS_ARRAY(&it))
        bson_iter_array(&it, &len, &data);
    return bson_init_static(ret, data, len);
}

static void cmd_hello(Buf *out, const bson_t *cmd, bool legacy) {
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&b, legacy ? "ismaster" : "isWritablePrimary", true);
    bson_iter_t it;
    if (bson_iter_init_find(&it, cmd, "helloOk"))
        BSON_APPEND_BOOL(&b, "helloOk", true);
    BSON_APPEND_INT32(&b, "maxBsonObjectSize", 16 * 1024 * 1024);
    BSON_APPEND_INT32(&b, "maxMessageSizeBytes", MAX_MESSAGE);
    BSON_APPEND_INT32(&b, "maxWriteBatchSize", 100000);
    BSON_APPEND_DATE_TIME(&b, "localTime", (int64_t) time(NULL) * 1000);
    BSON_APPEND_INT32(&b, "logicalSessionTimeoutMinutes", 30);
    BSON_APPEND_INT32(&b, "connectionId", 1);
    BSON_APPEND_INT32(&b, "minWireVersion", 0);
    BSON_APPEND_INT32(&b, "maxWireVersion", 17);
    BSON_APPEND_BOOL(&b, "readOnly", false);
    reply_ok(out, &b);
}

static void cmd_build_info(Buf *out) {
    bson_t b = BSON_INITIALIZER, va;
    BSON_APPEND_UTF8(&b, "version", "6.0.0");
    BSON_APPEND_UTF8(&b, "gitVersion", "wire-source (benchmark source, not a database)");
    BSON_APPEND_ARRAY_BEGIN(&b, "versionArray", &va);
    BSON_APPEND_INT32(&va, "0", 6);
    BSON_APPEND_INT32(&va, "1", 0);
    BSON_APPEND_INT32(&va, "2", 0);
    BSON_APPEND_INT32(&va, "3", 0);
    bson_append_array_end(&b, &va);
    BSON_APPEND_INT32(&b, "bits", 64);
    BSON_APPEND_INT32(&b, "maxBsonObjectSize", 16 * 1024 * 1024);
    reply_ok(out, &b);
}

/* The databases that exist: the dataset's, or those a target was sent. */
static size_t list_dbs(char names[][64], size_t max) {
    size_t n = 0;
    for (size_t k = 0; k < (g_target ? g_n_tcolls : g_n_colls); k++) {
        char db[64];
        if (g_target)
            snprintf(db, sizeof(db), "%.*s", (int) strcspn(g_tcolls[k].ns, "."), g_tcolls[k].ns);
        else
            snprintf(db, sizeof(db), "%s", g_colls[k].db);
        bool seen = false;
        for (size_t j = 0; j < n; j++)
            seen = seen || strcmp(names[j], db) == 0;
        if (!seen && n < max)
            snprintf(names[n++], 64, "%s", db);
    }
    return n;
}

static void cmd_list_databases(Buf *out) {
    char names[64][64];
    pthread_mutex_lock(&g_target_lock);
    size_t n = list_dbs(names, 64);
    pthread_mutex_unlock(&g_target_lock);
    bson_t b = BSON_INITIALIZER, arr, d;
    BSON_APPEND_ARRAY_BEGIN(&b, "databases", &arr);
    char kb[16];
    for (size_t k = 0; k < n; k++) {
        const char *key;
        bson_uint32_to_string((uint32_t) k, &key, kb, sizeof(kb));
        BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &d);
        BSON_APPEND_UTF8(&d, "name", names[k]);
        BSON_APPEND_INT64(&d, "sizeOnDisk", 1 << 20);
        BSON_APPEND_BOOL(&d, "empty", false);
        bson_append_document_end(&arr, &d);
    }
    bson_append_array_end(&b, &arr);
    BSON_APPEND_INT64(&b, "totalSize", (int64_t) n << 20);
    reply_ok(out, &b);
}

static void collection_info(bson_t *d, const char *name) {
    BSON_APPEND_UTF8(d, "name", name);
    BSON_APPEND_UTF8(d, "type", "collection");
    bson_t opts = BSON_INITIALIZER, info, idx, key;
    BSON_APPEND_DOCUMENT(d, "options", &opts);
    bson_destroy(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(d, "info", &info);
    BSON_APPEND_BOOL(&info, "readOnly", false);
    uint8_t uuid[16];
    XXH128_hash_t h = XXH3_128bits(name, strlen(name));
    memcpy(uuid, &h, 16);
    BSON_APPEND_BINARY(&info, "uuid", BSON_SUBTYPE_UUID, uuid, 16);
    bson_append_document_end(d, &info);
    BSON_APPEND_DOCUMENT_BEGIN(d, "idIndex", &idx);
    BSON_APPEND_INT32(&idx, "v", 2);
    BSON_APPEND_DOCUMENT_BEGIN(&idx, "key", &key);
    BSON_APPEND_INT32(&key, "_id", 1);
    bson_append_document_end(&idx, &key);
    BSON_APPEND_UTF8(&idx, "name", "_id_");
    bson_append_document_end(d, &idx);
}

static void cmd_list_collections(Buf *out, const bson_t *cmd, const char *db) {
    bson_t filter;
    const char *only = get_doc(cmd, "filter", &filter) ? get_str(&filter, "name") : NULL;
    bson_t docs[64];
    size_t n = 0;
    pthread_mutex_lock(&g_target_lock);
    for (size_t k = 0; k < (g_target ? g_n_tcolls : g_n_colls) && n < 64; k++) {
        const char *cdb = g_target ? g_tcolls[k].ns : g_colls[k].db;
        size_t dlen = g_target ? strcspn(cdb, ".") : strlen(cdb);
        const char *name = g_target ? cdb + dlen + 1 : g_colls[k].name;
        if (strlen(db) != dlen || strncmp(db, cdb, dlen) != 0 || (only && strcmp(only, name) != 0))
            continue;
        bson_init(&docs[n]);
        collection_info(&docs[n++], name);
    }
    pthread_mutex_unlock(&g_target_lock);
    char ns[128];
    snprintf(ns, sizeof(ns), "%s.$cmd.listCollections", db);
    reply_docs(out, ns, docs, n);
}

static void cmd_list_indexes(Buf *out, const char *db, const char *coll) {
    bson_t d = BSON_INITIALIZER, key;
    BSON_APPEND_INT32(&d, "v", 2);
    BSON_APPEND_DOCUMENT_BEGIN(&d, "key", &key);
    BSON_APPEND_INT32(&key, "_id", 1);
    bson_append_document_end(&d, &key);
    BSON_APPEND_UTF8(&d, "name", "_id_");
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
    reply_docs(out, ns, &d, 1);
}

/* The count and bytes of a collection as served, or as a target received it. */
static void coll_size(const char *db, const char *coll, uint64_t *n, uint64_t *bytes) {
    *n = *bytes = 0;
    const WsCollection *c = source_find(db, coll);
    if (c) {
        *n = c->visible;
        *bytes = c->bytes;
        return;
    }
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
    pthread_mutex_lock(&g_target_lock);
    TargetColl *t = target_find(ns, false);
    if (t) {
        *n = t->count;
        *bytes = t->bytes;
    }
    pthread_mutex_unlock(&g_target_lock);
}

static void cmd_coll_stats(Buf *out, const char *db, const char *coll) {
    uint64_t n, bytes;
    coll_size(db, coll, &n, &bytes);
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&b, "ns", ns);
    BSON_APPEND_INT64(&b, "count", (int64_t) n);
    BSON_APPEND_INT64(&b, "size", (int64_t) bytes);
    BSON_APPEND_INT64(&b, "avgObjSize", n ? (int64_t) (bytes / n) : 0);
    BSON_APPEND_INT64(&b, "storageSize", (int64_t) bytes);
    BSON_APPEND_INT32(&b, "nindexes", 1);
    BSON_APPEND_INT64(&b, "totalIndexSize", 0);
    reply_ok(out, &b);
}

/* [lo, hi) of the documents a filter on _id selects; false for any other filter. */
static bool filter_range(const WsCollection *c, const bson_t *filter, uint64_t *lo, uint64_t *hi) {
    *lo = 0;
    *hi = c->n;
    bson_iter_t it, op;
    if (!bson_iter_init(&it, filter))
        return false;
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") != 0)
            return false;
        bool ops = false;
        if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &op) && bson_iter_next(&op) &&
            bson_iter_key(&op)[0] == '$') {
            ops = true;
            bson_iter_recurse(&it, &op);
            while (bson_iter_next(&op)) {
                const char *o = bson_iter_key(&op);
                uint64_t v;
                if (strcmp(o, "$gte") == 0 && (v = ws_lower_bound(c, &op, 0)) > *lo)
                    *lo = v;
                else if (strcmp(o, "$gt") == 0 && (v = ws_lower_bound(c, &op, 1)) > *lo)
                    *lo = v;
                else if (strcmp(o, "$lt") == 0 && (v = ws_lower_bound(c, &op, 0)) < *hi)
                    *hi = v;
                else if (strcmp(o, "$lte") == 0 && (v = ws_lower_bound(c, &op, 1)) < *hi)
                    *hi = v;
                else if (strcmp(o, "$not") == 0) {
                    /* {$not: {$gte: v}}: a split snapshot's first part (every _id here has
                     * one type, so "not >= v" is "< v") */
                    bson_iter_t inner;
                    if (!BSON_ITER_HOLDS_DOCUMENT(&op) || !bson_iter_recurse(&op, &inner) ||
                        !bson_iter_next(&inner) || strcmp(bson_iter_key(&inner), "$gte") != 0)
                        return false;
                    if ((v = ws_lower_bound(c, &inner, 0)) < *hi)
                        *hi = v;
                    if (bson_iter_next(&inner))
                        return false;
                } else if (strcmp(o, "$gte") && strcmp(o, "$gt") && strcmp(o, "$lt") && strcmp(o, "$lte"))
                    return false;
            }
        }
        if (!ops) { /* equality */
            uint64_t a = ws_lower_bound(c, &it, 0), b = ws_lower_bound(c, &it, 1);
            *lo = a > *lo ? a : *lo;
            *hi = b < *hi ? b : *hi;
        }
    }
    if (*hi < *lo)
        *hi = *lo;
    return true;
}

static void cmd_count(Buf *out, const bson_t *cmd, const char *db, const char *coll) {
    bson_t filter;
    uint64_t n, bytes, lo = 0, hi = 0;
    coll_size(db, coll, &n, &bytes);
    const WsCollection *c = source_find(db, coll);
    if (c && get_doc(cmd, "query", &filter) && !bson_empty(&filter)) {
        if (!filter_range(c, &filter, &lo, &hi))
            return reply_error(out, 2, "BadValue", "wire-source counts only by _id ranges");
        n = hi - lo;
    }
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_INT64(&b, "n", (int64_t) n);
    reply_ok(out, &b);
}

static void cmd_find(Buf *out, const bson_t *cmd, const char *db, const char *coll) {
    Cursor *cu = calloc(1, sizeof(*cu));
    if (!cu)
        abort();
    snprintf(cu->ns, sizeof(cu->ns), "%s.%s", db, coll ? coll : "");
    cu->c = source_find(db, coll);
    cu->dir = 1;
    cu->remaining = -1;
    bson_t filter, sort, proj;
    if (cu->c) {
        cu->end = cu->c->n;
        if (get_doc(cmd, "filter", &filter) && !filter_range(cu->c, &filter, &cu->pos, &cu->end)) {
            free(cu);
            return reply_error(out, 2, "BadValue", "wire-source serves only filters on _id ranges");
        }
    }
    bson_iter_t it;
    if (get_doc(cmd, "sort", &sort) && bson_iter_init(&it, &sort) && bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if ((strcmp(k, "_id") != 0 && strcmp(k, "$natural") != 0) || bson_iter_next(&it)) {
            free(cu);
            return reply_error(out, 2, "BadValue", "wire-source sorts only on _id or $natural");
        }
        bson_iter_init(&it, &sort);
        bson_iter_next(&it);
        cu->dir = bson_iter_as_int64(&it) < 0 ? -1 : 1;
    }
    if (get_doc(cmd, "projection", &proj) && !bson_empty(&proj)) {
        if (!(bson_iter_init(&it, &proj) && bson_iter_next(&it) &&
              strcmp(bson_iter_key(&it), "_id") == 0 && bson_iter_as_bool(&it) && !bson_iter_next(&it))) {
            free(cu);
            return reply_error(out, 2, "BadValue", "wire-source projects only {_id: 1}");
        }
        cu->id_only = true;
    }
    uint64_t skip = (uint64_t) get_int(cmd, "skip", 0);
    if (cu->dir > 0)
        cu->pos = cu->pos + skip < cu->end ? cu->pos + skip : cu->end;
    else
        cu->end = cu->end >= cu->pos + skip ? cu->end - skip : cu->pos;
    int64_t limit = get_int(cmd, "limit", 0);
    bool single = bson_iter_init_find(&it, cmd, "singleBatch") && bson_iter_as_bool(&it);
    if (limit < 0) {
        limit = -limit;
        single = true;
    }
    if (limit > 0)
        cu->remaining = limit;
    int64_t batch = get_int(cmd, "batchSize", DEFAULT_FIRST_BATCH);
    if (batch == 0 && !single && cu->c) {
        cursor_add(cu); /* an empty first batch, the cursor kept */
        bson_t b = BSON_INITIALIZER, cur, arr;
        BSON_APPEND_DOCUMENT_BEGIN(&b, "cursor", &cur);
        BSON_APPEND_ARRAY_BEGIN(&cur, "firstBatch", &arr);
        bson_append_array_end(&cur, &arr);
        BSON_APPEND_INT64(&cur, "id", cu->id);
        BSON_APPEND_UTF8(&cur, "ns", cu->ns);
        bson_append_document_end(&b, &cur);
        return reply_ok(out, &b);
    }
    if (!single && cu->c)
        cursor_add(cu);
    write_batch(out, cu, batch, true);
    if (single || !cu->c || cursor_done(cu)) {
        if (!single && cu->c)
            free(cursor_take(cu->id));
        else
            free(cu);
    }
}

static void cmd_get_more(Buf *out, const bson_t *cmd) {
    int64_t id = get_int(cmd, "getMore", 0);
    Cursor *cu = cursor_take(id);
    if (!cu)
        return reply_error(out, 43, "CursorNotFound", "cursor id %" PRId64 " not found", id);
    write_batch(out, cu, get_int(cmd, "batchSize", 0), false);
    if (cursor_done(cu))
        free(cu);
    else
        cursor_put_back(cu);
}

static void cmd_kill_cursors(Buf *out, const bson_t *cmd) {
    bson_t ids, killed = BSON_INITIALIZER;
    bson_iter_t it;
    uint32_t k = 0;
    if (get_doc(cmd, "cursors", &ids) && bson_iter_init(&it, &ids))
        while (bson_iter_next(&it)) {
            Cursor *cu = cursor_take(bson_iter_as_int64(&it));
            if (cu) {
                char kb[16];
                const char *key;
                bson_uint32_to_string(k++, &key, kb, sizeof(kb));
                BSON_APPEND_INT64(&killed, key, cu->id);
                free(cu);
            }
        }
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_ARRAY(&b, "cursorsKilled", &killed);
    bson_destroy(&killed);
    reply_ok(out, &b);
}

/* Decodes (structure only: lengths, types, terminators), counts and hashes each document. */
static void cmd_insert(Buf *out, const bson_t *cmd, const char *db, const char *coll, const DocSeq *seq) {
    if (!g_target && source_find(db, coll))
        return reply_error(out, 2, "BadValue", "wire-source: %s.%s is the served dataset, read-only", db, coll);
    uint64_t n = 0, bytes = 0, hash = 0;
    bson_t arr;
    const uint8_t *p = seq->p;
    size_t left = seq->len;
    bson_iter_t it;
    bool from_body = !p && get_doc(cmd, "documents", &arr) && bson_iter_init(&it, &arr);
    for (;;) {
        const uint8_t *d;
        uint32_t len;
        if (from_body) {
            if (!bson_iter_next(&it))
                break;
            if (!BSON_ITER_HOLDS_DOCUMENT(&it))
                return reply_error(out, 2, "BadValue", "insert: documents[%" PRIu64 "] is not a document", n);
            bson_iter_document(&it, &len, &d);
        } else {
            if (left == 0)
                break;
            int32_t l;
            memcpy(&l, p, left >= 4 ? 4 : 0);
            if (left < 5 || l < 5 || (size_t) l > left)
                return reply_error(out, 2, "BadValue", "insert: a truncated document sequence");
            d = p;
            len = (uint32_t) l;
            p += l;
            left -= (size_t) l;
        }
        bson_t doc;
        size_t off;
        if (!bson_init_static(&doc, d, len) || !bson_validate(&doc, BSON_VALIDATE_NONE, &off))
            return reply_error(out, 2, "BadValue", "insert: document %" PRIu64 " is not valid BSON", n);
        hash += XXH3_64bits(d, len);
        n++;
        bytes += len;
    }
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
    pthread_mutex_lock(&g_target_lock);
    TargetColl *t = target_find(ns, true);
    t->count += n;
    t->bytes += bytes;
    t->hash += hash;
    pthread_mutex_unlock(&g_target_lock);
    atomic_fetch_add(&g_docs_in, n);
    atomic_fetch_add(&g_bytes_in, bytes);
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_INT32(&b, "n", (int32_t) n);
    reply_ok(out, &b);
}

static void cmd_create(Buf *out, const char *db, const char *coll, bool indexes, const bson_t *cmd) {
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
    bson_t b = BSON_INITIALIZER, idx;
    pthread_mutex_lock(&g_target_lock);
    TargetColl *t = source_find(db, coll) ? NULL : target_find(ns, true);
    uint64_t before = t ? t->indexes : 1;
    if (t && indexes && get_doc(cmd, "indexes", &idx))
        t->indexes += bson_count_keys(&idx);
    uint64_t after = t ? t->indexes : 1;
    pthread_mutex_unlock(&g_target_lock);
    if (indexes) {
        BSON_APPEND_INT32(&b, "numIndexesBefore", (int32_t) before);
        BSON_APPEND_INT32(&b, "numIndexesAfter", (int32_t) after);
    }
    reply_ok(out, &b);
}

static void cmd_drop(Buf *out, const char *db, const char *coll, bool whole_db) {
    pthread_mutex_lock(&g_target_lock);
    for (size_t k = 0; k < g_n_tcolls;) {
        size_t dlen = strcspn(g_tcolls[k].ns, ".");
        bool match = whole_db ? strlen(db) == dlen && strncmp(g_tcolls[k].ns, db, dlen) == 0
                              : strlen(db) == dlen && strncmp(g_tcolls[k].ns, db, dlen) == 0 &&
                                    coll && strcmp(g_tcolls[k].ns + dlen + 1, coll) == 0;
        if (match)
            g_tcolls[k] = g_tcolls[--g_n_tcolls];
        else
            k++;
    }
    pthread_mutex_unlock(&g_target_lock);
    bson_t b = BSON_INITIALIZER;
    reply_ok(out, &b);
}

static void digest_append(bson_t *arr, uint32_t k, const char *ns, uint64_t n, uint64_t bytes, uint64_t hash) {
    char kb[16], hex[17];
    const char *key;
    bson_uint32_to_string(k, &key, kb, sizeof(kb));
    bson_t d;
    BSON_APPEND_DOCUMENT_BEGIN(arr, key, &d);
    BSON_APPEND_UTF8(&d, "ns", ns);
    BSON_APPEND_INT64(&d, "count", (int64_t) n);
    BSON_APPEND_INT64(&d, "bytes", (int64_t) bytes);
    snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
    BSON_APPEND_UTF8(&d, "hash", hex);
    bson_append_document_end(arr, &d);
}

static pthread_mutex_t g_digest_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *g_source_hash; /* per served collection, computed on first request */

static void cmd_digest(Buf *out) {
    bson_t b = BSON_INITIALIZER, arr;
    BSON_APPEND_ARRAY_BEGIN(&b, "collections", &arr);
    if (g_target) {
        pthread_mutex_lock(&g_target_lock);
        for (size_t k = 0; k < g_n_tcolls; k++)
            digest_append(&arr, (uint32_t) k, g_tcolls[k].ns, g_tcolls[k].count, g_tcolls[k].bytes,
                          g_tcolls[k].hash);
        pthread_mutex_unlock(&g_target_lock);
    } else {
        pthread_mutex_lock(&g_digest_lock);
        if (!g_source_hash) {
            g_source_hash = calloc(g_n_colls, sizeof(uint64_t));
            uint8_t *doc = malloc(MAX_BATCH_BYTES);
            if (!g_source_hash || !doc)
                abort();
            for (size_t k = 0; k < g_n_colls; k++)
                for (uint64_t i = 0; i < g_colls[k].n; i++) {
                    if (!ws_doc_visible(&g_colls[k], i))
                        continue;
                    ws_doc_copy(&g_colls[k], i, doc);
                    g_source_hash[k] += XXH3_64bits(doc, ws_doc_len(&g_colls[k], i));
                }
            free(doc);
        }
        pthread_mutex_unlock(&g_digest_lock);
        for (size_t k = 0; k < g_n_colls; k++) {
            char ns[128];
            snprintf(ns, sizeof(ns), "%s.%s", g_colls[k].db, g_colls[k].name);
            digest_append(&arr, (uint32_t) k, ns, g_colls[k].visible, g_colls[k].bytes, g_source_hash[k]);
        }
    }
    bson_append_array_end(&b, &arr);
    reply_ok(out, &b);
}

static void cmd_stats(Buf *out) {
    bson_t b = BSON_INITIALIZER;
    BSON_APPEND_INT64(&b, "requests", (int64_t) atomic_load(&g_requests));
    BSON_APPEND_INT64(&b, "documentsServed", (int64_t) atomic_load(&g_docs_out));
    BSON_APPEND_INT64(&b, "bytesServed", (int64_t) atomic_load(&g_bytes_out));
    BSON_APPEND_INT64(&b, "documentsReceived", (int64_t) atomic_load(&g_docs_in));
    BSON_APPEND_INT64(&b, "bytesReceived", (int64_t) atomic_load(&g_bytes_in));
    reply_ok(out, &b);
}

/* mongodump's estimatedDocumentCount on some drivers: [{$collStats: {count: {}}}, {$group}] */
static void cmd_aggregate(Buf *out, const bson_t *cmd, const char *db, const char *coll) {
    bson_t pipe, stage;
    bson_iter_t it;
    if (get_doc(cmd, "pipeline", &pipe) && bson_iter_init(&it, &pipe) && bson_iter_next(&it) &&
        BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *d;
        bson_iter_document(&it, &len, &d);
        bson_init_static(&stage, d, len);
        if (bson_has_field(&stage, "$collStats")) {
            uint64_t n, bytes;
            coll_size(db, coll, &n, &bytes);
            bson_t doc = BSON_INITIALIZER;
            BSON_APPEND_INT32(&doc, "_id", 1);
            BSON_APPEND_INT64(&doc, "n", (int64_t) n);
            char ns[300];
            snprintf(ns, sizeof(ns), "%s.%s", db, coll ? coll : "");
            return reply_docs(out, ns, &doc, 1);
        }
    }
    reply_error(out, 59, "CommandNotFound", "wire-source answers aggregate only with $collStats");
}

static void log_unknown(const char *name) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char seen[64][64];
    static size_t n;
    pthread_mutex_lock(&lock);
    bool known = false;
    for (size_t k = 0; k < n; k++)
        known = known || strcmp(seen[k], name) == 0;
    if (!known) {
        fprintf(stderr, "wire-source: refused unknown command '%s'\n", name);
        if (n < 64)
            snprintf(seen[n++], 64, "%s", name);
    }
    pthread_mutex_unlock(&lock);
}

static void dispatch(Buf *out, const bson_t *cmd, const char *db, const DocSeq *seq, bool legacy) {
    atomic_fetch_add(&g_requests, 1);
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it))
        return reply_error(out, 2, "BadValue", "an empty command");
    const char *name = bson_iter_key(&it);
    const char *arg = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
    if (!db)
        db = get_str(cmd, "$db");
    if (!db)
        db = "admin";
    if (!strcmp(name, "hello") || !strcasecmp(name, "isMaster"))
        return cmd_hello(out, cmd, legacy || strcmp(name, "hello") != 0);
    if (!strcmp(name, "ping") || !strcmp(name, "endSessions") || !strcmp(name, "killAllSessions"))
        return reply_ok(out, &(bson_t) BSON_INITIALIZER);
    if (!strcasecmp(name, "buildInfo"))
        return cmd_build_info(out);
    if (!strcmp(name, "listDatabases"))
        return cmd_list_databases(out);
    if (!strcmp(name, "listCollections"))
        return cmd_list_collections(out, cmd, db);
    if (!strcmp(name, "listIndexes"))
        return cmd_list_indexes(out, db, arg);
    if (!strcmp(name, "collStats"))
        return cmd_coll_stats(out, db, arg);
    if (!strcmp(name, "count"))
        return cmd_count(out, cmd, db, arg);
    if (!strcmp(name, "find"))
        return cmd_find(out, cmd, db, arg);
    if (!strcmp(name, "getMore"))
        return cmd_get_more(out, cmd);
    if (!strcmp(name, "killCursors"))
        return cmd_kill_cursors(out, cmd);
    if (!strcmp(name, "insert"))
        return cmd_insert(out, cmd, db, arg, seq);
    if (!strcmp(name, "create"))
        return cmd_create(out, db, arg, false, cmd);
    if (!strcmp(name, "createIndexes"))
        return cmd_create(out, db, arg, true, cmd);
    if (!strcmp(name, "drop"))
        return cmd_drop(out, db, arg, false);
    if (!strcmp(name, "dropDatabase"))
        return cmd_drop(out, db, NULL, true);
    if (!strcmp(name, "aggregate"))
        return cmd_aggregate(out, cmd, db, arg);
    if (!strcmp(name, "listCommands")) {
        /* what a restore's oplog preflight asks for; wire-source replays no oplog */
        bson_t b = BSON_INITIALIZER, c = BSON_INITIALIZER;
        BSON_APPEND_DOCUMENT(&b, "commands", &c);
        return reply_ok(out, &b);
    }
    if (!strcmp(name, "benchDigest"))
        return cmd_digest(out);
    if (!strcmp(name, "benchStats"))
        return cmd_stats(out);
    if (!strcmp(name, "benchSetDay")) {
        /* {benchSetDay: N, update: 0.01, insert: 0.002, delete: 0.001}: the database on day N */
        if (g_target)
            return reply_error(out, 2, "BadValue", "benchSetDay is for a source, not a --target");
        bson_iter_t v;
        double upd = 0.01, ins = 0.002, del = 0.001;
        if (bson_iter_init_find(&v, cmd, "update") && BSON_ITER_HOLDS_NUMBER(&v))
            upd = bson_iter_as_double(&v);
        if (bson_iter_init_find(&v, cmd, "insert") && BSON_ITER_HOLDS_NUMBER(&v))
            ins = bson_iter_as_double(&v);
        if (bson_iter_init_find(&v, cmd, "delete") && BSON_ITER_HOLDS_NUMBER(&v))
            del = bson_iter_as_double(&v);
        int64_t day = get_int(cmd, "benchSetDay", -1);
        if (day < 0 || day > 1000 || upd < 0 || upd > 1 || ins < 0 || ins > 1 || del < 0 || del > 1)
            return reply_error(out, 2, "BadValue", "benchSetDay: a day from 0 to 1000 and fractions from 0 to 1");
        pthread_mutex_lock(&g_digest_lock);
        ws_dataset_set_day(g_colls, g_n_colls, (unsigned) day, upd, ins, del);
        free(g_source_hash);
        g_source_hash = NULL;
        pthread_mutex_unlock(&g_digest_lock);
        return reply_ok(out, &(bson_t) BSON_INITIALIZER);
    }
    if (!strcmp(name, "benchReset")) {
        pthread_mutex_lock(&g_target_lock);
        g_n_tcolls = 0;
        pthread_mutex_unlock(&g_target_lock);
        return reply_ok(out, &(bson_t) BSON_INITIALIZER);
    }
    log_unknown(name);
    reply_error(out, 59, "CommandNotFound", "no such command: '%s' (wire-source is a benchmark source)", name);
}

/* ---- the connection ---- */

static bool read_full(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return false;
        }
        b += r;
        n -= (size_t) r;
    }
    return true;
}

static bool write_full(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t r = write(fd, b, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return false;
        }
        b += r;
        n -= (size_t) r;
    }
    return true;
}

static void put_header(Buf *out, int32_t response_to, int32_t op) {
    int32_t h[4] = {(int32_t) out->len, 0, response_to, op};
    memcpy(out->p, h, 16);
}

static void *conn_main(void *userdata) {
    int fd = (int) (intptr_t) userdata;
    Buf in = {0}, out = {0};
    for (;;) {
        int32_t h[4];
        if (!read_full(fd, h, 16) || h[0] < 16 || h[0] > MAX_MESSAGE)
            break;
        in.len = 0;
        buf_reserve(&in, (size_t) h[0]);
        if (!read_full(fd, in.p, (size_t) h[0] - 16))
            break;
        size_t len = (size_t) h[0] - 16;
        out.len = 0;
        if (h[3] == OP_QUERY) {
            /* flags, full collection name, skip, limit, the command */
            size_t nl = len > 4 ? strnlen((char *) in.p + 4, len - 4) : len;
            size_t at = 4 + nl + 1 + 8;
            int32_t dl;
            if (at + 4 > len || (memcpy(&dl, in.p + at, 4), dl < 5) || at + (size_t) dl > len)
                break;
            char db[128];
            snprintf(db, sizeof(db), "%.*s", (int) strcspn((char *) in.p + 4, "."), (char *) in.p + 4);
            bson_t cmd;
            bson_init_static(&cmd, in.p + at, (size_t) dl);
            buf_reserve(&out, 36);
            out.len = 36; /* header, flags, cursor id, starting from, number returned */
            DocSeq none = {0};
            dispatch(&out, &cmd, db, &none, true);
            memset(out.p + 16, 0, 20);
            int32_t one = 1;
            memcpy(out.p + 32, &one, 4);
            put_header(&out, h[1], OP_REPLY);
        } else if (h[3] == OP_MSG) {
            uint32_t flags;
            if (len < 5)
                break;
            memcpy(&flags, in.p, 4);
            size_t end = len - ((flags & MSG_CHECKSUM) ? 4 : 0), at = 4;
            bson_t body;
            bool have_body = false;
            DocSeq seq = {0};
            while (at < end) {
                uint8_t kind = in.p[at++];
                int32_t sl;
                if (at + 4 > end || (memcpy(&sl, in.p + at, 4), sl < 5) || at + (size_t) sl > end)
                    goto done;
                if (kind == 0) {
                    bson_init_static(&body, in.p + at, (size_t) sl);
                    have_body = true;
                } else if (kind == 1) {
                    size_t il = strnlen((char *) in.p + at + 4, (size_t) sl - 4);
                    seq.p = in.p + at + 4 + il + 1;
                    seq.len = (size_t) sl - 4 - il - 1;
                } else
                    goto done;
                at += (size_t) sl;
            }
            if (!have_body)
                break;
            buf_reserve(&out, 21);
            out.len = 21; /* header, flags, section kind 0 */
            dispatch(&out, &body, NULL, &seq, false);
            memset(out.p + 16, 0, 5);
            put_header(&out, h[1], OP_MSG);
            if (flags & MSG_MORE_TO_COME)
                continue;
        } else {
            fprintf(stderr, "wire-source: unsupported opcode %d\n", h[3]);
            break;
        }
        if (!write_full(fd, out.p, out.len))
            break;
    }
done:
    close(fd);
    free(in.p);
    free(out.p);
    return NULL;
}

static void *signal_main(void *userdata) {
    sigset_t *set = userdata;
    int sig;
    sigwait(set, &sig);
    fprintf(stderr,
            "wire-source: %" PRIu64 " requests, %" PRIu64 " documents (%" PRIu64
            " bytes) served, %" PRIu64 " documents (%" PRIu64 " bytes) received\n",
            (uint64_t) atomic_load(&g_requests), (uint64_t) atomic_load(&g_docs_out),
            (uint64_t) atomic_load(&g_bytes_out), (uint64_t) atomic_load(&g_docs_in),
            (uint64_t) atomic_load(&g_bytes_in));
    _exit(0);
}

static void usage(FILE *f) {
    fprintf(f, "usage: wire-source [--bind ADDR] [--port N] [--port-file FILE] [--scale S] [--pool-scale P] [--target]\n"
               "A benchmark source speaking the MongoDB wire protocol (not a database).\n");
}

int main(int argc, char **argv) {
    const char *bind_addr = "127.0.0.1", *port_file = NULL;
    int port = 0;
    double scale = 1, pool_scale = 1;
    static const struct option opts[] = {
        {"bind", required_argument, NULL, 'b'}, {"port", required_argument, NULL, 'p'},
        {"port-file", required_argument, NULL, 'f'}, {"scale", required_argument, NULL, 's'},
        {"pool-scale", required_argument, NULL, 'P'}, {"target", no_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'}, {0},
    };
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *endp;
        switch (c) {
        case 'b':
            bind_addr = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'f':
            port_file = optarg;
            break;
        case 's':
            scale = strtod(optarg, &endp);
            if (*endp || !(scale > 0 && scale <= 1000)) {
                fprintf(stderr, "wire-source: --scale %s: expected a number above 0, at most 1000\n", optarg);
                return 2;
            }
            break;
        case 'P':
            pool_scale = strtod(optarg, &endp);
            if (*endp || !(pool_scale > 0 && pool_scale <= 1)) {
                fprintf(stderr, "wire-source: --pool-scale %s: expected a number above 0, at most 1\n", optarg);
                return 2;
            }
            break;
        case 't':
            g_target = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t sig_thread;
    pthread_create(&sig_thread, NULL, signal_main, &set);

    if (!g_target) {
        g_colls = ws_dataset_new(scale, pool_scale, &g_n_colls);
        uint64_t docs = 0, bytes = 0;
        for (size_t k = 0; k < g_n_colls; k++) {
            docs += g_colls[k].n;
            bytes += g_colls[k].bytes;
        }
        fprintf(stderr, "wire-source: serving %" PRIu64 " documents, %" PRIu64 " bytes of BSON in %zu collections (scale %g)\n",
                docs, bytes, g_n_colls, scale);
    }

    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    if (s < 0 || inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1 ||
        bind(s, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(s, 128) < 0) {
        fprintf(stderr, "wire-source: cannot listen on %s:%d: %s\n", bind_addr, port, strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof(sa);
    getsockname(s, (struct sockaddr *) &sa, &sl);
    fprintf(stderr, "wire-source: listening on %s:%d%s\n", bind_addr, ntohs(sa.sin_port),
            g_target ? " (target: accepts writes, serves no data)" : "");
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0 || rename(tmp, port_file) < 0) {
            fprintf(stderr, "wire-source: cannot write %s: %s\n", port_file, strerror(errno));
            return 1;
        }
    }
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            fprintf(stderr, "wire-source: accept: %s\n", strerror(errno));
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t th;
        if (pthread_create(&th, NULL, conn_main, (void *) (intptr_t) fd) != 0)
            close(fd);
        else
            pthread_detach(th);
    }
}

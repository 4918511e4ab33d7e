/* Tests for the mongodump archive writer and reader: golden bytes, round trips, damage. */
#include <bson/bson.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/archive.h"
#include "archive/crc64.h"
#include "common/macro.h"
#include "io/stream.h"
#include "test.h"

#define EVENT_LOG_SIZE (64 * 1024)
#define LARGE_DOCUMENT_SIZE (5 * 1024 * 1024) /* beyond the reader's first buffer size */
#define MANY_NAMESPACES 3000
#define WRITER_THREADS 4
#define SEGMENTS_PER_THREAD 50

/* ---------------- helpers ---------------- */

typedef struct Buf {
    uint8_t *data;
    size_t len, cap;
} Buf;

static void buf_append(Buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = MS_MAX(b->cap * 2, b->len + n);
        b->data = realloc(b->data, b->cap);
        if (!b->data)
            abort();
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_free(Buf *b) {
    free(b->data);
    *b = (Buf){0};
}
#define _cleanup_buf_ _cleanup_(buf_free)

static void buf_append_terminator(Buf *b) {
    static const uint8_t t[4] = {0xff, 0xff, 0xff, 0xff};
    buf_append(b, t, sizeof(t));
}

/* A namespace header as mongodump marshals it, for archives the writer refuses to produce. */
static void buf_append_namespace_header(Buf *b, const char *db, const char *coll, bool eof,
                                        uint64_t crc) {
    bson_t h = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&h, "db", db);
    BSON_APPEND_UTF8(&h, "collection", coll);
    BSON_APPEND_BOOL(&h, "EOF", eof);
    BSON_APPEND_INT64(&h, "CRC", (int64_t) crc);
    buf_append(b, bson_get_data(&h), h.len);
    bson_destroy(&h);
}

static size_t hex_decode(const char *hex, Buf *out) {
    size_t n = 0;
    for (const char *p = hex; p[0] && p[1]; p += 2) {
        unsigned v;
        if (sscanf(p, "%2x", &v) != 1)
            abort();
        uint8_t byte = (uint8_t) v;
        buf_append(out, &byte, 1);
        n++;
    }
    return n;
}

/* Append {_id: id, v: payload} to a segment and fold it into the namespace's CRC. */
static void segment_add(Buf *seg, uint64_t *crc, int32_t id, const char *payload) {
    bson_t d = BSON_INITIALIZER;
    BSON_APPEND_INT32(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "v", payload);
    buf_append(seg, bson_get_data(&d), d.len);
    *crc = ms_crc64_update(*crc, bson_get_data(&d), d.len);
    bson_destroy(&d);
}

static int write_ids(MsArchiveWriter *w, uint64_t *crc, const char *db, const char *coll,
                     const int32_t *ids, size_t n, MsError *e) {
    _cleanup_buf_ Buf seg = {0};
    for (size_t i = 0; i < n; i++)
        segment_add(&seg, crc, ids[i], "payload");
    return ms_archive_writer_write_segment(w, db, coll, seg.data, seg.len, e);
}

/* A source handing out at most chunk bytes per read, to exercise the reader's refills. */
typedef struct TrickleSource {
    MsSource base;
    const uint8_t *data;
    size_t len, pos, chunk;
} TrickleSource;

static ssize_t trickle_read(MsSource *s, void *buf, size_t len, MsError *e) {
    TrickleSource *t = (TrickleSource *) s;
    size_t n = MS_MIN(MS_MIN(len, t->chunk), t->len - t->pos);
    memcpy(buf, t->data + t->pos, n);
    t->pos += n;
    return (ssize_t) n;
}

static void trickle_free(MsSource *s) {
    free(s);
}

static MsSource *trickle_source_new(const void *data, size_t len, size_t chunk) {
    TrickleSource *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    t->base = (MsSource){trickle_read, trickle_free};
    t->data = data;
    t->len = len;
    t->chunk = chunk;
    return &t->base;
}

static int32_t document_id(const uint8_t *data, size_t len) {
    bson_t d;
    bson_iter_t it;
    if (!bson_init_static(&d, data, len) || !bson_iter_init_find(&it, &d, "_id") ||
        !BSON_ITER_HOLDS_INT32(&it))
        return -1;
    return bson_iter_int32(&it);
}

static void log_event(char *log, size_t size, const MsArchiveEvent *ev) {
    size_t used = strlen(log);
    const char *dot = ev->db[0] ? "." : "";
    if (ev->kind == MS_ARCHIVE_EVENT_DOCUMENT)
        snprintf(log + used, size - used, "%s%s%s:%" PRId32 " ", ev->db, dot, ev->collection,
                 document_id(ev->data, ev->len));
    else
        snprintf(log + used, size - used, "%s%s%s:EOF ", ev->db, dot, ev->collection);
}

/* Read a whole archive (chunk 0: plain memory source). Returns 0 after END, else the error.
 * log, when non-NULL, receives "ns:_id " per document and "ns:EOF " per namespace end. */
static int read_archive(const uint8_t *data, size_t len, size_t chunk, char *log, size_t log_size,
                        MsError *e) {
    _cleanup_(ms_source_freep) MsSource *src =
        chunk ? trickle_source_new(data, len, chunk) : ms_source_memory_new(data, len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    if (log)
        log[0] = '\0';
    int k = ms_archive_reader_read_prelude(r, NULL, NULL, NULL, e);
    if (k < 0)
        return k;
    for (;;) {
        MsArchiveEvent ev;
        k = ms_archive_reader_next(r, &ev, e);
        if (k < 0)
            return k;
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            return 0;
        if (log)
            log_event(log, log_size, &ev);
    }
}

/* ---------------- the sample archive most tests use ---------------- */

#define SAMPLE_SERVER_VERSION "7.0.14"
#define SAMPLE_TOOL_VERSION "mongosnap 0.1.0"
#define SAMPLE_VIEW_METADATA                                                                       \
    "{\"options\":{\"viewOn\":\"orders\",\"pipeline\":[]},\"indexes\":[],\"collectionName\":"      \
    "\"recent\",\"type\":\"view\"}"

static const MsArchiveCollection sample_collections[] = {
    {(char *) "shop", (char *) "orders", (char *) "{\"indexes\":[]}", 0, (char *) ""},
    {(char *) "shop", (char *) "users", (char *) "{}", 0, (char *) ""},
    {(char *) "shop", (char *) "empty", (char *) "{}", 0, (char *) ""},
    {(char *) "shop", (char *) "recent", (char *) SAMPLE_VIEW_METADATA, 0, (char *) "view"},
    {(char *) "metrics", (char *) "ts", (char *) "{}", 0, (char *) "timeseries"},
    {(char *) MS_ARCHIVE_OPLOG_DB, (char *) MS_ARCHIVE_OPLOG_COLLECTION, (char *) "", 0,
     (char *) ""},
};

#define SAMPLE_EVENTS                                                                              \
    "shop.orders:1 shop.orders:2 shop.orders:3 shop.users:10 shop.users:11 shop.orders:4 "         \
    "metrics.system.buckets.ts:100 oplog:1000 shop.users:12 shop.orders:EOF shop.users:EOF "       \
    "shop.empty:EOF shop.recent:EOF metrics.system.buckets.ts:EOF oplog:EOF "

static const MsArchiveHeader sample_header = {
    .concurrent_collections = 4,
    .version = (char *) MS_ARCHIVE_FORMAT_VERSION,
    .server_version = (char *) SAMPLE_SERVER_VERSION,
    .tool_version = (char *) SAMPLE_TOOL_VERSION,
};

/* Interleaved segments, an empty collection, a view, time-series buckets and the oplog.
 * skip_users_eof leaves shop.users without its end marker. */
static int build_sample(Buf *out, bool skip_users_eof, MsError *e) {
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    uint64_t crc_orders = 0, crc_users = 0, crc_ts = 0, crc_oplog = 0;
    int k = ms_archive_writer_write_prelude(w, &sample_header, sample_collections,
                                            ELEMENTSOF(sample_collections), e);
    if (k < 0)
        return k;
    if ((k = write_ids(w, &crc_orders, "shop", "orders", (int32_t[]){1, 2, 3}, 3, e)) < 0 ||
        (k = write_ids(w, &crc_users, "shop", "users", (int32_t[]){10, 11}, 2, e)) < 0 ||
        (k = write_ids(w, &crc_orders, "shop", "orders", (int32_t[]){4}, 1, e)) < 0 ||
        (k = write_ids(w, &crc_ts, "metrics", "system.buckets.ts", (int32_t[]){100}, 1, e)) < 0 ||
        (k = write_ids(w, &crc_oplog, "", "oplog", (int32_t[]){1000}, 1, e)) < 0 ||
        (k = write_ids(w, &crc_users, "shop", "users", (int32_t[]){12}, 1, e)) < 0)
        return k;
    if ((k = ms_archive_writer_write_eof(w, "shop", "orders", crc_orders, e)) < 0)
        return k;
    if (!skip_users_eof && (k = ms_archive_writer_write_eof(w, "shop", "users", crc_users, e)) < 0)
        return k;
    if ((k = ms_archive_writer_write_eof(w, "shop", "empty", 0, e)) < 0 ||
        (k = ms_archive_writer_write_eof(w, "shop", "recent", 0, e)) < 0 ||
        (k = ms_archive_writer_write_eof(w, "metrics", "system.buckets.ts", crc_ts, e)) < 0 ||
        (k = ms_archive_writer_write_eof(w, "", "oplog", crc_oplog, e)) < 0)
        return k;
    if (!skip_users_eof && (k = ms_archive_writer_check_complete(w, e)) < 0)
        return k;
    size_t len;
    const uint8_t *data = ms_sink_memory_data(sink, &len);
    buf_append(out, data, len);
    return 0;
}

/* Offsets of interesting items in the pristine sample, as the reader reports them. */
typedef struct SampleOffsets {
    uint64_t prelude_end;
    uint64_t first_orders_doc;
    size_t first_orders_doc_len;
    uint64_t orders_eof;
} SampleOffsets;

static int sample_offsets(const Buf *a, SampleOffsets *ret) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(a->data, a->len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    *ret = (SampleOffsets){0};
    if (ms_archive_reader_read_prelude(r, NULL, NULL, NULL, &e) < 0)
        return -1;
    ret->prelude_end = ms_archive_reader_offset(r);
    for (;;) {
        MsArchiveEvent ev;
        if (ms_archive_reader_next(r, &ev, &e) < 0)
            return -1;
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            return 0;
        bool orders = strcmp(ev.collection, "orders") == 0;
        if (orders && ev.kind == MS_ARCHIVE_EVENT_DOCUMENT && !ret->first_orders_doc) {
            ret->first_orders_doc = ev.offset;
            ret->first_orders_doc_len = ev.len;
        }
        if (orders && ev.kind == MS_ARCHIVE_EVENT_NAMESPACE_EOF)
            ret->orders_eof = ev.offset;
    }
}

/* ---------------- golden bytes ---------------- */

/* A tiny archive assembled by hand from spec.md: collection d.c with one document {_id: 1}
 * and view d.v with none (as mongodump, an empty segment before the EOF). The CRC of {_id: 1}
 * was computed with an independent CRC-64/XZ implementation. */
static const char *const golden_hex[] = {
    /* magic 0x8199e26d, little-endian */
    "6de29981",
    /* header {concurrent_collections: int32 1, version: "0.1", server_version: "7.0.0",
     * tool_version: "t"} */
    "60000000"
    "10" "636f6e63757272656e745f636f6c6c656374696f6e7300" "01000000"
    "02" "76657273696f6e00" "04000000" "302e3100"
    "02" "7365727665725f76657273696f6e00" "06000000" "372e302e3000"
    "02" "746f6f6c5f76657273696f6e00" "02000000" "7400"
    "00",
    /* {db: "d", collection: "c", metadata: "{}", size: int32 0, type: ""} */
    "47000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "6300"
    "02" "6d6574616461746100" "03000000" "7b7d00"
    "10" "73697a6500" "00000000"
    "02" "7479706500" "01000000" "00"
    "00",
    /* {db: "d", collection: "v", metadata: "", size: int32 0, type: "view"} */
    "49000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "7600"
    "02" "6d6574616461746100" "01000000" "00"
    "10" "73697a6500" "00000000"
    "02" "7479706500" "05000000" "7669657700"
    "00",
    /* end of prelude */
    "ffffffff",
    /* namespace header {db: "d", collection: "c", EOF: false, CRC: int64 0} */
    "34000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "6300"
    "08" "454f4600" "00"
    "12" "43524300" "0000000000000000"
    "00",
    /* {_id: int32 1} */
    "0e000000" "10" "5f696400" "01000000" "00",
    "ffffffff",
    /* EOF header {db: "d", collection: "c", EOF: true, CRC: int64 0xf3ea61436a4459fe} */
    "34000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "6300"
    "08" "454f4600" "01"
    "12" "43524300" "fe59446a4361eaf3"
    "00",
    "ffffffff",
    /* the view: empty segment, then its EOF with CRC 0 */
    "34000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "7600"
    "08" "454f4600" "00"
    "12" "43524300" "0000000000000000"
    "00",
    "ffffffff",
    "34000000"
    "02" "646200" "02000000" "6400"
    "02" "636f6c6c656374696f6e00" "02000000" "7600"
    "08" "454f4600" "01"
    "12" "43524300" "0000000000000000"
    "00",
    "ffffffff",
};
#define GOLDEN_LENGTH 486

static void golden(Buf *out) {
    for (size_t i = 0; i < ELEMENTSOF(golden_hex); i++)
        hex_decode(golden_hex[i], out);
}

static void golden_bytes_from_writer(void) {
    _cleanup_buf_ Buf expected = {0};
    golden(&expected);
    ASSERT_EQ_INT(expected.len, GOLDEN_LENGTH);

    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    MsArchiveHeader h = {1, NULL /* defaults to "0.1" */, (char *) "7.0.0", (char *) "t"};
    MsArchiveCollection c[] = {
        {(char *) "d", (char *) "c", (char *) "{}", 0, (char *) ""},
        {(char *) "d", (char *) "v", NULL, 0, (char *) "view"},
    };
    ASSERT_OK(ms_archive_writer_write_prelude(w, &h, c, ELEMENTSOF(c), &e));
    uint64_t crc = 0;
    bson_t d = BSON_INITIALIZER;
    BSON_APPEND_INT32(&d, "_id", 1);
    crc = ms_crc64_update(crc, bson_get_data(&d), d.len);
    int k = ms_archive_writer_write_segment(w, "d", "c", bson_get_data(&d), d.len, &e);
    bson_destroy(&d);
    ASSERT_OK(k);
    ASSERT_OK(ms_archive_writer_write_eof(w, "d", "c", crc, &e));
    ASSERT_OK(ms_archive_writer_write_eof(w, "d", "v", 0, &e));
    ASSERT_OK(ms_archive_writer_check_complete(w, &e));

    size_t len;
    const uint8_t *data = ms_sink_memory_data(sink, &len);
    ASSERT_EQ_INT(len, expected.len);
    for (size_t i = 0; i < len; i++)
        if (data[i] != expected.data[i]) {
            fprintf(stderr, "# first difference at byte %zu: 0x%02x != 0x%02x\n", i, data[i],
                    expected.data[i]);
            ASSERT(false);
        }
}

static void golden_bytes_read(void) {
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(a.data, a.len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    const MsArchiveHeader *h;
    const MsArchiveCollection *c;
    size_t n;
    ASSERT_OK(ms_archive_reader_read_prelude(r, &h, &c, &n, &e));
    ASSERT_EQ_INT(h->concurrent_collections, 1);
    ASSERT_STREQ(h->version, "0.1");
    ASSERT_STREQ(h->server_version, "7.0.0");
    ASSERT_STREQ(h->tool_version, "t");
    ASSERT_EQ_INT(n, 2);
    ASSERT_STREQ(c[0].db, "d");
    ASSERT_STREQ(c[0].collection, "c");
    ASSERT_STREQ(c[0].metadata_json, "{}");
    ASSERT_STREQ(c[0].type, "");
    ASSERT_STREQ(c[1].metadata_json, "");
    ASSERT_STREQ(c[1].type, "view");

    MsArchiveEvent ev;
    ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    ASSERT_EQ_INT(ev.kind, MS_ARCHIVE_EVENT_DOCUMENT);
    ASSERT_STREQ(ev.db, "d");
    ASSERT_STREQ(ev.collection, "c");
    ASSERT_EQ_INT(ev.len, 14);
    ASSERT_EQ_INT(ev.offset, 4 + 0x60 + 0x47 + 0x49 + 4 + 0x34);
    ASSERT_EQ_INT(document_id(ev.data, ev.len), 1);
    ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    ASSERT_EQ_INT(ev.kind, MS_ARCHIVE_EVENT_NAMESPACE_EOF);
    ASSERT_STREQ(ev.collection, "c");
    ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    ASSERT_EQ_INT(ev.kind, MS_ARCHIVE_EVENT_NAMESPACE_EOF);
    ASSERT_STREQ(ev.collection, "v");
    ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    ASSERT_EQ_INT(ev.kind, MS_ARCHIVE_EVENT_END);
    ASSERT_EQ_INT(ev.offset, GOLDEN_LENGTH);
    ASSERT_EQ_INT(ms_archive_reader_offset(r), GOLDEN_LENGTH);
    /* END repeats */
    ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    ASSERT_EQ_INT(ev.kind, MS_ARCHIVE_EVENT_END);

    const MsArchiveNamespaceStats *st;
    ASSERT_EQ_INT(ms_archive_reader_namespace_stats(r, &st), 2);
    ASSERT_STREQ(st[0].collection, "c");
    ASSERT_EQ_INT(st[0].documents, 1);
    ASSERT_EQ_INT(st[0].bytes, 14);
    ASSERT(st[0].crc == 0xf3ea61436a4459feULL);
    ASSERT(st[0].eof_seen);
    ASSERT_EQ_INT(st[1].documents, 0);
    ASSERT(st[1].eof_seen);
}

/* ---------------- round trips ---------------- */

static void round_trip(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));

    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(a.data, a.len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    const MsArchiveHeader *h;
    const MsArchiveCollection *c;
    size_t n;
    ASSERT_OK(ms_archive_reader_read_prelude(r, &h, &c, &n, &e));
    ASSERT_EQ_INT(h->concurrent_collections, 4);
    ASSERT_STREQ(h->version, "0.1");
    ASSERT_STREQ(h->server_version, SAMPLE_SERVER_VERSION);
    ASSERT_STREQ(h->tool_version, SAMPLE_TOOL_VERSION);
    ASSERT_EQ_INT(n, ELEMENTSOF(sample_collections));
    for (size_t i = 0; i < n; i++) {
        ASSERT_STREQ(c[i].db, sample_collections[i].db);
        ASSERT_STREQ(c[i].collection, sample_collections[i].collection);
        ASSERT_STREQ(c[i].metadata_json, sample_collections[i].metadata_json);
        ASSERT_STREQ(c[i].type, sample_collections[i].type);
        ASSERT_EQ_INT(c[i].size, 0);
    }

    static char log[EVENT_LOG_SIZE];
    log[0] = '\0';
    MsArchiveEvent ev;
    uint64_t last_offset = 0;
    for (;;) {
        ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
        ASSERT(ev.offset > last_offset);
        last_offset = ev.offset;
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        log_event(log, sizeof(log), &ev);
    }
    ASSERT_STREQ(log, SAMPLE_EVENTS);
    ASSERT_EQ_INT(ev.offset, a.len);

    const MsArchiveNamespaceStats *st;
    size_t n_st = ms_archive_reader_namespace_stats(r, &st);
    ASSERT_EQ_INT(n_st, ELEMENTSOF(sample_collections));
    uint64_t docs[] = {4, 3, 0, 0, 1, 1};
    for (size_t i = 0; i < n_st; i++) {
        ASSERT(st[i].eof_seen);
        ASSERT_EQ_INT(st[i].documents, docs[i]);
    }
    ASSERT_STREQ(st[4].collection, "system.buckets.ts"); /* the name the data used */
    ASSERT_STREQ(st[5].db, "");
    ASSERT_STREQ(st[5].collection, "oplog");
}

static void round_trip_trickled(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    static char log[EVENT_LOG_SIZE];
    static const size_t chunks[] = {1, 2, 3, 7, 64};
    for (size_t i = 0; i < ELEMENTSOF(chunks); i++) {
        ASSERT_OK(read_archive(a.data, a.len, chunks[i], log, sizeof(log), &e));
        ASSERT_STREQ(log, SAMPLE_EVENTS);
    }
}

static void large_document(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    MsArchiveCollection c = {(char *) "big", (char *) "blobs", (char *) "{}", 0, (char *) ""};
    ASSERT_OK(ms_archive_writer_write_prelude(w, &sample_header, &c, 1, &e));

    uint8_t *blob = malloc(LARGE_DOCUMENT_SIZE);
    ASSERT(blob);
    for (size_t i = 0; i < LARGE_DOCUMENT_SIZE; i++)
        blob[i] = (uint8_t) (i * 131);
    _cleanup_buf_ Buf seg = {0};
    uint64_t crc = 0;
    for (int32_t id = 0; id < 3; id++) {
        bson_t d = BSON_INITIALIZER;
        BSON_APPEND_INT32(&d, "_id", id);
        BSON_APPEND_BINARY(&d, "blob", BSON_SUBTYPE_BINARY, blob, LARGE_DOCUMENT_SIZE - id);
        buf_append(&seg, bson_get_data(&d), d.len);
        crc = ms_crc64_update(crc, bson_get_data(&d), d.len);
        bson_destroy(&d);
    }
    free(blob);
    ASSERT_OK(ms_archive_writer_write_segment(w, "big", "blobs", seg.data, seg.len, &e));
    ASSERT_OK(ms_archive_writer_write_eof(w, "big", "blobs", crc, &e));

    size_t len;
    const uint8_t *data = ms_sink_memory_data(sink, &len);
    char log[256];
    ASSERT_OK(read_archive(data, len, 0, log, sizeof(log), &e));
    ASSERT_STREQ(log, "big.blobs:0 big.blobs:1 big.blobs:2 big.blobs:EOF ");
    ASSERT_OK(read_archive(data, len, 100000, log, sizeof(log), &e));
    ASSERT_STREQ(log, "big.blobs:0 big.blobs:1 big.blobs:2 big.blobs:EOF ");
}

static void many_interleaved_namespaces(void) {
    MsError e = MS_ERROR_INIT;
    MsArchiveCollection *c = calloc(MANY_NAMESPACES, sizeof(*c));
    uint64_t *crc = calloc(MANY_NAMESPACES, sizeof(*crc));
    ASSERT(c && crc);
    for (size_t i = 0; i < MANY_NAMESPACES; i++) {
        char db[32], coll[32];
        snprintf(db, sizeof(db), "db%zu", i % 17);
        snprintf(coll, sizeof(coll), "c%zu", i);
        c[i] = (MsArchiveCollection){strdup(db), strdup(coll), strdup("{}"), 0, strdup("")};
    }
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    int k = ms_archive_writer_write_prelude(w, &sample_header, c, MANY_NAMESPACES, &e);
    /* Three rounds over all namespaces (in a scrambled order), so segments interleave. */
    for (int round = 0; round < 3 && k >= 0; round++)
        for (size_t j = 0; j < MANY_NAMESPACES && k >= 0; j++) {
            size_t i = (j * 7919 + (size_t) round) % MANY_NAMESPACES;
            k = write_ids(w, &crc[i], c[i].db, c[i].collection,
                          (int32_t[]){round * 2, round * 2 + 1}, 2, &e);
        }
    for (size_t i = 0; i < MANY_NAMESPACES && k >= 0; i++)
        k = ms_archive_writer_write_eof(w, c[i].db, c[i].collection, crc[i], &e);
    if (k >= 0)
        k = ms_archive_writer_check_complete(w, &e);
    for (size_t i = 0; i < MANY_NAMESPACES; i++)
        ms_archive_collection_clear(&c[i]);
    free(c);
    free(crc);
    ASSERT_OK(k);

    size_t len;
    const uint8_t *data = ms_sink_memory_data(sink, &len);
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(data, len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    size_t n_docs = 0, n_eofs = 0;
    for (;;) {
        MsArchiveEvent ev;
        ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT)
            n_docs++;
        else
            n_eofs++;
    }
    ASSERT_EQ_INT(n_docs, MANY_NAMESPACES * 6);
    ASSERT_EQ_INT(n_eofs, MANY_NAMESPACES);
    const MsArchiveNamespaceStats *st;
    ASSERT_EQ_INT(ms_archive_reader_namespace_stats(r, &st), MANY_NAMESPACES);
    for (size_t i = 0; i < MANY_NAMESPACES; i++) {
        ASSERT_EQ_INT(st[i].documents, 6);
        ASSERT(st[i].eof_seen);
    }
}

typedef struct ThreadArg {
    MsArchiveWriter *w;
    int thread;
    uint64_t crc;
    int failed;
} ThreadArg;

static void *writer_thread(void *p) {
    ThreadArg *t = p;
    char coll[16];
    snprintf(coll, sizeof(coll), "t%d", t->thread);
    for (int s = 0; s < SEGMENTS_PER_THREAD; s++) {
        MsError e = MS_ERROR_INIT;
        int32_t ids[] = {s * 2, s * 2 + 1};
        if (write_ids(t->w, &t->crc, "threads", coll, ids, 2, &e) < 0)
            t->failed = 1;
    }
    MsError e = MS_ERROR_INIT;
    if (ms_archive_writer_write_eof(t->w, "threads", coll, t->crc, &e) < 0)
        t->failed = 1;
    return NULL;
}

static void concurrent_writers(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    MsArchiveCollection c[WRITER_THREADS];
    char names[WRITER_THREADS][16];
    for (int i = 0; i < WRITER_THREADS; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        c[i] = (MsArchiveCollection){(char *) "threads", names[i], (char *) "{}", 0, (char *) ""};
    }
    ASSERT_OK(ms_archive_writer_write_prelude(w, &sample_header, c, WRITER_THREADS, &e));
    pthread_t tids[WRITER_THREADS];
    ThreadArg args[WRITER_THREADS];
    for (int i = 0; i < WRITER_THREADS; i++) {
        args[i] = (ThreadArg){.w = w, .thread = i};
        ASSERT(pthread_create(&tids[i], NULL, writer_thread, &args[i]) == 0);
    }
    for (int i = 0; i < WRITER_THREADS; i++) {
        pthread_join(tids[i], NULL);
        ASSERT_EQ_INT(args[i].failed, 0);
    }
    ASSERT_OK(ms_archive_writer_check_complete(w, &e));

    size_t len;
    const uint8_t *data = ms_sink_memory_data(sink, &len);
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(data, len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    MsArchiveEvent ev;
    do
        ASSERT_OK(ms_archive_reader_next(r, &ev, &e));
    while (ev.kind != MS_ARCHIVE_EVENT_END);
    const MsArchiveNamespaceStats *st;
    ASSERT_EQ_INT(ms_archive_reader_namespace_stats(r, &st), WRITER_THREADS);
    for (int i = 0; i < WRITER_THREADS; i++) {
        ASSERT_EQ_INT(st[i].documents, SEGMENTS_PER_THREAD * 2);
        ASSERT(st[i].crc == args[i].crc);
    }
}

/* mongodump lists the oplog in the prelude, but an archive without that entry is accepted. */
static void oplog_outside_prelude_accepted(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    _cleanup_buf_ Buf seg = {0};
    uint64_t crc = 0;
    segment_add(&seg, &crc, 7, "op");
    buf_append_namespace_header(&a, "", "oplog", false, 0);
    buf_append(&a, seg.data, seg.len);
    buf_append_terminator(&a);
    buf_append_namespace_header(&a, "", "oplog", true, crc);
    buf_append_terminator(&a);
    char log[256];
    ASSERT_OK(read_archive(a.data, a.len, 0, log, sizeof(log), &e));
    ASSERT_STREQ(log, "d.c:1 d.c:EOF d.v:EOF oplog:7 oplog:EOF ");
}

/* ---------------- damage ---------------- */

static void unknown_namespace_rejected(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    buf_append_namespace_header(&a, "shop", "ghost", true, 0);
    buf_append_terminator(&a);
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EBADMSG);
    char expected[256];
    snprintf(expected, sizeof(expected),
             "archive is corrupted in namespace 'shop.ghost' at byte offset %d: the namespace "
             "has data but is not listed in the archive prelude",
             GOLDEN_LENGTH);
    ASSERT_STREQ(e.message, expected);
}

static void data_after_eof_rejected(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    buf_append_namespace_header(&a, "d", "c", false, 0);
    buf_append_terminator(&a);
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) < 0);
    ASSERT_CONTAINS(e.message, "namespace 'd.c'");
    ASSERT_CONTAINS(e.message, "after the namespace's end-of-namespace marker");
}

/* Same field set and types as mongorestore insists on. */
static void strict_namespace_header(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    bson_t h = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&h, "db", "d");
    BSON_APPEND_UTF8(&h, "collection", "x");
    BSON_APPEND_INT32(&h, "CRC", 0);
    buf_append(&a, bson_get_data(&h), h.len);
    bson_destroy(&h);
    buf_append_terminator(&a);
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, "field 'CRC' of a namespace header has the wrong type");

    _cleanup_buf_ Buf b = {0};
    golden(&b);
    bson_t h2 = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&h2, "db", "d");
    BSON_APPEND_UTF8(&h2, "collection", "c");
    BSON_APPEND_BOOL(&h2, "EOF", false);
    BSON_APPEND_UTF8(&h2, "extra", "x");
    buf_append(&b, bson_get_data(&h2), h2.len);
    bson_destroy(&h2);
    buf_append_terminator(&b);
    ms_error_clear(&e);
    ASSERT(read_archive(b.data, b.len, 0, NULL, 0, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, "unexpected field 'extra' in a namespace header");
}

static void truncation_at_every_offset(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    for (size_t cut = 0; cut <= a.len; cut++) {
        ms_error_clear(&e);
        int k = read_archive(a.data, cut, cut % 5, NULL, 0, &e);
        if (cut == a.len) {
            ASSERT_OK(k);
            continue;
        }
        if (k >= 0)
            fprintf(stderr, "# a prefix of %zu of %zu bytes was accepted\n", cut, a.len);
        ASSERT(k < 0);
        /* Every message says where; the empty stream says it is empty. */
        if (cut > 0)
            ASSERT_CONTAINS(e.message, "byte offset");
    }
    /* golden too: it has an empty segment */
    _cleanup_buf_ Buf g = {0};
    golden(&g);
    for (size_t cut = 0; cut < g.len; cut++)
        ASSERT(read_archive(g.data, cut, 0, NULL, 0, &e) < 0);
}

static void truncation_messages(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    SampleOffsets off;
    ASSERT_OK(sample_offsets(&a, &off));

    uint64_t cut = off.first_orders_doc + 5;
    ASSERT(read_archive(a.data, cut, 0, NULL, 0, &e) == -EPIPE);
    char expected[256];
    snprintf(expected, sizeof(expected),
             "archive is truncated at byte offset %" PRIu64
             " inside a document of namespace 'shop.orders'",
             cut);
    ASSERT_STREQ(e.message, expected);

    /* Cut right after the prelude: nothing in the prelude got its end marker. */
    ms_error_clear(&e);
    ASSERT(read_archive(a.data, off.prelude_end, 0, NULL, 0, &e) == -EPIPE);
    snprintf(expected, sizeof(expected),
             "archive ended at byte offset %" PRIu64
             " but namespace 'shop.orders' has no end-of-namespace marker (it is listed in the "
             "prelude but never appeared) (nor do 5 other namespaces)",
             off.prelude_end);
    ASSERT_STREQ(e.message, expected);

    ms_error_clear(&e);
    ASSERT(read_archive(a.data, 0, 0, NULL, 0, &e) < 0);
    ASSERT_CONTAINS(e.message, "archive is empty");
}

static void missing_eof(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, true, &e));
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EPIPE);
    char expected[256];
    snprintf(expected, sizeof(expected),
             "archive ended at byte offset %zu but namespace 'shop.users' has no "
             "end-of-namespace marker",
             a.len);
    ASSERT_STREQ(e.message, expected);
}

static void bad_magic(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    a.data[0] ^= 0x01;
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EBADMSG);
    ASSERT_STREQ(e.message, "not a mongodump archive: it starts with 0x8199e26c instead of the "
                            "magic number 0x8199e26d");

    static const uint8_t zstd[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x00, 0x00};
    ms_error_clear(&e);
    ASSERT(read_archive(zstd, sizeof(zstd), 0, NULL, 0, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, "zstd-compressed");

    static const uint8_t gzip[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00};
    ms_error_clear(&e);
    ASSERT(read_archive(gzip, sizeof(gzip), 0, NULL, 0, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, "gzip-compressed");
}

static void crc_mismatch(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    SampleOffsets off;
    ASSERT_OK(sample_offsets(&a, &off));
    /* The last bytes of {_id, v: "payload"} are the string's characters, its NUL and the
     * document's NUL: change a character, which leaves the BSON valid. */
    size_t at = off.first_orders_doc + off.first_orders_doc_len - 3;
    ASSERT_EQ_INT(a.data[at], 'd');
    a.data[at] = 'D';
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EBADMSG);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "archive is corrupted in namespace 'shop.orders' at byte offset %" PRIu64
             ": CRC-64 mismatch (archive says 0x",
             off.orders_eof);
    ASSERT_CONTAINS(e.message, expected);
    ASSERT_CONTAINS(e.message, ", data gives 0x");
}

static void invalid_bson_document(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    SampleOffsets off;
    ASSERT_OK(sample_offsets(&a, &off));
    a.data[off.first_orders_doc + 4] = 0x7f; /* first element's type byte: not a BSON type */
    ASSERT(read_archive(a.data, a.len, 0, NULL, 0, &e) == -EBADMSG);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "archive is corrupted in namespace 'shop.orders' at byte offset %" PRIu64
             ": a document of %zu bytes is not valid BSON",
             off.first_orders_doc, off.first_orders_doc_len);
    ASSERT_CONTAINS(e.message, expected);
}

/* Everything after the prelude is covered by structure checks or a CRC: no single flipped
 * bit may go unnoticed. */
static void every_bit_flip_after_prelude_detected(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    ASSERT_OK(build_sample(&a, false, &e));
    SampleOffsets off;
    ASSERT_OK(sample_offsets(&a, &off));
    for (size_t i = off.prelude_end; i < a.len; i++)
        for (int bit = 0; bit < 8; bit++) {
            a.data[i] ^= (uint8_t) (1u << bit);
            ms_error_clear(&e);
            int k = read_archive(a.data, a.len, 0, NULL, 0, &e);
            a.data[i] ^= (uint8_t) (1u << bit);
            if (k >= 0)
                fprintf(stderr, "# flipping bit %d of byte %zu went unnoticed\n", bit, i);
            ASSERT(k < 0);
            ASSERT_CONTAINS(e.message, "byte offset");
        }
}

static void errors_are_sticky(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_buf_ Buf a = {0};
    golden(&a);
    a.len -= 2;
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new(a.data, a.len);
    _cleanup_(ms_archive_reader_freep) MsArchiveReader *r = ms_archive_reader_new(src);
    MsArchiveEvent ev;
    int k;
    while ((k = ms_archive_reader_next(r, &ev, &e)) >= 0)
        ASSERT(ev.kind != MS_ARCHIVE_EVENT_END);
    char first[MS_ERROR_MESSAGE_MAX];
    snprintf(first, sizeof(first), "%s", e.message);
    MsError e2 = MS_ERROR_INIT;
    ASSERT_EQ_INT(ms_archive_reader_next(r, &ev, &e2), k);
    ASSERT_STREQ(e2.message, first);
}

/* ---------------- writer misuse ---------------- */

static void writer_rejects_misuse(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w = ms_archive_writer_new(sink);
    uint64_t crc = 0;

    ASSERT(write_ids(w, &crc, "shop", "orders", (int32_t[]){1}, 1, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "before the prelude");

    MsArchiveHeader bad = sample_header;
    bad.server_version = (char *) "unknown";
    ms_error_clear(&e);
    ASSERT(ms_archive_writer_write_prelude(w, &bad, sample_collections, 1, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "'unknown' is not of the form X.Y.Z");
    bad.server_version = (char *) "8.0.4-rc1";
    ms_error_clear(&e);
    ASSERT_OK(ms_archive_writer_write_prelude(w, &bad, sample_collections, 2, &e));
    ms_error_clear(&e);
    ASSERT(ms_archive_writer_write_prelude(w, &bad, sample_collections, 2, &e) == -EINVAL);

    ms_error_clear(&e);
    ASSERT(write_ids(w, &crc, "shop", "ghost", (int32_t[]){1}, 1, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop.ghost' is not listed in the archive prelude");

    static const uint8_t garbage[] = {0x10, 0x00, 0x00, 0x00, 0x00};
    ms_error_clear(&e);
    ASSERT(ms_archive_writer_write_segment(w, "shop", "orders", garbage, sizeof(garbage), &e) ==
           -EINVAL);
    ASSERT_CONTAINS(e.message, "not a sequence of BSON documents");

    ms_error_clear(&e);
    crc = 0; /* the refused writes above wrote nothing */
    ASSERT_OK(write_ids(w, &crc, "shop", "orders", (int32_t[]){1}, 1, &e));
    ASSERT(ms_archive_writer_namespace_crc(w, "shop", "orders") == crc);
    /* An EOF whose CRC is not the segments' would make mongorestore reject the archive. */
    ASSERT(ms_archive_writer_write_eof(w, "shop", "orders", crc ^ 1, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "is not that of the segments written");
    ms_error_clear(&e);
    ASSERT_OK(ms_archive_writer_write_eof(w, "shop", "orders", crc, &e));
    ASSERT(ms_archive_writer_write_eof(w, "shop", "orders", crc, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "already ended");
    ms_error_clear(&e);
    ASSERT(write_ids(w, &crc, "shop", "orders", (int32_t[]){2}, 1, &e) == -EINVAL);

    ms_error_clear(&e);
    ASSERT(ms_archive_writer_check_complete(w, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop.users'");

    /* Duplicates and nameless collections never reach the stream. */
    _cleanup_(ms_sink_freep) MsSink *sink2 = ms_sink_memory_new();
    _cleanup_(ms_archive_writer_freep) MsArchiveWriter *w2 = ms_archive_writer_new(sink2);
    MsArchiveCollection dup[] = {sample_collections[0], sample_collections[1],
                                 sample_collections[0]};
    ms_error_clear(&e);
    ASSERT(ms_archive_writer_write_prelude(w2, &sample_header, dup, 3, &e) == -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop.orders' is listed twice");
    MsArchiveCollection nameless = {(char *) "shop", (char *) "", NULL, 0, NULL};
    ms_error_clear(&e);
    ASSERT(ms_archive_writer_write_prelude(w2, &sample_header, &nameless, 1, &e) == -EINVAL);
    size_t len;
    ms_sink_memory_data(sink2, &len);
    ASSERT_EQ_INT(len, 0);
}

MS_TEST_MAIN(TEST_CASE(golden_bytes_from_writer), TEST_CASE(golden_bytes_read),
             TEST_CASE(round_trip), TEST_CASE(round_trip_trickled), TEST_CASE(large_document),
             TEST_CASE(many_interleaved_namespaces), TEST_CASE(concurrent_writers),
             TEST_CASE(oplog_outside_prelude_accepted), TEST_CASE(unknown_namespace_rejected),
             TEST_CASE(data_after_eof_rejected), TEST_CASE(strict_namespace_header),
             TEST_CASE(truncation_at_every_offset), TEST_CASE(truncation_messages),
             TEST_CASE(missing_eof), TEST_CASE(bad_magic), TEST_CASE(crc_mismatch),
             TEST_CASE(invalid_bson_document), TEST_CASE(every_bit_flip_after_prelude_detected),
             TEST_CASE(errors_are_sticky), TEST_CASE(writer_rejects_misuse))

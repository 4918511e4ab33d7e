/* Every BSON type, deep nesting and large arrays survive the snapshot pipeline byte for byte:
 * archive writer -> zstd/gzip -> SHA-256 -> memory, then back through the reader. FerretDB (our
 * test server) cannot store decimal128, symbols, DBPointers and friends, so this is where they
 * are proven. */
#include <bson/bson.h>

#include "archive/archive.h"
#include "archive/crc64.h"
#include "common/macro.h"
#include "io/stream.h"
#include "test.h"

#define DEEP_NESTING_LEVELS 100
#define LARGE_ARRAY_ITEMS 100000

static bson_t *every_type_document(void) {
    bson_t *d = bson_new();
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
    BSON_APPEND_DOUBLE(d, "double", -1.5e300);
    BSON_APPEND_UTF8(d, "string", "Zürich \xe2\x9c\x93 \"quoted\" \\ back");
    bson_t child;
    BSON_APPEND_DOCUMENT_BEGIN(d, "document", &child);
    BSON_APPEND_INT32(&child, "a", 1);
    bson_append_document_end(d, &child);
    BSON_APPEND_ARRAY_BEGIN(d, "array", &child);
    BSON_APPEND_INT32(&child, "0", 1);
    BSON_APPEND_UTF8(&child, "1", "two");
    bson_append_array_end(d, &child);
    const uint8_t bin[] = {0, 1, 2, 3, 0xff};
    const bson_subtype_t subtypes[] = {BSON_SUBTYPE_BINARY,
                                       BSON_SUBTYPE_FUNCTION,
                                       BSON_SUBTYPE_BINARY_DEPRECATED,
                                       BSON_SUBTYPE_UUID_DEPRECATED,
                                       BSON_SUBTYPE_MD5,
                                       BSON_SUBTYPE_ENCRYPTED,
                                       BSON_SUBTYPE_USER};
    for (size_t i = 0; i < ELEMENTSOF(subtypes); i++) {
        char key[32];
        snprintf(key, sizeof(key), "binary_%u", (unsigned) subtypes[i]);
        if (subtypes[i] == BSON_SUBTYPE_BINARY_DEPRECATED) {
            /* subtype 2 carries its own length prefix */
            const uint8_t old[] = {5, 0, 0, 0, 0, 1, 2, 3, 0xff};
            bson_append_binary(d, key, -1, subtypes[i], old, sizeof(old));
        } else
            bson_append_binary(d, key, -1, subtypes[i], bin, sizeof(bin));
    }
    const uint8_t uuid[16] = {0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x45, 0x78,
                              0x92, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78};
    bson_append_binary(d, "binary_uuid", -1, BSON_SUBTYPE_UUID, uuid, sizeof(uuid));
    bson_append_undefined(d, "undefined", -1);
    bson_append_oid(d, "oid", -1, &oid);
    bson_append_bool(d, "bool", -1, true);
    bson_append_date_time(d, "date", -1, -62135596800000LL); /* year 1 */
    bson_append_null(d, "null", -1);
    bson_append_regex(d, "regex", -1, "^a.*[b]$", "imsux");
    bson_append_dbpointer(d, "dbpointer", -1, "db.coll", &oid);
    bson_append_code(d, "code", -1, "function() { return 1; }");
    bson_append_symbol(d, "symbol", -1, "sym", -1);
    bson_t scope = BSON_INITIALIZER;
    BSON_APPEND_INT32(&scope, "x", 42);
    bson_append_code_with_scope(d, "code_w_scope", -1, "function() { return x; }", &scope);
    bson_destroy(&scope);
    bson_append_int32(d, "int32", -1, INT32_MIN);
    bson_append_timestamp(d, "timestamp", -1, 1795317571, 7);
    bson_append_int64(d, "int64", -1, INT64_MAX);
    bson_decimal128_t dec;
    bson_decimal128_from_string("-1234567890.123456789012345678901234E-6000", &dec);
    bson_append_decimal128(d, "decimal128", -1, &dec);
    bson_append_minkey(d, "minkey", -1);
    bson_append_maxkey(d, "maxkey", -1);
    BSON_APPEND_UTF8(d, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e key", "unicode key");
    return d;
}

static bson_t *deeply_nested_document(void) {
    bson_t *levels[DEEP_NESTING_LEVELS + 1];
    levels[0] = bson_new();
    BSON_APPEND_INT32(levels[0], "_id", 2);
    for (int i = 1; i <= DEEP_NESTING_LEVELS; i++)
        levels[i] = bson_new();
    BSON_APPEND_UTF8(levels[DEEP_NESTING_LEVELS], "leaf", "bottom");
    for (int i = DEEP_NESTING_LEVELS; i >= 1; i--) {
        BSON_APPEND_DOCUMENT(levels[i - 1], "n", levels[i]);
        bson_destroy(levels[i]);
    }
    return levels[0];
}

static bson_t *large_array_document(void) {
    bson_t *d = bson_new();
    BSON_APPEND_INT32(d, "_id", 3);
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(d, "items", &arr);
    for (int i = 0; i < LARGE_ARRAY_ITEMS; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", i);
        bson_append_int64(&arr, key, -1, (int64_t) i * 7919);
    }
    bson_append_array_end(d, &arr);
    return d;
}

static void round_trip_with(MsCompression c) {
    bson_t *docs[] = {every_type_document(), deeply_nested_document(), large_array_document()};
    MsError e = MS_ERROR_INIT;
    MsSink *mem = ms_sink_memory_new();
    char written_sha[MS_SHA256_HEX_LEN + 1];
    MsSink *head = ms_sink_compress_new(ms_sink_sha256_new(mem, written_sha, &e), c, 0, 0, &e);
    ASSERT(head);
    MsArchiveWriter *w = ms_archive_writer_new(head);
    MsArchiveHeader header = {1, (char *) "0.1", (char *) "7.0.2", (char *) "test"};
    MsArchiveCollection coll = {(char *) "types", (char *) "all", (char *) "{}", 0,
                                (char *) "collection"};
    ASSERT_OK(ms_archive_writer_write_prelude(w, &header, &coll, 1, &e));
    uint64_t crc = 0;
    for (size_t i = 0; i < ELEMENTSOF(docs); i++) {
        ASSERT_OK(ms_archive_writer_write_segment(w, "types", "all", bson_get_data(docs[i]),
                                                  docs[i]->len, &e));
        crc = ms_crc64_update(crc, bson_get_data(docs[i]), docs[i]->len);
    }
    ASSERT_OK(ms_archive_writer_write_eof(w, "types", "all", crc, &e));
    ASSERT_OK(ms_sink_finish(head, &e));
    ms_archive_writer_free(w);
    size_t len;
    const uint8_t *data = ms_sink_memory_data(mem, &len);

    MsSource *src = ms_source_memory_new(data, len);
    char read_sha[MS_SHA256_HEX_LEN + 1];
    MsSource *hsrc = ms_source_sha256_new(src, read_sha, &e);
    MsCompression detected;
    MsSource *dec = ms_source_decompress_auto_new(hsrc, &detected, &e);
    ASSERT(dec);
    ASSERT_EQ_INT(detected, c);
    MsArchiveReader *r = ms_archive_reader_new(dec);
    const MsArchiveHeader *h;
    const MsArchiveCollection *colls;
    size_t n;
    ASSERT_OK(ms_archive_reader_read_prelude(r, &h, &colls, &n, &e));
    size_t seen = 0;
    for (;;) {
        MsArchiveEvent ev;
        int rr = ms_archive_reader_next(r, &ev, &e);
        if (rr < 0)
            fprintf(stderr, "# %s\n", e.message);
        ASSERT_OK(rr);
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        if (ev.kind != MS_ARCHIVE_EVENT_DOCUMENT)
            continue;
        ASSERT(seen < ELEMENTSOF(docs));
        ASSERT_EQ_INT(ev.len, docs[seen]->len);
        ASSERT(memcmp(ev.data, bson_get_data(docs[seen]), ev.len) == 0);
        seen++;
    }
    ASSERT_EQ_INT(seen, ELEMENTSOF(docs));
    ASSERT_STREQ(read_sha, written_sha);
    ms_archive_reader_free(r);
    ms_source_free(dec);
    ms_sink_free(head);
    for (size_t i = 0; i < ELEMENTSOF(docs); i++)
        bson_destroy(docs[i]);
}

static void every_type_zstd(void) {
    round_trip_with(MS_COMPRESSION_ZSTD);
}

static void every_type_gzip(void) {
    round_trip_with(MS_COMPRESSION_GZIP);
}

static void every_type_none(void) {
    round_trip_with(MS_COMPRESSION_NONE);
}

/* The types appear in the canonical extended JSON the metadata uses, and parse back equal. */
static void every_type_survives_extended_json(void) {
    bson_t *d = every_type_document();
    char *json = bson_as_canonical_extended_json(d, NULL);
    ASSERT(json);
    bson_error_t err;
    bson_t *back = bson_new_from_json((const uint8_t *) json, -1, &err);
    ASSERT(back);
    ASSERT_EQ_INT(back->len, d->len);
    ASSERT(memcmp(bson_get_data(back), bson_get_data(d), d->len) == 0);
    bson_destroy(back);
    bson_free(json);
    bson_destroy(d);
}

MS_TEST_MAIN(TEST_CASE(every_type_zstd), TEST_CASE(every_type_gzip), TEST_CASE(every_type_none),
             TEST_CASE(every_type_survives_extended_json))

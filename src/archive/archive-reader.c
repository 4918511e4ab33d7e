/* mongodump archive reader: a pull parser checking framing, BSON, namespaces and CRCs. */
#include "archive.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bson-check.h"
#include "crc64.h"

/* First size of the read buffer; it grows to the largest document met (at most
 * MS_BSON_MAX_DOCUMENT_SIZE) and is reused for the whole archive. */
#define READ_BUFFER_INITIAL_SIZE (1024 * 1024)
#define BSON_MIN_DOCUMENT_SIZE 5
#define LENGTH_WORD_SIZE 4
#define NAMESPACE_NAME_MAX 512
#define TIMESERIES_BUCKET_PREFIX "system.buckets."
#define TIMESERIES_TYPE "timeseries"
/* First bytes of the compressed formats people are likely to feed us by mistake. */
#define ZSTD_MAGIC 0xfd2fb528U
#define GZIP_MAGIC_0 0x1f
#define GZIP_MAGIC_1 0x8b

typedef enum ReaderNamespaceState {
    NAMESPACE_ANNOUNCED, /* listed in the prelude, not seen in the data yet */
    NAMESPACE_OPEN,      /* a namespace header was seen */
    NAMESPACE_CLOSED,    /* its EOF header was seen and the CRC matched */
} ReaderNamespaceState;

typedef struct ReaderNamespace {
    char *db;
    char *collection;      /* as the prelude lists it */
    char *data_collection; /* the name the data uses when it differs (time-series buckets) */
    bool timeseries;
    ReaderNamespaceState state;
} ReaderNamespace;

typedef enum ReaderState {
    READER_START,          /* prelude not read yet */
    READER_BETWEEN_BLOCKS, /* next comes a namespace header or the end of the archive */
    READER_IN_SEGMENT,     /* next comes a document or the segment's terminator */
    READER_END,
    READER_FAILED,
} ReaderState;

typedef enum ItemKind {
    ITEM_DOCUMENT,
    ITEM_TERMINATOR,
    ITEM_END, /* clean end of the stream before the first byte of an item */
} ItemKind;

typedef struct Item {
    ItemKind kind;
    const uint8_t *data; /* DOCUMENT: valid until the next read */
    uint32_t len;
    uint64_t offset;
} Item;

struct MsArchiveReader {
    MsSource *in;
    ReaderState state;

    /* Unconsumed bytes are buf[pos, end); offset is the archive offset of buf[pos]. */
    uint8_t *buf;
    size_t cap, pos, end;
    bool source_eof;
    uint64_t offset;

    MsArchiveHeader header;
    MsArchiveCollection *collections;
    size_t n_collections;

    /* ns[i] and stats[i] describe the same namespace; sorted[] orders their indexes by
     * (db, collection) for binary search, and cached remembers the last hit because a header
     * usually names one of the few collections being dumped concurrently. */
    ReaderNamespace *ns;
    MsArchiveNamespaceStats *stats;
    size_t *sorted;
    size_t n_ns, cap_ns;
    size_t cached;
    size_t current; /* namespace of the segment being read */

    MsError failure; /* what stopped the reader, repeated on every later call */
};

/* ---------------- small helpers ---------------- */

static void format_namespace(char buf[NAMESPACE_NAME_MAX], const char *db, const char *collection) {
    /* The oplog lives in db "": show it as "oplog", not ".oplog". */
    snprintf(buf, NAMESPACE_NAME_MAX, "%s%s%s", db, *db ? "." : "", collection);
}

static const char *namespace_data_collection(const ReaderNamespace *ns) {
    return ns->data_collection ? ns->data_collection : ns->collection;
}

static void format_reader_namespace(char buf[NAMESPACE_NAME_MAX], const ReaderNamespace *ns) {
    format_namespace(buf, ns->db, namespace_data_collection(ns));
}

/* Record the failure so later calls repeat it, and report it through e. */
_printf_(4, 0) static int reader_failv(MsArchiveReader *r, MsError *e, int code, const char *fmt,
                                       va_list ap) {
    ms_error_clear(&r->failure);
    ms_error_setv(&r->failure, code, fmt, ap);
    r->state = READER_FAILED;
    return ms_error_set(e, r->failure.code, "%s", r->failure.message);
}

_printf_(4, 5) static int reader_fail(MsArchiveReader *r, MsError *e, int code, const char *fmt,
                                      ...) {
    va_list ap;
    va_start(ap, fmt);
    int ret = reader_failv(r, e, code, fmt, ap);
    va_end(ap);
    return ret;
}

/* Damage at a known place: "archive is corrupted in namespace 'x' at byte offset N: detail". */
_printf_(5, 6) static int reader_corrupt(MsArchiveReader *r, MsError *e, const char *ns_name,
                                         uint64_t at, const char *fmt, ...) {
    char detail[MS_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (ns_name)
        return reader_fail(r, e, EBADMSG,
                           "archive is corrupted in namespace '%s' at byte offset %" PRIu64 ": %s",
                           ns_name, at, detail);
    return reader_fail(r, e, EBADMSG, "archive is corrupted at byte offset %" PRIu64 ": %s", at,
                       detail);
}

/* "what" says what was being read ("a document", "the archive prelude", ...). */
static int reader_truncated(MsArchiveReader *r, MsError *e, const char *ns_name, const char *what) {
    uint64_t at = r->offset + (r->end - r->pos);
    if (ns_name)
        return reader_fail(r, e, EPIPE,
                           "archive is truncated at byte offset %" PRIu64
                           " inside %s of namespace '%s'",
                           at, what, ns_name);
    return reader_fail(r, e, EPIPE, "archive is truncated at byte offset %" PRIu64 " inside %s",
                       at, what);
}

/* The source already described its failure (I/O, decompression); say where we were. */
static int reader_source_failed(MsArchiveReader *r, MsError *e, int code) {
    if (ms_error_is_set(e)) {
        ms_error_prefix(e, "reading the archive at byte offset %" PRIu64 ": ", r->offset);
        ms_error_clear(&r->failure);
        ms_error_set(&r->failure, e->code, "%s", e->message);
        r->state = READER_FAILED;
        return -e->code;
    }
    return reader_fail(r, e, code, "reading the archive at byte offset %" PRIu64 " failed: %s",
                       r->offset, strerror(code < 0 ? -code : code));
}

/* Make n bytes available at buf + pos unless the stream ends first. */
static int reader_fill(MsArchiveReader *r, size_t n, MsError *e) {
    if (r->end - r->pos >= n || r->source_eof)
        return 0;
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->end -= r->pos;
        r->pos = 0;
    }
    if (r->cap < n || !r->buf) {
        size_t cap = MS_MAX(MS_MAX(n, r->cap * 2), (size_t) READ_BUFFER_INITIAL_SIZE);
        cap = MS_MIN(cap, MS_MAX(n, (size_t) MS_BSON_MAX_DOCUMENT_SIZE));
        uint8_t *b = realloc(r->buf, cap);
        if (!b)
            return reader_fail(r, e, ENOMEM, "out of memory for a %zu byte read buffer", cap);
        r->buf = b;
        r->cap = cap;
    }
    while (r->end < n) {
        ssize_t k = ms_source_read(r->in, r->buf + r->end, r->cap - r->end, e);
        if (k < 0)
            return reader_source_failed(r, e, (int) k);
        if (k == 0) {
            r->source_eof = true;
            break;
        }
        r->end += (size_t) k;
    }
    return 0;
}

static void reader_consume(MsArchiveReader *r, size_t n) {
    r->pos += n;
    r->offset += n;
}

static uint32_t load_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

/* The name for messages, formatted only when one is needed: not on the per-document path. */
static const char *item_namespace_name(char buf[NAMESPACE_NAME_MAX], const ReaderNamespace *ns) {
    if (!ns)
        return NULL;
    format_reader_namespace(buf, ns);
    return buf;
}

/* Next length word and, when it is not a terminator, the whole validated BSON document.
 * ns (may be NULL) is the namespace being read, for messages. */
static int read_item(MsArchiveReader *r, const ReaderNamespace *ns, const char *what, Item *item,
                     MsError *e) {
    char name[NAMESPACE_NAME_MAX];
    item->offset = r->offset;
    item->data = NULL;
    item->len = 0;
    int k = reader_fill(r, LENGTH_WORD_SIZE, e);
    if (k < 0)
        return k;
    size_t avail = r->end - r->pos;
    if (avail == 0) {
        item->kind = ITEM_END;
        return 0;
    }
    if (avail < LENGTH_WORD_SIZE)
        return reader_truncated(r, e, item_namespace_name(name, ns), what);

    uint32_t word = load_le32(r->buf + r->pos);
    if (word == MS_ARCHIVE_TERMINATOR) {
        reader_consume(r, LENGTH_WORD_SIZE);
        item->kind = ITEM_TERMINATOR;
        return 0;
    }
    if (word < BSON_MIN_DOCUMENT_SIZE || word > MS_BSON_MAX_DOCUMENT_SIZE)
        return reader_corrupt(r, e, item_namespace_name(name, ns), item->offset,
                              "0x%08" PRIx32 " is neither a BSON document length nor a terminator "
                              "(while reading %s)",
                              word, what);

    k = reader_fill(r, word, e);
    if (k < 0)
        return k;
    if (r->end - r->pos < word)
        return reader_truncated(r, e, item_namespace_name(name, ns), what);

    const uint8_t *data = r->buf + r->pos;
    bson_t doc;
    size_t err_offset = 0;
    /* bson_init_static checks the trailing zero; bson_validate walks every element, nested ones
     * too, so a damaged document fails here rather than in whoever consumes it. The fast check
     * settles the common documents first (a quarter of a restore's CPU went to bson_validate's
     * UTF-8 check of every key); whatever it does not vouch for, bson_validate decides. */
    if (!bson_init_static(&doc, data, word))
        return reader_corrupt(r, e, item_namespace_name(name, ns), item->offset,
                              "%s of %" PRIu32 " bytes does not end with a zero byte", what, word);
    if (!ms_bson_check_fast(data, word) && !bson_validate(&doc, BSON_VALIDATE_NONE, &err_offset))
        return reader_corrupt(r, e, item_namespace_name(name, ns), item->offset,
                              "%s of %" PRIu32
                              " bytes is not valid BSON (damage near its byte %zu)",
                              what, word, err_offset);
    reader_consume(r, word);
    item->kind = ITEM_DOCUMENT;
    item->data = data;
    item->len = word;
    return 0;
}

/* ---------------- namespace table ---------------- */

static int namespace_compare(const char *db_a, const char *coll_a, const char *db_b,
                             const char *coll_b) {
    int c = strcmp(db_a, db_b);
    return c != 0 ? c : strcmp(coll_a, coll_b);
}

/* Index into sorted[] of the first entry not below (db, collection). */
static size_t sorted_lower_bound(MsArchiveReader *r, const char *db, const char *collection) {
    size_t lo = 0, hi = r->n_ns;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ReaderNamespace *ns = &r->ns[r->sorted[mid]];
        if (namespace_compare(ns->db, ns->collection, db, collection) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool find_exact(MsArchiveReader *r, const char *db, const char *collection, size_t *ret) {
    size_t i = sorted_lower_bound(r, db, collection);
    if (i < r->n_ns) {
        const ReaderNamespace *ns = &r->ns[r->sorted[i]];
        if (namespace_compare(ns->db, ns->collection, db, collection) == 0) {
            *ret = r->sorted[i];
            return true;
        }
    }
    return false;
}

/* The namespace a header names: an exact prelude entry, or for pre-8.3 time-series data
 * "system.buckets.X" when the prelude lists X as a time-series collection. */
static bool find_namespace(MsArchiveReader *r, const char *db, const char *collection,
                           size_t *ret) {
    if (r->cached < r->n_ns) {
        const ReaderNamespace *ns = &r->ns[r->cached];
        if (strcmp(ns->db, db) == 0 && strcmp(namespace_data_collection(ns), collection) == 0) {
            *ret = r->cached;
            return true;
        }
    }
    size_t idx;
    bool found = find_exact(r, db, collection, &idx);
    size_t plen = strlen(TIMESERIES_BUCKET_PREFIX);
    if (!found && strncmp(collection, TIMESERIES_BUCKET_PREFIX, plen) == 0)
        found = find_exact(r, db, collection + plen, &idx) && r->ns[idx].timeseries;
    if (found)
        *ret = r->cached = idx;
    return found;
}

static int add_namespace(MsArchiveReader *r, const char *db, const char *collection,
                         bool timeseries, MsError *e) {
    size_t idx;
    /* mongorestore keys namespaces by name, so a repeated prelude entry is one namespace. */
    if (find_exact(r, db, collection, &idx))
        return 0;
    if (r->n_ns == r->cap_ns) {
        size_t cap = MS_MAX(r->cap_ns * 2, (size_t) 16);
        ReaderNamespace *ns = realloc(r->ns, cap * sizeof(*ns));
        if (!ns)
            return reader_fail(r, e, ENOMEM, "out of memory");
        r->ns = ns;
        MsArchiveNamespaceStats *stats = realloc(r->stats, cap * sizeof(*stats));
        if (!stats)
            return reader_fail(r, e, ENOMEM, "out of memory");
        r->stats = stats;
        size_t *sorted = realloc(r->sorted, cap * sizeof(*sorted));
        if (!sorted)
            return reader_fail(r, e, ENOMEM, "out of memory");
        r->sorted = sorted;
        r->cap_ns = cap;
    }
    ReaderNamespace *ns = &r->ns[r->n_ns];
    *ns = (ReaderNamespace){
        .db = strdup(db),
        .collection = strdup(collection),
        .timeseries = timeseries,
        .state = NAMESPACE_ANNOUNCED,
    };
    if (!ns->db || !ns->collection) {
        free(ns->db);
        free(ns->collection);
        return reader_fail(r, e, ENOMEM, "out of memory");
    }
    r->stats[r->n_ns] = (MsArchiveNamespaceStats){.db = ns->db, .collection = ns->collection};
    size_t at = sorted_lower_bound(r, db, collection);
    memmove(r->sorted + at + 1, r->sorted + at, (r->n_ns - at) * sizeof(*r->sorted));
    r->sorted[at] = r->n_ns;
    r->n_ns++;
    return 0;
}

/* ---------------- lifetime ---------------- */

MsArchiveReader *ms_archive_reader_new(MsSource *in) {
    if (!in)
        return NULL;
    MsArchiveReader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->in = in;
    r->state = READER_START;
    r->cached = SIZE_MAX;
    return r;
}

void ms_archive_header_clear(MsArchiveHeader *h) {
    if (!h)
        return;
    free(h->version);
    free(h->server_version);
    free(h->tool_version);
    *h = (MsArchiveHeader){0};
}

void ms_archive_collection_clear(MsArchiveCollection *c) {
    if (!c)
        return;
    free(c->db);
    free(c->collection);
    free(c->metadata_json);
    free(c->type);
    *c = (MsArchiveCollection){0};
}

MsArchiveReader *ms_archive_reader_free(MsArchiveReader *r) {
    if (!r)
        return NULL;
    free(r->buf);
    ms_archive_header_clear(&r->header);
    for (size_t i = 0; i < r->n_collections; i++)
        ms_archive_collection_clear(&r->collections[i]);
    free(r->collections);
    for (size_t i = 0; i < r->n_ns; i++) {
        free(r->ns[i].db);
        free(r->ns[i].collection);
        free(r->ns[i].data_collection);
    }
    free(r->ns);
    free(r->stats);
    free(r->sorted);
    free(r);
    return NULL;
}

/* ---------------- prelude ---------------- */

/* A string field as Go's decoder takes it into a string: UTF-8 or null (""). A string with an
 * embedded NUL cannot be a database or collection name, so it counts as damage. */
static bool iter_dup_string(const bson_iter_t *it, char **ret) {
    const char *s = "";
    uint32_t len = 0;
    if (BSON_ITER_HOLDS_UTF8(it)) {
        s = bson_iter_utf8(it, &len);
        if (strlen(s) != len)
            return false;
    } else if (!BSON_ITER_HOLDS_NULL(it)) {
        return false;
    }
    char *copy = strdup(s);
    if (!copy)
        return false;
    free(*ret);
    *ret = copy;
    return true;
}

/* An integer field as Go's decoder takes it: int32, int64 or an integral double. */
static bool iter_get_integer(const bson_iter_t *it, int64_t *ret) {
    if (BSON_ITER_HOLDS_INT32(it)) {
        *ret = bson_iter_int32(it);
        return true;
    }
    if (BSON_ITER_HOLDS_INT64(it)) {
        *ret = bson_iter_int64(it);
        return true;
    }
    if (BSON_ITER_HOLDS_DOUBLE(it)) {
        double d = bson_iter_double(it);
        if (d != floor(d) || d < (double) INT64_MIN || d >= (double) INT64_MAX)
            return false;
        *ret = (int64_t) d;
        return true;
    }
    return false;
}

static int32_t saturate_int32(int64_t v) {
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t) v;
}

static bool ensure_string(char **s) {
    if (!*s)
        *s = strdup("");
    return *s != NULL;
}

static int parse_header(MsArchiveReader *r, const Item *item, MsError *e) {
    bson_t doc;
    bson_iter_t it;
    bson_init_static(&doc, item->data, item->len);
    bson_iter_init(&it, &doc);
    MsArchiveHeader *h = &r->header;
    /* Like mongorestore: unknown fields are ignored, known ones must have the right type. */
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        bool ok = true;
        if (strcmp(key, "concurrent_collections") == 0) {
            int64_t v;
            ok = iter_get_integer(&it, &v) && v >= INT32_MIN && v <= INT32_MAX;
            if (ok)
                h->concurrent_collections = (int32_t) v;
        } else if (strcmp(key, "version") == 0) {
            ok = iter_dup_string(&it, &h->version);
        } else if (strcmp(key, "server_version") == 0) {
            ok = iter_dup_string(&it, &h->server_version);
        } else if (strcmp(key, "tool_version") == 0) {
            ok = iter_dup_string(&it, &h->tool_version);
        }
        if (!ok)
            return reader_corrupt(r, e, NULL, item->offset,
                                  "field '%s' of the archive header has the wrong type", key);
    }
    if (!ensure_string(&h->version) || !ensure_string(&h->server_version) ||
        !ensure_string(&h->tool_version))
        return reader_fail(r, e, ENOMEM, "out of memory");
    return 0;
}

static int parse_collection_metadata(MsArchiveReader *r, const Item *item, MsError *e) {
    if (r->n_collections % 64 == 0) {
        MsArchiveCollection *c =
            realloc(r->collections, (r->n_collections + 64) * sizeof(*r->collections));
        if (!c)
            return reader_fail(r, e, ENOMEM, "out of memory");
        r->collections = c;
    }
    MsArchiveCollection *c = &r->collections[r->n_collections++];
    *c = (MsArchiveCollection){0};

    bson_t doc;
    bson_iter_t it;
    bson_init_static(&doc, item->data, item->len);
    bson_iter_init(&it, &doc);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        bool ok = true;
        if (strcmp(key, "db") == 0) {
            ok = iter_dup_string(&it, &c->db);
        } else if (strcmp(key, "collection") == 0) {
            ok = iter_dup_string(&it, &c->collection);
        } else if (strcmp(key, "metadata") == 0) {
            ok = iter_dup_string(&it, &c->metadata_json);
        } else if (strcmp(key, "type") == 0) {
            ok = iter_dup_string(&it, &c->type);
        } else if (strcmp(key, "size") == 0) {
            /* Informational only (mongodump leaves it 0): clamp rather than reject. */
            int64_t v;
            ok = iter_get_integer(&it, &v);
            if (ok)
                c->size = saturate_int32(v);
        }
        if (!ok)
            return reader_corrupt(r, e, NULL, item->offset,
                                  "field '%s' of a collection's metadata in the archive prelude "
                                  "has the wrong type",
                                  key);
    }
    if (!ensure_string(&c->db) || !ensure_string(&c->collection) ||
        !ensure_string(&c->metadata_json) || !ensure_string(&c->type))
        return reader_fail(r, e, ENOMEM, "out of memory");
    if (!c->collection[0])
        return reader_corrupt(r, e, NULL, item->offset,
                              "a collection in the archive prelude (database '%s') has no name",
                              c->db);
    return add_namespace(r, c->db, c->collection, strcmp(c->type, TIMESERIES_TYPE) == 0, e);
}

static int read_magic(MsArchiveReader *r, MsError *e) {
    int k = reader_fill(r, LENGTH_WORD_SIZE, e);
    if (k < 0)
        return k;
    size_t avail = r->end - r->pos;
    if (avail == 0)
        return reader_fail(r, e, EBADMSG,
                           "archive is empty (0 bytes): expected a mongodump archive");
    if (avail < LENGTH_WORD_SIZE)
        return reader_truncated(r, e, NULL, "the magic number");
    const uint8_t *p = r->buf + r->pos;
    uint32_t magic = load_le32(p);
    if (magic == MS_ARCHIVE_MAGIC) {
        reader_consume(r, LENGTH_WORD_SIZE);
        return 0;
    }
    const char *hint = "";
    if (magic == ZSTD_MAGIC)
        hint = "; it is zstd-compressed and must be decompressed first";
    else if (p[0] == GZIP_MAGIC_0 && p[1] == GZIP_MAGIC_1)
        hint = "; it is gzip-compressed and must be decompressed first (mongodump --gzip)";
    return reader_fail(r, e, EBADMSG,
                       "not a mongodump archive: it starts with 0x%08" PRIx32
                       " instead of the magic number 0x%08x%s",
                       magic, MS_ARCHIVE_MAGIC, hint);
}

static void return_prelude(MsArchiveReader *r, const MsArchiveHeader **ret_header,
                           const MsArchiveCollection **ret_collections, size_t *ret_n) {
    if (ret_header)
        *ret_header = &r->header;
    if (ret_collections)
        *ret_collections = r->collections;
    if (ret_n)
        *ret_n = r->n_collections;
}

int ms_archive_reader_read_prelude(MsArchiveReader *r, const MsArchiveHeader **ret_header,
                                   const MsArchiveCollection **ret_collections, size_t *ret_n,
                                   MsError *e) {
    if (!r)
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_reader_read_prelude()");
    if (r->state == READER_FAILED)
        return ms_error_set(e, r->failure.code, "%s", r->failure.message);
    if (r->state != READER_START) {
        return_prelude(r, ret_header, ret_collections, ret_n);
        return 0;
    }

    int k = read_magic(r, e);
    if (k < 0)
        return k;

    Item item;
    k = read_item(r, NULL, "the archive header", &item, e);
    if (k < 0)
        return k;
    if (item.kind == ITEM_END)
        return reader_truncated(r, e, NULL, "the archive prelude (no header document)");
    if (item.kind == ITEM_TERMINATOR)
        return reader_corrupt(r, e, NULL, item.offset,
                              "the archive prelude has no header document");
    k = parse_header(r, &item, e);
    if (k < 0)
        return k;

    for (;;) {
        k = read_item(r, NULL, "the archive prelude", &item, e);
        if (k < 0)
            return k;
        if (item.kind == ITEM_END)
            return reader_truncated(r, e, NULL, "the archive prelude");
        if (item.kind == ITEM_TERMINATOR)
            break;
        k = parse_collection_metadata(r, &item, e);
        if (k < 0)
            return k;
    }

    r->state = READER_BETWEEN_BLOCKS;
    return_prelude(r, ret_header, ret_collections, ret_n);
    return 0;
}

/* ---------------- namespace blocks ---------------- */

typedef struct NamespaceHeader {
    const char *db; /* point into the header document */
    const char *collection;
    bool eof;
    uint64_t crc;
} NamespaceHeader;

/* Strict like mongorestore's NamespaceHeader.UnmarshalBSON: exactly these fields and types. */
static int parse_namespace_header(MsArchiveReader *r, const Item *item, NamespaceHeader *h,
                                  MsError *e) {
    *h = (NamespaceHeader){.db = "", .collection = ""};
    bson_t doc;
    bson_iter_t it;
    bson_init_static(&doc, item->data, item->len);
    bson_iter_init(&it, &doc);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        bool ok;
        if (strcmp(key, "db") == 0 || strcmp(key, "collection") == 0) {
            uint32_t len = 0;
            const char *s = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, &len) : NULL;
            ok = s && strlen(s) == len;
            if (ok && key[0] == 'd')
                h->db = s;
            else if (ok)
                h->collection = s;
        } else if (strcmp(key, "EOF") == 0) {
            ok = BSON_ITER_HOLDS_BOOL(&it);
            if (ok)
                h->eof = bson_iter_bool(&it);
        } else if (strcmp(key, "CRC") == 0) {
            ok = BSON_ITER_HOLDS_INT64(&it);
            if (ok) {
                int64_t bits = bson_iter_int64(&it);
                memcpy(&h->crc, &bits, sizeof(h->crc)); /* Go stores the uint64's raw bits */
            }
        } else {
            return reader_corrupt(r, e, NULL, item->offset,
                                  "unexpected field '%s' in a namespace header", key);
        }
        if (!ok)
            return reader_corrupt(r, e, NULL, item->offset,
                                  "field '%s' of a namespace header has the wrong type", key);
    }
    if (!h->collection[0])
        return reader_corrupt(r, e, NULL, item->offset,
                              "a namespace header (database '%s') has no collection name", h->db);
    /* mongorestore ignores it, but mongodump always writes 0 here: anything else is damage. */
    if (!h->eof && h->crc != 0)
        return reader_corrupt(r, e, NULL, item->offset,
                              "a namespace header that does not end its namespace has CRC "
                              "0x%016" PRIx64 " instead of 0",
                              h->crc);
    return 0;
}

/* Resolve a header's namespace; ret_idx indexes ns[] and stats[]. */
static int resolve_namespace(MsArchiveReader *r, const Item *item, const NamespaceHeader *h,
                             size_t *ret_idx, MsError *e) {
    char name[NAMESPACE_NAME_MAX];
    size_t idx;
    if (!find_namespace(r, h->db, h->collection, &idx)) {
        /* mongodump lists the oplog in the prelude too, but tolerate archives that do not;
         * any other stranger means the archive is not what its prelude says. */
        format_namespace(name, h->db, h->collection);
        if (!ms_archive_is_oplog(h->db, h->collection))
            return reader_corrupt(r, e, name, item->offset,
                                  "the namespace has data but is not listed in the archive "
                                  "prelude");
        int k = add_namespace(r, h->db, h->collection, false, e);
        if (k < 0)
            return k;
        if (!find_namespace(r, h->db, h->collection, &idx))
            return reader_fail(r, e, EIO, "internal error: namespace '%s' vanished", name);
    }

    ReaderNamespace *ns = &r->ns[idx];
    if (strcmp(ns->collection, h->collection) != 0 && !ns->data_collection) {
        ns->data_collection = strdup(h->collection);
        if (!ns->data_collection)
            return reader_fail(r, e, ENOMEM, "out of memory");
        r->stats[idx].collection = ns->data_collection;
    }
    if (ns->state == NAMESPACE_CLOSED) {
        format_reader_namespace(name, ns);
        return reader_corrupt(r, e, name, item->offset,
                              "%s after the namespace's end-of-namespace marker",
                              h->eof ? "a second end-of-namespace marker" : "more data");
    }
    *ret_idx = idx;
    return 0;
}

static int handle_eof(MsArchiveReader *r, const Item *header_item, const NamespaceHeader *h,
                      size_t idx, MsArchiveEvent *ev, MsError *e) {
    char name[NAMESPACE_NAME_MAX];
    ReaderNamespace *ns = &r->ns[idx];
    MsArchiveNamespaceStats *st = &r->stats[idx];
    format_reader_namespace(name, ns);
    if (st->crc != h->crc)
        return reader_corrupt(r, e, name, header_item->offset,
                              "CRC-64 mismatch (archive says 0x%016" PRIx64
                              ", data gives 0x%016" PRIx64 ")",
                              h->crc, st->crc);

    /* An EOF block has no body: the terminator must follow at once. */
    Item item;
    int k = read_item(r, ns, "the end-of-namespace marker", &item, e);
    if (k < 0)
        return k;
    if (item.kind == ITEM_END)
        return reader_truncated(r, e, name, "the end-of-namespace marker");
    if (item.kind == ITEM_DOCUMENT)
        return reader_corrupt(r, e, name, item.offset,
                              "a document follows the end-of-namespace marker");

    ns->state = NAMESPACE_CLOSED;
    st->eof_seen = true;
    *ev = (MsArchiveEvent){
        .kind = MS_ARCHIVE_EVENT_NAMESPACE_EOF,
        .db = ns->db,
        .collection = st->collection,
        .offset = header_item->offset,
    };
    return 0;
}

/* The stream ended between blocks: fine only if every namespace got its end marker. */
static int handle_end(MsArchiveReader *r, MsArchiveEvent *ev, MsError *e) {
    size_t missing = 0, first = 0;
    for (size_t i = 0; i < r->n_ns; i++)
        if (r->ns[i].state != NAMESPACE_CLOSED && missing++ == 0)
            first = i;
    if (missing > 0) {
        char name[NAMESPACE_NAME_MAX], more[64] = "";
        format_reader_namespace(name, &r->ns[first]);
        if (missing > 1)
            snprintf(more, sizeof(more), " (nor do %zu other namespaces)", missing - 1);
        return reader_fail(r, e, EPIPE,
                           "archive ended at byte offset %" PRIu64
                           " but namespace '%s' has no end-of-namespace marker%s%s",
                           r->offset, name,
                           r->ns[first].state == NAMESPACE_ANNOUNCED
                               ? " (it is listed in the prelude but never appeared)"
                               : "",
                           more);
    }
    r->state = READER_END;
    *ev = (MsArchiveEvent){.kind = MS_ARCHIVE_EVENT_END, .offset = r->offset};
    return 0;
}

int ms_archive_reader_next(MsArchiveReader *r, MsArchiveEvent *ev, MsError *e) {
    if (!r || !ev)
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_reader_next()");
    if (r->state == READER_START) {
        int k = ms_archive_reader_read_prelude(r, NULL, NULL, NULL, e);
        if (k < 0)
            return k;
    }

    for (;;) {
        Item item;
        int k;
        switch (r->state) {
        case READER_FAILED:
            return ms_error_set(e, r->failure.code, "%s", r->failure.message);

        case READER_END:
            *ev = (MsArchiveEvent){.kind = MS_ARCHIVE_EVENT_END, .offset = r->offset};
            return 0;

        case READER_IN_SEGMENT: {
            char name[NAMESPACE_NAME_MAX];
            ReaderNamespace *ns = &r->ns[r->current];
            MsArchiveNamespaceStats *st = &r->stats[r->current];
            k = read_item(r, ns, "a document", &item, e);
            if (k < 0)
                return k;
            if (item.kind == ITEM_END)
                return reader_fail(r, e, EPIPE,
                                   "archive is truncated at byte offset %" PRIu64
                                   " inside a segment of namespace '%s' (no terminator)",
                                   r->offset, item_namespace_name(name, ns));
            if (item.kind == ITEM_TERMINATOR) {
                r->state = READER_BETWEEN_BLOCKS;
                continue;
            }
            st->documents++;
            st->bytes += item.len;
            st->crc = ms_crc64_update(st->crc, item.data, item.len);
            *ev = (MsArchiveEvent){
                .kind = MS_ARCHIVE_EVENT_DOCUMENT,
                .db = ns->db,
                .collection = st->collection,
                .data = item.data,
                .len = item.len,
                .offset = item.offset,
            };
            return 0;
        }

        case READER_BETWEEN_BLOCKS: {
            k = read_item(r, NULL, "a namespace header", &item, e);
            if (k < 0)
                return k;
            if (item.kind == ITEM_END)
                return handle_end(r, ev, e);
            if (item.kind == ITEM_TERMINATOR)
                return reader_corrupt(r, e, NULL, item.offset,
                                      "a terminator where a namespace header should be");
            NamespaceHeader h;
            k = parse_namespace_header(r, &item, &h, e);
            if (k < 0)
                return k;
            size_t idx = 0;
            k = resolve_namespace(r, &item, &h, &idx, e);
            if (k < 0)
                return k;
            if (h.eof)
                return handle_eof(r, &item, &h, idx, ev, e);
            r->ns[idx].state = NAMESPACE_OPEN;
            r->current = idx;
            r->state = READER_IN_SEGMENT;
            continue;
        }

        case READER_START:
        default:
            return reader_fail(r, e, EIO, "internal error: archive reader in state %d", r->state);
        }
    }
}

size_t ms_archive_reader_namespace_stats(MsArchiveReader *r, const MsArchiveNamespaceStats **ret) {
    if (ret)
        *ret = r ? r->stats : NULL;
    return r ? r->n_ns : 0;
}

uint64_t ms_archive_reader_offset(MsArchiveReader *r) {
    return r ? r->offset : 0;
}

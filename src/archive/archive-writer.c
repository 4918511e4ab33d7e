/* mongodump archive writer: prelude, namespace segments and end-of-namespace markers, one mutex. */
#include "archive.h"

#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crc64.h"

/* mongo-tools' parser (db.MaxBSONSize) refuses any document longer than this, so writing one
 * would produce an archive that stock mongorestore cannot read. */
#define MONGORESTORE_MAX_DOCUMENT_SIZE (16 * 1024 * 1024)
#define BSON_MIN_DOCUMENT_SIZE 5
/* Before MongoDB 8.3 a time-series collection's data lives in (and is dumped from) its buckets
 * collection, while the prelude lists the collection itself. */
#define TIMESERIES_BUCKET_PREFIX "system.buckets."
#define TIMESERIES_TYPE "timeseries"

typedef enum WriterNamespaceState {
    NAMESPACE_ANNOUNCED, /* listed in the prelude, nothing written yet */
    NAMESPACE_OPEN,      /* at least one segment written */
    NAMESPACE_CLOSED,    /* EOF written: mongorestore rejects anything after it */
} WriterNamespaceState;

typedef struct WriterNamespace {
    char *db;
    char *collection;
    bool timeseries;
    WriterNamespaceState state;
    /* The CRC-64 of the namespace's documents in the order their segments reached the archive
     * (segments from several threads chained with ms_crc64_combine): what its EOF must carry. */
    uint64_t crc;
} WriterNamespace;

struct MsArchiveWriter {
    pthread_mutex_t lock;
    MsSink *out;
    bool prelude_written;
    /* A write failed part-way: the stream now ends in the middle of something, so every later
     * write would only produce garbage. */
    bool broken;
    WriterNamespace *namespaces; /* sorted by (db, collection) for bsearch */
    size_t n_namespaces;
};

static void mutex_unlockp(pthread_mutex_t **m) {
    if (*m)
        pthread_mutex_unlock(*m);
}

static pthread_mutex_t *writer_lock(MsArchiveWriter *w) {
    pthread_mutex_lock(&w->lock);
    return &w->lock;
}

MsArchiveWriter *ms_archive_writer_new(MsSink *out) {
    if (!out)
        return NULL;
    MsArchiveWriter *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        free(w);
        return NULL;
    }
    w->out = out;
    return w;
}

MsArchiveWriter *ms_archive_writer_free(MsArchiveWriter *w) {
    if (!w)
        return NULL;
    for (size_t i = 0; i < w->n_namespaces; i++) {
        free(w->namespaces[i].db);
        free(w->namespaces[i].collection);
    }
    free(w->namespaces);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return NULL;
}

static int namespace_compare(const char *db_a, const char *coll_a, const char *db_b,
                             const char *coll_b) {
    int c = strcmp(db_a, db_b);
    return c != 0 ? c : strcmp(coll_a, coll_b);
}

static int writer_namespace_qsort_cmp(const void *a, const void *b) {
    const WriterNamespace *x = a, *y = b;
    return namespace_compare(x->db, x->collection, y->db, y->collection);
}

static WriterNamespace *find_exact(MsArchiveWriter *w, const char *db, const char *collection) {
    size_t lo = 0, hi = w->n_namespaces;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = namespace_compare(db, collection, w->namespaces[mid].db,
                                  w->namespaces[mid].collection);
        if (c == 0)
            return &w->namespaces[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static WriterNamespace *find_namespace(MsArchiveWriter *w, const char *db, const char *collection) {
    WriterNamespace *ns = find_exact(w, db, collection);
    if (ns)
        return ns;
    size_t plen = strlen(TIMESERIES_BUCKET_PREFIX);
    if (strncmp(collection, TIMESERIES_BUCKET_PREFIX, plen) == 0) {
        ns = find_exact(w, db, collection + plen);
        if (ns && ns->timeseries)
            return ns;
    }
    return NULL;
}

/* mongorestore parses server_version with db.StrToVersion ("X.Y.Z" after dropping any "-..." or
 * "+..." suffix) and refuses to list the archive's contents when that fails. */
static bool server_version_is_parsable(const char *v) {
    size_t end = strcspn(v, "-+");
    int parts = 0;
    size_t i = 0;
    for (;;) {
        size_t digits = 0;
        while (i < end && isdigit((unsigned char) v[i])) {
            i++;
            digits++;
        }
        if (digits == 0)
            return false;
        parts++;
        if (i == end)
            return parts == 3;
        if (v[i] != '.' || parts == 3)
            return false;
        i++;
    }
}

static const char *str_or_empty(const char *s) {
    return s ? s : "";
}

static void namespace_format(char *buf, size_t size, const char *db, const char *collection) {
    snprintf(buf, size, "%s%s%s", db, *db ? "." : "", collection);
}

/* All output goes through here so that one failure marks the archive as unusable. */
static int writer_emit(MsArchiveWriter *w, const void *buf, size_t len, MsError *e) {
    int r = ms_sink_write(w->out, buf, len, e);
    if (r < 0) {
        w->broken = true;
        ms_error_prefix(e, "writing the archive: ");
    }
    return r;
}

static int writer_emit_terminator(MsArchiveWriter *w, MsError *e) {
    static const uint8_t terminator[4] = {0xff, 0xff, 0xff, 0xff};
    return writer_emit(w, terminator, sizeof(terminator), e);
}

static int writer_emit_bson(MsArchiveWriter *w, const bson_t *doc, MsError *e) {
    return writer_emit(w, bson_get_data(doc), doc->len, e);
}

static int writer_check_usable(MsArchiveWriter *w, MsError *e) {
    if (w->broken)
        return ms_error_set(e, EIO,
                            "an earlier write to this archive failed, so it is incomplete and "
                            "cannot be continued; start the dump again");
    if (!w->prelude_written)
        return ms_error_set(e, EINVAL,
                            "archive data written before the prelude (internal error: call "
                            "ms_archive_writer_write_prelude() first)");
    return 0;
}

/* The namespace header and the EOF header are the same document; mongorestore rejects any other
 * field, and insists on CRC being an int64. */
static int build_namespace_header(bson_t *doc, const char *db, const char *collection, bool eof,
                                  uint64_t crc, MsError *e) {
    /* BSON has no unsigned 64-bit type; Go stores the raw bits of the uint64, as this cast does. */
    int64_t crc_bits;
    memcpy(&crc_bits, &crc, sizeof(crc_bits));
    if (!BSON_APPEND_UTF8(doc, "db", db) || !BSON_APPEND_UTF8(doc, "collection", collection) ||
        !BSON_APPEND_BOOL(doc, "EOF", eof) || !BSON_APPEND_INT64(doc, "CRC", crc_bits))
        return ms_error_set(e, EOVERFLOW, "namespace header for '%s.%s' is too large", db,
                            collection);
    return 0;
}

static int write_namespace_header(MsArchiveWriter *w, const char *db, const char *collection,
                                  bool eof, uint64_t crc, MsError *e) {
    bson_t doc = BSON_INITIALIZER;
    int r = build_namespace_header(&doc, db, collection, eof, crc, e);
    if (r >= 0)
        r = writer_emit_bson(w, &doc, e);
    bson_destroy(&doc);
    return r;
}

static int check_prelude_document(const bson_t *doc, const char *what, MsError *e) {
    if (doc->len > MONGORESTORE_MAX_DOCUMENT_SIZE)
        return ms_error_set(e, EOVERFLOW,
                            "%s is %" PRIu32 " bytes, more than the %d bytes mongorestore accepts",
                            what, doc->len, MONGORESTORE_MAX_DOCUMENT_SIZE);
    return 0;
}

int ms_archive_writer_write_prelude(MsArchiveWriter *w, const MsArchiveHeader *header,
                                    const MsArchiveCollection *collections, size_t n_collections,
                                    MsError *e) {
    if (!w || !header || (n_collections > 0 && !collections))
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_writer_write_prelude()");

    _cleanup_(mutex_unlockp) _unused_ pthread_mutex_t *locked = writer_lock(w);
    if (w->broken)
        return writer_check_usable(w, e);
    if (w->prelude_written)
        return ms_error_set(e, EINVAL, "the archive prelude was already written (internal error)");

    const char *server_version = str_or_empty(header->server_version);
    if (!server_version_is_parsable(server_version))
        return ms_error_set(e, EINVAL,
                            "server version '%s' is not of the form X.Y.Z; mongorestore --archive "
                            "refuses archives whose header it cannot parse",
                            server_version);

    /* Index the namespaces first so that a bad list fails before anything is written. */
    WriterNamespace *namespaces = calloc(MS_MAX(n_collections, (size_t) 1), sizeof(*namespaces));
    if (!namespaces)
        return ms_error_set(e, ENOMEM, "out of memory");
    size_t n = 0;
    int r = 0;
    for (size_t i = 0; i < n_collections; i++) {
        const MsArchiveCollection *c = &collections[i];
        if (!c->collection || !c->collection[0]) {
            r = ms_error_set(e, EINVAL,
                             "collection %zu of database '%s' in the archive prelude has no "
                             "name; mongorestore rejects nameless collections",
                             i, str_or_empty(c->db));
            goto fail;
        }
        namespaces[n].db = strdup(str_or_empty(c->db));
        namespaces[n].collection = strdup(c->collection);
        namespaces[n].timeseries = c->type && strcmp(c->type, TIMESERIES_TYPE) == 0;
        n++;
        if (!namespaces[n - 1].db || !namespaces[n - 1].collection) {
            r = ms_error_set(e, ENOMEM, "out of memory");
            goto fail;
        }
    }
    qsort(namespaces, n, sizeof(*namespaces), writer_namespace_qsort_cmp);
    for (size_t i = 1; i < n; i++)
        if (writer_namespace_qsort_cmp(&namespaces[i - 1], &namespaces[i]) == 0) {
            char name[512];
            namespace_format(name, sizeof(name), namespaces[i].db, namespaces[i].collection);
            r = ms_error_set(e, EINVAL, "namespace '%s' is listed twice in the archive prelude",
                             name);
            goto fail;
        }
    w->namespaces = namespaces;
    w->n_namespaces = n;
    namespaces = NULL;

    uint32_t magic = htole32(MS_ARCHIVE_MAGIC);
    r = writer_emit(w, &magic, sizeof(magic), e);
    if (r < 0)
        return r;

    /* Field order and types as mongodump's Header struct marshals them. */
    bson_t doc = BSON_INITIALIZER;
    if (!BSON_APPEND_INT32(&doc, "concurrent_collections", header->concurrent_collections) ||
        !BSON_APPEND_UTF8(&doc, "version",
                          header->version ? header->version : MS_ARCHIVE_FORMAT_VERSION) ||
        !BSON_APPEND_UTF8(&doc, "server_version", server_version) ||
        !BSON_APPEND_UTF8(&doc, "tool_version", str_or_empty(header->tool_version)))
        r = ms_error_set(e, EOVERFLOW, "archive header is too large");
    if (r >= 0)
        r = check_prelude_document(&doc, "the archive header", e);
    if (r >= 0)
        r = writer_emit_bson(w, &doc, e);
    bson_destroy(&doc);
    if (r < 0) {
        w->broken = true;
        return r;
    }

    for (size_t i = 0; i < n_collections; i++) {
        const MsArchiveCollection *c = &collections[i];
        /* As mongodump's CollectionMetadata struct: size is a Go int, which marshals as int32. */
        bson_init(&doc);
        if (!BSON_APPEND_UTF8(&doc, "db", str_or_empty(c->db)) ||
            !BSON_APPEND_UTF8(&doc, "collection", c->collection) ||
            !BSON_APPEND_UTF8(&doc, "metadata", str_or_empty(c->metadata_json)) ||
            !BSON_APPEND_INT32(&doc, "size", c->size) ||
            !BSON_APPEND_UTF8(&doc, "type", str_or_empty(c->type)))
            r = ms_error_set(e, EOVERFLOW, "metadata of '%s.%s' is too large for BSON",
                             str_or_empty(c->db), c->collection);
        if (r >= 0) {
            char what[600];
            snprintf(what, sizeof(what), "the metadata of '%s.%s'", str_or_empty(c->db),
                     c->collection);
            r = check_prelude_document(&doc, what, e);
        }
        if (r >= 0)
            r = writer_emit_bson(w, &doc, e);
        bson_destroy(&doc);
        if (r < 0) {
            w->broken = true;
            return r;
        }
    }

    r = writer_emit_terminator(w, e);
    if (r < 0)
        return r;
    w->prelude_written = true;
    return 0;

fail:
    for (size_t i = 0; i < n; i++) {
        free(namespaces[i].db);
        free(namespaces[i].collection);
    }
    free(namespaces);
    return r;
}

static int lookup_for_write(MsArchiveWriter *w, const char *db, const char *collection,
                            WriterNamespace **ret, MsError *e) {
    char name[512];
    namespace_format(name, sizeof(name), db, collection);
    WriterNamespace *ns = find_namespace(w, db, collection);
    if (!ns)
        return ms_error_set(e, EINVAL,
                            "namespace '%s' is not listed in the archive prelude; mongorestore "
                            "would reject the archive (internal error)",
                            name);
    if (ns->state == NAMESPACE_CLOSED)
        return ms_error_set(e, EINVAL,
                            "namespace '%s' was already ended in the archive; mongorestore "
                            "rejects data after its end-of-namespace marker (internal error)",
                            name);
    *ret = ns;
    return 0;
}

/* Check that docs is a plain concatenation of BSON documents: only the framing, because the
 * documents come straight from the server and the CRC protects their bytes. */
static int check_document_framing(const char *db, const char *collection, const uint8_t *docs,
                                  size_t len, MsError *e) {
    size_t pos = 0;
    while (pos < len) {
        char name[512];
        uint32_t doc_len = 0;
        if (len - pos >= sizeof(doc_len)) {
            memcpy(&doc_len, docs + pos, sizeof(doc_len));
            doc_len = le32toh(doc_len);
        }
        if (len - pos < sizeof(doc_len) || doc_len < BSON_MIN_DOCUMENT_SIZE ||
            doc_len > len - pos || docs[pos + doc_len - 1] != 0) {
            namespace_format(name, sizeof(name), db, collection);
            return ms_error_set(e, EINVAL,
                                "segment data for '%s' is not a sequence of BSON documents "
                                "(bad document at byte %zu of %zu; internal error)",
                                name, pos, len);
        }
        if (doc_len > MONGORESTORE_MAX_DOCUMENT_SIZE) {
            namespace_format(name, sizeof(name), db, collection);
            return ms_error_set(e, EOVERFLOW,
                                "a document of %" PRIu32 " bytes in '%s' exceeds the %d bytes "
                                "mongorestore --archive can read",
                                doc_len, name, MONGORESTORE_MAX_DOCUMENT_SIZE);
        }
        pos += doc_len;
    }
    return 0;
}

int ms_archive_writer_write_segment_crc(MsArchiveWriter *w, const char *db,
                                        const char *collection, const uint8_t *docs, size_t len,
                                        uint64_t crc, MsError *e) {
    if (!w || !collection || (len > 0 && !docs))
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_writer_write_segment()");
    db = str_or_empty(db);

    int r = check_document_framing(db, collection, docs, len, e);
    if (r < 0)
        return r;

    _cleanup_(mutex_unlockp) _unused_ pthread_mutex_t *locked = writer_lock(w);
    r = writer_check_usable(w, e);
    if (r < 0)
        return r;
    WriterNamespace *ns;
    r = lookup_for_write(w, db, collection, &ns, e);
    if (r < 0)
        return r;

    r = write_namespace_header(w, db, collection, false, 0, e);
    if (r >= 0)
        r = writer_emit(w, docs, len, e);
    if (r >= 0)
        r = writer_emit_terminator(w, e);
    if (r < 0)
        return r;
    ns->crc = ms_crc64_combine(ns->crc, crc, len);
    ns->state = NAMESPACE_OPEN;
    return 0;
}

int ms_archive_writer_write_segment(MsArchiveWriter *w, const char *db, const char *collection,
                                    const uint8_t *docs, size_t len, MsError *e) {
    return ms_archive_writer_write_segment_crc(w, db, collection, docs, len,
                                               ms_crc64_update(0, docs, len), e);
}

uint64_t ms_archive_writer_namespace_crc(MsArchiveWriter *w, const char *db,
                                         const char *collection) {
    _cleanup_(mutex_unlockp) _unused_ pthread_mutex_t *locked = writer_lock(w);
    const WriterNamespace *ns = find_namespace(w, str_or_empty(db), collection);
    return ns ? ns->crc : 0;
}

int ms_archive_writer_write_eof(MsArchiveWriter *w, const char *db, const char *collection,
                                uint64_t crc, MsError *e) {
    if (!w || !collection)
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_writer_write_eof()");
    db = str_or_empty(db);

    _cleanup_(mutex_unlockp) _unused_ pthread_mutex_t *locked = writer_lock(w);
    int r = writer_check_usable(w, e);
    if (r < 0)
        return r;
    WriterNamespace *ns;
    r = lookup_for_write(w, db, collection, &ns, e);
    if (r < 0)
        return r;
    if (crc != ns->crc) {
        char name[512];
        namespace_format(name, sizeof(name), db, collection);
        return ms_error_set(e, EINVAL,
                            "namespace '%s': the end-of-namespace CRC-64 0x%016" PRIx64
                            " is not that of the segments written (0x%016" PRIx64
                            "); mongorestore would reject the archive (internal error)",
                            name, crc, ns->crc);
    }

    /* mongodump opens every namespace with a (possibly empty) segment before its EOF, views and
     * empty collections included; write the same bytes so restores see what they expect. */
    if (ns->state == NAMESPACE_ANNOUNCED) {
        r = write_namespace_header(w, db, collection, false, 0, e);
        if (r >= 0)
            r = writer_emit_terminator(w, e);
        if (r < 0)
            return r;
    }
    r = write_namespace_header(w, db, collection, true, crc, e);
    if (r >= 0)
        r = writer_emit_terminator(w, e);
    if (r < 0)
        return r;
    ns->state = NAMESPACE_CLOSED;
    return 0;
}

int ms_archive_writer_check_complete(MsArchiveWriter *w, MsError *e) {
    if (!w)
        return ms_error_set(e, EINVAL, "invalid arguments to ms_archive_writer_check_complete()");
    _cleanup_(mutex_unlockp) _unused_ pthread_mutex_t *locked = writer_lock(w);
    int r = writer_check_usable(w, e);
    if (r < 0)
        return r;
    size_t missing = 0;
    const WriterNamespace *first = NULL;
    for (size_t i = 0; i < w->n_namespaces; i++)
        if (w->namespaces[i].state != NAMESPACE_CLOSED) {
            missing++;
            if (!first)
                first = &w->namespaces[i];
        }
    if (missing > 0) {
        char name[512];
        namespace_format(name, sizeof(name), first->db, first->collection);
        return ms_error_set(e, EINVAL,
                            "namespace '%s'%s of the archive prelude has no end-of-namespace "
                            "marker; mongorestore would reject the archive (internal error)",
                            name, missing > 1 ? " and others" : "");
    }
    return 0;
}

/* ---------------- one namespace as a stream ---------------- */

int ms_archive_ns_stream_init(MsArchiveNsStream *ss, MsArchiveWriter *w, const char *db,
                              const char *collection, size_t segment_bytes, MsError *e) {
    *ss = (MsArchiveNsStream){
        .writer = w, .db = db, .collection = collection, .segment_bytes = segment_bytes};
    /* Room for a full segment plus one maximal document that overflows it. */
    ss->buf = malloc(segment_bytes + MS_BSON_MAX_DOCUMENT_SIZE);
    return ss->buf ? 0 : ms_error_set(e, ENOMEM, "out of memory");
}

int ms_archive_ns_stream_flush(MsArchiveNsStream *ss, MsError *e) {
    if (ss->used == 0)
        return 0;
    int r = ms_archive_writer_write_segment_crc(ss->writer, ss->db, ss->collection, ss->buf,
                                                ss->used, ss->segment_crc, e);
    ss->crc = ms_crc64_combine(ss->crc, ss->segment_crc, ss->used);
    ss->segment_crc = 0;
    ss->used = 0;
    return r;
}

int ms_archive_ns_stream_add(MsArchiveNsStream *ss, const uint8_t *doc, size_t len, MsError *e) {
    if (len > MS_BSON_MAX_DOCUMENT_SIZE)
        return ms_error_set(e, EMSGSIZE, "a document of %zu bytes is larger than BSON allows",
                            len);
    memcpy(ss->buf + ss->used, doc, len);
    ss->used += len;
    ss->segment_crc = ms_crc64_update(ss->segment_crc, doc, len);
    ss->bytes += len;
    ss->documents++;
    return ss->used >= ss->segment_bytes ? ms_archive_ns_stream_flush(ss, e) : 0;
}

int ms_archive_ns_stream_finish(MsArchiveNsStream *ss, MsError *e) {
    int r = ms_archive_ns_stream_flush(ss, e);
    return r < 0 ? r : ms_archive_writer_write_eof(ss->writer, ss->db, ss->collection, ss->crc, e);
}

void ms_archive_ns_stream_clear(MsArchiveNsStream *ss) {
    free(ss->buf);
    ss->buf = NULL;
}

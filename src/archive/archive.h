/* The mongodump archive format ("mongodump --archive", spec in mongo-tools common/archive/spec.md):
 *
 *   magic 0x8199e26d | header doc | collection-metadata doc* | 0xffffffff |
 *   ( namespace-header doc | document+ | 0xffffffff  |  eof-header doc | 0xffffffff )*
 *
 * Namespaces may interleave, so several collections can be dumped at once. Each namespace
 * ends with an EOF header carrying the CRC-64/ECMA of all its documents. The oplog captured
 * during a dump is the namespace db "" collection "oplog". */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <string.h>
#include <stdint.h>

#include "common/error.h"
#include "io/stream.h"

#define MS_ARCHIVE_MAGIC 0x8199e26dU
#define MS_ARCHIVE_TERMINATOR 0xffffffffU
#define MS_ARCHIVE_FORMAT_VERSION "0.1"
#define MS_ARCHIVE_OPLOG_DB ""
#define MS_ARCHIVE_OPLOG_COLLECTION "oplog"

/* Is db.collection the archive's oplog namespace (not a collection's)? */
static inline bool ms_archive_is_oplog(const char *db, const char *collection) {
    return strcmp(db, MS_ARCHIVE_OPLOG_DB) == 0 &&
           strcmp(collection, MS_ARCHIVE_OPLOG_COLLECTION) == 0;
}

/* BSON's own document size limit (16 MiB) plus the server's headroom for internal fields. */
#define MS_BSON_MAX_DOCUMENT_SIZE (16 * 1024 * 1024 + 16 * 1024)

typedef struct MsArchiveHeader {
    int32_t concurrent_collections;
    char *version;
    char *server_version;
    char *tool_version;
} MsArchiveHeader;

typedef struct MsArchiveCollection {
    char *db;
    char *collection;
    char *metadata_json; /* canonical extended JSON: {options, indexes, uuid, collectionName, type} */
    int32_t size;        /* uncompressed bytes of the collection's documents (informational) */
    char *type;          /* "", "view" or "timeseries" */
} MsArchiveCollection;

/* ---------------- writing ---------------- */
typedef struct MsArchiveWriter MsArchiveWriter;

/* The writer does not own out; it serialises calls with a mutex, so collection workers
 * in several threads may write their segments to one writer. */
MsArchiveWriter *ms_archive_writer_new(MsSink *out);
MsArchiveWriter *ms_archive_writer_free(MsArchiveWriter *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsArchiveWriter *, ms_archive_writer_free);

/* Magic, header, all collection metadata and the prelude terminator, in one call. */
int ms_archive_writer_write_prelude(MsArchiveWriter *w, const MsArchiveHeader *header,
                                    const MsArchiveCollection *collections, size_t n_collections,
                                    MsError *e);
/* One namespace segment: header, the concatenated BSON documents in docs[0..len), terminator.
 * The writer chains the segments' CRC-64s per namespace in the order they reach the archive
 * (ms_archive_writer_namespace_crc). _crc: the caller passes the CRC of docs it computed
 * outside the writer's lock. */
int ms_archive_writer_write_segment(MsArchiveWriter *w, const char *db, const char *collection,
                                    const uint8_t *docs, size_t len, MsError *e);
int ms_archive_writer_write_segment_crc(MsArchiveWriter *w, const char *db,
                                        const char *collection, const uint8_t *docs, size_t len,
                                        uint64_t crc, MsError *e);
/* The CRC-64 of what was written of a namespace so far, in archive order: for a namespace
 * that several threads write at once (a collection split by _id ranges). */
uint64_t ms_archive_writer_namespace_crc(MsArchiveWriter *w, const char *db,
                                         const char *collection);
/* The end of a namespace: EOF header with its CRC and the terminator. Every namespace in the
 * prelude (views and empty collections too) gets one; mongorestore waits for them. A crc that
 * is not the one of the segments written is refused (an internal error: mongorestore would
 * reject the archive). */
int ms_archive_writer_write_eof(MsArchiveWriter *w, const char *db, const char *collection,
                                uint64_t crc, MsError *e);
/* After the last EOF: fails, naming the namespace, if a prelude namespace never got its EOF
 * (mongorestore would stop with "archive finished before all collections were seen"). */
int ms_archive_writer_check_complete(MsArchiveWriter *w, MsError *e);

/* One namespace written as a stream of documents: buffered into segments of about
 * segment_bytes, with the count, size and CRC-64 its end-of-namespace block needs. Not
 * thread-safe itself (one stream per thread); the writer serialises the segments. */
typedef struct MsArchiveNsStream {
    MsArchiveWriter *writer;
    const char *db;
    const char *collection;
    size_t segment_bytes;
    uint8_t *buf;
    size_t used;
    uint64_t documents;
    uint64_t bytes;
    uint64_t crc;         /* of this stream's documents, in the order it added them */
    uint64_t segment_crc; /* of the segment being filled */
} MsArchiveNsStream;

int ms_archive_ns_stream_init(MsArchiveNsStream *ss, MsArchiveWriter *w, const char *db,
                              const char *collection, size_t segment_bytes, MsError *e);
/* One BSON document (at most MS_BSON_MAX_DOCUMENT_SIZE bytes). */
int ms_archive_ns_stream_add(MsArchiveNsStream *ss, const uint8_t *doc, size_t len, MsError *e);
/* Write the documents buffered so far as a segment (the namespace stays open). */
int ms_archive_ns_stream_flush(MsArchiveNsStream *ss, MsError *e);
/* Flush what is left and close the namespace with its CRC. */
int ms_archive_ns_stream_finish(MsArchiveNsStream *ss, MsError *e);
void ms_archive_ns_stream_clear(MsArchiveNsStream *ss);

/* ---------------- reading ---------------- */
typedef struct MsArchiveReader MsArchiveReader;

typedef enum MsArchiveEventKind {
    MS_ARCHIVE_EVENT_DOCUMENT,      /* one document of a namespace */
    MS_ARCHIVE_EVENT_NAMESPACE_EOF, /* a namespace ended and its CRC matched */
    MS_ARCHIVE_EVENT_END,           /* clean end of the archive */
} MsArchiveEventKind;

typedef struct MsArchiveEvent {
    MsArchiveEventKind kind;
    const char *db;         /* valid until the next call */
    const char *collection; /* valid until the next call */
    const uint8_t *data;    /* DOCUMENT: the raw BSON, valid until the next call */
    size_t len;
    uint64_t offset; /* byte offset of this item in the uncompressed archive */
} MsArchiveEvent;

/* The reader does not own in. */
MsArchiveReader *ms_archive_reader_new(MsSource *in);
MsArchiveReader *ms_archive_reader_free(MsArchiveReader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsArchiveReader *, ms_archive_reader_free);

/* Read magic, header and collection metadata. The arrays stay owned by the reader. */
int ms_archive_reader_read_prelude(MsArchiveReader *r, const MsArchiveHeader **ret_header,
                                   const MsArchiveCollection **ret_collections, size_t *ret_n,
                                   MsError *e);
/* Next event. Structural damage, a truncated stream, an invalid BSON document, a CRC
 * mismatch or a namespace left without its EOF all fail with a message naming the
 * namespace (when known) and the byte offset. */
int ms_archive_reader_next(MsArchiveReader *r, MsArchiveEvent *ret_event, MsError *e);
/* Per-namespace tallies, available after END. */
typedef struct MsArchiveNamespaceStats {
    const char *db;
    const char *collection;
    uint64_t documents;
    uint64_t bytes;
    uint64_t crc;
    bool eof_seen;
} MsArchiveNamespaceStats;
size_t ms_archive_reader_namespace_stats(MsArchiveReader *r, const MsArchiveNamespaceStats **ret);
uint64_t ms_archive_reader_offset(MsArchiveReader *r);

void ms_archive_header_clear(MsArchiveHeader *h);
void ms_archive_collection_clear(MsArchiveCollection *c);

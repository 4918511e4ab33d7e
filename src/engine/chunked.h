/* Chunked snapshots: the archive stream stored as content-defined chunks, each once.
 *
 * A chunked snapshot is the same mongodump archive byte stream as a plain one, cut by
 * content-defined chunking (io/cdc.h) into chunks of about 16 KiB. Each chunk is compressed on
 * its own (zstd), sealed when the policy has a key (io/filter-encrypt), and stored once under
 * its content address in the policy's chunk area:
 *
 *     _chunks/<prefix>/<id[0:2]>/<id>        id: SHA-256 of the chunk's bytes, or with a key
 *                                            HMAC-SHA256 under a key derived from it, so that
 *                                            ids say nothing about the plaintext
 *     _chunks/<prefix>/locks/...             the garbage collector's and snapshots' markers
 *     <prefix>/<name>.index                  the chunk ids and lengths in order (zstd, sealed
 *                                            with the key), the snapshot's "archive" object
 *     <prefix>/<name>.manifest.json          as for every snapshot; archive.format "chunked"
 *
 * The chunk area is outside the prefix (listing a policy's snapshots never walks its chunks)
 * under a name no policy can have (policy names begin with a letter or digit).
 *
 * Order of commits: every chunk the index names, then (after one ms_storage_sync) the index,
 * then the manifest. Reading checks every chunk's length and id against its bytes.
 *
 * Garbage collection and snapshots exclude each other through markers in the store, each side
 * writing its own marker before looking for the other's (docs/architecture.md, "Chunked
 * snapshots: garbage collection"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "io/filter-encrypt.h"
#include "io/stream.h"
#include "mongosnap/mongosnap.h"
#include "storage/storage.h"

#define MS_CHUNK_ID_BYTES 32
#define MS_CHUNK_ID_HEX (2 * MS_CHUNK_ID_BYTES)
#define MS_CHUNK_DEFAULT_AVG (16u * 1024u)
#define MS_CHUNKED_INDEX_SUFFIX MONGOSNAP_INDEX_SUFFIX
#define MS_CHUNK_AREA_ROOT "_chunks"

typedef struct MsChunkEntry {
    uint8_t id[MS_CHUNK_ID_BYTES];
    uint32_t len; /* plaintext bytes */
} MsChunkEntry;

typedef struct MsChunkIndex {
    MsChunkEntry *entries;
    size_t n;
    uint64_t total; /* sum of len: the archive's size */
} MsChunkIndex;

void ms_chunk_index_clear(MsChunkIndex *idx);

/* "_chunks/<prefix>" (or "_chunks"); the key of a chunk in it. */
char *ms_chunk_area(const char *prefix);
void ms_chunk_key(const char *area, const uint8_t id[MS_CHUNK_ID_BYTES], char *buf, size_t size);
/* Whether a key in the area is a chunk (and its id), not a marker or a stray object. */
bool ms_chunk_key_parse(const char *area, const char *key, uint8_t ret_id[MS_CHUNK_ID_BYTES]);

/* A chunk's id: SHA-256, or with key HMAC-SHA256 under HMAC-SHA256(key, "mongosnap chunk id"). */
typedef struct MsChunkIdKey {
    bool keyed;
    uint8_t k[32];
} MsChunkIdKey;
void ms_chunk_id_key_init(MsChunkIdKey *k, const MsEncryptKey *key);
void ms_chunk_id(const MsChunkIdKey *k, const void *buf, size_t len, uint8_t ret[MS_CHUNK_ID_BYTES]);

/* A set of chunk ids (open addressing). */
typedef struct MsChunkSet MsChunkSet;
MsChunkSet *ms_chunk_set_new(void);
MsChunkSet *ms_chunk_set_free(MsChunkSet *s);
/* true if it was not there */
bool ms_chunk_set_add(MsChunkSet *s, const uint8_t id[MS_CHUNK_ID_BYTES]);
bool ms_chunk_set_has(const MsChunkSet *s, const uint8_t id[MS_CHUNK_ID_BYTES]);
size_t ms_chunk_set_size(const MsChunkSet *s);

/* The index object: read (checked) and written. */
int ms_chunk_index_read(MsStorage *st, const char *key, const MsEncryptKey *enc_key,
                        MsChunkIndex *ret, uint64_t *ret_stored, char ret_sha256[65], MsError *e);

typedef struct MsChunkedSpec {
    MsStorage *storage;
    const char *area;
    const char *index_key;
    size_t avg; /* 0: MS_CHUNK_DEFAULT_AVG */
    int level;  /* zstd level, 0: default */
    const MsEncryptKey *key;
    unsigned threads; /* chunk workers (hash, compress, seal, store); 0: 4 */
    const MsChunkSet *known; /* chunks committed snapshots name: not stored again */
    /* Called about every keepalive_usec from a thread of the sink while it is open (the
     * snapshot's marker, engine/chunk-area.h); a failure fails the snapshot. */
    int (*keepalive)(void *userdata, MsError *e);
    void *keepalive_userdata;
    uint64_t keepalive_usec;
} MsChunkedSpec;

typedef struct MsChunkedResults {
    uint64_t raw_bytes;
    uint64_t chunks;        /* in the index */
    uint64_t chunks_stored; /* written by this snapshot */
    uint64_t stored_bytes;  /* of those, as stored */
    uint64_t index_bytes;   /* the index object as stored */
    char index_sha256[65];
} MsChunkedResults;

/* The write side: a sink taking the archive stream. finish() stores the last chunks, syncs
 * the store and commits the index; results are then complete. */
int ms_chunked_sink_new(const MsChunkedSpec *spec, MsChunkedResults *results, MsSink **ret,
                        MsError *e);

/* The read side: the archive stream from an index, window chunks fetched ahead (0: 4). Every
 * chunk's length and id are checked; a missing or damaged chunk fails the read naming it. */
int ms_chunked_source_new(MsStorage *st, const char *area, const MsChunkIndex *idx,
                          const MsEncryptKey *key, unsigned window, MsSource **ret, MsError *e);

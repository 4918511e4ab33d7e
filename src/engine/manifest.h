/* The snapshot manifest: what a snapshot holds and the checksums that prove it, stored beside
 * the archive as <name>.manifest.json. It carries no secrets: the source URI is redacted. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "common/error.h"
#include "io/stream.h"
#include "mongosnap/mongosnap.h"
#include <string.h>

typedef struct MsManifestNamespace {
    char *db;
    char *collection;
    char *type; /* "collection", "view", "timeseries" */
    uint64_t documents;
    uint64_t bytes;
    uint64_t crc64;
    uint32_t indexes;
} MsManifestNamespace;

typedef struct MsOplogPosition {
    uint32_t t; /* seconds */
    uint32_t i; /* ordinal within the second */
} MsOplogPosition;

/* Is a later than b in the oplog? */
static inline bool ms_oplog_position_after(MsOplogPosition a, MsOplogPosition b) {
    return a.t > b.t || (a.t == b.t && a.i > b.i);
}

typedef struct MsManifest {
    /* NULL for a snapshot; MONGOSNAP_MANIFEST_KIND_SLICE for an oplog slice, whose oplog_start
     * and oplog_end bound the entries it holds: (start, end]. */
    char *kind;
    char *snapshot;     /* the snapshot's name */
    char *tool_version; /* mongosnap version that wrote it */
    char *started_at;   /* ISO 8601 UTC */
    char *finished_at;
    uint64_t elapsed_usec;
    char *source_uri; /* redacted */
    char *server_version;
    char *node; /* the agent's Node= ("" when taken by hand, not by an agent) */
    char *host; /* the host name of the machine that took it */
    /* What the agent knew of it when it started: the policy's start order (seq) and what
     * started it (origin). Absent from snapshots taken by hand and from manifests of earlier
     * versions (0/NULL). Resync adopts snapshots with them. */
    uint64_t seq;
    char *origin;

    char *archive_key;
    /* NULL: the archive is one object (a mongodump archive). MS_MANIFEST_FORMAT_CHUNKED: the
     * archive stream is stored as chunks in the policy's chunk area and archive_key names the
     * index of them (engine/chunked.h); archive_size/sha256 are then the index object's. */
    char *archive_format;
    uint64_t chunks;              /* in the index */
    uint64_t chunks_stored;       /* new chunks this snapshot stored */
    uint64_t chunks_stored_bytes; /* their stored size: what the snapshot added to the store */
    uint32_t chunk_avg;           /* the chunking's average size */
    char *compression; /* "zstd", "gzip", "none" */
    uint64_t archive_size; /* stored bytes */
    char archive_sha256[MS_SHA256_HEX_LEN + 1];
    uint64_t uncompressed_size;

    /* Client-side encryption of the stored object (src/io/filter-encrypt.c); NULL cipher: the
     * object is not encrypted. No secret: the key id is a hash prefix that names the key. */
    char *encryption_cipher; /* "aes-256-gcm" */
    char encryption_key_id[16 + 1];
    uint64_t encryption_chunk_size;

    bool point_in_time; /* oplog captured: a restore ends at oplog_end */
    char *point_in_time_reason; /* why not, when not */
    MsOplogPosition oplog_start;
    MsOplogPosition oplog_end;
    uint64_t oplog_entries;

    /* The snapshot's --ns-include/--ns-exclude patterns. Either non-empty: the snapshot is
     * partial, it holds (and its oplog carries) only the namespaces they select. */
    char **ns_include;
    size_t n_ns_include;
    char **ns_exclude;
    size_t n_ns_exclude;

    MsManifestNamespace *namespaces;
    size_t n_namespaces;
    uint64_t total_documents;
    uint64_t total_bytes;
} MsManifest;

#define MS_MANIFEST_FORMAT_CHUNKED "chunked"

static inline bool ms_manifest_is_chunked(const MsManifest *m) {
    return m->archive_format && strcmp(m->archive_format, MS_MANIFEST_FORMAT_CHUNKED) == 0;
}

static inline bool ms_manifest_is_slice(const MsManifest *m) {
    return m->kind && strcmp(m->kind, MONGOSNAP_MANIFEST_KIND_SLICE) == 0;
}

/* JSON text with a self-checksum over the whole text (field "manifest_sha256"). */
int ms_manifest_serialize(const MsManifest *m, char **ret_json, size_t *ret_len, MsError *e);
/* Parse and check the self-checksum: a changed byte anywhere is reported as corruption. */
int ms_manifest_parse(const char *json, size_t len, MsManifest *ret, MsError *e);
/* The self-checksum every manifest-like JSON file carries (manifests, cluster manifests):
 * ms_json_seal() appends "manifest_sha256" to doc and writes it as JSON text whose SHA-256,
 * with the digest's place zeroed, is that field; ms_json_check_seal() checks it (-EBADMSG,
 * saying what is wrong) and gives the text's length without the final newline. */
int ms_json_seal(bson_t *doc, char **ret_json, size_t *ret_len, MsError *e);
int ms_json_check_seal(const char *json, size_t len, size_t *ret_body_len, MsError *e);
void ms_manifest_clear(MsManifest *m);

const MsManifestNamespace *ms_manifest_find(const MsManifest *m, const char *db,
                                            const char *collection);
int ms_manifest_add_namespace(MsManifest *m, const MsManifestNamespace *ns);

/* Derive the manifest key from an archive key and back ("x.archive.zst" <-> "x.manifest.json"). */
char *ms_manifest_key_for_archive(const char *archive_key);

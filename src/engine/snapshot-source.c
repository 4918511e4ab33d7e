/* Opening stored snapshots and archive files for restore and verify, and the end-of-read checks. */
#include "snapshot-source.h"

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "chunked.h"
#include "mongosnap/mongosnap.h"

/* Manifests are small; a bigger "manifest" is not one of ours. */
#define MANIFEST_MAX_BYTES (64u * 1024u * 1024u)

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *manifest_key_for(const char *key) {
    if (has_suffix(key, MONGOSNAP_MANIFEST_SUFFIX) || has_suffix(key, MONGOSNAP_SLICE_MANIFEST_SUFFIX))
        return strdup(key);
    if (strstr(key, MONGOSNAP_ARCHIVE_SUFFIX))
        return ms_manifest_key_for_archive(key);
    char *s = NULL;
    return asprintf(&s, "%s%s", key, MONGOSNAP_MANIFEST_SUFFIX) < 0 ? NULL : s;
}

/* What the manifest says about encryption, checked before the archive is opened: no key or a
 * wrong key is said with the snapshot's name and nothing is read. */
static int check_manifest_key(const MsSnapshotSource *s, const char *name,
                              const MsEncryptKey *enc_key, MsError *e) {
    if (!s->has_manifest || !s->manifest.encryption_cipher)
        return 0;
    if (!enc_key)
        return ms_error_set(
            e, ENOKEY, "snapshot %s is encrypted (%s, key id %s); give --key-file with its key",
            name, s->manifest.encryption_cipher, s->manifest.encryption_key_id);
    if (strcmp(enc_key->id_hex, s->manifest.encryption_key_id) != 0)
        return ms_error_set(e, EKEYREJECTED,
                            "the key given (id %s) is not the key this snapshot was encrypted "
                            "with (id %s): snapshot %s needs the key it was taken with (after a "
                            "key rotation, the old key)",
                            enc_key->id_hex, s->manifest.encryption_key_id, name);
    return 0;
}

static int build_chain(MsSnapshotSource *s, MsSource *raw, MsSourceChainDepth depth,
                       const MsEncryptKey *enc_key, MsError *e) {
    if (!s->chain && !(s->chain = calloc(1, sizeof(*s->chain)))) {
        ms_source_free(raw);
        return ms_error_oom(e);
    }
    /* Decryption is recognised first: what lies under it may be zstd, gzip or plain. */
    int r = ms_source_chain_new(raw, depth, enc_key, s->chain, &s->head, e);
    if (r == -EKEYREJECTED)
        ms_error_prefix(e, "%s: ", s->archive_name);
    if (r < 0)
        return r;
    if (depth >= MS_CHAIN_DECRYPTED && s->has_manifest &&
        !!s->manifest.encryption_cipher != s->chain->encrypted)
        return ms_error_set(e, EBADMSG,
                            "%s is %s but its manifest says it is %s: the stored snapshot is "
                            "damaged",
                            s->archive_name, s->chain->encrypted ? "encrypted" : "not encrypted",
                            s->chain->encrypted ? "not" : "encrypted");
    if (depth < MS_CHAIN_PLAIN)
        return 0;
    s->reader = ms_archive_reader_new(s->head);
    if (!s->reader)
        return ms_error_oom(e);
    return 0;
}

/* A chunked snapshot: its index checked against the manifest (size and SHA-256, as a plain
 * snapshot's archive object is), then the archive stream assembled from its chunks, each
 * checked by id. The chain's measurements are the index's, so check_stored() compares the
 * index with the manifest; the chunks need no digest beside their ids. */
static int open_chunked(MsSnapshotSource *s, MsStorage *storage, const char *manifest_key,
                        const MsEncryptKey *enc_key, MsError *e) {
    if (!(s->chain = calloc(1, sizeof(*s->chain))))
        return ms_error_oom(e);
    MsChunkIndex idx;
    int r = ms_chunk_index_read(storage, s->manifest.archive_key, enc_key, &idx,
                                &s->chain->stored_bytes, s->chain->stored_sha256, e);
    if (r < 0) {
        if (r != -ENOKEY && r != -EKEYREJECTED)
            ms_error_prefix(e, "the chunk index of %s: ", manifest_key);
        return r;
    }
    s->chain->raw_bytes = idx.total;
    s->chain->encrypted = s->manifest.encryption_cipher != NULL;
    s->chain->compression = MS_COMPRESSION_ZSTD;
    if (s->chain->stored_bytes != s->manifest.archive_size ||
        strcmp(s->chain->stored_sha256, s->manifest.archive_sha256) != 0) {
        ms_chunk_index_clear(&idx);
        return ms_error_set(e, EBADMSG,
                            "the chunk index %s does not match its manifest (size or SHA-256): "
                            "the stored snapshot is damaged",
                            s->manifest.archive_key);
    }
    /* The area belongs to the manifest's own prefix, whatever the manifest says. */
    _cleanup_free_ char *prefix = NULL;
    const char *slash = strrchr(manifest_key, '/');
    if (slash && !(prefix = strndup(manifest_key, (size_t) (slash - manifest_key)))) {
        ms_chunk_index_clear(&idx);
        return ms_error_oom(e);
    }
    _cleanup_free_ char *area = ms_chunk_area(prefix);
    if (!area) {
        ms_chunk_index_clear(&idx);
        return ms_error_oom(e);
    }
    r = ms_chunked_source_new(storage, area, &idx, enc_key, 0, &s->head, e);
    ms_chunk_index_clear(&idx);
    if (r < 0)
        return r;
    s->reader = ms_archive_reader_new(s->head);
    return s->reader ? 0 : ms_error_oom(e);
}

/* How far open_store() builds the chain. */
typedef enum OpenDepth {
    OPEN_ARCHIVE,   /* decrypted, decompressed, parsed */
    OPEN_RAW,       /* the stored bytes, counted and hashed */
    OPEN_DECRYPTED, /* the stored bytes, counted and hashed, then each chunk authenticated */
} OpenDepth;

static int open_store(MsStorage *storage, const char *key, const MsEncryptKey *enc_key,
                      OpenDepth depth_wanted, MsSnapshotSource *ret, MsError *e) {
    bool raw_only = depth_wanted == OPEN_RAW;
    MsSnapshotSource *s = ret;
    memset(s, 0, sizeof(*s));
    _cleanup_free_ char *manifest_key = manifest_key_for(key);
    if (!manifest_key)
        return ms_error_set(e, ENOMEM, "out of memory");
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_storage_get(storage, manifest_key, MANIFEST_MAX_BYTES, &json, &len, e);
    if (r == -ENOENT) {
        ms_error_clear(e);
        return ms_error_set(e, ENOENT,
                            "no snapshot '%s' in %s (its manifest %s is missing: the snapshot "
                            "does not exist or never completed); list snapshots to find its name",
                            key, ms_storage_describe(storage), manifest_key);
    }
    if (r < 0)
        return r;
    r = ms_manifest_parse(json, len, &s->manifest, e);
    if (r < 0) {
        ms_error_prefix(e, "%s: ", manifest_key);
        return r;
    }
    s->has_manifest = true;
    s->archive_name = strdup(s->manifest.archive_key);
    r = raw_only ? 0 : check_manifest_key(s, key, enc_key, e);
    if (r < 0) {
        ms_snapshot_source_close(s);
        return r;
    }
    /* A chunked snapshot is read whole, chunk by chunk, for every depth but the raw one (which
     * checks the index object alone): authenticating its chunks is reading them. */
    if (ms_manifest_is_chunked(&s->manifest) && !raw_only) {
        r = open_chunked(s, storage, manifest_key, enc_key, e);
        if (r < 0)
            ms_snapshot_source_close(s);
        return r;
    }
    MsSource *raw = NULL;
    r = ms_storage_open_read(storage, s->manifest.archive_key, &raw, e);
    if (r < 0) {
        ms_snapshot_source_close(s);
        return r;
    }
    /* The drop check authenticates an encrypted snapshot's chunks; one the manifest calls
     * plain is only counted and hashed there (the restore's full read finds the mismatch). */
    MsSourceChainDepth depth =
        raw_only ? MS_CHAIN_STORED
        : depth_wanted == OPEN_DECRYPTED
            ? (s->manifest.encryption_cipher ? MS_CHAIN_DECRYPTED : MS_CHAIN_STORED)
            : MS_CHAIN_PLAIN;
    r = build_chain(s, raw, depth, enc_key, e);
    if (r == -ENOKEY) {
        /* The manifest did not say so, the stream does: name the snapshot all the same. */
        ms_error_clear(e);
        r = ms_error_set(e, ENOKEY,
                         "snapshot %s is encrypted (key id %s); give --key-file with its key", key,
                         s->chain->encryption.key_id_hex);
    }
    if (r < 0) {
        ms_snapshot_source_close(s);
        return r;
    }
    return 0;
}

int ms_snapshot_source_open_store(MsStorage *storage, const char *key, const MsEncryptKey *enc_key,
                                  MsSnapshotSource *ret, MsError *e) {
    return open_store(storage, key, enc_key, OPEN_ARCHIVE, ret, e);
}

int ms_snapshot_source_check_stored_only(MsStorage *storage, const char *key, uint64_t *ret_bytes,
                                         MsError *e) {
    MsSnapshotSource s;
    int r = open_store(storage, key, NULL, OPEN_RAW, &s, e);
    if (r < 0)
        return r;
    /* Read every stored byte through the hash; then the check finds nothing left over. */
    char buf[65536];
    ssize_t n;
    while ((n = ms_source_read(s.head, buf, sizeof(buf), e)) > 0)
        ;
    r = n < 0 ? (int) n : ms_snapshot_source_check_stored(&s, e);
    if (ret_bytes)
        *ret_bytes = s.chain->stored_bytes;
    ms_snapshot_source_close(&s);
    return r;
}

/* Read the whole archive to say where damage is (namespace, byte offset), since a digest
 * that differs says only that it is there; what it finds is added to e. */
static void diagnose_damage(MsStorage *storage, const char *key, const MsEncryptKey *enc_key,
                            MsError *e) {
    MsSnapshotSource s;
    MsError found = MS_ERROR_INIT;
    if (open_store(storage, key, enc_key, OPEN_ARCHIVE, &s, &found) < 0)
        return;
    const MsArchiveHeader *header;
    const MsArchiveCollection *colls;
    size_t n_colls;
    int r = ms_archive_reader_read_prelude(s.reader, &header, &colls, &n_colls, &found);
    while (r == 0) {
        MsArchiveEvent ev;
        r = ms_archive_reader_next(s.reader, &ev, &found);
        if (r == 0 && ev.kind == MS_ARCHIVE_EVENT_END)
            break;
    }
    if (r == 0)
        r = ms_snapshot_source_check_namespaces(&s, &found);
    ms_snapshot_source_close(&s);
    if (r < 0 && found.code) {
        size_t len = strlen(e->message);
        snprintf(e->message + len, sizeof(e->message) - len, " (reading it: %s)", found.message);
    }
}

int ms_snapshot_source_precheck_store(MsStorage *storage, const char *key,
                                      const MsEncryptKey *enc_key, uint64_t *ret_bytes,
                                      MsError *e) {
    MsSnapshotSource s;
    int r = open_store(storage, key, enc_key, OPEN_DECRYPTED, &s, e);
    if (r < 0)
        return r;
    /* Every stored byte through the hash and, when encrypted, every chunk through its
     * authentication; the plaintext itself is not needed. */
    char buf[65536];
    ssize_t n;
    while ((n = ms_source_read(s.head, buf, sizeof(buf), e)) > 0)
        ;
    r = n < 0 ? (int) n : ms_snapshot_source_check_stored(&s, e);
    bool digest_differs = n >= 0 && r == -EBADMSG;
    if (ret_bytes)
        *ret_bytes = s.chain->stored_bytes;
    ms_snapshot_source_close(&s);
    if (digest_differs && e)
        diagnose_damage(storage, key, enc_key, e);
    return r;
}

int ms_snapshot_source_precheck_file(const char *path, const char *manifest_path,
                                     const MsEncryptKey *enc_key, MsError *e) {
    if (strcmp(path, "-") == 0)
        return ms_error_set(e, EINVAL,
                            "standard input cannot be checked before the target is changed (it "
                            "can be read only once); save the archive to a file and restore from "
                            "that, or leave out --drop");
    MsSnapshotSource s;
    int r = ms_snapshot_source_open_file(path, manifest_path, enc_key, &s, e);
    if (r < 0)
        return r;
    /* A stock archive has no SHA-256 to compare: read it whole, every namespace's CRC-64. */
    r = ms_snapshot_source_read_all(&s, NULL, NULL, e);
    ms_snapshot_source_close(&s);
    return r;
}

int ms_snapshot_source_read_all(MsSnapshotSource *s,
                                int (*on_document)(const MsArchiveEvent *ev, void *userdata),
                                void *userdata, MsError *e) {
    const MsArchiveHeader *header;
    const MsArchiveCollection *colls;
    size_t n_colls;
    int r = ms_archive_reader_read_prelude(s->reader, &header, &colls, &n_colls, e);
    while (r == 0) {
        MsArchiveEvent ev;
        r = ms_archive_reader_next(s->reader, &ev, e);
        if (r < 0 || ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT && on_document)
            r = on_document(&ev, userdata);
    }
    /* The reader's own errors name no object: the archive is said (the callers' are theirs). */
    if (r < 0 && s->archive_name && !strstr(e->message, s->archive_name))
        ms_error_prefix(e, "%s: ", s->archive_name);
    if (r == 0)
        r = ms_snapshot_source_check_stored(s, e);
    if (r == 0)
        r = ms_snapshot_source_check_namespaces(s, e);
    return r;
}

int ms_snapshot_source_open_file(const char *path, const char *manifest_path,
                                 const MsEncryptKey *enc_key, MsSnapshotSource *ret, MsError *e) {
    MsSnapshotSource *s = ret;
    memset(s, 0, sizeof(*s));
    if (manifest_path) {
        int mfd = open(manifest_path, O_RDONLY | O_CLOEXEC);
        if (mfd < 0)
            return ms_error_set(e, errno, "cannot open manifest %s: %s", manifest_path,
                                strerror(errno));
        MsSource *src = ms_source_fd_new(mfd, 1);
        MsSink *mem = ms_sink_memory_new();
        char buf[65536];
        ssize_t n;
        int r = 0;
        size_t total = 0;
        while (r == 0 && (n = ms_source_read(src, buf, sizeof(buf), e)) != 0) {
            if (n < 0) {
                r = (int) n;
                break;
            }
            total += (size_t) n;
            if (total > MANIFEST_MAX_BYTES)
                r = ms_error_set(e, EFBIG, "%s is too large to be a manifest", manifest_path);
            else
                r = ms_sink_write(mem, buf, (size_t) n, e);
        }
        ms_source_free(src);
        if (r == 0) {
            size_t len;
            const uint8_t *data = ms_sink_memory_data(mem, &len);
            r = ms_manifest_parse((const char *) data, len, &s->manifest, e);
            if (r < 0)
                ms_error_prefix(e, "%s: ", manifest_path);
        }
        ms_sink_free(mem);
        if (r < 0)
            return r;
        s->has_manifest = true;
        r = check_manifest_key(s, path, enc_key, e);
        if (r < 0) {
            ms_snapshot_source_close(s);
            return r;
        }
    }
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        ms_snapshot_source_close(s);
        return ms_error_set(e, err, "cannot open archive %s: %s", path, strerror(err));
    }
    s->archive_name = strdup(strcmp(path, "-") == 0 ? "standard input" : path);
    int r = build_chain(s, ms_source_fd_new(fd, fd != STDIN_FILENO), MS_CHAIN_PLAIN, enc_key, e);
    if (r == -ENOKEY) {
        ms_error_clear(e);
        r = ms_error_set(e, ENOKEY, "%s is encrypted (key id %s); give --key-file with its key",
                         s->archive_name, s->chain->encryption.key_id_hex);
    }
    if (r < 0) {
        ms_snapshot_source_close(s);
        return r;
    }
    return 0;
}

int ms_snapshot_source_check_stored(MsSnapshotSource *s, MsError *e) {
    if (!s->has_manifest)
        return 0;
    /* Drain whatever follows the archive's end (there should be nothing) so the digest
     * covers the whole object. */
    char buf[4096];
    ssize_t n;
    uint64_t trailing = 0;
    while ((n = ms_source_read(s->head, buf, sizeof(buf), e)) > 0)
        trailing += (uint64_t) n;
    if (n < 0)
        return (int) n;
    if (trailing > 0)
        return ms_error_set(e, EBADMSG,
                            "%s has %" PRIu64 " unexpected bytes after the archive's end",
                            s->archive_name, trailing);
    const char *digest = s->chain->stored_sha256;
    if (s->chain->stored_bytes != s->manifest.archive_size)
        return ms_error_set(e, EBADMSG,
                            "%s is %" PRIu64 " bytes but its manifest says %" PRIu64
                            ": the stored snapshot is damaged",
                            s->archive_name, s->chain->stored_bytes, s->manifest.archive_size);
    if (strcmp(digest, s->manifest.archive_sha256) != 0)
        return ms_error_set(e, EBADMSG,
                            "%s has SHA-256 %.16s... but its manifest says %.16s...: the stored "
                            "snapshot is damaged",
                            s->archive_name, digest, s->manifest.archive_sha256);
    return 0;
}

#define TIMESERIES_BUCKETS_PREFIX "system.buckets."

int ms_snapshot_source_check_namespaces(MsSnapshotSource *s, MsError *e) {
    const MsArchiveNamespaceStats *stats;
    size_t n = ms_archive_reader_namespace_stats(s->reader, &stats);
    if (!s->has_manifest)
        return 0;
    for (size_t i = 0; i < s->manifest.n_namespaces; i++) {
        const MsManifestNamespace *m = &s->manifest.namespaces[i];
        const MsArchiveNamespaceStats *found = NULL;
        /* A time-series collection's documents travel under its buckets collection, as
         * mongodump writes them; the manifest names the collection itself. */
        bool buckets = m->type && strcmp(m->type, "timeseries") == 0;
        for (size_t j = 0; j < n && !found; j++) {
            const char *c = stats[j].collection;
            if (buckets &&
                strncmp(c, TIMESERIES_BUCKETS_PREFIX, strlen(TIMESERIES_BUCKETS_PREFIX)) == 0)
                c += strlen(TIMESERIES_BUCKETS_PREFIX);
            else if (buckets)
                continue;
            if (strcmp(stats[j].db, m->db) == 0 && strcmp(c, m->collection) == 0)
                found = &stats[j];
        }
        if (!found || !found->eof_seen)
            return ms_error_set(e, EBADMSG,
                                "namespace '%s.%s' is in the manifest but missing from %s", m->db,
                                m->collection, s->archive_name);
        if (found->documents != m->documents || found->crc != m->crc64)
            return ms_error_set(e, EBADMSG,
                                "namespace '%s.%s' holds %" PRIu64 " documents (CRC 0x%016" PRIx64
                                ") but the manifest says %" PRIu64 " (CRC 0x%016" PRIx64 ")",
                                m->db, m->collection, found->documents, found->crc, m->documents,
                                m->crc64);
    }
    if (s->manifest.point_in_time) {
        const MsArchiveNamespaceStats *oplog = NULL;
        for (size_t j = 0; j < n && !oplog; j++)
            if (ms_archive_is_oplog(stats[j].db, stats[j].collection))
                oplog = &stats[j];
        uint64_t got = oplog ? oplog->documents : 0;
        if (got != s->manifest.oplog_entries)
            return ms_error_set(e, EBADMSG,
                                "the archive holds %" PRIu64 " oplog entries but the manifest "
                                "says %" PRIu64,
                                got, s->manifest.oplog_entries);
    }
    return 0;
}

void ms_snapshot_source_close(MsSnapshotSource *s) {
    ms_archive_reader_free(s->reader);
    ms_source_free(s->head);
    free(s->chain);
    ms_manifest_clear(&s->manifest);
    free(s->archive_name);
    memset(s, 0, sizeof(*s));
}

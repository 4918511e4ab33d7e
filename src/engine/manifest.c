/* Manifest serialisation (relaxed extended JSON with a self-checksum) and parsing. */
#include "manifest.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mongosnap/mongosnap.h"

#define MANIFEST_CHECKSUM_FIELD "manifest_sha256"
/* The placeholder the checksum is computed over, then replaced by the digest. */
static const char checksum_placeholder[MS_SHA256_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static void append_str(bson_t *b, const char *key, const char *v) {
    bson_append_utf8(b, key, -1, v ? v : "", -1);
}

static void append_position(bson_t *b, const char *key, MsOplogPosition pos) {
    bson_append_timestamp(b, key, -1, pos.t, pos.i);
}

static void append_str_array(bson_t *b, const char *key, char *const *v, size_t n) {
    bson_t arr;
    bson_append_array_begin(b, key, -1, &arr);
    for (size_t i = 0; i < n; i++) {
        char k[24];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        append_str(&arr, kp, v[i]);
    }
    bson_append_array_end(b, &arr);
}

static void format_crc(uint64_t crc, char buf[19]) {
    snprintf(buf, 19, "0x%016" PRIx64, crc);
}

int ms_manifest_serialize(const MsManifest *m, char **ret_json, size_t *ret_len, MsError *e) {
    bson_t doc = BSON_INITIALIZER, child, ns_array, ns_doc;
    append_str(&doc, "format", MONGOSNAP_MANIFEST_FORMAT);
    BSON_APPEND_INT32(&doc, "format_version", MONGOSNAP_MANIFEST_FORMAT_VERSION);
    /* Only for what is not a snapshot, so snapshot manifests read as they always did. */
    if (m->kind)
        append_str(&doc, "kind", m->kind);
    append_str(&doc, "snapshot", m->snapshot);
    append_str(&doc, "tool_version", m->tool_version);
    append_str(&doc, "node", m->node);
    if (m->host)
        append_str(&doc, "host", m->host);
    append_str(&doc, "started_at", m->started_at);
    append_str(&doc, "finished_at", m->finished_at);
    BSON_APPEND_INT64(&doc, "elapsed_usec", (int64_t) m->elapsed_usec);

    if (m->seq || m->origin) {
        BSON_APPEND_DOCUMENT_BEGIN(&doc, "policy", &child);
        BSON_APPEND_INT64(&child, "seq", (int64_t) MS_MIN(m->seq, (uint64_t) INT64_MAX));
        append_str(&child, "origin", m->origin);
        bson_append_document_end(&doc, &child);
    }

    BSON_APPEND_DOCUMENT_BEGIN(&doc, "source", &child);
    append_str(&child, "uri", m->source_uri);
    append_str(&child, "server_version", m->server_version);
    bson_append_document_end(&doc, &child);

    BSON_APPEND_DOCUMENT_BEGIN(&doc, "archive", &child);
    append_str(&child, "key", m->archive_key);
    append_str(&child, "format", m->archive_format ? m->archive_format : "mongodump-archive");
    append_str(&child, "compression", m->compression);
    BSON_APPEND_INT64(&child, "size", (int64_t) m->archive_size);
    append_str(&child, "sha256", m->archive_sha256);
    BSON_APPEND_INT64(&child, "uncompressed_size", (int64_t) m->uncompressed_size);
    if (ms_manifest_is_chunked(m)) {
        bson_t chunks;
        BSON_APPEND_DOCUMENT_BEGIN(&child, "chunks", &chunks);
        BSON_APPEND_INT64(&chunks, "count", (int64_t) m->chunks);
        BSON_APPEND_INT64(&chunks, "stored", (int64_t) m->chunks_stored);
        BSON_APPEND_INT64(&chunks, "stored_bytes", (int64_t) m->chunks_stored_bytes);
        BSON_APPEND_INT64(&chunks, "average_size", (int64_t) m->chunk_avg);
        bson_append_document_end(&child, &chunks);
    }
    bson_append_document_end(&doc, &child);

    /* Only for encrypted snapshots, so unencrypted manifests read as they always did. */
    if (m->encryption_cipher) {
        BSON_APPEND_DOCUMENT_BEGIN(&doc, "encryption", &child);
        append_str(&child, "cipher", m->encryption_cipher);
        append_str(&child, "key_id", m->encryption_key_id);
        BSON_APPEND_INT64(&child, "chunk_size", (int64_t) m->encryption_chunk_size);
        bson_append_document_end(&doc, &child);
    }

    BSON_APPEND_DOCUMENT_BEGIN(&doc, "consistency", &child);
    BSON_APPEND_BOOL(&child, "point_in_time", m->point_in_time);
    if (!m->point_in_time)
        append_str(&child, "reason", m->point_in_time_reason);
    if (m->point_in_time) {
        append_position(&child, "oplog_start", m->oplog_start);
        append_position(&child, "oplog_end", m->oplog_end);
        BSON_APPEND_INT64(&child, "oplog_entries", (int64_t) m->oplog_entries);
    }
    bson_append_document_end(&doc, &child);

    /* Always written, empty for a full snapshot, so a partial one is plain to see. */
    append_str_array(&doc, "ns_include", m->ns_include, m->n_ns_include);
    append_str_array(&doc, "ns_exclude", m->ns_exclude, m->n_ns_exclude);

    BSON_APPEND_INT64(&doc, "total_documents", (int64_t) m->total_documents);
    BSON_APPEND_INT64(&doc, "total_bytes", (int64_t) m->total_bytes);
    BSON_APPEND_ARRAY_BEGIN(&doc, "namespaces", &ns_array);
    for (size_t i = 0; i < m->n_namespaces; i++) {
        const MsManifestNamespace *ns = &m->namespaces[i];
        char key[24], crc[19];
        snprintf(key, sizeof(key), "%zu", i);
        format_crc(ns->crc64, crc);
        bson_append_document_begin(&ns_array, key, -1, &ns_doc);
        append_str(&ns_doc, "db", ns->db);
        append_str(&ns_doc, "collection", ns->collection);
        append_str(&ns_doc, "type", ns->type);
        BSON_APPEND_INT64(&ns_doc, "documents", (int64_t) ns->documents);
        BSON_APPEND_INT64(&ns_doc, "bytes", (int64_t) ns->bytes);
        append_str(&ns_doc, "crc64", crc);
        BSON_APPEND_INT32(&ns_doc, "indexes", (int32_t) ns->indexes);
        bson_append_document_end(&ns_array, &ns_doc);
    }
    bson_append_array_end(&doc, &ns_array);
    int r = ms_json_seal(&doc, ret_json, ret_len, e);
    bson_destroy(&doc);
    return r;
}

int ms_json_seal(bson_t *doc, char **ret_json, size_t *ret_len, MsError *e) {
    /* Last, so the placeholder is easy to find and nothing follows it but "}". */
    append_str(doc, MANIFEST_CHECKSUM_FIELD, checksum_placeholder);

    size_t len;
    char *json = bson_as_relaxed_extended_json(doc, &len);
    if (!json)
        return ms_error_set(e, EINVAL, "cannot encode the manifest as JSON");

    const char *marker = "\"" MANIFEST_CHECKSUM_FIELD "\" : \"";
    char *at = strstr(json, marker);
    if (!at) {
        bson_free(json);
        return ms_error_set(e, EINVAL, "manifest JSON lacks its checksum field");
    }
    char digest[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(json, len, digest);
    memcpy(at + strlen(marker), digest, MS_SHA256_HEX_LEN);

    /* Hand out malloc()ed memory with a trailing newline: it is also a text file. */
    char *out = malloc(len + 2);
    if (!out) {
        bson_free(json);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    memcpy(out, json, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    bson_free(json);
    *ret_json = out;
    *ret_len = len + 1;
    return 0;
}

static char *dup_utf8(const bson_t *b, const char *path) {
    bson_iter_t it;
    if (bson_iter_init(&it, b) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
        return strdup(bson_iter_utf8(&it, NULL));
    return NULL;
}

static bool get_int64(const bson_t *b, const char *path, uint64_t *ret) {
    bson_iter_t it;
    if (bson_iter_init(&it, b) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_NUMBER(&it)) {
        int64_t v = bson_iter_as_int64(&it);
        if (v < 0)
            return false;
        *ret = (uint64_t) v;
        return true;
    }
    return false;
}

static void get_position(const bson_t *b, const char *path, MsOplogPosition *ret) {
    bson_iter_t it;
    if (bson_iter_init(&it, b) && bson_iter_find_descendant(&it, path, &it) &&
        BSON_ITER_HOLDS_TIMESTAMP(&it))
        bson_iter_timestamp(&it, &ret->t, &ret->i);
}

/* A missing array is empty (manifests written before filters existed); anything but strings
 * in it is damage. */
static int get_str_array(const bson_t *b, const char *key, char ***ret, size_t *ret_n, MsError *e) {
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, b, key))
        return 0;
    if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr))
        return ms_error_set(e, EBADMSG, "the manifest's '%s' is not a list", key);
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_UTF8(&arr))
            return ms_error_set(e, EBADMSG, "the manifest's '%s' holds something other than patterns",
                                key);
        char **grown = realloc(*ret, (*ret_n + 1) * sizeof(char *));
        if (!grown)
            return ms_error_set(e, ENOMEM, "out of memory");
        *ret = grown;
        grown[*ret_n] = strdup(bson_iter_utf8(&arr, NULL));
        if (!grown[*ret_n])
            return ms_error_set(e, ENOMEM, "out of memory");
        (*ret_n)++;
    }
    return 0;
}

static bool get_bool(const bson_t *b, const char *path) {
    bson_iter_t it;
    return bson_iter_init(&it, b) && bson_iter_find_descendant(&it, path, &it) &&
           BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
}

int ms_json_check_seal(const char *json, size_t len, size_t *ret_body_len, MsError *e) {
    const char *marker = "\"" MANIFEST_CHECKSUM_FIELD "\" : \"";
    const char *at = NULL;
    for (const char *p = json; (p = memmem(p, len - (size_t) (p - json), marker, strlen(marker)));
         p++)
        at = p;
    /* The digest covers the text as written, with the placeholder in place and without the
     * trailing newline added for humans. */
    size_t body_len = len;
    while (body_len > 0 && (json[body_len - 1] == '\n' || json[body_len - 1] == '\r'))
        body_len--;
    if (!at || (size_t) (at - json) + strlen(marker) + MS_SHA256_HEX_LEN > body_len)
        return ms_error_set(e, EBADMSG,
                            "the manifest has no '%s' field: it is not a mongosnap manifest or it "
                            "was cut short",
                            MANIFEST_CHECKSUM_FIELD);
    size_t digest_off = (size_t) (at - json) + strlen(marker);
    char stored[MS_SHA256_HEX_LEN + 1];
    memcpy(stored, json + digest_off, MS_SHA256_HEX_LEN);
    stored[MS_SHA256_HEX_LEN] = '\0';

    char *copy = malloc(body_len + 1);
    if (!copy)
        return ms_error_set(e, ENOMEM, "out of memory");
    memcpy(copy, json, body_len);
    copy[body_len] = '\0';
    memcpy(copy + digest_off, checksum_placeholder, MS_SHA256_HEX_LEN);
    char computed[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(copy, body_len, computed);
    free(copy);
    if (strcmp(computed, stored) != 0)
        return ms_error_set(e, EBADMSG,
                            "the manifest is corrupted: its checksum says %.12s... but its content "
                            "gives %.12s...; do not trust this snapshot, take a new one",
                            stored, computed);

    *ret_body_len = body_len;
    return 0;
}

int ms_manifest_parse(const char *json, size_t len, MsManifest *ret, MsError *e) {
    if (!json || len == 0)
        return ms_error_set(e, EBADMSG,
                            "not a mongosnap manifest: the file is empty (the snapshot is "
                            "damaged or its write never finished)");
    size_t body_len = 0;
    int k = ms_json_check_seal(json, len, &body_len, e);
    if (k < 0)
        return k;

    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *) json, (ssize_t) body_len, &berr);
    if (!doc)
        return ms_error_set(e, EBADMSG, "the manifest is not valid JSON: %s", berr.message);

    MsManifest m = {0};
    int r = 0;
    _cleanup_free_ char *sha = NULL;
    _cleanup_free_ char *format = dup_utf8(doc, "format");
    if (!format || strcmp(format, MONGOSNAP_MANIFEST_FORMAT) != 0) {
        r = ms_error_set(e, EBADMSG, "not a mongosnap manifest (format field is '%s')",
                         format ? format : "missing");
        goto out;
    }
    m.kind = dup_utf8(doc, "kind");
    m.snapshot = dup_utf8(doc, "snapshot");
    m.tool_version = dup_utf8(doc, "tool_version");
    m.node = dup_utf8(doc, "node");
    m.host = dup_utf8(doc, "host");
    m.origin = dup_utf8(doc, "policy.origin");
    get_int64(doc, "policy.seq", &m.seq);
    m.started_at = dup_utf8(doc, "started_at");
    m.finished_at = dup_utf8(doc, "finished_at");
    get_int64(doc, "elapsed_usec", &m.elapsed_usec);
    m.source_uri = dup_utf8(doc, "source.uri");
    m.server_version = dup_utf8(doc, "source.server_version");
    m.archive_key = dup_utf8(doc, "archive.key");
    m.compression = dup_utf8(doc, "archive.compression");
    sha = dup_utf8(doc, "archive.sha256");
    if (!m.archive_key || !m.compression || !sha || strlen(sha) != MS_SHA256_HEX_LEN ||
        !get_int64(doc, "archive.size", &m.archive_size)) {
        r = ms_error_set(e, EBADMSG, "the manifest lacks the archive's key, size or checksum");
        goto out;
    }
    memcpy(m.archive_sha256, sha, sizeof(m.archive_sha256));
    get_int64(doc, "archive.uncompressed_size", &m.uncompressed_size);
    {
        _cleanup_free_ char *archive_format = dup_utf8(doc, "archive.format");
        if (archive_format && strcmp(archive_format, MS_MANIFEST_FORMAT_CHUNKED) == 0) {
            m.archive_format = TAKE_PTR(archive_format);
            uint64_t avg = 0;
            if (!get_int64(doc, "archive.chunks.count", &m.chunks) ||
                !get_int64(doc, "archive.chunks.average_size", &avg) || avg > UINT32_MAX) {
                r = ms_error_set(e, EBADMSG, "the manifest of a chunked snapshot lacks its chunk counts");
                goto out;
            }
            m.chunk_avg = (uint32_t) avg;
            get_int64(doc, "archive.chunks.stored", &m.chunks_stored);
            get_int64(doc, "archive.chunks.stored_bytes", &m.chunks_stored_bytes);
        } else if (archive_format && strcmp(archive_format, "mongodump-archive") != 0) {
            r = ms_error_set(e, EBADMSG,
                             "the archive's format '%s' is unknown to mongosnap %s (written by a "
                             "newer version?)",
                             archive_format, MONGOSNAP_VERSION);
            goto out;
        }
    }
    bson_iter_t enc_it;
    if (bson_iter_init_find(&enc_it, doc, "encryption")) {
        _cleanup_free_ char *key_id = dup_utf8(doc, "encryption.key_id");
        m.encryption_cipher = dup_utf8(doc, "encryption.cipher");
        if (!BSON_ITER_HOLDS_DOCUMENT(&enc_it) || !m.encryption_cipher || !key_id ||
            strlen(key_id) != sizeof(m.encryption_key_id) - 1 ||
            !get_int64(doc, "encryption.chunk_size", &m.encryption_chunk_size)) {
            r = ms_error_set(e, EBADMSG,
                             "the manifest's 'encryption' lacks its cipher, key_id or chunk_size");
            goto out;
        }
        if (strcmp(m.encryption_cipher, "aes-256-gcm") != 0) {
            r = ms_error_set(e, EBADMSG,
                             "the snapshot is encrypted with '%s', which this mongosnap cannot "
                             "decrypt (it knows aes-256-gcm)",
                             m.encryption_cipher);
            goto out;
        }
        memcpy(m.encryption_key_id, key_id, sizeof(m.encryption_key_id));
    }
    m.point_in_time = get_bool(doc, "consistency.point_in_time");
    m.point_in_time_reason = dup_utf8(doc, "consistency.reason");
    get_position(doc, "consistency.oplog_start", &m.oplog_start);
    get_position(doc, "consistency.oplog_end", &m.oplog_end);
    get_int64(doc, "consistency.oplog_entries", &m.oplog_entries);
    r = get_str_array(doc, "ns_include", &m.ns_include, &m.n_ns_include, e);
    if (r == 0)
        r = get_str_array(doc, "ns_exclude", &m.ns_exclude, &m.n_ns_exclude, e);
    if (r < 0)
        goto out;
    get_int64(doc, "total_documents", &m.total_documents);
    get_int64(doc, "total_bytes", &m.total_bytes);

    bson_iter_t it, arr;
    if (bson_iter_init_find(&it, doc, "namespaces") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) {
                r = ms_error_set(e, EBADMSG, "the manifest's namespace list is malformed");
                goto out;
            }
            const uint8_t *data;
            uint32_t dlen;
            bson_iter_document(&arr, &dlen, &data);
            bson_t nsdoc;
            if (!bson_init_static(&nsdoc, data, dlen)) {
                r = ms_error_set(e, EBADMSG, "the manifest's namespace list is malformed");
                goto out;
            }
            MsManifestNamespace ns = {0};
            uint64_t idx = 0;
            get_int64(&nsdoc, "indexes", &idx);
            /* Written as a 32-bit integer (a collection has at most 64 indexes): anything
             * larger is not a manifest we wrote, and would not survive being written again. */
            if (idx > INT32_MAX) {
                r = ms_error_set(e, EBADMSG,
                                 "the manifest gives an impossible index count (%" PRIu64
                                 ") for a namespace: it was not written by mongosnap or was "
                                 "altered",
                                 idx);
                goto out;
            }
            _cleanup_free_ char *crc = dup_utf8(&nsdoc, "crc64");
            ns.db = dup_utf8(&nsdoc, "db");
            ns.collection = dup_utf8(&nsdoc, "collection");
            ns.type = dup_utf8(&nsdoc, "type");
            get_int64(&nsdoc, "documents", &ns.documents);
            get_int64(&nsdoc, "bytes", &ns.bytes);
            ns.indexes = (uint32_t) idx;
            if (crc)
                ns.crc64 = strtoull(crc, NULL, 16);
            bool ok = ns.db && ns.collection;
            if (ok)
                r = ms_manifest_add_namespace(&m, &ns);
            free(ns.db);
            free(ns.collection);
            free(ns.type);
            if (!ok) {
                r = ms_error_set(e, EBADMSG, "a namespace in the manifest lacks its name");
                goto out;
            }
            if (r < 0) {
                ms_error_set(e, -r, "out of memory");
                goto out;
            }
        }
    }
out:
    bson_destroy(doc);
    if (r < 0) {
        ms_manifest_clear(&m);
        return r;
    }
    *ret = m;
    return 0;
}

int ms_manifest_add_namespace(MsManifest *m, const MsManifestNamespace *ns) {
    MsManifestNamespace *n = realloc(m->namespaces, (m->n_namespaces + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    m->namespaces = n;
    MsManifestNamespace *d = &n[m->n_namespaces];
    *d = *ns;
    d->db = strdup(ns->db);
    d->collection = strdup(ns->collection);
    d->type = strdup(ns->type ? ns->type : "collection");
    if (!d->db || !d->collection || !d->type) {
        free(d->db);
        free(d->collection);
        free(d->type);
        return -ENOMEM;
    }
    m->n_namespaces++;
    return 0;
}

const MsManifestNamespace *ms_manifest_find(const MsManifest *m, const char *db,
                                            const char *collection) {
    for (size_t i = 0; i < m->n_namespaces; i++)
        if (strcmp(m->namespaces[i].db, db) == 0 &&
            strcmp(m->namespaces[i].collection, collection) == 0)
            return &m->namespaces[i];
    return NULL;
}

void ms_manifest_clear(MsManifest *m) {
    free(m->kind);
    free(m->snapshot);
    free(m->tool_version);
    free(m->started_at);
    free(m->finished_at);
    free(m->source_uri);
    free(m->server_version);
    free(m->node);
    free(m->host);
    free(m->origin);
    free(m->archive_key);
    free(m->archive_format);
    free(m->compression);
    free(m->encryption_cipher);
    free(m->point_in_time_reason);
    for (size_t i = 0; i < m->n_ns_include; i++)
        free(m->ns_include[i]);
    free(m->ns_include);
    for (size_t i = 0; i < m->n_ns_exclude; i++)
        free(m->ns_exclude[i]);
    free(m->ns_exclude);
    for (size_t i = 0; i < m->n_namespaces; i++) {
        free(m->namespaces[i].db);
        free(m->namespaces[i].collection);
        free(m->namespaces[i].type);
    }
    free(m->namespaces);
    memset(m, 0, sizeof(*m));
}

char *ms_manifest_key_for_archive(const char *archive_key) {
    /* The suffix of the last path component: a prefix may contain ".archive" too. */
    const char *base = strrchr(archive_key, '/');
    base = base ? base + 1 : archive_key;
    const char *suffix = NULL;
    for (const char *p = strstr(base, MONGOSNAP_ARCHIVE_SUFFIX); p;
         p = strstr(p + 1, MONGOSNAP_ARCHIVE_SUFFIX))
        suffix = p;
    size_t stem = suffix ? (size_t) (suffix - archive_key) : strlen(archive_key);
    char *out = malloc(stem + strlen(MONGOSNAP_MANIFEST_SUFFIX) + 1);
    if (!out)
        return NULL;
    memcpy(out, archive_key, stem);
    strcpy(out + stem, MONGOSNAP_MANIFEST_SUFFIX);
    return out;
}

/* The worker's commands for chunked snapshots: gc, export, verify --metadata-only, remove --gc,
 * and naming the snapshots a damaged chunk breaks. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"
#include "engine/chunk-area.h"
#include "engine/chunked.h"
#include "engine/manifest.h"
#include "engine/snapshot-source.h"
#include "mongosnap/mongosnap.h"
#include "worker.h"

#define MANIFEST_MAX (64u << 20)

int worker_collect(MsStorage *st, const Args *a, bson_t *fields, MsError *e) {
    MsChunkGcResult res;
    int r = ms_chunk_gc(st, a->prefix, a->key, &worker_cancel_requested, &res, e);
    if (r < 0) {
        ms_error_prefix(e, "collecting the chunks of '%s': ", a->prefix ? a->prefix : "");
        return r;
    }
    if (res.skipped)
        log_info("garbage collection of '%s' skipped: a snapshot is being taken (%s); it runs "
                 "again after the next removal",
                 a->prefix ? a->prefix : "", res.skipped_because);
    else
        log_info("garbage collection of '%s': %" PRIu64 " of %" PRIu64 " chunks removed (%" PRIu64
                 " bytes), %" PRIu64 " named by %" PRIu64 " snapshots",
                 a->prefix ? a->prefix : "", res.removed, res.chunks, res.removed_bytes,
                 res.referenced, res.snapshots);
    bson_t gc;
    BSON_APPEND_DOCUMENT_BEGIN(fields, "gc", &gc);
    BSON_APPEND_BOOL(&gc, "skipped", res.skipped);
    BSON_APPEND_INT64(&gc, "snapshots", (int64_t) res.snapshots);
    BSON_APPEND_INT64(&gc, "chunks", (int64_t) res.chunks);
    BSON_APPEND_INT64(&gc, "referenced", (int64_t) res.referenced);
    BSON_APPEND_INT64(&gc, "removed", (int64_t) res.removed);
    BSON_APPEND_INT64(&gc, "removed_bytes", (int64_t) res.removed_bytes);
    BSON_APPEND_INT64(&gc, "stale_markers_removed", (int64_t) res.stale_markers_removed);
    BSON_APPEND_INT64(&gc, "temporaries_removed", (int64_t) res.temporaries_removed);
    bson_append_document_end(fields, &gc);
    ms_chunk_gc_result_clear(&res);
    return 0;
}

int worker_run_gc(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->prefix) {
        log_error("gc needs --prefix (the policy whose chunks to collect)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    bson_t fields = BSON_INITIALIZER;
    int r = worker_collect(storage, a, &fields, &e);
    if (r < 0)
        log_error("gc failed: %s", e.message);
    else if (!a->json)
        printf("garbage collection done\n");
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* The stock archive on standard output (or --output): what mongorestore --archive reads. Every
 * chunk is checked by id on the way and the index against the manifest at the end; an export
 * that fails leaves an incomplete file and says so (exit 3 for damage). */
int worker_run_export(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->snapshot) {
        log_error("export needs --snapshot KEY (with --store)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    bool to_stdout = !a->output || strcmp(a->output, "-") == 0;
    if (to_stdout && isatty(STDOUT_FILENO)) {
        log_error("export writes a binary archive: redirect standard output to a file (> "
                  "dump.archive) or give --output FILE");
        return MONGOSNAP_EXIT_USAGE;
    }
    int fd = to_stdout ? STDOUT_FILENO
                       : open(a->output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_error("cannot create %s: %s", a->output, strerror(errno));
        return MONGOSNAP_EXIT_USAGE;
    }
    MsError e = MS_ERROR_INIT;
    MsSnapshotSource src;
    int r = ms_snapshot_source_open_store(storage, a->snapshot, a->key, &src, &e);
    uint64_t bytes = 0;
    if (r == 0) {
        ms_progress_set_phase(p, "export");
        ms_progress_add_total(p, src.manifest.total_documents + src.manifest.oplog_entries);
        static uint8_t buf[1 << 20];
        ssize_t n;
        while ((n = ms_source_read(src.head, buf, sizeof(buf), &e)) > 0) {
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(fd, buf + off, (size_t) (n - off));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    r = ms_error_set(&e, errno ? errno : EIO, "writing the archive: %s",
                                     strerror(errno ? errno : EIO));
                    break;
                }
                off += w;
            }
            if (r < 0)
                break;
            bytes += (uint64_t) n;
            if (worker_cancel_requested) {
                r = ms_error_set(&e, ECANCELED, "the export was stopped");
                break;
            }
        }
        if (r == 0 && n < 0)
            r = (int) n;
        if (r == 0)
            r = ms_snapshot_source_check_stored(&src, &e);
        ms_snapshot_source_close(&src);
    }
    if (!to_stdout && close(fd) < 0 && r == 0)
        r = ms_error_set(&e, errno, "closing %s: %s", a->output, strerror(errno));
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_INT64(&fields, "archive_bytes", (int64_t) bytes);
    if (r < 0) {
        worker_name_broken_snapshots(storage, a, &e);
        log_error("export failed (the archive written is incomplete): %s", e.message);
    } else
        log_info("exported %s: %" PRIu64 " bytes of mongodump archive", a->snapshot, bytes);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* The manifest of a snapshot key (name, manifest or archive key). */
static int read_manifest(MsStorage *st, const char *key, MsManifest *m, char **ret_manifest_key,
                         MsError *e) {
    _cleanup_free_ char *mk = NULL;
    if (worker_has_suffix(key, MONGOSNAP_MANIFEST_SUFFIX))
        mk = strdup(key);
    else if (worker_has_suffix(key, MS_CHUNKED_INDEX_SUFFIX))
        asprintf(&mk, "%.*s%s", (int) (strlen(key) - strlen(MS_CHUNKED_INDEX_SUFFIX)), key,
                 MONGOSNAP_MANIFEST_SUFFIX) < 0 ? (void) (mk = NULL) : (void) 0;
    else if (strstr(key, MONGOSNAP_ARCHIVE_SUFFIX))
        mk = ms_manifest_key_for_archive(key);
    else
        asprintf(&mk, "%s%s", key, MONGOSNAP_MANIFEST_SUFFIX) < 0 ? (void) (mk = NULL) : (void) 0;
    if (!mk)
        return ms_error_oom(e);
    _cleanup_free_ char *json = NULL;
    size_t len;
    int r = ms_storage_get(st, mk, MANIFEST_MAX, &json, &len, e);
    if (r == 0)
        r = ms_manifest_parse(json, len, m, e);
    if (r < 0)
        ms_error_prefix(e, "%s: ", mk);
    else
        *ret_manifest_key = TAKE_PTR(mk);
    return r;
}

static char *prefix_of(const char *manifest_key) {
    const char *slash = strrchr(manifest_key, '/');
    return slash ? strndup(manifest_key, (size_t) (slash - manifest_key)) : strdup("");
}

/* verify --metadata-only: a cheap daily check. A chunked snapshot: its index against the
 * manifest, and every chunk present in the area (not read). A single-object snapshot: its size. */
int worker_verify_metadata(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->snapshot) {
        log_error("verify --metadata-only needs --snapshot KEY (with --store)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_manifest_clear) MsManifest m = {0};
    _cleanup_free_ char *mk = NULL;
    int r = read_manifest(storage, a->snapshot, &m, &mk, &e);
    bson_t fields = BSON_INITIALIZER;
    uint64_t chunks = 0, missing_n = 0;
    if (r == 0 && ms_manifest_is_chunked(&m)) {
        MsChunkIndex idx = {0};
        uint64_t stored = 0;
        char sha[65] = "";
        r = ms_chunk_index_read(storage, m.archive_key, a->key, &idx, &stored, sha, &e);
        if (r == 0 && (stored != m.archive_size || strcmp(sha, m.archive_sha256) != 0))
            r = ms_error_set(&e, EBADMSG, "the chunk index %s does not match its manifest: the "
                                          "stored snapshot is damaged",
                             m.archive_key);
        _cleanup_free_ char *prefix = prefix_of(mk), *area = ms_chunk_area(prefix);
        uint8_t(*missing)[MS_CHUNK_ID_BYTES] = NULL;
        size_t n_missing = 0;
        if (r == 0)
            r = ms_chunk_missing(storage, area, &idx, &missing, &n_missing, &e);
        chunks = idx.n;
        missing_n = n_missing;
        if (r == 0 && n_missing > 0) {
            char hex[MS_CHUNK_ID_HEX + 1], users[1024] = "";
            ms_hex_encode(missing[0], MS_CHUNK_ID_BYTES, hex);
            MsError ue = MS_ERROR_INIT;
            ms_chunk_users(storage, prefix, a->key, missing[0], users, sizeof(users), &ue);
            r = ms_error_set(&e, EBADMSG,
                             "%zu of the %zu chunks of %s are missing from the store (first: %s, "
                             "which breaks snapshots: %s)",
                             n_missing, idx.n, m.snapshot ? m.snapshot : a->snapshot, hex,
                             users[0] ? users : "this one");
        }
        free(missing);
        ms_chunk_index_clear(&idx);
    } else if (r == 0) {
        MsStorageObject o = {0};
        r = ms_storage_stat(storage, m.archive_key, &o, &e);
        free(o.key);
        if (r == 0 && o.size != m.archive_size)
            r = ms_error_set(&e, EBADMSG, "%s is %" PRIu64 " bytes but its manifest says %" PRIu64,
                             m.archive_key, o.size, m.archive_size);
    }
    BSON_APPEND_BOOL(&fields, "metadata_only", true);
    BSON_APPEND_INT64(&fields, "chunks", (int64_t) chunks);
    BSON_APPEND_INT64(&fields, "missing_chunks", (int64_t) missing_n);
    if (r == 0 && !a->json)
        printf("metadata verified: %s%s\n", a->snapshot,
               ms_manifest_is_chunked(&m) ? " (index matches its manifest; every chunk present)"
                                          : " (the stored size matches the manifest)");
    else if (r < 0)
        log_error("verify failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* Our chunk messages name the chunk by its 64 hex digits (engine/chunked.c); find them. */
static bool find_chunk_id(const char *msg, uint8_t id[MS_CHUNK_ID_BYTES]) {
    for (const char *p = msg; *p; p++) {
        size_t n = 0;
        while (n < MS_CHUNK_ID_HEX && ms_hex_digit_value(p[n]) >= 0)
            n++;
        if (n == MS_CHUNK_ID_HEX && ms_hex_digit_value(p[n]) < 0) {
            for (size_t i = 0; i < MS_CHUNK_ID_BYTES; i++)
                id[i] = (uint8_t) (ms_hex_digit_value(p[2 * i]) << 4 | ms_hex_digit_value(p[2 * i + 1]));
            return true;
        }
        p += n ? n - 1 : 0;
    }
    return false;
}

void worker_name_broken_snapshots(MsStorage *st, const Args *a, MsError *e) {
    uint8_t id[MS_CHUNK_ID_BYTES];
    if (!a->snapshot || !e->code || !strstr(e->message, "chunk ") || !find_chunk_id(e->message, id))
        return;
    _cleanup_(ms_manifest_clear) MsManifest m = {0};
    _cleanup_free_ char *mk = NULL;
    MsError le = MS_ERROR_INIT;
    if (read_manifest(st, a->snapshot, &m, &mk, &le) < 0)
        return;
    _cleanup_free_ char *prefix = prefix_of(mk);
    char users[1024] = "";
    if (ms_chunk_users(st, prefix, a->key, id, users, sizeof(users), &le) < 0 || !users[0])
        return;
    size_t len = strlen(e->message);
    snprintf(e->message + len, sizeof(e->message) - len, "; that chunk breaks snapshots: %s", users);
}

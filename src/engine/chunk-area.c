/* Markers, the chunks a snapshot may reuse, and the garbage collector (chunk-area.h). */
#include "chunk-area.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/timeutil.h"
#include "progress.h" /* ms_now_usec */
#include "manifest.h"
#include "mongosnap/mongosnap.h"

#define LOCKS_DIR "locks"
#define SNAPSHOT_MARKER "snapshot-"
#define GC_MARKER "gc-"
#define MANIFEST_MAX (64u << 20)
#define WAIT_POLL_USEC (1000000ULL)

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- markers ---- */

static int write_marker(MsChunkLock *l, MsError *e) {
    char body[256], host[128] = "unknown";
    gethostname(host, sizeof(host) - 1);
    int n = snprintf(body, sizeof(body), "{\"host\": \"%s\", \"pid\": %d}\n", host, (int) getpid());
    int r = ms_storage_put(l->storage, l->key, body, (size_t) n, e);
    if (r == 0)
        l->written_usec = ms_now_usec();
    return r;
}

/* The store's own "now": the modification time it gives a marker just written. */
static int store_now(MsStorage *st, const char *key, int64_t *ret, MsError *e) {
    MsStorageObject o = {0};
    int r = ms_storage_stat(st, key, &o, e);
    free(o.key);
    if (r == 0)
        *ret = o.mtime_usec;
    return r;
}

/* The first live marker of the given kind (a key to free), or NULL. */
static int find_live(MsStorage *st, const char *area, const char *kind, int64_t now,
                     char **ret, MsError *e) {
    *ret = NULL;
    char prefix[1024];
    snprintf(prefix, sizeof(prefix), "%s/" LOCKS_DIR "/%s", area, kind);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list(st, prefix, &objs, &n, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && !*ret; i++)
        if (objs[i].mtime_usec > now - (int64_t) MS_CHUNK_LOCK_STALE_USEC)
            *ret = strdup(objs[i].key);
    ms_storage_objects_free(objs, n);
    return 0;
}

static int lock_new(MsStorage *st, const char *area, const char *kind, const char *name,
                    MsChunkLock *ret, MsError *e) {
    *ret = (MsChunkLock){.storage = st};
    uint8_t rnd[6] = {0};
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd))
        memcpy(rnd, &(uint64_t){ms_now_usec()}, sizeof(rnd));
    char hex[13];
    ms_hex_encode(rnd, sizeof(rnd), hex);
    if (asprintf(&ret->key, "%s/" LOCKS_DIR "/%s%s%s%s", area, kind, name ? name : "",
                 name ? "-" : "", hex) < 0) {
        ret->key = NULL;
        return ms_error_oom(e);
    }
    return write_marker(ret, e);
}

int ms_chunk_lock_snapshot(MsStorage *st, const char *area, const char *name, uint64_t wait_usec,
                           MsChunkLock *ret, MsError *e) {
    int r = lock_new(st, area, SNAPSHOT_MARKER, name, ret, e);
    if (r < 0) {
        ms_chunk_lock_release(ret);
        return r;
    }
    uint64_t start = ms_now_usec();
    for (;;) {
        int64_t now;
        _cleanup_free_ char *gc = NULL;
        r = store_now(st, ret->key, &now, e);
        if (r == 0)
            r = find_live(st, area, GC_MARKER, now, &gc, e);
        if (r < 0 || !gc)
            break;
        if (ms_now_usec() - start >= wait_usec) {
            r = ms_error_set(e, EBUSY,
                             "the chunk area %s is being garbage-collected (marker %s); the "
                             "snapshot did not start: try again when it has finished",
                             area, gc);
            break;
        }
        log_info("waiting for the garbage collection of %s to finish (%s)", area, gc);
        usleep(WAIT_POLL_USEC);
        r = ms_chunk_lock_refresh(ret, e);
        if (r < 0)
            break;
    }
    if (r < 0)
        ms_chunk_lock_release(ret);
    return r;
}

int ms_chunk_lock_refresh(MsChunkLock *l, MsError *e) {
    if (!l->key || ms_now_usec() - l->written_usec < MS_CHUNK_LOCK_REFRESH_USEC)
        return 0;
    return write_marker(l, e);
}

void ms_chunk_lock_release(MsChunkLock *l) {
    if (l->key) {
        MsError ignore = MS_ERROR_INIT;
        if (ms_storage_remove(l->storage, l->key, &ignore) < 0)
            log_warning("cannot remove the marker %s (it goes stale in %llu minutes): %s", l->key,
                        (unsigned long long) (MS_CHUNK_LOCK_STALE_USEC / 60000000ULL),
                        ignore.message);
    }
    free(l->key);
    *l = (MsChunkLock){0};
}

/* ---- committed chunked snapshots under a prefix ---- */

typedef struct Committed {
    char *index_key;
    char *finished_at;
    uint64_t size;
    char sha256[65];
    bool encrypted;
} Committed;

static void committed_free(Committed *c, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(c[i].index_key);
        free(c[i].finished_at);
    }
    free(c);
}

/* The manifests directly under prefix (not in sub-directories: oplog slices live there). */
static int list_committed(MsStorage *st, const char *prefix, Committed **ret, size_t *ret_n,
                          MsError *e) {
    *ret = NULL;
    *ret_n = 0;
    char dir[1024];
    size_t plen = prefix ? strlen(prefix) : 0;
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    snprintf(dir, sizeof(dir), "%.*s%s", (int) plen, prefix ? prefix : "", plen ? "/" : "");
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list(st, dir, &objs, &n, e);
    if (r < 0)
        return r;
    Committed *out = calloc(n ? n : 1, sizeof(*out));
    size_t k = 0;
    if (!out) {
        ms_storage_objects_free(objs, n);
        return ms_error_oom(e);
    }
    for (size_t i = 0; i < n && r == 0; i++) {
        const char *rest = objs[i].key + strlen(dir);
        if (strchr(rest, '/') || !has_suffix(rest, MONGOSNAP_MANIFEST_SUFFIX))
            continue;
        _cleanup_free_ char *json = NULL;
        size_t len;
        r = ms_storage_get(st, objs[i].key, MANIFEST_MAX, &json, &len, e);
        if (r == -ENOENT) { /* removed meanwhile (retention) */
            ms_error_clear(e);
            r = 0;
            continue;
        }
        if (r < 0)
            break;
        _cleanup_(ms_manifest_clear) MsManifest m = {0};
        r = ms_manifest_parse(json, len, &m, e);
        if (r < 0) {
            ms_error_prefix(e, "%s: ", objs[i].key);
            break;
        }
        if (!ms_manifest_is_chunked(&m))
            continue;
        out[k] = (Committed){.index_key = strdup(m.archive_key),
                             .finished_at = strdup(m.finished_at ? m.finished_at : ""),
                             .size = m.archive_size,
                             .encrypted = m.encryption_cipher != NULL};
        memcpy(out[k].sha256, m.archive_sha256, 65);
        if (!out[k].index_key || !out[k].finished_at)
            r = ms_error_oom(e);
        k++;
    }
    ms_storage_objects_free(objs, n);
    if (r < 0) {
        committed_free(out, k);
        return r;
    }
    *ret = out;
    *ret_n = k;
    return 0;
}

static int by_finished_desc(const void *a, const void *b) {
    return -strcmp(((const Committed *) a)->finished_at, ((const Committed *) b)->finished_at);
}

/* One committed snapshot's index, checked against its manifest. */
static int read_index(MsStorage *st, const Committed *c, const MsEncryptKey *key, MsChunkIndex *ret,
                      MsError *e) {
    uint64_t stored = 0;
    char sha[65];
    int r = ms_chunk_index_read(st, c->index_key, key, ret, &stored, sha, e);
    if (r < 0)
        return r;
    if (stored != c->size || strcmp(sha, c->sha256) != 0) {
        ms_chunk_index_clear(ret);
        return ms_error_set(e, EBADMSG,
                            "the chunk index %s does not match its manifest (size or SHA-256): "
                            "it is damaged",
                            c->index_key);
    }
    return 0;
}

int ms_chunk_known_set(MsStorage *st, const char *prefix, const MsEncryptKey *key, unsigned newest,
                       MsChunkSet **ret, unsigned *ret_indexes, MsError *e) {
    Committed *c;
    size_t n;
    int r = list_committed(st, prefix, &c, &n, e);
    if (r < 0)
        return r;
    qsort(c, n, sizeof(*c), by_finished_desc);
    MsChunkSet *set = ms_chunk_set_new();
    unsigned used = 0;
    for (size_t i = 0; set && i < n && used < newest; i++) {
        MsChunkIndex idx;
        MsError le = MS_ERROR_INIT;
        /* With another key (after a rotation) or none, its chunks are not ours to reuse. */
        if (c[i].encrypted != (key != NULL) || read_index(st, &c[i], key, &idx, &le) < 0) {
            if (le.code)
                log_warning("not reusing the chunks of %s: %s", c[i].index_key, le.message);
            continue;
        }
        for (size_t j = 0; j < idx.n; j++)
            ms_chunk_set_add(set, idx.entries[j].id);
        ms_chunk_index_clear(&idx);
        used++;
    }
    committed_free(c, n);
    if (!set)
        return ms_error_oom(e);
    *ret = set;
    if (ret_indexes)
        *ret_indexes = used;
    return 0;
}

/* ---- the collector ---- */

void ms_chunk_gc_result_clear(MsChunkGcResult *r) {
    free(r->skipped_because);
    *r = (MsChunkGcResult){0};
}

/* Every refresh of the collector's marker, look again for snapshots: one that found the
 * marker stale (a storage call that outlasted MS_CHUNK_LOCK_STALE_USEC) may have started, and
 * the collector then stops removing. Returns 1 when one has. */
static int still_alone(MsChunkLock *lock, const char *area, MsChunkGcResult *ret, MsError *e) {
    if (ms_now_usec() - lock->written_usec < MS_CHUNK_LOCK_REFRESH_USEC)
        return 0;
    int r = write_marker(lock, e);
    int64_t now;
    _cleanup_free_ char *snap = NULL;
    if (r == 0)
        r = store_now(lock->storage, lock->key, &now, e);
    if (r == 0)
        r = find_live(lock->storage, area, SNAPSHOT_MARKER, now, &snap, e);
    if (r < 0)
        return r;
    if (!snap)
        return 0;
    ret->skipped = true;
    ret->skipped_because = TAKE_PTR(snap);
    return 1;
}

int ms_chunk_gc(MsStorage *st, const char *prefix, const MsEncryptKey *key,
                const volatile sig_atomic_t *cancel, MsChunkGcResult *ret, MsError *e) {
    *ret = (MsChunkGcResult){0};
    _cleanup_free_ char *area = ms_chunk_area(prefix);
    if (!area)
        return ms_error_oom(e);
    MsChunkLock lock;
    int r = lock_new(st, area, GC_MARKER, NULL, &lock, e);
    int64_t now = 0;
    if (r == 0)
        r = store_now(st, lock.key, &now, e);
    _cleanup_free_ char *snap = NULL;
    if (r == 0)
        r = find_live(st, area, SNAPSHOT_MARKER, now, &snap, e);
    if (r < 0 || snap) {
        ms_chunk_lock_release(&lock);
        if (r == 0) {
            ret->skipped = true;
            ret->skipped_because = TAKE_PTR(snap);
        }
        return r;
    }

    /* Everything a committed index names is kept; an index that cannot be read stops the
     * collection before anything is removed (its chunks are unknown). */
    MsChunkSet *referenced = ms_chunk_set_new();
    Committed *c = NULL;
    /* r > 0 below: a snapshot started meanwhile (still_alone), stop without error. */
    size_t n = 0;
    r = referenced ? list_committed(st, prefix, &c, &n, e) : ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        MsChunkIndex idx;
        if (c[i].encrypted && !key) {
            r = ms_error_set(e, ENOKEY,
                             "snapshot index %s is encrypted: garbage collection needs the "
                             "policy's key (--key-file) to know which chunks it names; nothing "
                             "was removed",
                             c[i].index_key);
            break;
        }
        r = read_index(st, &c[i], key, &idx, e);
        if (r < 0) {
            ms_error_prefix(e, "nothing was removed: ");
            break;
        }
        for (size_t j = 0; j < idx.n; j++)
            ms_chunk_set_add(referenced, idx.entries[j].id);
        ms_chunk_index_clear(&idx);
        ret->snapshots++;
        r = still_alone(&lock, area, ret, e);
    }
    committed_free(c, n);
    ret->referenced = ms_chunk_set_size(referenced);

    MsStorageObject *objs = NULL;
    size_t n_objs = 0;
    char area_dir[1024];
    snprintf(area_dir, sizeof(area_dir), "%s/", area);
    /* Unfinished chunk writes of killed snapshots: no snapshot is writing now (its marker
     * would have stopped us), so every temporary file in the area is a leftover. */
    unsigned temps = 0;
    if (r == 0 && st->ops->clean_stale(st, area_dir, NULL, &temps, e) < 0) {
        log_warning("cannot remove unfinished chunk writes under %s: %s", area_dir, e->message);
        ms_error_clear(e);
    }
    ret->temporaries_removed = temps;
    if (r == 0)
        r = ms_storage_list(st, area_dir, &objs, &n_objs, e);
    if (r == 0)
        r = still_alone(&lock, area, ret, e);
    char locks_dir[1040];
    snprintf(locks_dir, sizeof(locks_dir), "%s/" LOCKS_DIR "/", area);
    for (size_t i = 0; r == 0 && i < n_objs; i++) {
        uint8_t id[MS_CHUNK_ID_BYTES];
        if (strncmp(objs[i].key, locks_dir, strlen(locks_dir)) == 0) {
            /* markers a crash left behind (ours is live) */
            if (strcmp(objs[i].key, lock.key) != 0 &&
                objs[i].mtime_usec <= now - (int64_t) MS_CHUNK_LOCK_STALE_USEC &&
                ms_storage_remove(st, objs[i].key, e) == 0)
                ret->stale_markers_removed++;
            continue;
        }
        if (!ms_chunk_key_parse(area, objs[i].key, id))
            continue; /* not ours to judge */
        if (cancel && *cancel) {
            r = ms_error_set(e, ECANCELED, "garbage collection was stopped after removing %" PRIu64
                                           " chunks (they were named by no snapshot)",
                             ret->removed);
            break;
        }
        ret->chunks++;
        if (ms_chunk_set_has(referenced, id))
            continue;
        r = ms_storage_remove(st, objs[i].key, e);
        if (r == 0) {
            ret->removed++;
            ret->removed_bytes += objs[i].size;
            r = still_alone(&lock, area, ret, e);
        }
    }
    if (r > 0) /* a snapshot started: stopped, what was removed was unreferenced */
        r = 0;
    ms_storage_objects_free(objs, n_objs);
    ms_chunk_set_free(referenced);
    ms_chunk_lock_release(&lock);
    return r;
}

/* ---- presence, and who needs a chunk ---- */

int ms_chunk_missing(MsStorage *st, const char *area, const MsChunkIndex *idx,
                     uint8_t (**ret)[MS_CHUNK_ID_BYTES], size_t *ret_n, MsError *e) {
    *ret = NULL;
    *ret_n = 0;
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/", area);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list(st, dir, &objs, &n, e);
    if (r < 0)
        return r;
    MsChunkSet *present = ms_chunk_set_new();
    for (size_t i = 0; present && i < n; i++) {
        uint8_t id[MS_CHUNK_ID_BYTES];
        /* an empty object is no chunk: even an empty chunk's zstd frame has bytes */
        if (objs[i].size > 0 && ms_chunk_key_parse(area, objs[i].key, id))
            ms_chunk_set_add(present, id);
    }
    ms_storage_objects_free(objs, n);
    if (!present)
        return ms_error_oom(e);
    uint8_t(*missing)[MS_CHUNK_ID_BYTES] = NULL;
    size_t k = 0;
    MsChunkSet *seen = ms_chunk_set_new();
    for (size_t i = 0; seen && i < idx->n; i++) {
        if (ms_chunk_set_has(present, idx->entries[i].id) || !ms_chunk_set_add(seen, idx->entries[i].id))
            continue;
        void *grown = realloc(missing, (k + 1) * MS_CHUNK_ID_BYTES);
        if (!grown) {
            r = ms_error_oom(e);
            break;
        }
        missing = grown;
        memcpy(missing[k++], idx->entries[i].id, MS_CHUNK_ID_BYTES);
    }
    if (!seen)
        r = ms_error_oom(e);
    ms_chunk_set_free(seen);
    ms_chunk_set_free(present);
    if (r < 0) {
        free(missing);
        return r;
    }
    *ret = missing;
    *ret_n = k;
    return 0;
}

int ms_chunk_users(MsStorage *st, const char *prefix, const MsEncryptKey *key,
                   const uint8_t id[MS_CHUNK_ID_BYTES], char *buf, size_t size, MsError *e) {
    buf[0] = '\0';
    Committed *c;
    size_t n;
    int r = list_committed(st, prefix, &c, &n, e);
    if (r < 0)
        return r;
    qsort(c, n, sizeof(*c), by_finished_desc);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        MsChunkIndex idx;
        MsError le = MS_ERROR_INIT;
        if (c[i].encrypted != (key != NULL) || read_index(st, &c[i], key, &idx, &le) < 0)
            continue;
        bool names = false;
        for (size_t j = 0; j < idx.n && !names; j++)
            names = memcmp(idx.entries[j].id, id, MS_CHUNK_ID_BYTES) == 0;
        ms_chunk_index_clear(&idx);
        if (!names)
            continue;
        /* the snapshot's name: the index key's last component without ".index" */
        const char *base = strrchr(c[i].index_key, '/');
        base = base ? base + 1 : c[i].index_key;
        int w = snprintf(buf + used, size - used, "%s%.*s", used ? ", " : "",
                         (int) (strlen(base) - strlen(MS_CHUNKED_INDEX_SUFFIX)), base);
        if (w < 0 || (size_t) w >= size - used)
            break;
        used += (size_t) w;
    }
    committed_free(c, n);
    return 0;
}

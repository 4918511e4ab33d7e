/* Chunked snapshots (chunked.h): ids, the set of known ids, the index object, the chunking
 * sink and the reading source. */
#include "chunked.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/hex.h"
#include "common/macro.h"
#include "io/cdc.h"
#include "io/chain.h"

#define INDEX_MAGIC "MSIDX1\n"
#define INDEX_MAGIC_LEN 8 /* with its NUL */
#define INDEX_ENTRY_BYTES (MS_CHUNK_ID_BYTES + 4)
/* An index bigger than this is damage, not a snapshot: 2^26 entries of ~16 KiB is 1 PiB. */
#define INDEX_MAX_ENTRIES (UINT64_C(1) << 26)
#define DEFAULT_THREADS 4u
#define DEFAULT_WINDOW 4u

/* ---- keys and ids ---- */

/* Outside the policy's prefix, so that listing a policy's snapshots never walks its chunks
 * (millions of objects for a large deployment), and under a name no policy can have (a policy
 * name begins with a letter or digit), so that no policy's prefix lists another's chunks. */
char *ms_chunk_area(const char *prefix) {
    char *s = NULL;
    size_t n = prefix ? strlen(prefix) : 0;
    while (n > 0 && prefix[n - 1] == '/')
        n--;
    if (n == 0)
        return strdup(MS_CHUNK_AREA_ROOT);
    return asprintf(&s, MS_CHUNK_AREA_ROOT "/%.*s", (int) n, prefix) < 0 ? NULL : s;
}

void ms_chunk_key(const char *area, const uint8_t id[MS_CHUNK_ID_BYTES], char *buf, size_t size) {
    char hex[MS_CHUNK_ID_HEX + 1];
    ms_hex_encode(id, MS_CHUNK_ID_BYTES, hex);
    snprintf(buf, size, "%s/%.2s/%s", area, hex, hex);
}

bool ms_chunk_key_parse(const char *area, const char *key, uint8_t ret_id[MS_CHUNK_ID_BYTES]) {
    size_t a = strlen(area);
    if (strncmp(key, area, a) != 0 || key[a] != '/')
        return false;
    const char *p = key + a + 1;
    if (strlen(p) != 3 + MS_CHUNK_ID_HEX || p[2] != '/' || strncmp(p, p + 3, 2) != 0)
        return false;
    for (size_t i = 0; i < MS_CHUNK_ID_BYTES; i++) {
        int hi = ms_hex_digit_value(p[3 + 2 * i]), lo = ms_hex_digit_value(p[4 + 2 * i]);
        /* lower-case only: the key is the id's one spelling */
        if (hi < 0 || lo < 0 || (p[3 + 2 * i] >= 'A' && p[3 + 2 * i] <= 'F') ||
            (p[4 + 2 * i] >= 'A' && p[4 + 2 * i] <= 'F'))
            return false;
        ret_id[i] = (uint8_t) (hi << 4 | lo);
    }
    return true;
}

void ms_chunk_id_key_init(MsChunkIdKey *k, const MsEncryptKey *key) {
    *k = (MsChunkIdKey){.keyed = key != NULL};
    if (!key)
        return;
    static const char label[] = "mongosnap chunk id";
    unsigned int len = sizeof(k->k);
    HMAC(EVP_sha256(), key->key, MS_ENCRYPT_KEY_BYTES, (const unsigned char *) label,
         sizeof(label) - 1, k->k, &len);
}

void ms_chunk_id(const MsChunkIdKey *k, const void *buf, size_t len, uint8_t ret[MS_CHUNK_ID_BYTES]) {
    unsigned int n = MS_CHUNK_ID_BYTES;
    if (k->keyed)
        HMAC(EVP_sha256(), k->k, sizeof(k->k), buf, len, ret, &n);
    else
        EVP_Digest(buf, len, ret, &n, EVP_sha256(), NULL);
}

/* ---- the set of ids: open addressing on the id's first 8 bytes (ids are uniform) ---- */

struct MsChunkSet {
    uint8_t (*slots)[MS_CHUNK_ID_BYTES];
    uint8_t *used;
    size_t cap, n;
};

MsChunkSet *ms_chunk_set_new(void) {
    MsChunkSet *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cap = 1024;
    s->slots = calloc(s->cap, MS_CHUNK_ID_BYTES);
    s->used = calloc(s->cap, 1);
    if (!s->slots || !s->used)
        return ms_chunk_set_free(s);
    return s;
}

MsChunkSet *ms_chunk_set_free(MsChunkSet *s) {
    if (s) {
        free(s->slots);
        free(s->used);
        free(s);
    }
    return NULL;
}

static size_t slot_of(const MsChunkSet *s, const uint8_t id[MS_CHUNK_ID_BYTES]) {
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    size_t i = (size_t) (h & (s->cap - 1));
    while (s->used[i] && memcmp(s->slots[i], id, MS_CHUNK_ID_BYTES) != 0)
        i = (i + 1) & (s->cap - 1);
    return i;
}

bool ms_chunk_set_has(const MsChunkSet *s, const uint8_t id[MS_CHUNK_ID_BYTES]) {
    return s && s->used[slot_of(s, id)];
}

static bool set_grow(MsChunkSet *s) {
    MsChunkSet bigger = {.cap = s->cap * 2};
    bigger.slots = calloc(bigger.cap, MS_CHUNK_ID_BYTES);
    bigger.used = calloc(bigger.cap, 1);
    if (!bigger.slots || !bigger.used) {
        free(bigger.slots);
        free(bigger.used);
        return false;
    }
    for (size_t i = 0; i < s->cap; i++)
        if (s->used[i]) {
            size_t j = slot_of(&bigger, s->slots[i]);
            memcpy(bigger.slots[j], s->slots[i], MS_CHUNK_ID_BYTES);
            bigger.used[j] = 1;
            bigger.n++;
        }
    free(s->slots);
    free(s->used);
    *s = bigger;
    return true;
}

bool ms_chunk_set_add(MsChunkSet *s, const uint8_t id[MS_CHUNK_ID_BYTES]) {
    if ((s->n + 1) * 2 > s->cap && !set_grow(s))
        abort(); /* out of memory in a set of ids: nothing sensible to continue with */
    size_t i = slot_of(s, id);
    if (s->used[i])
        return false;
    memcpy(s->slots[i], id, MS_CHUNK_ID_BYTES);
    s->used[i] = 1;
    s->n++;
    return true;
}

size_t ms_chunk_set_size(const MsChunkSet *s) {
    return s ? s->n : 0;
}

/* ---- the index object ---- */

void ms_chunk_index_clear(MsChunkIndex *idx) {
    free(idx->entries);
    *idx = (MsChunkIndex){0};
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int k = 0; k < n; k++, v >>= 8)
        p[k] = (uint8_t) v;
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--)
        v = (v << 8) | p[k];
    return v;
}

static int index_write(MsStorage *st, const char *key, const MsChunkEntry *entries, size_t n,
                       const MsEncryptKey *enc_key, uint64_t *ret_stored, char ret_sha[65],
                       MsError *e) {
    MsSink *store;
    int r = ms_storage_open_write(st, key, &store, e);
    if (r < 0)
        return r;
    MsChainResults cres;
    MsSinkChainSpec spec = {.compression = MS_COMPRESSION_ZSTD, .key = enc_key};
    MsSink *head;
    r = ms_sink_chain_new(store, &spec, &cres, &head, e);
    if (r < 0)
        return r;
    uint8_t hdr[INDEX_MAGIC_LEN + 8];
    memcpy(hdr, INDEX_MAGIC, INDEX_MAGIC_LEN);
    put_le(hdr + INDEX_MAGIC_LEN, n, 8);
    r = head->write(head, hdr, sizeof(hdr), e);
    uint8_t rec[INDEX_ENTRY_BYTES * 256];
    for (size_t i = 0; r == 0 && i < n;) {
        size_t k = 0;
        for (; k < 256 && i < n; k++, i++) {
            memcpy(rec + k * INDEX_ENTRY_BYTES, entries[i].id, MS_CHUNK_ID_BYTES);
            put_le(rec + k * INDEX_ENTRY_BYTES + MS_CHUNK_ID_BYTES, entries[i].len, 4);
        }
        r = head->write(head, rec, k * INDEX_ENTRY_BYTES, e);
    }
    if (r == 0)
        r = head->finish(head, e);
    head->free(head);
    if (r < 0)
        return r;
    *ret_stored = cres.stored_bytes;
    memcpy(ret_sha, cres.stored_sha256, 65);
    return 0;
}

int ms_chunk_index_read(MsStorage *st, const char *key, const MsEncryptKey *enc_key,
                        MsChunkIndex *ret, uint64_t *ret_stored, char ret_sha256[65], MsError *e) {
    *ret = (MsChunkIndex){0};
    MsSource *store;
    int r = ms_storage_open_read(st, key, &store, e);
    if (r < 0)
        return r;
    MsChainResults cres;
    MsSource *head;
    r = ms_source_chain_new(store, MS_CHAIN_PLAIN, enc_key, &cres, &head, e);
    if (r < 0)
        return r;
    _cleanup_(ms_source_freep) MsSource *src = head;
    uint8_t hdr[INDEX_MAGIC_LEN + 8];
    ssize_t got = ms_source_read_up_to(src, hdr, sizeof(hdr), e);
    if (got < 0)
        return (int) got;
    if ((size_t) got != sizeof(hdr) || memcmp(hdr, INDEX_MAGIC, INDEX_MAGIC_LEN) != 0)
        return ms_error_set(e, EBADMSG, "chunk index '%s' is damaged: no index header", key);
    uint64_t n = get_le(hdr + INDEX_MAGIC_LEN, 8);
    if (n > INDEX_MAX_ENTRIES)
        return ms_error_set(e, EBADMSG, "chunk index '%s' is damaged: it claims %" PRIu64 " chunks",
                            key, n);
    MsChunkIndex idx = {.entries = calloc(n ? n : 1, sizeof(MsChunkEntry)), .n = (size_t) n};
    if (!idx.entries)
        return ms_error_oom(e);
    uint8_t rec[INDEX_ENTRY_BYTES];
    for (size_t i = 0; i < idx.n; i++) {
        got = ms_source_read_up_to(src, rec, sizeof(rec), e);
        if (got != (ssize_t) sizeof(rec)) {
            ms_chunk_index_clear(&idx);
            return got < 0 ? (int) got
                           : ms_error_set(e, EBADMSG,
                                          "chunk index '%s' is damaged: it ends after %zu of its "
                                          "%" PRIu64 " chunks",
                                          key, i, n);
        }
        memcpy(idx.entries[i].id, rec, MS_CHUNK_ID_BYTES);
        idx.entries[i].len = (uint32_t) get_le(rec + MS_CHUNK_ID_BYTES, 4);
        idx.total += idx.entries[i].len;
    }
    got = ms_source_read_up_to(src, rec, 1, e);
    if (got != 0) {
        ms_chunk_index_clear(&idx);
        return got < 0 ? (int) got
                       : ms_error_set(e, EBADMSG, "chunk index '%s' is damaged: bytes after its last chunk",
                                      key);
    }
    if (ret_stored)
        *ret_stored = cres.stored_bytes;
    if (ret_sha256)
        memcpy(ret_sha256, cres.stored_sha256, 65);
    *ret = idx;
    return 0;
}

/* ---- the write side ---- */

typedef struct Job {
    uint64_t seq;
    uint8_t *data;
    size_t len;
    struct Job *next;
} Job;

typedef struct ChunkedSink {
    MsSink base;
    MsChunkedSpec spec;
    MsCdcParams cp;
    MsChunkIdKey idk;
    MsChunkedResults *res;
    uint8_t *buf;
    size_t cap, start, end; /* pending bytes: buf[start, end) */
    uint64_t next_seq;

    pthread_mutex_t lock;
    pthread_cond_t work, space;
    Job *head, *tail;
    unsigned queued, max_queued;
    bool closing;
    pthread_t threads[16];
    unsigned n_threads;
    pthread_t keepalive;
    bool keepalive_running;
    MsChunkEntry *entries; /* by seq, written under lock */
    size_t entries_cap;
    MsChunkSet *stored; /* stored (or being stored) by this snapshot */
    bool failed;
    MsError error;
    bool finished;
} ChunkedSink;

static void sink_fail(ChunkedSink *s, const MsError *err) {
    pthread_mutex_lock(&s->lock);
    if (!s->failed) {
        s->failed = true;
        s->error = *err;
    }
    pthread_cond_broadcast(&s->space);
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
}

static int store_chunk(ChunkedSink *s, const uint8_t id[MS_CHUNK_ID_BYTES], const uint8_t *data,
                       size_t len, uint64_t *ret_stored, MsError *e) {
    char key[1024];
    ms_chunk_key(s->spec.area, id, key, sizeof(key));
    MsSink *store;
    int r = ms_storage_open_write_unsynced(s->spec.storage, key, &store, e);
    if (r < 0)
        return r;
    MsChainResults cres;
    MsSinkChainSpec spec = {.compression = MS_COMPRESSION_ZSTD, .level = s->spec.level, .key = s->spec.key};
    MsSink *head;
    r = ms_sink_chain_new(store, &spec, &cres, &head, e);
    if (r < 0)
        return r;
    r = head->write(head, data, len, e);
    if (r == 0)
        r = head->finish(head, e);
    head->free(head);
    if (r == 0)
        *ret_stored = cres.stored_bytes;
    return r;
}

static void *chunk_worker(void *userdata) {
    ChunkedSink *s = userdata;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->head && !s->closing && !s->failed)
            pthread_cond_wait(&s->work, &s->lock);
        if (s->failed || !s->head) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        Job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        s->queued--;
        pthread_cond_signal(&s->space);
        pthread_mutex_unlock(&s->lock);

        MsChunkEntry ent = {.len = (uint32_t) j->len};
        ms_chunk_id(&s->idk, j->data, j->len, ent.id);
        pthread_mutex_lock(&s->lock);
        s->entries[j->seq] = ent;
        bool need = !ms_chunk_set_has(s->spec.known, ent.id) && ms_chunk_set_add(s->stored, ent.id);
        pthread_mutex_unlock(&s->lock);
        if (need) {
            MsError err = MS_ERROR_INIT;
            uint64_t stored = 0;
            if (store_chunk(s, ent.id, j->data, j->len, &stored, &err) < 0) {
                sink_fail(s, &err);
            } else {
                __atomic_add_fetch(&s->res->stored_bytes, stored, __ATOMIC_RELAXED);
                __atomic_add_fetch(&s->res->chunks_stored, 1, __ATOMIC_RELAXED);
            }
        }
        free(j->data);
        free(j);
    }
}

static int enqueue(ChunkedSink *s, const uint8_t *data, size_t len, MsError *e) {
    Job *j = malloc(sizeof(*j));
    uint8_t *copy = malloc(len ? len : 1);
    if (!j || !copy) {
        free(j);
        free(copy);
        return ms_error_oom(e);
    }
    memcpy(copy, data, len);
    *j = (Job){.data = copy, .len = len};
    pthread_mutex_lock(&s->lock);
    while (s->queued >= s->max_queued && !s->failed)
        pthread_cond_wait(&s->space, &s->lock);
    if (s->failed) {
        MsError err = s->error;
        pthread_mutex_unlock(&s->lock);
        free(copy);
        free(j);
        *e = err;
        return -err.code;
    }
    if (s->next_seq >= s->entries_cap) {
        size_t cap = s->entries_cap ? s->entries_cap * 2 : 4096;
        MsChunkEntry *grown = realloc(s->entries, cap * sizeof(*grown));
        if (!grown) {
            pthread_mutex_unlock(&s->lock);
            free(copy);
            free(j);
            return ms_error_oom(e);
        }
        s->entries = grown;
        s->entries_cap = cap;
    }
    j->seq = s->next_seq++;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->queued++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Cut every chunk whose end is certain (final: the stream ended, the rest is chunks too). */
static int cut_pending(ChunkedSink *s, bool final, MsError *e) {
    while (s->end > s->start && (final || s->end - s->start >= s->cp.max)) {
        size_t n = ms_cdc_cut(&s->cp, s->buf + s->start, s->end - s->start);
        int r = enqueue(s, s->buf + s->start, n, e);
        if (r < 0)
            return r;
        s->start += n;
    }
    if (s->start > 0 && s->start >= s->cap / 2) {
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->end -= s->start;
        s->start = 0;
    }
    return 0;
}

static int chunked_write(MsSink *sink, const void *data, size_t len, MsError *e) {
    ChunkedSink *s = (ChunkedSink *) sink;
    const uint8_t *p = data;
    s->res->raw_bytes += len;
    while (len > 0) {
        size_t room = s->cap - s->end;
        if (room == 0) {
            int r = cut_pending(s, false, e);
            if (r < 0)
                return r;
            room = s->cap - s->end;
        }
        size_t n = MS_MIN(room, len);
        memcpy(s->buf + s->end, p, n);
        s->end += n;
        p += n;
        len -= n;
    }
    return s->end - s->start >= s->cp.max ? cut_pending(s, false, e) : 0;
}

static void *keepalive_main(void *userdata) {
    ChunkedSink *s = userdata;
    pthread_mutex_lock(&s->lock);
    while (!s->closing && !s->failed) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t ns = (uint64_t) until.tv_nsec + (s->spec.keepalive_usec % 1000000) * 1000;
        until.tv_sec += (time_t) (s->spec.keepalive_usec / 1000000 + ns / 1000000000);
        until.tv_nsec = (long) (ns % 1000000000);
        pthread_cond_timedwait(&s->work, &s->lock, &until);
        if (s->closing || s->failed)
            break;
        pthread_mutex_unlock(&s->lock);
        MsError err = MS_ERROR_INIT;
        if (s->spec.keepalive(s->spec.keepalive_userdata, &err) < 0)
            sink_fail(s, &err);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void stop_workers(ChunkedSink *s) {
    pthread_mutex_lock(&s->lock);
    s->closing = true;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
    if (s->keepalive_running)
        pthread_join(s->keepalive, NULL);
    s->keepalive_running = false;
}

static int chunked_finish(MsSink *sink, MsError *e) {
    ChunkedSink *s = (ChunkedSink *) sink;
    if (s->finished)
        return 0;
    int r = cut_pending(s, true, e);
    stop_workers(s);
    if (r < 0)
        return r;
    if (s->failed) {
        *e = s->error;
        return -s->error.code;
    }
    /* Every chunk durable before the index that names them is committed. */
    r = ms_storage_sync(s->spec.storage, e);
    if (r < 0)
        return r;
    s->res->chunks = s->next_seq;
    r = index_write(s->spec.storage, s->spec.index_key, s->entries, s->next_seq, s->spec.key,
                    &s->res->index_bytes, s->res->index_sha256, e);
    if (r < 0)
        return r;
    s->finished = true;
    return 0;
}

static void chunked_free(MsSink *sink) {
    ChunkedSink *s = (ChunkedSink *) sink;
    if (s->n_threads || s->keepalive_running) {
        MsError abandoned = MS_ERROR_INIT;
        ms_error_set(&abandoned, ECANCELED, "the chunked snapshot was abandoned");
        sink_fail(s, &abandoned);
        stop_workers(s);
    }
    for (Job *j = s->head, *next; j; j = next) {
        next = j->next;
        free(j->data);
        free(j);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->space);
    ms_chunk_set_free(s->stored);
    free(s->entries);
    free(s->buf);
    free(s);
}

int ms_chunked_sink_new(const MsChunkedSpec *spec, MsChunkedResults *results, MsSink **ret,
                        MsError *e) {
    *results = (MsChunkedResults){0};
    ChunkedSink *s = calloc(1, sizeof(*s));
    if (!s)
        return ms_error_oom(e);
    s->base = (MsSink){chunked_write, chunked_finish, chunked_free};
    s->spec = *spec;
    s->res = results;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->space, NULL);
    _cleanup_(ms_sink_freep) MsSink *sink = &s->base;
    if (ms_cdc_params(spec->avg ? spec->avg : MS_CHUNK_DEFAULT_AVG, &s->cp) < 0)
        return ms_error_set(e, EINVAL, "chunk size %zu: expected a power of two from 1 KiB to 1 MiB",
                            spec->avg);
    ms_chunk_id_key_init(&s->idk, spec->key);
    s->cap = 4 * s->cp.max;
    s->buf = malloc(s->cap);
    s->stored = ms_chunk_set_new();
    if (!s->buf || !s->stored)
        return ms_error_oom(e);
    unsigned n = spec->threads ? MS_MIN(spec->threads, ELEMENTSOF(s->threads)) : DEFAULT_THREADS;
    s->max_queued = 2 * n;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&s->threads[i], NULL, chunk_worker, s) != 0)
            break;
        s->n_threads++;
    }
    if (s->n_threads == 0)
        return ms_error_set(e, EAGAIN, "cannot start a chunk worker thread");
    if (spec->keepalive) {
        if (!s->spec.keepalive_usec)
            s->spec.keepalive_usec = 30000000;
        if (pthread_create(&s->keepalive, NULL, keepalive_main, s) != 0)
            return ms_error_set(e, EAGAIN, "cannot start the chunked snapshot's keep-alive thread");
        s->keepalive_running = true;
    }
    *ret = TAKE_PTR(sink);
    return 0;
}

/* ---- the read side ---- */

typedef enum { SLOT_EMPTY, SLOT_READY, SLOT_FAILED } SlotState;

typedef struct Slot {
    SlotState state;
    uint64_t chunk; /* which chunk it holds */
    uint8_t *data;
    size_t len;
    MsError error;
} Slot;

typedef struct ChunkedSource {
    MsSource base;
    MsStorage *st;
    char *area;
    MsChunkEntry *entries;
    size_t n;
    const MsEncryptKey *key;
    MsChunkIdKey idk;
    unsigned window;
    Slot *slots;
    pthread_t *threads;
    unsigned n_threads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    /* the reader */
    uint64_t cur;
    size_t pos; /* in the current chunk */
} ChunkedSource;

static int fetch_chunk(ChunkedSource *s, uint64_t i, uint8_t *out, MsError *e) {
    const MsChunkEntry *ent = &s->entries[i];
    char key[1024], hex[MS_CHUNK_ID_HEX + 1];
    ms_chunk_key(s->area, ent->id, key, sizeof(key));
    ms_hex_encode(ent->id, MS_CHUNK_ID_BYTES, hex);
    MsSource *store;
    MsError le = MS_ERROR_INIT;
    int r = ms_storage_open_read(s->st, key, &store, &le);
    /* A snapshot whose chunk is gone is damaged (exit 3), not absent. */
    if (r == -ENOENT)
        return ms_error_set(e, EBADMSG,
                            "chunk %s (number %" PRIu64 " of %zu) is missing from the store: this "
                            "snapshot cannot be read whole (verify names every snapshot it breaks)",
                            hex, i + 1, s->n);
    if (r < 0) {
        *e = le;
        return r;
    }
    MsChainResults cres;
    MsSource *head;
    r = ms_source_chain_new(store, MS_CHAIN_PLAIN, s->key, &cres, &head, &le);
    if (r < 0) {
        if (r == -ENOKEY || r == -EKEYREJECTED) {
            *e = le;
            return r;
        }
        return ms_error_set(e, EBADMSG, "chunk %s is damaged: %s", hex, le.message);
    }
    ssize_t got = ms_source_read_up_to(head, out, ent->len, &le);
    uint8_t extra;
    ssize_t more = got == (ssize_t) ent->len ? ms_source_read_up_to(head, &extra, 1, &le) : 0;
    head->free(head);
    if (got < 0 || more < 0)
        return ms_error_set(e, EBADMSG, "chunk %s is damaged: %s", hex, le.message);
    if (got != (ssize_t) ent->len || more != 0)
        return ms_error_set(e, EBADMSG, "chunk %s is damaged: %s bytes where the index says %" PRIu32,
                            hex, more ? "more" : "fewer", ent->len);
    uint8_t id[MS_CHUNK_ID_BYTES];
    ms_chunk_id(&s->idk, out, ent->len, id);
    if (memcmp(id, ent->id, MS_CHUNK_ID_BYTES) != 0)
        return ms_error_set(e, EBADMSG, "chunk %s is damaged: its bytes do not match its id", hex);
    return 0;
}

typedef struct {
    ChunkedSource *s;
    unsigned t;
} FetchArg;

static void *fetch_thread(void *userdata) {
    FetchArg *a = userdata;
    ChunkedSource *s = a->s;
    unsigned t = a->t;
    free(a);
    Slot *slot = &s->slots[t];
    for (uint64_t i = t; i < s->n; i += s->window) {
        pthread_mutex_lock(&s->lock);
        while (slot->state != SLOT_EMPTY && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            return NULL;
        MsError err = MS_ERROR_INIT;
        uint8_t *buf = malloc(s->entries[i].len ? s->entries[i].len : 1);
        int r = buf ? fetch_chunk(s, i, buf, &err) : ms_error_oom(&err);
        pthread_mutex_lock(&s->lock);
        slot->chunk = i;
        slot->data = buf;
        slot->len = s->entries[i].len;
        slot->state = r < 0 ? SLOT_FAILED : SLOT_READY;
        slot->error = err;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            return NULL;
    }
    return NULL;
}

static ssize_t chunked_read(MsSource *src, void *buf, size_t len, MsError *e) {
    ChunkedSource *s = (ChunkedSource *) src;
    size_t done = 0;
    while (done < len && s->cur < s->n) {
        Slot *slot = &s->slots[s->cur % s->window];
        pthread_mutex_lock(&s->lock);
        while (!(slot->state != SLOT_EMPTY && slot->chunk == s->cur))
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (slot->state == SLOT_FAILED) {
            if (done > 0)
                return (ssize_t) done; /* the error comes with the next read */
            *e = slot->error;
            return -slot->error.code;
        }
        size_t n = MS_MIN(len - done, slot->len - s->pos);
        memcpy((uint8_t *) buf + done, slot->data + s->pos, n);
        done += n;
        s->pos += n;
        if (s->pos == slot->len) {
            pthread_mutex_lock(&s->lock);
            free(slot->data);
            slot->data = NULL;
            slot->state = SLOT_EMPTY;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            s->cur++;
            s->pos = 0;
        }
    }
    return (ssize_t) done;
}

static void chunked_source_free(MsSource *src) {
    ChunkedSource *s = (ChunkedSource *) src;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    for (unsigned i = 0; s->slots && i < s->window; i++)
        free(s->slots[i].data);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->slots);
    free(s->threads);
    free(s->entries);
    free(s->area);
    free(s);
}

int ms_chunked_source_new(MsStorage *st, const char *area, const MsChunkIndex *idx,
                          const MsEncryptKey *key, unsigned window, MsSource **ret, MsError *e) {
    ChunkedSource *s = calloc(1, sizeof(*s));
    if (!s)
        return ms_error_oom(e);
    s->base = (MsSource){chunked_read, chunked_source_free};
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    _cleanup_(ms_source_freep) MsSource *src = &s->base;
    s->st = st;
    s->key = key;
    s->n = idx->n;
    s->window = window ? window : DEFAULT_WINDOW;
    ms_chunk_id_key_init(&s->idk, key);
    s->area = strdup(area);
    s->entries = malloc((idx->n ? idx->n : 1) * sizeof(MsChunkEntry));
    s->slots = calloc(s->window, sizeof(Slot));
    s->threads = calloc(s->window, sizeof(pthread_t));
    if (!s->area || !s->entries || !s->slots || !s->threads)
        return ms_error_oom(e);
    memcpy(s->entries, idx->entries, idx->n * sizeof(MsChunkEntry));
    for (unsigned t = 0; t < s->window && t < s->n; t++) {
        FetchArg *a = malloc(sizeof(*a));
        if (!a)
            return ms_error_oom(e);
        *a = (FetchArg){s, t};
        if (pthread_create(&s->threads[t], NULL, fetch_thread, a) != 0) {
            free(a);
            return ms_error_set(e, EAGAIN, "cannot start a chunk reader thread");
        }
        s->n_threads++;
    }
    *ret = TAKE_PTR(src);
    return 0;
}

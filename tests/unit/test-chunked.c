/* Content-defined chunking (io/cdc.h) and chunked snapshots' store side (engine/chunked.h) on
 * a local store: cut points that resynchronise after an edit, sizes within bounds, round trips
 * of every size byte for byte, only new chunks stored the second time, keyed ids, and damage
 * (a chunk missing, flipped, from another key; the index cut short) named when read. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/macro.h"
#include "engine/chunked.h"
#include "io/cdc.h"
#include "storage/storage.h"
#include "test.h"

static uint64_t rng = 88172645463325252ULL;

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Text-like bytes (compressible, like BSON documents), with runs of random bytes. */
static void fill(uint8_t *p, size_t n) {
    static const char *words[] = {"orders", "status", "shipped", "customer", "total", "lines",
                                  "qty", "price", "Lisbon", "Oslo", "note", "the", "and"};
    size_t i = 0;
    while (i < n) {
        if (rnd() % 20 == 0) {
            size_t want = (size_t) (rnd() % 300); /* MS_MIN evaluates twice */
            size_t k = MS_MIN(n - i, want);
            for (size_t j = 0; j < k; j++)
                p[i + j] = (uint8_t) rnd();
            i += k;
            continue;
        }
        const char *w = words[rnd() % ELEMENTSOF(words)];
        size_t k = MS_MIN(n - i, strlen(w) + 1);
        memcpy(p + i, w, k);
        if (k == strlen(w) + 1)
            p[i + k - 1] = ' ';
        i += k;
    }
}

/* The chunk lengths of a whole buffer. */
static size_t cut_all(const MsCdcParams *cp, const uint8_t *p, size_t n, size_t *out, size_t max) {
    size_t k = 0;
    while (n > 0 && k < max) {
        size_t c = ms_cdc_cut(cp, p, n);
        out[k++] = c;
        p += c;
        n -= c;
    }
    return k;
}

static void cdc_bounds_and_average(void) {
    MsCdcParams cp;
    ASSERT(ms_cdc_params(1000, &cp) == -EINVAL);
    ASSERT(ms_cdc_params(512, &cp) == -EINVAL);
    ASSERT(ms_cdc_params(2u << 20, &cp) == -EINVAL);
    ASSERT_OK(ms_cdc_params(16384, &cp));
    size_t n = 8u << 20;
    uint8_t *buf = malloc(n);
    size_t *cuts = malloc(n / cp.min * sizeof(size_t) + 16);
    ASSERT(buf && cuts);
    fill(buf, n);
    size_t k = cut_all(&cp, buf, n, cuts, n / cp.min + 16);
    size_t total = 0;
    for (size_t i = 0; i < k; i++) {
        total += cuts[i];
        if (i + 1 < k)
            ASSERT(cuts[i] > cp.min && cuts[i] <= cp.max);
    }
    ASSERT(total == n);
    double avg = (double) n / (double) k;
    printf("# 16 KiB target: %zu chunks, %.0f bytes on average\n", k, avg);
    ASSERT(avg > 8192 && avg < 32768);
    /* every byte the same: no cut but at max */
    memset(buf, 'a', n);
    k = cut_all(&cp, buf, 4 * cp.max, cuts, 100);
    ASSERT(k == 4 && cuts[0] == cp.max);
    free(buf);
    free(cuts);
}

/* An edit near the start moves the cuts around it, not the ones after: most chunks of the
 * edited buffer are chunks of the original (what a daily snapshot saves on). */
static void cdc_resynchronises_after_edits(void) {
    MsCdcParams cp;
    ASSERT_OK(ms_cdc_params(16384, &cp));
    size_t n = 4u << 20;
    uint8_t *a = malloc(n), *b = malloc(n + 100);
    size_t *ca = malloc(4096 * sizeof(size_t)), *cb = malloc(4096 * sizeof(size_t));
    ASSERT(a && b && ca && cb);
    fill(a, n);
    for (int edit = 0; edit < 3; edit++) {
        /* insert, delete, overwrite 37 bytes at 1 MiB + something */
        size_t at = (1u << 20) + (size_t) (rnd() % 10000), bn;
        if (edit == 0) {
            memcpy(b, a, at);
            memset(b + at, 'X', 37);
            memcpy(b + at + 37, a + at, n - at);
            bn = n + 37;
        } else if (edit == 1) {
            memcpy(b, a, at);
            memcpy(b + at, a + at + 37, n - at - 37);
            bn = n - 37;
        } else {
            memcpy(b, a, n);
            memset(b + at, 'Y', 37);
            bn = n;
        }
        size_t ka = cut_all(&cp, a, n, ca, 4096), kb = cut_all(&cp, b, bn, cb, 4096);
        /* chunks are (offset, length) pairs; count b's chunks that are a chunk of a by content */
        size_t same = 0, oa = 0;
        size_t *starts = malloc(ka * sizeof(size_t));
        ASSERT(starts);
        for (size_t i = 0; i < ka; i++) {
            starts[i] = oa;
            oa += ca[i];
        }
        size_t ob = 0;
        for (size_t i = 0; i < kb; i++) {
            for (size_t j = 0; j < ka; j++)
                if (ca[j] == cb[i] && memcmp(a + starts[j], b + ob, cb[i]) == 0) {
                    same++;
                    break;
                }
            ob += cb[i];
        }
        free(starts);
        ASSERT(kb - same <= 3); /* the edited chunk and at most two around it */
    }
    free(a);
    free(b);
    free(ca);
    free(cb);
}

/* ---- on a local store ---- */

typedef struct Store {
    char path[64];
    MsStorage *st;
} Store;

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    return remove(path);
}

static void store_open(Store *s) {
    snprintf(s->path, sizeof(s->path), "/tmp/mongosnap-test-chunked-XXXXXX");
    ASSERT(mkdtemp(s->path));
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(s->path, &s->st, &e));
}

static void store_close(Store *s) {
    ms_storage_free(s->st);
    nftw(s->path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static MsChunkSet *ids_of(const MsChunkIndex *idx) {
    MsChunkSet *set = ms_chunk_set_new();
    for (size_t i = 0; i < idx->n; i++)
        ms_chunk_set_add(set, idx->entries[i].id);
    return set;
}

static int write_snapshot(MsStorage *st, const char *index_key, const uint8_t *data, size_t n,
                          const MsEncryptKey *key, const MsChunkSet *known, MsChunkedResults *res,
                          MsError *e) {
    MsChunkedSpec spec = {.storage = st, .area = "p/chunks", .index_key = index_key,
                          .key = key, .known = known, .threads = 3};
    MsSink *sink;
    int r = ms_chunked_sink_new(&spec, res, &sink, e);
    if (r < 0)
        return r;
    /* irregular writes, as the archive writer's segments come */
    for (size_t at = 0; r == 0 && at < n;) {
        size_t want = (size_t) (rnd() % 200000); /* MS_MIN evaluates twice */
        size_t k = MS_MIN(n - at, want);
        r = sink->write(sink, data + at, k, e);
        at += k;
    }
    if (r == 0)
        r = sink->finish(sink, e);
    sink->free(sink);
    return r;
}

static int read_snapshot(MsStorage *st, const char *index_key, const MsEncryptKey *key,
                         uint8_t **ret, size_t *ret_n, MsError *e) {
    MsChunkIndex idx;
    int r = ms_chunk_index_read(st, index_key, key, &idx, NULL, NULL, e);
    if (r < 0)
        return r;
    MsSource *src;
    r = ms_chunked_source_new(st, "p/chunks", &idx, key, 3, &src, e);
    size_t cap = idx.total + 1, n = 0;
    uint8_t *buf = malloc(cap);
    ms_chunk_index_clear(&idx);
    if (r < 0) {
        free(buf);
        return r;
    }
    for (;;) {
        ssize_t k = src->read(src, buf + n, MS_MIN(cap - n, (size_t) 70000), e);
        if (k < 0) {
            r = (int) k;
            break;
        }
        if (k == 0)
            break;
        n += (size_t) k;
    }
    src->free(src);
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_n = n;
    return 0;
}

static void round_trips_every_size(void) {
    Store s;
    store_open(&s);
    size_t sizes[] = {0, 1, 4095, 4096, 16384, 131072, 131073, 3u << 20};
    uint8_t *data = malloc(3u << 20);
    ASSERT(data);
    fill(data, 3u << 20);
    for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
        MsError e = MS_ERROR_INIT;
        MsChunkedResults res;
        char key[64];
        snprintf(key, sizeof(key), "p/s%zu.index", k);
        ASSERT_OK(write_snapshot(s.st, key, data, sizes[k], NULL, NULL, &res, &e));
        ASSERT(res.raw_bytes == sizes[k]);
        uint8_t *back;
        size_t n;
        ASSERT_OK(read_snapshot(s.st, key, NULL, &back, &n, &e));
        ASSERT(n == sizes[k] && memcmp(back, data, n) == 0);
        free(back);
    }
    free(data);
    store_close(&s);
}

/* The second snapshot of slightly changed data stores only the changed chunks. */
static void second_snapshot_stores_what_changed(void) {
    Store s;
    store_open(&s);
    size_t n = 6u << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    ASSERT(a && b);
    fill(a, n);
    memcpy(b, a, n);
    for (int i = 0; i < 20; i++) /* 20 small edits */
        memset(b + rnd() % (n - 10), 'Z', 10);
    MsError e = MS_ERROR_INIT;
    MsChunkedResults r1, r2;
    ASSERT_OK(write_snapshot(s.st, "p/a.index", a, n, NULL, NULL, &r1, &e));
    MsChunkIndex idx;
    ASSERT_OK(ms_chunk_index_read(s.st, "p/a.index", NULL, &idx, NULL, NULL, &e));
    ASSERT(idx.n == r1.chunks && idx.total == n);
    MsChunkSet *known = ids_of(&idx);
    ms_chunk_index_clear(&idx);
    ASSERT_OK(write_snapshot(s.st, "p/b.index", b, n, NULL, known, &r2, &e));
    printf("# first: %" PRIu64 " chunks stored; second: %" PRIu64 " of %" PRIu64 " stored (%" PRIu64
           " bytes)\n",
           r1.chunks_stored, r2.chunks_stored, r2.chunks, r2.stored_bytes);
    ASSERT(r2.chunks_stored >= 1 && r2.chunks_stored <= 60);
    ASSERT(r2.stored_bytes * 5 < r1.stored_bytes);
    uint8_t *back;
    size_t bn;
    ASSERT_OK(read_snapshot(s.st, "p/b.index", NULL, &back, &bn, &e));
    ASSERT(bn == n && memcmp(back, b, n) == 0);
    free(back);
    ms_chunk_set_free(known);
    free(a);
    free(b);
    store_close(&s);
}

static void keyed_ids_and_damage_are_named(void) {
    Store s;
    store_open(&s);
    size_t n = 1u << 20;
    uint8_t *data = malloc(n);
    ASSERT(data);
    fill(data, n);
    uint8_t raw[32] = {1, 2, 3}, raw2[32] = {9};
    MsEncryptKey *key = NULL, *other = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_encrypt_key_from_bytes(raw, 32, "test key", &key, &e));
    ASSERT_OK(ms_encrypt_key_from_bytes(raw2, 32, "other key", &other, &e));
    MsChunkedResults rp, rk;
    ASSERT_OK(write_snapshot(s.st, "p/plain.index", data, n, NULL, NULL, &rp, &e));
    ASSERT_OK(write_snapshot(s.st, "p/keyed.index", data, n, key, NULL, &rk, &e));
    MsChunkIndex ip, ik;
    ASSERT_OK(ms_chunk_index_read(s.st, "p/plain.index", NULL, &ip, NULL, NULL, &e));
    ASSERT_OK(ms_chunk_index_read(s.st, "p/keyed.index", key, &ik, NULL, NULL, &e));
    /* same cuts, other ids: a keyed id says nothing about the bytes */
    ASSERT(ip.n == ik.n);
    for (size_t i = 0; i < ip.n; i++) {
        ASSERT(ip.entries[i].len == ik.entries[i].len);
        ASSERT(memcmp(ip.entries[i].id, ik.entries[i].id, MS_CHUNK_ID_BYTES) != 0);
    }
    /* the encrypted index needs the key */
    MsChunkIndex tmp;
    ms_error_clear(&e);
    ASSERT(ms_chunk_index_read(s.st, "p/keyed.index", NULL, &tmp, NULL, NULL, &e) == -ENOKEY);
    ms_error_clear(&e);
    ASSERT(ms_chunk_index_read(s.st, "p/keyed.index", other, &tmp, NULL, NULL, &e) == -EKEYREJECTED);

    uint8_t *back;
    size_t bn;
    char key_path[512], hex[MS_CHUNK_ID_HEX + 1], rel[200];
    /* a chunk flipped: named as damaged */
    ms_chunk_key("p/chunks", ip.entries[ip.n / 2].id, rel, sizeof(rel));
    snprintf(key_path, sizeof(key_path), "%s/%s", s.path, rel);
    FILE *f = fopen(key_path, "r+b");
    ASSERT(f);
    fseek(f, 20, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 20, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
    ms_hex_encode(ip.entries[ip.n / 2].id, MS_CHUNK_ID_BYTES, hex);
    ms_error_clear(&e);
    ASSERT(read_snapshot(s.st, "p/plain.index", NULL, &back, &bn, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, hex);
    ASSERT_CONTAINS(e.message, "damaged");
    /* a chunk removed: named as missing */
    ms_chunk_key("p/chunks", ik.entries[1].id, rel, sizeof(rel));
    ASSERT_OK(ms_storage_remove(s.st, rel, &e));
    ms_hex_encode(ik.entries[1].id, MS_CHUNK_ID_BYTES, hex);
    ms_error_clear(&e);
    ASSERT(read_snapshot(s.st, "p/keyed.index", key, &back, &bn, &e) == -EBADMSG);
    ASSERT_CONTAINS(e.message, hex);
    ASSERT_CONTAINS(e.message, "missing");
    /* an index cut short */
    char *idx_bytes;
    size_t idx_len;
    ASSERT_OK(ms_storage_get(s.st, "p/plain.index", 1 << 20, &idx_bytes, &idx_len, &e));
    ASSERT_OK(ms_storage_put(s.st, "p/short.index", idx_bytes, idx_len / 2, &e));
    free(idx_bytes);
    ms_error_clear(&e);
    ASSERT(ms_chunk_index_read(s.st, "p/short.index", NULL, &tmp, NULL, NULL, &e) < 0);
    ASSERT(e.message[0]);
    ms_chunk_index_clear(&ip);
    ms_chunk_index_clear(&ik);
    ms_encrypt_key_free(key);
    ms_encrypt_key_free(other);
    free(data);
    store_close(&s);
}

static void chunk_keys(void) {
    uint8_t id[MS_CHUNK_ID_BYTES], back[MS_CHUNK_ID_BYTES];
    for (int i = 0; i < MS_CHUNK_ID_BYTES; i++)
        id[i] = (uint8_t) (i * 37 + 5);
    char key[256];
    ms_chunk_key("pol/chunks", id, key, sizeof(key));
    ASSERT(ms_chunk_key_parse("pol/chunks", key, back) && memcmp(id, back, sizeof(id)) == 0);
    ASSERT(!ms_chunk_key_parse("pol/chunks", "pol/chunks/locks/gc-1", back));
    ASSERT(!ms_chunk_key_parse("pol/chunks", "pol/chunksX/ab/ab", back));
    key[strlen("pol/chunks/") + 1] ^= 1; /* directory no longer the id's first two digits */
    ASSERT(!ms_chunk_key_parse("pol/chunks", key, back));
    char *area = ms_chunk_area("pol/");
    ASSERT_STREQ(area, "_chunks/pol");
    free(area);
    area = ms_chunk_area("nightly/node1");
    ASSERT_STREQ(area, "_chunks/nightly/node1");
    free(area);
    area = ms_chunk_area(NULL);
    ASSERT_STREQ(area, "_chunks");
    free(area);
}

MS_TEST_MAIN(TEST_CASE(cdc_bounds_and_average), TEST_CASE(cdc_resynchronises_after_edits),
             TEST_CASE(chunk_keys), TEST_CASE(round_trips_every_size),
             TEST_CASE(second_snapshot_stores_what_changed), TEST_CASE(keyed_ids_and_damage_are_named))

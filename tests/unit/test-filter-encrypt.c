/* Tests for the AES-256-GCM filters: round trips at chunk boundaries, every bit flip, every
 * truncation, chunks dropped/duplicated/swapped, wrong keys, key files, nonce uniqueness. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "common/macro.h"
#include "io/filter-encrypt.h"
#include "io/stream.h"
#include "test.h"

#define SMALL_CHUNK 64u
#define RECORD (SMALL_CHUNK + MS_ENCRYPT_TAG_BYTES)
#define HDR MS_ENCRYPT_HEADER_BYTES

static uint64_t xorshift64(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static uint8_t *make_data(size_t len, uint64_t seed) {
    uint8_t *d = malloc(len ? len : 1);
    uint64_t s = seed | 1;
    for (size_t i = 0; i < len; i++)
        d[i] = (uint8_t) xorshift64(&s);
    return d;
}

static MsEncryptKey *make_key(uint8_t fill) {
    uint8_t raw[MS_ENCRYPT_KEY_BYTES];
    memset(raw, fill, sizeof(raw));
    raw[0] ^= 0x5a;
    MsEncryptKey *k = NULL;
    MsError e = MS_ERROR_INIT;
    if (ms_encrypt_key_from_bytes(raw, sizeof(raw), "test key", &k, &e) < 0)
        return NULL;
    return k;
}

/* Seal data in writes of `step` bytes; returns a malloc()ed copy of the sealed bytes. */
static uint8_t *seal(const MsEncryptKey *k, const uint8_t *data, size_t len, size_t chunk,
                     size_t step, size_t *ret_len) {
    MsError e = MS_ERROR_INIT;
    MsSink *mem = ms_sink_memory_new();
    MsSink *s = ms_sink_encrypt_new(mem, k, chunk, &e);
    if (!s)
        return NULL; /* mem went with the failed constructor */
    for (size_t off = 0; off < len; off += step)
        if (ms_sink_write(s, data + off, MS_MIN(step, len - off), &e) < 0) {
            ms_sink_free(s);
            return NULL;
        }
    if (ms_sink_finish(s, &e) < 0) {
        ms_sink_free(s);
        return NULL;
    }
    size_t n;
    const uint8_t *out = ms_sink_memory_data(mem, &n);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, out, n);
    *ret_len = n;
    ms_sink_free(s);
    return copy;
}

/* Open sealed bytes completely; returns 0 and the plaintext, or the negative error. */
static int open_all(const MsEncryptKey *k, const uint8_t *sealed, size_t len, uint8_t **ret,
                    size_t *ret_len, MsError *e) {
    MsSource *mem = ms_source_memory_new(sealed, len);
    MsSource *d = ms_source_decrypt_new(mem, k, e);
    if (!d)
        return -e->code;
    size_t cap = 4096, got = 0;
    uint8_t *out = malloc(cap);
    int r = 0;
    for (;;) {
        if (got + 1000 > cap)
            out = realloc(out, cap *= 2);
        ssize_t n = ms_source_read(d, out + got, 1000, e);
        if (n < 0) {
            r = (int) n;
            break;
        }
        if (n == 0)
            break;
        got += (size_t) n;
    }
    ms_source_free(d);
    if (r < 0) {
        free(out);
        return r;
    }
    *ret = out;
    *ret_len = got;
    return 0;
}

static bool opens_to(const MsEncryptKey *k, const uint8_t *sealed, size_t len, const uint8_t *want,
                     size_t want_len) {
    MsError e = MS_ERROR_INIT;
    uint8_t *out = NULL;
    size_t n = 0;
    if (open_all(k, sealed, len, &out, &n, &e) < 0) {
        fprintf(stderr, "# open failed: %s\n", e.message);
        return false;
    }
    bool ok = n == want_len && (n == 0 || memcmp(out, want, n) == 0);
    free(out);
    return ok;
}

static bool fails_to_open(const MsEncryptKey *k, const uint8_t *sealed, size_t len) {
    MsError e = MS_ERROR_INIT;
    uint8_t *out = NULL;
    size_t n = 0;
    int r = open_all(k, sealed, len, &out, &n, &e);
    if (r == 0) {
        free(out);
        return false;
    }
    return r == -EBADMSG || r == -EPIPE || r == -EKEYREJECTED;
}

static void test_round_trip_sizes(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(1);
    ASSERT(k);
    const size_t chunk = 4096;
    const size_t sizes[] = {0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 17, 3 * chunk};
    const size_t steps[] = {1, 7, 4096, 100000};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
        for (size_t j = 0; j < ELEMENTSOF(steps); j++) {
            if (steps[j] == 1 && sizes[i] > chunk + 1)
                continue;
            uint8_t *data = make_data(sizes[i], 7 + i);
            size_t len = 0;
            uint8_t *sealed = seal(k, data, sizes[i], chunk, steps[j], &len);
            ASSERT(sealed);
            size_t chunks = sizes[i] == 0 ? 1 : (sizes[i] + chunk - 1) / chunk;
            ASSERT_EQ_INT(len, HDR + sizes[i] + chunks * MS_ENCRYPT_TAG_BYTES);
            ASSERT(ms_encrypt_has_magic(sealed, len));
            ASSERT(opens_to(k, sealed, len, data, sizes[i]));
            free(sealed);
            free(data);
        }
}

static void test_default_chunk_round_trip(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(2);
    ASSERT(k);
    const size_t sizes[] = {MS_ENCRYPT_DEFAULT_CHUNK_SIZE - 1, MS_ENCRYPT_DEFAULT_CHUNK_SIZE,
                            MS_ENCRYPT_DEFAULT_CHUNK_SIZE + 1,
                            3 * MS_ENCRYPT_DEFAULT_CHUNK_SIZE + 5};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
        uint8_t *data = make_data(sizes[i], 99 + i);
        size_t len = 0;
        uint8_t *sealed = seal(k, data, sizes[i], 0, 65537, &len);
        ASSERT(sealed);
        MsEncryptHeader h;
        MsError e = MS_ERROR_INIT;
        ASSERT_OK(ms_encrypt_header_parse(sealed, len, &h, &e));
        ASSERT_EQ_INT(h.chunk_size, MS_ENCRYPT_DEFAULT_CHUNK_SIZE);
        ASSERT_STREQ(h.key_id_hex, k->id_hex);
        ASSERT(opens_to(k, sealed, len, data, sizes[i]));
        free(sealed);
        free(data);
    }
}

/* Three chunks (64, 64, 22 bytes): every single-bit flip anywhere is refused. */
static void test_every_bit_flip_detected(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(3);
    ASSERT(k);
    size_t plain_len = 2 * SMALL_CHUNK + 22;
    uint8_t *data = make_data(plain_len, 3);
    size_t len = 0;
    uint8_t *sealed = seal(k, data, plain_len, SMALL_CHUNK, 50, &len);
    ASSERT(sealed);
    ASSERT(opens_to(k, sealed, len, data, plain_len));
    for (size_t byte = 0; byte < len; byte++)
        for (int bit = 0; bit < 8; bit++) {
            sealed[byte] ^= (uint8_t) (1u << bit);
            if (!fails_to_open(k, sealed, len)) {
                fprintf(stderr, "# flip of bit %d in byte %zu went unnoticed\n", bit, byte);
                ASSERT(false);
            }
            sealed[byte] ^= (uint8_t) (1u << bit);
        }
    ASSERT(opens_to(k, sealed, len, data, plain_len));
    free(sealed);
    free(data);
}

/* The error names the chunk and its stored offset. */
static void test_damage_message(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(4);
    uint8_t *data = make_data(3 * SMALL_CHUNK, 4);
    size_t len = 0;
    uint8_t *sealed = seal(k, data, 3 * SMALL_CHUNK, SMALL_CHUNK, 1000, &len);
    ASSERT(sealed);
    sealed[HDR + RECORD + 5] ^= 0x10;
    MsError e = MS_ERROR_INIT;
    uint8_t *out = NULL;
    size_t n = 0;
    ASSERT_EQ_INT(open_all(k, sealed, len, &out, &n, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "chunk 1");
    char where[64];
    snprintf(where, sizeof(where), "stored bytes %u..", HDR + RECORD);
    ASSERT_CONTAINS(e.message, where);
    free(sealed);
    free(data);
}

/* Cutting the stream anywhere (at a chunk boundary, inside a chunk or tag, inside the header)
 * is refused; so are bytes appended after the final chunk. */
static void test_truncation_and_extension_detected(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(5);
    const size_t sizes[] = {3 * SMALL_CHUNK, 3 * SMALL_CHUNK + 9, 0};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
        uint8_t *data = make_data(sizes[i], 5);
        size_t len = 0;
        uint8_t *sealed = seal(k, data, sizes[i], SMALL_CHUNK, 1000, &len);
        ASSERT(sealed);
        for (size_t cut = 0; cut < len; cut++)
            if (!fails_to_open(k, sealed, cut)) {
                fprintf(stderr, "# cut at %zu of %zu went unnoticed\n", cut, len);
                ASSERT(false);
            }
        uint8_t *longer = malloc(len + RECORD);
        memcpy(longer, sealed, len);
        for (size_t extra = 1; extra <= RECORD; extra++) {
            memset(longer + len, 0, extra);
            ASSERT(fails_to_open(k, longer, len + extra));
        }
        /* A whole valid record appended (a copy of the first) is refused too. */
        if (len >= HDR + RECORD) {
            memcpy(longer + len, sealed + HDR, RECORD);
            ASSERT(fails_to_open(k, longer, len + RECORD));
        }
        free(longer);
        free(sealed);
        free(data);
    }
}

static void test_reordered_chunks_detected(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(6);
    size_t plain_len = 4 * SMALL_CHUNK + 10; /* chunks 0..3 full, 4 final */
    uint8_t *data = make_data(plain_len, 6);
    size_t len = 0;
    uint8_t *sealed = seal(k, data, plain_len, SMALL_CHUNK, 1000, &len);
    ASSERT(sealed);
    ASSERT_EQ_INT(len, HDR + 4 * RECORD + 10 + MS_ENCRYPT_TAG_BYTES);
    uint8_t *buf = malloc(len + RECORD);

    /* dropped: chunk 1 left out */
    memcpy(buf, sealed, HDR + RECORD);
    memcpy(buf + HDR + RECORD, sealed + HDR + 2 * RECORD, len - HDR - 2 * RECORD);
    ASSERT(fails_to_open(k, buf, len - RECORD));
    /* duplicated: chunk 1 twice */
    memcpy(buf, sealed, HDR + 2 * RECORD);
    memcpy(buf + HDR + 2 * RECORD, sealed + HDR + RECORD, len - HDR - RECORD);
    ASSERT(fails_to_open(k, buf, len + RECORD));
    /* swapped: chunks 1 and 2 */
    memcpy(buf, sealed, len);
    memcpy(buf + HDR + RECORD, sealed + HDR + 2 * RECORD, RECORD);
    memcpy(buf + HDR + 2 * RECORD, sealed + HDR + RECORD, RECORD);
    ASSERT(fails_to_open(k, buf, len));
    /* the last full chunk made the end (final chunk dropped) */
    ASSERT(fails_to_open(k, sealed, HDR + 4 * RECORD));
    free(buf);
    free(sealed);
    free(data);
}

/* A chunk of another stream (same key, same index) cannot be spliced in: the header, with
 * its base nonce, is in every chunk's AAD. */
static void test_splice_from_other_stream_detected(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(7);
    uint8_t *data = make_data(3 * SMALL_CHUNK, 7);
    size_t la = 0, lb = 0;
    uint8_t *a = seal(k, data, 3 * SMALL_CHUNK, SMALL_CHUNK, 1000, &la);
    uint8_t *b = seal(k, data, 3 * SMALL_CHUNK, SMALL_CHUNK, 1000, &lb);
    ASSERT(a && b && la == lb);
    memcpy(a + HDR + RECORD, b + HDR + RECORD, RECORD);
    ASSERT(fails_to_open(k, a, la));
    free(a);
    free(b);
    free(data);
}

static void test_wrong_key_detected_by_id(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(8);
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *other = make_key(9);
    ASSERT(k && other);
    ASSERT(strcmp(k->id_hex, other->id_hex) != 0);
    uint8_t *data = make_data(100, 8);
    size_t len = 0;
    uint8_t *sealed = seal(k, data, 100, SMALL_CHUNK, 1000, &len);
    ASSERT(sealed);
    /* Only the header is available: the refusal comes from the key id, with no chunk read. */
    MsError e = MS_ERROR_INIT;
    MsSource *mem = ms_source_memory_new(sealed, HDR);
    MsSource *d = ms_source_decrypt_new(mem, other, &e);
    ASSERT(!d);
    ASSERT_EQ_INT(e.code, EKEYREJECTED);
    ASSERT_CONTAINS(e.message, other->id_hex);
    ASSERT_CONTAINS(e.message, k->id_hex);
    ASSERT_CONTAINS(e.message, "is not the key this snapshot was encrypted with");

    /* No key at all: detection names the key id the stream needs. */
    ms_error_clear(&e);
    mem = ms_source_memory_new(sealed, len);
    bool encrypted = false;
    d = ms_source_decrypt_auto_new(mem, NULL, &encrypted, NULL, &e);
    ASSERT(!d);
    ASSERT(encrypted);
    ASSERT_EQ_INT(e.code, ENOKEY);
    ASSERT_CONTAINS(e.message, k->id_hex);
    free(sealed);
    free(data);
}

static void test_auto_passes_plain_data_through(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(10);
    const size_t sizes[] = {0, 3, HDR - 1, HDR, HDR + 1, 5000};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
        uint8_t *data = make_data(sizes[i], 10 + i);
        MsError e = MS_ERROR_INIT;
        bool encrypted = true;
        MsSource *d = ms_source_decrypt_auto_new(ms_source_memory_new(data, sizes[i]), k,
                                                 &encrypted, NULL, &e);
        ASSERT(d);
        ASSERT(!encrypted);
        uint8_t *out = malloc(sizes[i] + 1);
        size_t got = 0;
        ssize_t n;
        while ((n = ms_source_read(d, out + got, 7, &e)) > 0)
            got += (size_t) n;
        ASSERT_EQ_INT(n, 0);
        ASSERT_EQ_INT(got, sizes[i]);
        ASSERT(got == 0 || memcmp(out, data, got) == 0);
        ms_source_free(d);
        free(out);
        free(data);
    }
    /* And a sealed stream through auto detection opens. */
    uint8_t *data = make_data(300, 11);
    size_t len = 0;
    uint8_t *sealed = seal(k, data, 300, SMALL_CHUNK, 1000, &len);
    MsError e = MS_ERROR_INIT;
    bool encrypted = false;
    MsEncryptHeader h;
    MsSource *d =
        ms_source_decrypt_auto_new(ms_source_memory_new(sealed, len), k, &encrypted, &h, &e);
    ASSERT(d);
    ASSERT(encrypted);
    ASSERT_EQ_INT(h.chunk_size, SMALL_CHUNK);
    uint8_t out[400];
    ASSERT_OK(ms_source_read_full(d, out, 300, &e));
    ASSERT(memcmp(out, data, 300) == 0);
    ASSERT_EQ_INT(ms_source_read(d, out, sizeof(out), &e), 0);
    ms_source_free(d);
    free(sealed);
    free(data);
}

/* Two streams of the same plaintext under the same key: different base nonces, so different
 * ciphertexts; the nonces of their chunks never coincide. */
static void test_nonce_unique_across_streams(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(12);
    uint8_t *data = make_data(2 * SMALL_CHUNK, 12);
    size_t la = 0, lb = 0;
    uint8_t *a = seal(k, data, 2 * SMALL_CHUNK, SMALL_CHUNK, 1000, &la);
    uint8_t *b = seal(k, data, 2 * SMALL_CHUNK, SMALL_CHUNK, 1000, &lb);
    ASSERT(a && b && la == lb);
    MsEncryptHeader ha, hb;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_encrypt_header_parse(a, la, &ha, &e));
    ASSERT_OK(ms_encrypt_header_parse(b, lb, &hb, &e));
    ASSERT(memcmp(ha.base_nonce, hb.base_nonce, MS_ENCRYPT_NONCE_BYTES) != 0);
    ASSERT_STREQ(ha.key_id_hex, hb.key_id_hex);
    /* The base nonces differ in more than the counter's low bits: no chunk i of one stream
     * shares a nonce with chunk j of the other for small i, j. */
    bool high_differs = memcmp(ha.base_nonce, hb.base_nonce, MS_ENCRYPT_NONCE_BYTES - 1) != 0;
    ASSERT(high_differs);
    ASSERT(memcmp(a + HDR, b + HDR, la - HDR) != 0);
    free(a);
    free(b);
    free(data);
}

static void test_key_parsing(void) {
    MsError e = MS_ERROR_INIT;
    MsEncryptKey *k = NULL;
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    char buf[100];
    snprintf(buf, sizeof(buf), "  %s\n", hex);
    ASSERT_OK(ms_encrypt_key_from_bytes(buf, strlen(buf), "k", &k, &e));
    for (int i = 0; i < 32; i++)
        ASSERT_EQ_INT(k->key[i], i);
    /* The same key as raw bytes has the same id. */
    uint8_t raw[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t) i;
    MsEncryptKey *k2 = NULL;
    ASSERT_OK(ms_encrypt_key_from_bytes(raw, 32, "k", &k2, &e));
    ASSERT_STREQ(k->id_hex, k2->id_hex);
    ASSERT_EQ_INT(strlen(k->id_hex), MS_ENCRYPT_KEY_ID_HEX_LEN);
    ms_encrypt_key_free(k);
    ms_encrypt_key_free(k2);

    /* Wrong lengths and non-hex: refused without quoting the content. */
    const char *bad[] = {"secretsecret", "",
                         "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        ms_error_clear(&e);
        k = NULL;
        ASSERT_EQ_INT(ms_encrypt_key_from_bytes(bad[i], strlen(bad[i]), "key file /x", &k, &e),
                      -EINVAL);
        ASSERT(!k);
        ASSERT_CONTAINS(e.message, "key file /x");
        ASSERT_CONTAINS(e.message, "32 raw bytes or 64 hexadecimal");
        if (bad[i][0])
            ASSERT(!strstr(e.message, bad[i]));
        ASSERT(!strstr(e.message, "secret"));
    }
}

static void test_key_file(void) {
    char path[] = "/tmp/test-filter-encrypt-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    const char *hex = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n";
    ASSERT_EQ_INT(write(fd, hex, strlen(hex)), (long) strlen(hex));
    close(fd);
    MsError e = MS_ERROR_INIT;
    MsEncryptKey *k = NULL;
    ASSERT_OK(ms_encrypt_key_load_file(path, &k, &e));
    ASSERT_EQ_INT(k->key[0], 0xff);
    ms_encrypt_key_free(k);
    unlink(path);
    k = NULL;
    ms_error_clear(&e);
    ASSERT(ms_encrypt_key_load_file(path, &k, &e) < 0);
    ASSERT_CONTAINS(e.message, path);
}

static void test_not_encrypted_refused_by_strict_open(void) {
    _cleanup_(ms_encrypt_key_freep) MsEncryptKey *k = make_key(13);
    uint8_t plain[100] = {0};
    MsError e = MS_ERROR_INIT;
    MsSource *mem = ms_source_memory_new(plain, sizeof(plain));
    ASSERT(!ms_source_decrypt_new(mem, k, &e));
    ASSERT_EQ_INT(e.code, EBADMSG);
}

MS_TEST_MAIN({"round_trip_sizes", test_round_trip_sizes},
             {"default_chunk_round_trip", test_default_chunk_round_trip},
             {"every_bit_flip_detected", test_every_bit_flip_detected},
             {"damage_message", test_damage_message},
             {"truncation_and_extension_detected", test_truncation_and_extension_detected},
             {"reordered_chunks_detected", test_reordered_chunks_detected},
             {"splice_from_other_stream_detected", test_splice_from_other_stream_detected},
             {"wrong_key_detected_by_id", test_wrong_key_detected_by_id},
             {"auto_passes_plain_data_through", test_auto_passes_plain_data_through},
             {"nonce_unique_across_streams", test_nonce_unique_across_streams},
             {"key_parsing", test_key_parsing}, {"key_file", test_key_file},
             {"not_encrypted_refused_by_strict_open", test_not_encrypted_refused_by_strict_open})

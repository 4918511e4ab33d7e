/* The write and read chains (io/chain.h): for every codec, with and without a key, what goes in
 * comes back out, and the results the chain reports by name (raw and stored bytes, the stored
 * bytes' SHA-256, encryption, the codec found) are those of the bytes themselves. And the
 * ownership rule: a chain that cannot be built frees its store and says why. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/chain.h"
#include "test.h"

#define DATA_LEN (300u * 1024u)

static uint8_t *make_data(size_t len) {
    uint8_t *d = malloc(len);
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < len; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        /* Half text, half noise: compressible but not trivially. */
        d[i] = (i / 4096) % 2 ? (uint8_t) s : (uint8_t) ('a' + i % 26);
    }
    return d;
}

static MsEncryptKey *make_key(void) {
    uint8_t raw[MS_ENCRYPT_KEY_BYTES];
    memset(raw, 0x42, sizeof(raw));
    MsEncryptKey *k = NULL;
    MsError e = MS_ERROR_INIT;
    return ms_encrypt_key_from_bytes(raw, sizeof(raw), "test key", &k, &e) < 0 ? NULL : k;
}

static void round_trip(MsCompression c, const MsEncryptKey *key) {
    MsError e = MS_ERROR_INIT;
    uint8_t *data = make_data(DATA_LEN);
    ASSERT(data);
    MsSink *mem = ms_sink_memory_new();
    ASSERT(mem);
    MsChainResults w;
    MsSink *head = NULL;
    MsSinkChainSpec spec = {.compression = c, .key = key};
    ASSERT_OK(ms_sink_chain_new(mem, &spec, &w, &head, &e));
    for (size_t off = 0; off < DATA_LEN; off += 10000)
        ASSERT_OK(
            ms_sink_write(head, data + off, DATA_LEN - off < 10000 ? DATA_LEN - off : 10000, &e));
    ASSERT_STREQ(w.stored_sha256, ""); /* not before the end */
    ASSERT_OK(ms_sink_finish(head, &e));
    size_t stored_len;
    const uint8_t *stored = ms_sink_memory_data(mem, &stored_len);
    char direct[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(stored, stored_len, direct);
    ASSERT_EQ_INT(w.raw_bytes, DATA_LEN);
    ASSERT_EQ_INT(w.stored_bytes, stored_len);
    ASSERT_STREQ(w.stored_sha256, direct);

    MsChainResults r;
    MsSource *src = NULL;
    ASSERT_OK(ms_source_chain_new(ms_source_memory_new(stored, stored_len), MS_CHAIN_PLAIN, key, &r,
                                  &src, &e));
    ASSERT_EQ_INT(r.encrypted, key != NULL);
    ASSERT_EQ_INT(r.compression, c);
    uint8_t *back = malloc(DATA_LEN + 1);
    ssize_t got = ms_source_read_up_to(src, back, DATA_LEN + 1, &e);
    ASSERT_EQ_INT(got, DATA_LEN);
    ASSERT(memcmp(back, data, DATA_LEN) == 0);
    ASSERT_EQ_INT(r.stored_bytes, stored_len);
    ASSERT_STREQ(r.stored_sha256, direct);

    /* The stored depth reads the stored bytes as they are, and measures them the same. */
    MsChainResults raw;
    MsSource *rs = NULL;
    ASSERT_OK(ms_source_chain_new(ms_source_memory_new(stored, stored_len), MS_CHAIN_STORED, NULL,
                                  &raw, &rs, &e));
    uint8_t *copy = malloc(stored_len + 1);
    ASSERT_EQ_INT(ms_source_read_up_to(rs, copy, stored_len + 1, &e), stored_len);
    ASSERT(memcmp(copy, stored, stored_len) == 0);
    ASSERT_STREQ(raw.stored_sha256, direct);
    ms_source_free(rs);
    free(copy);
    ms_source_free(src);
    ms_sink_free(head);
    free(back);
    free(data);
}

static void test_every_codec_with_and_without_a_key(void) {
    MsEncryptKey *key = make_key();
    ASSERT(key);
    const MsCompression codecs[] = {MS_COMPRESSION_NONE, MS_COMPRESSION_ZSTD, MS_COMPRESSION_GZIP};
    for (size_t i = 0; i < 3; i++) {
        round_trip(codecs[i], NULL);
        round_trip(codecs[i], key);
    }
    ms_encrypt_key_free(key);
}

/* A chain that cannot be built takes its store with it (LeakSanitizer would report it) and says
 * what was wrong. */
static void test_a_failed_chain_frees_its_store(void) {
    MsError e = MS_ERROR_INIT;
    MsChainResults w;
    MsSink *head = (MsSink *) 1;
    MsSinkChainSpec bad = {.compression = MS_COMPRESSION_ZSTD, .threads = -1};
    ASSERT_EQ_INT(ms_sink_chain_new(ms_sink_memory_new(), &bad, &w, &head, &e), -EINVAL);
    ASSERT(head == (MsSink *) 1); /* untouched */
    ASSERT_CONTAINS(e.message, "threads");

    /* Encrypted, no key: ENOKEY naming the key id, before anything past the header is read. */
    MsEncryptKey *key = make_key();
    ASSERT(key);
    MsSink *mem = ms_sink_memory_new();
    MsSink *sealed = NULL;
    MsSinkChainSpec spec = {.compression = MS_COMPRESSION_ZSTD, .key = key};
    ms_error_clear(&e);
    ASSERT_OK(ms_sink_chain_new(mem, &spec, &w, &sealed, &e));
    ASSERT_OK(ms_sink_write(sealed, "hello", 5, &e));
    ASSERT_OK(ms_sink_finish(sealed, &e));
    size_t len;
    const uint8_t *bytes = ms_sink_memory_data(mem, &len);
    MsChainResults r;
    MsSource *src = NULL;
    ASSERT_EQ_INT(
        ms_source_chain_new(ms_source_memory_new(bytes, len), MS_CHAIN_PLAIN, NULL, &r, &src, &e),
        -ENOKEY);
    ASSERT(src == NULL);
    ASSERT_CONTAINS(e.message, key->id_hex);
    ms_sink_free(sealed);
    ms_encrypt_key_free(key);
}

MS_TEST_MAIN(TEST_CASE(test_every_codec_with_and_without_a_key),
             TEST_CASE(test_a_failed_chain_frees_its_store))

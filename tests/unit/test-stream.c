/* Tests for stream filters: SHA-256, zstd/gzip compression round trips, detection, damage,
 * counters. */
#include <errno.h>
#include <stdint.h>

#include "common/macro.h"
#include "io/stream.h"
#include "test.h"

#define MIB (1024u * 1024u)
/* Big enough for several zstd blocks, gzip buffers and multithreaded zstd jobs. */
#define BIG_DATA_LEN (5u * MIB + 12345u)
#define MEDIUM_DATA_LEN (1u * MIB + 777u)
#define SMALL_DATA_LEN (200u * 1024u + 3u)
/* Longest run of one kind (text or random) in the generated data. */
#define DATA_SEGMENT_MAX (64u * 1024u)
#define DATA_SEED UINT64_C(0x9E3779B97F4A7C15)
#define ZSTD_TEST_THREADS 2
#define ZSTD_MAGIC_LEN 4
/* A byte inside the zstd frame header (descriptor and window size follow the magic). */
#define ZSTD_HEADER_PROBE 5
#define GZIP_HEADER_LEN 10
#define GARBAGE_LEN 64

/* Odd sizes so no write or read lines up with a codec block or buffer boundary. */
static const size_t chunk_sizes[] = {1, 3, 17, 4093, 65537, 7, 131101, 509, 1048573, 2};

static const char sha256_abc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const char sha256_empty[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static uint64_t xorshift64(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Deterministic data alternating compressible text with incompressible noise, so both
 * compressed and stored (raw) blocks occur. */
static uint8_t *make_data(size_t len, uint64_t seed) {
    static const char words[] = "{\"_id\": ObjectId, \"name\": \"collection\", \"count\": 42} ";
    uint8_t *d = malloc(len ? len : 1);
    if (!d)
        return NULL;
    uint64_t state = seed;
    size_t pos = 0;
    bool noisy = false;
    while (pos < len) {
        size_t seg = 1 + xorshift64(&state) % DATA_SEGMENT_MAX;
        seg = MS_MIN(seg, len - pos);
        for (size_t i = 0; i < seg; i++)
            d[pos + i] = noisy ? (uint8_t) xorshift64(&state)
                               : (uint8_t) words[(pos + i) % (sizeof(words) - 1)];
        pos += seg;
        noisy = !noisy;
    }
    return d;
}

static int write_chunked(MsSink *s, const uint8_t *data, size_t len, MsError *e) {
    size_t pos = 0;
    for (size_t i = 0; pos < len; i++) {
        size_t n = MS_MIN(chunk_sizes[i % ELEMENTSOF(chunk_sizes)], len - pos);
        int r = ms_sink_write(s, data + pos, n, e);
        if (r < 0)
            return r;
        pos += n;
    }
    return 0;
}

/* Read everything in odd-sized chunks; returns the length or a negative errno. */
static ssize_t read_all(MsSource *s, uint8_t **ret, MsError *e) {
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0;; i++) {
        size_t want = chunk_sizes[i % ELEMENTSOF(chunk_sizes)];
        if (len + want > cap) {
            size_t ncap = MS_MAX(cap * 2, len + want);
            uint8_t *nbuf = realloc(buf, ncap);
            if (!nbuf) {
                free(buf);
                return -ENOMEM;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = ms_source_read(s, buf + len, want, e);
        if (n < 0) {
            free(buf);
            return n;
        }
        if (n == 0)
            break;
        len += (size_t) n;
    }
    *ret = buf;
    return (ssize_t) len;
}

/* counter -> compressor -> sha256 -> memory, as a snapshot writes; returns a copy of the
 * compressed bytes, and checks the sink digest against a one-shot hash of them. */
static int compress_buffer(const uint8_t *data, size_t len, MsCompression c, int level, int threads,
                           uint8_t **ret, size_t *ret_len, char ret_hex[MS_SHA256_HEX_LEN + 1],
                           uint64_t *ret_counted, MsError *e) {
    MsSink *mem = ms_sink_memory_new();
    if (!mem)
        return -ENOMEM;
    char sink_hex[MS_SHA256_HEX_LEN + 1];
    uint64_t counted = 0;
    /* Each stage takes the one below, in every outcome: nested, one check. */
    _cleanup_(ms_sink_freep) MsSink *top = ms_sink_counter_new(
        ms_sink_compress_new(ms_sink_sha256_new(mem, sink_hex, e), c, level, threads, e), &counted,
        e);
    if (!top)
        return -e->code;

    int r = write_chunked(top, data, len, e);
    if (r < 0)
        return r;
    r = ms_sink_finish(top, e);
    if (r < 0)
        return r;

    size_t out_len;
    const uint8_t *out = ms_sink_memory_data(mem, &out_len);
    char direct_hex[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(out, out_len, direct_hex);
    if (strcmp(sink_hex, direct_hex) != 0)
        return ms_error_set(e, EBADMSG, "sink digest %s != digest of output %s", sink_hex,
                            direct_hex);
    *ret = malloc(out_len ? out_len : 1);
    if (!*ret)
        return -ENOMEM;
    if (out_len)
        memcpy(*ret, out, out_len);
    *ret_len = out_len;
    if (ret_hex)
        memcpy(ret_hex, sink_hex, sizeof(sink_hex));
    if (ret_counted)
        *ret_counted = counted;
    return 0;
}

static int compress_simple(const uint8_t *data, size_t len, MsCompression c, uint8_t **ret,
                           size_t *ret_len, MsError *e) {
    return compress_buffer(data, len, c, 0, 0, ret, ret_len, NULL, NULL, e);
}

/* Decompress a whole buffer with an explicit method (or auto when detected != NULL). */
static ssize_t decompress_buffer(const uint8_t *buf, size_t len, MsCompression c,
                                 MsCompression *detected, uint8_t **ret, MsError *e) {
    MsSource *mem = ms_source_memory_new(buf, len);
    if (!mem)
        return -ENOMEM;
    MsSource *d = detected ? ms_source_decompress_auto_new(mem, detected, e)
                           : ms_source_decompress_new(mem, c, e);
    if (!d)
        return -EINVAL; /* mem went with the failed constructor */
    _cleanup_(ms_source_freep) MsSource *top = d;
    return read_all(top, ret, e);
}

/* ---- SHA-256 ---- */

static void sha256_known_vectors(void) {
    char hex[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex("abc", 3, hex);
    ASSERT_STREQ(hex, sha256_abc);
    ms_sha256_hex("", 0, hex);
    ASSERT_STREQ(hex, sha256_empty);

    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *s = ms_sink_sha256_new(ms_sink_memory_new(), hex, &e);
    ASSERT(s);
    ASSERT_OK(ms_sink_write(s, "a", 1, &e));
    ASSERT_OK(ms_sink_write(s, "bc", 2, &e));
    /* The digest is the caller's once the sink finished, and not before. */
    ASSERT_STREQ(hex, "");
    ASSERT_OK(ms_sink_finish(s, &e));
    ASSERT_STREQ(hex, sha256_abc);
}

static void sha256_sink_and_source_agree(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *data = make_data(MEDIUM_DATA_LEN, DATA_SEED);
    ASSERT(data);
    char expect[MS_SHA256_HEX_LEN + 1], sink_hex[MS_SHA256_HEX_LEN + 1],
        source_hex[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(data, MEDIUM_DATA_LEN, expect);

    MsSink *mem = ms_sink_memory_new();
    ASSERT(mem);
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_sha256_new(mem, sink_hex, &e);
    ASSERT(sink);
    ASSERT_OK(write_chunked(sink, data, MEDIUM_DATA_LEN, &e));
    ASSERT_OK(ms_sink_finish(sink, &e));
    ASSERT_STREQ(sink_hex, expect);
    size_t mem_len;
    const uint8_t *mem_data = ms_sink_memory_data(mem, &mem_len);
    ASSERT_EQ_INT(mem_len, MEDIUM_DATA_LEN);
    ASSERT(memcmp(mem_data, data, MEDIUM_DATA_LEN) == 0);

    _cleanup_(ms_source_freep) MsSource *source =
        ms_source_sha256_new(ms_source_memory_new(data, MEDIUM_DATA_LEN), source_hex, &e);
    ASSERT(source);
    ASSERT_STREQ(source_hex, "");
    _cleanup_free_ uint8_t *back = NULL;
    ssize_t n = read_all(source, &back, &e);
    ASSERT_EQ_INT(n, MEDIUM_DATA_LEN);
    ASSERT_STREQ(source_hex, expect);
    /* Reading past the end keeps the final digest. */
    uint8_t byte;
    ASSERT_EQ_INT(ms_source_read(source, &byte, 1, &e), 0);
    ASSERT_STREQ(source_hex, expect);
}

/* ---- round trips ---- */

static void check_roundtrip(MsCompression c, int level, int threads) {
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *data = make_data(BIG_DATA_LEN, DATA_SEED);
    ASSERT(data);
    _cleanup_free_ uint8_t *comp = NULL;
    size_t comp_len = 0;
    char comp_hex[MS_SHA256_HEX_LEN + 1];
    uint64_t counted_in = 0;
    int r = compress_buffer(data, BIG_DATA_LEN, c, level, threads, &comp, &comp_len, comp_hex,
                            &counted_in, &e);
    if (r < 0)
        fprintf(stderr, "# compress: %s\n", e.message);
    ASSERT_OK(r);
    ASSERT_EQ_INT(counted_in, BIG_DATA_LEN);
    if (c == MS_COMPRESSION_NONE) {
        ASSERT_EQ_INT(comp_len, BIG_DATA_LEN);
        ASSERT(memcmp(comp, data, BIG_DATA_LEN) == 0);
    } else {
        /* Half the data is text, so real compression must shrink it clearly. */
        ASSERT(comp_len < BIG_DATA_LEN * 3 / 4);
    }

    /* memory -> sha256 -> decompressor -> counter, as a restore reads. */
    MsSource *mem = ms_source_memory_new(comp, comp_len);
    ASSERT(mem);
    char source_hex[MS_SHA256_HEX_LEN + 1];
    uint64_t counted_out = 0;
    _cleanup_(ms_source_freep) MsSource *top = ms_source_counter_new(
        ms_source_decompress_new(ms_source_sha256_new(mem, source_hex, &e), c, &e), &counted_out,
        &e);
    ASSERT(top);

    _cleanup_free_ uint8_t *back = NULL;
    ssize_t n = read_all(top, &back, &e);
    if (n < 0)
        fprintf(stderr, "# decompress: %s\n", e.message);
    ASSERT_EQ_INT(n, BIG_DATA_LEN);
    ASSERT(memcmp(back, data, BIG_DATA_LEN) == 0);
    ASSERT_EQ_INT(counted_out, BIG_DATA_LEN);
    ASSERT_STREQ(source_hex, comp_hex);
}

static void roundtrip_zstd(void) {
    check_roundtrip(MS_COMPRESSION_ZSTD, 0, 0);
}

static void roundtrip_zstd_threads(void) {
    check_roundtrip(MS_COMPRESSION_ZSTD, 0, ZSTD_TEST_THREADS);
}

static void roundtrip_zstd_fast_level(void) {
    check_roundtrip(MS_COMPRESSION_ZSTD, 1, 0);
}

static void roundtrip_gzip(void) {
    check_roundtrip(MS_COMPRESSION_GZIP, 0, 0);
}

static void roundtrip_gzip_best(void) {
    check_roundtrip(MS_COMPRESSION_GZIP, 9, 0);
}

static void roundtrip_none(void) {
    check_roundtrip(MS_COMPRESSION_NONE, 0, 0);
}

static void empty_payload_roundtrip(void) {
    static const MsCompression methods[] = {MS_COMPRESSION_ZSTD, MS_COMPRESSION_GZIP};
    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        MsError e = MS_ERROR_INIT;
        _cleanup_free_ uint8_t *comp = NULL, *back = NULL;
        size_t comp_len = 0;
        ASSERT_OK(compress_simple((const uint8_t *) "", 0, methods[i], &comp, &comp_len, &e));
        /* Even no data makes a frame/member, so an empty object is never a valid backup. */
        ASSERT(comp_len > 0);
        MsCompression detected = MS_COMPRESSION_INVALID;
        ASSERT_EQ_INT(decompress_buffer(comp, comp_len, methods[i], &detected, &back, &e), 0);
        ASSERT_EQ_INT(detected, methods[i]);
    }
}

/* ---- detection ---- */

static void auto_detects_each(void) {
    static const MsCompression methods[] = {MS_COMPRESSION_NONE, MS_COMPRESSION_ZSTD,
                                            MS_COMPRESSION_GZIP};
    _cleanup_free_ uint8_t *data = make_data(SMALL_DATA_LEN, DATA_SEED);
    ASSERT(data);
    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        MsError e = MS_ERROR_INIT;
        _cleanup_free_ uint8_t *comp = NULL, *back = NULL;
        size_t comp_len = 0;
        ASSERT_OK(compress_simple(data, SMALL_DATA_LEN, methods[i], &comp, &comp_len, &e));
        MsCompression detected = MS_COMPRESSION_INVALID;
        ssize_t n = decompress_buffer(comp, comp_len, 0, &detected, &back, &e);
        ASSERT_EQ_INT(detected, methods[i]);
        ASSERT_EQ_INT(n, SMALL_DATA_LEN);
        ASSERT(memcmp(back, data, SMALL_DATA_LEN) == 0);
    }
}

static void auto_passes_short_input(void) {
    /* Inputs shorter than the magic, and one starting like gzip but too short to be gzip
     * magic, pass through unchanged. */
    static const char *const inputs[] = {"", "a", "ab", "abc", "abcd", "\x1f", "\x28\xb5\x2f"};
    for (size_t i = 0; i < ELEMENTSOF(inputs); i++) {
        MsError e = MS_ERROR_INIT;
        size_t len = strlen(inputs[i]);
        _cleanup_free_ uint8_t *back = NULL;
        MsCompression detected = MS_COMPRESSION_INVALID;
        ssize_t n = decompress_buffer((const uint8_t *) inputs[i], len, 0, &detected, &back, &e);
        ASSERT_EQ_INT(detected, MS_COMPRESSION_NONE);
        ASSERT_EQ_INT(n, len);
        ASSERT(len == 0 || memcmp(back, inputs[i], len) == 0);
    }
}

/* ---- damage ---- */

static void check_truncated(MsCompression c) {
    _cleanup_free_ uint8_t *data = make_data(MEDIUM_DATA_LEN, DATA_SEED);
    ASSERT(data);
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *comp = NULL;
    size_t comp_len = 0;
    ASSERT_OK(compress_simple(data, MEDIUM_DATA_LEN, c, &comp, &comp_len, &e));
    /* Cuts inside the header, the data, and the trailing checksum/CRC. */
    const size_t cuts[] = {0, 3, 10, comp_len / 2, comp_len - 5, comp_len - 1};
    for (size_t i = 0; i < ELEMENTSOF(cuts); i++) {
        ms_error_clear(&e);
        _cleanup_free_ uint8_t *back = NULL;
        ssize_t n = decompress_buffer(comp, cuts[i], c, NULL, &back, &e);
        if (n >= 0)
            fprintf(stderr, "# cut at %zu of %zu read %zd bytes without error\n", cuts[i], comp_len,
                    n);
        ASSERT_EQ_INT(n, -EPIPE);
        ASSERT_EQ_INT(e.code, EPIPE);
        ASSERT_CONTAINS(e.message, cuts[i] == 0 ? "empty" : "truncated");
    }
    /* Auto-detection sees the magic and reports the truncation just the same. */
    ms_error_clear(&e);
    _cleanup_free_ uint8_t *back = NULL;
    MsCompression detected = MS_COMPRESSION_INVALID;
    ASSERT_EQ_INT(decompress_buffer(comp, comp_len / 2, 0, &detected, &back, &e), -EPIPE);
    ASSERT_EQ_INT(detected, c);
    ASSERT_CONTAINS(e.message, "truncated");
    ASSERT_CONTAINS(e.message, "compressed byte offset");
}

static void truncated_zstd(void) {
    check_truncated(MS_COMPRESSION_ZSTD);
}

static void truncated_gzip(void) {
    check_truncated(MS_COMPRESSION_GZIP);
}

static void check_bit_flips(MsCompression c) {
    _cleanup_free_ uint8_t *data = make_data(MEDIUM_DATA_LEN, DATA_SEED);
    ASSERT(data);
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *comp = NULL;
    size_t comp_len = 0;
    ASSERT_OK(compress_simple(data, MEDIUM_DATA_LEN, c, &comp, &comp_len, &e));
    /* Positions in the header, early data, the middle (likely a stored random run that
     * only the checksum covers) and the trailer. gzip's header fields after the magic
     * (mtime, flags for the OS) are not covered by its CRC, so gzip is hit just past them. */
    const size_t header_pos = c == MS_COMPRESSION_ZSTD ? ZSTD_HEADER_PROBE : GZIP_HEADER_LEN + 2;
    const size_t positions[] = {header_pos, 100, comp_len / 3, comp_len / 2, comp_len - 2};
    for (size_t i = 0; i < ELEMENTSOF(positions); i++) {
        _cleanup_free_ uint8_t *bad = malloc(comp_len);
        ASSERT(bad);
        memcpy(bad, comp, comp_len);
        bad[positions[i]] ^= 0x10;
        ms_error_clear(&e);
        _cleanup_free_ uint8_t *back = NULL;
        ssize_t n = decompress_buffer(bad, comp_len, c, NULL, &back, &e);
        if (n >= 0)
            fprintf(stderr, "# flip at %zu of %zu read %zd bytes without error\n", positions[i],
                    comp_len, n);
        ASSERT(n < 0);
        ASSERT(ms_error_is_set(&e));
        ASSERT_CONTAINS(e.message, "compressed");
    }
}

static void bit_flip_zstd(void) {
    check_bit_flips(MS_COMPRESSION_ZSTD);
}

static void bit_flip_gzip(void) {
    check_bit_flips(MS_COMPRESSION_GZIP);
}

static void corrupt_error_names_offset(void) {
    /* Valid zstd magic followed by garbage, long enough to hold a whole frame header so the
     * decoder judges it instead of waiting for more: the message says where it went wrong. */
    uint8_t garbage[GARBAGE_LEN];
    memset(garbage, 0xFF, sizeof(garbage));
    memcpy(garbage, "\x28\xB5\x2F\xFD", ZSTD_MAGIC_LEN);
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *back = NULL;
    ssize_t n = decompress_buffer(garbage, sizeof(garbage), MS_COMPRESSION_ZSTD, NULL, &back, &e);
    ASSERT_EQ_INT(n, -EBADMSG);
    ASSERT_CONTAINS(e.message, "corrupt");
    ASSERT_CONTAINS(e.message, "compressed byte offset");
}

/* ---- concatenation ---- */

static void check_concatenated(MsCompression c) {
    const size_t len_a = MEDIUM_DATA_LEN, len_b = SMALL_DATA_LEN;
    _cleanup_free_ uint8_t *a = make_data(len_a, DATA_SEED);
    _cleanup_free_ uint8_t *b = make_data(len_b, DATA_SEED + 1);
    ASSERT(a && b);
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ uint8_t *ca = NULL, *cb = NULL, *cat = NULL;
    size_t ca_len = 0, cb_len = 0;
    ASSERT_OK(compress_simple(a, len_a, c, &ca, &ca_len, &e));
    ASSERT_OK(compress_simple(b, len_b, c, &cb, &cb_len, &e));
    cat = malloc(ca_len + cb_len);
    ASSERT(cat);
    memcpy(cat, ca, ca_len);
    memcpy(cat + ca_len, cb, cb_len);

    _cleanup_free_ uint8_t *back = NULL;
    MsCompression detected = MS_COMPRESSION_INVALID;
    ssize_t n = decompress_buffer(cat, ca_len + cb_len, 0, &detected, &back, &e);
    ASSERT_EQ_INT(detected, c);
    ASSERT_EQ_INT(n, len_a + len_b);
    ASSERT(memcmp(back, a, len_a) == 0);
    ASSERT(memcmp(back + len_a, b, len_b) == 0);

    /* A complete member followed by a truncated one is still an error. */
    ms_error_clear(&e);
    _cleanup_free_ uint8_t *back2 = NULL;
    ASSERT_EQ_INT(decompress_buffer(cat, ca_len + cb_len / 2, c, NULL, &back2, &e), -EPIPE);
    ASSERT_CONTAINS(e.message, "truncated");
}

static void concatenated_gzip(void) {
    check_concatenated(MS_COMPRESSION_GZIP);
}

static void concatenated_zstd(void) {
    check_concatenated(MS_COMPRESSION_ZSTD);
}

/* ---- counters ---- */

static void counters_count(void) {
    _cleanup_free_ uint8_t *data = make_data(MEDIUM_DATA_LEN, DATA_SEED);
    ASSERT(data);
    MsError e = MS_ERROR_INIT;

    uint64_t written = 0;
    MsSink *mem = ms_sink_memory_new();
    ASSERT(mem);
    _cleanup_(ms_sink_freep) MsSink *sink = ms_sink_counter_new(mem, &written, &e);
    ASSERT(sink);
    ASSERT_OK(write_chunked(sink, data, MEDIUM_DATA_LEN, &e));
    ASSERT_OK(ms_sink_finish(sink, &e));
    ASSERT_EQ_INT(written, MEDIUM_DATA_LEN);

    uint64_t got = 0;
    _cleanup_(ms_source_freep) MsSource *source =
        ms_source_counter_new(ms_source_memory_new(data, MEDIUM_DATA_LEN), &got, &e);
    ASSERT(source);
    _cleanup_free_ uint8_t *back = NULL;
    ASSERT_EQ_INT(read_all(source, &back, &e), MEDIUM_DATA_LEN);
    ASSERT_EQ_INT(got, MEDIUM_DATA_LEN);

    /* A counter below a compressor counts compressed bytes. */
    uint64_t raw = 0, packed = 0;
    MsSink *mem2 = ms_sink_memory_new();
    ASSERT(mem2);
    _cleanup_(ms_sink_freep) MsSink *top = ms_sink_counter_new(
        ms_sink_compress_new(ms_sink_counter_new(mem2, &packed, &e), MS_COMPRESSION_ZSTD, 0, 0, &e),
        &raw, &e);
    ASSERT(top);
    ASSERT_OK(write_chunked(top, data, MEDIUM_DATA_LEN, &e));
    ASSERT_OK(ms_sink_finish(top, &e));
    size_t mem2_len;
    ms_sink_memory_data(mem2, &mem2_len);
    ASSERT_EQ_INT(raw, MEDIUM_DATA_LEN);
    ASSERT_EQ_INT(packed, mem2_len);
    ASSERT(packed < raw);
}

/* ---- names and misuse ---- */

static void compression_names(void) {
    ASSERT_STREQ(ms_compression_to_string(MS_COMPRESSION_NONE), "none");
    ASSERT_STREQ(ms_compression_to_string(MS_COMPRESSION_ZSTD), "zstd");
    ASSERT_STREQ(ms_compression_to_string(MS_COMPRESSION_GZIP), "gzip");
    ASSERT(ms_compression_to_string(MS_COMPRESSION_INVALID) == NULL);
    ASSERT(ms_compression_to_string(_MS_COMPRESSION_MAX) == NULL);
    for (int i = 0; i < _MS_COMPRESSION_MAX; i++)
        ASSERT_EQ_INT(ms_compression_from_string(ms_compression_to_string((MsCompression) i)), i);
    ASSERT_EQ_INT(ms_compression_from_string("lz4"), MS_COMPRESSION_INVALID);
    ASSERT_EQ_INT(ms_compression_from_string(""), MS_COMPRESSION_INVALID);
    ASSERT_EQ_INT(ms_compression_from_string(NULL), MS_COMPRESSION_INVALID);
    ASSERT_STREQ(ms_compression_suffix(MS_COMPRESSION_NONE), "");
    ASSERT_STREQ(ms_compression_suffix(MS_COMPRESSION_ZSTD), ".zst");
    ASSERT_STREQ(ms_compression_suffix(MS_COMPRESSION_GZIP), ".gz");
}

static void bad_levels_rejected(void) {
    static const struct {
        MsCompression c;
        int level, threads;
    } bad[] = {
        {MS_COMPRESSION_GZIP, 10, 0}, {MS_COMPRESSION_GZIP, -1, 0}, {MS_COMPRESSION_ZSTD, 1000, 0},
        {MS_COMPRESSION_ZSTD, 0, -1}, {(MsCompression) 7, 0, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        MsError e = MS_ERROR_INIT;
        /* On failure next is freed all the same (LeakSanitizer would report it otherwise, and
         * a double free if the caller freed it too). */
        MsSink *mem = ms_sink_memory_new();
        ASSERT(mem);
        MsSink *s = ms_sink_compress_new(mem, bad[i].c, bad[i].level, bad[i].threads, &e);
        ASSERT(s == NULL);
        ASSERT_EQ_INT(e.code, EINVAL);
        ASSERT(e.message[0] != '\0');
    }
}

static void none_returns_next(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_sink_freep) MsSink *mem = ms_sink_memory_new();
    ASSERT(mem);
    ASSERT(ms_sink_compress_new(mem, MS_COMPRESSION_NONE, 0, 0, &e) == mem);
    _cleanup_(ms_source_freep) MsSource *src = ms_source_memory_new("x", 1);
    ASSERT(src);
    ASSERT(ms_source_decompress_new(src, MS_COMPRESSION_NONE, &e) == src);
}

static void write_after_finish_fails(void) {
    MsError e = MS_ERROR_INIT;
    MsSink *mem = ms_sink_memory_new();
    ASSERT(mem);
    _cleanup_(ms_sink_freep) MsSink *s = ms_sink_compress_new(mem, MS_COMPRESSION_GZIP, 0, 0, &e);
    ASSERT(s);
    ASSERT_OK(ms_sink_write(s, "hello", 5, &e));
    ASSERT_OK(ms_sink_finish(s, &e));
    ASSERT_EQ_INT(ms_sink_write(s, "more", 4, &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "after finish");
}

/* A sink whose writes fail, as a full disk or a dropped upload would. */
typedef struct {
    MsSink base;
} FailSink;

static int fail_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    return ms_error_set(e, ENOSPC, "no space left on test device");
}

static int fail_sink_finish(MsSink *s, MsError *e) {
    return 0;
}

static void fail_sink_free(MsSink *s) {
    free(s);
}

static void downstream_error_sticks(void) {
    MsError e = MS_ERROR_INIT;
    FailSink *f = calloc(1, sizeof(*f));
    ASSERT(f);
    f->base = (MsSink){fail_sink_write, fail_sink_finish, fail_sink_free};
    _cleanup_(ms_sink_freep) MsSink *s =
        ms_sink_compress_new(&f->base, MS_COMPRESSION_GZIP, 0, 0, &e);
    ASSERT(s);
    _cleanup_free_ uint8_t *data = make_data(MEDIUM_DATA_LEN, DATA_SEED);
    ASSERT(data);
    ASSERT_EQ_INT(write_chunked(s, data, MEDIUM_DATA_LEN, &e), -ENOSPC);
    ASSERT_CONTAINS(e.message, "no space");
    /* finish() must not pretend the stream is complete. */
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_sink_finish(s, &e), -ENOSPC);
    ASSERT_CONTAINS(e.message, "unusable");
}

MS_TEST_MAIN(TEST_CASE(sha256_known_vectors), TEST_CASE(sha256_sink_and_source_agree),
             TEST_CASE(roundtrip_zstd), TEST_CASE(roundtrip_zstd_threads),
             TEST_CASE(roundtrip_zstd_fast_level), TEST_CASE(roundtrip_gzip),
             TEST_CASE(roundtrip_gzip_best), TEST_CASE(roundtrip_none),
             TEST_CASE(empty_payload_roundtrip), TEST_CASE(auto_detects_each),
             TEST_CASE(auto_passes_short_input), TEST_CASE(truncated_zstd),
             TEST_CASE(truncated_gzip), TEST_CASE(bit_flip_zstd), TEST_CASE(bit_flip_gzip),
             TEST_CASE(corrupt_error_names_offset), TEST_CASE(concatenated_gzip),
             TEST_CASE(concatenated_zstd), TEST_CASE(counters_count), TEST_CASE(compression_names),
             TEST_CASE(bad_levels_rejected), TEST_CASE(none_returns_next),
             TEST_CASE(write_after_finish_fails), TEST_CASE(downstream_error_sticks))

/* Tests for CRC-64/ECMA (Go hash/crc64 with crc64.ECMA): check values, chunking, alignment. */
#include <stdint.h>
#include <string.h>

#include "archive/crc64.h"
#include "test.h"

#define CRC64_ECMA_REFLECTED_POLY 0xC96C5795D7870F42ULL
#define RANDOM_BUFFER_SIZE 4099 /* odd on purpose: exercises every tail length */

/* Bit-at-a-time reference, independent of the table-driven code under test. */
static uint64_t crc64_reference(const uint8_t *p, size_t len) {
    uint64_t crc = ~0ULL;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 1) ? (crc >> 1) ^ CRC64_ECMA_REFLECTED_POLY : crc >> 1;
    }
    return ~crc;
}

static void fill_random(uint8_t *buf, size_t len, uint32_t seed) {
    /* xorshift32: deterministic across runs and platforms */
    uint32_t x = seed ? seed : 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t) x;
    }
}

static void check_value(void) {
    /* The catalogue check value of CRC-64/XZ, which is what Go's crc64.ECMA table computes. */
    ASSERT(ms_crc64_update(0, "123456789", 9) == 0x995DC9BBDF1939FAULL);
}

static void empty_input_keeps_crc(void) {
    ASSERT(ms_crc64_update(0, NULL, 0) == 0);
    ASSERT(ms_crc64_update(0x1234, "", 0) == 0x1234);
}

static void bson_document_vector(void) {
    /* {_id: int32 1}; the value was computed with an independent implementation and appears
     * as the CRC of the golden archive in test-archive. */
    static const uint8_t doc[] = {0x0e, 0x00, 0x00, 0x00, 0x10, 0x5f, 0x69,
                                  0x64, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
    ASSERT(ms_crc64_update(0, doc, sizeof(doc)) == 0xf3ea61436a4459feULL);
}

static void matches_reference_all_lengths_and_alignments(void) {
    static uint8_t buf[RANDOM_BUFFER_SIZE];
    fill_random(buf, sizeof(buf), 42);
    for (size_t start = 0; start < 8; start++)
        for (size_t len = 0; len < 300; len++)
            ASSERT(ms_crc64_update(0, buf + start, len) == crc64_reference(buf + start, len));
    ASSERT(ms_crc64_update(0, buf, sizeof(buf)) == crc64_reference(buf, sizeof(buf)));
}

static void incremental_equals_one_shot(void) {
    static uint8_t buf[RANDOM_BUFFER_SIZE];
    fill_random(buf, sizeof(buf), 7);
    uint64_t whole = ms_crc64_update(0, buf, sizeof(buf));

    /* Every two-piece split. */
    for (size_t cut = 0; cut <= sizeof(buf); cut++) {
        uint64_t crc = ms_crc64_update(0, buf, cut);
        crc = ms_crc64_update(crc, buf + cut, sizeof(buf) - cut);
        ASSERT(crc == whole);
    }
    /* Many irregular pieces. */
    uint64_t crc = 0;
    size_t pos = 0, step = 1;
    while (pos < sizeof(buf)) {
        size_t n = step < sizeof(buf) - pos ? step : sizeof(buf) - pos;
        crc = ms_crc64_update(crc, buf + pos, n);
        pos += n;
        step = step * 3 % 61 + 1;
    }
    ASSERT(crc == whole);
}

/* combine(crc(A), crc(B), len(B)) == crc(A || B) at every cut, empty pieces included, and
 * chained over many pieces as the archive writer chains segments. */
static void combine_equals_concatenation(void) {
    static uint8_t buf[RANDOM_BUFFER_SIZE];
    fill_random(buf, sizeof(buf), 7);
    uint64_t whole = ms_crc64_update(0, buf, sizeof(buf));
    for (size_t cut = 0; cut <= sizeof(buf); cut += 1 + cut / 3) {
        uint64_t a = ms_crc64_update(0, buf, cut);
        uint64_t b = ms_crc64_update(0, buf + cut, sizeof(buf) - cut);
        ASSERT(ms_crc64_combine(a, b, sizeof(buf) - cut) == whole);
    }
    ASSERT(ms_crc64_combine(0, 0, 0) == 0);
    ASSERT(ms_crc64_combine(whole, 0, 0) == whole);
    uint64_t crc = 0;
    size_t pos = 0, step = 5;
    while (pos < sizeof(buf)) {
        size_t n = step < sizeof(buf) - pos ? step : sizeof(buf) - pos;
        crc = ms_crc64_combine(crc, ms_crc64_update(0, buf + pos, n), n);
        pos += n;
        step = step * 7 % 509 + 1;
    }
    ASSERT(crc == whole);
    /* A longer B (1 MiB of zeros, 20 squaring rounds) against updating straight through. */
    static uint8_t zeros[1 << 20];
    uint64_t head = ms_crc64_update(0, "123456789", 9);
    ASSERT(ms_crc64_combine(head, ms_crc64_update(0, zeros, sizeof(zeros)), sizeof(zeros)) ==
           ms_crc64_update(head, zeros, sizeof(zeros)));
}

MS_TEST_MAIN(TEST_CASE(check_value), TEST_CASE(combine_equals_concatenation), TEST_CASE(empty_input_keeps_crc),
             TEST_CASE(bson_document_vector),
             TEST_CASE(matches_reference_all_lengths_and_alignments),
             TEST_CASE(incremental_equals_one_shot))

/* CRC-64/ECMA-182 as Go's hash/crc64 ECMA table computes it: slicing-by-8, tables built once. */
#include "crc64.h"

#include <endian.h>
#include <pthread.h>
#include <string.h>

/* ECMA-182 polynomial 0x42F0E1EBA9EA3693, bit-reversed because the CRC is computed LSB first. */
#define CRC64_ECMA_REFLECTED_POLY 0xC96C5795D7870F42ULL
#define CRC64_SLICES 8

/* table[0] is the classic byte-at-a-time table; table[k][b] is the CRC of byte b followed by k
 * zero bytes, which lets the loop fold eight input bytes per step instead of one. */
static uint64_t crc64_table[CRC64_SLICES][256];
static pthread_once_t crc64_table_once = PTHREAD_ONCE_INIT;

static void crc64_build_tables(void) {
    for (unsigned i = 0; i < 256; i++) {
        uint64_t crc = i;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (CRC64_ECMA_REFLECTED_POLY & (0 - (crc & 1)));
        crc64_table[0][i] = crc;
    }
    for (unsigned i = 0; i < 256; i++)
        for (int k = 1; k < CRC64_SLICES; k++) {
            uint64_t prev = crc64_table[k - 1][i];
            crc64_table[k][i] = (prev >> 8) ^ crc64_table[0][prev & 0xff];
        }
}

uint64_t ms_crc64_update(uint64_t crc, const void *buf, size_t len) {
    pthread_once(&crc64_table_once, crc64_build_tables);

    const uint8_t *p = buf;
    const uint64_t(*t)[256] = (const uint64_t(*)[256]) crc64_table;
    /* Go's crc64.Update inverts before and after, so a fresh CRC starts from 0 and
     * pieces can be chained by passing the previous result back in. */
    crc = ~crc;
    while (len >= CRC64_SLICES) {
        uint64_t word;
        memcpy(&word, p, sizeof(word));
        crc ^= le64toh(word); /* the reflected CRC consumes bytes in little-endian order */
        crc = t[7][crc & 0xff] ^ t[6][(crc >> 8) & 0xff] ^ t[5][(crc >> 16) & 0xff] ^
              t[4][(crc >> 24) & 0xff] ^ t[3][(crc >> 32) & 0xff] ^ t[2][(crc >> 40) & 0xff] ^
              t[1][(crc >> 48) & 0xff] ^ t[0][crc >> 56];
        p += CRC64_SLICES;
        len -= CRC64_SLICES;
    }
    while (len-- > 0)
        crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

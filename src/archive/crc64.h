/* CRC-64 with the ECMA-182 polynomial in reflected form (as Go's hash/crc64 with crc64.ECMA,
 * the checksum mongodump writes at the end of every namespace of an archive). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Start with crc = 0; feed data in any number of pieces. */
uint64_t ms_crc64_update(uint64_t crc, const void *buf, size_t len);

/* The CRC of A followed by B, from crc(A), crc(B) and B's length in bytes. */
uint64_t ms_crc64_combine(uint64_t crc_a, uint64_t crc_b, uint64_t len_b);

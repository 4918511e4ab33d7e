/* Content-defined chunking, FastCDC style (Xia et al., USENIX ATC 2016): a gear rolling hash
 * over the bytes, a cut where its top bits are zero, with normalised chunking (a stricter mask
 * before the average size, a looser one after) so sizes cluster around the average. Cuts
 * depend only on the bytes near them: an insertion moves the cuts around it, not every later
 * one, which is what lets a daily full dump be stored as mostly the same chunks.
 *
 * Pure: no allocation, no I/O; the chunked snapshot (engine/chunked) keeps the buffer. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct MsCdcParams {
    size_t min, avg, max; /* min <= avg <= max; avg a power of two */
    uint64_t mask_strict, mask_loose;
} MsCdcParams;

/* Parameters for an average chunk of avg bytes (a power of two from 1 KiB to 1 MiB): min
 * avg/4, max avg*8. Returns -EINVAL for another avg. */
int ms_cdc_params(size_t avg, MsCdcParams *ret);

/* The length of the chunk that starts at p, given n bytes available: the first cut point, or
 * min(n, max) when there is none within them. A caller with more data to come and n < max
 * must not treat a result of n as a cut (it needs more bytes); at the end of the stream it is
 * the last chunk. */
size_t ms_cdc_cut(const MsCdcParams *cp, const uint8_t *p, size_t n);

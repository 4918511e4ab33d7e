/* Content-defined chunking (cdc.h). */
#include "cdc.h"

#include <errno.h>
#include <pthread.h>

/* The gear table: 256 fixed pseudo-random 64-bit values (splitmix64 from a fixed seed). They
 * are part of the format: changing them moves every cut, and a new snapshot would share no
 * chunk with the older ones (nothing breaks; only deduplication is lost once). */
static uint64_t gear[256];
static pthread_once_t gear_once = PTHREAD_ONCE_INIT;

static void gear_init(void) {
    uint64_t x = 0x6d6f6e676f736e61ULL; /* "mongosna" */
    for (int i = 0; i < 256; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        gear[i] = z ^ (z >> 31);
    }
}

/* The top `bits` bits: the gear hash's high bits depend on the last 64 bytes. */
static uint64_t top_mask(unsigned bits) {
    return bits == 0 ? 0 : ~0ULL << (64 - bits);
}

int ms_cdc_params(size_t avg, MsCdcParams *ret) {
    if (avg < 1024 || avg > (1u << 20) || (avg & (avg - 1)))
        return -EINVAL;
    unsigned bits = 0;
    while ((1ULL << bits) < avg)
        bits++;
    pthread_once(&gear_once, gear_init);
    *ret = (MsCdcParams){
        .min = avg / 4,
        .avg = avg,
        .max = avg * 8,
        /* normalisation level 2: two bits stricter before the average, two looser after */
        .mask_strict = top_mask(bits + 2),
        .mask_loose = top_mask(bits - 2),
    };
    return 0;
}

size_t ms_cdc_cut(const MsCdcParams *cp, const uint8_t *p, size_t n) {
    if (n <= cp->min)
        return n;
    size_t end = n < cp->max ? n : cp->max;
    size_t normal = end < cp->avg ? end : cp->avg;
    uint64_t h = 0;
    size_t i = cp->min;
    /* The hash is not rolled over the first min bytes: a cut there is not allowed anyway, and
     * skipping them is most of FastCDC's speed. */
    for (; i < normal; i++) {
        h = (h << 1) + gear[p[i]];
        if (!(h & cp->mask_strict))
            return i + 1;
    }
    for (; i < end; i++) {
        h = (h << 1) + gear[p[i]];
        if (!(h & cp->mask_loose))
            return i + 1;
    }
    return end;
}

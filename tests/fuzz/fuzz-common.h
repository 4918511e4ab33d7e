/* Helpers shared by the libFuzzer targets: input splitting, a source that reads in uneven
 * chunks, and a place to say "this is a real finding" loudly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "io/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An assertion about the code under test (not about the harness): print and abort, so that
 * libFuzzer keeps the input as a crash artefact. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A cursor over the fuzz input. */
typedef struct FuzzInput {
    const uint8_t *p;
    size_t n;
} FuzzInput;

static inline uint8_t fuzz_u8(FuzzInput *in) {
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint32_t fuzz_u32le(FuzzInput *in) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t) fuzz_u8(in) << (8 * i);
    return v;
}

/* Take up to len bytes (fewer when the input runs out). */
static inline FuzzInput fuzz_take(FuzzInput *in, size_t len) {
    if (len > in->n)
        len = in->n;
    FuzzInput part = {in->p, len};
    in->p += len;
    in->n -= len;
    return part;
}

/* A NUL-terminated copy (the C string ends at the first NUL of the bytes, as a C caller would
 * see it). */
static inline char *fuzz_strdup(FuzzInput part) {
    char *s = malloc(part.n + 1);
    if (!s)
        abort();
    memcpy(s, part.p, part.n);
    s[part.n] = '\0';
    return s;
}

/* Split at the first occurrence of sep (a byte): before goes to *a, after to *b. Without sep,
 * everything is *a and *b is empty. */
static inline void fuzz_split(FuzzInput in, uint8_t sep, FuzzInput *a, FuzzInput *b) {
    const uint8_t *at = in.n ? memchr(in.p, sep, in.n) : NULL;
    if (!at) {
        *a = in;
        *b = (FuzzInput){in.p + in.n, 0};
        return;
    }
    *a = (FuzzInput){in.p, (size_t) (at - in.p)};
    *b = (FuzzInput){at + 1, in.n - (size_t) (at - in.p) - 1};
}

/* A source over a buffer that hands out at most `chunk` bytes per read (0: no limit), so the
 * parsers' refill paths see reads that split items anywhere. */
typedef struct FuzzChunkySource {
    MsSource base;
    const uint8_t *p;
    size_t n;
    size_t chunk;
} FuzzChunkySource;

static ssize_t fuzz_chunky_read(MsSource *s, void *buf, size_t len, MsError *e) {
    FuzzChunkySource *c = (FuzzChunkySource *) s;
    (void) e;
    size_t k = len < c->n ? len : c->n;
    if (c->chunk && k > c->chunk)
        k = c->chunk;
    if (k)
        memcpy(buf, c->p, k);
    c->p += k;
    c->n -= k;
    return (ssize_t) k;
}

static void fuzz_chunky_free(MsSource *s) {
    free(s);
}

static inline MsSource *fuzz_chunky_source_new(const uint8_t *p, size_t n, size_t chunk) {
    FuzzChunkySource *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->base.read = fuzz_chunky_read;
    c->base.free = fuzz_chunky_free;
    c->p = p;
    c->n = n;
    c->chunk = chunk;
    return &c->base;
}

/* MONGOSNAP_FUZZ_VERBOSE=1: the targets say what each input came to (for checking seeds by
 * hand: build-fuzz/tests/fuzz/fuzz-archive tests/fuzz/corpus/fuzz-archive/SEED). */
static bool fuzz_verbose;

/* Known findings that are not fixed yet (tests/fuzz/regressions/README.md): a target may steer
 * around one, the detour marked KNOWN FINDING, so that the bounded runs keep looking for new
 * ones. MONGOSNAP_FUZZ_STRICT=1 turns every detour off: run the regressions that way to check a
 * fix, and delete the detour with it. (None is open: the first three findings are fixed.) */
static bool fuzz_strict;

/* Called from every LLVMFuzzerInitialize. The code under test logs warnings for bad input; at
 * fuzzing speed that is only noise. */
static inline void fuzz_setup(void) {
    fuzz_verbose = getenv("MONGOSNAP_FUZZ_VERBOSE") != NULL;
    const char *strict = getenv("MONGOSNAP_FUZZ_STRICT");
    fuzz_strict = strict && strcmp(strict, "0") != 0;
    if (!fuzz_verbose)
        ms_log_set_max_level(MS_LOG_ERR);
}

#define fuzz_say(...)                                                                              \
    do {                                                                                           \
        if (fuzz_verbose)                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

/* Byte streams: sinks (push) and sources (pull), stacked into pipelines of small filters.
 *
 * A snapshot is written as
 *   archive writer -> counter (raw) -> compressor -> encryptor (with a key) -> counter (stored)
 *   -> sha256 -> storage sink;
 * a restore or verify reads
 *   storage source -> sha256 -> decryptor (MSENC1 header) -> decompressor -> archive reader.
 * io/chain.h builds both, with their measurements (sizes, digest) by name.
 *
 * One ownership rule for every filter constructor ms_sink_X_new(next, ..., e) and
 * ms_source_X_new(next, ..., e): it takes next, in every outcome. It returns the new stage,
 * which owns next and frees it when freed; or NULL with e set, next freed already. Given a
 * NULL next (a constructor below that failed) it returns NULL and leaves e as that failure set
 * it, so stages can be nested without checking each. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "io/compression.h"

typedef struct MsSink MsSink;
typedef struct MsSource MsSource;

struct MsSink {
    /* Write all of buf or fail. */
    int (*write)(MsSink *s, const void *buf, size_t len, MsError *e);
    /* Flush everything, finish the format (compression frame end, ...) and finish the
     * next stage. For a storage sink this commits the object: only then is it visible. */
    int (*finish)(MsSink *s, MsError *e);
    /* Free the sink and the stages below it. A storage sink freed before finish()
     * succeeded discards what was written (abort). */
    void (*free)(MsSink *s);
};

struct MsSource {
    /* Read up to len bytes; returns the count, 0 at the end, or a negative errno. */
    ssize_t (*read)(MsSource *s, void *buf, size_t len, MsError *e);
    void (*free)(MsSource *s);
};

static inline int ms_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    return len == 0 ? 0 : s->write(s, buf, len, e);
}
static inline int ms_sink_finish(MsSink *s, MsError *e) {
    return s->finish(s, e);
}
MsSink *ms_sink_free(MsSink *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsSink *, ms_sink_free);

static inline ssize_t ms_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    return s->read(s, buf, len, e);
}
/* Read exactly len bytes. Returns 0 on success, -ENODATA on a clean end before the
 * first byte, -EPIPE (with a message) on an end in the middle. */
int ms_source_read_full(MsSource *s, void *buf, size_t len, MsError *e);
/* Read until len bytes or the end, through short reads: the bytes read, or a negative errno. */
ssize_t ms_source_read_up_to(MsSource *s, void *buf, size_t len, MsError *e);
MsSource *ms_source_free(MsSource *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsSource *, ms_source_free);

/* ---- plain file descriptors ---- */
/* A sink writing to fd; finish() fsyncs when sync is true. Does not close fd unless own_fd. */
MsSink *ms_sink_fd_new(int fd, int own_fd);
MsSource *ms_source_fd_new(int fd, int own_fd);
/* A sink accumulating into memory (tests, manifests); the buffer stays owned by the sink. */
MsSink *ms_sink_memory_new(void);
const uint8_t *ms_sink_memory_data(MsSink *s, size_t *ret_len);
/* A source over a caller-owned buffer that must outlive it. */
MsSource *ms_source_memory_new(const void *buf, size_t len);
/* The prefix bytes (copied), then the rest of next: what a detector that peeked at the start of
 * a stream hands on. */
MsSource *ms_source_replay_new(MsSource *next, const void *prefix, size_t len, MsError *e);

/* ---- counting: bytes that passed ---- */
/* *counter grows by every byte that passed (atomically: a compressor's threads may write). */
MsSink *ms_sink_counter_new(MsSink *next, uint64_t *counter, MsError *e);
MsSource *ms_source_counter_new(MsSource *next, uint64_t *counter, MsError *e);

/* ---- SHA-256 of bytes that passed (OpenSSL EVP) ---- */
#define MS_SHA256_HEX_LEN 64
/* ret_hex (the caller's, outliving the stage) gets the hex digest of every byte that passed when
 * the sink finishes or the source reaches its end; it is "" until then. */
MsSink *ms_sink_sha256_new(MsSink *next, char ret_hex[MS_SHA256_HEX_LEN + 1], MsError *e);
MsSource *ms_source_sha256_new(MsSource *next, char ret_hex[MS_SHA256_HEX_LEN + 1], MsError *e);
void ms_sha256_hex(const void *buf, size_t len, char ret_hex[MS_SHA256_HEX_LEN + 1]);

/* ---- compression (the codecs: io/compression.h) ---- */

/* level 0 means the codec's default; threads is for zstd (0 = single-threaded). */
MsSink *ms_sink_compress_new(MsSink *next, MsCompression c, int level, int threads, MsError *e);
/* Decompress by looking at the first bytes (zstd or gzip magic; anything else passes
 * through unchanged). ret_detected, when non-NULL, says what was found. */
MsSource *ms_source_decompress_auto_new(MsSource *next, MsCompression *ret_detected, MsError *e);
MsSource *ms_source_decompress_new(MsSource *next, MsCompression c, MsError *e);

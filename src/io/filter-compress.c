/* Compression filters: zstd and gzip compressing sinks, decompressing sources, and format
 * detection. */
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader, ZSTD_WINDOWLOG_LIMIT_DEFAULT */
#include <zstd.h>
#include <zstd_errors.h>

#include "common/string-table.h"

/* Added to zlib's windowBits, this makes deflate write (and inflate expect) a gzip header
 * and trailer instead of a zlib one, so `gzip -d` and Go's compress/gzip read the output. */
#define ZLIB_GZIP_WRAPPER 16
/* Largest zlib window (2^15 bytes), in gzip framing. */
#define GZIP_WINDOW_BITS (MAX_WBITS + ZLIB_GZIP_WRAPPER)
/* zlib's default memory level (deflateInit() uses it); higher buys little. */
#define GZIP_MEM_LEVEL 8
#define GZIP_LEVEL_MIN 1
#define GZIP_LEVEL_MAX 9
/* Large enough that zlib calls and downstream writes are not the bottleneck. */
#define GZIP_BUFFER_SIZE (128u * 1024u)
/* zlib counts in uInt; longer inputs are fed in pieces of at most this. */
#define GZIP_MAX_CHUNK ((size_t) UINT_MAX)

/* The first bytes of each format: enough to tell them apart from a raw archive. */
#define MAGIC_PEEK_LEN 4
static const uint8_t zstd_magic[] = {0x28, 0xB5, 0x2F, 0xFD};
static const uint8_t gzip_magic[] = {0x1F, 0x8B};

static const char *const compression_names[_MS_COMPRESSION_MAX] = {
    [MS_COMPRESSION_NONE] = "none",
    [MS_COMPRESSION_ZSTD] = "zstd",
    [MS_COMPRESSION_GZIP] = "gzip",
};

static const char *const compression_suffixes[_MS_COMPRESSION_MAX] = {
    [MS_COMPRESSION_NONE] = "",
    [MS_COMPRESSION_ZSTD] = ".zst",
    [MS_COMPRESSION_GZIP] = ".gz",
};

MS_DEFINE_STRING_TABLE_LOOKUP(ms_compression, MsCompression, compression_names,
                              MS_COMPRESSION_INVALID)

const char *ms_compression_suffix(MsCompression c) {
    if (c < 0 || c >= _MS_COMPRESSION_MAX)
        return NULL;
    return compression_suffixes[c];
}

/* ======================================================================================
 * Compressing sink
 * ====================================================================================== */

typedef struct {
    MsSink base;
    MsSink *next;
    MsCompression c;
    ZSTD_CCtx *zc;
    z_stream zs;
    bool zs_initialised;
    uint8_t *out;
    size_t out_size;
    bool finished;
    /* After a failure the codec state no longer matches what reached next: refuse more. */
    int failed;
} CompressSink;

/* Remember the first failure so later calls report it instead of writing a broken stream. */
static int compress_sink_fail(CompressSink *z, int r) {
    if (r < 0 && z->failed == 0)
        z->failed = r;
    return r;
}

static int compress_sink_check_usable(CompressSink *z, MsError *e) {
    if (z->failed < 0)
        return ms_error_set(e, -z->failed,
                            "%s compression stream is unusable after an earlier error",
                            compression_names[z->c]);
    if (z->finished)
        return ms_error_set(e, EINVAL, "internal error: %s compression stream used after finish()",
                            compression_names[z->c]);
    return 0;
}

/* Run the zstd compressor over [buf, len) with the given end directive, handing all
 * output to next. For ZSTD_e_end it loops until the frame is completely written. */
static int zstd_sink_pump(CompressSink *z, const void *buf, size_t len, ZSTD_EndDirective mode,
                          MsError *e) {
    ZSTD_inBuffer in = {buf, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {z->out, z->out_size, 0};
        size_t remaining = ZSTD_compressStream2(z->zc, &out, &in, mode);
        if (ZSTD_isError(remaining))
            return ms_error_set(e, EIO, "zstd compression failed: %s",
                                ZSTD_getErrorName(remaining));
        int r = ms_sink_write(z->next, z->out, out.pos, e);
        if (r < 0)
            return r;
        /* e_continue is done once all input is taken; e_end once the frame is flushed. */
        if (mode == ZSTD_e_end ? remaining == 0 : in.pos == in.size)
            return 0;
    }
}

/* Run deflate over [buf, len) with the given flush mode, handing all output to next. */
static int gzip_sink_pump(CompressSink *z, const void *buf, size_t len, int flush, MsError *e) {
    const uint8_t *p = buf;
    for (;;) {
        size_t chunk = MS_MIN(len, GZIP_MAX_CHUNK);
        /* zlib's API is not const-correct; deflate never writes through next_in. */
        z->zs.next_in = (Bytef *) (uintptr_t) p;
        z->zs.avail_in = (uInt) chunk;
        /* Only the last piece may carry Z_FINISH. */
        int mode = chunk == len ? flush : Z_NO_FLUSH;
        int zr;
        do {
            z->zs.next_out = z->out;
            z->zs.avail_out = (uInt) z->out_size;
            zr = deflate(&z->zs, mode);
            if (zr == Z_STREAM_ERROR)
                return ms_error_set(e, EIO, "gzip compression failed: %s",
                                    z->zs.msg ? z->zs.msg : "zlib stream error");
            int r = ms_sink_write(z->next, z->out, z->out_size - z->zs.avail_out, e);
            if (r < 0)
                return r;
            /* A full output buffer means deflate may have more; with Z_FINISH keep going
             * until it reports the end of the stream. */
        } while (z->zs.avail_out == 0 || (mode == Z_FINISH && zr != Z_STREAM_END));
        p += chunk;
        len -= chunk;
        if (len == 0)
            return 0;
    }
}

static int compress_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    CompressSink *z = (CompressSink *) s;
    int r = compress_sink_check_usable(z, e);
    if (r < 0)
        return r;
    if (z->c == MS_COMPRESSION_ZSTD)
        r = zstd_sink_pump(z, buf, len, ZSTD_e_continue, e);
    else
        r = gzip_sink_pump(z, buf, len, Z_NO_FLUSH, e);
    return compress_sink_fail(z, r);
}

static int compress_sink_finish(MsSink *s, MsError *e) {
    CompressSink *z = (CompressSink *) s;
    int r = compress_sink_check_usable(z, e);
    if (r < 0)
        return r;
    if (z->c == MS_COMPRESSION_ZSTD)
        r = zstd_sink_pump(z, NULL, 0, ZSTD_e_end, e);
    else
        r = gzip_sink_pump(z, NULL, 0, Z_FINISH, e);
    if (r < 0)
        return compress_sink_fail(z, r);
    z->finished = true;
    return compress_sink_fail(z, ms_sink_finish(z->next, e));
}

/* Free the codec state and buffers but not next: shared by free() and failed construction. */
static void compress_sink_free_state(CompressSink *z) {
    ZSTD_freeCCtx(z->zc);
    if (z->zs_initialised)
        deflateEnd(&z->zs);
    free(z->out);
    free(z);
}

static void compress_sink_free(MsSink *s) {
    CompressSink *z = (CompressSink *) s;
    ms_sink_free(z->next);
    compress_sink_free_state(z);
}

static int zstd_set(CompressSink *z, ZSTD_cParameter param, int value, const char *what,
                    MsError *e) {
    size_t zr = ZSTD_CCtx_setParameter(z->zc, param, value);
    if (ZSTD_isError(zr)) {
        ZSTD_bounds b = ZSTD_cParam_getBounds(param);
        if (ZSTD_isError(b.error))
            return ms_error_set(e, EINVAL, "zstd rejected %s %d: %s", what, value,
                                ZSTD_getErrorName(zr));
        return ms_error_set(e, EINVAL, "zstd rejected %s %d (this libzstd accepts %d..%d): %s",
                            what, value, b.lowerBound, b.upperBound, ZSTD_getErrorName(zr));
    }
    return 0;
}

static int zstd_sink_init(CompressSink *z, int level, int threads, MsError *e) {
    z->zc = ZSTD_createCCtx();
    z->out_size = ZSTD_CStreamOutSize();
    z->out = malloc(z->out_size);
    if (!z->zc || !z->out)
        return ms_error_set(e, ENOMEM, "out of memory setting up zstd compression");

    /* libzstd silently clamps levels; a typo in the configuration deserves an error. */
    if (level != 0 && (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()))
        return ms_error_set(e, EINVAL,
                            "zstd compression level %d is out of range (%d..%d, or 0 "
                            "for the default)",
                            level, ZSTD_minCLevel(), ZSTD_maxCLevel());
    int r;
    if (level != 0) {
        r = zstd_set(z, ZSTD_c_compressionLevel, level, "compression level", e);
        if (r < 0)
            return r;
    }
    /* The frame checksum lets a restore detect corruption that still decodes. */
    r = zstd_set(z, ZSTD_c_checksumFlag, 1, "checksum flag", e);
    if (r < 0)
        return r;
    if (threads > 0) {
        /* Without ZSTD_MULTITHREAD libzstd reports an upper bound of 0 workers. */
        ZSTD_bounds b = ZSTD_cParam_getBounds(ZSTD_c_nbWorkers);
        if (!ZSTD_isError(b.error) && b.upperBound == 0)
            return ms_error_set(e, ENOTSUP,
                                "zstd compression threads %d requested, but this libzstd was "
                                "built without multithreading; set threads to 0",
                                threads);
        r = zstd_set(z, ZSTD_c_nbWorkers, threads, "number of compression threads", e);
        if (r < 0)
            return r;
    }
    return 0;
}

static int gzip_sink_init(CompressSink *z, int level, MsError *e) {
    if (level != 0 && (level < GZIP_LEVEL_MIN || level > GZIP_LEVEL_MAX))
        return ms_error_set(e, EINVAL,
                            "gzip compression level %d is out of range (%d..%d, or 0 "
                            "for the default)",
                            level, GZIP_LEVEL_MIN, GZIP_LEVEL_MAX);
    z->out_size = GZIP_BUFFER_SIZE;
    z->out = malloc(z->out_size);
    if (!z->out)
        return ms_error_set(e, ENOMEM, "out of memory setting up gzip compression");
    int zr = deflateInit2(&z->zs, level == 0 ? Z_DEFAULT_COMPRESSION : level, Z_DEFLATED,
                          GZIP_WINDOW_BITS, GZIP_MEM_LEVEL, Z_DEFAULT_STRATEGY);
    if (zr == Z_MEM_ERROR)
        return ms_error_set(e, ENOMEM, "out of memory setting up gzip compression");
    if (zr != Z_OK)
        return ms_error_set(e, EINVAL, "gzip compression setup failed: %s",
                            z->zs.msg ? z->zs.msg : zError(zr));
    z->zs_initialised = true;
    return 0;
}

MsSink *ms_sink_compress_new(MsSink *next, MsCompression c, int level, int threads, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: compression sink without a next stage");
        return NULL;
    }
    if (c == MS_COMPRESSION_NONE)
        return next;
    if (c != MS_COMPRESSION_ZSTD && c != MS_COMPRESSION_GZIP) {
        ms_sink_free(next);
        ms_error_set(e, EINVAL, "unknown compression method %d", (int) c);
        return NULL;
    }
    if (threads < 0) {
        ms_sink_free(next);
        ms_error_set(e, EINVAL, "compression threads must be 0 or more, not %d", threads);
        return NULL;
    }

    CompressSink *z = calloc(1, sizeof(*z));
    if (!z) {
        ms_sink_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up %s compression", compression_names[c]);
        return NULL;
    }
    z->base = (MsSink){compress_sink_write, compress_sink_finish, compress_sink_free};
    z->c = c;
    int r = c == MS_COMPRESSION_ZSTD ? zstd_sink_init(z, level, threads, e)
                                     : gzip_sink_init(z, level, e);
    if (r < 0) {
        compress_sink_free_state(z);
        ms_sink_free(next);
        return NULL;
    }
    z->next = next;
    return &z->base;
}

/* ======================================================================================
 * Decompressing source
 * ====================================================================================== */

typedef struct {
    MsSource base;
    MsSource *next;
    MsCompression c;
    ZSTD_DCtx *zd;
    z_stream zs;
    bool zs_initialised;
    /* Compressed input read from next and not yet consumed: in[in_pos, in_len). */
    uint8_t *in;
    size_t in_size, in_pos, in_len;
    /* Compressed bytes the decoder has consumed, for error messages. */
    uint64_t in_offset;
    bool next_eof;
    /* A frame/member has started and not yet ended: EOF now means truncation. */
    bool in_frame;
    /* The current zstd frame's first bytes, to name its window when the decoder refuses it. */
    uint8_t frame_header[ZSTD_FRAMEHEADERSIZE_MAX];
    size_t frame_header_len;
    bool done;
    /* Once broken, keep failing instead of returning a plausible but wrong end. */
    int failed;
} DecompressSource;

static int decompress_fail(DecompressSource *d, int r) {
    if (r < 0 && d->failed == 0)
        d->failed = r;
    return r;
}

/* Make sure there is compressed input, unless next is exhausted. */
static int decompress_refill(DecompressSource *d, MsError *e) {
    if (d->in_pos < d->in_len || d->next_eof)
        return 0;
    ssize_t n = ms_source_read(d->next, d->in, d->in_size, e);
    if (n < 0)
        return (int) n;
    d->in_pos = 0;
    d->in_len = (size_t) n;
    if (n == 0)
        d->next_eof = true;
    return 0;
}

static int decompress_truncated(DecompressSource *d, MsError *e) {
    if (d->in_offset == 0)
        return ms_error_set(e, EPIPE, "compressed stream is empty (expected a %s %s)",
                            compression_names[d->c],
                            d->c == MS_COMPRESSION_ZSTD ? "frame" : "member");
    return ms_error_set(e, EPIPE,
                        "compressed stream is truncated (%s %s incomplete at compressed byte "
                        "offset %" PRIu64 ")",
                        compression_names[d->c], d->c == MS_COMPRESSION_ZSTD ? "frame" : "member",
                        d->in_offset);
}

static ssize_t zstd_source_read(DecompressSource *d, void *buf, size_t len, MsError *e) {
    ZSTD_outBuffer out = {buf, len, 0};
    while (out.pos == 0) {
        int r = decompress_refill(d, e);
        if (r < 0)
            return r;
        bool no_input = d->in_pos == d->in_len;
        if (no_input && d->next_eof && !d->in_frame) {
            /* Clean end between frames; a stream must hold at least one frame. */
            if (d->in_offset == 0)
                return decompress_truncated(d, e);
            d->done = true;
            return 0;
        }
        /* Called even without input while inside a frame: the decoder may still hold
         * output that did not fit last time. */
        ZSTD_inBuffer in = {d->in, d->in_len, d->in_pos};
        if (!d->in_frame)
            d->frame_header_len = 0;
        /* The frame header as far as it is known: what earlier calls consumed, then what this
         * one is given (a refusing call does not say how much it looked at). */
        uint8_t probe[ZSTD_FRAMEHEADERSIZE_MAX];
        size_t probe_len = d->frame_header_len;
        memcpy(probe, d->frame_header, probe_len);
        size_t more = MS_MIN(d->in_len - d->in_pos, sizeof(probe) - probe_len);
        memcpy(probe + probe_len, d->in + d->in_pos, more);
        probe_len += more;
        size_t zr = ZSTD_decompressStream(d->zd, &out, &in);
        size_t consumed = in.pos - d->in_pos;
        size_t keep = MS_MIN(consumed, sizeof(d->frame_header) - d->frame_header_len);
        memcpy(d->frame_header + d->frame_header_len, d->in + d->in_pos, keep);
        d->frame_header_len += keep;
        d->in_pos = in.pos;
        d->in_offset += consumed;
        /* zstd reports damage when it checks a block or the frame checksum, not where the bad
         * byte is: name the span it was decoding (up to what has been read so far). */
        if (ZSTD_isError(zr) && ZSTD_getErrorCode(zr) == ZSTD_error_frameParameter_windowTooLarge) {
            /* Not damage: a frame written with a long window (zstd --long) that this decoder
             * does not take on (libzstd's default limit, 2^ZSTD_WINDOWLOG_LIMIT_DEFAULT). */
            ZSTD_frameHeader h = {0};
            bool known = ZSTD_getFrameHeader(&h, probe, probe_len) == 0;
            return ms_error_set(e, EINVAL,
                                "the compressed stream is a zstd frame with a%s %llu MiB window, "
                                "more than the %u MiB this mongosnap decodes with: it is not "
                                "damaged, but not supported; decompress it first (zstd -d "
                                "--long=31) and restore the archive file with --archive",
                                known ? "" : " window of more than",
                                known ? (unsigned long long) (h.windowSize >> 20)
                                      : (unsigned long long) (1u << ZSTD_WINDOWLOG_LIMIT_DEFAULT) >>
                                            20,
                                (1u << ZSTD_WINDOWLOG_LIMIT_DEFAULT) >> 20);
        }
        if (ZSTD_isError(zr))
            return ms_error_set(e, EBADMSG,
                                "compressed stream is corrupt (zstd: %s, in the data between "
                                "compressed byte offsets %" PRIu64 " and %" PRIu64 ")",
                                ZSTD_getErrorName(zr), d->in_offset,
                                d->in_offset + (uint64_t) (d->in_len - d->in_pos));
        /* 0 means the frame is fully decoded and flushed. */
        d->in_frame = zr != 0;
        if (out.pos == 0 && consumed == 0 && no_input && d->next_eof)
            return decompress_truncated(d, e);
    }
    return (ssize_t) out.pos;
}

static ssize_t gzip_source_read(DecompressSource *d, void *buf, size_t len, MsError *e) {
    size_t produced = 0;
    while (produced == 0) {
        int r = decompress_refill(d, e);
        if (r < 0)
            return r;
        bool no_input = d->in_pos == d->in_len;
        if (no_input && d->next_eof && !d->in_frame) {
            if (d->in_offset == 0)
                return decompress_truncated(d, e);
            d->done = true;
            return 0;
        }
        size_t avail_in = d->in_len - d->in_pos;
        size_t avail_out = MS_MIN(len, GZIP_MAX_CHUNK);
        d->zs.next_in = d->in + d->in_pos;
        d->zs.avail_in = (uInt) avail_in;
        d->zs.next_out = buf;
        d->zs.avail_out = (uInt) avail_out;
        d->in_frame = true;
        int zr = inflate(&d->zs, Z_NO_FLUSH);
        size_t consumed = avail_in - d->zs.avail_in;
        produced = avail_out - d->zs.avail_out;
        d->in_pos += consumed;
        d->in_offset += consumed;
        switch (zr) {
        case Z_OK:
            break;
        case Z_STREAM_END:
            /* One member ended; another may follow (concatenated gzip files). */
            d->in_frame = false;
            if (inflateReset(&d->zs) != Z_OK)
                return ms_error_set(e, EIO, "gzip decompression reset failed");
            break;
        case Z_BUF_ERROR:
            /* No progress possible: fine if more input is coming, truncation if not. */
            if (no_input && d->next_eof)
                return decompress_truncated(d, e);
            break;
        case Z_MEM_ERROR:
            return ms_error_set(e, ENOMEM, "out of memory in gzip decompression");
        default:
            return ms_error_set(e, EBADMSG,
                                "compressed stream is corrupt (gzip: %s at compressed byte "
                                "offset %" PRIu64 ")",
                                d->zs.msg ? d->zs.msg : zError(zr), d->in_offset);
        }
    }
    return (ssize_t) produced;
}

static ssize_t decompress_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    DecompressSource *d = (DecompressSource *) s;
    if (d->failed < 0)
        return ms_error_set(e, -d->failed,
                            "%s decompression stream is unusable after an earlier error",
                            compression_names[d->c]);
    if (d->done || len == 0)
        return 0;
    ssize_t n = d->c == MS_COMPRESSION_ZSTD ? zstd_source_read(d, buf, len, e)
                                            : gzip_source_read(d, buf, len, e);
    if (n < 0)
        decompress_fail(d, (int) n);
    return n;
}

static void decompress_source_free_state(DecompressSource *d) {
    ZSTD_freeDCtx(d->zd);
    if (d->zs_initialised)
        inflateEnd(&d->zs);
    free(d->in);
    free(d);
}

static void decompress_source_free(MsSource *s) {
    DecompressSource *d = (DecompressSource *) s;
    ms_source_free(d->next);
    decompress_source_free_state(d);
}

/* A decompressor over next whose first prefix_len bytes were already read (by detection). */
static MsSource *decompress_new(MsSource *next, MsCompression c, const uint8_t *prefix,
                                size_t prefix_len, MsError *e) {
    DecompressSource *d = calloc(1, sizeof(*d));
    if (!d) {
        ms_source_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up %s decompression", compression_names[c]);
        return NULL;
    }
    d->base = (MsSource){decompress_source_read, decompress_source_free};
    d->c = c;
    if (c == MS_COMPRESSION_ZSTD) {
        d->zd = ZSTD_createDCtx();
        d->in_size = ZSTD_DStreamInSize();
    } else {
        d->in_size = GZIP_BUFFER_SIZE;
    }
    d->in_size = MS_MAX(d->in_size, prefix_len);
    d->in = malloc(d->in_size);
    if (!d->in || (c == MS_COMPRESSION_ZSTD && !d->zd)) {
        ms_error_set(e, ENOMEM, "out of memory setting up %s decompression", compression_names[c]);
        decompress_source_free_state(d);
        ms_source_free(next);
        return NULL;
    }
    if (c == MS_COMPRESSION_GZIP) {
        int zr = inflateInit2(&d->zs, GZIP_WINDOW_BITS);
        if (zr != Z_OK) {
            ms_error_set(e, zr == Z_MEM_ERROR ? ENOMEM : EIO, "gzip decompression setup failed: %s",
                         d->zs.msg ? d->zs.msg : zError(zr));
            decompress_source_free_state(d);
            ms_source_free(next);
            return NULL;
        }
        d->zs_initialised = true;
    }
    if (prefix_len > 0)
        memcpy(d->in, prefix, prefix_len);
    d->in_len = prefix_len;
    d->next = next;
    return &d->base;
}

MsSource *ms_source_decompress_new(MsSource *next, MsCompression c, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: decompression source without a next stage");
        return NULL;
    }
    if (c == MS_COMPRESSION_NONE)
        return next;
    if (c != MS_COMPRESSION_ZSTD && c != MS_COMPRESSION_GZIP) {
        ms_source_free(next);
        ms_error_set(e, EINVAL, "unknown compression method %d", (int) c);
        return NULL;
    }
    return decompress_new(next, c, NULL, 0, e);
}

static bool has_magic(const uint8_t *buf, size_t len, const uint8_t *magic, size_t magic_len) {
    return len >= magic_len && memcmp(buf, magic, magic_len) == 0;
}

MsSource *ms_source_decompress_auto_new(MsSource *next, MsCompression *ret_detected, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: decompression source without a next stage");
        return NULL;
    }
    /* Sources may return short reads: keep reading until the magic fits or the data ends. */
    uint8_t prefix[MAGIC_PEEK_LEN];
    ssize_t n = ms_source_read_up_to(next, prefix, sizeof(prefix), e);
    if (n < 0) {
        ms_source_free(next);
        return NULL;
    }
    size_t got = (size_t) n;

    MsCompression c = MS_COMPRESSION_NONE;
    if (has_magic(prefix, got, zstd_magic, sizeof(zstd_magic)))
        c = MS_COMPRESSION_ZSTD;
    else if (has_magic(prefix, got, gzip_magic, sizeof(gzip_magic)))
        c = MS_COMPRESSION_GZIP;

    MsSource *s = c == MS_COMPRESSION_NONE ? ms_source_replay_new(next, prefix, got, e)
                                           : decompress_new(next, c, prefix, got, e);
    if (s && ret_detected)
        *ret_detected = c;
    return s;
}

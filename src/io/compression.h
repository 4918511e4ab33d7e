/* The compression codecs by name: what a policy's Compression= names and a stored archive's
 * suffix says, apart from the filters (io/stream.h) so that the configuration can name a codec
 * without the stream layer. */
#pragma once

typedef enum MsCompression {
    MS_COMPRESSION_NONE,
    MS_COMPRESSION_ZSTD,
    MS_COMPRESSION_GZIP,
    _MS_COMPRESSION_MAX,
    MS_COMPRESSION_INVALID = -1,
} MsCompression;

const char *ms_compression_to_string(MsCompression c);
MsCompression ms_compression_from_string(const char *s);
/* File name suffix: "", ".zst", ".gz". */
const char *ms_compression_suffix(MsCompression c);

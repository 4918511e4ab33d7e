/* The write and read chains (io/chain.h). Each stage takes the one below it (io/stream.h's
 * ownership rule), so a chain is nested constructors and one check at the end. */
#include "io/chain.h"

#include <string.h>

int ms_sink_chain_new(MsSink *store, const MsSinkChainSpec *spec, MsChainResults *results,
                      MsSink **ret_head, MsError *e) {
    *results = (MsChainResults){.compression = spec->compression};
    MsSink *s = ms_sink_sha256_new(store, results->stored_sha256, e);
    s = ms_sink_counter_new(s, &results->stored_bytes, e);
    if (spec->key)
        s = ms_sink_encrypt_new(s, spec->key, 0, e);
    s = ms_sink_compress_new(s, spec->compression, spec->level, spec->threads, e);
    s = ms_sink_counter_new(s, &results->raw_bytes, e);
    if (!s)
        return -(ms_error_is_set(e) ? e->code : ENOMEM);
    *ret_head = s;
    return 0;
}

int ms_source_chain_new(MsSource *store, MsSourceChainDepth depth, const MsEncryptKey *key,
                        MsChainResults *results, MsSource **ret_head, MsError *e) {
    *results = (MsChainResults){.compression = MS_COMPRESSION_NONE};
    MsSource *s = ms_source_counter_new(store, &results->stored_bytes, e);
    s = ms_source_sha256_new(s, results->stored_sha256, e);
    if (depth >= MS_CHAIN_DECRYPTED && s)
        s = ms_source_decrypt_auto_new(s, key, &results->encrypted, &results->encryption, e);
    if (depth >= MS_CHAIN_PLAIN && s)
        s = ms_source_decompress_auto_new(s, &results->compression, e);
    if (!s)
        return -(ms_error_is_set(e) ? e->code : ENOMEM);
    *ret_head = s;
    return 0;
}

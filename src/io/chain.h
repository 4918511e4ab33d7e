/* The two pipelines of mongosnap, built in one call each, with their measurements by name.
 *
 * In the spirit of pgBackRest's filter groups: the caller gets the head of the chain and an
 * MsChainResults that the chain's stages fill (bytes as they pass, the digest at finish()/EOF,
 * what the stream turned out to be), never a pointer to a stage inside the chain. The results
 * belong to the caller and must outlive the chain. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "io/compression.h"
#include "io/filter-encrypt.h"
#include "io/stream.h"

typedef struct MsChainResults {
    uint64_t raw_bytes;    /* write chain: the bytes before compression */
    uint64_t stored_bytes; /* the bytes in the store */
    /* SHA-256 of the stored bytes, once the sink finished or the source reached its end. */
    char stored_sha256[MS_SHA256_HEX_LEN + 1];
    /* Read chains: whether the stored bytes are encrypted (and their header), and the
     * compression found under the encryption (MS_CHAIN_PLAIN only). */
    bool encrypted;
    MsEncryptHeader encryption;
    MsCompression compression;
} MsChainResults;

typedef struct MsSinkChainSpec {
    MsCompression compression;
    int level;               /* 0: the codec's default */
    int threads;             /* zstd workers; 0: single-threaded */
    const MsEncryptKey *key; /* NULL: stored unencrypted */
} MsSinkChainSpec;

/* The snapshot's write chain over store (taken, in every outcome):
 *   head -> count raw -> compress -> encrypt (with a key) -> count stored -> SHA-256 -> store.
 * The size and digest are those of the stored (encrypted) bytes: checkable without the key. */
int ms_sink_chain_new(MsSink *store, const MsSinkChainSpec *spec, MsChainResults *results,
                      MsSink **ret_head, MsError *e);

typedef enum MsSourceChainDepth {
    MS_CHAIN_STORED,    /* the stored bytes, counted and hashed */
    MS_CHAIN_DECRYPTED, /* ... then each chunk authenticated and opened, when encrypted */
    MS_CHAIN_PLAIN,     /* ... then decompressed (zstd or gzip found by their magic) */
} MsSourceChainDepth;

/* A read chain over store (taken, in every outcome):
 *   store -> count stored -> SHA-256 -> decrypt (if encrypted) -> decompress (found) -> head.
 * Encryption is recognised by its header; an encrypted stream without key (ENOKEY) or with
 * another key (EKEYREJECTED) fails here, before anything is read past the header. */
int ms_source_chain_new(MsSource *store, MsSourceChainDepth depth, const MsEncryptKey *key,
                        MsChainResults *results, MsSource **ret_head, MsError *e);

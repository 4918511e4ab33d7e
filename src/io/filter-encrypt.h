/* Client-side encryption at rest: an AES-256-GCM sealing sink and an opening source, with keys
 * read from a file (a systemd credential). The format is described in filter-encrypt.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "stream.h"

#define MS_ENCRYPT_MAGIC "MSENC1"
#define MS_ENCRYPT_MAGIC_LEN 6
#define MS_ENCRYPT_FORMAT_VERSION 1
#define MS_ENCRYPT_CIPHER_AES_256_GCM 1
#define MS_ENCRYPT_CIPHER_NAME "aes-256-gcm"
#define MS_ENCRYPT_KEY_BYTES 32
#define MS_ENCRYPT_KEY_ID_BYTES 8
#define MS_ENCRYPT_KEY_ID_HEX_LEN (2 * MS_ENCRYPT_KEY_ID_BYTES)
#define MS_ENCRYPT_NONCE_BYTES 12
#define MS_ENCRYPT_TAG_BYTES 16
/* magic, version, cipher, key id, base nonce, chunk size (u32, big-endian). */
#define MS_ENCRYPT_HEADER_BYTES                                                                    \
    (MS_ENCRYPT_MAGIC_LEN + 1 + 1 + MS_ENCRYPT_KEY_ID_BYTES + MS_ENCRYPT_NONCE_BYTES + 4)
#define MS_ENCRYPT_DEFAULT_CHUNK_SIZE (1024u * 1024u)
/* A reader allocates one chunk: a header may not make it allocate more than this. */
#define MS_ENCRYPT_MAX_CHUNK_SIZE (64u * 1024u * 1024u)
/* A key file is a credential: bounded. */
#define MS_ENCRYPT_KEY_FILE_MAX 4096

typedef struct MsEncryptKey {
    uint8_t key[MS_ENCRYPT_KEY_BYTES];
    uint8_t id[MS_ENCRYPT_KEY_ID_BYTES]; /* the first 8 bytes of SHA-256(key) */
    char id_hex[MS_ENCRYPT_KEY_ID_HEX_LEN + 1];
} MsEncryptKey;

/* What a stream's header says. */
typedef struct MsEncryptHeader {
    uint8_t version;
    uint8_t cipher;
    uint8_t key_id[MS_ENCRYPT_KEY_ID_BYTES];
    char key_id_hex[MS_ENCRYPT_KEY_ID_HEX_LEN + 1];
    uint8_t base_nonce[MS_ENCRYPT_NONCE_BYTES];
    uint32_t chunk_size;
} MsEncryptHeader;

/* A key from its bytes: exactly 32 raw bytes, or 64 hexadecimal characters (surrounding
 * white space ignored). Anything else is -EINVAL with a message that never quotes the
 * content. The result is wiped by ms_encrypt_key_free(). */
int ms_encrypt_key_from_bytes(const void *buf, size_t len, const char *what, MsEncryptKey **ret,
                              MsError *e);
int ms_encrypt_key_load_file(const char *path, MsEncryptKey **ret, MsError *e);
MsEncryptKey *ms_encrypt_key_free(MsEncryptKey *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsEncryptKey *, ms_encrypt_key_free);

bool ms_encrypt_has_magic(const void *buf, size_t len);
/* Parse (not authenticate: that happens with the first chunk) a header. */
int ms_encrypt_header_parse(const void *buf, size_t len, MsEncryptHeader *ret, MsError *e);

/* Seal everything written into chunks of chunk_size plaintext bytes (0: the default) and hand
 * them to next. The key is copied; a fresh random base nonce is drawn for every stream. On
 * failure the caller still owns next. */
MsSink *ms_sink_encrypt_new(MsSink *next, const MsEncryptKey *key, size_t chunk_size, MsError *e);

/* Open a sealed stream: reads and checks the header at once (so a wrong key is -EKEYREJECTED
 * before anything is decrypted, an unencrypted stream -EBADMSG), then returns plaintext that
 * has passed authentication, chunk by chunk. Damage, reordering, truncation or extension is
 * -EBADMSG (-EPIPE for a stream cut inside a header or tag) naming the chunk and stored
 * offset. On failure the caller still owns next. */
MsSource *ms_source_decrypt_new(MsSource *next, const MsEncryptKey *key, MsError *e);

/* Detection: look at next's first bytes. A sealed stream is opened with key (NULL key:
 * -ENOKEY naming the stream's key id; wrong key: -EKEYREJECTED); anything else passes through
 * unchanged. ret_header (optional) is filled when the stream is sealed; ret_encrypted says
 * which. On failure the caller still owns next. */
MsSource *ms_source_decrypt_auto_new(MsSource *next, const MsEncryptKey *key, bool *ret_encrypted,
                                     MsEncryptHeader *ret_header, MsError *e);

/* Encryption at rest: AES-256-GCM in independently authenticated chunks (OpenSSL EVP).
 *
 * Format of a sealed object ("MSENC1", version 1):
 *
 *   header (32 bytes)
 *     0  6  magic "MSENC1"
 *     6  1  format version (1)
 *     7  1  cipher id (1 = AES-256-GCM)
 *     8  8  key id: the first 8 bytes of SHA-256(key). Not secret; it lets a reader tell a wrong
 *           key from damage before decrypting anything, and tells rotated keys apart.
 *    16 12  base nonce: random (RAND_bytes) for every stream
 *    28  4  chunk size C: plaintext bytes per chunk, big-endian (1 MiB by default)
 *   chunks, in order, i = 0, 1, ...
 *     ciphertext (C bytes for every chunk but the last, 0..C bytes for the last) || 16-byte tag
 *     nonce_i = base nonce XOR i (i as a 64-bit big-endian number in the nonce's last 8 bytes)
 *     AAD_i   = the 32 header bytes || i (u64 big-endian) || final flag (1 for the last chunk)
 *
 * Every stream has at least one chunk, the final one (empty for empty input), so the header is
 * always authenticated. Because the index and the final flag are in the AAD, a reader detects a
 * changed bit anywhere, chunks dropped, duplicated or swapped, a stream cut at a chunk boundary
 * (the new last chunk was sealed as not final) or in a chunk, and bytes appended after the final
 * chunk (it is then read as not final). Chunks other than the last are exactly C bytes, so a
 * reader knows a chunk is the last when the stream ends right after it.
 *
 * Memory is one chunk each way: the sink seals its buffer in place, the source opens a record
 * in place and hands out its plaintext only after the tag checked. Nonces never repeat under
 * one key: a random 96-bit base per stream (collision chance ~2^-96 per pair at our volumes,
 * far below GCM's 2^-32 bound) and a counter within it (at most 2^32 chunks per stream).
 *
 * In the snapshot pipeline the filter sits after compression (ciphertext does not compress) and
 * before the SHA-256 and the store, so the manifest's digest covers the stored, encrypted bytes.
 */
#include "filter-encrypt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/hex.h"

#define AAD_BYTES (MS_ENCRYPT_HEADER_BYTES + 8 + 1)
#define OFF_VERSION MS_ENCRYPT_MAGIC_LEN
#define OFF_CIPHER (OFF_VERSION + 1)
#define OFF_KEY_ID (OFF_CIPHER + 1)
#define OFF_NONCE (OFF_KEY_ID + MS_ENCRYPT_KEY_ID_BYTES)
#define OFF_CHUNK_SIZE (OFF_NONCE + MS_ENCRYPT_NONCE_BYTES)
/* Nonces are unique per (base, counter) only while the counter fits. */
#define MAX_CHUNKS (UINT64_C(1) << 32)

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t) v;
}

/* ---- keys ---- */

MsEncryptKey *ms_encrypt_key_free(MsEncryptKey *k) {
    if (k) {
        OPENSSL_cleanse(k, sizeof(*k));
        free(k);
    }
    return NULL;
}

static int key_finish(MsEncryptKey *k, MsError *e) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(k->key, sizeof(k->key), digest, &n, EVP_sha256(), NULL) != 1 ||
        n < MS_ENCRYPT_KEY_ID_BYTES)
        return ms_error_set(e, EIO, "SHA-256 of the key failed in OpenSSL");
    memcpy(k->id, digest, sizeof(k->id));
    ms_hex_encode(k->id, sizeof(k->id), k->id_hex);
    OPENSSL_cleanse(digest, sizeof(digest));
    return 0;
}

static bool is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int ms_encrypt_key_from_bytes(const void *buf, size_t len, const char *what, MsEncryptKey **ret,
                              MsError *e) {
    const uint8_t *p = buf;
    MsEncryptKey *k = calloc(1, sizeof(*k));
    if (!k)
        return ms_error_set(e, ENOMEM, "out of memory");
    if (len == MS_ENCRYPT_KEY_BYTES) {
        /* Exactly 32 bytes is a raw key, whatever its bytes look like. */
        memcpy(k->key, p, MS_ENCRYPT_KEY_BYTES);
    } else {
        size_t start = 0, end = len;
        while (start < end && is_space(p[start]))
            start++;
        while (end > start && is_space(p[end - 1]))
            end--;
        bool ok = end - start == 2 * MS_ENCRYPT_KEY_BYTES;
        for (size_t i = 0; ok && i < MS_ENCRYPT_KEY_BYTES; i++) {
            int hi = ms_hex_digit_value((char) p[start + 2 * i]),
                lo = ms_hex_digit_value((char) p[start + 2 * i + 1]);
            if (hi < 0 || lo < 0)
                ok = false;
            else
                k->key[i] = (uint8_t) (hi << 4 | lo);
        }
        if (!ok) {
            ms_encrypt_key_free(k);
            /* Never quote the content: it may be a real key with one character wrong. */
            return ms_error_set(e, EINVAL,
                                "%s is not an encryption key: it holds %zu bytes, but a key is "
                                "exactly 32 raw bytes or 64 hexadecimal characters (make one with "
                                "'openssl rand -hex 32')",
                                what ? what : "the key", len);
        }
    }
    int r = key_finish(k, e);
    if (r < 0) {
        ms_encrypt_key_free(k);
        return r;
    }
    *ret = k;
    return 0;
}

int ms_encrypt_key_load_file(const char *path, MsEncryptKey **ret, MsError *e) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ms_error_set(e, errno == ENOENT ? ENOKEY : EINVAL, "cannot open key file %s: %s",
                            path, strerror(errno));
    uint8_t buf[MS_ENCRYPT_KEY_FILE_MAX + 1];
    size_t got = 0;
    int r = 0;
    while (got < sizeof(buf)) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = ms_error_set(e, EINVAL, "cannot read key file %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        got += (size_t) n;
    }
    close(fd);
    if (r == 0 && got > MS_ENCRYPT_KEY_FILE_MAX)
        r = ms_error_set(e, EINVAL,
                         "key file %s is too large to be a key (32 raw bytes or 64 hexadecimal "
                         "characters)",
                         path);
    if (r == 0) {
        char what[512];
        snprintf(what, sizeof(what), "key file %s", path);
        r = ms_encrypt_key_from_bytes(buf, got, what, ret, e);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

/* ---- header ---- */

bool ms_encrypt_has_magic(const void *buf, size_t len) {
    return len >= MS_ENCRYPT_MAGIC_LEN && memcmp(buf, MS_ENCRYPT_MAGIC, MS_ENCRYPT_MAGIC_LEN) == 0;
}

int ms_encrypt_header_parse(const void *buf, size_t len, MsEncryptHeader *ret, MsError *e) {
    const uint8_t *p = buf;
    if (!ms_encrypt_has_magic(p, len))
        return ms_error_set(e, EBADMSG, "not an encrypted mongosnap object (no %s header)",
                            MS_ENCRYPT_MAGIC);
    if (len < MS_ENCRYPT_HEADER_BYTES)
        return ms_error_set(e, EPIPE,
                            "the encryption header is cut short (%zu of %d bytes): the stored "
                            "object is truncated",
                            len, MS_ENCRYPT_HEADER_BYTES);
    MsEncryptHeader h = {.version = p[OFF_VERSION], .cipher = p[OFF_CIPHER]};
    if (h.version != MS_ENCRYPT_FORMAT_VERSION)
        return ms_error_set(e, EBADMSG,
                            "the object is encrypted in format version %u, but this mongosnap "
                            "reads version %d only (a newer mongosnap wrote it, or it is damaged)",
                            h.version, MS_ENCRYPT_FORMAT_VERSION);
    if (h.cipher != MS_ENCRYPT_CIPHER_AES_256_GCM)
        return ms_error_set(e, EBADMSG,
                            "the object is encrypted with cipher id %u, but this mongosnap knows "
                            "only %d (%s)",
                            h.cipher, MS_ENCRYPT_CIPHER_AES_256_GCM, MS_ENCRYPT_CIPHER_NAME);
    memcpy(h.key_id, p + OFF_KEY_ID, sizeof(h.key_id));
    ms_hex_encode(h.key_id, sizeof(h.key_id), h.key_id_hex);
    memcpy(h.base_nonce, p + OFF_NONCE, sizeof(h.base_nonce));
    h.chunk_size = (uint32_t) p[OFF_CHUNK_SIZE] << 24 | (uint32_t) p[OFF_CHUNK_SIZE + 1] << 16 |
                   (uint32_t) p[OFF_CHUNK_SIZE + 2] << 8 | (uint32_t) p[OFF_CHUNK_SIZE + 3];
    if (h.chunk_size == 0 || h.chunk_size > MS_ENCRYPT_MAX_CHUNK_SIZE)
        return ms_error_set(e, EBADMSG,
                            "the encryption header gives a chunk size of %" PRIu32
                            " bytes (1..%u allowed): the stored object is damaged",
                            h.chunk_size, MS_ENCRYPT_MAX_CHUNK_SIZE);
    *ret = h;
    return 0;
}

static void chunk_nonce(const uint8_t base[MS_ENCRYPT_NONCE_BYTES], uint64_t index,
                        uint8_t ret[MS_ENCRYPT_NONCE_BYTES]) {
    uint8_t ctr[8];
    put_u64(ctr, index);
    memcpy(ret, base, MS_ENCRYPT_NONCE_BYTES);
    for (size_t i = 0; i < 8; i++)
        ret[MS_ENCRYPT_NONCE_BYTES - 8 + i] ^= ctr[i];
}

static void chunk_aad(const uint8_t header[MS_ENCRYPT_HEADER_BYTES], uint64_t index, bool final,
                      uint8_t ret[AAD_BYTES]) {
    memcpy(ret, header, MS_ENCRYPT_HEADER_BYTES);
    put_u64(ret + MS_ENCRYPT_HEADER_BYTES, index);
    ret[MS_ENCRYPT_HEADER_BYTES + 8] = final ? 1 : 0;
}

static EVP_CIPHER_CTX *gcm_ctx_new(const MsEncryptKey *key, bool encrypt) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return NULL;
    int ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key->key, NULL)
                     : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key->key, NULL);
    if (ok != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, MS_ENCRYPT_NONCE_BYTES, NULL) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ======================================================================================
 * Sealing sink
 * ====================================================================================== */

typedef struct {
    MsSink base;
    MsSink *next;
    EVP_CIPHER_CTX *ctx;
    uint8_t header[MS_ENCRYPT_HEADER_BYTES];
    uint8_t base_nonce[MS_ENCRYPT_NONCE_BYTES];
    bool header_written;
    size_t chunk_size;
    uint8_t *buf; /* chunk_size + tag */
    size_t buf_len;
    uint64_t index;
    bool finished;
    int failed;
} EncryptSink;

static int encrypt_fail(EncryptSink *s, int r) {
    if (r < 0 && s->failed == 0)
        s->failed = r;
    return r;
}

/* Seal buf[0, buf_len) in place as chunk `index` and hand it on. */
static int seal_chunk(EncryptSink *s, bool final, MsError *e) {
    if (!s->header_written) {
        int r = ms_sink_write(s->next, s->header, sizeof(s->header), e);
        if (r < 0)
            return r;
        s->header_written = true;
    }
    if (s->index >= MAX_CHUNKS)
        return ms_error_set(e, EFBIG, "too much data for one encrypted stream (%" PRIu64 " chunks)",
                            s->index);
    uint8_t nonce[MS_ENCRYPT_NONCE_BYTES], aad[AAD_BYTES];
    chunk_nonce(s->base_nonce, s->index, nonce);
    chunk_aad(s->header, s->index, final, aad);
    int outl = 0, finl = 0;
    if (EVP_EncryptInit_ex(s->ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(s->ctx, NULL, &outl, aad, (int) sizeof(aad)) != 1 ||
        (s->buf_len > 0 &&
         EVP_EncryptUpdate(s->ctx, s->buf, &outl, s->buf, (int) s->buf_len) != 1) ||
        EVP_EncryptFinal_ex(s->ctx, s->buf + s->buf_len, &finl) != 1 ||
        EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_GCM_GET_TAG, MS_ENCRYPT_TAG_BYTES,
                            s->buf + s->buf_len) != 1)
        return ms_error_set(e, EIO, "AES-256-GCM encryption failed in OpenSSL");
    int r = ms_sink_write(s->next, s->buf, s->buf_len + MS_ENCRYPT_TAG_BYTES, e);
    if (r < 0)
        return r;
    s->index++;
    s->buf_len = 0;
    return 0;
}

static int encrypt_check_usable(EncryptSink *s, MsError *e) {
    if (s->failed < 0)
        return ms_error_set(e, -s->failed,
                            "the encryption stream is unusable after an earlier error");
    if (s->finished)
        return ms_error_set(e, EINVAL, "internal error: encryption stream used after finish()");
    return 0;
}

static int encrypt_sink_write(MsSink *sink, const void *buf, size_t len, MsError *e) {
    EncryptSink *s = (EncryptSink *) sink;
    int r = encrypt_check_usable(s, e);
    if (r < 0)
        return r;
    const uint8_t *p = buf;
    while (len > 0) {
        /* A full chunk is sealed only once more data comes: at finish() it is the final one. */
        if (s->buf_len == s->chunk_size) {
            r = seal_chunk(s, false, e);
            if (r < 0)
                return encrypt_fail(s, r);
        }
        size_t n = MS_MIN(len, s->chunk_size - s->buf_len);
        memcpy(s->buf + s->buf_len, p, n);
        s->buf_len += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int encrypt_sink_finish(MsSink *sink, MsError *e) {
    EncryptSink *s = (EncryptSink *) sink;
    int r = encrypt_check_usable(s, e);
    if (r < 0)
        return r;
    r = seal_chunk(s, true, e);
    if (r < 0)
        return encrypt_fail(s, r);
    s->finished = true;
    return encrypt_fail(s, ms_sink_finish(s->next, e));
}

static void encrypt_sink_free_state(EncryptSink *s) {
    EVP_CIPHER_CTX_free(s->ctx);
    if (s->buf) {
        OPENSSL_cleanse(s->buf, s->chunk_size + MS_ENCRYPT_TAG_BYTES);
        free(s->buf);
    }
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

static void encrypt_sink_free(MsSink *sink) {
    EncryptSink *s = (EncryptSink *) sink;
    ms_sink_free(s->next);
    encrypt_sink_free_state(s);
}

MsSink *ms_sink_encrypt_new(MsSink *next, const MsEncryptKey *key, size_t chunk_size, MsError *e) {
    if (!next || !key) {
        ms_sink_free(next);
        ms_error_set(e, EINVAL, "internal error: encryption sink without a next stage or key");
        return NULL;
    }
    if (chunk_size == 0)
        chunk_size = MS_ENCRYPT_DEFAULT_CHUNK_SIZE;
    if (chunk_size > MS_ENCRYPT_MAX_CHUNK_SIZE) {
        ms_sink_free(next);
        ms_error_set(e, EINVAL, "encryption chunk size %zu is larger than %u", chunk_size,
                     MS_ENCRYPT_MAX_CHUNK_SIZE);
        return NULL;
    }
    EncryptSink *s = calloc(1, sizeof(*s));
    if (!s) {
        ms_sink_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up encryption");
        return NULL;
    }
    s->base = (MsSink){encrypt_sink_write, encrypt_sink_finish, encrypt_sink_free};
    s->chunk_size = chunk_size;
    s->buf = malloc(chunk_size + MS_ENCRYPT_TAG_BYTES);
    s->ctx = gcm_ctx_new(key, true);
    if (!s->buf || !s->ctx) {
        ms_error_set(e, ENOMEM, "cannot set up AES-256-GCM encryption (OpenSSL)");
        encrypt_sink_free_state(s);
        ms_sink_free(next);
        return NULL;
    }
    if (RAND_bytes(s->base_nonce, sizeof(s->base_nonce)) != 1) {
        ms_error_set(e, EIO, "cannot draw a random nonce (OpenSSL RAND_bytes failed)");
        encrypt_sink_free_state(s);
        ms_sink_free(next);
        return NULL;
    }
    uint8_t *h = s->header;
    memcpy(h, MS_ENCRYPT_MAGIC, MS_ENCRYPT_MAGIC_LEN);
    h[OFF_VERSION] = MS_ENCRYPT_FORMAT_VERSION;
    h[OFF_CIPHER] = MS_ENCRYPT_CIPHER_AES_256_GCM;
    memcpy(h + OFF_KEY_ID, key->id, MS_ENCRYPT_KEY_ID_BYTES);
    memcpy(h + OFF_NONCE, s->base_nonce, MS_ENCRYPT_NONCE_BYTES);
    h[OFF_CHUNK_SIZE] = (uint8_t) (chunk_size >> 24);
    h[OFF_CHUNK_SIZE + 1] = (uint8_t) (chunk_size >> 16);
    h[OFF_CHUNK_SIZE + 2] = (uint8_t) (chunk_size >> 8);
    h[OFF_CHUNK_SIZE + 3] = (uint8_t) chunk_size;
    s->next = next;
    return &s->base;
}

/* ======================================================================================
 * Opening source
 * ====================================================================================== */

typedef struct {
    MsSource base;
    MsSource *next;
    EVP_CIPHER_CTX *ctx;
    uint8_t header[MS_ENCRYPT_HEADER_BYTES];
    MsEncryptHeader h;
    size_t record_size; /* chunk_size + tag */
    /* One record plus one byte of lookahead: a record followed by more data is not the last. */
    uint8_t *buf;
    size_t buf_len;
    bool have_carry;
    uint8_t carry;
    /* Plaintext of the current chunk, authenticated: buf[pt_pos, pt_len). */
    size_t pt_pos, pt_len;
    uint64_t index;
    bool next_eof;
    bool done;
    int failed;
} DecryptSource;

static uint64_t record_offset(const DecryptSource *d, uint64_t index) {
    return MS_ENCRYPT_HEADER_BYTES + index * (uint64_t) d->record_size;
}

/* Read the next record (and one byte beyond it), open it in place. */
static int open_next_record(DecryptSource *d, MsError *e) {
    size_t want = d->record_size + 1;
    d->buf_len = 0;
    if (d->have_carry) {
        d->buf[d->buf_len++] = d->carry;
        d->have_carry = false;
    }
    while (d->buf_len < want && !d->next_eof) {
        ssize_t n = ms_source_read(d->next, d->buf + d->buf_len, want - d->buf_len, e);
        if (n < 0)
            return (int) n;
        if (n == 0)
            d->next_eof = true;
        d->buf_len += (size_t) n;
    }
    uint64_t off = record_offset(d, d->index);
    bool final = d->buf_len <= d->record_size;
    size_t rec_len = final ? d->buf_len : d->record_size;
    if (!final) {
        d->carry = d->buf[d->record_size];
        d->have_carry = true;
    }
    if (rec_len < MS_ENCRYPT_TAG_BYTES) {
        if (rec_len == 0 && d->index == 0)
            return ms_error_set(
                e, EPIPE,
                "the encrypted object ends after its header (at stored byte %" PRIu64
                ") without any chunk: it is truncated",
                off);
        return ms_error_set(e, EPIPE,
                            "the encrypted object ends %zu bytes into chunk %" PRIu64
                            " (stored byte %" PRIu64 "), before its authentication tag: it is "
                            "truncated (or a chunk is missing)",
                            rec_len, d->index, off);
    }
    size_t ct_len = rec_len - MS_ENCRYPT_TAG_BYTES;
    uint8_t nonce[MS_ENCRYPT_NONCE_BYTES], aad[AAD_BYTES];
    chunk_nonce(d->h.base_nonce, d->index, nonce);
    chunk_aad(d->header, d->index, final, aad);
    int outl = 0, finl = 0;
    if (EVP_DecryptInit_ex(d->ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(d->ctx, NULL, &outl, aad, (int) sizeof(aad)) != 1 ||
        (ct_len > 0 && EVP_DecryptUpdate(d->ctx, d->buf, &outl, d->buf, (int) ct_len) != 1) ||
        EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_GCM_SET_TAG, MS_ENCRYPT_TAG_BYTES, d->buf + ct_len) !=
            1)
        return ms_error_set(e, EIO, "AES-256-GCM decryption failed in OpenSSL");
    if (EVP_DecryptFinal_ex(d->ctx, d->buf + ct_len, &finl) != 1) {
        /* Nothing of this chunk is handed out. */
        OPENSSL_cleanse(d->buf, rec_len);
        return ms_error_set(e, EBADMSG,
                            "encrypted chunk %" PRIu64 " (stored bytes %" PRIu64 "..%" PRIu64
                            ") fails authentication (AES-256-GCM tag mismatch): the stored "
                            "object was changed, truncated, extended or had chunks reordered "
                            "after it was written",
                            d->index, off, off + rec_len - 1);
    }
    d->pt_pos = 0;
    d->pt_len = ct_len;
    d->index++;
    if (final)
        d->done = true;
    return 0;
}

static ssize_t decrypt_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    DecryptSource *d = (DecryptSource *) s;
    if (d->failed < 0)
        return ms_error_set(e, -d->failed,
                            "the decryption stream is unusable after an earlier error");
    if (len == 0)
        return 0;
    while (d->pt_pos == d->pt_len) {
        if (d->done)
            return 0;
        int r = open_next_record(d, e);
        if (r < 0) {
            d->failed = r;
            return r;
        }
    }
    size_t n = MS_MIN(len, d->pt_len - d->pt_pos);
    memcpy(buf, d->buf + d->pt_pos, n);
    d->pt_pos += n;
    return (ssize_t) n;
}

static void decrypt_source_free_state(DecryptSource *d) {
    EVP_CIPHER_CTX_free(d->ctx);
    if (d->buf) {
        OPENSSL_cleanse(d->buf, d->record_size + 1);
        free(d->buf);
    }
    OPENSSL_cleanse(d, sizeof(*d));
    free(d);
}

static void decrypt_source_free(MsSource *s) {
    DecryptSource *d = (DecryptSource *) s;
    ms_source_free(d->next);
    decrypt_source_free_state(d);
}

/* Read up to len bytes (fewer only at the end of the data). */
static int check_key(const MsEncryptHeader *h, const MsEncryptKey *key, MsError *e) {
    if (!key)
        return ms_error_set(e, ENOKEY, "the object is encrypted (key id %s); give its key",
                            h->key_id_hex);
    if (memcmp(h->key_id, key->id, MS_ENCRYPT_KEY_ID_BYTES) != 0)
        return ms_error_set(e, EKEYREJECTED,
                            "the key given (id %s) is not the key this snapshot was encrypted "
                            "with (id %s)",
                            key->id_hex, h->key_id_hex);
    return 0;
}

/* A decrypting source over next whose header (already read) is header. */
static MsSource *decrypt_new(MsSource *next, const MsEncryptKey *key,
                             const uint8_t header[MS_ENCRYPT_HEADER_BYTES], MsError *e) {
    MsEncryptHeader h;
    if (ms_encrypt_header_parse(header, MS_ENCRYPT_HEADER_BYTES, &h, e) < 0) {
        ms_source_free(next);
        return NULL;
    }
    /* The key id first: a wrong key is named as such, before any decryption. */
    if (check_key(&h, key, e) < 0) {
        ms_source_free(next);
        return NULL;
    }
    DecryptSource *d = calloc(1, sizeof(*d));
    if (!d) {
        ms_source_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up decryption");
        return NULL;
    }
    d->base = (MsSource){decrypt_source_read, decrypt_source_free};
    memcpy(d->header, header, MS_ENCRYPT_HEADER_BYTES);
    d->h = h;
    d->record_size = (size_t) h.chunk_size + MS_ENCRYPT_TAG_BYTES;
    d->buf = malloc(d->record_size + 1);
    d->ctx = gcm_ctx_new(key, false);
    if (!d->buf || !d->ctx) {
        ms_error_set(e, ENOMEM, "cannot set up AES-256-GCM decryption (OpenSSL)");
        decrypt_source_free_state(d);
        ms_source_free(next);
        return NULL;
    }
    d->next = next;
    return &d->base;
}

MsSource *ms_source_decrypt_new(MsSource *next, const MsEncryptKey *key, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: decryption source without a next stage");
        return NULL;
    }
    uint8_t header[MS_ENCRYPT_HEADER_BYTES];
    ssize_t n = ms_source_read_up_to(next, header, sizeof(header), e);
    if (n < 0) {
        ms_source_free(next);
        return NULL;
    }
    if (n < MS_ENCRYPT_HEADER_BYTES) {
        MsEncryptHeader ignored;
        ms_encrypt_header_parse(header, (size_t) n, &ignored, e);
        ms_source_free(next);
        return NULL;
    }
    return decrypt_new(next, key, header, e);
}

MsSource *ms_source_decrypt_auto_new(MsSource *next, const MsEncryptKey *key, bool *ret_encrypted,
                                     MsEncryptHeader *ret_header, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: decryption source without a next stage");
        return NULL;
    }
    uint8_t prefix[MS_ENCRYPT_HEADER_BYTES];
    ssize_t n = ms_source_read_up_to(next, prefix, sizeof(prefix), e);
    if (n < 0) {
        ms_source_free(next);
        return NULL;
    }
    if (ms_encrypt_has_magic(prefix, (size_t) n)) {
        MsEncryptHeader h;
        if (ms_encrypt_header_parse(prefix, (size_t) n, &h, e) < 0) {
            ms_source_free(next);
            return NULL;
        }
        if (ret_header)
            *ret_header = h;
        if (ret_encrypted)
            *ret_encrypted = true;
        return decrypt_new(next, key, prefix, e);
    }
    if (ret_encrypted)
        *ret_encrypted = false;
    return ms_source_replay_new(next, prefix, (size_t) n, e);
}

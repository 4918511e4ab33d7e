/* SHA-256 filters: a sink and a source that hash the bytes passing through them (OpenSSL EVP). */
#include "stream.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/hex.h"

#define SHA256_DIGEST_BYTES (MS_SHA256_HEX_LEN / 2)

static void digest_to_hex(const unsigned char *digest, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    ms_hex_encode(digest, SHA256_DIGEST_BYTES, ret_hex);
}

static EVP_MD_CTX *sha256_ctx_new(void) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return NULL;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Finalise ctx into ret_hex. Returns false if OpenSSL failed; ret_hex is then "". */
static bool sha256_ctx_final(EVP_MD_CTX *ctx, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_DigestFinal_ex(ctx, digest, &digest_len) != 1 || digest_len != SHA256_DIGEST_BYTES) {
        ret_hex[0] = '\0';
        return false;
    }
    digest_to_hex(digest, ret_hex);
    return true;
}

void ms_sha256_hex(const void *buf, size_t len, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(buf, len, digest, &digest_len, EVP_sha256(), NULL) != 1 ||
        digest_len != SHA256_DIGEST_BYTES) {
        ret_hex[0] = '\0';
        return;
    }
    digest_to_hex(digest, ret_hex);
}

/* ---- sink ---- */
typedef struct {
    MsSink base;
    MsSink *next;
    EVP_MD_CTX *ctx;
    bool final;
    char *ret_hex; /* the caller's: the digest once finished */
} Sha256Sink;

static int sha256_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    Sha256Sink *h = (Sha256Sink *) s;
    if (h->final)
        return ms_error_set(e, EINVAL, "internal error: write to a SHA-256 sink after finish()");
    int r = ms_sink_write(h->next, buf, len, e);
    if (r < 0)
        return r;
    /* Hash only what next accepted, so the digest always describes the bytes handed on. */
    if (EVP_DigestUpdate(h->ctx, buf, len) != 1)
        return ms_error_set(e, EIO, "SHA-256 computation failed in OpenSSL");
    return 0;
}

static int sha256_sink_finish(MsSink *s, MsError *e) {
    Sha256Sink *h = (Sha256Sink *) s;
    if (!h->final) {
        if (!sha256_ctx_final(h->ctx, h->ret_hex))
            return ms_error_set(e, EIO, "SHA-256 finalisation failed in OpenSSL");
        h->final = true;
    }
    return ms_sink_finish(h->next, e);
}

static void sha256_sink_free(MsSink *s) {
    Sha256Sink *h = (Sha256Sink *) s;
    ms_sink_free(h->next);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

MsSink *ms_sink_sha256_new(MsSink *next, char ret_hex[MS_SHA256_HEX_LEN + 1], MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: SHA-256 sink without a next stage");
        return NULL;
    }
    Sha256Sink *h = calloc(1, sizeof(*h));
    if (h)
        h->ctx = sha256_ctx_new();
    if (!h || !h->ctx) {
        free(h);
        ms_sink_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up SHA-256 (OpenSSL)");
        return NULL;
    }
    h->base = (MsSink){sha256_sink_write, sha256_sink_finish, sha256_sink_free};
    h->next = next;
    h->ret_hex = ret_hex;
    ret_hex[0] = '\0';
    return &h->base;
}

/* ---- source ---- */
typedef struct {
    MsSource base;
    MsSource *next;
    EVP_MD_CTX *ctx;
    bool final;
    char *ret_hex; /* the caller's: the digest at the end of the stream */
} Sha256Source;

static ssize_t sha256_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    Sha256Source *h = (Sha256Source *) s;
    if (h->final)
        return 0;
    ssize_t n = ms_source_read(h->next, buf, len, e);
    if (n < 0)
        return n;
    if (n > 0) {
        if (EVP_DigestUpdate(h->ctx, buf, (size_t) n) != 1)
            return ms_error_set(e, EIO, "SHA-256 computation failed in OpenSSL");
        return n;
    }
    /* A zero-length request is not the end of the data; only a real EOF finalises. */
    if (len == 0)
        return 0;
    if (!sha256_ctx_final(h->ctx, h->ret_hex))
        return ms_error_set(e, EIO, "SHA-256 finalisation failed in OpenSSL");
    h->final = true;
    return 0;
}

static void sha256_source_free(MsSource *s) {
    Sha256Source *h = (Sha256Source *) s;
    ms_source_free(h->next);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

MsSource *ms_source_sha256_new(MsSource *next, char ret_hex[MS_SHA256_HEX_LEN + 1], MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: SHA-256 source without a next stage");
        return NULL;
    }
    Sha256Source *h = calloc(1, sizeof(*h));
    if (h)
        h->ctx = sha256_ctx_new();
    if (!h || !h->ctx) {
        free(h);
        ms_source_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up SHA-256 (OpenSSL)");
        return NULL;
    }
    h->base = (MsSource){sha256_source_read, sha256_source_free};
    h->next = next;
    h->ret_hex = ret_hex;
    ret_hex[0] = '\0';
    return &h->base;
}

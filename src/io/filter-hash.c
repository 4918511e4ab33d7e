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

/* The digest of everything hashed so far without ending the running hash: finalising a copy
 * lets callers peek (progress reports, debugging) before finish()/EOF. */
static void sha256_ctx_peek(const EVP_MD_CTX *ctx, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    if (!copy || EVP_MD_CTX_copy_ex(copy, ctx) != 1 || !sha256_ctx_final(copy, ret_hex))
        ret_hex[0] = '\0';
    EVP_MD_CTX_free(copy);
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
    char hex[MS_SHA256_HEX_LEN + 1];
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
        if (!sha256_ctx_final(h->ctx, h->hex))
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

MsSink *ms_sink_sha256_new(MsSink *next) {
    if (!next)
        return NULL;
    Sha256Sink *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ctx = sha256_ctx_new();
    if (!h->ctx) {
        free(h);
        return NULL;
    }
    h->base = (MsSink){sha256_sink_write, sha256_sink_finish, sha256_sink_free};
    h->next = next;
    return &h->base;
}

void ms_sink_sha256_hex(MsSink *s, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    Sha256Sink *h = (Sha256Sink *) s;
    if (h->final)
        memcpy(ret_hex, h->hex, sizeof(h->hex));
    else
        sha256_ctx_peek(h->ctx, ret_hex);
}

/* ---- source ---- */
typedef struct {
    MsSource base;
    MsSource *next;
    EVP_MD_CTX *ctx;
    bool final;
    char hex[MS_SHA256_HEX_LEN + 1];
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
    if (!sha256_ctx_final(h->ctx, h->hex))
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

MsSource *ms_source_sha256_new(MsSource *next) {
    if (!next)
        return NULL;
    Sha256Source *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ctx = sha256_ctx_new();
    if (!h->ctx) {
        free(h);
        return NULL;
    }
    h->base = (MsSource){sha256_source_read, sha256_source_free};
    h->next = next;
    return &h->base;
}

void ms_source_sha256_hex(MsSource *s, char ret_hex[MS_SHA256_HEX_LEN + 1]) {
    Sha256Source *h = (Sha256Source *) s;
    if (h->final)
        memcpy(ret_hex, h->hex, sizeof(h->hex));
    else
        sha256_ctx_peek(h->ctx, ret_hex);
}

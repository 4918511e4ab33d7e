/* AWS Signature Version 4 for S3, written against the published algorithm and test vectors.
 *
 * Why our own and not curl's CURLOPT_AWS_SIGV4: Debian 12 ships curl 7.88, whose signer takes
 * the query string as given (no sorting or encoding, curl issue #9717, fixed in 8.x), so
 * ListObjectsV2 with a continuation token or "?uploads" would be refused; and presigned URLs
 * are not something curl makes at all. One signer for every request keeps a single code path
 * that the AWS documentation's vectors check (tests/unit/test-s3-sigv4.c). */
#include "s3-sigv4.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/hex.h"
#include "common/macro.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_SERVICE "s3"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_KEY_PREFIX "AWS4"
/* "20130524" */
#define SIGV4_DATE_LEN 8
#define SHA256_LEN 32

static bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

char *ms_s3_uri_encode(const char *s, bool keep_slash) {
    static const char hex_upper[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    char *out = malloc(3 * len + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        if (is_unreserved(*p) || (keep_slash && *p == '/'))
            *o++ = (char) *p;
        else {
            *o++ = '%';
            *o++ = hex_upper[*p >> 4];
            *o++ = hex_upper[*p & 0xf];
        }
    }
    *o = '\0';
    return out;
}

void ms_s3_amz_date(int64_t epoch_sec, char ret[MS_S3_AMZ_DATE_LEN + 1]) {
    time_t t = (time_t) epoch_sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ret, MS_S3_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

void ms_s3_sha256_hex(const void *buf, size_t len, char ret[MS_S3_SHA256_HEX_LEN + 1]) {
    unsigned char md[SHA256_LEN];
    unsigned int md_len = 0;
    EVP_Digest(buf, len, md, &md_len, EVP_sha256(), NULL);
    ms_hex_encode(md, SHA256_LEN, ret);
}

int ms_s3_multipart_etag(const uint8_t (*part_md5s)[MS_S3_MD5_LEN], size_t n_parts,
                         char ret[MS_S3_ETAG_MAX]) {
    if (n_parts == 0 || !part_md5s)
        return -EINVAL;
    unsigned char md[MS_S3_MD5_LEN];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    bool ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1;
    for (size_t i = 0; ok && i < n_parts; i++)
        ok = EVP_DigestUpdate(ctx, part_md5s[i], MS_S3_MD5_LEN) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == MS_S3_MD5_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -EIO;
    ms_hex_encode(md, MS_S3_MD5_LEN, ret);
    snprintf(ret + 2 * MS_S3_MD5_LEN, MS_S3_ETAG_MAX - 2 * MS_S3_MD5_LEN, "-%zu", n_parts);
    return 0;
}

/* The ETag without W/ and quotes: [*ret_start, *ret_start + *ret_len). */
static void etag_core(const char *s, const char **ret_start, size_t *ret_len) {
    if (strncmp(s, "W/", 2) == 0)
        s += 2;
    size_t len = strlen(s);
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    *ret_start = s;
    *ret_len = len;
}

bool ms_s3_etag_equal(const char *a, const char *b) {
    if (!a || !b)
        return false;
    const char *ca, *cb;
    size_t la, lb;
    etag_core(a, &ca, &la);
    etag_core(b, &cb, &lb);
    return la > 0 && la == lb && strncasecmp(ca, cb, la) == 0;
}

typedef struct EncodedPair {
    char *name;
    char *value;
} EncodedPair;

static int encoded_pair_cmp(const void *a, const void *b) {
    const EncodedPair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->value, y->value);
}

static void encoded_pairs_free(EncodedPair *pairs, size_t n) {
    if (!pairs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
}

char *ms_s3_canonical_query(const MsS3Param *params, size_t n) {
    if (n == 0)
        return strdup("");
    EncodedPair *pairs = calloc(n, sizeof(*pairs));
    if (!pairs)
        return NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        pairs[i].name = ms_s3_uri_encode(params[i].name, false);
        pairs[i].value = ms_s3_uri_encode(params[i].value ? params[i].value : "", false);
        if (!pairs[i].name || !pairs[i].value) {
            encoded_pairs_free(pairs, n);
            return NULL;
        }
        total += strlen(pairs[i].name) + strlen(pairs[i].value) + 2;
    }
    /* Sorting the encoded forms is what the specification asks for ("sort by the encoded
     * parameter name"), and it differs from sorting the raw names for some characters. */
    qsort(pairs, n, sizeof(*pairs), encoded_pair_cmp);
    char *out = malloc(total + 1), *o = out;
    if (out) {
        for (size_t i = 0; i < n; i++)
            o += sprintf(o, "%s%s=%s", i ? "&" : "", pairs[i].name, pairs[i].value);
        *o = '\0';
    }
    encoded_pairs_free(pairs, n);
    return out;
}

typedef struct CanonicalHeader {
    char *name;  /* lower case */
    char *value; /* trimmed, inner runs of blanks collapsed */
} CanonicalHeader;

static int canonical_header_cmp(const void *a, const void *b) {
    return strcmp(((const CanonicalHeader *) a)->name, ((const CanonicalHeader *) b)->name);
}

static void canonical_headers_free(CanonicalHeader *h, size_t n) {
    if (!h)
        return;
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static char *header_name_lower(const char *s) {
    char *out = strdup(s);
    if (out)
        for (char *p = out; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char) (*p - 'A' + 'a');
    return out;
}

static char *header_value_trim(const char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out)
        return NULL;
    bool blank = false;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            blank = true;
            continue;
        }
        if (blank && o > out)
            *o++ = ' ';
        blank = false;
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static int hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len,
                       unsigned char out[SHA256_LEN]) {
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), key, (int) key_len, data, data_len, out, &out_len) ||
        out_len != SHA256_LEN)
        return -EINVAL;
    return 0;
}

/* signature = HMAC(kSigning, string_to_sign), kSigning derived from the secret, the date,
 * the region and the service as the specification chains them. */
static int sign_string(const MsS3Signer *s, const char *date8, const char *string_to_sign,
                       char ret_hex[MS_S3_SHA256_HEX_LEN + 1]) {
    size_t secret_len = strlen(s->secret_access_key);
    size_t key_len = strlen(SIGV4_KEY_PREFIX) + secret_len;
    char *key = malloc(key_len + 1);
    if (!key)
        return -ENOMEM;
    memcpy(key, SIGV4_KEY_PREFIX, strlen(SIGV4_KEY_PREFIX));
    memcpy(key + strlen(SIGV4_KEY_PREFIX), s->secret_access_key, secret_len + 1);

    unsigned char k[SHA256_LEN], sig[SHA256_LEN];
    int r = hmac_sha256(key, key_len, date8, SIGV4_DATE_LEN, k);
    explicit_bzero(key, key_len);
    free(key);
    if (r >= 0)
        r = hmac_sha256(k, SHA256_LEN, s->region, strlen(s->region), k);
    if (r >= 0)
        r = hmac_sha256(k, SHA256_LEN, SIGV4_SERVICE, strlen(SIGV4_SERVICE), k);
    if (r >= 0)
        r = hmac_sha256(k, SHA256_LEN, SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), k);
    if (r >= 0)
        r = hmac_sha256(k, SHA256_LEN, string_to_sign, strlen(string_to_sign), sig);
    explicit_bzero(k, sizeof(k));
    if (r < 0)
        return r;
    ms_hex_encode(sig, SHA256_LEN, ret_hex);
    return 0;
}

/* The canonical request's hash and the signed header list; shared by header and query
 * authentication. */
static int canonical_request_hash(const char *method, const char *canonical_uri,
                                  const char *canonical_query, const MsS3Param *headers,
                                  size_t n_headers, const char *payload_hash,
                                  char ret_hash[MS_S3_SHA256_HEX_LEN + 1],
                                  char **ret_signed_headers) {
    CanonicalHeader *h = calloc(n_headers ? n_headers : 1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    for (size_t i = 0; i < n_headers; i++) {
        h[i].name = header_name_lower(headers[i].name);
        h[i].value = header_value_trim(headers[i].value ? headers[i].value : "");
        if (!h[i].name || !h[i].value) {
            canonical_headers_free(h, n_headers);
            return -ENOMEM;
        }
    }
    qsort(h, n_headers, sizeof(*h), canonical_header_cmp);

    char *creq = NULL, *signed_headers = NULL;
    size_t creq_len = 0, sh_len = 0;
    FILE *f = open_memstream(&creq, &creq_len);
    FILE *sh = f ? open_memstream(&signed_headers, &sh_len) : NULL;
    if (!f || !sh) {
        if (f)
            fclose(f);
        free(creq);
        canonical_headers_free(h, n_headers);
        return -ENOMEM;
    }
    fprintf(f, "%s\n%s\n%s\n", method, canonical_uri, canonical_query);
    for (size_t i = 0; i < n_headers; i++) {
        fprintf(f, "%s:%s\n", h[i].name, h[i].value);
        fprintf(sh, "%s%s", i ? ";" : "", h[i].name);
    }
    canonical_headers_free(h, n_headers);
    bool ok = fclose(sh) == 0;
    if (ok)
        fprintf(f, "\n%s\n%s", signed_headers, payload_hash);
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        free(creq);
        free(signed_headers);
        return -ENOMEM;
    }
    ms_s3_sha256_hex(creq, creq_len, ret_hash);
    free(creq);
    *ret_signed_headers = signed_headers;
    return 0;
}

static int string_to_sign(const MsS3Signer *s, const char *amz_date, const char *creq_hash,
                          char **ret) {
    if (asprintf(ret, SIGV4_ALGORITHM "\n%s\n%.*s/%s/" SIGV4_SERVICE "/" SIGV4_TERMINATOR "\n%s",
                 amz_date, SIGV4_DATE_LEN, amz_date, s->region, creq_hash) < 0) {
        *ret = NULL;
        return -ENOMEM;
    }
    return 0;
}

int ms_s3_sign(const MsS3Signer *s, const char *method, const char *canonical_uri,
               const MsS3Param *query, size_t n_query, const MsS3Param *headers, size_t n_headers,
               const char *payload_hash, const char *amz_date, char **ret_authorization,
               char **ret_signature) {
    if (!amz_date || strlen(amz_date) != MS_S3_AMZ_DATE_LEN)
        return -EINVAL;
    _cleanup_free_ char *cquery = ms_s3_canonical_query(query, n_query);
    if (!cquery)
        return -ENOMEM;
    char creq_hash[MS_S3_SHA256_HEX_LEN + 1];
    _cleanup_free_ char *signed_headers = NULL, *sts = NULL;
    int r = canonical_request_hash(method, canonical_uri, cquery, headers, n_headers, payload_hash,
                                   creq_hash, &signed_headers);
    if (r < 0)
        return r;
    r = string_to_sign(s, amz_date, creq_hash, &sts);
    if (r < 0)
        return r;
    char sig[MS_S3_SHA256_HEX_LEN + 1];
    r = sign_string(s, amz_date, sts, sig);
    if (r < 0)
        return r;
    char *auth = NULL;
    if (asprintf(&auth,
                 SIGV4_ALGORITHM " Credential=%s/%.*s/%s/" SIGV4_SERVICE "/" SIGV4_TERMINATOR
                                 ",SignedHeaders=%s,Signature=%s",
                 s->access_key_id, SIGV4_DATE_LEN, amz_date, s->region, signed_headers, sig) < 0)
        return -ENOMEM;
    if (ret_signature) {
        *ret_signature = strdup(sig);
        if (!*ret_signature) {
            free(auth);
            return -ENOMEM;
        }
    }
    *ret_authorization = auth;
    return 0;
}

int ms_s3_presign(const MsS3Signer *s, const char *method, const char *base_url, const char *host,
                  const char *canonical_uri, int64_t now_sec, uint64_t expires_sec,
                  char **ret_url) {
    if (expires_sec == 0 || expires_sec > MS_S3_PRESIGN_MAX_SECONDS)
        return -EINVAL;
    char amz_date[MS_S3_AMZ_DATE_LEN + 1];
    ms_s3_amz_date(now_sec, amz_date);
    _cleanup_free_ char *credential = NULL;
    if (asprintf(&credential, "%s/%.*s/%s/" SIGV4_SERVICE "/" SIGV4_TERMINATOR, s->access_key_id,
                 SIGV4_DATE_LEN, amz_date, s->region) < 0) {
        credential = NULL;
        return -ENOMEM;
    }
    char expires[24];
    snprintf(expires, sizeof(expires), "%" PRIu64, expires_sec);
    MsS3Param q[] = {
        {"X-Amz-Algorithm", SIGV4_ALGORITHM},
        {"X-Amz-Credential", credential},
        {"X-Amz-Date", amz_date},
        {"X-Amz-Expires", expires},
        {"X-Amz-SignedHeaders", "host"},
        {"X-Amz-Security-Token", s->session_token},
    };
    /* The token, when there is one, is part of what is signed (it goes in the query). */
    size_t n_q = s->session_token ? ELEMENTSOF(q) : ELEMENTSOF(q) - 1;
    _cleanup_free_ char *cquery = ms_s3_canonical_query(q, n_q);
    if (!cquery)
        return -ENOMEM;
    MsS3Param h[] = {{"host", host}};
    char creq_hash[MS_S3_SHA256_HEX_LEN + 1];
    _cleanup_free_ char *signed_headers = NULL, *sts = NULL;
    int r = canonical_request_hash(method, canonical_uri, cquery, h, ELEMENTSOF(h),
                                   MS_S3_UNSIGNED_PAYLOAD, creq_hash, &signed_headers);
    if (r < 0)
        return r;
    r = string_to_sign(s, amz_date, creq_hash, &sts);
    if (r < 0)
        return r;
    char sig[MS_S3_SHA256_HEX_LEN + 1];
    r = sign_string(s, amz_date, sts, sig);
    if (r < 0)
        return r;
    /* The canonical query is already a valid, encoded query string. */
    if (asprintf(ret_url, "%s%s?%s&X-Amz-Signature=%s", base_url, canonical_uri, cquery, sig) < 0) {
        *ret_url = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* AWS Signature Version 4 for S3: Authorization headers and presigned URLs (no I/O). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_S3_SHA256_HEX_LEN 64
/* "20130524T000000Z" */
#define MS_S3_AMZ_DATE_LEN 16
#define MS_S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MS_S3_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* SigV4 query authentication refuses X-Amz-Expires above seven days. */
#define MS_S3_PRESIGN_MAX_SECONDS (7u * 24 * 3600)

/* A query parameter or a header: name and value as they are, not yet encoded. */
typedef struct MsS3Param {
    const char *name;
    const char *value;
} MsS3Param;

/* What signs a request. The secret is only read, never copied into anything returned. */
typedef struct MsS3Signer {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL without temporary credentials */
    const char *region;
} MsS3Signer;

/* RFC 3986 unreserved characters pass, every other byte becomes %XX (upper-case hex), as
 * SigV4 requires; '/' passes when keep_slash (object paths). NULL when out of memory. */
char *ms_s3_uri_encode(const char *s, bool keep_slash);

/* The x-amz-date form of a time in seconds since the epoch (UTC). */
void ms_s3_amz_date(int64_t epoch_sec, char ret[MS_S3_AMZ_DATE_LEN + 1]);

/* "a=1&b=%2F": names and values encoded, sorted by name then value; a parameter without a
 * value ("?uploads") is "uploads=". NULL when out of memory. */
char *ms_s3_canonical_query(const MsS3Param *params, size_t n);

/* Lower-case hex SHA-256 of buf. */
void ms_s3_sha256_hex(const void *buf, size_t len, char ret[MS_S3_SHA256_HEX_LEN + 1]);

/* S3's ETags. A single PUT's ETag is the hex MD5 of the object (without SSE-KMS/SSE-C); a
 * multipart object's is the hex MD5 of its parts' binary MD5s concatenated, then "-" and the
 * number of parts: "9b2cf535f27731c974343645a3985328-3". */
#define MS_S3_MD5_LEN 16
#define MS_S3_ETAG_MAX (2 * MS_S3_MD5_LEN + 1 + 20 + 1)

/* The multipart ETag (no quotes) of an object made of n_parts parts (n_parts >= 1) whose MD5s
 * are part_md5s[0..n_parts-1]. Returns 0, or -EINVAL for no parts. */
int ms_s3_multipart_etag(const uint8_t (*part_md5s)[MS_S3_MD5_LEN], size_t n_parts,
                         char ret[MS_S3_ETAG_MAX]);

/* Whether two ETags name the same content: surrounding quotes and a weak "W/" prefix are
 * ignored, hex digits compared without regard to case. NULLs never match. */
bool ms_s3_etag_equal(const char *a, const char *b);

/* The Authorization header value for a request. canonical_uri is the encoded path exactly as
 * sent; headers are every header to sign (host, x-amz-date and x-amz-content-sha256 among
 * them; names in any case, values trimmed here); amz_date equals the x-amz-date header.
 * When ret_signature is non-NULL it receives a copy of the bare signature (tests). Returns
 * 0 or -ENOMEM / -EINVAL. */
int ms_s3_sign(const MsS3Signer *s, const char *method, const char *canonical_uri,
               const MsS3Param *query, size_t n_query, const MsS3Param *headers, size_t n_headers,
               const char *payload_hash, const char *amz_date, char **ret_authorization,
               char **ret_signature);

/* A presigned URL: base_url is "scheme://host[:port]" as the client will reach it, host the
 * Host header it will send (the only signed header), canonical_uri the encoded path.
 * expires_sec must be 1..MS_S3_PRESIGN_MAX_SECONDS. */
int ms_s3_presign(const MsS3Signer *s, const char *method, const char *base_url, const char *host,
                  const char *canonical_uri, int64_t now_sec, uint64_t expires_sec, char **ret_url);

/* S3 store locations parsed into settings, request targets, and S3's size limits. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

#define MS_S3_SCHEME "s3://"

/* S3's multipart limits: every part but the last at least 5 MiB, none over 5 GiB, at most
 * 10,000 parts, at most 5 TiB per object. */
#define MS_S3_MIN_PART_SIZE (UINT64_C(5) << 20)
#define MS_S3_MAX_PART_SIZE (UINT64_C(5) << 30)
#define MS_S3_MAX_PARTS 10000u
#define MS_S3_MAX_OBJECT_SIZE (UINT64_C(5) << 40)

#define MS_S3_DEFAULT_REGION "us-east-1"
#define MS_S3_DEFAULT_PART_SIZE (UINT64_C(16) << 20)
#define MS_S3_DEFAULT_PARALLEL 4u
#define MS_S3_MAX_PARALLEL 64u
#define MS_S3_DEFAULT_PRESIGN_SECONDS (7u * 24 * 3600)
#define MS_S3_DEFAULT_MAX_ATTEMPTS 5u
#define MS_S3_MAX_ATTEMPTS_LIMIT 20u
#define MS_S3_DEFAULT_CONNECT_TIMEOUT_SEC 10u
#define MS_S3_MAX_CONNECT_TIMEOUT_SEC 300u
/* A transfer that moves less than a byte per second for this long is stalled: it is ended
 * and counts as a failed attempt (retried like a broken connection). */
#define MS_S3_DEFAULT_STALL_TIMEOUT_SEC 60u
#define MS_S3_MAX_STALL_TIMEOUT_SEC 3600u

typedef enum MsS3Addressing {
    MS_S3_ADDRESSING_PATH,    /* https://endpoint/bucket/key */
    MS_S3_ADDRESSING_VIRTUAL, /* https://bucket.endpoint/key */
} MsS3Addressing;

typedef enum MsS3Sse {
    MS_S3_SSE_NONE,
    MS_S3_SSE_AES256,
    MS_S3_SSE_KMS,
} MsS3Sse;

typedef struct MsS3Location {
    char *bucket;
    char *prefix; /* "" or "a/b": no leading or trailing '/' */
    bool https;
    char *endpoint_host; /* "127.0.0.1:9000", "s3.eu-west-1.amazonaws.com" */
    bool custom_endpoint;
    char *region;
    MsS3Addressing addressing;
    char *ca_file; /* NULL: the system's CA store */
    MsS3Sse sse;
    char *kms_key_id; /* only with MS_S3_SSE_KMS; NULL: the bucket's default key */
    uint64_t part_size;
    unsigned parallel;
    uint64_t presign_expires_sec;
    unsigned max_attempts;
    unsigned connect_timeout_sec;
    unsigned stall_timeout_sec;
    char *description; /* "s3://bucket/prefix (endpoint https://..., region ...)" */
} MsS3Location;

/* Parse a location. Messages never repeat credentials: a location holding some is refused
 * without being echoed. */
int ms_s3_location_parse(const char *location, MsS3Location *ret, MsError *e);
void ms_s3_location_done(MsS3Location *l);

/* "prefix/key" (or key when there is no prefix); NULL when out of memory. */
char *ms_s3_location_full_key(const MsS3Location *l, const char *key);

/* Where a request for an object (full_key) or for the bucket itself (full_key NULL) goes. */
typedef struct MsS3Target {
    char *base_url;      /* "https://host[:port]" */
    char *host;          /* the Host header */
    char *canonical_uri; /* the encoded path, as sent and as signed */
} MsS3Target;

int ms_s3_location_target(const MsS3Location *l, const char *full_key, MsS3Target *ret);
void ms_s3_target_done(MsS3Target *t);

/* The size of part number part_number (1-based) of a streaming upload that starts with
 * parts of base bytes. The final size is unknown while streaming, so sizes double every
 * MS_S3_PARTS_PER_SIZE_STEP parts (capped at MS_S3_MAX_PART_SIZE): even from the 5 MiB
 * minimum, 10,000 parts then hold more than S3's 5 TiB object limit. */
#define MS_S3_PARTS_PER_SIZE_STEP 900u
uint64_t ms_s3_part_size(uint64_t base, unsigned part_number);

/* "16MiB", "5M", "1GiB", "65536": bytes (binary units). */
int ms_s3_parse_size(const char *s, uint64_t *ret);

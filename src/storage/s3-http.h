/* The S3 driver's HTTP helper: signed libcurl requests, retries, error classification. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "common/error.h"
#include "s3-credentials.h"
#include "s3-location.h"
#include "s3-sigv4.h"

/* Error bodies and listings are small; a response larger than this is not S3 talking. */
#define MS_S3_RESPONSE_MAX (16u << 20)

typedef struct MsS3Request {
    const char *method;   /* GET, HEAD, PUT, POST, DELETE */
    const char *full_key; /* the object's key under the bucket; NULL for the bucket itself */
    const MsS3Param *query;
    size_t n_query;
    const MsS3Param *headers; /* extra headers, all signed (lower-case names) */
    size_t n_headers;
    const void *body; /* PUT and POST bodies, in memory so that a retry can send them again */
    size_t body_len;
    const char *payload_hash; /* hex SHA-256 of body when the caller has it; else computed */
    /* GET: bytes of a successful response go here instead of the body buffer; a non-zero
     * return stops the transfer with that negative errno (the callback sets e). */
    int (*on_data)(void *userdata, const void *buf, size_t len, MsError *e);
    void *userdata;
    /* A ranged GET (inclusive bounds): a retry asks only for the bytes not yet delivered. */
    bool has_range;
    uint64_t range_first, range_last;
    /* CompleteMultipartUpload can answer 200 with an <Error> document in the body. */
    bool error_in_ok_body;
    /* When it becomes non-zero, transfers and backoff sleeps stop with -ECANCELED. */
    const volatile int *cancel;
    /* What the request does, for messages: "cannot read object 'k' in store s3://b/p". */
    const char *what;
} MsS3Request;

typedef struct MsS3Response {
    long status;
    char *body; /* NUL-terminated; non-2xx bodies always, 2xx ones unless on_data */
    size_t body_len;
    char *etag;
    bool has_content_length;
    uint64_t content_length;
    bool has_total_size; /* from Content-Range: bytes a-b/TOTAL */
    uint64_t total_size;
    int64_t last_modified_usec; /* -1 when unknown */
    char *error_code;           /* from an <Error> document, when there was one */
    unsigned attempts;          /* how many were made (tests, messages) */
} MsS3Response;

void ms_s3_response_done(MsS3Response *r);

/* One connection's worth of state: an easy handle reused across requests (keep-alive). Not
 * thread-safe; use one per thread. */
typedef struct MsS3Http MsS3Http;

int ms_s3_http_new(const MsS3Location *loc, const MsS3Credentials *cred, MsS3Http **ret,
                   MsError *e);
MsS3Http *ms_s3_http_free(MsS3Http *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsS3Http *, ms_s3_http_free);

/* Sign and send, retrying (exponential backoff with full jitter, at most loc->max_attempts
 * attempts) on 5xx, 408, 429, S3's RequestTimeout, time-outs and broken connections.
 * Returns 0 for a 2xx answer. Otherwise sets e with a message a person can act on (never a
 * credential) and returns: -EACCES (credentials refused, access denied), -ENOENT (no such
 * bucket/key/upload), -EHOSTUNREACH (cannot connect, TLS failure), -ECANCELED, -EIO (server
 * errors that outlasted the retries), -EPROTO (anything else unexpected); ret holds the
 * status and the S3 error code for callers that treat some failures differently. */
int ms_s3_http_perform(MsS3Http *h, const MsS3Request *rq, MsS3Response *ret, MsError *e);

/* The delay before retry number attempt (1-based): uniformly random in [0, min(cap,
 * base * 2^(attempt-1))] ("full jitter"). */
#define MS_S3_BACKOFF_BASE_USEC UINT64_C(200000)
#define MS_S3_BACKOFF_CAP_USEC UINT64_C(20000000)
uint64_t ms_s3_backoff_usec(unsigned attempt, uint32_t random);

/* Replace every occurrence of secret (when non-empty) in s by asterisks, in place: server
 * messages are repeated in ours, and must not carry a credential back out. */
void ms_s3_scrub(char *s, const char *secret);

/* Initialise libcurl once per process (thread-safe). */
int ms_s3_http_global_init(MsError *e);

/* Signed S3 requests over libcurl: retries with backoff and jitter, errors one can act on. */
#include "s3-http.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "common/log.h"
#include "config.h"
#include "s3-xml.h"

#define USER_AGENT "mongosnap/" MONGOSNAP_VERSION
/* A transfer that moves less than this many bytes per second for the location's
 * stall_timeout is stalled: curl ends it with a time-out, and the request is retried. */
#define LOW_SPEED_LIMIT_BYTES 1
/* Backoff sleeps are cut in slices this long so a cancellation is seen promptly. */
#define CANCEL_POLL_USEC UINT64_C(50000)
#define USEC_PER_SEC UINT64_C(1000000)
#define NSEC_PER_USEC 1000
/* Headers we add besides the caller's: host, x-amz-date, x-amz-content-sha256,
 * x-amz-security-token, range, plus room for the curl-only ones. */
#define FIXED_HEADERS 8
#define HEADER_LINE_MAX 2048

struct MsS3Http {
    const MsS3Location *loc;
    const MsS3Credentials *cred;
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init_once(void) {
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ms_s3_http_global_init(MsError *e) {
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK)
        return ms_error_set(e, EIO, "cannot initialise libcurl: %s",
                            curl_easy_strerror(curl_init_result));
    return 0;
}

int ms_s3_http_new(const MsS3Location *loc, const MsS3Credentials *cred, MsS3Http **ret,
                   MsError *e) {
    int r = ms_s3_http_global_init(e);
    if (r < 0)
        return r;
    MsS3Http *h = calloc(1, sizeof(*h));
    if (!h)
        return ms_error_set(e, ENOMEM, "out of memory");
    h->loc = loc;
    h->cred = cred;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        return ms_error_set(e, ENOMEM, "cannot create a libcurl handle");
    }
    *ret = h;
    return 0;
}

MsS3Http *ms_s3_http_free(MsS3Http *h) {
    if (!h)
        return NULL;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    free(h);
    return NULL;
}

void ms_s3_response_done(MsS3Response *r) {
    if (!r)
        return;
    free(r->body);
    free(r->etag);
    free(r->error_code);
    *r = (MsS3Response){.last_modified_usec = -1};
}

uint64_t ms_s3_backoff_usec(unsigned attempt, uint32_t random) {
    uint64_t ceiling = MS_S3_BACKOFF_BASE_USEC;
    for (unsigned i = 1; i < attempt && ceiling < MS_S3_BACKOFF_CAP_USEC; i++)
        ceiling *= 2;
    ceiling = MS_MIN(ceiling, MS_S3_BACKOFF_CAP_USEC);
    return (uint64_t) random % (ceiling + 1);
}

void ms_s3_scrub(char *s, const char *secret) {
    if (!s || !secret || !*secret)
        return;
    size_t len = strlen(secret);
    for (char *p = strstr(s, secret); p; p = strstr(p + len, secret))
        memset(p, '*', len);
}

static uint32_t random_u32(void) {
    uint32_t x;
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t) sizeof(x)) {
        /* Jitter only spreads retries out; the clock is random enough for that. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint32_t) ts.tv_nsec ^ (uint32_t) ts.tv_sec;
    }
    return x;
}

static bool cancelled(const MsS3Request *rq) {
    return rq->cancel && *rq->cancel;
}

/* Sleep usec, in slices, returning false when cancelled meanwhile. */
static bool sleep_unless_cancelled(const MsS3Request *rq, uint64_t usec) {
    while (usec > 0) {
        if (cancelled(rq))
            return false;
        uint64_t slice = MS_MIN(usec, CANCEL_POLL_USEC);
        struct timespec ts = {.tv_sec = (time_t) (slice / USEC_PER_SEC),
                              .tv_nsec = (long) (slice % USEC_PER_SEC) * NSEC_PER_USEC};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        usec -= slice;
    }
    return !cancelled(rq);
}

/* ---- one attempt ---- */

typedef struct Transfer {
    const MsS3Request *rq;
    MsS3Response *resp;
    CURL *curl;
    size_t body_cap;
    size_t upload_pos;
    uint64_t range_first; /* where this attempt's range starts */
    uint64_t delivered;   /* bytes handed to on_data during this attempt */
    int data_error;       /* negative errno from on_data */
    MsError *e;
    bool too_large;
    /* Stall detection: curl's own low-speed check averages over a window of several
     * seconds, so after a burst (a part body swallowed by a black hole) it fires only
     * seconds after stall_timeout; this one counts from the last byte that moved. */
    curl_off_t last_ul, last_dl;
    uint64_t last_change_usec, stall_usec;
    bool stalled;
} Transfer;

static uint64_t now_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static bool status_is_success(long status) {
    return status >= 200 && status < 300;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    Transfer *t = userdata;
    size_t len = size * nmemb;
    long status = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (t->rq->on_data && status_is_success(status)) {
        /* A server that ignores Range answers 200 with the whole object: after a resumed
         * retry those bytes would land at the wrong place. */
        if (t->rq->has_range && status == 200 && t->range_first > 0) {
            t->data_error = ms_error_set(
                t->e, EPROTO, "%s: the S3 endpoint ignored a Range request", t->rq->what);
            return 0;
        }
        int r = t->rq->on_data(t->rq->userdata, ptr, len, t->e);
        if (r < 0) {
            t->data_error = r;
            return 0; /* CURLE_WRITE_ERROR */
        }
        t->delivered += len;
        return len;
    }
    MsS3Response *resp = t->resp;
    if (resp->body_len + len > MS_S3_RESPONSE_MAX) {
        t->too_large = true;
        return 0;
    }
    if (resp->body_len + len + 1 > t->body_cap) {
        size_t cap = MS_MAX(t->body_cap * 2, resp->body_len + len + 1);
        cap = MS_MAX(cap, (size_t) 4096);
        char *n = realloc(resp->body, cap);
        if (!n) {
            t->data_error = -ENOMEM;
            return 0;
        }
        resp->body = n;
        t->body_cap = cap;
    }
    memcpy(resp->body + resp->body_len, ptr, len);
    resp->body_len += len;
    resp->body[resp->body_len] = '\0';
    return len;
}

static bool header_is(const char *line, size_t len, const char *name, const char **ret_value,
                      size_t *ret_value_len) {
    size_t nlen = strlen(name);
    if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
        return false;
    const char *v = line + nlen + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    *ret_value = v;
    *ret_value_len = (size_t) (end - v);
    return true;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata) {
    Transfer *t = userdata;
    size_t len = size * nmemb;
    const char *v;
    size_t vlen;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue): forget headers of the previous one. */
        free(t->resp->etag);
        t->resp->etag = NULL;
        t->resp->has_total_size = false;
        return len;
    }
    if (header_is(line, len, "ETag", &v, &vlen)) {
        free(t->resp->etag);
        t->resp->etag = strndup(v, vlen);
    } else if (header_is(line, len, "Content-Range", &v, &vlen)) {
        /* "bytes 0-99/1234" */
        char buf[128];
        snprintf(buf, sizeof(buf), "%.*s", (int) MS_MIN(vlen, sizeof(buf) - 1), v);
        const char *slash = strrchr(buf, '/');
        if (slash && slash[1] >= '0' && slash[1] <= '9') {
            t->resp->total_size = strtoull(slash + 1, NULL, 10);
            t->resp->has_total_size = true;
        }
    }
    return len;
}

static size_t on_read(char *buffer, size_t size, size_t nitems, void *userdata) {
    Transfer *t = userdata;
    size_t left = t->rq->body_len - t->upload_pos;
    size_t n = MS_MIN(left, size * nitems);
    memcpy(buffer, (const char *) t->rq->body + t->upload_pos, n);
    t->upload_pos += n;
    return n;
}

/* curl rewinds the body when it resends a request on a fresh connection by itself (a
 * kept-alive connection the server or a proxy closed meanwhile); without this it cannot,
 * and the attempt fails with CURLE_SEND_FAIL_REWIND. */
static int on_seek(void *userdata, curl_off_t offset, int origin) {
    Transfer *t = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > t->rq->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    t->upload_pos = (size_t) offset;
    return CURL_SEEKFUNC_OK;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    Transfer *t = userdata;
    if (cancelled(t->rq))
        return 1;
    uint64_t now = now_usec();
    curl_off_t connected = 0;
    /* Connecting has its own limit (connect_timeout). */
    if (curl_easy_getinfo(t->curl, CURLINFO_CONNECT_TIME_T, &connected) != CURLE_OK ||
        connected == 0 || ulnow != t->last_ul || dlnow != t->last_dl) {
        t->last_ul = ulnow;
        t->last_dl = dlnow;
        t->last_change_usec = now;
    } else if (now - t->last_change_usec >= t->stall_usec) {
        t->stalled = true;
        return 1;
    }
    return 0;
}

static struct curl_slist *add_header(struct curl_slist *list, bool *failed, const char *name,
                                     const char *value) {
    if (*failed)
        return list;
    char line[HEADER_LINE_MAX];
    int n = snprintf(line, sizeof(line), "%s: %s", name, value);
    if (n < 0 || (size_t) n >= sizeof(line)) {
        *failed = true;
        return list;
    }
    struct curl_slist *l = curl_slist_append(list, line);
    if (!l) {
        *failed = true;
        return list;
    }
    return l;
}

typedef enum AttemptOutcome {
    ATTEMPT_DONE,   /* an HTTP answer to hand back (success or final error) */
    ATTEMPT_RETRY,  /* a transient failure: try again */
    ATTEMPT_FAILED, /* a failure that retrying cannot fix; e is set */
} AttemptOutcome;

static bool curl_code_is_transient(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:  /* also what a reset during the handshake looks like */
    case CURLE_SEND_FAIL_REWIND:   /* curl's own resend on a fresh connection could not rewind */
    case CURLE_WEIRD_SERVER_REPLY: /* a connection cut inside the status line or headers */
        return true;
    default:
        return false;
    }
}

static bool curl_code_is_tls(CURLcode c) {
    return c == CURLE_PEER_FAILED_VERIFICATION || c == CURLE_SSL_CACERT_BADFILE ||
           c == CURLE_SSL_CONNECT_ERROR || c == CURLE_SSL_CERTPROBLEM || c == CURLE_SSL_CIPHER ||
           c == CURLE_SSL_ISSUER_ERROR || c == CURLE_SSL_CRL_BADFILE;
}

static bool s3_code_is_transient(const char *code) {
    static const char *const codes[] = {"InternalError",        "SlowDown",
                                        "ServiceUnavailable",   "RequestTimeout",
                                        "RequestTimeTooSkewed", "OperationAborted"};
    if (!code)
        return false;
    for (size_t i = 0; i < ELEMENTSOF(codes); i++)
        if (strcmp(code, codes[i]) == 0)
            return true;
    return false;
}

static bool status_is_transient(long status, const char *code) {
    if (status == 408 || status == 429 || (status >= 500 && status != 501 && status < 600))
        return true;
    /* S3 says 400 RequestTimeout when it waited too long for our body. */
    return status == 400 && s3_code_is_transient(code);
}

static void endpoint_text(const MsS3Location *loc, char *buf, size_t size) {
    snprintf(buf, size, "%s%s", loc->https ? "https://" : "http://", loc->endpoint_host);
}

/* The message for a transport failure after the last attempt (or a non-transient one). */
static int transport_error(MsS3Http *h, const MsS3Request *rq, CURLcode c, bool connected,
                           unsigned attempts, MsError *e) {
    char endpoint[512];
    endpoint_text(h->loc, endpoint, sizeof(endpoint));
    const char *detail = h->errbuf[0] ? h->errbuf : curl_easy_strerror(c);
    if ((c == CURLE_SSL_CACERT_BADFILE || c == CURLE_SSL_CRL_BADFILE) && h->loc->ca_file)
        return ms_error_set(e, EINVAL,
                            "%s: cannot use the CA file ca=%s of the store location (%s); give a "
                            "readable PEM file of CA certificates",
                            rq->what, h->loc->ca_file, detail);
    if (curl_code_is_tls(c) && c != CURLE_SSL_CONNECT_ERROR && h->loc->ca_file)
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: the TLS connection to %s failed (%s); check that ca=%s holds the "
                            "CA that signed the endpoint's certificate (it replaces the system's "
                            "CA store), and that the endpoint's host name matches the certificate",
                            rq->what, endpoint, detail, h->loc->ca_file);
    if (curl_code_is_tls(c) && c != CURLE_SSL_CONNECT_ERROR)
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: the TLS connection to %s failed (%s); if the endpoint uses a "
                            "private CA, add ca=/path/to/ca.pem to the store location, and check "
                            "that the endpoint's host name matches its certificate",
                            rq->what, endpoint, detail);
    if (c == CURLE_SSL_CONNECT_ERROR)
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: the TLS handshake with %s failed after %u attempts (%s); check "
                            "that the endpoint speaks https on that port (or use http://)",
                            rq->what, endpoint, attempts, detail);
    if (c == CURLE_COULDNT_RESOLVE_HOST)
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: cannot resolve the S3 endpoint %s (%s); check the endpoint= or "
                            "region= of the store location and DNS",
                            rq->what, endpoint, detail);
    if (c == CURLE_COULDNT_CONNECT || (c == CURLE_OPERATION_TIMEDOUT && !connected))
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: cannot connect to the S3 endpoint %s after %u attempts (%s); "
                            "check that it runs and that the endpoint= of the store location is "
                            "right",
                            rq->what, endpoint, attempts, detail);
    if (c == CURLE_OPERATION_TIMEDOUT)
        return ms_error_set(e, ETIMEDOUT,
                            "%s: the S3 endpoint %s stalled (no progress for %us) on each of %u "
                            "attempts; check the network and the endpoint's load",
                            rq->what, endpoint, h->loc->stall_timeout_sec, attempts);
    if (curl_code_is_transient(c))
        return ms_error_set(e, EIO,
                            "%s: the connection to the S3 endpoint %s kept failing (%s) on each "
                            "of %u attempts",
                            rq->what, endpoint, detail, attempts);
    return ms_error_set(e, EPROTO, "%s: request to the S3 endpoint %s failed: %s", rq->what,
                        endpoint, detail);
}

/* The message for an HTTP error answer (after the last attempt, or a final one). */
static int http_error(MsS3Http *h, const MsS3Request *rq, const MsS3Response *resp,
                      const char *message, unsigned attempts, MsError *e) {
    const char *code = resp->error_code;
    long st = resp->status;
    char endpoint[512];
    endpoint_text(h->loc, endpoint, sizeof(endpoint));
    char detail[512];
    snprintf(detail, sizeof(detail), "HTTP %ld%s%s%s%s", st, code ? " " : "", code ? code : "",
             message ? ": " : "", message ? message : "");

    if (code &&
        (strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
         strcmp(code, "InvalidToken") == 0 || strcmp(code, "ExpiredToken") == 0 ||
         strcmp(code, "TokenRefreshRequired") == 0 || strcmp(code, "InvalidSecurity") == 0))
        return ms_error_set(e, EACCES,
                            "%s: the S3 endpoint %s refused the credentials from %s (%s); check "
                            "that the access key id and secret there are right and still valid",
                            rq->what, endpoint, h->cred->source, code);
    if (code && strcmp(code, "RequestTimeTooSkewed") == 0)
        return ms_error_set(e, EACCES,
                            "%s: the S3 endpoint %s refused the request because this machine's "
                            "clock differs too much from its own; synchronise the clock (NTP)",
                            rq->what, endpoint);
    if (code && strcmp(code, "NoSuchBucket") == 0)
        return ms_error_set(e, ENOENT,
                            "%s: bucket '%s' does not exist at %s; create it or fix the bucket "
                            "name in the store location",
                            rq->what, h->loc->bucket, endpoint);
    if (code && (strncasecmp(code, "KMS.", 4) == 0 || strncasecmp(code, "kms:", 4) == 0) &&
        st >= 400 && st < 500 && st != 403 && st != 408 && st != 429)
        return ms_error_set(e, EINVAL,
                            "%s: the S3 endpoint %s cannot encrypt with the KMS key %s (%s); "
                            "check kms_key_id= in the store location (or drop it to use the "
                            "bucket's default key, or use sse=AES256)",
                            rq->what, endpoint,
                            h->loc->kms_key_id ? h->loc->kms_key_id : "(the default key)", detail);
    if (st == 403)
        return ms_error_set(e, EACCES,
                            "%s: access denied (%s); the credentials from %s are valid but not "
                            "allowed to do this on bucket '%s' (check the bucket policy or IAM "
                            "permissions: s3:GetObject, s3:PutObject, s3:DeleteObject, "
                            "s3:ListBucket, s3:ListBucketMultipartUploads, "
                            "s3:AbortMultipartUpload)",
                            rq->what, detail, h->cred->source, h->loc->bucket);
    if (code && (strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
                 strcmp(code, "PermanentRedirect") == 0 || st == 301))
        return ms_error_set(e, EINVAL,
                            "%s: the S3 endpoint %s says bucket '%s' lives elsewhere (%s); set "
                            "region= (and endpoint=) in the store location to the bucket's region",
                            rq->what, endpoint, h->loc->bucket, detail);
    if (st == 404)
        return ms_error_set(e, ENOENT, "%s: not found (%s)", rq->what, detail);
    if (st == 412)
        return ms_error_set(e, ESTALE,
                            "%s: the object changed while it was being read (%s); was it "
                            "replaced by another writer?",
                            rq->what, detail);
    if (st == 416)
        return ms_error_set(e, ERANGE, "%s: range not satisfiable (%s)", rq->what, detail);
    if (status_is_transient(st, code))
        return ms_error_set(e, EIO,
                            "%s: the S3 endpoint %s kept failing (%s) on each of %u attempts; it "
                            "may be overloaded or down",
                            rq->what, endpoint, detail, attempts);
    return ms_error_set(e, EPROTO, "%s: the S3 endpoint %s refused the request (%s)", rq->what,
                        endpoint, detail);
}

static int build_url(const MsS3Target *t, const MsS3Param *query, size_t n_query, char **ret) {
    _cleanup_free_ char *q = ms_s3_canonical_query(query, n_query);
    if (!q)
        return -ENOMEM;
    if (asprintf(ret, "%s%s%s%s", t->base_url, t->canonical_uri, *q ? "?" : "", q) < 0) {
        *ret = NULL;
        return -ENOMEM;
    }
    return 0;
}

static AttemptOutcome attempt_once(MsS3Http *h, const MsS3Request *rq, const MsS3Target *target,
                                   const char *url, const char *payload_hash, uint64_t range_first,
                                   MsS3Response *resp, CURLcode *ret_code, bool *ret_connected,
                                   uint64_t *ret_delivered, MsError *e) {
    CURL *c = h->curl;
    curl_easy_reset(c);
    h->errbuf[0] = '\0';

    char amz_date[MS_S3_AMZ_DATE_LEN + 1];
    ms_s3_amz_date((int64_t) time(NULL), amz_date);
    char range[64] = "";
    if (rq->has_range)
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, range_first, rq->range_last);

    size_t n_signed = 0;
    MsS3Param *signed_headers = calloc(rq->n_headers + FIXED_HEADERS, sizeof(MsS3Param));
    if (!signed_headers) {
        ms_error_set(e, ENOMEM, "out of memory");
        return ATTEMPT_FAILED;
    }
    signed_headers[n_signed++] = (MsS3Param){"host", target->host};
    signed_headers[n_signed++] = (MsS3Param){"x-amz-date", amz_date};
    signed_headers[n_signed++] = (MsS3Param){"x-amz-content-sha256", payload_hash};
    if (h->cred->session_token)
        signed_headers[n_signed++] = (MsS3Param){"x-amz-security-token", h->cred->session_token};
    if (rq->has_range)
        signed_headers[n_signed++] = (MsS3Param){"range", range};
    for (size_t i = 0; i < rq->n_headers; i++)
        signed_headers[n_signed++] = rq->headers[i];

    MsS3Signer signer = {h->cred->access_key_id, h->cred->secret_access_key, h->cred->session_token,
                         h->loc->region};
    char *authorization = NULL;
    int r = ms_s3_sign(&signer, rq->method, target->canonical_uri, rq->query, rq->n_query,
                       signed_headers, n_signed, payload_hash, amz_date, &authorization, NULL);
    if (r < 0) {
        free(signed_headers);
        ms_error_set(e, -r, "cannot sign the S3 request: %s", strerror(-r));
        return ATTEMPT_FAILED;
    }

    bool failed = false;
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < n_signed; i++)
        list = add_header(list, &failed, signed_headers[i].name, signed_headers[i].value);
    list = add_header(list, &failed, "authorization", authorization);
    /* No "Expect: 100-continue", which curl adds to bodies over 1 MiB: every part would wait a
     * round trip for the server's go-ahead before sending a byte (at 50 ms each way, 0.1 s per
     * 16 MiB part). The cost of going without: a refused request (expired credentials) sends
     * its body for nothing once. */
    if (!failed) {
        struct curl_slist *l = curl_slist_append(list, "Expect:");
        failed = !l;
        list = l ? l : list;
    }
    explicit_bzero(authorization, strlen(authorization));
    free(authorization);
    free(signed_headers);
    if (failed) {
        curl_slist_free_all(list);
        ms_error_set(e, ENOMEM, "cannot build the S3 request headers");
        return ATTEMPT_FAILED;
    }

    Transfer t = {.rq = rq,
                  .resp = resp,
                  .curl = c,
                  .e = e,
                  .range_first = range_first,
                  .last_change_usec = now_usec(),
                  .stall_usec = (uint64_t) MS_MAX(h->loc->stall_timeout_sec, 1u) * USEC_PER_SEC};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long) h->loc->connect_timeout_sec);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long) LOW_SPEED_LIMIT_BYTES);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long) MS_MAX(h->loc->stall_timeout_sec, 1u));
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_FILETIME, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    if (h->loc->ca_file) {
        /* ca= replaces the system store: libcurl (Debian's) also has a default CApath
         * (/etc/ssl/certs) that would keep trusting every public CA beside it. */
        curl_easy_setopt(c, CURLOPT_CAINFO, h->loc->ca_file);
        curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    }
    if (strcmp(rq->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(rq->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &t);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, &t);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) rq->body_len);
    } else if (strcmp(rq->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) rq->body_len);
    } else if (strcmp(rq->method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);

    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(list);
    *ret_code = cc;
    curl_off_t connect_time = 0;
    curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connect_time);
    *ret_connected = connect_time > 0;
    *ret_delivered = t.delivered;
    resp->attempts++;

    if (t.data_error < 0) {
        if (!ms_error_is_set(e))
            ms_error_set(e, -t.data_error, "%s: %s", rq->what, strerror(-t.data_error));
        return ATTEMPT_FAILED;
    }
    if (cc == CURLE_ABORTED_BY_CALLBACK && t.stalled && !cancelled(rq)) {
        /* Our stall detection: the same as curl's time-out, only on time. */
        *ret_code = CURLE_OPERATION_TIMEDOUT;
        snprintf(h->errbuf, sizeof(h->errbuf), "no data moved for %us",
                 MS_MAX(h->loc->stall_timeout_sec, 1u));
        return ATTEMPT_RETRY;
    }
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        ms_error_set(e, ECANCELED, "%s: cancelled", rq->what);
        return ATTEMPT_FAILED;
    }
    if (t.too_large) {
        ms_error_set(e, EPROTO, "%s: the S3 endpoint sent a response larger than %u bytes",
                     rq->what, MS_S3_RESPONSE_MAX);
        return ATTEMPT_FAILED;
    }
    if (cc != CURLE_OK)
        return curl_code_is_transient(cc) ? ATTEMPT_RETRY : ATTEMPT_FAILED;

    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_off_t cl = -1;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0) {
        resp->content_length = (uint64_t) cl;
        resp->has_content_length = true;
    }
    curl_off_t ft = -1;
    if (curl_easy_getinfo(c, CURLINFO_FILETIME_T, &ft) == CURLE_OK && ft >= 0)
        resp->last_modified_usec = (int64_t) ft * (int64_t) USEC_PER_SEC;
    return ATTEMPT_DONE;
}

int ms_s3_http_perform(MsS3Http *h, const MsS3Request *rq, MsS3Response *ret, MsError *e) {
    MsS3Response resp = {.last_modified_usec = -1};
    MsS3Target target = {0};
    int r = ms_s3_location_target(h->loc, rq->full_key, &target);
    if (r < 0)
        return ms_error_set(e, ENOMEM, "out of memory");
    _cleanup_free_ char *url = NULL;
    r = build_url(&target, rq->query, rq->n_query, &url);
    if (r < 0) {
        ms_s3_target_done(&target);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    char payload_hash[MS_S3_SHA256_HEX_LEN + 1];
    if (rq->payload_hash)
        snprintf(payload_hash, sizeof(payload_hash), "%s", rq->payload_hash);
    else
        ms_s3_sha256_hex(rq->body ? rq->body : "", rq->body_len, payload_hash);

    uint64_t range_first = rq->range_first;
    unsigned max_attempts = MS_MAX(h->loc->max_attempts, 1u);
    r = 0;
    for (unsigned attempt = 1;; attempt++) {
        /* Fresh answer each time; attempts and the range position carry over. */
        unsigned attempts_so_far = resp.attempts;
        ms_s3_response_done(&resp);
        resp.attempts = attempts_so_far;

        CURLcode cc = CURLE_OK;
        bool connected = false;
        uint64_t delivered = 0;
        MsError attempt_error = MS_ERROR_INIT;
        AttemptOutcome o = attempt_once(h, rq, &target, url, payload_hash, range_first, &resp, &cc,
                                        &connected, &delivered, &attempt_error);
        /* A ranged read resumes after the bytes already handed over, not from its start. */
        range_first += delivered;
        if (o == ATTEMPT_RETRY && rq->has_range && rq->on_data && range_first > rq->range_last) {
            /* Everything arrived before the connection broke. */
            resp.status = 206;
            r = 0;
            break;
        }
        if (o == ATTEMPT_FAILED) {
            if (ms_error_is_set(&attempt_error))
                r = ms_error_set(e, attempt_error.code, "%s", attempt_error.message);
            else
                r = transport_error(h, rq, cc, connected, attempt, e);
            break;
        }

        bool transient;
        _cleanup_free_ char *message = NULL;
        if (o == ATTEMPT_RETRY)
            transient = true;
        else {
            bool ok = status_is_success(resp.status);
            bool check_body = !ok || rq->error_in_ok_body;
            if (check_body && resp.body) {
                char *code = NULL, *msg = NULL;
                if (ms_s3_xml_error(resp.body, resp.body_len, &code, &msg) >= 0) {
                    resp.error_code = code;
                    message = msg;
                    ms_s3_scrub(resp.error_code, h->cred->access_key_id);
                    ms_s3_scrub(message, h->cred->access_key_id);
                    ms_s3_scrub(message, h->cred->secret_access_key);
                    if (ok) /* an error inside a 200: treat as the 500 it stands for */
                        resp.status = 500;
                }
            }
            if (status_is_success(resp.status)) {
                r = 0;
                break;
            }
            transient = status_is_transient(resp.status, resp.error_code);
            if (!transient || attempt >= max_attempts) {
                r = http_error(h, rq, &resp, message, attempt, e);
                break;
            }
        }
        if (attempt >= max_attempts) {
            r = transport_error(h, rq, cc, connected, attempt, e);
            break;
        }
        uint64_t delay = ms_s3_backoff_usec(attempt, random_u32());
        /* Retries are worth seeing (a flaky network, an overloaded endpoint) but are no
         * failure yet: info, not a warning. Never a credential: curl's message and S3's
         * code only. */
        char reason[CURL_ERROR_SIZE + 64];
        if (o == ATTEMPT_RETRY)
            snprintf(reason, sizeof(reason), "%s",
                     h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        else
            snprintf(reason, sizeof(reason), "HTTP %ld%s%s", resp.status,
                     resp.error_code ? " " : "", resp.error_code ? resp.error_code : "");
        char resume[64] = "";
        if (rq->has_range && delivered > 0)
            snprintf(resume, sizeof(resume), " from byte %" PRIu64 " (resumed)", range_first);
        log_info("%s: attempt %u of %u failed (%s); retrying in %" PRIu64 " ms%s", rq->what,
                 attempt, max_attempts, reason, delay / 1000, resume);
        if (!sleep_unless_cancelled(rq, delay)) {
            r = ms_error_set(e, ECANCELED, "%s: cancelled", rq->what);
            break;
        }
    }
    ms_s3_target_done(&target);
    if (ret)
        *ret = resp;
    else
        ms_s3_response_done(&resp);
    return r;
}

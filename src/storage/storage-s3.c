/* The S3 storage driver: streaming multipart uploads, ranged reads, listings, presigned URLs.
 *
 * Location syntax (every option optional):
 *
 *   s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:9000&region=us-east-1
 *       &addressing=path|virtual&ca=/path/ca.pem&sse=AES256|aws:kms&kms_key_id=ID
 *       &part_size=16MiB&parallel=4&presign_expires=7d&max_attempts=5&connect_timeout=10s
 *       &stall_timeout=60s
 *
 *   endpoint         default https://s3.REGION.amazonaws.com (AWS)
 *   region           default us-east-1; part of every signature
 *   addressing       virtual (bucket.host/key) by default on AWS, path (host/bucket/key) for a
 *                    custom endpoint (MinIO, Ceph RGW: usually no wildcard DNS)
 *   ca               PEM file of CAs to trust instead of the system store (libcurl's
 *                    bundle and CA directory; SSL_CERT_FILE and CURL_CA_BUNDLE are not read);
 *                    checked for readability when the store is opened
 *   sse, kms_key_id  server-side encryption headers on every object written
 *   part_size        first part size of multipart uploads (5MiB..5GiB); grows, see below
 *   parallel         parts uploaded, and ranges downloaded, at once (1..64)
 *   presign_expires  default lifetime of download URLs (1s..7d)
 *   max_attempts     tries per request before giving up (1..20)
 *   connect_timeout  per connection attempt (1s..300s)
 *   stall_timeout    an attempt during which no byte moves for this long is broken off and
 *                    retried (1s..3600s, default 60s)
 *
 * Keys live under PREFIX ("PREFIX/KEY"). Credentials never appear in the location (one that
 * holds some is refused without being echoed): see s3-credentials.h for where they come from.
 *
 * Writing: the sink keeps one part buffer that write() fills; a full buffer is handed to a
 * pool of `parallel` upload threads and a new one started, and write() blocks while
 * `parallel` parts are already in flight, so memory stays at part_size x (parallel + 1).
 * Objects smaller than one part go up in a single PUT; larger ones as a multipart upload
 * begun on the first full part and completed by finish(). Freeing an unfinished sink stops
 * the transfers and aborts the upload, so nothing is left behind.
 *
 * Lost answers: a CreateMultipartUpload retried after its answer was lost leaves an upload
 * nobody knows the id of, so after a retried create the key's other uploads are aborted. A
 * CompleteMultipartUpload retried after its successful answer was lost gets NoSuchUpload;
 * the object is then accepted only if a HEAD shows the multipart ETag of exactly the parts
 * sent (MD5 of the parts' MD5s, "-N"), and anything else fails.
 *
 * Why threads, not curl's multi interface: write() is called by the archive pipeline only
 * when it has data; with the multi interface someone would still have to drive the transfers
 * between those calls (a thread anyway), and retries with backoff would become a state
 * machine. A few threads, each with its own easy handle (and so its own kept-alive
 * connection), keep each part upload a straight sequence: hash, PUT, retry, record the
 * ETag. */
#include "storage-s3.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "common/macro.h"
#include "s3-credentials.h"
#include "s3-http.h"
#include "s3-location.h"
#include "s3-sigv4.h"
#include "s3-xml.h"

/* The first part's buffer starts small and doubles up to the part size, so the many small
 * objects (manifests) never cost a whole part of memory. */
#define FIRST_BUFFER_SIZE (64u * 1024)
#define MD5_LEN 16
/* base64 of 16 bytes: 24 characters and a NUL. */
#define MD5_BASE64_LEN 25
#define USEC_PER_SEC UINT64_C(1000000)
/* Messages say what failed ("cannot upload part 3 of object ..."), then why. */
#define WHAT_MAX MS_ERROR_MESSAGE_MAX
#define CONTENT_TYPE_OCTET "application/octet-stream"
#define CONTENT_TYPE_XML "application/xml"
/* ListObjectsV2 LastModified: "2026-11-22T03:10:26.000Z" */
#define LIST_TIME_FORMAT "%Y-%m-%dT%H:%M:%S"

typedef struct S3Storage {
    MsStorage base;
    MsS3Location loc;
    MsS3Credentials cred;
    /* Guards http: interface calls other than reads and writes share one connection. */
    pthread_mutex_t lock;
    MsS3Http *http;
} S3Storage;

static const MsStorageOps s3_ops;

static int invalid_key(S3Storage *st, const char *what, const char *key, MsError *e) {
    return ms_error_set(e, EINVAL,
                        "invalid %s '%s' for store '%s': keys are relative paths of "
                        "'/'-separated names, without empty, '.', '..' or '.tmp-*' names, "
                        "control characters or a leading '/'",
                        what, key ? key : "(null)", st->loc.description);
}

/* The bucket-relative name of an object key (the location's prefix added), checked first. */
static int object_full_key(S3Storage *st, const char *key, char **ret, MsError *e) {
    if (!ms_storage_key_is_valid(key))
        return invalid_key(st, "object key", key, e);
    if (!(*ret = ms_s3_location_full_key(&st->loc, key)))
        return ms_error_set(e, ENOMEM, "out of memory");
    return 0;
}

static void sse_headers(const MsS3Location *loc, MsS3Param *h, size_t *n) {
    if (loc->sse == MS_S3_SSE_AES256)
        h[(*n)++] = (MsS3Param){"x-amz-server-side-encryption", "AES256"};
    else if (loc->sse == MS_S3_SSE_KMS) {
        h[(*n)++] = (MsS3Param){"x-amz-server-side-encryption", "aws:kms"};
        if (loc->kms_key_id)
            h[(*n)++] = (MsS3Param){"x-amz-server-side-encryption-aws-kms-key-id", loc->kms_key_id};
    }
}

/* Content-MD5 (base64) and the SHA-256 (hex) that signs the payload: S3 checks both, so a
 * part damaged on the way is refused rather than stored. */
static void body_digests(const void *buf, size_t len, char md5_b64[MD5_BASE64_LEN],
                         char sha256_hex[MS_S3_SHA256_HEX_LEN + 1], uint8_t ret_md5[MD5_LEN]) {
    unsigned char md5[MD5_LEN];
    unsigned int md5_len = 0;
    EVP_Digest(buf, len, md5, &md5_len, EVP_md5(), NULL);
    if (ret_md5)
        memcpy(ret_md5, md5, MD5_LEN);
    EVP_EncodeBlock((unsigned char *) md5_b64, md5, MD5_LEN);
    ms_s3_sha256_hex(buf, len, sha256_hex);
}

/* ---- writing ---- */

typedef struct S3Part {
    struct S3Part *next;
    unsigned number;
    uint8_t *buf;
    size_t len;
} S3Part;

typedef struct S3Sink {
    MsSink base;
    S3Storage *st;
    char *key;
    char *full_key;
    MsS3Http *http; /* single PUT, create, complete, abort */
    char *upload_id;
    char what_part[MS_ERROR_MESSAGE_MAX / 2];

    uint8_t *cur;
    size_t cur_len, cur_cap;
    uint64_t cur_part_size;
    unsigned next_number; /* the number cur will get */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    S3Part *queue_head, *queue_tail;
    unsigned in_flight; /* queued or being uploaded */
    unsigned n_threads;
    pthread_t threads[MS_S3_MAX_PARALLEL];
    bool stopping;
    char **etags;             /* by part number - 1 */
    uint8_t (*md5s)[MD5_LEN]; /* each part's MD5, for the object's multipart ETag */
    size_t etags_cap;
    MsError error; /* the first failure of any part; sticky */
    volatile int abort;

    bool committed;
} S3Sink;

static void part_free(S3Part *p) {
    if (!p)
        return;
    free(p->buf);
    free(p);
}

static int sink_record_etag(S3Sink *s, unsigned number, const char *etag,
                            const uint8_t md5[MD5_LEN]) {
    if (number > s->etags_cap) {
        size_t cap = MS_MAX((size_t) number, s->etags_cap * 2);
        char **n = realloc(s->etags, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        memset(n + s->etags_cap, 0, (cap - s->etags_cap) * sizeof(*n));
        s->etags = n;
        uint8_t(*m)[MD5_LEN] = realloc(s->md5s, cap * sizeof(*m));
        if (!m)
            return -ENOMEM; /* etags grew, md5s did not: etags_cap still fits both */
        memset(m + s->etags_cap, 0, (cap - s->etags_cap) * sizeof(*m));
        s->md5s = m;
        s->etags_cap = cap;
    }
    memcpy(s->md5s[number - 1], md5, MD5_LEN);
    free(s->etags[number - 1]);
    s->etags[number - 1] = strdup(etag);
    return s->etags[number - 1] ? 0 : -ENOMEM;
}

static int upload_part(S3Sink *s, MsS3Http *http, S3Part *p, MsError *e) {
    char md5[MD5_BASE64_LEN], sha[MS_S3_SHA256_HEX_LEN + 1], number[16];
    uint8_t raw_md5[MD5_LEN];
    body_digests(p->buf, p->len, md5, sha, raw_md5);
    snprintf(number, sizeof(number), "%u", p->number);
    MsS3Param q[] = {{"partNumber", number}, {"uploadId", s->upload_id}};
    MsS3Param h[] = {{"content-md5", md5}};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot upload part %u of %s", p->number, s->what_part);
    MsS3Request rq = {
        .method = "PUT",
        .full_key = s->full_key,
        .query = q,
        .n_query = ELEMENTSOF(q),
        .headers = h,
        .n_headers = ELEMENTSOF(h),
        .body = p->buf,
        .body_len = p->len,
        .payload_hash = sha,
        .cancel = &s->abort,
        .what = what,
    };
    MsS3Response resp;
    int r = ms_s3_http_perform(http, &rq, &resp, e);
    if (r < 0) {
        ms_s3_response_done(&resp);
        return r;
    }
    if (!resp.etag || !*resp.etag) {
        ms_s3_response_done(&resp);
        return ms_error_set(e, EPROTO, "%s: the S3 endpoint answered without an ETag", what);
    }
    pthread_mutex_lock(&s->lock);
    r = sink_record_etag(s, p->number, resp.etag, raw_md5);
    pthread_mutex_unlock(&s->lock);
    ms_s3_response_done(&resp);
    return r < 0 ? ms_error_set(e, ENOMEM, "out of memory") : 0;
}

static void *upload_thread(void *userdata) {
    S3Sink *s = userdata;
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_s3_http_freep) MsS3Http *http = NULL;
    int init = ms_s3_http_new(&s->st->loc, &s->st->cred, &http, &e);

    pthread_mutex_lock(&s->lock);
    if (init < 0 && !ms_error_is_set(&s->error))
        s->error = e;
    for (;;) {
        while (!s->queue_head && !s->stopping)
            pthread_cond_wait(&s->cond, &s->lock);
        S3Part *p = s->queue_head;
        if (!p)
            break; /* stopping, queue drained */
        s->queue_head = p->next;
        if (!s->queue_head)
            s->queue_tail = NULL;
        /* After a failure or an abort, parts are dropped, not sent. */
        bool skip = init < 0 || s->abort || ms_error_is_set(&s->error);
        pthread_mutex_unlock(&s->lock);

        MsError pe = MS_ERROR_INIT;
        int r = skip ? 0 : upload_part(s, http, p, &pe);
        part_free(p);

        pthread_mutex_lock(&s->lock);
        if (r < 0 && !ms_error_is_set(&s->error))
            s->error = pe;
        s->in_flight--;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int sink_start_threads(S3Sink *s, MsError *e) {
    unsigned want = MS_MIN(s->st->loc.parallel, MS_S3_MAX_PARALLEL);
    for (unsigned i = 0; i < want; i++) {
        int r = pthread_create(&s->threads[i], NULL, upload_thread, s);
        if (r != 0) {
            if (s->n_threads > 0)
                break; /* fewer threads: slower, still correct */
            return ms_error_set(e, r, "cannot start an upload thread: %s", strerror(r));
        }
        s->n_threads++;
    }
    return 0;
}

/* Stop the pool: with abort, in-flight transfers end at once and queued parts are dropped. */
static void sink_stop_threads(S3Sink *s, bool abort) {
    pthread_mutex_lock(&s->lock);
    if (abort)
        s->abort = 1;
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
    while (s->queue_head) {
        S3Part *p = s->queue_head;
        s->queue_head = p->next;
        part_free(p);
    }
    s->queue_tail = NULL;
}

static int sink_error(S3Sink *s, MsError *e) {
    pthread_mutex_lock(&s->lock);
    int r = 0;
    if (ms_error_is_set(&s->error))
        r = ms_error_set(e, s->error.code, "%s", s->error.message);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* A CreateMultipartUpload whose answer was lost made an upload nobody knows the id of; after
 * a retried create, abort this key's uploads other than keep (NULL: all of them). Best effort:
 * what is missed here, the next clean-up of stale uploads removes. Snapshot keys are unique
 * (the engine refuses an existing name), so no other writer's upload is touched. */
static void abort_other_uploads(S3Sink *s, const char *keep) {
    MsS3Param q[] = {{"prefix", s->full_key}, {"uploads", ""}};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot list the unfinished uploads of %s", s->what_part);
    MsS3Request rq = {.method = "GET", .query = q, .n_query = ELEMENTSOF(q), .what = what};
    MsS3Response resp;
    MsError e = MS_ERROR_INIT;
    if (ms_s3_http_perform(s->http, &rq, &resp, &e) < 0) {
        log_warning("%s; the next clean-up of stale uploads will remove them", e.message);
        ms_s3_response_done(&resp);
        return;
    }
    const char *body = resp.body ? resp.body : "";
    const char *end = body + resp.body_len, *pos = body, *inner;
    size_t inner_len;
    while (ms_s3_xml_next(&pos, end, "Upload", &inner, &inner_len)) {
        _cleanup_free_ char *key = NULL, *id = NULL;
        if (ms_s3_xml_text(inner, inner_len, "Key", &key) < 0 ||
            ms_s3_xml_text(inner, inner_len, "UploadId", &id) < 0 ||
            strcmp(key, s->full_key) != 0 || (keep && strcmp(id, keep) == 0))
            continue;
        MsS3Param aq[] = {{"uploadId", id}};
        char awhat[WHAT_MAX];
        snprintf(awhat, sizeof(awhat), "cannot abort a duplicate upload of %s", s->what_part);
        MsS3Request arq = {.method = "DELETE",
                           .full_key = s->full_key,
                           .query = aq,
                           .n_query = ELEMENTSOF(aq),
                           .what = awhat};
        MsS3Response aresp;
        MsError ae = MS_ERROR_INIT;
        int r = ms_s3_http_perform(s->http, &arq, &aresp, &ae);
        if (r < 0 && aresp.status != 404)
            log_warning("%s; the next clean-up of stale uploads will remove it", ae.message);
        else
            log_info("aborted a duplicate upload of %s left by a retried start whose answer "
                     "was lost",
                     s->what_part);
        ms_s3_response_done(&aresp);
    }
    ms_s3_response_done(&resp);
}

static int create_multipart(S3Sink *s, MsError *e) {
    MsS3Param q[] = {{"uploads", ""}};
    MsS3Param h[3];
    size_t n_h = 0;
    h[n_h++] = (MsS3Param){"content-type", CONTENT_TYPE_OCTET};
    sse_headers(&s->st->loc, h, &n_h);
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot start the upload of %s", s->what_part);
    MsS3Request rq = {
        .method = "POST",
        .full_key = s->full_key,
        .query = q,
        .n_query = ELEMENTSOF(q),
        .headers = h,
        .n_headers = n_h,
        .what = what,
    };
    MsS3Response resp;
    log_debug("starting the multipart upload of %s", s->what_part);
    int r = ms_s3_http_perform(s->http, &rq, &resp, e);
    if (r >= 0) {
        r = resp.body ? ms_s3_xml_text(resp.body, resp.body_len, "UploadId", &s->upload_id)
                      : -ENOENT;
        if (r < 0 || !*s->upload_id)
            r = ms_error_set(e, EPROTO, "%s: the S3 endpoint's answer holds no UploadId", what);
    }
    unsigned attempts = resp.attempts;
    ms_s3_response_done(&resp);
    if (r < 0) {
        /* An upload made by an attempt whose answer was lost is left to the next clean-up
         * of stale uploads: the endpoint is failing now. */
        free(s->upload_id);
        s->upload_id = NULL;
        return r;
    }
    log_debug("started the multipart upload of %s", s->what_part);
    if (attempts > 1)
        abort_other_uploads(s, s->upload_id);
    return 0;
}

/* Hand the full buffer to the pool (starting the upload on the first part), waiting while
 * `parallel` parts are in flight. */
static int sink_submit_part(S3Sink *s, MsError *e) {
    if (!s->upload_id) {
        int r = create_multipart(s, e);
        if (r < 0)
            return r;
        r = sink_start_threads(s, e);
        if (r < 0)
            return r;
    }
    if (s->next_number > MS_S3_MAX_PARTS)
        return ms_error_set(e, EFBIG, "%s is larger than S3's limit of 5 TiB per object",
                            s->what_part);
    S3Part *p = calloc(1, sizeof(*p));
    if (!p)
        return ms_error_set(e, ENOMEM, "out of memory");
    *p = (S3Part){.number = s->next_number++, .buf = TAKE_PTR(s->cur), .len = s->cur_len};
    s->cur_len = s->cur_cap = 0;

    pthread_mutex_lock(&s->lock);
    while (s->in_flight >= s->n_threads && !ms_error_is_set(&s->error))
        pthread_cond_wait(&s->cond, &s->lock);
    if (ms_error_is_set(&s->error)) {
        pthread_mutex_unlock(&s->lock);
        part_free(p);
        return sink_error(s, e);
    }
    if (s->queue_tail)
        s->queue_tail->next = p;
    else
        s->queue_head = p;
    s->queue_tail = p;
    s->in_flight++;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    s->cur_part_size = ms_s3_part_size(s->st->loc.part_size, s->next_number);
    return 0;
}

static int sink_check_usable(S3Sink *s, MsError *e) {
    if (s->committed)
        return ms_error_set(e, EINVAL, "%s was already finished", s->what_part);
    return sink_error(s, e);
}

static int s3_sink_write(MsSink *sink, const void *buf, size_t len, MsError *e) {
    S3Sink *s = (S3Sink *) sink;
    int r = sink_check_usable(s, e);
    if (r < 0)
        return r;
    const uint8_t *p = buf;
    while (len > 0) {
        if (s->cur_len == s->cur_part_size) {
            r = sink_submit_part(s, e);
            if (r < 0)
                return r;
        }
        if (s->cur_len == s->cur_cap) {
            /* The first part grows from a small buffer; later ones are allocated whole. */
            size_t cap = s->next_number == 1 && s->cur_cap < s->cur_part_size
                             ? MS_MAX((size_t) FIRST_BUFFER_SIZE, s->cur_cap * 2)
                             : (size_t) s->cur_part_size;
            cap = MS_MIN(cap, (size_t) s->cur_part_size);
            uint8_t *n = realloc(s->cur, cap);
            if (!n)
                return ms_error_set(e, ENOMEM, "out of memory for a %zu-byte upload buffer", cap);
            s->cur = n;
            s->cur_cap = cap;
        }
        size_t n = MS_MIN(len, s->cur_cap - s->cur_len);
        memcpy(s->cur + s->cur_len, p, n);
        s->cur_len += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int put_single(S3Sink *s, MsError *e) {
    char md5[MD5_BASE64_LEN], sha[MS_S3_SHA256_HEX_LEN + 1];
    const void *body = s->cur ? (const void *) s->cur : "";
    body_digests(body, s->cur_len, md5, sha, NULL);
    MsS3Param h[4];
    size_t n_h = 0;
    h[n_h++] = (MsS3Param){"content-md5", md5};
    h[n_h++] = (MsS3Param){"content-type", CONTENT_TYPE_OCTET};
    sse_headers(&s->st->loc, h, &n_h);
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot write %s", s->what_part);
    MsS3Request rq = {
        .method = "PUT",
        .full_key = s->full_key,
        .headers = h,
        .n_headers = n_h,
        .body = body,
        .body_len = s->cur_len,
        .payload_hash = sha,
        .what = what,
    };
    int r = ms_s3_http_perform(s->http, &rq, NULL, e);
    return r;
}

/* CompleteMultipartUpload said NoSuchUpload: accept the object only if it is there with the
 * multipart ETag of exactly our parts (an earlier attempt completed it and its answer was
 * lost); anything else is a failure, never a silently different object. */
static int check_completed_object(S3Sink *s, unsigned n_parts, unsigned attempts, MsError *e) {
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot complete the upload of %s", s->what_part);
    if (s->st->loc.sse == MS_S3_SSE_KMS)
        return ms_error_set(e, EIO,
                            "%s: the endpoint no longer knows the upload (NoSuchUpload) after %u "
                            "attempts, and with SSE-KMS the object's ETag cannot tell whether "
                            "an earlier attempt completed it; the snapshot is not complete",
                            what, attempts);
    char want[MS_S3_ETAG_MAX];
    if (n_parts == 0 || n_parts > s->etags_cap || ms_s3_multipart_etag(s->md5s, n_parts, want) < 0)
        return ms_error_set(e, EPROTO, "%s: a part's checksum is missing", what);
    MsS3Request rq = {.method = "HEAD", .full_key = s->full_key, .what = what};
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = ms_s3_http_perform(s->http, &rq, &resp, &le);
    long status = resp.status;
    _cleanup_free_ char *etag = resp.etag ? strdup(resp.etag) : NULL;
    ms_s3_response_done(&resp);
    if (r < 0 && status == 404)
        return ms_error_set(e, EIO,
                            "%s: the endpoint no longer knows the upload (NoSuchUpload) and no "
                            "object was made of it; was it aborted meanwhile (a clean-up of "
                            "stale uploads, a lifecycle rule)?",
                            what);
    if (r < 0)
        return ms_error_set(e, le.code,
                            "%s: the endpoint no longer knows the upload (NoSuchUpload), and "
                            "checking the object failed: %s",
                            what, le.message);
    if (!ms_s3_etag_equal(etag, want))
        return ms_error_set(e, EIO,
                            "%s: the endpoint no longer knows the upload (NoSuchUpload) and the "
                            "object there has ETag %s, not %s (the one of the %u parts sent): "
                            "another writer replaced it?",
                            what, etag ? etag : "(none)", want, n_parts);
    log_info("the upload of %s was completed by an earlier attempt whose answer was lost; the "
             "object's ETag %s matches its %u parts",
             s->what_part, want, n_parts);
    return 0;
}

static int complete_multipart(S3Sink *s, unsigned n_parts, MsError *e) {
    char *xml = NULL;
    size_t xml_len = 0;
    FILE *f = open_memstream(&xml, &xml_len);
    if (!f)
        return ms_error_set(e, ENOMEM, "out of memory");
    fputs("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">", f);
    bool missing = false;
    for (unsigned i = 0; i < n_parts; i++) {
        if (i >= s->etags_cap || !s->etags[i]) {
            missing = true;
            break;
        }
        _cleanup_free_ char *etag = ms_s3_xml_escape(s->etags[i]);
        if (!etag) {
            missing = true;
            break;
        }
        fprintf(f, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1, etag);
    }
    fputs("</CompleteMultipartUpload>", f);
    if (fclose(f) != 0 || missing) {
        free(xml);
        return ms_error_set(e, missing ? EPROTO : ENOMEM,
                            "cannot complete %s: a part's ETag is missing", s->what_part);
    }
    MsS3Param q[] = {{"uploadId", s->upload_id}};
    MsS3Param h[] = {{"content-type", CONTENT_TYPE_XML}};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot complete the upload of %s", s->what_part);
    MsS3Request rq = {
        .method = "POST",
        .full_key = s->full_key,
        .query = q,
        .n_query = ELEMENTSOF(q),
        .headers = h,
        .n_headers = ELEMENTSOF(h),
        .body = xml,
        .body_len = xml_len,
        .error_in_ok_body = true,
        .what = what,
    };
    log_debug("completing the multipart upload of %s (%u parts)", s->what_part, n_parts);
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = ms_s3_http_perform(s->http, &rq, &resp, &le);
    free(xml);
    bool no_such_upload = r < 0 && resp.status == 404 && resp.error_code &&
                          strcmp(resp.error_code, "NoSuchUpload") == 0;
    unsigned attempts = resp.attempts;
    ms_s3_response_done(&resp);
    if (r >= 0)
        return 0;
    if (!no_such_upload)
        return ms_error_set(e, le.code, "%s", le.message);
    /* S3 no longer knows the upload. After a retry that is what an earlier attempt's lost
     * success looks like: the object is then there, with the ETag its parts determine. */
    return check_completed_object(s, n_parts, attempts, e);
}

static int s3_sink_finish(MsSink *sink, MsError *e) {
    S3Sink *s = (S3Sink *) sink;
    if (s->committed)
        return 0;
    int r = sink_error(s, e);
    if (r < 0)
        return r;
    if (!s->upload_id) {
        r = put_single(s, e);
        if (r < 0)
            return r;
        s->committed = true;
        return 0;
    }
    if (s->cur_len > 0) {
        r = sink_submit_part(s, e);
        if (r < 0)
            return r;
    }
    unsigned n_parts = s->next_number - 1;
    sink_stop_threads(s, false);
    r = sink_error(s, e);
    if (r < 0)
        return r;
    r = complete_multipart(s, n_parts, e);
    if (r < 0)
        return r;
    s->committed = true;
    return 0;
}

static void abort_multipart(S3Sink *s) {
    log_debug("aborting the multipart upload of %s", s->what_part);
    MsS3Param q[] = {{"uploadId", s->upload_id}};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot abort the unfinished upload of %s", s->what_part);
    MsS3Request rq = {
        .method = "DELETE",
        .full_key = s->full_key,
        .query = q,
        .n_query = ELEMENTSOF(q),
        .what = what,
    };
    MsError e = MS_ERROR_INIT;
    MsS3Response resp;
    int r = ms_s3_http_perform(s->http, &rq, &resp, &e);
    /* NoSuchUpload: already gone, which is what we wanted. */
    if (r < 0 && resp.status != 404)
        log_warning("%s; the next clean-up of stale uploads will remove it", e.message);
    ms_s3_response_done(&resp);
}

static void s3_sink_free(MsSink *sink) {
    S3Sink *s = (S3Sink *) sink;
    sink_stop_threads(s, !s->committed);
    if (s->upload_id && !s->committed && s->http)
        abort_multipart(s);
    free(s->cur);
    for (size_t i = 0; i < s->etags_cap; i++)
        free(s->etags[i]);
    free(s->etags);
    free(s->md5s);
    free(s->upload_id);
    ms_s3_http_free(s->http);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->key);
    free(s->full_key);
    free(s);
}

static int s3_open_write(MsStorage *storage, const char *key, MsSink **ret, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    if (!ms_storage_key_is_valid(key))
        return invalid_key(st, "object key", key, e);
    S3Sink *s = calloc(1, sizeof(*s));
    if (!s)
        return ms_error_set(e, ENOMEM, "out of memory");
    s->base = (MsSink){s3_sink_write, s3_sink_finish, s3_sink_free};
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->st = st;
    s->next_number = 1;
    s->cur_part_size = ms_s3_part_size(st->loc.part_size, 1);
    _cleanup_(ms_sink_freep) MsSink *sink = &s->base;
    s->key = strdup(key);
    s->full_key = ms_s3_location_full_key(&st->loc, key);
    if (!s->key || !s->full_key)
        return ms_error_set(e, ENOMEM, "out of memory");
    snprintf(s->what_part, sizeof(s->what_part), "object '%s' in store '%s'", key,
             st->loc.description);
    int r = ms_s3_http_new(&st->loc, &st->cred, &s->http, e);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(sink);
    return 0;
}

/* ---- reading ---- */

/* Reading: open() fetches the first chunk itself (a missing object is reported by open, and
 * the answer gives the object's size and ETag). An object of more than one chunk is then
 * fetched by min(parallel, chunks left) fetcher threads, each with its own connection (the
 * first takes over open()'s kept-alive one), as fixed-size ranged GETs that ask for the ETag
 * seen first (If-Match), so an object replaced mid-read fails instead of yielding a mix of
 * two objects. Chunk k lands in slot k % (parallel + 1) of a ring; a fetcher takes chunk k
 * only when the reader is at most parallel chunks behind it, so memory stays at chunk x
 * (parallel + 1) and read() hands the bytes out strictly in order. The first failure of any
 * fetcher stops the others and is what read() returns from then on; free() cancels the
 * transfers in flight and joins the fetchers, so a reader may stop early. */

/* The chunk size of readers opened from now on; only tests change it. */
static size_t read_chunk = MS_S3_READ_CHUNK;

void ms_s3_set_read_chunk_for_tests(size_t bytes) {
    read_chunk = bytes > 0 ? bytes : MS_S3_READ_CHUNK;
}

typedef struct S3Slot {
    uint8_t *buf; /* chunk bytes; allocated on first use, then reused */
    size_t len;
    bool ready; /* holds the chunk the reader will want next from this slot */
} S3Slot;

typedef struct S3Source {
    MsSource base;
    S3Storage *st;
    char *full_key;
    char what[WHAT_MAX];
    MsS3Http *http; /* open()'s connection, until the first fetcher takes it over */
    size_t chunk;
    uint64_t size;
    uint64_t n_chunks;
    char *etag;

    /* The reader's side: the chunk it is on (a ready slot's bytes) and how far it got. */
    const uint8_t *cur;
    size_t cur_len, cur_pos;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    S3Slot *slots;
    unsigned n_slots;    /* parallel + 1 */
    uint64_t read_index; /* the chunk the reader is on or waits for */
    uint64_t next_fetch; /* the next chunk a fetcher takes */
    unsigned n_threads;
    pthread_t threads[MS_S3_MAX_PARALLEL];
    bool stopping;
    MsError error; /* the first failure of any fetcher; sticky */
    volatile int abort;
} S3Source;

/* Where a range's bytes go. */
typedef struct S3Fill {
    const char *what;
    uint8_t *buf;
    size_t len, cap;
} S3Fill;

static int source_on_data(void *userdata, const void *data, size_t len, MsError *e) {
    S3Fill *f = userdata;
    if (len > f->cap - f->len)
        return ms_error_set(e, EPROTO, "%s: the S3 endpoint sent more bytes than asked for",
                            f->what);
    memcpy(f->buf + f->len, data, len);
    f->len += len;
    return 0;
}

static int no_object_error(S3Storage *st, const char *key, MsError *e) {
    return ms_error_set(e, ENOENT,
                        "no object '%s' in store '%s'; check the key, or whether the backup was "
                        "removed by retention",
                        key, st->loc.description);
}

static int slot_buffer(S3Source *s, S3Slot *slot, MsError *e) {
    if (!slot->buf && !(slot->buf = malloc(s->chunk)))
        return ms_error_set(e, ENOMEM, "out of memory for a %zu-byte read buffer", s->chunk);
    return 0;
}

/* The first chunk, into slot 0, on open()'s connection: learns the size and the ETag. */
static int source_fetch_first(S3Source *s, const char *key, MsError *e) {
    S3Slot *slot = &s->slots[0];
    int r = slot_buffer(s, slot, e);
    if (r < 0)
        return r;
    S3Fill f = {.what = s->what, .buf = slot->buf, .cap = s->chunk};
    MsS3Request rq = {
        .method = "GET",
        .full_key = s->full_key,
        .on_data = source_on_data,
        .userdata = &f,
        .has_range = true,
        .range_first = 0,
        .range_last = s->chunk - 1,
        .cancel = &s->abort,
        .what = s->what,
    };
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    r = ms_s3_http_perform(s->http, &rq, &resp, &le);
    if (r < 0) {
        long status = resp.status;
        bool other_404 = resp.error_code && strcmp(resp.error_code, "NoSuchKey") != 0;
        ms_s3_response_done(&resp);
        if (status == 404 && !other_404)
            return no_object_error(s->st, key, e);
        if (status == 416) {
            /* A zero-byte object has no byte 0 to range over. */
            s->size = s->n_chunks = 0;
            s->etag = strdup("");
            return s->etag ? 0 : ms_error_set(e, ENOMEM, "out of memory");
        }
        return ms_error_set(e, le.code, "%s", le.message);
    }
    if (resp.has_total_size)
        s->size = resp.total_size;
    else if (resp.status == 200)
        s->size = f.len; /* the whole object came (Range ignored on offset 0) */
    else {
        ms_s3_response_done(&resp);
        return ms_error_set(e, EPROTO, "%s: the S3 endpoint's answer has no Content-Range",
                            s->what);
    }
    s->etag = strdup(resp.etag ? resp.etag : "");
    ms_s3_response_done(&resp);
    if (!s->etag)
        return ms_error_set(e, ENOMEM, "out of memory");
    uint64_t want = MS_MIN((uint64_t) s->chunk, s->size);
    if (f.len != want)
        return ms_error_set(e, EPIPE, "%s: got %zu bytes at offset 0 instead of %" PRIu64, s->what,
                            f.len, want);
    slot->len = f.len;
    slot->ready = true;
    s->n_chunks = s->size / s->chunk + (s->size % s->chunk ? 1 : 0);
    s->read_index = 0;
    s->next_fetch = 1;
    return 0;
}

/* Chunk index into its slot, asking for the first answer's ETag. */
static int source_fetch_chunk(S3Source *s, MsS3Http *http, uint64_t index, S3Slot *slot,
                              MsError *e) {
    int r = slot_buffer(s, slot, e);
    if (r < 0)
        return r;
    uint64_t first = index * s->chunk;
    uint64_t want = MS_MIN((uint64_t) s->chunk, s->size - first);
    S3Fill f = {.what = s->what, .buf = slot->buf, .cap = (size_t) want};
    MsS3Param h[] = {{"if-match", s->etag}};
    MsS3Request rq = {
        .method = "GET",
        .full_key = s->full_key,
        .headers = h,
        .n_headers = ELEMENTSOF(h),
        .on_data = source_on_data,
        .userdata = &f,
        .has_range = true,
        .range_first = first,
        .range_last = first + want - 1,
        .cancel = &s->abort,
        .what = s->what,
    };
    MsS3Response resp;
    r = ms_s3_http_perform(http, &rq, &resp, e);
    ms_s3_response_done(&resp);
    if (r < 0)
        return r;
    if (f.len != want)
        return ms_error_set(e, EPIPE, "%s: got %zu bytes at offset %" PRIu64 " instead of %" PRIu64,
                            s->what, f.len, first, want);
    slot->len = f.len;
    return 0;
}

/* Record a fetcher's failure (the first one wins) and stop the other fetchers' transfers.
 * Called with the lock held. */
static void source_fail(S3Source *s, const MsError *fe) {
    if (!ms_error_is_set(&s->error) && !s->stopping) {
        s->error = *fe;
        s->abort = 1;
    }
    pthread_cond_broadcast(&s->cond);
}

static void *fetch_thread(void *userdata) {
    S3Source *s = userdata;
    MsError e = MS_ERROR_INIT;
    pthread_mutex_lock(&s->lock);
    _cleanup_(ms_s3_http_freep) MsS3Http *http = TAKE_PTR(s->http);
    pthread_mutex_unlock(&s->lock);
    int init = http ? 0 : ms_s3_http_new(&s->st->loc, &s->st->cred, &http, &e);

    pthread_mutex_lock(&s->lock);
    if (init < 0)
        source_fail(s, &e);
    for (;;) {
        /* Chunk next_fetch goes into the slot of chunk next_fetch - n_slots: wait until the
         * reader is past that one. */
        while (!s->stopping && !ms_error_is_set(&s->error) && s->next_fetch < s->n_chunks &&
               s->next_fetch >= s->read_index + s->n_slots)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->stopping || ms_error_is_set(&s->error) || s->next_fetch >= s->n_chunks)
            break;
        uint64_t index = s->next_fetch++;
        S3Slot *slot = &s->slots[index % s->n_slots];
        pthread_mutex_unlock(&s->lock);

        MsError fe = MS_ERROR_INIT;
        int r = source_fetch_chunk(s, http, index, slot, &fe);

        pthread_mutex_lock(&s->lock);
        if (r < 0) {
            source_fail(s, &fe);
            break;
        }
        slot->ready = true;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int source_start_threads(S3Source *s, MsError *e) {
    uint64_t left = s->n_chunks - 1;
    unsigned want = (unsigned) MS_MIN((uint64_t) s->n_slots - 1, left);
    for (unsigned i = 0; i < want; i++) {
        int r = pthread_create(&s->threads[i], NULL, fetch_thread, s);
        if (r != 0) {
            if (s->n_threads > 0)
                break; /* fewer fetchers: slower, still correct */
            return ms_error_set(e, r, "cannot start a download thread: %s", strerror(r));
        }
        s->n_threads++;
    }
    return 0;
}

static void source_stop_threads(S3Source *s) {
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    s->abort = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
}

static ssize_t s3_source_read(MsSource *src, void *buf, size_t len, MsError *e) {
    S3Source *s = (S3Source *) src;
    while (s->cur_pos == s->cur_len) {
        pthread_mutex_lock(&s->lock);
        if (s->cur) {
            /* Done with this chunk: its slot is free for the chunk n_slots further on. */
            s->slots[s->read_index % s->n_slots].ready = false;
            s->read_index++;
            s->cur = NULL;
            s->cur_len = s->cur_pos = 0;
            pthread_cond_broadcast(&s->cond);
        }
        if (s->read_index >= s->n_chunks) {
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        S3Slot *slot = &s->slots[s->read_index % s->n_slots];
        while (!slot->ready && !ms_error_is_set(&s->error))
            pthread_cond_wait(&s->cond, &s->lock);
        if (ms_error_is_set(&s->error)) {
            int r = ms_error_set(e, s->error.code, "%s", s->error.message);
            pthread_mutex_unlock(&s->lock);
            return r;
        }
        s->cur = slot->buf;
        s->cur_len = slot->len;
        pthread_mutex_unlock(&s->lock);
    }
    size_t n = MS_MIN(len, s->cur_len - s->cur_pos);
    memcpy(buf, s->cur + s->cur_pos, n);
    s->cur_pos += n;
    return (ssize_t) n;
}

static void s3_source_free(MsSource *src) {
    S3Source *s = (S3Source *) src;
    source_stop_threads(s);
    for (unsigned i = 0; s->slots && i < s->n_slots; i++)
        free(s->slots[i].buf);
    free(s->slots);
    ms_s3_http_free(s->http);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->full_key);
    free(s->etag);
    free(s);
}

static int s3_open_read(MsStorage *storage, const char *key, MsSource **ret, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    if (!ms_storage_key_is_valid(key))
        return invalid_key(st, "object key", key, e);
    S3Source *s = calloc(1, sizeof(*s));
    if (!s)
        return ms_error_set(e, ENOMEM, "out of memory");
    s->base = (MsSource){s3_source_read, s3_source_free};
    s->st = st;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    _cleanup_(ms_source_freep) MsSource *src = &s->base;
    s->chunk = read_chunk;
    s->n_slots = MS_MIN(st->loc.parallel, MS_S3_MAX_PARALLEL) + 1;
    s->full_key = ms_s3_location_full_key(&st->loc, key);
    s->slots = calloc(s->n_slots, sizeof(*s->slots));
    if (!s->full_key || !s->slots)
        return ms_error_set(e, ENOMEM, "out of memory");
    snprintf(s->what, sizeof(s->what), "cannot read object '%s' in store '%s'", key,
             st->loc.description);
    int r = ms_s3_http_new(&st->loc, &st->cred, &s->http, e);
    if (r < 0)
        return r;
    /* The first chunk now: a missing object is reported by open, as the interface says. */
    r = source_fetch_first(s, key, e);
    if (r < 0)
        return r;
    /* An object of one chunk is all in slot 0: no fetchers. */
    if (s->n_chunks > 1) {
        r = source_start_threads(s, e);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(src);
    return 0;
}

/* ---- the rest of the interface ---- */

static int storage_perform(S3Storage *st, const MsS3Request *rq, MsS3Response *resp, MsError *e) {
    pthread_mutex_lock(&st->lock);
    int r = ms_s3_http_perform(st->http, rq, resp, e);
    pthread_mutex_unlock(&st->lock);
    return r;
}

/* HEAD answers have no body, so a 404 does not say whether the key or the bucket is
 * missing; ask about the bucket to tell which. */
static int bucket_missing_error(S3Storage *st, const char *what, MsError *e) {
    MsS3Request rq = {.method = "HEAD", .what = what};
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = storage_perform(st, &rq, &resp, &le);
    long status = resp.status;
    ms_s3_response_done(&resp);
    if (r < 0 && status == 404)
        return ms_error_set(e, ENOENT,
                            "%s: bucket '%s' does not exist at the endpoint of %s; create it or "
                            "fix the bucket name in the store location",
                            what, st->loc.bucket, st->loc.description);
    if (r < 0 && status != 404)
        return ms_error_set(e, le.code, "%s", le.message);
    return 0;
}

static int s3_stat(MsStorage *storage, const char *key, MsStorageObject *ret, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    _cleanup_free_ char *full_key = NULL;
    int k = object_full_key(st, key, &full_key, e);
    if (k < 0)
        return k;
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot look up object '%s' in store '%s'", key,
             st->loc.description);
    MsS3Request rq = {.method = "HEAD", .full_key = full_key, .what = what};
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = storage_perform(st, &rq, &resp, &le);
    long status = resp.status;
    uint64_t size = resp.content_length;
    int64_t mtime = resp.last_modified_usec;
    ms_s3_response_done(&resp);
    if (r < 0 && status == 404) {
        r = bucket_missing_error(st, what, e);
        return r < 0 ? r : no_object_error(st, key, e);
    }
    if (r < 0)
        return ms_error_set(e, le.code, "%s", le.message);
    char *copy = strdup(key);
    if (!copy)
        return ms_error_set(e, ENOMEM, "out of memory");
    *ret = (MsStorageObject){.key = copy, .size = size, .mtime_usec = mtime < 0 ? 0 : mtime};
    return 0;
}

static int s3_remove(MsStorage *storage, const char *key, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    _cleanup_free_ char *full_key = NULL;
    int k = object_full_key(st, key, &full_key, e);
    if (k < 0)
        return k;
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot remove object '%s' from store '%s'", key,
             st->loc.description);
    MsS3Request rq = {.method = "DELETE", .full_key = full_key, .what = what};
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = storage_perform(st, &rq, &resp, &le);
    bool missing_key =
        resp.status == 404 && !(resp.error_code && strcmp(resp.error_code, "NoSuchBucket") == 0);
    ms_s3_response_done(&resp);
    if (r < 0 && !missing_key)
        return ms_error_set(e, le.code, "%s", le.message);
    return 0;
}

/* The store prefix joined with a caller's key prefix: "" + "a/" = "a/", "p" + "a/" = "p/a/". */
static char *full_prefix(const MsS3Location *loc, const char *prefix) {
    char *s = NULL;
    if (asprintf(&s, "%s%s%s", loc->prefix, *loc->prefix ? "/" : "", prefix ? prefix : "") < 0)
        return NULL;
    return s;
}

static int64_t parse_list_time(const char *s) {
    struct tm tm = {0};
    const char *end = strptime(s, LIST_TIME_FORMAT, &tm);
    if (!end)
        return 0;
    return (int64_t) timegm(&tm) * (int64_t) USEC_PER_SEC;
}

static int object_key_cmp(const void *a, const void *b) {
    return strcmp(((const MsStorageObject *) a)->key, ((const MsStorageObject *) b)->key);
}

typedef struct ObjectList {
    MsStorageObject *objs;
    size_t n, cap;
} ObjectList;

static int list_add(ObjectList *l, char *key, uint64_t size, int64_t mtime) {
    if (l->n == l->cap) {
        size_t cap = MS_MAX(l->cap * 2, (size_t) 64);
        MsStorageObject *n = reallocarray(l->objs, cap, sizeof(*n));
        if (!n)
            return -ENOMEM;
        l->objs = n;
        l->cap = cap;
    }
    l->objs[l->n++] = (MsStorageObject){.key = key, .size = size, .mtime_usec = mtime};
    return 0;
}

/* One page of ListObjectsV2: add its objects, return the continuation token (NULL at the
 * end) through ret_next. */
static int list_page(S3Storage *st, const char *fprefix, const char *token, ObjectList *l,
                     char **ret_next, MsError *e) {
    MsS3Param q[3];
    size_t n_q = 0;
    q[n_q++] = (MsS3Param){"list-type", "2"};
    q[n_q++] = (MsS3Param){"prefix", fprefix};
    if (token)
        q[n_q++] = (MsS3Param){"continuation-token", token};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot list the objects of store '%s'", st->loc.description);
    MsS3Request rq = {.method = "GET", .query = q, .n_query = n_q, .what = what};
    MsS3Response resp;
    int r = storage_perform(st, &rq, &resp, e);
    if (r < 0) {
        ms_s3_response_done(&resp);
        return r;
    }
    const char *body = resp.body ? resp.body : "";
    const char *end = body + resp.body_len, *pos = body, *inner;
    size_t inner_len, skip = strlen(st->loc.prefix) + (*st->loc.prefix ? 1 : 0);
    while (r >= 0 && ms_s3_xml_next(&pos, end, "Contents", &inner, &inner_len)) {
        _cleanup_free_ char *key = NULL, *size = NULL, *mtime = NULL;
        if (ms_s3_xml_text(inner, inner_len, "Key", &key) < 0 ||
            ms_s3_xml_text(inner, inner_len, "Size", &size) < 0) {
            r = ms_error_set(e, EPROTO, "%s: malformed listing (an entry without Key or Size)",
                             what);
            break;
        }
        (void) ms_s3_xml_text(inner, inner_len, "LastModified", &mtime);
        /* Keys outside our prefix or that are no valid keys were not written by us. */
        if (strlen(key) <= skip || strncmp(key, fprefix, strlen(fprefix)) != 0 ||
            !ms_storage_key_is_valid(key + skip))
            continue;
        char *k = strdup(key + skip);
        if (!k ||
            list_add(l, k, strtoull(size, NULL, 10), mtime ? parse_list_time(mtime) : 0) < 0) {
            free(k);
            r = ms_error_set(e, ENOMEM, "out of memory");
        }
    }
    _cleanup_free_ char *truncated = NULL;
    *ret_next = NULL;
    if (r >= 0 && ms_s3_xml_text(body, resp.body_len, "IsTruncated", &truncated) >= 0 &&
        strcmp(truncated, "true") == 0 &&
        ms_s3_xml_text(body, resp.body_len, "NextContinuationToken", ret_next) < 0)
        r = ms_error_set(e, EPROTO, "%s: a truncated listing without a continuation token", what);
    ms_s3_response_done(&resp);
    return r;
}

static int s3_list(MsStorage *storage, const char *prefix, MsStorageObject **ret, size_t *ret_n,
                   MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    if (prefix && prefix[0] == '/')
        return invalid_key(st, "key prefix", prefix, e);
    _cleanup_free_ char *fprefix = full_prefix(&st->loc, prefix);
    if (!fprefix)
        return ms_error_set(e, ENOMEM, "out of memory");
    ObjectList l = {0};
    _cleanup_free_ char *token = NULL;
    int r;
    do {
        char *next = NULL;
        r = list_page(st, fprefix, token, &l, &next, e);
        free(token);
        token = next;
    } while (r >= 0 && token);
    if (r < 0) {
        ms_storage_objects_free(l.objs, l.n);
        return r;
    }
    /* S3 lists in UTF-8 byte order already; sorting again costs nothing and does not rely
     * on every S3-compatible server doing so. */
    if (l.n > 1)
        qsort(l.objs, l.n, sizeof(*l.objs), object_key_cmp);
    *ret = l.objs;
    *ret_n = l.n;
    return 0;
}

static int abort_upload(S3Storage *st, const char *full_key, const char *upload_id, MsError *e) {
    MsS3Param q[] = {{"uploadId", upload_id}};
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot abort the stale upload of '%s' in bucket '%s'", full_key,
             st->loc.bucket);
    MsS3Request rq = {.method = "DELETE",
                      .full_key = full_key,
                      .query = q,
                      .n_query = ELEMENTSOF(q),
                      .what = what};
    MsS3Response resp;
    MsError le = MS_ERROR_INIT;
    int r = storage_perform(st, &rq, &resp, &le);
    long status = resp.status;
    ms_s3_response_done(&resp);
    if (r < 0 && status == 404)
        return 0; /* gone meanwhile */
    if (r < 0)
        return ms_error_set(e, le.code, "%s", le.message);
    return 1;
}

static int s3_clean_stale(MsStorage *storage, const char *prefix, const char *except,
                          unsigned *ret_removed, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    unsigned removed = 0;
    if (prefix && prefix[0] == '/')
        return invalid_key(st, "key prefix", prefix, e);
    _cleanup_free_ char *fprefix = full_prefix(&st->loc, prefix);
    _cleanup_free_ char *fexcept = except ? full_prefix(&st->loc, except) : NULL;
    if (!fprefix || (except && !fexcept))
        return ms_error_set(e, ENOMEM, "out of memory");
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "cannot list the unfinished uploads of store '%s'",
             st->loc.description);
    _cleanup_free_ char *key_marker = NULL, *id_marker = NULL;
    int r = 0;
    for (;;) {
        MsS3Param q[4];
        size_t n_q = 0;
        /* No prefix= here: MinIO lists uploads only for a prefix that is a whole object
         * name, so the bucket's uploads are listed and filtered here (uploads are few and
         * short-lived, so the list stays short). */
        q[n_q++] = (MsS3Param){"uploads", ""};
        if (key_marker)
            q[n_q++] = (MsS3Param){"key-marker", key_marker};
        if (id_marker)
            q[n_q++] = (MsS3Param){"upload-id-marker", id_marker};
        MsS3Request rq = {.method = "GET", .query = q, .n_query = n_q, .what = what};
        MsS3Response resp;
        r = storage_perform(st, &rq, &resp, e);
        if (r < 0) {
            ms_s3_response_done(&resp);
            break;
        }
        const char *body = resp.body ? resp.body : "";
        const char *end = body + resp.body_len, *pos = body, *inner;
        size_t inner_len;
        while (r >= 0 && ms_s3_xml_next(&pos, end, "Upload", &inner, &inner_len)) {
            _cleanup_free_ char *key = NULL, *id = NULL;
            if (ms_s3_xml_text(inner, inner_len, "Key", &key) < 0 ||
                ms_s3_xml_text(inner, inner_len, "UploadId", &id) < 0) {
                r = ms_error_set(e, EPROTO,
                                 "%s: malformed answer (an upload without Key or "
                                 "UploadId)",
                                 what);
                break;
            }
            if (strncmp(key, fprefix, strlen(fprefix)) != 0 ||
                (fexcept && strncmp(key, fexcept, strlen(fexcept)) == 0))
                continue;
            int a = abort_upload(st, key, id, e);
            if (a < 0)
                r = a;
            else
                removed += (unsigned) a;
        }
        _cleanup_free_ char *truncated = NULL;
        bool more = r >= 0 && ms_s3_xml_text(body, resp.body_len, "IsTruncated", &truncated) >= 0 &&
                    strcmp(truncated, "true") == 0;
        free(key_marker);
        free(id_marker);
        key_marker = id_marker = NULL;
        if (more && (ms_s3_xml_text(body, resp.body_len, "NextKeyMarker", &key_marker) < 0 ||
                     ms_s3_xml_text(body, resp.body_len, "NextUploadIdMarker", &id_marker) < 0)) {
            r = ms_error_set(e, EPROTO, "%s: a truncated answer without markers", what);
            more = false;
        }
        ms_s3_response_done(&resp);
        if (!more)
            break;
    }
    if (ret_removed)
        *ret_removed = removed;
    return r;
}

static const char *s3_describe(MsStorage *storage) {
    return ((S3Storage *) storage)->loc.description;
}

int ms_s3_presign_get(MsStorage *storage, const char *key, uint64_t expires_seconds, char **ret_url,
                      MsError *e) {
    if (!storage || storage->ops != &s3_ops)
        return ms_error_set(e, EOPNOTSUPP, "not an S3 store: no presigned URLs");
    S3Storage *st = (S3Storage *) storage;
    if (!ms_storage_key_is_valid(key))
        return invalid_key(st, "object key", key, e);
    if (expires_seconds == 0 || expires_seconds > MS_S3_PRESIGN_MAX_SECONDS)
        return ms_error_set(e, EINVAL,
                            "a download URL's lifetime must be between 1 second and 7 days "
                            "(SigV4's limit), not %" PRIu64 " seconds",
                            expires_seconds);
    _cleanup_free_ char *full_key = ms_s3_location_full_key(&st->loc, key);
    if (!full_key)
        return ms_error_set(e, ENOMEM, "out of memory");
    MsS3Target t;
    if (ms_s3_location_target(&st->loc, full_key, &t) < 0)
        return ms_error_set(e, ENOMEM, "out of memory");
    MsS3Signer signer = {st->cred.access_key_id, st->cred.secret_access_key, st->cred.session_token,
                         st->loc.region};
    int r = ms_s3_presign(&signer, "GET", t.base_url, t.host, t.canonical_uri, (int64_t) time(NULL),
                          expires_seconds, ret_url);
    ms_s3_target_done(&t);
    if (r < 0)
        return ms_error_set(e, -r, "cannot presign a URL for object '%s': %s", key, strerror(-r));
    return 0;
}

static int s3_download_url(MsStorage *storage, const char *key, uint64_t expires_usec,
                           char **ret_url, MsError *e) {
    S3Storage *st = (S3Storage *) storage;
    /* Rounded up: a lifetime is a promise of at least that long. */
    uint64_t sec = expires_usec ? (expires_usec + USEC_PER_SEC - 1) / USEC_PER_SEC
                                : st->loc.presign_expires_sec;
    return ms_s3_presign_get(storage, key, sec, ret_url, e);
}

static void s3_free(MsStorage *storage) {
    S3Storage *st = (S3Storage *) storage;
    ms_s3_http_free(st->http);
    pthread_mutex_destroy(&st->lock);
    ms_s3_credentials_done(&st->cred);
    ms_s3_location_done(&st->loc);
    free(st);
}

static const MsStorageOps s3_ops = {
    .name = "s3",
    .open_write = s3_open_write,
    .open_read = s3_open_read,
    .stat = s3_stat,
    .remove = s3_remove,
    .list = s3_list,
    .clean_stale = s3_clean_stale,
    .describe = s3_describe,
    .free = s3_free,
    .download_url = s3_download_url,
};

int ms_storage_s3_new(const char *location, MsStorage **ret, MsError *e) {
    S3Storage *st = calloc(1, sizeof(*st));
    if (!st)
        return ms_error_set(e, ENOMEM, "out of memory");
    st->base.ops = &s3_ops;
    pthread_mutex_init(&st->lock, NULL);
    _cleanup_(ms_storage_freep) MsStorage *s = &st->base;
    int r = ms_s3_location_parse(location, &st->loc, e);
    if (r < 0)
        return r;
    /* A CA file that cannot be opened is a mistake in the location: say so now, before a
     * snapshot has dumped anything, rather than as a TLS failure of the first request. */
    if (st->loc.ca_file) {
        FILE *f = fopen(st->loc.ca_file, "re");
        if (!f)
            return ms_error_set(e, EINVAL,
                                "store '%s': cannot open the CA file ca=%s: %s; give the path "
                                "of a readable PEM file of CA certificates",
                                st->loc.description, st->loc.ca_file, strerror(errno));
        fclose(f);
    }
    r = ms_s3_credentials_load(&st->cred, e);
    if (r < 0) {
        ms_error_prefix(e, "store '%s': ", st->loc.description);
        return r;
    }
    r = ms_s3_http_new(&st->loc, &st->cred, &st->http, e);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(s);
    return 0;
}

/* The S3 driver's handling of ca= and of SSE answers, without a real S3: a CA file that cannot
 * be opened is refused when the store is opened (before any request), and an endpoint that
 * cannot use the requested KMS key gets a message naming kms_key_id= (EINVAL, not "not
 * found"). A one-shot loopback HTTP server answers with canned S3 errors and records the
 * request, so the SSE headers of a single PUT are checked too. The same server checks the
 * reader's first range against answers MinIO does not give: a server that ignores Range,
 * a short or unlabelled 206, and a 416 for a zero-byte object. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/stream.h"
#include "storage/storage-s3.h"
#include "storage/storage.h"
#include "test.h"

#define KEY_ID "AKIDunitTLS7788"
#define SECRET "unit-Secret-9q8w7e"

typedef struct Canned {
    int listen_fd;
    unsigned short port;
    const char *answer; /* the whole HTTP response */
    char request[16384];
    pthread_t thread;
} Canned;

/* Read one request's head and its body (Content-Length), answer, close. */
static void *canned_serve(void *userdata) {
    Canned *c = userdata;
    int fd = accept(c->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, c->request + len, sizeof(c->request) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t) n;
        c->request[len] = '\0';
        char *end = strstr(c->request, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = strcasestr(c->request, "\ncontent-length:");
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        if (len >= (size_t) (end + 4 - c->request) + body)
            break;
    }
    ssize_t w = write(fd, c->answer, strlen(c->answer));
    (void) w;
    close(fd);
    return NULL;
}

static int canned_start(Canned *c, const char *answer) {
    memset(c, 0, sizeof(*c));
    c->answer = answer;
    c->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->listen_fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (bind(c->listen_fd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(c->listen_fd, 4) < 0 ||
        getsockname(c->listen_fd, (struct sockaddr *) &a, &alen) < 0)
        return -errno;
    c->port = ntohs(a.sin_port);
    return -pthread_create(&c->thread, NULL, canned_serve, c);
}

static void canned_stop(Canned *c) {
    shutdown(c->listen_fd, SHUT_RDWR);
    pthread_join(c->thread, NULL);
    close(c->listen_fd);
}

static void set_credentials(void) {
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_ACCESS_KEY_ID", KEY_ID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
}

static void test_missing_ca_file_refused_at_open(void) {
    set_credentials();
    MsStorage *st = NULL;
    MsError e = MS_ERROR_INIT;
    /* Port 1: nothing listens; the refusal must come before any connection. */
    int r = ms_storage_open("s3://bucket/p?endpoint=https://127.0.0.1:1&ca=/nonexistent/ca.pem",
                            &st, &e);
    ASSERT_EQ_INT(r, -EINVAL);
    ASSERT(st == NULL);
    ASSERT_CONTAINS(e.message, "cannot open the CA file ca=/nonexistent/ca.pem");
    ASSERT_CONTAINS(e.message, "No such file or directory");
    ASSERT(!strstr(e.message, KEY_ID) && !strstr(e.message, SECRET));
}

/* Write a small object (a single PUT) to a server that answers with answer; the error. */
static void put_against(const char *answer, const char *options, int want_r, const char *want_msg,
                        const char *want_header1, const char *want_header2) {
    set_credentials();
    Canned c;
    ASSERT_OK(canned_start(&c, answer));
    char loc[256];
    snprintf(loc, sizeof(loc), "s3://bucket/p?endpoint=http://127.0.0.1:%u&max_attempts=1%s",
             c.port, options);
    MsStorage *st = NULL;
    MsSink *sink = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_open(loc, &st, &e));
    ASSERT_OK(ms_storage_open_write(st, "obj", &sink, &e));
    ASSERT_OK(ms_sink_write(sink, "hello", 5, &e));
    int r = ms_sink_finish(sink, &e);
    ms_sink_free(sink);
    ms_storage_free(st);
    canned_stop(&c);
    ASSERT_EQ_INT(r, want_r);
    if (want_msg)
        ASSERT_CONTAINS(e.message, want_msg);
    ASSERT(!strstr(e.message, KEY_ID) && !strstr(e.message, SECRET));
    ASSERT_CONTAINS(c.request, "PUT /bucket/p/obj HTTP/1.1");
    if (want_header1)
        ASSERT_CONTAINS(c.request, want_header1);
    if (want_header2)
        ASSERT_CONTAINS(c.request, want_header2);
}

static char *error_answer(const char *status, const char *code, const char *message) {
    char body[512], *s = NULL;
    snprintf(body, sizeof(body),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s"
             "</Message><Key>p/obj</Key><BucketName>bucket</BucketName></Error>",
             code, message);
    if (asprintf(&s,
                 "HTTP/1.1 %s\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 status, strlen(body), body) < 0)
        return NULL;
    return s;
}

static void test_kms_key_errors_name_kms_key_id(void) {
    /* MinIO's answer for an unknown key of its KMS. */
    char *a =
        error_answer("404 Not Found", "kms:KeyNotFound", "key with given key ID does not exist");
    ASSERT(a != NULL);
    put_against(a, "&sse=aws:kms&kms_key_id=nokey", -EINVAL,
                "cannot encrypt with the KMS key nokey", "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id: nokey");
    free(a);
    /* AWS's for a key that is not there, without kms_key_id (the bucket's default key). */
    a = error_answer("400 Bad Request", "KMS.NotFoundException", "Invalid keyId");
    ASSERT(a != NULL);
    put_against(a, "&sse=aws:kms", -EINVAL, "cannot encrypt with the KMS key (the default key)",
                "x-amz-server-side-encryption: aws:kms", NULL);
    free(a);
}

static void test_sse_s3_single_put_headers(void) {
    put_against("HTTP/1.1 200 OK\r\nETag: \"5d41402abc4b2a76b9719d911017c592\"\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n",
                "&sse=AES256", 0, NULL, "x-amz-server-side-encryption: AES256",
                "content-md5: XUFAKrxLKna5cZ2REBfFkg==");
}

static void test_other_errors_unchanged(void) {
    /* A plain 404 that is no KMS error still reads "not found". */
    char *a = error_answer("404 Not Found", "NoSuchKey", "The specified key does not exist.");
    ASSERT(a != NULL);
    put_against(a, "", -ENOENT, "not found (HTTP 404 NoSuchKey", NULL, NULL);
    free(a);
}

/* Open a reader against a server that answers the first range with answer; then read it
 * all. want_open_r/want_msg: how open ends; want_data: what the reader gives when it opens. */
static void read_against(const char *answer, int want_open_r, const char *want_msg,
                         const char *want_data) {
    set_credentials();
    Canned c;
    ASSERT_OK(canned_start(&c, answer));
    char loc[256];
    snprintf(loc, sizeof(loc), "s3://bucket/p?endpoint=http://127.0.0.1:%u&max_attempts=1",
             c.port);
    MsStorage *st = NULL;
    MsSource *src = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_open(loc, &st, &e));
    int r = ms_storage_open_read(st, "obj", &src, &e);
    char got[64];
    size_t len = 0;
    if (r >= 0) {
        for (;;) {
            ssize_t n = ms_source_read(src, got + len, sizeof(got) - 1 - len, &e);
            ASSERT(n >= 0);
            if (n == 0)
                break;
            len += (size_t) n;
        }
        got[len] = '\0';
        ms_source_free(src);
    }
    ms_storage_free(st);
    canned_stop(&c);
    ASSERT_EQ_INT(r, want_open_r);
    if (want_msg)
        ASSERT_CONTAINS(e.message, want_msg);
    if (want_data) {
        ASSERT_EQ_INT((int) len, (int) strlen(want_data));
        ASSERT(memcmp(got, want_data, len) == 0);
    }
    ASSERT_CONTAINS(c.request, "GET /bucket/p/obj HTTP/1.1");
    ASSERT(strcasestr(c.request, "\nrange: bytes=0-") != NULL);
    ASSERT(strcasestr(c.request, "\nif-match:") == NULL); /* nothing to match yet */
}

static void test_reader_first_range_answers(void) {
    /* A server that ignores Range sends the whole (small) object with 200. */
    read_against("HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello",
                 0, NULL, "hello");
    /* A zero-byte object has no byte 0: 416 on the first range. */
    read_against("HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n",
                 0, NULL, "");
    /* Fewer bytes than the Content-Range promises. */
    read_against("HTTP/1.1 206 Partial Content\r\nETag: \"abc\"\r\n"
                 "Content-Range: bytes 0-9/10\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                 "hello",
                 -EPIPE, "got 5 bytes at offset 0 instead of 10", NULL);
    /* A 206 that does not say how large the object is. */
    read_against("HTTP/1.1 206 Partial Content\r\nETag: \"abc\"\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello",
                 -EPROTO, "has no Content-Range", NULL);
    /* Range ignored for an object larger than a chunk (4 bytes here): refused, not buffered. */
    ms_s3_set_read_chunk_for_tests(4);
    read_against("HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello",
                 -EPROTO, "sent more bytes than asked for", NULL);
    ms_s3_set_read_chunk_for_tests(0);
}

MS_TEST_MAIN(TEST_CASE(test_missing_ca_file_refused_at_open),
             TEST_CASE(test_reader_first_range_answers),
             TEST_CASE(test_kms_key_errors_name_kms_key_id),
             TEST_CASE(test_sse_s3_single_put_headers), TEST_CASE(test_other_errors_unchanged))

/* S3's multipart ETag (MD5 of the parts' MD5s, "-N"), which the S3 driver checks when
 * CompleteMultipartUpload answers NoSuchUpload after a retry, and ETag comparison. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "storage/s3-sigv4.h"
#include "test.h"

static void md5_of(const void *buf, size_t len, uint8_t out[MS_S3_MD5_LEN]) {
    unsigned int n = 0;
    EVP_Digest(buf, len, out, &n, EVP_md5(), NULL);
}

/* Expected values computed independently:
 *   hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}" */
static void test_known_values(void) {
    uint8_t md5s[3][MS_S3_MD5_LEN];
    char etag[MS_S3_ETAG_MAX];
    md5_of("aaaaaaaaaa", 10, md5s[0]);
    md5_of("hello", 5, md5s[1]);
    md5_of("", 0, md5s[2]);

    ASSERT_OK(ms_s3_multipart_etag(md5s, 1, etag));
    ASSERT_STREQ(etag, "ac1f8aff40d191e27d29b7848a8d9abd-1");
    ASSERT_OK(ms_s3_multipart_etag(md5s, 2, etag));
    ASSERT_STREQ(etag, "150249ed2cefdcbe0bca1628245e8e48-2");
    ASSERT_OK(ms_s3_multipart_etag(md5s, 3, etag));
    ASSERT_STREQ(etag, "70c8ec9683608c6123e96658a8c339a4-3");
    ASSERT_EQ_INT(ms_s3_multipart_etag(md5s, 0, etag), -EINVAL);
}

/* The parts' order matters, and the count goes up to S3's 10,000 (the buffer holds more). */
static void test_order_and_count(void) {
    enum { N = 10000 };
    uint8_t(*md5s)[MS_S3_MD5_LEN] = calloc(N, MS_S3_MD5_LEN);
    ASSERT(md5s != NULL);
    for (unsigned i = 0; i < N; i++) {
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "part %u", i);
        md5_of(buf, (size_t) len, md5s[i]);
    }
    char a[MS_S3_ETAG_MAX], b[MS_S3_ETAG_MAX];
    ASSERT_OK(ms_s3_multipart_etag(md5s, N, a));
    ASSERT_EQ_INT((int) strlen(a), 32 + 6);
    ASSERT(strcmp(a + 32, "-10000") == 0);
    uint8_t tmp[MS_S3_MD5_LEN];
    memcpy(tmp, md5s[0], MS_S3_MD5_LEN);
    memcpy(md5s[0], md5s[1], MS_S3_MD5_LEN);
    memcpy(md5s[1], tmp, MS_S3_MD5_LEN);
    ASSERT_OK(ms_s3_multipart_etag(md5s, N, b));
    ASSERT(strcmp(a, b) != 0);
    free(md5s);
}

static void test_equal(void) {
    ASSERT(ms_s3_etag_equal("\"150249ed2cefdcbe0bca1628245e8e48-2\"",
                            "150249ed2cefdcbe0bca1628245e8e48-2"));
    ASSERT(ms_s3_etag_equal("W/\"150249ED2CEFDCBE0BCA1628245E8E48-2\"",
                            "150249ed2cefdcbe0bca1628245e8e48-2"));
    ASSERT(!ms_s3_etag_equal("\"150249ed2cefdcbe0bca1628245e8e48-3\"",
                             "150249ed2cefdcbe0bca1628245e8e48-2"));
    ASSERT(!ms_s3_etag_equal("150249ed2cefdcbe0bca1628245e8e48",
                             "150249ed2cefdcbe0bca1628245e8e48-2"));
    ASSERT(!ms_s3_etag_equal(NULL, "x"));
    ASSERT(!ms_s3_etag_equal("x", NULL));
    ASSERT(!ms_s3_etag_equal("\"\"", ""));
}

MS_TEST_MAIN(TEST_CASE(test_known_values), TEST_CASE(test_order_and_count), TEST_CASE(test_equal))

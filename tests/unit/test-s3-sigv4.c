/* SigV4 signing checked against the AWS documentation's published S3 examples. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage/s3-sigv4.h"
#include "test.h"

/* The credentials, bucket and time of every example in "Signature Calculations for the
 * Authorization Header" and "Authenticating Requests: Using Query Parameters". */
#define EX_ACCESS_KEY "AKIAIOSFODNN7EXAMPLE"
#define EX_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EX_HOST "examplebucket.s3.amazonaws.com"
#define EX_DATE "20130524T000000Z"
#define EX_EPOCH 1369353600 /* 2013-05-24T00:00:00Z */

static const MsS3Signer ex_signer = {EX_ACCESS_KEY, EX_SECRET, NULL, "us-east-1"};

static char *signature_of(const char *method, const char *uri, const MsS3Param *q, size_t nq,
                          const MsS3Param *h, size_t nh, const char *payload, char **ret_auth) {
    char *auth = NULL, *sig = NULL;
    if (ms_s3_sign(&ex_signer, method, uri, q, nq, h, nh, payload, EX_DATE, &auth, &sig) < 0)
        return NULL;
    if (ret_auth)
        *ret_auth = auth;
    else
        free(auth);
    return sig;
}

static void test_get_object(void) {
    /* "Example: GET Object": the first 10 bytes of test.txt. */
    MsS3Param h[] = {{"Host", EX_HOST},
                     {"Range", "bytes=0-9"},
                     {"x-amz-content-sha256", MS_S3_EMPTY_SHA256},
                     {"x-amz-date", EX_DATE}};
    char *auth = NULL;
    char *sig = signature_of("GET", "/test.txt", NULL, 0, h, 4, MS_S3_EMPTY_SHA256, &auth);
    ASSERT_STREQ(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    ASSERT_STREQ(auth,
                 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                 "aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                 "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(sig);
    free(auth);
}

static void test_put_object(void) {
    /* "Example: PUT Object": key "test$file.text", whose '$' must be encoded once. */
    const char *body = "Welcome to Amazon S3.";
    char payload[MS_S3_SHA256_HEX_LEN + 1];
    ms_s3_sha256_hex(body, strlen(body), payload);
    ASSERT_STREQ(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    char *uri_key = ms_s3_uri_encode("test$file.text", true);
    char uri[64];
    snprintf(uri, sizeof(uri), "/%s", uri_key);
    free(uri_key);
    ASSERT_STREQ(uri, "/test%24file.text");
    MsS3Param h[] = {{"Host", EX_HOST},
                     {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                     {"x-amz-date", EX_DATE},
                     {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                     {"x-amz-content-sha256", payload}};
    char *sig = signature_of("PUT", uri, NULL, 0, h, 5, payload, NULL);
    ASSERT_STREQ(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    free(sig);
}

static void test_get_bucket_lifecycle(void) {
    /* "Example: GET Bucket Lifecycle": a query parameter without a value. */
    MsS3Param q[] = {{"lifecycle", ""}};
    MsS3Param h[] = {
        {"Host", EX_HOST}, {"x-amz-date", EX_DATE}, {"x-amz-content-sha256", MS_S3_EMPTY_SHA256}};
    char *sig = signature_of("GET", "/", q, 1, h, 3, MS_S3_EMPTY_SHA256, NULL);
    ASSERT_STREQ(sig, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    free(sig);
}

static void test_list_objects(void) {
    /* "Example: Get Bucket (List Objects)": parameters given out of order get sorted. */
    MsS3Param q[] = {{"prefix", "J"}, {"max-keys", "2"}};
    MsS3Param h[] = {
        {"Host", EX_HOST}, {"x-amz-date", EX_DATE}, {"x-amz-content-sha256", MS_S3_EMPTY_SHA256}};
    char *sig = signature_of("GET", "/", q, 2, h, 3, MS_S3_EMPTY_SHA256, NULL);
    ASSERT_STREQ(sig, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    free(sig);
}

static void test_presigned_url(void) {
    /* "Example: Presigned URL" (query string authentication), GET test.txt for 86400 s. */
    char *url = NULL;
    ASSERT_OK(ms_s3_presign(&ex_signer, "GET", "https://" EX_HOST, EX_HOST, "/test.txt", EX_EPOCH,
                            86400, &url));
    ASSERT_STREQ(
        url, "https://examplebucket.s3.amazonaws.com/test.txt"
             "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
             "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
             "&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    free(url);

    /* SigV4's limits on the lifetime. */
    ASSERT_EQ_INT(ms_s3_presign(&ex_signer, "GET", "https://h", "h", "/k", EX_EPOCH, 0, &url),
                  -EINVAL);
    ASSERT_EQ_INT(ms_s3_presign(&ex_signer, "GET", "https://h", "h", "/k", EX_EPOCH,
                                MS_S3_PRESIGN_MAX_SECONDS + 1, &url),
                  -EINVAL);
    ASSERT_OK(ms_s3_presign(&ex_signer, "GET", "https://h", "h", "/k", EX_EPOCH,
                            MS_S3_PRESIGN_MAX_SECONDS, &url));
    free(url);

    /* A session token is signed as part of the query. */
    MsS3Signer with_token = ex_signer;
    with_token.session_token = "tok/en+1=";
    ASSERT_OK(ms_s3_presign(&with_token, "GET", "http://127.0.0.1:9000", "127.0.0.1:9000",
                            "/bucket/a%20b", EX_EPOCH, 2, &url));
    ASSERT_CONTAINS(url, "http://127.0.0.1:9000/bucket/a%20b?X-Amz-Algorithm=");
    ASSERT_CONTAINS(url, "&X-Amz-Security-Token=tok%2Fen%2B1%3D&X-Amz-SignedHeaders=host");
    ASSERT(!strstr(url, EX_SECRET));
    free(url);
}

static void test_encoding(void) {
    char *s = ms_s3_uri_encode("a b/c~d-e_f.g%é+*", true);
    ASSERT_STREQ(s, "a%20b/c~d-e_f.g%25%C3%A9%2B%2A");
    free(s);
    s = ms_s3_uri_encode("a/b", false);
    ASSERT_STREQ(s, "a%2Fb");
    free(s);

    MsS3Param q[] = {{"uploadId", "x/y+z=="}, {"partNumber", "2"}, {"uploads", NULL}};
    s = ms_s3_canonical_query(q, 3);
    ASSERT_STREQ(s, "partNumber=2&uploadId=x%2Fy%2Bz%3D%3D&uploads=");
    free(s);
    s = ms_s3_canonical_query(NULL, 0);
    ASSERT_STREQ(s, "");
    free(s);

    char d[MS_S3_AMZ_DATE_LEN + 1];
    ms_s3_amz_date(EX_EPOCH, d);
    ASSERT_STREQ(d, EX_DATE);
    ms_s3_amz_date(951782400, d); /* a leap day */
    ASSERT_STREQ(d, "20000229T000000Z");
}

static void test_header_canonicalisation(void) {
    /* Names in any case and values with extra blanks sign the same as the canonical form. */
    MsS3Param a[] = {{"HOST", EX_HOST},
                     {"Range", "  bytes=0-9 "},
                     {"X-Amz-Content-Sha256", MS_S3_EMPTY_SHA256},
                     {"x-amz-date", EX_DATE}};
    char *sig = signature_of("GET", "/test.txt", NULL, 0, a, 4, MS_S3_EMPTY_SHA256, NULL);
    ASSERT_STREQ(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(sig);
    char *auth = NULL;
    ASSERT_EQ_INT(
        ms_s3_sign(&ex_signer, "GET", "/", NULL, 0, a, 4, MS_S3_EMPTY_SHA256, "2013", &auth, NULL),
        -EINVAL);
}

MS_TEST_MAIN({"get_object", test_get_object}, {"put_object", test_put_object},
             {"get_bucket_lifecycle", test_get_bucket_lifecycle},
             {"list_objects", test_list_objects}, {"presigned_url", test_presigned_url},
             {"encoding", test_encoding}, {"header_canonicalisation", test_header_canonicalisation})

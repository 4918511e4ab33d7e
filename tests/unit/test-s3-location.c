/* S3 location parsing, request targets, the part-size schedule and the retry backoff. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage/s3-http.h"
#include "storage/s3-location.h"
#include "test.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

static void test_defaults_aws(void) {
    MsS3Location l;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_s3_location_parse("s3://my-backups", &l, &e));
    ASSERT_STREQ(l.bucket, "my-backups");
    ASSERT_STREQ(l.prefix, "");
    ASSERT_STREQ(l.region, "us-east-1");
    ASSERT_STREQ(l.endpoint_host, "s3.us-east-1.amazonaws.com");
    ASSERT(l.https);
    ASSERT(!l.custom_endpoint);
    ASSERT_EQ_INT(l.addressing, MS_S3_ADDRESSING_VIRTUAL);
    ASSERT_EQ_INT(l.part_size, MS_S3_DEFAULT_PART_SIZE);
    ASSERT_EQ_INT(l.parallel, MS_S3_DEFAULT_PARALLEL);
    ASSERT_EQ_INT(l.presign_expires_sec, 7 * 24 * 3600);
    ASSERT_EQ_INT(l.sse, MS_S3_SSE_NONE);
    ASSERT_STREQ(l.description,
                 "s3://my-backups (endpoint https://s3.us-east-1.amazonaws.com, region us-east-1)");

    MsS3Target t;
    ASSERT_OK(ms_s3_location_target(&l, "a b/c.archive", &t));
    ASSERT_STREQ(t.host, "my-backups.s3.us-east-1.amazonaws.com");
    ASSERT_STREQ(t.base_url, "https://my-backups.s3.us-east-1.amazonaws.com");
    ASSERT_STREQ(t.canonical_uri, "/a%20b/c.archive");
    ms_s3_target_done(&t);
    ASSERT_OK(ms_s3_location_target(&l, NULL, &t));
    ASSERT_STREQ(t.canonical_uri, "/");
    ms_s3_target_done(&t);
    ms_s3_location_done(&l);

    ASSERT_OK(ms_s3_location_parse("s3://b-1/x?region=eu-west-3", &l, &e));
    ASSERT_STREQ(l.endpoint_host, "s3.eu-west-3.amazonaws.com");
    ms_s3_location_done(&l);
}

static void test_custom_endpoint(void) {
    MsS3Location l;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_s3_location_parse("s3://bucket/nightly/rs0/?endpoint=http://127.0.0.1:9000&"
                                   "part_size=5MiB&parallel=8&presign_expires=2s&sse=aws:kms&"
                                   "kms_key_id=arn%3Aaws%3Akms%3Akey&max_attempts=3&"
                                   "connect_timeout=2s&stall_timeout=15s&ca=/etc/ssl/ca.pem",
                                   &l, &e));
    ASSERT_STREQ(l.prefix, "nightly/rs0");
    ASSERT(!l.https);
    ASSERT(l.custom_endpoint);
    ASSERT_STREQ(l.endpoint_host, "127.0.0.1:9000");
    ASSERT_EQ_INT(l.addressing, MS_S3_ADDRESSING_PATH);
    ASSERT_EQ_INT(l.part_size, 5 * MIB);
    ASSERT_EQ_INT(l.parallel, 8);
    ASSERT_EQ_INT(l.presign_expires_sec, 2);
    ASSERT_EQ_INT(l.sse, MS_S3_SSE_KMS);
    ASSERT_STREQ(l.kms_key_id, "arn:aws:kms:key");
    ASSERT_EQ_INT(l.max_attempts, 3);
    ASSERT_EQ_INT(l.connect_timeout_sec, 2);
    ASSERT_EQ_INT(l.stall_timeout_sec, 15);
    ASSERT_STREQ(l.ca_file, "/etc/ssl/ca.pem");
    ASSERT_STREQ(l.description,
                 "s3://bucket/nightly/rs0 (endpoint http://127.0.0.1:9000, region us-east-1)");

    char *k = ms_s3_location_full_key(&l, "n1/snap.archive.zst");
    ASSERT_STREQ(k, "nightly/rs0/n1/snap.archive.zst");
    free(k);
    MsS3Target t;
    ASSERT_OK(ms_s3_location_target(&l, "nightly/rs0/x", &t));
    ASSERT_STREQ(t.host, "127.0.0.1:9000");
    ASSERT_STREQ(t.base_url, "http://127.0.0.1:9000");
    ASSERT_STREQ(t.canonical_uri, "/bucket/nightly/rs0/x");
    ms_s3_target_done(&t);
    ASSERT_OK(ms_s3_location_target(&l, NULL, &t));
    ASSERT_STREQ(t.canonical_uri, "/bucket");
    ms_s3_target_done(&t);
    ms_s3_location_done(&l);

    /* Virtual addressing on a custom endpoint when asked; host names get one spelling. */
    ASSERT_OK(ms_s3_location_parse("s3://bucket?endpoint=HTTPS://Minio.Example:9000/&addressing="
                                   "virtual",
                                   &l, &e));
    ASSERT(l.https);
    ASSERT_OK(ms_s3_location_target(&l, "k", &t));
    ASSERT_STREQ(t.host, "bucket.minio.example:9000");
    ASSERT_STREQ(t.canonical_uri, "/k");
    ms_s3_target_done(&t);
    ms_s3_location_done(&l);
}

static void expect_refused(const char *location, const char *needle, const char *absent) {
    MsS3Location l;
    MsError e = MS_ERROR_INIT;
    int r = ms_s3_location_parse(location, &l, &e);
    if (r >= 0) {
        fprintf(stderr, "# accepted: %s\n", location);
        ms_s3_location_done(&l);
        ms_test_failures++;
        return;
    }
    ASSERT_EQ_INT(r, -EINVAL);
    ASSERT_CONTAINS(e.message, needle);
    if (absent && strstr(e.message, absent)) {
        fprintf(stderr, "# message repeats '%s': %s\n", absent, e.message);
        ms_test_failures++;
    }
}

static void test_refused(void) {
    /* Credentials are refused without being repeated. */
    expect_refused("s3://AKIAXXX:s3cr3t@bucket/x", "never go in a location", "s3cr3t");
    expect_refused("s3://AKIAXXX@bucket", "never go in a location", "AKIAXXX");
    expect_refused("s3://bucket?endpoint=http://AK:s3cr3t@127.0.0.1:9000", "never go in a location",
                   "s3cr3t");
    expect_refused("s3://bucket?aws_secret_access_key=s3cr3t", "never go in a location", "s3cr3t");
    expect_refused("s3://bucket?secret", "never go in a location", NULL);

    expect_refused("s3://Bucket_Upper", "not a valid S3 bucket name", NULL);
    expect_refused("s3://ab", "not a valid S3 bucket name", NULL);
    expect_refused("s3:///prefix", "not a valid S3 bucket name", NULL);
    expect_refused("s3://bucket/a/../b", "is not valid", NULL);
    expect_refused("s3://bucket/a//b", "is not valid", NULL);
    expect_refused("s3://bucket?endpoint=ftp://x", "must start with https:// or http://", NULL);
    expect_refused("s3://bucket?endpoint=http://h/path", "has a path", NULL);
    expect_refused("s3://bucket?part_size=4MiB", "from 5MiB to 5GiB", NULL);
    expect_refused("s3://bucket?part_size=6GiB", "from 5MiB to 5GiB", NULL);
    expect_refused("s3://bucket?part_size=lots", "from 5MiB to 5GiB", NULL);
    expect_refused("s3://bucket?parallel=0", "from 1 to 64", NULL);
    expect_refused("s3://bucket?presign_expires=8d", "between 1s and 604800s", NULL);
    expect_refused("s3://bucket?addressing=dns", "expected 'path'", NULL);
    expect_refused("s3://bucket?sse=rot13", "expected AES256", NULL);
    expect_refused("s3://bucket?kms_key_id=k", "needs sse=aws:kms", NULL);
    expect_refused("s3://bucket?ca=relative.pem", "absolute path", NULL);
    expect_refused("s3://bucket?colour=blue", "unknown S3 location option 'colour'", NULL);
    expect_refused("s3://bucket?region=a&region=b", "given twice", NULL);
    expect_refused("s3://bucket?region", "has no value", NULL);
    expect_refused("s3://my.bucket", "has dots", NULL);
    expect_refused("s3://bucket/x#frag", "fragment", NULL);
    expect_refused("s3://bucket/%00", "invalid %-escape", NULL);
}

static void test_sizes(void) {
    uint64_t x;
    ASSERT_OK(ms_s3_parse_size("16MiB", &x));
    ASSERT_EQ_INT(x, 16 * MIB);
    ASSERT_OK(ms_s3_parse_size("5M", &x));
    ASSERT_EQ_INT(x, 5 * MIB);
    ASSERT_OK(ms_s3_parse_size("1GiB", &x));
    ASSERT_EQ_INT(x, GIB);
    ASSERT_OK(ms_s3_parse_size("65536", &x));
    ASSERT_EQ_INT(x, 65536);
    ASSERT_EQ_INT(ms_s3_parse_size("1.5GiB", &x), -EINVAL);
    ASSERT_EQ_INT(ms_s3_parse_size("-1", &x), -EINVAL);
    ASSERT_EQ_INT(ms_s3_parse_size("99999999999999999999", &x), -ERANGE);
    ASSERT_EQ_INT(ms_s3_parse_size("17179869184TiB", &x), -ERANGE);
}

/* Whatever the first part size, 10,000 parts hold S3's largest object, no part is outside
 * S3's limits, and sizes never shrink. */
static void test_part_schedule(void) {
    const uint64_t bases[] = {5 * MIB, 8 * MIB, 16 * MIB, 100 * MIB, GIB, 5 * GIB};
    for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
        uint64_t total = 0, prev = 0;
        unsigned parts_for_max = 0;
        for (unsigned n = 1; n <= MS_S3_MAX_PARTS; n++) {
            uint64_t size = ms_s3_part_size(bases[b], n);
            ASSERT(size >= MS_S3_MIN_PART_SIZE);
            ASSERT(size <= MS_S3_MAX_PART_SIZE);
            ASSERT(size >= prev);
            prev = size;
            total += size;
            if (!parts_for_max && total >= MS_S3_MAX_OBJECT_SIZE)
                parts_for_max = n;
        }
        ASSERT(total >= MS_S3_MAX_OBJECT_SIZE);
        ASSERT(parts_for_max > 0 && parts_for_max <= MS_S3_MAX_PARTS);
        /* It starts at the configured size and stays there for a while. */
        ASSERT_EQ_INT(ms_s3_part_size(bases[b], 1), bases[b]);
        ASSERT_EQ_INT(ms_s3_part_size(bases[b], MS_S3_PARTS_PER_SIZE_STEP), bases[b]);
    }
    /* The smallest start, the worst case, fills 5 TiB before the last part. */
    ASSERT_EQ_INT(ms_s3_part_size(5 * MIB, MS_S3_PARTS_PER_SIZE_STEP + 1), 10 * MIB);
    ASSERT_EQ_INT(ms_s3_part_size(5 * MIB, MS_S3_MAX_PARTS), 5 * GIB);
    /* A 100 GiB snapshot with the default parts stays at modest part sizes (memory). */
    uint64_t total = 0;
    unsigned n = 1;
    for (; total < 100 * GIB; n++)
        total += ms_s3_part_size(MS_S3_DEFAULT_PART_SIZE, n);
    ASSERT(ms_s3_part_size(MS_S3_DEFAULT_PART_SIZE, n) <= 128 * MIB);
}

static void test_backoff_and_scrub(void) {
    for (unsigned attempt = 1; attempt < 30; attempt++) {
        uint64_t ceiling = MS_S3_BACKOFF_BASE_USEC << MS_MIN(attempt - 1, 20u);
        ceiling = MS_MIN(ceiling, MS_S3_BACKOFF_CAP_USEC);
        ASSERT_EQ_INT(ms_s3_backoff_usec(attempt, 0), 0);
        ASSERT(ms_s3_backoff_usec(attempt, UINT32_MAX) <= ceiling);
        ASSERT_EQ_INT(ms_s3_backoff_usec(attempt, (uint32_t) ceiling), ceiling);
    }
    char msg[] = "key AKIAFOO was refused; AKIAFOO again";
    ms_s3_scrub(msg, "AKIAFOO");
    ASSERT_STREQ(msg, "key ******* was refused; ******* again");
    ms_s3_scrub(msg, "");
    ms_s3_scrub(NULL, "x");
}

MS_TEST_MAIN({"defaults_aws", test_defaults_aws}, {"custom_endpoint", test_custom_endpoint},
             {"refused", test_refused}, {"sizes", test_sizes},
             {"part_schedule", test_part_schedule}, {"backoff_and_scrub", test_backoff_and_scrub})

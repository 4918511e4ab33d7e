/* The minimal XML extraction used on S3 answers: elements, entities, CDATA, error documents. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage/s3-xml.h"
#include "test.h"

static const char listing[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>bucket</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>"
    "<IsTruncated>true</IsTruncated>"
    "<Contents><Key>p/a&amp;b.archive</Key><LastModified>2026-11-22T03:10:26.000Z</LastModified>"
    "<ETag>&quot;abc&quot;</ETag><Size>42</Size><StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents>\n  <Key>p/caf&#xE9;&#233;</Key>\n  <Size>0</Size>\n</Contents>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "</ListBucketResult>";

static void test_listing(void) {
    const char *pos = listing, *end = listing + strlen(listing), *inner;
    size_t inner_len;
    char *key = NULL, *size = NULL;

    ASSERT(ms_s3_xml_next(&pos, end, "Contents", &inner, &inner_len));
    ASSERT_OK(ms_s3_xml_text(inner, inner_len, "Key", &key));
    ASSERT_STREQ(key, "p/a&b.archive");
    free(key);
    ASSERT_OK(ms_s3_xml_text(inner, inner_len, "Size", &size));
    ASSERT_STREQ(size, "42");
    free(size);

    ASSERT(ms_s3_xml_next(&pos, end, "Contents", &inner, &inner_len));
    ASSERT_OK(ms_s3_xml_text(inner, inner_len, "Key", &key));
    ASSERT_STREQ(key, "p/caf\xc3\xa9\xc3\xa9");
    free(key);
    ASSERT_EQ_INT(ms_s3_xml_text(inner, inner_len, "LastModified", &key), -ENOENT);
    ASSERT(!ms_s3_xml_next(&pos, end, "Contents", &inner, &inner_len));

    char *t = NULL;
    ASSERT_OK(ms_s3_xml_text(listing, strlen(listing), "NextContinuationToken", &t));
    ASSERT_STREQ(t, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    free(t);
    /* "Key" must not match "KeyCount", nor "Name" something longer. */
    ASSERT_OK(ms_s3_xml_text(listing, strlen(listing), "Key", &t));
    ASSERT_STREQ(t, "p/a&b.archive");
    free(t);
}

static void test_shapes(void) {
    char *t = NULL;
    const char *x = "<R><Empty/><Spaced >v</Spaced ><C><![CDATA[a<b>&amp;]]>!</C></R>";
    ASSERT_OK(ms_s3_xml_text(x, strlen(x), "Empty", &t));
    ASSERT_STREQ(t, "");
    free(t);
    ASSERT_OK(ms_s3_xml_text(x, strlen(x), "Spaced", &t));
    ASSERT_STREQ(t, "v");
    free(t);
    ASSERT_OK(ms_s3_xml_text(x, strlen(x), "C", &t));
    ASSERT_STREQ(t, "a<b>&amp;!");
    free(t);
    ASSERT_EQ_INT(ms_s3_xml_text(x, strlen(x), "Missing", &t), -ENOENT);

    /* Malformed text is refused, never passed on half-decoded. */
    const char *bad[] = {"<K>a&b</K>",        "<K>&#0;</K>",    "<K>&#xD800;</K>",
                         "<K>&#x110000;</K>", "<K>&bogus;</K>", "<K><inner/></K>",
                         "<K><![CDATA[x</K>", "<K>&#;</K>"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = ms_s3_xml_text(bad[i], strlen(bad[i]), "K", &t);
        if (r != -EBADMSG && r != -ENOENT) {
            fprintf(stderr, "# accepted: %s\n", bad[i]);
            ms_test_failures++;
            free(t);
        }
    }
    /* Unterminated element. */
    ASSERT_EQ_INT(ms_s3_xml_text("<K>abc", 6, "K", &t), -ENOENT);
    /* Bounds are respected: the closing tag beyond len is not seen. */
    ASSERT_EQ_INT(ms_s3_xml_text("<K>abc</K>", 8, "K", &t), -ENOENT);
}

static void test_error_documents(void) {
    const char *doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                      "<Message>The specified key does not exist.</Message><Key>a</Key>"
                      "<RequestId>4442587FB7D0A2F9</RequestId></Error>";
    char *code = NULL, *message = NULL;
    ASSERT_OK(ms_s3_xml_error(doc, strlen(doc), &code, &message));
    ASSERT_STREQ(code, "NoSuchKey");
    ASSERT_STREQ(message, "The specified key does not exist.");
    free(code);
    free(message);

    /* CompleteMultipartUpload can answer 200 and still hold an error. */
    const char *ok = "<CompleteMultipartUploadResult><Location>x</Location><ETag>&quot;e-3&quot;"
                     "</ETag></CompleteMultipartUploadResult>";
    ASSERT_EQ_INT(ms_s3_xml_error(ok, strlen(ok), &code, &message), -ENOENT);
    const char *embedded = "\n\n<Error><Code>InternalError</Code></Error>";
    ASSERT_OK(ms_s3_xml_error(embedded, strlen(embedded), &code, &message));
    ASSERT_STREQ(code, "InternalError");
    ASSERT(message == NULL);
    free(code);
}

static void test_escape(void) {
    char *s = ms_s3_xml_escape("\"etag\" & <x> 'y'");
    ASSERT_STREQ(s, "&quot;etag&quot; &amp; &lt;x&gt; &apos;y&apos;");
    char *back = NULL;
    ASSERT_OK(ms_s3_xml_decode(s, strlen(s), &back));
    ASSERT_STREQ(back, "\"etag\" & <x> 'y'");
    free(s);
    free(back);
}

MS_TEST_MAIN({"listing", test_listing}, {"shapes", test_shapes},
             {"error_documents", test_error_documents}, {"escape", test_escape})

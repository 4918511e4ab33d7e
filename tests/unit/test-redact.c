/* Tests for URI redaction: no password or secret option survives. */
#include "common/macro.h"
#include "common/redact.h"
#include "test.h"

static void redacts_password(void) {
    _cleanup_free_ char *r =
        ms_uri_redact("mongodb://alice:s3cr%40t@db1:27017,db2/admin?replicaSet=rs0");
    ASSERT_STREQ(r, "mongodb://alice@db1:27017,db2/admin?replicaSet=rs0");
}

static void redacts_secret_options(void) {
    _cleanup_free_ char *r = ms_uri_redact("mongodb://h/"
                                           "?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_"
                                           "SESSION_TOKEN:xyz&tls=true&password=pw");
    ASSERT_STREQ(r, "mongodb://h/?authMechanism=MONGODB-AWS&tls=true");
    ASSERT(strstr(r, "xyz") == NULL);
}

static void keeps_plain_uri(void) {
    _cleanup_free_ char *r = ms_uri_redact("mongodb+srv://cluster0.example.net");
    ASSERT_STREQ(r, "mongodb+srv://cluster0.example.net");
}

static void password_with_at_sign(void) {
    _cleanup_free_ char *r = ms_uri_redact("mongodb://u:p@ss@host/db");
    ASSERT_STREQ(r, "mongodb://u@host/db");
}

static void garbage_is_safe(void) {
    _cleanup_free_ char *r = ms_uri_redact("not a uri with password hunter2");
    ASSERT_STREQ(r, "<unparsable URI>");
}

/* Found by fuzzing: a raw '@' inside a secret option's value was taken for the userinfo's end,
 * and the whole string came back unchanged. */
static void at_sign_inside_secret_option(void) {
    _cleanup_free_ char *a = ms_uri_redact("mongodb://db1/?authSource=admin&password=p@ssw0rdXYZ");
    ASSERT_STREQ(a, "mongodb://db1/?authSource=admin");
    _cleanup_free_ char *b = ms_uri_redact("mongodb://db1:27017/?password=p@ss&tls=true");
    ASSERT_STREQ(b, "mongodb://db1:27017/?tls=true");
    /* Found by fuzzing the fix above: a real userinfo as well as an '@' in a secret option. */
    _cleanup_free_ char *d =
        ms_uri_redact("mongodb://n:A8888172@h/?sslPEMKeyPassword=x@y&tls=true");
    ASSERT_STREQ(d, "mongodb://n@h/?tls=true");
    /* A raw '?' in a real password still ends at the last '@'. */
    _cleanup_free_ char *c = ms_uri_redact("mongodb://user:pa?ss@host/?tls=true");
    ASSERT_STREQ(c, "mongodb://user@host/?tls=true");
}

/* Every occurrence, overlapping or at the ends, and nothing for no secret. */
static void scrub_every_occurrence(void) {
    static const struct {
        const char *text, *secret, *want;
    } cases[] = {
        {"mongodb://u:pw@h/ failed: pw", "pw", "mongodb://u:**@h/ failed: **"},
        {"pwpwpw", "pw", "******"},
        {"aaa", "aa", "**a"},
        {"no secret here", "pw", "no secret here"},
        {"kept", "", "kept"},
        {"kept", NULL, "kept"},
        {"", "pw", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", cases[i].text);
        ms_secret_scrub(buf, cases[i].secret);
        ASSERT_STREQ(buf, cases[i].want);
    }
    ms_secret_scrub(NULL, "pw"); /* no text: nothing */
}

MS_TEST_MAIN(TEST_CASE(scrub_every_occurrence), TEST_CASE(at_sign_inside_secret_option), TEST_CASE(redacts_password),
             TEST_CASE(redacts_secret_options), TEST_CASE(keeps_plain_uri),
             TEST_CASE(password_with_at_sign), TEST_CASE(garbage_is_safe))

/* Where S3 credentials come from, in which order, and that no message ever holds one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/s3-credentials.h"
#include "test.h"

#define ID "AKIDTESTKEYID"
#define SECRET "s3cr3t/Value+With=Chars"

static char dir[] = "/tmp/test-s3-credentials-XXXXXX";

static void clear_env(void) {
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_PROFILE");
    /* No real ~/.aws/credentials may leak into a test. */
    setenv("HOME", dir, 1);
}

static void write_file(const char *name, const char *content) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(content, f);
    fclose(f);
}

static void remove_file(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static void expect_no_secret(const MsError *e) {
    ASSERT(!strstr(e->message, SECRET));
    ASSERT(!strstr(e->message, ID));
}

static void test_environment(void) {
    clear_env();
    MsS3Credentials c;
    MsError e = MS_ERROR_INIT;
    setenv("AWS_ACCESS_KEY_ID", ID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
    setenv("AWS_SESSION_TOKEN", "tok", 1);
    ASSERT_OK(ms_s3_credentials_load(&c, &e));
    ASSERT_STREQ(c.access_key_id, ID);
    ASSERT_STREQ(c.secret_access_key, SECRET);
    ASSERT_STREQ(c.session_token, "tok");
    ASSERT_CONTAINS(c.source, "environment");
    ASSERT(!strstr(c.source, ID));
    ms_s3_credentials_done(&c);
    ASSERT(c.access_key_id == NULL);

    unsetenv("AWS_SECRET_ACCESS_KEY");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "AWS_SECRET_ACCESS_KEY is not");
    expect_no_secret(&e);
}

static void test_systemd_first(void) {
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "FROMENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "FROMENV", 1);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    write_file("s3-access-key-id", "  " ID "\n");
    write_file("s3-secret-access-key", SECRET "\n");
    MsS3Credentials c;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_s3_credentials_load(&c, &e));
    ASSERT_STREQ(c.access_key_id, ID);
    ASSERT_STREQ(c.secret_access_key, SECRET);
    ASSERT(c.session_token == NULL);
    ASSERT_CONTAINS(c.source, "systemd credentials");
    ms_s3_credentials_done(&c);

    /* Half a pair is an error, not a silent fallback to another source. */
    remove_file("s3-secret-access-key");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "s3-secret-access-key is missing");
    expect_no_secret(&e);
    ms_error_clear(&e);

    write_file("s3-secret-access-key", "\n\n");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "exactly one non-empty line");
    ms_error_clear(&e);
    remove_file("s3-secret-access-key");
    remove_file("s3-access-key-id");

    /* A credentials directory without S3 credentials: the next source is used. */
    ASSERT_OK(ms_s3_credentials_load(&c, &e));
    ASSERT_STREQ(c.access_key_id, "FROMENV");
    ms_s3_credentials_done(&c);
}

static void test_shared_file(void) {
    clear_env();
    char token[3000];
    memset(token, 'T', sizeof(token) - 1);
    token[sizeof(token) - 1] = '\0';
    char content[4096];
    snprintf(content, sizeof(content),
             "# comment\n[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = d\n"
             "\n[backup]\n  aws_access_key_id=" ID "\naws_secret_access_key = " SECRET
             "\naws_session_token = %s\nregion = eu-west-3\n",
             token);
    mkdir(strcat(strcpy((char[512]){0}, dir), "/.aws"), 0700);
    write_file(".aws/credentials", content);

    MsS3Credentials c;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_s3_credentials_load(&c, &e));
    ASSERT_STREQ(c.access_key_id, "DEFAULTID");
    ASSERT_CONTAINS(c.source, "profile default");
    ms_s3_credentials_done(&c);

    setenv("AWS_PROFILE", "backup", 1);
    ASSERT_OK(ms_s3_credentials_load(&c, &e));
    ASSERT_STREQ(c.access_key_id, ID);
    ASSERT_STREQ(c.secret_access_key, SECRET);
    /* Longer than inih's line buffer, and still whole. */
    ASSERT_STREQ(c.session_token, token);
    ASSERT_CONTAINS(c.source, "profile backup");
    ms_s3_credentials_done(&c);

    setenv("AWS_PROFILE", "nope", 1);
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "profile [nope]");
    expect_no_secret(&e);
    ms_error_clear(&e);

    char path[512];
    snprintf(path, sizeof(path), "%s/other", dir);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    unsetenv("AWS_PROFILE");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "does not exist");
    ms_error_clear(&e);
    write_file("other", "[default]\naws_access_key_id=X\n");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "no aws_secret_access_key");
    ms_error_clear(&e);

    /* Nothing anywhere. */
    clear_env();
    remove_file(".aws/credentials");
    ASSERT_EQ_INT(ms_s3_credentials_load(&c, &e), -ENOKEY);
    ASSERT_CONTAINS(e.message, "no S3 credentials found");
}

int ms_test_failures = 0;
int main(void) {
    if (!mkdtemp(dir))
        return 1;
    static const MsTestCase cases[] = {{"environment", test_environment},
                                       {"systemd_first", test_systemd_first},
                                       {"shared_file", test_shared_file}};
    size_t n = sizeof(cases) / sizeof(cases[0]);
    int failed = 0;
    printf("1..%zu\n", n);
    for (size_t i = 0; i < n; i++) {
        int before = ms_test_failures;
        cases[i].fn();
        bool ok = ms_test_failures == before;
        failed += !ok;
        printf("%s %zu - %s\n", ok ? "ok" : "not ok", i + 1, cases[i].name);
    }
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        failed++;
    return failed ? 1 : 0;
}

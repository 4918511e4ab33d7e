/* libFuzzer target: secret redaction. ms_uri_redact() (common/redact.c) and
 * ms_eventlog_scrub() (eventlog/eventlog.c, also through ms_event_build_fields()).
 *
 * First the whole input, as one string, goes through all three: nothing may crash or leak
 * memory. Then the input builds a connection string that carries a known secret, and the
 * output must not contain it:
 *
 *   [mode:u8] [secret_len:u8] secret-bytes user \0 host \0 prefix \0 suffix
 *
 *   SECRET  8..64 characters, each secret byte mapped to [A-Za-z0-9];
 *   USER    the bytes mapped to unreserved characters and '%' (a user name as a URI holds it);
 *   HOST    the bytes mapped to a host list's characters (letters, digits, ".-:,[]");
 *   mode % 4:
 *     0  mongodb://USER:SECRET@HOST/SUFFIX
 *     1  mongodb://USER@HOST/?tls=true&password=SECRET, then " SUFFIX" (a secret option; the
 *        space keeps the suffix out of the value, which would otherwise just lengthen it)
 *     2  mongodb+srv://USER:SECRET@HOST/SUFFIX
 *     3  https://USER:SECRET@HOST/SUFFIX (any other URI: the scrubber drops the password too)
 *   ms_uri_redact() gets the URI (with the suffix, except in mode 1); the scrubber and the
 *   Event Log get PREFIX URI. PREFIX and SUFFIX are free text (up to a NUL), except that PREFIX
 *   cannot hold "://" (it would make the start of a different URI; its ':' become '_'). */
#include "fuzz-common.h"

#include <ctype.h>

#include "common/redact.h"
#include "eventlog/eventlog.h"

#define SECRET_MIN 8
#define SECRET_MAX 64

static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
static const char user_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%";
static const char host_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789.-:,[]";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    return 0;
}

static char *map_chars(FuzzInput part, const char *set, const char *if_empty) {
    if (part.n == 0)
        return strdup(if_empty);
    char *s = malloc(part.n + 1);
    if (!s)
        abort();
    size_t m = strlen(set);
    for (size_t i = 0; i < part.n; i++)
        s[i] = set[part.p[i] % m];
    s[part.n] = '\0';
    return s;
}

/* Everything the Event Log would send for a failure whose message and error quote text. */
static void check_event_fields(const char *text, const char *secret, const char *what) {
    char **fields = NULL;
    size_t n = 0;
    MsEventFields f = {.policy = "nightly", .task = "t1", .error = text, .snapshot = text};
    int r = ms_event_build_fields(MS_EVENT_TASK_FAILED, &f, text, &fields, &n);
    FUZZ_CHECK(r == 0, "ms_event_build_fields failed: %d", r);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(!secret || !strstr(fields[i], secret),
                   "%s: the Event Log field '%s' holds the secret '%s'", what, fields[i], secret);
    ms_event_entry_fields_free(fields, n);
}

static void build(unsigned mode, const char *secret, const char *user, const char *host,
                  const char *prefix, const char *suffix, char **ret_uri, char **ret_text) {
    int r;
    switch (mode) {
    case 0:
        r = asprintf(ret_uri, "mongodb://%s:%s@%s/%s", user, secret, host, suffix);
        break;
    case 1:
        r = asprintf(ret_uri, "mongodb://%s@%s/?tls=true&password=%s", user, host, secret);
        break;
    case 2:
        r = asprintf(ret_uri, "mongodb+srv://%s:%s@%s/%s", user, secret, host, suffix);
        break;
    default:
        r = asprintf(ret_uri, "https://%s:%s@%s/%s", user, secret, host, suffix);
        break;
    }
    if (r < 0 || asprintf(ret_text, "%s%s%s%s", prefix, *ret_uri, mode == 1 ? " " : "",
                          mode == 1 ? suffix : "") < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* 1. Anything at all. */
    char *raw = fuzz_strdup((FuzzInput){data, size});
    free(ms_uri_redact(raw));
    char *scrubbed = ms_eventlog_scrub(raw);
    FUZZ_CHECK(scrubbed, "ms_eventlog_scrub returned NULL");
    free(scrubbed);
    check_event_fields(raw, NULL, "raw");
    free(raw);

    /* 2. A URI with a known secret. */
    FuzzInput in = {data, size}, user_part, host_part, prefix_part, suffix_part, rest;
    unsigned mode = fuzz_u8(&in) % 4;
    size_t secret_len = SECRET_MIN + fuzz_u8(&in) % (SECRET_MAX - SECRET_MIN + 1);
    char secret[SECRET_MAX + 1];
    for (size_t i = 0; i < secret_len; i++)
        /* Past the end of the input the secret goes on with a fixed pattern. */
        secret[i] = alnum[(in.n ? fuzz_u8(&in) : (uint8_t) (i * 7 + 3)) % (sizeof(alnum) - 1)];
    secret[secret_len] = '\0';
    fuzz_split(in, 0, &user_part, &rest);
    fuzz_split(rest, 0, &host_part, &rest);
    fuzz_split(rest, 0, &prefix_part, &suffix_part);
    char *user = map_chars(user_part, user_chars, "backup");
    char *host = map_chars(host_part, host_chars, "db1");
    char *prefix = fuzz_strdup(prefix_part);
    char *suffix = fuzz_strdup(suffix_part);
    for (char *p = prefix; (p = strstr(p, "://"));)
        *p = '_';
    /* Fixed finding (regressions/fuzz-uri-redact/scheme-glued-mongodb-query-password): text
     * glued to the scheme ("xmongodb://...") hid the URI from the MongoDB redaction. */

    char *uri = NULL, *text = NULL;
    build(mode, secret, user, host, prefix, suffix, &uri, &text);

    /* The secret must not be in the output unless the rest of the text spells it anyway (the
     * fuzzer may well write it into the user name too): build the same text with a character
     * that cannot be part of the secret in its place, and look for the secret there. */
    char marker[SECRET_MAX + 1];
    memset(marker, '\x01', secret_len);
    marker[secret_len] = '\0';
    char *public_uri = NULL, *public_text = NULL;
    build(mode, marker, user, host, prefix, suffix, &public_uri, &public_text);
    bool spelled_elsewhere = strstr(public_text, secret) != NULL;
    free(public_uri);
    free(public_text);
    if (spelled_elsewhere) {
        free(uri);
        free(text);
        free(user);
        free(host);
        free(prefix);
        free(suffix);
        return 0;
    }

    char *redacted = ms_uri_redact(uri);
    FUZZ_CHECK(redacted, "ms_uri_redact returned NULL");
    FUZZ_CHECK(!strstr(redacted, secret),
               "ms_uri_redact leaks the secret '%s':\n  in:  %s\n  out: %s", secret, uri, redacted);
    free(redacted);

    scrubbed = ms_eventlog_scrub(text);
    FUZZ_CHECK(scrubbed, "ms_eventlog_scrub returned NULL");
    FUZZ_CHECK(!strstr(scrubbed, secret),
               "ms_eventlog_scrub leaks the secret '%s':\n  in:  %s\n  out: %s", secret, text,
               scrubbed);
    fuzz_say("uri: %s\nscrubbed: %s\n", uri, scrubbed);
    free(scrubbed);
    check_event_fields(text, secret, "with a secret");

    free(uri);
    free(text);
    free(user);
    free(host);
    free(prefix);
    free(suffix);
    return 0;
}

/* Parsing S3 store locations, building request targets, and the part-size schedule. */
#include "s3-location.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/hex.h"
#include "common/timespan.h"
#include "mongosnap/mongosnap.h"
#include "s3-sigv4.h"
#include "storage.h"

#define HTTP_SCHEME "http://"
#define HTTPS_SCHEME "https://"
#define USEC_PER_SEC UINT64_C(1000000)
/* S3 bucket naming rules: 3 to 63 characters. */
#define BUCKET_NAME_MIN 3
#define BUCKET_NAME_MAX 63

static const char location_syntax[] =
    "s3://BUCKET[/PREFIX][?endpoint=URL&region=R&addressing=path|virtual&ca=FILE"
    "&sse=AES256|aws:kms&kms_key_id=ID&part_size=SIZE&parallel=N&presign_expires=TIMESPAN"
    "&max_attempts=N&connect_timeout=TIMESPAN&stall_timeout=TIMESPAN]";

/* %XX-decode len bytes of s; refuses %00 and malformed escapes. */
static char *percent_decode(const char *s, size_t len) {
    char *out = malloc(len + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 2 < len ? ms_hex_digit_value(s[i + 1]) : -1;
        int lo = hi >= 0 ? ms_hex_digit_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            errno = EINVAL;
            return NULL;
        }
        *o++ = (char) (hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

int ms_s3_parse_size(const char *s, uint64_t *ret) {
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},     {"B", 0},  {"K", 10},   {"KiB", 10}, {"M", 20},
        {"MiB", 20}, {"G", 30}, {"GiB", 30}, {"T", 40},   {"TiB", 40},
    };
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    uint64_t x = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++)
        if (__builtin_mul_overflow(x, 10, &x) ||
            __builtin_add_overflow(x, (uint64_t) (*p - '0'), &x))
            return -ERANGE;
    for (size_t i = 0; i < ELEMENTSOF(units); i++)
        if (strcmp(p, units[i].suffix) == 0) {
            if (units[i].shift && x > (UINT64_MAX >> units[i].shift))
                return -ERANGE;
            *ret = x << units[i].shift;
            return 0;
        }
    return -EINVAL;
}

uint64_t ms_s3_part_size(uint64_t base, unsigned part_number) {
    uint64_t size = MS_MAX(base, MS_S3_MIN_PART_SIZE);
    unsigned steps = part_number > 0 ? (part_number - 1) / MS_S3_PARTS_PER_SIZE_STEP : 0;
    for (unsigned i = 0; i < steps && size < MS_S3_MAX_PART_SIZE; i++)
        size *= 2;
    return MS_MIN(size, MS_S3_MAX_PART_SIZE);
}

void ms_s3_location_done(MsS3Location *l) {
    if (!l)
        return;
    free(l->bucket);
    free(l->prefix);
    free(l->endpoint_host);
    free(l->region);
    free(l->ca_file);
    free(l->kms_key_id);
    free(l->description);
    *l = (MsS3Location){0};
}

static bool bucket_name_is_valid(const char *b) {
    size_t len = strlen(b);
    if (len < BUCKET_NAME_MIN || len > BUCKET_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = b[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return false;
        if ((i == 0 || i == len - 1) && !alnum)
            return false;
    }
    return true;
}

/* Option names that suggest someone tries to put a secret in the location. */
static bool looks_like_credential(const char *name) {
    static const char *const words[] = {"secret",    "password",   "token",     "access_key",
                                        "accesskey", "access-key", "credential"};
    for (size_t i = 0; i < ELEMENTSOF(words); i++)
        if (strcasestr(name, words[i]))
            return true;
    return false;
}

static int credentials_in_location(MsError *e) {
    return ms_error_set(e, EINVAL,
                        "the S3 location holds credentials; they never go in a location (it is "
                        "shown in logs and properties). Give them as systemd credentials "
                        "(s3-access-key-id, s3-secret-access-key in $CREDENTIALS_DIRECTORY), "
                        "in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or in the shared "
                        "credentials file (~/.aws/credentials)");
}

static int parse_endpoint(MsS3Location *l, const char *value, MsError *e) {
    const char *rest;
    if (strncasecmp(value, HTTPS_SCHEME, strlen(HTTPS_SCHEME)) == 0) {
        l->https = true;
        rest = value + strlen(HTTPS_SCHEME);
    } else if (strncasecmp(value, HTTP_SCHEME, strlen(HTTP_SCHEME)) == 0) {
        l->https = false;
        rest = value + strlen(HTTP_SCHEME);
    } else
        return ms_error_set(e, EINVAL,
                            "S3 endpoint '%s' must start with https:// or http:// "
                            "(e.g. endpoint=http://127.0.0.1:9000)",
                            value);
    size_t len = strcspn(rest, "/?#");
    if (memchr(rest, '@', len))
        return credentials_in_location(e);
    if (len == 0)
        return ms_error_set(e, EINVAL, "S3 endpoint '%s' has no host name", value);
    if (rest[len] != '\0' && strcmp(rest + len, "/") != 0)
        return ms_error_set(e, EINVAL,
                            "S3 endpoint '%s' has a path or query; give only "
                            "scheme://host[:port] (the bucket goes in s3://BUCKET)",
                            value);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) rest[i] <= ' ' || rest[i] == 0x7f)
            return ms_error_set(e, EINVAL, "S3 endpoint '%s' has a blank or control character",
                                value);
    free(l->endpoint_host);
    l->endpoint_host = strndup(rest, len);
    if (!l->endpoint_host)
        return ms_error_set(e, ENOMEM, "out of memory");
    /* Host names are case-insensitive; the signature covers the Host header byte for byte,
     * so use one spelling everywhere. */
    for (char *p = l->endpoint_host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char) (*p - 'A' + 'a');
    l->custom_endpoint = true;
    return 0;
}

static int parse_timespan_sec(const char *name, const char *value, uint64_t min_sec,
                              uint64_t max_sec, uint64_t *ret, MsError *e) {
    uint64_t usec;
    if (ms_timespan_parse(value, &usec) < 0 || usec % USEC_PER_SEC != 0 ||
        usec / USEC_PER_SEC < min_sec || usec / USEC_PER_SEC > max_sec)
        return ms_error_set(e, EINVAL,
                            "S3 location option %s=%s: expected a whole number of seconds "
                            "between %" PRIu64 "s and %" PRIu64 "s (e.g. \"90s\", \"12h\", \"7d\")",
                            name, value, min_sec, max_sec);
    *ret = usec / USEC_PER_SEC;
    return 0;
}

static int parse_unsigned(const char *name, const char *value, unsigned min, unsigned max,
                          unsigned *ret, MsError *e) {
    char *end = NULL;
    errno = 0;
    unsigned long x = strtoul(value, &end, 10);
    if (errno != 0 || !end || *end || value[0] < '0' || value[0] > '9' || x < min || x > max)
        return ms_error_set(e, EINVAL, "S3 location option %s=%s: expected a number from %u to %u",
                            name, value, min, max);
    *ret = (unsigned) x;
    return 0;
}

static int set_string(char **field, const char *value, MsError *e) {
    free(*field);
    *field = strdup(value);
    return *field ? 0 : ms_error_set(e, ENOMEM, "out of memory");
}

static int apply_option(MsS3Location *l, const char *name, const char *value, bool *have_addressing,
                        MsError *e) {
    if (strcmp(name, "endpoint") == 0)
        return parse_endpoint(l, value, e);
    if (strcmp(name, "region") == 0) {
        if (!*value || strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(value))
            return ms_error_set(e, EINVAL,
                                "S3 location option region=%s: expected a region name such as "
                                "us-east-1 or eu-west-3",
                                value);
        return set_string(&l->region, value, e);
    }
    if (strcmp(name, "addressing") == 0) {
        if (strcmp(value, "path") == 0)
            l->addressing = MS_S3_ADDRESSING_PATH;
        else if (strcmp(value, "virtual") == 0)
            l->addressing = MS_S3_ADDRESSING_VIRTUAL;
        else
            return ms_error_set(e, EINVAL,
                                "S3 location option addressing=%s: expected 'path' "
                                "(endpoint/bucket/key) or 'virtual' (bucket.endpoint/key)",
                                value);
        *have_addressing = true;
        return 0;
    }
    if (strcmp(name, "ca") == 0) {
        if (value[0] != '/')
            return ms_error_set(e, EINVAL,
                                "S3 location option ca=%s: give the absolute path of a PEM file "
                                "holding the CA certificates to trust",
                                value);
        return set_string(&l->ca_file, value, e);
    }
    if (strcmp(name, "sse") == 0) {
        if (strcmp(value, "AES256") == 0)
            l->sse = MS_S3_SSE_AES256;
        else if (strcmp(value, "aws:kms") == 0)
            l->sse = MS_S3_SSE_KMS;
        else
            return ms_error_set(e, EINVAL,
                                "S3 location option sse=%s: expected AES256 (S3-managed keys) "
                                "or aws:kms (with kms_key_id=... or the bucket's default key)",
                                value);
        return 0;
    }
    if (strcmp(name, "kms_key_id") == 0) {
        if (!*value)
            return ms_error_set(e, EINVAL, "S3 location option kms_key_id is empty");
        return set_string(&l->kms_key_id, value, e);
    }
    if (strcmp(name, "part_size") == 0) {
        uint64_t size;
        if (ms_s3_parse_size(value, &size) < 0 || size < MS_S3_MIN_PART_SIZE ||
            size > MS_S3_MAX_PART_SIZE)
            return ms_error_set(e, EINVAL,
                                "S3 location option part_size=%s: expected a size from 5MiB to "
                                "5GiB (S3's part limits), e.g. 16MiB",
                                value);
        l->part_size = size;
        return 0;
    }
    if (strcmp(name, "parallel") == 0)
        return parse_unsigned(name, value, 1, MS_S3_MAX_PARALLEL, &l->parallel, e);
    if (strcmp(name, "max_attempts") == 0)
        return parse_unsigned(name, value, 1, MS_S3_MAX_ATTEMPTS_LIMIT, &l->max_attempts, e);
    if (strcmp(name, "presign_expires") == 0)
        return parse_timespan_sec(name, value, 1, MS_S3_PRESIGN_MAX_SECONDS,
                                  &l->presign_expires_sec, e);
    if (strcmp(name, "connect_timeout") == 0) {
        uint64_t sec = 0;
        int r = parse_timespan_sec(name, value, 1, MS_S3_MAX_CONNECT_TIMEOUT_SEC, &sec, e);
        if (r < 0)
            return r;
        l->connect_timeout_sec = (unsigned) sec;
        return 0;
    }
    if (strcmp(name, "stall_timeout") == 0) {
        uint64_t sec = 0;
        int r = parse_timespan_sec(name, value, 1, MS_S3_MAX_STALL_TIMEOUT_SEC, &sec, e);
        if (r < 0)
            return r;
        l->stall_timeout_sec = (unsigned) sec;
        return 0;
    }
    if (looks_like_credential(name))
        return credentials_in_location(e);
    return ms_error_set(e, EINVAL, "unknown S3 location option '%s'; the syntax is %s", name,
                        location_syntax);
}

static int parse_query(MsS3Location *l, const char *query, bool *have_addressing, MsError *e) {
    static const char *const seen_names[] = {MONGOSNAP_S3_LOCATION_OPTIONS};
    bool seen[ELEMENTSOF(seen_names)] = {false};
    const char *p = query;
    while (*p) {
        size_t len = strcspn(p, "&");
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t name_len = eq ? (size_t) (eq - p) : len;
            _cleanup_free_ char *name = percent_decode(p, name_len);
            _cleanup_free_ char *value = eq ? percent_decode(eq + 1, len - name_len - 1) : NULL;
            if (!name || (eq && !value)) {
                if (errno == ENOMEM)
                    return ms_error_set(e, ENOMEM, "out of memory");
                return ms_error_set(e, EINVAL,
                                    "the S3 location has an invalid %%-escape in its options");
            }
            if (!eq) {
                if (looks_like_credential(name))
                    return credentials_in_location(e);
                return ms_error_set(e, EINVAL,
                                    "S3 location option '%s' has no value; write NAME=VALUE "
                                    "(syntax: %s)",
                                    name, location_syntax);
            }
            for (size_t i = 0; i < ELEMENTSOF(seen_names); i++)
                if (strcmp(name, seen_names[i]) == 0) {
                    if (seen[i])
                        return ms_error_set(e, EINVAL, "S3 location option '%s' is given twice",
                                            name);
                    seen[i] = true;
                }
            int r = apply_option(l, name, value, have_addressing, e);
            if (r < 0)
                return r;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

static int finish_location(MsS3Location *l, bool have_addressing, MsError *e) {
    if (!l->region && !(l->region = strdup(MS_S3_DEFAULT_REGION)))
        return ms_error_set(e, ENOMEM, "out of memory");
    if (!l->endpoint_host) {
        /* AWS itself: the regional endpoint; virtual-hosted style is what AWS recommends
         * (path style is deprecated there). */
        l->https = true;
        if (asprintf(&l->endpoint_host, "s3.%s.amazonaws.com", l->region) < 0) {
            l->endpoint_host = NULL;
            return ms_error_set(e, ENOMEM, "out of memory");
        }
        if (!have_addressing)
            l->addressing = MS_S3_ADDRESSING_VIRTUAL;
    } else if (!have_addressing)
        /* MinIO, Ceph RGW and friends are usually reached by IP or a name without wildcard
         * DNS, where only path style works. */
        l->addressing = MS_S3_ADDRESSING_PATH;
    if (l->kms_key_id && l->sse != MS_S3_SSE_KMS)
        return ms_error_set(e, EINVAL, "S3 location option kms_key_id needs sse=aws:kms");
    if (l->addressing == MS_S3_ADDRESSING_VIRTUAL && l->https && strchr(l->bucket, '.'))
        return ms_error_set(e, EINVAL,
                            "bucket '%s' has dots, which break TLS certificate checks with "
                            "virtual-hosted addressing; add addressing=path",
                            l->bucket);
    if (asprintf(&l->description, "s3://%s%s%s (endpoint %s%s, region %s)", l->bucket,
                 *l->prefix ? "/" : "", l->prefix, l->https ? HTTPS_SCHEME : HTTP_SCHEME,
                 l->endpoint_host, l->region) < 0) {
        l->description = NULL;
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    return 0;
}

int ms_s3_location_parse(const char *location, MsS3Location *ret, MsError *e) {
    if (!location || strncmp(location, MS_S3_SCHEME, strlen(MS_S3_SCHEME)) != 0)
        return ms_error_set(e, EINVAL, "not an S3 location; the syntax is %s", location_syntax);
    const char *p = location + strlen(MS_S3_SCHEME);
    size_t auth_len = strcspn(p, "/?#");
    /* Checked before anything is echoed: "s3://KEY:SECRET@bucket" must never reach a log. */
    if (memchr(p, '@', auth_len))
        return credentials_in_location(e);
    if (p[strcspn(p, "#")] == '#')
        return ms_error_set(e, EINVAL, "the S3 location has a '#' fragment; remove it");

    MsS3Location l = {
        .part_size = MS_S3_DEFAULT_PART_SIZE,
        .parallel = MS_S3_DEFAULT_PARALLEL,
        .presign_expires_sec = MS_S3_DEFAULT_PRESIGN_SECONDS,
        .max_attempts = MS_S3_DEFAULT_MAX_ATTEMPTS,
        .connect_timeout_sec = MS_S3_DEFAULT_CONNECT_TIMEOUT_SEC,
        .stall_timeout_sec = MS_S3_DEFAULT_STALL_TIMEOUT_SEC,
    };
    int r = 0;
    bool have_addressing = false;
    l.bucket = strndup(p, auth_len);
    if (!l.bucket) {
        r = ms_error_set(e, ENOMEM, "out of memory");
        goto fail;
    }
    if (!bucket_name_is_valid(l.bucket)) {
        r = ms_error_set(e, EINVAL,
                         "'%s' is not a valid S3 bucket name: 3 to 63 lower-case letters, digits, "
                         "'.' and '-', starting and ending with a letter or digit (syntax: %s)",
                         l.bucket, location_syntax);
        goto fail;
    }
    p += auth_len;
    size_t path_len = strcspn(p, "?");
    /* Leading and trailing slashes carry no meaning: "s3://b/x/" is "s3://b/x". */
    const char *path = p;
    size_t plen = path_len;
    while (plen > 0 && path[0] == '/')
        path++, plen--;
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    l.prefix = percent_decode(path, plen);
    if (!l.prefix) {
        r = errno == ENOMEM ? ms_error_set(e, ENOMEM, "out of memory")
                            : ms_error_set(e, EINVAL, "the S3 prefix has an invalid %%-escape");
        goto fail;
    }
    if (*l.prefix && !ms_storage_key_is_valid(l.prefix)) {
        r = ms_error_set(e, EINVAL,
                         "S3 prefix '%s' is not valid: '/'-separated names without empty, '.', "
                         "'..' or '.tmp-*' names or control characters",
                         l.prefix);
        goto fail;
    }
    p += path_len;
    if (*p == '?') {
        r = parse_query(&l, p + 1, &have_addressing, e);
        if (r < 0)
            goto fail;
    }
    r = finish_location(&l, have_addressing, e);
    if (r < 0)
        goto fail;
    *ret = l;
    return 0;
fail:
    ms_s3_location_done(&l);
    return r;
}

char *ms_s3_location_full_key(const MsS3Location *l, const char *key) {
    char *s = NULL;
    if (asprintf(&s, "%s%s%s", l->prefix, *l->prefix ? "/" : "", key) < 0)
        return NULL;
    return s;
}

void ms_s3_target_done(MsS3Target *t) {
    if (!t)
        return;
    free(t->base_url);
    free(t->host);
    free(t->canonical_uri);
    *t = (MsS3Target){0};
}

/* asprintf() that returns the string, NULL on failure (asprintf leaves its pointer
 * undefined then). */
static char *strprintf(const char *fmt, ...) _printf_(1, 2);
static char *strprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

int ms_s3_location_target(const MsS3Location *l, const char *full_key, MsS3Target *ret) {
    MsS3Target t = {0};
    _cleanup_free_ char *enc = full_key ? ms_s3_uri_encode(full_key, true) : strdup("");
    if (!enc)
        return -ENOMEM;
    if (l->addressing == MS_S3_ADDRESSING_VIRTUAL) {
        t.host = strprintf("%s.%s", l->bucket, l->endpoint_host);
        t.canonical_uri = strprintf("/%s", enc);
    } else {
        t.host = strdup(l->endpoint_host);
        t.canonical_uri =
            full_key ? strprintf("/%s/%s", l->bucket, enc) : strprintf("/%s", l->bucket);
    }
    if (t.host)
        t.base_url = strprintf("%s%s", l->https ? HTTPS_SCHEME : HTTP_SCHEME, t.host);
    if (!t.host || !t.canonical_uri || !t.base_url) {
        ms_s3_target_done(&t);
        return -ENOMEM;
    }
    *ret = t;
    return 0;
}

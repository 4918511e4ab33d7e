/* Driver-independent storage code: key validation, location parsing, whole-object put/get. */
#include "storage.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"

/* Keys become file names (local) or object names (S3, limit 1024 bytes): keep them within
 * what every backend accepts. */
#define MS_STORAGE_KEY_MAX 1024
/* One component becomes one directory entry; NAME_MAX is the usual file system limit. */
#define MS_STORAGE_COMPONENT_MAX NAME_MAX
/* Names starting with this belong to the drivers' in-flight writes (see storage-local.c). */
#define MS_STORAGE_TMP_PREFIX ".tmp-"
/* ms_storage_get() reads in steps of this size so a small max does not over-allocate. */
#define MS_STORAGE_GET_CHUNK (64 * 1024)

#define FILE_URI_PREFIX "file://"
#define S3_URI_PREFIX "s3://"

static bool component_is_valid(const char *c, size_t len) {
    if (len == 0 || len > MS_STORAGE_COMPONENT_MAX)
        return false;
    if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
        return false;
    if (len >= strlen(MS_STORAGE_TMP_PREFIX) &&
        memcmp(c, MS_STORAGE_TMP_PREFIX, strlen(MS_STORAGE_TMP_PREFIX)) == 0)
        return false;
    return true;
}

bool ms_storage_key_is_valid(const char *key) {
    if (!key || key[0] == '\0' || key[0] == '/')
        return false;
    size_t len = strnlen(key, MS_STORAGE_KEY_MAX + 1);
    if (len > MS_STORAGE_KEY_MAX)
        return false;
    /* Control characters would end up in file names, log lines and manifests where they
     * hide or fake text; no sane key needs them. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) key[i] < 0x20 || key[i] == 0x7f)
            return false;
    const char *c = key;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t clen = slash ? (size_t) (slash - c) : strlen(c);
        if (!component_is_valid(c, clen))
            return false;
        if (!slash)
            return true;
        c = slash + 1;
    }
}

/* Decode %XX escapes of a file URI path; refuses %00 and malformed escapes. */
static int uri_path_decode(const char *location, const char *in, char **ret, MsError *e) {
    _cleanup_free_ char *out = malloc(strlen(in) + 1);
    if (!out)
        return ms_error_set(e, ENOMEM, "out of memory");
    char *o = out;
    for (const char *p = in; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        int hi = ms_hex_digit_value(p[1]), lo = hi >= 0 ? ms_hex_digit_value(p[2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return ms_error_set(e, EINVAL,
                                "storage location '%s' has an invalid %%-escape; write the path "
                                "plainly (\"/var/lib/...\") or escape bytes as %%XX",
                                location);
        *o++ = (char) (hi * 16 + lo);
        p += 2;
    }
    *o = '\0';
    *ret = TAKE_PTR(out);
    return 0;
}

int ms_storage_open(const char *location, MsStorage **ret, MsError *e) {
    if (!location || location[0] == '\0')
        return ms_error_set(e, EINVAL,
                            "no storage location given; set it to a directory (\"/var/lib/"
                            "mongosnap/store\") or a file:// URI");

    if (location[0] == '/')
        return ms_storage_local_new(location, ret, e);

    if (strncmp(location, FILE_URI_PREFIX, strlen(FILE_URI_PREFIX)) == 0) {
        const char *rest = location + strlen(FILE_URI_PREFIX);
        /* RFC 8089: "file:///path" or "file://localhost/path"; other hosts are remote. */
        if (strncmp(rest, "localhost/", strlen("localhost/")) == 0)
            rest += strlen("localhost");
        if (rest[0] != '/')
            return ms_error_set(e, EINVAL,
                                "storage location '%s' names a host or a relative path; local "
                                "storage needs an absolute path: \"file:///abs/dir\" (three "
                                "slashes) or just \"/abs/dir\"",
                                location);
        _cleanup_free_ char *path = NULL;
        int r = uri_path_decode(location, rest, &path, e);
        if (r < 0)
            return r;
        return ms_storage_local_new(path, ret, e);
    }

    if (strncmp(location, S3_URI_PREFIX, strlen(S3_URI_PREFIX)) == 0)
        /* Not echoed here: an S3 location may (wrongly) hold credentials; the driver checks
         * that before it repeats any of it. */
        return ms_storage_s3_new(location, ret, e);

    const char *scheme_end = strstr(location, "://");
    if (scheme_end)
        return ms_error_set(e, EPROTONOSUPPORT,
                            "storage location '%s' uses an unknown scheme '%.*s'; supported: "
                            "an absolute directory path, file:///abs/dir or s3://bucket/prefix",
                            location, (int) (scheme_end - location), location);

    return ms_error_set(e, EINVAL,
                        "storage location '%s' is a relative path; give an absolute directory "
                        "path (\"/var/lib/mongosnap/store\") so it does not depend on the "
                        "working directory",
                        location);
}

int ms_storage_put(MsStorage *s, const char *key, const void *buf, size_t len, MsError *e) {
    _cleanup_(ms_sink_freep) MsSink *sink = NULL;
    int r = ms_storage_open_write(s, key, &sink, e);
    if (r < 0)
        return r;
    r = ms_sink_write(sink, buf, len, e);
    if (r < 0)
        return r;
    /* On failure the cleanup frees the unfinished sink, which discards the object. */
    return ms_sink_finish(sink, e);
}

int ms_storage_get(MsStorage *s, const char *key, size_t max, char **ret, size_t *ret_len,
                   MsError *e) {
    _cleanup_(ms_source_freep) MsSource *src = NULL;
    int r = ms_storage_open_read(s, key, &src, e);
    if (r < 0)
        return r;

    /* Room for one byte beyond max (to detect an oversized object) and for the NUL. */
    if (max > SIZE_MAX - 2)
        max = SIZE_MAX - 2;
    _cleanup_free_ char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        /* len <= max here, so cap < max + 2 whenever we need to grow. */
        if (cap - len < 2) {
            size_t ncap = MS_MIN(cap + MS_STORAGE_GET_CHUNK, max + 2);
            char *nbuf = realloc(buf, ncap);
            if (!nbuf)
                return ms_error_set(e, ENOMEM, "out of memory reading object '%s'", key);
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = ms_source_read(src, buf + len, cap - len - 1, e);
        if (n < 0)
            return (int) n;
        if (n == 0)
            break;
        len += (size_t) n;
        if (len > max)
            return ms_error_set(e, EFBIG,
                                "object '%s' in store '%s' is larger than the limit of %zu "
                                "bytes; it is not the small object expected here (wrong key, "
                                "or a damaged or foreign file)",
                                key, ms_storage_describe(s), max);
    }
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    if (ret_len)
        *ret_len = len;
    return 0;
}

int ms_storage_download_url(MsStorage *s, const char *key, uint64_t expires_usec, char **ret_url,
                            MsError *e) {
    if (!s->ops->download_url)
        return ms_error_set(e, EOPNOTSUPP,
                            "store '%s' has no download addresses; only S3 stores can hand out "
                            "presigned URLs",
                            ms_storage_describe(s));
    return s->ops->download_url(s, key, expires_usec, ret_url, e);
}

int ms_storage_list_children(MsStorage *s, const char *dir, const char *suffix,
                             MsStorageObject **ret, size_t *ret_n, MsError *e) {
    MsStorageObject *objs = NULL;
    size_t n = 0, k = 0, dl = strlen(dir), sl = suffix ? strlen(suffix) : 0;
    int r = ms_storage_list(s, dir, &objs, &n, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        const char *name = objs[i].key + (strncmp(objs[i].key, dir, dl) == 0 ? dl : 0);
        size_t nl = strlen(name);
        if (!strchr(name, '/') && nl > sl && (!suffix || strcmp(name + nl - sl, suffix) == 0))
            objs[k++] = objs[i];
        else
            free(objs[i].key);
    }
    *ret = objs;
    *ret_n = k;
    return 0;
}

void ms_storage_objects_free(MsStorageObject *objs, size_t n) {
    if (!objs)
        return;
    for (size_t i = 0; i < n; i++)
        free(objs[i].key);
    free(objs);
}

MsStorage *ms_storage_free(MsStorage *s) {
    if (s)
        s->ops->free(s);
    return NULL;
}

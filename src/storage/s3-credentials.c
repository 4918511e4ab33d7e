/* Finding S3 credentials: systemd credentials, then the AWS environment, then ~/.aws. */
#include "s3-credentials.h"

#include "common/credential-store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "common/macro.h"
#include "common/redact.h"

#define ENV_ACCESS_KEY_ID "AWS_ACCESS_KEY_ID"
#define ENV_SECRET_ACCESS_KEY "AWS_SECRET_ACCESS_KEY"
#define ENV_SESSION_TOKEN "AWS_SESSION_TOKEN"
#define ENV_SHARED_CREDENTIALS_FILE "AWS_SHARED_CREDENTIALS_FILE"
#define ENV_PROFILE "AWS_PROFILE"
#define DEFAULT_PROFILE "default"
#define SHARED_FILE_UNDER_HOME ".aws/credentials"
/* A credential file holds one short line; anything bigger is not one. */
#define CREDENTIAL_FILE_MAX (64 * 1024)
/* The shared file may hold many profiles, but not megabytes. */
#define SHARED_FILE_MAX (1024 * 1024)
/* Stands in for a value too long for inih's line buffer (session tokens are ~1 KiB, the
 * distribution's inih cuts lines at 200 bytes); the real value travels in the parser state. */
#define LONG_VALUE_MARK "\x01"

static const char no_credentials_hint[] =
    "give them as systemd credentials (LoadCredential=" MS_S3_CRED_ACCESS_KEY_ID
    " and " MS_S3_CRED_SECRET_ACCESS_KEY "), in the environment (" ENV_ACCESS_KEY_ID
    " and " ENV_SECRET_ACCESS_KEY "), or in the shared credentials file (~/" SHARED_FILE_UNDER_HOME
    ", profile $" ENV_PROFILE " or \"" DEFAULT_PROFILE "\")";

void ms_s3_credentials_done(MsS3Credentials *c) {
    if (!c)
        return;
    ms_secret_free(c->access_key_id);
    ms_secret_free(c->secret_access_key);
    ms_secret_free(c->session_token);
    free(c->source);
    *c = (MsS3Credentials){0};
}

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Read a small file whole; the buffer is wiped by the caller (it may hold a secret).
 * Returns -ENOENT quietly when the file does not exist. */
static int read_small_file(int dir_fd, const char *name, const char *what, size_t max, char **ret,
                           size_t *ret_len, MsError *e) {
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return ms_error_set(e, errno, "cannot open %s: %s", what, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t) st.st_size > max) {
        close(fd);
        return ms_error_set(e, EINVAL, "%s is not a regular file of at most %zu bytes", what, max);
    }
    size_t cap = (size_t) st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            explicit_bzero(buf, cap);
            free(buf);
            return ms_error_set(e, err, "cannot read %s: %s", what, strerror(err));
        }
        if (n == 0)
            break;
        len += (size_t) n;
        if (len == cap - 1)
            break; /* the file grew since fstat: keep what was there */
    }
    close(fd);
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* One credential file: the value is its content without surrounding blanks. */
static int read_credential(int dir_fd, const char *name, const char *dir, bool required, char **ret,
                           MsError *e) {
    char what[PATH_MAX + 64];
    snprintf(what, sizeof(what), "systemd credential %s/%s", dir, name);
    char *buf = NULL;
    size_t len = 0;
    int r = read_small_file(dir_fd, name, what, CREDENTIAL_FILE_MAX, &buf, &len, e);
    if (r == -ENOENT) {
        if (!required) {
            *ret = NULL;
            return 0;
        }
        return ms_error_set(e, ENOKEY,
                            "systemd credential %s is missing while %s is there; pass both "
                            "(LoadCredential=%s and LoadCredential=%s)",
                            what, MS_S3_CRED_ACCESS_KEY_ID, MS_S3_CRED_ACCESS_KEY_ID,
                            MS_S3_CRED_SECRET_ACCESS_KEY);
    }
    if (r < 0)
        return r;
    size_t orig_len = len, start = 0;
    while (start < len && is_blank(buf[start]))
        start++;
    while (len > start && is_blank(buf[len - 1]))
        len--;
    if (len == start || memchr(buf + start, '\n', len - start) ||
        strlen(buf + start) < len - start) {
        explicit_bzero(buf, orig_len);
        free(buf);
        return ms_error_set(e, EINVAL,
                            "%s must hold exactly one non-empty line (it is empty, has several "
                            "lines or a NUL byte)",
                            what);
    }
    size_t n = len - start;
    memmove(buf, buf + start, n);
    explicit_bzero(buf + n, orig_len - n);
    buf[n] = '\0';
    *ret = buf;
    return 0;
}

static int load_from_dir(MsS3Credentials *c, const char *dir, const char *what, bool *ret_found,
                         MsError *e) {
    *ret_found = false;
    if (!dir || !*dir)
        return 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0; /* no credentials passed to this unit: look elsewhere */
    int r = read_credential(dfd, MS_S3_CRED_ACCESS_KEY_ID, dir, false, &c->access_key_id, e);
    if (r >= 0 && c->access_key_id) {
        r = read_credential(dfd, MS_S3_CRED_SECRET_ACCESS_KEY, dir, true, &c->secret_access_key, e);
        if (r >= 0)
            r = read_credential(dfd, MS_S3_CRED_SESSION_TOKEN, dir, false, &c->session_token, e);
        if (r >= 0 && asprintf(&c->source, "%s in %s (%s, %s)", what, dir,
                               MS_S3_CRED_ACCESS_KEY_ID, MS_S3_CRED_SECRET_ACCESS_KEY) < 0) {
            c->source = NULL;
            r = ms_error_set(e, ENOMEM, "out of memory");
        }
        *ret_found = r >= 0;
    }
    close(dfd);
    return r;
}

/* The unit's systemd credentials, then mongosnap's credential store. */
static int load_from_systemd(MsS3Credentials *c, bool *ret_found, MsError *e) {
    const char *dirs[MS_CREDENTIAL_DIRS_MAX];
    size_t n = ms_credential_dirs(dirs);
    *ret_found = false;
    for (size_t i = 0; i < n && !*ret_found; i++) {
        bool store = strcmp(dirs[i], ms_credential_store_dir()) == 0;
        int r = load_from_dir(c, dirs[i],
                              store ? "mongosnap's credential store" : "the systemd credentials",
                              ret_found, e);
        if (r < 0)
            return r;
    }
    return 0;
}

static int dup_secret(const char *v, char **ret, MsError *e) {
    *ret = strdup(v);
    return *ret ? 0 : ms_error_set(e, ENOMEM, "out of memory");
}

static int load_from_env(MsS3Credentials *c, bool *ret_found, MsError *e) {
    const char *id = getenv(ENV_ACCESS_KEY_ID), *secret = getenv(ENV_SECRET_ACCESS_KEY),
               *token = getenv(ENV_SESSION_TOKEN);
    *ret_found = false;
    if (!id || !*id) {
        if (secret && *secret)
            return ms_error_set(e, ENOKEY,
                                ENV_SECRET_ACCESS_KEY " is set but " ENV_ACCESS_KEY_ID
                                                      " is not; set both");
        return 0;
    }
    if (!secret || !*secret)
        return ms_error_set(e, ENOKEY,
                            ENV_ACCESS_KEY_ID " is set but " ENV_SECRET_ACCESS_KEY " is not; set "
                                              "both");
    int r = dup_secret(id, &c->access_key_id, e);
    if (r >= 0)
        r = dup_secret(secret, &c->secret_access_key, e);
    if (r >= 0 && token && *token)
        r = dup_secret(token, &c->session_token, e);
    if (r >= 0 &&
        !(c->source = strdup("the environment (" ENV_ACCESS_KEY_ID ", " ENV_SECRET_ACCESS_KEY ")")))
        r = ms_error_set(e, ENOMEM, "out of memory");
    *ret_found = r >= 0;
    return r;
}

typedef struct SharedParser {
    const char *pos, *end;
    const char *path;
    const char *profile;
    unsigned line;
    const char *long_value;
    size_t long_value_len;
    bool in_profile, saw_profile;
    MsS3Credentials *c;
    MsError *e;
    int error;
} SharedParser;

/* inih's reader: one line per call, blanks around it removed (so an indented line is never
 * taken for a continuation), over-long values passed beside inih. */
static char *shared_read_line(char *str, int num, void *stream) {
    SharedParser *p = stream;
    if (p->error < 0 || p->pos >= p->end)
        return NULL;
    const char *start = p->pos;
    const char *nl = memchr(start, '\n', (size_t) (p->end - start));
    const char *stop = nl ? nl : p->end;
    p->pos = nl ? nl + 1 : p->end;
    p->line++;
    while (start < stop && is_blank(*start))
        start++;
    while (stop > start && is_blank(stop[-1]))
        stop--;
    size_t len = (size_t) (stop - start);
    p->long_value = NULL;
    if (len + 2 > (size_t) num) {
        const char *eq = memchr(start, '=', len);
        size_t name_len = eq ? (size_t) (eq - start) : len;
        if (!eq || name_len + strlen(LONG_VALUE_MARK) + 3 > (size_t) num) {
            p->error = ms_error_set(p->e, EINVAL, "%s:%u: line too long", p->path, p->line);
            return NULL;
        }
        const char *v = eq + 1;
        while (v < stop && is_blank(*v))
            v++;
        p->long_value = v;
        p->long_value_len = (size_t) (stop - v);
        snprintf(str, (size_t) num, "%.*s=" LONG_VALUE_MARK "\n", (int) name_len, start);
        return str;
    }
    memcpy(str, start, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static int shared_set(SharedParser *p, char **field, const char *value) {
    ms_secret_free(*field);
    *field = p->long_value && strcmp(value, LONG_VALUE_MARK) == 0
                 ? strndup(p->long_value, p->long_value_len)
                 : strdup(value);
    if (!*field) {
        p->error = ms_error_set(p->e, ENOMEM, "out of memory");
        return 0;
    }
    return 1;
}

static int shared_handle(void *user, const char *section, const char *name, const char *value) {
    SharedParser *p = user;
    if (p->error < 0)
        return 0;
    if (strcmp(section, p->profile) != 0)
        return 1;
    p->saw_profile = true;
    if (!name)
        return 1;
    if (strcmp(name, "aws_access_key_id") == 0)
        return shared_set(p, &p->c->access_key_id, value);
    if (strcmp(name, "aws_secret_access_key") == 0)
        return shared_set(p, &p->c->secret_access_key, value);
    if (strcmp(name, "aws_session_token") == 0)
        return shared_set(p, &p->c->session_token, value);
    return 1; /* region, output, ...: not ours */
}

static int load_from_shared_file(MsS3Credentials *c, bool *ret_found, MsError *e) {
    *ret_found = false;
    const char *env_path = getenv(ENV_SHARED_CREDENTIALS_FILE);
    _cleanup_free_ char *path = NULL;
    if (env_path && *env_path)
        path = strdup(env_path);
    else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return 0;
        if (asprintf(&path, "%s/" SHARED_FILE_UNDER_HOME, home) < 0)
            path = NULL;
    }
    if (!path)
        return ms_error_set(e, ENOMEM, "out of memory");
    const char *profile = getenv(ENV_PROFILE);
    if (!profile || !*profile)
        profile = DEFAULT_PROFILE;

    char what[PATH_MAX + 64];
    snprintf(what, sizeof(what), "the shared credentials file %s", path);
    char *buf = NULL;
    size_t len = 0;
    int r = read_small_file(AT_FDCWD, path, what, SHARED_FILE_MAX, &buf, &len, e);
    if (r == -ENOENT) {
        if (env_path && *env_path)
            return ms_error_set(e, ENOKEY, ENV_SHARED_CREDENTIALS_FILE "=%s does not exist", path);
        return 0;
    }
    if (r < 0)
        return r;
    SharedParser p = {
        .pos = buf,
        .end = buf + len,
        .path = path,
        .profile = profile,
        .c = c,
        .e = e,
    };
    r = ini_parse_stream(shared_read_line, &p, shared_handle, &p);
    explicit_bzero(buf, len);
    free(buf);
    if (p.error < 0)
        return p.error;
    if (r > 0)
        return ms_error_set(e, EINVAL,
                            "%s:%d: cannot parse this line (expected name = value or "
                            "[profile])",
                            path, r);
    if (r < 0)
        return ms_error_set(e, ENOMEM, "out of memory parsing %s", path);
    if (!p.saw_profile || !c->access_key_id) {
        if (env_path || strcmp(profile, DEFAULT_PROFILE) != 0)
            return ms_error_set(e, ENOKEY, "profile [%s] in %s has no aws_access_key_id", profile,
                                path);
        return 0; /* a default file without a default profile: as if there were none */
    }
    if (!c->secret_access_key)
        return ms_error_set(e, ENOKEY,
                            "profile [%s] in %s has aws_access_key_id but no "
                            "aws_secret_access_key",
                            profile, path);
    if (asprintf(&c->source, "the shared credentials file %s (profile %s)", path, profile) < 0) {
        c->source = NULL;
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    *ret_found = true;
    return 0;
}

int ms_s3_credentials_load(MsS3Credentials *ret, MsError *e) {
    MsS3Credentials c = {0};
    bool found = false;
    int r = load_from_systemd(&c, &found, e);
    if (r >= 0 && !found)
        r = load_from_env(&c, &found, e);
    if (r >= 0 && !found)
        r = load_from_shared_file(&c, &found, e);
    if (r >= 0 && !found)
        r = ms_error_set(e, ENOKEY, "no S3 credentials found; %s", no_credentials_hint);
    if (r < 0) {
        ms_s3_credentials_done(&c);
        return r;
    }
    *ret = c;
    return 0;
}

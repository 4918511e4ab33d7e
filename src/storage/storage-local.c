/* The local directory storage driver: atomic writes (temp file + rename), symlink-safe walks. */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOCAL_DIR_MODE 0750
#define LOCAL_FILE_MODE 0640
/* Archives are written through compressors that emit small pieces; gather them so the file
 * system sees large writes. */
#define LOCAL_WRITE_BUFFER (1024 * 1024)
/* In-flight writes live next to their final name under this prefix; keys may not use it
 * (ms_storage_key_is_valid), so list() can skip them and clean_stale() can find them. */
#define LOCAL_TMP_PREFIX ".tmp-"
#define LOCAL_TMP_PREFIX_LEN (sizeof(LOCAL_TMP_PREFIX) - 1)
#define LOCAL_TMP_RANDOM_BYTES 8
/* ".tmp-" + base + "-" + hex random must fit in one directory entry: long bases are cut. */
#define LOCAL_TMP_BASE_MAX (NAME_MAX - LOCAL_TMP_PREFIX_LEN - 1 - 2 * LOCAL_TMP_RANDOM_BYTES)
/* Retries when a concurrent remove() prunes the empty directory we are about to create a
 * file in, or (practically never) when a random temp name collides. */
#define LOCAL_CREATE_ATTEMPTS 8
/* Each component is opened on its own and never through a symlink, so neither ".." nor a
 * link planted inside the store can lead outside the root. */
#define LOCAL_DIR_OPEN_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

typedef struct LocalStorage {
    MsStorage base;
    int root_fd;
    char *root;
    char *description;
} LocalStorage;

static const char *errno_hint(int err) {
    switch (err) {
    case EACCES:
    case EPERM:
        return " (check that the user running mongosnap owns the store directory and may "
               "write to it)";
    case ENOSPC:
        return " (the file system holding the store is full: free space or move the store)";
    case EDQUOT:
        return " (the disk quota of the user running mongosnap is exhausted)";
    case EROFS:
        return " (the store is on a read-only file system)";
    case ELOOP:
        return " (a symbolic link is in the way; mongosnap never follows links inside the "
               "store: replace it with a real directory or file)";
    case ENOTDIR:
        return " (a file is in the way where a directory is expected)";
    case EIO:
        return " (input/output error: check the disk and the kernel log)";
    default:
        return "";
    }
}

/* "cannot write object 'k' in store 'local:/x': No space left on device (hint)" */
static int local_error(const char *where, MsError *e, int err, const char *what, const char *key) {
    return ms_error_set(e, err, "%s '%s' in store '%s': %s%s", what, key, where, strerror(err),
                        errno_hint(err));
}

static int invalid_key_error(LocalStorage *ls, MsError *e, const char *what, const char *key) {
    return ms_error_set(e, EINVAL,
                        "invalid %s '%s' for store '%s': keys are relative paths of "
                        "'/'-separated names, without empty, '.', '..' or '.tmp-*' names, "
                        "control characters or a leading '/'",
                        what, key ? key : "(null)", ls->description);
}

static bool startswith(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int64_t stat_mtime_usec(const struct stat *st) {
    return (int64_t) st->st_mtim.tv_sec * 1000000 + st->st_mtim.tv_nsec / 1000;
}

/* Split key into its directory part (length, no trailing '/') and its last name. */
static void split_key(const char *key, size_t *ret_dir_len, const char **ret_base) {
    const char *slash = strrchr(key, '/');
    *ret_dir_len = slash ? (size_t) (slash - key) : 0;
    *ret_base = slash ? slash + 1 : key;
}

static bool is_symlink_at(int dir_fd, const char *name) {
    struct stat sb;
    return fstatat(dir_fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode);
}

/* Open the directory made of the first len bytes of path ('/'-separated, relative to the
 * root; len 0 is the root itself) one component at a time. With create, missing
 * directories are made. Returns a new fd or -errno and leaves e alone: what a failure
 * means (missing object, nothing to list, real error) is the caller's call. */
static int open_dirs(LocalStorage *ls, const char *path, size_t len, bool create) {
    /* A fresh open, not a dup: a dup would share the directory read position with root_fd
     * and every other dup, and a second listing of the root would come back empty. */
    int fd = openat(ls->root_fd, ".", LOCAL_DIR_OPEN_FLAGS);
    if (fd < 0)
        return -errno;

    size_t i = 0;
    while (i < len) {
        const char *slash = memchr(path + i, '/', len - i);
        size_t clen = slash ? (size_t) (slash - (path + i)) : len - i;
        char comp[NAME_MAX + 1];
        if (clen == 0 || clen > NAME_MAX) {
            close(fd);
            return -EINVAL;
        }
        memcpy(comp, path + i, clen);
        comp[clen] = '\0';

        int sub = -1, err = 0;
        for (unsigned attempt = 0;; attempt++) {
            sub = openat(fd, comp, LOCAL_DIR_OPEN_FLAGS);
            if (sub >= 0)
                break;
            err = errno;
            /* O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR on Linux; say ELOOP so
             * the message names the real obstacle. */
            if (err == ENOTDIR && is_symlink_at(fd, comp))
                err = ELOOP;
            if (err != ENOENT || !create || attempt >= LOCAL_CREATE_ATTEMPTS)
                break;
            if (mkdirat(fd, comp, LOCAL_DIR_MODE) == 0) {
                /* The new entry must be durable before an object inside it is committed. */
                if (fsync(fd) < 0) {
                    err = errno;
                    break;
                }
            } else if (errno != EEXIST) {
                err = errno;
                break;
            }
            /* Made (or made by someone else): open it on the next round. */
        }
        close(fd);
        if (sub < 0)
            return -err;
        fd = sub;
        i += clen + 1;
    }
    return fd;
}

/* What a stat of an object's name means for callers that read it: only regular files are
 * objects; a directory is a prefix of other objects (so: no such object, as in S3). */
static int check_object_mode(LocalStorage *ls, const char *key, mode_t mode, MsError *e) {
    if (S_ISREG(mode))
        return 0;
    if (S_ISDIR(mode))
        return ms_error_set(e, ENOENT,
                            "no object '%s' in store '%s' (that name is a directory holding "
                            "other objects)",
                            key, ls->description);
    if (S_ISLNK(mode))
        return local_error(ls->description, e, ELOOP, "refusing to read object", key);
    return ms_error_set(e, EINVAL,
                        "'%s' in store '%s' is not a regular file, so not an object; remove "
                        "whatever was put there by hand",
                        key, ls->description);
}

static int no_object_error(LocalStorage *ls, MsError *e, const char *key) {
    return ms_error_set(e, ENOENT,
                        "no object '%s' in store '%s'; check the key, or whether the backup was "
                        "removed by retention",
                        key, ls->description);
}

/* Open the directory holding key for reading; a missing directory is a missing object. */
static int open_parent_for_read(LocalStorage *ls, const char *key, const char *what,
                                const char **ret_base, MsError *e) {
    if (!ms_storage_key_is_valid(key))
        return invalid_key_error(ls, e, "object key", key);
    size_t dir_len;
    split_key(key, &dir_len, ret_base);
    int fd = open_dirs(ls, key, dir_len, false);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return no_object_error(ls, e, key);
    if (fd < 0)
        return local_error(ls->description, e, -fd, what, key);
    return fd;
}

/* ---- writing ---- */

typedef struct LocalSink {
    MsSink base;
    char *key;
    char *where; /* copy of the store description, so messages never outlive it */
    const char *final_name; /* points into key */
    int dir_fd;
    int fd;
    char tmp_name[NAME_MAX + 1];
    uint8_t *buf;
    size_t buf_len;
    int error; /* sticky negative errno after a failed write */
    bool committed;
    bool unsynced; /* durability left to local_sync() */
} LocalSink;

static int write_all(int fd, const uint8_t *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

static int local_sink_fail(LocalSink *ls, MsError *e, int r, const char *what) {
    ls->error = r;
    return local_error(ls->where, e, -r, what, ls->key);
}

static int local_sink_flush(LocalSink *ls, MsError *e) {
    if (ls->buf_len == 0)
        return 0;
    int r = write_all(ls->fd, ls->buf, ls->buf_len);
    if (r < 0)
        return local_sink_fail(ls, e, r, "cannot write object");
    ls->buf_len = 0;
    return 0;
}

static int local_sink_check_usable(LocalSink *ls, MsError *e) {
    if (ls->error < 0)
        return ms_error_set(e, -ls->error,
                            "object '%s' in store '%s' cannot be completed after an earlier "
                            "write error",
                            ls->key, ls->where);
    if (ls->committed || ls->fd < 0)
        return ms_error_set(e, EINVAL, "object '%s' in store '%s' was already finished",
                            ls->key, ls->where);
    return 0;
}

static int local_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    LocalSink *ls = (LocalSink *) s;
    int r = local_sink_check_usable(ls, e);
    if (r < 0)
        return r;

    if (len <= LOCAL_WRITE_BUFFER - ls->buf_len) {
        memcpy(ls->buf + ls->buf_len, buf, len);
        ls->buf_len += len;
        return 0;
    }
    r = local_sink_flush(ls, e);
    if (r < 0)
        return r;
    if (len >= LOCAL_WRITE_BUFFER) {
        /* Large pieces go straight through: copying them buys nothing. */
        r = write_all(ls->fd, buf, len);
        if (r < 0)
            return local_sink_fail(ls, e, r, "cannot write object");
        return 0;
    }
    memcpy(ls->buf, buf, len);
    ls->buf_len = len;
    return 0;
}

static int local_sink_finish(MsSink *s, MsError *e) {
    LocalSink *ls = (LocalSink *) s;
    if (ls->committed)
        return 0;
    int r = local_sink_check_usable(ls, e);
    if (r < 0)
        return r;
    r = local_sink_flush(ls, e);
    if (r < 0)
        return r;

    /* Data first, then the name: after a crash the key holds either the old object or the
     * complete new one, never a torn file. Unsynced writes leave both to local_sync(). */
    if (!ls->unsynced && fsync(ls->fd) < 0)
        return local_sink_fail(ls, e, -errno, "cannot sync object");
    int fd = TAKE_FD(ls->fd);
    if (close(fd) < 0 && errno != EINTR)
        return local_sink_fail(ls, e, -errno, "cannot close object");
    if (renameat(ls->dir_fd, ls->tmp_name, ls->dir_fd, ls->final_name) < 0)
        return local_sink_fail(ls, e, -errno, "cannot commit object");
    ls->committed = true;
    if (!ls->unsynced && fsync(ls->dir_fd) < 0) {
        /* The rename may not survive a crash. The contract says a failed finish leaves
         * nothing behind, so take the object away again rather than leave one the caller
         * believes was never written. */
        r = local_error(ls->where, e, errno, "cannot sync the directory of object", ls->key);
        (void) unlinkat(ls->dir_fd, ls->final_name, 0);
        ls->error = r;
        return r;
    }
    return 0;
}

static void local_sink_free(MsSink *s) {
    LocalSink *ls = (LocalSink *) s;
    if (ls->fd >= 0)
        close(ls->fd);
    /* Not committed: this write is abandoned (error, cancellation), leave nothing. */
    if (!ls->committed && ls->tmp_name[0] && ls->dir_fd >= 0)
        (void) unlinkat(ls->dir_fd, ls->tmp_name, 0);
    if (ls->dir_fd >= 0)
        close(ls->dir_fd);
    free(ls->buf);
    free(ls->key);
    free(ls->where);
    free(ls);
}

static void random_hex(char ret[2 * LOCAL_TMP_RANDOM_BYTES + 1]) {
    uint8_t b[LOCAL_TMP_RANDOM_BYTES];
    if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t) sizeof(b)) {
        /* Only uniqueness matters (O_EXCL guards against collisions anyway), so a clock,
         * pid and counter mix is an acceptable fallback when the pool is not ready. */
        static uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^
                     ((uint64_t) getpid() << 48) ^
                     (__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9e3779b97f4a7c15ULL);
        _Static_assert(sizeof(x) == LOCAL_TMP_RANDOM_BYTES, "random size");
        memcpy(b, &x, sizeof(b));
    }
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(b); i++) {
        ret[2 * i] = digits[b[i] >> 4];
        ret[2 * i + 1] = digits[b[i] & 0xf];
    }
    ret[2 * sizeof(b)] = '\0';
}

static int open_write(MsStorage *s, const char *key, bool unsynced, MsSink **ret, MsError *e) {
    LocalStorage *st = (LocalStorage *) s;
    if (!ms_storage_key_is_valid(key))
        return invalid_key_error(st, e, "object key", key);

    LocalSink *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return ms_error_set(e, ENOMEM, "out of memory");
    ls->base = (MsSink){local_sink_write, local_sink_finish, local_sink_free};
    ls->dir_fd = ls->fd = -1;
    ls->unsynced = unsynced;
    _cleanup_(ms_sink_freep) MsSink *sink = &ls->base;
    ls->key = strdup(key);
    ls->where = strdup(st->description);
    ls->buf = malloc(LOCAL_WRITE_BUFFER);
    if (!ls->key || !ls->where || !ls->buf)
        return ms_error_set(e, ENOMEM, "out of memory");

    size_t dir_len;
    split_key(ls->key, &dir_len, &ls->final_name);
    size_t base_len = MS_MIN(strlen(ls->final_name), (size_t) LOCAL_TMP_BASE_MAX);

    for (unsigned attempt = 0;; attempt++) {
        int dfd = open_dirs(st, key, dir_len, true);
        if (dfd < 0)
            return local_error(st->description, e, -dfd,
                               "cannot create the directories for object", key);
        char rnd[2 * LOCAL_TMP_RANDOM_BYTES + 1];
        random_hex(rnd);
        snprintf(ls->tmp_name, sizeof(ls->tmp_name), LOCAL_TMP_PREFIX "%.*s-%s", (int) base_len,
                 ls->final_name, rnd);
        int fd = openat(dfd, ls->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        LOCAL_FILE_MODE);
        if (fd >= 0) {
            ls->dir_fd = dfd;
            ls->fd = fd;
            break;
        }
        int err = errno;
        close(dfd);
        /* EEXIST: name collision; ENOENT: the directory was pruned by a concurrent remove()
         * between our open and our create. Both go away by trying again. */
        if ((err != EEXIST && err != ENOENT) || attempt + 1 >= LOCAL_CREATE_ATTEMPTS) {
            ls->tmp_name[0] = '\0';
            return local_error(st->description, e, err, "cannot create object", key);
        }
    }

    *ret = TAKE_PTR(sink);
    return 0;
}

/* ---- reading ---- */

typedef struct LocalSource {
    MsSource base;
    int fd;
    char *key;
    char *where;
} LocalSource;

static ssize_t local_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    LocalSource *ls = (LocalSource *) s;
    for (;;) {
        ssize_t n = read(ls->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return local_error(ls->where, e, errno, "cannot read object", ls->key);
    }
}

static void local_source_free(MsSource *s) {
    LocalSource *ls = (LocalSource *) s;
    if (ls->fd >= 0)
        close(ls->fd);
    free(ls->key);
    free(ls->where);
    free(ls);
}

static int local_open_read(MsStorage *s, const char *key, MsSource **ret, MsError *e) {
    LocalStorage *st = (LocalStorage *) s;
    const char *base = NULL;
    _cleanup_close_ int dfd = open_parent_for_read(st, key, "cannot open object", &base, e);
    if (dfd < 0)
        return dfd;
    /* O_NONBLOCK: a FIFO put into the store by hand must not hang the open; it is refused
     * below. Regular files ignore the flag. */
    _cleanup_close_ int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return no_object_error(st, e, key);
        return local_error(st->description, e, errno, "cannot open object", key);
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return local_error(st->description, e, errno, "cannot open object", key);
    int r = check_object_mode(st, key, sb.st_mode, e);
    if (r < 0)
        return r;

    LocalSource *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return ms_error_set(e, ENOMEM, "out of memory");
    ls->base = (MsSource){local_source_read, local_source_free};
    ls->fd = -1;
    _cleanup_(ms_source_freep) MsSource *src = &ls->base;
    ls->key = strdup(key);
    ls->where = strdup(st->description);
    if (!ls->key || !ls->where)
        return ms_error_set(e, ENOMEM, "out of memory");
    ls->fd = TAKE_FD(fd);
    *ret = TAKE_PTR(src);
    return 0;
}

static int local_stat(MsStorage *s, const char *key, MsStorageObject *ret, MsError *e) {
    LocalStorage *st = (LocalStorage *) s;
    const char *base = NULL;
    _cleanup_close_ int dfd = open_parent_for_read(st, key, "cannot look up object", &base, e);
    if (dfd < 0)
        return dfd;
    struct stat sb;
    if (fstatat(dfd, base, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return no_object_error(st, e, key);
        return local_error(st->description, e, errno, "cannot look up object", key);
    }
    int r = check_object_mode(st, key, sb.st_mode, e);
    if (r < 0)
        return r;
    char *k = strdup(key);
    if (!k)
        return ms_error_set(e, ENOMEM, "out of memory");
    *ret = (MsStorageObject){.key = k, .size = (uint64_t) sb.st_size,
                             .mtime_usec = stat_mtime_usec(&sb)};
    return 0;
}

/* Remove the directories of key that became empty, deepest first, so retention does not
 * leave a trail of empty directories. Never the root. Stops at the first one that is not
 * empty (or vanished, or anything else): this is tidying, not a requirement. A writer
 * racing with this retries (see local_open_write). */
static void prune_empty_dirs(LocalStorage *ls, const char *key, size_t dir_len) {
    while (dir_len > 0) {
        const char *slash = memrchr(key, '/', dir_len);
        size_t parent_len = slash ? (size_t) (slash - key) : 0;
        const char *comp = slash ? slash + 1 : key;
        size_t clen = dir_len - (size_t) (comp - key);
        char name[NAME_MAX + 1];
        if (clen == 0 || clen > NAME_MAX)
            return;
        memcpy(name, comp, clen);
        name[clen] = '\0';
        int pfd = open_dirs(ls, key, parent_len, false);
        if (pfd < 0)
            return;
        int r = unlinkat(pfd, name, AT_REMOVEDIR);
        close(pfd);
        if (r < 0)
            return;
        dir_len = parent_len;
    }
}

static int local_remove(MsStorage *s, const char *key, MsError *e) {
    LocalStorage *st = (LocalStorage *) s;
    if (!ms_storage_key_is_valid(key))
        return invalid_key_error(st, e, "object key", key);
    size_t dir_len;
    const char *base = NULL;
    split_key(key, &dir_len, &base);
    {
        _cleanup_close_ int dfd = open_dirs(st, key, dir_len, false);
        if (dfd == -ENOENT || dfd == -ENOTDIR)
            return 0;
        if (dfd < 0)
            return local_error(st->description, e, -dfd, "cannot remove object", key);
        if (unlinkat(dfd, base, 0) < 0) {
            /* EISDIR: the name is a prefix of other objects, there is no object "key". */
            if (errno == ENOENT || errno == EISDIR)
                return 0;
            return local_error(st->description, e, errno, "cannot remove object", key);
        }
    }
    prune_empty_dirs(st, key, dir_len);
    return 0;
}

/* ---- walking: list and clean_stale ---- */

typedef struct Walk Walk;
/* Called for every regular file under the prefix; tmp says it is an in-flight write. */
typedef int (*WalkFn)(Walk *w, int dir_fd, const char *name, const char *key, bool tmp,
                      const struct stat *sb, MsError *e);

struct Walk {
    LocalStorage *ls;
    WalkFn fn;
    /* list */
    MsStorageObject *objs;
    size_t n_objs, cap_objs;
    /* clean_stale */
    unsigned removed;
    const char *except;
};

/* Walk the directory fd (taken over) whose key prefix is dir_key ("" or "a/b/"). At the top
 * level only names starting with tail count (for tmp files: the name after ".tmp-");
 * below it everything does. Symlinks and other non-files are never followed nor reported. */
static int walk_dir(Walk *w, int fd, const char *dir_key, const char *tail, MsError *e) {
    const char *where = w->ls->description;
    const char *shown = dir_key[0] ? dir_key : "/";
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return local_error(where, e, err, "cannot list directory", shown);
    }
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno != 0)
                r = local_error(where, e, errno, "cannot list directory", shown);
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        bool tmp = startswith(name, LOCAL_TMP_PREFIX);
        if (tail && !startswith(tmp ? name + LOCAL_TMP_PREFIX_LEN : name, tail))
            continue;

        _cleanup_free_ char *key = NULL;
        if (asprintf(&key, "%s%s", dir_key, name) < 0) {
            key = NULL;
            r = ms_error_set(e, ENOMEM, "out of memory");
            break;
        }
        struct stat sb;
        if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT) /* removed while we looked */
                continue;
            r = local_error(where, e, errno, "cannot look at", key);
            break;
        }

        if (S_ISDIR(sb.st_mode)) {
            /* A directory whose name is no valid key prefix holds nothing we wrote (and
             * this bounds the depth of the walk by the key length). */
            if (tmp || !ms_storage_key_is_valid(key))
                continue;
            int sub = openat(dirfd(d), name, LOCAL_DIR_OPEN_FLAGS);
            if (sub < 0) {
                /* Vanished or replaced by a link/file since the fstatat: nothing to walk. */
                if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
                    continue;
                r = local_error(where, e, errno, "cannot open directory", key);
                break;
            }
            _cleanup_free_ char *sub_key = NULL;
            if (asprintf(&sub_key, "%s/", key) < 0) {
                sub_key = NULL;
                close(sub);
                r = ms_error_set(e, ENOMEM, "out of memory");
                break;
            }
            r = walk_dir(w, sub, sub_key, NULL, e);
            if (r < 0)
                break;
        } else if (S_ISREG(sb.st_mode)) {
            /* A file whose name is no valid key was not written by us and could not be
             * addressed anyway. */
            if (!tmp && !ms_storage_key_is_valid(key))
                continue;
            r = w->fn(w, dirfd(d), name, key, tmp, &sb, e);
            if (r < 0)
                break;
        }
    }
    closedir(d);
    return r;
}

static int walk_prefix(Walk *w, const char *prefix, MsError *e) {
    LocalStorage *ls = w->ls;
    if (!prefix)
        prefix = "";
    if (prefix[0] == '/')
        return invalid_key_error(ls, e, "key prefix", prefix);
    const char *slash = strrchr(prefix, '/');
    size_t dir_len = slash ? (size_t) (slash - prefix) : 0;
    const char *tail = slash ? slash + 1 : prefix;
    _cleanup_free_ char *dir_key = strndup(prefix, slash ? dir_len + 1 : 0);
    if (!dir_key)
        return ms_error_set(e, ENOMEM, "out of memory");
    if (dir_len > 0) {
        dir_key[dir_len] = '\0';
        bool valid = ms_storage_key_is_valid(dir_key);
        dir_key[dir_len] = '/';
        if (!valid)
            return invalid_key_error(ls, e, "key prefix", prefix);
    }

    int fd = open_dirs(ls, prefix, dir_len, false);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return 0; /* nothing under this prefix */
    if (fd < 0)
        return local_error(ls->description, e, -fd, "cannot list objects under", prefix);
    return walk_dir(w, fd, dir_key, tail, e);
}

static int list_add(Walk *w, int dir_fd, const char *name, const char *key, bool tmp,
                    const struct stat *sb, MsError *e) {
    if (tmp)
        return 0;
    if (w->n_objs == w->cap_objs) {
        size_t ncap = MS_MAX(w->cap_objs * 2, (size_t) 64);
        MsStorageObject *n = reallocarray(w->objs, ncap, sizeof(*n));
        if (!n)
            return ms_error_set(e, ENOMEM, "out of memory");
        w->objs = n;
        w->cap_objs = ncap;
    }
    char *k = strdup(key);
    if (!k)
        return ms_error_set(e, ENOMEM, "out of memory");
    w->objs[w->n_objs++] = (MsStorageObject){.key = k, .size = (uint64_t) sb->st_size,
                                             .mtime_usec = stat_mtime_usec(sb)};
    return 0;
}

static int object_key_cmp(const void *a, const void *b) {
    return strcmp(((const MsStorageObject *) a)->key, ((const MsStorageObject *) b)->key);
}

static int local_list(MsStorage *s, const char *prefix, MsStorageObject **ret, size_t *ret_n,
                      MsError *e) {
    Walk w = {.ls = (LocalStorage *) s, .fn = list_add};
    int r = walk_prefix(&w, prefix, e);
    if (r < 0) {
        ms_storage_objects_free(w.objs, w.n_objs);
        return r;
    }
    if (w.n_objs > 1)
        qsort(w.objs, w.n_objs, sizeof(*w.objs), object_key_cmp);
    *ret = w.objs;
    *ret_n = w.n_objs;
    return 0;
}

static int clean_one(Walk *w, int dir_fd, const char *name, const char *key, bool tmp,
                     const struct stat *sb, MsError *e) {
    if (!tmp || (w->except && strncmp(key, w->except, strlen(w->except)) == 0))
        return 0;
    if (unlinkat(dir_fd, name, 0) < 0) {
        if (errno == ENOENT)
            return 0;
        return local_error(w->ls->description, e, errno, "cannot remove stale temporary file",
                           key);
    }
    w->removed++;
    return 0;
}

static int local_clean_stale(MsStorage *s, const char *prefix, const char *except,
                             unsigned *ret_removed, MsError *e) {
    /* Every temp file is stale: they only exist while a writer lives, and the caller runs
     * this only when no writer of this prefix does. */
    Walk w = {.ls = (LocalStorage *) s, .fn = clean_one, .except = except};
    int r = walk_prefix(&w, prefix, e);
    if (ret_removed)
        *ret_removed = w.removed;
    return r;
}

static const char *local_describe(MsStorage *s) {
    return ((LocalStorage *) s)->description;
}

static void local_free(MsStorage *s) {
    LocalStorage *ls = (LocalStorage *) s;
    if (ls->root_fd >= 0)
        close(ls->root_fd);
    free(ls->root);
    free(ls->description);
    free(ls);
}

static int local_open_write(MsStorage *s, const char *key, MsSink **ret, MsError *e) {
    return open_write(s, key, false, ret, e);
}

static int local_open_write_unsynced(MsStorage *s, const char *key, MsSink **ret, MsError *e) {
    return open_write(s, key, true, ret, e);
}

/* Every unsynced write (data, renames, new directories) made durable in one call: syncfs
 * flushes the whole filesystem the store lives on, where thousands of per-object fsyncs of
 * files and directories would each wait for the journal. */
static int local_sync(MsStorage *s, MsError *e) {
    LocalStorage *st = (LocalStorage *) s;
    if (syncfs(st->root_fd) < 0)
        return local_error(st->description, e, errno, "cannot sync the store's filesystem under", ".");
    return 0;
}

static const MsStorageOps local_ops = {
    .open_write_unsynced = local_open_write_unsynced,
    .sync = local_sync,
    .name = "local",
    .open_write = local_open_write,
    .open_read = local_open_read,
    .stat = local_stat,
    .remove = local_remove,
    .list = local_list,
    .clean_stale = local_clean_stale,
    .describe = local_describe,
    .free = local_free,
};

int ms_storage_local_new(const char *root, MsStorage **ret, MsError *e) {
    if (!root || root[0] == '\0')
        return ms_error_set(e, EINVAL, "no directory given for local storage");

    _cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        switch (err) {
        case ENOENT:
            return ms_error_set(e, err,
                                "storage directory '%s' does not exist; create it (owned by the "
                                "user mongosnap runs as, mode 0750) or fix the storage location",
                                root);
        case ENOTDIR:
            return ms_error_set(e, err,
                                "storage location '%s' is not a directory; point it at a "
                                "directory",
                                root);
        case EACCES:
        case EPERM:
            return ms_error_set(e, err,
                                "cannot open storage directory '%s': permission denied; make it "
                                "accessible to the user mongosnap runs as",
                                root);
        default:
            return ms_error_set(e, err, "cannot open storage directory '%s': %s", root,
                                strerror(err));
        }
    }

    LocalStorage *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return ms_error_set(e, ENOMEM, "out of memory");
    ls->base.ops = &local_ops;
    ls->root_fd = -1;
    _cleanup_(ms_storage_freep) MsStorage *s = &ls->base;

    /* "/srv/store/" and "/srv/store" are the same store: describe them the same way. */
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        len--;
    ls->root = strndup(root, len);
    if (!ls->root || asprintf(&ls->description, "local:%s", ls->root) < 0) {
        ls->description = NULL;
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    ls->root_fd = TAKE_FD(fd);
    *ret = TAKE_PTR(s);
    return 0;
}

/* mongosnap's credential store (common/credential-store.h): secrets written by
 * Manager.SetCredential, root only, atomically, readable by root alone. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent-internal.h"
#include "common/credential-store.h"
#include "common/log.h"

/* A password, a key or an S3 secret: small. */
#define CREDENTIAL_MAX_BYTES (64u * 1024u)

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

int manager_set_credential(Manager *m, const char *name, int fd, MsError *e) {
    if (!ms_credential_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "'%.128s' is not a credential name: 1 to 64 letters, digits, '_', "
                            "'.' or '-', starting with a letter or digit",
                            name);
    /* The secret comes in a file or memfd: a pipe could keep the agent waiting. */
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return ms_error_set(e, EINVAL,
                            "the secret must come in a file descriptor of a regular file or memfd "
                            "(mongosnapctl set-credential does this)");
    if (st.st_size == 0)
        return ms_error_set(e, EINVAL, "the secret is empty");
    if ((uint64_t) st.st_size > CREDENTIAL_MAX_BYTES)
        return ms_error_set(e, EFBIG, "a secret of %lld bytes is too large (at most %u)",
                            (long long) st.st_size, CREDENTIAL_MAX_BYTES);
    size_t len = (size_t) st.st_size;
    char secret[CREDENTIAL_MAX_BYTES];
    ssize_t got = pread(fd, secret, len, 0);
    if (got != (ssize_t) len) {
        explicit_bzero(secret, sizeof(secret));
        return ms_error_set(e, EIO, "cannot read the secret from the file descriptor");
    }

    const char *dir = ms_credential_store_dir();
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int err = errno;
        explicit_bzero(secret, sizeof(secret));
        return ms_error_set(e, err, "cannot create the credential store %s: %s", dir,
                            strerror(err));
    }
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        int err = errno;
        explicit_bzero(secret, sizeof(secret));
        return ms_error_set(e, err, "cannot open the credential store %s: %s", dir, strerror(err));
    }
    (void) fchmod(dfd, 0700);
    char tmp[96];
    snprintf(tmp, sizeof(tmp), ".#%.64s.%d", name, (int) getpid());
    (void) unlinkat(dfd, tmp, 0);
    _cleanup_close_ int out = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int r = out < 0 ? -errno : 0;
    if (r == 0)
        r = write_all(out, secret, len);
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    explicit_bzero(secret, sizeof(secret));
    if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
        r = -errno;
    if (r < 0) {
        (void) unlinkat(dfd, tmp, 0);
        return ms_error_set(e, -r, "cannot write credential '%s' in %s: %s", name, dir,
                            strerror(-r));
    }
    (void) fsync(dfd);
    log_info("credential '%s' written to %s (used from the next task on)", name, dir);
    manager_refresh_problems(m);
    return 0;
}

/* Finding secrets by name (credential-store.h). */
#include "credential-store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *ms_credential_store_dir(void) {
    const char *d = getenv(MS_CREDENTIAL_STORE_ENV);
    return d && *d ? d : MS_CREDENTIAL_STORE_DEFAULT;
}

size_t ms_credential_dirs(const char *ret_dirs[MS_CREDENTIAL_DIRS_MAX]) {
    size_t n = 0;
    const char *systemd = getenv(MS_CREDENTIALS_DIRECTORY_ENV);
    if (systemd && *systemd)
        ret_dirs[n++] = systemd;
    ret_dirs[n++] = ms_credential_store_dir();
    return n;
}

int ms_credential_find(const char *name, char **ret_path) {
    const char *dirs[MS_CREDENTIAL_DIRS_MAX];
    size_t n = ms_credential_dirs(dirs);
    for (size_t i = 0; i < n; i++) {
        char *path = NULL;
        if (asprintf(&path, "%s/%s", dirs[i], name) < 0)
            return -ENOMEM;
        if (access(path, R_OK) == 0) {
            *ret_path = path;
            return 0;
        }
        free(path);
    }
    return -ENOENT;
}

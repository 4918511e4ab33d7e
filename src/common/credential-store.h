/* Where secrets are found by name: the systemd credentials of the unit ($CREDENTIALS_DIRECTORY,
 * LoadCredential=, LoadCredentialEncrypted=), then mongosnap's own credential store
 * (/etc/mongosnap/credentials, root only), which `mongosnapctl set-credential` fills and which is
 * read when a secret is used, so that a new secret needs no restart. */
#pragma once

#include <stddef.h>

#define MS_CREDENTIAL_STORE_DEFAULT "/etc/mongosnap/credentials"
/* Tests point the store elsewhere. */
#define MS_CREDENTIAL_STORE_ENV "MONGOSNAP_CREDENTIAL_STORE"
#define MS_CREDENTIALS_DIRECTORY_ENV "CREDENTIALS_DIRECTORY"

/* The store's directory. */
const char *ms_credential_store_dir(void);

/* The directories a credential NAME is looked up in, in order: *ret_dirs[0..n) (static or
 * from the environment; valid until the environment changes). */
#define MS_CREDENTIAL_DIRS_MAX 2
size_t ms_credential_dirs(const char *ret_dirs[MS_CREDENTIAL_DIRS_MAX]);

/* The path of the first readable file NAME in those directories (free()), or -ENOENT. */
int ms_credential_find(const char *name, char **ret_path);

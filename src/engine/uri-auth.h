/* Where and how a MongoDB URI would send a credential, checked before a secret is handed to a
 * worker: the mechanisms that send the password in clear, or use the machine's own credentials
 * (client certificates, Kerberos tickets, AWS keys from the environment), are refused where a
 * caller, not the configuration, chose the server. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef enum MsUriAuthUse {
    MS_URI_AUTH_SOURCE, /* a policy's Source= or [Cluster] URI=: written by the administrator */
    MS_URI_AUTH_TARGET, /* a restore target: chosen by whoever calls StartRestore */
} MsUriAuthUse;

/* Refuse (-EACCES, kind MS_ERROR_KIND_CREDENTIAL_SCOPE, the message naming the option):
 *  - authMechanism=PLAIN unless the connection uses TLS with certificate and host name checks
 *    (no tlsInsecure, tlsAllowInvalidCertificates, tlsAllowInvalidHostnames), or
 *    allow_cleartext ([Restore] AllowCleartext=yes for targets);
 *  - authMechanism=MONGODB-AWS everywhere (it signs with the AWS keys of the agent's
 *    environment, which may be the store's);
 *  - for targets also MONGODB-X509, GSSAPI, MONGODB-OIDC and client certificates
 *    (tlsCertificateKeyFile): they present the machine's credentials to a caller's server.
 * An unparsable URI is -EINVAL without the URI in the message (it may hold a password). */
int ms_uri_check_auth(const char *uri, MsUriAuthUse use, bool allow_cleartext, MsError *e);

/* The user name a URI authenticates as when it needs a password it does not carry (SCRAM, the
 * default, PLAIN and MONGODB-CR with a user and no password), copied to buf; false otherwise
 * (also for an unparsable URI). Front ends check this before a task starts, so the operator
 * hears of the missing credential in the front end's words (Credential=, --credential). */
bool ms_uri_wants_password(const char *uri, char *buf, size_t size);

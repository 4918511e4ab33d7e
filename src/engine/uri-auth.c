/* Which authentication a MongoDB URI asks for, judged before any secret goes out (uri-auth.h). */
#include "uri-auth.h"

#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/macro.h"

static bool option_true(const mongoc_uri_t *uri, const char *name) {
    return mongoc_uri_get_option_as_bool(uri, name, false);
}

static bool option_set(const mongoc_uri_t *uri, const char *name) {
    return mongoc_uri_get_option_as_utf8(uri, name, NULL) != NULL;
}

int ms_uri_check_auth(const char *text, MsUriAuthUse use, bool allow_cleartext, MsError *e) {
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(text, &berr);
    if (!uri)
        return ms_error_set(e, EINVAL,
                            "not a MongoDB connection string; give mongodb://HOST[:PORT][/?OPTIONS] "
                            "or mongodb+srv://HOST");
    const char *what = use == MS_URI_AUTH_TARGET ? "a restore target" : "a source";
    const char *mech = mongoc_uri_get_auth_mechanism(uri);
    int r = 0;
    if (mech && strcasecmp(mech, "MONGODB-AWS") == 0)
        r = ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                              "authMechanism=MONGODB-AWS is refused for %s: it signs with the AWS "
                              "keys of mongosnapd's environment, which may be the store's; use "
                              "SCRAM with a credential of its own",
                              what);
    else if (use == MS_URI_AUTH_TARGET && mech &&
             (strcasecmp(mech, "MONGODB-X509") == 0 || strcasecmp(mech, "GSSAPI") == 0 ||
              strcasecmp(mech, "MONGODB-OIDC") == 0))
        r = ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                              "authMechanism=%s is refused for a restore target: it presents the "
                              "machine's own credentials (a client certificate, a Kerberos "
                              "ticket, a token) to a server the caller chose; use SCRAM with a "
                              "credential listed in [Restore] Credentials=",
                              mech);
    else if (use == MS_URI_AUTH_TARGET &&
             (option_set(uri, MONGOC_URI_TLSCERTIFICATEKEYFILE) ||
              option_set(uri, MONGOC_URI_TLSCERTIFICATEKEYFILEPASSWORD) ||
              option_set(uri, MONGOC_URI_SSLCLIENTCERTIFICATEKEYFILE)))
        r = ms_error_set_kind(e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                              "tlsCertificateKeyFile is refused for a restore target: a client "
                              "certificate is a credential, and the caller chose the server");
    else if (mech && strcasecmp(mech, "PLAIN") == 0 && !allow_cleartext) {
        bool tls = mongoc_uri_get_tls(uri);
        bool unchecked = option_true(uri, MONGOC_URI_TLSINSECURE) ||
                         option_true(uri, MONGOC_URI_TLSALLOWINVALIDCERTIFICATES) ||
                         option_true(uri, MONGOC_URI_TLSALLOWINVALIDHOSTNAMES);
        if (!tls || unchecked)
            r = ms_error_set_kind(
                e, MS_ERROR_KIND_CREDENTIAL_SCOPE, EACCES,
                "authMechanism=PLAIN sends the password in clear text%s; it is refused for %s "
                "unless the connection uses TLS with its certificate and host name checked%s",
                tls ? " to a server whose certificate is not checked" : "", what,
                use == MS_URI_AUTH_TARGET ? " (or [Restore] AllowCleartext=yes)" : "");
    }
    mongoc_uri_destroy(uri);
    return r;
}

bool ms_uri_wants_password(const char *text, char *buf, size_t size) {
    mongoc_uri_t *uri = text ? mongoc_uri_new_with_error(text, NULL) : NULL;
    if (!uri)
        return false;
    const char *user = mongoc_uri_get_username(uri);
    const char *mech = mongoc_uri_get_auth_mechanism(uri);
    const char *password = mongoc_uri_get_password(uri);
    bool needs = !mech || strncasecmp(mech, "SCRAM", strlen("SCRAM")) == 0 ||
                 strcasecmp(mech, "PLAIN") == 0 || strcasecmp(mech, "MONGODB-CR") == 0;
    bool wants = user && *user && needs && (!password || !*password);
    if (wants && size > 0)
        snprintf(buf, size, "%s", user);
    mongoc_uri_destroy(uri);
    return wants;
}

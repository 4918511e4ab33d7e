/* Redaction of MongoDB connection strings: a password never leaves this process in text. */
#include "redact.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

/* Query options whose values are secrets (driver connection-string spec). */
static const char *const secret_options[] = {
    "password",
    "authMechanismProperties", /* may hold AWS_SESSION_TOKEN */
    "tlsCertificateKeyFilePassword",
    "sslPEMKeyPassword",
    "sslClientCertificateKeyPassword",
};

static bool option_is_secret(const char *opt, size_t len) {
    for (size_t i = 0; i < ELEMENTSOF(secret_options); i++)
        if (strlen(secret_options[i]) == len && strncasecmp(opt, secret_options[i], len) == 0)
            return true;
    return false;
}

/* Does the last '@' sit inside the value of a secret query option ("/?password=p@ss")? Then there
 * is no userinfo to cut out, and the option loop below drops the whole value. */
static bool at_is_in_secret_option(const char *authority, const char *at) {
    const char *q = memchr(authority, '?', (size_t) (at - authority));
    if (!q)
        return false;
    for (const char *p = q + 1; p < at;) {
        size_t key_len = strcspn(p, "=&;");
        if (p + key_len < at && p[key_len] == '=' && option_is_secret(p, key_len)) {
            const char *value_end = p + key_len + strcspn(p + key_len, "&;");
            if (value_end > at)
                return true;
        }
        p += strcspn(p, "&;");
        if (p < at)
            p++;
    }
    return false;
}

char *ms_uri_redact(const char *uri) {
    if (!uri)
        return strdup("<no URI>");
    const char *scheme_end = strstr(uri, "://");
    if (!scheme_end)
        return strdup("<unparsable URI>");
    size_t n = strlen(uri);
    char *out = malloc(n + 16);
    if (!out)
        return NULL;
    const char *authority = scheme_end + 3;
    size_t o = (size_t) (authority - uri);
    memcpy(out, uri, o);

    /* The userinfo ends at an '@'. Passwords should percent-encode '@', '/', '?' and ':', but
     * people paste them raw: take the last '@' in the whole string, so a raw '/' or '?' in a
     * password cannot end the userinfo early and leak the rest. (An '@' in an option value then
     * hides more than needed, never less.) */
    const char *at = strrchr(authority, '@');
    if (at && at_is_in_secret_option(authority, at)) {
        /* "...?password=p@ss": that '@' is a secret's (the option loop drops its whole value);
         * a userinfo, if any, ends at the last '@' before the query. */
        const char *q = memchr(authority, '?', (size_t) (at - authority));
        at = memrchr(authority, '@', (size_t) (q - authority));
    }
    const char *hosts = authority;
    if (at) {
        const char *colon = memchr(authority, ':', (size_t) (at - authority));
        size_t user_len = (size_t) ((colon ? colon : at) - authority);
        memcpy(out + o, authority, user_len);
        o += user_len;
        out[o++] = '@';
        hosts = at + 1;
    }
    const char *query = strchr(hosts, '?');
    size_t hosts_len = query ? (size_t) (query - hosts) : strlen(hosts);
    memcpy(out + o, hosts, hosts_len);
    o += hosts_len;
    if (query) {
        const char *p = query + 1;
        bool first = true;
        while (*p) {
            size_t len = strcspn(p, "&;");
            size_t key_len = strcspn(p, "=&;");
            if (key_len > len)
                key_len = len;
            if (!option_is_secret(p, key_len) && len > 0) {
                out[o++] = first ? '?' : '&';
                memcpy(out + o, p, len);
                o += len;
                first = false;
            }
            p += len;
            if (*p)
                p++;
        }
    }
    out[o] = '\0';
    return out;
}

void ms_secret_free(char *secret) {
    if (!secret)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

void ms_secret_scrub(char *text, const char *secret) {
    if (!text || !secret || !*secret)
        return;
    size_t n = strlen(secret);
    for (char *p = strstr(text, secret); p; p = strstr(p, secret)) {
        memset(p, '*', n);
        p += n;
    }
}

/* Parsing, checking, editing and writing mongosnap.conf and policy files (inih underneath). */
#include "conf.h"

#include "mongosnap/mongosnap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h" /* meson-generated: MONGOSNAP_LIBEXECDIR */

#include "common/macro.h"
#include "common/redact.h"
#include "common/string-table.h"
#include "ini-schema.h"

#define MS_DEFAULT_WORKER_PATH MONGOSNAP_LIBEXECDIR "/mongosnap/mongosnap-worker"

/* Policy files may hold credential names, never secrets, but are no business of others. */
#define MS_POLICY_FILE_MODE 0640
/* systemd's prefix for temporary files: hidden, so the directory loader skips leftovers. */
#define MS_TMP_PREFIX ".#"
#define MS_TMP_RANDOM_BYTES 8
/* A host name (the default node name) is at most 253 characters (RFC 1035). */
#define MS_NODE_NAME_MAX 253
/* MongoDB limits a namespace to 255 bytes. */
#define MS_NS_PATTERN_MAX 255
/* S3 bucket names are 3 to 63 characters. */
#define S3_BUCKET_MIN 3
#define S3_BUCKET_MAX 63
#define ZSTD_LEVEL_MAX 22
#define GZIP_LEVEL_MAX 9

#define MONGODB_SCHEME "mongodb://"
#define MONGODB_SRV_SCHEME "mongodb+srv://"
#define FILE_URI_PREFIX "file://"
#define S3_URI_PREFIX "s3://"

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* ======================================================================================
 * Small helpers
 * ====================================================================================== */

static bool has_control(const char *s) {
    for (; *s; s++)
        if (is_control(*s))
            return true;
    return false;
}

static bool endswith(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static bool startswith(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int set_string(char **field, const char *value) {
    char *copy = NULL;
    if (value) {
        copy = strdup(value);
        if (!copy)
            return -ENOMEM;
    }
    free(*field);
    *field = copy;
    return 0;
}

static int strv_copy(char *const *src, char ***ret) {
    _cleanup_(ms_strv_freep) char **l = calloc(1, sizeof(char *));
    if (!l)
        return -ENOMEM;
    for (size_t i = 0; src && src[i]; i++)
        if (ms_strv_push(&l, src[i]) < 0)
            return -ENOMEM;
    *ret = TAKE_PTR(l);
    return 0;
}

static bool streq_null(const char *a, const char *b) {
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ and no "..": safe as a file name, a unit instance and a
 * journal field value, with no way to climb out of a directory. */
static bool name_is_valid(const char *s) {
    if (!s)
        return false;
    size_t len = strlen(s);
    if (len == 0 || len > MS_NAME_MAX || !ascii_isalnum(s[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!ascii_isalnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return strstr(s, "..") == NULL;
}

bool ms_policy_name_is_valid(const char *name) {
    return name_is_valid(name);
}

bool ms_credential_name_is_valid(const char *name) {
    return name_is_valid(name);
}

/* ======================================================================================
 * Value checks shared by several keys
 * ====================================================================================== */

/* Whether ms_uri_redact() drops this query option: it owns the list of secret options, so we
 * ask it rather than keep a second list that could drift. */
static bool uri_option_is_secret(const char *opt, size_t len) {
    _cleanup_free_ char *probe = NULL;
    if (asprintf(&probe, "mongodb://h/?%.*s", (int) len, opt) < 0)
        return true; /* out of memory: refuse rather than let a secret through */
    _cleanup_free_ char *redacted = ms_uri_redact(probe);
    return !redacted || strcmp(redacted, probe) != 0;
}

/* The URI is never echoed in these messages: it may hold the very secret we refuse. */
static int check_source_uri(const char *key, const char *uri, MsError *e) {
    for (const char *c = uri; *c; c++)
        if (is_control(*c) || *c == ' ')
            return ms_error_set(e, EINVAL,
                                "%s= holds spaces or control characters; a MongoDB connection "
                                "string has none (percent-encode them)",
                                key);
    const char *authority;
    if (startswith(uri, MONGODB_SCHEME))
        authority = uri + strlen(MONGODB_SCHEME);
    else if (startswith(uri, MONGODB_SRV_SCHEME))
        authority = uri + strlen(MONGODB_SRV_SCHEME);
    else
        return ms_error_set(
            e, EINVAL,
            "%s= is not a MongoDB connection string: write "
            "mongodb://USER@HOST1,HOST2/?replicaSet=NAME or mongodb+srv://USER@HOST",
            key);

    const char *path = authority + strcspn(authority, "/?");
    const char *at = NULL;
    for (const char *c = authority; c < path; c++)
        if (*c == '@')
            at = c;
    if (at && memchr(authority, ':', (size_t) (at - authority))) {
        _cleanup_free_ char *redacted = ms_uri_redact(uri);
        return ms_error_set(e, EINVAL,
                            "%s= holds a password, and a password never goes in a policy file: "
                            "write %s=%s, store the password with \"mongosnapctl set-credential "
                            "NAME\" and name it with Credential=NAME",
                            key, key, redacted ? redacted : "<the URI without password>");
    }
    const char *hosts = at ? at + 1 : authority;
    if (hosts == path)
        return ms_error_set(e, EINVAL, "%s= names no host: write mongodb://USER@HOST[:PORT],...",
                            key);

    const char *query = strchr(path, '?');
    for (const char *o = query ? query + 1 : NULL; o && *o;) {
        size_t len = strcspn(o, "&;");
        size_t key_len = MS_MIN(strcspn(o, "="), len);
        if (len > 0 && uri_option_is_secret(o, len))
            return ms_error_set(e, EINVAL,
                                "%s= carries the secret option '%.*s'; secrets never go in a "
                                "policy file: remove it and keep the secret in a systemd "
                                "credential named by Credential=",
                                key, (int) key_len, o);
        o += len;
        if (*o)
            o++;
    }
    return 0;
}

static int check_absolute_path(const char *key, const char *v, MsError *e) {
    if (v[0] != '/' || has_control(v))
        return ms_error_set(
            e, EINVAL, "%s='%s' is not an absolute path; give a path starting with '/'", key, v);
    if (strlen(v) >= PATH_MAX)
        return ms_error_set(e, ENAMETOOLONG, "%s= is longer than %d characters", key, PATH_MAX);
    return 0;
}

static bool s3_bucket_is_valid(const char *b, size_t len) {
    if (len < S3_BUCKET_MIN || len > S3_BUCKET_MAX)
        return false;
    if (!ascii_isalnum(b[0]) || !ascii_isalnum(b[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
              b[i] == '-'))
            return false;
    return true;
}

/* The query options an s3:// store may carry: the ones storage/s3-location.c reads. Anything else
 * is refused by name (not by value: no query may smuggle a secret into a policy file, and a
 * refused value is never echoed). Values are checked when the store is opened. */
static const char *const s3_options[] = {MONGOSNAP_S3_LOCATION_OPTIONS};

static int check_s3_options(const char *key, const char *query, MsError *e) {
    if (!query)
        return 0;
    for (const char *p = query + 1; *p;) {
        size_t len = strcspn(p, "=&");
        bool known = false;
        for (size_t i = 0; i < sizeof(s3_options) / sizeof(s3_options[0]) && !known; i++)
            known = strlen(s3_options[i]) == len && strncmp(p, s3_options[i], len) == 0;
        if (!known) {
            char names[MS_ERROR_MESSAGE_MAX / 2] = "";
            for (size_t i = 0, o = 0; i < sizeof(s3_options) / sizeof(s3_options[0]); i++)
                o += (size_t) snprintf(names + o, o < sizeof(names) ? sizeof(names) - o : 0, "%s%s",
                                       i ? ", " : "", s3_options[i]);
            return ms_error_set(e, EINVAL,
                                "%s= has an S3 option that is not one of %s; keys come from "
                                "mongosnap's credential store (mongosnapctl set-credential "
                                "s3-access-key-id), systemd credentials or the AWS "
                                "environment, never from the store location",
                                key, names);
        }
        p += strcspn(p, "&");
        if (*p == '&')
            p++;
    }
    return 0;
}

/* Syntax only: the store is opened (and its existence checked) when a task runs. */
static int check_store(const char *key, const char *v, MsError *e) {
    if (v[0] == '/')
        return check_absolute_path(key, v, e);
    if (has_control(v))
        return ms_error_set(e, EINVAL, "%s= holds control characters", key);
    /* Userinfo in a URL is a secret: refuse it before any message could echo the value. */
    if (strchr(v, '@'))
        return ms_error_set(e, EINVAL,
                            "%s= holds an '@': user names and access keys never go in a policy "
                            "file; write /abs/dir, file:///abs/dir or s3://BUCKET[/PREFIX]",
                            key);
    if (startswith(v, FILE_URI_PREFIX)) {
        const char *rest = v + strlen(FILE_URI_PREFIX);
        if (rest[0] != '/' && !startswith(rest, "localhost/"))
            return ms_error_set(e, EINVAL,
                                "%s='%s' names a host or a relative path; write file:///abs/dir "
                                "(three slashes) or just /abs/dir",
                                key, v);
        return 0;
    }
    if (startswith(v, S3_URI_PREFIX)) {
        const char *bucket = v + strlen(S3_URI_PREFIX);
        /* s3://BUCKET?OPTIONS (no prefix) is a location too, as the driver reads it. */
        size_t len = strcspn(bucket, "/?");
        if (strchr(v, '#'))
            return ms_error_set(e, EINVAL,
                                "%s= must be s3://BUCKET[/PREFIX][?OPTIONS], without '#'", key);
        int r = check_s3_options(key, strchr(v, '?'), e);
        if (r < 0)
            return r;
        if (!s3_bucket_is_valid(bucket, len))
            return ms_error_set(e, EINVAL,
                                "%s='%s' does not name a valid S3 bucket: 3 to 63 lowercase "
                                "letters, digits, '.' or '-' (s3://BUCKET[/PREFIX])",
                                key, v);
        return 0;
    }
    return ms_error_set(e, EINVAL,
                        "%s='%s' is not a store location: give an absolute directory "
                        "(/var/lib/mongosnap/store), file:///abs/dir or s3://BUCKET[/PREFIX]",
                        key, v);
}

/* "db.coll" with '*' for any run (engine/nsfilter.c matches them). */
static int check_ns_pattern(const char *key, const char *pat, MsError *e) {
    const char *dot = strchr(pat, '.');
    size_t len = strlen(pat);
    if (len > MS_NS_PATTERN_MAX)
        return ms_error_set(e, EINVAL, "%s: pattern longer than %d characters", key,
                            MS_NS_PATTERN_MAX);
    if (!dot || dot == pat || dot[1] == '\0')
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a namespace pattern: write DB.COLLECTION, with '*' "
                            "for any run of characters ('sales.*', '*.orders', '*.*')",
                            key, pat);
    for (const char *c = pat; c < dot; c++)
        if (strchr("/\\\"$", *c))
            return ms_error_set(e, EINVAL, "%s='%s': a database name cannot contain '%c'", key, pat,
                                *c);
    return 0;
}

/* ======================================================================================
 * Setters for values both files have
 * ====================================================================================== */

static int set_absolute_path(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v) {
        int r = check_absolute_path(k->name, v, e);
        if (r < 0)
            return r;
    }
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

static int set_store(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v) {
        int r = check_store(k->name, v, e);
        if (r < 0)
            return r;
    }
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

static int check_credential_name(const char *key, const char *name, MsError *e) {
    if (!ms_credential_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a credential name: 1 to %d letters, digits, '_', '.' "
                            "or '-', starting with a letter or digit, without '..' (it names a "
                            "systemd credential, not the secret itself)",
                            key, name, MS_NAME_MAX);
    return 0;
}

static int set_credential_name(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    int r = v ? check_credential_name(k->name, v, e) : 0;
    if (r < 0)
        return r;
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

/* ======================================================================================
 * The agent: mongosnap.conf
 * ====================================================================================== */

static bool node_name_is_valid(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > MS_NODE_NAME_MAX || !ascii_isalnum(s[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!ascii_isalnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static int set_node(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v && !node_name_is_valid(v))
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a node name: letters, digits, '_', '.' and '-', "
                            "starting with a letter or digit, at most %d characters",
                            k->name, v, MS_NODE_NAME_MAX);
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

static int set_cluster_uri(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v) {
        int r = check_source_uri(k->name, v, e);
        if (r < 0) {
            ms_error_prefix(e, "[Cluster] ");
            return r;
        }
    }
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

static int set_database(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v && !node_name_is_valid(v))
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a database name mongosnap accepts: letters, digits, "
                            "'_', '.' and '-', at most %d characters",
                            k->name, v, MS_NODE_NAME_MAX);
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

/* host:port as the replica set names its members; no scheme, no spaces. */
static int set_member(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v && (!*v || strpbrk(v, " /@?") || has_control(v) || strlen(v) > 255))
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a member address: write HOST:PORT as the replica "
                            "set names the member beside this agent (see rs.conf())",
                            k->name, v);
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

bool ms_credential_is_store_key(const char *name) {
    static const char *const names[] = {MS_S3_CREDENTIAL_NAMES};
    for (size_t i = 0; i < ELEMENTSOF(names); i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

static char *get_ns_list(const void *obj, const IniKey *k);

/* A key's value as a space-separated list of words, each checked (check(key, word, e)) before
 * any is kept, so that a bad word leaves the list as it was. An empty value (v NULL) empties it,
 * in a file as in an edit; append (a repeated key) adds to what is there. */
static int set_word_list(void *obj, const IniKey *k, const char *v, bool append,
                         int (*check)(const char *key, const char *word, MsError *e), MsError *e) {
    char ***field = INI_FIELD(obj, k);
    _cleanup_(ms_strv_freep) char **l = NULL;
    if (append && v && *field) {
        if (strv_copy(*field, &l) < 0)
            return ms_error_oom(e);
    } else if (!(l = calloc(1, sizeof(char *))))
        return ms_error_oom(e);
    for (const char *p = v; p && *p;) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (len == 0)
            break;
        _cleanup_free_ char *word = strndup(p, len);
        if (!word)
            return ms_error_oom(e);
        int r = check(k->name, word, e);
        if (r < 0)
            return r;
        if (ms_strv_push(&l, word) < 0)
            return ms_error_oom(e);
        p += len;
    }
    ms_strv_free(*field);
    *field = TAKE_PTR(l);
    return 0;
}

static int check_credential_word(const char *key, const char *name, MsError *e) {
    if (!ms_credential_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "%s: '%s' is not a credential name: 1 to %d letters, digits, '_', "
                            "'.' or '-'",
                            key, name, MS_NAME_MAX);
    if (ms_credential_is_store_key(name))
        return ms_error_set(e, EINVAL,
                            "%s: '%s' holds the store's key and can never be named for a "
                            "restore: remove it",
                            key, name);
    return 0;
}

static int set_signing_key_list(void *obj, const IniKey *k, const char *v, bool append,
                                MsError *e) {
    return set_word_list(obj, k, v, append, check_credential_name, e);
}

/* A space-separated list of credential names. */
static int set_credential_list(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    return set_word_list(obj, k, v, append, check_credential_word, e);
}

static const char *const agent_sections[] = {"Agent", "Cluster", "Restore"};

static const IniKey agent_keys[] = {
    {"Agent", "Node", offsetof(MsAgentConfig, node), false, NULL, 0, 0, set_node, ini_get_string},
    {"Agent", "DefaultStore", offsetof(MsAgentConfig, default_store), false, NULL, 0, 0, set_store,
     ini_get_string},
    {"Agent", "MaxConcurrentTasks", offsetof(MsAgentConfig, max_concurrent_tasks), false,
     STRINGIFY(MS_DEFAULT_MAX_CONCURRENT_TASKS), MS_MAX_CONCURRENT_TASKS_MIN,
     MS_MAX_CONCURRENT_TASKS_MAX, ini_set_unsigned, ini_get_unsigned},
    {"Agent", "WorkerPath", offsetof(MsAgentConfig, worker_path), false, MS_DEFAULT_WORKER_PATH, 0,
     0, set_absolute_path, ini_get_string},
    {"Agent", "StateDirectory", offsetof(MsAgentConfig, state_directory), false,
     MS_DEFAULT_STATE_DIRECTORY, 0, 0, set_absolute_path, ini_get_string},
    {"Agent", "PolicyDirectory", offsetof(MsAgentConfig, policy_directory), false,
     MS_DEFAULT_POLICY_DIRECTORY, 0, 0, set_absolute_path, ini_get_string},
    {"Cluster", "URI", offsetof(MsAgentConfig, cluster_uri), false, NULL, 0, 0, set_cluster_uri,
     ini_get_string},
    {"Cluster", "Credential", offsetof(MsAgentConfig, cluster_credential), false, NULL, 0, 0,
     set_credential_name, ini_get_string},
    {"Cluster", "SigningKeyCredential", offsetof(MsAgentConfig, cluster_signing_keys), true, NULL,
     0, 0, set_signing_key_list, get_ns_list},
    {"Cluster", "Database", offsetof(MsAgentConfig, cluster_database), false,
     MS_CLUSTER_DEFAULT_DATABASE, 0, 0, set_database, ini_get_string},
    {"Cluster", "Member", offsetof(MsAgentConfig, cluster_member), false, NULL, 0, 0, set_member,
     ini_get_string},
    {"Cluster", "LeaseSec", offsetof(MsAgentConfig, cluster_lease_sec), false,
     STRINGIFY(MS_CLUSTER_DEFAULT_LEASE), MS_CLUSTER_LEASE_MIN, MS_CLUSTER_LEASE_MAX,
     ini_set_unsigned, ini_get_unsigned},
    {"Cluster", "HeartbeatSec", offsetof(MsAgentConfig, cluster_heartbeat_sec), false,
     STRINGIFY(MS_CLUSTER_DEFAULT_HEARTBEAT), MS_CLUSTER_HEARTBEAT_MIN, MS_CLUSTER_HEARTBEAT_MAX,
     ini_set_unsigned, ini_get_unsigned},
    {"Cluster", "TickWindowSec", offsetof(MsAgentConfig, cluster_tick_window_sec), false,
     STRINGIFY(MS_CLUSTER_DEFAULT_TICK_WINDOW), MS_CLUSTER_TICK_WINDOW_MIN,
     MS_CLUSTER_TICK_WINDOW_MAX, ini_set_unsigned, ini_get_unsigned},
    {"Restore", "Credentials", offsetof(MsAgentConfig, restore_credentials), true, NULL, 0, 0,
     set_credential_list, get_ns_list},
    {"Restore", "KeyCredentials", offsetof(MsAgentConfig, restore_key_credentials), true, NULL, 0,
     0, set_credential_list, get_ns_list},
    {"Restore", "AllowCleartext", offsetof(MsAgentConfig, restore_allow_cleartext), false, "no", 0,
     0, ini_set_bool, ini_get_bool},
};

static const IniSchema agent_schema = {
    agent_sections,
    ELEMENTSOF(agent_sections),
    agent_keys,
    ELEMENTSOF(agent_keys),
};

MsAgentConfig *ms_agent_config_free(MsAgentConfig *c) {
    if (!c)
        return NULL;
    free(c->node);
    free(c->default_store);
    free(c->worker_path);
    free(c->state_directory);
    free(c->policy_directory);
    free(c->cluster_uri);
    free(c->cluster_credential);
    ms_strv_free(c->cluster_signing_keys);
    free(c->cluster_database);
    free(c->cluster_member);
    ms_strv_free(c->restore_credentials);
    ms_strv_free(c->restore_key_credentials);
    free(c);
    return NULL;
}

/* Node= defaults to the host name, looked up once the file did not set it. */
static int agent_config_finish(MsAgentConfig *c, MsError *e) {
    /* A lease renewed every heartbeat must survive two missed ones. */
    if (c->cluster_heartbeat_sec * 3 > c->cluster_lease_sec)
        return ms_error_set(e, EINVAL,
                            "[Cluster] HeartbeatSec=%u is too long for LeaseSec=%u: the lease is "
                            "renewed every heartbeat and must outlast three of them; set "
                            "HeartbeatSec= to at most %u or raise LeaseSec=",
                            c->cluster_heartbeat_sec, c->cluster_lease_sec,
                            c->cluster_lease_sec / 3);
    /* A credential has one use: the cluster's password is never a restore target's. */
    if (c->cluster_credential &&
        (ms_strv_contains(c->restore_credentials, c->cluster_credential) ||
         ms_strv_contains(c->restore_key_credentials, c->cluster_credential)))
        return ms_error_set(e, EINVAL,
                            "[Restore] names '%s', the [Cluster] Credential=: a credential is "
                            "usable for one purpose only; give restore targets credentials of "
                            "their own",
                            c->cluster_credential);
    /* The cluster's keys sign what every agent may be ordered to do: they are nothing else. */
    size_t n_keys = ms_strv_length(c->cluster_signing_keys);
    for (size_t i = 0; i < n_keys; i++) {
        const char *key = c->cluster_signing_keys[i];
        if ((c->cluster_credential && strcmp(c->cluster_credential, key) == 0) ||
            ms_strv_contains(c->restore_credentials, key) ||
            ms_strv_contains(c->restore_key_credentials, key) || ms_credential_is_store_key(key))
            return ms_error_set(e, EINVAL,
                                "[Cluster] SigningKeyCredential=%s is also used as a password or "
                                "another key: a credential is usable for one purpose only; give "
                                "the cluster's key a credential of its own",
                                key);
    }
    if (n_keys > MS_CLUSTER_SIGNING_KEYS_MAX)
        return ms_error_set(e, EINVAL,
                            "[Cluster] SigningKeyCredential= names %zu keys: at most %d (the "
                            "new key first and the old ones during a rotation)",
                            n_keys, MS_CLUSTER_SIGNING_KEYS_MAX);
    if (n_keys > 0 && !c->cluster_uri)
        return ms_error_set(e, EINVAL,
                            "[Cluster] SigningKeyCredential= without URI=: the key signs what "
                            "the agents of a cluster write to its database; set URI= too, or "
                            "remove the key");
    if (c->node)
        return 0;
    char host[HOST_NAME_MAX + 1];
    if (gethostname(host, sizeof(host)) < 0)
        return ms_error_set(e, errno,
                            "cannot read the host name (%s); set Node= under [Agent] "
                            "in " MS_AGENT_CONFIG_PATH,
                            strerror(errno));
    host[HOST_NAME_MAX] = '\0';
    if (!node_name_is_valid(host))
        return ms_error_set(e, EINVAL,
                            "the host name '%s' cannot serve as the node name; set Node= under "
                            "[Agent] in " MS_AGENT_CONFIG_PATH,
                            host);
    c->node = strdup(host);
    return c->node ? 0 : ms_error_oom(e);
}

static int agent_config_new_unfinished(MsAgentConfig **ret, MsError *e) {
    _cleanup_(ms_agent_config_freep) MsAgentConfig *c = calloc(1, sizeof(*c));
    if (!c)
        return ms_error_oom(e);
    for (size_t i = 0; i < ELEMENTSOF(agent_keys); i++) {
        int r = agent_keys[i].set(c, &agent_keys[i], agent_keys[i].default_value, false, e);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(c);
    return 0;
}

int ms_agent_config_new_default(MsAgentConfig **ret, MsError *e) {
    _cleanup_(ms_agent_config_freep) MsAgentConfig *c = NULL;
    int r = agent_config_new_unfinished(&c, e);
    if (r < 0)
        return r;
    r = agent_config_finish(c, e);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

int ms_agent_config_parse_string(const char *path, const char *text, MsAgentConfig **ret,
                                 MsError *e) {
    _cleanup_(ms_agent_config_freep) MsAgentConfig *c = NULL;
    int r = agent_config_new_unfinished(&c, e);
    if (r < 0)
        return r;
    r = ini_schema_parse(&agent_schema, c, path, text, strlen(text), e);
    if (r < 0)
        return r;
    r = agent_config_finish(c, e);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

int ms_agent_config_load(const char *path, MsAgentConfig **ret, MsError *e) {
    if (!path)
        path = MS_AGENT_CONFIG_PATH;
    _cleanup_free_ char *text = NULL;
    size_t len;
    MsError local = MS_ERROR_INIT;
    int r = ini_read_file(AT_FDCWD, path, path, &text, &len, &local);
    if (r == -ENOENT)
        return ms_agent_config_new_default(ret, e);
    if (r < 0)
        return ms_error_set(e, local.code, "%s", local.message);
    return ms_agent_config_parse_string(path, text, ret, e);
}

/* ======================================================================================
 * Policies
 * ====================================================================================== */

static const char *const node_priority_names[_MS_NODE_PRIORITY_MAX] = {
    [MS_NODE_PRIORITY_AUTO] = "auto",
    [MS_NODE_PRIORITY_HIDDEN] = "hidden",
    [MS_NODE_PRIORITY_SECONDARY] = "secondary",
    [MS_NODE_PRIORITY_PRIMARY] = "primary",
};

MS_DEFINE_STRING_TABLE_LOOKUP(ms_node_priority, MsNodePriority, node_priority_names,
                              MS_NODE_PRIORITY_INVALID)

static const char *const cipher_names[_MS_CIPHER_MAX] = {
    [MS_CIPHER_NONE] = "none",
    [MS_CIPHER_AES_256_GCM] = "aes-256-gcm",
};

MS_DEFINE_STRING_TABLE_LOOKUP(ms_cipher, MsCipher, cipher_names, MS_CIPHER_INVALID)

static int set_source(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v) {
        int r = check_source_uri(k->name, v, e);
        if (r < 0)
            return r;
    }
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

/* Only the shape is checked here: systemd parses the calendar expression when the timer
 * unit is created, and the agent reports its verdict then; a second parser here could only
 * disagree with systemd's. */
static int set_schedule(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    if (v) {
        size_t len = strlen(v);
        if (len > MS_SCHEDULE_MAX)
            return ms_error_set(e, EINVAL,
                                "%s= is %zu characters long; a calendar expression has at most %d",
                                k->name, len, MS_SCHEDULE_MAX);
        for (const char *c = v; *c; c++)
            if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f)
                return ms_error_set(e, EINVAL,
                                    "%s='%s' holds characters a systemd calendar expression "
                                    "cannot have; write e.g. daily, 'Mon..Fri *-*-* 02:00' or "
                                    "'*-*-* 00/6:00' (see systemd.time(7))",
                                    k->name, v);
    }
    return set_string(INI_FIELD(obj, k), v) < 0 ? ms_error_oom(e) : 0;
}

static int set_compression(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    MsCompression c = ms_compression_from_string(v);
    if (c == MS_COMPRESSION_INVALID)
        return ms_error_set(e, EINVAL, "%s='%s' is not supported: use zstd, gzip or none", k->name,
                            v);
    *(MsCompression *) INI_FIELD(obj, k) = c;
    return 0;
}

static char *get_compression(const void *obj, const IniKey *k) {
    const char *s = ms_compression_to_string(*(const MsCompression *) INI_CFIELD(obj, k));
    return strdup(s ? s : "");
}

/* Format=archive|chunked (engine/chunked.h): one object per snapshot, or deduplicated chunks. */
static int set_format(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    bool *chunked = INI_FIELD(obj, k);
    if (strcmp(v, "archive") == 0)
        *chunked = false;
    else if (strcmp(v, "chunked") == 0)
        *chunked = true;
    else
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a snapshot format: use archive (one mongodump archive "
                            "object per snapshot, the default) or chunked (deduplicated chunks "
                            "and an index; a daily full snapshot stores only what changed)",
                            k->name, v);
    return 0;
}

static char *get_format(const void *obj, const IniKey *k) {
    return strdup(*(const bool *) INI_CFIELD(obj, k) ? "chunked" : "archive");
}

static int set_level(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    unsigned x;
    if (ini_parse_unsigned(v, k->min, k->max, &x) < 0)
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not valid: give 1 to %d for zstd, 1 to %d for gzip, or 0 "
                            "for the codec's default",
                            k->name, v, ZSTD_LEVEL_MAX, GZIP_LEVEL_MAX);
    *(int *) INI_FIELD(obj, k) = (int) x;
    return 0;
}

static char *get_int(const void *obj, const IniKey *k) {
    char *s = NULL;
    return asprintf(&s, "%d", *(const int *) INI_CFIELD(obj, k)) < 0 ? NULL : s;
}

static int set_node_priority(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    MsNodePriority p = ms_node_priority_from_string(v);
    if (p == MS_NODE_PRIORITY_INVALID)
        return ms_error_set(
            e, EINVAL, "%s='%s' is not valid: use auto, hidden, secondary or primary", k->name, v);
    *(MsNodePriority *) INI_FIELD(obj, k) = p;
    return 0;
}

static char *get_node_priority(const void *obj, const IniKey *k) {
    const char *s = ms_node_priority_to_string(*(const MsNodePriority *) INI_CFIELD(obj, k));
    return strdup(s ? s : "");
}

static int set_ns_list(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    return set_word_list(obj, k, v, append, check_ns_pattern, e);
}

static char *get_ns_list(const void *obj, const IniKey *k) {
    char *const *l = *(char **const *) INI_CFIELD(obj, k);
    size_t size = 1;
    for (size_t i = 0; l && l[i]; i++)
        size += strlen(l[i]) + 1;
    char *s = malloc(size);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; l && l[i]; i++) {
        if (o)
            s[o++] = ' ';
        memcpy(s + o, l[i], strlen(l[i]));
        o += strlen(l[i]);
    }
    s[o] = '\0';
    return s;
}

static int set_encryption_key(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    MsPolicy *p = obj;
    int r = set_credential_name(obj, k, v, append, e);
    if (r < 0)
        return r;
    /* A key alone means the one cipher there is; clearing the key turns encryption off. */
    if (!v)
        p->cipher = MS_CIPHER_NONE;
    else if (p->cipher == MS_CIPHER_NONE)
        p->cipher = MS_CIPHER_AES_256_GCM;
    return 0;
}

static int set_cipher(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    MsPolicy *p = obj;
    if (!v) {
        p->cipher = p->encryption_key ? MS_CIPHER_AES_256_GCM : MS_CIPHER_NONE;
        return 0;
    }
    if (ms_cipher_from_string(v) != MS_CIPHER_AES_256_GCM)
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not supported: the only cipher is aes-256-gcm (to turn "
                            "encryption off, remove Key=)",
                            k->name, v);
    p->cipher = MS_CIPHER_AES_256_GCM;
    return 0;
}

static char *get_cipher(const void *obj, const IniKey *k) {
    const MsPolicy *p = obj;
    return strdup(p->cipher == MS_CIPHER_NONE ? "" : ms_cipher_to_string(p->cipher));
}

/* [PointInTime] Compression=: unset means "as [Policy] Compression=". */
static int set_slice_compression(void *obj, const IniKey *k, const char *v, bool append,
                                 MsError *e) {
    MsPolicy *p = obj;
    if (!v || !*v) {
        p->pit_compression = MS_COMPRESSION_INVALID;
        return 0;
    }
    return set_compression(obj, k, v, append, e);
}

static char *get_slice_compression(const void *obj, const IniKey *k) {
    const MsPolicy *p = obj;
    return p->pit_compression == MS_COMPRESSION_INVALID ? strdup("") : get_compression(obj, k);
}

static int set_slice_sec(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    int r = ini_set_timespan(obj, k, v, append, e);
    if (r < 0)
        return r;
    uint64_t usec = ((MsPolicy *) obj)->pit_slice_usec;
    if (usec < MS_PIT_SLICE_MIN_USEC || usec > MS_PIT_SLICE_MAX_USEC)
        return ms_error_set(e, EINVAL,
                            "%s='%s' is out of range: a slice closes every 10s at the shortest "
                            "(the recovery point) and every 24h at the longest",
                            k->name, v);
    return 0;
}

#define SECTION_POLICY "Policy"
#define SECTION_RETENTION "Retention"
#define SECTION_ENCRYPTION "Encryption"
#define SECTION_PIT "PointInTime"

static const char *const policy_sections[] = {SECTION_POLICY, SECTION_RETENTION,
                                              SECTION_ENCRYPTION, SECTION_PIT};

#define POLICY_KEY(section, name, field, repeatable, def, min, max, set, get)                      \
    { section, name, offsetof(MsPolicy, field), repeatable, def, min, max, set, get }

/* The order here is the order of ms_policy_to_ini() and of "known keys" in messages. */
static const IniKey policy_keys[] = {
    POLICY_KEY(SECTION_POLICY, "Source", source, false, NULL, 0, 0, set_source, ini_get_string),
    POLICY_KEY(SECTION_POLICY, "Credential", credential, false, NULL, 0, 0, set_credential_name,
               ini_get_string),
    POLICY_KEY(SECTION_POLICY, "Schedule", schedule, false, NULL, 0, 0, set_schedule,
               ini_get_string),
    POLICY_KEY(SECTION_POLICY, "RandomizedDelaySec", randomized_delay_usec, false, "0", 0, 0,
               ini_set_timespan, ini_get_timespan),
    POLICY_KEY(SECTION_POLICY, "Persistent", persistent, false, "yes", 0, 0, ini_set_bool,
               ini_get_bool),
    POLICY_KEY(SECTION_POLICY, "Store", store, false, NULL, 0, 0, set_store, ini_get_string),
    POLICY_KEY(SECTION_POLICY, "Format", chunked, false, "archive", 0, 0, set_format, get_format),
    POLICY_KEY(SECTION_POLICY, "Compression", compression, false, "zstd", 0, 0, set_compression,
               get_compression),
    POLICY_KEY(SECTION_POLICY, "CompressionLevel", compression_level, false, "0", 0, ZSTD_LEVEL_MAX,
               set_level, get_int),
    POLICY_KEY(SECTION_POLICY, "ParallelCollections", parallel_collections, false,
               STRINGIFY(MS_DEFAULT_PARALLEL_COLLECTIONS), MS_PARALLEL_COLLECTIONS_MIN,
               MS_PARALLEL_COLLECTIONS_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_POLICY, "IncludeNamespaces", include_namespaces, true, NULL, 0, 0,
               set_ns_list, get_ns_list),
    POLICY_KEY(SECTION_POLICY, "ExcludeNamespaces", exclude_namespaces, true, NULL, 0, 0,
               set_ns_list, get_ns_list),
    POLICY_KEY(SECTION_POLICY, "IncludeUsers", include_users, false, "no", 0, 0, ini_set_bool,
               ini_get_bool),
    POLICY_KEY(SECTION_POLICY, "Oplog", oplog, false, "yes", 0, 0, ini_set_bool, ini_get_bool),
    POLICY_KEY(SECTION_POLICY, "NodePriority", node_priority, false, "auto", 0, 0,
               set_node_priority, get_node_priority),
    POLICY_KEY(SECTION_RETENTION, "KeepLast", retention.keep_last, false, "0", 0,
               MS_RETENTION_KEEP_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_RETENTION, "MaxAge", retention.max_age_usec, false, "0", 0, 0,
               ini_set_timespan, ini_get_timespan),
    POLICY_KEY(SECTION_RETENTION, "KeepDaily", retention.keep_daily, false, "0", 0,
               MS_RETENTION_KEEP_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_RETENTION, "KeepWeekly", retention.keep_weekly, false, "0", 0,
               MS_RETENTION_KEEP_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_RETENTION, "KeepMonthly", retention.keep_monthly, false, "0", 0,
               MS_RETENTION_KEEP_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_RETENTION, "KeepManual", retention.keep_manual, false, "0", 0,
               MS_RETENTION_KEEP_MAX, ini_set_unsigned, ini_get_unsigned),
    POLICY_KEY(SECTION_ENCRYPTION, "Key", encryption_key, false, NULL, 0, 0, set_encryption_key,
               ini_get_string),
    POLICY_KEY(SECTION_ENCRYPTION, "Cipher", cipher, false, NULL, 0, 0, set_cipher, get_cipher),
    POLICY_KEY(SECTION_PIT, "Enabled", pit_enabled, false, "no", 0, 0, ini_set_bool, ini_get_bool),
    POLICY_KEY(SECTION_PIT, "SliceSec", pit_slice_usec, false, "60s", 0, 0, set_slice_sec,
               ini_get_timespan),
    /* Bare "Compression" names [Policy]'s (the first): this one is "PointInTime.Compression". */
    POLICY_KEY(SECTION_PIT, "Compression", pit_compression, false, NULL, 0, 0,
               set_slice_compression, get_slice_compression),
};

static const IniSchema policy_schema = {
    policy_sections,
    ELEMENTSOF(policy_sections),
    policy_keys,
    ELEMENTSOF(policy_keys),
};

MsPolicy *ms_policy_free(MsPolicy *p) {
    if (!p)
        return NULL;
    free(p->name);
    free(p->source);
    free(p->credential);
    free(p->schedule);
    free(p->store);
    ms_strv_free(p->include_namespaces);
    ms_strv_free(p->exclude_namespaces);
    free(p->encryption_key);
    free(p);
    return NULL;
}

int ms_policy_new(const char *name, MsPolicy **ret, MsError *e) {
    if (!ms_policy_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "'%s' is not a valid policy name: 1 to %d letters, digits, '_', '.' or "
                            "'-', starting with a letter or digit, without '..'",
                            name ? name : "", MS_NAME_MAX);
    _cleanup_(ms_policy_freep) MsPolicy *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name)))
        return ms_error_oom(e);
    for (size_t i = 0; i < ELEMENTSOF(policy_keys); i++) {
        int r = policy_keys[i].set(p, &policy_keys[i], policy_keys[i].default_value, false, e);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(p);
    return 0;
}

int ms_policy_check(const MsPolicy *p, MsError *e) {
    if (!p->source)
        return ms_error_set(e, EINVAL,
                            "[Policy] Source= is missing: set it to the MongoDB connection string "
                            "without password, e.g. Source=mongodb://backup@db1,db2/"
                            "?replicaSet=rs0");
    if (p->compression == MS_COMPRESSION_GZIP && p->compression_level > GZIP_LEVEL_MAX)
        return ms_error_set(e, EINVAL,
                            "[Policy] CompressionLevel=%d is too high for gzip: use 1 to %d (or "
                            "0 for the default)",
                            p->compression_level, GZIP_LEVEL_MAX);
    if (p->compression == MS_COMPRESSION_NONE && p->compression_level != 0)
        return ms_error_set(e, EINVAL,
                            "[Policy] CompressionLevel=%d has no meaning with Compression=none; "
                            "remove it or choose zstd or gzip",
                            p->compression_level);
    if (p->chunked && p->compression != MS_COMPRESSION_ZSTD)
        return ms_error_set(e, EINVAL,
                            "[Policy] Format=chunked compresses each chunk with zstd: remove "
                            "Compression=%s (or set zstd)",
                            ms_compression_to_string(p->compression));
    if (p->pit_enabled && !p->oplog)
        return ms_error_set(e, EINVAL,
                            "[PointInTime] Enabled=yes needs [Policy] Oplog=yes: a restore to a "
                            "time starts from a snapshot consistent at its end, which only the "
                            "captured oplog makes it");
    if (p->pit_enabled &&
        (ms_strv_length(p->include_namespaces) > 0 || ms_strv_length(p->exclude_namespaces) > 0))
        return ms_error_set(e, EINVAL,
                            "[PointInTime] Enabled=yes cannot be combined with IncludeNamespaces= "
                            "or ExcludeNamespaces= yet: the slices hold the whole oplog, and a "
                            "restore to a time would replay changes to collections the snapshot "
                            "left out. Use a policy without namespace filters for point-in-time "
                            "recovery");
    if (p->cipher != MS_CIPHER_NONE && !p->encryption_key)
        return ms_error_set(e, EINVAL,
                            "[Encryption] Cipher= is set but Key= is not, so nothing would be "
                            "encrypted: set Key= to the name of the credential holding the key");
    return 0;
}

const char *ms_policy_effective_store(const MsPolicy *p, const MsAgentConfig *agent) {
    if (p->store)
        return p->store;
    return agent ? agent->default_store : NULL;
}

int ms_policy_parse_string(const char *name, const char *path, const char *text, MsPolicy **ret,
                           MsError *e) {
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    int r = ms_policy_new(name, &p, e);
    if (r < 0) {
        ms_error_prefix(e, "%s: ", path);
        return r;
    }
    r = ini_schema_parse(&policy_schema, p, path, text, strlen(text), e);
    if (r < 0)
        return r;
    r = ms_policy_check(p, e);
    if (r < 0) {
        ms_error_prefix(e, "%s: ", path);
        return r;
    }
    *ret = TAKE_PTR(p);
    return 0;
}

/* The policy name of "dir/NAME.conf" (newly allocated), or NULL if the name does not end so. */
static char *policy_name_from_file_name(const char *file_name) {
    if (!endswith(file_name, MS_POLICY_FILE_SUFFIX))
        return NULL;
    return strndup(file_name, strlen(file_name) - strlen(MS_POLICY_FILE_SUFFIX));
}

/* Load the policy in file open_name (relative to dir_fd); its name comes from base_name. */
static int policy_load_at(int dir_fd, const char *open_name, const char *base_name,
                          const char *path, MsPolicy **ret, MsError *e) {
    _cleanup_free_ char *name = policy_name_from_file_name(base_name);
    if (!name)
        return ms_error_set(e, EINVAL, "%s: a policy file name ends in " MS_POLICY_FILE_SUFFIX,
                            path);
    if (!ms_policy_name_is_valid(name))
        return ms_error_set(e, EINVAL,
                            "%s: '%s' is not a valid policy name (1 to %d letters, digits, '_', "
                            "'.' or '-', starting with a letter or digit, without '..'); rename "
                            "the file",
                            path, name, MS_NAME_MAX);
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = ini_read_file(dir_fd, open_name, path, &text, &len, e);
    if (r < 0)
        return r;
    return ms_policy_parse_string(name, path, text, ret, e);
}

int ms_policy_load_file(const char *path, MsPolicy **ret, MsError *e) {
    const char *slash = strrchr(path, '/');
    return policy_load_at(AT_FDCWD, path, slash ? slash + 1 : path, path, ret, e);
}

int ms_policy_dup(const MsPolicy *p, MsPolicy **ret, MsError *e) {
    _cleanup_(ms_policy_freep) MsPolicy *q = calloc(1, sizeof(*q));
    if (!q)
        return ms_error_oom(e);
    *q = *p;
    /* Own nothing yet, so a failure below frees only what was copied. */
    q->name = q->source = q->credential = q->schedule = q->store = q->encryption_key = NULL;
    q->include_namespaces = q->exclude_namespaces = NULL;
    if (set_string(&q->name, p->name) < 0 || set_string(&q->source, p->source) < 0 ||
        set_string(&q->credential, p->credential) < 0 ||
        set_string(&q->schedule, p->schedule) < 0 || set_string(&q->store, p->store) < 0 ||
        set_string(&q->encryption_key, p->encryption_key) < 0 ||
        strv_copy(p->include_namespaces, &q->include_namespaces) < 0 ||
        strv_copy(p->exclude_namespaces, &q->exclude_namespaces) < 0)
        return ms_error_oom(e);
    *ret = TAKE_PTR(q);
    return 0;
}

/* Setting by setting as the file would say it, so a field added to the table is compared
 * without anyone remembering to. */
bool ms_policy_equal(const MsPolicy *a, const MsPolicy *b) {
    if (a == b)
        return true;
    if (!a || !b || !streq_null(a->name, b->name))
        return false;
    for (size_t i = 0; i < ELEMENTSOF(policy_keys); i++) {
        _cleanup_free_ char *va = policy_keys[i].get(a, &policy_keys[i]);
        _cleanup_free_ char *vb = policy_keys[i].get(b, &policy_keys[i]);
        if (!va || !vb || strcmp(va, vb) != 0)
            return false;
    }
    return true;
}

static int policy_unknown_setting(const char *key, MsError *e) {
    char known[MS_ERROR_MESSAGE_MAX / 2];
    size_t o = 0;
    for (size_t s = 0; s < ELEMENTSOF(policy_sections) && o < sizeof(known); s++) {
        char list[MS_ERROR_MESSAGE_MAX / 2];
        ini_schema_list_keys(&policy_schema, policy_sections[s], list, sizeof(list));
        int w = snprintf(known + o, sizeof(known) - o, "%s[%s] %s", o ? "; " : "",
                         policy_sections[s], list);
        if (w < 0)
            break;
        o += (size_t) w;
    }
    return ms_error_set(e, EINVAL, "unknown setting '%s'; known settings: %s", key, known);
}

/* "Section.Key" or a bare "Key" (names are unique across sections). */
static const IniKey *policy_key_lookup(const char *key, MsError *e) {
    const IniKey *k = NULL;
    const char *dot = strchr(key, '.');
    if (dot) {
        _cleanup_free_ char *section = strndup(key, (size_t) (dot - key));
        if (!section) {
            ms_error_oom(e);
            return NULL;
        }
        k = ini_schema_key(&policy_schema, section, dot + 1);
    } else
        k = ini_schema_key(&policy_schema, NULL, key);
    if (!k)
        policy_unknown_setting(key, e);
    return k;
}

int ms_policy_get_setting(const MsPolicy *p, const char *key, char **ret, MsError *e) {
    const IniKey *k = policy_key_lookup(key, e);
    if (!k)
        return -EINVAL;
    char *v = k->get(p, k);
    if (!v)
        return ms_error_oom(e);
    *ret = v;
    return 0;
}

int ms_policy_to_ini(const MsPolicy *p, char **ret, MsError *e) {
    _cleanup_free_ char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return ms_error_oom(e);
    fprintf(f, "# mongosnap policy \"%s\" (named by this file's name).\n", p->name);
    fprintf(f, "# Written by mongosnap; comments in this file are not kept.\n");
    bool ok = true;
    for (size_t s = 0; s < ELEMENTSOF(policy_sections) && ok; s++) {
        bool header = false;
        for (size_t i = 0; i < ELEMENTSOF(policy_keys) && ok; i++) {
            const IniKey *k = &policy_keys[i];
            if (strcmp(k->section, policy_sections[s]) != 0)
                continue;
            _cleanup_free_ char *v = k->get(p, k);
            if (!v) {
                ok = false;
                break;
            }
            /* Defaults are left out, so a policy follows a changed default unless it chose
             * otherwise. */
            if (strcmp(v, k->default_value ? k->default_value : "") == 0)
                continue;
            if (!header)
                fprintf(f, "\n[%s]\n", policy_sections[s]);
            header = true;
            if (!k->repeatable) {
                fprintf(f, "%s=%s\n", k->name, v);
                continue;
            }
            /* One line per list entry keeps lines short and diffs readable. */
            char *save = NULL;
            for (char *item = strtok_r(v, " ", &save); item; item = strtok_r(NULL, " ", &save))
                fprintf(f, "%s=%s\n", k->name, item);
        }
    }
    if (fclose(f) != 0 || !ok)
        return ms_error_oom(e);
    *ret = TAKE_PTR(buf);
    return 0;
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t) n;
    }
    return 0;
}

int ms_policy_write_atomic(const char *dir, const MsPolicy *p, MsError *e) {
    if (!ms_policy_name_is_valid(p->name))
        return ms_error_set(e, EINVAL, "cannot write a policy with the invalid name '%s'",
                            p->name ? p->name : "");
    _cleanup_free_ char *text = NULL;
    int r = ms_policy_to_ini(p, &text, e);
    if (r < 0)
        return r;

    _cleanup_free_ char *file_name = NULL, *path = NULL;
    if (asprintf(&file_name, "%s" MS_POLICY_FILE_SUFFIX, p->name) < 0)
        return ms_error_oom(e);
    if (asprintf(&path, "%s/%s", dir, file_name) < 0)
        return ms_error_oom(e);

    /* What we write must load back as this very policy: the same parser decides. */
    _cleanup_(ms_policy_freep) MsPolicy *back = NULL;
    r = ms_policy_parse_string(p->name, path, text, &back, e);
    if (r < 0) {
        ms_error_prefix(e, "refusing to write policy '%s': ", p->name);
        return r;
    }
    if (!ms_policy_equal(p, back))
        return ms_error_set(e, EINVAL,
                            "refusing to write policy '%s': its file text would not load back "
                            "the same (a bug: please report it)",
                            p->name);

    _cleanup_close_ int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return ms_error_set(e, errno, "cannot open policy directory %s: %s", dir, strerror(errno));

    uint8_t rnd[MS_TMP_RANDOM_BYTES];
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd))
        return ms_error_set(e, errno ? errno : EIO,
                            "cannot get random bytes for a temporary "
                            "file name: %s",
                            strerror(errno ? errno : EIO));
    char tmp[NAME_MAX + 1];
    int w = snprintf(tmp, sizeof(tmp), MS_TMP_PREFIX "%s.", file_name);
    for (size_t i = 0; i < sizeof(rnd) && w > 0 && (size_t) w + 2 < sizeof(tmp); i++)
        w += snprintf(tmp + w, sizeof(tmp) - (size_t) w, "%02x", rnd[i]);

    _cleanup_close_ int fd = openat(
        dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, MS_POLICY_FILE_MODE);
    if (fd < 0)
        return ms_error_set(e, errno, "cannot create a temporary file in %s: %s", dir,
                            strerror(errno));
    const char *step;
    /* The umask may have taken bits away; the mode is part of the contract. */
    if (fchmod(fd, MS_POLICY_FILE_MODE) < 0)
        step = "set the mode of";
    else if ((r = write_all(fd, text, strlen(text))) < 0) {
        errno = -r;
        step = "write";
    } else if (fsync(fd) < 0)
        step = "flush";
    else if (close(TAKE_FD(fd)) < 0)
        step = "close";
    else if (renameat(dir_fd, tmp, dir_fd, file_name) < 0)
        step = "rename the temporary file to";
    else {
        /* The rename is durable only once the directory is on disk. */
        if (fsync(dir_fd) < 0)
            return ms_error_set(e, errno, "wrote %s but could not flush directory %s: %s", path,
                                dir, strerror(errno));
        return 0;
    }
    int err = errno;
    unlinkat(dir_fd, tmp, 0);
    return ms_error_set(e, err, "cannot %s %s: %s", step, path, strerror(err));
}

/* A value must come back from the file as it went in. */
static int check_edit_value(const char *key, const char *v, MsError *e) {
    bool was_space = false;
    for (const char *c = v; *c; c++) {
        if (is_control(*c))
            return ms_error_set(e, EINVAL, "the value for %s holds a control character", key);
        if (was_space && *c == ';')
            return ms_error_set(e, EINVAL,
                                "the value for %s holds ' ;', which starts a comment in the "
                                "policy file; remove the space before ';'",
                                key);
        was_space = ascii_isblank(*c);
    }
    return 0;
}

int ms_policy_apply_edit(MsPolicy *p, const char *key, const char *value, MsError *e) {
    if (!key || !value)
        return ms_error_set(e, EINVAL, "an edit needs a key and a value");
    const IniKey *k = policy_key_lookup(key, e);
    if (!k)
        return -EINVAL;
    /* Whitespace around a value would not survive the file either. */
    while (ascii_isblank(*value))
        value++;
    _cleanup_free_ char *v = strdup(value);
    if (!v)
        return ms_error_oom(e);
    for (size_t n = strlen(v); n > 0 && ascii_isblank(v[n - 1]); n--)
        v[n - 1] = '\0';
    int r = check_edit_value(k->name, v, e);
    if (r < 0)
        return r;

    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    r = ms_policy_dup(p, &q, e);
    if (r < 0)
        return r;
    r = k->set(q, k, v[0] ? v : k->default_value, false, e);
    if (r < 0)
        return r;
    r = ms_policy_check(q, e);
    if (r < 0)
        return r;
    MsPolicy old = *p;
    *p = *q;
    *q = old;
    return 0;
}

int ms_policy_apply_assignment(MsPolicy *p, const char *assignment, MsError *e) {
    const char *eq = assignment ? strchr(assignment, '=') : NULL;
    if (!eq || eq == assignment)
        return ms_error_set(e, EINVAL,
                            "'%s' is not an assignment: write KEY=VALUE or SECTION.KEY=VALUE "
                            "(e.g. Schedule=daily, Retention.KeepDaily=7)",
                            assignment ? assignment : "");
    _cleanup_free_ char *key = strndup(assignment, (size_t) (eq - assignment));
    if (!key)
        return ms_error_oom(e);
    for (size_t n = strlen(key); n > 0 && ascii_isblank(key[n - 1]); n--)
        key[n - 1] = '\0';
    const char *k = key;
    while (ascii_isblank(*k))
        k++;
    return ms_policy_apply_edit(p, k, eq + 1, e);
}

/* ======================================================================================
 * A policy directory
 * ====================================================================================== */

MsPolicySet *ms_policy_set_free(MsPolicySet *s) {
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->n_policies; i++)
        ms_policy_free(s->policies[i]);
    free(s->policies);
    for (size_t i = 0; i < s->n_errors; i++)
        free(s->errors[i].path);
    free(s->errors);
    free(s);
    return NULL;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static void closedirp(DIR **d) {
    if (*d)
        closedir(*d);
}

static int policy_set_add_error(MsPolicySet *s, const char *path, const MsError *err) {
    MsPolicyLoadError *m = realloc(s->errors, (s->n_errors + 1) * sizeof(*m));
    if (!m)
        return -ENOMEM;
    s->errors = m;
    m[s->n_errors].path = strdup(path);
    if (!m[s->n_errors].path)
        return -ENOMEM;
    m[s->n_errors].error = *err;
    s->n_errors++;
    return 0;
}

static int policy_set_add(MsPolicySet *s, MsPolicy *p) {
    MsPolicy **m = realloc(s->policies, (s->n_policies + 1) * sizeof(*m));
    if (!m)
        return -ENOMEM;
    s->policies = m;
    m[s->n_policies++] = p;
    return 0;
}

int ms_policy_load_dir(const char *dir, MsPolicySet **ret, MsError *e) {
    _cleanup_(ms_policy_set_freep) MsPolicySet *set = calloc(1, sizeof(*set));
    if (!set)
        return ms_error_oom(e);
    _cleanup_(closedirp) DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) {
            *ret = TAKE_PTR(set);
            return 0;
        }
        return ms_error_set(e, errno, "cannot read policy directory %s: %s", dir, strerror(errno));
    }
    _cleanup_(ms_strv_freep) char **names = calloc(1, sizeof(char *));
    if (!names)
        return ms_error_oom(e);
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                return ms_error_set(e, errno, "cannot read policy directory %s: %s", dir,
                                    strerror(errno));
            break;
        }
        /* Hidden files are editor backups and our own temporary files. */
        if (de->d_name[0] == '.' || !endswith(de->d_name, MS_POLICY_FILE_SUFFIX))
            continue;
        if (ms_strv_push(&names, de->d_name) < 0)
            return ms_error_oom(e);
    }
    size_t n = ms_strv_length(names);
    qsort(names, n, sizeof(char *), compare_strings);

    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, names[i]) < 0)
            return ms_error_oom(e);
        MsError err = MS_ERROR_INIT;
        MsPolicy *p = NULL;
        int r = policy_load_at(dirfd(d), names[i], names[i], path, &p, &err);
        if (r < 0)
            r = policy_set_add_error(set, path, &err);
        else if ((r = policy_set_add(set, p)) < 0)
            ms_policy_free(p);
        if (r < 0)
            return ms_error_oom(e);
    }
    *ret = TAKE_PTR(set);
    return 0;
}

/* The agent's configuration: mongosnap.conf and the policy files in policies.d/NAME.conf. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strv.h"
#include "common/timespan.h"
#include "io/compression.h"

/* File syntax (parsed with inih, checked like systemd unit files):
 *   - "[Section]" headers and "Key=value" lines; leading and trailing whitespace is ignored;
 *   - lines starting with '#' or ';' are comments, and so is anything after " ;" on a line;
 *   - no continuation lines: an indented line is an ordinary line; a line may be up to 4096
 *     characters long (inih's own 200-byte buffer is worked around);
 *   - unknown sections and keys are errors, and so is a key given twice, except the keys
 *     documented as repeatable, where each line adds to the list;
 *   - "Key=" (empty value) resets the setting to its default; for a list, it empties it.
 * Every error message starts with "FILE:LINE: " (or "FILE: " when no line is to blame). */

#define MS_AGENT_CONFIG_PATH "/etc/mongosnap/mongosnap.conf"
#define MS_DEFAULT_STATE_DIRECTORY "/var/lib/mongosnap"
#define MS_DEFAULT_POLICY_DIRECTORY "/etc/mongosnap/policies.d"
#define MS_POLICY_FILE_SUFFIX ".conf"

/* Policy and credential names: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ without "..". They become
 * file names, unit instance names, D-Bus object paths (escaped) and journal fields. */
#define MS_NAME_MAX 64

#define MS_MAX_CONCURRENT_TASKS_MIN 1
#define MS_MAX_CONCURRENT_TASKS_MAX 64
#define MS_DEFAULT_MAX_CONCURRENT_TASKS 2

#define MS_PARALLEL_COLLECTIONS_MIN 1
#define MS_PARALLEL_COLLECTIONS_MAX 64
/* The worker's default too (mongosnap-worker --parallel). */
#define MS_DEFAULT_PARALLEL_COLLECTIONS 4

/* Schedule= is kept as text; systemd checks it fully when the timer is created. */
#define MS_SCHEDULE_MAX 256

/* An upper bound for every Keep*= count; far beyond any sane retention. */
#define MS_RETENTION_KEEP_MAX 100000

/* ---- the agent: /etc/mongosnap/mongosnap.conf, section [Agent] ---- */

typedef struct MsAgentConfig {
    char *node;          /* Node=; default: the host name */
    char *default_store; /* DefaultStore=; NULL when unset (then every policy needs Store=) */
    unsigned max_concurrent_tasks; /* MaxConcurrentTasks=, 1..64, default 2 */
    char *worker_path;             /* WorkerPath=, absolute */
    char *state_directory;         /* StateDirectory=, absolute */
    char *policy_directory;        /* PolicyDirectory=, absolute */

    /* [Cluster]: the agents of a cluster coordinate through the deployment (docs/architecture.md
     * "Several nodes"). cluster_uri NULL: this agent works alone. */
    char *cluster_uri;        /* URI=, a MongoDB URI without password */
    char *cluster_credential; /* Credential=: systemd credential with the password */
    /* SigningKeyCredential=: credentials with the keys every agent shares; the first signs,
     * each one is accepted (a rotation lists the new and the old). Empty or NULL: none. */
    char **cluster_signing_keys;
    char *cluster_database;   /* Database=, default "mongosnap" */
    char *cluster_member;     /* Member=: the replica-set member beside this agent (host:port) */
    unsigned cluster_lease_sec;       /* LeaseSec=, default 30 */
    unsigned cluster_heartbeat_sec;   /* HeartbeatSec=, default 2; at most LeaseSec/3 */
    unsigned cluster_tick_window_sec; /* TickWindowSec=, default 60 (+ RandomizedDelaySec=) */

    /* [Restore]: which credentials StartRestore callers may name (credential scopes, see
     * mongosnapd(8)). NULL-terminated lists, NULL when empty. */
    char **restore_credentials;     /* Credentials=: passwords of restore targets */
    char **restore_key_credentials; /* KeyCredentials=: old encryption keys (after a rotation) */
    bool restore_allow_cleartext;   /* AllowCleartext=: PLAIN without verified TLS to targets */
} MsAgentConfig;

/* Credential names that hold the store's keys: never usable as anything else. */
#define MS_S3_CREDENTIAL_NAMES "s3-access-key-id", "s3-secret-access-key", "s3-session-token"
/* Is name one of the S3 store's credentials? */
bool ms_credential_is_store_key(const char *name);

#define MS_CLUSTER_DEFAULT_DATABASE "mongosnap"
#define MS_CLUSTER_SIGNING_KEYS_MAX 4
#define MS_CLUSTER_LEASE_MIN 3
#define MS_CLUSTER_LEASE_MAX 3600
#define MS_CLUSTER_DEFAULT_LEASE 30
#define MS_CLUSTER_HEARTBEAT_MIN 1
#define MS_CLUSTER_HEARTBEAT_MAX 600
#define MS_CLUSTER_DEFAULT_HEARTBEAT 2
#define MS_CLUSTER_TICK_WINDOW_MIN 1
#define MS_CLUSTER_TICK_WINDOW_MAX 86400
#define MS_CLUSTER_DEFAULT_TICK_WINDOW 60

/* The built-in defaults (node = host name). Tests and callers may then replace any path
 * field (free the old string, store a malloc'ed one). */
int ms_agent_config_new_default(MsAgentConfig **ret, MsError *e);
/* Parse text as if read from path (path only names the file in messages). */
int ms_agent_config_parse_string(const char *path, const char *text, MsAgentConfig **ret,
                                 MsError *e);
/* Load path (NULL: MS_AGENT_CONFIG_PATH). A missing file is not an error: defaults apply. */
int ms_agent_config_load(const char *path, MsAgentConfig **ret, MsError *e);
MsAgentConfig *ms_agent_config_free(MsAgentConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsAgentConfig *, ms_agent_config_free);

/* ---- policies: policies.d/NAME.conf ---- */

typedef enum MsNodePriority {
    MS_NODE_PRIORITY_AUTO, /* let the agents pick: a hidden member, else a secondary */
    MS_NODE_PRIORITY_HIDDEN,
    MS_NODE_PRIORITY_SECONDARY,
    MS_NODE_PRIORITY_PRIMARY,
    _MS_NODE_PRIORITY_MAX,
    MS_NODE_PRIORITY_INVALID = -1,
} MsNodePriority;

typedef enum MsCipher {
    MS_CIPHER_NONE, /* no client-side encryption */
    MS_CIPHER_AES_256_GCM,
    _MS_CIPHER_MAX,
    MS_CIPHER_INVALID = -1,
} MsCipher;

/* [Retention]. Every field 0 means "rule off"; the semantics are in retention/retention.h. */
typedef struct MsRetentionRules {
    unsigned keep_last;
    unsigned keep_daily;
    unsigned keep_weekly;
    unsigned keep_monthly;
    unsigned keep_manual; /* KeepManual=: the N newest snapshots taken on request */
    uint64_t max_age_usec;
} MsRetentionRules;

typedef struct MsPolicy {
    char *name; /* the file stem */

    /* [Policy] */
    char *source;     /* Source=: MongoDB URI without password or secret options; required */
    char *credential; /* Credential=: systemd credential holding the password; NULL: none */
    char *schedule;   /* Schedule=: systemd calendar expression; NULL: on request only */
    uint64_t randomized_delay_usec; /* RandomizedDelaySec=, default 0 */
    bool persistent; /* Persistent=, default yes: a run missed while off happens at boot */
    char *store;     /* Store=; NULL: the agent's DefaultStore= */
    bool chunked;                  /* Format=chunked (default: archive) */
    MsCompression compression;     /* Compression=, default zstd */
    int compression_level;         /* CompressionLevel=; 0: the codec's default */
    unsigned parallel_collections; /* ParallelCollections=, 1..64, default 4 */
    /* NULL-terminated lists (NULL when empty). */
    char **include_namespaces; /* IncludeNamespaces= (repeatable); empty: everything */
    char **exclude_namespaces; /* ExcludeNamespaces= (repeatable) */
    bool include_users;           /* IncludeUsers=, default no */
    bool oplog;                   /* Oplog=, default yes */
    MsNodePriority node_priority; /* NodePriority=, default auto */

    /* [Retention] */
    MsRetentionRules retention;

    /* [Encryption] */
    char *encryption_key; /* Key=: credential name; NULL: no encryption */
    MsCipher cipher;      /* Cipher=; aes-256-gcm whenever Key= is set, else none */

    /* [PointInTime] */
    bool pit_enabled;                /* Enabled=, default no: follow the oplog into slices */
    uint64_t pit_slice_usec;         /* SliceSec=, default 60 s, at least 10 s */
    MsCompression pit_compression;   /* Compression=; MS_COMPRESSION_INVALID: as [Policy]'s */
} MsPolicy;

#define MS_PIT_SLICE_DEFAULT_USEC (60ULL * 1000000ULL)
#define MS_PIT_SLICE_MIN_USEC (10ULL * 1000000ULL)
#define MS_PIT_SLICE_MAX_USEC (24ULL * 3600ULL * 1000000ULL)

/* The compression of a policy's oplog slices. */
static inline MsCompression ms_policy_slice_compression(const MsPolicy *p) {
    return p->pit_compression == MS_COMPRESSION_INVALID ? p->compression : p->pit_compression;
}

bool ms_policy_name_is_valid(const char *name);
bool ms_credential_name_is_valid(const char *name);

const char *ms_node_priority_to_string(MsNodePriority p);
MsNodePriority ms_node_priority_from_string(const char *s);
const char *ms_cipher_to_string(MsCipher c);
MsCipher ms_cipher_from_string(const char *s);

/* A policy with every default and no Source= yet (so it does not pass ms_policy_check()). */
int ms_policy_new(const char *name, MsPolicy **ret, MsError *e);
/* Parse text as policy name, read from path (path only names the file in messages). */
int ms_policy_parse_string(const char *name, const char *path, const char *text, MsPolicy **ret,
                           MsError *e);
/* Load one policy file; the name is the file name without ".conf". */
int ms_policy_load_file(const char *path, MsPolicy **ret, MsError *e);
int ms_policy_dup(const MsPolicy *p, MsPolicy **ret, MsError *e);
bool ms_policy_equal(const MsPolicy *a, const MsPolicy *b);
/* The rules that span several keys (Source= present, the level fits the codec, Cipher= only
 * with Key=). Parsing and editing call it; the messages carry no file name. */
int ms_policy_check(const MsPolicy *p, MsError *e);
/* The store a policy writes to: its Store=, else the agent's DefaultStore=; NULL if neither. */
const char *ms_policy_effective_store(const MsPolicy *p, const MsAgentConfig *agent);
MsPolicy *ms_policy_free(MsPolicy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsPolicy *, ms_policy_free);

/* One setting as the file would say it ("" when unset; lists space-separated), for
 * "Section.Key" or a bare "Key": what the D-Bus properties show. */
int ms_policy_get_setting(const MsPolicy *p, const char *key, char **ret, MsError *e);

/* The canonical file text: sections and keys in a fixed order, only values that differ from
 * the defaults, one line per list entry. Parsing it yields an equal policy. */
int ms_policy_to_ini(const MsPolicy *p, char **ret, MsError *e);
/* Write dir/NAME.conf atomically (hidden temp file ".#NAME.conf...", fsync, rename, directory
 * fsync; mode 0640). The text is parsed back and compared before anything is written, so a
 * file that would not load the same way is never written. */
int ms_policy_write_atomic(const char *dir, const MsPolicy *p, MsError *e);

/* Change one setting of p with the checks a file gets. key is "Section.Key" or a bare "Key"
 * (key names are unique across sections); value replaces the setting (for a list: a
 * space-separated list replaces the whole list), an empty value restores the default.
 * On failure p is unchanged. */
int ms_policy_apply_edit(MsPolicy *p, const char *key, const char *value, MsError *e);
/* The same for "Key=value" / "Section.Key=value" as mongosnapctl edit takes it. */
int ms_policy_apply_assignment(MsPolicy *p, const char *assignment, MsError *e);

/* ---- a policy directory ---- */

typedef struct MsPolicyLoadError {
    char *path;
    MsError error; /* the message already names the file (and line) */
} MsPolicyLoadError;

typedef struct MsPolicySet {
    MsPolicy **policies; /* sorted by name */
    size_t n_policies;
    MsPolicyLoadError *errors; /* the files that did not load, sorted by path */
    size_t n_errors;
} MsPolicySet;

/* Load every "*.conf" in dir (hidden files and other names are ignored). A bad file lands in
 * errors and does not stop the others; a missing directory is an empty set. Fails only when
 * the directory cannot be read at all. */
int ms_policy_load_dir(const char *dir, MsPolicySet **ret, MsError *e);
MsPolicySet *ms_policy_set_free(MsPolicySet *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsPolicySet *, ms_policy_set_free);



/* Tests for mongosnap.conf and policy files: values, errors with FILE:LINE, secrets, edits. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "common/macro.h"
#include "config/conf.h"
#include "mongosnap/mongosnap.h"
#include "test.h"

#define NIGHTLY "/etc/mongosnap/policies.d/nightly.conf"
#define MINIMAL "[Policy]\nSource=mongodb://backup@db1/?replicaSet=rs0\n"
#define USEC_PER_SEC 1000000ULL
#define USEC_PER_MIN (60ULL * USEC_PER_SEC)
#define USEC_PER_DAY (86400ULL * USEC_PER_SEC)

static const char full_policy[] =
    "# nightly backups of rs0\n"
    "[Policy]\n"
    "Source=mongodb://backup@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin\n"
    "Credential=mongosnap-rs0\n"
    "Schedule=Mon..Fri *-*-* 02:00:00\n"
    "RandomizedDelaySec=1h 30min\n"
    "Persistent=no\n"
    "Store=s3://backups-eu/rs0\n"
    "Compression=gzip\n"
    "CompressionLevel=6\n"
    "ParallelCollections=8\n"
    "IncludeNamespaces=sales.* crm.customers\n"
    "IncludeNamespaces=billing.*\n"
    "ExcludeNamespaces=sales.tmp_*\n"
    "IncludeUsers=yes\n"
    "Oplog=off\n"
    "NodePriority=hidden\n"
    "\n"
    "[Retention]\n"
    "KeepLast=3\n"
    "MaxAge=30d\n"
    "KeepDaily=7\n"
    "KeepWeekly=4\n"
    "KeepMonthly=12\n"
    "\n"
    "[Encryption]\n"
    "Key=mongosnap-key\n"
    "Cipher=aes-256-gcm\n";

/* Parse text as nightly.conf; return the error message (static) or NULL on success. */
static const char *policy_error(const char *text) {
    static MsError e;
    ms_error_clear(&e);
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    if (ms_policy_parse_string("nightly", NIGHTLY, text, &p, &e) >= 0)
        return NULL;
    return e.message;
}

static void full_policy_values(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, full_policy, &p, &e));
    ASSERT_STREQ(p->name, "nightly");
    ASSERT_STREQ(p->source,
                 "mongodb://backup@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin");
    ASSERT_STREQ(p->credential, "mongosnap-rs0");
    ASSERT_STREQ(p->schedule, "Mon..Fri *-*-* 02:00:00");
    ASSERT_EQ_INT(p->randomized_delay_usec, 90 * USEC_PER_MIN);
    ASSERT(!p->persistent);
    ASSERT_STREQ(p->store, "s3://backups-eu/rs0");
    ASSERT_EQ_INT(p->compression, MS_COMPRESSION_GZIP);
    ASSERT_EQ_INT(p->compression_level, 6);
    ASSERT_EQ_INT(p->parallel_collections, 8);
    ASSERT(p->include_namespaces);
    ASSERT_STREQ(p->include_namespaces[0], "sales.*");
    ASSERT_STREQ(p->include_namespaces[1], "crm.customers");
    ASSERT_STREQ(p->include_namespaces[2], "billing.*");
    ASSERT(p->include_namespaces[3] == NULL);
    ASSERT_STREQ(p->exclude_namespaces[0], "sales.tmp_*");
    ASSERT(p->include_users);
    ASSERT(!p->oplog);
    ASSERT_EQ_INT(p->node_priority, MS_NODE_PRIORITY_HIDDEN);
    ASSERT_EQ_INT(p->retention.keep_last, 3);
    ASSERT_EQ_INT(p->retention.max_age_usec, 30 * USEC_PER_DAY);
    ASSERT_EQ_INT(p->retention.keep_daily, 7);
    ASSERT_EQ_INT(p->retention.keep_weekly, 4);
    ASSERT_EQ_INT(p->retention.keep_monthly, 12);
    ASSERT_STREQ(p->encryption_key, "mongosnap-key");
    ASSERT_EQ_INT(p->cipher, MS_CIPHER_AES_256_GCM);
}

static void minimal_policy_defaults(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL, &p, &e));
    ASSERT(p->credential == NULL && p->schedule == NULL && p->store == NULL);
    ASSERT_EQ_INT(p->randomized_delay_usec, 0);
    ASSERT(p->persistent);
    ASSERT_EQ_INT(p->compression, MS_COMPRESSION_ZSTD);
    ASSERT_EQ_INT(p->compression_level, 0);
    ASSERT_EQ_INT(p->parallel_collections, MS_DEFAULT_PARALLEL_COLLECTIONS);
    ASSERT(p->include_namespaces == NULL || p->include_namespaces[0] == NULL);
    ASSERT(!p->include_users);
    ASSERT(p->oplog);
    ASSERT_EQ_INT(p->node_priority, MS_NODE_PRIORITY_AUTO);
    ASSERT_EQ_INT(p->retention.keep_last + p->retention.keep_daily + p->retention.max_age_usec, 0);
    ASSERT(p->encryption_key == NULL);
    ASSERT_EQ_INT(p->cipher, MS_CIPHER_NONE);
}

static void syntax_tolerated(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    /* BOM, CRLF, comments of both kinds, an inline comment, indentation (not a continuation),
     * spaces around '='. */
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY,
                                     "\xef\xbb\xbf; comment\r\n"
                                     "[Policy]\r\n"
                                     "  Source = mongodb://backup@db1   \r\n"
                                     "    Schedule=daily ; every night\r\n"
                                     "# done\r\n",
                                     &p, &e));
    ASSERT_STREQ(p->source, "mongodb://backup@db1");
    ASSERT_STREQ(p->schedule, "daily");
}

/* Longer than inih's 200-byte line buffer: passed around it, not cut. */
static void long_lines(void) {
    char uri[600] = "mongodb://backup@";
    for (int i = 0; i < 20; i++)
        snprintf(uri + strlen(uri), sizeof(uri) - strlen(uri), "%sdb%02d.example.net:27017",
                 i ? "," : "", i);
    strcat(uri, "/?replicaSet=rs0");
    ASSERT(strlen(uri) > 400);
    char text[1024];
    snprintf(text, sizeof(text), "[Policy]\nSource = %s   ; the whole cluster\nSchedule=daily\n",
             uri);
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, text, &p, &e));
    ASSERT_STREQ(p->source, uri);
    ASSERT_STREQ(p->schedule, "daily");

    /* A long line is still checked and numbered. */
    snprintf(text, sizeof(text), "[Policy]\nSource=%s\nBogus=%s\n", uri, uri);
    ASSERT_CONTAINS(policy_error(text), NIGHTLY ":3: unknown key 'Bogus' in [Policy]");
    snprintf(text, sizeof(text), "[Policy]\n\nSource=%s\nSource=%s\n", uri, uri);
    ASSERT_CONTAINS(policy_error(text), NIGHTLY ":4: duplicate key 'Source'");
}

typedef struct ErrorCase {
    const char *text;
    const char *expect; /* substring of the message */
} ErrorCase;

static const ErrorCase error_cases[] = {
    /* structure */
    {MINIMAL "Compression=zstd\n\n# x\nParallelCollections=2\nOplog=yes\nScheduel=daily\n",
     NIGHTLY ":8: unknown key 'Scheduel' in [Policy] (did you mean 'Schedule'?); known keys: "
             "Source, Credential, Schedule,"},
    {MINIMAL "schedule=daily\n", NIGHTLY ":3: unknown key 'schedule' in [Policy] (did you mean "
                                         "'Schedule'?)"},
    {MINIMAL "[Retension]\nKeepLast=1\n",
     NIGHTLY ":3: unknown section [Retension]; known sections: [Policy], [Retention], "
             "[Encryption]"},
    {MINIMAL "[policy]\n", NIGHTLY ":3: unknown section [policy] (did you mean [Policy]?)"},
    {MINIMAL "KeepLast=3\n", NIGHTLY ":3: key 'KeepLast' belongs in [Retention], not in [Policy]"},
    {"Source=mongodb://h\n[Policy]\n",
     NIGHTLY ":1: key 'Source' comes before any section; put it under [Policy]"},
    {MINIMAL "Schedule=daily\n# again\nSchedule=weekly\n",
     NIGHTLY ":5: duplicate key 'Schedule' in [Policy] (first set on line 3)"},
    {MINIMAL "Schedule daily\n", NIGHTLY ":3: expected 'Key=value'"},
    {MINIMAL "Schedule: daily\n", NIGHTLY ":3: expected 'Key=value'"},
    {MINIMAL "=daily\n", NIGHTLY ":3: '=' without a key name"},
    {MINIMAL "[Retention\n", NIGHTLY ":3: section header without a closing ']'"},
    {MINIMAL "[Retention] KeepLast=1\n", NIGHTLY ":3: unexpected text after the section header"},
    {MINIMAL "Schedule=daily\x01\n", NIGHTLY ":3: control character 0x01"},
    {"[Policy]\nSchedule=daily\n",
     NIGHTLY ": [Policy] Source= is missing: set it to the MongoDB connection string"},
    /* values */
    {MINIMAL "Persistent=maybe\n",
     NIGHTLY ":3: Persistent='maybe' is not a boolean: use yes or no"},
    {MINIMAL "ParallelCollections=0\n",
     NIGHTLY ":3: ParallelCollections='0' is not valid: give a whole number from 1 to 64"},
    {MINIMAL "ParallelCollections=65\n", NIGHTLY ":3: ParallelCollections='65' is not valid"},
    {MINIMAL "ParallelCollections=-1\n", NIGHTLY ":3: ParallelCollections='-1' is not valid"},
    {MINIMAL "[Retention]\nKeepDaily=seven\n", NIGHTLY ":4: KeepDaily='seven' is not valid"},
    {MINIMAL "[Retention]\nMaxAge=30 days ago\n",
     NIGHTLY ":4: MaxAge='30 days ago' is not a time span"},
    {MINIMAL "RandomizedDelaySec=-5min\n", NIGHTLY ":3: RandomizedDelaySec='-5min' is not a time"},
    {MINIMAL "Compression=lz4\n",
     NIGHTLY ":3: Compression='lz4' is not supported: use zstd, gzip or none"},
    {MINIMAL "CompressionLevel=23\n", NIGHTLY ":3: CompressionLevel='23' is not valid"},
    {MINIMAL "Compression=gzip\nCompressionLevel=12\n",
     NIGHTLY ": [Policy] CompressionLevel=12 is too high for gzip"},
    {MINIMAL "Compression=none\nCompressionLevel=3\n",
     NIGHTLY ": [Policy] CompressionLevel=3 has no meaning with Compression=none"},
    {MINIMAL "NodePriority=arbiter\n",
     NIGHTLY ":3: NodePriority='arbiter' is not valid: use auto, hidden, secondary or primary"},
    {MINIMAL "Credential=../etc/shadow\n",
     NIGHTLY ":3: Credential='../etc/shadow' is not a credential name"},
    {MINIMAL "Credential=a..b\n", NIGHTLY ":3: Credential='a..b' is not a credential name"},
    {MINIMAL "IncludeNamespaces=sales.* crm\n",
     NIGHTLY ":3: IncludeNamespaces='crm' is not a namespace pattern: write DB.COLLECTION"},
    {MINIMAL "ExcludeNamespaces=a$b.c\n", NIGHTLY ":3: ExcludeNamespaces='a$b.c': a database name "
                                                  "cannot contain '$'"},
    {MINIMAL "Store=relative/dir\n", NIGHTLY ":3: Store='relative/dir' is not a store location"},
    {MINIMAL "Store=s3://AK:SK@bucket/x\n", NIGHTLY ":3: Store= holds an '@'"},
    {MINIMAL "Store=s3://bucket/x?secret=hunter22\n",
     NIGHTLY ":3: Store= has an S3 option that is not one of"},
    {MINIMAL "Store=s3://bucket/x?region=eu&aws_secret_access_key=hunter22\n",
     NIGHTLY ":3: Store= has an S3 option"},
    {MINIMAL "Store=s3://bucket/x#frag\n",
     NIGHTLY ":3: Store= must be s3://BUCKET[/PREFIX][?OPTIONS], without '#'"},
    {MINIMAL "Store=s3://B/x\n", NIGHTLY ":3: Store='s3://B/x' does not name a valid S3 bucket"},
    {MINIMAL "Store=file://host/x\n", NIGHTLY ":3: Store='file://host/x' names a host"},
    {MINIMAL "Schedule=t\xc3\xa4glich\n", NIGHTLY ":3: Schedule='t\xc3\xa4glich' holds characters"},
    {"[Policy]\nSource=http://db1\n", NIGHTLY ":2: Source= is not a MongoDB connection string"},
    {"[Policy]\nSource=mongodb:///db\n", NIGHTLY ":2: Source= names no host"},
    {MINIMAL "[Encryption]\nCipher=aes-256-gcm\n",
     NIGHTLY ": [Encryption] Cipher= is set but Key= is not"},
    {MINIMAL "[Encryption]\nKey=k\nCipher=chacha20\n",
     NIGHTLY ":5: Cipher='chacha20' is not supported: the only cipher is aes-256-gcm"},
};

static void every_error_names_file_and_line(void) {
    for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
        const char *msg = policy_error(error_cases[i].text);
        if (!msg || !strstr(msg, error_cases[i].expect)) {
            fprintf(stderr, "# case %zu:\n#   got      %s\n#   expected %s\n", i,
                    msg ? msg : "(parsed without error)", error_cases[i].expect);
            ms_test_failures++;
        }
    }
}

static void schedule_length_limit(void) {
    char text[1024];
    char sched[MS_SCHEDULE_MAX + 2];
    memset(sched, 'x', sizeof(sched) - 1);
    sched[sizeof(sched) - 1] = '\0';
    snprintf(text, sizeof(text), MINIMAL "Schedule=%s\n", sched);
    ASSERT_CONTAINS(policy_error(text), NIGHTLY ":3: Schedule= is 257 characters long");
    sched[MS_SCHEDULE_MAX] = '\0';
    snprintf(text, sizeof(text), MINIMAL "Schedule=%s\n", sched);
    ASSERT(policy_error(text) == NULL);
}

static void password_in_source_refused_and_not_echoed(void) {
    const char *msg =
        policy_error("[Policy]\n\nSource=mongodb://backup:hunter2@db1,db2/?replicaSet=rs0\n");
    ASSERT_CONTAINS(msg, NIGHTLY ":3: Source= holds a password");
    ASSERT_CONTAINS(msg, "Credential=");
    /* It shows what to write instead: the URI without the password. */
    ASSERT_CONTAINS(msg, "Source=mongodb://backup@db1,db2/?replicaSet=rs0");
    ASSERT(strstr(msg, "hunter2") == NULL);

    msg = policy_error("[Policy]\nSource=mongodb://backup:@db1\n");
    ASSERT_CONTAINS(msg, "holds a password");

    msg = policy_error("[Policy]\nSource=mongodb://db1/?tls=true&password=swordfish\n");
    ASSERT_CONTAINS(msg, NIGHTLY ":2: Source= carries the secret option 'password'");
    ASSERT(strstr(msg, "swordfish") == NULL);

    msg = policy_error("[Policy]\nSource=mongodb+srv://c0.example.net/?authMechanism=MONGODB-AWS&"
                       "authMechanismProperties=AWS_SESSION_TOKEN:tok3n\n");
    ASSERT_CONTAINS(msg, "secret option 'authMechanismProperties'");
    ASSERT(strstr(msg, "tok3n") == NULL);

    /* A value that is not a URI at all is not echoed either: it might be a pasted password. */
    msg = policy_error("[Policy]\nSource=correct-horse-battery\n");
    ASSERT_CONTAINS(msg, "is not a MongoDB connection string");
    ASSERT(strstr(msg, "correct-horse") == NULL);
}

static void repeatable_keys(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY,
                                     MINIMAL "IncludeNamespaces=a.*\n"
                                             "IncludeNamespaces=b.x c.y\n"
                                             "ExcludeNamespaces=a.tmp\n"
                                             "ExcludeNamespaces=\n" /* empties the list */
                                             "ExcludeNamespaces=b.tmp\n",
                                     &p, &e));
    ASSERT_STREQ(p->include_namespaces[0], "a.*");
    ASSERT_STREQ(p->include_namespaces[1], "b.x");
    ASSERT_STREQ(p->include_namespaces[2], "c.y");
    ASSERT(p->include_namespaces[3] == NULL);
    ASSERT_STREQ(p->exclude_namespaces[0], "b.tmp");
    ASSERT(p->exclude_namespaces[1] == NULL);
}

static void empty_value_restores_default(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL "Compression=\nOplog=\n", &p, &e));
    ASSERT_EQ_INT(p->compression, MS_COMPRESSION_ZSTD);
    ASSERT(p->oplog);
}

static void timespans(void) {
    static const struct {
        const char *in;
        uint64_t usec;
        const char *canonical;
    } t[] = {
        {"0", 0, "0"},
        {"90", 90 * USEC_PER_SEC, "1min 30s"},
        {"90s", 90 * USEC_PER_SEC, "1min 30s"},
        {"10min", 10 * USEC_PER_MIN, "10min"},
        {"1h 30min", 90 * USEC_PER_MIN, "1h 30min"},
        {"1h30min", 90 * USEC_PER_MIN, "1h 30min"},
        {"5 min", 5 * USEC_PER_MIN, "5min"},
        {"1.5h", 90 * USEC_PER_MIN, "1h 30min"},
        {"30d", 30 * USEC_PER_DAY, "30d"},
        {"2w", 14 * USEC_PER_DAY, "14d"},
        {"1 week 1 day", 8 * USEC_PER_DAY, "8d"},
        {"250ms", 250000, "250ms"},
        {"7us", 7, "7us"},
        {"1y", 31557600ULL * USEC_PER_SEC, "365d 6h"},
    };
    for (size_t i = 0; i < ELEMENTSOF(t); i++) {
        uint64_t u = 1;
        ASSERT_OK(ms_timespan_parse(t[i].in, &u));
        ASSERT_EQ_INT(u, t[i].usec);
        char buf[MS_TIMESPAN_MAX];
        ms_timespan_format(u, buf);
        ASSERT_STREQ(buf, t[i].canonical);
        uint64_t back;
        ASSERT_OK(ms_timespan_parse(buf, &back));
        ASSERT_EQ_INT(back, u);
    }
    static const char *const bad[] = {"",
                                      " ",
                                      "abc",
                                      "5 parsecs",
                                      "-1s",
                                      "1..5h",
                                      "1.h",
                                      "99999999999999999999s",
                                      "1000000000000w"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        uint64_t u;
        if (ms_timespan_parse(bad[i], &u) >= 0) {
            fprintf(stderr, "# '%s' parsed as a time span\n", bad[i]);
            ms_test_failures++;
        }
    }
}

static void names(void) {
    ASSERT(ms_policy_name_is_valid("nightly"));
    ASSERT(ms_policy_name_is_valid("rs0.hourly-2_b"));
    ASSERT(ms_policy_name_is_valid("0"));
    char longest[MS_NAME_MAX + 2];
    memset(longest, 'a', sizeof(longest) - 1);
    longest[MS_NAME_MAX] = '\0';
    ASSERT(ms_policy_name_is_valid(longest));
    longest[MS_NAME_MAX] = 'a';
    longest[MS_NAME_MAX + 1] = '\0';
    ASSERT(!ms_policy_name_is_valid(longest));
    static const char *const bad[] = {"",    ".hidden", "-x",  "_x", "a..b",
                                      "a/b", "../x",    "a b", "ä",  "x\n"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++)
        ASSERT(!ms_policy_name_is_valid(bad[i]) && !ms_credential_name_is_valid(bad[i]));
}

/* ---- agent configuration ---- */

static bool endswith_test(const char *s, const char *suffix) {
    return s && strlen(s) >= strlen(suffix) && strcmp(s + strlen(s) - strlen(suffix), suffix) == 0;
}

static void agent_config(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_agent_config_freep) MsAgentConfig *c = NULL;
    ASSERT_OK(ms_agent_config_parse_string("/etc/mongosnap/mongosnap.conf",
                                           "[Agent]\n"
                                           "Node=db1.example.net\n"
                                           "DefaultStore=/srv/backup\n"
                                           "MaxConcurrentTasks=4\n"
                                           "WorkerPath=/opt/mongosnap/worker\n"
                                           "StateDirectory=/tmp/state\n"
                                           "PolicyDirectory=/tmp/policies\n",
                                           &c, &e));
    ASSERT_STREQ(c->node, "db1.example.net");
    ASSERT_STREQ(c->default_store, "/srv/backup");
    ASSERT_EQ_INT(c->max_concurrent_tasks, 4);
    ASSERT_STREQ(c->worker_path, "/opt/mongosnap/worker");
    ASSERT_STREQ(c->state_directory, "/tmp/state");
    ASSERT_STREQ(c->policy_directory, "/tmp/policies");

    _cleanup_(ms_agent_config_freep) MsAgentConfig *d = NULL;
    ASSERT_OK(ms_agent_config_load("/nonexistent/mongosnap.conf", &d, &e));
    ASSERT(d->node && d->node[0]);
    ASSERT(d->default_store == NULL);
    ASSERT_EQ_INT(d->max_concurrent_tasks, MS_DEFAULT_MAX_CONCURRENT_TASKS);
    ASSERT(endswith_test(d->worker_path, "/mongosnap/mongosnap-worker"));
    ASSERT_STREQ(d->state_directory, MS_DEFAULT_STATE_DIRECTORY);
    ASSERT_STREQ(d->policy_directory, MS_DEFAULT_POLICY_DIRECTORY);

    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL, &p, &e));
    ASSERT_STREQ(ms_policy_effective_store(p, c), "/srv/backup");
}

static void cluster_config(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_agent_config_freep) MsAgentConfig *c = NULL;
    ASSERT_OK(ms_agent_config_parse_string("/x.conf",
                                           "[Agent]\nNode=db2\n[Cluster]\n"
                                           "URI=mongodb://backup@db1,db2,db3/?replicaSet=rs0\n"
                                           "Credential=cluster-password\nMember=db2:27017\n"
                                           "LeaseSec=12\nHeartbeatSec=4\n",
                                           &c, &e));
    ASSERT_STREQ(c->cluster_uri, "mongodb://backup@db1,db2,db3/?replicaSet=rs0");
    ASSERT_STREQ(c->cluster_credential, "cluster-password");
    ASSERT_STREQ(c->cluster_member, "db2:27017");
    ASSERT_STREQ(c->cluster_database, "mongosnap");
    ASSERT_EQ_INT(c->cluster_lease_sec, 12);
    ASSERT_EQ_INT(c->cluster_heartbeat_sec, 4);
    ASSERT_EQ_INT(c->cluster_tick_window_sec, MS_CLUSTER_DEFAULT_TICK_WINDOW);
    ASSERT_EQ_INT(ms_strv_length(c->cluster_signing_keys), 0);
    _cleanup_(ms_agent_config_freep) MsAgentConfig *k = NULL;
    ASSERT_OK(ms_agent_config_parse_string("/x.conf",
                                           "[Cluster]\nURI=mongodb://db1/\n"
                                           "SigningKeyCredential=cluster-key-2 cluster-key\n",
                                           &k, &e));
    ASSERT_EQ_INT(ms_strv_length(k->cluster_signing_keys), 2);
    ASSERT_STREQ(k->cluster_signing_keys[0], "cluster-key-2");
    ASSERT_STREQ(k->cluster_signing_keys[1], "cluster-key");
    _cleanup_(ms_agent_config_freep) MsAgentConfig *d = NULL;
    ASSERT_OK(ms_agent_config_parse_string("/x.conf", "[Agent]\nNode=db2\n", &d, &e));
    ASSERT(d->cluster_uri == NULL);
    ASSERT_EQ_INT(d->cluster_lease_sec, MS_CLUSTER_DEFAULT_LEASE);
}

static void agent_config_errors(void) {
    static const ErrorCase t[] = {
        {"[Agent]\nMaxConcurrentTasks=0\n",
         "/x.conf:2: MaxConcurrentTasks='0' is not valid: give a whole number from 1 to 64"},
        {"[Agent]\n\nMaxConcurrentTasks=65\n", "/x.conf:3: MaxConcurrentTasks='65' is not valid"},
        {"[Agent]\nStateDirectory=var/lib\n", "/x.conf:2: StateDirectory='var/lib' is not an "
                                              "absolute path"},
        {"[Agent]\nNode=db 1\n", "/x.conf:2: Node='db 1' is not a node name"},
        {"[Agent]\nDefaultStore=ftp://x\n", "/x.conf:2: DefaultStore='ftp://x' is not a store"},
        {"[Agent]\nWorkers=3\n", "/x.conf:2: unknown key 'Workers' in [Agent]; known keys: Node, "
                                 "DefaultStore, MaxConcurrentTasks, WorkerPath, StateDirectory, "
                                 "PolicyDirectory"},
        {"[Policy]\n", "/x.conf:1: unknown section [Policy]; known sections: [Agent], [Cluster]"},
        {"[Cluster]\nURI=mongodb://u:hunter2@db1/\n", "/x.conf:2: [Cluster] URI= holds a password"},
        {"[Cluster]\nURI=db1:27017\n", "/x.conf:2: [Cluster] URI= is not a MongoDB connection"},
        {"[Cluster]\nMember=mongodb://db1\n", "/x.conf:2: Member='mongodb://db1' is not a member"},
        {"[Cluster]\nLeaseSec=2\n", "/x.conf:2: LeaseSec='2' is not valid"},
        {"[Cluster]\nLeaseSec=10\nHeartbeatSec=4\n", "HeartbeatSec=4 is too long for LeaseSec=10"},
        {"[Cluster]\nDatabase=a b\n", "/x.conf:2: Database='a b' is not a database name"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=../key\n",
         "/x.conf:3: SigningKeyCredential='../key' is not a credential name"},
        {"[Cluster]\nSigningKeyCredential=cluster-key\n",
         "[Cluster] SigningKeyCredential= without URI="},
        {"[Cluster]\nURI=mongodb://u@db1/\nCredential=k\nSigningKeyCredential=k\n",
         "[Cluster] SigningKeyCredential=k is also used as a password or another key"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=k\n[Restore]\nCredentials=a k\n",
         "[Cluster] SigningKeyCredential=k is also used as a password or another key"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=k\n[Restore]\nKeyCredentials=k\n",
         "[Cluster] SigningKeyCredential=k is also used as a password or another key"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=s3-secret-access-key\n",
         "is also used as a password or another key"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=new k\n[Restore]\nCredentials=k\n",
         "[Cluster] SigningKeyCredential=k is also used as a password or another key"},
        {"[Cluster]\nURI=mongodb://db1/\nSigningKeyCredential=a b c d e\n",
         "[Cluster] SigningKeyCredential= names 5 keys: at most 4"},
    };
    for (size_t i = 0; i < ELEMENTSOF(t); i++) {
        MsError e = MS_ERROR_INIT;
        _cleanup_(ms_agent_config_freep) MsAgentConfig *c = NULL;
        ASSERT(ms_agent_config_parse_string("/x.conf", t[i].text, &c, &e) < 0);
        ASSERT_CONTAINS(e.message, t[i].expect);
    }
}

/* ---- files and directories ---- */

static char *make_temp_dir(void) {
    char *d = strdup("/tmp/test-config-XXXXXX");
    if (d && !mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            char path[512];
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            if (unlink(path) < 0)
                remove_tree(path);
        }
    closedir(d);
    rmdir(dir);
}

/* The names in dir, sorted, space-separated. */
static char *list_dir(const char *dir) {
    struct dirent **entries;
    int n = scandir(dir, &entries, NULL, alphasort);
    if (n < 0)
        return NULL;
    char *out = calloc(1, 4096);
    for (int i = 0; i < n; i++) {
        /* Hidden names count too: a leftover ".#" temporary file must show. */
        if (out && strcmp(entries[i]->d_name, ".") != 0 && strcmp(entries[i]->d_name, "..") != 0) {
            if (out[0])
                strcat(out, " ");
            strcat(out, entries[i]->d_name);
        }
        free(entries[i]);
    }
    free(entries);
    return out;
}

static void directory_with_a_bad_file(void) {
    _cleanup_free_ char *dir = make_temp_dir();
    ASSERT(dir);
    write_file(dir, "nightly.conf", full_policy);
    write_file(dir, "hourly.conf", MINIMAL "Schedule=hourly\n");
    write_file(dir, "broken.conf", MINIMAL "\nScheduel=daily\n");
    write_file(dir, "leaky.conf", "[Policy]\nSource=mongodb://u:pw@h\n");
    write_file(dir, "bad name.conf", MINIMAL);
    write_file(dir, ".hidden.conf", "garbage");
    write_file(dir, "README", "garbage");
    write_file(dir, "nightly.conf.bak", "garbage");
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/dir.conf", dir);
    ASSERT_OK(mkdir(sub, 0755));

    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_set_freep) MsPolicySet *set = NULL;
    ASSERT_OK(ms_policy_load_dir(dir, &set, &e));
    ASSERT_EQ_INT(set->n_policies, 2);
    ASSERT_STREQ(set->policies[0]->name, "hourly");
    ASSERT_STREQ(set->policies[1]->name, "nightly");
    ASSERT_STREQ(set->policies[1]->schedule, "Mon..Fri *-*-* 02:00:00");
    ASSERT_EQ_INT(set->n_errors, 4);
    char expect[1024];
    snprintf(expect, sizeof(expect), "%s/bad name.conf: 'bad name' is not a valid policy name",
             dir);
    ASSERT_CONTAINS(set->errors[0].error.message, expect);
    snprintf(expect, sizeof(expect), "%s/broken.conf:4: unknown key 'Scheduel'", dir);
    ASSERT_CONTAINS(set->errors[1].error.message, expect);
    snprintf(expect, sizeof(expect), "%s/dir.conf: not a regular file", dir);
    ASSERT_CONTAINS(set->errors[2].error.message, expect);
    snprintf(expect, sizeof(expect), "%s/leaky.conf:2: Source= holds a password", dir);
    ASSERT_CONTAINS(set->errors[3].error.message, expect);
    ASSERT(strstr(set->errors[3].error.message, "pw@") == NULL);
    snprintf(expect, sizeof(expect), "%s/leaky.conf", dir);
    ASSERT_STREQ(set->errors[3].path, expect);
    remove_tree(dir);

    /* A missing directory is no policy at all, not an error. */
    _cleanup_(ms_policy_set_freep) MsPolicySet *none = NULL;
    ASSERT_OK(ms_policy_load_dir("/nonexistent/policies.d", &none, &e));
    ASSERT_EQ_INT(none->n_policies + none->n_errors, 0);
}

static void round_trip(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, full_policy, &p, &e));
    _cleanup_free_ char *text = NULL;
    ASSERT_OK(ms_policy_to_ini(p, &text, &e));
    ASSERT_CONTAINS(text, "[Policy]\nSource=mongodb://backup@db1:27017");
    ASSERT_CONTAINS(text, "RandomizedDelaySec=1h 30min\n");
    ASSERT_CONTAINS(text, "IncludeNamespaces=sales.*\nIncludeNamespaces=crm.customers\n"
                          "IncludeNamespaces=billing.*\n");
    ASSERT_CONTAINS(text, "\n[Retention]\nKeepLast=3\nMaxAge=30d\n");
    ASSERT_CONTAINS(text, "\n[Encryption]\nKey=mongosnap-key\nCipher=aes-256-gcm\n");

    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, text, &q, &e));
    ASSERT(ms_policy_equal(p, q));
    /* Canonical: writing the re-read policy gives the same bytes. */
    _cleanup_free_ char *again = NULL;
    ASSERT_OK(ms_policy_to_ini(q, &again, &e));
    ASSERT_STREQ(again, text);

    /* Defaults are left out. */
    _cleanup_(ms_policy_freep) MsPolicy *m = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL "Compression=zstd\n", &m, &e));
    _cleanup_free_ char *min_text = NULL;
    ASSERT_OK(ms_policy_to_ini(m, &min_text, &e));
    ASSERT(strstr(min_text, "Compression") == NULL);
    ASSERT(strstr(min_text, "[Retention]") == NULL);

    _cleanup_(ms_policy_freep) MsPolicy *dup = NULL;
    ASSERT_OK(ms_policy_dup(p, &dup, &e));
    ASSERT(ms_policy_equal(p, dup));
    ASSERT(!ms_policy_equal(p, m));
}

static void atomic_write(void) {
    _cleanup_free_ char *dir = make_temp_dir();
    ASSERT(dir);
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, full_policy, &p, &e));
    mode_t old_umask = umask(077);
    int r = ms_policy_write_atomic(dir, p, &e);
    umask(old_umask);
    ASSERT_OK(r);
    _cleanup_free_ char *names = list_dir(dir);
    ASSERT_STREQ(names, "nightly.conf");

    char path[512];
    snprintf(path, sizeof(path), "%s/nightly.conf", dir);
    struct stat st;
    ASSERT_OK(stat(path, &st));
    ASSERT_EQ_INT(st.st_mode & 07777, 0640);
    _cleanup_(ms_policy_freep) MsPolicy *back = NULL;
    ASSERT_OK(ms_policy_load_file(path, &back, &e));
    ASSERT(ms_policy_equal(p, back));

    /* Replacing an existing file. */
    ASSERT_OK(ms_policy_apply_edit(p, "Schedule", "weekly", &e));
    ASSERT_OK(ms_policy_write_atomic(dir, p, &e));
    _cleanup_free_ char *names2 = list_dir(dir);
    ASSERT_STREQ(names2, "nightly.conf");
    _cleanup_(ms_policy_freep) MsPolicy *back2 = NULL;
    ASSERT_OK(ms_policy_load_file(path, &back2, &e));
    ASSERT_STREQ(back2->schedule, "weekly");

    /* A policy that would not load back is never written. */
    free(p->source);
    p->source = strdup("mongodb://u:secret@h");
    MsError e2 = MS_ERROR_INIT;
    ASSERT(ms_policy_write_atomic(dir, p, &e2) < 0);
    ASSERT_CONTAINS(e2.message, "refusing to write policy 'nightly'");
    ASSERT(strstr(e2.message, "secret") == NULL);
    _cleanup_(ms_policy_freep) MsPolicy *back3 = NULL;
    ASSERT_OK(ms_policy_load_file(path, &back3, &e));
    ASSERT(ms_policy_equal(back2, back3));

    MsError e3 = MS_ERROR_INIT;
    ASSERT(ms_policy_write_atomic("/nonexistent/dir", back3, &e3) < 0);
    ASSERT_CONTAINS(e3.message, "/nonexistent/dir");
    remove_tree(dir);
}

static void edits(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, full_policy, &p, &e));

    ASSERT_OK(ms_policy_apply_edit(p, "Policy.Schedule", "  hourly ", &e));
    ASSERT_STREQ(p->schedule, "hourly");
    ASSERT_OK(ms_policy_apply_edit(p, "KeepDaily", "14", &e));
    ASSERT_EQ_INT(p->retention.keep_daily, 14);
    ASSERT_OK(ms_policy_apply_assignment(p, "Retention.MaxAge=90d", &e));
    ASSERT_EQ_INT(p->retention.max_age_usec, 90 * USEC_PER_DAY);
    /* A list edit replaces the list. */
    ASSERT_OK(ms_policy_apply_edit(p, "IncludeNamespaces", "x.* y.z", &e));
    ASSERT_STREQ(p->include_namespaces[0], "x.*");
    ASSERT_STREQ(p->include_namespaces[1], "y.z");
    ASSERT(p->include_namespaces[2] == NULL);
    /* An empty value restores the default. */
    ASSERT_OK(ms_policy_apply_edit(p, "ParallelCollections", "", &e));
    ASSERT_EQ_INT(p->parallel_collections, MS_DEFAULT_PARALLEL_COLLECTIONS);
    ASSERT_OK(ms_policy_apply_assignment(p, "Encryption.Key=", &e));
    ASSERT(p->encryption_key == NULL);
    ASSERT_EQ_INT(p->cipher, MS_CIPHER_NONE);
    _cleanup_free_ char *v = NULL;
    ASSERT_OK(ms_policy_get_setting(p, "Retention.MaxAge", &v, &e));
    ASSERT_STREQ(v, "90d");

    /* Refused edits leave the policy as it was. */
    _cleanup_(ms_policy_freep) MsPolicy *before = NULL;
    ASSERT_OK(ms_policy_dup(p, &before, &e));
    static const ErrorCase bad[] = {
        {"Scheduel=daily", "unknown setting 'Scheduel'; known settings: [Policy] Source,"},
        {"Retention.Schedule=daily", "unknown setting 'Retention.Schedule'"},
        {"ParallelCollections=100", "ParallelCollections='100' is not valid"},
        {"Source=mongodb://admin:letmein@db1", "Source= holds a password"},
        {"Source=", "Source= is missing"},
        {"Schedule=daily ; weekly", "' ;', which starts a comment"},
        {"IncludeNamespaces=a.* nodot", "IncludeNamespaces='nodot' is not a namespace pattern"},
        {"Cipher=aes-256-gcm", "Cipher= is set but Key= is not"},
        {"no equals sign", "is not an assignment"},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        MsError e2 = MS_ERROR_INIT;
        if (ms_policy_apply_assignment(p, bad[i].text, &e2) >= 0) {
            fprintf(stderr, "# edit '%s' was accepted\n", bad[i].text);
            ms_test_failures++;
            continue;
        }
        ASSERT_CONTAINS(e2.message, bad[i].expect);
        ASSERT(strstr(e2.message, "letmein") == NULL);
        ASSERT(ms_policy_equal(p, before));
    }

    /* Checks that span keys run on edits too: level 15 suits zstd, not gzip. */
    ASSERT_OK(ms_policy_apply_edit(p, "Compression", "zstd", &e));
    ASSERT_OK(ms_policy_apply_edit(p, "CompressionLevel", "15", &e));
    _cleanup_(ms_policy_freep) MsPolicy *zstd15 = NULL;
    ASSERT_OK(ms_policy_dup(p, &zstd15, &e));
    MsError e3 = MS_ERROR_INIT;
    ASSERT(ms_policy_apply_assignment(p, "Compression=gzip", &e3) < 0);
    ASSERT_CONTAINS(e3.message, "CompressionLevel=15 is too high for gzip");
    ASSERT(ms_policy_equal(p, zstd15));
}

static void s3_store_options(void) {
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    static const char text[] = MINIMAL "Store=s3://backups/rs0?endpoint=http://127.0.0.1:9000"
                                       "&region=eu-west-1&addressing=path&part_size=8MiB\n";
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, text, &p, &e));
    ASSERT_STREQ(p->store, "s3://backups/rs0?endpoint=http://127.0.0.1:9000&region=eu-west-1"
                           "&addressing=path&part_size=8MiB");
    /* The refused option is named by the message's rule, its value never repeated. */
    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    MsError e2 = MS_ERROR_INIT;
    ASSERT(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL "Store=s3://b1x/p?token=zz9zz9zz\n",
                                  &q, &e2) < 0);
    ASSERT(strstr(e2.message, "zz9zz9zz") == NULL);
    /* A bucket without prefix may carry options too, as the driver reads it (the check once
     * took "b1x?endpoint=..." for the bucket name). */
    _cleanup_(ms_policy_freep) MsPolicy *np = NULL;
    ASSERT_OK(ms_policy_parse_string(
        "nightly", NIGHTLY, MINIMAL "Store=s3://b1x?endpoint=http://127.0.0.1:9000\n", &np, &e));
    /* Every option the S3 driver reads is accepted (the two lists once drifted apart and
     * stall_timeout= was refused in policy files). */
    static const char *const options[] = {MONGOSNAP_S3_LOCATION_OPTIONS};
    for (size_t i = 0; i < ELEMENTSOF(options); i++) {
        char line[256];
        snprintf(line, sizeof(line), MINIMAL "Store=s3://b1x/p?%s=1\n", options[i]);
        _cleanup_(ms_policy_freep) MsPolicy *o = NULL;
        MsError e3 = MS_ERROR_INIT;
        ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, line, &o, &e3));
    }
}

/* [PointInTime]: defaults, the floor and ceiling of SliceSec=, its own Compression=, and the
 * combinations refused. */
static void point_in_time(void) {
    _cleanup_(ms_policy_freep) MsPolicy *p = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, MINIMAL, &p, &e));
    ASSERT(!p->pit_enabled);
    ASSERT(p->pit_slice_usec == MS_PIT_SLICE_DEFAULT_USEC);
    ASSERT(ms_policy_slice_compression(p) == MS_COMPRESSION_ZSTD);
    _cleanup_(ms_policy_freep) MsPolicy *q = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY,
                                     MINIMAL "Compression=gzip\n[PointInTime]\nEnabled=yes\n"
                                             "SliceSec=10s\n",
                                     &q, &e));
    ASSERT(q->pit_enabled && q->pit_slice_usec == 10 * USEC_PER_SEC);
    ASSERT(ms_policy_slice_compression(q) == MS_COMPRESSION_GZIP);
    _cleanup_(ms_policy_freep) MsPolicy *r = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY,
                                     MINIMAL "[PointInTime]\nEnabled=yes\nCompression=none\n", &r,
                                     &e));
    ASSERT(ms_policy_slice_compression(r) == MS_COMPRESSION_NONE);
    _cleanup_free_ char *v = NULL, *bare = NULL;
    ASSERT_OK(ms_policy_get_setting(r, "PointInTime.Compression", &v, &e));
    ASSERT_STREQ(v, "none");
    ASSERT_OK(ms_policy_get_setting(r, "Compression", &bare, &e));
    ASSERT_STREQ(bare, "zstd"); /* the bare name stays [Policy]'s */
    /* It survives a round trip through the file text. */
    _cleanup_free_ char *text = NULL;
    ASSERT_OK(ms_policy_to_ini(r, &text, &e));
    _cleanup_(ms_policy_freep) MsPolicy *back = NULL;
    ASSERT_OK(ms_policy_parse_string("nightly", NIGHTLY, text, &back, &e));
    ASSERT(ms_policy_equal(r, back));

    static const struct {
        const char *text, *needle;
    } bad[] = {
        {MINIMAL "[PointInTime]\nSliceSec=9s\n", "10s at the shortest"},
        {MINIMAL "[PointInTime]\nSliceSec=0\n", "out of range"},
        {MINIMAL "[PointInTime]\nSliceSec=2d\n", "24h at the longest"},
        {MINIMAL "[PointInTime]\nSliceSec=soon\n", "not a time span"},
        {MINIMAL "[PointInTime]\nCompression=lz4\n", "zstd, gzip or none"},
        {MINIMAL "Oplog=no\n[PointInTime]\nEnabled=yes\n", "Oplog=yes"},
        {MINIMAL "IncludeNamespaces=shop.*\n[PointInTime]\nEnabled=yes\n", "namespace filters"},
        {MINIMAL "[PointInTime]\nEnabled=maybe\n", "Enabled"},
        {MINIMAL "[PointInTime]\nWindow=1h\n", "Window"},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        const char *msg = policy_error(bad[i].text);
        if (!msg || !strstr(msg, bad[i].needle)) {
            fprintf(stderr, "# case %zu: %s\n", i, msg ? msg : "accepted");
            ms_test_failures++;
        }
    }
}

MS_TEST_MAIN(TEST_CASE(point_in_time), TEST_CASE(s3_store_options), TEST_CASE(full_policy_values),
             TEST_CASE(minimal_policy_defaults), TEST_CASE(syntax_tolerated), TEST_CASE(long_lines),
             TEST_CASE(every_error_names_file_and_line), TEST_CASE(schedule_length_limit),
             TEST_CASE(password_in_source_refused_and_not_echoed), TEST_CASE(repeatable_keys),
             TEST_CASE(empty_value_restores_default), TEST_CASE(timespans), TEST_CASE(names),
             TEST_CASE(agent_config), TEST_CASE(cluster_config), TEST_CASE(agent_config_errors),
             TEST_CASE(directory_with_a_bad_file), TEST_CASE(round_trip), TEST_CASE(atomic_write),
             TEST_CASE(edits))

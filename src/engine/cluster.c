/* Sharded clusters: discovery, the cluster snapshot and its restore (cluster.h). */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/timeutil.h"
#include "archive/archive.h"
#include "config.h"
#include "manifest.h"
#include "mongo-client.h"
#include "mongosnap/mongosnap.h"
#include "cluster-part.h"
#include "cluster/member-read.h"
#include "cluster-pit.h"
#include "doc-update.h"
#include "nsfilter.h"
#include "oplog-plan.h"
#include "oplog-source.h"
#include "restore.h"
#include "snapshot-source.h"
#include "snapshot.h"
#include "verify.h"

#define CLUSTER_MANIFEST_FORMAT "mongosnap-cluster"
#define CLUSTER_MANIFEST_MAX (4u << 20)
#define CANCEL_POLL_USEC 200000

/* ---- topology ---- */

void ms_cluster_shards_free(MsClusterShard *s, size_t n) {
    for (size_t i = 0; s && i < n; i++) {
        free(s[i].name);
        free(s[i].rs);
        free(s[i].hosts);
    }
    free(s);
}

/* "rs/h1:p1,h2:p2" or "h1:p1" (a shard that is not a replica set). */
static int parse_host(const char *host, MsClusterShard *out) {
    const char *slash = strchr(host, '/');
    out->rs = slash ? strndup(host, (size_t) (slash - host)) : NULL;
    out->hosts = strdup(slash ? slash + 1 : host);
    return out->hosts && (!slash || out->rs) ? 0 : -ENOMEM;
}

bool ms_cluster_hello_is_mongos(const bson_t *hello) {
    return ms_mongo_hello_cluster_role(hello) == 1;
}

const char *ms_cluster_config_host(const bson_t *shard_map) {
    bson_iter_t it, found;
    if (bson_iter_init(&it, shard_map) && bson_iter_find_descendant(&it, "map.config", &found) &&
        BSON_ITER_HOLDS_UTF8(&found))
        return bson_iter_utf8(&found, NULL);
    return NULL;
}

int ms_cluster_balancer_is_off(const bson_t *status) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, status, "mode") || !BSON_ITER_HOLDS_UTF8(&it))
        return -1;
    const char *mode = bson_iter_utf8(&it, NULL);
    return strcmp(mode, "off") == 0 ? 1 : strcmp(mode, "full") == 0 ? 0 : -1;
}

static bool is_mongos(mongoc_client_t *c) {
    return ms_mongo_cluster_role(c) == 1;
}

static int read_shards(MsMongo *m, mongoc_client_t *c, MsClusterShard **ret, size_t *ret_n,
                       MsError *e) {
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "config", "shards");
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    MsClusterShard *shards = calloc(MS_CLUSTER_MAX_SHARDS, sizeof(*shards));
    size_t n = 0;
    int r = shards ? 0 : ms_error_oom(e);
    const bson_t *doc;
    while (r == 0 && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const char *name = bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)
                               ? bson_iter_utf8(&it, NULL)
                               : NULL;
        const char *host = bson_iter_init_find(&it, doc, "host") && BSON_ITER_HOLDS_UTF8(&it)
                               ? bson_iter_utf8(&it, NULL)
                               : NULL;
        if (!name || !host) {
            r = ms_error_set(e, EBADMSG, "a config.shards document lacks its _id or host");
            break;
        }
        if (n == MS_CLUSTER_MAX_SHARDS) {
            r = ms_error_set(e, E2BIG, "more than %d shards: not supported", MS_CLUSTER_MAX_SHARDS);
            break;
        }
        if (!(shards[n].name = strdup(name)) || parse_host(host, &shards[n]) < 0)
            r = ms_error_oom(e);
        n++;
    }
    bson_error_t berr;
    if (r == 0 && mongoc_cursor_error(cur, &berr))
        r = ms_mongo_error(m, e, &berr, "reading config.shards");
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    if (r == 0 && n == 0)
        r = ms_error_set(e, ENOENT,
                         "config.shards lists no shard: the source is not a sharded cluster's "
                         "mongos or config server (for a replica set, take an ordinary snapshot)");
    if (r < 0) {
        ms_cluster_shards_free(shards, n);
        return r;
    }
    *ret = shards;
    *ret_n = n;
    return 0;
}

/* The options of the source's query string, without the ones that name its own topology. */
static bool keep_option(const char *opt, size_t len) {
    static const char *const dropped[] = {"replicaset=", "directconnection="};
    for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
        if (len >= strlen(dropped[i]) && strncasecmp(opt, dropped[i], strlen(dropped[i])) == 0)
            return false;
    return true;
}

/* A host list "h1:p1,h2:p2" ([v6]:p too) or a replica set name: nothing that could end the
 * host part of a connection string and add options of its own (a config.shards document that
 * says "rs/h:1/?authMechanism=PLAIN" would have the password sent in clear to h). */
static bool plain_token(const char *s, const char *extra) {
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_' || strchr(extra, *s)))
            return false;
    return true;
}

/* Append the pieces (NULL-terminated) to opts of capacity cap at *used, keeping a final NUL;
 * false, with nothing appended, when they do not fit. */
static bool opts_append(char *opts, size_t cap, size_t *used, size_t first_len, ...) {
    va_list ap;
    size_t n = *used;
    va_start(ap, first_len);
    size_t len = first_len;
    bool ok = true;
    for (const char *piece = va_arg(ap, const char *); piece; piece = va_arg(ap, const char *)) {
        if (len == SIZE_MAX)
            len = strlen(piece);
        if (len >= cap - n) {
            ok = false;
            break;
        }
        memcpy(opts + n, piece, len);
        n += len;
        len = SIZE_MAX;
    }
    va_end(ap);
    if (!ok)
        return false;
    opts[n] = '\0';
    *used = n;
    return true;
}

static int shard_uri(const char *source_uri, const MsClusterShard *shard, bool direct, char **ret,
                     MsError *e);

int ms_cluster_shard_uri(const char *source_uri, const MsClusterShard *shard, char **ret, MsError *e) {
    return shard_uri(source_uri, shard, false, ret, e);
}

/* Whether host is one of the entries of a host list "h1:p1,h2:p2". */
static bool host_listed(const char *hosts, const char *host) {
    size_t n = strlen(host);
    for (const char *h = hosts; h && *h;) {
        size_t len = strcspn(h, ",");
        if (len == n && strncmp(h, host, n) == 0)
            return true;
        h += len + (h[len] == ',');
    }
    return false;
}

int ms_cluster_part_source(const char *source_uri, const char *password, const char *shard_name,
                           const char *member, char **ret, MsError *e) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(source_uri, password, &one, e);
    if (r < 0)
        return r;
    MsClusterShard *shards = NULL;
    size_t n = 0;
    r = read_shards(one.mongo, one.client, &shards, &n, e);
    const MsClusterShard *found = NULL;
    for (size_t i = 0; r == 0 && i < n && !found; i++)
        if (strcmp(shards[i].name, shard_name) == 0)
            found = &shards[i];
    if (r == 0 && !found)
        r = ms_error_set(e, ENOENT, "the cluster has no shard '%s' (config.shards)", shard_name);
    /* The member beside this node, directly (a secondary answers reads then): only one the
     * shard's own host list names gets the source's credentials. */
    if (r == 0 && member && !host_listed(found->hosts, member))
        r = ms_error_set(e, EPERM,
                         "%s is not a member of shard %s (config.shards lists %s): this node's "
                         "Member= must name one of them as the shard names it",
                         member, shard_name, found->hosts);
    if (r == 0 && member) {
        MsClusterShard direct = {.name = found->name, .rs = NULL, .hosts = (char *) member};
        r = shard_uri(source_uri, &direct, true, ret, e);
    } else if (r == 0)
        r = shard_uri(source_uri, found, false, ret, e);
    ms_cluster_shards_free(shards, n);
    return r;
}

static int shard_uri(const char *source_uri, const MsClusterShard *shard, bool direct, char **ret,
                     MsError *e) {
    if (!plain_token(shard->hosts, ":,[]") || (shard->rs && !plain_token(shard->rs, "")))
        return ms_error_set(e, EINVAL,
                            "shard '%s' is at \"%s%s%s\", which is not a replica set name and "
                            "host list (letters, digits, '.', '-', '_', ':' and ','): refusing "
                            "to connect there with the source's credentials",
                            shard->name ? shard->name : "?", shard->rs ? shard->rs : "",
                            shard->rs ? "/" : "", shard->hosts ? shard->hosts : "");
    const char *scheme_end = strstr(source_uri, "://");
    if (!scheme_end)
        return ms_error_set(e, EINVAL, "the source is not a MongoDB connection string");
    bool srv = strncmp(source_uri, "mongodb+srv://", 14) == 0;
    const char *auth = scheme_end + 3;
    size_t alen = strcspn(auth, "/?");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    const char *rest = auth + alen; /* "/db?opts", "?opts" or "" */
    const char *q = strchr(rest, '?');
    size_t pathlen = q ? (size_t) (q - rest) : strlen(rest);
    char opts[4096] = "";
    size_t used = 0;
    if (q) {
        for (const char *o = q + 1; *o;) {
            size_t olen = strcspn(o, "&");
            if (olen && keep_option(o, olen) &&
                !opts_append(opts, sizeof(opts), &used, olen, o, "&", (char *) NULL))
                return ms_error_set(e, E2BIG, "the source's options are too long");
            o += olen + (o[olen] == '&');
        }
    }
    /* An SRV source implies TLS; the shards' plain host lists do not. */
    if ((srv && !strstr(opts, "tls=") && !strstr(opts, "ssl=") &&
         !opts_append(opts, sizeof(opts), &used, SIZE_MAX, "tls=true&", (char *) NULL)) ||
        (shard->rs && !opts_append(opts, sizeof(opts), &used, SIZE_MAX, "replicaSet=", shard->rs,
                                   "&", (char *) NULL)) ||
        (direct && !opts_append(opts, sizeof(opts), &used, SIZE_MAX, "directConnection=true&",
                                (char *) NULL)))
        return ms_error_set(e, E2BIG, "the source's options are too long");
    if (used && opts[used - 1] == '&')
        opts[--used] = '\0';
    char *s = NULL;
    if (asprintf(&s, "mongodb://%.*s%s%.*s%s%s", at ? (int) (at - auth + 1) : 0, auth, shard->hosts,
                 (int) (pathlen ? pathlen : 1), pathlen ? rest : "/", used ? "?" : "", opts) < 0)
        return ms_error_oom(e);
    *ret = s;
    return 0;
}

/* ---- shard maps ---- */

void ms_shard_map_clear(MsShardMap *m) {
    for (size_t i = 0; i < m->n; i++) {
        free(m->from[i]);
        free(m->to[i]);
    }
    free(m->from);
    free(m->to);
    *m = (MsShardMap){0};
}

int ms_shard_map_parse(const char *text, MsShardMap *ret, MsError *e) {
    MsShardMap m = {0};
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    m.from = calloc(cap, sizeof(char *));
    m.to = calloc(cap, sizeof(char *));
    if (!m.from || !m.to) {
        ms_shard_map_clear(&m);
        return ms_error_oom(e);
    }
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq || eq == p || eq == p + len - 1) {
            ms_shard_map_clear(&m);
            return ms_error_set(e, EINVAL,
                                "--shard-map '%s': expected OLD=NEW pairs separated by commas "
                                "(shard names as config.shards lists them)",
                                text);
        }
        m.from[m.n] = strndup(p, (size_t) (eq - p));
        m.to[m.n] = strndup(eq + 1, len - (size_t) (eq - p) - 1);
        if (!m.from[m.n] || !m.to[m.n]) {
            m.n++;
            ms_shard_map_clear(&m);
            return ms_error_oom(e);
        }
        for (size_t k = 0; k < m.n; k++)
            if (strcmp(m.from[k], m.from[m.n]) == 0 || strcmp(m.to[k], m.to[m.n]) == 0) {
                char dup[256];
                snprintf(dup, sizeof(dup), "%s", strcmp(m.from[k], m.from[m.n]) == 0 ? m.from[k] : m.to[k]);
                m.n++;
                ms_shard_map_clear(&m);
                return ms_error_set(e, EINVAL,
                                    "--shard-map names shard '%s' twice: each shard maps to one, "
                                    "and two shards into one would merge their data",
                                    dup);
            }
        m.n++;
        p += len + (p[len] == ',');
    }
    *ret = m;
    return 0;
}

const char *ms_shard_map_apply(const MsShardMap *m, const char *name) {
    for (size_t i = 0; m && i < m->n; i++)
        if (strcmp(m->from[i], name) == 0)
            return m->to[i];
    return name;
}

void ms_cluster_sources_free(MsClusterSource *s, size_t n) {
    for (size_t i = 0; s && i < n; i++) {
        free(s[i].name);
        free(s[i].uri);
    }
    free(s);
}

static int config_server_uri(MsMongo *m, mongoc_client_t *c, const char *uri, char **ret, MsError *e);

/* MongoDB 8.0's config shard is named "config", the name of the config data's part: its
 * documents would go unread (the config part reads config data only) and both would write one
 * key. Refused until the config shard is its own kind of part. */
static int refuse_config_shard(const MsClusterShard *shards, size_t n, MsError *e) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(shards[i].name, MS_CLUSTER_CONFIG_PART) == 0)
            return ms_error_set(e, EOPNOTSUPP,
                                "the cluster has a shard named \"config\" (a config shard, "
                                "MongoDB 8.0): mongosnap cannot take it yet. Nothing was stored");
    return 0;
}

int ms_cluster_sources(const char *uri, const char *password, MsClusterSource **ret, size_t *ret_n,
                       MsError *e) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(uri, password, &one, e);
    if (r < 0)
        return r;
    MsClusterShard *shards = NULL;
    size_t n = 0, k = 0;
    r = read_shards(one.mongo, one.client, &shards, &n, e);
    MsClusterSource *out = r == 0 ? calloc(n + 1, sizeof(*out)) : NULL;
    if (r == 0 && !out)
        r = ms_error_oom(e);
    if (r == 0)
        r = refuse_config_shard(shards, n, e);
    for (; r == 0 && k < n; k++) {
        out[k].name = strdup(shards[k].name);
        if (!out[k].name)
            r = ms_error_oom(e);
        else
            r = ms_cluster_shard_uri(uri, &shards[k], &out[k].uri, e);
    }
    if (r == 0) {
        out[n].name = strdup(MS_CLUSTER_CONFIG_PART);
        r = out[n].name ? config_server_uri(one.mongo, one.client, uri, &out[n].uri, e)
                        : ms_error_oom(e);
    }
    ms_cluster_shards_free(shards, n);
    if (r < 0) {
        ms_cluster_sources_free(out, n + 1);
        return r;
    }
    *ret = out;
    *ret_n = n + 1;
    return 0;
}

int ms_cluster_shards_changed_at(const char *config_uri, const char *password, bool *ret_found,
                                 MsOplogPosition *ret, MsError *e) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(config_uri, password, &one, e);
    if (r < 0)
        return r;
    /* addShard inserts, removeShard deletes; an update (a host, a state) changes no name. */
    bson_t *filter = BCON_NEW("ns", "config.shards", "op", "{", "$in", "[", "i", "d", "]", "}");
    r = ms_oplog_newest_of(one.mongo, one.client, filter, ret_found, ret, e);
    bson_destroy(filter);
    return r;
}

/* ---- the cluster snapshot ---- */

typedef struct ClusterRun ClusterRun;

typedef struct PartRun {
    ClusterRun *run;
    char *name; /* shard name or MS_CLUSTER_CONFIG_PART */
    char *rs;
    char *uri;
    MsProgress progress;
    MsNsFilter filter;
    MsSnapshotResult res;
    MsError error;
    int r;
    pthread_t thread;
    bool started;
    bool remote; /* taken by another process (cluster-part.h): this thread meets it */
    char *node;  /* remote: the agent's node it was handed to (NULL: named by --remote-part) */
} PartRun;

struct ClusterRun {
    const MsClusterSnapshotOptions *o;
    char *parts_prefix;
    char started_at[MS_ISO8601_MAX];
    PartRun *parts;
    size_t n_parts;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t arrived;
    MsOplogPosition point; /* the latest dump end so far: the consistency point at the end */
    bool failed;
    volatile sig_atomic_t cancel;
    MsPartMeetCoordinator *meet; /* with remote parts */
    MsPartMeetTimeouts meet_timeouts;
    bool point_given; /* to the remote parts */
};

static int barrier(void *userdata, MsOplogPosition dump_end, MsOplogPosition *ret_point,
                   MsError *e) {
    PartRun *p = userdata;
    ClusterRun *c = p->run;
    pthread_mutex_lock(&c->lock);
    c->arrived++;
    if (ms_oplog_position_after(dump_end, c->point))
        c->point = dump_end;
    log_info("cluster snapshot: part %s dumped (oplog %" PRIu32 ":%" PRIu32 "); %zu of %zu parts",
             p->name, dump_end.t, dump_end.i, c->arrived, c->n_parts);
    pthread_cond_broadcast(&c->cond);
    while (c->arrived < c->n_parts && !c->failed && !c->cancel)
        pthread_cond_wait(&c->cond, &c->lock);
    bool failed = c->failed || c->cancel;
    *ret_point = c->point;
    pthread_mutex_unlock(&c->lock);
    if (failed)
        return ms_error_set(e, ECANCELED, "another part of the cluster snapshot failed");
    return 0;
}

/* A part failed: every other part stops (at the barrier, or wherever it is). */
static void run_failed(ClusterRun *c) {
    pthread_mutex_lock(&c->lock);
    c->failed = true;
    c->cancel = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void *part_main(void *userdata) {
    PartRun *p = userdata;
    ClusterRun *c = p->run;
    const MsClusterSnapshotOptions *o = c->o;
    bool config = strcmp(p->name, MS_CLUSTER_CONFIG_PART) == 0;
    MsSnapshotOptions so = {
        .uri = p->uri,
        .password = o->password,
        .storage = o->storage,
        .prefix = c->parts_prefix,
        .name = p->name,
        .node = o->node,
        .origin = "cluster",
        .compression = o->compression,
        .compression_level = o->compression_level,
        .compression_threads = o->compression_threads,
        .key = o->key,
        .parallel_collections = o->parallel_collections,
        .chunked = o->chunked,
        .capture_oplog = true,
        .include_config_db = config,
        .filter = config ? &p->filter : NULL,
        .after_dump = barrier,
        .after_dump_userdata = p,
        .progress = &p->progress,
        .cancel = &c->cancel,
    };
    p->r = ms_snapshot_run(&so, &p->res, &p->error);
    if (p->r == 0 && !p->res.point_in_time)
        p->r = ms_error_set(&p->error, EINVAL,
                            "it has no oplog (local.oplog.rs): a cluster snapshot needs every "
                            "shard's and the config server's oplog to reach a common point");
    if (p->r < 0)
        run_failed(c);
    return NULL;
}

/* The node whose agent takes part p: the best member by NodePriority= with an agent beside it
 * (o->part_agents), or NULL (none: the part is taken here, as is one whose best agent is this
 * node's). *ret_member: that member. Failing to rank, the part is taken here too (said). */
static char *part_agent_for(const MsClusterSnapshotOptions *o, const PartRun *p,
                            char **ret_member) {
    *ret_member = NULL;
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    MsError e = MS_ERROR_INIT;
    if (ms_mongo_one_open(p->uri, o->password, &one, &e) < 0) {
        log_warning("part %s: cannot rank its members (%s); taken here", p->name, e.message);
        return NULL;
    }
    MsClusterMember *members = NULL;
    size_t n = 0, n_order = 0;
    _cleanup_free_ size_t *order = NULL;
    char *node = NULL;
    int r = ms_cluster_members_read(one.client, ms_mongo_redacted_uri(one.mongo), &members, &n, &e);
    if (r == 0)
        r = ms_cluster_rank(members, n, o->node_priority, 0, &order, &n_order, &e);
    if (r < 0)
        log_warning("part %s: cannot rank its members (%s); taken here", p->name, e.message);
    for (size_t k = 0; r == 0 && !node && k < n_order; k++) {
        const char *host = members[order[k]].host;
        for (size_t a = 0; a < o->n_part_agents && !node; a++) {
            const char *eq = strchr(o->part_agents[a], '=');
            if (!eq || strcmp(eq + 1, host) != 0)
                continue;
            node = strndup(o->part_agents[a], (size_t) (eq - o->part_agents[a]));
            *ret_member = strdup(host);
        }
    }
    /* This node's own agent: taken here, by this worker. */
    if (node && o->node && strcmp(node, o->node) == 0) {
        free(node);
        free(*ret_member);
        node = *ret_member = NULL;
    }
    ms_cluster_members_free(members, n);
    return node;
}

/* The barrier for a part another process takes: arrived with its dump end, this thread keeps
 * watching it while the others dump (its failure, its silence end the wait at once rather than
 * when the last part arrives). */
static int remote_barrier(PartRun *p, MsOplogPosition dump_end, MsPartMeetWatch *w,
                          MsOplogPosition *ret_point, MsError *e) {
    ClusterRun *c = p->run;
    pthread_mutex_lock(&c->lock);
    c->arrived++;
    if (ms_oplog_position_after(dump_end, c->point))
        c->point = dump_end;
    log_info("cluster snapshot: part %s dumped elsewhere (oplog %" PRIu32 ":%" PRIu32 "); %zu of "
             "%zu parts",
             p->name, dump_end.t, dump_end.i, c->arrived, c->n_parts);
    pthread_cond_broadcast(&c->cond);
    int r = 0;
    while (r == 0 && c->arrived < c->n_parts && !c->failed && !c->cancel) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&c->cond, &c->lock, &until);
        if (c->arrived >= c->n_parts || c->failed || c->cancel)
            break;
        pthread_mutex_unlock(&c->lock);
        r = ms_part_meet_check(c->meet, p->name, &c->meet_timeouts, w, e);
        pthread_mutex_lock(&c->lock);
    }
    bool failed = r == 0 && (c->failed || c->cancel);
    *ret_point = c->point;
    pthread_mutex_unlock(&c->lock);
    if (failed)
        return ms_error_set(e, ECANCELED, "another part of the cluster snapshot failed");
    return r;
}

/* A part another process takes (on the node beside one of the shard's members): this thread
 * meets it through the store, at the barrier like a local part, and takes its result. */
static void *remote_part_main(void *userdata) {
    PartRun *p = userdata;
    ClusterRun *c = p->run;
    MsOplogPosition dump_end, point;
    MsPartMeetWatch w;
    ms_part_meet_watch_init(&w);
    int r = ms_part_meet_wait_dumped(c->meet, p->name, &c->meet_timeouts, &c->cancel, &w,
                                     &dump_end, &p->error);
    if (r == 0)
        r = remote_barrier(p, dump_end, &w, &point, &p->error);
    if (r == 0) {
        pthread_mutex_lock(&c->lock);
        bool give = !c->point_given;
        c->point_given = true;
        pthread_mutex_unlock(&c->lock);
        if (give)
            r = ms_part_meet_put_point(c->meet, point, &p->error);
    }
    if (r == 0)
        r = ms_part_meet_wait_done(c->meet, p->name, &c->meet_timeouts, &c->cancel, &w, dump_end,
                                   c->o->key ? c->o->key->id_hex : NULL, &p->res, &p->error);
    if (r == 0)
        log_info("cluster snapshot: part %s taken by another process: %" PRIu64 " documents",
                 p->name, p->res.documents);
    if (r < 0 && r != -ECANCELED && p->node)
        ms_error_prefix(&p->error, "handed to node %s: ", p->node);
    p->r = r;
    if (r < 0)
        run_failed(c);
    return NULL;
}

static const char *const CONFIG_COLLECTIONS[] = {"config.databases", "config.collections",
                                                 "config.chunks", "config.shards", "config.version"};

/* The config server of a cluster given as a mongos: getShardMap names it ("config": "RS/h:p"). */
static int config_server_uri(MsMongo *m, mongoc_client_t *c, const char *uri, char **ret, MsError *e) {
    if (!is_mongos(c))
        return (*ret = strdup(uri)) ? 0 : ms_error_oom(e);
    bson_t *cmd = BCON_NEW("getShardMap", BCON_INT32(1));
    bson_t reply;
    bson_error_t berr;
    bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &berr);
    bson_destroy(cmd);
    const char *cfg = ok ? ms_cluster_config_host(&reply) : NULL;
    int r;
    if (!cfg)
        r = ok ? ms_error_set(e, EPROTO, "getShardMap through the mongos names no config server")
               : ms_mongo_error(m, e, &berr, "asking the mongos for its config server (getShardMap)");
    else {
        MsClusterShard s = {0};
        r = parse_host(cfg, &s) < 0 ? ms_error_oom(e) : ms_cluster_shard_uri(uri, &s, ret, e);
        free(s.rs);
        free(s.hosts);
    }
    bson_destroy(&reply);
    return r;
}

static int balancer(mongoc_client_t *c, bool stop, uint64_t timeout_sec, MsError *e) {
    bson_t *cmd = stop ? BCON_NEW("balancerStop", BCON_INT32(1), "maxTimeMS",
                                  BCON_INT64((int64_t) (timeout_sec ? timeout_sec : 60) * 1000))
                       : BCON_NEW("balancerStart", BCON_INT32(1));
    bson_t reply;
    bson_error_t berr;
    bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &berr);
    bson_destroy(&reply);
    bson_destroy(cmd);
    if (!ok)
        return ms_error_set(e, EIO, "%s through the mongos failed: %s",
                            stop ? "balancerStop" : "balancerStart", berr.message);
    return 0;
}

/* What a snapshot or a restore does right before balancerStop (once the balancer is known to
 * run), and undoes when it was not stopped after all: the agent told (a worker killed from then
 * on leaves the balancer off, and the agent starts it again), the snapshot's marker written. */
typedef struct BalancerStopHook {
    int (*before)(void *userdata, MsError *e); /* failing: nothing is stopped */
    void (*not_stopped)(void *userdata);       /* the stop failed and the balancer runs again */
    void *userdata;
} BalancerStopHook;

/* Stop the balancer for a snapshot or a restore through a mongos, unless an operator stopped it
 * already (then it stays as it is: *ret_stopped false, nothing to start again, and the hook is
 * not called: a worker killed then leaves nothing for anyone to start). */
static int balancer_pause(mongoc_client_t *mc, uint64_t timeout_sec, const BalancerStopHook *hook,
                          bool *ret_stopped, MsError *e) {
    *ret_stopped = false;
    int off = -1;
    bson_t *cmd = BCON_NEW("balancerStatus", BCON_INT32(1));
    bson_t reply;
    if (mongoc_client_command_simple(mc, "admin", cmd, NULL, &reply, NULL))
        off = ms_cluster_balancer_is_off(&reply);
    bson_destroy(&reply);
    bson_destroy(cmd);
    if (off == 1) {
        log_info("the balancer is off already; it stays off afterwards");
        return 0;
    }
    int r = hook && hook->before ? hook->before(hook->userdata, e) : 0;
    if (r < 0)
        return r;
    r = balancer(mc, true, timeout_sec, e);
    if (r == 0) {
        *ret_stopped = true;
        return 0;
    }
    /* A balancerStop that timed out may still have switched it off: start it again so that
     * a failure leaves the cluster as it was found. Not started: the hook stays done (marker,
     * agent told), so that the takeover tries again. */
    MsError be = MS_ERROR_INIT;
    if (balancer(mc, false, 0, &be) < 0)
        log_error("%s: it may be off; check with sh.getBalancerState()", be.message);
    else if (hook && hook->not_stopped)
        hook->not_stopped(hook->userdata);
    return r;
}

static int balancer_marker_put(const MsClusterSnapshotOptions *o, const char *key, MsError *e);

/* The agent learns from it that a worker that dies now leaves the balancer stopped. */
static void balancer_event(MsProgress *p, bool stopped) {
    if (!p)
        return;
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&f, "stopped", stopped);
    ms_progress_event(p, MONGOSNAP_PROGRESS_EVENT_BALANCER, &f);
    bson_destroy(&f);
}

/* A snapshot's stop: the marker written and the agent told before balancerStop (a worker killed
 * while it runs leaves the balancer off too), both undone when it was not stopped after all. */
typedef struct SnapshotBalancer {
    const MsClusterSnapshotOptions *o;
    const char *marker;
    bool marked; /* the marker is there and the agent was told: the balancer may be off */
} SnapshotBalancer;

static int snapshot_balancer_before(void *userdata, MsError *e) {
    SnapshotBalancer *b = userdata;
    int r = balancer_marker_put(b->o, b->marker, e);
    if (r == 0) {
        b->marked = true;
        balancer_event(b->o->progress, true);
    }
    return r;
}

static void snapshot_balancer_not_stopped(void *userdata) {
    SnapshotBalancer *b = userdata;
    b->marked = false;
    balancer_event(b->o->progress, false);
    MsError me = MS_ERROR_INIT;
    (void) ms_storage_remove(b->o->storage, b->marker, &me);
}

/* A restore's stop (the target cluster's balancer): no marker, as the target's address is not
 * the store's to keep; the agent, which has it, starts the balancer a killed worker left off. */
static int restore_balancer_before(void *userdata, MsError *e) {
    (void) e;
    balancer_event(userdata, true);
    return 0;
}

static void restore_balancer_not_stopped(void *userdata) {
    balancer_event(userdata, false);
}

static int balancer_resume(mongoc_client_t *mc, bool stopped) {
    MsError be = MS_ERROR_INIT;
    if (stopped && balancer(mc, false, 0, &be) < 0) {
        log_error("%s: start it by hand (sh.startBalancer())", be.message);
        return -be.code;
    }
    return 0;
}

/* ---- the takeover: a balancer a killed worker left stopped ----
 *
 * SIGKILL (the agent's grace run out, the OOM killer, a power loss) gives a worker no chance to
 * start the balancer it stopped. So before balancerStop it writes <prefix>/<name>.balancer.json
 * (which snapshot, which node, when; no address, no secret: the policy's source is known to
 * whoever reads it) and removes it once the balancer runs again. A marker left behind means a
 * balancer nobody started: the next cluster snapshot of the policy, or cluster-balancer
 * --resume (which the agent runs when a cluster snapshot's worker died), starts it first. */

static char *balancer_marker_key(const char *prefix, const char *name) {
    char *k = NULL;
    return asprintf(&k, "%s/%s" MS_CLUSTER_BALANCER_SUFFIX, prefix, name) < 0 ? NULL : k;
}

static int balancer_marker_put(const MsClusterSnapshotOptions *o, const char *key, MsError *e) {
    char now[MS_ISO8601_MAX];
    ms_format_iso8601(ms_realtime_usec(), now);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "format", "mongosnap-balancer");
    BSON_APPEND_UTF8(&doc, "snapshot", o->name);
    if (o->node)
        BSON_APPEND_UTF8(&doc, "node", o->node);
    BSON_APPEND_UTF8(&doc, "stopped_at", now);
    size_t len = 0;
    char *json = bson_as_relaxed_extended_json(&doc, &len);
    bson_destroy(&doc);
    int r = json ? ms_storage_put(o->storage, key, json, len, e) : ms_error_oom(e);
    bson_free(json);
    if (r < 0)
        ms_error_prefix(e, "the balancer was not stopped: cannot record that it will be (%s): ",
                        key);
    return r;
}

/* The markers directly under prefix/ (caller frees with ms_storage_objects_free). */
static int balancer_markers(MsStorage *st, const char *prefix, MsStorageObject **ret, size_t *ret_n,
                            MsError *e) {
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/", prefix) < 0)
        return ms_error_oom(e);
    return ms_storage_list_children(st, dir, MS_CLUSTER_BALANCER_SUFFIX, ret, ret_n, e);
}

/* Whether mc's server is a mongos, with the error when it cannot be asked (an unreachable
 * mongos is not "no mongos": its markers must stay). */
static int source_is_mongos(mongoc_client_t *mc, bool *ret, MsError *e) {
    bson_t *cmd = BCON_NEW("hello", BCON_INT32(1));
    bson_t reply;
    bson_error_t berr;
    bool ok = mongoc_client_command_simple(mc, "admin", cmd, NULL, &reply, &berr);
    if (ok)
        *ret = ms_mongo_hello_cluster_role(&reply) == 1;
    bson_destroy(&reply);
    bson_destroy(cmd);
    return ok ? 0 : ms_error_set(e, EHOSTUNREACH, "cannot ask the source what it is: %s",
                                 berr.message);
}

/* The markers under prefix/: only's (or every one when only is NULL) in *ret, and how many
 * other snapshots of the policy have one now. */
static int takeover_markers(MsStorage *st, const char *prefix, const char *wanted,
                            MsStorageObject **ret, size_t *ret_n, size_t *ret_others, MsError *e) {
    MsStorageObject *markers = NULL;
    size_t n = 0, k = 0, others = 0;
    int r = balancer_markers(st, prefix, &markers, &n, e);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        if (!wanted || strcmp(markers[i].key, wanted) == 0)
            markers[k++] = markers[i];
        else {
            others++;
            free(markers[i].key);
        }
    *ret = markers;
    *ret_n = k;
    *ret_others = others;
    return 0;
}

static int balancer_takeover(mongoc_client_t *mc, MsStorage *st, const char *prefix,
                             const char *only, unsigned *ret_started, MsError *e) {
    *ret_started = 0;
    /* Only the named snapshot's: another node's snapshot of the policy may run now. */
    _cleanup_free_ char *wanted = only ? balancer_marker_key(prefix, only) : NULL;
    if (only && !wanted)
        return ms_error_oom(e);
    MsStorageObject *markers = NULL;
    size_t n = 0, others = 0;
    int r = takeover_markers(st, prefix, wanted, &markers, &n, &others, e);
    if (r < 0)
        return r;
    bool mongos = false;
    if (n > 0)
        r = source_is_mongos(mc, &mongos, e);
    /* Another snapshot of the policy stopped the balancer since (its marker is there): it
     * starts it when it ends, and starting it now would let chunks move under it. Asked again
     * right before the start, as that snapshot may be beginning now. */
    if (r == 0 && n > 0 && mongos && others == 0) {
        MsStorageObject *again = NULL;
        size_t n_again = 0;
        r = takeover_markers(st, prefix, wanted, &again, &n_again, &others, e);
        ms_storage_objects_free(again, n_again);
    }
    if (r == 0 && n > 0 && others > 0)
        log_info("another snapshot of the policy has the balancer stopped now: it starts it "
                 "again when it ends; %s removed",
                 markers[0].key);
    else if (r == 0 && n > 0 && !mongos)
        /* Only a mongos's balancer is ever stopped: the source changed since. */
        log_warning("%zu balancer marker(s) under %s/, but the source is no mongos now: removed",
                    n, prefix);
    else if (r == 0 && n > 0) {
        for (size_t i = 0; i < n; i++)
            log_warning("the balancer was stopped by a cluster snapshot whose worker died (%s): "
                        "starting it again",
                        markers[i].key);
        r = balancer(mc, false, 0, e);
        if (r == 0)
            (*ret_started)++;
        /* A snapshot of the policy that stopped the balancer in the instant between: stopped
         * again, as it expects (it starts it when it ends). */
        MsStorageObject *after = NULL;
        size_t n_after = 0, others_after = 0;
        MsError ae = MS_ERROR_INIT;
        if (r == 0 && only &&
            takeover_markers(st, prefix, wanted, &after, &n_after, &others_after, &ae) == 0 &&
            others_after > 0 && balancer(mc, true, 60, &ae) < 0)
            log_error("another snapshot of the policy began while the balancer was started "
                      "again, and it cannot be stopped for it: %s",
                      ae.message);
        ms_storage_objects_free(after, n_after);
    }
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = ms_storage_remove(st, markers[i].key, e);
        if (r == -ENOENT) { /* another takeover's, at the same time */
            ms_error_clear(e);
            r = 0;
        }
    }
    ms_storage_objects_free(markers, n);
    return r;
}

int ms_cluster_balancer_takeover(const char *uri, const char *password, MsStorage *st,
                                 const char *prefix, const char *only, unsigned *ret_started,
                                 MsError *e) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(uri, password, &one, e);
    return r < 0 ? r : balancer_takeover(one.client, st, prefix, only, ret_started, e);
}

int ms_cluster_balancer_start(const char *uri, const char *password, bool *ret_started,
                              MsError *e) {
    *ret_started = false;
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(uri, password, &one, e);
    if (r < 0)
        return r;
    bool mongos = false;
    r = source_is_mongos(one.client, &mongos, e);
    /* Only a mongos's balancer is ever stopped (a restore into a config server stops none). */
    if (r == 0 && mongos) {
        log_warning("the balancer was stopped by a restore whose worker died: starting it again");
        r = balancer(one.client, false, 0, e);
        *ret_started = r == 0;
    } else if (r == 0)
        log_info("the target is no mongos: no balancer to start");
    return r;
}

static int write_cluster_manifest(ClusterRun *c, const char *key, MsOplogPosition point,
                                  bool balancer_stopped, MsError *e) {
    const MsClusterSnapshotOptions *o = c->o;
    bson_t doc = BSON_INITIALIZER, parts;
    char now[MS_ISO8601_MAX];
    ms_format_iso8601(ms_realtime_usec(), now);
    BSON_APPEND_UTF8(&doc, "format", CLUSTER_MANIFEST_FORMAT);
    BSON_APPEND_INT32(&doc, "version", 1);
    BSON_APPEND_UTF8(&doc, "snapshot", o->name);
    /* What the agent's records carry (read back by the store's scan, for resync). */
    if (o->node)
        BSON_APPEND_UTF8(&doc, "node", o->node);
    if (o->origin)
        BSON_APPEND_UTF8(&doc, "origin", o->origin);
    BSON_APPEND_INT64(&doc, "seq", (int64_t) MS_MIN(o->seq, (uint64_t) INT64_MAX));
    BSON_APPEND_UTF8(&doc, "started_at", c->started_at);
    BSON_APPEND_UTF8(&doc, "finished_at", now);
    uint64_t documents = 0, stored = 0;
    for (size_t i = 0; i < c->n_parts; i++) {
        documents += c->parts[i].res.documents;
        stored += c->parts[i].res.stored_bytes;
    }
    BSON_APPEND_INT64(&doc, "total_documents", (int64_t) documents);
    BSON_APPEND_INT64(&doc, "stored_bytes", (int64_t) stored);
    BSON_APPEND_BOOL(&doc, "encrypted", o->key != NULL);
    BSON_APPEND_UTF8(&doc, "tool_version", "mongosnap " MONGOSNAP_VERSION);
    ms_oplog_position_append(&doc, "consistency_point", point);
    BSON_APPEND_BOOL(&doc, "balancer_stopped", balancer_stopped);
    BSON_APPEND_ARRAY_BEGIN(&doc, "parts", &parts);
    for (size_t i = 0; i < c->n_parts; i++) {
        const PartRun *p = &c->parts[i];
        char k[16];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        bson_t part;
        BSON_APPEND_DOCUMENT_BEGIN(&parts, kp, &part);
        BSON_APPEND_UTF8(&part, "shard", p->name);
        if (p->rs)
            BSON_APPEND_UTF8(&part, "replica_set", p->rs);
        BSON_APPEND_UTF8(&part, "manifest", p->res.manifest_key);
        ms_oplog_position_append(&part, "dump_end", p->res.dump_end);
        ms_oplog_position_append(&part, "oplog_end", p->res.oplog_end);
        BSON_APPEND_INT64(&part, "documents", (int64_t) p->res.documents);
        BSON_APPEND_INT64(&part, "stored_bytes", (int64_t) p->res.stored_bytes);
        /* Who took it: a remote part's node, else the coordinator's (NULL: by hand). */
        if (p->node || o->node)
            BSON_APPEND_UTF8(&part, "node", p->node ? p->node : o->node);
        bson_append_document_end(&parts, &part);
    }
    bson_append_array_end(&doc, &parts);
    size_t len = 0;
    char *json = NULL;
    int r = ms_json_seal(&doc, &json, &len, e); /* damage to T or a part's key is found */
    bson_destroy(&doc);
    if (r == 0)
        r = ms_storage_put(o->storage, key, json, len, e);
    free(json);
    return r;
}

void ms_cluster_snapshot_result_clear(MsClusterSnapshotResult *r) {
    for (size_t i = 0; r->parts && i < r->n_parts; i++) {
        free(r->parts[i].shard);
        free(r->parts[i].rs);
        free(r->parts[i].manifest_key);
        free(r->parts[i].node);
    }
    free(r->parts);
    free(r->manifest_key);
    *r = (MsClusterSnapshotResult){0};
}

static void *cancel_watch(void *userdata) {
    ClusterRun *c = userdata;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        bool done = c->arrived == SIZE_MAX;
        pthread_mutex_unlock(&c->lock);
        if (done)
            return NULL;
        if (c->o->cancel && *c->o->cancel) {
            pthread_mutex_lock(&c->lock);
            c->cancel = 1;
            pthread_cond_broadcast(&c->cond);
            pthread_mutex_unlock(&c->lock);
        }
        usleep(CANCEL_POLL_USEC);
    }
}

int ms_cluster_snapshot_run(const MsClusterSnapshotOptions *o, MsClusterSnapshotResult *ret,
                            MsError *e) {
    *ret = (MsClusterSnapshotResult){0};
    /* Its parts go under <prefix>/<name>.parts/: at the top of a store that directory would
     * be taken for a policy's (ms_cluster_part_key()). */
    if (!o->prefix || !o->prefix[0] || o->prefix[0] == '/')
        return ms_error_set(e, EINVAL,
                            "a cluster snapshot needs a prefix (--prefix P: the policy's name) "
                            "for its parts' directory");
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(o->uri, o->password, &one, e);
    if (r < 0)
        return r;
    MsMongo *m = one.mongo;
    mongoc_client_t *mc = one.client;
    MsClusterShard *shards = NULL;
    size_t n_shards = 0;
    r = read_shards(m, mc, &shards, &n_shards, e);
    if (r == 0)
        r = refuse_config_shard(shards, n_shards, e);
    bool mongos = r == 0 && is_mongos(mc);
    bool stopped = false;
    /* A balancer an earlier run of this policy left stopped is started first (the takeover). */
    unsigned taken_over = 0;
    MsError te = MS_ERROR_INIT;
    if (r == 0 && balancer_takeover(mc, o->storage, o->prefix, NULL, &taken_over, &te) < 0)
        log_warning("a balancer an earlier cluster snapshot stopped may still be off: %s",
                    te.message);
    _cleanup_free_ char *marker = r == 0 && mongos ? balancer_marker_key(o->prefix, o->name) : NULL;
    if (r == 0 && mongos && !marker)
        r = ms_error_oom(e);
    SnapshotBalancer sb = {.o = o, .marker = marker};
    if (r == 0 && mongos) {
        const BalancerStopHook hook = {.before = snapshot_balancer_before,
                                       .not_stopped = snapshot_balancer_not_stopped,
                                       .userdata = &sb};
        r = balancer_pause(mc, o->balancer_timeout_sec, &hook, &stopped, e);
    } else if (r == 0)
        log_warning("the source is not a mongos: the balancer cannot be stopped from here; make "
                    "sure it is (sh.stopBalancer()) while the cluster snapshot runs, or give the "
                    "mongos as Source=");

    ClusterRun c = {.o = o};
    ms_format_iso8601(ms_realtime_usec(), c.started_at);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    if (r == 0 && (asprintf(&c.parts_prefix, "%s%s%s" MS_CLUSTER_PARTS_SUFFIX,
                            o->prefix ? o->prefix : "", o->prefix ? "/" : "", o->name) < 0 ||
                   !(c.parts = calloc(n_shards + 1, sizeof(*c.parts)))))
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i <= n_shards; i++) {
        PartRun *p = &c.parts[c.n_parts++];
        p->run = &c;
        ms_progress_init(&p->progress, -1);
        if (i < n_shards) {
            p->name = strdup(shards[i].name);
            p->rs = shards[i].rs ? strdup(shards[i].rs) : NULL;
            if (ms_cluster_shard_uri(o->uri, &shards[i], &p->uri, e) < 0)
                r = -e->code;
        } else {
            /* The config server's data, read from the config server itself (through a mongos
             * the one getShardMap names): its oplog is captured like every part's, and a mongos
             * has no local.oplog.rs. */
            p->name = strdup(MS_CLUSTER_CONFIG_PART);
            r = config_server_uri(m, mc, o->uri, &p->uri, e);
            for (size_t k = 0; k < ELEMENTSOF(CONFIG_COLLECTIONS); k++)
                ms_ns_filter_add(&p->filter.include, &p->filter.n_include, CONFIG_COLLECTIONS[k]);
        }
        if (r == 0 && (!p->name || !p->uri))
            r = ms_error_oom(e);
        for (size_t k = 0; r == 0 && i < n_shards && k < o->n_remote_parts; k++)
            p->remote |= strcmp(o->remote_parts[k], p->name) == 0;
    }
    /* Every part named for another process is a shard of this cluster (the config data is the
     * coordinator's own part: it needs the config server, which the source reaches). */
    for (size_t k = 0; r == 0 && k < o->n_remote_parts; k++) {
        bool found = false;
        for (size_t i = 0; i < c.n_parts; i++)
            found |= c.parts[i].remote && strcmp(c.parts[i].name, o->remote_parts[k]) == 0;
        if (!found)
            r = ms_error_set(e, EINVAL,
                             "--remote-part %s names no shard of the cluster (config.shards)%s",
                             o->remote_parts[k],
                             strcmp(o->remote_parts[k], MS_CLUSTER_CONFIG_PART) == 0
                                 ? ": the config data is always the coordinator's own part"
                                 : "");
    }
    /* The meeting is in the store before any part is handed out: a part asked early must find
     * its coordinator (and its own name among the parts taken elsewhere). */
    if (r == 0 && (o->n_remote_parts > 0 || o->n_part_agents > 0)) {
        c.meet_timeouts = ms_part_meet_timeouts(o->part_timeout_sec);
        r = ms_part_meet_coordinator_start(o->storage, c.parts_prefix, o->node, &c.meet, e);
    }
    for (size_t i = 0; r == 0 && i < c.n_parts; i++)
        if (c.parts[i].remote)
            r = ms_part_meet_coordinator_add_part(c.meet, c.parts[i].name, e);
    /* The agents beside the shards' members take their parts (the agent hears of each and asks
     * that node to run cluster-part); the config data stays here. */
    for (size_t i = 0; r == 0 && o->n_part_agents > 0 && i + 1 < c.n_parts; i++) {
        PartRun *p = &c.parts[i];
        if (p->remote)
            continue;
        _cleanup_free_ char *member = NULL;
        p->node = part_agent_for(o, p, &member);
        if (!p->node)
            continue;
        p->remote = true;
        r = ms_part_meet_coordinator_add_part(c.meet, p->name, e);
        if (r < 0)
            break;
        log_info("cluster snapshot: part %s handed to node %s (beside %s)", p->name, p->node,
                 member ? member : "?");
        if (o->progress) {
            bson_t f = BSON_INITIALIZER;
            BSON_APPEND_UTF8(&f, "shard", p->name);
            BSON_APPEND_UTF8(&f, "node", p->node);
            if (member)
                BSON_APPEND_UTF8(&f, "member", member);
            ms_progress_event(o->progress, MONGOSNAP_PROGRESS_EVENT_PART_ASSIGNED, &f);
            bson_destroy(&f);
        }
    }
    pthread_t watcher;
    bool watching = r == 0 && pthread_create(&watcher, NULL, cancel_watch, &c) == 0;
    for (size_t i = 0; r == 0 && i < c.n_parts; i++) {
        if (pthread_create(&c.parts[i].thread, NULL,
                           c.parts[i].remote ? remote_part_main : part_main, &c.parts[i]) != 0) {
            r = ms_error_set(e, EAGAIN, "cannot start the thread of part %s", c.parts[i].name);
            pthread_mutex_lock(&c.lock);
            c.failed = true;
            c.cancel = 1;
            c.n_parts = i; /* the barrier counts the started ones only */
            pthread_cond_broadcast(&c.cond);
            pthread_mutex_unlock(&c.lock);
            break;
        }
        c.parts[i].started = true;
    }
    for (size_t i = 0; i < n_shards + 1 && c.parts; i++)
        if (c.parts[i].started)
            pthread_join(c.parts[i].thread, NULL);
    if (watching) {
        pthread_mutex_lock(&c.lock);
        c.arrived = SIZE_MAX;
        pthread_mutex_unlock(&c.lock);
        pthread_join(watcher, NULL);
    }
    /* The first part that failed (not one that stopped because another failed) names it. */
    for (size_t i = 0; r == 0 && i < c.n_parts; i++)
        if (c.parts[i].r < 0 && c.parts[i].r != -ECANCELED) {
            r = c.parts[i].r;
            *e = c.parts[i].error;
            ms_error_prefix(e, "cluster snapshot part %s: ", c.parts[i].name);
        }
    for (size_t i = 0; r == 0 && i < c.n_parts; i++)
        if (c.parts[i].r < 0) {
            r = c.parts[i].r;
            *e = c.parts[i].error;
            ms_error_prefix(e, "cluster snapshot part %s: ", c.parts[i].name);
        }
    /* The remote parts told: given up (they stop and remove what they committed), or over. */
    if (c.meet) {
        ms_part_meet_coordinator_end(c.meet, r < 0 ? e->message : NULL);
        if (r == 0)
            ms_part_meet_clean(o->storage, c.parts_prefix);
        c.meet = NULL;
    }
    MsOplogPosition point = {0, 0};
    for (size_t i = 0; r == 0 && i < c.n_parts; i++)
        if (ms_oplog_position_after(c.parts[i].res.dump_end, point))
            point = c.parts[i].res.dump_end;
    _cleanup_free_ char *manifest_key = NULL;
    if (r == 0 && asprintf(&manifest_key, "%s%s%s" MS_CLUSTER_MANIFEST_SUFFIX,
                           o->prefix ? o->prefix : "", o->prefix ? "/" : "", o->name) < 0)
        r = ms_error_oom(e);
    if (r == 0)
        r = write_cluster_manifest(&c, manifest_key, point, stopped, e);
    /* Each part's record for the Event Log of the cluster snapshot's task (the agent writes a
     * part-stored entry for it), from this thread: the parts' own progress is not shared. */
    for (size_t i = 0; r == 0 && o->progress && i < c.n_parts; i++) {
        const PartRun *p = &c.parts[i];
        bson_t f = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&f, "shard", p->name);
        if (p->rs)
            BSON_APPEND_UTF8(&f, "replica_set", p->rs);
        BSON_APPEND_UTF8(&f, "manifest", p->res.manifest_key);
        BSON_APPEND_INT64(&f, "documents", (int64_t) p->res.documents);
        BSON_APPEND_INT64(&f, "stored_bytes", (int64_t) p->res.stored_bytes);
        ms_oplog_position_append(&f, "dump_end", p->res.dump_end);
        if (p->node || o->node)
            BSON_APPEND_UTF8(&f, "node", p->node ? p->node : o->node);
        ms_progress_event(o->progress, MONGOSNAP_PROGRESS_EVENT_PART, &f);
        bson_destroy(&f);
    }
    if (r < 0) {
        /* Never half-listed: the parts that committed go again (best effort: without the cluster
         * manifest they are no cluster snapshot anyway). */
        for (size_t i = 0; i < c.n_parts; i++)
            if (c.parts[i].res.manifest_key) {
                MsError ignore = MS_ERROR_INIT;
                ms_storage_remove(o->storage, c.parts[i].res.manifest_key, &ignore);
                ms_storage_remove(o->storage, c.parts[i].res.archive_key, &ignore);
            }
    }
    /* The marker goes once the balancer runs again, or was never stopped; a failed stop
     * whose compensating start failed too keeps it (and the agent's word): the balancer may be
     * off, and the takeover starts it. */
    bool runs = stopped ? balancer_resume(mc, true) == 0 : !sb.marked;
    if (runs && marker) {
        if (stopped)
            balancer_event(o->progress, false);
        MsError me = MS_ERROR_INIT;
        if (ms_storage_remove(o->storage, marker, &me) < 0 && me.code != ENOENT)
            log_warning("cannot remove %s (the balancer runs again): %s", marker, me.message);
    } else if (marker && !stopped)
        log_warning("the balancer may be off after a failed balancerStop; %s stays for the "
                    "takeover, which starts it",
                    marker);
    if (r == 0) {
        ret->manifest_key = TAKE_PTR(manifest_key);
        ret->consistency_point = point;
        ret->balancer_stopped = stopped;
        ret->parts = calloc(c.n_parts, sizeof(*ret->parts));
        ret->n_parts = ret->parts ? c.n_parts : 0;
        for (size_t i = 0; i < ret->n_parts; i++) {
            PartRun *p = &c.parts[i];
            ret->parts[i] = (MsClusterPart){.shard = TAKE_PTR(p->name),
                                            .rs = TAKE_PTR(p->rs),
                                            .manifest_key = TAKE_PTR(p->res.manifest_key),
                                            .dump_end = p->res.dump_end,
                                            .oplog_end = p->res.oplog_end,
                                            .documents = p->res.documents,
                                            .stored_bytes = p->res.stored_bytes};
            ret->documents += p->res.documents;
            ret->stored_bytes += p->res.stored_bytes;
        }
    }
    for (size_t i = 0; c.parts && i < n_shards + 1; i++) {
        PartRun *p = &c.parts[i];
        free(p->name);
        free(p->rs);
        free(p->uri);
        free(p->node);
        ms_ns_filter_clear(&p->filter);
        ms_snapshot_result_clear(&p->res);
    }
    free(c.parts);
    free(c.parts_prefix);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
    ms_cluster_shards_free(shards, n_shards);
    return r;
}

/* ---- the cluster manifest ---- */

void ms_cluster_manifest_clear(MsClusterManifest *m) {
    for (size_t i = 0; m->parts && i < m->n_parts; i++) {
        free(m->parts[i].shard);
        free(m->parts[i].rs);
        free(m->parts[i].manifest_key);
        free(m->parts[i].node);
    }
    free(m->parts);
    free(m->name);
    free(m->node);
    free(m->origin);
    free(m->started_at);
    free(m->finished_at);
    *m = (MsClusterManifest){0};
}

static bool read_pos(bson_iter_t *parent, const char *key, MsOplogPosition *ret) {
    bson_iter_t it, sub;
    if (!bson_iter_find_descendant(parent, key, &it) || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &sub))
        return false;
    *ret = (MsOplogPosition){0, 0};
    while (bson_iter_next(&sub)) {
        if (!BSON_ITER_HOLDS_NUMBER(&sub))
            return false;
        int64_t v = bson_iter_as_int64(&sub);
        if (v < 0 || v > UINT32_MAX)
            return false;
        if (strcmp(bson_iter_key(&sub), "t") == 0)
            ret->t = (uint32_t) v;
        else if (strcmp(bson_iter_key(&sub), "i") == 0)
            ret->i = (uint32_t) v;
    }
    return true;
}

/* "P/N.cluster.json" for key "P/N" or the manifest key itself. */
static char *cluster_manifest_key(const char *key) {
    size_t kl = strlen(key), sl = strlen(MS_CLUSTER_MANIFEST_SUFFIX);
    if (kl > sl && strcmp(key + kl - sl, MS_CLUSTER_MANIFEST_SUFFIX) == 0)
        return strdup(key);
    char *mk = NULL;
    return asprintf(&mk, "%s" MS_CLUSTER_MANIFEST_SUFFIX, key) < 0 ? NULL : mk;
}

/* "P/N.parts/" for the cluster manifest key "P/N.cluster.json". */
static char *cluster_parts_dir(const char *mk) {
    size_t stem = strlen(mk) - strlen(MS_CLUSTER_MANIFEST_SUFFIX);
    char *dir = NULL;
    return asprintf(&dir, "%.*s" MS_CLUSTER_PARTS_SUFFIX "/", (int) stem, mk) < 0 ? NULL : dir;
}

/* The parts are this snapshot's own (a damaged or hostile cluster manifest naming another
 * snapshot's objects, another policy's under another prefix, is refused), each at the key its
 * own shard name gives, each once, exactly one config part and one shard at least: a manifest
 * that says otherwise would put one shard's data into another's place or leave shards out. */
static int check_cluster_manifest(const char *mk, const MsClusterManifest *cm, MsError *e) {
    int r = 0;
    _cleanup_free_ char *parts_prefix = cluster_parts_dir(mk);
    if (!parts_prefix)
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < cm->n_parts; i++)
        if (strncmp(cm->parts[i].manifest_key, parts_prefix, strlen(parts_prefix)) != 0 ||
            strstr(cm->parts[i].manifest_key, ".."))
            r = ms_error_set(e, EBADMSG,
                             "the cluster manifest of %s names part %s at %s, outside %s: it is "
                             "damaged",
                             mk, cm->parts[i].shard, cm->parts[i].manifest_key,
                             parts_prefix);
    size_t n_config = 0;
    for (size_t i = 0; r == 0 && i < cm->n_parts; i++) {
        _cleanup_free_ char *want_key = NULL;
        if (asprintf(&want_key, "%s%s" MONGOSNAP_MANIFEST_SUFFIX, parts_prefix, cm->parts[i].shard) < 0) {
            r = ms_error_oom(e);
            break;
        }
        n_config += strcmp(cm->parts[i].shard, MS_CLUSTER_CONFIG_PART) == 0;
        if (strcmp(cm->parts[i].manifest_key, want_key) != 0)
            r = ms_error_set(e, EBADMSG,
                             "the cluster manifest of %s names part %s at %s, not %s: it is "
                             "damaged",
                             mk, cm->parts[i].shard, cm->parts[i].manifest_key, want_key);
        for (size_t k = 0; r == 0 && k < i; k++)
            if (strcmp(cm->parts[k].shard, cm->parts[i].shard) == 0)
                r = ms_error_set(e, EBADMSG,
                                 "the cluster manifest of %s names part %s twice: it is damaged",
                                 mk, cm->parts[i].shard);
    }
    if (r == 0 && (n_config != 1 || cm->n_parts < 2))
        r = ms_error_set(e, EBADMSG,
                         "the cluster manifest of %s names %zu part(s), %zu of them the config "
                         "data: a cluster snapshot has the config data and one shard at least. It "
                         "is damaged",
                         mk, cm->n_parts, n_config);
    return r;
}

int ms_cluster_manifest_read(MsStorage *st, const char *key, MsClusterManifest *ret, MsError *e) {
    *ret = (MsClusterManifest){0};
    _cleanup_free_ char *json = NULL, *mk = cluster_manifest_key(key);
    size_t len;
    if (!mk)
        return ms_error_oom(e);
    int r = ms_storage_get(st, mk, CLUSTER_MANIFEST_MAX, &json, &len, e);
    if (r == -ENOENT) {
        ms_error_clear(e);
        return ms_error_set(e, ENOENT,
                            "no cluster snapshot '%s' in %s (its manifest %s is missing: it does "
                            "not exist, or it never completed)",
                            key, ms_storage_describe(st), mk);
    }
    if (r < 0)
        return r;
    size_t body_len = 0;
    r = ms_json_check_seal(json, len, &body_len, e);
    if (r < 0) {
        ms_error_prefix(e, "cluster manifest %s: ", mk);
        return r;
    }
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *) json, (ssize_t) body_len, &berr);
    if (!doc)
        return ms_error_set(e, EBADMSG, "%s is not valid JSON: %s", mk, berr.message);
    bson_iter_t it, parts, part;
    MsClusterManifest m = {0};
    r = 0;
    if (!bson_iter_init_find(&it, doc, "format") || !BSON_ITER_HOLDS_UTF8(&it) ||
        strcmp(bson_iter_utf8(&it, NULL), CLUSTER_MANIFEST_FORMAT) != 0)
        r = ms_error_set(e, EBADMSG, "%s is not a mongosnap cluster manifest", mk);
    if (r == 0 && bson_iter_init_find(&it, doc, "snapshot") && BSON_ITER_HOLDS_UTF8(&it))
        m.name = strdup(bson_iter_utf8(&it, NULL));
    struct {
        const char *field;
        char **to;
    } strs[] = {{"node", &m.node}, {"origin", &m.origin}, {"started_at", &m.started_at},
                {"finished_at", &m.finished_at}};
    for (size_t i = 0; r == 0 && i < ELEMENTSOF(strs); i++)
        if (bson_iter_init_find(&it, doc, strs[i].field) && BSON_ITER_HOLDS_UTF8(&it) &&
            !(*strs[i].to = strdup(bson_iter_utf8(&it, NULL))))
            r = ms_error_oom(e);
    struct {
        const char *field;
        uint64_t *to;
    } nums[] = {{"seq", &m.seq}, {"total_documents", &m.documents}, {"stored_bytes", &m.stored_bytes}};
    for (size_t i = 0; r == 0 && i < ELEMENTSOF(nums); i++)
        if (bson_iter_init_find(&it, doc, nums[i].field) && BSON_ITER_HOLDS_NUMBER(&it) &&
            bson_iter_as_int64(&it) >= 0)
            *nums[i].to = (uint64_t) bson_iter_as_int64(&it);
    m.encrypted = r == 0 && bson_iter_init_find(&it, doc, "encrypted") && BSON_ITER_HOLDS_BOOL(&it) &&
                  bson_iter_bool(&it);
    bson_iter_t root;
    if (r == 0 && !(bson_iter_init(&root, doc) && read_pos(&root, "consistency_point", &m.consistency_point)))
        r = ms_error_set(e, EBADMSG, "%s lacks its consistency point", mk);
    if (r == 0 && !(bson_iter_init_find(&it, doc, "parts") && BSON_ITER_HOLDS_ARRAY(&it) &&
                    bson_iter_recurse(&it, &parts)))
        r = ms_error_set(e, EBADMSG, "%s lists no parts", mk);
    m.parts = r == 0 ? calloc(MS_CLUSTER_MAX_SHARDS + 1, sizeof(*m.parts)) : NULL;
    if (r == 0 && !m.parts)
        r = ms_error_oom(e);
    while (r == 0 && bson_iter_next(&parts)) {
        if (m.n_parts > MS_CLUSTER_MAX_SHARDS || !BSON_ITER_HOLDS_DOCUMENT(&parts) ||
            !bson_iter_recurse(&parts, &part)) {
            r = ms_error_set(e, EBADMSG, "%s: a damaged part list", mk);
            break;
        }
        MsClusterPart *p = &m.parts[m.n_parts++];
        bson_iter_t f = part;
        while (bson_iter_next(&f)) {
            const char *k = bson_iter_key(&f);
            if (!BSON_ITER_HOLDS_UTF8(&f))
                continue;
            if (strcmp(k, "shard") == 0)
                p->shard = strdup(bson_iter_utf8(&f, NULL));
            else if (strcmp(k, "replica_set") == 0)
                p->rs = strdup(bson_iter_utf8(&f, NULL));
            else if (strcmp(k, "manifest") == 0)
                p->manifest_key = strdup(bson_iter_utf8(&f, NULL));
            else if (strcmp(k, "node") == 0)
                p->node = strdup(bson_iter_utf8(&f, NULL));
        }
        f = part;
        read_pos(&f, "dump_end", &p->dump_end);
        f = part;
        read_pos(&f, "oplog_end", &p->oplog_end);
        f = part;
        while (bson_iter_next(&f)) {
            bool docs = strcmp(bson_iter_key(&f), "documents") == 0;
            if ((docs || strcmp(bson_iter_key(&f), "stored_bytes") == 0) &&
                (BSON_ITER_HOLDS_INT64(&f) || BSON_ITER_HOLDS_INT32(&f)) &&
                bson_iter_as_int64(&f) >= 0) /* JSON: a small number reads as int32 */
                *(docs ? &p->documents : &p->stored_bytes) = (uint64_t) bson_iter_as_int64(&f);
        }
        if (!p->shard || !p->manifest_key)
            r = ms_error_set(e, EBADMSG, "%s: a part lacks its shard or manifest", mk);
    }
    bson_destroy(doc);
    if (r == 0)
        r = check_cluster_manifest(mk, &m, e);
    if (r < 0) {
        ms_cluster_manifest_clear(&m);
        return r;
    }
    *ret = m;
    return 0;
}

/* ---- the restore ---- */

typedef struct RestorePart {
    const MsClusterRestoreOptions *o;
    const MsClusterPart *part;
    char *uri;
    MsOplogPosition until;
    char *const *slice_keys; /* the part's oplog slices to until (borrowed from the plan) */
    size_t n_slices;
    MsNsFilter filter; /* the config part's collections */
    bool config;
    bool started;
    MsProgress progress;
    MsRestoreResult res;
    MsError error;
    int r;
    pthread_t thread;
} RestorePart;

static void *restore_part_main(void *userdata) {
    RestorePart *p = userdata;
    MsRestoreOptions ro = {
        .uri = p->uri,
        .password = p->o->password,
        .storage = p->o->storage,
        .snapshot_key = p->part->manifest_key,
        .key = p->o->key,
        .filter = p->config ? &p->filter : NULL,
        .parallel = p->o->parallel ? p->o->parallel : 4,
        .batch_size = 1000,
        .drop = p->o->drop,
        .replay_oplog = true,
        .slice_keys = p->slice_keys,
        .n_slices = p->n_slices,
        .has_until = true,
        .until = p->until,
        .restore_indexes = true,
        .bypass_validation = true,
        .progress = &p->progress,
        .cancel = p->o->cancel,
    };
    p->r = ms_restore_run(&ro, &p->res, &p->error);
    return NULL;
}

/* ---- the config data ----
 *
 * Not restored as a part like the shards' (a drop of config.chunks would take the target's
 * routing of databases the snapshot does not hold): the snapshot's config.databases,
 * config.collections and config.chunks documents are read from the config part, their shard
 * names mapped in one step from the snapshot's own values (so "a=b,b=a" swaps and "a=b,b=c"
 * chains mean what they say, and no target document outside the snapshot's is renamed), and
 * inserted. With --drop, the target's entries of the snapshot's databases go first; without,
 * an entry the target already has is kept (counted), as a restore keeps existing documents. */

typedef struct ConfigDocs {
    bson_t **v[3]; /* databases, collections, chunks */
    size_t n[3];
} ConfigDocs;

static const char *const CONFIG_DATA[3] = {"databases", "collections", "chunks"};

static void config_docs_clear(ConfigDocs *d) {
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < d->n[k]; i++)
            bson_destroy(d->v[k][i]);
        free(d->v[k]);
    }
}

/* A copy of doc with the shard names in field (and, for chunks, history.N.shard) mapped. */
static bson_t *map_config_doc(const bson_t *doc, const char *field, const MsShardMap *map) {
    bson_t *out = bson_new();
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        goto fail;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (strcmp(key, field) == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
            if (!BSON_APPEND_UTF8(out, key, ms_shard_map_apply(map, bson_iter_utf8(&it, NULL))))
                goto fail;
        } else if (strcmp(field, "shard") == 0 && strcmp(key, "history") == 0 &&
                   BSON_ITER_HOLDS_ARRAY(&it)) {
            bson_t arr;
            bson_iter_t entries;
            if (!bson_iter_recurse(&it, &entries) || !BSON_APPEND_ARRAY_BEGIN(out, key, &arr))
                goto fail;
            while (bson_iter_next(&entries)) {
                if (!BSON_ITER_HOLDS_DOCUMENT(&entries)) {
                    if (!bson_append_iter(&arr, bson_iter_key(&entries), -1, &entries))
                        goto fail;
                    continue;
                }
                uint32_t len;
                const uint8_t *data;
                bson_iter_document(&entries, &len, &data);
                bson_t entry;
                if (!bson_init_static(&entry, data, len))
                    goto fail;
                bson_t *mapped = map_config_doc(&entry, "shard", map);
                bool ok = mapped && bson_append_document(&arr, bson_iter_key(&entries), -1, mapped);
                if (mapped)
                    bson_destroy(mapped);
                if (!ok)
                    goto fail;
            }
            if (!bson_append_array_end(out, &arr))
                goto fail;
        } else if (!bson_append_iter(out, key, -1, &it))
            goto fail;
    }
    return out;
fail:
    bson_destroy(out);
    return NULL;
}

/* How much of the config server's oplog a restore holds in memory to bring the config data to
 * the consistency point: the config server's writes during one snapshot (the balancer stopped)
 * are a few documents; more means something else wrote there, and the restore says so. */
#define CONFIG_OPLOG_MAX_BYTES (256u << 20)

static int config_docs_push(ConfigDocs *d, size_t k, bson_t *doc) {
    bson_t **grown = realloc(d->v[k], (d->n[k] + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    d->v[k] = grown;
    grown[d->n[k]++] = doc;
    return 0;
}

static bool same_id(const bson_t *a, const bson_t *b) {
    bson_iter_t x, y;
    if (!bson_iter_init_find(&x, a, "_id") || !bson_iter_init_find(&y, b, "_id"))
        return false;
    bson_t p = BSON_INITIALIZER, q = BSON_INITIALIZER;
    bool same = bson_append_iter(&p, "_id", 3, &x) && bson_append_iter(&q, "_id", 3, &y) &&
                bson_equal(&p, &q);
    bson_destroy(&p);
    bson_destroy(&q);
    return same;
}

static ssize_t config_docs_find(const ConfigDocs *d, size_t k, const bson_t *selector) {
    for (size_t i = 0; i < d->n[k]; i++)
        if (same_id(d->v[k][i], selector))
            return (ssize_t) i;
    return -1;
}

static int config_kind(const char *db, const char *coll) {
    for (int k = 0; db && coll && strcmp(db, "config") == 0 && k < 3; k++)
        if (strcmp(coll, CONFIG_DATA[k]) == 0)
            return k;
    return -1;
}

/* One action of a config oplog entry's plan, carried out on the documents in memory as the
 * config server carried it out (ms_oplog_plan_execute's meaning, without a server). */
static int apply_config_action(ConfigDocs *d, const MsOplogAction *a, const bson_t *entry,
                               MsError *e) {
    char what[256];
    if (a->kind == MS_OPLOG_ACTION_COMMAND) {
        bson_iter_t it;
        const char *cmd = bson_iter_init(&it, a->doc) && bson_iter_next(&it) ? bson_iter_key(&it) : "";
        if (strcmp(cmd, "drop") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
            int k = config_kind(a->db, bson_iter_utf8(&it, NULL));
            for (size_t i = 0; k >= 0 && i < d->n[k]; i++)
                bson_destroy(d->v[k][i]);
            if (k >= 0)
                d->n[k] = 0;
            return 0;
        }
        static const char *const no_documents[] = {"create", "createIndexes", "dropIndexes",
                                                   "deleteIndexes", "collMod", "commitIndexBuild"};
        for (size_t i = 0; i < ELEMENTSOF(no_documents); i++)
            if (strcmp(cmd, no_documents[i]) == 0)
                return 0;
        ms_oplog_describe_entry(entry, what, sizeof(what));
        return ms_error_set(e, ENOTSUP,
                            "%s runs '%s' on the config data, which mongosnap cannot replay: the "
                            "config data cannot be brought to the consistency point", what, cmd);
    }
    int k = config_kind(a->db, a->coll);
    if (k < 0)
        return 0; /* the filter selects the three collections only */
    ssize_t at = a->kind == MS_OPLOG_ACTION_INSERT ? -1
                 : config_docs_find(d, (size_t) k,
                                    a->kind == MS_OPLOG_ACTION_UPSERT ? a->doc : a->selector);
    bson_t *next = NULL;
    int r = 0;
    switch (a->kind) {
    case MS_OPLOG_ACTION_UPSERT:
    case MS_OPLOG_ACTION_INSERT:
        next = bson_copy(a->doc);
        break;
    case MS_OPLOG_ACTION_REPLACE:
        if (at < 0)
            return 0; /* as on a server: a replacement of a missing document changes nothing */
        if (bson_has_field(a->doc, "_id"))
            next = bson_copy(a->doc);
        else {
            bson_iter_t id;
            next = bson_new();
            if (bson_iter_init_find(&id, d->v[k][at], "_id"))
                bson_append_iter(next, "_id", 3, &id);
            bson_concat(next, a->doc);
        }
        break;
    case MS_OPLOG_ACTION_UPDATE:
        if (at < 0)
            return 0;
        bson_t updated;
        r = ms_doc_update_apply(d->v[k][at], a->doc, &updated, e);
        if (r < 0) {
            bson_destroy(&updated);
            ms_oplog_describe_entry(entry, what, sizeof(what));
            ms_error_prefix(e, "%s on config.%s cannot be replayed: ", what, CONFIG_DATA[k]);
            return r;
        }
        next = bson_copy(&updated);
        bson_destroy(&updated);
        break;
    case MS_OPLOG_ACTION_DELETE:
        if (at >= 0) {
            bson_destroy(d->v[k][at]);
            memmove(&d->v[k][at], &d->v[k][at + 1], (d->n[k] - (size_t) at - 1) * sizeof(bson_t *));
            d->n[k]--;
        }
        return 0;
    default:
        return 0;
    }
    if (!next)
        return ms_error_oom(e);
    if (at >= 0) {
        bson_destroy(d->v[k][at]);
        d->v[k][at] = next;
    } else if (config_docs_push(d, (size_t) k, next) < 0) {
        bson_destroy(next);
        return ms_error_oom(e);
    }
    return 0;
}

/* The config part's oplog entries up to the consistency point, replayed on its documents
 * through the plans a restore's replay uses (transactions, $v:2 deltas, dropDatabase). */
static int replay_config_oplog(ConfigDocs *d, const MsNsFilter *filter, bson_t *const *entries,
                               size_t n, uint64_t *ret_applied, MsError *e) {
    _cleanup_(ms_oplog_replayer_freep) MsOplogReplayer *rp = NULL;
    int r = ms_oplog_replayer_new(filter, &rp, e);
    for (size_t k = 0; r == 0 && k < 3; k++)
        if (ms_oplog_replayer_know(rp, CONFIG_COLLECTIONS[k]) < 0)
            r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        MsOplogPlan plan = {0};
        r = ms_oplog_replayer_plan(rp, entries[i], &plan, e);
        for (size_t j = 0; r == 0 && j < plan.n_actions; j++)
            r = apply_config_action(d, &plan.actions[j], entries[i], e);
        ms_oplog_plan_clear(&plan);
    }
    if (r < 0)
        return r;
    ms_oplog_replayer_finish(rp);
    const MsOplogReplayStats *st = ms_oplog_replayer_stats(rp);
    *ret_applied = st->applied;
    if (st->unplaceable > 0)
        log_warning("%" PRIu64 " operation(s) of the config server's oplog were not replayed on "
                    "the config data; the first: %s",
                    st->unplaceable, st->first_unplaceable);
    return 0;
}

/* The config part's config data in memory (config data is small beside the shards'): its
 * documents as dumped, brought to the cluster's consistency point by the config server's oplog
 * captured with them (the other parts' data is at that point: the routing must be too), then
 * their shard names mapped. */
typedef struct ConfigOplog {
    bson_t **v;
    size_t n, bytes;
    MsOplogPosition last; /* the newest entry held: a slice's entries up to it are repeats */
} ConfigOplog;

static void config_oplog_clear(ConfigOplog *l) {
    for (size_t i = 0; i < l->n; i++)
        bson_destroy(l->v[i]);
    free(l->v);
}

/* Keeps entry (owned) when it is after the last one held and not after point. */
static int config_oplog_take(ConfigOplog *l, bson_t *entry, MsOplogPosition point, MsError *e) {
    MsOplogPosition pos = ms_oplog_entry_position(entry);
    if (ms_oplog_position_after(pos, point) || (l->n && !ms_oplog_position_after(pos, l->last))) {
        bson_destroy(entry);
        return 0; /* after the point (read on: the checksums cover all), or held already */
    }
    bson_t **grown = NULL;
    int r = 0;
    if ((l->bytes += entry->len) > CONFIG_OPLOG_MAX_BYTES)
        r = ms_error_set(e, EFBIG,
                         "the config server's oplog to replay is over %u MiB: more than a "
                         "cluster's routing changes (was the config server written to by "
                         "something else?); mongosnap does not replay that much in memory",
                         CONFIG_OPLOG_MAX_BYTES >> 20);
    else if (!(grown = realloc(l->v, (l->n + 1) * sizeof(*grown))))
        r = ms_error_oom(e);
    if (r < 0) {
        bson_destroy(entry);
        return r;
    }
    l->v = grown;
    l->v[l->n++] = entry;
    l->last = pos;
    return 0;
}

/* Reading the config part (docs set: its config documents too) or a slice of the config server. */
typedef struct ConfigRead {
    ConfigOplog *oplog;
    ConfigDocs *docs;
    const MsNsFilter *filter; /* the replayed collections: other entries are not held */
    MsOplogPosition point;
    MsError *e;
} ConfigRead;

static int config_document(const MsArchiveEvent *ev, void *userdata) {
    ConfigRead *cr = userdata;
    bool is_oplog = ms_archive_is_oplog(ev->db, ev->collection);
    int k = is_oplog || !cr->docs ? -1 : config_kind(ev->db, ev->collection);
    if (!is_oplog && k < 0)
        return 0;
    bson_t *doc = bson_new_from_data(ev->data, ev->len);
    if (!doc)
        return ms_error_set(cr->e, EBADMSG, "a %s%s document of the config server is not BSON",
                            is_oplog ? "oplog" : "config.", is_oplog ? "" : CONFIG_DATA[k]);
    if (is_oplog) {
        /* A slice holds the config server's every write (sessions, pings): only those on the
         * replayed collections are held, and counted against the limit. */
        bson_t rewritten;
        int v = ms_ns_filter_oplog_entry(cr->filter, MS_NS_OPLOG_KEEP_CONFIG, doc, &rewritten,
                                         cr->e);
        if (v == MS_NS_OPLOG_REWRITTEN) {
            bson_destroy(doc);
            doc = bson_copy(&rewritten);
            bson_destroy(&rewritten);
            if (!doc)
                return ms_error_oom(cr->e);
        }
        if (v < 0 || v == MS_NS_OPLOG_DROP) {
            bson_destroy(doc);
            return v < 0 ? v : 0;
        }
        return config_oplog_take(cr->oplog, doc, cr->point, cr->e);
    }
    if (config_docs_push(cr->docs, (size_t) k, doc) < 0) {
        bson_destroy(doc);
        return ms_error_oom(cr->e);
    }
    return 0;
}

/* The config server's oplog entries of a slice, up to point, appended. */
static int read_config_slice(const MsClusterRestoreOptions *o, const char *key,
                             const MsNsFilter *filter, MsOplogPosition point, ConfigOplog *l,
                             MsError *e) {
    MsSnapshotSource src;
    int r = ms_snapshot_source_open_store(o->storage, key, o->key, &src, e);
    if (r < 0) {
        if (!strstr(e->message, key))
            ms_error_prefix(e, "oplog slice %s: ", key);
        return r;
    }
    ConfigRead cr = {.oplog = l, .filter = filter, .point = point, .e = e};
    r = ms_snapshot_source_read_all(&src, config_document, &cr, e);
    ms_snapshot_source_close(&src);
    if (r < 0 && !strstr(e->message, key))
        ms_error_prefix(e, "oplog slice %s: ", key);
    return r;
}

/* The routing at the point names only shards the cluster snapshot holds: a shard added after
 * it (its chunks moved there, a database's primary) has no data in the snapshot, and the
 * donors' oplogs replay the range deletions of what moved. Such a time cannot be restored from
 * this snapshot. */
static int check_config_shards(const ConfigDocs *d, const MsClusterManifest *cm,
                               MsOplogPosition point, MsError *e) {
    for (size_t k = 0; k < 3; k += 2)
        for (size_t i = 0; i < d->n[k]; i++) {
            bson_iter_t it;
            if (!bson_iter_init_find(&it, d->v[k][i], k == 0 ? "primary" : "shard") ||
                !BSON_ITER_HOLDS_UTF8(&it))
                continue;
            const char *shard = bson_iter_utf8(&it, NULL);
            /* "config": the config servers themselves (the config database's own entry). */
            bool known = strcmp(shard, MS_CLUSTER_CONFIG_PART) == 0;
            for (size_t p = 0; p < cm->n_parts && !known; p++)
                known = strcmp(cm->parts[p].shard, shard) == 0;
            if (!known)
                return ms_error_set(e, ERANGE,
                                    "at %" PRIu32 ":%" PRIu32 " the cluster's routing names shard "
                                    "'%s' (config.%s), which cluster snapshot %s does not hold (a "
                                    "shard added after it): restore to an earlier time, or from a "
                                    "later cluster snapshot. Nothing was restored",
                                    point.t, point.i, shard, CONFIG_DATA[k], cm->name);
        }
    return 0;
}

static int read_config_docs(const MsClusterRestoreOptions *o, const MsClusterPart *part,
                            const MsClusterManifest *cm, const MsNsFilter *filter,
                            MsOplogPosition point,
                            char *const *slice_keys, size_t n_slices, ConfigDocs *ret,
                            uint64_t *ret_replayed, MsError *e) {
    MsSnapshotSource src;
    int r = ms_snapshot_source_open_store(o->storage, part->manifest_key, o->key, &src, e);
    if (r < 0)
        return r;
    ConfigOplog oplog = {0};
    ConfigRead cr = {.oplog = &oplog, .docs = ret, .filter = filter, .point = point, .e = e};
    r = ms_snapshot_source_read_all(&src, config_document, &cr, e);
    ms_snapshot_source_close(&src);
    /* Point-in-time: the config server's slices after its part, to the time. */
    for (size_t i = 0; r == 0 && i < n_slices; i++)
        r = read_config_slice(o, slice_keys[i], filter, point, &oplog, e);
    if (r == 0)
        r = replay_config_oplog(ret, filter, oplog.v, oplog.n, ret_replayed, e);
    config_oplog_clear(&oplog);
    if (r == 0)
        r = check_config_shards(ret, cm, point, e);
    /* The shard names, mapped in one step from the snapshot's values (after the replay: an
     * entry names the snapshot's shards too). */
    for (size_t k = 0; r == 0 && k < 3; k++)
        for (size_t i = 0; r == 0 && i < ret->n[k]; i++) {
            bson_t *mapped = map_config_doc(ret->v[k][i], k == 0 ? "primary" : k == 2 ? "shard" : "",
                                            o->shard_map);
            if (!mapped)
                r = ms_error_oom(e);
            else {
                bson_destroy(ret->v[k][i]);
                ret->v[k][i] = mapped;
            }
        }
    return r;
}

/* {field: {$gte: "D.", $lt: "D/"}}: the namespaces of database D ('/' follows '.'). */
static bson_t *namespaces_of(const char *field, const char *db) {
    _cleanup_free_ char *lo = NULL, *hi = NULL;
    if (asprintf(&lo, "%s.", db) < 0 || asprintf(&hi, "%s/", db) < 0)
        return NULL;
    return BCON_NEW(field, "{", "$gte", BCON_UTF8(lo), "$lt", BCON_UTF8(hi), "}");
}

/* --drop: the target's routing of the snapshot's databases (their collections' chunks, by
 * namespace or, as MongoDB 5.0+ writes them, by collection UUID), nothing else. */
static int drop_config_entries(mongoc_client_t *c, MsMongo *m, const char *db, MsError *e) {
    mongoc_collection_t *dbs = mongoc_client_get_collection(c, "config", "databases");
    mongoc_collection_t *cols = mongoc_client_get_collection(c, "config", "collections");
    mongoc_collection_t *chunks = mongoc_client_get_collection(c, "config", "chunks");
    bson_error_t berr;
    int r = 0;
    bson_t *by_id = namespaces_of("_id", db), *by_ns = namespaces_of("ns", db);
    bson_t *db_doc = BCON_NEW("_id", BCON_UTF8(db));
    if (!by_id || !by_ns || !db_doc)
        r = ms_error_oom(e);
    mongoc_cursor_t *cur = r == 0 ? mongoc_collection_find_with_opts(cols, by_id, NULL, NULL) : NULL;
    const bson_t *doc;
    while (cur && r == 0 && mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, doc, "uuid"))
            continue;
        bson_t f = BSON_INITIALIZER;
        bson_append_iter(&f, "uuid", -1, &it);
        if (!mongoc_collection_delete_many(chunks, &f, NULL, NULL, &berr))
            r = ms_mongo_error(m, e, &berr, "removing the target's chunks of a restored database");
        bson_destroy(&f);
    }
    if (cur && r == 0 && mongoc_cursor_error(cur, &berr))
        r = ms_mongo_error(m, e, &berr, "reading the target's collections of a restored database");
    if (cur)
        mongoc_cursor_destroy(cur);
    if (r == 0 && (!mongoc_collection_delete_many(chunks, by_ns, NULL, NULL, &berr) ||
                   !mongoc_collection_delete_many(cols, by_id, NULL, NULL, &berr) ||
                   !mongoc_collection_delete_one(dbs, db_doc, NULL, NULL, &berr)))
        r = ms_mongo_error(m, e, &berr, "removing the target's routing of a restored database");
    if (by_id)
        bson_destroy(by_id);
    if (by_ns)
        bson_destroy(by_ns);
    if (db_doc)
        bson_destroy(db_doc);
    mongoc_collection_destroy(dbs);
    mongoc_collection_destroy(cols);
    mongoc_collection_destroy(chunks);
    return r;
}

static int apply_config_docs(const MsClusterRestoreOptions *o, const char *config_uri,
                             const ConfigDocs *d, uint64_t *ret_inserted, uint64_t *ret_kept,
                             MsError *e) {
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    int r = ms_mongo_one_open(config_uri, o->password, &one, e);
    if (r < 0)
        return r;
    MsMongo *m = one.mongo;
    mongoc_client_t *c = one.client;
    for (size_t i = 0; r == 0 && o->drop && i < d->n[0]; i++) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, d->v[0][i], "_id") && BSON_ITER_HOLDS_UTF8(&it))
            r = drop_config_entries(c, m, bson_iter_utf8(&it, NULL), e);
    }
    for (size_t k = 0; r == 0 && k < 3; k++) {
        mongoc_collection_t *coll = mongoc_client_get_collection(c, "config", CONFIG_DATA[k]);
        for (size_t i = 0; r == 0 && i < d->n[k]; i++) {
            bson_error_t berr;
            if (mongoc_collection_insert_one(coll, d->v[k][i], NULL, NULL, &berr))
                (*ret_inserted)++;
            else if (berr.code == 11000)
                (*ret_kept)++; /* the target's own entry: kept without --drop */
            else
                r = ms_mongo_error(m, e, &berr, "writing the snapshot's config data");
        }
        mongoc_collection_destroy(coll);
    }
    return r;
}

int ms_cluster_restore_run(const MsClusterRestoreOptions *o, MsClusterRestoreResult *ret, MsError *e) {
    *ret = (MsClusterRestoreResult){0};
    MsClusterManifest cm;
    int r = ms_cluster_manifest_read(o->storage, o->snapshot_key, &cm, e);
    if (r < 0) {
        if (r == -EBADMSG)
            ms_error_prefix(e, "nothing was restored: ");
        return r;
    }
    if (o->has_until && ms_oplog_position_after(cm.consistency_point, o->until)) {
        r = ms_error_set(e, ERANGE,
                         "%s is consistent from %" PRIu32 ":%" PRIu32 " on; it cannot be restored "
                         "to the earlier %" PRIu32 ":%" PRIu32 ". Nothing was restored",
                         o->snapshot_key, cm.consistency_point.t, cm.consistency_point.i,
                         o->until.t, o->until.i);
        ms_cluster_manifest_clear(&cm);
        return r;
    }
    _cleanup_(ms_mongo_one_close) MsMongoOne one = {0};
    r = ms_mongo_one_open(o->uri, o->password, &one, e);
    if (r < 0) {
        ms_cluster_manifest_clear(&cm);
        return r;
    }
    MsMongo *m = one.mongo;
    mongoc_client_t *mc = one.client;
    MsClusterShard *target = NULL;
    size_t n_target = 0;
    r = read_shards(m, mc, &target, &n_target, e);
    _cleanup_free_ char *config_uri = NULL;
    if (r == 0)
        r = config_server_uri(m, mc, o->uri, &config_uri, e);
    bool target_mongos = r == 0 && is_mongos(mc);
    RestorePart *parts = r == 0 ? calloc(cm.n_parts, sizeof(*parts)) : NULL;
    if (r == 0 && !parts)
        r = ms_error_oom(e);
    /* Every part a place, each target shard at most once: checked before anything changes. */
    for (size_t i = 0; r == 0 && i < cm.n_parts; i++) {
        RestorePart *p = &parts[i];
        p->o = o;
        p->part = &cm.parts[i];
        p->until = o->has_until ? o->until : cm.consistency_point;
        const MsClusterPitPlanPart *pp =
            o->plan ? ms_cluster_pit_plan_part(o->plan, cm.parts[i].shard) : NULL;
        if (pp) {
            p->slice_keys = pp->slice_keys;
            p->n_slices = pp->n_slices;
        } else if (o->plan) {
            r = ms_error_set(e, EINVAL, "the plan to %" PRIu32 ":%" PRIu32 " has nothing for part "
                                        "%s of %s. Nothing was restored",
                             o->until.t, o->until.i, cm.parts[i].shard, o->snapshot_key);
            break;
        }
        ms_progress_init(&p->progress, -1);
        if (strcmp(cm.parts[i].shard, MS_CLUSTER_CONFIG_PART) == 0) {
            p->config = true;
            p->uri = strdup(config_uri);
            for (size_t k = 0; k < 3; k++) /* databases, collections, chunks: not shards, version */
                ms_ns_filter_add(&p->filter.include, &p->filter.n_include, CONFIG_COLLECTIONS[k]);
            if (!p->uri)
                r = ms_error_oom(e);
            continue;
        }
        const char *want = ms_shard_map_apply(o->shard_map, cm.parts[i].shard);
        const MsClusterShard *t = NULL;
        for (size_t k = 0; k < n_target && !t; k++)
            if (strcmp(target[k].name, want) == 0)
                t = &target[k];
        if (!t) {
            char names[1024] = "";
            size_t used = 0;
            for (size_t k = 0; k < n_target && used < sizeof(names); k++)
                used += (size_t) snprintf(names + used, sizeof(names) - used, "%s%s", k ? ", " : "",
                                          target[k].name);
            r = ms_error_set(e, EINVAL,
                             "shard '%s' of the snapshot%s%s%s has no counterpart in the target "
                             "cluster (its shards: %s); give --shard-map %s=NAME. Nothing was "
                             "restored",
                             cm.parts[i].shard, want != cm.parts[i].shard ? " (mapped to '" : "",
                             want != cm.parts[i].shard ? want : "",
                             want != cm.parts[i].shard ? "')" : "", names, cm.parts[i].shard);
            break;
        }
        for (size_t k = 0; k < i && r == 0; k++)
            if (!parts[k].config &&
                strcmp(ms_shard_map_apply(o->shard_map, cm.parts[k].shard), want) == 0)
                r = ms_error_set(e, EINVAL,
                                 "shards '%s' and '%s' of the snapshot would both go into target "
                                 "shard '%s': one shard per shard (see --shard-map). Nothing was "
                                 "restored",
                                 cm.parts[k].shard, cm.parts[i].shard, want);
        if (r == 0)
            r = ms_cluster_shard_uri(o->uri, t, &p->uri, e);
    }
    /* --drop: every part known whole before the first shard's collections go. Each part's own
     * restore checks its part again; one part's check alone would let a damaged shard02 be
     * found only after shard01 was dropped and replaced. */
    for (size_t i = 0; r == 0 && o->drop && i < cm.n_parts; i++) {
        r = ms_snapshot_source_precheck_store(o->storage, cm.parts[i].manifest_key, o->key, NULL, e);
        /* To a time: the part's slices too (one damaged is found before any shard goes). */
        for (size_t k = 0; r == 0 && parts && k < parts[i].n_slices; k++)
            r = ms_snapshot_source_precheck_store(o->storage, parts[i].slice_keys[k], o->key, NULL,
                                                  e);
        if (r < 0)
            ms_error_prefix(e, "part %s of %s cannot be restored, so nothing was dropped or "
                               "changed in the target cluster: ",
                            cm.parts[i].shard, o->snapshot_key);
    }
    /* The config data, read and mapped before any shard changes (a damaged config part stops
     * the restore there), written after every shard's part is in. */
    ConfigDocs config = {0};
    uint64_t config_replayed = 0;
    for (size_t i = 0; r == 0 && i < cm.n_parts; i++)
        if (parts[i].config) {
            r = read_config_docs(o, parts[i].part, &cm, &parts[i].filter, parts[i].until,
                                 parts[i].slice_keys, parts[i].n_slices, &config,
                                 &config_replayed, e);
            if (r < 0)
                ms_error_prefix(e, "the config data of %s cannot be read, so nothing was changed "
                                   "in the target cluster: ",
                                o->snapshot_key);
        }
    /* Through a mongos, chunks do not move while the shards are rewritten under them. */
    bool balancer_stopped = false;
    if (r == 0 && target_mongos)
        r = balancer_pause(mc, 60,
                           &(const BalancerStopHook){.before = restore_balancer_before,
                                                     .not_stopped = restore_balancer_not_stopped,
                                                     .userdata = o->progress},
                           &balancer_stopped, e);
    size_t started = 0;
    for (size_t i = 0; r == 0 && i < cm.n_parts; i++) {
        if (parts[i].config)
            continue;
        if (pthread_create(&parts[i].thread, NULL, restore_part_main, &parts[i]) != 0) {
            r = ms_error_set(e, EAGAIN, "cannot start a restore thread");
            break;
        }
        parts[i].started = true;
        started++;
    }
    for (size_t i = 0; i < cm.n_parts; i++)
        if (parts[i].started)
            pthread_join(parts[i].thread, NULL);
    /* Every failed shard named, and which ones were restored: the target is then part old,
     * part new, and the operator must know which. */
    size_t failed = 0;
    char done[1024] = "", bad[1024] = "";
    for (size_t i = 0; i < cm.n_parts; i++) {
        if (!parts[i].started)
            continue;
        char *list = parts[i].r < 0 ? bad : done;
        size_t used = strlen(list);
        if (used < sizeof(done) - 1)
            snprintf(list + used, sizeof(done) - used, "%s%s", used ? ", " : "", parts[i].part->shard);
        if (parts[i].r < 0 && failed++ == 0 && r == 0) {
            r = parts[i].r;
            *e = parts[i].error;
        }
    }
    if (failed > 0)
        ms_error_prefix(e, "restoring shard(s) %s failed (restored: %s; the config data was not "
                           "written; restore again with --drop once the cause is fixed): ",
                        bad, done[0] ? done : "none");
    uint64_t config_inserted = 0, config_kept = 0;
    if (r == 0) {
        r = apply_config_docs(o, config_uri, &config, &config_inserted, &config_kept, e);
        if (r < 0)
            ms_error_prefix(e, "every shard was restored, but the config data was not written "
                               "whole: ");
    }
    if (config_kept > 0)
        log_warning("%" PRIu64 " config entries of the snapshot were already in the target and "
                    "were kept (restore with --drop to replace the routing of the snapshot's "
                    "databases)",
                    config_kept);
    config_docs_clear(&config);
    if (balancer_stopped && balancer_resume(mc, balancer_stopped) == 0)
        balancer_event(o->progress, false);
    if (r == 0) {
        ret->consistency_point = cm.consistency_point;
        ret->config_oplog_applied = config_replayed;
        ret->documents += config_inserted;
        for (size_t i = 0; i < cm.n_parts; i++) {
            ret->documents += parts[i].res.documents;
            ret->oplog_applied += parts[i].res.oplog_applied;
            ret->shards += !parts[i].config;
        }
    }
    for (size_t i = 0; parts && i < cm.n_parts; i++) {
        free(parts[i].uri);
        ms_ns_filter_clear(&parts[i].filter);
    }
    free(parts);
    ms_cluster_shards_free(target, n_target);
    ms_cluster_manifest_clear(&cm);
    return r;
}

/* ---- verify and removal ---- */

int ms_cluster_snapshot_exists(MsStorage *st, const char *key, MsError *e) {
    _cleanup_free_ char *mk = cluster_manifest_key(key);
    if (!mk)
        return ms_error_oom(e);
    MsStorageObject o = {0};
    MsError se = MS_ERROR_INIT;
    int r = ms_storage_stat(st, mk, &o, &se);
    free(o.key);
    if (r == -ENOENT || r == -EISDIR || r == -EINVAL)
        return 0;
    if (r < 0) {
        *e = se;
        return r;
    }
    return 1;
}

int ms_cluster_verify_run(MsStorage *st, const char *key, const MsEncryptKey *enc_key,
                          MsProgress *p, volatile sig_atomic_t *cancel, MsClusterVerifyResult *ret,
                          MsError *e) {
    *ret = (MsClusterVerifyResult){0};
    MsClusterManifest cm;
    int r = ms_cluster_manifest_read(st, key, &cm, e);
    if (r < 0)
        return r;
    for (size_t i = 0; r == 0 && i < cm.n_parts; i++) {
        MsVerifyOptions vo = {
            .storage = st,
            .snapshot_key = cm.parts[i].manifest_key,
            .key = enc_key,
            .progress = p,
            .cancel = cancel,
        };
        MsVerifyResult vr = {0};
        r = ms_verify_run(&vo, &vr, e);
        if (r < 0) {
            ms_error_prefix(e, "part %s of cluster snapshot %s: ", cm.parts[i].shard, key);
            break;
        }
        ret->parts++;
        ret->documents += vr.documents;
        ret->oplog_entries += vr.oplog_entries;
        ret->stored_bytes += vr.stored_bytes;
    }
    ms_cluster_manifest_clear(&cm);
    return r;
}

bool ms_cluster_part_key(const char *key, size_t *ret_stem) {
    const char *leaf = strrchr(key, '/');
    if (!leaf || !leaf[1])
        return false;
    const char *dir = leaf; /* the start of the leaf's directory's name */
    while (dir > key && dir[-1] != '/')
        dir--;
    size_t pl = strlen(MS_CLUSTER_PARTS_SUFFIX);
    /* below a non-empty prefix, named "<name>.parts" with a name */
    if (dir - key < 2 || (size_t) (leaf - dir) <= pl ||
        memcmp(leaf - pl, MS_CLUSTER_PARTS_SUFFIX, pl) != 0)
        return false;
    if (ret_stem)
        *ret_stem = (size_t) (leaf - pl - key);
    return true;
}

int ms_cluster_snapshot_keys(MsStorage *st, const char *key, char ***ret_keys, size_t *ret_n,
                             MsError *e) {
    _cleanup_free_ char *mk = cluster_manifest_key(key), *dir = mk ? cluster_parts_dir(mk) : NULL;
    if (!dir)
        return ms_error_oom(e);
    if (mk[0] == '/' || !strchr(mk, '/'))
        return ms_error_set(e, EINVAL,
                            "%s: a cluster snapshot's key has a prefix (PREFIX/NAME.cluster.json); "
                            "its parts are not looked for at the top of the store, where "
                            "policies keep theirs",
                            mk);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    int r = ms_storage_list(st, dir, &objs, &n, e);
    if (r < 0)
        return r;
    char **keys = calloc(n + 2, sizeof(char *));
    size_t k = 0;
    if (keys) {
        keys[k++] = TAKE_PTR(mk);
        for (size_t i = 0; i < n; i++)
            if (ms_cluster_part_key(objs[i].key, NULL)) /* the parts, nothing deeper */
                keys[k++] = TAKE_PTR(objs[i].key);
    }
    ms_storage_objects_free(objs, n);
    if (!keys)
        return ms_error_oom(e);
    *ret_keys = keys;
    *ret_n = k;
    return 0;
}

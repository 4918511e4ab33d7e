/* The agents' shared collections (see cluster-store.h for their shape). */
#include "cluster/cluster-store.h"

#include <errno.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/bson-read.h"
#include "cluster/member-read.h"
#include "cluster/record-mac.h"
#include "common/redact.h"
#include "engine/mongo-client.h"

/* The documents refused lately, so that one read again at every heartbeat is counted once. */
#define REFUSED_SEEN 64

struct MsCluster {
    mongoc_client_t *client;
    char *database;
    char *redacted;
    /* keys[0] signs, each one is accepted; none: nothing is signed, nothing is checked */
    MsClusterKey keys[MS_CLUSTER_KEYS_MAX];
    size_t n_keys;
    uint64_t refused; /* since the last ms_cluster_take_refusals() */
    char refused_last[MS_CLUSTER_REFUSAL_MAX];
    uint64_t refused_seen[REFUSED_SEEN];
    size_t refused_next;
};

#define COLL_AGENTS "agents"
#define COLL_LEASES "leases"
#define COLL_SNAPSHOTS "snapshots"
#define COLL_RESTORES "restores"
#define COLL_COMMANDS "commands"

#define LEASE_ASSIGNED "assigned"
#define LEASE_RUNNING "running"

/* A single-threaded client, on purpose: with serverSelectionTryOnce (its default) a server that
 * refuses connections fails the call at once, and for five seconds after a failed check the
 * driver fails further calls at once too (its cooldown), so a member that is down costs the
 * agent's event loop nothing. A pool would wait the whole serverSelectionTimeoutMS every time. */
int ms_cluster_open(const char *uri, const char *password, const char *database, MsCluster **ret,
                    MsError *e) {
    bson_error_t berr;
    mongoc_uri_t *u = NULL;
    int r = ms_mongo_uri_parse(uri, password, "cluster", &u, e);
    if (r < 0)
        return r;
    _cleanup_free_ char *redacted = ms_uri_redact(uri);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_CONNECTTIMEOUTMS, MS_CLUSTER_TIMEOUT_MS);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, MS_CLUSTER_TIMEOUT_MS);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, 2 * MS_CLUSTER_TIMEOUT_MS);
    mongoc_uri_set_appname(u, "mongosnapd");
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(u, &berr);
    /* The driver's words may quote the URI: its password never reaches a log. */
    if (!client)
        ms_secret_scrub(berr.message, mongoc_uri_get_password(u));
    mongoc_uri_destroy(u);
    if (!client)
        return ms_error_set(e, EINVAL, "cannot set up a client for the cluster URI '%s': %s",
                            redacted, berr.message);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    MsCluster *c = calloc(1, sizeof(*c));
    if (!c || !(c->database = strdup(database ? database : MS_CLUSTER_DEFAULT_DATABASE))) {
        free(c);
        mongoc_client_destroy(client);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    c->client = client;
    c->redacted = TAKE_PTR(redacted);
    *ret = c;
    return 0;
}

MsCluster *ms_cluster_free(MsCluster *c) {
    if (!c)
        return NULL;
    for (size_t i = 0; i < c->n_keys; i++) {
        explicit_bzero(c->keys[i].bytes, c->keys[i].len);
        free(c->keys[i].bytes);
    }
    mongoc_client_destroy(c->client);
    free(c->database);
    free(c->redacted);
    free(c);
    return NULL;
}

const char *ms_cluster_redacted_uri(const MsCluster *c) {
    return c->redacted;
}

int ms_cluster_add_key(MsCluster *c, const void *key, size_t len, MsError *e) {
    if (c->n_keys >= MS_CLUSTER_KEYS_MAX)
        return ms_error_set(e, E2BIG, "at most %d cluster keys", MS_CLUSTER_KEYS_MAX);
    if (len < MS_CLUSTER_KEY_MIN || len > MS_CLUSTER_KEY_MAX)
        return ms_error_set(e, EINVAL,
                            "a cluster key of %zu bytes: it must have %d to %d; make one with "
                            "'head -c 32 /dev/urandom | base64' and give every node the same",
                            len, MS_CLUSTER_KEY_MIN, MS_CLUSTER_KEY_MAX);
    unsigned char *b = malloc(len);
    if (!b)
        return ms_error_set(e, ENOMEM, "out of memory");
    memcpy(b, key, len);
    c->keys[c->n_keys++] = (MsClusterKey){b, len};
    return 0;
}

bool ms_cluster_signs(const MsCluster *c) {
    return c->n_keys > 0;
}

/* The key this agent signs with (none: a key of no bytes, which signs nothing). */
static const MsClusterKey *signing_key(const MsCluster *c) {
    static const MsClusterKey none = {NULL, 0};
    return c->n_keys > 0 ? &c->keys[0] : &none;
}

/* FNV-1a over the parts, each with its NUL: which document, in which form. */
static uint64_t refusal_hash(const char *collection, const char *id, const char *mac,
                             uint64_t updated) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    const char *parts[] = {collection, id ? id : "", mac ? mac : ""};
    for (size_t i = 0; i < ELEMENTSOF(parts); i++)
        for (const char *p = parts[i];; p++) {
            h = (h ^ (unsigned char) *p) * UINT64_C(0x100000001b3);
            if (!*p)
                break;
        }
    return (h ^ updated) * UINT64_C(0x100000001b3);
}

/* A document that is not taken: counted once, described for the agent's log. */
static void note_refusal(MsCluster *c, const char *collection, const char *id, const char *mac,
                         uint64_t updated, const char *why) {
    uint64_t h = refusal_hash(collection, id, mac, updated);
    for (size_t i = 0; i < REFUSED_SEEN; i++)
        if (c->refused_seen[i] == h)
            return;
    c->refused_seen[c->refused_next] = h;
    c->refused_next = (c->refused_next + 1) % REFUSED_SEEN;
    c->refused++;
    snprintf(c->refused_last, sizeof(c->refused_last), "%s %.100s: %s", collection,
             id ? id : "(no _id)", why);
}

/* A record d that is not taken, named by its _id and known again by its code and time. */
static void refuse_record(MsCluster *c, const char *collection, const bson_t *d, const char *why) {
    note_refusal(c, collection, ms_bson_str(d, "_id"), ms_bson_str(d, "mac"),
                 ms_bson_u64(d, "updated"), why);
}

uint64_t ms_cluster_take_refusals(MsCluster *c, char *last, size_t last_size) {
    uint64_t n = c->refused;
    if (last && last_size > 0)
        snprintf(last, last_size, "%s", n > 0 ? c->refused_last : "");
    c->refused = 0;
    return n;
}

/* A record's or command's code under one key (what: the record, or CommandFields). */
typedef int (*MacOf)(const MsClusterKey *key, const void *what, char *out);

/* Does d carry the code of what under one of this agent's keys? why says what is wrong when
 * not. */
static bool mac_checks_out(const MsCluster *c, const bson_t *d, MacOf mac_of, const void *what,
                           const char **why) {
    const char *have = ms_bson_str(d, "mac");
    if (!have) {
        *why = "not signed; was it written by an agent without [Cluster] SigningKeyCredential=, "
               "or by somebody else?";
        return false;
    }
    for (size_t i = 0; i < c->n_keys; i++) {
        char want[MS_RECORD_MAC_HEX];
        if (mac_of(&c->keys[i], what, want) < 0) {
            *why = "its signature cannot be computed (out of memory?)";
            return false;
        }
        if (ms_record_mac_equal(have, want))
            return true;
    }
    *why = "its signature does not match: changed, or written without this cluster's keys";
    return false;
}

static mongoc_collection_t *coll(MsCluster *c, const char *name) {
    return mongoc_client_get_collection(c->client, c->database, name);
}

static int fail(MsCluster *c, MsError *e, const bson_error_t *berr, const char *what) {
    char context[256];
    snprintf(context, sizeof(context), "%s in the cluster database '%s' at %s", what, c->database,
             c->redacted);
    return ms_mongo_error(NULL, e, berr, context);
}

/* ---- small helpers ---- */
static int dup_str(char **dst, const char *s) {
    if (!s)
        return 0;
    *dst = strdup(s);
    return *dst ? 0 : -ENOMEM;
}

static void append_str(bson_t *b, const char *key, const char *v) {
    if (v)
        BSON_APPEND_UTF8(b, key, v);
    else
        BSON_APPEND_NULL(b, key);
}

static void append_u64(bson_t *b, const char *key, uint64_t v) {
    BSON_APPEND_INT64(b, key, v > INT64_MAX ? INT64_MAX : (int64_t) v);
}

/* Run a find and hand each document to fn. */
static int for_each(MsCluster *c, const char *collection, const bson_t *filter, const bson_t *opts,
                    int (*fn)(const bson_t *doc, void *userdata), void *userdata, MsError *e) {
    mongoc_collection_t *col = coll(c, collection);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    int r = 0;
    while (r >= 0 && mongoc_cursor_next(cur, &doc))
        r = fn(doc, userdata);
    bson_error_t berr;
    if (r >= 0 && mongoc_cursor_error(cur, &berr)) {
        char what[64];
        snprintf(what, sizeof(what), "reading %s", collection);
        r = fail(c, e, &berr, what);
    } else if (r < 0)
        r = ms_error_set(e, -r, "out of memory");
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    return r;
}

/* An update with upsert; ret_matched: documents matched (-EEXIST when the upsert collided with
 * an existing _id, i.e. the document exists but did not match). */
static int update_one(MsCluster *c, const char *collection, const bson_t *filter,
                      const bson_t *update, bool upsert, int64_t *ret_matched, MsError *e) {
    mongoc_collection_t *col = coll(c, collection);
    bson_t opts = BSON_INITIALIZER, reply;
    if (upsert)
        BSON_APPEND_BOOL(&opts, "upsert", true);
    bson_error_t berr;
    bool ok = mongoc_collection_update_one(col, filter, update, &opts, &reply, &berr);
    int r = 0;
    if (!ok) {
        if (berr.code == 11000) /* duplicate key */
            r = -EEXIST;
        else {
            char what[64];
            snprintf(what, sizeof(what), "writing %s", collection);
            r = fail(c, e, &berr, what);
        }
    } else if (ret_matched) {
        int64_t matched = (int64_t) ms_bson_u64(&reply, "matchedCount");
        bson_iter_t it;
        if (bson_iter_init_find(&it, &reply, "upsertedId"))
            matched++;
        *ret_matched = matched;
    }
    bson_destroy(&reply);
    bson_destroy(&opts);
    mongoc_collection_destroy(col);
    return r;
}

/* ---- agents ---- */
void ms_cluster_agent_clear(MsClusterAgent *a) {
    if (!a)
        return;
    free(a->node);
    free(a->member);
    free(a->version);
    for (size_t i = 0; i < a->n_policies; i++) {
        free(a->policy_names[i]);
        free(a->policy_settings[i]);
    }
    free(a->policy_names);
    free(a->policy_settings);
    memset(a, 0, sizeof(*a));
}

void ms_cluster_agents_free(MsClusterAgent *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        ms_cluster_agent_clear(&a[i]);
    free(a);
}

int ms_cluster_heartbeat(MsCluster *c, const MsClusterAgent *self, MsError *e) {
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set, list, item;
    BSON_APPEND_UTF8(&filter, "_id", self->node);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    append_str(&set, "member", self->member);
    append_str(&set, "version", self->version);
    append_u64(&set, "heartbeat", self->heartbeat_usec);
    BSON_APPEND_ARRAY_BEGIN(&set, "policies", &list);
    for (size_t i = 0; i < self->n_policies; i++) {
        char key[24];
        snprintf(key, sizeof(key), "%zu", i);
        BSON_APPEND_DOCUMENT_BEGIN(&list, key, &item);
        BSON_APPEND_UTF8(&item, "name", self->policy_names[i]);
        BSON_APPEND_UTF8(&item, "settings", self->policy_settings[i]);
        bson_append_document_end(&list, &item);
    }
    bson_append_array_end(&set, &list);
    bson_append_document_end(&update, &set);
    int r = update_one(c, COLL_AGENTS, &filter, &update, true, NULL, e);
    bson_destroy(&filter);
    bson_destroy(&update);
    return r;
}

typedef struct AgentList {
    MsClusterAgent *v;
    size_t n;
} AgentList;

static int agent_from_doc(const bson_t *d, void *userdata) {
    AgentList *l = userdata;
    MsClusterAgent *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    l->v = v;
    MsClusterAgent *a = &v[l->n++];
    memset(a, 0, sizeof(*a));
    if (dup_str(&a->node, ms_bson_str(d, "_id")) < 0 || dup_str(&a->member, ms_bson_str(d, "member")) < 0 ||
        dup_str(&a->version, ms_bson_str(d, "version")) < 0)
        return -ENOMEM;
    a->heartbeat_usec = ms_bson_u64(d, "heartbeat");
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, d, "policies") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
            continue;
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&arr, &len, &data);
        bson_t item;
        if (!bson_init_static(&item, data, len))
            continue;
        const char *name = ms_bson_str(&item, "name"), *settings = ms_bson_str(&item, "settings");
        if (!name || !settings)
            continue;
        char **names = realloc(a->policy_names, (a->n_policies + 1) * sizeof(char *));
        if (!names)
            return -ENOMEM;
        a->policy_names = names;
        char **sets = realloc(a->policy_settings, (a->n_policies + 1) * sizeof(char *));
        if (!sets)
            return -ENOMEM;
        a->policy_settings = sets;
        names[a->n_policies] = strdup(name);
        sets[a->n_policies] = strdup(settings);
        a->n_policies++;
        if (!names[a->n_policies - 1] || !sets[a->n_policies - 1])
            return -ENOMEM;
    }
    return 0;
}

int ms_cluster_list_agents(MsCluster *c, MsClusterAgent **ret, size_t *ret_n, MsError *e) {
    AgentList l = {0};
    bson_t filter = BSON_INITIALIZER;
    int r = for_each(c, COLL_AGENTS, &filter, NULL, agent_from_doc, &l, e);
    bson_destroy(&filter);
    if (r < 0) {
        ms_cluster_agents_free(l.v, l.n);
        return r;
    }
    *ret = l.v;
    *ret_n = l.n;
    return 0;
}

/* ---- leases ----
 *
 * A policy's lease is a series of documents, one per claim: {_id: "POLICY#GEN", policy, gen,
 * task, node, state, expires, scheduled, scheduled_task}. The current lease is the one with
 * the highest gen. A claim (or a takeover) inserts generation current+1: the server's unique
 * _id makes exactly one of several claimants win, on any server. A conditional update would be
 * simpler, but FerretDB (our test server) does not apply one atomically: two agents taking over
 * the same expired lease at once both "matched" it. Only the holder writes its own document
 * afterwards (renewal, release), and a renewal then checks that no later generation exists.
 * The stop flag lives apart, in "policies" {_id: policy, stopped}. */

#define LEASE_RELEASED "released"
#define LEASES_KEPT 20 /* generations kept per policy; older ones are pruned */
#define COLL_POLICIES "policies"

void ms_cluster_lease_clear(MsClusterLease *l) {
    if (!l)
        return;
    free(l->policy);
    free(l->task);
    free(l->node);
    free(l->state);
    free(l->scheduled_task);
    free(l->origin);
    memset(l, 0, sizeof(*l));
}

void ms_cluster_leases_free(MsClusterLease *l, size_t n) {
    for (size_t i = 0; i < n; i++)
        ms_cluster_lease_clear(&l[i]);
    free(l);
}

static int lease_from_doc(const bson_t *d, MsClusterLease *l) {
    memset(l, 0, sizeof(*l));
    const char *state = ms_bson_str(d, "state");
    bool released = state && strcmp(state, LEASE_RELEASED) == 0;
    if (dup_str(&l->policy, ms_bson_str(d, "policy")) < 0 ||
        (!released && dup_str(&l->task, ms_bson_str(d, "task")) < 0) ||
        (!released && dup_str(&l->node, ms_bson_str(d, "node")) < 0) ||
        (!released && dup_str(&l->state, state) < 0) ||
        dup_str(&l->scheduled_task, ms_bson_str(d, "scheduled_task")) < 0 ||
        dup_str(&l->origin, ms_bson_str(d, "origin")) < 0)
        return -ENOMEM;
    l->gen = ms_bson_u64(d, "gen");
    l->seq = ms_bson_u64(d, "seq");
    l->expires_usec = released ? 0 : ms_bson_u64(d, "expires");
    l->scheduled_usec = ms_bson_u64(d, "scheduled");
    l->tick_usec = ms_bson_u64(d, "tick");
    return 0;
}

typedef struct LeaseList {
    MsClusterLease *v;
    size_t n;
} LeaseList;

/* Documents arrive sorted by policy, then gen descending: the first of each policy is its
 * lease. */
static int lease_list_add(const bson_t *d, void *userdata) {
    LeaseList *l = userdata;
    const char *policy = ms_bson_str(d, "policy");
    if (!policy || (l->n > 0 && strcmp(l->v[l->n - 1].policy, policy) == 0))
        return 0;
    MsClusterLease *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    l->v = v;
    return lease_from_doc(d, &v[l->n++]);
}

static int stop_flag_add(const bson_t *d, void *userdata) {
    LeaseList *l = userdata;
    const char *policy = ms_bson_str(d, "_id");
    if (!policy)
        return 0;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].policy, policy) == 0) {
            l->v[i].stopped = ms_bson_true(d, "stopped");
            return 0;
        }
    MsClusterLease *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    l->v = v;
    memset(&v[l->n], 0, sizeof(v[l->n]));
    v[l->n].stopped = ms_bson_true(d, "stopped");
    if (!(v[l->n].policy = strdup(policy)))
        return -ENOMEM;
    l->n++;
    return 0;
}

/* The leases of every policy (policy NULL) or one, with their stop flags. */
static int read_leases(MsCluster *c, const char *policy, LeaseList *l, MsError *e) {
    bson_t filter = BSON_INITIALIZER;
    if (policy)
        BSON_APPEND_UTF8(&filter, "policy", policy);
    bson_t *opts = BCON_NEW("sort", "{", "policy", BCON_INT32(1), "gen", BCON_INT32(-1), "}");
    int r = for_each(c, COLL_LEASES, &filter, opts, lease_list_add, l, e);
    bson_destroy(&filter);
    bson_destroy(opts);
    if (r < 0)
        return r;
    bson_t pf = BSON_INITIALIZER;
    if (policy)
        BSON_APPEND_UTF8(&pf, "_id", policy);
    r = for_each(c, COLL_POLICIES, &pf, NULL, stop_flag_add, l, e);
    bson_destroy(&pf);
    return r;
}

int ms_cluster_list_leases(MsCluster *c, MsClusterLease **ret, size_t *ret_n, MsError *e) {
    LeaseList l = {0};
    int r = read_leases(c, NULL, &l, e);
    if (r < 0) {
        ms_cluster_leases_free(l.v, l.n);
        return r;
    }
    *ret = l.v;
    *ret_n = l.n;
    return 0;
}

int ms_cluster_get_lease(MsCluster *c, const char *policy, MsClusterLease *ret, MsError *e) {
    LeaseList l = {0};
    int r = read_leases(c, policy, &l, e);
    if (r >= 0 && l.n == 0)
        r = -ENOENT;
    if (r >= 0) {
        *ret = l.v[0];
        memset(&l.v[0], 0, sizeof(l.v[0]));
    }
    ms_cluster_leases_free(l.v, l.n);
    return r;
}

/* Insert generation cur->gen + 1 of policy's lease for task on node. -EEXIST: another agent
 * inserted that generation first. */
static int insert_lease(MsCluster *c, const char *policy, const MsClusterLease *cur,
                        const char *task, const char *node, uint64_t now, uint64_t lease_usec,
                        bool scheduled, uint64_t tick, const char *origin, uint64_t seq_floor,
                        uint64_t *ret_seq, MsError *e) {
    uint64_t gen = cur->gen + 1;
    uint64_t seq = MS_MAX(cur->seq, seq_floor) + 1;
    char id[512];
    snprintf(id, sizeof(id), "%s#%020" PRIu64, policy, gen);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "policy", policy);
    append_u64(&doc, "gen", gen);
    BSON_APPEND_UTF8(&doc, "task", task);
    BSON_APPEND_UTF8(&doc, "node", node);
    BSON_APPEND_UTF8(&doc, "state", LEASE_ASSIGNED);
    append_u64(&doc, "expires", now + lease_usec);
    append_u64(&doc, "created", now);
    /* The last scheduled tick travels from generation to generation. */
    append_u64(&doc, "scheduled", scheduled ? now : cur->scheduled_usec);
    append_u64(&doc, "tick", scheduled && tick ? tick : cur->tick_usec);
    append_str(&doc, "scheduled_task", scheduled ? task : cur->scheduled_task);
    append_u64(&doc, "seq", seq);
    append_str(&doc, "origin", origin);
    mongoc_collection_t *col = coll(c, COLL_LEASES);
    bson_error_t berr;
    int r = 0;
    if (!mongoc_collection_insert_one(col, &doc, NULL, NULL, &berr))
        r = berr.code == 11000 ? -EEXIST : fail(c, e, &berr, "writing leases");
    if (r == 0 && gen > LEASES_KEPT) {
        /* Best effort: a failed prune only leaves history behind. */
        bson_t *old = BCON_NEW("policy", BCON_UTF8(policy), "gen", "{", "$lt",
                               BCON_INT64((int64_t) (gen - LEASES_KEPT)), "}");
        (void) mongoc_collection_delete_many(col, old, NULL, NULL, NULL);
        bson_destroy(old);
    }
    mongoc_collection_destroy(col);
    bson_destroy(&doc);
    if (r == 0 && ret_seq)
        *ret_seq = seq;
    return r;
}

static bool lease_held(const MsClusterLease *l, uint64_t now) {
    return l->task && l->expires_usec >= now;
}

int ms_cluster_claim(MsCluster *c, const char *policy, const char *task, const char *node,
                     uint64_t now, uint64_t lease_usec, uint64_t tick_window_usec,
                     uint64_t tick_usec, uint64_t seq_floor, uint64_t *ret_seq,
                     MsClusterLease *ret_current, MsError *e) {
    bool scheduled = tick_window_usec > 0 || tick_usec > 0;
    MsClusterLease cur = {0};
    int r = ms_cluster_get_lease(c, policy, &cur, e);
    if (r == -ENOENT)
        r = 0;
    if (r < 0)
        return r;
    if (cur.stopped)
        r = -EPERM;
    else if (lease_held(&cur, now))
        r = -EBUSY;
    else if (scheduled && tick_usec > 0 && cur.tick_usec > 0)
        /* Nominal ticks known on both sides: the tick is taken when the last scheduled claim
         * was for it or a later one, however late this call comes (a persistent timer catching
         * up after a node was down). */
        r = cur.tick_usec >= tick_usec ? -EALREADY : 0;
    else if (scheduled && cur.scheduled_usec > 0 &&
             cur.scheduled_usec + tick_window_usec >= now)
        r = -EALREADY;
    if (r == 0) {
        r = insert_lease(c, policy, &cur, task, node, now, lease_usec, scheduled, tick_usec,
                         scheduled ? "scheduled" : "manual", seq_floor, ret_seq, e);
        if (r == -EEXIST) {
            /* Another agent claimed first: say what it claimed. */
            ms_cluster_lease_clear(&cur);
            r = ms_cluster_get_lease(c, policy, &cur, e);
            if (r >= 0)
                r = scheduled && !lease_held(&cur, now) ? -EALREADY : -EBUSY;
        }
    }
    if (r < 0 && ret_current)
        *ret_current = cur;
    else
        ms_cluster_lease_clear(&cur);
    return r;
}

/* The current lease still names task (no later generation was inserted). */
static int still_current(MsCluster *c, const char *policy, const char *task, MsError *e) {
    MsClusterLease cur = {0};
    int r = ms_cluster_get_lease(c, policy, &cur, e);
    if (r == -ENOENT)
        return -ESTALE;
    if (r < 0)
        return r;
    r = cur.task && strcmp(cur.task, task) == 0 ? 0 : -ESTALE;
    ms_cluster_lease_clear(&cur);
    return r;
}

int ms_cluster_renew(MsCluster *c, const char *policy, const char *task, const char *node,
                     uint64_t now, uint64_t lease_usec, MsError *e) {
    bson_t *filter = BCON_NEW("policy", BCON_UTF8(policy), "task", BCON_UTF8(task), "node",
                              BCON_UTF8(node), "state", "{", "$ne", BCON_UTF8(LEASE_RELEASED), "}");
    bson_t *update = BCON_NEW("$set", "{", "state", BCON_UTF8(LEASE_RUNNING), "expires",
                              BCON_INT64((int64_t) (now + lease_usec)), "updated",
                              BCON_INT64((int64_t) now), "}");
    int64_t matched = 0;
    int r = update_one(c, COLL_LEASES, filter, update, false, &matched, e);
    bson_destroy(filter);
    bson_destroy(update);
    if (r < 0)
        return r;
    if (matched == 0)
        return -ESTALE;
    return still_current(c, policy, task, e);
}

int ms_cluster_release(MsCluster *c, const char *policy, const char *task, MsError *e) {
    bson_t *filter = BCON_NEW("policy", BCON_UTF8(policy), "task", BCON_UTF8(task));
    bson_t *update =
        BCON_NEW("$set", "{", "state", BCON_UTF8(LEASE_RELEASED), "expires", BCON_INT64(0), "}");
    int r = update_one(c, COLL_LEASES, filter, update, false, NULL, e);
    bson_destroy(filter);
    bson_destroy(update);
    return r;
}

int ms_cluster_take_over(MsCluster *c, const char *policy, const char *old_task,
                         const char *new_task, const char *node, uint64_t now, uint64_t lease_usec,
                         uint64_t seq_floor, uint64_t *ret_seq, MsError *e) {
    MsClusterLease cur = {0};
    int r = ms_cluster_get_lease(c, policy, &cur, e);
    if (r == -ENOENT)
        return -ESTALE;
    if (r < 0)
        return r;
    if (cur.stopped || !cur.task || strcmp(cur.task, old_task) != 0 || cur.expires_usec >= now)
        r = -ESTALE; /* released, renewed, or taken over meanwhile */
    else {
        /* The fresh snapshot stands in for the dead one: same origin. */
        r = insert_lease(c, policy, &cur, new_task, node, now, lease_usec, false, 0,
                         cur.origin ? cur.origin : "scheduled", seq_floor, ret_seq, e);
        if (r == -EEXIST)
            r = -ESTALE;
    }
    ms_cluster_lease_clear(&cur);
    return r;
}

int ms_cluster_set_stopped(MsCluster *c, const char *policy, bool stopped, MsError *e) {
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(policy));
    bson_t *update = BCON_NEW("$set", "{", "stopped", BCON_BOOL(stopped), "}");
    int r = update_one(c, COLL_POLICIES, filter, update, true, NULL, e);
    bson_destroy(filter);
    bson_destroy(update);
    return r;
}

/* The record's "mac": its code when this agent signs (computed is what computing it returned),
 * else null, so that an unsigned rewrite of a record signed before does not keep a code that
 * no longer belongs to it. */
static int append_mac(MsCluster *c, bson_t *set, int computed, const char *mac, MsError *e) {
    if (!ms_cluster_signs(c)) {
        BSON_APPEND_NULL(set, "mac");
        return 0;
    }
    if (computed < 0)
        return ms_error_set(e, -computed, "cannot sign a cluster record: %s", strerror(-computed));
    BSON_APPEND_UTF8(set, "mac", mac);
    return 0;
}

/* ---- records ---- */
/* The fields every task record has (catalog.h, MsTaskCore), written and read once for every
 * kind. The id is the document's _id; node is the node that runs it. */
static void append_core(bson_t *set, const MsTaskCore *r, const char *node) {
    append_str(set, "node", node);
    append_str(set, "error", r->error);
    append_u64(set, "created", r->created_usec);
    append_u64(set, "started", r->started_usec);
    append_u64(set, "finished", r->finished_usec);
    append_u64(set, "items_done", r->items_done);
    append_u64(set, "items_total", r->items_total);
    BSON_APPEND_DOUBLE(set, "progress", r->progress_pct);
    append_u64(set, "bytes", r->bytes_transferred);
}

static int core_from_doc(const bson_t *d, MsTaskCore *r) {
    int k = 0;
    k |= dup_str(&r->id, ms_bson_str(d, "_id"));
    k |= dup_str(&r->node, ms_bson_str(d, "node"));
    k |= dup_str(&r->error, ms_bson_str(d, "error"));
    r->created_usec = ms_bson_u64(d, "created");
    r->started_usec = ms_bson_u64(d, "started");
    r->finished_usec = ms_bson_u64(d, "finished");
    r->items_done = ms_bson_u64(d, "items_done");
    r->items_total = ms_bson_u64(d, "items_total");
    r->progress_pct = ms_bson_double(d, "progress");
    r->bytes_transferred = ms_bson_u64(d, "bytes");
    return k < 0 ? -ENOMEM : 0;
}

int ms_cluster_put_snapshot(MsCluster *c, const MsSnapshotRecord *r, uint64_t now, MsError *e) {
    char mac[MS_RECORD_MAC_HEX];
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&filter, "_id", r->id);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    append_core(&set, &r->core, r->node);
    append_str(&set, "policy", r->policy);
    append_str(&set, "archive_key", r->archive_key);
    append_str(&set, "manifest_key", r->manifest_key);
    append_str(&set, "store", r->store);
    BSON_APPEND_UTF8(&set, "state", ms_snapshot_state_to_string(r->state));
    append_u64(&set, "expire", r->expire_usec);
    BSON_APPEND_BOOL(&set, "point_in_time", r->point_in_time);
    BSON_APPEND_UTF8(&set, "verify_state", ms_verify_state_to_string(r->verify_state));
    append_u64(&set, "verify_finished", r->verify_finished_usec);
    append_str(&set, "verify_error", r->verify_error);
    append_u64(&set, "seq", r->seq);
    BSON_APPEND_UTF8(&set, "origin", ms_snapshot_origin_to_string(r->origin));
    append_u64(&set, "detached", r->detached_usec);
    append_str(&set, "parts", r->parts);
    append_u64(&set, "updated", now);
    int k = append_mac(c, &set, ms_record_mac_snapshot(signing_key(c), r, mac), mac, e);
    bson_append_document_end(&update, &set);
    if (k >= 0)
        k = update_one(c, COLL_SNAPSHOTS, &filter, &update, true, NULL, e);
    bson_destroy(&filter);
    bson_destroy(&update);
    return k;
}

static int snapshot_from_doc(const bson_t *d, MsSnapshotRecord **ret) {
    MsSnapshotRecord *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int k = core_from_doc(d, &r->core);
    k |= dup_str(&r->policy, ms_bson_str(d, "policy"));
    k |= dup_str(&r->archive_key, ms_bson_str(d, "archive_key"));
    k |= dup_str(&r->manifest_key, ms_bson_str(d, "manifest_key"));
    k |= dup_str(&r->store, ms_bson_str(d, "store"));
    k |= dup_str(&r->verify_error, ms_bson_str(d, "verify_error"));
    k |= dup_str(&r->parts, ms_bson_str(d, "parts"));
    if (k < 0) {
        ms_snapshot_record_free(r);
        return -ENOMEM;
    }
    r->seq = ms_bson_u64(d, "seq");
    r->detached_usec = ms_bson_u64(d, "detached");
    MsSnapshotOrigin origin = ms_snapshot_origin_from_string(ms_bson_str(d, "origin"));
    r->origin = origin < 0 ? MS_SNAPSHOT_ORIGIN_SCHEDULED : origin;
    MsSnapshotState s = ms_snapshot_state_from_string(ms_bson_str(d, "state"));
    MsVerifyState v = ms_verify_state_from_string(ms_bson_str(d, "verify_state") ?: "");
    if (!r->id || !r->policy || !r->node || s < 0) {
        /* Not one of ours (or written by a newer version with a state we do not know). */
        ms_snapshot_record_free(r);
        *ret = NULL;
        return 0;
    }
    r->state = s;
    r->verify_state = v < 0 ? MS_VERIFY_NEVER : v;
    r->expire_usec = ms_bson_u64(d, "expire");
    r->point_in_time = ms_bson_true(d, "point_in_time");
    r->verify_finished_usec = ms_bson_u64(d, "verify_finished");
    *ret = r;
    return 0;
}

/* The records of a collection read into an array: from_doc makes one of a document (0 with
 * *ret NULL: not a well-formed record, skipped), free_one frees it. */
typedef struct RecordList {
    void **v;
    size_t n;
    int (*from_doc)(const bson_t *d, void **ret);
    void (*free_one)(void *r);
    /* Is the record made of d one to take (false: refused, why says why)? */
    bool (*accept)(const MsCluster *c, const bson_t *d, const void *r, const char **why);
    MsCluster *c;
    const char *collection;
} RecordList;

static int record_list_add(const bson_t *d, void *userdata) {
    RecordList *l = userdata;
    void *r = NULL;
    int k = l->from_doc(d, &r);
    if (k < 0 || !r)
        return k;
    const char *why = NULL;
    if (!l->accept(l->c, d, r, &why)) {
        refuse_record(l->c, l->collection, d, why);
        l->free_one(r);
        return 0;
    }
    void **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v) {
        l->free_one(r);
        return -ENOMEM;
    }
    l->v = v;
    v[l->n++] = r;
    return 0;
}

static int snapshot_from_any(const bson_t *d, void **ret) {
    MsSnapshotRecord *r = NULL;
    int k = snapshot_from_doc(d, &r);
    *ret = r;
    return k;
}

static void snapshot_free_any(void *r) {
    ms_snapshot_record_free(r);
}

static int snapshot_mac_of(const MsClusterKey *key, const void *r, char *out) {
    return ms_record_mac_snapshot(key, r, out);
}

/* Its files are its own, and when this agent signs, it is signed. */
static bool snapshot_accept(const MsCluster *c, const bson_t *d, const void *r, const char **why) {
    const MsSnapshotRecord *s = r;
    if (!ms_record_keys_name_it(s)) {
        *why = "its store keys name another snapshot's files (a record names only its own)";
        return false;
    }
    if (!ms_cluster_signs(c))
        return true;
    return mac_checks_out(c, d, snapshot_mac_of, s, why);
}

/* The records of a collection written at or after since (0: all), oldest first. */
static int read_since(MsCluster *c, const char *collection, uint64_t since,
                      int (*fn)(const bson_t *doc, void *userdata), void *userdata, MsError *e) {
    bson_t filter = BSON_INITIALIZER, gte;
    if (since > 0) {
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "updated", &gte);
        append_u64(&gte, "$gte", since);
        bson_append_document_end(&filter, &gte);
    }
    bson_t *opts = BCON_NEW("sort", "{", "created", BCON_INT32(1), "_id", BCON_INT32(1), "}");
    int r = for_each(c, collection, &filter, opts, fn, userdata, e);
    bson_destroy(&filter);
    bson_destroy(opts);
    return r;
}

/* read_since() into a RecordList: the array, or nothing on failure. */
static int list_records(MsCluster *c, const char *collection, uint64_t since, RecordList *l,
                        void ***ret, size_t *ret_n, MsError *e) {
    int r = read_since(c, collection, since, record_list_add, l, e);
    if (r < 0) {
        for (size_t i = 0; i < l->n; i++)
            l->free_one(l->v[i]);
        free(l->v);
        return r;
    }
    *ret = l->v;
    *ret_n = l->n;
    return 0;
}

int ms_cluster_list_snapshots(MsCluster *c, uint64_t since, MsSnapshotRecord ***ret, size_t *ret_n,
                              MsError *e) {
    RecordList l = {.from_doc = snapshot_from_any,
                    .free_one = snapshot_free_any,
                    .accept = snapshot_accept,
                    .c = c,
                    .collection = COLL_SNAPSHOTS};
    return list_records(c, COLL_SNAPSHOTS, since, &l, (void ***) ret, ret_n, e);
}

static int copy_first(const bson_t *d, void *userdata) {
    bson_t **out = userdata;
    if (!*out && !(*out = bson_copy(d)))
        return -ENOMEM;
    return 0;
}

/* ms_cluster_mark_snapshot() when records are signed: the record is read, checked, changed and
 * signed again, and written only if it is still the one read (its code is the filter). */
static int mark_signed(MsCluster *c, const bson_t *filter, MsSnapshotState state, const char *error,
                       uint64_t now, int64_t *ret_matched, MsError *e) {
    bson_t *doc = NULL;
    *ret_matched = 0;
    int r = for_each(c, COLL_SNAPSHOTS, filter, NULL, copy_first, &doc, e);
    if (r < 0 || !doc) {
        if (doc)
            bson_destroy(doc);
        return r;
    }
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *rec = NULL;
    r = snapshot_from_doc(doc, &rec);
    const char *why = "not a snapshot record";
    if (r >= 0 && (!rec || !snapshot_accept(c, doc, rec, &why))) {
        refuse_record(c, COLL_SNAPSHOTS, doc, why);
        bson_destroy(doc);
        return 0; /* not matched: a record this agent does not take is not changed either */
    }
    char *old_mac = r >= 0 ? strdup(ms_bson_str(doc, "mac")) : NULL;
    bson_destroy(doc);
    if (r < 0 || !old_mac || ms_task_core_finish(&rec->core, error ? error : "", false, now) < 0) {
        free(old_mac);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    rec->state = state;
    char mac[MS_RECORD_MAC_HEX];
    r = ms_record_mac_snapshot(signing_key(c), rec, mac);
    if (r < 0) {
        free(old_mac);
        return ms_error_set(e, -r, "cannot sign a cluster record: %s", strerror(-r));
    }
    bson_t *f = BCON_NEW("_id", BCON_UTF8(rec->id), "mac", BCON_UTF8(old_mac));
    bson_t *update =
        BCON_NEW("$set", "{", "state", BCON_UTF8(ms_snapshot_state_to_string(state)), "error",
                 BCON_UTF8(rec->error), "finished", BCON_INT64((int64_t) rec->finished_usec),
                 "updated", BCON_INT64((int64_t) now), "mac", BCON_UTF8(mac), "}");
    r = update_one(c, COLL_SNAPSHOTS, f, update, false, ret_matched, e);
    bson_destroy(f);
    bson_destroy(update);
    free(old_mac);
    return r;
}

int ms_cluster_mark_snapshot(MsCluster *c, const char *id, MsSnapshotState state, const char *error,
                             uint64_t now, MsError *e) {
    bson_t *filter =
        BCON_NEW("_id", BCON_UTF8(id), "state", "{", "$in", "[",
                 BCON_UTF8(ms_snapshot_state_to_string(MS_SNAPSHOT_QUEUED)),
                 BCON_UTF8(ms_snapshot_state_to_string(MS_SNAPSHOT_RUNNING)), "]", "}");
    bson_t *update = BCON_NEW("$set", "{", "state", BCON_UTF8(ms_snapshot_state_to_string(state)),
                              "error", BCON_UTF8(error ? error : ""), "finished",
                              BCON_INT64((int64_t) now), "updated", BCON_INT64((int64_t) now), "}");
    int64_t matched = 0;
    int r = ms_cluster_signs(c) ? mark_signed(c, filter, state, error, now, &matched, e)
                                : update_one(c, COLL_SNAPSHOTS, filter, update, false, &matched, e);
    bson_destroy(filter);
    bson_destroy(update);
    if (r < 0)
        return r;
    return matched > 0 ? 0 : -ESTALE;
}

int ms_cluster_put_restore(MsCluster *c, const MsRestoreRecord *r, const char *node, uint64_t now,
                           MsError *e) {
    char mac[MS_RECORD_MAC_HEX];
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&filter, "_id", r->id);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    append_core(&set, &r->core, node);
    append_str(&set, "source_snapshot", r->source_snapshot);
    append_str(&set, "target", r->target); /* redacted already: the catalog's copy */
    BSON_APPEND_UTF8(&set, "state", ms_restore_state_to_string(r->state));
    append_str(&set, "options", r->options);
    append_u64(&set, "updated", now);
    int k = append_mac(c, &set, ms_record_mac_restore(signing_key(c), r, node, mac), mac, e);
    bson_append_document_end(&update, &set);
    if (k >= 0)
        k = update_one(c, COLL_RESTORES, &filter, &update, true, NULL, e);
    bson_destroy(&filter);
    bson_destroy(&update);
    return k;
}

static int restore_from_any(const bson_t *d, void **ret) {
    *ret = NULL;
    MsRestoreState s = ms_restore_state_from_string(ms_bson_str(d, "state"));
    const char *id = ms_bson_str(d, "_id"), *src = ms_bson_str(d, "source_snapshot"),
               *target = ms_bson_str(d, "target"), *node = ms_bson_str(d, "node");
    if (s < 0 || !id || !src || !target || !node)
        return 0;
    MsRestoreRecord *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int k = core_from_doc(d, &r->core);
    k |= dup_str(&r->source_snapshot, src);
    k |= dup_str(&r->target, target);
    k |= dup_str(&r->options, ms_bson_str(d, "options"));
    if (k < 0) {
        ms_restore_record_free(r);
        return -ENOMEM;
    }
    r->state = s;
    *ret = r;
    return 0;
}

static void restore_free_any(void *r) {
    ms_restore_record_free(r);
}

static int restore_mac_of(const MsClusterKey *key, const void *r, char *out) {
    const MsRestoreRecord *x = r;
    return ms_record_mac_restore(key, x, x->node, out);
}

static bool restore_accept(const MsCluster *c, const bson_t *d, const void *r, const char **why) {
    return !ms_cluster_signs(c) || mac_checks_out(c, d, restore_mac_of, r, why);
}

int ms_cluster_list_restores(MsCluster *c, uint64_t since, MsRestoreRecord ***ret, size_t *ret_n,
                             MsError *e) {
    RecordList l = {.from_doc = restore_from_any,
                    .free_one = restore_free_any,
                    .accept = restore_accept,
                    .c = c,
                    .collection = COLL_RESTORES};
    return list_records(c, COLL_RESTORES, since, &l, (void ***) ret, ret_n, e);
}

/* ---- commands ---- */
static void command_clear(MsClusterCommand *c) {
    free(c->op);
    free(c->policy);
    free(c->task);
    free(c->from);
}

void ms_cluster_commands_free(MsClusterCommand *c, size_t n) {
    for (size_t i = 0; i < n; i++)
        command_clear(&c[i]);
    free(c);
}

int ms_cluster_send_command(MsCluster *c, const char *to_node, const MsClusterCommand *cmd,
                            uint64_t now, MsError *e) {
    bson_t doc = BSON_INITIALIZER;
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    BSON_APPEND_OID(&doc, "_id", &oid);
    BSON_APPEND_UTF8(&doc, "node", to_node);
    append_str(&doc, "op", cmd->op);
    append_str(&doc, "policy", cmd->policy);
    append_str(&doc, "task", cmd->task);
    append_str(&doc, "from", cmd->from);
    append_u64(&doc, "created", now);
    char id[25], mac[MS_RECORD_MAC_HEX];
    bson_oid_to_string(&oid, id);
    int r = append_mac(c, &doc,
                       ms_record_mac_command(signing_key(c), id, to_node, cmd->op, cmd->policy,
                                             cmd->task, cmd->from, now, mac),
                       mac, e);
    if (r < 0) {
        bson_destroy(&doc);
        return r;
    }
    mongoc_collection_t *col = coll(c, COLL_COMMANDS);
    bson_error_t berr;
    if (!mongoc_collection_insert_one(col, &doc, NULL, NULL, &berr))
        r = fail(c, e, &berr, "writing commands");
    mongoc_collection_destroy(col);
    bson_destroy(&doc);
    return r;
}

/* A command as read, before it is removed. */
typedef struct ReadCommand {
    MsClusterCommand cmd;
    bson_oid_t id;
    const char *refused; /* NULL: to be carried out; else why not (a static text) */
} ReadCommand;

typedef struct CommandList {
    MsCluster *c;
    ReadCommand *v;
    size_t n;
    uint64_t now;
} CommandList;

typedef struct CommandFields {
    const char *id, *to_node;
    const MsClusterCommand *cmd;
    uint64_t created;
} CommandFields;

static int command_mac_of(const MsClusterKey *key, const void *what, char *out) {
    const CommandFields *f = what;
    return ms_record_mac_command(key, f->id, f->to_node, f->cmd->op, f->cmd->policy, f->cmd->task,
                                 f->cmd->from, f->created, out);
}

/* Is the command d (cmd as read from it) one to carry out? Only when this agent signs is any
 * refused: it must be signed with one of its keys, sent less than
 * MS_CLUSTER_COMMAND_MAX_AGE_USEC ago and not from further ahead than clocks drift (a signed
 * command copied back after it was carried out is not taken again after that). */
static const char *command_refusal(const CommandList *l, const bson_t *d, const bson_oid_t *oid,
                                   const MsClusterCommand *cmd) {
    const MsCluster *c = l->c;
    if (!ms_cluster_signs(c))
        return NULL;
    char id[25];
    bson_oid_to_string(oid, id);
    CommandFields f = {id, ms_bson_str(d, "node"), cmd, ms_bson_u64(d, "created")};
    const char *why = NULL;
    if (!mac_checks_out(c, d, command_mac_of, &f, &why))
        return why;
    if (f.created + MS_CLUSTER_COMMAND_MAX_AGE_USEC < l->now)
        return "sent too long ago (a command waits a day at most)";
    if (f.created > l->now + MS_CLUSTER_COMMAND_MAX_AHEAD_USEC)
        return "sent from the future: the sender's clock is ahead of this node's";
    return NULL;
}

static int command_list_add(const bson_t *d, void *userdata) {
    CommandList *l = userdata;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, "_id") || !BSON_ITER_HOLDS_OID(&it))
        return 0;
    ReadCommand *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    l->v = v;
    ReadCommand *x = &v[l->n++];
    memset(x, 0, sizeof(*x));
    bson_oid_copy(bson_iter_oid(&it), &x->id);
    MsClusterCommand *cmd = &x->cmd;
    if (dup_str(&cmd->op, ms_bson_str(d, "op")) < 0 ||
        dup_str(&cmd->policy, ms_bson_str(d, "policy")) < 0 ||
        dup_str(&cmd->task, ms_bson_str(d, "task")) < 0 || dup_str(&cmd->from, ms_bson_str(d, "from")) < 0)
        return -ENOMEM;
    x->refused = command_refusal(l, d, &x->id, cmd);
    if (x->refused) {
        char what[256];
        snprintf(what, sizeof(what), "%.40s of %.100s from node %.40s",
                 cmd->op ? cmd->op : "(no op)", cmd->task ? cmd->task : "(no task)",
                 cmd->from ? cmd->from : "(unnamed)");
        note_refusal(l->c, COLL_COMMANDS, what, ms_bson_str(d, "mac"), ms_bson_u64(d, "created"),
                     x->refused);
    }
    return 0;
}

int ms_cluster_take_commands(MsCluster *c, const char *node, uint64_t now, MsClusterCommand **ret,
                             size_t *ret_n, MsError *e) {
    CommandList l = {.c = c, .now = now};
    bson_t *filter = BCON_NEW("node", BCON_UTF8(node));
    int r = for_each(c, COLL_COMMANDS, filter, NULL, command_list_add, &l, e);
    bson_destroy(filter);
    /* Each is executed by whoever deletes it: an agent restarted twice in a row would otherwise
     * run a command twice. */
    MsClusterCommand *out = NULL;
    size_t n_out = 0;
    mongoc_collection_t *col = coll(c, COLL_COMMANDS);
    for (size_t i = 0; r >= 0 && i < l.n; i++) {
        bson_t *f = BCON_NEW("_id", BCON_OID(&l.v[i].id));
        bson_t reply;
        bson_error_t berr;
        bool ok = mongoc_collection_delete_one(col, f, NULL, &reply, &berr);
        bson_destroy(f);
        if (!ok)
            r = fail(c, e, &berr, "removing a command");
        else if (ms_bson_u64(&reply, "deletedCount") == 1 && !l.v[i].refused) {
            MsClusterCommand *v = realloc(out, (n_out + 1) * sizeof(*v));
            if (!v)
                r = ms_error_set(e, ENOMEM, "out of memory");
            else {
                out = v;
                out[n_out++] = l.v[i].cmd;
                memset(&l.v[i].cmd, 0, sizeof(l.v[i].cmd));
            }
        }
        bson_destroy(&reply);
    }
    mongoc_collection_destroy(col);
    for (size_t i = 0; i < l.n; i++)
        command_clear(&l.v[i].cmd);
    free(l.v);
    if (r < 0) {
        ms_cluster_commands_free(out, n_out);
        return r;
    }
    *ret = out;
    *ret_n = n_out;
    return 0;
}

/* ---- the replica set ---- */
int ms_cluster_members(MsCluster *c, MsClusterMember **ret, size_t *ret_n, MsError *e) {
    char where[512];
    snprintf(where, sizeof(where), "the cluster database '%s' at %s", c->database, c->redacted);
    return ms_cluster_members_read(c->client, where, ret, ret_n, e);
}

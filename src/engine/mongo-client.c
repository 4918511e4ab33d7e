/* MongoDB client pool and driver-error translation. */
#include "mongo-client.h"

#include <string.h>

#include "common/log.h"
#include "common/redact.h"

/* Server error codes (src/mongo/base/error_codes.yml). */
#define MONGO_SERVER_ERROR_UNAUTHORIZED 13
#define MONGO_SERVER_ERROR_AUTHENTICATION_FAILED 18

#define MS_APPNAME "mongosnap"

struct MsMongo {
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char *redacted;
    char *password; /* kept only to scrub it out of driver messages */
};

static void mongo_log_handler(mongoc_log_level_t level, const char *domain, const char *message,
                              void *data) {
    /* Driver chatter is for debugging; our own messages say what failed and why. */
    log_debug("mongoc %s: %s", domain, message);
}

void ms_mongo_init_logging(void) {
    mongoc_log_set_handler(mongo_log_handler, NULL);
}

int ms_mongo_uri_parse(const char *uri, const char *password, const char *what, mongoc_uri_t **ret,
                       MsError *e) {
    bson_error_t berr;
    mongoc_uri_t *u = mongoc_uri_new_with_error(uri, &berr);
    if (!u) {
        _cleanup_free_ char *redacted = ms_uri_redact(uri);
        return ms_error_set(e, EINVAL,
                            "the %s URI '%s' is not valid: write it as "
                            "mongodb://[user@]host[:port][,host...]/[db][?options]",
                            what, redacted ? redacted : "?");
    }
    if (password && !mongoc_uri_set_password(u, password)) {
        mongoc_uri_destroy(u);
        return ms_error_set(e, EINVAL, "the %s password from the credential file is not valid "
                            "UTF-8", what);
    }
    *ret = u;
    return 0;
}

int ms_mongo_open(const char *uri, const char *password, unsigned max_clients, MsMongo **ret,
                  MsError *e) {
    bson_error_t berr;
    mongoc_uri_t *u = NULL;
    int parsed = ms_mongo_uri_parse(uri, password, "MongoDB", &u, e);
    if (parsed < 0)
        return parsed;
    _cleanup_free_ char *redacted = ms_uri_redact(uri);
    /* A user without a password would reach libmongoc's SCRAM code with nothing to hash
     * (it crashes in 1.23); the mechanisms that need no password are the exceptions. */
    const char *user = mongoc_uri_get_username(u);
    const char *mech = mongoc_uri_get_auth_mechanism(u);
    const char *have_pw = mongoc_uri_get_password(u);
    bool needs_password = !mech || strncmp(mech, "SCRAM", strlen("SCRAM")) == 0 ||
                          strcmp(mech, "PLAIN") == 0 || strcmp(mech, "MONGODB-CR") == 0;
    if (user && *user && needs_password && (!have_pw || !*have_pw)) {
        int r = ms_error_set(e, EINVAL,
                             "the URI '%s' names user '%s' but carries no password, and none was given",
                             redacted, user);
        mongoc_uri_destroy(u);
        return r;
    }
    MsMongo *m = calloc(1, sizeof(*m));
    if (!m) {
        mongoc_uri_destroy(u);
        return ms_error_set(e, ENOMEM, "out of memory");
    }
    m->uri = u;
    m->redacted = TAKE_PTR(redacted);
    const char *pw = mongoc_uri_get_password(u);
    if (pw && *pw)
        m->password = strdup(pw);
    m->pool = mongoc_client_pool_new_with_error(u, &berr);
    if (!m->pool) {
        int r = ms_mongo_error(m, e, &berr, "cannot set up connections");
        ms_mongo_free(m);
        return r;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(m->pool, MS_APPNAME);
    if (max_clients > 0)
        mongoc_client_pool_max_size(m->pool, max_clients);
    *ret = m;
    return 0;
}

MsMongo *ms_mongo_free(MsMongo *m) {
    if (!m)
        return NULL;
    if (m->pool)
        mongoc_client_pool_destroy(m->pool);
    mongoc_uri_destroy(m->uri);
    free(m->redacted);
    ms_secret_free(m->password);
    free(m);
    return NULL;
}

const char *ms_mongo_redacted_uri(MsMongo *m) {
    return m->redacted;
}

mongoc_client_t *ms_mongo_pop(MsMongo *m) {
    return mongoc_client_pool_pop(m->pool);
}

void ms_mongo_push(MsMongo *m, mongoc_client_t *c) {
    if (c)
        mongoc_client_pool_push(m->pool, c);
}

int ms_mongo_one_open(const char *uri, const char *password, MsMongoOne *ret, MsError *e) {
    *ret = (MsMongoOne) {0};
    int r = ms_mongo_open(uri, password, 1, &ret->mongo, e);
    if (r < 0)
        return r;
    ret->client = ms_mongo_pop(ret->mongo);
    return 0;
}

void ms_mongo_one_close(MsMongoOne *one) {
    if (!one || !one->mongo)
        return;
    ms_mongo_push(one->mongo, one->client);
    one->mongo = ms_mongo_free(one->mongo);
    one->client = NULL;
}

int ms_mongo_error(MsMongo *m, MsError *e, const bson_error_t *berr, const char *context) {
    char msg[sizeof(berr->message)];
    memcpy(msg, berr->message, sizeof(msg));
    msg[sizeof(msg) - 1] = '\0';
    if (m)
        ms_secret_scrub(msg, m->password);
    const char *where = m ? m->redacted : "MongoDB";

    bool unreachable = berr->domain == MONGOC_ERROR_SERVER_SELECTION ||
                       (berr->domain == MONGOC_ERROR_STREAM);
    bool auth = (berr->domain == MONGOC_ERROR_CLIENT && berr->code == MONGOC_ERROR_CLIENT_AUTHENTICATE) ||
                berr->code == MONGO_SERVER_ERROR_AUTHENTICATION_FAILED;
    /* Server selection also fails when the login fails: the driver says so in the text. */
    if (unreachable && strstr(msg, "uthentication failed"))
        auth = true;
    if (auth)
        return ms_error_set(e, EACCES,
                            "%s: %s refused the login (%s); check the user name in the URI and the "
                            "password in the credential file",
                            context, where, msg);
    if (berr->code == MONGO_SERVER_ERROR_UNAUTHORIZED)
        return ms_error_set(e, EPERM,
                            "%s: the user is not allowed to do this on %s (%s); grant it the "
                            "backup/restore roles",
                            context, where, msg);
    if (unreachable)
        return ms_error_set(e, EHOSTUNREACH,
                            "%s: cannot reach MongoDB at %s (%s); check that the server runs and "
                            "that the hosts and ports in the URI are right",
                            context, where, msg);
    return ms_error_set(e, EIO, "%s: %s (server %s)", context, msg, where);
}

int ms_mongo_ping(MsMongo *m, mongoc_client_t *c, char **ret_server_version, MsError *e) {
    bson_error_t berr;
    bson_t reply;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &berr);
    bson_destroy(cmd);
    bson_destroy(&reply);
    if (!ok)
        return ms_mongo_error(m, e, &berr, "connecting");
    cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &berr);
    bson_destroy(cmd);
    char *version = NULL;
    bson_iter_t it;
    if (ok && bson_iter_init_find(&it, &reply, "version") && BSON_ITER_HOLDS_UTF8(&it))
        version = strdup(bson_iter_utf8(&it, NULL));
    bson_destroy(&reply);
    if (!ok)
        return ms_mongo_error(m, e, &berr, "asking the server for its version");
    *ret_server_version = version ? version : strdup("unknown");
    return 0;
}

int ms_mongo_hello_cluster_role(const bson_t *hello) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, hello, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
        strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0)
        return 1;
    if (bson_iter_init_find(&it, hello, "configsvr"))
        return 2;
    return 0;
}

static bool has_document(mongoc_client_t *c, const char *coll, const bson_t *filter) {
    mongoc_collection_t *col = mongoc_client_get_collection(c, "config", coll);
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    const bson_t *doc;
    bool found = mongoc_cursor_next(cur, &doc);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(col);
    return found;
}

int ms_mongo_cluster_role(mongoc_client_t *c) {
    bson_t *cmd = BCON_NEW("hello", BCON_INT32(1));
    bson_t reply;
    int role = 0;
    if (mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, NULL))
        role = ms_mongo_hello_cluster_role(&reply);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return role;
}

bool ms_mongo_is_sharded_source(mongoc_client_t *c) {
    if (ms_mongo_cluster_role(c) > 0)
        return true;
    bson_t any = BSON_INITIALIZER;
    bson_t *with_id = BCON_NEW("clusterId", "{", "$exists", BCON_BOOL(true), "}");
    bool sharded = has_document(c, "shards", &any) && has_document(c, "version", with_id);
    bson_destroy(with_id);
    bson_destroy(&any);
    return sharded;
}

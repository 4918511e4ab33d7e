/* Reading a replica set's members from a server (member-read.h). */
#include "member-read.h"

#include "engine/mongo-client.h"

/* Server error codes (src/mongo/base/error_codes.yml) meaning "not a replica set we can rank":
 * CommandNotFound, NoReplicationEnabled, NotYetInitialized. */
#define MONGO_ERROR_COMMAND_NOT_FOUND 59
#define MONGO_ERROR_NO_REPLICATION_ENABLED 76
#define MONGO_ERROR_NOT_YET_INITIALIZED 94

static int admin_command(mongoc_client_t *client, const char *where, const char *name,
                         bson_t *reply, MsError *e) {
    bson_t *cmd = BCON_NEW(name, BCON_INT32(1));
    bson_error_t berr;
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, reply, &berr);
    bson_destroy(cmd);
    if (ok)
        return 0;
    if (berr.domain == MONGOC_ERROR_SERVER && (berr.code == MONGO_ERROR_COMMAND_NOT_FOUND ||
                                               berr.code == MONGO_ERROR_NO_REPLICATION_ENABLED ||
                                               berr.code == MONGO_ERROR_NOT_YET_INITIALIZED))
        return -EOPNOTSUPP;
    char context[512];
    snprintf(context, sizeof(context), "running %s in %s", name, where);
    return ms_mongo_error(NULL, e, &berr, context);
}

static int members_from_hello(mongoc_client_t *client, const char *where, MsClusterMember **ret,
                              size_t *ret_n, MsError *e) {
    bson_t hello;
    int r = admin_command(client, where, "hello", &hello, e);
    if (r >= 0) {
        r = ms_cluster_members_from_hello(&hello, ret, ret_n, e);
        if (r == -EBADMSG)
            r = ms_error_set(e, EOPNOTSUPP, "%s is not a replica set", where);
    } else if (r == -EOPNOTSUPP)
        r = ms_error_set(e, EOPNOTSUPP, "%s reports no replica-set members", where);
    bson_destroy(&hello);
    return r;
}

int ms_cluster_members_read(mongoc_client_t *client, const char *where, MsClusterMember **ret,
                            size_t *ret_n, MsError *e) {
    bson_t status, config;
    int r = admin_command(client, where, "replSetGetStatus", &status, e);
    if (r < 0) {
        bson_destroy(&status);
        if (r == -EOPNOTSUPP || r == -EACCES) {
            ms_error_clear(e);
            return members_from_hello(client, where, ret, ret_n, e);
        }
        return r;
    }
    r = admin_command(client, where, "replSetGetConfig", &config, e);
    if (r >= 0)
        r = ms_cluster_members_parse(&status, &config, ret, ret_n, e);
    else if (r == -EOPNOTSUPP)
        r = ms_error_set(e, EOPNOTSUPP, "%s reports no replica-set configuration", where);
    bson_destroy(&status);
    bson_destroy(&config);
    return r;
}

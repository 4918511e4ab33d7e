/* Connections to MongoDB: a client pool from a URI (password kept out of every message),
 * and the translation of driver errors into messages an operator can act on. */
#pragma once

#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "common/error.h"

typedef struct MsMongo MsMongo;

/* Parse uri (what names it in messages: "MongoDB", "cluster"), with password, when non-NULL,
 * in place of the URI's own. The driver's own message may quote the URI, so a malformed one is
 * said to be malformed, redacted, and no more. */
int ms_mongo_uri_parse(const char *uri, const char *password, const char *what, mongoc_uri_t **ret,
                       MsError *e);

/* uri may carry a password; password, when non-NULL, replaces it (from a credential file).
 * max_clients bounds the pool. Nothing is contacted yet. */
int ms_mongo_open(const char *uri, const char *password, unsigned max_clients, MsMongo **ret,
                  MsError *e);
MsMongo *ms_mongo_free(MsMongo *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsMongo *, ms_mongo_free);

/* The URI without secrets, for messages and manifests. */
const char *ms_mongo_redacted_uri(MsMongo *m);

mongoc_client_t *ms_mongo_pop(MsMongo *m);
void ms_mongo_push(MsMongo *m, mongoc_client_t *c);

/* One client for a few commands (a shard list, a balancer switch, a role check): the pool of
 * one is opened and its client taken by ms_mongo_one_open, both given back by
 * ms_mongo_one_close (safe on a zeroed or failed one, and as a _cleanup_ function). */
typedef struct MsMongoOne {
    MsMongo *mongo;
    mongoc_client_t *client;
} MsMongoOne;
int ms_mongo_one_open(const char *uri, const char *password, MsMongoOne *ret, MsError *e);
void ms_mongo_one_close(MsMongoOne *one);

/* Reach the server (authenticating) and return its version ("7.0.2"). Fails with
 * -EHOSTUNREACH (cannot reach), -EACCES (login refused) or -EIO, with a message. */
int ms_mongo_ping(MsMongo *m, mongoc_client_t *c, char **ret_server_version, MsError *e);
/* Whether the server c is connected to fronts a sharded cluster: a mongos (hello says msg
 * "isdbgrid"), a config server (hello has "configsvr"), or a server holding a config
 * server's data (config.shards lists a shard and config.version names the cluster; how the
 * tests' stand-in config server, which answers hello as a plain server, is known). Any error
 * reading: not sharded (the snapshot then says what is wrong with the server). */
bool ms_mongo_is_sharded_source(mongoc_client_t *c);
/* From a hello reply: 1 for a mongos, 2 for a config server, 0 otherwise. */
int ms_mongo_hello_cluster_role(const bson_t *hello);
/* The same asked of the server c is connected to (0 when hello fails). */
int ms_mongo_cluster_role(mongoc_client_t *c);

/* Fill e from a driver error with context ("reading shop.orders"), classify it (see above)
 * and scrub any secret out of the text. */
int ms_mongo_error(MsMongo *m, MsError *e, const bson_error_t *berr, const char *context);

/* Install a mongoc log handler that routes driver messages to our log at debug level. */
void ms_mongo_init_logging(void);

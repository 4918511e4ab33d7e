/* A replica set's members, as the server a client is connected to reports them: replSetGetStatus
 * with replSetGetConfig, or, where those are missing or refused (FerretDB; a user without the
 * clusterMonitor role), what hello says. The agent ranks its own replica set with it
 * (cluster-store.c) and a cluster snapshot a shard's (engine/cluster.c). */
#pragma once

#include <mongoc/mongoc.h>

#include "cluster/member-select.h"
#include "common/error.h"

/* where names the server in messages ("the cluster database 'mongosnap' at mongodb://h:1/",
 * a shard's URI), without secrets. Errors: -EOPNOTSUPP when the server is no replica set (a
 * standalone) or reports no members, -EACCES when it refuses the login, -EHOSTUNREACH or -EIO
 * as ms_mongo_error() classifies the driver's error. */
int ms_cluster_members_read(mongoc_client_t *client, const char *where, MsClusterMember **ret,
                            size_t *ret_n, MsError *e);

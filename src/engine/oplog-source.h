/* Reading a server's oplog (local.oplog.rs) where the snapshot and the follower both need it:
 * whether it is there, its oldest and newest entries, and an entry's position. */
#pragma once

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "common/error.h"
#include "manifest.h"
#include "mongo-client.h"

#define MS_OPLOG_DB "local"
#define MS_OPLOG_COLLECTION "oplog.rs"

/* Whether the server has local.oplog.rs. */
int ms_oplog_exists(MsMongo *m, mongoc_client_t *c, bool *ret, MsError *e);
/* The ts of the oldest (newest false) or newest entry; *ret_exists false for an empty oplog. */
int ms_oplog_edge(MsMongo *m, mongoc_client_t *c, bool newest, bool *ret_exists,
                  MsOplogPosition *ret, MsError *e);
/* The ts of the newest entry matching filter (*ret_exists false for none). */
int ms_oplog_newest_of(MsMongo *m, mongoc_client_t *c, const bson_t *filter, bool *ret_exists,
                       MsOplogPosition *ret, MsError *e);
/* {key: {t, i}} appended to b: how progress messages and manifests write a position. */
void ms_oplog_position_append(bson_t *b, const char *key, MsOplogPosition p);
/* An entry's ts; {0, 0} when it has none. */
MsOplogPosition ms_oplog_entry_position(const bson_t *entry);

/* Applying an oplog update to a document held in memory: what a server does with the
 * {$set, $unset} form oplog plans give (oplog-plan.h; a "$v: 2" delta is translated to it
 * there). Used where the restore replays entries without a server to write to: the config
 * data of a cluster snapshot, brought to the cluster's consistency point before its shard
 * names are mapped (cluster.c). */
#pragma once

#include <bson/bson.h>

#include "common/error.h"

/* ret (uninitialized) receives doc with update applied, as a server would store it: a field set
 * keeps its place, a new one comes last, a path through missing documents creates them, $unset of
 * a missing path changes nothing (of an array element, makes it null), array elements are addressed by index ("history.0.shard").
 * -ENOTSUP for any other operator and for a $set past an array's end; -EINVAL for a $set through
 * a value that is not a document or array (the server refuses it too). ret is left empty on
 * error. */
int ms_doc_update_apply(const bson_t *doc, const bson_t *update, bson_t *ret, MsError *e);

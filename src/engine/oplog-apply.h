/* Replaying oplog entries as ordinary commands (insert/update/delete and DDL), since a restore
 * target may not offer applyOps. Namespaces go through the restore's filter and renames. */
#pragma once

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include "common/error.h"
#include "nsfilter.h"

typedef struct MsOplogApplyStats {
    uint64_t applied;
    uint64_t skipped; /* no-ops and namespaces not selected */
} MsOplogApplyStats;

/* Apply one entry. Unknown operations fail with a message naming the entry's op and ts. */
int ms_oplog_apply_entry(mongoc_client_t *c, const MsNsFilter *filter, const bson_t *entry,
                         MsOplogApplyStats *stats, MsError *e);

/* Translate an update's "$v: 2" delta ({diff: {...}}) into a classic {$set, $unset} update.
 * Array resizes ("l") have no $set/$unset form: -ENOTSUP. */
int ms_oplog_diff_to_update(const bson_t *diff, bson_t *ret_update, MsError *e);

/* Oplog replay, decided without a server: what each entry does to the target, every namespace it
 * names passed through the restore's one mapping (nsmap.h). oplog-apply.c carries the plans out.
 *
 * The promise: a plan only ever writes to targets that ms_ns_map() gives for source namespaces
 * the restore selects. An entry (or a part of one) that cannot be placed that way is skipped and
 * counted, never applied to its original name:
 *  - i/u/d on a namespace: by the namespace;
 *  - create, drop, collMod, createIndexes, dropIndexes (deleteIndexes), convertToCapped,
 *    emptycapped, commitIndexBuild: by db.<the collection they name>; a view's viewOn must map
 *    into the same target database as the view;
 *  - renameCollection: both sides mapped: renamed; only the source mapped: the target copy is
 *    dropped (the data left the restored set); only the target mapped: unplaceable (the data
 *    comes from outside the snapshot);
 *  - dropDatabase: expanded into a drop of each collection of that database the restore knows
 *    of (the archive's, and those the replay has created), each mapped on its own; a target's
 *    other collections are never touched;
 *  - applyOps: each inner operation as an entry of its own; a transaction's parts (partialTxn,
 *    prepare) are held until its commit (the last part, or commitTransaction) and dropped at
 *    abortTransaction or when the replay ends before the commit;
 *  - startIndexBuild, abortIndexBuild, no-ops: nothing to do;
 *  - any other command on a database the mapping could select: refused (-ENOTSUP) naming the
 *    command, as its effect cannot be mapped. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/macro.h"
#include "nsfilter.h"

typedef enum MsOplogActionKind {
    MS_OPLOG_ACTION_UPSERT,  /* replace {_id} by doc, inserting it if missing */
    MS_OPLOG_ACTION_INSERT,  /* insert doc (it has no _id) */
    MS_OPLOG_ACTION_REPLACE, /* replace the document matching selector by doc */
    MS_OPLOG_ACTION_UPDATE,  /* update the document matching selector with doc ($set/$unset...) */
    MS_OPLOG_ACTION_DELETE,  /* delete the document matching selector */
    MS_OPLOG_ACTION_COMMAND, /* run doc as a command on db */
    _MS_OPLOG_ACTION_KIND_MAX,
} MsOplogActionKind;

#define MS_OPLOG_ACTION_MAX_TOUCHED 2

typedef struct MsOplogAction {
    MsOplogActionKind kind;
    char *db;   /* the database the command or write goes to */
    char *coll; /* the collection written; NULL for commands */
    /* Owned, from bson_new(): a bson_t must not move once it has grown (it points into itself),
     * and actions live in an array that grows. */
    bson_t *selector;
    bson_t *doc;
    /* Every target namespace ("db.coll") this action changes, for checks and tests. */
    char *touched[MS_OPLOG_ACTION_MAX_TOUCHED];
    /* For commands: the state wanted is already there when the server answers these. */
    bool tolerate_missing;  /* NamespaceNotFound, IndexNotFound */
    bool tolerate_existing; /* NamespaceExists */
} MsOplogAction;

typedef struct MsOplogPlan {
    MsOplogAction *actions;
    size_t n_actions;
    size_t cap;
} MsOplogPlan;

void ms_oplog_plan_clear(MsOplogPlan *p);

/* Why parts of entries were not replayed. */
typedef struct MsOplogReplayStats {
    uint64_t applied;      /* operations that produced actions */
    uint64_t not_selected; /* outside --ns-include/--ns-exclude: skipped as asked */
    uint64_t noops;        /* no-ops, index build markers */
    uint64_t unplaceable;  /* could not be placed inside the mapping: skipped, reported */
    uint64_t uncommitted;  /* operations of transactions not committed when replay ended */
    char first_unplaceable[512]; /* the first one, described for the report */
} MsOplogReplayStats;

typedef struct MsOplogReplayer MsOplogReplayer;

/* filter may be NULL (everything, unrenamed). It is borrowed and must outlive the replayer. */
int ms_oplog_replayer_new(const MsNsFilter *filter, MsOplogReplayer **ret, MsError *e);
MsOplogReplayer *ms_oplog_replayer_free(MsOplogReplayer *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsOplogReplayer *, ms_oplog_replayer_free);

/* A source namespace that exists at the start of replay (the archive's collections and views). */
int ms_oplog_replayer_know(MsOplogReplayer *r, const char *src_ns);

/* The actions for one entry, appended to plan (which the caller clears). Fails on malformed
 * entries (-EBADMSG), unsupported commands (-ENOTSUP) and out of memory; e names the entry. */
int ms_oplog_replayer_plan(MsOplogReplayer *r, const bson_t *entry, MsOplogPlan *plan,
                           MsError *e);

/* Replay is over: transactions still open are counted as uncommitted and dropped. */
void ms_oplog_replayer_finish(MsOplogReplayer *r);
const MsOplogReplayStats *ms_oplog_replayer_stats(const MsOplogReplayer *r);

/* "an oplog entry op 'c' on 'shop.$cmd' at T:I" */
void ms_oplog_describe_entry(const bson_t *entry, char *buf, size_t size);

const char *ms_oplog_action_kind_to_string(MsOplogActionKind k);

/* Translate an update's "$v: 2" delta ({diff: {...}}) into a classic {$set, $unset} update.
 * Array resizes ("l") have no $set/$unset form: -ENOTSUP. */
int ms_oplog_diff_to_update(const bson_t *diff, bson_t *ret_update, MsError *e);

/* The catalog: mongosnapd's SQLite record of snapshots, restores and policies' runtime state. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/macro.h"

/* The catalog's file inside the agent's state directory ($STATE_DIRECTORY, /var/lib/mongosnap). */
#define MS_CATALOG_FILE_NAME "mongosnap.db"

/* The schema version this code writes and understands (SQLite's user_version). Older catalogs
 * are migrated on open, keeping every row; newer ones are refused untouched.
 *   1: policies' runtime state, snapshots, restores.
 *   2: snapshots' point_in_time and log_cursor, restores' options, list indexes.
 *   3: the snapshot state "stopped", snapshots' verification result (verify_state,
 *      verify_finished_usec, verify_error), restores' bytes_transferred.
 *   4: snapshots' seq, origin and detached_usec; policies' last_seq.
 *   5: snapshots' parts (a cluster snapshot's, catalog/snapshot-parts.h). */
#define MS_CATALOG_SCHEMA_VERSION 5

/* Threads: an MsCatalog is one SQLite connection, opened without SQLite's per-connection
 * mutex. Use each one from one thread at a time; a thread that needs the catalog opens its own.
 * WAL lets any number of readers proceed while one writer commits, and the busy timeout makes
 * concurrent writers wait for each other instead of failing. */
typedef struct MsCatalog MsCatalog;

/* Times are microseconds since the epoch (CLOCK_REALTIME); 0 means "not yet" and is stored
 * as NULL. Counters are stored as SQLite's signed 64-bit integers: values above INT64_MAX are
 * refused with -EOVERFLOW. */

typedef enum MsPolicyState {
    MS_POLICY_ACTIVE,
    MS_POLICY_STOPPED,
    MS_POLICY_DELETED,
    _MS_POLICY_STATE_MAX,
    _MS_POLICY_STATE_INVALID = -EINVAL,
} MsPolicyState;

typedef enum MsSnapshotState {
    MS_SNAPSHOT_QUEUED,
    MS_SNAPSHOT_RUNNING,
    MS_SNAPSHOT_COMPLETED,
    MS_SNAPSHOT_FAILED,
    MS_SNAPSHOT_INTERRUPTED, /* the agent stopped (crash, restart) while the task ran */
    MS_SNAPSHOT_EXPIRED,     /* removed from the store by retention */
    MS_SNAPSHOT_DELETED,     /* removed from the store on request */
    MS_SNAPSHOT_STOPPED,     /* stopped on request (Stop, Cancel) while queued or running;
                              * schema version 3 and later */
    _MS_SNAPSHOT_STATE_MAX,
    _MS_SNAPSHOT_STATE_INVALID = -EINVAL,
} MsSnapshotState;

typedef enum MsRestoreState {
    MS_RESTORE_QUEUED,
    MS_RESTORE_RUNNING,
    MS_RESTORE_COMPLETED,
    MS_RESTORE_FAILED,
    MS_RESTORE_INTERRUPTED,
    MS_RESTORE_CANCELLED, /* stopped on request (Restore.Cancel) */
    _MS_RESTORE_STATE_MAX,
    _MS_RESTORE_STATE_INVALID = -EINVAL,
} MsRestoreState;

/* What started a snapshot (schema version 4 and later). */
typedef enum MsSnapshotOrigin {
    MS_SNAPSHOT_ORIGIN_SCHEDULED, /* the policy's timer (and snapshots from before version 4) */
    MS_SNAPSHOT_ORIGIN_MANUAL,    /* TakeSnapshot on request, Rebuild */
    MS_SNAPSHOT_ORIGIN_RESYNC,    /* found in a store by Resync with no record of it */
    _MS_SNAPSHOT_ORIGIN_MAX,
    _MS_SNAPSHOT_ORIGIN_INVALID = -EINVAL,
} MsSnapshotOrigin;

const char *ms_snapshot_origin_to_string(MsSnapshotOrigin o);
MsSnapshotOrigin ms_snapshot_origin_from_string(const char *s);

/* The last verification of a snapshot's stored archive (schema version 3 and later). */
typedef enum MsVerifyState {
    MS_VERIFY_NEVER, /* never verified: stored as NULL, shown as "" */
    MS_VERIFY_QUEUED,
    MS_VERIFY_RUNNING,
    MS_VERIFY_PASSED,
    MS_VERIFY_FAILED,
    MS_VERIFY_INTERRUPTED, /* the agent stopped (crash, restart) while the verification ran */
    _MS_VERIFY_STATE_MAX,
    _MS_VERIFY_STATE_INVALID = -EINVAL,
} MsVerifyState;

/* State sets for list filters: MS_STATE_BIT(MS_SNAPSHOT_QUEUED) | MS_STATE_BIT(...). */
#define MS_STATE_BIT(state) (1u << (unsigned) (state))

/* Names as stored in the catalog and shown to users ("queued", "running", ...); NULL or
 * -EINVAL for values that are not states (NULL among them). MS_VERIFY_NEVER's name is "" (the
 * catalog stores NULL for it), so ms_verify_state_from_string("") is MS_VERIFY_NEVER. */
const char *ms_policy_state_to_string(MsPolicyState s);
MsPolicyState ms_policy_state_from_string(const char *s);
const char *ms_snapshot_state_to_string(MsSnapshotState s);
MsSnapshotState ms_snapshot_state_from_string(const char *s);
const char *ms_restore_state_to_string(MsRestoreState s);
MsRestoreState ms_restore_state_from_string(const char *s);
const char *ms_verify_state_to_string(MsVerifyState s);
MsVerifyState ms_verify_state_from_string(const char *s);

/* A policy's runtime state; its settings live in /etc/mongosnap/policies.d, not here. */
typedef struct MsPolicyRuntime {
    char *name;
    MsPolicyState state;
    uint64_t last_run_usec;
    char *last_result; /* one line for people ("completed", "failed: ..."), NULL before a run */
    uint64_t next_run_usec;
    uint64_t last_seq; /* the seq given to the policy's latest snapshot */
} MsPolicyRuntime;

/* A worker phase name ("indexes"), with room to spare. */
#define MS_PHASE_MAX 24
/* A task's progress when it is done. */
#define MS_PERCENT_DONE 100.0

/* What every task record has, whatever its kind (snapshots, restores, and the kinds to come):
 * the catalog, the cluster's shared records, the bus objects and the agent handle it once,
 * through MsTaskCore. Each record embeds it first, in a union with the same fields unnamed, so
 * that r->id and r->core.id are the same field and (MsTaskCore *) r is its core. */
#define MS_TASK_CORE_FIELDS                                                                        \
    char *id;    /* required: the task name, unique ("nightly-20261122T031026Z") */              \
    char *node;  /* the node that runs it */                                                      \
    char *error; /* why it failed, was interrupted or was stopped */                              \
    uint64_t created_usec;                                                                         \
    uint64_t started_usec;                                                                         \
    uint64_t finished_usec;                                                                        \
    uint64_t items_done; /* documents */                                                           \
    uint64_t items_total;                                                                          \
    double progress_pct;        /* 0..100 */                                                      \
    uint64_t bytes_transferred; /* see the kinds' properties in docs/dbus-api.md */               \
    /* Not stored: another node's record, seen through the cluster's shared records             \
     * (agent-cluster.c); listed, never written to this node's catalog. */                        \
    bool remote;                                                                                   \
    /* Not stored: the worker's phase while the task runs ("connect", "dump", "indexes", ...;  \
     * "" otherwise), so that a front end can say what happens past the documents. */             \
    char phase[MS_PHASE_MAX];

typedef struct MsTaskCore {
    MS_TASK_CORE_FIELDS
} MsTaskCore;

/* Frees the core's strings (not the core itself). */
void ms_task_core_clear(MsTaskCore *c);
/* The core of a task that ended at now_usec, with error (NULL: none) and no phase; one that
 * completed is at 100% and has done at least what it counted. -ENOMEM when error could not
 * be copied (the rest is set). The kind's own state is the caller's. */
int ms_task_core_finish(MsTaskCore *c, const char *error, bool completed, uint64_t now_usec);

/* One snapshot task ("Backup Record"). Every string may be NULL unless marked required. */
typedef struct MsSnapshotRecord {
    union {
        MsTaskCore core;
        struct {
            MS_TASK_CORE_FIELDS
        };
    };
    char *policy;       /* required: a policy recorded with ms_catalog_set_policy() */
    char *archive_key;  /* the archive's key in the store; its last component is the file name */
    char *manifest_key; /* the manifest's key in the store */
    char *store;        /* store location without secrets ("local:/var/lib/mongosnap/store") */
    MsSnapshotState state;
    uint64_t expire_usec; /* when retention removes it, computed when it completes */
    bool point_in_time;   /* the oplog was captured: consistent as of the snapshot's end */
    char *log_cursor;     /* journal cursor of the task's first Event Log entry */
    /* The last verification of the stored archive: its state (MS_VERIFY_NEVER if none), when
     * it passed, failed or was interrupted (0 while one is queued or running), and why it
     * failed or was interrupted. */
    MsVerifyState verify_state;
    uint64_t verify_finished_usec;
    char *verify_error;
    /* The order snapshots of the policy started in (retention ranks by it; 0: unknown, older
     * than every numbered one) and what started it. */
    uint64_t seq;
    MsSnapshotOrigin origin;
    /* When its policy was deleted (0: it was not): a detached snapshot is kept, listed and
     * restorable, but no policy's retention manages it, not even one created again under the
     * same name. */
    uint64_t detached_usec;
    /* Not stored: what retention last said of it (agent-manager.c computes them whenever
     * retention runs): when the policy's schedule will push it out (0: nothing will, or not
     * yet known), the rule that keeps it ("KeepDaily=7"), and whether its completion time is
     * too far in the future to be believed. */
    uint64_t expire_projected_usec;
    char *kept_by;
    bool future_dated;
    /* A cluster snapshot's parts, as JSON (catalog/snapshot-parts.h); NULL for a snapshot of
     * one replica set. Schema version 5 and later. */
    char *parts;
} MsSnapshotRecord;

/* One restore task. bytes_transferred: bytes the target took so far (schema version 3 and
 * later); node names the node that runs it. */
typedef struct MsRestoreRecord {
    union {
        MsTaskCore core;
        struct {
            MS_TASK_CORE_FIELDS
        };
    };
    char *source_snapshot; /* required: the id of a snapshot in the catalog */
    char *target;          /* required: the target deployment's URI; stored redacted */
    MsRestoreState state;
    char *options; /* JSON object of the restore's options (filters, renames, until); NULL = {} */
} MsRestoreRecord;

typedef struct MsSnapshotFilter {
    const char *policy; /* NULL: every policy */
    unsigned states;    /* MS_STATE_BIT()s of MsSnapshotState; 0: every state */
} MsSnapshotFilter;

typedef struct MsRestoreFilter {
    const char *source_snapshot; /* NULL: restores of every snapshot */
    unsigned states;             /* MS_STATE_BIT()s of MsRestoreState; 0: every state */
} MsRestoreFilter;

/* Open (creating if missing) the catalog at path, normally <state dir>/MS_CATALOG_FILE_NAME,
 * and bring its schema to MS_CATALOG_SCHEMA_VERSION. Refuses files that are not a mongosnap
 * catalog and catalogs written by a newer mongosnap. */
int ms_catalog_open(const char *path, MsCatalog **ret_catalog, MsError *e);
MsCatalog *ms_catalog_close(MsCatalog *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsCatalog *, ms_catalog_close);

/* How many statements this connection has compiled: each kind is compiled once and reused, so
 * this stays flat however many calls are made (for tests and diagnostics). */
unsigned ms_catalog_statements_prepared(const MsCatalog *c);

/* Policies. get: -ENOENT when unknown. set: insert or replace the policy's row. */
int ms_catalog_get_policy(MsCatalog *c, const char *name, MsPolicyRuntime **ret_policy, MsError *e);
int ms_catalog_set_policy(MsCatalog *c, const MsPolicyRuntime *p, MsError *e);
int ms_catalog_list_policies(MsCatalog *c, MsPolicyRuntime ***ret_policies, size_t *ret_n,
                             MsError *e);
MsPolicyRuntime *ms_policy_runtime_free(MsPolicyRuntime *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsPolicyRuntime *, ms_policy_runtime_free);
void ms_policy_runtime_list_free(MsPolicyRuntime **list, size_t n);

/* Snapshots. insert: -EEXIST when the id is taken, -ENOENT when the policy is not recorded.
 * update: every column of the row with r->id, the verification's included (-ENOENT when
 * missing). list: oldest first. */
int ms_catalog_insert_snapshot(MsCatalog *c, const MsSnapshotRecord *r, MsError *e);
int ms_catalog_update_snapshot(MsCatalog *c, const MsSnapshotRecord *r, MsError *e);
int ms_catalog_get_snapshot(MsCatalog *c, const char *id, MsSnapshotRecord **ret_record,
                            MsError *e);
int ms_catalog_list_snapshots(MsCatalog *c, const MsSnapshotFilter *filter,
                              MsSnapshotRecord ***ret_records, size_t *ret_n, MsError *e);
/* Progress of a running task: one small UPDATE through a statement compiled once, cheap enough
 * for every progress message a worker sends. */
int ms_catalog_update_snapshot_progress(MsCatalog *c, const char *id, uint64_t items_done,
                                        uint64_t items_total, double progress_pct,
                                        uint64_t bytes_transferred, MsError *e);
/* Move a snapshot to state with error (NULL clears it). Entering running stamps started_usec,
 * entering completed, failed, interrupted or stopped stamps finished_usec, unless already set. */
int ms_catalog_set_snapshot_state(MsCatalog *c, const char *id, MsSnapshotState state,
                                  const char *error, MsError *e);
/* Record the state of a snapshot's verification, leaving the snapshot's own state alone.
 * error is recorded as given (NULL clears it), except that entering queued or never always
 * clears it. Entering passed, failed or interrupted stamps verify_finished_usec with the current
 * time (each verification's result carries its own time); entering queued, running or never
 * clears it. -ENOENT when the snapshot is not in the catalog. */
int ms_catalog_set_snapshot_verify(MsCatalog *c, const char *id, MsVerifyState state,
                                   const char *error, MsError *e);
MsSnapshotRecord *ms_snapshot_record_free(MsSnapshotRecord *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsSnapshotRecord *, ms_snapshot_record_free);
void ms_snapshot_record_list_free(MsSnapshotRecord **list, size_t n);

/* Restores, as snapshots. insert: -ENOENT when the source snapshot is not in the catalog. */
int ms_catalog_insert_restore(MsCatalog *c, const MsRestoreRecord *r, MsError *e);
int ms_catalog_update_restore(MsCatalog *c, const MsRestoreRecord *r, MsError *e);
int ms_catalog_get_restore(MsCatalog *c, const char *id, MsRestoreRecord **ret_record, MsError *e);
int ms_catalog_list_restores(MsCatalog *c, const MsRestoreFilter *filter,
                             MsRestoreRecord ***ret_records, size_t *ret_n, MsError *e);
int ms_catalog_update_restore_progress(MsCatalog *c, const char *id, uint64_t items_done,
                                       uint64_t items_total, double progress_pct,
                                       uint64_t bytes_transferred, MsError *e);
int ms_catalog_set_restore_state(MsCatalog *c, const char *id, MsRestoreState state,
                                 const char *error, MsError *e);
MsRestoreRecord *ms_restore_record_free(MsRestoreRecord *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsRestoreRecord *, ms_restore_record_free);
void ms_restore_record_list_free(MsRestoreRecord **list, size_t n);

/* At agent start: every queued or running snapshot and restore becomes interrupted with reason
 * as its error, and every queued or running verification of a snapshot becomes interrupted with
 * reason as its verify_error (verify_finished_usec stamped), in one transaction. *ret_count: how
 * many rows changed (a snapshot whose task and verification were both unfinished counts once). */
int ms_catalog_mark_unfinished_interrupted(MsCatalog *c, const char *reason, unsigned *ret_count,
                                           MsError *e);

/* PRAGMA integrity_check and foreign_key_check: -EBADMSG with the first problems when damaged. */
int ms_catalog_integrity_check(MsCatalog *c, MsError *e);

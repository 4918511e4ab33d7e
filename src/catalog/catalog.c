/* The catalog on SQLite: connection setup, schema migrations and the row operations, all through
 * statements compiled once per connection with bound parameters. */
#include "catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/redact.h"
#include "common/timeutil.h"
#include "common/string-table.h"
#include "config.h"

/* Written into the database header (PRAGMA application_id) so that `file` and we can tell a
 * catalog from any other SQLite file: "MSNP". */
#define CATALOG_APPLICATION_ID 0x4d534e50
/* How long a writer waits for another connection's write transaction before giving up. The
 * agent's writes are single-row updates or short transactions, so five seconds of waiting means
 * something else (a second agent, a stuck sqlite3 shell) holds the catalog. */
#define CATALOG_BUSY_TIMEOUT_MSEC 5000
/* How many problems an integrity failure names in its message; the rest are counted. */
#define CATALOG_INTEGRITY_REPORT_MAX 3
#define CATALOG_CONTEXT_MAX 512

/* The schema's history, oldest first: migrations[i] takes user_version i to i + 1. Append-only:
 * a step that has been released is never edited, because catalogs in the field have run it.
 * Version 2 exists from the start so that the upgrade path is exercised by the tests. */
static const char *const migrations[] = {
    /* 1: policies' runtime state, snapshots and restores. */
    "CREATE TABLE policies ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'stopped', 'deleted')),"
    "  last_run_usec INTEGER,"
    "  last_result TEXT,"
    "  next_run_usec INTEGER"
    ");"
    "CREATE TABLE snapshots ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  policy TEXT NOT NULL REFERENCES policies (name),"
    "  node TEXT NOT NULL,"
    "  archive_key TEXT,"
    "  manifest_key TEXT,"
    "  store TEXT,"
    "  download_url TEXT,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',"
    "                                       'interrupted', 'expired', 'deleted')),"
    "  error TEXT,"
    "  created_usec INTEGER NOT NULL,"
    "  started_usec INTEGER,"
    "  finished_usec INTEGER,"
    "  expire_usec INTEGER,"
    "  items_done INTEGER NOT NULL DEFAULT 0,"
    "  items_total INTEGER NOT NULL DEFAULT 0,"
    "  progress_pct REAL NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),"
    "  bytes_transferred INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE restores ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  source_snapshot TEXT NOT NULL REFERENCES snapshots (id),"
    "  target TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',"
    "                                       'interrupted', 'cancelled')),"
    "  error TEXT,"
    "  created_usec INTEGER NOT NULL,"
    "  started_usec INTEGER,"
    "  finished_usec INTEGER,"
    "  items_done INTEGER NOT NULL DEFAULT 0,"
    "  items_total INTEGER NOT NULL DEFAULT 0,"
    "  progress_pct REAL NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100)"
    ");",

    /* 2: point-in-time flag and Event Log cursor on snapshots, restore options, and the
     * indexes behind the list filters (and behind the foreign key checks, which otherwise scan
     * the child table on every parent update). */
    "ALTER TABLE snapshots ADD COLUMN point_in_time INTEGER NOT NULL DEFAULT 0"
    "  CHECK (point_in_time IN (0, 1));"
    "ALTER TABLE snapshots ADD COLUMN log_cursor TEXT;"
    "ALTER TABLE restores ADD COLUMN options TEXT NOT NULL DEFAULT '{}';"
    "CREATE INDEX snapshots_by_policy_state ON snapshots (policy, state);"
    "CREATE INDEX snapshots_by_state ON snapshots (state);"
    "CREATE INDEX restores_by_source ON restores (source_snapshot);"
    "CREATE INDEX restores_by_state ON restores (state);",

    /* 3: the snapshot state 'stopped' (stopped on request, as distinct from interrupted by a
     * crash or restart), the last verification's result on snapshots, and bytes transferred
     * by restores. SQLite cannot change a CHECK constraint in place, so snapshots is rebuilt
     * by SQLite's documented procedure (lang_altertable.html, "Making Other Kinds Of Table
     * Schema Changes"): create the new table, copy every row with its rowid, drop the old table
     * (its indexes go with it), rename the new one, recreate the indexes. catalog_migrate()
     * runs every step with foreign keys off (else the DROP would delete the snapshots that
     * restores refer to, and fail), inside the migration's one transaction, and checks the
     * foreign keys before it commits. Renaming snapshots_new (which nothing refers to) to
     * snapshots leaves restores' REFERENCES snapshots (id) as it is. */
    "CREATE TABLE snapshots_new ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  policy TEXT NOT NULL REFERENCES policies (name),"
    "  node TEXT NOT NULL,"
    "  archive_key TEXT,"
    "  manifest_key TEXT,"
    "  store TEXT,"
    "  download_url TEXT,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',"
    "                                       'interrupted', 'expired', 'deleted', 'stopped')),"
    "  error TEXT,"
    "  created_usec INTEGER NOT NULL,"
    "  started_usec INTEGER,"
    "  finished_usec INTEGER,"
    "  expire_usec INTEGER,"
    "  items_done INTEGER NOT NULL DEFAULT 0,"
    "  items_total INTEGER NOT NULL DEFAULT 0,"
    "  progress_pct REAL NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),"
    "  bytes_transferred INTEGER NOT NULL DEFAULT 0,"
    "  point_in_time INTEGER NOT NULL DEFAULT 0 CHECK (point_in_time IN (0, 1)),"
    "  log_cursor TEXT,"
    "  verify_state TEXT CHECK (verify_state IN ('queued', 'running', 'passed', 'failed',"
    "                                            'interrupted')),"
    "  verify_finished_usec INTEGER,"
    "  verify_error TEXT"
    ");"
    "INSERT INTO snapshots_new (rowid, id, policy, node, archive_key, manifest_key, store,"
    "  download_url, state, error, created_usec, started_usec, finished_usec, expire_usec,"
    "  items_done, items_total, progress_pct, bytes_transferred, point_in_time, log_cursor)"
    "  SELECT rowid, id, policy, node, archive_key, manifest_key, store, download_url, state,"
    "  error, created_usec, started_usec, finished_usec, expire_usec, items_done, items_total,"
    "  progress_pct, bytes_transferred, point_in_time, log_cursor FROM snapshots;"
    "DROP TABLE snapshots;"
    "ALTER TABLE snapshots_new RENAME TO snapshots;"
    "CREATE INDEX snapshots_by_policy_state ON snapshots (policy, state);"
    "CREATE INDEX snapshots_by_state ON snapshots (state);"
    "ALTER TABLE restores ADD COLUMN bytes_transferred INTEGER NOT NULL DEFAULT 0;",

    /* 4: the order snapshots of a policy started in (seq, which retention ranks by: no clock
     * can invert it), what started each one (origin: manual snapshots are a retention series
     * of their own), and when the policy a snapshot belonged to was deleted (detached_usec:
     * a policy created again under the old name starts a new history, and its retention never
     * takes over the snapshots Delete kept); policies' last seq. Existing rows keep their
     * order (rowid), count as scheduled (as retention treated them), and snapshots of policies
     * deleted before are detached as of the migration. */
    "ALTER TABLE snapshots ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE snapshots ADD COLUMN origin TEXT NOT NULL DEFAULT 'scheduled'"
    "  CHECK (origin IN ('scheduled', 'manual', 'resync'));"
    "ALTER TABLE snapshots ADD COLUMN detached_usec INTEGER;"
    "ALTER TABLE policies ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;"
    "UPDATE snapshots SET seq = rowid;"
    "UPDATE snapshots SET detached_usec = CAST(strftime('%s', 'now') AS INTEGER) * 1000000"
    "  WHERE policy IN (SELECT name FROM policies WHERE state = 'deleted');"
    "UPDATE policies SET last_seq ="
    "  (SELECT COALESCE(MAX(seq), 0) FROM snapshots WHERE snapshots.policy = policies.name);",

    /* 5: a cluster snapshot's parts (shard, replica set, manifest, size, dump end) as JSON,
     * so that show and the bus name them; NULL for every snapshot before. */
    "ALTER TABLE snapshots ADD COLUMN parts TEXT;",
};
_Static_assert(ELEMENTSOF(migrations) == MS_CATALOG_SCHEMA_VERSION,
               "every schema version needs its migration");

static const char *const policy_state_names[_MS_POLICY_STATE_MAX] = {
    [MS_POLICY_ACTIVE] = "active",
    [MS_POLICY_STOPPED] = "stopped",
    [MS_POLICY_DELETED] = "deleted",
};

static const char *const snapshot_state_names[_MS_SNAPSHOT_STATE_MAX] = {
    [MS_SNAPSHOT_QUEUED] = "queued",           [MS_SNAPSHOT_RUNNING] = "running",
    [MS_SNAPSHOT_COMPLETED] = "completed",     [MS_SNAPSHOT_FAILED] = "failed",
    [MS_SNAPSHOT_INTERRUPTED] = "interrupted", [MS_SNAPSHOT_EXPIRED] = "expired",
    [MS_SNAPSHOT_DELETED] = "deleted",         [MS_SNAPSHOT_STOPPED] = "stopped",
};

static const char *const restore_state_names[_MS_RESTORE_STATE_MAX] = {
    [MS_RESTORE_QUEUED] = "queued",           [MS_RESTORE_RUNNING] = "running",
    [MS_RESTORE_COMPLETED] = "completed",     [MS_RESTORE_FAILED] = "failed",
    [MS_RESTORE_INTERRUPTED] = "interrupted", [MS_RESTORE_CANCELLED] = "cancelled",
};

static const char *const snapshot_origin_names[_MS_SNAPSHOT_ORIGIN_MAX] = {
    [MS_SNAPSHOT_ORIGIN_SCHEDULED] = "scheduled",
    [MS_SNAPSHOT_ORIGIN_MANUAL] = "manual",
    [MS_SNAPSHOT_ORIGIN_RESYNC] = "resync",
};

MS_DEFINE_STRING_TABLE_LOOKUP(ms_snapshot_origin, MsSnapshotOrigin, snapshot_origin_names,
                              _MS_SNAPSHOT_ORIGIN_INVALID)

/* MS_VERIFY_NEVER is stored as NULL; its name is what people see for it. */
static const char *const verify_state_names[_MS_VERIFY_STATE_MAX] = {
    [MS_VERIFY_NEVER] = "",          [MS_VERIFY_QUEUED] = "queued",
    [MS_VERIFY_RUNNING] = "running", [MS_VERIFY_PASSED] = "passed",
    [MS_VERIFY_FAILED] = "failed",   [MS_VERIFY_INTERRUPTED] = "interrupted",
};

/* Columns in the order the row readers and binders use; parameter ?N binds column N - 1. */
#define SNAPSHOT_COLUMNS                                                                           \
    "id, policy, node, archive_key, manifest_key, store, download_url, state, error, "             \
    "created_usec, started_usec, finished_usec, expire_usec, items_done, items_total, "            \
    "progress_pct, bytes_transferred, point_in_time, log_cursor, verify_state, "                   \
    "verify_finished_usec, verify_error, seq, origin, detached_usec, parts"
enum {
    SNAP_ID,
    SNAP_POLICY,
    SNAP_NODE,
    SNAP_ARCHIVE_KEY,
    SNAP_MANIFEST_KEY,
    SNAP_STORE,
    SNAP_DOWNLOAD_URL,
    SNAP_STATE,
    SNAP_ERROR,
    SNAP_CREATED,
    SNAP_STARTED,
    SNAP_FINISHED,
    SNAP_EXPIRE,
    SNAP_ITEMS_DONE,
    SNAP_ITEMS_TOTAL,
    SNAP_PROGRESS,
    SNAP_BYTES,
    SNAP_POINT_IN_TIME,
    SNAP_LOG_CURSOR,
    SNAP_VERIFY_STATE,
    SNAP_VERIFY_FINISHED,
    SNAP_VERIFY_ERROR,
    SNAP_SEQ,
    SNAP_ORIGIN,
    SNAP_DETACHED,
    SNAP_PARTS,
};

#define RESTORE_COLUMNS                                                                            \
    "id, source_snapshot, target, state, error, created_usec, started_usec, finished_usec, "       \
    "items_done, items_total, progress_pct, options, bytes_transferred"
enum {
    REST_ID,
    REST_SOURCE,
    REST_TARGET,
    REST_STATE,
    REST_ERROR,
    REST_CREATED,
    REST_STARTED,
    REST_FINISHED,
    REST_ITEMS_DONE,
    REST_ITEMS_TOTAL,
    REST_PROGRESS,
    REST_OPTIONS,
    REST_BYTES,
};

#define POLICY_COLUMNS "name, state, last_run_usec, last_result, next_run_usec, last_seq"
enum {
    POL_NAME,
    POL_STATE,
    POL_LAST_RUN,
    POL_LAST_RESULT,
    POL_NEXT_RUN,
    POL_LAST_SEQ,
};

/* A list filter binds the wanted states to consecutive parameters after its first one and NULL
 * to the rest; "?2 IS NULL" (no state chosen) lets every row through. One slot per state. */
#define SNAPSHOT_STATE_SLOTS "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9"
_Static_assert(_MS_SNAPSHOT_STATE_MAX == 8, "one parameter slot per snapshot state");
#define RESTORE_STATE_SLOTS "?2, ?3, ?4, ?5, ?6, ?7"
_Static_assert(_MS_RESTORE_STATE_MAX == 6, "one parameter slot per restore state");

typedef enum CatalogStatement {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_POLICY_GET,
    STMT_POLICY_SET,
    STMT_POLICY_LIST,
    STMT_SNAPSHOT_INSERT,
    STMT_SNAPSHOT_UPDATE,
    STMT_SNAPSHOT_GET,
    STMT_SNAPSHOT_LIST,
    STMT_SNAPSHOT_PROGRESS,
    STMT_SNAPSHOT_STATE,
    STMT_SNAPSHOT_VERIFY,
    STMT_SNAPSHOT_INTERRUPT,
    STMT_RESTORE_INSERT,
    STMT_RESTORE_UPDATE,
    STMT_RESTORE_GET,
    STMT_RESTORE_LIST,
    STMT_RESTORE_PROGRESS,
    STMT_RESTORE_STATE,
    STMT_RESTORE_INTERRUPT,
    _STMT_MAX,
} CatalogStatement;

static const char *const statement_sql[_STMT_MAX] = {
    /* IMMEDIATE takes the write lock at once, so a transaction never fails half-way for a
     * lock another connection took after our first read. */
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",

    [STMT_POLICY_GET] = "SELECT " POLICY_COLUMNS " FROM policies WHERE name = ?1",
    [STMT_POLICY_SET] = "INSERT INTO policies (" POLICY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, "
                        "?6) ON CONFLICT (name) DO UPDATE SET state = ?2, last_run_usec = ?3, "
                        "last_result = ?4, next_run_usec = ?5, last_seq = ?6",
    [STMT_POLICY_LIST] = "SELECT " POLICY_COLUMNS " FROM policies ORDER BY name",

    [STMT_SNAPSHOT_INSERT] = "INSERT INTO snapshots (" SNAPSHOT_COLUMNS ") VALUES (?1, ?2, ?3, "
                             "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                             "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
    [STMT_SNAPSHOT_UPDATE] =
        "UPDATE snapshots SET policy = ?2, node = ?3, archive_key = ?4, manifest_key = ?5, "
        "store = ?6, download_url = ?7, state = ?8, error = ?9, created_usec = ?10, "
        "started_usec = ?11, finished_usec = ?12, expire_usec = ?13, items_done = ?14, "
        "items_total = ?15, progress_pct = ?16, bytes_transferred = ?17, point_in_time = ?18, "
        "log_cursor = ?19, verify_state = ?20, verify_finished_usec = ?21, verify_error = ?22, "
        "seq = ?23, origin = ?24, detached_usec = ?25, parts = ?26 WHERE id = ?1",
    [STMT_SNAPSHOT_GET] = "SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE id = ?1",
    [STMT_SNAPSHOT_LIST] = "SELECT " SNAPSHOT_COLUMNS " FROM snapshots "
                           "WHERE (?1 IS NULL OR policy = ?1) "
                           "AND (?2 IS NULL OR state IN (" SNAPSHOT_STATE_SLOTS ")) "
                           "ORDER BY created_usec, id",
    [STMT_SNAPSHOT_PROGRESS] = "UPDATE snapshots SET items_done = ?2, items_total = ?3, "
                               "progress_pct = ?4, bytes_transferred = ?5 WHERE id = ?1",
    [STMT_SNAPSHOT_STATE] =
        "UPDATE snapshots SET state = ?2, error = ?3, "
        "started_usec = CASE WHEN ?5 THEN COALESCE(started_usec, ?4) ELSE started_usec END, "
        "finished_usec = CASE WHEN ?6 THEN COALESCE(finished_usec, ?4) ELSE finished_usec END "
        "WHERE id = ?1",
    /* ?4: verify_finished_usec, NULL or the current time (set_snapshot_verify decides). */
    [STMT_SNAPSHOT_VERIFY] = "UPDATE snapshots SET verify_state = ?2, verify_error = ?3, "
                             "verify_finished_usec = ?4 WHERE id = ?1",
    /* The task and its verification in one statement, so that each row counts once. Every
     * expression reads the row as it was before the update. */
    [STMT_SNAPSHOT_INTERRUPT] =
        "UPDATE snapshots SET "
        "state = CASE WHEN state IN (?4, ?5) THEN ?1 ELSE state END, "
        "error = CASE WHEN state IN (?4, ?5) THEN ?2 ELSE error END, "
        "finished_usec = CASE WHEN state IN (?4, ?5) THEN COALESCE(finished_usec, ?3) "
        "  ELSE finished_usec END, "
        "verify_state = CASE WHEN verify_state IN (?7, ?8) THEN ?6 ELSE verify_state END, "
        "verify_error = CASE WHEN verify_state IN (?7, ?8) THEN ?2 ELSE verify_error END, "
        "verify_finished_usec = CASE WHEN verify_state IN (?7, ?8) THEN ?3 "
        "  ELSE verify_finished_usec END "
        "WHERE state IN (?4, ?5) OR verify_state IN (?7, ?8)",

    [STMT_RESTORE_INSERT] = "INSERT INTO restores (" RESTORE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, "
                            "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [STMT_RESTORE_UPDATE] =
        "UPDATE restores SET source_snapshot = ?2, target = ?3, state = ?4, error = ?5, "
        "created_usec = ?6, started_usec = ?7, finished_usec = ?8, items_done = ?9, "
        "items_total = ?10, progress_pct = ?11, options = ?12, bytes_transferred = ?13 "
        "WHERE id = ?1",
    [STMT_RESTORE_GET] = "SELECT " RESTORE_COLUMNS " FROM restores WHERE id = ?1",
    [STMT_RESTORE_LIST] = "SELECT " RESTORE_COLUMNS " FROM restores "
                          "WHERE (?1 IS NULL OR source_snapshot = ?1) "
                          "AND (?2 IS NULL OR state IN (" RESTORE_STATE_SLOTS ")) "
                          "ORDER BY created_usec, id",
    [STMT_RESTORE_PROGRESS] = "UPDATE restores SET items_done = ?2, items_total = ?3, "
                              "progress_pct = ?4, bytes_transferred = ?5 WHERE id = ?1",
    [STMT_RESTORE_STATE] =
        "UPDATE restores SET state = ?2, error = ?3, "
        "started_usec = CASE WHEN ?5 THEN COALESCE(started_usec, ?4) ELSE started_usec END, "
        "finished_usec = CASE WHEN ?6 THEN COALESCE(finished_usec, ?4) ELSE finished_usec END "
        "WHERE id = ?1",
    [STMT_RESTORE_INTERRUPT] = "UPDATE restores SET state = ?1, error = ?2, "
                               "finished_usec = COALESCE(finished_usec, ?3) "
                               "WHERE state IN (?4, ?5)",
};

struct MsCatalog {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *statements[_STMT_MAX]; /* compiled on first use, kept until close */
    unsigned n_prepared;
};

/* Keep the first failure of a chain of calls that return 0 (SQLITE_OK) on success. */
#define FIRST_FAILURE(r, call) ((r) = (r) != 0 ? (r) : (call))

/* ---- state names ---- */

MS_DEFINE_STRING_TABLE_LOOKUP(ms_policy_state, MsPolicyState, policy_state_names,
                              _MS_POLICY_STATE_INVALID)
MS_DEFINE_STRING_TABLE_LOOKUP(ms_snapshot_state, MsSnapshotState, snapshot_state_names,
                              _MS_SNAPSHOT_STATE_INVALID)
MS_DEFINE_STRING_TABLE_LOOKUP(ms_restore_state, MsRestoreState, restore_state_names,
                              _MS_RESTORE_STATE_INVALID)
MS_DEFINE_STRING_TABLE_LOOKUP(ms_verify_state, MsVerifyState, verify_state_names,
                              _MS_VERIFY_STATE_INVALID)

/* ---- errors ---- */

static int sqlite_errno(sqlite3 *db, int rc) {
    int sys = db ? sqlite3_system_errno(db) : 0;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EBUSY;
    case SQLITE_NOMEM:
        return ENOMEM;
    case SQLITE_READONLY:
        return EROFS;
    case SQLITE_FULL:
        return ENOSPC;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return EACCES;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return EBADMSG;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
        return EOVERFLOW;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
        return EINVAL;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
        return sys > 0 ? sys : EIO;
    default:
        return EIO;
    }
}

static const char *sqlite_hint(int rc) {
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return " (another process held the catalog locked for too long: is a second mongosnapd, "
               "or an sqlite3 shell, using it?)";
    case SQLITE_READONLY:
        return " (the catalog cannot be written: check that the state directory is writable, "
               "e.g. StateDirectory= or ReadWritePaths= in the unit)";
    case SQLITE_FULL:
        return " (the file system holding the state directory is full: free space)";
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return " (check that the state directory exists and that the user running mongosnapd "
               "may create and write files in it)";
    case SQLITE_CORRUPT:
        return " (the catalog file is damaged: stop mongosnapd and move the file aside; the "
               "snapshots in the store are not affected, only the record of them)";
    case SQLITE_NOTADB:
        return " (the file is not an SQLite database: move it aside)";
    case SQLITE_IOERR:
        return " (input/output error: check the disk and the kernel log)";
    default:
        return "";
    }
}

/* "recording snapshot 'x' in catalog '/var/lib/mongosnap/mongosnap.db': disk I/O error (hint)" */
static int catalog_error(const MsCatalog *c, MsError *e, int rc, const char *fmt, ...)
    _printf_(4, 5);
static int catalog_error(const MsCatalog *c, MsError *e, int rc, const char *fmt, ...) {
    char context[CATALOG_CONTEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    /* sqlite3_errmsg() describes the connection's last failure; a failure we made up ourselves
     * (a value out of range while binding) is described by its code alone. */
    const char *what =
        c->db && sqlite3_extended_errcode(c->db) == rc ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
    return ms_error_set(e, sqlite_errno(c->db, rc), "%s in catalog '%s': %s%s", context, c->path,
                        what, sqlite_hint(rc));
}

/* ---- statements ---- */

static int catalog_prepare(MsCatalog *c, const char *sql, unsigned flags, sqlite3_stmt **ret,
                           MsError *e) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, flags, &s, NULL);
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "compiling the statement \"%s\"", sql);
    c->n_prepared++;
    *ret = s;
    return 0;
}

/* The cached statement for id, compiled on first use. The caller resets it after use. */
static int catalog_statement(MsCatalog *c, CatalogStatement id, sqlite3_stmt **ret, MsError *e) {
    if (!c->statements[id]) {
        /* PERSISTENT: these live as long as the connection, so SQLite should not take their
         * memory from its short-lived lookaside pool. */
        int r =
            catalog_prepare(c, statement_sql[id], SQLITE_PREPARE_PERSISTENT, &c->statements[id], e);
        if (r < 0)
            return r;
    }
    *ret = c->statements[id];
    return 0;
}

/* Ready a used statement for its next use and drop the bound values (they point into the
 * caller's strings). */
static void statement_resetp(sqlite3_stmt **s) {
    if (*s) {
        sqlite3_reset(*s);
        sqlite3_clear_bindings(*s);
    }
}
#define _cleanup_reset_ _cleanup_(statement_resetp)

static void statement_finalizep(sqlite3_stmt **s) {
    sqlite3_finalize(*s);
}
#define _cleanup_finalize_ _cleanup_(statement_finalizep)

/* The caller's strings outlive the statement's use (it is reset before we return), so SQLite
 * need not copy them. */
static int bind_text(sqlite3_stmt *s, int i, const char *v) {
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

/* Callers check values with check_fits() first, for the message; this only refuses to wrap. */
static int bind_u64(sqlite3_stmt *s, int i, uint64_t v) {
    if (v > INT64_MAX)
        return SQLITE_TOOBIG;
    return sqlite3_bind_int64(s, i, (sqlite3_int64) v);
}

/* 0 ("not yet") is stored as NULL, so that the table reads right in an sqlite3 shell too. */
static int bind_usec(sqlite3_stmt *s, int i, uint64_t v) {
    return v == 0 ? sqlite3_bind_null(s, i) : bind_u64(s, i, v);
}

static int column_strdup(sqlite3_stmt *s, int col, char **ret) {
    if (sqlite3_column_type(s, col) == SQLITE_NULL) {
        *ret = NULL;
        return 0;
    }
    const char *t = (const char *) sqlite3_column_text(s, col);
    char *copy = t ? strdup(t) : NULL;
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

static uint64_t column_u64(sqlite3_stmt *s, int col) {
    sqlite3_int64 v = sqlite3_column_int64(s, col); /* NULL reads as 0 */
    return v < 0 ? 0 : (uint64_t) v;
}

/* Step a statement that returns no rows; SQLITE_OK or the failure. */
static int step_done(sqlite3_stmt *s) {
    int rc = sqlite3_step(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int catalog_run(MsCatalog *c, CatalogStatement id, MsError *e) {
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, id, &s, e);
    if (r < 0)
        return r;
    int rc = step_done(s);
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "running \"%s\"", statement_sql[id]);
    return 0;
}

static void catalog_rollback(MsCatalog *c) {
    /* Only reached after a failure that is already reported; a failing rollback adds nothing
     * a person could act on, and SQLite rolls back on close anyway. */
    catalog_run(c, STMT_ROLLBACK, NULL);
}

static bool is_blank(const char *s) {
    return !s || !*s;
}

static bool percent_is_valid(double pct) {
    return pct >= 0.0 && pct <= MS_PERCENT_DONE; /* false for NaN too */
}

/* SQLite integers are signed: refuse what would come back negative, with a message that names
 * the value (binding would only say "too big"). */
static int check_fits(const char *what, const char *id, const char *column, uint64_t v,
                      MsError *e) {
    if (v <= INT64_MAX)
        return 0;
    return ms_error_set(e, EOVERFLOW,
                        "%s '%s': %s %" PRIu64 " is larger than the catalog can store (%" PRId64
                        " at most)",
                        what, id, column, v, INT64_MAX);
}

/* ---- opening and migrations ---- */

static int catalog_query_int(MsCatalog *c, const char *sql, int64_t *ret, MsError *e) {
    _cleanup_finalize_ sqlite3_stmt *s = NULL;
    int r = catalog_prepare(c, sql, 0, &s, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW)
        return catalog_error(c, e, rc == SQLITE_DONE ? SQLITE_NOTFOUND : rc,
                             "reading the catalog's settings (%s)", sql);
    *ret = sqlite3_column_int64(s, 0);
    return 0;
}

static int catalog_exec(MsCatalog *c, const char *sql, MsError *e) {
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "running \"%.80s\"", sql);
    return 0;
}

/* journal_mode=WAL: readers (D-Bus property reads, listings) never wait for the writer
 * recording a worker's progress, and a commit is one append to the log. The mode is stored in
 * the file, so every later connection gets it too. */
static int catalog_enable_wal(MsCatalog *c, MsError *e) {
    _cleanup_finalize_ sqlite3_stmt *s = NULL;
    int r = catalog_prepare(c, "PRAGMA journal_mode = WAL", 0, &s, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW)
        return catalog_error(c, e, rc, "switching to write-ahead logging");
    const char *mode = (const char *) sqlite3_column_text(s, 0);
    if (!mode || strcmp(mode, "wal") != 0)
        return ms_error_set(e, EOPNOTSUPP,
                            "catalog '%s' cannot use write-ahead logging (its journal mode stays "
                            "'%s'): keep the state directory on a local file system",
                            c->path, mode ? mode : "unknown");
    return 0;
}

/* The file-level settings; only run on a file known to be a catalog (or a new one), since
 * switching to WAL rewrites the database header. */
static int catalog_configure(MsCatalog *c, MsError *e) {
    int r = catalog_enable_wal(c, e);
    if (r < 0)
        return r;
    /* synchronous=NORMAL: in WAL mode a commit is not fsync'd, only checkpoints are. A crash
     * of the agent loses nothing; a power loss may lose the last commits but never leaves the
     * file inconsistent. The catalog records progress many times a second, and what a power
     * loss can take back (a progress figure, a state change of a task the restart marks
     * interrupted anyway) is worth less than an fsync per update. */
    r = catalog_exec(c, "PRAGMA synchronous = NORMAL", e);
    if (r < 0)
        return r;
    /* Off by default in SQLite, per connection: without it a snapshot could name a policy, or
     * a restore a snapshot, that the catalog does not hold. */
    r = catalog_exec(c, "PRAGMA foreign_keys = ON", e);
    if (r < 0)
        return r;
    int64_t fk = 0;
    r = catalog_query_int(c, "PRAGMA foreign_keys", &fk, e);
    if (r < 0)
        return r;
    if (fk != 1)
        return ms_error_set(e, EOPNOTSUPP,
                            "the SQLite library in use was built without foreign key support; "
                            "mongosnap needs a standard build of libsqlite3");
    return 0;
}

/* Refuse what we must not touch, before anything is written to the file. */
static int catalog_check_identity(MsCatalog *c, int64_t *ret_version, MsError *e) {
    int64_t app_id = 0, version = 0, objects = 0;
    int r = catalog_query_int(c, "PRAGMA application_id", &app_id, e);
    if (r < 0)
        return r;
    if (app_id != 0 && app_id != CATALOG_APPLICATION_ID)
        return ms_error_set(e, EBADMSG,
                            "'%s' is an SQLite database of another application (application id "
                            "0x%08" PRIx64 "), not a mongosnap catalog: move it aside or point "
                            "mongosnapd at another state directory",
                            c->path, (uint64_t) (uint32_t) app_id);
    r = catalog_query_int(c, "PRAGMA user_version", &version, e);
    if (r < 0)
        return r;
    if (version > MS_CATALOG_SCHEMA_VERSION)
        return ms_error_set(e, EPROTONOSUPPORT,
                            "catalog '%s' has schema version %" PRId64 ", newer than the %d this "
                            "mongosnap %s understands: it was written by a newer mongosnapd; run "
                            "that version again, or move the catalog aside to start an empty one",
                            c->path, version, MS_CATALOG_SCHEMA_VERSION, MONGOSNAP_VERSION);
    if (version < 0)
        return ms_error_set(e, EBADMSG,
                            "catalog '%s' has an invalid schema version %" PRId64 ": move it aside",
                            c->path, version);
    r = catalog_query_int(c, "SELECT count(*) FROM sqlite_master", &objects, e);
    if (r < 0)
        return r;
    if ((version == 0 && objects > 0) || (version > 0 && app_id != CATALOG_APPLICATION_ID))
        return ms_error_set(e, EBADMSG,
                            "'%s' is an SQLite database but not a mongosnap catalog: move it "
                            "aside or point mongosnapd at another state directory",
                            c->path);
    *ret_version = version;
    return 0;
}

/* Rows that break a reference (PRAGMA foreign_key_check reports them whether enforcement is on
 * or off). */
static int catalog_count_foreign_key_problems(MsCatalog *c, int64_t *ret, MsError *e) {
    return catalog_query_int(c, "SELECT count(*) FROM pragma_foreign_key_check", ret, e);
}

/* The migration proper; the caller has turned foreign keys off. */
static int catalog_migrate_unenforced(MsCatalog *c, MsError *e) {
    int r = catalog_run(c, STMT_BEGIN, e);
    if (r < 0)
        return r;
    /* Read again under the write lock: another connection may have migrated meanwhile. */
    int64_t version = 0;
    r = catalog_check_identity(c, &version, e);
    if (r < 0) {
        catalog_rollback(c);
        return r;
    }
    if (version == MS_CATALOG_SCHEMA_VERSION) {
        catalog_rollback(c);
        return 0;
    }
    /* A table rebuild must not break references (step 10 of SQLite's procedure). Rows that
     * were broken before (written behind the catalog's back) are integrity_check's to report;
     * refusing to migrate for them would only keep mongosnapd from starting. */
    int64_t problems_before = 0, problems_after = 0;
    r = catalog_count_foreign_key_problems(c, &problems_before, e);
    if (r < 0) {
        catalog_rollback(c);
        return r;
    }
    for (int64_t v = version; v < MS_CATALOG_SCHEMA_VERSION; v++) {
        r = catalog_exec(c, migrations[v], e);
        if (r < 0) {
            catalog_rollback(c);
            ms_error_prefix(e,
                            "migrating the catalog from schema version %" PRId64 " to %" PRId64
                            " failed, it is left at version %" PRId64 ": ",
                            v, v + 1, version);
            return r;
        }
    }
    r = catalog_count_foreign_key_problems(c, &problems_after, e);
    if (r >= 0 && problems_after > problems_before)
        r = ms_error_set(e, EBADMSG,
                         "migrating catalog '%s' from schema version %" PRId64 " to %d would break "
                         "%" PRId64 " reference%s between rows; it is left at version %" PRId64,
                         c->path, version, MS_CATALOG_SCHEMA_VERSION,
                         problems_after - problems_before,
                         problems_after - problems_before == 1 ? "" : "s", version);
    if (r < 0) {
        catalog_rollback(c);
        return r;
    }
    /* PRAGMAs take no bound parameters; both values are constants of this program. */
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA application_id = %d", CATALOG_APPLICATION_ID);
    r = catalog_exec(c, sql, e);
    if (r >= 0) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MS_CATALOG_SCHEMA_VERSION);
        r = catalog_exec(c, sql, e);
    }
    if (r >= 0)
        r = catalog_run(c, STMT_COMMIT, e);
    if (r < 0) {
        catalog_rollback(c);
        return r;
    }
    return 0;
}

/* Steps may rebuild a table (drop and rename), which foreign key enforcement forbids while
 * other tables refer to it; SQLite ignores PRAGMA foreign_keys inside a transaction, so it is
 * switched off around the migration's transaction and on again whatever the outcome. */
static int catalog_migrate(MsCatalog *c, MsError *e) {
    int r = catalog_exec(c, "PRAGMA foreign_keys = OFF", e);
    if (r < 0)
        return r;
    r = catalog_migrate_unenforced(c, e);
    /* The first failure is the one reported (MsError keeps it); a migration that failed is
     * reported as such even if switching back failed too. */
    int k = catalog_exec(c, "PRAGMA foreign_keys = ON", e);
    int64_t fk = 0;
    if (k >= 0)
        k = catalog_query_int(c, "PRAGMA foreign_keys", &fk, e);
    if (k >= 0 && fk != 1)
        k = ms_error_set(e, EIO,
                         "foreign key enforcement of catalog '%s' could not be switched on again "
                         "after its migration",
                         c->path);
    return r < 0 ? r : k < 0 ? k : 0;
}

int ms_catalog_open(const char *path, MsCatalog **ret_catalog, MsError *e) {
    if (is_blank(path))
        return ms_error_set(e, EINVAL, "no catalog path given");
    /* Connections are opened without SQLite's mutex (one per thread, see catalog.h), which
     * needs a library built for threads. */
    if (sqlite3_threadsafe() == 0)
        return ms_error_set(e, EOPNOTSUPP,
                            "the SQLite library in use was built without thread support "
                            "(SQLITE_THREADSAFE=0); mongosnap needs a standard build of "
                            "libsqlite3");

    _cleanup_(ms_catalog_closep) MsCatalog *c = calloc(1, sizeof(*c));
    if (!c)
        return ms_error_set(e, ENOMEM, "out of memory opening catalog '%s'", path);
    c->path = strdup(path);
    if (!c->path)
        return ms_error_set(e, ENOMEM, "out of memory opening catalog '%s'", path);

    /* The catalog is readable by its owner only, whatever the umask: SQLite would create it
     * 0666 & ~umask, and it creates the -wal and -shm files with the main file's mode. An
     * existing file with group or other bits is narrowed too. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    /* When even this fails, SQLite's open below fails the same way and explains it. */
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0) {
            int err = errno;
            close(fd);
            return ms_error_set(e, err, "cannot make catalog '%s' private (mode 0600): %s", path,
                                strerror(err));
        }
        close(fd);
    }
    int rc = sqlite3_open_v2(
        path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return ms_error_set(e, sqlite_errno(c->db, rc), "cannot open catalog '%s': %s%s", path,
                            c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc), sqlite_hint(rc));

    rc = sqlite3_extended_result_codes(c->db, 1);
    FIRST_FAILURE(rc, sqlite3_busy_timeout(c->db, CATALOG_BUSY_TIMEOUT_MSEC));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "configuring the connection");

    int64_t version = 0;
    int r = catalog_check_identity(c, &version, e);
    if (r < 0)
        return r;
    r = catalog_configure(c, e);
    if (r < 0)
        return r;
    if (version < MS_CATALOG_SCHEMA_VERSION) {
        r = catalog_migrate(c, e);
        if (r < 0)
            return r;
    }
    *ret_catalog = TAKE_PTR(c);
    return 0;
}

MsCatalog *ms_catalog_close(MsCatalog *c) {
    if (!c)
        return NULL;
    for (size_t i = 0; i < _STMT_MAX; i++)
        sqlite3_finalize(c->statements[i]);
    /* The last connection to close checkpoints the log into the database and removes it. */
    sqlite3_close(c->db);
    free(c->path);
    free(c);
    return NULL;
}

unsigned ms_catalog_statements_prepared(const MsCatalog *c) {
    return c ? c->n_prepared : 0;
}

/* ---- policies ---- */

MsPolicyRuntime *ms_policy_runtime_free(MsPolicyRuntime *p) {
    if (!p)
        return NULL;
    free(p->name);
    free(p->last_result);
    free(p);
    return NULL;
}

void ms_policy_runtime_list_free(MsPolicyRuntime **list, size_t n) {
    for (size_t i = 0; list && i < n; i++)
        ms_policy_runtime_free(list[i]);
    free(list);
}

static int read_policy(MsCatalog *c, sqlite3_stmt *s, MsPolicyRuntime **ret, MsError *e) {
    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *p = calloc(1, sizeof(*p));
    if (!p)
        return ms_error_set(e, ENOMEM, "out of memory reading the catalog");
    int r = 0;
    FIRST_FAILURE(r, column_strdup(s, POL_NAME, &p->name));
    FIRST_FAILURE(r, column_strdup(s, POL_LAST_RESULT, &p->last_result));
    if (r < 0)
        return ms_error_set(e, -r, "out of memory reading the catalog");
    const char *state = (const char *) sqlite3_column_text(s, POL_STATE);
    p->state = ms_policy_state_from_string(state);
    if (p->state < 0)
        return ms_error_set(e, EBADMSG,
                            "policy '%s' has an unknown state '%s' in catalog '%s': the catalog "
                            "is damaged or was edited by hand",
                            p->name, state ? state : "(null)", c->path);
    p->last_run_usec = column_u64(s, POL_LAST_RUN);
    p->next_run_usec = column_u64(s, POL_NEXT_RUN);
    p->last_seq = column_u64(s, POL_LAST_SEQ);
    *ret = TAKE_PTR(p);
    return 0;
}

int ms_catalog_get_policy(MsCatalog *c, const char *name, MsPolicyRuntime **ret_policy,
                          MsError *e) {
    if (is_blank(name))
        return ms_error_set(e, EINVAL, "no policy name given");
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, STMT_POLICY_GET, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, name);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return ms_error_set(e, ENOENT, "policy '%s' is not in catalog '%s'", name, c->path);
    if (rc != SQLITE_ROW)
        return catalog_error(c, e, rc, "reading policy '%s'", name);
    return read_policy(c, s, ret_policy, e);
}

int ms_catalog_set_policy(MsCatalog *c, const MsPolicyRuntime *p, MsError *e) {
    if (!p || is_blank(p->name))
        return ms_error_set(e, EINVAL, "a policy's runtime state needs the policy's name");
    const char *state = ms_policy_state_to_string(p->state);
    if (!state)
        return ms_error_set(e, EINVAL, "invalid state %d for policy '%s'", (int) p->state, p->name);
    int r = check_fits("policy", p->name, "last_run_usec", p->last_run_usec, e);
    FIRST_FAILURE(r, check_fits("policy", p->name, "next_run_usec", p->next_run_usec, e));
    if (r < 0)
        return r;
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    r = catalog_statement(c, STMT_POLICY_SET, &s, e);
    if (r < 0)
        return r;
    int rc = SQLITE_OK;
    FIRST_FAILURE(rc, bind_text(s, POL_NAME + 1, p->name));
    FIRST_FAILURE(rc, bind_text(s, POL_STATE + 1, state));
    FIRST_FAILURE(rc, bind_usec(s, POL_LAST_RUN + 1, p->last_run_usec));
    FIRST_FAILURE(rc, bind_text(s, POL_LAST_RESULT + 1, p->last_result));
    FIRST_FAILURE(rc, bind_usec(s, POL_NEXT_RUN + 1, p->next_run_usec));
    FIRST_FAILURE(rc, bind_u64(s, POL_LAST_SEQ + 1, p->last_seq));
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "recording policy '%s'", p->name);
    return 0;
}

int ms_catalog_list_policies(MsCatalog *c, MsPolicyRuntime ***ret_policies, size_t *ret_n,
                             MsError *e) {
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, STMT_POLICY_LIST, &s, e);
    if (r < 0)
        return r;
    MsPolicyRuntime **list = NULL;
    size_t n = 0, allocated = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == allocated) {
            size_t grown = allocated ? allocated * 2 : 8;
            MsPolicyRuntime **l = realloc(list, grown * sizeof(*l));
            if (!l) {
                ms_policy_runtime_list_free(list, n);
                return ms_error_set(e, ENOMEM, "out of memory listing policies");
            }
            list = l;
            allocated = grown;
        }
        r = read_policy(c, s, &list[n], e);
        if (r < 0) {
            ms_policy_runtime_list_free(list, n);
            return r;
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        ms_policy_runtime_list_free(list, n);
        return catalog_error(c, e, rc, "listing policies");
    }
    *ret_policies = list;
    *ret_n = n;
    return 0;
}

/* ---- snapshots ---- */

void ms_task_core_clear(MsTaskCore *c) {
    free(c->id);
    free(c->node);
    free(c->error);
    c->id = c->node = c->error = NULL;
}

int ms_task_core_finish(MsTaskCore *c, const char *error, bool completed, uint64_t now_usec) {
    c->finished_usec = now_usec;
    c->phase[0] = '\0';
    if (completed) {
        c->progress_pct = MS_PERCENT_DONE;
        if (c->items_total < c->items_done)
            c->items_total = c->items_done;
    }
    char *copy = error ? strdup(error) : NULL;
    free(c->error);
    c->error = copy;
    return error && !copy ? -ENOMEM : 0;
}

MsSnapshotRecord *ms_snapshot_record_free(MsSnapshotRecord *r) {
    if (!r)
        return NULL;
    ms_task_core_clear(&r->core);
    free(r->policy);
    free(r->archive_key);
    free(r->manifest_key);
    free(r->store);
    free(r->log_cursor);
    free(r->verify_error);
    free(r->kept_by);
    free(r->parts);
    free(r);
    return NULL;
}

void ms_snapshot_record_list_free(MsSnapshotRecord **list, size_t n) {
    for (size_t i = 0; list && i < n; i++)
        ms_snapshot_record_free(list[i]);
    free(list);
}

/* ---- what snapshots and restores share (MsTaskCore): one implementation ---- */

/* Where a kind's core fields are in its rows (-1: not a column of the kind's table). */
typedef struct CoreColumns {
    int id, node, error, created, started, finished, items_done, items_total, progress, bytes;
} CoreColumns;

/* A kind of task record in the catalog: its table's statements, states and row reader. */
typedef struct TaskKind {
    const char *noun, *list_hint; /* "snapshot"; "mongosnapctl list-snapshots" */
    CatalogStatement list_stmt, get_stmt, progress_stmt, state_stmt;
    int n_states;
    const char *(*state_name)(int i);
    CoreColumns cols;
    int (*read)(MsCatalog *c, sqlite3_stmt *s, void **ret, MsError *e);
    void (*free)(void *r);
} TaskKind;

static int read_core(sqlite3_stmt *s, const CoreColumns *col, MsTaskCore *r) {
    int k = 0;
    FIRST_FAILURE(k, column_strdup(s, col->id, &r->id));
    if (col->node >= 0)
        FIRST_FAILURE(k, column_strdup(s, col->node, &r->node));
    FIRST_FAILURE(k, column_strdup(s, col->error, &r->error));
    r->created_usec = column_u64(s, col->created);
    r->started_usec = column_u64(s, col->started);
    r->finished_usec = column_u64(s, col->finished);
    r->items_done = column_u64(s, col->items_done);
    r->items_total = column_u64(s, col->items_total);
    r->progress_pct = sqlite3_column_double(s, col->progress);
    r->bytes_transferred = column_u64(s, col->bytes);
    return k;
}

static int bind_core(sqlite3_stmt *s, const CoreColumns *col, const MsTaskCore *r) {
    int rc = SQLITE_OK;
    FIRST_FAILURE(rc, bind_text(s, col->id + 1, r->id));
    if (col->node >= 0)
        FIRST_FAILURE(rc, bind_text(s, col->node + 1, r->node));
    FIRST_FAILURE(rc, bind_text(s, col->error + 1, r->error));
    FIRST_FAILURE(rc, bind_u64(s, col->created + 1, r->created_usec));
    FIRST_FAILURE(rc, bind_usec(s, col->started + 1, r->started_usec));
    FIRST_FAILURE(rc, bind_usec(s, col->finished + 1, r->finished_usec));
    FIRST_FAILURE(rc, bind_u64(s, col->items_done + 1, r->items_done));
    FIRST_FAILURE(rc, bind_u64(s, col->items_total + 1, r->items_total));
    FIRST_FAILURE(rc, sqlite3_bind_double(s, col->progress + 1, r->progress_pct));
    FIRST_FAILURE(rc, bind_u64(s, col->bytes + 1, r->bytes_transferred));
    return rc;
}

/* The core's numbers must fit SQLite's signed 64 bits, its progress 0..100. */
static int validate_core(const TaskKind *k, const MsTaskCore *r, MsError *e) {
    if (!percent_is_valid(r->progress_pct))
        return ms_error_set(e, EINVAL, "progress %g%% of %s '%s' is outside 0..100",
                            r->progress_pct, k->noun, r->id);
    const struct {
        const char *column;
        uint64_t value;
    } numbers[] = {
        {"created_usec", r->created_usec},   {"started_usec", r->started_usec},
        {"finished_usec", r->finished_usec}, {"items_done", r->items_done},
        {"items_total", r->items_total},     {"bytes_transferred", r->bytes_transferred},
    };
    for (size_t i = 0; i < ELEMENTSOF(numbers); i++) {
        int n = check_fits(k->noun, r->id, numbers[i].column, numbers[i].value, e);
        if (n < 0)
            return n;
    }
    return 0;
}

/* A named column (state, origin, ...) read back: its value from from_string, or EBADMSG saying
 * the catalog was damaged or edited by hand. */
static int read_named(MsCatalog *c, sqlite3_stmt *s, int col, const TaskKind *k, const char *id,
                      const char *what, int (*from_string)(const char *), int *ret, MsError *e) {
    const char *name = (const char *) sqlite3_column_text(s, col);
    int v = from_string(name);
    if (v < 0)
        return ms_error_set(e, EBADMSG,
                            "%s '%s' has an unknown %s '%s' in catalog '%s': the catalog is "
                            "damaged or was edited by hand",
                            k->noun, id, what, name ? name : "(null)", c->path);
    *ret = v;
    return 0;
}

static int snapshot_state_from(const char *s) {
    return (int) ms_snapshot_state_from_string(s);
}

static int restore_state_from(const char *s) {
    return (int) ms_restore_state_from_string(s);
}

static int origin_from(const char *s) {
    return (int) ms_snapshot_origin_from_string(s);
}

static int task_not_found(MsCatalog *c, MsError *e, const TaskKind *k, const char *id) {
    return ms_error_set(e, ENOENT, "%s '%s' is not in catalog '%s' (%s shows the known ones)",
                        k->noun, id, c->path, k->list_hint);
}

static int get_task(MsCatalog *c, const TaskKind *k, const char *id, void **ret, MsError *e) {
    if (is_blank(id))
        return ms_error_set(e, EINVAL, "no %s id given", k->noun);
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, k->get_stmt, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return task_not_found(c, e, k, id);
    if (rc != SQLITE_ROW)
        return catalog_error(c, e, rc, "reading %s '%s'", k->noun, id);
    return k->read(c, s, ret, e);
}

/* Bind a state set to parameters 2, 3, ...: the chosen states first, NULL for the rest (left
 * unbound: clear_bindings made them NULL). */
static int bind_state_set(sqlite3_stmt *s, unsigned states, int n_states,
                          const char *(*to_string)(int) ) {
    int param = 2, rc = SQLITE_OK;
    for (int i = 0; i < n_states; i++)
        if (states & MS_STATE_BIT(i))
            FIRST_FAILURE(rc, bind_text(s, param++, to_string(i)));
    return rc;
}

/* The kind's records whose first list parameter is key (NULL: all) in the states given. */
static int list_tasks(MsCatalog *c, const TaskKind *k, const char *key, unsigned states,
                      void ***ret_records, size_t *ret_n, MsError *e) {
    if (states >> k->n_states)
        return ms_error_set(e, EINVAL, "invalid %s state set 0x%x", k->noun, states);
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, k->list_stmt, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, key);
    FIRST_FAILURE(rc, bind_state_set(s, states, k->n_states, k->state_name));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "listing %ss", k->noun);
    void **list = NULL;
    size_t n = 0, allocated = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == allocated) {
            size_t grown = allocated ? allocated * 2 : 16;
            void **l = realloc(list, grown * sizeof(*l));
            if (!l) {
                r = ms_error_set(e, ENOMEM, "out of memory listing %ss", k->noun);
                break;
            }
            list = l;
            allocated = grown;
        }
        r = k->read(c, s, &list[n], e);
        if (r < 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = catalog_error(c, e, rc, "listing %ss", k->noun);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            k->free(list[i]);
        free(list);
        return r;
    }
    *ret_records = list;
    *ret_n = n;
    return 0;
}

static int update_progress(MsCatalog *c, const TaskKind *k, const char *id, uint64_t items_done,
                           uint64_t items_total, double progress_pct, uint64_t bytes_transferred,
                           MsError *e) {
    if (is_blank(id))
        return ms_error_set(e, EINVAL, "no %s id given", k->noun);
    if (!percent_is_valid(progress_pct))
        return ms_error_set(e, EINVAL, "progress %g%% of %s '%s' is outside 0..100",
                            progress_pct, k->noun, id);
    int r = check_fits(k->noun, id, "items_done", items_done, e);
    FIRST_FAILURE(r, check_fits(k->noun, id, "items_total", items_total, e));
    FIRST_FAILURE(r, check_fits(k->noun, id, "bytes_transferred", bytes_transferred, e));
    if (r < 0)
        return r;
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    r = catalog_statement(c, k->progress_stmt, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, id);
    FIRST_FAILURE(rc, bind_u64(s, 2, items_done));
    FIRST_FAILURE(rc, bind_u64(s, 3, items_total));
    FIRST_FAILURE(rc, sqlite3_bind_double(s, 4, progress_pct));
    FIRST_FAILURE(rc, bind_u64(s, 5, bytes_transferred));
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "recording the progress of %s '%s'", k->noun, id);
    if (sqlite3_changes(c->db) == 0)
        return task_not_found(c, e, k, id);
    return 0;
}

static const char *snapshot_state_name(int i) {
    return ms_snapshot_state_to_string((MsSnapshotState) i);
}

static const char *restore_state_name(int i) {
    return ms_restore_state_to_string((MsRestoreState) i);
}

static int read_snapshot(MsCatalog *c, sqlite3_stmt *s, MsSnapshotRecord **ret, MsError *e);
static int read_restore(MsCatalog *c, sqlite3_stmt *s, MsRestoreRecord **ret, MsError *e);

static int read_snapshot_any(MsCatalog *c, sqlite3_stmt *s, void **ret, MsError *e) {
    return read_snapshot(c, s, (MsSnapshotRecord **) ret, e);
}

static int read_restore_any(MsCatalog *c, sqlite3_stmt *s, void **ret, MsError *e) {
    return read_restore(c, s, (MsRestoreRecord **) ret, e);
}

static void free_snapshot_any(void *r) {
    ms_snapshot_record_free(r);
}

static void free_restore_any(void *r) {
    ms_restore_record_free(r);
}

static const TaskKind SNAPSHOTS = {
    .noun = "snapshot",
    .list_hint = "mongosnapctl list-snapshots",
    .list_stmt = STMT_SNAPSHOT_LIST,
    .get_stmt = STMT_SNAPSHOT_GET,
    .progress_stmt = STMT_SNAPSHOT_PROGRESS,
    .state_stmt = STMT_SNAPSHOT_STATE,
    .n_states = _MS_SNAPSHOT_STATE_MAX,
    .state_name = snapshot_state_name,
    .cols = {SNAP_ID, SNAP_NODE, SNAP_ERROR, SNAP_CREATED, SNAP_STARTED, SNAP_FINISHED,
             SNAP_ITEMS_DONE, SNAP_ITEMS_TOTAL, SNAP_PROGRESS, SNAP_BYTES},
    .read = read_snapshot_any,
    .free = free_snapshot_any,
};

static const TaskKind RESTORES = {
    .noun = "restore",
    .list_hint = "mongosnapctl list-restores",
    .list_stmt = STMT_RESTORE_LIST,
    .get_stmt = STMT_RESTORE_GET,
    .progress_stmt = STMT_RESTORE_PROGRESS,
    .state_stmt = STMT_RESTORE_STATE,
    .n_states = _MS_RESTORE_STATE_MAX,
    .state_name = restore_state_name,
    .cols = {REST_ID, -1, REST_ERROR, REST_CREATED, REST_STARTED, REST_FINISHED,
             REST_ITEMS_DONE, REST_ITEMS_TOTAL, REST_PROGRESS, REST_BYTES},
    .read = read_restore_any,
    .free = free_restore_any,
};

static int read_snapshot(MsCatalog *c, sqlite3_stmt *s, MsSnapshotRecord **ret, MsError *e) {
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return ms_error_set(e, ENOMEM, "out of memory reading the catalog");
    int r = read_core(s, &SNAPSHOTS.cols, &rec->core);
    FIRST_FAILURE(r, column_strdup(s, SNAP_POLICY, &rec->policy));
    FIRST_FAILURE(r, column_strdup(s, SNAP_ARCHIVE_KEY, &rec->archive_key));
    FIRST_FAILURE(r, column_strdup(s, SNAP_MANIFEST_KEY, &rec->manifest_key));
    FIRST_FAILURE(r, column_strdup(s, SNAP_STORE, &rec->store));
    FIRST_FAILURE(r, column_strdup(s, SNAP_LOG_CURSOR, &rec->log_cursor));
    FIRST_FAILURE(r, column_strdup(s, SNAP_VERIFY_ERROR, &rec->verify_error));
    FIRST_FAILURE(r, column_strdup(s, SNAP_PARTS, &rec->parts));
    if (r < 0)
        return ms_error_set(e, -r, "out of memory reading the catalog");
    int v = 0;
    r = read_named(c, s, SNAP_STATE, &SNAPSHOTS, rec->id, "state", snapshot_state_from, &v, e);
    if (r < 0)
        return r;
    rec->state = (MsSnapshotState) v;
    /* NULL is "never verified"; its name "" is never stored. */
    if (sqlite3_column_type(s, SNAP_VERIFY_STATE) == SQLITE_NULL)
        rec->verify_state = MS_VERIFY_NEVER;
    else {
        const char *verify = (const char *) sqlite3_column_text(s, SNAP_VERIFY_STATE);
        rec->verify_state = ms_verify_state_from_string(verify);
        if (rec->verify_state <= MS_VERIFY_NEVER)
            return ms_error_set(e, EBADMSG,
                                "snapshot '%s' has an unknown verification state '%s' in catalog "
                                "'%s': the catalog is damaged or was edited by hand",
                                rec->id, verify ? verify : "(null)", c->path);
    }
    rec->verify_finished_usec = column_u64(s, SNAP_VERIFY_FINISHED);
    rec->expire_usec = column_u64(s, SNAP_EXPIRE);
    rec->point_in_time = sqlite3_column_int(s, SNAP_POINT_IN_TIME) != 0;
    rec->seq = column_u64(s, SNAP_SEQ);
    rec->detached_usec = column_u64(s, SNAP_DETACHED);
    r = read_named(c, s, SNAP_ORIGIN, &SNAPSHOTS, rec->id, "origin", origin_from, &v, e);
    if (r < 0)
        return r;
    rec->origin = (MsSnapshotOrigin) v;
    *ret = TAKE_PTR(rec);
    return 0;
}

static int snapshot_validate(const MsSnapshotRecord *r, MsError *e) {
    if (!r || is_blank(r->id) || is_blank(r->policy) || is_blank(r->node))
        return ms_error_set(e, EINVAL,
                            "a snapshot record needs an id (task name), a policy and a node");
    if (!ms_snapshot_state_to_string(r->state))
        return ms_error_set(e, EINVAL, "invalid state %d for snapshot '%s'", (int) r->state, r->id);
    if (!ms_verify_state_to_string(r->verify_state))
        return ms_error_set(e, EINVAL, "invalid verification state %d for snapshot '%s'",
                            (int) r->verify_state, r->id);
    if (!ms_snapshot_origin_to_string(r->origin))
        return ms_error_set(e, EINVAL, "invalid origin %d for snapshot '%s'", (int) r->origin,
                            r->id);
    int k = validate_core(&SNAPSHOTS, &r->core, e);
    if (k < 0)
        return k;
    const struct {
        const char *column;
        uint64_t value;
    } numbers[] = {
        {"expire_usec", r->expire_usec},
        {"verify_finished_usec", r->verify_finished_usec},
        {"seq", r->seq},
        {"detached_usec", r->detached_usec},
    };
    for (size_t i = 0; i < ELEMENTSOF(numbers); i++) {
        k = check_fits("snapshot", r->id, numbers[i].column, numbers[i].value, e);
        if (k < 0)
            return k;
    }
    return 0;
}

/* What the verify_state column holds: NULL for "never verified", else the state's name. */
static const char *verify_state_column(MsVerifyState state) {
    return state == MS_VERIFY_NEVER ? NULL : ms_verify_state_to_string(state);
}

/* Insert and update number their parameters alike: ?N is column N - 1. */
static int bind_snapshot(sqlite3_stmt *s, const MsSnapshotRecord *r) {
    int rc = bind_core(s, &SNAPSHOTS.cols, &r->core);
    FIRST_FAILURE(rc, bind_text(s, SNAP_POLICY + 1, r->policy));
    FIRST_FAILURE(rc, bind_text(s, SNAP_ARCHIVE_KEY + 1, r->archive_key));
    FIRST_FAILURE(rc, bind_text(s, SNAP_MANIFEST_KEY + 1, r->manifest_key));
    FIRST_FAILURE(rc, bind_text(s, SNAP_STORE + 1, r->store));
    /* The download_url column stays for old catalogs; addresses are signed on demand. */
    FIRST_FAILURE(rc, bind_text(s, SNAP_DOWNLOAD_URL + 1, NULL));
    FIRST_FAILURE(rc, bind_text(s, SNAP_STATE + 1, ms_snapshot_state_to_string(r->state)));
    FIRST_FAILURE(rc, bind_usec(s, SNAP_EXPIRE + 1, r->expire_usec));
    FIRST_FAILURE(rc, sqlite3_bind_int(s, SNAP_POINT_IN_TIME + 1, r->point_in_time ? 1 : 0));
    FIRST_FAILURE(rc, bind_text(s, SNAP_LOG_CURSOR + 1, r->log_cursor));
    FIRST_FAILURE(rc, bind_text(s, SNAP_VERIFY_STATE + 1, verify_state_column(r->verify_state)));
    FIRST_FAILURE(rc, bind_usec(s, SNAP_VERIFY_FINISHED + 1, r->verify_finished_usec));
    FIRST_FAILURE(rc, bind_text(s, SNAP_VERIFY_ERROR + 1, r->verify_error));
    FIRST_FAILURE(rc, bind_u64(s, SNAP_SEQ + 1, r->seq));
    FIRST_FAILURE(rc, bind_text(s, SNAP_ORIGIN + 1, ms_snapshot_origin_to_string(r->origin)));
    FIRST_FAILURE(rc, bind_usec(s, SNAP_DETACHED + 1, r->detached_usec));
    FIRST_FAILURE(rc, bind_text(s, SNAP_PARTS + 1, r->parts));
    return rc;
}

static int snapshot_write_error(MsCatalog *c, MsError *e, int rc, const MsSnapshotRecord *r,
                                const char *verb) {
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return ms_error_set(e, EEXIST,
                            "snapshot '%s' is already in catalog '%s': task names are unique",
                            r->id, c->path);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return ms_error_set(e, ENOENT,
                            "snapshot '%s' names policy '%s', which is not in catalog '%s': "
                            "record the policy before its snapshots",
                            r->id, r->policy, c->path);
    return catalog_error(c, e, rc, "%s snapshot '%s'", verb, r->id);
}

int ms_catalog_insert_snapshot(MsCatalog *c, const MsSnapshotRecord *r, MsError *e) {
    int k = snapshot_validate(r, e);
    if (k < 0)
        return k;
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    k = catalog_statement(c, STMT_SNAPSHOT_INSERT, &s, e);
    if (k < 0)
        return k;
    int rc = bind_snapshot(s, r);
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return snapshot_write_error(c, e, rc, r, "recording");
    return 0;
}

static int snapshot_not_found(MsCatalog *c, MsError *e, const char *id) {
    return task_not_found(c, e, &SNAPSHOTS, id);
}

int ms_catalog_update_snapshot(MsCatalog *c, const MsSnapshotRecord *r, MsError *e) {
    int k = snapshot_validate(r, e);
    if (k < 0)
        return k;
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    k = catalog_statement(c, STMT_SNAPSHOT_UPDATE, &s, e);
    if (k < 0)
        return k;
    int rc = bind_snapshot(s, r);
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return snapshot_write_error(c, e, rc, r, "updating");
    if (sqlite3_changes(c->db) == 0)
        return snapshot_not_found(c, e, r->id);
    return 0;
}

int ms_catalog_get_snapshot(MsCatalog *c, const char *id, MsSnapshotRecord **ret_record,
                            MsError *e) {
    return get_task(c, &SNAPSHOTS, id, (void **) ret_record, e);
}

int ms_catalog_list_snapshots(MsCatalog *c, const MsSnapshotFilter *filter,
                              MsSnapshotRecord ***ret_records, size_t *ret_n, MsError *e) {
    return list_tasks(c, &SNAPSHOTS, filter ? filter->policy : NULL, filter ? filter->states : 0,
                      (void ***) ret_records, ret_n, e);
}

int ms_catalog_update_snapshot_progress(MsCatalog *c, const char *id, uint64_t items_done,
                                        uint64_t items_total, double progress_pct,
                                        uint64_t bytes_transferred, MsError *e) {
    return update_progress(c, &SNAPSHOTS, id, items_done, items_total, progress_pct,
                           bytes_transferred, e);
}

/* Shared by snapshots and restores: their state statements take the same parameters. name is
 * the state's name (NULL: not a state of this kind); starts/finishes what it does to the times. */
static int set_task_state(MsCatalog *c, const TaskKind *k, const char *id, int state,
                          const char *name, bool starts, bool finishes, const char *error,
                          MsError *e) {
    if (is_blank(id))
        return ms_error_set(e, EINVAL, "no %s id given", k->noun);
    if (!name)
        return ms_error_set(e, EINVAL, "invalid state %d for %s '%s'", state, k->noun, id);
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, k->state_stmt, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, id);
    FIRST_FAILURE(rc, bind_text(s, 2, name));
    FIRST_FAILURE(rc, bind_text(s, 3, error));
    FIRST_FAILURE(rc, bind_u64(s, 4, ms_realtime_usec()));
    FIRST_FAILURE(rc, sqlite3_bind_int(s, 5, starts));
    FIRST_FAILURE(rc, sqlite3_bind_int(s, 6, finishes));
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "marking %s '%s' %s", k->noun, id, name);
    if (sqlite3_changes(c->db) == 0)
        return task_not_found(c, e, k, id);
    return 0;
}

int ms_catalog_set_snapshot_state(MsCatalog *c, const char *id, MsSnapshotState state,
                                  const char *error, MsError *e) {
    bool finishes = state == MS_SNAPSHOT_COMPLETED || state == MS_SNAPSHOT_FAILED ||
                    state == MS_SNAPSHOT_INTERRUPTED || state == MS_SNAPSHOT_STOPPED;
    return set_task_state(c, &SNAPSHOTS, id, (int) state, ms_snapshot_state_to_string(state),
                          state == MS_SNAPSHOT_RUNNING, finishes, error, e);
}

int ms_catalog_set_snapshot_verify(MsCatalog *c, const char *id, MsVerifyState state,
                                   const char *error, MsError *e) {
    if (is_blank(id))
        return ms_error_set(e, EINVAL, "no snapshot id given");
    if (!ms_verify_state_to_string(state))
        return ms_error_set(e, EINVAL, "invalid verification state %d for snapshot '%s'",
                            (int) state, id);
    bool finishes =
        state == MS_VERIFY_PASSED || state == MS_VERIFY_FAILED || state == MS_VERIFY_INTERRUPTED;
    if (state == MS_VERIFY_NEVER || state == MS_VERIFY_QUEUED)
        error = NULL;
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, STMT_SNAPSHOT_VERIFY, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, id);
    FIRST_FAILURE(rc, bind_text(s, 2, verify_state_column(state)));
    FIRST_FAILURE(rc, bind_text(s, 3, error));
    FIRST_FAILURE(rc, bind_usec(s, 4, finishes ? ms_realtime_usec() : 0));
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "recording the verification of snapshot '%s' as %s", id,
                             state == MS_VERIFY_NEVER ? "never verified"
                                                      : ms_verify_state_to_string(state));
    if (sqlite3_changes(c->db) == 0)
        return snapshot_not_found(c, e, id);
    return 0;
}

/* ---- restores ---- */

MsRestoreRecord *ms_restore_record_free(MsRestoreRecord *r) {
    if (!r)
        return NULL;
    ms_task_core_clear(&r->core);
    free(r->source_snapshot);
    free(r->target);
    free(r->options);
    free(r);
    return NULL;
}

void ms_restore_record_list_free(MsRestoreRecord **list, size_t n) {
    for (size_t i = 0; list && i < n; i++)
        ms_restore_record_free(list[i]);
    free(list);
}

static int read_restore(MsCatalog *c, sqlite3_stmt *s, MsRestoreRecord **ret, MsError *e) {
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return ms_error_set(e, ENOMEM, "out of memory reading the catalog");
    int r = read_core(s, &RESTORES.cols, &rec->core);
    FIRST_FAILURE(r, column_strdup(s, REST_SOURCE, &rec->source_snapshot));
    FIRST_FAILURE(r, column_strdup(s, REST_TARGET, &rec->target));
    FIRST_FAILURE(r, column_strdup(s, REST_OPTIONS, &rec->options));
    if (r < 0)
        return ms_error_set(e, -r, "out of memory reading the catalog");
    int v = 0;
    r = read_named(c, s, REST_STATE, &RESTORES, rec->id, "state", restore_state_from, &v, e);
    if (r < 0)
        return r;
    rec->state = (MsRestoreState) v;
    *ret = TAKE_PTR(rec);
    return 0;
}

static int restore_validate(const MsRestoreRecord *r, MsError *e) {
    if (!r || is_blank(r->id) || is_blank(r->source_snapshot) || is_blank(r->target))
        return ms_error_set(e, EINVAL,
                            "a restore record needs an id (task name), a source snapshot and a "
                            "target");
    if (!ms_restore_state_to_string(r->state))
        return ms_error_set(e, EINVAL, "invalid state %d for restore '%s'", (int) r->state, r->id);
    return validate_core(&RESTORES, &r->core, e);
}

/* The target is redacted here whatever the caller passed: the catalog is readable by anyone
 * who may read the state directory, and its rows end up on the bus. */
static int bind_restore(sqlite3_stmt *s, const MsRestoreRecord *r, const char *redacted_target) {
    int rc = bind_core(s, &RESTORES.cols, &r->core);
    FIRST_FAILURE(rc, bind_text(s, REST_SOURCE + 1, r->source_snapshot));
    FIRST_FAILURE(rc, bind_text(s, REST_TARGET + 1, redacted_target));
    FIRST_FAILURE(rc, bind_text(s, REST_STATE + 1, ms_restore_state_to_string(r->state)));
    FIRST_FAILURE(rc, bind_text(s, REST_OPTIONS + 1, r->options ? r->options : "{}"));
    return rc;
}

static int restore_not_found(MsCatalog *c, MsError *e, const char *id) {
    return task_not_found(c, e, &RESTORES, id);
}

static int restore_write(MsCatalog *c, CatalogStatement id_stmt, const MsRestoreRecord *r,
                         MsError *e) {
    int k = restore_validate(r, e);
    if (k < 0)
        return k;
    _cleanup_free_ char *target = ms_uri_redact(r->target);
    if (!target)
        return ms_error_set(e, ENOMEM, "out of memory recording restore '%s'", r->id);
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    k = catalog_statement(c, id_stmt, &s, e);
    if (k < 0)
        return k;
    int rc = bind_restore(s, r, target);
    FIRST_FAILURE(rc, step_done(s));
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return ms_error_set(e, EEXIST,
                            "restore '%s' is already in catalog '%s': task names are unique", r->id,
                            c->path);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return ms_error_set(e, ENOENT,
                            "restore '%s' names source snapshot '%s', which is not in catalog "
                            "'%s' (mongosnapctl list-snapshots shows the known ones)",
                            r->id, r->source_snapshot, c->path);
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "recording restore '%s'", r->id);
    if (id_stmt == STMT_RESTORE_UPDATE && sqlite3_changes(c->db) == 0)
        return restore_not_found(c, e, r->id);
    return 0;
}

int ms_catalog_insert_restore(MsCatalog *c, const MsRestoreRecord *r, MsError *e) {
    return restore_write(c, STMT_RESTORE_INSERT, r, e);
}

int ms_catalog_update_restore(MsCatalog *c, const MsRestoreRecord *r, MsError *e) {
    return restore_write(c, STMT_RESTORE_UPDATE, r, e);
}

int ms_catalog_get_restore(MsCatalog *c, const char *id, MsRestoreRecord **ret_record, MsError *e) {
    return get_task(c, &RESTORES, id, (void **) ret_record, e);
}

int ms_catalog_list_restores(MsCatalog *c, const MsRestoreFilter *filter,
                             MsRestoreRecord ***ret_records, size_t *ret_n, MsError *e) {
    return list_tasks(c, &RESTORES, filter ? filter->source_snapshot : NULL,
                      filter ? filter->states : 0, (void ***) ret_records, ret_n, e);
}

int ms_catalog_update_restore_progress(MsCatalog *c, const char *id, uint64_t items_done,
                                       uint64_t items_total, double progress_pct,
                                       uint64_t bytes_transferred, MsError *e) {
    return update_progress(c, &RESTORES, id, items_done, items_total, progress_pct,
                           bytes_transferred, e);
}

int ms_catalog_set_restore_state(MsCatalog *c, const char *id, MsRestoreState state,
                                 const char *error, MsError *e) {
    bool finishes = state == MS_RESTORE_COMPLETED || state == MS_RESTORE_FAILED ||
                    state == MS_RESTORE_INTERRUPTED || state == MS_RESTORE_CANCELLED;
    return set_task_state(c, &RESTORES, id, (int) state, ms_restore_state_to_string(state),
                          state == MS_RESTORE_RUNNING, finishes, error, e);
}

/* ---- maintenance ---- */

/* The task states go to parameters 1, 4 and 5; for snapshots (with_verify), the verification
 * states to 6, 7 and 8. */
static int interrupt_unfinished(MsCatalog *c, CatalogStatement id_stmt, const char *interrupted,
                                const char *queued, const char *running, bool with_verify,
                                const char *reason, uint64_t now, unsigned *ret_changed,
                                MsError *e) {
    _cleanup_reset_ sqlite3_stmt *s = NULL;
    int r = catalog_statement(c, id_stmt, &s, e);
    if (r < 0)
        return r;
    int rc = bind_text(s, 1, interrupted);
    FIRST_FAILURE(rc, bind_text(s, 2, reason));
    FIRST_FAILURE(rc, bind_u64(s, 3, now));
    FIRST_FAILURE(rc, bind_text(s, 4, queued));
    FIRST_FAILURE(rc, bind_text(s, 5, running));
    if (with_verify) {
        FIRST_FAILURE(rc, bind_text(s, 6, ms_verify_state_to_string(MS_VERIFY_INTERRUPTED)));
        FIRST_FAILURE(rc, bind_text(s, 7, ms_verify_state_to_string(MS_VERIFY_QUEUED)));
        FIRST_FAILURE(rc, bind_text(s, 8, ms_verify_state_to_string(MS_VERIFY_RUNNING)));
    }
    FIRST_FAILURE(rc, step_done(s));
    if (rc != SQLITE_OK)
        return catalog_error(c, e, rc, "marking unfinished tasks interrupted");
    *ret_changed = (unsigned) sqlite3_changes(c->db);
    return 0;
}

int ms_catalog_mark_unfinished_interrupted(MsCatalog *c, const char *reason, unsigned *ret_count,
                                           MsError *e) {
    if (is_blank(reason))
        return ms_error_set(e, EINVAL, "marking tasks interrupted needs a reason to record");
    uint64_t now = ms_realtime_usec();
    unsigned snapshots = 0, restores = 0;
    int r = catalog_run(c, STMT_BEGIN, e);
    if (r < 0)
        return r;
    r = interrupt_unfinished(
        c, STMT_SNAPSHOT_INTERRUPT, ms_snapshot_state_to_string(MS_SNAPSHOT_INTERRUPTED),
        ms_snapshot_state_to_string(MS_SNAPSHOT_QUEUED),
        ms_snapshot_state_to_string(MS_SNAPSHOT_RUNNING), true, reason, now, &snapshots, e);
    if (r >= 0)
        r = interrupt_unfinished(
            c, STMT_RESTORE_INTERRUPT, ms_restore_state_to_string(MS_RESTORE_INTERRUPTED),
            ms_restore_state_to_string(MS_RESTORE_QUEUED),
            ms_restore_state_to_string(MS_RESTORE_RUNNING), false, reason, now, &restores, e);
    if (r >= 0)
        r = catalog_run(c, STMT_COMMIT, e);
    if (r < 0) {
        catalog_rollback(c);
        return r;
    }
    if (ret_count)
        *ret_count = snapshots + restores;
    return 0;
}

int ms_catalog_integrity_check(MsCatalog *c, MsError *e) {
    char report[MS_ERROR_MESSAGE_MAX / 2] = "";
    size_t used = 0;
    unsigned problems = 0;

    _cleanup_finalize_ sqlite3_stmt *s = NULL;
    int r = catalog_prepare(c, "PRAGMA integrity_check", 0, &s, e);
    if (r < 0)
        return r;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *line = (const char *) sqlite3_column_text(s, 0);
        if (line && strcmp(line, "ok") == 0)
            continue;
        if (problems++ < CATALOG_INTEGRITY_REPORT_MAX && used < sizeof(report))
            used += (size_t) snprintf(report + used, sizeof(report) - used, "%s%s",
                                      used ? "; " : "", line ? line : "(no detail)");
    }
    if (rc != SQLITE_DONE)
        return catalog_error(c, e, rc, "checking integrity");

    _cleanup_finalize_ sqlite3_stmt *fk = NULL;
    r = catalog_prepare(c, "PRAGMA foreign_key_check", 0, &fk, e);
    if (r < 0)
        return r;
    while ((rc = sqlite3_step(fk)) == SQLITE_ROW) {
        const char *table = (const char *) sqlite3_column_text(fk, 0);
        const char *parent = (const char *) sqlite3_column_text(fk, 2);
        if (problems++ < CATALOG_INTEGRITY_REPORT_MAX && used < sizeof(report))
            used += (size_t) snprintf(report + used, sizeof(report) - used,
                                      "%sa row of %s refers to a missing row of %s",
                                      used ? "; " : "", table ? table : "?", parent ? parent : "?");
    }
    if (rc != SQLITE_DONE)
        return catalog_error(c, e, rc, "checking references");

    if (problems > 0)
        return ms_error_set(e, EBADMSG,
                            "catalog '%s' is damaged (%u problem%s: %s%s): stop mongosnapd and "
                            "move the file aside; the snapshots in the store are not affected, "
                            "only the record of them",
                            c->path, problems, problems == 1 ? "" : "s", report,
                            problems > CATALOG_INTEGRITY_REPORT_MAX ? "; ..." : "");
    return 0;
}

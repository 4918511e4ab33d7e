/* Tests for the catalog: migrations and refusals, round trips, filters, recovery, upkeep. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "catalog/snapshot-parts.h"
#include "common/macro.h"
#include "common/timeutil.h"
#include "test.h"

/* Enough progress updates to show the statement is compiled once, not per call. */
#define PROGRESS_UPDATES 10000
/* Two threads, each on its own connection, writing at once: the busy timeout must absorb it. */
#define THREAD_UPDATES 500
#define USEC_PER_SEC UINT64_C(1000000)
/* 2026-11-22T03:10:26Z, a fixed time for rows whose times we compare. */
#define SOME_TIME_USEC (UINT64_C(1795403426) * USEC_PER_SEC)

/* The schema of version 1 exactly as a released mongosnap created it: what an old catalog holds
 * on disk. Kept here by hand on purpose, so that a later edit of the migration cannot quietly
 * change what this test migrates from. */
static const char schema_v1[] =
    "CREATE TABLE policies ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'stopped', 'deleted')),"
    "  last_run_usec INTEGER, last_result TEXT, next_run_usec INTEGER);"
    "CREATE TABLE snapshots ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  policy TEXT NOT NULL REFERENCES policies (name),"
    "  node TEXT NOT NULL, archive_key TEXT, manifest_key TEXT, store TEXT, download_url TEXT,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',"
    "                                       'interrupted', 'expired', 'deleted')),"
    "  error TEXT, created_usec INTEGER NOT NULL, started_usec INTEGER, finished_usec INTEGER,"
    "  expire_usec INTEGER, items_done INTEGER NOT NULL DEFAULT 0,"
    "  items_total INTEGER NOT NULL DEFAULT 0,"
    "  progress_pct REAL NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),"
    "  bytes_transferred INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE restores ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  source_snapshot TEXT NOT NULL REFERENCES snapshots (id),"
    "  target TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',"
    "                                       'interrupted', 'cancelled')),"
    "  error TEXT, created_usec INTEGER NOT NULL, started_usec INTEGER, finished_usec INTEGER,"
    "  items_done INTEGER NOT NULL DEFAULT 0, items_total INTEGER NOT NULL DEFAULT 0,"
    "  progress_pct REAL NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100));"
    "PRAGMA application_id = 1297305168;" /* 0x4d534e50, "MSNP" */
    "PRAGMA user_version = 1;";

/* The historical schema of version 2, exactly as a released mongosnap created it: migration
 * steps 1 and 2 of src/catalog/catalog.c copied verbatim, then the header fields they set. What
 * a version 2 catalog holds on disk; kept here by hand so that no later edit of the migration
 * code can change what the version 2 -> 3 test migrates from. */
static const char schema_v2[] =
    /* step 1 */
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
    ");"
    /* step 2 */
    "ALTER TABLE snapshots ADD COLUMN point_in_time INTEGER NOT NULL DEFAULT 0"
    "  CHECK (point_in_time IN (0, 1));"
    "ALTER TABLE snapshots ADD COLUMN log_cursor TEXT;"
    "ALTER TABLE restores ADD COLUMN options TEXT NOT NULL DEFAULT '{}';"
    "CREATE INDEX snapshots_by_policy_state ON snapshots (policy, state);"
    "CREATE INDEX snapshots_by_state ON snapshots (state);"
    "CREATE INDEX restores_by_source ON restores (source_snapshot);"
    "CREATE INDEX restores_by_state ON restores (state);"
    "PRAGMA application_id = 1297305168;" /* 0x4d534e50, "MSNP" */
    "PRAGMA user_version = 2;";

/* Rows of a version 2 catalog in every state a snapshot or restore could have then, with every
 * column set somewhere, NULLs and extreme values included. */
static const char rows_v2[] =
    "INSERT INTO policies VALUES ('nightly', 'active', 1000, 'completed', 2000);"
    "INSERT INTO policies VALUES ('hourly', 'stopped', NULL, NULL, NULL);"
    "INSERT INTO snapshots VALUES ('n-completed', 'nightly', 'db1', 'nightly/db1/a.archive.zst',"
    "  'nightly/db1/a.manifest.json', 'local:/srv/store', 'https://dl/a?X-Amz-Expires=60',"
    "  'completed', NULL, 100, 101, 160, 9000, 123456789, 123456789, 100.0,"
    "  9223372036854775807, 1, 's=abc;i=1;b=def;m=1;t=2;x=3');"
    "INSERT INTO snapshots (id, policy, node, state, created_usec)"
    "  VALUES ('n-gone', 'nightly', 'db1', 'deleted', 150);" /* leaves a gap in the rowids */
    "INSERT INTO snapshots VALUES ('n-queued', 'nightly', 'db1', NULL, NULL, NULL, NULL,"
    "  'queued', NULL, 200, NULL, NULL, NULL, 0, 0, 0, 0, 0, NULL);"
    "INSERT INTO snapshots VALUES ('n-running', 'nightly', 'db2', 'nightly/db2/b.archive', NULL,"
    "  'local:/srv/store', NULL, 'running', NULL, 300, 301, NULL, NULL, 5, 40, 12.5, 4096, 1,"
    "  'cursor-b');"
    "INSERT INTO snapshots VALUES ('h-failed', 'hourly', 'db1', NULL, NULL, 'local:/srv/store',"
    "  NULL, 'failed', 'server unreachable: connection refused', 400, 401, 402, NULL, 1, 2, 50,"
    "  7, 0, NULL);"
    "INSERT INTO snapshots VALUES ('h-interrupted', 'hourly', 'db1', NULL, NULL, NULL, NULL,"
    "  'interrupted', 'stopped on request', 500, 501, 502, NULL, 0, 0, 0, 0, 0, NULL);"
    "INSERT INTO snapshots VALUES ('n-expired', 'nightly', 'db1', 'k', 'm', 's', NULL,"
    "  'expired', 'expired by retention (keep 7)', 50, 51, 52, 53, 9, 9, 100, 999, 1, 'c');"
    "INSERT INTO snapshots VALUES ('n-deleted', 'nightly', 'db1', 'k2', 'm2', 's', NULL,"
    "  'deleted', NULL, 60, 61, 62, 63, 9, 9, 100, 999, 0, '');"
    "INSERT INTO restores VALUES ('r-queued', 'n-completed', 'mongodb://t1/', 'queued', NULL,"
    "  1100, NULL, NULL, 0, 0, 0, '{}');"
    "INSERT INTO restores VALUES ('r-running', 'n-completed', 'mongodb://admin@t2:27017/',"
    "  'running', NULL, 1200, 1201, NULL, 10, 40, 25.0, '{\"drop\":true}');"
    "INSERT INTO restores VALUES ('r-completed', 'n-expired', 'mongodb://t3/', 'completed', NULL,"
    "  1300, 1301, 1302, 40, 40, 100, '{\"ns_from\":[\"a.*\"],\"ns_to\":[\"b.*\"]}');"
    "INSERT INTO restores VALUES ('r-failed', 'n-completed', 'mongodb://t4/', 'failed',"
    "  'duplicate key', 1400, 1401, 1402, 3, 40, 7.5, '{}');"
    "INSERT INTO restores VALUES ('r-interrupted', 'n-deleted', 'mongodb://t5/', 'interrupted',"
    "  'mongosnapd restarted', 1500, 1501, 1502, 0, 0, 0, '{}');"
    "INSERT INTO restores VALUES ('r-cancelled', 'n-completed', 'mongodb://t6/', 'cancelled',"
    "  'cancelled by root', 1600, 1601, 1602, 1, 2, 50, '{\"until\":\"x\"}');"
    "DELETE FROM snapshots WHERE id = 'n-gone';";

/* Every version 2 column, with the rowid, as SQL literals (quote() tells NULL from '', 1 from
 * 1.0 and '1'): what must come through the migration unchanged. */
#define DUMP_POLICIES_V2                                                                           \
    "SELECT rowid, quote(name), quote(state), quote(last_run_usec), quote(last_result), "          \
    "quote(next_run_usec) FROM policies ORDER BY name"
#define DUMP_SNAPSHOTS_V2                                                                          \
    "SELECT rowid, quote(id), quote(policy), quote(node), quote(archive_key), "                    \
    "quote(manifest_key), quote(store), quote(download_url), quote(state), quote(error), "         \
    "quote(created_usec), quote(started_usec), quote(finished_usec), quote(expire_usec), "         \
    "quote(items_done), quote(items_total), quote(progress_pct), quote(bytes_transferred), "       \
    "quote(point_in_time), quote(log_cursor) FROM snapshots ORDER BY id"
#define DUMP_RESTORES_V2                                                                           \
    "SELECT rowid, quote(id), quote(source_snapshot), quote(target), quote(state), quote(error), " \
    "quote(created_usec), quote(started_usec), quote(finished_usec), quote(items_done), "          \
    "quote(items_total), quote(progress_pct), quote(options) FROM restores ORDER BY id"

typedef struct TempDir {
    char path[64];
    char db[128];
} TempDir;

static bool temp_dir_make(TempDir *t) {
    snprintf(t->path, sizeof(t->path), "/tmp/mongosnap-test-catalog-XXXXXX");
    if (!mkdtemp(t->path))
        return false;
    snprintf(t->db, sizeof(t->db), "%s/%s", t->path, MS_CATALOG_FILE_NAME);
    return true;
}

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    return remove(path);
}

static void temp_dir_remove(TempDir *t) {
    if (t->path[0] == '/')
        nftw(t->path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
static void temp_dir_removep(TempDir *t) {
    temp_dir_remove(t);
}
#define _cleanup_temp_dir_ _cleanup_(temp_dir_removep)

/* A plain SQLite connection, to build old or foreign files and to look behind the API. */
static sqlite3 *raw_open(const char *path) {
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
static void raw_closep(sqlite3 **db) {
    sqlite3_close(*db);
}
#define _cleanup_raw_ _cleanup_(raw_closep)

static bool raw_exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "# sqlite: %s\n", err ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    return rc == SQLITE_OK;
}

/* The first column of the first row as an integer, or -1. */
static long long raw_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* Every row of a query as text, "a|b|c" lines; NULL on failure. */
static char *raw_dump(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
        fprintf(stderr, "# sqlite: %s\n", sqlite3_errmsg(db));
        return NULL;
    }
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    int rc = SQLITE_ERROR;
    if (f) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            for (int i = 0; i < sqlite3_column_count(s); i++) {
                const char *v = (const char *) sqlite3_column_text(s, i);
                fprintf(f, "%s%s", i ? "|" : "", v ? v : "NULL");
            }
            fputc('\n', f);
        }
        fclose(f);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(buf);
        return NULL;
    }
    return buf;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static bool file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    _cleanup_free_ char *buf = NULL;
    size_t size = 0, used = 0;
    for (;;) {
        if (used == size) {
            size = size ? size * 2 : 65536;
            char *b = realloc(buf, size);
            if (!b)
                break;
            buf = b;
        }
        size_t k = fread(buf + used, 1, size - used, f);
        if (k == 0)
            break;
        used += k;
    }
    fclose(f);
    return buf && memmem(buf, used, needle, strlen(needle)) != NULL;
}

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs(text, f);
    return fclose(f) == 0;
}

static int record_policy(MsCatalog *c, const char *name, MsError *e) {
    MsPolicyRuntime p = {.name = (char *) name, .state = MS_POLICY_ACTIVE};
    return ms_catalog_set_policy(c, &p, e);
}

static MsSnapshotRecord snapshot_row(const char *id, const char *policy, MsSnapshotState state,
                                     uint64_t created) {
    return (MsSnapshotRecord){
        .id = (char *) id,
        .policy = (char *) policy,
        .node = (char *) "node1",
        .state = state,
        .created_usec = created,
    };
}

/* ---- opening and migrations ---- */

static void new_catalog_is_current_and_wal(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));

    /* The log lives beside the database while a connection is open. */
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", t.db);
    ASSERT(file_exists(wal));

    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT(db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA application_id"), 0x4d534e50);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_journal_mode WHERE "
                              "journal_mode = 'wal'"),
                  1);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM policies"), 1);
}

static unsigned mode_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (unsigned) (st.st_mode & 07777) : 07777;
}

/* Owner-only under any umask, its WAL and shared-memory files too; a loose existing file is
 * narrowed. */
static void catalog_is_private_whatever_the_umask(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    mode_t old = umask(022);
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;
    int r = ms_catalog_open(t.db, &c, &e);
    if (r >= 0)
        r = record_policy(c, "nightly", &e);
    char wal[160], shm[160];
    snprintf(wal, sizeof(wal), "%s-wal", t.db);
    snprintf(shm, sizeof(shm), "%s-shm", t.db);
    unsigned db_mode = mode_of(t.db), wal_mode = mode_of(wal), shm_mode = mode_of(shm);
    ms_catalog_close(c);
    ASSERT_OK(r);
    ASSERT_EQ_INT(db_mode, 0600);
    ASSERT_EQ_INT(wal_mode, 0600);
    ASSERT_EQ_INT(shm_mode, 0600);

    ASSERT(chmod(t.db, 0644) == 0);
    c = NULL;
    r = ms_catalog_open(t.db, &c, &e);
    ms_catalog_close(c);
    umask(old);
    ASSERT_OK(r);
    ASSERT_EQ_INT(mode_of(t.db), 0600);
}

static void empty_version_0_file_is_migrated(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    {
        /* A database that exists (header written) but holds nothing: user_version 0. */
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, "PRAGMA user_version = 0; VACUUM"));
        ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), 0);
    }
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION);
}

static void version_1_catalog_is_migrated_keeping_rows(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v1));
        ASSERT(raw_exec(db, "INSERT INTO policies (name, state) VALUES ('nightly', 'stopped');"
                            "INSERT INTO snapshots (id, policy, node, state, created_usec, "
                            "  items_done, items_total, progress_pct) "
                            "VALUES ('nightly-1', 'nightly', 'node1', 'completed', 1000, 7, 7, "
                            "  100);"
                            "INSERT INTO restores (id, source_snapshot, target, state, "
                            "  created_usec) "
                            "VALUES ('restore-1', 'nightly-1', 'mongodb://h/', 'failed', 2000);"));
    }

    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));

    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *s = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "nightly-1", &s, &e));
    ASSERT_EQ_INT(s->state, MS_SNAPSHOT_COMPLETED);
    ASSERT_EQ_INT(s->items_done, 7);
    ASSERT_EQ_INT(s->created_usec, 1000);
    ASSERT(!s->point_in_time); /* the columns version 2 added, at their defaults */
    ASSERT(s->log_cursor == NULL);
    ASSERT_EQ_INT(s->verify_state, MS_VERIFY_NEVER); /* and those version 3 added */
    ASSERT_EQ_INT(s->verify_finished_usec, 0);
    ASSERT(s->verify_error == NULL);

    _cleanup_(ms_restore_record_freep) MsRestoreRecord *r = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, "restore-1", &r, &e));
    ASSERT_EQ_INT(r->state, MS_RESTORE_FAILED);
    ASSERT_STREQ(r->options, "{}");
    ASSERT_EQ_INT(r->bytes_transferred, 0);

    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *p = NULL;
    ASSERT_OK(ms_catalog_get_policy(c, "nightly", &p, &e));
    ASSERT_EQ_INT(p->state, MS_POLICY_STOPPED);

    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                              "name = 'snapshots_by_policy_state'"),
                  1);
    ASSERT_OK(ms_catalog_integrity_check(c, &e));
    /* Version 3's state is accepted by the migrated table. */
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "nightly-1", MS_SNAPSHOT_STOPPED, NULL, &e));
}

/* Version 4: each snapshot's order (from its rowid, the order rows were written in), its
 * origin (scheduled, as retention treated them), detached when its policy was deleted; each
 * policy's last seq. */
static void version_4_orders_old_snapshots(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v2));
        ASSERT(raw_exec(db, rows_v2));
        ASSERT(raw_exec(db, "INSERT INTO policies VALUES ('gone', 'deleted', NULL, NULL, NULL);"
                            "INSERT INTO snapshots (id, policy, node, state, created_usec)"
                            "  VALUES ('g-kept', 'gone', 'db1', 'completed', 70);"));
    }
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    MsSnapshotRecord **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_snapshots(c, &(MsSnapshotFilter){.policy = "nightly"}, &list, &n, &e));
    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *p = NULL;
    ASSERT_OK(ms_catalog_get_policy(c, "nightly", &p, &e));
    uint64_t max_seq = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        ok &= list[i]->seq > 0 && list[i]->origin == MS_SNAPSHOT_ORIGIN_SCHEDULED &&
              list[i]->detached_usec == 0;
        max_seq = MS_MAX(max_seq, list[i]->seq);
        for (size_t j = 0; j < i; j++)
            ok &= list[j]->seq != list[i]->seq;
    }
    ms_snapshot_record_list_free(list, n);
    ASSERT(ok);
    ASSERT(n >= 3);
    ASSERT_EQ_INT(p->last_seq, max_seq);
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *kept = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "g-kept", &kept, &e));
    ASSERT(kept->detached_usec > 0);

    /* The new fields round-trip. */
    MsSnapshotRecord r = {.id = (char *) "n-new", .policy = (char *) "nightly",
                          .node = (char *) "db1", .state = MS_SNAPSHOT_QUEUED,
                          .created_usec = 700, .seq = 42, .origin = MS_SNAPSHOT_ORIGIN_MANUAL,
                          .detached_usec = 800};
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *back = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "n-new", &back, &e));
    ASSERT_EQ_INT(back->seq, 42);
    ASSERT_EQ_INT(back->origin, MS_SNAPSHOT_ORIGIN_MANUAL);
    ASSERT_EQ_INT(back->detached_usec, 800);
    ASSERT(back->parts == NULL);
    /* Version 5's parts column: kept as written, replaced by an update. */
    r.id = (char *) "n-cluster";
    r.parts = (char *) "[ { \"shard\" : \"s1\" } ]";
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *cluster = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "n-cluster", &cluster, &e));
    ASSERT_STREQ(cluster->parts, r.parts);
    r.parts = NULL;
    ASSERT_OK(ms_catalog_update_snapshot(c, &r, &e));
    ms_snapshot_record_free(TAKE_PTR(cluster));
    ASSERT_OK(ms_catalog_get_snapshot(c, "n-cluster", &cluster, &e));
    ASSERT(cluster->parts == NULL);
    p->last_seq = 42;
    ASSERT_OK(ms_catalog_set_policy(c, p, &e));
    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *p2 = NULL;
    ASSERT_OK(ms_catalog_get_policy(c, "nightly", &p2, &e));
    ASSERT_EQ_INT(p2->last_seq, 42);
}

static void version_2_catalog_is_migrated_keeping_rows(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    _cleanup_free_ char *policies_before = NULL, *snapshots_before = NULL, *restores_before = NULL;
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v2));
        ASSERT(raw_exec(db, "PRAGMA foreign_keys = ON"));
        ASSERT(raw_exec(db, rows_v2));
        /* The fixture is a true version 2 catalog: it refuses version 3's state. */
        ASSERT(!raw_exec(db, "UPDATE snapshots SET state = 'stopped' WHERE id = 'n-queued'"));
        policies_before = raw_dump(db, DUMP_POLICIES_V2);
        snapshots_before = raw_dump(db, DUMP_SNAPSHOTS_V2);
        restores_before = raw_dump(db, DUMP_RESTORES_V2);
        ASSERT(policies_before && snapshots_before && restores_before);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM snapshots"), 7);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM restores"), 6);
        ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), 2);
    }

    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(ms_catalog_integrity_check(c, &e));

    {
        /* Every row and every value, rowids included, as it was. */
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION);
        _cleanup_free_ char *policies_after = raw_dump(db, DUMP_POLICIES_V2);
        _cleanup_free_ char *snapshots_after = raw_dump(db, DUMP_SNAPSHOTS_V2);
        _cleanup_free_ char *restores_after = raw_dump(db, DUMP_RESTORES_V2);
        ASSERT_STREQ(policies_after, policies_before);
        ASSERT_STREQ(snapshots_after, snapshots_before);
        ASSERT_STREQ(restores_after, restores_before);
        /* The new columns, at their defaults. */
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM snapshots WHERE verify_state IS NULL AND "
                                  "verify_finished_usec IS NULL AND verify_error IS NULL"),
                      7);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM restores WHERE bytes_transferred = 0"), 6);
        /* The rebuilt table's indexes are back, the temporary name is gone, and restores still
         * refer to snapshots. */
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                  "tbl_name = 'snapshots' AND name IN "
                                  "('snapshots_by_policy_state', 'snapshots_by_state')"),
                      2);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                  "name IN ('restores_by_source', 'restores_by_state')"),
                      2);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name LIKE '%new%'"), 0);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_list('restores') "
                                  "WHERE \"table\" = 'snapshots' AND \"from\" = "
                                  "'source_snapshot' AND \"to\" = 'id'"),
                      1);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_list('snapshots') "
                                  "WHERE \"table\" = 'policies' AND \"from\" = 'policy'"),
                      1);
    }

    /* Through the API: every state read back, the new fields at their defaults. */
    const struct {
        const char *id;
        MsSnapshotState state;
    } snaps[] = {
        {"n-completed", MS_SNAPSHOT_COMPLETED},     {"n-queued", MS_SNAPSHOT_QUEUED},
        {"n-running", MS_SNAPSHOT_RUNNING},         {"h-failed", MS_SNAPSHOT_FAILED},
        {"h-interrupted", MS_SNAPSHOT_INTERRUPTED}, {"n-expired", MS_SNAPSHOT_EXPIRED},
        {"n-deleted", MS_SNAPSHOT_DELETED},
    };
    for (size_t i = 0; i < ELEMENTSOF(snaps); i++) {
        _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;
        ASSERT_OK(ms_catalog_get_snapshot(c, snaps[i].id, &got, &e));
        ASSERT_EQ_INT(got->state, snaps[i].state);
        ASSERT_EQ_INT(got->verify_state, MS_VERIFY_NEVER);
        ASSERT_EQ_INT(got->verify_finished_usec, 0);
        ASSERT(got->verify_error == NULL);
    }
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *full = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "n-completed", &full, &e));
    ASSERT_STREQ(full->archive_key, "nightly/db1/a.archive.zst");
    ASSERT_EQ_INT(full->finished_usec, 160);
    ASSERT_EQ_INT(full->expire_usec, 9000);
    ASSERT(full->bytes_transferred == INT64_MAX);
    ASSERT(full->point_in_time);
    ASSERT_STREQ(full->log_cursor, "s=abc;i=1;b=def;m=1;t=2;x=3");
    const struct {
        const char *id;
        MsRestoreState state;
    } rests[] = {
        {"r-queued", MS_RESTORE_QUEUED},           {"r-running", MS_RESTORE_RUNNING},
        {"r-completed", MS_RESTORE_COMPLETED},     {"r-failed", MS_RESTORE_FAILED},
        {"r-interrupted", MS_RESTORE_INTERRUPTED}, {"r-cancelled", MS_RESTORE_CANCELLED},
    };
    for (size_t i = 0; i < ELEMENTSOF(rests); i++) {
        _cleanup_(ms_restore_record_freep) MsRestoreRecord *got = NULL;
        ASSERT_OK(ms_catalog_get_restore(c, rests[i].id, &got, &e));
        ASSERT_EQ_INT(got->state, rests[i].state);
        ASSERT_EQ_INT(got->bytes_transferred, 0);
    }
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *rr = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, "r-running", &rr, &e));
    ASSERT_STREQ(rr->options, "{\"drop\":true}");
    ASSERT(rr->progress_pct == 25.0);

    /* Version 3 at work on the migrated rows; references are enforced again. */
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n-running", MS_SNAPSHOT_STOPPED,
                                            "stopped on request", &e));
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n-completed", MS_VERIFY_PASSED, NULL, &e));
    ASSERT_OK(ms_catalog_update_restore_progress(c, "r-running", 20, 40, 50, 1 << 20, &e));
    MsRestoreRecord orphan = {.id = (char *) "r-orphan",
                              .source_snapshot = (char *) "n-404",
                              .target = (char *) "mongodb://t/",
                              .state = MS_RESTORE_QUEUED,
                              .created_usec = 1};
    ASSERT_EQ_INT(ms_catalog_insert_restore(c, &orphan, &e), -ENOENT);
    ms_error_clear(&e);
    MsSnapshotRecord stray = snapshot_row("w-1", "weekly", MS_SNAPSHOT_QUEUED, 1);
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &stray, &e), -ENOENT);
    ms_error_clear(&e);
    ASSERT_OK(ms_catalog_integrity_check(c, &e));

    /* Opening again finds nothing to migrate and keeps it all. */
    c = ms_catalog_close(c);
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *stopped = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "n-running", &stopped, &e));
    ASSERT_EQ_INT(stopped->state, MS_SNAPSHOT_STOPPED);
    ASSERT(stopped->finished_usec > 0);
    ASSERT_EQ_INT(stopped->started_usec, 301);
    MsSnapshotRecord **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_snapshots(c, NULL, &list, &n, &e));
    ms_snapshot_record_list_free(list, n);
    ASSERT_EQ_INT(n, 7);
}

static void failed_migration_leaves_version_2(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    _cleanup_free_ char *snapshots_before = NULL;
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v2));
        ASSERT(raw_exec(db, rows_v2));
        /* Something in the way of step 3: its first statement fails, after which nothing of it
         * may remain. */
        ASSERT(raw_exec(db, "CREATE TABLE snapshots_new (x INTEGER)"));
        snapshots_before = raw_dump(db, DUMP_SNAPSHOTS_V2);
        ASSERT(snapshots_before);
    }
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;
    ASSERT(ms_catalog_open(t.db, &c, &e) < 0);
    ASSERT(c == NULL);
    ASSERT_CONTAINS(e.message, "from schema version 2 to 3");
    ASSERT_CONTAINS(e.message, "left at version 2");

    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT(db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), 2);
    _cleanup_free_ char *snapshots_after = raw_dump(db, DUMP_SNAPSHOTS_V2);
    ASSERT_STREQ(snapshots_after, snapshots_before);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_table_info('snapshots') WHERE "
                              "name = 'verify_state'"),
                  0);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_table_info('restores') WHERE "
                              "name = 'bytes_transferred'"),
                  0);

    /* Out of the way, the same file migrates. */
    ASSERT(raw_exec(db, "DROP TABLE snapshots_new"));
    ms_error_clear(&e);
    _cleanup_(ms_catalog_closep) MsCatalog *ok = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &ok, &e));
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION);
    ASSERT_OK(ms_catalog_integrity_check(ok, &e));
}

static void migration_keeps_rows_broken_before(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v2));
        ASSERT(raw_exec(db, rows_v2));
        /* Written behind the catalog's back (references are not enforced on a plain
         * connection): damage the migration neither causes nor may hide. */
        ASSERT(raw_exec(db, "INSERT INTO restores (id, source_snapshot, target, state, "
                            "created_usec) VALUES ('r-orphan', 'gone', 'mongodb://t/', 'failed', "
                            "1)"));
    }
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *r = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, "r-orphan", &r, &e));
    ASSERT_STREQ(r->source_snapshot, "gone");
    ASSERT_EQ_INT(ms_catalog_integrity_check(c, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "1 problem");
    ASSERT_CONTAINS(e.message, "restores");
}

static void next_version_catalog_is_refused_untouched(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    _cleanup_free_ char *snapshots_before = NULL;
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v2));
        ASSERT(raw_exec(db, rows_v2));
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MS_CATALOG_SCHEMA_VERSION + 1);
        ASSERT(raw_exec(db, sql));
        snapshots_before = raw_dump(db, DUMP_SNAPSHOTS_V2);
        ASSERT(snapshots_before);
    }
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;
    ASSERT_EQ_INT(ms_catalog_open(t.db, &c, &e), -EPROTONOSUPPORT);
    ASSERT(c == NULL);
    char version[64];
    snprintf(version, sizeof(version), "schema version %d", MS_CATALOG_SCHEMA_VERSION + 1);
    ASSERT_CONTAINS(e.message, version);
    snprintf(version, sizeof(version), "newer than the %d", MS_CATALOG_SCHEMA_VERSION);
    ASSERT_CONTAINS(e.message, version);

    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION + 1);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_journal_mode WHERE "
                              "journal_mode = 'delete'"),
                  1);
    /* Not a step of the migration ran: no rebuilt table, no new column. */
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_table_info('snapshots') WHERE "
                              "name = 'verify_state'"),
                  0);
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_table_info('restores') WHERE "
                              "name = 'bytes_transferred'"),
                  0);
    _cleanup_free_ char *snapshots_after = raw_dump(db, DUMP_SNAPSHOTS_V2);
    ASSERT_STREQ(snapshots_after, snapshots_before);
}

static void newer_catalog_is_refused_untouched(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(db);
        ASSERT(raw_exec(db, schema_v1));
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MS_CATALOG_SCHEMA_VERSION + 1);
        ASSERT(raw_exec(db, sql));
    }
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;
    ASSERT_EQ_INT(ms_catalog_open(t.db, &c, &e), -EPROTONOSUPPORT);
    ASSERT(c == NULL);
    ASSERT_CONTAINS(e.message, "newer");
    ASSERT_CONTAINS(e.message, t.db);

    _cleanup_raw_ sqlite3 *db = raw_open(t.db);
    ASSERT_EQ_INT(raw_int(db, "PRAGMA user_version"), MS_CATALOG_SCHEMA_VERSION + 1);
    /* Refused before anything was written: still in the rollback-journal mode it was made in. */
    ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM pragma_journal_mode WHERE "
                              "journal_mode = 'delete'"),
                  1);
}

static void foreign_files_are_refused(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;

    /* Someone else's database at user_version 0. */
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(raw_exec(db, "CREATE TABLE accounts (id INTEGER)"));
    }
    ASSERT_EQ_INT(ms_catalog_open(t.db, &c, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "not a mongosnap catalog");
    ASSERT(unlink(t.db) == 0);

    /* Another application's id. */
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(raw_exec(db, "PRAGMA application_id = 42; PRAGMA user_version = 1;"));
    }
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_open(t.db, &c, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "another application");
    ASSERT(unlink(t.db) == 0);

    /* Not SQLite at all. */
    ASSERT(write_text(t.db, "[policy]\nname = nightly\nthis is not a database, but it is "
                            "long enough to look like one to a careless reader\n"));
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_open(t.db, &c, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "not a database");
    ASSERT(c == NULL);
}

static void missing_directory_is_explained(void) {
    MsError e = MS_ERROR_INIT;
    MsCatalog *c = NULL;
    ASSERT(ms_catalog_open("/nonexistent-mongosnap-state/mongosnap.db", &c, &e) < 0);
    ASSERT(c == NULL);
    ASSERT_CONTAINS(e.message, "/nonexistent-mongosnap-state/mongosnap.db");
    ASSERT_CONTAINS(e.message, "state directory");
}

/* ---- rows ---- */

static void policy_round_trip(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));

    MsPolicyRuntime p = {
        .name = (char *) "weekly",
        .state = MS_POLICY_ACTIVE,
        .last_run_usec = SOME_TIME_USEC,
        .last_result = (char *) "completed",
        .next_run_usec = SOME_TIME_USEC + 7 * 24 * 3600 * USEC_PER_SEC,
    };
    ASSERT_OK(ms_catalog_set_policy(c, &p, &e));
    ASSERT_OK(record_policy(c, "daily", &e));
    /* Setting again replaces the row. */
    p.state = MS_POLICY_STOPPED;
    p.last_result = (char *) "failed: server unreachable";
    ASSERT_OK(ms_catalog_set_policy(c, &p, &e));

    _cleanup_(ms_policy_runtime_freep) MsPolicyRuntime *got = NULL;
    ASSERT_OK(ms_catalog_get_policy(c, "weekly", &got, &e));
    ASSERT_STREQ(got->name, "weekly");
    ASSERT_EQ_INT(got->state, MS_POLICY_STOPPED);
    ASSERT_EQ_INT(got->last_run_usec, p.last_run_usec);
    ASSERT_EQ_INT(got->next_run_usec, p.next_run_usec);
    ASSERT_STREQ(got->last_result, "failed: server unreachable");

    MsPolicyRuntime **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_policies(c, &list, &n, &e));
    bool ordered = n == 2 && strcmp(list[0]->name, "daily") == 0 && list[0]->last_result == NULL &&
                   list[0]->last_run_usec == 0 && strcmp(list[1]->name, "weekly") == 0;
    ms_policy_runtime_list_free(list, n);
    ASSERT(ordered);

    MsPolicyRuntime *none = NULL;
    ASSERT_EQ_INT(ms_catalog_get_policy(c, "monthly", &none, &e), -ENOENT);
    ASSERT(none == NULL);
    ASSERT_CONTAINS(e.message, "monthly");
    ms_error_clear(&e);
    MsPolicyRuntime bad = {.name = (char *) "x", .state = (MsPolicyState) 17};
    ASSERT_EQ_INT(ms_catalog_set_policy(c, &bad, &e), -EINVAL);
}

static void snapshot_round_trip(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));

    MsSnapshotRecord in = {
        .id = (char *) "nightly-20261122T031026Z",
        .policy = (char *) "nightly",
        .node = (char *) "db1.example.net",
        .archive_key = (char *) "nightly/db1/nightly-20261122T031026Z.archive.zst",
        .manifest_key = (char *) "nightly/db1/nightly-20261122T031026Z.manifest.json",
        .store = (char *) "local:/var/lib/mongosnap/store",
        .state = MS_SNAPSHOT_COMPLETED,
        .error = NULL,
        .created_usec = SOME_TIME_USEC,
        .started_usec = SOME_TIME_USEC + 1,
        .finished_usec = SOME_TIME_USEC + 60 * USEC_PER_SEC,
        .expire_usec = SOME_TIME_USEC + 30 * 24 * 3600 * USEC_PER_SEC,
        .items_done = 123456789,
        .items_total = 123456789,
        .progress_pct = 100.0,
        .bytes_transferred = UINT64_C(5) << 40,
        .point_in_time = true,
        .log_cursor = (char *) "s=abc;i=1;b=def;m=1;t=2;x=3",
        .verify_state = MS_VERIFY_FAILED,
        .verify_finished_usec = SOME_TIME_USEC + 2 * 3600 * USEC_PER_SEC,
        .verify_error = (char *) "namespace shop.orders: CRC mismatch at byte 1234",
    };
    ASSERT_OK(ms_catalog_insert_snapshot(c, &in, &e));

    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *out = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, in.id, &out, &e));
    ASSERT_STREQ(out->id, in.id);
    ASSERT_STREQ(out->policy, in.policy);
    ASSERT_STREQ(out->node, in.node);
    ASSERT_STREQ(out->archive_key, in.archive_key);
    ASSERT_STREQ(out->manifest_key, in.manifest_key);
    ASSERT_STREQ(out->store, in.store);
    ASSERT_EQ_INT(out->state, in.state);
    ASSERT(out->error == NULL);
    ASSERT_EQ_INT(out->created_usec, in.created_usec);
    ASSERT_EQ_INT(out->started_usec, in.started_usec);
    ASSERT_EQ_INT(out->finished_usec, in.finished_usec);
    ASSERT_EQ_INT(out->expire_usec, in.expire_usec);
    ASSERT_EQ_INT(out->items_done, in.items_done);
    ASSERT_EQ_INT(out->items_total, in.items_total);
    ASSERT(out->progress_pct == 100.0);
    ASSERT(out->bytes_transferred == in.bytes_transferred);
    ASSERT(out->point_in_time);
    ASSERT_STREQ(out->log_cursor, in.log_cursor);
    ASSERT_EQ_INT(out->verify_state, MS_VERIFY_FAILED);
    ASSERT_EQ_INT(out->verify_finished_usec, in.verify_finished_usec);
    ASSERT_STREQ(out->verify_error, in.verify_error);

    /* Lists carry the verification too. */
    MsSnapshotRecord **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_snapshots(c, NULL, &list, &n, &e));
    bool listed = n == 1 && list[0]->verify_state == MS_VERIFY_FAILED &&
                  list[0]->verify_finished_usec == in.verify_finished_usec &&
                  list[0]->verify_error && strcmp(list[0]->verify_error, in.verify_error) == 0;
    ms_snapshot_record_list_free(list, n);
    ASSERT(listed);

    /* Update replaces every column, NULLs included. */
    in.state = MS_SNAPSHOT_EXPIRED;
    in.error = (char *) "expired by retention (keep 7)";
    in.point_in_time = false;
    in.verify_state = MS_VERIFY_PASSED;
    in.verify_finished_usec = SOME_TIME_USEC + 3 * 3600 * USEC_PER_SEC;
    in.verify_error = NULL;
    ASSERT_OK(ms_catalog_update_snapshot(c, &in, &e));
    out = ms_snapshot_record_free(out);
    ASSERT_OK(ms_catalog_get_snapshot(c, in.id, &out, &e));
    ASSERT_EQ_INT(out->state, MS_SNAPSHOT_EXPIRED);
    ASSERT_STREQ(out->error, "expired by retention (keep 7)");
    ASSERT(!out->point_in_time);
    ASSERT_EQ_INT(out->verify_state, MS_VERIFY_PASSED);
    ASSERT_EQ_INT(out->verify_finished_usec, in.verify_finished_usec);
    ASSERT(out->verify_error == NULL);

    /* Never verified is stored as NULL, not as its name "". */
    in.verify_state = MS_VERIFY_NEVER;
    in.verify_finished_usec = 0;
    ASSERT_OK(ms_catalog_update_snapshot(c, &in, &e));
    out = ms_snapshot_record_free(out);
    ASSERT_OK(ms_catalog_get_snapshot(c, in.id, &out, &e));
    ASSERT_EQ_INT(out->verify_state, MS_VERIFY_NEVER);
    ASSERT_EQ_INT(out->verify_finished_usec, 0);
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM snapshots WHERE verify_state IS NULL AND "
                                  "verify_finished_usec IS NULL"),
                      1);
        /* A stored name that is no state (here the empty one) is refused by the schema. */
        ASSERT(!raw_exec(db, "UPDATE snapshots SET verify_state = ''"));
        ASSERT(!raw_exec(db, "UPDATE snapshots SET verify_state = 'done'"));
        ASSERT(!raw_exec(db, "UPDATE snapshots SET state = 'done'"));
        ASSERT(raw_exec(db, "UPDATE snapshots SET state = 'stopped'"));
    }
    out = ms_snapshot_record_free(out);
    ASSERT_OK(ms_catalog_get_snapshot(c, in.id, &out, &e));
    ASSERT_EQ_INT(out->state, MS_SNAPSHOT_STOPPED);

    /* Refusals, each with its errno and a message naming the row. */
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &in, &e), -EEXIST);
    ASSERT_CONTAINS(e.message, in.id);
    ms_error_clear(&e);
    MsSnapshotRecord orphan = snapshot_row("weekly-1", "weekly", MS_SNAPSHOT_QUEUED, 1);
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &orphan, &e), -ENOENT);
    ASSERT_CONTAINS(e.message, "policy 'weekly'");
    ms_error_clear(&e);
    MsSnapshotRecord *none = NULL;
    ASSERT_EQ_INT(ms_catalog_get_snapshot(c, "nightly-missing", &none, &e), -ENOENT);
    ASSERT(none == NULL);
    ms_error_clear(&e);
    MsSnapshotRecord ghost = snapshot_row("nightly-ghost", "nightly", MS_SNAPSHOT_QUEUED, 1);
    ASSERT_EQ_INT(ms_catalog_update_snapshot(c, &ghost, &e), -ENOENT);
    ms_error_clear(&e);
    MsSnapshotRecord nameless = snapshot_row(NULL, "nightly", MS_SNAPSHOT_QUEUED, 1);
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &nameless, &e), -EINVAL);
    ms_error_clear(&e);
    MsSnapshotRecord huge = snapshot_row("nightly-huge", "nightly", MS_SNAPSHOT_QUEUED, 1);
    huge.items_done = UINT64_MAX;
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &huge, &e), -EOVERFLOW);
    ms_error_clear(&e);
    huge.items_done = 0;
    huge.progress_pct = 101;
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &huge, &e), -EINVAL);
    ms_error_clear(&e);
    huge.progress_pct = 0;
    huge.verify_finished_usec = UINT64_MAX;
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &huge, &e), -EOVERFLOW);
    ASSERT_CONTAINS(e.message, "verify_finished_usec");
    ms_error_clear(&e);
    huge.verify_finished_usec = 0;
    huge.verify_state = (MsVerifyState) 42;
    ASSERT_EQ_INT(ms_catalog_insert_snapshot(c, &huge, &e), -EINVAL);
    ms_error_clear(&e);
    huge.verify_state = MS_VERIFY_RUNNING;
    ASSERT_OK(ms_catalog_insert_snapshot(c, &huge, &e));
}

static void restore_round_trip_redacts_target(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord s = snapshot_row("nightly-1", "nightly", MS_SNAPSHOT_COMPLETED, 10);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &s, &e));

    MsRestoreRecord in = {
        .id = (char *) "restore-20261122T040000Z",
        .source_snapshot = (char *) "nightly-1",
        .target = (char *) "mongodb://admin:hunter2@target1:27017/?tls=true",
        .state = MS_RESTORE_RUNNING,
        .created_usec = SOME_TIME_USEC,
        .started_usec = SOME_TIME_USEC + 5,
        .items_done = 10,
        .items_total = 40,
        .progress_pct = 25.0,
        .options = (char *) "{\"drop\":true,\"ns_from\":[\"shop.*\"],\"ns_to\":[\"copy.*\"]}",
        .bytes_transferred = UINT64_C(3) << 40,
    };
    ASSERT_OK(ms_catalog_insert_restore(c, &in, &e));

    _cleanup_(ms_restore_record_freep) MsRestoreRecord *out = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, in.id, &out, &e));
    ASSERT_STREQ(out->id, in.id);
    ASSERT_STREQ(out->source_snapshot, "nightly-1");
    ASSERT_STREQ(out->target, "mongodb://admin@target1:27017/?tls=true");
    ASSERT_EQ_INT(out->state, MS_RESTORE_RUNNING);
    ASSERT_EQ_INT(out->created_usec, in.created_usec);
    ASSERT_EQ_INT(out->started_usec, in.started_usec);
    ASSERT_EQ_INT(out->finished_usec, 0);
    ASSERT_EQ_INT(out->items_done, 10);
    ASSERT_EQ_INT(out->items_total, 40);
    ASSERT(out->progress_pct == 25.0);
    ASSERT_STREQ(out->options, in.options);
    ASSERT(out->bytes_transferred == in.bytes_transferred);

    /* Never written: neither in the database file nor in its log. */
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", t.db);
    ASSERT(file_exists(wal));
    ASSERT(!file_contains(wal, "hunter2"));
    ASSERT(!file_contains(t.db, "hunter2"));
    ASSERT(file_contains(wal, "target1")); /* the check above looks in the right place */

    /* Progress carries the bytes, through one statement compiled once. */
    ASSERT_OK(ms_catalog_update_restore_progress(c, in.id, 20, 40, 50.0, 7777, &e));
    unsigned prepared = ms_catalog_statements_prepared(c);
    for (unsigned i = 21; i <= 40; i++)
        ASSERT_OK(ms_catalog_update_restore_progress(c, in.id, i, 40, 2.5 * i, 7777 + i, &e));
    ASSERT_EQ_INT(ms_catalog_statements_prepared(c), prepared);
    out = ms_restore_record_free(out);
    ASSERT_OK(ms_catalog_get_restore(c, in.id, &out, &e));
    ASSERT_EQ_INT(out->items_done, 40);
    ASSERT(out->progress_pct == 100.0);
    ASSERT_EQ_INT(out->bytes_transferred, 7777 + 40);
    ASSERT_EQ_INT(ms_catalog_update_restore_progress(c, in.id, 1, 1, 1, UINT64_MAX, &e),
                  -EOVERFLOW);
    ASSERT_CONTAINS(e.message, "bytes_transferred");
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_update_restore_progress(c, "restore-404", 1, 1, 1, 1, &e), -ENOENT);
    ms_error_clear(&e);

    in.state = MS_RESTORE_COMPLETED;
    in.options = NULL;
    in.bytes_transferred = 12345;
    ASSERT_OK(ms_catalog_update_restore(c, &in, &e));
    out = ms_restore_record_free(out);
    ASSERT_OK(ms_catalog_get_restore(c, in.id, &out, &e));
    ASSERT_EQ_INT(out->state, MS_RESTORE_COMPLETED);
    ASSERT_STREQ(out->options, "{}");
    ASSERT(strstr(out->target, "hunter2") == NULL);
    ASSERT_EQ_INT(out->bytes_transferred, 12345);
    MsRestoreRecord **rl = NULL;
    size_t rn = 0;
    ASSERT_OK(ms_catalog_list_restores(c, NULL, &rl, &rn, &e));
    bool listed = rn == 1 && rl[0]->bytes_transferred == 12345;
    ms_restore_record_list_free(rl, rn);
    ASSERT(listed);
    MsRestoreRecord huge = in;
    huge.id = (char *) "restore-huge";
    huge.bytes_transferred = UINT64_MAX;
    ASSERT_EQ_INT(ms_catalog_insert_restore(c, &huge, &e), -EOVERFLOW);
    ms_error_clear(&e);

    ASSERT_EQ_INT(ms_catalog_insert_restore(c, &in, &e), -EEXIST);
    ms_error_clear(&e);
    MsRestoreRecord orphan = in;
    orphan.id = (char *) "restore-orphan";
    orphan.source_snapshot = (char *) "nightly-404";
    ASSERT_EQ_INT(ms_catalog_insert_restore(c, &orphan, &e), -ENOENT);
    ASSERT_CONTAINS(e.message, "nightly-404");
    ms_error_clear(&e);
    MsRestoreRecord *none = NULL;
    ASSERT_EQ_INT(ms_catalog_get_restore(c, "restore-404", &none, &e), -ENOENT);
    ms_error_clear(&e);
    orphan.source_snapshot = (char *) "nightly-1";
    ASSERT_EQ_INT(ms_catalog_update_restore(c, &orphan, &e), -ENOENT);
}

static void snapshot_ids(MsSnapshotRecord **list, size_t n, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++)
        used += (size_t) snprintf(buf + used, size - used, "%s%s", i ? " " : "", list[i]->id);
}

static void list_filters(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    ASSERT_OK(record_policy(c, "hourly", &e));

    /* Inserted out of creation order: lists come back oldest first. */
    const struct {
        const char *id, *policy;
        MsSnapshotState state;
        uint64_t created;
    } rows[] = {
        {"n3", "nightly", MS_SNAPSHOT_RUNNING, 30},  {"n1", "nightly", MS_SNAPSHOT_COMPLETED, 10},
        {"h1", "hourly", MS_SNAPSHOT_FAILED, 15},    {"n2", "nightly", MS_SNAPSHOT_EXPIRED, 20},
        {"h2", "hourly", MS_SNAPSHOT_COMPLETED, 25}, {"h3", "hourly", MS_SNAPSHOT_QUEUED, 35},
        {"h4", "hourly", MS_SNAPSHOT_STOPPED, 40},
    };
    for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
        MsSnapshotRecord r =
            snapshot_row(rows[i].id, rows[i].policy, rows[i].state, rows[i].created);
        ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    }

    const struct {
        MsSnapshotFilter filter;
        const char *expected;
    } cases[] = {
        {{NULL, 0}, "n1 h1 n2 h2 n3 h3 h4"},
        {{"nightly", 0}, "n1 n2 n3"},
        {{NULL, MS_STATE_BIT(MS_SNAPSHOT_STOPPED)}, "h4"},
        {{"hourly", MS_STATE_BIT(MS_SNAPSHOT_STOPPED) | MS_STATE_BIT(MS_SNAPSHOT_FAILED)}, "h1 h4"},
        {{NULL, MS_STATE_BIT(MS_SNAPSHOT_COMPLETED)}, "n1 h2"},
        {{"hourly", MS_STATE_BIT(MS_SNAPSHOT_QUEUED) | MS_STATE_BIT(MS_SNAPSHOT_RUNNING)}, "h3"},
        {{NULL, MS_STATE_BIT(MS_SNAPSHOT_QUEUED) | MS_STATE_BIT(MS_SNAPSHOT_RUNNING)}, "n3 h3"},
        {{"weekly", 0}, ""},
        {{NULL, MS_STATE_BIT(MS_SNAPSHOT_DELETED)}, ""},
        {{NULL, (1u << _MS_SNAPSHOT_STATE_MAX) - 1}, "n1 h1 n2 h2 n3 h3 h4"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        MsSnapshotRecord **list = NULL;
        size_t n = 0;
        ASSERT_OK(ms_catalog_list_snapshots(c, &cases[i].filter, &list, &n, &e));
        char ids[128];
        snapshot_ids(list, n, ids, sizeof(ids));
        ms_snapshot_record_list_free(list, n);
        ASSERT_STREQ(ids, cases[i].expected);
    }
    MsSnapshotRecord **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_snapshots(c, NULL, &list, &n, &e));
    ms_snapshot_record_list_free(list, n);
    ASSERT_EQ_INT(n, ELEMENTSOF(rows));
    MsSnapshotFilter bad = {NULL, 1u << _MS_SNAPSHOT_STATE_MAX};
    ASSERT_EQ_INT(ms_catalog_list_snapshots(c, &bad, &list, &n, &e), -EINVAL);
    ms_error_clear(&e);

    /* Restores: by source snapshot and by state. */
    const struct {
        const char *id, *source;
        MsRestoreState state;
        uint64_t created;
    } restores[] = {
        {"r2", "n1", MS_RESTORE_FAILED, 20},
        {"r1", "n1", MS_RESTORE_COMPLETED, 10},
        {"r3", "h2", MS_RESTORE_RUNNING, 30},
    };
    for (size_t i = 0; i < ELEMENTSOF(restores); i++) {
        MsRestoreRecord r = {.id = (char *) restores[i].id,
                             .source_snapshot = (char *) restores[i].source,
                             .target = (char *) "mongodb://t/",
                             .state = restores[i].state,
                             .created_usec = restores[i].created};
        ASSERT_OK(ms_catalog_insert_restore(c, &r, &e));
    }
    const struct {
        MsRestoreFilter filter;
        const char *expected;
    } rcases[] = {
        {{NULL, 0}, "r1 r2 r3"},
        {{"n1", 0}, "r1 r2"},
        {{NULL, MS_STATE_BIT(MS_RESTORE_RUNNING)}, "r3"},
        {{"n1", MS_STATE_BIT(MS_RESTORE_FAILED) | MS_STATE_BIT(MS_RESTORE_CANCELLED)}, "r2"},
        {{"h1", 0}, ""},
    };
    for (size_t i = 0; i < ELEMENTSOF(rcases); i++) {
        MsRestoreRecord **rl = NULL;
        size_t rn = 0;
        ASSERT_OK(ms_catalog_list_restores(c, &rcases[i].filter, &rl, &rn, &e));
        char ids[64] = "";
        size_t used = 0;
        for (size_t k = 0; k < rn; k++)
            used +=
                (size_t) snprintf(ids + used, sizeof(ids) - used, "%s%s", k ? " " : "", rl[k]->id);
        ms_restore_record_list_free(rl, rn);
        ASSERT_STREQ(ids, rcases[i].expected);
    }
}

static void set_state_stamps_times_and_error(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord r = snapshot_row("n1", "nightly", MS_SNAPSHOT_QUEUED, 1);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));

    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n1", MS_SNAPSHOT_RUNNING, NULL, &e));
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_RUNNING);
    ASSERT(got->started_usec > 0); /* stamped with the current time */
    ASSERT_EQ_INT(got->finished_usec, 0);
    uint64_t started = got->started_usec;

    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n1", MS_SNAPSHOT_FAILED,
                                            "server unreachable: connection refused", &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_FAILED);
    ASSERT_STREQ(got->error, "server unreachable: connection refused");
    ASSERT_EQ_INT(got->started_usec, started); /* stamped once */
    ASSERT(got->finished_usec >= started);

    /* A later state keeps the first finish time and replaces the error. */
    uint64_t finished = got->finished_usec;
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n1", MS_SNAPSHOT_DELETED, NULL, &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_DELETED);
    ASSERT(got->error == NULL);
    ASSERT_EQ_INT(got->finished_usec, finished);

    /* Stopped on request: a finish, stamped like failed and interrupted. */
    MsSnapshotRecord r2 = snapshot_row("n2", "nightly", MS_SNAPSHOT_QUEUED, 2);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r2, &e));
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n2", MS_SNAPSHOT_RUNNING, NULL, &e));
    uint64_t before_stop = ms_realtime_usec();
    ASSERT_OK(
        ms_catalog_set_snapshot_state(c, "n2", MS_SNAPSHOT_STOPPED, "stopped on request", &e));
    uint64_t after_stop = ms_realtime_usec();
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n2", &got, &e));
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_STOPPED);
    ASSERT_STREQ(got->error, "stopped on request");
    ASSERT(got->finished_usec >= before_stop && got->finished_usec <= after_stop);
    ASSERT(got->started_usec > 0 && got->started_usec <= got->finished_usec);
    /* A queued snapshot stopped before it ran is finished but never started. */
    MsSnapshotRecord r3 = snapshot_row("n3", "nightly", MS_SNAPSHOT_QUEUED, 3);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r3, &e));
    ASSERT_OK(ms_catalog_set_snapshot_state(c, "n3", MS_SNAPSHOT_STOPPED, NULL, &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n3", &got, &e));
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_STOPPED);
    ASSERT(got->finished_usec > 0);
    ASSERT_EQ_INT(got->started_usec, 0);

    ASSERT_EQ_INT(ms_catalog_set_snapshot_state(c, "n404", MS_SNAPSHOT_RUNNING, NULL, &e), -ENOENT);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_set_snapshot_state(c, "n1", (MsSnapshotState) 99, NULL, &e), -EINVAL);
    ms_error_clear(&e);

    MsRestoreRecord rr = {.id = (char *) "r1",
                          .source_snapshot = (char *) "n1",
                          .target = (char *) "mongodb://t/",
                          .state = MS_RESTORE_QUEUED,
                          .created_usec = SOME_TIME_USEC};
    ASSERT_OK(ms_catalog_insert_restore(c, &rr, &e));
    ASSERT_OK(ms_catalog_set_restore_state(c, "r1", MS_RESTORE_RUNNING, NULL, &e));
    ASSERT_OK(ms_catalog_set_restore_state(c, "r1", MS_RESTORE_CANCELLED, "cancelled by root", &e));
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *rg = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, "r1", &rg, &e));
    ASSERT_EQ_INT(rg->state, MS_RESTORE_CANCELLED);
    ASSERT_STREQ(rg->error, "cancelled by root");
    ASSERT(rg->started_usec > 0 && rg->finished_usec >= rg->started_usec);
}

static void unfinished_tasks_become_interrupted(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    const MsSnapshotState states[] = {MS_SNAPSHOT_QUEUED, MS_SNAPSHOT_RUNNING,
                                      MS_SNAPSHOT_COMPLETED, MS_SNAPSHOT_FAILED};
    const char *ids[] = {"queued", "running", "completed", "failed"};
    for (size_t i = 0; i < ELEMENTSOF(states); i++) {
        MsSnapshotRecord r = snapshot_row(ids[i], "nightly", states[i], 10 + i);
        ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    }
    MsRestoreRecord rr = {.id = (char *) "restoring",
                          .source_snapshot = (char *) "completed",
                          .target = (char *) "mongodb://t/",
                          .state = MS_RESTORE_RUNNING,
                          .created_usec = 20};
    ASSERT_OK(ms_catalog_insert_restore(c, &rr, &e));

    unsigned count = 0;
    ASSERT_OK(ms_catalog_mark_unfinished_interrupted(c, "mongosnapd restarted", &count, &e));
    ASSERT_EQ_INT(count, 3);

    for (size_t i = 0; i < ELEMENTSOF(states); i++) {
        _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;
        ASSERT_OK(ms_catalog_get_snapshot(c, ids[i], &got, &e));
        if (states[i] == MS_SNAPSHOT_QUEUED || states[i] == MS_SNAPSHOT_RUNNING) {
            ASSERT_EQ_INT(got->state, MS_SNAPSHOT_INTERRUPTED);
            ASSERT_STREQ(got->error, "mongosnapd restarted");
            ASSERT(got->finished_usec > 0);
        } else {
            ASSERT_EQ_INT(got->state, states[i]);
            ASSERT(got->error == NULL);
        }
    }
    _cleanup_(ms_restore_record_freep) MsRestoreRecord *rg = NULL;
    ASSERT_OK(ms_catalog_get_restore(c, "restoring", &rg, &e));
    ASSERT_EQ_INT(rg->state, MS_RESTORE_INTERRUPTED);
    ASSERT_STREQ(rg->error, "mongosnapd restarted");

    /* Nothing left to interrupt the second time. */
    ASSERT_OK(ms_catalog_mark_unfinished_interrupted(c, "again", &count, &e));
    ASSERT_EQ_INT(count, 0);
    ASSERT_EQ_INT(ms_catalog_mark_unfinished_interrupted(c, NULL, &count, &e), -EINVAL);
}

static void integrity_check_reports_damage(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord r = snapshot_row("n1", "nightly", MS_SNAPSHOT_COMPLETED, 1);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    ASSERT_OK(ms_catalog_integrity_check(c, &e));

    /* A row that breaks a reference, written behind the catalog's back (foreign keys are off
     * by default on a plain connection, as in an sqlite3 shell). */
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT(raw_exec(db, "INSERT INTO snapshots (id, policy, node, state, created_usec) "
                            "VALUES ('orphan', 'gone', 'node1', 'completed', 2)"));
    }
    ASSERT_EQ_INT(ms_catalog_integrity_check(c, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "damaged");
    ASSERT_CONTAINS(e.message, "snapshots");
    ASSERT_CONTAINS(e.message, "policies");
}

static void progress_updates_reuse_one_statement(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord r = snapshot_row("n1", "nightly", MS_SNAPSHOT_RUNNING, 1);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));

    ASSERT_OK(ms_catalog_update_snapshot_progress(c, "n1", 0, PROGRESS_UPDATES, 0, 0, &e));
    unsigned prepared = ms_catalog_statements_prepared(c);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1; i <= PROGRESS_UPDATES; i++)
        ASSERT_OK(ms_catalog_update_snapshot_progress(
            c, "n1", i, PROGRESS_UPDATES, 100.0 * i / PROGRESS_UPDATES, i * 4096ull, &e));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ASSERT_EQ_INT(ms_catalog_statements_prepared(c), prepared);
    printf("# %d progress updates in %.0f ms\n", PROGRESS_UPDATES,
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);

    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->items_done, PROGRESS_UPDATES);
    ASSERT(got->progress_pct == 100.0);
    ASSERT_EQ_INT(got->bytes_transferred, PROGRESS_UPDATES * 4096ull);

    /* Reads reuse theirs too. */
    prepared = ms_catalog_statements_prepared(c);
    for (unsigned i = 0; i < 100; i++) {
        got = ms_snapshot_record_free(got);
        ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    }
    ASSERT_EQ_INT(ms_catalog_statements_prepared(c), prepared);

    ASSERT_EQ_INT(ms_catalog_update_snapshot_progress(c, "n1", 1, 1, -1, 0, &e), -EINVAL);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_update_snapshot_progress(c, "n404", 1, 1, 1, 0, &e), -ENOENT);
}

typedef struct ThreadWork {
    const char *db;
    const char *id;
    int result;
    char message[MS_ERROR_MESSAGE_MAX];
} ThreadWork;

/* One connection per thread, as catalog.h asks. */
static void *thread_updates(void *arg) {
    ThreadWork *w = arg;
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    w->result = ms_catalog_open(w->db, &c, &e);
    for (unsigned i = 1; w->result >= 0 && i <= THREAD_UPDATES; i++)
        w->result = ms_catalog_update_snapshot_progress(c, w->id, i, THREAD_UPDATES,
                                                        100.0 * i / THREAD_UPDATES, i, &e);
    snprintf(w->message, sizeof(w->message), "%s", e.message);
    return NULL;
}

static void connections_in_two_threads(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord a = snapshot_row("a", "nightly", MS_SNAPSHOT_RUNNING, 1);
    MsSnapshotRecord b = snapshot_row("b", "nightly", MS_SNAPSHOT_RUNNING, 2);
    ASSERT_OK(ms_catalog_insert_snapshot(c, &a, &e));
    ASSERT_OK(ms_catalog_insert_snapshot(c, &b, &e));

    ThreadWork work[2] = {{.db = t.db, .id = "a"}, {.db = t.db, .id = "b"}};
    pthread_t threads[2];
    for (size_t i = 0; i < 2; i++)
        ASSERT(pthread_create(&threads[i], NULL, thread_updates, &work[i]) == 0);
    for (size_t i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    for (size_t i = 0; i < 2; i++) {
        if (work[i].result < 0)
            fprintf(stderr, "# thread %zu: %s\n", i, work[i].message);
        ASSERT_OK(work[i].result);
    }

    /* This connection sees both threads' commits. */
    MsSnapshotRecord **list = NULL;
    size_t n = 0;
    ASSERT_OK(ms_catalog_list_snapshots(c, NULL, &list, &n, &e));
    bool done =
        n == 2 && list[0]->items_done == THREAD_UPDATES && list[1]->items_done == THREAD_UPDATES;
    ms_snapshot_record_list_free(list, n);
    ASSERT(done);
}

static void state_names_round_trip(void) {
    for (int s = 0; s < _MS_SNAPSHOT_STATE_MAX; s++)
        ASSERT_EQ_INT(ms_snapshot_state_from_string(ms_snapshot_state_to_string(s)), s);
    for (int s = 0; s < _MS_RESTORE_STATE_MAX; s++)
        ASSERT_EQ_INT(ms_restore_state_from_string(ms_restore_state_to_string(s)), s);
    for (int s = 0; s < _MS_POLICY_STATE_MAX; s++)
        ASSERT_EQ_INT(ms_policy_state_from_string(ms_policy_state_to_string(s)), s);
    ASSERT_EQ_INT(ms_snapshot_state_from_string("done"), -EINVAL);
    ASSERT_EQ_INT(ms_snapshot_state_from_string(NULL), -EINVAL);
    ASSERT(ms_snapshot_state_to_string(_MS_SNAPSHOT_STATE_MAX) == NULL);
    ASSERT_STREQ(ms_snapshot_state_to_string(MS_SNAPSHOT_INTERRUPTED), "interrupted");
    ASSERT_STREQ(ms_snapshot_state_to_string(MS_SNAPSHOT_STOPPED), "stopped");
    ASSERT_EQ_INT(ms_snapshot_state_from_string("stopped"), MS_SNAPSHOT_STOPPED);
    ASSERT(MS_SNAPSHOT_STOPPED != MS_SNAPSHOT_INTERRUPTED);

    for (int s = 0; s < _MS_VERIFY_STATE_MAX; s++)
        ASSERT_EQ_INT(ms_verify_state_from_string(ms_verify_state_to_string(s)), s);
    const struct {
        MsVerifyState state;
        const char *name;
    } verify[] = {
        {MS_VERIFY_NEVER, ""},          {MS_VERIFY_QUEUED, "queued"},
        {MS_VERIFY_RUNNING, "running"}, {MS_VERIFY_PASSED, "passed"},
        {MS_VERIFY_FAILED, "failed"},   {MS_VERIFY_INTERRUPTED, "interrupted"},
    };
    ASSERT_EQ_INT(ELEMENTSOF(verify), _MS_VERIFY_STATE_MAX);
    for (size_t i = 0; i < ELEMENTSOF(verify); i++) {
        ASSERT_STREQ(ms_verify_state_to_string(verify[i].state), verify[i].name);
        ASSERT_EQ_INT(ms_verify_state_from_string(verify[i].name), verify[i].state);
    }
    ASSERT_EQ_INT(ms_verify_state_from_string(NULL), -EINVAL);
    ASSERT_EQ_INT(ms_verify_state_from_string("completed"), -EINVAL);
    ASSERT(ms_verify_state_to_string(_MS_VERIFY_STATE_MAX) == NULL);
    ASSERT(ms_verify_state_to_string((MsVerifyState) -1) == NULL);
}

static void set_verify_stamps_and_clears(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    MsSnapshotRecord r = snapshot_row("n1", "nightly", MS_SNAPSHOT_COMPLETED, 1);
    r.started_usec = 5;
    r.finished_usec = 6;
    ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;

    /* Queued: an error given is not kept, no finish time. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_QUEUED, "left over", &e));
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_QUEUED);
    ASSERT(got->verify_error == NULL);
    ASSERT_EQ_INT(got->verify_finished_usec, 0);

    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_RUNNING, NULL, &e));
    unsigned prepared = ms_catalog_statements_prepared(c);
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_RUNNING);
    ASSERT_EQ_INT(got->verify_finished_usec, 0);

    /* Passed: stamped now. */
    uint64_t t0 = ms_realtime_usec();
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_PASSED, NULL, &e));
    uint64_t t1 = ms_realtime_usec();
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_PASSED);
    ASSERT(got->verify_finished_usec >= t0 && got->verify_finished_usec <= t1);
    ASSERT(got->verify_error == NULL);
    /* The snapshot's own state and times are not the verification's. */
    ASSERT_EQ_INT(got->state, MS_SNAPSHOT_COMPLETED);
    ASSERT_EQ_INT(got->started_usec, 5);
    ASSERT_EQ_INT(got->finished_usec, 6);
    ASSERT(got->error == NULL);

    /* Queued again: the last result's time goes. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_QUEUED, NULL, &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_QUEUED);
    ASSERT_EQ_INT(got->verify_finished_usec, 0);

    /* Failed, with its reason and its own time. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_RUNNING, NULL, &e));
    uint64_t t2 = ms_realtime_usec();
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_FAILED,
                                             "namespace shop.orders: CRC mismatch", &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_FAILED);
    ASSERT_STREQ(got->verify_error, "namespace shop.orders: CRC mismatch");
    ASSERT(got->verify_finished_usec >= t2);

    /* Queued clears the error as well as the time. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_QUEUED, NULL, &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT(got->verify_error == NULL);
    ASSERT_EQ_INT(got->verify_finished_usec, 0);

    /* Interrupted stamps too. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_INTERRUPTED, "stopped", &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_INTERRUPTED);
    ASSERT_STREQ(got->verify_error, "stopped");
    ASSERT(got->verify_finished_usec >= t2);

    /* Never: back to NULLs in the file. */
    ASSERT_OK(ms_catalog_set_snapshot_verify(c, "n1", MS_VERIFY_NEVER, "ignored", &e));
    got = ms_snapshot_record_free(got);
    ASSERT_OK(ms_catalog_get_snapshot(c, "n1", &got, &e));
    ASSERT_EQ_INT(got->verify_state, MS_VERIFY_NEVER);
    ASSERT(got->verify_error == NULL);
    ASSERT_EQ_INT(got->verify_finished_usec, 0);
    {
        _cleanup_raw_ sqlite3 *db = raw_open(t.db);
        ASSERT_EQ_INT(raw_int(db, "SELECT count(*) FROM snapshots WHERE id = 'n1' AND "
                                  "verify_state IS NULL AND verify_error IS NULL AND "
                                  "verify_finished_usec IS NULL"),
                      1);
    }

    /* One statement, compiled once, for every call. */
    ASSERT_EQ_INT(ms_catalog_statements_prepared(c), prepared);

    ASSERT_EQ_INT(ms_catalog_set_snapshot_verify(c, "n404", MS_VERIFY_QUEUED, NULL, &e), -ENOENT);
    ASSERT_CONTAINS(e.message, "n404");
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_set_snapshot_verify(c, "n1", (MsVerifyState) 99, NULL, &e), -EINVAL);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_catalog_set_snapshot_verify(c, NULL, MS_VERIFY_QUEUED, NULL, &e), -EINVAL);
}

static void unfinished_verifications_become_interrupted(void) {
    _cleanup_temp_dir_ TempDir t = {0};
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_catalog_closep) MsCatalog *c = NULL;
    ASSERT_OK(ms_catalog_open(t.db, &c, &e));
    ASSERT_OK(record_policy(c, "nightly", &e));
    const struct {
        const char *id;
        MsSnapshotState state;
        MsVerifyState verify;
        uint64_t verify_finished;
        const char *verify_error;
        /* expected afterwards */
        MsSnapshotState state_after;
        MsVerifyState verify_after;
    } rows[] = {
        {"v-queued", MS_SNAPSHOT_COMPLETED, MS_VERIFY_QUEUED, 0, NULL, MS_SNAPSHOT_COMPLETED,
         MS_VERIFY_INTERRUPTED},
        {"v-running", MS_SNAPSHOT_COMPLETED, MS_VERIFY_RUNNING, 0, NULL, MS_SNAPSHOT_COMPLETED,
         MS_VERIFY_INTERRUPTED},
        {"v-passed", MS_SNAPSHOT_COMPLETED, MS_VERIFY_PASSED, 77, NULL, MS_SNAPSHOT_COMPLETED,
         MS_VERIFY_PASSED},
        {"v-failed", MS_SNAPSHOT_COMPLETED, MS_VERIFY_FAILED, 78, "bad CRC", MS_SNAPSHOT_COMPLETED,
         MS_VERIFY_FAILED},
        {"v-never", MS_SNAPSHOT_COMPLETED, MS_VERIFY_NEVER, 0, NULL, MS_SNAPSHOT_COMPLETED,
         MS_VERIFY_NEVER},
        {"s-running", MS_SNAPSHOT_RUNNING, MS_VERIFY_NEVER, 0, NULL, MS_SNAPSHOT_INTERRUPTED,
         MS_VERIFY_NEVER},
        /* Both unfinished: one row, counted once. */
        {"both", MS_SNAPSHOT_RUNNING, MS_VERIFY_RUNNING, 0, NULL, MS_SNAPSHOT_INTERRUPTED,
         MS_VERIFY_INTERRUPTED},
        {"s-stopped", MS_SNAPSHOT_STOPPED, MS_VERIFY_NEVER, 0, NULL, MS_SNAPSHOT_STOPPED,
         MS_VERIFY_NEVER},
    };
    for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
        MsSnapshotRecord r = snapshot_row(rows[i].id, "nightly", rows[i].state, 10 + i);
        r.verify_state = rows[i].verify;
        r.verify_finished_usec = rows[i].verify_finished;
        r.verify_error = (char *) rows[i].verify_error;
        ASSERT_OK(ms_catalog_insert_snapshot(c, &r, &e));
    }
    MsRestoreRecord rr = {.id = (char *) "restoring",
                          .source_snapshot = (char *) "v-passed",
                          .target = (char *) "mongodb://t/",
                          .state = MS_RESTORE_QUEUED,
                          .created_usec = 20};
    ASSERT_OK(ms_catalog_insert_restore(c, &rr, &e));

    uint64_t t0 = ms_realtime_usec();
    unsigned count = 0;
    ASSERT_OK(ms_catalog_mark_unfinished_interrupted(c, "mongosnapd restarted", &count, &e));
    /* v-queued, v-running, s-running, both, and the restore. */
    ASSERT_EQ_INT(count, 5);

    for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
        _cleanup_(ms_snapshot_record_freep) MsSnapshotRecord *got = NULL;
        ASSERT_OK(ms_catalog_get_snapshot(c, rows[i].id, &got, &e));
        ASSERT_EQ_INT(got->state, rows[i].state_after);
        ASSERT_EQ_INT(got->verify_state, rows[i].verify_after);
        if (rows[i].state != rows[i].state_after)
            ASSERT_STREQ(got->error, "mongosnapd restarted");
        else
            ASSERT(got->error == NULL);
        if (rows[i].verify != rows[i].verify_after) {
            ASSERT_STREQ(got->verify_error, "mongosnapd restarted");
            ASSERT(got->verify_finished_usec >= t0);
        } else {
            /* Untouched, finished results included. */
            ASSERT_EQ_INT(got->verify_finished_usec, rows[i].verify_finished);
            if (rows[i].verify_error)
                ASSERT_STREQ(got->verify_error, rows[i].verify_error);
            else
                ASSERT(got->verify_error == NULL);
        }
    }

    ASSERT_OK(ms_catalog_mark_unfinished_interrupted(c, "again", &count, &e));
    ASSERT_EQ_INT(count, 0);
}

typedef struct PartsSeen {
    char text[512];
    size_t n;
} PartsSeen;

static int part_seen(const MsSnapshotPart *p, void *userdata) {
    PartsSeen *s = userdata;
    size_t used = strlen(s->text);
    snprintf(s->text + used, sizeof(s->text) - used, "%s/%s/%s/%llu/%llu/%u.%u/%s;", p->shard,
             p->replica_set, p->manifest, (unsigned long long) p->documents,
             (unsigned long long) p->stored_bytes, p->dump_end_t, p->dump_end_i, p->node);
    return ++s->n == 99 ? -ECANCELED : 0;
}

/* A cluster snapshot's parts: built from the worker's part messages (extra fields dropped, the
 * replica set optional), read back in order; what is not an array of whole parts is refused. */
static void snapshot_parts_codec(void) {
    bson_t array = BSON_INITIALIZER;
    bson_t *m1 = BCON_NEW("event", "part", "shard", "shard01", "replica_set", "rs01", "manifest",
                          "P/N.parts/shard01.manifest.json", "documents", BCON_INT64(12),
                          "stored_bytes", BCON_INT64(3000000000), "dump_end", "{", "t",
                          BCON_INT64(1700000000), "i", BCON_INT32(7), "}", "node", "node-b");
    bson_t *m2 = BCON_NEW("shard", "config", "manifest", "P/N.parts/config.manifest.json",
                          "documents", BCON_INT32(3), "stored_bytes", BCON_INT32(10));
    bson_t *bad = BCON_NEW("shard", "shard02", "documents", BCON_INT32(1));
    ASSERT_OK(ms_snapshot_parts_append(&array, 0, m1));
    ASSERT_OK(ms_snapshot_parts_append(&array, 1, m2));
    ASSERT_EQ_INT(ms_snapshot_parts_append(&array, 2, bad), -EINVAL);
    char *json = ms_snapshot_parts_to_json(&array);
    ASSERT(json);
    ASSERT(strstr(json, "event") == NULL);
    MsError e = MS_ERROR_INIT;
    PartsSeen seen = {{0}, 0};
    ASSERT_OK(ms_snapshot_parts_foreach(json, part_seen, &seen, &e));
    ASSERT_EQ_INT(seen.n, 2);
    /* the node that took it, when known ("" otherwise: by hand, or recorded before) */
    ASSERT_STREQ(seen.text,
                 "shard01/rs01/P/N.parts/shard01.manifest.json/12/3000000000/1700000000.7/node-b;"
                 "config//P/N.parts/config.manifest.json/3/10/0.0/;");
    bson_free(json);
    bson_t empty = BSON_INITIALIZER;
    ASSERT(ms_snapshot_parts_to_json(&empty) == NULL);
    seen = (PartsSeen){{0}, 0};
    ASSERT_OK(ms_snapshot_parts_foreach(NULL, part_seen, &seen, &e));
    ASSERT_OK(ms_snapshot_parts_foreach("", part_seen, &seen, &e));
    ASSERT_EQ_INT(seen.n, 0);
    static const char *const damaged[] = {
        "{\"0\": {\"shard\": \"a\"}}", /* an object, not an array */
        "[",
        "[1]",
        "[{\"shard\":\"a\",\"documents\":1,\"stored_bytes\":1,\"dump_end\":{\"t\":1,\"i\":1}}]",
        "[{\"shard\":\"a\",\"manifest\":\"m\",\"documents\":-1,\"stored_bytes\":1,"
        "\"dump_end\":{\"t\":1,\"i\":1}}]",
        "[{\"shard\":\"a\",\"manifest\":\"m\",\"documents\":1,\"stored_bytes\":1,"
        "\"dump_end\":{\"t\":4294967296,\"i\":1}}]",
    };
    for (size_t i = 0; i < ELEMENTSOF(damaged); i++) {
        MsError de = MS_ERROR_INIT;
        ASSERT_EQ_INT(ms_snapshot_parts_foreach(damaged[i], part_seen, &seen, &de), -EBADMSG);
        ASSERT(strstr(de.message, "not a JSON array of parts"));
    }
    bson_destroy(m1);
    bson_destroy(m2);
    bson_destroy(bad);
    bson_destroy(&array);
}

/* Every kind's end sets the core alike: time, error (copied, or none), no phase; completion
 * fills the counters up, and nothing else does. */
static void task_core_finish_table(void) {
    static const struct {
        const char *error;
        bool completed;
        uint64_t done, total;
        uint64_t want_total;
        double want_pct;
    } cases[] = {
        {NULL, true, 10, 4, 10, 100.0},       {NULL, true, 3, 8, 8, 100.0},
        {"boom", false, 10, 4, 4, 42.0},      {"", false, 0, 0, 0, 42.0},
        {"late words", true, 0, 0, 0, 100.0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        MsTaskCore c = {.items_done = cases[i].done, .items_total = cases[i].total,
                        .progress_pct = 42.0, .error = strdup("earlier")};
        strcpy(c.phase, "dump");
        ASSERT_EQ_INT(ms_task_core_finish(&c, cases[i].error, cases[i].completed, 777), 0);
        ASSERT(c.finished_usec == 777);
        ASSERT_STREQ(c.phase, "");
        ASSERT(c.items_total == cases[i].want_total);
        ASSERT(c.progress_pct == cases[i].want_pct);
        if (cases[i].error)
            ASSERT_STREQ(c.error, cases[i].error);
        else
            ASSERT(c.error == NULL);
        ms_task_core_clear(&c);
    }
    /* Besides state_names_round_trip: verify states, out of range, NULL, and case. */
    for (int v = 0; v < _MS_VERIFY_STATE_MAX; v++)
        ASSERT_EQ_INT(ms_verify_state_from_string(ms_verify_state_to_string(v)), v);
    ASSERT(ms_restore_state_to_string(_MS_RESTORE_STATE_MAX) == NULL);
    ASSERT(ms_restore_state_to_string(-1) == NULL);
    ASSERT_EQ_INT(ms_policy_state_from_string(NULL), -EINVAL);
    ASSERT_EQ_INT(ms_policy_state_from_string("Active"), -EINVAL);
    ASSERT_EQ_INT(ms_snapshot_origin_from_string("resync"), MS_SNAPSHOT_ORIGIN_RESYNC);
}

MS_TEST_MAIN(
    TEST_CASE(task_core_finish_table), TEST_CASE(snapshot_parts_codec),
    TEST_CASE(new_catalog_is_current_and_wal), TEST_CASE(catalog_is_private_whatever_the_umask),
    TEST_CASE(empty_version_0_file_is_migrated),
    TEST_CASE(version_1_catalog_is_migrated_keeping_rows),
    TEST_CASE(version_2_catalog_is_migrated_keeping_rows),
    TEST_CASE(failed_migration_leaves_version_2), TEST_CASE(migration_keeps_rows_broken_before),
    TEST_CASE(next_version_catalog_is_refused_untouched),
    TEST_CASE(version_4_orders_old_snapshots),
    TEST_CASE(newer_catalog_is_refused_untouched), TEST_CASE(foreign_files_are_refused),
    TEST_CASE(missing_directory_is_explained), TEST_CASE(policy_round_trip),
    TEST_CASE(snapshot_round_trip), TEST_CASE(restore_round_trip_redacts_target),
    TEST_CASE(list_filters), TEST_CASE(set_state_stamps_times_and_error),
    TEST_CASE(unfinished_tasks_become_interrupted), TEST_CASE(set_verify_stamps_and_clears),
    TEST_CASE(unfinished_verifications_become_interrupted),
    TEST_CASE(integrity_check_reports_damage), TEST_CASE(progress_updates_reuse_one_statement),
    TEST_CASE(connections_in_two_threads), TEST_CASE(state_names_round_trip))

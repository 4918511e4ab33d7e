/* Retention as the agent schedules it, with no bus and no server: a manager over a catalog and
 * a local store (temporary directories), its policies loaded, and what retention then expires
 * and removes from the store. Decisions themselves are test-retention's; this is the agent's
 * side: which records it hands over, what it keeps (the newest by start order, whatever the
 * clock says), what it removes from the store, and what it records. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent-manager.h"
#include "catalog/catalog.h"
#include "common/timeutil.h"
#include "test.h"

#define N_SNAPS 5
#define HOUR_USEC (3600ull * 1000000ull)

static char root[64];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "we");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A state directory, a local store and policy p (its [Retention] lines given) under a fresh
 * root; returns the catalog, open, with p's runtime row (last_seq: the snapshots to come). */
static int make_root(const char *tag, const char *retention, uint64_t last_seq, MsCatalog **ret) {
    snprintf(root, sizeof(root), "/tmp/mongosnap-test-%s-%d", tag, (int) getpid());
    char path[256], text[512];
    if (mkdir(root, 0700) < 0)
        return -errno;
    static const char *const dirs[] = {"policies.d", "state", "store"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
        mkdir(path, 0700);
    }
    snprintf(path, sizeof(path), "%s/mongosnap.conf", root);
    write_file(path, "[Agent]\nNode=node-a\n");
    snprintf(path, sizeof(path), "%s/policies.d/p.conf", root);
    snprintf(text, sizeof(text),
             "[Policy]\nSource=mongodb://127.0.0.1:1/\nStore=%s/store\n\n[Retention]\n%s\n", root,
             retention);
    write_file(path, text);
    MsError e = MS_ERROR_INIT;
    snprintf(path, sizeof(path), "%s/state/%s", root, MS_CATALOG_FILE_NAME);
    int r = ms_catalog_open(path, ret, &e);
    MsPolicyRuntime rt = {.name = (char *) "p", .state = MS_POLICY_ACTIVE, .last_seq = last_seq};
    if (r >= 0)
        r = ms_catalog_set_policy(*ret, &rt, &e);
    if (r < 0)
        fprintf(stderr, "# setup: %s\n", e.message);
    return r;
}

/* Snapshot p-SEQ of policy p, completed at finished, with its two objects in the store. */
static int add_snapshot(MsCatalog *c, int seq, uint64_t finished) {
    char id[32], archive[64], manifest[64], path[256], store[128];
    snprintf(store, sizeof(store), "%s/store", root);
    snprintf(id, sizeof(id), "p-%d", seq);
    snprintf(archive, sizeof(archive), "%s.archive.zst", id);
    snprintf(manifest, sizeof(manifest), "%s.manifest.json", id);
    snprintf(path, sizeof(path), "%s/%s", store, archive);
    write_file(path, "archive");
    snprintf(path, sizeof(path), "%s/%s", store, manifest);
    write_file(path, "{}");
    MsSnapshotRecord rec = {
        .id = id,
        .node = (char *) "node-a",
        .policy = (char *) "p",
        .archive_key = archive,
        .manifest_key = manifest,
        .store = store,
        .state = MS_SNAPSHOT_COMPLETED,
        .created_usec = finished - HOUR_USEC / 60,
        .started_usec = finished - HOUR_USEC / 60,
        .finished_usec = finished,
        .seq = (uint64_t) seq,
        .origin = MS_SNAPSHOT_ORIGIN_SCHEDULED,
        .progress_pct = 100,
    };
    MsError e = MS_ERROR_INIT;
    int r = ms_catalog_insert_snapshot(c, &rec, &e);
    if (r < 0)
        fprintf(stderr, "# %s: %s\n", id, e.message);
    return r;
}

/* A manager over the root (no bus, no server; workers are /bin/false), its policies loaded:
 * loading them runs retention over what the catalog holds. */
static int start_manager(sd_event **ret_ev, Manager **ret) {
    char policies[128], state[128], config[128], timers[128];
    snprintf(policies, sizeof(policies), "%s/policies.d", root);
    snprintf(state, sizeof(state), "%s/state", root);
    snprintf(config, sizeof(config), "%s/mongosnap.conf", root);
    snprintf(timers, sizeof(timers), "%s/timers", root);
    /* The start's store check spawns a scan worker. */
    if (ms_test_block_sigchld() != 0 || sd_event_new(ret_ev) < 0)
        return -EIO;
    ManagerOptions o = {.config_path = config,
                        .policy_directory = policies,
                        .state_directory = state,
                        .worker_path = "/bin/false",
                        .timer_directory = timers};
    MsError e = MS_ERROR_INIT;
    int r = manager_new(*ret_ev, &o, ret, &e);
    if (r >= 0)
        r = manager_reload_policies(*ret, &e);
    if (r < 0)
        fprintf(stderr, "# manager: %s\n", e.message);
    return r;
}

static void remove_root(void) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    ASSERT(system(cmd) == 0);
}

/* A policy keeping the last three (removing two of five: retention holds a pass that would
 * remove more than half, see issue 12), five completed snapshots of it in a local store, started in
 * order 1..5 an hour apart; the newest (seq 5) says it finished a year in the future (a node's
 * clock ahead), and must be kept all the same. */
static void test_retention_at_start_keeps_the_newest_by_start_order(void) {
    MsCatalog *c = NULL;
    ASSERT_OK(make_root("retention", "KeepLast=3", N_SNAPS, &c));
    uint64_t now = ms_realtime_usec();
    for (int i = 1; i <= N_SNAPS; i++)
        ASSERT_OK(add_snapshot(c, i,
                               i == N_SNAPS ? now + 365 * 24 * HOUR_USEC
                                            : now - (uint64_t) (N_SNAPS - i) * HOUR_USEC));
    ms_catalog_close(c);
    sd_event *ev = NULL;
    Manager *m = NULL;
    ASSERT_OK(start_manager(&ev, &m));
    MsError e = MS_ERROR_INIT;
    char state[128];
    snprintf(state, sizeof(state), "%s/state", root);
    for (int i = 1; i <= N_SNAPS; i++) {
        char id[32], path[256];
        snprintf(id, sizeof(id), "p-%d", i);
        const MsSnapshotRecord *rec = manager_find_snapshot(m, id);
        ASSERT(rec);
        /* KeepLast=3 by start order: 3, 4 and 5 (5 though its clock says next year). */
        bool kept = i >= N_SNAPS - 2;
        if (rec->state != (kept ? MS_SNAPSHOT_COMPLETED : MS_SNAPSHOT_EXPIRED))
            fprintf(stderr, "# %s is %s\n", id, ms_snapshot_state_to_string(rec->state));
        ASSERT_EQ_INT(rec->state, kept ? MS_SNAPSHOT_COMPLETED : MS_SNAPSHOT_EXPIRED);
        snprintf(path, sizeof(path), "%s/store/%s.archive.zst", root, id);
        ASSERT_EQ_INT(exists(path), kept);
        snprintf(path, sizeof(path), "%s/store/%s.manifest.json", root, id);
        ASSERT_EQ_INT(exists(path), kept);
        if (i == N_SNAPS)
            ASSERT(rec->future_dated); /* flagged, never trusted as the newest */
    }
    manager_free(m);
    sd_event_unref(ev);

    /* What it decided is in the catalog: a restarted agent sees the same. */
    char db[256];
    snprintf(db, sizeof(db), "%s/%s", state, MS_CATALOG_FILE_NAME);
    ASSERT_OK(ms_catalog_open(db, &c, &e));
    for (int i = 1; i <= N_SNAPS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "p-%d", i);
        MsSnapshotRecord *rec = NULL;
        ASSERT_OK(ms_catalog_get_snapshot(c, id, &rec, &e));
        ASSERT_EQ_INT(rec->state, i >= N_SNAPS - 2 ? MS_SNAPSHOT_COMPLETED : MS_SNAPSHOT_EXPIRED);
        ms_snapshot_record_free(rec);
    }
    ms_catalog_close(c);
    remove_root();
}

/* MaxAge= is the one rule the clock alone triggers: the manager arms a timer for the next
 * expiry, and when it fires the snapshot is expired and removed with no other event. Two
 * snapshots of a policy with MaxAge=3s: the older expires about 2 s after the start (the newer,
 * the newest, is kept by the safety rule whatever its age). */
static void test_max_age_timer_expires_without_another_event(void) {
    MsCatalog *c = NULL;
    ASSERT_OK(make_root("maxage", "MaxAge=3s", 2, &c));
    uint64_t now = ms_realtime_usec();
    ASSERT_OK(add_snapshot(c, 1, now - 1000000u));
    ASSERT_OK(add_snapshot(c, 2, now));
    ms_catalog_close(c);
    char path[256], store[128];
    snprintf(store, sizeof(store), "%s/store", root);
    sd_event *ev = NULL;
    Manager *m = NULL;
    ASSERT_OK(start_manager(&ev, &m));
    /* At once: nothing is old enough. */
    ASSERT_EQ_INT(manager_find_snapshot(m, "p-1")->state, MS_SNAPSHOT_COMPLETED);
    ASSERT(manager_find_snapshot(m, "p-1")->expire_usec > ms_realtime_usec());
    /* The loop alone, no other event: the timer fires about 2 s from now. */
    uint64_t deadline = ms_monotonic_usec() + 8000000u;
    while (ms_monotonic_usec() < deadline &&
           manager_find_snapshot(m, "p-1")->state == MS_SNAPSHOT_COMPLETED)
        (void) sd_event_run(ev, 200000u);
    uint64_t waited = ms_monotonic_usec() - (deadline - 8000000u);
    ASSERT_EQ_INT(manager_find_snapshot(m, "p-1")->state, MS_SNAPSHOT_EXPIRED);
    ASSERT_EQ_INT(manager_find_snapshot(m, "p-2")->state, MS_SNAPSHOT_COMPLETED);
    ASSERT(waited >= 1000000u); /* not at once: when it was due */
    snprintf(path, sizeof(path), "%s/p-1.archive.zst", store);
    ASSERT(!exists(path));
    snprintf(path, sizeof(path), "%s/p-2.archive.zst", store);
    ASSERT(exists(path));
    manager_free(m);
    sd_event_unref(ev);
    remove_root();
}

MS_TEST_MAIN(TEST_CASE(test_retention_at_start_keeps_the_newest_by_start_order),
             TEST_CASE(test_max_age_timer_expires_without_another_event))

/* A cluster snapshot's part taken by another process, and the meeting through the store: see
 * cluster-part.h. */
#include "cluster-part.h"

#include <bson/bson.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/strv.h"
#include "common/timeutil.h"
#include "manifest.h"
#include "mongosnap/mongosnap.h"
#include "oplog-source.h"
#include "archive/bson-read.h"

#define MEET_MAX (64u * 1024u)
#define RUN_ID_LEN 32
#define SLEEP_STEP_USEC (100u * 1000u)

MsPartMeetTimeouts ms_part_meet_timeouts(uint64_t part_timeout_sec) {
    uint64_t s = part_timeout_sec ? part_timeout_sec : MS_CLUSTER_PART_TIMEOUT_DEFAULT_SEC;
    return (MsPartMeetTimeouts){.part_timeout_usec = s * 1000000u,
                                .claim_timeout_usec = 2 * s * 1000000u,
                                .poll_usec = 1000000u};
}

/* ---- the meeting objects ---- */

static char *meet_key(const char *parts_prefix, const char *shard, const char *what) {
    char *k = NULL;
    int n = shard ? asprintf(&k, "%s/%s.%s" MS_CLUSTER_MEET_SUFFIX, parts_prefix, shard, what)
                  : asprintf(&k, "%s/%s" MS_CLUSTER_MEET_SUFFIX, parts_prefix, what);
    return n < 0 ? NULL : k;
}

static int meet_put(MsStorage *st, const char *key, const bson_t *doc, MsError *e) {
    if (!key)
        return ms_error_oom(e);
    size_t len = 0;
    char *json = bson_as_relaxed_extended_json(doc, &len);
    int r = json ? ms_storage_put(st, key, json, len, e) : ms_error_oom(e);
    bson_free(json);
    return r;
}

/* The object at key, when it is there and of run (NULL: any run; its run then in *ret_run):
 * 1 with *ret set (caller destroys), 0 when it is not (or of another run, or unreadable: a
 * store that fails now is asked again at the next poll; a lasting failure ends in a time-out). */
static int meet_get(MsStorage *st, const char *key, const char *run, bson_t **ret) {
    *ret = NULL;
    if (!key)
        return 0;
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    MsError e = MS_ERROR_INIT;
    int r = ms_storage_get(st, key, MEET_MAX, &json, &len, &e);
    if (r < 0) {
        if (r != -ENOENT)
            log_debug("%s: %s (asked again)", key, e.message);
        return 0;
    }
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *) json, (ssize_t) len, &berr);
    if (!doc) {
        log_debug("%s: not JSON (%s)", key, berr.message);
        return 0;
    }
    bson_iter_t it;
    if (run && (!bson_iter_init_find(&it, doc, "run") || !BSON_ITER_HOLDS_UTF8(&it) ||
                strcmp(bson_iter_utf8(&it, NULL), run) != 0)) {
        bson_destroy(doc);
        return 0;
    }
    *ret = doc;
    return 1;
}

static int64_t doc_int(const bson_t *doc, const char *path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) ||
        !BSON_ITER_HOLDS_NUMBER(&it))
        return -1;
    return bson_iter_as_int64(&it);
}

static bool doc_position(const bson_t *doc, const char *key, MsOplogPosition *ret) {
    char path[64];
    snprintf(path, sizeof(path), "%s.t", key);
    int64_t t = doc_int(doc, path);
    snprintf(path, sizeof(path), "%s.i", key);
    int64_t i = doc_int(doc, path);
    if (t < 0 || t > UINT32_MAX || i < 0 || i > UINT32_MAX)
        return false;
    *ret = (MsOplogPosition){(uint32_t) t, (uint32_t) i};
    return true;
}

/* Sleeps usec, waking early when *cancel is set. */
static void nap(uint64_t usec, volatile sig_atomic_t *cancel) {
    for (uint64_t slept = 0; slept < usec && !(cancel && *cancel); slept += SLEEP_STEP_USEC)
        usleep((useconds_t) MS_MIN(SLEEP_STEP_USEC, usec - slept));
}

void ms_part_meet_clean(MsStorage *st, const char *parts_prefix) {
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/", parts_prefix) < 0)
        return;
    MsStorageObject *objs = NULL;
    size_t n = 0;
    MsError e = MS_ERROR_INIT;
    if (ms_storage_list_children(st, dir, MS_CLUSTER_MEET_SUFFIX, &objs, &n, &e) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        MsError re = MS_ERROR_INIT;
        (void) ms_storage_remove(st, objs[i].key, &re);
    }
    ms_storage_objects_free(objs, n);
}

/* ---- the coordinator ---- */

struct MsPartMeetCoordinator {
    MsStorage *st;
    char *parts_prefix;
    char *node;
    char run[RUN_ID_LEN + 1];
    char **parts; /* the shards other processes take (under lock): a part not named here is
                   * this coordinator's own, and a process offering to take it is refused */
    uint64_t seq;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
};

static int coordinator_beat(MsPartMeetCoordinator *c, MsError *e) {
    _cleanup_free_ char *key = meet_key(c->parts_prefix, NULL, "coordinator");
    bson_t doc = BSON_INITIALIZER, arr;
    BSON_APPEND_UTF8(&doc, "run", c->run);
    pthread_mutex_lock(&c->lock);
    BSON_APPEND_INT64(&doc, "seq", (int64_t) ++c->seq);
    BSON_APPEND_ARRAY_BEGIN(&doc, "parts", &arr);
    for (size_t i = 0; c->parts && c->parts[i]; i++) {
        char k[16];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kp, c->parts[i]);
    }
    bson_append_array_end(&doc, &arr);
    pthread_mutex_unlock(&c->lock);
    if (c->node)
        BSON_APPEND_UTF8(&doc, "node", c->node);
    int r = meet_put(c->st, key, &doc, e);
    bson_destroy(&doc);
    return r;
}

int ms_part_meet_coordinator_add_part(MsPartMeetCoordinator *c, const char *shard, MsError *e) {
    pthread_mutex_lock(&c->lock);
    int r = ms_strv_push(&c->parts, shard);
    pthread_mutex_unlock(&c->lock);
    if (r < 0)
        return ms_error_oom(e);
    /* In the store before anyone is asked to take it. */
    r = coordinator_beat(c, e);
    if (r < 0)
        ms_error_prefix(e, "cannot tell the parts that %s is taken elsewhere: ", shard);
    return r;
}

static void *coordinator_main(void *userdata) {
    MsPartMeetCoordinator *c = userdata;
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* a clock stepped back must not stop it */
        until.tv_sec += 1;
        pthread_cond_timedwait(&c->cond, &c->lock, &until);
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->lock);
        MsError e = MS_ERROR_INIT;
        if (coordinator_beat(c, &e) < 0)
            log_warning("cannot tell the parts that the coordinator is alive: %s", e.message);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void coordinator_free(MsPartMeetCoordinator *c) {
    free(c->parts_prefix);
    free(c->node);
    ms_strv_free(c->parts);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

int ms_part_meet_coordinator_start(MsStorage *st, const char *parts_prefix, const char *node,
                                   MsPartMeetCoordinator **ret, MsError *e) {
    MsPartMeetCoordinator *c = calloc(1, sizeof(*c));
    if (!c)
        return ms_error_oom(e);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &attr);
    pthread_condattr_destroy(&attr);
    c->st = st;
    uint8_t rnd[RUN_ID_LEN / 2];
    if (!(c->parts_prefix = strdup(parts_prefix)) || (node && !(c->node = strdup(node)))) {
        coordinator_free(c);
        return ms_error_oom(e);
    }
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd)) {
        coordinator_free(c);
        return ms_error_set(e, EIO, "no random bytes for the cluster snapshot's run id");
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(c->run + 2 * i, 3, "%02x", rnd[i]);
    /* What an earlier run of this name left would be taken for this one's (a part's "done"). */
    ms_part_meet_clean(st, parts_prefix);
    int r = coordinator_beat(c, e);
    if (r == 0 && pthread_create(&c->thread, NULL, coordinator_main, c) != 0)
        r = ms_error_set(e, EAGAIN, "cannot start the coordinator's thread");
    if (r < 0) {
        ms_error_prefix(e, "the cluster snapshot's parts cannot meet in the store: ");
        ms_part_meet_clean(st, parts_prefix);
        coordinator_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

void ms_part_meet_coordinator_end(MsPartMeetCoordinator *c, const char *aborted) {
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    if (aborted) {
        _cleanup_free_ char *key = meet_key(c->parts_prefix, NULL, "aborted");
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "run", c->run);
        BSON_APPEND_UTF8(&doc, "message", aborted);
        MsError e = MS_ERROR_INIT;
        if (meet_put(c->st, key, &doc, &e) < 0)
            log_warning("cannot tell the parts that the cluster snapshot was given up (they stop "
                        "when the coordinator has been silent long enough): %s",
                        e.message);
        bson_destroy(&doc);
    }
    coordinator_free(c);
}

/* {run, field: position} at parts_prefix/[shard.]what.meet.json */
static int meet_put_position(MsStorage *st, const char *parts_prefix, const char *shard,
                             const char *what, const char *run, const char *taker,
                             const char *field, MsOplogPosition pos, MsError *e) {
    _cleanup_free_ char *key = meet_key(parts_prefix, shard, what);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "run", run);
    if (taker)
        BSON_APPEND_UTF8(&doc, "taker", taker);
    ms_oplog_position_append(&doc, field, pos);
    int r = meet_put(st, key, &doc, e);
    bson_destroy(&doc);
    return r;
}

int ms_part_meet_put_point(const MsPartMeetCoordinator *c, MsOplogPosition point, MsError *e) {
    int r = meet_put_position(c->st, c->parts_prefix, NULL, "point", c->run, NULL, "point", point,
                              e);
    if (r < 0)
        ms_error_prefix(e, "cannot give the parts the consistency point: ");
    return r;
}

/* Waits for shard's object `what` of this run: its failure, a part never taken, one that went
 * silent and a cancellation end the wait. */
/* The process that takes shard's part (its taker id, the first seen): objects of another one
 * mean two processes took it, and their objects may be mixed: the cluster snapshot is given up.
 * 0 when obj is this taker's (or the first), -EEXIST otherwise. */
static int same_taker(const bson_t *obj, const char *shard, char taker[RUN_ID_LEN + 1],
                      MsError *e) {
    const char *id = ms_bson_str(obj, "taker");
    if (!id || strlen(id) != RUN_ID_LEN)
        return ms_error_set(e, EBADMSG, "an object of part %s names no process", shard);
    if (!taker[0])
        memcpy(taker, id, RUN_ID_LEN + 1);
    if (strcmp(taker, id) != 0)
        return ms_error_set(e, EEXIST,
                            "two processes took part %s (the last on node %s): their objects may "
                            "be mixed, so the cluster snapshot is given up; take each part once",
                            shard, ms_bson_str(obj, "node") ?: "?");
    return 0;
}

void ms_part_meet_watch_init(MsPartMeetWatch *w) {
    *w = (MsPartMeetWatch){.start_usec = ms_monotonic_usec(), .seq = -1};
}

int ms_part_meet_check(const MsPartMeetCoordinator *c, const char *shard,
                       const MsPartMeetTimeouts *t, MsPartMeetWatch *w, MsError *e) {
    _cleanup_free_ char *failed = meet_key(c->parts_prefix, shard, "failed");
    _cleanup_free_ char *alive = meet_key(c->parts_prefix, shard, "alive");
    if (!failed || !alive)
        return ms_error_oom(e);
    bson_t *doc = NULL;
    if (meet_get(c->st, failed, c->run, &doc)) {
        const char *msg = ms_bson_str(doc, "message");
        int r = same_taker(doc, shard, w->taker, e);
        if (r == 0)
            r = ms_error_set(e, EIO, "%s", msg ? msg : "it failed (no reason given)");
        bson_destroy(doc);
        return r;
    }
    if (meet_get(c->st, alive, c->run, &doc)) {
        int64_t s = doc_int(doc, "seq");
        int r = same_taker(doc, shard, w->taker, e);
        bson_destroy(doc);
        if (r < 0)
            return r;
        if (s != w->seq) {
            w->seq = s;
            w->changed_usec = ms_monotonic_usec();
        }
    }
    uint64_t now = ms_monotonic_usec();
    if (!w->changed_usec && now - w->start_usec > t->claim_timeout_usec)
        return ms_error_set(e, ETIMEDOUT,
                            "it was not taken within %" PRIu64 " s: no process took it (the "
                            "agent beside one of its members runs `mongosnap-worker "
                            "cluster-part`); check that agent",
                            t->claim_timeout_usec / 1000000u);
    if (w->changed_usec && now - w->changed_usec > t->part_timeout_usec)
        return ms_error_set(e, ETIMEDOUT,
                            "the process taking it stopped answering for %" PRIu64
                            " s (killed, or its node is down)",
                            t->part_timeout_usec / 1000000u);
    return 0;
}

/* Waits for shard's object `what` of this run: its failure, a part never taken, one that went
 * silent, two takers and a cancellation end the wait. */
static int wait_for(const MsPartMeetCoordinator *c, const char *shard, const char *what,
                    const MsPartMeetTimeouts *t, volatile sig_atomic_t *cancel, MsPartMeetWatch *w,
                    bson_t **ret, MsError *e) {
    _cleanup_free_ char *target = meet_key(c->parts_prefix, shard, what);
    if (!target)
        return ms_error_oom(e);
    for (;;) {
        if (cancel && *cancel)
            return ms_error_set(e, ECANCELED, "another part of the cluster snapshot failed");
        /* First what it waits for: a part quiets its heartbeat once it is done. */
        if (meet_get(c->st, target, c->run, ret)) {
            int r = same_taker(*ret, shard, w->taker, e);
            if (r < 0) {
                bson_destroy(*ret);
                *ret = NULL;
            }
            return r;
        }
        int r = ms_part_meet_check(c, shard, t, w, e);
        if (r < 0)
            return r;
        nap(t->poll_usec, cancel);
    }
}

int ms_part_meet_wait_dumped(const MsPartMeetCoordinator *c, const char *shard,
                             const MsPartMeetTimeouts *t, volatile sig_atomic_t *cancel,
                             MsPartMeetWatch *w, MsOplogPosition *ret_dump_end, MsError *e) {
    bson_t *doc = NULL;
    int r = wait_for(c, shard, "dumped", t, cancel, w, &doc, e);
    if (r < 0)
        return r;
    if (!doc_position(doc, "dump_end", ret_dump_end))
        r = ms_error_set(e, EBADMSG, "its dump end is no oplog position");
    bson_destroy(doc);
    return r;
}

/* Whether archive is the archive key a part's snapshot writes beside manifest_key (the stem and
 * one of the snapshot's archive suffixes: never another shard's or another object's key). */
static bool is_archive_of(const char *archive, const char *manifest_key) {
    static const char *const suffixes[] = {"", ".zst", ".gz", ".enc", ".zst.enc", ".gz.enc"};
    size_t stem = strlen(manifest_key) - strlen(MONGOSNAP_MANIFEST_SUFFIX);
    if (strncmp(archive, manifest_key, stem) != 0 ||
        strncmp(archive + stem, MONGOSNAP_ARCHIVE_SUFFIX, strlen(MONGOSNAP_ARCHIVE_SUFFIX)) != 0)
        return false;
    const char *rest = archive + stem + strlen(MONGOSNAP_ARCHIVE_SUFFIX);
    for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
        if (strcmp(rest, suffixes[i]) == 0)
            return true;
    return false;
}

/* The part's manifest, as the coordinator would have written it: at the key its shard name
 * gives, naming that archive, with its oplog, encrypted with the coordinator's key or not at
 * all as the coordinator is (a part taken with other settings must not pass for the policy's). */
static int check_manifest(const MsPartMeetCoordinator *c, const char *shard, const char *archive,
                          const char *key_id_hex, MsError *e) {
    _cleanup_free_ char *key = NULL, *json = NULL;
    if (asprintf(&key, "%s/%s" MONGOSNAP_MANIFEST_SUFFIX, c->parts_prefix, shard) < 0)
        return ms_error_oom(e);
    size_t len = 0;
    int r = ms_storage_get(c->st, key, MEET_MAX * 256, &json, &len, e);
    if (r < 0)
        return r;
    MsManifest m = {0};
    r = ms_manifest_parse(json, len, &m, e);
    if (r < 0)
        return r;
    if (!m.archive_key || strcmp(m.archive_key, archive) != 0 || !m.snapshot ||
        strcmp(m.snapshot, shard) != 0)
        r = ms_error_set(e, EBADMSG, "its manifest %s names another snapshot or archive", key);
    else if (!m.point_in_time)
        r = ms_error_set(e, EBADMSG, "its manifest %s has no oplog", key);
    else if (key_id_hex && (!m.encryption_cipher || strcmp(m.encryption_key_id, key_id_hex) != 0))
        r = ms_error_set(e, EBADMSG,
                         "it was %s, not with the cluster snapshot's key (%s): take the part with "
                         "the policy's key",
                         m.encryption_cipher ? "encrypted with another key" : "not encrypted",
                         key_id_hex);
    else if (!key_id_hex && m.encryption_cipher)
        r = ms_error_set(e, EBADMSG,
                         "it was encrypted (key %s), and the cluster snapshot is not: take the "
                         "part with the policy's settings",
                         m.encryption_key_id);
    ms_manifest_clear(&m);
    return r;
}

int ms_part_meet_wait_done(const MsPartMeetCoordinator *c, const char *shard,
                           const MsPartMeetTimeouts *t, volatile sig_atomic_t *cancel,
                           MsPartMeetWatch *w, MsOplogPosition dump_end,
                           const char *key_id_hex, MsSnapshotResult *ret, MsError *e) {
    bson_t *doc = NULL;
    int r = wait_for(c, shard, "done", t, cancel, w, &doc, e);
    if (r < 0)
        return r;
    const char *manifest = ms_bson_str(doc, "manifest"), *archive = ms_bson_str(doc, "archive");
    int64_t documents = doc_int(doc, "documents"), stored = doc_int(doc, "stored_bytes");
    MsSnapshotResult res = {.point_in_time = true};
    /* Its keys must be the ones its shard name gives: a part must not name another's objects. */
    _cleanup_free_ char *want = NULL;
    if (asprintf(&want, "%s/%s" MONGOSNAP_MANIFEST_SUFFIX, c->parts_prefix, shard) < 0)
        r = ms_error_oom(e);
    else if (!manifest || !archive || strcmp(manifest, want) != 0 || !is_archive_of(archive, want) ||
             documents < 0 || stored < 0 || !doc_position(doc, "dump_end", &res.dump_end) ||
             !doc_position(doc, "oplog_start", &res.oplog_start) ||
             !doc_position(doc, "oplog_end", &res.oplog_end))
        r = ms_error_set(e, EBADMSG, "what it reported done is not a part of shard %s", shard);
    /* The dump end it met the others with: the consistency point was computed from it. */
    else if (res.dump_end.t != dump_end.t || res.dump_end.i != dump_end.i)
        r = ms_error_set(e, EBADMSG,
                         "it reported a dump end other than the one it met the other parts with");
    else if ((r = check_manifest(c, shard, archive, key_id_hex, e)) < 0 && r != -ENOMEM) {
        /* Not a part of this snapshot: its objects go (its process has ended; nobody else
         * would), within this shard's own keys only (is_archive_of). */
        MsError ignore = MS_ERROR_INIT;
        (void) ms_storage_remove(c->st, archive, &ignore);
        (void) ms_storage_remove(c->st, want, &ignore);
    }
    if (r == 0 && (!(res.manifest_key = strdup(manifest)) || !(res.archive_key = strdup(archive))))
        r = ms_error_oom(e);
    res.documents = (uint64_t) MS_MAX(documents, 0);
    res.stored_bytes = (uint64_t) MS_MAX(stored, 0);
    bson_destroy(doc);
    if (r < 0) {
        ms_snapshot_result_clear(&res);
        return r;
    }
    *ret = res;
    return 0;
}

/* ---- the part ---- */

typedef struct PartSide {
    const MsClusterPartOptions *o;
    MsStorage *st;
    char *parts_prefix;
    char run[RUN_ID_LEN + 1];
    char taker[RUN_ID_LEN + 1]; /* this process, in every object it writes */
    pthread_t thread;
    pthread_mutex_t lock;
    bool stop;
    volatile sig_atomic_t cancel;
    char why[MS_ERROR_MESSAGE_MAX / 2];
} PartSide;

static void part_stop_with(PartSide *p, const char *why) {
    pthread_mutex_lock(&p->lock);
    if (!p->why[0])
        snprintf(p->why, sizeof(p->why), "%s", why);
    p->cancel = 1;
    pthread_mutex_unlock(&p->lock);
}

/* Says every poll that the part is alive, and watches the coordinator. */
static void *part_watch(void *userdata) {
    PartSide *p = userdata;
    const MsPartMeetTimeouts *t = &p->o->timeouts;
    _cleanup_free_ char *alive = meet_key(p->parts_prefix, p->o->shard, "alive");
    _cleanup_free_ char *coord = meet_key(p->parts_prefix, NULL, "coordinator");
    _cleanup_free_ char *aborted = meet_key(p->parts_prefix, NULL, "aborted");
    uint64_t seq = 0, changed = ms_monotonic_usec();
    int64_t coord_seq = -1;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            return NULL;
        volatile sig_atomic_t *outer = p->o->snapshot.cancel;
        if (outer && *outer)
            part_stop_with(p, "stopped");
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "run", p->run);
        BSON_APPEND_UTF8(&doc, "taker", p->taker);
        BSON_APPEND_INT64(&doc, "seq", (int64_t) ++seq);
        if (p->o->snapshot.node)
            BSON_APPEND_UTF8(&doc, "node", p->o->snapshot.node);
        MsError e = MS_ERROR_INIT;
        if (meet_put(p->st, alive, &doc, &e) < 0)
            log_warning("cannot tell the coordinator that part %s is alive: %s", p->o->shard,
                        e.message);
        bson_destroy(&doc);
        bson_t *got = NULL;
        if (meet_get(p->st, aborted, p->run, &got)) {
            const char *msg = ms_bson_str(got, "message");
            char why[MS_ERROR_MESSAGE_MAX / 2];
            snprintf(why, sizeof(why), "the coordinator gave the cluster snapshot up: %s",
                     msg ? msg : "?");
            bson_destroy(got);
            part_stop_with(p, why);
        } else if (meet_get(p->st, coord, p->run, &got)) {
            int64_t s = doc_int(got, "seq");
            bson_destroy(got);
            if (s != coord_seq) {
                coord_seq = s;
                changed = ms_monotonic_usec();
            }
        }
        if (ms_monotonic_usec() - changed > t->part_timeout_usec) {
            char why[256];
            snprintf(why, sizeof(why),
                     "the coordinator stopped answering for %" PRIu64 " s (killed, or its node "
                     "is down): the cluster snapshot is given up",
                     t->part_timeout_usec / 1000000u);
            part_stop_with(p, why);
        }
        nap(t->poll_usec, NULL);
    }
}

static bool names_part(const bson_t *coord, const char *shard) {
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, coord, "parts") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return false;
    while (bson_iter_next(&arr))
        if (BSON_ITER_HOLDS_UTF8(&arr) && strcmp(bson_iter_utf8(&arr, NULL), shard) == 0)
            return true;
    return false;
}

/* The coordinator of this cluster snapshot, alive (its run id seen to change once: a
 * coordinator's object that stands still is a dead run's) and naming this shard among the parts
 * taken elsewhere; and no other process taking it. Waits as long as a coordinator waits for a
 * part to be taken. */
static int find_coordinator(PartSide *p, MsError *e) {
    const MsPartMeetTimeouts *t = &p->o->timeouts;
    _cleanup_free_ char *coord = meet_key(p->parts_prefix, NULL, "coordinator");
    _cleanup_free_ char *alive = meet_key(p->parts_prefix, p->o->shard, "alive");
    if (!coord || !alive)
        return ms_error_oom(e);
    uint64_t start = ms_monotonic_usec();
    char first_run[RUN_ID_LEN + 1] = "";
    int64_t first_seq = -1;
    bool live = false, named = false;
    volatile sig_atomic_t *cancel = p->o->snapshot.cancel;
    while (ms_monotonic_usec() - start <= t->claim_timeout_usec) {
        if (cancel && *cancel)
            return ms_error_set(e, ECANCELED, "stopped");
        bson_t *doc = NULL;
        if (meet_get(p->st, coord, NULL, &doc)) {
            const char *run = ms_bson_str(doc, "run");
            int64_t seq = doc_int(doc, "seq");
            if (run && strlen(run) == RUN_ID_LEN) {
                if (first_seq >= 0 && strcmp(run, first_run) == 0 && seq != first_seq)
                    live = true;
                else if (first_seq < 0 || strcmp(run, first_run) != 0) {
                    memcpy(first_run, run, sizeof(first_run));
                    first_seq = seq;
                    live = false;
                }
                named = names_part(doc, p->o->shard);
            }
            bson_destroy(doc);
        }
        if (live && named) {
            memcpy(p->run, first_run, sizeof(p->run));
            /* Another process of this run took it already: two would mix their objects. */
            bson_t *other = NULL;
            if (meet_get(p->st, alive, p->run, &other)) {
                const char *taker = ms_bson_str(other, "taker"), *node = ms_bson_str(other, "node");
                int r = taker && strcmp(taker, p->taker) != 0
                            ? ms_error_set(e, EEXIST,
                                           "another process (node %s) takes part %s of %s/%s "
                                           "already",
                                           node ? node : "?", p->o->shard, p->o->prefix, p->o->name)
                            : 0;
                bson_destroy(other);
                if (r < 0) {
                    p->run[0] = '\0'; /* nothing of ours to say in the store */
                    return r;
                }
            }
            return 0;
        }
        nap(SLEEP_STEP_USEC * 5, cancel);
    }
    if (live)
        return ms_error_set(e, EPERM,
                            "the coordinator of cluster snapshot %s/%s takes part %s itself (it "
                            "does not name it among the parts taken elsewhere)",
                            p->o->prefix, p->o->name, p->o->shard);
    return ms_error_set(e, ETIMEDOUT,
                        "no coordinator of cluster snapshot %s/%s answered within %" PRIu64
                        " s: start the part once its coordinator runs (`cluster-snapshot "
                        "--remote-part %s`)",
                        p->o->prefix, p->o->name, t->claim_timeout_usec / 1000000u, p->o->shard);
}

/* The barrier, across processes: the dump end to the coordinator, the point from it. */
static int part_barrier(void *userdata, MsOplogPosition dump_end, MsOplogPosition *ret_point,
                        MsError *e) {
    PartSide *p = userdata;
    _cleanup_free_ char *point = meet_key(p->parts_prefix, NULL, "point");
    int r = meet_put_position(p->st, p->parts_prefix, p->o->shard, "dumped", p->run, p->taker,
                              "dump_end", dump_end, e);
    if (r < 0)
        return r;
    log_info("part %s dumped (oplog %" PRIu32 ":%" PRIu32 "); waiting for the other parts", p->o->shard,
             dump_end.t, dump_end.i);
    while (!p->cancel) {
        bson_t *got = NULL;
        if (meet_get(p->st, point, p->run, &got)) {
            bool ok = doc_position(got, "point", ret_point);
            bson_destroy(got);
            if (!ok)
                return ms_error_set(e, EBADMSG, "the coordinator's consistency point is no oplog "
                                                "position");
            /* T is the latest dump end: never before this part's own. */
            if (ms_oplog_position_after(dump_end, *ret_point))
                return ms_error_set(e, EBADMSG,
                                    "the coordinator's consistency point %" PRIu32 ":%" PRIu32
                                    " is before this part's dump end: not this part's cluster "
                                    "snapshot",
                                    ret_point->t, ret_point->i);
            return 0;
        }
        nap(p->o->timeouts.poll_usec, &p->cancel);
    }
    char why[sizeof(p->why)];
    pthread_mutex_lock(&p->lock);
    memcpy(why, p->why, sizeof(why));
    pthread_mutex_unlock(&p->lock);
    return ms_error_set(e, ECANCELED, "%s", why[0] ? why : "stopped");
}

static int part_say(PartSide *p, const char *what, bson_t *doc, MsError *e) {
    _cleanup_free_ char *key = meet_key(p->parts_prefix, p->o->shard, what);
    BSON_APPEND_UTF8(doc, "run", p->run);
    BSON_APPEND_UTF8(doc, "taker", p->taker);
    if (p->o->snapshot.node)
        BSON_APPEND_UTF8(doc, "node", p->o->snapshot.node);
    return meet_put(p->st, key, doc, e);
}

int ms_cluster_part_run(const MsClusterPartOptions *o, MsSnapshotResult *ret, MsError *e) {
    *ret = (MsSnapshotResult){0};
    if (!o->prefix || !*o->prefix || !o->name || !*o->name || !o->shard || !*o->shard ||
        o->shard[0] == '.' || strchr(o->shard, '/') || strcmp(o->shard, "config") == 0)
        return ms_error_set(e, EINVAL,
                            "a part needs the policy's prefix, the cluster snapshot's name and a "
                            "shard's name (the config data is the coordinator's own part)");
    PartSide p = {.o = o, .st = o->snapshot.storage};
    pthread_mutex_init(&p.lock, NULL);
    int r = 0;
    uint8_t rnd[RUN_ID_LEN / 2];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
        r = ms_error_set(e, EIO, "no random bytes for the part's id");
    for (size_t i = 0; r == 0 && i < sizeof(rnd); i++)
        snprintf(p.taker + 2 * i, 3, "%02x", rnd[i]);
    if (r == 0 && asprintf(&p.parts_prefix, "%s/%s.parts", o->prefix, o->name) < 0) {
        p.parts_prefix = NULL;
        r = ms_error_oom(e);
    }
    if (r == 0)
        r = find_coordinator(&p, e);
    bool watching = r == 0 && pthread_create(&p.thread, NULL, part_watch, &p) == 0;
    if (r == 0 && !watching)
        r = ms_error_set(e, EAGAIN, "cannot start the part's thread");
    if (r == 0) {
        MsSnapshotOptions so = o->snapshot;
        so.prefix = p.parts_prefix;
        so.name = o->shard;
        so.origin = "cluster";
        so.capture_oplog = true;
        so.after_dump = part_barrier;
        so.after_dump_userdata = &p;
        so.cancel = &p.cancel;
        r = ms_snapshot_run(&so, ret, e);
        /* Stopped for the coordinator's sake (gone, or given up): a failure of this part, not
         * a stop someone asked for. */
        volatile sig_atomic_t *outer = o->snapshot.cancel;
        char why[sizeof(p.why)];
        pthread_mutex_lock(&p.lock);
        memcpy(why, p.why, sizeof(why));
        pthread_mutex_unlock(&p.lock);
        if (r == -ECANCELED && why[0] && !(outer && *outer)) {
            ms_error_clear(e); /* the first error wins: this one says why */
            r = ms_error_set(e, ECONNABORTED, "%s", why);
        }
        if (r == 0 && !ret->point_in_time)
            r = ms_error_set(e, EINVAL,
                             "it has no oplog (local.oplog.rs): a cluster snapshot needs every "
                             "shard's oplog to reach a common point");
    }
    /* Quiet before "done": nothing of this part is written after it (the coordinator removes
     * the meeting objects once it has every part). */
    if (watching) {
        pthread_mutex_lock(&p.lock);
        p.stop = true;
        pthread_mutex_unlock(&p.lock);
        pthread_join(p.thread, NULL);
        watching = false;
    }
    bool said_done = false;
    if (r == 0) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "manifest", ret->manifest_key);
        BSON_APPEND_UTF8(&doc, "archive", ret->archive_key);
        BSON_APPEND_INT64(&doc, "documents", (int64_t) MS_MIN(ret->documents, (uint64_t) INT64_MAX));
        BSON_APPEND_INT64(&doc, "stored_bytes",
                          (int64_t) MS_MIN(ret->stored_bytes, (uint64_t) INT64_MAX));
        ms_oplog_position_append(&doc, "dump_end", ret->dump_end);
        ms_oplog_position_append(&doc, "oplog_start", ret->oplog_start);
        ms_oplog_position_append(&doc, "oplog_end", ret->oplog_end);
        said_done = true;
        r = part_say(&p, "done", &doc, e);
        bson_destroy(&doc);
    }
    if (r < 0 && p.run[0]) {
        /* The coordinator names the shard with this message; what was committed goes (without
         * the cluster manifest it is no snapshot, and the coordinator no longer waits for it). */
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "message", e->message);
        MsError se = MS_ERROR_INIT;
        (void) part_say(&p, "failed", &doc, &se);
        bson_destroy(&doc);
        /* After a "done" whose write failed, it may have landed all the same and been taken:
         * the objects stay (a cluster snapshot that fails without them has them removed with
         * its parts). */
        MsError ignore = MS_ERROR_INIT;
        if (ret->manifest_key && !said_done)
            (void) ms_storage_remove(p.st, ret->manifest_key, &ignore);
        if (ret->archive_key && !said_done)
            (void) ms_storage_remove(p.st, ret->archive_key, &ignore);
    }
    if (r < 0)
        ms_snapshot_result_clear(ret);
    free(p.parts_prefix);
    pthread_mutex_destroy(&p.lock);
    return r;
}

/* The oplog follower (oplog-follow.h).
 *
 * Position: the chain's position P is the ts of the last entry stored in a slice with entries
 * (or, for a new chain, the newest entry when it began). The cursor reads {ts: {$gt: P}}; a
 * slice holds (start, end] with end its last entry, so the next one starts exactly where it
 * ended. Idle slices (no entry for a whole period) claim (P, server time - margin] and are
 * replaced, never chained from: the position stays at the last real entry, so an entry that
 * shows up late with an earlier timestamp still lands in the next slice.
 *
 * Gaps: whenever the cursor is (re)opened, the oldest entry the oplog still holds must be at or
 * before P; if it is not, entries after P may have rolled off. The open slice is committed, a
 * "gap" event names the missing range, and a new chain begins at the newest entry. */
#include "oplog-follow.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "archive/archive.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/strv.h"
#include "common/timeutil.h"
#include "config.h"
#include "io/chain.h"
#include "mongo-client.h"
#include "mongosnap/mongosnap.h"
#include "oplog-slice.h"
#include "oplog-source.h"

#define FOLLOW_SEGMENT_BYTES (1024u * 1024u)
#define FOLLOW_AWAIT_MS 1000
/* After a cursor came back empty, wait this long before asking again: the bound on the delay
 * the follower adds (small beside SliceSec=, at least 10 s), and the rate of the queries an
 * idle follower sends (on FerretDB each one scans the whole oplog). */
#define FOLLOW_REPOLL_MS 500

typedef struct SliceWriter {
    char *archive_key;
    MsSink *head;
    MsChainResults chain;
    MsArchiveWriter *writer;
    MsArchiveNsStream ns;
    bool ns_ready;
    MsOplogPosition start, last;
    uint64_t entries;
    uint64_t opened_usec; /* monotonic */
    uint64_t started_realtime;
} SliceWriter;

typedef struct Follower {
    const MsFollowOptions *o;
    MsMongo *mongo;
    mongoc_client_t *client;
    char *server_version;
    mongoc_cursor_t *cursor;
    MsOplogPosition position; /* P */
    MsOplogPosition read;     /* the last entry read, committed or not */
    char **idle_keys;         /* idle slices at P, replaced by the next commit */
    MsFollowResult res;
} Follower;

static bool cancelled(const Follower *f) {
    return f->o->cancel && *f->o->cancel;
}

static int oplog_edge(Follower *f, bool newest, bool *ret_exists, MsOplogPosition *ret,
                      MsError *e) {
    return ms_oplog_edge(f->mongo, f->client, newest, ret_exists, ret, e);
}

/* The server's clock in seconds (hello's localTime); false when it does not say. */
static bool server_seconds(Follower *f, uint32_t *ret) {
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    bool ok = mongoc_client_command_simple(f->client, "admin", &cmd, NULL, &reply, NULL);
    bson_destroy(&cmd);
    bson_iter_t it;
    if (ok && bson_iter_init_find(&it, &reply, "localTime") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        int64_t ms = bson_iter_date_time(&it);
        ok = ms > 0 && ms / 1000 <= UINT32_MAX;
        if (ok)
            *ret = (uint32_t) (ms / 1000);
    } else
        ok = false;
    bson_destroy(&reply);
    return ok;
}

/* ---- one slice ---- */

static void slice_abort(SliceWriter *w) {
    if (w->ns_ready)
        ms_archive_ns_stream_clear(&w->ns);
    ms_archive_writer_free(w->writer);
    ms_sink_free(w->head); /* before finish(): the store keeps nothing */
    free(w->archive_key);
    memset(w, 0, sizeof(*w));
}

static int slice_open(Follower *f, SliceWriter *w, MsError *e) {
    static const char tool_version[] = "mongosnap " MONGOSNAP_VERSION;
    const MsFollowOptions *o = f->o;
    *w = (SliceWriter){
        .start = f->position,
        .last = f->position,
        .opened_usec = ms_now_usec(),
        .started_realtime = ms_realtime_usec(),
    };
    w->archive_key = ms_slice_archive_key(o->prefix, f->position, o->compression, o->key != NULL);
    if (!w->archive_key)
        return ms_error_oom(e);
    MsSink *store = NULL;
    int r = ms_storage_open_write(o->storage, w->archive_key, &store, e);
    if (r < 0)
        return r;
    MsSinkChainSpec spec = {
        .compression = o->compression, .level = o->compression_level, .key = o->key};
    r = ms_sink_chain_new(store, &spec, &w->chain, &w->head, e);
    if (r < 0)
        return r;
    w->writer = ms_archive_writer_new(w->head);
    if (!w->writer)
        return ms_error_oom(e);
    MsArchiveHeader header = {
        .concurrent_collections = 1,
        .version = (char *) MS_ARCHIVE_FORMAT_VERSION,
        .server_version = f->server_version,
        .tool_version = (char *) tool_version,
    };
    MsArchiveCollection oplog = {
        .db = (char *) MS_ARCHIVE_OPLOG_DB,
        .collection = (char *) MS_ARCHIVE_OPLOG_COLLECTION,
        .metadata_json = (char *) "",
        .type = (char *) "",
    };
    r = ms_archive_writer_write_prelude(w->writer, &header, &oplog, 1, e);
    if (r == 0)
        r = ms_archive_ns_stream_init(&w->ns, w->writer, MS_ARCHIVE_OPLOG_DB,
                                      MS_ARCHIVE_OPLOG_COLLECTION, FOLLOW_SEGMENT_BYTES, e);
    w->ns_ready = r == 0;
    return r;
}

static int slice_add(Follower *f, SliceWriter *w, const bson_t *doc, MsError *e) {
    MsOplogPosition ts = ms_oplog_entry_position(doc);
    /* The cursor asked for entries after P in order, so an entry at or before the last one
     * read is one read already: FerretDB's tailable cursor sends a partial first batch again
     * on its next getMore. A server never sends an earlier entry later (mongod's oplog
     * visibility holds entries back until those before them are written), so dropping it
     * keeps every entry once. */
    if (!ms_oplog_position_after(ts, f->read)) {
        f->res.repeated++;
        return 0;
    }
    f->read = ts;
    int r = ms_archive_ns_stream_add(&w->ns, bson_get_data(doc), doc->len, e);
    if (r < 0)
        return r;
    w->last = ts;
    w->entries++;
    ms_progress_add_items(f->o->progress, 1, doc->len);
    return 0;
}

static int slice_manifest(Follower *f, SliceWriter *w, MsOplogPosition end, uint64_t stored,
                          MsManifest *m, MsError *e) {
    static const char tool_version[] = "mongosnap " MONGOSNAP_VERSION;
    const MsFollowOptions *o = f->o;
    char hostname[256] = "unknown";
    gethostname(hostname, sizeof(hostname) - 1);
    char started[MS_ISO8601_MAX], finished[MS_ISO8601_MAX], a[MS_SLICE_POSITION_LEN + 1],
        b[MS_SLICE_POSITION_LEN + 1], name[2 * MS_SLICE_POSITION_LEN + 2];
    ms_format_iso8601(w->started_realtime, started);
    ms_format_iso8601(ms_realtime_usec(), finished);
    ms_oplog_position_format(w->start, a);
    ms_oplog_position_format(end, b);
    snprintf(name, sizeof(name), "%s-%s", a, b);
    *m = (MsManifest){
        .elapsed_usec = ms_now_usec() - w->opened_usec,
        .archive_size = stored,
        .uncompressed_size = w->chain.raw_bytes,
        .encryption_chunk_size = o->key ? MS_ENCRYPT_DEFAULT_CHUNK_SIZE : 0,
        .point_in_time = true,
        .oplog_start = w->start,
        .oplog_end = end,
        .oplog_entries = w->entries,
    };
    bool oom = !(m->kind = strdup(MONGOSNAP_MANIFEST_KIND_SLICE)) ||
               !(m->snapshot = strdup(name)) || !(m->tool_version = strdup(tool_version)) ||
               !(m->started_at = strdup(started)) || !(m->finished_at = strdup(finished)) ||
               !(m->source_uri = strdup(ms_mongo_redacted_uri(f->mongo))) ||
               !(m->server_version = strdup(f->server_version ? f->server_version : "")) ||
               !(m->node = strdup(o->node ? o->node : "")) || !(m->host = strdup(hostname)) ||
               !(m->archive_key = strdup(w->archive_key)) ||
               !(m->compression = strdup(ms_compression_to_string(o->compression))) ||
               (o->key && !(m->encryption_cipher = strdup(MS_ENCRYPT_CIPHER_NAME)));
    if (oom)
        return ms_error_oom(e);
    memcpy(m->archive_sha256, w->chain.stored_sha256, sizeof(m->archive_sha256));
    if (o->key)
        memcpy(m->encryption_key_id, o->key->id_hex, sizeof(m->encryption_key_id));
    MsManifestNamespace ns = {
        .db = (char *) MS_ARCHIVE_OPLOG_DB,
        .collection = (char *) MS_ARCHIVE_OPLOG_COLLECTION,
        .type = (char *) "oplog",
        .documents = w->entries,
        .bytes = w->ns.bytes,
        .crc64 = w->ns.crc,
    };
    if (ms_manifest_add_namespace(m, &ns) < 0)
        return ms_error_oom(e);
    m->total_documents = w->entries;
    m->total_bytes = w->ns.bytes;
    return 0;
}

/* Remove the idle slices the chain's position had: a newer slice says more. */
static void drop_idle_keys(Follower *f) {
    for (size_t i = 0; f->idle_keys && f->idle_keys[i]; i++) {
        MsError ignore = MS_ERROR_INIT;
        if (ms_slice_remove(f->o->storage, f->idle_keys[i], &ignore) < 0)
            log_warning("cannot remove the replaced idle slice %s: %s", f->idle_keys[i],
                        ignore.message);
    }
    f->idle_keys = ms_strv_free(f->idle_keys);
}

/* The archive, then the manifest: a slice exists only once its manifest does. */
static int slice_commit(Follower *f, SliceWriter *w, MsOplogPosition end, bool idle, MsError *e) {
    const MsFollowOptions *o = f->o;
    int r = ms_archive_ns_stream_finish(&w->ns, e);
    if (r == 0)
        r = ms_archive_writer_check_complete(w->writer, e);
    if (r == 0)
        r = ms_sink_finish(w->head, e);
    if (r < 0) {
        ms_error_prefix(e, "storing the oplog slice %s: ", w->archive_key);
        return r;
    }
    MsStorageObject stored = {0};
    r = ms_storage_stat(o->storage, w->archive_key, &stored, e);
    free(stored.key);
    if (r == 0 && stored.size != w->chain.stored_bytes)
        r = ms_error_set(e, EBADMSG,
                         "the store holds %" PRIu64 " bytes of %s, but %" PRIu64 " were sent",
                         stored.size, w->archive_key, w->chain.stored_bytes);
    _cleanup_(ms_manifest_clear) MsManifest m = {0};
    _cleanup_free_ char *json = NULL;
    _cleanup_free_ char *manifest_key = ms_slice_manifest_key(o->prefix, w->start, end, idle);
    size_t len = 0;
    if (r == 0 && !manifest_key)
        r = ms_error_oom(e);
    if (r == 0)
        r = slice_manifest(f, w, end, stored.size, &m, e);
    if (r == 0)
        r = ms_manifest_serialize(&m, &json, &len, e);
    if (r == 0)
        r = ms_storage_put(o->storage, manifest_key, json, len, e);
    if (r < 0) {
        ms_error_prefix(e, "committing the oplog slice %s: ", manifest_key ? manifest_key : "");
        MsError ignore = MS_ERROR_INIT;
        ms_storage_remove(o->storage, w->archive_key, &ignore);
        return r;
    }
    if (idle) {
        f->res.idle_slices++;
        drop_idle_keys(f);
        if (ms_strv_push(&f->idle_keys, manifest_key) < 0)
            return ms_error_oom(e);
    } else {
        f->res.slices++;
        f->res.entries += w->entries;
        drop_idle_keys(f);
        f->position = end;
    }
    uint64_t now = ms_realtime_usec();
    bson_t ev = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&ev, "key", manifest_key);
    BSON_APPEND_UTF8(&ev, "archive", w->archive_key);
    ms_oplog_position_append(&ev, "start", w->start);
    ms_oplog_position_append(&ev, "end", end);
    BSON_APPEND_BOOL(&ev, "idle", idle);
    BSON_APPEND_INT64(&ev, "entries", (int64_t) w->entries);
    BSON_APPEND_INT64(&ev, "stored_bytes", (int64_t) stored.size);
    BSON_APPEND_INT64(&ev, "lag_usec",
                      now > (uint64_t) end.t * 1000000u ? (int64_t) (now - (uint64_t) end.t * 1000000u)
                                                        : 0);
    ms_progress_event(o->progress, MONGOSNAP_PROGRESS_EVENT_SLICE, &ev);
    bson_destroy(&ev);
    log_debug("committed oplog slice %s (%" PRIu64 " entries)", manifest_key, w->entries);
    if (o->on_slice) {
        MsSliceRef ref = {.start = w->start, .end = end, .idle = idle, .manifest_key = manifest_key};
        o->on_slice(o->userdata, &ref);
    }
    ms_archive_ns_stream_clear(&w->ns);
    ms_archive_writer_free(w->writer);
    ms_sink_free(w->head);
    free(w->archive_key);
    memset(w, 0, sizeof(*w));
    return 0;
}

/* ---- the chain's position ---- */

/* Where the stored chain ends: the farthest end of a slice with entries, or the start of the
 * idle slices when there are only those. */
static int find_position(Follower *f, bool *ret_found, MsError *e) {
    MsSliceRef *slices = NULL;
    size_t n = 0;
    int r = ms_slices_list(f->o->storage, f->o->prefix, &slices, &n, e);
    if (r < 0)
        return r;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        MsOplogPosition p = slices[i].idle ? slices[i].start : slices[i].end;
        if (!found || ms_oplog_position_after(p, f->position))
            f->position = p;
        found = true;
    }
    for (size_t i = 0; r == 0 && i < n; i++)
        if (slices[i].idle && !ms_oplog_position_after(slices[i].start, f->position) &&
            !ms_oplog_position_after(f->position, slices[i].start) &&
            ms_strv_push(&f->idle_keys, slices[i].manifest_key) < 0)
            r = ms_error_oom(e);
    ms_slices_free(slices, n);
    *ret_found = found;
    return r;
}

static int start_new_chain(Follower *f, MsError *e) {
    bool exists = false, have_oldest = false;
    MsOplogPosition newest = {0, 0}, oldest = {0, 0};
    int r = oplog_edge(f, true, &exists, &newest, e);
    if (r == 0 && exists)
        r = oplog_edge(f, false, &have_oldest, &oldest, e);
    if (r < 0)
        return r;
    f->position = exists ? newest : (MsOplogPosition){0, 0};
    /* From the newest snapshot's end, when the oplog still holds every entry after it: the
     * snapshot is restorable onward at once instead of from the next one. */
    const MsOplogPosition hint = f->o->chain_start_hint;
    if (f->o->has_chain_start_hint && have_oldest &&
        !ms_oplog_position_after(oldest, hint) && !ms_oplog_position_after(hint, newest))
        f->position = hint;
    f->read = f->position;
    /* The old chain's idle slices stay: what they claim about it is still true. */
    f->idle_keys = ms_strv_free(f->idle_keys);
    log_info("a new chain of oplog slices begins at %" PRIu32 ":%" PRIu32, f->position.t,
             f->position.i);
    return 0;
}

/* Entries after P may have rolled off the oplog: the oldest it holds is later than P. */
static int check_gap(Follower *f, bool *ret_gap, MsOplogPosition *ret_oldest, MsError *e) {
    bool exists = false;
    *ret_gap = false;
    int r = oplog_edge(f, false, &exists, ret_oldest, e);
    if (r < 0)
        return r;
    *ret_gap = exists && ms_oplog_position_after(*ret_oldest, f->read) &&
               (f->read.t != 0 || f->read.i != 0);
    return 0;
}

static void report_gap(Follower *f, MsOplogPosition oldest) {
    f->res.gaps++;
    bson_t ev = BSON_INITIALIZER;
    ms_oplog_position_append(&ev, "from", f->read);
    ms_oplog_position_append(&ev, "to", oldest);
    ms_progress_event(f->o->progress, MONGOSNAP_PROGRESS_EVENT_GAP, &ev);
    bson_destroy(&ev);
    log_warning("gap in the oplog chain: entries after %" PRIu32 ":%" PRIu32
                " and before %" PRIu32 ":%" PRIu32
                " are no longer in the oplog (it rolled over, or the follower was stopped longer "
                "than the oplog's window); times in the gap cannot be restored, and the next "
                "snapshot begins a new restorable range",
                f->read.t, f->read.i, oldest.t, oldest.i);
}

static void cursor_close(Follower *f) {
    if (f->cursor)
        mongoc_cursor_destroy(f->cursor);
    f->cursor = NULL;
}

static void cursor_open(Follower *f, uint32_t await_ms) {
    mongoc_collection_t *coll = mongoc_client_get_collection(f->client, MS_OPLOG_DB, MS_OPLOG_COLLECTION);
    bson_t *filter =
        BCON_NEW("ts", "{", "$gt", BCON_TIMESTAMP(f->read.t, f->read.i), "}");
    bson_t *opts = BCON_NEW("tailable", BCON_BOOL(true), "awaitData", BCON_BOOL(true),
                            "maxAwaitTimeMS", BCON_INT64(await_ms));
    f->cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    bson_destroy(filter);
    bson_destroy(opts);
    mongoc_collection_destroy(coll);
}

static void sleep_ms(unsigned ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef enum ReadOutcome {
    READ_DOC,
    READ_NOTHING, /* nothing now; the cursor may still be alive */
    READ_GAP,
} ReadOutcome;

/* One step of the cursor: an entry, nothing for now, or a gap found when it was reopened. */
static int read_step(Follower *f, uint32_t await_ms, const bson_t **ret_doc,
                     MsOplogPosition *ret_oldest, MsError *e) {
    bool fresh = false;
    if (!f->cursor) {
        cursor_open(f, await_ms);
        fresh = true;
    }
    const bson_t *doc = NULL;
    bool got = mongoc_cursor_next(f->cursor, &doc);
    bson_error_t berr;
    if (!got && mongoc_cursor_error(f->cursor, &berr)) {
        int r = ms_mongo_error(f->mongo, e, &berr, "reading the oplog (local.oplog.rs)");
        cursor_close(f);
        return r;
    }
    if (fresh) {
        /* Checked after the first read: the oplog held P's successors when we read them only
         * if its oldest entry is still at or before P now (roll-over only moves it later). */
        bool gap = false;
        int r = check_gap(f, &gap, ret_oldest, e);
        if (r < 0) {
            cursor_close(f);
            return r;
        }
        if (gap) {
            cursor_close(f);
            return READ_GAP;
        }
    }
    if (got) {
        *ret_doc = doc;
        return READ_DOC;
    }
    /* Nothing now. The cursor is asked again from the last entry read: FerretDB closes a
     * tailable cursor whose first batch found nothing, and one that stays open never sends
     * entries written after it was opened (seen at 1,000 writes/s, where the follower stalled
     * once a first batch left entries for getMore). On mongod an awaitData cursor answers
     * empty only after maxAwaitTimeMS without a write, so this costs one query per idle
     * second there. */
    cursor_close(f);
    sleep_ms(FOLLOW_REPOLL_MS);
    return READ_NOTHING;
}

static uint64_t remaining_ms(const Follower *f, const SliceWriter *w) {
    uint64_t elapsed = ms_now_usec() - w->opened_usec;
    return elapsed >= f->o->slice_usec ? 0 : (f->o->slice_usec - elapsed) / 1000;
}

/* Close the period's slice: with entries it is committed up to its last entry; without, an
 * idle slice claims up to the server's clock less a margin, when that is after P. */
static int close_period(Follower *f, SliceWriter *w, MsError *e) {
    if (w->entries > 0)
        return slice_commit(f, w, w->last, false, e);
    uint32_t now_sec;
    if (!server_seconds(f, &now_sec) || now_sec <= MS_FOLLOW_IDLE_MARGIN_SEC) {
        slice_abort(w);
        return 0;
    }
    MsOplogPosition claim = {now_sec - MS_FOLLOW_IDLE_MARGIN_SEC, UINT32_MAX};
    if (!ms_oplog_position_after(claim, w->start)) {
        slice_abort(w);
        return 0;
    }
    /* The idle claim holds only if nothing arrived meanwhile: one more look first. */
    const bson_t *doc = NULL;
    MsOplogPosition oldest;
    int r = read_step(f, 10, &doc, &oldest, e);
    if (r == READ_DOC) {
        r = slice_add(f, w, doc, e);
        return r < 0 ? r : slice_commit(f, w, w->last, false, e);
    }
    if (r == READ_GAP) {
        slice_abort(w);
        report_gap(f, oldest);
        return start_new_chain(f, e);
    }
    if (r < 0) {
        slice_abort(w);
        return r;
    }
    return slice_commit(f, w, claim, true, e);
}

static bool limits_reached(const Follower *f, uint64_t started) {
    const MsFollowOptions *o = f->o;
    return (o->max_slices && f->res.slices >= o->max_slices) ||
           (o->max_usec && ms_now_usec() - started >= o->max_usec);
}

int ms_follow_run(const MsFollowOptions *o, MsFollowResult *ret, MsError *e) {
    Follower f = {.o = o};
    SliceWriter w = {0};
    bool open = false;
    uint64_t started = ms_now_usec();
    int r = ms_mongo_open(o->uri, o->password, 1, &f.mongo, e);
    if (r == 0) {
        f.client = ms_mongo_pop(f.mongo);
        r = ms_mongo_ping(f.mongo, f.client, &f.server_version, e);
    }
    /* A sharded cluster's oplog is every shard's: one follower on the config server alone
     * would write slices no restore can use. A cluster is followed part by part
     * (mongosnap-worker follow does it, cluster-pit.h), the config server being one part. */
    if (r == 0 && !o->cluster_part && ms_mongo_is_sharded_source(f.client))
        r = ms_error_set_kind(e, MS_ERROR_KIND_NOT_SUPPORTED, EOPNOTSUPP,
                              "the source is a sharded cluster's mongos or config server: its "
                              "oplog is every shard's; follow it part by part (mongosnap-worker "
                              "follow does, with the cluster's source)");
    bool exists = false;
    if (r == 0)
        r = ms_oplog_exists(f.mongo, f.client, &exists, e);
    if (r == 0 && !exists)
        r = ms_error_set(e, ENOENT,
                         "the source has no oplog (local.oplog.rs): point-in-time recovery "
                         "follows a replica set member's oplog; point the policy at one");
    bool resumed = false;
    if (r == 0)
        r = find_position(&f, &resumed, e);
    if (r == 0 && resumed) {
        bool gap = false;
        MsOplogPosition oldest;
        r = check_gap(&f, &gap, &oldest, e);
        if (r == 0 && gap) {
            report_gap(&f, oldest);
            r = start_new_chain(&f, e);
        } else if (r == 0) {
            f.read = f.position;
            log_info("following the oplog from %" PRIu32 ":%" PRIu32 ", where the stored chain "
                     "ends",
                     f.position.t, f.position.i);
        }
    } else if (r == 0)
        r = start_new_chain(&f, e);
    ms_progress_set_phase(o->progress, "follow");
    if (r == 0 && o->on_slice)
        o->on_slice(o->userdata, NULL);

    while (r == 0 && !cancelled(&f)) {
        if (!open) {
            r = slice_open(&f, &w, e);
            if (r < 0)
                break;
            open = true;
        }
        uint64_t left = remaining_ms(&f, &w);
        if (left == 0) {
            open = false;
            r = close_period(&f, &w, e);
            if (r == 0 && limits_reached(&f, started))
                break;
            continue;
        }
        const bson_t *doc = NULL;
        MsOplogPosition oldest;
        int k = read_step(&f, (uint32_t) MS_MIN(left, FOLLOW_AWAIT_MS), &doc, &oldest, e);
        if (k < 0) {
            r = k;
            break;
        }
        if (k == READ_DOC)
            r = slice_add(&f, &w, doc, e);
        else if (k == READ_GAP) {
            /* What was read before the gap is committed; the chain ends there. */
            open = false;
            r = w.entries > 0 ? slice_commit(&f, &w, w.last, false, e) : (slice_abort(&w), 0);
            if (r == 0) {
                report_gap(&f, oldest);
                r = start_new_chain(&f, e);
            }
        }
    }
    /* Stopped, or failed: what was read is committed (a failure's own error wins). */
    if (open && w.entries > 0) {
        MsError ce = MS_ERROR_INIT;
        int c = slice_commit(&f, &w, w.last, false, &ce);
        if (c < 0 && r == 0) {
            r = c;
            *e = ce;
        } else if (c < 0)
            log_warning("the open oplog slice could not be committed: %s", ce.message);
        open = c == 0 ? false : open;
    }
    if (open)
        slice_abort(&w);
    cursor_close(&f);
    ms_strv_free(f.idle_keys); /* forgotten, not removed: they are the newest word */
    f.res.position = f.position;
    *ret = f.res;
    if (f.client)
        ms_mongo_push(f.mongo, f.client);
    ms_mongo_free(f.mongo);
    free(f.server_version);
    return r;
}

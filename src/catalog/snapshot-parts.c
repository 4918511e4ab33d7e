/* A cluster snapshot's parts in its record: see snapshot-parts.h. */
#include "snapshot-parts.h"
#include "archive/bson-read.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static bool doc_u64(const bson_t *doc, const char *key, uint64_t *ret) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key) ||
        !(BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)) || bson_iter_as_int64(&it) < 0)
        return false;
    *ret = (uint64_t) bson_iter_as_int64(&it);
    return true;
}

/* {"t":N,"i":N} under key (as ms_oplog_position_append() writes it). */
static bool doc_position(const bson_t *doc, const char *key, uint32_t *t, uint32_t *i) {
    bson_iter_t it, sub;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &sub))
        return false;
    uint64_t v[2] = {0, 0};
    bool found[2] = {false, false};
    while (bson_iter_next(&sub)) {
        int k = strcmp(bson_iter_key(&sub), "t") == 0 ? 0 : strcmp(bson_iter_key(&sub), "i") == 0 ? 1 : -1;
        if (k < 0)
            continue;
        if (!(BSON_ITER_HOLDS_INT32(&sub) || BSON_ITER_HOLDS_INT64(&sub)))
            return false;
        int64_t x = bson_iter_as_int64(&sub);
        if (x < 0 || x > UINT32_MAX)
            return false;
        v[k] = (uint64_t) x;
        found[k] = true;
    }
    *t = (uint32_t) v[0];
    *i = (uint32_t) v[1];
    return found[0] && found[1];
}

int ms_snapshot_parts_append(bson_t *array, uint32_t n, const bson_t *doc) {
    const char *shard = ms_bson_str(doc, "shard"), *manifest = ms_bson_str(doc, "manifest");
    if (!shard || !*shard || !manifest || !*manifest)
        return -EINVAL;
    const char *rs = ms_bson_str(doc, "replica_set"), *node = ms_bson_str(doc, "node");
    uint64_t documents = 0, stored = 0;
    uint32_t t = 0, i = 0;
    (void) doc_u64(doc, "documents", &documents);
    (void) doc_u64(doc, "stored_bytes", &stored);
    (void) doc_position(doc, "dump_end", &t, &i);
    char key[16];
    snprintf(key, sizeof(key), "%" PRIu32, n);
    bson_t part, pos;
    bool ok = bson_append_document_begin(array, key, -1, &part) &&
              BSON_APPEND_UTF8(&part, "shard", shard) &&
              BSON_APPEND_UTF8(&part, "replica_set", rs ? rs : "") &&
              BSON_APPEND_UTF8(&part, "manifest", manifest) &&
              BSON_APPEND_INT64(&part, "documents", (int64_t) documents) &&
              BSON_APPEND_INT64(&part, "stored_bytes", (int64_t) stored) &&
              bson_append_document_begin(&part, "dump_end", -1, &pos) &&
              BSON_APPEND_INT64(&pos, "t", t) && BSON_APPEND_INT64(&pos, "i", i) &&
              bson_append_document_end(&part, &pos) &&
              (!node || BSON_APPEND_UTF8(&part, "node", node)) &&
              bson_append_document_end(array, &part);
    return ok ? 0 : -ENOMEM;
}

char *ms_snapshot_parts_to_json(const bson_t *array) {
    return bson_empty(array) ? NULL : bson_array_as_json(array, NULL);
}

int ms_snapshot_parts_foreach(const char *json, int (*fn)(const MsSnapshotPart *p, void *userdata),
                              void *userdata, MsError *e) {
    if (!json || !*json)
        return 0;
    bson_error_t berr;
    /* A JSON object would parse too: only an array of parts is one. */
    const char *s = json + strspn(json, " \t\n");
    bson_t *array = *s == '[' ? bson_new_from_json((const uint8_t *) json, -1, &berr) : NULL;
    if (!array)
        return ms_error_set(e, EBADMSG, "a snapshot's parts are not a JSON array of parts");
    bson_iter_t it;
    bool bad = !bson_iter_init(&it, array);
    int r = 0;
    while (!bad && r >= 0 && bson_iter_next(&it)) {
        bson_t doc;
        const uint8_t *data;
        uint32_t len;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bad = true;
            break;
        }
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&doc, data, len)) {
            bad = true;
            break;
        }
        MsSnapshotPart p = {.shard = ms_bson_str(&doc, "shard"),
                            .replica_set = ms_bson_str(&doc, "replica_set"),
                            .manifest = ms_bson_str(&doc, "manifest")};
        if (!p.shard || !p.manifest || !doc_u64(&doc, "documents", &p.documents) ||
            !doc_u64(&doc, "stored_bytes", &p.stored_bytes) ||
            !doc_position(&doc, "dump_end", &p.dump_end_t, &p.dump_end_i)) {
            bad = true;
            break;
        }
        if (!p.replica_set)
            p.replica_set = "";
        p.node = ms_bson_str(&doc, "node");
        if (!p.node)
            p.node = "";
        r = fn(&p, userdata);
    }
    bson_destroy(array);
    if (bad)
        return ms_error_set(e, EBADMSG, "a snapshot's parts are not a JSON array of parts");
    return r;
}

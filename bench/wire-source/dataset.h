/* The benchmark dataset as wire-source serves it: the collections, shapes and sizes of
 * bench/lib/benchdata.py (engine-bench's dataset), generated in C from per-collection seeds.
 *
 * A collection at scale S <= P (the pool scale, 1 unless told) is a pool of generated
 * documents of S x its target size. Above P the pool stays at scale P and document i is pool document i % pool_n with its _id
 * replaced by id(i): the _id is the first field and has a fixed width per collection, so the
 * server copies the pool bytes and writes the new _id over the old one (memory speed, no
 * storage that grows with S). _ids grow with i in BSON order, so `sort: {_id: 1}` is index
 * order and an `_id` range is an index range found by binary search. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    WS_ID_INT32,    /* users: 0, 1, 2, ... */
    WS_ID_OBJECTID, /* increasing ObjectIds: 4-byte time, 5 constant bytes, 3-byte counter */
    WS_ID_STRING,   /* fixed-width decimal strings with a per-collection format */
    WS_ID_UUID,     /* binary subtype 4: big-endian index then 8 constant bytes */
    WS_ID_INT64,    /* audit: 1,700,000,000,000 + i */
} WsIdKind;

typedef struct WsCollection {
    const char *db, *name;
    WsIdKind id_kind;
    double target_mib; /* at scale 1 */
    /* the pool */
    uint8_t *pool;
    uint64_t *offsets; /* pool_n + 1 entries */
    uint64_t pool_n;
    /* what is served */
    uint64_t n;     /* documents: the index space (deleted ones included, see below) */
    uint64_t bytes; /* BSON bytes of the visible documents */
    uint64_t visible; /* documents not deleted */
    uint32_t id_len; /* bytes of the _id value (fixed) */
    /* Churn (ws_dataset_set_day): day d of a database that changes every day. Documents below
     * n_base are day 0's; version[i] is 0 (as on day 0), the day it was last updated, or
     * WS_DELETED. Each day inserts ins_per_day documents after the others (ids keep growing,
     * like time-ordered ObjectIds). NULL version: day 0. */
    uint64_t n_base, ins_per_day;
    uint32_t *version;
    unsigned day;
} WsCollection;

#define WS_DELETED UINT32_MAX

/* Generates every collection's pool for `scale` (2 threads); returns the array. */
WsCollection *ws_dataset_new(double scale, double pool_scale, size_t *ret_n);
void ws_dataset_free(WsCollection *c, size_t n);

/* Day `day` of the dataset: each day since day 0, upd of the documents get a new body, del of
 * them are deleted and ins of them are inserted (fractions, e.g. 0.01). Deterministic. Not to
 * be called while cursors are open. */
void ws_dataset_set_day(WsCollection *c, size_t n, unsigned day, double upd, double ins, double del);
/* Whether document i exists on the current day. */
static inline bool ws_doc_visible(const WsCollection *c, uint64_t i) {
    return !c->version || i >= c->n_base || c->version[i] != WS_DELETED;
}
/* The BSON bytes of document i (i < c->n) into out (at least ws_doc_len(c, i) bytes). */
uint32_t ws_doc_len(const WsCollection *c, uint64_t i);
void ws_doc_copy(const WsCollection *c, uint64_t i, uint8_t *out);
/* Appends {_id: id(i)} as an element to b. */
void ws_append_id(const WsCollection *c, uint64_t i, bson_t *b, const char *key);
/* The first index whose _id is >= v (strict: > v), comparing as MongoDB orders BSON values;
 * a value of another type sorts by MongoDB's type order (MinKey first, MaxKey last). */
uint64_t ws_lower_bound(const WsCollection *c, const bson_iter_t *v, int strict);

/* A collection's _id space cut into ranges for parallel reading (snapshot-split.h). */
#include "snapshot-split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static bool is_integer(const bson_value_t *v) {
    return v->value_type == BSON_TYPE_INT32 || v->value_type == BSON_TYPE_INT64;
}

static int64_t as_int64(const bson_value_t *v) {
    return v->value_type == BSON_TYPE_INT32 ? v->value.v_int32 : v->value.v_int64;
}

static bool is_finite_number(const bson_value_t *v) {
    return is_integer(v) || (v->value_type == BSON_TYPE_DOUBLE && isfinite(v->value.v_double));
}

static double as_double(const bson_value_t *v) {
    return v->value_type == BSON_TYPE_DOUBLE ? v->value.v_double : (double) as_int64(v);
}

/* 96-bit big-endian ObjectId <-> integer */
static unsigned __int128 oid_to_int(const bson_oid_t *o) {
    unsigned __int128 x = 0;
    for (int k = 0; k < 12; k++)
        x = (x << 8) | o->bytes[k];
    return x;
}

static void int_to_oid(unsigned __int128 x, bson_oid_t *o) {
    for (int k = 11; k >= 0; k--, x >>= 8)
        o->bytes[k] = (uint8_t) x;
}

static int compare_bound(const bson_value_t *a, const bson_value_t *b) {
    switch (a->value_type) {
    case BSON_TYPE_OID:
        return memcmp(a->value.v_oid.bytes, b->value.v_oid.bytes, 12);
    case BSON_TYPE_DATE_TIME:
        return (a->value.v_datetime > b->value.v_datetime) - (a->value.v_datetime < b->value.v_datetime);
    case BSON_TYPE_INT64:
        return (a->value.v_int64 > b->value.v_int64) - (a->value.v_int64 < b->value.v_int64);
    default:
        return (as_double(a) > as_double(b)) - (as_double(a) < as_double(b));
    }
}

size_t ms_id_split_interpolate(const bson_value_t *min, const bson_value_t *max, unsigned parts,
                               bson_value_t *out) {
    if (parts < 2)
        return 0;
    size_t n = 0;
    bson_value_t prev = *min;
    for (unsigned k = 1; k < parts; k++) {
        bson_value_t v = {0};
        if (min->value_type == BSON_TYPE_OID && max->value_type == BSON_TYPE_OID) {
            unsigned __int128 lo = oid_to_int(&min->value.v_oid), hi = oid_to_int(&max->value.v_oid);
            if (hi <= lo)
                return 0;
            v.value_type = BSON_TYPE_OID;
            int_to_oid(lo + (hi - lo) / parts * k + (hi - lo) % parts * k / parts, &v.value.v_oid);
        } else if (min->value_type == BSON_TYPE_DATE_TIME && max->value_type == BSON_TYPE_DATE_TIME) {
            __int128 lo = min->value.v_datetime, hi = max->value.v_datetime;
            if (hi <= lo)
                return 0;
            v.value_type = BSON_TYPE_DATE_TIME;
            v.value.v_datetime = (int64_t) (lo + (hi - lo) * k / parts);
        } else if (is_integer(min) && is_integer(max)) {
            __int128 lo = as_int64(min), hi = as_int64(max);
            if (hi <= lo)
                return 0;
            v.value_type = BSON_TYPE_INT64;
            v.value.v_int64 = (int64_t) (lo + (hi - lo) * k / parts);
        } else if (is_finite_number(min) && is_finite_number(max)) {
            double lo = as_double(min), hi = as_double(max);
            if (!(hi > lo) || !isfinite(hi - lo))
                return 0;
            v.value_type = BSON_TYPE_DOUBLE;
            v.value.v_double = lo + (hi - lo) * k / parts;
        } else
            return 0;
        /* Strictly increasing and above min: a bound equal to its predecessor adds nothing. */
        if (compare_bound(&v, &prev) <= 0)
            continue;
        out[n++] = v;
        prev = v;
    }
    return n;
}

/* The first _id in _id order after skipping `skip` documents (sort ascending, or descending
 * for the largest); false when there is none or the query fails. */
static bool id_at(mongoc_collection_t *coll, uint64_t skip, bool descending, bson_value_t *ret) {
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(descending ? -1 : 1), "}",
                            "projection", "{", "_id", BCON_INT32(1), "}", "skip",
                            BCON_INT64((int64_t) skip), "limit", BCON_INT64(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    bool found = false;
    bson_iter_t it;
    if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "_id")) {
        bson_value_copy(bson_iter_value(&it), ret);
        found = true;
    }
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr)) {
        log_debug("not splitting %s: %s", mongoc_collection_get_name(coll), berr.message);
        if (found)
            bson_value_destroy(ret);
        found = false;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    return found;
}

/* Bounds are compared by the server's own order: a bound is kept only if it is strictly above
 * the previous one there, which a find for "_id > prev, _id <= this" with limit 1 settles
 * without us reimplementing BSON ordering (any collation); of two types it finds nothing. */
static bool strictly_above(mongoc_collection_t *coll, const bson_value_t *prev, const bson_value_t *v) {
    bson_t filter = BSON_INITIALIZER, cond;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &cond);
    BSON_APPEND_VALUE(&cond, "$gt", prev);
    BSON_APPEND_VALUE(&cond, "$lte", v);
    bson_append_document_end(&filter, &cond);
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    bool above = mongoc_cursor_next(cur, &doc);
    bson_error_t berr;
    if (mongoc_cursor_error(cur, &berr))
        above = false;
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    return above;
}

void ms_id_split_plan(mongoc_client_t *c, const char *db, const char *name, uint64_t count,
                      unsigned parts, MsIdSplit *ret) {
    *ret = (MsIdSplit){.n_parts = 1};
    if (parts > count)
        parts = (unsigned) count;
    if (parts < 2)
        return;
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, name);
    bson_value_t min, max;
    bool have_min = id_at(coll, 0, false, &min);
    bool have_max = have_min && id_at(coll, 0, true, &max);
    bson_value_t *bounds = calloc(parts - 1, sizeof(*bounds));
    size_t n = 0;
    if (have_max && bounds) {
        n = ms_id_split_interpolate(&min, &max, parts, bounds);
        if (n == 0) {
            /* The _id at every count/parts-th position, kept if the server finds it above
             * the previous bound: that also keeps every bound of one type, which the
             * partition needs (b0 an int and b1 a string would leave the ints above b0 in
             * no part, range queries being type-bracketed). Positions shift under
             * concurrent writes, so "above" is asked, not assumed. */
            for (unsigned k = 1; k < parts; k++) {
                bson_value_t v;
                if (!id_at(coll, count / parts * k, false, &v))
                    break;
                if (n > 0 && !strictly_above(coll, &bounds[n - 1], &v)) {
                    bson_value_destroy(&v);
                    continue;
                }
                bounds[n++] = v;
            }
        }
    }
    if (have_min)
        bson_value_destroy(&min);
    if (have_max)
        bson_value_destroy(&max);
    mongoc_collection_destroy(coll);
    if (n == 0) {
        free(bounds);
        return;
    }
    *ret = (MsIdSplit){.n_parts = (unsigned) n + 1, .bounds = bounds};
}

void ms_id_split_filter(const MsIdSplit *s, unsigned k, bson_t *filter) {
    if (s->n_parts < 2)
        return;
    bson_t cond, not;
    BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &cond);
    if (k == 0) {
        BSON_APPEND_DOCUMENT_BEGIN(&cond, "$not", &not);
        BSON_APPEND_VALUE(&not, "$gte", &s->bounds[0]);
        bson_append_document_end(&cond, &not);
    } else {
        BSON_APPEND_VALUE(&cond, "$gte", &s->bounds[k - 1]);
        if (k < s->n_parts - 1)
            BSON_APPEND_VALUE(&cond, "$lt", &s->bounds[k]);
    }
    bson_append_document_end(filter, &cond);
}

void ms_id_split_clear(MsIdSplit *s) {
    for (unsigned k = 0; k + 1 < s->n_parts; k++)
        bson_value_destroy(&s->bounds[k]);
    free(s->bounds);
    *s = (MsIdSplit){.n_parts = 1};
}

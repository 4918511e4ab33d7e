/* One field of a BSON document (bson-read.h). */
#include "archive/bson-read.h"

static bool find(const bson_t *b, const char *key, bson_iter_t *it) {
    return b && bson_iter_init_find(it, b, key);
}

const char *ms_bson_str(const bson_t *b, const char *key) {
    bson_iter_t it;
    return find(b, key, &it) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
}

bool ms_bson_doc(const bson_t *b, const char *key, bson_t *ret) {
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    if (!find(b, key, &it))
        return false;
    if (BSON_ITER_HOLDS_DOCUMENT(&it))
        bson_iter_document(&it, &len, &data);
    else if (BSON_ITER_HOLDS_ARRAY(&it))
        bson_iter_array(&it, &len, &data);
    else
        return false;
    return bson_init_static(ret, data, len);
}

bool ms_bson_true(const bson_t *b, const char *key) {
    bson_iter_t it;
    return find(b, key, &it) && bson_iter_as_bool(&it);
}

uint64_t ms_bson_u64(const bson_t *b, const char *key) {
    bson_iter_t it;
    if (!find(b, key, &it))
        return 0;
    if (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)) {
        int64_t v = bson_iter_as_int64(&it);
        return v > 0 ? (uint64_t) v : 0;
    }
    if (BSON_ITER_HOLDS_DOUBLE(&it)) {
        double v = bson_iter_double(&it);
        if (!(v > 0)) /* NaN too */
            return 0;
        return v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t) v;
    }
    return 0;
}

double ms_bson_double(const bson_t *b, const char *key) {
    bson_iter_t it;
    return find(b, key, &it) && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_double(&it) : 0;
}

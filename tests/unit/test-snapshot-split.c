/* How a snapshot cuts a collection's _id space (engine/snapshot-split.h): interpolated bounds
 * for every pair of types, and the parts' filters. That the parts together read every document
 * whatever the _id types is shown against FerretDB (tests/integration/test_snapshot_split.py)
 * and wire-source (test_wire_source.py). */
#include <bson/bson.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine/snapshot-split.h"
#include "test.h"

static bson_value_t int32v(int32_t x) {
    return (bson_value_t){.value_type = BSON_TYPE_INT32, .value.v_int32 = x};
}
static bson_value_t int64v(int64_t x) {
    return (bson_value_t){.value_type = BSON_TYPE_INT64, .value.v_int64 = x};
}
static bson_value_t doublev(double x) {
    return (bson_value_t){.value_type = BSON_TYPE_DOUBLE, .value.v_double = x};
}
static bson_value_t datev(int64_t x) {
    return (bson_value_t){.value_type = BSON_TYPE_DATE_TIME, .value.v_datetime = x};
}
static bson_value_t oidv(const char *hex) {
    bson_value_t v = {.value_type = BSON_TYPE_OID};
    bson_oid_init_from_string(&v.value.v_oid, hex);
    return v;
}
static bson_value_t utf8v(const char *s) {
    return (bson_value_t){.value_type = BSON_TYPE_UTF8,
                          .value.v_utf8 = {.str = (char *) s, .len = (uint32_t) strlen(s)}};
}

/* Bounds strictly increase, all above min and below max, and there are parts - 1 of them
 * when the range is wide enough. */
static void interpolates_each_type(void) {
    bson_value_t out[8];
    bson_value_t lo = int32v(0), hi = int64v(1000);
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 4, out), 3);
    ASSERT(out[0].value_type == BSON_TYPE_INT64 && out[0].value.v_int64 == 250);
    ASSERT(out[2].value.v_int64 == 750);

    lo = int64v(INT64_MIN);
    hi = int64v(INT64_MAX); /* no overflow across the whole range */
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 2, out), 1);
    ASSERT(out[0].value.v_int64 == -1 || out[0].value.v_int64 == 0);

    lo = doublev(-1.5);
    hi = int32v(3);
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 3, out), 2);
    ASSERT(out[0].value_type == BSON_TYPE_DOUBLE && out[0].value.v_double == 0.0);
    ASSERT(out[1].value.v_double == 1.5);

    lo = datev(1000);
    hi = datev(5000);
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 4, out), 3);
    ASSERT(out[1].value_type == BSON_TYPE_DATE_TIME && out[1].value.v_datetime == 3000);

    lo = oidv("000000000000000000000000");
    hi = oidv("ffffffffffffffffffffffff");
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 4, out), 3);
    char hex[25];
    bson_oid_to_string(&out[1].value.v_oid, hex);
    ASSERT_STREQ(hex, "7fffffffffffffffffffffff");
    for (int k = 0; k < 2; k++)
        ASSERT(memcmp(out[k].value.v_oid.bytes, out[k + 1].value.v_oid.bytes, 12) < 0);
    /* time-ordered ObjectIds a second apart: the split falls between them */
    lo = oidv("65000000aaaaaaaaaa000001");
    hi = oidv("65000010aaaaaaaaaa000002");
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 2, out), 1);
    ASSERT(memcmp(out[0].value.v_oid.bytes, lo.value.v_oid.bytes, 12) > 0);
    ASSERT(memcmp(out[0].value.v_oid.bytes, hi.value.v_oid.bytes, 12) < 0);
}

/* What does not interpolate gives no bounds (the plan then looks bounds up by position). */
static void refuses_what_it_cannot_order(void) {
    bson_value_t out[8];
    struct {
        bson_value_t lo, hi;
    } cases[] = {
        {int32v(5), int32v(5)},                   /* one value */
        {int32v(9), int32v(1)},                   /* reversed */
        {doublev(NAN), doublev(1)},               /* NaN sorts first among numbers */
        {doublev(1), doublev(INFINITY)},          /* no finite midpoint */
        {doublev(-DBL_MAX), doublev(DBL_MAX)},    /* the width overflows */
        {utf8v("a"), utf8v("z")},                 /* strings: by position instead */
        {int32v(1), utf8v("z")},                  /* mixed types */
        {oidv("000000000000000000000001"), datev(5)},
        {datev(5), datev(5)},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
        ASSERT_EQ_INT(ms_id_split_interpolate(&cases[k].lo, &cases[k].hi, 4, out), 0);
    /* a range narrower than the parts: only the distinct bounds */
    bson_value_t lo = int32v(0), hi = int32v(2);
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 8, out), 1);
    ASSERT(out[0].value.v_int64 == 1);
    ASSERT_EQ_INT(ms_id_split_interpolate(&lo, &hi, 1, out), 0);
}

/* Part 0 is the complement of ">= b0" (so _ids of any other type land there), the middle
 * parts half-open ranges, the last open above. */
static void filters_partition(void) {
    bson_value_t b[2] = {int64v(10), int64v(20)};
    MsIdSplit s = {.n_parts = 3, .bounds = b};
    const char *want[] = {
        "{ \"_id\" : { \"$not\" : { \"$gte\" : { \"$numberLong\" : \"10\" } } } }",
        "{ \"_id\" : { \"$gte\" : { \"$numberLong\" : \"10\" }, \"$lt\" : { \"$numberLong\" : \"20\" } } }",
        "{ \"_id\" : { \"$gte\" : { \"$numberLong\" : \"20\" } } }",
    };
    for (unsigned k = 0; k < 3; k++) {
        bson_t f = BSON_INITIALIZER;
        ms_id_split_filter(&s, k, &f);
        char *json = bson_as_canonical_extended_json(&f, NULL);
        ASSERT_STREQ(json, want[k]);
        bson_free(json);
        bson_destroy(&f);
    }
    MsIdSplit one = {.n_parts = 1};
    bson_t f = BSON_INITIALIZER;
    ms_id_split_filter(&one, 0, &f);
    ASSERT(bson_empty(&f));
    bson_destroy(&f);
}

MS_TEST_MAIN(TEST_CASE(interpolates_each_type), TEST_CASE(refuses_what_it_cannot_order),
             TEST_CASE(filters_partition))

/* Tests for translating MongoDB 5+ "$v: 2" update deltas into classic $set/$unset updates, and
 * for parsing oplog positions ("T:I" or an ISO 8601 UTC time). Delta shapes are those the
 * servers write to the oplog (document_diff_serialization: d/u/i/s<field>, and for arrays
 * a:true, l, u<index>, s<index>). */
#include <errno.h>
#include <stdint.h>

#include "common/macro.h"
#include "engine/oplog-apply.h"
#include "engine/restore.h"
#include "test.h"

/* Field name length and nesting for the path-length checks: 2 levels fit in any sane limit,
 * 8 levels (over 4 KiB of path) must be refused rather than cut. */
#define LONG_FIELD_LEN 600
#define MAX_DEEP_LEVELS 8u

static char *canonical(const bson_t *b) {
    return bson_as_canonical_extended_json(b, NULL);
}

/* Translate the delta (JSON) and compare with the expected update (JSON), both normalised
 * through libbson so types and field order are compared exactly. */
static bool diff_gives(const char *delta_json, const char *expected_json) {
    bson_error_t berr;
    bson_t *delta = bson_new_from_json((const uint8_t *) delta_json, -1, &berr);
    if (!delta) {
        fprintf(stderr, "# bad delta JSON '%s': %s\n", delta_json, berr.message);
        return false;
    }
    bson_t *expected = bson_new_from_json((const uint8_t *) expected_json, -1, &berr);
    if (!expected) {
        fprintf(stderr, "# bad expected JSON '%s': %s\n", expected_json, berr.message);
        bson_destroy(delta);
        return false;
    }
    bson_t update;
    MsError e = MS_ERROR_INIT;
    int r = ms_oplog_diff_to_update(delta, &update, &e);
    bool ok = false;
    if (r < 0)
        fprintf(stderr, "# delta %s failed: %d %s\n", delta_json, r, e.message);
    else {
        char *got = canonical(&update), *want = canonical(expected);
        ok = got && want && strcmp(got, want) == 0;
        if (!ok)
            fprintf(stderr, "# delta %s\n#   gave     %s\n#   expected %s\n", delta_json, got,
                    want);
        bson_free(got);
        bson_free(want);
        bson_destroy(&update);
    }
    bson_destroy(delta);
    bson_destroy(expected);
    return ok;
}

/* Translate a delta that must fail; returns the error code and fills e. */
static int diff_fails(const char *delta_json, MsError *e) {
    bson_error_t berr;
    bson_t *delta = bson_new_from_json((const uint8_t *) delta_json, -1, &berr);
    if (!delta) {
        fprintf(stderr, "# bad delta JSON '%s': %s\n", delta_json, berr.message);
        return 0;
    }
    bson_t update;
    int r = ms_oplog_diff_to_update(delta, &update, e);
    if (r == 0) {
        char *got = canonical(&update);
        fprintf(stderr, "# delta %s unexpectedly gave %s\n", delta_json, got);
        bson_free(got);
        bson_destroy(&update);
    }
    bson_destroy(delta);
    return r;
}

/* {$set: {a: 1}} on an existing field. */
static void update_field(void) {
    ASSERT(diff_gives("{\"u\": {\"a\": 1}}", "{\"$set\": {\"a\": 1}}"));
}

/* {$set: {b: 2}} on a new field. */
static void insert_field(void) {
    ASSERT(diff_gives("{\"i\": {\"b\": 2}}", "{\"$set\": {\"b\": 2}}"));
}

/* {$unset: {c: 1}} */
static void delete_field(void) {
    ASSERT(diff_gives("{\"d\": {\"c\": false}}", "{\"$unset\": {\"c\": \"\"}}"));
}

/* {$set: {"x.y": 1}} */
static void nested_subdocument(void) {
    ASSERT(diff_gives("{\"sx\": {\"u\": {\"y\": 1}}}", "{\"$set\": {\"x.y\": 1}}"));
    ASSERT(diff_gives("{\"sa\": {\"sb\": {\"sc\": {\"i\": {\"d\": 1}}}}}",
                      "{\"$set\": {\"a.b.c.d\": 1}}"));
}

/* {$set: {"arr.1": 5}} */
static void array_element_update(void) {
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"u1\": 5}}", "{\"$set\": {\"arr.1\": 5}}"));
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"u10\": {\"k\": 1}}}",
                      "{\"$set\": {\"arr.10\": {\"k\": 1}}}"));
}

/* {$push: {arr: {$each: ["d", "e"]}}} on a three-element array. */
static void array_append(void) {
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"u3\": \"d\", \"u4\": \"e\"}}",
                      "{\"$set\": {\"arr.3\": \"d\", \"arr.4\": \"e\"}}"));
}

/* {$set: {"arr.0.k": 1}} */
static void subdocument_inside_array(void) {
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"s0\": {\"u\": {\"k\": 1}}}}",
                      "{\"$set\": {\"arr.0.k\": 1}}"));
    /* {$unset: {"arr.2.gone": 1}} */
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"s2\": {\"d\": {\"gone\": false}}}}",
                      "{\"$unset\": {\"arr.2.gone\": \"\"}}"));
}

/* {$set: {"m.1.0": "x"}}: an array inside an array. */
static void array_inside_array(void) {
    ASSERT(diff_gives("{\"sm\": {\"a\": true, \"s1\": {\"a\": true, \"u0\": \"x\"}}}",
                      "{\"$set\": {\"m.1.0\": \"x\"}}"));
}

/* $pop/$pull shrink an array: no $set/$unset form. */
static void array_truncation_is_not_supported(void) {
    MsError e = MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"sarr\": {\"a\": true, \"l\": 2}}", &e), -ENOTSUP);
    ASSERT_EQ_INT(e.code, ENOTSUP);
    ASSERT_CONTAINS(e.message, "shrinks the array 'arr'");
    /* $pull of the middle element of [1,2,3]: resize plus the shifted element. */
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"sarr\": {\"a\": true, \"l\": 2, \"u1\": 3}}", &e), -ENOTSUP);
    ASSERT_CONTAINS(e.message, "'arr'");
    /* Nested: the message names the full path. */
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(
        diff_fails("{\"u\": {\"a\": 1}, \"sx\": {\"sarr\": {\"a\": true, \"l\": 0}}}", &e),
        -ENOTSUP);
    ASSERT_CONTAINS(e.message, "'x.arr'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"sarr\": {\"a\": true, \"s0\": {\"a\": true, \"l\": 1}}}", &e),
                  -ENOTSUP);
    ASSERT_CONTAINS(e.message, "'arr.0'");
}

/* One update touching several fields, in the order the server writes them (d, u, i, s...). */
static void combined_delta(void) {
    ASSERT(diff_gives(
        "{\"d\": {\"old\": false, \"older\": false},"
        " \"u\": {\"n\": {\"$numberLong\": \"7\"}, \"s\": \"str\"},"
        " \"i\": {\"new\": {\"n\": [1, 2]}},"
        " \"sx\": {\"i\": {\"y\": true}, \"d\": {\"z\": false}},"
        " \"stags\": {\"a\": true, \"u0\": \"red\", \"s1\": {\"u\": {\"w\": 2.5}}}}",
        "{\"$set\": {\"n\": {\"$numberLong\": \"7\"}, \"s\": \"str\", \"new\": {\"n\": [1, 2]},"
        " \"x.y\": true, \"tags.0\": \"red\", \"tags.1.w\": 2.5},"
        " \"$unset\": {\"old\": \"\", \"older\": \"\", \"x.z\": \"\"}}"));
}

/* Field names that look like delta keys are plain field names behind "s". */
static void field_names_like_delta_keys(void) {
    ASSERT(diff_gives("{\"su\": {\"u\": {\"v\": 1}}}", "{\"$set\": {\"u.v\": 1}}"));
    ASSERT(diff_gives("{\"sa\": {\"u\": {\"b\": 1}}}", "{\"$set\": {\"a.b\": 1}}"));
    ASSERT(diff_gives("{\"ss\": {\"i\": {\"t\": 1}}}", "{\"$set\": {\"s.t\": 1}}"));
    ASSERT(diff_gives("{\"sl\": {\"u\": {\"x\": 1}}}", "{\"$set\": {\"l.x\": 1}}"));
    ASSERT(diff_gives("{\"sd\": {\"d\": {\"d\": false}}}", "{\"$unset\": {\"d.d\": \"\"}}"));
    /* A field named "a" holding an array. */
    ASSERT(diff_gives("{\"sa\": {\"a\": true, \"u0\": 1}}", "{\"$set\": {\"a.0\": 1}}"));
    /* Fields named "a" and "l" set to values that look like array markers. */
    ASSERT(diff_gives("{\"u\": {\"a\": true, \"l\": 2}}", "{\"$set\": {\"a\": true, \"l\": 2}}"));
    ASSERT(diff_gives("{\"sarr\": {\"a\": true, \"s0\": {\"u\": {\"l\": 1, \"a\": true}}}}",
                      "{\"$set\": {\"arr.0.l\": 1, \"arr.0.a\": true}}"));
    ASSERT(diff_gives("{\"u\": {\"caf\xc3\xa9\": \"\xe2\x98\x95\"}}",
                      "{\"$set\": {\"caf\xc3\xa9\": \"\xe2\x98\x95\"}}"));
}

/* Every BSON type survives the translation unchanged. */
static void value_types_preserved(void) {
    ASSERT(diff_gives(
        "{\"u\": {\"d\": {\"$numberDouble\": \"1.5\"}, \"i32\": {\"$numberInt\": \"-3\"},"
        " \"i64\": {\"$numberLong\": \"9007199254740993\"},"
        " \"dec\": {\"$numberDecimal\": \"1.10\"},"
        " \"dt\": {\"$date\": {\"$numberLong\": \"1795316645000\"}},"
        " \"oid\": {\"$oid\": \"5f1e2d3c4b5a69788796a5b4\"},"
        " \"bin\": {\"$binary\": {\"base64\": \"AQID\", \"subType\": \"04\"}},"
        " \"nul\": null, \"b\": false,"
        " \"re\": {\"$regularExpression\": {\"pattern\": \"^a\", \"options\": \"i\"}},"
        " \"ts\": {\"$timestamp\": {\"t\": 1, \"i\": 2}},"
        " \"arr\": [], \"doc\": {}}}",
        "{\"$set\": {\"d\": {\"$numberDouble\": \"1.5\"}, \"i32\": {\"$numberInt\": \"-3\"},"
        " \"i64\": {\"$numberLong\": \"9007199254740993\"},"
        " \"dec\": {\"$numberDecimal\": \"1.10\"},"
        " \"dt\": {\"$date\": {\"$numberLong\": \"1795316645000\"}},"
        " \"oid\": {\"$oid\": \"5f1e2d3c4b5a69788796a5b4\"},"
        " \"bin\": {\"$binary\": {\"base64\": \"AQID\", \"subType\": \"04\"}},"
        " \"nul\": null, \"b\": false,"
        " \"re\": {\"$regularExpression\": {\"pattern\": \"^a\", \"options\": \"i\"}},"
        " \"ts\": {\"$timestamp\": {\"t\": 1, \"i\": 2}},"
        " \"arr\": [], \"doc\": {}}}"));
}

/* An update that changed nothing (e.g. $set to the same value) has an empty delta. */
static void empty_delta(void) {
    ASSERT(diff_gives("{}", "{}"));
    ASSERT(diff_gives("{\"sx\": {}}", "{}"));
}

static void unknown_keys_are_rejected(void) {
    MsError e = MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"x\": {\"a\": 1}}", &e), -ENOTSUP);
    ASSERT_CONTAINS(e.message, "unknown delta key 'x'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"u\": 5}", &e), -ENOTSUP);
    ASSERT_CONTAINS(e.message, "'u'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(diff_fails("{\"sarr\": {\"a\": true, \"z1\": 1}}", &e), -ENOTSUP);
    ASSERT_CONTAINS(e.message, "unknown array delta key 'z1'");
}

/* A delta {s<f>: {s<f>: ... {u: {z: 1}}}} nested `levels` deep, each field `len` bytes of
 * 'a' + level. */
static void build_deep_delta(bson_t *out, unsigned levels, size_t len) {
    bson_t stack[MAX_DEEP_LEVELS + 1];
    char key[LONG_FIELD_LEN + 2];
    bson_init(out);
    bson_t *parent = out;
    for (unsigned l = 0; l < levels; l++) {
        key[0] = 's';
        memset(key + 1, 'a' + (int) l, len);
        key[len + 1] = '\0';
        bson_append_document_begin(parent, key, -1, &stack[l]);
        parent = &stack[l];
    }
    bson_append_document_begin(parent, "u", -1, &stack[levels]);
    BSON_APPEND_INT32(&stack[levels], "z", 1);
    bson_append_document_end(parent, &stack[levels]);
    for (unsigned l = levels; l-- > 0;)
        bson_append_document_end(l ? &stack[l - 1] : out, &stack[l]);
}

static char *deep_path(unsigned levels, size_t len) {
    char *p = malloc(levels * (len + 1) + 2);
    if (!p)
        abort();
    size_t o = 0;
    for (unsigned l = 0; l < levels; l++) {
        memset(p + o, 'a' + (int) l, len);
        o += len;
        p[o++] = '.';
    }
    p[o++] = 'z';
    p[o] = '\0';
    return p;
}

/* Long dotted paths are either written in full or refused, never cut (a cut path would update
 * a different field). 2 x 600 bytes fits; 8 x 600 bytes is refused. */
static void long_paths_are_exact_or_refused(void) {
    bson_t delta, update;
    MsError e = MS_ERROR_INIT;
    build_deep_delta(&delta, 2, LONG_FIELD_LEN);
    int r = ms_oplog_diff_to_update(&delta, &update, &e);
    bson_destroy(&delta);
    if (r < 0)
        fprintf(stderr, "# 2 levels refused: %s\n", e.message);
    ASSERT_OK(r);
    _cleanup_free_ char *want = deep_path(2, LONG_FIELD_LEN);
    bson_iter_t it, set;
    const char *key = NULL;
    if (bson_iter_init_find(&it, &update, "$set") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &set) && bson_iter_next(&set))
        key = bson_iter_key(&set);
    bool exact = key && strcmp(key, want) == 0;
    bson_destroy(&update);
    ASSERT(exact);

    build_deep_delta(&delta, MAX_DEEP_LEVELS, LONG_FIELD_LEN);
    e = (MsError) MS_ERROR_INIT;
    r = ms_oplog_diff_to_update(&delta, &update, &e);
    bson_destroy(&delta);
    if (r == 0) {
        bson_iter_t it2, set2;
        if (bson_iter_init_find(&it2, &update, "$set") && bson_iter_recurse(&it2, &set2) &&
            bson_iter_next(&set2))
            fprintf(stderr, "# %u levels gave a %zu-byte path\n", MAX_DEEP_LEVELS,
                    strlen(bson_iter_key(&set2)));
        bson_destroy(&update);
    }
    ASSERT(r < 0);
    ASSERT_EQ_INT(e.code, ENAMETOOLONG);
    ASSERT_CONTAINS(e.message, "cannot be replayed");
}

/* --- oplog positions --- */

static void position_timestamp(void) {
    MsOplogPosition p = {0, 0};
    ASSERT_OK(ms_oplog_position_parse("123:4", &p));
    ASSERT_EQ_INT(p.t, 123);
    ASSERT_EQ_INT(p.i, 4);
    ASSERT_OK(ms_oplog_position_parse("0:0", &p));
    ASSERT_EQ_INT(p.t, 0);
    ASSERT_EQ_INT(p.i, 0);
    ASSERT_OK(ms_oplog_position_parse("4294967295:4294967295", &p));
    ASSERT_EQ_INT(p.t, UINT32_MAX);
    ASSERT_EQ_INT(p.i, UINT32_MAX);
}

static void position_iso_time(void) {
    MsOplogPosition p = {0, 0};
    ASSERT_OK(ms_oplog_position_parse("2026-11-22T03:04:05Z", &p));
    ASSERT_EQ_INT(p.t, 1795316645);
    ASSERT_EQ_INT(p.i, UINT32_MAX); /* all of that second */
    ASSERT_OK(ms_oplog_position_parse("1970-01-01T00:00:00Z", &p));
    ASSERT_EQ_INT(p.t, 0);
    ASSERT_EQ_INT(p.i, UINT32_MAX);
    ASSERT_OK(ms_oplog_position_parse("2024-02-29T23:59:59Z", &p));
    ASSERT_EQ_INT(p.t, 1709251199);
    ASSERT_OK(ms_oplog_position_parse("2106-02-07T06:28:15Z", &p)); /* the last uint32 second */
    ASSERT_EQ_INT(p.t, UINT32_MAX);
}

static void position_rejects_garbage(void) {
    static const char *bad[] = {
        "",
        "abc",
        "123",
        "123:",
        ":4",
        "123:4x",
        "123:4 ",
        "12a:4",
        "1:2:3",
        "4294967296:0",
        "1:4294967296",
        "99999999999999999999:1",
        "-1:4",
        "0x10:4",
        "2026-11-22",
        "2026-11-22T03:04",
        "2026-11-22 03:04:05Z",
        "2026-11-22T25:04:05Z",
        "2026-13-01T00:00:00Z",
        "2026-11-22T03:04:05+02:00",
        "1969-12-31T23:59:59Z",
        "yesterday",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        MsOplogPosition p = {7, 7};
        int r = ms_oplog_position_parse(bad[i], &p);
        if (r != -EINVAL)
            fprintf(stderr, "# '%s' gave %d (%u:%u), expected -EINVAL\n", bad[i], r, p.t, p.i);
        ASSERT_EQ_INT(r, -EINVAL);
        ASSERT(p.t == 7 && p.i == 7);
    }
}

/* Regression (src/engine/restore.c, ms_oplog_position_parse, the test `*end == 'Z' || *end == '\0'`):
 * only the byte after the seconds is checked, so anything may follow the 'Z'. */
static void position_trailing_garbage_after_z(void) {
    MsOplogPosition p = {7, 7};
    ASSERT_EQ_INT(ms_oplog_position_parse("2026-11-22T03:04:05Zgarbage", &p), -EINVAL);
    ASSERT_EQ_INT(ms_oplog_position_parse("2026-11-22T03:04:05Z05:00", &p), -EINVAL);
}

/* Regression (src/engine/restore.c, ms_oplog_position_parse, `(uint32_t) when`): timegm() results
 * past 2106-02-07T06:28:15Z do not fit the 32-bit oplog seconds and wrap modulo 2^32 instead of
 * being refused: "2106-02-07T06:28:16Z" becomes 0:4294967295 (1970), so "--until" such a time
 * replays nothing; "2200-01-01T00:00:00Z" becomes a time in 2063. */
static void position_time_past_uint32_wraps(void) {
    MsOplogPosition p = {7, 7};
    int r = ms_oplog_position_parse("2106-02-07T06:28:16Z", &p);
    if (r == 0)
        fprintf(stderr, "# 2106-02-07T06:28:16Z gave %u:%u\n", p.t, p.i);
    ASSERT_EQ_INT(r, -EINVAL);
    r = ms_oplog_position_parse("2200-01-01T00:00:00Z", &p);
    ASSERT_EQ_INT(r, -EINVAL);
}

/* Regression (src/engine/restore.c, ms_oplog_position_parse): strptime accepts day 30 of February
 * and timegm() normalises it, so "2026-02-30T00:00:00Z" silently means 2026-03-02T00:00:00Z. */
static void position_impossible_date_is_normalised(void) {
    MsOplogPosition p = {7, 7};
    int r = ms_oplog_position_parse("2026-02-30T00:00:00Z", &p);
    if (r == 0)
        fprintf(stderr, "# 2026-02-30T00:00:00Z gave %u (2026-03-02 is 1772409600)\n", p.t);
    ASSERT_EQ_INT(r, -EINVAL);
}

MS_TEST_MAIN(TEST_CASE(update_field), TEST_CASE(insert_field), TEST_CASE(delete_field),
             TEST_CASE(nested_subdocument), TEST_CASE(array_element_update),
             TEST_CASE(array_append), TEST_CASE(subdocument_inside_array),
             TEST_CASE(array_inside_array), TEST_CASE(array_truncation_is_not_supported),
             TEST_CASE(combined_delta), TEST_CASE(field_names_like_delta_keys),
             TEST_CASE(value_types_preserved), TEST_CASE(empty_delta),
             TEST_CASE(unknown_keys_are_rejected), TEST_CASE(long_paths_are_exact_or_refused),
             TEST_CASE(position_timestamp), TEST_CASE(position_iso_time),
             TEST_CASE(position_rejects_garbage), TEST_CASE(position_trailing_garbage_after_z),
             TEST_CASE(position_time_past_uint32_wraps),
             TEST_CASE(position_impossible_date_is_normalised))

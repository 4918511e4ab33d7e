/* engine/doc-update.c: an oplog update applied in memory as a server applies it (field order
 * included), every operator and path shape the oplog plans hand it, and what it refuses. */
#include <errno.h>
#include <string.h>

#include "engine/doc-update.h"
#include "engine/oplog-plan.h"
#include "test.h"

static bson_t *json(const char *s) {
    bson_error_t err;
    bson_t *b = bson_new_from_json((const uint8_t *) s, -1, &err);
    if (!b)
        fprintf(stderr, "bad test JSON %s: %s\n", s, err.message);
    return b;
}

static void table(void) {
    static const struct {
        const char *doc, *update, *want; /* want NULL: refused with code */
        int code;
    } cases[] = {
        {"{\"_id\":1,\"a\":1,\"b\":2}", "{\"$set\":{\"a\":5}}", "{\"_id\":1,\"a\":5,\"b\":2}", 0},
        {"{\"_id\":1,\"a\":1,\"b\":2}", "{\"$unset\":{\"a\":\"\"}}", "{\"_id\":1,\"b\":2}", 0},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":{\"c\":3,\"a\":0}}", "{\"_id\":1,\"a\":0,\"c\":3}", 0},
        {"{\"_id\":1}", "{\"$set\":{\"x.y.z\":1,\"x.y.w\":2,\"x.v\":3}}",
         "{\"_id\":1,\"x\":{\"y\":{\"z\":1,\"w\":2},\"v\":3}}", 0},
        {"{\"_id\":1,\"v\":{\"lastMod\":1,\"ts\":2}}", "{\"$set\":{\"v.lastMod\":3,\"v.n\":4}}",
         "{\"_id\":1,\"v\":{\"lastMod\":3,\"ts\":2,\"n\":4}}", 0},
        {"{\"_id\":1,\"h\":[{\"shard\":\"a\"},{\"shard\":\"b\"}]}", "{\"$set\":{\"h.1.shard\":\"c\"}}",
         "{\"_id\":1,\"h\":[{\"shard\":\"a\"},{\"shard\":\"c\"}]}", 0},
        {"{\"_id\":1,\"h\":[{\"shard\":\"a\"},{\"shard\":\"b\"}]}", "{\"$set\":{\"h\":[{\"shard\":\"x\"}]}}",
         "{\"_id\":1,\"h\":[{\"shard\":\"x\"}]}", 0},
        {"{\"_id\":1,\"h\":[1,2]}", "{\"$unset\":{\"h.0\":\"\",\"h.7.q\":\"\"}}",
         "{\"_id\":1,\"h\":[null,2]}", 0},
        {"{\"_id\":1,\"h\":[1,2]}", "{\"$set\":{\"h.5\":1}}", NULL, ENOTSUP},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":{\"a.b\":1}}", NULL, EINVAL},
        {"{\"_id\":1,\"a\":1}", "{\"$unset\":{\"a.b\":\"\",\"zz\":\"\"}}", "{\"_id\":1,\"a\":1}", 0},
        {"{\"_id\":1,\"a\":1}", "{\"$inc\":{\"a\":1}}", NULL, ENOTSUP},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":{\"a..b\":1}}", NULL, EBADMSG},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":{\".a\":1}}", NULL, EBADMSG},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":{\"a.\":1}}", NULL, EBADMSG},
        {"{\"_id\":1,\"a\":1}", "{\"$set\":5}", NULL, EBADMSG},
        {"{\"_id\":1,\"a\":{\"b\":1}}", "{\"$set\":{\"a.b\":{\"c\":1}},\"$unset\":{\"a.z\":1}}",
         "{\"_id\":1,\"a\":{\"b\":{\"c\":1}}}", 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        bson_t *doc = json(cases[i].doc), *update = json(cases[i].update);
        ASSERT(doc && update);
        bson_t got;
        MsError e = MS_ERROR_INIT;
        int r = ms_doc_update_apply(doc, update, &got, &e);
        if (!cases[i].want) {
            if (r != -cases[i].code)
                fprintf(stderr, "case %zu: %d (%s)\n", i, r, e.message);
            ASSERT_EQ_INT(r, -cases[i].code);
            ASSERT(e.message[0]);
            ASSERT(bson_empty(&got));
        } else {
            if (r < 0)
                fprintf(stderr, "case %zu: %s\n", i, e.message);
            ASSERT_OK(r);
            bson_t *want = json(cases[i].want);
            ASSERT(want);
            if (!bson_equal(&got, want)) {
                char *s = bson_as_relaxed_extended_json(&got, NULL);
                fprintf(stderr, "case %zu: got %s\n", i, s);
                bson_free(s);
            }
            ASSERT(bson_equal(&got, want));
            bson_destroy(want);
        }
        bson_destroy(&got);
        bson_destroy(doc);
        bson_destroy(update);
    }
}

/* A "$v: 2" delta as MongoDB 5.0+ logs it, through the plan's translation, then applied. */
static void delta_through_the_plan(void) {
    bson_t *diff = json("{\"u\":{\"primary\":\"shard02\"},\"d\":{\"old\":false},"
                        "\"i\":{\"added\":1},\"sversion\":{\"u\":{\"lastMod\":2}}}");
    bson_t *doc = json("{\"_id\":\"shop\",\"primary\":\"shard01\",\"old\":1,"
                       "\"version\":{\"uuid\":1,\"lastMod\":1}}");
    bson_t update;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_oplog_diff_to_update(diff, &update, &e));
    bson_t got;
    ASSERT_OK(ms_doc_update_apply(doc, &update, &got, &e));
    bson_t *want = json("{\"_id\":\"shop\",\"primary\":\"shard02\","
                        "\"version\":{\"uuid\":1,\"lastMod\":2},\"added\":1}");
    ASSERT(bson_equal(&got, want));
    bson_destroy(want);
    bson_destroy(&got);
    bson_destroy(&update);
    bson_destroy(doc);
    bson_destroy(diff);
}

MS_TEST_MAIN(TEST_CASE(table), TEST_CASE(delta_through_the_plan))

/* Tests for the restore's one namespace mapping (nsmap.c) and the oplog replay plans built on it
 * (oplog-plan.c): a table of every op kind against every filter shape with the exact set of
 * target namespaces each may touch, and a property test over random oplogs, filters and renames
 * whose every touched namespace must be the image of a selected source namespace. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>

#include "common/macro.h"
#include "engine/nsmap.h"
#include "engine/oplog-plan.h"
#include "test.h"

/* The tables below leave unused pattern slots and the expected error out: zero is what they
 * mean, and spelling every slot would bury the cases. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* ---- helpers ---- */

typedef struct FilterSpec {
    const char *name;
    const char *include[3];
    const char *exclude[3];
    const char *from[3];
    const char *to[3];
} FilterSpec;

static void filter_build(const FilterSpec *s, MsNsFilter *f) {
    *f = (MsNsFilter){0};
    for (size_t i = 0; i < 3 && s->include[i]; i++)
        ms_ns_filter_add(&f->include, &f->n_include, s->include[i]);
    for (size_t i = 0; i < 3 && s->exclude[i]; i++)
        ms_ns_filter_add(&f->exclude, &f->n_exclude, s->exclude[i]);
    for (size_t i = 0; i < 3 && s->from[i]; i++) {
        size_t n = f->n_rename;
        ms_ns_filter_add(&f->rename_from, &n, s->from[i]);
        ms_ns_filter_add(&f->rename_to, &f->n_rename, s->to[i]);
    }
}

static int map_of(const FilterSpec *s, const char *ns, char **ret) {
    MsNsFilter f;
    filter_build(s, &f);
    *ret = NULL;
    int v = ms_ns_map(&f, ns, ret);
    ms_ns_filter_clear(&f);
    return v;
}

/* Sorted, comma-separated, without repeats: the set of namespaces touched. */
typedef struct Touched {
    char *items[64];
    size_t n;
} Touched;

static void touched_add(Touched *t, const char *ns) {
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->items[i], ns) == 0)
            return;
    if (t->n < ELEMENTSOF(t->items))
        t->items[t->n++] = strdup(ns);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static void touched_format(Touched *t, char *buf, size_t size) {
    qsort(t->items, t->n, sizeof(char *), cmp_str);
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < t->n && o < size; i++)
        o += (size_t) snprintf(buf + o, size - o, "%s%s", i ? "," : "", t->items[i]);
}

static void touched_clear(Touched *t) {
    for (size_t i = 0; i < t->n; i++)
        free(t->items[i]);
    t->n = 0;
}

static bson_t *json(const char *text) {
    bson_error_t berr;
    bson_t *b = bson_new_from_json((const uint8_t *) text, -1, &berr);
    if (!b)
        fprintf(stderr, "# bad JSON in the test: %s: %s\n", berr.message, text);
    return b;
}

/* Plan the entries (JSON, NULL-terminated) under the filter with the archive holding
 * shop.c1, shop.c2 and other.o1. Writes the touched set and the stats. */
static int plan_all(const FilterSpec *spec, const char *const *entries, char *touched,
                    size_t size, MsOplogReplayStats *ret_stats, MsError *e) {
    MsNsFilter f;
    filter_build(spec, &f);
    MsOplogReplayer *r = NULL;
    int k = ms_oplog_replayer_new(&f, &r, e);
    static const char *const known[] = {"shop.c1", "shop.c2", "other.o1"};
    for (size_t i = 0; k == 0 && i < ELEMENTSOF(known); i++)
        k = ms_oplog_replayer_know(r, known[i]);
    Touched t = {0};
    for (size_t i = 0; k == 0 && entries[i]; i++) {
        bson_t *entry = json(entries[i]);
        if (!entry) {
            k = -EINVAL;
            break;
        }
        MsOplogPlan plan = {0};
        k = ms_oplog_replayer_plan(r, entry, &plan, e);
        for (size_t a = 0; k == 0 && a < plan.n_actions; a++)
            for (size_t j = 0; j < MS_OPLOG_ACTION_MAX_TOUCHED; j++)
                if (plan.actions[a].touched[j])
                    touched_add(&t, plan.actions[a].touched[j]);
        ms_oplog_plan_clear(&plan);
        bson_destroy(entry);
    }
    if (r) {
        ms_oplog_replayer_finish(r);
        *ret_stats = *ms_oplog_replayer_stats(r);
    }
    touched_format(&t, touched, size);
    touched_clear(&t);
    ms_oplog_replayer_free(r);
    ms_ns_filter_clear(&f);
    return k;
}

/* ---- the mapping ---- */

static void map_valid_namespaces(void) {
    ASSERT(ms_ns_is_valid("shop.c1"));
    ASSERT(ms_ns_is_valid("shop.a.b"));
    ASSERT(!ms_ns_is_valid("shop"));
    ASSERT(!ms_ns_is_valid(".c"));
    ASSERT(!ms_ns_is_valid("shop."));
    ASSERT(!ms_ns_is_valid("shop.$cmd"));
    ASSERT(!ms_ns_is_valid("sh op.c"));
    ASSERT(!ms_ns_is_valid("sh/op.c"));
    ASSERT(!ms_ns_is_valid("sh\"op.c"));
    ASSERT(!ms_ns_is_valid("sh$op.c"));
    ASSERT(!ms_ns_is_valid("sh\001op.c"));
    char long_db[80];
    memset(long_db, 'd', 64);
    strcpy(long_db + 64, ".c");
    ASSERT(!ms_ns_is_valid(long_db));
    long_db[63] = '.';
    ASSERT(ms_ns_is_valid(long_db));
}

static void map_guard_needs_literal_database(void) {
    static const struct {
        FilterSpec spec;
        const char *ns;
        int verdict;
        const char *target;
    } cases[] = {
        {{"none"}, "shop.c1", MS_NS_MAP_MAPPED, "shop.c1"},
        {{"none"}, "admin.foo", MS_NS_MAP_PROTECTED, NULL},
        {{"none"}, "local.oplog.rs", MS_NS_MAP_PROTECTED, NULL},
        {{"none"}, "config.chunks", MS_NS_MAP_PROTECTED, NULL},
        {{"none"}, "shop.system.profile", MS_NS_MAP_PROTECTED, NULL},
        {{"none"}, "shop.system.js", MS_NS_MAP_MAPPED, "shop.system.js"},
        {{"none"}, "shop.system.buckets.w", MS_NS_MAP_MAPPED, "shop.system.buckets.w"},
        {{"any", {"*.*"}}, "admin.foo", MS_NS_MAP_PROTECTED, NULL},
        {{"adm*", {"adm*.*"}}, "admin.foo", MS_NS_MAP_PROTECTED, NULL},
        {{"admin", {"admin.*"}}, "admin.foo", MS_NS_MAP_MAPPED, "admin.foo"},
        {{"admin.foo", {"admin.foo"}}, "admin.foo", MS_NS_MAP_MAPPED, "admin.foo"},
        {{"admin.* users", {"admin.*"}}, "admin.system.users", MS_NS_MAP_PROTECTED, NULL},
        {{"renamed system", {0}, {0}, {"shop.*"}, {"copy.*"}}, "shop.system.profile",
         MS_NS_MAP_PROTECTED, NULL},
        {{"admin.users", {"admin.system.users"}}, "admin.system.users", MS_NS_MAP_MAPPED,
         "admin.system.users"},
        {{"to admin", {0}, {0}, {"shop.*"}, {"admin.*"}}, "shop.c1", MS_NS_MAP_MAPPED,
         "admin.c1"},
        {{"to admin by star", {0}, {0}, {"*.c1"}, {"*.c1"}}, "admin.c1", MS_NS_MAP_PROTECTED,
         NULL},
        {{"star to admin", {0}, {0}, {"s*.c1"}, {"admin.*"}}, "shop.c1", MS_NS_MAP_MAPPED,
         "admin.hop"},
        {{"into local", {0}, {0}, {"shop.c1"}, {"local.c1"}}, "shop.c1", MS_NS_MAP_MAPPED,
         "local.c1"},
        {{"from local by star", {0}, {0}, {"*.c1"}, {"copy.*"}}, "local.c1", MS_NS_MAP_PROTECTED,
         NULL},
        {{"from admin", {0}, {0}, {"admin.*"}, {"copy.*"}}, "admin.foo", MS_NS_MAP_MAPPED,
         "copy.foo"},
        {{"into system", {0}, {0}, {"shop.*"}, {"shop.system.*"}}, "shop.c1",
         MS_NS_MAP_PROTECTED, NULL},
        {{"to bad", {0}, {0}, {"shop.*"}, {"sh op.*"}}, "shop.c1", MS_NS_MAP_INVALID, NULL},
        {{"excl", {0}, {"shop.c1"}}, "shop.c1", MS_NS_MAP_NOT_SELECTED, NULL},
        {{"incl", {"shop.c1"}}, "shop.c2", MS_NS_MAP_NOT_SELECTED, NULL},
        {{"buckets renamed", {0}, {0}, {"shop.*"}, {"copy.*"}}, "shop.system.buckets.w",
         MS_NS_MAP_MAPPED, "copy.system.buckets.w"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *target = NULL;
        int v = map_of(&cases[i].spec, cases[i].ns, &target);
        if (v != cases[i].verdict || (cases[i].target && (!target || strcmp(target, cases[i].target))) ) {
            fprintf(stderr, "# case %zu (%s) %s: verdict %s target %s, expected %s %s\n", i,
                    cases[i].spec.name, cases[i].ns, ms_ns_map_verdict_to_string(v),
                    target ? target : "-", ms_ns_map_verdict_to_string(cases[i].verdict),
                    cases[i].target ? cases[i].target : "-");
            ms_test_failures++;
        }
    }
}

/* ---- the table: every op kind x every filter shape ---- */

#define LSID "\"lsid\": {\"id\": {\"$binary\": {\"base64\": \"AAAAAAAAAAAAAAAAAAAAAA==\", \"subType\": \"04\"}}}, \"txnNumber\": {\"$numberLong\": \"7\"}"

static const FilterSpec FILTERS[] = {
    {"no filter"},
    {"include shop.c1", {"shop.c1"}},
    {"exclude shop.c2", {0}, {"shop.c2"}},
    {"rename shop.* to copy.*", {0}, {0}, {"shop.*"}, {"copy.*"}},
    {"include shop.* and rename to copy.*", {"shop.*"}, {0}, {"shop.*"}, {"copy.*"}},
};

typedef struct OpCase {
    const char *name;
    const char *entries[4];
    const char *expected[ELEMENTSOF(FILTERS)]; /* touched, per filter */
    int error;                                 /* expected failure (negative errno), or 0 */
} OpCase;

static const OpCase OPS[] = {
    {"insert",
     {"{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"insert without _id",
     {"{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"a\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"update $set",
     {"{\"op\": \"u\", \"ns\": \"shop.c1\", \"o\": {\"$v\": 1, \"$set\": {\"a\": 1}}, \"o2\": {\"_id\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"update $v:2",
     {"{\"op\": \"u\", \"ns\": \"shop.c1\", \"o\": {\"$v\": 2, \"diff\": {\"u\": {\"a\": 1}}}, \"o2\": {\"_id\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"replace",
     {"{\"op\": \"u\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 1, \"a\": 2}, \"o2\": {\"_id\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"delete",
     {"{\"op\": \"d\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 1}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"insert elsewhere",
     {"{\"op\": \"i\", \"ns\": \"other.o1\", \"o\": {\"_id\": 1}}"},
     {"other.o1", "", "other.o1", "other.o1", ""}},
    {"create",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"create\": \"c3\", \"idIndex\": {\"v\": 2, \"key\": {\"_id\": 1}, \"name\": \"_id_\", \"ns\": \"shop.c3\"}}}"},
     {"shop.c3", "", "shop.c3", "copy.c3", "copy.c3"}},
    {"create view",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"create\": \"v1\", \"viewOn\": \"c1\", \"pipeline\": []}}"},
     {"shop.v1", "", "shop.v1", "copy.v1", "copy.v1"}},
    {"create view on an excluded collection",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"create\": \"v2\", \"viewOn\": \"c2\", \"pipeline\": []}}"},
     {"shop.v2", "", "", "copy.v2", "copy.v2"}},
    {"drop",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"drop\": \"c2\"}}"},
     {"shop.c2", "", "", "copy.c2", "copy.c2"}},
    {"dropDatabase",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"dropDatabase\": 1}}"},
     {"shop.c1,shop.c2", "shop.c1", "shop.c1", "copy.c1,copy.c2", "copy.c1,copy.c2"}},
    {"dropDatabase elsewhere",
     {"{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"dropDatabase\": 1}}"},
     {"other.o1", "", "other.o1", "other.o1", ""}},
    {"dropDatabase of what the oplog created",
     {"{\"op\": \"i\", \"ns\": \"shop.c9\", \"o\": {\"_id\": 1}}",
      "{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"dropDatabase\": 1}}"},
     {"shop.c1,shop.c2,shop.c9", "shop.c1", "shop.c1,shop.c9", "copy.c1,copy.c2,copy.c9",
      "copy.c1,copy.c2,copy.c9"}},
    {"renameCollection inside",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"renameCollection\": \"shop.c1\", \"to\": \"shop.c4\", \"stayTemp\": false}}"},
     {"shop.c1,shop.c4", "shop.c1", "shop.c1,shop.c4", "copy.c1,copy.c4", "copy.c1,copy.c4"}},
    {"renameCollection from outside",
     {"{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"renameCollection\": \"other.o1\", \"to\": \"shop.c5\", \"dropTarget\": true}}"},
     {"other.o1,shop.c5", "", "other.o1,shop.c5", "copy.c5,other.o1", ""}},
    {"renameCollection out of",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"renameCollection\": \"shop.c2\", \"to\": \"other.o2\"}}"},
     {"other.o2,shop.c2", "", "", "copy.c2,other.o2", "copy.c2"}},
    {"createIndexes",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"createIndexes\": \"c1\", \"v\": 2, \"key\": {\"a\": 1}, \"name\": \"a_1\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"dropIndexes",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"dropIndexes\": \"c1\", \"index\": \"a_1\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"deleteIndexes",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"deleteIndexes\": \"c1\", \"index\": \"a_1\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"collMod",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"collMod\": \"c1\", \"validationLevel\": \"off\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"convertToCapped",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"convertToCapped\": \"c1\", \"size\": 100000}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"emptycapped",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"emptycapped\": \"c1\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"index build",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"startIndexBuild\": \"c1\", \"indexBuildUUID\": {\"$binary\": {\"base64\": \"AAAAAAAAAAAAAAAAAAAAAA==\", \"subType\": \"04\"}}, \"indexes\": [{\"v\": 2, \"key\": {\"b\": 1}, \"name\": \"b_1\"}]}}",
      "{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"commitIndexBuild\": \"c1\", \"indexBuildUUID\": {\"$binary\": {\"base64\": \"AAAAAAAAAAAAAAAAAAAAAA==\", \"subType\": \"04\"}}, \"indexes\": [{\"v\": 2, \"key\": {\"b\": 1}, \"name\": \"b_1\"}]}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"aborted index build",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"startIndexBuild\": \"c1\", \"indexes\": []}}",
      "{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"abortIndexBuild\": \"c1\", \"indexes\": []}}"},
     {"", "", "", "", ""}},
    {"applyOps",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", \"o\": {\"applyOps\": [{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 1}}, {\"op\": \"i\", \"ns\": \"other.o1\", \"o\": {\"_id\": 1}}]}}"},
     {"other.o1,shop.c1", "shop.c1", "other.o1,shop.c1", "copy.c1,other.o1", "copy.c1"}},
    {"applyOps with a command inside",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", \"o\": {\"applyOps\": [{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"dropDatabase\": 1}}]}}"},
     {"other.o1", "", "other.o1", "other.o1", ""}},
    {"transaction in two parts",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"applyOps\": [{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 5}}], \"partialTxn\": true}}",
      "{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"applyOps\": [{\"op\": \"i\", \"ns\": \"other.o1\", \"o\": {\"_id\": 5}}]}}"},
     {"other.o1,shop.c1", "shop.c1", "other.o1,shop.c1", "copy.c1,other.o1", "copy.c1"}},
    {"prepared transaction committed",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"applyOps\": [{\"op\": \"d\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 5}}], \"prepare\": true}}",
      "{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"commitTransaction\": 1, \"commitTimestamp\": {\"$timestamp\": {\"t\": 5, \"i\": 1}}}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"prepared transaction aborted",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"applyOps\": [{\"op\": \"d\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 5}}], \"prepare\": true}}",
      "{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"abortTransaction\": 1}}"},
     {"", "", "", "", ""}},
    {"transaction never committed",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", " LSID ", \"o\": {\"applyOps\": [{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 6}}], \"partialTxn\": true}}"},
     {"", "", "", "", ""}},
    {"insert into admin",
     {"{\"op\": \"i\", \"ns\": \"admin.foo\", \"o\": {\"_id\": 1}}"},
     {"", "", "", "", ""}},
    {"drop in admin",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", \"o\": {\"drop\": \"foo\"}}"},
     {"", "", "", "", ""}},
    {"dropDatabase admin",
     {"{\"op\": \"c\", \"ns\": \"admin.$cmd\", \"o\": {\"dropDatabase\": 1}}"},
     {"", "", "", "", ""}},
    {"create in config",
     {"{\"op\": \"c\", \"ns\": \"config.$cmd\", \"o\": {\"create\": \"x\"}}"},
     {"", "", "", "", ""}},
    {"insert into local",
     {"{\"op\": \"i\", \"ns\": \"local.foo\", \"o\": {\"_id\": 1}}"},
     {"", "", "", "", ""}},
    {"renameCollection into admin",
     {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"renameCollection\": \"shop.c1\", \"to\": \"admin.c1\"}}"},
     {"shop.c1", "shop.c1", "shop.c1", "copy.c1", "copy.c1"}},
    {"insert into a system collection",
     {"{\"op\": \"i\", \"ns\": \"shop.system.profile\", \"o\": {\"_id\": 1}}"},
     {"", "", "", "", ""}},
    {"insert into $cmd",
     {"{\"op\": \"i\", \"ns\": \"shop.$cmd\", \"o\": {\"_id\": 1}}"},
     {"", "", "", "", ""}},
    {"no-op",
     {"{\"op\": \"n\", \"ns\": \"\", \"o\": {\"msg\": \"periodic noop\"}}"},
     {"", "", "", "", ""}},
};

static void every_op_kind_under_every_filter(void) {
    for (size_t c = 0; c < ELEMENTSOF(OPS); c++)
        for (size_t f = 0; f < ELEMENTSOF(FILTERS); f++) {
            char touched[1024];
            MsOplogReplayStats st = {0};
            MsError e = MS_ERROR_INIT;
            int r = plan_all(&FILTERS[f], OPS[c].entries, touched, sizeof(touched), &st, &e);
            if (r != OPS[c].error || (r == 0 && strcmp(touched, OPS[c].expected[f]) != 0)) {
                fprintf(stderr, "# %s under '%s': r=%d (%s) touched '%s', expected '%s'\n",
                        OPS[c].name, FILTERS[f].name, r, e.message, touched, OPS[c].expected[f]);
                ms_test_failures++;
            }
        }
}

/* The first report's cases: dropDatabase under a rename, and an unrelated database's command
 * under an include, never reach the source's names. */
static void reported_cases_stay_inside(void) {
    const char *drop_shop[] = {"{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"dropDatabase\": 1}}",
                               NULL};
    const char *drop_other[] = {
        "{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"dropDatabase\": 1}}", NULL};
    char touched[256];
    MsOplogReplayStats st;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(plan_all(&FILTERS[3], drop_shop, touched, sizeof(touched), &st, &e));
    ASSERT_STREQ(touched, "copy.c1,copy.c2");
    ASSERT_OK(plan_all(&FILTERS[1], drop_other, touched, sizeof(touched), &st, &e));
    ASSERT_STREQ(touched, "");
    ASSERT_EQ_INT(st.not_selected, 1);
}

static void unplaceable_entries_are_counted(void) {
    const char *entries[] = {
        "{\"op\": \"i\", \"ns\": \"admin.foo\", \"o\": {\"_id\": 1}}",
        "{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"renameCollection\": \"other.o1\", \"to\": \"shop.c5\"}}",
        "{\"op\": \"i\", \"ns\": \"shop.c1\", \"o\": {\"_id\": 1}}",
        "{\"op\": \"i\", \"ns\": \"other.o1\", \"o\": {\"_id\": 1}}",
        NULL};
    char touched[256];
    MsOplogReplayStats st;
    MsError e = MS_ERROR_INIT;
    /* include shop.* + rename: admin.foo and other.o1 are simply not selected; the rename
     * brings data from outside into a mapped name. */
    ASSERT_OK(plan_all(&FILTERS[4], entries, touched, sizeof(touched), &st, &e));
    ASSERT_STREQ(touched, "copy.c1");
    ASSERT_EQ_INT(st.applied, 1);
    ASSERT_EQ_INT(st.unplaceable, 1);
    ASSERT_EQ_INT(st.not_selected, 2);
    ASSERT_CONTAINS(st.first_unplaceable, "other.o1");
    /* no filter: admin.foo is selected but protected */
    ASSERT_OK(plan_all(&FILTERS[0], entries, touched, sizeof(touched), &st, &e));
    ASSERT_STREQ(touched, "other.o1,shop.c1,shop.c5");
    ASSERT_EQ_INT(st.unplaceable, 1);
    ASSERT_CONTAINS(st.first_unplaceable, "admin.foo");
}

static void unknown_commands_are_refused_where_selected(void) {
    const char *entries[] = {
        "{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"someFutureCommand\": \"c1\"}}", NULL};
    char touched[256];
    MsOplogReplayStats st;
    MsError e = MS_ERROR_INIT;
    ASSERT_EQ_INT(plan_all(&FILTERS[0], entries, touched, sizeof(touched), &st, &e), -ENOTSUP);
    ASSERT_CONTAINS(e.message, "someFutureCommand");
    const char *elsewhere[] = {
        "{\"op\": \"c\", \"ns\": \"other.$cmd\", \"o\": {\"someFutureCommand\": \"c1\"}}", NULL};
    MsError e2 = MS_ERROR_INIT;
    ASSERT_OK(plan_all(&FILTERS[4], elsewhere, touched, sizeof(touched), &st, &e2));
    ASSERT_EQ_INT(st.not_selected, 1);
}

static void renamed_commands_carry_target_names(void) {
    MsNsFilter f;
    filter_build(&FILTERS[3], &f);
    MsOplogReplayer *r = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_oplog_replayer_new(&f, &r, &e));
    bson_t *entry = json("{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"create\": \"v1\", "
                         "\"viewOn\": \"c1\", \"pipeline\": [], \"idIndex\": {\"ns\": \"shop.v1\", "
                         "\"name\": \"_id_\"}}}");
    MsOplogPlan plan = {0};
    ASSERT_OK(ms_oplog_replayer_plan(r, entry, &plan, &e));
    ASSERT_EQ_INT(plan.n_actions, 1);
    ASSERT_STREQ(plan.actions[0].db, "copy");
    char *text = bson_as_relaxed_extended_json(plan.actions[0].doc, NULL);
    ASSERT_CONTAINS(text, "\"create\" : \"v1\"");
    ASSERT_CONTAINS(text, "\"viewOn\" : \"c1\"");
    ASSERT(!strstr(text, "shop"));
    bson_free(text);
    ms_oplog_plan_clear(&plan);
    bson_destroy(entry);

    entry = json("{\"op\": \"c\", \"ns\": \"shop.$cmd\", \"o\": {\"renameCollection\": "
                 "\"shop.c1\", \"to\": \"shop.c4\", \"dropTarget\": {\"$binary\": {\"base64\": "
                 "\"AAAAAAAAAAAAAAAAAAAAAA==\", \"subType\": \"04\"}}}}");
    ASSERT_OK(ms_oplog_replayer_plan(r, entry, &plan, &e));
    ASSERT_EQ_INT(plan.n_actions, 1);
    text = bson_as_relaxed_extended_json(plan.actions[0].doc, NULL);
    ASSERT_CONTAINS(text, "\"renameCollection\" : \"copy.c1\"");
    ASSERT_CONTAINS(text, "\"to\" : \"copy.c4\"");
    ASSERT_CONTAINS(text, "\"dropTarget\" : true");
    bson_free(text);
    ms_oplog_plan_clear(&plan);
    bson_destroy(entry);
    ms_oplog_replayer_free(r);
    ms_ns_filter_clear(&f);
}

/* ---- the property: random oplogs, random filters ---- */

#define PROPERTY_RUNS 3000u
#define PROPERTY_ENTRIES 24u

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t) ((rng_state >> 33) % n);
}

static const char *const DBS[] = {"shop", "other", "admin", "local", "config", "copy", "x"};
static const char *const COLLS[] = {"c1", "c2", "o1", "system.profile", "system.js",
                                    "system.buckets.c1", "a.b"};
static const char *const PATTERNS[] = {"shop.*", "*.c1",   "other.o1", "*.*",         "admin.*",
                                       "s*.*",   "copy.*", "x.c2",     "*.system.js", "sh*p.c*",
                                       "shop.system.profile"};
static const char *const TO_PATTERNS[] = {"copy.*", "*.renamed", "admin.*", "x.*", "*.*"};

static void random_ns(char *buf, size_t size) {
    snprintf(buf, size, "%s.%s", DBS[rnd(ELEMENTSOF(DBS))], COLLS[rnd(ELEMENTSOF(COLLS))]);
}

static void random_crud(bson_t *b, unsigned depth);

/* One random entry, appended to b as a document. */
static void random_entry(bson_t *b, unsigned depth) {
    char ns[128], ns2[128];
    random_ns(ns, sizeof(ns));
    random_ns(ns2, sizeof(ns2));
    char cmd_ns[96];
    snprintf(cmd_ns, sizeof(cmd_ns), "%s.$cmd", DBS[rnd(ELEMENTSOF(DBS))]);
    const char *coll = COLLS[rnd(ELEMENTSOF(COLLS))];
    BSON_APPEND_TIMESTAMP(b, "ts", 100, 1);
    switch (rnd(depth < 2 ? 12 : 10)) {
    case 0:
    case 1:
    case 2:
        random_crud(b, depth);
        return;
    case 3:
        BSON_APPEND_UTF8(b, "op", "c");
        BSON_APPEND_UTF8(b, "ns", cmd_ns);
        {
            static const char *const cmds[] = {"create", "drop", "collMod", "createIndexes",
                                               "dropIndexes", "convertToCapped", "emptycapped",
                                               "commitIndexBuild"};
            bson_t o;
            BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
            const char *cmd = cmds[rnd(ELEMENTSOF(cmds))];
            BSON_APPEND_UTF8(&o, cmd, coll);
            if (strcmp(cmd, "create") == 0 && rnd(2)) {
                const char *view_on = COLLS[rnd(ELEMENTSOF(COLLS))]; /* the macro reads it twice */
                BSON_APPEND_UTF8(&o, "viewOn", view_on);
            }
            if (strcmp(cmd, "commitIndexBuild") == 0) {
                bson_t arr, spec;
                BSON_APPEND_ARRAY_BEGIN(&o, "indexes", &arr);
                BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &spec);
                BSON_APPEND_UTF8(&spec, "name", "x_1");
                bson_append_document_end(&arr, &spec);
                bson_append_array_end(&o, &arr);
            }
            bson_append_document_end(b, &o);
        }
        return;
    case 4:
    case 5:
        BSON_APPEND_UTF8(b, "op", "c");
        BSON_APPEND_UTF8(b, "ns", cmd_ns);
        {
            bson_t o;
            BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
            BSON_APPEND_UTF8(&o, "renameCollection", ns);
            BSON_APPEND_UTF8(&o, "to", ns2);
            BSON_APPEND_BOOL(&o, "dropTarget", rnd(2));
            bson_append_document_end(b, &o);
        }
        return;
    case 6:
    case 7:
        BSON_APPEND_UTF8(b, "op", "c");
        BSON_APPEND_UTF8(b, "ns", cmd_ns);
        {
            bson_t o;
            BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
            BSON_APPEND_INT32(&o, "dropDatabase", 1);
            bson_append_document_end(b, &o);
        }
        return;
    case 8:
    case 9:
        /* a transaction's end: session 0 or 1 */
        BSON_APPEND_UTF8(b, "op", "c");
        BSON_APPEND_UTF8(b, "ns", "admin.$cmd");
        {
            bson_t lsid, o;
            BSON_APPEND_DOCUMENT_BEGIN(b, "lsid", &lsid);
            BSON_APPEND_INT32(&lsid, "id", (int32_t) rnd(2));
            bson_append_document_end(b, &lsid);
            BSON_APPEND_INT64(b, "txnNumber", 1);
            BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
            const char *end = rnd(2) ? "commitTransaction" : "abortTransaction";
            BSON_APPEND_INT32(&o, end, 1);
            bson_append_document_end(b, &o);
        }
        return;
    default:
        /* applyOps, plain or as a transaction's part */
        BSON_APPEND_UTF8(b, "op", "c");
        BSON_APPEND_UTF8(b, "ns", "admin.$cmd");
        {
            unsigned kind = rnd(3); /* plain, partial, prepare */
            if (kind) {
                bson_t lsid;
                BSON_APPEND_DOCUMENT_BEGIN(b, "lsid", &lsid);
                BSON_APPEND_INT32(&lsid, "id", (int32_t) rnd(2));
                bson_append_document_end(b, &lsid);
                BSON_APPEND_INT64(b, "txnNumber", 1);
            }
            bson_t o, arr;
            BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
            BSON_APPEND_ARRAY_BEGIN(&o, "applyOps", &arr);
            unsigned n = 1 + rnd(3);
            for (unsigned i = 0; i < n; i++) {
                char key[16];
                const char *k;
                bson_uint32_to_string(i, &k, key, sizeof(key));
                bson_t inner;
                BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &inner);
                random_entry(&inner, depth + 1);
                bson_append_document_end(&arr, &inner);
            }
            bson_append_array_end(&o, &arr);
            if (kind == 1)
                BSON_APPEND_BOOL(&o, "partialTxn", true);
            if (kind == 2)
                BSON_APPEND_BOOL(&o, "prepare", true);
            bson_append_document_end(b, &o);
        }
        return;
    }
}

static void random_crud(bson_t *b, unsigned depth) {
    static const char *const ops[] = {"i", "u", "d"};
    char ns[128];
    random_ns(ns, sizeof(ns));
    const char *op = ops[rnd(3)];
    BSON_APPEND_UTF8(b, "op", op);
    BSON_APPEND_UTF8(b, "ns", ns);
    bson_t o;
    BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
    if (strcmp(op, "u") == 0) {
        bson_t set;
        BSON_APPEND_DOCUMENT_BEGIN(&o, "$set", &set);
        BSON_APPEND_INT32(&set, "a", 1);
        bson_append_document_end(&o, &set);
    } else
        BSON_APPEND_INT32(&o, "_id", (int32_t) rnd(100));
    bson_append_document_end(b, &o);
    if (strcmp(op, "u") == 0) {
        bson_t o2;
        BSON_APPEND_DOCUMENT_BEGIN(b, "o2", &o2);
        BSON_APPEND_INT32(&o2, "_id", 1);
        bson_append_document_end(b, &o2);
    }
    (void) depth;
}

/* Is target the image of some source namespace the filter selects, under the rules stated in
 * nsmap.h, computed here from the filter's primitives rather than through ms_ns_map()? */
static bool literal_db(const char *pattern, const char *db) {
    const char *dot = strchr(pattern, '.');
    return dot && !memchr(pattern, '*', (size_t) (dot - pattern)) &&
           strlen(db) == (size_t) (dot - pattern) && strncmp(pattern, db, strlen(db)) == 0;
}

static bool is_sysdb(const char *ns) {
    return strncmp(ns, "admin.", 6) == 0 || strncmp(ns, "local.", 6) == 0 ||
           strncmp(ns, "config.", 7) == 0;
}

static bool is_image(const MsNsFilter *f, const char *target) {
    for (size_t d = 0; d < ELEMENTSOF(DBS); d++)
        for (size_t c = 0; c < ELEMENTSOF(COLLS); c++) {
            char src[128];
            snprintf(src, sizeof(src), "%s.%s", DBS[d], COLLS[c]);
            const char *logical_coll = COLLS[c];
            bool buckets = strncmp(logical_coll, "system.buckets.", 15) == 0;
            if (buckets) {
                logical_coll += 15;
                snprintf(src, sizeof(src), "%s.%s", DBS[d], logical_coll);
            }
            if (!ms_ns_filter_selects(f, src))
                continue;
            ssize_t which = -1;
            _cleanup_free_ char *img = ms_ns_filter_rename_which(f, src, &which);
            char full[160];
            if (buckets) {
                const char *dot = strchr(img, '.');
                snprintf(full, sizeof(full), "%.*s.system.buckets.%s", (int) (dot - img), img,
                         dot + 1);
            } else
                snprintf(full, sizeof(full), "%s", img);
            if (strcmp(full, target) != 0)
                continue;
            /* the guard, from the patterns */
            bool explicit_src = false;
            for (size_t i = 0; i < f->n_include; i++)
                explicit_src |= literal_db(f->include[i], DBS[d]) && ms_ns_match(f->include[i], src);
            if (which >= 0)
                explicit_src |= literal_db(f->rename_from[which], DBS[d]);
            if (is_sysdb(src) && !explicit_src)
                continue;
            if (strncmp(logical_coll, "system.", 7) == 0 && strcmp(logical_coll, "system.js") != 0) {
                bool exact = which >= 0 && strcmp(f->rename_from[which], src) == 0;
                for (size_t i = 0; i < f->n_include; i++)
                    exact |= strcmp(f->include[i], src) == 0;
                if (!exact)
                    continue;
            }
            if (is_sysdb(img)) {
                const char *dot = strchr(img, '.');
                char tdb[64];
                snprintf(tdb, sizeof(tdb), "%.*s", (int) (dot - img), img);
                if (which >= 0 ? !literal_db(f->rename_to[which], tdb) : !explicit_src)
                    continue;
            }
            return true;
        }
    return false;
}

static void random_oplogs_stay_inside_the_mapping(void) {
    rng_state = 20261206;
    uint64_t touched_total = 0, entries_total = 0;
    for (unsigned run = 0; run < PROPERTY_RUNS; run++) {
        MsNsFilter f = {0};
        for (unsigned i = rnd(3); i > 0; i--)
            ms_ns_filter_add(&f.include, &f.n_include, PATTERNS[rnd(ELEMENTSOF(PATTERNS))]);
        for (unsigned i = rnd(2); i > 0; i--)
            ms_ns_filter_add(&f.exclude, &f.n_exclude, PATTERNS[rnd(ELEMENTSOF(PATTERNS))]);
        for (unsigned i = rnd(3); i > 0; i--) {
            /* from and to with the same number of '*' */
            const char *from = PATTERNS[rnd(ELEMENTSOF(PATTERNS))];
            const char *to = TO_PATTERNS[rnd(ELEMENTSOF(TO_PATTERNS))];
            size_t sf = 0, st = 0;
            for (const char *p = from; *p; p++)
                sf += *p == '*';
            for (const char *p = to; *p; p++)
                st += *p == '*';
            if (sf != st)
                continue;
            size_t n = f.n_rename;
            ms_ns_filter_add(&f.rename_from, &n, from);
            ms_ns_filter_add(&f.rename_to, &f.n_rename, to);
        }
        MsOplogReplayer *r = NULL;
        MsError e = MS_ERROR_INIT;
        ASSERT_OK(ms_oplog_replayer_new(&f, &r, &e));
        for (size_t d = 0; d < ELEMENTSOF(DBS); d++)
            for (size_t c = 0; c < ELEMENTSOF(COLLS); c++)
                if (rnd(3) == 0) {
                    char ns[128];
                    snprintf(ns, sizeof(ns), "%s.%s", DBS[d], COLLS[c]);
                    ASSERT_OK(ms_oplog_replayer_know(r, ns));
                }
        for (unsigned i = 0; i < PROPERTY_ENTRIES; i++) {
            bson_t entry = BSON_INITIALIZER;
            random_entry(&entry, 0);
            MsOplogPlan plan = {0};
            MsError pe = MS_ERROR_INIT;
            int k = ms_oplog_replayer_plan(r, &entry, &plan, &pe);
            entries_total++;
            if (k < 0 && k != -EBADMSG && k != -ENOTSUP) {
                fprintf(stderr, "# run %u: unexpected failure %d: %s\n", run, k, pe.message);
                ms_test_failures++;
            }
            for (size_t a = 0; k == 0 && a < plan.n_actions; a++)
                for (size_t j = 0; j < MS_OPLOG_ACTION_MAX_TOUCHED; j++) {
                    const char *t = plan.actions[a].touched[j];
                    if (!t)
                        continue;
                    touched_total++;
                    if (!is_image(&f, t)) {
                        char *text = bson_as_relaxed_extended_json(&entry, NULL);
                        fprintf(stderr, "# run %u: '%s' touched outside the mapping by %s\n", run,
                                t, text);
                        bson_free(text);
                        ms_test_failures++;
                    }
                    /* a write names its collection's own namespace */
                    if (plan.actions[a].kind != MS_OPLOG_ACTION_COMMAND && j == 0) {
                        char own[200];
                        snprintf(own, sizeof(own), "%s.%s", plan.actions[a].db,
                                 plan.actions[a].coll);
                        if (strcmp(own, t) != 0) {
                            fprintf(stderr, "# run %u: write to %s says it touches %s\n", run,
                                    own, t);
                            ms_test_failures++;
                        }
                    }
                }
            ms_oplog_plan_clear(&plan);
            bson_destroy(&entry);
            if (ms_test_failures > 20)
                break;
        }
        ms_oplog_replayer_free(r);
        ms_ns_filter_clear(&f);
        if (ms_test_failures > 20)
            return;
    }
    fprintf(stderr, "# %u runs, %" PRIu64 " entries, %" PRIu64 " touched namespaces checked\n",
            PROPERTY_RUNS, entries_total, touched_total);
    ASSERT(touched_total > 1000);
}

MS_TEST_MAIN({"map_valid_namespaces", map_valid_namespaces},
             {"map_guard_needs_literal_database", map_guard_needs_literal_database},
             {"every_op_kind_under_every_filter", every_op_kind_under_every_filter},
             {"reported_cases_stay_inside", reported_cases_stay_inside},
             {"unplaceable_entries_are_counted", unplaceable_entries_are_counted},
             {"unknown_commands_are_refused_where_selected",
              unknown_commands_are_refused_where_selected},
             {"renamed_commands_carry_target_names", renamed_commands_carry_target_names},
             {"random_oplogs_stay_inside_the_mapping", random_oplogs_stay_inside_the_mapping})

/* engine/cluster-pit.c: a sharded cluster's restorable ranges (every part's chain intersected
 * from each cluster snapshot's point), the plan for a time (the newest cluster snapshot every
 * part reaches it from, each part's slices), the retention cutoff per part, and the slice
 * prefix a part name gives. Built from constructed snapshots and chains: no store, no server. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/strv.h"
#include "engine/cluster-pit.h"
#include "test.h"

#define P(t, i) ((MsOplogPosition){(t), (i)})

static void add_snapshot(MsClusterPit *pit, const char *name, MsOplogPosition point,
                         const MsClusterPitPart *parts, size_t n) {
    pit->snaps = realloc(pit->snaps, (pit->n_snaps + 1) * sizeof(*pit->snaps));
    MsClusterPitSnapshot *s = &pit->snaps[pit->n_snaps++];
    char key[64];
    snprintf(key, sizeof(key), "P/%s.cluster.json", name);
    *s = (MsClusterPitSnapshot){.key = strdup(key), .name = strdup(name), .point = point};
    s->parts = calloc(n, sizeof(*s->parts));
    for (size_t i = 0; i < n; i++) {
        s->parts[i] = parts[i];
        s->parts[i].name = strdup(parts[i].name);
    }
    s->n_parts = n;
}

static void add_slice(MsClusterPit *pit, const char *part, MsOplogPosition a, MsOplogPosition b) {
    char key[96];
    snprintf(key, sizeof(key), "%s:%u.%u-%u.%u", part, a.t, a.i, b.t, b.i);
    MsSliceRef s = {.start = a, .end = b, .manifest_key = key};
    ASSERT_OK(ms_cluster_pit_add_slice(pit, part, &s));
}

/* Two cluster snapshots; part b's chain has a gap between 120 and 130. */
static void build(MsClusterPit *pit) {
    *pit = (MsClusterPit){0};
    add_snapshot(pit, "s1", P(100, 5),
                 (MsClusterPitPart[]){{.name = (char *) "a", .start = P(99, 0), .end = P(100, 3)},
                                      {.name = (char *) "b", .start = P(99, 1), .end = P(100, 7)},
                                      {.name = (char *) "config", .start = P(99, 2), .end = P(100, 5)}},
                 3);
    add_snapshot(pit, "s2", P(200, 5),
                 (MsClusterPitPart[]){{.name = (char *) "a", .start = P(199, 0), .end = P(200, 5)},
                                      {.name = (char *) "b", .start = P(199, 1), .end = P(200, 6)},
                                      {.name = (char *) "config", .start = P(199, 2), .end = P(200, 4)}},
                 3);
    add_slice(pit, "a", P(150, 0), P(250, 0)); /* added out of order: kept sorted */
    add_slice(pit, "a", P(100, 3), P(150, 0));
    add_slice(pit, "b", P(100, 7), P(120, 0));
    add_slice(pit, "b", P(130, 0), P(260, 0));
    add_slice(pit, "config", P(100, 5), P(300, 0));
}

static bool same(MsOplogPosition x, MsOplogPosition y) {
    return x.t == y.t && x.i == y.i;
}

static void ranges_are_the_intersection(void) {
    MsClusterPit pit;
    build(&pit);
    MsPitRange *r = NULL;
    size_t n = 0;
    ASSERT_OK(ms_cluster_pit_ranges(&pit, &r, &n));
    ASSERT_EQ_INT(n, 2);
    ASSERT(same(r[0].from, P(100, 5)) && same(r[0].to, P(120, 0))); /* b's gap ends s1's */
    ASSERT(same(r[1].from, P(200, 5)) && same(r[1].to, P(250, 0))); /* a reaches least far */
    free(r);
    /* A part with no chain at all: that snapshot reaches no further than the part's end. */
    MsClusterPitPart lone[] = {{.name = (char *) "z", .start = P(1, 0), .end = P(300, 9)},
                               {.name = (char *) "a", .start = P(1, 0), .end = P(300, 9)}};
    add_snapshot(&pit, "s3", P(300, 9), lone, 2);
    ASSERT_OK(ms_cluster_pit_ranges(&pit, &r, &n));
    ASSERT_EQ_INT(n, 3);
    ASSERT(same(r[2].from, P(300, 9)) && same(r[2].to, P(300, 9)));
    free(r);
    ms_cluster_pit_clear(&pit);
}

static void plans(void) {
    MsClusterPit pit;
    build(&pit);
    static const struct {
        MsOplogPosition time;
        const char *not_after;
        int code;            /* 0: planned */
        const char *snapshot; /* the one chosen */
        size_t a, b, config; /* slices per part */
    } cases[] = {
        {P(110, 0), NULL, 0, "s1", 1, 1, 1},
        {P(100, 5), NULL, 0, "s1", 1, 0, 0}, /* the point itself: a's end is before it */
        {P(125, 0), NULL, ERANGE, NULL, 0, 0, 0}, /* in b's gap */
        {P(240, 0), NULL, 0, "s2", 1, 1, 1},
        {P(200, 5), NULL, 0, "s2", 0, 0, 1},
        {P(240, 0), "s1", ERANGE, NULL, 0, 0, 0}, /* not after s1: b stops at 120 */
        {P(110, 0), "P/s2.cluster.json", 0, "s1", 1, 1, 1},
        {P(50, 0), NULL, ERANGE, NULL, 0, 0, 0},
        {P(251, 0), NULL, ERANGE, NULL, 0, 0, 0},
        {P(110, 0), "s9", ENOENT, NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        MsClusterPitPlan plan;
        MsError e = MS_ERROR_INIT;
        int r = ms_cluster_pit_plan(&pit, cases[i].time, cases[i].not_after, &plan, &e);
        if (r != -cases[i].code)
            fprintf(stderr, "case %zu: %d %s\n", i, r, e.message);
        ASSERT_EQ_INT(r, -cases[i].code);
        if (cases[i].code == ERANGE)
            ASSERT(strstr(e.message, "restorable: "));
        if (r < 0)
            continue;
        ASSERT_STREQ(plan.snapshot->name, cases[i].snapshot);
        ASSERT_EQ_INT(ms_cluster_pit_plan_part(&plan, "a")->n_slices, cases[i].a);
        ASSERT_EQ_INT(ms_cluster_pit_plan_part(&plan, "b")->n_slices, cases[i].b);
        ASSERT_EQ_INT(ms_cluster_pit_plan_part(&plan, "config")->n_slices, cases[i].config);
        ASSERT(ms_cluster_pit_plan_part(&plan, "z") == NULL);
        for (size_t k = 0; k < plan.n_parts; k++)
            ASSERT_EQ_INT(ms_strv_length(plan.parts[k].slice_keys), plan.parts[k].n_slices);
        ms_cluster_pit_plan_clear(&plan);
    }
    MsClusterPitPlan plan;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_cluster_pit_plan(&pit, P(240, 0), NULL, &plan, &e));
    ASSERT_STREQ(ms_cluster_pit_plan_part(&plan, "a")->slice_keys[0], "a:150.0-250.0");
    ASSERT_STREQ(ms_cluster_pit_plan_part(&plan, "b")->slice_keys[0], "b:130.0-260.0");
    ms_cluster_pit_plan_clear(&plan);
    ms_cluster_pit_clear(&pit);
}

static void prune_cutoff_and_prefixes(void) {
    MsClusterPit pit;
    build(&pit);
    MsOplogPosition c;
    ASSERT(ms_cluster_pit_prune_cutoff(&pit, "a", &c) && same(c, P(99, 0)));
    ASSERT(ms_cluster_pit_prune_cutoff(&pit, "config", &c) && same(c, P(99, 2)));
    ASSERT(!ms_cluster_pit_prune_cutoff(&pit, "z", &c));
    ms_cluster_pit_clear(&pit);
    char *s = ms_cluster_part_slice_prefix("nightly", "shard01");
    ASSERT_STREQ(s, "nightly/oplog/parts/shard01");
    free(s);
    static const char *const bad[][2] = {{"P", ""}, {"P", ".."}, {"P", ".hidden"}, {"P", "a/b"},
                                         {"", "a"}, {NULL, "a"}, {"P", NULL}};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++)
        ASSERT(ms_cluster_part_slice_prefix(bad[i][0], bad[i][1]) == NULL);
}

/* A recorded change of shards: names as a NULL-terminated list (any order). */
static void add_topology(MsClusterPit *pit, MsOplogPosition at, const char *const *names) {
    pit->topology = realloc(pit->topology, (pit->n_topology + 1) * sizeof(*pit->topology));
    MsClusterPitTopology *t = &pit->topology[pit->n_topology++];
    *t = (MsClusterPitTopology){.at = at};
    for (size_t i = 0; names[i]; i++)
        ASSERT_OK(ms_strv_push(&t->shards, names[i]));
}

#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* build()'s snapshots have shards {a, b} (and the config part): s1 at 100:5 reaching 120:0, s2
 * at 200:5 reaching 250:0. Each case records changes and says the ranges left. */
static void ranges_end_at_a_change_of_shards(void) {
    struct {
        const char *what;
        MsOplogPosition at[3];
        const char *const *names[3];
        size_t n_ranges;
        MsPitRange ranges[2];
    } cases[] = {
        {"none recorded", {{0}}, {NULL}, 2, {{P(100, 5), P(120, 0)}, {P(200, 5), P(250, 0)}}},
        {"the same shards since before", {P(50, 0)}, {NAMES("b", "a")}, 2,
         {{P(100, 5), P(120, 0)}, {P(200, 5), P(250, 0)}}},
        {"c added after s1: s1 ends the second before, s2 (without c) has none",
         {P(50, 0), P(110, 3)}, {NAMES("a", "b"), NAMES("a", "b", "c")}, 1,
         {{P(100, 5), P(109, UINT32_MAX)}}},
        {"c added then removed before s2", {P(50, 0), P(110, 3), P(150, 0)},
         {NAMES("a", "b"), NAMES("a", "b", "c"), NAMES("a", "b")}, 2,
         {{P(100, 5), P(109, UINT32_MAX)}, {P(200, 5), P(250, 0)}}},
        {"a change in s1's point's second counts as after it: no range", {P(100, 9)},
         {NAMES("a", "b", "c")}, 0, {{{0}, {0}}}},
        {"a change at an unknown time (0): no range for other shards", {P(0, 1)}, {NAMES("a")}, 0,
         {{{0}, {0}}}},
        {"b removed after s2 (its chain ends anyway): the change ends s2", {P(230, 0)},
         {NAMES("a")}, 2, {{P(100, 5), P(120, 0)}, {P(200, 5), P(229, UINT32_MAX)}}},
        {"recorded out of order: sorted by position", {P(110, 3), P(50, 0)},
         {NAMES("a", "b", "c"), NAMES("a", "b")}, 1, {{P(100, 5), P(109, UINT32_MAX)}}},
    };
    for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
        MsClusterPit pit;
        build(&pit);
        for (size_t k = 0; k < 3 && cases[c].names[k]; k++)
            add_topology(&pit, cases[c].at[k], cases[c].names[k]);
        /* as topology_load leaves them */
        for (size_t i = 0; i < pit.n_topology; i++)
            for (size_t j = i + 1; j < pit.n_topology; j++)
                if (pit.topology[i].at.t > pit.topology[j].at.t) {
                    MsClusterPitTopology x = pit.topology[i];
                    pit.topology[i] = pit.topology[j];
                    pit.topology[j] = x;
                }
        for (size_t i = 0; i < pit.n_topology; i++) {
            char **l = pit.topology[i].shards;
            size_t n = ms_strv_length(l);
            for (size_t a = 0; a < n; a++)
                for (size_t b = a + 1; b < n; b++)
                    if (strcmp(l[a], l[b]) > 0) {
                        char *x = l[a];
                        l[a] = l[b];
                        l[b] = x;
                    }
        }
        MsPitRange *r = NULL;
        size_t n = 0;
        ASSERT_OK(ms_cluster_pit_ranges(&pit, &r, &n));
        if (n != cases[c].n_ranges)
            fprintf(stderr, "case '%s': %zu ranges\n", cases[c].what, n);
        ASSERT_EQ_INT(n, cases[c].n_ranges);
        for (size_t i = 0; i < n; i++) {
            if (!same(r[i].from, cases[c].ranges[i].from) || !same(r[i].to, cases[c].ranges[i].to))
                fprintf(stderr, "case '%s': range %zu is %u:%u-%u:%u\n", cases[c].what, i,
                        r[i].from.t, r[i].from.i, r[i].to.t, r[i].to.i);
            ASSERT(same(r[i].from, cases[c].ranges[i].from) && same(r[i].to, cases[c].ranges[i].to));
        }
        /* Every plan agrees with the ranges: a time in one is planned, one past all is not. */
        for (uint32_t t = 90; t <= 260; t += 5) {
            MsOplogPosition x = P(t, 0);
            bool in = false;
            for (size_t i = 0; i < n; i++)
                in = in || (!ms_oplog_position_after(r[i].from, x) &&
                            !ms_oplog_position_after(x, r[i].to));
            MsClusterPitPlan plan;
            MsError e = MS_ERROR_INIT;
            int k = ms_cluster_pit_plan(&pit, x, NULL, &plan, &e);
            if ((k == 0) != in)
                fprintf(stderr, "case '%s': time %u planned %d, in a range %d\n", cases[c].what,
                        t, k, in);
            ASSERT((k == 0) == in);
            if (k == 0)
                ms_cluster_pit_plan_clear(&plan);
            else
                ASSERT_EQ_INT(k, -ERANGE);
        }
        free(r);
        ms_cluster_pit_clear(&pit);
    }
}

static void topology_names_compare_as_sets(void) {
    MsClusterPit pit = {0};
    char *ab[] = {(char *) "b", (char *) "a"}, *abc[] = {(char *) "c", (char *) "a", (char *) "b"};
    ASSERT(!ms_cluster_pit_topology_is(&pit, ab, 2)); /* none recorded */
    ASSERT(same(ms_cluster_pit_topology_last(&pit), P(0, 0)));
    add_topology(&pit, P(7, 1), NAMES("a", "b"));
    ASSERT(ms_cluster_pit_topology_is(&pit, ab, 2));
    ASSERT(!ms_cluster_pit_topology_is(&pit, abc, 3));
    ASSERT(!ms_cluster_pit_topology_is(&pit, ab, 1));
    ASSERT(same(ms_cluster_pit_topology_last(&pit), P(7, 1)));
    ms_cluster_pit_clear(&pit);
}

MS_TEST_MAIN(TEST_CASE(ranges_are_the_intersection), TEST_CASE(plans),
             TEST_CASE(prune_cutoff_and_prefixes), TEST_CASE(ranges_end_at_a_change_of_shards),
             TEST_CASE(topology_names_compare_as_sets))

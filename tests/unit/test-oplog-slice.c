/* Tests for oplog slices: key names, chain walking, restorable ranges and the plan for a
 * restore to a time. Tables for the shapes we know; a property run over random chains with
 * gaps, overlaps and repeats against a plain reference. */
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "engine/oplog-slice.h"
#include "test.h"

#define P(t_, i_) ((MsOplogPosition){(t_), (i_)})

static bool pos_eq(MsOplogPosition a, MsOplogPosition b) {
    return a.t == b.t && a.i == b.i;
}

static void keys_round_trip(void) {
    MsOplogPosition cases[][2] = {
        {P(0, 0), P(0, 1)},
        {P(1796609299, 504), P(1796609304, 561)},
        {P(1, UINT32_MAX), P(2, 0)},
        {P(UINT32_MAX - 1, UINT32_MAX), P(UINT32_MAX, UINT32_MAX)},
    };
    for (size_t c = 0; c < ELEMENTSOF(cases); c++)
        for (int idle = 0; idle < 2; idle++)
            for (int with_prefix = 0; with_prefix < 2; with_prefix++) {
                _cleanup_free_ char *key = ms_slice_manifest_key(
                    with_prefix ? "nightly" : NULL, cases[c][0], cases[c][1], idle);
                ASSERT(key != NULL);
                ASSERT(strncmp(key, with_prefix ? "nightly/oplog/" : "oplog/",
                               with_prefix ? 14 : 6) == 0);
                MsOplogPosition a, b;
                bool got_idle = !idle;
                ASSERT(ms_slice_key_parse(key, &a, &b, &got_idle));
                ASSERT(pos_eq(a, cases[c][0]) && pos_eq(b, cases[c][1]));
                ASSERT(got_idle == (bool) idle);
            }
    /* Keys sort as positions do. */
    _cleanup_free_ char *k1 = ms_slice_manifest_key("p", P(9, 5), P(10, 0), false);
    _cleanup_free_ char *k2 = ms_slice_manifest_key("p", P(10, 0), P(10, 1), false);
    ASSERT(strcmp(k1, k2) < 0);
    _cleanup_free_ char *arch = ms_slice_archive_key("p", P(9, 5), MS_COMPRESSION_ZSTD, true);
    ASSERT(arch && strncmp(arch, "p/oplog/0000000009.0000000005-", 30) == 0);
    ASSERT(strstr(arch, ".oplog.zst.enc") != NULL);
}

static void malformed_keys_are_not_slices(void) {
    static const char *const bad[] = {
        "p/oplog/0000000001.0000000002-0000000001.0000000002.slice.json", /* end == start */
        "p/oplog/0000000002.0000000000-0000000001.0000000009.slice.json", /* end < start */
        "p/oplog/000000001.0000000002-0000000003.0000000002.slice.json",  /* short */
        "p/oplog/00000000001.000000002-0000000003.0000000002.slice.json", /* dot misplaced */
        "p/oplog/0000000001.0000000002_0000000003.0000000002.slice.json", /* no dash */
        "p/oplog/0000000001.0000000002-0000000003.0000000002.manifest.json",
        "p/oplog/0000000001.0000000002-0000000003.0000000002.slice.jsonx",
        "p/oplog/0000000001.0000000002-0000000003.0000000002-idlx.slice.json",
        "p/oplog/0000000001.0000000002-0000000003.0000000002-idle-idle.slice.json",
        "p/oplog/00000000a1.0000000002-0000000003.0000000002.slice.json",
        "p/oplog/5000000000.0000000002-6000000003.0000000002.slice.json", /* > 32 bits */
        "p/oplog/+000000001.0000000002-0000000003.0000000002.slice.json",
        "p/oplog/.slice.json",
        "",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        MsOplogPosition a, b;
        bool idle;
        if (ms_slice_key_parse(bad[i], &a, &b, &idle)) {
            fprintf(stderr, "# accepted: %s\n", bad[i]);
            ms_test_failures++;
        }
    }
}

/* A slice list from "s.e" pairs of small integers: position (x, 0). */
typedef struct Case {
    const char *name;
    int slices[8][2]; /* {start, end}; a {0,0} ends the list */
    int from, until;  /* until < 0: as far as they go */
    int reach;
    int path[8]; /* indexes into the sorted list; -1 ends */
} Case;

static size_t build(const int (*pairs)[2], MsSliceRef *out) {
    size_t n = 0;
    for (; n < 8 && (pairs[n][0] || pairs[n][1]); n++)
        out[n] = (MsSliceRef){.start = P((uint32_t) pairs[n][0], 0),
                              .end = P((uint32_t) pairs[n][1], 0)};
    return n;
}

static void reach_table(void) {
    static const Case cases[] = {
        {"none", {{0}}, 5, -1, 5, {-1}},
        {"continuous", {{5, 7}, {7, 9}, {9, 12}}, 5, -1, 12, {0, 1, 2, -1}},
        {"from inside the first", {{5, 7}, {7, 9}}, 6, -1, 9, {0, 1, -1}},
        {"from before the first: a gap", {{5, 7}}, 4, -1, 4, {-1}},
        {"gap in the middle", {{5, 7}, {8, 9}}, 5, -1, 7, {0, -1}},
        {"overlap takes the farthest", {{5, 7}, {5, 9}, {7, 8}, {9, 10}}, 5, -1, 10, {1, 3, -1}},
        {"a repeat changes nothing", {{5, 7}, {5, 7}, {7, 9}}, 5, -1, 9, {0, 2, -1}},
        {"bridge over a point", {{5, 7}, {6, 10}, {7, 8}}, 5, -1, 10, {0, 1, -1}},
        {"until stops early", {{5, 7}, {7, 9}, {9, 12}}, 5, 8, 9, {0, 1, -1}},
        {"until at from", {{5, 7}}, 5, 5, 5, {-1}},
        {"from at the end", {{5, 7}}, 7, -1, 7, {-1}},
    };
    for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
        MsSliceRef s[8];
        size_t n = build(cases[c].slices, s);
        MsOplogPosition reach;
        size_t *path = NULL, n_path = 0;
        MsOplogPosition until =
            cases[c].until < 0 ? MS_OPLOG_POSITION_MAX : P((uint32_t) cases[c].until, 0);
        ASSERT_OK(ms_slices_reach(s, n, P((uint32_t) cases[c].from, 0), until, &reach, &path,
                                  &n_path));
        bool ok = pos_eq(reach, P((uint32_t) cases[c].reach, 0));
        size_t k = 0;
        for (; cases[c].path[k] >= 0; k++)
            ok = ok && k < n_path && path[k] == (size_t) cases[c].path[k];
        ok = ok && k == n_path;
        if (!ok) {
            fprintf(stderr, "# %s: reach %u, %zu slices in the path\n", cases[c].name, reach.t,
                    n_path);
            ms_test_failures++;
        }
        free(path);
    }
}

static void plan_table(void) {
    /* Snapshots ending at 10, 20 (no oplog), 30 and 50; slices 10-15-25 | gap | 30-40-60. */
    MsPitSnapshot snaps[] = {
        {.id = "a", .end = P(10, 0), .point_in_time = true},
        {.id = "b", .end = P(20, 0), .point_in_time = false},
        {.id = "c", .end = P(30, 0), .point_in_time = true},
        {.id = "d", .end = P(50, 0), .point_in_time = true},
    };
    MsSliceRef s[8];
    size_t n = build((const int[][2]){{10, 15}, {15, 25}, {30, 40}, {40, 60}, {0, 0}}, s);
    struct {
        uint32_t target;
        const char *snapshot; /* NULL: refused */
        size_t slices;
    } cases[] = {
        {9, NULL, 0},  {10, "a", 0}, {11, "a", 1}, {25, "a", 2}, {26, NULL, 0},
        {29, NULL, 0}, {30, "c", 0}, {45, "c", 2}, {50, "d", 0}, {55, "d", 1},
        {60, "d", 1},  {61, NULL, 0},
    };
    for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
        MsPitPlan plan = {0};
        MsError e = MS_ERROR_INIT;
        int r = ms_pit_plan(snaps, ELEMENTSOF(snaps), s, n, P(cases[c].target, 0), &plan, &e);
        bool ok = cases[c].snapshot
                      ? r == 0 && strcmp(snaps[plan.snapshot].id, cases[c].snapshot) == 0 &&
                            plan.n_slices == cases[c].slices
                      : r == -ERANGE && strstr(e.message, "restorable ranges") &&
                            strstr(e.message, "Nothing was changed");
        if (!ok) {
            fprintf(stderr, "# target %u: r=%d %s\n", cases[c].target, r, e.message);
            ms_test_failures++;
        }
        ms_pit_plan_clear(&plan);
    }
    MsPitRange *ranges = NULL;
    size_t n_ranges = 0;
    ASSERT_OK(ms_pit_ranges(snaps, ELEMENTSOF(snaps), s, n, &ranges, &n_ranges));
    /* [10,25] and [30,60] ([50,60] merged into it); b has no oplog. */
    ASSERT_EQ_INT(n_ranges, 2);
    ASSERT(pos_eq(ranges[0].from, P(10, 0)) && pos_eq(ranges[0].to, P(25, 0)));
    ASSERT(pos_eq(ranges[1].from, P(30, 0)) && pos_eq(ranges[1].to, P(60, 0)));
    _cleanup_free_ char *text = ms_pit_ranges_describe(ranges, n_ranges);
    ASSERT_CONTAINS(text, "1970-01-01T00:00:10Z");
    free(ranges);
}

static void prune_cutoff(void) {
    MsOplogPosition cut;
    ASSERT(!ms_slices_prune_cutoff(NULL, 0, &cut));
    MsPitSnapshot none[] = {{.start = P(5, 0), .end = P(6, 0), .point_in_time = false}};
    ASSERT(!ms_slices_prune_cutoff(none, 1, &cut)); /* no oplog: keeps every slice */
    MsPitSnapshot snaps[] = {
        {.start = P(50, 0), .end = P(55, 0), .point_in_time = true},
        {.start = P(5, 0), .end = P(8, 0), .point_in_time = false},
        {.start = P(20, 3), .end = P(25, 0), .point_in_time = true},
    };
    ASSERT(ms_slices_prune_cutoff(snaps, ELEMENTSOF(snaps), &cut));
    ASSERT(pos_eq(cut, P(20, 3)));
    /* Everything a range needs is after the cutoff: for every snapshot and slice set, the
     * slices used by a plan end after the cutoff. */
    MsSliceRef s[8];
    size_t n = build((const int[][2]){{10, 20}, {20, 30}, {30, 60}, {0, 0}}, s);
    for (uint32_t target = 25; target <= 60; target++) {
        MsPitPlan plan = {0};
        MsError e = MS_ERROR_INIT;
        if (ms_pit_plan(snaps, ELEMENTSOF(snaps), s, n, P(target, 0), &plan, &e) == 0)
            for (size_t k = 0; k < plan.n_slices; k++)
                ASSERT(ms_oplog_position_after(s[plan.slices[k]].end, cut));
        ms_pit_plan_clear(&plan);
    }
}

/* ---- property: random chains against a plain reference ---- */

#define PROPERTY_RUNS 2000

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t) (rng_state % n);
}

/* The reference: keep jumping to the farthest end of any slice holding the next entry. */
static MsOplogPosition reference_reach(const MsSliceRef *s, size_t n, MsOplogPosition from) {
    MsOplogPosition cur = from;
    for (bool moved = true; moved;) {
        moved = false;
        for (size_t i = 0; i < n; i++)
            if (!ms_oplog_position_after(s[i].start, cur) && ms_oplog_position_after(s[i].end, cur)) {
                cur = s[i].end;
                moved = true;
            }
    }
    return cur;
}

static void random_chains(void) {
    unsigned paths = 0, plans = 0, refusals = 0;
    for (unsigned run = 0; run < PROPERTY_RUNS; run++) {
        /* Entries at random positions (a few per second, ordinals growing), cut into slices
         * along the true sequence, with gaps left out, repeats and overlaps added. */
        MsOplogPosition pos[64];
        size_t n_pos = 8 + rnd(56);
        uint32_t t = 1000 + rnd(100), i = 0;
        for (size_t k = 0; k < n_pos; k++) {
            if (rnd(3) == 0)
                t += 1 + rnd(5), i = 0;
            i += 1 + rnd(3);
            pos[k] = P(t, i);
        }
        MsSliceRef s[96];
        size_t n = 0, at = 0;
        while (at + 1 < n_pos && n < 64) {
            size_t len = 1 + rnd(6);
            size_t end = MS_MIN(at + len, n_pos - 1);
            if (rnd(6) != 0) /* a sixth of the slices are missing: gaps */
                s[n++] = (MsSliceRef){.start = pos[at], .end = pos[end]};
            at = end;
        }
        size_t n_true = n;
        for (size_t k = 0; k < n_true && n < 96; k++)
            if (rnd(5) == 0) /* a repeat */
                s[n++] = s[k];
            else if (rnd(7) == 0 && k + 1 < n_true) /* an overlap over two slices */
                s[n++] = (MsSliceRef){.start = s[k].start, .end = s[k + 1].end};
        /* Overlapping slices must not cover a gap: keep only overlaps of adjacent slices. */
        for (size_t k = n_true; k < n; k++) {
            MsOplogPosition r = reference_reach(s, n_true, s[k].start);
            if (ms_oplog_position_after(s[k].end, r))
                s[k] = s[--n], k--;
        }
        ms_slices_sort(s, n);

        MsOplogPosition from = pos[rnd((uint32_t) n_pos)];
        MsOplogPosition reach;
        size_t *path = NULL, n_path = 0;
        ASSERT_OK(ms_slices_reach(s, n, from, MS_OPLOG_POSITION_MAX, &reach, &path, &n_path));
        MsOplogPosition want = reference_reach(s, n, from);
        if (!pos_eq(reach, want)) {
            fprintf(stderr, "# run %u: reach %u:%u, reference %u:%u\n", run, reach.t, reach.i,
                    want.t, want.i);
            ms_test_failures++;
            free(path);
            return;
        }
        /* The path is contiguous, strictly advancing, and ends at the reach. */
        MsOplogPosition cur = from;
        for (size_t k = 0; k < n_path; k++) {
            const MsSliceRef *x = &s[path[k]];
            if (ms_oplog_position_after(x->start, cur) || !ms_oplog_position_after(x->end, cur)) {
                fprintf(stderr, "# run %u: path step %zu is not contiguous\n", run, k);
                ms_test_failures++;
                free(path);
                return;
            }
            cur = x->end;
        }
        ASSERT(pos_eq(cur, reach));
        free(path);
        paths++;

        /* Snapshots at random entries; the plan for a random target is the newest that
         * reaches it, and a refusal means none does. */
        MsPitSnapshot snaps[6];
        size_t n_snaps = 1 + rnd(6);
        for (size_t k = 0; k < n_snaps; k++)
            snaps[k] = (MsPitSnapshot){
                .id = "s", .end = pos[rnd((uint32_t) n_pos)], .point_in_time = rnd(8) != 0};
        MsOplogPosition target = pos[rnd((uint32_t) n_pos)];
        if (rnd(2))
            target.i += rnd(2); /* sometimes between entries */
        MsPitPlan plan = {0};
        MsError e = MS_ERROR_INIT;
        int r = ms_pit_plan(snaps, n_snaps, s, n, target, &plan, &e);
        bool any = false;
        MsOplogPosition newest = {0, 0};
        for (size_t k = 0; k < n_snaps; k++) {
            if (!snaps[k].point_in_time || ms_oplog_position_after(snaps[k].end, target))
                continue;
            if (!ms_oplog_position_after(target, reference_reach(s, n, snaps[k].end))) {
                if (!any || ms_oplog_position_after(snaps[k].end, newest))
                    newest = snaps[k].end;
                any = true;
            }
        }
        if (any != (r == 0) || (r == 0 && !pos_eq(snaps[plan.snapshot].end, newest))) {
            fprintf(stderr, "# run %u: plan r=%d, reference %s\n", run, r, any ? "reaches" : "refuses");
            ms_test_failures++;
            ms_pit_plan_clear(&plan);
            return;
        }
        /* Pruning by the oldest snapshot's start never removes a slice a plan needs. */
        MsPitSnapshot with_start[6];
        for (size_t k = 0; k < n_snaps; k++) {
            with_start[k] = snaps[k];
            with_start[k].start = P(snaps[k].end.t > 0 ? snaps[k].end.t - rnd(2) : 0, 0);
        }
        MsOplogPosition cut;
        if (r == 0 && ms_slices_prune_cutoff(with_start, n_snaps, &cut))
            for (size_t k = 0; k < plan.n_slices; k++)
                ASSERT(ms_oplog_position_after(s[plan.slices[k]].end, cut));
        if (r == 0) {
            plans++;
            cur = snaps[plan.snapshot].end;
            for (size_t k = 0; k < plan.n_slices; k++) {
                ASSERT(!ms_oplog_position_after(s[plan.slices[k]].start, cur));
                cur = s[plan.slices[k]].end;
            }
            ASSERT(!ms_oplog_position_after(target, cur));
        } else
            refusals++;
        ms_pit_plan_clear(&plan);
    }
    fprintf(stderr, "# %u random chains walked, %u plans checked, %u refusals checked\n", paths,
            plans, refusals);
}

MS_TEST_MAIN(TEST_CASE(keys_round_trip), TEST_CASE(malformed_keys_are_not_slices),
             TEST_CASE(reach_table), TEST_CASE(plan_table), TEST_CASE(prune_cutoff),
             TEST_CASE(random_chains))

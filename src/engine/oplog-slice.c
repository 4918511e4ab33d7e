/* Slice keys, listing and chain planning (oplog-slice.h). Pure planning apart from
 * ms_slices_list(), so that every shape of chain is tested without a store. */
#include "oplog-slice.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/macro.h"
#include "mongosnap/mongosnap.h"

static int position_cmp(MsOplogPosition a, MsOplogPosition b) {
    return ms_oplog_position_after(a, b) ? 1 : ms_oplog_position_after(b, a) ? -1 : 0;
}

void ms_oplog_position_format(MsOplogPosition p, char buf[MS_SLICE_POSITION_LEN + 1]) {
    snprintf(buf, MS_SLICE_POSITION_LEN + 1, "%010" PRIu32 ".%010" PRIu32, p.t, p.i);
}

char *ms_slice_dir(const char *prefix) {
    char *s = NULL;
    if (asprintf(&s, "%s%s" MONGOSNAP_SLICE_DIR "/", prefix && *prefix ? prefix : "",
                 prefix && *prefix ? "/" : "") < 0)
        return NULL;
    return s;
}

#define IDLE_TAG "-idle"

char *ms_slice_manifest_key(const char *prefix, MsOplogPosition start, MsOplogPosition end,
                            bool idle) {
    _cleanup_free_ char *dir = ms_slice_dir(prefix);
    char a[MS_SLICE_POSITION_LEN + 1], b[MS_SLICE_POSITION_LEN + 1];
    ms_oplog_position_format(start, a);
    ms_oplog_position_format(end, b);
    char *s = NULL;
    if (!dir || asprintf(&s, "%s%s-%s%s" MONGOSNAP_SLICE_MANIFEST_SUFFIX, dir, a, b,
                         idle ? IDLE_TAG : "") < 0)
        return NULL;
    return s;
}

char *ms_slice_archive_key(const char *prefix, MsOplogPosition start, MsCompression compression,
                           bool encrypted) {
    _cleanup_free_ char *dir = ms_slice_dir(prefix);
    char a[MS_SLICE_POSITION_LEN + 1];
    ms_oplog_position_format(start, a);
    uint32_t tag;
    if (getrandom(&tag, sizeof(tag), GRND_NONBLOCK) != (ssize_t) sizeof(tag))
        tag = (uint32_t) time(NULL) ^ (uint32_t) (uintptr_t) &tag;
    char *s = NULL;
    if (!dir || asprintf(&s, "%s%s-%08" PRIx32 MONGOSNAP_SLICE_ARCHIVE_SUFFIX "%s%s", dir, a, tag,
                         ms_compression_suffix(compression), encrypted ? ".enc" : "") < 0)
        return NULL;
    return s;
}

static bool parse_position(const char *s, MsOplogPosition *ret) {
    unsigned long t, i;
    char dot;
    for (size_t k = 0; k < MS_SLICE_POSITION_LEN; k++)
        if (k == 10 ? s[k] != '.' : (s[k] < '0' || s[k] > '9'))
            return false;
    if (sscanf(s, "%10lu%c%10lu", &t, &dot, &i) != 3 || t > UINT32_MAX || i > UINT32_MAX)
        return false;
    *ret = (MsOplogPosition){(uint32_t) t, (uint32_t) i};
    return true;
}

bool ms_slice_key_parse(const char *key, MsOplogPosition *ret_start, MsOplogPosition *ret_end,
                        bool *ret_idle) {
    const char *base = strrchr(key, '/');
    base = base ? base + 1 : key;
    size_t want = 2 * MS_SLICE_POSITION_LEN + 1 + strlen(MONGOSNAP_SLICE_MANIFEST_SUFFIX);
    size_t len = strlen(base);
    bool idle = len == want + strlen(IDLE_TAG);
    if (len != want && !idle)
        return false;
    const char *tail = base + 2 * MS_SLICE_POSITION_LEN + 1;
    if (idle && memcmp(tail, IDLE_TAG, strlen(IDLE_TAG)) != 0)
        return false;
    if (base[MS_SLICE_POSITION_LEN] != '-' ||
        strcmp(tail + (idle ? strlen(IDLE_TAG) : 0), MONGOSNAP_SLICE_MANIFEST_SUFFIX) != 0)
        return false;
    const char *suffix = base + 2 * MS_SLICE_POSITION_LEN + 1 + (idle ? strlen(IDLE_TAG) : 0);
    if ((strlen(base) != want && !idle) || base[MS_SLICE_POSITION_LEN] != '-' ||
        strcmp(suffix, MONGOSNAP_SLICE_MANIFEST_SUFFIX) != 0)
        return false;
    MsOplogPosition a, b;
    if (!parse_position(base, &a) || !parse_position(base + MS_SLICE_POSITION_LEN + 1, &b))
        return false;
    /* A slice ends after it starts; anything else is not one we wrote. */
    if (!ms_oplog_position_after(b, a))
        return false;
    *ret_start = a;
    *ret_end = b;
    if (ret_idle)
        *ret_idle = idle;
    return true;
}

static int compare_slices(const void *x, const void *y) {
    const MsSliceRef *a = x, *b = y;
    int c = position_cmp(a->start, b->start);
    return c ? c : position_cmp(a->end, b->end);
}

int ms_slices_list(MsStorage *s, const char *prefix, MsSliceRef **ret, size_t *ret_n, MsError *e) {
    _cleanup_free_ char *dir = ms_slice_dir(prefix);
    if (!dir)
        return ms_error_oom(e);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    /* Only the slice directory itself, not a deeper one with the same names (a cluster's
     * parts' chains are below it). */
    int r = ms_storage_list_children(s, dir, MONGOSNAP_SLICE_MANIFEST_SUFFIX, &objs, &n, e);
    if (r < 0)
        return r;
    MsSliceRef *out = calloc(n ? n : 1, sizeof(*out));
    size_t k = 0;
    if (!out)
        r = ms_error_oom(e);
    for (size_t i = 0; r == 0 && i < n; i++) {
        MsSliceRef ref = {.manifest_size = objs[i].size};
        if (!ms_slice_key_parse(objs[i].key, &ref.start, &ref.end, &ref.idle))
            continue;
        ref.manifest_key = objs[i].key;
        objs[i].key = NULL;
        out[k++] = ref;
    }
    ms_storage_objects_free(objs, n);
    if (r < 0) {
        ms_slices_free(out, k);
        return r;
    }
    ms_slices_sort(out, k);
    *ret = out;
    *ret_n = k;
    return 0;
}

void ms_slices_sort(MsSliceRef *slices, size_t n) {
    if (n > 1)
        qsort(slices, n, sizeof(*slices), compare_slices);
}

void ms_slices_free(MsSliceRef *slices, size_t n) {
    for (size_t i = 0; slices && i < n; i++)
        free(slices[i].manifest_key);
    free(slices);
}

#define SLICE_MANIFEST_MAX (1024u * 1024u)

int ms_slice_remove(MsStorage *s, const char *manifest_key, MsError *e) {
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    MsManifest m = {0};
    MsError ge = MS_ERROR_INIT;
    int g = ms_storage_get(s, manifest_key, SLICE_MANIFEST_MAX, &json, &len, &ge);
    if (g == -ENOENT)
        return 0;
    if (g < 0) {
        *e = ge;
        return g;
    }
    /* A manifest that does not parse names no archive; it goes all the same. */
    bool named = ms_manifest_parse(json, len, &m, &ge) == 0 && m.archive_key &&
                 ms_manifest_is_slice(&m);
    int r = ms_storage_remove(s, manifest_key, e);
    /* Only an archive in the slice directory beside it: a hostile manifest cannot aim this
     * at a snapshot. */
    const char *slash = strrchr(manifest_key, '/');
    size_t dir_len = slash ? (size_t) (slash - manifest_key) + 1 : 0;
    if (r == 0 && named && strncmp(m.archive_key, manifest_key, dir_len) == 0 &&
        !strchr(m.archive_key + dir_len, '/') &&
        strstr(m.archive_key + dir_len, MONGOSNAP_SLICE_ARCHIVE_SUFFIX))
        r = ms_storage_remove(s, m.archive_key, e);
    ms_manifest_clear(&m);
    return r;
}

int ms_slices_reach(const MsSliceRef *slices, size_t n, MsOplogPosition from,
                    MsOplogPosition until, MsOplogPosition *ret_reach, size_t **ret_path,
                    size_t *ret_n_path) {
    /* Slices sorted by start: walking forward, the best next slice is the one with the
     * farthest end among all that start at or before the current position (it holds every
     * entry from there to its end). One pass over the list. */
    MsOplogPosition cur = from;
    size_t *path = NULL, n_path = 0, j = 0;
    bool have_best = false;
    size_t best = 0;
    while (position_cmp(cur, until) < 0) {
        while (j < n && position_cmp(slices[j].start, cur) <= 0) {
            if (!have_best || position_cmp(slices[j].end, slices[best].end) > 0)
                best = j;
            have_best = true;
            j++;
        }
        if (!have_best || position_cmp(slices[best].end, cur) <= 0)
            break; /* no slice holds the entry after cur: a gap (or the end) */
        if (ret_path) {
            size_t *grown = realloc(path, (n_path + 1) * sizeof(*path));
            if (!grown) {
                free(path);
                return -ENOMEM;
            }
            path = grown;
            path[n_path] = best;
        }
        n_path++;
        cur = slices[best].end;
    }
    *ret_reach = cur;
    if (ret_path) {
        *ret_path = path;
        *ret_n_path = n_path;
    }
    return 0;
}

static int compare_ranges(const void *x, const void *y) {
    const MsPitRange *a = x, *b = y;
    int c = position_cmp(a->from, b->from);
    return c ? c : position_cmp(a->to, b->to);
}

int ms_pit_ranges(const MsPitSnapshot *snaps, size_t n_snaps, const MsSliceRef *slices,
                  size_t n_slices, MsPitRange **ret, size_t *ret_n) {
    MsPitRange *r = calloc(n_snaps ? n_snaps : 1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < n_snaps; i++) {
        if (!snaps[i].point_in_time)
            continue;
        MsOplogPosition reach;
        int k = ms_slices_reach(slices, n_slices, snaps[i].end, MS_OPLOG_POSITION_MAX, &reach,
                                NULL, NULL);
        if (k < 0) {
            free(r);
            return k;
        }
        r[n++] = (MsPitRange){snaps[i].end, reach};
    }
    *ret = r;
    *ret_n = ms_pit_ranges_merge(r, n);
    return 0;
}

size_t ms_pit_ranges_merge(MsPitRange *r, size_t n) {
    qsort(r, n, sizeof(*r), compare_ranges);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && position_cmp(r[i].from, r[m - 1].to) <= 0) {
            if (position_cmp(r[i].to, r[m - 1].to) > 0)
                r[m - 1].to = r[i].to;
            continue;
        }
        r[m++] = r[i];
    }
    return m;
}

static void describe_position(MsOplogPosition p, char *buf, size_t size) {
    time_t t = (time_t) p.t;
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (p.i == UINT32_MAX)
        snprintf(buf, size, "%s", when);
    else
        snprintf(buf, size, "%s (%" PRIu32 ":%" PRIu32 ")", when, p.t, p.i);
}

char *ms_pit_ranges_describe(const MsPitRange *ranges, size_t n) {
    if (n == 0)
        return strdup("none");
    size_t cap = n * 128 + 1;
    char *out = calloc(1, cap);
    if (!out)
        return NULL;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        char a[64], b[64];
        describe_position(ranges[i].from, a, sizeof(a));
        describe_position(ranges[i].to, b, sizeof(b));
        used += (size_t) snprintf(out + used, cap - used, "%s%s – %s", i ? ", " : "", a, b);
    }
    return out;
}

int ms_pit_plan(const MsPitSnapshot *snaps, size_t n_snaps, const MsSliceRef *slices,
                size_t n_slices, MsOplogPosition target, MsPitPlan *ret, MsError *e) {
    /* The newest candidate first: the shortest replay. */
    size_t *order = calloc(n_snaps ? n_snaps : 1, sizeof(*order));
    if (!order)
        return ms_error_oom(e);
    size_t n_order = 0;
    for (size_t i = 0; i < n_snaps; i++)
        if (snaps[i].point_in_time && !ms_oplog_position_after(snaps[i].end, target))
            order[n_order++] = i;
    /* Insertion sort by end, newest first: a policy keeps tens of snapshots, not thousands. */
    for (size_t i = 1; i < n_order; i++)
        for (size_t k = i; k > 0 && ms_oplog_position_after(snaps[order[k]].end,
                                                            snaps[order[k - 1]].end);
             k--) {
            size_t t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    int r = 0;
    for (size_t o = 0; o < n_order; o++) {
        MsOplogPosition reach;
        size_t *path = NULL, n_path = 0;
        r = ms_slices_reach(slices, n_slices, snaps[order[o]].end, target, &reach, &path, &n_path);
        if (r < 0)
            break;
        if (!ms_oplog_position_after(target, reach)) {
            *ret = (MsPitPlan){.snapshot = order[o], .slices = path, .n_slices = n_path};
            free(order);
            return 0;
        }
        free(path);
    }
    free(order);
    if (r < 0)
        return ms_error_oom(e);
    MsPitRange *ranges = NULL;
    size_t n_ranges = 0;
    if (ms_pit_ranges(snaps, n_snaps, slices, n_slices, &ranges, &n_ranges) < 0)
        return ms_error_oom(e);
    _cleanup_free_ char *what = ms_pit_ranges_describe(ranges, n_ranges);
    free(ranges);
    char t[64];
    describe_position(target, t, sizeof(t));
    return ms_error_set(e, ERANGE,
                        "no snapshot and chain of oplog slices reaches %s; the restorable ranges "
                        "are: %s. Nothing was changed in the target",
                        t, what ? what : "unknown");
}

bool ms_slices_prune_cutoff(const MsPitSnapshot *snaps, size_t n_snaps, MsOplogPosition *ret) {
    bool found = false;
    for (size_t i = 0; i < n_snaps; i++) {
        if (!snaps[i].point_in_time)
            continue;
        if (!found || ms_oplog_position_after(*ret, snaps[i].start))
            *ret = snaps[i].start;
        found = true;
    }
    return found;
}

void ms_pit_plan_clear(MsPitPlan *p) {
    free(p->slices);
    memset(p, 0, sizeof(*p));
}

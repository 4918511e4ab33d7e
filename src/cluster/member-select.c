/* Ranking replica-set members for a snapshot, from replSetGetStatus and replSetGetConfig. */
#include "member-select.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

#define USEC_PER_SEC 1000000ull
#define USEC_PER_MSEC 1000ull

static int64_t iter_int(const bson_iter_t *it) {
    if (BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_DOUBLE(it))
        return bson_iter_as_int64(it);
    return 0;
}

static bool find(const bson_t *doc, const char *dotted, bson_iter_t *ret) {
    bson_iter_t it;
    return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted, ret);
}

const char *ms_cluster_member_unfit(const MsClusterMember *m, uint64_t max_lag_usec) {
    if (m->arbiter || m->state == MS_MEMBER_STATE_ARBITER)
        return "an arbiter holds no data";
    if (!m->healthy || m->state == MS_MEMBER_STATE_DOWN)
        return "unreachable";
    if (m->state != MS_MEMBER_STATE_PRIMARY && m->state != MS_MEMBER_STATE_SECONDARY)
        return "not serving data (recovering, starting up or rolling back)";
    if (m->delay_usec > 0)
        return "a delayed member: its data is behind by design";
    if (m->state == MS_MEMBER_STATE_SECONDARY && max_lag_usec > 0 && m->lag_usec > max_lag_usec)
        return "lagging more than the limit";
    return NULL;
}

void ms_cluster_members_free(MsClusterMember *members, size_t n) {
    for (size_t i = 0; members && i < n; i++)
        free(members[i].host);
    free(members);
}

/* The status entry for host: state, health and optime. */
static bool status_of(const bson_t *status, const char *host, MsClusterMember *m) {
    bson_iter_t arr, it;
    if (!find(status, "members", &arr) || !BSON_ITER_HOLDS_ARRAY(&arr) ||
        !bson_iter_recurse(&arr, &it))
        return false;
    while (bson_iter_next(&it)) {
        bson_t member;
        uint32_t len;
        const uint8_t *data;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            continue;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&member, data, len))
            continue;
        bson_iter_t f;
        if (!find(&member, "name", &f) || !BSON_ITER_HOLDS_UTF8(&f) ||
            strcmp(bson_iter_utf8(&f, NULL), host) != 0)
            continue;
        m->state = find(&member, "state", &f) ? (int) iter_int(&f) : 0;
        /* The member answering has no "health" of its own in some versions: it is up. */
        m->healthy = !find(&member, "health", &f) || iter_int(&f) == 1;
        if (find(&member, "optimeDate", &f) && BSON_ITER_HOLDS_DATE_TIME(&f))
            m->optime_usec = bson_iter_date_time(&f) * (int64_t) USEC_PER_MSEC;
        else if (find(&member, "optime.ts", &f) && BSON_ITER_HOLDS_TIMESTAMP(&f)) {
            uint32_t t, i;
            bson_iter_timestamp(&f, &t, &i);
            m->optime_usec = (int64_t) t * (int64_t) USEC_PER_SEC;
        }
        return true;
    }
    return false;
}

int ms_cluster_members_parse(const bson_t *status, const bson_t *config,
                             MsClusterMember **ret_members, size_t *ret_n, MsError *e) {
    bson_iter_t arr, it;
    if (!find(config, "config.members", &arr) || !BSON_ITER_HOLDS_ARRAY(&arr) ||
        !bson_iter_recurse(&arr, &it))
        return ms_error_set(e, EBADMSG,
                            "the replSetGetConfig reply has no config.members: is this a "
                            "replica set member?");
    size_t cap = 0, n = 0;
    MsClusterMember *list = NULL;
    while (bson_iter_next(&it)) {
        bson_t member;
        uint32_t len;
        const uint8_t *data;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            continue;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&member, data, len))
            continue;
        bson_iter_t f;
        if (!find(&member, "host", &f) || !BSON_ITER_HOLDS_UTF8(&f))
            continue;
        MsClusterMember m = {0};
        const char *host = bson_iter_utf8(&f, NULL);
        if (!status_of(status, host, &m))
            continue;
        m.hidden = find(&member, "hidden", &f) && BSON_ITER_HOLDS_BOOL(&f) && bson_iter_bool(&f);
        m.arbiter =
            find(&member, "arbiterOnly", &f) && BSON_ITER_HOLDS_BOOL(&f) && bson_iter_bool(&f);
        int64_t delay = 0;
        if (find(&member, "secondaryDelaySecs", &f) || find(&member, "slaveDelay", &f))
            delay = iter_int(&f);
        m.delay_usec = delay > 0 ? (uint64_t) delay * USEC_PER_SEC : 0;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            MsClusterMember *l = realloc(list, cap * sizeof(*l));
            if (!l) {
                ms_cluster_members_free(list, n);
                return ms_error_oom(e);
            }
            list = l;
        }
        if (!(m.host = strdup(host))) {
            ms_cluster_members_free(list, n);
            return ms_error_oom(e);
        }
        list[n++] = m;
    }
    /* Lag against the primary; during an election, against the newest member. */
    int64_t reference = 0;
    for (size_t i = 0; i < n; i++)
        if (list[i].state == MS_MEMBER_STATE_PRIMARY)
            reference = list[i].optime_usec;
    if (reference == 0)
        for (size_t i = 0; i < n; i++)
            if (list[i].optime_usec > reference)
                reference = list[i].optime_usec;
    for (size_t i = 0; i < n; i++)
        list[i].lag_usec = list[i].optime_usec > 0 && reference > list[i].optime_usec
                               ? (uint64_t) (reference - list[i].optime_usec)
                               : 0;
    *ret_members = list;
    *ret_n = n;
    return 0;
}

/* Lower is better: the tier a member is in for a priority, -1 when the priority excludes it. */
static int tier(const MsClusterMember *m, MsNodePriority p) {
    bool primary = m->state == MS_MEMBER_STATE_PRIMARY;
    switch (p) {
    case MS_NODE_PRIORITY_AUTO:
        return primary ? 2 : m->hidden ? 0 : 1;
    case MS_NODE_PRIORITY_HIDDEN:
        return !primary && m->hidden ? 0 : -1;
    case MS_NODE_PRIORITY_SECONDARY:
        return primary ? -1 : 0;
    case MS_NODE_PRIORITY_PRIMARY:
        return primary ? 0 : -1;
    default:
        return -1;
    }
}

typedef struct RankContext {
    const MsClusterMember *members;
    MsNodePriority priority;
} RankContext;

static int rank_cmp(const void *a, const void *b, void *userdata) {
    const RankContext *c = userdata;
    const MsClusterMember *x = &c->members[*(const size_t *) a];
    const MsClusterMember *y = &c->members[*(const size_t *) b];
    int tx = tier(x, c->priority), ty = tier(y, c->priority);
    if (tx != ty)
        return tx < ty ? -1 : 1;
    if (x->lag_usec != y->lag_usec)
        return x->lag_usec < y->lag_usec ? -1 : 1;
    return strcmp(x->host, y->host);
}

int ms_cluster_rank(const MsClusterMember *members, size_t n, MsNodePriority priority,
                    uint64_t max_lag_usec, size_t **ret_order, size_t *ret_n, MsError *e) {
    _cleanup_free_ size_t *order = calloc(n ? n : 1, sizeof(*order));
    if (!order)
        return ms_error_oom(e);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!ms_cluster_member_unfit(&members[i], max_lag_usec) && tier(&members[i], priority) >= 0)
            order[k++] = i;
    if (k == 0) {
        char why[MS_ERROR_MESSAGE_MAX] = "";
        size_t len = 0;
        for (size_t i = 0; i < n && len < sizeof(why); i++) {
            const char *u = ms_cluster_member_unfit(&members[i], max_lag_usec);
            if (!u)
                u = "excluded by NodePriority=";
            len += (size_t) snprintf(why + len, sizeof(why) - len, "%s%s: %s", i ? "; " : "",
                                     members[i].host, u);
        }
        return ms_error_set(e, ENODEV,
                            "no member fits NodePriority=%s (%s); change NodePriority= or wait "
                            "for a member to recover",
                            ms_node_priority_to_string(priority), n ? why : "no members");
    }
    RankContext c = {.members = members, .priority = priority};
    qsort_r(order, k, sizeof(*order), rank_cmp, &c);
    *ret_order = TAKE_PTR(order);
    *ret_n = k;
    return 0;
}

static int add_hosts(const bson_t *hello, const char *field, int state, bool arbiter,
                     const char *primary, MsClusterMember **v, size_t *n, MsError *e) {
    bson_iter_t arr, it;
    if (!find(hello, field, &arr) || !BSON_ITER_HOLDS_ARRAY(&arr) || !bson_iter_recurse(&arr, &it))
        return 0;
    while (bson_iter_next(&it)) {
        if (!BSON_ITER_HOLDS_UTF8(&it))
            continue;
        const char *host = bson_iter_utf8(&it, NULL);
        MsClusterMember *nv = realloc(*v, (*n + 1) * sizeof(*nv));
        if (!nv)
            return ms_error_oom(e);
        *v = nv;
        MsClusterMember *m = &nv[*n];
        *m = (MsClusterMember){.state = state, .healthy = true, .arbiter = arbiter};
        if (!arbiter && primary && strcmp(host, primary) == 0)
            m->state = MS_MEMBER_STATE_PRIMARY;
        if (!(m->host = strdup(host)))
            return ms_error_oom(e);
        (*n)++;
    }
    return 0;
}

int ms_cluster_members_from_hello(const bson_t *hello, MsClusterMember **ret_members, size_t *ret_n,
                                  MsError *e) {
    bson_iter_t it;
    if (!find(hello, "setName", &it) || !BSON_ITER_HOLDS_UTF8(&it))
        return ms_error_set(e, EBADMSG, "the server is not a member of a replica set");
    const char *primary = NULL;
    if (find(hello, "primary", &it) && BSON_ITER_HOLDS_UTF8(&it))
        primary = bson_iter_utf8(&it, NULL);
    /* A one-host set whose only member is the writable primary may not say "primary". */
    bson_iter_t hosts, h;
    size_t n_hosts = 0;
    const char *only = NULL;
    if (find(hello, "hosts", &hosts) && BSON_ITER_HOLDS_ARRAY(&hosts) &&
        bson_iter_recurse(&hosts, &h))
        while (bson_iter_next(&h))
            if (BSON_ITER_HOLDS_UTF8(&h) && n_hosts++ == 0)
                only = bson_iter_utf8(&h, NULL);
    bool writable = (find(hello, "isWritablePrimary", &it) || find(hello, "ismaster", &it)) &&
                    bson_iter_as_bool(&it);
    if (!primary && writable && n_hosts == 1)
        primary = only;

    MsClusterMember *v = NULL;
    size_t n = 0;
    int r = add_hosts(hello, "hosts", MS_MEMBER_STATE_SECONDARY, false, primary, &v, &n, e);
    if (r >= 0)
        r = add_hosts(hello, "passives", MS_MEMBER_STATE_SECONDARY, false, primary, &v, &n, e);
    if (r >= 0)
        r = add_hosts(hello, "arbiters", MS_MEMBER_STATE_ARBITER, true, NULL, &v, &n, e);
    if (r < 0) {
        ms_cluster_members_free(v, n);
        return r;
    }
    *ret_members = v;
    *ret_n = n;
    return 0;
}

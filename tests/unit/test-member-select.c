/* Tests for member selection: replies shaped as real replica sets send them (replSetGetStatus
 * and replSetGetConfig of MongoDB 4.4-7.0: primary, secondaries, hidden, delayed, arbiter,
 * recovering), since FerretDB does not replicate and cannot produce them. */
#include <bson/bson.h>
#include <errno.h>
#include <stdlib.h>

#include "cluster/member-select.h"
#include "test.h"

/* A five-member set plus an arbiter, as replSetGetStatus reports it (fields trimmed to those
 * a real reply has and we read, plus a few we do not, kept to show the parser ignores them). */
static const char STATUS[] =
    "{\"set\":\"rs0\",\"date\":{\"$date\":\"2026-11-22T03:00:10Z\"},\"myState\":2,"
    "\"term\":{\"$numberLong\":\"7\"},\"members\":["
    "{\"_id\":0,\"name\":\"db1:27017\",\"health\":1,\"state\":1,\"stateStr\":\"PRIMARY\","
    "\"uptime\":86400,\"optime\":{\"ts\":{\"$timestamp\":{\"t\":1795316410,\"i\":1}},\"t\":7},"
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:10Z\"},\"syncSourceHost\":\"\"},"
    "{\"_id\":1,\"name\":\"db2:27017\",\"health\":1,\"state\":2,\"stateStr\":\"SECONDARY\","
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:08Z\"},\"syncSourceHost\":\"db1:27017\"},"
    "{\"_id\":2,\"name\":\"db3:27017\",\"health\":1,\"state\":2,\"stateStr\":\"SECONDARY\","
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:09Z\"},\"self\":true},"
    "{\"_id\":3,\"name\":\"backup1:27017\",\"health\":1,\"state\":2,\"stateStr\":\"SECONDARY\","
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:05Z\"}},"
    "{\"_id\":4,\"name\":\"delayed1:27017\",\"health\":1,\"state\":2,\"stateStr\":\"SECONDARY\","
    "\"optimeDate\":{\"$date\":\"2026-11-22T02:00:10Z\"}},"
    "{\"_id\":5,\"name\":\"arb1:27017\",\"health\":1,\"state\":7,\"stateStr\":\"ARBITER\"}],"
    "\"ok\":1}";

static const char CONFIG[] =
    "{\"config\":{\"_id\":\"rs0\",\"version\":12,\"term\":7,\"members\":["
    "{\"_id\":0,\"host\":\"db1:27017\",\"arbiterOnly\":false,\"hidden\":false,\"priority\":2,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"0\"},\"votes\":1},"
    "{\"_id\":1,\"host\":\"db2:27017\",\"arbiterOnly\":false,\"hidden\":false,\"priority\":1,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"0\"},\"votes\":1},"
    "{\"_id\":2,\"host\":\"db3:27017\",\"arbiterOnly\":false,\"hidden\":false,\"priority\":1,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"0\"},\"votes\":1},"
    "{\"_id\":3,\"host\":\"backup1:27017\",\"arbiterOnly\":false,\"hidden\":true,\"priority\":0,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"0\"},\"votes\":0},"
    "{\"_id\":4,\"host\":\"delayed1:27017\",\"arbiterOnly\":false,\"hidden\":true,\"priority\":0,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"3600\"},\"votes\":0},"
    "{\"_id\":5,\"host\":\"arb1:27017\",\"arbiterOnly\":true,\"hidden\":false,\"priority\":0,"
    "\"secondaryDelaySecs\":{\"$numberLong\":\"0\"},\"votes\":1}]},\"ok\":1}";

/* MongoDB 4.4 names the delay slaveDelay; a recovering member and one that is down. */
static const char STATUS_44[] =
    "{\"set\":\"rs1\",\"members\":["
    "{\"_id\":0,\"name\":\"a:27017\",\"health\":1,\"state\":1,"
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:10Z\"}},"
    "{\"_id\":1,\"name\":\"b:27017\",\"health\":1,\"state\":3,\"stateStr\":\"RECOVERING\","
    "\"optimeDate\":{\"$date\":\"2026-11-22T02:50:00Z\"}},"
    "{\"_id\":2,\"name\":\"c:27017\",\"health\":0,\"state\":8,\"stateStr\":\"(not "
    "reachable/healthy)\","
    "\"optimeDate\":{\"$date\":\"1970-01-01T00:00:00Z\"}},"
    "{\"_id\":3,\"name\":\"d:27017\",\"health\":1,\"state\":2,"
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:10Z\"}}],\"ok\":1}";

static const char CONFIG_44[] =
    "{\"config\":{\"_id\":\"rs1\",\"members\":["
    "{\"_id\":0,\"host\":\"a:27017\",\"hidden\":false,\"slaveDelay\":0},"
    "{\"_id\":1,\"host\":\"b:27017\",\"hidden\":true,\"slaveDelay\":0},"
    "{\"_id\":2,\"host\":\"c:27017\",\"hidden\":true,\"slaveDelay\":0},"
    "{\"_id\":3,\"host\":\"d:27017\",\"hidden\":false,\"slaveDelay\":1800}]},\"ok\":1}";

/* During an election: no primary. */
static const char STATUS_ELECTION[] =
    "{\"set\":\"rs0\",\"members\":["
    "{\"_id\":0,\"name\":\"db1:27017\",\"health\":0,\"state\":8},"
    "{\"_id\":1,\"name\":\"db2:27017\",\"health\":1,\"state\":2,"
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:08Z\"}},"
    "{\"_id\":2,\"name\":\"db3:27017\",\"health\":1,\"state\":2,"
    "\"optimeDate\":{\"$date\":\"2026-11-22T03:00:09Z\"}}],\"ok\":1}";

#define SEC 1000000ull

typedef struct Set {
    MsClusterMember *m;
    size_t n;
} Set;

static void set_done(Set *s) {
    ms_cluster_members_free(s->m, s->n);
}

static int load(const char *status_json, const char *config_json, Set *ret) {
    bson_error_t err;
    bson_t *status = bson_new_from_json((const uint8_t *) status_json, -1, &err);
    bson_t *config = bson_new_from_json((const uint8_t *) config_json, -1, &err);
    if (!status || !config) {
        fprintf(stderr, "# fixture does not parse: %s\n", err.message);
        bson_destroy(status);
        bson_destroy(config);
        return -EINVAL;
    }
    MsError e = MS_ERROR_INIT;
    int r = ms_cluster_members_parse(status, config, &ret->m, &ret->n, &e);
    bson_destroy(status);
    bson_destroy(config);
    return r;
}

static const char *host_at(const Set *s, const size_t *order, size_t i) {
    return s->m[order[i]].host;
}

static void parses_members_and_lag(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS, CONFIG, &s));
    ASSERT_EQ_INT(s.n, 6);
    ASSERT_STREQ(s.m[0].host, "db1:27017");
    ASSERT_EQ_INT(s.m[0].state, MS_MEMBER_STATE_PRIMARY);
    ASSERT_EQ_INT(s.m[0].lag_usec, 0);
    ASSERT_EQ_INT(s.m[1].lag_usec, 2 * SEC);
    ASSERT_EQ_INT(s.m[2].lag_usec, 1 * SEC);
    ASSERT(s.m[3].hidden && s.m[3].delay_usec == 0);
    ASSERT_EQ_INT(s.m[3].lag_usec, 5 * SEC);
    ASSERT(s.m[4].hidden && s.m[4].delay_usec == 3600 * SEC);
    ASSERT(s.m[5].arbiter);
}

static void auto_prefers_hidden_then_least_lag_then_primary(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS, CONFIG, &s));
    _cleanup_free_ size_t *order = NULL;
    size_t n = 0;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_AUTO, 0, &order, &n, &e));
    /* Not the delayed member, not the arbiter. */
    ASSERT_EQ_INT(n, 4);
    ASSERT_STREQ(host_at(&s, order, 0), "backup1:27017");
    ASSERT_STREQ(host_at(&s, order, 1), "db3:27017"); /* 1 s behind */
    ASSERT_STREQ(host_at(&s, order, 2), "db2:27017"); /* 2 s behind */
    ASSERT_STREQ(host_at(&s, order, 3), "db1:27017");
}

static void explicit_priorities(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS, CONFIG, &s));
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *hidden = NULL, *secondary = NULL, *primary = NULL;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_HIDDEN, 0, &hidden, &n, &e));
    ASSERT_EQ_INT(n, 1);
    ASSERT_STREQ(host_at(&s, hidden, 0), "backup1:27017");
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_SECONDARY, 0, &secondary, &n, &e));
    ASSERT_EQ_INT(n, 3);
    ASSERT_STREQ(host_at(&s, secondary, 0), "db3:27017"); /* least lag, hidden or not */
    ASSERT_STREQ(host_at(&s, secondary, 2), "backup1:27017");
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_PRIMARY, 0, &primary, &n, &e));
    ASSERT_EQ_INT(n, 1);
    ASSERT_STREQ(host_at(&s, primary, 0), "db1:27017");
}

static void lag_limit_excludes_lagging_secondaries(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS, CONFIG, &s));
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_AUTO, 3 * SEC, &order, &n, &e));
    /* backup1 (5 s behind) is out; the primary never lags. */
    ASSERT_EQ_INT(n, 3);
    ASSERT_STREQ(host_at(&s, order, 0), "db3:27017");
    ASSERT_STREQ(host_at(&s, order, 2), "db1:27017");
    ASSERT_STREQ(ms_cluster_member_unfit(&s.m[3], 3 * SEC), "lagging more than the limit");
}

static void old_field_names_recovering_and_down(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS_44, CONFIG_44, &s));
    ASSERT_EQ_INT(s.n, 4);
    ASSERT_EQ_INT(s.m[3].delay_usec, 1800 * SEC);        /* slaveDelay */
    ASSERT(ms_cluster_member_unfit(&s.m[1], 0) != NULL); /* recovering */
    ASSERT_STREQ(ms_cluster_member_unfit(&s.m[2], 0), "unreachable");
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_AUTO, 0, &order, &n, &e));
    ASSERT_EQ_INT(n, 1); /* only the primary is fit */
    ASSERT_STREQ(host_at(&s, order, 0), "a:27017");
    /* NodePriority=hidden has nobody: the message names every member and why. */
    _cleanup_free_ size_t *none = NULL;
    ASSERT_EQ_INT(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_HIDDEN, 0, &none, &n, &e), -ENODEV);
    ASSERT_CONTAINS(e.message, "b:27017: not serving data");
    ASSERT_CONTAINS(e.message, "c:27017: unreachable");
    ASSERT_CONTAINS(e.message, "d:27017: a delayed member");
    ASSERT_CONTAINS(e.message, "a:27017: excluded by NodePriority=");
}

static void election_lag_against_newest(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load(STATUS_ELECTION, CONFIG, &s));
    ASSERT_EQ_INT(s.n, 3); /* members of the configuration absent from the status are left out */
    ASSERT_EQ_INT(s.m[1].lag_usec, 1 * SEC);
    ASSERT_EQ_INT(s.m[2].lag_usec, 0);
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_AUTO, 0, &order, &n, &e));
    ASSERT_EQ_INT(n, 2);
    ASSERT_STREQ(host_at(&s, order, 0), "db3:27017");
    _cleanup_free_ size_t *primary = NULL;
    ASSERT_EQ_INT(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_PRIMARY, 0, &primary, &n, &e),
                  -ENODEV);
}

static void not_a_replica_set(void) {
    Set s = {0};
    ASSERT_EQ_INT(load(STATUS, "{\"ok\":0,\"errmsg\":\"not running with --replSet\"}", &s),
                  -EBADMSG);
}

static void ties_are_broken_by_host_name(void) {
    MsClusterMember m[] = {
        {.host = (char *) "z:1", .state = MS_MEMBER_STATE_SECONDARY, .healthy = true},
        {.host = (char *) "a:1", .state = MS_MEMBER_STATE_SECONDARY, .healthy = true},
    };
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_OK(ms_cluster_rank(m, 2, MS_NODE_PRIORITY_AUTO, 0, &order, &n, &e));
    ASSERT_EQ_INT(order[0], 1);
}

/* hello of a MongoDB 7.0 secondary (trimmed), and of FerretDB 1.24 started with
 * --repl-set-name (one host, no "primary" field). */
static const char HELLO_SECONDARY[] =
    "{\"topologyVersion\":{\"counter\":6},\"hosts\":[\"db1:27017\",\"db2:27017\",\"db3:27017\"],"
    "\"passives\":[\"backup1:27017\"],\"arbiters\":[\"arb1:27017\"],\"setName\":\"rs0\","
    "\"setVersion\":12,\"isWritablePrimary\":false,\"secondary\":true,"
    "\"primary\":\"db1:27017\",\"me\":\"db2:27017\",\"ok\":1}";
static const char HELLO_FERRETDB[] =
    "{\"isWritablePrimary\":true,\"setName\":\"rs0\",\"hosts\":[\"127.0.0.1:27999\"],"
    "\"maxBsonObjectSize\":16777216,\"maxWireVersion\":21,\"ok\":1}";

static int load_hello(const char *json, Set *ret) {
    bson_error_t err;
    bson_t *hello = bson_new_from_json((const uint8_t *) json, -1, &err);
    if (!hello)
        return -EINVAL;
    MsError e = MS_ERROR_INIT;
    int r = ms_cluster_members_from_hello(hello, &ret->m, &ret->n, &e);
    bson_destroy(hello);
    return r;
}

static void hello_describes_members(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load_hello(HELLO_SECONDARY, &s));
    ASSERT_EQ_INT(s.n, 5);
    ASSERT_STREQ(s.m[0].host, "db1:27017");
    ASSERT_EQ_INT(s.m[0].state, MS_MEMBER_STATE_PRIMARY);
    ASSERT_EQ_INT(s.m[1].state, MS_MEMBER_STATE_SECONDARY);
    ASSERT_STREQ(s.m[3].host, "backup1:27017");
    ASSERT_EQ_INT(s.m[3].state, MS_MEMBER_STATE_SECONDARY);
    ASSERT(s.m[4].arbiter);
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_OK(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_AUTO, 0, &order, &n, &e));
    /* Secondaries by host name (hello gives no lags), then the primary; no arbiter. */
    ASSERT_EQ_INT(n, 4);
    ASSERT_STREQ(host_at(&s, order, 0), "backup1:27017");
    ASSERT_STREQ(host_at(&s, order, 3), "db1:27017");
}

static void hello_of_a_one_host_set(void) {
    _cleanup_(set_done) Set s = {0};
    ASSERT_OK(load_hello(HELLO_FERRETDB, &s));
    ASSERT_EQ_INT(s.n, 1);
    ASSERT_EQ_INT(s.m[0].state, MS_MEMBER_STATE_PRIMARY);
    MsError e = MS_ERROR_INIT;
    size_t n = 0;
    _cleanup_free_ size_t *order = NULL;
    ASSERT_EQ_INT(ms_cluster_rank(s.m, s.n, MS_NODE_PRIORITY_SECONDARY, 0, &order, &n, &e),
                  -ENODEV);
    Set none = {0};
    ASSERT_EQ_INT(load_hello("{\"isWritablePrimary\":true,\"ok\":1}", &none), -EBADMSG);
}

MS_TEST_MAIN(TEST_CASE(parses_members_and_lag), TEST_CASE(hello_describes_members),
             TEST_CASE(hello_of_a_one_host_set),
             TEST_CASE(auto_prefers_hidden_then_least_lag_then_primary),
             TEST_CASE(explicit_priorities), TEST_CASE(lag_limit_excludes_lagging_secondaries),
             TEST_CASE(old_field_names_recovering_and_down), TEST_CASE(election_lag_against_newest),
             TEST_CASE(not_a_replica_set), TEST_CASE(ties_are_broken_by_host_name))

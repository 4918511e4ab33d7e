/* Sharded clusters (engine/cluster.h) without a server: a shard's connection string from the
 * source's and config.shards' host, shard maps, and what the agent reads from a mongos's
 * replies, held to replies recorded from MongoDB 6.0 and 7.0 (their documented shapes: hello
 * through a mongos says msg "isdbgrid"; getShardMap's map names the config server as
 * "configRS/host:port,..."). The rest, against three FerretDB instances standing for a config
 * server and two shards, is in tests/integration/test_sharded.py. */
#include <bson/bson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cluster.h"
#include "engine/mongo-client.h"
#include "test.h"

static void shard_uris(void) {
    struct {
        const char *source, *host, *want;
    } cases[] = {
        {"mongodb://backup@mongos1:27017,mongos2:27017/?authSource=admin&tls=true",
         "rs01/db1:27018,db2:27018",
         "mongodb://backup@db1:27018,db2:27018/?authSource=admin&tls=true&replicaSet=rs01"},
        /* the source's own topology options do not follow */
        {"mongodb://cfg1:27019/?replicaSet=cfgRS&directConnection=false&w=majority",
         "rs02/h:1", "mongodb://h:1/?w=majority&replicaSet=rs02"},
        {"mongodb://u@cfg:27019/admin", "rs/h:2", "mongodb://u@h:2/admin?replicaSet=rs"},
        /* a shard that is no replica set */
        {"mongodb://cfg:27019", "solo:27018", "mongodb://solo:27018/"},
        /* SRV implies TLS; the shards are plain host lists */
        {"mongodb+srv://u@cluster.example.net/?authSource=admin", "rs/a:1,b:2",
         "mongodb://u@a:1,b:2/?authSource=admin&tls=true&replicaSet=rs"},
        /* an "@" in the options is not a user */
        {"mongodb://cfg:1/?appName=x@y", "rs/h:3", "mongodb://h:3/?appName=x@y&replicaSet=rs"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        MsClusterShard s = {0};
        const char *slash = strchr(cases[k].host, '/');
        s.rs = slash ? strndup(cases[k].host, (size_t) (slash - cases[k].host)) : NULL;
        s.hosts = strdup(slash ? slash + 1 : cases[k].host);
        char *uri = NULL;
        MsError e = MS_ERROR_INIT;
        ASSERT_OK(ms_cluster_shard_uri(cases[k].source, &s, &uri, &e));
        ASSERT_STREQ(uri, cases[k].want);
        free(uri);
        free(s.rs);
        free(s.hosts);
    }
}

/* A host string from config.shards (or getShardMap) that could end the host part and add
 * options of its own is refused: the source's credentials are not sent there. An option list
 * that fills the buffer is refused, never written past it. */
static void hostile_shard_hosts(void) {
    const char *hostile[][2] = {
        {"rs", "h:1/?authMechanism=PLAIN&x="}, {"rs", "evil@h:1"},     {"rs", "h:1?tls=false"},
        {"rs&authMechanism=PLAIN", "h:1"},     {"rs", ""},             {"rs", "h:1 ,h2:2"},
        {NULL, "h:1/admin"},                    {"rs", "h:1#frag"},
    };
    for (size_t k = 0; k < sizeof(hostile) / sizeof(hostile[0]); k++) {
        MsClusterShard s = {.name = (char *) "shard01", .rs = (char *) hostile[k][0],
                            .hosts = (char *) hostile[k][1]};
        char *uri = NULL;
        MsError e = MS_ERROR_INIT;
        ASSERT(ms_cluster_shard_uri("mongodb://u@cfg:1/?authSource=admin", &s, &uri, &e) == -EINVAL);
        ASSERT(uri == NULL);
        ASSERT_CONTAINS(e.message, "refusing to connect there");
    }
    /* options of every length up to past the buffer: a clean refusal or a whole URI */
    for (size_t len = 4000; len < 4200; len += 7) {
        char *src = malloc(len + 64);
        ASSERT(src);
        int n = sprintf(src, "mongodb+srv://u@c.example.net/?appName=");
        memset(src + n, 'a', len);
        src[n + (int) len] = '\0';
        MsClusterShard s = {.name = (char *) "s", .rs = (char *) "rs", .hosts = (char *) "h:1"};
        char *uri = NULL;
        MsError e = MS_ERROR_INIT;
        int r = ms_cluster_shard_uri(src, &s, &uri, &e);
        ASSERT(r == 0 || r == -E2BIG);
        if (r == 0)
            ASSERT(strstr(uri, "tls=true&replicaSet=rs") != NULL);
        free(uri);
        free(src);
    }
}

/* What the store's scan and a cluster snapshot's removal take for a part: a policy may be named
 * "x.parts", so a first component never is a parts directory, and nothing deeper than a part. */
static void part_keys(void) {
    struct {
        const char *key;
        int want;
        size_t stem;
    } cases[] = {
        {"shop/shop-1.parts/shard01.manifest.json", 1, 11},
        {"shop/shop-1.parts/.#shard01.archive.zst.tmp", 1, 11},
        {"a/b/n.parts/config.archive.zst", 1, 5},
        {"shop.parts/shop.parts-1.manifest.json", 0, 0}, /* a policy named shop.parts */
        {"x.parts/y", 0, 0},
        {"/n.parts/x", 0, 0},
        {"shop/.parts/x", 0, 0},
        {"shop/n.parts/", 0, 0},
        {"shop/n.parts/sub/x", 0, 0},
        {"_chunks/x.parts/ab/abcdef", 0, 0},
        {"shop/n.partsx/y", 0, 0},
        {"shop/n.manifest.json", 0, 0},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t stem = 0;
        ASSERT_EQ_INT(ms_cluster_part_key(cases[k].key, &stem), cases[k].want);
        if (cases[k].want)
            ASSERT_EQ_INT((int) stem, (int) cases[k].stem);
    }
}

static void shard_maps(void) {
    MsShardMap m;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_shard_map_parse("shard01=alpha,shard02=beta", &m, &e));
    ASSERT(m.n == 2);
    ASSERT_STREQ(ms_shard_map_apply(&m, "shard02"), "beta");
    ASSERT_STREQ(ms_shard_map_apply(&m, "shard03"), "shard03"); /* unmapped: its own name */
    ms_shard_map_clear(&m);
    const char *bad[] = {"a", "=b", "a=", "a=b,,c=d", "a=x,a=y", "a=x,b=x"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        ms_error_clear(&e);
        ASSERT(ms_shard_map_parse(bad[k], &m, &e) == -EINVAL);
        ASSERT(e.message[0]);
    }
}

/* NULL on bad JSON: the callers' checks then fail. */
static bson_t *json(const char *text) {
    bson_error_t err;
    return bson_new_from_json((const uint8_t *) text, -1, &err);
}

static void mongos_replies(void) {
    /* hello through a mongos (6.0), and from a replica set member (7.0) */
    bson_t *mongos = json("{\"isWritablePrimary\": true, \"msg\": \"isdbgrid\", \"maxBsonObjectSize\": 16777216,"
                          " \"maxWireVersion\": 17, \"minWireVersion\": 0, \"ok\": 1.0}");
    bson_t *member = json("{\"topologyVersion\": {\"counter\": 6}, \"hosts\": [\"db1:27018\"],"
                          " \"setName\": \"rs01\", \"isWritablePrimary\": true, \"maxWireVersion\": 21,"
                          " \"ok\": 1.0}");
    ASSERT(mongos && member);
    ASSERT(ms_cluster_hello_is_mongos(mongos));
    ASSERT(!ms_cluster_hello_is_mongos(member));
    /* what makes a policy's source a cluster: a mongos, or a config server member, whose hello
     * carries "configsvr" (MongoDB 6.0/7.0 say 2); a shard member or a plain replica set not */
    bson_t *cfgsvr = json("{\"isWritablePrimary\": true, \"setName\": \"configRS\", \"configsvr\": 2,"
                          " \"hosts\": [\"cfg1:27019\"], \"ok\": 1.0}");
    ASSERT(cfgsvr);
    ASSERT_EQ_INT(ms_mongo_hello_cluster_role(mongos), 1);
    ASSERT_EQ_INT(ms_mongo_hello_cluster_role(cfgsvr), 2);
    ASSERT_EQ_INT(ms_mongo_hello_cluster_role(member), 0);
    bson_destroy(cfgsvr);
    bson_t *shard_map = json("{\"map\": {\"rs01\": \"rs01/db1:27018,db2:27018\","
                             " \"config\": \"configRS/cfg1:27019,cfg2:27019,cfg3:27019\"},"
                             " \"hosts\": {\"db1:27018\": \"rs01\"}, \"connStrings\": {}, \"ok\": 1.0}");
    ASSERT(shard_map && ms_cluster_config_host(shard_map));
    ASSERT_STREQ(ms_cluster_config_host(shard_map), "configRS/cfg1:27019,cfg2:27019,cfg3:27019");
    bson_t *none = json("{\"map\": {\"rs01\": \"rs01/db1:27018\"}, \"ok\": 1.0}");
    ASSERT(ms_cluster_config_host(none) == NULL);
    /* balancerStatus (6.0/7.0): mode "full" when on, "off" when an operator stopped it */
    bson_t *on = json("{\"mode\": \"full\", \"inBalancerRound\": false, \"numBalancerRounds\": 12, \"ok\": 1.0}");
    bson_t *off = json("{\"mode\": \"off\", \"inBalancerRound\": false, \"numBalancerRounds\": 3, \"ok\": 1.0}");
    bson_t *odd = json("{\"ok\": 0.0, \"errmsg\": \"no such command\"}");
    ASSERT(on && off && odd);
    ASSERT(ms_cluster_balancer_is_off(on) == 0);
    ASSERT(ms_cluster_balancer_is_off(off) == 1);
    ASSERT(ms_cluster_balancer_is_off(odd) == -1);
    bson_destroy(on);
    bson_destroy(off);
    bson_destroy(odd);
    bson_destroy(mongos);
    bson_destroy(member);
    bson_destroy(shard_map);
    bson_destroy(none);
}

MS_TEST_MAIN(TEST_CASE(shard_uris), TEST_CASE(hostile_shard_hosts), TEST_CASE(part_keys), TEST_CASE(shard_maps), TEST_CASE(mongos_replies))

/* Tests for namespace patterns: '*' matching, include/exclude precedence, renames with captures,
 * validation, splitting "db.coll", and what a filtered snapshot keeps: which databases it lists
 * and which oplog entries it captures. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/macro.h"
#include "engine/nsfilter.h"
#include "test.h"

/* Seconds a single match may take before it is considered runaway backtracking. */
#define MATCH_TIME_LIMIT_SEC 5
#define LONG_NS_LEN 64

typedef struct {
    const char *pattern, *ns;
    bool match;
} MatchCase;

static void match_star_patterns(void) {
    static const MatchCase cases[] = {
        {"shop.orders", "shop.orders", true},
        {"shop.orders", "shop.order", false},
        {"shop.orders", "shop.orderss", false},
        {"shop.orders", "shopXorders", false}, /* '.' is literal */
        {"shop.*", "shop.orders", true},
        {"shop.*", "shop.system.views", true},
        {"shop.*", "shop.", true}, /* '*' matches the empty run */
        {"shop.*", "shopping.orders", false},
        {"shop.*", "shop", false},
        {"shop.*", "other.shop.orders", false},
        {"*.orders", "shop.orders", true},
        {"*.orders", "shop.orders2", false},
        {"*.orders", "orders", false},
        {"*", "anything.at_all", true},
        {"*", "", true},
        {"**", "a.b", true},
        {"*.*", "a.b", true},
        {"*.*", "ab", false},
        {"db*.coll*", "db1.coll_a", true},
        {"db*.coll*", "db1.col", false},
        {"*a*b", "xaybzb", true}, /* needs backtracking past the first 'b' */
        {"*a*b", "xaybzc", false},
        {"a*a", "a", false},
        {"a*a", "aa", true},
        {"shop.ord?rs", "shop.orders", false}, /* only '*' is special */
        {"shop.ord[e]rs", "shop.orders", false},
        {"shop.ord?rs", "shop.ord?rs", true},
        {"", "", true},
        {"", "a.b", false},
        {"caf\xc3\xa9.*", "caf\xc3\xa9.men\xc3\xbc", true},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        bool got = ms_ns_match(cases[i].pattern, cases[i].ns);
        if (got != cases[i].match)
            fprintf(stderr, "# ms_ns_match('%s', '%s') = %d, expected %d\n", cases[i].pattern,
                    cases[i].ns, got, cases[i].match);
        ASSERT(got == cases[i].match);
    }
}

static void add_all(char ***list, size_t *n, const char *const *patterns) {
    for (; *patterns; patterns++)
        if (ms_ns_filter_add(list, n, *patterns) < 0)
            abort();
}

static void empty_filter_selects_everything(void) {
    MsNsFilter f = {0};
    ASSERT(ms_ns_filter_selects(&f, "shop.orders"));
    ASSERT(ms_ns_filter_selects(&f, "admin.system.users"));
    _cleanup_free_ char *same = ms_ns_filter_rename(&f, "shop.orders");
    ASSERT_STREQ(same, "shop.orders");
}

static void include_exclude_precedence(void) {
    MsNsFilter f = {0};
    add_all(&f.include, &f.n_include, (const char *const[]){"shop.*", "crm.customers", NULL});
    add_all(&f.exclude, &f.n_exclude,
            (const char *const[]){"shop.tmp_*", "crm.customers", "*.sessions", NULL});
    bool orders = ms_ns_filter_selects(&f, "shop.orders");
    bool tmp = ms_ns_filter_selects(&f, "shop.tmp_1");
    bool tmp_prefix = ms_ns_filter_selects(&f, "shop.tmp");
    bool crm = ms_ns_filter_selects(&f, "crm.customers"); /* included and excluded: excluded */
    bool sessions = ms_ns_filter_selects(&f, "shop.sessions");
    bool other = ms_ns_filter_selects(&f, "other.orders");
    ms_ns_filter_clear(&f);
    ASSERT(orders);
    ASSERT(!tmp);
    ASSERT(tmp_prefix);
    ASSERT(!crm);
    ASSERT(!sessions);
    ASSERT(!other);
    ASSERT(f.include == NULL && f.n_include == 0 && f.exclude == NULL && f.n_exclude == 0);
}

static void exclude_only(void) {
    MsNsFilter f = {0};
    add_all(&f.exclude, &f.n_exclude, (const char *const[]){"admin.*", "config.*", NULL});
    bool shop = ms_ns_filter_selects(&f, "shop.orders");
    bool admin = ms_ns_filter_selects(&f, "admin.system.users");
    bool config = ms_ns_filter_selects(&f, "config.system.sessions");
    bool adminish = ms_ns_filter_selects(&f, "administration.x");
    ms_ns_filter_clear(&f);
    ASSERT(shop);
    ASSERT(!admin);
    ASSERT(!config);
    ASSERT(adminish);
}

typedef struct {
    const char *from, *to, *ns, *expected;
} RenameCase;

static void rename_with_captures(void) {
    static const RenameCase cases[] = {
        {"shop.*", "shop_copy.*", "shop.orders", "shop_copy.orders"},
        {"shop.*", "shop_copy.*", "shop.system.views", "shop_copy.system.views"},
        {"shop.*", "shop_copy.*", "shop.", "shop_copy."},
        {"shop.*", "shop_copy.*", "other.orders", "other.orders"}, /* no match: unchanged */
        {"*.orders", "archive.orders_*", "shop.orders", "archive.orders_shop"},
        {"*.orders", "archive.orders_*", "shop.orders_old", "shop.orders_old"},
        /* Two stars, each bound to its own run, leftmost-shortest first. */
        {"*.*", "*_bak.*", "shop.orders", "shop_bak.orders"},
        {"*.*", "*_bak.*", "shop.orders.2024", "shop_bak.orders.2024"},
        {"db*.coll*", "new*.c*", "db1.coll_a", "new1.c_a"},
        {"db*.coll*", "new*.c*", "db.coll", "new.c"},
        /* Captures longer than the literal part of the target. */
        {"*.*", "a_very_long_database_prefix_*.and_a_longer_collection_prefix_*", "x.y",
         "a_very_long_database_prefix_x.and_a_longer_collection_prefix_y"},
        {"caf\xc3\xa9.*", "coffee.*", "caf\xc3\xa9.men\xc3\xbc", "coffee.men\xc3\xbc"},
        {"shop.orders", "shop.orders_v2", "shop.orders", "shop.orders_v2"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        MsNsFilter f = {0};
        MsError e = MS_ERROR_INIT;
        ASSERT_OK(ms_ns_filter_add(&f.rename_from, &f.n_rename, cases[i].from));
        f.n_rename = 0;
        ASSERT_OK(ms_ns_filter_add(&f.rename_to, &f.n_rename, cases[i].to));
        int v = ms_ns_filter_validate(&f, &e);
        char *got = ms_ns_filter_rename(&f, cases[i].ns);
        ms_ns_filter_clear(&f);
        bool ok = v == 0 && got && strcmp(got, cases[i].expected) == 0;
        if (!ok)
            fprintf(stderr,
                    "# rename '%s' -> '%s' of '%s': got '%s' (validate %d), expected '%s'\n",
                    cases[i].from, cases[i].to, cases[i].ns, got ? got : "(null)", v,
                    cases[i].expected);
        free(got);
        ASSERT(ok);
    }
}

/* Renames are tried in order; the first match wins. */
static void first_matching_rename_wins(void) {
    MsNsFilter f = {0};
    MsError e = MS_ERROR_INIT;
    add_all(&f.rename_from, &f.n_rename, (const char *const[]){"shop.orders", "shop.*", NULL});
    f.n_rename = 0;
    add_all(&f.rename_to, &f.n_rename, (const char *const[]){"special.orders", "copy.*", NULL});
    int v = ms_ns_filter_validate(&f, &e);
    _cleanup_free_ char *a = ms_ns_filter_rename(&f, "shop.orders");
    _cleanup_free_ char *b = ms_ns_filter_rename(&f, "shop.items");
    _cleanup_free_ char *c = ms_ns_filter_rename(&f, "crm.items");
    ms_ns_filter_clear(&f);
    ASSERT_OK(v);
    ASSERT_STREQ(a, "special.orders");
    ASSERT_STREQ(b, "copy.items");
    ASSERT_STREQ(c, "crm.items");
}

static int validate_one(const char *list, const char *a, const char *b, MsError *e) {
    MsNsFilter f = {0};
    if (strcmp(list, "include") == 0)
        ms_ns_filter_add(&f.include, &f.n_include, a);
    else if (strcmp(list, "exclude") == 0)
        ms_ns_filter_add(&f.exclude, &f.n_exclude, a);
    else {
        ms_ns_filter_add(&f.rename_from, &f.n_rename, a);
        f.n_rename = 0;
        ms_ns_filter_add(&f.rename_to, &f.n_rename, b);
    }
    int r = ms_ns_filter_validate(&f, e);
    ms_ns_filter_clear(&f);
    return r;
}

static void validate_accepts_good_patterns(void) {
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(validate_one("include", "shop.*", NULL, &e));
    ASSERT_OK(validate_one("exclude", "*.tmp", NULL, &e));
    ASSERT_OK(validate_one("rename", "shop.*", "copy.*", &e));
    ASSERT_OK(validate_one("rename", "*.*", "*_bak.*", &e));
    ASSERT_OK(validate_one("rename", "a.b", "c.d", &e));
    ASSERT_OK(validate_one("include", "*.*.*.*.*.*.*.*", NULL, &e)); /* 8 stars: the maximum */
    ASSERT(!ms_error_is_set(&e));
}

static void validate_rejects_bad_patterns(void) {
    MsError e = MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("include", "shop", NULL, &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop' has no '.'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("exclude", "*", NULL, &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "has no '.'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("rename", "shop", "copy.x", &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop' has no '.'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("rename", "shop.*", "copy*", &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "'copy*' has no '.'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("rename", "shop.*", "copy.orders", &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "same number of '*'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("rename", "shop.orders", "copy.*", &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "'shop.orders' -> 'copy.*'");
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("rename", "*.*", "*.x*y*", &e), -EINVAL);
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(validate_one("include", "*.*.*.*.*.*.*.*.*", NULL, &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "more than 8 '*'");
}

static void split_and_join(void) {
    char *db = NULL, *coll = NULL;
    ASSERT_OK(ms_ns_split("shop.orders", &db, &coll));
    bool ok = strcmp(db, "shop") == 0 && strcmp(coll, "orders") == 0;
    free(db);
    free(coll);
    ASSERT(ok);
    /* At the first '.': collections may contain dots, databases may not. */
    ASSERT_OK(ms_ns_split("shop.system.views", &db, &coll));
    ok = strcmp(db, "shop") == 0 && strcmp(coll, "system.views") == 0;
    free(db);
    free(coll);
    ASSERT(ok);
    db = coll = NULL;
    ASSERT_EQ_INT(ms_ns_split("nodot", &db, &coll), -EINVAL);
    ASSERT(db == NULL && coll == NULL);
    ASSERT_EQ_INT(ms_ns_split("", &db, &coll), -EINVAL);
    _cleanup_free_ char *j = ms_ns_join("shop", "system.views");
    ASSERT_STREQ(j, "shop.system.views");
    ASSERT_OK(ms_ns_split(j, &db, &coll));
    _cleanup_free_ char *j2 = ms_ns_join(db, coll);
    free(db);
    free(coll);
    ASSERT_STREQ(j2, j);
}

static void slow_match(void) {
    char ns[LONG_NS_LEN + 1];
    memset(ns, 'a', LONG_NS_LEN);
    ns[1] = '.';
    ns[LONG_NS_LEN] = '\0';
    /* Valid (8 stars, has a '.') and does not match: every split is explored. */
    ASSERT(!ms_ns_match("*a*a*a*a*a*a*a*b", ns));
}

/* Regression (performance, src/engine/nsfilter.c, glob_match): the comment promises an iterative glob
 * with backtracking to the last '*', but the code recurses over every binding of every '*',
 * so a valid pattern with many '*' is O(len^stars): "*a*a*a*a*a*a*a*b" against a 64-byte
 * namespace takes tens of seconds (about 6 s at 50 bytes), and include/exclude is evaluated
 * for every oplog entry replayed. ms_ns_match needs no captures, so a linear algorithm fits. */
static void match_is_polynomial_in_stars(void) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        alarm(MATCH_TIME_LIMIT_SEC);
        slow_match();
        _exit(ms_test_failures ? 1 : 0);
    }
    int status = 0;
    ASSERT(waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status))
        fprintf(stderr, "# matching a %d-byte namespace took over %d s (signal %d)\n", LONG_NS_LEN,
                MATCH_TIME_LIMIT_SEC, WTERMSIG(status));
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- validation of the stricter forms (shared by snapshot and restore) ---- */

static void validate_rejects_malformed_and_forbidden(void) {
    static const struct {
        const char *pattern, *message;
    } cases[] = {
        {"", "namespace pattern '' is empty"},
        {".orders", "'.orders' has no database before the '.'"},
        {".*", "'.*' has no database before the '.'"},
        {"shop.", "'shop.' has no collection after the '.'"},
        {"*.", "'*.' has no collection after the '.'"},
        {"a/b.c", "'a/b.c': a database name cannot contain '/'"},
        {"a\\b.c", "a database name cannot contain '\\'"},
        {"a\"b.c", "a database name cannot contain '\"'"},
        {"sh$p.*", "'sh$p.*': a database name cannot contain '$'"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        const char *lists[] = {"include", "exclude"};
        for (size_t l = 0; l < ELEMENTSOF(lists); l++) {
            MsError e = MS_ERROR_INIT;
            int r = validate_one(lists[l], cases[i].pattern, NULL, &e);
            if (r != -EINVAL || !strstr(e.message, cases[i].message))
                fprintf(stderr, "# %s '%s': %d '%s'\n", lists[l], cases[i].pattern, r, e.message);
            ASSERT_EQ_INT(r, -EINVAL);
            ASSERT_CONTAINS(e.message, cases[i].message);
        }
    }
    /* Only the database part is held to database-name rules: collections may hold these. */
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(validate_one("include", "shop.a/b", NULL, &e));
    ASSERT_OK(validate_one("include", "shop.\"quoted\" name", NULL, &e));
    ASSERT_OK(validate_one("include", "shop.a.", NULL, &e)); /* the collection is "a." */
    ASSERT_OK(validate_one("rename", "shop.*", "copy.*", &e));
    ASSERT_EQ_INT(validate_one("rename", "shop.*", "co$py.*", &e), -EINVAL);
    ASSERT_CONTAINS(e.message, "'co$py.*'");
}

/* ---- which databases a filtered snapshot lists ---- */

typedef struct {
    const char *include[3], *exclude[3];
    const char *db;
    bool could;
} DbCase;

static void filter_from(MsNsFilter *f, const char *const include[3], const char *const exclude[3]) {
    *f = (MsNsFilter){0};
    for (size_t i = 0; i < 3 && include[i]; i++)
        if (ms_ns_filter_add(&f->include, &f->n_include, include[i]) < 0)
            abort();
    for (size_t i = 0; i < 3 && exclude[i]; i++)
        if (ms_ns_filter_add(&f->exclude, &f->n_exclude, exclude[i]) < 0)
            abort();
}

static void could_select_db_cases(void) {
    static const DbCase cases[] = {
        {{NULL}, {NULL}, "anything", true}, /* no filter: everything */
        {{"app.*"}, {NULL}, "app", true},
        {{"app.*"}, {NULL}, "apple", false},
        {{"app.*"}, {NULL}, "ap", false},
        {{"app.*"}, {NULL}, "shop", false},
        {{"app.users"}, {NULL}, "app", true},
        {{"app.users"}, {NULL}, "app2", false},
        {{"*.orders"}, {NULL}, "shop", true},
        {{"sh*.x"}, {NULL}, "shop", true},
        {{"sh*.x"}, {NULL}, "crm", false},
        /* "sh*p.x" matches "shoe.p.x" (collection "p.x"): the database shoe can hold a match. */
        {{"sh*p.x"}, {NULL}, "shoe", true},
        {{"app.*", "crm.customers"}, {NULL}, "crm", true},
        {{"app.*", "crm.customers"}, {NULL}, "config", false},
        /* Excludes rule a database out only when they plainly cover all of it. */
        {{"shop.*"}, {"shop.*"}, "shop", false},
        {{NULL}, {"shop.*"}, "shop", false},
        {{NULL}, {"shop.*"}, "shopping", true},
        {{NULL}, {"*.*"}, "shop", false},
        {{NULL}, {"sh*.*"}, "shop", false},
        {{NULL}, {"sh*.*"}, "crm", true},
        {{NULL}, {"shop.tmp*"}, "shop", true},
        {{NULL}, {"*.tmp"}, "shop", true},
        {{"shop.*"}, {"shop.tmp_*", "*.sessions"}, "shop", true},
        {{"*.*"}, {"admin.*", "config.*"}, "admin", false},
        {{"*.*"}, {"admin.*", "config.*"}, "app", true},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        MsNsFilter f;
        filter_from(&f, cases[i].include, cases[i].exclude);
        bool got = ms_ns_filter_could_select_db(&f, cases[i].db);
        ms_ns_filter_clear(&f);
        if (got != cases[i].could)
            fprintf(stderr, "# case %zu: could_select_db('%s') = %d, expected %d\n", i,
                    cases[i].db, got, cases[i].could);
        ASSERT(got == cases[i].could);
    }
}

/* Soundness: whenever a namespace of db is selected, db must not be skipped. Every pattern
 * built from a small alphabet is tried against every namespace built from it. */
static void could_select_db_never_hides_a_match(void) {
    static const char *const patterns[] = {
        "a.*", "ab.*", "*.b", "a*.b", "*a.*", "a.b*", "*b*.*", "a*b.*", "*.*", "ab.b", "b.a.b",
        "a*.a*", "*.a.*", "a.*.b", "*a*.*b*", "b*.*", "ba*a.*",
    };
    static const char *const dbs[] = {"a", "b", "ab", "ba", "aa", "bab", "aba"};
    static const char *const colls[] = {"a", "b", "ab", "a.b", "b.a", "aa.b", "bab"};
    for (size_t pi = 0; pi < ELEMENTSOF(patterns); pi++)
        for (size_t xi = 0; xi <= ELEMENTSOF(patterns); xi++) {
            MsNsFilter f = {0};
            ASSERT_OK(ms_ns_filter_add(&f.include, &f.n_include, patterns[pi]));
            if (xi < ELEMENTSOF(patterns))
                ASSERT_OK(ms_ns_filter_add(&f.exclude, &f.n_exclude, patterns[xi]));
            bool ok = true;
            for (size_t d = 0; d < ELEMENTSOF(dbs) && ok; d++) {
                bool could = ms_ns_filter_could_select_db(&f, dbs[d]);
                bool any = false;
                for (size_t c = 0; c < ELEMENTSOF(colls); c++) {
                    _cleanup_free_ char *ns = ms_ns_join(dbs[d], colls[c]);
                    any |= ms_ns_filter_selects(&f, ns);
                }
                if (any && !could) {
                    fprintf(stderr, "# include '%s' exclude '%s': db '%s' has a match but is "
                                    "skipped\n",
                            patterns[pi], xi < ELEMENTSOF(patterns) ? patterns[xi] : "-", dbs[d]);
                    ok = false;
                }
            }
            ms_ns_filter_clear(&f);
            ASSERT(ok);
        }
}

/* ---- which oplog entries a filtered snapshot keeps ---- */

static bson_t *crud(const char *op, const char *ns, int id) {
    return BCON_NEW("ts", BCON_TIMESTAMP(100, 1), "t", BCON_INT64(1), "op", BCON_UTF8(op), "ns",
                    BCON_UTF8(ns), "o", "{", "_id", BCON_INT32(id), "}");
}

static int verdict_of(const MsNsFilter *f, unsigned flags, const bson_t *entry) {
    MsError e = MS_ERROR_INIT;
    bson_t rewritten;
    int r = ms_ns_filter_oplog_entry(f, flags, entry, &rewritten, &e);
    if (r == MS_NS_OPLOG_REWRITTEN)
        bson_destroy(&rewritten);
    return r;
}

static int verdict_for(const char *include, const char *exclude, unsigned flags, bson_t *entry) {
    MsNsFilter f = {0};
    if (include)
        ms_ns_filter_add(&f.include, &f.n_include, include);
    if (exclude)
        ms_ns_filter_add(&f.exclude, &f.n_exclude, exclude);
    int r = verdict_of(&f, flags, entry);
    ms_ns_filter_clear(&f);
    bson_destroy(entry);
    return r;
}

static void oplog_crud_by_namespace(void) {
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, crud("i", "shop.orders", 1)), MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, crud("u", "shop.orders", 1)), MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, crud("d", "shop.orders", 1)), MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, crud("i", "crm.orders", 1)), MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("shop.*", "shop.tmp", 0, crud("i", "shop.tmp", 1)),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for(NULL, "shop.tmp", 0, crud("i", "crm.tmp", 1)), MS_NS_OPLOG_KEEP);
    /* Databases a snapshot never dumps, whatever the patterns say. */
    ASSERT_EQ_INT(verdict_for("*.*", NULL, 0, crud("i", "config.transactions", 1)),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("*.*", NULL, 0, crud("i", "local.x", 1)), MS_NS_OPLOG_DROP);
    /* A cluster snapshot's config part: the config data's routing changes by the patterns,
     * the rest of the config database and local still never. */
    ASSERT_EQ_INT(verdict_for("config.chunks", NULL, 0, crud("u", "config.chunks", 1)),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("config.chunks", NULL, MS_NS_OPLOG_KEEP_CONFIG,
                              crud("u", "config.chunks", 1)),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("config.chunks", NULL, MS_NS_OPLOG_KEEP_CONFIG,
                              crud("i", "config.transactions", 1)),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("*.*", NULL, MS_NS_OPLOG_KEEP_CONFIG, crud("i", "local.x", 1)),
                  MS_NS_OPLOG_DROP);
    /* A time-series collection's buckets belong to it. */
    ASSERT_EQ_INT(verdict_for("iot.weather", NULL, 0, crud("i", "iot.system.buckets.weather", 1)),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("iot.other", NULL, 0, crud("i", "iot.system.buckets.weather", 1)),
                  MS_NS_OPLOG_DROP);
    /* Users and roles follow --include-users, not the patterns. */
    ASSERT_EQ_INT(verdict_for("app.*", NULL, MS_NS_OPLOG_KEEP_USERS,
                              crud("i", "admin.system.users", 1)),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("app.*", NULL, MS_NS_OPLOG_KEEP_USERS,
                              crud("u", "admin.system.roles", 1)),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("app.*", NULL, 0, crud("i", "admin.system.users", 1)),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("app.*", NULL, MS_NS_OPLOG_KEEP_USERS,
                              crud("i", "admin.other", 1)),
                  MS_NS_OPLOG_DROP);
    /* No-ops and entries that name no namespace. */
    bson_t *noop = BCON_NEW("ts", BCON_TIMESTAMP(100, 1), "op", BCON_UTF8("n"), "ns",
                            BCON_UTF8("shop.orders"), "o", "{", "msg", BCON_UTF8("x"), "}");
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, noop), MS_NS_OPLOG_DROP);
    bson_t *periodic = BCON_NEW("op", BCON_UTF8("n"), "ns", BCON_UTF8(""), "o", "{", "}");
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, periodic), MS_NS_OPLOG_DROP);
    bson_t *no_ns = BCON_NEW("op", BCON_UTF8("i"), "o", "{", "}");
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, no_ns), MS_NS_OPLOG_DROP);
}

static bson_t *command(const char *ns, bson_t *o) {
    bson_t *entry = BCON_NEW("ts", BCON_TIMESTAMP(100, 2), "op", BCON_UTF8("c"), "ns",
                             BCON_UTF8(ns));
    BSON_APPEND_DOCUMENT(entry, "o", o);
    BSON_APPEND_INT64(entry, "t", 1);
    bson_destroy(o);
    return entry;
}

static void oplog_commands_by_collection(void) {
    const char *collection_cmds[] = {"create", "drop", "collMod", "createIndexes", "dropIndexes",
                                     "commitIndexBuild", "emptycapped"};
    for (size_t i = 0; i < ELEMENTSOF(collection_cmds); i++) {
        const char *c = collection_cmds[i];
        ASSERT_EQ_INT(verdict_for("shop.orders", NULL, 0,
                                  command("shop.$cmd", BCON_NEW(c, BCON_UTF8("orders")))),
                      MS_NS_OPLOG_KEEP);
        ASSERT_EQ_INT(verdict_for("shop.orders", NULL, 0,
                                  command("shop.$cmd", BCON_NEW(c, BCON_UTF8("items")))),
                      MS_NS_OPLOG_DROP);
        ASSERT_EQ_INT(verdict_for("shop.*", "shop.tmp", 0,
                                  command("shop.$cmd", BCON_NEW(c, BCON_UTF8("tmp")))),
                      MS_NS_OPLOG_DROP);
    }
    /* A view by its own namespace, not its source's. */
    ASSERT_EQ_INT(verdict_for("shop.orders", NULL, 0,
                              command("shop.$cmd", BCON_NEW("create", BCON_UTF8("v"), "viewOn",
                                                            BCON_UTF8("orders")))),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("shop.v", NULL, 0,
                              command("shop.$cmd", BCON_NEW("create", BCON_UTF8("v"), "viewOn",
                                                            BCON_UTF8("orders")))),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("iot.weather", NULL, 0,
                              command("iot.$cmd", BCON_NEW("drop",
                                                           BCON_UTF8("system.buckets.weather")))),
                  MS_NS_OPLOG_KEEP);

    /* renameCollection: into or out of the selection is kept, elsewhere is not. */
#define RENAME(from, to)                                                                           \
    command("admin.$cmd", BCON_NEW("renameCollection", BCON_UTF8(from), "to", BCON_UTF8(to),      \
                                   "stayTemp", BCON_BOOL(false)))
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, RENAME("shop.a", "archive.a")), MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, RENAME("tmp.a", "shop.a")), MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("shop.*", NULL, 0, RENAME("tmp.a", "tmp.b")), MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("shop.*", "shop.tmp*", 0, RENAME("shop.tmp1", "shop.tmp2")),
                  MS_NS_OPLOG_DROP);
#undef RENAME

    /* Database-level commands: kept when the database can hold selected collections. */
    ASSERT_EQ_INT(verdict_for("shop.orders", NULL, 0,
                              command("shop.$cmd", BCON_NEW("dropDatabase", BCON_INT32(1)))),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("*.orders", NULL, 0,
                              command("shop.$cmd", BCON_NEW("dropDatabase", BCON_INT32(1)))),
                  MS_NS_OPLOG_KEEP);
    ASSERT_EQ_INT(verdict_for("crm.*", NULL, 0,
                              command("shop.$cmd", BCON_NEW("dropDatabase", BCON_INT32(1)))),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for(NULL, "shop.*", 0,
                              command("shop.$cmd", BCON_NEW("dropDatabase", BCON_INT32(1)))),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("*.*", NULL, 0,
                              command("config.$cmd", BCON_NEW("dropDatabase", BCON_INT32(1)))),
                  MS_NS_OPLOG_DROP);
    ASSERT_EQ_INT(verdict_for("app.*", NULL, 0,
                              command("admin.$cmd", BCON_NEW("commitTransaction", BCON_INT32(1)))),
                  MS_NS_OPLOG_DROP);
}

static bson_t *apply_ops(const char *ns, bson_t **ops, size_t n) {
    bson_t *o = bson_new(), arr;
    BSON_APPEND_ARRAY_BEGIN(o, "applyOps", &arr);
    for (size_t i = 0; i < n; i++) {
        char key[24];
        const char *k;
        bson_uint32_to_string((uint32_t) i, &k, key, sizeof(key));
        BSON_APPEND_DOCUMENT(&arr, k, ops[i]);
        bson_destroy(ops[i]);
    }
    bson_append_array_end(o, &arr);
    BSON_APPEND_BOOL(o, "partialTxn", false);
    BSON_APPEND_INT32(o, "count", (int32_t) n);
    bson_t *entry = BCON_NEW("lsid", "{", "id", BCON_INT32(7), "}", "ts", BCON_TIMESTAMP(100, 3),
                             "op", BCON_UTF8("c"), "ns", BCON_UTF8(ns));
    BSON_APPEND_DOCUMENT(entry, "o", o);
    BSON_APPEND_INT64(entry, "txnNumber", 5);
    bson_destroy(o);
    return entry;
}

/* The namespaces of an applyOps' inner operations, in order, joined with ' '. */
static void inner_namespaces(const bson_t *entry, char *buf, size_t size) {
    bson_iter_t it, ops;
    buf[0] = '\0';
    if (!bson_iter_init(&it, entry) || !bson_iter_find_descendant(&it, "o.applyOps", &ops) ||
        !bson_iter_recurse(&ops, &ops))
        return;
    unsigned expected_key = 0;
    while (bson_iter_next(&ops)) {
        char key[24];
        snprintf(key, sizeof(key), "%u", expected_key++);
        if (strcmp(bson_iter_key(&ops), key) != 0)
            snprintf(buf + strlen(buf), size - strlen(buf), "<key %s>", bson_iter_key(&ops));
        bson_iter_t ns;
        if (bson_iter_recurse(&ops, &ns) && bson_iter_find(&ns, "ns"))
            snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? " " : "",
                     bson_iter_utf8(&ns, NULL));
    }
}

static void oplog_apply_ops_trimmed(void) {
    MsNsFilter f = {0};
    ASSERT_OK(ms_ns_filter_add(&f.include, &f.n_include, "shop.*"));
    MsError e = MS_ERROR_INIT;

    bson_t *mixed = apply_ops("admin.$cmd",
                              (bson_t *[]){crud("i", "shop.orders", 1), crud("i", "crm.people", 2),
                                           command("shop.$cmd", BCON_NEW("create", BCON_UTF8("x"))),
                                           crud("d", "crm.people", 3), crud("u", "shop.items", 4)},
                              5);
    bson_t out;
    int r = ms_ns_filter_oplog_entry(&f, 0, mixed, &out, &e);
    ASSERT_EQ_INT(r, MS_NS_OPLOG_REWRITTEN);
    char names[256];
    inner_namespaces(&out, names, sizeof(names));
    /* Every other field is kept, in its place. */
    char *json = bson_as_canonical_extended_json(&out, NULL);
    bson_iter_t it;
    bool count_kept = bson_iter_init(&it, &out) && bson_iter_find_descendant(&it, "o.count", &it) &&
                      bson_iter_int32(&it) == 5;
    const char *keys_in_order[] = {"lsid", "ts", "op", "ns", "o", "txnNumber"};
    bool order_ok = bson_iter_init(&it, &out);
    for (size_t i = 0; i < ELEMENTSOF(keys_in_order) && order_ok; i++)
        order_ok = bson_iter_next(&it) && strcmp(bson_iter_key(&it), keys_in_order[i]) == 0;
    order_ok = order_ok && !bson_iter_next(&it);
    bson_destroy(&out);
    bson_destroy(mixed);
    bool partial_kept = json && strstr(json, "\"partialTxn\" : false");
    bson_free(json);
    ASSERT_STREQ(names, "shop.orders shop.$cmd shop.items");
    ASSERT(count_kept);
    ASSERT(partial_kept);
    ASSERT(order_ok);

    bson_t *all = apply_ops("admin.$cmd",
                            (bson_t *[]){crud("i", "shop.a", 1), crud("i", "shop.b", 2)}, 2);
    ASSERT_EQ_INT(verdict_of(&f, 0, all), MS_NS_OPLOG_KEEP);
    bson_destroy(all);
    bson_t *none = apply_ops("admin.$cmd",
                             (bson_t *[]){crud("i", "crm.a", 1), crud("i", "local.b", 2)}, 2);
    ASSERT_EQ_INT(verdict_of(&f, 0, none), MS_NS_OPLOG_DROP);
    bson_destroy(none);
    bson_t *empty = apply_ops("admin.$cmd", NULL, 0);
    ASSERT_EQ_INT(verdict_of(&f, 0, empty), MS_NS_OPLOG_DROP);
    bson_destroy(empty);

    /* Nested: the inner applyOps is trimmed too. */
    bson_t *inner = apply_ops("admin.$cmd",
                              (bson_t *[]){crud("i", "crm.a", 1), crud("i", "shop.c", 2)}, 2);
    bson_t *outer = apply_ops("admin.$cmd", (bson_t *[]){inner, crud("i", "crm.z", 3)}, 2);
    r = ms_ns_filter_oplog_entry(&f, 0, outer, &out, &e);
    bson_destroy(outer);
    ASSERT_EQ_INT(r, MS_NS_OPLOG_REWRITTEN);
    bson_iter_t ops, first;
    bool nested_ok = bson_iter_init(&it, &out) &&
                     bson_iter_find_descendant(&it, "o.applyOps.0", &first) &&
                     bson_iter_init(&it, &out) &&
                     bson_iter_find_descendant(&it, "o.applyOps", &ops) &&
                     bson_iter_recurse(&ops, &ops) && bson_iter_next(&ops) &&
                     !bson_iter_next(&ops); /* crm.z is gone */
    names[0] = '\0';
    if (nested_ok && BSON_ITER_HOLDS_DOCUMENT(&first)) {
        bson_t inner_out;
        const uint8_t *data;
        uint32_t len;
        bson_iter_document(&first, &len, &data);
        if (bson_init_static(&inner_out, data, len))
            inner_namespaces(&inner_out, names, sizeof(names));
    }
    bson_destroy(&out);
    ASSERT(nested_ok);
    ASSERT_STREQ(names, "shop.c");
    ms_ns_filter_clear(&f);
}

static void oplog_apply_ops_too_deep(void) {
    MsNsFilter f = {0};
    ASSERT_OK(ms_ns_filter_add(&f.include, &f.n_include, "shop.*"));
    bson_t *entry = crud("i", "shop.a", 1);
    for (int i = 0; i < 12; i++)
        entry = apply_ops("admin.$cmd", (bson_t *[]){entry}, 1);
    MsError e = MS_ERROR_INIT;
    bson_t out;
    int r = ms_ns_filter_oplog_entry(&f, 0, entry, &out, &e);
    bson_destroy(entry);
    ms_ns_filter_clear(&f);
    ASSERT_EQ_INT(r, -EBADMSG);
    ASSERT_CONTAINS(e.message, "nests more than");
}

MS_TEST_MAIN(TEST_CASE(match_star_patterns), TEST_CASE(empty_filter_selects_everything),
             TEST_CASE(include_exclude_precedence), TEST_CASE(exclude_only),
             TEST_CASE(rename_with_captures), TEST_CASE(first_matching_rename_wins),
             TEST_CASE(validate_accepts_good_patterns), TEST_CASE(validate_rejects_bad_patterns),
             TEST_CASE(split_and_join), TEST_CASE(match_is_polynomial_in_stars),
             TEST_CASE(validate_rejects_malformed_and_forbidden), TEST_CASE(could_select_db_cases),
             TEST_CASE(could_select_db_never_hides_a_match), TEST_CASE(oplog_crud_by_namespace),
             TEST_CASE(oplog_commands_by_collection), TEST_CASE(oplog_apply_ops_trimmed),
             TEST_CASE(oplog_apply_ops_too_deep))

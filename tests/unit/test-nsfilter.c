/* Tests for namespace patterns: '*' matching, include/exclude precedence, renames with captures,
 * validation, and splitting "db.coll". */
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

MS_TEST_MAIN(TEST_CASE(match_star_patterns), TEST_CASE(empty_filter_selects_everything),
             TEST_CASE(include_exclude_precedence), TEST_CASE(exclude_only),
             TEST_CASE(rename_with_captures), TEST_CASE(first_matching_rename_wins),
             TEST_CASE(validate_accepts_good_patterns), TEST_CASE(validate_rejects_bad_patterns),
             TEST_CASE(split_and_join), TEST_CASE(match_is_polynomial_in_stars))

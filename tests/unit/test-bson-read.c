/* The shared one-field readers (archive/bson-read.h): every BSON type under every reader, so
 * that what one layer read as "none" no other layer reads as a value; hostile numbers (huge,
 * negative, NaN) end as 0 or the ceiling, never as an undefined cast (UBSan runs this). */
#include <bson/bson.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "archive/bson-read.h"
#include "test.h"

static void every_type_under_every_reader(void) {
    bson_t *d = BCON_NEW("s", BCON_UTF8("text"), "i32", BCON_INT32(7), "i64", BCON_INT64(1LL << 40),
                         "neg", BCON_INT64(-5), "dbl", BCON_DOUBLE(2.75), "huge", BCON_DOUBLE(1e300),
                         "ndbl", BCON_DOUBLE(-1e300), "nan", BCON_DOUBLE(NAN), "t", BCON_BOOL(true),
                         "f", BCON_BOOL(false), "doc", "{", "a", BCON_INT32(1), "}", "arr", "[",
                         BCON_INT32(1), BCON_INT32(2), "]", "null", BCON_NULL);
    static const struct {
        const char *key;
        const char *str;
        bool doc;
        bool truth;
        uint64_t u64;
        double dbl;
    } cases[] = {
        {"s", "text", false, true, 0, 0},
        {"i32", NULL, false, true, 7, 7},
        {"i64", NULL, false, true, 1ULL << 40, (double) (1ULL << 40)},
        {"neg", NULL, false, true, 0, -5},
        {"dbl", NULL, false, true, 2, 2.75},
        {"huge", NULL, false, true, UINT64_MAX, 1e300},
        {"ndbl", NULL, false, true, 0, -1e300},
        {"t", NULL, false, true, 0, 0},
        {"f", NULL, false, false, 0, 0},
        {"doc", NULL, true, true, 0, 0},
        {"arr", NULL, true, true, 0, 0},
        {"null", NULL, false, false, 0, 0},
        {"missing", NULL, false, false, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *k = cases[i].key;
        const char *s = ms_bson_str(d, k);
        if (cases[i].str)
            ASSERT_STREQ(s, cases[i].str);
        else
            ASSERT(s == NULL);
        bson_t sub;
        ASSERT(ms_bson_doc(d, k, &sub) == cases[i].doc);
        if (cases[i].doc)
            ASSERT(bson_count_keys(&sub) >= 1);
        ASSERT(ms_bson_true(d, k) == cases[i].truth);
        ASSERT(ms_bson_u64(d, k) == cases[i].u64);
        ASSERT(ms_bson_double(d, k) == cases[i].dbl);
    }
    ASSERT(ms_bson_u64(d, "nan") == 0);
    ASSERT(isnan(ms_bson_double(d, "nan")));
    /* A NULL document has no fields. */
    bson_t sub;
    ASSERT(ms_bson_str(NULL, "s") == NULL && !ms_bson_doc(NULL, "doc", &sub) &&
           !ms_bson_true(NULL, "t") && ms_bson_u64(NULL, "i32") == 0 &&
           ms_bson_double(NULL, "dbl") == 0);
    /* Keys, not paths. */
    ASSERT(ms_bson_u64(d, "doc.a") == 0);
    bson_destroy(d);
}

MS_TEST_MAIN(TEST_CASE(every_type_under_every_reader))

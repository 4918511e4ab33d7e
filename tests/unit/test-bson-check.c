/* The archive reader's fast BSON check (archive/bson-check.h) is never more lenient than
 * bson_validate(BSON_VALIDATE_NONE): a table of element types and kinds of damage, then
 * random documents and random damage to them, with the fast check's "valid" required to be
 * bson_validate's too. It must also vouch for ordinary documents, or it would save nothing. */
#include <bson/bson.h>
#include <stdint.h>
#include <string.h>

#include "archive/bson-check.h"
#include "test.h"

#define RANDOM_DOCUMENTS 100000
#define DAMAGES_PER_DOCUMENT 20

static bool libbson_valid(const uint8_t *p, size_t len) {
    bson_t b;
    size_t off;
    return bson_init_static(&b, p, len) && bson_validate(&b, BSON_VALIDATE_NONE, &off);
}

static bool fast(const bson_t *b) {
    return ms_bson_check_fast(bson_get_data(b), b->len);
}

static void common_types_are_vouched_for(void) {
    bson_t *d = bson_new(), child, arr;
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
    bson_decimal128_t dec;
    bson_decimal128_from_string("1.5", &dec);
    BSON_APPEND_DOUBLE(d, "double", 1.5);
    BSON_APPEND_UTF8(d, "string", "Zürich ✓");
    BSON_APPEND_DOCUMENT_BEGIN(d, "doc", &child);
    BSON_APPEND_INT32(&child, "a", 1);
    bson_append_document_end(d, &child);
    BSON_APPEND_ARRAY_BEGIN(d, "arr", &arr);
    BSON_APPEND_UTF8(&arr, "0", "x");
    bson_append_array_end(d, &arr);
    BSON_APPEND_BINARY(d, "bin", BSON_SUBTYPE_UUID, (const uint8_t *) "0123456789abcdef", 16);
    BSON_APPEND_BINARY(d, "empty", BSON_SUBTYPE_BINARY, (const uint8_t *) "", 0);
    BSON_APPEND_OID(d, "oid", &oid);
    BSON_APPEND_BOOL(d, "t", true);
    BSON_APPEND_BOOL(d, "f", false);
    BSON_APPEND_DATE_TIME(d, "date", 1700000000000);
    BSON_APPEND_NULL(d, "null");
    BSON_APPEND_INT32(d, "i32", -5);
    BSON_APPEND_TIMESTAMP(d, "ts", 1, 2);
    BSON_APPEND_INT64(d, "i64", INT64_MAX);
    BSON_APPEND_DECIMAL128(d, "dec", &dec);
    BSON_APPEND_MINKEY(d, "min");
    BSON_APPEND_MAXKEY(d, "max");
    ASSERT(fast(d));
    ASSERT(libbson_valid(bson_get_data(d), d->len));
    bson_t *empty = bson_new();
    ASSERT(fast(empty));
    bson_destroy(empty);
    bson_destroy(d);
}

/* Valid documents the fast check leaves to bson_validate, which accepts them. */
static void rare_types_are_left_to_libbson(void) {
    for (int k = 0; k < 9; k++) {
        bson_t *d = bson_new(), scope = BSON_INITIALIZER;
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "0123456789abcdef01234567");
        BSON_APPEND_INT32(d, "_id", 1);
        switch (k) {
        case 0:
            BSON_APPEND_UNDEFINED(d, "u");
            break;
        case 1:
            BSON_APPEND_REGEX(d, "r", "^a", "i");
            break;
        case 2:
            BSON_APPEND_DBPOINTER(d, "p", "db.c", &oid);
            break;
        case 3:
            BSON_APPEND_CODE(d, "c", "function(){}");
            break;
        case 4:
            BSON_APPEND_SYMBOL(d, "s", "sym");
            break;
        case 5:
            BSON_APPEND_INT32(&scope, "x", 1);
            BSON_APPEND_CODE_WITH_SCOPE(d, "cs", "x", &scope);
            break;
        case 6:
            BSON_APPEND_BINARY(d, "old", BSON_SUBTYPE_BINARY_DEPRECATED, (const uint8_t *) "abc", 3);
            break;
        case 7:
            BSON_APPEND_INT32(d, "clé", 1); /* a non-ASCII key */
            break;
        default: {
            /* nested deeper than the fast check goes */
            bson_t *inner = bson_new();
            BSON_APPEND_INT32(inner, "leaf", 1);
            for (int depth = 0; depth < 40; depth++) {
                bson_t *outer = bson_new();
                BSON_APPEND_DOCUMENT(outer, "n", inner);
                bson_destroy(inner);
                inner = outer;
            }
            BSON_APPEND_DOCUMENT(d, "deep", inner);
            bson_destroy(inner);
        }
        }
        ASSERT(!fast(d));
        ASSERT(libbson_valid(bson_get_data(d), d->len));
        bson_destroy(&scope);
        bson_destroy(d);
    }
}

/* Damage of every kind the fast check looks at: refused. */
static void damage_is_refused(void) {
    bson_t *d = bson_new();
    BSON_APPEND_UTF8(d, "s", "abc");
    BSON_APPEND_BOOL(d, "b", true);
    uint8_t buf[64];
    size_t len = d->len;
    memcpy(buf, bson_get_data(d), len);
    bson_destroy(d);
    ASSERT(ms_bson_check_fast(buf, len));
    /* the layout: len(4) | 02 's' 0 | strlen(4) 'abc' 0 | 08 'b' 0 | 01 | 0 */
    uint8_t bad[64];
    struct {
        size_t at;
        uint8_t value;
    } cases[] = {
        {0, (uint8_t) (len + 1)}, /* a document length that is not the document's */
        {4, 0x06},                /* an element type it does not know */
        {7, 0x00},                /* string length 0 */
        {7, 0x40},                /* a string longer than the document */
        {14, 'x'},                /* a string without its zero */
        {18, 0x02},               /* a boolean that is neither 0 nor 1 */
        {len - 1, 0x01},          /* no final zero */
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        memcpy(bad, buf, len);
        bad[cases[k].at] = cases[k].value;
        ASSERT(!ms_bson_check_fast(bad, len));
    }
    ASSERT(!ms_bson_check_fast(buf, 4));
    ASSERT(!ms_bson_check_fast(buf, len - 1));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(uint64_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? rng_state % n : 0;
}

static void random_document(bson_t *d, int depth) {
    uint64_t n = rnd(8);
    char key[16];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), rnd(20) == 0 ? "k\xc3\xa9%u" : "k%u", (unsigned) i);
        bson_t child;
        uint8_t bytes[24];
        for (size_t b = 0; b < sizeof(bytes); b++)
            bytes[b] = (uint8_t) rnd(256);
        switch (rnd(depth < 4 ? 14 : 12)) {
        case 0:
            BSON_APPEND_DOUBLE(d, key, (double) rnd(1000) / 7);
            break;
        case 1:
            /* not BSON_APPEND_UTF8: it evaluates its value twice */
            bson_append_utf8(d, key, -1, rnd(2) ? "text" : "", -1);
            break;
        case 2:
            BSON_APPEND_BINARY(d, key, (bson_subtype_t) rnd(6), bytes, (uint32_t) rnd(24));
            break;
        case 3: {
            bson_oid_t o;
            memcpy(o.bytes, bytes, 12);
            BSON_APPEND_OID(d, key, &o);
            break;
        }
        case 4:
            BSON_APPEND_BOOL(d, key, rnd(2));
            break;
        case 5:
            BSON_APPEND_DATE_TIME(d, key, (int64_t) rnd(1u << 30));
            break;
        case 6:
            BSON_APPEND_NULL(d, key);
            break;
        case 7:
            BSON_APPEND_INT32(d, key, (int32_t) rnd(1000));
            break;
        case 8:
            BSON_APPEND_INT64(d, key, (int64_t) rnd(1u << 30));
            break;
        case 9:
            BSON_APPEND_TIMESTAMP(d, key, (uint32_t) rnd(100), (uint32_t) rnd(100));
            break;
        case 10:
            BSON_APPEND_REGEX(d, key, "a.b", "i");
            break;
        case 11:
            BSON_APPEND_MINKEY(d, key);
            break;
        case 12:
            BSON_APPEND_DOCUMENT_BEGIN(d, key, &child);
            random_document(&child, depth + 1);
            bson_append_document_end(d, &child);
            break;
        default:
            BSON_APPEND_ARRAY_BEGIN(d, key, &child);
            random_document(&child, depth + 1);
            bson_append_array_end(d, &child);
        }
    }
}

/* Random documents, then random damage: byte flips, length words changed, bytes cut from the
 * middle with the outer length kept right. Whatever the fast check calls valid, libbson must. */
static void never_more_lenient_than_libbson(void) {
    unsigned vouched = 0, damaged_vouched = 0, checked = 0;
    uint8_t *buf = malloc(1 << 16);
    ASSERT(buf);
    for (unsigned k = 0; k < RANDOM_DOCUMENTS; k++) {
        bson_t d = BSON_INITIALIZER;
        random_document(&d, 0);
        size_t len = d.len;
        memcpy(buf, bson_get_data(&d), len);
        bson_destroy(&d);
        bool f = ms_bson_check_fast(buf, len);
        ASSERT(!f || libbson_valid(buf, len));
        vouched += f;
        for (unsigned m = 0; m < DAMAGES_PER_DOCUMENT; m++) {
            uint8_t copy[1 << 12];
            size_t clen = len < sizeof(copy) ? len : sizeof(copy);
            memcpy(copy, buf, clen);
            switch (rnd(3)) {
            case 0:
                copy[rnd(clen)] ^= (uint8_t) (1u << rnd(8));
                break;
            case 1: {
                size_t at = rnd(clen > 4 ? clen - 3 : 1);
                uint32_t v = (uint32_t) rnd(clen + 8);
                if (at + 4 <= clen)
                    memcpy(copy + at, &v, 4);
                break;
            }
            default: {
                size_t at = 4 + rnd(clen > 5 ? clen - 5 : 1), cut = 1 + rnd(4);
                if (at + cut < clen) {
                    memmove(copy + at, copy + at + cut, clen - at - cut);
                    clen -= cut;
                    uint32_t v = (uint32_t) clen;
                    memcpy(copy, &v, 4);
                }
            }
            }
            bool ff = ms_bson_check_fast(copy, clen);
            if (ff && !libbson_valid(copy, clen)) {
                fprintf(stderr, "# more lenient than libbson: document %u damage %u\n", k, m);
                ASSERT(false);
            }
            damaged_vouched += ff;
            checked++;
        }
    }
    free(buf);
    printf("# %u of %u random documents vouched for; %u of %u damaged copies\n", vouched,
           RANDOM_DOCUMENTS, damaged_vouched, checked);
    /* Most random documents have only common types and ASCII keys: the fast path must take
     * them, or it is not the fast path. */
    ASSERT(vouched > RANDOM_DOCUMENTS / 4);
}

MS_TEST_MAIN(TEST_CASE(common_types_are_vouched_for), TEST_CASE(rare_types_are_left_to_libbson),
             TEST_CASE(damage_is_refused), TEST_CASE(never_more_lenient_than_libbson))

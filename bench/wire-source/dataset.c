/* The benchmark dataset for wire-source (dataset.h): the nine collections of
 * bench/lib/benchdata.py, same shapes, value ranges and target sizes, generated from a seed
 * per collection. Python's random module is not reproduced bit for bit (that would mean
 * porting its Mersenne Twister and its float algorithms for no gain); what matters for the
 * tools is the mix of types, document sizes and compressibility, which this keeps. */
#include "dataset.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)
#define BASE_MS INT64_C(1735689600000) /* 2025-01-01T00:00:00Z */
#define WORDS_N 5000

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---- */

typedef struct {
    uint64_t s[4];
} Rng;

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void rng_seed_str(Rng *r, const char *s) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s; s++)
        h = (h ^ (uint8_t) *s) * UINT64_C(0x100000001b3);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&h);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t next(Rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static uint64_t below(Rng *r, uint64_t n) {
    return n ? next(r) % n : 0; /* the modulo bias is irrelevant for a benchmark dataset */
}

static int64_t randint(Rng *r, int64_t lo, int64_t hi) { /* inclusive, like Python's */
    return lo + (int64_t) below(r, (uint64_t) (hi - lo + 1));
}

static double unit(Rng *r) {
    return (double) (next(r) >> 11) * 0x1.0p-53;
}

static double uniform(Rng *r, double lo, double hi) {
    return lo + (hi - lo) * unit(r);
}

static double round_to(double v, int digits) {
    double m = 1;
    for (int i = 0; i < digits; i++)
        m *= 10;
    return (double) (int64_t) (v * m + (v < 0 ? -0.5 : 0.5)) / m;
}

static bool chance(Rng *r, double p) {
    return unit(r) < p;
}

static void fill_bytes(Rng *r, uint8_t *p, size_t n) {
    while (n) {
        uint64_t v = next(r);
        size_t k = n < 8 ? n : 8;
        memcpy(p, &v, k);
        p += k;
        n -= k;
    }
}

/* ---- vocabulary with Zipf-like frequencies (compresses like prose) ---- */

static char words_buf[WORDS_N][12];
static double words_cum[WORDS_N];

static void words_init(void) {
    Rng r;
    rng_seed_str(&r, "mongosnap-bench/vocabulary");
    double acc = 0;
    for (int i = 0; i < WORDS_N; i++) {
        int len = (int) randint(&r, 2, 11);
        for (int k = 0; k < len; k++)
            words_buf[i][k] = (char) ('a' + below(&r, 26));
        words_buf[i][len] = 0;
        acc += 1.0 / (i + 1);
        words_cum[i] = acc;
    }
}

static const char *word(Rng *r) {
    double x = unit(r) * words_cum[WORDS_N - 1];
    size_t lo = 0, hi = WORDS_N - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (words_cum[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return words_buf[lo];
}

typedef struct {
    char *p;
    size_t len, cap;
} Text;

static void text_add(Text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        if (!t->p)
            abort();
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
}

/* n words separated by spaces; title case capitalises each. */
static const char *words(Rng *r, Text *t, int64_t n, bool title) {
    t->len = 0;
    text_add(t, "", 0);
    for (int64_t i = 0; i < n; i++) {
        if (i)
            text_add(t, " ", 1);
        size_t at = t->len;
        const char *w = word(r);
        text_add(t, w, strlen(w));
        if (title)
            t->p[at] = (char) (t->p[at] - 'a' + 'A');
    }
    return t->p;
}

/* bson.h's BSON_APPEND_UTF8 evaluates its value twice (strlen, then the value): with a random
 * choice as the value that would be two draws, so strings go through this. */
static void app_str(bson_t *b, const char *key, const char *v) {
    bson_append_utf8(b, key, -1, v, -1);
}

static const char *pick(Rng *r, const char *const *v, size_t n) {
    return v[below(r, n)];
}
#define PICK(r, ...)                                                                           \
    pick(r, (const char *const[]){__VA_ARGS__},                                                \
         sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static void when(Rng *r, bson_t *b, const char *key, int64_t days) {
    BSON_APPEND_DATE_TIME(b, key, BASE_MS + (int64_t) below(r, (uint64_t) days * 86400000));
}

static void address(Rng *r, Text *t, bson_t *b, const char *key) {
    bson_t a, geo;
    char buf[160];
    BSON_APPEND_DOCUMENT_BEGIN(b, key, &a);
    snprintf(buf, sizeof(buf), "%d %s Street", (int) randint(r, 1, 999), words(r, t, 2, true));
    app_str(&a, "street", buf);
    app_str(&a, "city",
                     PICK(r, "Lisbon", "Oslo", "Kyoto", "Lagos", "Lima", "Zürich", "Montréal",
                          "Chennai", "Hobart", "Tromsø"));
    snprintf(buf, sizeof(buf), "%05d", (int) randint(r, 1000, 99999));
    app_str(&a, "zip", buf);
    BSON_APPEND_ARRAY_BEGIN(&a, "geo", &geo);
    BSON_APPEND_DOUBLE(&geo, "0", round_to(uniform(r, -180, 180), 6));
    BSON_APPEND_DOUBLE(&geo, "1", round_to(uniform(r, -90, 90), 6));
    bson_append_array_end(&a, &geo);
    bson_append_document_end(b, &a);
}

static const char *key_of(char buf[16], uint64_t i) {
    const char *k;
    bson_uint32_to_string((uint32_t) i, &k, buf, 16);
    return k;
}

/* ---- the nine generators (bench/lib/benchdata.py) ---- */

static void gen_users(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char buf[96], kb[16];
    app_str(b, "name", words(r, t, 2, true));
    snprintf(buf, sizeof(buf), "user%" PRIu64 "@example.%s", i, PICK(r, "com", "org", "net"));
    app_str(b, "email", buf);
    BSON_APPEND_INT32(b, "age", (int32_t) randint(r, 16, 95));
    BSON_APPEND_DOUBLE(b, "balance", round_to(uniform(r, -500, 25000), 2));
    when(r, b, "created", 700);
    BSON_APPEND_BOOL(b, "active", chance(r, 0.8));
    address(r, t, b, "address");
    bson_t tags, prefs;
    BSON_APPEND_ARRAY_BEGIN(b, "tags", &tags);
    static const char *const all_tags[] = {"vip", "new", "wholesale", "returning", "eu", "apac", "beta", "staff"};
    int64_t nt = randint(r, 0, 4);
    unsigned used = 0;
    for (int64_t k = 0; k < nt;) {
        unsigned x = (unsigned) below(r, 8);
        if (used & (1u << x))
            continue;
        used |= 1u << x;
        app_str(&tags, key_of(kb, (uint64_t) k), all_tags[x]);
        k++;
    }
    bson_append_array_end(b, &tags);
    BSON_APPEND_DOCUMENT_BEGIN(b, "prefs", &prefs);
    app_str(&prefs, "lang", PICK(r, "en", "pt", "ja", "no", "de"));
    BSON_APPEND_BOOL(&prefs, "newsletter", chance(r, 0.3));
    int64_t th = randint(r, 0, 2);
    if (th == 2)
        BSON_APPEND_NULL(&prefs, "theme");
    else
        app_str(&prefs, "theme", th ? "light" : "dark");
    bson_append_document_end(b, &prefs);
    app_str(b, "bio", words(r, t, randint(r, 0, 110), false));
    if (chance(r, 0.9))
        when(r, b, "last_login", 700);
    else
        BSON_APPEND_NULL(b, "last_login");
}

static void gen_orders(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char buf[64], kb[16], kb2[16];
    BSON_APPEND_INT32(b, "customer", (int32_t) below(r, 1000000));
    when(r, b, "placed", 700);
    app_str(b, "status",
                     PICK(r, "new", "paid", "packed", "shipped", "delivered", "returned", "cancelled"));
    bson_t lines, line, discounts, d;
    int64_t total = 0, nl = randint(r, 1, 28);
    BSON_APPEND_ARRAY_BEGIN(b, "lines", &lines);
    for (int64_t k = 0; k < nl; k++) {
        bson_append_document_begin(&lines, key_of(kb, (uint64_t) k), -1, &line);
        snprintf(buf, sizeof(buf), "SKU-%06d", (int) below(r, 40000));
        app_str(&line, "sku", buf);
        app_str(&line, "title", words(r, t, randint(r, 2, 7), false));
        int64_t qty = randint(r, 1, 9), price = randint(r, 99, 250000);
        total += qty * price;
        BSON_APPEND_INT32(&line, "qty", (int32_t) qty);
        BSON_APPEND_INT32(&line, "price_cents", (int32_t) price);
        BSON_APPEND_ARRAY_BEGIN(&line, "discounts", &discounts);
        for (int64_t j = 0, nd = randint(r, 0, 2); j < nd; j++) {
            bson_append_document_begin(&discounts, key_of(kb2, (uint64_t) j), -1, &d);
            words(r, t, 1, false);
            for (char *p = t->p; *p; p++)
                *p = (char) (*p - 'a' + 'A');
            app_str(&d, "code", t->p);
            BSON_APPEND_INT32(&d, "pct", (int32_t) randint(r, 5, 50));
            bson_append_document_end(&discounts, &d);
        }
        bson_append_array_end(&line, &discounts);
        bson_append_document_end(&lines, &line);
    }
    bson_append_array_end(b, &lines);
    BSON_APPEND_INT64(b, "total_cents", total);
    bson_t ship;
    BSON_APPEND_DOCUMENT_BEGIN(b, "shipping", &ship);
    app_str(&ship, "name", words(r, t, 2, true));
    address(r, t, &ship, "address");
    app_str(&ship, "method", PICK(r, "post", "courier", "pickup"));
    bson_append_document_end(b, &ship);
    BSON_APPEND_BOOL(b, "paid", chance(r, 0.7));
    app_str(b, "notes", words(r, t, randint(r, 0, 40), false));
}

static void gen_products(Rng *r, Text *t, uint64_t i, bson_t *b) {
    char buf[128], kb[16];
    app_str(b, "title", words(r, t, randint(r, 2, 8), true));
    app_str(b, "description", words(r, t, randint(r, 40, 300), false));
    BSON_APPEND_INT32(b, "price_cents", (int32_t) randint(r, 99, 250000));
    BSON_APPEND_INT32(b, "stock", (int32_t) randint(r, 0, 5000));
    bson_t attrs, dims, variants, v, images;
    BSON_APPEND_DOCUMENT_BEGIN(b, "attributes", &attrs);
    BSON_APPEND_INT32(&attrs, "weight_g", (int32_t) randint(r, 5, 40000));
    BSON_APPEND_DOCUMENT_BEGIN(&attrs, "dims_cm", &dims);
    BSON_APPEND_DOUBLE(&dims, "w", round_to(uniform(r, 1, 200), 1));
    BSON_APPEND_DOUBLE(&dims, "h", round_to(uniform(r, 1, 200), 1));
    BSON_APPEND_DOUBLE(&dims, "d", round_to(uniform(r, 1, 200), 1));
    bson_append_document_end(&attrs, &dims);
    app_str(&attrs, "colour", PICK(r, "red", "blue", "green", "black", "white"));
    app_str(&attrs, "material", words(r, t, 1, false));
    bson_append_document_end(b, &attrs);
    BSON_APPEND_ARRAY_BEGIN(b, "variants", &variants);
    for (int64_t k = 0, nv = randint(r, 0, 12); k < nv; k++) {
        bson_append_document_begin(&variants, key_of(kb, (uint64_t) k), -1, &v);
        snprintf(buf, sizeof(buf), "SKU-%06" PRIu64 "-%d", i, (int) k);
        app_str(&v, "sku", buf);
        app_str(&v, "size", PICK(r, "XS", "S", "M", "L", "XL"));
        BSON_APPEND_INT32(&v, "stock", (int32_t) randint(r, 0, 500));
        BSON_APPEND_INT32(&v, "price_cents", (int32_t) randint(r, 99, 250000));
        bson_append_document_end(&variants, &v);
    }
    bson_append_array_end(b, &variants);
    BSON_APPEND_ARRAY_BEGIN(b, "images", &images);
    for (int64_t k = 0, ni = randint(r, 1, 8); k < ni; k++) {
        snprintf(buf, sizeof(buf), "https://img.example.com/%" PRIu64 "/%d-%s.jpg", i, (int) k,
                 words(r, t, 1, false));
        app_str(&images, key_of(kb, (uint64_t) k), buf);
    }
    bson_append_array_end(b, &images);
    BSON_APPEND_DOUBLE(b, "rating", round_to(uniform(r, 1, 5), 2));
    BSON_APPEND_INT64(b, "reviews", (int64_t) below(r, 1000000000));
    when(r, b, "updated", 700);
}

static void gen_articles(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char kb[16], kb2[16];
    Text body = {0};
    app_str(b, "title", words(r, t, randint(r, 3, 12), true));
    bson_t author, tags, comments, c;
    BSON_APPEND_DOCUMENT_BEGIN(b, "author", &author);
    BSON_APPEND_INT32(&author, "id", (int32_t) below(r, 1000000));
    app_str(&author, "name", words(r, t, 2, true));
    bson_append_document_end(b, &author);
    when(r, b, "published", 700);
    words(r, &body, randint(r, 180, 950), false);
    /* Keep every document under 8 KiB, as benchdata.py does: the body is cut at a word
     * boundary to what is left (the rest of the document is at most ~1.6 KiB). */
    size_t budget = 8000 - 1700;
    if (body.len > budget) {
        body.len = budget;
        while (body.len && body.p[body.len] != ' ')
            body.len--;
        body.p[body.len] = 0;
    }
    app_str(b, "body", body.p);
    free(body.p);
    BSON_APPEND_ARRAY_BEGIN(b, "tags", &tags);
    for (int64_t k = 0, n = randint(r, 0, 6); k < n; k++)
        app_str(&tags, key_of(kb, (uint64_t) k), words(r, t, 1, false));
    bson_append_array_end(b, &tags);
    BSON_APPEND_ARRAY_BEGIN(b, "comments", &comments);
    for (int64_t k = 0, n = randint(r, 0, 6); k < n; k++) {
        bson_append_document_begin(&comments, key_of(kb2, (uint64_t) k), -1, &c);
        app_str(&c, "by", words(r, t, 1, false));
        when(r, &c, "at", 700);
        app_str(&c, "text", words(r, t, randint(r, 3, 35), false));
        BSON_APPEND_INT32(&c, "likes", (int32_t) randint(r, 0, 999));
        bson_append_document_end(&comments, &c);
    }
    bson_append_array_end(b, &comments);
    BSON_APPEND_BOOL(b, "draft", chance(r, 0.05));
}

static void gen_attachments(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char buf[160];
    size_t n = (size_t) randint(r, 120, 7600);
    uint8_t *data = malloc(n);
    if (!data)
        abort();
    if (chance(r, 0.5))
        fill_bytes(r, data, n);
    else
        for (size_t k = 0; k < n; k++)
            data[k] = (uint8_t) below(r, 16);
    words(r, t, randint(r, 1, 3), false);
    for (char *p = t->p; *p; p++)
        if (*p == ' ')
            *p = '-';
    snprintf(buf, sizeof(buf), "%s.%s", t->p, PICK(r, "png", "jpg", "pdf", "bin", "csv"));
    app_str(b, "filename", buf);
    app_str(b, "mime",
                     PICK(r, "image/png", "image/jpeg", "application/pdf",
                          "application/octet-stream", "text/csv"));
    when(r, b, "uploaded", 700);
    BSON_APPEND_INT32(b, "owner", (int32_t) below(r, 1000000));
    /* benchdata.py stores the data's SHA-256; 64 hex digits of the same entropy do here. */
    static const char hexd[] = "0123456789abcdef";
    for (int k = 0; k < 64; k++)
        buf[k] = hexd[below(r, 16)];
    buf[64] = 0;
    app_str(b, "sha256", buf);
    BSON_APPEND_BINARY(b, "data", BSON_SUBTYPE_BINARY, data, (uint32_t) n);
    free(data);
}

static void gen_sessions(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char buf[160], kb[16];
    BSON_APPEND_INT32(b, "user", (int32_t) below(r, 1000000));
    when(r, b, "started", 700);
    BSON_APPEND_INT32(b, "duration_ms", (int32_t) randint(r, 50, 7200000));
    snprintf(buf, sizeof(buf), "10.%d.%d.%d", (int) below(r, 256), (int) below(r, 256),
             (int) below(r, 256));
    app_str(b, "ip", buf);
    app_str(b, "agent",
                     PICK(r,
                          "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
                          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 "
                          "(KHTML, like Gecko) Version/17.6 Safari/605.1.15",
                          "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
                          "like Gecko) Chrome/129.0 Mobile Safari/537.36",
                          "curl/8.5.0"));
    int64_t ref = randint(r, 0, 2);
    if (ref == 0)
        app_str(b, "referrer", "https://www.example.com/");
    else if (ref == 1) {
        words(r, t, 2, false);
        for (char *p = t->p; *p; p++)
            if (*p == ' ')
                *p = '+';
        snprintf(buf, sizeof(buf), "https://search.example.net/?q=%s", t->p);
        app_str(b, "referrer", buf);
    } else
        BSON_APPEND_NULL(b, "referrer");
    bson_t pages, flags;
    BSON_APPEND_ARRAY_BEGIN(b, "pages", &pages);
    for (int64_t k = 0, n = randint(r, 0, 10); k < n; k++) {
        snprintf(buf, sizeof(buf), "/%s/%d", words(r, t, 1, false), (int) below(r, 10000));
        app_str(&pages, key_of(kb, (uint64_t) k), buf);
    }
    bson_append_array_end(b, &pages);
    BSON_APPEND_DOCUMENT_BEGIN(b, "flags", &flags);
    BSON_APPEND_BOOL(&flags, "mobile", chance(r, 0.4));
    BSON_APPEND_BOOL(&flags, "bot", chance(r, 0.05));
    bson_append_document_end(b, &flags);
}

static void gen_events(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char buf[32];
    when(r, b, "ts", 30);
    app_str(b, "level", PICK(r, "debug", "info", "info", "info", "warn", "error"));
    app_str(b, "service", PICK(r, "api", "auth", "billing", "search", "cart", "mailer", "ingest"));
    snprintf(buf, sizeof(buf), "host-%03d", (int) below(r, 500));
    app_str(b, "host", buf);
    app_str(b, "msg", words(r, t, randint(r, 4, 18), false));
    bson_t ctx;
    BSON_APPEND_DOCUMENT_BEGIN(b, "ctx", &ctx);
    snprintf(buf, sizeof(buf), "%016" PRIx64, next(r));
    app_str(&ctx, "req", buf);
    BSON_APPEND_INT32(&ctx, "user", (int32_t) below(r, 1000000));
    double u = unit(r);
    BSON_APPEND_DOUBLE(&ctx, "latency_ms", round_to(-50.0 * __builtin_log(1.0 - u), 3));
    bson_append_document_end(b, &ctx);
}

static void gen_metrics(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) t;
    char buf[32], kb[16];
    snprintf(buf, sizeof(buf), "host-%03d", (int) (i % 500));
    app_str(b, "host", buf);
    when(r, b, "ts", 30);
    BSON_APPEND_INT32(b, "interval_s", 10);
    int64_t n = randint(r, 30, 230);
    bson_t cpu, mem, stats, labels;
    BSON_APPEND_ARRAY_BEGIN(b, "cpu", &cpu);
    for (int64_t k = 0; k < n; k++)
        BSON_APPEND_DOUBLE(&cpu, key_of(kb, (uint64_t) k), round_to(uniform(r, 0, 100), 2));
    bson_append_array_end(b, &cpu);
    BSON_APPEND_ARRAY_BEGIN(b, "mem", &mem);
    for (int64_t k = 0; k < n / 2; k++)
        BSON_APPEND_INT64(&mem, key_of(kb, (uint64_t) k), (int64_t) below(r, UINT64_C(1) << 34));
    bson_append_array_end(b, &mem);
    BSON_APPEND_DOCUMENT_BEGIN(b, "stats", &stats);
    BSON_APPEND_DOUBLE(&stats, "min", round_to(uniform(r, 0, 10), 3));
    BSON_APPEND_DOUBLE(&stats, "max", round_to(uniform(r, 90, 100), 3));
    BSON_APPEND_DOUBLE(&stats, "p99", round_to(uniform(r, 80, 99), 3));
    bson_append_document_end(b, &stats);
    BSON_APPEND_DOCUMENT_BEGIN(b, "labels", &labels);
    app_str(&labels, "dc", PICK(r, "lis", "osl", "kix"));
    BSON_APPEND_INT32(&labels, "rack", (int32_t) randint(r, 1, 40));
    bson_append_document_end(b, &labels);
}

static void gen_audit(Rng *r, Text *t, uint64_t i, bson_t *b) {
    (void) i;
    char kb[16], kb2[16];
    /* before/after: 1-15 fields of mixed types, ~40 % of them changed in after; built first
     * because libbson writes one nested document at a time */
    bson_t bf = BSON_INITIALIZER, af = BSON_INITIALIZER;
    for (int64_t k = 0, nf = randint(r, 1, 15); k < nf; k++) {
        const char *name = word(r);
        if (bson_has_field(&bf, name))
            continue; /* one field per name, as in benchdata.py's dict */
        int64_t kind = randint(r, 0, 3);
        bool keep = chance(r, 0.6);
        if (kind == 0) {
            int32_t v = (int32_t) randint(r, 0, 1000000);
            BSON_APPEND_INT32(&bf, name, v);
            if (keep)
                BSON_APPEND_INT32(&af, name, v);
        } else if (kind == 1) {
            app_str(&bf, name, words(r, t, 3, false));
            if (keep)
                app_str(&af, name, t->p);
        } else if (kind == 2) {
            bool v = chance(r, 0.5);
            BSON_APPEND_BOOL(&bf, name, v);
            if (keep)
                BSON_APPEND_BOOL(&af, name, v);
        } else {
            BSON_APPEND_NULL(&bf, name);
            if (keep)
                BSON_APPEND_NULL(&af, name);
        }
        if (!keep)
            app_str(&af, name, words(r, t, 2, false));
    }
    bson_t actor, target, matrix, row, cells;
    BSON_APPEND_DOCUMENT_BEGIN(b, "actor", &actor);
    BSON_APPEND_INT32(&actor, "id", (int32_t) below(r, 1000000));
    app_str(&actor, "role", PICK(r, "admin", "user", "service"));
    bson_append_document_end(b, &actor);
    app_str(b, "action", PICK(r, "create", "update", "delete", "login", "export"));
    BSON_APPEND_DOCUMENT_BEGIN(b, "target", &target);
    app_str(&target, "type", PICK(r, "order", "user", "product"));
    BSON_APPEND_INT32(&target, "id", (int32_t) below(r, 10000000));
    bson_append_document_end(b, &target);
    BSON_APPEND_DOCUMENT(b, "before", &bf);
    BSON_APPEND_DOCUMENT(b, "after", &af);
    bson_destroy(&bf);
    bson_destroy(&af);
    BSON_APPEND_ARRAY_BEGIN(b, "matrix", &matrix);
    for (int64_t k = 0, n = randint(r, 0, 5); k < n; k++) {
        bson_append_document_begin(&matrix, key_of(kb, (uint64_t) k), -1, &row);
        BSON_APPEND_ARRAY_BEGIN(&row, "row", &cells);
        for (int64_t j = 0, m = randint(r, 1, 5); j < m; j++)
            BSON_APPEND_INT32(&cells, key_of(kb2, (uint64_t) j), (int32_t) randint(r, 0, 99));
        bson_append_array_end(&row, &cells);
        bson_append_document_end(&matrix, &row);
    }
    bson_append_array_end(b, &matrix);
    BSON_APPEND_BOOL(b, "ok", chance(r, 0.95));
    when(r, b, "at", 700);
    if (chance(r, 0.2))
        app_str(b, "reason", words(r, t, randint(r, 4, 30), false));
    else
        BSON_APPEND_NULL(b, "reason");
}

typedef void (*GenFn)(Rng *r, Text *t, uint64_t i, bson_t *b);

static const struct {
    const char *db, *name;
    GenFn gen;
    WsIdKind id;
    double mib;
} DATASET[] = {
    {"app", "users", gen_users, WS_ID_INT32, 20},
    {"app", "orders", gen_orders, WS_ID_OBJECTID, 38},
    {"app", "products", gen_products, WS_ID_STRING, 24},
    {"app", "articles", gen_articles, WS_ID_OBJECTID, 38},
    {"app", "attachments", gen_attachments, WS_ID_OBJECTID, 38},
    {"app", "sessions", gen_sessions, WS_ID_UUID, 14},
    {"logs", "events", gen_events, WS_ID_OBJECTID, 16},
    {"logs", "metrics", gen_metrics, WS_ID_STRING, 22},
    {"logs", "audit", gen_audit, WS_ID_INT64, 10},
};
#define DATASET_N (sizeof(DATASET) / sizeof(DATASET[0]))

/* ---- _ids ---- */

static const uint8_t ID_CONST[8] = {0x6d, 0x73, 0x6e, 0x61, 0x70, 0x77, 0x69, 0x72};

static bool is_metrics(const WsCollection *c) {
    return strcmp(c->name, "metrics") == 0;
}

static uint32_t id_len_of(const WsCollection *c) {
    switch (c->id_kind) {
    case WS_ID_INT32:
        return 4;
    case WS_ID_OBJECTID:
        return 12;
    case WS_ID_STRING:
        return 4 + 16; /* "SKU-%012" or "%012:h%03" + NUL, both 15 characters + NUL */
    case WS_ID_UUID:
        return 4 + 1 + 16;
    case WS_ID_INT64:
        return 8;
    }
    return 0;
}

static uint8_t id_type(const WsCollection *c) {
    static const uint8_t t[] = {[WS_ID_INT32] = BSON_TYPE_INT32,
                                [WS_ID_OBJECTID] = BSON_TYPE_OID,
                                [WS_ID_STRING] = BSON_TYPE_UTF8,
                                [WS_ID_UUID] = BSON_TYPE_BINARY,
                                [WS_ID_INT64] = BSON_TYPE_INT64};
    return t[c->id_kind];
}

static void put_be(uint8_t *p, uint64_t v, int n) {
    for (int k = n - 1; k >= 0; k--, v >>= 8)
        p[k] = (uint8_t) v;
}

static void id_string(const WsCollection *c, uint64_t i, char out[16]) {
    char tmp[32];
    if (is_metrics(c))
        snprintf(tmp, sizeof(tmp), "%010" PRIu64 ":h%03u", i % 10000000000u, (unsigned) (i % 500));
    else
        snprintf(tmp, sizeof(tmp), "SKU-%011" PRIu64, i % 100000000000u);
    memcpy(out, tmp, 16);
}

/* The _id value's bytes (little-endian numbers, as BSON stores them). */
static void id_write(const WsCollection *c, uint64_t i, uint8_t *p) {
    switch (c->id_kind) {
    case WS_ID_INT32: {
        int32_t v = (int32_t) i;
        memcpy(p, &v, 4);
        break;
    }
    case WS_ID_OBJECTID:
        put_be(p, UINT64_C(1735689600) + (i >> 6), 4);
        memcpy(p + 4, ID_CONST, 5);
        put_be(p + 9, i & 0xffffff, 3);
        break;
    case WS_ID_STRING: {
        int32_t len = 16;
        memcpy(p, &len, 4);
        id_string(c, i, (char *) p + 4);
        break;
    }
    case WS_ID_UUID: {
        int32_t len = 16;
        memcpy(p, &len, 4);
        p[4] = BSON_SUBTYPE_UUID;
        put_be(p + 5, i, 8);
        memcpy(p + 13, ID_CONST, 8);
        break;
    }
    case WS_ID_INT64: {
        int64_t v = INT64_C(1700000000000) + (int64_t) i;
        memcpy(p, &v, 8);
        break;
    }
    }
}

void ws_append_id(const WsCollection *c, uint64_t i, bson_t *b, const char *key) {
    uint8_t v[32];
    id_write(c, i, v);
    switch (c->id_kind) {
    case WS_ID_INT32:
        BSON_APPEND_INT32(b, key, (int32_t) i);
        break;
    case WS_ID_OBJECTID: {
        bson_oid_t o;
        memcpy(o.bytes, v, 12);
        BSON_APPEND_OID(b, key, &o);
        break;
    }
    case WS_ID_STRING:
        app_str(b, key, (const char *) v + 4);
        break;
    case WS_ID_UUID:
        BSON_APPEND_BINARY(b, key, BSON_SUBTYPE_UUID, v + 5, 16);
        break;
    case WS_ID_INT64:
        BSON_APPEND_INT64(b, key, INT64_C(1700000000000) + (int64_t) i);
        break;
    }
}

/* ---- generation ---- */

static void generate(WsCollection *c, size_t which, double scale, double pool_scale) {
    Rng r;
    char seed[96];
    snprintf(seed, sizeof(seed), "mongosnap-bench/%s.%s", c->db, c->name);
    rng_seed_str(&r, seed);
    Text t = {0};
    uint64_t target = (uint64_t) (c->target_mib * MIB * (scale < pool_scale ? scale : pool_scale));
    size_t cap = (size_t) target + (1u << 20), len = 0, n_cap = 1024;
    c->pool = malloc(cap);
    c->offsets = malloc(n_cap * sizeof(uint64_t));
    if (!c->pool || !c->offsets)
        abort();
    uint64_t n = 0;
    bson_t b = BSON_INITIALIZER;
    while (len < target || n == 0) {
        bson_reinit(&b);
        ws_append_id(c, n, &b, "_id");
        DATASET[which].gen(&r, &t, n, &b);
        if (len + b.len > cap) {
            cap = (len + b.len) * 2;
            c->pool = realloc(c->pool, cap);
        }
        if (n + 2 > n_cap) {
            n_cap *= 2;
            c->offsets = realloc(c->offsets, n_cap * sizeof(uint64_t));
        }
        if (!c->pool || !c->offsets)
            abort();
        c->offsets[n++] = len;
        memcpy(c->pool + len, bson_get_data(&b), b.len);
        len += b.len;
    }
    bson_destroy(&b);
    free(t.p);
    c->offsets[n] = len;
    c->pool_n = n;
    c->n = scale > pool_scale ? (uint64_t) ((double) n * scale / pool_scale + 0.5) : n;
    /* Every copy of the pool has the same bytes, so the total is whole copies plus a head. */
    uint64_t copies = c->n / n, rest = c->n % n;
    c->bytes = copies * len + c->offsets[rest];
    c->visible = c->n;
    c->n_base = c->n;
}

typedef struct {
    WsCollection *c;
    double scale, pool_scale;
    atomic_size_t next;
} GenJob;

static void *gen_thread(void *userdata) {
    GenJob *j = userdata;
    for (size_t k; (k = atomic_fetch_add(&j->next, 1)) < DATASET_N;)
        generate(&j->c[k], k, j->scale, j->pool_scale);
    return NULL;
}

WsCollection *ws_dataset_new(double scale, double pool_scale, size_t *ret_n) {
    words_init();
    WsCollection *c = calloc(DATASET_N, sizeof(*c));
    if (!c)
        abort();
    for (size_t k = 0; k < DATASET_N; k++) {
        c[k].db = DATASET[k].db;
        c[k].name = DATASET[k].name;
        c[k].id_kind = DATASET[k].id;
        c[k].target_mib = DATASET[k].mib;
        c[k].id_len = id_len_of(&c[k]);
    }
    GenJob j = {.c = c, .scale = scale, .pool_scale = pool_scale};
    pthread_t th[2];
    for (int k = 0; k < 2; k++)
        pthread_create(&th[k], NULL, gen_thread, &j);
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    *ret_n = DATASET_N;
    return c;
}

void ws_dataset_free(WsCollection *c, size_t n) {
    for (size_t k = 0; k < n; k++) {
        free(c[k].version);
        free(c[k].pool);
        free(c[k].offsets);
    }
    free(c);
}

/* Which pool document gives document i its body: its own, another one after an update, and
 * for an inserted document one picked by its index. */
static uint64_t body_of(const WsCollection *c, uint64_t i) {
    if (i >= c->n_base)
        return (i * 31 + 7) % c->pool_n;
    uint32_t v = c->version ? c->version[i] : 0;
    return v ? (i + (uint64_t) v * 7919) % c->pool_n : i % c->pool_n;
}

uint32_t ws_doc_len(const WsCollection *c, uint64_t i) {
    uint64_t k = body_of(c, i);
    return (uint32_t) (c->offsets[k + 1] - c->offsets[k]);
}

void ws_doc_copy(const WsCollection *c, uint64_t i, uint8_t *out) {
    uint64_t k = body_of(c, i);
    memcpy(out, c->pool + c->offsets[k], c->offsets[k + 1] - c->offsets[k]);
    /* int32 length, type byte, "_id\0": the value starts at byte 9 */
    id_write(c, i, out + 9);
}

/* ---- ordering by _id ---- */

static int type_rank(bson_type_t t) {
    switch (t) {
    case BSON_TYPE_MINKEY:
        return 1;
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
        return 5;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128:
        return 10;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL:
        return 15;
    case BSON_TYPE_DOCUMENT:
        return 20;
    case BSON_TYPE_ARRAY:
        return 25;
    case BSON_TYPE_BINARY:
        return 30;
    case BSON_TYPE_OID:
        return 35;
    case BSON_TYPE_BOOL:
        return 40;
    case BSON_TYPE_DATE_TIME:
        return 45;
    case BSON_TYPE_TIMESTAMP:
        return 47;
    case BSON_TYPE_REGEX:
        return 50;
    case BSON_TYPE_MAXKEY:
        return 127;
    default:
        return 60;
    }
}

static int cmp_num(double a, double b) {
    return a < b ? -1 : a > b;
}

/* id(i) compared with v */
static int id_cmp(const WsCollection *c, uint64_t i, const bson_iter_t *v) {
    int ra = type_rank((bson_type_t) id_type(c)), rb = type_rank(bson_iter_type(v));
    if (ra != rb)
        return ra < rb ? -1 : 1;
    uint8_t idv[32];
    id_write(c, i, idv);
    switch (c->id_kind) {
    case WS_ID_INT32:
    case WS_ID_INT64: {
        int64_t a = c->id_kind == WS_ID_INT32 ? (int64_t) i : INT64_C(1700000000000) + (int64_t) i;
        if (bson_iter_type(v) == BSON_TYPE_DOUBLE)
            return cmp_num((double) a, bson_iter_double(v));
        int64_t bv = bson_iter_as_int64(v);
        return a < bv ? -1 : a > bv;
    }
    case WS_ID_OBJECTID:
        return memcmp(idv, bson_iter_oid(v)->bytes, 12);
    case WS_ID_STRING: {
        uint32_t blen;
        const char *bs = bson_iter_utf8(v, &blen);
        int r = memcmp(idv + 4, bs, blen < 15 ? blen : 15);
        return r ? r : (15 > blen) - (15 < blen);
    }
    case WS_ID_UUID: {
        bson_subtype_t st;
        uint32_t blen;
        const uint8_t *bd;
        bson_iter_binary(v, &st, &blen, &bd);
        if (blen != 16)
            return 16 < blen ? -1 : 1;
        if (st != BSON_SUBTYPE_UUID)
            return BSON_SUBTYPE_UUID < st ? -1 : 1;
        return memcmp(idv + 5, bd, 16);
    }
    }
    return 0;
}

uint64_t ws_lower_bound(const WsCollection *c, const bson_iter_t *v, int strict) {
    uint64_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int r = id_cmp(c, mid, v);
        if (r < 0 || (strict && r == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- churn ---- */

static double unit_hash(uint64_t a, uint64_t b, uint64_t salt) {
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL) * 0xc2b2ae3d27d4eb4fULL ^ salt;
    x = splitmix(&x);
    return (double) (x >> 11) * 0x1.0p-53;
}

void ws_dataset_set_day(WsCollection *cs, size_t n_colls, unsigned day, double upd, double ins,
                        double del) {
    for (size_t k = 0; k < n_colls; k++) {
        WsCollection *c = &cs[k];
        uint64_t seed = 0;
        for (const char *p = c->name; *p; p++)
            seed = seed * 131 + (uint8_t) *p;
        free(c->version);
        c->version = day ? calloc(c->n_base ? c->n_base : 1, sizeof(uint32_t)) : NULL;
        if (day && !c->version)
            abort();
        c->day = day;
        c->ins_per_day = (uint64_t) ((double) c->n_base * ins + 0.5);
        for (unsigned d = 1; d <= day; d++)
            for (uint64_t i = 0; i < c->n_base; i++) {
                if (c->version[i] == WS_DELETED)
                    continue;
                if (unit_hash(i, d, seed ^ 0xde1e7e) < del)
                    c->version[i] = WS_DELETED;
                else if (unit_hash(i, d, seed ^ 0x0bda7e) < upd)
                    c->version[i] = d;
            }
        c->n = c->n_base + (uint64_t) day * c->ins_per_day;
        c->visible = 0;
        c->bytes = 0;
        for (uint64_t i = 0; i < c->n; i++)
            if (ws_doc_visible(c, i)) {
                c->visible++;
                c->bytes += ws_doc_len(c, i);
            }
    }
}

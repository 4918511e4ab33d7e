/* The archive reader's fast BSON check (bson-check.h). */
#include "bson-check.h"

#include <endian.h>
#include <string.h>

/* Deeper documents are rare; bson_validate decides for them. */
#define FAST_MAX_DEPTH 32

static uint32_t load_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

/* An element's key: ASCII up to its terminating zero, inside [p, end). Returns the byte after
 * the zero, or NULL (a non-ASCII key is left to bson_validate's UTF-8 check). */
static const uint8_t *skip_ascii_key(const uint8_t *p, const uint8_t *end) {
    for (; p < end; p++) {
        if (*p == 0)
            return p + 1;
        if (*p & 0x80)
            return NULL;
    }
    return NULL;
}

static bool check_document(const uint8_t *doc, size_t len, int depth);

/* A string value at p: int32 length >= 1, the bytes inside [p, end), the last one zero. */
static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end) {
    if (end - p < 4)
        return NULL;
    uint32_t n = load_le32(p);
    if (n < 1 || n > (size_t) (end - p) - 4 || p[4 + n - 1] != 0)
        return NULL;
    return p + 4 + n;
}

static bool check_document(const uint8_t *doc, size_t len, int depth) {
    if (depth > FAST_MAX_DEPTH || len < 5 || load_le32(doc) != len || doc[len - 1] != 0)
        return false;
    const uint8_t *p = doc + 4, *end = doc + len - 1; /* end: the document's final zero */
    while (p < end) {
        uint8_t type = *p++;
        p = skip_ascii_key(p, end);
        if (!p)
            return false;
        size_t left = (size_t) (end - p);
        switch (type) {
        case 0x01: /* double */
        case 0x09: /* UTC datetime */
        case 0x11: /* timestamp */
        case 0x12: /* int64 */
            if (left < 8)
                return false;
            p += 8;
            break;
        case 0x10: /* int32 */
            if (left < 4)
                return false;
            p += 4;
            break;
        case 0x13: /* decimal128 */
            if (left < 16)
                return false;
            p += 16;
            break;
        case 0x07: /* ObjectId */
            if (left < 12)
                return false;
            p += 12;
            break;
        case 0x08: /* boolean */
            if (left < 1 || p[0] > 1)
                return false;
            p += 1;
            break;
        case 0x0A: /* null */
        case 0xFF: /* MinKey */
        case 0x7F: /* MaxKey */
            break;
        case 0x02: /* string */
            p = skip_string(p, end);
            if (!p)
                return false;
            break;
        case 0x03: /* document */
        case 0x04: /* array */ {
            if (left < 5)
                return false;
            uint32_t n = load_le32(p);
            if (n < 5 || n > left || !check_document(p, n, depth + 1))
                return false;
            p += n;
            break;
        }
        case 0x05: { /* binary: int32 length, subtype, bytes; the old subtype 2 nests a length */
            if (left < 5)
                return false;
            uint32_t n = load_le32(p);
            if (n > left - 5 || p[4] == 0x02)
                return false;
            p += 5 + n;
            break;
        }
        default: /* undefined, regex, DBPointer, code, symbol, code with scope, unknown */
            return false;
        }
    }
    return p == end;
}

bool ms_bson_check_fast(const uint8_t *doc, size_t len) {
    return check_document(doc, len, 0);
}

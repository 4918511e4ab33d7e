/* Minimal XML element extraction for S3 responses (see s3-xml.h for why not a full parser). */
#include "s3-xml.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

#define CDATA_OPEN "<![CDATA["
#define CDATA_CLOSE "]]>"
/* Unicode's last code point; references beyond it (or to surrogates, or NUL) are invalid. */
#define UNICODE_MAX 0x10FFFF

static bool is_name_end(char c) {
    return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool ms_s3_xml_next(const char **pos, const char *end, const char *name, const char **ret_inner,
                    size_t *ret_inner_len) {
    size_t nlen = strlen(name);
    const char *p = *pos;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t) (end - p));
        if (!lt || (size_t) (end - lt) < nlen + 2)
            return false;
        if (memcmp(lt + 1, name, nlen) != 0 || !is_name_end(lt[1 + nlen])) {
            p = lt + 1;
            continue;
        }
        const char *gt = memchr(lt + 1 + nlen, '>', (size_t) (end - (lt + 1 + nlen)));
        if (!gt)
            return false;
        if (gt[-1] == '/') { /* <name/> or <name attr="x"/> */
            *ret_inner = gt + 1;
            *ret_inner_len = 0;
            *pos = gt + 1;
            return true;
        }
        const char *content = gt + 1;
        /* The closing tag: "</name" then optional blanks then '>'. */
        for (const char *q = content; q < end;) {
            const char *c = memchr(q, '<', (size_t) (end - q));
            if (!c || (size_t) (end - c) < nlen + 3)
                return false;
            if (c[1] == '/' && memcmp(c + 2, name, nlen) == 0) {
                const char *t = c + 2 + nlen;
                while (t < end && (*t == ' ' || *t == '\t' || *t == '\r' || *t == '\n'))
                    t++;
                if (t < end && *t == '>') {
                    *ret_inner = content;
                    *ret_inner_len = (size_t) (c - content);
                    *pos = t + 1;
                    return true;
                }
            }
            /* Skip CDATA wholesale: it may hold '<' that is text. */
            if ((size_t) (end - c) >= strlen(CDATA_OPEN) &&
                memcmp(c, CDATA_OPEN, strlen(CDATA_OPEN)) == 0) {
                const char *close = memmem(c, (size_t) (end - c), CDATA_CLOSE, strlen(CDATA_CLOSE));
                if (!close)
                    return false;
                q = close + strlen(CDATA_CLOSE);
                continue;
            }
            q = c + 1;
        }
        return false;
    }
    return false;
}

static size_t utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char) cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char) (0xC0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char) (0xE0 | (cp >> 12));
        out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char) (0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char) (0xF0 | (cp >> 18));
    out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char) (0x80 | (cp & 0x3F));
    return 4;
}

/* One entity starting at s ('&'); writes its text to o and returns the bytes consumed, 0
 * when invalid. */
static size_t decode_entity(const char *s, const char *end, char *o, size_t *ret_written) {
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    const char *p = s + 1;
    for (size_t i = 0; i < ELEMENTSOF(named); i++) {
        size_t l = strlen(named[i].name);
        if ((size_t) (end - p) >= l && memcmp(p, named[i].name, l) == 0) {
            o[0] = named[i].c;
            *ret_written = 1;
            return 1 + l;
        }
    }
    if (p >= end || *p != '#')
        return 0;
    p++;
    bool hex = p < end && (*p == 'x' || *p == 'X');
    if (hex)
        p++;
    uint32_t cp = 0;
    const char *digits = p;
    for (; p < end && *p != ';'; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (hex && *p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (hex && *p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            return 0;
        cp = cp * (hex ? 16 : 10) + (uint32_t) d;
        if (cp > UNICODE_MAX)
            return 0;
    }
    if (p >= end || p == digits || cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *ret_written = utf8_encode(cp, o);
    return (size_t) (p + 1 - s);
}

int ms_s3_xml_decode(const char *s, size_t len, char **ret) {
    /* Decoding never makes text longer: the longest output (4 UTF-8 bytes) comes from at
     * least 4 input bytes ("&#x10000;"). */
    char *out = malloc(len + 1), *o = out;
    if (!out)
        return -ENOMEM;
    const char *end = s + len;
    for (const char *p = s; p < end;) {
        if (*p == '&') {
            size_t written = 0, used = decode_entity(p, end, o, &written);
            if (used == 0) {
                free(out);
                return -EBADMSG;
            }
            o += written;
            p += used;
        } else if (*p == '<') {
            if ((size_t) (end - p) < strlen(CDATA_OPEN) ||
                memcmp(p, CDATA_OPEN, strlen(CDATA_OPEN)) != 0) {
                free(out);
                return -EBADMSG;
            }
            const char *start = p + strlen(CDATA_OPEN);
            const char *close =
                memmem(start, (size_t) (end - start), CDATA_CLOSE, strlen(CDATA_CLOSE));
            if (!close) {
                free(out);
                return -EBADMSG;
            }
            memcpy(o, start, (size_t) (close - start));
            o += close - start;
            p = close + strlen(CDATA_CLOSE);
        } else
            *o++ = *p++;
    }
    *o = '\0';
    /* A NUL from CDATA would cut the string silently. */
    if (strlen(out) != (size_t) (o - out)) {
        free(out);
        return -EBADMSG;
    }
    *ret = out;
    return 0;
}

int ms_s3_xml_text(const char *xml, size_t len, const char *name, char **ret) {
    const char *pos = xml, *inner;
    size_t inner_len;
    if (!ms_s3_xml_next(&pos, xml + len, name, &inner, &inner_len))
        return -ENOENT;
    return ms_s3_xml_decode(inner, inner_len, ret);
}

int ms_s3_xml_error(const char *xml, size_t len, char **ret_code, char **ret_message) {
    const char *pos = xml, *inner;
    size_t inner_len;
    if (!xml || !ms_s3_xml_next(&pos, xml + len, "Error", &inner, &inner_len))
        return -ENOENT;
    char *code = NULL, *message = NULL;
    int r = ms_s3_xml_text(inner, inner_len, "Code", &code);
    if (r < 0 && r != -ENOENT)
        return r;
    r = ms_s3_xml_text(inner, inner_len, "Message", &message);
    if (r < 0 && r != -ENOENT) {
        free(code);
        return r;
    }
    *ret_code = code;
    *ret_message = message;
    return 0;
}

char *ms_s3_xml_escape(const char *s) {
    size_t len = 0;
    for (const char *p = s; *p; p++)
        len += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '"' || *p == '\'') ? 6 : 1;
    char *out = malloc(len + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        const char *rep = *p == '&'    ? "&amp;"
                          : *p == '<'  ? "&lt;"
                          : *p == '>'  ? "&gt;"
                          : *p == '"'  ? "&quot;"
                          : *p == '\'' ? "&apos;"
                                       : NULL;
        if (rep) {
            memcpy(o, rep, strlen(rep));
            o += strlen(rep);
        } else
            *o++ = *p;
    }
    *o = '\0';
    return out;
}

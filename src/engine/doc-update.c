/* An oplog update applied in memory: see doc-update.h. */
#include "doc-update.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

typedef struct Change {
    const char *path;
    bson_iter_t value; /* for $set */
    bool unset;
} Change;

/* Whether change c lies under prefix and names name there: 0 no, 1 exactly, 2 below it. */
static int names(const Change *c, const char *prefix, size_t plen, const char *name, size_t nlen) {
    if (strncmp(c->path, prefix, plen) != 0)
        return 0;
    const char *rest = c->path + plen;
    size_t seg = strcspn(rest, ".");
    if (seg != nlen || strncmp(rest, name, nlen) != 0)
        return 0;
    return rest[seg] ? 2 : 1;
}

static int rebuild(const bson_t *src, const char *prefix, const Change *ch, size_t n, bson_t *out,
                   bool array, MsError *e);

static int descend(const bson_t *child, bool child_array, const char *prefix, const char *name,
                   size_t nlen, const Change *ch, size_t n, bson_t *out, MsError *e) {
    _cleanup_free_ char *sub = NULL;
    if (asprintf(&sub, "%s%.*s.", prefix, (int) nlen, name) < 0)
        return ms_error_set(e, ENOMEM, "out of memory");
    bson_t o;
    bool ok = child_array ? bson_append_array_begin(out, name, (int) nlen, &o)
                          : bson_append_document_begin(out, name, (int) nlen, &o);
    if (!ok)
        return ms_error_set(e, EOVERFLOW, "a document grew past BSON's limit");
    int r = rebuild(child, sub, ch, n, &o, child_array, e);
    ok = child_array ? bson_append_array_end(out, &o) : bson_append_document_end(out, &o);
    if (r == 0 && !ok)
        r = ms_error_set(e, EOVERFLOW, "a document grew past BSON's limit");
    return r;
}

static int rebuild(const bson_t *src, const char *prefix, const Change *ch, size_t n, bson_t *out,
                   bool array, MsError *e) {
    size_t plen = strlen(prefix);
    bson_iter_t it;
    if (src && !bson_iter_init(&it, src))
        return ms_error_set(e, EBADMSG, "a document to update is not BSON");
    while (src && bson_iter_next(&it)) {
        const char *name = bson_iter_key(&it);
        size_t nlen = strlen(name);
        const Change *exact = NULL;
        bool below = false, set_below = false;
        for (size_t i = 0; i < n; i++) {
            int k = names(&ch[i], prefix, plen, name, nlen);
            if (k == 1)
                exact = &ch[i];
            else if (k == 2) {
                below = true;
                set_below |= !ch[i].unset;
            }
        }
        if (exact) {
            /* An array element unset becomes null, as on a server: the others keep their index. */
            bool ok = exact->unset ? !array || bson_append_null(out, name, (int) nlen)
                                   : bson_append_iter(out, name, (int) nlen, &exact->value);
            if (!ok)
                return ms_error_set(e, EOVERFLOW, "a document grew past BSON's limit");
            continue;
        }
        bool container = BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it);
        if (below && !container && set_below)
            return ms_error_set(e, EINVAL, "an update sets a field inside '%s%s', which is not a "
                                           "document",
                                prefix, name);
        if (below && container) {
            const uint8_t *data;
            uint32_t len;
            bool is_array = BSON_ITER_HOLDS_ARRAY(&it);
            if (is_array)
                bson_iter_array(&it, &len, &data);
            else
                bson_iter_document(&it, &len, &data);
            bson_t child;
            if (!bson_init_static(&child, data, len))
                return ms_error_set(e, EBADMSG, "a document to update is not BSON");
            int r = descend(&child, is_array, prefix, name, nlen, ch, n, out, e);
            if (r < 0)
                return r;
            continue;
        }
        if (!bson_append_iter(out, name, (int) nlen, &it))
            return ms_error_set(e, EOVERFLOW, "a document grew past BSON's limit");
    }
    /* Fields the update creates at this level, each once, in the update's order. */
    for (size_t i = 0; i < n; i++) {
        if (ch[i].unset || strncmp(ch[i].path, prefix, plen) != 0)
            continue;
        const char *rest = ch[i].path + plen;
        size_t seg = strcspn(rest, ".");
        bson_iter_t found;
        _cleanup_free_ char *name = strndup(rest, seg);
        if (!name)
            return ms_error_set(e, ENOMEM, "out of memory");
        if (src && bson_iter_init_find(&found, src, name))
            continue;
        bool earlier = false;
        for (size_t j = 0; j < i && !earlier; j++)
            earlier = !ch[j].unset && names(&ch[j], prefix, plen, rest, seg) > 0;
        if (earlier)
            continue;
        if (array)
            return ms_error_set(e, ENOTSUP, "an update sets '%s' past the end of an array",
                                ch[i].path);
        int r = 0;
        if (!rest[seg]) {
            if (!bson_append_iter(out, name, (int) seg, &ch[i].value))
                r = ms_error_set(e, EOVERFLOW, "a document grew past BSON's limit");
        } else
            r = descend(NULL, false, prefix, name, seg, ch, n, out, e);
        if (r < 0)
            return r;
    }
    return 0;
}

int ms_doc_update_apply(const bson_t *doc, const bson_t *update, bson_t *ret, MsError *e) {
    bson_init(ret);
    size_t n = 0, cap = 0;
    _cleanup_free_ Change *ch = NULL;
    bson_iter_t op, f;
    if (!bson_iter_init(&op, update))
        return ms_error_set(e, EBADMSG, "an update is not BSON");
    while (bson_iter_next(&op)) {
        const char *name = bson_iter_key(&op);
        bool unset = strcmp(name, "$unset") == 0;
        if (!unset && strcmp(name, "$set") != 0)
            return ms_error_set(e, ENOTSUP, "an update uses '%s', which cannot be replayed here "
                                            "(only $set and $unset)",
                                name);
        if (!BSON_ITER_HOLDS_DOCUMENT(&op) || !bson_iter_recurse(&op, &f))
            return ms_error_set(e, EBADMSG, "an update's %s is not a document", name);
        while (bson_iter_next(&f)) {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                Change *grown = realloc(ch, cap * sizeof(*ch));
                if (!grown)
                    return ms_error_set(e, ENOMEM, "out of memory");
                ch = grown;
            }
            const char *path = bson_iter_key(&f);
            if (!*path || path[0] == '.' || path[strlen(path) - 1] == '.' || strstr(path, ".."))
                return ms_error_set(e, EBADMSG, "an update names the field path '%s'", path);
            ch[n++] = (Change){.path = path, .value = f, .unset = unset};
        }
    }
    int r = rebuild(doc, "", ch, n, ret, false, e);
    if (r < 0) {
        bson_destroy(ret);
        bson_init(ret);
    }
    return r;
}

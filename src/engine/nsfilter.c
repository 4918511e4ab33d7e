/* Namespace patterns: include/exclude and renames with '*' wildcards (mongorestore's --nsFrom/--nsTo). */
#include "nsfilter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

#define MS_NS_MAX_WILDCARDS 8

/* Glob where only '*' is special, in O(len(pattern) x len(s)): on a mismatch only the most
 * recent '*' grows. That finds a match whenever one exists, and its bindings are the captures
 * renames use (each '*' as short as the match allows, left to right). */
static bool glob_match(const char *pat, const char *s, const char **caps, size_t *cap_lens,
                       size_t max_caps) {
    const char *p = pat, *star_p = NULL, *star_s = NULL;
    size_t star_index = 0, stars_seen = 0;
    while (*s) {
        if (*p == '*') {
            star_index = stars_seen++;
            star_p = ++p;
            star_s = s;
            if (star_index < max_caps) {
                caps[star_index] = s;
                cap_lens[star_index] = 0;
            }
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star_p) {
            /* Grow the last '*' by one character and retry after it. */
            p = star_p;
            s = ++star_s;
            stars_seen = star_index + 1;
            if (star_index < max_caps)
                cap_lens[star_index] = (size_t) (s - caps[star_index]);
        } else
            return false;
    }
    while (*p == '*') {
        if (stars_seen < max_caps) {
            caps[stars_seen] = s;
            cap_lens[stars_seen] = 0;
        }
        stars_seen++;
        p++;
    }
    return *p == '\0';
}


static size_t count_stars(const char *p) {
    size_t n = 0;
    for (; *p; p++)
        n += *p == '*';
    return n;
}

bool ms_ns_match(const char *pattern, const char *ns) {
    const char *caps[MS_NS_MAX_WILDCARDS];
    size_t lens[MS_NS_MAX_WILDCARDS];
    return glob_match(pattern, ns, caps, lens, 0);
}

bool ms_ns_filter_selects(const MsNsFilter *f, const char *ns) {
    bool selected = f->n_include == 0;
    for (size_t i = 0; i < f->n_include && !selected; i++)
        selected = ms_ns_match(f->include[i], ns);
    for (size_t i = 0; i < f->n_exclude && selected; i++)
        if (ms_ns_match(f->exclude[i], ns))
            selected = false;
    return selected;
}

char *ms_ns_filter_rename(const MsNsFilter *f, const char *ns) {
    for (size_t i = 0; i < f->n_rename; i++) {
        const char *caps[MS_NS_MAX_WILDCARDS];
        size_t lens[MS_NS_MAX_WILDCARDS];
        if (!glob_match(f->rename_from[i], ns, caps, lens, MS_NS_MAX_WILDCARDS))
            continue;
        const char *to = f->rename_to[i];
        size_t out_len = strlen(to) + strlen(ns) + 1;
        char *out = malloc(out_len);
        if (!out)
            return NULL;
        size_t o = 0, c = 0;
        for (const char *p = to; *p; p++) {
            if (*p == '*') {
                memcpy(out + o, caps[c], lens[c]);
                o += lens[c];
                c++;
            } else
                out[o++] = *p;
        }
        out[o] = '\0';
        return out;
    }
    return strdup(ns);
}

int ms_ns_filter_validate(const MsNsFilter *f, MsError *e) {
    char **lists[] = {f->include, f->exclude, f->rename_from, f->rename_to};
    size_t counts[] = {f->n_include, f->n_exclude, f->n_rename, f->n_rename};
    for (size_t l = 0; l < ELEMENTSOF(lists); l++)
        for (size_t i = 0; i < counts[l]; i++) {
            const char *p = lists[l][i];
            if (!strchr(p, '.'))
                return ms_error_set(e, EINVAL,
                                    "namespace pattern '%s' has no '.': write it as DB.COLLECTION, "
                                    "e.g. 'shop.*' or '*.orders'",
                                    p);
            if (count_stars(p) > MS_NS_MAX_WILDCARDS)
                return ms_error_set(e, EINVAL, "namespace pattern '%s' has more than %d '*'", p,
                                    MS_NS_MAX_WILDCARDS);
        }
    for (size_t i = 0; i < f->n_rename; i++)
        if (count_stars(f->rename_from[i]) != count_stars(f->rename_to[i]))
            return ms_error_set(e, EINVAL,
                                "rename '%s' -> '%s': both sides need the same number of '*'",
                                f->rename_from[i], f->rename_to[i]);
    return 0;
}

int ms_ns_filter_add(char ***list, size_t *n, const char *pattern) {
    char **l = realloc(*list, (*n + 1) * sizeof(char *));
    if (!l)
        return -ENOMEM;
    *list = l;
    l[*n] = strdup(pattern);
    if (!l[*n])
        return -ENOMEM;
    (*n)++;
    return 0;
}

static void strv_free_n(char **l, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void ms_ns_filter_clear(MsNsFilter *f) {
    strv_free_n(f->include, f->n_include);
    strv_free_n(f->exclude, f->n_exclude);
    strv_free_n(f->rename_from, f->n_rename);
    strv_free_n(f->rename_to, f->n_rename);
    memset(f, 0, sizeof(*f));
}

int ms_ns_split(const char *ns, char **ret_db, char **ret_coll) {
    const char *dot = strchr(ns, '.');
    if (!dot)
        return -EINVAL;
    char *db = strndup(ns, (size_t) (dot - ns));
    char *coll = strdup(dot + 1);
    if (!db || !coll) {
        free(db);
        free(coll);
        return -ENOMEM;
    }
    *ret_db = db;
    *ret_coll = coll;
    return 0;
}

char *ms_ns_join(const char *db, const char *coll) {
    char *s = NULL;
    if (asprintf(&s, "%s.%s", db, coll) < 0)
        return NULL;
    return s;
}

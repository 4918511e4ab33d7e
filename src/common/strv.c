/* NULL-terminated string lists. */
#include "common/strv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t ms_strv_length(char *const *l) {
    size_t n = 0;
    while (l && l[n])
        n++;
    return n;
}

char **ms_strv_free(char **l) {
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
    return NULL;
}

int ms_strv_push(char ***l, const char *s) {
    size_t n = ms_strv_length(*l);
    char *copy = strdup(s);
    char **m = copy ? realloc(*l, (n + 2) * sizeof(char *)) : NULL;
    if (!m) {
        free(copy);
        return -ENOMEM;
    }
    *l = m;
    m[n] = copy;
    m[n + 1] = NULL;
    return 0;
}

char **ms_strv_copy(char *const *l, bool *ret_failed) {
    char **out = NULL;
    for (size_t i = 0; l && l[i]; i++)
        if (ms_strv_push(&out, l[i]) < 0) {
            if (ret_failed)
                *ret_failed = true;
            return ms_strv_free(out);
        }
    return out;
}

bool ms_strv_contains(char *const *l, const char *name) {
    for (size_t i = 0; l && l[i]; i++)
        if (strcmp(l[i], name) == 0)
            return true;
    return false;
}

/* NULL-terminated string lists ("strv", as systemd calls them), which the configuration, the
 * agent and mongosnapctl all pass around. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/macro.h"

size_t ms_strv_length(char *const *l);
/* Frees every string and the list; NULL-safe; returns NULL. */
char **ms_strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, ms_strv_free);
/* Appends a copy of s: -ENOMEM (the list unchanged) or 0. */
int ms_strv_push(char ***l, const char *s);
/* A copy of l (NULL for NULL); -ENOMEM as NULL too, with *ret_failed set when given. */
char **ms_strv_copy(char *const *l, bool *ret_failed);
/* Is name in the list? */
bool ms_strv_contains(char *const *l, const char *name);

/* Namespace selection and renaming for restores: "db.coll" patterns where '*' matches any run. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct MsNsFilter {
    char **include; /* empty: everything */
    size_t n_include;
    char **exclude;
    size_t n_exclude;
    char **rename_from; /* pairs; each '*' in from binds a run used by the same '*' in to */
    char **rename_to;
    size_t n_rename;
} MsNsFilter;

/* True when pattern matches ns ("db.coll"). */
bool ms_ns_match(const char *pattern, const char *ns);
/* True when db/collection are selected by the filter. */
bool ms_ns_filter_selects(const MsNsFilter *f, const char *ns);
/* The target namespace (newly allocated): the first matching rename applied, else a copy. */
char *ms_ns_filter_rename(const MsNsFilter *f, const char *ns);

/* Validate patterns: a rename's from and to must have the same number of '*'. */
int ms_ns_filter_validate(const MsNsFilter *f, MsError *e);
int ms_ns_filter_add(char ***list, size_t *n, const char *pattern);
void ms_ns_filter_clear(MsNsFilter *f);

/* Split "db.coll" at the first '.' (database names cannot contain '.'). */
int ms_ns_split(const char *ns, char **ret_db, char **ret_coll);
char *ms_ns_join(const char *db, const char *coll);

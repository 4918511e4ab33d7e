/* Namespace selection and renaming for snapshots and restores: "db.coll" patterns where '*'
 * matches any run. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

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
/* The same, and which rename applied (*ret_index: its position, -1 for none; may be NULL). */
char *ms_ns_filter_rename_which(const MsNsFilter *f, const char *ns, ssize_t *ret_index);

/* True when the filter could select some collection of database db. Exact for the include
 * side (is there any "db.X" an include pattern matches?); conservative for the exclude side
 * (only an exclude pattern that plainly covers every "db.X", such as "db.*" or "*.*", rules
 * the database out). A snapshot skips databases for which this is false without listing
 * their collections. */
bool ms_ns_filter_could_select_db(const MsNsFilter *f, const char *db);

/* What a filtered snapshot keeps of an oplog entry (see ms_ns_filter_oplog_entry()). */
typedef enum MsNsOplogVerdict {
    MS_NS_OPLOG_DROP = 0,
    MS_NS_OPLOG_KEEP = 1,
    MS_NS_OPLOG_REWRITTEN = 2, /* keep *ret_rewritten instead: an applyOps with ops removed */
} MsNsOplogVerdict;

/* Entries on admin.system.users/roles are kept whatever the filter says (--include-users). */
#define MS_NS_OPLOG_KEEP_USERS (1u << 0)
/* Entries on the config database are judged by the filter like any (a cluster snapshot's config
 * part: its routing changes are replayed to the cluster's consistency point); without this flag
 * they are never kept, as the config database is never dumped. */
#define MS_NS_OPLOG_KEEP_CONFIG (1u << 1)

/* Decide whether an oplog entry belongs in a snapshot of the namespaces f selects: CRUD by its
 * namespace, commands by the collection(s) they name, applyOps by its inner operations (a
 * partly selected applyOps is rewritten without the others). Returns a verdict, or a negative
 * errno with e set. On MS_NS_OPLOG_REWRITTEN the caller owns *ret_rewritten (bson_destroy()). */
int ms_ns_filter_oplog_entry(const MsNsFilter *f, unsigned flags, const bson_t *entry,
                             bson_t *ret_rewritten, MsError *e);

/* Validate patterns: not empty, "DB.COLLECTION" with both parts present, no character a
 * database name cannot hold before the first '.', at most 8 '*'; a rename's from and to must
 * have the same number of '*'. Messages name the pattern. */
int ms_ns_filter_validate(const MsNsFilter *f, MsError *e);
int ms_ns_filter_add(char ***list, size_t *n, const char *pattern);
void ms_ns_filter_clear(MsNsFilter *f);

/* Split "db.coll" at the first '.' (database names cannot contain '.'). */
int ms_ns_split(const char *ns, char **ret_db, char **ret_coll);
char *ms_ns_join(const char *db, const char *coll);

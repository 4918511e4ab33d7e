/* One field of a BSON document, read the way every layer reads its own documents (manifests,
 * worker messages, the cluster database's records, oplog entries): a missing field, or one of
 * another type, reads as "none" (NULL, false, 0) and never fails; the caller says what it missed.
 * Keys are top-level keys, not dotted paths. A NULL document has no fields. */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

/* A UTF-8 string field, borrowed from b. */
const char *ms_bson_str(const bson_t *b, const char *key);
/* A document or array field as a read-only bson_t over b's bytes (valid while b is). */
bool ms_bson_doc(const bson_t *b, const char *key, bson_t *ret);
/* A field present and true as BSON truth has it (bson_iter_as_bool: non-zero numbers too). */
bool ms_bson_true(const bson_t *b, const char *key);
/* A number (int32, int64 or double) as an unsigned count: negative and NaN read as 0, and a
 * double past UINT64_MAX as UINT64_MAX (a hostile value must not reach an undefined cast). */
uint64_t ms_bson_u64(const bson_t *b, const char *key);
/* A number (int32, int64 or double) as a double; 0 otherwise. */
double ms_bson_double(const bson_t *b, const char *key);

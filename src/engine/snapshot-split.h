/* Reading one large collection with several cursors: its _id space cut into ranges.
 *
 * mongodump reads a collection with one cursor, so one huge collection runs on one thread
 * however many there are. A snapshot splits a collection whose size calls for it into parts,
 * read at once by the dump threads and written into the archive as segments of the same
 * namespace (the archive writer chains their CRCs in archive order).
 *
 * The parts' filters partition every document whatever its _id, by construction:
 *   part 0:         {_id: {$not: {$gte: b0}}}    (also every _id of another type than b0's)
 *   part k:         {_id: {$gte: b(k-1), $lt: bk}}
 *   last part:      {_id: {$gte: b(n-2)}}
 * A document either is >= b0 or is not; those that are fall in exactly one of the ranges,
 * since the bounds increase and are all of one type. Range queries are type-bracketed in
 * MongoDB ({$lt: ObjectId} matches no string), which is why part 0 is a complement and not a
 * range, and why bounds of two types are never kept (the ints above an int b0 would be in no
 * part if b1 were a string): a mixed-type _id space is still read whole, only less evenly.
 *
 * Bounds: from the smallest and largest _id, interpolated when both are ObjectIds, dates or
 * finite integers/doubles (time-ordered and counter ids split evenly); otherwise the _id at
 * every (count / parts)-th position in _id order (a covered index walk on MongoDB). */
#pragma once

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct MsIdSplit {
    unsigned n_parts; /* 1: not split */
    bson_value_t *bounds; /* n_parts - 1, strictly increasing */
} MsIdSplit;

/* Plans up to `parts` parts of db.coll (count documents, estimated). Never fails: a collection
 * that cannot be split (empty, one distinct bound, a query refused) is one part. */
void ms_id_split_plan(mongoc_client_t *c, const char *db, const char *coll, uint64_t count,
                      unsigned parts, MsIdSplit *ret);
/* Bounds interpolated between min and max (up to parts - 1, strictly increasing, each above
 * min); 0 when the types do not interpolate. out: parts - 1 values, to bson_value_destroy. */
size_t ms_id_split_interpolate(const bson_value_t *min, const bson_value_t *max, unsigned parts,
                               bson_value_t *out);
/* The filter of part k (< n_parts) appended to filter (an empty document). */
void ms_id_split_filter(const MsIdSplit *s, unsigned k, bson_t *filter);
void ms_id_split_clear(MsIdSplit *s);

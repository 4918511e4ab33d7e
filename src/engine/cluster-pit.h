/* Point-in-time recovery of a sharded cluster: one oplog follower per part (every shard's
 * replica set and the config server), each writing its own chain of slices under
 *   <prefix>/oplog/parts/<part>/oplog/<start>-<end>.slice.json      (ms_cluster_part_slice_prefix)
 * beside the cluster snapshots of <prefix>. A time X is restorable from a cluster snapshot when
 * X is at or after its consistency point T and every part's chain reaches X from that part's
 * snapshot: the restorable ranges are the intersection of all parts' chains, per cluster
 * snapshot, merged. Planned from the store's listing and manifests alone, like oplog-slice.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "manifest.h"
#include "oplog-slice.h"
#include "storage/storage.h"

/* The directory between a cluster policy's prefix and a part's slice prefix. */
#define MS_CLUSTER_PART_SLICES "parts"

/* "<prefix>/oplog/parts/<part>": the prefix a part's follower writes its slices under. NULL when
 * part is not a plain name (empty, '/', "..", or starting with '.') or out of memory. */
char *ms_cluster_part_slice_prefix(const char *prefix, const char *part);

typedef struct MsClusterPitPart {
    char *name;
    MsOplogPosition start, end; /* the part snapshot's oplog start and end */
} MsClusterPitPart;

typedef struct MsClusterPitSnapshot {
    char *key;  /* its cluster manifest key */
    char *name; /* the snapshot's name */
    MsOplogPosition point;
    MsClusterPitPart *parts;
    size_t n_parts;
} MsClusterPitSnapshot;

typedef struct MsClusterPitChain {
    char *part;
    MsSliceRef *slices; /* sorted as ms_slices_list() returns them */
    size_t n;
} MsClusterPitChain;

/* A change of the cluster's shards (one added or removed), as the follower saw it:
 *   <prefix>/oplog/parts/<t>.<i>.shards.json   {"format", "at": {"t", "i"}, "shards": [...]}
 * at: the config server's oplog position of the change (the newest insert or delete on
 * config.shards), shards: the shard names from then on. A cluster snapshot's restorable range
 * ends before the first change after its consistency point to other shards than its parts'
 * (the new shard's data is in no part, and the donors replay the range deletions of what moved
 * there), and it has none when the shards in force at its point were others. */
typedef struct MsClusterPitTopology {
    MsOplogPosition at;
    char **shards; /* sorted (ms_strv) */
} MsClusterPitTopology;

#define MS_CLUSTER_TOPOLOGY_SUFFIX ".shards.json"

typedef struct MsClusterPit {
    MsClusterPitSnapshot *snaps; /* sorted by consistency point, oldest first */
    size_t n_snaps;
    MsClusterPitChain *chains; /* one per part name the snapshots name */
    size_t n_chains;
    MsClusterPitTopology *topology; /* sorted by at, oldest first */
    size_t n_topology;
} MsClusterPit;

/* Records a change of shards (names: the shards from then on, config part excluded). */
int ms_cluster_pit_topology_put(MsStorage *st, const char *prefix, MsOplogPosition at,
                                char *const *names, size_t n, MsError *e);
/* The recorded changes alone (no snapshot or chain read), into an empty pit. */
int ms_cluster_pit_topology_load(MsStorage *st, const char *prefix, MsClusterPit *ret, MsError *e);
/* Whether the newest recorded change names exactly these shards (false with none recorded). */
bool ms_cluster_pit_topology_is(const MsClusterPit *pit, char *const *names, size_t n);
/* The newest recorded change's position ({0, 0} with none). */
MsOplogPosition ms_cluster_pit_topology_last(const MsClusterPit *pit);
/* How far snapshot s may be restored for its shards' sake: MS_OPLOG_POSITION_MAX when no
 * change bounds it; a position before its point when it has no range at all. */
MsOplogPosition ms_cluster_pit_topology_cap(const MsClusterPit *pit, const MsClusterPitSnapshot *s);

/* The cluster snapshots directly under prefix/ (their parts' manifests read for their oplog
 * ends) and every part's chain. A damaged cluster or part manifest leaves that snapshot out
 * (with a warning); a store error fails the whole (planning and pruning must not go on
 * without a snapshot that is there). */
int ms_cluster_pit_load(MsStorage *st, const char *prefix, MsClusterPit *ret, MsError *e);
void ms_cluster_pit_clear(MsClusterPit *pit);

/* Adds a slice a follower just committed to its part's chain (kept sorted). */
int ms_cluster_pit_add_slice(MsClusterPit *pit, const char *part, const MsSliceRef *slice);

/* The restorable ranges: for each cluster snapshot, from its consistency point to the
 * earliest of its parts' reaches; overlapping ranges merged, sorted. */
int ms_cluster_pit_ranges(const MsClusterPit *pit, MsPitRange **ret, size_t *ret_n);

typedef struct MsClusterPitPlanPart {
    const char *name; /* borrowed from the pit */
    char **slice_keys; /* in replay order, NULL-terminated (ms_strv) */
    size_t n_slices;
} MsClusterPitPlanPart;

typedef struct MsClusterPitPlan {
    const MsClusterPitSnapshot *snapshot; /* borrowed from the pit */
    MsOplogPosition time;
    MsClusterPitPlanPart *parts;
    size_t n_parts;
} MsClusterPitPlan;

/* The newest cluster snapshot whose consistency point is at or before time, and no newer than
 * not_after when given (a cluster manifest key or snapshot name: the agent's choice), from
 * which every part reaches time, with each part's slices. -ERANGE naming the restorable ranges
 * when none does. */
int ms_cluster_pit_plan(const MsClusterPit *pit, MsOplogPosition time, const char *not_after,
                        MsClusterPitPlan *ret, MsError *e);
void ms_cluster_pit_plan_clear(MsClusterPitPlan *plan);
/* The slices of part in plan (NULL when the plan has none for it). */
const MsClusterPitPlanPart *ms_cluster_pit_plan_part(const MsClusterPitPlan *plan,
                                                     const char *part);

/* Retention of a part's slices: the oldest start of that part among the cluster snapshots;
 * false when no snapshot has the part (then nothing is removed). */
bool ms_cluster_pit_prune_cutoff(const MsClusterPit *pit, const char *part, MsOplogPosition *ret);

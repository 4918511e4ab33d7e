/* A cluster snapshot's part taken by another process (on another node: the agent beside one of
 * the shard's members), and how the coordinator and the part meet.
 *
 * The store is the meeting place: both already reach it, and a part's objects go there anyway.
 * Under <prefix>/<name>.parts/ (counted as the cluster snapshot's, so a crash leaves nothing the
 * scan and the removal do not already handle), small JSON objects, each carrying the
 * coordinator's run id (a stale object of another run with the same name is never taken):
 *
 *   coordinator.meet.json      {run, seq, node}   the coordinator alive: seq grows every second
 *   aborted.meet.json          {run, message}     the coordinator gave up: every part stops
 *   point.meet.json            {run, point}       the consistency point T, once all parts dumped
 *   <shard>.alive.meet.json    {run, seq, node}   the part alive
 *   <shard>.dumped.meet.json   {run, dump_end}    the part's dump is over (the barrier)
 *   <shard>.done.meet.json     {run, figures}     the part committed its manifest
 *   <shard>.failed.meet.json   {run, message}     the part failed
 *
 * Liveness is a seq that changes, timed by the watcher's own monotonic clock: no two nodes'
 * clocks are ever compared. A part unseen for claim_timeout (not taken: no agent picked it up),
 * or whose seq stood still for part_timeout (its process or node died), fails the cluster
 * snapshot naming the shard; a coordinator whose seq stood still for part_timeout, or that
 * wrote aborted, stops the part, which removes what it committed. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "snapshot.h"
#include "storage/storage.h"

#define MS_CLUSTER_MEET_SUFFIX ".meet.json"
#define MS_CLUSTER_PART_TIMEOUT_DEFAULT_SEC 60

typedef struct MsPartMeetTimeouts {
    uint64_t part_timeout_usec;  /* silence of a seen process */
    uint64_t claim_timeout_usec; /* a part never seen */
    uint64_t poll_usec;
} MsPartMeetTimeouts;

/* From --part-timeout (0: the default): claim is twice the silence. */
MsPartMeetTimeouts ms_part_meet_timeouts(uint64_t part_timeout_sec);

/* ---- the coordinator's side ---- */

typedef struct MsPartMeetCoordinator MsPartMeetCoordinator;

/* Clears what an earlier run of this name left, then says every second that the coordinator
 * is alive (a thread). run: a fresh id. */
int ms_part_meet_coordinator_start(MsStorage *st, const char *parts_prefix, const char *node,
                                   MsPartMeetCoordinator **ret, MsError *e);
/* Stops saying so; with aborted, tells every part to stop first (message: why). */
void ms_part_meet_coordinator_end(MsPartMeetCoordinator *c, const char *aborted);

/* What a remote part reports when it committed (and its manifest, which is checked). */
typedef struct MsPartDone {
    MsSnapshotResult res; /* archive_key, manifest_key, documents, stored_bytes, oplog ends,
                           * dump_end, point_in_time */
} MsPartDone;

/* Names shard among the parts taken elsewhere (in the store before it returns: a process
 * offering to take a part the coordinator does not name is refused). */
int ms_part_meet_coordinator_add_part(MsPartMeetCoordinator *c, const char *shard, MsError *e);

/* What the coordinator knows of a part taken elsewhere: the process taking it (its id, "" until
 * seen: every object of the part must carry it) and when its heartbeat last changed. */
#define MS_PART_TAKER_MAX 33
typedef struct MsPartMeetWatch {
    uint64_t start_usec, changed_usec; /* monotonic; changed 0: never seen */
    int64_t seq;
    char taker[MS_PART_TAKER_MAX];
} MsPartMeetWatch;
void ms_part_meet_watch_init(MsPartMeetWatch *w);
/* One look at shard's part: <0 when it failed (its message), was never taken, went silent, or
 * two processes took it; 0 otherwise (also while it works at the barrier). */
int ms_part_meet_check(const MsPartMeetCoordinator *c, const char *shard,
                       const MsPartMeetTimeouts *t, MsPartMeetWatch *w, MsError *e);

/* Waits for shard's dump to end (its dump end), for the part's commit (done), each failing
 * with the part's own message, or when it was never taken or stopped answering, or when two
 * processes took it; -ECANCELED when *cancel is set meanwhile. */
int ms_part_meet_wait_dumped(const MsPartMeetCoordinator *c, const char *shard,
                             const MsPartMeetTimeouts *t, volatile sig_atomic_t *cancel,
                             MsPartMeetWatch *w, MsOplogPosition *ret_dump_end, MsError *e);
int ms_part_meet_put_point(const MsPartMeetCoordinator *c, MsOplogPosition point, MsError *e);
/* dump_end: the one it met the others with (its result must say the same); key_id_hex: the
 * coordinator's encryption key's id (NULL: not encrypted): the part's manifest must say the
 * same. */
int ms_part_meet_wait_done(const MsPartMeetCoordinator *c, const char *shard,
                           const MsPartMeetTimeouts *t, volatile sig_atomic_t *cancel,
                           MsPartMeetWatch *w, MsOplogPosition dump_end,
                           const char *key_id_hex, MsSnapshotResult *ret, MsError *e);
/* The meeting objects of a finished run (its parts' own objects stay). Best effort. */
void ms_part_meet_clean(MsStorage *st, const char *parts_prefix);

/* ---- the part's side ---- */

typedef struct MsClusterPartOptions {
    MsSnapshotOptions snapshot; /* uri: the shard's; prefix/name set by ms_cluster_part_run */
    const char *prefix;         /* the policy's */
    const char *name;           /* the cluster snapshot's */
    const char *shard;
    MsPartMeetTimeouts timeouts;
} MsClusterPartOptions;

/* Takes the part: waits for the coordinator, dumps with its own oplog capture, meets the
 * others at the barrier, captures to T, commits, says done. On failure it says so (the
 * coordinator names the shard with this message) and removes what it committed. */
int ms_cluster_part_run(const MsClusterPartOptions *o, MsSnapshotResult *ret, MsError *e);

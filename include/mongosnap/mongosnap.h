/* The public names of mongosnap: the contract between worker, daemon, ctl tool, units and users. */
#pragma once

/* D-Bus */
#define MONGOSNAP_BUS_NAME "io.mongosnap1"
#define MONGOSNAP_BUS_PATH "/io/mongosnap1"
#define MONGOSNAP_BUS_MANAGER_INTERFACE "io.mongosnap1.Manager"
#define MONGOSNAP_BUS_POLICY_INTERFACE "io.mongosnap1.Policy"
#define MONGOSNAP_BUS_SNAPSHOT_INTERFACE "io.mongosnap1.Snapshot"
#define MONGOSNAP_BUS_RESTORE_INTERFACE "io.mongosnap1.Restore"

/* Object paths under MONGOSNAP_BUS_PATH: PREFIX/<escaped name or id>. */
#define MONGOSNAP_BUS_POLICY_PREFIX "/io/mongosnap1/policy"
#define MONGOSNAP_BUS_SNAPSHOT_PREFIX "/io/mongosnap1/snapshot"
#define MONGOSNAP_BUS_RESTORE_PREFIX "/io/mongosnap1/restore"

/* io.mongosnap1.Error.*: what a caller can act on (docs/dbus-api.md "Errors" explains each;
 * test-bus-contract checks that the table and this list agree). */
#define MONGOSNAP_ERROR_NO_SUCH_POLICY "io.mongosnap1.Error.NoSuchPolicy"
#define MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT "io.mongosnap1.Error.NoSuchSnapshot"
#define MONGOSNAP_ERROR_NO_SUCH_RESTORE "io.mongosnap1.Error.NoSuchRestore"
#define MONGOSNAP_ERROR_EXISTS "io.mongosnap1.Error.Exists"
#define MONGOSNAP_ERROR_NOT_RESTORABLE "io.mongosnap1.Error.NotRestorable"
#define MONGOSNAP_ERROR_JOURNAL_UNAVAILABLE "io.mongosnap1.Error.JournalUnavailable"
#define MONGOSNAP_ERROR_INVALID_ARGUMENT "io.mongosnap1.Error.InvalidArgument"
#define MONGOSNAP_ERROR_BUSY "io.mongosnap1.Error.Busy"
#define MONGOSNAP_ERROR_POLICY_STOPPED "io.mongosnap1.Error.PolicyStopped"
#define MONGOSNAP_ERROR_NOT_CONFIGURED "io.mongosnap1.Error.NotConfigured"
#define MONGOSNAP_ERROR_NOT_SUPPORTED "io.mongosnap1.Error.NotSupported"
#define MONGOSNAP_ERROR_NOT_RUNNING "io.mongosnap1.Error.NotRunning"
#define MONGOSNAP_ERROR_NO_CREDENTIAL "io.mongosnap1.Error.NoCredential"
#define MONGOSNAP_ERROR_SHUTTING_DOWN "io.mongosnap1.Error.ShuttingDown"
#define MONGOSNAP_ERROR_ACCESS_DENIED "io.mongosnap1.Error.AccessDenied"
#define MONGOSNAP_ERROR_CLUSTER_UNREACHABLE "io.mongosnap1.Error.ClusterUnreachable"
#define MONGOSNAP_ERROR_ON_OTHER_NODE "io.mongosnap1.Error.OnOtherNode"
#define MONGOSNAP_ERROR_SNAPSHOT_DAMAGED "io.mongosnap1.Error.SnapshotDamaged"
#define MONGOSNAP_ERROR_NEEDS_FORCE "io.mongosnap1.Error.NeedsForce"
#define MONGOSNAP_ERROR_FAILED "io.mongosnap1.Error.Failed"
/* Every name above, for whoever must cover them all (a test, a client's table). */
#define MONGOSNAP_ERROR_NAMES                                                                      \
    MONGOSNAP_ERROR_NO_SUCH_POLICY, MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT,                              \
        MONGOSNAP_ERROR_NO_SUCH_RESTORE, MONGOSNAP_ERROR_EXISTS, MONGOSNAP_ERROR_NOT_RESTORABLE,   \
        MONGOSNAP_ERROR_JOURNAL_UNAVAILABLE, MONGOSNAP_ERROR_INVALID_ARGUMENT,                     \
        MONGOSNAP_ERROR_BUSY, MONGOSNAP_ERROR_POLICY_STOPPED, MONGOSNAP_ERROR_NOT_CONFIGURED,      \
        MONGOSNAP_ERROR_NOT_SUPPORTED, MONGOSNAP_ERROR_NOT_RUNNING, MONGOSNAP_ERROR_NO_CREDENTIAL, \
        MONGOSNAP_ERROR_SHUTTING_DOWN, MONGOSNAP_ERROR_ACCESS_DENIED,                              \
        MONGOSNAP_ERROR_CLUSTER_UNREACHABLE, MONGOSNAP_ERROR_ON_OTHER_NODE,                        \
        MONGOSNAP_ERROR_SNAPSHOT_DAMAGED, MONGOSNAP_ERROR_NEEDS_FORCE, MONGOSNAP_ERROR_FAILED

/* The rows of the list methods (docs/dbus-api.md "Rows" names every field; fields are only ever
 * appended, so that clients reading the earlier ones go on working).
 * Snapshot: id, policy, node, file name, download address, task log, elapsed usec, items, items
 * total, progress %, create time, expire time, bytes, state, error, object path, last
 * verification's state, seq, origin, kept by, projected expiry, future-dated. */
#define MONGOSNAP_SNAPSHOT_ROW "(sssssstttdtttssostsstb)"
/* Restore: id, source snapshot, target (redacted), task log, elapsed usec, items, items total,
 * progress %, create time, state, error, object path, node. */
#define MONGOSNAP_RESTORE_ROW "(sssstttdtssos)"
/* Policy: name, object path, state, source (redacted), schedule, store, last run, last result,
 * next run, problem ("" when the policy can run as written). */
#define MONGOSNAP_POLICY_ROW "(sosssststs)"
/* Policy.ListSlices: key, start, end (µs), idle. */
#define MONGOSNAP_SLICE_ROW "(sttb)"
/* Snapshot.Parts, a cluster snapshot's parts in the order they are stored (empty for a snapshot
 * of one replica set): shard ("config" for the config servers' data), replica set ("" when
 * unknown), the part's manifest key, documents, stored bytes, the oplog position its dump
 * ended at (seconds, ordinal), and the node that took it (its agent's Node=; "" when unknown:
 * taken by hand, or recorded before parts named their node). */
#define MONGOSNAP_SNAPSHOT_PART_ROW "(sssttuus)"
/* Policy.Restorable and VerifyChain's chains: from, to (µs). */
#define MONGOSNAP_RANGE_ROW "(tt)"
/* One Event Log entry of GetLog: journal cursor, realtime usec, fields. */
#define MONGOSNAP_LOG_ENTRY "(sta{ss})"

/* The groups the bus policy and the agent judge callers by: members of MONGOSNAP_GROUP may do
 * everything but bind secrets to destinations (root's); members of MONGOSNAP_READONLY_GROUP
 * may list and read, download addresses excepted (they give read access to every document). */
#define MONGOSNAP_GROUP "mongosnap"
#define MONGOSNAP_READONLY_GROUP "mongosnap-readonly"

/* Exit codes of mongosnap-worker, stable for the agent and for scripts. */
#define MONGOSNAP_EXIT_OK 0
#define MONGOSNAP_EXIT_FAILURE 1     /* the task failed; the message says why */
#define MONGOSNAP_EXIT_USAGE 2       /* wrong arguments */
#define MONGOSNAP_EXIT_CORRUPT 3     /* a snapshot failed its checks (verify, restore) */
#define MONGOSNAP_EXIT_UNREACHABLE 4 /* the server could not be reached or refused the login */
#define MONGOSNAP_EXIT_CANCELLED 5   /* stopped by a signal; nothing was committed */

/* Progress messages: one JSON object per line on the worker's --progress-fd.
 *   {"event":"progress","phase":"...","items_done":N,"items_total":N,"percent":F,
 *    "bytes_read":N,"bytes_written":N,"namespace":"db.coll","elapsed_usec":N}
 *   {"event":"namespace","namespace":"db.coll","documents":N,"bytes":N}
 *   {"event":"oplog","entries":N,"first":{"t":N,"i":N},"last":{"t":N,"i":N}}
 *   {"event":"part","shard":"shard01","replica_set":"rs01",
 *    "manifest":"P/N.parts/shard01.manifest.json","documents":N,"stored_bytes":N,
 *    "dump_end":{"t":N,"i":N}}   (a cluster snapshot's part)
 *   {"event":"balancer","stopped":true|false}   (a cluster snapshot stopped the balancer
 *    through a mongos, or started it again: a worker that dies between leaves it stopped)
 *   {"event":"part-assigned","shard":"...","node":"...","member":"host:port"}   (a cluster
 *    snapshot's coordinator hands a shard's part to the agent beside that member: the agent
 *    asks that node to run `mongosnap-worker cluster-part`)
 *   {"event":"result","status":"ok"|"failed"|"cancelled","message":"...",...}
 * "phase" is one of: connect, prelude, dump, oplog, commit, restore, indexes, replay, verify, done.
 */
#define MONGOSNAP_PROGRESS_EVENT_PROGRESS "progress"
#define MONGOSNAP_PROGRESS_EVENT_NAMESPACE "namespace"
#define MONGOSNAP_PROGRESS_EVENT_OPLOG "oplog"
#define MONGOSNAP_PROGRESS_EVENT_PART "part"
#define MONGOSNAP_PROGRESS_EVENT_BALANCER "balancer"
#define MONGOSNAP_PROGRESS_EVENT_PART_ASSIGNED "part-assigned"
#define MONGOSNAP_PROGRESS_EVENT_RESULT "result"

/* The query options of an s3:// store location ("s3://BUCKET/PREFIX?endpoint=...&region=..."):
 * the S3 driver reads them, and the policy parser refuses any other name, so that no query can
 * carry a secret into a policy file. One list, so the two cannot drift apart. */
#define MONGOSNAP_S3_LOCATION_OPTIONS                                                              \
    "endpoint", "region", "addressing", "ca", "sse", "kms_key_id", "part_size", "parallel",        \
        "presign_expires", "max_attempts", "connect_timeout", "stall_timeout"

/* Stored objects: <prefix>/<snapshot>.archive[.zst|.gz] and <prefix>/<snapshot>.manifest.json */
#define MONGOSNAP_ARCHIVE_SUFFIX ".archive"
#define MONGOSNAP_MANIFEST_SUFFIX ".manifest.json"
/* A chunked snapshot's index (Format=chunked): its "archive" object, the rest are chunks. */
#define MONGOSNAP_INDEX_SUFFIX ".index"
/* A cluster snapshot of a sharded cluster: <prefix>/<snapshot>.cluster.json (its "archive" and
 * manifest at once) names its parts, <prefix>/<snapshot>.parts/<shard>.{archive,manifest}. */
#define MONGOSNAP_CLUSTER_MANIFEST_SUFFIX ".cluster.json"
#define MONGOSNAP_CLUSTER_PARTS_SUFFIX ".parts"
#define MONGOSNAP_MANIFEST_FORMAT "mongosnap-manifest"
#define MONGOSNAP_MANIFEST_FORMAT_VERSION 1

/* Oplog slices of point-in-time recovery, beside a policy's snapshots:
 *   <prefix>/oplog/<start>-<end>.slice.json       the slice's manifest (kind "oplog-slice")
 *   <prefix>/oplog/<start>-<random>.oplog[.zst|.gz][.enc]  its archive (oplog namespace only)
 * <start> and <end> are oplog positions written "%010u.%010u" (seconds, ordinal): the slice
 * holds every entry after start up to and including end, so a chain is continuous when each
 * slice starts where the one before ended, and can be planned from a listing alone. */
#define MONGOSNAP_SLICE_DIR "oplog"
#define MONGOSNAP_SLICE_MANIFEST_SUFFIX ".slice.json"
#define MONGOSNAP_SLICE_ARCHIVE_SUFFIX ".oplog"
#define MONGOSNAP_MANIFEST_KIND_SLICE "oplog-slice"
#define MONGOSNAP_PROGRESS_EVENT_SLICE "slice"
#define MONGOSNAP_PROGRESS_EVENT_GAP "gap"

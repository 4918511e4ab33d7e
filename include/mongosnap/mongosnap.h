/* The public names of mongosnap: the contract between worker, daemon, ctl tool, units and users. */
#pragma once

/* D-Bus */
#define MONGOSNAP_BUS_NAME "io.mongosnap1"
#define MONGOSNAP_BUS_PATH "/io/mongosnap1"
#define MONGOSNAP_BUS_MANAGER_INTERFACE "io.mongosnap1.Manager"
#define MONGOSNAP_BUS_POLICY_INTERFACE "io.mongosnap1.Policy"
#define MONGOSNAP_BUS_SNAPSHOT_INTERFACE "io.mongosnap1.Snapshot"
#define MONGOSNAP_BUS_RESTORE_INTERFACE "io.mongosnap1.Restore"

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
 *   {"event":"result","status":"ok"|"failed"|"cancelled","message":"...",...}
 * "phase" is one of: connect, prelude, dump, oplog, commit, restore, indexes, replay, verify, done.
 */
#define MONGOSNAP_PROGRESS_EVENT_PROGRESS "progress"
#define MONGOSNAP_PROGRESS_EVENT_NAMESPACE "namespace"
#define MONGOSNAP_PROGRESS_EVENT_OPLOG "oplog"
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
#define MONGOSNAP_MANIFEST_FORMAT "mongosnap-manifest"
#define MONGOSNAP_MANIFEST_FORMAT_VERSION 1

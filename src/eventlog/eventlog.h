/* The Event Log: journal entries with one fixed MESSAGE_ID per kind, for tasks and policies. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-id128.h>

#include "common/error.h"
#include "common/log.h"
#include "common/macro.h"

/* Every event kind: its name (MONGOSNAP_EVENT=), journal priority and MESSAGE_ID. This list is
 * the one place the ids are written down; units/catalog/mongosnap.catalog explains each id and
 * tests/unit/test-eventlog.c checks that the two agree. An id, once released, never changes
 * meaning: monitoring matches on it. A new kind gets a new id (systemd-id128 new). */
#define MS_EVENT_KINDS(X)                                                                          \
    X(TASK_QUEUED, "task-queued", MS_LOG_INFO,                                                     \
      SD_ID128_ARRAY(e1, 3d, b7, 35, 9a, 0b, 44, c1, ac, 24, 1a, b8, f8, 98, f5, 2b))              \
    X(TASK_STARTED, "task-started", MS_LOG_INFO,                                                   \
      SD_ID128_ARRAY(e6, 08, 89, f7, 24, d6, 41, 74, ab, dc, 74, 30, 61, af, 2f, 10))              \
    X(NAMESPACE_FINISHED, "namespace-finished", MS_LOG_INFO,                                       \
      SD_ID128_ARRAY(21, 43, 1c, 05, 16, 01, 47, 32, a1, 22, 8e, 59, 52, 9f, ec, 13))              \
    X(OPLOG_CAPTURED, "oplog-captured", MS_LOG_INFO,                                               \
      SD_ID128_ARRAY(a7, 2c, 31, d5, 89, 95, 42, 0f, bf, 57, a7, d7, d7, f0, ae, b8))              \
    X(TASK_STORED, "task-stored", MS_LOG_INFO,                                                     \
      SD_ID128_ARRAY(e5, 2f, 99, ba, 30, 38, 4d, 5e, 8b, 7a, 13, a6, 1c, a4, f6, fc))              \
    X(TASK_COMPLETED, "task-completed", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(e7, e3, 31, 0b, 13, da, 44, 55, 91, 1f, fb, 9f, b6, b6, 0d, fa))              \
    X(TASK_FAILED, "task-failed", MS_LOG_ERR,                                                      \
      SD_ID128_ARRAY(54, 14, 4f, e5, 45, 3f, 4e, 43, 88, ff, 6e, 92, 80, c5, 57, e1))              \
    X(TASK_STOPPED, "task-stopped", MS_LOG_NOTICE,                                                 \
      SD_ID128_ARRAY(cf, 70, 93, 70, 92, 3e, 47, f4, b8, c1, da, b3, b0, 5a, 1a, c3))              \
    X(TASK_INTERRUPTED, "task-interrupted", MS_LOG_WARNING,                                        \
      SD_ID128_ARRAY(98, 62, 44, 56, 8c, 7c, 4e, 16, be, 05, f1, b3, ea, f0, 35, 64))              \
    X(SNAPSHOT_EXPIRED, "snapshot-expired", MS_LOG_INFO,                                           \
      SD_ID128_ARRAY(72, 53, 0c, 3a, 0c, f1, 4a, 02, 8b, 4c, a0, 44, 05, dc, cd, 13))              \
    X(SNAPSHOT_DELETED, "snapshot-deleted", MS_LOG_NOTICE,                                         \
      SD_ID128_ARRAY(bb, 30, 65, d4, 87, cf, 40, c8, ab, 37, 8f, c5, 38, 1e, cd, fc))              \
    X(POLICY_CREATED, "policy-created", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(0b, cb, 87, a3, 73, 9c, 4b, 3a, bc, ad, bc, f8, 37, 9b, fd, 43))              \
    X(POLICY_EDITED, "policy-edited", MS_LOG_NOTICE,                                               \
      SD_ID128_ARRAY(d7, ec, e8, 9c, c3, 74, 4c, ae, 95, 7c, 8d, f0, 0b, a7, 15, 8a))              \
    X(POLICY_REBUILT, "policy-rebuilt", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(a5, 58, d9, 12, 7b, 7e, 49, 6b, bb, 4e, fd, 16, 64, f5, 09, e9))              \
    X(POLICY_DELETED, "policy-deleted", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(90, 0e, 94, 61, fe, 14, 4d, 8a, 89, 64, e9, 69, 02, 17, 87, c2))              \
    X(POLICY_STOPPED, "policy-stopped", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(7e, 09, 71, 0a, d3, 88, 4f, 80, bd, 79, f2, e2, a0, c8, 3f, 09))              \
    X(POLICY_STARTED, "policy-started", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(65, 8e, 1b, 1c, 17, 33, 4a, 6a, a9, 96, 50, 1c, 76, 52, d4, 94))              \
    X(RESTORE_STARTED, "restore-started", MS_LOG_NOTICE,                                           \
      SD_ID128_ARRAY(81, 3a, 4e, 85, 41, 48, 44, 37, a7, cf, 9c, 9e, 06, d3, 67, 33))              \
    X(RESTORE_COMPLETED, "restore-completed", MS_LOG_NOTICE,                                       \
      SD_ID128_ARRAY(60, 32, c5, 22, c4, 2c, 4d, 86, 90, 89, 03, f5, c7, 40, 87, 03))              \
    X(RESTORE_FAILED, "restore-failed", MS_LOG_ERR,                                                \
      SD_ID128_ARRAY(48, 1f, c4, c5, 7e, 40, 4b, 7d, a8, b2, e4, 8e, 27, eb, ab, 56))              \
    X(VERIFY_COMPLETED, "verify-completed", MS_LOG_NOTICE,                                         \
      SD_ID128_ARRAY(e3, 56, 28, 61, 47, 4d, 4f, 7d, a8, 7d, 66, 26, 96, 09, cb, 25))              \
    X(VERIFY_FAILED, "verify-failed", MS_LOG_ERR,                                                  \
      SD_ID128_ARRAY(1d, 69, e7, ea, 90, 09, 42, d6, bf, e7, ea, 0e, 48, 37, 41, 18))              \
    X(TASK_ASSIGNED, "task-assigned", MS_LOG_INFO,                                                 \
      SD_ID128_ARRAY(ed, 68, 0f, 3e, a5, b8, 4e, d9, 97, 37, c0, 62, 12, fa, f2, 4b))              \
    X(TASK_TAKEN_OVER, "task-taken-over", MS_LOG_WARNING,                                          \
      SD_ID128_ARRAY(d7, 9f, fe, a2, 4f, b0, 45, 14, a0, 1c, 4d, 38, ad, 6e, 2d, 70))              \
    X(POLICY_DRIFT, "policy-drift", MS_LOG_WARNING,                                                \
      SD_ID128_ARRAY(35, 06, d9, 75, f8, 7c, 46, 64, ba, 65, 6e, 20, 91, 94, 30, de))              \
    X(CLUSTER_CONNECTED, "cluster-connected", MS_LOG_NOTICE,                                       \
      SD_ID128_ARRAY(3c, 6f, 21, 06, 18, 51, 4a, 81, 86, 8d, fc, d8, f6, 47, 18, 1a))              \
    X(CLUSTER_UNREACHABLE, "cluster-unreachable", MS_LOG_WARNING,                                  \
      SD_ID128_ARRAY(4c, 1f, b2, 88, d7, d4, 4f, eb, 81, 68, d0, a7, e8, 2c, f1, 7c))              \
    X(CLUSTER_REFUSED, "cluster-refused", MS_LOG_WARNING,                                          \
      SD_ID128_ARRAY(e5, cc, a5, 60, 23, a6, 46, 17, a7, 54, b9, 28, 9b, e0, a3, da))              \
    X(SNAPSHOT_FUTURE_DATED, "snapshot-future-dated", MS_LOG_WARNING,                              \
      SD_ID128_ARRAY(c6, 70, ca, 75, 29, 6d, 49, 63, 93, d6, de, 70, 44, 6d, 09, 6b))              \
    X(RETENTION_HELD, "retention-held", MS_LOG_WARNING,                                            \
      SD_ID128_ARRAY(25, da, 58, 38, 34, 10, 41, 7a, a9, 9c, ec, 5e, ba, 7f, 83, 88))              \
    X(ORPHAN_REMOVED, "orphan-removed", MS_LOG_NOTICE,                                             \
      SD_ID128_ARRAY(7c, 00, 2b, 99, 94, 1b, 4e, 53, 9c, 18, 42, e9, 4d, 43, 64, 1c))              \
    X(FOLLOWER_STARTED, "follower-started", MS_LOG_INFO,                                           \
      SD_ID128_ARRAY(ce, 83, 13, 5c, 54, 06, 46, f8, 9a, 2d, ad, 00, 10, 61, 87, 93))              \
    X(FOLLOWER_STOPPED, "follower-stopped", MS_LOG_NOTICE,                                         \
      SD_ID128_ARRAY(79, 5e, 27, b0, 13, 6c, 48, 30, b5, 18, 0f, dd, 77, 36, 33, 50))              \
    X(FOLLOWER_FAILED, "follower-failed", MS_LOG_WARNING,                                          \
      SD_ID128_ARRAY(ca, 9b, 21, 05, 1e, fc, 41, 5d, a3, 8e, 08, 6f, b0, ef, 47, 14))              \
    X(OPLOG_GAP, "oplog-gap", MS_LOG_WARNING,                                                      \
      SD_ID128_ARRAY(94, 12, d1, 43, ba, 55, 4a, 6d, 8f, 64, 6c, 28, 6c, 6b, 02, 5a))              \
    X(RESTORE_PLANNED, "restore-planned", MS_LOG_INFO,                                             \
      SD_ID128_ARRAY(6d, 9e, 9c, ef, d4, f4, 4b, 52, b0, 26, e9, 4e, 70, c2, 6b, 47))              \
    X(PART_STORED, "part-stored", MS_LOG_INFO,                                                     \
      SD_ID128_ARRAY(1b, 37, 6e, 96, d0, 26, 42, f2, a7, fb, 1e, bd, 72, ac, 89, 97))

/* clang-format cannot see that the list expands to enumerators and would misindent them. */
/* clang-format off */
typedef enum MsEventKind {
#define MS_EVENT_KIND_ENUM(kind, name, priority, id) MS_EVENT_##kind,
    MS_EVENT_KINDS(MS_EVENT_KIND_ENUM)
#undef MS_EVENT_KIND_ENUM
    _MS_EVENT_KIND_MAX,
    _MS_EVENT_KIND_INVALID = -EINVAL,
} MsEventKind;
/* clang-format on */

/* Journal fields of an event, besides MESSAGE_ID, PRIORITY and MESSAGE. */
#define MS_EVENT_FIELD_EVENT "MONGOSNAP_EVENT" /* the kind's name: "task-failed" */
#define MS_EVENT_FIELD_POLICY "MONGOSNAP_POLICY"
#define MS_EVENT_FIELD_TASK "MONGOSNAP_TASK"
#define MS_EVENT_FIELD_NODE "MONGOSNAP_NODE"
#define MS_EVENT_FIELD_NAMESPACE "MONGOSNAP_NAMESPACE"
#define MS_EVENT_FIELD_SNAPSHOT "MONGOSNAP_SNAPSHOT"
#define MS_EVENT_FIELD_ERROR "MONGOSNAP_ERROR"
#define MS_EVENT_FIELD_ITEMS "MONGOSNAP_ITEMS"
#define MS_EVENT_FIELD_BYTES "MONGOSNAP_BYTES"
#define MS_EVENT_FIELD_ELAPSED "MONGOSNAP_ELAPSED_USEC"

/* What an event is about. NULL strings and figures without their has_ flag are left out of the
 * entry (a figure of 0 is a real figure, hence the flags). No field takes a connection string:
 * a target is named by its task; and every string is passed through ms_eventlog_scrub() anyway,
 * so a URI quoted inside an error message loses its password. */
typedef struct MsEventFields {
    const char *policy;
    const char *task;
    const char *node;
    const char *ns;       /* "db.collection": the namespace a namespace-finished event is about */
    const char *snapshot; /* the snapshot a restore or verify reads */
    const char *error;    /* why it failed, was stopped or interrupted */
    bool has_items;
    uint64_t items; /* documents */
    bool has_bytes;
    uint64_t bytes;
    bool has_elapsed;
    uint64_t elapsed_usec;
} MsEventFields;

/* "task-queued", or NULL for a value that is not a kind. */
const char *ms_event_kind_to_string(MsEventKind kind);
/* SD_ID128_NULL for a value that is not a kind. */
sd_id128_t ms_event_kind_id(MsEventKind kind);
/* A syslog priority (MS_LOG_*), or -EINVAL. */
int ms_event_kind_priority(MsEventKind kind);
/* The kind with this MESSAGE_ID, or _MS_EVENT_KIND_INVALID. */
MsEventKind ms_event_kind_from_id(sd_id128_t id);

/* Send one event to the journal; MESSAGE is formatted from fmt. The Event Log is a record for
 * people, not a control path: callers may ignore the result (a negative errno, e.g. when there
 * is no journald). */
int ms_event_log(MsEventKind kind, const MsEventFields *f, const char *fmt, ...) _printf_(3, 4);
int ms_event_logv(MsEventKind kind, const MsEventFields *f, const char *fmt, va_list ap)
    _printf_(3, 0);

/* The "FIELD=value" strings ms_event_log() sends, in order (MESSAGE_ID, PRIORITY, MESSAGE,
 * MONGOSNAP_EVENT, then the set fields). Exposed so the entry can be checked without a journal.
 * Free with ms_event_entry_fields_free(). */
int ms_event_build_fields(MsEventKind kind, const MsEventFields *f, const char *message,
                          char ***ret_fields, size_t *ret_n);
void ms_event_entry_fields_free(char **fields, size_t n);

/* A copy of text in which every URI ("scheme://user:password@host...") has lost its password,
 * and MongoDB connection strings their secret options too (ms_uri_redact()). NULL on OOM. */
char *ms_eventlog_scrub(const char *text);

/* ---- reading the Event Log back (GetLog, mongosnapctl log) ---- */

typedef struct MsEventFilter {
    const char *policy; /* entries with MONGOSNAP_POLICY= this */
    const char *task;   /* entries with MONGOSNAP_TASK= this; with policy, both must match */
    /* A journal cursor from an earlier read: only the entries after it (for following a log).
     * NULL: the newest entries. */
    const char *after_cursor;
} MsEventFilter;

/* One entry as read back; the strings are valid during the callback only, NULL when absent. */
typedef struct MsEventEntry {
    uint64_t realtime_usec;
    const char *cursor;
    MsEventKind kind; /* _MS_EVENT_KIND_INVALID when the entry has no MESSAGE_ID of ours */
    int priority;     /* -1 when absent */
    const char *message;
    const char *policy;
    const char *task;
    const char *node;
    const char *ns;
    const char *snapshot;
    const char *error;
    bool has_items;
    uint64_t items;
    bool has_bytes;
    uint64_t bytes;
    bool has_elapsed;
    uint64_t elapsed_usec;
} MsEventEntry;

/* Return a negative errno to stop reading; ms_eventlog_read() then returns it. */
typedef int (*MsEventReadFn)(const MsEventEntry *entry, void *userdata);

/* Call fn for the newest max_entries entries matching filter (0: all of them), oldest first, from
 * the local journal; with filter->after_cursor, for the first max_entries entries after that
 * cursor instead (the rest come with the next call, so a follower misses nothing). A cursor that
 * is not one of this journal's is -EINVAL. A filter needs a policy or a task: the Event Log is
 * always read for one of them. *ret_n (optional): how many entries were passed to fn. Reading the
 * system journal needs root or membership in the systemd-journal group. */
int ms_eventlog_read(const MsEventFilter *filter, size_t max_entries, MsEventReadFn fn,
                     void *userdata, size_t *ret_n, MsError *e);

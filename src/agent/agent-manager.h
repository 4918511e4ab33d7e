/* The agent's state and logic: policies, snapshots, task scheduling and the status line. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "catalog/catalog.h"
#include "common/error.h"
#include "common/macro.h"
#include "config/conf.h"

/* How long a stopping agent waits for its workers to exit after SIGTERM before SIGKILL: well
 * below systemd's default TimeoutStopSec= (90 s). */
#define MANAGER_STOP_TIMEOUT_USEC (30u * 1000u * 1000u)
/* How long a worker asked to stop (Stop, Cancel, Rebuild) may take before it is killed. */
#define MANAGER_STOP_GRACE_USEC (10u * 1000u * 1000u)
/* How often a record the catalog refused (its file system full) is written again. */
#define MANAGER_CATALOG_RETRY_USEC (5u * 1000u * 1000u)
/* Expiry by MaxAge= may run this late: retention is about days, not seconds, and a coarse
 * timer lets the kernel batch wake-ups. */
#define MANAGER_RETENTION_ACCURACY_USEC (60u * 1000u * 1000u)

typedef struct Manager Manager;
typedef struct SnapshotTask SnapshotTask;

typedef struct ManagerPolicy {
    Manager *manager;
    MsPolicy *settings;       /* from policies.d/NAME.conf */
    MsPolicyRuntime *runtime; /* the catalog's row: state, last and next run */
    SnapshotTask *task;       /* queued or running; NULL when idle */
    bool removed;             /* its file is gone: dropped when its task ends */
    bool added;               /* loaded by the reload under way, not announced yet */
    void *rebuild_token;      /* a Rebuild waiting for the running task to stop */
    /* Several nodes (agent-cluster.c): how this policy's file differs from the other agents'
     * ("" or NULL: it does not), and when this node last renewed the lease of its task. */
    char *drift;
    uint64_t lease_renewed_usec;
    /* Point-in-time with several nodes: this node holds the policy's follower lease (one oplog
     * follower per policy in the cluster), renewed at each heartbeat. */
    bool follower_lease;
    uint64_t follower_lease_renewed_usec;
    uint64_t follower_lease_free_since; /* another node is preferred; it has not taken it yet */
    /* Retention that would remove too much at once is held (nothing removed) until confirmed:
     * what it would remove ("" or NULL: nothing is held), and the confirmation for the next
     * pass (Edit with force). */
    char *retention_held;
    bool retention_confirmed;
    /* Why the policy cannot run as written (its Schedule= refused by systemd, a credential that
     * is not there, a Source= user without Credential=, no store, ...); NULL: it can. Shown as
     * the policy's errors (Problem, list-policies, status); manager_refresh_problems(). */
    char *problem;
    char *schedule_problem; /* systemd's refusal of Schedule= (no timer, so no next run) */
    char *schedule_checked; /* the Schedule= last checked */
    /* The next run from the calendar when the timer's is stale (manager_policy_next_run()). */
    uint64_t next_run_computed_usec;
} ManagerPolicy;

/* What changed in a snapshot, for the bus adapter's PropertiesChanged. */
typedef enum ManagerSnapshotChange {
    MANAGER_SNAPSHOT_PROGRESS = 1 << 0, /* items, progress, bytes, elapsed */
    MANAGER_SNAPSHOT_STATE = 1 << 1,    /* state, error, keys, times: everything */
} ManagerSnapshotChange;

/* What a resync found (manager_resync()). */
typedef struct ManagerResyncResult {
    unsigned found;              /* snapshots whose manifest was read */
    unsigned added;              /* complete ones no record knew: now this node's records */
    unsigned corrected;          /* this node's records of complete snapshots, listed failed,
                                  * interrupted or stopped: now completed */
    unsigned missing;            /* this node's completed records not in their store: now deleted */
    unsigned finished;           /* this node's deleted or expired records whose objects were still
                                  * there (a removal cut short): removed now */
    const char *const *problems; /* unreadable manifests, missing archives, unreadable stores */
    size_t n_problems;
} ManagerResyncResult;

/* Observers: the bus adapter turns these into signals, agent-timer into systemd timers. Every
 * callback may be NULL. */
typedef struct ManagerHooks {
    void (*snapshot_added)(Manager *m, const MsSnapshotRecord *r, void *userdata);
    void (*snapshot_changed)(Manager *m, const MsSnapshotRecord *r, unsigned changes,
                             void *userdata);
    void (*policy_changed)(Manager *m, const ManagerPolicy *p, void *userdata);
    void (*policy_added)(Manager *m, const ManagerPolicy *p, void *userdata);
    /* p was deleted (Delete) or its file vanished at a reload; p is still valid during the
     * call, with removed set, and goes afterwards (or when its task ends). */
    void (*policy_removed)(Manager *m, const ManagerPolicy *p, void *userdata);
    void (*restore_added)(Manager *m, const MsRestoreRecord *r, void *userdata);
    /* changes: ManagerSnapshotChange flags, with the same meaning for a restore. */
    void (*restore_changed)(Manager *m, const MsRestoreRecord *r, unsigned changes, void *userdata);
    /* A rebuild accepted by manager_rebuild_policy() is over: record is its fresh snapshot, or
     * NULL with e saying why there is none. Called exactly once per accepted token. */
    void (*rebuild_done)(Manager *m, void *token, const MsSnapshotRecord *record, const MsError *e,
                         void *userdata);
    /* A resync accepted by manager_resync() is over: result, or NULL with e saying why not. */
    void (*resync_done)(Manager *m, void *token, const ManagerResyncResult *result,
                        const MsError *e, void *userdata);
    /* manager_reload_policies() is over (e: why it failed, NULL when it did not); the
     * policies it added, changed and removed were announced one by one before. */
    void (*policies_reloaded)(Manager *m, const MsError *e, void *userdata);
} ManagerHooks;

/* How many observers a manager tells of its changes (the bus adapter and the timers today). */
#define MANAGER_OBSERVERS_MAX 4

typedef struct ManagerOptions {
    const char *config_path; /* NULL: MS_AGENT_CONFIG_PATH */
    /* Each overrides the agent configuration's setting when non-NULL (tests). */
    const char *policy_directory;
    const char *state_directory;
    const char *worker_path;
    /* Where the bus side writes the policies' timer drop-ins; NULL: MANAGER_TIMER_DIRECTORY. */
    const char *timer_directory;
} ManagerOptions;

/* systemd's runtime unit directory: the timers' drop-ins are derived from the policy files and
 * rewritten at every start, like a generator's output. */
#define MANAGER_TIMER_DIRECTORY "/run/systemd/system"

/* Load the agent configuration, open the catalog in the state directory and mark the tasks a
 * previous run left unfinished as interrupted. Policies are loaded by manager_reload_policies(). */
int manager_new(sd_event *event, const ManagerOptions *o, Manager **ret_manager, MsError *e);
/* Running workers are killed (SIGKILL): call manager_begin_shutdown() first for a clean stop. */
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Tell hooks (static storage) of every change from now on, after the observers added before.
 * The tokens of rebuild_done and resync_done belong to whoever started the rebuild or resync:
 * one observer (the bus adapter) implements those. */
int manager_add_observer(Manager *m, const ManagerHooks *hooks, void *userdata, MsError *e);
/* The policy's timer fires next at next (0: not known); announced when it changed. */
void manager_policy_set_next_run(Manager *m, ManagerPolicy *p, uint64_t next);
const MsAgentConfig *manager_agent_config(const Manager *m);
/* ManagerOptions.timer_directory or MANAGER_TIMER_DIRECTORY. */
const char *manager_timer_directory(const Manager *m);

/* (Re)load policies.d: new files become policies, changed ones take their new settings (a
 * running task keeps the settings it started with), vanished ones go once idle. A bad file is
 * logged and listed by manager_policy_errors(); it does not stop the others. Fails only when
 * the directory cannot be read, leaving the loaded policies as they were. */
int manager_reload_policies(Manager *m, MsError *e);
size_t manager_n_policies(const Manager *m);
ManagerPolicy *manager_policy_at(Manager *m, size_t i);
/* NULL when unknown (or removed). */
ManagerPolicy *manager_find_policy(Manager *m, const char *name);
/* Point-in-time recovery: the policy's oplog follower (agent-follower.c). */
typedef struct ManagerFollowerStatus {
    /* "off" ([PointInTime] Enabled=no), "stopped" (the policy is stopped), "elsewhere" (another
     * node holds the follower lease), "starting",
     * "following", "restarting" (after a failure, waiting), "stopping". */
    const char *state;
    uint64_t last_slice_usec; /* when the last slice was committed (0: none yet) */
    uint64_t lag_usec;        /* how far behind the oplog's newest entry that slice was */
    uint64_t slices;          /* committed since the follower started */
    const char *last_error;   /* "" none */
    /* The instants a restore can reach, as the follower last reported them: pairs of
     * microseconds (from, to), each to the second (the ordinal is not shown here). */
    const uint64_t *ranges_usec;
    size_t n_ranges;
} ManagerFollowerStatus;
void manager_policy_follower(const Manager *m, const ManagerPolicy *p, ManagerFollowerStatus *ret);

/* The policy's chain of oplog slices as its store holds it, read by a worker: listed
 * (ListSlices) or each slice read through its checksums (VerifyChain). done is called once,
 * from the event loop, with the result or the error (never both); token is the caller's. */
typedef struct ManagerSlice {
    char *key;
    uint64_t start_usec, end_usec; /* to the second; the key holds the exact positions */
    bool idle;
} ManagerSlice;

typedef struct ManagerChainResult {
    bool verified;        /* VerifyChain: the counts below are filled */
    ManagerSlice *slices; /* ListSlices */
    size_t n_slices;
    uint64_t *chains_usec; /* VerifyChain: (from, to) pairs, one per chain */
    size_t n_chains;
    uint64_t damaged, gaps, entries;
    char **problems; /* "KEY: what is wrong", NULL-terminated or NULL */
} ManagerChainResult;

typedef void (*ManagerChainDone)(Manager *m, void *token, const ManagerChainResult *result,
                                 const MsError *e);
int manager_policy_chain(Manager *m, ManagerPolicy *p, bool verify, ManagerChainDone done,
                         void *token, MsError *e);

/* The messages of the policy files that did not load at the last reload. */
size_t manager_n_policy_errors(const Manager *m);
const char *manager_policy_error_at(const Manager *m, size_t i);

/* Snapshots in the catalog, oldest first; the manager keeps them in memory (it is the only
 * writer) and running tasks update them live. */
size_t manager_n_snapshots(const Manager *m);
const MsSnapshotRecord *manager_snapshot_at(const Manager *m, size_t i);
const MsSnapshotRecord *manager_find_snapshot(const Manager *m, const char *id);
/* Whether a policy of this name is loaded or has snapshots in the catalog. */
bool manager_policy_known(const Manager *m, const char *name);
/* How long a task has run (0 before it started; until it finished, or until now). */
uint64_t manager_task_elapsed_usec(const MsTaskCore *c, uint64_t now_usec);

/* Write credential name into mongosnap's credential store from fd (a regular file or memfd,
 * read whole): 0600, atomically; it is used from the next task on. The caller checks that the
 * requester is root. */
int manager_set_credential(Manager *m, const char *name, int fd, MsError *e);
/* Read the agent configuration again: [Restore] applies at once, the rest at the next start
 * (logged). A file that does not parse changes nothing (-errno, e says why). */
int manager_reload_config(Manager *m, MsError *e);
/* Check every policy again (after a reload, an edit, a new credential): their Problem. */
void manager_refresh_problems(Manager *m);

/* When p runs next: its timer's next elapse, or, when that is unknown or already past (the
 * timer has not re-armed yet, or its unit failed), the next time its Schedule= names, computed
 * as systemd would. 0: on request only, stopped, or not computable. Never a time in the past. */
uint64_t manager_policy_next_run(ManagerPolicy *p);

/* Is location a store the configuration names already (DefaultStore=, or a loaded policy's
 * Store=)? */
bool manager_store_is_configured(const Manager *m, const char *location);

/* A download address for a completed snapshot (a presigned GET for S3, valid expires_usec or
 * the store's default lifetime when 0); -EOPNOTSUPP for stores without one (local), -ENOENT
 * when the snapshot is not completed. Computed on each call: the addresses expire. */
int manager_snapshot_download_url(Manager *m, const MsSnapshotRecord *r, uint64_t expires_usec,
                                  char **ret_url, MsError *e);

/* Restores in the catalog, oldest first, kept in memory like the snapshots. */
size_t manager_n_restores(const Manager *m);
const MsRestoreRecord *manager_restore_at(const Manager *m, size_t i);
const MsRestoreRecord *manager_find_restore(const Manager *m, const char *id);

/* What StartRestore may ask for besides the snapshot and the target. */
typedef struct ManagerRestoreOptions {
    char **ns_include, **ns_exclude, **ns_from, **ns_to; /* NULL-terminated lists, may be NULL */
    bool drop;
    bool no_indexes;
    const char *until;      /* "T:I" or ISO 8601; NULL: replay the whole captured oplog */
    /* Point-in-time recovery: restore to this instant ("T:I" or ISO 8601 UTC), from the newest
     * point-in-time snapshot of the policy completed before it and the oplog slices after it.
     * The snapshot argument then names the policy (or a snapshot of it, to start from that
     * one). NULL: no. */
    const char *time;
    unsigned parallel;      /* insertion workers; 0: the worker's default */
    const char *credential; /* systemd credential with the target's password; NULL: none */
    /* systemd credential with the snapshot's encryption key; NULL: the key of the snapshot's
     * policy ([Encryption] Key=), if it has one. Names an older key after a rotation. */
    const char *key_credential;
    /* Restore a snapshot whose last verification failed (refused otherwise). */
    bool force;
    /* A cluster snapshot's shards into target shards of other names ("old=new,..."); NULL:
     * each into the shard of its own name. Refused for any other snapshot. */
    const char *shard_map;
    const char *part; /* one shard's part of a cluster snapshot alone, into a replica set */
} ManagerRestoreOptions;

/* Restore the completed snapshot snapshot_id into the deployment at target (a MongoDB URI; a
 * password in it reaches the worker only, never the catalog or the log). Queued like every
 * task. -ENOENT: no such snapshot; -ENOTRECOVERABLE: it is not completed; -EINVAL: a bad target
 * or option (the message names it); -ENOKEY: the credential is missing. */
int manager_start_restore(Manager *m, const char *snapshot_id, const char *target,
                          const ManagerRestoreOptions *o, const MsRestoreRecord **ret_record,
                          MsError *e);
/* Stop a queued or running restore; it ends cancelled. -ESRCH: it is neither. */
int manager_cancel_restore(Manager *m, const char *id, MsError *e);
/* Re-read a completed snapshot from its store and check every checksum and count; the
 * outcome is the snapshot's verify_* fields. -EBUSY: a verification of it is under way. */
int manager_verify_snapshot(Manager *m, const char *id, MsError *e);

/* Export (agent-export.c): how it ended, r 0 when the whole archive was written, else a
 * negative errno and a message (an archive cut short is not one to restore). */
typedef void (*ManagerExportDone)(void *userdata, int r, const char *message);
/* Stream completed snapshot id into fd (taken in every outcome) as a stock mongodump archive,
 * by a worker; done is called once, when it has ended, unless manager_export_forget() came
 * first (the requester went away: the export is stopped). */
int manager_export_snapshot(Manager *m, const char *id, int fd, ManagerExportDone done,
                            void *userdata, MsError *e);
void manager_export_forget(Manager *m, void *userdata);
/* Remove a snapshot from its store; the record stays as deleted. -EBUSY while it is being
 * taken, restored or verified. */
int manager_delete_snapshot(Manager *m, const char *id, MsError *e);

/* Start a snapshot of p now (queued when MaxConcurrentTasks= workers already run).
 * -EBUSY: p already has a task; -EPERM: p is stopped; -ENXIO: p has no store;
 * -EOPNOTSUPP: p asks for what the worker cannot do yet; -ENOKEY: its credential is missing. */
int manager_take_snapshot(Manager *m, ManagerPolicy *p, const MsSnapshotRecord **ret_record,
                          MsError *e);
/* The same, saying whether the policy's timer asked for it (scheduled): with several nodes,
 * every node's timer fires for the same tick and only the first counts; the others get the
 * snapshot that tick started (which may run on another node). */
int manager_take_snapshot_ex(Manager *m, ManagerPolicy *p, bool scheduled,
                             const MsSnapshotRecord **ret_record, MsError *e);
/* Stop p's schedule and its running task (SIGTERM; kept data is not touched). */
int manager_stop_policy(Manager *m, ManagerPolicy *p, MsError *e);
int manager_start_policy(Manager *m, ManagerPolicy *p, MsError *e);
/* Stop p, remove its file and mark it deleted, and remove its snapshots from local stores (its
 * local backup data); snapshots in remote stores (S3) are removed only with purge_store. p is
 * invalid afterwards. */
int manager_delete_policy(Manager *m, ManagerPolicy *p, bool purge_store, MsError *e);
/* One edit: "Key" or "Section.Key" and its new value ("" restores the default). */
typedef struct ManagerPolicyEdit {
    const char *key;
    const char *value;
} ManagerPolicyEdit;

/* Write policies.d/NAME.conf from the settings (as Edit takes them) and load it. -EEXIST: the
 * name is taken. */
int manager_create_policy(Manager *m, const char *name, const ManagerPolicyEdit *settings, size_t n,
                          ManagerPolicy **ret_policy, MsError *e);
/* Apply every edit to a copy of p's settings with the checks a file gets, write the policy file
 * atomically and only then adopt the new settings: all or nothing. -EINVAL (with the file's
 * message) when an edit is refused. A running task keeps the settings it started with. */
int manager_edit_policy(Manager *m, ManagerPolicy *p, const ManagerPolicyEdit *edits, size_t n,
                        MsError *e);
/* The same, and force: go ahead with retention that would remove too much at once (otherwise
 * refused with MS_ERROR_KIND_NEEDS_FORCE, nothing changed); with no edits, force confirms a
 * retention pass that was held (ManagerPolicy.retention_held). A Schedule= systemd refuses is
 * -EINVAL with systemd's reason. */
int manager_edit_policy_ex(Manager *m, ManagerPolicy *p, const ManagerPolicyEdit *edits, size_t n,
                           bool force, MsError *e);
/* Stop p's task (if any), remove the store's leftovers of unfinished writes under p's prefix,
 * make p active again and take a fresh snapshot. The outcome goes to the rebuild_done hook with
 * token, at once or when the running worker has exited. A negative return refuses the rebuild
 * (-EBUSY: a rebuild is already waiting) and the hook is not called. */
int manager_rebuild_policy(Manager *m, ManagerPolicy *p, void *token, MsError *e);
/* Stop the task that takes snapshot id. -ESRCH: it is not queued or running. */
int manager_cancel_snapshot(Manager *m, const char *id, MsError *e);

/* Rebuild the record of snapshots from the stores alone: every store of the loaded policies is
 * read (its manifests, by a worker) and the records reconciled (agent-resync.c says how). The
 * outcome goes to the resync_done hook with token. -EBUSY: one is under way. */
typedef enum ManagerResyncMode {
    RESYNC_FULL,         /* add, correct and mark missing (Resync) */
    RESYNC_CORRECT_ONLY, /* only correct this node's records of complete snapshots (at start) */
} ManagerResyncMode;
int manager_resync(Manager *m, ManagerResyncMode mode, void *token, MsError *e);

/* Write every running task's latest figures to the catalog now. */
int manager_flush(Manager *m, MsError *e);

/* "3 policies, nightly: snapshot 42 %" for STATUS=. */
void manager_format_status(const Manager *m, char *buf, size_t size);
bool manager_has_tasks(const Manager *m);

/* Stop every task (SIGTERM, recorded as interrupted) and refuse new ones; the event loop is
 * exited with code 0 once the last worker is gone (at once when none runs). */
void manager_begin_shutdown(Manager *m);

/* mongosnapctl's shared declarations: the run context, the verb table's shape, and the bus,
 * output and waiting helpers the verbs share. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "common/macro.h"
#include "ctl-exit.h"
#include "ctl-json.h"
#include "ctl-table.h"

#define CTL_PROGRAM "mongosnapctl"

/* Options that belong to some verbs only; a verb lists the ones it takes. */
typedef enum CtlOption {
    CTL_OPT_WAIT = 1u << 0,
    CTL_OPT_PURGE_REMOTE = 1u << 1,
    CTL_OPT_RESTORE = 1u << 2, /* --to, --ns-*, --drop, --until, --no-indexes, --parallel, ... */
    CTL_OPT_FOLLOW = 1u << 3,
    CTL_OPT_LINES = 1u << 4,
    CTL_OPT_EXPIRES = 1u << 5,
    CTL_OPT_SCHEDULED = 1u << 6,
    CTL_OPT_FORCE = 1u << 7,
} CtlOption;

typedef struct CtlRestoreArgs {
    char *to; /* a copy: the command line's copy has its password scrubbed */
    char **ns_include, **ns_exclude, **ns_from, **ns_to; /* NULL-terminated; into argv */
    bool drop;
    bool no_indexes;
    const char *until;
    const char *time; /* --time: point-in-time recovery; the argument then names the policy */
    const char *credential;
    const char *key_credential;
    const char *shard_map; /* a cluster snapshot's shards into other names: "old=new,..." */
    const char *part;      /* one shard's part of a cluster snapshot alone */
    unsigned parallel;     /* 0: the agent's default */
} CtlRestoreArgs;

typedef struct CtlArgs {
    bool legend;
    bool full; /* -l/--full: every column, nothing cut */
    bool json;
    bool pager;
    bool quiet;
    bool help;
    const char *address; /* NULL: the system bus */
    bool wait;
    bool purge_remote;
    bool scheduled; /* snapshot --scheduled: the policy's timer asks */
    bool force;     /* restore, edit --force */
    bool follow;
    unsigned lines; /* log -n; valid when lines_set */
    bool lines_set;
    uint64_t expires_usec; /* download-url --expires; 0: the store's default */
    CtlRestoreArgs restore;
    unsigned used; /* the CtlOption bits given */
} CtlArgs;

typedef struct Ctl {
    CtlArgs args;
    sd_bus *bus; /* connected on first use */
    bool stdout_tty;
    bool stderr_tty;
    bool utf8;
    size_t columns;        /* stdout's terminal width; 0 when not a terminal */
    size_t stderr_columns; /* stderr's, for the progress bar */
} Ctl;

typedef int (*CtlVerbFn)(Ctl *ctl, int argc, char **argv);

typedef struct CtlVerb {
    const char *name;
    const char *synopsis; /* the arguments after the verb: "POLICY [--wait]"; may be NULL */
    const char *summary;  /* one line for the global help */
    const char *details;  /* the verb's own --help, after the synopsis; may be NULL */
    int min_args;         /* positional arguments after the verb */
    int max_args;         /* CTL_ARGS_ANY: no limit */
    unsigned options;     /* CtlOption bits it accepts */
    CtlVerbFn run;
} CtlVerb;

#define CTL_ARGS_ANY (-1)

/* "VERB NAME", the prefix of a verb's error messages. */
#define CTL_WHAT_MAX 256

/* ---- ctl-bus.c: connection, calls, errors, lookups ---- */

/* Print "mongosnapctl: MESSAGE" on stderr and return code. */
int ctl_fail(CtlExit code, const char *fmt, ...) _printf_(2, 3);
/* Print "mongosnapctl: WHAT: <the D-Bus error message>" and return the exit code it means. */
int ctl_fail_bus(const char *what, const sd_bus_error *error, int r);
/* The bus, connected on first use; on failure prints why and returns CTL_EXIT_UNREACHABLE. */
int ctl_bus(Ctl *ctl, sd_bus **ret);
/* A method call on mongosnapd. */
int ctl_call(sd_bus *bus, const char *path, const char *interface, const char *method,
             sd_bus_error *error, sd_bus_message **ret_reply, const char *types, ...);

/* Object paths by name, checked with the agent: a name it has no object for is -ENOENT with
 * error set to the agent's NoSuch* error name and a message saying what was not found. */
int ctl_find_policy(sd_bus *bus, const char *name, char **ret_path, sd_bus_error *error);
int ctl_find_snapshot(sd_bus *bus, const char *id, char **ret_path, sd_bus_error *error);
int ctl_find_restore(sd_bus *bus, const char *id, char **ret_path, sd_bus_error *error);

typedef enum CtlObject {
    CTL_OBJECT_POLICY,
    CTL_OBJECT_SNAPSHOT,
    CTL_OBJECT_RESTORE,
} CtlObject;
/* A method of the policy, snapshot or restore the user named, found first: types and what
 * follows are its arguments, *ret_reply its reply and *ret_path the object's path (each when
 * asked for). On failure "VERB NAME: <why>" is printed and the exit code returned. */
/* A task's object: the snapshot's with that id, else the restore's; *ret_kind says which. When
 * neither has it, -ENOENT with error naming both lists. */
int ctl_find_task(sd_bus *bus, const char *id, char **ret_path, CtlObject *ret_kind,
                  sd_bus_error *error);
int ctl_object_callv(Ctl *ctl, CtlObject kind, const char *verb, const char *name,
                     const char *method, sd_bus_message **ret_reply, char **ret_path,
                     const char *types, va_list ap);
int ctl_object_call(Ctl *ctl, CtlObject kind, const char *verb, const char *name,
                    const char *method, sd_bus_message **ret_reply, char **ret_path,
                    const char *types, ...);

/* ---- ctl-rows.c: the rows of ListPolicies, ListSnapshots, ListRestores ---- */

typedef struct CtlPolicyRow {
    const char *name, *path, *state, *source, *schedule, *store;
    uint64_t last_run;
    const char *last_result;
    uint64_t next_run;
    const char *problem;
} CtlPolicyRow;

/* What every task row has (the record core of catalog.h as the rows carry it): one struct,
 * reachable as row.core or field by field (row.id). */
#define CTL_TASK_CORE_FIELDS                                                                       \
    const char *id, *node, *task_log, *state, *error, *path;                                       \
    uint64_t elapsed_usec, items, items_total, create_time;                                        \
    double progress;
typedef struct CtlTaskCore {
    CTL_TASK_CORE_FIELDS
} CtlTaskCore;

typedef struct CtlSnapshotRow {
    union {
        CtlTaskCore core;
        struct {
            CTL_TASK_CORE_FIELDS
        };
    };
    const char *policy, *file_name, *download_address;
    uint64_t expire_time, bytes;
    const char *verify_state;
    uint64_t seq;
    const char *origin, *kept_by;
    uint64_t expire_projected;
    int future_dated;
} CtlSnapshotRow;

typedef struct CtlRestoreRow {
    union {
        CtlTaskCore core;
        struct {
            CTL_TASK_CORE_FIELDS
        };
    };
    const char *snapshot, *target;
} CtlRestoreRow;

/* Read an array of rows from m; the strings point into m, which must outlive the rows. */
int ctl_read_policy_rows(sd_bus_message *m, CtlPolicyRow **ret, size_t *ret_n);
int ctl_read_snapshot_rows(sd_bus_message *m, CtlSnapshotRow **ret, size_t *ret_n);
int ctl_read_restore_rows(sd_bus_message *m, CtlRestoreRow **ret, size_t *ret_n);

/* ---- ctl-props.c: an object's properties (GetAll), kept after the reply is gone ---- */

typedef struct CtlProp {
    char *name;
    char type; /* the D-Bus type: s, o, b, i, u, t, d, or 'a' for as */
    union {
        char *str;
        char **strv;
        uint64_t u64;
        int64_t i64;
        double dbl;
        bool b;
    };
} CtlProp;

typedef struct CtlProps {
    CtlProp *items;
    size_t n;
} CtlProps;

int ctl_get_properties(sd_bus *bus, const char *path, const char *interface, CtlProps *ret,
                       sd_bus_error *error);
void ctl_props_done(CtlProps *p);
const CtlProp *ctl_props_find(const CtlProps *p, const char *name);
const char *ctl_props_str(const CtlProps *p, const char *name); /* "" when absent */
uint64_t ctl_props_u64(const CtlProps *p, const char *name);    /* 0 when absent */
double ctl_props_double(const CtlProps *p, const char *name);
bool ctl_props_bool(const CtlProps *p, const char *name);
/* Every property as a JSON key: snake_case names, times as ISO 8601 plus _usec. */
void ctl_json_props(CtlJson *j, const CtlProps *p);

/* ---- ctl-output.c: terminal, pager, tables, JSON of rows ---- */

void ctl_output_init(Ctl *ctl);
/* Start the pager for a table or log, when stdout is a terminal and neither --no-pager nor
 * --json was given. */
void ctl_pager_open(Ctl *ctl);
void ctl_pager_close(void);
/* Print a table fitted to the terminal, with the legend "N NOUNs listed." unless --no-legend. */
int ctl_print_table(Ctl *ctl, const CtlTable *t, const char *noun_singular,
                    const char *noun_plural);

void ctl_json_policy_row(CtlJson *j, const CtlPolicyRow *r);
/* The core's fields of a task row, inside an object already begun. */
void ctl_json_task_core(CtlJson *j, const CtlTaskCore *c);
void ctl_json_snapshot_row(CtlJson *j, const CtlSnapshotRow *r);
void ctl_json_restore_row(CtlJson *j, const CtlRestoreRow *r);
/* Tables of rows, as list-policies, list-snapshots and list-restores print them. */
int ctl_policy_table(const CtlPolicyRow *rows, size_t n, CtlTable **ret);
/* full: every column with long values whole (the download address itself); otherwise what an
 * operator reads, each value whole, dispensable columns hidden when the terminal is narrow. */
int ctl_snapshot_table(const CtlSnapshotRow *rows, size_t n, bool full, CtlTable **ret);
int ctl_restore_table(const CtlRestoreRow *rows, size_t n, CtlTable **ret);

/* ---- ctl-wait.c: --wait ---- */

typedef enum CtlTaskKind {
    CTL_TASK_SNAPSHOT,
    CTL_TASK_RESTORE,
    CTL_TASK_VERIFY, /* the VerifyState of a snapshot object */
} CtlTaskKind;

/* Wait for the task at path to end, drawing progress on a terminal; returns the exit code:
 * CTL_EXIT_OK when it completed (or the verification passed). */
int ctl_wait_task(Ctl *ctl, const char *path, CtlTaskKind kind, const char *id);
/* After a method started a task at path: print its id (or its JSON), or with --wait wait for
 * it. Returns the exit code. */
int ctl_task_started(Ctl *ctl, const char *what, const char *path, CtlTaskKind kind);
/* SIGINT sets a flag instead of killing us, while waiting or following. */
void ctl_catch_sigint(void);
bool ctl_sigint_received(void);

/* ---- the verbs ---- */

int verb_list_policies(Ctl *ctl, int argc, char **argv);
int verb_list_snapshots(Ctl *ctl, int argc, char **argv);
int verb_list_restores(Ctl *ctl, int argc, char **argv);
int verb_update(Ctl *ctl, int argc, char **argv);
int verb_resync(Ctl *ctl, int argc, char **argv);
int verb_list_slices(Ctl *ctl, int argc, char **argv);
int verb_verify_chain(Ctl *ctl, int argc, char **argv);
int verb_status(Ctl *ctl, int argc, char **argv);
int verb_snapshot(Ctl *ctl, int argc, char **argv);
int verb_stop(Ctl *ctl, int argc, char **argv);
int verb_start(Ctl *ctl, int argc, char **argv);
int verb_delete(Ctl *ctl, int argc, char **argv);
int verb_rebuild(Ctl *ctl, int argc, char **argv);
int verb_edit(Ctl *ctl, int argc, char **argv);
int verb_create_policy(Ctl *ctl, int argc, char **argv);
int verb_restore(Ctl *ctl, int argc, char **argv);
int verb_verify(Ctl *ctl, int argc, char **argv);
int verb_cancel(Ctl *ctl, int argc, char **argv);
int verb_delete_snapshot(Ctl *ctl, int argc, char **argv);
int verb_download_url(Ctl *ctl, int argc, char **argv);
int verb_export(Ctl *ctl, int argc, char **argv);
int verb_log(Ctl *ctl, int argc, char **argv);
int verb_show(Ctl *ctl, int argc, char **argv);
int verb_set_credential(Ctl *ctl, int argc, char **argv);

/* mongosnapctl: the command-line client of mongosnapd's D-Bus API; main, options and verbs. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl-format.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

#define USEC_PER_SEC UINT64_C(1000000)

/* StartRestore's parallel option: insertion workers (docs/dbus-api.md). */
#define RESTORE_PARALLEL_MIN 1
#define RESTORE_PARALLEL_MAX 64
#define DECIMAL 10

/* Verb-specific option help, shared by several verbs. */
#define HELP_WAIT(what) "  --wait            wait until " what "\n"

static const CtlVerb verbs[] = {
    {
        .name = "list-policies",
        .summary = "List the policies with their state, schedule and last result",
        .run = verb_list_policies,
    },
    {
        .name = "status",
        .synopsis = "[POLICY]",
        .summary = "Show a policy's settings, state, runs and running task; or the agent's",
        .details = "Without POLICY: the agent's version, node, the policy files that did not\n"
                   "load, and the policies. With POLICY: its settings, last and next run, and\n"
                   "its running task's progress.\n",
        .max_args = 1,
        .run = verb_status,
    },
    {
        .name = "list-snapshots",
        .synopsis = "[POLICY]",
        .summary = "List the snapshots, of one policy or of all",
        .max_args = 1,
        .run = verb_list_snapshots,
    },
    {
        .name = "list-restores",
        .summary = "List the restores",
        .run = verb_list_restores,
    },
    {
        .name = "snapshot",
        .synopsis = "POLICY [--wait] [--scheduled]",
        .summary = "Take a snapshot now and print its task name",
        .details = HELP_WAIT("the snapshot ends; exit 0 only if it completed")
            "  --scheduled       as the policy's timer: with several nodes, the first call for\n"
            "                    a tick starts the snapshot and the others follow that one\n",
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_WAIT | CTL_OPT_SCHEDULED,
        .run = verb_snapshot,
    },
    {
        .name = "stop",
        .synopsis = "POLICY",
        .summary = "Stop the policy's running task and its schedule",
        .min_args = 1,
        .max_args = 1,
        .run = verb_stop,
    },
    {
        .name = "start",
        .synopsis = "POLICY",
        .summary = "Resume the policy's schedule",
        .min_args = 1,
        .max_args = 1,
        .run = verb_start,
    },
    {
        .name = "delete",
        .synopsis = "POLICY [--purge-remote]",
        .summary = "Delete the policy (its file and local data)",
        .details = "  --purge-remote    also remove its snapshots from the store (kept by "
                   "default)\n",
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_PURGE_REMOTE,
        .run = verb_delete,
    },
    {
        .name = "rebuild",
        .synopsis = "POLICY [--wait]",
        .summary = "Stop the policy's task, clean its in-flight data, take a fresh snapshot",
        .details = HELP_WAIT("the fresh snapshot ends; exit 0 only if it completed"),
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_WAIT,
        .run = verb_rebuild,
    },
    {
        .name = "edit",
        .synopsis = "POLICY KEY=VALUE...",
        .summary = "Change policy settings, all or nothing",
        .details = "KEY is a policy file key (Schedule, KeepDaily, ...) or SECTION.KEY\n"
                   "(Retention.KeepDaily); an empty VALUE restores the default. See\n"
                   "mongosnap.conf(5) for every key.\n"
                   "  --force   go ahead when the new rules would remove more than 10\n"
                   "            snapshots (or more than half) at once; without KEY=VALUE,\n"
                   "            confirm a retention pass the agent holds\n",
        .min_args = 1,
        .max_args = CTL_ARGS_ANY,
        .options = CTL_OPT_FORCE,
        .run = verb_edit,
    },
    {
        .name = "create-policy",
        .synopsis = "NAME KEY=VALUE...",
        .summary = "Create a policy file and load it (Source= is required)",
        .details = "Settings as for edit, e.g.:\n"
                   "  " CTL_PROGRAM " create-policy nightly Source=mongodb://backup@db1/ "
                   "Schedule=daily\n",
        .min_args = 1,
        .max_args = CTL_ARGS_ANY,
        .run = verb_create_policy,
    },
    {
        .name = "restore",
        .synopsis = "SNAPSHOT|POLICY --to URI [OPTIONS]",
        .summary = "Restore a completed snapshot, or a policy to a time, into a deployment",
        .details = "  --to URI          the MongoDB deployment to restore into (required); prefer\n"
                   "                    --credential to a password in the URI\n"
                   "  --ns-include PAT  restore only namespaces matching PAT (db.*, db.coll);\n"
                   "                    repeatable\n"
                   "  --ns-exclude PAT  skip namespaces matching PAT; repeatable\n"
                   "  --ns-from PAT --ns-to PAT\n"
                   "                    rename namespaces ('*' captures); repeatable, in pairs\n"
                   "  --drop            drop each target collection before restoring into it\n"
                   "  --until TIME      replay the oplog up to TIME (ISO 8601, or T:I)\n"
                   "  --time TIME       point-in-time recovery: restore POLICY to TIME (ISO 8601\n"
                   "                    UTC like 2026-12-06T10:42:13Z, or T:I) from its newest\n"
                   "                    snapshot before TIME and its oplog slices; a time they\n"
                   "                    do not reach is refused, naming the restorable ranges\n"
                   "  --no-indexes      do not build indexes\n"
                   "  --parallel N      insertion workers, 1..64 (default 4)\n"
                   "  --credential NAME the credential holding the target's password (one of\n"
                   "                    [Restore] Credentials= in mongosnap.conf)\n"
                   "  --key-credential NAME\n"
                   "                    the encryption key, when not the policy's Key= (one of\n"
                   "                    [Restore] KeyCredentials=)\n"
                   "  --shard-map OLD=NEW,...\n"
                   "                    a cluster snapshot's shards into target shards of\n"
                   "                    other names (default: each into its own name)\n"
                   "  --part SHARD      one shard's part of a cluster snapshot alone, into a\n"
                   "                    replica set, to the snapshot's consistency point\n"
                   "  --force           restore a snapshot whose last verification failed\n"
                   HELP_WAIT("the restore ends; exit 0 only if it completed"),
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_RESTORE | CTL_OPT_WAIT | CTL_OPT_FORCE,
        .run = verb_restore,
    },
    {
        .name = "set-credential",
        .synopsis = "NAME",
        .summary = "Store a secret for the agent (root only); no restart needed",
        .details = "Reads the secret from standard input (typed without echo on a terminal;\n"
                   "a final newline is dropped) and has mongosnapd write it to its credential\n"
                   "store, /etc/mongosnap/credentials/NAME (root only, mode 0600). Policies\n"
                   "name it with Credential=NAME or [Encryption] Key=NAME; the S3 keys are\n"
                   "s3-access-key-id and s3-secret-access-key. Example:\n"
                   "  " CTL_PROGRAM " set-credential mongo-backup < /root/password\n",
        .min_args = 1,
        .max_args = 1,
        .run = verb_set_credential,
    },
    {
        .name = "show",
        .synopsis = "TASK",
        .summary = "Every field of one snapshot or restore, and its task log",
        .details = "TASK is a snapshot's or a restore's task name (list-snapshots,\n"
                   "list-restores show them). Download addresses and errors are shown whole.\n",
        .min_args = 1,
        .max_args = 1,
        .run = verb_show,
    },
    {
        .name = "verify",
        .synopsis = "SNAPSHOT [--wait]",
        .summary = "Re-read a snapshot from the store and check it",
        .details = HELP_WAIT("the verdict; exit 0 only if the snapshot passed"),
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_WAIT,
        .run = verb_verify,
    },
    {
        .name = "cancel",
        .synopsis = "TASK",
        .summary = "Cancel a queued or running snapshot or restore",
        .min_args = 1,
        .max_args = 1,
        .run = verb_cancel,
    },
    {
        .name = "delete-snapshot",
        .synopsis = "SNAPSHOT",
        .summary = "Remove a snapshot from the store (its record stays)",
        .min_args = 1,
        .max_args = 1,
        .run = verb_delete_snapshot,
    },
    {
        .name = "download-url",
        .synopsis = "SNAPSHOT [--expires SPAN]",
        .summary = "Print a time-limited download address of a snapshot's archive (S3)",
        .details = "  --expires SPAN    how long the address works: 90s, 30min, 12h, 7d\n"
                   "                    (default: the store's presign_expires=, at most 7d)\n"
                   "\nAnyone holding the address can download the archive until it expires.\n"
                   "A local store has no download address (exit 1).\n",
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_EXPIRES,
        .run = verb_download_url,
    },
    {
        .name = "export",
        .synopsis = "SNAPSHOT > FILE",
        .summary = "Write a snapshot as a stock mongodump archive (for mongorestore --archive)",
        .details = "  The agent reads the snapshot (checking every chunk of a chunked one) and\n"
                   "  streams it, uncompressed and decrypted, to standard output. A chunked\n"
                   "  snapshot (Format=chunked) has no single object to download: this is how\n"
                   "  it leaves the store whole. Exit 1 when the export failed: what was written\n"
                   "  is then incomplete.\n",
        .min_args = 1,
        .max_args = 1,
        .run = verb_export,
    },
    {
        .name = "log",
        .synopsis = "POLICY|TASK [-f] [-n N]",
        .summary = "Show the Event Log of a policy or a task",
        .details = "  -f, --follow      keep printing new entries until Ctrl-C\n"
                   "  -n, --lines N     only the newest N entries (default: all; 10 with -f)\n"
                   "\nA loaded policy of that name wins; otherwise the name is taken as a\n"
                   "task's.\n",
        .min_args = 1,
        .max_args = 1,
        .options = CTL_OPT_FOLLOW | CTL_OPT_LINES,
        .run = verb_log,
    },
    {
        .name = "update",
        .summary = "Save the running tasks' latest figures, then list snapshots and restores",
        .run = verb_update,
    },
    {
        .name = "list-slices",
        .synopsis = "POLICY",
        .summary = "List the oplog slices of a point-in-time policy, as its store holds them",
        .min_args = 1,
        .max_args = 1,
        .run = verb_list_slices,
    },
    {
        .name = "verify-chain",
        .synopsis = "POLICY",
        .summary = "Read every oplog slice of a policy through its checksums; show the chains",
        .details = "  Exits 1 when a slice is damaged (named on stderr); gaps are shown, not failed\n",
        .min_args = 1,
        .max_args = 1,
        .run = verb_verify_chain,
    },
    {
        .name = "resync",
        .summary = "Rebuild the record of snapshots from the stores' manifests alone",
        .details = "  Exits 1 when a store or manifest could not be read (listed on stderr)\n",
        .run = verb_resync,
    },
};

typedef struct OptionName {
    CtlOption bit;
    const char *name;
} OptionName;

static const OptionName option_names[] = {
    {CTL_OPT_WAIT, "--wait"},
    {CTL_OPT_PURGE_REMOTE, "--purge-remote"},
    {CTL_OPT_SCHEDULED, "--scheduled"},
    {CTL_OPT_RESTORE, "--to, --ns-*, --drop, --until, --time, --no-indexes, --parallel, "
                        "--credential, --key-credential, --shard-map, --part"},
    {CTL_OPT_FOLLOW, "--follow"},
    {CTL_OPT_LINES, "--lines"},
    {CTL_OPT_EXPIRES, "--expires"},
    {CTL_OPT_FORCE, "--force"},
};

static const char exit_code_help[] =
    "Exit status:\n"
    "  0  success (with --wait: the task completed, or the snapshot passed verification)\n"
    "  1  the operation or the awaited task failed (failed, interrupted, stopped, cancelled)\n"
    "  2  usage error: unknown verb or option, a bad KEY=VALUE, a setting the agent refuses\n"
    "  3  the agent is unreachable: no bus, or no " MONGOSNAP_BUS_NAME " on it\n"
    "  4  access denied\n"
    "  5  no such policy, snapshot or restore\n"
    "  130  interrupted by Ctrl-C while waiting (the task goes on)\n";

static void help_global(void) {
    printf(CTL_PROGRAM " [OPTIONS] VERB [ARGUMENTS]\n\n"
                       "Control mongosnapd, the MongoDB backup agent, over D-Bus.\n\nVerbs:\n");
    for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
        printf("  %s%s%s\n      %s\n", verbs[i].name, verbs[i].synopsis ? " " : "",
               verbs[i].synopsis ? verbs[i].synopsis : "", verbs[i].summary);
    printf("\nOptions:\n"
           "  -h, --help         this text; VERB --help for a verb's own\n"
           "      --version      print the version\n"
           "      --no-legend    no column headers and no \"N listed.\" footer\n"
           "  -l, --full         every column, each value whole (download addresses too)\n"
           "      --json         machine-readable JSON on stdout\n"
           "      --no-pager     do not pipe tables and logs into a pager\n"
           "      --address=ADDR talk to the bus at ADDR instead of the system bus\n"
           "  -q, --quiet        no task names and no final state lines; errors still show\n\n%s"
           "\nSee mongosnapctl(1).\n",
           exit_code_help);
}

static void help_verb(const CtlVerb *v) {
    printf(CTL_PROGRAM " %s%s%s\n\n%s.\n", v->name, v->synopsis ? " " : "",
           v->synopsis ? v->synopsis : "", v->summary);
    if (v->details)
        printf("\n%s", v->details);
    printf("\nThe global options (--json, --full, --no-legend, --no-pager, --address, -q) apply\n"
           "too; see " CTL_PROGRAM " --help.\n\n%s",
           exit_code_help);
}

static const CtlVerb *find_verb(const char *name) {
    for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

static int strv_push(char ***l, char *s) {
    size_t n = 0;
    while (*l && (*l)[n])
        n++;
    char **grown = realloc(*l, (n + 2) * sizeof(char *));
    if (!grown)
        return -ENOMEM;
    grown[n] = s;
    grown[n + 1] = NULL;
    *l = grown;
    return 0;
}

static int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, DECIMAL);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        return -EINVAL;
    *ret = (unsigned) v;
    return 0;
}

enum {
    OPT_VERSION = 256,
    OPT_NO_LEGEND,
    OPT_JSON,
    OPT_NO_PAGER,
    OPT_ADDRESS,
    OPT_WAIT,
    OPT_PURGE_REMOTE,
    OPT_SCHEDULED,
    OPT_TO,
    OPT_NS_INCLUDE,
    OPT_NS_EXCLUDE,
    OPT_NS_FROM,
    OPT_NS_TO,
    OPT_DROP,
    OPT_UNTIL,
    OPT_TIME,
    OPT_NO_INDEXES,
    OPT_PARALLEL,
    OPT_CREDENTIAL,
    OPT_KEY_CREDENTIAL,
    OPT_SHARD_MAP,
    OPT_PART,
    OPT_EXPIRES,
    OPT_FORCE,
    OPT_VERSION_SHOWN, /* not an option: parse_args() asks main() to print the version */
};

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"no-legend", no_argument, NULL, OPT_NO_LEGEND},
    {"full", no_argument, NULL, 'l'},
    {"json", no_argument, NULL, OPT_JSON},
    {"no-pager", no_argument, NULL, OPT_NO_PAGER},
    {"address", required_argument, NULL, OPT_ADDRESS},
    {"quiet", no_argument, NULL, 'q'},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"purge-remote", no_argument, NULL, OPT_PURGE_REMOTE},
    {"scheduled", no_argument, NULL, OPT_SCHEDULED},
    {"to", required_argument, NULL, OPT_TO},
    {"ns-include", required_argument, NULL, OPT_NS_INCLUDE},
    {"ns-exclude", required_argument, NULL, OPT_NS_EXCLUDE},
    {"ns-from", required_argument, NULL, OPT_NS_FROM},
    {"ns-to", required_argument, NULL, OPT_NS_TO},
    {"drop", no_argument, NULL, OPT_DROP},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"time", required_argument, NULL, OPT_TIME},
    {"no-indexes", no_argument, NULL, OPT_NO_INDEXES},
    {"parallel", required_argument, NULL, OPT_PARALLEL},
    {"credential", required_argument, NULL, OPT_CREDENTIAL},
    {"key-credential", required_argument, NULL, OPT_KEY_CREDENTIAL},
    {"shard-map", required_argument, NULL, OPT_SHARD_MAP},
    {"part", required_argument, NULL, OPT_PART},
    {"expires", required_argument, NULL, OPT_EXPIRES},
    {"force", no_argument, NULL, OPT_FORCE},
    {"follow", no_argument, NULL, 'f'},
    {"lines", required_argument, NULL, 'n'},
    {},
};

static int set_restore_target(CtlRestoreArgs *a, char *arg) {
    free(a->to);
    a->to = strdup(arg);
    if (!a->to)
        return -ENOMEM;
    /* The copy is what we send; the command line's copy loses its password, so that
     * ps and /proc/PID/cmdline no longer show it. */
    ctl_uri_scrub_password(arg);
    return 0;
}

/* The options of restore. Returns 1 if c was one, 0 if not, -errno on a bad value. */
static int parse_restore_option(CtlRestoreArgs *x, int c, char *arg) {
    switch (c) {
    case OPT_TO:
        return set_restore_target(x, arg) < 0 ? -ENOMEM : 1;
    case OPT_NS_INCLUDE:
        return strv_push(&x->ns_include, arg) < 0 ? -ENOMEM : 1;
    case OPT_NS_EXCLUDE:
        return strv_push(&x->ns_exclude, arg) < 0 ? -ENOMEM : 1;
    case OPT_NS_FROM:
        return strv_push(&x->ns_from, arg) < 0 ? -ENOMEM : 1;
    case OPT_NS_TO:
        return strv_push(&x->ns_to, arg) < 0 ? -ENOMEM : 1;
    case OPT_DROP:
        x->drop = true;
        return 1;
    case OPT_NO_INDEXES:
        x->no_indexes = true;
        return 1;
    case OPT_UNTIL:
        x->until = arg;
        return 1;
    case OPT_TIME:
        x->time = arg;
        return 1;
    case OPT_CREDENTIAL:
        x->credential = arg;
        return 1;
    case OPT_KEY_CREDENTIAL:
        x->key_credential = arg;
        return 1;
    case OPT_SHARD_MAP:
        x->shard_map = arg;
        return 1;
    case OPT_PART:
        x->part = arg;
        return 1;
    case OPT_PARALLEL:
        if (parse_unsigned(arg, RESTORE_PARALLEL_MIN, RESTORE_PARALLEL_MAX, &x->parallel) < 0) {
            ctl_fail(CTL_EXIT_USAGE, "--parallel wants a number from %d to %d, not '%s'",
                     RESTORE_PARALLEL_MIN, RESTORE_PARALLEL_MAX, arg);
            return -EINVAL;
        }
        return 1;
    default:
        return 0;
    }
}

/* "90", "90s", "30min", "12h", "7d": one number and one unit (seconds by default). */
static int parse_span(const char *s, uint64_t *ret_usec) {
    static const struct {
        const char *unit;
        uint64_t usec;
    } units[] = {
        {"", USEC_PER_SEC},       {"s", USEC_PER_SEC},        {"min", 60 * USEC_PER_SEC},
        {"m", 60 * USEC_PER_SEC}, {"h", 3600 * USEC_PER_SEC}, {"d", 86400 * USEC_PER_SEC},
    };
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-')
        return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(end, units[i].unit) == 0) {
            if (n > UINT64_MAX / units[i].usec)
                return -ERANGE;
            *ret_usec = n * units[i].usec;
            return 0;
        }
    return -EINVAL;
}

/* The verb-specific options, each remembered in args->used. Returns 1 if c was one, 0 if
 * not, -errno on a bad value. */
static int parse_verb_option(CtlArgs *a, int c, char *arg) {
    switch (c) {
    case OPT_WAIT:
        a->wait = true;
        a->used |= CTL_OPT_WAIT;
        return 1;
    case OPT_SCHEDULED:
        a->scheduled = true;
        a->used |= CTL_OPT_SCHEDULED;
        return 1;
    case OPT_PURGE_REMOTE:
        a->purge_remote = true;
        a->used |= CTL_OPT_PURGE_REMOTE;
        return 1;
    case OPT_FORCE:
        a->force = true;
        a->used |= CTL_OPT_FORCE;
        return 1;
    case 'f':
        a->follow = true;
        a->used |= CTL_OPT_FOLLOW;
        return 1;
    case 'n':
        a->used |= CTL_OPT_LINES;
        a->lines_set = true;
        if (parse_unsigned(arg, 0, UINT32_MAX, &a->lines) < 0) {
            ctl_fail(CTL_EXIT_USAGE, "--lines wants a number, not '%s'", arg);
            return -EINVAL;
        }
        return 1;
    case OPT_EXPIRES:
        a->used |= CTL_OPT_EXPIRES;
        if (parse_span(arg, &a->expires_usec) < 0 || a->expires_usec == 0) {
            ctl_fail(CTL_EXIT_USAGE,
                     "--expires wants a time span like 90s, 30min, 12h or 7d, "
                     "not '%s'",
                     arg);
            return -EINVAL;
        }
        return 1;
    default: {
        int r = parse_restore_option(&a->restore, c, arg);
        if (r != 0)
            a->used |= CTL_OPT_RESTORE;
        return r;
    }
    }
}

static int report_bad_option(int c, char **argv) {
    const char *given = argv[optind - 1];
    if (c == ':')
        return ctl_fail(CTL_EXIT_USAGE, "option '%s' needs a value; see " CTL_PROGRAM " --help",
                        given);
    if (optopt && optopt < OPT_VERSION)
        return ctl_fail(CTL_EXIT_USAGE, "unknown option '-%c'; see " CTL_PROGRAM " --help", optopt);
    return ctl_fail(CTL_EXIT_USAGE, "unknown option '%s'; see " CTL_PROGRAM " --help", given);
}

/* Returns CTL_EXIT_OK, an exit code on error, or OPT_VERSION_SHOWN. */
static int parse_args(int argc, char **argv, CtlArgs *a) {
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hqlfn:", long_options, NULL)) >= 0) {
        int r = parse_verb_option(a, c, optarg);
        if (r == -ENOMEM)
            return ctl_fail(CTL_EXIT_FAILED, "out of memory");
        if (r < 0)
            return CTL_EXIT_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'h':
            a->help = true;
            break;
        case 'q':
            a->quiet = true;
            break;
        case OPT_VERSION:
            return OPT_VERSION_SHOWN;
        case OPT_NO_LEGEND:
            a->legend = false;
            break;
        case 'l':
            a->full = true;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_NO_PAGER:
            a->pager = false;
            break;
        case OPT_ADDRESS:
            a->address = optarg;
            break;
        default:
            return report_bad_option(c, argv);
        }
    }
    return CTL_EXIT_OK;
}

/* Arguments and options the verb does not take are usage errors. */
static int check_verb_use(const CtlVerb *v, const CtlArgs *a, int n_args) {
    if (n_args < v->min_args || (v->max_args != CTL_ARGS_ANY && n_args > v->max_args))
        return ctl_fail(CTL_EXIT_USAGE,
                        "usage: " CTL_PROGRAM " %s%s%s (see " CTL_PROGRAM " %s --help)", v->name,
                        v->synopsis ? " " : "", v->synopsis ? v->synopsis : "", v->name);
    for (size_t i = 0; i < ELEMENTSOF(option_names); i++)
        if ((a->used & option_names[i].bit) && !(v->options & option_names[i].bit))
            return ctl_fail(CTL_EXIT_USAGE,
                            "%s does not apply to '%s' (see " CTL_PROGRAM " %s --help)",
                            option_names[i].name, v->name, v->name);
    return CTL_EXIT_OK;
}

static void ctl_done(Ctl *ctl) {
    ctl_pager_close();
    if (ctl->bus)
        ctl->bus = sd_bus_flush_close_unref(ctl->bus);
    CtlRestoreArgs *x = &ctl->args.restore;
    free(x->to);
    free(x->ns_include);
    free(x->ns_exclude);
    free(x->ns_from);
    free(x->ns_to);
}

static int run(Ctl *ctl, int argc, char **argv) {
    int code = parse_args(argc, argv, &ctl->args);
    if (code == OPT_VERSION_SHOWN) {
        printf(CTL_PROGRAM " %s\n", MONGOSNAP_VERSION);
        return CTL_EXIT_OK;
    }
    if (code != CTL_EXIT_OK)
        return code;
    char **rest = argv + optind;
    int n_rest = argc - optind;
    if (n_rest == 0 && ctl->args.help) {
        help_global();
        return CTL_EXIT_OK;
    }
    if (n_rest == 0)
        return ctl_fail(CTL_EXIT_USAGE, "no verb given; see " CTL_PROGRAM " --help");
    const CtlVerb *v = find_verb(rest[0]);
    if (!v)
        return ctl_fail(CTL_EXIT_USAGE, "unknown verb '%s'; see " CTL_PROGRAM " --help", rest[0]);
    if (ctl->args.help) {
        help_verb(v);
        return CTL_EXIT_OK;
    }
    code = check_verb_use(v, &ctl->args, n_rest - 1);
    if (code != CTL_EXIT_OK)
        return code;
    ctl_output_init(ctl);
    return v->run(ctl, n_rest, rest);
}

int main(int argc, char **argv) {
    _cleanup_(ctl_done) Ctl ctl = {.args = {.legend = true, .pager = true}};
    int code = run(&ctl, argc, argv);
    fflush(stdout);
    return code;
}

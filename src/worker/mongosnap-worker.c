/* mongosnap-worker: runs one task (snapshot, restore, verify) and exits. The agent spawns one
 * per task and reads its progress from --progress-fd; operators may run it by hand too. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog/snapshot-parts.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/timeutil.h"
#include "config.h"
#include "engine/cluster.h" /* MS_CLUSTER_*_SUFFIX */
#include "engine/mongo-client.h"
#include "engine/oplog-slice.h"
#include "engine/oplog-source.h" /* ms_oplog_position_append */
#include "engine/restore.h"
#include "engine/snapshot.h"
#include "engine/verify.h"
#include "io/filter-encrypt.h"
#include "mongosnap/mongosnap.h"
#include "storage/s3-location.h" /* ms_s3_parse_size */
#include "storage/storage.h"
#include "worker.h"

/* A password file is a credential: one line, bounded. */
#define PASSWORD_FILE_MAX 4096
#define DEFAULT_PARALLEL_COLLECTIONS 4u
#define DEFAULT_ZSTD_THREADS 2
/* Parts of at least 64 MiB: the two queries that find a part's bounds cost nothing beside it. */
#define DEFAULT_SPLIT_MIN_BYTES (UINT64_C(64) << 20)

volatile sig_atomic_t worker_cancel_requested = 0;

static void on_stop_signal(int sig) {
    worker_cancel_requested = 1;
}

volatile sig_atomic_t worker_refresh_requested = 0;

/* SIGUSR1: the agent's word that the policy's snapshots changed (the follower reads them
 * again); no other command has anything to refresh, and none dies of it. */
static void on_refresh_signal(int sig) {
    worker_refresh_requested = 1;
}

static void install_signal_handlers(void) {
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct sigaction refresh = {.sa_handler = on_refresh_signal, .sa_flags = SA_RESTART};
    sigemptyset(&refresh.sa_mask);
    sigaction(SIGUSR1, &refresh, NULL);
    /* A parent that stops reading progress must not kill the task. */
    signal(SIGPIPE, SIG_IGN);
}


static void help(void) {
    printf("mongosnap-worker %s: run one mongosnap task and exit.\n\n"
           "Usage:\n"
           "  mongosnap-worker snapshot --uri-file FILE --store DIR [--prefix P] [--name N]\n"
           "                            [--compression zstd|gzip|none] [--level N] [--threads N]\n"
           "                            [--parallel N] [--split-min SIZE] [--no-oplog]\n"
           "                            [--include-users]\n"
           "                            [--ns-include PAT]... [--ns-exclude PAT]...\n"
           "                            [--key-file FILE] [--format archive|chunked]\n"
           "                            [--chunk-size SIZE]\n"
           "                            (--split-min: a collection of 2 x SIZE or more is read\n"
           "                            by up to --parallel cursors, by _id range; default 64MiB,\n"
           "                            0 reads every collection with one cursor)\n"
           "  mongosnap-worker restore  --uri-file FILE (--store DIR --snapshot KEY | --archive "
           "FILE)\n"
           "                            [--drop] [--parallel N] [--batch-size N] [--no-indexes]\n"
           "                            [--ns-include PAT] [--ns-exclude PAT] [--ns-from PAT "
           "--ns-to PAT]\n"
           "                            [--until T:I|YYYY-MM-DDTHH:MM:SSZ] [--no-oplog]\n"
           "                            [--key-file FILE]\n"
           "  mongosnap-worker verify   (--store DIR --snapshot KEY | --archive FILE [--manifest "
           "FILE])\n"
           "                            [--key-file FILE] [--metadata-only]\n"
           "                            (--metadata-only, chunked snapshots: the index and every\n"
           "                            chunk's presence, without reading the chunks)\n"
           "  mongosnap-worker remove   --store DIR --key KEY [--key KEY]...\n"
           "                            [--gc --prefix P [--key-file FILE]]\n"
           "  mongosnap-worker scan     --store DIR [--prefix P]\n"
           "                            (every snapshot the store holds, from its manifests)\n"
           "Chunked snapshots (--format chunked):\n"
           "  mongosnap-worker gc       --store DIR --prefix P [--key-file FILE]\n"
           "                            (remove the chunks no snapshot under P names)\n"
           "  mongosnap-worker export   --store DIR --snapshot KEY [--key-file FILE]\n"
           "                            [--output FILE]  (the snapshot as a stock mongodump\n"
           "                            archive, uncompressed, on standard output or FILE)\n"
           "Sharded clusters (--uri-file names a mongos or the config server):\n"
           "  mongosnap-worker cluster-snapshot --uri-file FILE --store DIR [--prefix P] --name N\n"
           "                            [snapshot options]  (every shard and the config data,\n"
           "                            consistent at one oplog time)\n"
           "                            [--remote-part SHARD]... [--part-timeout SEC]\n"
           "                            [--part-agent NODE=HOST:PORT]... [--node-priority P]\n"
           "                            (those shards' parts taken by `cluster-part` processes,\n"
           "                            on the nodes beside their members, met in the store)\n"
           "  mongosnap-worker cluster-part --uri-file SHARD_URI --store DIR --prefix P --name N\n"
           "                            --shard SHARD [--via-cluster [--member HOST:PORT]]\n"
           "                            [--part-timeout SEC] [snapshot options]  (--via-cluster:\n"
           "                            the URI is the cluster's source; the shard's is read from\n"
           "                            config.shards; --member: that member alone, directly)\n"
           "                            (one shard's part of cluster snapshot P/N, whose\n"
           "                            coordinator runs cluster-snapshot --remote-part SHARD)\n"
           "  mongosnap-worker cluster-restore  --uri-file FILE --store DIR --snapshot P/N\n"
           "                            [--shard-map OLD=NEW,...] [--drop] [--key-file FILE]\n"
           "  mongosnap-worker cluster-balancer --uri-file FILE --store DIR --prefix P --resume\n"
           "                            [--name N]\n"
           "                            start the balancer a killed cluster snapshot of P left\n"
           "                            stopped (its marker P/N.balancer.json), if any\n"
           "  mongosnap-worker cluster-balancer --uri-file FILE --start\n"
           "                            start the balancer of a target cluster (a mongos) a\n"
           "                            killed restore left stopped (the agent keeps no marker)\n"
           "  restore --snapshot P/N --part SHARD  one shard's part alone into a replica set,\n"
           "                            to the cluster snapshot's consistency point (filters and\n"
           "                            renames as for any restore)\n"
           "  verify --snapshot P/N and remove --key P/N.cluster.json take a cluster snapshot\n"
           "  whole (every part read; the cluster manifest removed first, then the parts)\n"
           "Point-in-time recovery (the policy's prefix holds snapshots and oplog/ slices):\n"
           "  mongosnap-worker follow   --uri-file FILE --store DIR --prefix P [--slice-sec N]\n"
           "                            [--compression C] [--key-file FILE] [--max-slices N]\n"
           "                            [--max-sec N]  (tail the oplog into slices until stopped)\n"
           "  mongosnap-worker list-slices  --store DIR --prefix P  (slices and restorable ranges)\n"
           "  mongosnap-worker verify-chain --store DIR --prefix P [--key-file FILE]\n"
           "  mongosnap-worker restore  --uri-file FILE --store DIR --prefix P\n"
           "                            --time YYYY-MM-DDTHH:MM:SSZ|T:I [restore options]\n"
           "                            (the newest snapshot before the time, then its slices)\n\n"
           "Namespaces (snapshot and restore):\n"
           "  --ns-include PAT     take only collections matching PAT, DB.COLLECTION with '*'\n"
           "                       for any run ('shop.*', '*.orders'); repeatable; none given:\n"
           "                       every collection\n"
           "  --ns-exclude PAT     leave out collections matching PAT; repeatable; wins over\n"
           "                       --ns-include\n"
           "                       A snapshot with either is partial: its oplog carries only the\n"
           "                       selected namespaces and its manifest lists the patterns.\n"
           "                       --include-users is not filtered. No collection selected is an\n"
           "                       error (exit 1).\n"
           "  --ns-from PAT --ns-to PAT\n"
           "                       restore only: rename; each '*' in --ns-to takes what the same\n"
           "                       '*' in --ns-from matched\n\n"
           "Connection:\n"
           "  --uri-file FILE      read the MongoDB URI from FILE (keeps passwords out of ps)\n"
           "  --uri URI            the URI itself (or set MONGOSNAP_URI); avoid passwords here\n"
           "  --password-file FILE the password, e.g. a systemd credential; replaces the URI's\n\n"
           "Encryption:\n"
           "  --key-file FILE      an AES-256-GCM key: 32 raw bytes or 64 hex characters\n"
           "                       ('openssl rand -hex 32'), e.g. a systemd credential.\n"
           "                       snapshot: encrypt the stored archive; restore, verify: the\n"
           "                       key of an encrypted snapshot (its manifest's key_id says\n"
           "                       which). Without it, or with another key: exit 2.\n\n"
           "Reporting:\n"
           "  --progress-fd FD     write progress as JSON lines to FD\n"
           "  --progress-interval-ms N  report progress every N ms (default: 500 for snapshots;\n"
           "                       for tests that must see reports at given moments)\n"
           "  --json               print the result as one JSON object on stdout\n"
           "  -v, --verbose        more log output\n\n"
           "Exit status: 0 ok, 1 failed, 2 usage, 3 snapshot damaged, 4 server unreachable or\n"
           "login refused, 5 stopped by a signal.\n",
           MONGOSNAP_VERSION);
}

static int read_secret_file(const char *path, char **ret) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    char *buf = calloc(1, PASSWORD_FILE_MAX + 1);
    ssize_t n = buf ? read(fd, buf, PASSWORD_FILE_MAX + 1) : -1;
    close(fd);
    if (n < 0 || n > PASSWORD_FILE_MAX) {
        log_error("cannot read %s: %s", path, n < 0 ? strerror(errno) : "file is too large");
        ms_secret_free(buf);
        return -EINVAL;
    }
    /* Credentials are often written with a trailing newline. */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    *ret = buf;
    return 0;
}

enum {
    OPT_URI = 256,
    OPT_URI_FILE,
    OPT_PASSWORD_FILE,
    OPT_KEY_FILE,
    OPT_STORE,
    OPT_PREFIX,
    OPT_NAME,
    OPT_NODE,
    OPT_SEQ,
    OPT_ORIGIN,
    OPT_SNAPSHOT,
    OPT_KEY,
    OPT_ARCHIVE,
    OPT_MANIFEST,
    OPT_COMPRESSION,
    OPT_LEVEL,
    OPT_THREADS,
    OPT_PARALLEL,
    OPT_SPLIT_MIN,
    OPT_FORMAT,
    OPT_CHUNK_SIZE,
    OPT_GC,
    OPT_RESUME,
    OPT_START_BALANCER,
    OPT_REMOTE_PART,
    OPT_SHARD,
    OPT_PART_TIMEOUT,
    OPT_PART_AGENT,
    OPT_NODE_PRIORITY,
    OPT_VIA_CLUSTER,
    OPT_MEMBER,
    OPT_METADATA_ONLY,
    OPT_OUTPUT,
    OPT_SHARD_MAP,
    OPT_PART,
    OPT_BATCH_SIZE,
    OPT_NO_OPLOG,
    OPT_INCLUDE_USERS,
    OPT_DROP,
    OPT_NO_INDEXES,
    OPT_NO_BYPASS,
    OPT_UNTIL,
    OPT_NS_INCLUDE,
    OPT_NS_EXCLUDE,
    OPT_NS_FROM,
    OPT_NS_TO,
    OPT_PROGRESS_FD,
    OPT_PROGRESS_INTERVAL,
    OPT_JSON,
    OPT_TIME,
    OPT_SLICE_SEC,
    OPT_MAX_SLICES,
    OPT_MAX_SEC,
};

static bool parse_uint(const char *s, unsigned max, unsigned *ret) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return false;
    *ret = (unsigned) v;
    return true;
}

static int parse_args(int argc, char **argv, Args *a) {
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {"uri", required_argument, NULL, OPT_URI},
        {"uri-file", required_argument, NULL, OPT_URI_FILE},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {"store", required_argument, NULL, OPT_STORE},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"name", required_argument, NULL, OPT_NAME},
        {"node", required_argument, NULL, OPT_NODE},
        {"seq", required_argument, NULL, OPT_SEQ},
        {"origin", required_argument, NULL, OPT_ORIGIN},
        {"snapshot", required_argument, NULL, OPT_SNAPSHOT},
        {"key", required_argument, NULL, OPT_KEY},
        {"archive", required_argument, NULL, OPT_ARCHIVE},
        {"manifest", required_argument, NULL, OPT_MANIFEST},
        {"compression", required_argument, NULL, OPT_COMPRESSION},
        {"level", required_argument, NULL, OPT_LEVEL},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"split-min", required_argument, NULL, OPT_SPLIT_MIN},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
        {"gc", no_argument, NULL, OPT_GC},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"start", no_argument, NULL, OPT_START_BALANCER},
        {"remote-part", required_argument, NULL, OPT_REMOTE_PART},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"part-timeout", required_argument, NULL, OPT_PART_TIMEOUT},
        {"part-agent", required_argument, NULL, OPT_PART_AGENT},
        {"node-priority", required_argument, NULL, OPT_NODE_PRIORITY},
        {"via-cluster", no_argument, NULL, OPT_VIA_CLUSTER},
        {"member", required_argument, NULL, OPT_MEMBER},
        {"metadata-only", no_argument, NULL, OPT_METADATA_ONLY},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"shard-map", required_argument, NULL, OPT_SHARD_MAP},
        {"part", required_argument, NULL, OPT_PART},
        {"batch-size", required_argument, NULL, OPT_BATCH_SIZE},
        {"no-oplog", no_argument, NULL, OPT_NO_OPLOG},
        {"include-users", no_argument, NULL, OPT_INCLUDE_USERS},
        {"drop", no_argument, NULL, OPT_DROP},
        {"no-indexes", no_argument, NULL, OPT_NO_INDEXES},
        {"no-bypass-validation", no_argument, NULL, OPT_NO_BYPASS},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"ns-include", required_argument, NULL, OPT_NS_INCLUDE},
        {"ns-exclude", required_argument, NULL, OPT_NS_EXCLUDE},
        {"ns-from", required_argument, NULL, OPT_NS_FROM},
        {"ns-to", required_argument, NULL, OPT_NS_TO},
        {"progress-fd", required_argument, NULL, OPT_PROGRESS_FD},
        {"progress-interval-ms", required_argument, NULL, OPT_PROGRESS_INTERVAL},
        {"json", no_argument, NULL, OPT_JSON},
        {"time", required_argument, NULL, OPT_TIME},
        {"slice-sec", required_argument, NULL, OPT_SLICE_SEC},
        {"max-slices", required_argument, NULL, OPT_MAX_SLICES},
        {"max-sec", required_argument, NULL, OPT_MAX_SEC},
        {},
    };
    unsigned u;
    int c;
    while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0) {
        switch (c) {
        case 'h':
            help();
            exit(MONGOSNAP_EXIT_OK);
        case 'v':
            ms_log_set_max_level(MS_LOG_DEBUG);
            break;
        case OPT_URI:
            free(a->uri);
            a->uri = strdup(optarg);
            break;
        case OPT_URI_FILE:
            ms_secret_free(a->uri);
            a->uri = NULL;
            if (read_secret_file(optarg, &a->uri) < 0)
                return -EINVAL;
            break;
        case OPT_PASSWORD_FILE:
            ms_secret_free(a->password);
            a->password = NULL;
            if (read_secret_file(optarg, &a->password) < 0)
                return -EINVAL;
            break;
        case OPT_KEY_FILE: {
            MsError e = MS_ERROR_INIT;
            a->key = ms_encrypt_key_free(a->key);
            if (ms_encrypt_key_load_file(optarg, &a->key, &e) < 0) {
                log_error("--key-file: %s", e.message);
                return -EINVAL;
            }
            break;
        }
        case OPT_STORE:
            a->store = optarg;
            break;
        case OPT_PREFIX:
            a->prefix = optarg;
            break;
        case OPT_NAME:
            a->name = optarg;
            break;
        case OPT_SEQ: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || v > INT64_MAX) {
                log_error("--seq takes a number from 0 to %lld", (long long) INT64_MAX);
                return -EINVAL;
            }
            a->seq = v;
            break;
        }
        case OPT_ORIGIN:
            if (strcmp(optarg, "scheduled") != 0 && strcmp(optarg, "manual") != 0) {
                log_error("--origin is scheduled or manual, not '%s'", optarg);
                return -EINVAL;
            }
            a->origin = optarg;
            break;
        case OPT_NODE:
            a->node = optarg;
            break;
        case OPT_KEY:
            if (ms_ns_filter_add(&a->keys, &a->n_keys, optarg) < 0)
                return -ENOMEM;
            break;
        case OPT_SNAPSHOT:
            a->snapshot = optarg;
            break;
        case OPT_ARCHIVE:
            a->archive = optarg;
            break;
        case OPT_MANIFEST:
            a->manifest = optarg;
            break;
        case OPT_COMPRESSION:
            a->compression = ms_compression_from_string(optarg);
            a->compression_set = true;
            if (a->compression == MS_COMPRESSION_INVALID) {
                log_error("unknown compression '%s': use zstd, gzip or none", optarg);
                return -EINVAL;
            }
            break;
        case OPT_LEVEL:
            if (!parse_uint(optarg, 22, &u)) {
                log_error("--level takes a number from 1 to 22 (zstd) or 1 to 9 (gzip)");
                return -EINVAL;
            }
            a->level = (int) u;
            break;
        case OPT_THREADS:
            if (!parse_uint(optarg, 256, &u)) {
                log_error("--threads takes a number from 0 to 256");
                return -EINVAL;
            }
            a->threads = (int) u;
            break;
        case OPT_PARALLEL:
            if (!parse_uint(optarg, 64, &u) || u == 0) {
                log_error("--parallel takes a number from 1 to 64");
                return -EINVAL;
            }
            a->parallel = u;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "chunked") == 0)
                a->chunked = true;
            else if (strcmp(optarg, "archive") == 0)
                a->chunked = false;
            else {
                log_error("--format takes archive (one object per snapshot, the default) or "
                          "chunked (deduplicated chunks and an index)");
                return -EINVAL;
            }
            break;
        case OPT_CHUNK_SIZE:
            if (ms_s3_parse_size(optarg, &a->chunk_avg) < 0 || a->chunk_avg < 1024 ||
                a->chunk_avg > (1u << 20) || (a->chunk_avg & (a->chunk_avg - 1))) {
                log_error("--chunk-size takes a power of two from 1KiB to 1MiB (default 16KiB)");
                return -EINVAL;
            }
            break;
        case OPT_RESUME:
            a->resume = true;
            break;
        case OPT_START_BALANCER:
            a->start_balancer = true;
            break;
        case OPT_REMOTE_PART:
            if (ms_ns_filter_add(&a->remote_parts, &a->n_remote_parts, optarg) < 0)
                return -ENOMEM;
            break;
        case OPT_SHARD:
            a->shard = optarg;
            break;
        case OPT_PART_AGENT: {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1] || strchr(eq + 1, '=')) {
                log_error("--part-agent takes NODE=HOST:PORT (an agent's Node= and Member=), not "
                          "'%s'",
                          optarg);
                return -EINVAL;
            }
            if (ms_ns_filter_add(&a->part_agents, &a->n_part_agents, optarg) < 0)
                return -ENOMEM;
            break;
        }
        case OPT_NODE_PRIORITY:
            a->node_priority = ms_node_priority_from_string(optarg);
            if (a->node_priority == MS_NODE_PRIORITY_INVALID) {
                log_error("--node-priority is auto, hidden, secondary or primary, not '%s'", optarg);
                return -EINVAL;
            }
            break;
        case OPT_VIA_CLUSTER:
            a->via_cluster = true;
            break;
        case OPT_MEMBER:
            a->member = optarg;
            break;
        case OPT_PART_TIMEOUT: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > 86400) {
                log_error("--part-timeout takes seconds from 1 to 86400");
                return -EINVAL;
            }
            a->part_timeout_sec = v;
            break;
        }
        case OPT_GC:
            a->gc = true;
            break;
        case OPT_METADATA_ONLY:
            a->metadata_only = true;
            break;
        case OPT_OUTPUT:
            a->output = optarg;
            break;
        case OPT_PART:
            a->part = optarg;
            break;
        case OPT_SHARD_MAP:
            a->shard_map = optarg;
            break;
        case OPT_SPLIT_MIN:
            if (ms_s3_parse_size(optarg, &a->split_min) < 0) {
                log_error("--split-min takes a size such as 64MiB, 1GiB or 0 (never split)");
                return -EINVAL;
            }
            a->split_min_set = true;
            break;
        case OPT_BATCH_SIZE:
            if (!parse_uint(optarg, 100000, &u) || u == 0) {
                log_error("--batch-size takes a number from 1 to 100000");
                return -EINVAL;
            }
            a->batch_size = u;
            break;
        case OPT_NO_OPLOG:
            a->no_oplog = true;
            break;
        case OPT_INCLUDE_USERS:
            a->include_users = true;
            break;
        case OPT_DROP:
            a->drop = true;
            break;
        case OPT_NO_INDEXES:
            a->no_indexes = true;
            break;
        case OPT_NO_BYPASS:
            a->no_bypass_validation = true;
            break;
        case OPT_UNTIL:
            if (ms_oplog_position_parse(optarg, &a->until) < 0) {
                log_error("--until '%s' is neither an oplog time T:I nor a UTC time "
                          "YYYY-MM-DDTHH:MM:SSZ",
                          optarg);
                return -EINVAL;
            }
            a->has_until = true;
            break;
        case OPT_NS_INCLUDE:
            ms_ns_filter_add(&a->filter.include, &a->filter.n_include, optarg);
            break;
        case OPT_NS_EXCLUDE:
            ms_ns_filter_add(&a->filter.exclude, &a->filter.n_exclude, optarg);
            break;
        case OPT_NS_FROM:
            ms_ns_filter_add(&a->filter.rename_from, &a->n_rename_from, optarg);
            break;
        case OPT_NS_TO:
            ms_ns_filter_add(&a->filter.rename_to, &a->n_rename_to, optarg);
            break;
        case OPT_PROGRESS_FD:
            if (!parse_uint(optarg, 65535, &u) || fcntl((int) u, F_GETFD) < 0) {
                log_error("--progress-fd %s is not an open file descriptor", optarg);
                return -EINVAL;
            }
            a->progress_fd = (int) u;
            break;
        case OPT_PROGRESS_INTERVAL:
            if (!parse_uint(optarg, 60000, &u) || u < 10) {
                log_error("--progress-interval-ms %s: give 10 to 60000", optarg);
                return -EINVAL;
            }
            a->progress_interval_ms = u;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_TIME:
            if (ms_oplog_position_parse(optarg, &a->time) < 0) {
                log_error("--time '%s' is neither a UTC time YYYY-MM-DDTHH:MM:SSZ nor an oplog "
                          "time T:I",
                          optarg);
                return -EINVAL;
            }
            a->has_time = true;
            break;
        case OPT_SLICE_SEC:
            if (!parse_uint(optarg, 86400, &u) || u < 1) {
                log_error("--slice-sec takes a number of seconds from 1 to 86400");
                return -EINVAL;
            }
            a->slice_sec = u;
            break;
        case OPT_MAX_SLICES:
            if (!parse_uint(optarg, 1000000, &u)) {
                log_error("--max-slices takes a number from 0 (no limit) to 1000000");
                return -EINVAL;
            }
            a->max_slices = u;
            break;
        case OPT_MAX_SEC:
            if (!parse_uint(optarg, 100000000, &u)) {
                log_error("--max-sec takes a number of seconds (0: no limit)");
                return -EINVAL;
            }
            a->max_sec = u;
            break;
        default:
            return -EINVAL;
        }
    }
    /* Renames come in pairs, in order: the n-th --ns-from goes with the n-th --ns-to. */
    a->filter.n_rename = MS_MIN(a->n_rename_from, a->n_rename_to);
    if (a->n_rename_from != a->n_rename_to) {
        log_error("every --ns-from needs a --ns-to (got %zu --ns-from and %zu --ns-to)",
                  a->n_rename_from, a->n_rename_to);
        return -EINVAL;
    }
    if (optind >= argc) {
        log_error("no command given: use snapshot, restore, verify, remove or scan (see --help)");
        return -EINVAL;
    }
    a->command = argv[optind];
    if (optind + 1 < argc) {
        log_error("unexpected argument '%s' (see --help)", argv[optind + 1]);
        return -EINVAL;
    }
    return 0;
}

int worker_open_store(const Args *a, MsStorage **ret) {
    if (!a->store) {
        log_error("%s needs --store (a directory)", a->command);
        return -EINVAL;
    }
    MsError e = MS_ERROR_INIT;
    int r = ms_storage_open(a->store, ret, &e);
    if (r < 0)
        log_error("%s", e.message);
    return r;
}

/* Map a task error to an exit code the agent and scripts can rely on. */
int worker_exit_code_for(int r) {
    switch (-r) {
    case 0:
        return MONGOSNAP_EXIT_OK;
    case ECANCELED:
        return MONGOSNAP_EXIT_CANCELLED;
    case EBADMSG:
    case EPIPE:
        return MONGOSNAP_EXIT_CORRUPT;
    case EHOSTUNREACH:
    case EACCES:
        return MONGOSNAP_EXIT_UNREACHABLE;
    case EINVAL:
    /* A time no snapshot and chain reach: the caller picks another. */
    case ERANGE:
    /* An encrypted snapshot without its key, or with another key: the snapshot is sound, the
     * caller has to give the right key (2, not 3, so nobody takes it for damage). */
    case ENOKEY:
    case EKEYREJECTED:
        /* Bad input the caller can fix: a malformed URI, a name, an option combination. */
        return MONGOSNAP_EXIT_USAGE;
    default:
        return MONGOSNAP_EXIT_FAILURE;
    }
}

/* A task asked to stop that then fails was stopped: a worker blocked in server selection when
 * SIGTERM came reports the connection failure once the driver gives up, and that is not the
 * failure anyone should be told about (nor logged at error priority). */
int worker_stopped_instead(int r, MsError *e) {
    if (r >= 0 || r == -ECANCELED || !worker_cancel_requested)
        return r;
    ms_error_prefix(e, "stopped by a signal; the task had got to: ");
    e->code = ECANCELED;
    return -ECANCELED;
}

void worker_report_result(MsProgress *p, const Args *a, int r, const MsError *e, bson_t *fields) {
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "status", r == 0 ? "ok" : r == -ECANCELED ? "cancelled" : "failed");
    BSON_APPEND_UTF8(&doc, "command", a->command);
    if (r < 0) {
        BSON_APPEND_UTF8(&doc, "message", e->message);
        BSON_APPEND_INT32(&doc, "exit_code", worker_exit_code_for(r));
    }
    if (fields)
        bson_concat(&doc, fields);
    ms_progress_event(p, MONGOSNAP_PROGRESS_EVENT_RESULT, &doc);
    if (a->json) {
        char *json = bson_as_relaxed_extended_json(&doc, NULL);
        printf("%s\n", json);
        bson_free(json);
    }
    bson_destroy(&doc);
}

static void append_patterns(bson_t *b, const char *key, char *const *patterns, size_t n) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(b, key, &arr);
    for (size_t i = 0; i < n; i++) {
        char k[24];
        const char *kp;
        bson_uint32_to_string((uint32_t) i, &kp, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kp, patterns[i]);
    }
    bson_append_array_end(b, &arr);
}

/* Leftovers of earlier writes under the prefix that never finished (a killed worker's temporary
 * file, an S3 multipart upload nobody completed) cost space and, on S3, money: remove them
 * before writing. The prefix is the caller's promise that nobody else writes there now (the
 * agent runs one task per policy, and a policy's prefix is its own). Failing to clean is not
 * a reason to skip the snapshot. */
void worker_clean_prefix(MsStorage *storage, const char *prefix, bool slices) {
    if (!prefix || !prefix[0])
        return;
    unsigned removed = 0;
    MsError e = MS_ERROR_INIT;
    /* "nightly/", not "nightly": policy nightly2's writes are not ours. The slice directory is
     * the follower's alone, and it runs beside the snapshots. */
    _cleanup_free_ char *dir = NULL, *slice_dir = ms_slice_dir(prefix);
    if (asprintf(&dir, "%s/", prefix) < 0 || !slice_dir)
        return;
    if (storage->ops->clean_stale(storage, slices ? slice_dir : dir, slices ? NULL : slice_dir,
                                  &removed, &e) < 0)
        log_warning("cannot remove unfinished writes under '%s': %s", prefix, e.message);
    else if (removed > 0)
        log_info("removed %u unfinished write(s) left under '%s' by earlier tasks", removed,
                 prefix);
}

static int run_snapshot(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->uri) {
        log_error("snapshot needs the source: --uri-file FILE, --uri URI or MONGOSNAP_URI");
        return MONGOSNAP_EXIT_USAGE;
    }
    /* Checked before the store is opened or the server contacted: a bad pattern is the
     * caller's to fix, and nothing should be stored because of it. */
    if (a->n_rename_from > 0 || a->n_rename_to > 0) {
        log_error("--ns-from/--ns-to rename namespaces on restore; a snapshot takes them under "
                  "their own names (select them with --ns-include/--ns-exclude)");
        return MONGOSNAP_EXIT_USAGE;
    }
    MsError e = MS_ERROR_INIT;
    if (ms_ns_filter_validate(&a->filter, &e) < 0) {
        log_error("%s", e.message);
        return MONGOSNAP_EXIT_USAGE;
    }
    bool filtered = a->filter.n_include > 0 || a->filter.n_exclude > 0;
    if (a->chunked && a->compression_set && a->compression != MS_COMPRESSION_ZSTD) {
        log_error("--format chunked compresses each chunk with zstd; leave out --compression "
                  "(or give zstd)");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    worker_clean_prefix(storage, a->prefix, false);
    char default_name[64], stamp[MS_ISO8601_MAX];
    ms_format_compact(ms_realtime_usec(), stamp);
    snprintf(default_name, sizeof(default_name), "snapshot-%s", stamp);
    MsSnapshotOptions o = {
        .uri = a->uri,
        .password = a->password,
        .storage = storage,
        .prefix = a->prefix,
        .name = a->name ? a->name : default_name,
        .node = a->node,
        .seq = a->seq,
        .origin = a->origin,
        .compression = a->compression,
        .compression_level = a->level,
        .compression_threads = a->compression == MS_COMPRESSION_ZSTD ? a->threads : 0,
        .key = a->key,
        .parallel_collections = a->parallel ? a->parallel : DEFAULT_PARALLEL_COLLECTIONS,
        .split_min_bytes = a->split_min_set ? a->split_min : DEFAULT_SPLIT_MIN_BYTES,
        .chunked = a->chunked,
        .chunk_avg = (size_t) a->chunk_avg,
        .capture_oplog = !a->no_oplog,
        .include_users = a->include_users,
        .filter = filtered ? &a->filter : NULL,
        .detect_cluster = true,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
    MsSnapshotResult res = {0};
    int r = ms_snapshot_run(&o, &res, &e);
    if (r == -EXDEV) {
        /* A mongos or config server: the cluster's snapshot, every shard and the config data
         * (what a policy whose Source= names one means). */
        ms_snapshot_result_clear(&res);
        if (filtered || a->include_users || a->no_oplog) {
            log_error("%s; a cluster snapshot takes every namespace of every shard with its "
                      "oplog: leave out --ns-include/--ns-exclude, --include-users and --no-oplog",
                      e.message);
            worker_report_result(p, a, -EINVAL, &e, NULL);
            return MONGOSNAP_EXIT_USAGE;
        }
        log_info("%s", e.message);
        a->name = o.name;
        return worker_run_cluster_snapshot(a, p);
    }
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_UTF8(&fields, "archive", res.archive_key);
        BSON_APPEND_UTF8(&fields, "manifest", res.manifest_key);
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "namespaces", (int64_t) res.namespaces);
        BSON_APPEND_INT64(&fields, "stored_bytes", (int64_t) res.stored_bytes);
        BSON_APPEND_INT64(&fields, "uncompressed_bytes", (int64_t) res.uncompressed_bytes);
        BSON_APPEND_BOOL(&fields, "point_in_time", res.point_in_time);
        if (a->chunked) {
            BSON_APPEND_UTF8(&fields, "format", "chunked");
            BSON_APPEND_INT64(&fields, "chunks", (int64_t) res.chunks);
            BSON_APPEND_INT64(&fields, "chunks_stored", (int64_t) res.chunks_stored);
        }
        if (a->key) {
            /* The key's id (a hash prefix), never the key. */
            BSON_APPEND_UTF8(&fields, "encryption", MS_ENCRYPT_CIPHER_NAME);
            BSON_APPEND_UTF8(&fields, "key_id", a->key->id_hex);
        }
        if (filtered) {
            append_patterns(&fields, "ns_include", a->filter.include, a->filter.n_include);
            append_patterns(&fields, "ns_exclude", a->filter.exclude, a->filter.n_exclude);
            BSON_APPEND_INT64(&fields, "collections_left_out", (int64_t) res.collections_left_out);
            BSON_APPEND_INT64(&fields, "databases_skipped", (int64_t) res.databases_skipped);
            BSON_APPEND_INT64(&fields, "oplog_entries_left_out",
                              (int64_t) res.oplog_entries_left_out);
            /* Patterns that made no difference (the worker also logged a warning for each). */
            append_patterns(&fields, "ns_include_unused", res.ns_include_unused,
                            res.n_ns_include_unused);
            append_patterns(&fields, "ns_exclude_unused", res.ns_exclude_unused,
                            res.n_ns_exclude_unused);
        }
        if (!a->json) {
            printf("snapshot %s: %" PRIu64 " documents in %" PRIu64 " namespaces, %" PRIu64
                   " bytes stored%s\n",
                   res.archive_key, res.documents, res.namespaces, res.stored_bytes,
                   res.point_in_time ? ", point-in-time consistent"
                                     : ", NOT point-in-time consistent (no oplog)");
            if (a->key)
                printf("encrypted with %s, key id %s\n", MS_ENCRYPT_CIPHER_NAME, a->key->id_hex);
            if (filtered)
                printf("partial snapshot (--ns-include/--ns-exclude): %" PRIu64
                       " collections left out, %" PRIu64 " databases skipped unlisted, %" PRIu64
                       " oplog entries of other namespaces left out\n",
                       res.collections_left_out, res.databases_skipped, res.oplog_entries_left_out);
        }
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("snapshot stopped: %s", e.message);
    else
        log_error("snapshot failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    ms_snapshot_result_clear(&res);
    return worker_exit_code_for(r);
}

int worker_run_restore(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->uri) {
        log_error("restore needs the target: --uri-file FILE, --uri URI or MONGOSNAP_URI");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (!a->archive == !a->snapshot) {
        log_error("restore needs exactly one of --snapshot KEY (with --store) or --archive FILE");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->snapshot && worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    if (ms_ns_filter_validate(&a->filter, &e) < 0) {
        log_error("%s", e.message);
        return MONGOSNAP_EXIT_USAGE;
    }
    int cluster = storage ? ms_cluster_snapshot_exists(storage, a->snapshot, &e) : 0;
    if (cluster < 0) {
        log_error("restore failed: %s", e.message);
        worker_report_result(p, a, cluster, &e, NULL);
        return worker_exit_code_for(cluster);
    }
    _cleanup_free_ char *part_key = NULL;
    if (cluster > 0 && a->part) {
        /* One shard's part alone, for inspection: its own snapshot, to the cluster's point. */
        int r = worker_cluster_part(a, storage, &part_key, &e);
        if (r < 0) {
            log_error("restore failed: %s", e.message);
            worker_report_result(p, a, r, &e, NULL);
            return r == -EINVAL ? MONGOSNAP_EXIT_USAGE : worker_exit_code_for(r);
        }
        a->snapshot = part_key;
        cluster = 0;
    } else if (a->part) {
        log_error("--part names a shard of a cluster snapshot; %s is a snapshot of one replica set",
                  a->snapshot);
        return MONGOSNAP_EXIT_USAGE;
    }
    if (cluster > 0) {
        /* Every shard into its counterpart, to the cluster snapshot's consistency point. */
        if (a->filter.n_include || a->filter.n_exclude || a->n_rename_from || a->has_until ||
            a->has_time || a->no_oplog || a->no_indexes) {
            size_t stem = strlen(a->snapshot);
            if (worker_has_suffix(a->snapshot, MS_CLUSTER_MANIFEST_SUFFIX))
                stem -= strlen(MS_CLUSTER_MANIFEST_SUFFIX);
            log_error("%s is a cluster snapshot: it is restored whole into a sharded cluster "
                      "(its mongos or config server), each shard to the consistency point; "
                      "namespace filters, renames, --until, --time, --no-oplog and --no-indexes "
                      "apply to one part (restore --snapshot %.*s" MS_CLUSTER_PARTS_SUFFIX
                      "/SHARD into a replica set)",
                      a->snapshot, (int) stem, a->snapshot);
            return MONGOSNAP_EXIT_USAGE;
        }
        return worker_run_cluster_restore(a, p);
    }
    MsRestoreOptions o = {
        .uri = a->uri,
        .password = a->password,
        .storage = storage,
        .snapshot_key = a->snapshot,
        .archive_path = a->archive,
        .manifest_path = a->manifest,
        .key = a->key,
        .filter = &a->filter,
        .parallel = a->parallel,
        .batch_size = a->batch_size,
        .drop = a->drop,
        .replay_oplog = !a->no_oplog,
        .slice_keys = a->slice_keys,
        .n_slices = a->n_slices,
        .has_until = a->has_until,
        .until = a->until,
        .restore_indexes = !a->no_indexes,
        .bypass_validation = !a->no_bypass_validation,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
    MsRestoreResult res = {0};
    int r = ms_restore_run(&o, &res, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "duplicates", (int64_t) res.duplicates);
        BSON_APPEND_INT64(&fields, "namespaces", (int64_t) res.namespaces);
        BSON_APPEND_INT64(&fields, "views", (int64_t) res.views);
        BSON_APPEND_INT64(&fields, "indexes", (int64_t) res.indexes);
        BSON_APPEND_INT64(&fields, "oplog_applied", (int64_t) res.oplog_applied);
        BSON_APPEND_INT64(&fields, "oplog_not_selected", (int64_t) res.oplog_not_selected);
        BSON_APPEND_INT64(&fields, "oplog_unplaceable", (int64_t) res.oplog_unplaceable);
        BSON_APPEND_INT64(&fields, "oplog_uncommitted", (int64_t) res.oplog_uncommitted);
        BSON_APPEND_INT64(&fields, "namespaces_protected", (int64_t) res.namespaces_protected);
        BSON_APPEND_INT64(&fields, "check_usec", (int64_t) res.check_usec);
        if (res.point_in_time)
            bson_append_timestamp(&fields, "restored_to", -1, res.restored_to.t, res.restored_to.i);
        if (a->n_slices > 0)
            BSON_APPEND_INT64(&fields, "slice_entries", (int64_t) res.slice_entries);
        if (!a->json)
            printf("restored %" PRIu64 " documents into %" PRIu64 " collections (%" PRIu64
                   " views, %" PRIu64 " indexes), replayed %" PRIu64 " oplog entries\n",
                   res.documents, res.namespaces, res.views, res.indexes, res.oplog_applied);
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("restore stopped: %s", e.message);
    else
        log_error("restore failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* A cluster snapshot (engine/cluster.h): its manifest and every part, read whole. */
static int verify_cluster(Args *a, MsStorage *storage, MsProgress *p) {
    if (a->metadata_only) {
        log_error("verify --metadata-only reads one snapshot's chunk index; %s is a cluster "
                  "snapshot: leave out --metadata-only",
                  a->snapshot);
        return MONGOSNAP_EXIT_USAGE;
    }
    MsClusterVerifyResult res;
    MsError e = MS_ERROR_INIT;
    int r = ms_cluster_verify_run(storage, a->snapshot, a->key, p, &worker_cancel_requested, &res, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_INT64(&fields, "parts", (int64_t) res.parts);
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "oplog_entries", (int64_t) res.oplog_entries);
        BSON_APPEND_INT64(&fields, "stored_bytes", (int64_t) res.stored_bytes);
        if (!a->json)
            printf("verified cluster snapshot: %zu parts, %" PRIu64 " documents, %" PRIu64
                   " oplog entries, %" PRIu64 " bytes; every part's checksums and counts match "
                   "its manifest\n",
                   res.parts, res.documents, res.oplog_entries, res.stored_bytes);
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("verify stopped: %s", e.message);
    else
        log_error("verify failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

static int run_verify(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (!a->archive == !a->snapshot) {
        log_error("verify needs exactly one of --snapshot KEY (with --store) or --archive FILE");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (a->snapshot && worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    if (storage) {
        MsError ce = MS_ERROR_INIT;
        int k = ms_cluster_snapshot_exists(storage, a->snapshot, &ce);
        if (k > 0)
            return verify_cluster(a, storage, p);
        if (k < 0) {
            log_error("verify failed: %s", ce.message);
            worker_report_result(p, a, k, &ce, NULL);
            return worker_exit_code_for(k);
        }
    }
    if (a->metadata_only)
        return worker_verify_metadata(a, p);
    MsVerifyOptions o = {
        .storage = storage,
        .snapshot_key = a->snapshot,
        .archive_path = a->archive,
        .manifest_path = a->manifest,
        .key = a->key,
        .progress = p,
        .cancel = &worker_cancel_requested,
    };
    MsVerifyResult res = {0};
    MsError e = MS_ERROR_INIT;
    int r = ms_verify_run(&o, &res, &e);
    bson_t fields = BSON_INITIALIZER;
    if (r == 0) {
        BSON_APPEND_INT64(&fields, "namespaces", (int64_t) res.namespaces);
        BSON_APPEND_INT64(&fields, "documents", (int64_t) res.documents);
        BSON_APPEND_INT64(&fields, "oplog_entries", (int64_t) res.oplog_entries);
        BSON_APPEND_INT64(&fields, "stored_bytes", (int64_t) res.stored_bytes);
        BSON_APPEND_BOOL(&fields, "checked_against_manifest", res.checked_against_manifest);
        if (!a->json)
            printf("verified: %" PRIu64 " namespaces, %" PRIu64 " documents, %" PRIu64
                   " oplog entries, %" PRIu64 " bytes%s\n",
                   res.namespaces, res.documents, res.oplog_entries, res.stored_bytes,
                   res.checked_against_manifest ? ", all checksums and counts match the manifest"
                                                : " (no manifest: archive CRCs only)");
    } else if ((r = worker_stopped_instead(r, &e)) == -ECANCELED)
        log_info("verify stopped: %s", e.message);
    else {
        if (storage)
            worker_name_broken_snapshots(storage, a, &e);
        log_error("verify failed: %s", e.message);
    }
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* Every snapshot a store holds, read from its manifests alone (the agent's Resync): one
 * "snapshot" event per manifest that parses, one "problem" event per one that does not, then
 * the result with the counts. Runs as a worker because listing and reading an S3 store may take
 * long and must not block the agent's event loop. */
#define SCAN_MANIFEST_MAX (16u * 1024u * 1024u)

static int read_object(MsStorage *st, const char *key, char **ret, size_t *ret_len, MsError *e) {
    _cleanup_(ms_source_freep) MsSource *src = NULL;
    int r = ms_storage_open_read(st, key, &src, e);
    if (r < 0)
        return r;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return ms_error_set(e, ENOMEM, "out of memory");
    for (;;) {
        if (len == cap) {
            if (cap >= SCAN_MANIFEST_MAX) {
                free(buf);
                return ms_error_set(e, EFBIG, "larger than %u bytes: not a manifest",
                                    SCAN_MANIFEST_MAX);
            }
            char *n = realloc(buf, 2 * cap + 1);
            if (!n) {
                free(buf);
                return ms_error_set(e, ENOMEM, "out of memory");
            }
            buf = n;
            cap *= 2;
        }
        ssize_t got = ms_source_read(src, buf + len, cap - len, e);
        if (got < 0) {
            free(buf);
            return (int) got;
        }
        if (got == 0)
            break;
        len += (size_t) got;
    }
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return 0;
}

bool worker_has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* One snapshot a scan found, as its "snapshot" event says it (the agent's resync reads it). */
typedef struct ScanRow {
    const char *id, *node, *origin, *archive, *started_at, *finished_at;
    uint64_t seq, documents, bytes;
    bool point_in_time, encrypted, archive_present, archive_size_matches;
    const bson_t *parts; /* a cluster snapshot's (catalog/snapshot-parts.h), or NULL */
} ScanRow;

static void scan_problem(MsProgress *p, const char *key, const MsError *e, size_t *problems) {
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "key", key);
    BSON_APPEND_UTF8(&f, "message", e->message);
    ms_progress_event(p, "problem", &f);
    bson_destroy(&f);
    log_warning("%s: %s", key, e->message);
    (*problems)++;
}

static void scan_report(MsProgress *p, const char *key, const ScanRow *row, size_t *found) {
    /* The policy is the first component of the key (the agent's --prefix is the policy). */
    const char *slash = strchr(key, '/');
    _cleanup_free_ char *policy = slash ? strndup(key, (size_t) (slash - key)) : NULL;
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "id", row->id ? row->id : "");
    BSON_APPEND_UTF8(&f, "policy", policy ? policy : "");
    BSON_APPEND_UTF8(&f, "node", row->node ? row->node : "");
    BSON_APPEND_INT64(&f, "seq", (int64_t) MS_MIN(row->seq, (uint64_t) INT64_MAX));
    BSON_APPEND_UTF8(&f, "origin", row->origin ? row->origin : "");
    BSON_APPEND_UTF8(&f, "manifest", key);
    BSON_APPEND_UTF8(&f, "archive", row->archive ? row->archive : "");
    BSON_APPEND_UTF8(&f, "started_at", row->started_at ? row->started_at : "");
    BSON_APPEND_UTF8(&f, "finished_at", row->finished_at ? row->finished_at : "");
    BSON_APPEND_INT64(&f, "documents", (int64_t) MS_MIN(row->documents, (uint64_t) INT64_MAX));
    BSON_APPEND_INT64(&f, "bytes", (int64_t) MS_MIN(row->bytes, (uint64_t) INT64_MAX));
    BSON_APPEND_BOOL(&f, "point_in_time", row->point_in_time);
    BSON_APPEND_BOOL(&f, "encrypted", row->encrypted);
    BSON_APPEND_BOOL(&f, "archive_present", row->archive_present);
    BSON_APPEND_BOOL(&f, "archive_size_matches", row->archive_size_matches);
    if (row->parts)
        BSON_APPEND_ARRAY(&f, "parts", row->parts);
    ms_progress_event(p, "snapshot", &f);
    bson_destroy(&f);
    (*found)++;
}

static void scan_one(MsStorage *st, const char *key, MsProgress *p, size_t *found,
                     size_t *problems) {
    MsError e = MS_ERROR_INIT;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    MsManifest m;
    memset(&m, 0, sizeof(m));
    int r = read_object(st, key, &text, &len, &e);
    if (r >= 0)
        r = ms_manifest_parse(text, len, &m, &e);
    if (r < 0) {
        scan_problem(p, key, &e, problems);
        return;
    }
    MsStorageObject archive = {0};
    MsError ae = MS_ERROR_INIT;
    bool present = m.archive_key && ms_storage_stat(st, m.archive_key, &archive, &ae) >= 0;
    ScanRow row = {.id = m.snapshot, .node = m.node, .origin = m.origin, .archive = m.archive_key,
                   .started_at = m.started_at, .finished_at = m.finished_at, .seq = m.seq,
                   .documents = m.total_documents, .bytes = m.archive_size,
                   .point_in_time = m.point_in_time, .encrypted = m.encryption_cipher != NULL,
                   .archive_present = present,
                   .archive_size_matches = present && archive.size == m.archive_size};
    scan_report(p, key, &row, found);
    free(archive.key);
    ms_manifest_clear(&m);
}

/* A cluster snapshot is one snapshot of its policy: its manifest is its "archive" too, and it
 * is whole when every part's manifest is there (each part's archive is checked by verify). */
static void scan_cluster(MsStorage *st, const char *key, MsProgress *p, size_t *found,
                         size_t *problems) {
    MsClusterManifest cm;
    MsError e = MS_ERROR_INIT;
    if (ms_cluster_manifest_read(st, key, &cm, &e) < 0) {
        scan_problem(p, key, &e, problems);
        return;
    }
    bool whole = true;
    for (size_t i = 0; whole && i < cm.n_parts; i++) {
        MsStorageObject o = {0};
        MsError se = MS_ERROR_INIT;
        whole = ms_storage_stat(st, cm.parts[i].manifest_key, &o, &se) >= 0;
        free(o.key);
    }
    /* Its parts, for the record's Parts (show, the bus). */
    bson_t parts = BSON_INITIALIZER;
    for (size_t i = 0; i < cm.n_parts; i++) {
        const MsClusterPart *cp = &cm.parts[i];
        bson_t d = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&d, "shard", cp->shard);
        BSON_APPEND_UTF8(&d, "replica_set", cp->rs ? cp->rs : "");
        BSON_APPEND_UTF8(&d, "manifest", cp->manifest_key);
        BSON_APPEND_INT64(&d, "documents", (int64_t) MS_MIN(cp->documents, (uint64_t) INT64_MAX));
        BSON_APPEND_INT64(&d, "stored_bytes",
                          (int64_t) MS_MIN(cp->stored_bytes, (uint64_t) INT64_MAX));
        ms_oplog_position_append(&d, "dump_end", cp->dump_end);
        if (cp->node)
            BSON_APPEND_UTF8(&d, "node", cp->node);
        (void) ms_snapshot_parts_append(&parts, (uint32_t) i, &d);
        bson_destroy(&d);
    }
    ScanRow row = {.id = cm.name, .node = cm.node, .origin = cm.origin, .archive = key,
                   .started_at = cm.started_at, .finished_at = cm.finished_at, .seq = cm.seq,
                   .documents = cm.documents, .bytes = cm.stored_bytes, .point_in_time = true,
                   .encrypted = cm.encrypted, .archive_present = whole,
                   .archive_size_matches = whole, .parts = &parts};
    scan_report(p, key, &row, found);
    bson_destroy(&parts);
    ms_cluster_manifest_clear(&cm);
}

/* The length of key's name without its archive suffix (".archive", ".archive.zst",
 * ".archive.gz"), or 0 when key is not an archive. */
static size_t archive_stem(const char *key) {
    /* A chunked snapshot's index is its "archive": one left without a manifest is an orphan
     * too (its chunks go with the next collection). */
    static const char *const suffixes[] = {MONGOSNAP_ARCHIVE_SUFFIX ".zst",
                                           MONGOSNAP_ARCHIVE_SUFFIX ".gz", MONGOSNAP_ARCHIVE_SUFFIX,
                                           MONGOSNAP_INDEX_SUFFIX};
    for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
        if (worker_has_suffix(key, suffixes[i]))
            return strlen(key) - strlen(suffixes[i]);
    return 0;
}

/* Whether key lies in a cluster snapshot's parts ("P/N.parts/shard01.manifest.json"): a part is
 * an ordinary snapshot, but it belongs to its cluster snapshot, which names and removes it.
 * Listed on its own, the agent would take it into its records and its retention could expire
 * one part of a kept cluster snapshot; an unfinished part's archive is the cluster snapshot's
 * to remove, not an orphan. */
static bool in_cluster_parts(const char *key) {
    return ms_cluster_part_key(key, NULL);
}

static int compare_object_keys(const void *a, const void *b) {
    return strcmp(((const MsStorageObject *) a)->key, ((const MsStorageObject *) b)->key);
}

/* An archive with no manifest beside it: a snapshot whose worker was killed between its two
 * commits (archive, then manifest), or one being committed right now. Reported, with its age,
 * for the agent to decide (it knows which tasks may still commit); never removed here. */
static void report_orphans(const MsStorageObject *objects, size_t n, MsProgress *p,
                           size_t *ret_orphans) {
    for (size_t i = 0; i < n; i++) {
        size_t stem = archive_stem(objects[i].key);
        if (stem == 0 || in_cluster_parts(objects[i].key))
            continue;
        _cleanup_free_ char *manifest = NULL;
        if (asprintf(&manifest, "%.*s%s", (int) stem, objects[i].key, MONGOSNAP_MANIFEST_SUFFIX) <
            0)
            return;
        MsStorageObject probe = {.key = manifest};
        if (bsearch(&probe, objects, n, sizeof(*objects), compare_object_keys))
            continue;
        const char *slash = strrchr(objects[i].key, '/');
        const char *name = slash ? slash + 1 : objects[i].key;
        size_t name_len = stem - (size_t) (name - objects[i].key);
        const char *first = strchr(objects[i].key, '/');
        _cleanup_free_ char *id = strndup(name, name_len);
        _cleanup_free_ char *policy =
            first ? strndup(objects[i].key, (size_t) (first - objects[i].key)) : strdup("");
        if (!id || !policy)
            return;
        bson_t f = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&f, "key", objects[i].key);
        BSON_APPEND_UTF8(&f, "id", id);
        BSON_APPEND_UTF8(&f, "policy", policy);
        BSON_APPEND_INT64(&f, "size", (int64_t) MS_MIN(objects[i].size, (uint64_t) INT64_MAX));
        BSON_APPEND_INT64(&f, "mtime_usec", objects[i].mtime_usec);
        ms_progress_event(p, "orphan", &f);
        bson_destroy(&f);
        log_warning("%s: an archive without a manifest", objects[i].key);
        (*ret_orphans)++;
    }
}

/* A cluster snapshot's parts with no cluster manifest: one killed, or cut short after it was
 * removed. Reported once per cluster snapshot, under the cluster manifest's key (which the
 * removal of a cluster snapshot expands to everything under its parts), with the newest part's
 * time, for the agent to remove as it removes an archive without a manifest. */
static void report_cluster_orphans(const MsStorageObject *objects, size_t n, MsProgress *p,
                                   size_t *ret_orphans) {
    for (size_t i = 0; i < n;) {
        size_t stem = 0;
        if (!ms_cluster_part_key(objects[i].key, &stem)) {
            i++;
            continue;
        }
        size_t dir = stem + strlen(MS_CLUSTER_PARTS_SUFFIX "/");
        int64_t newest = 0;
        uint64_t size = 0;
        size_t j = i;
        size_t n_parts = 0;
        /* sorted: a snapshot's parts are consecutive (with anything deeper, not counted) */
        for (; j < n && strncmp(objects[j].key, objects[i].key, dir) == 0; j++)
            if (ms_cluster_part_key(objects[j].key, NULL)) {
                newest = MS_MAX(newest, objects[j].mtime_usec);
                size += objects[j].size;
                n_parts++;
            }
        _cleanup_free_ char *manifest = NULL;
        if (asprintf(&manifest, "%.*s%s", (int) stem, objects[i].key, MS_CLUSTER_MANIFEST_SUFFIX) < 0)
            return;
        MsStorageObject probe = {.key = manifest};
        bool committed = bsearch(&probe, objects, n, sizeof(*objects), compare_object_keys) != NULL;
        if (!committed) {
            const char *slash = memrchr(objects[i].key, '/', stem);
            const char *name = slash ? slash + 1 : objects[i].key;
            const char *first = strchr(objects[i].key, '/');
            _cleanup_free_ char *id = strndup(name, stem - (size_t) (name - objects[i].key));
            _cleanup_free_ char *policy =
                first && (size_t) (first - objects[i].key) < stem
                    ? strndup(objects[i].key, (size_t) (first - objects[i].key))
                    : strdup("");
            if (!id || !policy)
                return;
            bson_t f = BSON_INITIALIZER;
            BSON_APPEND_UTF8(&f, "key", manifest);
            BSON_APPEND_UTF8(&f, "id", id);
            BSON_APPEND_UTF8(&f, "policy", policy);
            BSON_APPEND_INT64(&f, "size", (int64_t) MS_MIN(size, (uint64_t) INT64_MAX));
            BSON_APPEND_INT64(&f, "mtime_usec", newest);
            ms_progress_event(p, "orphan", &f);
            bson_destroy(&f);
            log_warning("%.*s%s: %zu part object(s) of a cluster snapshot without its cluster "
                        "manifest",
                        (int) stem, objects[i].key, MS_CLUSTER_PARTS_SUFFIX, n_parts);
            (*ret_orphans)++;
        }
        i = j;
    }
}

static int run_scan(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    MsStorageObject *objects = NULL;
    size_t n = 0, found = 0, problems = 0, orphans = 0, clusters = 0;
    int r = ms_storage_list(storage, a->prefix ? a->prefix : "", &objects, &n, &e);
    if (r >= 0 && n > 1)
        qsort(objects, n, sizeof(*objects), compare_object_keys);
    for (size_t i = 0; r >= 0 && i < n && !worker_cancel_requested; i++) {
        if (in_cluster_parts(objects[i].key))
            continue;
        if (worker_has_suffix(objects[i].key, MS_CLUSTER_MANIFEST_SUFFIX)) {
            clusters++;
            scan_cluster(storage, objects[i].key, p, &found, &problems);
        } else if (worker_has_suffix(objects[i].key, MONGOSNAP_MANIFEST_SUFFIX))
            scan_one(storage, objects[i].key, p, &found, &problems);
    }
    if (r >= 0 && !worker_cancel_requested) {
        report_orphans(objects, n, p, &orphans);
        report_cluster_orphans(objects, n, p, &orphans);
    }
    for (size_t i = 0; i < n; i++)
        free(objects[i].key);
    free(objects);
    if (r >= 0 && worker_cancel_requested)
        r = ms_error_set(&e, ECANCELED, "stopped by a signal");
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_INT64(&fields, "found", (int64_t) found);
    BSON_APPEND_INT64(&fields, "problems", (int64_t) problems);
    BSON_APPEND_INT64(&fields, "orphans", (int64_t) orphans);
    BSON_APPEND_INT64(&fields, "cluster_snapshots", (int64_t) clusters);
    if (r >= 0 && !a->json)
        printf("%zu snapshot(s) found, %zu manifest(s) unreadable, %zu archive(s) without a "
               "manifest%s",
               found, problems, orphans, clusters ? "" : "\n");
    if (r >= 0 && !a->json && clusters)
        printf("; %zu of them cluster snapshot(s), whose parts are theirs and not listed\n",
               clusters);
    else if (r < 0)
        log_error("scan failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* Remove objects from a store, in the order given (the agent gives a snapshot's manifest first,
 * so that a half-done removal never leaves something that looks complete). It runs as a worker
 * because a remote store's round trips and retries must not block the agent's event loop. The
 * result says how many keys were removed, so the agent knows whether anything changed. */
static int run_remove(Args *a, MsProgress *p) {
    _cleanup_(ms_storage_freep) MsStorage *storage = NULL;
    if (a->n_keys == 0) {
        log_error("remove needs at least one --key KEY");
        return MONGOSNAP_EXIT_USAGE;
    }
    if (worker_open_store(a, &storage) < 0)
        return MONGOSNAP_EXIT_USAGE;
    MsError e = MS_ERROR_INIT;
    int r = 0;
    /* A cluster manifest's key stands for the whole cluster snapshot: it, then its parts. */
    char **keys = NULL;
    size_t n_keys = 0;
    for (size_t i = 0; r == 0 && i < a->n_keys; i++) {
        char **more = NULL;
        size_t n_more = 0;
        if (worker_has_suffix(a->keys[i], MS_CLUSTER_MANIFEST_SUFFIX))
            r = ms_cluster_snapshot_keys(storage, a->keys[i], &more, &n_more, &e);
        else if ((more = calloc(2, sizeof(char *))) && (more[0] = strdup(a->keys[i])))
            n_more = 1;
        else
            r = ms_error_oom(&e);
        char **grown = r == 0 ? realloc(keys, (n_keys + n_more + 1) * sizeof(char *)) : NULL;
        if (r == 0 && !grown)
            r = ms_error_oom(&e);
        for (size_t k = 0; k < n_more; k++) {
            bool seen = false; /* a cluster snapshot's archive and manifest keys are one */
            for (size_t j = 0; grown && j < n_keys && !seen; j++)
                seen = strcmp(grown[j], more[k]) == 0;
            if (grown && !seen)
                grown[n_keys++] = more[k];
            else
                free(more[k]);
        }
        if (grown)
            keys = grown;
        free(more);
    }
    size_t processed = 0, removed = 0, not_found = 0;
    /* Removing what is not there is not an error (a retry after a crash finds half of it gone),
     * but it is not reported as removed either: each key is looked at first. */
    for (; r == 0 && processed < n_keys && !worker_cancel_requested; processed++) {
        const char *key = keys[processed];
        MsStorageObject o = {0};
        MsError se = MS_ERROR_INIT;
        int k = ms_storage_stat(storage, key, &o, &se);
        free(o.key);
        if (k == -ENOENT || k == -EISDIR) {
            not_found++;
            log_info("%s: no object '%s' (nothing to remove)", ms_storage_describe(storage), key);
            continue;
        }
        if (k < 0) {
            r = k;
            e = se;
            break;
        }
        r = ms_storage_remove(storage, key, &e);
        if (r < 0)
            break;
        removed++;
    }
    if (r == 0 && processed < n_keys) {
        r = -ECANCELED;
        ms_error_set(&e, ECANCELED, "stopped by a signal after %zu of %zu objects", processed,
                     n_keys);
    }
    for (size_t i = 0; i < n_keys; i++)
        free(keys[i]);
    free(keys);
    bson_t fields = BSON_INITIALIZER;
    BSON_APPEND_INT64(&fields, "processed", (int64_t) processed);
    BSON_APPEND_INT64(&fields, "removed", (int64_t) removed);
    BSON_APPEND_INT64(&fields, "not_found", (int64_t) not_found);
    /* A chunked policy's snapshots leave their chunks behind: collect them now. The removal
     * stands whatever the collection does; a failed one is said (and tried at the next). */
    if (r == 0 && a->gc) {
        MsError ge = MS_ERROR_INIT;
        if (worker_collect(storage, a, &fields, &ge) < 0) {
            log_warning("%s", ge.message);
            BSON_APPEND_UTF8(&fields, "gc_error", ge.message);
        }
    }
    if (r == 0 && !a->json)
        printf("removed %zu object(s)%s", removed, not_found ? "" : "\n");
    if (r == 0 && !a->json && not_found)
        printf("; %zu not found\n", not_found);
    else if (r < 0)
        log_error("remove failed: %s", e.message);
    worker_report_result(p, a, r, &e, &fields);
    bson_destroy(&fields);
    return worker_exit_code_for(r);
}

/* libmongoc reads every cursor batch (up to 16 MiB) into a buffer of its own. Above glibc's
 * mmap threshold each is a fresh mapping whose pages fault in one at a time, and the dynamic
 * threshold never rises past a size it was just asked for: perf showed a snapshot spending a
 * fifth of its non-compression CPU in page faults under memmove. From the heap, with trimming
 * held back, the same pages serve batch after batch. The working set is unchanged (a few
 * batches per thread); RSS keeps the freed pages for reuse instead of returning them. */
static void keep_large_buffers(void) {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

int main(int argc, char **argv) {
    Args a = {
        .compression = MS_COMPRESSION_ZSTD, .threads = DEFAULT_ZSTD_THREADS, .progress_fd = -1};
    const char *env_uri = getenv("MONGOSNAP_URI");
    if (env_uri)
        a.uri = strdup(env_uri);
    int r = parse_args(argc, argv, &a);
    int ret = MONGOSNAP_EXIT_USAGE;
    if (r < 0)
        goto out;

    install_signal_handlers();
    keep_large_buffers();
    mongoc_init();
    ms_mongo_init_logging();
    MsProgress progress;
    ms_progress_init(&progress, a.progress_fd);
    progress.ticker_interval_override_ms = a.progress_interval_ms;
    if (strcmp(a.command, "snapshot") == 0)
        ret = run_snapshot(&a, &progress);
    else if (strcmp(a.command, "restore") == 0 && a.has_time)
        ret = worker_run_restore_time(&a, &progress);
    else if (strcmp(a.command, "restore") == 0)
        ret = worker_run_restore(&a, &progress);
    else if (strcmp(a.command, "follow") == 0)
        ret = worker_run_follow(&a, &progress);
    else if (strcmp(a.command, "list-slices") == 0)
        ret = worker_run_list_slices(&a, &progress);
    else if (strcmp(a.command, "verify-chain") == 0)
        ret = worker_run_verify_chain(&a, &progress);
    else if (strcmp(a.command, "verify") == 0)
        ret = run_verify(&a, &progress);
    else if (strcmp(a.command, "remove") == 0)
        ret = run_remove(&a, &progress);
    else if (strcmp(a.command, "scan") == 0)
        ret = run_scan(&a, &progress);
    else if (strcmp(a.command, "gc") == 0)
        ret = worker_run_gc(&a, &progress);
    else if (strcmp(a.command, "export") == 0)
        ret = worker_run_export(&a, &progress);
    else if (strcmp(a.command, "cluster-snapshot") == 0)
        ret = worker_run_cluster_snapshot(&a, &progress);
    else if (strcmp(a.command, "cluster-part") == 0)
        ret = worker_run_cluster_part(&a, &progress);
    else if (strcmp(a.command, "cluster-restore") == 0)
        ret = worker_run_cluster_restore(&a, &progress);
    else if (strcmp(a.command, "cluster-balancer") == 0)
        ret = worker_run_cluster_balancer(&a, &progress);
    else
        log_error("unknown command '%s': use snapshot, restore, verify, remove, scan, follow, "
                  "list-slices, verify-chain, gc, export, cluster-snapshot, cluster-restore or "
                  "cluster-balancer",
                  a.command);
    ms_progress_done(&progress);
    mongoc_cleanup();
out:
    ms_secret_free(a.uri);
    ms_secret_free(a.password);
    ms_encrypt_key_free(a.key);
    /* Free unpaired rename patterns too (clear() only knows the paired count). */
    for (size_t i = a.filter.n_rename; i < a.n_rename_from; i++)
        free(a.filter.rename_from[i]);
    for (size_t i = a.filter.n_rename; i < a.n_rename_to; i++)
        free(a.filter.rename_to[i]);
    ms_ns_filter_clear(&a.filter);
    for (size_t i = 0; i < a.n_keys; i++)
        free(a.keys[i]);
    free(a.keys);
    for (size_t i = 0; i < a.n_remote_parts; i++)
        free(a.remote_parts[i]);
    free(a.remote_parts);
    for (size_t i = 0; i < a.n_part_agents; i++)
        free(a.part_agents[i]);
    free(a.part_agents);
    return ret;
}

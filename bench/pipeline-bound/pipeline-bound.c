/* pipeline-bound: what this machine can do for a snapshot's write pipeline alone, no server.
 *
 *   pipeline-bound FILE [--compression zstd|gzip|none] [--level N] [--threads N] [--encrypt]
 *                       [--repeats N]
 *
 * Reads FILE (an uncompressed mongodump archive: the bytes a snapshot compresses) into memory,
 * then pushes it through mongosnap's own write chain (io/chain.h: count, compress, encrypt with
 * a throwaway key when --encrypt, count, SHA-256) into a sink that discards, in 1 MiB writes
 * as the archive writer hands them over. Prints one JSON line per repetition: bytes, wall
 * seconds, CPU seconds, MiB/s of input. A snapshot can go no faster than this on the same
 * CPUs; bench/tool-bench reports each tool's throughput as a fraction of it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/chain.h"

typedef struct {
    MsSink base;
    uint64_t bytes;
} NullSink;

static int null_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    (void) buf;
    (void) e;
    ((NullSink *) s)->bytes += len;
    return 0;
}

static int null_finish(MsSink *s, MsError *e) {
    (void) s;
    (void) e;
    return 0;
}

static void null_free(MsSink *s) {
    free(s);
}

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
           (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    MsSinkChainSpec spec = {.compression = MS_COMPRESSION_ZSTD};
    bool encrypt = false;
    int repeats = 3;
    static const struct option opts[] = {
        {"compression", required_argument, NULL, 'c'}, {"level", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},     {"encrypt", no_argument, NULL, 'e'},
        {"repeats", required_argument, NULL, 'r'},     {0},
    };
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'c':
            if (strcmp(optarg, "zstd") == 0)
                spec.compression = MS_COMPRESSION_ZSTD;
            else if (strcmp(optarg, "gzip") == 0)
                spec.compression = MS_COMPRESSION_GZIP;
            else if (strcmp(optarg, "none") == 0)
                spec.compression = MS_COMPRESSION_NONE;
            else {
                fprintf(stderr, "pipeline-bound: --compression %s: expected zstd, gzip or none\n", optarg);
                return 2;
            }
            break;
        case 'l':
            spec.level = atoi(optarg);
            break;
        case 't':
            spec.threads = atoi(optarg);
            break;
        case 'e':
            encrypt = true;
            break;
        case 'r':
            repeats = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: pipeline-bound FILE [--compression zstd|gzip|none] [--level N] "
                        "[--threads N] [--encrypt] [--repeats N]\n");
        return 2;
    }
    const char *path = argv[optind];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "pipeline-bound: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t size = (size_t) st.st_size;
    uint8_t *data = malloc(size ? size : 1);
    size_t got = 0;
    while (data && got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    close(fd);
    if (!data || got != size) {
        fprintf(stderr, "pipeline-bound: cannot read %s\n", path);
        return 1;
    }
    MsEncryptKey *key = NULL;
    MsError e = MS_ERROR_INIT;
    if (encrypt) {
        uint8_t raw[MS_ENCRYPT_KEY_BYTES];
        for (size_t k = 0; k < sizeof(raw); k++)
            raw[k] = (uint8_t) (k * 7 + 1); /* a throwaway key: nothing is kept */
        if (ms_encrypt_key_from_bytes(raw, sizeof(raw), "benchmark key", &key, &e) < 0) {
            fprintf(stderr, "pipeline-bound: %s\n", e.message);
            return 1;
        }
        spec.key = key;
    }
    for (int rep = 0; rep < repeats; rep++) {
        NullSink *ns = calloc(1, sizeof(*ns));
        if (!ns)
            return 1;
        ns->base = (MsSink){null_write, null_finish, null_free};
        MsChainResults res = {0};
        MsSink *head = NULL;
        double w0 = now(CLOCK_MONOTONIC), c0 = cpu_seconds();
        int r = ms_sink_chain_new(&ns->base, &spec, &res, &head, &e);
        for (size_t at = 0; r == 0 && at < size; at += 1u << 20)
            r = head->write(head, data + at, size - at < (1u << 20) ? size - at : (1u << 20), &e);
        if (r == 0)
            r = head->finish(head, &e);
        double wall = now(CLOCK_MONOTONIC) - w0, cpu = cpu_seconds() - c0;
        if (head)
            head->free(head);
        if (r < 0) {
            fprintf(stderr, "pipeline-bound: %s\n", e.message);
            return 1;
        }
        printf("{\"bytes\": %zu, \"stored_bytes\": %llu, \"wall_s\": %.4f, \"cpu_s\": %.3f, "
               "\"mib_per_s\": %.1f}\n",
               size, (unsigned long long) res.stored_bytes, wall, cpu,
               (double) size / (1024.0 * 1024.0) / wall);
        fflush(stdout);
    }
    ms_encrypt_key_free(key);
    free(data);
    return 0;
}

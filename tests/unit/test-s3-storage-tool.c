/* test-s3-storage-tool: the storage interface on the command line, for S3 tests. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/storage-s3.h"
#include "storage/storage.h"

/* Usage:
 *   test-s3-storage-tool url LOCATION KEY SECONDS   print a presigned download URL
 *   test-s3-storage-tool clean-stale LOCATION PREFIX print how many stale uploads were aborted
 *   test-s3-storage-tool list LOCATION PREFIX        print "size key" lines
 *   test-s3-storage-tool stat LOCATION KEY           print "size mtime_usec"
 *   test-s3-storage-tool put LOCATION KEY < data     store stdin as KEY
 *   test-s3-storage-tool get LOCATION KEY > data     write KEY to stdout
 *   test-s3-storage-tool head LOCATION KEY N > data  write KEY's first N bytes to stdout, then
 *                                                    free the reader (its fetchers still busy)
 *   test-s3-storage-tool get-paused LOCATION KEY N   like get, but after the first N bytes print
 *                                                    "paused" on stderr and wait for a line on
 *                                                    stdin before reading on
 *   test-s3-storage-tool rm LOCATION KEY
 * Exit 0 on success, 1 with the error message on stderr otherwise.
 *
 * MS_TEST_S3_READ_CHUNK=BYTES (tests only) sets the reader's chunk size instead of
 * MS_S3_READ_CHUNK, so that objects of many chunks stay small in tests. */
#define COPY_BUFFER (1 << 20)

static int fail(const MsError *e) {
    fprintf(stderr, "%s\n", e->message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s url|clean-stale|list|stat|put|get|rm LOCATION ARG [SECONDS]\n",
                argv[0]);
        return 2;
    }
    const char *cmd = argv[1], *arg = argv[3];
    const char *chunk = getenv("MS_TEST_S3_READ_CHUNK");
    if (chunk && *chunk)
        ms_s3_set_read_chunk_for_tests((size_t) strtoull(chunk, NULL, 10));
    MsError e = MS_ERROR_INIT;
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    if (ms_storage_open(argv[2], &s, &e) < 0)
        return fail(&e);

    if (strcmp(cmd, "url") == 0 && argc == 5) {
        char *url = NULL;
        if (ms_storage_download_url(s, arg, strtoull(argv[4], NULL, 10) * 1000000, &url, &e) < 0)
            return fail(&e);
        printf("%s\n", url);
        free(url);
        return 0;
    }
    if (strcmp(cmd, "clean-stale") == 0) {
        unsigned removed = 0;
        if (s->ops->clean_stale(s, arg, NULL, &removed, &e) < 0)
            return fail(&e);
        printf("%u\n", removed);
        return 0;
    }
    if (strcmp(cmd, "list") == 0) {
        MsStorageObject *objs = NULL;
        size_t n = 0;
        if (ms_storage_list(s, arg, &objs, &n, &e) < 0)
            return fail(&e);
        for (size_t i = 0; i < n; i++)
            printf("%" PRIu64 " %s\n", objs[i].size, objs[i].key);
        ms_storage_objects_free(objs, n);
        return 0;
    }
    if (strcmp(cmd, "stat") == 0) {
        MsStorageObject o;
        if (ms_storage_stat(s, arg, &o, &e) < 0)
            return fail(&e);
        printf("%" PRIu64 " %" PRId64 "\n", o.size, o.mtime_usec);
        free(o.key);
        return 0;
    }
    if (strcmp(cmd, "rm") == 0)
        return ms_storage_remove(s, arg, &e) < 0 ? fail(&e) : 0;

    static char buf[COPY_BUFFER];
    if (strcmp(cmd, "put") == 0) {
        _cleanup_(ms_sink_freep) MsSink *sink = NULL;
        if (ms_storage_open_write(s, arg, &sink, &e) < 0)
            return fail(&e);
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            if (ms_sink_write(sink, buf, n, &e) < 0)
                return fail(&e);
        return ms_sink_finish(sink, &e) < 0 ? fail(&e) : 0;
    }
    bool head = strcmp(cmd, "head") == 0, paused = strcmp(cmd, "get-paused") == 0;
    if (strcmp(cmd, "get") == 0 || ((head || paused) && argc == 5)) {
        /* head, get-paused: stop (or pause) after this many bytes. */
        uint64_t stop_at = head || paused ? strtoull(argv[4], NULL, 10) : UINT64_MAX, done = 0;
        _cleanup_(ms_source_freep) MsSource *src = NULL;
        if (ms_storage_open_read(s, arg, &src, &e) < 0)
            return fail(&e);
        for (;;) {
            size_t want = sizeof(buf);
            if (done < stop_at && stop_at - done < want)
                want = (size_t) (stop_at - done);
            if (done == stop_at) {
                if (head)
                    return 0; /* the reader is freed here, its fetchers possibly busy */
                if (paused) {
                    fflush(stdout);
                    fprintf(stderr, "paused\n");
                    fflush(stderr);
                    int c;
                    while ((c = getchar()) != EOF && c != '\n')
                        ;
                    paused = false;
                }
                want = sizeof(buf);
            }
            ssize_t n = ms_source_read(src, buf, want, &e);
            if (n < 0)
                return fail(&e);
            if (n == 0)
                return 0;
            if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n)
                return 1;
            done += (uint64_t) n;
        }
    }
    fprintf(stderr, "unknown command %s\n", cmd);
    return 2;
}

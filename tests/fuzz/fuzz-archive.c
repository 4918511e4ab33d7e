/* libFuzzer target: the mongodump archive reader (archive/archive-reader.c) over bytes in
 * memory. Every item is read to the end or to the first error; afterwards the reader must
 * keep repeating that error, and its tallies must be readable.
 *
 * Input: one byte choosing how the source hands out bytes (0: everything a read asks for,
 * else at most that many bytes per read), then the archive. */
#include "fuzz-common.h"

#include "archive/archive.h"

/* Enough for any archive the fuzzer makes within -max_len, small enough never to hang. */
#define MAX_EVENTS 100000

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzInput in = {data, size};
    size_t chunk = fuzz_u8(&in);

    MsSource *src = fuzz_chunky_source_new(in.p, in.n, chunk);
    MsArchiveReader *r = ms_archive_reader_new(src);
    FUZZ_CHECK(r, "ms_archive_reader_new failed");

    MsError e = MS_ERROR_INIT;
    const MsArchiveHeader *header = NULL;
    const MsArchiveCollection *colls = NULL;
    size_t n_colls = 0;
    int ret = ms_archive_reader_read_prelude(r, &header, &colls, &n_colls, &e);
    if (ret == 0) {
        /* Touch every string the prelude hands out: they must be valid C strings. */
        size_t total = strlen(header->version ? header->version : "") +
                       strlen(header->server_version ? header->server_version : "") +
                       strlen(header->tool_version ? header->tool_version : "");
        for (size_t i = 0; i < n_colls; i++)
            total += strlen(colls[i].db) + strlen(colls[i].collection) +
                     strlen(colls[i].metadata_json ? colls[i].metadata_json : "") +
                     strlen(colls[i].type ? colls[i].type : "");
        (void) total;

        uint64_t last_offset = 0;
        for (unsigned i = 0; i < MAX_EVENTS; i++) {
            MsArchiveEvent ev;
            ret = ms_archive_reader_next(r, &ev, &e);
            if (ret < 0)
                break;
            FUZZ_CHECK(ev.offset >= last_offset, "event offsets went backwards: %llu after %llu",
                       (unsigned long long) ev.offset, (unsigned long long) last_offset);
            last_offset = ev.offset;
            if (ev.kind == MS_ARCHIVE_EVENT_END)
                break;
            FUZZ_CHECK(ev.db && ev.collection, "event without a namespace");
            (void) strlen(ev.db);
            (void) strlen(ev.collection);
            if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT) {
                /* The reader promises a valid BSON document. */
                bson_t doc;
                FUZZ_CHECK(ev.len >= 5 && bson_init_static(&doc, ev.data, ev.len),
                           "document event that is not BSON (%zu bytes)", ev.len);
            }
        }
        if (ret == 0) {
            const MsArchiveNamespaceStats *stats;
            size_t n = ms_archive_reader_namespace_stats(r, &stats);
            for (size_t i = 0; i < n; i++)
                (void) (strlen(stats[i].db) + strlen(stats[i].collection));
            FUZZ_CHECK(ms_archive_reader_offset(r) <= in.n,
                       "reader offset %llu beyond the %zu input bytes",
                       (unsigned long long) ms_archive_reader_offset(r), in.n);
        }
    }
    fuzz_say("archive: %s\n", ret < 0 ? e.message : "read to the end");
    if (ret < 0) {
        FUZZ_CHECK(ms_error_is_set(&e) && e.message[0], "failure %d without a message", ret);
        /* A failed reader repeats its failure. */
        MsError again = MS_ERROR_INIT;
        MsArchiveEvent ev;
        FUZZ_CHECK(ms_archive_reader_next(r, &ev, &again) < 0, "reader went on after failing");
    }
    ms_archive_reader_free(r);
    ms_source_free(src);
    return 0;
}

/* libFuzzer target: a whole stored snapshot as verify (and restore) reads it: the manifest and
 * the (compressed) archive from a local store, through engine/snapshot-source.c and
 * engine/verify.c: manifest parsing and checks, the object's size and SHA-256, zstd/gzip/none
 * detection and decompression, the archive reader, and the per-namespace counts and CRCs.
 *
 * Input: [flags:u8] [manifest_len:u32le] manifest archive
 *   flags bit 0: leave the manifest's archive "sha256" and "size" as they are (by default the
 *                target writes the archive part's real ones in, so that mutated archives still
 *                get past the stored-object check and reach the namespace checks);
 *   flags bit 1: leave the manifest's self-checksum as it is (by default it is recomputed, as
 *                the fuzzer cannot forge SHA-256);
 *   flags bit 2: open the pair as files (ms_snapshot_source_open_file, mongosnap-worker verify
 *                --archive X --manifest Y) instead of from the store.
 *
 * The store is a directory on tmpfs ($MONGOSNAP_FUZZ_TMPDIR, else /dev/shm when there is one)
 * written with plain write(): the local driver's fsyncs are on its write path, which this
 * target does not use. */
#include "fuzz-common.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include "engine/progress.h"
#include "engine/verify.h"
#include "storage/storage.h"

#define FLAG_KEEP_ARCHIVE_DIGEST (1u << 0)
#define FLAG_KEEP_MANIFEST_CHECKSUM (1u << 1)
#define FLAG_OPEN_FILES (1u << 2)

#define SNAPSHOT_KEY "snap"
#define MANIFEST_NAME "snap.manifest.json"
#define ARCHIVE_NAME "snap.archive" /* the key the seed manifests name (make-corpus.py) */

static char store_dir[256];
static char manifest_path[300];
static char archive_path[300];
static MsStorage *storage;

static void remove_store(void) {
    unlink(manifest_path);
    unlink(archive_path);
    rmdir(store_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    /* scripts/fuzz points MONGOSNAP_FUZZ_TMPDIR into its own temp dir, which it removes:
     * libFuzzer leaves by _Exit() on time-outs and crashes, so atexit() cannot be relied on. */
    const char *base = getenv("MONGOSNAP_FUZZ_TMPDIR");
    if (!base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(store_dir, sizeof(store_dir), "%s/mongosnap-fuzz-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(store_dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(manifest_path, sizeof(manifest_path), "%s/%s", store_dir, MANIFEST_NAME);
    snprintf(archive_path, sizeof(archive_path), "%s/%s", store_dir, ARCHIVE_NAME);
    atexit(remove_store);
    MsError e = MS_ERROR_INIT;
    if (ms_storage_local_new(store_dir, &storage, &e) < 0) {
        fprintf(stderr, "cannot open the store %s: %s\n", store_dir, e.message);
        abort();
    }
    return 0;
}

static void write_file(const char *path, const void *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            perror(path);
            abort();
        }
        p += n;
        len -= (size_t) n;
    }
    close(fd);
}

/* A growable copy of the manifest text that the target edits in place. */
typedef struct Text {
    char *s;
    size_t len;
} Text;

static char *text_find(const Text *t, const char *needle) {
    return t->len ? memmem(t->s, t->len, needle, strlen(needle)) : NULL;
}

/* Replace t->s[off, off + old_len) with repl. */
static void text_splice(Text *t, size_t off, size_t old_len, const char *repl, size_t repl_len) {
    char *n = malloc(t->len - old_len + repl_len + 1);
    if (!n)
        abort();
    memcpy(n, t->s, off);
    memcpy(n + off, repl, repl_len);
    memcpy(n + off + repl_len, t->s + off + old_len, t->len - off - old_len);
    t->len = t->len - old_len + repl_len;
    n[t->len] = '\0';
    free(t->s);
    t->s = n;
}

static void patch_archive_digest(Text *t, const uint8_t *archive, size_t archive_len) {
    static const char sha_marker[] = "\"sha256\" : \"";
    char *at = text_find(t, sha_marker);
    if (at) {
        size_t off = (size_t) (at - t->s) + strlen(sha_marker);
        if (off + MS_SHA256_HEX_LEN <= t->len) {
            char hex[MS_SHA256_HEX_LEN + 1];
            ms_sha256_hex(archive, archive_len, hex);
            memcpy(t->s + off, hex, MS_SHA256_HEX_LEN);
        }
    }
    static const char size_marker[] = "\"size\" : ";
    at = text_find(t, size_marker);
    if (at) {
        size_t off = (size_t) (at - t->s) + strlen(size_marker), end = off;
        while (end < t->len && t->s[end] >= '0' && t->s[end] <= '9')
            end++;
        char num[32];
        int n = snprintf(num, sizeof(num), "%zu", archive_len);
        text_splice(t, off, end - off, num, (size_t) n);
    }
}

/* What ms_manifest_serialize() does: the SHA-256 of the text (without trailing newlines) with
 * zeros in place of the digest, written into the last "manifest_sha256" field. */
static void reseal_manifest(Text *t) {
    static const char marker[] = "\"manifest_sha256\" : \"";
    char *at = NULL;
    for (char *p = t->s; p && (p = memmem(p, t->len - (size_t) (p - t->s), marker, strlen(marker)));
         p++)
        at = p;
    size_t body = t->len;
    while (body > 0 && (t->s[body - 1] == '\n' || t->s[body - 1] == '\r'))
        body--;
    if (!at || (size_t) (at - t->s) + strlen(marker) + MS_SHA256_HEX_LEN > body)
        return;
    size_t off = (size_t) (at - t->s) + strlen(marker);
    memset(t->s + off, '0', MS_SHA256_HEX_LEN);
    char hex[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(t->s, body, hex);
    memcpy(t->s + off, hex, MS_SHA256_HEX_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzInput in = {data, size};
    unsigned flags = fuzz_u8(&in);
    uint32_t manifest_len = fuzz_u32le(&in);
    FuzzInput manifest = fuzz_take(&in, manifest_len);
    FuzzInput archive = in;

    Text t = {fuzz_strdup(manifest), manifest.n};
    if (!(flags & FLAG_KEEP_ARCHIVE_DIGEST))
        patch_archive_digest(&t, archive.p, archive.n);
    if (!(flags & FLAG_KEEP_MANIFEST_CHECKSUM))
        reseal_manifest(&t);
    /* Fixed finding (regressions/fuzz-snapshot-source/empty-manifest-file-memmem-null): an
     * empty manifest file reached ms_manifest_parse(NULL, 0) and memmem(NULL, ...). */
    write_file(manifest_path, t.s, t.len);
    write_file(archive_path, archive.p, archive.n);
    free(t.s);

    MsProgress progress;
    ms_progress_init(&progress, -1);
    MsVerifyOptions o = {.progress = &progress};
    if (flags & FLAG_OPEN_FILES) {
        o.archive_path = archive_path;
        o.manifest_path = manifest_path;
    } else {
        o.storage = storage;
        o.snapshot_key = SNAPSHOT_KEY;
    }
    MsVerifyResult res = {0};
    MsError e = MS_ERROR_INIT;
    int r = ms_verify_run(&o, &res, &e);
    fuzz_say("verify: %s\n", r < 0 ? e.message : "sound");
    if (r < 0)
        FUZZ_CHECK(ms_error_is_set(&e) && e.message[0], "verify failed (%d) without a message", r);
    else
        FUZZ_CHECK(res.checked_against_manifest && res.stored_bytes == archive.n,
                   "verify passed %llu stored bytes of %zu", (unsigned long long) res.stored_bytes,
                   archive.n);
    ms_progress_done(&progress);
    return 0;
}

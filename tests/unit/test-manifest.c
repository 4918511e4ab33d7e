/* Tests for the snapshot manifest: serialize/parse round trips, the self-checksum against every
 * single-byte change and truncation, foreign JSON, and the archive -> manifest key mapping. */
#include <errno.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/macro.h"
#include "engine/manifest.h"
#include "io/stream.h"
#include "mongosnap/mongosnap.h"
#include "test.h"

#define CHECKSUM_MARKER "\"manifest_sha256\" : \""
#define MAX_REPORTED_BAD_POSITIONS 10

static const char archive_digest[] =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

/* Names chosen to stress the JSON encoding and the checksum marker search. */
static const MsManifestNamespace sample_namespaces[] = {
    {"shop", "orders", "collection", 1000000, 123456789, UINT64_C(0x0123456789abcdef), 3},
    {"donn\u00e9es", "caf\u00e9 \u2615 \U0001F40D \u65e5\u672c", "view", 0, 0, 0, 0},
    {"q", "say \"hi\" and \"bye\"", "collection", 7, 70, UINT64_MAX, 1},
    {"bs", "back\\slash\\\\ and trailing\\", "timeseries", 5, 50, 1, 2},
    {"admin", "manifest_sha256", "collection", 11, 110, UINT64_C(0x8000000000000000), 1},
    /* Would forge the checksum marker if a name were written unescaped. */
    {"evil", "\"manifest_sha256\" : \"", "collection", 1, 10, 42, 1},
    {"ctl", "tab\there\nnewline\x01/ctl", "collection", 2, 20, 2, 1},
};

static void fill_sample(MsManifest *m, bool pit) {
    memset(m, 0, sizeof(*m));
    m->snapshot = xstrdup("nightly-2026-11-22T030405Z");
    m->tool_version = xstrdup("0.1.0");
    m->started_at = xstrdup("2026-11-22T03:04:05Z");
    m->finished_at = xstrdup("2026-11-22T03:14:05Z");
    m->elapsed_usec = UINT64_C(600000123);
    m->source_uri = xstrdup("mongodb://alice@db1:27017,db2/admin?replicaSet=rs0");
    m->server_version = xstrdup("7.0.14");
    m->node = xstrdup("backup-host.example.net");
    m->archive_key = xstrdup("prod/daily/nightly-2026-11-22T030405Z.archive.zst");
    m->compression = xstrdup("zstd");
    m->archive_size = UINT64_C(987654321012);
    memcpy(m->archive_sha256, archive_digest, sizeof(m->archive_sha256));
    m->uncompressed_size = UINT64_C(4398046511104);
    m->point_in_time = pit;
    if (pit) {
        m->oplog_start = (MsOplogPosition){1795316645, 7};
        m->oplog_end = (MsOplogPosition){1795317245, UINT32_MAX};
        m->oplog_entries = 31337;
    } else
        m->point_in_time_reason =
            xstrdup("standalone server: no oplog (\"local.oplog.rs\" missing) \xe2\x80\x94 sorry");
    for (size_t i = 0; i < ELEMENTSOF(sample_namespaces); i++) {
        if (ms_manifest_add_namespace(m, &sample_namespaces[i]) < 0)
            abort();
        m->total_documents += sample_namespaces[i].documents;
        m->total_bytes += sample_namespaces[i].bytes;
    }
}

static bool streq_null(const char *a, const char *b) {
    return a && b && strcmp(a, b) == 0;
}

/* Compare two manifests field by field; prints the first difference. */
static bool manifests_equal(const MsManifest *a, const MsManifest *b) {
#define CMP_STR(f)                                                                                 \
    if (!streq_null(a->f, b->f)) {                                                                 \
        fprintf(stderr, "# field %s differs: '%s' vs '%s'\n", #f, a->f ? a->f : "(null)",          \
                b->f ? b->f : "(null)");                                                           \
        return false;                                                                              \
    }
#define CMP_NUM(f)                                                                                 \
    if (a->f != b->f) {                                                                            \
        fprintf(stderr, "# field %s differs: %llu vs %llu\n", #f, (unsigned long long) a->f,       \
                (unsigned long long) b->f);                                                        \
        return false;                                                                              \
    }
    CMP_STR(snapshot);
    CMP_STR(tool_version);
    CMP_STR(started_at);
    CMP_STR(finished_at);
    CMP_NUM(elapsed_usec);
    CMP_STR(source_uri);
    CMP_STR(server_version);
    CMP_STR(node);
    CMP_STR(archive_key);
    CMP_STR(compression);
    CMP_NUM(archive_size);
    CMP_STR(archive_sha256);
    CMP_NUM(uncompressed_size);
    CMP_NUM(point_in_time);
    if (!a->point_in_time) {
        CMP_STR(point_in_time_reason);
    }
    CMP_NUM(oplog_start.t);
    CMP_NUM(oplog_start.i);
    CMP_NUM(oplog_end.t);
    CMP_NUM(oplog_end.i);
    CMP_NUM(oplog_entries);
    CMP_NUM(n_namespaces);
    CMP_NUM(total_documents);
    CMP_NUM(total_bytes);
    for (size_t i = 0; i < a->n_namespaces; i++) {
        CMP_STR(namespaces[i].db);
        CMP_STR(namespaces[i].collection);
        CMP_STR(namespaces[i].type);
        CMP_NUM(namespaces[i].documents);
        CMP_NUM(namespaces[i].bytes);
        CMP_NUM(namespaces[i].crc64);
        CMP_NUM(namespaces[i].indexes);
    }
    return true;
#undef CMP_STR
#undef CMP_NUM
}

static size_t count_occurrences(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void roundtrip(bool pit) {
    MsManifest m, back = {0};
    MsError e = MS_ERROR_INIT;
    fill_sample(&m, pit);
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    if (r < 0)
        fprintf(stderr, "# serialize: %s\n", e.message);
    ASSERT_OK(r);
    ASSERT_EQ_INT(len, strlen(json));
    ASSERT(len > 2 && json[len - 1] == '\n' && json[len - 2] == '}');
    /* The marker appears exactly once, however the names are spelled. */
    ASSERT_EQ_INT(count_occurrences(json, CHECKSUM_MARKER), 1);
    r = ms_manifest_parse(json, len, &back, &e);
    if (r < 0)
        fprintf(stderr, "# parse: %s\n", e.message);
    ASSERT_OK(r);
    bool same = manifests_equal(&m, &back);
    const MsManifestNamespace *f = ms_manifest_find(&back, "admin", "manifest_sha256");
    const MsManifestNamespace *evil = ms_manifest_find(&back, "evil", "\"manifest_sha256\" : \"");
    const MsManifestNamespace *none = ms_manifest_find(&back, "admin", "nope");
    ms_manifest_clear(&m);
    ms_manifest_clear(&back);
    ASSERT(same);
    ASSERT(f != NULL);
    ASSERT(evil != NULL);
    ASSERT(none == NULL);
}

static void roundtrip_point_in_time(void) {
    roundtrip(true);
}

static void roundtrip_not_point_in_time(void) {
    roundtrip(false);
}

/* The documented checksum: SHA-256 of the text (without the trailing newline) with the digest
 * replaced by 64 zeros. Recomputed independently here. */
static void checksum_is_sha256_of_placeholder_text(void) {
    MsManifest m;
    MsError e = MS_ERROR_INIT;
    fill_sample(&m, true);
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    ms_manifest_clear(&m);
    ASSERT_OK(r);
    char *at = strstr(json, CHECKSUM_MARKER);
    ASSERT(at != NULL);
    char *digest = at + strlen(CHECKSUM_MARKER);
    ASSERT(digest + MS_SHA256_HEX_LEN < json + len);
    ASSERT(digest[MS_SHA256_HEX_LEN] == '"');
    char stored[MS_SHA256_HEX_LEN + 1];
    memcpy(stored, digest, MS_SHA256_HEX_LEN);
    stored[MS_SHA256_HEX_LEN] = '\0';
    ASSERT_EQ_INT(strspn(stored, "0123456789abcdef"), MS_SHA256_HEX_LEN);
    memset(digest, '0', MS_SHA256_HEX_LEN);
    char computed[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(json, len - 1, computed);
    ASSERT_STREQ(computed, stored);
}

/* Serialization is deterministic, so a parse that "succeeds" can be checked for identical content
 * by serializing again. */
static bool parse_reserializes_to(const char *text, size_t len, const char *orig, MsError *e) {
    MsManifest back = {0};
    if (ms_manifest_parse(text, len, &back, e) < 0)
        return false;
    char *again = NULL;
    size_t again_len = 0;
    int r = ms_manifest_serialize(&back, &again, &again_len, e);
    ms_manifest_clear(&back);
    bool same = r == 0 && strcmp(again, orig) == 0;
    free(again);
    if (!same)
        fprintf(stderr, "# parse accepted DIFFERENT content\n");
    return true;
}

static bool is_corruption_error(int r, const MsError *e) {
    return r == -EBADMSG && e->code == EBADMSG &&
           (strstr(e->message, "corrupted") || strstr(e->message, "manifest_sha256") ||
            strstr(e->message, "not valid JSON"));
}

/* Flip every bit of every byte: each change must be reported as corruption. */
static void every_bit_flip_is_rejected(void) {
    MsManifest m;
    MsError e = MS_ERROR_INIT;
    fill_sample(&m, true);
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    ms_manifest_clear(&m);
    ASSERT_OK(r);
    _cleanup_free_ char *orig = strdup(json);
    ASSERT(orig != NULL);
    size_t accepted = 0, wrong_error = 0, tried = 0;
    for (size_t pos = 0; pos < len; pos++)
        for (unsigned bit = 0; bit < 8; bit++) {
            json[pos] = (char) (orig[pos] ^ (1u << bit));
            MsError pe = MS_ERROR_INIT;
            MsManifest back = {0};
            int pr = ms_manifest_parse(json, len, &back, &pe);
            tried++;
            if (pr == 0) {
                if (accepted++ < MAX_REPORTED_BAD_POSITIONS) {
                    fprintf(stderr, "# flip of bit %u at byte %zu ('%c') was accepted\n", bit, pos,
                            orig[pos]);
                    MsError pe2 = MS_ERROR_INIT;
                    parse_reserializes_to(json, len, orig, &pe2);
                }
                ms_manifest_clear(&back);
            } else if (!is_corruption_error(pr, &pe)) {
                if (wrong_error++ < MAX_REPORTED_BAD_POSITIONS)
                    fprintf(stderr, "# flip of bit %u at byte %zu: unexpected error %d '%s'\n", bit,
                            pos, pr, pe.message);
            }
            json[pos] = orig[pos];
        }
    ASSERT_EQ_INT(tried, len * 8);
    ASSERT_EQ_INT(accepted, 0);
    ASSERT_EQ_INT(wrong_error, 0);
    /* Unchanged text still parses. */
    MsManifest back = {0};
    ASSERT_OK(ms_manifest_parse(json, len, &back, &e));
    ms_manifest_clear(&back);
}

/* Replace every byte with a handful of JSON-significant values (not only bit flips). */
static void every_byte_replacement_is_rejected(void) {
    static const char replacements[] = {' ', '0', 'a', 'f', '"', '\\', ',', '}', '\0', '\r'};
    MsManifest m;
    MsError e = MS_ERROR_INIT;
    fill_sample(&m, false);
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    ms_manifest_clear(&m);
    ASSERT_OK(r);
    _cleanup_free_ char *orig = strdup(json);
    ASSERT(orig != NULL);
    size_t accepted = 0;
    for (size_t pos = 0; pos < len; pos++)
        for (size_t k = 0; k < ELEMENTSOF(replacements); k++) {
            if (orig[pos] == replacements[k])
                continue;
            json[pos] = replacements[k];
            MsManifest back = {0};
            MsError pe = MS_ERROR_INIT;
            if (ms_manifest_parse(json, len, &back, &pe) == 0) {
                ms_manifest_clear(&back);
                /* The one harmless change: the trailing "\n" written as "\r" (same content). */
                bool harmless = pos == len - 1 && replacements[k] == '\r';
                if (!harmless && accepted++ < MAX_REPORTED_BAD_POSITIONS)
                    fprintf(stderr, "# byte %zu ('%c' -> 0x%02x) was accepted\n", pos, orig[pos],
                            (unsigned char) replacements[k]);
            }
            json[pos] = orig[pos];
        }
    ASSERT_EQ_INT(accepted, 0);
}

/* Every prefix fails, except the text without its trailing newline (identical content). */
static void truncation_is_rejected(void) {
    MsManifest m;
    MsError e = MS_ERROR_INIT;
    fill_sample(&m, true);
    _cleanup_free_ char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    ms_manifest_clear(&m);
    ASSERT_OK(r);
    size_t accepted = 0;
    for (size_t cut = 0; cut + 1 < len; cut++) {
        /* A separate, exactly sized buffer so ASan sees any read past the cut. */
        char *prefix = malloc(cut ? cut : 1);
        ASSERT(prefix != NULL);
        memcpy(prefix, json, cut);
        MsManifest back = {0};
        MsError pe = MS_ERROR_INIT;
        int pr = ms_manifest_parse(prefix, cut, &back, &pe);
        free(prefix);
        if (pr == 0) {
            ms_manifest_clear(&back);
            if (accepted++ < MAX_REPORTED_BAD_POSITIONS)
                fprintf(stderr, "# truncation to %zu of %zu bytes was accepted\n", cut, len);
        } else if (pr != -EBADMSG || pe.code != EBADMSG) {
            fprintf(stderr, "# truncation to %zu: error %d '%s'\n", cut, pr, pe.message);
            accepted++;
        }
    }
    ASSERT_EQ_INT(accepted, 0);
    MsManifest back = {0};
    ASSERT_OK(ms_manifest_parse(json, len - 1, &back, &e));
    ms_manifest_clear(&back);
}

static void foreign_json_is_rejected(void) {
    static const char *foreign[] = {
        "{\"hello\": \"world\"}",
        "",
        "not json at all",
        "{\"format\": \"mongosnap-manifest\", \"format_version\": 1}",
        /* The field, but not written the way we write it, nor with a digest. */
        "{\"manifest_sha256\": \"abc\"}",
    };
    for (size_t i = 0; i < ELEMENTSOF(foreign); i++) {
        MsManifest back = {0};
        MsError e = MS_ERROR_INIT;
        int r = ms_manifest_parse(foreign[i], strlen(foreign[i]), &back, &e);
        if (r == 0)
            ms_manifest_clear(&back);
        ASSERT_EQ_INT(r, -EBADMSG);
        ASSERT_CONTAINS(e.message, "not a mongosnap manifest");
    }
}

/* Write the correct self-checksum into text (which holds the marker and a 64-char slot). */
static void seal(char *text) {
    char *at = strstr(text, CHECKSUM_MARKER);
    if (!at)
        abort();
    char *digest = at + strlen(CHECKSUM_MARKER);
    memset(digest, '0', MS_SHA256_HEX_LEN);
    char hex[MS_SHA256_HEX_LEN + 1];
    ms_sha256_hex(text, strlen(text), hex);
    memcpy(digest, hex, MS_SHA256_HEX_LEN);
}

#define ZEROS64 "0000000000000000000000000000000000000000000000000000000000000000"

/* A checksum that holds is not enough: the content must be ours. */
static void sealed_foreign_json_is_rejected(void) {
    char other[] = "{ \"format\" : \"something-else\", \"manifest_sha256\" : \"" ZEROS64 "\" }";
    seal(other);
    MsManifest back = {0};
    MsError e = MS_ERROR_INIT;
    ASSERT_EQ_INT(ms_manifest_parse(other, strlen(other), &back, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "not a mongosnap manifest (format field is 'something-else')");

    char noformat[] = "{ \"x\" : 1, \"manifest_sha256\" : \"" ZEROS64 "\" }";
    seal(noformat);
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(ms_manifest_parse(noformat, strlen(noformat), &back, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "format field is 'missing'");

    char notjson[] = "<xml \"manifest_sha256\" : \"" ZEROS64 "\" />";
    seal(notjson);
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(ms_manifest_parse(notjson, strlen(notjson), &back, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "not valid JSON");

    char noarchive[] = "{ \"format\" : \"mongosnap-manifest\", \"format_version\" : 1, "
                       "\"manifest_sha256\" : \"" ZEROS64 "\" }";
    seal(noarchive);
    e = (MsError) MS_ERROR_INIT;
    ASSERT_EQ_INT(ms_manifest_parse(noarchive, strlen(noarchive), &back, &e), -EBADMSG);
    ASSERT_CONTAINS(e.message, "lacks the archive's key, size or checksum");
}

static void add_namespace_defaults_type(void) {
    MsManifest m = {0};
    MsManifestNamespace ns = {.db = "d", .collection = "c", .documents = 3};
    ASSERT_OK(ms_manifest_add_namespace(&m, &ns));
    bool ok = m.n_namespaces == 1 && streq_null(m.namespaces[0].type, "collection") &&
              m.namespaces[0].documents == 3 && m.namespaces[0].db != ns.db &&
              ms_manifest_find(&m, "d", "c") == &m.namespaces[0] && !ms_manifest_find(&m, "c", "d");
    ms_manifest_clear(&m);
    ASSERT(ok);
    ASSERT(m.namespaces == NULL && m.n_namespaces == 0);
}

/* Names must be UTF-8 to be written as JSON: a bad one is an error, not a crash or a bad file. */
static void invalid_utf8_name_fails_cleanly(void) {
    MsManifest m;
    fill_sample(&m, true);
    MsManifestNamespace bad = {.db = "d", .collection = "bad\xff\xfe utf8"};
    ASSERT_OK(ms_manifest_add_namespace(&m, &bad));
    char *json = NULL;
    size_t len = 0;
    MsError e = MS_ERROR_INIT;
    int r = ms_manifest_serialize(&m, &json, &len, &e);
    ms_manifest_clear(&m);
    free(json);
    ASSERT_EQ_INT(r, -EINVAL);
    ASSERT(json == NULL);
    ASSERT_CONTAINS(e.message, "JSON");
}

static void key_for_archive(void) {
    static const struct {
        const char *archive, *manifest;
    } cases[] = {
        {"a/b/n.archive.zst", "a/b/n.manifest.json"},
        {"a/b/n.archive.gz", "a/b/n.manifest.json"},
        {"n.archive", "n.manifest.json"},
        {"nightly-2026-11-22T030405Z.archive.zst", "nightly-2026-11-22T030405Z.manifest.json"},
        {"plain", "plain.manifest.json"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *k = ms_manifest_key_for_archive(cases[i].archive);
        ASSERT_STREQ(k, cases[i].manifest);
    }
}

/* Regression (src/engine/manifest.c, ms_manifest_key_for_archive): the suffix is found with strstr(),
 * i.e. the FIRST ".archive" in the whole key, so a prefix such as "prod.archives/" or
 * "x.archive/" cuts the key in the directory part. */
static void key_for_archive_with_archive_in_prefix(void) {
    _cleanup_free_ char *k1 = ms_manifest_key_for_archive("prod.archives/daily/n.archive.zst");
    _cleanup_free_ char *k2 = ms_manifest_key_for_archive("old.archive/n.archive.gz");
    ASSERT_STREQ(k1, "prod.archives/daily/n.manifest.json");
    ASSERT_STREQ(k2, "old.archive/n.manifest.json");
}

/* Run fn in a child so a sanitizer abort or a crash fails this case only. */
static bool passes_in_child(void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        fn();
        _exit(ms_test_failures ? 1 : 0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return false;
    if (WIFSIGNALED(status))
        fprintf(stderr, "# child killed by signal %d\n", WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        fprintf(stderr, "# child exited with %d\n", WEXITSTATUS(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void parse_digest_made_of_newlines(void) {
    /* The marker followed by 64 bytes that are all '\n': the length check passes, then the
     * trailing newlines are stripped and the placeholder is copied past the shortened copy. */
    char text[sizeof(CHECKSUM_MARKER) - 1 + MS_SHA256_HEX_LEN];
    memcpy(text, CHECKSUM_MARKER, sizeof(CHECKSUM_MARKER) - 1);
    memset(text + sizeof(CHECKSUM_MARKER) - 1, '\n', MS_SHA256_HEX_LEN);
    MsManifest back = {0};
    MsError e = MS_ERROR_INIT;
    int r = ms_manifest_parse(text, sizeof(text), &back, &e);
    if (r == 0)
        ms_manifest_clear(&back);
    ASSERT_EQ_INT(r, -EBADMSG);
}

/* Regression (src/engine/manifest.c, ms_manifest_parse): heap-buffer-overflow when the bytes of the
 * digest slot are trailing newlines (body_len < digest_off + 64, memcpy of the placeholder
 * writes past malloc(body_len + 1)). Run in a child: under ASan it aborts. */
static void parse_digest_of_newlines_overflows(void) {
    ASSERT(passes_in_child(parse_digest_made_of_newlines));
}

MS_TEST_MAIN(TEST_CASE(roundtrip_point_in_time), TEST_CASE(roundtrip_not_point_in_time),
             TEST_CASE(checksum_is_sha256_of_placeholder_text),
             TEST_CASE(every_bit_flip_is_rejected), TEST_CASE(every_byte_replacement_is_rejected),
             TEST_CASE(truncation_is_rejected), TEST_CASE(foreign_json_is_rejected),
             TEST_CASE(sealed_foreign_json_is_rejected), TEST_CASE(add_namespace_defaults_type),
             TEST_CASE(invalid_utf8_name_fails_cleanly), TEST_CASE(key_for_archive),
             TEST_CASE(key_for_archive_with_archive_in_prefix),
             TEST_CASE(parse_digest_of_newlines_overflows))

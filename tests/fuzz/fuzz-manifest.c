/* libFuzzer target: the manifest parser (engine/manifest.c), its self-checksum check included.
 *
 * Input: [flags:u8] manifest-json. Each input is parsed as it is (so the checksum check sees
 * every kind of damage) and, unless flags bit 0 is set, once more with its checksum
 * recomputed the way ms_manifest_serialize() writes it, so the parser behind the check gets
 * fuzzed too (the fuzzer cannot forge SHA-256). Whatever parses must serialise, and the
 * serialised text must parse back to the same manifest: a mismatch aborts (a real finding). */
#include "fuzz-common.h"

#include <bson/bson.h>

#include "engine/manifest.h"

#define FLAG_NO_RESEAL (1u << 0)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    return 0;
}

/* NULL and "" are the same to the serialiser (it writes "" for both). */
static bool str_eq(const char *a, const char *b) {
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool list_eq(char *const *a, size_t na, char *const *b, size_t nb) {
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

/* Field by field, as far as the serialised form carries each field. */
static const char *manifest_diff(const MsManifest *a, const MsManifest *b) {
#define SAME_STR(f)                                                                                \
    if (!str_eq(a->f, b->f))                                                                       \
        return #f;
#define SAME_NUM(f)                                                                                \
    if (a->f != b->f)                                                                              \
        return #f;
    SAME_STR(snapshot);
    SAME_STR(tool_version);
    SAME_STR(started_at);
    SAME_STR(finished_at);
    SAME_NUM(elapsed_usec);
    SAME_STR(source_uri);
    SAME_STR(server_version);
    SAME_STR(node);
    SAME_STR(archive_key);
    SAME_STR(compression);
    SAME_NUM(archive_size);
    if (strcmp(a->archive_sha256, b->archive_sha256) != 0)
        return "archive_sha256";
    SAME_NUM(uncompressed_size);
    SAME_NUM(point_in_time);
    if (a->point_in_time) {
        SAME_NUM(oplog_start.t);
        SAME_NUM(oplog_start.i);
        SAME_NUM(oplog_end.t);
        SAME_NUM(oplog_end.i);
        SAME_NUM(oplog_entries);
    } else
        SAME_STR(point_in_time_reason);
    if (!list_eq(a->ns_include, a->n_ns_include, b->ns_include, b->n_ns_include))
        return "ns_include";
    if (!list_eq(a->ns_exclude, a->n_ns_exclude, b->ns_exclude, b->n_ns_exclude))
        return "ns_exclude";
    SAME_NUM(total_documents);
    SAME_NUM(total_bytes);
    SAME_NUM(n_namespaces);
    for (size_t i = 0; i < a->n_namespaces; i++) {
        const MsManifestNamespace *x = &a->namespaces[i], *y = &b->namespaces[i];
        if (!str_eq(x->db, y->db) || !str_eq(x->collection, y->collection) ||
            !str_eq(x->type, y->type) || x->documents != y->documents || x->bytes != y->bytes ||
            x->crc64 != y->crc64 || x->indexes != y->indexes)
            return "namespaces[]";
    }
    return NULL;
#undef SAME_STR
#undef SAME_NUM
}

static void check_round_trip(const MsManifest *m) {
    MsError e = MS_ERROR_INIT;
    char *json = NULL;
    size_t len = 0;
    int r = ms_manifest_serialize(m, &json, &len, &e);
    FUZZ_CHECK(r == 0, "a parsed manifest does not serialise: %s", e.message);
    MsManifest again = {0};
    r = ms_manifest_parse(json, len, &again, &e);
    FUZZ_CHECK(r == 0, "a serialised manifest does not parse back: %s\n%s", e.message, json);
    const char *diff = manifest_diff(m, &again);
    FUZZ_CHECK(!diff, "'%s' changed in a serialise/parse round trip:\n%s", diff, json);
    /* The lookups the restore makes. */
    for (size_t i = 0; i < again.n_namespaces; i++)
        FUZZ_CHECK(ms_manifest_find(&again, again.namespaces[i].db, again.namespaces[i].collection),
                   "ms_manifest_find misses namespace %zu", i);
    ms_manifest_clear(&again);
    free(json);
}

static void parse_one(const char *json, size_t len, const char *what) {
    MsManifest m = {0};
    MsError e = MS_ERROR_INIT;
    int r = ms_manifest_parse(json, len, &m, &e);
    fuzz_say("%s: %s\n", what, r < 0 ? e.message : "parsed");
    if (r < 0) {
        FUZZ_CHECK(ms_error_is_set(&e) && e.message[0], "parse failed (%d) without a message", r);
        return;
    }
    check_round_trip(&m);
    if (m.archive_key) {
        char *k = ms_manifest_key_for_archive(m.archive_key);
        FUZZ_CHECK(k, "ms_manifest_key_for_archive failed");
        free(k);
    }
    ms_manifest_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzInput in = {data, size};
    unsigned flags = fuzz_u8(&in);
    /* An exact-size copy, so ASan sees any read past the end. */
    char *json = malloc(in.n ? in.n : 1);
    if (!json)
        abort();
    memcpy(json, in.p, in.n);
    parse_one(json, in.n, "as given");

    if (!(flags & FLAG_NO_RESEAL)) {
        static const char marker[] = "\"manifest_sha256\" : \"";
        char *at = NULL;
        for (char *p = json;
             in.n && (p = memmem(p, in.n - (size_t) (p - json), marker, strlen(marker))); p++)
            at = p;
        size_t body = in.n;
        while (body > 0 && (json[body - 1] == '\n' || json[body - 1] == '\r'))
            body--;
        if (at && (size_t) (at - json) + strlen(marker) + MS_SHA256_HEX_LEN <= body) {
            size_t off = (size_t) (at - json) + strlen(marker);
            memset(json + off, '0', MS_SHA256_HEX_LEN);
            char hex[MS_SHA256_HEX_LEN + 1];
            ms_sha256_hex(json, body, hex);
            memcpy(json + off, hex, MS_SHA256_HEX_LEN);
            parse_one(json, in.n, "resealed");
        }
    }
    free(json);
    return 0;
}

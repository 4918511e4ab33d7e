/* The codes of cluster records and commands (cluster/record-mac.h): every field of every kind
 * is covered (changing any one changes the code), NULL is not "", fields cannot slide into
 * each other, a record cannot pass for another kind, another key gives another code; and the
 * check that a record's store keys name it, over the names the worker writes and hostile ones. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/record-mac.h"
#include "test.h"

static unsigned char key_bytes[32] = "0123456789abcdef0123456789abcdef";
static const MsClusterKey KEY = {key_bytes, sizeof(key_bytes)};

static MsSnapshotRecord *sample_snapshot(void) {
    MsSnapshotRecord *r = calloc(1, sizeof(*r));
    r->id = strdup("nightly-20261207T020000Z");
    r->node = strdup("db1");
    r->error = NULL;
    r->created_usec = 1000;
    r->started_usec = 2000;
    r->finished_usec = 3000;
    r->items_done = 10;
    r->items_total = 10;
    r->progress_pct = 100;
    r->bytes_transferred = 4096;
    r->policy = strdup("nightly");
    r->archive_key = strdup("nightly/nightly-20261207T020000Z.archive.zst");
    r->manifest_key = strdup("nightly/nightly-20261207T020000Z.manifest.json");
    r->store = strdup("s3://bucket/rs0");
    r->state = MS_SNAPSHOT_COMPLETED;
    r->expire_usec = 9000;
    r->point_in_time = true;
    r->verify_state = MS_VERIFY_PASSED;
    r->verify_finished_usec = 5000;
    r->seq = 7;
    r->origin = MS_SNAPSHOT_ORIGIN_SCHEDULED;
    return r;
}

static void mac_of(const MsSnapshotRecord *r, char *out) {
    if (ms_record_mac_snapshot(&KEY, r, out) < 0)
        out[0] = '\0';
}

/* Each change of one field; after it the code must differ from the sample's. */
typedef void (*Change)(MsSnapshotRecord *r);
#define CHANGE(name, stmt)                                                                         \
    static void name(MsSnapshotRecord *r) {                                                        \
        stmt;                                                                                      \
    }
static void set_str(char **p, const char *v) {
    free(*p);
    *p = v ? strdup(v) : NULL;
}
CHANGE(ch_id, set_str(&r->id, "nightly-20261207T020001Z"))
CHANGE(ch_node, set_str(&r->node, "db2"))
CHANGE(ch_error_empty, set_str(&r->error, ""))
CHANGE(ch_created, r->created_usec++)
CHANGE(ch_started, r->started_usec++)
CHANGE(ch_finished, r->finished_usec++)
CHANGE(ch_items_done, r->items_done++)
CHANGE(ch_items_total, r->items_total++)
CHANGE(ch_progress, r->progress_pct = 99.5)
CHANGE(ch_bytes, r->bytes_transferred++)
CHANGE(ch_policy, set_str(&r->policy, "weekly"))
CHANGE(ch_archive, set_str(&r->archive_key, "nightly/other.archive.zst"))
CHANGE(ch_archive_null, set_str(&r->archive_key, NULL))
CHANGE(ch_manifest, set_str(&r->manifest_key, "x.manifest.json"))
CHANGE(ch_store, set_str(&r->store, "s3://bucket/rs1"))
CHANGE(ch_state, r->state = MS_SNAPSHOT_DELETED)
CHANGE(ch_expire, r->expire_usec = 0)
CHANGE(ch_pit, r->point_in_time = false)
CHANGE(ch_verify, r->verify_state = MS_VERIFY_FAILED)
CHANGE(ch_verify_finished, r->verify_finished_usec++)
CHANGE(ch_verify_error, set_str(&r->verify_error, "bad"))
CHANGE(ch_seq, r->seq = 1000000)
CHANGE(ch_origin, r->origin = MS_SNAPSHOT_ORIGIN_MANUAL)
CHANGE(ch_detached, r->detached_usec = 1)
CHANGE(ch_parts, set_str(&r->parts, "[]"))
CHANGE(ch_state_next, r->state = (MsSnapshotState) ((r->state + 1) % _MS_SNAPSHOT_STATE_MAX))
CHANGE(ch_seq_next, r->seq++)

static void every_snapshot_field_is_signed(void) {
    static const Change changes[] = {
        ch_id,           ch_node,       ch_error_empty,  ch_created,  ch_started,
        ch_finished,     ch_items_done, ch_items_total,  ch_progress, ch_bytes,
        ch_policy,       ch_archive,    ch_archive_null, ch_manifest, ch_store,
        ch_state,        ch_expire,     ch_pit,          ch_verify,   ch_verify_finished,
        ch_verify_error, ch_seq,        ch_origin,       ch_detached, ch_parts,
    };
    char base[MS_RECORD_MAC_HEX], again[MS_RECORD_MAC_HEX];
    MsSnapshotRecord *r = sample_snapshot();
    mac_of(r, base);
    mac_of(r, again);
    ASSERT_EQ_INT(strlen(base), MS_RECORD_MAC_HEX - 1);
    ASSERT(ms_record_mac_equal(base, again));
    ms_snapshot_record_free(r);
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        MsSnapshotRecord *x = sample_snapshot();
        changes[i](x);
        char mac[MS_RECORD_MAC_HEX];
        mac_of(x, mac);
        ms_snapshot_record_free(x);
        if (ms_record_mac_equal(base, mac))
            fprintf(stderr, "# change %zu left the code as it was\n", i);
        ASSERT(mac[0] != '\0' && !ms_record_mac_equal(base, mac));
    }
}

/* What is not a field the reader sees must not change it: a number past INT64_MAX is stored as
 * INT64_MAX, -0 reads back as 0 on some servers, and what retention last said is not stored. */
static void what_the_store_cannot_tell_apart_signs_alike(void) {
    char a[MS_RECORD_MAC_HEX], b[MS_RECORD_MAC_HEX];
    MsSnapshotRecord *r = sample_snapshot();
    r->seq = UINT64_MAX;
    r->progress_pct = -0.0;
    mac_of(r, a);
    r->seq = INT64_MAX;
    r->progress_pct = 0.0;
    r->kept_by = strdup("KeepDaily=7");
    r->expire_projected_usec = 12345;
    r->future_dated = true;
    mac_of(r, b);
    ms_snapshot_record_free(r);
    ASSERT(ms_record_mac_equal(a, b));
}

static void another_key_another_code(void) {
    unsigned char other[32];
    memcpy(other, key_bytes, sizeof(other));
    other[31] ^= 1;
    MsClusterKey k2 = {other, sizeof(other)};
    char a[MS_RECORD_MAC_HEX], b[MS_RECORD_MAC_HEX];
    MsSnapshotRecord *r = sample_snapshot();
    mac_of(r, a);
    ASSERT_OK(ms_record_mac_snapshot(&k2, r, b));
    MsClusterKey none = {NULL, 0};
    ASSERT_EQ_INT(ms_record_mac_snapshot(&none, r, b), -EIO);
    ms_snapshot_record_free(r);
    ASSERT(!ms_record_mac_equal(a, b));
}

/* "ab"+"c" and "a"+"bc" in neighbouring fields, NULL against "": all different codes. */
static void fields_do_not_slide(void) {
    char m[4][MS_RECORD_MAC_HEX];
    ASSERT_OK(ms_record_mac_command(&KEY, "id", "db1", "ab", "c", "t", "db2", 1, m[0]));
    ASSERT_OK(ms_record_mac_command(&KEY, "id", "db1", "a", "bc", "t", "db2", 1, m[1]));
    ASSERT_OK(ms_record_mac_command(&KEY, "id", "db1", "ab", NULL, "t", "db2", 1, m[2]));
    ASSERT_OK(ms_record_mac_command(&KEY, "id", "db1", "ab", "", "t", "db2", 1, m[3]));
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            ASSERT(!ms_record_mac_equal(m[i], m[j]));
}

static void every_command_field_is_signed(void) {
    char base[MS_RECORD_MAC_HEX], m[MS_RECORD_MAC_HEX];
    ASSERT_OK(ms_record_mac_command(&KEY, "65a1", "db1", "delete-snapshot", "p", "p-1Z", "db2", 100,
                                    base));
    const char *v[6] = {"65a1", "db1", "delete-snapshot", "p", "p-1Z", "db2"};
    for (int i = 0; i < 7; i++) {
        const char *w[6];
        memcpy(w, v, sizeof(w));
        uint64_t created = 100;
        if (i < 6)
            w[i] = "other";
        else
            created = 101;
        ASSERT_OK(ms_record_mac_command(&KEY, w[0], w[1], w[2], w[3], w[4], w[5], created, m));
        ASSERT(!ms_record_mac_equal(base, m));
    }
}

/* A restore and a snapshot with the same core never share a code (each kind its domain). */
static void kinds_do_not_pass_for_each_other(void) {
    MsRestoreRecord x = {0};
    x.id = "nightly-20261207T020000Z";
    x.source_snapshot = "s";
    x.target = "mongodb://h/";
    x.state = MS_RESTORE_COMPLETED;
    char a[MS_RECORD_MAC_HEX], b[MS_RECORD_MAC_HEX], c[MS_RECORD_MAC_HEX];
    ASSERT_OK(ms_record_mac_restore(&KEY, &x, "db1", a));
    ASSERT_OK(ms_record_mac_restore(&KEY, &x, "db2", b));
    ASSERT(!ms_record_mac_equal(a, b));
    x.options = "{}";
    ASSERT_OK(ms_record_mac_restore(&KEY, &x, "db1", c));
    ASSERT(!ms_record_mac_equal(a, c));
    MsSnapshotRecord s = {0};
    s.id = x.id;
    ASSERT_OK(ms_record_mac_snapshot(&KEY, &s, c));
    ASSERT(!ms_record_mac_equal(a, c));
}

static void equal_is_strict(void) {
    char a[MS_RECORD_MAC_HEX];
    ASSERT_OK(ms_record_mac_command(&KEY, "x", "n", "o", "p", "t", "f", 1, a));
    char upper[MS_RECORD_MAC_HEX];
    for (size_t i = 0; i < sizeof(upper); i++)
        upper[i] = (char) (a[i] >= 'a' && a[i] <= 'f' ? a[i] - 32 : a[i]);
    ASSERT(ms_record_mac_equal(a, a));
    ASSERT(!ms_record_mac_equal(a, NULL) && !ms_record_mac_equal(NULL, NULL));
    ASSERT(!ms_record_mac_equal(a, ""));
    ASSERT(!ms_record_mac_equal(a, "00"));
    char longer[MS_RECORD_MAC_HEX + 1];
    memcpy(longer, a, MS_RECORD_MAC_HEX - 1);
    longer[MS_RECORD_MAC_HEX - 1] = '0';
    longer[MS_RECORD_MAC_HEX] = '\0';
    ASSERT(!ms_record_mac_equal(a, longer));
    /* a code has lower-case digits only; one with upper-case ones is another string */
    if (strcmp(upper, a) != 0)
        ASSERT(!ms_record_mac_equal(a, upper));
}

/* Random records: a code checks out for the record it was made of, and for no record that
 * differs from it in one random field. */
static void random_records(void) {
    srand(20261207);
    /* each surely changes a random record */
    static const Change changes[] = {ch_node,  ch_created, ch_archive, ch_state_next, ch_seq_next,
                                     ch_parts, ch_store,   ch_origin,  ch_pit};
    for (int round = 0; round < 500; round++) {
        MsSnapshotRecord *r = sample_snapshot();
        r->created_usec = (uint64_t) rand() * (uint64_t) rand();
        r->progress_pct = (double) rand() / RAND_MAX * 99;
        r->seq = (uint64_t) rand();
        r->state = (MsSnapshotState) (rand() % _MS_SNAPSHOT_STATE_MAX);
        char id[64];
        snprintf(id, sizeof(id), "p%d-%d", rand(), round);
        set_str(&r->id, id);
        char a[MS_RECORD_MAC_HEX], b[MS_RECORD_MAC_HEX];
        mac_of(r, a);
        mac_of(r, b);
        ASSERT(ms_record_mac_equal(a, b));
        changes[rand() % (int) (sizeof(changes) / sizeof(changes[0]))](r);
        mac_of(r, b);
        ms_snapshot_record_free(r);
        ASSERT(!ms_record_mac_equal(a, b));
    }
}

static void keys_name_the_record(void) {
    static const struct {
        const char *id, *archive, *manifest;
        bool ok;
    } t[] = {
        /* what the worker writes */
        {"p-1Z", "p/p-1Z.archive.zst", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.archive", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.archive.gz", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.archive.zst.enc", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.archive.gz.enc", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.archive.enc", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.index", "p/p-1Z.manifest.json", true},
        {"p-1Z", "p/p-1Z.cluster.json", "p/p-1Z.cluster.json", true},
        {"p-1Z", "a/b/p/p-1Z.archive.zst", "a/b/p/p-1Z.manifest.json", true},
        {"p-1Z", "p-1Z.archive.zst", "p-1Z.manifest.json", true},
        {"p-1Z", NULL, NULL, true}, /* queued: no files yet */
        {"p-1Z", "p/p-1Z.archive.zst", NULL, true},
        /* another snapshot's files */
        {"p-1Z", "p/p-2Z.archive.zst", "p/p-2Z.manifest.json", false},
        {"p-1Z", "p/p-1Z.archive.zst", "p/p-2Z.manifest.json", false},
        {"p-1Z", "p/p-2Z.archive.zst", "p/p-1Z.manifest.json", false},
        {"p-1", "p/p-1Z.archive.zst", "p/p-1Z.manifest.json", false},  /* a prefix of it */
        {"p-1Z", "q/p-1Z.archive.zst", "p/p-1Z.manifest.json", false}, /* two places */
        {"p-1Z", "pp/p-1Z.archive.zst", "p/p-1Z.manifest.json", false},
        {"p-1Z", "p/p-1Z.archive.zst/x", "p/p-1Z.manifest.json", false},
        {"p-1Z", "p/p-1Z.archive.zst.x", "p/p-1Z.manifest.json", false},
        {"p-1Z", "p/p-1Z.manifest.json", "p/p-1Z.manifest.json", false}, /* no archive */
        {"p-1Z", "p/p-1Z.archive.zst", "p/p-1Z.archive.zst", false},
        {"p-1Z", "p/p-1Z.archive.zst", "p/p-1Z.index", false},
        {"p-1Z", "/etc/passwd", "p/p-1Z.manifest.json", false},
        {"p-1Z", "p/p-1Z", "p/p-1Z.manifest.json", false},
        {"p-1Z", "p/p-1Z.archive.zst", "p/", false},
        {"", "p/.archive.zst", "p/.manifest.json", false},
        {NULL, "p/x.archive.zst", NULL, false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        MsSnapshotRecord r = {0};
        r.id = (char *) t[i].id;
        r.archive_key = (char *) t[i].archive;
        r.manifest_key = (char *) t[i].manifest;
        if (ms_record_keys_name_it(&r) != t[i].ok)
            fprintf(stderr, "# case %zu: %s %s %s\n", i, t[i].id ? t[i].id : "(null)",
                    t[i].archive ? t[i].archive : "(null)",
                    t[i].manifest ? t[i].manifest : "(null)");
        ASSERT(ms_record_keys_name_it(&r) == t[i].ok);
    }
}

MS_TEST_MAIN(TEST_CASE(every_snapshot_field_is_signed),
             TEST_CASE(what_the_store_cannot_tell_apart_signs_alike),
             TEST_CASE(another_key_another_code), TEST_CASE(fields_do_not_slide),
             TEST_CASE(every_command_field_is_signed), TEST_CASE(kinds_do_not_pass_for_each_other),
             TEST_CASE(equal_is_strict), TEST_CASE(random_records), TEST_CASE(keys_name_the_record))

/* HMAC-SHA256 over a canonical encoding of cluster records and commands (record-mac.h). */
#include "cluster/record-mac.h"

#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "mongosnap/mongosnap.h"

/* The domain every code starts with: a new encoding gets a new version, never a changed one. */
#define MAC_DOMAIN "mongosnap cluster record v1"

typedef struct MacInput {
    unsigned char *buf;
    size_t len, cap;
    bool oom;
} MacInput;

static void put(MacInput *in, const void *p, size_t n) {
    if (in->oom)
        return;
    if (in->len + n > in->cap) {
        size_t cap = in->cap ? in->cap : 256;
        while (cap < in->len + n)
            cap *= 2;
        unsigned char *b = realloc(in->buf, cap);
        if (!b) {
            in->oom = true;
            return;
        }
        in->buf = b;
        in->cap = cap;
    }
    memcpy(in->buf + in->len, p, n);
    in->len += n;
}

static void put_be64(MacInput *in, uint64_t v) {
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char) (v & 0xff);
    put(in, b, sizeof(b));
}

static void field_str(MacInput *in, const char *s) {
    if (!s) {
        put(in, "n", 1);
        return;
    }
    size_t n = strlen(s);
    put(in, "s", 1);
    put_be64(in, n);
    put(in, s, n);
}

/* As the cluster store writes it: a number past INT64_MAX is stored as INT64_MAX. */
static void field_u64(MacInput *in, uint64_t v) {
    put(in, "u", 1);
    put_be64(in, v > INT64_MAX ? INT64_MAX : v);
}

/* The bits of the value; -0 as 0 and every NaN as one, so that a server that stores either
 * form of them back does not break the code. */
static void field_double(MacInput *in, double v) {
    uint64_t bits;
    if (isnan(v))
        bits = UINT64_C(0x7ff8000000000000);
    else {
        if (v == 0)
            v = 0;
        memcpy(&bits, &v, sizeof(bits));
    }
    put(in, "d", 1);
    put_be64(in, bits);
}

static void field_bool(MacInput *in, bool v) {
    put(in, v ? "T" : "F", 1);
}

static void begin(MacInput *in, const char *kind) {
    field_str(in, MAC_DOMAIN);
    field_str(in, kind);
}

static int finish(MacInput *in, const MsClusterKey *key, char *out) {
    int r = 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (in->oom)
        r = -ENOMEM;
    else if (!key || !key->bytes || key->len == 0 || key->len > MS_CLUSTER_KEY_MAX ||
             !HMAC(EVP_sha256(), key->bytes, (int) key->len, in->buf, in->len, md, &md_len) ||
             md_len != 32)
        r = -EIO;
    else
        ms_hex_encode(md, md_len, out);
    free(in->buf);
    OPENSSL_cleanse(md, sizeof(md));
    return r;
}

static void core_fields(MacInput *in, const MsTaskCore *c, const char *node) {
    field_str(in, c->id);
    field_str(in, node);
    field_str(in, c->error);
    field_u64(in, c->created_usec);
    field_u64(in, c->started_usec);
    field_u64(in, c->finished_usec);
    field_u64(in, c->items_done);
    field_u64(in, c->items_total);
    field_double(in, c->progress_pct);
    field_u64(in, c->bytes_transferred);
}

int ms_record_mac_snapshot(const MsClusterKey *key, const MsSnapshotRecord *r, char *out) {
    MacInput in = {0};
    begin(&in, "snapshot");
    core_fields(&in, &r->core, r->node);
    field_str(&in, r->policy);
    field_str(&in, r->archive_key);
    field_str(&in, r->manifest_key);
    field_str(&in, r->store);
    field_str(&in, ms_snapshot_state_to_string(r->state));
    field_u64(&in, r->expire_usec);
    field_bool(&in, r->point_in_time);
    field_str(&in, ms_verify_state_to_string(r->verify_state));
    field_u64(&in, r->verify_finished_usec);
    field_str(&in, r->verify_error);
    field_u64(&in, r->seq);
    field_str(&in, ms_snapshot_origin_to_string(r->origin));
    field_u64(&in, r->detached_usec);
    field_str(&in, r->parts);
    return finish(&in, key, out);
}

int ms_record_mac_restore(const MsClusterKey *key, const MsRestoreRecord *r, const char *node,
                          char *out) {
    MacInput in = {0};
    begin(&in, "restore");
    core_fields(&in, &r->core, node);
    field_str(&in, r->source_snapshot);
    field_str(&in, r->target);
    field_str(&in, ms_restore_state_to_string(r->state));
    field_str(&in, r->options);
    return finish(&in, key, out);
}

int ms_record_mac_command(const MsClusterKey *key, const char *id, const char *to_node,
                          const char *op, const char *policy, const char *task, const char *from,
                          uint64_t created_usec, char *out) {
    MacInput in = {0};
    begin(&in, "command");
    field_str(&in, id);
    field_str(&in, to_node);
    field_str(&in, op);
    field_str(&in, policy);
    field_str(&in, task);
    field_str(&in, from);
    field_u64(&in, created_usec);
    return finish(&in, key, out);
}

bool ms_record_mac_equal(const char *a, const char *b) {
    if (!a || !b || strlen(a) != MS_RECORD_MAC_HEX - 1 || strlen(b) != MS_RECORD_MAC_HEX - 1)
        return false;
    return CRYPTO_memcmp(a, b, MS_RECORD_MAC_HEX - 1) == 0;
}

/* ---- the keys of a record ---- */

/* What may follow "ID" in the name of a snapshot's object, whole. */
static const char *const object_suffixes[] = {
    MONGOSNAP_MANIFEST_SUFFIX,
    MONGOSNAP_CLUSTER_MANIFEST_SUFFIX,
    MONGOSNAP_INDEX_SUFFIX,
    MONGOSNAP_ARCHIVE_SUFFIX,
    MONGOSNAP_ARCHIVE_SUFFIX ".zst",
    MONGOSNAP_ARCHIVE_SUFFIX ".gz",
    MONGOSNAP_ARCHIVE_SUFFIX ".enc",
    MONGOSNAP_ARCHIVE_SUFFIX ".zst.enc",
    MONGOSNAP_ARCHIVE_SUFFIX ".gz.enc",
};

/* key is "DIR/ID<suffix>" (or "ID<suffix>"): the length of "DIR/" in *ret_dir_len. */
static bool key_names(const char *key, const char *id, bool manifest, size_t *ret_dir_len) {
    const char *slash = strrchr(key, '/');
    const char *base = slash ? slash + 1 : key;
    size_t n = strlen(id);
    if (n == 0 || strncmp(base, id, n) != 0)
        return false;
    const char *rest = base + n;
    for (size_t i = 0; i < sizeof(object_suffixes) / sizeof(object_suffixes[0]); i++) {
        /* A manifest is one of the first two; an archive any but a manifest.json. */
        if (manifest ? i > 1 : i == 0)
            continue;
        if (strcmp(rest, object_suffixes[i]) == 0) {
            *ret_dir_len = (size_t) (base - key);
            return true;
        }
    }
    return false;
}

bool ms_record_keys_name_it(const MsSnapshotRecord *r) {
    if (!r->id)
        return false;
    size_t a = 0, m = 0;
    if (r->archive_key && !key_names(r->archive_key, r->id, false, &a))
        return false;
    if (r->manifest_key && !key_names(r->manifest_key, r->id, true, &m))
        return false;
    if (r->archive_key && r->manifest_key)
        return a == m && strncmp(r->archive_key, r->manifest_key, a) == 0;
    return true;
}

/* The authentication code of what agents write to the cluster database ([Cluster]
 * SigningKeyCredential=): HMAC-SHA256, under a key every agent of the cluster holds, over a
 * canonical encoding of a record's or a command's fields. An agent that holds the key signs
 * everything it writes to `snapshots`, `restores` and `commands`, and takes from them only what
 * is signed with it, so that whoever can write the cluster database without the key can neither
 * order a node to act (delete, cancel, take a part) nor put a record into its retention.
 *
 * The encoding is of the fields as the reader parses them, not of the BSON bytes: a server may
 * store a document in its own order or form (FerretDB keeps it in SQL), and the code must check
 * out whatever form the same values come back in. Each field is a type byte and its value
 * (strings length-prefixed, NULL distinct from ""), after a domain string naming the kind, so
 * that no field can slide into its neighbour and no record can pass for another kind. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog/catalog.h"

/* A key shorter than this is refused: 32 bytes is HMAC-SHA256's own strength, and a key made
 * with `head -c 32 /dev/urandom | base64` has 44. */
#define MS_CLUSTER_KEY_MIN 32
#define MS_CLUSTER_KEY_MAX 4096
/* Lower-case hex of the 32-byte code, with its NUL. */
#define MS_RECORD_MAC_HEX 65

typedef struct MsClusterKey {
    unsigned char *bytes;
    size_t len;
} MsClusterKey;

/* The codes, into out (MS_RECORD_MAC_HEX bytes). -ENOMEM or -EIO (libcrypto failed). */
int ms_record_mac_snapshot(const MsClusterKey *key, const MsSnapshotRecord *r, char *out);
int ms_record_mac_restore(const MsClusterKey *key, const MsRestoreRecord *r, const char *node,
                          char *out);
/* A command: its document's _id (hex of the ObjectId), the node it is addressed to, its fields,
 * and when it was sent (a copy of a signed command under another _id or to another node does
 * not check out). */
int ms_record_mac_command(const MsClusterKey *key, const char *id, const char *to_node,
                          const char *op, const char *policy, const char *task, const char *from,
                          uint64_t created_usec, char *out);

/* Do two codes match (in time that does not tell where they differ)? NULL matches nothing. */
bool ms_record_mac_equal(const char *a, const char *b);

/* Do a snapshot record's store keys name that snapshot: the manifest "DIR/ID.manifest.json"
 * and the archive "DIR/ID.SUFFIX" in the same DIR (either may be NULL)? A record read from the
 * cluster that names another snapshot's files is refused whether or not records are signed:
 * the node it names would otherwise remove those files when it expires the record. */
bool ms_record_keys_name_it(const MsSnapshotRecord *r);

/* Opening a stored snapshot (or a stock mongodump archive file) for reading: its manifest
 * and the decompressed, checksummed archive stream. Shared by restore and verify. */
#pragma once

#include <stdbool.h>

#include "archive/archive.h"
#include "common/error.h"
#include "io/chain.h"
#include "io/filter-encrypt.h"
#include "io/stream.h"
#include "manifest.h"
#include "storage/storage.h"

typedef struct MsSnapshotSource {
    bool has_manifest;
    MsManifest manifest;
    char *archive_name;      /* key or path, for messages */
    MsSource *head;          /* decompressed archive bytes */
    /* What the read chain measured and found (stored bytes, their SHA-256 at the end, whether
     * encrypted, the compression): owned here, apart from the struct so that it may move. */
    MsChainResults *chain;
    MsArchiveReader *reader;
} MsSnapshotSource;

/* From a store: key is a manifest key, an archive key, or a snapshot name with prefix
 * ("nightly/node1/nightly-2026..."); the manifest is required and checked.
 * enc_key opens an encrypted snapshot (NULL: none given). The stream is recognised by its
 * MSENC1 header (and the manifest's "encryption" field) before decompression is detected. An
 * encrypted snapshot without a key is -ENOKEY, with the wrong key -EKEYREJECTED, both before
 * any data is read; a key given for an unencrypted snapshot is not needed and not used. */
int ms_snapshot_source_open_store(MsStorage *storage, const char *key,
                                  const MsEncryptKey *enc_key, MsSnapshotSource *ret, MsError *e);
/* Without the key: read the stored object of snapshot key and compare only its size and SHA-256
 * with the manifest (nothing is decrypted or parsed). 0 when they match, -EBADMSG if not. */
int ms_snapshot_source_check_stored_only(MsStorage *storage, const char *key, uint64_t *ret_bytes,
                                         MsError *e);
/* Before a restore changes anything in the target: is the snapshot whole? For a stored
 * snapshot: its size and SHA-256 against the manifest and, when encrypted, the authentication
 * of every chunk (which needs enc_key); nothing is decompressed or parsed. -EBADMSG when
 * damaged, with the store's read errors as they come. */
int ms_snapshot_source_precheck_store(MsStorage *storage, const char *key,
                                      const MsEncryptKey *enc_key, uint64_t *ret_bytes,
                                      MsError *e);
/* The same for an archive file, which has no SHA-256 to compare unless a manifest is given:
 * the whole archive is read and every namespace's CRC-64 checked. Standard input ("-") cannot
 * be read twice: -EINVAL. */
int ms_snapshot_source_precheck_file(const char *path, const char *manifest_path,
                                     const MsEncryptKey *enc_key, MsError *e);
/* From a stock archive file ("-" is standard input); manifest_path is optional. */
int ms_snapshot_source_open_file(const char *path, const char *manifest_path,
                                 const MsEncryptKey *enc_key, MsSnapshotSource *ret, MsError *e);

/* After the archive's END: compare the stored object's size and SHA-256 with the manifest. */
int ms_snapshot_source_check_stored(MsSnapshotSource *s, MsError *e);
/* Compare per-namespace counts and CRCs the reader saw with the manifest. */
int ms_snapshot_source_check_namespaces(MsSnapshotSource *s, MsError *e);

/* Reads the archive whole, from its prelude to its END, handing every document to on_document
 * (may be NULL; its negative return stops the read and is returned), then the end-of-read checks
 * above. What every reader that needs the whole archive checked does. */
int ms_snapshot_source_read_all(MsSnapshotSource *s,
                                int (*on_document)(const MsArchiveEvent *ev, void *userdata),
                                void *userdata, MsError *e);

void ms_snapshot_source_close(MsSnapshotSource *s);

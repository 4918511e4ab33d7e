/* Opening a stored snapshot (or a stock mongodump archive file) for reading: its manifest
 * and the decompressed, checksummed archive stream. Shared by restore and verify. */
#pragma once

#include <stdbool.h>

#include "archive/archive.h"
#include "common/error.h"
#include "io/stream.h"
#include "manifest.h"
#include "storage/storage.h"

typedef struct MsSnapshotSource {
    bool has_manifest;
    MsManifest manifest;
    char *archive_name;      /* key or path, for messages */
    MsSource *head;          /* decompressed archive bytes */
    MsSource *hash;          /* sha256 stage over the stored bytes (owned by head's chain) */
    uint64_t stored_bytes;   /* bytes read from the store */
    MsCompression detected;  /* what the stored object turned out to be */
    MsArchiveReader *reader;
} MsSnapshotSource;

/* From a store: key is a manifest key, an archive key, or a snapshot name with prefix
 * ("nightly/node1/nightly-2026..."); the manifest is required and checked. */
int ms_snapshot_source_open_store(MsStorage *storage, const char *key, MsSnapshotSource *ret,
                                  MsError *e);
/* From a stock archive file ("-" is standard input); manifest_path is optional. */
int ms_snapshot_source_open_file(const char *path, const char *manifest_path,
                                 MsSnapshotSource *ret, MsError *e);

/* After the archive's END: compare the stored object's size and SHA-256 with the manifest. */
int ms_snapshot_source_check_stored(MsSnapshotSource *s, MsError *e);
/* Compare per-namespace counts and CRCs the reader saw with the manifest. */
int ms_snapshot_source_check_namespaces(MsSnapshotSource *s, MsError *e);

void ms_snapshot_source_close(MsSnapshotSource *s);

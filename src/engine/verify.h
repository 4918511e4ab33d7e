/* Verify: re-read a stored snapshot without any server and check its structure, every
 * checksum and every count against the manifest. */
#pragma once

#include <signal.h>
#include <stdint.h>

#include "common/error.h"
#include "io/filter-encrypt.h"
#include "progress.h"
#include "storage/storage.h"

typedef struct MsVerifyOptions {
    MsStorage *storage;
    const char *snapshot_key;
    const char *archive_path; /* or a file, with an optional manifest */
    const char *manifest_path;
    const MsEncryptKey *key; /* for an encrypted snapshot; NULL: none given */
    MsProgress *progress;
    volatile sig_atomic_t *cancel;
} MsVerifyOptions;

typedef struct MsVerifyResult {
    uint64_t namespaces;
    uint64_t documents;
    uint64_t oplog_entries;
    uint64_t stored_bytes;
    uint64_t uncompressed_bytes;
    bool checked_against_manifest;
} MsVerifyResult;

/* 0 when sound; -EBADMSG (or -EPIPE for truncation) with a message naming what is wrong. */
int ms_verify_run(const MsVerifyOptions *o, MsVerifyResult *ret, MsError *e);

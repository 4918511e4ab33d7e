/* The S3 storage driver's own entry points beyond the storage interface. */
#pragma once

#include <stdint.h>

#include "storage.h"

/* Read-ahead of a store reader: one ranged GET per chunk of this size. */
#define MS_S3_READ_CHUNK (8u << 20)

/* A presigned GET URL for key (relative to the store's prefix), valid for expires_seconds
 * (1 s .. 7 days); -EOPNOTSUPP when s is not an S3 store. Also reachable as the
 * download_url operation (ms_storage_download_url). */
int ms_s3_presign_get(MsStorage *s, const char *key, uint64_t expires_seconds, char **ret_url,
                      MsError *e);

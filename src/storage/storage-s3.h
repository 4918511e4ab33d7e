/* The S3 storage driver's own entry points beyond the storage interface. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "storage.h"

/* A store reader fetches ranged GETs of this size, `parallel` of them at once (the location's
 * parallel=), into parallel + 1 buffers of this size: 80 MiB at the default parallel=4, the
 * upload's bound at the default part size. 16 MiB rather than 8: half the requests, and so
 * half the round trips; through 50 ms of latency each way 1 GiB took 2.2 s against 3.8 s
 * (boto3: 2.8 s; bench/s3-bench --latency, bench/results/s3-latency-20261207*). */
#define MS_S3_READ_CHUNK (16u << 20)

/* Tests only: the chunk size of readers opened from now on (0: MS_S3_READ_CHUNK again), so
 * that objects of many chunks stay small in tests. Not thread-safe; call before opening. */
void ms_s3_set_read_chunk_for_tests(size_t bytes);

/* A presigned GET URL for key (relative to the store's prefix), valid for expires_seconds
 * (1 s .. 7 days); -EOPNOTSUPP when s is not an S3 store. Also reachable as the
 * download_url operation (ms_storage_download_url). */
int ms_s3_presign_get(MsStorage *s, const char *key, uint64_t expires_seconds, char **ret_url,
                      MsError *e);

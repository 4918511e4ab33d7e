/* The storage driver interface: the engine only ever sees this table of operations.
 * Keys are relative paths with '/' separators ("nightly/node1/2026-...archive.zst"); each
 * driver validates them (no "..", no absolute paths, no empty components). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "io/stream.h"

typedef struct MsStorage MsStorage;

typedef struct MsStorageObject {
    char *key;
    uint64_t size;
    int64_t mtime_usec;
} MsStorageObject;

typedef struct MsStorageOps {
    const char *name;
    /* A sink whose finish() makes the object visible atomically under key (replacing an
     * old one); freeing it before finish() leaves nothing behind. */
    int (*open_write)(MsStorage *s, const char *key, MsSink **ret, MsError *e);
    /* -ENOENT with a message when the object does not exist. */
    int (*open_read)(MsStorage *s, const char *key, MsSource **ret, MsError *e);
    int (*stat)(MsStorage *s, const char *key, MsStorageObject *ret, MsError *e);
    /* Removing a missing object is not an error. */
    int (*remove)(MsStorage *s, const char *key, MsError *e);
    /* Objects whose key starts with prefix, sorted by key; in-flight temporary objects
     * are not listed. */
    int (*list)(MsStorage *s, const char *prefix, MsStorageObject **ret, size_t *ret_n,
                MsError *e);
    /* Remove temporary leftovers of writes that never finished (crash, kill) under prefix,
     * except under `except` (NULL: none), where another writer may be at work (the policy's
     * oplog follower writes its slices beside its snapshots). A prefix is a string prefix:
     * end it with '/' to mean one directory ("nightly" is also "nightly2/..."). */
    int (*clean_stale)(MsStorage *s, const char *prefix, const char *except, unsigned *ret_removed,
                       MsError *e);
    /* A printable description without secrets ("local:/var/lib/mongosnap/store"). */
    const char *(*describe)(MsStorage *s);
    void (*free)(MsStorage *s);
    /* Optional (NULL when the store has none, e.g. local): an address from which anyone
     * holding it can download the object with a plain HTTP GET until it expires
     * (expires_usec 0: the store's default lifetime). */
    int (*download_url)(MsStorage *s, const char *key, uint64_t expires_usec, char **ret_url,
                        MsError *e);
    /* Optional, for stores where making each object durable on its own is expensive (local:
     * an fsync of the file and of its directory per object): open_write_unsynced commits
     * atomically like open_write but leaves durability to a later sync(), which makes every
     * object written that way durable at once (local: syncfs). A chunked snapshot writes
     * thousands of chunks, syncs once, and only then commits the index that names them. NULL:
     * open_write is already durable (S3: an object exists once its upload completed). */
    int (*open_write_unsynced)(MsStorage *s, const char *key, MsSink **ret, MsError *e);
    int (*sync)(MsStorage *s, MsError *e);
} MsStorageOps;

struct MsStorage {
    const MsStorageOps *ops;
};

/* A store rooted at an existing directory. */
int ms_storage_local_new(const char *root, MsStorage **ret, MsError *e);

/* An S3 (or S3-compatible) store; the location syntax is described in storage-s3.c. */
int ms_storage_s3_new(const char *location, MsStorage **ret, MsError *e);

/* Open a store from a location string: "/abs/path", "file:///abs/path", "s3://bucket/...". */
int ms_storage_open(const char *location, MsStorage **ret, MsError *e);

bool ms_storage_key_is_valid(const char *key);

static inline int ms_storage_open_write(MsStorage *s, const char *key, MsSink **ret, MsError *e) {
    return s->ops->open_write(s, key, ret, e);
}
static inline int ms_storage_open_read(MsStorage *s, const char *key, MsSource **ret, MsError *e) {
    return s->ops->open_read(s, key, ret, e);
}
static inline int ms_storage_stat(MsStorage *s, const char *key, MsStorageObject *ret, MsError *e) {
    return s->ops->stat(s, key, ret, e);
}
static inline int ms_storage_remove(MsStorage *s, const char *key, MsError *e) {
    return s->ops->remove(s, key, e);
}
static inline int ms_storage_list(MsStorage *s, const char *prefix, MsStorageObject **ret,
                                  size_t *ret_n, MsError *e) {
    return s->ops->list(s, prefix, ret, ret_n, e);
}
static inline const char *ms_storage_describe(MsStorage *s) {
    return s->ops->describe(s);
}
static inline int ms_storage_open_write_unsynced(MsStorage *s, const char *key, MsSink **ret,
                                                 MsError *e) {
    return s->ops->open_write_unsynced ? s->ops->open_write_unsynced(s, key, ret, e)
                                       : s->ops->open_write(s, key, ret, e);
}
static inline int ms_storage_sync(MsStorage *s, MsError *e) {
    return s->ops->sync ? s->ops->sync(s, e) : 0;
}
/* -EOPNOTSUPP (with a message) for stores without download addresses. */
int ms_storage_download_url(MsStorage *s, const char *key, uint64_t expires_usec, char **ret_url,
                            MsError *e);
/* Write a whole small object (manifests) in one call. */
int ms_storage_put(MsStorage *s, const char *key, const void *buf, size_t len, MsError *e);
/* Read a whole small object, refusing more than max bytes. Result is NUL-terminated. */
int ms_storage_get(MsStorage *s, const char *key, size_t max, char **ret, size_t *ret_len,
                   MsError *e);

/* The objects directly in directory dir ("P/": not deeper) whose key ends with suffix (NULL:
 * any), as ms_storage_list() gives them. Free with ms_storage_objects_free(). */
int ms_storage_list_children(MsStorage *s, const char *dir, const char *suffix,
                             MsStorageObject **ret, size_t *ret_n, MsError *e);

void ms_storage_objects_free(MsStorageObject *objs, size_t n);
MsStorage *ms_storage_free(MsStorage *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MsStorage *, ms_storage_free);

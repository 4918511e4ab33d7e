/* Tests for the local storage driver: atomic commit, abort, listing, cleanup, symlink safety. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"
#include "storage/storage.h"
#include "test.h"

/* Larger than the driver's write buffer, so both the buffered and direct paths run. */
#define BIG_OBJECT_SIZE (3 * 1024 * 1024 + 17)

typedef struct TempDir {
    char path[64];
} TempDir;

static bool temp_dir_make(TempDir *t) {
    snprintf(t->path, sizeof(t->path), "/tmp/mongosnap-test-storage-XXXXXX");
    return mkdtemp(t->path) != NULL;
}

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    return remove(path);
}

static void temp_dir_remove(TempDir *t) {
    if (t->path[0] == '/')
        nftw(t->path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Number of entries in root/rel (excluding "." and ".."), -1 if it cannot be opened. */
static int count_entries(const char *root, const char *rel) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    DIR *d = opendir(p);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static bool path_exists(const char *root, const char *rel) {
    char p[512];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    return lstat(p, &sb) == 0;
}

static bool write_file(const char *root, const char *rel, const char *content) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    if (!f)
        return false;
    fputs(content, f);
    return fclose(f) == 0;
}

static void write_finish_visible(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    _cleanup_free_ uint8_t *data = malloc(BIG_OBJECT_SIZE);
    ASSERT(data);
    for (size_t i = 0; i < BIG_OBJECT_SIZE; i++)
        data[i] = (uint8_t) (i * 31 + (i >> 12));

    _cleanup_(ms_sink_freep) MsSink *sink = NULL;
    ASSERT_OK(ms_storage_open_write(s, "nightly/node1/snap.archive", &sink, &e));
    /* Small pieces, then one larger than the buffer, then the rest. */
    size_t off = 0;
    for (int i = 0; i < 100; i++, off += 7)
        ASSERT_OK(ms_sink_write(sink, data + off, 7, &e));
    ASSERT_OK(ms_sink_write(sink, data + off, 2 * 1024 * 1024, &e));
    off += 2 * 1024 * 1024;
    ASSERT_OK(ms_sink_write(sink, data + off, BIG_OBJECT_SIZE - off, &e));
    ASSERT_OK(ms_sink_finish(sink, &e));
    sink = ms_sink_free(sink);

    MsStorageObject o;
    ASSERT_OK(ms_storage_stat(s, "nightly/node1/snap.archive", &o, &e));
    ASSERT_STREQ(o.key, "nightly/node1/snap.archive");
    ASSERT_EQ_INT(o.size, BIG_OBJECT_SIZE);
    ASSERT(o.mtime_usec > 0);
    free(o.key);

    _cleanup_(ms_source_freep) MsSource *src = NULL;
    ASSERT_OK(ms_storage_open_read(s, "nightly/node1/snap.archive", &src, &e));
    _cleanup_free_ uint8_t *back = malloc(BIG_OBJECT_SIZE);
    ASSERT(back);
    ASSERT_OK(ms_source_read_full(src, back, BIG_OBJECT_SIZE, &e));
    uint8_t extra;
    ASSERT_EQ_INT(ms_source_read(src, &extra, 1, &e), 0);
    ASSERT(memcmp(back, data, BIG_OBJECT_SIZE) == 0);

    /* Private to the backup user: nothing beyond rw-r----- whatever the umask. */
    struct stat sb;
    char p[512];
    snprintf(p, sizeof(p), "%s/nightly/node1/snap.archive", t.path);
    ASSERT(stat(p, &sb) == 0);
    ASSERT_EQ_INT(sb.st_mode & 07777 & ~0640, 0);

    /* Only the object in its directory: no temp left behind. */
    ASSERT_EQ_INT(count_entries(t.path, "nightly/node1"), 1);
    temp_dir_remove(&t);
}

static void put_get_and_size_limit(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    const char manifest[] = "{\"snapshot\": 1}";
    ASSERT_OK(ms_storage_put(s, "m/manifest.json", manifest, strlen(manifest), &e));
    _cleanup_free_ char *got = NULL;
    size_t len = 0;
    ASSERT_OK(ms_storage_get(s, "m/manifest.json", strlen(manifest), &got, &len, &e));
    ASSERT_EQ_INT(len, strlen(manifest));
    ASSERT_STREQ(got, manifest);

    char *big = NULL;
    ASSERT_EQ_INT(ms_storage_get(s, "m/manifest.json", strlen(manifest) - 1, &big, &len, &e),
                  -EFBIG);
    ASSERT(big == NULL);
    ASSERT_CONTAINS(e.message, "m/manifest.json");
    ms_error_clear(&e);

    /* Replacing an object swaps the content; an empty object is fine. */
    ASSERT_OK(ms_storage_put(s, "m/manifest.json", "", 0, &e));
    free(got);
    got = NULL;
    ASSERT_OK(ms_storage_get(s, "m/manifest.json", 0, &got, &len, &e));
    ASSERT_EQ_INT(len, 0);
    ASSERT_STREQ(got, "");
    temp_dir_remove(&t);
}

static void free_without_finish_leaves_nothing(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    MsSink *sink = NULL;
    ASSERT_OK(ms_storage_open_write(s, "a/b/obj", &sink, &e));
    ASSERT_OK(ms_sink_write(sink, "partial", 7, &e));
    ASSERT_EQ_INT(count_entries(t.path, "a/b"), 1); /* the temp file exists meanwhile */
    ms_sink_free(sink);

    ASSERT_EQ_INT(count_entries(t.path, "a/b"), 0);
    MsStorageObject o;
    ASSERT_EQ_INT(ms_storage_stat(s, "a/b/obj", &o, &e), -ENOENT);
    temp_dir_remove(&t);
}

static void write_in_progress_is_invisible(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    ASSERT_OK(ms_storage_put(s, "x/old", "old", 3, &e));

    _cleanup_(ms_sink_freep) MsSink *fresh = NULL, *replace = NULL;
    ASSERT_OK(ms_storage_open_write(s, "x/new", &fresh, &e));
    ASSERT_OK(ms_storage_open_write(s, "x/old", &replace, &e));
    ASSERT_OK(ms_sink_write(fresh, "new", 3, &e));
    ASSERT_OK(ms_sink_write(replace, "replaced", 8, &e));

    MsSource *src = NULL;
    ASSERT_EQ_INT(ms_storage_open_read(s, "x/new", &src, &e), -ENOENT);
    ms_error_clear(&e);
    MsStorageObject *objs = NULL;
    size_t n = 0;
    ASSERT_OK(ms_storage_list(s, "", &objs, &n, &e));
    ASSERT_EQ_INT(n, 1);
    ASSERT_STREQ(objs[0].key, "x/old");
    ms_storage_objects_free(objs, n);
    _cleanup_free_ char *got = NULL;
    ASSERT_OK(ms_storage_get(s, "x/old", 100, &got, NULL, &e));
    ASSERT_STREQ(got, "old");

    ASSERT_OK(ms_sink_finish(fresh, &e));
    ASSERT_OK(ms_sink_finish(replace, &e));
    ASSERT_OK(ms_storage_list(s, "x/", &objs, &n, &e));
    ASSERT_EQ_INT(n, 2);
    ms_storage_objects_free(objs, n);
    free(got);
    got = NULL;
    ASSERT_OK(ms_storage_get(s, "x/old", 100, &got, NULL, &e));
    ASSERT_STREQ(got, "replaced");
    /* Writing after finish is a caller bug, reported rather than silently lost. */
    ASSERT(ms_sink_write(fresh, "more", 4, &e) < 0);
    temp_dir_remove(&t);
}

static void invalid_keys_refused(void) {
    static const char *const invalid[] = {
        "", "../x", "/abs", "a//b", "a/./b", ".tmp-x", "a/.tmp-y", "a/", "a/..", ".", "a\nb",
    };
    static const char *const valid[] = {
        "x", "a/b/c.archive.zst", ".hidden", "a/..b", "a/b..", "tmp-x", "a/.tmp",
    };
    for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
        if (ms_storage_key_is_valid(invalid[i]))
            fprintf(stderr, "# accepted invalid key \"%s\"\n", invalid[i]);
        ASSERT(!ms_storage_key_is_valid(invalid[i]));
    }
    for (size_t i = 0; i < ELEMENTSOF(valid); i++)
        ASSERT(ms_storage_key_is_valid(valid[i]));
    ASSERT(!ms_storage_key_is_valid(NULL));

    char longkey[2048];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    ASSERT(!ms_storage_key_is_valid(longkey));
    memset(longkey, 'k', 300); /* one component longer than a file name may be */
    longkey[300] = '\0';
    ASSERT(!ms_storage_key_is_valid(longkey));

    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));
    for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
        MsSink *sink = NULL;
        MsSource *src = NULL;
        ms_error_clear(&e);
        ASSERT_EQ_INT(ms_storage_open_write(s, invalid[i], &sink, &e), -EINVAL);
        ASSERT(sink == NULL);
        ASSERT_CONTAINS(e.message, "invalid object key");
        ASSERT_EQ_INT(ms_storage_open_read(s, invalid[i], &src, &e), -EINVAL);
        ASSERT_EQ_INT(ms_storage_remove(s, invalid[i], &e), -EINVAL);
    }
    MsStorageObject *objs = NULL;
    size_t n = 0;
    ASSERT_EQ_INT(ms_storage_list(s, "../", &objs, &n, &e), -EINVAL);
    ASSERT_EQ_INT(ms_storage_list(s, "/etc", &objs, &n, &e), -EINVAL);
    /* Nothing was created anywhere. */
    ASSERT_EQ_INT(count_entries(t.path, ""), 0);
    temp_dir_remove(&t);
}

static void list_under_prefix_sorted(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    static const char *const keys[] = {"b/2", "a/2", "a/10", "ab", "a/1", "c/x/y", "a/sub/z"};
    for (size_t i = 0; i < ELEMENTSOF(keys); i++)
        ASSERT_OK(ms_storage_put(s, keys[i], keys[i], strlen(keys[i]), &e));
    /* Things that are not objects: a temp, a file with an unusable name, a FIFO. */
    ASSERT(write_file(t.path, "a/.tmp-3-0123456789abcdef", "tmp"));
    ASSERT(write_file(t.path, "a/bad\nname", "bad"));
    char fifo[512];
    snprintf(fifo, sizeof(fifo), "%s/a/fifo", t.path);
    ASSERT(mkfifo(fifo, 0600) == 0);

    MsStorageObject *objs = NULL;
    size_t n = 0;
    ASSERT_OK(ms_storage_list(s, "a/", &objs, &n, &e));
    ASSERT_EQ_INT(n, 4);
    ASSERT_STREQ(objs[0].key, "a/1");
    ASSERT_STREQ(objs[1].key, "a/10");
    ASSERT_STREQ(objs[2].key, "a/2");
    ASSERT_STREQ(objs[3].key, "a/sub/z");
    ASSERT_EQ_INT(objs[0].size, 3);
    ms_storage_objects_free(objs, n);

    /* A prefix is a string prefix, not a directory. */
    ASSERT_OK(ms_storage_list(s, "a", &objs, &n, &e));
    ASSERT_EQ_INT(n, 5);
    ASSERT_STREQ(objs[4].key, "ab");
    ms_storage_objects_free(objs, n);

    ASSERT_OK(ms_storage_list(s, "a/1", &objs, &n, &e));
    ASSERT_EQ_INT(n, 2);
    ms_storage_objects_free(objs, n);

    ASSERT_OK(ms_storage_list(s, "", &objs, &n, &e));
    ASSERT_EQ_INT(n, ELEMENTSOF(keys));
    for (size_t i = 1; i < n; i++)
        ASSERT(strcmp(objs[i - 1].key, objs[i].key) < 0);
    ASSERT_STREQ(objs[n - 1].key, "c/x/y");
    ms_storage_objects_free(objs, n);

    /* The FIFO is refused when asked for by name, and the open does not hang. */
    MsSource *src = NULL;
    ASSERT_EQ_INT(ms_storage_open_read(s, "a/fifo", &src, &e), -EINVAL);
    ASSERT(src == NULL);
    ms_error_clear(&e);

    ASSERT_OK(ms_storage_list(s, "nothing/here/", &objs, &n, &e));
    ASSERT_EQ_INT(n, 0);
    ms_storage_objects_free(objs, n);
    temp_dir_remove(&t);
}

static void remove_objects(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    ASSERT_OK(ms_storage_put(s, "p/q/one", "1", 1, &e));
    ASSERT_OK(ms_storage_put(s, "p/two", "2", 1, &e));
    ASSERT_OK(ms_storage_remove(s, "p/q/one", &e));
    MsStorageObject o;
    ASSERT_EQ_INT(ms_storage_stat(s, "p/q/one", &o, &e), -ENOENT);
    ms_error_clear(&e);
    /* The emptied directory went, the one still holding an object stayed. */
    ASSERT(!path_exists(t.path, "p/q"));
    ASSERT(path_exists(t.path, "p/two"));

    /* Missing objects, missing directories, and a prefix directory are not errors. */
    ASSERT_OK(ms_storage_remove(s, "p/q/one", &e));
    ASSERT_OK(ms_storage_remove(s, "no/such/dir/x", &e));
    ASSERT_OK(ms_storage_remove(s, "p", &e));
    ASSERT(path_exists(t.path, "p/two"));

    ASSERT_OK(ms_storage_remove(s, "p/two", &e));
    ASSERT_EQ_INT(count_entries(t.path, ""), 0);
    temp_dir_remove(&t);
}

static void clean_stale_removes_temps(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    ASSERT_OK(ms_storage_put(s, "n1/keep", "k", 1, &e));
    ASSERT_OK(ms_storage_put(s, "n1/deep/keep", "k", 1, &e));
    ASSERT_OK(ms_storage_put(s, "n2/keep", "k", 1, &e));
    /* Leftovers of writers that were killed. */
    ASSERT(write_file(t.path, "n1/.tmp-snap-0000000000000001", "x"));
    ASSERT(write_file(t.path, "n1/deep/.tmp-snap-0000000000000002", "x"));
    ASSERT(write_file(t.path, "n2/.tmp-snap-0000000000000003", "x"));

    unsigned removed = 0;
    ASSERT_OK(s->ops->clean_stale(s, "n1/", NULL, &removed, &e));
    ASSERT_EQ_INT(removed, 2);
    ASSERT_EQ_INT(count_entries(t.path, "n1"), 2); /* keep + deep */
    ASSERT_EQ_INT(count_entries(t.path, "n1/deep"), 1);
    ASSERT_EQ_INT(count_entries(t.path, "n2"), 2);

    ASSERT_OK(s->ops->clean_stale(s, "", NULL, &removed, &e));
    ASSERT_EQ_INT(removed, 1);
    ASSERT_EQ_INT(count_entries(t.path, "n2"), 1);

    MsStorageObject *objs = NULL;
    size_t n = 0;
    ASSERT_OK(ms_storage_list(s, "", &objs, &n, &e));
    ASSERT_EQ_INT(n, 3);
    ms_storage_objects_free(objs, n);
    temp_dir_remove(&t);
}

static void missing_object_is_enoent(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    MsSource *src = NULL;
    ASSERT_EQ_INT(ms_storage_open_read(s, "nightly/missing.archive", &src, &e), -ENOENT);
    ASSERT(src == NULL);
    ASSERT_EQ_INT(e.code, ENOENT);
    ASSERT_CONTAINS(e.message, "'nightly/missing.archive'");
    ASSERT_CONTAINS(e.message, t.path);

    /* The directory exists but not the file; and a directory is not an object. */
    ASSERT_OK(ms_storage_put(s, "nightly/sub/x", "x", 1, &e));
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open_read(s, "nightly/missing.archive", &src, &e), -ENOENT);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open_read(s, "nightly/sub", &src, &e), -ENOENT);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open_read(s, "nightly/sub/x/y", &src, &e), -ENOENT);
    temp_dir_remove(&t);
}

static void symlinks_not_followed(void) {
    TempDir t, outside;
    ASSERT(temp_dir_make(&t));
    ASSERT(temp_dir_make(&outside));
    ASSERT(write_file(outside.path, "secret", "secret"));
    char link[512], target[512];
    snprintf(link, sizeof(link), "%s/link", t.path);
    ASSERT(symlink(outside.path, link) == 0);
    snprintf(link, sizeof(link), "%s/flink", t.path);
    snprintf(target, sizeof(target), "%s/secret", outside.path);
    ASSERT(symlink(target, link) == 0);

    _cleanup_(ms_storage_freep) MsStorage *s = NULL;
    MsError e = MS_ERROR_INIT;
    ASSERT_OK(ms_storage_local_new(t.path, &s, &e));

    MsSource *src = NULL;
    ASSERT(ms_storage_open_read(s, "link/secret", &src, &e) < 0);
    ASSERT(src == NULL);
    ASSERT_CONTAINS(e.message, "symbolic link");
    ms_error_clear(&e);
    ASSERT(ms_storage_open_read(s, "flink", &src, &e) < 0);
    ASSERT(src == NULL);
    ms_error_clear(&e);
    MsStorageObject o;
    ASSERT(ms_storage_stat(s, "flink", &o, &e) < 0);
    ms_error_clear(&e);

    MsSink *sink = NULL;
    ASSERT(ms_storage_open_write(s, "link/planted", &sink, &e) < 0);
    ASSERT(sink == NULL);
    ASSERT_CONTAINS(e.message, "link/planted");
    ms_error_clear(&e);
    ASSERT(!path_exists(outside.path, "planted"));

    /* Removing through the link must not touch the target. */
    ms_storage_remove(s, "link/secret", &e);
    ms_error_clear(&e);
    ASSERT(path_exists(outside.path, "secret"));

    MsStorageObject *objs = NULL;
    size_t n = 0;
    ASSERT_OK(ms_storage_list(s, "", &objs, &n, &e));
    ASSERT_EQ_INT(n, 0);
    ms_storage_objects_free(objs, n);
    /* Asking for what is behind the link explicitly is refused, with the reason. */
    ASSERT_EQ_INT(ms_storage_list(s, "link/", &objs, &n, &e), -ELOOP);
    ASSERT_CONTAINS(e.message, "symbolic link");
    ms_error_clear(&e);

    temp_dir_remove(&t);
    temp_dir_remove(&outside);
}

static void open_parses_locations(void) {
    TempDir t;
    ASSERT(temp_dir_make(&t));
    MsError e = MS_ERROR_INIT;
    char loc[512], want[512];
    snprintf(want, sizeof(want), "local:%s", t.path);

    MsStorage *s = NULL;
    ASSERT_OK(ms_storage_open(t.path, &s, &e));
    ASSERT_STREQ(ms_storage_describe(s), want);
    s = ms_storage_free(s);

    snprintf(loc, sizeof(loc), "%s/", t.path);
    ASSERT_OK(ms_storage_open(loc, &s, &e));
    ASSERT_STREQ(ms_storage_describe(s), want);
    s = ms_storage_free(s);

    snprintf(loc, sizeof(loc), "file://%s", t.path);
    ASSERT_OK(ms_storage_open(loc, &s, &e));
    ASSERT_STREQ(ms_storage_describe(s), want);
    ASSERT_STREQ(s->ops->name, "local");
    s = ms_storage_free(s);

    snprintf(loc, sizeof(loc), "file://localhost%s", t.path);
    ASSERT_OK(ms_storage_open(loc, &s, &e));
    s = ms_storage_free(s);

    /* s3:// goes to the S3 driver (tested in test-s3-*), which refuses keys in the location
     * without repeating them. */
    ASSERT_EQ_INT(ms_storage_open("s3://AKIDEXAMPLE:wJalrXUtnFEMIK7MDENG@bucket/prefix", &s, &e),
                  -EINVAL);
    ASSERT(strstr(e.message, "wJalrXUtnFEMIK7MDENG") == NULL);
    ASSERT(strstr(e.message, "AKIDEXAMPLE") == NULL);
    ASSERT(s == NULL);
    ms_error_clear(&e);

    ASSERT_EQ_INT(ms_storage_open("ftp://host/x", &s, &e), -EPROTONOSUPPORT);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open("relative/dir", &s, &e), -EINVAL);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open("file://otherhost/srv", &s, &e), -EINVAL);
    ms_error_clear(&e);
    ASSERT_EQ_INT(ms_storage_open("", &s, &e), -EINVAL);
    ms_error_clear(&e);

    snprintf(loc, sizeof(loc), "%s/does-not-exist", t.path);
    ASSERT_EQ_INT(ms_storage_open(loc, &s, &e), -ENOENT);
    ASSERT_CONTAINS(e.message, loc);
    ms_error_clear(&e);

    ASSERT(write_file(t.path, "plain-file", ""));
    snprintf(loc, sizeof(loc), "%s/plain-file", t.path);
    ASSERT_EQ_INT(ms_storage_open(loc, &s, &e), -ENOTDIR);
    ASSERT_CONTAINS(e.message, "not a directory");
    ms_error_clear(&e);
    temp_dir_remove(&t);
}

MS_TEST_MAIN(TEST_CASE(write_finish_visible), TEST_CASE(put_get_and_size_limit),
             TEST_CASE(free_without_finish_leaves_nothing),
             TEST_CASE(write_in_progress_is_invisible), TEST_CASE(invalid_keys_refused),
             TEST_CASE(list_under_prefix_sorted), TEST_CASE(remove_objects),
             TEST_CASE(clean_stale_removes_temps), TEST_CASE(missing_object_is_enoent),
             TEST_CASE(symlinks_not_followed), TEST_CASE(open_parses_locations))

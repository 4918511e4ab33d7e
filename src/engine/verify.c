/* Verify: read every byte of a snapshot through the same checks a restore makes. */
#include "verify.h"

#include <errno.h>
#include <string.h>

#include "archive/archive.h"
#include "snapshot-source.h"

#define VERIFY_PROGRESS_INTERVAL_MS 500u

int ms_verify_run(const MsVerifyOptions *o, MsVerifyResult *ret, MsError *e) {
    MsProgress *p = o->progress;
    MsSnapshotSource src = {0};
    int r = o->archive_path
                ? ms_snapshot_source_open_file(o->archive_path, o->manifest_path, o->key, &src, e)
                : ms_snapshot_source_open_store(o->storage, o->snapshot_key, o->key, &src, e);
    if (r == -ENOKEY && !o->archive_path && e) {
        /* Encrypted and no key given: still check what can be checked without it, the stored
         * bytes against the manifest's size and SHA-256. Damage is damage (exit 3); intact
         * bytes still leave the contents unchecked, which the caller is told. */
        MsError raw_error = MS_ERROR_INIT;
        ms_progress_set_phase(p, "verify");
        int k = ms_snapshot_source_check_stored_only(o->storage, o->snapshot_key, NULL, &raw_error);
        if (k < 0 && k != -ENOKEY) {
            ms_error_clear(e);
            *e = raw_error;
            return k;
        }
        static const char note[] = "; its stored bytes match the manifest's size and SHA-256, "
                                   "but its contents cannot be checked without the key";
        size_t len = strlen(e->message);
        if (k == 0 && len + sizeof(note) <= sizeof(e->message))
            memcpy(e->message + len, note, sizeof(note));
        return r;
    }
    if (r < 0)
        return r;
    MsVerifyResult res = {.checked_against_manifest = src.has_manifest};
    if (src.has_manifest)
        ms_progress_add_total(p, src.manifest.total_documents + src.manifest.oplog_entries);
    ms_progress_set_phase(p, "verify");
    ms_progress_start_ticker(p, VERIFY_PROGRESS_INTERVAL_MS);

    const MsArchiveHeader *header;
    const MsArchiveCollection *colls = NULL;
    size_t n_colls = 0, n_data = 0;
    r = ms_archive_reader_read_prelude(src.reader, &header, &colls, &n_colls, e);
    if (r < 0)
        ms_error_prefix(e, "%s: ", src.archive_name);
    for (size_t i = 0; r == 0 && i < n_colls; i++)
        n_data += !(ms_archive_is_oplog(colls[i].db, colls[i].collection));
    /* An oplog slice's manifest lists its oplog namespace too (with its CRC): not data. */
    size_t n_listed = 0;
    for (size_t i = 0; src.has_manifest && i < src.manifest.n_namespaces; i++)
        n_listed += !ms_archive_is_oplog(src.manifest.namespaces[i].db,
                                         src.manifest.namespaces[i].collection);
    if (r == 0 && src.has_manifest && n_data != n_listed)
        r = ms_error_set(e, EBADMSG, "%s lists %zu namespaces but its manifest %zu",
                         src.archive_name, n_data, n_listed);
    while (r == 0) {
        MsArchiveEvent ev;
        r = ms_archive_reader_next(src.reader, &ev, e);
        if (r < 0) {
            ms_error_prefix(e, "%s: ", src.archive_name);
            break;
        }
        if (ev.kind == MS_ARCHIVE_EVENT_END)
            break;
        if (ev.kind == MS_ARCHIVE_EVENT_DOCUMENT) {
            ms_progress_add_items(p, 1, ev.len);
            if (ms_archive_is_oplog(ev.db, ev.collection))
                res.oplog_entries++;
            else
                res.documents++;
        }
        if (o->cancel && *o->cancel)
            r = ms_error_set(e, ECANCELED, "verification was stopped");
    }
    if (r == 0)
        r = ms_snapshot_source_check_stored(&src, e);
    if (r == 0)
        r = ms_snapshot_source_check_namespaces(&src, e);
    if (r == 0) {
        res.namespaces = n_data;
        res.stored_bytes = src.chain->stored_bytes;
        res.uncompressed_bytes = ms_archive_reader_offset(src.reader);
        ms_progress_mark_completed(p);
        ms_progress_set_phase(p, "done");
        *ret = res;
    }
    ms_progress_stop_ticker(p);
    ms_progress_report(p);
    ms_snapshot_source_close(&src);
    return r;
}

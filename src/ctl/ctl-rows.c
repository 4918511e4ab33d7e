/* mongosnapctl's readers of the list methods' rows (the row types of docs/dbus-api.md). */
#include <errno.h>
#include <stdlib.h>

#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* Read an array of rows of signature row_sig, each by read_row into an element of size elem;
 * the strings point into m. */
static int read_rows(sd_bus_message *m, const char *row_sig, size_t elem,
                     int (*read_row)(sd_bus_message *m, void *row), void **ret, size_t *ret_n) {
    _cleanup_free_ char *rows = NULL;
    size_t n = 0;
    int r = sd_bus_message_enter_container(m, 'a', row_sig);
    while (r >= 0) {
        char *grown = realloc(rows, (n + 1) * elem);
        if (!grown)
            return -ENOMEM;
        rows = grown;
        r = read_row(m, rows + n * elem);
        if (r <= 0)
            break;
        n++;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(rows);
    *ret_n = n;
    return 0;
}

static int read_policy_row(sd_bus_message *m, void *row) {
    CtlPolicyRow *x = row;
    return sd_bus_message_read(m, MONGOSNAP_POLICY_ROW, &x->name, &x->path, &x->state, &x->source,
                               &x->schedule, &x->store, &x->last_run, &x->last_result, &x->next_run,
                               &x->problem);
}

static int read_snapshot_row(sd_bus_message *m, void *row) {
    CtlSnapshotRow *x = row;
    return sd_bus_message_read(
        m, MONGOSNAP_SNAPSHOT_ROW, &x->id, &x->policy, &x->node, &x->file_name,
        &x->download_address, &x->task_log, &x->elapsed_usec, &x->items, &x->items_total,
        &x->progress, &x->create_time, &x->expire_time, &x->bytes, &x->state, &x->error, &x->path,
        &x->verify_state, &x->seq, &x->origin, &x->kept_by, &x->expire_projected, &x->future_dated);
}

static int read_restore_row(sd_bus_message *m, void *row) {
    CtlRestoreRow *x = row;
    return sd_bus_message_read(m, MONGOSNAP_RESTORE_ROW, &x->id, &x->snapshot, &x->target,
                               &x->task_log, &x->elapsed_usec, &x->items, &x->items_total,
                               &x->progress, &x->create_time, &x->state, &x->error, &x->path,
                               &x->node);
}

int ctl_read_policy_rows(sd_bus_message *m, CtlPolicyRow **ret, size_t *ret_n) {
    return read_rows(m, MONGOSNAP_POLICY_ROW, sizeof(CtlPolicyRow), read_policy_row, (void **) ret,
                     ret_n);
}

int ctl_read_snapshot_rows(sd_bus_message *m, CtlSnapshotRow **ret, size_t *ret_n) {
    return read_rows(m, MONGOSNAP_SNAPSHOT_ROW, sizeof(CtlSnapshotRow), read_snapshot_row,
                     (void **) ret, ret_n);
}

int ctl_read_restore_rows(sd_bus_message *m, CtlRestoreRow **ret, size_t *ret_n) {
    return read_rows(m, MONGOSNAP_RESTORE_ROW, sizeof(CtlRestoreRow), read_restore_row,
                     (void **) ret, ret_n);
}

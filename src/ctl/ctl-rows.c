/* mongosnapctl's readers of the list methods' rows (the row types of docs/dbus-api.md). */
#include <errno.h>
#include <stdlib.h>

#include "ctl.h"

#define POLICY_ROW "(sosssstst)"
#define SNAPSHOT_ROW "(sssssstttdtttsso)"
#define RESTORE_ROW "(sssstttdtsso)"

/* Room for one more element of size elem in *array holding n. */
static int grow(void **array, size_t n, size_t elem) {
    void *p = realloc(*array, (n + 1) * elem);
    if (!p)
        return -ENOMEM;
    *array = p;
    return 0;
}

int ctl_read_policy_rows(sd_bus_message *m, CtlPolicyRow **ret, size_t *ret_n) {
    _cleanup_free_ CtlPolicyRow *rows = NULL;
    size_t n = 0;
    int r = sd_bus_message_enter_container(m, 'a', POLICY_ROW);
    while (r >= 0) {
        CtlPolicyRow x;
        r = sd_bus_message_read(m, POLICY_ROW, &x.name, &x.path, &x.state, &x.source, &x.schedule,
                                &x.store, &x.last_run, &x.last_result, &x.next_run);
        if (r <= 0)
            break;
        r = grow((void **) &rows, n, sizeof(x));
        if (r >= 0)
            rows[n++] = x;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(rows);
    *ret_n = n;
    return 0;
}

int ctl_read_snapshot_rows(sd_bus_message *m, CtlSnapshotRow **ret, size_t *ret_n) {
    _cleanup_free_ CtlSnapshotRow *rows = NULL;
    size_t n = 0;
    int r = sd_bus_message_enter_container(m, 'a', SNAPSHOT_ROW);
    while (r >= 0) {
        CtlSnapshotRow x;
        r = sd_bus_message_read(m, SNAPSHOT_ROW, &x.id, &x.policy, &x.node, &x.file_name,
                                &x.download_address, &x.task_log, &x.elapsed_usec, &x.items,
                                &x.items_total, &x.progress, &x.create_time, &x.expire_time,
                                &x.bytes, &x.state, &x.error, &x.path);
        if (r <= 0)
            break;
        r = grow((void **) &rows, n, sizeof(x));
        if (r >= 0)
            rows[n++] = x;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(rows);
    *ret_n = n;
    return 0;
}

int ctl_read_restore_rows(sd_bus_message *m, CtlRestoreRow **ret, size_t *ret_n) {
    _cleanup_free_ CtlRestoreRow *rows = NULL;
    size_t n = 0;
    int r = sd_bus_message_enter_container(m, 'a', RESTORE_ROW);
    while (r >= 0) {
        CtlRestoreRow x;
        r = sd_bus_message_read(m, RESTORE_ROW, &x.id, &x.snapshot, &x.target, &x.task_log,
                                &x.elapsed_usec, &x.items, &x.items_total, &x.progress,
                                &x.create_time, &x.state, &x.error, &x.path);
        if (r <= 0)
            break;
        r = grow((void **) &rows, n, sizeof(x));
        if (r >= 0)
            rows[n++] = x;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(m);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(rows);
    *ret_n = n;
    return 0;
}

/* Removals from remote stores (Delete, retention, purge): queued and carried out one at a time
 * by `mongosnap-worker remove`, so that S3 round trips and retries never block the event loop. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-remover.h"
#include "common/log.h"
#include "eventlog/eventlog.h"
#include "mongosnap/mongosnap.h"

#define REMOVE_KEYS_MAX 2 /* a snapshot's manifest, then its archive */
#define REMOVE_ATTEMPTS 3 /* workers per removal that end without a result, before giving up */

typedef struct Removal {
    char *snapshot_id;
    char *store;
    char *keys[REMOVE_KEYS_MAX];
    size_t n_keys;
    char *why;
    char *policy;      /* an orphan's: the policy its key names ("" if none) */
    bool orphan;       /* an archive without a manifest, not a snapshot: no record changes */
    /* A chunked snapshot leaves its chunks behind: the worker then collects the policy's chunk
     * area (remove --gc), with the policy's key for encrypted indexes. */
    char *gc_prefix;
    char *key_path;
    /* what the collection did, from the worker's result ("gc"): for the Event Log */
    bool gc_reported, gc_skipped;
    uint64_t gc_removed, gc_removed_bytes;
    char *gc_error;
    uint64_t removed;  /* keys the worker reported removed */
    bool reported;     /* the worker sent its result (else: killed, or crashed) */
    unsigned attempts; /* workers started for it */
} Removal;

static Removal *removal_free(Removal *x) {
    if (!x)
        return NULL;
    free(x->snapshot_id);
    free(x->store);
    for (size_t i = 0; i < x->n_keys; i++)
        free(x->keys[i]);
    free(x->why);
    free(x->policy);
    free(x->gc_prefix);
    free(x->key_path);
    free(x->gc_error);
    free(x);
    return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Removal *, removal_free);

static bool remover_busy(const Manager *m) {
    return m->n_removals > 0;
}

bool remover_has(const Manager *m, const char *snapshot_id) {
    for (size_t i = 0; i < m->n_removals; i++)
        if (strcmp(m->removals[i]->snapshot_id, snapshot_id) == 0)
            return true;
    return false;
}

static bool remover_has_key(const Manager *m, const char *store, const char *key) {
    for (size_t i = 0; i < m->n_removals; i++)
        for (size_t k = 0; k < m->removals[i]->n_keys; k++)
            if (strcmp(m->removals[i]->store, store) == 0 &&
                strcmp(m->removals[i]->keys[k], key) == 0)
                return true;
    return false;
}

static void remover_start_next(Manager *m);

static void pop_head(Manager *m) {
    removal_free(m->removals[0]);
    memmove(m->removals, m->removals + 1, (m->n_removals - 1) * sizeof(*m->removals));
    m->n_removals--;
    agent_job_reset(&m->remover);
}

static void remover_job_message(AgentJob *j, const bson_t *msg) {
    Manager *m = MS_CONTAINER_OF(j, Manager, remover);
    const char *event = ms_bson_str(msg, "event");
    if (!event || strcmp(event, MONGOSNAP_PROGRESS_EVENT_RESULT) != 0 || m->n_removals == 0)
        return;
    Removal *x = m->removals[0];
    x->reported = true;
    /* How far the worker got through the keys, in order (present or not): "processed". */
    x->removed = ms_bson_u64(msg, "processed");
    bson_iter_t it, gc;
    if (bson_iter_init_find(&it, msg, "gc") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &gc)) {
        x->gc_reported = true;
        while (bson_iter_next(&gc)) {
            const char *k = bson_iter_key(&gc);
            if (strcmp(k, "skipped") == 0 && BSON_ITER_HOLDS_BOOL(&gc))
                x->gc_skipped = bson_iter_bool(&gc);
            else if (strcmp(k, "removed") == 0 && BSON_ITER_HOLDS_NUMBER(&gc))
                x->gc_removed = (uint64_t) bson_iter_as_int64(&gc);
            else if (strcmp(k, "removed_bytes") == 0 && BSON_ITER_HOLDS_NUMBER(&gc))
                x->gc_removed_bytes = (uint64_t) bson_iter_as_int64(&gc);
        }
    }
    const char *gc_error = ms_bson_str(msg, "gc_error");
    if (gc_error && !x->gc_error)
        x->gc_error = strdup(gc_error);
}

static void remover_job_end(AgentJob *j, const AgentJobEnd *end) {
    Manager *m = MS_CONTAINER_OF(j, Manager, remover);
    Removal *x = m->removals[0];
    MsSnapshotRecord *r = x->orphan ? NULL : manager_snapshot_mutable(m, x->snapshot_id);
    bool ok = end->outcome == AGENT_JOB_SUCCEEDED;
    const char *reason = end->reason;

    if (!ok && !x->reported) {
        /* Killed or crashed before it said how far it got: the manifest may be gone already,
         * so the snapshot can no longer be listed completed. The record keeps its removal state
         * and the removal is tried again (removing what is gone already is not an error), a
         * few times now, and at the next start if the agent is stopping. */
        log_warning("the removal of %s from %s ended without a result (%s)%s", x->snapshot_id,
                    x->store, reason,
                    x->attempts < REMOVE_ATTEMPTS && !m->stopping ? "; trying again" : "");
        agent_job_reset(&m->remover);
        if (x->attempts < REMOVE_ATTEMPTS && !m->stopping) {
            remover_start_next(m);
            return;
        }
        pop_head(m);
        remover_start_next(m);
        manager_maybe_finish_shutdown(m);
        return;
    }
    MsEventFields of = {.policy = x->policy && *x->policy ? x->policy : NULL,
                        .task = x->snapshot_id,
                        .node = m->config->node};
    if (x->orphan && ok) {
        char why[MS_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof(why), "%s in %s: %s", x->keys[0], x->store, x->why);
        of.error = why;
        (void) ms_event_log(MS_EVENT_ORPHAN_REMOVED, &of,
                            "archive %s of snapshot %s had no manifest and was removed from %s: "
                            "%s",
                            x->keys[0], x->snapshot_id, x->store, x->why);
    } else if (x->orphan) {
        of.error = reason;
        (void) ms_event_log(MS_EVENT_TASK_FAILED, &of,
                            "removing archive %s (no manifest) from %s failed: %s; the next "
                            "start or resync tries again",
                            x->keys[0], x->store, reason);
    } else if (r && ok && x->gc_prefix) {
        /* The snapshot's Event Log entry also says what collecting its chunks freed. */
        char why[MS_ERROR_MESSAGE_MAX];
        if (x->gc_error)
            snprintf(why, sizeof(why), "%s; collecting the chunk area failed (the next removal "
                     "tries again): %s", x->why, x->gc_error);
        else if (x->gc_skipped)
            snprintf(why, sizeof(why), "%s; the chunk area was not collected (a snapshot was being "
                     "taken; the next removal collects)", x->why);
        else if (x->gc_reported)
            snprintf(why, sizeof(why), "%s; collecting the chunk area freed %" PRIu64
                     " chunks (%" PRIu64 " bytes)", x->why, x->gc_removed, x->gc_removed_bytes);
        else
            snprintf(why, sizeof(why), "%s", x->why);
        manager_log_removed(m, r, why);
    } else if (r && ok) {
        manager_log_removed(m, r, x->why);
    } else if (r && x->removed == 0) {
        /* Nothing was removed: the snapshot is whole and stays listed as completed; retention
         * or the operator will try again. */
        manager_set_snapshot_state(m, r, MS_SNAPSHOT_COMPLETED);
        (void) ms_event_log(
            MS_EVENT_TASK_FAILED,
            &(MsEventFields){.policy = r->policy, .task = r->id, .node = r->node, .error = reason},
            "removing snapshot %s from %s failed, it is kept: %s", r->id, r->store, reason);
    } else if (r) {
        /* The manifest is gone, so the snapshot is no longer restorable; what is left is an
         * orphaned archive to remove by hand. */
        (void) ms_event_log(
            MS_EVENT_TASK_FAILED,
            &(MsEventFields){.policy = r->policy, .task = r->id, .node = r->node, .error = reason},
            "snapshot %s was removed only in part from %s (%" PRIu64
            " of %zu objects; %s left behind): %s",
            r->id, r->store, x->removed, x->n_keys, x->keys[x->n_keys - 1], reason);
    }
    pop_head(m);
    remover_start_next(m);
    manager_maybe_finish_shutdown(m);
}

static const AgentJobType remover_job_type = {
    .name = "removal",
    .on_message = remover_job_message,
    .on_end = remover_job_end,
};

static void remover_start_next(Manager *m) {
    while (m->n_removals > 0 && !m->remover.worker && !m->stopping) {
        Removal *x = m->removals[0];
        const char *args[4 + 2 * REMOVE_KEYS_MAX + 5 + 1];
        size_t k = 0;
        args[k++] = "remove";
        args[k++] = "--store";
        args[k++] = x->store;
        for (size_t i = 0; i < x->n_keys; i++) {
            args[k++] = "--key";
            args[k++] = x->keys[i];
        }
        if (x->gc_prefix) {
            args[k++] = "--gc";
            args[k++] = "--prefix";
            args[k++] = x->gc_prefix;
            if (x->key_path) {
                args[k++] = "--key-file";
                args[k++] = x->key_path;
            }
        }
        args[k] = NULL;
        AgentTaskSpec spec = {.worker_path = m->config->worker_path, .args = args};
        MsError e = MS_ERROR_INIT;
        x->attempts++;
        x->reported = false;
        if (agent_job_spawn(&m->remover, &remover_job_type, m->event, &spec, &e) >= 0)
            return;
        /* Not even started: nothing was removed. */
        MsSnapshotRecord *r = x->orphan ? NULL : manager_snapshot_mutable(m, x->snapshot_id);
        log_error("cannot start the removal of %s: %s", x->snapshot_id, e.message);
        if (r)
            manager_set_snapshot_state(m, r, MS_SNAPSHOT_COMPLETED);
        pop_head(m);
    }
}

/* Append *x to the queue (taking it) and start it if nothing runs. */
static int queue(Manager *m, Removal **x, MsError *e) {
    Removal **list = realloc(m->removals, (m->n_removals + 1) * sizeof(*list));
    if (!list)
        return oom(e);
    m->removals = list;
    m->removals[m->n_removals++] = TAKE_PTR(*x);
    remover_start_next(m);
    return 0;
}

static int remover_enqueue(Manager *m, const MsSnapshotRecord *r, const char *why, MsError *e) {
    if (remover_has(m, r->id))
        return ms_error_set(e, EALREADY, "snapshot %s is being removed already", r->id);
    _cleanup_(removal_freep) Removal *x = calloc(1, sizeof(*x));
    if (!x || !(x->snapshot_id = strdup(r->id)) || !(x->store = strdup(r->store)) ||
        !(x->why = strdup(why)))
        return oom(e);
    if (r->manifest_key && !(x->keys[x->n_keys++] = strdup(r->manifest_key)))
        return oom(e);
    if (r->archive_key && !(x->keys[x->n_keys++] = strdup(r->archive_key)))
        return oom(e);
    if (x->n_keys == 0)
        return ms_error_set(e, ENOENT, "snapshot %s has no objects to remove", r->id);
    size_t n = r->archive_key ? strlen(r->archive_key) : 0, sfx = strlen(MONGOSNAP_INDEX_SUFFIX);
    if (n > sfx && strcmp(r->archive_key + n - sfx, MONGOSNAP_INDEX_SUFFIX) == 0 && r->policy) {
        if (!(x->gc_prefix = strdup(r->policy)))
            return oom(e);
        /* Without the key (a policy gone, a credential missing) the collection of an encrypted
         * area fails and says so; the snapshot's removal does not depend on it. */
        ManagerPolicy *p = manager_find_policy(m, r->policy);
        MsError ke = MS_ERROR_INIT;
        if (p && p->settings->encryption_key &&
            manager_credential_path(p->settings->encryption_key, &x->key_path, &ke) < 0)
            log_warning("collecting the chunks of %s: %s", r->policy, ke.message);
    }
    return queue(m, &x, e);
}

int remover_enqueue_orphan(Manager *m, const char *store, const char *key, const char *snapshot_id,
                           const char *policy, const char *why, MsError *e) {
    if (remover_has_key(m, store, key))
        return 0; /* on its way already */
    _cleanup_(removal_freep) Removal *x = calloc(1, sizeof(*x));
    if (!x || !(x->snapshot_id = strdup(snapshot_id)) || !(x->store = strdup(store)) ||
        !(x->why = strdup(why)) || !(x->policy = strdup(policy ? policy : "")) ||
        !(x->keys[x->n_keys++] = strdup(key)))
        return oom(e);
    x->orphan = true;
    return queue(m, &x, e);
}

static void remover_stop(Manager *m) {
    /* Queued removals have not touched the store: their snapshots are whole again (an orphan
     * stays one, for the next start). */
    while (m->n_removals > (m->remover.worker ? 1u : 0u)) {
        Removal *x = m->removals[m->n_removals - 1];
        MsSnapshotRecord *r = x->orphan ? NULL : manager_snapshot_mutable(m, x->snapshot_id);
        if (r)
            manager_set_snapshot_state(m, r, MS_SNAPSHOT_COMPLETED);
        removal_free(x);
        m->n_removals--;
    }
    (void) agent_job_stop(&m->remover, INTERRUPTED_BY_SHUTDOWN, false, 0);
}

static void remover_free_all(Manager *m) {
    agent_job_reset(&m->remover);
    for (size_t i = 0; i < m->n_removals; i++)
        removal_free(m->removals[i]);
    free(m->removals);
    m->removals = NULL;
    m->n_removals = 0;
}

/* ---- as a part of the agent (agent-internal.h ManagerPart) ---- */

const ManagerPart remover_part = {
    .name = "removals",
    .busy = remover_busy,
    .uses_snapshot = remover_has,
    .remove_remote = remover_enqueue,
    .stop = remover_stop,
    .free_all = remover_free_all,
};

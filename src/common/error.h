/* MsError: a negative errno plus a message a person can act on, filled where the failure is
 * understood. */
#pragma once

#include <errno.h>

#include <stdarg.h>
#include <stdbool.h>

#include "macro.h"

#define MS_ERROR_MESSAGE_MAX 1024

/* What a failure means to the caller, set where the failure is understood: adapters map kinds
 * to their own names (D-Bus error names, exit codes) and never read a meaning into an errno
 * value, which lower layers reuse freely (EHOSTUNREACH is an unreachable S3 endpoint as well as
 * an unreachable cluster database; EPERM a refused file as well as a stopped policy). */
typedef enum MsErrorKind {
    MS_ERROR_KIND_NONE = 0,
    MS_ERROR_KIND_SNAPSHOT_DAMAGED,    /* its last verification failed: restore needs force */
    MS_ERROR_KIND_NEEDS_FORCE,         /* a destructive change that needs confirmation */
    MS_ERROR_KIND_CREDENTIAL_SCOPE,    /* a credential asked for outside what it is for */
    MS_ERROR_KIND_POLICY_STOPPED,      /* a run of a policy that is stopped */
    MS_ERROR_KIND_BUSY,                /* the object has a task that excludes this one */
    MS_ERROR_KIND_EXISTS,              /* a name that is taken */
    MS_ERROR_KIND_SHUTTING_DOWN,       /* the agent is stopping and takes no new task */
    MS_ERROR_KIND_NOT_CONFIGURED,      /* no store to act on */
    MS_ERROR_KIND_NOT_SUPPORTED,       /* a setting this build cannot act on */
    MS_ERROR_KIND_NOT_RUNNING,         /* cancel of a task that is not queued or running */
    MS_ERROR_KIND_NO_CREDENTIAL,       /* a credential the task needs is not available */
    MS_ERROR_KIND_NOT_RESTORABLE,      /* a snapshot that is not completed */
    MS_ERROR_KIND_CLUSTER_UNREACHABLE, /* the cluster database cannot be used */
    MS_ERROR_KIND_ON_OTHER_NODE,       /* another node's task this node cannot run */
    _MS_ERROR_KIND_MAX,
} MsErrorKind;

typedef struct MsError {
    int code; /* positive errno value, 0 when unset */
    char message[MS_ERROR_MESSAGE_MAX];
    MsErrorKind kind;
} MsError;

#define MS_ERROR_INIT                                                                              \
    { 0, {0}, MS_ERROR_KIND_NONE }

/* Fill *e (if non-NULL and not yet set) and return -code, so callers can write
 * "return ms_error_set(e, EINVAL, ...)". The first failure wins: wrappers higher
 * up the stack may add context with ms_error_prefix(). */
int ms_error_set(MsError *e, int code, const char *fmt, ...) _printf_(3, 4);
int ms_error_setv(MsError *e, int code, const char *fmt, va_list ap) _printf_(3, 0);
/* The same with a kind (the first failure's kind wins with it). */
int ms_error_set_kind(MsError *e, MsErrorKind kind, int code, const char *fmt, ...) _printf_(4, 5);

/* Prepend context ("restoring db.coll: ") to an already set message. */
void ms_error_prefix(MsError *e, const char *fmt, ...) _printf_(2, 3);

static inline bool ms_error_is_set(const MsError *e) {
    return e && e->code != 0;
}

void ms_error_clear(MsError *e);

/* Give an already set error its meaning, where a caller understands it better than the layer
 * that set it (a database call that failed is "the cluster database is unreachable" to the
 * agent's cluster module). An error that has a kind keeps it. */
static inline void ms_error_mark(MsError *e, MsErrorKind kind) {
    if (e && e->code != 0 && e->kind == MS_ERROR_KIND_NONE)
        e->kind = kind;
}

/* The one out-of-memory error every module reports. */
static inline int ms_error_oom(MsError *e) {
    return ms_error_set(e, ENOMEM, "out of memory");
}

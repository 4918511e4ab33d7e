/* MsError: a negative errno plus a message a person can act on, filled where the failure is understood. */
#pragma once

#include <errno.h>

#include <stdarg.h>
#include <stdbool.h>

#include "macro.h"

#define MS_ERROR_MESSAGE_MAX 1024

/* What a failure means to the caller, where errno would be ambiguous (EACCES is a refused
 * login, a permission or a credential used outside its scope): adapters map kinds to their
 * own names (D-Bus error names, exit codes) before falling back to the errno. */
typedef enum MsErrorKind {
    MS_ERROR_KIND_NONE = 0,
    MS_ERROR_KIND_SNAPSHOT_DAMAGED,  /* its last verification failed: restore needs force */
    MS_ERROR_KIND_NEEDS_FORCE,       /* a destructive change that needs confirmation */
    MS_ERROR_KIND_CREDENTIAL_SCOPE,  /* a credential asked for outside what it is for */
    _MS_ERROR_KIND_MAX,
} MsErrorKind;

typedef struct MsError {
    int code; /* positive errno value, 0 when unset */
    char message[MS_ERROR_MESSAGE_MAX];
    MsErrorKind kind;
} MsError;

#define MS_ERROR_INIT {0, {0}, MS_ERROR_KIND_NONE}

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

/* The one out-of-memory error every module reports. */
static inline int ms_error_oom(MsError *e) {
    return ms_error_set(e, ENOMEM, "out of memory");
}


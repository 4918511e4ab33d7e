/* MsError helpers. */
#include "error.h"

#include <stdio.h>
#include <string.h>

int ms_error_setv(MsError *e, int code, const char *fmt, va_list ap) {
    if (code <= 0)
        code = code < 0 ? -code : EIO;
    if (e && e->code == 0) {
        e->code = code;
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
    }
    return -code;
}

int ms_error_set(MsError *e, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = ms_error_setv(e, code, fmt, ap);
    va_end(ap);
    return r;
}

int ms_error_set_kind(MsError *e, MsErrorKind kind, int code, const char *fmt, ...) {
    bool first = e && e->code == 0;
    va_list ap;
    va_start(ap, fmt);
    int r = ms_error_setv(e, code, fmt, ap);
    va_end(ap);
    if (first)
        e->kind = kind;
    return r;
}

void ms_error_prefix(MsError *e, const char *fmt, ...) {
    if (!e || e->code == 0)
        return;
    char prefix[MS_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    size_t plen = strnlen(prefix, sizeof(e->message) - 1);
    size_t mlen = strnlen(e->message, sizeof(e->message) - 1);
    if (plen + mlen > sizeof(e->message) - 1)
        mlen = sizeof(e->message) - 1 - plen;
    memmove(e->message + plen, e->message, mlen);
    memcpy(e->message, prefix, plen);
    e->message[plen + mlen] = '\0';
}

void ms_error_clear(MsError *e) {
    if (!e)
        return;
    e->code = 0;
    e->message[0] = '\0';
    e->kind = MS_ERROR_KIND_NONE;
}

/* Small macros shared by every module: cleanup helpers, ownership transfer, sizes. */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
/* The struct a member pointer belongs to (systemd's container_of). */
#define MS_CONTAINER_OF(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))
#define MS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership of a pointer out of a _cleanup_ variable. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _taken = (p);                                                                \
        (p) = NULL;                                                                                \
        _taken;                                                                                    \
    })

#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _taken_fd = (fd);                                                                      \
        (fd) = -1;                                                                                 \
        _taken_fd;                                                                                 \
    })

static inline void freep(void *p) {
    free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
    if (fd && *fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
#define _cleanup_close_ _cleanup_(closep)

/* Define a cleanup function "namep(type **p)" that calls "func(*p)" when non-NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p) {                                                          \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

/* Removes the first element of array v (of n elements, an lvalue) that equals item, keeping the
 * others in order; nothing when none does. */
#define MS_ARRAY_REMOVE(v, n, item)                                                                \
    do {                                                                                           \
        for (size_t ms_i_ = 0; ms_i_ < (n); ms_i_++)                                               \
            if ((v)[ms_i_] == (item)) {                                                            \
                memmove((v) + ms_i_, (v) + ms_i_ + 1, ((n) - ms_i_ - 1) * sizeof(*(v)));           \
                (n)--;                                                                             \
                break;                                                                             \
            }                                                                                      \
    } while (0)

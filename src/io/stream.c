/* Basic sinks and sources: file descriptors, memory, byte counters. */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

MsSink *ms_sink_free(MsSink *s) {
    if (s)
        s->free(s);
    return NULL;
}

MsSource *ms_source_free(MsSource *s) {
    if (s)
        s->free(s);
    return NULL;
}

ssize_t ms_source_read_up_to(MsSource *s, void *buf, size_t len, MsError *e) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = ms_source_read(s, (uint8_t *) buf + got, len - got, e);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        got += (size_t) n;
    }
    return (ssize_t) got;
}

/* ---- replay: a peeked prefix, then the rest ---- */

typedef struct ReplaySource {
    MsSource base;
    MsSource *next;
    size_t len, pos;
    uint8_t prefix[];
} ReplaySource;

static ssize_t replay_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    ReplaySource *p = (ReplaySource *) s;
    if (p->pos < p->len) {
        size_t n = MS_MIN(len, p->len - p->pos);
        memcpy(buf, p->prefix + p->pos, n);
        p->pos += n;
        return (ssize_t) n;
    }
    return ms_source_read(p->next, buf, len, e);
}

static void replay_source_free(MsSource *s) {
    ms_source_free(((ReplaySource *) s)->next);
    free(s);
}

MsSource *ms_source_replay_new(MsSource *next, const void *prefix, size_t len, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: pass-through stream without a next stage");
        return NULL;
    }
    ReplaySource *p = calloc(1, sizeof(*p) + len);
    if (!p) {
        ms_source_free(next);
        ms_error_set(e, ENOMEM, "out of memory setting up a pass-through stream");
        return NULL;
    }
    p->base = (MsSource){replay_source_read, replay_source_free};
    if (len > 0)
        memcpy(p->prefix, prefix, len);
    p->len = len;
    p->next = next;
    return &p->base;
}

int ms_source_read_full(MsSource *s, void *buf, size_t len, MsError *e) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = ms_source_read(s, (uint8_t *) buf + got, len - got, e);
        if (n < 0)
            return (int) n;
        if (n == 0) {
            if (got == 0)
                return -ENODATA;
            return ms_error_set(e, EPIPE, "unexpected end of data: wanted %zu bytes, got %zu", len,
                                got);
        }
        got += (size_t) n;
    }
    return 0;
}

/* ---- file descriptors ---- */
typedef struct {
    MsSink base;
    int fd;
    int own_fd;
} FdSink;

static int fd_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    FdSink *f = (FdSink *) s;
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return ms_error_set(e, errno, "write failed: %s", strerror(errno));
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

static int fd_sink_finish(MsSink *s, MsError *e) {
    return 0;
}

static void fd_sink_free(MsSink *s) {
    FdSink *f = (FdSink *) s;
    if (f->own_fd && f->fd >= 0)
        close(f->fd);
    free(f);
}

MsSink *ms_sink_fd_new(int fd, int own_fd) {
    FdSink *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->base = (MsSink){fd_sink_write, fd_sink_finish, fd_sink_free};
    f->fd = fd;
    f->own_fd = own_fd;
    return &f->base;
}

typedef struct {
    MsSource base;
    int fd;
    int own_fd;
} FdSource;

static ssize_t fd_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    FdSource *f = (FdSource *) s;
    for (;;) {
        ssize_t n = read(f->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return ms_error_set(e, errno, "read failed: %s", strerror(errno));
    }
}

static void fd_source_free(MsSource *s) {
    FdSource *f = (FdSource *) s;
    if (f->own_fd && f->fd >= 0)
        close(f->fd);
    free(f);
}

MsSource *ms_source_fd_new(int fd, int own_fd) {
    FdSource *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->base = (MsSource){fd_source_read, fd_source_free};
    f->fd = fd;
    f->own_fd = own_fd;
    return &f->base;
}

/* ---- memory ---- */
typedef struct {
    MsSink base;
    uint8_t *data;
    size_t len, cap;
} MemorySink;

static int memory_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    MemorySink *m = (MemorySink *) s;
    if (m->len + len > m->cap) {
        size_t cap = MS_MAX(m->cap * 2, m->len + len);
        cap = MS_MAX(cap, (size_t) 4096);
        uint8_t *d = realloc(m->data, cap);
        if (!d)
            return ms_error_set(e, ENOMEM, "out of memory");
        m->data = d;
        m->cap = cap;
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

static void memory_sink_free(MsSink *s) {
    MemorySink *m = (MemorySink *) s;
    free(m->data);
    free(m);
}

MsSink *ms_sink_memory_new(void) {
    MemorySink *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base = (MsSink){memory_sink_write, fd_sink_finish, memory_sink_free};
    return &m->base;
}

const uint8_t *ms_sink_memory_data(MsSink *s, size_t *ret_len) {
    MemorySink *m = (MemorySink *) s;
    *ret_len = m->len;
    return m->data;
}

typedef struct {
    MsSource base;
    const uint8_t *data;
    size_t len, pos;
} MemorySource;

static ssize_t memory_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    MemorySource *m = (MemorySource *) s;
    size_t n = MS_MIN(len, m->len - m->pos);
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (ssize_t) n;
}

static void memory_source_free(MsSource *s) {
    free(s);
}

MsSource *ms_source_memory_new(const void *buf, size_t len) {
    MemorySource *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base = (MsSource){memory_source_read, memory_source_free};
    m->data = buf;
    m->len = len;
    return &m->base;
}

/* ---- counters ---- */
typedef struct {
    MsSink base;
    MsSink *next;
    uint64_t *counter;
} CounterSink;

static int counter_sink_write(MsSink *s, const void *buf, size_t len, MsError *e) {
    CounterSink *c = (CounterSink *) s;
    int r = ms_sink_write(c->next, buf, len, e);
    if (r < 0)
        return r;
    __atomic_add_fetch(c->counter, len, __ATOMIC_RELAXED);
    return 0;
}

static int counter_sink_finish(MsSink *s, MsError *e) {
    return ms_sink_finish(((CounterSink *) s)->next, e);
}

static void counter_sink_free(MsSink *s) {
    ms_sink_free(((CounterSink *) s)->next);
    free(s);
}

MsSink *ms_sink_counter_new(MsSink *next, uint64_t *counter, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: counting sink without a next stage");
        return NULL;
    }
    CounterSink *c = calloc(1, sizeof(*c));
    if (!c) {
        ms_sink_free(next);
        ms_error_oom(e);
        return NULL;
    }
    c->base = (MsSink){counter_sink_write, counter_sink_finish, counter_sink_free};
    c->next = next;
    c->counter = counter;
    return &c->base;
}

typedef struct {
    MsSource base;
    MsSource *next;
    uint64_t *counter;
} CounterSource;

static ssize_t counter_source_read(MsSource *s, void *buf, size_t len, MsError *e) {
    CounterSource *c = (CounterSource *) s;
    ssize_t n = ms_source_read(c->next, buf, len, e);
    if (n > 0)
        __atomic_add_fetch(c->counter, (uint64_t) n, __ATOMIC_RELAXED);
    return n;
}

static void counter_source_free(MsSource *s) {
    ms_source_free(((CounterSource *) s)->next);
    free(s);
}

MsSource *ms_source_counter_new(MsSource *next, uint64_t *counter, MsError *e) {
    if (!next) {
        ms_error_set(e, EINVAL, "internal error: counting source without a next stage");
        return NULL;
    }
    CounterSource *c = calloc(1, sizeof(*c));
    if (!c) {
        ms_source_free(next);
        ms_error_oom(e);
        return NULL;
    }
    c->base = (MsSource){counter_source_read, counter_source_free};
    c->next = next;
    c->counter = counter;
    return &c->base;
}

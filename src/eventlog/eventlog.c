/* The Event Log's writer (entries built from MsEventFields, scrubbed of secrets) and its reader. */
#include "eventlog.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

/* Without this, sd_journal_sendv() adds CODE_FILE/CODE_LINE/CODE_FUNC of this file, the same
 * for every event and of no help to anyone reading the Event Log. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "common/redact.h"

typedef struct EventKindInfo {
    const char *name;
    int priority;
    sd_id128_t id;
} EventKindInfo;

static const EventKindInfo event_kinds[_MS_EVENT_KIND_MAX] = {
#define EVENT_KIND_INFO(kind, kind_name, kind_priority, kind_id)                                   \
    [MS_EVENT_##kind] = {.name = kind_name, .priority = kind_priority, .id = kind_id},
    MS_EVENT_KINDS(EVENT_KIND_INFO)
#undef EVENT_KIND_INFO
};

/* MESSAGE_ID, PRIORITY, MESSAGE, MONGOSNAP_EVENT, six strings of MsEventFields, three figures. */
#define EVENT_FIELDS_MAX 13
/* Characters that end a URI quoted in free text. Not ',': MongoDB host lists contain it. */
#define URI_TERMINATORS " \t\r\n\"'<>`"

/* Keep the first failure of a chain of calls that return 0 on success. */
#define FIRST_FAILURE(r, call) ((r) = (r) != 0 ? (r) : (call))

const char *ms_event_kind_to_string(MsEventKind kind) {
    return kind >= 0 && kind < _MS_EVENT_KIND_MAX ? event_kinds[kind].name : NULL;
}

sd_id128_t ms_event_kind_id(MsEventKind kind) {
    return kind >= 0 && kind < _MS_EVENT_KIND_MAX ? event_kinds[kind].id : SD_ID128_NULL;
}

int ms_event_kind_priority(MsEventKind kind) {
    return kind >= 0 && kind < _MS_EVENT_KIND_MAX ? event_kinds[kind].priority : -EINVAL;
}

MsEventKind ms_event_kind_from_id(sd_id128_t id) {
    for (int k = 0; k < _MS_EVENT_KIND_MAX; k++)
        if (sd_id128_equal(event_kinds[k].id, id))
            return (MsEventKind) k;
    return _MS_EVENT_KIND_INVALID;
}

/* ---- scrubbing ---- */

static bool is_scheme_char(char c) {
    return isalnum((unsigned char) c) || c == '+' || c == '-' || c == '.';
}

static bool is_mongodb_uri(const char *s) {
    return strncasecmp(s, "mongodb://", strlen("mongodb://")) == 0 ||
           strncasecmp(s, "mongodb+srv://", strlen("mongodb+srv://")) == 0;
}

/* Any other URI (an HTTP proxy, an S3 endpoint): drop ":password" from its userinfo. */
static char *uri_strip_password(const char *uri) {
    const char *authority = strstr(uri, "://") + strlen("://");
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = NULL;
    for (const char *p = authority; p < authority + authority_len; p++)
        if (*p == '@')
            at = p; /* the last one: a lenient reading of passwords with a raw '@' */
    const char *colon = at ? memchr(authority, ':', (size_t) (at - authority)) : NULL;
    if (!colon)
        return strdup(uri);
    size_t head = (size_t) (colon - uri);
    size_t tail = strlen(at);
    char *out = malloc(head + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, uri, head);
    memcpy(out + head, at, tail + 1);
    return out;
}

char *ms_eventlog_scrub(const char *text) {
    if (!text)
        return NULL;
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    if (!out)
        return NULL;

    bool ok = true;
    const char *p = text;
    for (const char *sep; ok && (sep = strstr(p, "://"));) {
        const char *start = sep;
        while (start > p && is_scheme_char(start[-1]))
            start--;
        const char *end = sep + strlen("://");
        if (start == sep) { /* "://" without a scheme: not a URI */
            ok = fwrite(p, 1, (size_t) (end - p), out) == (size_t) (end - p);
            p = end;
            continue;
        }
        end += strcspn(end, URI_TERMINATORS);
        /* Text glued to the front ("umongodb://...", "xmongodb+srv://...") must not hide a
         * MongoDB URI from the redaction meant for it: the scheme is its known tail. */
        static const char *const mongodb_schemes[] = {"mongodb+srv", "mongodb"};
        for (size_t i = 0; i < ELEMENTSOF(mongodb_schemes); i++) {
            size_t l = strlen(mongodb_schemes[i]);
            if ((size_t) (sep - start) > l && strncasecmp(sep - l, mongodb_schemes[i], l) == 0) {
                start = sep - l;
                break;
            }
        }
        ok = fwrite(p, 1, (size_t) (start - p), out) == (size_t) (start - p);
        _cleanup_free_ char *uri = strndup(start, (size_t) (end - start));
        _cleanup_free_ char *clean = NULL;
        if (uri)
            clean = is_mongodb_uri(uri) ? ms_uri_redact(uri) : uri_strip_password(uri);
        ok = ok && clean && fputs(clean, out) >= 0;
        p = end;
    }
    ok = ok && fputs(p, out) >= 0;
    if (fclose(out) != 0 || !ok) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- writing ---- */

void ms_event_entry_fields_free(char **fields, size_t n) {
    for (size_t i = 0; fields && i < n; i++)
        free(fields[i]);
    free(fields);
}

static int add_field(char **fields, size_t *n, const char *fmt, ...) _printf_(3, 4);
static int add_field(char **fields, size_t *n, const char *fmt, ...) {
    if (*n >= EVENT_FIELDS_MAX)
        return -E2BIG;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&fields[*n], fmt, ap);
    va_end(ap);
    if (r < 0) {
        fields[*n] = NULL;
        return -ENOMEM;
    }
    (*n)++;
    return 0;
}

static int add_text(char **fields, size_t *n, const char *name, const char *value) {
    if (!value)
        return 0;
    _cleanup_free_ char *clean = ms_eventlog_scrub(value);
    if (!clean)
        return -ENOMEM;
    return add_field(fields, n, "%s=%s", name, clean);
}

static int add_figure(char **fields, size_t *n, const char *name, bool has, uint64_t value) {
    if (!has)
        return 0;
    return add_field(fields, n, "%s=%" PRIu64, name, value);
}

int ms_event_build_fields(MsEventKind kind, const MsEventFields *f, const char *message,
                          char ***ret_fields, size_t *ret_n) {
    static const MsEventFields no_fields = {0};
    const char *name = ms_event_kind_to_string(kind);
    if (!name)
        return -EINVAL;
    if (!f)
        f = &no_fields;

    char **fields = calloc(EVENT_FIELDS_MAX, sizeof(*fields));
    if (!fields)
        return -ENOMEM;
    size_t n = 0;
    sd_id128_t id = ms_event_kind_id(kind);
    int r = 0;
    FIRST_FAILURE(
        r, add_field(fields, &n, "MESSAGE_ID=" SD_ID128_FORMAT_STR, SD_ID128_FORMAT_VAL(id)));
    FIRST_FAILURE(r, add_field(fields, &n, "PRIORITY=%d", ms_event_kind_priority(kind)));
    FIRST_FAILURE(r, add_text(fields, &n, "MESSAGE", message ? message : name));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_EVENT, name));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_POLICY, f->policy));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_TASK, f->task));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_NODE, f->node));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_NAMESPACE, f->ns));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_SNAPSHOT, f->snapshot));
    FIRST_FAILURE(r, add_text(fields, &n, MS_EVENT_FIELD_ERROR, f->error));
    FIRST_FAILURE(r, add_figure(fields, &n, MS_EVENT_FIELD_ITEMS, f->has_items, f->items));
    FIRST_FAILURE(r, add_figure(fields, &n, MS_EVENT_FIELD_BYTES, f->has_bytes, f->bytes));
    FIRST_FAILURE(r,
                  add_figure(fields, &n, MS_EVENT_FIELD_ELAPSED, f->has_elapsed, f->elapsed_usec));
    if (r < 0) {
        ms_event_entry_fields_free(fields, n);
        return r;
    }
    *ret_fields = fields;
    *ret_n = n;
    return 0;
}

int ms_event_logv(MsEventKind kind, const MsEventFields *f, const char *fmt, va_list ap) {
    _cleanup_free_ char *message = NULL;
    if (vasprintf(&message, fmt, ap) < 0) {
        message = NULL;
        return -ENOMEM;
    }
    char **fields = NULL;
    size_t n = 0;
    int r = ms_event_build_fields(kind, f, message, &fields, &n);
    if (r < 0)
        return r;
    struct iovec iov[EVENT_FIELDS_MAX];
    for (size_t i = 0; i < n; i++)
        iov[i] = (struct iovec){.iov_base = fields[i], .iov_len = strlen(fields[i])};
    r = sd_journal_sendv(iov, (int) n);
    ms_event_entry_fields_free(fields, n);
    return r;
}

int ms_event_log(MsEventKind kind, const MsEventFields *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = ms_event_logv(kind, f, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- reading ---- */

/* The value of field in the current entry, NULL when absent. Only running out of memory is an
 * error: one unreadable field (a damaged journal file) should not hide the rest of the log. */
static int journal_field(sd_journal *j, const char *field, char **ret) {
    const void *data = NULL;
    size_t len = 0;
    *ret = NULL;
    if (sd_journal_get_data(j, field, &data, &len) < 0)
        return 0;
    size_t prefix = strlen(field) + 1; /* "FIELD=" */
    if (len < prefix)
        return 0;
    *ret = strndup((const char *) data + prefix, len - prefix);
    return *ret ? 0 : -ENOMEM;
}

static bool parse_u64(const char *s, uint64_t *ret) {
    if (!s || !isdigit((unsigned char) *s))
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *ret = v;
    return true;
}

/* The fields read into an MsEventEntry, owned here for the duration of one callback. */
enum {
    READ_MESSAGE_ID,
    READ_PRIORITY,
    READ_MESSAGE,
    READ_POLICY,
    READ_TASK,
    READ_NODE,
    READ_NAMESPACE,
    READ_SNAPSHOT,
    READ_ERROR,
    READ_ITEMS,
    READ_BYTES,
    READ_ELAPSED,
    _READ_MAX,
};

static const char *const read_field_names[_READ_MAX] = {
    [READ_MESSAGE_ID] = "MESSAGE_ID",
    [READ_PRIORITY] = "PRIORITY",
    [READ_MESSAGE] = "MESSAGE",
    [READ_POLICY] = MS_EVENT_FIELD_POLICY,
    [READ_TASK] = MS_EVENT_FIELD_TASK,
    [READ_NODE] = MS_EVENT_FIELD_NODE,
    [READ_NAMESPACE] = MS_EVENT_FIELD_NAMESPACE,
    [READ_SNAPSHOT] = MS_EVENT_FIELD_SNAPSHOT,
    [READ_ERROR] = MS_EVENT_FIELD_ERROR,
    [READ_ITEMS] = MS_EVENT_FIELD_ITEMS,
    [READ_BYTES] = MS_EVENT_FIELD_BYTES,
    [READ_ELAPSED] = MS_EVENT_FIELD_ELAPSED,
};

static void free_values(char *values[_READ_MAX]) {
    for (size_t i = 0; i < _READ_MAX; i++) {
        free(values[i]);
        values[i] = NULL;
    }
}

static int deliver_entry(sd_journal *j, MsEventReadFn fn, void *userdata, MsError *e) {
    char *values[_READ_MAX] = {0};
    _cleanup_free_ char *cursor = NULL;
    MsEventEntry entry = {.kind = _MS_EVENT_KIND_INVALID, .priority = -1};

    int r = 0;
    for (size_t i = 0; i < _READ_MAX && r == 0; i++)
        r = journal_field(j, read_field_names[i], &values[i]);
    if (r < 0) {
        free_values(values);
        return ms_error_set(e, -r, "out of memory reading the Event Log");
    }
    /* Neither is essential to an entry: both come from the journal file itself. */
    (void) sd_journal_get_realtime_usec(j, &entry.realtime_usec);
    (void) sd_journal_get_cursor(j, &cursor);
    entry.cursor = cursor;

    sd_id128_t id;
    if (values[READ_MESSAGE_ID] && sd_id128_from_string(values[READ_MESSAGE_ID], &id) >= 0)
        entry.kind = ms_event_kind_from_id(id);
    uint64_t priority;
    if (parse_u64(values[READ_PRIORITY], &priority) && priority <= MS_LOG_DEBUG)
        entry.priority = (int) priority;
    entry.message = values[READ_MESSAGE];
    entry.policy = values[READ_POLICY];
    entry.task = values[READ_TASK];
    entry.node = values[READ_NODE];
    entry.ns = values[READ_NAMESPACE];
    entry.snapshot = values[READ_SNAPSHOT];
    entry.error = values[READ_ERROR];
    entry.has_items = parse_u64(values[READ_ITEMS], &entry.items);
    entry.has_bytes = parse_u64(values[READ_BYTES], &entry.bytes);
    entry.has_elapsed = parse_u64(values[READ_ELAPSED], &entry.elapsed_usec);

    r = fn(&entry, userdata);
    free_values(values);
    if (r < 0)
        return ms_error_set(e, -r, "reading the Event Log was stopped: %s", strerror(-r));
    return 0;
}

static int add_match(sd_journal *j, const char *field, const char *value, MsError *e) {
    if (!value)
        return 0;
    _cleanup_free_ char *match = NULL;
    if (asprintf(&match, "%s=%s", field, value) < 0) {
        match = NULL;
        return ms_error_set(e, ENOMEM, "out of memory reading the Event Log");
    }
    int r = sd_journal_add_match(j, match, 0);
    if (r < 0)
        return ms_error_set(e, -r, "cannot select %s in the journal: %s", match, strerror(-r));
    return 0;
}

int ms_eventlog_read(const MsEventFilter *filter, size_t max_entries, MsEventReadFn fn,
                     void *userdata, size_t *ret_n, MsError *e) {
    if (!filter || (!filter->policy && !filter->task))
        return ms_error_set(e, EINVAL, "reading the Event Log needs a policy or a task to read");
    if (!fn)
        return ms_error_set(e, EINVAL, "reading the Event Log needs a callback");

    _cleanup_(sd_journal_closep) sd_journal *j = NULL;
    int r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
    if (r < 0)
        return ms_error_set(e, -r,
                            "cannot open the journal to read the Event Log: %s (the reading "
                            "user must be root or in the systemd-journal group)",
                            strerror(-r));
    /* Matches on different fields must all hold, so policy and task narrow each other. */
    r = add_match(j, MS_EVENT_FIELD_POLICY, filter->policy, e);
    if (r >= 0)
        r = add_match(j, MS_EVENT_FIELD_TASK, filter->task, e);
    if (r < 0)
        return r;

    /* Newest max_entries: step back that far from the end, then read forward, so the caller
     * gets them oldest first like journalctl -n. */
    uint64_t available = UINT64_MAX;
    if (filter->after_cursor) {
        r = sd_journal_seek_cursor(j, filter->after_cursor);
        if (r < 0)
            return ms_error_set(e, EINVAL,
                                "'%s' is not a journal cursor of this machine; start without one",
                                filter->after_cursor);
        /* Seeking lands next to the cursor's entry: step onto it, and past it if it is there
         * (it may have been rotated away, then the first entry is already a new one). */
        r = sd_journal_next(j);
        if (r > 0 && sd_journal_test_cursor(j, filter->after_cursor) > 0)
            r = sd_journal_next(j);
        if (max_entries > 0)
            available = max_entries;
    } else if (max_entries > 0) {
        r = sd_journal_seek_tail(j);
        if (r >= 0)
            r = sd_journal_previous_skip(j, max_entries);
        if (r >= 0)
            available = (uint64_t) r;
    } else {
        r = sd_journal_seek_head(j);
        if (r >= 0)
            r = sd_journal_next(j);
    }
    if (r < 0)
        return ms_error_set(e, -r, "cannot read the Event Log from the journal: %s", strerror(-r));

    size_t n = 0;
    /* r > 0: positioned on the first entry to deliver. */
    while (r > 0 && n < available) {
        int k = deliver_entry(j, fn, userdata, e);
        if (k < 0)
            return k;
        n++;
        r = sd_journal_next(j);
    }
    if (r < 0)
        return ms_error_set(e, -r, "cannot read the Event Log from the journal: %s", strerror(-r));
    if (ret_n)
        *ret_n = n;
    return 0;
}

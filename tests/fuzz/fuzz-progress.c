/* libFuzzer target: what the agent does with a worker's progress output, and namespace
 * patterns.
 *
 * The agent's line splitter (consume/line_append/deliver_line/close_progress) is static in
 * src/agent/agent-task.c, so this file includes that file: the real code, not a copy, with no
 * process behind it. (The agent-task.o of the static library is then never linked in: every
 * symbol it defines is defined here.) Bytes are fed in chunks of the size the input picks, as
 * pipe reads would split them; every delivered message goes through the agent_msg_* readers
 * and through ms_ns_filter_oplog_entry() as if it were an oplog entry. The messages must be
 * exactly those an independent split of the whole output gives.
 *
 * Input: [chunk:u8] [pad:u8] lines \0 pattern \0 namespace \0 to-pattern
 *   chunk: bytes per feed (0: everything at once);
 *   pad:   bit 7 set: first a JSON line of AGENT_TASK_LINE_MAX - 2 + (pad & 3) bytes (around
 *          the limit, so the over-long path is reached without megabyte inputs); bit 6: that
 *          line gets no newline, so it runs into the next one.
 * The patterns go through ms_ns_filter_validate; valid ones through match, selects,
 * could_select_db (which must never rule out a database whose namespace is selected) and
 * rename (whose result the to-pattern must match; an identity rename must change nothing). */
#include "fuzz-common.h"

#include "agent/agent-task.c"
#include "engine/nsfilter.h"

#define PAD_ON (1u << 7)
#define PAD_NO_NEWLINE (1u << 6)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    return 0;
}

typedef struct Delivery {
    bson_t **docs; /* what the splitter delivered, in order */
    size_t n, cap;
    const MsNsFilter *filter; /* NULL when the patterns were not valid */
} Delivery;

static const char *const u64_keys[] = {"items_done",    "items_total", "bytes_read",
                                       "bytes_written", "documents",   "bytes",
                                       "stored_bytes",  "entries",     "removed"};
static const char *const str_keys[] = {"event",    "status",  "namespace", "archive",
                                       "manifest", "message", "phase"};

static void on_message(AgentTask *t, const bson_t *msg, void *userdata) {
    Delivery *d = userdata;
    (void) t;
    uint64_t sum = 0;
    for (size_t i = 0; i < ELEMENTSOF(u64_keys); i++)
        sum += ms_bson_u64(msg, u64_keys[i]) + agent_msg_has(msg, u64_keys[i]);
    for (size_t i = 0; i < ELEMENTSOF(str_keys); i++) {
        const char *s = ms_bson_str(msg, str_keys[i]);
        if (s)
            sum += strlen(s);
    }
    double pct = ms_bson_double(msg, "percent");
    sum += agent_msg_bool(msg, "point_in_time");
    (void) pct;
    (void) sum;

    if (d->filter) {
        bson_t rewritten;
        MsError e = MS_ERROR_INIT;
        int r = ms_ns_filter_oplog_entry(d->filter, MS_NS_OPLOG_KEEP_USERS, msg, &rewritten, &e);
        if (r < 0)
            FUZZ_CHECK(ms_error_is_set(&e), "oplog filter failed without a message");
        else if (r == MS_NS_OPLOG_REWRITTEN) {
            FUZZ_CHECK(bson_validate(&rewritten, BSON_VALIDATE_NONE, NULL),
                       "a rewritten oplog entry is not valid BSON");
            bson_destroy(&rewritten);
        } else
            FUZZ_CHECK(r == MS_NS_OPLOG_KEEP || r == MS_NS_OPLOG_DROP, "verdict %d", r);
    }

    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 8;
        d->docs = realloc(d->docs, d->cap * sizeof(*d->docs));
        if (!d->docs)
            abort();
    }
    d->docs[d->n++] = bson_copy(msg);
}

/* The reference: split the whole output at '\n'; a line of 1..AGENT_TASK_LINE_MAX bytes that
 * is JSON is a message, anything else is dropped. */
static void check_deliveries(const Delivery *d, const uint8_t *out, size_t len) {
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && out[i] != '\n')
            continue;
        size_t n = i - start;
        if (n > 0 && n <= AGENT_TASK_LINE_MAX) {
            bson_error_t err;
            bson_t *doc = bson_new_from_json(out + start, (ssize_t) n, &err);
            if (doc) {
                FUZZ_CHECK(k < d->n, "line at %zu (%zu bytes) was not delivered", start, n);
                FUZZ_CHECK(bson_equal(doc, d->docs[k]), "message %zu differs from line at %zu", k,
                           start);
                k++;
                bson_destroy(doc);
            }
        }
        start = i + 1;
    }
    FUZZ_CHECK(k == d->n, "%zu messages delivered, %zu lines to deliver", d->n, k);
}

static void fuzz_patterns(const char *pattern, const char *ns, const char *to, MsNsFilter *f,
                          bool *valid) {
    MsError e = MS_ERROR_INIT;
    if (ms_ns_filter_add(&f->include, &f->n_include, pattern) < 0 ||
        ms_ns_filter_add(&f->exclude, &f->n_exclude, to) < 0 ||
        ms_ns_filter_add(&f->rename_from, &f->n_rename, pattern) < 0)
        abort();
    size_t n_to = 0;
    if (ms_ns_filter_add(&f->rename_to, &n_to, to) < 0)
        abort();
    *valid = ms_ns_filter_validate(f, &e) == 0;
    fuzz_say("patterns: %s\n", *valid ? "valid" : e.message);
    if (!*valid)
        return;

    bool m = ms_ns_match(pattern, ns);
    char *db = NULL, *coll = NULL;
    if (ms_ns_split(ns, &db, &coll) == 0) {
        /* could_select_db is exact for includes and conservative for excludes: it may keep a
         * database that nothing selects, never drop one that something selects. */
        MsNsFilter only_include = {.include = f->include, .n_include = 1};
        MsNsFilter only_exclude = {.exclude = f->exclude, .n_exclude = 1};
        const MsNsFilter *filters[] = {&only_include, &only_exclude, f};
        for (size_t i = 0; i < ELEMENTSOF(filters); i++)
            if (ms_ns_filter_selects(filters[i], ns))
                FUZZ_CHECK(ms_ns_filter_could_select_db(filters[i], db),
                           "'%s' is selected (filter %zu) but database '%s' is ruled out", ns, i,
                           db);
        char *joined = ms_ns_join(db, coll);
        FUZZ_CHECK(joined && strcmp(joined, ns) == 0, "split/join of '%s' gives '%s'", ns,
                   joined ? joined : "(null)");
        free(joined);
    }
    free(db);
    free(coll);

    char *renamed = ms_ns_filter_rename(f, ns);
    FUZZ_CHECK(renamed, "rename returned NULL");
    if (m)
        FUZZ_CHECK(ms_ns_match(to, renamed),
                   "'%s' renamed by '%s' -> '%s' gives '%s', which the "
                   "target pattern does not match",
                   ns, pattern, to, renamed);
    else
        FUZZ_CHECK(strcmp(renamed, ns) == 0, "'%s' was renamed to '%s' without matching", ns,
                   renamed);
    free(renamed);

    /* The identity rename: the captures put back where they came from. */
    MsNsFilter same = {.rename_from = f->rename_from, .rename_to = f->rename_from, .n_rename = 1};
    char *back = ms_ns_filter_rename(&same, ns);
    FUZZ_CHECK(back && strcmp(back, ns) == 0, "identity rename '%s' -> '%s' turns '%s' into '%s'",
               pattern, pattern, ns, back ? back : "(null)");
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzInput in = {data, size}, lines, rest, pat_part, ns_part, to_part;
    size_t chunk = fuzz_u8(&in);
    unsigned pad = fuzz_u8(&in);
    fuzz_split(in, 0, &lines, &rest);
    fuzz_split(rest, 0, &pat_part, &rest);
    fuzz_split(rest, 0, &ns_part, &to_part);
    char *pattern = fuzz_strdup(pat_part);
    char *ns = fuzz_strdup(ns_part);
    char *to = fuzz_strdup(to_part);

    MsNsFilter filter = {0};
    bool valid = false;
    fuzz_patterns(pattern, ns, to, &filter, &valid);

    /* The worker's whole output. */
    size_t pad_len = (pad & PAD_ON) ? AGENT_TASK_LINE_MAX - 2 + (pad & 3) : 0;
    size_t out_len = pad_len + ((pad & PAD_ON) && !(pad & PAD_NO_NEWLINE)) + lines.n;
    uint8_t *out = malloc(out_len ? out_len : 1);
    if (!out)
        abort();
    size_t o = 0;
    if (pad & PAD_ON) {
        static const char head[] = "{\"pad\":\"";
        memcpy(out, head, strlen(head));
        memset(out + strlen(head), 'x', pad_len - strlen(head) - 2);
        memcpy(out + pad_len - 2, "\"}", 2);
        o = pad_len;
        if (!(pad & PAD_NO_NEWLINE))
            out[o++] = '\n';
    }
    if (lines.n)
        memcpy(out + o, lines.p, lines.n);

    Delivery d = {.filter = valid ? &filter : NULL};
    AgentTask *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    t->progress_fd = -1;
    t->pid = 1;
    t->cb.on_message = on_message;
    t->userdata = &d;
    /* Fixed finding (regressions/fuzz-progress/leading-empty-line-null-offset): an empty line
     * before any byte was buffered made line_append() compute NULL + 0. */
    for (size_t off = 0; off < out_len;) {
        size_t n = chunk ? MS_MIN(chunk, out_len - off) : out_len - off;
        FUZZ_CHECK(consume(t, (const char *) out + off, n) == 0, "consume failed");
        off += n;
    }
    close_progress(t);
    agent_task_free(t);
    check_deliveries(&d, out, out_len);
    fuzz_say("progress: %zu messages\n", d.n);

    for (size_t i = 0; i < d.n; i++)
        bson_destroy(d.docs[i]);
    free(d.docs);
    free(out);
    ms_ns_filter_clear(&filter);
    free(pattern);
    free(ns);
    free(to);
    return 0;
}

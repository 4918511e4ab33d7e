/* The INI engine under config.c: inih splits "Key=value"; we count lines, check the structure
 * and dispatch keys through a table. */
#include "ini-schema.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"
#include "conf.h"

/* A configuration file is a few hundred bytes; anything this large is a mistake (or not a
 * configuration file at all), and reading it whole keeps the parser simple. */
#define MS_CONFIG_FILE_MAX (1024 * 1024)
/* Longer lines than inih's buffer (200 bytes by default) are passed around it, up to this. */
#define MS_CONFIG_LINE_MAX 4096
#define UTF8_BOM "\xef\xbb\xbf"
#define UTF8_BOM_LEN 3
/* Handed to inih in place of an assignment too long for its line buffer; the handler then
 * takes the real line from the parser state. No key can start with a control character. */
#define LONG_LINE_KEY "\x01"
/* Unknown keys within this many edits of a known one get a "did you mean". */
#define SUGGEST_DISTANCE_MAX 2
#define KEYWORD_MAX 64

/* Levenshtein distance, capped: only small distances matter for suggestions. */
static unsigned edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n >= KEYWORD_MAX || m >= KEYWORD_MAX)
        return UINT_MAX;
    unsigned prev[KEYWORD_MAX + 1], cur[KEYWORD_MAX + 1];
    for (size_t j = 0; j <= m; j++)
        prev[j] = (unsigned) j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = (unsigned) i;
        for (size_t j = 1; j <= m; j++) {
            unsigned sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            unsigned del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = MS_MIN(sub, MS_MIN(del, ins));
        }
        memcpy(prev, cur, sizeof(unsigned) * (m + 1));
    }
    return prev[m];
}

/* systemd's parse_boolean() words. */
static int parse_bool(const char *v, bool *ret) {
    static const char *const yes[] = {"1", "yes", "y", "true", "t", "on"};
    static const char *const no[] = {"0", "no", "n", "false", "f", "off"};
    for (size_t i = 0; i < ELEMENTSOF(yes); i++)
        if (strcasecmp(v, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
    for (size_t i = 0; i < ELEMENTSOF(no); i++)
        if (strcasecmp(v, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    return -EINVAL;
}

int ini_parse_unsigned(const char *v, unsigned min, unsigned max, unsigned *ret) {
    if (!v || !*v)
        return -EINVAL;
    unsigned long long x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        x = x * 10 + (unsigned) (*p - '0');
        if (x > max)
            return -ERANGE;
    }
    if (x < min)
        return -ERANGE;
    *ret = (unsigned) x;
    return 0;
}

typedef struct IniParser {
    const IniSchema *schema;
    void *obj;
    const char *path;
    const char *pos, *end;
    unsigned line;      /* the line last handed to inih (1-based) */
    int section;        /* index into schema->sections, -1 before the first header */
    unsigned *key_line; /* per key: the line that first set it, 0 when not yet */
    const char *long_line;
    size_t long_line_len;
    unsigned long_line_no;
    MsError error;
} IniParser;

static bool parser_failed(const IniParser *p) {
    return p->error.code != 0;
}

static void parser_fail(IniParser *p, int code, const char *fmt, ...) _printf_(3, 4);
static void parser_fail(IniParser *p, int code, const char *fmt, ...) {
    char msg[MS_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ms_error_set(&p->error, code, "%s:%u: %s", p->path, p->line, msg);
}

static int schema_section_index(const IniSchema *s, const char *name, size_t len) {
    for (size_t i = 0; i < s->n_sections; i++)
        if (strlen(s->sections[i]) == len && memcmp(s->sections[i], name, len) == 0)
            return (int) i;
    return -1;
}

const IniKey *ini_schema_key(const IniSchema *s, const char *section, const char *name) {
    for (size_t i = 0; i < s->n_keys; i++)
        if ((!section || strcmp(s->keys[i].section, section) == 0) &&
            strcmp(s->keys[i].name, name) == 0)
            return &s->keys[i];
    return NULL;
}

/* "Source, Credential, Schedule" for one section, or "[Policy], [Retention]" for sections. */
void ini_schema_list_keys(const IniSchema *s, const char *section, char *buf, size_t size) {
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n_keys && o < size; i++) {
        if (strcmp(s->keys[i].section, section) != 0)
            continue;
        int w = snprintf(buf + o, size - o, "%s%s", o ? ", " : "", s->keys[i].name);
        if (w < 0)
            return;
        o += (size_t) w;
    }
}

static void schema_list_sections(const IniSchema *s, char *buf, size_t size) {
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n_sections && o < size; i++) {
        int w = snprintf(buf + o, size - o, "%s[%s]", o ? ", " : "", s->sections[i]);
        if (w < 0)
            return;
        o += (size_t) w;
    }
}

/* The closest known key of section, or NULL when none is close enough. */
static const char *schema_suggest_key(const IniSchema *s, const char *section, const char *name) {
    const char *best = NULL;
    unsigned best_d = SUGGEST_DISTANCE_MAX + 1;
    for (size_t i = 0; i < s->n_keys; i++) {
        if (strcmp(s->keys[i].section, section) != 0)
            continue;
        unsigned d =
            strcasecmp(s->keys[i].name, name) == 0 ? 0 : edit_distance(s->keys[i].name, name);
        if (d < best_d) {
            best_d = d;
            best = s->keys[i].name;
        }
    }
    return best;
}

static void parser_fail_unknown_key(IniParser *p, const char *section, const char *name) {
    const IniKey *elsewhere = ini_schema_key(p->schema, NULL, name);
    if (elsewhere) {
        parser_fail(p, EINVAL, "key '%s' belongs in [%s], not in [%s]", name, elsewhere->section,
                    section);
        return;
    }
    char known[MS_ERROR_MESSAGE_MAX / 2], hint[KEYWORD_MAX + 32] = "";
    ini_schema_list_keys(p->schema, section, known, sizeof(known));
    const char *suggestion = schema_suggest_key(p->schema, section, name);
    if (suggestion)
        snprintf(hint, sizeof(hint), " (did you mean '%s'?)", suggestion);
    parser_fail(p, EINVAL, "unknown key '%s' in [%s]%s; known keys: %s", name, section, hint,
                known);
}

/* Where inih would end a name or value: at one of chars or at a ';' after whitespace
 * (inih's default inline comment). */
static const char *ini_find_end(const char *s, const char *end, const char *chars) {
    bool was_space = false;
    for (; s < end; s++) {
        if (chars && strchr(chars, *s))
            return s;
        if (was_space && *s == ';')
            return s;
        was_space = ascii_isblank(*s);
    }
    return end;
}

static char *ini_emit(char *str, int num, const char *s, size_t len) {
    /* Callers make sure it fits: num is at least inih's default line size. */
    if (len + 2 > (size_t) num)
        len = 0;
    memcpy(str, s, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static char *ini_emit_section(IniParser *p, char *str, int num, const char *line, size_t len) {
    const char *close = memchr(line, ']', len);
    if (!close) {
        parser_fail(p, EINVAL, "section header without a closing ']'");
        return NULL;
    }
    const char *after = close + 1;
    while (after < line + len && ascii_isblank(*after))
        after++;
    if (after < line + len && *after != '#' && *after != ';') {
        parser_fail(p, EINVAL, "unexpected text after the section header [%.*s]",
                    (int) (close - line - 1), line + 1);
        return NULL;
    }
    const char *name = line + 1;
    size_t name_len = (size_t) (close - name);
    int idx = schema_section_index(p->schema, name, name_len);
    if (idx < 0) {
        char known[MS_ERROR_MESSAGE_MAX / 2], hint[KEYWORD_MAX + 32] = "";
        schema_list_sections(p->schema, known, sizeof(known));
        for (size_t i = 0; i < p->schema->n_sections; i++)
            if (strlen(p->schema->sections[i]) == name_len &&
                strncasecmp(p->schema->sections[i], name, name_len) == 0)
                snprintf(hint, sizeof(hint), " (did you mean [%s]?)", p->schema->sections[i]);
        parser_fail(p, EINVAL, "unknown section [%.*s]%s; known sections: %s",
                    (int) MS_MIN(name_len, (size_t) KEYWORD_MAX), name, hint, known);
        return NULL;
    }
    p->section = idx;
    return ini_emit(str, num, line, (size_t) (close - line + 1));
}

/* inih's reader: hands over one line per call and counts them, so errors can name the
 * line. It also does what inih's build options would otherwise decide differently from
 * distribution to distribution: indented lines are never continuations, comments and
 * section headers are checked here, and assignments longer than inih's buffer are passed
 * through the parser state instead of being cut. */
static char *ini_read_line(char *str, int num, void *stream) {
    IniParser *p = stream;
    if (parser_failed(p) || p->pos >= p->end)
        return NULL;
    const char *start = p->pos;
    const char *nl = memchr(start, '\n', (size_t) (p->end - start));
    const char *stop = nl ? nl : p->end;
    p->pos = nl ? nl + 1 : p->end;
    p->line++;

    if (p->line == 1 && stop - start >= UTF8_BOM_LEN && memcmp(start, UTF8_BOM, UTF8_BOM_LEN) == 0)
        start += UTF8_BOM_LEN;
    while (start < stop && ascii_isblank(*start))
        start++;
    while (stop > start && ascii_isblank(stop[-1]))
        stop--;
    size_t len = (size_t) (stop - start);

    if (len == 0 || start[0] == '#' || start[0] == ';')
        return ini_emit(str, num, "", 0);
    if (len > MS_CONFIG_LINE_MAX) {
        parser_fail(p, EINVAL, "line is %zu characters long; at most %d are supported", len,
                    MS_CONFIG_LINE_MAX);
        return NULL;
    }
    for (size_t i = 0; i < len; i++)
        if (is_control(start[i]) && start[i] != '\t') {
            parser_fail(p, EINVAL,
                        "control character 0x%02x in the line; only printable text belongs in "
                        "a configuration file",
                        (unsigned) (unsigned char) start[i]);
            return NULL;
        }
    if (start[0] == '[')
        return ini_emit_section(p, str, num, start, len);

    const char *op = ini_find_end(start, stop, "=:");
    if (op == stop || *op != '=') {
        parser_fail(p, EINVAL,
                    "expected 'Key=value', a [Section] header or a comment ('#' or ';' first)");
        return NULL;
    }
    if (op == start) {
        parser_fail(p, EINVAL, "'=' without a key name before it");
        return NULL;
    }
    if (len + 2 <= (size_t) num)
        return ini_emit(str, num, start, len);
    p->long_line = start;
    p->long_line_len = len;
    p->long_line_no = p->line;
    return ini_emit(str, num, LONG_LINE_KEY "=", strlen(LONG_LINE_KEY "="));
}

static void ini_assign(IniParser *p, const char *name, const char *value) {
    if (p->section < 0) {
        const IniKey *k = ini_schema_key(p->schema, NULL, name);
        if (k)
            parser_fail(p, EINVAL, "key '%s' comes before any section; put it under [%s]", name,
                        k->section);
        else
            parser_fail(p, EINVAL, "key '%s' comes before any section header", name);
        return;
    }
    const char *section = p->schema->sections[p->section];
    const IniKey *k = ini_schema_key(p->schema, section, name);
    if (!k) {
        parser_fail_unknown_key(p, section, name);
        return;
    }
    size_t idx = (size_t) (k - p->schema->keys);
    if (p->key_line[idx] && !k->repeatable) {
        parser_fail(p, EINVAL,
                    "duplicate key '%s' in [%s] (first set on line %u); give each key once", name,
                    section, p->key_line[idx]);
        return;
    }
    if (!p->key_line[idx])
        p->key_line[idx] = p->line;
    int r = k->set(p->obj, k, value[0] ? value : k->default_value, true, &p->error);
    if (r < 0) {
        if (!parser_failed(p))
            ms_error_set(&p->error, r, "%s", strerror(-r));
        ms_error_prefix(&p->error, "%s:%u: ", p->path, p->line);
    }
}

static int ini_handle(void *user, const char *section, const char *name, const char *value) {
    IniParser *p = user;
    if (parser_failed(p))
        return 0;
    if (p->long_line_no == p->line && strcmp(name, LONG_LINE_KEY) == 0) {
        /* Split as inih does: name before '=', value after it up to an inline comment, both
         * stripped. */
        const char *line = p->long_line, *end = line + p->long_line_len;
        const char *eq = ini_find_end(line, end, "=:");
        const char *name_end = eq;
        while (name_end > line && ascii_isblank(name_end[-1]))
            name_end--;
        const char *v = eq + 1;
        while (v < end && ascii_isblank(*v))
            v++;
        const char *v_end = ini_find_end(v, end, NULL);
        while (v_end > v && ascii_isblank(v_end[-1]))
            v_end--;
        _cleanup_free_ char *n = strndup(line, (size_t) (name_end - line));
        _cleanup_free_ char *val = strndup(v, (size_t) (v_end - v));
        if (!n || !val) {
            ms_error_set(&p->error, ENOMEM, "%s:%u: out of memory", p->path, p->line);
            return 0;
        }
        ini_assign(p, n, val);
    } else
        ini_assign(p, name, value);
    return !parser_failed(p);
}

int ini_schema_parse(const IniSchema *schema, void *obj, const char *path, const char *text,
                     size_t len, MsError *e) {
    _cleanup_free_ unsigned *key_line = calloc(schema->n_keys, sizeof(unsigned));
    if (!key_line)
        return ms_error_set(e, ENOMEM, "%s: out of memory", path);
    IniParser p = {
        .schema = schema,
        .obj = obj,
        .path = path,
        .pos = text,
        .end = text + len,
        .section = -1,
        .key_line = key_line,
        .error = MS_ERROR_INIT,
    };
    int r = ini_parse_stream(ini_read_line, &p, ini_handle, &p);
    if (parser_failed(&p))
        return ms_error_set(e, p.error.code, "%s", p.error.message);
    if (r > 0)
        return ms_error_set(e, EINVAL,
                            "%s:%d: cannot parse this line: expected 'Key=value', a [Section] "
                            "header or a comment",
                            path, r);
    if (r < 0)
        return ms_error_set(e, ENOMEM, "%s: out of memory while parsing", path);
    return 0;
}

/* Read a whole configuration file relative to dir_fd (AT_FDCWD for a plain path). */
int ini_read_file(int dir_fd, const char *name, const char *path, char **ret, size_t *ret_len,
                  MsError *e) {
    _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ms_error_set(e, errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ms_error_set(e, errno, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ms_error_set(e, EISDIR, "%s: not a regular file; remove it or rename it", path);
    if (st.st_size > MS_CONFIG_FILE_MAX)
        return ms_error_set(e, EFBIG,
                            "%s: %lld bytes is too large for a configuration file "
                            "(at most %d)",
                            path, (long long) st.st_size, MS_CONFIG_FILE_MAX);
    _cleanup_free_ char *buf = malloc(MS_CONFIG_FILE_MAX + 1);
    if (!buf)
        return ms_error_set(e, ENOMEM, "%s: out of memory", path);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, MS_CONFIG_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ms_error_set(e, errno, "%s: cannot read: %s", path, strerror(errno));
        if (n == 0)
            break;
        len += (size_t) n;
        if (len > MS_CONFIG_FILE_MAX)
            return ms_error_set(e, EFBIG,
                                "%s: too large for a configuration file (at most %d "
                                "bytes)",
                                path, MS_CONFIG_FILE_MAX);
    }
    if (memchr(buf, '\0', len))
        return ms_error_set(e, EINVAL, "%s: holds a NUL byte; is it a text file?", path);
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

int ini_set_unsigned(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    unsigned x;
    int r = ini_parse_unsigned(v, k->min, k->max, &x);
    if (r < 0)
        return ms_error_set(e, EINVAL, "%s='%s' is not valid: give a whole number from %u to %u",
                            k->name, v, k->min, k->max);
    *(unsigned *) INI_FIELD(obj, k) = x;
    return 0;
}

char *ini_get_unsigned(const void *obj, const IniKey *k) {
    char *s = NULL;
    return asprintf(&s, "%u", *(const unsigned *) INI_CFIELD(obj, k)) < 0 ? NULL : s;
}

int ini_set_bool(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    bool b;
    if (parse_bool(v, &b) < 0)
        return ms_error_set(e, EINVAL, "%s='%s' is not a boolean: use yes or no", k->name, v);
    *(bool *) INI_FIELD(obj, k) = b;
    return 0;
}

char *ini_get_bool(const void *obj, const IniKey *k) {
    return strdup(*(const bool *) INI_CFIELD(obj, k) ? "yes" : "no");
}

int ini_set_timespan(void *obj, const IniKey *k, const char *v, bool append, MsError *e) {
    uint64_t usec;
    int r = ms_timespan_parse(v, &usec);
    if (r < 0)
        return ms_error_set(e, EINVAL,
                            "%s='%s' is not a time span%s: write e.g. 90s, 10min, '1h 30min', 30d "
                            "or 0",
                            k->name, v, r == -ERANGE ? " (too large)" : "");
    *(uint64_t *) INI_FIELD(obj, k) = usec;
    return 0;
}

char *ini_get_timespan(const void *obj, const IniKey *k) {
    char buf[MS_TIMESPAN_MAX];
    ms_timespan_format(*(const uint64_t *) INI_CFIELD(obj, k), buf);
    return strdup(buf);
}

char *ini_get_string(const void *obj, const IniKey *k) {
    const char *s = *(char *const *) INI_CFIELD(obj, k);
    return strdup(s ? s : "");
}

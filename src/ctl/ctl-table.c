/* mongosnapctl's tables: columns with headers, rows of text, laid out to fit a width. */
#include "ctl-table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-format.h"

struct CtlTable {
    const CtlColumn *columns;
    size_t n_columns;
    unsigned *drop; /* NULL: never hide a column */
    char **cells; /* n_rows * n_columns, row-major */
    size_t n_rows;
};

CtlTable *ctl_table_new(const CtlColumn *columns, size_t n_columns) {
    CtlTable *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->columns = columns;
    t->n_columns = n_columns;
    return t;
}

CtlTable *ctl_table_free(CtlTable *t) {
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->drop);
    free(t);
    return NULL;
}

int ctl_table_add_row(CtlTable *t, const char *const *cells) {
    char **grown = realloc(t->cells, (t->n_rows + 1) * t->n_columns * sizeof(char *));
    if (!grown)
        return -ENOMEM;
    t->cells = grown;
    char **row = t->cells + t->n_rows * t->n_columns;
    for (size_t i = 0; i < t->n_columns; i++) {
        row[i] = strdup(cells[i] && cells[i][0] ? cells[i] : CTL_NONE);
        if (!row[i]) {
            for (size_t j = 0; j < i; j++)
                free(row[j]);
            return -ENOMEM;
        }
    }
    t->n_rows++;
    return 0;
}

int ctl_table_set_drop(CtlTable *t, const unsigned *drop) {
    free(t->drop);
    t->drop = NULL;
    if (!drop)
        return 0;
    t->drop = malloc((t->n_columns ? t->n_columns : 1) * sizeof(unsigned));
    if (!t->drop)
        return -ENOMEM;
    memcpy(t->drop, drop, t->n_columns * sizeof(unsigned));
    return 0;
}

size_t ctl_table_n_rows(const CtlTable *t) {
    return t->n_rows;
}

static const char *cell_at(const CtlTable *t, size_t row, size_t column) {
    return t->cells[row * t->n_columns + column];
}

static size_t natural_width(const CtlTable *t, size_t column, bool header) {
    size_t w = header ? ctl_text_width(t->columns[column].header) : 0;
    for (size_t r = 0; r < t->n_rows; r++)
        w = MS_MAX(w, ctl_text_width(cell_at(t, r, column)));
    return w;
}

/* Take the excess from the shrinkable columns, the rightmost first (ERROR, DOWNLOAD come
 * last and matter least for telling rows apart). */
static void shrink_to_fit(const CtlTable *t, size_t excess, size_t *widths) {
    for (size_t i = t->n_columns; i > 0 && excess > 0; i--) {
        size_t c = i - 1;
        if (!t->columns[c].shrinkable)
            continue;
        size_t floor = MS_MAX((size_t) CTL_TABLE_SHRINK_MIN, ctl_text_width(t->columns[c].header));
        if (widths[c] <= floor)
            continue;
        size_t take = MS_MIN(widths[c] - floor, excess);
        widths[c] -= take;
        excess -= take;
    }
}

static size_t total_width(const CtlTable *t, const size_t *widths) {
    size_t total = 0, shown = 0;
    for (size_t c = 0; c < t->n_columns; c++)
        if (widths[c] > 0) {
            total += widths[c];
            shown++;
        }
    return total + (shown > 0 ? (shown - 1) * CTL_TABLE_GAP : 0);
}

int ctl_table_layout(const CtlTable *t, const CtlTableStyle *style, size_t *ret_widths) {
    for (size_t c = 0; c < t->n_columns; c++)
        ret_widths[c] = MS_MAX(natural_width(t, c, style->header), (size_t) 1);
    size_t total = total_width(t, ret_widths);
    if (style->width == 0 || total <= style->width)
        return 0;
    shrink_to_fit(t, total - style->width, ret_widths);
    /* Still too wide: hide whole columns, the most dispensable first. */
    while (t->drop && (total = total_width(t, ret_widths)) > style->width) {
        size_t victim = t->n_columns;
        for (size_t c = 0; c < t->n_columns; c++)
            if (ret_widths[c] > 0 && t->drop[c] > 0 &&
                (victim == t->n_columns || t->drop[c] > t->drop[victim]))
                victim = c;
        if (victim == t->n_columns)
            break;
        ret_widths[victim] = 0;
        /* Room freed: give the cut columns back what they can have. */
        for (size_t c = 0; c < t->n_columns; c++)
            if (ret_widths[c] > 0)
                ret_widths[c] = MS_MAX(natural_width(t, c, style->header), (size_t) 1);
        total = total_width(t, ret_widths);
        if (total > style->width)
            shrink_to_fit(t, total - style->width, ret_widths);
    }
    return 0;
}

size_t ctl_table_hidden(const CtlTable *t, const CtlTableStyle *style, char *names, size_t size) {
    _cleanup_free_ size_t *widths = calloc(t->n_columns ? t->n_columns : 1, sizeof(size_t));
    if (names && size)
        names[0] = '\0';
    if (!widths)
        return 0;
    ctl_table_layout(t, style, widths);
    size_t n = 0, o = 0;
    for (size_t c = 0; c < t->n_columns; c++) {
        if (widths[c] > 0)
            continue;
        if (names && o < size)
            o += (size_t) snprintf(names + o, size - o, "%s%s", n ? ", " : "",
                                   t->columns[c].header);
        n++;
    }
    return n;
}

static int render_cell(FILE *f, const char *text, size_t width, CtlAlign align, bool last,
                       bool utf8) {
    _cleanup_free_ char *shown = ctl_ellipsize(text, width, utf8);
    if (!shown)
        return -ENOMEM;
    size_t pad = width - MS_MIN(width, ctl_text_width(shown));
    if (align == CTL_ALIGN_RIGHT)
        fprintf(f, "%*s%s", (int) pad, "", shown);
    else
        /* No trailing blanks after the last column. */
        fprintf(f, "%s%*s", shown, last ? 0 : (int) pad, "");
    return 0;
}

static int render_line(FILE *f, const CtlTable *t, const char *const *cells, const size_t *widths,
                       bool utf8) {
    size_t last = 0;
    for (size_t c = 0; c < t->n_columns; c++)
        if (widths[c] > 0)
            last = c;
    bool first = true;
    for (size_t c = 0; c < t->n_columns; c++) {
        if (widths[c] == 0)
            continue; /* hidden */
        if (!first)
            fprintf(f, "%*s", CTL_TABLE_GAP, "");
        first = false;
        int r = render_cell(f, cells[c], widths[c], t->columns[c].align, c == last, utf8);
        if (r < 0)
            return r;
    }
    fputc('\n', f);
    return 0;
}

int ctl_table_render(const CtlTable *t, const CtlTableStyle *style, char **ret) {
    _cleanup_free_ size_t *widths = calloc(t->n_columns ? t->n_columns : 1, sizeof(size_t));
    _cleanup_free_ const char **headers = calloc(t->n_columns ? t->n_columns : 1, sizeof(char *));
    if (!widths || !headers)
        return -ENOMEM;
    ctl_table_layout(t, style, widths);
    for (size_t c = 0; c < t->n_columns; c++)
        headers[c] = t->columns[c].header;

    _cleanup_free_ char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return -ENOMEM;
    int r = style->header ? render_line(f, t, headers, widths, style->utf8) : 0;
    for (size_t row = 0; r >= 0 && row < t->n_rows; row++)
        r = render_line(f, t, (const char *const *) t->cells + row * t->n_columns, widths,
                        style->utf8);
    if (fclose(f) != 0 && r >= 0)
        r = -ENOMEM;
    if (r < 0)
        return r;
    *ret = TAKE_PTR(buf);
    return 0;
}

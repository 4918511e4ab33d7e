/* mongosnapctl's tables: columns with headers, rows of text, laid out to fit a width. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/macro.h"

/* Columns are separated by this many spaces, so that cells holding single spaces (times)
 * stay readable and scripts can split on runs of two. */
#define CTL_TABLE_GAP 2
/* A shrinkable column is never cut below this width (nor below its header's). */
#define CTL_TABLE_SHRINK_MIN 12

typedef enum CtlAlign {
    CTL_ALIGN_LEFT,
    CTL_ALIGN_RIGHT,
} CtlAlign;

typedef struct CtlColumn {
    const char *header; /* in capitals, as systemctl */
    CtlAlign align;
    bool shrinkable; /* may be cut with an ellipsis to fit the terminal */
} CtlColumn;

typedef struct CtlTableStyle {
    size_t width; /* the terminal's width; 0: never cut anything */
    bool header;  /* print the header line */
    bool utf8;    /* "…" rather than "..." */
} CtlTableStyle;

typedef struct CtlTable CtlTable;

/* columns must outlive the table (static tables of columns are the intent). */
CtlTable *ctl_table_new(const CtlColumn *columns, size_t n_columns);
CtlTable *ctl_table_free(CtlTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(CtlTable *, ctl_table_free);

/* When the table does not fit the width, columns are first cut (the shrinkable ones, down to
 * CTL_TABLE_SHRINK_MIN), then hidden whole, the highest drop first: drop[i] for column i, 0
 * never hidden (copied; NULL: no column is ever hidden). Hidden is better than cut for values
 * that are only useful whole (a file name, a date). */
int ctl_table_set_drop(CtlTable *t, const unsigned *drop);
/* After layout: how many columns were hidden, and their headers ("FILE, DL"). */
size_t ctl_table_hidden(const CtlTable *t, const CtlTableStyle *style, char *names, size_t size);

/* Append one row of n_columns cells (copied); NULL or "" cells show as CTL_NONE. */
int ctl_table_add_row(CtlTable *t, const char *const *cells);
size_t ctl_table_n_rows(const CtlTable *t);

/* The table as text, one line per row, each ending in '\n'. */
int ctl_table_render(const CtlTable *t, const CtlTableStyle *style, char **ret);
/* The width of every column after fitting (for tests): ret_widths has n_columns entries; a
 * hidden column's is 0. */
int ctl_table_layout(const CtlTable *t, const CtlTableStyle *style, size_t *ret_widths);

/* mongosnapctl's progress line for --wait: bar, percent, items, rates and ETA. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl-format.h"

/* The bar between brackets: never wider than this, and left out when narrower. */
#define CTL_PROGRESS_BAR_MAX 40
#define CTL_PROGRESS_BAR_MIN 10
/* Room for any progress line (it is cut to the terminal's width anyway). */
#define CTL_PROGRESS_LINE_MAX 512
/* What the ETA shows while it cannot be estimated. */
#define CTL_PROGRESS_UNKNOWN "--"

typedef struct CtlProgress {
    const char *state; /* the task's state: "queued", "running", ... */
    bool has_percent;  /* false for tasks with no figures (a verification) */
    double percent;    /* 0..100 */
    uint64_t items;    /* documents done */
    uint64_t items_total;
    uint64_t bytes;        /* bytes transferred; 0: not reported */
    uint64_t elapsed_usec; /* since the task started */
    const char *phase;     /* the worker's phase ("dump", "indexes", ...); NULL or "": unknown */
} CtlProgress;

/* What a phase outside the documents is called on the progress line ("building indexes"), or
 * NULL for the phases the documents measure (dump, restore, replay, verify) and unknown ones. */
const char *ctl_progress_phase_text(const char *phase);

/* The estimated time left from the average rate so far, or CTL_PROGRESS_UNKNOWN. */
void ctl_progress_eta(const CtlProgress *p, char buf[CTL_DURATION_MAX]);
/* One line (no newline) of at most width columns (0: no limit), e.g.
 *   "[########------]  45.0%  405/900 items  120 items/s  1.2M/s  ETA 4s";
 * before the totals are known (or while queued: "queued  2s")
 *   "[--------------] listing collections...  2s",
 * and past the documents, instead of a percentage that cannot move,
 *   "[##############] 900/900 items  87.6M  building indexes...  4s". */
void ctl_progress_line(const CtlProgress *p, size_t width, char *buf, size_t size);

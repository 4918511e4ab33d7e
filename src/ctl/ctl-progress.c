/* mongosnapctl's progress line for --wait: bar, percent, items, rates and ETA. */
#include "ctl-progress.h"

#include <stdio.h>
#include <string.h>

#include "common/macro.h"

#define PERCENT_MAX 100.0
/* Below this many items a second, one decimal says more than a whole number. */
#define RATE_DECIMALS_BELOW 10.0
#define BAR_DONE '#'
#define BAR_TODO '-'
/* "[", "]" and the space after them. */
#define BAR_DECORATION 3

void ctl_progress_eta(const CtlProgress *p, char buf[CTL_DURATION_MAX]) {
    if (p->items == 0 || p->elapsed_usec == 0 || p->items_total == 0) {
        snprintf(buf, CTL_DURATION_MAX, "%s", CTL_PROGRESS_UNKNOWN);
        return;
    }
    uint64_t left = p->items_total > p->items ? p->items_total - p->items : 0;
    /* In floating point: items times microseconds overflows 64 bits for long tasks. */
    double eta = (double) left * (double) p->elapsed_usec / (double) p->items;
    /* Rounded up to whole seconds: "ETA 0" while something is left would be a lie. */
    uint64_t usec = (uint64_t) eta;
    if (left > 0 && usec < CTL_USEC_PER_SEC)
        usec = CTL_USEC_PER_SEC;
    ctl_format_duration(usec - usec % CTL_USEC_PER_SEC, buf);
}

static double per_second(uint64_t amount, uint64_t elapsed_usec) {
    return elapsed_usec ? (double) amount * (double) CTL_USEC_PER_SEC / (double) elapsed_usec : 0;
}

/* The phases the documents do not measure. Before them the totals are not known yet (a
 * percentage would say 0/0); after them every document is done, and the percentage would sit
 * at 99.9 while indexes are built or the upload is finished: the line says what happens. */
static const struct {
    const char *phase, *text;
    bool after_documents;
} phase_texts[] = {
    {"connect", "connecting", false},
    {"prelude", "listing collections", false},
    {"check", "checking the whole snapshot first", false},
    {"oplog", "capturing the oplog", true},
    {"commit", "finishing the upload", true},
    {"indexes", "building indexes", true},
    {"done", "finishing", true},
};

static int phase_index(const char *phase) {
    for (size_t i = 0; phase && i < ELEMENTSOF(phase_texts); i++)
        if (strcmp(phase, phase_texts[i].phase) == 0)
            return (int) i;
    return -1;
}

const char *ctl_progress_phase_text(const char *phase) {
    int i = phase_index(phase);
    return i < 0 ? NULL : phase_texts[i].text;
}

/* Everything after the bar: "45.0%  405/900 items  120 items/s  1.2M/s  ETA 4s". */
static void format_figures(const CtlProgress *p, char *buf, size_t size) {
    char elapsed[CTL_DURATION_MAX];
    ctl_format_duration(p->elapsed_usec, elapsed);
    if (!p->has_percent) {
        snprintf(buf, size, "%s  %s", p->state ? p->state : "", elapsed);
        return;
    }
    int phase = phase_index(p->phase);
    if (p->state && strcmp(p->state, "queued") == 0) {
        snprintf(buf, size, "queued  %s", elapsed);
        return;
    }
    if ((phase >= 0 && !phase_texts[phase].after_documents) ||
        (p->items_total == 0 && p->items == 0)) {
        /* Totals not known yet: no "0/0 items  0.0 items/s". */
        snprintf(buf, size, "%s...  %s", phase >= 0 ? phase_texts[phase].text : "starting",
                 elapsed);
        return;
    }
    char bytes_text[CTL_SIZE_MAX + sizeof("  /s")] = "";
    if (phase >= 0) {
        if (p->bytes > 0) {
            char size_text[CTL_SIZE_MAX];
            ctl_format_size(p->bytes, size_text);
            snprintf(bytes_text, sizeof(bytes_text), "  %s", size_text);
        }
        snprintf(buf, size, "%llu/%llu items%s  %s...  %s", (unsigned long long) p->items,
                 (unsigned long long) MS_MAX(p->items_total, p->items), bytes_text,
                 phase_texts[phase].text, elapsed);
        return;
    }
    double rate = per_second(p->items, p->elapsed_usec);
    if (p->bytes > 0) {
        char size_text[CTL_SIZE_MAX];
        ctl_format_size((uint64_t) per_second(p->bytes, p->elapsed_usec), size_text);
        snprintf(bytes_text, sizeof(bytes_text), "  %s/s", size_text);
    }
    char eta[CTL_DURATION_MAX];
    ctl_progress_eta(p, eta);
    snprintf(buf, size, "%5.1f%%  %llu/%llu items  %.*f items/s%s  ETA %s",
             MS_MIN(MS_MAX(p->percent, 0.0), PERCENT_MAX), (unsigned long long) p->items,
             (unsigned long long) p->items_total, rate < RATE_DECIMALS_BELOW ? 1 : 0, rate,
             bytes_text, eta);
}

static void format_bar(double percent, size_t bar_width, char *buf) {
    size_t done =
        (size_t) (MS_MIN(MS_MAX(percent, 0.0), PERCENT_MAX) / PERCENT_MAX * (double) bar_width);
    buf[0] = '[';
    memset(buf + 1, BAR_DONE, done);
    memset(buf + 1 + done, BAR_TODO, bar_width - done);
    buf[1 + bar_width] = ']';
    buf[2 + bar_width] = '\0';
}

void ctl_progress_line(const CtlProgress *p, size_t width, char *buf, size_t size) {
    char figures[CTL_PROGRESS_LINE_MAX];
    format_figures(p, figures, sizeof(figures));
    size_t len = strlen(figures);
    size_t room = width == 0 ? CTL_PROGRESS_BAR_MAX + BAR_DECORATION + len : width;
    size_t bar_width = room > len + BAR_DECORATION ? room - len - BAR_DECORATION : 0;
    bar_width = MS_MIN(bar_width, (size_t) CTL_PROGRESS_BAR_MAX);
    if (!p->has_percent || bar_width < CTL_PROGRESS_BAR_MIN) {
        snprintf(buf, size, "%.*s", (int) MS_MIN(len, room), figures);
        return;
    }
    char bar[CTL_PROGRESS_BAR_MAX + BAR_DECORATION];
    int phase = phase_index(p->phase);
    format_bar(phase >= 0 && phase_texts[phase].after_documents ? PERCENT_MAX : p->percent,
               bar_width, bar);
    snprintf(buf, size, "%s %s", bar, figures);
}

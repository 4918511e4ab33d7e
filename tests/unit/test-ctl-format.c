/* Unit tests of mongosnapctl's pure helpers: sizes, durations, times, tables, JSON, progress. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl/ctl-exit.h"
#include "ctl/ctl-format.h"
#include "ctl/ctl-json.h"
#include "ctl/ctl-progress.h"
#include "ctl/ctl-table.h"
#include "test.h"

#define KIB UINT64_C(1024)
#define MIB (KIB * KIB)
#define GIB (MIB * KIB)
#define SEC CTL_USEC_PER_SEC

static void test_size(void) {
    char buf[CTL_SIZE_MAX];
    const struct {
        uint64_t bytes;
        const char *text;
    } cases[] = {
        {0, "0B"},
        {900, "900B"},
        {1023, "1023B"},
        {KIB, "1.0K"},
        {KIB + KIB / 2, "1.5K"},
        {87 * MIB + 629146, "87.6M"},
        /* Truncated, not rounded, as systemd does: 87.59999M. */
        {87 * MIB + 629145, "87.5M"},
        {GIB, "1.0G"},
        {MIB - 1, "1023.9K"},
        {UINT64_MAX, "15.9E"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        ctl_format_size(cases[i].bytes, buf);
        ASSERT_STREQ(buf, cases[i].text);
    }
}

static void test_duration(void) {
    char buf[CTL_DURATION_MAX];
    const struct {
        uint64_t usec;
        const char *text;
    } cases[] = {
        {0, "0"},
        {500, "500us"},
        {450 * CTL_USEC_PER_MSEC, "450ms"},
        {SEC + SEC / 2, "1s"},
        {66 * SEC, "1min 6s"},
        {(2 * CTL_SEC_PER_HOUR + 5) * SEC, "2h 5s"},
        {(3 * CTL_SEC_PER_DAY + 4 * CTL_SEC_PER_HOUR) * SEC, "3d 4h"},
        {(CTL_SEC_PER_DAY + CTL_SEC_PER_HOUR + CTL_SEC_PER_MINUTE + 1) * SEC, "1d 1h 1min 1s"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        ctl_format_duration(cases[i].usec, buf);
        ASSERT_STREQ(buf, cases[i].text);
    }
}

static void test_timestamp(void) {
    setenv("TZ", "UTC", 1);
    tzset();
    char buf[CTL_TIMESTAMP_MAX];
    ctl_format_timestamp(0, buf);
    ASSERT_STREQ(buf, CTL_NONE);
    ctl_format_timestamp(SEC, buf);
    ASSERT_STREQ(buf, "Thu 1970-01-01 00:00:01 UTC");
    /* 2026-11-22 05:38:10 UTC, a Sunday; the microseconds are not shown. */
    ctl_format_timestamp(UINT64_C(1795325890) * SEC + 999999, buf);
    ASSERT_STREQ(buf, "Sun 2026-11-22 05:38:10 UTC");
}

static void test_relative(void) {
    char buf[CTL_RELATIVE_MAX];
    uint64_t now = UINT64_C(1795325890) * SEC;
    ctl_format_relative(0, now, buf);
    ASSERT_STREQ(buf, CTL_NONE);
    ctl_format_relative(now, now, buf);
    ASSERT_STREQ(buf, "just now");
    ctl_format_relative(now - 125 * SEC, now, buf);
    ASSERT_STREQ(buf, "2min 5s ago");
    /* Two units at most. */
    ctl_format_relative(now + (CTL_SEC_PER_HOUR + CTL_SEC_PER_MINUTE + 1) * SEC, now, buf);
    ASSERT_STREQ(buf, "1h 1min left");
}

static void test_ellipsize(void) {
    _cleanup_free_ char *same = ctl_ellipsize("abcdef", 6, true);
    _cleanup_free_ char *utf8 = ctl_ellipsize("abcdef", 4, true);
    _cleanup_free_ char *ascii = ctl_ellipsize("abcdef", 4, false);
    _cleanup_free_ char *accents = ctl_ellipsize("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 3, true);
    _cleanup_free_ char *tiny = ctl_ellipsize("abcdef", 2, false);
    _cleanup_free_ char *null = ctl_ellipsize(NULL, 3, true);
    ASSERT_STREQ(same, "abcdef");
    ASSERT_STREQ(utf8, "abc\xe2\x80\xa6");
    ASSERT_STREQ(ascii, "a...");
    ASSERT_STREQ(accents, "\xc3\xa9\xc3\xa9\xe2\x80\xa6");
    ASSERT_STREQ(tiny, "ab");
    ASSERT_STREQ(null, "");
    ASSERT_EQ_INT(ctl_text_width("\xc3\xa9t\xc3\xa9"), 3);
    ASSERT_EQ_INT(ctl_text_width(utf8), 4);
}

static void test_snake_case(void) {
    const char *cases[][2] = {
        {"RandomizedDelayUSec", "randomized_delay_usec"},
        {"MaxAgeUSec", "max_age_usec"},
        {"ElapsedUSec", "elapsed_usec"},
        {"LastRun", "last_run"},
        {"Id", "id"},
        {"PolicyErrors", "policy_errors"},
        {"IncludeNamespaces", "include_namespaces"},
        {"SourceSnapshot", "source_snapshot"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *s = ctl_snake_case(cases[i][0]);
        ASSERT_STREQ(s, cases[i][1]);
    }
}

static void test_uri_scrub(void) {
    char with[] = "mongodb://backup:s3cret@db1:27017,db2/admin?replicaSet=rs0";
    ASSERT(ctl_uri_scrub_password(with));
    ASSERT_STREQ(with, "mongodb://backup:xxxxxx@db1:27017,db2/admin?replicaSet=rs0");
    char without[] = "mongodb://backup@db1/?authSource=admin";
    ASSERT(!ctl_uri_scrub_password(without));
    ASSERT_STREQ(without, "mongodb://backup@db1/?authSource=admin");
    /* An '@' after the host list is not userinfo. */
    char in_query[] = "mongodb://db1:1/?appName=a:b@c";
    ASSERT(!ctl_uri_scrub_password(in_query));
    ASSERT_STREQ(in_query, "mongodb://db1:1/?appName=a:b@c");
    ASSERT(!ctl_uri_scrub_password(NULL));
}

static const CtlColumn columns[] = {
    {"NAME", CTL_ALIGN_LEFT, false},
    {"SIZE", CTL_ALIGN_RIGHT, false},
    {"ERROR", CTL_ALIGN_LEFT, true},
};

static CtlTable *sample_table(void) {
    CtlTable *t = ctl_table_new(columns, ELEMENTSOF(columns));
    const char *a[] = {"alpha", "1.0K", "the server could not be reached at all"};
    const char *b[] = {"b", "87.6M", NULL};
    if (!t || ctl_table_add_row(t, a) < 0 || ctl_table_add_row(t, b) < 0)
        return ctl_table_free(t);
    return t;
}

static void test_table_natural(void) {
    _cleanup_(ctl_table_freep) CtlTable *t = sample_table();
    ASSERT(t);
    ASSERT_EQ_INT(ctl_table_n_rows(t), 2);
    _cleanup_free_ char *text = NULL;
    CtlTableStyle style = {.width = 0, .header = true, .utf8 = true};
    ASSERT_OK(ctl_table_render(t, &style, &text));
    /* Right-aligned numbers, two spaces between columns, "-" for nothing, no trailing blanks. */
    ASSERT_STREQ(text, "NAME    SIZE  ERROR\n"
                       "alpha   1.0K  the server could not be reached at all\n"
                       "b      87.6M  -\n");
    _cleanup_free_ char *bare = NULL;
    style.header = false;
    ASSERT_OK(ctl_table_render(t, &style, &bare));
    ASSERT_STREQ(bare, "alpha   1.0K  the server could not be reached at all\n"
                       "b      87.6M  -\n");
}

static void test_table_fits_width(void) {
    _cleanup_(ctl_table_freep) CtlTable *t = sample_table();
    ASSERT(t);
    CtlTableStyle style = {.width = 30, .header = true, .utf8 = true};
    size_t widths[ELEMENTSOF(columns)];
    ASSERT_OK(ctl_table_layout(t, &style, widths));
    /* 5 + 2 + 5 + 2 = 14 columns before ERROR; it gets the 16 that are left. */
    ASSERT_EQ_INT(widths[0], 5);
    ASSERT_EQ_INT(widths[1], 5);
    ASSERT_EQ_INT(widths[2], 16);
    _cleanup_free_ char *text = NULL;
    ASSERT_OK(ctl_table_render(t, &style, &text));
    ASSERT_STREQ(text, "NAME    SIZE  ERROR\n"
                       "alpha   1.0K  the server coul\xe2\x80\xa6\n"
                       "b      87.6M  -\n");

    /* Never below CTL_TABLE_SHRINK_MIN, even if the line stays too long. */
    style.width = 10;
    ASSERT_OK(ctl_table_layout(t, &style, widths));
    ASSERT_EQ_INT(widths[2], CTL_TABLE_SHRINK_MIN);
    ASSERT_EQ_INT(widths[0], 5);
}

static void test_table_empty(void) {
    _cleanup_(ctl_table_freep) CtlTable *t = ctl_table_new(columns, ELEMENTSOF(columns));
    ASSERT(t);
    _cleanup_free_ char *text = NULL;
    CtlTableStyle style = {.header = true};
    ASSERT_OK(ctl_table_render(t, &style, &text));
    ASSERT_STREQ(text, "NAME  SIZE  ERROR\n");
}

static void test_progress_eta(void) {
    char buf[CTL_DURATION_MAX];
    CtlProgress p = {.items = 0, .items_total = 100, .elapsed_usec = 10 * SEC};
    ctl_progress_eta(&p, buf);
    ASSERT_STREQ(buf, CTL_PROGRESS_UNKNOWN);
    p.items = 50;
    ctl_progress_eta(&p, buf);
    ASSERT_STREQ(buf, "10s");
    /* Nearly done: never "0" while something is left. */
    p.items = 99999;
    p.items_total = 100000;
    ctl_progress_eta(&p, buf);
    ASSERT_STREQ(buf, "1s");
    p.items = p.items_total;
    ctl_progress_eta(&p, buf);
    ASSERT_STREQ(buf, "0");
}

static void test_progress_line(void) {
    char line[CTL_PROGRESS_LINE_MAX];
    CtlProgress p = {.state = "running",
                     .has_percent = true,
                     .percent = 50.0,
                     .items = 50,
                     .items_total = 100,
                     .bytes = 10 * MIB,
                     .elapsed_usec = 10 * SEC};
    ctl_progress_line(&p, 80, line, sizeof(line));
    ASSERT(ctl_text_width(line) <= 80);
    ASSERT_CONTAINS(line, " 50.0%  50/100 items  5.0 items/s  1.0M/s  ETA 10s");
    ASSERT(line[0] == '[');
    /* Half of the bar is done. */
    const char *close = strchr(line, ']');
    ASSERT(close);
    size_t bar = (size_t) (close - line - 1), done = strspn(line + 1, "#");
    ASSERT_EQ_INT(done, bar / 2);

    /* Too narrow for a bar: the figures alone, cut to the width. */
    ctl_progress_line(&p, 30, line, sizeof(line));
    ASSERT(line[0] != '[');
    ASSERT_EQ_INT(strlen(line), 30);

    /* No limit: the widest bar. */
    ctl_progress_line(&p, 0, line, sizeof(line));
    ASSERT_EQ_INT(strchr(line, ']') - line - 1, CTL_PROGRESS_BAR_MAX);

    /* Before the totals are known: what happens, never "0/0 items  0.0 items/s". */
    CtlProgress early = {.state = "running", .has_percent = true, .elapsed_usec = 2 * SEC};
    ctl_progress_line(&early, 80, line, sizeof(line));
    ASSERT_CONTAINS(line, "] starting...  2s");
    ASSERT(!strstr(line, "items"));
    early.phase = "prelude";
    ctl_progress_line(&early, 80, line, sizeof(line));
    ASSERT_CONTAINS(line, "] listing collections...  2s");
    early.phase = "connect";
    early.items_total = 100; /* a phase before the documents wins over figures */
    ctl_progress_line(&early, 80, line, sizeof(line));
    ASSERT_CONTAINS(line, "connecting...");
    early.state = "queued";
    ctl_progress_line(&early, 80, line, sizeof(line));
    ASSERT_CONTAINS(line, "] queued  2s");

    /* Past the documents: a full bar and the phase, not a percentage stuck at 99.9 nor ETA. */
    static const struct {
        const char *phase, *text;
    } after[] = {{"oplog", "capturing the oplog..."},
                 {"commit", "finishing the upload..."},
                 {"indexes", "building indexes..."},
                 {"done", "finishing..."}};
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        CtlProgress late = p;
        late.phase = after[i].phase;
        late.percent = 99.9;
        late.items = late.items_total = 900;
        ctl_progress_line(&late, 80, line, sizeof(line));
        ASSERT_CONTAINS(line, after[i].text);
        ASSERT_CONTAINS(line, "900/900 items  10.0M  ");
        ASSERT(!strstr(line, "%") && !strstr(line, "ETA"));
        ASSERT(strchr(line, '-') == NULL || strchr(line, '-') > strchr(line, ']'));
    }
    /* The phases the documents measure keep the figures. */
    for (const char *const *ph = (const char *const[]){"dump", "restore", "replay", "verify", NULL};
         *ph; ph++) {
        CtlProgress main_phase = p;
        main_phase.phase = *ph;
        ctl_progress_line(&main_phase, 80, line, sizeof(line));
        ASSERT_CONTAINS(line, " 50.0%  50/100 items  5.0 items/s  1.0M/s  ETA 10s");
        ASSERT(ctl_progress_phase_text(*ph) == NULL);
    }

    /* A task without figures (a verification): its state and elapsed time. */
    CtlProgress v = {.state = "running", .elapsed_usec = 3 * SEC};
    ctl_progress_line(&v, 80, line, sizeof(line));
    ASSERT_STREQ(line, "running  3s");
}

static void test_exit_codes(void) {
    ASSERT_EQ_INT(ctl_exit_for_error("io.mongosnap1.Error.NoSuchPolicy", -ENOENT),
                  CTL_EXIT_NOT_FOUND);
    ASSERT_EQ_INT(ctl_exit_for_error("io.mongosnap1.Error.NoSuchRestore", -ENXIO),
                  CTL_EXIT_NOT_FOUND);
    ASSERT_EQ_INT(ctl_exit_for_error("io.mongosnap1.Error.AccessDenied", -EACCES),
                  CTL_EXIT_ACCESS_DENIED);
    ASSERT_EQ_INT(ctl_exit_for_error("org.freedesktop.DBus.Error.AccessDenied", -EACCES),
                  CTL_EXIT_ACCESS_DENIED);
    ASSERT_EQ_INT(ctl_exit_for_error("org.freedesktop.DBus.Error.ServiceUnknown", -EHOSTUNREACH),
                  CTL_EXIT_UNREACHABLE);
    ASSERT_EQ_INT(ctl_exit_for_error("io.mongosnap1.Error.InvalidArgument", -EINVAL),
                  CTL_EXIT_USAGE);
    ASSERT_EQ_INT(ctl_exit_for_error("io.mongosnap1.Error.Busy", -EBUSY), CTL_EXIT_FAILED);
    ASSERT_EQ_INT(ctl_exit_for_error("System.Error.ECONNRESET", -ECONNRESET), CTL_EXIT_UNREACHABLE);
    ASSERT_EQ_INT(ctl_exit_for_error(NULL, -ECONNREFUSED), CTL_EXIT_UNREACHABLE);
    ASSERT_EQ_INT(ctl_exit_for_error(NULL, -EPERM), CTL_EXIT_ACCESS_DENIED);
    ASSERT_EQ_INT(ctl_exit_for_error(NULL, -ENOMEM), CTL_EXIT_FAILED);
}

static void test_json(void) {
    _cleanup_free_ char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    ASSERT(f);
    CtlJson j;
    ctl_json_init(&j, f);
    ctl_json_begin_array(&j);
    ctl_json_begin_object(&j);
    ctl_json_field_string(&j, "id", "a\"b\\c\n\x01");
    ctl_json_field_uint(&j, "items", 900);
    ctl_json_field_double(&j, "progress", 12.5);
    ctl_json_field_time(&j, "create_time", SEC);
    ctl_json_field_time(&j, "expire_time", 0);
    ctl_json_key(&j, "tags");
    ctl_json_begin_array(&j);
    ctl_json_string(&j, "x");
    ctl_json_bool(&j, false);
    ctl_json_string(&j, NULL);
    ctl_json_end_array(&j);
    ctl_json_end_object(&j);
    ctl_json_begin_object(&j);
    ctl_json_end_object(&j);
    ctl_json_end_array(&j);
    /* Top-level values follow each other as JSON lines. */
    ctl_json_begin_object(&j);
    ctl_json_end_object(&j);
    ctl_json_begin_object(&j);
    ctl_json_field_uint(&j, "n", 2);
    ctl_json_end_object(&j);
    ASSERT(fclose(f) == 0);
    ASSERT_STREQ(buf, "[{\"id\":\"a\\\"b\\\\c\\n\\u0001\",\"items\":900,\"progress\":12.5,"
                      "\"create_time\":\"1970-01-01T00:00:01Z\",\"create_time_usec\":1000000,"
                      "\"expire_time\":null,\"expire_time_usec\":0,"
                      "\"tags\":[\"x\",false,null]},{}]\n"
                      "{}\n{\"n\":2}\n");
}

MS_TEST_MAIN(TEST_CASE(test_size), TEST_CASE(test_duration), TEST_CASE(test_timestamp),
             TEST_CASE(test_relative), TEST_CASE(test_ellipsize), TEST_CASE(test_snake_case),
             TEST_CASE(test_uri_scrub), TEST_CASE(test_table_natural),
             TEST_CASE(test_table_fits_width), TEST_CASE(test_table_empty),
             TEST_CASE(test_progress_eta), TEST_CASE(test_progress_line),
             TEST_CASE(test_exit_codes), TEST_CASE(test_json))

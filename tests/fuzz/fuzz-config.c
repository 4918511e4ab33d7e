/* libFuzzer target: policy files and mongosnap.conf (config/conf.c, ini-schema.c, timespan.c).
 *
 * Input: policy \0 agent-conf \0 assignment \0 timespan (missing parts are empty).
 *   - the policy is parsed; if it parses, its canonical text (ms_policy_to_ini) must parse back
 *     to an equal policy (ms_policy_equal);
 *   - the assignment ("Key=value", as mongosnapctl edit takes it) is applied to that policy (or
 *     to a minimal one): on failure the policy must be unchanged, on success the edited policy
 *     must round-trip through its text too, and the key must read back (ms_policy_get_setting);
 *   - the agent configuration is parsed;
 *   - the time span is parsed; what ms_timespan_format() makes of it must parse back to the
 *     same value.
 * Any broken promise aborts: a real finding. */
#include "fuzz-common.h"

#include "config/conf.h"

#define POLICY_NAME "nightly"
#define POLICY_PATH "/etc/mongosnap/policies.d/nightly.conf"
#define AGENT_PATH "/etc/mongosnap/mongosnap.conf"
#define MINIMAL_POLICY "[Policy]\nSource=mongodb://backup@db1/?replicaSet=rs0\n"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void) argc;
    (void) argv;
    fuzz_setup();
    return 0;
}

static void check_round_trip(const MsPolicy *p, const char *what) {
    MsError e = MS_ERROR_INIT;
    char *text = NULL;
    int r = ms_policy_to_ini(p, &text, &e);
    FUZZ_CHECK(r == 0, "%s: ms_policy_to_ini failed: %s", what, e.message);
    MsPolicy *again = NULL;
    r = ms_policy_parse_string(POLICY_NAME, POLICY_PATH, text, &again, &e);
    FUZZ_CHECK(r == 0, "%s: the canonical text does not parse back: %s\n--- text:\n%s", what,
               e.message, text);
    FUZZ_CHECK(ms_policy_equal(p, again),
               "%s: the canonical text parses back to a different policy\n--- text:\n%s", what,
               text);
    /* And the text of the copy is the same text: the canonical form is a fixed point. */
    char *text2 = NULL;
    r = ms_policy_to_ini(again, &text2, &e);
    FUZZ_CHECK(r == 0 && strcmp(text, text2) == 0,
               "%s: the canonical text is not stable\n--- first:\n%s\n--- second:\n%s", what, text,
               text2 ? text2 : "(none)");
    free(text2);
    free(text);
    ms_policy_free(again);
}

static void fuzz_assignment(MsPolicy *p, const char *assignment) {
    MsError e = MS_ERROR_INIT;
    MsPolicy *before = NULL;
    FUZZ_CHECK(ms_policy_dup(p, &before, &e) == 0, "ms_policy_dup failed: %s", e.message);
    FUZZ_CHECK(ms_policy_equal(p, before), "a duplicated policy differs from its original");
    int r = ms_policy_apply_assignment(p, assignment, &e);
    fuzz_say("assignment: %s\n", r < 0 ? e.message : "applied");
    if (r < 0) {
        FUZZ_CHECK(ms_error_is_set(&e), "a refused assignment without a message");
        FUZZ_CHECK(ms_policy_equal(p, before), "a refused assignment changed the policy");
    } else {
        check_round_trip(p, "after the assignment");
        /* The key it named reads back. */
        const char *eq = strchr(assignment, '=');
        char *key = strndup(assignment, (size_t) (eq - assignment));
        /* Trimmed as the assignment parser trims (config/ini-schema.h ascii_isblank: space, tab,
         * CR, VT, FF), not just spaces and tabs: the campaign's first finding was this harness
         * stricter than the parser. */
        char *trimmed = key;
        while (*trimmed && strchr(" \t\r\v\f", *trimmed))
            trimmed++;
        for (size_t n = strlen(trimmed); n > 0 && strchr(" \t\r\v\f", trimmed[n - 1]); n--)
            trimmed[n - 1] = '\0';
        char *value = NULL;
        MsError e2 = MS_ERROR_INIT;
        FUZZ_CHECK(ms_policy_get_setting(p, trimmed, &value, &e2) == 0,
                   "key '%s' was assigned but cannot be read: %s", trimmed, e2.message);
        free(value);
        free(key);
    }
    ms_policy_free(before);
}

static void fuzz_timespan(const char *s) {
    uint64_t usec = 0;
    int r = ms_timespan_parse(s, &usec);
    fuzz_say("timespan: %s\n", r < 0 ? "refused" : "parsed");
    if (r < 0)
        return;
    char buf[MS_TIMESPAN_MAX];
    ms_timespan_format(usec, buf);
    uint64_t again = 0;
    FUZZ_CHECK(ms_timespan_parse(buf, &again) == 0 && again == usec,
               "time span '%s' = %llu us formats as '%s', which parses as %llu", s,
               (unsigned long long) usec, buf, (unsigned long long) again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzInput in = {data, size}, policy_part, agent_part, assign_part, span_part, rest;
    fuzz_split(in, 0, &policy_part, &rest);
    fuzz_split(rest, 0, &agent_part, &rest);
    fuzz_split(rest, 0, &assign_part, &span_part);
    char *policy_text = fuzz_strdup(policy_part);
    char *agent_text = fuzz_strdup(agent_part);
    char *assignment = fuzz_strdup(assign_part);
    char *span = fuzz_strdup(span_part);

    MsError e = MS_ERROR_INIT;
    MsPolicy *p = NULL;
    int r = ms_policy_parse_string(POLICY_NAME, POLICY_PATH, policy_text, &p, &e);
    fuzz_say("policy: %s\n", r < 0 ? e.message : "parsed");
    if (r < 0) {
        FUZZ_CHECK(ms_error_is_set(&e) && e.message[0], "policy refused without a message");
        ms_error_clear(&e);
        r = ms_policy_parse_string(POLICY_NAME, POLICY_PATH, MINIMAL_POLICY, &p, &e);
        FUZZ_CHECK(r == 0, "the minimal policy does not parse: %s", e.message);
    } else
        check_round_trip(p, "parsed policy");
    FUZZ_CHECK(ms_policy_check(p, &e) == 0, "a parsed policy fails ms_policy_check: %s", e.message);
    fuzz_assignment(p, assignment);
    ms_policy_free(p);

    MsAgentConfig *c = NULL;
    ms_error_clear(&e);
    r = ms_agent_config_parse_string(AGENT_PATH, agent_text, &c, &e);
    fuzz_say("agent: %s\n", r < 0 ? e.message : "parsed");
    if (r < 0)
        FUZZ_CHECK(ms_error_is_set(&e) && e.message[0], "agent config refused without a message");
    else {
        FUZZ_CHECK(c->worker_path && c->state_directory && c->policy_directory && c->node,
                   "a parsed agent config lacks a path or the node");
        FUZZ_CHECK(c->max_concurrent_tasks >= MS_MAX_CONCURRENT_TASKS_MIN &&
                       c->max_concurrent_tasks <= MS_MAX_CONCURRENT_TASKS_MAX,
                   "MaxConcurrentTasks=%u out of range", c->max_concurrent_tasks);
        ms_agent_config_free(c);
    }

    fuzz_timespan(span);
    free(policy_text);
    free(agent_text);
    free(assignment);
    free(span);
    return 0;
}

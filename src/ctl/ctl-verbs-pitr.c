/* mongosnapctl's point-in-time verbs: list-slices and verify-chain (Policy.ListSlices and
 * Policy.VerifyChain). Restoring to a time is `restore POLICY --time` (ctl-verbs-task.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/strv.h"
#include "common/timeutil.h"
#include "ctl-format.h"
#include "ctl-json.h"
#include "ctl.h"
#include "mongosnap/mongosnap.h"

/* Reading a long chain from S3 takes a while: wait as long as a resync may. */
#define CHAIN_TIMEOUT_USEC (30ULL * 60ULL * 1000000ULL)

static int policy_call(Ctl *ctl, const char *verb, const char *name, const char *method,
                       sd_bus_message **ret_reply) {
    sd_bus *bus;
    int code = ctl_bus(ctl, &bus);
    if (code != CTL_EXIT_OK)
        return code;
    (void) sd_bus_set_method_call_timeout(bus, CHAIN_TIMEOUT_USEC);
    return ctl_object_call(ctl, CTL_OBJECT_POLICY, verb, name, method, ret_reply, NULL, NULL);
}

int verb_list_slices(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = policy_call(ctl, "list-slices", argv[1], "ListSlices", &reply);
    if (code != CTL_EXIT_OK)
        return code;
    CtlJson j;
    if (ctl->args.json) {
        ctl_json_init(&j, stdout);
        ctl_json_begin_array(&j);
    } else
        printf("%-20s  %-20s  %-5s  %s\n", "START", "END", "IDLE", "KEY");
    int r = sd_bus_message_enter_container(reply, 'a', MONGOSNAP_SLICE_ROW);
    size_t n = 0;
    const char *key;
    uint64_t start, end;
    int idle;
    while (r >= 0 && (r = sd_bus_message_read(reply, MONGOSNAP_SLICE_ROW, &key, &start, &end,
                                              &idle)) > 0) {
        char a[MS_ISO8601_MAX], b[MS_ISO8601_MAX];
        ms_format_iso8601(start, a);
        ms_format_iso8601(end, b);
        if (ctl->args.json) {
            ctl_json_begin_object(&j);
            ctl_json_field_string(&j, "key", key);
            ctl_json_field_time(&j, "start", start);
            ctl_json_field_time(&j, "end", end);
            ctl_json_field_bool(&j, "idle", idle);
            ctl_json_end_object(&j);
        } else
            printf("%-20s  %-20s  %-5s  %s\n", a, b, idle ? "yes" : "no", key);
        n++;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(reply);
    if (r < 0)
        return ctl_fail_bus("list-slices: unexpected reply", NULL, r);
    if (ctl->args.json) {
        ctl_json_end_array(&j);
        putchar('\n');
    } else
        printf("\n%zu slice(s) listed.\n", n);
    return CTL_EXIT_OK;
}

int verb_verify_chain(Ctl *ctl, int argc, char **argv) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int code = policy_call(ctl, "verify-chain", argv[1], "VerifyChain", &reply);
    if (code != CTL_EXIT_OK)
        return code;
    uint64_t entries, damaged, gaps;
    int r = sd_bus_message_read(reply, "ttt", &entries, &damaged, &gaps);
    uint64_t *chains = NULL;
    size_t n_chains = 0;
    if (r >= 0)
        r = sd_bus_message_enter_container(reply, 'a', MONGOSNAP_RANGE_ROW);
    uint64_t from, to;
    while (r >= 0 && (r = sd_bus_message_read(reply, MONGOSNAP_RANGE_ROW, &from, &to)) > 0) {
        uint64_t *g = realloc(chains, (n_chains + 1) * 2 * sizeof(*g));
        if (!g) {
            r = -ENOMEM;
            break;
        }
        chains = g;
        chains[2 * n_chains] = from;
        chains[2 * n_chains + 1] = to;
        n_chains++;
    }
    if (r >= 0)
        r = sd_bus_message_exit_container(reply);
    _cleanup_(ms_strv_freep) char **problems = NULL;
    if (r >= 0)
        r = sd_bus_message_read_strv(reply, &problems);
    if (r < 0) {
        free(chains);
        return ctl_fail_bus("verify-chain: unexpected reply", NULL, r);
    }
    if (ctl->args.json) {
        CtlJson j;
        ctl_json_init(&j, stdout);
        ctl_json_begin_object(&j);
        ctl_json_field_uint(&j, "entries", entries);
        ctl_json_field_uint(&j, "damaged", damaged);
        ctl_json_field_uint(&j, "gaps", gaps);
        ctl_json_key(&j, "chains");
        ctl_json_begin_array(&j);
        for (size_t i = 0; i < n_chains; i++) {
            ctl_json_begin_object(&j);
            ctl_json_field_time(&j, "from", chains[2 * i]);
            ctl_json_field_time(&j, "to", chains[2 * i + 1]);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_key(&j, "problems");
        ctl_json_begin_array(&j);
        for (char **p = problems; p && *p; p++)
            ctl_json_string(&j, *p);
        ctl_json_end_array(&j);
        ctl_json_end_object(&j);
        putchar('\n');
    } else {
        printf("%llu oplog entries in %zu chain(s), %llu gap(s), %llu damaged slice(s)\n",
               (unsigned long long) entries, n_chains, (unsigned long long) gaps,
               (unsigned long long) damaged);
        for (size_t i = 0; i < n_chains; i++) {
            char a[CTL_TIMESTAMP_MAX], b[CTL_TIMESTAMP_MAX];
            ctl_format_timestamp(chains[2 * i], a);
            ctl_format_timestamp(chains[2 * i + 1], b);
            printf("  chain %zu: %s – %s\n", i + 1, a, b);
        }
        for (char **p = problems; p && *p; p++)
            fprintf(stderr, "mongosnapctl: verify-chain: %s\n", *p);
    }
    free(chains);
    /* Damage fails the check; a gap is reported (it was logged when it happened) but is the
     * oplog's doing, not the store's. */
    return damaged > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}

/* GetLog, shared by the Manager, Policy, Snapshot and Restore objects: Event Log entries read
 * back from the journal as (cursor, realtime usec, fields). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "eventlog/eventlog.h"

#define FIELD_NUMBER_MAX 24

typedef struct LogReply {
    sd_bus_message *reply;
} LogReply;

static int append_field(sd_bus_message *m, const char *name, const char *value) {
    if (!value)
        return 0;
    return sd_bus_message_append(m, "{ss}", name, value);
}

static int append_number(sd_bus_message *m, const char *name, bool has, uint64_t v) {
    if (!has)
        return 0;
    char buf[FIELD_NUMBER_MAX];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return sd_bus_message_append(m, "{ss}", name, buf);
}

static int append_entry(const MsEventEntry *en, void *userdata) {
    sd_bus_message *m = ((LogReply *) userdata)->reply;
    int r = sd_bus_message_open_container(m, 'r', "sta{ss}");
    if (r >= 0)
        r = sd_bus_message_append(m, "st", en->cursor ? en->cursor : "", en->realtime_usec);
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "{ss}");
    if (r >= 0 && en->kind >= 0) {
        char id[SD_ID128_STRING_MAX];
        sd_id128_to_string(ms_event_kind_id(en->kind), id);
        r = append_field(m, "MESSAGE_ID", id);
        if (r >= 0)
            r = append_field(m, MS_EVENT_FIELD_EVENT, ms_event_kind_to_string(en->kind));
    }
    if (r >= 0)
        r = append_number(m, "PRIORITY", en->priority >= 0, (uint64_t) en->priority);
    if (r >= 0)
        r = append_field(m, "MESSAGE", en->message);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_POLICY, en->policy);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_TASK, en->task);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_NODE, en->node);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_NAMESPACE, en->ns);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_SNAPSHOT, en->snapshot);
    if (r >= 0)
        r = append_field(m, MS_EVENT_FIELD_ERROR, en->error);
    if (r >= 0)
        r = append_number(m, MS_EVENT_FIELD_ITEMS, en->has_items, en->items);
    if (r >= 0)
        r = append_number(m, MS_EVENT_FIELD_BYTES, en->has_bytes, en->bytes);
    if (r >= 0)
        r = append_number(m, MS_EVENT_FIELD_ELAPSED, en->has_elapsed, en->elapsed_usec);
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    return r;
}

int bus_reply_log(sd_bus_message *message, const char *policy, const char *task,
                  const char *after_cursor, uint32_t max_entries, sd_bus_error *ret_error) {
    _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
    int r = sd_bus_message_new_method_return(message, &reply);
    if (r < 0)
        return r;
    r = sd_bus_message_open_container(reply, 'a', "(sta{ss})");
    if (r < 0)
        return r;
    MsEventFilter filter = {
        .policy = policy,
        .task = task,
        .after_cursor = after_cursor && after_cursor[0] ? after_cursor : NULL,
    };
    LogReply lr = {.reply = reply};
    MsError e = MS_ERROR_INIT;
    r = ms_eventlog_read(&filter, max_entries, append_entry, &lr, NULL, &e);
    if (r < 0 && e.code == EINVAL)
        return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_INVALID_ARGUMENT, e.message);
    if (r < 0)
        return sd_bus_error_set(ret_error, MONGOSNAP_ERROR_JOURNAL_UNAVAILABLE, e.message);
    r = sd_bus_message_close_container(reply);
    if (r < 0)
        return r;
    return sd_bus_send(NULL, reply, NULL);
}

/* mongosnapd: the agent; an sd-event loop serving io.mongosnap1 and running workers. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent/agent-manager.h"
#include "agent/agent-timer.h"
#include "bus/bus.h"
#include "common/log.h"
#include "config.h"
#include "mongosnap/mongosnap.h"

/* STATUS= is re-sent when its text changes, checked this often. */
#define STATUS_INTERVAL_USEC (1000u * 1000u)
#define STATUS_MAX 512
#define EXIT_USAGE 2

typedef struct Daemon {
    sd_event *event;
    sd_bus *bus;
    Manager *manager;
    char status[STATUS_MAX];
    sd_event_source *status_timer;
    AgentTimers *timers;
} Daemon;

typedef struct Args {
    ManagerOptions manager;
    bool user_bus;
} Args;

static void help(void) {
    printf("mongosnapd %s: the mongosnap agent (D-Bus service %s).\n\n"
           "Usage: mongosnapd [OPTIONS]\n\n"
           "  --config PATH      agent configuration (default %s)\n"
           "  --policy-dir DIR   policy files (default: PolicyDirectory=, %s)\n"
           "  --state-dir DIR    catalog and state (default: StateDirectory=, %s)\n"
           "  --worker PATH      the worker binary (default: WorkerPath=)\n"
           "  --timer-dir DIR    where the policies' timer drop-ins go (default %s;\n"
           "                     elsewhere, systemd is only told when it is on the bus)\n"
           "  --user-bus         serve on the session bus instead of the system bus\n"
           "  -v, --verbose      debug output\n"
           "  -h, --help         this text\n\n"
           "The system bus is the one $DBUS_SYSTEM_BUS_ADDRESS names, if set.\n"
           "SIGHUP reloads the policies and [Restore]; SIGTERM stops running tasks (recorded as "
           "interrupted)\n"
           "and exits.\n",
           MONGOSNAP_VERSION, MONGOSNAP_BUS_NAME, MS_AGENT_CONFIG_PATH, MS_DEFAULT_POLICY_DIRECTORY,
           MS_DEFAULT_STATE_DIRECTORY, MANAGER_TIMER_DIRECTORY);
}

static int parse_args(int argc, char **argv, Args *a) {
    enum {
        OPT_CONFIG = 256,
        OPT_POLICY_DIR,
        OPT_STATE_DIR,
        OPT_WORKER,
        OPT_USER_BUS,
        OPT_TIMER_DIR
    };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"policy-dir", required_argument, NULL, OPT_POLICY_DIR},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"worker", required_argument, NULL, OPT_WORKER},
        {"user-bus", no_argument, NULL, OPT_USER_BUS},
        {"timer-dir", required_argument, NULL, OPT_TIMER_DIR},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0) {
        switch (c) {
        case 'h':
            help();
            exit(EXIT_SUCCESS);
        case 'v':
            ms_log_set_max_level(MS_LOG_DEBUG);
            break;
        case OPT_CONFIG:
            a->manager.config_path = optarg;
            break;
        case OPT_POLICY_DIR:
            a->manager.policy_directory = optarg;
            break;
        case OPT_STATE_DIR:
            a->manager.state_directory = optarg;
            break;
        case OPT_WORKER:
            a->manager.worker_path = optarg;
            break;
        case OPT_USER_BUS:
            a->user_bus = true;
            break;
        case OPT_TIMER_DIR:
            a->manager.timer_directory = optarg;
            break;
        default:
            return -EINVAL;
        }
    }
    if (optind < argc) {
        log_error("unexpected argument '%s' (see --help)", argv[optind]);
        return -EINVAL;
    }
    return 0;
}

static void send_status(Daemon *d, bool force) {
    char status[STATUS_MAX];
    manager_format_status(d->manager, status, sizeof(status));
    if (!force && strcmp(status, d->status) == 0)
        return;
    snprintf(d->status, sizeof(d->status), "%s", status);
    (void) sd_notifyf(false, "STATUS=%s", status);
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Daemon *d = userdata;
    send_status(d, false);
    (void) sd_event_source_set_time(s, usec + STATUS_INTERVAL_USEC);
    return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Daemon *d = userdata;
    log_info("stopping (%s)", si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
    (void) sd_notify(false, "STOPPING=1\nSTATUS=stopping running tasks");
    manager_begin_shutdown(d->manager);
    return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Daemon *d = userdata;
    (void) sd_notify(false, "RELOADING=1");
    MsError e = MS_ERROR_INIT;
    if (manager_reload_config(d->manager, &e) < 0)
        log_error("reloading the configuration failed, it stays as it was: %s", e.message);
    e = (MsError) MS_ERROR_INIT;
    if (manager_reload_policies(d->manager, &e) < 0)
        log_error("reloading policies failed, the loaded ones stay: %s", e.message);
    (void) sd_notify(false, "READY=1");
    send_status(d, true);
    return 0;
}

static int setup_signals(Daemon *d) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    /* sd_event_add_child() needs SIGCHLD blocked. */
    sigaddset(&mask, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return -errno;
    int r = sd_event_add_signal(d->event, NULL, SIGTERM, on_sigterm, d);
    if (r >= 0)
        r = sd_event_add_signal(d->event, NULL, SIGINT, on_sigterm, d);
    if (r >= 0)
        r = sd_event_add_signal(d->event, NULL, SIGHUP, on_sighup, d);
    /* A client that goes away mid-reply must not kill the agent. */
    signal(SIGPIPE, SIG_IGN);
    return r;
}

static int setup_bus(Daemon *d, bool user_bus, MsError *e) {
    int r = user_bus ? sd_bus_open_user(&d->bus) : sd_bus_open_system(&d->bus);
    if (r < 0)
        return ms_error_set(e, -r, "cannot connect to the %s bus: %s", user_bus ? "user" : "system",
                            strerror(-r));
    r = bus_attach(d->manager, d->bus, e);
    if (r < 0)
        return r;
    r = sd_bus_request_name(d->bus, MONGOSNAP_BUS_NAME, 0);
    if (r < 0)
        return ms_error_set(e, -r,
                            "cannot take the bus name %s: %s (is another mongosnapd running, or "
                            "does the bus policy not allow it?)",
                            MONGOSNAP_BUS_NAME, strerror(-r));
    r = sd_bus_attach_event(d->bus, d->event, SD_EVENT_PRIORITY_NORMAL);
    if (r < 0)
        return ms_error_set(e, -r, "cannot attach the bus to the event loop: %s", strerror(-r));
    /* Without its bus the agent is unreachable: exit and let systemd restart it. */
    (void) sd_bus_set_exit_on_disconnect(d->bus, true);
    return 0;
}

static void daemon_done(Daemon *d) {
    sd_event_source_disable_unref(d->status_timer);
    manager_free(d->manager);
    agent_timers_free(d->timers); /* after the manager, which may announce changes until freed */
    if (d->bus) {
        (void) sd_bus_flush(d->bus);
        sd_bus_flush_close_unref(d->bus);
    }
    sd_event_unref(d->event);
}

static int run(const Args *a) {
    _cleanup_(daemon_done) Daemon d = {0};
    MsError e = MS_ERROR_INIT;
    int r = sd_event_default(&d.event);
    if (r < 0) {
        log_error("cannot create the event loop: %s", strerror(-r));
        return EXIT_FAILURE;
    }
    r = setup_signals(&d);
    if (r < 0) {
        log_error("cannot set up signal handling: %s", strerror(-r));
        return EXIT_FAILURE;
    }
    if (manager_new(d.event, &a->manager, &d.manager, &e) < 0 ||
        setup_bus(&d, a->user_bus, &e) < 0 ||
        agent_timers_attach(d.manager, d.bus, &d.timers, &e) < 0 ||
        manager_reload_policies(d.manager, &e) < 0) {
        log_error("%s", e.message);
        (void) sd_notifyf(false, "STATUS=failed to start: %s", e.message);
        return EXIT_FAILURE;
    }
    /* sd-event pings WATCHDOG=1 at half of $WATCHDOG_USEC when the service manager asks. */
    (void) sd_event_set_watchdog(d.event, true);
    uint64_t now;
    (void) sd_event_now(d.event, CLOCK_MONOTONIC, &now);
    (void) sd_event_add_time(d.event, &d.status_timer, CLOCK_MONOTONIC, now + STATUS_INTERVAL_USEC,
                             0, on_status_timer, &d);
    (void) sd_event_source_set_enabled(d.status_timer, SD_EVENT_ON);

    char status[STATUS_MAX];
    manager_format_status(d.manager, status, sizeof(status));
    snprintf(d.status, sizeof(d.status), "%s", status);
    (void) sd_notifyf(false, "READY=1\nSTATUS=%s", status);
    log_info("mongosnapd %s ready: %s", MONGOSNAP_VERSION, status);

    r = sd_event_loop(d.event);
    if (r < 0) {
        log_error("event loop failed: %s", strerror(-r));
        return EXIT_FAILURE;
    }
    log_info("stopped");
    return r;
}

int main(int argc, char **argv) {
    Args a = {0};
    if (parse_args(argc, argv, &a) < 0)
        return EXIT_USAGE;
    return run(&a);
}

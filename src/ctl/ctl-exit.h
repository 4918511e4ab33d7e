/* mongosnapctl's exit codes, and which one a D-Bus error means. */
#pragma once

/* Exit codes scripts can trust; documented in --help and in mongosnapctl(1). */
typedef enum CtlExit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAILED = 1,        /* the operation, or the awaited task, failed */
    CTL_EXIT_USAGE = 2,         /* unknown verb or option, bad argument or setting */
    CTL_EXIT_UNREACHABLE = 3,   /* no bus, or no mongosnapd on it */
    CTL_EXIT_ACCESS_DENIED = 4, /* a privileged method called without the privilege */
    CTL_EXIT_NOT_FOUND = 5,     /* no such policy, snapshot or restore */
    CTL_EXIT_INTERRUPTED = 130, /* SIGINT while waiting: 128 + 2, as shells report it */
} CtlExit;

/* The exit code for a failed call: by the D-Bus error's name when there is one, else by the
 * negative errno r. */
CtlExit ctl_exit_for_error(const char *error_name, int r);

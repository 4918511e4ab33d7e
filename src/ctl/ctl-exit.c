/* mongosnapctl's exit codes, and which one a D-Bus error means. */
#include "ctl-exit.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "mongosnap/mongosnap.h"

#define SYSTEM_ERROR_PREFIX "System.Error."

typedef struct ErrorExit {
    const char *name;
    CtlExit exit;
} ErrorExit;

static const ErrorExit error_exits[] = {
    {MONGOSNAP_ERROR_NO_SUCH_POLICY, CTL_EXIT_NOT_FOUND},
    {MONGOSNAP_ERROR_NO_SUCH_SNAPSHOT, CTL_EXIT_NOT_FOUND},
    {MONGOSNAP_ERROR_NO_SUCH_RESTORE, CTL_EXIT_NOT_FOUND},
    /* An object that went away between listing it and calling it. */
    {"org.freedesktop.DBus.Error.UnknownObject", CTL_EXIT_NOT_FOUND},
    {MONGOSNAP_ERROR_ACCESS_DENIED, CTL_EXIT_ACCESS_DENIED},
    {"org.freedesktop.DBus.Error.AccessDenied", CTL_EXIT_ACCESS_DENIED},
    {"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", CTL_EXIT_ACCESS_DENIED},
    /* What the user asked for is wrong: a refused setting or option, as a usage error. */
    {MONGOSNAP_ERROR_INVALID_ARGUMENT, CTL_EXIT_USAGE},
    /* The agent needs a confirmation the caller can give (--force): as for a refused setting. */
    {MONGOSNAP_ERROR_NEEDS_FORCE, CTL_EXIT_USAGE},
    {"org.freedesktop.DBus.Error.InvalidArgs", CTL_EXIT_USAGE},
    {"org.freedesktop.DBus.Error.ServiceUnknown", CTL_EXIT_UNREACHABLE},
    {"org.freedesktop.DBus.Error.NameHasNoOwner", CTL_EXIT_UNREACHABLE},
    {"org.freedesktop.DBus.Error.NoReply", CTL_EXIT_UNREACHABLE},
    {"org.freedesktop.DBus.Error.Timeout", CTL_EXIT_UNREACHABLE},
    {"org.freedesktop.DBus.Error.Disconnected", CTL_EXIT_UNREACHABLE},
    {"org.freedesktop.DBus.Error.NoServer", CTL_EXIT_UNREACHABLE},
};

static CtlExit exit_for_errno(int r) {
    switch (-r) {
    case ECONNREFUSED:
    case ENOENT:
    case ENOTCONN:
    case ECONNRESET:
    case ETIMEDOUT:
    case EHOSTDOWN:
    case EHOSTUNREACH:
        return CTL_EXIT_UNREACHABLE;
    case EACCES:
    case EPERM:
        return CTL_EXIT_ACCESS_DENIED;
    default:
        return CTL_EXIT_FAILED;
    }
}

CtlExit ctl_exit_for_error(const char *error_name, int r) {
    /* sd-bus names local failures after their errno: "System.Error.ECONNRESET". */
    if (!error_name || strncmp(error_name, SYSTEM_ERROR_PREFIX, strlen(SYSTEM_ERROR_PREFIX)) == 0)
        return exit_for_errno(r);
    for (size_t i = 0; i < sizeof(error_exits) / sizeof(error_exits[0]); i++)
        if (strcmp(error_name, error_exits[i].name) == 0)
            return error_exits[i].exit;
    return CTL_EXIT_FAILED;
}

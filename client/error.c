/* error.c — ember_error helpers and the public ember_code_name. */
#include "client/error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const code_names[] = {
    "OK",        "CANCELLED",         "UNKNOWN",      "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS", "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",  "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *ember_code_name(int code)
{
    if (code < 0 || code >= (int)(sizeof code_names / sizeof code_names[0]))
        return "UNKNOWN";
    return code_names[code];
}

int ember_cli_error_set(ember_error *err, int code, int shard, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        err->shard = shard;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void ember_cli_error_clear(ember_error *err)
{
    if (err) {
        err->code = EMBER_E_OK;
        err->shard = -1;
        err->message[0] = '\0';
    }
}

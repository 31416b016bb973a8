/*
 * status.h — errors as values.
 *
 * Every fallible ember function returns an int status: 0 (EMBER_OK) on success,
 * otherwise one of the codes below, which are numerically equal to gRPC's status
 * codes so the server can hand them on unchanged. Details go into an optional
 * `ember_error *` (code + human message); callers that do not care pass NULL.
 *
 * Thread-safety: an ember_error belongs to its caller; functions here touch only
 * the error they are given.
 */
#ifndef EMBER_STATUS_H
#define EMBER_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ember_status {
    EMBER_OK = 0,
    EMBER_CANCELLED = 1,
    EMBER_UNKNOWN = 2,
    EMBER_INVALID_ARGUMENT = 3,
    EMBER_DEADLINE_EXCEEDED = 4,
    EMBER_NOT_FOUND = 5,
    EMBER_ALREADY_EXISTS = 6,
    EMBER_PERMISSION_DENIED = 7,
    EMBER_RESOURCE_EXHAUSTED = 8,
    EMBER_FAILED_PRECONDITION = 9,
    EMBER_ABORTED = 10,
    EMBER_OUT_OF_RANGE = 11,
    EMBER_UNIMPLEMENTED = 12,
    EMBER_INTERNAL = 13,
    EMBER_UNAVAILABLE = 14,
    EMBER_DATA_LOSS = 15,
    EMBER_UNAUTHENTICATED = 16,
} ember_status;

#define EMBER_ERROR_MSG_MAX 256

typedef struct ember_error {
    int code;                       /* an ember_status */
    char message[EMBER_ERROR_MSG_MAX];
} ember_error;

/* Records `code` and a printf-style message in `err` (if not NULL) and returns
 * `code`, so a failure path reads `return ember_error_set(err, ...);`. */
int ember_error_set(ember_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Resets `err` (if not NULL) to EMBER_OK with an empty message. */
void ember_error_clear(ember_error *err);

/* The upper-case gRPC name of a status code ("INVALID_ARGUMENT"); "UNKNOWN" for
 * codes outside the table. The string is static. */
const char *ember_status_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_STATUS_H */

/*
 * status.h — errors as values.
 *
 * Every fallible ember function returns an int status: 0 (EMBER_OK) on success,
 * otherwise an ember_status code, numerically equal to gRPC's status codes so the
 * server can hand them on unchanged. Details go into an optional `ember_error *`
 * (code + human message); callers that do not care pass NULL.
 *
 * The codes, ember_error and its helpers (ember_error_set, ember_error_clear,
 * ember_status_name) are ember's shared vocabulary in include/ember/types.h,
 * which libember's public header uses too; this header is where storage and the
 * layers above it take them from.
 *
 * Thread-safety: an ember_error belongs to its caller; the helpers touch only the
 * error they are given.
 */
#ifndef EMBER_STATUS_H
#define EMBER_STATUS_H

#include <stddef.h>

#include <ember/types.h>

#endif /* EMBER_STATUS_H */

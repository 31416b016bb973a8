/*
 * error.h — filling the public ember_error (client/include/ember/ember.h).
 *
 * Internal to libember and the tools built on it (emberctl). Named ember_cli_* so
 * it never clashes with storage/'s ember_error_set, which fills a different struct.
 * Thread-safety: touches only the error it is given.
 */
#ifndef EMBER_CLIENT_ERROR_H
#define EMBER_CLIENT_ERROR_H

#include "ember/ember.h"

/* Records code, shard (-1: none) and a printf-style message in `err` (if not
 * NULL) and returns `code`, so a failure path reads `return ember_cli_error_set(...)`. */
int ember_cli_error_set(ember_error *err, int code, int shard, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Resets `err` (if not NULL) to EMBER_E_OK, shard -1, empty message. */
void ember_cli_error_clear(ember_error *err);

#endif /* EMBER_CLIENT_ERROR_H */

/*
 * debug.h — test hooks of libember, for tests/integration only (not installed).
 */
#ifndef EMBER_CLIENT_DEBUG_H
#define EMBER_CLIENT_DEBUG_H

#include <stddef.h>
#include <stdint.h>

#include "ember/ember.h"

/* on = 1: every push (and erase) that succeeds on its first attempt is sent
 * once more with the same (client_id, sequence), as if its acknowledgement had
 * been lost and the library had retried it. The server must apply it once. */
void ember_client_debug_resend_pushes(ember_client *c, int on);

/* How many push (and erase) replies said `duplicate` (a retry the server had
 * already applied) since the client was opened. */
uint64_t ember_client_debug_duplicate_acks(const ember_client *c);

/* Value bytes per request before a shard's part is split into several requests
 * (0: the default, 16 MiB). Not thread-safe: set it before the client is used. */
void ember_client_debug_chunk_bytes(ember_client *c, size_t bytes);

#endif /* EMBER_CLIENT_DEBUG_H */

/*
 * shard_map.h — the key→shard function, shared by libember (which routes keys
 * with it) and ember-server (which refuses keys that do not map to its own
 * --shard-index among --shard-count). The contract, fixed forever, is
 * ember_shard_of's in client/include/ember/ember.h; this header declares the
 * same function for code that does not include the client's header.
 */
#ifndef EMBER_PROTO_SHARD_MAP_H
#define EMBER_PROTO_SHARD_MAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* In the message of the FAILED_PRECONDITION a server sends for a key that is
 * not its own ("key K belongs to shard E, not to this shard I of N ..."):
 * libember looks for it to check its shard list against the servers'. */
#define EMBER_NOT_OWNER_MARK "belongs to shard"

/* The shard of `key` among `shard_count` (0 or 1: 0). Pure; thread-safe. */
unsigned ember_shard_of(uint64_t key, unsigned shard_count);

/* The index of the first of the n little-endian uint64 keys at `keys` (any
 * alignment) whose ember_shard_of(key, shard_count) is not `self`; n when every
 * one is. Computes exactly ember_shard_of, several keys at a time (the server's
 * ownership check of every key of a request). Pure; thread-safe. */
size_t ember_shard_first_other(const uint8_t *keys, size_t n, unsigned shard_count,
                               unsigned self);

#ifdef __cplusplus
}
#endif

#endif

/*
 * hash.h — where a key lives: its hash, its bucket, its one-byte digest, and the
 * reserved key values. Shared by the CPU and GPU backends (EMBER_HD).
 *
 * Bucket hash: the 64-bit MurmurHash3 finaliser (fmix64) of the key. The client's
 * key→shard function (a later layer) must use a different mixer or seed, so that
 * the keys that reach one shard still spread over all of its buckets.
 *
 *   bucket  = high 64 bits of (hash * num_buckets)   (Lemire's fast range: any
 *             bucket count, no modulo, no power-of-two requirement)
 *   digest  = 7 bits of the hash (bits 0..6), stored in the slot's control byte;
 *             the control byte's top bit marks a free slot (empty or erased)
 *   group   = where probing starts inside the bucket, bits 8..15 of the hash
 *
 * Reserved keys: the four largest uint64 values (EMBER_KEY_RESERVED_MIN, in
 * include/ember/types.h, up to UINT64_MAX) are sentinels inside backends (empty,
 * erased, locked, spare), as in HierarchicalKV. No operation accepts them; a
 * request carrying one is refused whole.
 */
#ifndef EMBER_HASH_H
#define EMBER_HASH_H

#include <ember/types.h>

#include "hd.h"

#define EMBER_KEY_EMPTY        UINT64_C(0xFFFFFFFFFFFFFFFF)
#define EMBER_KEY_ERASED       UINT64_C(0xFFFFFFFFFFFFFFFE)
#define EMBER_KEY_LOCKED       UINT64_C(0xFFFFFFFFFFFFFFFD)

/* Slots per bucket and slots per probe group (the width compared at once). */
#define EMBER_BUCKET_SLOTS 128u
#define EMBER_GROUP_SLOTS  16u
#define EMBER_BUCKET_GROUPS (EMBER_BUCKET_SLOTS / EMBER_GROUP_SLOTS)

/* Control byte values: 0x00..0x7f = occupied with that digest. */
#define EMBER_CTRL_EMPTY  0x80u
#define EMBER_CTRL_ERASED 0xfeu

EMBER_HD int ember_key_is_reserved(uint64_t key)
{
    return key >= EMBER_KEY_RESERVED_MIN;
}

/* MurmurHash3 fmix64: a bijection on uint64 with full avalanche. */
EMBER_HD uint64_t ember_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    return k;
}

/* splitmix64's finaliser (Stafford variant 13): the counter-based generator's
 * mixer, and the base of the seeded hashes below. Independent of fmix64. */
EMBER_HD uint64_t ember_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

EMBER_HD uint64_t ember_key_hash(uint64_t key)
{
    return ember_fmix64(key);
}

EMBER_HD uint64_t ember_hash_bucket(uint64_t hash, uint64_t num_buckets)
{
#ifdef __CUDA_ARCH__
    return __umul64hi(hash, num_buckets);
#else
    return (uint64_t)(((unsigned __int128)hash * num_buckets) >> 64);
#endif
}

EMBER_HD uint8_t ember_hash_digest(uint64_t hash)
{
    return (uint8_t)(hash & 0x7fu);
}

EMBER_HD uint32_t ember_hash_group(uint64_t hash)
{
    return (uint32_t)((hash >> 8) & (EMBER_BUCKET_GROUPS - 1u));
}

#endif /* EMBER_HASH_H */

/*
 * shard_map.c — ember_shard_of, the key→shard function (its contract is in
 * client/include/ember/ember.h and proto/shard_map.h). In proto/, the codec both
 * sides share, so that the client routing keys (batch.c, emberctl's reshard and
 * import) and the server refusing keys that are not its own (server/shard.c,
 * server/admin.c) run the very same code; libember exports it.
 */
#include "proto/shard_map.h"

unsigned ember_shard_of(uint64_t key, unsigned shard_count)
{
    if (shard_count <= 1)
        return 0;
    /* mix: splitmix64's finaliser of key ^ a constant. The servers' buckets use
     * Murmur3's fmix64 of the raw key: a different function, so the keys of one
     * shard still spread over all its buckets. */
    uint64_t z = key ^ UINT64_C(0x5bd1e9955bd1e995);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    /* Jump consistent hash (Lamping & Veach 2014), their reference code. */
    int64_t b = -1, j = 0;
    while (j < (int64_t)shard_count) {
        b = j;
        z = z * UINT64_C(2862933555777941757) + 1;
        j = (int64_t)((double)(b + 1) * ((double)(INT64_C(1) << 31) / (double)((z >> 33) + 1)));
    }
    return (unsigned)b;
}

/*
 * shard_map.c — ember_shard_of, the key→shard function (its contract is in
 * client/include/ember/ember.h and proto/shard_map.h). In proto/, the codec both
 * sides share, so that the client routing keys (batch.c, emberctl's reshard and
 * import) and the server refusing keys that are not its own (server/shard.c,
 * server/admin.c) run the very same code; libember exports it.
 */
#include "proto/shard_map.h"

#include <string.h>

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

/* The same arithmetic as ember_shard_of, for SHARD_LANES keys at once: each
 * lane steps its own jump sequence, branch-free, until every lane is done. The
 * operations and their order are ember_shard_of's, so each lane's result is
 * bit for bit the same; interleaving independent lanes keeps the divider busy
 * instead of waiting on one key's chain and mispredicting its loop exit. Keys
 * of one shard (what a server checks) take from 1 to about ln(N) + 1 steps: on
 * the 2-core development machine, 65,536 keys of each shard in turn, 1.6-2x
 * faster per key than ember_shard_of's loop for 4, 8 and 16 shards (10-12 vs 21,
 * 26-30 vs 44-48, 27-36 vs 47-55 ns), but 0.5-0.6x for 2 shards, whose keys end
 * after a fixed 1 or 2 steps that the branch predictor learns: there the plain
 * loop runs. tests/bench/shard_map_bench measures both. */
enum { SHARD_LANES = 8 };

static uint64_t shard_mix(uint64_t key)
{
    uint64_t z = key ^ UINT64_C(0x5bd1e9955bd1e995);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

size_t ember_shard_first_other(const uint8_t *keys, size_t n, unsigned shard_count,
                               unsigned self)
{
    if (shard_count <= 1)
        return self == 0 ? n : 0;
    if (shard_count == 2) {
        for (size_t i = 0; i < n; i++) {
            uint64_t k;
            memcpy(&k, keys + 8 * i, 8);
            if (ember_shard_of(k, 2) != self)
                return i;
        }
        return n;
    }
    const int64_t cnt = (int64_t)shard_count;
    for (size_t i = 0; i < n; i += SHARD_LANES) {
        size_t m = n - i < SHARD_LANES ? n - i : SHARD_LANES;
        uint64_t z[SHARD_LANES];
        int64_t b[SHARD_LANES], j[SHARD_LANES];
        for (size_t l = 0; l < SHARD_LANES; l++) {
            uint64_t k;
            memcpy(&k, keys + 8 * (i + (l < m ? l : 0)), 8); /* spare lanes redo key i */
            z[l] = shard_mix(k);
            b[l] = -1;
            j[l] = 0;
        }
        int active = 1;
        while (active) {
            active = 0;
            for (size_t l = 0; l < SHARD_LANES; l++) {
                int go = j[l] < cnt;
                int64_t nb = go ? j[l] : b[l];
                uint64_t nz = go ? z[l] * UINT64_C(2862933555777941757) + 1 : z[l];
                int64_t nj = (int64_t)((double)(nb + 1) *
                                       ((double)(INT64_C(1) << 31) / (double)((nz >> 33) + 1)));
                b[l] = nb;
                z[l] = nz;
                j[l] = go ? nj : j[l];
                active |= j[l] < cnt;
            }
        }
        for (size_t l = 0; l < m; l++)
            if ((unsigned)b[l] != self)
                return i + l;
    }
    return n;
}

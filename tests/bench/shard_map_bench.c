/*
 * shard_map_bench — what the servers' ownership check costs per key
 * (proto/shard_map.h): ember_shard_first_other over 65,536 keys of one shard,
 * for each shard of N in turn, against calling ember_shard_of key by key (the
 * check as a plain loop). Rounds alternate the two, A,B,A,B, on one buffer.
 *
 *   build/tests/bench/shard_map_bench [--rounds R] [--quick]   (--quick: 1,024 keys, once)
 *
 * Prints ns/key for each and their ratio for N = 2, 4, 8, 16, 64.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/shard_map.h"


static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int rounds = 6, reps = 5;
    size_t nkeys = 65536;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            rounds = 1;
            reps = 1;
            nkeys = 1024;
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: shard_map_bench [--rounds R] [--quick]\n");
            return 2;
        }
    }
    static const unsigned counts[] = {2, 4, 8, 16, 64};
    uint64_t *keys = malloc(sizeof(uint64_t) * nkeys);
    if (!keys)
        return 1;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        unsigned n = counts[c];
        double plain = 0, blocked = 0;
        size_t sink = 0;
        for (int r = 0; r < rounds; r++)
            for (unsigned self = 0; self < n; self++) {
                size_t m = 0; /* keys of shard `self` */
                for (uint64_t k = 1; m < nkeys; k++) {
                    uint64_t key = k * UINT64_C(0x9E3779B97F4A7C15);
                    if (ember_shard_of(key, n) == self)
                        keys[m++] = key;
                }
                double t = now();
                for (int q = 0; q < reps; q++)
                    for (size_t i = 0; i < nkeys; i++)
                        sink += ember_shard_of(keys[i], n) != self;
                plain += now() - t;
                t = now();
                for (int q = 0; q < reps; q++)
                    sink += ember_shard_first_other((const uint8_t *)keys, nkeys, n, self);
                blocked += now() - t;
            }
        double per = 1e9 / ((double)rounds * reps * (double)nkeys * n);
        printf("shards %3u: ember_shard_of loop %6.1f ns/key, ember_shard_first_other %6.1f "
               "ns/key, ratio %.2f (%zu)\n",
               n, plain * per, blocked * per, plain / blocked, sink);
    }
    free(keys);
    return 0;
}

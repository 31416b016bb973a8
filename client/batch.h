/*
 * batch.h — what a pull or push does to its keys before anything is sent:
 * refuse reserved keys (EMBER_KEY_RESERVED_MIN and up, <ember/types.h>),
 * deduplicate, and group the unique keys by shard; for a push, sum equal keys'
 * gradients.
 *
 * After ember_batch_build(keys, n, S):
 *   m              unique keys, numbered 0..m-1 in shard order ("grouped" order):
 *   gkeys[g]       the unique keys, shard 0's first, then shard 1's, ...
 *   shard_off[s]   shard s holds grouped keys shard_off[s] .. shard_off[s+1]-1
 *                  (in the order of their first occurrence in the caller's keys)
 *   idx[i]         the grouped index of the caller's keys[i]
 *   gfirst[g]      the first i with idx[i] == g;  gcount[g]: how many i
 * so a pull's reply row for grouped key g goes to out[i] for every i with
 * idx[i] == g, and a push sends one row per grouped key.
 *
 * Buffers grow as needed and are kept for the next build: one ember_batch per
 * in-flight call, reused, allocates nothing once warm.
 *
 * Thread-safety: an ember_batch belongs to one thread at a time.
 */
#ifndef EMBER_CLIENT_BATCH_H
#define EMBER_CLIENT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "ember/ember.h"

struct ember_batch_slot {
    uint64_t key;
    uint32_t val, gen;
};

typedef struct ember_batch {
    size_t n, m;
    unsigned nshards;
    uint32_t *idx;        /* [n] */
    uint64_t *gkeys;      /* [m] */
    uint32_t *gfirst;     /* [m] */
    uint32_t *gcount;     /* [m] */
    size_t *shard_off;    /* [nshards + 1] */
    const float **rows;   /* [m], after ember_batch_merge */

    /* scratch, kept between builds */
    size_t cap_n, cap_m, cap_shards, cap_merged;
    uint32_t *b_uidx;     /* [n] first-occurrence index of keys[i] */
    uint64_t *b_ukeys;    /* [n] unique keys in first-occurrence order */
    uint32_t *b_ufirst;   /* [n] */
    uint32_t *b_ucount;   /* [n] */
    uint32_t *b_ushard;   /* [n] */
    size_t *b_cursor;     /* [nshards] */
    /* open-addressing map key → first-occurrence index, one cache line per probe;
     * a slot is used iff its gen == b_gen, so nothing is cleared per build */
    struct ember_batch_slot *b_slots;
    size_t b_hcap;
    uint32_t b_gen;
    float *b_merged;      /* summed rows of keys that occur more than once */
    size_t cap_rows;
} ember_batch;

void ember_batch_init(ember_batch *b);
void ember_batch_free(ember_batch *b);

/* Builds the grouping above for keys[0..n) over `nshards` shards (ember_shard_of).
 * Returns 0; EMBER_INVALID_ARGUMENT for a reserved key (the message names it and
 * its position) or n ≥ 2^32; EMBER_RESOURCE_EXHAUSTED when out of memory. */
int ember_batch_build(ember_batch *b, const uint64_t *keys, size_t n, unsigned nshards,
                      ember_error *err);

/* After a build: points rows[g] at grouped key g's gradient row (dim floats),
 * summing the rows of equal keys in caller order into scratch; keys that occur
 * once point straight into `grads`. Returns 0 or EMBER_RESOURCE_EXHAUSTED. */
int ember_batch_merge(ember_batch *b, const float *grads, uint32_t dim, ember_error *err);

#endif /* EMBER_CLIENT_BATCH_H */

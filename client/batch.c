/* batch.c — dedup, shard grouping and gradient merging (see batch.h). */
#include "client/batch.h"

#include <stdlib.h>
#include <string.h>

void ember_batch_init(ember_batch *b)
{
    memset(b, 0, sizeof *b);
}

void ember_batch_free(ember_batch *b)
{
    free(b->idx);
    free(b->gkeys);
    free(b->gfirst);
    free(b->gcount);
    free(b->shard_off);
    free(b->rows);
    free(b->b_uidx);
    free(b->b_ukeys);
    free(b->b_ufirst);
    free(b->b_ucount);
    free(b->b_ushard);
    free(b->b_cursor);
    free(b->b_slots);
    free(b->b_merged);
    memset(b, 0, sizeof *b);
}

static int grow(void **p, size_t count, size_t elem)
{
    void *q = realloc(*p, count * elem);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* Dedup map hash: Fibonacci hashing (one multiply, the top bits), enough for a
 * map private to one call that sees only that call's keys; a bad key pattern
 * costs time, never a wrong answer. */
static inline size_t dedup_slot(uint64_t k, unsigned shift)
{
    return (size_t)((k * UINT64_C(0x9e3779b97f4a7c15)) >> shift);
}

/* Slots for n keys: load factor ≤ 1/2. */
static unsigned map_bits(size_t n)
{
    unsigned bits = 6;
    while (((size_t)1 << bits) < 2 * n)
        bits++;
    return bits;
}

static int reserve(ember_batch *b, size_t n, unsigned nshards)
{
    if (n > b->cap_n) {
        size_t cap = n < 64 ? 64 : n;
        if (grow((void **)&b->idx, cap, sizeof *b->idx) || grow((void **)&b->gkeys, cap, 8) ||
            grow((void **)&b->gfirst, cap, 4) || grow((void **)&b->gcount, cap, 4) ||
            grow((void **)&b->b_uidx, cap, 4) || grow((void **)&b->b_ukeys, cap, 8) ||
            grow((void **)&b->b_ufirst, cap, 4) || grow((void **)&b->b_ucount, cap, 4) ||
            grow((void **)&b->b_ushard, cap, 4) || grow((void **)&b->rows, cap, sizeof(float *)))
            return -1;
        b->cap_n = cap;
    }
    if (nshards + 1 > b->cap_shards) {
        if (grow((void **)&b->shard_off, nshards + 1, sizeof(size_t)) ||
            grow((void **)&b->b_cursor, nshards + 1, sizeof(size_t)))
            return -1;
        b->cap_shards = nshards + 1;
    }
    size_t hcap = (size_t)1 << map_bits(n);
    if (hcap > b->b_hcap) {
        free(b->b_slots);
        b->b_slots = calloc(hcap, sizeof *b->b_slots);
        if (!b->b_slots) {
            b->b_hcap = 0;
            return -1;
        }
        b->b_hcap = hcap;
        b->b_gen = 0;
    }
    return 0;
}

static int reserved_key(const uint64_t *keys, size_t i, ember_error *err)
{
    return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                           "key %zu is 0x%016llx, a reserved value (keys from "
                           "0xFFFFFFFFFFFFFFFC up are reserved)",
                           i, (unsigned long long)keys[i]);
}

/* How far ahead pass 1 prefetches its map slots: a 65,536-key build's map (2 MiB)
 * is past L2, and the probes are otherwise one cache miss after another. */
#define DEDUP_AHEAD 8

int ember_batch_build(ember_batch *b, const uint64_t *keys, size_t n, unsigned nshards,
                      ember_error *err)
{
    if (n >= UINT32_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%zu keys in one call: at most %u", n, UINT32_MAX - 1);
    if (nshards == 0)
        nshards = 1;
    if (reserve(b, n, nshards) != 0) {
        /* Bad input is still reported as such, before running out of memory. */
        for (size_t i = 0; i < n; i++)
            if (keys[i] >= EMBER_KEY_RESERVED_MIN)
                return reserved_key(keys, i, err);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory for a batch of %zu keys", n);
    }
    b->n = 0;
    b->m = 0;
    b->nshards = nshards;

    /* Pass 1: unique keys in first-occurrence order, reserved keys refused on the
     * way (the first one in caller order is named). With one shard, grouped order
     * is first-occurrence order and the results are written in place. */
    if (++b->b_gen == 0) {
        memset(b->b_slots, 0, b->b_hcap * sizeof *b->b_slots);
        b->b_gen = 1;
    }
    const unsigned bits = map_bits(n), shift = 64 - bits;
    const size_t mask = ((size_t)1 << bits) - 1; /* the first 2^bits slots this time */
    const uint32_t gen = b->b_gen;
    struct ember_batch_slot *slot = b->b_slots;
    const int one = nshards == 1;
    uint64_t *ukeys = one ? b->gkeys : b->b_ukeys;
    uint32_t *ufirst = one ? b->gfirst : b->b_ufirst, *ucount = one ? b->gcount : b->b_ucount;
    uint32_t *uidx = one ? b->idx : b->b_uidx;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = keys[i];
        if (i + DEDUP_AHEAD < n)
            __builtin_prefetch(&slot[dedup_slot(keys[i + DEDUP_AHEAD], shift)], 1);
        if (k >= EMBER_KEY_RESERVED_MIN)
            return reserved_key(keys, i, err);
        size_t s = dedup_slot(k, shift);
        for (;;) {
            struct ember_batch_slot *e = &slot[s];
            if (e->gen != gen) {
                e->gen = gen;
                e->key = k;
                e->val = (uint32_t)m;
                ukeys[m] = k;
                ufirst[m] = (uint32_t)i;
                ucount[m] = 1;
                uidx[i] = (uint32_t)m++;
                break;
            }
            if (e->key == k) {
                ucount[e->val]++;
                uidx[i] = e->val;
                break;
            }
            s = (s + 1) & mask;
        }
    }
    b->n = n;
    b->m = m;
    size_t *off = b->shard_off;
    if (one) {
        off[0] = 0;
        off[1] = m;
        return 0;
    }

    /* Pass 2: group by shard (a counting sort keeps first-occurrence order). */
    size_t *cur = b->b_cursor;
    memset(off, 0, (nshards + 1) * sizeof *off);
    for (size_t u = 0; u < m; u++) {
        unsigned s = ember_shard_of(b->b_ukeys[u], nshards);
        b->b_ushard[u] = s;
        off[s + 1]++;
    }
    for (unsigned s = 0; s < nshards; s++)
        off[s + 1] += off[s];
    memcpy(cur, off, nshards * sizeof *cur);
    /* b_ushard[u] becomes u's grouped index. */
    for (size_t u = 0; u < m; u++) {
        size_t g = cur[b->b_ushard[u]]++;
        b->gkeys[g] = b->b_ukeys[u];
        b->gfirst[g] = b->b_ufirst[u];
        b->gcount[g] = b->b_ucount[u];
        b->b_ushard[u] = (uint32_t)g;
    }
    for (size_t i = 0; i < n; i++)
        b->idx[i] = b->b_ushard[b->b_uidx[i]];
    return 0;
}

int ember_batch_merge(ember_batch *b, const float *grads, uint32_t dim, ember_error *err)
{
    const size_t m = b->m, n = b->n;
    if (m == n) { /* no duplicates: every row is the caller's */
        for (size_t g = 0; g < m; g++)
            b->rows[g] = grads + (size_t)b->gfirst[g] * dim;
        return 0;
    }
    /* Keys seen more than once get a scratch row; b_uidx is free again after the
     * build and numbers those rows (UINT32_MAX: the key occurs once). */
    size_t ndup = 0;
    for (size_t g = 0; g < m; g++)
        b->b_uidx[g] = b->gcount[g] > 1 ? (uint32_t)ndup++ : UINT32_MAX;
    if (ndup * dim > b->cap_merged) {
        float *p = realloc(b->b_merged, ndup * dim * sizeof *p);
        if (!p)
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                                   "out of memory merging %zu gradient rows", ndup);
        b->b_merged = p;
        b->cap_merged = ndup * dim;
    }
    for (size_t g = 0; g < m; g++) {
        uint32_t slot = b->b_uidx[g];
        b->rows[g] = slot == UINT32_MAX ? grads + (size_t)b->gfirst[g] * dim
                                        : b->b_merged + (size_t)slot * dim;
    }
    /* Sum in caller order, so the result does not depend on the shard layout. */
    for (size_t i = 0; i < n; i++) {
        size_t g = b->idx[i];
        uint32_t slot = b->b_uidx[g];
        if (slot == UINT32_MAX)
            continue;
        float *dst = b->b_merged + (size_t)slot * dim;
        const float *src = grads + i * dim;
        if (b->gfirst[g] == i)
            memcpy(dst, src, dim * sizeof *dst);
        else
            for (uint32_t d = 0; d < dim; d++)
                dst[d] += src[d];
    }
    return 0;
}

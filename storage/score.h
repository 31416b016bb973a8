/*
 * score.h — eviction scores, shared by the CPU and GPU backends.
 *
 * Every stored key carries a uint64 score; when a key's bucket is full, the entry
 * with the lowest score gives way (for CUSTOM, only to a new key whose score is
 * not lower). Policies, as in HierarchicalKV:
 *
 *   LRU        the server clock: nanoseconds since the Unix epoch at the call
 *   LFU        how many times the key was accessed (saturating)
 *   EPOCH_LRU  epoch << 32 | clock seconds  (ember_score_epoch_clock: seconds
 *              since the Unix epoch, saturating at 2^32 - 1, i.e. in 2106)
 *   EPOCH_LFU  epoch << 32 | accesses in this epoch (reset when the epoch moves)
 *   CUSTOM     the score the caller gives; a key given none keeps its score
 *              (a new one starts at 0)
 *
 * "Accessed" means: find_or_insert, insert_or_assign, assign, accum and
 * apply_gradients touch the score; find (serving reads) does not.
 *
 * The policies (ember_score_policy, EMBER_SCORE_*) are in include/ember/types.h,
 * shared with libember.
 */
#ifndef EMBER_SCORE_H
#define EMBER_SCORE_H

#include <ember/types.h>

#include "hd.h"

/* EPOCH_LRU's low 32 bits: whole seconds since the Unix epoch of the server's
 * score clock, saturating at UINT32_MAX (year 2106) instead of wrapping. Why
 * not finer ticks: 32 bits of milliseconds (the old clock_ns >> 20) wrap every
 * ~52 days, and after a wrap the newest keys score lowest, so a long-running
 * table evicted its hottest keys first. Seconds since the Unix epoch need no
 * per-table origin, so scores stay comparable across restarts, restores and
 * shards; keys touched within the same second tie (the bucket then evicts the
 * first of them it finds). Within an epoch, a later access never scores lower. */
EMBER_HD uint32_t ember_score_epoch_clock(uint64_t now_ns)
{
    uint64_t s = now_ns / 1000000000u;
    return s > 0xffffffffu ? 0xffffffffu : (uint32_t)s;
}

/* What one call knows when it scores: the clock read once per call, the table's
 * epoch, and (CUSTOM) the caller's score for this key, if any. */
typedef struct ember_score_ctx {
    ember_score_policy policy;
    uint64_t now_ns;
    uint32_t epoch;
} ember_score_ctx;

/* The score a key gets when it is accessed `count` times in one call. `old` is
 * its score before, ignored when `is_new`. `custom`/`has_custom`: CUSTOM only. */
EMBER_HD uint64_t ember_score_next(const ember_score_ctx *c, uint64_t old, int is_new,
                                   uint32_t count, uint64_t custom, int has_custom)
{
    switch (c->policy) {
    case EMBER_SCORE_LFU: {
        uint64_t base = is_new ? 0 : old;
        return base > UINT64_MAX - count ? UINT64_MAX : base + count;
    }
    case EMBER_SCORE_EPOCH_LRU:
        return ((uint64_t)c->epoch << 32) | ember_score_epoch_clock(c->now_ns);
    case EMBER_SCORE_EPOCH_LFU: {
        uint64_t hi = (uint64_t)c->epoch << 32;
        uint64_t lo = (!is_new && (old >> 32) == c->epoch) ? (old & 0xffffffffu) : 0;
        lo = lo > 0xffffffffu - count ? 0xffffffffu : lo + count;
        return hi | lo;
    }
    case EMBER_SCORE_CUSTOM:
        return has_custom ? custom : (is_new ? 0 : old);
    case EMBER_SCORE_LRU:
    default:
        return c->now_ns;
    }
}

#endif /* EMBER_SCORE_H */

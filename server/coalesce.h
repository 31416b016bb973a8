/*
 * coalesce.h — request coalescing: concurrent calls of one kind on one table are
 * gathered into one table call (DESIGN.md §6, issues 5 and 14).
 *
 * GPU tables reach their speed only at large batches while one RPC carries a few
 * thousand keys, so concurrent Pulls (and, separately, Pushes of one mode) for the
 * same table are run as one call. No caller ever waits for the table: the scheme
 * is a combining queue (as in flat combining, or a database's group commit done
 * by whoever holds the log):
 *
 *   - a caller that finds its queue idle (nothing running, nothing queued) runs
 *     its call at once, on its own buffers: no added wait, no copy
 *     (srv_co_try_alone). It is the queue's runner until srv_co_next says the
 *     queue is empty;
 *   - a caller that finds it busy reserves a range [off, off + n) of the key
 *     slots of the newest open batch, or opens a new one (srv_co_join), writes
 *     its keys (and values) there itself, outside the lock, in parallel with the
 *     others, and leaves (srv_co_written): its call is answered by the runner.
 *     Only when nobody is running (the runner left between the two steps) does
 *     srv_co_written make it the runner;
 *   - the runner takes batches oldest first (srv_co_next): a batch taken is
 *     closed — it takes no member afterwards — and is handed over once every
 *     member has finished writing (a copy; the only wait, and never on the
 *     table). It runs the batch, answers every member, gives the batch back
 *     (srv_co_release) and takes the next, until none is queued.
 *
 * So a batch is whatever piled up while the table was busy, batches run one at a
 * time per queue in the order they were opened, members in the order they
 * joined, and a call is only ever served by a batch that started after the call
 * arrived: whatever completed before the call arrived (a push whose reply its
 * client has seen) is visible to it.
 *
 * Memory: batches and their buffers belong to the queue and are reused; the keys
 * waiting in a queue are bounded (`max_keys`, --coalesce-queue-keys): a caller
 * that would go over is refused (srv_co_join returns -1; the caller answers
 * RESOURCE_EXHAUSTED naming the limit) instead of growing the queue or waiting.
 *
 * This module is the queueing alone — no gRPC, no table: what a member is (its
 * `ctx`) and how a batch runs is the caller's (server/shard.c), and it is tested
 * on its own (tests/unit/test_coalesce.c). srv_co_layers splits a batch of
 * gradient pushes whose keys repeat across members into calls that apply them
 * one after another.
 *
 * Thread-safety: a queue's functions may be called from any thread; one mutex per
 * queue, none shared between queues (tables).
 */
#ifndef EMBER_SRV_COALESCE_H
#define EMBER_SRV_COALESCE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/status.h"

/* The kinds of call that coalesce, each with its own queue per table. */
typedef enum srv_co_kind {
    SRV_CO_FIND,             /* Pull */
    SRV_CO_FIND_OR_INSERT,   /* Pull with insert_missing */
    SRV_CO_GRADIENTS,        /* Push, by mode */
    SRV_CO_ASSIGN,
    SRV_CO_ACCUM,
    SRV_CO_INSERT_OR_ASSIGN,
    SRV_CO_KINDS
} srv_co_kind;

/* "find", "find_or_insert", "gradients", ... (static strings, for logs). */
const char *srv_co_kind_name(srv_co_kind k);

/* One call of a batch, as it joined. */
typedef struct srv_co_member {
    void *cm_ctx;                  /* the caller's: what answers the call */
    size_t cm_off, cm_n;           /* its key slots [off, off + n) */
} srv_co_member;

/* A batch: owned by its queue, reused. Between srv_co_next and srv_co_release
 * the runner alone reads it. */
typedef struct srv_co_batch {
    uint64_t *cb_keys;             /* cb_cap key slots */
    float *cb_vals;                /* cb_cap × per-key floats (pushes), else NULL */
    size_t cb_cap;                 /* key slots this batch takes */
    size_t cb_keys_cap, cb_vals_cap; /* allocated, in keys and in floats */
    size_t cb_used;                /* key slots reserved */
    srv_co_member *cb_members;     /* in join order */
    unsigned cb_n, cb_members_cap;
    unsigned cb_writers;           /* members still writing their part */
    int cb_closed;
    struct srv_co_batch *cb_next;
} srv_co_batch;

/* One queue: a table's calls of one kind. */
typedef struct srv_co_queue {
    pthread_mutex_t cq_mu;
    pthread_cond_t cq_cv;          /* the runner waits here for writers */
    int cq_running;                /* a caller is running the queue */
    srv_co_batch *cq_head, *cq_tail; /* queued, oldest first; the tail takes members */
    srv_co_batch *cq_free;         /* batches to reuse */
    size_t cq_queued;              /* key slots reserved in queued batches */
} srv_co_queue;

/* Where a member writes its part (srv_co_join). */
typedef struct srv_co_part {
    srv_co_batch *batch;
    uint64_t *keys;                /* its n key slots */
    float *vals;                   /* its n × per-key floats, or NULL */
} srv_co_part;

void srv_co_queue_init(srv_co_queue *q);
/* Nothing may be queued or running, and no caller inside q's functions. */
void srv_co_queue_destroy(srv_co_queue *q);

/* 1 when q was idle: the caller is now its runner; it runs its own call, then
 * calls srv_co_next until that returns NULL. 0 when busy: validate the call,
 * then join. */
int srv_co_try_alone(srv_co_queue *q);

/* Reserves n key slots (and n × per_key floats when per_key > 0) in the newest
 * open batch of q if they fit, else opens a batch of max(cap, n) slots, and
 * records the member {ctx, off, n}. Returns 0 and fills *out (write the part,
 * then call srv_co_written); or -1 when it would put more than max_keys key
 * slots in the queue, or -2 when there is no memory for a batch: nothing was
 * reserved, the caller answers the call itself. */
int srv_co_join(srv_co_queue *q, size_t n, size_t per_key, size_t cap, size_t max_keys,
                void *ctx, srv_co_part *out);

/* After writing its part: returns 1 when nobody is running q and the caller
 * has become its runner (call srv_co_next until NULL), else 0: the call is the
 * runner's now. */
int srv_co_written(srv_co_queue *q, srv_co_part *s);

/* Runner: the oldest queued batch, closed and with every member's part written;
 * or NULL when none is queued, and the caller is no longer the runner. */
srv_co_batch *srv_co_next(srv_co_queue *q);

/* Runner: gives a batch it ran back to the queue. */
void srv_co_release(srv_co_queue *q, srv_co_batch *b);

/* Layers for a batch of gradient pushes under an optimizer that is not linear
 * (or with admission counting sightings): a key that several members push must
 * be applied once per member, in member order, as if they had run one after
 * another. keys[0..n) is the batch in member order, member j's keys starting at
 * starts[j] (starts[0] = 0, increasing; `members` of them). Fills layer[i]: the
 * number of earlier members that pushed keys[i] (equal keys within one member
 * share a layer: one call sums them, as alone). Then calls in layer order 0, 1, …
 * reproduce the serial result. `map`/`map_cap`: a scratch of map_cap entries, a
 * power of two ≥ 2n (srv_co_layers_map_cap). Returns the highest layer (0: the
 * members' keys are disjoint and one call suffices). */
typedef struct srv_co_slot {
    uint64_t key;
    uint32_t member1;   /* last member that pushed it, + 1; 0 = empty slot */
    uint32_t layer;
} srv_co_slot;
size_t srv_co_layers_map_cap(size_t n);
uint32_t srv_co_layers(const uint64_t *keys, size_t n, const size_t *starts, size_t members,
                       uint32_t *layer, srv_co_slot *map, size_t map_cap);

#endif

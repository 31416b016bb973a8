/*
 * coalesce.h — request coalescing: concurrent calls of one kind on one table are
 * gathered into one table call (DESIGN.md §6, issue 5).
 *
 * GPU tables reach their speed only at large batches while one RPC carries a few
 * thousand keys, so concurrent Pulls (and, separately, Pushes of one mode) for the
 * same table are run as one call. The scheme is leader/follower, as in a
 * database's group commit:
 *
 *   - a caller that finds its queue idle (nothing executing, nothing waiting) runs
 *     alone at once, on its own buffers: no added wait, no copy
 *     (srv_co_try_alone / srv_co_alone_done);
 *   - a caller that finds it busy joins the open batch at the tail of the queue,
 *     or opens a new one and leads it (srv_co_join). Each member reserves a
 *     range [off, off + n) of the batch's key slots and writes its own keys (and
 *     values) there itself, in parallel with the others, into the leader's
 *     buffers;
 *   - when the batch ahead of it has run, the leader optionally waits up to
 *     `wait_us` for more members, closes the batch, waits until every member has
 *     written its part (srv_co_lead), runs the one table call, and hands each
 *     member the shared result (srv_co_finish); a follower sleeps in srv_co_wait
 *     until then and reads its own slice [off, off + n).
 *
 * Batches run one at a time per queue and in the order they were opened. A
 * batch closes before it runs and takes no member afterwards, so a call is only
 * ever served by a batch that started after the call arrived: whatever completed
 * before the call arrived (a push whose reply its client has seen) is visible to
 * it. Followers block their worker thread until their batch has run.
 *
 * This module is the queueing alone — no gRPC, no table: what a batch holds
 * and how it runs is the caller's (server/shard.c), and it is tested on its own
 * (tests/unit/test_coalesce.c). srv_co_layers splits a batch of gradient pushes
 * whose keys repeat across members into calls that apply them one after another.
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

typedef struct srv_co_batch srv_co_batch;
typedef struct srv_co_member srv_co_member;

/* One queue: a table's calls of one kind. */
typedef struct srv_co_queue {
    pthread_mutex_t cq_mu;
    int cq_executing;              /* a batch or a lone caller is running */
    srv_co_batch *cq_head, *cq_tail; /* open batches, oldest first */
} srv_co_queue;

/* A batch. The caller of srv_co_join provides the storage; it is used only if
 * that caller opens the batch, and must stay in place until srv_co_finish. */
struct srv_co_batch {
    void *cb_bufs;                 /* the leader's buffers (as given to join) */
    size_t cb_cap;                 /* key slots in them */
    size_t cb_keys;                /* key slots reserved */
    unsigned cb_members;
    unsigned cb_writers;           /* members still writing their part */
    int cb_closed, cb_full, cb_queued;
    srv_co_member *cb_first, *cb_last; /* members in join order; first = leader */
    srv_co_batch *cb_next;         /* the next open batch of the queue */
};

/* One caller of a batch: lives in the caller's frame from srv_co_join until
 * srv_co_wait / srv_co_finish returns. */
struct srv_co_member {
    /* set by srv_co_join */
    size_t cm_n;                   /* this caller's keys */
    size_t cm_off;                 /* its first key slot in the batch */
    void *cm_bufs;                 /* the batch's buffers, to write into */
    srv_co_batch *cm_batch;        /* the batch (for the leader, its own) */
    int cm_leader;
    /* set by srv_co_finish: the batch's outcome, and what the leader shares */
    int cm_status;
    ember_error cm_err;            /* when cm_status != 0 */
    void *cm_result;
    /* private */
    pthread_cond_t cm_cv;
    int cm_done;
    srv_co_member *cm_next;
};

void srv_co_queue_init(srv_co_queue *q);
/* No caller may be inside any of q's functions. */
void srv_co_queue_destroy(srv_co_queue *q);

/* 1 when q was idle: it is now this caller's, who runs its call on its own and
 * then calls srv_co_alone_done. 0 when busy: validate the call, then join. */
int srv_co_try_alone(srv_co_queue *q);
void srv_co_alone_done(srv_co_queue *q);

/* Joins the newest open batch of q if its `n` keys fit there, else opens a new
 * batch in *b with buffers `bufs` of `cap` key slots (cap ≥ n) and leads it.
 * Returns 1 when m leads (m->cm_batch == b), 0 when it follows. Either way m's
 * part is [m->cm_off, + n) of m->cm_bufs: write it, then call srv_co_lead
 * (leader) or srv_co_wait (follower). A batch opened on an idle queue runs
 * without the wait for more members. */
int srv_co_join(srv_co_queue *q, srv_co_member *m, size_t n, srv_co_batch *b, void *bufs,
                size_t cap);

/* Leader: after writing its part, waits until the batches ahead of its own have
 * run; then, if its batch was opened while the queue was busy and `wait_us` > 0,
 * up to wait_us for more members (ending early when the batch is full); closes
 * the batch and waits until every member has written. Returns the batch, whose
 * members (cb_first, ... cm_next; the leader first) are fixed from then on:
 * run it and call srv_co_finish. */
srv_co_batch *srv_co_lead(srv_co_queue *q, srv_co_member *m, unsigned wait_us);

/* Leader: ends its batch: every member gets `status`, a copy of `err` (when
 * status != 0) and `result`, and wakes; the next batch may run. */
void srv_co_finish(srv_co_queue *q, srv_co_batch *b, int status, const ember_error *err,
                   void *result);

/* Follower: after writing its part, waits until its batch has run; then
 * m->cm_status, cm_err and cm_result hold the outcome. */
void srv_co_wait(srv_co_queue *q, srv_co_member *m);

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

/* coalesce.c — the combining queue of concurrent calls per table (coalesce.h). */
#include "server/coalesce.h"

#include <stdlib.h>
#include <string.h>

#include "storage/hash.h"

const char *srv_co_kind_name(srv_co_kind k)
{
    static const char *const names[SRV_CO_KINDS] = {
        "find", "find_or_insert", "gradients", "assign", "accum", "insert_or_assign",
    };
    return (unsigned)k < SRV_CO_KINDS ? names[k] : "unknown";
}

void srv_co_queue_init(srv_co_queue *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->cq_mu, NULL);
    pthread_cond_init(&q->cq_cv, NULL);
}

static void batch_free(srv_co_batch *b)
{
    free(b->cb_keys);
    free(b->cb_vals);
    free(b->cb_members);
    free(b);
}

void srv_co_queue_destroy(srv_co_queue *q)
{
    for (srv_co_batch *b = q->cq_free, *next; b; b = next) {
        next = b->cb_next;
        batch_free(b);
    }
    q->cq_free = NULL;
    pthread_cond_destroy(&q->cq_cv);
    pthread_mutex_destroy(&q->cq_mu);
}

int srv_co_try_alone(srv_co_queue *q)
{
    int alone = 0;
    pthread_mutex_lock(&q->cq_mu);
    if (!q->cq_running && !q->cq_head) {
        q->cq_running = 1;
        alone = 1;
    }
    pthread_mutex_unlock(&q->cq_mu);
    return alone;
}

/* Grows *p to hold n elements of `elem` bytes (capacity *cap): contents are not
 * kept. 0 on no memory. */
static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap && *p)
        return 1;
    void *q = aligned_alloc(64, (n * elem + 63) / 64 * 64);
    if (!q)
        return 0;
    free(*p);
    *p = q;
    *cap = n;
    return 1;
}

/* Room for one more member in b. 0 on no memory. */
static int members_room(srv_co_batch *b)
{
    if (b->cb_n < b->cb_members_cap)
        return 1;
    unsigned c = b->cb_members_cap ? 2 * b->cb_members_cap : 16;
    srv_co_member *m = realloc(b->cb_members, c * sizeof *m);
    if (!m)
        return 0;
    b->cb_members = m;
    b->cb_members_cap = c;
    return 1;
}

/* A batch of `cap` key slots (and per-key floats) to open, with room for its
 * first member: a spare one, grown if it must be. NULL on no memory (the spare
 * goes back). Caller holds cq_mu. */
static srv_co_batch *batch_open_locked(srv_co_queue *q, size_t cap, size_t per_key)
{
    srv_co_batch *b = q->cq_free;
    if (b)
        q->cq_free = b->cb_next;
    else if (!(b = calloc(1, sizeof *b)))
        return NULL;
    b->cb_n = 0;
    if (!grow((void **)&b->cb_keys, &b->cb_keys_cap, cap, sizeof(uint64_t)) ||
        (per_key && !grow((void **)&b->cb_vals, &b->cb_vals_cap, cap * per_key, sizeof(float))) ||
        !members_room(b)) {
        b->cb_next = q->cq_free;
        q->cq_free = b;
        return NULL;
    }
    b->cb_cap = cap;
    b->cb_used = 0;
    b->cb_writers = 0;
    b->cb_closed = 0;
    b->cb_next = NULL;
    return b;
}

int srv_co_join(srv_co_queue *q, size_t n, size_t per_key, size_t cap, size_t max_keys,
                void *ctx, srv_co_part *out)
{
    pthread_mutex_lock(&q->cq_mu);
    if (q->cq_queued + n > max_keys) {
        pthread_mutex_unlock(&q->cq_mu);
        return -1;
    }
    srv_co_batch *b = q->cq_tail; /* the newest queued batch: the only one taking members */
    if (b && (b->cb_used + n > b->cb_cap || !members_room(b)))
        b = NULL; /* full, or no memory to list one more member: open the next */
    if (!b) {
        /* only a batch with room for its first member is queued: nothing empty
         * is ever left in the queue */
        b = batch_open_locked(q, cap < n ? n : cap, per_key);
        if (!b) {
            pthread_mutex_unlock(&q->cq_mu);
            return -2;
        }
        if (q->cq_tail)
            q->cq_tail->cb_next = b;
        else
            q->cq_head = b;
        q->cq_tail = b;
    }
    b->cb_members[b->cb_n++] = (srv_co_member){.cm_ctx = ctx, .cm_off = b->cb_used, .cm_n = n};
    out->batch = b;
    out->keys = b->cb_keys + b->cb_used;
    out->vals = per_key ? b->cb_vals + b->cb_used * per_key : NULL;
    b->cb_used += n;
    b->cb_writers++;
    q->cq_queued += n;
    pthread_mutex_unlock(&q->cq_mu);
    return 0;
}

int srv_co_written(srv_co_queue *q, srv_co_part *s)
{
    int run = 0;
    pthread_mutex_lock(&q->cq_mu);
    if (--s->batch->cb_writers == 0 && s->batch->cb_closed)
        pthread_cond_broadcast(&q->cq_cv); /* its runner waits for the last writer */
    if (!q->cq_running) {
        q->cq_running = 1;
        run = 1;
    }
    pthread_mutex_unlock(&q->cq_mu);
    s->batch = NULL;
    return run;
}

srv_co_batch *srv_co_next(srv_co_queue *q)
{
    pthread_mutex_lock(&q->cq_mu);
    srv_co_batch *b = q->cq_head;
    if (!b) {
        q->cq_running = 0;
        pthread_mutex_unlock(&q->cq_mu);
        return NULL;
    }
    /* close: later callers open the next batch; this one runs now */
    b->cb_closed = 1;
    q->cq_head = b->cb_next;
    if (q->cq_tail == b)
        q->cq_tail = NULL;
    q->cq_queued -= b->cb_used;
    while (b->cb_writers)
        pthread_cond_wait(&q->cq_cv, &q->cq_mu);
    pthread_mutex_unlock(&q->cq_mu);
    b->cb_next = NULL;
    return b;
}

void srv_co_release(srv_co_queue *q, srv_co_batch *b)
{
    pthread_mutex_lock(&q->cq_mu);
    b->cb_next = q->cq_free;
    q->cq_free = b;
    pthread_mutex_unlock(&q->cq_mu);
}

/* ---- layers -------------------------------------------------------------- */

size_t srv_co_layers_map_cap(size_t n)
{
    size_t c = 16;
    while (c < 2 * n)
        c <<= 1;
    return c;
}

uint32_t srv_co_layers(const uint64_t *keys, size_t n, const size_t *starts, size_t members,
                       uint32_t *layer, srv_co_slot *map, size_t map_cap)
{
    size_t mask = map_cap - 1;
    uint32_t top = 0;
    memset(map, 0, map_cap * sizeof *map);
    for (size_t j = 0; j < members; j++) {
        size_t end = j + 1 < members ? starts[j + 1] : n;
        uint32_t me = (uint32_t)j + 1;
        for (size_t i = starts[j]; i < end; i++) {
            if (i + 8 < n)
                __builtin_prefetch(&map[ember_mix64(keys[i + 8]) & mask], 1, 3);
            size_t h = ember_mix64(keys[i]) & mask;
            for (;;) {
                srv_co_slot *s = &map[h];
                if (!s->member1) {
                    s->key = keys[i];
                    s->member1 = me;
                    s->layer = 0;
                    layer[i] = 0;
                    break;
                }
                if (s->key == keys[i]) {
                    if (s->member1 != me) { /* an earlier member pushed it: one step later */
                        s->member1 = me;
                        s->layer++;
                        top = s->layer > top ? s->layer : top;
                    }
                    layer[i] = s->layer;
                    break;
                }
                h = (h + 1) & mask;
            }
        }
    }
    return top;
}

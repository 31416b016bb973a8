/* coalesce.c — leader/follower batching of concurrent calls per table (coalesce.h). */
#include "server/coalesce.h"

#include <errno.h>
#include <string.h>
#include <time.h>

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
}

void srv_co_queue_destroy(srv_co_queue *q) { pthread_mutex_destroy(&q->cq_mu); }

int srv_co_try_alone(srv_co_queue *q)
{
    int alone = 0;
    pthread_mutex_lock(&q->cq_mu);
    if (!q->cq_executing && !q->cq_head) {
        q->cq_executing = 1;
        alone = 1;
    }
    pthread_mutex_unlock(&q->cq_mu);
    return alone;
}

/* Lets the oldest open batch run, if there is one. Caller holds cq_mu. */
static void wake_head_locked(srv_co_queue *q)
{
    if (q->cq_head)
        pthread_cond_signal(&q->cq_head->cb_first->cm_cv);
}

void srv_co_alone_done(srv_co_queue *q)
{
    pthread_mutex_lock(&q->cq_mu);
    q->cq_executing = 0;
    wake_head_locked(q);
    pthread_mutex_unlock(&q->cq_mu);
}

static void member_init(srv_co_member *m, size_t n)
{
    pthread_condattr_t a;
    memset(m, 0, sizeof *m);
    m->cm_n = n;
    /* the leader's wait for more members is timed on the monotonic clock */
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cm_cv, &a);
    pthread_condattr_destroy(&a);
}

int srv_co_join(srv_co_queue *q, srv_co_member *m, size_t n, srv_co_batch *b, void *bufs,
                size_t cap)
{
    member_init(m, n);
    pthread_mutex_lock(&q->cq_mu);
    srv_co_batch *t = q->cq_tail; /* the newest open batch: the only one taking members */
    if (t && t->cb_keys + n <= t->cb_cap) {
        m->cm_off = t->cb_keys;
        m->cm_bufs = t->cb_bufs;
        m->cm_batch = t;
        t->cb_keys += n;
        t->cb_members++;
        t->cb_writers++;
        t->cb_last->cm_next = m;
        t->cb_last = m;
        if (t->cb_keys == t->cb_cap) { /* full: its leader need not wait for more */
            t->cb_full = 1;
            pthread_cond_signal(&t->cb_first->cm_cv);
        }
        pthread_mutex_unlock(&q->cq_mu);
        return 0;
    }
    if (t) { /* m does not fit: t takes no one else, so it is as full as it gets */
        t->cb_full = 1;
        pthread_cond_signal(&t->cb_first->cm_cv);
    }
    memset(b, 0, sizeof *b);
    b->cb_bufs = bufs;
    b->cb_cap = cap < n ? n : cap;
    b->cb_keys = n;
    b->cb_members = 1;
    b->cb_writers = 1;
    b->cb_full = b->cb_keys == b->cb_cap;
    b->cb_queued = q->cq_executing || q->cq_head;
    b->cb_first = b->cb_last = m;
    if (t)
        t->cb_next = b;
    else
        q->cq_head = b;
    q->cq_tail = b;
    m->cm_off = 0;
    m->cm_bufs = bufs;
    m->cm_batch = b;
    m->cm_leader = 1;
    pthread_mutex_unlock(&q->cq_mu);
    return 1;
}

srv_co_batch *srv_co_lead(srv_co_queue *q, srv_co_member *m, unsigned wait_us)
{
    srv_co_batch *b = m->cm_batch;
    pthread_mutex_lock(&q->cq_mu);
    b->cb_writers--;
    while (q->cq_head != b || q->cq_executing)
        pthread_cond_wait(&m->cm_cv, &q->cq_mu);
    /* Only a batch that queued behind another waits for more: one opened on an
     * idle queue runs at once (no added latency when the table is idle). */
    if (b->cb_queued && wait_us && !b->cb_full) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += (long)wait_us * 1000L;
        dl.tv_sec += dl.tv_nsec / 1000000000L;
        dl.tv_nsec %= 1000000000L;
        while (!b->cb_full)
            if (pthread_cond_timedwait(&m->cm_cv, &q->cq_mu, &dl) == ETIMEDOUT)
                break;
    }
    /* close: later callers open the next batch; this one runs now */
    b->cb_closed = 1;
    q->cq_head = b->cb_next;
    if (q->cq_tail == b)
        q->cq_tail = NULL;
    q->cq_executing = 1;
    while (b->cb_writers)
        pthread_cond_wait(&m->cm_cv, &q->cq_mu);
    pthread_mutex_unlock(&q->cq_mu);
    return b;
}

void srv_co_finish(srv_co_queue *q, srv_co_batch *b, int status, const ember_error *err,
                   void *result)
{
    srv_co_member *leader = b->cb_first;
    pthread_mutex_lock(&q->cq_mu);
    for (srv_co_member *m = b->cb_first; m; m = m->cm_next) {
        m->cm_status = status;
        if (status) {
            m->cm_err.code = status;
            memcpy(m->cm_err.message, err ? err->message : "", sizeof m->cm_err.message);
            m->cm_err.message[sizeof m->cm_err.message - 1] = '\0';
        }
        m->cm_result = result;
        m->cm_done = 1;
        /* the member may leave as soon as the lock is released: signal it while
         * held, and read m->cm_next before that */
        if (m != leader)
            pthread_cond_signal(&m->cm_cv);
    }
    q->cq_executing = 0;
    wake_head_locked(q);
    pthread_mutex_unlock(&q->cq_mu);
    /* nothing signals a closed batch's leader any more */
    pthread_cond_destroy(&leader->cm_cv);
}

void srv_co_wait(srv_co_queue *q, srv_co_member *m)
{
    srv_co_batch *b = m->cm_batch;
    pthread_mutex_lock(&q->cq_mu);
    if (--b->cb_writers == 0)
        pthread_cond_signal(&b->cb_first->cm_cv);
    m->cm_batch = NULL; /* b may be gone once the lock is released */
    while (!m->cm_done)
        pthread_cond_wait(&m->cm_cv, &q->cq_mu);
    pthread_mutex_unlock(&q->cq_mu);
    pthread_cond_destroy(&m->cm_cv);
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

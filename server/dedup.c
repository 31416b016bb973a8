/* dedup.c — per-client sequence windows for at-most-once pushes (dedup.h). */
#include "server/dedup.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WORDS (SRV_DEDUP_WINDOW / 64)

typedef struct entry {
    uint64_t client;
    uint64_t high;            /* highest sequence seen */
    uint64_t bits[WORDS];     /* bit (seq % WINDOW) set: seq seen, for seq in
                                 (high - WINDOW, high] */
    uint64_t pend[WORDS];     /* of those, the ones still being applied */
    unsigned npend;           /* bits set in pend: such an entry is not evicted */
    struct entry *hnext;      /* hash chain */
    struct entry *prev, *next; /* LRU list: head = most recent */
} entry;

struct srv_dedup {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a pending pair ended (srv_dedup_end/abort) */
    unsigned waiters;
    entry **buckets;
    size_t nbuckets, count, max;
    entry *head, *tail;
};

static size_t hash(const srv_dedup *d, uint64_t c)
{
    c ^= c >> 33;
    c *= UINT64_C(0xff51afd7ed558ccd);
    c ^= c >> 33;
    return (size_t)(c & (d->nbuckets - 1));
}

srv_dedup *srv_dedup_create(size_t max_clients)
{
    srv_dedup *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->max = max_clients ? max_clients : SRV_DEDUP_CLIENTS;
    d->nbuckets = 64;
    while (d->nbuckets < d->max)
        d->nbuckets <<= 1;
    d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
    if (!d->buckets) {
        free(d);
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    return d;
}

void srv_dedup_destroy(srv_dedup *d)
{
    if (!d)
        return;
    for (entry *e = d->head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(d->buckets);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static void lru_unlink_locked(srv_dedup *d, entry *e)
{
    if (e->prev) e->prev->next = e->next; else d->head = e->next;
    if (e->next) e->next->prev = e->prev; else d->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front_locked(srv_dedup *d, entry *e)
{
    e->next = d->head;
    e->prev = NULL;
    if (d->head) d->head->prev = e;
    d->head = e;
    if (!d->tail) d->tail = e;
}

static entry *find_locked(srv_dedup *d, uint64_t client)
{
    for (entry *e = d->buckets[hash(d, client)]; e; e = e->hnext)
        if (e->client == client)
            return e;
    return NULL;
}

static void remove_locked(srv_dedup *d, entry *e)
{
    entry **pp = &d->buckets[hash(d, e->client)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink_locked(d, e);
    d->count--;
    free(e);
}

static int bit_get(const entry *e, uint64_t seq)
{
    uint64_t i = seq % SRV_DEDUP_WINDOW;
    return (int)((e->bits[i / 64] >> (i % 64)) & 1u);
}

static int pend_get(const entry *e, uint64_t seq)
{
    uint64_t i = seq % SRV_DEDUP_WINDOW;
    return (int)((e->pend[i / 64] >> (i % 64)) & 1u);
}

static void pend_put(entry *e, uint64_t seq, int v)
{
    uint64_t i = seq % SRV_DEDUP_WINDOW, m = UINT64_C(1) << (i % 64);
    if (v && !(e->pend[i / 64] & m)) {
        e->pend[i / 64] |= m;
        e->npend++;
    } else if (!v && (e->pend[i / 64] & m)) {
        e->pend[i / 64] &= ~m;
        e->npend--;
    }
}

/* Clearing a seen bit also ends its pending state: the window slid past it. */
static void bit_put(entry *e, uint64_t seq, int v)
{
    uint64_t i = seq % SRV_DEDUP_WINDOW;
    if (v) {
        e->bits[i / 64] |= UINT64_C(1) << (i % 64);
    } else {
        e->bits[i / 64] &= ~(UINT64_C(1) << (i % 64));
        pend_put(e, seq, 0);
    }
}

static int in_window(const entry *e, uint64_t seq)
{
    return seq <= e->high && e->high - seq < SRV_DEDUP_WINDOW;
}

/* The least recently seen client with no push in flight (else the least recent):
 * forgetting one whose push is being applied would let its retry apply again. */
static entry *victim_locked(srv_dedup *d)
{
    for (entry *e = d->tail; e; e = e->prev)
        if (!e->npend)
            return e;
    return d->tail;
}

int srv_dedup_begin(srv_dedup *d, uint64_t client, uint64_t seq)
{
    int fresh = 1;
    pthread_mutex_lock(&d->mu);
    entry *e = find_locked(d, client);
    /* A retry of a push still being applied waits for it to end: answering
     * "duplicate" now would let the client read its rows before they change. */
    while (e && in_window(e, seq) && pend_get(e, seq)) {
        d->waiters++;
        pthread_cond_wait(&d->cv, &d->mu);
        d->waiters--;
        e = find_locked(d, client);
    }
    if (!e) {
        if (d->count >= d->max)
            remove_locked(d, victim_locked(d));
        e = calloc(1, sizeof *e);
        if (!e) { /* out of memory: apply rather than refuse (no record kept) */
            pthread_mutex_unlock(&d->mu);
            return 1;
        }
        e->client = client;
        e->high = seq;
        size_t h = hash(d, client);
        e->hnext = d->buckets[h];
        d->buckets[h] = e;
        d->count++;
        bit_put(e, seq, 1);
    } else {
        lru_unlink_locked(d, e);
        if (seq > e->high) {
            uint64_t gap = seq - e->high;
            if (gap >= SRV_DEDUP_WINDOW) {
                memset(e->bits, 0, sizeof e->bits);
                memset(e->pend, 0, sizeof e->pend);
                e->npend = 0;
            } else {
                for (uint64_t s = e->high + 1; s <= seq; s++)
                    bit_put(e, s, 0);
            }
            e->high = seq;
            bit_put(e, seq, 1);
            if (d->waiters) /* a retry waiting on a pair the window left behind */
                pthread_cond_broadcast(&d->cv);
        } else if (e->high - seq >= SRV_DEDUP_WINDOW) {
            fresh = 0; /* too old to know: at-most-once says do not apply */
        } else if (bit_get(e, seq)) {
            fresh = 0;
        } else {
            bit_put(e, seq, 1);
        }
    }
    if (fresh)
        pend_put(e, seq, 1);
    lru_front_locked(d, e);
    pthread_mutex_unlock(&d->mu);
    return fresh;
}

/* Ends a pair's pending state, unmarking it too when `unmark`; wakes retries. */
static void finish(srv_dedup *d, uint64_t client, uint64_t seq, int unmark)
{
    pthread_mutex_lock(&d->mu);
    entry *e = find_locked(d, client);
    if (e && in_window(e, seq)) {
        if (unmark)
            bit_put(e, seq, 0);
        else
            pend_put(e, seq, 0);
    }
    if (d->waiters)
        pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

void srv_dedup_end(srv_dedup *d, uint64_t client, uint64_t seq) { finish(d, client, seq, 0); }

void srv_dedup_abort(srv_dedup *d, uint64_t client, uint64_t seq) { finish(d, client, seq, 1); }

size_t srv_dedup_clients(srv_dedup *d)
{
    pthread_mutex_lock(&d->mu);
    size_t n = d->count;
    pthread_mutex_unlock(&d->mu);
    return n;
}

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
    struct entry *hnext;      /* hash chain */
    struct entry *prev, *next; /* LRU list: head = most recent */
} entry;

struct srv_dedup {
    pthread_mutex_t mu;
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

static void bit_put(entry *e, uint64_t seq, int v)
{
    uint64_t i = seq % SRV_DEDUP_WINDOW;
    if (v)
        e->bits[i / 64] |= UINT64_C(1) << (i % 64);
    else
        e->bits[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

int srv_dedup_begin(srv_dedup *d, uint64_t client, uint64_t seq)
{
    int fresh = 1;
    pthread_mutex_lock(&d->mu);
    entry *e = find_locked(d, client);
    if (!e) {
        if (d->count >= d->max)
            remove_locked(d, d->tail);
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
            if (gap >= SRV_DEDUP_WINDOW)
                memset(e->bits, 0, sizeof e->bits);
            else
                for (uint64_t s = e->high + 1; s <= seq; s++)
                    bit_put(e, s, 0);
            e->high = seq;
            bit_put(e, seq, 1);
        } else if (e->high - seq >= SRV_DEDUP_WINDOW) {
            fresh = 0; /* too old to know: at-most-once says do not apply */
        } else if (bit_get(e, seq)) {
            fresh = 0;
        } else {
            bit_put(e, seq, 1);
        }
    }
    lru_front_locked(d, e);
    pthread_mutex_unlock(&d->mu);
    return fresh;
}

void srv_dedup_abort(srv_dedup *d, uint64_t client, uint64_t seq)
{
    pthread_mutex_lock(&d->mu);
    entry *e = find_locked(d, client);
    if (e && seq <= e->high && e->high - seq < SRV_DEDUP_WINDOW)
        bit_put(e, seq, 0);
    pthread_mutex_unlock(&d->mu);
}

size_t srv_dedup_clients(srv_dedup *d)
{
    pthread_mutex_lock(&d->mu);
    size_t n = d->count;
    pthread_mutex_unlock(&d->mu);
    return n;
}

/* dedup.c — per-client sequence windows for at-most-once pushes (dedup.h). */
#include "server/dedup.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/table.h"

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

/* A pair pending at a save's cut, and what became of it. */
enum { CAP_PENDING, CAP_IN, CAP_OUT };
typedef struct cap_pair {
    uint64_t client, seq;
    int state;
} cap_pair;

/* One client's window as captured (ended pairs only). */
typedef struct cap_client {
    uint64_t client, high;
    uint64_t bits[WORDS];
} cap_client;

struct srv_dedup_capture {
    uint64_t cut_epoch;
    cap_client *clients;
    size_t nclients;
    cap_pair *pend;
    size_t npend, unresolved;
};

struct srv_dedup {
    srv_dedup_capture *cap;   /* the save whose cut is being resolved, or NULL */
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

/* A new entry for `client` with `high` its highest, in the hash (the caller
 * puts it in the LRU list); the least recently seen client is forgotten first
 * when the table is full. NULL when out of memory. */
static entry *entry_add_locked(srv_dedup *d, uint64_t client, uint64_t high)
{
    if (d->count >= d->max)
        remove_locked(d, victim_locked(d));
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->client = client;
    e->high = high;
    size_t h = hash(d, client);
    e->hnext = d->buckets[h];
    d->buckets[h] = e;
    d->count++;
    return e;
}

/* Moves e's highest up to seq (> e->high): the bits it passes are cleared. */
static void slide_locked(srv_dedup *d, entry *e, uint64_t seq)
{
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
    if (d->waiters) /* a retry waiting on a pair the window left behind */
        pthread_cond_broadcast(&d->cv);
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
        if (!(e = entry_add_locked(d, client, seq))) {
            /* out of memory: apply rather than refuse (no record kept) */
            pthread_mutex_unlock(&d->mu);
            return 1;
        }
        bit_put(e, seq, 1);
    } else {
        lru_unlink_locked(d, e);
        if (seq > e->high) {
            slide_locked(d, e, seq);
            bit_put(e, seq, 1);
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

/* A pair pending at a captured cut ended: in the saved window iff it was
 * applied (not `unmark`) by a write before the cut (this thread's last writing
 * call, the push's own, ran under a lower cut epoch). */
static void cap_resolve_locked(srv_dedup *d, uint64_t client, uint64_t seq, int unmark)
{
    srv_dedup_capture *c = d->cap;
    for (size_t i = 0; i < c->npend; i++) {
        cap_pair *p = &c->pend[i];
        if (p->client != client || p->seq != seq || p->state != CAP_PENDING)
            continue;
        p->state = !unmark && ember_table_thread_cut_epoch() < c->cut_epoch ? CAP_IN : CAP_OUT;
        c->unresolved--;
        break;
    }
}

/* Ends a pair's pending state, unmarking it too when `unmark`; wakes retries. */
static void finish(srv_dedup *d, uint64_t client, uint64_t seq, int unmark)
{
    pthread_mutex_lock(&d->mu);
    if (d->cap)
        cap_resolve_locked(d, client, seq, unmark);
    entry *e = find_locked(d, client);
    if (e && in_window(e, seq)) {
        if (unmark)
            bit_put(e, seq, 0);
        else
            pend_put(e, seq, 0);
    }
    if (d->waiters || d->cap)
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

/* ---- the window saved with the tables ------------------------------------ */

/* The sequence of window bit i of an entry whose highest is `high` (none when
 * it would be below 0). */
static int seq_of_bit(uint64_t high, unsigned i, uint64_t *seq)
{
    uint64_t back = (high % SRV_DEDUP_WINDOW + SRV_DEDUP_WINDOW - i) % SRV_DEDUP_WINDOW;
    if (back > high)
        return 0;
    *seq = high - back;
    return 1;
}

srv_dedup_capture *srv_dedup_capture_begin(srv_dedup *d, uint64_t cut_epoch)
{
    srv_dedup_capture *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cut_epoch = cut_epoch;
    pthread_mutex_lock(&d->mu);
    size_t npend = 0;
    for (entry *e = d->head; e; e = e->next)
        npend += e->npend;
    c->clients = malloc((d->count ? d->count : 1) * sizeof *c->clients);
    c->pend = malloc((npend ? npend : 1) * sizeof *c->pend);
    if (d->cap || !c->clients || !c->pend) { /* one save at a time resolves */
        pthread_mutex_unlock(&d->mu);
        free(c->clients);
        free(c->pend);
        free(c);
        return NULL;
    }
    for (entry *e = d->head; e; e = e->next) {
        cap_client *k = &c->clients[c->nclients++];
        k->client = e->client;
        k->high = e->high;
        for (unsigned w = 0; w < WORDS; w++) {
            k->bits[w] = e->bits[w] & ~e->pend[w];
            for (uint64_t m = e->pend[w]; m; m &= m - 1) {
                uint64_t seq;
                if (seq_of_bit(e->high, w * 64 + (unsigned)__builtin_ctzll(m), &seq))
                    c->pend[c->npend++] = (cap_pair){e->client, seq, CAP_PENDING};
            }
        }
    }
    c->unresolved = c->npend;
    d->cap = c;
    pthread_mutex_unlock(&d->mu);
    return c;
}

static void put64(uint8_t **p, uint64_t v)
{
    memcpy(*p, &v, 8); /* little-endian hosts only, as the checkpoints */
    *p += 8;
}

static uint64_t get64(const uint8_t **p)
{
    uint64_t v;
    memcpy(&v, *p, 8);
    *p += 8;
    return v;
}

#define WIRE_CLIENT (8u * (2 + WORDS))

int srv_dedup_capture_finish(srv_dedup *d, srv_dedup_capture *c, unsigned timeout_ms,
                             uint8_t **out, size_t *len, size_t *left_out)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    while (c->unresolved)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &dl) == ETIMEDOUT)
            break;
    d->cap = NULL;
    pthread_mutex_unlock(&d->mu);
    *left_out = c->unresolved;
    /* the pairs applied before the cut join their clients' windows */
    for (size_t i = 0; i < c->npend; i++) {
        if (c->pend[i].state != CAP_IN)
            continue;
        for (size_t k = 0; k < c->nclients; k++) {
            cap_client *cl = &c->clients[k];
            if (cl->client != c->pend[i].client)
                continue;
            uint64_t b = c->pend[i].seq % SRV_DEDUP_WINDOW;
            cl->bits[b / 64] |= UINT64_C(1) << (b % 64);
        }
    }
    *len = 16 + c->nclients * WIRE_CLIENT;
    uint8_t *buf = malloc(*len), *p = buf;
    if (buf) {
        put64(&p, SRV_DEDUP_WINDOW);
        put64(&p, c->nclients);
        for (size_t k = 0; k < c->nclients; k++) {
            put64(&p, c->clients[k].client);
            put64(&p, c->clients[k].high);
            for (unsigned w = 0; w < WORDS; w++)
                put64(&p, c->clients[k].bits[w]);
        }
    }
    free(c->clients);
    free(c->pend);
    free(c);
    *out = buf;
    return buf ? 0 : -1;
}

void srv_dedup_capture_abort(srv_dedup *d, srv_dedup_capture *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&d->mu);
    if (d->cap == c)
        d->cap = NULL;
    pthread_mutex_unlock(&d->mu);
    free(c->clients);
    free(c->pend);
    free(c);
}

/* Marks (client, seq) applied in e, as srv_dedup_begin would, not pending. */
static void mark_applied_locked(srv_dedup *d, entry *e, uint64_t seq)
{
    if (seq > e->high) {
        slide_locked(d, e, seq);
    } else if (e->high - seq >= SRV_DEDUP_WINDOW) {
        return; /* below the window: a duplicate already */
    }
    bit_put(e, seq, 1);
}

int srv_dedup_restore(srv_dedup *d, const uint8_t *buf, size_t len, size_t *clients)
{
    const uint8_t *p = buf;
    *clients = 0;
    if (len < 16 || get64(&p) != SRV_DEDUP_WINDOW)
        return -1;
    uint64_t n = get64(&p);
    if (n > (len - 16) / WIRE_CLIENT || len != 16 + n * WIRE_CLIENT)
        return -1;
    pthread_mutex_lock(&d->mu);
    for (uint64_t k = 0; k < n; k++) {
        uint64_t client = get64(&p), high = get64(&p), bits[WORDS];
        for (unsigned w = 0; w < WORDS; w++)
            bits[w] = get64(&p);
        if (!client)
            continue;
        entry *e = find_locked(d, client);
        if (!e) {
            if (!(e = entry_add_locked(d, client, high)))
                break;
        } else {
            lru_unlink_locked(d, e);
        }
        lru_front_locked(d, e);
        for (unsigned w = 0; w < WORDS; w++)
            for (uint64_t m = bits[w]; m; m &= m - 1) {
                uint64_t seq;
                if (seq_of_bit(high, w * 64 + (unsigned)__builtin_ctzll(m), &seq))
                    mark_applied_locked(d, e, seq);
            }
        (*clients)++;
    }
    pthread_mutex_unlock(&d->mu);
    return 0;
}

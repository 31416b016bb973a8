/*
 * repl.c — the leader's side of replication (repl.h): the followers it has
 * seen and what each holds, and the replicated pushes parked until enough of
 * them hold them.
 *
 * One mutex guards the followers and the parked list; a parked reply is
 * answered by the waiter thread, which a progress request wakes (and which
 * looks every few milliseconds for deadlines), outside the mutex.
 */
#include "server/repl.h"

#include <errno.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/wire.h"
#include "server/log.h"

typedef struct repl_ack {
    char table[EMBER_TABLE_NAME_MAX + 1];
    uint64_t version;
} repl_ack;

typedef struct repl_peer {
    char id[64];
    char addr[256];
    uint64_t seen_ms; /* CLOCK_MONOTONIC */
    uint64_t dedup_next; /* it holds the pairs before this position of the log */
    repl_ack *acks;
    size_t n, cap;
} repl_peer;

typedef struct repl_parked {
    srv_call *c;
    srv_reply reply;
    char table[EMBER_TABLE_NAME_MAX + 1];
    uint64_t version;   /* the table's after the push */
    uint32_t need;
    uint64_t cap_ms;    /* answered UNAVAILABLE then, whatever the deadline */
    uint64_t dedup_pos; /* the log's position after its pair */
    struct repl_parked *next;
} repl_parked;

typedef struct repl_held {
    srv_call *c;
    void (*resume)(srv_call *c);
    uint64_t writes;     /* writes_now() when held */
    uint64_t until_ms;
    struct repl_held *next;
} repl_held;

static struct {
    pthread_mutex_t mu;
    repl_held *held;     /* long polls */
    pthread_cond_t cv;
    repl_peer peers[SRV_REPL_MAX_FOLLOWERS];
    size_t npeers;
    repl_parked *parked;
    pthread_t thread;
    int started, stop;
    atomic_uint_fast64_t nparked, acked, failed;
    /* the log of applied pairs (its own mutex: every push with a client id) */
    pthread_mutex_t log_mu;
    uint64_t log_client[SRV_REPL_DEDUP_LOG], log_seq[SRV_REPL_DEDUP_LOG];
    _Atomic uint64_t log_next; /* the position of the next pair */
} rp = {.mu = PTHREAD_MUTEX_INITIALIZER, .log_mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- followers ------------------------------------------------------------ */

static repl_peer *peer_locked(const char *id, const char *addr, uint64_t now)
{
    repl_peer *free_p = NULL, *oldest = NULL;
    for (size_t i = 0; i < rp.npeers; i++) {
        repl_peer *p = &rp.peers[i];
        if (!strcmp(p->id, id))
            return p;
        if (now - p->seen_ms > SRV_REPL_FORGET_MS && !free_p)
            free_p = p;
        if (!oldest || p->seen_ms < oldest->seen_ms)
            oldest = p;
    }
    repl_peer *p = free_p;
    if (!p && rp.npeers < SRV_REPL_MAX_FOLLOWERS)
        p = &rp.peers[rp.npeers++];
    if (!p)
        p = oldest; /* more followers than remembered: the longest silent goes */
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->addr, sizeof p->addr, "%s", addr ? addr : "");
    p->n = 0;
    p->dedup_next = 0;
    srv_log(SRV_LOG_INFO, "follower_attached", "follower_id=%s addr=%s", p->id, p->addr);
    return p;
}

void srv_repl_progress(const char *follower_id, const char *addr, const char *table,
                       uint64_t version)
{
    if (!follower_id || !*follower_id || !table)
        return;
    pthread_mutex_lock(&rp.mu);
    /* read under the lock: seen_ms never runs ahead of another thread's now */
    uint64_t now = mono_ms();
    repl_peer *p = peer_locked(follower_id, addr, now);
    p->seen_ms = now;
    size_t i;
    for (i = 0; i < p->n && strcmp(p->acks[i].table, table); i++)
        ;
    if (i == p->n) {
        if (p->n == p->cap) {
            size_t cap = p->cap ? 2 * p->cap : 8;
            repl_ack *a = realloc(p->acks, cap * sizeof *a);
            if (!a) {
                pthread_mutex_unlock(&rp.mu);
                return;
            }
            p->acks = a;
            p->cap = cap;
        }
        snprintf(p->acks[i].table, sizeof p->acks[i].table, "%s", table);
        p->n++;
    }
    /* a follower that started over (a table made again) may go back */
    p->acks[i].version = version;
    if (rp.parked)
        pthread_cond_signal(&rp.cv);
    pthread_mutex_unlock(&rp.mu);
}

/* Followers that hold `table` at `version` or above (and the log of pairs up
 * to dedup_pos) / attached to it now. */
static unsigned holding_locked(const char *table, uint64_t version, uint64_t dedup_pos,
                               int attached_only, uint64_t now)
{
    unsigned k = 0;
    for (size_t i = 0; i < rp.npeers; i++) {
        const repl_peer *p = &rp.peers[i];
        if (attached_only && now - p->seen_ms > SRV_REPL_ATTACHED_MS)
            continue;
        if (p->dedup_next < dedup_pos)
            continue;
        for (size_t j = 0; j < p->n; j++)
            if (!strcmp(p->acks[j].table, table)) {
                k += p->acks[j].version >= version;
                break;
            }
    }
    return k;
}

int srv_repl_need(const srv_table *t, int32_t ack, uint32_t replicas, uint32_t *need,
                  ember_error *err)
{
    *need = 0;
    if (ack < EMBER_WIRE_ACK_DEFAULT || ack > EMBER_WIRE_ACK_REPLICATED)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown ack mode %d (0 default, 1 async, 2 replicated)",
                               (int)ack);
    if (replicas > SRV_REPL_MAX_FOLLOWERS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "ack_replicas %u is over the %d followers a leader counts",
                               replicas, SRV_REPL_MAX_FOLLOWERS);
    int mode = ack ? ack : atomic_load(&((srv_table *)t)->ack);
    if (mode != EMBER_WIRE_ACK_REPLICATED)
        return 0;
    uint32_t n = replicas ? replicas : atomic_load(&((srv_table *)t)->ack_replicas);
    if (!n)
        n = 1;
    pthread_mutex_lock(&rp.mu);
    unsigned attached = holding_locked(t->name, 0, 0, 1, mono_ms());
    pthread_mutex_unlock(&rp.mu);
    if (attached < n)
        return ember_error_set(err, EMBER_UNAVAILABLE,
                               "a replicated push on table '%s' needs %u follower%s; %u "
                               "attached (a progress request in the last %d ms): nothing "
                               "applied",
                               t->name, n, n == 1 ? "" : "s", attached,
                               SRV_REPL_ATTACHED_MS);
    *need = n;
    return 0;
}

void srv_repl_arm(srv_call *c, const char *table, uint32_t need)
{
    c->repl_need = need;
    snprintf(c->repl_table, sizeof c->repl_table, "%s", table);
}

int srv_repl_park(srv_call *c, srv_reply *resp)
{
    if (!c->repl_need)
        return 0;
    srv_table *t = srv_registry_get(srv.registry, c->repl_table, strlen(c->repl_table));
    repl_parked *p = t ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        c->repl_need = 0;
        if (resp)
            srv_reply_discard(resp);
        srv_call_finish(c, t ? EMBER_RESOURCE_EXHAUSTED : EMBER_UNAVAILABLE,
                        t ? "replicated push: applied on the leader; out of memory to wait "
                            "for followers: not acknowledged"
                          : "replicated push: applied on the leader; its table was dropped "
                            "before followers had it: not acknowledged",
                        NULL);
        srv_table_unref(t);
        atomic_fetch_add(&rp.failed, 1);
        return 1;
    }
    /* every write of the push is at or below this: a follower holding it holds
     * them; and its pair, recorded before this answer, is before this position */
    p->version = ember_table_version(t->table);
    p->dedup_pos = atomic_load(&rp.log_next);
    srv_table_unref(t);
    p->c = c;
    if (resp) {
        p->reply = *resp;
        resp->n = 0;
    }
    snprintf(p->table, sizeof p->table, "%s", c->repl_table);
    p->need = c->repl_need;
    p->cap_ms = mono_ms() + SRV_REPL_WAIT_MAX_MS;
    pthread_mutex_lock(&rp.mu);
    p->next = rp.parked;
    rp.parked = p;
    /* the follower's long poll on it resumes now, not at the next tick */
    atomic_fetch_add(&rp.nparked, 1);
    pthread_cond_signal(&rp.cv);
    pthread_mutex_unlock(&rp.mu);
    return 1;
}

/* Answers the parked pushes that are done (held by enough followers, past
 * their deadline, or everything at stop), outside the mutex. */
static void answer_ready(void)
{
    repl_parked *done = NULL;
    uint64_t now = mono_ms();
    /* at shutdown: answered before the transport waits for calls to end */
    int stopping = rp.stop || atomic_load(&srv.stopping);
    pthread_mutex_lock(&rp.mu);
    for (repl_parked **pp = &rp.parked; *pp;) {
        repl_parked *p = *pp;
        unsigned have = holding_locked(p->table, p->version, p->dedup_pos, 0, now);
        if (have >= p->need || stopping || now >= p->cap_ms || srv_call_expired(p->c)) {
            *pp = p->next;
            p->next = done;
            done = p;
            p->need = have >= p->need ? 0 : p->need;
            p->version = have; /* reused: how many had it */
        } else {
            pp = &p->next;
        }
    }
    pthread_mutex_unlock(&rp.mu);
    while (done) {
        repl_parked *p = done;
        done = p->next;
        srv_call *c = p->c;
        c->repl_need = 0;
        atomic_fetch_sub(&rp.nparked, 1);
        if (!p->need) {
            atomic_fetch_add(&rp.acked, 1);
            srv_call_finish_reply(c, EMBER_OK, NULL, &p->reply);
        } else {
            char msg[400];
            int code = srv_call_expired(c) ? EMBER_DEADLINE_EXCEEDED : EMBER_UNAVAILABLE;
            snprintf(msg, sizeof msg,
                     "replicated push on table '%s': applied on the leader but held by %u "
                     "of the %u follower%s it waits for %s: NOT acknowledged (a retry with "
                     "the same client_id and sequence is answered as a duplicate)",
                     p->table, (unsigned)p->version, p->need, p->need == 1 ? "" : "s",
                     code == EMBER_DEADLINE_EXCEEDED ? "before the call's deadline"
                     : stopping                      ? "when the leader stopped"
                                                     : "within the leader's wait bound");
            srv_reply_discard(&p->reply);
            atomic_fetch_add(&rp.failed, 1);
            srv_log(SRV_LOG_WARN, "replicated_push_failed", "table=%s held_by=%u need=%u",
                    p->table, (unsigned)p->version, p->need);
            srv_call_finish(c, code, msg, NULL);
        }
        free(p);
    }
}

/* The sum of every table's version: it moves with every write on this server. */
static uint64_t writes_now(void)
{
    size_t n = 0;
    uint64_t sum = 0;
    srv_table **list = srv_registry_list(srv.registry, &n);
    for (size_t i = 0; list && i < n; i++)
        sum += ember_table_version(list[i]->table) + list[i]->uid;
    srv_registry_list_free(list, n);
    return sum;
}

void srv_repl_hold_export(srv_call *c, srv_table *t, uint32_t wait_ms,
                          void (*resume)(srv_call *c))
{
    (void)t;
    repl_held *h = calloc(1, sizeof *h);
    if (!h) {
        resume(c);
        return;
    }
    h->c = c;
    h->resume = resume;
    h->writes = writes_now();
    h->until_ms = mono_ms() + (wait_ms > 1000 ? 1000 : wait_ms);
    pthread_mutex_lock(&rp.mu);
    h->next = rp.held;
    rp.held = h;
    pthread_mutex_unlock(&rp.mu);
}

/* Resumes the long polls whose wait is over, outside the mutex. */
static void resume_held(void)
{
    pthread_mutex_lock(&rp.mu);
    int any = rp.held != NULL;
    pthread_mutex_unlock(&rp.mu);
    if (!any)
        return;
    uint64_t writes = writes_now(), now = mono_ms();
    int stopping = rp.stop || atomic_load(&srv.stopping);
    repl_held *done = NULL;
    pthread_mutex_lock(&rp.mu);
    for (repl_held **pp = &rp.held; *pp;) {
        repl_held *h = *pp;
        if (h->writes != writes || now >= h->until_ms || stopping || srv_call_expired(h->c)) {
            *pp = h->next;
            h->next = done;
            done = h;
        } else {
            pp = &h->next;
        }
    }
    pthread_mutex_unlock(&rp.mu);
    while (done) {
        repl_held *h = done;
        done = h->next;
        h->resume(h->c);
        free(h);
    }
}

static void *waiter_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&rp.mu);
    while (!rp.stop || rp.parked || rp.held) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += 2000000L; /* deadlines are looked at every 2 ms */
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        if (!rp.stop)
            pthread_cond_timedwait(&rp.cv, &rp.mu, &dl);
        pthread_mutex_unlock(&rp.mu);
        resume_held();
        answer_ready();
        pthread_mutex_lock(&rp.mu);
    }
    pthread_mutex_unlock(&rp.mu);
    return NULL;
}

int srv_repl_start(char *msg, size_t cap)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&rp.cv, &a);
    pthread_condattr_destroy(&a);
    int e = pthread_create(&rp.thread, NULL, waiter_main, NULL);
    if (e) {
        snprintf(msg, cap, "cannot start the replication thread: %s", strerror(e));
        return -1;
    }
    rp.started = 1;
    return 0;
}

void srv_repl_stop(void)
{
    if (!rp.started)
        return;
    pthread_mutex_lock(&rp.mu);
    rp.stop = 1;
    pthread_cond_signal(&rp.cv);
    pthread_mutex_unlock(&rp.mu);
    pthread_join(rp.thread, NULL);
    rp.started = 0;
    for (size_t i = 0; i < rp.npeers; i++)
        free(rp.peers[i].acks);
    rp.npeers = 0;
}

void srv_repl_dedup_record(uint64_t client, uint64_t seq)
{
    if (!client)
        return;
    pthread_mutex_lock(&rp.log_mu);
    uint64_t at = atomic_load(&rp.log_next);
    rp.log_client[at % SRV_REPL_DEDUP_LOG] = client;
    rp.log_seq[at % SRV_REPL_DEDUP_LOG] = seq;
    atomic_store(&rp.log_next, at + 1);
    pthread_mutex_unlock(&rp.log_mu);
}

void srv_repl_dedup_since(uint64_t after, uint64_t *clients, uint64_t *seqs, size_t cap,
                          size_t *n, uint64_t *next, uint64_t *lost)
{
    pthread_mutex_lock(&rp.log_mu);
    uint64_t end = atomic_load(&rp.log_next);
    uint64_t first = end > SRV_REPL_DEDUP_LOG ? end - SRV_REPL_DEDUP_LOG : 0;
    *lost = after < first ? first - after : 0;
    uint64_t at = after < first ? first : after > end ? end : after;
    size_t k = 0;
    for (; at < end && k < cap; at++, k++) {
        clients[k] = rp.log_client[at % SRV_REPL_DEDUP_LOG];
        seqs[k] = rp.log_seq[at % SRV_REPL_DEDUP_LOG];
    }
    pthread_mutex_unlock(&rp.log_mu);
    *n = k;
    *next = at;
}

void srv_repl_dedup_progress(const char *follower_id, uint64_t next)
{
    if (!follower_id || !*follower_id)
        return;
    pthread_mutex_lock(&rp.mu);
    for (size_t i = 0; i < rp.npeers; i++)
        if (!strcmp(rp.peers[i].id, follower_id)) {
            rp.peers[i].dedup_next = next;
            break;
        }
    if (rp.parked)
        pthread_cond_signal(&rp.cv);
    pthread_mutex_unlock(&rp.mu);
}

size_t srv_repl_followers(srv_repl_follower *out, size_t cap)
{
    size_t k = 0;
    pthread_mutex_lock(&rp.mu);
    uint64_t now = mono_ms();
    for (size_t i = 0; i < rp.npeers && k < cap; i++) {
        const repl_peer *p = &rp.peers[i];
        if (now - p->seen_ms > SRV_REPL_FORGET_MS)
            continue;
        srv_repl_follower *f = &out[k++];
        snprintf(f->id, sizeof f->id, "%s", p->id);
        snprintf(f->addr, sizeof f->addr, "%s", p->addr);
        f->last_seen_ms = now - p->seen_ms;
        f->lag_versions = 0;
        for (size_t j = 0; j < p->n; j++) {
            srv_table *t = srv_registry_get(srv.registry, p->acks[j].table,
                                            strlen(p->acks[j].table));
            if (!t)
                continue;
            uint64_t v = ember_table_version(t->table);
            f->lag_versions += v > p->acks[j].version ? v - p->acks[j].version : 0;
            srv_table_unref(t);
        }
    }
    pthread_mutex_unlock(&rp.mu);
    return k;
}

void srv_repl_counts(uint64_t *parked, uint64_t *acked, uint64_t *failed)
{
    *parked = atomic_load(&rp.nparked);
    *acked = atomic_load(&rp.acked);
    *failed = atomic_load(&rp.failed);
}

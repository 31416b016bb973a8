/*
 * test_coalesce.c — server/coalesce.c on its own, no gRPC and no table: the
 * leader/follower queue under many threads (one runner at a time, every member's
 * own slice of keys and of the result, a batch never holding a call that arrived
 * after it started, batches bounded by their capacity, a failed batch's error
 * reaching every member), the wait for more members (only behind another batch,
 * ended early when full), batches running in the order they were opened, and
 * the layers that keep repeated gradient keys in separate steps.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/coalesce.h"
#include "test_util.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- layers -------------------------------------------------------------- */

static uint32_t layers_of(const uint64_t *keys, size_t n, const size_t *starts, size_t m,
                          uint32_t *layer)
{
    size_t cap = srv_co_layers_map_cap(n);
    srv_co_slot *map = malloc(cap * sizeof *map);
    uint32_t top = srv_co_layers(keys, n, starts, m, layer, map, cap);
    free(map);
    return top;
}

START_TEST(layers_repeat_across_members_only)
{
    /* A {1,2}, B {2,3}, C {2,1}: serially key 2 steps three times, key 1 twice */
    uint64_t keys[] = {1, 2, 2, 3, 2, 1};
    size_t starts[] = {0, 2, 4};
    uint32_t layer[6], want[] = {0, 0, 1, 0, 2, 1};
    ck_assert_uint_eq(layers_of(keys, 6, starts, 3, layer), 2);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(layer[i], want[i]);

    /* equal keys inside one member share its layer (one call sums them, as alone) */
    uint64_t k2[] = {5, 5, 7, 5, 5, 9};
    size_t s2[] = {0, 3};
    uint32_t l2[6], w2[] = {0, 0, 0, 1, 1, 0};
    ck_assert_uint_eq(layers_of(k2, 6, s2, 2, l2), 1);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(l2[i], w2[i]);

    /* disjoint members: one layer */
    uint64_t k3[] = {1, 2, 3, 4, 5, 6, 7};
    size_t s3[] = {0, 3, 4};
    uint32_t l3[7];
    ck_assert_uint_eq(layers_of(k3, 7, s3, 3, l3), 0);
    for (int i = 0; i < 7; i++)
        ck_assert_uint_eq(l3[i], 0);
}
END_TEST

START_TEST(layers_many_members_same_keys)
{
    /* 50 members each pushing keys 0..99 (in different orders) plus a key of its
     * own: the shared keys land in layers 0..49 in member order, own keys in 0 */
    enum { M = 50, K = 100 };
    size_t n = (size_t)M * (K + 1), starts[M];
    uint64_t *keys = malloc(n * sizeof *keys);
    uint32_t *layer = malloc(n * sizeof *layer);
    for (size_t j = 0; j < M; j++) {
        starts[j] = j * (K + 1);
        for (size_t i = 0; i < K; i++)
            keys[starts[j] + i] = (i * 37 + j) % K;
        keys[starts[j] + K] = 1000000 + j;
    }
    ck_assert_uint_eq(layers_of(keys, n, starts, M, layer), M - 1);
    for (size_t j = 0; j < M; j++) {
        for (size_t i = 0; i < K; i++)
            ck_assert_uint_eq(layer[starts[j] + i], j);
        ck_assert_uint_eq(layer[starts[j] + K], 0);
    }
    free(keys);
    free(layer);
}
END_TEST

/* ---- the queue under threads --------------------------------------------- */

enum { CAP = 64, THREADS = 8, CALLS = 300 };

typedef struct sim {
    srv_co_queue q;
    unsigned wait_us;
    atomic_int running;              /* runners now: must never pass 1 */
    atomic_uint_fast64_t clock;      /* logical time: arrivals and starts */
    atomic_uint_fast64_t multi, alone, batched_calls;
    atomic_int bad;                  /* invariant violations */
    char why[256];
} sim;

/* What a batch shares with its members: result[i] = key[i] + 1, counted so the
 * last member to read frees it (the leader may be on its next call by then). */
typedef struct sim_result {
    atomic_int refs;
    size_t n;
    uint64_t v[];
} sim_result;

typedef struct sim_member {
    srv_co_member m; /* first */
    uint64_t arrived;
    uint64_t id;
} sim_member;

static void sim_fail(sim *s, const char *why)
{
    if (atomic_fetch_add(&s->bad, 1) == 0)
        snprintf(s->why, sizeof s->why, "%s", why);
}

static uint64_t key_of(uint64_t id, size_t i) { return id * 1000000u + i; }

static uint64_t run_enter(sim *s)
{
    if (atomic_fetch_add(&s->running, 1) != 0)
        sim_fail(s, "two runners at once");
    return atomic_fetch_add(&s->clock, 1);
}

static void run_leave(sim *s)
{
    usleep(50 + rand() % 100); /* long enough for others to queue */
    atomic_fetch_sub(&s->running, 1);
}

static void sim_call(sim *s, uint64_t id, size_t n, uint64_t *bufs)
{
    uint64_t arrived = atomic_fetch_add(&s->clock, 1);
    if (srv_co_try_alone(&s->q)) {
        run_enter(s);
        run_leave(s);
        atomic_fetch_add(&s->alone, 1);
        srv_co_alone_done(&s->q);
        return;
    }
    sim_member sm;
    srv_co_batch b;
    sm.arrived = arrived;
    sm.id = id;
    int lead = srv_co_join(&s->q, &sm.m, n, &b, bufs, CAP);
    uint64_t *mine = (uint64_t *)sm.m.cm_bufs + sm.m.cm_off;
    for (size_t i = 0; i < n; i++)
        mine[i] = key_of(id, i);
    if (lead) {
        srv_co_batch *run = srv_co_lead(&s->q, &sm.m, s->wait_us);
        uint64_t start = run_enter(s);
        size_t total = 0;
        unsigned members = 0;
        for (srv_co_member *m = run->cb_first; m; m = m->cm_next) {
            sim_member *x = (sim_member *)(void *)m;
            if (x->arrived >= start)
                sim_fail(s, "a call served by a batch that started before it arrived");
            if (m->cm_off != total)
                sim_fail(s, "members' ranges are not contiguous in join order");
            for (size_t i = 0; i < m->cm_n; i++)
                if (bufs[m->cm_off + i] != key_of(x->id, i))
                    sim_fail(s, "a member's keys are not where it was told to write");
            total += m->cm_n;
            members++;
        }
        if (total != run->cb_keys || members != run->cb_members || run->cb_first != &sm.m)
            sim_fail(s, "batch bookkeeping");
        if (members > 1 && total > CAP)
            sim_fail(s, "a batch of several calls over its capacity");
        if (members > 1) {
            atomic_fetch_add(&s->multi, 1);
            atomic_fetch_add(&s->batched_calls, members);
        }
        run_leave(s);
        if (total % 7 == 0) { /* some batches fail: every member must hear why */
            ember_error e;
            ember_error_set(&e, EMBER_UNAVAILABLE, "boom %zu", total);
            srv_co_finish(&s->q, run, EMBER_UNAVAILABLE, &e, NULL);
        } else {
            sim_result *r = malloc(sizeof *r + total * sizeof(uint64_t));
            atomic_init(&r->refs, (int)members);
            r->n = total;
            for (size_t i = 0; i < total; i++)
                r->v[i] = bufs[i] + 1;
            srv_co_finish(&s->q, run, 0, NULL, r);
        }
    } else {
        srv_co_wait(&s->q, &sm.m);
    }
    if (sm.m.cm_status) {
        size_t total;
        if (sm.m.cm_status != EMBER_UNAVAILABLE || sm.m.cm_result ||
            sscanf(sm.m.cm_err.message, "boom %zu", &total) != 1 || total % 7)
            sim_fail(s, "a failed batch's member got the wrong error");
        return;
    }
    sim_result *r = sm.m.cm_result;
    if (!r || sm.m.cm_off + n > r->n) {
        sim_fail(s, "no result");
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (r->v[sm.m.cm_off + i] != key_of(id, i) + 1)
            sim_fail(s, "a member's slice of the result is not its own");
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        free(r);
}

typedef struct sim_thread {
    sim *s;
    unsigned seed;
    int t;
} sim_thread;

static void *sim_main(void *p)
{
    sim_thread *a = p;
    uint64_t *bufs = malloc(CAP * sizeof *bufs);
    for (int c = 0; c < CALLS; c++) {
        size_t n = 1 + (size_t)rand_r(&a->seed) % 40;
        if (c % 50 == 49)
            n = CAP + 10; /* larger than a batch: runs as a batch of its own */
        uint64_t *b = n > CAP ? malloc(n * sizeof *b) : bufs;
        sim_call(a->s, (uint64_t)a->t * 100000u + (uint64_t)c, n, b);
        if (b != bufs)
            free(b);
    }
    free(bufs);
    return NULL;
}

static void sim_run(unsigned wait_us)
{
    sim s;
    memset(&s, 0, sizeof s);
    srv_co_queue_init(&s.q);
    s.wait_us = wait_us;
    pthread_t th[THREADS];
    sim_thread a[THREADS];
    for (int t = 0; t < THREADS; t++) {
        a[t] = (sim_thread){&s, 1234u + (unsigned)t, t};
        pthread_create(&th[t], NULL, sim_main, &a[t]);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    ck_assert_msg(atomic_load(&s.bad) == 0, "%d violations, first: %s", atomic_load(&s.bad),
                  s.why);
    ck_assert_msg(atomic_load(&s.multi) > 0, "no batch of several calls in %d calls",
                  THREADS * CALLS);
    ck_assert_uint_ge(atomic_load(&s.batched_calls), 2 * atomic_load(&s.multi));
    ck_assert_int_eq(s.q.cq_executing, 0);
    ck_assert_ptr_null(s.q.cq_head);
    ck_assert_ptr_null(s.q.cq_tail);
    srv_co_queue_destroy(&s.q);
}

START_TEST(threads_batch_their_own_slices)
{
    sim_run(0);
}
END_TEST

START_TEST(threads_batch_with_a_wait)
{
    sim_run(200);
}
END_TEST

/* ---- the wait, fullness, order ------------------------------------------- */

typedef struct joiner {
    srv_co_queue *q;
    size_t n, cap;
    unsigned wait_us;
    uint64_t bufs[64];
    double joined, led;      /* when it joined / when lead returned */
    unsigned members;
    int lead;
    atomic_int *order;       /* incremented when its batch runs */
    int ran_as;
} joiner;

static void *joiner_main(void *p)
{
    joiner *j = p;
    srv_co_member m;
    srv_co_batch b;
    j->lead = srv_co_join(j->q, &m, j->n, &b, j->bufs, j->cap);
    j->joined = now_s();
    if (j->lead) {
        srv_co_batch *run = srv_co_lead(j->q, &m, j->wait_us);
        j->led = now_s();
        j->members = run->cb_members;
        j->ran_as = atomic_fetch_add(j->order, 1);
        srv_co_finish(j->q, run, 0, NULL, NULL);
    } else {
        srv_co_wait(j->q, &m);
    }
    return NULL;
}

/* Spins until q has an open batch with `members` members (joins are quick). */
static void until_members(srv_co_queue *q, unsigned members)
{
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&q->cq_mu);
        unsigned have = q->cq_tail ? q->cq_tail->cb_members : 0;
        pthread_mutex_unlock(&q->cq_mu);
        if (have >= members)
            return;
        usleep(100);
    }
    ck_abort_msg("no batch of %u members formed", members);
}

START_TEST(idle_queue_does_not_wait)
{
    srv_co_queue q;
    atomic_int order = 0;
    srv_co_queue_init(&q);
    joiner j = {.q = &q, .n = 4, .cap = 64, .wait_us = 2000000, .order = &order};
    double t0 = now_s();
    joiner_main(&j); /* opens a batch on an idle queue: runs at once */
    ck_assert_int_eq(j.lead, 1);
    ck_assert_msg(j.led - t0 < 0.5, "waited %.3f s on an idle queue", j.led - t0);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    srv_co_alone_done(&q);
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(queued_batch_waits_until_full)
{
    srv_co_queue q;
    atomic_int order = 0;
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1); /* busy: what follows queues */
    joiner b = {.q = &q, .n = 6, .cap = 10, .wait_us = 5000000, .order = &order};
    joiner c = {.q = &q, .n = 4, .cap = 10, .wait_us = 5000000, .order = &order};
    pthread_t tb, tc;
    pthread_create(&tb, NULL, joiner_main, &b);
    until_members(&q, 1);
    ck_assert_int_eq(srv_co_try_alone(&q), 0);
    usleep(20000);
    srv_co_alone_done(&q); /* b's batch may run: it waits for more (up to 5 s) */
    usleep(50000);
    double t0 = now_s();
    pthread_create(&tc, NULL, joiner_main, &c); /* fills it: b runs at once */
    pthread_join(tc, NULL);
    pthread_join(tb, NULL);
    ck_assert_int_eq(b.lead, 1);
    ck_assert_int_eq(c.lead, 0);
    ck_assert_uint_eq(b.members, 2);
    ck_assert_msg(b.led - t0 < 2.0, "a full batch still waited %.3f s", b.led - t0);
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(queued_batch_waits_wait_us)
{
    srv_co_queue q;
    atomic_int order = 0;
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    joiner b = {.q = &q, .n = 6, .cap = 10, .wait_us = 100000, .order = &order};
    pthread_t tb;
    pthread_create(&tb, NULL, joiner_main, &b);
    until_members(&q, 1);
    double t0 = now_s();
    srv_co_alone_done(&q);
    pthread_join(tb, NULL);
    ck_assert_uint_eq(b.members, 1);
    ck_assert_msg(b.led - t0 >= 0.09, "waited only %.3f s of 0.1", b.led - t0);
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(overflow_opens_next_batch_in_order)
{
    srv_co_queue q;
    atomic_int order = 0;
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    joiner j[3] = {
        {.q = &q, .n = 6, .cap = 10, .wait_us = 100000, .order = &order},
        {.q = &q, .n = 6, .cap = 10, .wait_us = 100000, .order = &order}, /* does not fit */
        {.q = &q, .n = 3, .cap = 10, .wait_us = 100000, .order = &order}, /* joins j[1]'s */
    };
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&th[i], NULL, joiner_main, &j[i]);
        /* wait until it is in the queue before the next one comes */
        for (int k = 0; k < 20000; k++) {
            pthread_mutex_lock(&q.cq_mu);
            unsigned in = 0;
            for (srv_co_batch *b = q.cq_head; b; b = b->cb_next)
                in += b->cb_members;
            pthread_mutex_unlock(&q.cq_mu);
            if (in == (unsigned)i + 1)
                break;
            usleep(100);
        }
    }
    srv_co_alone_done(&q);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(j[0].lead, 1);
    ck_assert_int_eq(j[1].lead, 1);
    ck_assert_int_eq(j[2].lead, 0);
    ck_assert_uint_eq(j[0].members, 1); /* marked full when j[1] did not fit: no wait */
    ck_assert_uint_eq(j[1].members, 2);
    ck_assert_int_eq(j[0].ran_as, 0);   /* opened first, ran first */
    ck_assert_int_eq(j[1].ran_as, 1);
    srv_co_queue_destroy(&q);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coalesce");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, layers_repeat_across_members_only);
    tcase_add_test(tc, layers_many_members_same_keys);
    tcase_add_test(tc, threads_batch_their_own_slices);
    tcase_add_test(tc, threads_batch_with_a_wait);
    tcase_add_test(tc, idle_queue_does_not_wait);
    tcase_add_test(tc, queued_batch_waits_until_full);
    tcase_add_test(tc, queued_batch_waits_wait_us);
    tcase_add_test(tc, overflow_opens_next_batch_in_order);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

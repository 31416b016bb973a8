/*
 * test_coalesce.c — server/coalesce.c on its own, no gRPC and no table: the
 * combining queue step by step (an idle queue's caller runs alone and then
 * drains, members' slots in join order, a taken batch takes no one else, a
 * caller that writes with nobody running becomes the runner, the bound on
 * waiting keys refuses and recovers, overflow opens the next batch in order) and
 * under many threads (one runner at a time, every call answered exactly once,
 * by a batch that started after it arrived, with exactly its own keys), and the
 * layers that keep repeated gradient keys in separate steps.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/coalesce.h"
#include "test_util.h"

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

/* ---- the queue, step by step --------------------------------------------- */

START_TEST(idle_queue_runs_alone_then_drains)
{
    srv_co_queue q;
    srv_co_part part;
    int ctx[2];
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);  /* idle: the caller runs, and is the runner */
    ck_assert_int_eq(srv_co_try_alone(&q), 0);  /* busy now */
    /* two calls queue behind it, into one batch, each its own slots */
    ck_assert_int_eq(srv_co_join(&q, 3, 2, 8, 100, &ctx[0], &part), 0);
    for (int i = 0; i < 3; i++)
        part.keys[i] = 10 + (uint64_t)i;
    for (int i = 0; i < 6; i++)
        part.vals[i] = (float)i;
    ck_assert_int_eq(srv_co_written(&q, &part), 0); /* someone runs: the call is theirs */
    ck_assert_int_eq(srv_co_join(&q, 2, 2, 8, 100, &ctx[1], &part), 0);
    part.keys[0] = 20;
    part.keys[1] = 21;
    part.vals[0] = part.vals[1] = part.vals[2] = part.vals[3] = 9.0f;
    ck_assert_int_eq(srv_co_written(&q, &part), 0);
    /* the runner takes the batch: both members, in join order, their parts in place */
    srv_co_batch *b = srv_co_next(&q);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cb_n, 2);
    ck_assert_uint_eq(b->cb_used, 5);
    ck_assert_ptr_eq(b->cb_members[0].cm_ctx, &ctx[0]);
    ck_assert_ptr_eq(b->cb_members[1].cm_ctx, &ctx[1]);
    ck_assert_uint_eq(b->cb_members[1].cm_off, 3);
    uint64_t want[] = {10, 11, 12, 20, 21};
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(b->cb_keys[i], want[i]);
    ck_assert_float_eq(b->cb_vals[5], 5.0f);
    ck_assert_float_eq(b->cb_vals[6], 9.0f);
    /* taken: closed, so a call arriving now opens the next batch */
    ck_assert_int_eq(srv_co_join(&q, 1, 2, 8, 100, &ctx[0], &part), 0);
    ck_assert_ptr_ne(part.batch, b);
    ck_assert_int_eq(srv_co_written(&q, &part), 0);
    srv_co_release(&q, b);
    b = srv_co_next(&q);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cb_n, 1);
    srv_co_release(&q, b);
    ck_assert_ptr_null(srv_co_next(&q)); /* empty: the runner leaves */
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    ck_assert_ptr_null(srv_co_next(&q));
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(written_with_nobody_running_makes_a_runner)
{
    /* the runner left between a caller's busy check and its join: the caller's
     * own srv_co_written hands it the queue, so no batch is ever left behind */
    srv_co_queue q;
    srv_co_part part;
    int ctx;
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_join(&q, 4, 0, 8, 100, &ctx, &part), 0);
    ck_assert_ptr_null(part.vals); /* no values asked for */
    ck_assert_int_eq(srv_co_written(&q, &part), 1);
    srv_co_batch *b = srv_co_next(&q);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cb_n, 1);
    srv_co_release(&q, b);
    ck_assert_ptr_null(srv_co_next(&q));
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(full_queue_refuses_and_recovers)
{
    srv_co_queue q;
    srv_co_part part;
    int ctx;
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    ck_assert_int_eq(srv_co_join(&q, 10, 1, 16, 16, &ctx, &part), 0);
    ck_assert_int_eq(srv_co_written(&q, &part), 0);
    /* 10 + 7 > 16 waiting keys: refused, nothing reserved */
    ck_assert_int_eq(srv_co_join(&q, 7, 1, 16, 16, &ctx, &part), -1);
    ck_assert_int_eq(srv_co_join(&q, 6, 1, 16, 16, &ctx, &part), 0);
    ck_assert_int_eq(srv_co_written(&q, &part), 0);
    ck_assert_int_eq(srv_co_join(&q, 1, 1, 16, 16, &ctx, &part), -1);
    srv_co_batch *b = srv_co_next(&q); /* taken: its keys no longer wait */
    ck_assert_uint_eq(b->cb_used, 16);
    ck_assert_int_eq(srv_co_join(&q, 16, 1, 16, 16, &ctx, &part), 0);
    ck_assert_int_eq(srv_co_written(&q, &part), 0);
    srv_co_release(&q, b);
    b = srv_co_next(&q);
    ck_assert_uint_eq(b->cb_used, 16);
    srv_co_release(&q, b);
    ck_assert_ptr_null(srv_co_next(&q));
    srv_co_queue_destroy(&q);
}
END_TEST

START_TEST(overflow_opens_next_batch_in_order)
{
    /* a call that does not fit the open batch opens the next one; a call larger
     * than the batch size gets a batch of its own size */
    srv_co_queue q;
    srv_co_part part;
    int ctx[4];
    srv_co_queue_init(&q);
    ck_assert_int_eq(srv_co_try_alone(&q), 1);
    size_t n[] = {5, 4, 3, 20};
    srv_co_batch *seen[4];
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(srv_co_join(&q, n[i], 0, 8, 1000, &ctx[i], &part), 0);
        seen[i] = part.batch;
        part.keys[n[i] - 1] = (uint64_t)i;
        ck_assert_int_eq(srv_co_written(&q, &part), 0);
    }
    ck_assert_ptr_ne(seen[0], seen[1]);   /* 5 + 4 > 8 */
    ck_assert_ptr_eq(seen[1], seen[2]);   /* 4 + 3 ≤ 8 */
    ck_assert_ptr_ne(seen[2], seen[3]);
    srv_co_batch *b = srv_co_next(&q);
    ck_assert_ptr_eq(b, seen[0]);
    ck_assert_uint_eq(b->cb_keys[4], 0);
    srv_co_release(&q, b);
    b = srv_co_next(&q);
    ck_assert_ptr_eq(b, seen[1]);
    ck_assert_uint_eq(b->cb_n, 2);
    ck_assert_uint_eq(b->cb_keys[6], 2);
    srv_co_release(&q, b);
    b = srv_co_next(&q);
    ck_assert_uint_eq(b->cb_cap, 20);
    ck_assert_uint_eq(b->cb_keys[19], 3);
    srv_co_release(&q, b);
    ck_assert_ptr_null(srv_co_next(&q));
    srv_co_queue_destroy(&q);
}
END_TEST

/* ---- the queue under threads --------------------------------------------- */

enum { CAP = 64, THREADS = 8, CALLS = 400 };

typedef struct sim {
    srv_co_queue q;
    atomic_int running;              /* runners now: must never pass 1 */
    atomic_uint_fast64_t clock;      /* logical time: arrivals and batch starts */
    atomic_uint_fast64_t batched_calls, multi, refused;
    atomic_int bad;                  /* invariant violations */
    char why[256];
} sim;

/* One call: answered exactly once, by a batch that started after it arrived,
 * with exactly its own keys. */
typedef struct sim_call {
    uint64_t id;
    size_t n;
    uint64_t arrived;
    atomic_int answered;
} sim_call;

static void sim_fail(sim *s, const char *why)
{
    if (atomic_fetch_add(&s->bad, 1) == 0)
        snprintf(s->why, sizeof s->why, "%s", why);
}

static uint64_t key_of(uint64_t id, size_t i) { return id * 1000000u + i; }

static void sim_enter(sim *s)
{
    if (atomic_fetch_add(&s->running, 1) != 0)
        sim_fail(s, "two runners at once");
}

static void sim_leave(sim *s) { atomic_fetch_sub(&s->running, 1); }

/* The runner's work: every batch until none is queued. */
static void sim_drain(sim *s)
{
    srv_co_batch *b;
    sim_enter(s);
    usleep((useconds_t)(rand() % 60)); /* long enough for others to queue */
    for (;;) {
        sim_leave(s);
        b = srv_co_next(&s->q);
        if (!b)
            break;
        sim_enter(s);
        uint64_t started = atomic_fetch_add(&s->clock, 1);
        if (b->cb_n >= 2)
            atomic_fetch_add(&s->multi, 1);
        size_t at = 0;
        for (unsigned m = 0; m < b->cb_n; m++) {
            sim_call *c = b->cb_members[m].cm_ctx;
            if (b->cb_members[m].cm_off != at || b->cb_members[m].cm_n != c->n)
                sim_fail(s, "members' slots not in join order");
            at += c->n;
            if (c->arrived >= started)
                sim_fail(s, "a batch served a call that arrived after it started");
            for (size_t i = 0; i < c->n; i++)
                if (b->cb_keys[b->cb_members[m].cm_off + i] != key_of(c->id, i)) {
                    sim_fail(s, "a member's keys were not its own");
                    break;
                }
            atomic_fetch_add(&s->batched_calls, 1);
            atomic_fetch_add(&c->answered, 1);
        }
        if (at != b->cb_used || b->cb_used > b->cb_cap)
            sim_fail(s, "a batch's slots do not add up");
        usleep((useconds_t)(rand() % 40));
        srv_co_release(&s->q, b);
    }
}

typedef struct sim_thread {
    sim *s;
    unsigned t;
    sim_call *calls;
    pthread_t th;
} sim_thread;

static void *sim_main(void *p)
{
    sim_thread *st = p;
    sim *s = st->s;
    for (unsigned k = 0; k < CALLS; k++) {
        sim_call *c = &st->calls[k];
        c->id = (uint64_t)st->t * CALLS + k;
        c->n = 1 + (size_t)(c->id * 7 % 40);
        c->arrived = atomic_fetch_add(&s->clock, 1);
        if (srv_co_try_alone(&s->q)) {
            atomic_fetch_add(&c->answered, 1); /* ran on its own, as the runner */
            sim_drain(s);
            continue;
        }
        srv_co_part part;
        int rc = srv_co_join(&s->q, c->n, 0, CAP, 16 * CAP, c, &part);
        if (rc == -1) { /* over the queue's bound: the caller answers it */
            atomic_fetch_add(&s->refused, 1);
            atomic_fetch_add(&c->answered, 1);
            usleep(100); /* as a client would back off */
            continue;
        }
        if (rc) {
            sim_fail(s, "out of memory joining");
            continue;
        }
        for (size_t i = 0; i < c->n; i++)
            part.keys[i] = key_of(c->id, i);
        if (srv_co_written(&s->q, &part))
            sim_drain(s);
    }
    return NULL;
}

START_TEST(threads_every_call_answered_once_by_a_later_batch)
{
    sim *s = calloc(1, sizeof *s);
    sim_thread th[THREADS];
    srv_co_queue_init(&s->q);
    for (unsigned t = 0; t < THREADS; t++) {
        th[t] = (sim_thread){s, t, calloc(CALLS, sizeof(sim_call)), 0};
        pthread_create(&th[t].th, NULL, sim_main, &th[t]);
    }
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(th[t].th, NULL);
    ck_assert_msg(atomic_load(&s->bad) == 0, "%d violations, first: %s", atomic_load(&s->bad),
                  s->why);
    for (unsigned t = 0; t < THREADS; t++) {
        for (unsigned k = 0; k < CALLS; k++)
            ck_assert_msg(atomic_load(&th[t].calls[k].answered) == 1,
                          "call %u of thread %u answered %d times", k, t,
                          atomic_load(&th[t].calls[k].answered));
        free(th[t].calls);
    }
    /* nothing left queued, nobody running */
    ck_assert_int_eq(srv_co_try_alone(&s->q), 1);
    ck_assert_ptr_null(srv_co_next(&s->q));
    ck_assert_uint_gt(atomic_load(&s->batched_calls), 0);
    if (getenv("EMBER_TEST_VERBOSE"))
        fprintf(stderr, "batched calls %llu, batches of 2+ %llu, refused %llu\n",
                (unsigned long long)atomic_load(&s->batched_calls),
                (unsigned long long)atomic_load(&s->multi),
                (unsigned long long)atomic_load(&s->refused));
    srv_co_queue_destroy(&s->q);
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coalesce");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, layers_repeat_across_members_only);
    tcase_add_test(tc, layers_many_members_same_keys);
    tcase_add_test(tc, idle_queue_runs_alone_then_drains);
    tcase_add_test(tc, written_with_nobody_running_makes_a_runner);
    tcase_add_test(tc, full_queue_refuses_and_recovers);
    tcase_add_test(tc, overflow_opens_next_batch_in_order);
    tcase_add_test(tc, threads_every_call_answered_once_by_a_later_batch);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

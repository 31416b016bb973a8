/*
 * test_table_ops.c — epochs, CUSTOM scores, found[] and erase through real
 * ember-server processes (issue 17): libember's ember_pull_opts /
 * ember_push_opts / ember_erase / ember_set_epoch, and raw gRPC where a test
 * needs a request libember would not send (a retried erase with a push in
 * between, a reserved key past the client's check).
 *
 * Two shards are started in main() (the second with a metrics endpoint).
 * Eviction tests use a one-shard client on shard 0 and a table of capacity 128
 * per shard: one bucket, so which key a newcomer evicts is decided by scores
 * alone.
 *
 * Runs without forking (CK_FORK=no, set by CMake): gRPC state does not survive
 * Check's fork.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/debug.h"
#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"

#define NSHARDS 2
#define BUCKET 128 /* slots of one bucket: a table of this capacity is one bucket */

static eh_server S[NSHARDS];
static eh_server ONE; /* alone (no --shard-count: owns every key), for one-bucket tests */
static eh_server CO; /* --coalesce on: pushes that find the table busy are queued;
                      * --max-keys-per-request 1000 */
static char shard_list[256];

static ember_client *open_client(const char *shards)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shards;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

static void create(ember_client *c, const char *name, uint32_t dim, uint64_t capacity,
                   ember_score_policy policy)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = dim;
    s.capacity_per_shard = capacity;
    s.score_policy = policy;
    s.optimizer.lr = 1.0f;
    s.initializer.kind = EMBER_INIT_ZEROS;
    ember_error e;
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

static void drop(ember_client *c, const char *name)
{
    ember_error e;
    ck_assert_msg(ember_drop_table(c, name, 1, &e) == 0, "drop %s: %s", name, e.message);
}

/* Training pull of keys[0..n) (dim 4) with optional scores and found flags. */
static void pull_insert(ember_client *c, const char *t, const uint64_t *keys, size_t n,
                        const uint64_t *scores, uint8_t *found)
{
    float *out = calloc(n * 4 + 1, sizeof *out);
    ember_pull_options o;
    ember_pull_options_init(&o);
    o.scores = scores;
    o.found = found;
    ember_error e;
    ck_assert_msg(ember_pull_opts(c, t, keys, n, out, 4, &o, &e) == 0, "pull: %s", e.message);
    free(out);
}

/* found[i] for keys[0..n) by a serving pull (creates nothing, touches no score). */
static void present(ember_client *c, const char *t, const uint64_t *keys, size_t n,
                    uint8_t *found)
{
    float *out = calloc(n * 4 + 1, sizeof *out);
    ember_pull_options o;
    ember_pull_options_init(&o);
    o.flags = EMBER_PULL_SERVE;
    o.found = found;
    ember_error e;
    ck_assert_msg(ember_pull_opts(c, t, keys, n, out, 4, &o, &e) == 0, "serve: %s", e.message);
    free(out);
}

static size_t count_present(ember_client *c, const char *t, const uint64_t *keys, size_t n)
{
    uint8_t *f = calloc(n + 1, 1);
    present(c, t, keys, n, f);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += f[i];
    free(f);
    return k;
}

static uint64_t table_size(ember_client *c, const char *t)
{
    ember_table_info info;
    ember_error e;
    ck_assert_msg(ember_describe_table(c, t, &info, &e) == 0, "describe: %s", e.message);
    return info.size;
}

/* One shard's TableStats of `table` through a raw GetStats. */
static Ember__V1__TableStats stats_of(const eh_server *s, const char *table)
{
    eh_client *rc = eh_client_open(s->addr);
    ck_assert_ptr_nonnull(rc);
    Ember__V1__GetStatsRequest req = EMBER__V1__GET_STATS_REQUEST__INIT;
    req.table = (char *)table;
    uint8_t buf[256];
    size_t len = ember__v1__get_stats_request__pack(&req, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(rc, "/ember.v1.Admin/GetStats", buf, len, 0, &r), 0);
    ck_assert_msg(r.code == 0, "GetStats: %s", r.message);
    Ember__V1__GetStatsResponse *m = ember__v1__get_stats_response__unpack(NULL, r.len, r.data);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(m->n_tables, 1);
    Ember__V1__TableStats st = *m->tables[0]->stats;
    ember__v1__get_stats_response__free_unpacked(m, NULL);
    eh_result_free(&r);
    eh_client_close(rc);
    return st;
}

/* A raw Erase to one server; returns the status, *out the reply. */
static int raw_erase(const eh_server *s, const char *table, const uint64_t *keys, size_t n,
                     uint64_t client_id, uint64_t seq, Ember__V1__EraseResponse *out,
                     char *msg, size_t cap)
{
    eh_client *rc = eh_client_open(s->addr);
    ck_assert_ptr_nonnull(rc);
    Ember__V1__EraseRequest req = EMBER__V1__ERASE_REQUEST__INIT;
    req.table = (char *)table;
    req.keys.data = (uint8_t *)keys;
    req.keys.len = n * 8;
    req.client_id = client_id;
    req.sequence = seq;
    size_t len = ember__v1__erase_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    ember__v1__erase_request__pack(&req, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(rc, "/ember.v1.Shard/Erase", buf, len, 0, &r), 0);
    free(buf);
    memset(out, 0, sizeof *out);
    if (r.code == 0) {
        Ember__V1__EraseResponse *m = ember__v1__erase_response__unpack(NULL, r.len, r.data);
        ck_assert_ptr_nonnull(m);
        out->erased = m->erased;
        out->duplicate = m->duplicate;
        ember__v1__erase_response__free_unpacked(m, NULL);
    }
    snprintf(msg, cap, "%s", r.message);
    int code = r.code;
    eh_result_free(&r);
    eh_client_close(rc);
    return code;
}

/* ---- epochs ------------------------------------------------------------------- */

/* Regression test for issue 17: an EPOCH_LRU table whose epoch is advanced
 * evicts the keys of the old epoch first, whatever the clock says (every key
 * here is touched within a second or two, so the clock alone cannot order
 * them). Then a push that carries a higher epoch moves the table's epoch up,
 * and one that carries a lower epoch does not move it back. */
START_TEST(epoch_lru_advanced_evicts_old_epoch_first)
{
    ember_client *c = open_client(ONE.addr);
    ember_error e;
    create(c, "ep", 4, BUCKET, EMBER_SCORE_EPOCH_LRU);
    uint64_t a[BUCKET], b[64], cc[32];
    for (int i = 0; i < BUCKET; i++)
        a[i] = 1000 + (uint64_t)i;
    for (int i = 0; i < 64; i++)
        b[i] = 5000 + (uint64_t)i;
    for (int i = 0; i < 32; i++)
        cc[i] = 9000 + (uint64_t)i;

    ck_assert_int_eq(ember_set_epoch(c, "ep", 5, &e), 0);
    pull_insert(c, "ep", a, BUCKET, NULL, NULL);                     /* full, epoch 5 */
    ck_assert_uint_eq(table_size(c, "ep"), BUCKET);
    ck_assert_int_eq(ember_set_epoch(c, "ep", 6, &e), 0);
    ck_assert_uint_eq(stats_of(&ONE, "ep").epoch, 6);
    pull_insert(c, "ep", a + 64, 64, NULL, NULL);                    /* a[64..] now epoch 6 */
    pull_insert(c, "ep", b, 64, NULL, NULL);                         /* 64 newcomers */
    ck_assert_uint_eq(count_present(c, "ep", a, 64), 0);             /* epoch 5: all gone */
    ck_assert_uint_eq(count_present(c, "ep", a + 64, 64), 64);
    ck_assert_uint_eq(count_present(c, "ep", b, 64), 64);

    /* A push stamped with epoch 7 moves the table to 7 and scores its keys so. */
    float g[32 * 4] = {0};
    ember_push_options po;
    ember_push_options_init(&po);
    po.epoch = 7;
    ck_assert_msg(ember_push_opts(c, "ep", a + 64, 32, g, 4, &po, &e) == 0, "%s", e.message);
    ck_assert_uint_eq(stats_of(&ONE, "ep").epoch, 7);
    /* A straggler's lower epoch changes nothing. */
    po.epoch = 3;
    ck_assert_int_eq(ember_push_opts(c, "ep", b, 1, g, 4, &po, &e), 0);
    ck_assert_uint_eq(stats_of(&ONE, "ep").epoch, 7);
    /* 32 newcomers (epoch 7) evict 32 of the 96 epoch-6 keys, never an epoch-7 one. */
    pull_insert(c, "ep", cc, 32, NULL, NULL);
    ck_assert_uint_eq(count_present(c, "ep", a + 64, 32), 32);
    ck_assert_uint_eq(count_present(c, "ep", cc, 32), 32);
    ck_assert_uint_eq(count_present(c, "ep", a + 96, 32) + count_present(c, "ep", b, 64), 64);
    ck_assert_uint_eq(count_present(c, "ep", b, 1), 1); /* the straggler's key: epoch 7 */

    /* SetEpoch may go back (a rollback), and names a missing table. */
    ck_assert_int_eq(ember_set_epoch(c, "ep", 2, &e), 0);
    ck_assert_uint_eq(stats_of(&ONE, "ep").epoch, 2);
    ck_assert_int_eq(ember_set_epoch(c, "no_such_table", 1, &e), EMBER_NOT_FOUND);
    drop(c, "ep");
    ember_client_close(c);
}
END_TEST

/* A push with a higher epoch that the server refuses (a NaN gradient) moves no
 * epoch. */
START_TEST(refused_push_moves_no_epoch)
{
    ember_client *c = open_client(ONE.addr);
    ember_error e;
    create(c, "ep2", 4, BUCKET, EMBER_SCORE_EPOCH_LFU);
    ck_assert_int_eq(ember_set_epoch(c, "ep2", 4, &e), 0);
    float g[8] = {0.0f, 0.0f, 0.0f, 0.0f, NAN, 0.0f, 0.0f, 0.0f};
    uint64_t keys[2] = {1, 2};
    ember_push_options po;
    ember_push_options_init(&po);
    po.epoch = 9;
    /* a NaN gradient: the table refuses the whole push */
    ck_assert_int_eq(ember_push_opts(c, "ep2", keys, 2, g, 4, &po, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_uint_eq(stats_of(&ONE, "ep2").epoch, 4);
    ck_assert_uint_eq(table_size(c, "ep2"), 0);
    drop(c, "ep2");
    ember_client_close(c);
}
END_TEST

/* Pushes that wait in a coalescing queue raise the epoch before their batch
 * runs. In each round, T threads push their own keys at once, thread t
 * stamping epoch E(r, t) = 10 + r*T + t (each above every earlier round's); after
 * the round, every key's score (read back by Export) carries at least its
 * pusher's epoch, and the table's epoch is the round's highest. A queued push
 * that did not raise the epoch first would leave its keys at a lower epoch
 * whenever the pushes ahead of it stamped less. Rounds repeat until some push
 * was coalesced (GetStats), so the queued path is exercised. */
enum { EP_THREADS = 4, EP_KEYS = 64, EP_ROUNDS = 40 };

static pthread_barrier_t ep_start, ep_end;

typedef struct ep_worker {
    int t, failures;
    char err[600];
} ep_worker;

static uint32_t ep_epoch(int round, int t)
{
    return 10 + (uint32_t)(round * EP_THREADS + t);
}

static void *ep_main(void *p)
{
    ep_worker *w = p;
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = CO.addr;
    o.channels_per_shard = 2; /* its own connections: calls really overlap */
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    if (!c) {
        w->failures++;
        snprintf(w->err, sizeof w->err, "open: %s", e.message);
    }
    uint64_t keys[EP_KEYS];
    float g[EP_KEYS * 4];
    for (int i = 0; i < EP_KEYS; i++)
        keys[i] = (uint64_t)w->t * 100000 + (uint64_t)i;
    memset(g, 0, sizeof g);
    ember_push_options po;
    ember_push_options_init(&po);
    for (int r = 0; r < EP_ROUNDS; r++) {
        pthread_barrier_wait(&ep_start);
        po.epoch = ep_epoch(r, w->t);
        for (int k = 0; c && k < 4 && !w->failures; k++)
            if (ember_push_opts(c, "coep", keys, EP_KEYS, g, 4, &po, &e)) {
                w->failures++;
                snprintf(w->err, sizeof w->err, "push: %s", e.message);
            }
        pthread_barrier_wait(&ep_end);
    }
    ember_client_close(c);
    return NULL;
}

typedef struct ep_scores {
    uint64_t lowest_epoch[EP_THREADS];
    size_t rows;
} ep_scores;

static void ep_export_chunk(void *ud, const uint8_t *data, size_t len)
{
    ep_scores *s = ud;
    Ember__V1__ExportChunk *m = ember__v1__export_chunk__unpack(NULL, len, data);
    if (!m)
        return;
    size_t n = m->keys.len / 8;
    for (size_t i = 0; i < n && m->scores.len == m->keys.len; i++) {
        uint64_t k, sc;
        memcpy(&k, m->keys.data + 8 * i, 8);
        memcpy(&sc, m->scores.data + 8 * i, 8);
        unsigned t = (unsigned)(k / 100000);
        if (t < EP_THREADS && (sc >> 32) < s->lowest_epoch[t])
            s->lowest_epoch[t] = sc >> 32;
        s->rows++;
    }
    ember__v1__export_chunk__free_unpacked(m, NULL);
}

static ep_scores ep_read_scores(void)
{
    ep_scores s = {.rows = 0};
    for (int t = 0; t < EP_THREADS; t++)
        s.lowest_epoch[t] = UINT64_MAX;
    Ember__V1__ExportRequest req = EMBER__V1__EXPORT_REQUEST__INIT;
    req.table = "coep";
    uint8_t buf[64];
    size_t len = ember__v1__export_request__pack(&req, buf);
    eh_client *rc = eh_client_open(CO.addr);
    eh_result r;
    ck_assert_int_eq(eh_server_stream(rc, "/ember.v1.Admin/Export", buf, len, ep_export_chunk, &s,
                                      &r),
                     0);
    ck_assert_msg(r.code == 0, "Export: %s", r.message);
    eh_result_free(&r);
    eh_client_close(rc);
    return s;
}

START_TEST(queued_pushes_raise_the_epoch_first)
{
    ember_client *c = open_client(CO.addr);
    create(c, "coep", 4, 1 << 12, EMBER_SCORE_EPOCH_LFU);
    pthread_t th[EP_THREADS];
    ep_worker w[EP_THREADS];
    ck_assert_int_eq(pthread_barrier_init(&ep_start, NULL, EP_THREADS + 1), 0);
    ck_assert_int_eq(pthread_barrier_init(&ep_end, NULL, EP_THREADS + 1), 0);
    for (int t = 0; t < EP_THREADS; t++) {
        w[t] = (ep_worker){.t = t};
        ck_assert_int_eq(pthread_create(&th[t], NULL, ep_main, &w[t]), 0);
    }
    int bad_round = -1, bad_t = -1;
    uint64_t bad_epoch = 0;
    for (int r = 0; r < EP_ROUNDS; r++) {
        pthread_barrier_wait(&ep_start);
        pthread_barrier_wait(&ep_end);
        ep_scores s = ep_read_scores();
        for (int t = 0; t < EP_THREADS && bad_round < 0; t++)
            if (s.rows != EP_THREADS * EP_KEYS || s.lowest_epoch[t] < ep_epoch(r, t)) {
                bad_round = r;
                bad_t = t;
                bad_epoch = s.lowest_epoch[t];
            }
    }
    for (int t = 0; t < EP_THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_msg(w[t].failures == 0, "thread %d: %s", t, w[t].err);
    }
    pthread_barrier_destroy(&ep_start);
    pthread_barrier_destroy(&ep_end);
    ck_assert_msg(bad_round < 0, "round %d: thread %d's keys carry epoch %llu, below the %u it pushed",
                  bad_round, bad_t, (unsigned long long)bad_epoch, ep_epoch(bad_round, bad_t));
    ck_assert_msg(stats_of(&CO, "coep").coalesced_batches > 0,
                  "no push was ever coalesced: the queued path went untested");
    ck_assert_uint_eq(stats_of(&CO, "coep").epoch, ep_epoch(EP_ROUNDS - 1, EP_THREADS - 1));
    drop(c, "coep");
    ember_client_close(c);
}
END_TEST

/* ---- CUSTOM scores ------------------------------------------------------------- */

/* Scores sent through libember decide eviction: on pull (find_or_insert), on
 * push, and of equal keys in one call the last one's. */
START_TEST(custom_scores_from_libember_decide_eviction)
{
    ember_client *c = open_client(ONE.addr);
    ember_error e;
    create(c, "cu", 4, BUCKET, EMBER_SCORE_CUSTOM);
    uint64_t k[BUCKET], sc[BUCKET];
    for (int i = 0; i < BUCKET; i++) {
        k[i] = 100 + (uint64_t)i * 3;
        sc[i] = 1000 + (uint64_t)i; /* k[0] lowest */
    }
    pull_insert(c, "cu", k, BUCKET, sc, NULL);
    /* 10 newcomers at 5000 evict the 10 lowest: k[0..9] */
    uint64_t n1[10], s1[10];
    for (int i = 0; i < 10; i++) {
        n1[i] = 70000 + (uint64_t)i;
        s1[i] = 5000;
    }
    pull_insert(c, "cu", n1, 10, s1, NULL);
    ck_assert_uint_eq(count_present(c, "cu", k, 10), 0);
    ck_assert_uint_eq(count_present(c, "cu", k + 10, BUCKET - 10), BUCKET - 10);
    ck_assert_uint_eq(count_present(c, "cu", n1, 10), 10);

    /* A push raises k[10..19] to 9000: now k[20..29] are the lowest. */
    float v[10 * 4] = {0};
    uint64_t s2[10];
    for (int i = 0; i < 10; i++)
        s2[i] = 9000;
    ember_push_options po;
    ember_push_options_init(&po);
    po.mode = EMBER_PUSH_ASSIGN;
    po.scores = s2;
    ck_assert_msg(ember_push_opts(c, "cu", k + 10, 10, v, 4, &po, &e) == 0, "%s", e.message);

    /* Equal keys with different scores: the last one's wins. k[20] comes twice,
     * first at 1 (it would be evicted), last at 9500 (it stays). */
    uint64_t n2[10], s3[10];
    for (int i = 0; i < 10; i++) {
        n2[i] = 80000 + (uint64_t)i;
        s3[i] = 6000;
    }
    uint64_t first[2] = {k[20], k[20]}, fs[2] = {1, 9500};
    pull_insert(c, "cu", first, 2, fs, NULL);
    pull_insert(c, "cu", n2, 10, s3, NULL);
    ck_assert_uint_eq(count_present(c, "cu", k + 10, 11), 11);  /* raised, and k[20] */
    ck_assert_uint_eq(count_present(c, "cu", k + 21, 10), 0);   /* k[21..30]: lowest */
    ck_assert_uint_eq(count_present(c, "cu", n2, 10), 10);

    /* A newcomer scored below every key in the full bucket is refused. */
    uint64_t low = 99999, ls = 0;
    uint8_t f = 7;
    pull_insert(c, "cu", &low, 1, &ls, &f);
    ck_assert_uint_eq(f, 0);
    ck_assert_uint_eq(count_present(c, "cu", &low, 1), 0);
    ck_assert_uint_ge(stats_of(&ONE, "cu").insert_refused, 1);

    /* Scores with a serving pull or an accum push are refused before sending. */
    float out[4];
    ember_pull_options o;
    ember_pull_options_init(&o);
    o.flags = EMBER_PULL_SERVE;
    o.scores = &ls;
    ck_assert_int_eq(ember_pull_opts(c, "cu", &low, 1, out, 4, &o, &e), EMBER_INVALID_ARGUMENT);
    po.mode = EMBER_PUSH_ACCUM;
    ck_assert_int_eq(ember_push_opts(c, "cu", k, 1, v, 4, &po, &e), EMBER_INVALID_ARGUMENT);
    /* A struct_size this library does not know. */
    ember_pull_options_init(&o);
    o.struct_size = 3;
    ck_assert_int_eq(ember_pull_opts(c, "cu", &low, 1, out, 4, &o, &e), EMBER_INVALID_ARGUMENT);
    drop(c, "cu");
    ember_client_close(c);
}
END_TEST

/* ---- found[] -------------------------------------------------------------------- */

/* found[] over two shards, with duplicates, in the caller's order. */
START_TEST(found_in_caller_order_after_dedup_over_two_shards)
{
    ember_client *c = open_client(shard_list);
    create(c, "fd", 4, 1 << 12, EMBER_SCORE_LRU);
    uint64_t old[40];
    for (int i = 0; i < 40; i++)
        old[i] = (uint64_t)i * 2; /* even keys exist */
    pull_insert(c, "fd", old, 40, NULL, NULL);
    enum { N = 300 };
    uint64_t keys[N];
    uint8_t found[N], want[N];
    unsigned on[NSHARDS] = {0};
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)((i * 7) % 100); /* 0..99, each several times */
        want[i] = keys[i] < 80 && keys[i] % 2 == 0;
        on[ember_shard_of(keys[i], NSHARDS)]++;
    }
    ck_assert(on[0] > 0 && on[1] > 0);
    memset(found, 9, sizeof found);
    pull_insert(c, "fd", keys, N, NULL, found);
    for (int i = 0; i < N; i++)
        ck_assert_msg(found[i] == want[i], "found[%d] (key %llu) = %u, want %u", i,
                      (unsigned long long)keys[i], found[i], want[i]);
    /* now every key exists */
    memset(found, 9, sizeof found);
    pull_insert(c, "fd", keys, N, NULL, found);
    for (int i = 0; i < N; i++)
        ck_assert_uint_eq(found[i], 1);
    /* serving: missing keys are 0 and stay missing */
    uint64_t mix[4] = {5, 123456, 5, 7777777};
    uint8_t f4[4];
    present(c, "fd", mix, 4, f4);
    ck_assert(f4[0] == 1 && f4[1] == 0 && f4[2] == 1 && f4[3] == 0);
    ck_assert_uint_eq(count_present(c, "fd", mix + 1, 1), 0);
    drop(c, "fd");
    ember_client_close(c);
}
END_TEST

/* ---- erase ----------------------------------------------------------------------- */

START_TEST(erase_removes_exactly_the_keys)
{
    ember_client *c = open_client(shard_list);
    ember_error e;
    create(c, "er", 4, 1 << 12, EMBER_SCORE_LRU);
    uint64_t keys[100];
    for (int i = 0; i < 100; i++)
        keys[i] = 10 + (uint64_t)i;
    pull_insert(c, "er", keys, 100, NULL, NULL);
    /* keys 10..59, one twice, and one that never existed */
    uint64_t gone[52];
    for (int i = 0; i < 50; i++)
        gone[i] = keys[i];
    gone[50] = keys[3];
    gone[51] = 424242;
    uint64_t erased = 99;
    ck_assert_msg(ember_erase(c, "er", gone, 52, &erased, &e) == 0, "%s", e.message);
    ck_assert_uint_eq(erased, 50);
    ck_assert_uint_eq(count_present(c, "er", keys, 50), 0);
    ck_assert_uint_eq(count_present(c, "er", keys + 50, 50), 50);
    ck_assert_uint_eq(table_size(c, "er"), 50);
    ck_assert_uint_eq(stats_of(&S[0], "er").erased + stats_of(&S[1], "er").erased, 50);
    ck_assert(eh_metric_wait(&S[1], "ember_table_erased_total{table=\"er\"}",
                             (double)stats_of(&S[1], "er").erased, 5000) ==
              (double)stats_of(&S[1], "er").erased);

    /* A reserved key refuses the whole call; nothing is erased. */
    uint64_t bad[2] = {keys[60], EMBER_KEY_RESERVED_MIN};
    ck_assert_int_eq(ember_erase(c, "er", bad, 2, &erased, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.shard, -1);
    ck_assert_uint_eq(table_size(c, "er"), 50);
    /* An unknown table: NOT_FOUND. */
    ck_assert_int_eq(ember_erase(c, "nope", keys, 1, &erased, &e), EMBER_NOT_FOUND);

    /* The library's retry of an applied erase (its ack "lost") is a duplicate. */
    uint64_t acks = ember_client_debug_duplicate_acks(c);
    ember_client_debug_resend_pushes(c, 1);
    ck_assert_int_eq(ember_erase(c, "er", keys + 50, 10, &erased, &e), 0);
    ember_client_debug_resend_pushes(c, 0);
    ck_assert_uint_gt(ember_client_debug_duplicate_acks(c), acks);
    ck_assert_uint_eq(count_present(c, "er", keys + 50, 10), 0);
    ck_assert_uint_eq(table_size(c, "er"), 40);
    drop(c, "er");
    ember_client_close(c);
}
END_TEST

/* The server's side, raw: a retried erase (same client_id, sequence) after the
 * key was written again erases nothing; a reserved key refuses the whole
 * request with the table unchanged; the sequence of a refused erase can be
 * used again. */
START_TEST(erase_at_most_once_and_all_or_nothing_on_the_server)
{
    ember_client *c = open_client(ONE.addr);
    create(c, "er2", 4, 1 << 10, EMBER_SCORE_LRU);
    uint64_t k[3] = {11, 22, 33};
    pull_insert(c, "er2", k, 3, NULL, NULL);
    Ember__V1__EraseResponse r;
    char msg[1024];
    ck_assert_int_eq(raw_erase(&ONE, "er2", k, 1, 4242, 1, &r, msg, sizeof msg), 0);
    ck_assert_uint_eq(r.erased, 1);
    ck_assert(!r.duplicate);
    pull_insert(c, "er2", k, 1, NULL, NULL); /* written again */
    ck_assert_int_eq(raw_erase(&ONE, "er2", k, 1, 4242, 1, &r, msg, sizeof msg), 0);
    ck_assert(r.duplicate);
    ck_assert_uint_eq(r.erased, 0);
    ck_assert_uint_eq(count_present(c, "er2", k, 1), 1);
    ck_assert_uint_eq(stats_of(&ONE, "er2").erased, 1);

    uint64_t bad[2] = {k[1], 0xFFFFFFFFFFFFFFFFull};
    ck_assert_int_eq(raw_erase(&ONE, "er2", bad, 2, 4242, 2, &r, msg, sizeof msg),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(msg, "reserved"), "%s", msg);
    ck_assert_uint_eq(count_present(c, "er2", k, 3), 3);
    /* refused whole: the same sequence, corrected, goes through */
    ck_assert_int_eq(raw_erase(&ONE, "er2", bad, 1, 4242, 2, &r, msg, sizeof msg), 0);
    ck_assert_uint_eq(r.erased, 1);
    ck_assert(!r.duplicate);
    ck_assert_int_eq(raw_erase(&ONE, "nope", k, 1, 0, 0, &r, msg, sizeof msg), EMBER_NOT_FOUND);
    ck_assert_int_eq(raw_erase(&ONE, "er2", k, 0, 0, 0, &r, msg, sizeof msg), 0);
    ck_assert_uint_eq(r.erased, 0); /* zero keys: fine, nothing erased */
    drop(c, "er2");
    ember_client_close(c);

    /* A key of another shard, sent straight to the wrong one: refused whole
     * (shard ownership), nothing erased. */
    c = open_client(shard_list);
    create(c, "er4", 4, 1 << 10, EMBER_SCORE_LRU);
    uint64_t mine = 1, theirs = 1;
    while (ember_shard_of(mine, NSHARDS) != 0)
        mine++;
    while (ember_shard_of(theirs, NSHARDS) != 1)
        theirs++;
    uint64_t both[2] = {mine, theirs};
    pull_insert(c, "er4", both, 2, NULL, NULL);
    ck_assert_int_eq(raw_erase(&S[0], "er4", both, 2, 0, 0, &r, msg, sizeof msg),
                     EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(msg, "belongs to shard 1"), "%s", msg);
    ck_assert_uint_eq(count_present(c, "er4", both, 2), 2);
    drop(c, "er4");
    ember_client_close(c);

    /* Over --max-keys-per-request: RESOURCE_EXHAUSTED naming the flag, nothing erased. */
    c = open_client(CO.addr);
    create(c, "er3", 4, 1 << 12, EMBER_SCORE_LRU);
    uint64_t many[1001];
    for (int i = 0; i < 1001; i++)
        many[i] = 7 + (uint64_t)i;
    pull_insert(c, "er3", many, 1000, NULL, NULL);
    ck_assert_int_eq(raw_erase(&CO, "er3", many, 1001, 99, 1, &r, msg, sizeof msg),
                     EMBER_RESOURCE_EXHAUSTED);
    ck_assert_msg(strstr(msg, "--max-keys-per-request"), "%s", msg);
    ck_assert_uint_eq(table_size(c, "er3"), 1000);
    ck_assert_int_eq(raw_erase(&CO, "er3", many, 1000, 99, 1, &r, msg, sizeof msg), 0);
    ck_assert_uint_eq(r.erased, 1000); /* the refused sequence was given up: it goes through */
    drop(c, "er3");
    ember_client_close(c);
}
END_TEST

int main(void)
{
    for (int i = 0; i < NSHARDS; i++) {
        char idx[32], cnt[32];
        snprintf(idx, sizeof idx, "--shard-index=%d", i);
        snprintf(cnt, sizeof cnt, "--shard-count=%d", NSHARDS);
        const char *flags[] = {"--threads=2", idx, cnt, "--metrics-listen=127.0.0.1:0",
                               "--log-level=info", NULL};
        if (eh_server_start(&S[i], flags)) {
            fprintf(stderr, "cannot start shard %d\n", i);
            return 1;
        }
        if (i)
            strcat(shard_list, ",");
        strcat(shard_list, S[i].addr);
    }
    const char *one_flags[] = {"--threads=2", "--metrics-listen=127.0.0.1:0", NULL};
    if (eh_server_start(&ONE, one_flags)) {
        fprintf(stderr, "cannot start the lone server\n");
        return 1;
    }
    const char *co_flags[] = {"--threads=4", "--coalesce=on", "--max-keys-per-request=1000", NULL};
    if (eh_server_start(&CO, co_flags)) {
        fprintf(stderr, "cannot start the coalescing server\n");
        return 1;
    }
    Suite *s = suite_create("table_ops");
    TCase *tc = tcase_create("table_ops");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, epoch_lru_advanced_evicts_old_epoch_first);
    tcase_add_test(tc, refused_push_moves_no_epoch);
    tcase_add_test(tc, queued_pushes_raise_the_epoch_first);
    tcase_add_test(tc, custom_scores_from_libember_decide_eviction);
    tcase_add_test(tc, found_in_caller_order_after_dedup_over_two_shards);
    tcase_add_test(tc, erase_removes_exactly_the_keys);
    tcase_add_test(tc, erase_at_most_once_and_all_or_nothing_on_the_server);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (int i = 0; i < NSHARDS; i++)
        eh_server_cleanup(&S[i]);
    eh_server_cleanup(&CO);
    eh_server_cleanup(&ONE);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

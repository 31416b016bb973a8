/* test_table_grow.c — online growth (a table that doubles while serving) and time
 * to live (rows not written for ttl_seconds are removed), on the CPU backend. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DIM 4
#define SEC UINT64_C(1000000000)

static ember_table *make(uint64_t capacity, uint64_t max_capacity, float load_factor,
                         uint64_t ttl_seconds)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = capacity;
    c.max_capacity = max_capacity;
    c.max_load_factor = load_factor;
    c.ttl_seconds = ttl_seconds;
    c.score_policy = EMBER_SCORE_LFU; /* deterministic scores: tables compare whole */
    c.optim.kind = EMBER_OPTIM_ADAM;
    c.seed = 11;
    ember_table *t = NULL;
    ember_error err;
    ck_assert_msg(ember_table_create(&c, NULL, &t, &err) == EMBER_OK, "%s", err.message);
    return t;
}

static uint64_t key_at(uint64_t i)
{
    return ember_mix64(i + 1) >> 8; /* spread over buckets, never reserved */
}

/* The same pulls and pushes on a table that grows 128 → 1024 and on one made at
 * 1024: the same rows, bit for bit, with the same scores and versions. */
START_TEST(growing_table_equals_one_made_large)
{
    ember_table *grow = make(128, 1024, 0.0f, 0);
    ember_table *big = make(1024, 0, 0.0f, 0);
    ck_assert_uint_eq(ember_table_capacity(grow), 128);
    enum { BATCH = 50, ROUNDS = 14 };
    uint64_t keys[BATCH];
    float g[BATCH * DIM], out_a[BATCH * DIM], out_b[BATCH * DIM];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BATCH; i++) {
            /* half new keys, half seen before: pulls and pushes hit both */
            keys[i] = key_at(i % 2 ? (uint64_t)(r * BATCH + i) : (uint64_t)(i * 7 % (r * BATCH + 1)));
            for (int d = 0; d < DIM; d++)
                g[i * DIM + d] = 0.01f * (float)(r + 1) * (float)(i - d);
        }
        ck_assert_int_eq(ember_table_find_or_insert(grow, keys, BATCH, out_a, NULL, NULL, NULL),
                         EMBER_OK);
        ck_assert_int_eq(ember_table_find_or_insert(big, keys, BATCH, out_b, NULL, NULL, NULL),
                         EMBER_OK);
        ck_assert_mem_eq(out_a, out_b, sizeof out_a);
        ck_assert_int_eq(ember_table_apply_gradients(grow, keys, BATCH, g, NULL, NULL), EMBER_OK);
        ck_assert_int_eq(ember_table_apply_gradients(big, keys, BATCH, g, NULL, NULL), EMBER_OK);
    }
    ember_table_stats s;
    ember_table_stats_get(grow, &s);
    ck_assert_uint_eq(s.capacity, 1024);
    ck_assert_uint_eq(s.grows, 3);
    ck_assert_uint_eq(s.evictions, 0);
    ck_assert_uint_eq(s.grow_failures, 0);
    ck_assert_uint_eq(s.size, ember_table_size(big));
    ck_assert(s.load_factor <= 0.75);
    tu_snapshot a, b;
    tu_snapshot_take(grow, &a);
    tu_snapshot_take(big, &b);
    ck_assert_uint_gt(a.n, 300);
    ck_assert(tu_snapshot_equal(&a, &b));
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
    ember_table_destroy(grow);
    ember_table_destroy(big);
}
END_TEST

/* Growth stops at the largest capacity × 2^k within max_capacity; past it the
 * table is a cache again (full buckets evict). A fixed table never grows. */
START_TEST(growth_stops_at_max_capacity)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = 100; /* one bucket: 128 slots */
    c.max_capacity = 1000;
    ck_assert_uint_eq(ember_table_config_capacity_slots(&c), 128);
    ck_assert_uint_eq(ember_table_config_max_slots(&c), 512);
    c.max_capacity = 0;
    ck_assert_uint_eq(ember_table_config_max_slots(&c), 128);
    c.max_capacity = 64; /* below capacity: fixed */
    ck_assert_uint_eq(ember_table_config_max_slots(&c), 128);

    ember_table *t = make(128, 1000, 1.0f, 0);
    ember_table *fixed = make(128, 0, 0.0f, 0);
    uint64_t keys[1500];
    for (int i = 0; i < 1500; i++)
        keys[i] = key_at((uint64_t)i);
    float *v = calloc(1500 * DIM, sizeof *v);
    for (int i = 0; i < 1500; i += 100) {
        ck_assert_int_eq(ember_table_insert_or_assign(t, keys + i, 100, v + i * DIM, NULL, NULL),
                         EMBER_OK);
        ck_assert_int_eq(ember_table_insert_or_assign(fixed, keys + i, 100, v + i * DIM, NULL,
                                                      NULL),
                         EMBER_OK);
    }
    ember_table_stats s;
    ember_table_stats_get(t, &s);
    ck_assert_uint_eq(s.capacity, 512);
    ck_assert_uint_eq(s.grows, 2);
    ck_assert_uint_eq(s.size, 512); /* full: the rest evicted, as a cache */
    ck_assert_uint_eq(s.evictions, 1500 - 512);
    ember_table_stats_get(fixed, &s);
    ck_assert_uint_eq(s.capacity, 128);
    ck_assert_uint_eq(s.grows, 0);
    free(v);
    ember_table_destroy(t);
    ember_table_destroy(fixed);
}
END_TEST

START_TEST(reserve_grows_ahead)
{
    ember_table *t = make(128, 4096, 0.0f, 0);
    ember_error err;
    ck_assert_int_eq(ember_table_reserve(t, 700, &err), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(t), 1024); /* 700 / 0.75 = 934 → 1024 */
    ck_assert_int_eq(ember_table_reserve(t, 100000, &err), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(t), 4096); /* at most max_capacity */
    ember_table_stats s;
    ember_table_stats_get(t, &s);
    ck_assert_uint_eq(s.grows, 5);
    ember_table *fixed = make(128, 0, 0.0f, 0);
    ck_assert_int_eq(ember_table_reserve(fixed, 100000, &err), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(fixed), 128);
    ember_table_destroy(t);
    ember_table_destroy(fixed);
}
END_TEST

/* An export scan that starts before a doubling and ends after it visits every
 * row exactly once. */
START_TEST(export_cursor_survives_growth)
{
    ember_table *t = make(256, 4096, 0.0f, 0);
    enum { N = 180 };
    uint64_t keys[N], out_keys[4096];
    float v[N * DIM], rows[4096 * DIM];
    for (int i = 0; i < N; i++) {
        keys[i] = key_at((uint64_t)i);
        for (int d = 0; d < DIM; d++)
            v[i * DIM + d] = (float)i;
    }
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, NULL, NULL), EMBER_OK);
    uint64_t end = ember_table_export_end(t), cursor = 0;
    size_t n = 0, total = 0;
    ck_assert_int_eq(ember_table_export(t, NULL, &cursor, 128, out_keys, rows, NULL, NULL, &n,
                                        NULL),
                     EMBER_OK);
    ck_assert_uint_gt(cursor, 0);
    ck_assert_uint_lt(cursor, end);
    total += n;
    ck_assert_int_eq(ember_table_reserve(t, 3000, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(t), 4096);
    ck_assert_uint_eq(ember_table_export_end(t), end); /* cursors keep their meaning */
    while (cursor < end) {
        ck_assert_int_eq(ember_table_export(t, NULL, &cursor, 128, out_keys + total,
                                            rows + total * DIM, NULL, NULL, &n, NULL),
                         EMBER_OK);
        total += n;
        ck_assert_uint_le(total, N);
    }
    ck_assert_uint_eq(total, N);
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (size_t j = 0; j < total; j++)
            seen += out_keys[j] == keys[i] && rows[j * DIM] == (float)i;
        ck_assert_int_eq(seen, 1);
    }
    /* A cursor that no export gave (not on a bucket of the current size) is refused. */
    cursor = 1;
    ember_table_destroy(t);
    t = make(256, 4096, 0.0f, 0);
    ck_assert_int_eq(ember_table_export(t, NULL, &cursor, 128, out_keys, rows, NULL, NULL, &n,
                                        NULL),
                     EMBER_INVALID_ARGUMENT);
    ember_table_destroy(t);
}
END_TEST

/* Writers on several threads while the table doubles under them: every write
 * lands, nothing torn or lost. */
typedef struct writer {
    ember_table *t;
    uint64_t first;
} writer;

#define W_KEYS 3000
#define W_BATCH 100

static void *write_keys(void *arg)
{
    writer *w = arg;
    uint64_t keys[W_BATCH];
    float v[W_BATCH * DIM];
    for (uint64_t i = 0; i < W_KEYS; i += W_BATCH) {
        for (int j = 0; j < W_BATCH; j++) {
            keys[j] = key_at(w->first + i + (uint64_t)j);
            for (int d = 0; d < DIM; d++)
                v[j * DIM + d] = (float)(w->first + i + (uint64_t)j);
        }
        if (ember_table_insert_or_assign(w->t, keys, W_BATCH, v, NULL, NULL))
            return (void *)1;
        float out[W_BATCH * DIM];
        if (ember_table_find(w->t, keys, W_BATCH, out, NULL, NULL))
            return (void *)2;
        if (memcmp(out, v, sizeof v)) {
            ember_table_stats s;
            ember_table_stats_get(w->t, &s);
            fprintf(stderr, "mismatch at %llu: size %llu cap %llu evictions %llu grows %llu\n",
                    (unsigned long long)i, (unsigned long long)s.size,
                    (unsigned long long)s.capacity, (unsigned long long)s.evictions,
                    (unsigned long long)s.grows);
            return (void *)3;
        }
    }
    return NULL;
}

START_TEST(writers_race_growth)
{
    /* Load factor 0.5: no bucket overflows (at 0.75 one of a few thousand does, a
     * cache's ordinary eviction, which would make the check below a lottery). */
    ember_table *t = make(128, 65536, 0.5f, 0);
    enum { THREADS = 4 };
    pthread_t th[THREADS];
    writer w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].t = t;
        w[i].first = (uint64_t)i * 1000000;
        ck_assert_int_eq(pthread_create(&th[i], NULL, write_keys, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        ck_assert_ptr_null(rc);
    }
    ember_table_stats s;
    ember_table_stats_get(t, &s);
    ck_assert_uint_eq(s.size, THREADS * W_KEYS);
    ck_assert_uint_eq(s.evictions, 0);
    ck_assert_uint_ge(s.grows, 6);
    tu_snapshot snap;
    tu_snapshot_take(t, &snap);
    ck_assert_uint_eq(snap.n, THREADS * W_KEYS);
    for (int i = 0; i < THREADS; i++)
        for (uint64_t k = 0; k < W_KEYS; k++) {
            long at = tu_snapshot_find(&snap, key_at(w[i].first + k));
            ck_assert_int_ge(at, 0);
            for (uint32_t d = 0; d < DIM; d++)
                ck_assert_float_eq(snap.rows[(size_t)at * snap.row_floats + d],
                                   (float)(w[i].first + k));
        }
    tu_snapshot_free(&snap);
    ember_table_destroy(t);
}
END_TEST

static size_t present(ember_table *t, const uint64_t *keys, size_t n)
{
    uint8_t found[64];
    float out[64 * DIM];
    ck_assert_uint_le(n, 64);
    ck_assert_int_eq(ember_table_find(t, keys, n, out, found, NULL), EMBER_OK);
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += found[i];
    return c;
}

/* Rows written before the TTL's window go; rows written since stay; reads do not
 * keep a row alive; the first ttl after creation removes nothing. */
START_TEST(ttl_removes_exactly_the_stale_rows)
{
    ember_table *t = make(4096, 0, 0.0f, 10);
    uint64_t old_keys[20], new_keys[20], late[5];
    float v[20 * DIM] = {0}, out[20 * DIM];
    for (int i = 0; i < 20; i++) {
        old_keys[i] = key_at((uint64_t)i);
        new_keys[i] = key_at(100 + (uint64_t)i);
    }
    for (int i = 0; i < 5; i++)
        late[i] = key_at(200 + (uint64_t)i);
    uint64_t t0 = 1000 * SEC, gone = 99;
    ck_assert_int_eq(ember_table_insert_or_assign(t, old_keys, 20, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, t0, &gone, NULL), EMBER_OK); /* mark: old written */
    ck_assert_uint_eq(gone, 0);
    /* 5 s later: new keys written; 5 old keys pushed again (written); the other
     * old keys only read, by find and by a find_or_insert of existing keys. */
    ck_assert_int_eq(ember_table_insert_or_assign(t, new_keys, 20, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_apply_gradients(t, old_keys, 5, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, old_keys, 20, out, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find_or_insert(t, old_keys + 5, 15, out, NULL, NULL, NULL),
                     EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, t0 + 5 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0);
    ck_assert_int_eq(ember_table_expire(t, t0 + 9 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0); /* nothing is 10 s old yet */
    ck_assert_int_eq(ember_table_insert_or_assign(t, late, 5, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, t0 + 10 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 15); /* old keys 5..19: written at t0 only */
    ck_assert_uint_eq(present(t, old_keys, 5), 5);
    ck_assert_uint_eq(present(t, old_keys + 5, 15), 0);
    ck_assert_uint_eq(present(t, new_keys, 20), 20);
    /* At t0 + 15 the writes made by t0 + 5 are 10 s old; `late` (after t0 + 9) is not. */
    ck_assert_int_eq(ember_table_expire(t, t0 + 15 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 25);
    ck_assert_uint_eq(present(t, new_keys, 20), 0);
    ck_assert_uint_eq(present(t, late, 5), 5);
    ember_table_stats s;
    ember_table_stats_get(t, &s);
    ck_assert_uint_eq(s.expired, 40);
    ck_assert_uint_eq(s.evicted, 40);
    ck_assert_uint_eq(s.size, 5);
    /* TTL off: nothing more goes, however late. */
    ck_assert_int_eq(ember_table_set_ttl(t, 0, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, t0 + 1000 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0);
    ck_assert_uint_eq(present(t, late, 5), 5);
    ember_table_destroy(t);
}
END_TEST

/* A table without TTL keeps everything; TTL can be turned on later. */
START_TEST(ttl_set_later_and_refusals)
{
    ember_table *t = make(1024, 0, 0.0f, 0);
    uint64_t keys[8];
    float v[8 * DIM] = {0};
    for (int i = 0; i < 8; i++)
        keys[i] = key_at((uint64_t)i);
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 8, v, NULL, NULL), EMBER_OK);
    uint64_t gone = 9;
    ck_assert_int_eq(ember_table_expire(t, 5000 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0);
    ember_error err;
    ck_assert_int_eq(ember_table_set_ttl(t, EMBER_TTL_MAX_SECONDS + 1, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "ttl_seconds"));
    ck_assert_uint_eq(ember_table_ttl(t), 0);
    ck_assert_int_eq(ember_table_set_ttl(t, 60, &err), EMBER_OK);
    ck_assert_uint_eq(ember_table_ttl(t), 60);
    ck_assert_int_eq(ember_table_expire(t, 5000 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0); /* the first mark: nothing is known to be old */
    ck_assert_int_eq(ember_table_expire(t, 5059 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0);
    ck_assert_int_eq(ember_table_expire(t, 5060 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 8);
    ember_table_destroy(t);
}
END_TEST

/* Growth and TTL together: rows moved by a doubling keep their versions, so
 * they expire as if nothing had moved. */
START_TEST(ttl_survives_growth)
{
    ember_table *t = make(128, 2048, 0.0f, 10);
    uint64_t keys[64];
    float v[64 * DIM] = {0};
    for (int i = 0; i < 64; i++)
        keys[i] = key_at((uint64_t)i);
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 32, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, 100 * SEC, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_reserve(t, 1500, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(t), 2048);
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys + 32, 32, v, NULL, NULL), EMBER_OK);
    uint64_t gone = 0;
    ck_assert_int_eq(ember_table_expire(t, 110 * SEC, &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 32);
    ck_assert_uint_eq(present(t, keys, 32), 0);
    ck_assert_uint_eq(present(t, keys + 32, 32), 32);
    ember_table_destroy(t);
}
END_TEST

START_TEST(config_refusals)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = 128;
    ember_error err;
    c.max_load_factor = 1.5f;
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "max_load_factor"));
    c.max_load_factor = -0.1f;
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_INVALID_ARGUMENT);
    c.max_load_factor = 0.01f; /* would grow a table to its maximum at once */
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_INVALID_ARGUMENT);
    c.max_load_factor = 0.5f;
    c.max_capacity = EMBER_CAPACITY_MAX + 1;
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "max_capacity"));
    c.max_capacity = 0;
    c.ttl_seconds = UINT64_MAX; /* -1 sent as unsigned */
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "ttl_seconds"));
    c.ttl_seconds = 3600;
    ck_assert_int_eq(ember_table_config_validate(&c, &err), EMBER_OK);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("table_grow");
    TCase *c = tcase_create("grow");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, growing_table_equals_one_made_large);
    tcase_add_test(c, growth_stops_at_max_capacity);
    tcase_add_test(c, reserve_grows_ahead);
    tcase_add_test(c, export_cursor_survives_growth);
    tcase_add_test(c, writers_race_growth);
    tcase_add_test(c, ttl_removes_exactly_the_stale_rows);
    tcase_add_test(c, ttl_set_later_and_refusals);
    tcase_add_test(c, ttl_survives_growth);
    tcase_add_test(c, config_refusals);
    suite_add_tcase(s, c);
    /* In-process: under ThreadSanitizer, jemalloc's locks in a forked child that
     * starts threads (writers_race_growth) are reported as locked twice (the
     * child's re-initialised mutexes); no test here needs a fork's isolation. */
    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_NOFORK);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}

/*
 * test_table_threads.c — many threads on one table at once.
 *
 * Every write in these tests adds the same number to every element of a row (or
 * writes a row of equal elements), so a row whose elements differ is a torn row:
 * readers and exporters running beside the writers check that none ever appears.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DIM 16
#define WRITERS 4
#define UNIVERSE 5000
#define ROUNDS 300
#define BATCH 256

typedef struct shared {
    ember_table *t;
    _Atomic int stop;
    _Atomic int torn;
    _Atomic int failed;
} shared;

typedef struct writer {
    shared *sh;
    unsigned seed;
    uint32_t counts[UNIVERSE];
} writer;

static int row_torn(const float *row)
{
    for (int j = 1; j < DIM; j++)
        if (row[j] != row[0])
            return 1;
    return 0;
}

static void *push_loop(void *arg)
{
    writer *w = arg;
    uint64_t keys[BATCH];
    float g[BATCH * DIM];
    for (int i = 0; i < BATCH * DIM; i++)
        g[i] = -1.0f; /* SGD, lr 1: each occurrence adds exactly 1 */
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BATCH; i++) {
            uint64_t k = (uint64_t)(rand_r(&w->seed) % (rand_r(&w->seed) % 2 ? 50 : UNIVERSE));
            keys[i] = k;
            w->counts[k]++;
        }
        if (ember_table_apply_gradients(w->sh->t, keys, BATCH, g, NULL, NULL) != EMBER_OK)
            atomic_store(&w->sh->failed, 1);
    }
    return NULL;
}

static void *read_loop(void *arg)
{
    shared *sh = arg;
    unsigned seed = 99;
    uint64_t keys[BATCH];
    float out[BATCH * DIM];
    while (!atomic_load(&sh->stop)) {
        for (int i = 0; i < BATCH; i++)
            keys[i] = (uint64_t)(rand_r(&seed) % UNIVERSE);
        if (ember_table_find(sh->t, keys, BATCH, out, NULL, NULL) != EMBER_OK)
            atomic_store(&sh->failed, 1);
        for (int i = 0; i < BATCH; i++)
            if (row_torn(out + i * DIM))
                atomic_store(&sh->torn, 1);
    }
    return NULL;
}

static void *export_loop(void *arg)
{
    shared *sh = arg;
    enum { PAGE = 512 };
    uint64_t keys[PAGE];
    float *rows = malloc(PAGE * DIM * sizeof *rows);
    ember_export_filter f = {0, 0, 0};
    while (!atomic_load(&sh->stop)) {
        uint64_t cursor = 0;
        while (cursor < ember_table_export_end(sh->t)) {
            size_t got;
            if (ember_table_export(sh->t, &f, &cursor, PAGE, keys, rows, NULL, NULL, &got,
                                   NULL) != EMBER_OK)
                atomic_store(&sh->failed, 1);
            for (size_t i = 0; i < got; i++)
                if (row_torn(rows + i * DIM))
                    atomic_store(&sh->torn, 1);
        }
    }
    free(rows);
    return NULL;
}

START_TEST(concurrent_pushes_sum_exactly_and_rows_never_tear)
{
    shared sh = {0};
    sh.t = tu_table(DIM, 1 << 16, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ember_table_config c = *ember_table_config_of(sh.t);
    ember_table_destroy(sh.t);
    c.optim.lr = 1.0f;
    ck_assert_int_eq(ember_table_create(&c, NULL, &sh.t, NULL), EMBER_OK);

    writer *w = calloc(WRITERS, sizeof *w);
    pthread_t wt[WRITERS], rt, et;
    for (int i = 0; i < WRITERS; i++) {
        w[i].sh = &sh;
        w[i].seed = (unsigned)i + 1;
        pthread_create(&wt[i], NULL, push_loop, &w[i]);
    }
    pthread_create(&rt, NULL, read_loop, &sh);
    pthread_create(&et, NULL, export_loop, &sh);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    atomic_store(&sh.stop, 1);
    pthread_join(rt, NULL);
    pthread_join(et, NULL);
    ck_assert_int_eq(atomic_load(&sh.failed), 0);
    ck_assert_int_eq(atomic_load(&sh.torn), 0);

    /* Every key's row holds exactly how many times all writers pushed it. */
    uint64_t *keys = malloc(UNIVERSE * sizeof *keys), expect_size = 0;
    float *out = malloc(UNIVERSE * DIM * sizeof *out);
    uint8_t *found = malloc(UNIVERSE);
    for (uint64_t k = 0; k < UNIVERSE; k++)
        keys[k] = k;
    ck_assert_int_eq(ember_table_find(sh.t, keys, UNIVERSE, out, found, NULL), EMBER_OK);
    for (uint64_t k = 0; k < UNIVERSE; k++) {
        uint32_t total = 0;
        for (int i = 0; i < WRITERS; i++)
            total += w[i].counts[k];
        expect_size += total > 0;
        ck_assert_int_eq(found[k], total > 0);
        for (int j = 0; j < DIM; j++)
            ck_assert_msg(out[k * DIM + j] == (float)total, "key %llu: %g, expected %u",
                          (unsigned long long)k, out[k * DIM + j], total);
    }
    ck_assert_uint_eq(ember_table_size(sh.t), expect_size);
    free(keys);
    free(out);
    free(found);
    free(w);
    ember_table_destroy(sh.t);
}
END_TEST

/* ---- a small table under eviction, every writing op at once ------------------- */

typedef struct churner {
    shared *sh;
    unsigned seed;
} churner;

static void *churn_loop(void *arg)
{
    churner *c = arg;
    ember_table *t = c->sh->t;
    uint64_t keys[64];
    float v[64 * DIM], out[64 * DIM];
    for (int r = 0; r < 2000; r++) {
        for (int i = 0; i < 64; i++)
            keys[i] = (uint64_t)(rand_r(&c->seed) % 20000);
        float x = (float)(rand_r(&c->seed) % 100);
        for (int i = 0; i < 64 * DIM; i++)
            v[i] = x;
        int rc = EMBER_OK;
        switch (rand_r(&c->seed) % 6) {
        case 0: rc = ember_table_find_or_insert(t, keys, 64, out, NULL, NULL, NULL); break;
        case 1: rc = ember_table_apply_gradients(t, keys, 64, v, NULL, NULL); break;
        case 2: rc = ember_table_insert_or_assign(t, keys, 64, v, NULL, NULL); break;
        case 3: rc = ember_table_accum(t, keys, 64, v, NULL, NULL); break;
        case 4: rc = ember_table_erase(t, keys, 16, NULL, NULL); break;
        case 5: rc = ember_table_evict_below(t, 1, NULL, NULL); break;
        }
        if (rc != EMBER_OK)
            atomic_store(&c->sh->failed, 1);
    }
    return NULL;
}

START_TEST(eviction_pressure_keeps_invariants)
{
    shared sh = {0};
    sh.t = tu_table(DIM, 4 * EMBER_BUCKET_SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                    EMBER_INIT_ZEROS);
    churner c[WRITERS];
    pthread_t th[WRITERS], rt, et;
    for (int i = 0; i < WRITERS; i++) {
        c[i].sh = &sh;
        c[i].seed = (unsigned)i * 7 + 3;
        pthread_create(&th[i], NULL, churn_loop, &c[i]);
    }
    pthread_create(&rt, NULL, read_loop, &sh);
    pthread_create(&et, NULL, export_loop, &sh);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&sh.stop, 1);
    pthread_join(rt, NULL);
    pthread_join(et, NULL);
    ck_assert_int_eq(atomic_load(&sh.failed), 0);
    ck_assert_int_eq(atomic_load(&sh.torn), 0);

    ember_table_stats st;
    ember_table_stats_get(sh.t, &st);
    ck_assert_uint_le(st.size, st.capacity);
    ck_assert_uint_gt(st.evictions, 0);
    tu_snapshot s;
    tu_snapshot_take(sh.t, &s);
    ck_assert_uint_eq(s.n, st.size); /* the size counter agrees with the contents */
    for (size_t i = 1; i < s.n; i++)
        ck_assert_uint_ne(s.keys[i], s.keys[i - 1]); /* no key stored twice */
    for (size_t i = 0; i < s.n; i++)
        ck_assert(!row_torn(s.rows + i * s.row_floats));
    /* Each key can still be found where it is stored. */
    float out[DIM];
    uint8_t found;
    for (size_t i = 0; i < s.n; i++) {
        ck_assert_int_eq(ember_table_find(sh.t, &s.keys[i], 1, out, &found, NULL), EMBER_OK);
        ck_assert_int_eq(found, 1);
    }
    tu_snapshot_free(&s);
    ember_table_destroy(sh.t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("table_threads");
    TCase *c = tcase_create("threads");
    tcase_set_timeout(c, 240);
    tcase_add_test(c, concurrent_pushes_sum_exactly_and_rows_never_tear);
    tcase_add_test(c, eviction_pressure_keeps_invariants);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    return tu_run(suite());
}

/* test_table.c — the table's operations one by one, and its refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DIM 4

static void fill(float *v, size_t n, float x)
{
    for (size_t i = 0; i < n; i++)
        v[i] = x;
}

START_TEST(find_missing_returns_initial_row_without_storing)
{
    ember_table *t = tu_table(DIM, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_NORMAL);
    uint64_t keys[2] = {7, 9};
    float out[2 * DIM], again[2 * DIM], expect[DIM];
    uint8_t found[2] = {9, 9};
    ck_assert_int_eq(ember_table_find(t, keys, 2, out, found, NULL), EMBER_OK);
    ck_assert_int_eq(found[0], 0);
    ck_assert_int_eq(found[1], 0);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_init_row(&ember_table_config_of(t)->init, 42, 9, expect, DIM);
    ck_assert_mem_eq(out + DIM, expect, sizeof expect);
    ck_assert_int_eq(ember_table_find_or_insert(t, keys, 2, again, found, NULL, NULL), EMBER_OK);
    ck_assert_mem_eq(out, again, sizeof out); /* same initial row when stored */
    ck_assert_uint_eq(ember_table_size(t), 2);
    ck_assert_int_eq(ember_table_find(t, keys, 2, out, found, NULL), EMBER_OK);
    ck_assert_int_eq(found[0], 1);
    ck_assert_int_eq(found[1], 1);
    ember_table_destroy(t);
}
END_TEST

START_TEST(insert_assign_accum)
{
    ember_table *t = tu_table(DIM, 1024, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    uint64_t keys[3] = {1, 2, 3};
    float v[3 * DIM], out[3 * DIM];
    uint8_t found[3];
    fill(v, 3 * DIM, 2.0f);
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 2, v, NULL, NULL), EMBER_OK);
    fill(v, 3 * DIM, 5.0f);
    ck_assert_int_eq(ember_table_assign(t, keys + 1, 2, v, found, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(found[0], 1); /* key 2 existed */
    ck_assert_int_eq(found[1], 0); /* key 3 did not, and still does not */
    ck_assert_uint_eq(ember_table_size(t), 2);
    fill(v, 3 * DIM, 0.5f);
    ck_assert_int_eq(ember_table_accum(t, keys, 3, v, found, NULL), EMBER_OK);
    ck_assert_int_eq(found[2], 0);
    ck_assert_int_eq(ember_table_find(t, keys, 3, out, found, NULL), EMBER_OK);
    ck_assert_float_eq(out[0], 2.5f);
    ck_assert_float_eq(out[DIM], 5.5f);
    ck_assert_float_eq(out[2 * DIM], 0.0f);
    ck_assert_int_eq(found[2], 0);
    /* A new key's Adagrad accumulator starts at initial_accumulator. */
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 2);
    ck_assert_float_eq(s.rows[DIM], 0.1f);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}
END_TEST

START_TEST(insert_or_assign_last_duplicate_wins)
{
    ember_table *t = tu_table(1, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    uint64_t keys[3] = {5, 5, 5};
    float v[3] = {1, 2, 3}, out;
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 3, v, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, keys, 1, &out, NULL, NULL), EMBER_OK);
    ck_assert_float_eq(out, 3.0f);
    ck_assert_uint_eq(ember_table_size(t), 1);
    ember_table_destroy(t);
}
END_TEST

START_TEST(apply_gradients_sums_duplicates_first)
{
    /* Adagrad is not linear in g: applying twice differs from applying the sum. */
    ember_table *t = tu_table(1, 1024, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU, EMBER_INIT_ZEROS);
    uint64_t keys[4] = {11, 12, 11, 11};
    float g[4] = {1.0f, 0.5f, 2.0f, 3.0f}, out[2];
    ck_assert_int_eq(ember_table_apply_gradients(t, keys, 4, g, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, keys, 2, out, NULL, NULL), EMBER_OK);
    const ember_optim_config *o = &ember_table_config_of(t)->optim;
    double sum = 6.0, acc = o->initial_accumulator + sum * sum;
    double expect = -o->lr * sum / (sqrt(acc) + o->eps);
    ck_assert_double_eq_tol(out[0], expect, 1e-6);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    long at = tu_snapshot_find(&s, 11);
    ck_assert_int_ge(at, 0);
    ck_assert_uint_eq(s.scores[at], 3); /* LFU counts every occurrence */
    ck_assert_double_eq_tol(s.rows[at * 2 + 1], acc, 1e-5);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}
END_TEST

START_TEST(erase_and_clear)
{
    ember_table *t = tu_table(DIM, 4096, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    enum { N = 1000 };
    uint64_t *keys = malloc(N * sizeof *keys), erased;
    float *v = calloc(N * DIM, sizeof *v);
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)i * 7919u;
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, NULL, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(t), N);
    ck_assert_int_eq(ember_table_erase(t, keys, N / 2, &erased, NULL), EMBER_OK);
    ck_assert_uint_eq(erased, N / 2);
    ck_assert_int_eq(ember_table_erase(t, keys, N / 2, &erased, NULL), EMBER_OK);
    ck_assert_uint_eq(erased, 0);
    ck_assert_uint_eq(ember_table_size(t), N - N / 2);
    uint8_t *found = malloc(N);
    ck_assert_int_eq(ember_table_find(t, keys, N, v, found, NULL), EMBER_OK);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(found[i], i >= N / 2);
    /* Erased slots are reused: inserting them again does not evict. */
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, NULL, NULL), EMBER_OK);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size, N);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_int_eq(ember_table_clear(t, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ck_assert_int_eq(ember_table_find(t, keys, N, v, found, NULL), EMBER_OK);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(found[i], 0);
    free(found);
    free(keys);
    free(v);
    ember_table_destroy(t);
}
END_TEST

START_TEST(full_bucket_evicts_lowest_score)
{
    /* Capacity 128 = one bucket: every key competes for the same slots. */
    ember_table *t = tu_table(1, 128, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM, EMBER_INIT_ZEROS);
    ck_assert_uint_eq(ember_table_capacity(t), 128);
    enum { N = 300 };
    uint64_t keys[N], scores[N];
    float v[N];
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i + 1;
        scores[i] = (uint64_t)((i * 37) % N) + 1000; /* distinct */
        v[i] = (float)i;
    }
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, scores, NULL), EMBER_OK);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size, 128);
    ck_assert_double_eq(st.load_factor, 1.0);
    ck_assert_uint_eq(st.evictions + st.insert_refused, N - 128);
    /* The survivors are exactly the 128 highest scores: 1000+172 .. 1000+299. */
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_ge(s.scores[i], 1000 + N - 128);
    /* A lower-scored newcomer is refused; a higher one replaces the lowest. */
    uint64_t k = 9999, low = 1, high = 1u << 30;
    float x = 1.0f;
    uint8_t found;
    ck_assert_int_eq(ember_table_insert_or_assign(t, &k, 1, &x, &low, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, &k, 1, &x, &found, NULL), EMBER_OK);
    ck_assert_int_eq(found, 0);
    ck_assert_int_eq(ember_table_insert_or_assign(t, &k, 1, &x, &high, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, &k, 1, &x, &found, NULL), EMBER_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_uint_eq(ember_table_size(t), 128);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}
END_TEST

START_TEST(lru_full_table_keeps_serving_newest)
{
    ember_table *t = tu_table(2, 256, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    float out[2 * 64];
    uint64_t keys[64];
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 64; i++)
            keys[i] = (uint64_t)round * 64 + (uint64_t)i;
        ck_assert_int_eq(ember_table_find_or_insert(t, keys, 64, out, NULL, NULL, NULL),
                         EMBER_OK);
        ck_assert_uint_le(ember_table_size(t), 256);
    }
    /* The last call's keys carry the newest score: none of them was evicted. */
    uint8_t found[64];
    ck_assert_int_eq(ember_table_find(t, keys, 64, out, found, NULL), EMBER_OK);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(found[i], 1);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size + st.evictions, 40 * 64);
    ember_table_destroy(t);
}
END_TEST

START_TEST(epoch_scores)
{
    ember_table *t = tu_table(1, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_EPOCH_LFU, EMBER_INIT_ZEROS);
    uint64_t k = 3;
    float g = 1.0f;
    ember_table_set_epoch(t, 7);
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, &g, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, &g, NULL, NULL), EMBER_OK);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.scores[0], (UINT64_C(7) << 32) | 2);
    tu_snapshot_free(&s);
    ember_table_set_epoch(t, 8);
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, &g, NULL, NULL), EMBER_OK);
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.scores[0], (UINT64_C(8) << 32) | 1);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}
END_TEST

START_TEST(export_filters_and_cursor)
{
    ember_table *t = tu_table(DIM, 8192, EMBER_OPTIM_ADAM, EMBER_SCORE_CUSTOM, EMBER_INIT_ZEROS);
    enum { N = 3000 };
    uint64_t *keys = malloc(N * sizeof *keys), *sc = malloc(N * sizeof *sc);
    float *v = calloc(N * DIM, sizeof *v);
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 31 + 1;
        sc[i] = (uint64_t)i;
    }
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, sc, NULL), EMBER_OK);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    uint64_t v1 = st.version;
    ck_assert_int_eq(ember_table_accum(t, keys, 100, v, NULL, NULL), EMBER_OK);

    uint32_t rf = ember_table_row_floats(t);
    ck_assert_uint_eq(rf, 3 * DIM + 1);
    size_t max = 256, got, total = 0, by_score = 0, delta = 0;
    uint64_t ek[256], es[256], ev[256], cursor = 0;
    float *rows = malloc(max * rf * sizeof *rows);
    ember_export_filter all = {0, 0, 1}, hi = {2000, 0, 0}, dv = {0, v1, 0};
    while (cursor < ember_table_export_end(t)) {
        ck_assert_int_eq(ember_table_export(t, &all, &cursor, max, ek, rows, es, ev, &got, NULL),
                         EMBER_OK);
        total += got;
    }
    for (cursor = 0; cursor < ember_table_export_end(t);) {
        ck_assert_int_eq(ember_table_export(t, &hi, &cursor, max, ek, rows, es, NULL, &got, NULL),
                         EMBER_OK);
        for (size_t i = 0; i < got; i++)
            ck_assert_uint_ge(es[i], 2000);
        by_score += got;
    }
    for (cursor = 0; cursor < ember_table_export_end(t);) {
        ck_assert_int_eq(ember_table_export(t, &dv, &cursor, max, ek, rows, NULL, ev, &got, NULL),
                         EMBER_OK);
        for (size_t i = 0; i < got; i++) {
            ck_assert_uint_gt(ev[i], v1);
            ck_assert_uint_eq((ek[i] - 1) % 31, 0);
            ck_assert_uint_lt((ek[i] - 1) / 31, 100);
        }
        delta += got;
    }
    ck_assert_uint_eq(total, N);
    ck_assert_uint_eq(by_score, N - 2000);
    ck_assert_uint_eq(delta, 100);
    /* Too small a page to hold a bucket is refused. */
    cursor = 0;
    ck_assert_int_eq(ember_table_export(t, &all, &cursor, 100, ek, rows, NULL, NULL, &got, NULL),
                     EMBER_INVALID_ARGUMENT);
    free(rows);
    free(keys);
    free(sc);
    free(v);
    ember_table_destroy(t);
}
END_TEST

START_TEST(evict_below_and_to_size)
{
    ember_table *t = tu_table(1, 1 << 14, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM, EMBER_INIT_ZEROS);
    enum { N = 5000 };
    uint64_t *keys = malloc(N * sizeof *keys), *sc = malloc(N * sizeof *sc), n;
    float *v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i + 100;
        sc[i] = (uint64_t)(i / 2) + (UINT64_C(1) << 40); /* pairs share a score */
    }
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, N, v, sc, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_evict_below(t, (UINT64_C(1) << 40) + 500, &n, NULL), EMBER_OK);
    ck_assert_uint_eq(n, 1000);
    ck_assert_uint_eq(ember_table_size(t), N - 1000);
    /* Down to an odd size: the cut falls inside a pair of equal scores. */
    ck_assert_int_eq(ember_table_evict_to_size(t, 1501, &n, NULL), EMBER_OK);
    ck_assert_uint_eq(n, N - 1000 - 1501);
    ck_assert_uint_eq(ember_table_size(t), 1501);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 1501);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_ge(s.scores[i], (UINT64_C(1) << 40) + (N - 1502) / 2);
    tu_snapshot_free(&s);
    ck_assert_int_eq(ember_table_evict_to_size(t, 5000, &n, NULL), EMBER_OK);
    ck_assert_uint_eq(n, 0);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.evicted, N - 1501);
    free(keys);
    free(sc);
    free(v);
    ember_table_destroy(t);
}
END_TEST

/* ---- refusals: a status, a message, and nothing changed --------------------- */

static ember_table *seeded_with(int optim, int policy)
{
    ember_table *t = tu_table(DIM, 1024, optim, policy, EMBER_INIT_UNIFORM);
    uint64_t keys[50];
    float v[50 * DIM];
    for (int i = 0; i < 50; i++)
        keys[i] = (uint64_t)i * 3;
    ck_assert_int_eq(ember_table_find_or_insert(t, keys, 50, v, NULL, NULL, NULL), EMBER_OK);
    return t;
}

static ember_table *seeded(int optim)
{
    return seeded_with(optim, EMBER_SCORE_LRU);
}

START_TEST(reserved_keys_refused_whole)
{
    ember_table *t = seeded(EMBER_OPTIM_ADAM);
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    uint64_t keys[3] = {1000, 1001, EMBER_KEY_EMPTY};
    float v[3 * DIM];
    fill(v, 3 * DIM, 1.0f);
    ember_error err;
    uint64_t reserved[] = {EMBER_KEY_EMPTY, EMBER_KEY_ERASED, EMBER_KEY_LOCKED,
                           EMBER_KEY_RESERVED_MIN};
    for (int r = 0; r < 4; r++) {
        keys[2] = reserved[r];
        ck_assert_int_eq(ember_table_apply_gradients(t, keys, 3, v, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "reserved"));
        ck_assert_int_eq(ember_table_find_or_insert(t, keys, 3, v, NULL, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 3, v, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_erase(t, keys, 3, NULL, &err), EMBER_INVALID_ARGUMENT);
    }
    ck_assert_uint_eq(EMBER_KEY_RESERVED_MIN - 1, UINT64_C(0xFFFFFFFFFFFFFFFB));
    keys[2] = EMBER_KEY_RESERVED_MIN - 1; /* the largest usable key works */
    ck_assert_int_eq(ember_table_find(t, keys, 3, v, NULL, &err), EMBER_OK);
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    ember_table_destroy(t);
}
END_TEST

START_TEST(nonfinite_gradients_rejected_by_default)
{
    ember_table *t = seeded(EMBER_OPTIM_ADAGRAD);
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    uint64_t keys[3] = {0, 3, 6};
    float g[3 * DIM];
    fill(g, 3 * DIM, 0.5f);
    ember_error err;
    float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        g[2 * DIM + 1] = bad[b];
        ck_assert_int_eq(ember_table_apply_gradients(t, keys, 3, g, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "index 2"));
        ck_assert_int_eq(ember_table_accum(t, keys, 3, g, NULL, &err), EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 3, g, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_assign(t, keys, 3, g, NULL, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
    }
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    ember_table_destroy(t);
}
END_TEST

/* A table of `dim` with policy ZERO (non-finite inputs zeroed), SGD at `lr`,
 * zeros initializer. */
static ember_table *zeroing(uint32_t dim, float lr)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = 1024;
    c.init.kind = EMBER_INIT_ZEROS;
    c.optim.lr = lr;
    c.nonfinite = EMBER_NONFINITE_ZERO;
    ember_table *t = NULL;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, NULL), EMBER_OK);
    return t;
}

START_TEST(nonfinite_gradients_zeroed_by_option)
{
    ember_table *t = zeroing(2, 0.01f);
    uint64_t k = 1;
    float g[2] = {NAN, 1.0f}, out[2];
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, g, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, &k, 1, out, NULL, NULL), EMBER_OK);
    ck_assert_float_eq(out[0], 0.0f);
    ck_assert_float_eq(out[1], -0.01f);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.nonfinite_zeroed, 1);
    ember_table_destroy(t);
}
END_TEST

/* The one validation pass walks keys and values a block at a time: whatever
 * block they fall in, a reserved key is still the error reported before any
 * non-finite value, the first bad value is the one named, and policy ZERO
 * zeroes every bad value, before and after the first. */
START_TEST(validation_errors_across_blocks)
{
    enum { N = 300 };
    ember_table *t = seeded(EMBER_OPTIM_ADAGRAD);
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    static uint64_t keys[N];
    static float g[N * DIM];
    for (int i = 0; i < N; i++)
        keys[i] = 5000u + (uint64_t)i;
    fill(g, N * DIM, 0.25f);
    ember_error err;
    g[5 * DIM] = NAN;                       /* first block */
    keys[200] = EMBER_KEY_RESERVED_MIN;     /* a later block */
    ck_assert_int_eq(ember_table_apply_gradients(t, keys, N, g, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "at index 200 is reserved"));
    static float rows[N * 2 * DIM];         /* Adagrad rows: embedding + acc */
    fill(rows, N * 2 * DIM, 1.0f);
    rows[7] = INFINITY;
    ck_assert_int_eq(ember_table_import(t, keys, N, rows, keys, keys, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "at index 200 is reserved"));
    ck_assert_int_eq(ember_table_accum(t, keys, N, NULL, NULL, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "at index 200 is reserved"));
    keys[200] = 5200;
    ck_assert_int_eq(ember_table_accum(t, keys, N, NULL, NULL, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_str_eq(err.message, "deltas is NULL");
    g[5 * DIM] = 0.25f;
    g[250 * DIM + DIM - 1] = INFINITY;      /* the last float of a later block's key */
    g[299 * DIM] = NAN;
    ck_assert_int_eq(ember_table_apply_gradients(t, keys, N, g, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "gradients of key index 250 hold a non-finite"));
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    ember_table_destroy(t);

    t = zeroing(DIM, 1.0f);
    g[3] = -INFINITY;                       /* before the first block's end */
    ck_assert_int_eq(ember_table_apply_gradients(t, keys, N, g, NULL, &err), EMBER_OK);
    static float out[N * DIM];
    ck_assert_int_eq(ember_table_find(t, keys, N, out, NULL, NULL), EMBER_OK);
    for (int j = 0; j < N * DIM; j++) {
        int zeroed = j == 3 || j == 250 * DIM + DIM - 1 || j == 299 * DIM;
        ck_assert_float_eq(out[j], zeroed ? 0.0f : -0.25f);
    }
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.nonfinite_zeroed, 3);
    ember_table_destroy(t);
}
END_TEST

/* ember_table_write with `checked` does what the named call does on a valid
 * batch, skips only the scans it names, and keeps every other check. */
START_TEST(write_checked_skips_only_what_it_names)
{
    static const ember_write_kind kinds[] = {EMBER_WRITE_GRADIENTS, EMBER_WRITE_UPSERT,
                                             EMBER_WRITE_ASSIGN, EMBER_WRITE_ACCUM};
    const unsigned both = EMBER_CHECKED_KEYS | EMBER_CHECKED_VALUES;
    uint64_t keys[4] = {0, 3, 1000, 6};   /* 1000: not in the seeded table */
    float v[4 * DIM];
    for (int i = 0; i < 4 * DIM; i++)
        v[i] = 0.125f * (float)(i % 7) - 0.25f;
    ember_error err;
    for (int k = 0; k < 4; k++) {
        /* LFU: scores that do not depend on the clock, so the tables compare */
        ember_table *a = seeded_with(EMBER_OPTIM_ADAM, EMBER_SCORE_LFU);
        ember_table *b = seeded_with(EMBER_OPTIM_ADAM, EMBER_SCORE_LFU);
        uint8_t fa[4] = {9, 9, 9, 9}, fb[4] = {9, 9, 9, 9};
        ck_assert_int_eq(ember_table_write(a, kinds[k], both, keys, 4, v, fa, NULL, &err),
                         EMBER_OK);
        switch (kinds[k]) {
        case EMBER_WRITE_GRADIENTS:
            ck_assert_int_eq(ember_table_apply_gradients(b, keys, 4, v, NULL, &err), EMBER_OK);
            break;
        case EMBER_WRITE_UPSERT:
            ck_assert_int_eq(ember_table_insert_or_assign(b, keys, 4, v, NULL, &err), EMBER_OK);
            break;
        case EMBER_WRITE_ASSIGN:
            ck_assert_int_eq(ember_table_assign(b, keys, 4, v, fb, NULL, &err), EMBER_OK);
            break;
        default:
            ck_assert_int_eq(ember_table_accum(b, keys, 4, v, fb, &err), EMBER_OK);
            break;
        }
        ck_assert_mem_eq(fa, fb, sizeof fa);
        tu_snapshot sa, sb;
        tu_snapshot_take(a, &sa);
        tu_snapshot_take(b, &sb);
        ck_assert(tu_snapshot_equal(&sa, &sb));
        tu_snapshot_free(&sa);
        tu_snapshot_free(&sb);

        /* the scans it does not skip, and the checks it always makes */
        tu_snapshot_take(a, &sa);
        keys[2] = EMBER_KEY_RESERVED_MIN;
        ck_assert_int_eq(ember_table_write(a, kinds[k], EMBER_CHECKED_VALUES, keys, 4, v, NULL,
                                           NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "at index 2 is reserved"));
        keys[2] = 1000;
        v[3 * DIM + 1] = NAN;
        ck_assert_int_eq(ember_table_write(a, kinds[k], EMBER_CHECKED_KEYS, keys, 4, v, NULL,
                                           NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "of key index 3 hold a non-finite"));
        v[3 * DIM + 1] = 0.5f;
        ck_assert_int_eq(ember_table_write(a, kinds[k], both, keys, 4, NULL, NULL, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "is NULL"));
        ck_assert_int_eq(ember_table_write(a, kinds[k], both, NULL, 4, v, NULL, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_str_eq(err.message, "keys is NULL");
        tu_snapshot_take(b, &sb);   /* b: a's state before the refused calls */
        ck_assert(tu_snapshot_equal(&sa, &sb));
        tu_snapshot_free(&sa);
        tu_snapshot_free(&sb);
        ember_table_destroy(a);
        ember_table_destroy(b);
    }
    ember_table *t = seeded(EMBER_OPTIM_SGD);
    ck_assert_int_eq(ember_table_write(t, (ember_write_kind)7, 0, keys, 4, v, NULL, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    /* what it names is really not read: a value the caller wrongly vouched for
     * is stored as given */
    v[1] = NAN;
    ck_assert_int_eq(ember_table_write(t, EMBER_WRITE_UPSERT, EMBER_CHECKED_VALUES, keys, 1, v,
                                       NULL, NULL, &err),
                     EMBER_OK);
    float row[DIM];
    ck_assert_int_eq(ember_table_find(t, keys, 1, row, NULL, &err), EMBER_OK);
    ck_assert(isnan(row[1]));
    ember_table_destroy(t);

    /* policy ZERO still zeroes a batch whose keys alone were checked */
    t = zeroing(2, 0.01f);
    uint64_t key = 1;
    float g[2] = {1.0f, INFINITY}, out[2];
    ck_assert_int_eq(ember_table_write(t, EMBER_WRITE_GRADIENTS, EMBER_CHECKED_KEYS, &key, 1,
                                       g, NULL, NULL, &err),
                     EMBER_OK);
    ck_assert_int_eq(ember_table_find(t, &key, 1, out, NULL, NULL), EMBER_OK);
    ck_assert_float_eq(out[0], -0.01f);
    ck_assert_float_eq(out[1], 0.0f);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.nonfinite_zeroed, 1);
    ember_table_destroy(t);
}
END_TEST

START_TEST(config_out_of_range_refused)
{
    ember_table_config c;
    ember_table *t = NULL;
    ember_error err;
    ember_table_config_init(&c);
    c.capacity = 100;
    c.dim = 0;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "dim"));
    c.dim = EMBER_DIM_MAX + 1;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.dim = EMBER_DIM_MAX;
    c.capacity = 0;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "capacity"));
    c.capacity = EMBER_CAPACITY_MAX + 1;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.capacity = 10;
    c.optim.kind = 17;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.optim.kind = EMBER_OPTIM_ADAM;
    c.optim.beta1 = 1.0f;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.optim.beta1 = 0.9f;
    c.optim.lr = NAN;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.optim.lr = 0.1f;
    c.init.kind = EMBER_INIT_UNIFORM;
    c.init.a = 1.0f;
    c.init.b = -1.0f;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.init.b = 2.0f;
    c.score_policy = 9;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_INVALID_ARGUMENT);
    c.score_policy = EMBER_SCORE_LFU;
    ck_assert_ptr_null(t);
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_OK);
    ck_assert_uint_eq(ember_table_capacity(t), EMBER_BUCKET_SLOTS); /* whole buckets */
    ember_table_destroy(t);
}
END_TEST

START_TEST(null_arrays_refused)
{
    ember_table *t = seeded(EMBER_OPTIM_SGD);
    uint64_t k = 1;
    ember_error err;
    ck_assert_int_eq(ember_table_find(t, NULL, 1, NULL, NULL, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, NULL, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_find(t, NULL, 0, NULL, NULL, &err), EMBER_OK); /* empty */
    ember_table_destroy(t);
}
END_TEST

START_TEST(admission_stores_from_min_count)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = 2;
    c.capacity = 1024;
    c.init.kind = EMBER_INIT_CONSTANT;
    c.init.a = 0.5f;
    c.admission.min_count = 3;
    c.admission.sketch_width = 4096;
    ember_table *t;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, NULL), EMBER_OK);
    uint64_t k = 77;
    float out[2], g[2] = {1.0f, 1.0f};
    uint8_t found;
    /* Sighting 1: a pull returns the initial row, stores nothing. */
    ck_assert_int_eq(ember_table_find_or_insert(t, &k, 1, out, &found, NULL, NULL), EMBER_OK);
    ck_assert_float_eq(out[0], 0.5f);
    ck_assert_uint_eq(ember_table_size(t), 0);
    /* Sighting 2: a push is dropped and counted. */
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, g, NULL, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.admission_drops, 1);
    /* Sighting 3: admitted; the push is applied to the initial row. */
    ck_assert_int_eq(ember_table_apply_gradients(t, &k, 1, g, NULL, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(t), 1);
    ck_assert_int_eq(ember_table_find(t, &k, 1, out, &found, NULL), EMBER_OK);
    ck_assert_int_eq(found, 1);
    ck_assert_float_eq_tol(out[0], 0.5f - 0.01f, 1e-7f);
    /* Explicit writes are not subject to admission. */
    uint64_t k2 = 78;
    ck_assert_int_eq(ember_table_insert_or_assign(t, &k2, 1, g, NULL, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(t), 2);
    ember_table_destroy(t);
}
END_TEST

START_TEST(stats_report_memory)
{
    ember_table *t = tu_table(64, 1 << 16, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.capacity, 1 << 16);
    ck_assert_uint_eq(st.num_buckets, (1 << 16) / EMBER_BUCKET_SLOTS);
    ck_assert_uint_ge(st.bytes_host, (uint64_t)(1 << 16) * (3 * 64 + 1) * 4);
    ck_assert_uint_eq(st.bytes_device, 0);
    ck_assert_str_eq(ember_table_backend_name(ember_table_backend_of(t)), "cpu");
    ember_table_destroy(t);
}
END_TEST

/* A server checks its memory caps with the footprint before creating: it must
 * be exactly what the table then reports, with and without admission. */
START_TEST(footprint_equals_new_table_stats)
{
    static const struct {
        uint32_t dim;
        uint64_t capacity;
        int optim;
        uint32_t min_count, width;
    } cases[] = {
        {1, 1, EMBER_OPTIM_SGD, 0, 0},
        {64, 1 << 16, EMBER_OPTIM_ADAM, 0, 0},
        {7, 1000, EMBER_OPTIM_ADAGRAD, 3, 1000},
        {128, 5000, EMBER_OPTIM_FTRL, 2, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ember_table_config c;
        ember_table_config_init(&c);
        c.dim = cases[i].dim;
        c.capacity = cases[i].capacity;
        c.optim.kind = cases[i].optim;
        c.admission.min_count = cases[i].min_count;
        c.admission.sketch_width = cases[i].width;
        uint64_t host = 0, device = 1;
        ember_error err;
        ck_assert_int_eq(ember_table_footprint(&c, NULL, &host, &device, &err), EMBER_OK);
        ember_table *t;
        ck_assert_int_eq(ember_table_create(&c, NULL, &t, &err), EMBER_OK);
        ember_table_stats st;
        ember_table_stats_get(t, &st);
        ck_assert_uint_eq(host, st.bytes_host);
        ck_assert_uint_eq(device, st.bytes_device);
        ember_table_destroy(t);
    }
    ember_table_config bad;
    ember_table_config_init(&bad);
    ember_error err;
    ck_assert_int_eq(ember_table_footprint(&bad, NULL, NULL, NULL, &err), EMBER_INVALID_ARGUMENT);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("table");
    TCase *c = tcase_create("ops");
    tcase_add_test(c, find_missing_returns_initial_row_without_storing);
    tcase_add_test(c, footprint_equals_new_table_stats);
    tcase_add_test(c, insert_assign_accum);
    tcase_add_test(c, insert_or_assign_last_duplicate_wins);
    tcase_add_test(c, apply_gradients_sums_duplicates_first);
    tcase_add_test(c, erase_and_clear);
    tcase_add_test(c, full_bucket_evicts_lowest_score);
    tcase_add_test(c, lru_full_table_keeps_serving_newest);
    tcase_add_test(c, epoch_scores);
    tcase_add_test(c, export_filters_and_cursor);
    tcase_add_test(c, evict_below_and_to_size);
    tcase_add_test(c, admission_stores_from_min_count);
    tcase_add_test(c, stats_report_memory);
    suite_add_tcase(s, c);
    TCase *bad = tcase_create("refusals");
    tcase_add_test(bad, reserved_keys_refused_whole);
    tcase_add_test(bad, validation_errors_across_blocks);
    tcase_add_test(bad, write_checked_skips_only_what_it_names);
    tcase_add_test(bad, nonfinite_gradients_rejected_by_default);
    tcase_add_test(bad, nonfinite_gradients_zeroed_by_option);
    tcase_add_test(bad, config_out_of_range_refused);
    tcase_add_test(bad, null_arrays_refused);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    return tu_run(suite());
}

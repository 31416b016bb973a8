/*
 * test_snapshot.c — point-in-time snapshots (storage/table.h): a snapshot read
 * while writers run equals the table at its cut, row for row.
 *
 * The model: each writer w writes, in call j, its MAIN keys with rows of value
 * j + 1 and one marker key of its own for j (never written again). Every call
 * is one version, so once the writers have stopped the markers give the
 * version of every call. The table at a cut c is then known exactly: writer w's
 * last call at or below c, p_w, gave its main keys (value p_w + 1, version of
 * p_w), and its markers 0..p_w are there with their own values and versions,
 * and nothing else is.
 *
 * Built again against the GPU backend as gpu.snapshot (EMBER_SNAPSHOT_BACKEND_GPU,
 * tests/gpu/CMakeLists.txt): the tables under test are then GPU tables.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#ifdef EMBER_SNAPSHOT_BACKEND_GPU
#include "cuda/device.h"
#include "cuda/gpu_table.h"
#endif

#define DIM 4
#define WRITERS 4
#define MAIN 64
#define CALLS 1500
#define SNAPS 6

/* The backend of the tables under test (NULL: the CPU's). */
static const ember_table_backend *backend(void)
{
#ifdef EMBER_SNAPSHOT_BACKEND_GPU
    return ember_table_gpu_backend();
#else
    return NULL;
#endif
}

/* A table under test: tu_table on backend(). */
static ember_table *under_test(uint32_t dim, uint64_t capacity, int optim, int policy,
                               int init_kind)
{
    return tu_table_on(backend(), dim, capacity, optim, policy, init_kind);
}

static uint64_t main_key(unsigned w, unsigned i) { return (uint64_t)(w + 1) << 32 | i; }
static uint64_t marker_key(unsigned w, unsigned j)
{
    return (uint64_t)(w + 1) << 32 | UINT64_C(1) << 20 | j;
}

typedef struct writer {
    ember_table *t;
    unsigned w;
    _Atomic int *failed;
} writer;

static void *write_loop(void *arg)
{
    writer *wr = arg;
    uint64_t keys[MAIN + 1];
    float vals[(MAIN + 1) * DIM];
    for (unsigned j = 0; j < CALLS; j++) {
        for (unsigned i = 0; i < MAIN; i++)
            keys[i] = main_key(wr->w, i);
        keys[MAIN] = marker_key(wr->w, j);
        for (unsigned i = 0; i < (MAIN + 1) * DIM; i++)
            vals[i] = (float)(j + 1);
        if (ember_table_insert_or_assign(wr->t, keys, MAIN + 1, vals, NULL, NULL) != EMBER_OK)
            atomic_store(wr->failed, 1);
        usleep(20); /* spread the calls over the snapshots and the gaps between */
    }
    return NULL;
}

/* A snapshot read a bucket at a time, yielding between, so writers get in. */
typedef struct taken {
    uint64_t cut, live_after; /* the table's version once it was read through */
    tu_snapshot rows;
} taken;

static int pit_next_slow(ember_table_snapshot *s, uint64_t *cursor, uint64_t *keys,
                         float *rows, uint64_t *scores, uint64_t *vers, size_t *got)
{
    int rc = ember_table_snapshot_export(s, cursor, EMBER_BUCKET_SLOTS, keys, rows, scores,
                                         vers, got, NULL);
    sched_yield();
    return rc;
}

static void take_slowly(ember_table *t, taken *out)
{
    ember_table_snapshot *s = NULL;
    ck_assert_int_eq(ember_table_snapshot_begin(t, NULL, NULL, &s, NULL), EMBER_OK);
    out->cut = ember_table_snapshot_cut(s);
    uint32_t rf = ember_table_row_floats(t);
    size_t cap = 1 << 16, n = 0;
    uint64_t *keys = malloc(cap * 8), *scores = malloc(cap * 8), *vers = malloc(cap * 8);
    float *rows = malloc(cap * rf * sizeof *rows);
    uint64_t cursor = 0;
    while (cursor < ember_table_snapshot_end_cursor(s)) {
        size_t got = 0;
        ck_assert_uint_ge(cap - n, EMBER_BUCKET_SLOTS);
        ck_assert_int_eq(pit_next_slow(s, &cursor, keys + n, rows + n * rf, scores + n,
                                       vers + n, &got),
                         EMBER_OK);
        n += got;
    }
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    out->live_after = st.version;
    ember_table_snapshot_end(s);
    /* sorted like tu_snapshot_take: a tiny table from the rows read */
    ember_table *copy = tu_table(DIM, 1 << 17, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                 EMBER_INIT_ZEROS);
    if (n)
        ck_assert_int_eq(ember_table_import(copy, keys, n, rows, scores, vers, NULL), EMBER_OK);
    tu_snapshot_take(copy, &out->rows);
    ck_assert_uint_eq(out->rows.n, n); /* no key read twice */
    ember_table_destroy(copy);
    free(keys);
    free(scores);
    free(vers);
    free(rows);
}

static void check_row(const tu_snapshot *s, uint64_t key, float value, uint64_t version)
{
    long i = tu_snapshot_find(s, key);
    ck_assert_msg(i >= 0, "key %llx missing from the snapshot", (unsigned long long)key);
    for (unsigned d = 0; d < s->row_floats; d++)
        ck_assert_msg(s->rows[(size_t)i * s->row_floats + d] == value,
                      "key %llx: %g in the snapshot, %g at its cut", (unsigned long long)key,
                      (double)s->rows[(size_t)i * s->row_floats + d], (double)value);
    ck_assert_uint_eq(s->versions[i], version);
}

static void run_model(ember_table *t)
{
    _Atomic int failed = 0;
    writer wr[WRITERS];
    pthread_t th[WRITERS];
    for (unsigned w = 0; w < WRITERS; w++) {
        wr[w] = (writer){t, w, &failed};
        ck_assert_int_eq(pthread_create(&th[w], NULL, write_loop, &wr[w]), 0);
    }
    taken snaps[SNAPS];
    for (int k = 0; k < SNAPS; k++) {
        usleep(5000);
        take_slowly(t, &snaps[k]);
    }
    for (unsigned w = 0; w < WRITERS; w++)
        pthread_join(th[w], NULL);
    ck_assert_int_eq(atomic_load(&failed), 0);

    /* every call's version, from its marker */
    tu_snapshot fin;
    tu_snapshot_take(t, &fin);
    ck_assert_uint_eq(fin.n, WRITERS * (MAIN + CALLS)); /* nothing evicted */
    static uint64_t ver[WRITERS][CALLS];
    for (unsigned w = 0; w < WRITERS; w++)
        for (unsigned j = 0; j < CALLS; j++) {
            long i = tu_snapshot_find(&fin, marker_key(w, j));
            ck_assert(i >= 0);
            ver[w][j] = fin.versions[i];
            ck_assert(j == 0 || ver[w][j] > ver[w][j - 1]);
        }

    int overlapped = 0;
    for (int k = 0; k < SNAPS; k++) {
        const taken *s = &snaps[k];
        size_t want = 0;
        overlapped += s->live_after > s->cut;
        for (unsigned w = 0; w < WRITERS; w++) {
            long p = -1;
            for (unsigned j = 0; j < CALLS && ver[w][j] <= s->cut; j++)
                p = j;
            if (p < 0)
                continue;
            for (unsigned i = 0; i < MAIN; i++)
                check_row(&s->rows, main_key(w, i), (float)(p + 1), ver[w][p]);
            for (long j = 0; j <= p; j++)
                check_row(&s->rows, marker_key(w, (unsigned)j), (float)(j + 1), ver[w][j]);
            want += MAIN + (size_t)p + 1;
        }
        /* nothing else: no row newer than the cut, none from after it */
        ck_assert_uint_eq(s->rows.n, want);
        for (size_t i = 0; i < s->rows.n; i++)
            ck_assert_uint_le(s->rows.versions[i], s->cut);
        tu_snapshot_free((tu_snapshot *)&s->rows);
    }
    /* writes did land while snapshots were read (or the test proved little) */
    ck_assert_int_gt(overlapped, 0);
    tu_snapshot_free(&fin);
}

START_TEST(snapshot_under_writers_equals_the_table_at_its_cut)
{
    ember_table *t = under_test(DIM, 1 << 16, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    run_model(t);
    ember_table_destroy(t);
}
END_TEST

/* A growing table: growth waits for each snapshot to end, then happens. */
START_TEST(snapshot_of_a_growing_table_under_writers)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = 16384; /* room for every key without growth: never evicts */
    c.max_capacity = 1 << 17;
    c.max_load_factor = 0.1f;
    ember_table *t = NULL;
    ck_assert_int_eq(ember_table_create(&c, backend(), &t, NULL), EMBER_OK);
    run_model(t);
    /* growth deferred by a snapshot happens at the next inserting call (the
     * writers may all have run while snapshots did) */
    uint64_t key = 99;
    float row[DIM] = {0};
    ck_assert_int_eq(ember_table_insert_or_assign(t, &key, 1, row, NULL, NULL), EMBER_OK);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_gt(st.grows, 0);
    ember_table_destroy(t);
}
END_TEST

static void fill(ember_table *t, uint64_t from, size_t n, float v)
{
    uint64_t *keys = malloc(n * sizeof *keys);
    float *vals = malloc(n * DIM * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        keys[i] = from + i;
    for (size_t i = 0; i < n * DIM; i++)
        vals[i] = v;
    ck_assert_int_eq(ember_table_insert_or_assign(t, keys, n, vals, NULL, NULL), EMBER_OK);
    free(keys);
    free(vals);
}

static int cut_calls;
static void count_cut(void *arg, uint64_t cut_epoch)
{
    (void)arg;
    ck_assert_uint_gt(cut_epoch, 0);
    cut_calls++;
}

/* Calls without keys copy every bucket not read yet: a clear, evictions and
 * erases after the cut are not seen, nor rows written after it. */
START_TEST(snapshot_ignores_clear_evict_erase_after_its_cut)
{
    ember_table *t = under_test(DIM, 4096, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LRU,
                              EMBER_INIT_ZEROS);
    fill(t, 1, 1000, 1.0f);
    tu_snapshot before, got;
    tu_snapshot_take(t, &before);
    ember_table_snapshot *s = NULL;
    cut_calls = 0;
    ck_assert_int_eq(ember_table_snapshot_begin(t, count_cut, NULL, &s, NULL), EMBER_OK);
    ck_assert_int_eq(cut_calls, 1);
    ck_assert_uint_eq(ember_table_snapshot_size(s), 1000);
    /* read a little first: part from the table, the rest from copies */
    uint64_t cursor = 0, keys[EMBER_BUCKET_SLOTS], sc[EMBER_BUCKET_SLOTS],
             vs[EMBER_BUCKET_SLOTS];
    float *rows = malloc(EMBER_BUCKET_SLOTS * ember_table_row_floats(t) * sizeof *rows);
    size_t n0 = 0;
    ck_assert_int_eq(ember_table_snapshot_export(s, &cursor, EMBER_BUCKET_SLOTS, keys, rows, sc,
                                                 vs, &n0, NULL),
                     EMBER_OK);
    uint64_t erase_keys[3] = {1, 2, 500}, erased = 0;
    ck_assert_int_eq(ember_table_erase(t, erase_keys, 3, &erased, NULL), EMBER_OK);
    ck_assert_uint_eq(erased, 3);
    fill(t, 5000, 300, 7.0f);
    uint64_t evicted = 0;
    ck_assert_int_eq(ember_table_evict_to_size(t, 10, &evicted, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_clear(t, NULL), EMBER_OK);
    fill(t, 9000, 50, 9.0f);
    ck_assert_uint_eq(ember_table_size(t), 50);
    /* the rest of the snapshot, then the first bucket's rows back in */
    tu_snapshot rest;
    tu_snapshot_read(s, ember_table_row_floats(t), &rest);
    ember_table_snapshot_end(s);
    ember_table *copy = tu_table(DIM, 4096, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LRU,
                                 EMBER_INIT_ZEROS);
    if (n0)
        ck_assert_int_eq(ember_table_import(copy, keys, n0, rows, sc, vs, NULL), EMBER_OK);
    if (rest.n)
        ck_assert_int_eq(ember_table_import(copy, rest.keys, rest.n, rest.rows, rest.scores,
                                            rest.versions, NULL),
                         EMBER_OK);
    tu_snapshot_take(copy, &got);
    ck_assert(tu_snapshot_equal(&before, &got));
    /* and the table itself kept what was written after the cut */
    ck_assert_uint_eq(ember_table_size(t), 50);
    tu_snapshot_free(&before);
    tu_snapshot_free(&got);
    tu_snapshot_free(&rest);
    free(rows);
    ember_table_destroy(copy);
    ember_table_destroy(t);
}
END_TEST

START_TEST(growth_waits_for_the_snapshot)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = 1024;
    c.max_capacity = 1 << 16;
    c.max_load_factor = 0.5f;
    ember_table *t = NULL;
    ck_assert_int_eq(ember_table_create(&c, backend(), &t, NULL), EMBER_OK);
    fill(t, 1, 400, 1.0f);
    tu_snapshot before, got;
    tu_snapshot_take(t, &before);
    ember_table_snapshot *s = NULL;
    ck_assert_int_eq(ember_table_snapshot_begin(t, NULL, NULL, &s, NULL), EMBER_OK);
    fill(t, 10000, 300, 2.0f); /* past the load factor: would grow */
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.grows, 0);
    ck_assert_int_eq(ember_table_reserve(t, 5000, NULL), EMBER_OK);
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.grows, 0);
    tu_snapshot_read(s, ember_table_row_floats(t), &got);
    ck_assert(tu_snapshot_equal(&before, &got));
    ember_table_snapshot_end(s);
    fill(t, 20000, 1, 3.0f); /* the next inserting call grows it */
    ember_table_stats_get(t, &st);
    ck_assert_uint_gt(st.grows, 0);
    tu_snapshot_free(&before);
    tu_snapshot_free(&got);
    ember_table_destroy(t);
}
END_TEST

START_TEST(snapshot_export_refuses_bad_arguments)
{
    ember_table *t = under_test(DIM, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ember_table_snapshot *s = NULL;
    ember_error err;
    ck_assert_int_eq(ember_table_snapshot_begin(NULL, NULL, NULL, &s, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_snapshot_begin(t, NULL, NULL, &s, NULL), EMBER_OK);
    uint64_t cursor = 0, keys[EMBER_BUCKET_SLOTS];
    float rows[EMBER_BUCKET_SLOTS * DIM];
    size_t n = 1;
    ck_assert_int_eq(ember_table_snapshot_export(s, &cursor, EMBER_BUCKET_SLOTS - 1, keys, rows,
                                                 NULL, NULL, &n, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_uint_eq(n, 0);
    cursor = ember_table_snapshot_end_cursor(s) + 1;
    ck_assert_int_eq(ember_table_snapshot_export(s, &cursor, EMBER_BUCKET_SLOTS, keys, rows,
                                                 NULL, NULL, &n, &err),
                     EMBER_INVALID_ARGUMENT);
    ember_table_snapshot_end(s);
    ember_table_snapshot_end(NULL);
    ember_table_destroy(t);
}
END_TEST

/* Expiry waits for a snapshot (it would copy the whole table), then catches up. */
START_TEST(expire_waits_for_the_snapshot)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = 1024;
    c.ttl_seconds = 1;
    ember_table *t = NULL;
    ck_assert_int_eq(ember_table_create(&c, backend(), &t, NULL), EMBER_OK);
    fill(t, 1, 100, 1.0f);
    const uint64_t t0 = UINT64_C(1000000000000);
    uint64_t gone = 9;
    ck_assert_int_eq(ember_table_expire(t, t0, &gone, NULL), EMBER_OK); /* marks now */
    ck_assert_uint_eq(gone, 0);
    ember_table_snapshot *s = NULL;
    ck_assert_int_eq(ember_table_snapshot_begin(t, NULL, NULL, &s, NULL), EMBER_OK);
    ck_assert_int_eq(ember_table_expire(t, t0 + UINT64_C(5000000000), &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 0);
    ck_assert_uint_eq(ember_table_size(t), 100);
    tu_snapshot got;
    tu_snapshot_read(s, ember_table_row_floats(t), &got);
    ck_assert_uint_eq(got.n, 100);
    ember_table_snapshot_end(s);
    ck_assert_int_eq(ember_table_expire(t, t0 + UINT64_C(5000000000), &gone, NULL), EMBER_OK);
    ck_assert_uint_eq(gone, 100);
    tu_snapshot_free(&got);
    ember_table_destroy(t);
}
END_TEST

/* One cut for two tables; a thread's writes tell which side of it they ran. */
START_TEST(one_cut_for_several_tables_and_the_cut_epoch)
{
    ember_table *a = under_test(DIM, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ember_table *b = under_test(DIM, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    fill(a, 1, 10, 1.0f);
    fill(b, 1, 20, 1.0f);
    uint64_t before = ember_table_thread_cut_epoch();
    ember_table *ts[2] = {b, a};
    ember_table_snapshot *s[2];
    ember_error err;
    ember_table *twice[2] = {a, a};
    ck_assert_int_eq(ember_table_snapshot_begin_many(twice, 2, NULL, NULL, s, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_snapshot_begin_many(ts, 2, NULL, NULL, s, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_snapshot_size(s[0]), 20); /* out[i] is ts[i]'s */
    ck_assert_uint_eq(ember_table_snapshot_size(s[1]), 10);
    uint64_t e = ember_table_snapshot_cut_epoch(s[0]);
    ck_assert_uint_eq(ember_table_snapshot_cut_epoch(s[1]), e);
    ck_assert_uint_lt(before, e);
    fill(a, 100, 5, 2.0f);
    ck_assert_uint_ge(ember_table_thread_cut_epoch(), e);
    tu_snapshot ra, rb;
    tu_snapshot_read(s[1], ember_table_row_floats(a), &ra);
    tu_snapshot_read(s[0], ember_table_row_floats(b), &rb);
    ck_assert_uint_eq(ra.n, 10);
    ck_assert_uint_eq(rb.n, 20);
    ember_table_snapshot_end(s[0]);
    ember_table_snapshot_end(s[1]);
    tu_snapshot_free(&ra);
    tu_snapshot_free(&rb);
    ember_table_destroy(a);
    ember_table_destroy(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *c = tcase_create("snapshot");
    tcase_set_timeout(c, 240);
    tcase_add_test(c, snapshot_under_writers_equals_the_table_at_its_cut);
    tcase_add_test(c, snapshot_of_a_growing_table_under_writers);
    tcase_add_test(c, snapshot_ignores_clear_evict_erase_after_its_cut);
    tcase_add_test(c, growth_waits_for_the_snapshot);
    tcase_add_test(c, snapshot_export_refuses_bad_arguments);
    tcase_add_test(c, one_cut_for_several_tables_and_the_cut_epoch);
    tcase_add_test(c, expire_waits_for_the_snapshot);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
#ifdef EMBER_SNAPSHOT_BACKEND_GPU
    ember_error err;
    int devices = 0;
    if (ember_cuda_device_count(&devices, &err) != EMBER_OK) {
        fprintf(stderr, "gpu.snapshot: device count failed: %s\n", err.message);
        return 1;
    }
    if (devices == 0) {
        printf("SKIPPED: no CUDA device visible\n");
        return 77;
    }
    /* The device check initialised CUDA here, and a forked child cannot use it. */
    setenv("CK_FORK", "no", 1);
#endif
    return tu_run(suite());
}

/*
 * test_gpu_table_api.c — the GPU backend's own contract (cuda/gpu_table.h): its
 * stream-ordered device API, concurrency, refusals, checkpoints, creation
 * failures and whole-table calls.
 *
 * Exits 77 (ctest: skipped) where no CUDA device is visible, after checking that
 * creating a GPU table there fails with UNAVAILABLE.
 *
 * Test cases (CK_RUN_CASE=<name> runs one):
 *   streams   the device API from several host threads, each with its own stream
 *             and scratch, on the same keys at once, and the table API from
 *             several threads: sums exact, scores exact, rows never torn under
 *             readers (every write adds the same integer to every element), with
 *             find's default tile and with one lane per key (find_lanes = 1); the
 *             find_lanes widths give the same results.
 *   reserved  reserved keys and bad input: refused whole by the table API with
 *             nothing changed; inside device batches never stored, found = 0,
 *             the initial row returned, the other keys as on the CPU.
 *   ckpt      checkpoints saved by one backend and loaded by the other.
 *   errors    creation that cannot get its memory: RESOURCE_EXHAUSTED, device
 *             memory given back, the device still usable.
 *   whole     whole-table calls (clear, erase, evict, export filters and paging,
 *             stats) and the single-table behaviours of test_table.c.
 *
 * Rows compare as gpu_table_util.h says; values asserted, never durations.
 */
#define _GNU_SOURCE /* mkdtemp */

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "cuda/device.h"
#include "cuda/gpu_table.h"
#include "gpu_table_util.h"
#include "storage/checkpoint.h"

#define SLOTS EMBER_BUCKET_SLOTS

/* ---- concurrency -------------------------------------------------------------------- */

/* Writers add exactly 1 per occurrence (SGD, lr 1, gradient 1.0 in every element,
 * CONSTANT 0 initial rows), so a row is always -k in every element for an integer
 * k: a row whose elements differ is torn. */
#define ST_DIM 64
#define ST_KEYS 64
#define ST_DUP 32          /* keys[0..ST_DUP) appear twice in every call */
#define ST_N (ST_KEYS + ST_DUP)
#define ST_WRITERS 4
#define ST_CALLS 300

typedef struct st_shared {
    ember_table *t;
    ember_gpu_table *g;
    uint64_t keys[ST_N];
    _Atomic int writers_left;
    _Atomic uint64_t version;
    _Atomic int failed;
    char why[512];
    uint64_t reads;
} st_shared;

static void st_fail(st_shared *sh, const char *fmt, ...)
{
    int no = 0;
    if (!atomic_compare_exchange_strong(&sh->failed, &no, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->why, sizeof sh->why, fmt, ap);
    va_end(ap);
}

/* 0 if rows[n × ST_DIM] (found[n]) are whole: every element equal, an integer in
 * [-max, 0], found; else fails `sh` with the first bad row. */
static int st_rows_ok(st_shared *sh, const uint64_t *keys, const float *rows,
                      const uint8_t *found, size_t n, float max, const char *who)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = rows + i * ST_DIM;
        if (!found[i]) {
            st_fail(sh, "%s: key %llu not found", who, (unsigned long long)keys[i]);
            return 1;
        }
        if (r[0] != floorf(r[0]) || r[0] > 0.0f || r[0] < -max) {
            st_fail(sh, "%s: key %llu element 0 is %.9g", who, (unsigned long long)keys[i], r[0]);
            return 1;
        }
        for (uint32_t j = 1; j < ST_DIM; j++)
            if (r[j] != r[0]) {
                st_fail(sh, "%s: torn row: key %llu element 0 is %.9g, element %u is %.9g", who,
                        (unsigned long long)keys[i], r[0], j, r[j]);
                return 1;
            }
    }
    return 0;
}

static void *st_device_writer(void *arg)
{
    st_shared *sh = arg;
    cudaStream_t st = NULL;
    ember_gpu_scratch *sc = NULL;
    uint64_t *dk = NULL;
    float *dg = NULL, *g = malloc((size_t)ST_N * ST_DIM * sizeof *g);
    ember_error err;
    cudaError_t ce;
    for (size_t i = 0; i < (size_t)ST_N * ST_DIM; i++)
        g[i] = 1.0f;
    if ((ce = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&dk, sizeof sh->keys)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&dg, (size_t)ST_N * ST_DIM * sizeof *g)) != cudaSuccess ||
        (ce = cudaMemcpy(dk, sh->keys, sizeof sh->keys, cudaMemcpyHostToDevice)) != cudaSuccess ||
        (ce = cudaMemcpy(dg, g, (size_t)ST_N * ST_DIM * sizeof *g, cudaMemcpyHostToDevice)) !=
            cudaSuccess) {
        st_fail(sh, "writer setup: %s", cudaGetErrorName(ce));
        goto out;
    }
    if (ember_gpu_scratch_create(sh->g, ST_N, &sc, &err) != EMBER_OK) {
        st_fail(sh, "scratch: %s", err.message);
        goto out;
    }
    for (int c = 0; c < ST_CALLS; c++) {
        ember_op op;
        memset(&op, 0, sizeof op);
        op.score.policy = EMBER_SCORE_LFU;
        op.version = atomic_fetch_add(&sh->version, 1) + 1;
        if (ember_gpu_apply_gradients_async(sh->g, sc, &op, dk, ST_N, dg, NULL, &err, st) !=
            EMBER_OK) {
            st_fail(sh, "apply_gradients call %d: %s", c, err.message);
            goto out;
        }
    }
    if ((ce = cudaStreamSynchronize(st)) != cudaSuccess) {
        st_fail(sh, "writer stream: %s", cudaGetErrorName(ce));
        goto out;
    }
    ember_gpu_counts cnt;
    if (ember_gpu_scratch_counts(sc, st, &cnt, &err) != EMBER_OK)
        st_fail(sh, "scratch counts: %s", err.message);
    else if (cnt.size_delta != 0 || cnt.evictions || cnt.refused || cnt.admission_drops)
        st_fail(sh, "last call counted size_delta %lld, evictions %llu, refused %llu, drops %llu",
                (long long)cnt.size_delta, (unsigned long long)cnt.evictions,
                (unsigned long long)cnt.refused, (unsigned long long)cnt.admission_drops);
out:
    ember_gpu_scratch_destroy(sc);
    cudaFree(dk);
    cudaFree(dg);
    if (st)
        cudaStreamDestroy(st);
    free(g);
    atomic_fetch_sub(&sh->writers_left, 1);
    return NULL;
}

/* Finds the keys (and one missing key) on its own stream until the writers are
 * done, checking every row it reads. */
static void *st_device_reader(void *arg)
{
    st_shared *sh = arg;
    enum { N = ST_KEYS + 1 };
    cudaStream_t st = NULL;
    uint64_t keys[N], *dk = NULL;
    float *dv = NULL, *hv = malloc((size_t)N * ST_DIM * sizeof *hv);
    uint8_t *df = NULL, hf[N];
    ember_error err;
    cudaError_t ce;
    const float max = (float)(ST_WRITERS * ST_CALLS * 2);
    memcpy(keys, sh->keys, ST_KEYS * sizeof keys[0]);
    keys[ST_KEYS] = 999999; /* never stored */
    if ((ce = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&dk, sizeof keys)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&dv, (size_t)N * ST_DIM * sizeof *hv)) != cudaSuccess ||
        (ce = cudaMalloc((void **)&df, N)) != cudaSuccess ||
        (ce = cudaMemcpy(dk, keys, sizeof keys, cudaMemcpyHostToDevice)) != cudaSuccess) {
        st_fail(sh, "reader setup: %s", cudaGetErrorName(ce));
        goto out;
    }
    do {
        if (ember_gpu_find_async(sh->g, dk, N, dv, df, &err, st) != EMBER_OK) {
            st_fail(sh, "find: %s", err.message);
            break;
        }
        if ((ce = cudaMemcpyAsync(hv, dv, (size_t)N * ST_DIM * sizeof *hv, cudaMemcpyDeviceToHost,
                                  st)) != cudaSuccess ||
            (ce = cudaMemcpyAsync(hf, df, N, cudaMemcpyDeviceToHost, st)) != cudaSuccess ||
            (ce = cudaStreamSynchronize(st)) != cudaSuccess) {
            st_fail(sh, "reader copy: %s", cudaGetErrorName(ce));
            break;
        }
        sh->reads++;
        if (st_rows_ok(sh, sh->keys, hv, hf, ST_KEYS, max, "device find"))
            break;
        if (hf[ST_KEYS] != 0 || hv[ST_KEYS * ST_DIM] != 0.0f) {
            st_fail(sh, "device find: missing key found %d, value %.9g", hf[ST_KEYS],
                    hv[ST_KEYS * ST_DIM]);
            break;
        }
    } while (atomic_load(&sh->writers_left) > 0);
out:
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(df);
    if (st)
        cudaStreamDestroy(st);
    free(hv);
    return NULL;
}

static ember_table *st_table(st_shared *sh, unsigned find_lanes)
{
    ember_error err;
    ember_table_config c = gt_config(ST_DIM, 16 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_CONSTANT);
    c.optim.lr = 1.0f;
    c.init.a = 0.0f;
    const ember_table_backend *b = ember_table_gpu_backend_find_lanes(find_lanes);
    ck_assert_ptr_nonnull(b);
    ember_table *t = gt_table(&c, b);
    memset(sh, 0, sizeof *sh);
    sh->t = t;
    sh->g = ember_gpu_table_of(t);
    ck_assert_ptr_nonnull(sh->g);
    for (int i = 0; i < ST_KEYS; i++)
        sh->keys[i] = (uint64_t)i * 1000003u + 17u;
    for (int i = 0; i < ST_DUP; i++)
        sh->keys[ST_KEYS + i] = sh->keys[i];
    /* Every key exists before the race (LFU score 1, rows 0). */
    float *zeros = calloc((size_t)ST_KEYS * ST_DIM, sizeof *zeros);
    CK(ember_table_insert_or_assign(t, sh->keys, ST_KEYS, zeros, NULL, &err), err);
    free(zeros);
    return t;
}

/* Each key's row is -(its occurrences so far) in every element, its LFU score 1
 * + its occurrences. */
static void st_expect_sums(st_shared *sh, uint64_t calls_per_key)
{
    GT_EXPECT(!atomic_load(&sh->failed), "%s", sh->why);
    tu_snapshot s;
    tu_snapshot_take(sh->t, &s);
    ck_assert_uint_eq(s.n, ST_KEYS);
    for (int i = 0; i < ST_KEYS; i++) {
        long at = tu_snapshot_find(&s, sh->keys[i]);
        GT_EXPECT(at >= 0, "key %llu lost", (unsigned long long)sh->keys[i]);
        uint64_t occ = calls_per_key * (i < ST_DUP ? 2u : 1u);
        for (uint32_t j = 0; j < ST_DIM; j++)
            GT_EXPECT(s.rows[(size_t)at * ST_DIM + j] == -(float)occ,
                      "key %llu element %u: %.9g, want -%llu", (unsigned long long)sh->keys[i],
                      j, s.rows[(size_t)at * ST_DIM + j], (unsigned long long)occ);
        GT_EXPECT(s.scores[at] == 1 + occ, "key %llu: LFU score %llu, want %llu",
                  (unsigned long long)sh->keys[i], (unsigned long long)s.scores[at],
                  (unsigned long long)(1 + occ));
    }
    tu_snapshot_free(&s);
    ck_assert_uint_eq(ember_table_size(sh->t), ST_KEYS);
}

static void st_device_race(unsigned find_lanes)
{
    static st_shared sh;
    st_table(&sh, find_lanes);
    atomic_store(&sh.writers_left, ST_WRITERS);
    atomic_store(&sh.version, 100);
    pthread_t w[ST_WRITERS], r;
    for (int i = 0; i < ST_WRITERS; i++)
        ck_assert_int_eq(pthread_create(&w[i], NULL, st_device_writer, &sh), 0);
    ck_assert_int_eq(pthread_create(&r, NULL, st_device_reader, &sh), 0);
    for (int i = 0; i < ST_WRITERS; i++)
        pthread_join(w[i], NULL);
    pthread_join(r, NULL);
    printf("gpu.table streams (find_lanes %u): %d writer streams × %d calls, %llu reads beside "
           "them\n", find_lanes ? find_lanes : 8u, ST_WRITERS, ST_CALLS,
           (unsigned long long)sh.reads);
    fflush(stdout);
    st_expect_sums(&sh, (uint64_t)ST_WRITERS * ST_CALLS);
    ember_table_destroy(sh.t);
}

START_TEST(streams_device_api_sums_exact_rows_never_torn)
{
    st_device_race(0);
}
END_TEST

/* The same with find one lane per key (find_lanes = 1): its sequence checks, per
 * lane with one fence per warp, must keep rows whole too. */
START_TEST(streams_find_lanes1_rows_never_torn)
{
    st_device_race(1);
}
END_TEST

/* The same through ember_table_* from host threads: the backend's per-call
 * staging contexts, and find and export beside the writers. */
static void *st_host_writer(void *arg)
{
    st_shared *sh = arg;
    float *g = malloc((size_t)ST_N * ST_DIM * sizeof *g);
    ember_error err;
    for (size_t i = 0; i < (size_t)ST_N * ST_DIM; i++)
        g[i] = 1.0f;
    for (int c = 0; c < ST_CALLS; c++)
        if (ember_table_apply_gradients(sh->t, sh->keys, ST_N, g, NULL, &err) != EMBER_OK) {
            st_fail(sh, "apply_gradients call %d: %s", c, err.message);
            break;
        }
    free(g);
    atomic_fetch_sub(&sh->writers_left, 1);
    return NULL;
}

static void *st_host_reader(void *arg)
{
    st_shared *sh = arg;
    float *v = malloc((size_t)ST_KEYS * ST_DIM * sizeof *v);
    float *rows = malloc((size_t)4096 * ST_DIM * sizeof *rows);
    uint64_t *ek = malloc(4096 * sizeof *ek);
    uint8_t found[ST_KEYS], all[4096];
    ember_error err;
    const float max = (float)(ST_WRITERS * ST_CALLS * 2);
    memset(all, 1, sizeof all);
    do {
        if (ember_table_find(sh->t, sh->keys, ST_KEYS, v, found, &err) != EMBER_OK) {
            st_fail(sh, "find: %s", err.message);
            break;
        }
        if (st_rows_ok(sh, sh->keys, v, found, ST_KEYS, max, "host find"))
            break;
        uint64_t cursor = 0;
        size_t got = 0;
        if (ember_table_export(sh->t, NULL, &cursor, 4096, ek, rows, NULL, NULL, &got, &err) !=
            EMBER_OK) {
            st_fail(sh, "export: %s", err.message);
            break;
        }
        if (got != ST_KEYS) {
            st_fail(sh, "export beside writers: %zu rows", got);
            break;
        }
        if (st_rows_ok(sh, ek, rows, all, got, max, "export"))
            break;
        sh->reads++;
    } while (atomic_load(&sh->writers_left) > 0);
    free(v);
    free(rows);
    free(ek);
    return NULL;
}

static void st_host_race(unsigned find_lanes)
{
    static st_shared sh;
    st_table(&sh, find_lanes);
    atomic_store(&sh.writers_left, ST_WRITERS);
    pthread_t w[ST_WRITERS], r;
    for (int i = 0; i < ST_WRITERS; i++)
        ck_assert_int_eq(pthread_create(&w[i], NULL, st_host_writer, &sh), 0);
    ck_assert_int_eq(pthread_create(&r, NULL, st_host_reader, &sh), 0);
    for (int i = 0; i < ST_WRITERS; i++)
        pthread_join(w[i], NULL);
    pthread_join(r, NULL);
    printf("gpu.table host threads (find_lanes %u): %d writers × %d calls, %llu find+export "
           "rounds beside them\n", find_lanes ? find_lanes : 8u, ST_WRITERS, ST_CALLS,
           (unsigned long long)sh.reads);
    fflush(stdout);
    st_expect_sums(&sh, (uint64_t)ST_WRITERS * ST_CALLS);
    ember_table_destroy(sh.t);
}

START_TEST(streams_host_threads_sums_exact_rows_never_torn)
{
    st_host_race(0);
}
END_TEST

START_TEST(streams_host_threads_find_lanes1_rows_never_torn)
{
    st_host_race(1);
}
END_TEST

/* A scratch serves calls of up to its capacity; one key more is refused whole. */
START_TEST(streams_scratch_capacity_enforced)
{
    ember_error err;
    ember_table_config c = gt_config(4, 8 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu());
    ember_gpu_table *g = ember_gpu_table_of(t);
    ck_assert_ptr_nonnull(g);
    ember_gpu_scratch *s = NULL;
    CK(ember_gpu_scratch_create(g, 16, &s, &err), err);
    ck_assert_uint_ge(ember_gpu_scratch_capacity(s), 16);
    size_t cap = ember_gpu_scratch_capacity(s);
    uint64_t *hk = malloc((cap + 1) * sizeof *hk), *dk = NULL;
    for (size_t i = 0; i <= cap; i++)
        hk[i] = i + 1;
    float *dv = NULL;
    CUDA_CK(cudaMalloc((void **)&dk, (cap + 1) * sizeof *hk));
    CUDA_CK(cudaMalloc((void **)&dv, (cap + 1) * 4 * sizeof(float)));
    CUDA_CK(cudaMemset(dv, 0, (cap + 1) * 4 * sizeof(float)));
    CUDA_CK(cudaMemcpy(dk, hk, (cap + 1) * sizeof *hk, cudaMemcpyHostToDevice));
    cudaStream_t st;
    CUDA_CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    ember_op op;
    memset(&op, 0, sizeof op);
    op.score.policy = EMBER_SCORE_LFU;
    op.version = 1;
    ck_assert_int_eq(ember_gpu_insert_or_assign_async(g, s, &op, dk, cap + 1, dv, NULL, &err, st),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_gpu_apply_gradients_async(g, s, &op, dk, cap + 1, dv, NULL, &err, st),
                     EMBER_INVALID_ARGUMENT);
    CUDA_CK(cudaStreamSynchronize(st));
    ck_assert_uint_eq(ember_table_size(t), 0);
    CK(ember_gpu_insert_or_assign_async(g, s, &op, dk, cap, dv, NULL, &err, st), err);
    ember_gpu_counts cnt;
    CK(ember_gpu_scratch_counts(s, st, &cnt, &err), err);
    ck_assert_int_eq(cnt.size_delta, (int64_t)cap);
    ck_assert_uint_eq(ember_gpu_size(g), cap);
    ck_assert_uint_eq(ember_table_size(t), cap);
    CUDA_CK(cudaStreamDestroy(st));
    CUDA_CK(cudaFree(dk));
    CUDA_CK(cudaFree(dv));
    free(hk);
    ember_gpu_scratch_destroy(s);
    ember_table_destroy(t);
}
END_TEST

/* ember_gpu_table_options.find_lanes: a 16-lane find and a one-lane-per-key find
 * give what the default 8-lane one does, bit for bit (stored rows, missing and
 * reserved keys' initial rows, found flags), on the 16-byte and the scalar row
 * paths (dim not a multiple of 4, or an output array off 16-byte alignment), for
 * rows narrower and wider than a warp; other widths are refused. */
START_TEST(streams_find_lanes_option_same_results)
{
    enum { N = 1000, MAXDIM = 200, K = 3 };
    ember_error err;
    ember_table_config c = gt_config(MAXDIM, 64 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                     EMBER_INIT_UNIFORM);
    ember_gpu_table *g = NULL;
    const ember_gpu_table_options bad[2] = {{12}, {2}};
    for (int b = 0; b < 2; b++) {
        ck_assert_int_eq(ember_gpu_table_create(&c, &bad[b], &g, &err), EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_null(g);
    }
    ck_assert_ptr_null(ember_table_gpu_backend_find_lanes(2));
    ck_assert_ptr_eq(ember_table_gpu_backend_find_lanes(8), gt_gpu());

    const size_t out_floats = (size_t)N * MAXDIM + 4;
    uint64_t *hk = malloc(N * sizeof *hk), *dk = NULL;
    float *hv = malloc((size_t)N * MAXDIM * sizeof *hv), *dv = NULL, *dout[K], *hout[K];
    uint8_t *df[K], hf[K][N];
    for (size_t i = 0; i < N; i++)
        hk[i] = 7919 * (uint64_t)i + 1;
    hk[N - 1] = EMBER_KEY_RESERVED_MIN; /* never stored: found 0, initial row */
    hk[N - 2] = hk[3];                  /* a stored key twice in one call */
    for (size_t i = 0; i < (size_t)N * MAXDIM; i++)
        hv[i] = (float)i * 0.5f;
    CUDA_CK(cudaMalloc((void **)&dk, N * sizeof *hk));
    CUDA_CK(cudaMalloc((void **)&dv, (size_t)N * MAXDIM * sizeof *hv));
    CUDA_CK(cudaMemcpy(dk, hk, N * sizeof *hk, cudaMemcpyHostToDevice));
    CUDA_CK(cudaMemcpy(dv, hv, (size_t)N * MAXDIM * sizeof *hv, cudaMemcpyHostToDevice));
    for (int k = 0; k < K; k++) {
        CUDA_CK(cudaMalloc((void **)&dout[k], out_floats * sizeof(float)));
        CUDA_CK(cudaMalloc((void **)&df[k], N));
        hout[k] = malloc(out_floats * sizeof(float));
    }
    cudaStream_t st;
    CUDA_CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    ember_op op;
    memset(&op, 0, sizeof op);
    op.score.policy = EMBER_SCORE_LRU;
    op.version = 1;

    /* dim, and where in the output array the rows start (1: off 16-byte alignment) */
    static const uint32_t shapes[][2] = {{12, 0}, {10, 0}, {12, 1}, {37, 0}, {200, 0}};
    const ember_gpu_table_options opt[K] = {{0}, {16}, {1}};
    for (size_t d = 0; d < sizeof shapes / sizeof shapes[0]; d++) {
        c.dim = shapes[d][0];
        size_t off = shapes[d][1], nf = (size_t)N * c.dim;
        for (int k = 0; k < K; k++) {
            ember_gpu_scratch *s = NULL;
            CK(ember_gpu_table_create(&c, &opt[k], &g, &err), err);
            CK(ember_gpu_scratch_create(g, N, &s, &err), err);
            CK(ember_gpu_insert_or_assign_async(g, s, &op, dk, N / 2, dv, NULL, &err, st), err);
            CK(ember_gpu_find_async(g, dk, N, dout[k] + off, df[k], &err, st), err);
            CUDA_CK(cudaMemcpyAsync(hout[k], dout[k] + off, nf * sizeof(float),
                                    cudaMemcpyDeviceToHost, st));
            CUDA_CK(cudaMemcpyAsync(hf[k], df[k], N, cudaMemcpyDeviceToHost, st));
            CUDA_CK(cudaStreamSynchronize(st));
            ember_gpu_scratch_destroy(s);
            ember_gpu_table_destroy(g);
            g = NULL;
        }
        for (size_t i = 0; i < N; i++)
            GT_EXPECT(hf[0][i] == (i < N / 2 || i == N - 2) && hf[1][i] == hf[0][i] &&
                          hf[2][i] == hf[0][i],
                      "dim %u key %zu: found %d (8 lanes), %d (16 lanes), %d (1 lane)", c.dim, i,
                      hf[0][i], hf[1][i], hf[2][i]);
        for (size_t i = 0; i < (size_t)N / 2 * c.dim; i++)
            GT_EXPECT(hout[0][i] == hv[i], "dim %u float %zu: %g stored, %g found", c.dim, i,
                      (double)hv[i], (double)hout[0][i]);
        float want[MAXDIM];
        ember_init_row(&c.init, c.seed, hk[N - 1], want, c.dim);
        ck_assert_msg(memcmp(hout[0] + (size_t)(N - 1) * c.dim, want, c.dim * sizeof(float)) == 0,
                      "dim %u: a reserved key's row is not its initial row", c.dim);
        for (int k = 1; k < K; k++) {
            size_t at = gt_first_diff(hout[0], hout[k], nf, 0.0f);
            ck_assert_msg(at == nf, "dim %u offset %zu: find_lanes %u differs from 8 at key %zu "
                          "element %zu: %.9g, 8 lanes %.9g", c.dim, off, opt[k].find_lanes,
                          at / c.dim, at % c.dim, (double)hout[k][at], (double)hout[0][at]);
        }
    }
    CUDA_CK(cudaStreamDestroy(st));
    for (int k = 0; k < K; k++) {
        CUDA_CK(cudaFree(dout[k]));
        CUDA_CK(cudaFree(df[k]));
        free(hout[k]);
    }
    CUDA_CK(cudaFree(dk));
    CUDA_CK(cudaFree(dv));
    free(hk);
    free(hv);
}
END_TEST

/* ---- reserved keys and bad input ----------------------------------------------------- */

static const uint64_t reserved_keys[4] = {EMBER_KEY_EMPTY, EMBER_KEY_ERASED, EMBER_KEY_LOCKED,
                                          EMBER_KEY_RESERVED_MIN};

/* A GPU table holding keys 1..300 with 1..150 erased again (tombstones), and
 * the same built on the CPU. */
static void seeded_pair(ember_table_config *c, ember_table **cpu, ember_table **gpu)
{
    ember_error err;
    *c = gt_config(4, 8 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LFU, EMBER_INIT_UNIFORM);
    c->optim.lr = 1.0f;
    *cpu = gt_table(c, gt_cpu());
    *gpu = gt_table(c, gt_gpu());
    uint64_t keys[300], erased = 0;
    float v[300 * 4];
    for (int i = 0; i < 300; i++)
        keys[i] = (uint64_t)i + 1;
    for (int i = 0; i < 300 * 4; i++)
        v[i] = (float)i * 0.125f;
    ember_table *both[2] = {*cpu, *gpu};
    for (int s = 0; s < 2; s++) {
        CK(ember_table_insert_or_assign(both[s], keys, 300, v, NULL, &err), err);
        CK(ember_table_erase(both[s], keys, 150, &erased, &err), err);
        ck_assert_uint_eq(erased, 150);
    }
}

START_TEST(reserved_keys_refused_whole_by_table_api)
{
    ember_error err;
    ember_table_config c;
    ember_table *cpu, *t;
    seeded_pair(&c, &cpu, &t);
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    ember_table_stats st0, st1;
    ember_table_stats_get(t, &st0);
    uint64_t keys[3] = {1000, 200, 0}, scores[3] = {1, 2, 3}, vers[3] = {1, 2, 3}, n;
    float v[3 * 4], rows[3 * 4], out[3 * 4];
    uint8_t found[3];
    for (int i = 0; i < 12; i++)
        v[i] = rows[i] = 1.0f;
    for (int r = 0; r < 4; r++) {
        keys[2] = reserved_keys[r];
        int rcs[9];
        rcs[0] = ember_table_find(t, keys, 3, out, found, &err);
        rcs[1] = ember_table_find_or_insert(t, keys, 3, out, found, NULL, &err);
        rcs[2] = ember_table_insert_or_assign(t, keys, 3, v, NULL, &err);
        rcs[3] = ember_table_assign(t, keys, 3, v, found, NULL, &err);
        rcs[4] = ember_table_accum(t, keys, 3, v, found, &err);
        rcs[5] = ember_table_apply_gradients(t, keys, 3, v, NULL, &err);
        rcs[6] = ember_table_erase(t, keys, 3, &n, &err);
        rcs[7] = ember_table_import(t, keys, 3, rows, scores, vers, &err);
        ck_assert_ptr_nonnull(strstr(err.message, "reserved"));
        rcs[8] = ember_table_find(t, keys + 2, 1, out, found, &err);
        for (int o = 0; o < 9; o++)
            GT_EXPECT(rcs[o] == EMBER_INVALID_ARGUMENT, "reserved key %#llx, call %d: %s",
                      (unsigned long long)reserved_keys[r], o, ember_status_name(rcs[o]));
    }
    /* The largest usable key works. */
    keys[2] = EMBER_KEY_RESERVED_MIN - 1;
    CK(ember_table_find(t, keys, 3, out, found, &err), err);
    ck_assert_int_eq(found[2], 0);
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    ember_table_stats_get(t, &st1);
    ck_assert_uint_eq(st1.version, st0.version);
    ck_assert_uint_eq(st1.size, st0.size);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    ember_table_destroy(t);
    ember_table_destroy(cpu);
}
END_TEST

/* Bad input through the table API on the GPU backend: refused, nothing changed. */
START_TEST(bad_input_refused_table_unchanged)
{
    ember_error err;
    ember_table_config c;
    ember_table *cpu, *t;
    seeded_pair(&c, &cpu, &t);
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    uint64_t keys[3] = {151, 152, 2000}, cursor = 0, ek[SLOTS];
    float g[3 * 4], out[SLOTS * 4];
    size_t got;
    for (int i = 0; i < 12; i++)
        g[i] = 0.5f;
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        g[2 * 4 + 1] = bad[b];
        ck_assert_int_eq(ember_table_apply_gradients(t, keys, 3, g, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err.message, "index 2"));
        ck_assert_int_eq(ember_table_accum(t, keys, 3, g, NULL, &err), EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_insert_or_assign(t, keys, 3, g, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(ember_table_assign(t, keys, 3, g, NULL, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
    }
    ck_assert_int_eq(ember_table_find(t, keys, 3, NULL, NULL, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_find_or_insert(t, NULL, 3, out, NULL, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_apply_gradients(t, keys, 3, NULL, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_table_export(t, NULL, &cursor, SLOTS - 1, ek, out, NULL, NULL, &got,
                                        &err), EMBER_INVALID_ARGUMENT);
    cursor = ember_table_export_end(t) + 1;
    ck_assert_int_eq(ember_table_export(t, NULL, &cursor, SLOTS, ek, out, NULL, NULL, &got, &err),
                     EMBER_INVALID_ARGUMENT);
    /* Empty batches are no-ops. */
    CK(ember_table_apply_gradients(t, keys, 0, g, NULL, &err), err);
    CK(ember_table_find(t, keys, 0, out, NULL, &err), err);
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    ember_table_destroy(t);
    ember_table_destroy(cpu);
}
END_TEST

/* Non-finite gradients zeroed by policy: the GPU gets the cleaned copy. */
START_TEST(nonfinite_zeroed_like_cpu)
{
    ember_error err;
    ember_table_config c = gt_config(2, 2 * SLOTS, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.nonfinite = EMBER_NONFINITE_ZERO;
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    uint64_t k[2] = {1, 2};
    float g[4] = {NAN, 1.0f, -INFINITY, 0.5f};
    CK(ember_table_apply_gradients(cpu, k, 2, g, NULL, &err), err);
    CK(ember_table_apply_gradients(gpu, k, 2, g, NULL, &err), err);
    CK(ember_table_accum(cpu, k, 2, g, NULL, &err), err);
    CK(ember_table_accum(gpu, k, 2, g, NULL, &err), err);
    gt_expect_same_tables(cpu, gpu, 0.0f, 1, "non-finite zeroed");
    gt_expect_same_stats(cpu, gpu, "non-finite zeroed");
    ember_table_stats st;
    ember_table_stats_get(gpu, &st);
    ck_assert_uint_eq(st.nonfinite_zeroed, 4);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

/* Device batches holding reserved keys: never stored, found = 0, the initial
 * row returned; the other keys of the batch behave as they do on the CPU given
 * the batch without them (same rows, scores, versions, found flags). */
START_TEST(reserved_keys_in_device_batches)
{
    ember_error err;
    ember_table_config c;
    ember_table *cpu, *t;
    seeded_pair(&c, &cpu, &t);
    ember_gpu_table *g = ember_gpu_table_of(t);
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_null(ember_gpu_table_of(cpu));
    enum { N = 6, M = 4, D = 4 };
    const uint32_t rf = ember_table_row_floats(t);
    ck_assert_uint_eq(rf, D);
    cudaStream_t st;
    CUDA_CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    ember_gpu_scratch *s = NULL;
    CK(ember_gpu_scratch_create(g, 64, &s, &err), err);
    uint64_t *dk, *dsc, *dver;
    float *dv, *dout;
    uint8_t *df;
    CUDA_CK(cudaMalloc((void **)&dk, N * 8));
    CUDA_CK(cudaMalloc((void **)&dsc, N * 8));
    CUDA_CK(cudaMalloc((void **)&dver, N * 8));
    CUDA_CK(cudaMalloc((void **)&dv, N * D * 4));
    CUDA_CK(cudaMalloc((void **)&dout, N * D * 4));
    CUDA_CK(cudaMalloc((void **)&df, N));
    ember_table_stats st0;
    ember_table_stats_get(cpu, &st0);
    uint64_t version = st0.version;
    for (int r = 0; r < 4; r++) {
        uint64_t rk = reserved_keys[r];
        /* new key, reserved, stored key, reserved again, erased key, stored key */
        uint64_t keys[N] = {500 + (uint64_t)r, rk, 151 + (uint64_t)r, rk, 7, 160 + (uint64_t)r};
        uint64_t clean[M] = {keys[0], keys[2], keys[4], keys[5]};
        const int pos[M] = {0, 2, 4, 5};
        float v[N * D], vc[M * D], out[N * D], outc[M * D], init[D];
        uint64_t sc[N], scc[M], ver[N], verc[M];
        uint8_t f[N], fc[M];
        for (int i = 0; i < N * D; i++)
            v[i] = (float)(i % 7) - 3.0f + 0.25f * (float)r;
        for (int i = 0; i < N; i++) {
            sc[i] = 10 + (uint64_t)i;
            ver[i] = 1 + (uint64_t)i;
        }
        for (int i = 0; i < M; i++) {
            memcpy(vc + i * D, v + pos[i] * D, D * sizeof(float));
            scc[i] = sc[pos[i]];
            verc[i] = ver[pos[i]];
        }
        ember_init_row(&c.init, c.seed, rk, init, D);
        CUDA_CK(cudaMemcpy(dk, keys, sizeof keys, cudaMemcpyHostToDevice));
        CUDA_CK(cudaMemcpy(dv, v, sizeof v, cudaMemcpyHostToDevice));
        CUDA_CK(cudaMemcpy(dsc, sc, sizeof sc, cudaMemcpyHostToDevice));
        CUDA_CK(cudaMemcpy(dver, ver, sizeof ver, cudaMemcpyHostToDevice));
        ember_op op;
        memset(&op, 0, sizeof op);
        op.score.policy = EMBER_SCORE_LFU;
        ember_gpu_counts cnt;
        char what[96];
        const char *names[8] = {"find", "find_or_insert", "insert_or_assign", "assign",
                                "accum", "apply_gradients", "import", "erase"};
        for (int call = 0; call < 8; call++) {
            snprintf(what, sizeof what, "reserved key %#llx, device %s", (unsigned long long)rk,
                     names[call]);
            int writes = call >= 1 && call <= 5;
            if (writes)
                op.version = ++version;
            CUDA_CK(cudaMemsetAsync(df, 0xee, N, st));
            switch (call) {
            case 0:
                CK(ember_gpu_find_async(g, dk, N, dout, df, &err, st), err);
                CK(ember_table_find(cpu, clean, M, outc, fc, &err), err);
                break;
            case 1:
                CK(ember_gpu_find_or_insert_async(g, s, &op, dk, N, dout, df, NULL, &err, st), err);
                CK(ember_table_find_or_insert(cpu, clean, M, outc, fc, NULL, &err), err);
                break;
            case 2:
                CK(ember_gpu_insert_or_assign_async(g, s, &op, dk, N, dv, NULL, &err, st), err);
                CK(ember_table_insert_or_assign(cpu, clean, M, vc, NULL, &err), err);
                break;
            case 3:
                CK(ember_gpu_assign_async(g, s, &op, dk, N, dv, df, NULL, &err, st), err);
                CK(ember_table_assign(cpu, clean, M, vc, fc, NULL, &err), err);
                break;
            case 4:
                CK(ember_gpu_accum_async(g, s, &op, dk, N, dv, df, &err, st), err);
                CK(ember_table_accum(cpu, clean, M, vc, fc, &err), err);
                break;
            case 5:
                CK(ember_gpu_apply_gradients_async(g, s, &op, dk, N, dv, NULL, &err, st), err);
                CK(ember_table_apply_gradients(cpu, clean, M, vc, NULL, &err), err);
                break;
            case 6:
                CK(ember_gpu_import_async(g, s, dk, N, dv, dsc, dver, &err, st), err);
                CK(ember_table_import(cpu, clean, M, vc, scc, verc, &err), err);
                break;
            default:
                CK(ember_gpu_erase_async(g, s, dk, N, &err, st), err);
                CK(ember_table_erase(cpu, clean, M, NULL, &err), err);
                break;
            }
            CUDA_CK(cudaStreamSynchronize(st));
            if (call == 7) {
                /* Every key of the batch but the reserved one is stored by now. */
                CK(ember_gpu_scratch_counts(s, st, &cnt, &err), err);
                GT_EXPECT(cnt.size_delta == -M, "%s: size_delta %lld", what,
                          (long long)cnt.size_delta);
            }
            if (call == 1) {
                CK(ember_gpu_scratch_counts(s, st, &cnt, &err), err);
                GT_EXPECT(cnt.size_delta == 2, "%s: size_delta %lld (keys %llu and 7 are "
                              "new)", what, (long long)cnt.size_delta, (unsigned long long)keys[0]);
            }
            if (call == 0 || call == 1 || call == 3 || call == 4) {
                CUDA_CK(cudaMemcpy(f, df, N, cudaMemcpyDeviceToHost));
                GT_EXPECT(f[1] == 0 && f[3] == 0, "%s: found %d and %d for the reserved key",
                          what, f[1], f[3]);
                for (int i = 0; i < M; i++)
                    GT_EXPECT(f[pos[i]] == fc[i], "%s: key %llu found %d, cpu %d", what,
                              (unsigned long long)clean[i], f[pos[i]], fc[i]);
            }
            if (call <= 1) {
                CUDA_CK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
                GT_EXPECT(!memcmp(out + 1 * D, init, sizeof init) &&
                                  !memcmp(out + 3 * D, init, sizeof init),
                              "%s: the reserved key's row is not its initial row", what);
                for (int i = 0; i < M; i++)
                    GT_EXPECT(!memcmp(out + pos[i] * D, outc + i * D, D * sizeof(float)),
                              "%s: key %llu row differs from the cpu's", what,
                              (unsigned long long)clean[i]);
            }
            tu_snapshot a, b;
            tu_snapshot_take(cpu, &a);
            tu_snapshot_take(t, &b);
            for (size_t i = 0; i < b.n; i++)
                GT_EXPECT(!ember_key_is_reserved(b.keys[i]), "%s: reserved key %#llx stored",
                          what, (unsigned long long)b.keys[i]);
            gt_expect_same_snapshot(&a, &b, 0.0f, 1, what);
            GT_EXPECT(ember_gpu_size(g) == b.n && ember_table_size(t) == b.n,
                      "%s: size %llu, %zu exported", what,
                      (unsigned long long)ember_gpu_size(g), b.n);
            tu_snapshot_free(&a);
            tu_snapshot_free(&b);
        }
    }
    CUDA_CK(cudaFree(dk));
    CUDA_CK(cudaFree(dsc));
    CUDA_CK(cudaFree(dver));
    CUDA_CK(cudaFree(dv));
    CUDA_CK(cudaFree(dout));
    CUDA_CK(cudaFree(df));
    CUDA_CK(cudaStreamDestroy(st));
    ember_gpu_scratch_destroy(s);
    ember_table_destroy(t);
    ember_table_destroy(cpu);
}
END_TEST

/* ---- checkpoints across backends ------------------------------------------------------ */

static void train(ember_table *t, uint64_t first, size_t n, int rounds, uint64_t seed)
{
    enum { BATCH = 1000 };
    ember_error err;
    uint32_t dim = ember_table_dim(t);
    uint64_t keys[BATCH];
    float *g = malloc((size_t)BATCH * dim * sizeof *g);
    for (int r = 0; r < rounds; r++)
        for (size_t at = 0; at < n; at += BATCH) {
            size_t m = n - at < BATCH ? n - at : BATCH;
            for (size_t i = 0; i < m; i++)
                keys[i] = first + at + i;
            for (size_t i = 0; i < m * dim; i++)
                g[i] = gt_rng_sym(&seed);
            CK(ember_table_apply_gradients(t, keys, m, g, NULL, &err), err);
        }
    free(g);
}

static uint64_t max_version(ember_table *t)
{
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    uint64_t m = 0;
    for (size_t i = 0; i < s.n; i++)
        m = s.versions[i] > m ? s.versions[i] : m;
    tu_snapshot_free(&s);
    return m;
}

/* `into` holds exactly the rows of `from` (a load copies rows: no tolerance),
 * and its version is at least every row's. */
static void expect_loaded(ember_table *from, ember_table *into, const char *what)
{
    int into_cpu = ember_table_backend_of(into) == gt_cpu();
    if (into_cpu)
        gt_expect_same_tables(into, from, 0.0f, 1, what);
    else
        gt_expect_same_tables(from, into, 0.0f, 1, what);
    ember_table_stats st;
    ember_table_stats_get(into, &st);
    ck_assert_uint_ge(st.version, max_version(from));
}

START_TEST(checkpoint_crosses_backends)
{
    ember_error err;
    char dir[256], p1[300], p2[300];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ember_gpu_ckpt_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p1, sizeof p1, "%s/cpu.ckpt", dir);
    snprintf(p2, sizeof p2, "%s/gpu.ckpt", dir);
    /* Adam: every slot kind, and a row of 19 floats (padded to 20 on the GPU). */
    ember_table_config c = gt_config(6, 8192, EMBER_OPTIM_ADAM, EMBER_SCORE_LFU,
                                     EMBER_INIT_NORMAL);
    ember_table_config ch = c;
    ch.hbm_bytes = 5 * SLOTS * gt_row_bytes(&c);
    ember_table *cpu = gt_table(&c, gt_cpu());
    ember_table *gh = gt_table(&ch, gt_gpu()); /* hybrid */
    ember_table *g2 = gt_table(&c, gt_gpu());
    ember_table *c2 = gt_table(&c, gt_cpu());
    train(cpu, 1, 3000, 3, 5);
    train(g2, 100000, 500, 1, 6); /* rows the load must replace */
    train(c2, 200000, 500, 1, 7);

    /* CPU → GPU (hybrid): a load copies rows, so they are exact. */
    CK(ember_ckpt_save(cpu, p1, "emb", 0, 1, NULL, NULL, &err), err);
    CK(ember_ckpt_load(gh, p1, NULL, NULL, &err), err);
    expect_loaded(cpu, gh, "cpu -> gpu (hybrid)");
    /* Both train on, the same way (Adam: within the tolerance). */
    train(cpu, 2001, 2000, 2, 8);
    train(gh, 2001, 2000, 2, 8);
    gt_expect_same_tables(cpu, gh, GT_ROW_TOL, 1, "cpu and gpu after training on");
    /* GPU → CPU and GPU → GPU, each into a table holding other keys. */
    ember_ckpt_meta m;
    CK(ember_ckpt_save(gh, p2, "emb", 0, 1, NULL, &m, &err), err);
    ck_assert_uint_eq(m.rows, ember_table_size(gh));
    CK(ember_ckpt_load(c2, p2, NULL, NULL, &err), err);
    expect_loaded(gh, c2, "gpu -> cpu");
    CK(ember_ckpt_load(g2, p2, NULL, NULL, &err), err);
    expect_loaded(gh, g2, "gpu -> gpu");
    ember_ckpt_meta rm;
    CK(ember_ckpt_read_meta(p2, &rm, &err), err);
    ck_assert_uint_eq(rm.rows, ember_table_size(gh));
    ck_assert_uint_eq(rm.config.dim, 6);
    ck_assert_int_eq(rm.config.optim.kind, EMBER_OPTIM_ADAM);
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    ember_table_destroy(cpu);
    ember_table_destroy(gh);
    ember_table_destroy(g2);
    ember_table_destroy(c2);
}
END_TEST

/* ---- creation that cannot get its memory ---------------------------------------------- */

static uint64_t device_free_bytes(void)
{
    ember_error err;
    int dev = 0;
    uint64_t free_b = 0;
    CUDA_CK(cudaGetDevice(&dev));
    CK(ember_cuda_device_describe(dev, NULL, 0, NULL, &free_b, &err), err);
    return free_b;
}

START_TEST(absurd_capacity_is_resource_exhausted)
{
    ember_error err;
    ember_table *t = NULL;
    ember_gpu_table *g = NULL;
    int dev = 0;
    uint64_t total = 0;
    CUDA_CK(cudaGetDevice(&dev));
    CK(ember_cuda_device_describe(dev, NULL, 0, &total, NULL, &err), err);
    uint64_t free0 = device_free_bytes();

    /* 2^40 keys: terabytes of metadata alone. */
    ember_table_config c = gt_config(8, EMBER_CAPACITY_MAX, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                     EMBER_INIT_ZEROS);
    int rc = ember_table_create(&c, gt_gpu(), &t, &err);
    GT_EXPECT(rc == EMBER_RESOURCE_EXHAUSTED, "capacity 2^40: %s: %s", ember_status_name(rc),
              err.message);
    printf("gpu.table capacity 2^40: %s\n", err.message);
    rc = ember_gpu_table_create(&c, NULL, &g, &err);
    GT_EXPECT(rc == EMBER_RESOURCE_EXHAUSTED, "direct, capacity 2^40: %s: %s",
              ember_status_name(rc), err.message);

    /* Twice the device's memory in rows, with metadata that fits: the rows are
     * what fails, after the rest was allocated — and freed again. */
    c = gt_config(64, 2 * total / (64 * sizeof(float)), EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                  EMBER_INIT_ZEROS);
    rc = ember_table_create(&c, gt_gpu(), &t, &err);
    GT_EXPECT(rc == EMBER_RESOURCE_EXHAUSTED, "capacity %llu (dim 64): %s: %s",
              (unsigned long long)c.capacity, ember_status_name(rc), err.message);
    printf("gpu.table capacity %llu dim 64: %s\n", (unsigned long long)c.capacity, err.message);
    fflush(stdout);
    uint64_t free1 = device_free_bytes();
    GT_EXPECT(free1 + (UINT64_C(256) << 20) >= free0,
              "device memory free before %llu, after the failed creations %llu",
              (unsigned long long)free0, (unsigned long long)free1);

    /* The device is still usable. */
    c = gt_config(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LFU, EMBER_INIT_ZEROS);
    t = gt_table(&c, gt_gpu());
    uint64_t k = 5;
    float v[4] = {1, 2, 3, 4}, out[4];
    uint8_t found = 0;
    CK(ember_table_insert_or_assign(t, &k, 1, v, NULL, &err), err);
    CK(ember_table_find(t, &k, 1, out, &found, &err), err);
    ck_assert_int_eq(found, 1);
    ck_assert_mem_eq(out, v, sizeof v);
    ember_table_destroy(t);
}
END_TEST

/* ---- whole-table calls and single-table behaviour ------------------------------------ */

START_TEST(backend_identity)
{
    ck_assert_str_eq(ember_table_backend_name(gt_gpu()), "gpu");
    ember_table_config c = gt_config(3, 1000, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu()), *cpu = gt_table(&c, gt_cpu());
    ck_assert_ptr_eq(ember_table_backend_of(t), gt_gpu());
    ck_assert_ptr_nonnull(ember_gpu_table_of(t));
    ck_assert_ptr_null(ember_gpu_table_of(cpu));
    ck_assert_uint_eq(ember_table_capacity(t), 8 * SLOTS); /* rounded up to whole buckets */
    ck_assert_uint_eq(ember_gpu_capacity(ember_gpu_table_of(t)), 8 * SLOTS);
    ck_assert_uint_eq(ember_table_export_end(t), 8);
    ck_assert_uint_eq(ember_gpu_export_end(ember_gpu_table_of(t)), 8);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.capacity, 8 * SLOTS);
    ck_assert_uint_eq(st.num_buckets, 8);
    ck_assert_uint_eq(st.size, 0);
    ck_assert_uint_ge(st.bytes_device, (uint64_t)8 * SLOTS * (3 * 3 + 1) * sizeof(float));
    ck_assert_uint_gt(st.bytes_host, 0);
    ember_table_destroy(t);
    ember_table_destroy(cpu);
}
END_TEST

/* The footprint a server checks its caps with is what a new table reports, in
 * device and host memory: all in HBM, hybrid, and with an admission sketch. */
START_TEST(footprint_equals_new_table_stats)
{
    static const struct {
        uint32_t dim;
        uint64_t capacity, hbm_bytes;
        uint32_t min_count;
    } cases[] = {
        {3, 1000, 0, 0},
        {64, 1 << 16, 0, 3},
        {64, 1 << 16, 1 << 20, 0}, /* hybrid: 1 MiB of rows in HBM */
        {5, 4096, 1, 2},           /* hbm_bytes below one bucket: every row on the host */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ember_table_config c =
            gt_config(cases[i].dim, cases[i].capacity, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU,
                      EMBER_INIT_ZEROS);
        c.hbm_bytes = cases[i].hbm_bytes;
        c.admission.min_count = cases[i].min_count;
        uint64_t host = 0, device = 0;
        ember_error err;
        ck_assert_int_eq(ember_table_footprint(&c, gt_gpu(), &host, &device, &err), EMBER_OK);
        ember_table *t = gt_table(&c, gt_gpu());
        ember_table_stats st;
        ember_table_stats_get(t, &st);
        ck_assert_uint_eq(host, st.bytes_host);
        ck_assert_uint_eq(device, st.bytes_device);
        ember_table_destroy(t);
    }
}
END_TEST

START_TEST(find_missing_returns_initial_row_without_storing)
{
    ember_error err;
    ember_table_config c = gt_config(5, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_UNIFORM);
    ember_table *t = gt_table(&c, gt_gpu());
    uint64_t keys[2] = {7, 9};
    float out[10], again[10], expect[10];
    uint8_t found[2] = {9, 9};
    CK(ember_table_find(t, keys, 2, out, found, &err), err);
    ck_assert_int_eq(found[0], 0);
    ck_assert_int_eq(found[1], 0);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_init_row(&c.init, c.seed, 7, expect, 5);
    ember_init_row(&c.init, c.seed, 9, expect + 5, 5);
    ck_assert_mem_eq(out, expect, sizeof expect);
    CK(ember_table_find_or_insert(t, keys, 2, again, found, NULL, &err), err);
    ck_assert_mem_eq(again, expect, sizeof expect);
    ck_assert_int_eq(found[0], 0);
    ck_assert_uint_eq(ember_table_size(t), 2);
    CK(ember_table_find(t, keys, 2, out, found, &err), err);
    ck_assert_int_eq(found[0], 1);
    ck_assert_int_eq(found[1], 1);
    ck_assert_mem_eq(out, expect, sizeof expect);
    ember_table_destroy(t);
}
END_TEST

/* Duplicates inside one call, compared with the CPU: apply_gradients sums in
 * batch order, accum adds in batch order, insert_or_assign and assign keep the
 * last, import keeps the last row, score and version. */
START_TEST(duplicates_in_one_call_match_cpu)
{
    ember_error err;
    ember_table_config c = gt_config(3, 1024, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    uint64_t keys[8] = {5, 6, 5, 7, 5, 6, 8, 5}, sc[8] = {9, 3, 4, 1, 7, 2, 6, 5};
    uint64_t vers[8] = {10, 11, 12, 13, 14, 15, 16, 17};
    float v[8 * 3], rows[8 * 6];
    uint8_t fc[8], fg[8];
    uint64_t rng = 3;
    ember_table *both[2] = {cpu, gpu};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 24; i++)
            v[i] = gt_rng_sym(&rng) * 3.0f;
        for (int s = 0; s < 2; s++) {
            CK(ember_table_apply_gradients(both[s], keys, 8, v, sc, &err), err);
            CK(ember_table_accum(both[s], keys, 8, v, s ? fg : fc, &err), err);
        }
        gt_expect_same_flags(keys, 8, fc, fg, "accum");
        gt_expect_same_tables(cpu, gpu, 0.0f, 1, "apply_gradients and accum with repeats");
        for (int s = 0; s < 2; s++)
            CK(ember_table_insert_or_assign(both[s], keys, 8, v, sc, &err), err);
        gt_expect_same_tables(cpu, gpu, 0.0f, 1, "insert_or_assign with repeats");
        for (int s = 0; s < 2; s++)
            CK(ember_table_assign(both[s], keys, 8, v, s ? fg : fc, sc, &err), err);
        gt_expect_same_flags(keys, 8, fc, fg, "assign");
        gt_expect_same_tables(cpu, gpu, 0.0f, 1, "assign with repeats");
        for (int i = 0; i < 8; i++) {
            gt_random_row(&c, &rng, rows + i * 6);
            sc[i] = gt_rng_below(&rng, 100);
        }
        for (int s = 0; s < 2; s++)
            CK(ember_table_import(both[s], keys, 8, rows, sc, vers, &err), err);
        gt_expect_same_tables(cpu, gpu, 0.0f, 1, "import with repeats");
        gt_expect_same_stats(cpu, gpu, "repeats");
    }
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

START_TEST(clear_keeps_counters)
{
    ember_error err;
    ember_table_config c = gt_config(4, 4 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    ember_table *t = gt_table(&c, gt_gpu());
    enum { N = 2000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    float *v = malloc(N * 4 * sizeof *v);
    uint8_t *found = malloc(N);
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)i * 7 + 3;
    CK(ember_table_find_or_insert(t, keys, N, v, NULL, NULL, &err), err);
    ember_table_stats before, after;
    ember_table_stats_get(t, &before);
    ck_assert_uint_eq(before.size, 4 * SLOTS);
    ck_assert_uint_eq(before.evictions, N - 4 * SLOTS);
    CK(ember_table_clear(t, &err), err);
    ember_table_stats_get(t, &after);
    ck_assert_uint_eq(after.size, 0);
    ck_assert_uint_eq(after.evictions, before.evictions);
    ck_assert_uint_eq(after.version, before.version);
    CK(ember_table_find(t, keys, N, v, found, &err), err);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(found[i], 0);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 0);
    tu_snapshot_free(&s);
    /* A cleared table fills again from empty buckets. */
    CK(ember_table_find_or_insert(t, keys, 100, v, found, NULL, &err), err);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(found[i], 0);
    ck_assert_uint_eq(ember_table_size(t), 100);
    CK(ember_table_clear(t, &err), err);
    CK(ember_table_clear(t, &err), err); /* twice: still empty, still fine */
    ck_assert_uint_eq(ember_table_size(t), 0);
    free(keys);
    free(v);
    free(found);
    ember_table_destroy(t);
}
END_TEST

START_TEST(erase_counts)
{
    ember_error err;
    ember_table_config c = gt_config(2, 16 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_ZEROS);
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    enum { N = 600 };
    uint64_t keys[N], er[2 * N], a = 0, b = 0;
    float v[N * 2] = {0};
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)i + 1;
    CK(ember_table_insert_or_assign(cpu, keys, N, v, NULL, &err), err);
    CK(ember_table_insert_or_assign(gpu, keys, N, v, NULL, &err), err);
    /* Every third key, each twice, plus as many absent keys. */
    size_t n = 0;
    for (int i = 0; i < N; i += 3) {
        er[n++] = keys[i];
        er[n++] = keys[i];
        er[n++] = 5000 + (uint64_t)i;
    }
    CK(ember_table_erase(cpu, er, n, &a, &err), err);
    CK(ember_table_erase(gpu, er, n, &b, &err), err);
    ck_assert_uint_eq(a, (N + 2) / 3);
    ck_assert_uint_eq(b, a);
    ck_assert_uint_eq(ember_table_size(gpu), N - a);
    CK(ember_table_erase(gpu, er, n, &b, &err), err);
    ck_assert_uint_eq(b, 0);
    /* Erased slots are reused the CPU's way: the same keys come back the same. */
    float *out = malloc(n * 2 * sizeof *out);
    CK(ember_table_find_or_insert(cpu, er, n, out, NULL, NULL, &err), err);
    CK(ember_table_find_or_insert(gpu, er, n, out, NULL, NULL, &err), err);
    free(out);
    gt_expect_same_tables(cpu, gpu, 0.0f, 1, "erase and reinsert");
    ember_table_stats st;
    ember_table_stats_get(cpu, &st);
    ck_assert_uint_eq(st.evictions, 0); /* room for all: contents cannot depend on order */
    /* Erase everything, key by key: buckets that empty are reset. */
    tu_snapshot s;
    tu_snapshot_take(gpu, &s);
    CK(ember_table_erase(gpu, s.keys, s.n, &b, &err), err);
    ck_assert_uint_eq(b, s.n);
    ck_assert_uint_eq(ember_table_size(gpu), 0);
    tu_snapshot_free(&s);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

START_TEST(evict_below_and_to_size)
{
    ember_error err;
    ember_table_config c = gt_config(1, 1 << 14, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu());
    enum { N = 5000 };
    uint64_t *keys = malloc(N * sizeof *keys), *sc = malloc(N * sizeof *sc), n;
    float *v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i + 100;
        sc[i] = (uint64_t)(i / 2) + (UINT64_C(1) << 40); /* pairs share a score */
    }
    CK(ember_table_insert_or_assign(t, keys, N, v, sc, &err), err);
    CK(ember_table_evict_below(t, 0, &n, &err), err);
    ck_assert_uint_eq(n, 0);
    CK(ember_table_evict_below(t, (UINT64_C(1) << 40) + 500, &n, &err), err);
    ck_assert_uint_eq(n, 1000);
    ck_assert_uint_eq(ember_table_size(t), N - 1000);
    /* Down to an odd size: the cut falls inside a pair of equal scores. */
    CK(ember_table_evict_to_size(t, 1501, &n, &err), err);
    ck_assert_uint_eq(n, N - 1000 - 1501);
    ck_assert_uint_eq(ember_table_size(t), 1501);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 1501);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_ge(s.scores[i], (UINT64_C(1) << 40) + (N - 1502) / 2);
    tu_snapshot_free(&s);
    CK(ember_table_evict_to_size(t, 5000, &n, &err), err);
    ck_assert_uint_eq(n, 0);
    CK(ember_table_evict_to_size(t, 0, &n, &err), err);
    ck_assert_uint_eq(n, 1501);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.evicted, N);
    /* All scores equal: evict_to_size still takes exactly the excess. */
    for (int i = 0; i < N; i++)
        sc[i] = 77;
    CK(ember_table_insert_or_assign(t, keys, N, v, sc, &err), err);
    CK(ember_table_evict_to_size(t, 1234, &n, &err), err);
    ck_assert_uint_eq(n, N - 1234);
    ck_assert_uint_eq(ember_table_size(t), 1234);
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 1234);
    tu_snapshot_free(&s);
    free(keys);
    free(sc);
    free(v);
    ember_table_destroy(t);
}
END_TEST

START_TEST(export_filters_and_paging)
{
    ember_error err;
    ember_table_config c = gt_config(4, 8192, EMBER_OPTIM_ADAM, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_ZEROS);
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    enum { N = 3000 };
    uint64_t *keys = malloc(N * sizeof *keys), *sc = malloc(N * sizeof *sc);
    float *v = malloc(N * 4 * sizeof *v);
    uint64_t rng = 17;
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 31 + 1;
        sc[i] = (uint64_t)i;
    }
    for (int i = 0; i < N * 4; i++)
        v[i] = gt_rng_sym(&rng);
    ember_table *both[2] = {cpu, gpu};
    for (int s = 0; s < 2; s++)
        CK(ember_table_insert_or_assign(both[s], keys, N, v, sc, &err), err);
    ember_table_stats st;
    ember_table_stats_get(gpu, &st);
    uint64_t v1 = st.version;
    for (int s = 0; s < 2; s++)
        CK(ember_table_accum(both[s], keys, 100, v, NULL, &err), err);
    uint32_t rf = ember_table_row_floats(gpu);
    ck_assert_uint_eq(rf, 3 * 4 + 1);
    /* Counts, as in test_table.c's export test. */
    ember_export_filter all = {0, 0, 1}, hi = {2000, 0, 0}, dv = {0, v1, 0};
    tu_snapshot a, h, d;
    gt_export_filtered(gpu, &all, SLOTS, &a);
    gt_export_filtered(gpu, &hi, 3 * SLOTS, &h);
    gt_export_filtered(gpu, &dv, 1000, &d);
    ck_assert_uint_eq(a.n, N);
    ck_assert_uint_eq(h.n, N - 2000);
    ck_assert_uint_eq(d.n, 100);
    for (size_t i = 0; i < d.n; i++) {
        ck_assert_uint_eq((d.keys[i] - 1) % 31, 0);
        ck_assert_uint_lt((d.keys[i] - 1) / 31, 100);
    }
    tu_snapshot_free(&a);
    tu_snapshot_free(&h);
    tu_snapshot_free(&d);
    gt_expect_same_exports(cpu, gpu, 0.0f, "export filters"); /* no Adam step was taken */
    /* A page that holds whole buckets: every row comes exactly once however
     * the pages fall. */
    const size_t pages[] = {SLOTS, SLOTS + 1, 2 * SLOTS - 1, 5 * SLOTS, 100000};
    for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
        tu_snapshot x;
        gt_export_filtered(gpu, &all, pages[p], &x);
        ck_assert_uint_eq(x.n, N);
        for (size_t i = 1; i < x.n; i++)
            GT_EXPECT(x.keys[i] != x.keys[i - 1], "page %zu: key %llu exported twice",
                      pages[p], (unsigned long long)x.keys[i]);
        tu_snapshot_free(&x);
    }
    free(keys);
    free(sc);
    free(v);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

START_TEST(epoch_scores)
{
    ember_error err;
    ember_table_config c = gt_config(1, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_EPOCH_LFU,
                                     EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu());
    uint64_t k = 3;
    float g = 1.0f;
    ember_table_set_epoch(t, 7);
    CK(ember_table_apply_gradients(t, &k, 1, &g, NULL, &err), err);
    CK(ember_table_apply_gradients(t, &k, 1, &g, NULL, &err), err);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.scores[0], (UINT64_C(7) << 32) | 2);
    tu_snapshot_free(&s);
    ember_table_set_epoch(t, 8);
    CK(ember_table_apply_gradients(t, &k, 1, &g, NULL, &err), err);
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.scores[0], (UINT64_C(8) << 32) | 1);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}
END_TEST

START_TEST(admission_stores_from_min_count)
{
    ember_error err;
    ember_table_config c = gt_config(2, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                     EMBER_INIT_CONSTANT);
    c.init.a = 0.5f;
    c.optim.lr = 0.01f;
    c.admission.min_count = 3;
    c.admission.sketch_width = 4096;
    ember_table *t = gt_table(&c, gt_gpu());
    uint64_t k = 77;
    float out[2], g[2] = {1.0f, 1.0f};
    uint8_t found;
    CK(ember_table_find_or_insert(t, &k, 1, out, &found, NULL, &err), err);
    ck_assert_float_eq(out[0], 0.5f);
    ck_assert_int_eq(found, 0);
    ck_assert_uint_eq(ember_table_size(t), 0);
    CK(ember_table_apply_gradients(t, &k, 1, g, NULL, &err), err);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.admission_drops, 1);
    CK(ember_table_apply_gradients(t, &k, 1, g, NULL, &err), err);
    ck_assert_uint_eq(ember_table_size(t), 1);
    CK(ember_table_find(t, &k, 1, out, &found, &err), err);
    ck_assert_int_eq(found, 1);
    ck_assert_float_eq_tol(out[0], 0.5f - 0.01f, 1e-7f);
    uint64_t k2 = 78;
    CK(ember_table_insert_or_assign(t, &k2, 1, g, NULL, &err), err);
    ck_assert_uint_eq(ember_table_size(t), 2);
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.admission_drops, 1);
    ember_table_destroy(t);
}
END_TEST

/* ---- the suite ------------------------------------------------------------------------ */

static Suite *gpu_table_api_suite(void)
{
    Suite *s = suite_create("gpu_table_api");
    TCase *tc;

    tc = tcase_create("streams");
    tcase_add_test(tc, streams_device_api_sums_exact_rows_never_torn);
    tcase_add_test(tc, streams_find_lanes1_rows_never_torn);
    tcase_add_test(tc, streams_host_threads_sums_exact_rows_never_torn);
    tcase_add_test(tc, streams_host_threads_find_lanes1_rows_never_torn);
    tcase_add_test(tc, streams_scratch_capacity_enforced);
    tcase_add_test(tc, streams_find_lanes_option_same_results);
    suite_add_tcase(s, tc);

    tc = tcase_create("reserved");
    tcase_add_test(tc, reserved_keys_refused_whole_by_table_api);
    tcase_add_test(tc, bad_input_refused_table_unchanged);
    tcase_add_test(tc, nonfinite_zeroed_like_cpu);
    tcase_add_test(tc, reserved_keys_in_device_batches);
    suite_add_tcase(s, tc);

    tc = tcase_create("ckpt");
    tcase_add_test(tc, checkpoint_crosses_backends);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, absurd_capacity_is_resource_exhausted);
    suite_add_tcase(s, tc);

    tc = tcase_create("whole");
    tcase_add_test(tc, backend_identity);
    tcase_add_test(tc, footprint_equals_new_table_stats);
    tcase_add_test(tc, find_missing_returns_initial_row_without_storing);
    tcase_add_test(tc, duplicates_in_one_call_match_cpu);
    tcase_add_test(tc, clear_keeps_counters);
    tcase_add_test(tc, erase_counts);
    tcase_add_test(tc, evict_below_and_to_size);
    tcase_add_test(tc, export_filters_and_paging);
    tcase_add_test(tc, epoch_scores);
    tcase_add_test(tc, admission_stores_from_min_count);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return gt_main("gpu.table_api", gpu_table_api_suite);
}

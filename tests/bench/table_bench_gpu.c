/*
 * table_bench_gpu.c — table_bench --backend gpu: the GPU table through the
 * stream-ordered device API of cuda/gpu_table.h, measured the way HierarchicalKV's
 * merlin_hashtable_benchmark measures itself (docs/BENCHMARKS.md), next to the
 * figures HKV gave on an H200.
 *
 * Conventions (HKV's, with what this program adds or does differently marked):
 *
 *   - uint64 keys, float32 values, LRU: every writing call gets op.score =
 *     {EMBER_SCORE_LRU, CLOCK_REALTIME ns read just before it} and op.version =
 *     the next value of a counter, as table.c would give it. No caller scores.
 *   - Capacity 64 M keys (--capacity), batch 1,048,576 keys per call (--batch),
 *     dims 64 (--dims), load factors 0.5, 0.75, 1.0 (--lfs).
 *   - One table at a time, destroyed before the next is created: an SGD table
 *     for find, find_or_insert, insert_or_assign, assign and export; an Adagrad
 *     and an Adam table (rows with optimizer slots) for apply_gradients, filled
 *     to the same load factor.
 *   - Keys, values, gradients, outputs and found flags are in device memory
 *     before any timing. Keys are drawn on the host with the CPU mode's
 *     generator (bench_keys.h) and copied once per batch, untimed.
 *   - Time = host wall clock around one call plus its cudaStreamSynchronize;
 *     figure = keys / time in billions (2^30) of keys/s. Here: median, min and
 *     max of --reps timed calls, after one untimed warm-up call of the same op
 *     (CUDA loads kernels lazily); HKV takes the better of two calls.
 *   - Fill: insert_or_assign of fresh keys, ranks [0, P) with P = λ·capacity
 *     (what HKV inserts to reach λ), in calls of up to 4 M keys, then "filler"
 *     keys (ranks ≥ U, never looked up) until the size is within 0.1% of P
 *     (HKV: EPSILON 0.001); at λ 1.0 full buckets evict, so that takes rounds.
 *   - Batches: each key is present with probability --hit (0.6): a rank in
 *     [0, P) (present) or [P, U = 2·capacity) (absent); uniform by default
 *     (HKV's), Zipf with --dist zipf (duplicates within a batch).
 *   - Load factor held constant (this program's choice): HKV times one call on a
 *     table that the earlier calls may have grown. Here every call of an op that
 *     inserts (find_or_insert, insert_or_assign, apply_gradients), timed or
 *     warm-up, is followed by an untimed restore: the batch's absent keys are
 *     erased, the size is topped up to P with fillers, and find_or_insert of the
 *     batch's present keys runs until all of them are stored. So each timed call
 *     finds size P (±0.1%) and exactly the intended ~60% of its keys present; its
 *     ~40% new keys take free slots at λ < 1 and, at λ 1.0, each evicts its full
 *     bucket's lowest-score key, as in HKV's λ 1.0 run.
 *   - Outputs as HKV's timed calls: find writes values and found flags;
 *     find_or_insert writes values (no found flags); assign and insert_or_assign
 *     read values; apply_gradients reads gradients (the rows' optimizer slots are
 *     read and written as well).
 *   - export (no HKV figure here): ember_gpu_export of the whole table,
 *     embeddings only, into pinned host buffers of --batch rows that are reused;
 *     keys = rows exported, time = the whole scan. Its reps stop early once they
 *     have taken 5 s together (the count used is printed).
 *   - Hybrid (--hbm-gb X): config.hbm_bytes = X GiB of rows in device memory, the
 *     rest in pinned host memory mapped into the device. HKV's hybrid shape is
 *     dim 64, --capacity 134217728 --hbm-gb 16 (16 GiB of values in HBM + 16 GiB
 *     on the host).
 *
 * Bandwidths, measured first: device-to-device copy (cudaMemcpyAsync, bytes read +
 * written, as docs/BENCHMARKS.md's ~4.3 TB/s for an H200) and device → pinned host. An
 * op's fraction = keys/s × value bytes per key (table_bench.c's definitions) /
 * device copy bandwidth; export's is of device → host bandwidth.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "bench_keys.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/gpu_table.h"
#include "storage/table.h"
#include "table_bench.h"

#define GIB ((double)(UINT64_C(1) << 30))
#define MIB (UINT64_C(1) << 20)
#define KEYS_2P30 ((double)(UINT64_C(1) << 30))
/* Most keys per fill call; fewer where the values of one call would pass 1 GiB. */
#define FILL_CHUNK_MAX ((size_t)4 << 20)
#define EXPORT_BUDGET_S 5.0

/* ---- HierarchicalKV's figures and our targets (docs/BENCHMARKS.md) ---------- */

/* HKV on one H200, 2^30 keys/s; -1 = no figure. Capacities are those of HKV's
 * benchmark source: 64 M for dim 64 pure HBM, 128 M for dim 8 (4 GiB HBM) and
 * for the hybrid (16 GiB HBM). The dim-8 figures are taken as λ 0.5. */
typedef struct hkv_ref {
    uint32_t dim;
    int hybrid;
    double lf;
    uint64_t capacity;
    double bkps[OP_COUNT];
} hkv_ref;

static const hkv_ref hkv_refs[] = {
    /*                                 find  f_or_i  i_or_a  assign  sgd adagrad adam export */
    {64, 0, 0.50, UINT64_C(64) << 20, {3.80, 1.90, 1.91, 2.80, -1, -1, -1, -1}},
    {64, 0, 0.75, UINT64_C(64) << 20, {3.73, 1.83, 1.76, 2.81, -1, -1, -1, -1}},
    {64, 0, 1.00, UINT64_C(64) << 20, {3.89, 1.27, 1.32, 2.84, -1, -1, -1, -1}},
    {8, 0, 0.50, UINT64_C(128) << 20, {3.95, 2.26, 2.18, -1, -1, -1, -1, -1}},
    {64, 1, 0.50, UINT64_C(128) << 20, {0.192, 0.152, 0.154, 0.187, -1, -1, -1, -1}},
};

static const hkv_ref *hkv_find_ref(uint32_t dim, int hybrid, double lf)
{
    for (size_t i = 0; i < sizeof hkv_refs / sizeof hkv_refs[0]; i++)
        if (hkv_refs[i].dim == dim && hkv_refs[i].hybrid == hybrid &&
            fabs(hkv_refs[i].lf - lf) < 1e-9)
            return &hkv_refs[i];
    return NULL;
}

/* The target an op has in this shape, as "≥ x B keys/s" (abs) or "≥ x·HKV"
 * (rel); 0 when none. Targets: apply_gradients with Adam ≥ 1.0 at dim 64 in
 * HBM; hybrid find and find_or_insert ≥ 1.5× HKV. */
static int target_of(int op, uint32_t dim, int hybrid, double *abs, double *rel)
{
    *abs = *rel = 0.0;
    if (op == OP_ADAM && dim == 64 && !hybrid)
        *abs = 1.0;
    else if (hybrid && (op == OP_FIND || op == OP_FIND_OR_INSERT))
        *rel = 1.5;
    return *abs > 0.0 || *rel > 0.0;
}

/* ---- the run's state ------------------------------------------------------- */

/* One shape to measure: a table of `dim` at load factor `lf`. */
typedef struct gpu_case {
    uint32_t dim;
    double lf;
    uint64_t capacity;
    uint64_t hbm_bytes;
    int ops[OP_COUNT];
} gpu_case;

typedef struct gpu_bench {
    const bench_opts *o;
    cudaStream_t stream;
    size_t n;                   /* batch */
    size_t chunk;               /* keys per fill call */
    uint32_t max_dim;
    uint64_t version;           /* the last version handed out */
    /* device */
    uint64_t *d_keys, *d_present, *d_absent, *d_fill;
    float *d_in;                /* n × dim: values, gradients */
    float *d_out;               /* n × dim: find, find_or_insert output */
    float *d_fillv;             /* chunk × dim: values of fill calls */
    uint8_t *d_found;
    /* host */
    uint64_t *h_keys, *h_present, *h_absent;
    uint64_t *h_fill;           /* pinned, chunk */
    uint8_t *h_found;           /* pinned, n */
    uint64_t *h_exp_keys;       /* pinned, n */
    float *h_exp_rows;          /* pinned, n × max_dim */
    float *h_vals;              /* n × max_dim */
    /* device facts */
    char device[128];
    double bw_d2d, bw_d2h, bw_h2d;  /* bytes/s; d2d read + written */
} gpu_bench;

typedef struct gpu_tab {
    ember_gpu_table *t;
    ember_gpu_scratch *s;
    int tab;
    uint32_t dim, row_floats;
    uint64_t capacity;          /* slots */
    uint64_t target;            /* P */
    uint64_t universe;          /* U */
    uint64_t next_filler;
    ember_gpu_layout lay;
    int hybrid;                 /* rows in pinned host memory */
} gpu_tab;

typedef struct gpu_batch {
    size_t n, np, na;
} gpu_batch;

typedef struct gpu_result {
    int op, dist, hybrid;
    uint32_t dim, row_floats;
    double lf, lf_actual;
    uint64_t capacity, hbm_bytes, rows_hbm, rows_host;
    double present;
    size_t keys;
    int reps;
    double kps_min, kps_med, kps_max;
    double bytes_per_key, frac;
    uint64_t evictions;         /* by the last timed call */
} gpu_result;

/* ---- errors, calls ---------------------------------------------------------- */

static void die(const char *what, int rc, const ember_error *err)
{
    fprintf(stderr, "table_bench: %s failed: %s: %s\n", what, ember_status_name(rc),
            err ? err->message : "");
    exit(1);
}

/* A CUDA runtime call of this program's own (not the table's). */
#define CK(call, what)                                                            \
    do {                                                                          \
        ember_error ck_err_;                                                      \
        ember_error_clear(&ck_err_);                                              \
        int ck_rc_ = EMBER_CUDA_CHECK((call), &ck_err_);                          \
        if (ck_rc_)                                                               \
            die((what), ck_rc_, &ck_err_);                                        \
    } while (0)

static void sync_stream(gpu_bench *g)
{
    CK(cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
}

static void *dev_alloc(size_t bytes, const char *what)
{
    void *p = NULL;
    CK(cudaMalloc(&p, bytes ? bytes : 1), what);
    return p;
}

static void *pinned_alloc(size_t bytes, const char *what)
{
    void *p = NULL;
    CK(cudaMallocHost(&p, bytes ? bytes : 1), what);
    return p;
}

/* What table.c hands a writing call: the clock for LRU, the next version. */
static ember_op next_op(gpu_bench *g)
{
    ember_op op;
    struct timespec ts;
    memset(&op, 0, sizeof op);
    clock_gettime(CLOCK_REALTIME, &ts);
    op.score.policy = EMBER_SCORE_LRU;
    op.score.now_ns = (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
    op.version = ++g->version;
    return op;
}

static void gpu_insert_or_assign(gpu_bench *g, gpu_tab *gt, const uint64_t *keys, size_t n,
                                 const float *values, const char *what)
{
    ember_op op = next_op(g);
    ember_error err;
    int rc = ember_gpu_insert_or_assign_async(gt->t, gt->s, &op, keys, n, values, NULL, &err,
                                              g->stream);
    if (rc)
        die(what, rc, &err);
}

static uint64_t table_size(gpu_bench *g, gpu_tab *gt)
{
    sync_stream(g);
    return ember_gpu_size(gt->t);
}

/* ---- keys on the host, copied once ----------------------------------------- */

typedef struct keygen_ctx {
    uint64_t *keys;
    uint64_t first;
    size_t n;
} keygen_ctx;

static int keygen_work(void *vctx, unsigned tid, unsigned nthr, ember_error *err)
{
    keygen_ctx *c = vctx;
    size_t lo, hi;
    (void)err;
    slice(c->n, tid, nthr, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        c->keys[i] = bench_key(c->first + i);
    return 0;
}

/* Keys of ranks [first, first + m) into d_fill (through pinned h_fill). */
static void upload_ranks(gpu_bench *g, uint64_t first, size_t m)
{
    keygen_ctx c = {g->h_fill, first, m};
    unsigned nthr = m < 65536 ? 1 : g->o->threads;
    par_run(keygen_work, &c, nthr, NULL, NULL);
    CK(cudaMemcpyAsync(g->d_fill, g->h_fill, m * sizeof(uint64_t), cudaMemcpyHostToDevice,
                       g->stream),
       "copy fill keys");
    /* h_fill is rewritten by the next call: wait for this copy (and the calls
     * before it, which the fill does not overlap anyway). */
    sync_stream(g);
}

/* ---- bandwidths ------------------------------------------------------------- */

static double median_of(double *v, int n)
{
    double mn, med, mx;
    stats3(v, n, &mn, &med, &mx);
    return med;
}

static void measure_bandwidths(gpu_bench *g)
{
    size_t bytes = g->o->memcpy_bytes;
    size_t pbytes = bytes < (size_t)256 * MIB ? bytes : (size_t)256 * MIB;
    double v[5];
    void *a = dev_alloc(bytes, "cudaMalloc (copy bandwidth)");
    void *b = dev_alloc(bytes, "cudaMalloc (copy bandwidth)");
    void *h = pinned_alloc(pbytes, "cudaMallocHost (copy bandwidth)");

    CK(cudaMemsetAsync(a, 1, bytes, g->stream), "cudaMemsetAsync");
    CK(cudaMemsetAsync(b, 2, bytes, g->stream), "cudaMemsetAsync");
    memset(h, 3, pbytes);
    for (int dir = 0; dir < 3; dir++) {
        for (int i = -1; i < 5; i++) {   /* -1: warm-up */
            double t0 = now_s();
            if (dir == 0)
                CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g->stream), "d2d");
            else if (dir == 1)
                CK(cudaMemcpyAsync(h, a, pbytes, cudaMemcpyDeviceToHost, g->stream), "d2h");
            else
                CK(cudaMemcpyAsync(a, h, pbytes, cudaMemcpyHostToDevice, g->stream), "h2d");
            sync_stream(g);
            double s = now_s() - t0;
            if (i >= 0)
                v[i] = (dir == 0 ? 2.0 * (double)bytes : (double)pbytes) / s;
        }
        if (dir == 0)
            g->bw_d2d = median_of(v, 5);
        else if (dir == 1)
            g->bw_d2h = median_of(v, 5);
        else
            g->bw_h2d = median_of(v, 5);
    }
    CK(cudaFree(a), "cudaFree");
    CK(cudaFree(b), "cudaFree");
    CK(cudaFreeHost(h), "cudaFreeHost");
    printf("device copy: %zu MiB, read+written: median %.1f GB/s; pinned host: %zu MiB, "
           "device->host %.1f GB/s, host->device %.1f GB/s (median of 5)\n",
           bytes >> 20, g->bw_d2d / 1e9, pbytes >> 20, g->bw_d2h / 1e9, g->bw_h2d / 1e9);
}

/* ---- the table under test ---------------------------------------------------- */

/* Creates the table; 0, or a status when it cannot be had (the caller skips). */
static int create_table(gpu_bench *g, const gpu_case *gc, int tab, gpu_tab *gt)
{
    ember_table_config c;
    ember_error err;
    int rc;

    memset(gt, 0, sizeof *gt);
    ember_table_config_init(&c);
    c.dim = gc->dim;
    c.capacity = gc->capacity;
    c.optim.kind = tab_optim[tab];
    c.seed = g->o->seed;
    c.score_policy = EMBER_SCORE_LRU;
    c.hbm_bytes = gc->hbm_bytes;
    if ((rc = ember_table_config_validate(&c, &err)) != 0)
        die("ember_table_config_validate", rc, &err);

    double t0 = now_s();
    ember_gpu_table_options opt = {g->o->find_lanes};
    if ((rc = ember_gpu_table_create(&c, &opt, &gt->t, &err)) != 0) {
        fprintf(stderr, "table_bench: skipped: %s table, dim %u, capacity %llu, hbm %.2f GiB: "
                        "ember_gpu_table_create: %s: %s\n",
                tab_names[tab], gc->dim, (unsigned long long)gc->capacity,
                (double)gc->hbm_bytes / GIB, ember_status_name(rc), err.message);
        if (rc != EMBER_RESOURCE_EXHAUSTED)
            exit(1);
        return rc;
    }
    if ((rc = ember_gpu_scratch_create(gt->t, g->chunk > g->n ? g->chunk : g->n, &gt->s,
                                       &err)) != 0)
        die("ember_gpu_scratch_create", rc, &err);
    double secs = now_s() - t0;

    gt->tab = tab;
    gt->dim = gc->dim;
    gt->row_floats = ember_table_config_row_floats(&c);
    gt->capacity = ember_gpu_capacity(gt->t);
    gt->target = (uint64_t)llround(gc->lf * (double)gt->capacity);
    if (gt->target < 1)
        gt->target = 1;
    gt->universe = 2 * gt->capacity;
    gt->next_filler = gt->universe;
    ember_gpu_table_layout(gt->t, &gt->lay);
    gt->hybrid = gt->lay.rows_host > 0;
    printf("table: %s, dim %u, row %u floats (stride %u), %llu slots: %llu rows in HBM, "
           "%llu in pinned host memory; %.2f GiB device, %.2f GiB host; created in %.2f s\n",
           tab_names[tab], gt->dim, gt->row_floats, gt->lay.row_stride,
           (unsigned long long)gt->capacity, (unsigned long long)gt->lay.rows_hbm,
           (unsigned long long)gt->lay.rows_host, (double)gt->lay.bytes_device / GIB,
           (double)gt->lay.bytes_host / GIB, secs);
    fflush(stdout);
    return 0;
}

static void destroy_table(gpu_tab *gt)
{
    double t0 = now_s();
    ember_gpu_scratch_destroy(gt->s);
    ember_gpu_table_destroy(gt->t);
    double secs = now_s() - t0;
    if (secs > 0.5)
        printf("table: destroyed in %.2f s\n", secs);
    gt->s = NULL;
    gt->t = NULL;
}

/* Inserts fillers (ranks ≥ U, never looked up) until the size is within 0.1% of
 * P. Near λ 1.0 a filler that meets a full bucket evicts instead of adding, so
 * twice the gap goes in per round there; it gives up after 64 rounds (the fill
 * line and each measurement print the load factor reached). */
static void top_up(gpu_bench *g, gpu_tab *gt)
{
    uint64_t slack = gt->target / 1000;
    int crowded = (double)gt->target > 0.9 * (double)gt->capacity;
    for (int round = 0; round < 64; round++) {
        uint64_t size = table_size(g, gt);
        if (size + slack >= gt->target)
            return;
        uint64_t gap = gt->target - size, m = crowded ? 2 * gap : gap;
        if (m > g->chunk)
            m = g->chunk;
        upload_ranks(g, gt->next_filler, (size_t)m);
        gt->next_filler += m;
        gpu_insert_or_assign(g, gt, g->d_fill, (size_t)m, g->d_fillv, "top-up");
    }
}

static void fill_table(gpu_bench *g, gpu_tab *gt)
{
    double t0 = now_s();
    for (uint64_t r = 0; r < gt->target; r += g->chunk) {
        size_t m = gt->target - r < g->chunk ? (size_t)(gt->target - r) : g->chunk;
        upload_ranks(g, r, m);
        gpu_insert_or_assign(g, gt, g->d_fill, m, g->d_fillv, "fill");
    }
    top_up(g, gt);
    sync_stream(g);
    double secs = now_s() - t0;
    ember_table_stats st;
    memset(&st, 0, sizeof st);
    ember_gpu_stats(gt->t, &st);
    uint64_t size = ember_gpu_size(gt->t);
    printf("fill: %s table, dim %u: %llu keys inserted in %.2f s (keys drawn on the host, "
           "calls of %zu), size %llu / %llu slots (load factor %.4f, target %.4f), "
           "%llu evictions\n",
           tab_names[gt->tab], gt->dim,
           (unsigned long long)(gt->target + (gt->next_filler - gt->universe)), secs, g->chunk,
           (unsigned long long)size, (unsigned long long)gt->capacity,
           (double)size / (double)gt->capacity, (double)gt->target / (double)gt->capacity,
           (unsigned long long)st.evictions);
    fflush(stdout);
}

static size_t count_found(const uint8_t *found, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += found[i] != 0;
    return c;
}

/* Brings the found flags of the first n keys to the host and counts them. */
static size_t found_on_device(gpu_bench *g, size_t n)
{
    CK(cudaMemcpyAsync(g->h_found, g->d_found, n, cudaMemcpyDeviceToHost, g->stream),
       "copy found flags");
    sync_stream(g);
    return count_found(g->h_found, n);
}

/* Puts the table back into the state a timed call must find: the batch's absent
 * keys gone, size at P, every present-drawn key stored. Untimed. */
static void restore(gpu_bench *g, gpu_tab *gt, const gpu_batch *bb)
{
    ember_error err;
    int rc;
    if (bb->na && (rc = ember_gpu_erase_async(gt->t, gt->s, g->d_absent, bb->na, &err, g->stream)))
        die("restore: erase", rc, &err);
    top_up(g, gt);
    /* find_or_insert touches the present keys' scores first, so when it must
     * re-create one (λ 1.0: an eviction took it), what it evicts in turn is a
     * key outside the batch; a second pass mops up what the first evicted. */
    for (int round = 0; round < 8 && bb->np; round++) {
        ember_op op = next_op(g);
        rc = ember_gpu_find_or_insert_async(gt->t, gt->s, &op, g->d_present, bb->np, g->d_out,
                                            g->d_found, NULL, &err, g->stream);
        if (rc)
            die("restore: find_or_insert", rc, &err);
        if (found_on_device(g, bb->np) == bb->np)
            return;
    }
    fprintf(stderr, "table_bench: warning: some present keys could not be kept in the table\n");
}

/* ---- measuring ---------------------------------------------------------------- */

/* One call of `op` on the batch, timed HKV's way: host clock around the call
 * and the stream's synchronisation. */
static double timed_call(gpu_bench *g, gpu_tab *gt, int op, size_t n)
{
    ember_error err;
    int rc;
    ember_op eop = next_op(g);

    sync_stream(g);   /* nothing of earlier work inside the window */
    double t0 = now_s();
    switch (op) {
    case OP_FIND:
        rc = ember_gpu_find_async(gt->t, g->d_keys, n, g->d_out, g->d_found, &err, g->stream);
        break;
    case OP_FIND_OR_INSERT:
        rc = ember_gpu_find_or_insert_async(gt->t, gt->s, &eop, g->d_keys, n, g->d_out, NULL, NULL,
                                            &err, g->stream);
        break;
    case OP_INSERT_OR_ASSIGN:
        rc = ember_gpu_insert_or_assign_async(gt->t, gt->s, &eop, g->d_keys, n, g->d_in, NULL, &err,
                                              g->stream);
        break;
    case OP_ASSIGN:
        rc = ember_gpu_assign_async(gt->t, gt->s, &eop, g->d_keys, n, g->d_in, NULL, NULL, &err,
                                    g->stream);
        break;
    case OP_SGD:
    case OP_ADAGRAD:
    case OP_ADAM:
        rc = ember_gpu_apply_gradients_async(gt->t, gt->s, &eop, g->d_keys, n, g->d_in, NULL, &err,
                                             g->stream);
        break;
    default:
        rc = ember_error_set(&err, EMBER_INTERNAL, "op %d is not a batch call", op);
        break;
    }
    if (!rc)
        rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(g->stream), &err);
    double secs = now_s() - t0;
    if (rc)
        die(op_labels[op], rc, &err);
    return secs;
}

/* Exports the whole table (or, for a warm-up, one call's worth) into the pinned
 * host buffers; *rows = rows exported. */
static double export_all(gpu_bench *g, gpu_tab *gt, int one_call, size_t *rows)
{
    ember_export_filter f;
    ember_error err;
    uint64_t cur = 0, end = ember_gpu_export_end(gt->t);

    memset(&f, 0, sizeof f);   /* every row, embeddings only */
    *rows = 0;
    sync_stream(g);
    double t0 = now_s();
    while (cur < end) {
        size_t n_out = 0;
        int rc = ember_gpu_export(gt->t, &f, &cur, g->n, g->h_exp_keys, g->h_exp_rows, NULL,
                                  NULL, &n_out, &err);
        if (rc)
            die("export", rc, &err);
        *rows += n_out;
        if (one_call)
            break;
    }
    return now_s() - t0;
}

static void print_result(const gpu_bench *g, const gpu_result *r)
{
    const hkv_ref *ref = hkv_find_ref(r->dim, r->hybrid, r->lf);
    double hkv = ref ? ref->bkps[r->op] : -1.0;
    printf("gpu %-24s dim %4u lf %.2f (%.4f) %-7s %-7s %8.4f B keys/s (2^30) [min %.4f max "
           "%.4f]  %9.1f M keys/s  %5.0f B/key %7.1f GB/s = %5.1f%% of %s  present %.1f%%  "
           "n %zu  reps %d",
           op_labels[r->op], r->dim, r->lf, r->lf_actual,
           r->op == OP_EXPORT ? "-" : dist_names[r->dist], r->hybrid ? "hybrid:" : "hbm:",
           r->kps_med / KEYS_2P30, r->kps_min / KEYS_2P30, r->kps_max / KEYS_2P30,
           r->kps_med / 1e6, r->bytes_per_key, r->kps_med * r->bytes_per_key / 1e9,
           100.0 * r->frac, r->op == OP_EXPORT ? "d2h" : "d2d", 100.0 * r->present, r->keys,
           r->reps);
    if (op_inserts(r->op))
        printf("  evictions %llu", (unsigned long long)r->evictions);
    if (hkv > 0.0)
        printf("  HKV %.3f ratio %.2fx", hkv, r->kps_med / KEYS_2P30 / hkv);
    printf("\n");
    fflush(stdout);
    (void)g;
}

static void measure_op(gpu_bench *g, gpu_tab *gt, const gpu_case *gc, const gpu_batch *bb,
                       int op, int dist, int *dirty, gpu_result *res)
{
    double kps[64], spent = 0.0;
    int reps = g->o->reps > 64 ? 64 : g->o->reps, done = 0;
    size_t keys = bb->n;
    double lf_actual = 0.0;
    uint64_t evictions = 0;

    for (int rep = -1; rep < reps; rep++) {   /* -1: the untimed warm-up */
        if (op != OP_EXPORT && *dirty) {
            restore(g, gt, bb);
            *dirty = 0;
        }
        if (rep == 0)
            lf_actual = (double)table_size(g, gt) / (double)gt->capacity;
        double secs;
        if (op == OP_EXPORT) {
            secs = export_all(g, gt, rep < 0, &keys);
        } else {
            secs = timed_call(g, gt, op, bb->n);
        }
        if (rep >= 0) {
            kps[done++] = (double)keys / secs;
            spent += secs;
        }
        if (op_inserts(op)) {
            if (rep >= 0) {
                ember_gpu_counts cnt;
                ember_error err;
                int rc = ember_gpu_scratch_counts(gt->s, g->stream, &cnt, &err);
                if (rc)
                    die("ember_gpu_scratch_counts", rc, &err);
                evictions = cnt.evictions;
            }
            /* Undo what the call added now, with the batch it used: the next
             * measurement may come with another batch. */
            restore(g, gt, bb);
            *dirty = 0;
        }
        if (op == OP_FIND && rep == 0) {
            size_t hits = found_on_device(g, bb->n);
            if (hits > bb->np + bb->n / 200 || hits + bb->n / 200 < bb->np)
                fprintf(stderr, "table_bench: note: find found %zu keys, %zu were meant to be "
                                "present\n", hits, bb->np);
        }
        if (op == OP_EXPORT && rep >= 0 && spent > EXPORT_BUDGET_S)
            break;
    }
    memset(res, 0, sizeof *res);
    res->op = op;
    res->dist = dist;
    res->hybrid = gt->hybrid;
    res->dim = gt->dim;
    res->row_floats = gt->row_floats;
    res->lf = gc->lf;
    res->lf_actual = lf_actual;
    res->capacity = gt->capacity;
    res->hbm_bytes = gc->hbm_bytes;
    res->rows_hbm = gt->lay.rows_hbm;
    res->rows_host = gt->lay.rows_host;
    res->present = op == OP_EXPORT ? 1.0 : (double)bb->np / (double)bb->n;
    res->keys = keys;
    res->reps = done;
    stats3(kps, done, &res->kps_min, &res->kps_med, &res->kps_max);
    res->bytes_per_key =
        op_bytes_per_key(op, gt->dim, op == OP_EXPORT ? gt->dim : gt->row_floats);
    res->frac = res->kps_med * res->bytes_per_key / (op == OP_EXPORT ? g->bw_d2h : g->bw_d2d);
    res->evictions = evictions;
    print_result(g, res);
}

/* Values and gradients of this dim: small, finite, the same for every op; the
 * fill calls' values repeat the batch's. */
static void load_values(gpu_bench *g, uint32_t dim)
{
    bench_rng r = {g->o->seed ^ UINT64_C(0xa5a5a5a5a5a5a5a5)};
    size_t row_bytes = (size_t)dim * sizeof(float);
    for (size_t i = 0; i < g->n * dim; i++)
        g->h_vals[i] = (float)(rng_unit(&r) * 0.02 - 0.01);
    CK(cudaMemcpy(g->d_in, g->h_vals, g->n * row_bytes, cudaMemcpyHostToDevice), "copy values");
    for (size_t done = 0; done < g->chunk; done += g->n) {
        size_t m = g->chunk - done < g->n ? g->chunk - done : g->n;
        CK(cudaMemcpy((char *)g->d_fillv + done * row_bytes, g->d_in, m * row_bytes,
                      cudaMemcpyDeviceToDevice),
           "copy fill values");
    }
}

/* Draws a batch on the host and copies it (and its present/absent halves) to
 * the device. */
static void upload_batch(gpu_bench *g, const gpu_tab *gt, int dist, uint64_t seed,
                         gpu_batch *bb)
{
    bb->n = g->n;
    draw_batch(g->o, gt->target, gt->universe, dist, seed, g->n, g->h_keys, g->h_present,
               &bb->np, g->h_absent, &bb->na);
    CK(cudaMemcpy(g->d_keys, g->h_keys, bb->n * sizeof(uint64_t), cudaMemcpyHostToDevice),
       "copy batch keys");
    CK(cudaMemcpy(g->d_present, g->h_present, bb->np * sizeof(uint64_t),
                  cudaMemcpyHostToDevice),
       "copy present keys");
    CK(cudaMemcpy(g->d_absent, g->h_absent, bb->na * sizeof(uint64_t), cudaMemcpyHostToDevice),
       "copy absent keys");
}

/* ---- the shapes to measure ------------------------------------------------------ */

/* --hkv-matrix: docs/BENCHMARKS.md's comparison, one process. HBM: dim 64 at λ 0.5,
 * 0.75, 1.0 (64 M); dim 8 at λ 0.5 (128 M, HKV's dim-8 capacity); dim 128 at
 * λ 0.5 (64 M; no HKV figure). Hybrid: dim 64, λ 0.5, 128 M, 16 GiB of rows in
 * HBM, without apply_gradients (Adam's 784-byte rows would put 84 GiB in pinned
 * host memory). --ops narrows every shape. */
static size_t hkv_matrix(const bench_opts *o, gpu_case *cases)
{
    static const struct {
        uint32_t dim;
        double lf;
        uint64_t capacity, hbm_gib;
    } m[] = {
        {64, 0.50, UINT64_C(64) << 20, 0},  {64, 0.75, UINT64_C(64) << 20, 0},
        {64, 1.00, UINT64_C(64) << 20, 0},  {8, 0.50, UINT64_C(128) << 20, 0},
        {128, 0.50, UINT64_C(64) << 20, 0}, {64, 0.50, UINT64_C(128) << 20, 16},
    };
    size_t n = sizeof m / sizeof m[0];
    for (size_t i = 0; i < n; i++) {
        gpu_case *c = &cases[i];
        c->dim = m[i].dim;
        c->lf = m[i].lf;
        c->capacity = o->quick ? o->capacity : m[i].capacity;
        c->hbm_bytes = m[i].hbm_gib << 30;
        if (o->quick && m[i].hbm_gib)   /* half the quick table's SGD rows on the host */
            c->hbm_bytes = o->capacity * m[i].dim * sizeof(float) / 2;
        memcpy(c->ops, o->ops, sizeof c->ops);
        if (m[i].hbm_gib)
            c->ops[OP_SGD] = c->ops[OP_ADAGRAD] = c->ops[OP_ADAM] = 0;
    }
    return n;
}

static size_t cases_of(const bench_opts *o, gpu_case *cases)
{
    size_t n = 0;
    if (o->hkv_matrix)
        return hkv_matrix(o, cases);
    for (int di = 0; di < o->n_dims; di++)
        for (int li = 0; li < o->n_lfs; li++) {
            gpu_case *c = &cases[n++];
            c->dim = o->dims[di];
            c->lf = o->lfs[li];
            c->capacity = o->capacity;
            c->hbm_bytes = o->hbm_bytes;
            memcpy(c->ops, o->ops, sizeof c->ops);
        }
    return n;
}

/* ---- summary, CSV ---------------------------------------------------------------- */

static int same_group(const gpu_result *a, const gpu_result *b)
{
    return a->dim == b->dim && a->capacity == b->capacity && a->hbm_bytes == b->hbm_bytes &&
           a->hybrid == b->hybrid && (a->dist == b->dist || a->op == OP_EXPORT ||
                                      b->op == OP_EXPORT);
}

static void print_summary(const gpu_bench *g, const gpu_result *res, size_t nres)
{
    static const int order[OP_COUNT] = {OP_INSERT_OR_ASSIGN, OP_FIND, OP_FIND_OR_INSERT,
                                        OP_ASSIGN, OP_SGD, OP_ADAGRAD, OP_ADAM,
                                        OP_EXPORT};
    int *shown = xmalloc(nres * sizeof *shown);
    memset(shown, 0, nres * sizeof *shown);

    printf("\nsummary: backend gpu on %s, batch %zu, median of --reps %d; B keys/s = 2^30 "
           "keys/s; device copy %.1f GB/s (read+written), device->host %.1f GB/s\n"
           "HKV = HierarchicalKV's merlin_hashtable_benchmark on one H200 "
           "(docs/BENCHMARKS.md); ratio = ours / HKV\n",
           g->device, g->n, g->o->reps, g->bw_d2d / 1e9, g->bw_d2h / 1e9);
    if (!strstr(g->device, "H200"))
        printf("note: this device is not an H200: the ratios compare different cards\n");

    for (size_t first = 0; first < nres; first++) {
        if (shown[first] || res[first].op == OP_EXPORT)
            continue;
        const gpu_result *h = &res[first];
        printf("\ndim %u, capacity %llu slots, %s, %s keys\n", h->dim,
               (unsigned long long)h->capacity,
               h->hybrid ? "hybrid" : "pure HBM", dist_names[h->dist]);
        if (h->hybrid)
            printf("  hybrid: hbm_bytes %.2f GiB, %llu rows in HBM, %llu in pinned host "
                   "memory\n",
                   (double)h->hbm_bytes / GIB, (unsigned long long)h->rows_hbm,
                   (unsigned long long)h->rows_host);
        printf("  %-5s %-25s %9s %8s %8s   %s\n", "lf", "op", "ours", "HKV", "ratio",
               "target");
        for (size_t i = first; i < nres; i++) {
            if (shown[i] || !same_group(h, &res[i]))
                continue;
            /* one λ at a time, ops in HKV's column order */
            double lf = res[i].lf;
            for (int k = 0; k < OP_COUNT; k++)
                for (size_t j = i; j < nres; j++) {
                    const gpu_result *r = &res[j];
                    if (shown[j] || r->op != order[k] || r->lf != lf || !same_group(h, r))
                        continue;
                    shown[j] = 1;
                    const hkv_ref *ref = hkv_find_ref(r->dim, r->hybrid, r->lf);
                    double ours = r->kps_med / KEYS_2P30, hkv = ref ? ref->bkps[r->op] : -1.0;
                    double tabs, trel;
                    printf("  %-5.2f %-25s %9.4f", r->lf, op_labels[r->op], ours);
                    if (hkv > 0.0)
                        printf(" %8.3f %7.2fx", hkv, ours / hkv);
                    else
                        printf(" %8s %8s", "-", "-");
                    if (target_of(r->op, r->dim, r->hybrid, &tabs, &trel)) {
                        if (tabs > 0.0)
                            printf("   >= %.2f B keys/s: %s", tabs, ours >= tabs ? "met"
                                                                             : "MISSED");
                        else if (hkv > 0.0)
                            printf("   >= %.1fx HKV: %s", trel,
                                   ours >= trel * hkv ? "met" : "MISSED");
                    }
                    if (ref && ref->capacity != r->capacity)
                        printf("   (HKV's capacity: %llu)", (unsigned long long)ref->capacity);
                    printf("\n");
                }
        }
    }
    free(shown);
}

static void write_csv(const gpu_bench *g, const gpu_result *res, size_t nres)
{
    FILE *f = fopen(g->o->csv, "w");
    if (!f) {
        fprintf(stderr, "table_bench: cannot write %s\n", g->o->csv);
        exit(1);
    }
    fprintf(f, "backend,device,op,dim,row_floats,load_factor,load_factor_actual,dist,memory,"
               "capacity,hbm_bytes,rows_hbm,rows_host,batch,reps,keys,present,"
               "min_bkeys_s_2p30,median_bkeys_s_2p30,max_bkeys_s_2p30,median_mkeys_s,"
               "bytes_per_key,gb_s,bandwidth_fraction,bandwidth_of,evictions,hkv_bkeys_s_2p30,"
               "ratio_vs_hkv\n");
    for (size_t i = 0; i < nres; i++) {
        const gpu_result *r = &res[i];
        const hkv_ref *ref = hkv_find_ref(r->dim, r->hybrid, r->lf);
        double hkv = ref ? ref->bkps[r->op] : -1.0;
        fprintf(f, "gpu,\"%s\",%s,%u,%u,%.4f,%.4f,%s,%s,%llu,%llu,%llu,%llu,%zu,%d,%zu,%.4f,"
                   "%.6f,%.6f,%.6f,%.3f,%.0f,%.3f,%.4f,%s,%llu,",
                g->device, op_names[r->op], r->dim, r->row_floats, r->lf, r->lf_actual,
                r->op == OP_EXPORT ? "-" : dist_names[r->dist], r->hybrid ? "hybrid" : "hbm",
                (unsigned long long)r->capacity, (unsigned long long)r->hbm_bytes,
                (unsigned long long)r->rows_hbm, (unsigned long long)r->rows_host, g->n,
                r->reps, r->keys, r->present, r->kps_min / KEYS_2P30, r->kps_med / KEYS_2P30,
                r->kps_max / KEYS_2P30, r->kps_med / 1e6, r->bytes_per_key,
                r->kps_med * r->bytes_per_key / 1e9, r->frac,
                r->op == OP_EXPORT ? "d2h" : "d2d", (unsigned long long)r->evictions);
        if (hkv > 0.0)
            fprintf(f, "%.3f,%.4f\n", hkv, r->kps_med / KEYS_2P30 / hkv);
        else
            fprintf(f, ",\n");
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "table_bench: cannot write %s\n", g->o->csv);
        exit(1);
    }
    printf("\ncsv: %s\n", g->o->csv);
}

/* ---- main ------------------------------------------------------------------------- */

static void alloc_buffers(gpu_bench *g)
{
    size_t n = g->n, md = g->max_dim;
    g->d_keys = dev_alloc(n * sizeof(uint64_t), "cudaMalloc keys");
    g->d_present = dev_alloc(n * sizeof(uint64_t), "cudaMalloc keys");
    g->d_absent = dev_alloc(n * sizeof(uint64_t), "cudaMalloc keys");
    g->d_fill = dev_alloc(g->chunk * sizeof(uint64_t), "cudaMalloc keys");
    g->d_in = dev_alloc(n * md * sizeof(float), "cudaMalloc values");
    g->d_out = dev_alloc(n * md * sizeof(float), "cudaMalloc values");
    g->d_fillv = dev_alloc(g->chunk * md * sizeof(float), "cudaMalloc values");
    g->d_found = dev_alloc(n, "cudaMalloc found");
    CK(cudaMemset(g->d_out, 0, n * md * sizeof(float)), "cudaMemset");
    CK(cudaMemset(g->d_found, 0, n), "cudaMemset");
    g->h_keys = xmalloc(n * sizeof(uint64_t));
    g->h_present = xmalloc(n * sizeof(uint64_t));
    g->h_absent = xmalloc(n * sizeof(uint64_t));
    g->h_vals = xmalloc(n * md * sizeof(float));
    g->h_fill = pinned_alloc(g->chunk * sizeof(uint64_t), "cudaMallocHost");
    g->h_found = pinned_alloc(n, "cudaMallocHost");
    g->h_exp_keys = pinned_alloc(n * sizeof(uint64_t), "cudaMallocHost");
    g->h_exp_rows = pinned_alloc(n * md * sizeof(float), "cudaMallocHost");
    /* Fault the export buffers in now, so that no timed export pays for it. */
    memset(g->h_exp_keys, 0, n * sizeof(uint64_t));
    memset(g->h_exp_rows, 0, n * md * sizeof(float));
}

static void free_buffers(gpu_bench *g)
{
    void *dev[] = {g->d_keys, g->d_present, g->d_absent, g->d_fill,
                   g->d_in,   g->d_out,     g->d_fillv,  g->d_found};
    void *pinned[] = {g->h_fill, g->h_found, g->h_exp_keys, g->h_exp_rows};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        CK(cudaFree(dev[i]), "cudaFree");
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++)
        CK(cudaFreeHost(pinned[i]), "cudaFreeHost");
    free(g->h_keys);
    free(g->h_present);
    free(g->h_absent);
    free(g->h_vals);
}

int gpu_bench_main(const bench_opts *o)
{
    gpu_bench g;
    ember_error err;
    int ndev = 0, rc;
    uint64_t mem_total = 0, mem_free = 0;
    double t_start = now_s();

    if ((rc = ember_cuda_device_count(&ndev, &err)) != 0) {
        fprintf(stderr, "table_bench: --backend gpu: cannot count CUDA devices: %s: %s\n",
                ember_status_name(rc), err.message);
        return 1;
    }
    if (ndev == 0) {
        fprintf(stderr, "table_bench: --backend gpu: no CUDA device is visible; skipped\n");
        return 77;
    }

    memset(&g, 0, sizeof g);
    g.o = o;
    g.n = o->batch;
    if ((rc = ember_cuda_device_describe(0, g.device, sizeof g.device, &mem_total, &mem_free,
                                         &err)) != 0)
        die("ember_cuda_device_describe", rc, &err);

    gpu_case cases[MAX_LIST * MAX_LIST];
    size_t ncases = cases_of(o, cases);
    for (size_t i = 0; i < ncases; i++)
        g.max_dim = cases[i].dim > g.max_dim ? cases[i].dim : g.max_dim;
    g.chunk = FILL_CHUNK_MAX;
    if (g.chunk * g.max_dim * sizeof(float) > ((size_t)1 << 30))
        g.chunk = ((size_t)1 << 30) / (g.max_dim * sizeof(float));
    if (g.chunk < g.n)
        g.chunk = g.n;

    printf("table_bench: backend gpu on %s (%.1f GiB, %.1f GiB free), batch %zu, reps %d, "
           "hit %.2f, zipf s %.2f, seed %llu, fill calls of %zu keys%s%s%s\n",
           g.device, (double)mem_total / GIB, (double)mem_free / GIB, g.n, o->reps, o->hit,
           o->zipf_s, (unsigned long long)o->seed, g.chunk, o->quick ? " (quick)" : "",
           o->hkv_matrix ? " (hkv matrix)" : "",
           o->find_lanes == 16 ? " (find: 16 lanes)"
           : o->find_lanes == 1 ? " (find: 1 lane per key, experimental)" : "");
    printf("method: HierarchicalKV's (keys and values in device memory; host clock around one "
           "call + cudaStreamSynchronize; LRU); median of --reps after one warm-up call; after "
           "each call that inserts, an untimed restore (absent keys erased, size topped up to "
           "lambda*capacity, present keys re-created) holds the load factor and the %.0f%% "
           "hit rate; see table_bench_gpu.c\n",
           100.0 * o->hit);
    fflush(stdout);

    CK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    measure_bandwidths(&g);
    alloc_buffers(&g);

    size_t max_res = ncases * (size_t)OP_COUNT * DIST_COUNT;
    gpu_result *res = xmalloc(max_res * sizeof *res);
    size_t nres = 0;
    uint32_t loaded_dim = 0;

    for (size_t ci = 0; ci < ncases; ci++) {
        const gpu_case *gc = &cases[ci];
        if (gc->dim != loaded_dim) {
            load_values(&g, gc->dim);
            loaded_dim = gc->dim;
        }
        for (int tab = 0; tab < TAB_COUNT; tab++) {
            int any = 0;
            for (int op = 0; op < OP_COUNT; op++)
                any |= gc->ops[op] && op_table(op) == tab;
            if (!any)
                continue;
            gpu_tab gt;
            if (create_table(&g, gc, tab, &gt) != 0)
                continue;
            fill_table(&g, &gt);
            for (int d = 0; d < DIST_COUNT; d++) {
                if (!o->dists[d])
                    continue;
                gpu_batch bb;
                int dirty = 1;
                upload_batch(&g, &gt, d, o->seed * 1000003u + (uint64_t)d * 7919u + gc->dim,
                             &bb);
                for (int op = 0; op < OP_COUNT; op++) {
                    if (!gc->ops[op] || op_table(op) != tab)
                        continue;
                    /* export does not depend on the keys' distribution: once. */
                    if (op == OP_EXPORT && d != (o->dists[DIST_UNIFORM] ? DIST_UNIFORM
                                                                         : DIST_ZIPF))
                        continue;
                    measure_op(&g, &gt, gc, &bb, op, d, &dirty, &res[nres++]);
                }
            }
            destroy_table(&gt);
        }
    }

    print_summary(&g, res, nres);
    if (o->csv)
        write_csv(&g, res, nres);
    printf("\ntotal: %.1f s\n", now_s() - t_start);

    free(res);
    free_buffers(&g);
    CK(cudaStreamDestroy(g.stream), "cudaStreamDestroy");
    return 0;
}

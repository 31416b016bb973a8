/*
 * table_bench.c — throughput of the table's batched operations, in the units of
 * docs/BENCHMARKS.md, next to this machine's memcpy bandwidth.
 *
 * Conventions (HierarchicalKV's merlin_hashtable_benchmark, adapted to a CPU):
 *
 *   - One table per (dim, load factor, optimizer): SGD for find, find_or_insert,
 *     insert_or_assign, assign, export and apply_gradients with SGD; Adagrad and
 *     Adam for apply_gradients with those optimizers.
 *     Capacity 4,194,304 keys by default (64 M is the GPU convention; at dim 128
 *     with Adam it would not fit this kind of host), LRU scores.
 *   - Before timing, the table is filled with insert_or_assign to the load factor
 *     λ: P = λ·capacity keys, then topped up with "filler" keys (never looked up)
 *     until the size is within 0.1% of P, since at λ 1.0 full buckets evict.
 *   - Keys are ranks scrambled by a bijective mixer (splitmix64's finaliser,
 *     independent of the table's bucket hash), so hot ranks spread over buckets.
 *     Ranks [0, P) are present, ranks [P, U) absent, U = 2·capacity; fillers
 *     come from ranks ≥ U.
 *   - A batch of n keys (default 1,048,576): each key is present with probability
 *     --hit (0.6) and absent otherwise. Uniform: a uniform rank of the chosen
 *     set. Zipf: a Zipf(s = --zipf, 1.05) rank of the chosen set, drawn by
 *     rejection-inversion (Hörmann & Derflinger 1996), so the batch holds
 *     duplicates; present Zipf ranks are permuted (r·m mod P) so that the hot
 *     keys are not simply the first ones filled, which LRU would evict first.
 *   - Threads (default: online cores) each take one contiguous slice of the
 *     batch and call the table API on it, all released by one barrier; the
 *     time runs from the first thread starting to the last one finishing (each
 *     reads the clock itself). Figures are aggregate: batch / time.
 *   - Load factor and hit rate are kept constant across repetitions: after
 *     each run of an inserting op (find_or_insert, insert_or_assign,
 *     apply_gradients), and before the first run on a new batch, the state is
 *     restored, untimed: the batch's absent keys are erased, the table
 *     is topped up with fillers to P, and find_or_insert on the batch's present
 *     keys re-creates any that an eviction pushed out (until all are there), so
 *     every timed call sees the same λ and exactly the intended present keys.
 *   - export scans the whole table (embeddings only), each thread its share of
 *     the cursor range; the key distribution does not apply to it, and its
 *     "keys" are the rows exported.
 *
 * Units: billions of keys/s are 2^30 keys/s (as in docs/BENCHMARKS.md); millions of
 * keys/s are 10^6 keys/s. memcpy bandwidth counts bytes read + bytes written
 * (2 × bytes copied) per second, 10^9 bytes = 1 GB, all threads each copying
 * its slice of one large buffer. The fraction of memcpy bandwidth of an op is
 * keys/s × value bytes per key / memcpy bandwidth, where value bytes per key
 * (floats of 4 bytes; keys, scores and metadata not counted) are:
 *   find, find_or_insert   dim·4 read from the table + dim·4 written to the output
 *   insert_or_assign,
 *   assign                 dim·4 read from the input + dim·4 written to the table
 *   apply_gradients        dim·4 of gradient read + row_floats·4 read and written
 *                          (row_floats = ember_table_row_floats: embedding + slots)
 *   export                 row read + written (dim·4 each: embedding-only rows)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_keys.h"
#include "storage/table.h"
#include "table_bench.h"

_Static_assert(BENCH_KEY_RESERVED_MIN == EMBER_KEY_RESERVED_MIN,
               "bench_keys.h's copy of the reserved-key bound is ember's");

/* ---- what can be measured -------------------------------------------------- */

const char *const op_names[OP_COUNT] = {
    "find", "find_or_insert", "insert_or_assign", "assign", "sgd", "adagrad", "adam", "export",
};

/* The name on each measurement's line. */
const char *const op_labels[OP_COUNT] = {
    "find", "find_or_insert", "insert_or_assign", "assign", "apply_gradients(sgd)",
    "apply_gradients(adagrad)", "apply_gradients(adam)", "export",
};

const char *const dist_names[DIST_COUNT] = {"uniform", "zipf"};
const int tab_optim[TAB_COUNT] = {EMBER_OPTIM_SGD, EMBER_OPTIM_ADAGRAD, EMBER_OPTIM_ADAM};
const char *const tab_names[TAB_COUNT] = {"sgd", "adagrad", "adam"};

int op_table(int op)
{
    return op == OP_ADAGRAD ? TAB_ADAGRAD : op == OP_ADAM ? TAB_ADAM : TAB_SGD;
}

int op_inserts(int op)
{
    return op == OP_FIND_OR_INSERT || op == OP_INSERT_OR_ASSIGN || op == OP_SGD ||
           op == OP_ADAGRAD || op == OP_ADAM;
}

double op_bytes_per_key(int op, uint32_t dim, uint32_t row_floats)
{
    double d = 4.0 * dim;
    switch (op) {
    case OP_SGD:
    case OP_ADAGRAD:
    case OP_ADAM:
        return d + 2.0 * 4.0 * row_floats;
    default:
        return 2.0 * d;
    }
}

typedef const ember_table_backend *(*backend_getter)(void);
static const struct {
    const char *name;
    backend_getter get;
} backends[] = {
    {"cpu", ember_table_cpu_backend},
};

typedef struct bench_result {
    int op, dist;
    uint32_t dim, row_floats;
    double lf, lf_actual;         /* asked for; size / capacity before timing */
    double present;               /* fraction of batch keys present before the call */
    size_t keys;                  /* keys (export: rows) per timed call */
    double kps_min, kps_med, kps_max;
    double bytes_per_key;
    double memcpy_frac;           /* of the median memcpy bandwidth */
} bench_result;

/* ---- time, random numbers, keys ------------------------------------------- */

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* ---- running on all threads ---------------------------------------------- */

typedef struct bench_par {
    bench_work_fn fn;
    void *ctx;
    unsigned nthr;
    pthread_barrier_t ready;
    pthread_mutex_t mu;
    double t_start, t_end;    /* first worker's start, last worker's end */
    int rc;
    ember_error err;
} bench_par;

typedef struct bench_worker {
    bench_par *p;
    unsigned tid;
} bench_worker;

/* Each worker reads the clock itself, right after the barrier that releases all
 * of them and right after its work: the main thread, woken later (more threads
 * than cores), would read a start that is too late. */
static void *worker_main(void *arg)
{
    bench_worker *w = arg;
    bench_par *p = w->p;
    ember_error err;
    memset(&err, 0, sizeof err);
    pthread_barrier_wait(&p->ready);
    double t0 = now_s();
    int rc = p->fn(p->ctx, w->tid, p->nthr, &err);
    double t1 = now_s();
    pthread_mutex_lock(&p->mu);
    if (t0 < p->t_start)
        p->t_start = t0;
    if (t1 > p->t_end)
        p->t_end = t1;
    if (rc && !p->rc) {
        p->rc = rc;
        p->err = err;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Thread start-up is outside *secs. */
int par_run(bench_work_fn fn, void *ctx, unsigned nthr, double *secs,
                   ember_error *err)
{
    pthread_t tids[MAX_THREADS];
    bench_worker w[MAX_THREADS];
    bench_par p;
    unsigned i;
    int rc = 0;

    memset(&p, 0, sizeof p);
    p.fn = fn;
    p.ctx = ctx;
    p.nthr = nthr;
    p.t_start = HUGE_VAL;
    p.t_end = -HUGE_VAL;
    pthread_barrier_init(&p.ready, NULL, nthr);
    pthread_mutex_init(&p.mu, NULL);
    for (i = 0; i < nthr; i++) {
        w[i].p = &p;
        w[i].tid = i;
        if (pthread_create(&tids[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "table_bench: cannot start thread %u: %s\n", i, strerror(errno));
            exit(1);
        }
    }
    for (i = 0; i < nthr; i++)
        pthread_join(tids[i], NULL);
    if (p.rc) {
        rc = p.rc;
        if (err)
            *err = p.err;
    }
    pthread_barrier_destroy(&p.ready);
    pthread_mutex_destroy(&p.mu);
    if (secs)
        *secs = p.t_end - p.t_start;
    return rc;
}

void slice(size_t n, unsigned tid, unsigned nthr, size_t *lo, size_t *hi)
{
    *lo = (size_t)(((unsigned __int128)n * tid) / nthr);
    *hi = (size_t)(((unsigned __int128)n * (tid + 1)) / nthr);
}

/* ---- memcpy bandwidth ------------------------------------------------------ */

typedef struct copy_ctx {
    char *dst;
    const char *src;
    size_t bytes;
} copy_ctx;

static int copy_work(void *vctx, unsigned tid, unsigned nthr, ember_error *err)
{
    copy_ctx *c = vctx;
    size_t lo, hi;
    (void)err;
    slice(c->bytes / 64, tid, nthr, &lo, &hi);   /* whole cache lines each */
    memcpy(c->dst + lo * 64, c->src + lo * 64, (hi - lo) * 64);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void stats3(double *v, int n, double *mn, double *med, double *mx)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *mn = v[0];
    *mx = v[n - 1];
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Read + written bytes per second, median of `reps` copies after a warm-up.
 * The median, like the ops' figures: on a shared host a single copy can run at
 * half speed or less, so the fractions are only comparable within one run. */
static double memcpy_bandwidth(size_t bytes, unsigned nthr, int reps)
{
    copy_ctx c;
    double bw[64], mn, med, mx;
    int i;

    bytes &= ~(size_t)63;
    char *src = malloc(bytes), *dst = malloc(bytes);
    if (!src || !dst) {
        fprintf(stderr, "table_bench: cannot allocate 2 x %zu bytes for memcpy\n", bytes);
        exit(1);
    }
    memset(src, 1, bytes);   /* fault the pages in before timing */
    memset(dst, 2, bytes);
    c.dst = dst;
    c.src = src;
    c.bytes = bytes;
    if (reps > 64)
        reps = 64;
    par_run(copy_work, &c, nthr, NULL, NULL);
    for (i = 0; i < reps; i++) {
        double s;
        par_run(copy_work, &c, nthr, &s, NULL);
        bw[i] = 2.0 * (double)bytes / s;
    }
    free(src);
    free(dst);
    stats3(bw, reps, &mn, &med, &mx);
    printf("memcpy: %zu MiB, %u threads, read+written: min %.2f  median %.2f  max %.2f GB/s\n",
           bytes >> 20, nthr, mn / 1e9, med / 1e9, mx / 1e9);
    return med;
}

/* ---- random-row gather floor ------------------------------------------------ */

/* What find cannot beat on this host: copy rows of `row_bytes` from random places
 * of a slab as large as the table's rows into a batch-sized output, prefetching
 * 16 rows ahead, all threads. No hashing, no probing, no locks: the memory
 * system's price of one random row read + one sequential row write, which on a
 * virtual machine can be far below what sequential memcpy suggests. */
typedef struct gather_ctx {
    const char *slab;
    size_t slab_rows;
    char *out;
    size_t n;
    size_t row_bytes;
    const uint32_t *idx;
} gather_ctx;

static int gather_work(void *vctx, unsigned tid, unsigned nthr, ember_error *err)
{
    gather_ctx *c = vctx;
    size_t lo, hi;
    (void)err;
    slice(c->n, tid, nthr, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        if (i + 16 < hi) {
            const char *p = c->slab + (size_t)c->idx[i + 16] * c->row_bytes;
            for (size_t l = 0; l < c->row_bytes && l < 1024; l += 64)
                __builtin_prefetch(p + l, 0, 3);
        }
        memcpy(c->out + i * c->row_bytes, c->slab + (size_t)c->idx[i] * c->row_bytes,
               c->row_bytes);
    }
    return 0;
}

/* Rows/s of the gather floor for rows of `dim` floats (median of `reps`). */
static double gather_floor(uint32_t dim, size_t slab_rows, size_t n, char *out,
                           unsigned nthr, int reps, double memcpy_bw)
{
    gather_ctx c;
    double rate[64], mn, med, mx;
    c.row_bytes = (size_t)dim * sizeof(float);
    c.slab_rows = slab_rows;
    c.n = n;
    c.out = out;
    char *slab = malloc(slab_rows * c.row_bytes);
    uint32_t *idx = malloc(n * sizeof *idx);
    if (!slab || !idx) {
        fprintf(stderr, "table_bench: cannot allocate the gather floor's slab\n");
        exit(1);
    }
    memset(slab, 1, slab_rows * c.row_bytes);
    bench_rng r = {UINT64_C(0x5eed)};
    for (size_t i = 0; i < n; i++)
        idx[i] = (uint32_t)(rng_next(&r) % slab_rows);
    c.slab = slab;
    c.idx = idx;
    if (reps > 64)
        reps = 64;
    par_run(gather_work, &c, nthr, NULL, NULL);
    for (int i = 0; i < reps; i++) {
        double secs;
        par_run(gather_work, &c, nthr, &secs, NULL);
        rate[i] = (double)n / secs;
    }
    free(slab);
    free(idx);
    stats3(rate, reps, &mn, &med, &mx);
    double bytes = 2.0 * (double)c.row_bytes;
    printf("gather floor: dim %u, random %zu-byte rows from %zu MiB into the batch, %u threads: "
           "median %.3f M rows/s [min %.3f max %.3f]  %.2f GB/s = %.1f%% of memcpy\n",
           dim, c.row_bytes, (slab_rows * c.row_bytes) >> 20, nthr, med / 1e6, mn / 1e6,
           mx / 1e6, med * bytes / 1e9, 100.0 * med * bytes / memcpy_bw);
    return med;
}

/* ---- table calls, one slice per thread ------------------------------------ */

enum bench_work {
    W_FIND,
    W_FIND_OR_INSERT,
    W_INSERT_OR_ASSIGN,
    W_ASSIGN,
    W_APPLY_GRADIENTS,
    W_ERASE,
    W_EXPORT,
};

typedef struct op_ctx {
    ember_table *t;
    int work;                 /* an enum bench_work */
    const uint64_t *keys;
    size_t n;
    uint32_t dim;
    const float *in;          /* n × dim: values or gradients */
    float *out;               /* n × dim: find output, export rows */
    uint8_t *found;           /* n, or NULL */
    uint64_t *export_keys;    /* n */
    size_t *export_rows;      /* per thread */
    unsigned checked;         /* EMBER_CHECKED_* for the writes (--prechecked) */
} op_ctx;

/* Exports this thread's share of the cursor range [0, export_end) into its
 * slice of out[]. The cursor counts buckets (storage/cpu_table.c) and a call
 * goes on through whole buckets while they fit in max_rows, so a call could run
 * past the share's end into the next thread's; max_rows is held near the rows
 * the share still holds (buckets left × average occupancy, never below one
 * bucket), so that overshoot is at most a bucket or so. Rows exported twice are
 * real work and are counted. */
static int export_work(op_ctx *c, unsigned tid, unsigned nthr, ember_error *err)
{
    uint64_t end = ember_table_export_end(c->t);
    uint64_t cur = (uint64_t)(((unsigned __int128)end * tid) / nthr);
    uint64_t stop = (uint64_t)(((unsigned __int128)end * (tid + 1)) / nthr);
    uint64_t per_bucket = end ? (ember_table_size(c->t) + end - 1) / end : 0;
    size_t lo, hi, rows = 0;

    slice(c->n, tid, nthr, &lo, &hi);
    while (cur < stop) {
        size_t room = hi - lo, n_out = 0;
        uint64_t left = (stop - cur) * per_bucket;
        if (left < EMBER_BUCKET_SLOTS)
            left = EMBER_BUCKET_SLOTS;
        if (left < room)
            room = (size_t)left;
        int rc = ember_table_export(c->t, NULL, &cur, room, c->export_keys + lo,
                                    c->out + lo * c->dim, NULL, NULL, &n_out, err);
        if (rc)
            return rc;
        rows += n_out;
    }
    c->export_rows[tid] = rows;
    return 0;
}

static int op_work(void *vctx, unsigned tid, unsigned nthr, ember_error *err)
{
    op_ctx *c = vctx;
    size_t lo, hi;

    if (c->work == W_EXPORT)
        return export_work(c, tid, nthr, err);
    slice(c->n, tid, nthr, &lo, &hi);
    if (hi == lo)
        return 0;
    const uint64_t *k = c->keys + lo;
    size_t m = hi - lo, d = c->dim;
    uint8_t *found = c->found ? c->found + lo : NULL;
    switch (c->work) {
    case W_FIND:
        return ember_table_find(c->t, k, m, c->out + lo * d, found, err);
    case W_FIND_OR_INSERT:
        return ember_table_find_or_insert(c->t, k, m, c->out + lo * d, found, NULL, err);
    case W_INSERT_OR_ASSIGN:
        return ember_table_write(c->t, EMBER_WRITE_UPSERT, c->checked, k, m, c->in + lo * d,
                                 NULL, NULL, err);
    case W_ASSIGN:
        return ember_table_write(c->t, EMBER_WRITE_ASSIGN, c->checked, k, m, c->in + lo * d,
                                 found, NULL, err);
    case W_APPLY_GRADIENTS:
        return ember_table_write(c->t, EMBER_WRITE_GRADIENTS, c->checked, k, m,
                                 c->in + lo * d, NULL, NULL, err);
    case W_ERASE:
        return ember_table_erase(c->t, k, m, NULL, err);
    default:
        return ember_error_set(err, EMBER_INTERNAL, "unknown work %d", c->work);
    }
}

/* ---- buffers, the table under test, batches ------------------------------- */

typedef struct bench_bufs {
    size_t n;                 /* batch */
    float *in, *out;          /* n × max dim */
    uint8_t *found;           /* n */
    uint64_t *keys;           /* n: the batch */
    uint64_t *present;        /* n: the batch's keys drawn from the present set */
    uint64_t *absent;         /* n: ... from the absent set */
    uint64_t *scratch;        /* n: fill, fillers */
    uint64_t *export_keys;    /* n */
    size_t export_rows[MAX_THREADS];
} bench_bufs;

typedef struct bench_table {
    ember_table *t;
    int tab;                  /* an enum bench_tab */
    uint32_t dim, row_floats;
    uint64_t capacity;        /* slots */
    uint64_t target;          /* P = λ·capacity: ranks [0, P) are present */
    uint64_t universe;        /* U: ranks [P, U) are absent */
    uint64_t next_filler;     /* next filler rank, ≥ U */
} bench_table;

typedef struct bench_batch {
    size_t n, np, na;         /* batch, present-drawn, absent-drawn */
} bench_batch;

static void die_rc(const char *what, int rc, const ember_error *err)
{
    fprintf(stderr, "table_bench: %s failed: %s: %s\n", what, ember_status_name(rc),
            err ? err->message : "");
    exit(1);
}

/* Runs one table call over keys[n] on all threads; exits on error. */
static double run_work(const bench_opts *o, bench_table *bt, bench_bufs *b, int work,
                       const uint64_t *keys, size_t n, uint8_t *found, const char *what)
{
    op_ctx c;
    ember_error err;
    double secs = 0.0;

    memset(&c, 0, sizeof c);
    memset(&err, 0, sizeof err);
    c.t = bt->t;
    c.work = work;
    c.keys = keys;
    c.n = n;
    c.dim = bt->dim;
    c.in = b->in;
    c.out = b->out;
    c.found = found;
    c.export_keys = b->export_keys;
    c.export_rows = b->export_rows;
    c.checked = o->prechecked ? EMBER_CHECKED_KEYS | EMBER_CHECKED_VALUES : 0;
    int rc = par_run(op_work, &c, o->threads, &secs, &err);
    if (rc)
        die_rc(what, rc, &err);
    return secs;
}

/* Inserts fillers (ranks ≥ U, never looked up) until the size is within 0.1% of
 * P. At λ 1.0 a filler that lands in a full bucket evicts instead of adding, so
 * this takes several rounds there; it gives up after 64 and says how far it got. */
static void top_up(const bench_opts *o, bench_table *bt, bench_bufs *b)
{
    uint64_t slack = bt->target / 1000;
    for (int round = 0; round < 64; round++) {
        uint64_t size = ember_table_size(bt->t);
        if (size + slack >= bt->target)
            return;
        uint64_t gap = bt->target - size, m = 2 * gap;
        if (m > b->n)
            m = b->n;
        for (uint64_t i = 0; i < m; i++)
            b->scratch[i] = bench_key(bt->next_filler++);
        run_work(o, bt, b, W_INSERT_OR_ASSIGN, b->scratch, (size_t)m, NULL, "top-up");
    }
}

static void fill_table(const bench_opts *o, bench_table *bt, bench_bufs *b)
{
    double t0 = now_s();
    for (uint64_t r = 0; r < bt->target; r += b->n) {
        uint64_t m = bt->target - r < b->n ? bt->target - r : b->n;
        for (uint64_t i = 0; i < m; i++)
            b->scratch[i] = bench_key(r + i);
        run_work(o, bt, b, W_INSERT_OR_ASSIGN, b->scratch, (size_t)m, NULL, "fill");
    }
    top_up(o, bt, b);
    double secs = now_s() - t0;
    ember_table_stats st;
    ember_table_stats_get(bt->t, &st);
    printf("fill: %s table, dim %u, row %u floats: %llu keys inserted in %.2f s, "
           "size %llu / %llu slots (load factor %.4f, target %.4f), %llu evictions, "
           "%.2f GiB host\n",
           tab_names[bt->tab], bt->dim, bt->row_floats,
           (unsigned long long)(bt->target + (bt->next_filler - bt->universe)), secs,
           (unsigned long long)st.size, (unsigned long long)st.capacity, st.load_factor,
           (double)bt->target / (double)bt->capacity, (unsigned long long)st.evictions,
           (double)st.bytes_host / (double)(1u << 30));
}

void draw_batch(const bench_opts *o, uint64_t P, uint64_t U, int dist, uint64_t seed,
                size_t n, uint64_t *keys, uint64_t *present, size_t *np, uint64_t *absent,
                size_t *na)
{
    bench_rng r = {seed};
    uint64_t A = U - P;
    bench_zipf zp = {0}, za = {0};   /* set when dist is Zipf; GCC cannot tell */
    uint64_t mult = UINT64_C(0x9e3779b97f4a7c15) % P;

    if (dist == DIST_ZIPF) {
        zipf_init(&zp, P, o->zipf_s);
        zipf_init(&za, A, o->zipf_s);
        if (mult == 0)
            mult = 1;
        while (gcd64(mult, P) != 1)
            mult++;
    }
    *np = *na = 0;
    for (size_t i = 0; i < n; i++) {
        int pres = rng_unit(&r) < o->hit;
        uint64_t rank;
        if (dist == DIST_UNIFORM) {
            rank = pres ? rng_below(&r, P) : P + rng_below(&r, A);
        } else if (pres) {
            /* zipf rank → present rank by a bijection of [0, P). */
            rank = (uint64_t)(((unsigned __int128)zipf_draw(&zp, &r) * mult) % P);
        } else {
            rank = P + zipf_draw(&za, &r);
        }
        uint64_t k = bench_key(rank);
        keys[i] = k;
        if (pres)
            present[(*np)++] = k;
        else
            absent[(*na)++] = k;
    }
}

/* Draws the batch: keys[n], and the same keys split by the set they came from. */
static void make_batch(const bench_opts *o, const bench_table *bt, bench_bufs *b, int dist,
                       uint64_t seed, bench_batch *bb)
{
    bb->n = b->n;
    draw_batch(o, bt->target, bt->universe, dist, seed, b->n, b->keys, b->present, &bb->np,
               b->absent, &bb->na);
}

static size_t count_found(const uint8_t *found, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += found[i] != 0;
    return c;
}

/* Puts the table back into the state a timed call must find: the batch's absent
 * keys gone, size at P, every present-drawn key stored. Untimed. */
static void restore(const bench_opts *o, bench_table *bt, bench_bufs *b, const bench_batch *bb)
{
    if (bb->na)
        run_work(o, bt, b, W_ERASE, b->absent, bb->na, NULL, "restore: erase");
    top_up(o, bt, b);
    /* find_or_insert touches the present keys' scores first, so when it must
     * re-create one (λ 1.0: an eviction took it), what it evicts in turn is a key
     * outside the batch; a second pass mops up what the first evicted itself. */
    for (int round = 0; round < 8 && bb->np; round++) {
        run_work(o, bt, b, W_FIND_OR_INSERT, b->present, bb->np, b->found,
                 "restore: find_or_insert");
        if (count_found(b->found, bb->np) == bb->np)
            return;
    }
    fprintf(stderr, "table_bench: warning: some present keys could not be kept in the table\n");
}

/* ---- measuring -------------------------------------------------------------- */

static void print_result(const bench_opts *o, const bench_result *r)
{
    printf("%s %-24s dim %4u lf %.2f (%.3f) %-7s thr %u: %9.3f M keys/s = %8.5f B keys/s (2^30)"
           "  [min %.3f max %.3f M]  %5.0f B/key %7.2f GB/s = %5.1f%% of memcpy"
           "  present %.1f%%  n %zu\n",
           o->backend, op_labels[r->op], r->dim, r->lf, r->lf_actual,
           r->op == OP_EXPORT ? "-" : dist_names[r->dist], o->threads, r->kps_med / 1e6,
           r->kps_med / (double)(1u << 30), r->kps_min / 1e6, r->kps_max / 1e6,
           r->bytes_per_key, r->kps_med * r->bytes_per_key / 1e9, 100.0 * r->memcpy_frac,
           100.0 * r->present, r->keys);
    fflush(stdout);
}

static void measure_op(const bench_opts *o, bench_table *bt, bench_bufs *b,
                       const bench_batch *bb, int op, int dist, double lf, double memcpy_bw,
                       int *dirty, bench_result *res)
{
    static const int work_of[OP_COUNT] = {W_FIND, W_FIND_OR_INSERT, W_INSERT_OR_ASSIGN,
                                          W_ASSIGN, W_APPLY_GRADIENTS, W_APPLY_GRADIENTS,
                                          W_APPLY_GRADIENTS, W_EXPORT};
    double kps[64];
    int reps = o->reps > 64 ? 64 : o->reps;
    size_t keys = bb->n;
    double lf_actual = 0.0;
    uint8_t *found = (op == OP_FIND || op == OP_FIND_OR_INSERT || op == OP_ASSIGN) ? b->found
                                                                                 : NULL;

    for (int rep = 0; rep < reps; rep++) {
        if (op != OP_EXPORT && *dirty) {
            restore(o, bt, b, bb);
            *dirty = 0;
        }
        if (rep == 0)
            lf_actual = (double)ember_table_size(bt->t) / (double)bt->capacity;
        double secs = run_work(o, bt, b, work_of[op], b->keys, bb->n, found, op_labels[op]);
        if (op == OP_EXPORT) {
            keys = 0;
            for (unsigned i = 0; i < o->threads; i++)
                keys += b->export_rows[i];
        }
        kps[rep] = (double)keys / secs;
        /* Undo what an inserting call added now, with the batch it used: the
         * next measurement may come with another batch. */
        if (op_inserts(op)) {
            restore(o, bt, b, bb);
            *dirty = 0;
        }
        if (op == OP_FIND && rep == 0) {
            size_t hits = count_found(b->found, bb->n);
            if (hits > bb->np + bb->n / 200 || hits + bb->n / 200 < bb->np)
                fprintf(stderr, "table_bench: note: find found %zu keys, %zu were meant to be "
                                "present\n", hits, bb->np);
        }
    }
    memset(res, 0, sizeof *res);
    res->op = op;
    res->dist = dist;
    res->dim = bt->dim;
    res->row_floats = bt->row_floats;
    res->lf = lf;
    res->lf_actual = lf_actual;
    res->present = op == OP_EXPORT ? 1.0 : (double)bb->np / (double)bb->n;
    res->keys = keys;
    stats3(kps, reps, &res->kps_min, &res->kps_med, &res->kps_max);
    res->bytes_per_key = op_bytes_per_key(op, bt->dim, op == OP_EXPORT ? bt->dim : bt->row_floats);
    res->memcpy_frac = res->kps_med * res->bytes_per_key / memcpy_bw;
    print_result(o, res);
}

static void create_table(const bench_opts *o, const ember_table_backend *backend, int tab,
                         uint32_t dim, double lf, bench_table *bt)
{
    ember_table_config c;
    ember_error err;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = o->capacity;
    c.optim.kind = tab_optim[tab];
    c.seed = o->seed;
    memset(bt, 0, sizeof *bt);
    int rc = ember_table_create(&c, backend, &bt->t, &err);
    if (rc)
        die_rc("ember_table_create", rc, &err);
    bt->tab = tab;
    bt->dim = dim;
    bt->row_floats = ember_table_row_floats(bt->t);
    bt->capacity = ember_table_capacity(bt->t);
    bt->target = (uint64_t)llround(lf * (double)bt->capacity);
    if (bt->target < 1)
        bt->target = 1;
    bt->universe = 2 * bt->capacity;
    bt->next_filler = bt->universe;
}

/* ---- summary, CSV ------------------------------------------------------------ */

static void print_summary(const bench_opts *o, const bench_result *res, size_t nres,
                          double memcpy_bw)
{
    printf("\nsummary: backend %s, %u threads, batch %zu, capacity %llu, %d reps; median; "
           "memcpy %.2f GB/s (read+written)\n",
           o->backend, o->threads, o->batch, (unsigned long long)o->capacity, o->reps,
           memcpy_bw / 1e9);
    for (int d = 0; d < DIST_COUNT; d++) {
        if (!o->dists[d])
            continue;
        for (int di = 0; di < o->n_dims; di++) {
            for (int unit = 0; unit < 2; unit++) {
                printf("\n%s keys, dim %u: %s\n  lf ", dist_names[d], o->dims[di],
                       unit == 0 ? "M keys/s (10^6) (% of memcpy bandwidth)"
                                 : "B keys/s (2^30)");
                for (int op = 0; op < OP_COUNT; op++)
                    if (o->ops[op])
                        printf(" %17s", op_names[op]);
                printf("\n");
                for (int li = 0; li < o->n_lfs; li++) {
                    printf("%4.2f ", o->lfs[li]);
                    for (int op = 0; op < OP_COUNT; op++) {
                        if (!o->ops[op])
                            continue;
                        const bench_result *r = NULL;
                        for (size_t i = 0; i < nres; i++)
                            /* export has no distribution: measured once, shown in both. */
                            if (res[i].op == op && (res[i].dist == d || op == OP_EXPORT) &&
                                res[i].dim == o->dims[di] && res[i].lf == o->lfs[li])
                                r = &res[i];
                        if (!r)
                            printf(" %17s", "-");
                        else if (unit == 0)
                            printf(" %9.3f (%4.1f%%)", r->kps_med / 1e6, 100.0 * r->memcpy_frac);
                        else
                            printf(" %17.5f", r->kps_med / (double)(1u << 30));
                    }
                    printf("\n");
                }
            }
        }
    }
}

static void write_csv(const bench_opts *o, const bench_result *res, size_t nres,
                      double memcpy_bw)
{
    FILE *f = fopen(o->csv, "w");
    if (!f) {
        fprintf(stderr, "table_bench: cannot write %s: %s\n", o->csv, strerror(errno));
        exit(1);
    }
    fprintf(f, "backend,op,dim,row_floats,load_factor,load_factor_actual,dist,threads,batch,"
               "capacity,reps,keys,present,min_mkeys_s,median_mkeys_s,max_mkeys_s,"
               "median_bkeys_s_2p30,bytes_per_key,memcpy_gb_s,memcpy_fraction\n");
    for (size_t i = 0; i < nres; i++) {
        const bench_result *r = &res[i];
        fprintf(f, "%s,%s,%u,%u,%.4f,%.4f,%s,%u,%zu,%llu,%d,%zu,%.4f,%.4f,%.4f,%.4f,%.6f,%.0f,"
                   "%.3f,%.4f\n",
                o->backend, op_names[r->op], r->dim, r->row_floats, r->lf, r->lf_actual,
                r->op == OP_EXPORT ? "-" : dist_names[r->dist], o->threads, o->batch,
                (unsigned long long)o->capacity, o->reps, r->keys, r->present,
                r->kps_min / 1e6, r->kps_med / 1e6, r->kps_max / 1e6,
                r->kps_med / (double)(1u << 30), r->bytes_per_key, memcpy_bw / 1e9,
                r->memcpy_frac);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "table_bench: cannot write %s: %s\n", o->csv, strerror(errno));
        exit(1);
    }
    printf("\ncsv: %s\n", o->csv);
}

/* ---- options ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"usage: table_bench [options]\n"
"Throughput of the table's batched ops (docs/BENCHMARKS.md conventions).\n"
"\n"
"  --backend NAME    table backend: cpu or gpu (default cpu); gpu: see below\n"
"  --ops LIST        comma list of find,find_or_insert,insert_or_assign,assign,\n"
"                    sgd,adagrad,adam,export, or all (default all); sgd, adagrad\n"
"                    and adam are apply_gradients on a table with that optimizer\n"
"                    (apply_gradients: all three)\n"
"  --dims LIST       embedding dims (default 8,64,128)\n"
"  --lfs LIST        load factors in (0, 1] (default 0.5,0.75,1.0)\n"
"  --dist D          uniform, zipf or both (default both)\n"
"  --batch N         keys per timed call, split over the threads (default 1048576)\n"
"  --capacity N      table capacity in keys (default 4194304)\n"
"  --threads N       threads (default: online cores)\n"
"  --reps N          repetitions of each measurement, min/median/max (default 3)\n"
"  --hit F           fraction of batch keys present in the table (default 0.6)\n"
"  --zipf S          Zipf exponent (default 1.05)\n"
"  --seed N          seed of keys, values and table (default 1)\n"
"  --memcpy-mib N    buffer of the memcpy measurement (default 512)\n"
"  --csv FILE        also write one CSV row per measurement\n"
"  --quick           smoke test: capacity 65536, batch 16384, 1 rep, memcpy 32 MiB\n"
"                    (flags given explicitly win)\n"
"  --hbm-gb X        gpu: at most X GiB of rows in device memory, the rest in pinned\n"
"                    host memory (default 0: all in device memory)\n"
"  --hkv-matrix      gpu: the HierarchicalKV comparison of docs/BENCHMARKS.md in\n"
"                    one run (dim 64 at lf 0.5,0.75,1.0 and capacity 64 M; dim 8 at\n"
"                    lf 0.5, 128 M; dim 128 at lf 0.5, 64 M; hybrid dim 64, lf 0.5,\n"
"                    128 M, 16 GiB HBM, without apply_gradients); --dims, --lfs,\n"
"                    --capacity and --hbm-gb are ignored, --ops narrows it\n"
"  --find-lanes N    gpu: threads per key in find, 8 (default), 16, or 1 (one lane\n"
"                    per key, the warp moving rows: experimental, not yet run on a\n"
"                    GPU); the table option ember_gpu_table_options.find_lanes, for\n"
"                    A/B runs\n"
"  --prechecked      cpu: the timed writes (insert_or_assign, assign,\n"
"                    apply_gradients) call ember_table_write vouching for keys and\n"
"                    values, as a server that validated the wire bytes does: the\n"
"                    table's own validation pass is left out\n"
"  --help\n"
"\n"
"Method: the table (LRU) is filled with insert_or_assign to the load factor, then\n"
"each op is timed on one batch whose keys are present with probability --hit;\n"
"uniform keys, or Zipf keys (duplicates within the batch) over the present and\n"
"absent key sets. Each thread calls the API on its contiguous slice of the batch;\n"
"time runs from the first thread starting to the last finishing. Between runs of ops\n"
"that insert (find_or_insert, insert_or_assign, apply_gradients) the state is\n"
"restored, untimed (absent keys erased, size topped up, present keys re-created),\n"
"so each timed call sees the same load factor and hit rate. export scans the\n"
"whole table (embeddings), threads splitting the cursor range; keys = rows.\n"
"\n"
"Units: B keys/s = 2^30 keys/s; M keys/s = 10^6 keys/s. memcpy bandwidth counts\n"
"bytes read + bytes written per second (2 x bytes copied), all threads, 1 GB =\n"
"10^9 B. An op's fraction of it = keys/s x value bytes per key / memcpy bandwidth,\n"
"with value bytes per key (4-byte floats; keys and metadata not counted):\n"
"  find, find_or_insert      dim*4 read from the table + dim*4 written out\n"
"  insert_or_assign, assign  dim*4 read from the input + dim*4 written\n"
"  apply_gradients           dim*4 gradient read + row_floats*4 read and written\n"
"                            (row_floats: embedding + optimizer slots)\n"
"  export                    row read + written (dim*4 each)\n"
"\n"
"--backend gpu (HierarchicalKV's merlin_hashtable_benchmark conventions; details\n"
"in table_bench_gpu.c): defaults capacity 67108864, dims 64, uniform keys; keys,\n"
"values and outputs in device memory before timing; time = host clock around one\n"
"call of the stream-ordered API + cudaStreamSynchronize, median of --reps after a\n"
"warm-up call; the same untimed restore after inserting calls; fractions are of\n"
"the device-to-device copy bandwidth (export: device to host). The summary puts\n"
"HierarchicalKV's H200 figures next to ours as ratios. Exits 77 where no GPU is\n"
"visible or CUDA was not built.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_list(const char *arg, const char *what, int is_float, void *out, int *n)
{
    char buf[512], *save = NULL, *tok;
    if (strlen(arg) >= sizeof buf)
        goto bad;
    strcpy(buf, arg);
    *n = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= MAX_LIST)
            goto bad;
        if (is_float) {
            char *end;
            double v = strtod(tok, &end);
            if (end == tok || *end || !(v > 0.0 && v <= 1.0))
                goto bad;
            ((double *)out)[(*n)++] = v;
        } else {
            uint64_t v;
            if (parse_u64(tok, &v) || v < 1 || v > EMBER_DIM_MAX)
                goto bad;
            ((uint32_t *)out)[(*n)++] = (uint32_t)v;
        }
    }
    if (*n > 0)
        return 0;
bad:
    fprintf(stderr, "table_bench: bad %s list '%s'\n", what, arg);
    return -1;
}

static int parse_ops(const char *arg, int *ops)
{
    char buf[512], *save = NULL, *tok;
    if (strlen(arg) >= sizeof buf)
        goto bad;
    strcpy(buf, arg);
    memset(ops, 0, OP_COUNT * sizeof *ops);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int op, hit = 0;
        for (op = 0; op < OP_COUNT; op++)
            if (!strcmp(tok, op_names[op]) || !strcmp(tok, "all")) {
                ops[op] = 1;
                hit = 1;
            }
        if (!strcmp(tok, "apply_gradients")) {
            ops[OP_SGD] = ops[OP_ADAGRAD] = ops[OP_ADAM] = 1;
            hit = 1;
        }
        if (!hit)
            goto bad;
    }
    return 0;
bad:
    fprintf(stderr, "table_bench: bad --ops '%s' (see --help)\n", arg);
    return -1;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    enum { O_BACKEND = 256, O_OPS, O_DIMS, O_LFS, O_DIST, O_BATCH, O_CAPACITY, O_THREADS,
           O_REPS, O_CSV, O_QUICK, O_HIT, O_ZIPF, O_SEED, O_MEMCPY, O_HBM_GB, O_HKV, O_FIND_LANES,
           O_PRECHECKED, O_HELP };
    static const struct option longopts[] = {
        {"backend", required_argument, NULL, O_BACKEND},
        {"ops", required_argument, NULL, O_OPS},
        {"dims", required_argument, NULL, O_DIMS},
        {"lfs", required_argument, NULL, O_LFS},
        {"dist", required_argument, NULL, O_DIST},
        {"batch", required_argument, NULL, O_BATCH},
        {"capacity", required_argument, NULL, O_CAPACITY},
        {"threads", required_argument, NULL, O_THREADS},
        {"reps", required_argument, NULL, O_REPS},
        {"csv", required_argument, NULL, O_CSV},
        {"quick", no_argument, NULL, O_QUICK},
        {"hit", required_argument, NULL, O_HIT},
        {"zipf", required_argument, NULL, O_ZIPF},
        {"seed", required_argument, NULL, O_SEED},
        {"memcpy-mib", required_argument, NULL, O_MEMCPY},
        {"hbm-gb", required_argument, NULL, O_HBM_GB},
        {"hkv-matrix", no_argument, NULL, O_HKV},
        {"find-lanes", required_argument, NULL, O_FIND_LANES},
        {"prechecked", no_argument, NULL, O_PRECHECKED},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int set_batch = 0, set_capacity = 0, set_reps = 0, set_memcpy = 0, set_dims = 0;
    int set_dist = 0, ch;
    uint64_t v;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    for (int i = 0; i < OP_COUNT; i++)
        o->ops[i] = 1;
    o->dims[0] = 8;
    o->dims[1] = 64;
    o->dims[2] = 128;
    o->n_dims = 3;
    o->lfs[0] = 0.5;
    o->lfs[1] = 0.75;
    o->lfs[2] = 1.0;
    o->n_lfs = 3;
    o->dists[DIST_UNIFORM] = o->dists[DIST_ZIPF] = 1;
    o->batch = 1048576;
    o->capacity = 4194304;
    o->threads = cores > 0 ? (unsigned)cores : 1;
    o->reps = 3;
    o->hit = 0.6;
    o->zipf_s = 1.05;
    o->seed = 1;
    o->memcpy_bytes = (size_t)512 << 20;

    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case O_BACKEND:
            o->backend = optarg;
            break;
        case O_OPS:
            if (parse_ops(optarg, o->ops))
                return -1;
            break;
        case O_DIMS:
            if (parse_list(optarg, "--dims", 0, o->dims, &o->n_dims))
                return -1;
            set_dims = 1;
            break;
        case O_LFS:
            if (parse_list(optarg, "--lfs", 1, o->lfs, &o->n_lfs))
                return -1;
            break;
        case O_DIST:
            o->dists[DIST_UNIFORM] = !strcmp(optarg, "uniform") || !strcmp(optarg, "both");
            o->dists[DIST_ZIPF] = !strcmp(optarg, "zipf") || !strcmp(optarg, "both");
            if (!o->dists[DIST_UNIFORM] && !o->dists[DIST_ZIPF]) {
                fprintf(stderr, "table_bench: --dist is uniform, zipf or both\n");
                return -1;
            }
            set_dist = 1;
            break;
        case O_BATCH:
            if (parse_u64(optarg, &v) || v < 1 || v > (UINT64_C(1) << 32)) {
                fprintf(stderr, "table_bench: bad --batch '%s'\n", optarg);
                return -1;
            }
            o->batch = (size_t)v;
            set_batch = 1;
            break;
        case O_CAPACITY:
            if (parse_u64(optarg, &v) || v < EMBER_BUCKET_SLOTS || v > EMBER_CAPACITY_MAX) {
                fprintf(stderr, "table_bench: bad --capacity '%s'\n", optarg);
                return -1;
            }
            o->capacity = v;
            set_capacity = 1;
            break;
        case O_THREADS:
            if (parse_u64(optarg, &v) || v < 1 || v > MAX_THREADS) {
                fprintf(stderr, "table_bench: bad --threads '%s' (1..%d)\n", optarg,
                        MAX_THREADS);
                return -1;
            }
            o->threads = (unsigned)v;
            break;
        case O_REPS:
            if (parse_u64(optarg, &v) || v < 1 || v > 64) {
                fprintf(stderr, "table_bench: bad --reps '%s' (1..64)\n", optarg);
                return -1;
            }
            o->reps = (int)v;
            set_reps = 1;
            break;
        case O_CSV:
            o->csv = optarg;
            break;
        case O_QUICK:
            o->quick = 1;
            break;
        case O_PRECHECKED:
            o->prechecked = 1;
            break;
        case O_HIT: {
            char *end;
            o->hit = strtod(optarg, &end);
            if (end == optarg || *end || !(o->hit >= 0.0 && o->hit <= 1.0)) {
                fprintf(stderr, "table_bench: bad --hit '%s' (0..1)\n", optarg);
                return -1;
            }
            break;
        }
        case O_ZIPF: {
            char *end;
            o->zipf_s = strtod(optarg, &end);
            if (end == optarg || *end || !(o->zipf_s > 0.0 && o->zipf_s < 100.0)) {
                fprintf(stderr, "table_bench: bad --zipf '%s' (> 0)\n", optarg);
                return -1;
            }
            break;
        }
        case O_SEED:
            if (parse_u64(optarg, &o->seed)) {
                fprintf(stderr, "table_bench: bad --seed '%s'\n", optarg);
                return -1;
            }
            break;
        case O_MEMCPY:
            if (parse_u64(optarg, &v) || v < 1 || v > 65536) {
                fprintf(stderr, "table_bench: bad --memcpy-mib '%s'\n", optarg);
                return -1;
            }
            o->memcpy_bytes = (size_t)v << 20;
            set_memcpy = 1;
            break;
        case O_HBM_GB: {
            char *end;
            double gb = strtod(optarg, &end);
            if (end == optarg || *end || !(gb >= 0.0 && gb < 1048576.0)) {
                fprintf(stderr, "table_bench: bad --hbm-gb '%s' (GiB, >= 0)\n", optarg);
                return -1;
            }
            o->hbm_bytes = (uint64_t)llround(gb * (double)(UINT64_C(1) << 30));
            break;
        }
        case O_HKV:
            o->hkv_matrix = 1;
            break;
        case O_FIND_LANES:
            if (parse_u64(optarg, &v) || (v != 1 && v != 8 && v != 16)) {
                fprintf(stderr, "table_bench: bad --find-lanes '%s' (1, 8 or 16)\n", optarg);
                return -1;
            }
            o->find_lanes = (unsigned)v;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "table_bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    int gpu = !strcmp(o->backend, "gpu");
    if (o->prechecked && gpu) {
        fprintf(stderr, "table_bench: --prechecked is for --backend cpu\n");
        return -1;
    }
    if ((o->hbm_bytes || o->hkv_matrix || o->find_lanes) && !gpu) {
        fprintf(stderr, "table_bench: --hbm-gb, --hkv-matrix and --find-lanes need --backend "
                        "gpu\n");
        return -1;
    }
    /* HierarchicalKV's conventions on the GPU: capacity 64 M, dim 64, uniform
     * keys; one host thread drives the device (the others only draw keys). */
    if (gpu) {
        if (!set_capacity)
            o->capacity = UINT64_C(64) << 20;
        if (!set_dims) {
            o->dims[0] = 64;
            o->n_dims = 1;
        }
        if (!set_dist)
            o->dists[DIST_ZIPF] = 0;
    }
    if (o->quick) {
        if (!set_batch)
            o->batch = 16384;
        if (!set_capacity)
            o->capacity = 65536;
        if (!set_reps)
            o->reps = 1;
        if (!set_memcpy)
            o->memcpy_bytes = (size_t)32 << 20;
    }
    /* export gives each thread batch/threads rows of room: at least a bucket
     * (gpu: the one exporting thread gets the whole batch). */
    if (o->batch < (size_t)(gpu ? 1 : o->threads) * EMBER_BUCKET_SLOTS) {
        fprintf(stderr, "table_bench: --batch must be at least %u%s\n", EMBER_BUCKET_SLOTS,
                gpu ? "" : " x threads");
        return -1;
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------------- */

void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "table_bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    bench_opts o;
    const ember_table_backend *backend = NULL;
    bench_bufs b;

    if (parse_opts(argc, argv, &o))
        return 2;
    if (!strcmp(o.backend, "gpu")) {
#ifdef EMBER_BENCH_GPU
        return gpu_bench_main(&o);
#else
        fprintf(stderr, "table_bench: --backend gpu: this build has no CUDA (configure with "
                        "nvcc present, EMBER_CUDA=AUTO or ON); skipped\n");
        return 77;
#endif
    }
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (!strcmp(o.backend, backends[i].name))
            backend = backends[i].get();
    if (!backend) {
        fprintf(stderr, "table_bench: unknown backend '%s' (available: cpu, gpu)\n",
                o.backend);
        return 2;
    }

    uint32_t max_dim = 0;
    for (int i = 0; i < o.n_dims; i++)
        max_dim = o.dims[i] > max_dim ? o.dims[i] : max_dim;

    printf("table_bench: backend %s, %u threads, batch %zu, capacity %llu, reps %d, "
           "hit %.2f, zipf s %.2f, seed %llu%s\n",
           ember_table_backend_name(backend), o.threads, o.batch,
           (unsigned long long)o.capacity, o.reps, o.hit, o.zipf_s,
           (unsigned long long)o.seed, o.quick ? " (quick)" : "");
    double memcpy_bw = memcpy_bandwidth(o.memcpy_bytes, o.threads, o.reps < 5 ? 5 : o.reps);

    memset(&b, 0, sizeof b);
    b.n = o.batch;
    b.in = xmalloc(b.n * max_dim * sizeof(float));
    b.out = xmalloc(b.n * max_dim * sizeof(float));
    b.found = xmalloc(b.n);
    b.keys = xmalloc(b.n * sizeof(uint64_t));
    b.present = xmalloc(b.n * sizeof(uint64_t));
    b.absent = xmalloc(b.n * sizeof(uint64_t));
    b.scratch = xmalloc(b.n * sizeof(uint64_t));
    b.export_keys = xmalloc(b.n * sizeof(uint64_t));
    /* Fault every page in now, so that no timed call pays for it. */
    memset(b.out, 0, b.n * max_dim * sizeof(float));
    memset(b.found, 0, b.n);
    memset(b.export_keys, 0, b.n * sizeof(uint64_t));

    size_t max_res = (size_t)OP_COUNT * (size_t)o.n_dims * (size_t)o.n_lfs * DIST_COUNT;
    bench_result *res = xmalloc(max_res * sizeof *res);
    size_t nres = 0;

    for (int di = 0; di < o.n_dims; di++) {
        uint32_t dim = o.dims[di];
        gather_floor(dim, (size_t)o.capacity, b.n, (char *)b.out, o.threads,
                     o.reps < 5 ? 5 : o.reps, memcpy_bw);
        /* Values and gradients: small, finite, the same for every op of this dim. */
        bench_rng r = {o.seed ^ UINT64_C(0xa5a5a5a5a5a5a5a5)};
        for (size_t i = 0; i < b.n * dim; i++)
            b.in[i] = (float)(rng_unit(&r) * 0.02 - 0.01);
        for (int li = 0; li < o.n_lfs; li++) {
            double lf = o.lfs[li];
            for (int tab = 0; tab < TAB_COUNT; tab++) {
                int any = 0;
                for (int op = 0; op < OP_COUNT; op++)
                    any |= o.ops[op] && op_table(op) == tab;
                if (!any)
                    continue;
                bench_table bt;
                create_table(&o, backend, tab, dim, lf, &bt);
                fill_table(&o, &bt, &b);
                for (int d = 0; d < DIST_COUNT; d++) {
                    if (!o.dists[d])
                        continue;
                    bench_batch bb;
                    int dirty = 1;
                    make_batch(&o, &bt, &b, d, o.seed * 1000003u + (uint64_t)d * 7919u + dim,
                               &bb);
                    for (int op = 0; op < OP_COUNT; op++) {
                        if (!o.ops[op] || op_table(op) != tab)
                            continue;
                        /* export does not depend on the keys' distribution: once. */
                        if (op == OP_EXPORT && d != (o.dists[DIST_UNIFORM] ? DIST_UNIFORM
                                                                            : DIST_ZIPF))
                            continue;
                        measure_op(&o, &bt, &b, &bb, op, d, lf, memcpy_bw, &dirty,
                                   &res[nres++]);
                    }
                }
                ember_table_destroy(bt.t);
            }
        }
    }

    print_summary(&o, res, nres, memcpy_bw);
    if (o.csv)
        write_csv(&o, res, nres, memcpy_bw);

    free(res);
    free(b.in);
    free(b.out);
    free(b.found);
    free(b.keys);
    free(b.present);
    free(b.absent);
    free(b.scratch);
    free(b.export_keys);
    return 0;
}

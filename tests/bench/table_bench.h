/*
 * table_bench.h — what table_bench.c (options, the CPU backend through table.h)
 * shares with table_bench_gpu.c (the GPU backend through the stream-ordered
 * device API of cuda/gpu_table.h, HierarchicalKV's way). One program: the
 * GPU half is compiled only where CUDA is (EMBER_BENCH_GPU).
 */
#ifndef EMBER_TABLE_BENCH_H
#define EMBER_TABLE_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "storage/status.h"

/* ---- what can be measured -------------------------------------------------- */

enum bench_op {
    OP_FIND,
    OP_FIND_OR_INSERT,
    OP_INSERT_OR_ASSIGN,
    OP_ASSIGN,
    OP_SGD,
    OP_ADAGRAD,
    OP_ADAM,
    OP_EXPORT,
    OP_COUNT
};

enum bench_dist { DIST_UNIFORM, DIST_ZIPF, DIST_COUNT };

/* The three tables a (dim, λ) pair needs, by the optimizer they hold. */
enum bench_tab { TAB_SGD, TAB_ADAGRAD, TAB_ADAM, TAB_COUNT };

extern const char *const op_names[OP_COUNT];   /* --ops spelling */
extern const char *const op_labels[OP_COUNT];  /* each measurement's line */
extern const char *const dist_names[DIST_COUNT];
extern const char *const tab_names[TAB_COUNT];
extern const int tab_optim[TAB_COUNT];

int op_table(int op);
/* Ops that may create keys: the state is restored after each of their runs. */
int op_inserts(int op);
/* Value bytes per key (table_bench.c's opening comment defines them). */
double op_bytes_per_key(int op, uint32_t dim, uint32_t row_floats);

#define MAX_LIST 16
#define MAX_THREADS 1024

typedef struct bench_opts {
    const char *backend;
    int ops[OP_COUNT];            /* 1 = measure */
    uint32_t dims[MAX_LIST];
    int n_dims;
    double lfs[MAX_LIST];
    int n_lfs;
    int dists[DIST_COUNT];
    size_t batch;
    uint64_t capacity;
    unsigned threads;
    int reps;
    const char *csv;
    int quick;
    double hit;
    double zipf_s;
    uint64_t seed;
    size_t memcpy_bytes;
    uint64_t hbm_bytes;           /* gpu: config.hbm_bytes (0 = all rows in HBM) */
    int hkv_matrix;               /* gpu: docs/BENCHMARKS.md's comparison matrix */
    unsigned find_lanes;          /* gpu: ember_gpu_table_options.find_lanes (0: default) */
    int prechecked;               /* cpu: timed writes vouch for their batch (ember_table_write) */
} bench_opts;

/* ---- helpers (table_bench.c) ------------------------------------------------ */

double now_s(void);
uint64_t gcd64(uint64_t a, uint64_t b);
/* Sorts v[n] and gives its min, median and max. */
void stats3(double *v, int n, double *mn, double *med, double *mx);
/* malloc that exits with a message when memory runs out. */
void *xmalloc(size_t bytes);

typedef int (*bench_work_fn)(void *ctx, unsigned tid, unsigned nthr, ember_error *err);
/* Runs fn(ctx, tid, nthr, err) on nthr threads at once. *secs (optional): from
 * the first thread starting its work to the last one finishing; the first
 * failure's status is returned and its details go to `err`. */
int par_run(bench_work_fn fn, void *ctx, unsigned nthr, double *secs, ember_error *err);
/* Thread tid's share [*lo, *hi) of n items. */
void slice(size_t n, unsigned tid, unsigned nthr, size_t *lo, size_t *hi);

/* Draws a batch of n keys: each present (rank in [0, P)) with probability
 * o->hit, else absent (rank in [P, U)); uniform or Zipf(o->zipf_s) over the
 * chosen set (present Zipf ranks permuted so the hot keys are not the first
 * filled). keys[n]: the batch; present[*np], absent[*na]: the same keys split by
 * the set they came from. */
void draw_batch(const bench_opts *o, uint64_t P, uint64_t U, int dist, uint64_t seed,
                size_t n, uint64_t *keys, uint64_t *present, size_t *np, uint64_t *absent,
                size_t *na);

#ifdef EMBER_BENCH_GPU
/* The --backend gpu run (table_bench_gpu.c): 0, 77 where no GPU is visible, or
 * 1 on a failure (it prints why). */
int gpu_bench_main(const bench_opts *o);
#endif

#endif /* EMBER_TABLE_BENCH_H */

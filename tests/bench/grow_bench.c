/*
 * grow_bench.c — what online growth (storage/table.h) costs: a table filled from
 * a small capacity to its maximum against one made at that size, and each
 * doubling's pause (the time calls on the table wait while its rows move).
 *
 *   grow_bench [--backend cpu|gpu] [--dim N] [--start N] [--max N] [--batch N]
 *              [--reps N]
 *
 * Both tables get the same insert_or_assign batches of new keys until the
 * growing one has reached --max at load factor 0.75 (then both hold the same
 * rows). Prints, per rep: the growing table's fill time, the fixed table's, their
 * ratio, and each doubling (capacity after it, rows moved, pause, rows moved per
 * second). Median over --reps. --backend gpu needs a GPU (exit 77 without one).
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/table.h"
#ifdef EMBER_BENCH_GPU
#include "cuda/gpu_table.h"
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ember_table *make(const ember_table_backend *be, uint32_t dim, uint64_t capacity,
                         uint64_t max_capacity)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = capacity;
    c.max_capacity = max_capacity;
    c.init.kind = EMBER_INIT_ZEROS;
    ember_table *t = NULL;
    ember_error err;
    if (ember_table_create(&c, be, &t, &err)) {
        fprintf(stderr, "grow_bench: create: %s\n", err.message);
        exit(err.code == EMBER_UNAVAILABLE ? 77 : 1);
    }
    return t;
}

/* Fills t with keys [0, n) in batches; returns seconds. Records each doubling. */
static double fill(ember_table *t, uint64_t n, size_t batch, uint32_t dim, int report)
{
    uint64_t *keys = malloc(batch * sizeof *keys);
    float *v = calloc(batch * dim, sizeof *v);
    ember_table_stats s;
    uint64_t grows = 0;
    double total = 0;
    for (uint64_t i = 0; i < n; i += batch) {
        size_t m = n - i < batch ? (size_t)(n - i) : batch;
        for (size_t j = 0; j < m; j++)
            keys[j] = ((i + j) * UINT64_C(0x9E3779B97F4A7C15)) >> 8;
        uint64_t rows_before = ember_table_size(t); /* moved by a doubling in this call */
        double t0 = now_s();
        ember_error err;
        if (ember_table_insert_or_assign(t, keys, m, v, NULL, &err)) {
            fprintf(stderr, "grow_bench: insert: %s\n", err.message);
            exit(1);
        }
        total += now_s() - t0;
        ember_table_stats_get(t, &s);
        if (report && s.grows != grows) {
            printf("  %s %llu: capacity %llu, %llu rows moved, pause %.1f ms, "
                   "%.1f M rows/s\n",
                   s.grows - grows > 1 ? "doublings up to" : "doubling",
                   (unsigned long long)s.grows, (unsigned long long)s.capacity,
                   (unsigned long long)rows_before, (double)s.grow_pause_ns / 1e6,
                   (double)rows_before / ((double)s.grow_pause_ns / 1e9) / 1e6);
            grows = s.grows;
        }
    }
    free(keys);
    free(v);
    return total;
}

int main(int argc, char **argv)
{
    const char *backend = "cpu";
    uint32_t dim = 64;
    uint64_t start = 1 << 16, max = 1 << 22;
    size_t batch = 65536;
    int reps = 3;
    static const struct option longopts[] = {
        {"backend", required_argument, NULL, 'b'}, {"dim", required_argument, NULL, 'd'},
        {"start", required_argument, NULL, 's'},   {"max", required_argument, NULL, 'm'},
        {"batch", required_argument, NULL, 'n'},   {"reps", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    for (int o; (o = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
        switch (o) {
        case 'b': backend = optarg; break;
        case 'd': dim = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 's': start = strtoull(optarg, NULL, 10); break;
        case 'm': max = strtoull(optarg, NULL, 10); break;
        case 'n': batch = (size_t)strtoull(optarg, NULL, 10); break;
        case 'r': reps = atoi(optarg); break;
        default:
            fprintf(o == 'h' ? stdout : stderr,
                    "usage: grow_bench [--backend cpu|gpu] [--dim N] [--start N] [--max N] "
                    "[--batch N] [--reps N]\n");
            return o == 'h' ? 0 : 2;
        }
    }
    const ember_table_backend *be = NULL;
    if (!strcmp(backend, "gpu")) {
#ifdef EMBER_BENCH_GPU
        be = ember_table_gpu_backend();
#else
        fprintf(stderr, "grow_bench: built without CUDA: SKIPPED\n");
        return 77;
#endif
    } else if (strcmp(backend, "cpu")) {
        fprintf(stderr, "grow_bench: --backend cpu or gpu\n");
        return 2;
    }
    if (dim < 1 || start < 1 || max < start || batch < 1 || reps < 1) {
        fprintf(stderr, "grow_bench: bad sizes\n");
        return 2;
    }
    uint64_t n = max * 3 / 4; /* the growing table's load factor at its maximum */
    double *tg = calloc((size_t)reps, sizeof *tg), *tf = calloc((size_t)reps, sizeof *tf),
           *ratio = calloc((size_t)reps, sizeof *ratio);
    printf("grow_bench: backend %s, dim %u, %llu -> %llu slots, %llu keys in batches of %zu\n",
           backend, dim, (unsigned long long)start, (unsigned long long)max,
           (unsigned long long)n, batch);
    for (int r = 0; r < reps; r++) {
        /* alternate which goes first, on this noisy machine */
        ember_table *g = make(be, dim, start, max), *f = make(be, dim, max, 0);
        printf("rep %d\n", r + 1);
        if (r % 2) {
            tf[r] = fill(f, n, batch, dim, 0);
            tg[r] = fill(g, n, batch, dim, 1);
        } else {
            tg[r] = fill(g, n, batch, dim, 1);
            tf[r] = fill(f, n, batch, dim, 0);
        }
        /* At load factor 0.75 a few buckets overflow (a binomial tail) and evict,
         * in the fixed table and in the growing one at each size it passes. */
        ember_table_stats s, sf;
        ember_table_stats_get(g, &s);
        ember_table_stats_get(f, &sf);
        printf("  keys kept: growing %llu (%llu evicted), fixed %llu (%llu evicted)\n",
               (unsigned long long)s.size, (unsigned long long)s.evictions,
               (unsigned long long)sf.size, (unsigned long long)sf.evictions);
        if (s.size + s.evictions != n) {
            fprintf(stderr, "grow_bench: the growing table lost keys otherwise than by "
                            "eviction\n");
            return 1;
        }
        ratio[r] = tg[r] / tf[r];
        printf("  fill: growing %.3f s, fixed %.3f s, growing/fixed %.2f\n", tg[r], tf[r],
               ratio[r]);
        ember_table_destroy(g);
        ember_table_destroy(f);
    }
    qsort(tg, (size_t)reps, sizeof *tg, cmp_double);
    qsort(tf, (size_t)reps, sizeof *tf, cmp_double);
    qsort(ratio, (size_t)reps, sizeof *ratio, cmp_double);
    printf("median of %d: growing %.3f s, fixed %.3f s, growing/fixed %.2f [%.2f-%.2f]\n", reps,
           tg[reps / 2], tf[reps / 2], ratio[reps / 2], ratio[0], ratio[reps - 1]);
    free(tg);
    free(tf);
    free(ratio);
    return 0;
}

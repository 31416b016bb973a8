/*
 * snapshot_bench.c — what a save costs the writers of a table, in the table
 * alone (no RPC): writer threads push batches of uniform random keys
 * (insert_or_assign) into a full table while one reader thread does, in turn:
 *
 *   none      nothing (the writers alone);
 *   export    reads the whole table with ember_table_export, again and again:
 *             what a save did before snapshots (per row, not one moment);
 *   snapshot  begins a snapshot, reads it through, ends it, again and again:
 *             what a save does now (one moment, copy-on-first-write).
 *
 * Each mode runs --seconds, the three alternate --rounds times, and each line
 * gives the writers' keys/s and, for the readers, rows/s read; the summary
 * gives each mode's median and its ratio to none's. The reader keeps a core
 * busy, as a save's thread does (without its file I/O).
 *
 *   snapshot_bench [--keys N] [--dim D] [--batch B] [--writers W] [--seconds S]
 *                  [--rounds R]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/table.h"

enum { MODE_NONE, MODE_EXPORT, MODE_SNAPSHOT, MODES };
static const char *const mode_name[MODES] = {"none", "export", "snapshot"};

typedef struct bench {
    ember_table *t;
    uint64_t keys;
    uint32_t dim, rf;
    size_t batch;
    int mode;
    _Atomic int stop;
    _Atomic uint64_t written, read;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void die(const char *what, const ember_error *e)
{
    fprintf(stderr, "snapshot_bench: %s: %s\n", what, e->message);
    exit(1);
}

typedef struct writer_arg {
    bench *b;
    uint64_t seed;
} writer_arg;

static void *writer_main(void *arg)
{
    writer_arg *w = arg;
    bench *b = w->b;
    uint64_t *keys = malloc(b->batch * sizeof *keys);
    float *vals = malloc(b->batch * b->dim * sizeof *vals);
    for (size_t i = 0; i < b->batch * b->dim; i++)
        vals[i] = 0.5f;
    ember_error e;
    while (!atomic_load(&b->stop)) {
        for (size_t i = 0; i < b->batch; i++)
            keys[i] = next_rand(&w->seed) % b->keys;
        if (ember_table_insert_or_assign(b->t, keys, b->batch, vals, NULL, &e))
            die("insert_or_assign", &e);
        atomic_fetch_add(&b->written, b->batch);
    }
    free(keys);
    free(vals);
    return NULL;
}

#define READ_ROWS 65536u

static void *reader_main(void *arg)
{
    bench *b = arg;
    uint64_t *keys = malloc(READ_ROWS * sizeof *keys), *scores = malloc(READ_ROWS * 8),
             *vers = malloc(READ_ROWS * 8);
    float *rows = malloc((size_t)READ_ROWS * b->rf * sizeof *rows);
    const ember_export_filter all = {0, 0, 1};
    ember_error e;
    while (b->mode != MODE_NONE && !atomic_load(&b->stop)) {
        uint64_t cursor = 0;
        size_t n;
        if (b->mode == MODE_EXPORT) {
            uint64_t end = ember_table_export_end(b->t);
            while (cursor < end && !atomic_load(&b->stop)) {
                if (ember_table_export(b->t, &all, &cursor, READ_ROWS, keys, rows, scores, vers,
                                       &n, &e))
                    die("export", &e);
                atomic_fetch_add(&b->read, n);
            }
            continue;
        }
        ember_table_snapshot *s;
        if (ember_table_snapshot_begin(b->t, NULL, NULL, &s, &e))
            die("snapshot", &e);
        uint64_t end = ember_table_snapshot_end_cursor(s);
        while (cursor < end && !atomic_load(&b->stop)) {
            if (ember_table_snapshot_export(s, &cursor, READ_ROWS, keys, rows, scores, vers, &n,
                                            &e))
                die("snapshot export", &e);
            atomic_fetch_add(&b->read, n);
        }
        ember_table_snapshot_end(s);
    }
    free(keys);
    free(scores);
    free(vers);
    free(rows);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t keys = 1u << 20;
    uint32_t dim = 64;
    size_t batch = 4096;
    int writers = 2, rounds = 3;
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--keys"))
            keys = strtoull(argv[i + 1], NULL, 0);
        else if (!strcmp(argv[i], "--dim"))
            dim = (uint32_t)strtoul(argv[i + 1], NULL, 0);
        else if (!strcmp(argv[i], "--batch"))
            batch = strtoull(argv[i + 1], NULL, 0);
        else if (!strcmp(argv[i], "--writers"))
            writers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: snapshot_bench [--keys N] [--dim D] [--batch B] "
                            "[--writers W] [--seconds S] [--rounds R]\n");
            return 2;
        }
    }
    if (!keys || !dim || !batch || writers < 1 || writers > 64 || rounds < 1 || seconds <= 0) {
        fprintf(stderr, "snapshot_bench: bad arguments\n");
        return 2;
    }
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = 2 * keys;
    c.optim.kind = EMBER_OPTIM_SGD;
    ember_error e;
    bench b = {.keys = keys, .dim = dim, .batch = batch};
    if (ember_table_create(&c, NULL, &b.t, &e))
        die("create", &e);
    b.rf = ember_table_row_floats(b.t);
    { /* full: every key present, as in a trained table */
        uint64_t *k = malloc(65536 * sizeof *k);
        float *v = calloc((size_t)65536 * dim, sizeof *v);
        for (uint64_t s = 0; s < keys; s += 65536) {
            size_t n = keys - s < 65536 ? (size_t)(keys - s) : 65536;
            for (size_t i = 0; i < n; i++)
                k[i] = s + i;
            if (ember_table_insert_or_assign(b.t, k, n, v, NULL, &e))
                die("fill", &e);
        }
        free(k);
        free(v);
    }
    printf("snapshot_bench: %llu keys x dim %u (SGD), %d writer(s) of batches of %zu uniform "
           "keys, %.1f s per run, %d round(s)\n",
           (unsigned long long)keys, dim, writers, batch, seconds, rounds);
    double *rate = calloc((size_t)MODES * rounds, sizeof *rate);
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < MODES; m++) {
            b.mode = m;
            atomic_store(&b.stop, 0);
            atomic_store(&b.written, 0);
            atomic_store(&b.read, 0);
            pthread_t wt[64], rt;
            writer_arg wa[64];
            for (int i = 0; i < writers; i++) {
                wa[i] = (writer_arg){&b, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1 + r * 64)};
                pthread_create(&wt[i], NULL, writer_main, &wa[i]);
            }
            pthread_create(&rt, NULL, reader_main, &b);
            double t0 = now_s();
            struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
            nanosleep(&d, NULL);
            atomic_store(&b.stop, 1);
            for (int i = 0; i < writers; i++)
                pthread_join(wt[i], NULL);
            pthread_join(rt, NULL);
            double el = now_s() - t0;
            rate[m * rounds + r] = (double)atomic_load(&b.written) / el / 1e6;
            printf("round %d %-8s writers %7.3f M keys/s   reader %7.3f M rows/s\n", r + 1,
                   mode_name[m], rate[m * rounds + r], (double)atomic_load(&b.read) / el / 1e6);
            fflush(stdout);
        }
    double med[MODES];
    for (int m = 0; m < MODES; m++) {
        qsort(rate + m * rounds, (size_t)rounds, sizeof *rate, cmp_double);
        med[m] = rate[m * rounds + rounds / 2];
    }
    printf("median writers M keys/s: none %.3f, export %.3f (x%.2f), snapshot %.3f (x%.2f)\n",
           med[0], med[1], med[1] / med[0], med[2], med[2] / med[0]);
    free(rate);
    ember_table_destroy(b.t);
    return 0;
}

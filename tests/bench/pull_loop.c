/*
 * pull_loop.c — libember called from C in a loop, the baseline of
 * tests/bench/tf_op_bench.py (the same shapes through the TensorFlow ops).
 *
 *   pull_loop SHARDS TABLE N DIM ITERS
 *
 * Pulls (training) and then pushes (zero gradients) keys 0..N-1 times 7919,
 * ITERS times each after one untimed call, and prints one line:
 *   pull_us=<mean µs per ember_pull> push_us=<mean µs per ember_push>
 * Exit 0, or 1 when a call fails (its message on stderr), 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <ember/ember.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: pull_loop SHARDS TABLE N DIM ITERS\n");
        return 2;
    }
    size_t n = strtoull(argv[3], NULL, 10);
    uint32_t dim = (uint32_t)strtoul(argv[4], NULL, 10);
    long iters = strtol(argv[5], NULL, 10);
    if (n == 0 || dim == 0 || iters < 1) {
        fprintf(stderr, "pull_loop: N, DIM and ITERS must be positive\n");
        return 2;
    }
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = argv[1];
    ember_error err = {0};
    ember_client *c = ember_client_open(&o, &err);
    uint64_t *keys = malloc(n * sizeof *keys);
    float *rows = calloc(n * dim, sizeof *rows);
    float *grads = calloc(n * dim, sizeof *grads);
    int rv = c && keys && rows && grads ? 0 : 1;
    for (size_t i = 0; !rv && i < n; i++)
        keys[i] = (uint64_t)i * 7919u;
    double pull_us = 0, push_us = 0;
    for (long it = 0; !rv && it <= iters; it++) {
        double t0 = now_us();
        rv = ember_pull(c, argv[2], keys, n, rows, dim, EMBER_PULL_INSERT, &err);
        double t1 = now_us();
        if (!rv)
            rv = ember_push(c, argv[2], keys, n, grads, dim, &err);
        double t2 = now_us();
        if (it > 0) {
            pull_us += t1 - t0;
            push_us += t2 - t1;
        }
    }
    if (rv)
        fprintf(stderr, "pull_loop: %s: %s\n", ember_code_name(err.code ? err.code : rv),
                err.message);
    else
        printf("pull_us=%.1f push_us=%.1f\n", pull_us / iters, push_us / iters);
    free(keys);
    free(rows);
    free(grads);
    ember_client_close(c);
    return rv ? 1 : 0;
}

/* pooled.c — rpc_bench --pooled: server-side pooling (ember_pull_pooled /
 * ember_push_pooled, combiner MEAN) against worker-side pooling (ember_pull of
 * every key, then the bags averaged on the worker; a bag's gradient expanded
 * to its keys, g / bag size, then ember_push), for each --bag-sizes value, at
 * each --keys (rounded down to whole bags) and --dims, on every backend.
 *
 * One client, one call at a time. The four variants (pull worker, pull server,
 * push worker, push server) run in turn, --reps rounds of --seconds each after
 * one --warmup round, so a slow moment of a shared machine hits all alike;
 * keys/s is the caller's keys (ids in the bags) per second, min/median/max over
 * the rounds, the worker's pooling or expansion included in its time. Bytes
 * are the protobuf messages of one call (requests plus replies, summed over the
 * shards the keys map to; gRPC's 5-byte prefix and HTTP/2 framing excluded),
 * computed with proto/wire.h's encoder sizes from the keys each shard gets —
 * the bytes libember sends, counted without a packet capture that other users
 * of a shared loopback would disturb. Keys in a call are distinct (uniform
 * keysets), so libember's dedup changes nothing on the worker side. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "rpc_bench/rpc_bench.h"
#include "server_proc.h"

enum { V_PULL_WORKER, V_PULL_SERVER, V_PUSH_WORKER, V_PUSH_SERVER, V_COUNT };
static const char *const v_label[V_COUNT] = {"pull, worker pools", "pull, server pools",
                                             "push, worker expands", "push, server expands"};

/* Message bytes of one call of variant v: each shard's request and reply. */
static double call_bytes(int v, const uint64_t *keys, size_t n, size_t bag, uint32_t dim,
                         unsigned nshards, const char *table, uint64_t client_id, int dt)
{
    size_t *nk = calloc(nshards, sizeof *nk), *nb = calloc(nshards, sizeof *nb);
    long *last = malloc(nshards * sizeof *last);
    if (!nk || !nb || !last)
        exit(1);
    for (unsigned s = 0; s < nshards; s++)
        last[s] = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned s = ember_shard_of(keys[i], nshards);
        nk[s]++;
        if (last[s] != (long)(i / bag)) {
            last[s] = (long)(i / bag);
            nb[s]++;
        }
    }
    size_t ds = ember_wire_dtype_size(dt), total = 0;
    ember_wire_bytes tb = {(const uint8_t *)table, strlen(table)};
    for (unsigned s = 0; s < nshards; s++) {
        if (!nk[s])
            continue;
        int pooled = v == V_PULL_SERVER || v == V_PUSH_SERVER;
        size_t rows = pooled ? nb[s] : nk[s];
        ember_wire_bytes keyb = {NULL, nk[s] * 8}, offs = {NULL, pooled ? (nb[s] + 1) * 8 : 0};
        if (v == V_PULL_WORKER || v == V_PULL_SERVER) {
            ember_wire_pull_request q = {.table = tb, .keys = keyb, .insert_missing = 1,
                                         .dtype = dt, .dim = dim, .offsets = offs,
                                         .combiner = pooled ? EMBER_WIRE_COMBINER_SUM : 0};
            ember_wire_pull_response r = {.values = {NULL, rows * dim * ds}, .dim = dim,
                                          .dtype = dt};
            total += ember_wire_pull_request_size(&q, NULL) + ember_wire_pull_response_size(&r, NULL);
        } else {
            ember_wire_push_request q = {.table = tb, .keys = keyb,
                                         .values = {NULL, rows * dim * ds}, .dtype = dt,
                                         .client_id = client_id,
                                         .sequence = (uint64_t)(sp_now_s() * 1e6),
                                         .offsets = offs,
                                         .combiner = pooled ? EMBER_WIRE_COMBINER_MEAN : 0,
                                         .norms = {NULL, pooled && nshards > 1 ? nb[s] * 4 : 0}};
            ember_wire_push_response r = {.applied = nk[s]};
            total += ember_wire_push_request_size(&q, NULL) + ember_wire_push_response_size(&r);
        }
    }
    free(nk);
    free(nb);
    free(last);
    return (double)total;
}

typedef struct pooled_buf {
    uint64_t *offs;   /* bags + 1 */
    float *rows;      /* n × dim: the worker's pulled rows, or expanded gradients */
    float *vecs;      /* bags × dim: pooled vectors */
    float *grads;     /* bags × dim: the bags' gradients */
} pooled_buf;

/* One call of variant v on keys[0..n) in bags of `bag`. */
static int one_call(ember_client *cl, int v, const char *pull_t, const char *push_t,
                    const uint64_t *keys, size_t n, size_t bag, uint32_t dim, pooled_buf *pb,
                    ember_error *err)
{
    size_t bags = n / bag;
    float inv = 1.0f / (float)bag;
    switch (v) {
    case V_PULL_WORKER: {
        int rc = ember_pull(cl, pull_t, keys, n, pb->rows, dim, EMBER_PULL_INSERT, err);
        if (rc)
            return rc;
        for (size_t b = 0; b < bags; b++) { /* the bag's mean, as a worker pools it */
            float *o = pb->vecs + b * dim;
            memset(o, 0, dim * sizeof *o);
            for (size_t i = b * bag; i < (b + 1) * bag; i++)
                for (uint32_t d = 0; d < dim; d++)
                    o[d] += pb->rows[i * dim + d];
            for (uint32_t d = 0; d < dim; d++)
                o[d] /= (float)bag;
        }
        return 0;
    }
    case V_PULL_SERVER:
        return ember_pull_pooled(cl, pull_t, keys, n, pb->offs, bags, NULL, EMBER_COMBINER_MEAN,
                                 pb->vecs, dim, EMBER_PULL_INSERT, err);
    case V_PUSH_WORKER:
        for (size_t i = 0; i < n; i++) /* each key: its bag's gradient / bag size */
            for (uint32_t d = 0; d < dim; d++)
                pb->rows[i * dim + d] = pb->grads[(i / bag) * dim + d] * inv;
        return ember_push(cl, push_t, keys, n, pb->rows, dim, err);
    default:
        return ember_push_pooled(cl, push_t, keys, n, pb->offs, bags, NULL, EMBER_COMBINER_MEAN,
                                 pb->grads, dim, err);
    }
}

/* Runs variant v for `secs`; keys/s, or -1 on failure (err filled). */
static double run_variant(ember_client *cl, int v, const char *pull_t, const char *push_t,
                          const keyset *ks, size_t n, size_t bag, uint32_t dim, pooled_buf *pb,
                          double secs, size_t *next, ember_error *err)
{
    double t0 = sp_now_s(), t;
    size_t keys = 0;
    do {
        const uint64_t *k = ks->keys + (*next % ks->nb) * ks->n;
        (*next)++;
        if (one_call(cl, v, pull_t, push_t, k, n, bag, dim, pb, err))
            return -1;
        keys += n;
        t = sp_now_s();
    } while (t - t0 < secs && !g_stop);
    return (double)keys / (t - t0);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void measure_pooled(ctx *x, size_t n0, size_t bag, uint32_t dim, int b)
{
    const bench_opts *o = x->o;
    backend *bk = &g_backends[b];
    size_t bags = n0 / bag, n = bags * bag;
    if (!bags) {
        printf("  pooled: %zu keys cannot hold a bag of %zu: skipped\n", n0, bag);
        return;
    }
    const keyset *ks = keyset_get(o, n, DIST_UNIFORM);
    char pull_t[64], push_t[64];
    table_name(pull_t, sizeof pull_t, op_table(o, OP_PULL), dim);
    table_name(push_t, sizeof push_t, op_table(o, OP_PUSH_ADAGRAD), dim);
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = bk->shards;
    co.timeout_ms = o->timeout_ms;
    co.wire_dtype = (ember_dtype)o->wire_dtype;
    ember_error err;
    ember_client *cl = ember_client_open(&co, &err);
    if (!cl) {
        printf("  pooled: client: %s\n", err.message);
        x->failures++;
        return;
    }
    pooled_buf pb;
    pb.offs = xmalloc((bags + 1) * sizeof *pb.offs);
    pb.rows = xmalloc(n * dim * sizeof *pb.rows);
    pb.vecs = xmalloc(bags * dim * sizeof *pb.vecs);
    pb.grads = xmalloc(bags * dim * sizeof *pb.grads);
    for (size_t i = 0; i <= bags; i++)
        pb.offs[i] = i * bag;
    for (size_t i = 0; i < bags * dim; i++) /* small: the rows stay finite */
        pb.grads[i] = (float)((int)(i % 17) - 8) * 1e-5f;

    double kps[V_COUNT][64];
    int reps = o->reps < 64 ? o->reps : 64, failed = 0;
    size_t next = 0;
    for (int v = 0; v < V_COUNT && !failed; v++) /* warm-up */
        failed = run_variant(cl, v, pull_t, push_t, ks, n, bag, dim, &pb, o->warmup, &next,
                             &err) < 0;
    for (int r = 0; r < reps && !failed && !g_stop; r++)
        for (int v = 0; v < V_COUNT && !failed; v++) {
            kps[v][r] = run_variant(cl, v, pull_t, push_t, ks, n, bag, dim, &pb, o->seconds,
                                    &next, &err);
            failed = kps[v][r] < 0;
        }
    if (failed) {
        printf("  pooled %s dim %u bags of %zu: FAILED: %s: %s\n", bk->name, dim, bag,
               ember_code_name(err.code), err.message);
        x->failures++;
    } else {
        unsigned ns = ember_client_shard_count(cl);
        uint64_t cid = ember_client_id(cl);
        double bytes[V_COUNT], med[V_COUNT];
        printf("  %s, dim %u, %zu keys per call in %zu bags of %zu (mean), %u shard(s):\n",
               bk->name, dim, n, bags, bag, ns);
        for (int v = 0; v < V_COUNT; v++) {
            bytes[v] = call_bytes(v, ks->keys, n, bag, dim, ns, v < 2 ? pull_t : push_t, cid,
                                  o->wire_dtype);
            double s[64];
            memcpy(s, kps[v], (size_t)reps * sizeof *s);
            qsort(s, (size_t)reps, sizeof *s, cmp_d);
            med[v] = s[reps / 2];
            printf("    %-22s %8.2f M keys/s (min %.2f, max %.2f)  %10.0f bytes per call "
                   "(%.1f per key)\n",
                   v_label[v], med[v] / 1e6, s[0] / 1e6, s[reps - 1] / 1e6, bytes[v],
                   bytes[v] / (double)n);
        }
        printf("    server/worker: pull keys/s x%.2f, bytes x%.3f; push keys/s x%.2f, bytes "
               "x%.3f\n",
               med[V_PULL_SERVER] / med[V_PULL_WORKER], bytes[V_PULL_SERVER] / bytes[V_PULL_WORKER],
               med[V_PUSH_SERVER] / med[V_PUSH_WORKER], bytes[V_PUSH_SERVER] / bytes[V_PUSH_WORKER]);
    }
    fflush(stdout);
    free(pb.offs);
    free(pb.rows);
    free(pb.vecs);
    free(pb.grads);
    ember_client_close(cl);
}

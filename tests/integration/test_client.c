/*
 * test_client.c — libember against real ember-server processes (harness.h).
 *
 * Three shared shards are started in main(); tests that stop or restart a shard
 * start their own. Values are checked exactly where the arithmetic is exact
 * (SGD, zeros init, gradients that are multiples of 1/16) and against a float64
 * reference otherwise (Adagrad, Adam, FTRL).
 *
 * Runs without forking (CK_FORK=no, set by CMake): gRPC state does not survive
 * Check's fork.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/debug.h"
#include "ember/ember.h"
#include "harness.h"
#include "proto/wire.h"

#define NSHARDS 3

static eh_server S[NSHARDS];
static char shard_list[256];
static char tmpdir[128];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static ember_client *open_client(const char *shards, unsigned timeout_ms, ember_dtype dt)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shards;
    o.timeout_ms = timeout_ms;
    o.wire_dtype = dt;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

static void create(ember_client *c, const char *name, uint32_t dim, int optim, float lr)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = dim;
    s.capacity_per_shard = 1 << 14;
    s.optimizer.kind = optim;
    s.optimizer.lr = lr;
    s.initializer.kind = EMBER_INIT_ZEROS;
    s.initializer.a = s.initializer.b = 0;
    ember_error e;
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

static void drop(ember_client *c, const char *name)
{
    ember_error e;
    ck_assert_msg(ember_drop_table(c, name, 1, &e) == 0, "drop %s: %s", name, e.message);
}

/* Multiples of 1/16 in [-5/16, 5/16]: every sum and SGD step below is exact. */
static float grad_of(uint64_t key, int d, int step)
{
    return (float)((int)((key * 7 + (uint64_t)d * 3 + (uint64_t)step * 5) % 11) - 5) / 16.0f;
}

/* ---- round trips ------------------------------------------------------------ */

START_TEST(pull_push_exact_with_duplicates)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "rt", 8, EMBER_OPTIM_SGD, 0.5f);
    enum { N = 3000, DIM = 8 };
    uint64_t *keys = malloc(N * sizeof *keys);
    float *out = malloc(N * DIM * sizeof *out), *g = malloc(N * DIM * sizeof *g);
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)(i % 1000) * 2654435761u + 17; /* 1000 distinct, each 3× */
    ember_error e;
    for (int i = 0; i < N * DIM; i++)
        out[i] = 42;
    ck_assert_msg(ember_pull(c, "rt", keys, N, out, DIM, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    for (int i = 0; i < N * DIM; i++)
        ck_assert_float_eq(out[i], 0);
    ember_table_info info;
    ck_assert_int_eq(ember_describe_table(c, "rt", &info, &e), 0);
    ck_assert_uint_eq(info.size, 1000);
    ck_assert_uint_eq(info.dim, DIM);
    ck_assert_uint_eq(info.capacity >= 3 * (1 << 14) * 0.9, 1);

    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < N; i++)
            for (int d = 0; d < DIM; d++)
                g[i * DIM + d] = grad_of(keys[i], d, step) * (float)(1 + i % 2);
        ck_assert_msg(ember_push(c, "rt", keys, N, g, DIM, &e) == 0, "%s", e.message);
    }
    ck_assert_int_eq(ember_pull(c, "rt", keys, N, out, DIM, EMBER_PULL_SERVE, &e), 0);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < DIM; d++) {
            double want = 0;
            for (int step = 0; step < 3; step++)
                for (int j = i % 1000; j < N; j += 1000)
                    want -= 0.5 * grad_of(keys[j], d, step) * (1 + j % 2);
            ck_assert_msg(out[i * DIM + d] == (float)want, "key %d dim %d: %g want %g", i, d,
                          out[i * DIM + d], want);
        }
    ck_assert_int_eq(ember_describe_table(c, "rt", &info, &e), 0);
    ck_assert_uint_eq(info.size, 1000);
    ck_assert_uint_gt(info.version_max, 0);

    /* Each key lives on the shard ember_shard_of names, and only there: ask each
     * shard alone (serving pulls, so nothing is created). */
    for (int s = 0; s < NSHARDS; s++) {
        ember_client *one = open_client(S[s].addr, 0, EMBER_DTYPE_FLOAT32);
        ck_assert_int_eq(ember_describe_table(one, "rt", &info, &e), 0);
        size_t mine = 0;
        for (int i = 0; i < 1000; i++)
            mine += ember_shard_of(keys[i], NSHARDS) == (unsigned)s;
        ck_assert_uint_eq(info.size, mine);
        ck_assert_uint_gt(mine, 250);
        ember_client_close(one);
    }
    drop(c, "rt");
    free(keys);
    free(out);
    free(g);
    ember_client_close(c);
}
END_TEST

START_TEST(wire_float16_and_bfloat16)
{
    for (int dt = EMBER_DTYPE_FLOAT16; dt <= EMBER_DTYPE_BFLOAT16; dt++) {
        ember_client *c = open_client(shard_list, 0, (ember_dtype)dt);
        create(c, "half", 16, EMBER_OPTIM_SGD, 1.0f);
        enum { N = 500, DIM = 16 };
        uint64_t keys[N];
        float g[N * DIM], out[N * DIM];
        for (int i = 0; i < N; i++)
            keys[i] = (uint64_t)i * 31 + 1;
        for (int i = 0; i < N * DIM; i++)
            g[i] = (float)(i % 13 - 6) / 8.0f; /* exact in both 16-bit types */
        ember_error e;
        ck_assert_msg(ember_push(c, "half", keys, N, g, DIM, &e) == 0, "%s", e.message);
        ck_assert_int_eq(ember_pull(c, "half", keys, N, out, DIM, 0, &e), 0);
        for (int i = 0; i < N * DIM; i++)
            ck_assert_float_eq(out[i], -g[i]);
        /* Not representable: rounded once each way, within the format's precision. */
        float v[DIM];
        uint64_t k = 7777777;
        for (int d = 0; d < DIM; d++)
            v[d] = 1.0f / (float)(d + 3);
        ck_assert_int_eq(ember_push(c, "half", &k, 1, v, DIM, &e), 0);
        ck_assert_int_eq(ember_pull(c, "half", &k, 1, out, DIM, 0, &e), 0);
        for (int d = 0; d < DIM; d++) {
            float tol = v[d] * (dt == EMBER_DTYPE_FLOAT16 ? 1.0f / 1024 : 1.0f / 128);
            ck_assert_msg(fabsf(out[d] + v[d]) <= tol, "dtype %d: %g vs %g", dt, out[d], -v[d]);
        }
        drop(c, "half");
        ember_client_close(c);
    }
}
END_TEST

START_TEST(async_prefetch_and_push_pull)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "async", 4, EMBER_OPTIM_SGD, 0.25f);
    enum { N = 256, DIM = 4, STEPS = 6 };
    static uint64_t batch[STEPS][N];
    static float rows[2][N * DIM];
    float g[N * DIM];
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < N; i++)
            batch[s][i] = (uint64_t)((i * 7 + s * 13) % 300);
    ember_error e;
    /* The training loop shape: prefetch batch s+1 while "computing" batch s. */
    ember_pending *p = ember_pull_async(c, "async", batch[0], N, rows[0], DIM, 0, &e);
    ck_assert_ptr_nonnull(p);
    for (int s = 0; s < STEPS; s++) {
        ck_assert_int_eq(ember_wait(p, &e), 0);
        for (int i = 0; i < N * DIM; i++)
            g[i] = 1.0f;
        ck_assert_int_eq(ember_push(c, "async", batch[s], N, g, DIM, &e), 0);
        if (s + 1 < STEPS) {
            p = ember_pull_async(c, "async", batch[s + 1], N, rows[(s + 1) % 2], DIM, 0, &e);
            ck_assert_ptr_nonnull(p);
        }
    }
    /* Every key's row = -0.25 × (times it appeared over all steps). */
    static float out[300 * DIM];
    uint64_t all[300];
    for (int i = 0; i < 300; i++)
        all[i] = (uint64_t)i;
    ck_assert_int_eq(ember_pull(c, "async", all, 300, out, 0 + DIM, 0, &e), 0);
    for (int k = 0; k < 300; k++) {
        int count = 0;
        for (int s = 0; s < STEPS; s++)
            for (int i = 0; i < N; i++)
                count += batch[s][i] == (uint64_t)k;
        ck_assert_float_eq(out[k * DIM], -0.25f * count);
    }
    /* PushPull: the pull sees this push. */
    uint64_t pk[2] = {1, 2};
    float pg[2 * DIM] = {4, 4, 4, 4, 4, 4, 4, 4}, po[2 * DIM];
    float before = out[1 * DIM];
    ck_assert_int_eq(ember_push_pull(c, "async", pk, 2, pg, pk, 2, po, DIM, 0, &e), 0);
    ck_assert_float_eq(po[0], before - 1.0f);
    ember_pending *pp = ember_push_async(c, "async", pk, 2, pg, DIM, &e);
    ck_assert_int_eq(ember_wait(pp, &e), 0);
    ck_assert_int_eq(ember_pull(c, "async", pk, 2, po, DIM, 0, &e), 0);
    ck_assert_float_eq(po[0], before - 2.0f);
    drop(c, "async");
    ember_client_close(c);
}
END_TEST

/* ---- every optimizer against a float64 reference --------------------------- */

typedef struct ref_row {
    double w[4], a[4], b[4], t;
} ref_row;

static void ref_apply(const ember_table_spec *s, ref_row *r, const double *g, int dim)
{
    double lr = s->optimizer.lr;
    switch (s->optimizer.kind) {
    case EMBER_OPTIM_SGD:
        for (int j = 0; j < dim; j++)
            r->w[j] -= lr * g[j];
        break;
    case EMBER_OPTIM_ADAGRAD:
        for (int j = 0; j < dim; j++) {
            r->a[j] += g[j] * g[j];
            r->w[j] -= lr * g[j] / (sqrt(r->a[j]) + s->optimizer.eps);
        }
        break;
    case EMBER_OPTIM_ADAM: {
        double b1 = s->optimizer.beta1, b2 = s->optimizer.beta2;
        r->t += 1;
        double c1 = 1 / (1 - pow(b1, r->t)), c2 = 1 / (1 - pow(b2, r->t));
        for (int j = 0; j < dim; j++) {
            r->a[j] = b1 * r->a[j] + (1 - b1) * g[j];
            r->b[j] = b2 * r->b[j] + (1 - b2) * g[j] * g[j];
            r->w[j] -= lr * ((r->a[j] * c1) / (sqrt(r->b[j] * c2) + s->optimizer.eps) +
                             s->optimizer.weight_decay * r->w[j]);
        }
        break;
    }
    case EMBER_OPTIM_FTRL: {
        double p = s->optimizer.lr_power, l1 = s->optimizer.l1, l2 = s->optimizer.l2;
        for (int j = 0; j < dim; j++) {
            double n2 = r->b[j] + g[j] * g[j];
            double sigma = (pow(n2, -p) - pow(r->b[j], -p)) / lr;
            r->a[j] += g[j] - sigma * r->w[j];
            r->b[j] = n2;
            double z = r->a[j];
            r->w[j] = fabs(z) <= l1 ? 0
                                    : ((z < 0 ? -1 : 1) * l1 - z) /
                                          ((s->optimizer.beta + pow(n2, -p)) / lr + 2 * l2);
        }
        break;
    }
    }
}

START_TEST(every_optimizer_matches_float64)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    enum { N = 96, DIM = 4, DISTINCT = 40, STEPS = 6 };
    for (int kind = EMBER_OPTIM_SGD; kind <= EMBER_OPTIM_FTRL; kind++) {
        ember_table_spec s;
        ember_table_spec_init(&s);
        s.dim = DIM;
        s.capacity_per_shard = 4096;
        s.optimizer.kind = kind;
        s.optimizer.lr = kind == EMBER_OPTIM_SGD ? 0.3f : 0.05f;
        s.optimizer.weight_decay = kind == EMBER_OPTIM_ADAM ? 0.01f : 0.0f;
        s.optimizer.l1 = kind == EMBER_OPTIM_FTRL ? 0.002f : 0.0f;
        s.optimizer.l2 = kind == EMBER_OPTIM_FTRL ? 0.01f : 0.0f;
        s.optimizer.beta = kind == EMBER_OPTIM_FTRL ? 1.0f : 0.0f;
        s.initializer.kind = EMBER_INIT_ZEROS;
        s.initializer.a = s.initializer.b = 0;
        ember_error e;
        char name[32];
        snprintf(name, sizeof name, "opt%d", kind);
        ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "%s", e.message);

        ref_row ref[DISTINCT];
        memset(ref, 0, sizeof ref);
        for (int k = 0; k < DISTINCT; k++)
            for (int j = 0; j < DIM; j++) {
                ref[k].a[j] = kind == EMBER_OPTIM_ADAGRAD ? s.optimizer.initial_accumulator : 0;
                ref[k].b[j] = kind == EMBER_OPTIM_FTRL ? s.optimizer.initial_accumulator : 0;
            }
        uint64_t keys[N];
        float g[N * DIM], out[N * DIM];
        for (int step = 0; step < STEPS; step++) {
            for (int i = 0; i < N; i++)
                keys[i] = (uint64_t)((i * 5 + step) % DISTINCT) + 1000; /* duplicates */
            for (int i = 0; i < N; i++)
                for (int d = 0; d < DIM; d++)
                    g[i * DIM + d] = grad_of(keys[i], d, step) + (float)(i % 3) / 32.0f;
            ck_assert_msg(ember_push(c, name, keys, N, g, DIM, &e) == 0, "%s", e.message);
            for (int k = 0; k < DISTINCT; k++) {
                double sum[DIM] = {0};
                int seen = 0;
                for (int i = 0; i < N; i++)
                    if (keys[i] == (uint64_t)k + 1000) {
                        seen = 1;
                        for (int d = 0; d < DIM; d++)
                            sum[d] += g[i * DIM + d];
                    }
                if (seen)
                    ref_apply(&s, &ref[k], sum, DIM);
            }
            ck_assert_int_eq(ember_pull(c, name, keys, N, out, DIM, EMBER_PULL_SERVE, &e), 0);
            for (int i = 0; i < N; i++)
                for (int d = 0; d < DIM; d++) {
                    double want = ref[keys[i] - 1000].w[d], got = out[i * DIM + d];
                    ck_assert_msg(fabs(got - want) <= 1e-5 + 1e-4 * fabs(want),
                                  "optimizer %d step %d key %llu dim %d: %.9g want %.9g", kind,
                                  step, (unsigned long long)keys[i], d, got, want);
                }
        }
        drop(c, name);
    }
    ember_client_close(c);
}
END_TEST

/* ---- errors ------------------------------------------------------------------ */

START_TEST(errors_name_shard_and_dim)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "dim8", 8, EMBER_OPTIM_SGD, 0.1f);
    uint64_t keys[64];
    float v[64 * 8];
    for (int i = 0; i < 64; i++)
        keys[i] = (uint64_t)i;
    memset(v, 0, sizeof v);
    ember_error e;
    /* A training pull of the wrong dim is refused before any key is created
     * (PullRequest carries the dim the caller expects). */
    ck_assert_int_eq(ember_pull(c, "dim8", keys, 64, v, 4, EMBER_PULL_INSERT, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(e.message, "dim 8") != NULL, "%s", e.message);
    ember_table_info before;
    ck_assert_int_eq(ember_describe_table(c, "dim8", &before, &e), 0);
    ck_assert_uint_eq(before.size, 0);
    ck_assert_int_eq(ember_pull(c, "dim8", keys, 64, v, 4, EMBER_PULL_SERVE, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_ge(e.shard, 0);
    ck_assert_msg(strstr(e.message, "dim 8") != NULL, "%s", e.message);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "shard %d (%s): ", e.shard, S[e.shard].addr);
    ck_assert_msg(strncmp(e.message, prefix, strlen(prefix)) == 0, "%s", e.message);
    /* A push of the wrong width is the server's to refuse. */
    ck_assert_int_eq(ember_push(c, "dim8", keys, 64, v, 4, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_ge(e.shard, 0);
    /* Unknown table: NOT_FOUND from the first shard. */
    ck_assert_int_eq(ember_pull(c, "nope", keys, 64, v, 8, 0, &e), EMBER_NOT_FOUND);
    ck_assert_int_eq(e.shard, 0);
    snprintf(prefix, sizeof prefix, "shard 0 (%s): ", S[0].addr);
    ck_assert_msg(strncmp(e.message, prefix, strlen(prefix)) == 0, "%s", e.message);
    ember_table_info info;
    ck_assert_int_eq(ember_describe_table(c, "nope", &info, &e), EMBER_NOT_FOUND);
    ck_assert_int_eq(ember_drop_table(c, "nope", 0, &e), EMBER_NOT_FOUND);
    ck_assert_int_eq(ember_drop_table(c, "nope", 1, &e), 0);
    /* Reserved keys never leave the client. */
    keys[10] = UINT64_MAX;
    ck_assert_int_eq(ember_push(c, "dim8", keys, 64, v, 8, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.shard, -1);
    ck_assert_int_eq(ember_describe_table(c, "dim8", &info, &e), 0);
    ck_assert_uint_eq(info.size, 0);
    /* Creating it again: ALREADY_EXISTS unless if_not_exists. */
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = 8;
    s.capacity_per_shard = 1 << 14;
    ck_assert_int_eq(ember_create_table(c, "dim8", &s, 0, &e), EMBER_ALREADY_EXISTS);
    ck_assert_int_eq(ember_create_table(c, "dim8", &s, 1, &e), 0);
    s.dim = 16;
    ck_assert_int_eq(ember_create_table(c, "dim8", &s, 1, &e), EMBER_ALREADY_EXISTS);
    ck_assert_msg(strstr(e.message, "dim 8, not 16") != NULL, "%s", e.message);
    drop(c, "dim8");
    ember_client_close(c);
}
END_TEST

/* ---- shards going away and coming back --------------------------------------- */

START_TEST(down_shard_fails_in_time_then_reconnects)
{
    eh_server own[2];
    memset(own, 0, sizeof own);
    const char *flags[] = {"--threads=1", NULL};
    char list[160];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(eh_server_start(&own[i], flags), 0);
    snprintf(list, sizeof list, "%s,%s", own[0].addr, own[1].addr);
    ember_client *c = open_client(list, 1000, EMBER_DTYPE_FLOAT32);
    create(c, "t", 4, EMBER_OPTIM_SGD, 1.0f);
    uint64_t keys[32];
    float out[32 * 4];
    for (int i = 0; i < 32; i++)
        keys[i] = (uint64_t)i;
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "t", keys, 32, out, 4, 0, &e), 0);

    ck_assert_int_eq(eh_server_stop(&own[1], SIGKILL, NULL), 0);
    for (int round = 0; round < 3; round++) {
        double t0 = now_ms();
        int rv = ember_pull(c, "t", keys, 32, out, 4, 0, &e);
        double dt = now_ms() - t0;
        ck_assert_msg(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED, "rv %d: %s",
                      rv, e.message);
        ck_assert_int_eq(e.shard, 1);
        ck_assert_msg(dt < 1300, "took %.0f ms with a 1000 ms deadline", dt);
        rv = ember_push(c, "t", keys, 32, out, 4, &e);
        ck_assert(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED);
    }

    /* Back on the same port (empty: recreate its table); the client reconnects
     * without being reopened, through its retries. */
    ck_assert_int_eq(eh_server_restart(&own[1]), 0);
    double t0 = now_ms();
    int rv;
    do {
        ember_table_spec s;
        ember_table_spec_init(&s);
        s.dim = 4;
        s.capacity_per_shard = 1 << 14;
        s.initializer.kind = EMBER_INIT_ZEROS;
        s.initializer.a = s.initializer.b = 0;
        rv = ember_create_table(c, "t", &s, 1, &e);
    } while (rv == EMBER_UNAVAILABLE && now_ms() - t0 < 5000);
    ck_assert_msg(rv == 0, "create after restart: %s", e.message);
    ck_assert_msg(ember_pull(c, "t", keys, 32, out, 4, 0, &e) == 0, "%s", e.message);
    ck_assert_msg(now_ms() - t0 < 5000, "reconnect took %.0f ms", now_ms() - t0);
    ember_client_close(c);
    for (int i = 0; i < 2; i++)
        eh_server_cleanup(&own[i]);
}
END_TEST

/* A push that fails while its shard is down is retried, and lands once the shard
 * is back — inside the call's deadline. */
START_TEST(push_retried_across_a_restart)
{
    eh_server own;
    memset(&own, 0, sizeof own);
    char dir[200];
    snprintf(dir, sizeof dir, "--checkpoint-dir=%s/restart", tmpdir);
    const char *flags[] = {"--threads=1", dir, NULL};
    ck_assert_int_eq(eh_server_start(&own, flags), 0);
    ember_client *c = open_client(own.addr, 8000, EMBER_DTYPE_FLOAT32);
    create(c, "r", 4, EMBER_OPTIM_SGD, 1.0f);
    uint64_t keys[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float g[32], out[32];
    for (int i = 0; i < 32; i++)
        g[i] = 0.5f;
    ember_error e;
    ck_assert_int_eq(ember_push(c, "r", keys, 8, g, 4, &e), 0);
    ck_assert_int_eq(ember_save(c, "r", NULL, &e), 0);
    ck_assert_int_eq(eh_server_stop(&own, SIGKILL, NULL), 0);

    /* The push starts while the shard is down; restart it 300 ms later. */
    ember_pending *p = ember_push_async(c, "r", keys, 8, g, 4, &e);
    ck_assert_ptr_nonnull(p);
    usleep(300 * 1000);
    ck_assert_int_eq(eh_server_restart(&own), 0);
    /* The restarted server restores nothing by itself here: load the checkpoint
     * before the retries run out (the backoff has reached ~800 ms by now). */
    ember_client *admin = open_client(own.addr, 5000, EMBER_DTYPE_FLOAT32);
    ck_assert_msg(ember_load(admin, "r", NULL, &e) == 0, "%s", e.message);
    ember_client_close(admin);
    int rv = ember_wait(p, &e);
    if (rv == 0) {
        ck_assert_int_eq(ember_pull(c, "r", keys, 8, out, 4, 0, &e), 0);
        for (int i = 0; i < 32; i++)
            ck_assert_float_eq(out[i], -1.0f);
    } else {
        /* The retries gave up before the server was serving again (a slow
         * machine): still an honest UNAVAILABLE, and nothing applied. */
        ck_assert_int_eq(rv, EMBER_UNAVAILABLE);
        ck_assert_int_eq(ember_pull(c, "r", keys, 8, out, 4, 0, &e), 0);
        for (int i = 0; i < 32; i++)
            ck_assert_float_eq(out[i], -0.5f);
    }
    ember_client_close(c);
    eh_server_cleanup(&own);
}
END_TEST

START_TEST(retried_push_applied_once)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "once", 4, EMBER_OPTIM_SGD, 1.0f);
    ember_client_debug_resend_pushes(c, 1);
    uint64_t keys[300];
    float g[300 * 4], out[300 * 4];
    for (int i = 0; i < 300; i++)
        keys[i] = (uint64_t)i * 977;
    for (int i = 0; i < 300 * 4; i++)
        g[i] = 0.125f;
    ember_error e;
    for (int step = 0; step < 4; step++)
        ck_assert_msg(ember_push(c, "once", keys, 300, g, 4, &e) == 0, "%s", e.message);
    /* Also through PushPull. */
    ck_assert_int_eq(ember_push_pull(c, "once", keys, 300, g, keys, 300, out, 4, 0, &e), 0);
    ck_assert_uint_eq(ember_client_debug_duplicate_acks(c), 5 * NSHARDS);
    ember_client_debug_resend_pushes(c, 0);
    ck_assert_int_eq(ember_pull(c, "once", keys, 300, out, 4, 0, &e), 0);
    for (int i = 0; i < 300 * 4; i++)
        ck_assert_float_eq(out[i], -5 * 0.125f);
    drop(c, "once");
    ember_client_close(c);
}
END_TEST

/* ---- concurrency --------------------------------------------------------------- */

typedef struct worker {
    ember_client *c; /* shared, or NULL: open its own */
    int id, rv;
    char err[512];
} worker;

enum { W_THREADS = 4, W_STEPS = 25, W_KEYS = 200, W_DIM = 8 };

static void *worker_main(void *p)
{
    worker *w = p;
    ember_client *c = w->c ? w->c : open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    uint64_t keys[W_KEYS];
    float g[W_KEYS * W_DIM], out[W_KEYS * W_DIM];
    for (int i = 0; i < W_KEYS; i++)
        keys[i] = (uint64_t)((i * 3 + w->id) % 150); /* overlapping, duplicated */
    ember_error e;
    for (int s = 0; s < W_STEPS && w->rv == 0; s++) {
        for (int i = 0; i < W_KEYS * W_DIM; i++)
            g[i] = (float)((i + s + w->id) % 4) / 16.0f;
        w->rv = ember_pull(c, "conc", keys, W_KEYS, out, W_DIM, 0, &e);
        if (w->rv == 0)
            w->rv = ember_push(c, "conc", keys, W_KEYS, g, W_DIM, &e);
    }
    if (w->rv)
        snprintf(w->err, sizeof w->err, "%s", e.message);
    if (!w->c)
        ember_client_close(c);
    return NULL;
}

static void run_workers(ember_client *shared)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "conc", W_DIM, EMBER_OPTIM_SGD, 0.5f);
    pthread_t t[W_THREADS];
    worker w[W_THREADS];
    for (int i = 0; i < W_THREADS; i++) {
        w[i] = (worker){.c = shared, .id = i};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < W_THREADS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(w[i].rv == 0, "worker %d: %s", i, w[i].err);
    }
    /* Exact: every gradient is a multiple of 1/16 and the sums stay small. */
    static double want[150][W_DIM];
    memset(want, 0, sizeof want);
    for (int id = 0; id < W_THREADS; id++)
        for (int s = 0; s < W_STEPS; s++)
            for (int i = 0; i < W_KEYS; i++)
                for (int d = 0; d < W_DIM; d++)
                    want[(i * 3 + id) % 150][d] -= 0.5 * ((i * W_DIM + d + s + id) % 4) / 16.0;
    uint64_t keys[150];
    float out[150 * W_DIM];
    for (int k = 0; k < 150; k++)
        keys[k] = (uint64_t)k;
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "conc", keys, 150, out, W_DIM, 0, &e), 0);
    for (int k = 0; k < 150; k++)
        for (int d = 0; d < W_DIM; d++)
            ck_assert_msg(out[k * W_DIM + d] == (float)want[k][d], "key %d: %g want %g", k,
                          out[k * W_DIM + d], want[k][d]);
    drop(c, "conc");
    ember_client_close(c);
}

START_TEST(concurrent_clients_sum_exactly)
{
    run_workers(NULL);
}
END_TEST

START_TEST(threads_sharing_one_client_sum_exactly)
{
    ember_client *shared = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    run_workers(shared);
    ember_client_close(shared);
}
END_TEST

/* ---- admin ---------------------------------------------------------------------- */

START_TEST(save_drop_load_round_trip)
{
    ember_client *c = open_client(shard_list, 0, EMBER_DTYPE_FLOAT32);
    create(c, "ck", 4, EMBER_OPTIM_SGD, 1.0f);
    uint64_t keys[500];
    float g[500 * 4], out[500 * 4];
    for (int i = 0; i < 500; i++)
        keys[i] = (uint64_t)i * 7 + 3;
    for (int i = 0; i < 500 * 4; i++)
        g[i] = (float)(i % 5) / 4.0f;
    ember_error e;
    ck_assert_int_eq(ember_push(c, "ck", keys, 500, g, 4, &e), 0);
    ck_assert_msg(ember_save(c, "ck", NULL, &e) == 0, "%s", e.message);
    drop(c, "ck");
    ck_assert_int_eq(ember_pull(c, "ck", keys, 500, out, 4, 0, &e), EMBER_NOT_FOUND);
    ck_assert_msg(ember_load(c, "ck", NULL, &e) == 0, "%s", e.message);
    ember_table_info info;
    ck_assert_int_eq(ember_describe_table(c, "ck", &info, &e), 0);
    ck_assert_uint_eq(info.size, 500);
    ck_assert_int_eq(ember_pull(c, "ck", keys, 500, out, 4, EMBER_PULL_SERVE, &e), 0);
    for (int i = 0; i < 500 * 4; i++)
        ck_assert_float_eq(out[i], -g[i]);
    drop(c, "ck");
    ember_client_close(c);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_client"))
        return EH_EXIT_SKIP;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ember-it-client-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < NSHARDS; i++) {
        char idx[32], cnt[32], dir[200];
        snprintf(idx, sizeof idx, "--shard-index=%d", i);
        snprintf(cnt, sizeof cnt, "--shard-count=%d", NSHARDS);
        snprintf(dir, sizeof dir, "--checkpoint-dir=%s/s%d", tmpdir, i);
        const char *flags[] = {"--threads=2", idx, cnt, dir, NULL};
        if (eh_server_start(&S[i], flags)) {
            fprintf(stderr, "cannot start shard %d\n", i);
            return 1;
        }
        if (i)
            strcat(shard_list, ",");
        strcat(shard_list, S[i].addr);
    }

    Suite *s = suite_create("client");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pull_push_exact_with_duplicates);
    tcase_add_test(tc, wire_float16_and_bfloat16);
    tcase_add_test(tc, async_prefetch_and_push_pull);
    tcase_add_test(tc, every_optimizer_matches_float64);
    tcase_add_test(tc, errors_name_shard_and_dim);
    tcase_add_test(tc, retried_push_applied_once);
    tcase_add_test(tc, concurrent_clients_sum_exactly);
    tcase_add_test(tc, threads_sharing_one_client_sum_exactly);
    tcase_add_test(tc, save_drop_load_round_trip);
    tcase_add_test(tc, down_shard_fails_in_time_then_reconnects);
    tcase_add_test(tc, push_retried_across_a_restart);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (int i = 0; i < NSHARDS; i++)
        eh_server_cleanup(&S[i]);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

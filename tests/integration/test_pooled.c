/*
 * test_pooled.c — pooled lookups (ember_pull_pooled / ember_push_pooled and the
 * Pull/Push fields behind them) through real servers: one single-shard server
 * and a two-shard cluster, each talked to by libember; bad input through raw
 * gRPC (harness.h) and libember.
 *
 * What must hold (README "Pooled lookups"):
 *  - a pooled pull equals pooling ember_pull's rows on the worker in key order:
 *    bit for bit for SUM on one shard and wherever the sums are exact (rows that
 *    are multiples of 1/16), MEAN/SQRTN within 1 ulp of the worker's (sum / norm);
 *    over two shards with arbitrary rows, within the rounding of the split sum;
 *  - a pooled push leaves the table as the worker's own expansion pushed with
 *    ember_push does (rows compared bit for bit), on one shard and on two;
 *  - each bad input is refused with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED over
 *    a limit) and changes nothing (rows and table size compared).
 *
 * Runs without forking (CK_FORK=no, set by CMake): gRPC state does not survive
 * Check's fork.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/ember.h"
#include "harness.h"
#include "proto/wire.h"

#define SHARD "/ember.v1.Shard/"
#define DIM 16
#define MAX_KEYS 4096

static eh_server one;     /* a single-shard cluster */
static eh_server two[2];  /* a two-shard cluster */
static char two_list[128];

static ember_client *open_client(const char *shards)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shards;
    o.timeout_ms = 20000;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

static void create(ember_client *c, const char *name, int optim, int init)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = 1 << 14;
    s.optimizer.kind = optim;
    s.optimizer.lr = 0.05f;
    s.initializer.kind = init;
    s.initializer.a = -1;
    s.initializer.b = 1;
    s.seed = 7;
    ember_error e;
    ember_drop_table(c, name, 1, &e);
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Random bags: sizes 0..maxb, keys from a pool of `pool` so that bags repeat
 * keys, within and across bags. */
typedef struct bags {
    size_t nb, n;
    uint64_t offs[400];
    uint64_t keys[MAX_KEYS];
    float w[MAX_KEYS];
} bags;

static void make_bags(bags *b, size_t nb, unsigned maxb, unsigned pool)
{
    b->nb = nb;
    b->n = 0;
    b->offs[0] = 0;
    for (size_t i = 0; i < nb; i++) {
        unsigned k = (unsigned)(next_rand() % (maxb + 1));
        for (unsigned j = 0; j < k; j++) {
            b->keys[b->n] = 1 + next_rand() % pool;
            /* weights: multiples of 1/8 in [-1, 2], some 0 */
            b->w[b->n] = (float)((int)(next_rand() % 25) - 8) / 8.0f;
            b->n++;
        }
        b->offs[i + 1] = b->n;
    }
}

/* The worker's own pooling, in key order, in float32 (proto/pool.h's formula). */
static void worker_pool(const bags *b, const float *rows, const float *w, int comb, float *out)
{
    for (size_t i = 0; i < b->nb; i++) {
        float *o = out + i * DIM, norm = 0;
        memset(o, 0, DIM * sizeof *o);
        for (uint64_t k = b->offs[i]; k < b->offs[i + 1]; k++) {
            float wk = w ? w[k] : 1.0f;
            for (int d = 0; d < DIM; d++) {
                float p = wk * rows[k * DIM + d];
                o[d] = o[d] + p;
            }
            norm += comb == EMBER_COMBINER_SQRTN ? wk * wk : wk;
        }
        if (comb == EMBER_COMBINER_SQRTN)
            norm = sqrtf(norm);
        if (comb == EMBER_COMBINER_SUM)
            continue;
        for (int d = 0; d < DIM; d++)
            o[d] = norm == 0 ? 0 : o[d] / norm;
    }
}

static int64_t ulps(float a, float b)
{
    int32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    if (x < 0)
        x = INT32_MIN - x;
    if (y < 0)
        y = INT32_MIN - y;
    return llabs((long long)x - y);
}

static const char *const comb_name[] = {"none", "sum", "mean", "sqrtn"};

/* Pulls `b` pooled and compares with worker-side pooling of ember_pull's rows:
 * exact (max_ulps 0) or within max_ulps; tol > 0: within tol·Σ|w·x| instead. */
static void check_pull(ember_client *c, const char *t, const bags *b, int weighted, int comb,
                       int max_ulps, float tol)
{
    static float rows[MAX_KEYS * DIM], got[400 * DIM], want[400 * DIM], mag[400 * DIM];
    ember_error e;
    const float *w = weighted ? b->w : NULL;
    ck_assert_msg(ember_pull(c, t, b->keys, b->n, rows, DIM, EMBER_PULL_INSERT, &e) == 0,
                  "pull: %s", e.message);
    ck_assert_msg(ember_pull_pooled(c, t, b->keys, b->n, b->offs, b->nb, w, comb, got, DIM,
                                    EMBER_PULL_INSERT, &e) == 0,
                  "pooled pull: %s", e.message);
    worker_pool(b, rows, w, comb, want);
    if (tol > 0) {
        static float absrows[MAX_KEYS * DIM];
        for (size_t i = 0; i < b->n * DIM; i++)
            absrows[i] = fabsf(rows[i]);
        static float absw[MAX_KEYS];
        for (size_t i = 0; i < b->n; i++)
            absw[i] = w ? fabsf(w[i]) : 1.0f;
        worker_pool(b, absrows, absw, EMBER_COMBINER_SUM, mag);
    }
    for (size_t i = 0; i < b->nb * DIM; i++) {
        if (tol > 0) {
            ck_assert_msg(fabsf(got[i] - want[i]) <= tol * mag[i] + 1e-30f,
                          "%s %s bag %zu d %zu: %.9g vs %.9g", t, comb_name[comb], i / DIM,
                          i % DIM, got[i], want[i]);
        } else {
            ck_assert_msg(ulps(got[i], want[i]) <= max_ulps,
                          "%s %s%s bag %zu d %zu: %.9g vs %.9g (%lld ulps)", t,
                          weighted ? "weighted " : "", comb_name[comb], i / DIM, i % DIM,
                          got[i], want[i], (long long)ulps(got[i], want[i]));
        }
    }
}

/* Rows set to multiples of 1/16 (so every sum below is exact in float32). */
static void assign_sixteenths(ember_client *c, const char *t, const bags *b)
{
    static float v[MAX_KEYS * DIM];
    for (size_t i = 0; i < b->n; i++)
        for (int d = 0; d < DIM; d++)
            v[i * DIM + d] = (float)((int)((b->keys[i] * 7 + (uint64_t)d * 3) % 33) - 16) / 16.0f;
    ember_error e;
    ck_assert_msg(ember_push_mode_values(c, t, b->keys, b->n, v, DIM,
                                         EMBER_PUSH_INSERT_OR_ASSIGN, &e) == 0,
                  "assign: %s", e.message);
}

START_TEST(pull_one_shard_equals_worker_pooling)
{
    ember_client *c = open_client(one.addr);
    create(c, "p1", EMBER_OPTIM_SGD, EMBER_INIT_UNIFORM);
    static bags b;
    make_bags(&b, 300, 12, 500);
    for (int comb = EMBER_COMBINER_SUM; comb <= EMBER_COMBINER_SQRTN; comb++)
        for (int weighted = 0; weighted < 2; weighted++)
            check_pull(c, "p1", &b, weighted, comb, comb == EMBER_COMBINER_SUM ? 0 : 1, 0);
    /* bags of 1 and of 100 */
    make_bags(&b, 40, 1, 1000);
    check_pull(c, "p1", &b, 0, EMBER_COMBINER_SUM, 0, 0);
    make_bags(&b, 30, 100, 3000);
    check_pull(c, "p1", &b, 1, EMBER_COMBINER_SUM, 0, 0);
    check_pull(c, "p1", &b, 0, EMBER_COMBINER_MEAN, 1, 0);
    ember_client_close(c);
}
END_TEST

START_TEST(pull_two_shards_equals_worker_pooling)
{
    ember_client *c = open_client(two_list);
    create(c, "p2", EMBER_OPTIM_SGD, EMBER_INIT_UNIFORM);
    static bags b;
    make_bags(&b, 300, 12, 500);
    /* exact sums: bit for bit (SUM), within 1 ulp (MEAN, SQRTN) */
    assign_sixteenths(c, "p2", &b);
    for (int comb = EMBER_COMBINER_SUM; comb <= EMBER_COMBINER_SQRTN; comb++)
        for (int weighted = 0; weighted < 2; weighted++)
            check_pull(c, "p2", &b, weighted, comb, comb == EMBER_COMBINER_SUM ? 0 : 1, 0);
    /* arbitrary rows: the split sum's rounding, relative to Σ|w·x| */
    make_bags(&b, 200, 30, 100000);
    for (int comb = EMBER_COMBINER_SUM; comb <= EMBER_COMBINER_SQRTN; comb++)
        check_pull(c, "p2", &b, 1, comb, 0, 64 * 1.2e-7f);
    ember_client_close(c);
}
END_TEST

START_TEST(pull_empty_bags_zero_and_serving)
{
    ember_client *c = open_client(two_list);
    create(c, "pe", EMBER_OPTIM_SGD, EMBER_INIT_UNIFORM);
    uint64_t keys[3] = {5, 6, 7}, offs[6] = {0, 0, 2, 2, 3, 3};
    float w[3] = {0, 0, 1};
    static float out[5 * DIM];
    ember_error e;
    memset(out, 0x7f, sizeof out);
    ck_assert_int_eq(ember_pull_pooled(c, "pe", keys, 3, offs, 5, w, EMBER_COMBINER_MEAN, out, DIM,
                                       EMBER_PULL_INSERT, &e),
                     0);
    for (int d = 0; d < DIM; d++) {
        ck_assert(out[d] == 0);            /* empty */
        ck_assert(out[DIM + d] == 0);      /* weights summing to 0 */
        ck_assert(out[3 * DIM + d] != 0);  /* key 7, weight 1: its row (uniform init) */
        ck_assert(out[4 * DIM + d] == 0);
    }
    /* n = 0: zeros, nothing sent */
    memset(out, 0x7f, sizeof out);
    uint64_t z[3] = {0, 0, 0};
    ck_assert_int_eq(ember_pull_pooled(c, "pe", NULL, 0, z, 2, NULL, EMBER_COMBINER_SUM, out, DIM,
                                       EMBER_PULL_SERVE, &e),
                     0);
    for (int d = 0; d < 2 * DIM; d++)
        ck_assert(out[d] == 0);
    /* serving: a missing key is not created */
    ember_table_info before, after;
    ck_assert_int_eq(ember_describe_table(c, "pe", &before, &e), 0);
    uint64_t miss[2] = {1000001, 7}, mo[2] = {0, 2};
    ck_assert_int_eq(ember_pull_pooled(c, "pe", miss, 2, mo, 1, NULL, EMBER_COMBINER_SUM, out, DIM,
                                       EMBER_PULL_SERVE, &e),
                     0);
    ck_assert_int_eq(ember_describe_table(c, "pe", &after, &e), 0);
    ck_assert_uint_eq(before.size, after.size);
    ember_client_close(c);
}
END_TEST

/* Pushes bags pooled into table a, and the worker's own expansion (g·c_i per
 * key, proto/pool.h) with ember_push into table b; the rows must be equal. */
static void check_push(ember_client *c, const char *a, const char *bt, const bags *b,
                       int weighted, int comb)
{
    static float g[400 * DIM], ex[MAX_KEYS * DIM], ra[MAX_KEYS * DIM], rb[MAX_KEYS * DIM];
    ember_error e;
    const float *w = weighted ? b->w : NULL;
    for (size_t i = 0; i < b->nb * DIM; i++)
        g[i] = (float)((int)(next_rand() % 2001) - 1000) / 997.0f;
    for (size_t i = 0; i < b->nb; i++) {
        float norm = 0;
        for (uint64_t k = b->offs[i]; k < b->offs[i + 1]; k++) {
            float wk = w ? w[k] : 1.0f;
            norm += comb == EMBER_COMBINER_SQRTN ? wk * wk : wk;
        }
        if (comb == EMBER_COMBINER_SQRTN)
            norm = sqrtf(norm);
        if (comb == EMBER_COMBINER_MEAN && !w)
            norm = (float)(b->offs[i + 1] - b->offs[i]);
        for (uint64_t k = b->offs[i]; k < b->offs[i + 1]; k++) {
            float wk = w ? w[k] : 1.0f;
            float cf = comb == EMBER_COMBINER_SUM ? wk : norm == 0 ? 0 : wk / norm;
            for (int d = 0; d < DIM; d++)
                ex[k * DIM + d] = g[i * DIM + d] * cf;
        }
    }
    ck_assert_msg(ember_push_pooled(c, a, b->keys, b->n, b->offs, b->nb, w, comb, g, DIM, &e) ==
                      0,
                  "pooled push: %s", e.message);
    ck_assert_msg(ember_push(c, bt, b->keys, b->n, ex, DIM, &e) == 0, "push: %s", e.message);
    ck_assert_int_eq(ember_pull(c, a, b->keys, b->n, ra, DIM, EMBER_PULL_SERVE, &e), 0);
    ck_assert_int_eq(ember_pull(c, bt, b->keys, b->n, rb, DIM, EMBER_PULL_SERVE, &e), 0);
    for (size_t i = 0; i < b->n * DIM; i++)
        ck_assert_msg(memcmp(&ra[i], &rb[i], 4) == 0, "%s %s%s key %llu d %zu: %.9g vs %.9g", a,
                      weighted ? "weighted " : "", comb_name[comb],
                      (unsigned long long)b->keys[i / DIM], i % DIM, ra[i], rb[i]);
}

static void push_equals_expanded(const char *shards, const char *pfx)
{
    ember_client *c = open_client(shards);
    static bags b;
    char a[32], bt[32];
    snprintf(a, sizeof a, "%s_a", pfx);
    snprintf(bt, sizeof bt, "%s_b", pfx);
    /* Adagrad: equal keys' gradients summed then one step — an expansion that
     * stepped per occurrence would differ */
    create(c, a, EMBER_OPTIM_ADAGRAD, EMBER_INIT_UNIFORM);
    create(c, bt, EMBER_OPTIM_ADAGRAD, EMBER_INIT_UNIFORM);
    for (int comb = EMBER_COMBINER_SUM; comb <= EMBER_COMBINER_SQRTN; comb++)
        for (int weighted = 0; weighted < 2; weighted++) {
            make_bags(&b, 200, 10, 300);
            check_push(c, a, bt, &b, weighted, comb);
        }
    ember_client_close(c);
}

START_TEST(push_one_shard_equals_expanded_push) { push_equals_expanded(one.addr, "u1"); }
END_TEST

START_TEST(push_two_shards_equals_expanded_push) { push_equals_expanded(two_list, "u2"); }
END_TEST

/* ---- bad input: raw requests ------------------------------------------------ */

typedef struct raw {
    uint64_t keys[4];
    uint64_t offs[4];
    float w[4];
    float g[4 * DIM];
    float norms[4];
} raw;

static int send_pull(eh_client *h, const ember_wire_pull_request *q, char *msg)
{
    size_t len = ember_wire_pull_request_size(q, NULL);
    uint8_t *buf = malloc(len + 1);
    ember_wire_pull_request_encode(q, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(h, SHARD "Pull", buf, len, 0, &r), 0);
    free(buf);
    snprintf(msg, 300, "%.290s", r.message);
    int code = r.code;
    eh_result_free(&r);
    return code;
}

static int send_push(eh_client *h, const ember_wire_push_request *q, char *msg)
{
    size_t len = ember_wire_push_request_size(q, NULL);
    uint8_t *buf = malloc(len + 1);
    ember_wire_push_request_encode(q, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(h, SHARD "Push", buf, len, 0, &r), 0);
    free(buf);
    snprintf(msg, 300, "%.290s", r.message);
    int code = r.code;
    eh_result_free(&r);
    return code;
}

#define B(p, n) ((ember_wire_bytes){(const uint8_t *)(p), (n)})

/* A valid pooled pull of keys 1..3 in bags {1,2},{3}, weighted, over table "bad". */
static ember_wire_pull_request good_pull(raw *x)
{
    ember_wire_pull_request q;
    memset(&q, 0, sizeof q);
    q.table = B("bad", 3);
    q.keys = B(x->keys, 24);
    q.insert_missing = 1;
    q.offsets = B(x->offs, 24);
    q.combiner = EMBER_WIRE_COMBINER_MEAN;
    q.weights = B(x->w, 12);
    return q;
}

static ember_wire_push_request good_push(raw *x)
{
    ember_wire_push_request q;
    memset(&q, 0, sizeof q);
    q.table = B("bad", 3);
    q.keys = B(x->keys, 24);
    q.values = B(x->g, 2 * DIM * 4);
    q.offsets = B(x->offs, 24);
    q.combiner = EMBER_WIRE_COMBINER_MEAN;
    q.weights = B(x->w, 12);
    q.norms = B(x->norms, 8);
    return q;
}

static void snapshot(ember_client *c, float *rows, uint64_t *size)
{
    uint64_t keys[3] = {1, 2, 3};
    ember_error e;
    ember_table_info info;
    ck_assert_int_eq(ember_pull(c, "bad", keys, 3, rows, DIM, EMBER_PULL_SERVE, &e), 0);
    ck_assert_int_eq(ember_describe_table(c, "bad", &info, &e), 0);
    *size = info.size;
}

START_TEST(bad_input_refused_and_changes_nothing)
{
    ember_client *c = open_client(one.addr);
    eh_client *h = eh_client_open(one.addr);
    create(c, "bad", EMBER_OPTIM_SGD, EMBER_INIT_UNIFORM);
    raw x = {.keys = {1, 2, 3}, .offs = {0, 2, 3}, .w = {1, 0.5f, 2}, .norms = {1.5f, 2}};
    for (int i = 0; i < 2 * DIM; i++)
        x.g[i] = 0.25f;
    char msg[300];
    /* the valid forms work: the first pull creates keys 1..3 */
    ember_wire_pull_request q = good_pull(&x);
    ck_assert_msg(send_pull(h, &q, msg) == 0, "%s", msg);
    static float before[3 * DIM], after[3 * DIM];
    uint64_t size0, size1;
    snapshot(c, before, &size0);
    ck_assert_uint_eq(size0, 3);

    /* a refused pull must not create keys: new keys 7, 8, 9 */
    raw y = x;
    y.keys[0] = 7, y.keys[1] = 8, y.keys[2] = 9;
    struct {
        const char *what;
        int code;
        ember_wire_pull_request q;
    } pulls[16];
    int np = 0;
#define PULL_CASE(desc, want, edit)                                                        \
    do {                                                                                   \
        ember_wire_pull_request q_ = good_pull(&y);                                        \
        edit;                                                                              \
        pulls[np].what = desc;                                                             \
        pulls[np].code = want;                                                             \
        pulls[np++].q = q_;                                                                \
    } while (0)
    static uint64_t o_start1[3] = {1, 2, 3}, o_dec[3] = {0, 3, 2}, o_short[3] = {0, 1, 2},
                    o_big[3] = {0, 2, 4};
    static float w_nan[3] = {1, NAN, 1}, w_inf[3] = {1, 1, INFINITY};
    static uint64_t o_many[5001];
    PULL_CASE("offsets not starting at 0", EMBER_INVALID_ARGUMENT, q_.offsets = B(o_start1, 24));
    PULL_CASE("decreasing offsets", EMBER_INVALID_ARGUMENT, q_.offsets = B(o_dec, 24));
    PULL_CASE("last offset below n", EMBER_INVALID_ARGUMENT, q_.offsets = B(o_short, 24));
    PULL_CASE("last offset past n", EMBER_INVALID_ARGUMENT, q_.offsets = B(o_big, 24));
    PULL_CASE("no offsets", EMBER_INVALID_ARGUMENT, q_.offsets = B(NULL, 0));
    PULL_CASE("weights too few", EMBER_INVALID_ARGUMENT, q_.weights = B(y.w, 8));
    PULL_CASE("NaN weight", EMBER_INVALID_ARGUMENT, q_.weights = B(w_nan, 12));
    PULL_CASE("Inf weight", EMBER_INVALID_ARGUMENT, q_.weights = B(w_inf, 12));
    PULL_CASE("unknown combiner", EMBER_INVALID_ARGUMENT, q_.combiner = 9);
    PULL_CASE("negative combiner", EMBER_INVALID_ARGUMENT, q_.combiner = -1);
    PULL_CASE("offsets without a combiner", EMBER_INVALID_ARGUMENT,
              q_.combiner = EMBER_WIRE_COMBINER_NONE);
    PULL_CASE("weights without a combiner", EMBER_INVALID_ARGUMENT,
              (q_.combiner = EMBER_WIRE_COMBINER_NONE, q_.offsets = B(NULL, 0)));
    PULL_CASE("wrong dim", EMBER_INVALID_ARGUMENT, q_.dim = DIM + 1);
    /* bags over --max-keys-per-request (4096): 5000 empty bags, no keys */
    PULL_CASE("bags over the limit", EMBER_RESOURCE_EXHAUSTED,
              (q_.keys = B(NULL, 0), q_.weights = B(NULL, 0), q_.offsets = B(o_many, 8 * 5001)));
    for (int i = 0; i < np; i++) {
        int code = send_pull(h, &pulls[i].q, msg);
        ck_assert_msg(code == pulls[i].code, "%s: got %d (%s), want %d", pulls[i].what, code, msg,
                      pulls[i].code);
        ck_assert_msg(strlen(msg) > 0, "%s: no message", pulls[i].what);
    }
    snapshot(c, after, &size1);
    ck_assert_uint_eq(size1, size0);
    ck_assert(memcmp(before, after, sizeof before) == 0);

    struct {
        const char *what;
        ember_wire_push_request q;
    } pushes[16];
    int nu = 0;
#define PUSH_CASE(desc, edit)                                                              \
    do {                                                                                   \
        ember_wire_push_request q_ = good_push(&x);                                        \
        edit;                                                                              \
        pushes[nu].what = desc;                                                            \
        pushes[nu++].q = q_;                                                               \
    } while (0)
    static float n_nan[2] = {1, NAN}, g_nan[2 * DIM];
    for (int i = 0; i < 2 * DIM; i++)
        g_nan[i] = i == 5 ? NAN : 0.5f;
    PUSH_CASE("offsets not starting at 0", q_.offsets = B(o_start1, 24));
    PUSH_CASE("decreasing offsets", q_.offsets = B(o_dec, 24));
    PUSH_CASE("last offset below n", q_.offsets = B(o_short, 24));
    PUSH_CASE("weights too many", q_.weights = B(x.w, 16));
    PUSH_CASE("Inf weight", q_.weights = B(w_inf, 12));
    PUSH_CASE("unknown combiner", q_.combiner = 4);
    PUSH_CASE("combiner with assign", q_.mode = EMBER_WIRE_PUSH_ASSIGN);
    PUSH_CASE("combiner with accum", q_.mode = EMBER_WIRE_PUSH_ACCUM);
    PUSH_CASE("combiner with insert_or_assign", q_.mode = EMBER_WIRE_PUSH_INSERT_OR_ASSIGN);
    PUSH_CASE("values per key, not per bag", q_.values = B(x.g, 3 * DIM * 4));
    PUSH_CASE("norms with sum", q_.combiner = EMBER_WIRE_COMBINER_SUM);
    PUSH_CASE("norms too few", q_.norms = B(x.norms, 4));
    PUSH_CASE("NaN norm", q_.norms = B(n_nan, 8));
    PUSH_CASE("norms without a combiner",
              (q_.combiner = 0, q_.offsets = B(NULL, 0), q_.weights = B(NULL, 0),
               q_.values = B(x.g, 3 * DIM * 4)));
    PUSH_CASE("NaN gradient", q_.values = B(g_nan, 2 * DIM * 4));
    for (int i = 0; i < nu; i++) {
        int code = send_push(h, &pushes[i].q, msg);
        ck_assert_msg(code == EMBER_INVALID_ARGUMENT, "%s: got %d (%s)", pushes[i].what, code,
                      msg);
        ck_assert_msg(strlen(msg) > 0, "%s: no message", pushes[i].what);
    }
    snapshot(c, after, &size1);
    ck_assert_uint_eq(size1, size0);
    ck_assert(memcmp(before, after, sizeof before) == 0);

    /* libember checks the same before sending */
    ember_error e;
    static float out[2 * DIM];
    ck_assert_int_eq(ember_pull_pooled(c, "bad", x.keys, 3, o_dec, 2, NULL, EMBER_COMBINER_SUM,
                                       out, DIM, 0, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull_pooled(c, "bad", x.keys, 3, x.offs, 2, w_nan, EMBER_COMBINER_SUM,
                                       out, DIM, 0, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull_pooled(c, "bad", x.keys, 3, x.offs, 2, NULL, (ember_combiner)0,
                                       out, DIM, 0, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_push_pooled(c, "bad", x.keys, 3, o_short, 2, NULL, EMBER_COMBINER_SUM,
                                       x.g, DIM, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull_pooled(c, "bad", x.keys, 3, x.offs, 2, NULL, EMBER_COMBINER_SUM,
                                       out, DIM + 1, 0, &e),
                     EMBER_INVALID_ARGUMENT);
    snapshot(c, after, &size1);
    ck_assert_uint_eq(size1, size0);
    ck_assert(memcmp(before, after, sizeof before) == 0);

    /* and the valid push applies: SGD lr 0.05, MEAN with the given norms */
    ember_wire_push_request u = good_push(&x);
    ck_assert_msg(send_push(h, &u, msg) == 0, "%s", msg);
    snapshot(c, after, &size1);
    float c0 = 1.0f / 1.5f; /* key 1: w 1, norm 1.5 */
    ck_assert_msg(fabsf(after[0] - (before[0] - 0.05f * (0.25f * c0))) < 1e-6f, "%.9g %.9g",
                  after[0], before[0]);
    eh_client_close(h);
    ember_client_close(c);
}
END_TEST

/* A PushPull whose push and pull are both pooled: the push is applied first,
 * and the pull's reply is one vector per bag, equal to a pooled pull after. */
START_TEST(pushpull_with_pooled_parts)
{
    ember_client *c = open_client(one.addr);
    eh_client *h = eh_client_open(one.addr);
    create(c, "pp", EMBER_OPTIM_SGD, EMBER_INIT_UNIFORM);
    raw x = {.keys = {1, 2, 3}, .offs = {0, 2, 3}, .w = {1, 0.5f, 2}, .norms = {1.5f, 2}};
    for (int i = 0; i < 2 * DIM; i++)
        x.g[i] = (float)(i % 5) / 8.0f;
    ember_wire_pushpull_request q = {.has_push = 1, .has_pull = 1};
    q.push = good_push(&x);
    q.push.table = B("pp", 2);
    q.pull = good_pull(&x);
    q.pull.table = B("pp", 2);
    q.pull.combiner = EMBER_WIRE_COMBINER_SQRTN;
    /* the keys must exist for the push to change them: create them first */
    static float rows[3 * DIM], got[2 * DIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "pp", x.keys, 3, rows, DIM, EMBER_PULL_INSERT, &e), 0);
    size_t len = ember_wire_pushpull_request_size(&q, NULL, NULL);
    uint8_t *buf = malloc(len);
    ember_wire_pushpull_request_encode(&q, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(h, SHARD "PushPull", buf, len, 0, &r), 0);
    free(buf);
    ck_assert_msg(r.code == 0, "%s", r.message);
    ember_wire_pushpull_response m;
    char msg[200];
    ck_assert_int_eq(ember_wire_pushpull_response_decode(r.data, r.len, &m, msg, sizeof msg), 0);
    ck_assert(m.has_push && m.has_pull);
    ck_assert_uint_eq(m.push.applied, 3);
    ck_assert_uint_eq(m.pull.values.len, 2 * DIM * 4);
    ck_assert_int_eq(ember_pull_pooled(c, "pp", x.keys, 3, x.offs, 2, x.w, EMBER_COMBINER_SQRTN,
                                       got, DIM, EMBER_PULL_SERVE, &e),
                     0);
    ck_assert(memcmp(m.pull.values.data, got, sizeof got) == 0);
    /* and the push had landed before the pull: the rows moved */
    static float after[3 * DIM];
    ck_assert_int_eq(ember_pull(c, "pp", x.keys, 3, after, DIM, EMBER_PULL_SERVE, &e), 0);
    ck_assert(after[1] != rows[1]); /* key 1, d 1: gradient 1/8 · (1 / 1.5) */
    eh_result_free(&r);
    eh_client_close(h);
    ember_client_close(c);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_pooled"))
        return EH_EXIT_SKIP;
    const char *f1[] = {"--threads=2", "--max-keys-per-request=4096", NULL};
    if (eh_server_start(&one, f1)) {
        fprintf(stderr, "cannot start the single shard\n");
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        char idx[32];
        snprintf(idx, sizeof idx, "--shard-index=%d", i);
        const char *f[] = {"--threads=2", "--max-keys-per-request=4096", idx, "--shard-count=2",
                           NULL};
        if (eh_server_start(&two[i], f)) {
            fprintf(stderr, "cannot start shard %d\n", i);
            return 1;
        }
        if (i)
            strcat(two_list, ",");
        strcat(two_list, two[i].addr);
    }
    Suite *s = suite_create("pooled");
    TCase *tc = tcase_create("pooled");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pull_one_shard_equals_worker_pooling);
    tcase_add_test(tc, pull_two_shards_equals_worker_pooling);
    tcase_add_test(tc, pull_empty_bags_zero_and_serving);
    tcase_add_test(tc, push_one_shard_equals_expanded_push);
    tcase_add_test(tc, push_two_shards_equals_expanded_push);
    tcase_add_test(tc, bad_input_refused_and_changes_nothing);
    tcase_add_test(tc, pushpull_with_pooled_parts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    eh_server_cleanup(&one);
    eh_server_cleanup(&two[0]);
    eh_server_cleanup(&two[1]);
    return failed ? 1 : 0;
}

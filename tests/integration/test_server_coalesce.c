/*
 * test_server_coalesce.c — request coalescing (--coalesce, server/coalesce.h) end
 * to end: real ember-server processes on loopback, many client threads (each its
 * own channel) calling one table at once, so that calls queue and run as
 * batches. On the cpu backend here; the logic is not GPU-specific.
 *
 *   - concurrent SGD pushes to the same keys sum exactly (lr 1, integer gradients);
 *   - concurrent Adagrad pushes to the same keys take one optimizer step per call
 *     (not one step of their sum), as if run one after another;
 *   - every pull's reply holds exactly its own rows (distinct keys per client,
 *     known values, random subsets and order, float32/16/bfloat16, found flags);
 *   - a client that pushes and then pulls always sees its push (push, accum,
 *     assign, PushPull), while other clients keep the queues busy;
 *   - bad input from one client (NaN, Inf, reserved keys) fails that client only
 *     and changes nothing, while good clients' calls are coalesced beside it;
 *   - a push and its retry sent at once (same client id and sequence), while
 *     the queues are busy: applied once, and whichever reply says "duplicate"
 *     comes only after the push is in the table (a pull right after sees it);
 *   - --coalesce off, a small --coalesce-max-keys and the obsolete
 *     --coalesce-wait-us all serve the same results; GetStats shows batches when
 *     calls were coalesced;
 *   - a full queue (--coalesce-queue-keys) refuses at once, RESOURCE_EXHAUSTED
 *     naming the flag, and what it refused changed nothing;
 *   - SIGTERM while calls are queued: the server drains and exits 0, and every
 *     push it acknowledged is in its exit checkpoint, none twice or in part;
 *   - pulls cut by their deadline mid-reply (their reply slices outliving the
 *     call) leave every later reply right;
 *   - the flags and EMBER_* variables are checked.
 *
 * Assertions are about behaviour, never exact batch counts: how calls meet in
 * time is up to the scheduler, so where a test needs batches it runs its load
 * again until GetStats shows some (a bounded number of times). Client threads
 * record failures; the test thread asserts (Check's assertions are not for other
 * threads). EMBER_TEST_VERBOSE=1 prints each table's coalescing counters.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"

#define SHARD "/ember.v1.Shard/"
#define ADMIN "/ember.v1.Admin/"
#define RESERVED UINT64_C(0xFFFFFFFFFFFFFFFE)

static eh_server S; /* --coalesce on, 8 worker threads */

/* ---- failures recorded by client threads --------------------------------- */

typedef struct fails {
    atomic_int n;
    char first[512];
} fails;

static void failf(fails *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(fails *f, const char *fmt, ...)
{
    if (atomic_fetch_add(&f->n, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->first, sizeof f->first, fmt, ap);
        va_end(ap);
    }
}

#define CK_FAILS(f) ck_assert_msg(atomic_load(&(f)->n) == 0, "%d failures, first: %s", \
                                  atomic_load(&(f)->n), (f)->first)

/* ---- raw calls (safe on any thread: no Check assertions) ------------------ */

/* Pull; on OK fills out[n*dim] (float32, from the reply's dtype) and found[n].
 * Returns the gRPC code, or -1 when the call or the reply's shape is broken. */
static int pull_c(eh_client *c, const char *table, const uint64_t *keys, size_t n, int dtype,
                  int insert, uint32_t dim, float *out, uint8_t *found, char *msg, size_t cap)
{
    ember_wire_pull_request q = {0};
    eh_result r;
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.insert_missing = insert;
    q.dtype = dtype;
    q.want_found = found != NULL;
    size_t len = ember_wire_pull_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pull_request_encode(&q, b);
    int rc = eh_unary(c, SHARD "Pull", b, len, 0, &r);
    free(b);
    if (rc)
        return -1;
    rc = r.code;
    if (msg)
        snprintf(msg, cap, "%.250s", r.message);
    if (!rc) {
        ember_wire_pull_response m;
        if (ember_wire_pull_response_decode(r.data, r.len, &m, msg, cap) || m.dim != dim ||
            m.dtype != dtype || m.values.len != n * dim * ember_wire_dtype_size(dtype) ||
            m.found.len != (found ? n : 0)) {
            rc = -1;
        } else {
            ember_wire_from_wire(dtype, m.values.data, n * dim, out);
            if (found)
                memcpy(found, m.found.data, n);
        }
    }
    eh_result_free(&r);
    return rc;
}

/* Push of float32 values sent as `dtype`. Returns the gRPC code, or -1. */
static int push_c(eh_client *c, const char *table, const uint64_t *keys, size_t n,
                  const float *vals, size_t nv, int dtype, int mode, char *msg, size_t cap)
{
    ember_wire_push_request q = {0};
    eh_result r;
    uint8_t *vb = malloc(nv * 4 + 1);
    ember_wire_to_wire(dtype, vals, nv, vb);
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.values.data = vb;
    q.values.len = nv * ember_wire_dtype_size(dtype);
    q.dtype = dtype;
    q.mode = mode;
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_push_request_encode(&q, b);
    int rc = eh_unary(c, SHARD "Push", b, len, 0, &r);
    free(b);
    free(vb);
    if (rc)
        return -1;
    rc = r.code;
    if (msg)
        snprintf(msg, cap, "%.250s", r.message);
    if (!rc) {
        ember_wire_push_response m;
        if (ember_wire_push_response_decode(r.data, r.len, &m, NULL, 0) || m.applied != n ||
            m.duplicate)
            rc = -1;
    }
    eh_result_free(&r);
    return rc;
}

/* PushPull: gradients for pkeys, then a pull (float32) of lkeys into out. */
static int pushpull_c(eh_client *c, const char *table, const uint64_t *pkeys, size_t pn,
                      const float *grads, const uint64_t *lkeys, size_t ln, uint32_t dim,
                      float *out, char *msg, size_t cap)
{
    ember_wire_pushpull_request q = {0};
    eh_result r;
    q.has_push = q.has_pull = 1;
    q.push.table.data = q.pull.table.data = (const uint8_t *)table;
    q.push.table.len = q.pull.table.len = strlen(table);
    q.push.keys.data = (const uint8_t *)pkeys;
    q.push.keys.len = pn * 8;
    q.push.values.data = (const uint8_t *)grads;
    q.push.values.len = pn * dim * 4;
    q.pull.keys.data = (const uint8_t *)lkeys;
    q.pull.keys.len = ln * 8;
    size_t len = ember_wire_pushpull_request_size(&q, NULL, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pushpull_request_encode(&q, b);
    int rc = eh_unary(c, SHARD "PushPull", b, len, 0, &r);
    free(b);
    if (rc)
        return -1;
    rc = r.code;
    if (msg)
        snprintf(msg, cap, "%.250s", r.message);
    if (!rc) {
        ember_wire_pushpull_response m;
        if (ember_wire_pushpull_response_decode(r.data, r.len, &m, msg, cap) || !m.has_pull ||
            m.push.applied != pn || m.pull.values.len != ln * dim * 4)
            rc = -1;
        else
            memcpy(out, m.pull.values.data, ln * dim * 4);
    }
    eh_result_free(&r);
    return rc;
}

/* ---- admin (test thread only) --------------------------------------------- */

static uint8_t *pk(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static int admin(eh_client *c, const char *method, const ProtobufCMessage *req, eh_result *r)
{
    size_t len;
    uint8_t *b = pk(req, &len);
    char path[128];
    snprintf(path, sizeof path, ADMIN "%s", method);
    ck_assert_int_eq(eh_unary(c, path, b, len, 0, r), 0);
    free(b);
    return r->code;
}

/* A table with optimizer `optim` (lr, eps, initial accumulator) and zeros init. */
static void create(eh_client *c, const char *name, uint32_t dim, int optim, float lr, float eps,
                   float acc)
{
    Ember__V1__CreateTableRequest q = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    Ember__V1__OptimizerConfig o = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    Ember__V1__InitializerConfig in = EMBER__V1__INITIALIZER_CONFIG__INIT;
    eh_result r;
    q.name = (char *)name;
    q.config = &cfg;
    cfg.dim = dim;
    cfg.capacity = 1 << 18; /* far from full: no eviction may disturb exact checks */
    cfg.optimizer = &o;
    cfg.initializer = &in;
    o.kind = (Ember__V1__Optimizer)optim;
    o.lr = lr;
    o.eps = eps;
    o.initial_accumulator = acc;
    in.kind = EMBER__V1__INITIALIZER__INIT_ZEROS;
    ck_assert_msg(admin(c, "CreateTable", &q.base, &r) == 0, "create %s: %s", name, r.message);
    eh_result_free(&r);
}

typedef struct co_stats {
    uint64_t batches, calls, keys, max_keys, max_calls, split, pulls, pushes;
} co_stats;

static co_stats stats(eh_client *c, const char *table)
{
    Ember__V1__GetStatsRequest q = EMBER__V1__GET_STATS_REQUEST__INIT;
    eh_result r;
    q.table = (char *)table;
    ck_assert_int_eq(admin(c, "GetStats", &q.base, &r), 0);
    Ember__V1__GetStatsResponse *g = ember__v1__get_stats_response__unpack(NULL, r.len, r.data);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(g->n_tables, 1);
    Ember__V1__TableStats *s = g->tables[0]->stats;
    co_stats o = {s->coalesced_batches, s->coalesced_calls,     s->coalesced_keys,
                  s->coalesced_max_keys, s->coalesced_max_calls, s->coalesced_split_calls,
                  s->pulls,              s->pushes};
    if (getenv("EMBER_TEST_VERBOSE")) /* how much was coalesced, for a person reading */
        fprintf(stderr,
                "%s: batches %llu calls %llu keys %llu max_keys %llu max_calls %llu split %llu "
                "pulls %llu pushes %llu\n",
                table, (unsigned long long)o.batches, (unsigned long long)o.calls,
                (unsigned long long)o.keys, (unsigned long long)o.max_keys,
                (unsigned long long)o.max_calls, (unsigned long long)o.split,
                (unsigned long long)o.pulls, (unsigned long long)o.pushes);
    ember__v1__get_stats_response__free_unpacked(g, NULL);
    eh_result_free(&r);
    return o;
}

/* Coalescing counters that hang together: batches of ≥ 2 calls. */
static void stats_consistent(co_stats s)
{
    ck_assert_uint_ge(s.calls, 2 * s.batches);
    ck_assert_uint_le(s.max_keys, s.keys);
    ck_assert_uint_le(s.max_calls, s.calls);
    if (s.batches) {
        ck_assert_uint_ge(s.max_calls, 2);
        ck_assert_uint_ge(s.keys, s.calls);
    }
}

/* Servers a test started: main() kills any that a failed test left running. */
static eh_server *started[8];

static void start_server(eh_server *s, const char *const *flags)
{
    ck_assert_msg(eh_server_start(s, flags) == 0, "cannot start a server");
    for (size_t i = 0; i < sizeof started / sizeof *started; i++)
        if (!started[i]) {
            started[i] = s;
            break;
        }
}

static void stop_server(eh_server *s)
{
    int st = 0;
    ck_assert_int_eq(eh_server_stop(s, SIGTERM, &st), 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = eh_server_log(s);
        fprintf(stderr, "---- server log ----\n%s\n", log);
        free(log);
    }
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(s);
    for (size_t i = 0; i < sizeof started / sizeof *started; i++)
        if (started[i] == s)
            started[i] = NULL;
}

/* ---- blockers: keep a queue busy ----------------------------------------- */

/* A client that keeps one kind of call busy on a table with large calls that
 * change nothing a test checks: zero gradients (SGD, Adagrad: no change) to keys
 * of its own range, or plain pulls of keys nobody writes. While one of its calls
 * runs, other clients' calls of that kind queue and then run as a batch — on a
 * CPU table small calls are over too fast to meet otherwise. */
enum { BLOCK_KEYS = 32768 };
#define BLOCK_BASE UINT64_C(1000000000)

typedef struct blocker {
    const char *addr, *table;
    uint32_t dim;
    int pull;
    atomic_int *stop;
    fails *f;
    pthread_t th;
} blocker;

static void *blocker_main(void *p)
{
    blocker *b = p;
    eh_client *c = eh_client_open(b->addr);
    uint64_t *keys = malloc(BLOCK_KEYS * 8);
    float *v = calloc((size_t)BLOCK_KEYS * b->dim, 4);
    char msg[300];
    for (size_t i = 0; i < BLOCK_KEYS; i++)
        keys[i] = BLOCK_BASE + i;
    while (!atomic_load(b->stop)) {
        int rc = b->pull ? pull_c(c, b->table, keys, BLOCK_KEYS, 0, 0, b->dim, v, NULL, msg,
                                  sizeof msg)
                         : push_c(c, b->table, keys, BLOCK_KEYS, v, (size_t)BLOCK_KEYS * b->dim,
                                  0, EMBER_WIRE_PUSH_GRADIENTS, msg, sizeof msg);
        if (rc)
            failf(b->f, "blocker (%s): code %d %s", b->pull ? "pull" : "push", rc, msg);
        if (b->pull) /* a plain pull of keys never written: zeros */
            for (size_t i = 0; !rc && i < (size_t)BLOCK_KEYS * b->dim; i++)
                if (v[i] != 0.0f) {
                    failf(b->f, "blocker pull: %g at %zu", v[i], i);
                    break;
                }
    }
    free(keys);
    free(v);
    eh_client_close(c);
    return NULL;
}

/* Starts a push blocker and, with `pulls`, a pull blocker on table. */
static void blockers_start(blocker b[2], const char *addr, const char *table, uint32_t dim,
                           int pulls, atomic_int *stop, fails *f)
{
    atomic_store(stop, 0);
    for (int i = 0; i < 1 + pulls; i++) {
        b[i] = (blocker){addr, table, dim, i, stop, f, 0};
        pthread_create(&b[i].th, NULL, blocker_main, &b[i]);
    }
}

static void blockers_stop(blocker b[2], int pulls, atomic_int *stop)
{
    atomic_store(stop, 1);
    for (int i = 0; i < 1 + pulls; i++)
        pthread_join(b[i].th, NULL);
}

/* ---- SGD: concurrent pushes to the same keys sum exactly ------------------ */

/* each push: 32 keys every client pushes, and 1,024 of its own (enough work per
 * call that calls meet in the table) */
enum { SGD_DIM = 8, SGD_HOT = 32, SGD_OWN = 1024, SGD_KEYS = SGD_HOT + SGD_OWN };

typedef struct sgd_arg {
    const char *addr, *table;
    int t, rounds, threads;
    size_t big;          /* every 10th push carries this many extra own keys (0: none) */
    double want_hot[SGD_HOT * SGD_DIM]; /* this thread's sum of gradients per hot key */
    float *own;          /* its own keys' expected rows, kept across runs */
    fails *f;
} sgd_arg;

static uint64_t sgd_own_key(int t, size_t i) { return 100000u * (uint64_t)(t + 1) + i; }

/* Pushes integer gradients (-2..2) to the hot keys and its own keys, alternating
 * dtypes, and pulls the hot keys now and then; its own keys' final rows are
 * checked at the end, and its contribution to the hot keys is returned. */
static void *sgd_main(void *p)
{
    sgd_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    size_t cap = SGD_KEYS + a->big;
    uint64_t *keys = malloc(cap * 8);
    float *g = malloc(cap * SGD_DIM * 4), *own = a->own;
    float *v = malloc(cap * SGD_DIM * 4);
    char msg[300];
    for (int r = 0; r < a->rounds; r++) {
        size_t n = SGD_KEYS + (a->big && r % 10 == 9 ? a->big : 0);
        for (size_t i = 0; i < n; i++)
            keys[i] = i < SGD_HOT ? i : sgd_own_key(a->t, i - SGD_HOT);
        for (size_t i = 0; i < n * SGD_DIM; i++) {
            int gi = (int)((a->t + r + i / SGD_DIM + i % SGD_DIM) % 5) - 2;
            g[i] = (float)gi;
            if (i / SGD_DIM < SGD_HOT)
                a->want_hot[i] += gi;
            else
                own[i - SGD_HOT * SGD_DIM] -= (float)gi;
        }
        int dtype = r % 3; /* small integers are exact in every dtype */
        int rc = push_c(c, a->table, keys, n, g, n * SGD_DIM, dtype, EMBER_WIRE_PUSH_GRADIENTS,
                        msg, sizeof msg);
        if (rc)
            failf(a->f, "thread %d push %d: code %d %s", a->t, r, rc, msg);
        if (r % 4 == 1 && (rc = pull_c(c, a->table, keys, SGD_HOT, 0, 0, SGD_DIM, v, NULL, msg,
                                       sizeof msg)))
            failf(a->f, "thread %d pull %d: code %d %s", a->t, r, rc, msg);
    }
    /* own keys: nobody else touches them */
    size_t n = SGD_OWN + a->big;
    for (size_t i = 0; i < n; i++)
        keys[i] = sgd_own_key(a->t, i);
    int rc = pull_c(c, a->table, keys, n, 0, 0, SGD_DIM, v, NULL, msg, sizeof msg);
    if (rc)
        failf(a->f, "thread %d final pull: code %d %s", a->t, rc, msg);
    for (size_t i = 0; !rc && i < n * SGD_DIM; i++)
        if (v[i] != own[i]) {
            failf(a->f, "thread %d own key %zu [%zu]: %g, want %g", a->t, i / SGD_DIM,
                  i % SGD_DIM, v[i], own[i]);
            break;
        }
    free(keys);
    free(g);
    free(v);
    eh_client_close(c);
    return NULL;
}

/* Runs `threads` SGD pushers against table (lr 1) on addr and checks the hot
 * keys hold minus the exact sum of every gradient pushed. With `want_batches`,
 * runs again (up to 20 runs) until some calls were coalesced: how often calls
 * meet is the scheduler's business, so the test asks for it, not for a count. */
static void sgd_hammer(const char *addr, const char *table, int threads, int rounds, size_t big,
                       int want_batches)
{
    eh_client *c = eh_client_open(addr);
    fails f = {0};
    create(c, table, SGD_DIM, 0, 1.0f, 0, 0);
    pthread_t th[16];
    sgd_arg *a = calloc((size_t)threads, sizeof *a);
    for (int t = 0; t < threads; t++) {
        a[t] = (sgd_arg){.addr = addr, .table = table, .t = t, .rounds = rounds,
                         .threads = threads, .big = big, .f = &f};
        a[t].own = calloc((SGD_KEYS + big) * SGD_DIM, 4);
    }
    blocker b[2];
    atomic_int stop;
    for (int run = 0; run < 20; run++) {
        blockers_start(b, addr, table, SGD_DIM, 1, &stop, &f);
        for (int t = 0; t < threads; t++)
            pthread_create(&th[t], NULL, sgd_main, &a[t]);
        for (int t = 0; t < threads; t++)
            pthread_join(th[t], NULL);
        blockers_stop(b, 1, &stop);
        CK_FAILS(&f);
        if (!want_batches || stats(c, table).batches >= 3)
            break;
    }
    uint64_t keys[SGD_HOT];
    float v[SGD_HOT * SGD_DIM];
    for (int i = 0; i < SGD_HOT; i++)
        keys[i] = (uint64_t)i;
    char msg[300];
    ck_assert_int_eq(pull_c(c, table, keys, SGD_HOT, 0, 0, SGD_DIM, v, NULL, msg, sizeof msg), 0);
    for (int i = 0; i < SGD_HOT * SGD_DIM; i++) {
        double want = 0;
        for (int t = 0; t < threads; t++)
            want -= a[t].want_hot[i];
        ck_assert_msg(v[i] == (float)want, "hot key %d [%d]: %g, want %g", i / SGD_DIM,
                      i % SGD_DIM, v[i], want);
    }
    for (int t = 0; t < threads; t++)
        free(a[t].own);
    free(a);
    eh_client_close(c);
}

START_TEST(sgd_pushes_sum_exactly)
{
    sgd_hammer(S.addr, "sgd", 8, 40, 0, 1);
    eh_client *c = eh_client_open(S.addr);
    co_stats s = stats(c, "sgd");
    stats_consistent(s);
    ck_assert_msg(s.batches > 0, "8 clients: nothing coalesced in %llu calls",
                  (unsigned long long)(s.pushes + s.pulls));
    ck_assert_uint_eq(s.split, 0); /* SGD: one call per batch */
    eh_client_close(c);
}
END_TEST

/* ---- Adagrad: one step per call, also when coalesced ----------------------- */

typedef struct ada_arg {
    const char *addr;
    int t, rounds;
    int mine;            /* this client's pushes so far */
    atomic_int *pushes;  /* everyone's */
    fails *f;
} ada_arg;

/* each push: 16 keys every client pushes, then 1,024 of its own */
enum { ADA_DIM = 4, ADA_KEYS = 16, ADA_OWN = 1024 };

static uint64_t ada_key(int t, int i)
{
    return i < ADA_KEYS ? 7000 + (uint64_t)i : 800000u * (uint64_t)(t + 1) + (uint64_t)i;
}

static void *ada_main(void *p)
{
    ada_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    enum { N = ADA_KEYS + ADA_OWN };
    uint64_t *keys = malloc(N * 8);
    float *g = malloc(N * ADA_DIM * 4);
    char msg[300];
    for (int i = 0; i < N; i++)
        keys[i] = ada_key(a->t, i);
    for (int i = 0; i < N * ADA_DIM; i++)
        g[i] = 1.0f;
    for (int r = 0; r < a->rounds; r++) {
        int rc = push_c(c, "ada", keys, N, g, N * ADA_DIM, 0, EMBER_WIRE_PUSH_GRADIENTS, msg,
                        sizeof msg);
        if (rc) {
            failf(a->f, "push: code %d %s", rc, msg);
        } else {
            atomic_fetch_add(a->pushes, 1);
            a->mine++;
        }
    }
    free(keys);
    free(g);
    eh_client_close(c);
    return NULL;
}

/* Adagrad's weight after `steps` steps of gradient 1 from w = 0. */
static float ada_after(int steps, float lr, float eps, float acc0)
{
    float acc = acc0, w = 0.0f;
    for (int i = 0; i < steps; i++) {
        acc = acc + 1.0f;
        w = w - lr * 1.0f / (sqrtf(acc) + eps);
    }
    return w;
}

START_TEST(adagrad_steps_once_per_call)
{
    /* Every push is gradient 1 on the same keys, so any serial order gives the
     * same result: M steps of acc += 1; w -= lr / (√acc + eps). Summing a batch's
     * gradients into one step (acc += k²) would land far from it. */
    const float lr = 0.1f, eps = 0.5f, acc0 = 1.0f;
    eh_client *c = eh_client_open(S.addr);
    create(c, "ada", ADA_DIM, 1, lr, eps, acc0);
    atomic_int pushes = 0;
    fails f = {0};
    co_stats s = {0};
    /* rounds until some batch held repeated keys (at most 20) */
    pthread_t th[8];
    ada_arg a[8];
    for (int t = 0; t < 8; t++)
        a[t] = (ada_arg){.addr = S.addr, .t = t, .rounds = 30, .pushes = &pushes, .f = &f};
    blocker b[2];
    atomic_int stop;
    for (int round = 0; round < 20 && s.split < 3; round++) {
        blockers_start(b, S.addr, "ada", ADA_DIM, 0, &stop, &f);
        for (int t = 0; t < 8; t++)
            pthread_create(&th[t], NULL, ada_main, &a[t]);
        for (int t = 0; t < 8; t++)
            pthread_join(th[t], NULL);
        blockers_stop(b, 0, &stop);
        CK_FAILS(&f);
        s = stats(c, "ada");
    }
    stats_consistent(s);
    ck_assert_msg(s.batches > 0 && s.split > 0,
                  "no coalesced Adagrad batch with repeated keys (batches %llu)",
                  (unsigned long long)s.batches);
    /* shared keys: one step per push of anyone; own keys: per push of its owner */
    enum { N = ADA_KEYS + ADA_OWN };
    uint64_t *keys = malloc(N * 8);
    float *v = malloc(N * ADA_DIM * 4);
    char msg[300];
    for (int t = 0; t < 8; t++) {
        for (int i = 0; i < N; i++)
            keys[i] = ada_key(t, i);
        ck_assert_int_eq(pull_c(c, "ada", keys, N, 0, 0, ADA_DIM, v, NULL, msg, sizeof msg), 0);
        float shared = ada_after(atomic_load(&pushes), lr, eps, acc0);
        float own = ada_after(a[t].mine, lr, eps, acc0);
        for (int i = 0; i < N * ADA_DIM; i++) {
            float w = i / ADA_DIM < ADA_KEYS ? shared : own;
            ck_assert_msg(fabsf(v[i] - w) <= 1e-4f * fabsf(w),
                          "client %d key %d: %.7g, want %.7g (one step per push: %d in all, "
                          "%d of its own)",
                          t, i / ADA_DIM, v[i], w, atomic_load(&pushes), a[t].mine);
        }
    }
    free(keys);
    free(v);
    eh_client_close(c);
}
END_TEST

/* ---- every pull's reply holds its own rows -------------------------------- */

enum { ROW_DIM = 16, ROW_OWN = 2000, ROW_MAX = 3000 };

static float row_val(uint64_t key, int d) { return (float)(key % 200) + (float)d; }

typedef struct rows_arg {
    const char *addr;
    int t, rounds;
    fails *f;
} rows_arg;

static void *rows_main(void *p)
{
    rows_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    unsigned seed = 99u + (unsigned)a->t;
    uint64_t base = 1000000u * (uint64_t)(a->t % 100 + 1), *keys = malloc(ROW_MAX * 8);
    float *v = malloc(ROW_MAX * ROW_DIM * 4);
    uint8_t *found = malloc(ROW_MAX);
    char msg[300];
    for (int r = 0; r < a->rounds; r++) {
        /* own keys in random order, repeats allowed, and some never written */
        size_t n = 1 + (size_t)rand_r(&seed) % ROW_MAX;
        for (size_t i = 0; i < n; i++) {
            uint64_t k = (uint64_t)rand_r(&seed) % (ROW_OWN + 100);
            keys[i] = base + k; /* k ≥ ROW_OWN: missing */
        }
        int dtype = rand_r(&seed) % 3, want_found = rand_r(&seed) % 2;
        int rc = pull_c(c, "rows", keys, n, dtype, 0, ROW_DIM, v, want_found ? found : NULL, msg,
                        sizeof msg);
        if (rc) {
            failf(a->f, "thread %d pull %d: code %d %s", a->t, r, rc, msg);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            int missing = keys[i] - base >= ROW_OWN;
            if (want_found && found[i] != !missing) {
                failf(a->f, "thread %d key %llu: found %d", a->t, (unsigned long long)keys[i],
                      found[i]);
                break;
            }
            for (int d = 0; d < ROW_DIM; d++) {
                float want = missing ? 0.0f : row_val(keys[i], d);
                if (v[i * ROW_DIM + d] != want) {
                    failf(a->f, "thread %d pull %d key %llu [%d]: %g, want %g (dtype %d)", a->t,
                          r, (unsigned long long)keys[i], d, v[i * ROW_DIM + d], want, dtype);
                    i = n;
                    break;
                }
            }
        }
        /* now and then an inserting pull of existing keys: found, same rows */
        if (r % 5 == 0) {
            for (size_t i = 0; i < 50; i++)
                keys[i] = base + (uint64_t)rand_r(&seed) % ROW_OWN;
            rc = pull_c(c, "rows", keys, 50, 0, 1, ROW_DIM, v, found, msg, sizeof msg);
            for (size_t i = 0; !rc && i < 50; i++)
                if (!found[i] || v[i * ROW_DIM + 3] != row_val(keys[i], 3)) {
                    rc = -2;
                    break;
                }
            if (rc)
                failf(a->f, "thread %d inserting pull %d: code %d %s", a->t, r, rc, msg);
        }
    }
    free(keys);
    free(v);
    free(found);
    eh_client_close(c);
    return NULL;
}

START_TEST(pulls_get_their_own_rows)
{
    eh_client *c = eh_client_open(S.addr);
    create(c, "rows", ROW_DIM, 0, 1.0f, 0, 0);
    enum { T = 8 };
    uint64_t *keys = malloc(ROW_OWN * 8);
    float *vals = malloc(ROW_OWN * ROW_DIM * 4);
    char msg[300];
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < ROW_OWN; i++) {
            keys[i] = 1000000u * (uint64_t)(t + 1) + (uint64_t)i;
            for (int d = 0; d < ROW_DIM; d++)
                vals[i * ROW_DIM + d] = row_val(keys[i], d);
        }
        ck_assert_int_eq(push_c(c, "rows", keys, ROW_OWN, vals, ROW_OWN * ROW_DIM, 0,
                                EMBER_WIRE_PUSH_INSERT_OR_ASSIGN, msg, sizeof msg),
                         0);
    }
    free(vals);
    free(keys);
    fails f = {0};
    pthread_t th[T];
    rows_arg a[T];
    co_stats s = {0};
    blocker b[2];
    atomic_int stop;
    for (int run = 0; run < 20 && s.batches < 3; run++) {
        blockers_start(b, S.addr, "rows", ROW_DIM, 1, &stop, &f);
        for (int t = 0; t < T; t++) {
            a[t] = (rows_arg){S.addr, t + 100 * run, 40, &f};
            pthread_create(&th[t], NULL, rows_main, &a[t]);
        }
        for (int t = 0; t < T; t++)
            pthread_join(th[t], NULL);
        blockers_stop(b, 1, &stop);
        CK_FAILS(&f);
        s = stats(c, "rows");
    }
    stats_consistent(s);
    ck_assert_msg(s.batches > 0, "8 clients: nothing coalesced in %llu pulls",
                  (unsigned long long)s.pulls);
    eh_client_close(c);
}
END_TEST

/* ---- a push is visible to the same client's next pull -------------------- */

enum { ORD_DIM = 4, ORD_HOT = 64 };

typedef struct ord_arg {
    const char *addr;
    int t, first, rounds, noise;
    atomic_int *stop;
    fails *f;
} ord_arg;

/* Ordered clients: each round changes its own key to exactly r (gradient -1 at
 * lr 1, accum +1, or assign r; or a PushPull whose pull must see its push) and
 * then pulls it among the hot keys. Noise clients push zero gradients to the hot
 * keys and pull them, to keep the queues full. */
static void *ord_main(void *p)
{
    ord_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t keys[ORD_HOT + 1];
    float g[(ORD_HOT + 1) * ORD_DIM], v[(ORD_HOT + 1) * ORD_DIM];
    char msg[300];
    uint64_t own = 5000000u + (uint64_t)a->t;
    for (int i = 0; i < ORD_HOT; i++)
        keys[i] = (uint64_t)i;
    keys[ORD_HOT] = own;
    if (a->noise) { /* large calls on the hot keys and beyond: the queues stay busy */
        enum { NN = 4096 };
        uint64_t *nk = malloc(NN * 8);
        float *ng = calloc(NN * ORD_DIM, 4), *nv = malloc(NN * ORD_DIM * 4);
        for (int i = 0; i < NN; i++)
            nk[i] = (uint64_t)i;
        while (!atomic_load(a->stop)) {
            int rc = push_c(c, "ord", nk, NN, ng, NN * ORD_DIM, 0, EMBER_WIRE_PUSH_GRADIENTS,
                            msg, sizeof msg);
            if (!rc)
                rc = pull_c(c, "ord", nk, NN, 0, 0, ORD_DIM, nv, NULL, msg, sizeof msg);
            if (rc)
                failf(a->f, "noise %d: code %d %s", a->t, rc, msg);
        }
        free(nk);
        free(ng);
        free(nv);
        eh_client_close(c);
        return NULL;
    }
    for (int r = a->first; r < a->first + a->rounds; r++) {
        int rc, kind = r == 1 ? 0 : r % 4; /* accum/assign need the key to exist */
        memset(g, 0, sizeof g);
        float *mine = g + ORD_HOT * ORD_DIM;
        for (int d = 0; d < ORD_DIM; d++)
            mine[d] = kind == 0 ? -1.0f : kind == 1 ? 1.0f : (float)r;
        if (kind == 3) { /* PushPull: the pull part must see the push part */
            for (int d = 0; d < ORD_DIM; d++)
                mine[d] = -1.0f;
            rc = pushpull_c(c, "ord", keys, ORD_HOT + 1, g, keys, ORD_HOT + 1, ORD_DIM, v, msg,
                            sizeof msg);
        } else {
            int mode = kind == 0   ? EMBER_WIRE_PUSH_GRADIENTS
                       : kind == 1 ? EMBER_WIRE_PUSH_ACCUM
                                   : EMBER_WIRE_PUSH_ASSIGN;
            /* assign and accum touch only the own key (zeros would overwrite the
             * hot keys' rows for assign; fine, but keep it to one key) */
            size_t n = mode == EMBER_WIRE_PUSH_GRADIENTS ? ORD_HOT + 1 : 1;
            rc = push_c(c, "ord", n == 1 ? &own : keys, n, n == 1 ? mine : g, n * ORD_DIM, 0,
                        mode, msg, sizeof msg);
            if (!rc)
                rc = pull_c(c, "ord", keys, ORD_HOT + 1, 0, 0, ORD_DIM, v, NULL, msg,
                            sizeof msg);
        }
        if (rc) {
            failf(a->f, "client %d round %d: code %d %s", a->t, r, rc, msg);
            continue;
        }
        for (int d = 0; d < ORD_DIM; d++)
            if (v[ORD_HOT * ORD_DIM + d] != (float)r) {
                failf(a->f, "client %d round %d (kind %d): its key reads %g, want %d", a->t, r,
                      kind, v[ORD_HOT * ORD_DIM + d], r);
                break;
            }
    }
    eh_client_close(c);
    return NULL;
}

START_TEST(push_then_pull_sees_the_push)
{
    eh_client *c = eh_client_open(S.addr);
    create(c, "ord", ORD_DIM, 0, 1.0f, 0, 0);
    enum { ORDERED = 6, NOISE = 3 };
    atomic_int stop = 0;
    fails f = {0};
    pthread_t th[ORDERED + NOISE];
    ord_arg a[ORDERED + NOISE];
    co_stats s = {0};
    for (int run = 0; run < 10 && s.batches < 3; run++) {
        atomic_store(&stop, 0);
        for (int t = 0; t < ORDERED + NOISE; t++) {
            a[t] = (ord_arg){S.addr, t, 1 + 100 * run, 100, t >= ORDERED, &stop, &f};
            pthread_create(&th[t], NULL, ord_main, &a[t]);
        }
        for (int t = 0; t < ORDERED; t++)
            pthread_join(th[t], NULL);
        atomic_store(&stop, 1);
        for (int t = ORDERED; t < ORDERED + NOISE; t++)
            pthread_join(th[t], NULL);
        CK_FAILS(&f);
        s = stats(c, "ord");
    }
    stats_consistent(s);
    ck_assert_msg(s.batches > 0, "nothing coalesced");
    eh_client_close(c);
}
END_TEST

/* ---- a retry racing its original ------------------------------------------ */

enum { RTY_DIM = 4, RTY_ROUNDS = 150 };
#define RTY_KEY UINT64_C(7777)
#define RTY_CLIENT UINT64_C(0x5eed)

typedef struct rty_arg {
    const char *addr;
    pthread_barrier_t *go;
    int applied;   /* replies that said applied */
    fails *f;
} rty_arg;

/* Each round: the same push (gradient -1 at lr 1, so the key reads r after round
 * r), with the same (client id, sequence) as the other thread's, sent at the same
 * moment; then a pull, which must read r whichever reply this thread got. */
static void *rty_main(void *p)
{
    rty_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t key = RTY_KEY;
    float g[RTY_DIM], v[RTY_DIM];
    char msg[300];
    for (int d = 0; d < RTY_DIM; d++)
        g[d] = -1.0f;
    for (int r = 1; r <= RTY_ROUNDS; r++) {
        ember_wire_push_request q = {0};
        q.table.data = (const uint8_t *)"rty";
        q.table.len = 3;
        q.keys.data = (const uint8_t *)&key;
        q.keys.len = 8;
        q.values.data = (const uint8_t *)g;
        q.values.len = sizeof g;
        q.mode = EMBER_WIRE_PUSH_GRADIENTS;
        q.client_id = RTY_CLIENT;
        q.sequence = (uint64_t)r;
        size_t len = ember_wire_push_request_size(&q, NULL);
        uint8_t b[256];
        ember_wire_push_request_encode(&q, b);
        pthread_barrier_wait(a->go);
        eh_result res;
        ember_wire_push_response m;
        if (eh_unary(c, SHARD "Push", b, len, 0, &res) || res.code ||
            ember_wire_push_response_decode(res.data, res.len, &m, NULL, 0)) {
            failf(a->f, "round %d: push code %d %s", r, res.code, res.message);
            eh_result_free(&res);
            break;
        }
        eh_result_free(&res);
        a->applied += !m.duplicate;
        int rc = pull_c(c, "rty", &key, 1, 0, 0, RTY_DIM, v, NULL, msg, sizeof msg);
        if (rc)
            failf(a->f, "round %d: pull code %d %s", r, rc, msg);
        else if (v[0] != (float)r)
            failf(a->f, "round %d: the key reads %g after a %s reply, want %d", r, v[0],
                  m.duplicate ? "duplicate" : "applied", r);
        pthread_barrier_wait(a->go); /* both pulled before the next round's push */
    }
    eh_client_close(c);
    return NULL;
}

START_TEST(retried_push_answered_only_once_applied)
{
    eh_client *c = eh_client_open(S.addr);
    create(c, "rty", RTY_DIM, 0, 1.0f, 0, 0);
    fails f = {0};
    atomic_int stop = 0;
    blocker bl[2];
    blockers_start(bl, S.addr, "rty", RTY_DIM, 1, &stop, &f);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    rty_arg a[2] = {{S.addr, &go, 0, &f}, {S.addr, &go, 0, &f}};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&th[t], NULL, rty_main, &a[t]);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    blockers_stop(bl, 1, &stop);
    pthread_barrier_destroy(&go);
    CK_FAILS(&f);
    /* exactly one of each round's two pushes was applied */
    ck_assert_int_eq(a[0].applied + a[1].applied, RTY_ROUNDS);
    co_stats s = stats(c, "rty");
    stats_consistent(s);
    eh_client_close(c);
}
END_TEST

/* ---- bad input fails its own caller only ---------------------------------- */

typedef struct bad_arg {
    const char *addr;
    int t;
    atomic_int *stop;
    atomic_int *refused;
    fails *f;
} bad_arg;

static void *bad_main(void *p)
{
    bad_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t keys[SGD_KEYS];
    float g[SGD_KEYS * SGD_DIM], v[SGD_KEYS * SGD_DIM];
    char msg[300];
    /* the hot keys the good clients push, and keys only this client names */
    for (int i = 0; i < SGD_KEYS; i++)
        keys[i] = i < SGD_HOT ? (uint64_t)i : 9000000u + (uint64_t)i;
    for (int i = 0; i < SGD_KEYS * SGD_DIM; i++)
        g[i] = 1.0f;
    for (int round = 0; !atomic_load(a->stop); round++) {
        int rc, what = round % 6;
        float saved = g[SGD_HOT * SGD_DIM + 3];
        uint64_t saved_key = keys[SGD_KEYS - 1];
        const char *want = NULL;
        switch (what) {
        case 0: /* a NaN gradient in its own key */
            g[SGD_HOT * SGD_DIM + 3] = NAN;
            rc = push_c(c, "bad", keys, SGD_KEYS, g, SGD_KEYS * SGD_DIM, round % 3,
                        EMBER_WIRE_PUSH_GRADIENTS, msg, sizeof msg);
            want = "non-finite";
            break;
        case 1: /* Inf in an assign */
            g[SGD_HOT * SGD_DIM + 3] = INFINITY;
            rc = push_c(c, "bad", keys, SGD_KEYS, g, SGD_KEYS * SGD_DIM, 0,
                        EMBER_WIRE_PUSH_INSERT_OR_ASSIGN, msg, sizeof msg);
            want = "non-finite";
            break;
        case 2: /* a reserved key last */
            keys[SGD_KEYS - 1] = RESERVED;
            rc = push_c(c, "bad", keys, SGD_KEYS, g, SGD_KEYS * SGD_DIM, 0,
                        EMBER_WIRE_PUSH_GRADIENTS, msg, sizeof msg);
            want = "reserved";
            break;
        case 3: /* a reserved key in an inserting pull */
            keys[SGD_KEYS - 1] = RESERVED;
            rc = pull_c(c, "bad", keys, SGD_KEYS, 0, 1, SGD_DIM, v, NULL, msg, sizeof msg);
            want = "reserved";
            break;
        case 4: /* ... and in a plain pull */
            keys[SGD_KEYS - 1] = RESERVED;
            rc = pull_c(c, "bad", keys, SGD_KEYS, 0, 0, SGD_DIM, v, NULL, msg, sizeof msg);
            want = "reserved";
            break;
        default: /* a NaN delta in an accum, as float16 */
            g[SGD_HOT * SGD_DIM + 3] = NAN;
            rc = push_c(c, "bad", keys, SGD_KEYS, g, SGD_KEYS * SGD_DIM, 1,
                        EMBER_WIRE_PUSH_ACCUM, msg, sizeof msg);
            want = "non-finite";
            break;
        }
        g[SGD_HOT * SGD_DIM + 3] = saved;
        keys[SGD_KEYS - 1] = saved_key;
        if (rc != 3 || !strstr(msg, want))
            failf(a->f, "bad client %d case %d: code %d '%s', want INVALID_ARGUMENT '%s'", a->t,
                  what, rc, msg, want);
        else
            atomic_fetch_add(a->refused, 1);
    }
    eh_client_close(c);
    return NULL;
}

START_TEST(bad_input_fails_only_its_caller)
{
    eh_client *c = eh_client_open(S.addr);
    create(c, "bad", SGD_DIM, 0, 1.0f, 0, 0);
    atomic_int stop = 0, refused = 0;
    fails f = {0}, gf = {0};
    enum { GOOD = 6, BAD = 2 };
    pthread_t th[GOOD + BAD];
    sgd_arg *g = calloc(GOOD, sizeof *g);
    bad_arg b[BAD];
    blocker bl[2];
    atomic_int bstop;
    for (int t = 0; t < GOOD; t++) {
        g[t] = (sgd_arg){.addr = S.addr, .table = "bad", .t = t, .rounds = 40, .threads = GOOD,
                         .f = &gf};
        g[t].own = calloc(SGD_KEYS * SGD_DIM, 4);
    }
    /* runs until good calls were coalesced while bad ones came and went (≤ 10) */
    for (int run = 0; run < 10 && stats(c, "bad").batches < 3; run++) {
        blockers_start(bl, S.addr, "bad", SGD_DIM, 1, &bstop, &gf);
        atomic_store(&stop, 0);
        for (int t = 0; t < BAD; t++) {
            b[t] = (bad_arg){S.addr, t, &stop, &refused, &f};
            pthread_create(&th[GOOD + t], NULL, bad_main, &b[t]);
        }
        for (int t = 0; t < GOOD; t++)
            pthread_create(&th[t], NULL, sgd_main, &g[t]);
        for (int t = 0; t < GOOD; t++)
            pthread_join(th[t], NULL);
        atomic_store(&stop, 1);
        for (int t = 0; t < BAD; t++)
            pthread_join(th[GOOD + t], NULL);
        blockers_stop(bl, 1, &bstop);
    }
    CK_FAILS(&gf); /* every good call went through, and own keys are exact */
    CK_FAILS(&f);  /* every bad call was refused, with its own reason */
    ck_assert_int_gt(atomic_load(&refused), 12);
    /* the hot keys hold exactly the good clients' gradients; the bad client's
     * own keys were never created */
    uint64_t keys[SGD_KEYS];
    float v[SGD_KEYS * SGD_DIM];
    uint8_t found[SGD_KEYS];
    char msg[300];
    for (int i = 0; i < SGD_KEYS; i++)
        keys[i] = i < SGD_HOT ? (uint64_t)i : 9000000u + (uint64_t)i;
    ck_assert_int_eq(pull_c(c, "bad", keys, SGD_KEYS, 0, 0, SGD_DIM, v, found, msg, sizeof msg),
                     0);
    for (int i = 0; i < SGD_KEYS; i++) {
        ck_assert_int_eq(found[i], i < SGD_HOT);
        for (int d = 0; d < SGD_DIM; d++) {
            double want = 0;
            for (int t = 0; i < SGD_HOT && t < GOOD; t++)
                want -= g[t].want_hot[i * SGD_DIM + d];
            ck_assert_msg(v[i * SGD_DIM + d] == (float)want, "key %d [%d]: %g, want %g", i, d,
                          v[i * SGD_DIM + d], want);
        }
    }
    for (int t = 0; t < GOOD; t++)
        free(g[t].own);
    free(g);
    co_stats st = stats(c, "bad");
    stats_consistent(st);
    ck_assert_msg(st.batches > 0, "nothing coalesced beside the bad calls");
    eh_client_close(c);
}
END_TEST

/* ---- other settings ------------------------------------------------------- */

START_TEST(coalesce_off_serves_the_same)
{
    static eh_server s; /* static: main() may still need it if the test fails */
    memset(&s, 0, sizeof s);
    const char *flags[] = {"--threads=4", "--coalesce=off", NULL};
    start_server(&s, flags);
    sgd_hammer(s.addr, "off", 6, 40, 0, 0);
    eh_client *c = eh_client_open(s.addr);
    co_stats st = stats(c, "off");
    ck_assert_uint_eq(st.batches, 0);
    ck_assert_uint_eq(st.calls, 0);
    ck_assert_uint_gt(st.pushes, 6 * 40); /* one run, and the blockers' */
    eh_client_close(c);
    stop_server(&s);
}
END_TEST

START_TEST(small_max_keys_bounds_batches)
{
    /* batches of at most 2,200 keys, no wait: two pushes of 1,056 keys fit, three
     * do not, and every 10th push, of 1,056 + 2,500, and the blockers' calls run
     * as batches of their own; results stay exact */
    static eh_server s; /* static: main() may still need it if the test fails */
    memset(&s, 0, sizeof s);
    const char *flags[] = {"--threads=6", "--coalesce=on", "--coalesce-max-keys=2200", NULL};
    start_server(&s, flags);
    sgd_hammer(s.addr, "small", 6, 30, 2500, 1);
    eh_client *c = eh_client_open(s.addr);
    co_stats st = stats(c, "small");
    stats_consistent(st);
    ck_assert_uint_gt(st.batches, 0);
    ck_assert_uint_le(st.max_keys, 2200);
    eh_client_close(c);
    stop_server(&s);
}
END_TEST

START_TEST(obsolete_wait_us_is_ignored)
{
    /* settings from the environment; --coalesce-wait-us is obsolete (a batch is
     * whatever piled up while the table was busy): accepted, said so, ignored */
    static eh_server s; /* static: main() may still need it if the test fails */
    memset(&s, 0, sizeof s);
    setenv("EMBER_COALESCE", "on", 1);
    setenv("EMBER_COALESCE_WAIT_US", "300", 1);
    const char *flags[] = {"--threads=6", NULL};
    start_server(&s, flags);
    unsetenv("EMBER_COALESCE");
    unsetenv("EMBER_COALESCE_WAIT_US");
    char *log = eh_server_log(&s);
    ck_assert_msg(strstr(log, "coalesce=on") && strstr(log, "event=obsolete_flag") &&
                      strstr(log, "--coalesce-wait-us"),
                  "log: %s", log);
    free(log);
    sgd_hammer(s.addr, "wait", 6, 40, 0, 1);
    eh_client *c = eh_client_open(s.addr);
    co_stats st = stats(c, "wait");
    stats_consistent(st);
    ck_assert_msg(st.batches > 0, "6 clients: nothing coalesced in %llu calls",
                  (unsigned long long)(st.pushes + st.pulls));
    eh_client_close(c);
    stop_server(&s);
}
END_TEST

/* ---- a full queue refuses, and what it refused changed nothing ----------- */

enum { FULL_KEYS = 4096, FULL_DIM = 4, FULL_THREADS = 8, FULL_ROUNDS = 25 };

typedef struct full_arg {
    const char *addr;
    int ok, refused;
    fails *f;
    pthread_t th;
} full_arg;

static void *full_main(void *p)
{
    full_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t *keys = malloc(FULL_KEYS * 8);
    float *g = malloc(FULL_KEYS * FULL_DIM * 4);
    char msg[300];
    for (size_t i = 0; i < FULL_KEYS; i++)
        keys[i] = i;
    for (size_t i = 0; i < FULL_KEYS * FULL_DIM; i++)
        g[i] = 1.0f;
    for (int r = 0; r < FULL_ROUNDS; r++) {
        int rc = push_c(c, "full", keys, FULL_KEYS, g, FULL_KEYS * FULL_DIM, 0,
                        EMBER_WIRE_PUSH_GRADIENTS, msg, sizeof msg);
        if (!rc)
            a->ok++;
        else if (rc == 8 /* RESOURCE_EXHAUSTED */ && strstr(msg, "--coalesce-queue-keys 4096"))
            a->refused++;
        else
            failf(a->f, "push: code %d %s", rc, msg);
    }
    free(keys);
    free(g);
    eh_client_close(c);
    return NULL;
}

START_TEST(full_queue_refuses_and_changes_nothing)
{
    /* a queue that holds one call's keys: while one push runs and one waits,
     * every other is refused at once — never held — and applies nothing, so the
     * rows are minus the number of pushes acknowledged, exactly */
    static eh_server s; /* static: main() may still need it if the test fails */
    memset(&s, 0, sizeof s);
    const char *flags[] = {"--threads=6", "--coalesce=on", "--max-keys-per-request=4096",
                           "--coalesce-queue-keys=4096", NULL};
    start_server(&s, flags);
    eh_client *c = eh_client_open(s.addr);
    create(c, "full", FULL_DIM, 0, 1.0f, 0, 0);
    fails f = {0};
    int ok = 0, refused = 0;
    for (int run = 0; run < 20 && !refused; run++) {
        full_arg a[FULL_THREADS];
        for (int t = 0; t < FULL_THREADS; t++) {
            a[t] = (full_arg){.addr = s.addr, .f = &f};
            pthread_create(&a[t].th, NULL, full_main, &a[t]);
        }
        for (int t = 0; t < FULL_THREADS; t++) {
            pthread_join(a[t].th, NULL);
            ok += a[t].ok;
            refused += a[t].refused;
        }
        CK_FAILS(&f);
    }
    ck_assert_msg(refused > 0, "%d clients on a queue of one call's keys: nothing refused",
                  FULL_THREADS);
    uint64_t keys[FULL_KEYS];
    static float v[FULL_KEYS * FULL_DIM];
    char msg[300];
    for (size_t i = 0; i < FULL_KEYS; i++)
        keys[i] = i;
    ck_assert_int_eq(pull_c(c, "full", keys, FULL_KEYS, 0, 0, FULL_DIM, v, NULL, msg, sizeof msg),
                     0);
    for (size_t i = 0; i < FULL_KEYS * FULL_DIM; i++)
        ck_assert_msg(v[i] == -(float)ok, "key %zu: %g after %d acknowledged pushes (%d refused)",
                      i / FULL_DIM, v[i], ok, refused);
    eh_client_close(c);
    stop_server(&s);
}
END_TEST

/* ---- SIGTERM with calls queued: every acknowledged push is kept ----------- */

enum { STOP_THREADS = 6, STOP_KEYS = 2048, STOP_DIM = 4 };

typedef struct stop_arg {
    const char *addr;
    int t;
    atomic_int acked;
    int sent;
    fails *f;
    pthread_t th;
} stop_arg;

static uint64_t stop_key(int t, size_t i) { return 50000000u * (uint64_t)(t + 1) + i; }

static void *stop_main(void *p)
{
    stop_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t *keys = malloc(STOP_KEYS * 8);
    float *g = malloc(STOP_KEYS * STOP_DIM * 4);
    char msg[300];
    for (size_t i = 0; i < STOP_KEYS; i++)
        keys[i] = stop_key(a->t, i);
    for (size_t i = 0; i < STOP_KEYS * STOP_DIM; i++)
        g[i] = 1.0f;
    for (;;) { /* until the server is gone: its calls then fail */
        a->sent++;
        int rc = push_c(c, "stop", keys, STOP_KEYS, g, STOP_KEYS * STOP_DIM, 0,
                        EMBER_WIRE_PUSH_GRADIENTS, msg, sizeof msg);
        if (rc)
            break;
        atomic_fetch_add(&a->acked, 1);
    }
    free(keys);
    free(g);
    eh_client_close(c);
    return NULL;
}

START_TEST(sigterm_with_calls_queued_keeps_what_it_acknowledged)
{
    /* clients push while SIGTERM arrives: the server drains (exit 0, no hang),
     * every push it acknowledged is in the checkpoint it saves on the way out,
     * and no push is there twice or in part */
    static eh_server s; /* static: main() may still need it if the test fails */
    static char dir[128], flag[200];
    memset(&s, 0, sizeof s);
    snprintf(dir, sizeof dir, "/tmp/ember-co-stop-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(flag, sizeof flag, "--checkpoint-dir=%s", dir);
    const char *flags[] = {"--threads=6", "--coalesce=on", flag, NULL};
    start_server(&s, flags);
    eh_client *c = eh_client_open(s.addr);
    create(c, "stop", STOP_DIM, 0, 1.0f, 0, 0);
    eh_client_close(c);
    fails f = {0};
    stop_arg a[STOP_THREADS];
    for (int t = 0; t < STOP_THREADS; t++) {
        a[t] = (stop_arg){.addr = s.addr, .t = t, .sent = 0, .f = &f};
        atomic_init(&a[t].acked, 0);
        pthread_create(&a[t].th, NULL, stop_main, &a[t]);
    }
    /* SIGTERM once every client has had a push through, while they keep pushing */
    for (int waited = 0; waited < 3000; waited++) {
        int all = 1;
        for (int t = 0; t < STOP_THREADS; t++)
            all &= atomic_load(&a[t].acked) > 0;
        if (all)
            break;
        usleep(10 * 1000);
    }
    usleep(100 * 1000);
    int st = 0;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    for (int t = 0; t < STOP_THREADS; t++)
        pthread_join(a[t].th, NULL);
    ck_assert_int_eq(eh_server_restart(&s), 0);
    c = eh_client_open(s.addr);
    uint64_t keys[STOP_KEYS];
    static float v[STOP_KEYS * STOP_DIM];
    char msg[300];
    for (int t = 0; t < STOP_THREADS; t++) {
        for (size_t i = 0; i < STOP_KEYS; i++)
            keys[i] = stop_key(t, i);
        ck_assert_int_eq(pull_c(c, "stop", keys, STOP_KEYS, 0, 0, STOP_DIM, v, NULL, msg,
                                sizeof msg),
                         0);
        float applied = -v[0];
        int acked = atomic_load(&a[t].acked);
        ck_assert_msg(acked > 0, "client %d: no push acknowledged before SIGTERM", t);
        ck_assert_msg(applied >= (float)acked && applied <= (float)a[t].sent,
                      "client %d: %g pushes in the checkpoint, %d acknowledged, %d sent", t,
                      applied, acked, a[t].sent);
        for (size_t i = 0; i < STOP_KEYS * STOP_DIM; i++)
            ck_assert_msg(v[i] == v[0], "client %d: a push applied in part (%g vs %g at %zu)",
                          t, v[i], v[0], i);
    }
    eh_client_close(c);
    stop_server(&s);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- pulls cancelled mid-reply ------------------------------------------- */

enum { CANCEL_KEYS = 65536, CANCEL_DIM = 64, CANCEL_THREADS = 4, CANCEL_ROUNDS = 20 };

static float cancel_value(uint64_t k, size_t j) { return (float)(k % 1000) + (float)j; }

typedef struct cancel_arg {
    const char *addr;
    int t, ok, cut;
    fails *f;
    pthread_t th;
} cancel_arg;

static void *cancel_main(void *p)
{
    cancel_arg *a = p;
    eh_client *c = eh_client_open(a->addr);
    uint64_t *keys = malloc(CANCEL_KEYS * 8);
    for (size_t i = 0; i < CANCEL_KEYS; i++)
        keys[i] = (i * 7919 + (size_t)a->t) % CANCEL_KEYS;
    ember_wire_pull_request q = {0};
    q.table.data = (const uint8_t *)"cancel";
    q.table.len = 6;
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = CANCEL_KEYS * 8;
    size_t len = ember_wire_pull_request_size(&q, NULL);
    uint8_t *b = malloc(len);
    ember_wire_pull_request_encode(&q, b);
    for (int r = 0; r < CANCEL_ROUNDS; r++) {
        eh_result res;
        /* 1–10 ms: some calls end before, some while, some after their 16 MiB
         * reply is written */
        int dl = 1 + (r * 3 + a->t) % 10;
        if (eh_unary(c, SHARD "Pull", b, len, dl, &res)) {
            failf(a->f, "harness failure");
            break;
        }
        if (res.code == 0) {
            ember_wire_pull_response m;
            if (ember_wire_pull_response_decode(res.data, res.len, &m, NULL, 0) ||
                m.values.len != (size_t)CANCEL_KEYS * CANCEL_DIM * 4) {
                failf(a->f, "a reply of the wrong shape");
            } else {
                for (size_t i = 0; i < CANCEL_KEYS; i += 97) {
                    float x;
                    memcpy(&x, m.values.data + (i * CANCEL_DIM + 5) * 4, 4);
                    if (x != cancel_value(keys[i], 5)) {
                        failf(a->f, "key %llu: %g", (unsigned long long)keys[i], x);
                        break;
                    }
                }
            }
            a->ok++;
        } else if (res.code == 4 /* DEADLINE_EXCEEDED */ || res.code == 1 /* CANCELLED */) {
            a->cut++;
        } else if (res.code == 8 && strstr(res.message, "--coalesce-queue-keys")) {
            /* a call given up on still waits in its queue until its batch drops
             * it: a client that gives up fast can fill the queue */
            a->cut++;
        } else {
            failf(a->f, "pull: code %d %s", res.code, res.message);
        }
        eh_result_free(&res);
    }
    free(b);
    free(keys);
    eh_client_close(c);
    return NULL;
}

START_TEST(pulls_cancelled_mid_reply_leave_the_server_whole)
{
    /* the replies of queued and batched pulls are slices of pooled buffers that
     * gRPC lets go of when it likes: a client that gives up mid-reply must leave
     * every buffer returned once and every later reply right (ASan checks the
     * first in its pass, this test the second) */
    eh_client *c = eh_client_open(S.addr);
    create(c, "cancel", CANCEL_DIM, 0, 1.0f, 0, 0);
    uint64_t *keys = malloc(CANCEL_KEYS * 8);
    float *v = malloc((size_t)CANCEL_KEYS * CANCEL_DIM * 4);
    char msg[300];
    for (size_t i = 0; i < CANCEL_KEYS; i++) {
        keys[i] = i;
        for (size_t j = 0; j < CANCEL_DIM; j++)
            v[i * CANCEL_DIM + j] = cancel_value(i, j);
    }
    ck_assert_int_eq(push_c(c, "cancel", keys, CANCEL_KEYS, v, (size_t)CANCEL_KEYS * CANCEL_DIM,
                            0, EMBER_WIRE_PUSH_INSERT_OR_ASSIGN, msg, sizeof msg),
                     0);
    /* no blockers: four clients of 16 MiB pulls keep the queue busy themselves,
     * and the calls they give up on fill it (a blocker would be refused too) */
    fails f = {0};
    cancel_arg a[CANCEL_THREADS];
    for (int t = 0; t < CANCEL_THREADS; t++) {
        a[t] = (cancel_arg){.addr = S.addr, .t = t, .f = &f};
        pthread_create(&a[t].th, NULL, cancel_main, &a[t]);
    }
    int cut = 0;
    for (int t = 0; t < CANCEL_THREADS; t++) {
        pthread_join(a[t].th, NULL);
        cut += a[t].cut;
    }
    CK_FAILS(&f);
    ck_assert_msg(cut > 0, "no pull of 16 MiB was cut by a 1-10 ms deadline");
    /* every row still right, and the server still whole: once the calls given up
     * on have left the queue (a refused caller backs off and retries) */
    memset(v, 0, (size_t)CANCEL_KEYS * CANCEL_DIM * 4);
    int rc = 8;
    for (int tries = 0; rc == 8 && tries < 200; tries++) {
        rc = pull_c(c, "cancel", keys, CANCEL_KEYS, 0, 0, CANCEL_DIM, v, NULL, msg, sizeof msg);
        if (rc == 8)
            usleep(50 * 1000);
    }
    ck_assert_msg(rc == 0, "pull: code %d %s", rc, msg);
    for (size_t i = 0; i < CANCEL_KEYS * CANCEL_DIM; i++)
        ck_assert_msg(v[i] == cancel_value(i / CANCEL_DIM, i % CANCEL_DIM), "[%zu] = %g", i,
                      v[i]);
    ck_assert_int_eq(eh_health_serving(c, 5000), 1);
    free(keys);
    free(v);
    eh_client_close(c);
}
END_TEST

START_TEST(flags_checked)
{
    char *out = NULL;
    const char *bad[] = {"--coalesce=sometimes", NULL};
    int st = eh_run_server_cmd(bad, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "--coalesce") && strstr(out, "auto, on or off"), "output: %s", out);
    free(out);
    const char *wait[] = {"--coalesce-wait-us=2000000", NULL};
    st = eh_run_server_cmd(wait, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "--coalesce-wait-us"), "output: %s", out);
    free(out);
    /* a queue that could never take the largest call a request may carry */
    const char *queue[] = {"--max-keys-per-request=8192", "--coalesce-queue-keys=4096", NULL};
    st = eh_run_server_cmd(queue, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "--coalesce-queue-keys 4096 is below --max-keys-per-request 8192"),
                  "output: %s", out);
    free(out);
    setenv("EMBER_COALESCE_MAX_KEYS", "0", 1);
    const char *none[] = {"--threads=1", NULL};
    st = eh_run_server_cmd(none, &out, 20000);
    unsetenv("EMBER_COALESCE_MAX_KEYS");
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "EMBER_COALESCE_MAX_KEYS"), "output: %s", out);
    free(out);
    const char *help[] = {"--help", NULL};
    st = eh_run_server_cmd(help, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert(strstr(out, "--coalesce-max-keys") && strstr(out, "EMBER_COALESCE_QUEUE_KEYS") &&
              strstr(out, "EMBER_COALESCE_WAIT_US"));
    free(out);
}
END_TEST

int main(void)
{
    const char *flags[] = {"--threads=8", "--coalesce=on", "--log-level=info", NULL};
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_server_coalesce"))
        return EH_EXIT_SKIP;
    if (eh_server_start(&S, flags)) {
        fprintf(stderr, "cannot start the shared server\n");
        return 1;
    }
    Suite *s = suite_create("server_coalesce");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, sgd_pushes_sum_exactly);
    tcase_add_test(tc, adagrad_steps_once_per_call);
    tcase_add_test(tc, pulls_get_their_own_rows);
    tcase_add_test(tc, push_then_pull_sees_the_push);
    tcase_add_test(tc, retried_push_answered_only_once_applied);
    tcase_add_test(tc, bad_input_fails_only_its_caller);
    tcase_add_test(tc, coalesce_off_serves_the_same);
    tcase_add_test(tc, small_max_keys_bounds_batches);
    tcase_add_test(tc, obsolete_wait_us_is_ignored);
    tcase_add_test(tc, full_queue_refuses_and_changes_nothing);
    tcase_add_test(tc, sigterm_with_calls_queued_keeps_what_it_acknowledged);
    tcase_add_test(tc, pulls_cancelled_mid_reply_leave_the_server_whole);
    tcase_add_test(tc, flags_checked);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (size_t i = 0; i < sizeof started / sizeof *started; i++)
        if (started[i]) { /* a failed test's own server: its log, then away */
            char *log = eh_server_log(started[i]);
            fprintf(stderr, "---- server log (%s) ----\n%s\n", started[i]->addr, log);
            free(log);
            eh_server_cleanup(started[i]);
        }
    int st = 0;
    if (eh_server_stop(&S, SIGTERM, &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "shared server did not stop cleanly (status %d)\n", st);
        failed++;
    }
    if (failed) {
        char *log = eh_server_log(&S);
        fprintf(stderr, "---- shared server log ----\n%s\n", log);
        free(log);
    }
    eh_server_cleanup(&S);
    return failed ? 1 : 0;
}

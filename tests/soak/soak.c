/*
 * soak.c — ember-server under a steady mixed load for minutes: nothing may fail
 * that should not, its memory must stay flat, and no update may be lost.
 *
 * One real ember-server on loopback (tests/integration/harness.h), the cpu
 * backend, small caps (--max-keys-per-request 8192) so that over-cap requests
 * are cheap. CLIENTS threads, each its own libember client (float32, float16 or
 * bfloat16 on the wire, reopened now and then: new connections, new client ids),
 * run a random mix against three tables until SECONDS have passed or
 * MAX_REQUESTS calls were made:
 *
 *   bulk   dim 32, Adagrad, 131,072 slots, keys drawn from 4M: pulls (sync and
 *          async), pushes and push-pulls of 1..4096 keys; full after warm-up, so
 *          it evicts all the time;
 *   exact  dim 8, SGD lr 0.5, zeros initializer: pushes of integer gradients to
 *          256 tracked keys (duplicates within a call included), whose sums each
 *          thread adds to shared counters once the push succeeds. Every value
 *          stays a multiple of 0.5 below 2^23, so float32 arithmetic is exact and
 *          the final rows must equal -0.5 × Σ gradients, exactly;
 *   tmp_N  every few seconds one thread creates a table, fills it and drops it.
 *
 * About one call in ten is bad on purpose, and must get exactly its status:
 * a wrong dim (to exact, with tracked keys), a NaN gradient (to exact, with
 * tracked keys), a reserved key, a missing table, more keys than the cap,
 * garbage bytes to Pull and to CreateTable, an unknown method, an expired
 * deadline. The refused pushes to exact must change nothing (the final check
 * sees it). Any other outcome of any call is a failure.
 *
 * Memory: a sampler reads the server's VmRSS (/proc/PID/status) every 500 ms.
 * After warm-up (the first 30% of the run) it may grow by at most 10% of its
 * value at the 30% mark plus 16 MiB (allocator slack: jemalloc returns pages
 * on a timer), judged on the largest sample from there to the end.
 *
 * A follower (ember-server --replica-of) tails the server through the run; at
 * the end it must hold exactly the server's rows of bulk and exact (within 60 s
 * of the load's end).
 *
 * At the end: every thread's unexpected outcomes (none allowed), the tracked
 * rows, the follower's copy, the server still healthy, its log without
 * level=error, and a clean exit on SIGTERM. Prints what it did: calls by kind, rate, RSS at 30% and at most.
 *
 * Environment: EMBER_SOAK_SECONDS (default 120), EMBER_SOAK_MAX_REQUESTS
 * (default 3,000,000), EMBER_SOAK_CLIENTS (default 6), EMBER_SOAK_SEED.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ember/ember.h"
#include "harness.h"

#define BULK "bulk"
#define BULK_DIM 32
#define BULK_CAPACITY 131072
#define BULK_KEYS (UINT64_C(4) << 20)
#define EXACT "exact"
#define EXACT_DIM 8
#define TRACKED 256
#define MAX_KEYS_PER_REQUEST 8192
#define BATCH_MAX 4096
#define FAIL_KEEP 8

/* ---- settings and shared state -------------------------------------------- */

static double run_seconds = 120;
static uint64_t max_requests = 3000000;
static int nclients = 6;
static uint64_t seed = 12345;

static eh_server S;
static eh_server F; /* its follower (--replica-of) */
static atomic_int stop_flag;
static atomic_uint_fast64_t requests;
static struct timespec t0;

/* Σ gradients per tracked key and element, added after each successful push. */
static atomic_llong expected[TRACKED][EXACT_DIM];

enum { K_PULL, K_PULL_ASYNC, K_PUSH, K_PUSHPULL, K_EXACT_PUSH, K_EXACT_PULL, K_BAD, K_TMP,
       K_REOPEN, K_KINDS };
static const char *kind_names[K_KINDS] = {"pull", "pull_async", "push", "push_pull",
                                          "exact_push", "exact_pull", "bad", "tmp_table",
                                          "reopen"};
static atomic_uint_fast64_t kind_count[K_KINDS];

static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static int fail_n;
static char fail_msg[FAIL_KEEP][400];

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
    pthread_mutex_lock(&fail_mu);
    if (fail_n < FAIL_KEEP) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fail_msg[fail_n], sizeof fail_msg[0], fmt, ap);
        va_end(ap);
    }
    fail_n++;
    pthread_mutex_unlock(&fail_mu);
}

static double elapsed(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static uint64_t tracked_key(int i) { return UINT64_C(0x5eed000000) + (uint64_t)i * 7919; }

/* splitmix64 */
static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n) { return (size_t)(rnd(s) % n); }

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* ---- a client thread ------------------------------------------------------ */

typedef struct worker {
    int id;
    uint64_t rng;
    ember_client *c;
    eh_client *raw;
    uint64_t *keys;
    float *vals, *out;
    uint64_t calls;
} worker;

static ember_client *open_client(int id)
{
    ember_client_options o;
    ember_error err;
    ember_client_options_init(&o);
    o.shards = S.addr;
    o.timeout_ms = 60000;
    o.wire_dtype = (ember_dtype)(id % 3);
    ember_client *c = ember_client_open(&o, &err);
    if (!c)
        failf("client %d: open: %s", id, err.message);
    return c;
}

/* A call that must succeed. */
static void want_ok(worker *w, int rc, const ember_error *err, const char *what)
{
    if (rc)
        failf("client %d: %s: %s (%s)", w->id, what, ember_code_name(rc), err->message);
}

/* A call that must fail with `code`. */
static void want_code(worker *w, int rc, int code, const ember_error *err, const char *what)
{
    if (rc != code)
        failf("client %d: bad request '%s': got %s (%s), expected %s", w->id, what,
              ember_code_name(rc), rc ? err->message : "", ember_code_name(code));
}

static size_t bulk_keys(worker *w, size_t max)
{
    size_t n = 1 + rnd_below(&w->rng, max);
    for (size_t i = 0; i < n; i++)
        w->keys[i] = 1 + rnd_below(&w->rng, BULK_KEYS);
    return n;
}

static void fill_grads(worker *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        w->vals[i] = (float)((int)rnd_below(&w->rng, 2001) - 1000) / 1000.0f;
}

static void check_finite(worker *w, const float *v, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            failf("client %d: %s returned a non-finite value at %zu", w->id, what, i);
            return;
        }
}

static void exact_push(worker *w)
{
    size_t n = 1 + rnd_below(&w->rng, 16);
    int idx[16];
    int g[16][EXACT_DIM];
    for (size_t i = 0; i < n; i++) {
        idx[i] = (int)rnd_below(&w->rng, TRACKED);
        w->keys[i] = tracked_key(idx[i]);
        for (int d = 0; d < EXACT_DIM; d++) {
            g[i][d] = (int)rnd_below(&w->rng, 7) - 3;
            w->vals[i * EXACT_DIM + d] = (float)g[i][d];
        }
    }
    ember_error err;
    int rc = ember_push(w->c, EXACT, w->keys, n, w->vals, EXACT_DIM, &err);
    want_ok(w, rc, &err, "push to exact");
    if (!rc)
        for (size_t i = 0; i < n; i++)
            for (int d = 0; d < EXACT_DIM; d++)
                atomic_fetch_add_explicit(&expected[idx[i]][d], g[i][d], memory_order_relaxed);
}

static void bad_request(worker *w)
{
    ember_error err;
    eh_result r;
    int rc;
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x03};
    switch (rnd_below(&w->rng, 9)) {
    case 0: /* tracked keys at the wrong dim: nothing may be applied */
        for (int i = 0; i < 4; i++)
            w->keys[i] = tracked_key(i * 3);
        for (int i = 0; i < 4 * 16; i++)
            w->vals[i] = 1.0f;
        rc = ember_push(w->c, EXACT, w->keys, 4, w->vals, 16, &err);
        want_code(w, rc, EMBER_INVALID_ARGUMENT, &err, "push at the wrong dim");
        break;
    case 1: /* a NaN among tracked keys' gradients: nothing may be applied */
        for (int i = 0; i < 4; i++)
            w->keys[i] = tracked_key(i * 5 + 1);
        for (int i = 0; i < 4 * EXACT_DIM; i++)
            w->vals[i] = 2.0f;
        w->vals[rnd_below(&w->rng, 4 * EXACT_DIM)] = NAN;
        rc = ember_push(w->c, EXACT, w->keys, 4, w->vals, EXACT_DIM, &err);
        want_code(w, rc, EMBER_INVALID_ARGUMENT, &err, "NaN gradient");
        break;
    case 2:
        w->keys[0] = 5;
        w->keys[1] = UINT64_MAX;
        rc = ember_pull(w->c, BULK, w->keys, 2, w->out, BULK_DIM, EMBER_PULL_INSERT, &err);
        want_code(w, rc, EMBER_INVALID_ARGUMENT, &err, "reserved key");
        break;
    case 3:
        w->keys[0] = 5;
        rc = ember_pull(w->c, "no_such_table", w->keys, 1, w->out, BULK_DIM,
                        EMBER_PULL_SERVE, &err);
        want_code(w, rc, EMBER_NOT_FOUND, &err, "missing table");
        break;
    case 4: { /* over --max-keys-per-request */
        size_t n = MAX_KEYS_PER_REQUEST + 1 + rnd_below(&w->rng, 100);
        for (size_t i = 0; i < n; i++)
            w->keys[i] = i + 1;
        rc = ember_pull(w->c, EXACT, w->keys, n, w->out, EXACT_DIM, EMBER_PULL_SERVE, &err);
        want_code(w, rc, EMBER_RESOURCE_EXHAUSTED, &err, "over the key cap");
        break;
    }
    case 5:
        rc = eh_unary(w->raw, "/ember.v1.Shard/Pull", garbage, sizeof garbage, 0, &r);
        if (rc || r.code != EMBER_INVALID_ARGUMENT)
            failf("client %d: garbage Pull: harness %d, status %d (%s)", w->id, rc, r.code,
                  r.message);
        eh_result_free(&r);
        break;
    case 6:
        rc = eh_unary(w->raw, "/ember.v1.Admin/CreateTable", garbage, sizeof garbage, 0, &r);
        if (rc || r.code != EMBER_INVALID_ARGUMENT)
            failf("client %d: garbage CreateTable: harness %d, status %d (%s)", w->id, rc,
                  r.code, r.message);
        eh_result_free(&r);
        break;
    case 7:
        rc = eh_unary(w->raw, "/ember.v1.Shard/Nope", garbage, sizeof garbage, 0, &r);
        if (rc || r.code != EMBER_UNIMPLEMENTED)
            failf("client %d: unknown method: harness %d, status %d (%s)", w->id, rc, r.code,
                  r.message);
        eh_result_free(&r);
        break;
    default: /* a deadline already past: the server must not run it */
        rc = eh_unary(w->raw, "/ember.v1.Shard/Pull", garbage, sizeof garbage, -1, &r);
        if (rc || r.code != EMBER_DEADLINE_EXCEEDED)
            failf("client %d: expired deadline: harness %d, status %d (%s)", w->id, rc,
                  r.code, r.message);
        eh_result_free(&r);
        break;
    }
}

static void tmp_table(worker *w)
{
    static atomic_int next;
    char name[32];
    snprintf(name, sizeof name, "tmp_%d", atomic_fetch_add(&next, 1));
    ember_table_spec s;
    ember_error err;
    ember_table_spec_init(&s);
    s.dim = 16;
    s.capacity_per_shard = 16384;
    s.optimizer.kind = EMBER_OPTIM_ADAM;
    int rc = ember_create_table(w->c, name, &s, 0, &err);
    want_ok(w, rc, &err, "create tmp table");
    if (rc)
        return;
    for (int round = 0; round < 4 && !rc; round++) {
        size_t n = 2048;
        for (size_t i = 0; i < n; i++)
            w->keys[i] = 1 + rnd_below(&w->rng, 1u << 20);
        fill_grads(w, n * 16);
        rc = ember_push(w->c, name, w->keys, n, w->vals, 16, &err);
        want_ok(w, rc, &err, "push to tmp table");
        if (!rc) {
            rc = ember_pull(w->c, name, w->keys, n, w->out, 16, EMBER_PULL_SERVE, &err);
            want_ok(w, rc, &err, "pull from tmp table");
        }
    }
    rc = ember_drop_table(w->c, name, 0, &err);
    want_ok(w, rc, &err, "drop tmp table");
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    ember_error err;
    int rc;
    double next_tmp = 2.0 + w->id;
    while (!atomic_load(&stop_flag)) {
        if (atomic_fetch_add(&requests, 1) >= max_requests || elapsed() >= run_seconds)
            break;
        w->calls++;
        if (w->calls % 2000 == 0) { /* new connections and a new client id */
            ember_client_close(w->c);
            w->c = open_client(w->id);
            atomic_fetch_add(&kind_count[K_REOPEN], 1);
            if (!w->c)
                break;
        }
        if (w->id == 0 && elapsed() >= next_tmp) {
            next_tmp += 5.0;
            tmp_table(w);
            atomic_fetch_add(&kind_count[K_TMP], 1);
            continue;
        }
        size_t r = rnd_below(&w->rng, 100), n;
        int kind;
        if (r < 25) {
            kind = K_PULL;
            n = bulk_keys(w, BATCH_MAX);
            rc = ember_pull(w->c, BULK, w->keys, n, w->out, BULK_DIM,
                            rnd_below(&w->rng, 4) ? EMBER_PULL_INSERT : EMBER_PULL_SERVE, &err);
            want_ok(w, rc, &err, "pull");
            if (!rc)
                check_finite(w, w->out, n * BULK_DIM, "pull");
        } else if (r < 35) {
            kind = K_PULL_ASYNC;
            n = bulk_keys(w, BATCH_MAX / 2);
            ember_pending *p = ember_pull_async(w->c, BULK, w->keys, n, w->out, BULK_DIM,
                                                EMBER_PULL_INSERT, &err);
            if (!p) {
                want_ok(w, err.code ? err.code : -1, &err, "pull_async");
            } else {
                /* work while it flies: a push of other keys */
                size_t m = 1 + rnd_below(&w->rng, 256);
                for (size_t i = 0; i < m; i++)
                    w->keys[BATCH_MAX + i] = 1 + rnd_below(&w->rng, BULK_KEYS);
                fill_grads(w, m * BULK_DIM);
                rc = ember_push(w->c, BULK, w->keys + BATCH_MAX, m, w->vals, BULK_DIM, &err);
                want_ok(w, rc, &err, "push beside pull_async");
                rc = ember_wait(p, &err);
                want_ok(w, rc, &err, "wait pull_async");
                if (!rc)
                    check_finite(w, w->out, n * BULK_DIM, "pull_async");
            }
        } else if (r < 55) {
            kind = K_PUSH;
            n = bulk_keys(w, BATCH_MAX);
            fill_grads(w, n * BULK_DIM);
            rc = ember_push(w->c, BULK, w->keys, n, w->vals, BULK_DIM, &err);
            want_ok(w, rc, &err, "push");
        } else if (r < 65) {
            kind = K_PUSHPULL;
            n = bulk_keys(w, BATCH_MAX / 2);
            size_t m = 1 + rnd_below(&w->rng, BATCH_MAX / 2);
            for (size_t i = 0; i < m; i++)
                w->keys[BATCH_MAX + i] = 1 + rnd_below(&w->rng, BULK_KEYS);
            fill_grads(w, n * BULK_DIM);
            rc = ember_push_pull(w->c, BULK, w->keys, n, w->vals, w->keys + BATCH_MAX, m,
                                 w->out, BULK_DIM, EMBER_PULL_INSERT, &err);
            want_ok(w, rc, &err, "push_pull");
            if (!rc)
                check_finite(w, w->out, m * BULK_DIM, "push_pull");
        } else if (r < 82) {
            kind = K_EXACT_PUSH;
            exact_push(w);
        } else if (r < 90) {
            kind = K_EXACT_PULL;
            n = 1 + rnd_below(&w->rng, TRACKED);
            for (size_t i = 0; i < n; i++)
                w->keys[i] = tracked_key((int)rnd_below(&w->rng, TRACKED));
            rc = ember_pull(w->c, EXACT, w->keys, n, w->out, EXACT_DIM, EMBER_PULL_SERVE, &err);
            want_ok(w, rc, &err, "pull from exact");
            if (!rc)
                check_finite(w, w->out, n * EXACT_DIM, "pull from exact");
        } else {
            kind = K_BAD;
            bad_request(w);
        }
        atomic_fetch_add(&kind_count[kind], 1);
    }
    return NULL;
}

/* ---- the test --------------------------------------------------------------- */

static void create_tables(ember_client *c)
{
    ember_table_spec s;
    ember_error err;
    ember_table_spec_init(&s);
    s.dim = BULK_DIM;
    s.capacity_per_shard = BULK_CAPACITY;
    s.optimizer.kind = EMBER_OPTIM_ADAGRAD;
    if (ember_create_table(c, BULK, &s, 0, &err)) {
        fprintf(stderr, "soak: create %s: %s\n", BULK, err.message);
        exit(1);
    }
    ember_table_spec_init(&s);
    s.dim = EXACT_DIM;
    s.capacity_per_shard = 65536;
    s.optimizer.kind = EMBER_OPTIM_SGD;
    s.optimizer.lr = 0.5f;
    s.initializer.kind = EMBER_INIT_ZEROS;
    if (ember_create_table(c, EXACT, &s, 0, &err)) {
        fprintf(stderr, "soak: create %s: %s\n", EXACT, err.message);
        exit(1);
    }
}

static int check_exact(ember_client *c)
{
    uint64_t keys[TRACKED];
    static float rows[TRACKED * EXACT_DIM];
    ember_error err;
    for (int i = 0; i < TRACKED; i++)
        keys[i] = tracked_key(i);
    int rc = ember_pull(c, EXACT, keys, TRACKED, rows, EXACT_DIM, EMBER_PULL_SERVE, &err);
    if (rc) {
        fprintf(stderr, "soak: final pull: %s\n", err.message);
        return 1;
    }
    int bad = 0;
    long long most = 0;
    for (int i = 0; i < TRACKED; i++)
        for (int d = 0; d < EXACT_DIM; d++) {
            long long sum = atomic_load(&expected[i][d]);
            float want = -0.5f * (float)sum;
            most = llabs(sum) > most ? llabs(sum) : most;
            if (rows[i * EXACT_DIM + d] != want && bad++ < 5)
                fprintf(stderr, "soak: key %d [%d] = %g, expected %g (Σg = %lld)\n", i, d,
                        (double)rows[i * EXACT_DIM + d], (double)want, sum);
        }
    fprintf(stderr, "soak: %d tracked keys × %d exact: %s (largest |Σg| %lld)\n", TRACKED,
            EXACT_DIM, bad ? "MISMATCH" : "ok", most);
    return bad != 0;
}

static int log_has_errors(void)
{
    char *log = eh_server_log(&S);
    if (!log)
        return 0;
    int n = 0;
    for (const char *p = log; (p = strstr(p, "level=error")) != NULL; p++)
        n++;
    for (const char *p = log; (p = strstr(p, "\"level\":\"error\"")) != NULL; p++)
        n++;
    if (n) {
        const char *first = strstr(log, "level=error");
        fprintf(stderr, "soak: server log has %d error lines, first: %.300s\n", n,
                first ? first : log);
    }
    free(log);
    return n;
}

static double env_num(const char *name, double dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtod(v, NULL) : dflt;
}

int main(void)
{
    run_seconds = env_num("EMBER_SOAK_SECONDS", 120);
    max_requests = (uint64_t)env_num("EMBER_SOAK_MAX_REQUESTS", 3e6);
    nclients = (int)env_num("EMBER_SOAK_CLIENTS", 6);
    seed = (uint64_t)env_num("EMBER_SOAK_SEED", 12345);
    if (nclients < 1 || nclients > 64 || run_seconds <= 0) {
        fprintf(stderr, "soak: bad EMBER_SOAK_* settings\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    static const char *flags[] = {"--threads",   "4",    "--max-keys-per-request", "8192",
                                  "--log-level", "warn", NULL};
    if (eh_server_start(&S, flags)) {
        fprintf(stderr, "soak: cannot start ember-server\n");
        return 1;
    }
    /* a follower tails the server through the run, and must hold exactly its
     * rows once the load stops (README "Replication and failover") */
    char replica_of[96];
    snprintf(replica_of, sizeof replica_of, "--replica-of=%s", S.addr);
    const char *fflags[] = {"--threads", "2", "--log-level", "warn", replica_of, NULL};
    if (eh_server_start(&F, fflags)) {
        fprintf(stderr, "soak: cannot start the follower\n");
        return 1;
    }
    ember_client *admin = open_client(0);
    if (!admin)
        return 1;
    create_tables(admin);
    /* The tracked rows exist (zeros) before the load starts. */
    {
        uint64_t keys[TRACKED];
        static float rows[TRACKED * EXACT_DIM];
        ember_error err;
        for (int i = 0; i < TRACKED; i++)
            keys[i] = tracked_key(i);
        if (ember_pull(admin, EXACT, keys, TRACKED, rows, EXACT_DIM, EMBER_PULL_INSERT, &err)) {
            fprintf(stderr, "soak: first pull: %s\n", err.message);
            return 1;
        }
    }

    fprintf(stderr, "soak: %d clients for %.0f s or %llu calls against %s (pid %d)\n",
            nclients, run_seconds, (unsigned long long)max_requests, S.addr, (int)S.pid);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    worker *ws = calloc((size_t)nclients, sizeof *ws);
    pthread_t *th = calloc((size_t)nclients, sizeof *th);
    if (!ws || !th)
        return 1;
    for (int i = 0; i < nclients; i++) {
        worker *w = &ws[i];
        w->id = i;
        w->rng = seed * 1000003u + (uint64_t)i;
        w->c = open_client(i);
        w->raw = eh_client_open(S.addr);
        w->keys = malloc((MAX_KEYS_PER_REQUEST + 200 + BATCH_MAX) * sizeof(uint64_t));
        w->vals = malloc((size_t)BATCH_MAX * BULK_DIM * sizeof(float));
        w->out = malloc((size_t)(MAX_KEYS_PER_REQUEST + 200) * BULK_DIM * sizeof(float));
        if (!w->c || !w->raw || !w->keys || !w->vals || !w->out)
            return 1;
        pthread_create(&th[i], NULL, worker_main, w);
    }

    /* RSS samples, until the workers are done. */
    size_t cap = 4096, ns = 0;
    double *when = malloc(cap * sizeof *when);
    long *rss = malloc(cap * sizeof *rss);
    int alive = 1;
    for (;;) {
        usleep(500 * 1000);
        double t = elapsed();
        long kib = rss_kib(S.pid);
        if (kib < 0) {
            alive = 0;
            atomic_store(&stop_flag, 1);
            break;
        }
        if (ns < cap) {
            when[ns] = t;
            rss[ns++] = kib;
        }
        if (t >= run_seconds || atomic_load(&requests) >= max_requests)
            break;
    }
    for (int i = 0; i < nclients; i++)
        pthread_join(th[i], NULL);
    double total = elapsed();
    long final_kib = rss_kib(S.pid);
    if (final_kib >= 0 && ns < cap) {
        when[ns] = total;
        rss[ns++] = final_kib;
    }

    int failed = 0;
    uint64_t calls = 0;
    for (int k = 0; k < K_KINDS; k++)
        calls += atomic_load(&kind_count[k]);
    fprintf(stderr, "soak: %llu calls in %.1f s (%.0f/s):", (unsigned long long)calls, total,
            (double)calls / total);
    for (int k = 0; k < K_KINDS; k++)
        fprintf(stderr, " %s %llu", kind_names[k], (unsigned long long)atomic_load(&kind_count[k]));
    fputc('\n', stderr);

    if (!alive) {
        fprintf(stderr, "soak: FAILED: the server died\n");
        failed = 1;
    }
    if (fail_n) {
        fprintf(stderr, "soak: FAILED: %d unexpected outcomes; the first:\n", fail_n);
        for (int i = 0; i < fail_n && i < FAIL_KEEP; i++)
            fprintf(stderr, "  %s\n", fail_msg[i]);
        failed = 1;
    }

    /* Memory after warm-up. */
    long warm = -1, peak = 0, first = ns ? rss[0] : 0;
    for (size_t i = 0; i < ns; i++) {
        if (warm < 0 && when[i] >= 0.3 * total)
            warm = rss[i];
        if (warm >= 0 && rss[i] > peak)
            peak = rss[i];
    }
    if (warm < 0 || ns < 10) {
        fprintf(stderr, "soak: FAILED: too few RSS samples (%zu)\n", ns);
        failed = 1;
    } else {
        long allowed = warm / 10 + 16 * 1024;
        fprintf(stderr,
                "soak: server RSS %ld MiB at start, %ld MiB at 30%%, at most %ld MiB after "
                "(+%ld KiB, allowed +%ld KiB), %ld MiB at the end; %zu samples\n",
                first / 1024, warm / 1024, peak / 1024, peak - warm, allowed, final_kib / 1024,
                ns);
        if (peak - warm > allowed) {
            fprintf(stderr, "soak: FAILED: the server's memory grew after warm-up\n");
            failed = 1;
        }
    }

    if (alive) {
        failed |= check_exact(admin);
        eh_client *h = eh_client_open(S.addr);
        if (!h || eh_health_serving(h, 5000) != 1) {
            fprintf(stderr, "soak: FAILED: the server is not SERVING at the end\n");
            failed = 1;
        }
        if (h)
            eh_client_close(h);
        size_t frows[2] = {0, 0};
        if (!eh_tables_converge(S.addr, F.addr, BULK, 60, &frows[0]) ||
            !eh_tables_converge(S.addr, F.addr, EXACT, 60, &frows[1])) {
            fprintf(stderr, "soak: FAILED: the follower did not converge\n");
            failed = 1;
        } else {
            fprintf(stderr, "soak: the follower holds exactly the server's rows (%zu bulk, "
                            "%zu exact)\n", frows[0], frows[1]);
        }
        ember_table_info info;
        ember_error err;
        if (ember_describe_table(admin, BULK, &info, &err)) {
            fprintf(stderr, "soak: FAILED: describe: %s\n", err.message);
            failed = 1;
        } else {
            fprintf(stderr, "soak: bulk holds %llu keys of %llu slots, %llu evictions\n",
                    (unsigned long long)info.size, (unsigned long long)info.capacity,
                    (unsigned long long)info.evictions);
        }
    }
    for (int i = 0; i < nclients; i++) {
        ember_client_close(ws[i].c);
        eh_client_close(ws[i].raw);
        free(ws[i].keys);
        free(ws[i].vals);
        free(ws[i].out);
    }
    ember_client_close(admin);
    if (log_has_errors())
        failed = 1;
    if (alive) {
        int st = 0;
        if (eh_server_stop(&S, SIGTERM, &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "soak: FAILED: the server did not exit cleanly on SIGTERM (%#x)\n",
                    st);
            failed = 1;
        }
    }
    if (failed) { /* eh_server_cleanup keeps the log then */
        setenv("EMBER_IT_KEEP_LOGS", "1", 1);
        fprintf(stderr, "soak: server log kept: %s\n", S.log_path);
    }
    eh_server_cleanup(&F);
    eh_server_cleanup(&S);
    free(ws);
    free(th);
    free(when);
    free(rss);
    fprintf(stderr, "soak: %s\n", failed ? "FAILED" : "passed");
    return failed;
}

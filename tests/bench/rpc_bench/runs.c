/* runs.c — the measurements: request batches (keysets), the calling threads,
 * one measurement of a shape on a backend (warm-up, timed runs, CPU, latency),
 * and the tables they use (created, pre-filled, dropped). */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_keys.h"
#include "rpc_bench/rpc_bench.h"
#include "server_proc.h"

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "rpc_bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static keyset *g_keysets[MAX_LIST * DIST_COUNT];
static int g_n_keysets;

void keysets_free(void)
{
    for (int i = 0; i < g_n_keysets; i++) {
        free(g_keysets[i]->keys);
        free(g_keysets[i]);
    }
    g_n_keysets = 0;
}

const keyset *keyset_get(const bench_opts *o, size_t n, int dist)
{
    for (int i = 0; i < g_n_keysets; i++)
        if (g_keysets[i]->n == n && g_keysets[i]->dist == dist)
            return g_keysets[i];
    keyset *ks = xmalloc(sizeof *ks);
    uint64_t U = o->universe;
    size_t nb = (size_t)((UINT64_C(1) << 21) / n);
    if (nb < 16)
        nb = 16;
    if (nb > 4096)
        nb = 4096;
    ks->n = n;
    ks->dist = dist;
    ks->nb = nb;
    ks->keys = xmalloc(nb * n * sizeof *ks->keys);
    bench_rng r = {o->seed ^ (n * 1315423911u) ^ ((uint64_t)dist << 40)};
    double t0 = sp_now_s();
    size_t distinct_sum = 0;
    uint32_t *stamp = calloc(U, sizeof *stamp);     /* batch number + 1 that took the rank */
    uint64_t *perm = NULL;
    bench_zipf z;
    if (!stamp) {
        fprintf(stderr, "rpc_bench: out of memory\n");
        exit(1);
    }
    if (dist == DIST_UNIFORM) {
        perm = xmalloc(U * sizeof *perm);
        for (uint64_t i = 0; i < U; i++)
            perm[i] = i;
    } else {
        zipf_init(&z, U, o->zipf_s);
    }
    for (size_t b = 0; b < nb; b++) {
        uint64_t *k = ks->keys + b * n;
        size_t distinct = 0;
        if (dist == DIST_UNIFORM) {
            /* partial Fisher–Yates: n distinct ranks */
            for (size_t i = 0; i < n; i++) {
                uint64_t j = i + rng_below(&r, U - i);
                uint64_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
                k[i] = bench_key(perm[i]);
            }
            distinct = n;
        } else {
            for (size_t i = 0; i < n;) {
                uint64_t rank = zipf_draw(&z, &r);
                int fresh = stamp[rank] != (uint32_t)(b + 1);
                if (dist == DIST_ZIPF && !fresh)
                    continue;
                stamp[rank] = (uint32_t)(b + 1);
                distinct += fresh;
                k[i++] = bench_key(rank);
            }
        }
        distinct_sum += distinct;
    }
    free(stamp);
    free(perm);
    ks->distinct_frac = (double)distinct_sum / (double)(nb * n);
    printf("keys: %zu batches of %zu %s keys drawn from a universe of %llu in %.2f s "
           "(%.1f%% distinct within a request)\n",
           nb, n, dist_names[dist], (unsigned long long)U, sp_now_s() - t0,
           100.0 * ks->distinct_frac);
    fflush(stdout);
    g_keysets[g_n_keysets++] = ks;
    return ks;
}

/* ---- measuring -------------------------------------------------------------- */

typedef struct worker {
    const cell *c;
    ember_client *cl;
    unsigned depth;              /* calls kept in flight by this thread */
    size_t next_batch;
    float **out;                 /* [depth] n × dim each */
    pthread_barrier_t *bar;
    /* results of one run */
    double t0, t1;
    uint64_t calls, keys;
    double *lat;                 /* seconds per call */
    size_t nlat, lat_cap;
    int rc;
    ember_error err;
} worker;

static void lat_push(worker *w, double s)
{
    if (w->nlat == w->lat_cap) {
        w->lat_cap = w->lat_cap ? 2 * w->lat_cap : 4096;
        double *p = realloc(w->lat, w->lat_cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "rpc_bench: out of memory\n");
            exit(1);
        }
        w->lat = p;
    }
    w->lat[w->nlat++] = s;
}

static const uint64_t *batch_keys(worker *w)
{
    const keyset *ks = w->c->ks;
    const uint64_t *k = ks->keys + (w->next_batch % ks->nb) * ks->n;
    w->next_batch++;
    return k;
}

static ember_pending *issue_async(worker *w, unsigned slot)
{
    const cell *c = w->c;
    const uint64_t *k = batch_keys(w);
    if (c->op == OP_PULL)
        return ember_pull_async(w->cl, c->table, k, c->n, w->out[slot], c->dim,
                                EMBER_PULL_INSERT, &w->err);
    return ember_push_async(w->cl, c->table, k, c->n, c->grads, c->dim, &w->err);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const cell *c = w->c;
    pthread_barrier_wait(w->bar);
    double t0 = sp_now_s(), stop = t0 + c->seconds;
    w->t0 = t0;
    w->calls = w->keys = 0;
    w->rc = 0;
    if (c->op == OP_PUSHPULL) {
        /* synchronous: one call in flight per thread */
        while (sp_now_s() < stop && !g_stop) {
            const uint64_t *pk = batch_keys(w), *lk = batch_keys(w);
            double ti = sp_now_s();
            int rc = ember_push_pull(w->cl, c->table, pk, c->n, c->grads, lk, c->n, w->out[0],
                                     c->dim, EMBER_PULL_INSERT, &w->err);
            if (rc) {
                w->rc = rc;
                break;
            }
            lat_push(w, sp_now_s() - ti);
            w->calls++;
            w->keys += c->n;
        }
    } else {
        ember_pending *pend[64];
        double tiss[64];
        unsigned head = 0, count = 0, depth = w->depth;
        for (;;) {
            if (!w->rc && !g_stop && sp_now_s() < stop) {
                while (count < depth) {
                    unsigned slot = (head + count) % depth;
                    tiss[slot] = sp_now_s();
                    pend[slot] = issue_async(w, slot);
                    if (!pend[slot]) {
                        w->rc = w->err.code ? w->err.code : EMBER_UNKNOWN;
                        break;
                    }
                    count++;
                }
            }
            if (count == 0)
                break;
            ember_error e;
            int rc = ember_wait(pend[head], &e);
            double t = sp_now_s();
            if (rc) {
                if (!w->rc) {
                    w->rc = rc;
                    w->err = e;
                }
            } else {
                lat_push(w, t - tiss[head]);
                w->calls++;
                w->keys += c->n;
            }
            head = (head + 1) % depth;
            count--;
        }
    }
    w->t1 = sp_now_s();
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats3(double *v, int n, double *mn, double *med, double *mx)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *mn = v[0];
    *mx = v[n - 1];
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Nearest-rank percentile of sorted v[n]. */
static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0.0;
    size_t r = (size_t)ceil(p * (double)n);
    if (r < 1)
        r = 1;
    if (r > n)
        r = n;
    return v[r - 1];
}

static double payload_bytes_per_key(int op, uint32_t dim, int wire_dtype)
{
    return (op == OP_PUSHPULL ? 2.0 : 1.0) * (wire_dtype ? 2.0 : 4.0) * dim;
}

/* A client of `shards`, or NULL with the reason in err. */
static ember_client *try_open_client(const bench_opts *o, const char *shards, ember_error *err)
{
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = shards;
    co.timeout_ms = o->timeout_ms;
    co.channels_per_shard = o->channels;
    co.wire_dtype = (ember_dtype)o->wire_dtype;
    return ember_client_open(&co, err);
}

static ember_client *open_client(const bench_opts *o, const char *shards)
{
    ember_error err;
    ember_client *cl = try_open_client(o, shards, &err);
    if (!cl) {
        /* only bad options get here (connections are made lazily) */
        fprintf(stderr, "rpc_bench: ember_client_open(%s): %s: %s\n", shards,
                ember_code_name(err.code), err.message);
        exit(1);
    }
    return cl;
}

/* One phase (warm-up or a timed run) on every thread; keys/s, or -1 on failure. */
static double run_phase(worker *ws, unsigned nthr, pthread_barrier_t *bar, ember_error *err,
                        int *rc_out)
{
    pthread_t tids[MAX_THREADS];
    for (unsigned i = 0; i < nthr; i++) {
        ws[i].bar = bar;
        if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "rpc_bench: cannot start a thread\n");
            exit(1);
        }
    }
    for (unsigned i = 0; i < nthr; i++)
        pthread_join(tids[i], NULL);
    double t0 = HUGE_VAL, t1 = -HUGE_VAL;
    uint64_t keys = 0;
    *rc_out = 0;
    for (unsigned i = 0; i < nthr; i++) {
        if (ws[i].t0 < t0)
            t0 = ws[i].t0;
        if (ws[i].t1 > t1)
            t1 = ws[i].t1;
        keys += ws[i].keys;
        if (ws[i].rc && !*rc_out) {
            *rc_out = ws[i].rc;
            *err = ws[i].err;
        }
    }
    if (*rc_out)
        return -1.0;
    return (double)keys / (t1 - t0);
}

/* One measurement of cell c0 on backend b: warm-up, timed runs, the result
 * printed and recorded. A failure that says the backend cannot serve on (its
 * server died, a call ran into its deadline or found nobody listening, or a
 * third failure) takes the backend down for the rest of the run. */
void measure(ctx *x, const cell *c0, int dist, conc cc, int b)
{
    const bench_opts *o = x->o;
    backend *bk = &g_backends[b];
    cell c = *c0;
    bench_result r;
    memset(&r, 0, sizeof r);
    r.backend = b;
    r.op = c.op;
    r.dist = dist;
    r.n = c.n;
    r.dim = c.dim;
    r.cc = cc;

    /* threads: async ops have one per client keeping `depth` in flight; push+pull
     * has `depth` threads per client, one call each */
    unsigned per_client = c.op == OP_PUSHPULL ? cc.depth : 1;
    unsigned nthr = cc.clients * per_client;
    /* its own clients, so that the connections it counts are its own */
    for (unsigned i = 0; i < cc.clients; i++)
        x->clients[i] = open_client(o, bk->shards);
    worker *ws = calloc(nthr, sizeof *ws);
    if (!ws)
        exit(1);
    unsigned depth = c.op == OP_PUSHPULL ? 1 : cc.depth;
    for (unsigned i = 0; i < nthr; i++) {
        worker *w = &ws[i];
        w->c = &c;
        w->cl = x->clients[i / per_client];
        w->depth = depth;
        w->next_batch = (size_t)i * c.ks->nb / nthr;
        w->out = xmalloc(depth * sizeof *w->out);
        /* pushes return no rows: no buffers (16 clients x 2 x 65,536 x 128 floats
         * would be 1 GiB to allocate and touch per measurement) */
        int pulls = c.op == OP_PULL || c.op == OP_PUSHPULL;
        for (unsigned d = 0; d < depth; d++) {
            w->out[d] = pulls ? xmalloc(c.n * c.dim * sizeof(float)) : NULL;
            if (pulls)
                memset(w->out[d], 0, c.n * c.dim * sizeof(float));
        }
    }
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, nthr);
    ember_error err;
    memset(&err, 0, sizeof err);
    int rc = 0;
    double kps[64];
    int reps = o->reps > 64 ? 64 : o->reps;

    c.seconds = o->warmup;
    if (o->warmup > 0)
        run_phase(ws, nthr, &bar, &err, &rc);
    for (unsigned i = 0; i < nthr; i++)
        ws[i].nlat = 0;
    r.conns = tcp_conns_to_shards(bk);
    double cpu_s0 = servers_cpu_s(b, -1), cpu_i0 = servers_cpu_s(-1, b);
    double cpu_c0 = self_cpu_s(), wall0 = sp_now_s();
    c.seconds = o->seconds;
    for (int rep = 0; rep < reps && !rc; rep++)
        kps[rep] = run_phase(ws, nthr, &bar, &err, &rc);
    double wall = sp_now_s() - wall0;
    double d_srv = servers_cpu_s(b, -1) - cpu_s0, d_cli = self_cpu_s() - cpu_c0;
    r.srv_cpu = d_srv / wall;
    r.cli_cpu = d_cli / wall;
    r.idle_cpu = (servers_cpu_s(-1, b) - cpu_i0) / wall;
    int interrupted = g_stop && !rc;
    if (rc) {
        r.failed = 1;
        x->failures++;
        bk->failures++;
        fprintf(stderr, "rpc_bench: %s %s n %zu dim %u %s %ux%u: %s: %s\n", bk->name,
                op_label[c.op], c.n, c.dim, dist_names[dist], cc.clients, cc.depth,
                ember_code_name(rc), err.message);
        if (backend_alive(bk) &&
            (rc == EMBER_DEADLINE_EXCEEDED || rc == EMBER_UNAVAILABLE || bk->failures >= 3)) {
            snprintf(bk->why_down, sizeof bk->why_down, "%s after %d failed measurement(s)",
                     ember_code_name(rc), bk->failures);
            bk->up = 0;
        }
        if (!bk->up)
            printf("backend %s is DOWN (%s): its remaining measurements are skipped\n",
                   bk->name, bk->why_down);
    } else if (!interrupted) {
        stats3(kps, reps, &r.kps_min, &r.kps_med, &r.kps_max);
        r.gbps_med = r.kps_med * payload_bytes_per_key(c.op, c.dim, o->wire_dtype) / 1e9;
        size_t nl = 0;
        for (unsigned i = 0; i < nthr; i++)
            nl += ws[i].nlat;
        double *all = xmalloc(nl * sizeof *all);
        size_t k = 0;
        for (unsigned i = 0; i < nthr; i++) {
            memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof *all);
            k += ws[i].nlat;
        }
        qsort(all, nl, sizeof *all, cmp_double);
        r.p50_us = 1e6 * pct(all, nl, 0.50);
        r.p99_us = 1e6 * pct(all, nl, 0.99);
        r.calls = nl;
        free(all);
        double keys = (double)nl * (double)c.n;
        if (keys > 0) {
            r.srv_ns = 1e9 * d_srv / keys;
            r.cli_ns = 1e9 * d_cli / keys;
        }
    }
    pthread_barrier_destroy(&bar);
    for (unsigned i = 0; i < nthr; i++) {
        for (unsigned d = 0; d < depth; d++)
            free(ws[i].out[d]);
        free(ws[i].out);
        free(ws[i].lat);
    }
    free(ws);
    for (unsigned i = 0; i < cc.clients; i++) {
        ember_client_close(x->clients[i]);
        x->clients[i] = NULL;
    }
    if (interrupted) {
        printf("%s %s n %zu dim %u %ux%u: interrupted, not recorded\n", bk->name,
               op_label[c.op], c.n, c.dim, cc.clients, cc.depth);
        return;
    }
    print_result(x, &r);
    if (x->nres == x->res_cap) {
        x->res_cap = x->res_cap ? 2 * x->res_cap : 64;
        x->res = realloc(x->res, x->res_cap * sizeof *x->res);
        if (!x->res)
            exit(1);
    }
    x->res[x->nres++] = r;
}

/* ---- tables ------------------------------------------------------------------ */

void table_name(char *buf, size_t cap, int tab, uint32_t dim)
{
    snprintf(buf, cap, "rpcb_%s_%u", tab_names[tab], dim);
}

/* The table op reads or updates. */
int op_table(const bench_opts *o, int op)
{
    switch (op) {
    case OP_PULL: return o->pull_tab;
    case OP_PUSH_SGD: return TAB_SGD;
    case OP_PUSH_ADAM: return TAB_ADAM;
    default: return TAB_ADAGRAD;   /* push-adagrad, push+pull */
    }
}

static void tables_needed(const bench_opts *o, int need[TAB_COUNT])
{
    memset(need, 0, TAB_COUNT * sizeof *need);
    for (int op = 0; op < OP_COUNT; op++)
        if (o->ops[op])
            need[op_table(o, op)] = 1;
}

/* Takes backend bk down: a table call failed on it. */
static void backend_down(backend *bk, const char *what, int rc, const ember_error *err)
{
    snprintf(bk->why_down, sizeof bk->why_down, "%s: %s: %.160s", what, ember_code_name(rc),
             err->message);
    fprintf(stderr, "rpc_bench: %s: %s\n", bk->name, bk->why_down);
    bk->up = 0;
    bk->server_failed = 1;
    backend_alive(bk);
    printf("backend %s is DOWN (%s): its remaining measurements are skipped\n", bk->name,
           bk->why_down);
}

/* Creates the tables the chosen ops use, at `dim`, on backend bk's servers and
 * fills each with every key of the universe. 0, or -1 with bk taken down. */
/* --ack replicated: until the followers copy the new table, its pushes are
 * refused (UNAVAILABLE, unapplied): waits up to 60 s for one to go through (a
 * zero gradient on key 0 of the universe). */
static int wait_followers(ember_client *cl, const char *name, uint32_t dim, backend *bk)
{
    uint64_t key = bench_key(0);
    float *g = calloc(dim, sizeof *g);
    ember_error err;
    int rc = EMBER_UNAVAILABLE;
    double t0 = sp_now_s();
    while (g && rc == EMBER_UNAVAILABLE && sp_now_s() - t0 < 60.0 && !g_stop) {
        rc = ember_push(cl, name, &key, 1, g, dim, &err);
        if (rc == EMBER_UNAVAILABLE)
            usleep(50000);
    }
    free(g);
    if (rc)
        backend_down(bk, "a replicated push (are there --followers?)", rc, &err);
    return rc;
}

int create_tables(ctx *x, backend *bk, uint32_t dim)
{
    const bench_opts *o = x->o;
    ember_error err;
    ember_client *cl = try_open_client(o, bk->shards, &err);
    if (!cl) {
        backend_down(bk, "client open", err.code, &err);
        return -1;
    }
    unsigned nshards = ember_client_shard_count(cl);
    int need[TAB_COUNT];
    tables_needed(o, need);
    int rc = 0;
    for (int tab = 0; tab < TAB_COUNT && !rc && !g_stop; tab++) {
        if (!need[tab])
            continue;
        char name[64];
        table_name(name, sizeof name, tab, dim);
        ember_table_spec s;
        ember_table_spec_init(&s);
        s.dim = dim;
        s.capacity_per_shard = o->capacity ? o->capacity : 2 * o->universe / nshards + 1024;
        s.seed = o->seed;
        s.optimizer.kind = tab == TAB_SGD ? EMBER_OPTIM_SGD
                           : tab == TAB_ADAM ? EMBER_OPTIM_ADAM : EMBER_OPTIM_ADAGRAD;
        s.optimizer.lr = tab == TAB_ADAM ? 0.001f : 0.01f;
        /* the server's default: the backend it was started with */
        s.backend = NULL;
        s.ack = o->ack;
        if ((rc = ember_drop_table(cl, name, 1, &err)) != 0) {
            backend_down(bk, "drop table", rc, &err);
            break;
        }
        if ((rc = ember_create_table(cl, name, &s, 0, &err)) != 0) {
            backend_down(bk, "create table", rc, &err);
            break;
        }
        /* pre-fill: every key of the universe, by inserting pulls, PREFILL_DEPTH in
         * flight so that every server thread inserts (one at a time, 2 M keys take
         * tens of seconds on a CPU table: new rows are initialised and touched) */
        enum { PREFILL_DEPTH = 8 };
        double t0 = sp_now_s();
        size_t chunk = 65536;
        uint64_t *keys = xmalloc(PREFILL_DEPTH * chunk * sizeof *keys);
        float *out = xmalloc(PREFILL_DEPTH * chunk * dim * sizeof *out);
        ember_pending *pend[PREFILL_DEPTH];
        unsigned head = 0, count = 0;
        uint64_t next = 0;
        while (next < o->universe || count) {
            if (!rc && next < o->universe && count < PREFILL_DEPTH) {
                unsigned slot = (head + count) % PREFILL_DEPTH;
                size_t m = o->universe - next < chunk ? (size_t)(o->universe - next) : chunk;
                uint64_t *k = keys + slot * chunk;
                for (size_t i = 0; i < m; i++)
                    k[i] = bench_key(next + i);
                pend[slot] = ember_pull_async(cl, name, k, m, out + slot * chunk * dim, dim,
                                              EMBER_PULL_INSERT, &err);
                if (!pend[slot]) {
                    rc = err.code ? err.code : EMBER_UNKNOWN;
                    backend_down(bk, "pre-fill pull", rc, &err);
                    continue;
                }
                next += m;
                count++;
                continue;
            }
            if (!count)
                break;   /* failed: nothing left in flight */
            ember_error e;
            int prc = ember_wait(pend[head], &e);
            if (prc && !rc) {
                rc = prc;
                backend_down(bk, "pre-fill pull", rc, &e);
            }
            head = (head + 1) % PREFILL_DEPTH;
            count--;
        }
        free(keys);
        free(out);
        if (rc)
            break;
        if (o->ack == EMBER_ACK_REPLICATED && (rc = wait_followers(cl, name, dim, bk)) != 0)
            break;
        ember_table_info info;
        if ((rc = ember_describe_table(cl, name, &info, &err)) != 0) {
            backend_down(bk, "describe table", rc, &err);
            break;
        }
        printf("%s table %s: dim %u, %s, capacity %llu over %u shard(s), filled with %llu keys "
               "in %.2f s: size %llu, load factor %.3f, evictions %llu\n",
               bk->name, name, dim, tab_labels[tab], (unsigned long long)info.capacity, nshards,
               (unsigned long long)o->universe, sp_now_s() - t0, (unsigned long long)info.size,
               info.load_factor, (unsigned long long)info.evictions);
        fflush(stdout);
    }
    ember_client_close(cl);
    return rc ? -1 : 0;
}

void drop_tables(ctx *x, backend *bk, uint32_t dim)
{
    ember_error err;
    ember_client *cl = try_open_client(x->o, bk->shards, &err);
    if (!cl)
        return;
    int need[TAB_COUNT];
    tables_needed(x->o, need);
    for (int tab = 0; tab < TAB_COUNT; tab++) {
        if (!need[tab])
            continue;
        char name[64];
        table_name(name, sizeof name, tab, dim);
        int rc = ember_drop_table(cl, name, 1, &err);
        if (rc)
            fprintf(stderr, "rpc_bench: %s: drop %s: %s: %s\n", bk->name, name,
                    ember_code_name(rc), err.message);
    }
    ember_client_close(cl);
}

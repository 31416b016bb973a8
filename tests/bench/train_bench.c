/*
 * train_bench.c — a DLRM-like training job through libember, end to end: N
 * worker processes train one model against S ember-server shards this program
 * starts on loopback (tests/lib/server_proc.h), once per configuration and
 * backend, side by side in one run, and report examples/s, keys/s and how far
 * the loss went down.
 *
 * The data (generated, so the answer is known): each example has 26 sparse
 * fields, as Criteo's display-ads logs do; field f's ids are Zipf-distributed
 * over a vocabulary of Criteo's cardinality for that field times --scale. A
 * planted model (one weight per (field, id), bias 0) gives each example its
 * click probability through the logistic function, and the label is drawn from
 * it; a model that learns nothing stays at log 2 ≈ 0.693.
 *
 * The model: one ember table of dim D (--dim) holds the embeddings of every
 * field (a field's ids are keys of their own). On the worker's CPU,
 *
 *   logit = b + Σ_f <w_f, e_f> [+ v · relu(W x + c)]
 *
 * with e_f the example's embedding for field f, x their concatenation (26·D),
 * and the bracket only with --mlp H (H hidden units). The dense parameters
 * (b, w_f, and W, c, v) are each worker's own, updated by Adam on the worker;
 * the embeddings are updated by the table's Adam on the server. A step pulls
 * the batch's rows (a training pull: new ids are created), computes the log
 * loss and its gradients, and pushes the embedding gradients.
 *
 * Configurations (--configs):
 *   plain     one pull and one push per field (26 + 26 calls per step), float32
 *             on the wire, synchronous: each call waits for the one before.
 *   opt       the worker optimizations: every field in one call (the library
 *             fetches a repeated key once and sums its gradients, so the merged
 *             call carries each distinct row once), bfloat16 on the wire, the
 *             next batch's pull started (ember_pull_async) before this batch is
 *             computed, and the push sent async, collected with that pull.
 *             The pull then reads rows one push older (staleness 1).
 *   pushpull  merged and bfloat16 as opt, with this batch's push and the next
 *             batch's pull in one round trip (ember_push_pull), synchronous.
 *
 * Workers are processes: this program runs itself (/proc/self/exe --worker …),
 * each worker opens its own ember_client (client_id its own), and prints one
 * result line, which the parent reads through a pipe. examples/s is all
 * workers' timed examples over the span from the first worker's timed start
 * to the last one's end; keys/s is examples/s × 26 (key lookups of the batch,
 * before any dedup).
 *
 * Exit status: 0 when every run that ran finished and its loss went down
 * (final/initial below --max-loss-ratio); 77 when only gpu was asked for
 * (--backends gpu) and no GPU is visible or CUDA is not built; 1 otherwise;
 * 2 bad usage. GPU configurations without a GPU are reported SKIPPED, never
 * run on something else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ember/ember.h>

#include "bench_keys.h"
#include "server_proc.h"

#define NFIELDS 26
#define MAX_WORKERS 64
#define MAX_SHARDS 16
#define MAX_REPS 16

/* Cardinalities of the 26 categorical fields of Criteo's Kaggle display-ads
 * data set, as the DLRM reference (facebookresearch/dlrm) counts them. */
static const uint64_t criteo_card[NFIELDS] = {
    1460,  583,   10131227, 2202608, 305,    24,      12517, 633, 3,
    93145, 5683,  8351593,  3194,    27,     14992,   5461306, 10, 5652,
    2173,  4,     7046547,  18,      15,     286181,  105,   142572};

enum { CFG_PLAIN = 0, CFG_OPT = 1, CFG_PUSHPULL = 2, NCFG = 3 };
static const char *const cfg_name[NCFG] = {"plain", "opt", "pushpull"};
static const char *const cfg_what[NCFG] = {
    "per-field calls, f32, sync",
    "merged, bf16, prefetch + async push",
    "merged, bf16, PushPull",
};

typedef struct opts {
    unsigned workers, shards, steps, warmup, batch, dim, mlp, reps, server_threads;
    double scale, zipf, planted, lr, lr_dense, max_loss_ratio;
    uint64_t seed;
    int cfg_on[NCFG];
    int want_cpu, want_gpu, backends_given;
    const char *server_bin;
    /* worker mode */
    int worker;
    unsigned worker_id, cfg;
    const char *shard_list, *table;
} opts;

static double now_s(void)
{
    return sp_now_s();
}

/* ---- the data -------------------------------------------------------------- */

static uint64_t field_card(const opts *o, unsigned f)
{
    double c = floor((double)criteo_card[f] * o->scale + 0.5);
    return c < 1.0 ? 1 : (uint64_t)c;
}

/* Field f's id of rank r → its key (fields never share a key). */
static uint64_t field_key(unsigned f, uint64_t rank)
{
    return bench_key(((uint64_t)(f + 1) << 48) ^ rank);
}

/* The planted weight of (f, rank): uniform with standard deviation o->planted. */
static double planted_weight(const opts *o, unsigned f, uint64_t rank)
{
    uint64_t h = bench_mix64(field_key(f, rank) ^ UINT64_C(0x243f6a8885a308d3));
    double u = (double)(h >> 11) * 0x1.0p-53;    /* [0, 1) */
    return (2.0 * u - 1.0) * 1.7320508075688772 * o->planted;
}

/* One batch: keys[f*n + i] is example i's key of field f (field-major, so a
 * field's keys are one contiguous call in the plain configuration). */
static void gen_batch(const opts *o, const bench_zipf *z, bench_rng *r, uint64_t *keys,
                      float *labels)
{
    unsigned n = o->batch;
    for (unsigned i = 0; i < n; i++) {
        double logit = 0.0;
        for (unsigned f = 0; f < NFIELDS; f++) {
            uint64_t rank = zipf_draw(&z[f], r);
            keys[(size_t)f * n + i] = field_key(f, rank);
            logit += planted_weight(o, f, rank);
        }
        double p = 1.0 / (1.0 + exp(-logit));
        labels[i] = rng_unit(r) < p ? 1.0f : 0.0f;
    }
}

/* ---- the dense part (the worker's own, Adam on the worker) ------------------ */

typedef struct adam_vec {
    float *p, *g, *m, *v;
    size_t n;
} adam_vec;

static int adam_alloc(adam_vec *a, size_t n, bench_rng *r, double init)
{
    a->n = n;
    a->p = calloc(n, sizeof(float));
    a->g = calloc(n, sizeof(float));
    a->m = calloc(n, sizeof(float));
    a->v = calloc(n, sizeof(float));
    if (!a->p || !a->g || !a->m || !a->v)
        return -1;
    for (size_t i = 0; i < n; i++)
        a->p[i] = (float)((2.0 * rng_unit(r) - 1.0) * init);
    return 0;
}

static void adam_free(adam_vec *a)
{
    free(a->p);
    free(a->g);
    free(a->m);
    free(a->v);
}

static void adam_step(adam_vec *a, double lr, unsigned t)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double c1 = 1.0 - pow(b1, t), c2 = 1.0 - pow(b2, t);
    for (size_t i = 0; i < a->n; i++) {
        double g = a->g[i];
        a->m[i] = (float)(b1 * a->m[i] + (1.0 - b1) * g);
        a->v[i] = (float)(b2 * a->v[i] + (1.0 - b2) * g * g);
        a->p[i] -= (float)(lr * (a->m[i] / c1) / (sqrt(a->v[i] / c2) + eps));
        a->g[i] = 0.0f;
    }
}

typedef struct dense {
    unsigned dim, hidden;
    adam_vec bias, w;        /* 1; NFIELDS*dim */
    adam_vec W, c, v;        /* hidden*NFIELDS*dim, hidden, hidden (mlp only) */
    float *h;                /* one example's hidden activations */
    unsigned t;
} dense;

static int dense_init(dense *d, const opts *o, bench_rng *r)
{
    size_t in = (size_t)NFIELDS * o->dim;
    memset(d, 0, sizeof *d);
    d->dim = o->dim;
    d->hidden = o->mlp;
    if (adam_alloc(&d->bias, 1, r, 0.0) || adam_alloc(&d->w, in, r, 1.0 / sqrt(o->dim)))
        return -1;
    if (d->hidden && (adam_alloc(&d->W, (size_t)d->hidden * in, r, 1.0 / sqrt((double)in)) ||
                      adam_alloc(&d->c, d->hidden, r, 0.0) ||
                      adam_alloc(&d->v, d->hidden, r, 1.0 / sqrt(d->hidden)) ||
                      !(d->h = calloc(d->hidden, sizeof(float)))))
        return -1;
    return 0;
}

static void dense_free(dense *d)
{
    adam_free(&d->bias);
    adam_free(&d->w);
    adam_free(&d->W);
    adam_free(&d->c);
    adam_free(&d->v);
    free(d->h);
}

/* The forward and backward pass over a batch: rows[(f*n + i)*dim] is example
 * i's embedding of field f; writes the embedding gradients (of the mean loss)
 * into grads in the same layout, accumulates the dense gradients and steps
 * the dense parameters. Returns the batch's mean log loss. */
static double dense_step(dense *d, const opts *o, const float *rows, const float *labels,
                         float *grads)
{
    unsigned n = o->batch, dim = d->dim, H = d->hidden;
    size_t in = (size_t)NFIELDS * dim;
    double loss = 0.0;
    float x[NFIELDS * 128 + 1];
    float gx[NFIELDS * 128 + 1];
    for (unsigned i = 0; i < n; i++) {
        /* gather x: the concatenation of the example's rows */
        for (unsigned f = 0; f < NFIELDS; f++)
            memcpy(x + (size_t)f * dim, rows + ((size_t)f * n + i) * dim, dim * sizeof(float));
        double z = d->bias.p[0];
        for (size_t j = 0; j < in; j++)
            z += (double)d->w.p[j] * x[j];
        for (unsigned h = 0; h < H; h++) {
            const float *Wh = d->W.p + (size_t)h * in;
            float a = d->c.p[h];
            for (size_t j = 0; j < in; j++)
                a += Wh[j] * x[j];
            d->h[h] = a > 0.0f ? a : 0.0f;
            z += (double)d->v.p[h] * d->h[h];
        }
        double y = labels[i];
        /* log(1 + e^z) - y z, stable */
        loss += (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - y * z;
        double p = 1.0 / (1.0 + exp(-z));
        float g = (float)((p - y) / n);      /* d(mean loss)/dz */
        d->bias.g[0] += g;
        for (size_t j = 0; j < in; j++) {
            d->w.g[j] += g * x[j];
            gx[j] = g * d->w.p[j];
        }
        for (unsigned h = 0; h < H; h++) {
            if (d->h[h] <= 0.0f)
                continue;
            d->v.g[h] += g * d->h[h];
            float gh = g * d->v.p[h];
            const float *Wh = d->W.p + (size_t)h * in;
            float *gWh = d->W.g + (size_t)h * in;
            d->c.g[h] += gh;
            for (size_t j = 0; j < in; j++) {
                gWh[j] += gh * x[j];
                gx[j] += gh * Wh[j];
            }
        }
        for (unsigned f = 0; f < NFIELDS; f++)
            memcpy(grads + ((size_t)f * n + i) * dim, gx + (size_t)f * dim, dim * sizeof(float));
    }
    d->t++;
    adam_step(&d->bias, o->lr_dense, d->t);
    adam_step(&d->w, o->lr_dense, d->t);
    if (H) {
        adam_step(&d->W, o->lr_dense, d->t);
        adam_step(&d->c, o->lr_dense, d->t);
        adam_step(&d->v, o->lr_dense, d->t);
    }
    return loss / n;
}

/* ---- a worker ----------------------------------------------------------------- */

static int wfail(const opts *o, const char *what, const ember_error *err)
{
    fprintf(stderr, "train_bench: worker %u (%s): %s: %s (%s)\n", o->worker_id,
            cfg_name[o->cfg], what, err->message, ember_code_name(err->code));
    return 1;
}

/* Runs o->steps + o->warmup steps; prints "result <examples> <t0> <t1>
 * <initial loss> <final loss>" on stdout. */
static int worker_main(const opts *o)
{
    const unsigned n = o->batch, dim = o->dim;
    const size_t nk = (size_t)NFIELDS * n;
    ember_error err = {0};
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = o->shard_list;
    co.timeout_ms = 120000;
    co.client_id = bench_mix64(o->seed ^ (0x1000u + o->worker_id)) | 1u;
    co.wire_dtype = o->cfg == CFG_PLAIN ? EMBER_DTYPE_FLOAT32 : EMBER_DTYPE_BFLOAT16;
    ember_client *c = ember_client_open(&co, &err);
    if (!c)
        return wfail(o, "ember_client_open", &err);

    bench_zipf z[NFIELDS];
    for (unsigned f = 0; f < NFIELDS; f++)
        zipf_init(&z[f], field_card(o, f), o->zipf);
    bench_rng r = {o->seed * 7919u + o->worker_id * 104729u + 1u};
    bench_rng dr = {o->seed + 17u};   /* the same dense initial values in every worker */

    /* two batches (this one and the prefetched next one) */
    uint64_t *keys[2];
    float *labels[2], *rows[2], *grads = malloc(nk * dim * sizeof(float));
    dense d;
    int rc = 1;
    memset(&d, 0, sizeof d);   /* dense_free is safe whatever fails below */
    for (int b = 0; b < 2; b++) {
        keys[b] = malloc(nk * sizeof(uint64_t));
        labels[b] = malloc(n * sizeof(float));
        rows[b] = malloc(nk * dim * sizeof(float));
    }
    if (!grads || !keys[0] || !keys[1] || !labels[0] || !labels[1] || !rows[0] || !rows[1] ||
        dense_init(&d, o, &dr)) {
        fprintf(stderr, "train_bench: worker %u: out of memory\n", o->worker_id);
        goto out;
    }

    /* the start line: "ready", then wait until the parent closes our stdin,
     * which it does when every worker is ready */
    printf("ready\n");
    fflush(stdout);
    char go;
    while (read(STDIN_FILENO, &go, 1) > 0)
        ;

    const unsigned total = o->warmup + o->steps;
    const unsigned tail = o->steps / 5 > 0 ? o->steps / 5 : 1;
    double loss0 = 0.0, lossN = 0.0, t0 = 0.0;
    unsigned cur = 0;
    gen_batch(o, z, &r, keys[cur], labels[cur]);
    if (o->cfg != CFG_PLAIN &&
        ember_pull(c, o->table, keys[cur], nk, rows[cur], dim, EMBER_PULL_INSERT, &err))
        return wfail(o, "ember_pull (first batch)", &err);
    for (unsigned s = 0; s < total; s++) {
        if (s == o->warmup)
            t0 = now_s();
        unsigned nxt = cur ^ 1u;
        int last = s + 1 == total;
        ember_pending *pf = NULL;
        if (o->cfg == CFG_PLAIN) {
            for (unsigned f = 0; f < NFIELDS; f++)
                if (ember_pull(c, o->table, keys[cur] + (size_t)f * n, n,
                               rows[cur] + (size_t)f * n * dim, dim, EMBER_PULL_INSERT, &err))
                    return wfail(o, "ember_pull", &err);
        } else if (!last) {
            gen_batch(o, z, &r, keys[nxt], labels[nxt]);
            if (o->cfg == CFG_OPT &&
                !(pf = ember_pull_async(c, o->table, keys[nxt], nk, rows[nxt], dim,
                                        EMBER_PULL_INSERT, &err)))
                return wfail(o, "ember_pull_async", &err);
        }
        double loss = dense_step(&d, o, rows[cur], labels[cur], grads);
        if (s == 0)
            loss0 = loss;
        if (getenv("TRAIN_BENCH_TRACE"))
            fprintf(stderr, "worker %u %s step %u loss %.4f\n", o->worker_id, cfg_name[o->cfg],
                    s, loss);
        if (s + tail >= total)
            lossN += loss / tail;
        if (o->cfg == CFG_PLAIN) {
            for (unsigned f = 0; f < NFIELDS; f++)
                if (ember_push(c, o->table, keys[cur] + (size_t)f * n, n,
                               grads + (size_t)f * n * dim, dim, &err))
                    return wfail(o, "ember_push", &err);
            if (!last)
                gen_batch(o, z, &r, keys[nxt], labels[nxt]);
        } else if (o->cfg == CFG_OPT) {
            ember_pending *ps = ember_push_async(c, o->table, keys[cur], nk, grads, dim, &err);
            if (!ps) {
                if (pf)
                    ember_wait(pf, NULL);
                return wfail(o, "ember_push_async", &err);
            }
            int prc = pf ? ember_wait(pf, &err) : 0;
            if (prc) {
                ember_wait(ps, NULL);
                return wfail(o, "ember_pull_async's wait", &err);
            }
            if (ember_wait(ps, &err))
                return wfail(o, "ember_push_async's wait", &err);
        } else {
            if (ember_push_pull(c, o->table, keys[cur], nk, grads, keys[nxt], last ? 0 : nk,
                                rows[nxt], dim, EMBER_PULL_INSERT, &err))
                return wfail(o, "ember_push_pull", &err);
        }
        cur = nxt;
    }
    double t1 = now_s();
    printf("result %" PRIu64 " %.9f %.9f %.9g %.9g\n", (uint64_t)o->steps * n, t0, t1, loss0,
           lossN);
    fflush(stdout);
    rc = 0;
out:
    for (int b = 0; b < 2; b++) {
        free(keys[b]);
        free(labels[b]);
        free(rows[b]);
    }
    free(grads);
    dense_free(&d);
    ember_client_close(c);
    return rc;
}

/* ---- the parent: servers, runs, the report ----------------------------------- */

typedef struct backend {
    const char *name;
    int up;
    char why[512];
    pid_t pids[MAX_SHARDS];
    int ports[MAX_SHARDS];
    char logs[MAX_SHARDS][128];
    char shard_list[MAX_SHARDS * 24];
} backend;

typedef struct result {
    int ran;
    unsigned ok;
    double eps[MAX_REPS];    /* examples/s per rep */
    double loss0, lossN;     /* of the last rep */
    char why[640];
} result;

static void backend_stop(backend *bk, unsigned shards)
{
    for (unsigned i = 0; i < shards; i++) {
        if (bk->pids[i] <= 0)
            continue;
        int st = 0;
        if (sp_stop(bk->pids[i], SIGTERM, 20.0, &st) == 0 && WIFEXITED(st) && !WEXITSTATUS(st))
            unlink(bk->logs[i]);
        else
            sp_print_log_tail(bk->logs[i]);
        bk->pids[i] = 0;
    }
}

static int backend_start(const opts *o, backend *bk)
{
    bk->shard_list[0] = '\0';
    for (unsigned i = 0; i < o->shards; i++) {
        int ok = 0;
        for (int attempt = 0; attempt < 5 && !ok; attempt++) {
            int port = sp_free_port();
            if (port <= 0)
                continue;
            char addr[32], sidx[16], scount[16], threads[16];
            snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
            snprintf(sidx, sizeof sidx, "%u", i);
            snprintf(scount, sizeof scount, "%u", o->shards);
            snprintf(threads, sizeof threads, "%u", o->server_threads);
            snprintf(bk->logs[i], sizeof bk->logs[i], "/tmp/train_bench.%d.%s.server%u.log",
                     (int)getpid(), bk->name, i);
            const char *argv[] = {o->server_bin, "--listen", addr, "--threads", threads,
                                  "--shard-index", sidx, "--shard-count", scount,
                                  "--log-level", "warn", "--backend", bk->name, NULL};
            pid_t pid = sp_spawn(argv, NULL, bk->logs[i], SP_LOG_TRUNCATE | SP_OWN_GROUP);
            if (pid < 0) {
                snprintf(bk->why, sizeof bk->why, "fork: %s", strerror(errno));
                return -1;
            }
            int st = 0, rc = sp_wait_serving(pid, port, 30.0, &st);
            if (rc == 0) {
                bk->pids[i] = pid;
                bk->ports[i] = port;
                ok = 1;
                snprintf(bk->shard_list + strlen(bk->shard_list),
                         sizeof bk->shard_list - strlen(bk->shard_list), "%s%s", i ? "," : "",
                         addr);
            } else if (rc == -1) {
                snprintf(bk->why, sizeof bk->why, "%s server %u exited at start (%s %d)",
                         bk->name, i, WIFEXITED(st) ? "exit" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                sp_print_log_tail(bk->logs[i]);
                if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
                    char *log = sp_read_file(bk->logs[i]);
                    int taken = log && (strstr(log, "cannot listen") || strstr(log, "in use"));
                    free(log);
                    if (!taken)
                        return -1;
                }
            } else {
                snprintf(bk->why, sizeof bk->why, "%s server %u did not answer SERVING in 30 s",
                         bk->name, i);
                sp_stop(pid, SIGKILL, 10.0, NULL);
                sp_print_log_tail(bk->logs[i]);
                return -1;
            }
        }
        if (!ok)
            return -1;
    }
    bk->up = 1;
    return 0;
}

static void shared_args(const opts *o, char (*buf)[32], const char **argv, int *ac)
{
    int k = 0;
#define ARG_U(flag, v)                                                                   \
    do {                                                                                 \
        argv[(*ac)++] = flag;                                                            \
        snprintf(buf[k], 32, "%u", (unsigned)(v));                                       \
        argv[(*ac)++] = buf[k++];                                                        \
    } while (0)
#define ARG_G(flag, v)                                                                   \
    do {                                                                                 \
        argv[(*ac)++] = flag;                                                            \
        snprintf(buf[k], 32, "%.17g", (double)(v));                                      \
        argv[(*ac)++] = buf[k++];                                                        \
    } while (0)
    ARG_U("--steps", o->steps);
    ARG_U("--warmup", o->warmup);
    ARG_U("--batch", o->batch);
    ARG_U("--dim", o->dim);
    ARG_U("--mlp", o->mlp);
    ARG_G("--scale", o->scale);
    ARG_G("--zipf", o->zipf);
    ARG_G("--planted", o->planted);
    ARG_G("--lr-dense", o->lr_dense);
    argv[(*ac)++] = "--seed";
    snprintf(buf[k], 32, "%" PRIu64, o->seed);
    argv[(*ac)++] = buf[k++];
#undef ARG_U
#undef ARG_G
}

/* One run: a fresh table, o->workers worker processes, their results. */
static int run_one(const opts *o, backend *bk, unsigned cfg, unsigned rep, result *res)
{
    char table[64];
    snprintf(table, sizeof table, "train_%s_%u", cfg_name[cfg], rep);
    ember_error err = {0};
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = bk->shard_list;
    co.timeout_ms = 60000;
    ember_client *c = ember_client_open(&co, &err);
    if (!c) {
        snprintf(res->why, sizeof res->why, "ember_client_open: %s", err.message);
        return -1;
    }
    uint64_t total = 0;
    for (unsigned f = 0; f < NFIELDS; f++)
        total += field_card(o, f);
    ember_table_spec spec;
    ember_table_spec_init(&spec);
    spec.dim = o->dim;
    spec.capacity_per_shard = total / o->shards + total / (2u * o->shards) + 65536u;
    spec.optimizer.kind = EMBER_OPTIM_ADAM;
    spec.optimizer.lr = (float)o->lr;
    spec.seed = o->seed;
    if (ember_drop_table(c, table, 1, &err) ||
        ember_create_table(c, table, &spec, 0, &err)) {
        snprintf(res->why, sizeof res->why, "creating table %s: %s", table, err.message);
        ember_client_close(c);
        return -1;
    }

    pid_t pids[MAX_WORKERS] = {0};
    int fds[MAX_WORKERS], gos[MAX_WORKERS];
    FILE *outs[MAX_WORKERS] = {0};
    int rc = 0;
    for (unsigned w = 0; w < o->workers; w++) {
        int p[2], g[2];
        if (pipe(p)) {
            rc = -1;
            break;
        }
        if (pipe(g)) {
            close(p[0]);
            close(p[1]);
            rc = -1;
            break;
        }
        char buf[16][32], wid[16], scfg[16];
        const char *argv[48];
        int ac = 0;
        argv[ac++] = "train_bench";
        argv[ac++] = "--worker";
        snprintf(wid, sizeof wid, "%u", w);
        argv[ac++] = wid;
        argv[ac++] = "--worker-config";
        snprintf(scfg, sizeof scfg, "%u", cfg);
        argv[ac++] = scfg;
        argv[ac++] = "--worker-shards";
        argv[ac++] = bk->shard_list;
        argv[ac++] = "--worker-table";
        argv[ac++] = table;
        shared_args(o, buf, argv, &ac);
        argv[ac] = NULL;
        pid_t pid = fork();
        if (pid == 0) {
            dup2(p[1], STDOUT_FILENO);
            dup2(g[0], STDIN_FILENO);
            close(p[0]);
            close(p[1]);
            close(g[0]);
            close(g[1]);
            for (unsigned k = 0; k < w; k++)
                close(gos[k]);   /* the others' go pipes: their EOF is the parent's */
            execv("/proc/self/exe", (char *const *)argv);
            fprintf(stderr, "train_bench: exec /proc/self/exe: %s\n", strerror(errno));
            _exit(127);
        }
        close(p[1]);
        close(g[0]);
        if (pid < 0) {
            close(p[0]);
            close(g[1]);
            rc = -1;
            break;
        }
        pids[w] = pid;
        fds[w] = p[0];
        gos[w] = g[1];
    }
    /* every worker ready (client open, buffers allocated), then all go at once */
    for (unsigned w = 0; w < o->workers; w++) {
        char line[64];
        if (pids[w] <= 0)
            continue;
        outs[w] = fdopen(fds[w], "r");
        if (!outs[w] || !fgets(line, sizeof line, outs[w]) || strcmp(line, "ready\n"))
            rc = -1;   /* a worker that failed to start: the rest still run */
    }
    for (unsigned w = 0; w < o->workers; w++)
        if (pids[w] > 0)
            close(gos[w]);
    double first = INFINITY, last = 0.0, examples = 0.0, l0 = 0.0, lN = 0.0;
    unsigned got = 0;
    for (unsigned w = 0; w < o->workers; w++) {
        if (pids[w] <= 0)
            continue;
        char line[256] = "";
        if (outs[w]) {
            if (!fgets(line, sizeof line, outs[w]))
                line[0] = '\0';
            fclose(outs[w]);
        } else {
            close(fds[w]);
        }
        int st = 0;
        waitpid(pids[w], &st, 0);
        uint64_t ex;
        double t0, t1, a, b;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
            sscanf(line, "result %" SCNu64 " %lf %lf %lf %lf", &ex, &t0, &t1, &a, &b) == 5) {
            got++;
            examples += (double)ex;
            first = t0 < first ? t0 : first;
            last = t1 > last ? t1 : last;
            l0 += a / o->workers;
            lN += b / o->workers;
        } else {
            snprintf(res->why, sizeof res->why, "worker %u failed (%s %d)", w,
                     WIFEXITED(st) ? "exit" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            rc = -1;
        }
    }
    if (ember_drop_table(c, table, 1, &err))
        fprintf(stderr, "train_bench: dropping %s: %s\n", table, err.message);
    ember_client_close(c);
    if (rc || got != o->workers || !(last > first)) {
        if (!res->why[0])
            snprintf(res->why, sizeof res->why, "workers did not start");
        return -1;
    }
    res->eps[rep] = examples / (last - first);
    res->loss0 = l0;
    res->lossN = lN;
    return 0;
}

static double median(double *v, unsigned n)
{
    double s[MAX_REPS];
    memcpy(s, v, n * sizeof *v);
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && s[j - 1] > s[j]; j--) {
            double t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

#ifdef EMBER_BENCH_GPU
int rpc_bench_gpu_count(char *why, size_t cap);
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: train_bench [options]\n"
            "  --workers N        worker processes (default 2)\n"
            "  --shards S         ember-server shards per backend (default 1)\n"
            "  --steps N          timed steps per worker (default 20)\n"
            "  --warmup N         untimed steps first (default 1)\n"
            "  --batch N          examples per step per worker (default 4096)\n"
            "  --dim D            embedding dim, 1..128 (default 64)\n"
            "  --mlp H            add an MLP of H hidden units to the dense part (default 0)\n"
            "  --scale X          Criteo cardinalities times X (default 0.01)\n"
            "  --zipf S           Zipf exponent of the ids (default 1.05)\n"
            "  --planted X        std of the planted per-id weights (default 0.4)\n"
            "  --lr X             the table's Adam lr (default 0.001)\n"
            "  --lr-dense X       the workers' dense Adam lr (default 0.01)\n"
            "  --configs LIST     of plain,opt,pushpull (default all)\n"
            "  --backends LIST    of cpu,gpu (default cpu, and gpu where a GPU is visible)\n"
            "  --reps R           runs of each configuration, alternating (default 1)\n"
            "  --threads N        --threads of each server (default 2)\n"
            "  --server PATH      the ember-server binary\n"
            "  --max-loss-ratio X fail when final/initial loss is not below X (default 0.97)\n"
            "  --seed N           (default 1)\n"
            "  --quick            a tiny run (the test): 2 workers, 1 shard, 12 steps of 512\n");
}

static int parse_list(const char *s, const char *const *names, int n, int *on)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (int i = 0; i < n; i++)
        on[i] = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(t, names[i]))
                on[i] = found = 1;
        if (!found)
            return -1;
    }
    return 0;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->workers = 2;
    o->shards = 1;
    o->steps = 20;
    o->warmup = 1;
    o->batch = 4096;
    o->dim = 64;
    o->reps = 1;
    o->server_threads = 2;
    o->scale = 0.01;
    o->zipf = 1.05;
    o->planted = 0.4;
    o->lr = 0.001;
    o->lr_dense = 0.01;
    o->max_loss_ratio = 0.97;
    o->seed = 1;
    o->want_cpu = 1;
    for (int i = 0; i < NCFG; i++)
        o->cfg_on[i] = 1;
    static const struct option lo[] = {
        {"workers", 1, 0, 'w'},  {"shards", 1, 0, 's'},     {"steps", 1, 0, 'n'},
        {"warmup", 1, 0, 'W'},   {"batch", 1, 0, 'b'},      {"dim", 1, 0, 'd'},
        {"mlp", 1, 0, 'm'},      {"scale", 1, 0, 'S'},      {"zipf", 1, 0, 'z'},
        {"planted", 1, 0, 'P'},  {"lr", 1, 0, 'l'},         {"lr-dense", 1, 0, 'L'},
        {"configs", 1, 0, 'c'},  {"backends", 1, 0, 'B'},   {"reps", 1, 0, 'r'},
        {"threads", 1, 0, 't'},  {"server", 1, 0, 'x'},     {"max-loss-ratio", 1, 0, 'M'},
        {"seed", 1, 0, 'e'},     {"quick", 0, 0, 'q'},      {"help", 0, 0, 'h'},
        {"worker", 1, 0, 1},     {"worker-config", 1, 0, 2}, {"worker-shards", 1, 0, 3},
        {"worker-table", 1, 0, 4}, {0, 0, 0, 0}};
    int ch;
    static const char *const backend_names[2] = {"cpu", "gpu"};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'w': o->workers = (unsigned)atoi(optarg); break;
        case 's': o->shards = (unsigned)atoi(optarg); break;
        case 'n': o->steps = (unsigned)atoi(optarg); break;
        case 'W': o->warmup = (unsigned)atoi(optarg); break;
        case 'b': o->batch = (unsigned)atoi(optarg); break;
        case 'd': o->dim = (unsigned)atoi(optarg); break;
        case 'm': o->mlp = (unsigned)atoi(optarg); break;
        case 'S': o->scale = atof(optarg); break;
        case 'z': o->zipf = atof(optarg); break;
        case 'P': o->planted = atof(optarg); break;
        case 'l': o->lr = atof(optarg); break;
        case 'L': o->lr_dense = atof(optarg); break;
        case 'r': o->reps = (unsigned)atoi(optarg); break;
        case 't': o->server_threads = (unsigned)atoi(optarg); break;
        case 'x': o->server_bin = optarg; break;
        case 'M': o->max_loss_ratio = atof(optarg); break;
        case 'e': o->seed = strtoull(optarg, NULL, 10); break;
        case 'c':
            if (parse_list(optarg, cfg_name, NCFG, o->cfg_on)) {
                fprintf(stderr, "train_bench: --configs: of plain,opt,pushpull\n");
                return -1;
            }
            break;
        case 'B': {
            int on[2];
            if (parse_list(optarg, backend_names, 2, on)) {
                fprintf(stderr, "train_bench: --backends: of cpu,gpu\n");
                return -1;
            }
            o->want_cpu = on[0];
            o->want_gpu = on[1];
            o->backends_given = 1;
            break;
        }
        case 'q':
            o->workers = 2;
            o->shards = 1;
            o->steps = 12;
            o->batch = 512;
            o->scale = 0.001;
            o->reps = 1;
            break;
        case 'h': usage(stdout); exit(0);
        case 1: o->worker = 1; o->worker_id = (unsigned)atoi(optarg); break;
        case 2: o->cfg = (unsigned)atoi(optarg); break;
        case 3: o->shard_list = optarg; break;
        case 4: o->table = optarg; break;
        default: return -1;
        }
    }
    if (optind != argc || o->workers < 1 || o->workers > MAX_WORKERS || o->shards < 1 ||
        o->shards > MAX_SHARDS || o->steps < 1 || o->batch < 1 || o->dim < 1 ||
        o->dim > 128 || o->reps < 1 || o->reps > MAX_REPS || o->server_threads < 1 ||
        !(o->scale > 0.0) || !(o->zipf > 0.0) || o->cfg >= NCFG || o->mlp > 1024) {
        fprintf(stderr, "train_bench: bad options (--help)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o))
        return 2;
    if (o.worker)
        return worker_main(&o) ? 1 : 0;

    const char *from = NULL;
    o.server_bin = sp_server_bin(o.server_bin, EMBER_SERVER_BIN, &from);
    backend bks[2] = {{.name = "cpu"}, {.name = "gpu"}};
    int want[2] = {o.want_cpu, o.want_gpu};
    int ngpu = 0;
    char gpu_why[256] = "this build has no CUDA (-DEMBER_CUDA=OFF or no toolkit)";
#ifdef EMBER_BENCH_GPU
    ngpu = rpc_bench_gpu_count(gpu_why, sizeof gpu_why);
#endif
    if (!o.backends_given)
        want[1] = ngpu > 0;
    if (ngpu <= 0)
        snprintf(bks[1].why, sizeof bks[1].why, "SKIPPED: %s", gpu_why);
    else if (!want[1])
        snprintf(bks[1].why, sizeof bks[1].why, "not asked for (--backends)");

    uint64_t rows = 0;
    for (unsigned f = 0; f < NFIELDS; f++)
        rows += field_card(&o, f);
    printf("train_bench: %u worker processes x %u steps (+%u warmup) x batch %u; %u shard(s) "
           "per backend, %u server threads; 26 Zipf(%.2f) fields, Criteo cardinalities x %g "
           "(%" PRIu64 " ids); one table, dim %u, Adam lr %g on the server; dense part: "
           "logistic over the 26 embeddings%s (Adam lr %g on each worker)\n",
           o.workers, o.steps, o.warmup, o.batch, o.shards, o.server_threads, o.zipf, o.scale,
           rows, o.dim, o.lr, o.mlp ? " + MLP" : "", o.lr_dense);
    if (o.mlp)
        printf("  MLP: %u hidden units over the 26x%u concatenation\n", o.mlp, o.dim);
    printf("server: %s (%s)\n", o.server_bin, from);

    for (int b = 0; b < 2; b++) {
        if (!want[b] || (b == 1 && ngpu <= 0))
            continue;
        if (backend_start(&o, &bks[b])) {
            fprintf(stderr, "train_bench: %s backend down: %s\n", bks[b].name, bks[b].why);
            backend_stop(&bks[b], o.shards);
        }
    }

    result res[2][NCFG];
    memset(res, 0, sizeof res);
    int failed = 0;
    for (unsigned rep = 0; rep < o.reps; rep++) {
        for (int b = 0; b < 2; b++) {
            if (!bks[b].up)
                continue;
            for (unsigned k = 0; k < NCFG; k++) {
                unsigned cfg = rep % 2 ? NCFG - 1 - k : k;   /* alternating order */
                if (!o.cfg_on[cfg])
                    continue;
                result *r = &res[b][cfg];
                r->ran = 1;
                if (run_one(&o, &bks[b], cfg, rep, r)) {
                    fprintf(stderr, "train_bench: %s/%s rep %u failed: %s\n", bks[b].name,
                            cfg_name[cfg], rep, r->why);
                    failed = 1;
                    continue;
                }
                r->ok++;
                printf("  rep %u %s/%-8s %10.0f examples/s  loss %.4f -> %.4f\n", rep,
                       bks[b].name, cfg_name[cfg], r->eps[rep], r->loss0, r->lossN);
                fflush(stdout);
            }
        }
    }

    printf("\n%-8s %-9s %-38s %12s %12s %8s %8s %7s %7s\n", "backend", "config", "what",
           "examples/s", "keys/s", "vs plain", "loss0", "lossN", "ratio");
    for (int b = 0; b < 2; b++) {
        if (!bks[b].up) {
            printf("%-8s %s\n", bks[b].name,
                   want[b] || b == 1 ? bks[b].why : "not asked for (--backends)");
            continue;
        }
        double plain = res[b][CFG_PLAIN].ok == o.reps ? median(res[b][CFG_PLAIN].eps, o.reps)
                                                      : 0.0;
        for (unsigned cfg = 0; cfg < NCFG; cfg++) {
            result *r = &res[b][cfg];
            if (!r->ran)
                continue;
            if (r->ok != o.reps) {
                printf("%-8s %-9s FAILED: %s\n", bks[b].name, cfg_name[cfg], r->why);
                continue;
            }
            double e = median(r->eps, o.reps), ratio = r->lossN / r->loss0;
            char vs[16] = "-";
            if (plain > 0)
                snprintf(vs, sizeof vs, "%.2fx", e / plain);
            printf("%-8s %-9s %-38s %12.0f %12.0f %8s %8.4f %8.4f %7.3f%s\n", bks[b].name,
                   cfg_name[cfg], cfg_what[cfg], e, e * NFIELDS, vs, r->loss0, r->lossN, ratio,
                   ratio < o.max_loss_ratio ? "" : "  LOSS DID NOT GO DOWN");
            if (!(ratio < o.max_loss_ratio))
                failed = 1;
        }
    }
    printf("(examples/s: the median over %u rep(s), all workers; keys/s = examples/s x 26; "
           "loss: the mean log loss of the first step and of the last %u steps, last rep)\n",
           o.reps, o.steps / 5 > 0 ? o.steps / 5 : 1);
    for (int b = 0; b < 2; b++)
        backend_stop(&bks[b], o.shards);
    if (!want[0] && want[1] && ngpu <= 0)
        return 77;   /* only gpu asked for, and no GPU: skipped (a test's SKIP) */
    if (!bks[0].up && !bks[1].up)
        failed = 1;
    return failed;
}

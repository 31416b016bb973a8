/*
 * ctr_demo.c — a training worker that learns a click-through model through ember.
 *
 * The data is generated, so the answer is known. Each example has `fields`
 * categorical features; a field's ids are Zipf-distributed over `vocab` ranks (a
 * few ids are everywhere, most are rare, as in click logs). A planted model — a
 * bias plus one weight per (field, id), and for --model fm also a k-vector per
 * (field, id) whose pairwise dot products add to the logit — gives each example
 * its click probability through the logistic function, and the label is drawn
 * from it. The worker then learns a model of the same form from the labels alone:
 *
 *   logit = b + Σ_f w_f + Σ_{f<g} <v_f, v_g>      (the last term for fm only)
 *
 * b, w_f and v_f are rows of one ember table: dim 1 for lr (w), dim k+1 for fm
 * (w then v); b is the row of a key of its own. Each step pulls the batch's rows
 * (training pull: new ids are created), computes the logistic loss and its
 * gradients on the CPU, and pushes the gradients; the server's optimizer (Adagrad
 * by default) applies them. The next batch's pull is started before this batch is
 * computed and pushed (ember_pull_async), so it reads rows one push older — the
 * usual staleness of an asynchronous parameter server.
 *
 * At the end it compares, on held-out examples, the log loss of the learned model
 * with that of the planted model (the floor: no model can do better on average)
 * and of a constant click rate (the baseline). Learning works when the first
 * approaches the second and stays well below the third.
 *
 * Exit status: 0 done (and, with --expect-within M, learned ≤ planted + M and
 * below the baseline); 1 an ember call failed or the expectation was not met;
 * 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ember/ember.h>

#define DEMO_BIAS_KEY UINT64_C(0)
#define DEMO_MAX_FIELDS 64u
#define DEMO_MAX_K 64u

enum { MODEL_LR = 0, MODEL_FM = 1 };

typedef struct demo_opts {
    const char *shards;      /* NULL: EMBER_SHARDS */
    const char *table;
    long steps;
    unsigned batch;
    int model;               /* MODEL_* */
    uint64_t seed;
    unsigned fields;
    uint64_t vocab;
    double zipf;
    unsigned k;
    double lr;
    long log_every;
    unsigned eval_examples;
    unsigned timeout_ms;
    double retry_budget_s;   /* < 0: libember's default (EMBER_RETRY_BUDGET, 120 s) */
    int fresh;
    int expect;              /* --expect-within given */
    double expect_margin;
} demo_opts;

/* ---- random numbers -------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double rng_unit(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(uint64_t *s)
{
    double u1 = rng_unit(s), u2 = rng_unit(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/*
 * Zipf over ranks 1..n with exponent s > 0, P(r) ∝ r^-s: rejection-inversion
 * (Hörmann & Derflinger 1996, as in Apache Commons' ZipfDistribution), O(1) per
 * draw and no table, so the vocabulary can be as large as one likes.
 */
typedef struct zipf {
    double s, n, h_x1, h_n, sq;
} zipf;

static double zipf_helper1(double x) /* log1p(x)/x */
{
    return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

static double zipf_helper2(double x) /* expm1(x)/x */
{
    return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
}

static double zipf_h(const zipf *z, double x) { return exp(-z->s * log(x)); }

static double zipf_hint(const zipf *z, double x) /* ∫ h, (x^(1-s) - 1)/(1-s) */
{
    double lx = log(x);
    return zipf_helper2((1.0 - z->s) * lx) * lx;
}

static double zipf_hint_inv(const zipf *z, double x)
{
    double t = x * (1.0 - z->s);
    if (t < -1.0)
        t = -1.0;
    return exp(zipf_helper1(t) * x);
}

static void zipf_init(zipf *z, uint64_t n, double s)
{
    z->s = s;
    z->n = (double)n;
    z->h_x1 = zipf_hint(z, 1.5) - 1.0;
    z->h_n = zipf_hint(z, z->n + 0.5);
    z->sq = 2.0 - zipf_hint_inv(z, zipf_hint(z, 2.5) - zipf_h(z, 2.0));
}

static uint64_t zipf_draw(const zipf *z, uint64_t *rng)
{
    for (;;) {
        double u = z->h_n + rng_unit(rng) * (z->h_x1 - z->h_n);
        double x = zipf_hint_inv(z, u);
        double k = floor(x + 0.5);
        if (k < 1.0)
            k = 1.0;
        else if (k > z->n)
            k = z->n;
        if (k - x <= z->sq || u >= zipf_hint(z, k + 0.5) - zipf_h(z, k))
            return (uint64_t)k;
    }
}

/* ---- the planted world ------------------------------------------------------ */

/*
 * The planted model: bias, and per (field, rank) a row of `dim` floats (w, then
 * for fm v[k]), drawn once from the seed. Weights N(0, 0.6²) give the logit a
 * spread of ~1.7 over 8 fields; factors N(0, 0.3²) add interactions of similar
 * size for k = 4.
 */
typedef struct world {
    unsigned fields, dim, k;
    uint64_t vocab;
    double bias;
    float *rows;             /* fields × vocab × dim */
    zipf z;
} world;

static int world_init(world *w, const demo_opts *o)
{
    uint64_t rng = o->seed ^ UINT64_C(0x51a7ed0c0ffee);
    size_t n;
    w->fields = o->fields;
    w->k = o->model == MODEL_FM ? o->k : 0;
    w->dim = 1 + w->k;
    w->vocab = o->vocab;
    w->bias = -1.5;  /* a click rate near 25% */
    n = (size_t)o->fields * (size_t)o->vocab * w->dim;
    w->rows = malloc(n * sizeof(float));
    if (!w->rows)
        return -1;
    for (size_t i = 0; i < n; i += w->dim) {
        w->rows[i] = (float)(0.6 * rng_normal(&rng));
        for (unsigned d = 1; d < w->dim; d++)
            w->rows[i + d] = (float)(0.3 * rng_normal(&rng));
    }
    zipf_init(&w->z, o->vocab, o->zipf);
    return 0;
}

/* The table key of (field, rank): the field in the high bits keeps fields apart
 * and never reaches the four reserved keys at the top. */
static uint64_t demo_key(unsigned field, uint64_t rank)
{
    return ((uint64_t)(field + 1) << 40) | rank;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Log loss of label y under logit z, without overflow for large |z|. */
static double logloss(double z, int y)
{
    return log1p(exp(-fabs(z))) + (z > 0 ? z : 0) - (y ? z : 0);
}

/*
 * The logit of one example whose `fields` rows (dim floats each, w then v) are at
 * rows[0..fields); fills s[k] with Σ_f v_f when k > 0 (the gradient needs it).
 */
static double model_logit(double bias, const float *const *rows, unsigned fields,
                          unsigned k, double *s)
{
    double z = bias, sq = 0;
    for (unsigned d = 0; d < k; d++)
        s[d] = 0;
    for (unsigned f = 0; f < fields; f++) {
        const float *r = rows[f];
        z += r[0];
        for (unsigned d = 0; d < k; d++) {
            s[d] += r[1 + d];
            sq += (double)r[1 + d] * r[1 + d];
        }
    }
    /* Σ_{f<g} <v_f, v_g> = ½ (Σ_d (Σ_f v_fd)² − Σ_f Σ_d v_fd²) */
    for (unsigned d = 0; d < k; d++)
        z += 0.5 * s[d] * s[d];
    return z - 0.5 * sq;
}

/*
 * A batch of `n` examples: keys[n × fields + 1] (the last is the bias key),
 * labels[n], and the planted logit of each (for the floor on held-out data).
 */
typedef struct batch {
    unsigned n, fields;
    uint64_t *keys;
    uint8_t *labels;
    double *planted;
    float *rows;             /* pulled rows, (n × fields + 1) × dim */
    ember_pending *pull;     /* the prefetch in flight, or NULL */
} batch;

static size_t batch_keys(const batch *b) { return (size_t)b->n * b->fields + 1; }

static int batch_alloc(batch *b, unsigned n, unsigned fields, unsigned dim)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    b->fields = fields;
    b->keys = malloc(batch_keys(b) * sizeof *b->keys);
    b->labels = malloc(n);
    b->planted = malloc(n * sizeof *b->planted);
    b->rows = malloc(batch_keys(b) * dim * sizeof *b->rows);
    return b->keys && b->labels && b->planted && b->rows ? 0 : -1;
}

static void batch_free(batch *b)
{
    free(b->keys);
    free(b->labels);
    free(b->planted);
    free(b->rows);
}

/* Draws the batch's examples: ids from the Zipf law, label from the planted model. */
static void world_generate(const world *w, batch *b, uint64_t *rng)
{
    const float *rows[DEMO_MAX_FIELDS];
    double s[DEMO_MAX_K];
    for (unsigned e = 0; e < b->n; e++) {
        uint64_t *keys = b->keys + (size_t)e * w->fields;
        for (unsigned f = 0; f < w->fields; f++) {
            uint64_t rank = zipf_draw(&w->z, rng);
            keys[f] = demo_key(f, rank);
            rows[f] = w->rows + ((size_t)f * w->vocab + (rank - 1)) * w->dim;
        }
        b->planted[e] = model_logit(w->bias, rows, w->fields, w->k, s);
        b->labels[e] = rng_unit(rng) < sigmoid(b->planted[e]);
    }
    b->keys[(size_t)b->n * w->fields] = DEMO_BIAS_KEY;
}

/*
 * Loss and gradients of the batch under its pulled rows: grads[(n × fields + 1) ×
 * dim], one row per key as pulled (ember_push sums equal keys'). Returns the summed
 * log loss.
 */
static double batch_gradients(const batch *b, unsigned dim, float *grads)
{
    const unsigned k = dim - 1, fields = b->fields;
    const float *rows[DEMO_MAX_FIELDS];
    double s[DEMO_MAX_K];
    const size_t bias_row = (size_t)b->n * fields;
    double bias = b->rows[bias_row * dim], gbias = 0, loss = 0;
    for (unsigned e = 0; e < b->n; e++) {
        size_t base = (size_t)e * fields;
        for (unsigned f = 0; f < fields; f++)
            rows[f] = b->rows + (base + f) * dim;
        double z = model_logit(bias, rows, fields, k, s);
        loss += logloss(z, b->labels[e]);
        double g = sigmoid(z) - b->labels[e];  /* d loss / d logit */
        gbias += g;
        for (unsigned f = 0; f < fields; f++) {
            float *gr = grads + (base + f) * dim;
            gr[0] = (float)g;
            for (unsigned d = 0; d < k; d++)   /* d <v_f,v_g> / d v_fd = s_d − v_fd */
                gr[1 + d] = (float)(g * (s[d] - rows[f][1 + d]));
        }
    }
    memset(grads + bias_row * dim, 0, dim * sizeof *grads);
    grads[bias_row * dim] = (float)gbias;
    return loss;
}

/* ---- the worker ------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *what, const ember_error *err)
{
    fprintf(stderr, "ctr_demo: %s: %s", what, ember_code_name(err->code));
    if (err->shard >= 0)
        fprintf(stderr, " (shard %d)", err->shard);
    fprintf(stderr, ": %s\n", err->message);
    return 1;
}

/* Creates the table if it is not there; refuses one of another dim. */
static int demo_table(ember_client *c, const demo_opts *o, unsigned dim)
{
    ember_error err;
    ember_table_spec spec;
    ember_table_info info;
    uint64_t keys = (uint64_t)o->fields * o->vocab + 1;
    unsigned shards = ember_client_shard_count(c);

    if (o->fresh && ember_drop_table(c, o->table, 1, &err) != 0)
        return fail("drop table", &err);
    ember_table_spec_init(&spec);
    spec.dim = dim;
    /* Room for every id at a load factor near 0.5: a key lives only in its
     * bucket, and at 0.75 the fullest buckets already evict a few. */
    spec.capacity_per_shard = 2 * (keys / shards) + 1024;
    spec.optimizer.kind = EMBER_OPTIM_ADAGRAD;
    spec.optimizer.lr = (float)o->lr;
    spec.seed = o->seed;
    if (o->model == MODEL_FM) {
        /* Factors must start apart from zero, or their gradients (the other
         * factors) stay zero. */
        spec.initializer.kind = EMBER_INIT_NORMAL;
        spec.initializer.a = 0.0f;
        spec.initializer.b = 0.05f;
    } else {
        spec.initializer.kind = EMBER_INIT_ZEROS;
    }
    if (ember_create_table(c, o->table, &spec, 1, &err) != 0)
        return fail("create table", &err);
    if (ember_describe_table(c, o->table, &info, &err) != 0)
        return fail("describe table", &err);
    if (info.dim != dim) {
        fprintf(stderr, "ctr_demo: table '%s' exists with dim %" PRIu32 ", --model %s needs %u; "
                        "use --table NAME, --fresh, or emberctl drop %s\n",
                o->table, info.dim, o->model == MODEL_FM ? "fm" : "lr", dim, o->table);
        return 1;
    }
    printf("table %s: dim %u, %s, Adagrad lr %g, %" PRIu64 " keys already, %u shard%s\n",
           o->table, dim, o->model == MODEL_FM ? "factorization machine" : "logistic regression",
           o->lr, info.size, shards, shards == 1 ? "" : "s");
    return 0;
}

/* Log losses on held-out data: learned (rows pulled for serving), planted,
 * constant click rate `ctr`. */
static int demo_evaluate(ember_client *c, const demo_opts *o, const world *w, double ctr,
                         double out[3])
{
    const unsigned chunk = 4096;
    ember_error err;
    batch b;
    uint64_t rng = o->seed ^ UINT64_C(0xe7a1e7a1e7a1);  /* a stream training never sees */
    double learned = 0, planted = 0, constant = 0;
    const float *rows[DEMO_MAX_FIELDS];
    double s[DEMO_MAX_K];
    unsigned done = 0;
    int rc = 0;

    if (batch_alloc(&b, chunk, w->fields, w->dim) != 0) {
        fprintf(stderr, "ctr_demo: out of memory\n");
        return 1;
    }
    while (done < o->eval_examples) {
        b.n = o->eval_examples - done < chunk ? o->eval_examples - done : chunk;
        world_generate(w, &b, &rng);
        if (ember_pull(c, o->table, b.keys, batch_keys(&b), b.rows, w->dim, EMBER_PULL_SERVE,
                       &err) != 0) {
            rc = fail("pull (evaluation)", &err);
            break;
        }
        double bias = b.rows[(size_t)b.n * w->fields * w->dim];
        for (unsigned e = 0; e < b.n; e++) {
            for (unsigned f = 0; f < w->fields; f++)
                rows[f] = b.rows + ((size_t)e * w->fields + f) * w->dim;
            learned += logloss(model_logit(bias, rows, w->fields, w->k, s), b.labels[e]);
            planted += logloss(b.planted[e], b.labels[e]);
            constant -= b.labels[e] ? log(ctr) : log1p(-ctr);
        }
        done += b.n;
    }
    batch_free(&b);
    out[0] = learned / done;
    out[1] = planted / done;
    out[2] = constant / done;
    return rc;
}

static int demo_train(ember_client *c, const demo_opts *o, const world *w, double *ctr)
{
    ember_error err;
    batch bufs[2], *cur = &bufs[0], *next = &bufs[1];
    float *grads = NULL;
    uint64_t rng = o->seed;
    uint64_t clicks = 0, seen = 0;
    double t0 = now_s(), t_log = t0, loss_log = 0;
    long steps_log = 0;
    int rc = 0;

    if (batch_alloc(&bufs[0], o->batch, w->fields, w->dim) != 0 ||
        batch_alloc(&bufs[1], o->batch, w->fields, w->dim) != 0 ||
        !(grads = malloc(batch_keys(&bufs[0]) * w->dim * sizeof *grads))) {
        fprintf(stderr, "ctr_demo: out of memory\n");
        rc = 1;
        goto out;
    }
    printf("%8s %10s %12s %12s\n", "step", "logloss", "examples/s", "keys/s");

    world_generate(w, cur, &rng);
    cur->pull = ember_pull_async(c, o->table, cur->keys, batch_keys(cur), cur->rows, w->dim,
                                 EMBER_PULL_INSERT, &err);
    for (long step = 1; step <= o->steps; step++) {
        if (!cur->pull || ember_wait(cur->pull, &err) != 0) {
            cur->pull = NULL;
            rc = fail("pull", &err);
            break;
        }
        cur->pull = NULL;
        if (step < o->steps) {   /* prefetch: overlaps this step's compute and push */
            world_generate(w, next, &rng);
            next->pull = ember_pull_async(c, o->table, next->keys, batch_keys(next), next->rows,
                                          w->dim, EMBER_PULL_INSERT, &err);
        }
        loss_log += batch_gradients(cur, w->dim, grads);
        for (unsigned e = 0; e < cur->n; e++)
            clicks += cur->labels[e];
        seen += cur->n;
        if (ember_push(c, o->table, cur->keys, batch_keys(cur), grads, w->dim, &err) != 0) {
            rc = fail("push", &err);
            break;
        }
        steps_log++;
        if (step % o->log_every == 0 || step == o->steps) {
            double t = now_s(), dt = t - t_log;
            double ex = (double)steps_log * cur->n;
            printf("%8ld %10.4f %12.0f %12.0f\n", step, loss_log / ex, ex / dt,
                   (double)steps_log * batch_keys(cur) / dt);
            fflush(stdout);
            t_log = t;
            loss_log = 0;
            steps_log = 0;
        }
        batch *t = cur;
        cur = next;
        next = t;
    }
    for (int i = 0; i < 2; i++)  /* a prefetch left in flight by an error */
        if (bufs[i].pull)
            ember_wait(bufs[i].pull, NULL);
    if (rc == 0) {
        double dt = now_s() - t0;
        printf("trained %" PRIu64 " examples in %.1f s: %.0f examples/s\n", seen, dt, seen / dt);
    }
    /* The baseline predicts the click rate seen in training; clamp it off 0 and 1. */
    *ctr = seen ? ((double)clicks + 0.5) / ((double)seen + 1.0) : 0.5;
out:
    batch_free(&bufs[0]);
    batch_free(&bufs[1]);
    free(grads);
    return rc;
}

/* ---- options ----------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: ctr_demo [options]\n"
        "\n"
        "Trains a click-through model through ember on generated data with a planted\n"
        "true model, then compares held-out log loss: learned vs planted (the floor)\n"
        "vs a constant click rate (the baseline).\n"
        "\n"
        "  --shards H:P,...     shard servers, in shard order (default: $EMBER_SHARDS)\n"
        "  --table NAME         table to train (default ctr_<model>); created if missing\n"
        "  --fresh              drop the table first, to train from scratch\n"
        "  --model lr|fm        logistic regression (dim 1) or factorization machine\n"
        "                       (dim k+1) (default lr)\n"
        "  --k N                factorization machine factors (default 4)\n"
        "  --steps N            training steps (default 12000)\n"
        "  --batch N            examples per step (default 1024)\n"
        "  --fields N           categorical fields per example (default 8)\n"
        "  --vocab N            ids per field (default 100000)\n"
        "  --zipf S             Zipf exponent of the ids (default 1.1)\n"
        "  --lr X               Adagrad learning rate (default 0.2)\n"
        "  --seed N             seed of the data, the planted model and the table (default 1)\n"
        "  --log-every N        print a line every N steps (default 1000)\n"
        "  --eval N             held-out examples (default 100000)\n"
        "  --timeout-ms N       deadline of each attempt of an ember call (default 10000)\n"
        "  --retry-budget S     how long a call keeps retrying a shard that is down or\n"
        "                       restarting, seconds; 0: a few quick retries only\n"
        "                       (default: $EMBER_RETRY_BUDGET, else 120)\n"
        "  --expect-within M    exit 1 unless learned ≤ planted + M and learned < baseline\n"
        "\n"
        "Each line: step, mean training log loss since the last line, examples/s, and\n"
        "keys/s (keys per second through pull; each is pushed back once).\n");
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    if (!s)
        return -1;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv, demo_opts *o)
{
    static char table[80];
    uint64_t u;
    memset(o, 0, sizeof *o);
    o->steps = 12000;
    o->batch = 1024;
    o->seed = 1;
    o->fields = 8;
    o->vocab = 100000;
    o->zipf = 1.1;
    o->k = 4;
    o->lr = 0.2;
    o->log_every = 1000;
    o->eval_examples = 100000;
    o->timeout_ms = 10000;
    o->retry_budget_s = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--fresh")) {
            o->fresh = 1;
            takes = 0;
        } else if (!strcmp(a, "--shards")) {
            o->shards = v;
            bad = !v;
        } else if (!strcmp(a, "--table")) {
            o->table = v;
            bad = !v;
        } else if (!strcmp(a, "--model")) {
            if (v && !strcmp(v, "lr"))
                o->model = MODEL_LR;
            else if (v && !strcmp(v, "fm"))
                o->model = MODEL_FM;
            else
                bad = 1;
        } else if (!strcmp(a, "--k")) {
            bad = parse_u64(v, 1, DEMO_MAX_K, &u);
            o->k = (unsigned)u;
        } else if (!strcmp(a, "--steps")) {
            bad = parse_u64(v, 1, 1000000000, &u);
            o->steps = (long)u;
        } else if (!strcmp(a, "--batch")) {
            bad = parse_u64(v, 1, 1u << 20, &u);
            o->batch = (unsigned)u;
        } else if (!strcmp(a, "--fields")) {
            bad = parse_u64(v, 1, DEMO_MAX_FIELDS, &u);
            o->fields = (unsigned)u;
        } else if (!strcmp(a, "--vocab")) {
            bad = parse_u64(v, 1, UINT64_C(1) << 32, &u);
            o->vocab = u;
        } else if (!strcmp(a, "--zipf")) {
            bad = parse_double(v, 0.01, 10, &o->zipf);
        } else if (!strcmp(a, "--lr")) {
            bad = parse_double(v, 1e-9, 1e3, &o->lr);
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(v, 0, UINT64_MAX, &o->seed);
        } else if (!strcmp(a, "--log-every")) {
            bad = parse_u64(v, 1, 1000000000, &u);
            o->log_every = (long)u;
        } else if (!strcmp(a, "--eval")) {
            bad = parse_u64(v, 1, 100000000, &u);
            o->eval_examples = (unsigned)u;
        } else if (!strcmp(a, "--timeout-ms")) {
            bad = parse_u64(v, 1, 3600000, &u);
            o->timeout_ms = (unsigned)u;
        } else if (!strcmp(a, "--retry-budget")) {
            bad = parse_double(v, 0, 604800, &o->retry_budget_s);
        } else if (!strcmp(a, "--expect-within")) {
            bad = parse_double(v, 0, 100, &o->expect_margin);
            o->expect = 1;
        } else {
            fprintf(stderr, "ctr_demo: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "ctr_demo: %s needs a valid value%s%s (see --help)\n", a,
                    v ? ", not " : "", v ? v : "");
            return -1;
        }
        i += takes;
    }
    /* The planted model is kept whole in memory: 4 bytes × fields × vocab × dim. */
    if ((double)o->fields * (double)o->vocab * (1 + (o->model == MODEL_FM ? o->k : 0)) >
        (double)(1u << 28)) {
        fprintf(stderr, "ctr_demo: fields × vocab × dim must stay under 2^28 (1 GiB of planted "
                        "model)\n");
        return -1;
    }
    if (!o->table) {
        snprintf(table, sizeof table, "ctr_%s", o->model == MODEL_FM ? "fm" : "lr");
        o->table = table;
    }
    return 0;
}

int main(int argc, char **argv)
{
    demo_opts o;
    ember_client_options co;
    ember_error err;
    ember_client *c;
    world w;
    double ctr = 0.5, loss[3];
    int rc;

    if (parse_opts(argc, argv, &o) != 0)
        return 2;
    ember_client_options_init(&co);
    co.shards = o.shards;
    co.timeout_ms = o.timeout_ms;
    if (o.retry_budget_s >= 0) /* else the default: a shard's restart is ridden through */
        co.retry_budget_ms = (int)(o.retry_budget_s * 1000 + 0.5);
    c = ember_client_open(&co, &err);
    if (!c) {
        fail("open", &err);
        return 2;  /* no shards or a malformed address: the caller's to fix */
    }
    if (world_init(&w, &o) != 0) {
        fprintf(stderr, "ctr_demo: out of memory for the planted model\n");
        ember_client_close(c);
        return 1;
    }
    rc = demo_table(c, &o, w.dim);
    if (rc == 0)
        rc = demo_train(c, &o, &w, &ctr);
    if (rc == 0)
        rc = demo_evaluate(c, &o, &w, ctr, loss);
    if (rc == 0) {
        printf("held-out log loss over %u examples:\n", o.eval_examples);
        printf("  learned   %.4f\n", loss[0]);
        printf("  planted   %.4f   (the floor: the model that made the labels)\n", loss[1]);
        printf("  constant  %.4f   (click rate %.3f, the baseline)\n", loss[2], ctr);
        printf("learned closes %.1f%% of the gap from the baseline to the floor\n",
               100.0 * (loss[2] - loss[0]) / (loss[2] - loss[1]));
        printf("result learned=%.6f planted=%.6f baseline=%.6f\n", loss[0], loss[1], loss[2]);
        if (o.expect && !(loss[0] <= loss[1] + o.expect_margin && loss[0] < loss[2])) {
            fprintf(stderr, "ctr_demo: learned log loss %.4f is not within %.4f of the "
                            "planted %.4f and below the baseline %.4f\n",
                    loss[0], o.expect_margin, loss[1], loss[2]);
            rc = 1;
        }
    }
    free(w.rows);
    ember_client_close(c);
    return rc;
}

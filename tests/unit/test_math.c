/* test_math.c — the shared EMBER_HD math: hashing, initializers, optimizers,
 * scores, checked against float64 reference formulas written out here. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "storage/admission.h"
#include "test_util.h"

/* ---- hashing -------------------------------------------------------------- */

START_TEST(bucket_in_range_and_spread)
{
    enum { NB = 1000, N = 200000 };
    static unsigned hits[NB];
    unsigned digests[128] = {0}, groups[EMBER_BUCKET_GROUPS] = {0};
    memset(hits, 0, sizeof hits);
    for (uint64_t k = 0; k < N; k++) {
        uint64_t h = ember_key_hash(k * 4096); /* strided keys, a common id pattern */
        uint64_t b = ember_hash_bucket(h, NB);
        ck_assert_uint_lt(b, NB);
        hits[b]++;
        uint8_t d = ember_hash_digest(h);
        ck_assert_uint_lt(d, 128);
        digests[d]++;
        groups[ember_hash_group(h)]++;
    }
    for (int b = 0; b < NB; b++) /* expected 200 per bucket */
        ck_assert_msg(hits[b] > 120 && hits[b] < 280, "bucket %d got %u", b, hits[b]);
    for (int d = 0; d < 128; d++)
        ck_assert_uint_gt(digests[d], N / 128 / 2);
    for (unsigned g = 0; g < EMBER_BUCKET_GROUPS; g++)
        ck_assert_uint_gt(groups[g], N / EMBER_BUCKET_GROUPS / 2);
    ck_assert_uint_eq(ember_hash_bucket(UINT64_MAX, 1), 0);
    ck_assert_uint_eq(ember_hash_bucket(UINT64_MAX, 7), 6);
}
END_TEST

START_TEST(reserved_keys_are_the_top_four)
{
    ck_assert(!ember_key_is_reserved(0));
    ck_assert(!ember_key_is_reserved(UINT64_C(0xFFFFFFFFFFFFFFFB)));
    for (uint64_t k = UINT64_C(0xFFFFFFFFFFFFFFFC); k != 0; k++)
        ck_assert(ember_key_is_reserved(k));
}
END_TEST

/* ---- initializers ----------------------------------------------------------- */

static void moments(const ember_init_config *c, int n_keys, uint32_t dim, double *mean,
                    double *sd, float *lo, float *hi)
{
    float *row = malloc(dim * sizeof *row);
    double s = 0, s2 = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int k = 0; k < n_keys; k++) {
        ember_init_row(c, 1234, (uint64_t)k, row, dim);
        for (uint32_t j = 0; j < dim; j++) {
            s += row[j];
            s2 += (double)row[j] * row[j];
            *lo = row[j] < *lo ? row[j] : *lo;
            *hi = row[j] > *hi ? row[j] : *hi;
        }
    }
    double n = (double)n_keys * dim;
    *mean = s / n;
    *sd = sqrt(s2 / n - *mean * *mean);
    free(row);
}

START_TEST(initializer_distributions)
{
    ember_init_config c;
    double mean, sd;
    float lo, hi;

    c.kind = EMBER_INIT_UNIFORM;
    c.a = -0.5f;
    c.b = 1.5f;
    moments(&c, 20000, 16, &mean, &sd, &lo, &hi);
    ck_assert_double_eq_tol(mean, 0.5, 0.01);
    ck_assert_double_eq_tol(sd, 2.0 / sqrt(12.0), 0.01);
    ck_assert_float_ge(lo, -0.5f);
    ck_assert_float_lt(hi, 1.5f);

    c.kind = EMBER_INIT_NORMAL;
    c.a = 1.0f;
    c.b = 2.0f;
    moments(&c, 20000, 16, &mean, &sd, &lo, &hi);
    ck_assert_double_eq_tol(mean, 1.0, 0.02);
    ck_assert_double_eq_tol(sd, 2.0, 0.02);

    c.kind = EMBER_INIT_TRUNCATED_NORMAL;
    c.a = 0.0f;
    c.b = 1.0f;
    moments(&c, 20000, 16, &mean, &sd, &lo, &hi);
    ck_assert_double_eq_tol(mean, 0.0, 0.01);
    ck_assert_double_eq_tol(sd, 0.8796, 0.01); /* sd of N(0,1) cut at ±2 */
    ck_assert_float_ge(lo, -2.0f);
    ck_assert_float_le(hi, 2.0f);

    c.kind = EMBER_INIT_CONSTANT;
    c.a = 0.25f;
    moments(&c, 10, 8, &mean, &sd, &lo, &hi);
    ck_assert_float_eq(lo, 0.25f);
    ck_assert_float_eq(hi, 0.25f);
}
END_TEST

START_TEST(initializer_is_a_pure_function_of_seed_and_key)
{
    ember_init_config c = {EMBER_INIT_NORMAL, 0.0f, 1.0f};
    float a[32], b[32], other_key[32], other_seed[32];
    ember_init_row(&c, 9, 1000, a, 32);
    ember_init_row(&c, 9, 1001, other_key, 32);
    ember_init_row(&c, 10, 1000, other_seed, 32);
    ember_init_row(&c, 9, 1000, b, 32);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert(memcmp(a, other_key, sizeof a) != 0);
    ck_assert(memcmp(a, other_seed, sizeof a) != 0);
    /* The row, computed two elements at a time, is element for element the
     * definition ember_init_value, for every kind and an odd length. */
    {
        static const ember_init_config kinds[] = {
            {EMBER_INIT_UNIFORM, -1.0f, 3.0f},
            {EMBER_INIT_NORMAL, 0.5f, 2.0f},
            {EMBER_INIT_TRUNCATED_NORMAL, 0.0f, 1.0f},
            {EMBER_INIT_CONSTANT, 7.0f, 0.0f},
        };
        float row[33];
        for (int k = 0; k < 4; k++)
            for (uint64_t key = 0; key < 2000; key++) {
                ember_init_row(&kinds[k], 3, key, row, 33);
                uint64_t base = ember_init_base(3, key);
                for (uint32_t j = 0; j < 33; j++)
                    ck_assert_msg(row[j] == ember_init_value(&kinds[k], base, j),
                                  "kind %d key %llu element %u", kinds[k].kind,
                                  (unsigned long long)key, j);
                /* ... and so is the pair form the GPU writes 16 bytes at a time. */
                for (uint32_t p = 0; 2 * p + 1 < 33; p++) {
                    float two[2];
                    ember_init_pair(&kinds[k], base, p, two);
                    ck_assert_msg(two[0] == row[2 * p] && two[1] == row[2 * p + 1],
                                  "pair: kind %d key %llu pair %u", kinds[k].kind,
                                  (unsigned long long)key, p);
                }
            }
    }
    /* Element j does not depend on the row's length: dim 8 is a prefix of 32. */
    ember_init_row(&c, 9, 1000, b, 8);
    ck_assert_mem_eq(a, b, 8 * sizeof(float));
    /* Neighbouring elements are not the same draw. */
    for (int j = 1; j < 32; j++)
        ck_assert(a[j] != a[j - 1]);
}
END_TEST

typedef struct init_job {
    float rows[64][16];
} init_job;

static void *init_rows(void *arg)
{
    init_job *j = arg;
    ember_init_config c = {EMBER_INIT_TRUNCATED_NORMAL, 0.0f, 0.1f};
    for (int k = 0; k < 64; k++)
        ember_init_row(&c, 5, (uint64_t)k * 97, j->rows[k], 16);
    return NULL;
}

START_TEST(initializer_equal_across_threads)
{
    init_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, init_rows, &jobs[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 1; i < 4; i++)
        ck_assert_mem_eq(jobs[0].rows, jobs[i].rows, sizeof jobs[0].rows);
}
END_TEST

/* And the table gives a new key exactly that row, on every shape of call. */
START_TEST(table_new_rows_follow_the_initializer)
{
    ember_table *t = tu_table(8, 4096, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_NORMAL);
    const ember_table_config *c = ember_table_config_of(t);
    uint64_t keys[3] = {1, 99, 123456789};
    float out[3 * 8], expect[8];
    ck_assert_int_eq(ember_table_find_or_insert(t, keys, 3, out, NULL, NULL, NULL), EMBER_OK);
    for (int i = 0; i < 3; i++) {
        ember_init_row(&c->init, c->seed, keys[i], expect, 8);
        ck_assert_mem_eq(out + 8 * i, expect, sizeof expect);
    }
    ember_table_destroy(t);
}
END_TEST

/* ---- optimizers against float64 references ----------------------------------- */

#define ODIM 5
#define STEPS 12

typedef struct ref_row {
    double w[ODIM], s1[ODIM], s2[ODIM];
    double t;
} ref_row;

static void ref_step(const ember_optim_config *c, ref_row *r, const double *g)
{
    for (int j = 0; j < ODIM; j++) {
        switch (c->kind) {
        case EMBER_OPTIM_SGD:
            r->w[j] -= c->lr * g[j];
            break;
        case EMBER_OPTIM_ADAGRAD:
            r->s1[j] += g[j] * g[j];
            r->w[j] -= c->lr * g[j] / (sqrt(r->s1[j]) + c->eps);
            break;
        case EMBER_OPTIM_ADAM: {
            double t = r->t + 1;
            r->s1[j] = c->beta1 * r->s1[j] + (1 - c->beta1) * g[j];
            r->s2[j] = c->beta2 * r->s2[j] + (1 - c->beta2) * g[j] * g[j];
            double mh = r->s1[j] / (1 - pow(c->beta1, t));
            double vh = r->s2[j] / (1 - pow(c->beta2, t));
            r->w[j] -= c->lr * (mh / (sqrt(vh) + c->eps) + c->weight_decay * r->w[j]);
            break;
        }
        case EMBER_OPTIM_FTRL: {
            double p = c->lr_power, n = r->s2[j], nn = n + g[j] * g[j];
            double sigma = (pow(nn, -p) - pow(n, -p)) / c->lr;
            r->s1[j] += g[j] - sigma * r->w[j];
            r->s2[j] = nn;
            double z = r->s1[j];
            r->w[j] = fabs(z) <= c->l1
                          ? 0.0
                          : ((z < 0 ? -1.0 : 1.0) * c->l1 - z) /
                                ((c->beta + pow(nn, -p)) / c->lr + 2 * c->l2);
            break;
        }
        }
    }
    if (c->kind == EMBER_OPTIM_ADAM)
        r->t += 1;
}

static void check_optimizer(const ember_optim_config *c)
{
    float row[ODIM * 3 + 1], g[ODIM];
    ref_row r;
    memset(&r, 0, sizeof r);
    for (int j = 0; j < ODIM; j++) {
        row[j] = 0.1f * (float)(j + 1);
        r.w[j] = row[j];
    }
    ember_optim_init_slots(c, row + ODIM, ODIM);
    for (int j = 0; j < ODIM; j++) {
        if (c->kind == EMBER_OPTIM_ADAGRAD)
            r.s1[j] = c->initial_accumulator;
        if (c->kind == EMBER_OPTIM_FTRL)
            r.s2[j] = c->initial_accumulator;
    }
    for (int step = 0; step < STEPS; step++) {
        double gd[ODIM];
        for (int j = 0; j < ODIM; j++) {
            g[j] = (float)(0.3 * sin(step * 1.7 + j) - 0.05 * j);
            gd[j] = g[j];
        }
        ember_optim_apply(c, row, g, ODIM);
        ref_step(c, &r, gd);
        for (int j = 0; j < ODIM; j++)
            ck_assert_msg(fabs(row[j] - r.w[j]) <= 1e-5 * fmax(1.0, fabs(r.w[j])),
                          "optimizer %d step %d elem %d: %.9g vs reference %.9g", c->kind,
                          step, j, row[j], r.w[j]);
    }
    if (c->kind == EMBER_OPTIM_ADAM)
        ck_assert_float_eq(row[3 * ODIM], (float)STEPS);
}

START_TEST(optimizers_match_float64_reference)
{
    ember_table_config tc;
    ember_table_config_init(&tc);
    ember_optim_config c = tc.optim;
    c.lr = 0.05f;
    c.kind = EMBER_OPTIM_SGD;
    check_optimizer(&c);
    c.kind = EMBER_OPTIM_ADAGRAD;
    check_optimizer(&c);
    c.kind = EMBER_OPTIM_ADAM;
    check_optimizer(&c);
    c.weight_decay = 0.01f;
    check_optimizer(&c);
    c.weight_decay = 0;
    c.kind = EMBER_OPTIM_FTRL;
    c.l1 = 0.001f;
    c.l2 = 0.01f;
    check_optimizer(&c);
    c.lr_power = -0.3f; /* the powf path */
    c.beta = 0.5f;
    check_optimizer(&c);
    c.l1 = 10.0f; /* strong l1: weights are clamped to exactly zero */
    check_optimizer(&c);
}
END_TEST

START_TEST(slot_layout)
{
    ck_assert_uint_eq(ember_row_floats(EMBER_OPTIM_SGD, 64), 64);
    ck_assert_uint_eq(ember_row_floats(EMBER_OPTIM_ADAGRAD, 64), 128);
    ck_assert_uint_eq(ember_row_floats(EMBER_OPTIM_ADAM, 64), 193);
    ck_assert_uint_eq(ember_row_floats(EMBER_OPTIM_FTRL, 64), 192);
}
END_TEST

/* ---- the host's vectorised apply against ember_optim_update, bit for bit ----- */

/* ember_optim_apply as the GPU runs it (and the host did before it had one loop
 * per optimizer): ember_optim_update element by element. */
static void apply_per_element(const ember_optim_config *c, float *row, const float *g,
                              uint32_t dim)
{
    ember_optim_step st = {1.0f, 1.0f};
    if (ember_optim_has_step(c->kind)) {
        float t = row[3u * dim] + 1.0f;
        st = ember_optim_step_of(c, t);
        row[3u * dim] = t;
    }
    ember_optim_update_row(c, st, row, g, dim);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [lo, hi), times a power of two in [2^-e, 2^e] so magnitudes vary. */
static float rng_float(uint64_t *s, float lo, float hi, int e)
{
    float u = (float)(rng_next(s) >> 40) / (float)(1u << 24);
    int x = e ? (int)(rng_next(s) % (uint64_t)(2 * e + 1)) - e : 0;
    return ldexpf(lo + (hi - lo) * u, x);
}

/* A row an optimizer could hold: weights of any sign, Adagrad acc and FTRL n
 * > 0, Adam v >= 0 and a step count, FTRL z around ±l1 so both of its cases
 * occur; and a gradient with some exact zeros. */
static void random_row(const ember_optim_config *c, uint64_t *s, float *row, float *g,
                       uint32_t dim)
{
    uint32_t rf = ember_row_floats(c->kind, dim);
    for (uint32_t j = 0; j < dim; j++) {
        row[j] = rng_float(s, -1.0f, 1.0f, 6);
        g[j] = rng_next(s) % 8 == 0 ? 0.0f : rng_float(s, -1.0f, 1.0f, 8);
    }
    for (uint32_t j = dim; j < rf; j++) {
        switch (c->kind) {
        case EMBER_OPTIM_ADAM:
            row[j] = j < 2u * dim ? rng_float(s, -1.0f, 1.0f, 4) : rng_float(s, 0.0f, 1.0f, 4);
            break;
        case EMBER_OPTIM_FTRL:
            row[j] = j < 2u * dim ? rng_float(s, -2.0f * c->l1 - 0.1f, 2.0f * c->l1 + 0.1f, 0)
                                  : rng_float(s, 0.01f, 4.0f, 4);
            break;
        default:
            row[j] = rng_float(s, 0.01f, 4.0f, 4);
            break;
        }
    }
    if (c->kind == EMBER_OPTIM_ADAM)
        row[rf - 1] = (float)(rng_next(s) % 100);
}

/* Dims that leave every remainder of a 4- or 8-wide vector loop. */
static const uint32_t vec_dims[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 128, 131};

static void optim_configs(ember_optim_config *out, int *n)
{
    ember_table_config tc;
    ember_table_config_init(&tc);
    ember_optim_config c = tc.optim;
    *n = 0;
    c.lr = 0.05f;
    c.kind = EMBER_OPTIM_SGD;
    out[(*n)++] = c;
    c.kind = EMBER_OPTIM_ADAGRAD;
    out[(*n)++] = c;
    c.kind = EMBER_OPTIM_ADAM;
    out[(*n)++] = c;
    c.weight_decay = 0.01f;
    out[(*n)++] = c;
    c.weight_decay = 0.0f;
    c.kind = EMBER_OPTIM_FTRL;
    c.l1 = 0.001f;
    c.l2 = 0.01f;
    out[(*n)++] = c;   /* lr_power -0.5: square roots */
    c.l1 = 0.5f;
    c.beta = 0.5f;
    out[(*n)++] = c;
    c.lr_power = -0.3f;   /* powf */
    out[(*n)++] = c;
    c.lr_power = 0.0f;
    out[(*n)++] = c;
}

START_TEST(optim_apply_equals_per_element_update)
{
    enum { ROWS = 400, MAXD = 131, MAXRF = 3 * MAXD + 1 };
    ember_optim_config cs[8];
    int ncs;
    optim_configs(cs, &ncs);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int k = 0; k < ncs; k++) {
        const ember_optim_config *c = &cs[k];
        for (size_t d = 0; d < sizeof vec_dims / sizeof vec_dims[0]; d++) {
            uint32_t dim = vec_dims[d], rf = ember_row_floats(c->kind, dim);
            for (int r = 0; r < ROWS; r++) {
                float row[MAXRF], expect[MAXRF], g[MAXD];
                random_row(c, &seed, row, g, dim);
                memcpy(expect, row, rf * sizeof(float));
                /* two steps: the second sees the slots the first wrote */
                for (int step = 0; step < 2; step++) {
                    ember_optim_apply(c, row, g, dim);
                    apply_per_element(c, expect, g, dim);
                    for (uint32_t j = 0; j < rf; j++)
                        ck_assert_msg(!memcmp(&row[j], &expect[j], sizeof(float)),
                                      "optimizer %d (config %d) dim %u row %d step %d float "
                                      "%u: %a, per element %a",
                                      c->kind, k, dim, r, step, j, (double)row[j],
                                      (double)expect[j]);
                }
            }
        }
    }
}
END_TEST

/* The same through the table (storage's own build of ember_optim_apply): rows
 * imported with random state, one apply_gradients call, every row compared. */
START_TEST(table_apply_equals_per_element_update)
{
    enum { N = 300, DIM = 67 };
    ember_optim_config cs[8];
    int ncs;
    optim_configs(cs, &ncs);
    uint64_t seed = 12345;
    for (int k = 0; k < ncs; k++) {
        ember_table_config tc;
        ember_table_config_init(&tc);
        tc.dim = DIM;
        tc.capacity = 4096;
        tc.optim = cs[k];
        ember_table *t = NULL;
        ember_error err;
        ck_assert_int_eq(ember_table_create(&tc, NULL, &t, &err), EMBER_OK);
        uint32_t rf = ember_table_row_floats(t);
        uint64_t keys[N], scores[N], versions[N];
        float *rows = malloc((size_t)N * rf * sizeof(float));
        float *grads = malloc((size_t)N * DIM * sizeof(float));
        for (int i = 0; i < N; i++) {
            keys[i] = (uint64_t)i * 7919u + 1u;
            scores[i] = 1;
            versions[i] = 1;
            random_row(&cs[k], &seed, rows + (size_t)i * rf, grads + (size_t)i * DIM, DIM);
        }
        ck_assert_int_eq(ember_table_import(t, keys, N, rows, scores, versions, &err), EMBER_OK);
        ck_assert_int_eq(ember_table_apply_gradients(t, keys, N, grads, NULL, &err), EMBER_OK);
        tu_snapshot snap;
        tu_snapshot_take(t, &snap);
        ck_assert_uint_eq(snap.n, N);
        for (int i = 0; i < N; i++) {
            float *expect = rows + (size_t)i * rf;
            apply_per_element(&cs[k], expect, grads + (size_t)i * DIM, DIM);
            long at = tu_snapshot_find(&snap, keys[i]);
            ck_assert_int_ge(at, 0);
            ck_assert_msg(!memcmp(snap.rows + (size_t)at * rf, expect, rf * sizeof(float)),
                          "optimizer %d (config %d): key %llu's row differs", cs[k].kind, k,
                          (unsigned long long)keys[i]);
        }
        tu_snapshot_free(&snap);
        free(rows);
        free(grads);
        ember_table_destroy(t);
    }
}
END_TEST

/* ---- scores ----------------------------------------------------------------- */

START_TEST(score_policies)
{
    ember_score_ctx c = {EMBER_SCORE_LRU, UINT64_C(5000000000), 3};
    ck_assert_uint_eq(ember_score_next(&c, 1, 0, 1, 0, 0), 5000000000u);
    c.policy = EMBER_SCORE_LFU;
    ck_assert_uint_eq(ember_score_next(&c, 9, 1, 2, 0, 0), 2);   /* new: count */
    ck_assert_uint_eq(ember_score_next(&c, 9, 0, 2, 0, 0), 11);  /* old + count */
    ck_assert_uint_eq(ember_score_next(&c, UINT64_MAX - 1, 0, 5, 0, 0), UINT64_MAX);
    c.policy = EMBER_SCORE_EPOCH_LRU;
    ck_assert_uint_eq(ember_score_next(&c, 0, 1, 1, 0, 0) >> 32, 3);
    ck_assert_uint_eq(ember_score_next(&c, 0, 1, 1, 0, 0) & 0xffffffffu, 5); /* seconds */
    c.policy = EMBER_SCORE_EPOCH_LFU;
    ck_assert_uint_eq(ember_score_next(&c, (UINT64_C(3) << 32) | 4, 0, 1, 0, 0),
                      (UINT64_C(3) << 32) | 5);
    ck_assert_uint_eq(ember_score_next(&c, (UINT64_C(2) << 32) | 4, 0, 1, 0, 0),
                      (UINT64_C(3) << 32) | 1);
    ck_assert_uint_eq(ember_score_next(&c, (UINT64_C(3) << 32) | 0xffffffffu, 0, 1, 0, 0),
                      (UINT64_C(3) << 32) | 0xffffffffu);
    c.policy = EMBER_SCORE_CUSTOM;
    ck_assert_uint_eq(ember_score_next(&c, 7, 0, 1, 99, 1), 99);
    ck_assert_uint_eq(ember_score_next(&c, 7, 0, 1, 0, 0), 7);
    ck_assert_uint_eq(ember_score_next(&c, 7, 1, 1, 0, 0), 0);
}
END_TEST

/* Regression: EPOCH_LRU's low bits were (clock_ns >> 20) truncated to 32 bits,
 * which wrapped every ~52 days, so a key touched just after a wrap scored below
 * one touched just before it. Now seconds, saturating: later never scores lower. */
START_TEST(epoch_lru_clock_never_wraps)
{
    const uint64_t s = UINT64_C(1000000000);
    ember_score_ctx c = {EMBER_SCORE_EPOCH_LRU, 0, 9};
    /* every ~52-day boundary of the old encoding over the next 70 years */
    uint64_t start = UINT64_C(1767225600) * s; /* 2026-01-01 */
    uint64_t prev = 0;
    for (uint64_t t = start; t < start + UINT64_C(70) * 365 * 86400 * s;
         t += (UINT64_C(1) << 52) - s / 2) {
        c.now_ns = t;
        uint64_t now = ember_score_next(&c, 0, 1, 1, 0, 0);
        ck_assert_uint_eq(now >> 32, 9);
        ck_assert_msg(now > prev, "score went back at t=%llu ns", (unsigned long long)t);
        prev = now;
    }
    /* far in the future (year ~2500): saturated, equal, never below an earlier one */
    c.now_ns = UINT64_C(16725225600) * s;
    uint64_t far = ember_score_next(&c, 0, 1, 1, 0, 0);
    ck_assert_uint_eq(far & 0xffffffffu, 0xffffffffu);
    ck_assert_uint_ge(far, prev);
    c.now_ns = UINT64_MAX;
    ck_assert_uint_eq(ember_score_next(&c, 0, 1, 1, 0, 0), far);
    /* a later epoch outranks any clock of an earlier one */
    c.epoch = 10;
    c.now_ns = 0;
    ck_assert_uint_gt(ember_score_next(&c, 0, 1, 1, 0, 0), far);
    ck_assert_uint_eq(ember_score_epoch_clock(UINT64_C(4294967295) * s), 0xffffffffu);
    ck_assert_uint_eq(ember_score_epoch_clock(UINT64_C(4294967294) * s + s - 1), 0xfffffffeu);
}
END_TEST

/* ---- admission sketch --------------------------------------------------------- */

START_TEST(sketch_never_underestimates)
{
    ember_admission *a;
    ck_assert_int_eq(ember_admission_create(5, 1024, &a, NULL), EMBER_OK);
    /* 3000 keys into 1024-wide rows: collisions, but the min never undercounts. */
    for (int round = 0; round < 3; round++)
        for (uint64_t k = 0; k < 3000; k++)
            ember_admission_sight(a, k);
    for (uint64_t k = 0; k < 3000; k++)
        ck_assert_uint_ge(ember_admission_estimate(a, k), 3);
    ck_assert_uint_eq(ember_admission_estimate(a, 1u << 30) < 3 * 3000 / 1024 * 3 + 10, 1);
    ember_admission_destroy(a);
}
END_TEST

START_TEST(sketch_admits_at_min_count_and_ages)
{
    ember_admission *a;
    ck_assert_int_eq(ember_admission_create(3, 64, &a, NULL), EMBER_OK);
    ck_assert_int_eq(ember_admission_sight(a, 42), 0);
    ck_assert_int_eq(ember_admission_sight(a, 42), 0);
    ck_assert_int_eq(ember_admission_sight(a, 42), 1);
    ck_assert_uint_eq(ember_admission_estimate(a, 42), 3);
    /* The 640th sighting (10 × width) halves every counter: 640 becomes 320. */
    for (int i = 3; i < 10 * 64 - 1; i++)
        ember_admission_sight(a, 42);
    ck_assert_uint_eq(ember_admission_estimate(a, 42), 639);
    ember_admission_sight(a, 42);
    ck_assert_uint_eq(ember_admission_estimate(a, 42), 320);
    ember_admission_destroy(a);
}
END_TEST

START_TEST(status_names)
{
    ember_error e;
    ck_assert_str_eq(ember_status_name(EMBER_DATA_LOSS), "DATA_LOSS");
    ck_assert_str_eq(ember_status_name(EMBER_UNAUTHENTICATED), "UNAUTHENTICATED");
    ck_assert_str_eq(ember_status_name(99), "UNKNOWN");
    ck_assert_int_eq(ember_error_set(&e, EMBER_NOT_FOUND, "table %s", "x"), EMBER_NOT_FOUND);
    ck_assert_str_eq(e.message, "table x");
    ember_error_clear(&e);
    ck_assert_int_eq(e.code, EMBER_OK);
    ck_assert_int_eq(ember_error_set(NULL, EMBER_INTERNAL, "ignored"), EMBER_INTERNAL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("math");
    TCase *c = tcase_create("math");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, bucket_in_range_and_spread);
    tcase_add_test(c, reserved_keys_are_the_top_four);
    tcase_add_test(c, initializer_distributions);
    tcase_add_test(c, initializer_is_a_pure_function_of_seed_and_key);
    tcase_add_test(c, initializer_equal_across_threads);
    tcase_add_test(c, table_new_rows_follow_the_initializer);
    tcase_add_test(c, optimizers_match_float64_reference);
    tcase_add_test(c, slot_layout);
    tcase_add_test(c, optim_apply_equals_per_element_update);
    tcase_add_test(c, table_apply_equals_per_element_update);
    tcase_add_test(c, score_policies);
    tcase_add_test(c, epoch_lru_clock_never_wraps);
    tcase_add_test(c, sketch_never_underestimates);
    tcase_add_test(c, sketch_admits_at_min_count_and_ages);
    tcase_add_test(c, status_names);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    return tu_run(suite());
}

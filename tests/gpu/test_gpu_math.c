/*
 * test_gpu_math.c — the storage layer's shared math (hash.h, admission.h, init.h,
 * optim.h) computed on the GPU by cuda/math_kernels.h against the same EMBER_HD
 * functions run here on the host.
 *
 * Exits 77 (ctest: skipped) where no CUDA device is visible.
 *
 * What "the same" means:
 *   hashes, buckets, digests, groups, sketch indices   bit-identical (integer math;
 *       the bucket's 128-bit product is __umul64hi on the device, __int128 here)
 *   ZEROS, CONSTANT, UNIFORM rows                       bit-identical (only IEEE + and
 *       ×, and the device code does not contract them into FMAs: --fmad=false)
 *   NORMAL, TRUNCATED_NORMAL rows                       within 16·FLT_EPSILON of the
 *       larger of |x|, |mean| and |x − mean|. Box–Muller goes through logf and cosf,
 *       which CUDA computes within 1 and 2 ulp (CUDA Programming Guide, mathematical
 *       functions) and glibc within about 1; through sqrtf and the product that is
 *       at most ~6 ulp of the normal deviate z, and the deviate's share of x is
 *       |x − mean| = |σz|; 16 leaves more than twice that.
 *   optimizer rows (embedding and slots) after each of 10 successive steps, each
 *       side feeding on its own results   |gpu − cpu| ≤ 1e-5 · max(|cpu|, 1):
 *       relative 1e-5, and absolute 1e-5 below magnitude 1, because where a value
 *       comes out of a cancellation (1 − β2^t, n'^-p − n^-p, l1 − |z|) it keeps the
 *       absolute error of its O(1) inputs, and the device's powf is within 2 ulp.
 *       A wrong rule (sign, bias correction, slot) moves values by ≥ lr·|g|, far
 *       above it. Each step prints how many floats came out bit-identical.
 */
#define _POSIX_C_SOURCE 200112L /* setenv */

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/device.h"
#include "cuda/math_kernels.h"
#include "storage/admission.h"
#include "storage/hash.h"
#include "storage/init.h"
#include "storage/optim.h"
#include "test_util.h"

#define NKEYS 100000u

static uint64_t rng_next(uint64_t *s)
{
    *s += EMBER_GOLDEN64;
    return ember_mix64(*s);
}

/* Uniform in [-1, 1). */
static float rng_sym(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* NKEYS keys: the edges first (0, the largest key a table accepts, and a few
 * other boundaries), then pseudo-random ones. */
static uint64_t *make_keys(size_t n)
{
    static const uint64_t edges[] = {
        0, UINT64_C(0xFFFFFFFFFFFFFFFB), 1, UINT64_C(0x7FFFFFFFFFFFFFFF),
        UINT64_C(0x8000000000000000), UINT64_C(0xFFFFFFFF), UINT64_C(0x100000000),
    };
    uint64_t *k = malloc(n * sizeof *k), s = 12345;
    ck_assert_ptr_nonnull(k);
    for (size_t i = 0; i < n; i++)
        k[i] = i < sizeof edges / sizeof edges[0] ? edges[i] : rng_next(&s);
    return k;
}

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- hashes and sketch indices: bit-identical ------------------------------ */

START_TEST(hash_bucket_digest_group_match_cpu)
{
    static const uint64_t buckets[] = {1, 3, 1000003, UINT64_C(1) << 20,
                                       (UINT64_C(1) << 40) + 1, UINT64_MAX};
    uint64_t *keys = make_keys(NKEYS);
    uint64_t *h = malloc(NKEYS * sizeof *h), *b = malloc(NKEYS * sizeof *b);
    uint8_t *d = malloc(NKEYS);
    uint32_t *g = malloc(NKEYS * sizeof *g);
    ember_error err;
    for (size_t nb = 0; nb < sizeof buckets / sizeof buckets[0]; nb++) {
        memset(h, 0xa5, NKEYS * sizeof *h);
        ck_assert_msg(ember_cuda_math_hash(keys, NKEYS, buckets[nb], h, b, d, g, &err) ==
                          EMBER_OK, "%s", err.message);
        for (size_t i = 0; i < NKEYS; i++) {
            uint64_t ch = ember_key_hash(keys[i]);
            ck_assert_msg(h[i] == ch, "hash of key %#llx: gpu %#llx cpu %#llx",
                          (unsigned long long)keys[i], (unsigned long long)h[i],
                          (unsigned long long)ch);
            ck_assert_msg(b[i] == ember_hash_bucket(ch, buckets[nb]),
                          "bucket of key %#llx in %llu buckets", (unsigned long long)keys[i],
                          (unsigned long long)buckets[nb]);
            ck_assert_uint_lt(b[i], buckets[nb]);
            ck_assert_uint_eq(d[i], ember_hash_digest(ch));
            ck_assert_uint_eq(g[i], ember_hash_group(ch));
        }
    }
    free(keys);
    free(h);
    free(b);
    free(d);
    free(g);
}
END_TEST

START_TEST(sketch_index_matches_cpu)
{
    static const uint32_t widths[] = {1, 1u << 10, EMBER_SKETCH_DEFAULT_WIDTH, 1u << 31};
    uint64_t *keys = make_keys(NKEYS);
    uint32_t *idx = malloc((size_t)NKEYS * EMBER_SKETCH_DEPTH * sizeof *idx);
    ember_error err;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        ck_assert_msg(ember_cuda_math_sketch_index(keys, NKEYS, widths[w], idx, &err) == EMBER_OK,
                      "%s", err.message);
        for (size_t i = 0; i < NKEYS; i++)
            for (uint32_t r = 0; r < EMBER_SKETCH_DEPTH; r++)
                ck_assert_msg(idx[i * EMBER_SKETCH_DEPTH + r] ==
                                  ember_sketch_index(keys[i], r, widths[w]),
                              "key %#llx row %u width %u", (unsigned long long)keys[i], r,
                              widths[w]);
    }
    free(keys);
    free(idx);
}
END_TEST

/* ---- initializers ---------------------------------------------------------- */

#define INIT_KEYS 4096u
#define INIT_DIM 67u /* odd: no kernel may assume a multiple of anything */
#define INIT_SEED UINT64_C(42)

/* 1 if one of the truncated-normal draws behind element j came within `tol` of
 * ±2, where the device's last-bit differences could accept a draw that the host
 * refuses (or the reverse) and so pick a different one. */
static int trunc_near_edge(uint64_t base, uint32_t j, float tol)
{
    for (uint32_t d = 0; d < EMBER_TRUNC_MAX_DRAWS; d++) {
        float z = ember_std_normal(ember_init_draw(base, j >> 1, d), j & 1u);
        if (fabsf(fabsf(z) - 2.0f) <= tol)
            return 1;
        if (z >= -2.0f && z <= 2.0f)
            return 0;
    }
    return 0;
}

START_TEST(init_rows_match_cpu)
{
    static const ember_init_config configs[] = {
        {EMBER_INIT_ZEROS, 0.0f, 0.0f},
        {EMBER_INIT_CONSTANT, 0.25f, 0.0f},
        {EMBER_INIT_UNIFORM, -0.05f, 0.05f},
        {EMBER_INIT_NORMAL, 0.5f, 0.1f},
        {EMBER_INIT_NORMAL, 0.0f, 1.0f},
        {EMBER_INIT_TRUNCATED_NORMAL, 0.0f, 1.0f},
        {EMBER_INIT_TRUNCATED_NORMAL, -0.3f, 0.02f},
    };
    const size_t n = INIT_KEYS, total = (size_t)INIT_KEYS * INIT_DIM;
    uint64_t *keys = make_keys(n);
    float *gpu = malloc(total * sizeof *gpu), *cpu = malloc(total * sizeof *cpu);
    ember_error err;
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        const ember_init_config *c = &configs[k];
        int exact = c->kind == EMBER_INIT_ZEROS || c->kind == EMBER_INIT_CONSTANT ||
                    c->kind == EMBER_INIT_UNIFORM;
        size_t identical = 0, skipped = 0;
        float worst = 0.0f; /* largest |gpu - cpu| / scale, in FLT_EPSILONs */
        ck_assert_msg(ember_cuda_math_init_rows(c, INIT_SEED, keys, n, INIT_DIM, gpu, &err) ==
                          EMBER_OK, "%s", err.message);
        for (size_t i = 0; i < n; i++)
            ember_init_row(c, INIT_SEED, keys[i], cpu + i * INIT_DIM, INIT_DIM);
        for (size_t e = 0; e < total; e++) {
            float x = cpu[e], y = gpu[e];
            if (same_bits(x, y)) {
                identical++;
                continue;
            }
            ck_assert_msg(!exact, "init kind %d key %#llx elem %zu: gpu %a cpu %a", c->kind,
                          (unsigned long long)keys[e / INIT_DIM], e % INIT_DIM, y, x);
            float scale = fmaxf(fmaxf(fabsf(x), fabsf(c->a)), fabsf(x - c->a));
            float ulps = fabsf(y - x) / (scale * FLT_EPSILON);
            if (c->kind == EMBER_INIT_TRUNCATED_NORMAL && ulps > 16.0f &&
                trunc_near_edge(ember_init_base(INIT_SEED, keys[e / INIT_DIM]),
                                (uint32_t)(e % INIT_DIM), 64.0f * FLT_EPSILON)) {
                skipped++;
                continue;
            }
            ck_assert_msg(ulps <= 16.0f,
                          "init kind %d (a %g b %g) key %#llx elem %zu: gpu %.9g cpu %.9g, "
                          "%.1f eps of %g",
                          c->kind, c->a, c->b, (unsigned long long)keys[e / INIT_DIM],
                          e % INIT_DIM, y, x, ulps, scale);
            worst = fmaxf(worst, ulps);
        }
        printf("gpu.math init kind %d (a %g, b %g): %zu/%zu bit-identical, worst %.2f eps, "
               "%zu at the ±2 cut skipped\n",
               c->kind, c->a, c->b, identical, total, worst, skipped);
    }
    free(keys);
    free(gpu);
    free(cpu);
}
END_TEST

/* ---- optimizers: 10 successive steps ----------------------------------------- */

#define OPT_ROWS 2048u
#define OPT_DIM 33u
#define OPT_STEPS 10

static void optim_steps(const char *label, const ember_optim_config *c)
{
    const uint32_t rf = ember_row_floats(c->kind, OPT_DIM);
    const size_t nf = (size_t)OPT_ROWS * rf, ng = (size_t)OPT_ROWS * OPT_DIM;
    float *cpu = malloc(nf * sizeof *cpu), *gpu = malloc(nf * sizeof *gpu);
    float *grads = malloc(ng * sizeof *grads);
    uint64_t s = 777;
    ember_error err;

    /* Weights of magnitude [0.5, 1), either sign: Adam at lr 1e-3 cannot carry
     * them near 0, where its powf difference would be a large relative error. */
    for (size_t r = 0; r < OPT_ROWS; r++) {
        float *row = cpu + r * rf;
        for (uint32_t j = 0; j < OPT_DIM; j++) {
            float v = rng_sym(&s);
            row[j] = copysignf(0.5f + 0.5f * fabsf(v), v);
        }
        ember_optim_init_slots(c, row + OPT_DIM, OPT_DIM);
    }
    memcpy(gpu, cpu, nf * sizeof *cpu);

    for (int step = 1; step <= OPT_STEPS; step++) {
        size_t identical = 0;
        float worst = 0.0f;
        for (size_t e = 0; e < ng; e++)
            grads[e] = rng_sym(&s);
        ck_assert_msg(ember_cuda_math_optim_apply(c, gpu, grads, OPT_ROWS, OPT_DIM, &err) ==
                          EMBER_OK, "%s step %d: %s", label, step, err.message);
        for (size_t r = 0; r < OPT_ROWS; r++)
            ember_optim_apply(c, cpu + r * rf, grads + r * OPT_DIM, OPT_DIM);
        for (size_t e = 0; e < nf; e++) {
            float x = cpu[e], y = gpu[e];
            if (same_bits(x, y)) {
                identical++;
                continue;
            }
            float rel = fabsf(y - x) / fmaxf(fabsf(x), 1.0f);
            ck_assert_msg(rel <= 1e-5f, "%s step %d row %zu float %zu: gpu %.9g cpu %.9g (%.3g)",
                          label, step, e / rf, e % rf, y, x, rel);
            worst = fmaxf(worst, rel);
        }
        printf("gpu.math %s step %d: %zu/%zu bit-identical, worst %.3g\n", label, step,
               identical, nf, worst);
    }
    free(cpu);
    free(gpu);
    free(grads);
}

static ember_optim_config optim_config(int kind)
{
    ember_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    return c;
}

START_TEST(sgd_matches_cpu)
{
    ember_optim_config c = optim_config(EMBER_OPTIM_SGD);
    c.lr = 0.01f;
    optim_steps("sgd", &c);
}
END_TEST

START_TEST(adagrad_matches_cpu)
{
    ember_optim_config c = optim_config(EMBER_OPTIM_ADAGRAD);
    c.lr = 0.01f;
    c.eps = 1e-7f;
    c.initial_accumulator = 0.1f;
    optim_steps("adagrad", &c);
}
END_TEST

START_TEST(adam_weight_decay_matches_cpu)
{
    ember_optim_config c = optim_config(EMBER_OPTIM_ADAM);
    c.lr = 1e-3f;
    c.eps = 1e-8f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.weight_decay = 0.1f;
    optim_steps("adam(wd 0.1)", &c);
}
END_TEST

START_TEST(ftrl_matches_cpu)
{
    /* lr_power -0.5 takes the sqrtf path, -0.25 the powf path. */
    static const float powers[] = {-0.5f, -0.25f};
    for (size_t i = 0; i < sizeof powers / sizeof powers[0]; i++) {
        char label[32];
        ember_optim_config c = optim_config(EMBER_OPTIM_FTRL);
        c.lr = 0.5f;
        c.initial_accumulator = 0.1f;
        c.l1 = 0.1f;
        c.l2 = 0.01f;
        c.beta = 1.0f;
        c.lr_power = powers[i];
        snprintf(label, sizeof label, "ftrl(p %g)", powers[i]);
        optim_steps(label, &c);
    }
}
END_TEST

/* ---- argument checks ----------------------------------------------------------- */

START_TEST(bad_arguments_are_refused)
{
    uint64_t key = 7, h, b;
    uint8_t d;
    uint32_t g, idx[EMBER_SKETCH_DEPTH];
    float row[4];
    ember_init_config ic = {EMBER_INIT_UNIFORM, 0.0f, 1.0f};
    ember_optim_config oc = optim_config(EMBER_OPTIM_SGD);
    ember_error err;
    ck_assert_int_eq(ember_cuda_math_sketch_index(&key, 1, 3, idx, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_sketch_index(&key, 1, 0, idx, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_sketch_index(NULL, 1, 8, idx, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_hash(&key, 1, 8, &h, &b, &d, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_init_rows(NULL, 1, &key, 1, 4, row, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_init_rows(&ic, 1, &key, SIZE_MAX / 2, 4, row, &err),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_cuda_math_optim_apply(&oc, row, NULL, 1, 4, &err),
                     EMBER_INVALID_ARGUMENT);
    /* empty batches succeed without touching anything */
    ck_assert_int_eq(ember_cuda_math_hash(NULL, 0, 8, NULL, NULL, NULL, NULL, &err), EMBER_OK);
    ck_assert_int_eq(ember_cuda_math_sketch_index(NULL, 0, 8, NULL, &err), EMBER_OK);
    ck_assert_int_eq(ember_cuda_math_init_rows(&ic, 1, NULL, 0, 4, NULL, &err), EMBER_OK);
    ck_assert_int_eq(ember_cuda_math_optim_apply(&oc, NULL, NULL, 0, 4, &err), EMBER_OK);
    (void)g;
}
END_TEST

static Suite *gpu_math_suite(void)
{
    Suite *s = suite_create("gpu_math");
    TCase *tc = tcase_create("math");
    tcase_add_test(tc, hash_bucket_digest_group_match_cpu);
    tcase_add_test(tc, sketch_index_matches_cpu);
    tcase_add_test(tc, init_rows_match_cpu);
    tcase_add_test(tc, sgd_matches_cpu);
    tcase_add_test(tc, adagrad_matches_cpu);
    tcase_add_test(tc, adam_weight_decay_matches_cpu);
    tcase_add_test(tc, ftrl_matches_cpu);
    tcase_add_test(tc, bad_arguments_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    ember_error err;
    char name[128];
    uint64_t total = 0, free_b = 0;
    int n = 0;
    if (ember_cuda_device_count(&n, &err) != EMBER_OK) {
        fprintf(stderr, "gpu.math: device count failed: %s\n", err.message);
        return 1;
    }
    if (n == 0) {
        printf("SKIPPED: no CUDA device visible\n");
        return 77;
    }
    if (ember_cuda_device_describe(0, name, sizeof name, &total, &free_b, &err) != EMBER_OK) {
        fprintf(stderr, "gpu.math: describe device 0: %s\n", err.message);
        return 1;
    }
    printf("gpu.math on device 0 of %d: %s, %.1f GiB (%.1f free)\n", n, name,
           (double)total / (1u << 30), (double)free_b / (1u << 30));
    fflush(stdout);
    /* The device check above initialised CUDA in this process, and a child
     * forked from it cannot use CUDA: run the tests in-process. */
    setenv("CK_FORK", "no", 1);
    return tu_run(gpu_math_suite());
}

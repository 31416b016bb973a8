/*
 * test_gpu_table.c — the GPU backend (cuda/gpu_table.h) against the CPU backend
 * over long random call sequences.
 *
 * Exits 77 (ctest: skipped) where no CUDA device is visible, after checking that
 * creating a GPU table there fails with UNAVAILABLE, as gpu_table.h promises.
 *
 * Test cases (CK_RUN_CASE=<name> runs one):
 *   equiv     one CPU and one GPU table given the same long random sequences of
 *             every call, with room for every key: after each call the call's keys
 *             read the same from both and the sizes agree; every 100 calls and at
 *             the end, whole exports (rows, scores, versions) and stats agree, and
 *             at the end filtered exports too. Every optimizer; LFU, EPOCH_LFU and
 *             CUSTOM scores; admission; every initializer.
 *   evict     eviction pressure. One key per call: nothing runs in parallel, so
 *             the GPU must give the CPU's contents exactly (same free slot, same
 *             victim: lowest score, first of equals; same CUSTOM refusals).
 *             Batches: keys of one call run in parallel and contents may differ
 *             (gpu_table.h (a)), so what holds for every order of a call's keys is
 *             checked instead.
 *   hybrid    rows in pinned host memory (config.hbm_bytes): the layout, and the
 *             equivalence walk over device, host and mixed rows.
 *   find1     walks of equiv, hybrid and evict again on tables whose find runs
 *             one lane per key (ember_gpu_table_options.find_lanes = 1).
 *
 * Where the GPU may legitimately differ inside one call (gpu_table.h (a)-(c)), the
 * walks avoid exactly that case and say so: no repeated keys in CUSTOM
 * find_or_insert calls; room for every key outside the evict case; an admission
 * sketch too wide to age or collide. Truncated-normal keys whose draws come within
 * a few ulp of the ±2σ cut are left out, since there the GPU may keep another draw.
 * Rows compare as gpu_table_util.h says; values asserted, never durations; each
 * failure names the call, the key, the index and both values.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/gpu_table.h"
#include "gpu_table_util.h"

#define SLOTS EMBER_BUCKET_SLOTS
#define MAX_BATCH 256

/* ---- key sets -------------------------------------------------------------------- */

/* 1 if one of the truncated-normal draws behind element j came within `tol` of
 * ±2, where the device's last-bit differences could accept a draw that the host
 * refuses, or the reverse (as in test_gpu_math.c). */
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

static int key_usable(const ember_table_config *c, uint64_t key)
{
    if (ember_key_is_reserved(key))
        return 0;
    if (c->init.kind != EMBER_INIT_TRUNCATED_NORMAL)
        return 1;
    uint64_t base = ember_init_base(c->seed, key);
    for (uint32_t j = 0; j < c->dim; j++)
        if (trunc_near_edge(base, j, 64.0f * FLT_EPSILON))
            return 0;
    return 1;
}

static uint64_t num_buckets_of(const ember_table_config *c)
{
    return (c->capacity + SLOTS - 1) / SLOTS;
}

/* n distinct keys: 0 and the largest usable key, then pseudo-random ones. The
 * first 16 are the walks' hot set. With `room`, fails unless every bucket of a
 * table with config `c` can hold all of its keys (nothing is ever evicted). */
static uint64_t *universe_make(const ember_table_config *c, uint32_t n, uint64_t salt, int room)
{
    uint64_t *u = malloc(n * sizeof *u), x = salt;
    uint32_t have = 0;
    const uint64_t edges[2] = {0, EMBER_KEY_RESERVED_MIN - 1};
    for (uint32_t e = 0; e < 2 && have < n; e++)
        if (key_usable(c, edges[e]))
            u[have++] = edges[e];
    while (have < n) {
        uint64_t k = ember_mix64(++x);
        int dup = k == edges[0] || k == edges[1] || !key_usable(c, k);
        if (!dup)
            u[have++] = k; /* mix64 is a bijection: distinct inputs, distinct keys */
    }
    if (room) {
        uint64_t nb = num_buckets_of(c);
        uint32_t *cnt = calloc(nb, sizeof *cnt);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t b = ember_hash_bucket(ember_key_hash(u[i]), nb);
            GT_EXPECT(++cnt[b] <= SLOTS, "test setup: bucket %llu of %llu gets > %u keys",
                      (unsigned long long)b, (unsigned long long)nb, SLOTS);
        }
        free(cnt);
    }
    return u;
}

/* A batch of 1..max keys of u[0..un), a quarter from the hot set; repeats
 * removed unless `dupes`. */
static size_t batch_make(uint64_t *rng, const uint64_t *u, uint32_t un, size_t max, int dupes,
                         uint64_t *k)
{
    size_t n = 1 + (size_t)gt_rng_below(rng, max), out = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = gt_rng_below(rng, 4) == 0 ? u[gt_rng_below(rng, 16)]
                                                  : u[gt_rng_below(rng, un)];
        int seen = 0;
        for (size_t j = 0; j < out && !dupes && !seen; j++)
            seen = k[j] == key;
        if (!seen)
            k[out++] = key;
    }
    return out;
}

/* ---- the equivalence walk ------------------------------------------------------------ */

/* Both tables evict down to `target`. Which of several keys with the cut's score go
 * is unspecified on the GPU (gpu_table.h), so the counts must agree exactly and
 * each side must have removed only keys scored at or below everything it kept;
 * then each side drops the keys the other evicted, so they agree again. */
static void evict_to_size_both(ember_table *cpu, ember_table *gpu, uint64_t target, float tol,
                               const char *what)
{
    ember_error err;
    tu_snapshot before, c, g;
    uint64_t size = ember_table_size(cpu), ec = 0, eg = 0;
    tu_snapshot_take(cpu, &before);
    CK(ember_table_evict_to_size(cpu, target, &ec, &err), err);
    CK(ember_table_evict_to_size(gpu, target, &eg, &err), err);
    uint64_t want = size > target ? size - target : 0;
    GT_EXPECT(ec == want && eg == want, "%s: evict_to_size(%llu) from %llu: cpu %llu, gpu %llu",
              what, (unsigned long long)target, (unsigned long long)size,
              (unsigned long long)ec, (unsigned long long)eg);
    tu_snapshot_take(cpu, &c);
    tu_snapshot_take(gpu, &g);
    ck_assert_uint_eq(c.n, size - want);
    ck_assert_uint_eq(g.n, size - want);
    const tu_snapshot *side[2] = {&c, &g};
    for (int s = 0; s < 2; s++) {
        uint64_t min_kept = UINT64_MAX, max_gone = 0;
        for (size_t i = 0; i < side[s]->n; i++)
            min_kept = side[s]->scores[i] < min_kept ? side[s]->scores[i] : min_kept;
        for (size_t i = 0; i < before.n; i++)
            if (tu_snapshot_find(side[s], before.keys[i]) < 0 && before.scores[i] > max_gone)
                max_gone = before.scores[i];
        GT_EXPECT(want == 0 || max_gone <= min_kept,
                  "%s: %s evict_to_size removed a key scored %llu but kept one scored %llu",
                  what, s ? "gpu" : "cpu", (unsigned long long)max_gone,
                  (unsigned long long)min_kept);
    }
    uint64_t *only_c = malloc((c.n + 1) * sizeof *only_c);
    uint64_t *only_g = malloc((g.n + 1) * sizeof *only_g);
    size_t nc = 0, ng = 0;
    for (size_t i = 0; i < c.n; i++)
        if (tu_snapshot_find(&g, c.keys[i]) < 0)
            only_c[nc++] = c.keys[i];
    for (size_t i = 0; i < g.n; i++)
        if (tu_snapshot_find(&c, g.keys[i]) < 0)
            only_g[ng++] = g.keys[i];
    ck_assert_uint_eq(nc, ng);
    uint64_t erased = 0;
    if (nc) {
        CK(ember_table_erase(cpu, only_c, nc, &erased, &err), err);
        ck_assert_uint_eq(erased, nc);
        CK(ember_table_erase(gpu, only_g, ng, &erased, &err), err);
        ck_assert_uint_eq(erased, ng);
    }
    free(only_c);
    free(only_g);
    tu_snapshot_free(&before);
    tu_snapshot_free(&c);
    tu_snapshot_free(&g);
    gt_expect_same_tables(cpu, gpu, tol, 1, what);
}

/* The same random sequence of every call on a CPU and a GPU table of config `c`,
 * which must leave room for all `un` keys. Compared after each call (the call's
 * keys, sizes), every 100 calls (everything) and at the end (everything,
 * filtered exports). */
static void equiv_walk_on(const ember_table_backend *gb, const ember_table_config *c,
                          const char *name, uint32_t un, int steps, uint64_t seed)
{
    ember_error err;
    ember_table *cpu = gt_table(c, gt_cpu()), *gpu = gt_table(c, gb);
    uint64_t *u = universe_make(c, un, seed * 7919, 1);
    uint64_t rng = seed, k[MAX_BATCH], sc[MAX_BATCH], ver[MAX_BATCH];
    uint32_t dim = c->dim, rf = ember_table_config_row_floats(c), epoch = 0;
    float tol = gt_row_tol(c);
    float *v = malloc((size_t)MAX_BATCH * rf * sizeof *v);
    float *oc = malloc((size_t)MAX_BATCH * dim * sizeof *oc);
    float *og = malloc((size_t)MAX_BATCH * dim * sizeof *og);
    uint8_t fc[MAX_BATCH], fg[MAX_BATCH];
    int custom = c->score_policy == EMBER_SCORE_CUSTOM;
    int epochs = c->score_policy == EMBER_SCORE_EPOCH_LFU ||
                 c->score_policy == EMBER_SCORE_EPOCH_LRU;
    unsigned counts[12] = {0};
    char what[200];

    /* What each band of `op` (0..99) calls; the last one compares everything. */
    static const struct {
        unsigned below;
        const char *name;
    } ops[] = {{12, "find"}, {30, "find_or_insert"}, {55, "apply_gradients"},
               {64, "insert_or_assign"}, {71, "assign"}, {78, "accum"}, {85, "erase"},
               {90, "import"}, {93, "evict_below"}, {95, "evict_to_size"}, {100, "compare"}};

    for (int step = 0; step < steps; step++) {
        if (epochs && step % 300 == 0) {
            epoch++;
            ember_table_set_epoch(cpu, epoch);
            ember_table_set_epoch(gpu, epoch);
        }
        unsigned op = (unsigned)gt_rng_below(&rng, 100), band = 0;
        while (op >= ops[band].below)
            band++;
        snprintf(what, sizeof what, "%s step %d (%s)", name, step,
                 step == steps / 2 ? "clear" : ops[band].name);
        /* find_or_insert: a key repeated in one call keeps the score of an
         * unspecified occurrence under CUSTOM (gpu_table.h (b)): no repeats there. */
        int dupes = !(op >= 12 && op < 30 && custom);
        size_t n = batch_make(&rng, u, un, MAX_BATCH, dupes, k);
        for (size_t i = 0; i < n; i++)
            sc[i] = gt_random_score(c->score_policy, epoch, &rng);
        for (size_t i = 0; i < n * dim; i++)
            v[i] = gt_rng_sym(&rng);
        const uint64_t *scores = custom ? sc : NULL;
        uint64_t a = 0, b = 0;
        if (step == steps / 2) {
            CK(ember_table_clear(cpu, &err), err);
            CK(ember_table_clear(gpu, &err), err);
            ck_assert_uint_eq(ember_table_size(gpu), 0);
            counts[11]++;
        } else if (op < 12) {
            CK(ember_table_find(cpu, k, n, oc, fc, &err), err);
            CK(ember_table_find(gpu, k, n, og, fg, &err), err);
            gt_expect_same_flags(k, n, fc, fg, what);
            counts[0]++;
        } else if (op < 30) {
            CK(ember_table_find_or_insert(cpu, k, n, oc, fc, scores, &err), err);
            CK(ember_table_find_or_insert(gpu, k, n, og, fg, scores, &err), err);
            gt_expect_same_insert_flags(k, n, fc, fg, what);
            size_t d = gt_first_diff(oc, og, n * dim, tol);
            GT_EXPECT(d == n * dim, "%s: find_or_insert key %llu element %zu: cpu %.9g, "
                          "gpu %.9g", what, (unsigned long long)k[d / dim], d % dim,
                          d < n * dim ? oc[d] : 0.0f, d < n * dim ? og[d] : 0.0f);
            counts[1]++;
        } else if (op < 55) {
            CK(ember_table_apply_gradients(cpu, k, n, v, scores, &err), err);
            CK(ember_table_apply_gradients(gpu, k, n, v, scores, &err), err);
            counts[2]++;
        } else if (op < 64) {
            CK(ember_table_insert_or_assign(cpu, k, n, v, scores, &err), err);
            CK(ember_table_insert_or_assign(gpu, k, n, v, scores, &err), err);
            counts[3]++;
        } else if (op < 71) {
            CK(ember_table_assign(cpu, k, n, v, fc, scores, &err), err);
            CK(ember_table_assign(gpu, k, n, v, fg, scores, &err), err);
            gt_expect_same_flags(k, n, fc, fg, what);
            counts[4]++;
        } else if (op < 78) {
            CK(ember_table_accum(cpu, k, n, v, fc, &err), err);
            CK(ember_table_accum(gpu, k, n, v, fg, &err), err);
            gt_expect_same_flags(k, n, fc, fg, what);
            counts[5]++;
        } else if (op < 85) {
            CK(ember_table_erase(cpu, k, n, &a, &err), err);
            CK(ember_table_erase(gpu, k, n, &b, &err), err);
            GT_EXPECT(a == b, "%s: erase: cpu %llu, gpu %llu", what, (unsigned long long)a,
                      (unsigned long long)b);
            counts[6]++;
        } else if (op < 90) {
            ember_table_stats st;
            ember_table_stats_get(cpu, &st);
            for (size_t i = 0; i < n; i++) {
                gt_random_row(c, &rng, v + i * rf);
                ver[i] = 1 + gt_rng_below(&rng, st.version + 10);
            }
            CK(ember_table_import(cpu, k, n, v, sc, ver, &err), err);
            CK(ember_table_import(gpu, k, n, v, sc, ver, &err), err);
            counts[7]++;
        } else if (op < 93) {
            uint64_t cut = custom ? gt_rng_below(&rng, UINT64_C(1) << 18)
                                  : ((uint64_t)epoch << 32) | (2 + gt_rng_below(&rng, 3));
            CK(ember_table_evict_below(cpu, cut, &a, &err), err);
            CK(ember_table_evict_below(gpu, cut, &b, &err), err);
            GT_EXPECT(a == b, "%s: evict_below(%llu): cpu %llu, gpu %llu", what,
                      (unsigned long long)cut, (unsigned long long)a, (unsigned long long)b);
            counts[8]++;
        } else if (op < 95) {
            evict_to_size_both(cpu, gpu, ember_table_size(cpu) * 3 / 4, tol, what);
            counts[9]++;
        } else {
            gt_expect_same_tables(cpu, gpu, tol, 1, what);
            counts[10]++;
        }
        GT_EXPECT(ember_table_size(cpu) == ember_table_size(gpu), "%s: size cpu %llu, gpu %llu",
                  what, (unsigned long long)ember_table_size(cpu),
                  (unsigned long long)ember_table_size(gpu));
        gt_expect_same_find(cpu, gpu, k, n, tol, what);
        if (step % 100 == 99) {
            gt_expect_same_tables(cpu, gpu, tol, 1, what);
            gt_expect_same_stats(cpu, gpu, what);
        }
    }
    snprintf(what, sizeof what, "%s at the end", name);
    gt_expect_same_tables(cpu, gpu, tol, 1, what);
    gt_expect_same_stats(cpu, gpu, what);
    gt_expect_same_exports(cpu, gpu, tol, what);
    gt_expect_same_find(cpu, gpu, u, un, tol, what);
    printf("gpu.table %s: %d calls (find %u, find_or_insert %u, apply %u, insert_or_assign %u, "
           "assign %u, accum %u, erase %u, import %u, evict_below %u, evict_to_size %u, "
           "compare %u, clear %u), %llu keys at the end, tolerance %g\n",
           name, steps, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
           counts[6], counts[7], counts[8], counts[9], counts[10], counts[11],
           (unsigned long long)ember_table_size(gpu), (double)tol);
    fflush(stdout);
    free(u);
    free(v);
    free(oc);
    free(og);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}

static void equiv_walk(const ember_table_config *c, const char *name, uint32_t un, int steps,
                       uint64_t seed)
{
    equiv_walk_on(gt_gpu(), c, name, un, steps, seed);
}

/* 32 buckets (4096 slots) for 1500 keys: never full, nothing evicted by inserts. */
#define EQ_CAP (32 * SLOTS)
#define EQ_KEYS 1500
#define EQ_STEPS 1200

START_TEST(equiv_sgd_lfu_uniform)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    equiv_walk(&c, "sgd/lfu/uniform dim 8", EQ_KEYS, EQ_STEPS, 1);
}
END_TEST

START_TEST(equiv_adagrad_custom_uniform)
{
    ember_table_config c = gt_config(5, EQ_CAP, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    equiv_walk(&c, "adagrad/custom/uniform dim 5", EQ_KEYS, EQ_STEPS, 2);
}
END_TEST

START_TEST(equiv_ftrl_lfu_zeros)
{
    ember_table_config c = gt_config(12, EQ_CAP, EMBER_OPTIM_FTRL, EMBER_SCORE_LFU,
                                     EMBER_INIT_ZEROS);
    equiv_walk(&c, "ftrl(p -0.5)/lfu/zeros dim 12", EQ_KEYS, EQ_STEPS, 3);
}
END_TEST

START_TEST(equiv_adam_lfu_normal)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_ADAM, EMBER_SCORE_LFU,
                                     EMBER_INIT_NORMAL);
    equiv_walk(&c, "adam/lfu/normal dim 8", EQ_KEYS, EQ_STEPS, 4);
}
END_TEST

START_TEST(equiv_adam_custom_uniform)
{
    ember_table_config c = gt_config(3, EQ_CAP, EMBER_OPTIM_ADAM, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    c.optim.weight_decay = 0.01f;
    equiv_walk(&c, "adamw/custom/uniform dim 3", EQ_KEYS, EQ_STEPS, 5);
}
END_TEST

START_TEST(equiv_ftrl_custom_truncated_normal)
{
    ember_table_config c = gt_config(7, EQ_CAP, EMBER_OPTIM_FTRL, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_TRUNCATED_NORMAL);
    equiv_walk(&c, "ftrl/custom/truncated normal dim 7", EQ_KEYS, EQ_STEPS, 6);
}
END_TEST

START_TEST(equiv_sgd_epoch_lfu_constant)
{
    ember_table_config c = gt_config(16, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_EPOCH_LFU,
                                     EMBER_INIT_CONSTANT);
    equiv_walk(&c, "sgd/epoch_lfu/constant dim 16", EQ_KEYS, EQ_STEPS, 7);
}
END_TEST

/* Admission at the third sighting; a sketch wide enough that it never ages
 * (the GPU ages at the end of a call, the CPU at the sighting) and that no two
 * keys share all their counters. */
START_TEST(equiv_adagrad_lfu_admission)
{
    ember_table_config c = gt_config(4, EQ_CAP, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.admission.min_count = 3;
    c.admission.sketch_width = 1u << 20;
    equiv_walk(&c, "adagrad/lfu/uniform admission 3 dim 4", EQ_KEYS, EQ_STEPS, 8);
}
END_TEST

/* ---- eviction pressure ------------------------------------------------------------- */

/* One key per call on 2 buckets for 1200 keys: every call runs alone, so the GPU
 * must give the CPU's contents, counters and found flags exactly: same free
 * slot, same victim (lowest score, first of equals), same CUSTOM refusals. */
static void one_key_walk_on(const ember_table_backend *gb, int optim, int policy,
                            const char *name, uint64_t seed)
{
    enum { KEYS = 1200, STEPS = 2500 };
    ember_error err;
    ember_table_config c = gt_config(4, 2 * SLOTS, optim, policy, EMBER_INIT_UNIFORM);
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gb);
    uint64_t rng = seed, ver;
    float v[16], oc[4], og[4];
    uint8_t fc, fg;
    char what[160];
    int custom = policy == EMBER_SCORE_CUSTOM;
    for (int step = 0; step < STEPS; step++) {
        uint64_t key = 1 + (gt_rng_below(&rng, 4) == 0 ? gt_rng_below(&rng, 16)
                                                       : gt_rng_below(&rng, KEYS));
        /* Few distinct scores: ties at the bottom of full buckets are common. */
        uint64_t score = custom ? gt_rng_below(&rng, 64) : 1 + gt_rng_below(&rng, 8);
        const uint64_t *sp = custom ? &score : NULL;
        for (uint32_t j = 0; j < 4; j++)
            v[j] = gt_rng_sym(&rng);
        unsigned op = (unsigned)gt_rng_below(&rng, 100);
        const char *op_name = op < 25 ? "find_or_insert" : op < 55 ? "apply_gradients"
                              : op < 65 ? "insert_or_assign" : op < 70 ? "assign"
                              : op < 75 ? "accum" : op < 85 ? "erase" : op < 90 ? "import"
                              : op < 92 && step % 20 == 0 ? "evict_below" : "find";
        snprintf(what, sizeof what, "%s step %d (%s of key %llu)", name, step, op_name,
                 (unsigned long long)key);
        uint64_t a = 0, b = 0;
        if (op < 25) {
            CK(ember_table_find_or_insert(cpu, &key, 1, oc, &fc, sp, &err), err);
            CK(ember_table_find_or_insert(gpu, &key, 1, og, &fg, sp, &err), err);
            gt_expect_same_flags(&key, 1, &fc, &fg, what);
            GT_EXPECT(!memcmp(oc, og, sizeof oc), "%s: find_or_insert of key %llu", what,
                      (unsigned long long)key);
        } else if (op < 55) {
            CK(ember_table_apply_gradients(cpu, &key, 1, v, sp, &err), err);
            CK(ember_table_apply_gradients(gpu, &key, 1, v, sp, &err), err);
        } else if (op < 65) {
            CK(ember_table_insert_or_assign(cpu, &key, 1, v, sp, &err), err);
            CK(ember_table_insert_or_assign(gpu, &key, 1, v, sp, &err), err);
        } else if (op < 70) {
            CK(ember_table_assign(cpu, &key, 1, v, &fc, sp, &err), err);
            CK(ember_table_assign(gpu, &key, 1, v, &fg, sp, &err), err);
            gt_expect_same_flags(&key, 1, &fc, &fg, what);
        } else if (op < 75) {
            CK(ember_table_accum(cpu, &key, 1, v, &fc, &err), err);
            CK(ember_table_accum(gpu, &key, 1, v, &fg, &err), err);
            gt_expect_same_flags(&key, 1, &fc, &fg, what);
        } else if (op < 85) {
            CK(ember_table_erase(cpu, &key, 1, &a, &err), err);
            CK(ember_table_erase(gpu, &key, 1, &b, &err), err);
            GT_EXPECT(a == b, "%s: erase: cpu %llu, gpu %llu", what, (unsigned long long)a,
                      (unsigned long long)b);
        } else if (op < 90) {
            ember_table_stats st;
            ember_table_stats_get(cpu, &st);
            gt_random_row(&c, &rng, v);
            ver = 1 + gt_rng_below(&rng, st.version + 5);
            CK(ember_table_import(cpu, &key, 1, v, &score, &ver, &err), err);
            CK(ember_table_import(gpu, &key, 1, v, &score, &ver, &err), err);
        } else if (op < 92 && step % 20 == 0) {
            /* Rare: LFU scores grow slowly, and the buckets must stay full. */
            uint64_t cut = custom ? gt_rng_below(&rng, 16) : 2;
            CK(ember_table_evict_below(cpu, cut, &a, &err), err);
            CK(ember_table_evict_below(gpu, cut, &b, &err), err);
            GT_EXPECT(a == b, "%s: evict_below(%llu): cpu %llu, gpu %llu", what,
                      (unsigned long long)cut, (unsigned long long)a, (unsigned long long)b);
        } else {
            CK(ember_table_find(cpu, &key, 1, oc, &fc, &err), err);
            CK(ember_table_find(gpu, &key, 1, og, &fg, &err), err);
            gt_expect_same_flags(&key, 1, &fc, &fg, what);
        }
        GT_EXPECT(ember_table_size(cpu) == ember_table_size(gpu), "%s: size cpu %llu, gpu %llu",
                  what, (unsigned long long)ember_table_size(cpu),
                  (unsigned long long)ember_table_size(gpu));
        gt_expect_same_find(cpu, gpu, &key, 1, 0.0f, what);
        if (step % 100 == 99) {
            gt_expect_same_tables(cpu, gpu, 0.0f, 1, what);
            gt_expect_same_stats(cpu, gpu, what);
        }
    }
    snprintf(what, sizeof what, "%s at the end", name);
    gt_expect_same_tables(cpu, gpu, 0.0f, 1, what);
    gt_expect_same_stats(cpu, gpu, what);
    ember_table_stats st;
    ember_table_stats_get(gpu, &st);
    ck_assert_uint_gt(st.evictions, 0); /* the walk did put buckets under pressure */
    printf("gpu.table %s: %d single-key calls, %llu evictions, %llu refused, %llu evicted, "
           "%llu keys at the end\n", name, STEPS, (unsigned long long)st.evictions,
           (unsigned long long)st.insert_refused, (unsigned long long)st.evicted,
           (unsigned long long)st.size);
    fflush(stdout);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}

START_TEST(evict_one_key_per_call_lfu_matches_cpu)
{
    one_key_walk_on(gt_gpu(), EMBER_OPTIM_SGD, EMBER_SCORE_LFU, "one key per call, sgd/lfu", 11);
}
END_TEST

START_TEST(evict_one_key_per_call_custom_matches_cpu)
{
    one_key_walk_on(gt_gpu(), EMBER_OPTIM_ADAGRAD, EMBER_SCORE_CUSTOM,
                    "one key per call, adagrad/custom", 12);
}
END_TEST

/* Batches under eviction. Every key of call s is written with CUSTOM score s
 * (strictly increasing from call to call), the calls only create or touch keys
 * (find_or_insert, apply_gradients, insert_or_assign: nothing erased), and no
 * call holds SLOTS keys of one bucket. Then for every order in which the keys of
 * each call may run:
 *  - a key present has the score of the last call that named it;
 *  - nothing is refused (no newcomer is below a bucket's lowest);
 *  - a bucket that never filled lost nothing; a full one stays full, its lowest
 *    score never goes down, and every key it lost was its lowest when it went, so
 *    no absent key's last score is above the lowest score kept there;
 * hence each bucket holds keys whose scores are the top min(SLOTS, keys seen)
 * scores seen there: the same multiset on the CPU and on the GPU, even where the
 * keys holding the lowest of them differ. */
#define EB_KEYS 4000
#define EB_BUCKETS 4
#define EB_STEPS 600
#define EB_BATCH 120

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The scores of snapshot `s` by bucket: out[b] (sorted), n[b]. */
static void scores_by_bucket(const tu_snapshot *s, uint64_t out[EB_BUCKETS][SLOTS + 1],
                             unsigned n[EB_BUCKETS])
{
    memset(n, 0, EB_BUCKETS * sizeof *n);
    for (size_t i = 0; i < s->n; i++) {
        uint64_t b = ember_hash_bucket(ember_key_hash(s->keys[i]), EB_BUCKETS);
        GT_EXPECT(n[b] < SLOTS, "bucket %llu holds more than %u keys",
                  (unsigned long long)b, SLOTS);
        out[b][n[b]++] = s->scores[i];
    }
    for (unsigned b = 0; b < EB_BUCKETS; b++)
        qsort(out[b], n[b], sizeof out[b][0], cmp_u64);
}

static void eb_check(ember_table *cpu, ember_table *gpu, const uint64_t *last, int step)
{
    static uint64_t sg[EB_BUCKETS][SLOTS + 1], scpu[EB_BUCKETS][SLOTS + 1];
    static uint64_t seen_sc[EB_BUCKETS][EB_KEYS + 1];
    unsigned ng[EB_BUCKETS], nc[EB_BUCKETS], nseen[EB_BUCKETS] = {0};
    ember_error err;
    tu_snapshot g, c;
    tu_snapshot_take(gpu, &g);
    tu_snapshot_take(cpu, &c);
    GT_EXPECT(g.n == ember_table_size(gpu), "step %d: gpu exports %zu rows, size %llu", step,
              g.n, (unsigned long long)ember_table_size(gpu));
    ck_assert_uint_le(g.n, ember_table_capacity(gpu));
    GT_EXPECT(g.n == c.n, "step %d: gpu holds %zu keys, cpu %zu", step, g.n, c.n);
    scores_by_bucket(&g, sg, ng);
    scores_by_bucket(&c, scpu, nc);
    uint64_t min_kept[EB_BUCKETS];
    for (unsigned b = 0; b < EB_BUCKETS; b++)
        min_kept[b] = ng[b] ? sg[b][0] : UINT64_MAX;
    for (size_t i = 0; i < g.n; i++) {
        uint64_t k = g.keys[i];
        GT_EXPECT(k >= 1 && k <= EB_KEYS && last[k], "step %d: gpu holds key %llu, never "
                      "written", step, (unsigned long long)k);
        GT_EXPECT(g.scores[i] == last[k], "step %d: gpu key %llu scored %llu, last written "
                      "with %llu", step, (unsigned long long)k, (unsigned long long)g.scores[i],
                      (unsigned long long)last[k]);
    }
    uint64_t *keys = malloc(EB_KEYS * sizeof *keys);
    size_t nk = 0;
    for (uint64_t k = 1; k <= EB_KEYS; k++) {
        if (!last[k])
            continue;
        keys[nk++] = k;
        uint64_t b = ember_hash_bucket(ember_key_hash(k), EB_BUCKETS);
        seen_sc[b][nseen[b]++] = last[k];
        if (tu_snapshot_find(&g, k) >= 0)
            continue;
        GT_EXPECT(ng[b] == SLOTS, "step %d: key %llu lost from bucket %llu, which holds "
                      "only %u keys", step, (unsigned long long)k, (unsigned long long)b, ng[b]);
        GT_EXPECT(last[k] <= min_kept[b], "step %d: key %llu (last score %llu) lost from "
                      "bucket %llu, which kept a key scored %llu", step, (unsigned long long)k,
                      (unsigned long long)last[k], (unsigned long long)b,
                      (unsigned long long)min_kept[b]);
    }
    for (unsigned b = 0; b < EB_BUCKETS; b++) {
        qsort(seen_sc[b], nseen[b], sizeof seen_sc[b][0], cmp_u64);
        unsigned want = nseen[b] < SLOTS ? nseen[b] : SLOTS;
        GT_EXPECT(ng[b] == want && nc[b] == want, "step %d: bucket %u holds %u keys on the "
                      "gpu, %u on the cpu, of %u seen", step, b, ng[b], nc[b], nseen[b]);
        for (unsigned i = 0; i < want; i++) {
            uint64_t top = seen_sc[b][nseen[b] - want + i];
            GT_EXPECT(sg[b][i] == top && scpu[b][i] == top,
                      "step %d: bucket %u, %u-th lowest kept score: gpu %llu, cpu %llu, "
                      "top scores seen say %llu", step, b, i, (unsigned long long)sg[b][i],
                      (unsigned long long)scpu[b][i], (unsigned long long)top);
        }
    }
    /* find agrees with the export: stored rows for present keys, initial rows
     * (UNIFORM: exact) for absent ones. */
    float *vals = malloc(nk * 4 * sizeof *vals), init[4];
    uint8_t *found = malloc(nk + 1);
    CK(ember_table_find(gpu, keys, nk, vals, found, &err), err);
    const ember_table_config *cfg = ember_table_config_of(gpu);
    for (size_t i = 0; i < nk; i++) {
        long at = tu_snapshot_find(&g, keys[i]);
        GT_EXPECT(found[i] == (at >= 0), "step %d: find key %llu: found %d, exported %d",
                  step, (unsigned long long)keys[i], found[i], at >= 0);
        const float *want = init;
        if (at >= 0)
            want = g.rows + (size_t)at * g.row_floats;
        else
            ember_init_row(&cfg->init, cfg->seed, keys[i], init, 4);
        GT_EXPECT(!memcmp(vals + i * 4, want, 4 * sizeof(float)),
                  "step %d: find key %llu (found %d) does not return its %s row", step,
                  (unsigned long long)keys[i], found[i], at >= 0 ? "stored" : "initial");
    }
    ember_table_stats st;
    ember_table_stats_get(gpu, &st);
    ck_assert_uint_eq(st.insert_refused, 0);
    ck_assert_uint_eq(st.size, g.n);
    free(vals);
    free(found);
    free(keys);
    tu_snapshot_free(&g);
    tu_snapshot_free(&c);
}

START_TEST(evict_batches_keep_top_scores_per_bucket)
{
    ember_error err;
    ember_table_config c = gt_config(4, EB_BUCKETS * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    ck_assert_uint_eq(num_buckets_of(&c), EB_BUCKETS);
    uint64_t *last = calloc(EB_KEYS + 1, sizeof *last);
    uint64_t rng = 99, k[EB_BATCH], sc[EB_BATCH];
    float v[EB_BATCH * 4], out[EB_BATCH * 4];
    for (int step = 1; step <= EB_STEPS; step++) {
        size_t n = 1 + (size_t)gt_rng_below(&rng, EB_BATCH);
        for (size_t i = 0; i < n; i++) {
            k[i] = 1 + (gt_rng_below(&rng, 4) == 0 ? gt_rng_below(&rng, 16)
                                                   : gt_rng_below(&rng, EB_KEYS));
            sc[i] = (uint64_t)step;
        }
        for (size_t i = 0; i < n * 4; i++)
            v[i] = gt_rng_sym(&rng);
        unsigned op = (unsigned)gt_rng_below(&rng, 100);
        if (op < 40) {
            CK(ember_table_find_or_insert(cpu, k, n, out, NULL, sc, &err), err);
            CK(ember_table_find_or_insert(gpu, k, n, out, NULL, sc, &err), err);
        } else if (op < 75) {
            CK(ember_table_apply_gradients(cpu, k, n, v, sc, &err), err);
            CK(ember_table_apply_gradients(gpu, k, n, v, sc, &err), err);
        } else {
            CK(ember_table_insert_or_assign(cpu, k, n, v, sc, &err), err);
            CK(ember_table_insert_or_assign(gpu, k, n, v, sc, &err), err);
        }
        for (size_t i = 0; i < n; i++)
            last[k[i]] = (uint64_t)step;
        ck_assert_uint_le(ember_table_size(gpu), ember_table_capacity(gpu));
        GT_EXPECT(ember_table_size(cpu) == ember_table_size(gpu), "step %d: size cpu %llu, "
                      "gpu %llu", step, (unsigned long long)ember_table_size(cpu),
                      (unsigned long long)ember_table_size(gpu));
        if (step % 50 == 0)
            eb_check(cpu, gpu, last, step);
    }
    ember_table_stats st;
    ember_table_stats_get(gpu, &st);
    ck_assert_uint_gt(st.evictions, 0);
    printf("gpu.table batches under eviction: %d calls, %llu evictions on the gpu\n", EB_STEPS,
           (unsigned long long)st.evictions);
    fflush(stdout);
    free(last);
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

/* One call of 300 keys into one bucket with distinct CUSTOM scores: in whatever
 * order they run, the 128 highest stay (each of them finds a lower key to evict,
 * and none is ever the lowest of a full bucket), and every other key was
 * evicted or refused. */
START_TEST(evict_one_call_keeps_highest_custom_scores)
{
    ember_error err;
    ember_table_config c = gt_config(1, SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu());
    ck_assert_uint_eq(ember_table_capacity(t), SLOTS);
    enum { N = 300 };
    uint64_t keys[N], scores[N];
    float v[N];
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i + 1;
        scores[i] = (uint64_t)((i * 37) % N) + 1000;
        v[i] = (float)i;
    }
    CK(ember_table_insert_or_assign(t, keys, N, v, scores, &err), err);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size, SLOTS);
    ck_assert_uint_eq(st.evictions + st.insert_refused, N - SLOTS);
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, SLOTS);
    for (size_t i = 0; i < s.n; i++) {
        GT_EXPECT(s.scores[i] >= 1000 + N - SLOTS, "key %llu scored %llu survived",
                  (unsigned long long)s.keys[i], (unsigned long long)s.scores[i]);
        ck_assert_float_eq(s.rows[i], (float)(s.keys[i] - 1));
    }
    tu_snapshot_free(&s);
    /* A lower newcomer is refused, a higher one replaces the lowest. */
    uint64_t k = 9999, low = 1, high = UINT64_C(1) << 30;
    float x = 1.0f;
    uint8_t found;
    CK(ember_table_insert_or_assign(t, &k, 1, &x, &low, &err), err);
    CK(ember_table_find(t, &k, 1, &x, &found, &err), err);
    ck_assert_int_eq(found, 0);
    CK(ember_table_insert_or_assign(t, &k, 1, &x, &high, &err), err);
    CK(ember_table_find(t, &k, 1, &x, &found, &err), err);
    ck_assert_int_eq(found, 1);
    ck_assert_uint_eq(ember_table_size(t), SLOTS);
    ember_table_destroy(t);
}
END_TEST

/* LRU: each call's keys carry the newest score, so none of the last call's keys
 * is evicted (no bucket gets SLOTS of them); nothing is ever refused. */
START_TEST(evict_lru_full_table_keeps_newest)
{
    ember_error err;
    ember_table_config c = gt_config(2, 2 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                     EMBER_INIT_ZEROS);
    ember_table *t = gt_table(&c, gt_gpu());
    float out[2 * 64];
    uint64_t keys[64];
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 64; i++)
            keys[i] = (uint64_t)round * 64 + (uint64_t)i;
        CK(ember_table_find_or_insert(t, keys, 64, out, NULL, NULL, &err), err);
        ck_assert_uint_le(ember_table_size(t), 2 * SLOTS);
    }
    uint8_t found[64];
    CK(ember_table_find(t, keys, 64, out, found, &err), err);
    for (int i = 0; i < 64; i++)
        GT_EXPECT(found[i] == 1, "key %llu of the last call was evicted",
                  (unsigned long long)keys[i]);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size, 2 * SLOTS);
    ck_assert_uint_eq(st.size + st.evictions, 40 * 64);
    ck_assert_uint_eq(st.insert_refused, 0);
    ember_table_destroy(t);
}
END_TEST

/* ---- hybrid: rows in pinned host memory ------------------------------------------------ */

/* The layout of a GPU table of config `c`: all slots counted once, device rows
 * within hbm_bytes, and some rows on the host when hbm_bytes is below the total. */
static void expect_layout(ember_table *t, const ember_table_config *c)
{
    ember_gpu_table *g = ember_gpu_table_of(t);
    ck_assert_ptr_nonnull(g);
    ember_gpu_layout l;
    memset(&l, 0xa5, sizeof l);
    ember_gpu_table_layout(g, &l);
    uint64_t slots = ember_table_capacity(t), rb = gt_row_bytes(c);
    ck_assert_uint_eq(l.row_stride, (ember_table_config_row_floats(c) + 3u) & ~3u);
    ck_assert_uint_eq(l.rows_hbm + l.rows_host, slots);
    if (c->hbm_bytes == 0 || c->hbm_bytes >= slots * rb) {
        ck_assert_uint_eq(l.rows_host, 0);
    } else {
        GT_EXPECT(l.rows_hbm * rb <= c->hbm_bytes, "%llu device rows of %llu bytes exceed "
                      "hbm_bytes %llu", (unsigned long long)l.rows_hbm, (unsigned long long)rb,
                      (unsigned long long)c->hbm_bytes);
        ck_assert_uint_gt(l.rows_host, 0);
        ck_assert_uint_ge(l.bytes_host, l.rows_host * rb);
        ember_table_stats st;
        ember_table_stats_get(t, &st);
        ck_assert_uint_ge(st.bytes_host, l.rows_host * rb);
    }
    ck_assert_uint_ge(l.bytes_device, l.rows_hbm * rb);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_gt(st.bytes_device, 0);
    printf("gpu.table layout: hbm_bytes %llu: %llu rows in device memory, %llu in host memory, "
           "stride %u floats, %llu device bytes, %llu host bytes\n",
           (unsigned long long)c->hbm_bytes, (unsigned long long)l.rows_hbm,
           (unsigned long long)l.rows_host, l.row_stride, (unsigned long long)l.bytes_device,
           (unsigned long long)l.bytes_host);
    fflush(stdout);
}

START_TEST(hybrid_layout)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    uint64_t total = EQ_CAP * gt_row_bytes(&c);
    const uint64_t budgets[] = {0, 1, 3 * SLOTS * gt_row_bytes(&c) + 100, total - 1, total,
                                total * 4};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        c.hbm_bytes = budgets[i];
        ember_table *t = gt_table(&c, gt_gpu());
        expect_layout(t, &c);
        ember_table_destroy(t);
    }
}
END_TEST

/* Three buckets' rows (plus change) in device memory, the rest on the host. */
START_TEST(hybrid_equiv_adagrad_lfu)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.hbm_bytes = 3 * SLOTS * gt_row_bytes(&c) + 100;
    ember_table *t = gt_table(&c, gt_gpu());
    expect_layout(t, &c);
    ember_table_destroy(t);
    equiv_walk(&c, "hybrid (3 buckets in hbm) adagrad/lfu/uniform dim 8", EQ_KEYS, EQ_STEPS, 21);
}
END_TEST

/* Every row on the host (hbm_bytes below one row). */
START_TEST(hybrid_equiv_adam_custom_all_host)
{
    ember_table_config c = gt_config(6, EQ_CAP, EMBER_OPTIM_ADAM, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_NORMAL);
    c.hbm_bytes = 1;
    ember_table *t = gt_table(&c, gt_gpu());
    expect_layout(t, &c);
    ember_table_destroy(t);
    equiv_walk(&c, "hybrid (all rows on the host) adam/custom/normal dim 6", EQ_KEYS, EQ_STEPS,
               22);
}
END_TEST

/* Half the buckets' rows in device memory; dim 33, a row of 33 floats padded to 36. */
START_TEST(hybrid_equiv_sgd_lfu_half)
{
    ember_table_config c = gt_config(33, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.hbm_bytes = EQ_CAP / 2 * gt_row_bytes(&c);
    ember_table *t = gt_table(&c, gt_gpu());
    expect_layout(t, &c);
    ember_table_destroy(t);
    equiv_walk(&c, "hybrid (half in hbm) sgd/lfu/uniform dim 33", EQ_KEYS, EQ_STEPS / 2, 23);
}
END_TEST

/* ---- online growth and TTL (storage/table.h): the same on both backends -------------- */

/* Tables that start at one bucket and double to EQ_CAP during the walk: both
 * backends grow at the same calls and hold the same rows throughout. */
START_TEST(grow_equiv_adagrad_lfu)
{
    ember_table_config c = gt_config(8, SLOTS, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.max_capacity = EQ_CAP;
    equiv_walk(&c, "growing 1 -> 32 buckets adagrad/lfu/uniform dim 8", EQ_KEYS, EQ_STEPS, 31);
}
END_TEST

/* Growth of a hybrid table: the budget stays, so the new buckets' rows go to the host. */
START_TEST(grow_equiv_hybrid_sgd_custom)
{
    ember_table_config c = gt_config(16, 2 * SLOTS, EMBER_OPTIM_SGD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    c.max_capacity = EQ_CAP;
    c.hbm_bytes = 2 * SLOTS * gt_row_bytes(&c);
    equiv_walk(&c, "growing hybrid sgd/custom/uniform dim 16", EQ_KEYS, EQ_STEPS, 32);
}
END_TEST

/* TTL on both backends: the same writes and expire times remove the same rows. */
START_TEST(ttl_equiv)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_ADAM, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.ttl_seconds = 10;
    ember_table *cpu = gt_table(&c, gt_cpu()), *gpu = gt_table(&c, gt_gpu());
    enum { N = 256 };
    uint64_t keys[N], rng = 5, gc = 0, gg = 0;
    float g[N * 8];
    ember_error err;
    const uint64_t sec = UINT64_C(1000000000), t0 = 1000 * sec;
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < N; i++)
            keys[i] = gt_rng_below(&rng, 4000);
        for (int i = 0; i < N * 8; i++)
            g[i] = gt_rng_sym(&rng);
        CK(ember_table_apply_gradients(cpu, keys, N, g, NULL, &err), err);
        CK(ember_table_apply_gradients(gpu, keys, N, g, NULL, &err), err);
        uint64_t now = t0 + (uint64_t)round * sec;
        CK(ember_table_expire(cpu, now, &gc, &err), err);
        CK(ember_table_expire(gpu, now, &gg, &err), err);
        GT_EXPECT(gc == gg, "round %d: cpu expired %llu, gpu %llu", round,
                  (unsigned long long)gc, (unsigned long long)gg);
    }
    ember_table_stats sc, sg;
    ember_table_stats_get(cpu, &sc);
    ember_table_stats_get(gpu, &sg);
    GT_EXPECT(sc.expired > 0 && sc.expired == sg.expired, "expired cpu %llu gpu %llu",
              (unsigned long long)sc.expired, (unsigned long long)sg.expired);
    gt_expect_same_tables(cpu, gpu, gt_row_tol(&c), 1, "ttl");
    ember_table_destroy(cpu);
    ember_table_destroy(gpu);
}
END_TEST

/* ---- find with one lane per key (find_lanes = 1) -------------------------------------- */

/* The walks again on tables whose find runs one lane per key and moves rows by
 * warp (gpu_table.h: experimental): every call's keys are found after it, so
 * find is the most frequent call of each walk. Rows of 16 bytes (dim 8, 64) and
 * not (dim 5, 37: the scalar path, and rows wider than a warp), in device and
 * host memory; and full buckets, where probe chains cross every group, erased
 * slots lie on them, and a group with an EMPTY byte must end the search. */
static const ember_table_backend *gpu_find1(void)
{
    const ember_table_backend *b = ember_table_gpu_backend_find_lanes(1);
    ck_assert_ptr_nonnull(b);
    return b;
}

START_TEST(find1_equiv_sgd_lfu_uniform)
{
    ember_table_config c = gt_config(8, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 sgd/lfu/uniform dim 8", EQ_KEYS, EQ_STEPS, 41);
}
END_TEST

START_TEST(find1_equiv_adagrad_custom_uniform)
{
    ember_table_config c = gt_config(5, EQ_CAP, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_CUSTOM,
                                     EMBER_INIT_UNIFORM);
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 adagrad/custom/uniform dim 5", EQ_KEYS,
                  EQ_STEPS, 42);
}
END_TEST

START_TEST(find1_equiv_adam_lfu_normal_wide)
{
    ember_table_config c = gt_config(64, EQ_CAP, EMBER_OPTIM_ADAM, EMBER_SCORE_LFU,
                                     EMBER_INIT_NORMAL);
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 adam/lfu/normal dim 64", EQ_KEYS,
                  EQ_STEPS / 2, 43);
}
END_TEST

START_TEST(find1_equiv_sgd_truncated_normal_dim37)
{
    ember_table_config c = gt_config(37, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_TRUNCATED_NORMAL);
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 sgd/lfu/truncated normal dim 37", EQ_KEYS,
                  EQ_STEPS / 2, 44);
}
END_TEST

START_TEST(find1_hybrid_equiv_sgd_lfu_half)
{
    ember_table_config c = gt_config(33, EQ_CAP, EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.hbm_bytes = EQ_CAP / 2 * gt_row_bytes(&c);
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 hybrid (half in hbm) sgd/lfu/uniform dim 33",
                  EQ_KEYS, EQ_STEPS / 2, 45);
}
END_TEST

START_TEST(find1_grow_equiv_adagrad_lfu)
{
    ember_table_config c = gt_config(8, SLOTS, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LFU,
                                     EMBER_INIT_UNIFORM);
    c.max_capacity = EQ_CAP;
    equiv_walk_on(gpu_find1(), &c, "find_lanes 1 growing 1 -> 32 buckets adagrad/lfu dim 8",
                  EQ_KEYS, EQ_STEPS, 46);
}
END_TEST

START_TEST(find1_one_key_per_call_lfu_matches_cpu)
{
    one_key_walk_on(gpu_find1(), EMBER_OPTIM_SGD, EMBER_SCORE_LFU,
                    "find_lanes 1 one key per call, sgd/lfu", 47);
}
END_TEST

START_TEST(find1_one_key_per_call_custom_matches_cpu)
{
    one_key_walk_on(gpu_find1(), EMBER_OPTIM_ADAGRAD, EMBER_SCORE_CUSTOM,
                    "find_lanes 1 one key per call, adagrad/custom", 48);
}
END_TEST

/* ---- the suite ------------------------------------------------------------------------ */

static Suite *gpu_table_suite(void)
{
    Suite *s = suite_create("gpu_table");
    TCase *tc;

    tc = tcase_create("equiv");
    tcase_add_test(tc, equiv_sgd_lfu_uniform);
    tcase_add_test(tc, equiv_adagrad_custom_uniform);
    tcase_add_test(tc, equiv_ftrl_lfu_zeros);
    tcase_add_test(tc, equiv_adam_lfu_normal);
    tcase_add_test(tc, equiv_adam_custom_uniform);
    tcase_add_test(tc, equiv_ftrl_custom_truncated_normal);
    tcase_add_test(tc, equiv_sgd_epoch_lfu_constant);
    tcase_add_test(tc, equiv_adagrad_lfu_admission);
    suite_add_tcase(s, tc);

    tc = tcase_create("evict");
    tcase_add_test(tc, evict_one_key_per_call_lfu_matches_cpu);
    tcase_add_test(tc, evict_one_key_per_call_custom_matches_cpu);
    tcase_add_test(tc, evict_batches_keep_top_scores_per_bucket);
    tcase_add_test(tc, evict_one_call_keeps_highest_custom_scores);
    tcase_add_test(tc, evict_lru_full_table_keeps_newest);
    suite_add_tcase(s, tc);

    tc = tcase_create("hybrid");
    tcase_add_test(tc, hybrid_layout);
    tcase_add_test(tc, hybrid_equiv_adagrad_lfu);
    tcase_add_test(tc, hybrid_equiv_adam_custom_all_host);
    tcase_add_test(tc, hybrid_equiv_sgd_lfu_half);
    tcase_add_test(tc, grow_equiv_adagrad_lfu);
    tcase_add_test(tc, grow_equiv_hybrid_sgd_custom);
    tcase_add_test(tc, ttl_equiv);
    suite_add_tcase(s, tc);

    tc = tcase_create("find1");
    tcase_add_test(tc, find1_equiv_sgd_lfu_uniform);
    tcase_add_test(tc, find1_equiv_adagrad_custom_uniform);
    tcase_add_test(tc, find1_equiv_adam_lfu_normal_wide);
    tcase_add_test(tc, find1_equiv_sgd_truncated_normal_dim37);
    tcase_add_test(tc, find1_hybrid_equiv_sgd_lfu_half);
    tcase_add_test(tc, find1_grow_equiv_adagrad_lfu);
    tcase_add_test(tc, find1_one_key_per_call_lfu_matches_cpu);
    tcase_add_test(tc, find1_one_key_per_call_custom_matches_cpu);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return gt_main("gpu.table", gpu_table_suite);
}

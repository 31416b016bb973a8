/*
 * gpu_table_util.c — helpers of the GPU table tests (gpu_table_util.h).
 */
#define _GNU_SOURCE /* setenv */
#include "gpu_table_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/device.h"
#include "cuda/gpu_table.h"

#define SLOTS EMBER_BUCKET_SLOTS

/* ---- small helpers ----------------------------------------------------------- */

uint64_t gt_rng_next(uint64_t *s)
{
    *s += EMBER_GOLDEN64;
    return ember_mix64(*s);
}

uint64_t gt_rng_below(uint64_t *s, uint64_t n)
{
    return gt_rng_next(s) % n;
}

/* Uniform in [-1, 1) and in [0, 1), 24 bits. */
float gt_rng_sym(uint64_t *s)
{
    return (float)(gt_rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

float gt_rng_unit(uint64_t *s)
{
    return (float)(gt_rng_next(s) >> 40) * (1.0f / 16777216.0f);
}

const ember_table_backend *gt_gpu(void)
{
    return ember_table_gpu_backend();
}

const ember_table_backend *gt_cpu(void)
{
    return ember_table_cpu_backend();
}

/* A config with the test's usual hyper-parameters; the initializer's a and b
 * are set for its kind. */
ember_table_config gt_config(uint32_t dim, uint64_t capacity, int optim, int policy,
                             int init)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = capacity;
    c.optim.kind = optim;
    c.optim.lr = optim == EMBER_OPTIM_ADAM ? 0.01f : 0.05f;
    c.optim.l1 = 0.01f;
    c.optim.l2 = 0.001f;
    c.optim.beta = 1.0f;
    c.score_policy = policy;
    c.init.kind = init;
    switch (init) {
    case EMBER_INIT_CONSTANT:
        c.init.a = 0.25f;
        break;
    case EMBER_INIT_UNIFORM:
        c.init.a = -0.5f;
        c.init.b = 0.5f;
        break;
    case EMBER_INIT_NORMAL:
    case EMBER_INIT_TRUNCATED_NORMAL:
        c.init.a = 0.1f;
        c.init.b = 0.5f;
        break;
    default:
        break;
    }
    c.seed = 4242;
    return c;
}

ember_table *gt_table(const ember_table_config *c, const ember_table_backend *b)
{
    ember_table *t = NULL;
    ember_error err;
    CK(ember_table_create(c, b, &t, &err), err);
    return t;
}

/* The tolerance for rows of tables with config `c`: 0 = bit-identical. */
float gt_row_tol(const ember_table_config *c)
{
    if (c->optim.kind == EMBER_OPTIM_ADAM)
        return GT_ROW_TOL;
    if (c->optim.kind == EMBER_OPTIM_FTRL && c->optim.lr_power != -0.5f)
        return GT_ROW_TOL;
    if (c->init.kind == EMBER_INIT_NORMAL || c->init.kind == EMBER_INIT_TRUNCATED_NORMAL)
        return GT_ROW_TOL;
    return 0.0f;
}

/* x (cpu) and y (gpu) agree: the same bits, or with tol > 0, within tol·max(|x|, 1). */
static int close_enough(float x, float y, float tol)
{
    if (!memcmp(&x, &y, sizeof x))
        return 1;
    return tol > 0.0f && isfinite(x) && isfinite(y) && fabsf(x - y) <= tol * fmaxf(fabsf(x), 1.0f);
}

/* Index of the first float of a[n] and b[n] that disagrees, or n. */
size_t gt_first_diff(const float *a, const float *b, size_t n, float tol)
{
    for (size_t i = 0; i < n; i++)
        if (!close_enough(a[i], b[i], tol))
            return i;
    return n;
}

/* ---- comparing two tables ------------------------------------------------------- */

/* `c` (cpu) and `g` (gpu) snapshots hold the same keys, rows within `tol`,
 * versions, and (if `scores`) scores. */
void gt_expect_same_snapshot(const tu_snapshot *c, const tu_snapshot *g, float tol,
                             int scores, const char *what)
{
    size_t i = 0, j = 0, rf = c->row_floats;
    ck_assert_uint_eq(c->row_floats, g->row_floats);
    while (i < c->n || j < g->n) {
        /* Both are sorted by key: walk them side by side. */
        GT_EXPECT(!(j >= g->n || (i < c->n && c->keys[i] < g->keys[j])),
                  "%s: key %llu is in the cpu table only (cpu %zu rows, gpu %zu)", what,
                  (unsigned long long)c->keys[i], c->n, g->n);
        GT_EXPECT(!(i >= c->n || g->keys[j] < c->keys[i]),
                  "%s: key %llu is in the gpu table only (cpu %zu rows, gpu %zu)", what,
                  (unsigned long long)g->keys[j], c->n, g->n);
        uint64_t k = c->keys[i];
        const float *rc = c->rows + i * rf, *rg = g->rows + j * rf;
        size_t d = gt_first_diff(rc, rg, rf, tol);
        GT_EXPECT(d == rf, "%s: key %llu float %zu of %zu: cpu %.9g (%a), gpu %.9g (%a)",
                  what, (unsigned long long)k, d, rf, d < rf ? rc[d] : 0.0f,
                  d < rf ? rc[d] : 0.0f, d < rf ? rg[d] : 0.0f, d < rf ? rg[d] : 0.0f);
        GT_EXPECT(c->versions[i] == g->versions[j], "%s: key %llu version: cpu %llu, gpu %llu",
                  what, (unsigned long long)k, (unsigned long long)c->versions[i],
                  (unsigned long long)g->versions[j]);
        GT_EXPECT(!scores || c->scores[i] == g->scores[j],
                  "%s: key %llu score: cpu %llu, gpu %llu", what, (unsigned long long)k,
                  (unsigned long long)c->scores[i], (unsigned long long)g->scores[j]);
        i++;
        j++;
    }
}

void gt_expect_same_tables(ember_table *cpu, ember_table *gpu, float tol, int scores,
                           const char *what)
{
    tu_snapshot c, g;
    tu_snapshot_take(cpu, &c);
    tu_snapshot_take(gpu, &g);
    gt_expect_same_snapshot(&c, &g, tol, scores, what);
    GT_EXPECT(g.n == ember_table_size(gpu), "%s: gpu exports %zu rows, size says %llu",
              what, g.n, (unsigned long long)ember_table_size(gpu));
    tu_snapshot_free(&c);
    tu_snapshot_free(&g);
}

void gt_expect_same_stats(ember_table *cpu, ember_table *gpu, const char *what)
{
    ember_table_stats c, g;
    ember_table_stats_get(cpu, &c);
    ember_table_stats_get(gpu, &g);
#define SAME(f)                                                                           \
    GT_EXPECT(c.f == g.f, "%s: stats." #f ": cpu %llu, gpu %llu", what,               \
                  (unsigned long long)c.f, (unsigned long long)g.f)
    SAME(size);
    SAME(capacity);
    SAME(num_buckets);
    SAME(version);
    SAME(evictions);
    SAME(evicted);
    SAME(insert_refused);
    SAME(admission_drops);
    SAME(nonfinite_zeroed);
#undef SAME
    ck_assert_uint_le(g.size, g.capacity);
    ck_assert_uint_gt(g.bytes_device, 0);
}

/* find of keys[n] gives the same found flags and embeddings on both tables. */
void gt_expect_same_find(ember_table *cpu, ember_table *gpu, const uint64_t *keys, size_t n,
                         float tol, const char *what)
{
    uint32_t dim = ember_table_dim(cpu);
    float *vc = malloc(n * dim * sizeof *vc), *vg = malloc(n * dim * sizeof *vg);
    uint8_t *fc = malloc(n), *fg = malloc(n);
    ember_error err;
    CK(ember_table_find(cpu, keys, n, vc, fc, &err), err);
    CK(ember_table_find(gpu, keys, n, vg, fg, &err), err);
    for (size_t i = 0; i < n; i++)
        GT_EXPECT(fc[i] == fg[i], "%s: find key %llu (index %zu): cpu found %d, gpu %d",
                  what, (unsigned long long)keys[i], i, fc[i], fg[i]);
    size_t d = gt_first_diff(vc, vg, n * dim, tol);
    GT_EXPECT(d == n * dim, "%s: find key %llu (index %zu) element %zu: cpu %.9g, gpu %.9g",
              what, (unsigned long long)keys[d / dim], d / dim, d % dim,
              d < n * dim ? vc[d] : 0.0f, d < n * dim ? vg[d] : 0.0f);
    free(vc);
    free(vg);
    free(fc);
    free(fg);
}

void gt_expect_same_flags(const uint64_t *keys, size_t n, const uint8_t *fc,
                          const uint8_t *fg, const char *what)
{
    for (size_t i = 0; i < n; i++)
        GT_EXPECT(fc[i] == fg[i], "%s: key %llu (index %zu): cpu found %d, gpu %d", what,
                  (unsigned long long)keys[i], i, fc[i], fg[i]);
}

/* find_or_insert's found flags where keys may repeat inside the call: which
 * occurrence of a new key reports found = 0 is unspecified on the GPU
 * (gpu_table.h (b)), so each distinct key's count of zeros is compared. */
void gt_expect_same_insert_flags(const uint64_t *keys, size_t n, const uint8_t *fc,
                                 const uint8_t *fg, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        int first = 1;
        for (size_t j = 0; j < i && first; j++)
            first = keys[j] != keys[i];
        if (!first)
            continue;
        unsigned zc = 0, zg = 0;
        for (size_t j = i; j < n; j++)
            if (keys[j] == keys[i]) {
                zc += !fc[j];
                zg += !fg[j];
            }
        GT_EXPECT(zc == zg,
                  "%s: key %llu (first at index %zu): found = 0 at %u occurrences on the "
                  "cpu, %u on the gpu", what, (unsigned long long)keys[i], i, zc, zg);
    }
}

/* A row an import could bring: optimizer slots within their domains. */
void gt_random_row(const ember_table_config *c, uint64_t *rng, float *row)
{
    uint32_t d = c->dim;
    for (uint32_t j = 0; j < d; j++)
        row[j] = gt_rng_sym(rng);
    switch (c->optim.kind) {
    case EMBER_OPTIM_ADAGRAD:
        for (uint32_t j = 0; j < d; j++)
            row[d + j] = 0.1f + gt_rng_unit(rng);
        break;
    case EMBER_OPTIM_ADAM:
        for (uint32_t j = 0; j < d; j++) {
            row[d + j] = 0.1f * gt_rng_sym(rng);
            row[2 * d + j] = 0.01f * gt_rng_unit(rng);
        }
        row[3 * d] = (float)(1 + gt_rng_below(rng, 20));
        break;
    case EMBER_OPTIM_FTRL:
        for (uint32_t j = 0; j < d; j++) {
            row[d + j] = gt_rng_sym(rng);
            row[2 * d + j] = 0.1f + gt_rng_unit(rng);
        }
        break;
    default:
        break;
    }
}

/* A score for a key of a table with policy `policy` in epoch `epoch`. */
uint64_t gt_random_score(int policy, uint32_t epoch, uint64_t *rng)
{
    switch (policy) {
    case EMBER_SCORE_CUSTOM:
        return gt_rng_below(rng, UINT64_C(1) << 20);
    case EMBER_SCORE_EPOCH_LFU:
        return ((uint64_t)epoch << 32) | (1 + gt_rng_below(rng, 40));
    default:
        return 1 + gt_rng_below(rng, 40);
    }
}

uint64_t gt_row_bytes(const ember_table_config *c)
{
    return (uint64_t)((ember_table_config_row_floats(c) + 3u) & ~3u) * sizeof(float);
}

/* Exports rows passing `f` in pages of `max_rows`, sorted by key into *s
 * (row_floats = the width exported). Checks that each page holds at most
 * max_rows rows and moves the cursor on. */
void gt_export_filtered(ember_table *t, const ember_export_filter *f, size_t max_rows,
                        tu_snapshot *s)
{
    ember_error err;
    uint32_t w = f->full_rows ? ember_table_row_floats(t) : ember_table_dim(t);
    size_t cap = ember_table_size(t) + max_rows, n = 0;
    uint64_t *keys = malloc(cap * sizeof *keys), *sc = malloc(cap * sizeof *sc);
    uint64_t *ver = malloc(cap * sizeof *ver);
    float *rows = malloc(cap * w * sizeof *rows);
    uint64_t cursor = 0, end = ember_table_export_end(t);
    while (cursor < end) {
        uint64_t was = cursor;
        size_t got = 0;
        ck_assert_uint_le(n + max_rows, cap);
        CK(ember_table_export(t, f, &cursor, max_rows, keys + n, rows + n * w, sc + n, ver + n,
                              &got, &err), err);
        GT_EXPECT(cursor > was && cursor <= end, "export cursor %llu -> %llu (end %llu)",
                  (unsigned long long)was, (unsigned long long)cursor,
                  (unsigned long long)end);
        ck_assert_uint_le(got, max_rows);
        for (size_t i = n; i < n + got; i++) {
            GT_EXPECT(sc[i] >= f->min_score && ver[i] > f->after_version,
                      "export key %llu (score %llu, version %llu) passed filter min_score "
                      "%llu, after_version %llu", (unsigned long long)keys[i],
                      (unsigned long long)sc[i], (unsigned long long)ver[i],
                      (unsigned long long)f->min_score, (unsigned long long)f->after_version);
        }
        n += got;
    }
    /* Sort by key (insertion into a fresh snapshot; n is small here). */
    s->n = n;
    s->row_floats = w;
    s->keys = malloc((n + 1) * sizeof *s->keys);
    s->scores = malloc((n + 1) * sizeof *s->scores);
    s->versions = malloc((n + 1) * sizeof *s->versions);
    s->rows = malloc((n * w + 1) * sizeof *s->rows);
    size_t *order = malloc((n + 1) * sizeof *order);
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && keys[order[j - 1]] > keys[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (size_t i = 0; i < n; i++) {
        s->keys[i] = keys[order[i]];
        s->scores[i] = sc[order[i]];
        s->versions[i] = ver[order[i]];
        memcpy(s->rows + i * w, rows + order[i] * w, w * sizeof(float));
    }
    free(order);
    free(keys);
    free(sc);
    free(ver);
    free(rows);
}

/* Filtered exports of both tables agree, and a dim-only export is the first dim
 * floats of the full one. */
void gt_expect_same_exports(ember_table *cpu, ember_table *gpu, float tol, const char *what)
{
    ember_table_stats st;
    ember_table_stats_get(cpu, &st);
    tu_snapshot all_c;
    tu_snapshot_take(cpu, &all_c);
    uint64_t median = all_c.n ? all_c.scores[all_c.n / 2] : 0;
    tu_snapshot_free(&all_c);
    const ember_export_filter filters[] = {
        {0, 0, 0}, {0, 0, 1}, {median, 0, 0}, {0, st.version / 2, 1}, {median, st.version / 3, 0},
    };
    for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
        char label[160];
        snprintf(label, sizeof label, "%s, export filter %zu (min_score %llu, after_version "
                 "%llu, full_rows %d)", what, f, (unsigned long long)filters[f].min_score,
                 (unsigned long long)filters[f].after_version, filters[f].full_rows);
        tu_snapshot c, g;
        gt_export_filtered(cpu, &filters[f], SLOTS, &c);
        gt_export_filtered(gpu, &filters[f], f % 2 ? 4096 : SLOTS, &g);
        gt_expect_same_snapshot(&c, &g, tol, 1, label);
        tu_snapshot_free(&c);
        tu_snapshot_free(&g);
    }
    /* dim-only rows are the head of full rows */
    tu_snapshot head, full;
    ember_export_filter hf = {0, 0, 0}, ff = {0, 0, 1};
    gt_export_filtered(gpu, &hf, SLOTS, &head);
    gt_export_filtered(gpu, &ff, SLOTS, &full);
    ck_assert_uint_eq(head.n, full.n);
    for (size_t i = 0; i < head.n; i++)
        GT_EXPECT(!memcmp(head.rows + i * head.row_floats, full.rows + i * full.row_floats,
                          head.row_floats * sizeof(float)),
                      "%s: gpu dim-only export of key %llu is not the head of its full row",
                      what, (unsigned long long)head.keys[i]);
    tu_snapshot_free(&head);
    tu_snapshot_free(&full);
}

int gt_main(const char *name, Suite *(*make_suite)(void))
{
    ember_error err;
    char dev_name[128];
    uint64_t total = 0, free_b = 0;
    int n = 0;
    if (ember_cuda_device_count(&n, &err) != EMBER_OK) {
        fprintf(stderr, "%s: device count failed: %s\n", name, err.message);
        return 1;
    }
    if (n == 0) {
        /* Without a GPU the backend must say so, not crash or claim success. */
        ember_table_config c = gt_config(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU,
                                         EMBER_INIT_ZEROS);
        ember_table *t = NULL;
        int rc = ember_table_create(&c, gt_gpu(), &t, &err);
        if (rc != EMBER_UNAVAILABLE) {
            fprintf(stderr, "%s: without a GPU, creating a GPU table gave %s (%s), not "
                    "UNAVAILABLE\n", name, ember_status_name(rc), rc ? err.message : "");
            ember_table_destroy(t);
            return 1;
        }
        printf("SKIPPED: no CUDA device visible (creating a GPU table: UNAVAILABLE: %s)\n",
               err.message);
        return 77;
    }
    if (ember_cuda_device_describe(0, dev_name, sizeof dev_name, &total, &free_b, &err) !=
        EMBER_OK) {
        fprintf(stderr, "%s: describe device 0: %s\n", name, err.message);
        return 1;
    }
    printf("%s on device 0 of %d: %s, %.1f GiB (%.1f free)\n", name, n, dev_name,
           (double)total / (1u << 30), (double)free_b / (1u << 30));
    fflush(stdout);
    /* The device check initialised CUDA in this process, and a child forked from
     * it cannot use CUDA: run the tests in-process. */
    setenv("CK_FORK", "no", 1);
    return tu_run(make_suite());
}

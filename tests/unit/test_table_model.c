/*
 * test_table_model.c — the table against a simple reference model over long
 * random sequences of every operation.
 *
 * The model keeps each bucket as a plain list and applies the documented rules
 * one key at a time: lowest score evicted from a full bucket (CUSTOM: a lower
 * newcomer refused), duplicates summed in batch order before an optimizer step,
 * versions per writing call, admission through its own sketch fed the same
 * sightings. Rows are computed with the same EMBER_HD math, so after every
 * operation the table must match the model bit for bit.
 *
 * Built a second time in tests/gpu with EMBER_MODEL_BACKEND_GPU: the same walks
 * against the GPU backend (cuda/gpu_table.h), skipped (exit 77) without a GPU.
 * Where a walk depends on the order of keys inside one call, which the GPU does
 * not keep (gpu_table.h: keys of one call run in parallel), that build changes
 * the walk, never the checks: see gpu_order_free() and the config in run_walk().
 */
#ifdef EMBER_MODEL_BACKEND_GPU
#define _POSIX_C_SOURCE 200112L /* setenv */
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/admission.h"
#include "test_util.h"
#ifdef EMBER_MODEL_BACKEND_GPU
#include "cuda/device.h"
#include "cuda/gpu_table.h"
#endif

#define DIM 3
#define MAX_BATCH 96
#define SLOTS EMBER_BUCKET_SLOTS

typedef struct m_entry {
    uint64_t key, score, version;
    float *row;
} m_entry;

typedef struct model {
    ember_table_config cfg;
    uint32_t rf;
    uint64_t nb;
    m_entry *e;          /* nb × SLOTS entries; bucket b holds e[b*SLOTS .. +cnt[b]) */
    unsigned *cnt;
    uint64_t version;
    uint64_t evictions, refused, drops;
    ember_admission *adm;
} model;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state += UINT64_C(0x9e3779b97f4a7c15);
    return ember_mix64(rng_state);
}

static void model_init(model *m, const ember_table_config *c)
{
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->rf = ember_table_config_row_floats(c);
    m->nb = (c->capacity + SLOTS - 1) / SLOTS;
    m->e = calloc(m->nb * SLOTS, sizeof *m->e);
    m->cnt = calloc(m->nb, sizeof *m->cnt);
    for (uint64_t i = 0; i < m->nb * SLOTS; i++)
        m->e[i].row = malloc(m->rf * sizeof(float));
    if (c->admission.min_count >= 2)
        ck_assert_int_eq(ember_admission_create(c->admission.min_count,
                                                c->admission.sketch_width, &m->adm, NULL),
                         EMBER_OK);
}

static void model_free(model *m)
{
    for (uint64_t i = 0; i < m->nb * SLOTS; i++)
        free(m->e[i].row);
    free(m->e);
    free(m->cnt);
    ember_admission_destroy(m->adm);
}

static uint64_t bucket_of(const model *m, uint64_t key)
{
    return ember_hash_bucket(ember_key_hash(key), m->nb);
}

static m_entry *lookup(model *m, uint64_t key)
{
    uint64_t b = bucket_of(m, key);
    for (unsigned i = 0; i < m->cnt[b]; i++)
        if (m->e[b * SLOTS + i].key == key)
            return &m->e[b * SLOTS + i];
    return NULL;
}

static void remove_at(model *m, uint64_t b, unsigned i)
{
    m_entry *e = &m->e[b * SLOTS];
    unsigned last = --m->cnt[b];
    if (i != last) {
        float *row = e[i].row;
        e[i] = e[last];
        e[last].row = row;
    }
}

/* Claims an entry for a new key scored `score`, or NULL (CUSTOM refusal). */
static m_entry *claim(model *m, uint64_t key, uint64_t score)
{
    uint64_t b = bucket_of(m, key);
    m_entry *e = &m->e[b * SLOTS];
    if (m->cnt[b] == SLOTS) {
        unsigned lo = 0;
        for (unsigned i = 1; i < SLOTS; i++)
            if (e[i].score < e[lo].score)
                lo = i;
        if (m->cfg.score_policy == EMBER_SCORE_CUSTOM && score < e[lo].score) {
            m->refused++;
            return NULL;
        }
        m->evictions++;
        remove_at(m, b, lo);
    }
    m_entry *n = &e[m->cnt[b]++];
    n->key = key;
    n->score = score;
    return n;
}

static void fresh_row(const model *m, uint64_t key, float *row)
{
    ember_init_row(&m->cfg.init, m->cfg.seed, key, row, DIM);
    ember_optim_init_slots(&m->cfg.optim, row + DIM, DIM);
}

static uint64_t next_score(const model *m, const m_entry *e, uint32_t count,
                           const uint64_t *scores, size_t i)
{
    ember_score_ctx c = {m->cfg.score_policy, 0, 0};
    return ember_score_next(&c, e ? e->score : 0, e == NULL, count, scores ? scores[i] : 0,
                            scores != NULL);
}

static int admit(model *m, uint64_t key)
{
    return !m->adm || ember_admission_sight(m->adm, key);
}

/* ---- the model's operations -------------------------------------------------- */

static void m_find(model *m, const uint64_t *k, size_t n, float *out, uint8_t *found)
{
    for (size_t i = 0; i < n; i++) {
        m_entry *e = lookup(m, k[i]);
        found[i] = e != NULL;
        if (e)
            memcpy(out + i * DIM, e->row, DIM * sizeof(float));
        else
            ember_init_row(&m->cfg.init, m->cfg.seed, k[i], out + i * DIM, DIM);
    }
}

static void m_find_or_insert(model *m, const uint64_t *k, size_t n, float *out,
                             uint8_t *found, const uint64_t *sc)
{
    uint64_t v = ++m->version;
    for (size_t i = 0; i < n; i++) {
        m_entry *e = lookup(m, k[i]);
        found[i] = e != NULL;
        if (e) {
            e->score = next_score(m, e, 1, sc, i);
        } else if (admit(m, k[i])) {
            e = claim(m, k[i], next_score(m, NULL, 1, sc, i));
            if (e) {
                fresh_row(m, k[i], e->row);
                e->version = v;
            }
        }
        if (e)
            memcpy(out + i * DIM, e->row, DIM * sizeof(float));
        else
            ember_init_row(&m->cfg.init, m->cfg.seed, k[i], out + i * DIM, DIM);
    }
}

enum { W_ASSIGN, W_ACCUM };

static void m_write(model *m, int kind, int insert, const uint64_t *k, size_t n,
                    const float *v, uint8_t *found, const uint64_t *sc)
{
    uint64_t ver = ++m->version;
    for (size_t i = 0; i < n; i++) {
        m_entry *e = lookup(m, k[i]);
        found[i] = e != NULL;
        uint64_t score = next_score(m, e, 1, sc, i);
        int is_new = e == NULL;
        if (!e && insert)
            e = claim(m, k[i], score);
        if (!e)
            continue;
        if (kind == W_ACCUM) {
            for (int j = 0; j < DIM; j++)
                e->row[j] += v[i * DIM + j];
        } else {
            memcpy(e->row, v + i * DIM, DIM * sizeof(float));
            if (is_new)
                ember_optim_init_slots(&m->cfg.optim, e->row + DIM, DIM);
        }
        e->score = score;
        e->version = ver;
    }
}

static void m_apply(model *m, const uint64_t *k, size_t n, const float *g, const uint64_t *sc)
{
    uint64_t ver = ++m->version;
    uint8_t done[MAX_BATCH] = {0};
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        float sum[DIM] = {0};
        uint32_t count = 0;
        size_t last = i;
        for (size_t j = i; j < n; j++) {
            if (k[j] != k[i])
                continue;
            for (int d = 0; d < DIM; d++)
                sum[d] = count ? sum[d] + g[j * DIM + d] : g[j * DIM + d];
            count++;
            last = j;
            done[j] = 1;
        }
        m_entry *e = lookup(m, k[i]);
        uint64_t score = next_score(m, e, count, sc, last);
        if (!e) {
            if (!admit(m, k[i])) {
                m->drops++;
                continue;
            }
            e = claim(m, k[i], score);
            if (!e)
                continue;
            fresh_row(m, k[i], e->row);
        }
        ember_optim_apply(&m->cfg.optim, e->row, sum, DIM);
        e->score = score;
        e->version = ver;
    }
}

static uint64_t m_erase(model *m, const uint64_t *k, size_t n)
{
    uint64_t erased = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = bucket_of(m, k[i]);
        for (unsigned j = 0; j < m->cnt[b]; j++) {
            if (m->e[b * SLOTS + j].key == k[i]) {
                remove_at(m, b, j);
                erased++;
                break;
            }
        }
    }
    return erased;
}

static uint64_t m_evict_below(model *m, uint64_t s)
{
    uint64_t n = 0;
    for (uint64_t b = 0; b < m->nb; b++)
        for (unsigned j = m->cnt[b]; j-- > 0;)
            if (m->e[b * SLOTS + j].score < s) {
                remove_at(m, b, j);
                n++;
            }
    return n;
}

static uint64_t m_size(const model *m)
{
    uint64_t s = 0;
    for (uint64_t b = 0; b < m->nb; b++)
        s += m->cnt[b];
    return s;
}

/* ---- comparing ------------------------------------------------------------------ */

#ifdef EMBER_MODEL_BACKEND_GPU
/* Adam's bias correction goes through powf, which the GPU computes within 2 ulp
 * and glibc within 1, so Adam rows may differ in the last bits (test_gpu_math
 * bounds them); every other row is bit-identical. A row accepted within the
 * tolerance is adopted by the model (only the embedding goes through powf), so
 * the two never drift apart step after step. */
#define ADAM_TOL 1e-5f

static int close_float(const model *m, float x, float y)
{
    if (!memcmp(&x, &y, sizeof x))
        return 1;
    return m->cfg.optim.kind == EMBER_OPTIM_ADAM && isfinite(x) && isfinite(y) &&
           fabsf(x - y) <= ADAM_TOL * fmaxf(fabsf(x), 1.0f);
}
#endif

/* The model's row `mrow` equals the table's `trow` (n floats). */
static int same_row(const model *m, float *mrow, const float *trow, size_t n)
{
#ifdef EMBER_MODEL_BACKEND_GPU
    for (size_t j = 0; j < n; j++)
        if (!close_float(m, mrow[j], trow[j]))
            return 0;
    memcpy(mrow, trow, n * sizeof(float));
    return 1;
#else
    (void)m;
    return !memcmp(mrow, trow, n * sizeof(float));
#endif
}

/* The embeddings a find or find_or_insert returned from the table (out_t) equal
 * the model's (out_m). */
static void check_outputs(model *m, const uint64_t *k, size_t n, const float *out_t,
                          const float *out_m, int step)
{
#ifdef EMBER_MODEL_BACKEND_GPU
    for (size_t i = 0; i < n * DIM; i++)
        if (!close_float(m, out_m[i], out_t[i])) /* Check only on failure: it is slow */
            ck_assert_msg(0, "step %d: key %llu (index %zu) element %zu: table %.9g, model %.9g",
                          step, (unsigned long long)k[i / DIM], i / DIM, i % DIM, out_t[i],
                          out_m[i]);
    for (size_t i = 0; i < n; i++) {
        m_entry *e = lookup(m, k[i]);
        if (e)
            memcpy(e->row, out_t + i * DIM, DIM * sizeof(float));
    }
#else
    (void)m;
    (void)k;
    (void)step;
    ck_assert_mem_eq(out_t, out_m, n * DIM * sizeof(float));
#endif
}

#ifdef EMBER_MODEL_BACKEND_GPU
/* Makes a batch order-free for the GPU (gpu_table.h): keys of one GPU call run
 * in parallel, so where the CPU's result depends on the order of keys inside
 * the call, the GPU may give that of another order. Keys are dropped (the batch
 * is compacted in place; were none left, the first key alone) so that no such
 * case is left; the checks stay exact:
 *  - find_or_insert (`dedup`): later occurrences of a repeated key, since which
 *    occurrence reports found = 0, and under CUSTOM whose score it keeps, is
 *    unspecified (b);
 *  - a bucket that this call makes evict (more distinct new keys than free
 *    slots): if the call also holds keys already stored there, one of the two
 *    groups, since the CPU may evict a stored key of the call before reaching it
 *    (it is then re-created) where the GPU touches it first (a). With CUSTOM the
 *    walk's new keys carry scores above every stored one and all scores are
 *    distinct, so a bucket that receives only new keys evicts its lowest stored
 *    keys in any order; the group kept alternates by bucket and step. Other
 *    policies tie, so there the new keys go (the LFU walk has room for all its
 *    keys and never gets here). */
static size_t gpu_dropped; /* keys gpu_order_free left out in this walk */

static size_t gpu_order_free(model *m, int dedup, uint64_t *k, float *v, uint64_t *sc,
                             size_t n, int step)
{
    uint8_t first[MAX_BATCH], old[MAX_BATCH];
    unsigned *fresh = calloc(m->nb, sizeof *fresh);
    uint8_t *has_old = calloc(m->nb, 1), *drop_old = calloc(m->nb, 1);
    uint8_t *drop_new = calloc(m->nb, 1);
    for (size_t i = 0; i < n; i++) {
        first[i] = 1;
        for (size_t j = 0; j < i && first[i]; j++)
            first[i] = k[j] != k[i];
        old[i] = lookup(m, k[i]) != NULL;
        uint64_t b = bucket_of(m, k[i]);
        if (old[i])
            has_old[b] = 1;
        else if (first[i])
            fresh[b]++;
    }
    for (uint64_t b = 0; b < m->nb; b++) {
        if (!has_old[b] || fresh[b] <= SLOTS - m->cnt[b])
            continue;
        if (m->cfg.score_policy == EMBER_SCORE_CUSTOM && ((b + (uint64_t)step) & 1))
            drop_old[b] = 1;
        else
            drop_new[b] = 1;
    }
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = bucket_of(m, k[i]);
        if ((dedup && !first[i]) || (old[i] ? drop_old[b] : drop_new[b]))
            continue;
        k[out] = k[i];
        sc[out] = sc[i];
        memmove(v + out * DIM, v + i * DIM, DIM * sizeof(float));
        out++;
    }
    free(fresh);
    free(has_old);
    free(drop_old);
    free(drop_new);
    gpu_dropped += n - out;
    /* Nothing left: the first key alone (untouched, since nothing was written
     * at index 0), which no order can change. */
    return out ? out : 1;
}
#endif

/* The table's whole contents equal the model's. */
static void compare_all(model *m, ember_table *t, int step)
{
    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_msg(s.n == m_size(m), "step %d: table has %zu keys, model %llu", step, s.n,
                  (unsigned long long)m_size(m));
    for (size_t i = 0; i < s.n; i++) {
        m_entry *e = lookup(m, s.keys[i]);
        ck_assert_msg(e != NULL, "step %d: key %llu in table, not in model", step,
                      (unsigned long long)s.keys[i]);
        ck_assert_msg(same_row(m, e->row, s.rows + i * m->rf, m->rf),
                      "step %d: row of key %llu differs", step, (unsigned long long)e->key);
        ck_assert_uint_eq(e->score, s.scores[i]);
        ck_assert_uint_eq(e->version, s.versions[i]);
    }
    tu_snapshot_free(&s);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    ck_assert_uint_eq(st.size, m_size(m));
    ck_assert_uint_le(st.size, st.capacity);
    ck_assert_uint_eq(st.version, m->version);
    ck_assert_uint_eq(st.evictions, m->evictions);
    ck_assert_uint_eq(st.insert_refused, m->refused);
    ck_assert_uint_eq(st.admission_drops, m->drops);
}

/* ---- the random walk ------------------------------------------------------------ */

static void run_walk(int optim, int policy, uint64_t capacity, uint64_t universe,
                     uint32_t min_count, int steps)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = DIM;
    c.capacity = capacity;
    c.optim.kind = optim;
    c.optim.lr = 0.1f;
    c.optim.l1 = 0.01f;
    c.score_policy = policy;
    c.init.kind = EMBER_INIT_NORMAL;
    c.init.a = 0.0f;
    c.init.b = 0.5f;
    c.seed = 77;
    c.admission.min_count = min_count;
    c.admission.sketch_width = 512;
    const ember_table_backend *backend = NULL;
#ifdef EMBER_MODEL_BACKEND_GPU
    /* UNIFORM rows are bit-identical on the GPU; NORMAL goes through logf and
     * cosf, which may differ in the last bits (test_gpu_table covers NORMAL with
     * a tolerance). A sketch this wide neither ages in these walks nor lets two
     * keys share all their counters: the GPU ages at the end of the call that
     * crossed the mark, not at the sighting (gpu_table.h), and keys sharing
     * counters inside one call would make admission depend on their order. */
    c.init.kind = EMBER_INIT_UNIFORM;
    c.init.a = -0.5f;
    c.init.b = 0.5f;
    c.admission.sketch_width = 1u << 20;
    backend = ember_table_gpu_backend();
#endif
    ember_table *t;
    ember_error err;
    int rc = ember_table_create(&c, backend, &t, &err);
    ck_assert_msg(rc == EMBER_OK, "create: %s", err.message);
    model m;
    model_init(&m, &c);
    rng_state = (uint64_t)optim * 1000 + (uint64_t)policy;

    uint64_t k[MAX_BATCH], sc[MAX_BATCH], next_custom = 1;
    float v[MAX_BATCH * DIM], out_t[MAX_BATCH * DIM], out_m[MAX_BATCH * DIM];
    uint8_t f_t[MAX_BATCH], f_m[MAX_BATCH];
    for (int step = 0; step < steps; step++) {
        size_t n = 1 + rnd() % MAX_BATCH;
        for (size_t i = 0; i < n; i++) {
            /* A small hot set makes duplicates inside a batch common. */
            k[i] = rnd() % 4 == 0 ? rnd() % 16 : rnd() % universe;
            sc[i] = next_custom++; /* distinct CUSTOM scores: eviction is exact */
        }
        for (size_t i = 0; i < n * DIM; i++)
            v[i] = (float)((int64_t)(rnd() % 2001) - 1000) / 1000.0f;
        const uint64_t *scores = policy == EMBER_SCORE_CUSTOM ? sc : NULL;
        unsigned op = (unsigned)(rnd() % 100);
#ifdef EMBER_MODEL_BACKEND_GPU
        if (op >= 20 && op < 73) /* the calls that create keys */
            n = gpu_order_free(&m, op < 40, k, v, sc, n, step);
#endif
        if (op < 20) {
            ck_assert_int_eq(ember_table_find(t, k, n, out_t, f_t, NULL), EMBER_OK);
            m_find(&m, k, n, out_m, f_m);
            check_outputs(&m, k, n, out_t, out_m, step);
            ck_assert_mem_eq(f_t, f_m, n);
        } else if (op < 40) {
            ck_assert_int_eq(ember_table_find_or_insert(t, k, n, out_t, f_t, scores, NULL),
                             EMBER_OK);
            m_find_or_insert(&m, k, n, out_m, f_m, scores);
            check_outputs(&m, k, n, out_t, out_m, step);
            ck_assert_mem_eq(f_t, f_m, n);
        } else if (op < 65) {
            ck_assert_int_eq(ember_table_apply_gradients(t, k, n, v, scores, NULL), EMBER_OK);
            m_apply(&m, k, n, v, scores);
        } else if (op < 73) {
            ck_assert_int_eq(ember_table_insert_or_assign(t, k, n, v, scores, NULL), EMBER_OK);
            m_write(&m, W_ASSIGN, 1, k, n, v, f_m, scores);
        } else if (op < 79) {
            ck_assert_int_eq(ember_table_assign(t, k, n, v, f_t, scores, NULL), EMBER_OK);
            m_write(&m, W_ASSIGN, 0, k, n, v, f_m, scores);
            ck_assert_mem_eq(f_t, f_m, n);
        } else if (op < 85) {
            ck_assert_int_eq(ember_table_accum(t, k, n, v, f_t, NULL), EMBER_OK);
            m_write(&m, W_ACCUM, 0, k, n, v, f_m, NULL);
            ck_assert_mem_eq(f_t, f_m, n);
        } else if (op < 93) {
            uint64_t erased;
            ck_assert_int_eq(ember_table_erase(t, k, n, &erased, NULL), EMBER_OK);
            ck_assert_uint_eq(erased, m_erase(&m, k, n));
        } else if (op < 95 && policy == EMBER_SCORE_CUSTOM) {
            uint64_t cut = next_custom > 400 ? next_custom - 400 : 0, evicted;
            ck_assert_int_eq(ember_table_evict_below(t, cut, &evicted, NULL), EMBER_OK);
            ck_assert_uint_eq(evicted, m_evict_below(&m, cut));
        } else if (op < 96 && policy == EMBER_SCORE_CUSTOM) {
            /* Scores are distinct: the lowest `excess` go, exactly. */
            uint64_t size = m_size(&m), target = size / 2, evicted;
            ck_assert_int_eq(ember_table_evict_to_size(t, target, &evicted, NULL), EMBER_OK);
            ck_assert_uint_eq(evicted, size - target);
            tu_snapshot s;
            tu_snapshot_take(t, &s);
            uint64_t min_kept = UINT64_MAX;
            for (size_t i = 0; i < s.n; i++)
                min_kept = s.scores[i] < min_kept ? s.scores[i] : min_kept;
            tu_snapshot_free(&s);
            ck_assert_uint_eq(m_evict_below(&m, min_kept), size - target);
        } else if (rnd() % 4 == 0) {
            compare_all(&m, t, step);
        }
        if (step % 250 == 0)
            compare_all(&m, t, step);
    }
    compare_all(&m, t, steps);
#ifdef EMBER_MODEL_BACKEND_GPU
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    printf("gpu.table_model walk optim %d policy %d: %d calls, %zu keys left out to keep calls "
           "order-free, %llu evictions, %llu keys at the end\n", optim, policy, steps,
           gpu_dropped, (unsigned long long)st.evictions, (unsigned long long)st.size);
    fflush(stdout);
    gpu_dropped = 0;
#endif
    model_free(&m);
    ember_table_destroy(t);
}

/* Eviction pressure: 8 buckets, a universe three times their size. */
START_TEST(walk_custom_scores_under_eviction)
{
    static const int optims[] = {EMBER_OPTIM_SGD, EMBER_OPTIM_ADAGRAD, EMBER_OPTIM_ADAM,
                                 EMBER_OPTIM_FTRL};
    run_walk(optims[_i], EMBER_SCORE_CUSTOM, 8 * SLOTS, 3000, 0, 3000);
}
END_TEST

/* Room for everything, LFU counts, and admission at the third sighting. */
START_TEST(walk_lfu_with_admission)
{
    static const int optims[] = {EMBER_OPTIM_SGD, EMBER_OPTIM_ADAGRAD, EMBER_OPTIM_ADAM,
                                 EMBER_OPTIM_FTRL};
    run_walk(optims[_i], EMBER_SCORE_LFU, 64 * SLOTS, 2000, 3, 3000);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("table_model");
    TCase *c = tcase_create("walks");
    tcase_set_timeout(c, 240);
    tcase_add_loop_test(c, walk_custom_scores_under_eviction, 0, 4);
    tcase_add_loop_test(c, walk_lfu_with_admission, 0, 4);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
#ifdef EMBER_MODEL_BACKEND_GPU
    ember_error err;
    int devices = 0;
    if (ember_cuda_device_count(&devices, &err) != EMBER_OK) {
        fprintf(stderr, "gpu.table_model: device count failed: %s\n", err.message);
        return 1;
    }
    if (devices == 0) {
        printf("SKIPPED: no CUDA device visible\n");
        return 77;
    }
    /* The device check initialised CUDA here, and a forked child cannot use it. */
    setenv("CK_FORK", "no", 1);
#endif
    return tu_run(suite());
}

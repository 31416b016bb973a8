/*
 * table.c — the backend-neutral half of the table: configuration, validation of
 * every call before anything is written, versions and score clocks, dispatch.
 */
#define _GNU_SOURCE
#include "table.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "table_backend.h"

struct ember_table {
    const ember_table_backend *tb_backend;
    void *tb_impl;
    ember_table_config tb_config;
    uint32_t tb_row_floats;
    _Atomic uint64_t tb_version;       /* last version handed to a writing call */
    _Atomic uint64_t tb_clock_ns;      /* last LRU clock reading: never goes back */
    _Atomic uint32_t tb_epoch;
    _Atomic uint64_t tb_nonfinite_zeroed;
};

/* Largest batch one call accepts: indices fit in 32 bits inside backends. */
#define EMBER_BATCH_MAX (UINT64_C(1) << 31)

void ember_table_config_init(ember_table_config *c)
{
    memset(c, 0, sizeof *c);
    EMBER_TABLE_DEFAULTS(c, optim, init);
    c->nonfinite = EMBER_NONFINITE_REJECT;
}

static int finite_nonneg(float x)
{
    return isfinite(x) && x >= 0.0f;
}

int ember_table_config_validate(const ember_table_config *c, ember_error *err)
{
    const ember_optim_config *o = &c->optim;
    if (c->dim < 1 || c->dim > EMBER_DIM_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "dim %u out of range 1..%u", c->dim, EMBER_DIM_MAX);
    if (c->capacity < 1 || c->capacity > EMBER_CAPACITY_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "capacity %llu out of range 1..%llu",
                               (unsigned long long)c->capacity,
                               (unsigned long long)EMBER_CAPACITY_MAX);
    if (c->score_policy < EMBER_SCORE_LRU || c->score_policy > EMBER_SCORE_CUSTOM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown score policy %d",
                               c->score_policy);
    if (c->nonfinite != EMBER_NONFINITE_REJECT && c->nonfinite != EMBER_NONFINITE_ZERO)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown non-finite policy %d", c->nonfinite);
    if (o->kind < EMBER_OPTIM_SGD || o->kind > EMBER_OPTIM_FTRL)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown optimizer %d", o->kind);
    if (!(isfinite(o->lr) && o->lr > 0.0f))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer lr must be finite and > 0");
    if ((o->kind == EMBER_OPTIM_ADAGRAD || o->kind == EMBER_OPTIM_ADAM) &&
        !(isfinite(o->eps) && o->eps > 0.0f))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer eps must be finite and > 0");
    if ((o->kind == EMBER_OPTIM_ADAGRAD || o->kind == EMBER_OPTIM_FTRL) &&
        !finite_nonneg(o->initial_accumulator))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer initial_accumulator must be finite and >= 0");
    if (o->kind == EMBER_OPTIM_ADAM) {
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f && o->beta2 >= 0.0f && o->beta2 < 1.0f))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "adam beta1 and beta2 must be in [0, 1)");
        if (!finite_nonneg(o->weight_decay))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "adam weight_decay must be finite and >= 0");
    }
    if (o->kind == EMBER_OPTIM_FTRL) {
        if (!finite_nonneg(o->l1) || !finite_nonneg(o->l2) || !finite_nonneg(o->beta))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl l1, l2 and beta must be finite and >= 0");
        if (!(isfinite(o->lr_power) && o->lr_power <= 0.0f))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl lr_power must be finite and <= 0");
        if (o->lr_power < 0.0f && o->initial_accumulator <= 0.0f)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl with lr_power < 0 needs initial_accumulator > 0");
    }
    switch (c->init.kind) {
    case EMBER_INIT_ZEROS:
        break;
    case EMBER_INIT_CONSTANT:
        if (!isfinite(c->init.a))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "constant initializer value must be finite");
        break;
    case EMBER_INIT_UNIFORM:
        if (!(isfinite(c->init.a) && isfinite(c->init.b) && c->init.a <= c->init.b))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "uniform initializer needs finite low <= high");
        break;
    case EMBER_INIT_NORMAL:
    case EMBER_INIT_TRUNCATED_NORMAL:
        if (!(isfinite(c->init.a) && finite_nonneg(c->init.b)))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "normal initializer needs a finite mean and stddev >= 0");
        break;
    default:
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown initializer %d",
                               c->init.kind);
    }
    if (c->admission.sketch_width > (UINT32_C(1) << 30))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "admission sketch_width %u above 2^30",
                               c->admission.sketch_width);
    return EMBER_OK;
}

uint32_t ember_table_config_row_floats(const ember_table_config *c)
{
    return ember_row_floats(c->optim.kind, c->dim);
}

const char *ember_table_backend_name(const ember_table_backend *b)
{
    return b ? b->name : "cpu";
}

int ember_table_create(const ember_table_config *c, const ember_table_backend *backend,
                       ember_table **out, ember_error *err)
{
    int rc = ember_table_config_validate(c, err);
    if (rc)
        return rc;
    if (!backend)
        backend = ember_table_cpu_backend();
    ember_table *t = calloc(1, sizeof *t);
    if (!t)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    t->tb_backend = backend;
    t->tb_config = *c;
    t->tb_row_floats = ember_table_config_row_floats(c);
    rc = backend->create(c, &t->tb_impl, err);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return EMBER_OK;
}

void ember_table_destroy(ember_table *t)
{
    if (!t)
        return;
    t->tb_backend->destroy(t->tb_impl);
    free(t);
}

const ember_table_config *ember_table_config_of(const ember_table *t) { return &t->tb_config; }
const ember_table_backend *ember_table_backend_of(const ember_table *t) { return t->tb_backend; }
uint32_t ember_table_dim(const ember_table *t) { return t->tb_config.dim; }
uint32_t ember_table_row_floats(const ember_table *t) { return t->tb_row_floats; }
void *ember_table_impl(ember_table *t) { return t->tb_impl; }
uint64_t ember_table_size(const ember_table *t) { return t->tb_backend->size(t->tb_impl); }
uint64_t ember_table_capacity(const ember_table *t) { return t->tb_backend->capacity(t->tb_impl); }
uint64_t ember_table_export_end(const ember_table *t) { return t->tb_backend->export_end(t->tb_impl); }

void ember_table_set_epoch(ember_table *t, uint32_t epoch)
{
    atomic_store(&t->tb_epoch, epoch);
}

uint32_t ember_table_epoch(const ember_table *t)
{
    return atomic_load(&t->tb_epoch);
}

uint32_t ember_table_raise_epoch(ember_table *t, uint32_t epoch)
{
    uint32_t old = atomic_load(&t->tb_epoch);
    while (old < epoch && !atomic_compare_exchange_weak(&t->tb_epoch, &old, epoch))
        ;
    return old;
}

int ember_table_footprint(const ember_table_config *c, const ember_table_backend *backend,
                          uint64_t *bytes_host, uint64_t *bytes_device, ember_error *err)
{
    int rc = ember_table_config_validate(c, err);
    if (rc)
        return rc;
    if (!backend)
        backend = ember_table_cpu_backend();
    uint64_t host = 0, device = 0;
    backend->footprint(c, &host, &device);
    if (bytes_host)
        *bytes_host = host + sizeof(ember_table);
    if (bytes_device)
        *bytes_device = device;
    return EMBER_OK;
}

void ember_table_stats_get(const ember_table *t, ember_table_stats *out)
{
    memset(out, 0, sizeof *out);
    t->tb_backend->stats(t->tb_impl, out);
    out->version = atomic_load(&((ember_table *)t)->tb_version);
    out->nonfinite_zeroed = atomic_load(&((ember_table *)t)->tb_nonfinite_zeroed);
    out->load_factor = out->capacity ? (double)out->size / (double)out->capacity : 0.0;
    out->bytes_host += sizeof *t;
}

/* ---- validation ---------------------------------------------------------- */

/* The batch-size and NULL-keys checks every call with keys makes first. */
static int check_limits(const uint64_t *keys, size_t n, ember_error *err)
{
    if (n > EMBER_BATCH_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "batch of %zu keys is above the limit of %llu", n,
                               (unsigned long long)EMBER_BATCH_MAX);
    if (n && !keys)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "keys is NULL");
    return EMBER_OK;
}

static int reserved_error(const uint64_t *keys, size_t i, ember_error *err)
{
    return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                           "key %llu at index %zu is reserved (keys >= %llu are)",
                           (unsigned long long)keys[i], i,
                           (unsigned long long)EMBER_KEY_RESERVED_MIN);
}

/* Index of the first non-finite float in v[n], or n. Branch-free inner loop so
 * the compiler vectorises it: this runs over every gradient byte. */
static size_t first_nonfinite(const float *v, size_t n)
{
    const size_t block = 1024;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        for (size_t j = i; j < end; j++) {
            uint32_t bits;
            memcpy(&bits, &v[j], sizeof bits);
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (size_t j = i; j < end; j++)
                if (!isfinite(v[j]))
                    return j;
    }
    return n;
}

/* The one validation pass of a call: walks keys[n] and their v[n*width] floats
 * together (either NULL: not looked at), a block of keys and then the block's
 * floats, while both are in cache. *bad_key = the first reserved key's index, or n;
 * *bad_val = the first non-finite float's index, or n*width (values stop being
 * looked at once one is found; keys are always scanned to the end, since a
 * reserved key is the error a call reports first). */
static void scan_batch(const uint64_t *keys, size_t n, const float *v, uint32_t width,
                       size_t *bad_key, size_t *bad_val)
{
    const size_t block = 64;
    size_t total = v ? n * width : 0;
    *bad_key = n;
    *bad_val = n * width;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        for (size_t j = i; keys && j < end; j++)
            bad |= (uint32_t)ember_key_is_reserved(keys[j]);
        if (bad) {
            for (size_t j = i; j < end; j++)
                if (ember_key_is_reserved(keys[j])) {
                    *bad_key = j;
                    return;
                }
        }
        if (*bad_val == n * width && i * width < total) {
            size_t lo = i * width, len = (end - i) * width;
            size_t b = first_nonfinite(v + lo, len);
            if (b < len)
                *bad_val = lo + b;
        }
    }
}

static int check_batch(const uint64_t *keys, size_t n, ember_error *err)
{
    size_t bad_key, bad_val;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(keys, n, NULL, 0, &bad_key, &bad_val);
    return bad_key < n ? reserved_error(keys, bad_key, err) : EMBER_OK;
}

static int check_array(const void *p, size_t n, const char *what, ember_error *err)
{
    if (n && !p)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s is NULL", what);
    return EMBER_OK;
}

/* What a call does with v[n*width] whose first non-finite float is at `bad`
 * (n*width: none). With policy ZERO (and `zeroable`) a cleaned copy is returned
 * in *clean (caller frees); otherwise REJECT. */
static int finish_finite(ember_table *t, const float *v, size_t n, uint32_t width, size_t bad,
                         int zeroable, const char *what, float **clean, ember_error *err)
{
    size_t total = n * width;
    *clean = NULL;
    if (bad == total)
        return EMBER_OK;
    if (!zeroable || t->tb_config.nonfinite != EMBER_NONFINITE_ZERO)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s of key index %zu hold a non-finite value (NaN or Inf)",
                               what, bad / width);
    float *c = malloc(total * sizeof *c);
    if (!c)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    uint64_t zeroed = 0;
    memcpy(c, v, bad * sizeof *c);   /* everything before `bad` is finite */
    for (size_t j = bad; j < total; j++) {
        if (isfinite(v[j])) {
            c[j] = v[j];
        } else {
            c[j] = 0.0f;
            zeroed++;
        }
    }
    atomic_fetch_add(&t->tb_nonfinite_zeroed, zeroed);
    *clean = c;
    return EMBER_OK;
}

static uint64_t clock_now_ns(ember_table *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    /* The score clock never goes back, even if the wall clock is stepped. */
    uint64_t last = atomic_load_explicit(&t->tb_clock_ns, memory_order_relaxed);
    while (now > last &&
           !atomic_compare_exchange_weak_explicit(&t->tb_clock_ns, &last, now,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    return now > last ? now : last;
}

static void op_begin(ember_table *t, ember_op *op)
{
    op->score.policy = t->tb_config.score_policy;
    op->score.now_ns = clock_now_ns(t);
    op->score.epoch = atomic_load(&t->tb_epoch);
    op->version = atomic_fetch_add(&t->tb_version, 1) + 1;
}

/* Validates a writing call in one pass (scan_batch): keys, then its n×dim input
 * floats (non-finite values are refused, or for `zeroable` inputs under policy
 * ZERO replaced in a copy left in *clean for the caller to free); what `checked`
 * (EMBER_CHECKED_*) names, the caller has checked. */
static int check_write(ember_table *t, unsigned checked, const uint64_t *keys, size_t n,
                       const float *in, const char *what, int zeroable, float **clean,
                       ember_error *err)
{
    uint32_t dim = t->tb_config.dim;
    size_t bad_key, bad_val;
    *clean = NULL;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(checked & EMBER_CHECKED_KEYS ? NULL : keys, n,
               checked & EMBER_CHECKED_VALUES ? NULL : in, dim, &bad_key, &bad_val);
    if (bad_key < n)
        return reserved_error(keys, bad_key, err);
    rc = check_array(in, n, what, err);
    if (rc)
        return rc;
    return finish_finite(t, in, n, dim, bad_val, zeroable, what, clean, err);
}

/* ---- operations ---------------------------------------------------------- */

int ember_table_find(ember_table *t, const uint64_t *keys, size_t n, float *values,
                     uint8_t *found, ember_error *err)
{
    int rc = check_batch(keys, n, err);
    if (!rc)
        rc = check_array(values, n, "values", err);
    if (rc || !n)
        return rc;
    return t->tb_backend->find(t->tb_impl, keys, n, values, found, err);
}

int ember_table_find_or_insert(ember_table *t, const uint64_t *keys, size_t n,
                               float *values, uint8_t *found, const uint64_t *scores,
                               ember_error *err)
{
    int rc = check_batch(keys, n, err);
    if (!rc)
        rc = check_array(values, n, "values", err);
    if (rc || !n)
        return rc;
    ember_op op;
    op_begin(t, &op);
    return t->tb_backend->find_or_insert(t->tb_impl, &op, keys, n, values, found, scores, err);
}

int ember_table_write(ember_table *t, ember_write_kind kind, unsigned checked,
                      const uint64_t *keys, size_t n, const float *values, uint8_t *found,
                      const uint64_t *scores, ember_error *err)
{
    static const char *const what[] = {"gradients", "values", "values", "deltas"};
    if ((unsigned)kind > EMBER_WRITE_ACCUM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown write %d", (int)kind);
    int zeroable = kind == EMBER_WRITE_GRADIENTS || kind == EMBER_WRITE_ACCUM;
    float *clean;
    int rc = check_write(t, checked, keys, n, values, what[kind], zeroable, &clean, err);
    if (rc || !n)
        return rc;
    const float *in = clean ? clean : values;
    const ember_table_backend *b = t->tb_backend;
    ember_op op;
    op_begin(t, &op);
    switch (kind) {
    case EMBER_WRITE_GRADIENTS:
        rc = b->apply_gradients(t->tb_impl, &op, keys, n, in, scores, err);
        break;
    case EMBER_WRITE_UPSERT:
        rc = b->insert_or_assign(t->tb_impl, &op, keys, n, in, scores, err);
        break;
    case EMBER_WRITE_ASSIGN:
        rc = b->assign(t->tb_impl, &op, keys, n, in, found, scores, err);
        break;
    default:
        rc = b->accum(t->tb_impl, &op, keys, n, in, found, err);
        break;
    }
    free(clean);
    return rc;
}

int ember_table_insert_or_assign(ember_table *t, const uint64_t *keys, size_t n,
                                 const float *values, const uint64_t *scores,
                                 ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_UPSERT, 0, keys, n, values, NULL, scores, err);
}

int ember_table_assign(ember_table *t, const uint64_t *keys, size_t n, const float *values,
                       uint8_t *found, const uint64_t *scores, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_ASSIGN, 0, keys, n, values, found, scores, err);
}

int ember_table_accum(ember_table *t, const uint64_t *keys, size_t n, const float *deltas,
                      uint8_t *found, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_ACCUM, 0, keys, n, deltas, found, NULL, err);
}

int ember_table_apply_gradients(ember_table *t, const uint64_t *keys, size_t n,
                                const float *grads, const uint64_t *scores, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_GRADIENTS, 0, keys, n, grads, NULL, scores, err);
}

int ember_table_erase(ember_table *t, const uint64_t *keys, size_t n, uint64_t *erased,
                      ember_error *err)
{
    if (erased)
        *erased = 0;
    int rc = check_batch(keys, n, err);
    if (rc || !n)
        return rc;
    return t->tb_backend->erase(t->tb_impl, keys, n, erased, err);
}

int ember_table_clear(ember_table *t, ember_error *err)
{
    return t->tb_backend->clear(t->tb_impl, err);
}

int ember_table_export(ember_table *t, const ember_export_filter *f, uint64_t *cursor,
                       size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                       uint64_t *versions, size_t *n_out, ember_error *err)
{
    static const ember_export_filter all = {0, 0, 0};
    if (n_out)
        *n_out = 0;
    if (!cursor || !n_out || !keys || !rows)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "export needs cursor, keys, rows and n_out");
    if (max_rows < EMBER_BUCKET_SLOTS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "export max_rows %zu is below one bucket (%u)", max_rows,
                               EMBER_BUCKET_SLOTS);
    if (*cursor > ember_table_export_end(t))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "export cursor %llu past the end",
                               (unsigned long long)*cursor);
    return t->tb_backend->export_rows(t->tb_impl, f ? f : &all, cursor, max_rows, keys, rows,
                                      scores, versions, n_out, err);
}

int ember_table_import(ember_table *t, const uint64_t *keys, size_t n, const float *rows,
                       const uint64_t *scores, const uint64_t *versions, ember_error *err)
{
    float *clean;
    size_t bad_key, bad_val;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(keys, n, rows, t->tb_row_floats, &bad_key, &bad_val);
    if (bad_key < n)
        return reserved_error(keys, bad_key, err);
    rc = check_array(rows, n, "rows", err);
    if (!rc)
        rc = check_array(scores, n, "scores", err);
    if (!rc)
        rc = check_array(versions, n, "versions", err);
    if (!rc)
        rc = finish_finite(t, rows, n, t->tb_row_floats, bad_val, 0, "rows", &clean, err);
    if (rc || !n)
        return rc;
    uint64_t vmax = 0;
    for (size_t i = 0; i < n; i++)
        vmax = versions[i] > vmax ? versions[i] : vmax;
    rc = t->tb_backend->import_rows(t->tb_impl, keys, n, rows, scores, versions, err);
    if (rc)
        return rc;
    ember_table_raise_version(t, vmax);
    return EMBER_OK;
}

void ember_table_raise_version(ember_table *t, uint64_t version)
{
    uint64_t cur = atomic_load(&t->tb_version);
    while (cur < version && !atomic_compare_exchange_weak(&t->tb_version, &cur, version))
        ;
}

int ember_table_evict_below(ember_table *t, uint64_t score, uint64_t *evicted,
                            ember_error *err)
{
    if (evicted)
        *evicted = 0;
    return t->tb_backend->evict_below(t->tb_impl, score, evicted, err);
}

int ember_table_evict_to_size(ember_table *t, uint64_t target, uint64_t *evicted,
                              ember_error *err)
{
    if (evicted)
        *evicted = 0;
    return t->tb_backend->evict_to_size(t->tb_impl, target, evicted, err);
}

/*
 * gpu_table_host.cu — the host-array backend (table_backend.h): each call stages
 * its host arrays through a pinned, per-call context into device memory, runs the
 * stream-ordered call on the context's stream and copies results back.
 */
#include "cuda/detail/gpu_table_impl.cuh"

/* ---- the host-array backend (table_backend.h) ---------------------------- */

static void ctx_buffers_free(host_ctx *x)
{
    cudaFreeHost(x->h_keys);
    cudaFreeHost(x->h_scores);
    cudaFreeHost(x->h_versions);
    cudaFreeHost(x->h_vals);
    cudaFreeHost(x->h_found);
    cudaFree(x->d_keys);
    cudaFree(x->d_scores);
    cudaFree(x->d_versions);
    cudaFree(x->d_vals);
    cudaFree(x->d_found);
    ember_gpu_scratch_destroy(x->sc);
    x->h_keys = x->h_scores = x->h_versions = x->d_keys = x->d_scores = x->d_versions = NULL;
    x->h_vals = x->d_vals = NULL;
    x->h_found = x->d_found = NULL;
    x->sc = NULL;
    x->cap = 0;
}

void ember_gpu_ctx_free(host_ctx *x)
{
    if (!x)
        return;
    ctx_buffers_free(x);
    if (x->st)
        cudaStreamDestroy(x->st);
    free(x);
}

static int ctx_grow(ember_gpu_table *t, host_ctx *x, size_t n, ember_error *err)
{
    size_t cap = 1024;
    while (cap < n)
        cap *= 2;
    ctx_buffers_free(x);
    size_t vb = cap * (size_t)t->row_floats * sizeof(float);
    int rc;
    if ((rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_keys, cap * 8, 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_scores, cap * 8, 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_versions, cap * 8, 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_vals, vb, 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_found, cap, 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->d_keys, cap * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->d_scores, cap * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->d_versions, cap * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->d_vals, vb), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->d_found, cap), err)) ||
        (rc = ember_gpu_scratch_create(t, cap, &x->sc, err))) {
        ctx_buffers_free(x);
        return rc;
    }
    x->cap = cap;
    return EMBER_OK;
}

static int ctx_get(ember_gpu_table *t, size_t n, host_ctx **out, ember_error *err)
{
    int rc = use_device(t, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&t->ctx_lock);
    host_ctx *x = t->ctx_free;
    if (x)
        t->ctx_free = x->next;
    pthread_mutex_unlock(&t->ctx_lock);
    if (!x) {
        x = (host_ctx *)calloc(1, sizeof *x);
        if (!x)
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
        if ((rc = EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&x->st, cudaStreamNonBlocking),
                                   err))) {
            free(x);
            return rc;
        }
    }
    if (x->cap < n && (rc = ctx_grow(t, x, n, err))) {
        ember_gpu_ctx_free(x);
        return rc;
    }
    *out = x;
    return EMBER_OK;
}

static void ctx_put(ember_gpu_table *t, host_ctx *x)
{
    pthread_mutex_lock(&t->ctx_lock);
    x->next = t->ctx_free;
    t->ctx_free = x;
    pthread_mutex_unlock(&t->ctx_lock);
}

/* Copies a host array to the device through the context's pinned buffer. */
static int stage_in(host_ctx *x, void *dev, void *pinned, const void *src, size_t bytes,
                    ember_error *err)
{
    memcpy(pinned, src, bytes);
    return EMBER_CUDA_CHECK(cudaMemcpyAsync(dev, pinned, bytes, cudaMemcpyHostToDevice, x->st),
                            err);
}

enum gop { G_FIND, G_FIND_OR_INSERT, G_INSERT_OR_ASSIGN, G_ASSIGN, G_ACCUM, G_APPLY, G_IMPORT,
           G_ERASE };

/* One call of the host-array backend. */
struct gcall {
    int op;
    const ember_op *eop;
    const uint64_t *keys;
    size_t n;
    const float *in;          /* values, deltas, grads or rows */
    float *out;               /* find, find_or_insert */
    uint8_t *found;
    const uint64_t *scores, *versions;
    uint64_t *erased;
};

static int gb_run(ember_gpu_table *t, const gcall *c, ember_error *err)
{
    host_ctx *x = NULL;
    int rc = ctx_get(t, c->n, &x, err);
    if (rc)
        return rc;
    size_t n = c->n;
    size_t in_bytes = n * (size_t)(c->op == G_IMPORT ? t->row_floats : t->dim) * sizeof(float);
    size_t out_bytes = n * (size_t)t->dim * sizeof(float);
    const uint64_t *ds = c->scores ? x->d_scores : NULL;
    uint8_t *df = c->found ? x->d_found : NULL;
    if ((rc = stage_in(x, x->d_keys, x->h_keys, c->keys, n * 8, err)) ||
        (c->in && (rc = stage_in(x, x->d_vals, x->h_vals, c->in, in_bytes, err))) ||
        (c->scores && (rc = stage_in(x, x->d_scores, x->h_scores, c->scores, n * 8, err))) ||
        (c->versions && (rc = stage_in(x, x->d_versions, x->h_versions, c->versions, n * 8, err))))
        goto out;
    switch (c->op) {
    case G_FIND:
        rc = ember_gpu_find_async(t, x->d_keys, n, x->d_vals, df, err, x->st);
        break;
    case G_FIND_OR_INSERT:
        rc = ember_gpu_find_or_insert_async(t, x->sc, c->eop, x->d_keys, n, x->d_vals, df, ds, err,
                                            x->st);
        break;
    case G_INSERT_OR_ASSIGN:
        rc = ember_gpu_insert_or_assign_async(t, x->sc, c->eop, x->d_keys, n, x->d_vals, ds, err,
                                              x->st);
        break;
    case G_ASSIGN:
        rc = ember_gpu_assign_async(t, x->sc, c->eop, x->d_keys, n, x->d_vals, df, ds, err, x->st);
        break;
    case G_ACCUM:
        rc = ember_gpu_accum_async(t, x->sc, c->eop, x->d_keys, n, x->d_vals, df, err, x->st);
        break;
    case G_APPLY:
        rc = ember_gpu_apply_gradients_async(t, x->sc, c->eop, x->d_keys, n, x->d_vals, ds, err,
                                             x->st);
        break;
    case G_IMPORT:
        rc = ember_gpu_import_async(t, x->sc, x->d_keys, n, x->d_vals, ds, x->d_versions, err,
                                    x->st);
        break;
    default:
        rc = ember_gpu_erase_async(t, x->sc, x->d_keys, n, err, x->st);
        break;
    }
    if (rc)
        goto out;
    if (c->out && (rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(x->h_vals, x->d_vals, out_bytes,
                                                         cudaMemcpyDeviceToHost, x->st),
                                         err)))
        goto out;
    if (c->found && (rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(x->h_found, x->d_found, n,
                                                           cudaMemcpyDeviceToHost, x->st),
                                           err)))
        goto out;
    if (c->op == G_ERASE) {
        ember_gpu_counts cnt;
        if ((rc = ember_gpu_scratch_counts(x->sc, x->st, &cnt, err)))
            goto out;
        if (c->erased)
            *c->erased = (uint64_t)(-cnt.size_delta);
    }
    if ((rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(x->st), err)))
        goto out;
    if (c->out)
        memcpy(c->out, x->h_vals, out_bytes);
    if (c->found)
        memcpy(c->found, x->h_found, n);
out:
    if (rc) {
        /* The stream may still hold work on this context's buffers: wait it out. */
        cudaStreamSynchronize(x->st);
        cudaGetLastError();
    }
    ctx_put(t, x);
    return rc;
}

static int gb_create(const ember_table_config *c, void **impl, ember_error *err)
{
    return ember_gpu_table_create(c, NULL, (ember_gpu_table **)impl, err);
}

static int gb_create_lanes1(const ember_table_config *c, void **impl, ember_error *err)
{
    ember_gpu_table_options o = {1u};
    return ember_gpu_table_create(c, &o, (ember_gpu_table **)impl, err);
}

static int gb_create_lanes16(const ember_table_config *c, void **impl, ember_error *err)
{
    ember_gpu_table_options o = {16u};
    return ember_gpu_table_create(c, &o, (ember_gpu_table **)impl, err);
}

static void gb_destroy(void *impl)
{
    ember_gpu_table_destroy((ember_gpu_table *)impl);
}

static int gb_find(void *impl, const uint64_t *keys, size_t n, float *values, uint8_t *found,
                   ember_error *err)
{
    gcall c = {G_FIND, NULL, keys, n, NULL, values, found, NULL, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_find_or_insert(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                             float *values, uint8_t *found, const uint64_t *scores,
                             ember_error *err)
{
    gcall c = {G_FIND_OR_INSERT, op, keys, n, NULL, values, found, scores, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_insert_or_assign(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                               const float *values, const uint64_t *scores, ember_error *err)
{
    gcall c = {G_INSERT_OR_ASSIGN, op, keys, n, values, NULL, NULL, scores, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_assign(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                     const float *values, uint8_t *found, const uint64_t *scores,
                     ember_error *err)
{
    gcall c = {G_ASSIGN, op, keys, n, values, NULL, found, scores, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_accum(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                    const float *deltas, uint8_t *found, ember_error *err)
{
    gcall c = {G_ACCUM, op, keys, n, deltas, NULL, found, NULL, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_apply(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                    const float *grads, const uint64_t *scores, ember_error *err)
{
    gcall c = {G_APPLY, op, keys, n, grads, NULL, NULL, scores, NULL, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_erase(void *impl, const uint64_t *keys, size_t n, uint64_t *erased,
                    ember_error *err)
{
    gcall c = {G_ERASE, NULL, keys, n, NULL, NULL, NULL, NULL, NULL, erased};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_import(void *impl, const uint64_t *keys, size_t n, const float *rows,
                     const uint64_t *scores, const uint64_t *versions, ember_error *err)
{
    gcall c = {G_IMPORT, NULL, keys, n, rows, NULL, NULL, scores, versions, NULL};
    return gb_run((ember_gpu_table *)impl, &c, err);
}

static int gb_clear(void *impl, ember_error *err)
{
    return ember_gpu_clear((ember_gpu_table *)impl, err);
}

static int gb_export(void *impl, const ember_export_filter *f, uint64_t *cursor, size_t max_rows,
                     uint64_t *keys, float *rows, uint64_t *scores, uint64_t *versions,
                     size_t *n_out, ember_error *err)
{
    return ember_gpu_export((ember_gpu_table *)impl, f, cursor, max_rows, keys, rows, scores,
                            versions, n_out, err);
}

/* Buckets [first, first + count) exactly: ember_gpu_export reads max_rows /
 * SLOTS buckets (at most its own per-call bound: the rest in further calls). */
static int gb_export_buckets(void *impl, uint64_t first, uint64_t count, uint64_t *keys,
                             float *rows, uint64_t *scores, uint64_t *versions, size_t *n_out,
                             ember_error *err)
{
    static const ember_export_filter full = {0, 0, 1};
    ember_gpu_table *t = (ember_gpu_table *)impl;
    uint64_t cursor = first, end = first + count;
    size_t n = 0, rf = t->row_floats;
    int rc = EMBER_OK;
    while (!rc && cursor < end) {
        size_t got = 0;
        rc = ember_gpu_export(t, &full, &cursor, (size_t)(end - cursor) * SLOTS, keys + n,
                              rows + n * rf, scores ? scores + n : NULL,
                              versions ? versions + n : NULL, &got, err);
        n += got;
    }
    *n_out = n;
    return rc;
}

static uint64_t gb_export_end(const void *impl)
{
    return ember_gpu_export_end((const ember_gpu_table *)impl);
}

static int gb_evict_below(void *impl, uint64_t score, uint64_t *evicted, ember_error *err)
{
    return ember_gpu_evict_below((ember_gpu_table *)impl, score, evicted, err);
}

static int gb_evict_to_size(void *impl, uint64_t target, uint64_t *evicted, ember_error *err)
{
    return ember_gpu_evict_to_size((ember_gpu_table *)impl, target, evicted, err);
}

static int gb_evict_versions_below(void *impl, uint64_t version, uint64_t *evicted,
                                   ember_error *err)
{
    return ember_gpu_evict_versions_below((ember_gpu_table *)impl, version, evicted, err);
}

static uint64_t gb_size(const void *impl)
{
    return ember_gpu_size((const ember_gpu_table *)impl);
}

static uint64_t gb_capacity(const void *impl)
{
    return ember_gpu_capacity((const ember_gpu_table *)impl);
}

static void gb_stats(const void *impl, ember_table_stats *out)
{
    ember_gpu_stats((const ember_gpu_table *)impl, out);
}

/* What ember_gpu_table_create allocates and counts (keep the two in step:
 * gpu.table_api compares this with a new table's stats). */
static void gb_footprint(const ember_table_config *c, uint64_t *bytes_host,
                         uint64_t *bytes_device)
{
    uint64_t nb = (c->capacity + SLOTS - 1) / SLOTS, slots = nb * SLOTS;
    uint64_t row_bytes = (uint64_t)((ember_table_config_row_floats(c) + 3u) & ~3u) * sizeof(float);
    uint64_t rows_hbm = slots;
    if (c->hbm_bytes) {
        uint64_t fit = c->hbm_bytes / row_bytes / SLOTS * SLOTS;
        if (fit < rows_hbm)
            rows_hbm = fit;
    }
    *bytes_device = nb * sizeof(uint32_t) * 2 + slots * (1 + 8 + 8 + 8) + sizeof(dev_state) +
                    256 * sizeof(unsigned long long) + rows_hbm * row_bytes +
                    (c->admission.min_count >= 2
                         ? ember_admission_sketch_bytes(c->admission.sketch_width)
                         : 0);
    *bytes_host = (slots - rows_hbm) * row_bytes + sizeof(ember_gpu_table);
}

/* One backend per find_lanes value: the same functions but create, so that a
 * table (and the tables growth builds for it) keeps its option. */
#define GPU_BACKEND(name_, create_)                                                   \
    static const ember_table_backend name_ = {                                        \
        "gpu",          create_,           gb_destroy,       gb_find,                  \
        gb_find_or_insert, gb_insert_or_assign, gb_assign,   gb_accum,                 \
        gb_apply,       gb_erase,          gb_clear,         gb_export,                \
        gb_export_end,  gb_import,         gb_evict_below,   gb_evict_to_size,         \
        gb_evict_versions_below, gb_size,  gb_capacity,      gb_stats,                 \
        gb_footprint,   gb_export_buckets,                                             \
    }
GPU_BACKEND(gpu_backend, gb_create);
GPU_BACKEND(gpu_backend_lanes1, gb_create_lanes1);
GPU_BACKEND(gpu_backend_lanes16, gb_create_lanes16);

const ember_table_backend *ember_table_gpu_backend(void)
{
    return &gpu_backend;
}

const ember_table_backend *ember_table_gpu_backend_find_lanes(unsigned find_lanes)
{
    switch (find_lanes) {
    case 0:
    case 8:
        return &gpu_backend;
    case 1:
        return &gpu_backend_lanes1;
    case 16:
        return &gpu_backend_lanes16;
    default:
        return NULL;
    }
}

ember_gpu_table *ember_gpu_table_of(ember_table *t)
{
    const ember_table_backend *b = t ? ember_table_backend_of(t) : NULL;
    if (!b || (b != &gpu_backend && b != &gpu_backend_lanes1 && b != &gpu_backend_lanes16))
        return NULL;
    return (ember_gpu_table *)ember_table_impl(t);
}

/*
 * gpu_table_create.cu — a table's life: create and destroy, its layout; the
 * scratch a stream's calls use; the per-call counters (zeroed when a call
 * starts, folded into the table's when it ends, admission aging) and what is
 * read from them (size, stats).
 */
#include <cub/cub.cuh>

#include "cuda/detail/gpu_table_impl.cuh"

/* ---- kernels: counters, admission aging, the scratch's indices ------------ */

__global__ void k_fold(const unsigned long long *counts, dev_state *st, uint64_t age_every)
{
    for (int k = 0; k < C_COUNT; k++)
        if (counts[k])
            st->c[k] += counts[k];
    st->age_now = 0;
    if (age_every) {
        unsigned long long marks = st->sightings / age_every;
        if (marks > st->aged_marks) {
            st->aged_marks = marks;
            st->age_now = 1;
        }
    }
}

__global__ void k_age(uint32_t *sketch, size_t n, const dev_state *st)
{
    if (!st->age_now)
        return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        sketch[i] >>= 1;
}

/* x[i] = i: the scratch's identity indices, the values sort_keys sorts. */
__global__ void k_iota(uint32_t *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = (uint32_t)i;
}

/* ---- a call's counters ---------------------------------------------------- */

/* Starts a call that counts: zero the scratch's call counters. */
int ember_gpu_call_begin_async(ember_gpu_table *t, ember_gpu_scratch *s, size_t n,
                               ember_error *err, cudaStream_t st)
{
    if (!s || s->t != t)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "scratch of another table");
    if (n > s->cap)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%zu keys exceed the scratch's %zu", n, s->cap);
    int rc = use_device(t, err);
    if (rc)
        return rc;
    return EMBER_CUDA_CHECK(
        cudaMemsetAsync(s->counts, 0, C_COUNT * sizeof(unsigned long long), st), err);
}

/* Ends it: fold the counts into the table and age the sketch if it is time. */
int ember_gpu_call_end_async(ember_gpu_table *t, ember_gpu_scratch *s, ember_error *err,
                             cudaStream_t st)
{
    k_fold<<<1, 1, 0, st>>>(s->counts, t->state, t->sketch ? t->age_every : 0);
    if (t->sketch) {
        size_t n = (size_t)EMBER_SKETCH_DEPTH * t->sketch_width;
        k_age<<<grid_flat(t, n), BLOCK, 0, st>>>(t->sketch, n, t->state);
    }
    return launched(err);
}

/* The whole-table calls' end: fold `counts` into the table's counters (no
 * aging: they sight no keys). */
int ember_gpu_fold_async(ember_gpu_table *t, const unsigned long long *counts, ember_error *err,
                         cudaStream_t st)
{
    k_fold<<<1, 1, 0, st>>>(counts, t->state, 0);
    return launched(err);
}

/* ---- create / destroy ---------------------------------------------------- */

static uint32_t round_pow2_u32(uint32_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

void ember_gpu_table_destroy(ember_gpu_table *t)
{
    if (!t)
        return;
    cudaSetDevice(t->device);
    while (t->ctx_free) {
        host_ctx *x = t->ctx_free;
        t->ctx_free = x->next;
        ember_gpu_ctx_free(x);
    }
    if (t->sync_stream)
        cudaStreamSynchronize(t->sync_stream);
    cudaFree(t->seq);
    cudaFree(t->bsize);
    cudaFree(t->ctrl);
    cudaFree(t->keys);
    cudaFree(t->scores);
    cudaFree(t->versions);
    cudaFree(t->rows_dev);
    if (t->rows_host)
        cudaFreeHost(t->rows_host);
    cudaFree(t->sketch);
    cudaFree(t->state);
    cudaFree(t->d_hist);
    cudaFreeHost(t->h_hist);
    cudaFreeHost(t->h_state);
    ember_gpu_export_bufs_free(t->ex);
    if (t->sync_stream)
        cudaStreamDestroy(t->sync_stream);
    pthread_mutex_destroy(&t->sync_lock);
    pthread_mutex_destroy(&t->ctx_lock);
    free(t);
}

/* cudaMalloc that counts, turning failure into RESOURCE_EXHAUSTED with a size. */
static int dev_alloc(ember_gpu_table *t, void **p, size_t bytes, const char *what,
                     ember_error *err)
{
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "cannot allocate %zu bytes of device memory for %s", bytes, what);
    }
    int rc = EMBER_CUDA_CHECK(e, err);
    if (!rc)
        t->bytes_device += bytes;
    return rc;
}

int ember_gpu_table_create(const ember_table_config *c, const ember_gpu_table_options *opt,
                           ember_gpu_table **out, ember_error *err)
{
    unsigned find_lanes = opt && opt->find_lanes ? opt->find_lanes : 8u;
    if (find_lanes != 1u && find_lanes != 8u && find_lanes != 16u)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "find_lanes %u: 1, 8 or 16",
                               find_lanes);
    int count = 0, rc = ember_cuda_device_count(&count, err);
    if (rc)
        return rc;
    if (count == 0)
        return ember_error_set(err, EMBER_UNAVAILABLE, "no CUDA device is visible");
    ember_gpu_table *t = (ember_gpu_table *)calloc(1, sizeof *t);
    if (!t)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    pthread_mutex_init(&t->sync_lock, NULL);
    pthread_mutex_init(&t->ctx_lock, NULL);
    t->cfg = *c;
    t->find_lanes = find_lanes;
    t->dim = c->dim;
    t->row_floats = ember_table_config_row_floats(c);
    t->stride = (t->row_floats + 3u) & ~3u;
    t->nb = (c->capacity + SLOTS - 1) / SLOTS;
    t->slots = t->nb * SLOTS;
    size_t row_bytes = (size_t)t->stride * sizeof(float);
    t->rows_hbm = t->slots;
    if (c->hbm_bytes) {
        uint64_t fit = c->hbm_bytes / row_bytes / SLOTS * SLOTS;
        if (fit < t->rows_hbm)
            t->rows_hbm = fit;
    }
    if ((rc = EMBER_CUDA_CHECK(cudaGetDevice(&t->device), err)) ||
        (rc = EMBER_CUDA_CHECK(
             cudaDeviceGetAttribute(&t->sms, cudaDevAttrMultiProcessorCount, t->device), err)))
        goto fail;
    if ((rc = EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&t->sync_stream, cudaStreamNonBlocking),
                               err)))
        goto fail;
    if ((rc = dev_alloc(t, (void **)&t->seq, t->nb * sizeof(uint32_t), "bucket locks", err)) ||
        (rc = dev_alloc(t, (void **)&t->bsize, t->nb * sizeof(uint32_t), "bucket sizes", err)) ||
        (rc = dev_alloc(t, (void **)&t->ctrl, t->slots, "control bytes", err)) ||
        (rc = dev_alloc(t, (void **)&t->keys, t->slots * 8, "keys", err)) ||
        (rc = dev_alloc(t, (void **)&t->scores, t->slots * 8, "scores", err)) ||
        (rc = dev_alloc(t, (void **)&t->versions, t->slots * 8, "versions", err)) ||
        (rc = dev_alloc(t, (void **)&t->state, sizeof(dev_state), "counters", err)) ||
        (rc = dev_alloc(t, (void **)&t->d_hist, 256 * sizeof(unsigned long long), "histogram",
                        err)))
        goto fail;
    if (t->rows_hbm &&
        (rc = dev_alloc(t, (void **)&t->rows_dev, t->rows_hbm * row_bytes, "rows", err)))
        goto fail;
    if (t->rows_hbm < t->slots) {
        size_t bytes = (t->slots - t->rows_hbm) * row_bytes;
        cudaError_t e = cudaHostAlloc((void **)&t->rows_host, bytes,
                                      cudaHostAllocMapped | cudaHostAllocPortable);
        if (e == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            t->rows_host = NULL;
            rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                                 "cannot allocate %zu bytes of pinned host memory for rows",
                                 bytes);
            goto fail;
        }
        if ((rc = EMBER_CUDA_CHECK(e, err)))
            goto fail;
        t->bytes_host += bytes;
    }
    if ((rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&t->h_state, sizeof(dev_state), 0), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&t->h_hist, 256 * 8, 0), err)))
        goto fail;
    if (c->admission.min_count >= 2) {
        t->sketch_width = round_pow2_u32(c->admission.sketch_width ? c->admission.sketch_width
                                                                   : EMBER_SKETCH_DEFAULT_WIDTH);
        t->age_every = (uint64_t)t->sketch_width * 10u;
        size_t bytes = (size_t)EMBER_SKETCH_DEPTH * t->sketch_width * sizeof(uint32_t);
        if ((rc = dev_alloc(t, (void **)&t->sketch, bytes, "the admission sketch", err)) ||
            (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->sketch, 0, bytes, t->sync_stream), err)))
            goto fail;
    }
    if ((rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->seq, 0, t->nb * 4, t->sync_stream), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->bsize, 0, t->nb * 4, t->sync_stream), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->ctrl, EMBER_CTRL_EMPTY, t->slots, t->sync_stream),
                               err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->keys, 0xff, t->slots * 8, t->sync_stream), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->scores, 0, t->slots * 8, t->sync_stream), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->versions, 0, t->slots * 8, t->sync_stream),
                               err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->state, 0, sizeof(dev_state), t->sync_stream),
                               err)) ||
        (rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(t->sync_stream), err)))
        goto fail;
    *out = t;
    return EMBER_OK;
fail:
    ember_gpu_table_destroy(t);
    return rc;
}

void ember_gpu_table_layout(const ember_gpu_table *t, ember_gpu_layout *out)
{
    out->device = t->device;
    out->rows_hbm = t->rows_hbm;
    out->rows_host = t->slots - t->rows_hbm;
    out->row_stride = t->stride;
    out->bytes_device = t->bytes_device;
    out->bytes_host = t->bytes_host;
}

/* ---- scratch ------------------------------------------------------------- */

void ember_gpu_scratch_destroy(ember_gpu_scratch *s)
{
    if (!s)
        return;
    cudaSetDevice(s->t->device);
    cudaFree(s->map);
    cudaFree(s->pos);
    cudaFree(s->sort_keys);
    cudaFree(s->iota);
    cudaFree(s->sort_idx);
    cudaFree(s->cub_tmp);
    cudaFree(s->counts);
    cudaFreeHost(s->h_counts);
    free(s);
}

int ember_gpu_scratch_create(ember_gpu_table *t, size_t max_keys, ember_gpu_scratch **out,
                             ember_error *err)
{
    if (max_keys == 0 || max_keys > UINT32_MAX / 4)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "scratch of %zu keys", max_keys);
    int rc = use_device(t, err);
    if (rc)
        return rc;
    ember_gpu_scratch *s = (ember_gpu_scratch *)calloc(1, sizeof *s);
    if (!s)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    s->t = t;
    s->cap = max_keys;
    s->map_cap = 2;
    while (s->map_cap < 2 * max_keys)
        s->map_cap <<= 1;
    if ((rc = EMBER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
                                   (void *)NULL, s->cub_bytes, (const uint64_t *)NULL,
                                   (uint64_t *)NULL, (const uint32_t *)NULL, (uint32_t *)NULL,
                                   (int)max_keys),
                               err)))
        goto fail;
    if ((rc = EMBER_CUDA_CHECK(cudaMalloc(&s->map, s->map_cap * sizeof(map_ent)), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->pos, max_keys * 4), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->sort_keys, max_keys * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->iota, max_keys * 4), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->sort_idx, max_keys * 4), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->cub_tmp, s->cub_bytes), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&s->counts, C_COUNT * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&s->h_counts, C_COUNT * 8, 0), err)))
        goto fail;
    /* On the table's own stream, waited for alone: no device-wide sync. */
    pthread_mutex_lock(&t->sync_lock);
    k_iota<<<grid_flat(t, max_keys), BLOCK, 0, t->sync_stream>>>(s->iota, max_keys);
    if (!(rc = launched(err)))
        rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(t->sync_stream), err);
    pthread_mutex_unlock(&t->sync_lock);
    if (rc)
        goto fail;
    *out = s;
    return EMBER_OK;
fail:
    ember_gpu_scratch_destroy(s);
    return rc;
}

size_t ember_gpu_scratch_capacity(const ember_gpu_scratch *s)
{
    return s->cap;
}

int ember_gpu_scratch_counts(const ember_gpu_scratch *s, cudaStream_t stream,
                             ember_gpu_counts *out, ember_error *err)
{
    int rc = use_device(s->t, err);
    if (rc ||
        (rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(s->h_counts, s->counts, C_COUNT * 8,
                                               cudaMemcpyDeviceToHost, stream),
                               err)) ||
        (rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(stream), err)))
        return rc;
    out->size_delta = (int64_t)s->h_counts[C_SIZE_ADD] - (int64_t)s->h_counts[C_SIZE_SUB];
    out->evictions = s->h_counts[C_EVICTIONS];
    out->refused = s->h_counts[C_REFUSED];
    out->admission_drops = s->h_counts[C_DROPS];
    return EMBER_OK;
}

/* ---- size and stats ------------------------------------------------------ */

/* Reads the table's device counters into the pinned mirror. */
static int read_state(const ember_gpu_table *ct, ember_error *err)
{
    ember_gpu_table *t = (ember_gpu_table *)ct;
    pthread_mutex_lock(&t->sync_lock);
    int rc = use_device(t, err);
    if (!rc)
        rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(t->h_state, t->state, sizeof(dev_state),
                                              cudaMemcpyDeviceToHost, t->sync_stream), err);
    if (!rc)
        rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(t->sync_stream), err);
    pthread_mutex_unlock(&t->sync_lock);
    return rc;
}

uint64_t ember_gpu_size(const ember_gpu_table *t)
{
    if (read_state(t, NULL))
        return 0;
    unsigned long long add = t->h_state->c[C_SIZE_ADD], sub = t->h_state->c[C_SIZE_SUB];
    return add > sub ? add - sub : 0;
}

uint64_t ember_gpu_capacity(const ember_gpu_table *t)
{
    return t->slots;
}

void ember_gpu_stats(const ember_gpu_table *t, ember_table_stats *out)
{
    if (read_state(t, NULL))
        return;
    const unsigned long long *c = t->h_state->c;
    out->size = c[C_SIZE_ADD] > c[C_SIZE_SUB] ? c[C_SIZE_ADD] - c[C_SIZE_SUB] : 0;
    out->capacity = t->slots;
    out->num_buckets = t->nb;
    out->evictions = c[C_EVICTIONS];
    out->evicted = c[C_EVICTED];
    out->insert_refused = c[C_REFUSED];
    out->admission_drops = c[C_DROPS];
    out->bytes_device = t->bytes_device;
    out->bytes_host = t->bytes_host + sizeof *t;
    out->slots_device = t->rows_hbm;
    out->slots_host = t->slots - t->rows_hbm;
}

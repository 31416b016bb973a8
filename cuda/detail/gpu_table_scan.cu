/*
 * gpu_table_scan.cu — erase by key, and the calls that walk the whole table
 * bucket by bucket on the table's own stream: clear, evict (below a score, or to
 * a size through a radix selection of the k-th score), export.
 */
#include <cub/cub.cuh>

#include "cuda/detail/gpu_table_impl.cuh"

/* ---- kernels: erase, clear, evict, export --------------------------------- */

/* Frees slot `s` of a locked bucket whose control bytes were `c` before. */
static __device__ void erase_slot(const tile_t &tile, const tview &v, uint64_t bucket, int s,
                           const ctrl_share<TILE> &c)
{
    unsigned lane = tile.thread_rank();
    int empty = 0;
#pragma unroll
    for (unsigned w = 0; w < ctrl_share<TILE>::WORDS; w++)
        empty |= __vcmpeq4(c.w[w], 0x80808080u) != 0;
    /* A group (EMBER_GROUP_SLOTS) spans GROUP_LANES lanes: pool their flags. */
    const unsigned group_lanes = EMBER_GROUP_SLOTS / ctrl_share<TILE>::BPL;
    for (unsigned o = 1; o < group_lanes; o <<= 1)
        empty |= tile.shfl_xor(empty, o);
    int group_empty = tile.shfl(empty, (unsigned)s / ctrl_share<TILE>::BPL);
    uint32_t left = 0;
    if (lane == 0) {
        v.ctrl[bucket * SLOTS + s] = group_empty ? EMBER_CTRL_EMPTY : EMBER_CTRL_ERASED;
        v.keys[bucket * SLOTS + s] = EMBER_KEY_EMPTY;
        left = __ldcg(v.bsize + bucket) - 1u;
        v.bsize[bucket] = left;
    }
    left = tile.shfl(left, 0);
    tile.sync();
    if (left == 0)
        ((unsigned long long *)(v.ctrl + bucket * SLOTS))[lane] = CTRL_EMPTY_WORD;
}

__global__ void __launch_bounds__(BLOCK, 4) k_erase(tview v, const uint64_t *keys, size_t n, unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    TILE_LOOP(n) {
        uint64_t key = keys[i];
        if (ember_key_is_reserved(key))
            continue;
        place p = place_of(v, key);
        prefetch_bucket(v, p.bucket);
        lock_bucket(tile, v.seq + p.bucket);
        ctrl_share<TILE> c = load_share<TILE>(v, p.bucket, lane);
        probe_res r = probe(tile, v, p, key, c);
        if (r.slot >= 0) {
            erase_slot(tile, v, p.bucket, r.slot, c);
            if (lane == 0)
                bc_add(&bc, C_SIZE_SUB, 1);
        }
        unlock_bucket(tile, v.seq + p.bucket);
    }
    bc_flush(&bc, counts);
}

__global__ void k_clear(tview v, unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    TILE_LOOP(v.nb) {
        lock_bucket(tile, v.seq + i);
        ((unsigned long long *)(v.ctrl + i * SLOTS))[lane] = CTRL_EMPTY_WORD;
        if (lane == 0) {
            bc_add(&bc, C_SIZE_SUB, __ldcg(v.bsize + i));
            v.bsize[i] = 0;
        }
        unlock_bucket(tile, v.seq + i);
    }
    bc_flush(&bc, counts);
}

/* Erases entries whose `col` (the scores, or the versions) < below, and up to
 * *ties (shared budget) with col == below. */
__global__ void k_evict(tview v, const uint64_t *col, uint64_t below, unsigned long long ties,
                        unsigned long long *ties_used, unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    TILE_LOOP(v.nb) {
        lock_bucket(tile, v.seq + i);
        uint64_t c = load_ctrl(v, i, lane);
        int empty = 0;
        for (unsigned k = 0; k < 8; k++)
            empty |= ((c >> (8 * k)) & 0xffu) == EMBER_CTRL_EMPTY;
        empty |= tile.shfl_xor(empty, 1);
        uint64_t nc = c;
        unsigned gone = 0;
        for (unsigned k = 0; k < 8; k++) {
            unsigned byte = (unsigned)(c >> (8 * k)) & 0xffu;
            if (byte & 0x80u)
                continue;
            unsigned s = lane * 8u + k;
            uint64_t sc = __ldcg(col + i * SLOTS + s);
            int go = sc < below;
            if (!go && sc == below && ties)
                go = atomicAdd(ties_used, 1ull) < ties;
            if (go) {
                unsigned long long nb = empty ? EMBER_CTRL_EMPTY : EMBER_CTRL_ERASED;
                nc = (nc & ~(0xffull << (8 * k))) | (nb << (8 * k));
                v.keys[i * SLOTS + s] = EMBER_KEY_EMPTY;
                gone++;
            }
        }
        ((unsigned long long *)(v.ctrl + i * SLOTS))[lane] = nc;
        for (unsigned o = TILE / 2; o; o >>= 1)
            gone += tile.shfl_xor(gone, o);
        uint32_t left = 0;
        if (lane == 0 && gone) {
            left = __ldcg(v.bsize + i) - gone;
            v.bsize[i] = left;
            bc_add(&bc, C_SIZE_SUB, gone);
            bc_add(&bc, C_EVICTED, gone);
        }
        left = tile.shfl(left, 0);
        tile.sync();
        if (gone && left == 0)
            ((unsigned long long *)(v.ctrl + i * SLOTS))[lane] = CTRL_EMPTY_WORD;
        unlock_bucket(tile, v.seq + i);
    }
    bc_flush(&bc, counts);
}

/* Histogram of byte (score >> shift) & 0xff over stored scores matching prefix. */
__global__ void k_hist(tview v, uint64_t prefix, uint64_t mask, int shift,
                       unsigned long long *hist)
{
    __shared__ unsigned int h[256];
    for (unsigned k = threadIdx.x; k < 256; k += blockDim.x)
        h[k] = 0;
    __syncthreads();
    size_t total = v.nb * SLOTS;
    for (size_t s = (size_t)blockIdx.x * blockDim.x + threadIdx.x; s < total;
         s += (size_t)gridDim.x * blockDim.x) {
        if (__ldcg(v.ctrl + s) & 0x80u)
            continue;
        uint64_t sc = __ldcg(v.scores + s);
        if ((sc & mask) == prefix)
            atomicAdd(&h[(sc >> shift) & 0xffu], 1u);
    }
    __syncthreads();
    for (unsigned k = threadIdx.x; k < 256; k += blockDim.x)
        if (h[k])
            atomicAdd(&hist[k], (unsigned long long)h[k]);
}

/* Buckets [b0, b0+nbk): each bucket's passing rows go to its own 128-entry region,
 * compacted in slot order; counts[b - b0] = how many. */
__global__ void k_export(tview v, uint64_t b0, uint64_t nbk, uint64_t min_score,
                         uint64_t after_version, uint32_t width, uint64_t *ok, float *orows,
                         uint64_t *osc, uint64_t *over, uint32_t *ocnt)
{
    TILE_LOOP(nbk) {
        uint64_t b = b0 + i;
        lock_bucket(tile, v.seq + b);
        uint64_t c = load_ctrl(v, b, lane);
        unsigned pass = 0;
        for (unsigned k = 0; k < 8; k++) {
            unsigned s = lane * 8u + k;
            if (((c >> (8 * k)) & 0x80u) == 0 && __ldcg(v.scores + b * SLOTS + s) >= min_score &&
                (after_version == 0 || __ldcg(v.versions + b * SLOTS + s) > after_version))
                pass |= 1u << k;
        }
        unsigned mine = __popc(pass), before = mine;
        for (unsigned o = 1; o < TILE; o <<= 1) {   /* inclusive scan over lanes */
            unsigned x = tile.shfl_up(before, o);
            if (lane >= o)
                before += x;
        }
        unsigned total = tile.shfl(before, TILE - 1);
        before -= mine;
        /* Every lane's entries, one at a time, written by the whole tile. */
        for (unsigned src = 0; src < TILE; src++) {
            unsigned sp = tile.shfl(pass, src), sb = tile.shfl(before, src);
            for (unsigned k = 0; k < 8; k++) {
                if (!(sp & (1u << k)))
                    continue;
                unsigned s = src * 8u + k;
                size_t o = i * SLOTS + sb++;
                tile_copy(lane, orows + o * width, row_ptr(v, b * SLOTS + s), width);
                if (lane == 0) {
                    ok[o] = __ldcg(v.keys + b * SLOTS + s);
                    osc[o] = __ldcg(v.scores + b * SLOTS + s);
                    over[o] = __ldcg(v.versions + b * SLOTS + s);
                }
            }
        }
        if (lane == 0)
            ocnt[i] = total;
        unlock_bucket(tile, v.seq + b);
    }
}

/* ---- stream-ordered operations ------------------------------------------- */

int ember_gpu_erase_async(ember_gpu_table *t, ember_gpu_scratch *s, const uint64_t *keys, size_t n,
                          ember_error *err, cudaStream_t stream)
{
    int rc = ember_gpu_call_begin_async(t, s, n, err, stream);
    if (rc || n == 0)
        return rc;
    k_erase<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), keys, n, s->counts);
    if ((rc = launched(err)))
        return rc;
    return ember_gpu_call_end_async(t, s, err, stream);
}

/* ---- synchronous whole-table operations ---------------------------------- */

/* Runs on the table's own stream under sync_lock; `counts` is t->d_hist reused
 * (the first C_COUNT words) as the call's counters, folded in at the end. */
static int sync_fold(ember_gpu_table *t, unsigned long long *out_counts, ember_error *err)
{
    int rc;
    if (out_counts &&
        (rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(out_counts, t->d_hist, C_COUNT * 8,
                                               cudaMemcpyDeviceToHost, t->sync_stream),
                               err)))
        return rc;
    if ((rc = ember_gpu_fold_async(t, t->d_hist, err, t->sync_stream)))
        return rc;
    return EMBER_CUDA_CHECK(cudaStreamSynchronize(t->sync_stream), err);
}

int ember_gpu_clear(ember_gpu_table *t, ember_error *err)
{
    pthread_mutex_lock(&t->sync_lock);
    int rc = use_device(t, err);
    if (!rc)
        rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->d_hist, 0, 256 * 8, t->sync_stream), err);
    if (!rc) {
        k_clear<<<grid_for(t, t->nb), BLOCK, 0, t->sync_stream>>>(view_of(t), t->d_hist);
        rc = launched(err);
    }
    if (!rc)
        rc = sync_fold(t, NULL, err);
    pthread_mutex_unlock(&t->sync_lock);
    return rc;
}

/* Evicts entries whose score (by_version: version) is below `below`, and `ties`
 * entries equal to it; *n = how many went. Caller holds sync_lock. */
static int evict_scan(ember_gpu_table *t, uint64_t below, uint64_t ties, int by_version,
                      uint64_t *n, ember_error *err)
{
    tview v = view_of(t);
    int rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->d_hist, 0, 256 * 8, t->sync_stream), err);
    if (rc)
        return rc;
    /* d_hist[0..C_COUNT): counters; d_hist[C_COUNT]: ties used. */
    k_evict<<<grid_for(t, t->nb), BLOCK, 0, t->sync_stream>>>(
        v, by_version ? v.versions : v.scores, below, ties, t->d_hist + C_COUNT, t->d_hist);
    if ((rc = launched(err)) || (rc = sync_fold(t, t->h_hist, err)))
        return rc;
    *n = t->h_hist[C_EVICTED];
    return EMBER_OK;
}

int ember_gpu_evict_below(ember_gpu_table *t, uint64_t score, uint64_t *evicted,
                          ember_error *err)
{
    uint64_t n = 0;
    int rc = EMBER_OK;
    if (score) {
        pthread_mutex_lock(&t->sync_lock);
        rc = use_device(t, err);
        if (!rc)
            rc = evict_scan(t, score, 0, 0, &n, err);
        pthread_mutex_unlock(&t->sync_lock);
    }
    if (!rc && evicted)
        *evicted = n;
    return rc;
}

int ember_gpu_evict_versions_below(ember_gpu_table *t, uint64_t version, uint64_t *evicted,
                                   ember_error *err)
{
    uint64_t n = 0;
    int rc = EMBER_OK;
    if (version) {
        pthread_mutex_lock(&t->sync_lock);
        rc = use_device(t, err);
        if (!rc)
            rc = evict_scan(t, version, 0, 1, &n, err);
        pthread_mutex_unlock(&t->sync_lock);
    }
    if (!rc && evicted)
        *evicted = n;
    return rc;
}

/* The k-th smallest stored score by radix selection, a byte at a time. */
static int kth_score(ember_gpu_table *t, uint64_t k, uint64_t *cut, uint64_t *below,
                     ember_error *err)
{
    uint64_t prefix = 0, mask = 0, smaller = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        int rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->d_hist, 0, 256 * 8, t->sync_stream), err);
        if (rc)
            return rc;
        k_hist<<<grid_flat(t, t->slots), BLOCK, 0, t->sync_stream>>>(view_of(t), prefix, mask,
                                                                    shift, t->d_hist);
        if ((rc = launched(err)) ||
            (rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(t->h_hist, t->d_hist, 256 * 8,
                                                   cudaMemcpyDeviceToHost, t->sync_stream),
                                   err)) ||
            (rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(t->sync_stream), err)))
            return rc;
        unsigned d = 0;
        while (d < 255 && k >= t->h_hist[d]) {
            k -= t->h_hist[d];
            smaller += t->h_hist[d];
            d++;
        }
        prefix |= (uint64_t)d << shift;
        mask |= 0xffull << shift;
    }
    *cut = prefix;
    *below = smaller;
    return EMBER_OK;
}

int ember_gpu_evict_to_size(ember_gpu_table *t, uint64_t target, uint64_t *evicted,
                            ember_error *err)
{
    uint64_t n = 0, size = ember_gpu_size(t);
    int rc = EMBER_OK;
    if (size > target) {
        pthread_mutex_lock(&t->sync_lock);
        uint64_t excess = size - target, cut, below;
        rc = use_device(t, err);
        if (!rc)
            rc = kth_score(t, excess - 1, &cut, &below, err);
        if (!rc)
            rc = evict_scan(t, cut, excess - below, 0, &n, err);
        pthread_mutex_unlock(&t->sync_lock);
    }
    if (!rc && evicted)
        *evicted = n;
    return rc;
}

/* Export chunk buffers: per-bucket regions (SLOTS entries each) that k_export
 * fills, and the dense arrays k_export_compact packs them into. */
struct export_bufs {
    size_t rows;                     /* region entries = buckets × SLOTS */
    uint64_t *keys, *scores, *versions, *dkeys, *dscores, *dversions;
    float *rows_buf, *drows;
    uint32_t *counts, *offs;
    void *tmp;
    size_t tmp_bytes;
    uint32_t *h_tail;                /* pinned: last bucket's offset and count */
};

void ember_gpu_export_bufs_free(export_bufs *x)
{
    if (!x)
        return;
    cudaFree(x->keys);
    cudaFree(x->scores);
    cudaFree(x->versions);
    cudaFree(x->dkeys);
    cudaFree(x->dscores);
    cudaFree(x->dversions);
    cudaFree(x->rows_buf);
    cudaFree(x->drows);
    cudaFree(x->counts);
    cudaFree(x->offs);
    cudaFree(x->tmp);
    cudaFreeHost(x->h_tail);
    free(x);
}

/* Buffers for chunks of `nbk` buckets. Caller holds sync_lock. */
static int export_reserve(ember_gpu_table *t, size_t nbk, ember_error *err)
{
    size_t rows = nbk * SLOTS;
    if (t->ex && t->ex->rows >= rows)
        return EMBER_OK;
    ember_gpu_export_bufs_free(t->ex);
    t->ex = (export_bufs *)calloc(1, sizeof *t->ex);
    if (!t->ex)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    export_bufs *x = t->ex;
    size_t rb = rows * (size_t)t->row_floats * sizeof(float);
    int rc;
    if ((rc = EMBER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum((void *)NULL, x->tmp_bytes,
                                                             (const uint32_t *)NULL,
                                                             (uint32_t *)NULL, (int)nbk),
                               err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->keys, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->scores, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->versions, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->dkeys, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->dscores, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->dversions, rows * 8), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->rows_buf, rb), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->drows, rb), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->counts, nbk * 4), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->offs, nbk * 4), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaMalloc(&x->tmp, x->tmp_bytes ? x->tmp_bytes : 1), err)) ||
        (rc = EMBER_CUDA_CHECK(cudaHostAlloc((void **)&x->h_tail, 2 * sizeof(uint32_t), 0),
                               err))) {
        ember_gpu_export_bufs_free(x);
        t->ex = NULL;
        return rc;
    }
    x->rows = rows;
    return EMBER_OK;
}

/* Packs each bucket's region entries [0, counts[i]) to offs[i] in the dense arrays. */
__global__ void k_export_compact(uint64_t nbk, uint32_t width, const uint32_t *counts,
                                 const uint32_t *offs, const uint64_t *keys, const float *rows,
                                 const uint64_t *scores, const uint64_t *versions,
                                 uint64_t *dkeys, float *drows, uint64_t *dscores,
                                 uint64_t *dversions)
{
    cg::thread_block_tile<TILE> tile = cg::tiled_partition<TILE>(cg::this_thread_block());
    unsigned lane = tile.thread_rank();
    size_t tiles = (size_t)gridDim.x * TILES_PER_BLOCK;
    for (size_t i = (size_t)blockIdx.x * TILES_PER_BLOCK + threadIdx.x / TILE; i < nbk;
         i += tiles) {
        uint32_t c = counts[i];
        size_t from = i * SLOTS, to = offs[i];
        for (uint32_t k = lane; k < c; k += TILE) {
            dkeys[to + k] = keys[from + k];
            dscores[to + k] = scores[from + k];
            dversions[to + k] = versions[from + k];
        }
        for (uint32_t k = 0; k < c; k++)
            tile_copy(lane, drows + (to + k) * width, rows + (from + k) * width, width);
    }
}

/* Buckets per export call: what max_rows allows, at most 8192 (1 M rows). */
#define EXPORT_MAX_BUCKETS 8192u

int ember_gpu_export(ember_gpu_table *t, const ember_export_filter *f, uint64_t *cursor,
                     size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                     uint64_t *versions, size_t *n_out, ember_error *err)
{
    ember_export_filter all = {0, 0, 0};
    if (!f)
        f = &all;
    uint32_t width = f->full_rows ? t->row_floats : t->dim;
    uint64_t b0 = *cursor;
    *n_out = 0;
    if (b0 >= t->nb)
        return EMBER_OK;
    uint64_t nbk = max_rows / SLOTS;
    if (nbk > EXPORT_MAX_BUCKETS)
        nbk = EXPORT_MAX_BUCKETS;
    if (nbk > t->nb - b0)
        nbk = t->nb - b0;
    if (nbk == 0)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "max_rows %zu < %u", max_rows, SLOTS);
    pthread_mutex_lock(&t->sync_lock);
    cudaStream_t st = t->sync_stream;
    size_t rb = (size_t)width * sizeof(float);
    int rc = use_device(t, err);
    if (!rc)
        rc = export_reserve(t, nbk, err);
    export_bufs *x = t->ex;
    if (!rc) {
        k_export<<<grid_for(t, nbk), BLOCK, 0, st>>>(view_of(t), b0, nbk, f->min_score,
                                                     f->after_version, width, x->keys,
                                                     x->rows_buf, x->scores, x->versions,
                                                     x->counts);
        rc = launched(err);
    }
    size_t tmp = x ? x->tmp_bytes : 0;
    if (!rc)
        rc = EMBER_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(x->tmp, tmp, x->counts, x->offs,
                                                            (int)nbk, st),
                              err);
    if (!rc) {
        k_export_compact<<<grid_for(t, nbk), BLOCK, 0, st>>>(
            nbk, width, x->counts, x->offs, x->keys, x->rows_buf, x->scores, x->versions,
            x->dkeys, x->drows, x->dscores, x->dversions);
        rc = launched(err);
    }
    if (!rc &&
        !(rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(x->h_tail, x->offs + nbk - 1, 4,
                                                cudaMemcpyDeviceToHost, st), err)) &&
        !(rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(x->h_tail + 1, x->counts + nbk - 1, 4,
                                                cudaMemcpyDeviceToHost, st), err)))
        rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(st), err);
    size_t n = rc ? 0 : (size_t)x->h_tail[0] + x->h_tail[1];
    /* Straight into the caller's arrays: DMA where they are pinned, the driver's
     * staging where they are not. */
    if (!rc && n &&
        !(rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(keys, x->dkeys, n * 8, cudaMemcpyDeviceToHost,
                                                st), err)) &&
        !(rc = EMBER_CUDA_CHECK(cudaMemcpyAsync(rows, x->drows, n * rb, cudaMemcpyDeviceToHost,
                                                st), err)) &&
        !(rc = (scores ? EMBER_CUDA_CHECK(cudaMemcpyAsync(scores, x->dscores, n * 8,
                                                          cudaMemcpyDeviceToHost, st), err)
                       : EMBER_OK)) &&
        !(rc = (versions ? EMBER_CUDA_CHECK(cudaMemcpyAsync(versions, x->dversions, n * 8,
                                                            cudaMemcpyDeviceToHost, st), err)
                         : EMBER_OK)))
        rc = EMBER_CUDA_CHECK(cudaStreamSynchronize(st), err);
    if (!rc) {
        *n_out = n;
        *cursor = b0 + nbk;
    }
    pthread_mutex_unlock(&t->sync_lock);
    return rc;
}

uint64_t ember_gpu_export_end(const ember_gpu_table *t)
{
    return t->nb;
}

/*
 * gpu_table_write.cu — the writes: insert_or_assign, assign and import through a
 * last-occurrence map of the call's keys (the last occurrence writes); accum and
 * apply_gradients through a stable radix sort of (key, index), so one tile adds
 * a key's inputs in batch order, then one optimizer step (optimizer updates).
 */
#include <cub/cub.cuh>

#include "cuda/detail/gpu_table_impl.cuh"

/* ---- kernels: dedup map (last occurrence wins) ---------------------------- */

__global__ void k_map_build(const uint64_t *keys, size_t n, map_ent *map, uint32_t *pos,
                            size_t mask)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t key = keys[i];
        if (ember_key_is_reserved(key)) {
            pos[i] = 0xffffffffu;
            continue;
        }
        size_t h = (size_t)ember_mix64(key) & mask;
        for (;;) {
            unsigned long long prev = atomicCAS(&map[h].key, (unsigned long long)EMBER_KEY_EMPTY,
                                                (unsigned long long)key);
            if (prev == EMBER_KEY_EMPTY || prev == key) {
                atomicMin(&map[h].last_inv, ~(uint32_t)i);
                atomicAdd(&map[h].count_m1, 1u);
                pos[i] = (uint32_t)h;
                break;
            }
            h = (h + 1) & mask;
        }
    }
}

/* The last occurrence's index and the count of the key at map entry h. */
static __device__ __forceinline__ void map_read(const map_ent *map, uint32_t h, uint32_t *last,
                                         uint32_t *count)
{
    uint4 e = __ldcg((const uint4 *)(map + h));
    *last = ~e.z;
    *count = e.w + 1u;
}

enum write_kind { W_ASSIGN, W_IMPORT };

/* insert_or_assign, assign, import: the last occurrence of each key writes. */
__global__ void __launch_bounds__(BLOCK, 4) k_write(tview v, ember_op op, int kind, int insert, const uint64_t *keys,
                        size_t n, const float *values, uint8_t *found, const uint64_t *scores,
                        const uint64_t *versions, const map_ent *map,
                        const uint32_t *pos, unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    uint32_t width = kind == W_IMPORT ? v.row_floats : v.dim;
    WALK_LOOP(keys, n) {
        uint32_t h = pos[i];
        if (h == 0xffffffffu) {
            if (found && lane == 0)
                found[i] = 0;
            continue;
        }
        uint32_t last, count;
        map_read(map, h, &last, &count);
        if (last != (uint32_t)i)
            continue;                   /* a later occurrence writes; found copied after */
        uint64_t key = w.cur;
        place p = place_of(v, key);
        lock_bucket(tile, v.seq + p.bucket);
        probe_res r = probe(tile, v, p, key, load_share<TILE>(v, p.bucket, lane));
        int s = r.slot, is_new = s < 0;
        uint64_t score;
        if (kind == W_IMPORT)
            score = scores[i];
        else
            score = ember_score_next(&op.score, is_new ? 0 : __ldcg(v.scores + p.bucket * SLOTS + s),
                                     is_new, count, custom_of(scores, i), scores != NULL);
        if (is_new && insert)
            s = claim_slot(tile, v, p, key, r.free_slot, score, &bc);
        if (s >= 0) {
            uint64_t at = p.bucket * SLOTS + s;
            float *row = row_ptr(v, at);
            const float *in = values + i * width;
            if ((width & 3u) == 0 && aligned16(in)) {
                for (uint32_t j = lane * 4u; j < width; j += TILE * 4u)
                    *(float4 *)(row + j) = *(const float4 *)(in + j);
            } else {
                for (uint32_t j = lane; j < width; j += TILE)
                    row[j] = in[j];
            }
            if (kind != W_IMPORT && is_new)
                tile_init_slots(v, lane, row);
            if (lane == 0) {
                v.scores[at] = score;
                v.versions[at] = kind == W_IMPORT ? versions[i] : op.version;
            }
        }
        unlock_bucket(tile, v.seq + p.bucket);
        if (found && lane == 0)
            found[i] = !is_new;
    }
    bc_flush(&bc, counts);
}

/* found[i] of an earlier occurrence = its last occurrence's. */
__global__ void k_found_copy(size_t n, uint8_t *found, const map_ent *map, const uint32_t *pos)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = pos[i];
        if (h == 0xffffffffu)
            continue;
        uint32_t last, count;
        map_read(map, h, &last, &count);
        if (last != (uint32_t)i)
            found[i] = found[last];
    }
}

/* ---- kernels: sorted updates (accum, apply_gradients) --------------------- */

/* The tile at sorted position i owns a distinct key if it starts its run. */
static __device__ __forceinline__ size_t run_end(const uint64_t *sk, size_t i, size_t n)
{
    uint64_t key = sk[i];
    size_t e = i + 1;
    while (e < n && sk[e] == key)
        e++;
    return e;
}

__global__ void __launch_bounds__(BLOCK, 4) k_accum(tview v, ember_op op, const uint64_t *sk, const uint32_t *si, size_t n,
                        const float *deltas, uint8_t *found)
{
    TILE_LOOP(n) {
        uint64_t key = sk[i];
        if (i > 0 && sk[i - 1] == key)
            continue;
        size_t e = run_end(sk, i, n);
        int exists = 0;
        if (!ember_key_is_reserved(key)) {
            place p = place_of(v, key);
            prefetch_bucket(v, p.bucket);
            lock_bucket(tile, v.seq + p.bucket);
            probe_res r = probe(tile, v, p, key, load_share<TILE>(v, p.bucket, lane));
            if (r.slot >= 0) {
                exists = 1;
                uint64_t at = p.bucket * SLOTS + r.slot;
                float *row = row_ptr(v, at);
                for (uint32_t j = lane; j < v.dim; j += TILE) {
                    float w = __ldcg(row + j);
                    for (size_t q = i; q < e; q++)
                        w += deltas[(size_t)si[q] * v.dim + j];
                    row[j] = w;
                }
                if (lane == 0) {
                    v.scores[at] = ember_score_next(&op.score, __ldcg(v.scores + at), 0,
                                                    (uint32_t)(e - i), 0, 0);
                    v.versions[at] = op.version;
                }
            }
            unlock_bucket(tile, v.seq + p.bucket);
        }
        if (found)
            for (size_t q = i + lane; q < e; q += TILE)
                found[si[q]] = exists;
    }
}

/* Columns a lane owns in a chunk of UPDATE_CHUNK (64) columns: with V = 4, four
 * adjacent columns (one 16-byte load); with V = 1, four columns 16 apart. */
#define UPDATE_PER_LANE 4
#define UPDATE_CHUNK (TILE * UPDATE_PER_LANE)

template <int V>
static __device__ __forceinline__ uint32_t update_col(uint32_t c0, unsigned lane, int k)
{
    return V == 4 ? c0 + (uint32_t)(k / 4) * (TILE * 4u) + lane * 4u + (uint32_t)(k % 4)
                  : c0 + (uint32_t)k * TILE + lane;
}

/* Loads x[k] = p[col(k)] for the lane's columns below `dim`. */
template <int V, bool CG>
static __device__ __forceinline__ void load_cols(float *x, const float *p, uint32_t c0, unsigned lane,
                                          uint32_t dim)
{
#pragma unroll
    for (int k = 0; k < UPDATE_PER_LANE; k += V) {
        uint32_t j = update_col<V>(c0, lane, k);
        if (j >= dim)
            continue;
        if (V == 4) {
            float4 q = CG ? __ldcg((const float4 *)(p + j)) : *(const float4 *)(p + j);
            x[k] = q.x;
            x[k + 1] = q.y;
            x[k + 2] = q.z;
            x[k + 3] = q.w;
        } else {
            x[k] = CG ? __ldcg(p + j) : p[j];
        }
    }
}

template <int V>
static __device__ __forceinline__ void store_cols(float *p, const float *x, uint32_t c0, unsigned lane,
                                           uint32_t dim)
{
#pragma unroll
    for (int k = 0; k < UPDATE_PER_LANE; k += V) {
        uint32_t j = update_col<V>(c0, lane, k);
        if (j >= dim)
            continue;
        if (V == 4)
            *(float4 *)(p + j) = make_float4(x[k], x[k + 1], x[k + 2], x[k + 3]);
        else
            p[j] = x[k];
    }
}

/* One optimizer step on a row (locked by the caller): every load of a chunk is
 * issued before any store, so the loads overlap; gradients of the run
 * si[i..e) are added in batch order, the CPU backend's order. */
template <int V>
static __device__ void update_row(const tview &v, unsigned lane, float *row, int is_new, uint64_t key,
                           const float *grads, const uint32_t *si, size_t i, size_t e,
                           ember_optim_step st)
{
    const uint32_t dim = v.dim;
    const int kind = v.optim.kind;
    const int has0 = kind != EMBER_OPTIM_SGD;
    const int has1 = kind == EMBER_OPTIM_ADAM || kind == EMBER_OPTIM_FTRL;
    const float acc = v.optim.initial_accumulator;
    const uint64_t base = ember_init_base(v.seed, key);
    for (uint32_t c0 = 0; c0 < dim; c0 += UPDATE_CHUNK) {
        float w[UPDATE_PER_LANE], a[UPDATE_PER_LANE], b[UPDATE_PER_LANE], g[UPDATE_PER_LANE];
#pragma unroll
        for (int k = 0; k < UPDATE_PER_LANE; k++)
            w[k] = a[k] = b[k] = g[k] = 0.0f;
        load_cols<V, false>(g, grads + (size_t)si[i] * dim, c0, lane, dim);
        if (is_new) {
#pragma unroll
            for (int k = 0; k < UPDATE_PER_LANE; k++) {
                uint32_t j = update_col<V>(c0, lane, k);
                if (j < dim)
                    w[k] = ember_init_value(&v.init, base, j);
                if (kind == EMBER_OPTIM_ADAGRAD)
                    a[k] = acc;
                else if (kind == EMBER_OPTIM_FTRL)
                    b[k] = acc;
            }
        } else {
            load_cols<V, true>(w, row, c0, lane, dim);
            if (has0)
                load_cols<V, true>(a, row + dim, c0, lane, dim);
            if (has1)
                load_cols<V, true>(b, row + 2u * dim, c0, lane, dim);
        }
        for (size_t q = i + 1; q < e; q++) {
            float x[UPDATE_PER_LANE];
            load_cols<V, false>(x, grads + (size_t)si[q] * dim, c0, lane, dim);
#pragma unroll
            for (int k = 0; k < UPDATE_PER_LANE; k++)
                g[k] += x[k];
        }
#pragma unroll
        for (int k = 0; k < UPDATE_PER_LANE; k++)
            w[k] = ember_optim_update(&v.optim, st, w[k], g[k], &a[k], &b[k]);
        store_cols<V>(row, w, c0, lane, dim);
        if (has0)
            store_cols<V>(row + dim, a, c0, lane, dim);
        if (has1)
            store_cols<V>(row + 2u * dim, b, c0, lane, dim);
    }
}

__global__ void __launch_bounds__(BLOCK, 3) k_apply(tview v, ember_op op, const uint64_t *sk, const uint32_t *si, size_t n,
                        const float *grads, const uint64_t *scores, unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    WALK_LOOP(sk, n) {
        uint64_t key = w.cur;
        if ((i > 0 && sk[i - 1] == key) || ember_key_is_reserved(key))
            continue;
        size_t e = run_end(sk, i, n);
        uint32_t last = si[e - 1];
        place p = place_of(v, key);
        lock_bucket(tile, v.seq + p.bucket);
        probe_res r = probe(tile, v, p, key, load_share<TILE>(v, p.bucket, lane));
        int s = r.slot, is_new = s < 0;
        uint64_t score = ember_score_next(&op.score,
                                          is_new ? 0 : __ldcg(v.scores + p.bucket * SLOTS + s),
                                          is_new, (uint32_t)(e - i), custom_of(scores, last),
                                          scores != NULL);
        if (is_new) {
            int ok = 0;
            if (lane == 0) {
                ok = admit(v, key);
                if (!ok)
                    bc_add(&bc, C_DROPS, 1);
            }
            if (tile.shfl(ok, 0))
                s = claim_slot(tile, v, p, key, r.free_slot, score, &bc);
        }
        if (s >= 0) {
            uint64_t at = p.bucket * SLOTS + s;
            float *row = row_ptr(v, at);
            ember_optim_step st = {1.0f, 1.0f};
            if (ember_optim_has_step(v.optim.kind)) {
                float t = (is_new ? 0.0f : __ldcg(row + 3u * v.dim)) + 1.0f;
                st = ember_optim_step_of(&v.optim, t);
                tile.sync();
                if (lane == 0)
                    row[3u * v.dim] = t;
            }
            if ((v.dim & 3u) == 0 && aligned16(grads))
                update_row<4>(v, lane, row, is_new, key, grads, si, i, e, st);
            else
                update_row<1>(v, lane, row, is_new, key, grads, si, i, e, st);
            if (lane == 0) {
                v.scores[at] = score;
                v.versions[at] = op.version;
            }
        }
        unlock_bucket(tile, v.seq + p.bucket);
    }
    bc_flush(&bc, counts);
}

/* ---- stream-ordered operations ------------------------------------------- */

/* Builds the scratch's last-occurrence map of keys[0..n). */
static int map_build(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t st,
                     const uint64_t *keys, size_t n, ember_error *err)
{
    size_t cap = 2;
    while (cap < 2 * n)
        cap <<= 1;
    int rc;
    if ((rc = EMBER_CUDA_CHECK(cudaMemsetAsync(s->map, 0xff, cap * sizeof(map_ent), st), err)))
        return rc;
    k_map_build<<<grid_flat(t, n), BLOCK, 0, st>>>(keys, n, s->map, s->pos, cap - 1);
    return launched(err);
}

static int write_call(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t st,
                      const ember_op *op, int kind, int insert, const uint64_t *keys, size_t n,
                      const float *values, uint8_t *found, const uint64_t *scores,
                      const uint64_t *versions, ember_error *err)
{
    ember_op none;
    memset(&none, 0, sizeof none);
    int rc = ember_gpu_call_begin_async(t, s, n, err, st);
    if (rc || n == 0)
        return rc;
    if ((rc = map_build(t, s, st, keys, n, err)))
        return rc;
    k_write<<<grid_for(t, n), BLOCK, 0, st>>>(view_of(t), op ? *op : none, kind, insert, keys, n,
                                              values, found, scores, versions, s->map, s->pos,
                                              s->counts);
    if ((rc = launched(err)))
        return rc;
    if (found) {
        k_found_copy<<<grid_flat(t, n), BLOCK, 0, st>>>(n, found, s->map, s->pos);
        if ((rc = launched(err)))
            return rc;
    }
    return ember_gpu_call_end_async(t, s, err, st);
}

int ember_gpu_insert_or_assign_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                     const uint64_t *keys, size_t n, const float *values,
                                     const uint64_t *scores, ember_error *err, cudaStream_t stream)
{
    return write_call(t, s, stream, op, W_ASSIGN, 1, keys, n, values, NULL, scores, NULL, err);
}

int ember_gpu_assign_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                           const uint64_t *keys, size_t n, const float *values, uint8_t *found,
                           const uint64_t *scores, ember_error *err, cudaStream_t stream)
{
    return write_call(t, s, stream, op, W_ASSIGN, 0, keys, n, values, found, scores, NULL, err);
}

int ember_gpu_import_async(ember_gpu_table *t, ember_gpu_scratch *s, const uint64_t *keys, size_t n,
                           const float *rows, const uint64_t *scores, const uint64_t *versions,
                           ember_error *err, cudaStream_t stream)
{
    return write_call(t, s, stream, NULL, W_IMPORT, 1, keys, n, rows, NULL, scores, versions,
                      err);
}

/* Sorts (key, index) pairs of keys[0..n) into the scratch (stable). */
static int sort_keys(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t st,
                     const uint64_t *keys, size_t n, ember_error *err)
{
    size_t bytes = s->cub_bytes;
    (void)t;
    int rc = EMBER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s->cub_tmp, bytes, keys,
                                                              s->sort_keys, s->iota, s->sort_idx,
                                                              (int)n, 0, 64, st),
                              err);
    return rc ? rc : launched(err);
}

int ember_gpu_accum_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                          const uint64_t *keys, size_t n, const float *deltas, uint8_t *found,
                          ember_error *err, cudaStream_t stream)
{
    int rc = ember_gpu_call_begin_async(t, s, n, err, stream);
    if (rc || n == 0)
        return rc;
    if ((rc = sort_keys(t, s, stream, keys, n, err)))
        return rc;
    k_accum<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, s->sort_keys, s->sort_idx, n,
                                                  deltas, found);
    if ((rc = launched(err)))
        return rc;
    return ember_gpu_call_end_async(t, s, err, stream);
}

int ember_gpu_apply_gradients_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                    const uint64_t *keys, size_t n, const float *grads,
                                    const uint64_t *scores, ember_error *err, cudaStream_t stream)
{
    int rc = ember_gpu_call_begin_async(t, s, n, err, stream);
    if (rc || n == 0)
        return rc;
    if ((rc = sort_keys(t, s, stream, keys, n, err)))
        return rc;
    k_apply<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, s->sort_keys, s->sort_idx, n,
                                                  grads, scores, s->counts);
    if ((rc = launched(err)))
        return rc;
    return ember_gpu_call_end_async(t, s, err, stream);
}

/*
 * gpu_table_lookup.cu — reads by key: find (lock-free, a sequence check per
 * bucket) and find_or_insert (the training pull: locks the bucket, creates
 * missing keys with the initializer, subject to admission).
 */
#include <type_traits>

#include "cuda/detail/gpu_table_impl.cuh"

/* Resident blocks per SM asked for k_find_warp. nvcc 13, sm_90, -Xptxas -v:
 * at 8 (32 registers) the 16-byte variant spills 360 bytes, at 6 (40) 252; at 4
 * it takes 64 registers (55 for the scalar variant) and spills nothing, which
 * still keeps 1,024 keys per SM in flight against k_find<8>'s 256. */
#define FIND_WARP_MINB 4

/* ---- kernels: reads ------------------------------------------------------- */

/* find: T lanes per key (8 by default: find is bound by instructions per key,
 * and a narrower tile serves more keys per warp instruction). MINB: resident
 * blocks per SM asked of the register allocator. */
template <unsigned T, int MINB>
__global__ void __launch_bounds__(BLOCK, MINB) k_find(tview v, const uint64_t *keys, size_t n,
                                                      float *values, uint8_t *found)
{
    cg::thread_block_tile<T> tile = cg::tiled_partition<T>(cg::this_thread_block());
    unsigned lane = tile.thread_rank();
    size_t tiles = (size_t)gridDim.x * (BLOCK / T);
    key_walk w(v, keys, n, (size_t)blockIdx.x * (BLOCK / T) + threadIdx.x / T, tiles, lane);
    for (size_t i = w.i; w.more(); w.advance(v, lane), i = w.i) {
        uint64_t key = w.cur;
        float *out = values + i * v.dim;
        int slot = -1;
        if (!ember_key_is_reserved(key)) {
            place p = place_of(v, key);
            for (;;) {
                uint32_t s = read_begin(tile, v.seq + p.bucket);
                slot = probe_key<T>(tile, v, p, key, load_share<T>(v, p.bucket, lane));
                if (slot >= 0)
                    tile_copy<T>(lane, out, row_ptr(v, p.bucket * SLOTS + slot), v.dim);
                if (!read_retry(tile, v.seq + p.bucket, s))
                    break;
            }
        }
        if (slot < 0)
            tile_init_row<T>(v, lane, key, out);
        if (found && lane == 0)
            found[i] = slot >= 0;
    }
}

/* find, one lane per key (find_lanes = 1; experimental: no GPU has run it yet).
 * A warp takes 32 consecutive keys. Each lane hashes its key once, reads its
 * bucket's sequence word (acquire) and, if no writer holds the bucket, probes on
 * its own (lane_probe); a lane that finds the word odd tries again next round
 * instead of spinning. Then the whole warp moves the found rows (warp_copy_rows),
 * fences once, and each lane re-reads its word: a lane whose word moved copies
 * its row again next round, so no row is torn. Keys found missing (or reserved)
 * get their initial row, drawn by the warp (warp_init_rows). The same results as
 * k_find, key by key. VEC: 16-byte elements (dim % 4 == 0, values aligned). */
template <bool VEC, int MINB>
__global__ void __launch_bounds__(BLOCK, MINB) k_find_warp(tview v, const uint64_t *keys, size_t n,
                                                           float *values, uint8_t *found)
{
    __shared__ uintptr_t sh[2][BLOCK];
    typedef typename std::conditional<VEC, float4, float>::type E;
    unsigned lane = threadIdx.x & (WARP - 1u);
    uintptr_t *sh_a = sh[0] + (threadIdx.x & ~(WARP - 1u));
    uintptr_t *sh_b = sh[1] + (threadIdx.x & ~(WARP - 1u));
    warp_split ws = split_of(VEC ? v.dim / 4u : v.dim, lane);
    size_t step = (size_t)gridDim.x * BLOCK;
    for (size_t first = (size_t)blockIdx.x * BLOCK + (threadIdx.x & ~(WARP - 1u)); first < n;
         first += step) {
        size_t i = first + lane;
        bool live = i < n;
        uint64_t key = live ? keys[i] : 0;
        bool pending = live && !ember_key_is_reserved(key);
        place p = {0, 0, 0};
        if (pending) {
            p = place_of(v, key);
            prefetch_bucket(v, p.bucket);
        }
        float *out = values + (live ? i : 0) * v.dim;
        int slot = -1;
        unsigned ns = 32;
        while (__any_sync(FULL_MASK, pending)) {
            uint32_t s = 0;
            bool go = false;
            if (pending) {
                s = load_acquire(v.seq + p.bucket);
                go = !(s & 1u);
            }
            if (go)
                slot = lane_probe(v, p, key);
            bool hit = go && slot >= 0;
            warp_copy_rows<E, 4>(ws, lane, hit, hit ? row_ptr(v, p.bucket * SLOTS + slot) : NULL,
                                 out, sh_a, sh_b);
            /* The barrier in warp_copy_rows orders every lane's row loads before
             * this fence; each lane's re-read comes after it. */
            fence_acq_rel();
            if (go && load_relaxed(v.seq + p.bucket) == s)
                pending = false;
            if (pending && !go) {
                __nanosleep(ns);
                if (ns < 1024)
                    ns *= 2;
            }
        }
        warp_init_rows<VEC>(v, ws, lane, live && slot < 0, key, out, sh_a, sh_b);
        if (found && live)
            found[i] = slot >= 0;
    }
}

__global__ void __launch_bounds__(BLOCK, 4) k_find_or_insert(tview v, ember_op op, const uint64_t *keys, size_t n,
                                 float *values, uint8_t *found, const uint64_t *scores,
                                 unsigned long long *counts)
{
    __shared__ block_counts bc;
    bc_init(&bc);
    WALK_LOOP(keys, n) {
        uint64_t key = w.cur;
        float *out = values + i * v.dim;
        int slot = -1, stored = 0;
        if (!ember_key_is_reserved(key)) {
            place p = place_of(v, key);
            lock_bucket(tile, v.seq + p.bucket);
            probe_res r = probe(tile, v, p, key, load_share<TILE>(v, p.bucket, lane));
            slot = r.slot;
            if (slot >= 0) {
                uint64_t at = p.bucket * SLOTS + slot;
                tile_copy(lane, out, row_ptr(v, at), v.dim);
                if (lane == 0)
                    v.scores[at] = ember_score_next(&op.score, __ldcg(v.scores + at), 0, 1,
                                                    custom_of(scores, i), scores != NULL);
                stored = 1;
            } else {
                int ok = 0;
                if (lane == 0)
                    ok = admit(v, key);
                if (tile.shfl(ok, 0)) {
                    uint64_t score = ember_score_next(&op.score, 0, 1, 1, custom_of(scores, i),
                                                      scores != NULL);
                    int ns = claim_slot(tile, v, p, key, r.free_slot, score, &bc);
                    if (ns >= 0) {
                        uint64_t at = p.bucket * SLOTS + ns;
                        float *row = row_ptr(v, at);
                        /* Two passes measured 2.4x faster on an H200 than one
                         * pass storing to both. */
                        tile_init_row(v, lane, key, row);
                        tile_init_row(v, lane, key, out);
                        tile_init_slots(v, lane, row);
                        if (lane == 0) {
                            v.scores[at] = score;
                            v.versions[at] = op.version;
                        }
                        stored = 1;
                    }
                }
            }
            unlock_bucket(tile, v.seq + p.bucket);
        }
        if (!stored)
            tile_init_row(v, lane, key, out);
        if (found && lane == 0)
            found[i] = slot >= 0;
    }
    bc_flush(&bc, counts);
}

/* ---- stream-ordered operations ------------------------------------------- */

int ember_gpu_find_async(ember_gpu_table *t, const uint64_t *keys, size_t n, float *values,
                         uint8_t *found, ember_error *err, cudaStream_t stream)
{
    if (n == 0)
        return EMBER_OK;
    int rc = use_device(t, err);
    if (rc)
        return rc;
    int tile = (int)t->find_lanes;   /* ember_gpu_table_options.find_lanes: 1, 8 or 16 */
    size_t per_block = BLOCK / (unsigned)tile;
    size_t blocks = (n + per_block - 1) / per_block, cap = (size_t)t->sms * 8u;
    unsigned grid = (unsigned)(blocks < cap ? blocks : cap);
    if (tile == 1) {
        /* every block resident at once: a grid-stride loop over the keys, no
         * second wave of blocks waiting for the first */
        cap = (size_t)t->sms * FIND_WARP_MINB;
        grid = (unsigned)(blocks < cap ? blocks : cap);
        if ((t->dim & 3u) == 0 && ((uintptr_t)values & 15u) == 0)
            k_find_warp<true, FIND_WARP_MINB><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n,
                                                                          values, found);
        else
            k_find_warp<false, FIND_WARP_MINB><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n,
                                                                           values, found);
    } else if (tile == 16)
        k_find<16, 8><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n, values, found);
    else
        k_find<8, 8><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n, values, found);
    return launched(err);
}

int ember_gpu_find_or_insert_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                   const uint64_t *keys, size_t n, float *values, uint8_t *found,
                                   const uint64_t *scores, ember_error *err, cudaStream_t stream)
{
    int rc = ember_gpu_call_begin_async(t, s, n, err, stream);
    if (rc || n == 0)
        return rc;
    k_find_or_insert<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, keys, n, values,
                                                           found, scores, s->counts);
    if ((rc = launched(err)))
        return rc;
    return ember_gpu_call_end_async(t, s, err, stream);
}

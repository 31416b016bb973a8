/*
 * gpu_table.cu — the GPU backend (gpu_table.h): a HierarchicalKV-style table in
 * device memory, with rows past a byte budget in pinned, mapped host memory.
 *
 * Device layout, per table (S = num_buckets × EMBER_BUCKET_SLOTS slots):
 *   seq[num_buckets]     lock word and sequence number (odd while a writer holds it)
 *   bsize[num_buckets]   occupied slots
 *   ctrl[S]              control bytes: 7-bit digest, EMPTY (0x80) or ERASED (0xfe)
 *   keys[S], scores[S], versions[S]
 *   rows                 slot s's row at row_ptr(s): the first rows_hbm slots in
 *                        device memory, the others in pinned host memory
 *
 * Work split: one tile of threads per key — TILE (16) for the writers, 8 for
 * find, which is bound by instructions per key. Lane l of a T-lane tile holds
 * control bytes (128/T)·l .. of the key's bucket (one 128-byte load for the
 * tile), so the whole bucket is searched at once: four digests per instruction
 * (__vcmpeq4) → key compares (a load only under a matching byte) → ballot.
 * Where a new key goes is the CPU's choice exactly: the first free slot counting
 * from the key's home group (hash.h), and in a full bucket the lowest score,
 * first of equals. Rows are copied a tile wide, 16 bytes per lane where the row
 * and the caller's array allow.
 *
 * Memory order: table state is read with __ldcg (L2, never a stale L1 line of
 * another SM's write). A writer's lane 0 takes the bucket lock with atomicCAS,
 * fences, and the tile syncs; on release every lane fences, the tile syncs, and
 * lane 0 bumps the word again. find reads the word, reads the slot and row, fences
 * and reads the word again: equal and even means nothing was written meanwhile.
 *
 * Duplicate keys in one call: insert_or_assign, assign and import first build a
 * small hash map (in the scratch) from key to the index of its last occurrence
 * and its count; only the last occurrence writes. accum and apply_gradients sort
 * (key, index) pairs with CUB's stable radix sort, so each distinct key's inputs
 * are added in batch order by one tile — the CPU backend's order, the same bits.
 *
 * Counters: each kernel sums its events per block in shared memory and adds them
 * to the scratch's call counts with one atomic per block; a one-thread kernel then
 * folds the call counts into the table's (device) counters.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>
#include <cub/cub.cuh>

#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/gpu_table.h"
#include "storage/admission.h"

namespace cg = cooperative_groups;

#define TILE 16u
#define BLOCK 256u
#define TILES_PER_BLOCK (BLOCK / TILE)
#define SLOTS EMBER_BUCKET_SLOTS
#define CTRL_EMPTY_WORD 0x8080808080808080ull

/* ---- counters ------------------------------------------------------------ */

enum {
    C_SIZE_ADD,
    C_SIZE_SUB,
    C_EVICTIONS,
    C_EVICTED,
    C_REFUSED,
    C_DROPS,
    C_COUNT
};

struct dev_state {
    unsigned long long c[C_COUNT];   /* the table's counters */
    unsigned long long sightings;    /* admission sightings so far */
    unsigned long long aged_marks;   /* sightings / age_every when last aged */
    int age_now;                     /* set by age_check for age_sketch */
};

/* ---- the table ----------------------------------------------------------- */

/* A staging context of the host-array backend: a stream, a scratch, and pinned
 * and device buffers for one call's arrays. One call uses one context. */
struct host_ctx {
    host_ctx *next;
    cudaStream_t st;
    ember_gpu_scratch *sc;
    size_t cap;                      /* keys; value buffers hold cap × row_floats */
    uint64_t *h_keys, *d_keys, *h_scores, *d_scores, *h_versions, *d_versions;
    float *h_vals, *d_vals;
    uint8_t *h_found, *d_found;
};
static void ctx_free(host_ctx *x);
struct export_bufs;
static void export_bufs_free(export_bufs *x);

struct ember_gpu_table {
    ember_table_config cfg;
    int device;
    int sms;
    uint32_t dim, row_floats, stride;
    uint64_t nb, slots, rows_hbm;
    uint32_t *seq, *bsize;
    uint8_t *ctrl;
    uint64_t *keys, *scores, *versions;
    float *rows_dev, *rows_host;
    uint32_t *sketch;
    uint32_t sketch_width;
    uint64_t age_every;
    dev_state *state;
    uint64_t bytes_device, bytes_host;
    /* Synchronous whole-table calls use one stream and buffers, one at a time. */
    pthread_mutex_t sync_lock;
    cudaStream_t sync_stream;
    dev_state *h_state;              /* pinned mirror */
    unsigned long long *d_hist, *h_hist;
    /* Export buffers (grown on demand, under sync_lock). */
    struct export_bufs *ex;
    /* Staging contexts of the host-array backend, reused across calls. */
    pthread_mutex_t ctx_lock;
    host_ctx *ctx_free;
};

/* An entry of the last-occurrence map, one 16-byte sector: all ones when empty.
 * last_inv = ~(largest index of the key), so atomicMin on it keeps the last;
 * count_m1 = occurrences − 1 (it starts at all ones and counts up). */
struct __align__(16) map_ent {
    unsigned long long key;
    uint32_t last_inv;
    uint32_t count_m1;
};

struct ember_gpu_scratch {
    ember_gpu_table *t;
    size_t cap;
    size_t map_cap;                  /* power of two ≥ 2·cap */
    struct map_ent *map;             /* last-occurrence map, map_cap entries */
    uint32_t *pos;                   /* each key's map entry */
    uint64_t *sort_keys;
    uint32_t *iota, *sort_idx;
    void *cub_tmp;
    size_t cub_bytes;
    unsigned long long *counts;      /* C_COUNT call counters */
    unsigned long long *h_counts;    /* pinned */
};

/* What a kernel needs of the table, by value. */
struct tview {
    uint32_t *seq, *bsize;
    uint8_t *ctrl;
    uint64_t *keys, *scores, *versions;
    float *rows_dev, *rows_host;
    uint64_t rows_hbm, nb;
    uint32_t stride, dim, row_floats;
    ember_init_config init;
    uint64_t seed;
    ember_optim_config optim;
    int policy;
    uint32_t *sketch;
    uint32_t sketch_width, min_count;
    dev_state *state;
};

static tview view_of(const ember_gpu_table *t)
{
    tview v;
    v.seq = t->seq;
    v.bsize = t->bsize;
    v.ctrl = t->ctrl;
    v.keys = t->keys;
    v.scores = t->scores;
    v.versions = t->versions;
    v.rows_dev = t->rows_dev;
    v.rows_host = t->rows_host;
    v.rows_hbm = t->rows_hbm;
    v.nb = t->nb;
    v.stride = t->stride;
    v.dim = t->dim;
    v.row_floats = t->row_floats;
    v.init = t->cfg.init;
    v.seed = t->cfg.seed;
    v.optim = t->cfg.optim;
    v.policy = t->cfg.score_policy;
    v.sketch = t->sketch;
    v.sketch_width = t->sketch_width;
    v.min_count = t->cfg.admission.min_count;
    v.state = t->state;
    return v;
}

/* ---- device helpers ------------------------------------------------------ */

typedef cg::thread_block_tile<TILE> tile_t;

__device__ __forceinline__ float *row_ptr(const tview &v, uint64_t slot)
{
    return slot < v.rows_hbm ? v.rows_dev + slot * v.stride
                             : v.rows_host + (slot - v.rows_hbm) * v.stride;
}

__device__ __forceinline__ int aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

/* dst[0..w) = src[0..w), T lanes wide (16-byte moves where both allow); src
 * read through L2. */
template <unsigned T = TILE>
__device__ __forceinline__ void tile_copy(unsigned lane, float *dst, const float *src,
                                          uint32_t w)
{
    if ((w & 3u) == 0 && aligned16(dst) && aligned16(src)) {
        for (uint32_t j = lane * 4u; j < w; j += T * 4u)
            *(float4 *)(dst + j) = __ldcg((const float4 *)(src + j));
    } else {
        for (uint32_t j = lane; j < w; j += T)
            dst[j] = __ldcg(src + j);
    }
}

/* out[0..dim) = the key's initial embedding, T lanes wide: a lane writes 4
 * adjacent floats (two draws, ember_init_pair) where the row allows. */
template <unsigned T = TILE>
__device__ __forceinline__ void tile_init_row(const tview &v, unsigned lane, uint64_t key,
                                              float *out)
{
    uint64_t base = ember_init_base(v.seed, key);
    if ((v.dim & 3u) == 0 && aligned16(out)) {
        for (uint32_t j = lane * 4u; j < v.dim; j += T * 4u) {
            float x[4];
            ember_init_pair(&v.init, base, j / 2u, x);
            ember_init_pair(&v.init, base, j / 2u + 1u, x + 2);
            *(float4 *)(out + j) = make_float4(x[0], x[1], x[2], x[3]);
        }
    } else {
        for (uint32_t j = lane; j < v.dim; j += T)
            out[j] = ember_init_value(&v.init, base, j);
    }
}

/* A new row's optimizer slots (row + dim .. row_floats), as ember_optim_init_slots. */
__device__ __forceinline__ void tile_init_slots(const tview &v, unsigned lane, float *row)
{
    uint32_t n = v.row_floats - v.dim;
    float acc = v.optim.initial_accumulator;
    for (uint32_t j = lane; j < n; j += TILE) {
        float x = 0.0f;
        if (v.optim.kind == EMBER_OPTIM_ADAGRAD || (v.optim.kind == EMBER_OPTIM_FTRL && j >= v.dim))
            x = acc;
        row[v.dim + j] = x;
    }
}

/* Acquire/release fences at device scope: lighter than __threadfence() (an SC
 * fence), and all a lock or a sequence check needs. */
__device__ __forceinline__ void fence_acq_rel()
{
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

__device__ __forceinline__ uint32_t load_acquire(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint32_t load_relaxed(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* Starts fetching a bucket's control bytes into L2 while the lock or sequence
 * word is being read, so the probe after it does not wait on device memory. */
__device__ __forceinline__ void prefetch_bucket(const tview &v, uint64_t bucket)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.ctrl + bucket * SLOTS));
}

/* Fetches a key's bucket lines (control bytes and lock word) into L2. */
__device__ __forceinline__ void prefetch_key(const tview &v, uint64_t key)
{
    if (ember_key_is_reserved(key))
        return;
    uint64_t b = ember_hash_bucket(ember_key_hash(key), v.nb);
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.ctrl + b * SLOTS));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.seq + b));
}

/* Lane 0 takes the lock; the tile's barrier orders every lane's later accesses
 * after lane 0's acquire. */
__device__ __forceinline__ void lock_bucket(const tile_t &tile, uint32_t *seq)
{
    if (tile.thread_rank() == 0) {
        unsigned ns = 32;
        for (;;) {
            uint32_t s = load_relaxed(seq);
            if (!(s & 1u) && atomicCAS(seq, s, s + 1u) == s)
                break;
            __nanosleep(ns);
            if (ns < 1024)
                ns *= 2;
        }
        fence_acq_rel();
    }
    tile.sync();
}

/* The barrier orders every lane's writes before lane 0's release. */
__device__ __forceinline__ void unlock_bucket(const tile_t &tile, uint32_t *seq)
{
    tile.sync();
    if (tile.thread_rank() == 0) {
        fence_acq_rel();
        atomicAdd(seq, 1u);
    }
}

/* The bucket sequence word once no writer holds it (find's read section). */
template <class Tile>
__device__ __forceinline__ uint32_t read_begin(const Tile &tile, const uint32_t *seq)
{
    uint32_t s = 0;
    if (tile.thread_rank() == 0) {
        unsigned ns = 32;
        while ((s = load_acquire(seq)) & 1u) {
            __nanosleep(ns);
            if (ns < 1024)
                ns *= 2;
        }
    }
    return tile.shfl(s, 0);
}

/* 1 if a writer took the bucket since read_begin returned `s`: every lane's
 * reads are ordered before lane 0's fence by the tile's barrier. */
template <class Tile>
__device__ __forceinline__ int read_retry(const Tile &tile, const uint32_t *seq, uint32_t s)
{
    tile.sync();
    uint32_t now = 0;
    if (tile.thread_rank() == 0) {
        fence_acq_rel();
        now = load_relaxed(seq);
    }
    return tile.shfl(now, 0) != s;
}

/* Where a key lives. */
struct place {
    uint64_t bucket;
    uint32_t digest, group;
};

__device__ __forceinline__ place place_of(const tview &v, uint64_t key)
{
    uint64_t h = ember_key_hash(key);
    place p;
    p.bucket = ember_hash_bucket(h, v.nb);
    p.digest = ember_hash_digest(h);
    p.group = ember_hash_group(h);
    return p;
}

__device__ __forceinline__ uint64_t load_ctrl(const tview &v, uint64_t bucket, unsigned lane)
{
    return __ldcg((const unsigned long long *)(v.ctrl + bucket * SLOTS) + lane);
}

struct probe_res {
    int slot;       /* the key's slot, or -1 */
    int free_slot;  /* the first free slot on its probe path, or -1 */
};

/* A lane's share of a bucket's control bytes: SLOTS / T bytes, slots
 * lane·(SLOTS/T) on, as 32-bit words (byte k of word w = slot lane·BPL + 4w + k). */
template <unsigned T>
struct ctrl_share {
    static constexpr unsigned BPL = SLOTS / T;
    static constexpr unsigned WORDS = BPL / 4;
    uint32_t w[WORDS];
};

template <unsigned T>
__device__ __forceinline__ ctrl_share<T> load_share(const tview &v, uint64_t bucket, unsigned lane)
{
    ctrl_share<T> c;
    const uint8_t *base = v.ctrl + bucket * SLOTS + lane * ctrl_share<T>::BPL;
    if (ctrl_share<T>::WORDS == 4) {
        uint4 q = __ldcg((const uint4 *)base);
        c.w[0] = q.x;
        c.w[1] = q.y;
        c.w[2 % ctrl_share<T>::WORDS] = q.z;
        c.w[3 % ctrl_share<T>::WORDS] = q.w;
    } else if (ctrl_share<T>::WORDS == 2) {
        uint2 q = __ldcg((const uint2 *)base);
        c.w[0] = q.x;
        c.w[1 % ctrl_share<T>::WORDS] = q.y;
    } else {
        for (unsigned k = 0; k < ctrl_share<T>::WORDS; k++)
            c.w[k] = __ldcg((const uint32_t *)base + k);
    }
    return c;
}

/* The key's slot in the bucket, or -1: four digests compared per instruction
 * (__vcmpeq4), a key load only under a matching byte. The byte loop is fully
 * unrolled and predicated: a data-dependent loop here made the tile diverge
 * before its ballot and cost the writers up to 20% on an H200. Uniform. */
template <unsigned T, class Tile>
__device__ __forceinline__ int probe_key(const Tile &tile, const tview &v, place p, uint64_t key,
                                         const ctrl_share<T> &c)
{
    unsigned lane = tile.thread_rank();
    uint32_t pat = p.digest * 0x01010101u;
    int found = -1;
#pragma unroll
    for (unsigned w = 0; w < ctrl_share<T>::WORDS; w++) {
        uint32_t m = __vcmpeq4(c.w[w], pat);
#pragma unroll
        for (unsigned k = 0; k < 4; k++) {
            unsigned s = lane * ctrl_share<T>::BPL + 4 * w + k;
            if ((m >> (8 * k)) & 1u && __ldcg(v.keys + p.bucket * SLOTS + s) == key)
                found = (int)s;
        }
    }
    unsigned bal = tile.ballot(found >= 0);
    return bal ? tile.shfl(found, __ffs(bal) - 1) : -1;
}

/* Searches the bucket for the key and for the first free slot of its probe
 * path (from its home group on, wrapping). A lane's bytes are contiguous and
 * never straddle a group boundary, so its first free byte is also its first in
 * probe order. Uniform over the tile. */
__device__ __forceinline__ probe_res probe(const tile_t &tile, const tview &v, place p,
                                           uint64_t key, const ctrl_share<TILE> &c)
{
    unsigned lane = tile.thread_rank();
    probe_res r;
    r.slot = probe_key<TILE>(tile, v, p, key, c);
    int best = 1 << 30;
#pragma unroll
    for (int w = ctrl_share<TILE>::WORDS - 1; w >= 0; w--) {
        uint32_t f = c.w[w] & 0x80808080u;
        if (f) {
            unsigned s = lane * ctrl_share<TILE>::BPL + 4 * w + ((unsigned)(__ffs(f) - 1) >> 3);
            best = (int)((s - p.group * EMBER_GROUP_SLOTS) & (SLOTS - 1u));
        }
    }
    for (unsigned o = TILE / 2; o; o >>= 1) {
        int b = tile.shfl_xor(best, o);
        best = b < best ? b : best;
    }
    r.free_slot = best < (int)SLOTS ? (int)((best + p.group * EMBER_GROUP_SLOTS) & (SLOTS - 1u))
                                    : -1;
    return r;
}

/* The occupied slot with the lowest score, first of equals (a full bucket). */
__device__ __forceinline__ int lowest_score(const tile_t &tile, const tview &v, uint64_t bucket,
                                            uint64_t *min_score)
{
    unsigned lane = tile.thread_rank();
    uint64_t best = ~0ull;
    int bs = (int)SLOTS;
    for (unsigned k = 0; k < 8; k++) {
        unsigned s = lane * 8u + k;
        uint64_t sc = __ldcg(v.scores + bucket * SLOTS + s);
        if (sc < best) {
            best = sc;
            bs = (int)s;
        }
    }
    for (unsigned o = TILE / 2; o; o >>= 1) {
        uint64_t ob = tile.shfl_xor(best, o);
        int os = tile.shfl_xor(bs, o);
        if (ob < best || (ob == best && os < bs)) {
            best = ob;
            bs = os;
        }
    }
    *min_score = best;
    return bs;
}

/* Per-block event counts, flushed to the call's counters at the kernel's end. */
struct block_counts {
    unsigned long long c[C_COUNT];
};

__device__ __forceinline__ void bc_init(block_counts *bc)
{
    if (threadIdx.x < C_COUNT)
        bc->c[threadIdx.x] = 0;
    __syncthreads();
}

__device__ __forceinline__ void bc_add(block_counts *bc, int which, unsigned long long n)
{
    if (n)
        atomicAdd(&bc->c[which], n);
}

__device__ __forceinline__ void bc_flush(block_counts *bc, unsigned long long *counts)
{
    __syncthreads();
    if (threadIdx.x < C_COUNT && bc->c[threadIdx.x])
        atomicAdd(&counts[threadIdx.x], bc->c[threadIdx.x]);
}

/* Takes a slot for a new key in a locked bucket: `free_slot`, else the lowest
 * score's (evicted). -1 when CUSTOM and `score` is below every stored score.
 * Writes the control byte and key; the caller writes row, score and version. */
__device__ int claim_slot(const tile_t &tile, const tview &v, place p, uint64_t key,
                          int free_slot, uint64_t score, block_counts *bc)
{
    int s = free_slot;
    if (s >= 0) {
        if (tile.thread_rank() == 0) {
            v.bsize[p.bucket] = __ldcg(v.bsize + p.bucket) + 1u;
            bc_add(bc, C_SIZE_ADD, 1);
        }
    } else {
        uint64_t min;
        s = lowest_score(tile, v, p.bucket, &min);
        if (v.policy == EMBER_SCORE_CUSTOM && score < min) {
            if (tile.thread_rank() == 0)
                bc_add(bc, C_REFUSED, 1);
            return -1;
        }
        if (tile.thread_rank() == 0)
            bc_add(bc, C_EVICTIONS, 1);
    }
    if (tile.thread_rank() == 0) {
        v.ctrl[p.bucket * SLOTS + s] = (uint8_t)p.digest;
        v.keys[p.bucket * SLOTS + s] = key;
    }
    return s;
}

/* Frees slot `s` of a locked bucket whose control bytes were `c` before. */
__device__ void erase_slot(const tile_t &tile, const tview &v, uint64_t bucket, int s,
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

/* One admission sighting of a new key; 1 if it may be stored. */
__device__ int admit(const tview &v, uint64_t key)
{
    if (!v.sketch)
        return 1;
    uint32_t est = 0xffffffffu;
    for (uint32_t r = 0; r < EMBER_SKETCH_DEPTH; r++) {
        uint32_t *c = v.sketch + (size_t)r * v.sketch_width + ember_sketch_index(key, r, v.sketch_width);
        uint32_t x = __ldcg(c);
        if (x != 0xffffffffu)
            x = atomicAdd(c, 1u) + 1u;
        est = x < est ? x : est;
    }
    atomicAdd(&v.state->sightings, 1ull);
    return est >= v.min_count;
}

__device__ __forceinline__ uint64_t custom_of(const uint64_t *scores, size_t i)
{
    return scores ? scores[i] : 0;
}

#define TILE_LOOP(n)                                                                   \
    cg::thread_block_tile<TILE> tile = cg::tiled_partition<TILE>(cg::this_thread_block()); \
    unsigned lane = tile.thread_rank();                                                \
    size_t tiles = (size_t)gridDim.x * TILES_PER_BLOCK;                                \
    for (size_t i = (size_t)blockIdx.x * TILES_PER_BLOCK + threadIdx.x / TILE; i < (n); i += tiles)


/* A tile's walk over keys[first], keys[first + step], …, pipelined: while the
 * tile works on one key, the bucket lines (control bytes and lock word) of the
 * next are already on their way into L2, and the key after that is loading. */
struct key_walk {
    const uint64_t *keys;
    size_t n, step, i;
    uint64_t cur, next, after;

    __device__ __forceinline__ key_walk(const tview &v, const uint64_t *k, size_t n_,
                                        size_t first, size_t step_, unsigned lane)
        : keys(k), n(n_), step(step_), i(first), cur(0), next(0), after(0)
    {
        if (i < n)
            cur = keys[i];
        if (i + step < n)
            next = keys[i + step];
        if (i + 2 * step < n)
            after = keys[i + 2 * step];
        if (lane == 0) {
            if (i < n)
                prefetch_key(v, cur);
            if (i + step < n)
                prefetch_key(v, next);
        }
    }

    __device__ __forceinline__ bool more() const { return i < n; }

    __device__ __forceinline__ void advance(const tview &v, unsigned lane)
    {
        i += step;
        cur = next;
        next = after;
        after = i + 2 * step < n ? keys[i + 2 * step] : 0;
        if (lane == 0 && i + step < n)
            prefetch_key(v, next);
    }
};

#define WALK_LOOP(keys_, n_)                                                               \
    cg::thread_block_tile<TILE> tile = cg::tiled_partition<TILE>(cg::this_thread_block()); \
    unsigned lane = tile.thread_rank();                                                    \
    size_t tiles = (size_t)gridDim.x * TILES_PER_BLOCK;                                    \
    key_walk w(v, (keys_), (n_), (size_t)blockIdx.x * TILES_PER_BLOCK + threadIdx.x / TILE, \
               tiles, lane);                                                               \
    for (size_t i = w.i; w.more(); w.advance(v, lane), i = w.i)

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
__device__ __forceinline__ void map_read(const map_ent *map, uint32_t h, uint32_t *last,
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

__global__ void k_iota(uint32_t *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = (uint32_t)i;
}

/* The tile at sorted position i owns a distinct key if it starts its run. */
__device__ __forceinline__ size_t run_end(const uint64_t *sk, size_t i, size_t n)
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
__device__ __forceinline__ uint32_t update_col(uint32_t c0, unsigned lane, int k)
{
    return V == 4 ? c0 + (uint32_t)(k / 4) * (TILE * 4u) + lane * 4u + (uint32_t)(k % 4)
                  : c0 + (uint32_t)k * TILE + lane;
}

/* Loads x[k] = p[col(k)] for the lane's columns below `dim`. */
template <int V, bool CG>
__device__ __forceinline__ void load_cols(float *x, const float *p, uint32_t c0, unsigned lane,
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
__device__ __forceinline__ void store_cols(float *p, const float *x, uint32_t c0, unsigned lane,
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
__device__ void update_row(const tview &v, unsigned lane, float *row, int is_new, uint64_t key,
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

/* ---- kernels: erase, clear, evict, export --------------------------------- */

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

/* Erases entries with score < below, and up to *ties (shared budget) with
 * score == below. */
__global__ void k_evict(tview v, uint64_t below, unsigned long long ties,
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
            uint64_t sc = __ldcg(v.scores + i * SLOTS + s);
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

/* ---- kernels: counters and admission aging -------------------------------- */

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

/* ---- launching ----------------------------------------------------------- */

static unsigned grid_for(const ember_gpu_table *t, size_t tiles)
{
    size_t want = (tiles + TILES_PER_BLOCK - 1) / TILES_PER_BLOCK;
    size_t cap = (size_t)t->sms * 8u;
    if (want > cap)
        want = cap;
    return want ? (unsigned)want : 1u;
}

static unsigned grid_flat(const ember_gpu_table *t, size_t n)
{
    size_t want = (n + BLOCK - 1) / BLOCK;
    size_t cap = (size_t)t->sms * 16u;
    if (want > cap)
        want = cap;
    return want ? (unsigned)want : 1u;
}

static int launched(ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaGetLastError(), err);
}

static int use_device(const ember_gpu_table *t, ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaSetDevice(t->device), err);
}

/* Starts a call that counts: zero the scratch's call counters. */
static int call_begin(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t st, size_t n,
                      ember_error *err)
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
static int call_end(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t st, ember_error *err)
{
    k_fold<<<1, 1, 0, st>>>(s->counts, t->state, t->sketch ? t->age_every : 0);
    if (t->sketch) {
        size_t n = (size_t)EMBER_SKETCH_DEPTH * t->sketch_width;
        k_age<<<grid_flat(t, n), BLOCK, 0, st>>>(t->sketch, n, t->state);
    }
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
        ctx_free(x);
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
    export_bufs_free(t->ex);
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

int ember_gpu_table_create(const ember_table_config *c, ember_gpu_table **out, ember_error *err)
{
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

/* ---- stream-ordered operations ------------------------------------------- */

/* EMBER_GPU_FIND_TILE=16 selects the 16-lane find (a tuning knob for A/B runs of
 * table_bench). With the predicated probe, 8 lanes measured 2.05 B keys/s on an
 * H200 against 1.56 for 16 (dim 64, λ 0.5). */
static int find_tile_from_env(void)
{
    const char *e = getenv("EMBER_GPU_FIND_TILE");
    return e && atoi(e) == 16 ? 16 : 8;
}

int ember_gpu_find(ember_gpu_table *t, cudaStream_t stream, const uint64_t *keys, size_t n,
                   float *values, uint8_t *found, ember_error *err)
{
    if (n == 0)
        return EMBER_OK;
    int rc = use_device(t, err);
    if (rc)
        return rc;
    static const int tile = find_tile_from_env();   /* C++ statics initialise once */
    size_t per_block = BLOCK / (unsigned)tile;
    size_t blocks = (n + per_block - 1) / per_block, cap = (size_t)t->sms * 8u;
    unsigned grid = (unsigned)(blocks < cap ? blocks : cap);
    if (tile == 16)
        k_find<16, 8><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n, values, found);
    else
        k_find<8, 8><<<grid, BLOCK, 0, stream>>>(view_of(t), keys, n, values, found);
    return launched(err);
}

int ember_gpu_find_or_insert(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                             const ember_op *op, const uint64_t *keys, size_t n, float *values,
                             uint8_t *found, const uint64_t *scores, ember_error *err)
{
    int rc = call_begin(t, s, stream, n, err);
    if (rc || n == 0)
        return rc;
    k_find_or_insert<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, keys, n, values,
                                                           found, scores, s->counts);
    if ((rc = launched(err)))
        return rc;
    return call_end(t, s, stream, err);
}

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
    int rc = call_begin(t, s, st, n, err);
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
    return call_end(t, s, st, err);
}

int ember_gpu_insert_or_assign(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                               const ember_op *op, const uint64_t *keys, size_t n,
                               const float *values, const uint64_t *scores, ember_error *err)
{
    return write_call(t, s, stream, op, W_ASSIGN, 1, keys, n, values, NULL, scores, NULL, err);
}

int ember_gpu_assign(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                     const ember_op *op, const uint64_t *keys, size_t n, const float *values,
                     uint8_t *found, const uint64_t *scores, ember_error *err)
{
    return write_call(t, s, stream, op, W_ASSIGN, 0, keys, n, values, found, scores, NULL, err);
}

int ember_gpu_import(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                     const uint64_t *keys, size_t n, const float *rows, const uint64_t *scores,
                     const uint64_t *versions, ember_error *err)
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

int ember_gpu_accum(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                    const ember_op *op, const uint64_t *keys, size_t n, const float *deltas,
                    uint8_t *found, ember_error *err)
{
    int rc = call_begin(t, s, stream, n, err);
    if (rc || n == 0)
        return rc;
    if ((rc = sort_keys(t, s, stream, keys, n, err)))
        return rc;
    k_accum<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, s->sort_keys, s->sort_idx, n,
                                                  deltas, found);
    if ((rc = launched(err)))
        return rc;
    return call_end(t, s, stream, err);
}

int ember_gpu_apply_gradients(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                              const ember_op *op, const uint64_t *keys, size_t n,
                              const float *grads, const uint64_t *scores, ember_error *err)
{
    int rc = call_begin(t, s, stream, n, err);
    if (rc || n == 0)
        return rc;
    if ((rc = sort_keys(t, s, stream, keys, n, err)))
        return rc;
    k_apply<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), *op, s->sort_keys, s->sort_idx, n,
                                                  grads, scores, s->counts);
    if ((rc = launched(err)))
        return rc;
    return call_end(t, s, stream, err);
}

int ember_gpu_erase(ember_gpu_table *t, ember_gpu_scratch *s, cudaStream_t stream,
                    const uint64_t *keys, size_t n, ember_error *err)
{
    int rc = call_begin(t, s, stream, n, err);
    if (rc || n == 0)
        return rc;
    k_erase<<<grid_for(t, n), BLOCK, 0, stream>>>(view_of(t), keys, n, s->counts);
    if ((rc = launched(err)))
        return rc;
    return call_end(t, s, stream, err);
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
    k_fold<<<1, 1, 0, t->sync_stream>>>(t->d_hist, t->state, 0);
    if ((rc = launched(err)))
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

/* Evicts below `below` and `ties` entries equal to it; *n = how many went.
 * Caller holds sync_lock. */
static int evict_scan(ember_gpu_table *t, uint64_t below, uint64_t ties, uint64_t *n,
                      ember_error *err)
{
    int rc = EMBER_CUDA_CHECK(cudaMemsetAsync(t->d_hist, 0, 256 * 8, t->sync_stream), err);
    if (rc)
        return rc;
    /* d_hist[0..C_COUNT): counters; d_hist[C_COUNT]: ties used. */
    k_evict<<<grid_for(t, t->nb), BLOCK, 0, t->sync_stream>>>(view_of(t), below, ties,
                                                              t->d_hist + C_COUNT, t->d_hist);
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
            rc = evict_scan(t, score, 0, &n, err);
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
            rc = evict_scan(t, cut, excess - below, &n, err);
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

static void export_bufs_free(export_bufs *x)
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
    export_bufs_free(t->ex);
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
        export_bufs_free(x);
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

static void ctx_free(host_ctx *x)
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
        ctx_free(x);
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
        rc = ember_gpu_find(t, x->st, x->d_keys, n, x->d_vals, df, err);
        break;
    case G_FIND_OR_INSERT:
        rc = ember_gpu_find_or_insert(t, x->sc, x->st, c->eop, x->d_keys, n, x->d_vals, df, ds,
                                      err);
        break;
    case G_INSERT_OR_ASSIGN:
        rc = ember_gpu_insert_or_assign(t, x->sc, x->st, c->eop, x->d_keys, n, x->d_vals, ds,
                                        err);
        break;
    case G_ASSIGN:
        rc = ember_gpu_assign(t, x->sc, x->st, c->eop, x->d_keys, n, x->d_vals, df, ds, err);
        break;
    case G_ACCUM:
        rc = ember_gpu_accum(t, x->sc, x->st, c->eop, x->d_keys, n, x->d_vals, df, err);
        break;
    case G_APPLY:
        rc = ember_gpu_apply_gradients(t, x->sc, x->st, c->eop, x->d_keys, n, x->d_vals, ds,
                                       err);
        break;
    case G_IMPORT:
        rc = ember_gpu_import(t, x->sc, x->st, x->d_keys, n, x->d_vals, ds, x->d_versions, err);
        break;
    default:
        rc = ember_gpu_erase(t, x->sc, x->st, x->d_keys, n, err);
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
    return ember_gpu_table_create(c, (ember_gpu_table **)impl, err);
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

static const ember_table_backend gpu_backend = {
    "gpu",
    gb_create,
    gb_destroy,
    gb_find,
    gb_find_or_insert,
    gb_insert_or_assign,
    gb_assign,
    gb_accum,
    gb_apply,
    gb_erase,
    gb_clear,
    gb_export,
    gb_export_end,
    gb_import,
    gb_evict_below,
    gb_evict_to_size,
    gb_size,
    gb_capacity,
    gb_stats,
    gb_footprint,
};

const ember_table_backend *ember_table_gpu_backend(void)
{
    return &gpu_backend;
}

ember_gpu_table *ember_gpu_table_of(ember_table *t)
{
    if (!t || ember_table_backend_of(t) != &gpu_backend)
        return NULL;
    return (ember_gpu_table *)ember_table_impl(t);
}

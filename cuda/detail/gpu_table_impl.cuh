/*
 * gpu_table_impl.cuh — what the files of the GPU table (cuda/detail/gpu_table_*.cu)
 * share, and nothing else includes: the table's and the scratch's structs, the
 * kernels' view of the table, the device helpers that more than one family of
 * kernels uses (probing, bucket locks, slot claims, admission, the tile loops),
 * the launch helpers, and the few host functions one file calls in another.
 * Device helpers are static (or templates) and inlined into each kernel, so no
 * relocatable device code is needed. The files, by what they do:
 *   gpu_table_lookup.cu  find, find_or_insert
 *   gpu_table_write.cu   the dedup map; insert_or_assign, assign, import; accum,
 *                        apply_gradients (sorted updates)
 *   gpu_table_scan.cu    erase and the whole-table calls: clear, evict, export
 *   gpu_table_create.cu  create/destroy, scratch, per-call counters, size and stats
 *   gpu_table_host.cu    the host-array backend (table_backend.h)
 *
 * The GPU backend (gpu_table.h): a HierarchicalKV-style table in device memory,
 * with rows past a byte budget in pinned, mapped host memory.
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
 * find, which is bound by instructions per key (16 or 1 where the table's
 * options ask: ember_gpu_table_options.find_lanes; with 1, each lane probes its
 * own key and the warp moves the rows: lane_probe, warp_copy_rows). Lane l of a T-lane tile holds
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
#ifndef EMBER_CUDA_DETAIL_GPU_TABLE_IMPL_CUH
#define EMBER_CUDA_DETAIL_GPU_TABLE_IMPL_CUH

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>

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
struct export_bufs;

struct ember_gpu_table {
    ember_table_config cfg;
    int device;
    int sms;
    unsigned find_lanes;             /* ember_gpu_table_options.find_lanes: 1, 8 or 16 */
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
    ember_score_policy policy;
    uint32_t *sketch;
    uint32_t sketch_width, min_count;
    dev_state *state;
};

static inline tview view_of(const ember_gpu_table *t)
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

static __device__ __forceinline__ float *row_ptr(const tview &v, uint64_t slot)
{
    return slot < v.rows_hbm ? v.rows_dev + slot * v.stride
                             : v.rows_host + (slot - v.rows_hbm) * v.stride;
}

static __device__ __forceinline__ int aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

/* dst[0..w) = src[0..w), T lanes wide (16-byte moves where both allow); src
 * read through L2. */
template <unsigned T = TILE>
static __device__ __forceinline__ void tile_copy(unsigned lane, float *dst, const float *src,
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
static __device__ __forceinline__ void tile_init_row(const tview &v, unsigned lane, uint64_t key,
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
static __device__ __forceinline__ void tile_init_slots(const tview &v, unsigned lane, float *row)
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
static __device__ __forceinline__ void fence_acq_rel()
{
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

static __device__ __forceinline__ uint32_t load_acquire(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

static __device__ __forceinline__ uint32_t load_relaxed(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* Starts fetching a bucket's control bytes into L2 while the lock or sequence
 * word is being read, so the probe after it does not wait on device memory. */
static __device__ __forceinline__ void prefetch_bucket(const tview &v, uint64_t bucket)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.ctrl + bucket * SLOTS));
}

/* Fetches a key's bucket lines (control bytes and lock word) into L2. */
static __device__ __forceinline__ void prefetch_key(const tview &v, uint64_t key)
{
    if (ember_key_is_reserved(key))
        return;
    uint64_t b = ember_hash_bucket(ember_key_hash(key), v.nb);
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.ctrl + b * SLOTS));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v.seq + b));
}

/* Lane 0 takes the lock; the tile's barrier orders every lane's later accesses
 * after lane 0's acquire. */
static __device__ __forceinline__ void lock_bucket(const tile_t &tile, uint32_t *seq)
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
static __device__ __forceinline__ void unlock_bucket(const tile_t &tile, uint32_t *seq)
{
    tile.sync();
    if (tile.thread_rank() == 0) {
        fence_acq_rel();
        atomicAdd(seq, 1u);
    }
}

/* The bucket sequence word once no writer holds it (find's read section). */
template <class Tile>
static __device__ __forceinline__ uint32_t read_begin(const Tile &tile, const uint32_t *seq)
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
static __device__ __forceinline__ int read_retry(const Tile &tile, const uint32_t *seq, uint32_t s)
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

static __device__ __forceinline__ place place_of(const tview &v, uint64_t key)
{
    uint64_t h = ember_key_hash(key);
    place p;
    p.bucket = ember_hash_bucket(h, v.nb);
    p.digest = ember_hash_digest(h);
    p.group = ember_hash_group(h);
    return p;
}

static __device__ __forceinline__ uint64_t load_ctrl(const tview &v, uint64_t bucket, unsigned lane)
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
static __device__ __forceinline__ ctrl_share<T> load_share(const tview &v, uint64_t bucket, unsigned lane)
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
static __device__ __forceinline__ int probe_key(const Tile &tile, const tview &v, place p, uint64_t key,
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
static __device__ __forceinline__ probe_res probe(const tile_t &tile, const tview &v, place p,
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
static __device__ __forceinline__ int lowest_score(const tile_t &tile, const tview &v, uint64_t bucket,
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

/* ---- one lane per key (find_lanes = 1) ------------------------------------ */

#define WARP 32u
#define FULL_MASK 0xffffffffu

/* Bit k = top bit of byte k, for a word of __vcmpeq4 results (bytes 0 or 0xff):
 * the four products land on bits 28..31 and nowhere collide. */
static __device__ __forceinline__ uint32_t byte_mask4(uint32_t x)
{
    return ((x & 0x80808080u) * 0x00204081u) >> 28;
}

/* One lane alone: the key's slot in its bucket, or -1. Groups are searched from
 * the key's home group on, and the search ends after a group that holds an EMPTY
 * byte: a key is stored at the first free slot of its path, and a slot becomes
 * EMPTY again only where its group already holds one (erase) or its whole bucket
 * does (clear), so the key cannot lie past that group (storage/cpu_table.c
 * searches the same way). Lanes of a warp diverge here, each on its own bucket. */
static __device__ __forceinline__ int lane_probe(const tview &v, place p, uint64_t key)
{
    const uint8_t *ctrl = v.ctrl + p.bucket * SLOTS;
    const uint64_t *bk = v.keys + p.bucket * SLOTS;
    uint32_t pat = p.digest * 0x01010101u;
    for (uint32_t k = 0; k < EMBER_BUCKET_GROUPS; k++) {
        uint32_t g = (p.group + k) & (EMBER_BUCKET_GROUPS - 1u);
        uint4 q = __ldcg((const uint4 *)(ctrl + g * EMBER_GROUP_SLOTS));
        uint32_t match = byte_mask4(__vcmpeq4(q.x, pat)) | byte_mask4(__vcmpeq4(q.y, pat)) << 4 |
                         byte_mask4(__vcmpeq4(q.z, pat)) << 8 |
                         byte_mask4(__vcmpeq4(q.w, pat)) << 12;
        uint32_t empty = __vcmpeq4(q.x, 0x80808080u) | __vcmpeq4(q.y, 0x80808080u) |
                         __vcmpeq4(q.z, 0x80808080u) | __vcmpeq4(q.w, 0x80808080u);
        while (match) {
            uint32_t s = g * EMBER_GROUP_SLOTS + (uint32_t)(__ffs(match) - 1);
            if (__ldcg(bk + s) == key)
                return (int)s;
            match &= match - 1u;
        }
        if (empty)
            return -1;
    }
    return -1;
}

/* How a warp splits rows of `cols` elements (E = float4 or float) among its
 * lanes: rows side by side, `width` lanes each; lane l takes row l / width of
 * each pass, elements l % width, + width, … Fixed for a kernel's run. */
struct warp_split {
    uint32_t cols;     /* elements per row */
    uint32_t width;    /* lanes per row: min(cols, 32) */
    uint32_t rpp;      /* rows per pass: 32 / width */
    uint32_t sub;      /* this lane's row in a pass (≥ rpp: idle) */
    uint32_t col0;     /* this lane's first element */
};

static __device__ __forceinline__ warp_split split_of(uint32_t cols, unsigned lane)
{
    warp_split w;
    w.cols = cols;
    w.width = cols < WARP ? cols : WARP;
    w.rpp = WARP / w.width;
    w.sub = lane / w.width;
    w.col0 = lane % w.width;
    return w;
}

/* Each lane's row, gathered into the warp's shared slots in lane order of the
 * lanes that `want` (rank = lanes below that want too); returns how many. */
static __device__ __forceinline__ unsigned warp_gather(unsigned lane, bool want, uintptr_t a,
                                                       uintptr_t b, uintptr_t *sh_a,
                                                       uintptr_t *sh_b)
{
    unsigned m = __ballot_sync(FULL_MASK, want);
    if (want) {
        unsigned r = __popc(m & ((1u << lane) - 1u));
        sh_a[r] = a;
        sh_b[r] = b;
    }
    __syncwarp();
    return __popc(m);
}

/* The warp copies the rows of the lanes that `want`: src (a table row, read
 * through L2) to dst (the caller's array, streaming stores). U passes' loads are
 * issued before their stores, so a lane has U 16-byte loads in flight and the
 * compiler need not fear that a store aliases a later load. */
template <class E, unsigned U>
static __device__ __forceinline__ void warp_copy_rows(const warp_split &ws, unsigned lane, bool want,
                                                      const float *src, float *dst,
                                                      uintptr_t *sh_a, uintptr_t *sh_b)
{
    unsigned nr = warp_gather(lane, want, (uintptr_t)src, (uintptr_t)dst, sh_a, sh_b);
    if (nr && ws.sub < ws.rpp) {
        for (uint32_t c = ws.col0; c < ws.cols; c += ws.width) {
            for (uint32_t r0 = ws.sub; r0 < nr; r0 += U * ws.rpp) {
                E x[U];
#pragma unroll
                for (unsigned u = 0; u < U; u++) {
                    uint32_t r = r0 + u * ws.rpp;
                    if (r < nr)
                        x[u] = __ldcg((const E *)sh_a[r] + c);
                }
#pragma unroll
                for (unsigned u = 0; u < U; u++) {
                    uint32_t r = r0 + u * ws.rpp;
                    if (r < nr)
                        __stcs((E *)sh_b[r] + c, x[u]);
                }
            }
        }
    }
    __syncwarp();
}

/* The warp writes the initial embedding of the lanes that `want` into dst, as
 * tile_init_row does (the same draws: pairs for 16-byte stores when VEC). */
template <bool VEC>
static __device__ __forceinline__ void warp_init_rows(const tview &v, const warp_split &ws,
                                                      unsigned lane, bool want, uint64_t key,
                                                      float *dst, uintptr_t *sh_a, uintptr_t *sh_b)
{
    uint64_t base = want ? ember_init_base(v.seed, key) : 0;
    unsigned nr = warp_gather(lane, want, (uintptr_t)base, (uintptr_t)dst, sh_a, sh_b);
    if (nr && ws.sub < ws.rpp) {
        for (uint32_t r = ws.sub; r < nr; r += ws.rpp) {
            uint64_t b = (uint64_t)sh_a[r];
            float *out = (float *)sh_b[r];
            for (uint32_t c = ws.col0; c < ws.cols; c += ws.width) {
                if (VEC) {
                    float x[4];
                    ember_init_pair(&v.init, b, 2u * c, x);
                    ember_init_pair(&v.init, b, 2u * c + 1u, x + 2);
                    __stcs((float4 *)out + c, make_float4(x[0], x[1], x[2], x[3]));
                } else {
                    __stcs(out + c, ember_init_value(&v.init, b, c));
                }
            }
        }
    }
    __syncwarp();
}

/* Per-block event counts, flushed to the call's counters at the kernel's end. */
struct block_counts {
    unsigned long long c[C_COUNT];
};

static __device__ __forceinline__ void bc_init(block_counts *bc)
{
    if (threadIdx.x < C_COUNT)
        bc->c[threadIdx.x] = 0;
    __syncthreads();
}

static __device__ __forceinline__ void bc_add(block_counts *bc, int which, unsigned long long n)
{
    if (n)
        atomicAdd(&bc->c[which], n);
}

static __device__ __forceinline__ void bc_flush(block_counts *bc, unsigned long long *counts)
{
    __syncthreads();
    if (threadIdx.x < C_COUNT && bc->c[threadIdx.x])
        atomicAdd(&counts[threadIdx.x], bc->c[threadIdx.x]);
}

/* Takes a slot for a new key in a locked bucket: `free_slot`, else the lowest
 * score's (evicted). -1 when CUSTOM and `score` is below every stored score.
 * Writes the control byte and key; the caller writes row, score and version. */
static __device__ int claim_slot(const tile_t &tile, const tview &v, place p, uint64_t key,
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

/* One admission sighting of a new key; 1 if it may be stored. */
static __device__ int admit(const tview &v, uint64_t key)
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

static __device__ __forceinline__ uint64_t custom_of(const uint64_t *scores, size_t i)
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

/* ---- launching ----------------------------------------------------------- */

static inline unsigned grid_for(const ember_gpu_table *t, size_t tiles)
{
    size_t want = (tiles + TILES_PER_BLOCK - 1) / TILES_PER_BLOCK;
    size_t cap = (size_t)t->sms * 8u;
    if (want > cap)
        want = cap;
    return want ? (unsigned)want : 1u;
}

static inline unsigned grid_flat(const ember_gpu_table *t, size_t n)
{
    size_t want = (n + BLOCK - 1) / BLOCK;
    size_t cap = (size_t)t->sms * 16u;
    if (want > cap)
        want = cap;
    return want ? (unsigned)want : 1u;
}

static inline int launched(ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaGetLastError(), err);
}

static inline int use_device(const ember_gpu_table *t, ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaSetDevice(t->device), err);
}

/* ---- across the files ------------------------------------------------------ */

/* gpu_table_create.cu: a call that counts starts by zeroing the scratch's call
 * counters and ends by folding them into the table's (and aging the sketch when
 * it is time); ember_gpu_fold_async folds counts into the table's counters. */
int ember_gpu_call_begin_async(ember_gpu_table *t, ember_gpu_scratch *s, size_t n,
                               ember_error *err, cudaStream_t st);
int ember_gpu_call_end_async(ember_gpu_table *t, ember_gpu_scratch *s, ember_error *err,
                             cudaStream_t st);
int ember_gpu_fold_async(ember_gpu_table *t, const unsigned long long *counts, ember_error *err,
                         cudaStream_t st);
/* gpu_table_host.cu: frees a staging context of the host-array backend. */
void ember_gpu_ctx_free(host_ctx *x);
/* gpu_table_scan.cu: frees the export buffers (NULL is fine). */
void ember_gpu_export_bufs_free(export_bufs *x);

#endif /* EMBER_CUDA_DETAIL_GPU_TABLE_IMPL_CUH */

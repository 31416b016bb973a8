/*
 * gpu_table.h — the GPU backend: a HierarchicalKV-style table in device memory.
 *
 * Two ways in:
 *
 *  1. ember_table_gpu_backend(): the backend for ember_table_create() (table.h).
 *     Same API, same validation, same semantics as the CPU backend; arguments and
 *     results are host arrays, staged through pinned buffers per calling thread.
 *     This is what the server and the checkpoint code use.
 *
 *  2. The stream-ordered device API below (ember_gpu_*_async): keys, values,
 *     found flags and scores are device pointers (or host-mapped pinned memory),
 *     and every call only enqueues work on `stream` and returns; results are
 *     ready when the stream is. As in cuCollections, a call that enqueues
 *     without waiting ends in _async and takes the stream last; calls that wait
 *     keep plain names. No validation happens here beyond what is free (a
 *     reserved key is never stored, found = 0, initial row returned): callers
 *     validate on the host, as table.c does. This is what table_bench measures,
 *     HierarchicalKV's way.
 *
 * Layout (see cuda/detail/gpu_table_impl.cuh): buckets of EMBER_BUCKET_SLOTS
 * slots; per slot a control byte (7-bit digest of hash.h, or EMPTY/ERASED), key,
 * score and version, in separate arrays; a bucket's lock word; rows (embedding +
 * optimizer slots, padded to 16 bytes) at a fixed place per slot. Rows of the
 * first buckets live in device memory up to config.hbm_bytes, the rest in pinned
 * host memory mapped into the device's address space ("hybrid"); 0 = all in
 * device memory.
 *
 * Same rows as the CPU backend: the hash, digest, probe order (first free slot
 * from the key's home group on), eviction choice (lowest score, first of equal
 * scores), optimizer and initializer math are the EMBER_HD code of storage/,
 * compiled with --fmad=false. A sequence of calls gives both backends the same
 * contents when each call's keys are processed in batch order; within one GPU
 * call keys run in parallel, so where the order inside one call matters the GPU
 * result is that of some order:
 *   (a) which of several new keys of one call gets a bucket's last free slot;
 *   (b) for find_or_insert of a key repeated in one call, which occurrence
 *       reports found = 0 and (CUSTOM) whose score it keeps (each occurrence is
 *       sighted by admission once, as on the CPU);
 *   (c) admission: the sketch ages at the end of the call whose sightings crossed
 *       the mark, not at the exact sighting, and keys sharing sketch counters in
 *       one call may be admitted in another order.
 * insert_or_assign, assign and import write only the last occurrence of a
 * repeated key, with the count of occurrences for LFU; the rows equal the CPU's,
 * except that with CUSTOM scores in a full bucket the key is judged by its last
 * score alone (the CPU may store an earlier, higher-scored occurrence and then
 * update it). accum adds each occurrence's delta to the row in batch order
 * (w += d1; w += d2) and apply_gradients sums gradients in batch order before
 * one step, both exactly as the CPU does, so their rows are bit-for-bit the CPU's
 * (Adam and FTRL within powf's last bits).
 *
 * Hybrid rounding: device memory holds whole buckets' rows, so hbm_bytes is
 * rounded down to a multiple of EMBER_BUCKET_SLOTS rows (a budget below one
 * bucket's rows puts every row in host memory).
 *
 * Locking: one lock word per bucket in device memory. A writing kernel's tile
 * (16 threads per key; find uses 8, or 1 with the warp moving rows) takes its key's bucket lock (atomicCAS), so calls on
 * different streams, and keys of one call, write one bucket at a time; find takes
 * no lock: the lock word is a sequence number (odd while held) and a reader
 * re-reads it after copying the row, retrying if a writer got in: rows are never
 * torn. A tile never holds two locks. Whole-table calls (clear, export, evict)
 * lock one bucket at a time: consistent per row, not a snapshot.
 *
 * Thread-safety: every function except ember_gpu_table_destroy() may be called
 * from many host threads at once, each with its own stream and scratch. A scratch
 * belongs to one stream at a time. The stream-ordered calls never synchronize;
 * creating a scratch waits for the table's own stream only; a host-backend call
 * that needs a larger staging context than any before frees the old one, and
 * cudaFree waits for the whole device (once per growth, never in steady state);
 * ember_gpu_scratch_counts waits for the stream it is given.
 *
 * Errors: every CUDA call is checked (cuda_check.h): out of device or pinned
 * memory → RESOURCE_EXHAUSTED; no usable GPU → UNAVAILABLE; else INTERNAL with the
 * CUDA error's name.
 */
#ifndef EMBER_CUDA_GPU_TABLE_H
#define EMBER_CUDA_GPU_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "storage/table_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The GPU backend for ember_table_create(). Creating a table on it uses the
 * calling thread's current CUDA device, which the table keeps for every later
 * call. UNAVAILABLE where no GPU is visible. */
const ember_table_backend *ember_table_gpu_backend(void);
/* The same backend, its tables created with ember_gpu_table_options.find_lanes =
 * `find_lanes` (0 or 8: ember_table_gpu_backend() itself; 1; 16); NULL for any
 * other value. For tests and A/B runs: results are the same, only speed differs. */
const ember_table_backend *ember_table_gpu_backend_find_lanes(unsigned find_lanes);

typedef struct ember_gpu_table ember_gpu_table;
typedef struct ember_gpu_scratch ember_gpu_scratch;

/* The GPU table behind an ember_table of the GPU backend; NULL for another backend. */
ember_gpu_table *ember_gpu_table_of(ember_table *t);

/* A table's tuning: how fast, never what. A zeroed struct gives the defaults. */
typedef struct ember_gpu_table_options {
    /* Lanes (threads) per key in find: 1, 8 or 16; 0 = 8. find is bound by
     * instructions per key, so a narrower tile serves more keys per warp
     * instruction: with the predicated probe, 8 lanes measured 2.05 B keys/s on
     * an H200 against 1.56 for 16 (dim 64, λ 0.5). 16 is for A/B runs
     * (table_bench --find-lanes). 1 (experimental: written and compiled, not yet
     * run on a GPU): one lane per key probes its bucket group by group, stopping
     * at a group with an EMPTY byte, and the whole warp then moves the 32 keys'
     * rows; the same results, rows never torn. */
    unsigned find_lanes;
} ember_gpu_table_options;

/* Creates a table directly (without table.c): `c` must be valid
 * (ember_table_config_validate); `opt` NULL = the defaults (as the backend of
 * table.h creates its tables). Errors: INVALID_ARGUMENT (an option out of range),
 * RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL. */
int ember_gpu_table_create(const ember_table_config *c, const ember_gpu_table_options *opt,
                           ember_gpu_table **out, ember_error *err);
void ember_gpu_table_destroy(ember_gpu_table *t);

/* Where rows live: the device the table is on, rows (slots) whose values are in
 * device memory and in pinned host memory, and the padded floats per row. */
typedef struct ember_gpu_layout {
    int device;
    uint64_t rows_hbm;
    uint64_t rows_host;
    uint32_t row_stride;     /* floats between two rows (row_floats rounded up to 4) */
    uint64_t bytes_device;
    uint64_t bytes_host;
} ember_gpu_layout;
void ember_gpu_table_layout(const ember_gpu_table *t, ember_gpu_layout *out);

/* Scratch space for the stream-ordered calls of one stream: dedup and sort
 * buffers for up to `max_keys` keys per call, and the call's counters. Calls
 * with more keys fail with INVALID_ARGUMENT. */
int ember_gpu_scratch_create(ember_gpu_table *t, size_t max_keys, ember_gpu_scratch **out,
                             ember_error *err);
void ember_gpu_scratch_destroy(ember_gpu_scratch *s);
size_t ember_gpu_scratch_capacity(const ember_gpu_scratch *s);

/* What the last call made with a scratch counted, once its stream is done. */
typedef struct ember_gpu_counts {
    int64_t size_delta;         /* keys added minus keys removed */
    uint64_t evictions;
    uint64_t refused;
    uint64_t admission_drops;
} ember_gpu_counts;
int ember_gpu_scratch_counts(const ember_gpu_scratch *s, cudaStream_t stream,
                             ember_gpu_counts *out, ember_error *err);

/* ---- stream-ordered device API (table.h semantics; device pointers) ---------
 * values/deltas/grads: n × dim floats; rows (import): n × row_floats floats;
 * found (optional): n bytes; scores (optional, CUSTOM): n; versions: n.
 * `op` (table_backend.h): the call's score context and version; the caller
 * assigns versions (table.c does it with an atomic counter). */
int ember_gpu_find_async(ember_gpu_table *t, const uint64_t *keys, size_t n, float *values,
                         uint8_t *found, ember_error *err, cudaStream_t stream);
int ember_gpu_find_or_insert_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                   const uint64_t *keys, size_t n, float *values, uint8_t *found,
                                   const uint64_t *scores, ember_error *err, cudaStream_t stream);
int ember_gpu_insert_or_assign_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                     const uint64_t *keys, size_t n, const float *values,
                                     const uint64_t *scores, ember_error *err, cudaStream_t stream);
int ember_gpu_assign_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                           const uint64_t *keys, size_t n, const float *values, uint8_t *found,
                           const uint64_t *scores, ember_error *err, cudaStream_t stream);
int ember_gpu_accum_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                          const uint64_t *keys, size_t n, const float *deltas, uint8_t *found,
                          ember_error *err, cudaStream_t stream);
int ember_gpu_apply_gradients_async(ember_gpu_table *t, ember_gpu_scratch *s, const ember_op *op,
                                    const uint64_t *keys, size_t n, const float *grads,
                                    const uint64_t *scores, ember_error *err, cudaStream_t stream);
int ember_gpu_import_async(ember_gpu_table *t, ember_gpu_scratch *s, const uint64_t *keys, size_t n,
                           const float *rows, const uint64_t *scores, const uint64_t *versions,
                           ember_error *err, cudaStream_t stream);
/* Erased keys count as size_delta < 0 in the scratch's counts. */
int ember_gpu_erase_async(ember_gpu_table *t, ember_gpu_scratch *s, const uint64_t *keys, size_t n,
                          ember_error *err, cudaStream_t stream);

/* Whole-table calls: synchronous, host arguments (as the backend's). */
int ember_gpu_clear(ember_gpu_table *t, ember_error *err);
/* Exports rows of whole buckets [*cursor, …) into host arrays, as table.h's
 * ember_table_export (max_rows ≥ EMBER_BUCKET_SLOTS). */
int ember_gpu_export(ember_gpu_table *t, const ember_export_filter *f, uint64_t *cursor,
                     size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                     uint64_t *versions, size_t *n_out, ember_error *err);
uint64_t ember_gpu_export_end(const ember_gpu_table *t);
int ember_gpu_evict_below(ember_gpu_table *t, uint64_t score, uint64_t *evicted,
                          ember_error *err);
/* Removes entries whose version is below `version` (TTL; counted as evicted). */
int ember_gpu_evict_versions_below(ember_gpu_table *t, uint64_t version, uint64_t *evicted,
                                   ember_error *err);
/* Which of several keys with the cut's score go is unspecified (the CPU backend
 * takes them in bucket order). */
int ember_gpu_evict_to_size(ember_gpu_table *t, uint64_t target, uint64_t *evicted,
                            ember_error *err);
/* Keys stored, read from the device (work still queued on other streams is not
 * waited for). */
uint64_t ember_gpu_size(const ember_gpu_table *t);
uint64_t ember_gpu_capacity(const ember_gpu_table *t);
void ember_gpu_stats(const ember_gpu_table *t, ember_table_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CUDA_GPU_TABLE_H */

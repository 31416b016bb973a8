/*
 * math_kernels.h — the storage layer's shared math (storage/hash.h, init.h,
 * optim.h, admission.h), run on the GPU over a batch held in host memory.
 *
 * These are the same EMBER_HD functions the CPU backend calls, compiled by nvcc
 * for the device; the GPU tests compare each helper with a host loop over the same
 * function. They are not the table's data path (the GPU table keeps its rows in
 * device memory): each call allocates device buffers, copies the batch in, runs
 * one kernel, copies the results back and frees, synchronously, on the calling
 * thread's current device and the legacy default stream.
 *
 * Common rules: `n` is the batch length; n == 0 succeeds without touching the
 * GPU (pointers may then be NULL). Returns INVALID_ARGUMENT for a NULL pointer
 * with n > 0 or a batch whose byte size overflows size_t; otherwise the CUDA
 * failures of cuda_check.h (RESOURCE_EXHAUSTED when device memory runs out,
 * UNAVAILABLE where there is no usable GPU, INTERNAL else). On failure the
 * outputs hold unspecified values. Thread-safe (no shared state).
 *
 * Device code is compiled with --fmad=false, so a multiply-add rounds twice as in
 * the host C build and only the transcendental functions (logf, cosf, powf) may
 * differ from the CPU in their last bits.
 */
#ifndef EMBER_CUDA_MATH_KERNELS_H
#define EMBER_CUDA_MATH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "storage/init.h"
#include "storage/optim.h"

#include "storage/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i·dim .. i·dim+dim) = ember_init_row(c, seed, keys[i], ·, dim). */
int ember_cuda_math_init_rows(const ember_init_config *c, uint64_t seed, const uint64_t *keys,
                              size_t n, uint32_t dim, float *out, ember_error *err);

/* For each i: ember_optim_apply(c, rows + i·rf, grads + i·dim, dim), in place,
 * where rf = ember_row_floats(c->kind, dim) (embedding then optimizer slots). */
int ember_cuda_math_optim_apply(const ember_optim_config *c, float *rows, const float *grads,
                                size_t n, uint32_t dim, ember_error *err);

/* For each i, with h = ember_key_hash(keys[i]): hash[i] = h,
 * bucket[i] = ember_hash_bucket(h, num_buckets), digest[i] = ember_hash_digest(h),
 * group[i] = ember_hash_group(h). All four outputs are required. */
int ember_cuda_math_hash(const uint64_t *keys, size_t n, uint64_t num_buckets, uint64_t *hash,
                         uint64_t *bucket, uint8_t *digest, uint32_t *group, ember_error *err);

/* index[i·EMBER_SKETCH_DEPTH + r] = ember_sketch_index(keys[i], r, width) for each
 * sketch row r. INVALID_ARGUMENT unless `width` is a power of two. */
int ember_cuda_math_sketch_index(const uint64_t *keys, size_t n, uint32_t width,
                                 uint32_t *index, ember_error *err);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CUDA_MATH_KERNELS_H */

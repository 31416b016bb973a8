/*
 * hd.h — one macro that lets a function be compiled for both host C and CUDA
 * device code.
 *
 * Code that must compute the same thing on the CPU and the GPU (key hash, bucket
 * and digest choice, optimizer rules, initializer streams) is written once, in
 * headers whose functions are marked EMBER_HD. In C it is `static inline`; under
 * nvcc it is `__host__ __device__ __forceinline__`. Such code must stay in the
 * common subset of C11 and CUDA C++: no VLAs, no designated initializers for
 * unions, no C-only headers beyond <stdint.h>, <stddef.h> and <math.h>.
 */
#ifndef EMBER_HD_H
#define EMBER_HD_H

#include <stdint.h>
#include <stddef.h>

#ifdef __CUDACC__
#define EMBER_HD __host__ __device__ __forceinline__ static
#else
#define EMBER_HD static inline
#endif

#endif /* EMBER_HD_H */

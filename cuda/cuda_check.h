/*
 * cuda_check.h — the one way a CUDA runtime call is checked: EMBER_CUDA_CHECK turns
 * its cudaError_t into an ember status, recording the CUDA error's name, its text
 * and the file:line of the check in the caller's `ember_error`.
 *
 *   cudaErrorMemoryAllocation                        → EMBER_RESOURCE_EXHAUSTED
 *   cudaErrorNoDevice, cudaErrorInsufficientDriver,
 *   cudaErrorStubLibrary (no usable GPU or driver)   → EMBER_UNAVAILABLE
 *   any other error                                  → EMBER_INTERNAL
 *
 * The macro is an expression, so it fits both shapes of caller:
 *
 *     return EMBER_CUDA_CHECK(cudaMemcpy(...), err);
 *     if ((rc = EMBER_CUDA_CHECK(cudaMalloc(&p, bytes), err)) != EMBER_OK)
 *         goto out;
 *
 * Usable from C and CUDA C++. Thread-safe: it touches only the `err` it is given
 * (which may be NULL).
 */
#ifndef EMBER_CUDA_CHECK_H
#define EMBER_CUDA_CHECK_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "storage/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The ember status for `e` (EMBER_OK for cudaSuccess, `err` untouched then); on
 * failure records "<cudaErrorName> (<text>) at <file>:<line>" in `err`. Call it
 * through EMBER_CUDA_CHECK, which supplies file and line. */
int ember_cuda_status(cudaError_t e, const char *file, int line, ember_error *err);

#ifdef __cplusplus
}
#endif

#define EMBER_CUDA_CHECK(call, err) ember_cuda_status((call), __FILE__, __LINE__, (err))

#endif /* EMBER_CUDA_CHECK_H */

/*
 * device.h — which CUDA devices this process can see.
 *
 * Thread-safety: both functions may be called from any thread at any time.
 * ember_cuda_device_describe() leaves the calling thread's current device as it
 * found it.
 */
#ifndef EMBER_CUDA_DEVICE_H
#define EMBER_CUDA_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "storage/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Stores in `*count` the number of CUDA devices visible to this process. No
 * device, no driver, or a driver too old for this CUDA runtime is not an error:
 * `*count` is 0 and the call returns EMBER_OK — that is how callers decide
 * between the cpu and gpu backends, and how GPU tests decide to skip.
 * Returns INVALID_ARGUMENT if `count` is NULL; INTERNAL for any other CUDA
 * failure (a broken driver installation, say), which is reported, not hidden. */
int ember_cuda_device_count(int *count, ember_error *err);

/* Describes device `dev` (0-based): its name, NUL-terminated and truncated to
 * `len` bytes, into `name`; its global memory in bytes into `*mem_total`; and the
 * bytes free right now into `*mem_free`. Any of `name` (with `len` 0),
 * `mem_total` and `mem_free` may be NULL when not wanted. Asking for `mem_free`
 * creates the CUDA context of `dev` (the runtime's primary context) if none
 * exists, which itself takes a few hundred MiB of that device.
 * Returns NOT_FOUND if `dev` is not a visible device (any `dev` where none is),
 * INVALID_ARGUMENT for a non-NULL `name` with `len` 0, and the CUDA failures of
 * cuda_check.h. */
int ember_cuda_device_describe(int dev, char *name, size_t len, uint64_t *mem_total,
                               uint64_t *mem_free, ember_error *err);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CUDA_DEVICE_H */

#include "cuda/device.h"

#include <stdio.h>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"

/* The errors with which the runtime says "there is no GPU to use here", as
 * opposed to "the GPU or driver is broken". */
static int is_no_device(cudaError_t e)
{
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
           e == cudaErrorStubLibrary;
}

int ember_cuda_device_count(int *count, ember_error *err)
{
    int n = 0;
    cudaError_t e;
    if (!count)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "count is NULL");
    *count = 0;
    e = cudaGetDeviceCount(&n);
    if (is_no_device(e)) {
        /* Not sticky: clear it, so a later cudaGetLastError() in this thread
         * does not report a failure that was an answer. */
        (void)cudaGetLastError();
        return EMBER_OK;
    }
    int rc = EMBER_CUDA_CHECK(e, err);
    if (rc == EMBER_OK)
        *count = n;
    return rc;
}

int ember_cuda_device_describe(int dev, char *name, size_t len, uint64_t *mem_total,
                               uint64_t *mem_free, ember_error *err)
{
    int rc, n = 0, prev = 0;
    cudaDeviceProp prop;
    if (name && len == 0)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "name buffer of length 0");
    if ((rc = ember_cuda_device_count(&n, err)) != EMBER_OK)
        return rc;
    if (dev < 0 || dev >= n)
        return ember_error_set(err, EMBER_NOT_FOUND, "CUDA device %d not found (%d visible)",
                               dev, n);
    if (name || mem_total) {
        if ((rc = EMBER_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev), err)) != EMBER_OK)
            return rc;
        if (name)
            snprintf(name, len, "%s", prop.name);
        if (mem_total)
            *mem_total = (uint64_t)prop.totalGlobalMem;
    }
    if (mem_free) {
        size_t free_b = 0, total_b = 0;
        /* cudaMemGetInfo answers for the current device: switch, ask, switch back. */
        if ((rc = EMBER_CUDA_CHECK(cudaGetDevice(&prev), err)) != EMBER_OK)
            return rc;
        if ((rc = EMBER_CUDA_CHECK(cudaSetDevice(dev), err)) != EMBER_OK)
            return rc;
        rc = EMBER_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b), err);
        int rc2 = EMBER_CUDA_CHECK(cudaSetDevice(prev), rc == EMBER_OK ? err : NULL);
        if (rc == EMBER_OK)
            rc = rc2;
        if (rc != EMBER_OK)
            return rc;
        *mem_free = (uint64_t)free_b;
    }
    return EMBER_OK;
}

#include "cuda_check.h"

/* __FILE__ is the absolute path CMake compiled; the last two components
 * ("cuda/math_kernels.cu") say where, and leave room in the 256-byte message. */
static const char *short_path(const char *file)
{
    const char *last = NULL, *prev = NULL, *p;
    for (p = file; *p; p++) {
        if (*p == '/') {
            prev = last;
            last = p;
        }
    }
    return prev ? prev + 1 : file;
}

int ember_cuda_status(cudaError_t e, const char *file, int line, ember_error *err)
{
    int code;
    if (e == cudaSuccess)
        return EMBER_OK;
    switch (e) {
    case cudaErrorMemoryAllocation:
        code = EMBER_RESOURCE_EXHAUSTED;
        break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
        code = EMBER_UNAVAILABLE;
        break;
    default:
        code = EMBER_INTERNAL;
        break;
    }
    return ember_error_set(err, code, "%s (%s) at %s:%d", cudaGetErrorName(e),
                           cudaGetErrorString(e), short_path(file ? file : "?"), line);
}

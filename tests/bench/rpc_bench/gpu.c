/*
 * rpc_bench/gpu.c — whether a GPU is visible to rpc_bench, for its default
 * --backends. Built only where CUDA is (tests/bench/CMakeLists.txt). A file of
 * its own because cuda/device.h brings storage's ember_error and rpc_bench.h
 * includes the client's ember.h, whose ember_error has the same name.
 */
#include <stdio.h>

#include "cuda/device.h"

int rpc_bench_gpu_count(char *why, size_t cap);

/* The number of visible CUDA devices (0 with `why` saying so), or -1 with the
 * runtime's complaint in `why`. Creates no CUDA context. */
int rpc_bench_gpu_count(char *why, size_t cap)
{
    int n = 0;
    ember_error err;
    ember_error_clear(&err);
    if (ember_cuda_device_count(&n, &err) != EMBER_OK) {
        snprintf(why, cap, "ember_cuda_device_count failed: %s", err.message);
        return -1;
    }
    if (n == 0)
        snprintf(why, cap, "no CUDA device is visible (ember_cuda_device_count: 0)");
    return n;
}

/* backend.c — the backend served and its CUDA device (backend.h). */
#include "server/backend.h"

#include <stdio.h>
#include <string.h>

#ifdef EMBER_HAVE_CUDA
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/gpu_table.h"
#endif

int srv_backend_have_cuda(void)
{
#ifdef EMBER_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

static void use_cpu(srv_backend *out)
{
    out->table_backend = ember_table_cpu_backend();
    strcpy(out->name, "cpu");
    out->gpu = -1;
}

int srv_backend_select(const srv_config *c, srv_backend *out, char *msg, size_t cap)
{
    memset(out, 0, sizeof *out);
    use_cpu(out);
    if (!strcmp(c->backend, "cpu"))
        return 0;
    int want_gpu = !strcmp(c->backend, "gpu");
#ifndef EMBER_HAVE_CUDA
    if (want_gpu) {
        snprintf(msg, cap,
                 "backend gpu: this ember-server was built without CUDA (EMBER_CUDA=OFF or "
                 "no nvcc), so it serves cpu only; use --backend cpu or auto");
        return -1;
    }
    return 0;
#else
    ember_error err;
    int n = 0;
    if (ember_cuda_device_count(&n, &err)) {
        /* a broken driver: auto must not hide it behind a quiet cpu server either */
        snprintf(msg, cap, "backend %s: cannot count CUDA devices: %s", c->backend,
                 err.message);
        return -1;
    }
    if (n == 0) {
        if (!want_gpu)
            return 0; /* auto */
        snprintf(msg, cap,
                 "backend gpu: no GPU is visible to this process (no CUDA device, or no "
                 "driver; see CUDA_VISIBLE_DEVICES); use --backend cpu or auto");
        return -1;
    }
    if (c->gpu >= (unsigned)n) {
        snprintf(msg, cap, "--gpu %u: no such GPU (%d visible: 0..%d)", c->gpu, n, n - 1);
        return -1;
    }
    out->gpu = (int)c->gpu;
    if (ember_cuda_device_describe(out->gpu, out->device, sizeof out->device,
                                   &out->device_memory, NULL, &err) ||
        srv_backend_thread_init(out, &err)) {
        snprintf(msg, cap, "backend gpu: GPU %d: %s", out->gpu, err.message);
        return -1;
    }
    out->table_backend = ember_table_gpu_backend();
    strcpy(out->name, "gpu");
    out->hbm_bytes = c->hbm_bytes;
    return 0;
#endif
}

int srv_backend_thread_init(const srv_backend *b, ember_error *err)
{
#ifdef EMBER_HAVE_CUDA
    if (b->gpu >= 0)
        return EMBER_CUDA_CHECK(cudaSetDevice(b->gpu), err);
#else
    (void)b;
    (void)err;
#endif
    return 0;
}

uint64_t srv_backend_memory_free(const srv_backend *b)
{
    uint64_t free_bytes = 0;
#ifdef EMBER_HAVE_CUDA
    ember_error err;
    if (b->gpu >= 0 &&
        ember_cuda_device_describe(b->gpu, NULL, 0, NULL, &free_bytes, &err) != EMBER_OK)
        free_bytes = 0;
#else
    (void)b;
#endif
    return free_bytes;
}

int srv_backend_for_table(const srv_backend *b, const char *name, uint64_t asked,
                          const ember_table_backend **out, uint64_t *hbm_bytes,
                          ember_error *err)
{
    if (!name || !*name)
        name = b->name;
    if (!strcmp(name, "cpu")) {
        *out = ember_table_cpu_backend();
        *hbm_bytes = 0;
        return 0;
    }
    if (strcmp(name, "gpu"))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "backend '%.32s' is not one of cpu, gpu", name);
    if (b->gpu < 0)
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "backend gpu: this server serves cpu tables only (%s)",
                               srv_backend_have_cuda()
                                   ? "started with --backend cpu, or auto found no GPU"
                                   : "built without CUDA");
    *out = b->table_backend;
    *hbm_bytes = asked ? asked : b->hbm_bytes;
    return 0;
}

int srv_table_within_caps(const ember_table_config *c, const ember_table_backend *be,
                          uint64_t max_host_bytes, uint64_t max_hbm_bytes, ember_error *err)
{
    /* a growing table is held to its caps at the largest size it may reach */
    ember_table_config largest = *c;
    if (ember_table_config_validate(c, err) == EMBER_OK)
        largest.capacity = ember_table_config_max_slots(c);
    uint64_t host = 0, device = 0;
    int rc = ember_table_footprint(&largest, be, &host, &device, err);
    if (rc)
        return rc;
    if (max_hbm_bytes && device > max_hbm_bytes)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "the table needs %llu bytes of device memory for %llu keys of "
                               "dim %u, over --max-table-hbm-bytes %llu (a smaller capacity "
                               "or hbm_bytes fits)",
                               (unsigned long long)device, (unsigned long long)largest.capacity,
                               c->dim, (unsigned long long)max_hbm_bytes);
    if (max_host_bytes && host > max_host_bytes)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "the table needs %llu bytes of host memory for %llu keys of "
                               "dim %u, over --max-table-host-bytes %llu",
                               (unsigned long long)host, (unsigned long long)largest.capacity,
                               c->dim, (unsigned long long)max_host_bytes);
    return EMBER_OK;
}

#include "cuda/math_kernels.h"

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "storage/admission.h"
#include "storage/hash.h"
#include "storage/init.h"
#include "storage/optim.h"

#define THREADS 256u
#define MAX_BLOCKS 65536u /* the kernels stride over larger batches */

/* ---- kernels: one thread per key (per row), grid-stride ------------------- */

static __global__ void init_rows_kernel(ember_init_config c, uint64_t seed,
                                        const uint64_t *keys, size_t n, uint32_t dim,
                                        float *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        ember_init_row(&c, seed, keys[i], out + i * dim, dim);
}

static __global__ void optim_apply_kernel(ember_optim_config c, float *rows,
                                          const float *grads, size_t n, uint32_t dim,
                                          uint32_t row_floats)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        ember_optim_apply(&c, rows + i * row_floats, grads + i * dim, dim);
}

static __global__ void hash_kernel(const uint64_t *keys, size_t n, uint64_t num_buckets,
                                   uint64_t *hash, uint64_t *bucket, uint8_t *digest,
                                   uint32_t *group)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = ember_key_hash(keys[i]);
        hash[i] = h;
        bucket[i] = ember_hash_bucket(h, num_buckets);
        digest[i] = ember_hash_digest(h);
        group[i] = ember_hash_group(h);
    }
}

static __global__ void sketch_index_kernel(const uint64_t *keys, size_t n, uint32_t width,
                                           uint32_t *index)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        for (uint32_t r = 0; r < EMBER_SKETCH_DEPTH; r++)
            index[i * EMBER_SKETCH_DEPTH + r] = ember_sketch_index(keys[i], r, width);
}

/* ---- host plumbing ---------------------------------------------------------- */

static unsigned blocks_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < MAX_BLOCKS ? b : MAX_BLOCKS);
}

/* `*bytes` = n · per; 0 (and INVALID_ARGUMENT) when that overflows size_t. */
static int batch_bytes(size_t n, size_t per, size_t *bytes, const char *what,
                       ember_error *err)
{
    if (per != 0 && n > SIZE_MAX / per)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s: batch of %zu x %zu bytes overflows", what, n, per);
    *bytes = n * per;
    return EMBER_OK;
}

/* Allocates `bytes` of device memory at `*dev` and, if `host` is not NULL, copies
 * them in. */
static int to_device(void **dev, const void *host, size_t bytes, ember_error *err)
{
    int rc = EMBER_CUDA_CHECK(cudaMalloc(dev, bytes), err);
    if (rc == EMBER_OK && host)
        rc = EMBER_CUDA_CHECK(cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice), err);
    return rc;
}

static int to_host(void *host, const void *dev, size_t bytes, ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), err);
}

/* Frees `dev` (NULL is fine) and returns the first failure: `rc` if the call had
 * already failed (then `err` keeps that failure's message), else cudaFree's. */
static int release(void *dev, int rc, ember_error *err)
{
    int frc = EMBER_CUDA_CHECK(cudaFree(dev), rc == EMBER_OK ? err : NULL);
    return rc == EMBER_OK ? frc : rc;
}

/* A launch's own failures (bad configuration, no kernel image for this GPU)
 * show here; faults while it runs show at the next synchronising copy. */
static int launched(ember_error *err)
{
    return EMBER_CUDA_CHECK(cudaGetLastError(), err);
}

/* ---- the helpers ------------------------------------------------------------ */

extern "C" int ember_cuda_math_init_rows(const ember_init_config *c, uint64_t seed,
                                         const uint64_t *keys, size_t n, uint32_t dim,
                                         float *out, ember_error *err)
{
    void *d_keys = NULL, *d_out = NULL;
    size_t kbytes = 0, obytes = 0;
    int rc;
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "init_rows: config is NULL");
    if (n == 0)
        return EMBER_OK;
    if (!keys || (!out && dim))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "init_rows: NULL keys or out");
    if ((rc = batch_bytes(n, sizeof(uint64_t), &kbytes, "init_rows", err)) != EMBER_OK ||
        (rc = batch_bytes(n, (size_t)dim * sizeof(float), &obytes, "init_rows", err)) != EMBER_OK)
        return rc;
    if (obytes == 0)
        return EMBER_OK;
    if ((rc = to_device(&d_keys, keys, kbytes, err)) != EMBER_OK ||
        (rc = to_device(&d_out, NULL, obytes, err)) != EMBER_OK)
        goto out;
    init_rows_kernel<<<blocks_for(n), THREADS>>>(*c, seed, (const uint64_t *)d_keys, n, dim,
                                                 (float *)d_out);
    if ((rc = launched(err)) != EMBER_OK)
        goto out;
    rc = to_host(out, d_out, obytes, err);
out:
    rc = release(d_out, rc, err);
    return release(d_keys, rc, err);
}

extern "C" int ember_cuda_math_optim_apply(const ember_optim_config *c, float *rows,
                                           const float *grads, size_t n, uint32_t dim,
                                           ember_error *err)
{
    void *d_rows = NULL, *d_grads = NULL;
    size_t rbytes = 0, gbytes = 0;
    uint32_t rf;
    int rc;
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "optim_apply: config is NULL");
    if (n == 0 || dim == 0)
        return EMBER_OK;
    if (!rows || !grads)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "optim_apply: NULL rows or grads");
    rf = ember_row_floats(c->kind, dim);
    if ((rc = batch_bytes(n, (size_t)rf * sizeof(float), &rbytes, "optim_apply", err)) != EMBER_OK ||
        (rc = batch_bytes(n, (size_t)dim * sizeof(float), &gbytes, "optim_apply", err)) != EMBER_OK)
        return rc;
    if ((rc = to_device(&d_rows, rows, rbytes, err)) != EMBER_OK ||
        (rc = to_device(&d_grads, grads, gbytes, err)) != EMBER_OK)
        goto out;
    optim_apply_kernel<<<blocks_for(n), THREADS>>>(*c, (float *)d_rows, (const float *)d_grads,
                                                   n, dim, rf);
    if ((rc = launched(err)) != EMBER_OK)
        goto out;
    rc = to_host(rows, d_rows, rbytes, err);
out:
    rc = release(d_grads, rc, err);
    return release(d_rows, rc, err);
}

extern "C" int ember_cuda_math_hash(const uint64_t *keys, size_t n, uint64_t num_buckets,
                                    uint64_t *hash, uint64_t *bucket, uint8_t *digest,
                                    uint32_t *group, ember_error *err)
{
    void *d_keys = NULL, *d_hash = NULL, *d_bucket = NULL, *d_digest = NULL, *d_group = NULL;
    size_t b64 = 0;
    int rc;
    if (n == 0)
        return EMBER_OK;
    if (!keys || !hash || !bucket || !digest || !group)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "hash: NULL keys or output");
    if ((rc = batch_bytes(n, sizeof(uint64_t), &b64, "hash", err)) != EMBER_OK)
        return rc;
    /* n · 8 fits, so n · 1 and n · 4 do too. */
    if ((rc = to_device(&d_keys, keys, b64, err)) != EMBER_OK ||
        (rc = to_device(&d_hash, NULL, b64, err)) != EMBER_OK ||
        (rc = to_device(&d_bucket, NULL, b64, err)) != EMBER_OK ||
        (rc = to_device(&d_digest, NULL, n * sizeof(uint8_t), err)) != EMBER_OK ||
        (rc = to_device(&d_group, NULL, n * sizeof(uint32_t), err)) != EMBER_OK)
        goto out;
    hash_kernel<<<blocks_for(n), THREADS>>>((const uint64_t *)d_keys, n, num_buckets,
                                            (uint64_t *)d_hash, (uint64_t *)d_bucket,
                                            (uint8_t *)d_digest, (uint32_t *)d_group);
    if ((rc = launched(err)) != EMBER_OK ||
        (rc = to_host(hash, d_hash, b64, err)) != EMBER_OK ||
        (rc = to_host(bucket, d_bucket, b64, err)) != EMBER_OK ||
        (rc = to_host(digest, d_digest, n * sizeof(uint8_t), err)) != EMBER_OK)
        goto out;
    rc = to_host(group, d_group, n * sizeof(uint32_t), err);
out:
    rc = release(d_group, rc, err);
    rc = release(d_digest, rc, err);
    rc = release(d_bucket, rc, err);
    rc = release(d_hash, rc, err);
    return release(d_keys, rc, err);
}

extern "C" int ember_cuda_math_sketch_index(const uint64_t *keys, size_t n, uint32_t width,
                                            uint32_t *index, ember_error *err)
{
    void *d_keys = NULL, *d_index = NULL;
    size_t kbytes = 0, ibytes = 0;
    int rc;
    if (width == 0 || (width & (width - 1u)) != 0)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "sketch_index: width %u is not a power of two", width);
    if (n == 0)
        return EMBER_OK;
    if (!keys || !index)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "sketch_index: NULL keys or index");
    if ((rc = batch_bytes(n, sizeof(uint64_t), &kbytes, "sketch_index", err)) != EMBER_OK ||
        (rc = batch_bytes(n, EMBER_SKETCH_DEPTH * sizeof(uint32_t), &ibytes, "sketch_index",
                          err)) != EMBER_OK)
        return rc;
    if ((rc = to_device(&d_keys, keys, kbytes, err)) != EMBER_OK ||
        (rc = to_device(&d_index, NULL, ibytes, err)) != EMBER_OK)
        goto out;
    sketch_index_kernel<<<blocks_for(n), THREADS>>>((const uint64_t *)d_keys, n, width,
                                                    (uint32_t *)d_index);
    if ((rc = launched(err)) != EMBER_OK)
        goto out;
    rc = to_host(index, d_index, ibytes, err);
out:
    rc = release(d_index, rc, err);
    return release(d_keys, rc, err);
}

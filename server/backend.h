/*
 * backend.h — the table backend this server serves, and the CUDA device behind
 * the gpu one.
 *
 * At start, srv_backend_select() turns --backend auto|gpu|cpu into the backend
 * served: auto is gpu when this build has CUDA and a GPU is visible, else cpu.
 * On gpu it makes --gpu N the calling thread's current CUDA device; every other
 * thread that touches a table (each worker) calls srv_backend_thread_init() once
 * before it does. A build without CUDA serves cpu only.
 *
 * Tables: CreateTable's config.backend "" takes the served backend; "cpu" is
 * always available; "gpu" only on a server serving gpu (only then is a device
 * set up). A gpu table's hbm_bytes of 0 takes --hbm-bytes.
 *
 * Thread-safety: select once at start, before any other call; the rest may be
 * called from any thread afterwards (they only read the srv_backend).
 */
#ifndef EMBER_SRV_BACKEND_H
#define EMBER_SRV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "server/config.h"
#include "storage/table.h"

typedef struct srv_backend {
    const ember_table_backend *table_backend; /* the default for new tables */
    char name[8];             /* "cpu" or "gpu": what ServerInfo reports */
    int gpu;                  /* the CUDA device; -1 on cpu */
    char device[128];         /* its name; "" on cpu */
    uint64_t device_memory;   /* its global memory in bytes; 0 on cpu */
    uint64_t hbm_bytes;       /* default per-table budget of rows in device memory */
} srv_backend;

/* 1 if this build has the gpu backend (was built with CUDA). */
int srv_backend_have_cuda(void);

/* Chooses the backend for `c` (backend, gpu, hbm_bytes) into *out and, on gpu,
 * makes c->gpu the calling thread's current device. Returns 0, or -1 with the
 * reason in msg: gpu asked for in a build without CUDA, where no GPU is visible,
 * or --gpu naming a device that is not there; a CUDA failure. */
int srv_backend_select(const srv_config *c, srv_backend *out, char *msg, size_t cap);

/* Makes b's device the calling thread's current CUDA device; a no-op on cpu.
 * Errors: the CUDA failures of cuda/cuda_check.h. */
int srv_backend_thread_init(const srv_backend *b, ember_error *err);

/* The backend's device memory free right now, in bytes (0 on cpu, or when the
 * device cannot say). */
uint64_t srv_backend_memory_free(const srv_backend *b);

/* The backend for a table whose config names `name` ("" or NULL: b's), and the
 * table config's hbm_bytes to use in *hbm_bytes (`asked`, or b's default when 0;
 * 0 for cpu). Errors: INVALID_ARGUMENT (unknown name), FAILED_PRECONDITION (gpu
 * on a server that serves cpu). */
int srv_backend_for_table(const srv_backend *b, const char *name, uint64_t asked,
                          const ember_table_backend **out, uint64_t *hbm_bytes,
                          ember_error *err);

/* Whether a table of config `c` on backend `be` (NULL = CPU) fits the per-table
 * memory caps: `max_host_bytes` on its host memory (all of a CPU table; the
 * pinned rows of a hybrid GPU table), `max_hbm_bytes` on its device memory (0 =
 * no cap), as ember_table_footprint counts them: one cap per kind of memory, as
 * a pod is given them. Checked before anything is allocated. RESOURCE_EXHAUSTED naming
 * the cap (`--max-table-host-bytes`, `--max-table-hbm-bytes`) and the bytes asked;
 * INVALID_ARGUMENT on a bad config. */
int srv_table_within_caps(const ember_table_config *c, const ember_table_backend *be,
                          uint64_t max_host_bytes, uint64_t max_hbm_bytes, ember_error *err);

#endif

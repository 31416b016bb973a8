/*
 * gpu_table_util.h — helpers shared by the GPU table tests (test_gpu_table.c,
 * test_gpu_table_api.c): configs, CPU-against-GPU comparisons that name the first
 * difference, filtered exports, and the main() that skips without a GPU.
 *
 * "The same rows" (see test_gpu_math.c for the bounds): bit-identical where only
 * +, −, ×, / and sqrtf are involved (SGD, Adagrad, FTRL with lr_power −0.5; ZEROS,
 * CONSTANT and UNIFORM rows), since the GPU code is compiled with --fmad=false;
 * within GT_ROW_TOL·max(|x|, 1) where Adam (powf), FTRL's powf path or the NORMAL
 * initializers (logf, cosf, sinf) are involved. Scores and versions: exact.
 */
#ifndef EMBER_TEST_GPU_TABLE_UTIL_H
#define EMBER_TEST_GPU_TABLE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "storage/table.h"
#include "test_util.h"

#define GT_ROW_TOL 1e-5f

/* ck_assert_msg that calls into Check only when it fails: each passing Check
 * assertion write(2)s its location, which over the walks' millions of checked
 * values would cost more than the GPU work. */
#define GT_EXPECT(cond, ...)                                                            \
    do {                                                                               \
        if (!(cond))                                                                   \
            ck_assert_msg(0, __VA_ARGS__);                                             \
    } while (0)

/* A call that must succeed; on failure the message names it, its status and the
 * error's text. `e` must be the ember_error the call was given. */
#define CK(call, e)                                                                    \
    do {                                                                               \
        ember_error_clear(&(e));                                                       \
        int rc_ = (call);                                                              \
        GT_EXPECT(rc_ == EMBER_OK, "line %d: %s -> %s: %s", __LINE__, #call,            \
                  ember_status_name(rc_), (e).message);                                \
    } while (0)

#define CUDA_CK(call)                                                                  \
    do {                                                                               \
        cudaError_t ce_ = (call);                                                      \
        GT_EXPECT(ce_ == cudaSuccess, "line %d: %s -> %s", __LINE__, #call,             \
                  cudaGetErrorName(ce_));                                              \
    } while (0)

/* A counter-based generator: uniform 64 bits, below n, in [-1, 1), in [0, 1). */
uint64_t gt_rng_next(uint64_t *s);
uint64_t gt_rng_below(uint64_t *s, uint64_t n);
float gt_rng_sym(uint64_t *s);
float gt_rng_unit(uint64_t *s);

const ember_table_backend *gt_gpu(void);
const ember_table_backend *gt_cpu(void);

/* A config with the tests' usual hyper-parameters; the initializer's a and b set
 * for its kind. */
ember_table_config gt_config(uint32_t dim, uint64_t capacity, int optim, int policy, int init);
/* A table on backend `b`; fails the test if creation fails. */
ember_table *gt_table(const ember_table_config *c, const ember_table_backend *b);
/* Bytes of one row as the GPU lays it out (row_floats rounded up to 4 floats). */
uint64_t gt_row_bytes(const ember_table_config *c);
/* The tolerance for rows of tables of config `c`: 0 = bit-identical. */
float gt_row_tol(const ember_table_config *c);
/* Index of the first float of a[n], b[n] that disagrees (see above), or n. */
size_t gt_first_diff(const float *a, const float *b, size_t n, float tol);

/* Snapshots `c` (cpu) and `g` (gpu) hold the same keys, rows within `tol`,
 * versions, and (if `scores`) scores; fails naming the first difference. */
void gt_expect_same_snapshot(const tu_snapshot *c, const tu_snapshot *g, float tol, int scores,
                             const char *what);
/* The same for two tables' whole contents; also the gpu's size = rows exported. */
void gt_expect_same_tables(ember_table *cpu, ember_table *gpu, float tol, int scores,
                           const char *what);
/* Every counter of stats but bytes agrees. */
void gt_expect_same_stats(ember_table *cpu, ember_table *gpu, const char *what);
/* find of keys[n] gives the same found flags and embeddings on both tables. */
void gt_expect_same_find(ember_table *cpu, ember_table *gpu, const uint64_t *keys, size_t n,
                         float tol, const char *what);
void gt_expect_same_flags(const uint64_t *keys, size_t n, const uint8_t *fc, const uint8_t *fg,
                          const char *what);
/* find_or_insert's flags where keys may repeat inside the call: which occurrence
 * of a new key reports found = 0 is unspecified on the GPU (gpu_table.h (b)), so
 * each distinct key's count of zeros is compared. */
void gt_expect_same_insert_flags(const uint64_t *keys, size_t n, const uint8_t *fc,
                                 const uint8_t *fg, const char *what);

/* A row an import could bring: optimizer slots within their domains. */
void gt_random_row(const ember_table_config *c, uint64_t *rng, float *row);
/* A score for a key of a table with `policy` in `epoch`. */
uint64_t gt_random_score(int policy, uint32_t epoch, uint64_t *rng);

/* Rows passing `f`, exported in pages of `max_rows` and sorted by key into *s
 * (row_floats = the width exported; free with tu_snapshot_free). Checks that each
 * page holds at most max_rows rows, moves the cursor on, and passes the filter. */
void gt_export_filtered(ember_table *t, const ember_export_filter *f, size_t max_rows,
                        tu_snapshot *s);
/* Filtered exports of both tables agree (several filters and page sizes), and a
 * dim-only export is the head of the full one. */
void gt_expect_same_exports(ember_table *cpu, ember_table *gpu, float tol, const char *what);

/* The main() of a GPU table test: without a GPU, checks that creating a GPU
 * table gives UNAVAILABLE and returns 77 (ctest: skipped); else describes the
 * device and runs the suite in-process (CK_FORK=no: a child forked after CUDA
 * was initialised cannot use it). */
int gt_main(const char *name, Suite *(*make_suite)(void));

#endif /* EMBER_TEST_GPU_TABLE_UTIL_H */

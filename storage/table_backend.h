/*
 * table_backend.h — what a table backend implements (for backend authors only;
 * users include table.h).
 *
 * table.c validates every argument and assigns each writing call its version and
 * score context before it calls a backend, so a backend sees only well-formed
 * input: no reserved keys, no non-finite values (or already zeroed), non-NULL
 * arrays where required, n > 0. A backend must keep the table's thread-safety
 * promise (table.h) and must not fail half-way for reasons the input could have
 * shown; it may still fail for its own reasons (a device error) with INTERNAL.
 */
#ifndef EMBER_TABLE_BACKEND_H
#define EMBER_TABLE_BACKEND_H

#include "table.h"

/* What table.c decides once per writing call. */
typedef struct ember_op {
    ember_score_ctx score;
    uint64_t version;   /* rows written by this call get this version */
} ember_op;

struct ember_table_backend {
    const char *name;
    int (*create)(const ember_table_config *c, void **impl, ember_error *err);
    void (*destroy)(void *impl);
    int (*find)(void *impl, const uint64_t *keys, size_t n, float *values,
                uint8_t *found, ember_error *err);
    int (*find_or_insert)(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                          float *values, uint8_t *found, const uint64_t *scores,
                          ember_error *err);
    int (*insert_or_assign)(void *impl, const ember_op *op, const uint64_t *keys,
                            size_t n, const float *values, const uint64_t *scores,
                            ember_error *err);
    int (*assign)(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                  const float *values, uint8_t *found, const uint64_t *scores,
                  ember_error *err);
    int (*accum)(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                 const float *deltas, uint8_t *found, ember_error *err);
    int (*apply_gradients)(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                           const float *grads, const uint64_t *scores, ember_error *err);
    int (*erase)(void *impl, const uint64_t *keys, size_t n, uint64_t *erased,
                 ember_error *err);
    int (*clear)(void *impl, ember_error *err);
    int (*export_rows)(void *impl, const ember_export_filter *f, uint64_t *cursor,
                       size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                       uint64_t *versions, size_t *n_out, ember_error *err);
    uint64_t (*export_end)(const void *impl);
    int (*import_rows)(void *impl, const uint64_t *keys, size_t n, const float *rows,
                       const uint64_t *scores, const uint64_t *versions, ember_error *err);
    int (*evict_below)(void *impl, uint64_t score, uint64_t *evicted, ember_error *err);
    int (*evict_to_size)(void *impl, uint64_t target, uint64_t *evicted, ember_error *err);
    /* Removes rows whose version is below `version`, one bucket at a time, counted
     * as evicted; *n = how many. NULL: the backend cannot (no TTL tables). */
    int (*evict_versions_below)(void *impl, uint64_t version, uint64_t *n, ember_error *err);
    uint64_t (*size)(const void *impl);
    uint64_t (*capacity)(const void *impl);
    /* Fills what the backend knows; table.c adds version and its own counters. */
    void (*stats)(const void *impl, ember_table_stats *out);
    /* What create(c) would hold, as stats would report it right after creation
     * (bytes_host without table.c's own part, bytes_device); allocates nothing.
     * `c` is valid. */
    void (*footprint)(const ember_table_config *c, uint64_t *bytes_host,
                      uint64_t *bytes_device);
    /* Every row of buckets [first, first + count) (within export_end) and
     * nothing else: whole rows with scores and versions, each bucket read under
     * its lock; room for count × EMBER_BUCKET_SLOTS rows; *n_out = how many.
     * Snapshots (table.h) copy buckets and read runs of them with it. */
    int (*export_buckets)(void *impl, uint64_t first, uint64_t count, uint64_t *keys,
                          float *rows, uint64_t *scores, uint64_t *versions, size_t *n_out,
                          ember_error *err);
};

/* The backend's own state behind a table (what create() made), for a backend's
 * extension API (cuda/gpu_table.h's ember_gpu_table_of). */
#ifdef __cplusplus
extern "C" {
#endif
void *ember_table_impl(ember_table *t);
#ifdef __cplusplus
}
#endif

#endif /* EMBER_TABLE_BACKEND_H */

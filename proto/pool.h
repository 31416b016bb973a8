/*
 * pool.h — the arithmetic of pooled lookups (ember.v1.Combiner), shared by the
 * server (which pools a bag's rows and expands a bag's gradient) and libember
 * (which finishes MEAN/SQRTN for bags split over shards), so both run the same
 * float32 operations in the same order.
 *
 * With per-key weights w (1 when none are given) over a bag's keys in request
 * order, all in float32:
 *   sum[d]  = Σ w_i · x_i[d]  accumulated from 0 in key order (unweighted: Σ x_i[d])
 *   norm    = 1 (SUM), Σ w_i (MEAN; unweighted: the bag's size), sqrt(Σ w_i²) (SQRTN)
 *   out[d]  = sum[d] (SUM), sum[d] / norm (MEAN, SQRTN), 0 when norm is 0
 * which is TensorFlow's embedding_lookup_sparse. The gradient of a bag's output
 * g reaches key i of the bag as g[d] · c_i, with c_i = w_i (SUM) or w_i / norm
 * (MEAN, SQRTN; 0 when norm is 0).
 *
 * Weights are passed as the wire's bytes (n × float32 LE, any alignment), or NULL.
 * Pure functions; libc only; thread-safe.
 */
#ifndef EMBER_POOL_H
#define EMBER_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* weights[i] (float32 LE at weights + 4i), or 1 when weights is NULL. */
float ember_pool_weight(const uint8_t *weights, size_t i);

/* The divisor of the bag of keys [lo, hi) under `combiner` (see above). */
float ember_pool_norm(int32_t combiner, const uint8_t *weights, size_t lo, size_t hi);

/* out[0..dim) = Σ w_i · rows[i·dim ..] over the keys i in [lo, hi): rows holds
 * one row per key, indexed by key position (rows of [lo, hi) are read). */
void ember_pool_sum(const float *rows, size_t dim, const uint8_t *weights, size_t lo, size_t hi,
                    float *out);

/* out[0..dim) /= norm for MEAN and SQRTN (zeros when norm is 0); nothing for SUM. */
void ember_pool_finish(int32_t combiner, float norm, float *out, size_t dim);

/* The factor c_i of a bag's gradient for key i with weight w (see above). */
float ember_pool_coef(int32_t combiner, float w, float norm);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_POOL_H */

/*
 * pool.c — pooled lookups' arithmetic (contract in pool.h).
 */
#include "proto/pool.h"

#include <math.h>
#include <string.h>

#include "proto/wire.h"

float ember_pool_weight(const uint8_t *weights, size_t i)
{
    if (!weights)
        return 1.0f;
    float w;
    memcpy(&w, weights + 4 * i, 4);
    return w;
}

float ember_pool_norm(int32_t combiner, const uint8_t *weights, size_t lo, size_t hi)
{
    if (combiner != EMBER_WIRE_COMBINER_MEAN && combiner != EMBER_WIRE_COMBINER_SQRTN)
        return 1.0f;
    if (!weights) /* Σ 1 and Σ 1² are the bag's size */
        return combiner == EMBER_WIRE_COMBINER_MEAN ? (float)(hi - lo) : sqrtf((float)(hi - lo));
    float acc = 0.0f;
    for (size_t i = lo; i < hi; i++) {
        float w = ember_pool_weight(weights, i);
        acc += combiner == EMBER_WIRE_COMBINER_MEAN ? w : w * w;
    }
    return combiner == EMBER_WIRE_COMBINER_MEAN ? acc : sqrtf(acc);
}

void ember_pool_sum(const float *rows, size_t dim, const uint8_t *weights, size_t lo, size_t hi,
                    float *out)
{
    memset(out, 0, dim * sizeof *out);
    for (size_t i = lo; i < hi; i++) {
        const float *x = rows + i * dim;
        if (!weights) {
            for (size_t d = 0; d < dim; d++)
                out[d] += x[d];
        } else {
            float w = ember_pool_weight(weights, i);
            for (size_t d = 0; d < dim; d++)
                out[d] += w * x[d];
        }
    }
}

void ember_pool_finish(int32_t combiner, float norm, float *out, size_t dim)
{
    if (combiner != EMBER_WIRE_COMBINER_MEAN && combiner != EMBER_WIRE_COMBINER_SQRTN)
        return;
    if (norm == 0.0f) {
        memset(out, 0, dim * sizeof *out);
        return;
    }
    for (size_t d = 0; d < dim; d++)
        out[d] /= norm;
}

float ember_pool_coef(int32_t combiner, float w, float norm)
{
    if (combiner != EMBER_WIRE_COMBINER_MEAN && combiner != EMBER_WIRE_COMBINER_SQRTN)
        return w;
    return norm == 0.0f ? 0.0f : w / norm;
}

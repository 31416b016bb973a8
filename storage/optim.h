/*
 * optim.h — the server-side optimizers, shared by the CPU and GPU backends.
 *
 * A row is `dim` floats of embedding followed by the optimizer's slots:
 *
 *   SGD      (none)
 *   ADAGRAD  acc[dim]                         acc starts at initial_accumulator
 *   ADAM     m[dim] v[dim] t                  t = this key's update count, a float
 *                                             (exact to 2^24, where bias
 *                                             correction is 1 to float precision)
 *   FTRL     z[dim] n[dim]                    n starts at initial_accumulator
 *
 * Update rules, for one key's summed gradient g (element-wise):
 *
 *   SGD      w -= lr·g
 *   ADAGRAD  acc += g²;  w -= lr·g / (√acc + eps)
 *   ADAM     t += 1;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
 *            w -= lr·( (m/(1-β1^t)) / (√(v/(1-β2^t)) + eps) + wd·w )
 *            (wd: decoupled weight decay, AdamW; 0 = plain Adam)
 *   FTRL     FTRL-Proximal as in TensorFlow, p = lr_power (≤ 0, -0.5 usual):
 *            n' = n + g²;  σ = (n'^-p - n^-p) / lr;  z += g - σ·w;  n = n'
 *            w = |z| ≤ l1 ? 0 : (sign(z)·l1 - z) / ((beta + n'^-p)/lr + 2·l2)
 */
#ifndef EMBER_OPTIM_H
#define EMBER_OPTIM_H

#include <math.h>

#include "hd.h"

typedef enum ember_optim_kind {
    EMBER_OPTIM_SGD = 0,
    EMBER_OPTIM_ADAGRAD = 1,
    EMBER_OPTIM_ADAM = 2,
    EMBER_OPTIM_FTRL = 3,
} ember_optim_kind;

typedef struct ember_optim_config {
    int kind;                   /* an ember_optim_kind */
    float lr;                   /* learning rate (alpha for FTRL) */
    float eps;                  /* ADAGRAD, ADAM */
    float initial_accumulator;  /* ADAGRAD acc, FTRL n */
    float beta1, beta2;         /* ADAM */
    float weight_decay;         /* ADAM (decoupled) */
    float l1, l2;               /* FTRL */
    float lr_power;             /* FTRL, ≤ 0 */
    float beta;                 /* FTRL */
} ember_optim_config;

/* Floats of optimizer state after the embedding. */
EMBER_HD uint32_t ember_optim_slot_floats(int kind, uint32_t dim)
{
    switch (kind) {
    case EMBER_OPTIM_ADAGRAD: return dim;
    case EMBER_OPTIM_ADAM: return 2u * dim + 1u;
    case EMBER_OPTIM_FTRL: return 2u * dim;
    default: return 0u;
    }
}

EMBER_HD uint32_t ember_row_floats(int kind, uint32_t dim)
{
    return dim + ember_optim_slot_floats(kind, dim);
}

/* Sets a new key's optimizer slots (the floats after its embedding). */
EMBER_HD void ember_optim_init_slots(const ember_optim_config *c, float *slots, uint32_t dim)
{
    uint32_t j, n = ember_optim_slot_floats(c->kind, dim);
    float acc = c->initial_accumulator;
    switch (c->kind) {
    case EMBER_OPTIM_ADAGRAD:
        for (j = 0; j < dim; j++)
            slots[j] = acc;
        break;
    case EMBER_OPTIM_FTRL:
        for (j = 0; j < dim; j++) {
            slots[j] = 0.0f;
            slots[dim + j] = acc;
        }
        break;
    default:
        for (j = 0; j < n; j++)
            slots[j] = 0.0f;
        break;
    }
}

/* n^-p for FTRL, with the usual p = -0.5 as a square root. */
EMBER_HD float ember_ftrl_pow(float n, float p)
{
    return p == -0.5f ? sqrtf(n) : powf(n, -p);
}

/* Applies one key's (already summed) gradient `g[dim]` to its row. */
EMBER_HD void ember_optim_apply(const ember_optim_config *c, float *row, const float *g,
                                uint32_t dim)
{
    uint32_t j;
    float lr = c->lr;
    switch (c->kind) {
    case EMBER_OPTIM_SGD:
        for (j = 0; j < dim; j++)
            row[j] -= lr * g[j];
        break;
    case EMBER_OPTIM_ADAGRAD: {
        float *acc = row + dim;
        for (j = 0; j < dim; j++) {
            float a = acc[j] + g[j] * g[j];
            acc[j] = a;
            row[j] -= lr * g[j] / (sqrtf(a) + c->eps);
        }
        break;
    }
    case EMBER_OPTIM_ADAM: {
        float *m = row + dim, *v = row + 2u * dim, *tp = row + 3u * dim;
        float t = *tp + 1.0f;
        float b1 = c->beta1, b2 = c->beta2;
        float c1 = 1.0f / (1.0f - powf(b1, t));
        float c2 = 1.0f / (1.0f - powf(b2, t));
        float wd = c->weight_decay;
        *tp = t;
        for (j = 0; j < dim; j++) {
            float mj = b1 * m[j] + (1.0f - b1) * g[j];
            float vj = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
            m[j] = mj;
            v[j] = vj;
            row[j] -= lr * ((mj * c1) / (sqrtf(vj * c2) + c->eps) + wd * row[j]);
        }
        break;
    }
    case EMBER_OPTIM_FTRL: {
        float *z = row + dim, *n = row + 2u * dim;
        float p = c->lr_power;
        for (j = 0; j < dim; j++) {
            float nn = n[j] + g[j] * g[j];
            float pn = ember_ftrl_pow(nn, p);
            float sigma = (pn - ember_ftrl_pow(n[j], p)) / lr;
            float zj = z[j] + g[j] - sigma * row[j];
            z[j] = zj;
            n[j] = nn;
            if (fabsf(zj) <= c->l1) {
                row[j] = 0.0f;
            } else {
                float sgn = zj < 0.0f ? -1.0f : 1.0f;
                row[j] = (sgn * c->l1 - zj) / ((c->beta + pn) / lr + 2.0f * c->l2);
            }
        }
        break;
    }
    default:
        break;
    }
}

#endif /* EMBER_OPTIM_H */

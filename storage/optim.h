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
 *
 * The kinds (ember_optim_kind, EMBER_OPTIM_*) are in include/ember/types.h,
 * shared with libember.
 */
#ifndef EMBER_OPTIM_H
#define EMBER_OPTIM_H

#include <math.h>

#include <ember/types.h>

#include "hd.h"

typedef struct ember_optim_config {
    ember_optim_kind kind;
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

/* The per-row constants of one optimizer step: Adam's bias corrections for the
 * row's new step count `t` (1 for the first update); 1 otherwise. */
typedef struct ember_optim_step {
    float c1, c2;
} ember_optim_step;

EMBER_HD ember_optim_step ember_optim_step_of(const ember_optim_config *c, float t)
{
    ember_optim_step st = {1.0f, 1.0f};
    if (c->kind == EMBER_OPTIM_ADAM) {
        st.c1 = 1.0f / (1.0f - powf(c->beta1, t));
        st.c2 = 1.0f / (1.0f - powf(c->beta2, t));
    }
    return st;
}

/* One element of one update: returns the new weight for weight `w` and gradient
 * `g`, updating the element's optimizer slots *s0 (Adagrad acc, Adam m, FTRL z)
 * and *s1 (Adam v, FTRL n) in place. The definition: the GPU backend runs it one
 * element per thread, and ember_optim_apply's host loops compute the same bits. */
EMBER_HD float ember_optim_update(const ember_optim_config *c, ember_optim_step st, float w,
                                  float g, float *s0, float *s1)
{
    float lr = c->lr;
    switch (c->kind) {
    case EMBER_OPTIM_SGD:
        return w - lr * g;
    case EMBER_OPTIM_ADAGRAD: {
        float a = *s0 + g * g;
        *s0 = a;
        return w - lr * g / (sqrtf(a) + c->eps);
    }
    case EMBER_OPTIM_ADAM: {
        float b1 = c->beta1, b2 = c->beta2;
        float mj = b1 * *s0 + (1.0f - b1) * g;
        float vj = b2 * *s1 + (1.0f - b2) * g * g;
        *s0 = mj;
        *s1 = vj;
        return w - lr * ((mj * st.c1) / (sqrtf(vj * st.c2) + c->eps) + c->weight_decay * w);
    }
    case EMBER_OPTIM_FTRL: {
        float p = c->lr_power;
        float nn = *s1 + g * g;
        float pn = ember_ftrl_pow(nn, p);
        float sigma = (pn - ember_ftrl_pow(*s1, p)) / lr;
        float zj = *s0 + g - sigma * w;
        *s0 = zj;
        *s1 = nn;
        if (fabsf(zj) <= c->l1)
            return 0.0f;
        float sgn = zj < 0.0f ? -1.0f : 1.0f;
        return (sgn * c->l1 - zj) / ((c->beta + pn) / lr + 2.0f * c->l2);
    }
    default:
        return w;
    }
}

/* Adam's step count lives in the row's last float. */
EMBER_HD int ember_optim_has_step(int kind)
{
    return kind == EMBER_OPTIM_ADAM;
}

/* ember_optim_update over a row's elements, with the row's step constants `st`
 * (the step count already advanced): what ember_optim_apply does on the GPU. */
EMBER_HD void ember_optim_update_row(const ember_optim_config *c, ember_optim_step st,
                                     float *row, const float *g, uint32_t dim)
{
    float spare0 = 0.0f, spare1 = 0.0f;
    int has0 = c->kind != EMBER_OPTIM_SGD;
    int has1 = c->kind == EMBER_OPTIM_ADAM || c->kind == EMBER_OPTIM_FTRL;
    for (uint32_t j = 0; j < dim; j++) {
        float *s0 = has0 ? row + dim + j : &spare0;
        float *s1 = has1 ? row + 2u * dim + j : &spare1;
        row[j] = ember_optim_update(c, st, row[j], g[j], s0, s1);
    }
}

#if !defined(__CUDACC__)
/* The host's loops, one per optimizer: each computes exactly what
 * ember_optim_update computes for every element (the same operations in the same
 * order, no FMA: the project builds with -fno-math-errno and no -march, so the
 * vectoriser may only widen them), but without the per-element switch, and with
 * the embedding, the slots and the gradient declared disjoint (`restrict`: the
 * gradient is never inside the row), so GCC turns them into packed SIMD.
 * tests/unit/test_math.c holds them to ember_optim_update bit for bit. */
static inline void ember_optim_apply_sgd(float *restrict w, const float *restrict g,
                                         uint32_t dim, float lr)
{
    for (uint32_t j = 0; j < dim; j++)
        w[j] = w[j] - lr * g[j];
}

static inline void ember_optim_apply_adagrad(float *restrict w, float *restrict acc,
                                             const float *restrict g, uint32_t dim, float lr,
                                             float eps)
{
    for (uint32_t j = 0; j < dim; j++) {
        float a = acc[j] + g[j] * g[j];
        acc[j] = a;
        w[j] = w[j] - lr * g[j] / (sqrtf(a) + eps);
    }
}

static inline void ember_optim_apply_adam(const ember_optim_config *c, ember_optim_step st,
                                          float *restrict w, float *restrict m,
                                          float *restrict v, const float *restrict g,
                                          uint32_t dim)
{
    float lr = c->lr, b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay;
    for (uint32_t j = 0; j < dim; j++) {
        float mj = b1 * m[j] + (1.0f - b1) * g[j];
        float vj = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
        m[j] = mj;
        v[j] = vj;
        w[j] = w[j] - lr * ((mj * st.c1) / (sqrtf(vj * st.c2) + eps) + wd * w[j]);
    }
}

/* FTRL's weight from z and n' = n + g², with pn = n'^-p: ember_optim_update's
 * last lines. The quotient is taken unconditionally and cleared to +0 with a
 * mask where |z| ≤ l1 (the same bits as returning 0.0f): a plain ?: lets GCC
 * sink the division into a branch, which it then will not vectorise. */
static inline float ember_ftrl_weight(float zj, float pn, float lr, float l1, float l2,
                                      float beta)
{
    float sgn = zj < 0.0f ? -1.0f : 1.0f;
    union {
        float f;
        uint32_t u;
    } q = {(sgn * l1 - zj) / ((beta + pn) / lr + 2.0f * l2)};
    q.u &= fabsf(zj) <= l1 ? 0u : ~0u;
    return q.f;
}

static inline void ember_optim_apply_ftrl(const ember_optim_config *c, float *restrict w,
                                          float *restrict z, float *restrict n,
                                          const float *restrict g, uint32_t dim)
{
    float lr = c->lr, p = c->lr_power, l1 = c->l1, l2 = c->l2, beta = c->beta;
    if (p == -0.5f) {
        /* ember_ftrl_pow's usual case, as square roots the vectoriser can widen */
        for (uint32_t j = 0; j < dim; j++) {
            float nn = n[j] + g[j] * g[j];
            float pn = sqrtf(nn);
            float sigma = (pn - sqrtf(n[j])) / lr;
            float zj = z[j] + g[j] - sigma * w[j];
            z[j] = zj;
            n[j] = nn;
            w[j] = ember_ftrl_weight(zj, pn, lr, l1, l2, beta);
        }
        return;
    }
    for (uint32_t j = 0; j < dim; j++) {
        float nn = n[j] + g[j] * g[j];
        float pn = powf(nn, -p);
        float sigma = (pn - powf(n[j], -p)) / lr;
        float zj = z[j] + g[j] - sigma * w[j];
        z[j] = zj;
        n[j] = nn;
        w[j] = ember_ftrl_weight(zj, pn, lr, l1, l2, beta);
    }
}
#endif

/* Applies one key's (already summed) gradient `g[dim]` to its row; `g` is never
 * inside `row`. On the GPU (a thread per row in cuda/math_kernels.cu) it is the
 * per-element loop over ember_optim_update; on the host, the loops above. */
EMBER_HD void ember_optim_apply(const ember_optim_config *c, float *row, const float *g,
                                uint32_t dim)
{
    ember_optim_step st = {1.0f, 1.0f};
    if (ember_optim_has_step(c->kind)) {
        float *tp = row + 3u * dim;
        float t = *tp + 1.0f;
        st = ember_optim_step_of(c, t);
        *tp = t;
    }
#if defined(__CUDACC__)
    ember_optim_update_row(c, st, row, g, dim);
#else
    switch (c->kind) {
    case EMBER_OPTIM_SGD:
        ember_optim_apply_sgd(row, g, dim, c->lr);
        break;
    case EMBER_OPTIM_ADAGRAD:
        ember_optim_apply_adagrad(row, row + dim, g, dim, c->lr, c->eps);
        break;
    case EMBER_OPTIM_ADAM:
        ember_optim_apply_adam(c, st, row, row + dim, row + 2u * dim, g, dim);
        break;
    case EMBER_OPTIM_FTRL:
        ember_optim_apply_ftrl(c, row, row + dim, row + 2u * dim, g, dim);
        break;
    default:
        break;
    }
#endif
}

#endif /* EMBER_OPTIM_H */

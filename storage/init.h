/*
 * init.h — initial rows for new keys, shared by the CPU and GPU backends.
 *
 * A new key's embedding is a pure function of (table seed, key, initializer):
 * elements come in pairs (2p, 2p+1) drawn from one 64-bit counter-based draw,
 *   r_p,d = mix64(base + (p+1)·φ + d·ψ),   base = mix64(seed ^ fmix64(key)),
 * φ and ψ two odd 64-bit constants and d the redraw index (0 unless a truncated
 * normal redraws). There is no shared RNG state, so the same key gets the same row
 * on every backend, every shard, every thread and every restart (GPU results may
 * differ from the CPU in the last bits where logf/sinf/cosf round differently).
 * One draw serves two elements, which halves the cost of creating a row.
 *
 *   ZEROS            0
 *   CONSTANT         a
 *   UNIFORM          a + (b - a)·u,   u in [0, 1): element 2p from bits 40..63 of
 *                                     r, element 2p+1 from bits 16..39
 *   NORMAL           a + b·z,         (z_2p, z_2p+1) = Box–Muller of those two
 *                                     24-bit uniforms: R·cos θ, R·sin θ
 *   TRUNCATED_NORMAL a + b·z, |z| ≤ 2 (an element outside redraws its pair with
 *                                     d = 1, 2, … and keeps its own half)
 *
 * The kinds (ember_init_kind, EMBER_INIT_*) are in include/ember/types.h, shared
 * with libember.
 */
#ifndef EMBER_INIT_H
#define EMBER_INIT_H

#include <math.h>

#include <ember/types.h>

#include "hash.h"

typedef struct ember_init_config {
    ember_init_kind kind;
    float a;       /* CONSTANT: value; UNIFORM: low;  NORMALs: mean */
    float b;       /* UNIFORM: high; NORMALs: standard deviation */
} ember_init_config;

#define EMBER_GOLDEN64 UINT64_C(0x9e3779b97f4a7c15)
#define EMBER_REDRAW64 UINT64_C(0xd1b54a32d192ed03)
#define EMBER_TRUNC_MAX_DRAWS 32u

EMBER_HD uint64_t ember_init_base(uint64_t seed, uint64_t key)
{
    return ember_mix64(seed ^ ember_fmix64(key));
}

/* Draw d of pair p of the row whose stream base is `base`. */
EMBER_HD uint64_t ember_init_draw(uint64_t base, uint32_t p, uint32_t d)
{
    return ember_mix64(base + (uint64_t)(p + 1u) * EMBER_GOLDEN64 + (uint64_t)d * EMBER_REDRAW64);
}

/* The 24-bit uniform in [0, 1) of half h (0: bits 40..63, 1: bits 16..39). */
EMBER_HD float ember_u24(uint64_t r, uint32_t h)
{
    return (float)((r >> (h ? 16 : 40)) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* The standard normal of half h of draw r (Box–Muller; u1 taken in (0, 1]). */
EMBER_HD float ember_std_normal(uint64_t r, uint32_t h)
{
    float u1 = ember_u24(r, 0) + (1.0f / 16777216.0f);
    float radius = sqrtf(-2.0f * logf(u1));
    float theta = 6.283185307179586f * ember_u24(r, 1);
    return radius * (h ? sinf(theta) : cosf(theta));
}

/* Element j of a truncated normal row, from draw 1 on (draw 0 was rejected). */
EMBER_HD float ember_trunc_redraw(uint64_t base, uint32_t j)
{
    uint32_t d;
    for (d = 1; d < EMBER_TRUNC_MAX_DRAWS; d++) {
        float z = ember_std_normal(ember_init_draw(base, j >> 1, d), j & 1u);
        if (z >= -2.0f && z <= 2.0f)
            return z;
    }
    return 0.0f; /* 32 draws outside ±2σ: probability ~1e-43 */
}

/* Element `j` of the row of the key whose stream base is `base`: the definition
 * that ember_init_row computes two elements at a time. */
EMBER_HD float ember_init_value(const ember_init_config *c, uint64_t base, uint32_t j)
{
    uint64_t r = ember_init_draw(base, j >> 1, 0);
    uint32_t h = j & 1u;
    switch (c->kind) {
    case EMBER_INIT_CONSTANT:
        return c->a;
    case EMBER_INIT_UNIFORM:
        return c->a + (c->b - c->a) * ember_u24(r, h);
    case EMBER_INIT_NORMAL:
        return c->a + c->b * ember_std_normal(r, h);
    case EMBER_INIT_TRUNCATED_NORMAL: {
        float z = ember_std_normal(r, h);
        if (!(z >= -2.0f && z <= 2.0f))
            z = ember_trunc_redraw(base, j);
        return c->a + c->b * z;
    }
    case EMBER_INIT_ZEROS:
    default:
        return 0.0f;
    }
}

/* Elements 2p and 2p+1 from one draw: out[h] = ember_init_value(c, base, 2p + h).
 * For callers that produce a row a pair at a time (the GPU's 16-byte stores). */
EMBER_HD void ember_init_pair(const ember_init_config *c, uint64_t base, uint32_t p, float *out)
{
    uint64_t r;
    switch (c->kind) {
    case EMBER_INIT_CONSTANT:
        out[0] = out[1] = c->a;
        return;
    case EMBER_INIT_UNIFORM:
        r = ember_init_draw(base, p, 0);
        out[0] = c->a + (c->b - c->a) * ember_u24(r, 0);
        out[1] = c->a + (c->b - c->a) * ember_u24(r, 1);
        return;
    case EMBER_INIT_NORMAL:
        r = ember_init_draw(base, p, 0);
        out[0] = c->a + c->b * ember_std_normal(r, 0);
        out[1] = c->a + c->b * ember_std_normal(r, 1);
        return;
    case EMBER_INIT_TRUNCATED_NORMAL:
        r = ember_init_draw(base, p, 0);
        for (uint32_t h = 0; h < 2u; h++) {
            float z = ember_std_normal(r, h);
            if (!(z >= -2.0f && z <= 2.0f))
                z = ember_trunc_redraw(base, 2u * p + h);
            out[h] = c->a + c->b * z;
        }
        return;
    case EMBER_INIT_ZEROS:
    default:
        out[0] = out[1] = 0.0f;
        return;
    }
}

/* Writes the `dim` initial floats of `key`'s embedding into `out`. */
EMBER_HD void ember_init_row(const ember_init_config *c, uint64_t seed, uint64_t key,
                             float *out, uint32_t dim)
{
    uint32_t j, p;
    uint64_t base;
    float a = c->a, b = c->b;
    switch (c->kind) {
    case EMBER_INIT_CONSTANT:
    case EMBER_INIT_ZEROS: {
        float v = c->kind == EMBER_INIT_CONSTANT ? a : 0.0f;
        for (j = 0; j < dim; j++)
            out[j] = v;
        return;
    }
    case EMBER_INIT_UNIFORM:
        base = ember_init_base(seed, key);
        for (p = 0; 2u * p < dim; p++) {
            uint64_t r = ember_init_draw(base, p, 0);
            out[2u * p] = a + (b - a) * ember_u24(r, 0);
            if (2u * p + 1u < dim)
                out[2u * p + 1u] = a + (b - a) * ember_u24(r, 1);
        }
        return;
    case EMBER_INIT_NORMAL:
    case EMBER_INIT_TRUNCATED_NORMAL: {
        int trunc = c->kind == EMBER_INIT_TRUNCATED_NORMAL;
        base = ember_init_base(seed, key);
        for (p = 0; 2u * p < dim; p++) {
            uint64_t r = ember_init_draw(base, p, 0);
            float u1 = ember_u24(r, 0) + (1.0f / 16777216.0f);
            float radius = sqrtf(-2.0f * logf(u1));
            float theta = 6.283185307179586f * ember_u24(r, 1);
            float z[2];
            z[0] = radius * cosf(theta);
            z[1] = radius * sinf(theta);
            for (uint32_t h = 0; h < 2u && 2u * p + h < dim; h++) {
                if (trunc && !(z[h] >= -2.0f && z[h] <= 2.0f))
                    z[h] = ember_trunc_redraw(base, 2u * p + h);
                out[2u * p + h] = a + b * z[h];
            }
        }
        return;
    }
    default:
        for (j = 0; j < dim; j++)
            out[j] = 0.0f;
        return;
    }
}

#endif /* EMBER_INIT_H */

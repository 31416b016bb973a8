/*
 * init.h — initial rows for new keys, shared by the CPU and GPU backends.
 *
 * A new key's embedding is a pure function of (table seed, key, initializer):
 * element j is drawn from a counter-based stream, r_j = mix64(base + (j+1)·φ)
 * with base = mix64(seed ^ fmix64(key)) and φ the 64-bit golden ratio. There is
 * no shared RNG state, so the same key gets the same row on every backend, every
 * shard, every thread and every restart (GPU results may differ from the CPU in
 * the last float bit, where logf/cosf round differently).
 *
 *   ZEROS            0
 *   CONSTANT         a
 *   UNIFORM          a + (b - a)·u,          u in [0, 1) from 24 random bits
 *   NORMAL           a + b·z,                z standard normal (Box–Muller)
 *   TRUNCATED_NORMAL a + b·z, |z| ≤ 2        (redrawn from the next counters)
 */
#ifndef EMBER_INIT_H
#define EMBER_INIT_H

#include <math.h>

#include "hash.h"

typedef enum ember_init_kind {
    EMBER_INIT_ZEROS = 0,
    EMBER_INIT_CONSTANT = 1,
    EMBER_INIT_UNIFORM = 2,
    EMBER_INIT_NORMAL = 3,
    EMBER_INIT_TRUNCATED_NORMAL = 4,
} ember_init_kind;

typedef struct ember_init_config {
    int kind;      /* an ember_init_kind */
    float a;       /* CONSTANT: value; UNIFORM: low;  NORMALs: mean */
    float b;       /* UNIFORM: high; NORMALs: standard deviation */
} ember_init_config;

#define EMBER_GOLDEN64 UINT64_C(0x9e3779b97f4a7c15)
#define EMBER_TRUNC_MAX_DRAWS 32u

EMBER_HD uint64_t ember_init_base(uint64_t seed, uint64_t key)
{
    return ember_mix64(seed ^ ember_fmix64(key));
}

/* Uniform in [0, 1) from the top 24 bits; (0, 1] with `open_low`. */
EMBER_HD float ember_u24(uint64_t r, int open_low)
{
    return ((float)(r >> 40) + (open_low ? 1.0f : 0.0f)) * (1.0f / 16777216.0f);
}

/* Standard normal from one 64-bit draw: Box–Muller on two 24-bit uniforms. */
EMBER_HD float ember_std_normal(uint64_t r)
{
    float u1 = ember_u24(r, 1);
    float u2 = ((float)((r >> 16) & 0xffffffu)) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

/* Element `j` of the row of the key whose stream base is `base`. */
EMBER_HD float ember_init_value(const ember_init_config *c, uint64_t base, uint32_t j)
{
    uint64_t ctr = base + (uint64_t)(j + 1u) * EMBER_GOLDEN64;
    switch (c->kind) {
    case EMBER_INIT_CONSTANT:
        return c->a;
    case EMBER_INIT_UNIFORM:
        return c->a + (c->b - c->a) * ember_u24(ember_mix64(ctr), 0);
    case EMBER_INIT_NORMAL:
        return c->a + c->b * ember_std_normal(ember_mix64(ctr));
    case EMBER_INIT_TRUNCATED_NORMAL: {
        /* Redraw from counters further along (an odd multiplier keeps them
         * distinct from other elements' counters). */
        uint32_t d;
        for (d = 0; d < EMBER_TRUNC_MAX_DRAWS; d++) {
            float z = ember_std_normal(ember_mix64(ctr + (uint64_t)d * UINT64_C(0xd1b54a32d192ed03)));
            if (z >= -2.0f && z <= 2.0f)
                return c->a + c->b * z;
        }
        return c->a; /* 32 draws outside ±2σ: probability ~1e-43 */
    }
    case EMBER_INIT_ZEROS:
    default:
        return 0.0f;
    }
}

/* Writes the `dim` initial floats of `key`'s embedding into `out`. */
EMBER_HD void ember_init_row(const ember_init_config *c, uint64_t seed, uint64_t key,
                             float *out, uint32_t dim)
{
    uint32_t j;
    if (c->kind == EMBER_INIT_ZEROS || c->kind == EMBER_INIT_CONSTANT) {
        float v = c->kind == EMBER_INIT_CONSTANT ? c->a : 0.0f;
        for (j = 0; j < dim; j++)
            out[j] = v;
        return;
    }
    uint64_t base = ember_init_base(seed, key);
    for (j = 0; j < dim; j++)
        out[j] = ember_init_value(c, base, j);
}

#endif /* EMBER_INIT_H */

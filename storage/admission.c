#include "admission.h"

#include <stdatomic.h>
#include <stdlib.h>

struct ember_admission {
    uint32_t ad_min_count;
    uint32_t ad_width;
    uint64_t ad_age_every;            /* sightings between two agings */
    _Atomic uint64_t ad_sightings;
    _Atomic uint32_t *ad_counters;    /* EMBER_SKETCH_DEPTH × ad_width */
};

static uint32_t round_pow2(uint32_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

int ember_admission_create(uint32_t min_count, uint32_t width, ember_admission **out,
                           ember_error *err)
{
    ember_admission *a = calloc(1, sizeof *a);
    if (!a)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    a->ad_min_count = min_count;
    a->ad_width = round_pow2(width ? width : EMBER_SKETCH_DEFAULT_WIDTH);
    a->ad_age_every = (uint64_t)a->ad_width * 10u;
    a->ad_counters = calloc((size_t)EMBER_SKETCH_DEPTH * a->ad_width, sizeof(uint32_t));
    if (!a->ad_counters) {
        uint32_t w = a->ad_width;
        free(a);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of host memory for an admission sketch of width %u", w);
    }
    *out = a;
    return EMBER_OK;
}

void ember_admission_destroy(ember_admission *a)
{
    if (!a)
        return;
    free((void *)a->ad_counters);
    free(a);
}

/* Halves every counter. Runs on the thread whose sighting crossed the mark. */
static void age(ember_admission *a)
{
    size_t n = (size_t)EMBER_SKETCH_DEPTH * a->ad_width;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = atomic_load_explicit(&a->ad_counters[i], memory_order_relaxed);
        atomic_store_explicit(&a->ad_counters[i], c >> 1, memory_order_relaxed);
    }
}

int ember_admission_sight(ember_admission *a, uint64_t key)
{
    uint32_t est = UINT32_MAX;
    for (uint32_t r = 0; r < EMBER_SKETCH_DEPTH; r++) {
        _Atomic uint32_t *c =
            &a->ad_counters[(size_t)r * a->ad_width + ember_sketch_index(key, r, a->ad_width)];
        uint32_t v = atomic_load_explicit(c, memory_order_relaxed);
        /* Conservative update: only counters at the current minimum need to grow,
         * but plain increments keep the sketch simple and GPU-equivalent. */
        if (v != UINT32_MAX)
            v = atomic_fetch_add_explicit(c, 1, memory_order_relaxed) + 1;
        est = v < est ? v : est;
    }
    uint64_t s = atomic_fetch_add_explicit(&a->ad_sightings, 1, memory_order_relaxed) + 1;
    if (s % a->ad_age_every == 0)
        age(a);
    return est >= a->ad_min_count;
}

uint32_t ember_admission_estimate(const ember_admission *a, uint64_t key)
{
    uint32_t est = UINT32_MAX;
    for (uint32_t r = 0; r < EMBER_SKETCH_DEPTH; r++) {
        uint32_t v = atomic_load_explicit(
            &a->ad_counters[(size_t)r * a->ad_width + ember_sketch_index(key, r, a->ad_width)],
            memory_order_relaxed);
        est = v < est ? v : est;
    }
    return est;
}

uint64_t ember_admission_sketch_bytes(uint32_t width)
{
    return (uint64_t)EMBER_SKETCH_DEPTH * round_pow2(width ? width : EMBER_SKETCH_DEFAULT_WIDTH) *
           sizeof(uint32_t);
}

uint64_t ember_admission_footprint(uint32_t width)
{
    return sizeof(ember_admission) + ember_admission_sketch_bytes(width);
}

uint64_t ember_admission_bytes(const ember_admission *a)
{
    return sizeof *a + (uint64_t)EMBER_SKETCH_DEPTH * a->ad_width * sizeof(uint32_t);
}

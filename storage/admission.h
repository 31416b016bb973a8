/*
 * admission.h — the admission filter: a count-min sketch of key sightings.
 *
 * With admission on (min_count ≥ 2), a key that is not in the table is stored
 * only from its min_count-th sighting; until then a training pull returns its
 * initial row without storing it and a push to it is dropped and counted. This
 * keeps one-off ids (most of a click log's tail) from evicting useful rows.
 *
 * Sketch: EMBER_SKETCH_DEPTH rows of `width` saturating 32-bit counters; a key's
 * estimate is the minimum of its counters (never below its true count, since the
 * last aging). Row r hashes the key with mix64(key ^ (r+1)·φ), independent of the
 * table's bucket hash. Aging: after 10 × width sightings every counter is halved,
 * so old popularity fades (as TinyLFU does).
 *
 * Thread-safety: ember_admission_sight() may run from many threads at once
 * (relaxed atomics; a sighting racing an aging pass may be lost, which only
 * delays admission). create/destroy: not concurrently with anything else.
 */
#ifndef EMBER_ADMISSION_H
#define EMBER_ADMISSION_H

#include <stdint.h>

#include "hash.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_SKETCH_DEPTH 4u
#define EMBER_SKETCH_DEFAULT_WIDTH (UINT32_C(1) << 20)

typedef struct ember_admission ember_admission;

/* The counter of `key` in sketch row `row`, for a sketch of `width` (a power of
 * two) counters per row. Shared with the GPU backend. */
EMBER_HD uint32_t ember_sketch_index(uint64_t key, uint32_t row, uint32_t width)
{
    uint64_t salt = (uint64_t)(row + 1u) * UINT64_C(0x9e3779b97f4a7c15);
    return (uint32_t)(ember_mix64(key ^ salt) & (width - 1u));
}

/* Creates a sketch admitting keys at `min_count` sightings; `width` counters per
 * row, rounded up to a power of two (0 = default). RESOURCE_EXHAUSTED when out of
 * memory. */
int ember_admission_create(uint32_t min_count, uint32_t width, ember_admission **out,
                           ember_error *err);
void ember_admission_destroy(ember_admission *a);

/* Records one sighting of `key`; returns 1 if the key is now admitted (its
 * estimated count, this sighting included, is at least min_count). */
int ember_admission_sight(ember_admission *a, uint64_t key);

/* The estimated sightings of `key` (min over its counters). */
uint32_t ember_admission_estimate(const ember_admission *a, uint64_t key);

/* Host bytes held. */
uint64_t ember_admission_bytes(const ember_admission *a);
/* The sketch counters' bytes for a requested width (0 = the default), rounded
 * as ember_admission_create rounds it: what a GPU table puts in device memory. */
uint64_t ember_admission_sketch_bytes(uint32_t width);
/* What ember_admission_bytes would report for a sketch of that width. */
uint64_t ember_admission_footprint(uint32_t width);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_ADMISSION_H */

/*
 * registry.h — this shard's tables by name.
 *
 * Names are [a-z0-9_.-]{1,64} (ember_table_name_valid in ember/types.h). The
 * registry is guarded by a rwlock: lookups (every Pull/Push) take it shared for
 * a few string compares; create, drop and replace take it exclusive. A lookup returns a reference to the entry
 * (srv_table_ref), so a table dropped while a call is using it is freed only when
 * that call lets go (srv_table_unref): no call ever touches a freed table.
 *
 * Each entry also carries the per-table request counters reported by
 * GetStats/DescribeTable (relaxed atomics: counts, not a synchronisation), and
 * the table's coalescing queues (coalesce.h), one per kind of call: they belong
 * to the entry, so calls still running on a replaced entry finish among
 * themselves while new calls queue on the new one.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef EMBER_SRV_REGISTRY_H
#define EMBER_SRV_REGISTRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/coalesce.h"
#include "storage/checkpoint.h"
#include "storage/table.h"

typedef struct srv_counters {
    atomic_uint_fast64_t pulls, pushes, keys_pulled, keys_pushed, duplicate_pushes;
    /* Erase: keys that existed and were removed; erases answered as duplicates */
    atomic_uint_fast64_t erased, duplicate_erases;
    /* Clear calls (replication: a follower reconciles when rows go) */
    atomic_uint_fast64_t clears;
    /* coalescing: table calls that served ≥ 2 requests, the requests and keys
     * they served, the largest in keys and in requests, and the extra calls that
     * gradient batches took because members pushed the same keys */
    atomic_uint_fast64_t co_batches, co_calls, co_keys, co_max_keys, co_max_calls,
        co_split_calls;
    /* checkpoint saves of the table by this process (ckpt.c): successful and
     * failed, and the last successful one's end (CLOCK_REALTIME, ms; 0 = none
     * yet) and duration (ms), for the metrics endpoint */
    atomic_uint_fast64_t ckpt_saves, ckpt_failures, ckpt_saved_ms, ckpt_save_ms;
} srv_counters;

typedef struct srv_table {
    char name[EMBER_TABLE_NAME_MAX + 1];
    ember_table *table;
    /* where CreateTable asked the table to live (backend, hbm_bytes; "" and 0:
     * the server's defaults), written into its checkpoints so a restore places
     * it alike; set before the entry is shared, then read-only */
    ember_ckpt_placement placement;
    srv_counters counters;
    srv_co_queue co[SRV_CO_KINDS];
    /* Replication (repl.h): this entry's identity, new for every entry (create,
     * restore, Load), so a follower can tell a table made again under the same
     * name; and pushes' acknowledgement when a push leaves it to the table
     * (EMBER_WIRE_ACK_*, and the followers a replicated push waits for). */
    uint64_t uid;
    atomic_int ack;
    atomic_uint ack_replicas;
    atomic_int refs; /* the registry's one + one per call using it */
} srv_table;

typedef struct srv_registry srv_registry;

srv_registry *srv_registry_create(unsigned max_tables);
/* Frees every table; no call may be running. */
void srv_registry_destroy(srv_registry *r);

/* The table called name[0..len), with a reference the caller must drop with
 * srv_table_unref; NULL if there is none. */
srv_table *srv_registry_get(srv_registry *r, const char *name, size_t len);
void srv_table_ref(srv_table *t);
void srv_table_unref(srv_table *t);

/* Adds `table` (ownership passes to the registry on success) as `name`, asked
 * to live where `placement` says (NULL: the server's defaults).
 * Errors: ALREADY_EXISTS (*existing, if not NULL, gets a reference to it),
 * RESOURCE_EXHAUSTED (max tables), INVALID_ARGUMENT (name). */
int srv_registry_add(srv_registry *r, const char *name, ember_table *table,
                     const ember_ckpt_placement *placement, srv_table **existing,
                     ember_error *err);

/* Removes `name`; the table is freed when its last user lets go.
 * Errors: NOT_FOUND. */
int srv_registry_drop(srv_registry *r, const char *name, ember_error *err);

/* Replaces the table of an existing entry `old` (still registered) by `table`
 * under a new entry that keeps `old`'s counters and placement: calls already holding `old`
 * finish on the old table. Errors: NOT_FOUND (old was dropped meanwhile; the
 * caller still owns `table`). */
int srv_registry_replace(srv_registry *r, srv_table *old, ember_table *table,
                         ember_error *err);

/* References to every table, sorted by name, in a malloc'ed array (*n entries);
 * release with srv_registry_list_free. */
srv_table **srv_registry_list(srv_registry *r, size_t *n);
void srv_registry_list_free(srv_table **list, size_t n);

#endif

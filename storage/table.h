/*
 * table.h — the embedding table: uint64 key → float row, batched, backend-neutral.
 *
 * A table maps keys to rows of `dim` floats of embedding followed by the
 * optimizer's slots (optim.h), plus per-key metadata: a score (score.h) that
 * drives eviction, and the version of the last write. Keys live in buckets of
 * EMBER_BUCKET_SLOTS slots (hash.h); a key lives only in its bucket, and when that
 * bucket is full its lowest-score entry is evicted. A full table keeps working as a
 * cache: inserts never fail for lack of room, evictions are counted.
 *
 * Backends: the CPU backend (storage/cpu_table.c) is always present; other
 * backends (the GPU one in cuda/) implement the same ember_table_backend and are
 * passed to ember_table_create(). Validation — reserved keys, dims, non-finite
 * values, missing arguments — happens here, once, for every backend, and before
 * anything is written: a call that returns an error has changed nothing.
 *
 * Thread-safety: every function except ember_table_destroy() may be called from
 * many threads at once on one table. Each key's row is read and written whole
 * under its bucket's lock, so a reader never sees a torn row (embedding and
 * optimizer slots always from the same moment). Whole-table operations (clear,
 * export, evict) visit buckets one at a time: they are consistent per row, not a
 * snapshot of the whole table, while writers run beside them (for one moment of
 * the whole table, see the snapshots at the end).
 *
 * Ordering within one call: keys are processed in the order given. For
 * insert_or_assign and assign, the last of several equal keys wins; for
 * apply_gradients their gradients are summed first and applied once. (The GPU
 * backend runs a call's keys in parallel: cuda/gpu_table.h lists the few results
 * that depend on the order inside one call.)
 *
 * Statuses: EMBER_INVALID_ARGUMENT for bad input, EMBER_RESOURCE_EXHAUSTED when
 * memory cannot be had at creation; the message says which argument and why.
 */
#ifndef EMBER_TABLE_H
#define EMBER_TABLE_H

#include <stdint.h>
#include <stddef.h>

#include "hash.h"
#include "init.h"
#include "optim.h"
#include "score.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_DIM_MAX 4096u
#define EMBER_CAPACITY_MAX (UINT64_C(1) << 40)
#define EMBER_TTL_MAX_SECONDS (UINT64_C(100) * 366 * 86400) /* about a century */
#define EMBER_GROW_LOAD_FACTOR_DEFAULT 0.75f
#define EMBER_GROW_LOAD_FACTOR_MIN 0.1f /* below, a table would be mostly empty slots */

typedef enum ember_nonfinite_policy {
    EMBER_NONFINITE_REJECT = 0, /* a NaN/Inf gradient or delta fails the call */
    EMBER_NONFINITE_ZERO = 1,   /* ... is replaced by 0 and counted */
} ember_nonfinite_policy;

typedef struct ember_admission_config {
    uint32_t min_count;      /* 0 or 1: admission off; n: stored from the n-th sighting */
    uint32_t sketch_width;   /* counters per sketch row (rounded up to a power of 2);
                                0 = 1,048,576 */
} ember_admission_config;

typedef struct ember_table_config {
    uint32_t dim;                 /* 1..EMBER_DIM_MAX */
    uint64_t capacity;            /* 1..EMBER_CAPACITY_MAX keys, rounded up to
                                     whole buckets */
    ember_score_policy score_policy;
    uint64_t seed;                /* initializer seed */
    ember_optim_config optim;
    ember_init_config init;
    ember_admission_config admission;
    ember_nonfinite_policy nonfinite;
    uint64_t hbm_bytes;           /* GPU backend: at most this many bytes of rows in
                                     device memory, the rest in pinned host memory
                                     ("hybrid"); 0 = every row in device memory.
                                     Ignored by the CPU backend. */
    uint64_t max_capacity;        /* online growth: 0 (or ≤ capacity) = fixed size.
                                     Else the table doubles while serving, up to
                                     the largest capacity × 2^k ≤ max_capacity
                                     (see "Online growth" below) */
    float max_load_factor;        /* growth threshold in [0.1, 1]; 0 = 0.75 */
    uint64_t ttl_seconds;         /* time to live: 0 = off. Rows not written for
                                     this long are removed by ember_table_expire
                                     (see "Time to live" below) */
} ember_table_config;

typedef struct ember_table_stats {
    uint64_t size;                /* keys stored */
    uint64_t capacity;            /* slots: buckets × EMBER_BUCKET_SLOTS */
    double load_factor;           /* size / capacity */
    uint64_t num_buckets;
    uint64_t version;             /* the last write's version (0: never written) */
    uint64_t evictions;           /* keys pushed out of full buckets by inserts */
    uint64_t evicted;             /* keys removed by evict calls */
    uint64_t insert_refused;      /* CUSTOM: new keys scored below a full bucket */
    uint64_t admission_drops;     /* pushes/inserts dropped: key not yet admitted */
    uint64_t nonfinite_zeroed;    /* NaN/Inf inputs replaced by 0 (policy ZERO) */
    uint64_t bytes_host;          /* host memory held by the table */
    uint64_t bytes_device;        /* device memory held by the table */
    uint64_t slots_device;        /* slots whose rows live in device memory (GPU) */
    uint64_t slots_host;          /* slots whose rows live in host memory: all of
                                     them on the CPU, the hybrid rest on the GPU */
    uint64_t grows;               /* doublings done by online growth */
    uint64_t grow_pause_ns;       /* how long the last one held calls back */
    uint64_t grow_failures;       /* doublings that could not get memory */
    uint64_t expired;             /* keys removed by ember_table_expire (also
                                     counted in `evicted`) */
} ember_table_stats;

/* Rows that export returns: score ≥ min_score and version > after_version, where
 * after_version 0 passes every version, 0 included (an import may carry 0); so
 * 0 and 0: every row. `full_rows`: embedding + optimizer slots; else embedding. */
typedef struct ember_export_filter {
    uint64_t min_score;
    uint64_t after_version;
    int full_rows;
} ember_export_filter;

typedef struct ember_table ember_table;
typedef struct ember_table_backend ember_table_backend;

/* The CPU backend: always available. */
const ember_table_backend *ember_table_cpu_backend(void);
/* A backend's short name ("cpu", "gpu"). */
const char *ember_table_backend_name(const ember_table_backend *b);

/* Fills `c` with defaults: LRU, SGD lr 0.01, uniform(-0.01, 0.01) initializer,
 * seed 0, no admission, non-finite rejected; dim and capacity 0 (caller sets). */
void ember_table_config_init(ember_table_config *c);

/* Checks every field; EMBER_INVALID_ARGUMENT naming the first bad one. */
int ember_table_config_validate(const ember_table_config *c, ember_error *err);

/* The capacity (slots: whole buckets) a table of config `c` starts with, and the
 * largest it can grow to (the same when growth is off). `c` must be valid. */
uint64_t ember_table_config_capacity_slots(const ember_table_config *c);
uint64_t ember_table_config_max_slots(const ember_table_config *c);

/* Row floats (embedding + optimizer slots) of a table with this config. */
uint32_t ember_table_config_row_floats(const ember_table_config *c);

/* The memory a table of config `c` on `backend` (NULL = CPU) holds once created,
 * exactly as its stats report it then: *bytes_host and *bytes_device (either may
 * be NULL). Rows, keys, slot metadata and the admission sketch; not the
 * per-call scratch a backend keeps for the largest call so far. Allocates
 * nothing, needs no device: a server checks its caps with it before creating.
 * Errors: INVALID_ARGUMENT (config). */
int ember_table_footprint(const ember_table_config *c, const ember_table_backend *backend,
                          uint64_t *bytes_host, uint64_t *bytes_device, ember_error *err);

/*
 * Online growth. A table whose max_capacity is above its capacity doubles its
 * bucket count while serving: before a call that may insert n keys (find_or_insert,
 * insert_or_assign, apply_gradients, import), while size + n > max_load_factor ×
 * capacity and a doubling is left, the table grows. Growing builds a new backend
 * table of twice the buckets, moves every row into it (embedding, optimizer slots,
 * score and version unchanged: bucket b's keys land in buckets 2b and 2b + 1, so
 * no bucket can overflow and nothing is evicted) and swaps it in. Calls on the
 * table wait while it grows (stats: grow_pause_ns); calls on other tables do not.
 * Memory: old and new are both held while rows move (3 × the old size at peak).
 * Kept: rows, counters, the version. Reset: an admission sketch (keys counting
 * toward admission start again). If the new table cannot get memory the table
 * keeps serving at its size (it is a cache: full buckets evict) and counts a
 * grow_failure; it tries again only after ember_table_reserve or clear. A table
 * without growth takes no lock at all for this.
 *
 * Export cursors stay valid across growth (a scan started before a doubling goes
 * on after it, visiting each row once): they count buckets of the largest size.
 */

/* Grows the table (doubling, within max_capacity) until `keys` keys fit under
 * its max_load_factor. A restore calls this with the rows it will import.
 * Errors: RESOURCE_EXHAUSTED (memory; the table is unchanged). */
int ember_table_reserve(ember_table *t, uint64_t keys, ember_error *err);

/*
 * Time to live. A table with ttl_seconds > 0 loses rows that no call has
 * *written* for that long: writes are apply_gradients, insert_or_assign,
 * assign, accum, and find_or_insert creating the key (each gives the row a new
 * version); reads, a find_or_insert of an existing key included, do not keep a
 * row alive. The table does not keep a time per row: ember_table_expire(t, now)
 * records which version was current at `now`, and removes rows whose version
 * was already current ttl_seconds before (so a row lives at least ttl_seconds
 * after its last write, and at most that plus the interval between expire
 * calls, plus a snapshot's duration: a call while a snapshot runs does nothing,
 * the first after it catches up). The record starts empty: a table just created or restored removes
 * nothing for its first ttl_seconds (restored rows count as written at restore).
 * Removal visits one bucket at a time, beside other calls. Removed rows count
 * in stats.expired and stats.evicted.
 */

/* Records the version current at `now_ns` (CLOCK_REALTIME ns) and removes the
 * rows expired by then; *expired (optional) = how many. A no-op without TTL.
 * Errors: a backend's own (INTERNAL). */
int ember_table_expire(ember_table *t, uint64_t now_ns, uint64_t *expired, ember_error *err);

/* Changes the table's time to live (0: off; the record of versions is kept).
 * INVALID_ARGUMENT above EMBER_TTL_MAX_SECONDS; FAILED_PRECONDITION on a backend
 * that cannot expire rows. */
int ember_table_set_ttl(ember_table *t, uint64_t ttl_seconds, ember_error *err);
uint64_t ember_table_ttl(const ember_table *t);

/* Creates a table on `backend` (NULL = CPU). On success *out owns the table
 * (free with ember_table_destroy). Errors: INVALID_ARGUMENT (config),
 * RESOURCE_EXHAUSTED (memory). */
int ember_table_create(const ember_table_config *c, const ember_table_backend *backend,
                       ember_table **out, ember_error *err);

/* Frees the table. No other call may be running on it. NULL is a no-op. */
void ember_table_destroy(ember_table *t);

const ember_table_config *ember_table_config_of(const ember_table *t);
const ember_table_backend *ember_table_backend_of(const ember_table *t);
uint32_t ember_table_dim(const ember_table *t);
uint32_t ember_table_row_floats(const ember_table *t);
/* Keys stored. Each call adds its own count when it ends, so while calls are in
 * flight the figure may lag the contents by their batches; exact when idle. */
uint64_t ember_table_size(const ember_table *t);
uint64_t ember_table_capacity(const ember_table *t);
void ember_table_stats_get(const ember_table *t, ember_table_stats *out);

/* The epoch (high 32 bits of EPOCH_* scores) for later calls. */
void ember_table_set_epoch(ember_table *t, uint32_t epoch);
/* The epoch now. */
uint32_t ember_table_epoch(const ember_table *t);
/* Moves the epoch up to `epoch` if it is below it (never down: concurrent
 * callers end at the highest); returns the epoch before. */
uint32_t ember_table_raise_epoch(ember_table *t, uint32_t epoch);

/* Serving read. values[n*dim] receives each key's embedding; a missing key gets
 * its initial row (not stored). found[n] (optional) = 1 where the key exists.
 * Scores are not touched. */
int ember_table_find(ember_table *t, const uint64_t *keys, size_t n, float *values,
                     uint8_t *found, ember_error *err);

/* Training read: like find, but a missing key is created with its initial row
 * (subject to admission: a key not yet admitted is returned, not stored). Every
 * key's score is touched. found[n] (optional) = 1 where the key existed before.
 * scores[n] (optional, CUSTOM) gives the keys' scores. */
int ember_table_find_or_insert(ember_table *t, const uint64_t *keys, size_t n,
                               float *values, uint8_t *found, const uint64_t *scores,
                               ember_error *err);

/* Writes embeddings values[n*dim]; new keys get fresh optimizer slots, existing
 * keys keep theirs. No admission. scores: as for find_or_insert. */
int ember_table_insert_or_assign(ember_table *t, const uint64_t *keys, size_t n,
                                 const float *values, const uint64_t *scores,
                                 ember_error *err);

/* Overwrites the embeddings of keys that exist; others are left out.
 * found[n] (optional) = 1 where the key existed and was written. */
int ember_table_assign(ember_table *t, const uint64_t *keys, size_t n,
                       const float *values, uint8_t *found, const uint64_t *scores,
                       ember_error *err);

/* Adds deltas[n*dim] to the embeddings of keys that exist; others are left out.
 * found[n] (optional) as for assign. */
int ember_table_accum(ember_table *t, const uint64_t *keys, size_t n,
                      const float *deltas, uint8_t *found, ember_error *err);

/* The training push: equal keys' gradients grads[n*dim] are summed, then each
 * key's row is updated once by the table's optimizer; a missing key is created
 * with its initial row first (subject to admission: a key not yet admitted is
 * dropped and counted). scores: as for find_or_insert (the last given wins). */
int ember_table_apply_gradients(ember_table *t, const uint64_t *keys, size_t n,
                                const float *grads, const uint64_t *scores,
                                ember_error *err);

/* The four writes, as one call: ember_table_write. */
typedef enum ember_write_kind {
    EMBER_WRITE_GRADIENTS,      /* ember_table_apply_gradients */
    EMBER_WRITE_UPSERT,         /* ember_table_insert_or_assign */
    EMBER_WRITE_ASSIGN,         /* ember_table_assign */
    EMBER_WRITE_ACCUM,          /* ember_table_accum */
} ember_write_kind;

/* What a caller of ember_table_write has checked itself, bits of `checked`. */
#define EMBER_CHECKED_KEYS   1u /* no key of keys[n] is reserved */
#define EMBER_CHECKED_VALUES 2u /* every float of values[n*dim] is finite */

/* The write of `kind`, with that call's contract (found: ASSIGN and ACCUM only,
 * else ignored; scores: not ACCUM, else ignored), for a caller that validated
 * the batch as it read it (a server, on the wire bytes): what `checked` names
 * is not read again, so a call costs one validation pass, not two. Batch limit
 * and NULL arrays are still checked, and the rest as in the named call: with
 * checked = 0 this is that call. A caller that vouches falsely stores a
 * reserved key or a non-finite value. Errors: as the named call. */
int ember_table_write(ember_table *t, ember_write_kind kind, unsigned checked,
                      const uint64_t *keys, size_t n, const float *values, uint8_t *found,
                      const uint64_t *scores, ember_error *err);

/* Removes keys; *erased (optional) = how many existed. */
int ember_table_erase(ember_table *t, const uint64_t *keys, size_t n, uint64_t *erased,
                      ember_error *err);

/* Removes every key. Counters in stats are kept. */
int ember_table_clear(ember_table *t, ember_error *err);

/* Scans rows that pass `f` (NULL: all), whole buckets at a time, starting at
 * *cursor (0 to begin). Writes up to `max_rows` rows (max_rows ≥
 * EMBER_BUCKET_SLOTS) to keys[], rows[] (row_floats or dim floats each, by
 * f->full_rows), and, where not NULL, scores[] and versions[]; *n_out = rows
 * written. *cursor advances; the scan is done when *cursor ==
 * ember_table_export_end(t). */
int ember_table_export(ember_table *t, const ember_export_filter *f, uint64_t *cursor,
                       size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                       uint64_t *versions, size_t *n_out, ember_error *err);
uint64_t ember_table_export_end(const ember_table *t);

/* Writes whole rows (embedding + slots, row_floats each) with their scores and
 * versions, as export gave them: checkpoint load and Import. No admission; the
 * table's version becomes at least the largest version imported. */
int ember_table_import(ember_table *t, const uint64_t *keys, size_t n, const float *rows,
                       const uint64_t *scores, const uint64_t *versions,
                       ember_error *err);

/* The table's version: the last one handed to a writing call. */
uint64_t ember_table_version(const ember_table *t);

/* The stable version: every writing call whose version is at or below it has
 * written all its rows (none is still in progress). An export that begins after
 * this is read sees every such write (or a newer one of the same row), so a
 * follower that applied it may ask next for rows written after the stable
 * version without missing a write that was in flight (replication, server
 * repl.h). Waits only for calls that have taken a version slot but not yet
 * drawn their version (a few instructions). */
uint64_t ember_table_stable_version(ember_table *t);

/* Makes the table's version at least `version` (a restored checkpoint's), so
 * later writes never reuse a version a delta export may already have handed out. */
void ember_table_raise_version(ember_table *t, uint64_t version);

/* Removes keys whose score is below `score`; *evicted (optional) = how many. */
int ember_table_evict_below(ember_table *t, uint64_t score, uint64_t *evicted,
                            ember_error *err);

/* Removes the lowest-score keys until at most `target` remain (exact when no
 * writer runs beside it); *evicted (optional) = how many. */
int ember_table_evict_to_size(ember_table *t, uint64_t target, uint64_t *evicted,
                              ember_error *err);

/* ---- point-in-time snapshots ----------------------------------------------
 *
 * A snapshot is the table as it was at one moment, its cut, read while pulls
 * and pushes go on. Beginning one waits for the writing calls under way to end
 * and holds new ones back for that instant (a fixed-size table's writers take a
 * shared lock for it; a growing table's already hold one); the cut is the
 * table's version then: every write with a version up to the cut is in the
 * snapshot, none after it, and erases, evictions and clears after it are not
 * seen either.
 *
 * While it runs, the first writing call (the four writes, find_or_insert,
 * erase, clear, import, evict_*) that touches a bucket the snapshot has not
 * read yet first copies that whole bucket into the snapshot's side buffer
 * (calls without keys — clear, evict_* — copy every bucket not read yet;
 * expire waits for the snapshot to end, see "Time to live"). The snapshot
 * reads a bucket from the table or from that copy, claiming each bucket it
 * reads from the table with a compare-and-swap (a writer that finds a bucket
 * being read waits for that one backend call). Extra memory: at most the rows
 * of the buckets written during the snapshot. Online growth waits until the
 * snapshot ends. With no snapshot running, a writing call pays one branch and a
 * thread-local note of the cut epoch (below); a fixed-size table's writers also
 * the shared lock above.
 *
 * Snapshots of one table run one at a time: a second begin waits for the first
 * to end. End a snapshot before destroying its table. */
typedef struct ember_table_snapshot ember_table_snapshot;

/* Begins a snapshot of t. `at_cut` (NULL: none) is called once with `arg` and
 * the cut's epoch (ember_table_snapshot_cut_epoch below) at the cut, while no
 * writing call of t runs: what is recorded there is exactly as of the cut.
 * Errors: INVALID_ARGUMENT (NULL t or out), RESOURCE_EXHAUSTED. */
int ember_table_snapshot_begin(ember_table *t, void (*at_cut)(void *arg, uint64_t cut_epoch),
                               void *arg, ember_table_snapshot **out, ember_error *err);
/* One cut for several tables at once (n ≥ 1, no table twice): every writing
 * call of any of them is before it or after it, for all alike. out[i] gets the
 * snapshot of ts[i]; end each with ember_table_snapshot_end. `at_cut` as
 * above. Errors: INVALID_ARGUMENT, RESOURCE_EXHAUSTED (nothing begun). */
int ember_table_snapshot_begin_many(ember_table *const *ts, size_t n,
                                    void (*at_cut)(void *arg, uint64_t cut_epoch),
                                    void *arg, ember_table_snapshot **out, ember_error *err);

/* Cut epochs: a process-wide count raised at every cut. Each writing call
 * notes, in its thread, the count it ran under: a caller that wrote through a
 * table and compares ember_table_thread_cut_epoch() (its thread's last writing
 * call) with a snapshot's ember_table_snapshot_cut_epoch() knows whether that
 * call was before the cut (lower: its rows are in the snapshot) or after it
 * (equal or higher). A server's at-most-once window is saved this way. */
uint64_t ember_table_thread_cut_epoch(void);
uint64_t ember_table_snapshot_cut_epoch(const ember_table_snapshot *s);

/* The table's version at the cut, its epoch then, and its rows then. */
uint64_t ember_table_snapshot_cut(const ember_table_snapshot *s);
uint32_t ember_table_snapshot_epoch(const ember_table_snapshot *s);
uint64_t ember_table_snapshot_size(const ember_table_snapshot *s);
/* Reads the snapshot's rows, whole buckets at a time, as ember_table_export with
 * full rows and no filter: from *cursor (0 to begin) up to max_rows rows
 * (≥ EMBER_BUCKET_SLOTS), scores and versions where not NULL; done when *n_out
 * is 0 and *cursor == ember_table_snapshot_end_cursor(s). Each bucket is read
 * once: a snapshot is read through once. */
int ember_table_snapshot_export(ember_table_snapshot *s, uint64_t *cursor, size_t max_rows,
                                uint64_t *keys, float *rows, uint64_t *scores,
                                uint64_t *versions, size_t *n_out, ember_error *err);
uint64_t ember_table_snapshot_end_cursor(const ember_table_snapshot *s);
/* Ends the snapshot (read through or not) and frees it. NULL is a no-op. */
void ember_table_snapshot_end(ember_table_snapshot *s);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_TABLE_H */

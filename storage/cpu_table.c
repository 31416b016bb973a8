/*
 * cpu_table.c — the CPU backend: a HierarchicalKV-style table in host memory.
 *
 * Layout. Buckets of EMBER_BUCKET_SLOTS (128) slots. A bucket holds a spinlock,
 * a control byte per slot (a 7-bit digest of the key's hash, or EMPTY/ERASED),
 * and the slots' keys, scores and versions in separate arrays. Rows (embedding +
 * optimizer slots) live in one large slab, row (bucket, slot) at a fixed place,
 * so no pointer is stored per key and nothing is allocated per key or per call.
 *
 * Probing is confined to the key's bucket: 16 control bytes are compared at once
 * (SSE2), starting at the key's home group and wrapping around; a group that
 * holds an EMPTY byte ends the search (the key would have been placed at or
 * before it). Erasing leaves ERASED unless the slot's group already has an EMPTY,
 * so no probe chain is ever cut; a bucket that empties is reset to all-EMPTY.
 * When no slot is free the lowest-score entry is evicted (for CUSTOM scores, only
 * if the new key's score is not lower).
 *
 * Locking. One spinlock per bucket, held while a key's slot and row are written:
 * calls on different buckets run in parallel. The lock word is also a sequence
 * number, so serving reads (find) take no lock at all and retry if a writer got
 * in their way (bucket_read_begin): rows are never torn either way.
 * Functions named *_locked expect the caller to hold the bucket's lock. Calls
 * never hold two bucket locks at once, so there is no lock order to keep.
 *
 * Throughput. Batches are walked as a software pipeline (prefetch_walk) so the
 * cache misses of different keys overlap; the row slab is marked for transparent
 * huge pages, so a row access rarely misses the TLB.
 */
#define _GNU_SOURCE
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "admission.h"
/* A backend is called by table.c and calls nothing of it (the row layout comes
 * from optim.h): the dependency points one way, table.c -> backends. */
#include "table_backend.h"

/* Prefetch helpers must be inlined early: a function whose only effects are
 * prefetches counts as pure to GCC, and a call to it whose result is unused is
 * deleted — with every prefetch in it. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

#define SLOTS EMBER_BUCKET_SLOTS
#define GROUP EMBER_GROUP_SLOTS
#define GROUPS EMBER_BUCKET_GROUPS
#define HUGE_PAGE (2u << 20)
#define NO_INDEX UINT32_MAX

typedef struct cpu_bucket {
    _Alignas(64) _Atomic uint32_t cb_seq;   /* odd: a writer holds the bucket */
    uint32_t cb_size;                  /* occupied slots */
    /* the largest version written into the bucket since it was last emptied
     * (written under the lock, read without it): a delta export skips a
     * bucket with nothing newer than it asks for, lock and slots unread */
    _Atomic uint64_t cb_max_version;
    _Alignas(64) uint8_t cb_ctrl[SLOTS];
    uint64_t cb_keys[SLOTS];
    uint64_t cb_scores[SLOTS];
    uint64_t cb_versions[SLOTS];
} cpu_bucket;

/* Scratch for apply_gradients' duplicate merging, reused across calls. */
typedef struct cpu_scratch {
    struct cpu_scratch *cs_next;
    size_t cs_cap;            /* keys the arrays below can hold */
    uint32_t *cs_map;         /* 2·cap (power of two) open-addressing slots: index+1;
                               * a call uses (and clears) only what its n needs */
    uint32_t *cs_uniq;        /* first occurrence of each distinct key, in order */
    uint32_t *cs_chain;       /* next occurrence of the same key, or NO_INDEX */
    uint32_t *cs_last;        /* last occurrence so far, for first occurrences */
    float *cs_sum;            /* one summed gradient */
} cpu_scratch;

typedef struct cpu_table {
    ember_table_config ct_cfg;
    uint32_t ct_dim;
    uint32_t ct_row_floats;
    uint64_t ct_num_buckets;
    cpu_bucket *ct_buckets;
    float *ct_rows;
    size_t ct_buckets_bytes;
    size_t ct_rows_bytes;
    ember_admission *ct_admission;     /* NULL: admission off */
    _Atomic int64_t ct_size;
    _Atomic uint64_t ct_evictions;
    _Atomic uint64_t ct_evicted;
    _Atomic uint64_t ct_refused;
    _Atomic uint64_t ct_admission_drops;
    pthread_mutex_t ct_scratch_lock;
    cpu_scratch *ct_scratch_free;
} cpu_table;

/* What one call counts, added to the table's counters once at its end. */
typedef struct call_counts {
    int64_t size_delta;
    uint64_t evictions;
    uint64_t refused;
    uint64_t admission_drops;
} call_counts;

/* ---- buckets ------------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__SSE2__)
    _mm_pause();
#endif
}

static inline void bucket_lock(cpu_bucket *b)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&b->cb_seq, memory_order_relaxed);
        if (!(seq & 1u) &&
            atomic_compare_exchange_weak_explicit(&b->cb_seq, &seq, seq + 1u,
                                                  memory_order_acquire, memory_order_relaxed))
            return;
        /* The holder may have been preempted (more threads than cores). */
        if (++spins % 1024 == 0)
            sched_yield();
        else
            cpu_relax();
    }
}

static inline void bucket_unlock(cpu_bucket *b)
{
    atomic_store_explicit(&b->cb_seq,
                          atomic_load_explicit(&b->cb_seq, memory_order_relaxed) + 1u,
                          memory_order_release);
}

/* Optimistic reads (a seqlock): a reader takes no lock and writes nothing; it
 * notes the sequence, reads, and keeps what it read only if no writer held or
 * took the bucket meanwhile — else it reads again. Readers never slow writers
 * and never see a torn row. What a reader reads while a writer is active is
 * thrown away unused; slot indexes come from bounded scans, so even a stale
 * control byte cannot send a read outside the bucket. */
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot see that a seqlock reader throws away what it read
 * while a writer was active (the read is a race by the C11 rules, harmless
 * here), and GCC refuses atomic_thread_fence under it. So in a TSan build a
 * reader takes the bucket's lock instead: the same results, and TSan keeps
 * checking everything else. */
static inline uint32_t bucket_read_begin(const cpu_bucket *b)
{
    bucket_lock((cpu_bucket *)b);
    return 0;
}

static inline int bucket_read_retry(const cpu_bucket *b, uint32_t seq)
{
    (void)seq;
    bucket_unlock((cpu_bucket *)b);
    return 0;
}
#else
static inline uint32_t bucket_read_begin(const cpu_bucket *b)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&((cpu_bucket *)b)->cb_seq, memory_order_acquire);
        if (!(seq & 1u))
            return seq;
        if (++spins % 1024 == 0)
            sched_yield();
        else
            cpu_relax();
    }
}

static inline int bucket_read_retry(const cpu_bucket *b, uint32_t seq)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&((cpu_bucket *)b)->cb_seq, memory_order_relaxed) != seq;
}
#endif

static inline unsigned ctz32(unsigned x)
{
    return (unsigned)__builtin_ctz(x);
}

/* Masks of the 16 control bytes of group `g`: matching `digest`, free (top bit
 * set: EMPTY or ERASED), and EMPTY. */
typedef struct group_masks {
    unsigned match, free, empty;
} group_masks;

static ALWAYS_INLINE group_masks group_scan(const cpu_bucket *b, uint32_t g, uint8_t digest)
{
    group_masks m;
    const uint8_t *c = b->cb_ctrl + g * GROUP;
#if defined(__SSE2__)
    __m128i v = _mm_load_si128((const __m128i *)c);
    m.match = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8((char)digest)));
    m.free = (unsigned)_mm_movemask_epi8(v);
    m.empty = (unsigned)_mm_movemask_epi8(
        _mm_cmpeq_epi8(v, _mm_set1_epi8((char)EMBER_CTRL_EMPTY)));
#else
    m.match = m.free = m.empty = 0;
    for (unsigned i = 0; i < GROUP; i++) {
        m.match |= (unsigned)(c[i] == digest) << i;
        m.free |= (unsigned)(c[i] >> 7) << i;
        m.empty |= (unsigned)(c[i] == EMBER_CTRL_EMPTY) << i;
    }
#endif
    return m;
}

/* Where a key goes: its bucket, digest and home group. */
typedef struct key_place {
    uint64_t bucket;
    uint8_t digest;
    uint32_t group;
} key_place;

static ALWAYS_INLINE key_place place_of(const cpu_table *t, uint64_t key)
{
    uint64_t h = ember_key_hash(key);
    key_place p = {ember_hash_bucket(h, t->ct_num_buckets), ember_hash_digest(h),
                   ember_hash_group(h)};
    return p;
}

static ALWAYS_INLINE float *row_at(const cpu_table *t, uint64_t bucket, unsigned slot)
{
    return t->ct_rows + ((size_t)bucket * SLOTS + slot) * t->ct_row_floats;
}

/* Batches are walked as a software pipeline so that the cache misses of
 * different keys overlap instead of queueing one after another:
 *   key i + PREFETCH_FAR:  fetch its bucket's lock line and control bytes;
 *   key i + PREFETCH_NEAR: peek (unlocked) at that control group, which has
 *                          arrived by now, and fetch the key and row lines of the
 *                          first digest match;
 *   key i:                 lock, probe, work — mostly on lines already in cache.
 * The peek takes no lock: a racing writer can only make it aim a prefetch at the
 * wrong slot, which costs a miss later and changes no result. */
#ifndef PREFETCH_FAR
#define PREFETCH_FAR 16
#endif
#ifndef PREFETCH_NEAR
#define PREFETCH_NEAR 8
#endif
#define PREFETCH_ROW_LINES 16

static ALWAYS_INLINE void prefetch_bucket(const cpu_table *t, uint64_t key)
{
    key_place p = place_of(t, key);
    const cpu_bucket *b = &t->ct_buckets[p.bucket];
    __builtin_prefetch(&b->cb_seq, 1, 3);
    /* Both lines of control bytes: a miss in a full bucket scans them all. */
    __builtin_prefetch(b->cb_ctrl, 0, 3);
    __builtin_prefetch(b->cb_ctrl + 64, 0, 3);
}

/* The row a key will touch, guessed from its home group's control bytes read
 * without the lock: a hint only (a wrong guess costs a wasted prefetch). A TSan
 * build skips it, since that unlocked read is a race by the C11 rules. */
static ALWAYS_INLINE void prefetch_slot(const cpu_table *t, uint64_t key, int writes)
{
#if defined(__SANITIZE_THREAD__)
    (void)t, (void)key, (void)writes;
    return;
#endif
    key_place p = place_of(t, key);
    const cpu_bucket *b = &t->ct_buckets[p.bucket];
    group_masks gm = group_scan(b, p.group, p.digest);
    unsigned s;
    if (gm.match) {
        s = p.group * GROUP + ctz32(gm.match);
        __builtin_prefetch(&b->cb_keys[s], 0, 3);
    } else if (writes && gm.free) {
        s = p.group * GROUP + ctz32(gm.free); /* where a new key would go */
    } else {
        return;
    }
    if (writes) {
        __builtin_prefetch(&b->cb_scores[s], 1, 3);
        __builtin_prefetch(&b->cb_versions[s], 1, 3);
    }
    const char *row = (const char *)row_at(t, p.bucket, s);
    size_t lines = ((size_t)t->ct_row_floats * sizeof(float) + 63) / 64;
    if (lines > PREFETCH_ROW_LINES)
        lines = PREFETCH_ROW_LINES;
    /* Two literal calls: the rw argument must be a constant even at -O0. */
    for (size_t l = 0; l < lines; l++) {
        if (writes)
            __builtin_prefetch(row + l * 64, 1, 3);
        else
            __builtin_prefetch(row + l * 64, 0, 3);
    }
}

/* Prefetches for position i of a walk over keys[order[0..n)] (order NULL: the
 * keys in their own order). `writes`: the walk writes rows and scores, and
 * creates missing keys, so the score, version and the row a new key would take
 * are fetched too. */
static ALWAYS_INLINE void prefetch_walk(const cpu_table *t, const uint64_t *keys,
                                        const uint32_t *order, size_t i, size_t n, int writes)
{
    if (i + PREFETCH_FAR < n)
        prefetch_bucket(t, keys[order ? order[i + PREFETCH_FAR] : i + PREFETCH_FAR]);
    if (i + PREFETCH_NEAR < n)
        prefetch_slot(t, keys[order ? order[i + PREFETCH_NEAR] : i + PREFETCH_NEAR], writes);
}

/* Finds `key` in bucket `b` (locked, or inside a read section whose result is
 * checked with bucket_read_retry). Returns its slot, or -1; *free_slot gets
 * the first free slot on the key's probe path, or -1 if there is none. */
static int probe_locked(const cpu_bucket *b, uint64_t key, key_place p, int *free_slot)
{
    *free_slot = -1;
    for (uint32_t i = 0; i < GROUPS; i++) {
        uint32_t g = (p.group + i) & (GROUPS - 1);
        group_masks m = group_scan(b, g, p.digest);
        for (unsigned x = m.match; x; x &= x - 1) {
            unsigned s = g * GROUP + ctz32(x);
            if (b->cb_keys[s] == key)
                return (int)s;
        }
        if (m.free && *free_slot < 0)
            *free_slot = (int)(g * GROUP + ctz32(m.free));
        if (m.empty)
            return -1;
    }
    return -1;
}

/* The occupied slot with the lowest score (the first of equals). */
static unsigned lowest_score_locked(const cpu_bucket *b)
{
    unsigned best = 0;
    uint64_t min = b->cb_scores[0];
    for (unsigned s = 1; s < SLOTS; s++) {
        if (b->cb_scores[s] < min) {
            min = b->cb_scores[s];
            best = s;
        }
    }
    return best;
}

/* Takes a slot for a new key in bucket `b` (locked): `free_slot` if there is one,
 * else the lowest-score entry's, which is evicted. Returns the slot, or -1 when
 * the table's policy is CUSTOM and `score` is below every stored score. */
static int claim_slot_locked(const cpu_table *t, cpu_bucket *b, key_place p, uint64_t key,
                             int free_slot, uint64_t score, call_counts *cc)
{
    unsigned s;
    if (free_slot >= 0) {
        s = (unsigned)free_slot;
        b->cb_size++;
        cc->size_delta++;
    } else {
        s = lowest_score_locked(b);
        if (t->ct_cfg.score_policy == EMBER_SCORE_CUSTOM && score < b->cb_scores[s]) {
            cc->refused++;
            return -1;
        }
        cc->evictions++;
    }
    b->cb_ctrl[s] = p.digest;
    b->cb_keys[s] = key;
    return (int)s;
}

/* Frees slot `s` of bucket `b` (locked). */
static void erase_slot_locked(cpu_bucket *b, unsigned s)
{
    unsigned g = s / GROUP;
    group_masks m = group_scan(b, g, 0);
    /* A group that already holds an EMPTY ends every probe that reaches it, so
     * one more EMPTY there cannot cut a chain; elsewhere leave a tombstone. */
    b->cb_ctrl[s] = m.empty ? EMBER_CTRL_EMPTY : EMBER_CTRL_ERASED;
    b->cb_keys[s] = EMBER_KEY_EMPTY;
    if (--b->cb_size == 0)
        memset(b->cb_ctrl, EMBER_CTRL_EMPTY, SLOTS);
}

/* A slot's version; the bucket's largest grows with it (its lock held). */
static inline void set_version_locked(cpu_bucket *b, unsigned s, uint64_t v)
{
    b->cb_versions[s] = v;
    if (v > atomic_load_explicit(&b->cb_max_version, memory_order_relaxed))
        atomic_store_explicit(&b->cb_max_version, v, memory_order_release);
}

static inline int slot_used(const cpu_bucket *b, unsigned s)
{
    return b->cb_ctrl[s] < EMBER_CTRL_EMPTY;
}

/* A new key's row: initial embedding and fresh optimizer slots. */
static void init_row(const cpu_table *t, uint64_t key, float *row)
{
    ember_init_row(&t->ct_cfg.init, t->ct_cfg.seed, key, row, t->ct_dim);
    ember_optim_init_slots(&t->ct_cfg.optim, row + t->ct_dim, t->ct_dim);
}

static void counts_commit(cpu_table *t, const call_counts *cc)
{
    if (cc->size_delta)
        atomic_fetch_add(&t->ct_size, cc->size_delta);
    if (cc->evictions)
        atomic_fetch_add(&t->ct_evictions, cc->evictions);
    if (cc->refused)
        atomic_fetch_add(&t->ct_refused, cc->refused);
    if (cc->admission_drops)
        atomic_fetch_add(&t->ct_admission_drops, cc->admission_drops);
}

/* ---- create / destroy ---------------------------------------------------- */

static void scratch_free(cpu_scratch *s)
{
    free(s->cs_map);
    free(s->cs_uniq);
    free(s->cs_chain);
    free(s->cs_last);
    free(s->cs_sum);
    free(s);
}

static void cpu_destroy(void *impl)
{
    cpu_table *t = impl;
    if (!t)
        return;
    while (t->ct_scratch_free) {
        cpu_scratch *s = t->ct_scratch_free;
        t->ct_scratch_free = s->cs_next;
        scratch_free(s);
    }
    pthread_mutex_destroy(&t->ct_scratch_lock);
    if (t->ct_rows)
        dallocx(t->ct_rows, 0);
    if (t->ct_buckets)
        dallocx(t->ct_buckets, 0);
    ember_admission_destroy(t->ct_admission);
    free(t);
}

/* A large array from jemalloc: cache-line aligned, and from 2 MiB up aligned to
 * and advised for transparent huge pages (a hint; the kernel may decline). */
static void *slab_alloc(size_t bytes)
{
    size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
    void *p = mallocx(bytes, MALLOCX_ALIGN(align));
    if (p && align == HUGE_PAGE)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

static int cpu_create(const ember_table_config *c, void **impl, ember_error *err)
{
    cpu_table *t = calloc(1, sizeof *t);
    if (!t)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    pthread_mutex_init(&t->ct_scratch_lock, NULL);
    t->ct_cfg = *c;
    t->ct_dim = c->dim;
    t->ct_row_floats = ember_row_floats(c->optim.kind, c->dim);
    t->ct_num_buckets = (c->capacity + SLOTS - 1) / SLOTS;
    t->ct_buckets_bytes = t->ct_num_buckets * sizeof(cpu_bucket);
    t->ct_rows_bytes = t->ct_num_buckets * SLOTS * (size_t)t->ct_row_floats * sizeof(float);

    /* Rows are written before they are read, so the slab needs no zeroing. Both
     * large arrays ask for huge pages, so a random bucket or row access does not
     * also miss the TLB. */
    t->ct_buckets = slab_alloc(t->ct_buckets_bytes);
    t->ct_rows = slab_alloc(t->ct_rows_bytes);
    if (!t->ct_buckets || !t->ct_rows) {
        size_t want = t->ct_buckets_bytes + t->ct_rows_bytes;
        cpu_destroy(t);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "cannot allocate %zu bytes of host memory for %llu keys",
                               want, (unsigned long long)c->capacity);
    }
    for (uint64_t i = 0; i < t->ct_num_buckets; i++) {
        cpu_bucket *b = &t->ct_buckets[i];
        atomic_init(&b->cb_seq, 0);
        b->cb_size = 0;
        memset(b->cb_ctrl, EMBER_CTRL_EMPTY, SLOTS);
        memset(b->cb_keys, 0xff, sizeof b->cb_keys);
        memset(b->cb_scores, 0, sizeof b->cb_scores);
        memset(b->cb_versions, 0, sizeof b->cb_versions);
        atomic_init(&b->cb_max_version, 0);
    }
    if (c->admission.min_count >= 2) {
        int rc = ember_admission_create(c->admission.min_count, c->admission.sketch_width,
                                        &t->ct_admission, err);
        if (rc) {
            cpu_destroy(t);
            return rc;
        }
    }
    *impl = t;
    return EMBER_OK;
}

/* ---- reads --------------------------------------------------------------- */

static int cpu_find(void *impl, const uint64_t *keys, size_t n, float *values,
                    uint8_t *found, ember_error *err)
{
    cpu_table *t = impl;
    size_t dim_bytes = (size_t)t->ct_dim * sizeof(float);
    (void)err;
    for (size_t i = 0; i < n; i++) {
        prefetch_walk(t, keys, NULL, i, n, 0);
        key_place p = place_of(t, keys[i]);
        cpu_bucket *b = &t->ct_buckets[p.bucket];
        float *out = values + i * t->ct_dim;
        int free_slot, s;
        uint32_t seq;
        do {
            seq = bucket_read_begin(b);
            s = probe_locked(b, keys[i], p, &free_slot);
            if (s >= 0)
                memcpy(out, row_at(t, p.bucket, (unsigned)s), dim_bytes);
        } while (bucket_read_retry(b, seq));
        if (s < 0)
            ember_init_row(&t->ct_cfg.init, t->ct_cfg.seed, keys[i], out, t->ct_dim);
        if (found)
            found[i] = s >= 0;
    }
    return EMBER_OK;
}

static inline uint64_t custom_of(const uint64_t *scores, size_t i)
{
    return scores ? scores[i] : 0;
}

/* Admission for a key about to be created: 1 if it may be stored. */
static inline int admit(cpu_table *t, uint64_t key)
{
    return !t->ct_admission || ember_admission_sight(t->ct_admission, key);
}

static int cpu_find_or_insert(void *impl, const ember_op *op, const uint64_t *keys,
                              size_t n, float *values, uint8_t *found,
                              const uint64_t *scores, ember_error *err)
{
    cpu_table *t = impl;
    size_t dim_bytes = (size_t)t->ct_dim * sizeof(float);
    call_counts cc = {0};
    (void)err;
    for (size_t i = 0; i < n; i++) {
        prefetch_walk(t, keys, NULL, i, n, 1);
        uint64_t key = keys[i];
        key_place p = place_of(t, key);
        cpu_bucket *b = &t->ct_buckets[p.bucket];
        float *out = values + i * t->ct_dim;
        int free_slot, stored = 0;
        bucket_lock(b);
        int s = probe_locked(b, key, p, &free_slot);
        if (s >= 0) {
            memcpy(out, row_at(t, p.bucket, (unsigned)s), dim_bytes);
            b->cb_scores[s] = ember_score_next(&op->score, b->cb_scores[s], 0, 1,
                                               custom_of(scores, i), scores != NULL);
            stored = 1;
        } else if (admit(t, key)) {
            uint64_t score = ember_score_next(&op->score, 0, 1, 1, custom_of(scores, i),
                                              scores != NULL);
            int ns = claim_slot_locked(t, b, p, key, free_slot, score, &cc);
            if (ns >= 0) {
                float *row = row_at(t, p.bucket, (unsigned)ns);
                init_row(t, key, row);
                memcpy(out, row, dim_bytes);
                b->cb_scores[ns] = score;
                set_version_locked(b, (unsigned)ns, op->version);
                stored = 1;
            }
        }
        bucket_unlock(b);
        if (!stored)
            ember_init_row(&t->ct_cfg.init, t->ct_cfg.seed, key, out, t->ct_dim);
        if (found)
            found[i] = s >= 0;
    }
    counts_commit(t, &cc);
    return EMBER_OK;
}

/* ---- writes -------------------------------------------------------------- */

/* What a write does to an existing or a newly claimed row. */
typedef enum write_kind {
    WRITE_ASSIGN,       /* embedding := values */
    WRITE_ACCUM,        /* embedding += values */
    WRITE_IMPORT,       /* whole row := values, score and version given */
} write_kind;

/* insert_or_assign, assign, accum and import: one loop, `insert` says whether a
 * missing key is created. */
static void write_rows(cpu_table *t, const ember_op *op, write_kind kind, int insert,
                       const uint64_t *keys, size_t n, const float *values,
                       uint8_t *found, const uint64_t *scores, const uint64_t *versions)
{
    uint32_t width = kind == WRITE_IMPORT ? t->ct_row_floats : t->ct_dim;
    call_counts cc = {0};
    for (size_t i = 0; i < n; i++) {
        prefetch_walk(t, keys, NULL, i, n, 1);
        uint64_t key = keys[i];
        key_place p = place_of(t, key);
        cpu_bucket *b = &t->ct_buckets[p.bucket];
        const float *in = values + i * (size_t)width;
        int free_slot;
        bucket_lock(b);
        int s = probe_locked(b, key, p, &free_slot);
        int is_new = s < 0;
        uint64_t score;
        if (kind == WRITE_IMPORT)
            score = scores[i];
        else
            score = ember_score_next(&op->score, is_new ? 0 : b->cb_scores[s], is_new, 1,
                                     custom_of(scores, i), scores != NULL);
        if (is_new && insert)
            s = claim_slot_locked(t, b, p, key, free_slot, score, &cc);
        if (s >= 0) {
            float *row = row_at(t, p.bucket, (unsigned)s);
            if (kind == WRITE_IMPORT) {
                memcpy(row, in, (size_t)width * sizeof(float));
            } else if (kind == WRITE_ACCUM) {
                for (uint32_t j = 0; j < width; j++)
                    row[j] += in[j];
            } else {
                memcpy(row, in, (size_t)width * sizeof(float));
                if (is_new)
                    ember_optim_init_slots(&t->ct_cfg.optim, row + t->ct_dim, t->ct_dim);
            }
            b->cb_scores[s] = score;
            set_version_locked(b, (unsigned)s, kind == WRITE_IMPORT ? versions[i] : op->version);
        }
        bucket_unlock(b);
        if (found)
            found[i] = !is_new;
    }
    counts_commit(t, &cc);
}

static int cpu_insert_or_assign(void *impl, const ember_op *op, const uint64_t *keys,
                                size_t n, const float *values, const uint64_t *scores,
                                ember_error *err)
{
    (void)err;
    write_rows(impl, op, WRITE_ASSIGN, 1, keys, n, values, NULL, scores, NULL);
    return EMBER_OK;
}

static int cpu_assign(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                      const float *values, uint8_t *found, const uint64_t *scores,
                      ember_error *err)
{
    (void)err;
    write_rows(impl, op, WRITE_ASSIGN, 0, keys, n, values, found, scores, NULL);
    return EMBER_OK;
}

static int cpu_accum(void *impl, const ember_op *op, const uint64_t *keys, size_t n,
                     const float *deltas, uint8_t *found, ember_error *err)
{
    (void)err;
    write_rows(impl, op, WRITE_ACCUM, 0, keys, n, deltas, found, NULL, NULL);
    return EMBER_OK;
}

static int cpu_import(void *impl, const uint64_t *keys, size_t n, const float *rows,
                      const uint64_t *scores, const uint64_t *versions, ember_error *err)
{
    (void)err;
    write_rows(impl, NULL, WRITE_IMPORT, 1, keys, n, rows, NULL, scores, versions);
    return EMBER_OK;
}

/* ---- apply_gradients ----------------------------------------------------- */

static cpu_scratch *scratch_get(cpu_table *t, size_t n)
{
    pthread_mutex_lock(&t->ct_scratch_lock);
    cpu_scratch *s = t->ct_scratch_free;
    if (s)
        t->ct_scratch_free = s->cs_next;
    pthread_mutex_unlock(&t->ct_scratch_lock);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        s->cs_sum = malloc((size_t)t->ct_dim * sizeof(float));
        if (!s->cs_sum) {
            free(s);
            return NULL;
        }
    }
    if (s->cs_cap < n) {
        size_t cap = s->cs_cap ? s->cs_cap : 1024;
        while (cap < n)
            cap *= 2;
        uint32_t *map = realloc(s->cs_map, 2 * cap * sizeof(uint32_t));
        if (map)
            s->cs_map = map;
        uint32_t *uniq = realloc(s->cs_uniq, cap * sizeof(uint32_t));
        if (uniq)
            s->cs_uniq = uniq;
        uint32_t *chain = realloc(s->cs_chain, cap * sizeof(uint32_t));
        if (chain)
            s->cs_chain = chain;
        uint32_t *last = realloc(s->cs_last, cap * sizeof(uint32_t));
        if (last)
            s->cs_last = last;
        if (!map || !uniq || !chain || !last) {
            scratch_free(s);
            return NULL;
        }
        s->cs_cap = cap;
    }
    return s;
}

static void scratch_put(cpu_table *t, cpu_scratch *s)
{
    pthread_mutex_lock(&t->ct_scratch_lock);
    s->cs_next = t->ct_scratch_free;
    t->ct_scratch_free = s;
    pthread_mutex_unlock(&t->ct_scratch_lock);
}

/* Groups equal keys: fills cs_uniq with each distinct key's first index (in
 * order) and links later occurrences through cs_chain. Returns the count. The
 * hash map is sized by this call's n (at most half full), not by the largest
 * batch the scratch ever held: a 4,096-key call clears 32 KiB, even after a
 * call of millions grew the scratch. */
static size_t dedup(cpu_scratch *s, const uint64_t *keys, size_t n)
{
    size_t slots = 1024, n_uniq = 0;
    while (slots < 2 * n)
        slots *= 2;
    size_t mask = slots - 1;   /* slots <= 2·cs_cap: cs_cap is a power of two >= n */
    memset(s->cs_map, 0, slots * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_FAR < n)
            __builtin_prefetch(&s->cs_map[(size_t)ember_mix64(keys[i + PREFETCH_FAR]) & mask], 1, 3);
        size_t h = (size_t)ember_mix64(keys[i]) & mask;
        s->cs_chain[i] = NO_INDEX;
        for (;;) {
            uint32_t e = s->cs_map[h];
            if (e == 0) {
                s->cs_map[h] = (uint32_t)i + 1;
                s->cs_uniq[n_uniq++] = (uint32_t)i;
                s->cs_last[i] = (uint32_t)i;
                break;
            }
            if (keys[e - 1] == keys[i]) {
                uint32_t first = e - 1;
                s->cs_chain[s->cs_last[first]] = (uint32_t)i;
                s->cs_last[first] = (uint32_t)i;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    return n_uniq;
}

static int cpu_apply_gradients(void *impl, const ember_op *op, const uint64_t *keys,
                               size_t n, const float *grads, const uint64_t *scores,
                               ember_error *err)
{
    cpu_table *t = impl;
    uint32_t dim = t->ct_dim;
    cpu_scratch *sc = scratch_get(t, n);
    if (!sc)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of host memory merging %zu gradients", n);
    size_t n_uniq = dedup(sc, keys, n);
    call_counts cc = {0};
    for (size_t u = 0; u < n_uniq; u++) {
        prefetch_walk(t, keys, sc->cs_uniq, u, n_uniq, 1);
        uint32_t i = sc->cs_uniq[u];
        uint64_t key = keys[i];
        const float *g = grads + (size_t)i * dim;
        uint32_t count = 1, last = i;
        if (sc->cs_chain[i] != NO_INDEX) {
            /* Sum in batch order, so every backend adds in the same order. */
            memcpy(sc->cs_sum, g, dim * sizeof(float));
            for (uint32_t k = sc->cs_chain[i]; k != NO_INDEX; k = sc->cs_chain[k]) {
                const float *gk = grads + (size_t)k * dim;
                for (uint32_t j = 0; j < dim; j++)
                    sc->cs_sum[j] += gk[j];
                count++;
                last = k;
            }
            g = sc->cs_sum;
        }
        key_place p = place_of(t, key);
        cpu_bucket *b = &t->ct_buckets[p.bucket];
        int free_slot;
        bucket_lock(b);
        int s = probe_locked(b, key, p, &free_slot);
        int is_new = s < 0;
        uint64_t score = ember_score_next(&op->score, is_new ? 0 : b->cb_scores[s], is_new,
                                          count, custom_of(scores, last), scores != NULL);
        if (is_new) {
            if (admit(t, key))
                s = claim_slot_locked(t, b, p, key, free_slot, score, &cc);
            else
                cc.admission_drops++;
            if (s >= 0)
                init_row(t, key, row_at(t, p.bucket, (unsigned)s));
        }
        if (s >= 0) {
            ember_optim_apply(&t->ct_cfg.optim, row_at(t, p.bucket, (unsigned)s), g, dim);
            b->cb_scores[s] = score;
            set_version_locked(b, (unsigned)s, op->version);
        }
        bucket_unlock(b);
    }
    scratch_put(t, sc);
    counts_commit(t, &cc);
    return EMBER_OK;
}

/* ---- erase, clear, evict ------------------------------------------------- */

static int cpu_erase(void *impl, const uint64_t *keys, size_t n, uint64_t *erased,
                     ember_error *err)
{
    cpu_table *t = impl;
    call_counts cc = {0};
    (void)err;
    for (size_t i = 0; i < n; i++) {
        prefetch_walk(t, keys, NULL, i, n, 0);
        key_place p = place_of(t, keys[i]);
        cpu_bucket *b = &t->ct_buckets[p.bucket];
        int free_slot;
        bucket_lock(b);
        int s = probe_locked(b, keys[i], p, &free_slot);
        if (s >= 0) {
            erase_slot_locked(b, (unsigned)s);
            cc.size_delta--;
        }
        bucket_unlock(b);
    }
    counts_commit(t, &cc);
    if (erased)
        *erased = (uint64_t)(-cc.size_delta);
    return EMBER_OK;
}

static int cpu_clear(void *impl, ember_error *err)
{
    cpu_table *t = impl;
    call_counts cc = {0};
    (void)err;
    for (uint64_t i = 0; i < t->ct_num_buckets; i++) {
        cpu_bucket *b = &t->ct_buckets[i];
        bucket_lock(b);
        cc.size_delta -= b->cb_size;
        b->cb_size = 0;
        memset(b->cb_ctrl, EMBER_CTRL_EMPTY, SLOTS);
        bucket_unlock(b);
    }
    counts_commit(t, &cc);
    return EMBER_OK;
}

/* Erases, bucket by bucket, entries with score < `below`, and then up to
 * `ties` entries with score == `below` (evict_to_size's exact cut). */
/* Erases entries whose score (by_version: version) is below `below`, and `ties`
 * of those equal to it, in bucket order. */
static uint64_t evict_scan(cpu_table *t, uint64_t below, uint64_t ties, int by_version)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < t->ct_num_buckets; i++) {
        cpu_bucket *b = &t->ct_buckets[i];
        bucket_lock(b);
        for (unsigned s = 0; s < SLOTS && b->cb_size; s++) {
            if (!slot_used(b, s))
                continue;
            uint64_t sc = by_version ? b->cb_versions[s] : b->cb_scores[s];
            if (sc < below || (sc == below && ties)) {
                if (sc == below)
                    ties--;
                erase_slot_locked(b, s);
                n++;
            }
        }
        bucket_unlock(b);
    }
    atomic_fetch_sub(&t->ct_size, (int64_t)n);
    atomic_fetch_add(&t->ct_evicted, n);
    return n;
}

static int cpu_evict_below(void *impl, uint64_t score, uint64_t *evicted, ember_error *err)
{
    (void)err;
    uint64_t n = score ? evict_scan(impl, score, 0, 0) : 0;
    if (evicted)
        *evicted = n;
    return EMBER_OK;
}

static int cpu_evict_versions_below(void *impl, uint64_t version, uint64_t *evicted,
                                    ember_error *err)
{
    (void)err;
    uint64_t n = version ? evict_scan(impl, version, 0, 1) : 0;
    if (evicted)
        *evicted = n;
    return EMBER_OK;
}

/* The k-th smallest stored score (0-based), by radix selection one byte at a
 * time from the top: eight passes over the scores, no memory beyond 256 counters.
 * *below = how many stored scores are smaller than it. */
static uint64_t kth_score(cpu_table *t, uint64_t k, uint64_t *below)
{
    uint64_t prefix = 0, prefix_mask = 0, smaller = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        uint64_t hist[256] = {0};
        for (uint64_t i = 0; i < t->ct_num_buckets; i++) {
            cpu_bucket *b = &t->ct_buckets[i];
            bucket_lock(b);
            for (unsigned s = 0; s < SLOTS; s++)
                if (slot_used(b, s) && (b->cb_scores[s] & prefix_mask) == prefix)
                    hist[(b->cb_scores[s] >> shift) & 0xff]++;
            bucket_unlock(b);
        }
        unsigned d = 0;
        while (d < 255 && k >= hist[d]) {
            k -= hist[d];
            smaller += hist[d];
            d++;
        }
        prefix |= (uint64_t)d << shift;
        prefix_mask |= UINT64_C(0xff) << shift;
    }
    *below = smaller;
    return prefix;
}

static int cpu_evict_to_size(void *impl, uint64_t target, uint64_t *evicted,
                             ember_error *err)
{
    cpu_table *t = impl;
    (void)err;
    int64_t size = atomic_load(&t->ct_size);
    uint64_t n = 0;
    if (size > 0 && (uint64_t)size > target) {
        uint64_t excess = (uint64_t)size - target, below;
        uint64_t cut = kth_score(t, excess - 1, &below);
        /* Everything under the cut goes, and as many equal to it as still needed. */
        n = evict_scan(t, cut, excess - below, 0);
    }
    if (evicted)
        *evicted = n;
    return EMBER_OK;
}

/* ---- export -------------------------------------------------------------- */


static inline int passes(const cpu_bucket *b, unsigned s, const ember_export_filter *f)
{
    return slot_used(b, s) && b->cb_scores[s] >= f->min_score &&
           (f->after_version == 0 || b->cb_versions[s] > f->after_version);
}

/* Rows of buckets [*cursor, end) that pass f, whole buckets while max_rows
 * allows; *cursor = the first bucket not read. */
static void export_range(cpu_table *t, const ember_export_filter *f, uint64_t *cursor,
                         uint64_t end, size_t max_rows, uint64_t *keys, float *rows,
                         uint64_t *scores, uint64_t *versions, size_t *n_out)
{
    uint32_t width = f->full_rows ? t->ct_row_floats : t->ct_dim;
    size_t n = 0;
    uint64_t i;
    for (i = *cursor; i < end; i++) {
        cpu_bucket *b = &t->ct_buckets[i];
        if (f->after_version &&
            atomic_load_explicit(&b->cb_max_version, memory_order_acquire) <= f->after_version)
            continue;
        bucket_lock(b);
        size_t hits = 0;
        for (unsigned s = 0; s < SLOTS; s++)
            hits += (size_t)passes(b, s, f);
        if (n + hits > max_rows) {
            bucket_unlock(b);
            break;
        }
        for (unsigned s = 0; s < SLOTS && hits; s++) {
            if (!passes(b, s, f))
                continue;
            keys[n] = b->cb_keys[s];
            memcpy(rows + n * width, row_at(t, i, s), (size_t)width * sizeof(float));
            if (scores)
                scores[n] = b->cb_scores[s];
            if (versions)
                versions[n] = b->cb_versions[s];
            n++;
            hits--;
        }
        bucket_unlock(b);
    }
    *cursor = i;
    *n_out = n;
}

static int cpu_export(void *impl, const ember_export_filter *f, uint64_t *cursor,
                      size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                      uint64_t *versions, size_t *n_out, ember_error *err)
{
    cpu_table *t = impl;
    (void)err;
    export_range(t, f, cursor, t->ct_num_buckets, max_rows, keys, rows, scores, versions,
                 n_out);
    return EMBER_OK;
}

static int cpu_export_buckets(void *impl, uint64_t first, uint64_t count, uint64_t *keys,
                              float *rows, uint64_t *scores, uint64_t *versions, size_t *n_out,
                              ember_error *err)
{
    static const ember_export_filter all = {0, 0, 1};
    uint64_t cursor = first;
    (void)err;
    /* room for count whole buckets: the range is read to its end */
    export_range(impl, &all, &cursor, first + count, (size_t)count * SLOTS, keys, rows, scores,
                 versions, n_out);
    return EMBER_OK;
}

static uint64_t cpu_export_end(const void *impl)
{
    return ((const cpu_table *)impl)->ct_num_buckets;
}

/* ---- sizes and stats ----------------------------------------------------- */

static uint64_t cpu_size(const void *impl)
{
    int64_t s = atomic_load(&((cpu_table *)impl)->ct_size);
    return s > 0 ? (uint64_t)s : 0;
}

static uint64_t cpu_capacity(const void *impl)
{
    return ((const cpu_table *)impl)->ct_num_buckets * SLOTS;
}

static void cpu_stats(const void *impl, ember_table_stats *out)
{
    cpu_table *t = (cpu_table *)impl;
    out->size = cpu_size(t);
    out->capacity = cpu_capacity(t);
    out->num_buckets = t->ct_num_buckets;
    out->evictions = atomic_load(&t->ct_evictions);
    out->evicted = atomic_load(&t->ct_evicted);
    out->insert_refused = atomic_load(&t->ct_refused);
    out->admission_drops = atomic_load(&t->ct_admission_drops);
    out->slots_host = cpu_capacity(t);
    out->bytes_host = sizeof *t + t->ct_buckets_bytes + t->ct_rows_bytes +
                      (t->ct_admission ? ember_admission_bytes(t->ct_admission) : 0);
}

static void cpu_footprint(const ember_table_config *c, uint64_t *bytes_host,
                          uint64_t *bytes_device)
{
    uint64_t nb = (c->capacity + SLOTS - 1) / SLOTS;
    uint64_t rf = ember_row_floats(c->optim.kind, c->dim);
    *bytes_host = sizeof(cpu_table) + nb * sizeof(cpu_bucket) +
                  nb * SLOTS * rf * sizeof(float) +
                  (c->admission.min_count >= 2 ? ember_admission_footprint(c->admission.sketch_width)
                                               : 0);
    *bytes_device = 0;
}

static const ember_table_backend cpu_backend = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .find = cpu_find,
    .find_or_insert = cpu_find_or_insert,
    .insert_or_assign = cpu_insert_or_assign,
    .assign = cpu_assign,
    .accum = cpu_accum,
    .apply_gradients = cpu_apply_gradients,
    .erase = cpu_erase,
    .clear = cpu_clear,
    .export_rows = cpu_export,
    .export_end = cpu_export_end,
    .export_buckets = cpu_export_buckets,
    .import_rows = cpu_import,
    .evict_below = cpu_evict_below,
    .evict_to_size = cpu_evict_to_size,
    .evict_versions_below = cpu_evict_versions_below,
    .size = cpu_size,
    .capacity = cpu_capacity,
    .stats = cpu_stats,
    .footprint = cpu_footprint,
};

const ember_table_backend *ember_table_cpu_backend(void)
{
    return &cpu_backend;
}

/*
 * table.c — the backend-neutral half of the table: configuration, validation of
 * every call before anything is written, versions and score clocks, dispatch.
 */
#define _GNU_SOURCE
#include "table.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "table_backend.h"

/* TTL: which version was current when, one mark per expire call, oldest first. */
#define TTL_MARKS 256u
typedef struct ttl_mark {
    uint64_t at_ns;
    uint64_t version;
} ttl_mark;

/* Writing calls tracked at once for the stable version; more wait for a slot. */
#define OP_SLOTS 64u
#define OP_PENDING UINT64_MAX

struct ember_table {
    const ember_table_backend *tb_backend;
    void *tb_impl;                     /* replaced by growth, under tb_grow_lock */
    ember_table_config tb_config;
    uint32_t tb_row_floats;
    _Atomic uint64_t tb_version;       /* last version handed to a writing call */
    _Atomic uint64_t tb_clock_ns;      /* last LRU clock reading: never goes back */
    _Atomic uint32_t tb_epoch;
    _Atomic uint64_t tb_nonfinite_zeroed;
    /* Online growth (only when tb_grow_max > 0): every call holds tb_grow_lock
     * shared; a doubling holds it exclusive. */
    uint32_t tb_grow_max;              /* doublings the config allows */
    _Atomic uint32_t tb_grows;         /* doublings done */
    _Atomic int tb_grow_stuck;         /* a doubling failed: wait for reserve/clear */
    _Atomic uint64_t tb_grow_failures;
    _Atomic uint64_t tb_grow_pause_ns;
    _Atomic uint64_t tb_inflight;      /* keys of inserting calls not yet ended */
    /* Versions of writing calls in progress (0: a free slot, OP_PENDING: taken,
     * its version not yet drawn): ember_table_stable_version's low-water mark. */
    _Atomic uint64_t tb_writing[OP_SLOTS];
    ember_table_stats tb_carried;      /* counters of the backends growth replaced */
    pthread_rwlock_t tb_grow_lock;
    /* TTL */
    _Atomic uint64_t tb_ttl_s;
    _Atomic uint64_t tb_expired;
    pthread_mutex_t tb_ttl_lock;       /* one expire at a time; guards the marks */
    ttl_mark tb_marks[TTL_MARKS];
    unsigned tb_mark_head, tb_mark_count;
    /* Snapshots (table.h): the one running (NULL: none), read by writers under
     * the gate (tb_grow_lock shared for a growing table, tb_snap_lock shared
     * for a fixed-size one) and changed under it exclusive. */
    _Atomic(struct ember_table_snapshot *) tb_snap;
    pthread_rwlock_t tb_snap_lock;
    pthread_mutex_t tb_snap_mu;        /* one snapshot at a time: tb_snap_busy */
    pthread_cond_t tb_snap_cv;
    int tb_snap_busy;
};

/* A bucket a snapshot copied before a write touched it. */
typedef struct snap_rows {
    size_t n;
    uint64_t *keys, *scores, *versions;
    float *rows;
} snap_rows;

/* side[b], the state of bucket b for the snapshot:
 *   NULL          not read and not copied: the table holds it as at the cut, and
 *                 no writer may change it;
 *   SNAP_READING  the reader claimed it and is reading it from the table: a
 *                 writer waits for SNAP_DONE;
 *   SNAP_DONE     read: writers change it freely;
 *   else          the copy a writer took before changing it: the reader reads
 *                 that (and sets SNAP_DONE).
 * NULL leaves only by a compare-and-swap (the reader's claim, a writer's copy),
 * so the two never both win a bucket. */
#define SNAP_DONE ((snap_rows *)(uintptr_t)1)
#define SNAP_READING ((snap_rows *)(uintptr_t)2)
#define SNAP_STRIPES 256u

struct ember_table_snapshot {
    ember_table *t;
    uint64_t nb;                       /* the backend's buckets, fixed while it runs */
    uint64_t cut, size, cut_epoch;
    uint32_t epoch;
    _Atomic(snap_rows *) *side;
    /* writers copying bucket b hold stripe[b % SNAP_STRIPES] (one at a time), so
     * that two do not copy one bucket; the reader takes none */
    pthread_mutex_t stripe[SNAP_STRIPES];
    snap_rows *scratch[SNAP_STRIPES];     /* a bucket's room, under its stripe */
};

/* Largest batch one call accepts: indices fit in 32 bits inside backends. */
#define EMBER_BATCH_MAX (UINT64_C(1) << 31)

void ember_table_config_init(ember_table_config *c)
{
    memset(c, 0, sizeof *c);
    EMBER_TABLE_DEFAULTS(c, optim, init);
    c->nonfinite = EMBER_NONFINITE_REJECT;
}

static int finite_nonneg(float x)
{
    return isfinite(x) && x >= 0.0f;
}

int ember_table_config_validate(const ember_table_config *c, ember_error *err)
{
    const ember_optim_config *o = &c->optim;
    if (c->dim < 1 || c->dim > EMBER_DIM_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "dim %u out of range 1..%u", c->dim, EMBER_DIM_MAX);
    if (c->capacity < 1 || c->capacity > EMBER_CAPACITY_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "capacity %llu out of range 1..%llu",
                               (unsigned long long)c->capacity,
                               (unsigned long long)EMBER_CAPACITY_MAX);
    if (c->score_policy < EMBER_SCORE_LRU || c->score_policy > EMBER_SCORE_CUSTOM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown score policy %d",
                               c->score_policy);
    if (c->nonfinite != EMBER_NONFINITE_REJECT && c->nonfinite != EMBER_NONFINITE_ZERO)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown non-finite policy %d", c->nonfinite);
    if (o->kind < EMBER_OPTIM_SGD || o->kind > EMBER_OPTIM_FTRL)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown optimizer %d", o->kind);
    if (!(isfinite(o->lr) && o->lr > 0.0f))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer lr must be finite and > 0");
    if ((o->kind == EMBER_OPTIM_ADAGRAD || o->kind == EMBER_OPTIM_ADAM) &&
        !(isfinite(o->eps) && o->eps > 0.0f))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer eps must be finite and > 0");
    if ((o->kind == EMBER_OPTIM_ADAGRAD || o->kind == EMBER_OPTIM_FTRL) &&
        !finite_nonneg(o->initial_accumulator))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "optimizer initial_accumulator must be finite and >= 0");
    if (o->kind == EMBER_OPTIM_ADAM) {
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f && o->beta2 >= 0.0f && o->beta2 < 1.0f))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "adam beta1 and beta2 must be in [0, 1)");
        if (!finite_nonneg(o->weight_decay))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "adam weight_decay must be finite and >= 0");
    }
    if (o->kind == EMBER_OPTIM_FTRL) {
        if (!finite_nonneg(o->l1) || !finite_nonneg(o->l2) || !finite_nonneg(o->beta))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl l1, l2 and beta must be finite and >= 0");
        if (!(isfinite(o->lr_power) && o->lr_power <= 0.0f))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl lr_power must be finite and <= 0");
        if (o->lr_power < 0.0f && o->initial_accumulator <= 0.0f)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "ftrl with lr_power < 0 needs initial_accumulator > 0");
    }
    switch (c->init.kind) {
    case EMBER_INIT_ZEROS:
        break;
    case EMBER_INIT_CONSTANT:
        if (!isfinite(c->init.a))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "constant initializer value must be finite");
        break;
    case EMBER_INIT_UNIFORM:
        if (!(isfinite(c->init.a) && isfinite(c->init.b) && c->init.a <= c->init.b))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "uniform initializer needs finite low <= high");
        break;
    case EMBER_INIT_NORMAL:
    case EMBER_INIT_TRUNCATED_NORMAL:
        if (!(isfinite(c->init.a) && finite_nonneg(c->init.b)))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "normal initializer needs a finite mean and stddev >= 0");
        break;
    default:
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown initializer %d",
                               c->init.kind);
    }
    if (c->max_capacity > EMBER_CAPACITY_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "max_capacity %llu above %llu",
                               (unsigned long long)c->max_capacity,
                               (unsigned long long)EMBER_CAPACITY_MAX);
    if (!(c->max_load_factor == 0.0f ||
          (c->max_load_factor >= EMBER_GROW_LOAD_FACTOR_MIN && c->max_load_factor <= 1.0f)))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "max_load_factor must be in [%.2f, 1] (0: the default %.2f)",
                               (double)EMBER_GROW_LOAD_FACTOR_MIN,
                               (double)EMBER_GROW_LOAD_FACTOR_DEFAULT);
    if (c->ttl_seconds > EMBER_TTL_MAX_SECONDS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "ttl_seconds %llu above %llu (a negative value sent as "
                               "unsigned?)",
                               (unsigned long long)c->ttl_seconds,
                               (unsigned long long)EMBER_TTL_MAX_SECONDS);
    if (c->admission.sketch_width > (UINT32_C(1) << 30))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "admission sketch_width %u above 2^30",
                               c->admission.sketch_width);
    return EMBER_OK;
}

uint32_t ember_table_config_row_floats(const ember_table_config *c)
{
    return ember_row_floats(c->optim.kind, c->dim);
}

uint64_t ember_table_config_capacity_slots(const ember_table_config *c)
{
    return (c->capacity + EMBER_BUCKET_SLOTS - 1) / EMBER_BUCKET_SLOTS * EMBER_BUCKET_SLOTS;
}

/* Doublings a table of config c may make: capacity × 2^k ≤ max_capacity. */
static uint32_t grow_max(const ember_table_config *c)
{
    uint64_t slots = ember_table_config_capacity_slots(c);
    uint32_t k = 0;
    while (slots <= c->max_capacity / 2 && slots * 2 <= EMBER_CAPACITY_MAX) {
        slots *= 2;
        k++;
    }
    return k;
}

uint64_t ember_table_config_max_slots(const ember_table_config *c)
{
    return ember_table_config_capacity_slots(c) << grow_max(c);
}

const char *ember_table_backend_name(const ember_table_backend *b)
{
    return b ? b->name : "cpu";
}

int ember_table_create(const ember_table_config *c, const ember_table_backend *backend,
                       ember_table **out, ember_error *err)
{
    int rc = ember_table_config_validate(c, err);
    if (rc)
        return rc;
    if (!backend)
        backend = ember_table_cpu_backend();
    ember_table *t = calloc(1, sizeof *t);
    if (!t)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    if (c->ttl_seconds && !backend->evict_versions_below) {
        free(t);
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "backend %s cannot expire rows: ttl_seconds must be 0",
                               backend->name);
    }
    t->tb_backend = backend;
    t->tb_config = *c;
    t->tb_row_floats = ember_table_config_row_floats(c);
    t->tb_grow_max = grow_max(c);
    atomic_init(&t->tb_ttl_s, c->ttl_seconds);
    pthread_mutex_init(&t->tb_ttl_lock, NULL);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* A waiting doubling holds new calls back, or a busy table would starve it. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&t->tb_grow_lock, &attr);
    pthread_rwlock_init(&t->tb_snap_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&t->tb_snap_mu, NULL);
    pthread_cond_init(&t->tb_snap_cv, NULL);
    rc = backend->create(c, &t->tb_impl, err);
    if (rc) {
        pthread_rwlock_destroy(&t->tb_snap_lock);
        pthread_mutex_destroy(&t->tb_snap_mu);
        pthread_cond_destroy(&t->tb_snap_cv);
        pthread_rwlock_destroy(&t->tb_grow_lock);
        pthread_mutex_destroy(&t->tb_ttl_lock);
        free(t);
        return rc;
    }
    *out = t;
    return EMBER_OK;
}

void ember_table_destroy(ember_table *t)
{
    if (!t)
        return;
    t->tb_backend->destroy(t->tb_impl);
    pthread_rwlock_destroy(&t->tb_snap_lock);
    pthread_mutex_destroy(&t->tb_snap_mu);
    pthread_cond_destroy(&t->tb_snap_cv);
    pthread_rwlock_destroy(&t->tb_grow_lock);
    pthread_mutex_destroy(&t->tb_ttl_lock);
    free(t);
}

/* ---- online growth ------------------------------------------------------- */

/* Every call that touches the backend runs between enter and leave: shared with
 * other calls, never during a doubling. Free for tables that cannot grow. */
static void enter(const ember_table *t)
{
    if (t->tb_grow_max)
        pthread_rwlock_rdlock((pthread_rwlock_t *)&t->tb_grow_lock);
}

static void leave(const ember_table *t)
{
    if (t->tb_grow_max)
        pthread_rwlock_unlock((pthread_rwlock_t *)&t->tb_grow_lock);
}

static float grow_load_factor(const ember_table *t)
{
    float f = t->tb_config.max_load_factor;
    return f > 0.0f ? f : EMBER_GROW_LOAD_FACTOR_DEFAULT;
}

/* Whether `keys` keys would pass the load factor at the current capacity, with a
 * doubling left to make. Under tb_grow_lock (either way). */
static int wants_growth(const ember_table *t, uint64_t keys)
{
    return atomic_load(&t->tb_grows) < t->tb_grow_max &&
           (double)keys > (double)grow_load_factor(t) *
                              (double)t->tb_backend->capacity(t->tb_impl);
}

static uint64_t now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Rows moved per step of a doubling. */
#define GROW_CHUNK_ROWS 4096u

/* One doubling: a backend table of twice the buckets gets every row, then
 * replaces the old one. Holds tb_grow_lock exclusive. On failure nothing
 * changed. */
static int grow_once(ember_table *t, ember_error *err)
{
    const ember_table_backend *b = t->tb_backend;
    ember_table_config c = t->tb_config;
    c.capacity = b->capacity(t->tb_impl) * 2;
    void *fresh = NULL;
    uint64_t *keys = malloc(GROW_CHUNK_ROWS * sizeof *keys);
    uint64_t *scores = malloc(GROW_CHUNK_ROWS * sizeof *scores);
    uint64_t *versions = malloc(GROW_CHUNK_ROWS * sizeof *versions);
    float *rows = malloc((size_t)GROW_CHUNK_ROWS * t->tb_row_floats * sizeof *rows);
    int rc = keys && scores && versions && rows
                 ? EMBER_OK
                 : ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    if (!rc)
        rc = b->create(&c, &fresh, err);
    static const ember_export_filter all = {0, 0, 1};
    uint64_t cursor = 0, end = b->export_end(t->tb_impl);
    while (!rc && cursor < end) {
        size_t n = 0;
        rc = b->export_rows(t->tb_impl, &all, &cursor, GROW_CHUNK_ROWS, keys, rows, scores,
                            versions, &n, err);
        if (!rc && n)
            rc = b->import_rows(fresh, keys, n, rows, scores, versions, err);
    }
    if (!rc) {
        ember_table_stats old;
        memset(&old, 0, sizeof old);
        b->stats(t->tb_impl, &old);
        t->tb_carried.evictions += old.evictions;
        t->tb_carried.evicted += old.evicted;
        t->tb_carried.insert_refused += old.insert_refused;
        t->tb_carried.admission_drops += old.admission_drops;
        b->destroy(t->tb_impl);
        t->tb_impl = fresh;
        atomic_fetch_add(&t->tb_grows, 1);
    } else if (fresh) {
        b->destroy(fresh);
    }
    free(keys);
    free(scores);
    free(versions);
    free(rows);
    return rc;
}

/* The keys the table may soon hold: those stored and those of every inserting
 * call under way (counted before it enters, so concurrent calls cannot each
 * pass the check and together overfill the table). */
static uint64_t keys_ahead(const ember_table *t)
{
    return t->tb_backend->size(t->tb_impl) + atomic_load(&((ember_table *)t)->tb_inflight);
}

/* Doubles until `keys` keys fit (0: keys_ahead, as it stands once the calls
 * under way have left). Takes tb_grow_lock exclusive; the caller holds no part
 * of it. `forced`: try even after a failure (reserve). */
static int grow_to_fit(ember_table *t, uint64_t keys, int forced, ember_error *err)
{
    pthread_rwlock_wrlock(&t->tb_grow_lock);
    uint64_t t0 = now_mono_ns();
    int rc = EMBER_OK, grew = 0;
    if (forced)
        atomic_store(&t->tb_grow_stuck, 0);
    /* not while a snapshot runs: its buckets are numbered at this size (the
     * first inserting call after it ends grows the table) */
    while (!atomic_load(&t->tb_snap) && !atomic_load(&t->tb_grow_stuck) &&
           wants_growth(t, keys ? keys : keys_ahead(t))) {
        ember_error local;
        rc = grow_once(t, err ? err : &local);
        if (rc) {
            atomic_store(&t->tb_grow_stuck, 1);
            atomic_fetch_add(&t->tb_grow_failures, 1);
            break;
        }
        grew = 1;
    }
    if (grew)
        atomic_store(&t->tb_grow_pause_ns, now_mono_ns() - t0);
    pthread_rwlock_unlock(&t->tb_grow_lock);
    return rc;
}

/* enter() for a call that may insert n keys: counts them as under way, and
 * first grows the table if they, the stored keys and the other calls' under way
 * would pass the load factor. A failed doubling is counted, not the call's
 * error. Returns what insert_leave takes back. */
static uint64_t insert_enter(ember_table *t, size_t n)
{
    if (!t->tb_grow_max)
        return 0;
    atomic_fetch_add(&t->tb_inflight, n);
    if (!atomic_load(&t->tb_grow_stuck) && !atomic_load(&t->tb_snap)) {
        enter(t);
        int want = wants_growth(t, keys_ahead(t));
        leave(t);
        if (want)
            (void)grow_to_fit(t, 0, 0, NULL);
    }
    enter(t);
    return n;
}

static void insert_leave(ember_table *t, uint64_t counted)
{
    leave(t);
    if (counted)
        atomic_fetch_sub(&t->tb_inflight, counted);
}

int ember_table_reserve(ember_table *t, uint64_t keys, ember_error *err)
{
    if (!t->tb_grow_max)
        return EMBER_OK;
    return grow_to_fit(t, keys, 1, err);
}

/* ---- snapshots (table.h) ------------------------------------------------- */

/* The lock whose exclusive hold keeps every writing call out: a growing
 * table's calls hold tb_grow_lock shared already, a fixed-size table's writers
 * take tb_snap_lock shared (reads take neither). */
static pthread_rwlock_t *gate_lock(ember_table *t)
{
    return t->tb_grow_max ? &t->tb_grow_lock : &t->tb_snap_lock;
}

static snap_rows *snap_rows_alloc(size_t n, uint32_t rf)
{
    snap_rows *r = malloc(sizeof *r + n * (3 * sizeof(uint64_t) + rf * sizeof(float)));
    if (!r)
        return NULL;
    r->n = n;
    r->keys = (uint64_t *)(r + 1);
    r->scores = r->keys + n;
    r->versions = r->scores + n;
    r->rows = (float *)(r->versions + n);
    return r;
}

/* Copies bucket b into the side buffer unless the snapshot has it already
 * (read, being read, or copied by another writer). */
static int snap_copy(ember_table *t, ember_table_snapshot *s, uint64_t b, ember_error *err)
{
    pthread_mutex_t *m = &s->stripe[b % SNAP_STRIPES];
    int rc = EMBER_OK;
    pthread_mutex_lock(m);
    if (!atomic_load_explicit(&s->side[b], memory_order_acquire)) {
        uint32_t rf = t->tb_row_floats;
        snap_rows **sc = &s->scratch[b % SNAP_STRIPES], *full, *r = NULL;
        if (!*sc) /* kept for the stripe's next copy: no allocation per bucket */
            *sc = snap_rows_alloc(EMBER_BUCKET_SLOTS, rf);
        full = *sc;
        size_t n = 0;
        rc = full ? t->tb_backend->export_buckets(t->tb_impl, b, 1, full->keys, full->rows,
                                                  full->scores, full->versions, &n, err)
                  : EMBER_RESOURCE_EXHAUSTED;
        if (!rc && !(r = snap_rows_alloc(n, rf)))
            rc = EMBER_RESOURCE_EXHAUSTED;
        if (rc == EMBER_RESOURCE_EXHAUSTED)
            ember_error_set(err, rc, "out of host memory for a snapshot's copy of a bucket");
        if (!rc) {
            memcpy(r->keys, full->keys, n * sizeof *r->keys);
            memcpy(r->scores, full->scores, n * sizeof *r->scores);
            memcpy(r->versions, full->versions, n * sizeof *r->versions);
            memcpy(r->rows, full->rows, n * rf * sizeof *r->rows);
            snap_rows *expect = NULL;
            if (!atomic_compare_exchange_strong_explicit(&s->side[b], &expect, r,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                free(r); /* the reader claimed it meanwhile: its read is the cut's */
        }
    }
    pthread_mutex_unlock(m);
    return rc;
}

/* Before a writing call changes keys[n] (keys NULL: any bucket): the
 * snapshot's copy of every bucket it may touch that the snapshot has not read,
 * and a wait for those the reader is reading. */
static int snap_prepare(ember_table *t, ember_table_snapshot *s, const uint64_t *keys,
                        size_t n, ember_error *err)
{
    uint64_t count = keys ? n : s->nb;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t b = keys ? ember_hash_bucket(ember_key_hash(keys[i]), s->nb) : i;
        snap_rows *r = atomic_load_explicit(&s->side[b], memory_order_acquire);
        if (!r) {
            int rc = snap_copy(t, s, b, err);
            if (rc)
                return rc;
            r = atomic_load_explicit(&s->side[b], memory_order_acquire);
        }
        while (r == SNAP_READING) { /* one backend call of the reader's */
            sched_yield();
            r = atomic_load_explicit(&s->side[b], memory_order_acquire);
        }
    }
    return EMBER_OK;
}

/* Raised at every cut, under the gates of the tables cut; each writing call
 * notes in its thread the value it ran under (ember_table_thread_cut_epoch).
 * A deliberate process-wide count (STYLE.md asks for none in storage/): it is
 * only ever compared for order, so tables side by side stay independent, and
 * one count orders a cut of several tables at once. */
static _Atomic uint64_t g_cut_epoch = 1;
static _Thread_local uint64_t t_cut_epoch;

uint64_t ember_table_thread_cut_epoch(void) { return t_cut_epoch; }

/* A writing call, after enter/insert_enter, before it changes anything: holds
 * the gate until wgate_leave; with a snapshot running, first has it copy what
 * the call may change. On error the gate is left and nothing changed. */
static int wgate_enter(ember_table *t, const uint64_t *keys, size_t n, ember_error *err)
{
    if (!t->tb_grow_max)
        pthread_rwlock_rdlock(&t->tb_snap_lock);
    ember_table_snapshot *s = atomic_load_explicit(&t->tb_snap, memory_order_acquire);
    t_cut_epoch = atomic_load_explicit(&g_cut_epoch, memory_order_relaxed);
    if (__builtin_expect(s != NULL, 0)) {
        int rc = snap_prepare(t, s, keys, n, err);
        if (rc) {
            if (!t->tb_grow_max)
                pthread_rwlock_unlock(&t->tb_snap_lock);
            return rc;
        }
    }
    return EMBER_OK;
}

static void wgate_leave(ember_table *t)
{
    if (!t->tb_grow_max)
        pthread_rwlock_unlock(&t->tb_snap_lock);
}

static void snap_free(ember_table_snapshot *s)
{
    for (uint64_t b = 0; s->side && b < s->nb; b++) {
        snap_rows *r = atomic_load_explicit(&s->side[b], memory_order_relaxed);
        if (r != SNAP_DONE && r != SNAP_READING)
            free(r);
    }
    free((void *)s->side);
    for (unsigned i = 0; i < SNAP_STRIPES; i++) {
        pthread_mutex_destroy(&s->stripe[i]);
        free(s->scratch[i]);
    }
    ember_table *t = s->t;
    free(s);
    pthread_mutex_lock(&t->tb_snap_mu);
    t->tb_snap_busy = 0;
    pthread_cond_broadcast(&t->tb_snap_cv);
    pthread_mutex_unlock(&t->tb_snap_mu);
}

static int by_table(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)(*(ember_table_snapshot *const *)a)->t;
    uintptr_t y = (uintptr_t)(*(ember_table_snapshot *const *)b)->t;
    return x < y ? -1 : x > y;
}

int ember_table_snapshot_begin_many(ember_table *const *ts, size_t n,
                                    void (*at_cut)(void *arg, uint64_t cut_epoch),
                                    void *arg, ember_table_snapshot **out, ember_error *err)
{
    if (!ts || !out || !n)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "snapshot needs tables and out");
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        if (!ts[i])
            return ember_error_set(err, EMBER_INVALID_ARGUMENT, "snapshot of a NULL table");
        for (size_t j = 0; j < i; j++)
            if (ts[j] == ts[i])
                return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                       "snapshot of one table twice in one cut");
    }
    ember_table_snapshot **v = calloc(n, sizeof *v);
    int oom = !v;
    for (size_t i = 0; !oom && i < n; i++) {
        if (!(v[i] = calloc(1, sizeof *v[i])))
            oom = 1;
        else
            v[i]->t = ts[i];
    }
    if (oom) {
        for (size_t i = 0; v && i < n; i++)
            free(v[i]);
        free(v);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    /* one order for every multi-table cut: no two wait on each other */
    qsort(v, n, sizeof *v, by_table);
    for (size_t i = 0; i < n; i++) {
        ember_table *t = v[i]->t;
        pthread_mutex_lock(&t->tb_snap_mu);
        while (t->tb_snap_busy)
            pthread_cond_wait(&t->tb_snap_cv, &t->tb_snap_mu);
        t->tb_snap_busy = 1;
        pthread_mutex_unlock(&t->tb_snap_mu);
        for (unsigned k = 0; k < SNAP_STRIPES; k++)
            pthread_mutex_init(&v[i]->stripe[k], NULL);
        /* the bucket map is sized before the writers are held back, so that
         * their pause stays short; again under the lock if the table grew */
        enter(t);
        v[i]->nb = t->tb_backend->export_end(t->tb_impl);
        leave(t);
        v[i]->side = calloc(v[i]->nb ? v[i]->nb : 1, sizeof *v[i]->side);
        oom |= !v[i]->side;
    }
    for (size_t i = 0; i < n; i++)
        pthread_rwlock_wrlock(gate_lock(v[i]->t));
    for (size_t i = 0; !oom && i < n; i++) {
        ember_table *t = v[i]->t;
        uint64_t nb = t->tb_backend->export_end(t->tb_impl);
        if (nb != v[i]->nb) {
            free((void *)v[i]->side);
            v[i]->nb = nb;
            v[i]->side = calloc(nb ? nb : 1, sizeof *v[i]->side);
            oom |= !v[i]->side;
        }
    }
    if (!oom) {
        /* the cut: no writing call of any of the tables runs */
        uint64_t epoch = atomic_fetch_add(&g_cut_epoch, 1) + 1;
        for (size_t i = 0; i < n; i++) {
            ember_table *t = v[i]->t;
            v[i]->cut = atomic_load(&t->tb_version);
            v[i]->epoch = atomic_load(&t->tb_epoch);
            v[i]->size = t->tb_backend->size(t->tb_impl);
            v[i]->cut_epoch = epoch;
        }
        if (at_cut)
            at_cut(arg, epoch);
        for (size_t i = 0; i < n; i++)
            atomic_store(&v[i]->t->tb_snap, v[i]);
    }
    for (size_t i = n; i-- > 0;)
        pthread_rwlock_unlock(gate_lock(v[i]->t));
    if (oom) {
        for (size_t i = 0; i < n; i++)
            snap_free(v[i]);
        free(v);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of host memory for a snapshot's bucket map");
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (v[j]->t == ts[i])
                out[i] = v[j];
    free(v);
    return EMBER_OK;
}

int ember_table_snapshot_begin(ember_table *t, void (*at_cut)(void *arg, uint64_t cut_epoch),
                               void *arg, ember_table_snapshot **out, ember_error *err)
{
    if (!t || !out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "snapshot needs a table and out");
    return ember_table_snapshot_begin_many(&t, 1, at_cut, arg, out, err);
}

uint64_t ember_table_snapshot_cut_epoch(const ember_table_snapshot *s) { return s->cut_epoch; }
uint64_t ember_table_snapshot_cut(const ember_table_snapshot *s) { return s->cut; }
uint32_t ember_table_snapshot_epoch(const ember_table_snapshot *s) { return s->epoch; }
uint64_t ember_table_snapshot_size(const ember_table_snapshot *s) { return s->size; }
uint64_t ember_table_snapshot_end_cursor(const ember_table_snapshot *s) { return s->nb; }

int ember_table_snapshot_export(ember_table_snapshot *s, uint64_t *cursor, size_t max_rows,
                                uint64_t *keys, float *rows, uint64_t *scores,
                                uint64_t *versions, size_t *n_out, ember_error *err)
{
    if (n_out)
        *n_out = 0;
    if (!s || !cursor || !n_out || !keys || !rows)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "snapshot export needs a snapshot, cursor, keys, rows and n_out");
    if (max_rows < EMBER_BUCKET_SLOTS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "export max_rows %zu is below one bucket (%u)", max_rows,
                               EMBER_BUCKET_SLOTS);
    if (*cursor > s->nb)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "snapshot cursor %llu is past the end",
                               (unsigned long long)*cursor);
    ember_table *t = s->t;
    uint32_t rf = t->tb_row_floats;
    uint64_t b = *cursor;
    size_t n = 0;
    int rc = EMBER_OK;
    /* No growth while the snapshot runs: the backend and its buckets stay. A
     * run of buckets no writer has copied is claimed (SNAP_READING) and read from
     * the table in one backend call (one kernel on a GPU); a copied bucket is
     * read from its copy. The reader holds no lock. */
    while (b < s->nb && n + EMBER_BUCKET_SLOTS <= max_rows) {
        uint64_t room = (max_rows - n) / EMBER_BUCKET_SLOTS, e = b;
        if (room > s->nb - b)
            room = s->nb - b;
        for (; e < b + room; e++) {
            snap_rows *expect = NULL;
            if (!atomic_compare_exchange_strong_explicit(&s->side[e], &expect, SNAP_READING,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                break; /* copied (or read already): ends the run */
        }
        size_t k = 0;
        if (e > b) {
            rc = t->tb_backend->export_buckets(t->tb_impl, b, e - b, keys + n, rows + n * rf,
                                               scores ? scores + n : NULL,
                                               versions ? versions + n : NULL, &k, err);
            /* done either way: on an error the snapshot is given up, and writers
             * must not wait for it */
            for (uint64_t i = b; i < e; i++)
                atomic_store_explicit(&s->side[i], SNAP_DONE, memory_order_release);
        } else {
            snap_rows *r = atomic_exchange_explicit(&s->side[b], SNAP_DONE, memory_order_acq_rel);
            e = b + 1;
            if (r != SNAP_DONE) {
                k = r->n;
                memcpy(keys + n, r->keys, k * sizeof *keys);
                memcpy(rows + n * rf, r->rows, k * rf * sizeof *rows);
                if (scores)
                    memcpy(scores + n, r->scores, k * sizeof *scores);
                if (versions)
                    memcpy(versions + n, r->versions, k * sizeof *versions);
                free(r);
            }
        }
        if (rc)
            break;
        n += k;
        b = e;
    }
    *cursor = b;
    *n_out = n;
    return rc;
}

void ember_table_snapshot_end(ember_table_snapshot *s)
{
    if (!s)
        return;
    ember_table *t = s->t;
    /* writers that saw it are out once the gate is had exclusive */
    pthread_rwlock_wrlock(gate_lock(t));
    atomic_store(&t->tb_snap, NULL);
    pthread_rwlock_unlock(gate_lock(t));
    snap_free(s);
}

/* Export cursors count buckets of the largest size the table can grow to; the
 * backend's count buckets of its current size (hash.h: bucket b of B is buckets
 * 2b and 2b + 1 of 2B). */
static unsigned cursor_shift(const ember_table *t)
{
    return t->tb_grow_max - atomic_load(&t->tb_grows);
}

const ember_table_config *ember_table_config_of(const ember_table *t) { return &t->tb_config; }
const ember_table_backend *ember_table_backend_of(const ember_table *t) { return t->tb_backend; }
uint32_t ember_table_dim(const ember_table *t) { return t->tb_config.dim; }
uint32_t ember_table_row_floats(const ember_table *t) { return t->tb_row_floats; }
void *ember_table_impl(ember_table *t) { return t->tb_impl; }

uint64_t ember_table_size(const ember_table *t)
{
    enter(t);
    uint64_t n = t->tb_backend->size(t->tb_impl);
    leave(t);
    return n;
}

uint64_t ember_table_capacity(const ember_table *t)
{
    enter(t);
    uint64_t n = t->tb_backend->capacity(t->tb_impl);
    leave(t);
    return n;
}

uint64_t ember_table_export_end(const ember_table *t)
{
    enter(t);
    uint64_t end = t->tb_backend->export_end(t->tb_impl) << cursor_shift(t);
    leave(t);
    return end;
}

void ember_table_set_epoch(ember_table *t, uint32_t epoch)
{
    atomic_store(&t->tb_epoch, epoch);
}

uint32_t ember_table_epoch(const ember_table *t)
{
    return atomic_load(&t->tb_epoch);
}

uint32_t ember_table_raise_epoch(ember_table *t, uint32_t epoch)
{
    uint32_t old = atomic_load(&t->tb_epoch);
    while (old < epoch && !atomic_compare_exchange_weak(&t->tb_epoch, &old, epoch))
        ;
    return old;
}

int ember_table_footprint(const ember_table_config *c, const ember_table_backend *backend,
                          uint64_t *bytes_host, uint64_t *bytes_device, ember_error *err)
{
    int rc = ember_table_config_validate(c, err);
    if (rc)
        return rc;
    if (!backend)
        backend = ember_table_cpu_backend();
    uint64_t host = 0, device = 0;
    backend->footprint(c, &host, &device);
    if (bytes_host)
        *bytes_host = host + sizeof(ember_table);
    if (bytes_device)
        *bytes_device = device;
    return EMBER_OK;
}

void ember_table_stats_get(const ember_table *t, ember_table_stats *out)
{
    memset(out, 0, sizeof *out);
    enter(t);
    t->tb_backend->stats(t->tb_impl, out);
    out->evictions += t->tb_carried.evictions;
    out->evicted += t->tb_carried.evicted;
    out->insert_refused += t->tb_carried.insert_refused;
    out->admission_drops += t->tb_carried.admission_drops;
    leave(t);
    out->grows = atomic_load(&((ember_table *)t)->tb_grows);
    out->grow_pause_ns = atomic_load(&((ember_table *)t)->tb_grow_pause_ns);
    out->grow_failures = atomic_load(&((ember_table *)t)->tb_grow_failures);
    out->expired = atomic_load(&((ember_table *)t)->tb_expired);
    out->version = atomic_load(&((ember_table *)t)->tb_version);
    out->nonfinite_zeroed = atomic_load(&((ember_table *)t)->tb_nonfinite_zeroed);
    out->load_factor = out->capacity ? (double)out->size / (double)out->capacity : 0.0;
    out->bytes_host += sizeof *t;
}

/* ---- validation ---------------------------------------------------------- */

/* The batch-size and NULL-keys checks every call with keys makes first. */
static int check_limits(const uint64_t *keys, size_t n, ember_error *err)
{
    if (n > EMBER_BATCH_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "batch of %zu keys is above the limit of %llu", n,
                               (unsigned long long)EMBER_BATCH_MAX);
    if (n && !keys)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "keys is NULL");
    return EMBER_OK;
}

static int reserved_error(const uint64_t *keys, size_t i, ember_error *err)
{
    return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                           "key %llu at index %zu is reserved (keys >= %llu are)",
                           (unsigned long long)keys[i], i,
                           (unsigned long long)EMBER_KEY_RESERVED_MIN);
}

/* Index of the first non-finite float in v[n], or n. Branch-free inner loop so
 * the compiler vectorises it: this runs over every gradient byte. */
static size_t first_nonfinite(const float *v, size_t n)
{
    const size_t block = 1024;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        for (size_t j = i; j < end; j++) {
            uint32_t bits;
            memcpy(&bits, &v[j], sizeof bits);
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (size_t j = i; j < end; j++)
                if (!isfinite(v[j]))
                    return j;
    }
    return n;
}

/* The one validation pass of a call: walks keys[n] and their v[n*width] floats
 * together (either NULL: not looked at), a block of keys and then the block's
 * floats, while both are in cache. *bad_key = the first reserved key's index, or n;
 * *bad_val = the first non-finite float's index, or n*width (values stop being
 * looked at once one is found; keys are always scanned to the end, since a
 * reserved key is the error a call reports first). */
static void scan_batch(const uint64_t *keys, size_t n, const float *v, uint32_t width,
                       size_t *bad_key, size_t *bad_val)
{
    const size_t block = 64;
    size_t total = v ? n * width : 0;
    *bad_key = n;
    *bad_val = n * width;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        for (size_t j = i; keys && j < end; j++)
            bad |= (uint32_t)ember_key_is_reserved(keys[j]);
        if (bad) {
            for (size_t j = i; j < end; j++)
                if (ember_key_is_reserved(keys[j])) {
                    *bad_key = j;
                    return;
                }
        }
        if (*bad_val == n * width && i * width < total) {
            size_t lo = i * width, len = (end - i) * width;
            size_t b = first_nonfinite(v + lo, len);
            if (b < len)
                *bad_val = lo + b;
        }
    }
}

static int check_batch(const uint64_t *keys, size_t n, ember_error *err)
{
    size_t bad_key, bad_val;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(keys, n, NULL, 0, &bad_key, &bad_val);
    return bad_key < n ? reserved_error(keys, bad_key, err) : EMBER_OK;
}

static int check_array(const void *p, size_t n, const char *what, ember_error *err)
{
    if (n && !p)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s is NULL", what);
    return EMBER_OK;
}

/* What a call does with v[n*width] whose first non-finite float is at `bad`
 * (n*width: none). With policy ZERO (and `zeroable`) a cleaned copy is returned
 * in *clean (caller frees); otherwise REJECT. */
static int finish_finite(ember_table *t, const float *v, size_t n, uint32_t width, size_t bad,
                         int zeroable, const char *what, float **clean, ember_error *err)
{
    size_t total = n * width;
    *clean = NULL;
    if (bad == total)
        return EMBER_OK;
    if (!zeroable || t->tb_config.nonfinite != EMBER_NONFINITE_ZERO)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s of key index %zu hold a non-finite value (NaN or Inf)",
                               what, bad / width);
    float *c = malloc(total * sizeof *c);
    if (!c)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    uint64_t zeroed = 0;
    memcpy(c, v, bad * sizeof *c);   /* everything before `bad` is finite */
    for (size_t j = bad; j < total; j++) {
        if (isfinite(v[j])) {
            c[j] = v[j];
        } else {
            c[j] = 0.0f;
            zeroed++;
        }
    }
    atomic_fetch_add(&t->tb_nonfinite_zeroed, zeroed);
    *clean = c;
    return EMBER_OK;
}

static uint64_t clock_now_ns(ember_table *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    /* The score clock never goes back, even if the wall clock is stepped. */
    uint64_t last = atomic_load_explicit(&t->tb_clock_ns, memory_order_relaxed);
    while (now > last &&
           !atomic_compare_exchange_weak_explicit(&t->tb_clock_ns, &last, now,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    return now > last ? now : last;
}

/* A writing call takes a slot of tb_writing before it draws its version and
 * frees it when its rows are written (op_end), so that
 * ember_table_stable_version can tell which drawn versions are still being
 * written. */
static unsigned op_slot_take(ember_table *t)
{
    static _Thread_local unsigned hint;
    for (unsigned spins = 0;; spins++) {
        for (unsigned k = 0; k < OP_SLOTS; k++) {
            unsigned i = (hint + k) % OP_SLOTS;
            uint64_t free_slot = 0;
            if (atomic_load_explicit(&t->tb_writing[i], memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong(&t->tb_writing[i], &free_slot, OP_PENDING)) {
                hint = i;
                return i;
            }
        }
        if (spins > 16)
            sched_yield();
    }
}

static unsigned op_begin(ember_table *t, ember_op *op)
{
    op->score.policy = t->tb_config.score_policy;
    op->score.now_ns = clock_now_ns(t);
    op->score.epoch = atomic_load(&t->tb_epoch);
    unsigned slot = op_slot_take(t);
    op->version = atomic_fetch_add(&t->tb_version, 1) + 1;
    atomic_store(&t->tb_writing[slot], op->version);
    return slot;
}

static void op_end(ember_table *t, unsigned slot)
{
    atomic_store_explicit(&t->tb_writing[slot], 0, memory_order_release);
}

uint64_t ember_table_stable_version(ember_table *t)
{
    uint64_t stable = atomic_load(&t->tb_version);
    for (unsigned i = 0; i < OP_SLOTS; i++) {
        uint64_t v;
        /* a slot taken before `stable` was read may hold a version ≤ stable
         * still being drawn: wait the few instructions until it is */
        while ((v = atomic_load(&t->tb_writing[i])) == OP_PENDING)
            sched_yield();
        if (v && v - 1 < stable)
            stable = v - 1;
    }
    return stable;
}

uint64_t ember_table_version(const ember_table *t)
{
    return atomic_load(&((ember_table *)t)->tb_version);
}

/* Validates a writing call in one pass (scan_batch): keys, then its n×dim input
 * floats (non-finite values are refused, or for `zeroable` inputs under policy
 * ZERO replaced in a copy left in *clean for the caller to free); what `checked`
 * (EMBER_CHECKED_*) names, the caller has checked. */
static int check_write(ember_table *t, unsigned checked, const uint64_t *keys, size_t n,
                       const float *in, const char *what, int zeroable, float **clean,
                       ember_error *err)
{
    uint32_t dim = t->tb_config.dim;
    size_t bad_key, bad_val;
    *clean = NULL;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(checked & EMBER_CHECKED_KEYS ? NULL : keys, n,
               checked & EMBER_CHECKED_VALUES ? NULL : in, dim, &bad_key, &bad_val);
    if (bad_key < n)
        return reserved_error(keys, bad_key, err);
    rc = check_array(in, n, what, err);
    if (rc)
        return rc;
    return finish_finite(t, in, n, dim, bad_val, zeroable, what, clean, err);
}

/* ---- operations ---------------------------------------------------------- */

int ember_table_find(ember_table *t, const uint64_t *keys, size_t n, float *values,
                     uint8_t *found, ember_error *err)
{
    int rc = check_batch(keys, n, err);
    if (!rc)
        rc = check_array(values, n, "values", err);
    if (rc || !n)
        return rc;
    enter(t);
    rc = t->tb_backend->find(t->tb_impl, keys, n, values, found, err);
    leave(t);
    return rc;
}

int ember_table_find_or_insert(ember_table *t, const uint64_t *keys, size_t n,
                               float *values, uint8_t *found, const uint64_t *scores,
                               ember_error *err)
{
    int rc = check_batch(keys, n, err);
    if (!rc)
        rc = check_array(values, n, "values", err);
    if (rc || !n)
        return rc;
    uint64_t counted = insert_enter(t, n);
    rc = wgate_enter(t, keys, n, err);
    if (!rc) {
        ember_op op;
        unsigned slot = op_begin(t, &op);
        rc = t->tb_backend->find_or_insert(t->tb_impl, &op, keys, n, values, found, scores,
                                           err);
        op_end(t, slot);
        wgate_leave(t);
    }
    insert_leave(t, counted);
    return rc;
}

int ember_table_write(ember_table *t, ember_write_kind kind, unsigned checked,
                      const uint64_t *keys, size_t n, const float *values, uint8_t *found,
                      const uint64_t *scores, ember_error *err)
{
    static const char *const what[] = {"gradients", "values", "values", "deltas"};
    if ((unsigned)kind > EMBER_WRITE_ACCUM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown write %d", (int)kind);
    int zeroable = kind == EMBER_WRITE_GRADIENTS || kind == EMBER_WRITE_ACCUM;
    float *clean;
    int rc = check_write(t, checked, keys, n, values, what[kind], zeroable, &clean, err);
    if (rc || !n)
        return rc;
    const float *in = clean ? clean : values;
    const ember_table_backend *b = t->tb_backend;
    int inserts = kind == EMBER_WRITE_GRADIENTS || kind == EMBER_WRITE_UPSERT;
    uint64_t counted = 0;
    if (inserts)
        counted = insert_enter(t, n);
    else
        enter(t);
    rc = wgate_enter(t, keys, n, err);
    if (rc) {
        insert_leave(t, counted);
        free(clean);
        return rc;
    }
    ember_op op;
    unsigned slot = op_begin(t, &op);
    switch (kind) {
    case EMBER_WRITE_GRADIENTS:
        rc = b->apply_gradients(t->tb_impl, &op, keys, n, in, scores, err);
        break;
    case EMBER_WRITE_UPSERT:
        rc = b->insert_or_assign(t->tb_impl, &op, keys, n, in, scores, err);
        break;
    case EMBER_WRITE_ASSIGN:
        rc = b->assign(t->tb_impl, &op, keys, n, in, found, scores, err);
        break;
    default:
        rc = b->accum(t->tb_impl, &op, keys, n, in, found, err);
        break;
    }
    op_end(t, slot);
    wgate_leave(t);
    insert_leave(t, counted);
    free(clean);
    return rc;
}

int ember_table_insert_or_assign(ember_table *t, const uint64_t *keys, size_t n,
                                 const float *values, const uint64_t *scores,
                                 ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_UPSERT, 0, keys, n, values, NULL, scores, err);
}

int ember_table_assign(ember_table *t, const uint64_t *keys, size_t n, const float *values,
                       uint8_t *found, const uint64_t *scores, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_ASSIGN, 0, keys, n, values, found, scores, err);
}

int ember_table_accum(ember_table *t, const uint64_t *keys, size_t n, const float *deltas,
                      uint8_t *found, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_ACCUM, 0, keys, n, deltas, found, NULL, err);
}

int ember_table_apply_gradients(ember_table *t, const uint64_t *keys, size_t n,
                                const float *grads, const uint64_t *scores, ember_error *err)
{
    return ember_table_write(t, EMBER_WRITE_GRADIENTS, 0, keys, n, grads, NULL, scores, err);
}

int ember_table_erase(ember_table *t, const uint64_t *keys, size_t n, uint64_t *erased,
                      ember_error *err)
{
    if (erased)
        *erased = 0;
    int rc = check_batch(keys, n, err);
    if (rc || !n)
        return rc;
    enter(t);
    rc = wgate_enter(t, keys, n, err);
    if (!rc) {
        rc = t->tb_backend->erase(t->tb_impl, keys, n, erased, err);
        wgate_leave(t);
    }
    leave(t);
    return rc;
}

int ember_table_clear(ember_table *t, ember_error *err)
{
    enter(t);
    int rc = wgate_enter(t, NULL, 0, err);
    if (!rc) {
        rc = t->tb_backend->clear(t->tb_impl, err);
        wgate_leave(t);
    }
    leave(t);
    atomic_store(&t->tb_grow_stuck, 0);
    return rc;
}

int ember_table_export(ember_table *t, const ember_export_filter *f, uint64_t *cursor,
                       size_t max_rows, uint64_t *keys, float *rows, uint64_t *scores,
                       uint64_t *versions, size_t *n_out, ember_error *err)
{
    static const ember_export_filter all = {0, 0, 0};
    if (n_out)
        *n_out = 0;
    if (!cursor || !n_out || !keys || !rows)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "export needs cursor, keys, rows and n_out");
    if (max_rows < EMBER_BUCKET_SLOTS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "export max_rows %zu is below one bucket (%u)", max_rows,
                               EMBER_BUCKET_SLOTS);
    enter(t);
    unsigned shift = cursor_shift(t);
    uint64_t end = t->tb_backend->export_end(t->tb_impl);
    uint64_t bucket = *cursor >> shift;
    int rc;
    if (*cursor > end << shift || bucket << shift != *cursor)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "export cursor %llu is past the end or not one export gave",
                             (unsigned long long)*cursor);
    else
        rc = t->tb_backend->export_rows(t->tb_impl, f ? f : &all, &bucket, max_rows, keys,
                                        rows, scores, versions, n_out, err);
    if (!rc)
        *cursor = bucket << shift;
    leave(t);
    return rc;
}

int ember_table_import(ember_table *t, const uint64_t *keys, size_t n, const float *rows,
                       const uint64_t *scores, const uint64_t *versions, ember_error *err)
{
    float *clean;
    size_t bad_key, bad_val;
    int rc = check_limits(keys, n, err);
    if (rc)
        return rc;
    scan_batch(keys, n, rows, t->tb_row_floats, &bad_key, &bad_val);
    if (bad_key < n)
        return reserved_error(keys, bad_key, err);
    rc = check_array(rows, n, "rows", err);
    if (!rc)
        rc = check_array(scores, n, "scores", err);
    if (!rc)
        rc = check_array(versions, n, "versions", err);
    if (!rc)
        rc = finish_finite(t, rows, n, t->tb_row_floats, bad_val, 0, "rows", &clean, err);
    if (rc || !n)
        return rc;
    uint64_t vmax = 0;
    for (size_t i = 0; i < n; i++)
        vmax = versions[i] > vmax ? versions[i] : vmax;
    uint64_t counted = insert_enter(t, n);
    rc = wgate_enter(t, keys, n, err);
    if (!rc) {
        rc = t->tb_backend->import_rows(t->tb_impl, keys, n, rows, scores, versions, err);
        if (!rc) /* inside the gate: a snapshot's cut covers the versions imported */
            ember_table_raise_version(t, vmax);
        wgate_leave(t);
    }
    insert_leave(t, counted);
    return rc;
}

void ember_table_raise_version(ember_table *t, uint64_t version)
{
    uint64_t cur = atomic_load(&t->tb_version);
    while (cur < version && !atomic_compare_exchange_weak(&t->tb_version, &cur, version))
        ;
}

int ember_table_evict_below(ember_table *t, uint64_t score, uint64_t *evicted,
                            ember_error *err)
{
    if (evicted)
        *evicted = 0;
    enter(t);
    int rc = wgate_enter(t, NULL, 0, err);
    if (!rc) {
        rc = t->tb_backend->evict_below(t->tb_impl, score, evicted, err);
        wgate_leave(t);
    }
    leave(t);
    return rc;
}

int ember_table_evict_to_size(ember_table *t, uint64_t target, uint64_t *evicted,
                              ember_error *err)
{
    if (evicted)
        *evicted = 0;
    enter(t);
    int rc = wgate_enter(t, NULL, 0, err);
    if (!rc) {
        rc = t->tb_backend->evict_to_size(t->tb_impl, target, evicted, err);
        wgate_leave(t);
    }
    leave(t);
    return rc;
}

/* ---- time to live -------------------------------------------------------- */

uint64_t ember_table_ttl(const ember_table *t)
{
    return atomic_load(&((ember_table *)t)->tb_ttl_s);
}

int ember_table_set_ttl(ember_table *t, uint64_t ttl_seconds, ember_error *err)
{
    if (ttl_seconds > EMBER_TTL_MAX_SECONDS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "ttl_seconds %llu above %llu (a negative value sent as "
                               "unsigned?)",
                               (unsigned long long)ttl_seconds,
                               (unsigned long long)EMBER_TTL_MAX_SECONDS);
    if (ttl_seconds && !t->tb_backend->evict_versions_below)
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "backend %s cannot expire rows", t->tb_backend->name);
    atomic_store(&t->tb_ttl_s, ttl_seconds);
    return EMBER_OK;
}

/* Records (now, current version): every version up to it was handed out by now.
 * Marks are at least ttl / TTL_MARKS apart, so the ring spans the TTL. Under
 * tb_ttl_lock. */
static void ttl_record(ember_table *t, uint64_t now_ns, uint64_t ttl_ns)
{
    ttl_mark m = {now_ns, atomic_load(&t->tb_version)};
    if (t->tb_mark_count) {
        unsigned last = (t->tb_mark_head + t->tb_mark_count - 1) % TTL_MARKS;
        if (now_ns < t->tb_marks[last].at_ns)
            m.at_ns = t->tb_marks[last].at_ns; /* the wall clock stepped back */
        /* Too close to the last mark: skipped. Only the finer grain is lost (a
         * row may live up to the spacing longer), never a row judged older than
         * it is. */
        if (m.at_ns - t->tb_marks[last].at_ns < ttl_ns / TTL_MARKS)
            return;
    }
    if (t->tb_mark_count == TTL_MARKS) {
        t->tb_mark_head = (t->tb_mark_head + 1) % TTL_MARKS;
        t->tb_mark_count--;
    }
    t->tb_marks[(t->tb_mark_head + t->tb_mark_count) % TTL_MARKS] = m;
    t->tb_mark_count++;
}

/* The newest version that was already current ttl before now (0: none); marks
 * older than that one are dropped. Under tb_ttl_lock. */
static uint64_t ttl_cut(ember_table *t, uint64_t now_ns, uint64_t ttl_ns)
{
    uint64_t cut = 0;
    while (t->tb_mark_count) {
        ttl_mark *m = &t->tb_marks[t->tb_mark_head];
        if (m->at_ns > now_ns || now_ns - m->at_ns < ttl_ns)
            break;
        cut = m->version;
        if (t->tb_mark_count == 1)
            break;
        ttl_mark *next = &t->tb_marks[(t->tb_mark_head + 1) % TTL_MARKS];
        if (next->at_ns > now_ns || now_ns - next->at_ns < ttl_ns)
            break;
        t->tb_mark_head = (t->tb_mark_head + 1) % TTL_MARKS;
        t->tb_mark_count--;
    }
    return cut;
}

int ember_table_expire(ember_table *t, uint64_t now_ns, uint64_t *expired, ember_error *err)
{
    if (expired)
        *expired = 0;
    uint64_t ttl = atomic_load(&t->tb_ttl_s);
    /* not while a snapshot runs: removing rows there would have it copy every
     * bucket it has not read yet; the first call after it catches up */
    if (!ttl || atomic_load(&t->tb_snap))
        return EMBER_OK;
    uint64_t ttl_ns = ttl * UINT64_C(1000000000);
    pthread_mutex_lock(&t->tb_ttl_lock);
    uint64_t cut = ttl_cut(t, now_ns, ttl_ns);
    ttl_record(t, now_ns, ttl_ns);
    uint64_t n = 0;
    int rc = EMBER_OK;
    if (cut) {
        /* Rows of version ≤ cut were written before the cut's mark: remove
         * versions below cut + 1. */
        enter(t);
        rc = wgate_enter(t, NULL, 0, err);
        if (!rc) {
            rc = t->tb_backend->evict_versions_below(t->tb_impl, cut + 1, &n, err);
            wgate_leave(t);
        }
        leave(t);
    }
    pthread_mutex_unlock(&t->tb_ttl_lock);
    atomic_fetch_add(&t->tb_expired, n);
    if (expired)
        *expired = n;
    return rc;
}

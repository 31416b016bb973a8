/*
 * shard.c — ember.v1.Shard: Pull, Push, PushPull, through the hand-written codec
 * (proto/wire.h).
 *
 * Every request is validated completely before the table is touched — table,
 * dtype, mode, key count against --max-keys-per-request, every length against
 * the table's dim, the reply's size against --max-message-bytes — and the table
 * itself refuses reserved keys and non-finite gradients before writing. So a
 * refused call changes nothing. A request that came in several slices was
 * gathered once by the transport, placed so its bulk field (a Pull's keys, a
 * Push's values) is 64-byte aligned, and the table reads it there; what is not
 * aligned (a field of a request that came in one slice, at whatever offset the
 * wire put it) or not float32 is copied into the worker's aligned scratch. A Pull
 * reply's float32 values are written by the table straight into the outgoing
 * slice, at a 64-byte-aligned offset of a pooled buffer.
 *
 * Coalescing (--coalesce, coalesce.h): a call that finds its table's queue idle
 * runs as above, answers its own call, and then runs whatever piled up in the
 * queue meanwhile. One that finds it busy is validated here first — everything
 * the table would refuse: reserved keys, and non-finite values where the table
 * rejects them — so that a batch never fails for another caller's input; then
 * it writes its keys (and values) into a batch of the queue, converted from the
 * wire on the way (the one copy), and its worker goes back to gRPC: the queue's
 * runner answers it (srv_call.job holds what it needs: the request is gone by then).
 * A full queue refuses the call (RESOURCE_EXHAUSTED, --coalesce-queue-keys); a
 * call whose deadline passed while it waited is taken out of its batch before
 * the batch runs (DEADLINE_EXCEEDED, nothing applied). A batch of pulls is one
 * find/find_or_insert into one pooled buffer, and each float32 reply is a few
 * slices: its own header and a slice of that buffer (no copy). A PushPull whose
 * push waits in a queue is finished by the runner: its pull runs right after
 * the push batch, beside the pull queue's batches (it cannot wait in one), from
 * the request read again. A batch of pushes is one table call per mode, with
 * one exception:
 *
 *   Gradient pushes that repeat a key across calls. One apply_gradients call
 *   sums equal keys' gradients and steps once, which for SGD (w -= lr·Σg) is the
 *   serial result — up to float rounding order, which concurrent calls never
 *   fixed anyway — but for Adagrad, Adam and FTRL is not (one step of the sum
 *   instead of one per call: Adam's t, m and v, Adagrad's accumulator differ),
 *   and admission would count one sighting instead of one per call. So for
 *   those optimizers, and for SGD with admission, a batch is split into layers
 *   (srv_co_layers): layer L holds each key's (L+1)-th pusher in arrival order,
 *   and the layers run as calls one after another — exactly the calls run
 *   serially in arrival order, while disjoint keys (most of a batch) still go in
 *   the first call. SGD without admission runs the whole batch in one call.
 *   assign, insert_or_assign (last wins) and accum (added in order) process
 *   equal keys in batch order already, which is arrival order.
 *
 * Calls carrying scores (CUSTOM policy) and empty calls do not coalesce.
 *
 * Pooled calls (a combiner and CSR offsets: README "Pooled lookups", the
 * arithmetic in proto/pool.h) do not coalesce either. A pooled pull looks up its
 * keys' rows into the worker's scratch as a plain pull would, then combines each
 * bag into the reply (bags × dim instead of n × dim: the saving is on the wire).
 * A pooled push expands each bag's gradient into its keys' gradients (scaled by
 * the combiner's derivative) and runs as a plain gradient push of those.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proto/pool.h"
#include "proto/wire.h"
#include "server/auth.h"
#include "server/coalesce.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/repl.h"
#include "server/rpc.h"
#include "server/server.h"
#include "storage/hash.h"

/* A validated pull: everything needed to run it. */
typedef struct pull_plan {
    srv_table *t;
    const ember_wire_pull_request *req;
    size_t n;
    uint32_t dim;
    size_t dsize;
    int pooled;   /* a combiner: one reply vector per bag */
    size_t rows;  /* reply vectors: bags when pooled, else n */
} pull_plan;

typedef struct push_plan {
    srv_table *t;
    const ember_wire_push_request *req;
    size_t n;
    uint32_t dim;
    size_t dsize;
    int pooled;   /* a combiner: values hold one gradient per bag */
    size_t rows;  /* gradients in values: bags when pooled, else n */
} push_plan;

static int lookup(ember_wire_bytes name, srv_table **out, ember_error *err)
{
    *out = NULL;
    if (!name.len)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no table name given");
    if (!ember_table_name_valid((const char *)name.data, name.len))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "table name '%.*s' is not [a-z0-9_.-]{1,64}",
                               (int)(name.len > 80 ? 80 : name.len), (const char *)name.data);
    *out = srv_registry_get(srv.registry, (const char *)name.data, name.len);
    if (!*out)
        return ember_error_set(err, EMBER_NOT_FOUND, "no table '%.*s' on shard %u",
                               (int)name.len, (const char *)name.data, srv.cfg.shard_index);
    return 0;
}

static int check_count(size_t n, ember_error *err)
{
    if (n > srv.cfg.max_keys_per_request)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "%zu keys in one request, over this server's "
                               "--max-keys-per-request of %llu",
                               n, (unsigned long long)srv.cfg.max_keys_per_request);
    return 0;
}

static int check_dtype(int32_t dtype, ember_error *err)
{
    if (!ember_wire_dtype_size(dtype))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown dtype %d (float32 = 0, float16 = 1, bfloat16 = 2)",
                               (int)dtype);
    return 0;
}

/* The bags of a pooled call (any call: *bags = 0 and *pooled = 0 without a
 * combiner): the combiner is known, offsets and weights come with one, the
 * offsets add up to the n keys, weights are n finite floats, and the bags are
 * within --max-keys-per-request. */
static int pool_prepare(int32_t combiner, ember_wire_bytes offsets, ember_wire_bytes weights,
                        size_t n, int *pooled, size_t *bags, ember_error *err)
{
    *pooled = 0;
    *bags = 0;
    if (combiner < EMBER_WIRE_COMBINER_NONE || combiner > EMBER_WIRE_COMBINER_SQRTN)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown combiner %d (none = 0, sum = 1, mean = 2, sqrtn = 3)",
                               (int)combiner);
    if (combiner == EMBER_WIRE_COMBINER_NONE) {
        if (offsets.len || weights.len)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "offsets and weights pool a call: they need a combiner "
                                   "(sum, mean or sqrtn)");
        return 0;
    }
    char msg[200];
    if (ember_wire_bags_check(offsets, n, weights, bags, msg, sizeof msg))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "pooled call: %s", msg);
    if (*bags > srv.cfg.max_keys_per_request)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "%zu bags in one request, over this server's "
                               "--max-keys-per-request of %llu",
                               *bags, (unsigned long long)srv.cfg.max_keys_per_request);
    *pooled = 1;
    return 0;
}

/* Validates a pull; on success p->t holds a table reference. */
static int pull_prepare(const ember_wire_pull_request *r, pull_plan *p, ember_error *err)
{
    memset(p, 0, sizeof *p);
    p->req = r;
    p->n = r->keys.len / 8;
    size_t bags = 0;
    int rc = check_dtype(r->dtype, err);
    if (!rc)
        rc = check_count(p->n, err);
    if (!rc)
        rc = srv_check_owner(r->keys.data, r->keys.len / 8, "pull: ", err);
    if (!rc)
        rc = pool_prepare(r->combiner, r->offsets, r->weights, p->n, &p->pooled, &bags, err);
    if (!rc)
        rc = lookup(r->table, &p->t, err);
    if (rc)
        return rc;
    p->rows = p->pooled ? bags : p->n;
    p->dim = ember_table_dim(p->t->table);
    p->dsize = ember_wire_dtype_size(r->dtype);
    if (r->dim && r->dim != p->dim)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "pull expects dim %u, table '%.*s' has dim %u", r->dim,
                             (int)r->table.len, (const char *)r->table.data, p->dim);
    else if (r->scores.len && !r->insert_missing)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "scores are only used by a pull with insert_missing");
    else if (r->scores.len && r->scores.len != p->n * 8)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "scores hold %zu values for %zu keys", r->scores.len / 8, p->n);
    else if ((double)p->rows * p->dim * p->dsize + (double)p->n + 64 >
             (double)srv.cfg.max_message_bytes)
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                             "the reply to %zu %s × dim %u in %s would be over this "
                             "server's --max-message-bytes of %llu",
                             p->rows, p->pooled ? "bags" : "keys", p->dim,
                             ember_wire_dtype_name(r->dtype),
                             (unsigned long long)srv.cfg.max_message_bytes);
    if (rc) {
        srv_table_unref(p->t);
        p->t = NULL;
    }
    return rc;
}

/* What only a pooled push may carry, and what it may not: the combiner is
 * for gradients (a pooled write of embeddings has no meaning we could document:
 * which of a bag's keys gets the bag's value?), and norms come with MEAN or
 * SQRTN, one finite value per bag. */
static int push_pool_check(const ember_wire_push_request *r, int pooled, size_t bags,
                           ember_error *err)
{
    if (!pooled) {
        if (r->norms.len)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "norms come only with a mean or sqrtn combiner");
        return 0;
    }
    if (r->mode != EMBER_WIRE_PUSH_GRADIENTS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "a combiner (%s) pools gradient pushes only, not push mode %d",
                               ember_wire_combiner_name(r->combiner), (int)r->mode);
    if (!r->norms.len)
        return 0;
    if (r->combiner == EMBER_WIRE_COMBINER_SUM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "norms come only with a mean or sqrtn combiner, not sum");
    if (r->norms.len != bags * 4)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "norms hold %zu values for %zu bags",
                               r->norms.len / 4, bags);
    for (size_t b = 0; b < bags; b++)
        if (!isfinite(ember_pool_weight(r->norms.data, b)))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "norm of bag %zu is not finite (NaN or Inf)", b);
    return 0;
}

static int push_prepare(const ember_wire_push_request *r, push_plan *p, ember_error *err)
{
    memset(p, 0, sizeof *p);
    p->req = r;
    p->n = r->keys.len / 8;
    size_t bags = 0;
    int rc = check_dtype(r->dtype, err);
    if (!rc && (r->mode < EMBER_WIRE_PUSH_GRADIENTS || r->mode > EMBER_WIRE_PUSH_INSERT_OR_ASSIGN))
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "unknown push mode %d (gradients = 0, assign = 1, accum = 2, "
                             "insert_or_assign = 3)",
                             (int)r->mode);
    if (!rc)
        rc = check_count(p->n, err);
    if (!rc)
        rc = srv_check_owner(r->keys.data, r->keys.len / 8, "push: ", err);
    if (!rc)
        rc = pool_prepare(r->combiner, r->offsets, r->weights, p->n, &p->pooled, &bags, err);
    if (!rc)
        rc = push_pool_check(r, p->pooled, bags, err);
    if (!rc)
        rc = lookup(r->table, &p->t, err);
    if (rc)
        return rc;
    p->rows = p->pooled ? bags : p->n;
    p->dim = ember_table_dim(p->t->table);
    p->dsize = ember_wire_dtype_size(r->dtype);
    if (r->values.len != p->rows * p->dim * p->dsize)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "values are %zu bytes; %zu %s × dim %u in %s need %zu",
                             r->values.len, p->rows, p->pooled ? "bags" : "keys", p->dim,
                             ember_wire_dtype_name(r->dtype), p->rows * p->dim * p->dsize);
    else if (r->scores.len && r->mode == EMBER_WIRE_PUSH_ACCUM)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT, "scores are not used by accum pushes");
    else if (r->scores.len && r->scores.len != p->n * 8)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "scores hold %zu values for %zu keys", r->scores.len / 8, p->n);
    if (rc) {
        srv_table_unref(p->t);
        p->t = NULL;
    }
    return rc;
}

/* ---- checks on the wire bytes --------------------------------------------- */

/* What the table would refuse in a call's keys, checked on the wire bytes. */
static int wire_keys_check(ember_wire_bytes keys, const char *what, ember_error *err)
{
    size_t n = keys.len / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t k;
        memcpy(&k, keys.data + 8 * i, 8);
        if (ember_key_is_reserved(k))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "%skey %llu at index %zu is reserved (keys >= %llu are)", what,
                                   (unsigned long long)k, i,
                                   (unsigned long long)EMBER_KEY_RESERVED_MIN);
    }
    return 0;
}

/* Index of the first NaN/Inf among n wire values of `dtype` (all exponent bits
 * set, in float32, float16 or bfloat16), or n. Blocks without early exit, so the
 * compiler vectorises the common, clean case. */
static size_t wire_first_nonfinite(int32_t dtype, const uint8_t *v, size_t n)
{
    const size_t block = 1024;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        if (dtype == EMBER_WIRE_F32) {
            for (size_t j = i; j < end; j++) {
                uint32_t u;
                memcpy(&u, v + 4 * j, 4);
                bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
            }
        } else {
            uint16_t mask = dtype == EMBER_WIRE_F16 ? 0x7c00u : 0x7f80u;
            for (size_t j = i; j < end; j++) {
                uint16_t h;
                memcpy(&h, v + 2 * j, 2);
                bad |= (uint32_t)((h & mask) == mask);
            }
        }
        if (bad)
            for (size_t j = i; j < end; j++) {
                uint32_t u = 0;
                int nf;
                if (dtype == EMBER_WIRE_F32) {
                    memcpy(&u, v + 4 * j, 4);
                    nf = (u & 0x7f800000u) == 0x7f800000u;
                } else {
                    uint16_t h, mask = dtype == EMBER_WIRE_F16 ? 0x7c00u : 0x7f80u;
                    memcpy(&h, v + 2 * j, 2);
                    nf = (h & mask) == mask;
                }
                if (nf)
                    return j;
            }
    }
    return n;
}

/* A request's keys where they lie, when they are 8-byte aligned (a gathered
 * request is placed so they are: srv_payload_bytes); else NULL: copy them. */
static const uint64_t *wire_keys(ember_wire_bytes keys)
{
    return (uintptr_t)keys.data % _Alignof(uint64_t) ? NULL
                                                      : (const uint64_t *)(const void *)keys.data;
}

/* The same for float32 values; NULL for another dtype (they need converting). */
static const float *wire_floats(int32_t dtype, ember_wire_bytes v)
{
    return dtype != EMBER_WIRE_F32 || (uintptr_t)v.data % _Alignof(float)
               ? NULL
               : (const float *)(const void *)v.data;
}

/* ---- coalescing: the queues ----------------------------------------------- */

/* Whether calls on `t` coalesce (--coalesce; auto: t is on the gpu backend). */
static int coalesces(const srv_table *t)
{
    if (srv.cfg.coalesce == SRV_COALESCE_ON)
        return 1;
    if (srv.cfg.coalesce == SRV_COALESCE_OFF)
        return 0;
    return !strcmp(ember_table_backend_name(ember_table_backend_of(t->table)), "gpu");
}

/* Key slots of a batch opened by a call of n keys: --coalesce-max-keys, and no
 * more values than one message may hold; never fewer than the call's own. */
static size_t co_cap(size_t n, uint32_t dim)
{
    size_t cap = srv.cfg.coalesce_max_keys;
    size_t by_bytes = srv.cfg.max_message_bytes / ((size_t)dim * sizeof(float));
    if (cap > by_bytes)
        cap = by_bytes;
    return cap < n ? n : cap;
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (cur < v && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

/* Counters and the debug line for a batch that ran. */
static void co_account(srv_table *t, srv_co_kind kind, const srv_co_batch *b, uint32_t split,
                       int rc, const struct timespec *t0)
{
    srv_counters *c = &t->counters;
    if (b->cb_n >= 2) {
        atomic_fetch_add_explicit(&c->co_batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_calls, b->cb_n, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_keys, b->cb_used, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_split_calls, split, memory_order_relaxed);
        atomic_max(&c->co_max_keys, b->cb_used);
        atomic_max(&c->co_max_calls, b->cb_n);
    }
    if (srv_log_level() >= SRV_LOG_DEBUG) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        srv_log(SRV_LOG_DEBUG, "coalesced_batch",
                "table=%s kind=%s calls=%u keys=%zu layers=%u code=%s us=%.1f", t->name,
                srv_co_kind_name(kind), b->cb_n, b->cb_used, split + 1, ember_status_name(rc),
                (double)(now.tv_sec - t0->tv_sec) * 1e6 +
                    (double)(now.tv_nsec - t0->tv_nsec) / 1e3);
    }
}

/* A call queued for its table, answered by the queue's runner: what the runner
 * needs of it, copied out of the request (which its worker reuses as soon as the
 * call is queued). Lives in the call (srv_call.job). */
typedef enum job_kind { JOB_PULL, JOB_PUSH, JOB_PUSHPULL } job_kind;

typedef struct co_job {
    srv_call *call;
    job_kind kind;
    srv_table *t;        /* the queue's table: a reference, dropped when answered */
    size_t n;            /* keys */
    uint32_t dim;
    int32_t dtype;       /* a pull's reply */
    int want_found;
    uint64_t client_id, sequence; /* a push's at-most-once mark */
    srv_table *pull_t;   /* a PushPull's pull table, as validated: a reference */
} co_job;

_Static_assert(sizeof(co_job) <= sizeof(((srv_call *)0)->job), "a job fits in its call");

static co_job *job_of(srv_call *c) { return (co_job *)(void *)c->job; }

static void pull_batch(srv_worker *w, srv_table *t, srv_co_kind kind, srv_co_batch *b);
static void push_batch(srv_worker *w, srv_table *t, srv_co_kind kind, srv_co_batch *b);

/* Runs q's batches until none is queued: the caller became q's runner
 * (srv_co_try_alone or srv_co_written said so). Holds its own reference to the
 * table: answering the last member may drop the members' last one. */
static void co_drain(srv_worker *w, srv_co_queue *q, srv_table *t, srv_co_kind kind)
{
    srv_co_batch *b;
    srv_table_ref(t);
    while ((b = srv_co_next(q))) {
        if (kind == SRV_CO_FIND || kind == SRV_CO_FIND_OR_INSERT)
            pull_batch(w, t, kind, b);
        else
            push_batch(w, t, kind, b);
        srv_co_release(q, b);
    }
    srv_table_unref(t);
}

/* The answer to a call that cannot join its busy queue. */
static int co_refused(int rc, const srv_table *t, srv_co_kind kind, size_t n, ember_error *err)
{
    if (rc == -1)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "table '%s' is busy and its queue of %s calls cannot take %zu "
                               "more keys (--coalesce-queue-keys %llu); retry later",
                               t->name, srv_co_kind_name(kind), n,
                               (unsigned long long)srv.cfg.coalesce_queue_keys);
    return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                           "out of memory queueing %zu keys for table '%s'", n, t->name);
}

/* Takes the members of a batch whose deadline passed out of it before it runs
 * (a call refused for its deadline changes nothing), moving the others' keys and
 * `per_key` floats each down over them; `expire` answers each one taken out. */
static void co_drop_expired(srv_worker *w, srv_co_batch *b, size_t per_key,
                            void (*expire)(srv_worker *, co_job *))
{
    unsigned kept = 0;
    size_t at = 0;
    for (unsigned i = 0; i < b->cb_n; i++) {
        srv_co_member m = b->cb_members[i];
        co_job *j = m.cm_ctx;
        if (srv_call_expired(j->call)) {
            expire(w, j);
            continue;
        }
        if (at != m.cm_off) {
            memmove(b->cb_keys + at, b->cb_keys + m.cm_off, m.cm_n * sizeof(uint64_t));
            if (per_key)
                memmove(b->cb_vals + at * per_key, b->cb_vals + m.cm_off * per_key,
                        m.cm_n * per_key * sizeof(float));
        }
        m.cm_off = at;
        b->cb_members[kept++] = m;
        at += m.cm_n;
    }
    b->cb_n = kept;
    b->cb_used = at;
}

static const char expired_msg[] = "deadline expired while the call waited for its table";

/* ---- push ---------------------------------------------------------------- */

static srv_co_kind push_kind(int32_t mode)
{
    switch (mode) {
    case EMBER_WIRE_PUSH_GRADIENTS: return SRV_CO_GRADIENTS;
    case EMBER_WIRE_PUSH_ASSIGN: return SRV_CO_ASSIGN;
    case EMBER_WIRE_PUSH_ACCUM: return SRV_CO_ACCUM;
    default: return SRV_CO_INSERT_OR_ASSIGN;
    }
}

/* The queue a push goes through; NULL when it runs on its own. */
static srv_co_queue *push_queue(const push_plan *p)
{
    if (!p->n || p->req->scores.len || p->pooled || !coalesces(p->t))
        return NULL;
    return &p->t->co[push_kind(p->req->mode)];
}

/* One table call of a push `kind`; scores only for calls that run alone.
 * `checked`: what push_check already verified of these keys and values
 * (EMBER_CHECKED_*), which the table then does not scan again. */
static int push_call(ember_table *t, srv_co_kind kind, unsigned checked, const uint64_t *keys,
                     size_t n, const float *vals, const uint64_t *scores, ember_error *err)
{
    ember_write_kind wk = kind == SRV_CO_GRADIENTS ? EMBER_WRITE_GRADIENTS
                          : kind == SRV_CO_ASSIGN  ? EMBER_WRITE_ASSIGN
                          : kind == SRV_CO_ACCUM   ? EMBER_WRITE_ACCUM
                                                   : EMBER_WRITE_UPSERT;
    return ember_table_write(t, wk, checked, keys, n, vals, NULL, scores, err);
}

/* What push_check verifies of a queued push of `kind` on `t`: its keys, and its
 * values unless the table zeroes non-finite gradients/deltas (then the table's
 * own pass does that). */
static unsigned push_checked(const ember_table *t, srv_co_kind kind)
{
    int zeroable = kind == SRV_CO_GRADIENTS || kind == SRV_CO_ACCUM;
    if (zeroable && ember_table_config_of(t)->nonfinite == EMBER_NONFINITE_ZERO)
        return EMBER_CHECKED_KEYS;
    return EMBER_CHECKED_KEYS | EMBER_CHECKED_VALUES;
}

/* A replicated push (repl.h): refused before anything is applied when too few
 * followers are attached; else its call is armed, so that its OK answer (a
 * duplicate's too: its original may not be on the followers yet) waits for
 * them, whichever thread gives it. */
static int push_replication(srv_call *c, const push_plan *p, ember_error *err)
{
    uint32_t need;
    /* a push that has seen a newer leader fences this one (and is refused) */
    int rc = srv_follow_check_term(p->req->term, srv_methods[c->method].name, err);
    if (!rc)
        rc = srv_follow_refuse(srv_methods[c->method].name, err);
    if (rc)
        return rc;
    rc = srv_repl_need(p->t, p->req->ack, p->req->ack_replicas, &need, err);
    if (!rc && need)
        srv_repl_arm(c, p->t->name, need);
    return rc;
}

/* Marks (client_id, sequence) seen; 1 when it had been: a duplicate, counted.
 * srv_dedup_begin may wait for the push's original while that one is still
 * running: so the mark is taken before any queue is joined. */
static int push_duplicate(const push_plan *p)
{
    const ember_wire_push_request *r = p->req;
    if (!r->client_id || srv_dedup_begin(srv.dedup, r->client_id, r->sequence))
        return 0;
    atomic_fetch_add_explicit(&p->t->counters.duplicate_pushes, 1, memory_order_relaxed);
    srv_log(SRV_LOG_DEBUG, "duplicate_push", "table=%s client_id=%llu sequence=%llu",
            p->t->name, (unsigned long long)r->client_id, (unsigned long long)r->sequence);
    return 1;
}

/* Ends a push's at-most-once mark: kept when something may have been applied,
 * given up when it was refused whole (a corrected retry may then go through). */
static void push_mark_end(uint64_t client_id, uint64_t sequence, int rc, int kept)
{
    if (!client_id)
        return;
    if (rc && !kept) {
        srv_dedup_abort(srv.dedup, client_id, sequence);
    } else {
        srv_dedup_end(srv.dedup, client_id, sequence);
        srv_repl_dedup_record(client_id, sequence); /* for followers (repl.h) */
    }
}

static void push_counted(srv_table *t, size_t n)
{
    atomic_fetch_add_explicit(&t->counters.pushes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->counters.keys_pushed, n, memory_order_relaxed);
}

static int push_check(const push_plan *p, ember_error *err);

/* A push's epoch (ember.proto, PushRequest.epoch): one above the table's moves
 * the table's epoch up before the push is applied, so its keys carry it. Only
 * then is the push checked first for everything the table would refuse
 * (`checked`: push_check ran already), so a refused push moves nothing. */
static int push_epoch(const push_plan *p, int checked, ember_error *err)
{
    uint32_t e = p->req->epoch;
    if (!e || e <= ember_table_epoch(p->t->table))
        return 0;
    int rc = checked ? 0 : push_check(p, err);
    if (rc)
        return rc;
    uint32_t was = ember_table_raise_epoch(p->t->table, e);
    if (was < e)
        srv_log(SRV_LOG_INFO, "table_epoch", "table=%s epoch=%u previous=%u by=push", p->t->name,
                (unsigned)e, (unsigned)was);
    return 0;
}

/* A pooled push's per-key gradients from its bags' gradients `g` (float32,
 * bags × dim): key i of bag b gets g_b · c_i (proto/pool.h), in the worker's
 * pool scratch. NULL (err filled) on no memory. */
static const float *push_expand(srv_worker *w, const push_plan *p, const float *g,
                                ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    size_t dim = p->dim;
    float *out = srv_scratch_grow((void **)&w->pool_floats, &w->pool_floats_cap,
                                  p->n ? p->n * dim : 1, sizeof(float));
    if (!out) {
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", p->n);
        return NULL;
    }
    const uint8_t *wts = r->weights.len ? r->weights.data : NULL;
    for (size_t b = 0; b < p->rows; b++) {
        size_t lo = (size_t)ember_wire_offset(r->offsets, b);
        size_t hi = (size_t)ember_wire_offset(r->offsets, b + 1);
        if (lo == hi)
            continue;
        float norm = r->norms.len ? ember_pool_weight(r->norms.data, b)
                                  : ember_pool_norm(r->combiner, wts, lo, hi);
        const float *gb = g + b * dim;
        for (size_t i = lo; i < hi; i++) {
            float c = ember_pool_coef(r->combiner, ember_pool_weight(wts, i), norm);
            float *o = out + i * dim;
            for (size_t d = 0; d < dim; d++)
                o[d] = gb[d] * c;
        }
    }
    return out;
}

/* Runs a validated push on its own. On failure, *kept = 1 when something may
 * have been applied (its at-most-once mark must stay). */
static int push_alone(srv_worker *w, const push_plan *p, int *kept, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    size_t n = p->n, nv = p->rows * p->dim;
    *kept = 0;
    uint64_t *keys = srv_scratch_keys(w, n ? n : 1);
    const float *vals = wire_floats(r->dtype, r->values);
    uint64_t *scores = r->scores.len ? srv_scratch_scores(w, n) : NULL;
    float *conv = vals ? NULL : srv_scratch_floats(w, nv ? nv : 1);
    if (!keys || (!vals && !conv) || (r->scores.len && !scores))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
    ember_wire_keys_copy(r->keys, keys);
    if (conv) {
        ember_wire_from_wire(r->dtype, r->values.data, nv, conv);
        vals = conv;
    }
    if (scores)
        ember_wire_keys_copy(r->scores, scores);
    if (p->pooled && !(vals = push_expand(w, p, vals, err)))
        return err->code;
    int rc = push_epoch(p, 0, err);
    if (rc)
        return rc;
    rc = push_call(p->t->table, push_kind(r->mode), 0, keys, n, vals, scores, err);
    if (rc) /* refused, nothing applied: a corrected retry may go through */
        return rc;
    push_counted(p->t, n);
    return 0;
}

/* Before queueing: everything the table would refuse in this push, so that a
 * batch never fails for another caller's input. */
static int push_check(const push_plan *p, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    int rc = wire_keys_check(r->keys, "", err);
    if (rc)
        return rc;
    int zeroable = r->mode == EMBER_WIRE_PUSH_GRADIENTS || r->mode == EMBER_WIRE_PUSH_ACCUM;
    if (zeroable && ember_table_config_of(p->t->table)->nonfinite == EMBER_NONFINITE_ZERO)
        return 0;
    /* a pooled push carries one gradient per bag (p->rows of them) */
    size_t nv = p->rows * p->dim, bad = wire_first_nonfinite(r->dtype, r->values.data, nv);
    if (bad < nv)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s of %s index %zu hold a non-finite value (NaN or Inf)",
                               r->mode == EMBER_WIRE_PUSH_GRADIENTS ? "gradients"
                               : r->mode == EMBER_WIRE_PUSH_ACCUM   ? "deltas"
                                                                    : "values",
                               p->pooled ? "bag" : "key", bad / p->dim);
    return 0;
}

/* Whether a gradient batch must keep repeated keys in separate steps (see the
 * top of this file): every optimizer but SGD, and SGD when admission counts. */
static int gradients_layered(const ember_table *t)
{
    const ember_table_config *c = ember_table_config_of(t);
    return c->optim.kind != EMBER_OPTIM_SGD || c->admission.min_count > 1;
}

/* Runs a closed gradient batch of N keys whose members repeat keys: layer 0 is
 * compacted in place at the front of the batch, layers ≥ 1 are gathered by
 * layer into side buffers, and the layers run in order. *applied = 1 once a
 * call has written something (a later failure then leaves a part applied). */
static int gradients_layers(srv_worker *w, srv_table *t, srv_co_batch *b, uint32_t *layers,
                            int *applied, ember_error *err)
{
    unsigned checked = push_checked(t->table, SRV_CO_GRADIENTS);
    size_t N = b->cb_used;
    uint32_t dim = ember_table_dim(t->table);
    size_t map_cap = srv_co_layers_map_cap(N);
    size_t *starts = srv_scratch_grow((void **)&w->co_starts, &w->co_starts_cap,
                                      2 * (size_t)b->cb_n + 2, sizeof(size_t));
    uint32_t *layer = srv_scratch_grow((void **)&w->co_layer, &w->co_layer_cap, N, 4);
    srv_co_slot *map = srv_scratch_grow(&w->co_map, &w->co_map_cap, map_cap,
                                        sizeof(srv_co_slot));
    *layers = 0;
    if (!starts || !layer || !map)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory ordering a batch of %zu keys", N);
    for (unsigned m = 0; m < b->cb_n; m++)
        starts[m] = b->cb_members[m].cm_off;
    uint32_t top = srv_co_layers(b->cb_keys, N, starts, b->cb_n, layer, map, map_cap);
    *layers = top;
    if (!top)
        return push_call(t->table, SRV_CO_GRADIENTS, checked, b->cb_keys, N, b->cb_vals, NULL,
                         err);
    /* count per layer, then each layer's start in the side buffers (reusing
     * `starts`: the members' starts are not needed any more) */
    size_t *cnt = starts, *pos = starts + top + 1;
    memset(cnt, 0, (top + 1) * sizeof *cnt);
    for (size_t i = 0; i < N; i++)
        cnt[layer[i]]++;
    size_t side = N - cnt[0];
    pos[1] = 0;
    for (uint32_t l = 2; l <= top; l++)
        pos[l] = pos[l - 1] + cnt[l - 1];
    uint64_t *sk = srv_scratch_grow((void **)&w->co_side_keys, &w->co_side_keys_cap, side, 8);
    float *sv = srv_scratch_grow((void **)&w->co_side_floats, &w->co_side_floats_cap,
                                 side * dim, sizeof(float));
    if (!sk || !sv)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory ordering a batch of %zu keys", N);
    size_t front = 0, row = (size_t)dim * sizeof(float);
    for (size_t i = 0; i < N; i++) {
        if (!layer[i]) {
            if (front != i) {
                b->cb_keys[front] = b->cb_keys[i];
                memcpy(b->cb_vals + front * dim, b->cb_vals + i * dim, row);
            }
            front++;
        } else {
            size_t q = pos[layer[i]]++;
            sk[q] = b->cb_keys[i];
            memcpy(sv + q * dim, b->cb_vals + i * dim, row);
        }
    }
    int rc = push_call(t->table, SRV_CO_GRADIENTS, checked, b->cb_keys, front, b->cb_vals, NULL,
                       err);
    size_t at = 0;
    for (uint32_t l = 1; !rc && l <= top; l++) {
        *applied = 1;
        rc = push_call(t->table, SRV_CO_GRADIENTS, checked, sk + at, cnt[l], sv + at * dim, NULL,
                       err);
        at += cnt[l];
    }
    return rc;
}

static void pushpull_pull(srv_worker *w, co_job *j, size_t applied);

/* Answers a push (or PushPull's push) that was applied (rc 0) or failed; kept: a
 * failed batch applied a part (its at-most-once mark stays). */
static void push_answer(srv_worker *w, co_job *j, int rc, const ember_error *err, int kept)
{
    srv_call *c = j->call;
    srv_table *t = j->t, *pt = j->pull_t; /* j lives in c, which is gone once answered */
    push_mark_end(j->client_id, j->sequence, rc, kept);
    if (!rc)
        push_counted(t, j->n);
    if (j->kind == JOB_PUSHPULL && !rc) {
        pushpull_pull(w, j, j->n); /* answers c */
    } else if (rc) {
        srv_call_finish(c, rc, err->message, NULL);
    } else {
        srv_metrics_keys(SRV_M_PUSH, j->n, 0, j->n);
        ember_wire_push_response m = {j->n, 0, srv_follow_term()};
        uint8_t out[32];
        size_t len = ember_wire_push_response_encode(&m, out);
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)out, len);
        srv_call_finish(c, EMBER_OK, NULL, &s);
    }
    srv_table_unref(t);
    srv_table_unref(pt);
}

static void push_expire(srv_worker *w, co_job *j)
{
    ember_error e;
    ember_error_set(&e, EMBER_DEADLINE_EXCEEDED, "%s", expired_msg);
    push_answer(w, j, EMBER_DEADLINE_EXCEEDED, &e, 0);
}

/* The runner: one push batch of `kind`, then every member's answer. */
static void push_batch(srv_worker *w, srv_table *t, srv_co_kind kind, srv_co_batch *b)
{
    uint32_t dim = ember_table_dim(t->table), layers = 0;
    co_drop_expired(w, b, dim, push_expire);
    if (!b->cb_n)
        return;
    struct timespec t0;
    int applied = 0, rc;
    ember_error err;
    ember_error_clear(&err);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (kind == SRV_CO_GRADIENTS && b->cb_n > 1 && gradients_layered(t->table))
        rc = gradients_layers(w, t, b, &layers, &applied, &err);
    else
        rc = push_call(t->table, kind, push_checked(t->table, kind), b->cb_keys, b->cb_used,
                       b->cb_vals, NULL, &err);
    co_account(t, kind, b, layers, rc, &t0);
    /* a batch refused as a whole changed nothing: a retry may go through; one that
     * failed half-way keeps the marks (at most once, as dedup.h says) */
    for (unsigned i = 0; i < b->cb_n; i++)
        push_answer(w, b->cb_members[i].cm_ctx, rc, &err, applied);
}

/* Queues a validated push (its table's queue q was busy): its keys and values go
 * into a batch, and the queue's runner answers it. Returns 0 when queued (the
 * call is the runner's now), else a refusal in err for the caller to answer. */
static int push_enqueue(srv_worker *w, srv_call *c, const push_plan *p, srv_co_queue *q,
                        job_kind kind, srv_table *pull_t, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    srv_co_kind ck = push_kind(r->mode);
    int rc = push_check(p, err);
    if (!rc)
        rc = push_epoch(p, 1, err);
    if (rc)
        return rc;
    co_job *j = job_of(c);
    *j = (co_job){.call = c, .kind = kind, .t = p->t, .n = p->n, .dim = p->dim,
                  .client_id = r->client_id, .sequence = r->sequence};
    srv_co_part part;
    rc = srv_co_join(q, p->n, p->dim, co_cap(p->n, p->dim), srv.cfg.coalesce_queue_keys, j,
                     &part);
    if (rc)
        return co_refused(rc, p->t, ck, p->n, err);
    srv_table_ref(p->t); /* the job's, dropped when it is answered */
    if (pull_t) { /* a PushPull's pull runs on the table it was validated against */
        srv_table_ref(pull_t);
        j->pull_t = pull_t;
    }
    ember_wire_keys_copy(r->keys, part.keys);
    ember_wire_from_wire(r->dtype, r->values.data, p->n * p->dim, part.vals);
    if (kind != JOB_PUSHPULL) /* a PushPull's pull is read from it once the push ran */
        srv_call_drop_request(c);
    if (srv_co_written(q, &part))
        co_drain(w, q, p->t, ck);
    return 0;
}

/* ---- pull ---------------------------------------------------------------- */

/* The queue a pull goes through; NULL when it runs on its own. */
static srv_co_queue *pull_queue(const pull_plan *p)
{
    if (!p->n || p->req->scores.len || p->pooled || !coalesces(p->t))
        return NULL;
    return &p->t->co[p->req->insert_missing ? SRV_CO_FIND_OR_INSERT : SRV_CO_FIND];
}

static void pull_counted(srv_table *t, size_t n)
{
    if (!n) /* empty pulls are not counted */
        return;
    atomic_fetch_add_explicit(&t->counters.pulls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->counters.keys_pulled, n, memory_order_relaxed);
}

/* Runs a validated pull on its own into the reply `m` already encoded at `msg`
 * whose values start at msg + off->values (64-byte aligned) and found at
 * msg + off->found. */
static int pull_pooled(srv_worker *w, const pull_plan *p, uint8_t *msg,
                       const ember_wire_off *off, ember_error *err);

static int pull_alone(srv_worker *w, const pull_plan *p, uint8_t *msg, const ember_wire_off *off,
                      ember_error *err)
{
    const ember_wire_pull_request *r = p->req;
    size_t n = p->n, nv = n * p->dim;
    if (p->pooled)
        return pull_pooled(w, p, msg, off, err);
    if (!n)
        return 0;
    const uint64_t *keys = wire_keys(r->keys);
    uint64_t *copy = keys ? NULL : srv_scratch_keys2(w, n);
    uint64_t *scores = r->scores.len ? srv_scratch_scores(w, n) : NULL;
    float *vals = r->dtype == EMBER_WIRE_F32 ? (float *)(void *)(msg + off->values)
                                             : srv_scratch_floats(w, nv);
    if ((!keys && !copy) || !vals || (r->scores.len && !scores))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
    if (copy) {
        ember_wire_keys_copy(r->keys, copy);
        keys = copy;
    }
    if (scores)
        ember_wire_keys_copy(r->scores, scores);
    uint8_t *found = r->want_found ? msg + off->found : NULL;
    int rc = r->insert_missing
                 ? ember_table_find_or_insert(p->t->table, keys, n, vals, found, scores, err)
                 : ember_table_find(p->t->table, keys, n, vals, found, err);
    if (rc)
        return rc;
    if (r->dtype != EMBER_WIRE_F32)
        ember_wire_to_wire(r->dtype, vals, nv, msg + off->values);
    pull_counted(p->t, n);
    return 0;
}

/* A pooled pull (see pull_alone): its keys' rows into the worker's float
 * scratch, then each bag combined into the reply — in place for float32, else
 * through the pool scratch and converted. An empty bag is zeros. */
static int pull_pooled(srv_worker *w, const pull_plan *p, uint8_t *msg,
                       const ember_wire_off *off, ember_error *err)
{
    const ember_wire_pull_request *r = p->req;
    size_t n = p->n, dim = p->dim, nb = p->rows;
    const uint64_t *keys = n ? wire_keys(r->keys) : NULL;
    uint64_t *copy = keys || !n ? NULL : srv_scratch_keys2(w, n);
    uint64_t *scores = r->scores.len ? srv_scratch_scores(w, n) : NULL;
    float *rows = srv_scratch_floats(w, n ? n * dim : 1);
    float *bagv = r->dtype == EMBER_WIRE_F32
                      ? (float *)(void *)(msg + off->values)
                      : srv_scratch_grow((void **)&w->pool_floats, &w->pool_floats_cap,
                                         nb ? nb * dim : 1, sizeof(float));
    if ((n && !keys && !copy) || !rows || !bagv || (r->scores.len && !scores))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory for %zu keys in %zu bags", n, nb);
    if (copy) {
        ember_wire_keys_copy(r->keys, copy);
        keys = copy;
    }
    if (scores)
        ember_wire_keys_copy(r->scores, scores);
    if (n) {
        uint8_t *found = r->want_found ? msg + off->found : NULL;
        int rc = r->insert_missing
                     ? ember_table_find_or_insert(p->t->table, keys, n, rows, found, scores, err)
                     : ember_table_find(p->t->table, keys, n, rows, found, err);
        if (rc)
            return rc;
    }
    const uint8_t *wts = r->weights.len ? r->weights.data : NULL;
    for (size_t b = 0; b < nb; b++) {
        size_t lo = (size_t)ember_wire_offset(r->offsets, b);
        size_t hi = (size_t)ember_wire_offset(r->offsets, b + 1);
        float *out = bagv + b * dim;
        ember_pool_sum(rows, dim, wts, lo, hi, out);
        ember_pool_finish(r->combiner, ember_pool_norm(r->combiner, wts, lo, hi), out, dim);
    }
    if (r->dtype != EMBER_WIRE_F32)
        ember_wire_to_wire(r->dtype, bagv, nb * dim, msg + off->values);
    pull_counted(p->t, n);
    return 0;
}

static size_t put_varint(uint8_t *o, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        o[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    o[i++] = (uint8_t)v;
    return i;
}

static void pull_reply_shape(const pull_plan *p, ember_wire_pull_response *m)
{
    memset(m, 0, sizeof *m);
    m->values.len = p->rows * p->dim * p->dsize;
    m->dim = p->dim;
    m->dtype = p->req->dtype;
    m->found.len = p->req->want_found ? p->n : 0;
}

/* A pooled buffer for a reply of `size` bytes whose values start at `voff`,
 * with the message placed so the values are 64-byte aligned. */
static uint8_t *reply_buf(srv_worker *w, size_t size, size_t voff, size_t *base,
                          ember_error *err)
{
    uint8_t *buf = srv_rbuf_get(w, size + 64);
    if (!buf) {
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte reply",
                        size);
        return NULL;
    }
    *base = (64 - voff % 64) % 64;
    return buf;
}

/* A queued pull's reply from its batch's pooled result buffer `buf` (rows at
 * `vals`, found flags at `found`), on which the caller holds a reference for it.
 * float32: slices of field 1's tag and length, its rows in `buf`, fields 2–3 and
 * field 4's tag and length, and its found flags in `buf` — the bytes
 * ember_wire_pull_response_encode would write (fields in order, defaults left
 * out), with no copy of the rows; the reference passes to the slices. Another
 * dtype: converted into a reply of its own, and the reference dropped. */
static int pull_reply_from(srv_worker *w, const co_job *j, uint8_t *buf, const uint8_t *vals,
                           const uint8_t *found, srv_reply *resp, ember_error *err)
{
    size_t nv = j->n * j->dim;
    if (j->dtype != EMBER_WIRE_F32) {
        ember_wire_pull_response m = {.values = {NULL, nv * ember_wire_dtype_size(j->dtype)},
                                      .dim = j->dim, .dtype = j->dtype,
                                      .found = {NULL, j->want_found ? j->n : 0}};
        ember_wire_off off;
        size_t base, size = ember_wire_pull_response_size(&m, &off);
        uint8_t *out = reply_buf(w, size, off.values, &base, err);
        if (!out) {
            srv_rbuf_drop(buf);
            return err->code;
        }
        ember_wire_pull_response_encode(&m, out + base);
        ember_wire_to_wire(j->dtype, (const float *)(const void *)vals, nv,
                           out + base + off.values);
        if (j->want_found)
            memcpy(out + base + off.found, found, j->n);
        srv_rbuf_drop(buf);
        srv_reply_add(resp, srv_rbuf_slice(out, base, size));
        return 0;
    }
    size_t vlen = nv * sizeof(float);
    uint8_t head[16], mid[40];
    size_t h = 0, k = 0;
    head[h++] = 0x0a; /* 1: values, bytes */
    h += put_varint(head + h, vlen);
    mid[k++] = 0x10; /* 2: dim */
    k += put_varint(mid + k, j->dim);
    if (j->want_found) {
        mid[k++] = 0x22; /* 4: found, bytes */
        k += put_varint(mid + k, j->n);
    }
    srv_reply_add(resp, grpc_slice_from_copied_buffer((const char *)head, h));
    if (j->want_found)
        srv_rbuf_ref(buf, 1);
    srv_reply_add(resp, srv_rbuf_slice(buf, (size_t)(vals - buf), vlen));
    srv_reply_add(resp, grpc_slice_from_copied_buffer((const char *)mid, k));
    if (j->want_found)
        srv_reply_add(resp, srv_rbuf_slice(buf, (size_t)(found - buf), j->n));
    return 0;
}

static void pull_expire(srv_worker *w, co_job *j)
{
    srv_table *t = j->t; /* j lives in its call, which is gone once answered */
    (void)w;
    srv_call_finish(j->call, EMBER_DEADLINE_EXCEEDED, expired_msg, NULL);
    srv_table_unref(t);
}

/* The runner: one pull batch into one pooled buffer (rows, then found flags),
 * then every member's reply from it. */
static void pull_batch(srv_worker *w, srv_table *t, srv_co_kind kind, srv_co_batch *b)
{
    co_drop_expired(w, b, 0, pull_expire);
    if (!b->cb_n)
        return;
    uint32_t dim = ember_table_dim(t->table);
    size_t N = b->cb_used, vbytes = N * dim * sizeof(float);
    int want_found = 0, rc;
    struct timespec t0;
    ember_error err;
    ember_error_clear(&err);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < b->cb_n; i++)
        want_found |= ((const co_job *)b->cb_members[i].cm_ctx)->want_found;
    uint8_t *buf = srv_rbuf_get(w, vbytes + N);
    if (!buf) {
        rc = ember_error_set(&err, EMBER_RESOURCE_EXHAUSTED,
                             "out of memory for a batch of %zu keys", N);
    } else {
        float *vals = (float *)(void *)buf;
        uint8_t *found = want_found ? buf + vbytes : NULL;
        rc = kind == SRV_CO_FIND_OR_INSERT
                 ? ember_table_find_or_insert(t->table, b->cb_keys, N, vals, found, NULL, &err)
                 : ember_table_find(t->table, b->cb_keys, N, vals, found, &err);
    }
    co_account(t, kind, b, 0, rc, &t0);
    if (!rc)
        srv_rbuf_ref(buf, b->cb_n - 1); /* one for each member */
    else if (buf)
        srv_rbuf_drop(buf);
    for (unsigned i = 0; i < b->cb_n; i++) {
        const srv_co_member *m = &b->cb_members[i];
        co_job *j = m->cm_ctx;
        srv_call *c = j->call;
        srv_reply reply = {.n = 0};
        ember_error e = err;
        int code = rc ? rc
                      : pull_reply_from(w, j, buf, buf + m->cm_off * dim * sizeof(float),
                                        buf + vbytes + m->cm_off, &reply, &e);
        if (!code) {
            pull_counted(t, j->n);
            srv_metrics_keys(SRV_M_PULL, j->n, j->n, 0);
        }
        srv_table *jt = j->t; /* j lives in c, which is gone once answered */
        srv_call_finish_reply(c, code, code ? e.message : NULL, code ? NULL : &reply);
        srv_table_unref(jt);
    }
}

/* Queues a validated pull (its table's queue q was busy); see push_enqueue. */
static int pull_enqueue(srv_worker *w, srv_call *c, const pull_plan *p, srv_co_queue *q,
                        ember_error *err)
{
    srv_co_kind ck = p->req->insert_missing ? SRV_CO_FIND_OR_INSERT : SRV_CO_FIND;
    int rc = wire_keys_check(p->req->keys, "", err);
    if (rc)
        return rc;
    co_job *j = job_of(c);
    *j = (co_job){.call = c, .kind = JOB_PULL, .t = p->t, .n = p->n, .dim = p->dim,
                  .dtype = p->req->dtype, .want_found = p->req->want_found};
    srv_co_part part;
    rc = srv_co_join(q, p->n, 0, co_cap(p->n, p->dim), srv.cfg.coalesce_queue_keys, j, &part);
    if (rc)
        return co_refused(rc, p->t, ck, p->n, err);
    srv_table_ref(p->t);
    ember_wire_keys_copy(p->req->keys, part.keys);
    srv_call_drop_request(c);
    if (srv_co_written(q, &part))
        co_drain(w, q, p->t, ck);
    return 0;
}

/* Runs a validated pull now, into a reply encoded at msg (see pull_alone): as
 * its queue's runner when the queue is idle (*drain then names the queue to run
 * once the reply is out), else beside the queue's batches (a PushPull's pull,
 * which must run after its push and cannot wait in a queue). */
static int pull_now(srv_worker *w, const pull_plan *p, uint8_t *msg, const ember_wire_off *off,
                    srv_co_queue **drain, ember_error *err)
{
    srv_co_queue *q = pull_queue(p);
    *drain = q && srv_co_try_alone(q) ? q : NULL;
    return pull_alone(w, p, msg, off, err);
}

static srv_co_kind pull_kind(const pull_plan *p)
{
    return p->req->insert_missing ? SRV_CO_FIND_OR_INSERT : SRV_CO_FIND;
}

/* ---- the handlers ---------------------------------------------------------- */

static void answer_error(srv_call *c, int rc, const ember_error *err)
{
    srv_call_finish(c, rc, err->message, NULL);
}

/* Answers a call whose reply was built in the pooled `buf` (`size` bytes from
 * `base`): on OK with that reply and the method's keys metrics, else with the
 * error, the buffer dropped. The request is let go of first. */
static void answer_reply(srv_call *c, int rc, const ember_error *err, uint8_t *buf, size_t base,
                         size_t size, srv_method m, uint64_t keys, uint64_t pulled,
                         uint64_t pushed)
{
    srv_call_drop_request(c);
    if (rc) {
        srv_rbuf_drop(buf);
        answer_error(c, rc, err);
        return;
    }
    srv_reply reply = {.n = 0};
    srv_reply_add(&reply, srv_rbuf_slice(buf, base, size));
    srv_metrics_keys(m, keys, pulled, pushed);
    srv_call_finish_reply(c, EMBER_OK, NULL, &reply);
}

void srv_shard_pull(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    ember_wire_pull_request r;
    pull_plan p;
    ember_wire_pull_response m;
    ember_wire_off off;
    ember_error err;
    size_t base = 0;
    ember_error_clear(&err);
    int rc = ember_wire_pull_request_decode(req, len, &r, err.message, sizeof err.message);
    if (!rc && r.insert_missing && c->role < SRV_ROLE_WORKER) {
        /* a reader (inference) may only serve: nothing it sends creates a key */
        c->logged = 1;
        rc = err.code = srv_auth_refuse_role(srv_methods[SRV_M_PULL].path, SRV_ROLE_WORKER,
                                             c->role, "a pull with insert_missing=true",
                                             err.message, sizeof err.message);
    }
    if (!rc && r.insert_missing)
        rc = srv_follow_refuse("a pull with insert_missing=true", &err);
    if (rc || (rc = pull_prepare(&r, &p, &err))) {
        answer_error(c, rc, &err);
        return;
    }
    srv_co_queue *q = pull_queue(&p);
    if (q && !srv_co_try_alone(q)) {
        rc = pull_enqueue(w, c, &p, q, &err);
        if (rc)
            answer_error(c, rc, &err);
        srv_table_unref(p.t);
        return;
    }
    /* alone: q (if any) is this worker's to run once its own reply is out */
    pull_reply_shape(&p, &m);
    size_t size = ember_wire_pull_response_size(&m, &off);
    uint8_t *buf = reply_buf(w, size, off.values, &base, &err);
    rc = buf ? 0 : err.code;
    if (buf) {
        ember_wire_pull_response_encode(&m, buf + base);
        off.values += base;
        off.found += base;
        rc = pull_alone(w, &p, buf, &off, &err);
    }
    answer_reply(c, rc, &err, buf, base, size, SRV_M_PULL, p.n, p.n, 0);
    if (q)
        co_drain(w, q, p.t, pull_kind(&p));
    srv_table_unref(p.t);
}

void srv_shard_push(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    ember_wire_push_request r;
    push_plan p;
    ember_error err;
    ember_error_clear(&err);
    int rc = ember_wire_push_request_decode(req, len, &r, err.message, sizeof err.message);
    if (rc || (rc = push_prepare(&r, &p, &err))) {
        answer_error(c, rc, &err);
        return;
    }
    if ((rc = push_replication(c, &p, &err))) {
        answer_error(c, rc, &err);
        srv_table_unref(p.t);
        return;
    }
    int dup = push_duplicate(&p), kept = 0;
    srv_co_queue *q = dup ? NULL : push_queue(&p);
    if (q && !srv_co_try_alone(q)) {
        rc = push_enqueue(w, c, &p, q, JOB_PUSH, NULL, &err);
        if (rc) {
            push_mark_end(r.client_id, r.sequence, rc, 0);
            answer_error(c, rc, &err);
        }
        srv_table_unref(p.t);
        return;
    }
    if (!dup) {
        rc = push_alone(w, &p, &kept, &err);
        push_mark_end(r.client_id, r.sequence, rc, kept);
    }
    srv_call_drop_request(c);
    if (rc) {
        answer_error(c, rc, &err);
    } else {
        srv_metrics_keys(SRV_M_PUSH, p.n, 0, dup ? 0 : p.n);
        ember_wire_push_response m = {dup ? 0 : p.n, dup, srv_follow_term()};
        uint8_t out[32];
        size_t n = ember_wire_push_response_encode(&m, out);
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)out, n);
        srv_call_finish(c, EMBER_OK, NULL, &s);
    }
    if (q)
        co_drain(w, q, p.t, push_kind(r.mode));
    srv_table_unref(p.t);
}

/* Validates a PushPull (both parts, everything the table would refuse, before
 * anything is written); on success pp->t and pl->t hold references (NULL for an
 * absent part). */
static int pushpull_prepare(const ember_wire_pushpull_request *r, push_plan *pp, pull_plan *pl,
                            ember_error *err)
{
    int rc;
    memset(pp, 0, sizeof *pp);
    memset(pl, 0, sizeof *pl);
    if (!r->has_push && !r->has_pull)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "PushPull with neither push nor pull");
    if (r->has_push && (rc = push_prepare(&r->push, pp, err)))
        return rc;
    if (r->has_pull && (rc = pull_prepare(&r->pull, pl, err)))
        goto fail;
    if (r->has_push && r->has_pull &&
        (double)r->pull.keys.len + r->push.keys.len > 8.0 * (double)srv.cfg.max_keys_per_request) {
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                             "%zu keys in one request, over this server's "
                             "--max-keys-per-request of %llu",
                             (r->pull.keys.len + r->push.keys.len) / 8,
                             (unsigned long long)srv.cfg.max_keys_per_request);
        goto fail;
    }
    /* the pull runs after the push is applied: refuse its reserved keys (the one
     * thing the table would refuse in a pull) now, before anything is written */
    if (r->has_pull && (rc = wire_keys_check(r->pull.keys, "pull ", err)))
        goto fail;
    return 0;
fail:
    srv_table_unref(pp->t);
    srv_table_unref(pl->t);
    pp->t = pl->t = NULL;
    return rc;
}

/* The pull of a PushPull whose push is done (`applied` keys, or a duplicate),
 * and the call's answer. */
static void pushpull_reply(srv_worker *w, srv_call *c, const ember_wire_pushpull_request *r,
                           const pull_plan *pl, size_t applied, int dup)
{
    ember_wire_pushpull_response m = {0};
    ember_wire_off off = {0};
    srv_co_queue *drain = NULL;
    ember_error err;
    size_t base = 0;
    ember_error_clear(&err);
    m.has_push = r->has_push;
    m.has_pull = r->has_pull;
    m.push.applied = applied;
    m.push.duplicate = dup;
    m.push.term = srv_follow_term();
    if (r->has_pull)
        pull_reply_shape(pl, &m.pull);
    size_t size = ember_wire_pushpull_response_size(&m, &off);
    uint8_t *buf = reply_buf(w, size, off.values, &base, &err);
    int rc = buf ? 0 : err.code;
    if (buf) {
        ember_wire_pushpull_response_encode(&m, buf + base);
        off.values += base;
        off.found += base;
        if (r->has_pull)
            rc = pull_now(w, pl, buf, &off, &drain, &err);
    }
    answer_reply(c, rc, &err, buf, base, size, SRV_M_PUSHPULL, pl->n + r->push.keys.len / 8,
                 pl->n, applied);
    if (drain)
        co_drain(w, drain, pl->t, pull_kind(pl));
}

/* The same for a PushPull whose push waited in a queue: on the queue's runner,
 * long after the worker that received the call moved on, so it reads the request
 * again — validated when it came, and its pull runs on the table it was validated
 * against (j->pull_t), whatever happened to the name since: the push is applied,
 * so only the pull may still fail. */
static void pushpull_pull(srv_worker *w, co_job *j, size_t applied)
{
    srv_call *c = j->call;
    ember_wire_pushpull_request r;
    pull_plan pl;
    ember_error err;
    const uint8_t *req;
    size_t len;
    ember_error_clear(&err);
    int rc = srv_payload_bytes(w, c->payload, srv_methods[SRV_M_PUSHPULL].align, &req, &len, &err);
    if (!rc)
        rc = ember_wire_pushpull_request_decode(req, len, &r, err.message, sizeof err.message);
    if (rc) {
        ember_error e;
        ember_error_set(&e, rc, "the push was applied; its pull failed: %s", err.message);
        answer_error(c, rc, &e);
        return;
    }
    memset(&pl, 0, sizeof pl);
    if (r.has_pull) {
        pl.req = &r.pull;
        pl.t = j->pull_t;
        pl.n = r.pull.keys.len / 8;
        pl.dim = ember_table_dim(pl.t->table);
        pl.dsize = ember_wire_dtype_size(r.pull.dtype);
        pl.pooled = r.pull.combiner != EMBER_WIRE_COMBINER_NONE; /* validated */
        pl.rows = pl.pooled ? r.pull.offsets.len / 8 - 1 : pl.n;
    }
    pushpull_reply(w, c, &r, &pl, applied, 0);
}

void srv_shard_pushpull(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    ember_wire_pushpull_request r;
    push_plan pp;
    pull_plan pl;
    ember_error err;
    ember_error_clear(&err);
    int rc = ember_wire_pushpull_request_decode(req, len, &r, err.message, sizeof err.message);
    if (rc || (rc = pushpull_prepare(&r, &pp, &pl, &err))) {
        answer_error(c, rc, &err);
        return;
    }
    if (r.has_push && (rc = push_replication(c, &pp, &err))) {
        answer_error(c, rc, &err);
        srv_table_unref(pp.t);
        srv_table_unref(pl.t);
        return;
    }
    int dup = r.has_push && push_duplicate(&pp), kept = 0;
    srv_co_queue *q = r.has_push && !dup ? push_queue(&pp) : NULL;
    if (q && !srv_co_try_alone(q)) {
        rc = push_enqueue(w, c, &pp, q, JOB_PUSHPULL, pl.t, &err);
        if (rc) {
            push_mark_end(r.push.client_id, r.push.sequence, rc, 0);
            answer_error(c, rc, &err);
        }
    } else {
        if (r.has_push && !dup) {
            rc = push_alone(w, &pp, &kept, &err);
            push_mark_end(r.push.client_id, r.push.sequence, rc, kept);
        }
        if (rc)
            answer_error(c, rc, &err);
        else
            pushpull_reply(w, c, &r, &pl, dup ? 0 : pp.n, dup);
        if (q)
            co_drain(w, q, pp.t, push_kind(r.push.mode));
    }
    srv_table_unref(pp.t);
    srv_table_unref(pl.t);
}

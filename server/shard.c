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
 * runs as above. One that finds it busy is validated here first — everything
 * the table would refuse: reserved keys, and non-finite values where the table
 * rejects them — so that a batch never fails for another caller's input; then
 * it joins a batch and writes its keys (and values) into the batch's buffers.
 * A batch of pulls is one find/find_or_insert into one pooled buffer, and each
 * float32 reply is a few slices: its own header and a slice of that buffer (no
 * copy). A batch of pushes is one table call per mode, with one exception:
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
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proto/wire.h"
#include "server/coalesce.h"
#include "server/log.h"
#include "server/metrics.h"
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
} pull_plan;

typedef struct push_plan {
    srv_table *t;
    const ember_wire_push_request *req;
    size_t n;
    uint32_t dim;
    size_t dsize;
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

/* Validates a pull; on success p->t holds a table reference. */
static int pull_prepare(const ember_wire_pull_request *r, pull_plan *p, ember_error *err)
{
    memset(p, 0, sizeof *p);
    p->req = r;
    p->n = r->keys.len / 8;
    int rc = check_dtype(r->dtype, err);
    if (!rc)
        rc = check_count(p->n, err);
    if (!rc)
        rc = lookup(r->table, &p->t, err);
    if (rc)
        return rc;
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
    else if ((double)p->n * p->dim * p->dsize + (double)p->n + 64 >
             (double)srv.cfg.max_message_bytes)
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                             "the reply to %zu keys × dim %u in %s would be over this "
                             "server's --max-message-bytes of %llu",
                             p->n, p->dim, ember_wire_dtype_name(r->dtype),
                             (unsigned long long)srv.cfg.max_message_bytes);
    if (rc) {
        srv_table_unref(p->t);
        p->t = NULL;
    }
    return rc;
}

static int push_prepare(const ember_wire_push_request *r, push_plan *p, ember_error *err)
{
    memset(p, 0, sizeof *p);
    p->req = r;
    p->n = r->keys.len / 8;
    int rc = check_dtype(r->dtype, err);
    if (!rc && (r->mode < EMBER_WIRE_PUSH_GRADIENTS || r->mode > EMBER_WIRE_PUSH_INSERT_OR_ASSIGN))
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "unknown push mode %d (gradients = 0, assign = 1, accum = 2, "
                             "insert_or_assign = 3)",
                             (int)r->mode);
    if (!rc)
        rc = check_count(p->n, err);
    if (!rc)
        rc = lookup(r->table, &p->t, err);
    if (rc)
        return rc;
    p->dim = ember_table_dim(p->t->table);
    p->dsize = ember_wire_dtype_size(r->dtype);
    if (r->values.len != p->n * p->dim * p->dsize)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "values are %zu bytes; %zu keys × dim %u in %s need %zu",
                             r->values.len, p->n, p->dim, ember_wire_dtype_name(r->dtype),
                             p->n * p->dim * p->dsize);
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

/* ---- coalescing: shared parts ------------------------------------------- */

/* Whether calls on `t` coalesce (--coalesce; auto: t is on the gpu backend). */
static int coalesces(const srv_table *t)
{
    if (srv.cfg.coalesce == SRV_COALESCE_ON)
        return 1;
    if (srv.cfg.coalesce == SRV_COALESCE_OFF)
        return 0;
    return !strcmp(ember_table_backend_name(ember_table_backend_of(t->table)), "gpu");
}

/* The buffers a batch's members write into: its leader's. */
typedef struct co_bufs {
    uint64_t *keys;
    float *vals; /* pushes */
} co_bufs;

/* Key slots of a batch led by a call of n keys: --coalesce-max-keys, and no more
 * values than one message may hold; never fewer than the call's own. */
static size_t co_cap(size_t n, uint32_t dim)
{
    size_t cap = srv.cfg.coalesce_max_keys;
    size_t by_bytes = srv.cfg.max_message_bytes / ((size_t)dim * sizeof(float));
    if (cap > by_bytes)
        cap = by_bytes;
    return cap < n ? n : cap;
}

/* The worker's batch buffers, grown to `cap` keys (and cap × dim floats when
 * `vals`): only a batch this worker leads uses them, but whether it will lead is
 * known only on joining. They are grow-only: after the first batch of a size this
 * is a compare, and pages a batch never fills are never touched. */
static int co_bufs_get(srv_worker *w, size_t cap, uint32_t dim, int vals, co_bufs *b)
{
    b->keys = srv_scratch_grow((void **)&w->co_keys, &w->co_keys_cap, cap, 8);
    b->vals = vals ? srv_scratch_grow((void **)&w->co_floats, &w->co_floats_cap,
                                      cap * dim, sizeof(float))
                   : NULL;
    return b->keys && (!vals || b->vals);
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
    if (b->cb_members >= 2) {
        atomic_fetch_add_explicit(&c->co_batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_calls, b->cb_members, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_keys, b->cb_keys, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->co_split_calls, split, memory_order_relaxed);
        atomic_max(&c->co_max_keys, b->cb_keys);
        atomic_max(&c->co_max_calls, b->cb_members);
    }
    if (srv_log_level() >= SRV_LOG_DEBUG) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        srv_log(SRV_LOG_DEBUG, "coalesced_batch",
                "table=%s kind=%s calls=%u keys=%zu layers=%u code=%s us=%.1f", t->name,
                srv_co_kind_name(kind), b->cb_members, b->cb_keys, split + 1,
                ember_status_name(rc),
                (double)(now.tv_sec - t0->tv_sec) * 1e6 +
                    (double)(now.tv_nsec - t0->tv_nsec) / 1e3);
    }
}

/* What the table would refuse in a call's keys, checked on the wire bytes. */
static int wire_keys_check(ember_wire_bytes keys, ember_error *err)
{
    size_t n = keys.len / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t k;
        memcpy(&k, keys.data + 8 * i, 8);
        if (ember_key_is_reserved(k))
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "key %llu at index %zu is reserved (keys >= %llu are)",
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

/* The queue a push joins; NULL when it runs on its own. */
static srv_co_queue *push_queue(const push_plan *p)
{
    if (!p->n || p->req->scores.len || !coalesces(p->t))
        return NULL;
    return &p->t->co[push_kind(p->req->mode)];
}

/* One table call of a push `kind`; scores only for calls that run alone. */
static int push_call(ember_table *t, srv_co_kind kind, const uint64_t *keys, size_t n,
                     const float *vals, const uint64_t *scores, ember_error *err)
{
    switch (kind) {
    case SRV_CO_GRADIENTS: return ember_table_apply_gradients(t, keys, n, vals, scores, err);
    case SRV_CO_ASSIGN: return ember_table_assign(t, keys, n, vals, NULL, scores, err);
    case SRV_CO_ACCUM: return ember_table_accum(t, keys, n, vals, NULL, err);
    default: return ember_table_insert_or_assign(t, keys, n, vals, scores, err);
    }
}

/* Marks (client_id, sequence) seen; 1 when it had been: a duplicate, counted. */
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

static void push_applied(const push_plan *p)
{
    atomic_fetch_add_explicit(&p->t->counters.pushes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->t->counters.keys_pushed, p->n, memory_order_relaxed);
}

/* Runs a validated push on its own. On failure, *kept = 1 when something may
 * have been applied (its at-most-once mark must stay). */
static int push_alone(srv_worker *w, const push_plan *p, int *kept, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    size_t n = p->n, nv = n * p->dim;
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
    int rc = push_call(p->t->table, push_kind(r->mode), keys, n, vals, scores, err);
    if (rc) /* refused, nothing applied: a corrected retry may go through */
        return rc;
    push_applied(p);
    return 0;
}

/* Before joining a batch: everything the table would refuse in this push. */
static int push_check(const push_plan *p, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    int rc = wire_keys_check(r->keys, err);
    if (rc)
        return rc;
    int zeroable = r->mode == EMBER_WIRE_PUSH_GRADIENTS || r->mode == EMBER_WIRE_PUSH_ACCUM;
    if (zeroable && ember_table_config_of(p->t->table)->nonfinite == EMBER_NONFINITE_ZERO)
        return 0;
    size_t nv = p->n * p->dim, bad = wire_first_nonfinite(r->dtype, r->values.data, nv);
    if (bad < nv)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s of key index %zu hold a non-finite value (NaN or Inf)",
                               r->mode == EMBER_WIRE_PUSH_GRADIENTS ? "gradients"
                               : r->mode == EMBER_WIRE_PUSH_ACCUM   ? "deltas"
                                                                    : "values",
                               bad / p->dim);
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
static int gradients_layers(srv_worker *w, srv_table *t, const srv_co_batch *b, co_bufs *bb,
                            uint32_t *layers, int *applied, ember_error *err)
{
    size_t N = b->cb_keys, m = 0;
    uint32_t dim = ember_table_dim(t->table);
    size_t map_cap = srv_co_layers_map_cap(N);
    size_t *starts = srv_scratch_grow((void **)&w->co_starts, &w->co_starts_cap,
                                      2 * (size_t)b->cb_members + 2, sizeof(size_t));
    uint32_t *layer = srv_scratch_grow((void **)&w->co_layer, &w->co_layer_cap, N, 4);
    srv_co_slot *map = srv_scratch_grow(&w->co_map, &w->co_map_cap, map_cap,
                                        sizeof(srv_co_slot));
    *layers = 0;
    if (!starts || !layer || !map)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory ordering a batch of %zu keys", N);
    for (const srv_co_member *mb = b->cb_first; mb; mb = mb->cm_next)
        starts[m++] = mb->cm_off;
    uint32_t top = srv_co_layers(bb->keys, N, starts, m, layer, map, map_cap);
    *layers = top;
    if (!top)
        return push_call(t->table, SRV_CO_GRADIENTS, bb->keys, N, bb->vals, NULL, err);
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
                bb->keys[front] = bb->keys[i];
                memcpy(bb->vals + front * dim, bb->vals + i * dim, row);
            }
            front++;
        } else {
            size_t q = pos[layer[i]]++;
            sk[q] = bb->keys[i];
            memcpy(sv + q * dim, bb->vals + i * dim, row);
        }
    }
    int rc = push_call(t->table, SRV_CO_GRADIENTS, bb->keys, front, bb->vals, NULL, err);
    size_t at = 0;
    for (uint32_t l = 1; !rc && l <= top; l++) {
        *applied = 1;
        rc = push_call(t->table, SRV_CO_GRADIENTS, sk + at, cnt[l], sv + at * dim, NULL, err);
        at += cnt[l];
    }
    return rc;
}

/* A leader runs its closed push batch; returns its status. */
static int push_batch_run(srv_worker *w, srv_table *t, srv_co_kind kind, const srv_co_batch *b,
                          co_bufs *bb, uint32_t *layers, int *applied, ember_error *err)
{
    *layers = 0;
    *applied = 0;
    if (kind == SRV_CO_GRADIENTS && b->cb_members > 1 && gradients_layered(t->table))
        return gradients_layers(w, t, b, bb, layers, applied, err);
    return push_call(t->table, kind, bb->keys, b->cb_keys, bb->vals, NULL, err);
}

/* A push batch's result when it failed after a layer was applied (out of memory,
 * a device error): its members keep their at-most-once marks. */
static const char partly_applied[] = "partly applied";

/* Runs a validated push through the table's queue `q` (which was busy). */
static int push_coalesced(srv_worker *w, const push_plan *p, srv_co_queue *q, int *kept,
                          ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    srv_co_kind kind = push_kind(r->mode);
    size_t cap = co_cap(p->n, p->dim);
    co_bufs bufs;
    *kept = 0;
    int rc = push_check(p, err);
    if (rc)
        return rc;
    if (!co_bufs_get(w, cap, p->dim, 1, &bufs)) /* no room to lead: run beside the batches */
        return push_alone(w, p, kept, err);
    srv_co_member m;
    srv_co_batch b;
    int lead = srv_co_join(q, &m, p->n, &b, &bufs, cap);
    co_bufs *dst = m.cm_bufs;
    ember_wire_keys_copy(r->keys, dst->keys + m.cm_off);
    ember_wire_from_wire(r->dtype, r->values.data, p->n * p->dim, dst->vals + m.cm_off * p->dim);
    if (lead) {
        srv_co_batch *run = srv_co_lead(q, &m, srv.cfg.coalesce_wait_us);
        struct timespec t0;
        uint32_t layers;
        int applied;
        ember_error berr;
        ember_error_clear(&berr);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int brc = push_batch_run(w, p->t, kind, run, &bufs, &layers, &applied, &berr);
        co_account(p->t, kind, run, layers, brc, &t0);
        srv_co_finish(q, run, brc, &berr, applied ? (void *)partly_applied : NULL);
    } else {
        srv_co_wait(q, &m);
    }
    if (m.cm_status) {
        *err = m.cm_err;
        /* a batch refused as a whole changed nothing: a retry may go through; one
         * that failed half-way keeps the mark (at most once, as dedup.h says) */
        *kept = m.cm_result != NULL;
        return m.cm_status;
    }
    push_applied(p);
    return 0;
}

/* Runs a validated push: alone when its table's queue is idle (or it does not
 * coalesce), else in a batch. *duplicate = 1 when (client_id, sequence) was
 * applied before. The at-most-once mark is taken first, before any queue is
 * joined, since srv_dedup_begin may wait for this push's original (a retry of a
 * push still queued): holding the queue meanwhile could stop that original. */
static int push_run(srv_worker *w, const push_plan *p, int *duplicate, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    *duplicate = 0;
    if (push_duplicate(p)) {
        *duplicate = 1;
        return 0;
    }
    int rc, kept = 0;
    srv_co_queue *q = push_queue(p);
    if (q && !srv_co_try_alone(q)) {
        rc = push_coalesced(w, p, q, &kept, err);
    } else {
        rc = push_alone(w, p, &kept, err);
        if (q)
            srv_co_alone_done(q);
    }
    if (r->client_id) {
        if (rc && !kept)
            srv_dedup_abort(srv.dedup, r->client_id, r->sequence);
        else
            srv_dedup_end(srv.dedup, r->client_id, r->sequence);
    }
    return rc;
}

/* ---- pull ---------------------------------------------------------------- */

/* The queue a pull joins; NULL when it runs on its own. */
static srv_co_queue *pull_queue(const pull_plan *p)
{
    if (!p->n || p->req->scores.len || !coalesces(p->t))
        return NULL;
    return &p->t->co[p->req->insert_missing ? SRV_CO_FIND_OR_INSERT : SRV_CO_FIND];
}

/* Runs a validated pull on its own into the reply `m` already encoded at `msg`
 * whose values start at msg + off->values (64-byte aligned) and found at
 * msg + off->found. */
static int pull_alone(srv_worker *w, const pull_plan *p, uint8_t *msg, const ember_wire_off *off,
                      ember_error *err)
{
    const ember_wire_pull_request *r = p->req;
    size_t n = p->n, nv = n * p->dim;
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
    return 0;
}

static void pull_served(const pull_plan *p)
{
    if (!p->n) /* as before coalescing: empty pulls are not counted */
        return;
    atomic_fetch_add_explicit(&p->t->counters.pulls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->t->counters.keys_pulled, p->n, memory_order_relaxed);
}

/* A member of a pull batch: the leader fills buf/vals/found for each member
 * before waking it; buf holds one reference for it. */
typedef struct pull_member {
    srv_co_member m; /* first: the leader walks members as srv_co_member */
    const pull_plan *p;
    uint8_t *buf;          /* the batch's pooled result buffer */
    const uint8_t *vals;   /* this member's float32 rows in it */
    const uint8_t *found;  /* this member's found flags in it (when any member asked) */
} pull_member;

/* A leader runs its closed pull batch into one pooled buffer: rows, then found. */
static int pull_batch_run(srv_worker *w, const pull_plan *p, const srv_co_batch *b,
                          const co_bufs *bb, ember_error *err)
{
    size_t N = b->cb_keys, vbytes = N * p->dim * sizeof(float);
    int want_found = 0;
    for (const srv_co_member *m = b->cb_first; m; m = m->cm_next)
        want_found |= ((const pull_member *)(const void *)m)->p->req->want_found;
    uint8_t *buf = srv_rbuf_get(w, vbytes + N);
    if (!buf)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory for a batch of %zu keys", N);
    float *vals = (float *)(void *)buf;
    uint8_t *found = want_found ? buf + vbytes : NULL;
    int rc = p->req->insert_missing
                 ? ember_table_find_or_insert(p->t->table, bb->keys, N, vals, found, NULL, err)
                 : ember_table_find(p->t->table, bb->keys, N, vals, found, err);
    if (rc) {
        srv_rbuf_drop(buf);
        return rc;
    }
    srv_rbuf_ref(buf, b->cb_members - 1); /* one for each member */
    for (srv_co_member *m = b->cb_first; m; m = m->cm_next) {
        pull_member *pm = (pull_member *)(void *)m;
        pm->buf = buf;
        pm->vals = buf + m->cm_off * p->dim * sizeof(float);
        pm->found = found ? found + m->cm_off : NULL;
    }
    return 0;
}

/* Runs a validated pull through the table's queue `q` (which was busy). On OK,
 * pm->buf holds a reference the caller hands on or drops. *bypass = 1 when this
 * worker has no room to lead a batch: run alone, beside the batches. */
static int pull_coalesced(srv_worker *w, const pull_plan *p, srv_co_queue *q, pull_member *pm,
                          int *bypass, ember_error *err)
{
    size_t cap = co_cap(p->n, p->dim);
    co_bufs bufs;
    *bypass = 0;
    int rc = wire_keys_check(p->req->keys, err);
    if (rc)
        return rc;
    if (!co_bufs_get(w, cap, p->dim, 0, &bufs)) {
        *bypass = 1;
        return 0;
    }
    srv_co_batch b;
    pm->p = p;
    pm->buf = NULL;
    int lead = srv_co_join(q, &pm->m, p->n, &b, &bufs, cap);
    ember_wire_keys_copy(p->req->keys, ((co_bufs *)pm->m.cm_bufs)->keys + pm->m.cm_off);
    if (lead) {
        srv_co_batch *run = srv_co_lead(q, &pm->m, srv.cfg.coalesce_wait_us);
        srv_co_kind kind = p->req->insert_missing ? SRV_CO_FIND_OR_INSERT : SRV_CO_FIND;
        struct timespec t0;
        ember_error berr;
        ember_error_clear(&berr);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int brc = pull_batch_run(w, p, run, &bufs, &berr);
        co_account(p->t, kind, run, 0, brc, &t0);
        srv_co_finish(q, run, brc, &berr, NULL);
    } else {
        srv_co_wait(q, &pm->m);
    }
    if (pm->m.cm_status) {
        *err = pm->m.cm_err;
        return pm->m.cm_status;
    }
    pull_served(p);
    return 0;
}

/* Copies a batch member's rows (converted to the reply's dtype) and found flags
 * into its reply `msg` encoded with holes at off, and lets go of the batch's
 * buffer. */
static void pull_copy_out(pull_member *pm, uint8_t *msg, const ember_wire_off *off)
{
    const ember_wire_pull_request *r = pm->p->req;
    size_t nv = pm->p->n * pm->p->dim;
    if (r->dtype == EMBER_WIRE_F32)
        memcpy(msg + off->values, pm->vals, nv * sizeof(float));
    else
        ember_wire_to_wire(r->dtype, (const float *)(const void *)pm->vals, nv,
                           msg + off->values);
    if (r->want_found)
        memcpy(msg + off->found, pm->found, pm->p->n);
    srv_rbuf_drop(pm->buf);
    pm->buf = NULL;
}

/* Runs a validated pull into a reply encoded at msg (see pull_alone): alone or in
 * a batch (PushPull's pull). */
static int pull_run(srv_worker *w, const pull_plan *p, uint8_t *msg, const ember_wire_off *off,
                    ember_error *err)
{
    srv_co_queue *q = pull_queue(p);
    if (q && !srv_co_try_alone(q)) {
        pull_member pm;
        int bypass, rc = pull_coalesced(w, p, q, &pm, &bypass, err);
        if (!bypass) {
            if (!rc)
                pull_copy_out(&pm, msg, off);
            return rc;
        }
        q = NULL;
    }
    int rc = pull_alone(w, p, msg, off, err);
    if (q)
        srv_co_alone_done(q);
    if (!rc)
        pull_served(p);
    return rc;
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

/* A float32 batch member's PullResponse without copying its rows: slices of
 * field 1's tag and length, its rows in the batch's buffer, fields 2–3 and
 * field 4's tag and length, and its found flags in the batch's buffer — the
 * bytes ember_wire_pull_response_encode would write (fields in order, defaults
 * left out). Hands pm->buf's reference on. */
static void pull_reply_slices(pull_member *pm, srv_reply *resp)
{
    const pull_plan *p = pm->p;
    size_t vlen = p->n * p->dim * sizeof(float);
    uint8_t head[16], mid[40];
    size_t h = 0, k = 0;
    head[h++] = 0x0a; /* 1: values, bytes */
    h += put_varint(head + h, vlen);
    mid[k++] = 0x10; /* 2: dim */
    k += put_varint(mid + k, p->dim);
    if (p->req->dtype) {
        mid[k++] = 0x18; /* 3: dtype */
        k += put_varint(mid + k, (uint64_t)(int64_t)p->req->dtype);
    }
    if (p->req->want_found) {
        mid[k++] = 0x22; /* 4: found, bytes */
        k += put_varint(mid + k, p->n);
    }
    srv_reply_add(resp, grpc_slice_from_copied_buffer((const char *)head, h));
    if (p->req->want_found)
        srv_rbuf_ref(pm->buf, 1);
    srv_reply_add(resp, srv_rbuf_slice(pm->buf, (size_t)(pm->vals - pm->buf), vlen));
    srv_reply_add(resp, grpc_slice_from_copied_buffer((const char *)mid, k));
    if (p->req->want_found)
        srv_reply_add(resp, srv_rbuf_slice(pm->buf, (size_t)(pm->found - pm->buf), p->n));
    pm->buf = NULL;
}

static void pull_reply_shape(const pull_plan *p, ember_wire_pull_response *m)
{
    memset(m, 0, sizeof *m);
    m->values.len = p->n * p->dim * p->dsize;
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

int srv_shard_pull(srv_worker *w, const uint8_t *req, size_t len, srv_reply *resp,
                   ember_error *err)
{
    ember_wire_pull_request r;
    pull_plan p;
    ember_wire_pull_response m;
    ember_wire_off off;
    size_t base;
    int rc = ember_wire_pull_request_decode(req, len, &r, err->message, sizeof err->message);
    if (rc)
        return err->code = rc;
    if ((rc = pull_prepare(&r, &p, err)))
        return rc;
    pull_reply_shape(&p, &m);
    size_t size = ember_wire_pull_response_size(&m, &off);
    srv_co_queue *q = pull_queue(&p);
    pull_member pm;
    pm.buf = NULL;
    if (q && !srv_co_try_alone(q)) {
        int bypass;
        rc = pull_coalesced(w, &p, q, &pm, &bypass, err);
        if (!bypass && (rc || r.dtype == EMBER_WIRE_F32)) {
            if (!rc) {
                pull_reply_slices(&pm, resp);
                srv_metrics_keys(SRV_M_PULL, p.n, p.n, 0);
            }
            srv_table_unref(p.t);
            return rc;
        }
        /* bypass: run alone beside the batches; else convert pm's rows below */
        q = NULL;
    }
    uint8_t *buf = reply_buf(w, size, off.values, &base, err);
    if (!buf) {
        if (q)
            srv_co_alone_done(q);
        if (pm.buf)
            srv_rbuf_drop(pm.buf);
        srv_table_unref(p.t);
        return err->code;
    }
    ember_wire_pull_response_encode(&m, buf + base);
    off.values += base;
    off.found += base;
    if (pm.buf) {
        pull_copy_out(&pm, buf, &off);
    } else {
        rc = pull_alone(w, &p, buf, &off, err);
        if (q)
            srv_co_alone_done(q);
        if (!rc)
            pull_served(&p);
    }
    srv_table_unref(p.t);
    if (rc) {
        srv_rbuf_drop(buf);
        return rc;
    }
    srv_reply_add(resp, srv_rbuf_slice(buf, base, size));
    srv_metrics_keys(SRV_M_PULL, p.n, p.n, 0);
    return 0;
}

int srv_shard_push(srv_worker *w, const uint8_t *req, size_t len, srv_reply *resp,
                   ember_error *err)
{
    ember_wire_push_request r;
    push_plan p;
    int dup, rc = ember_wire_push_request_decode(req, len, &r, err->message,
                                                 sizeof err->message);
    if (rc)
        return err->code = rc;
    if ((rc = push_prepare(&r, &p, err)))
        return rc;
    rc = push_run(w, &p, &dup, err);
    srv_table_unref(p.t);
    if (rc)
        return rc;
    srv_metrics_keys(SRV_M_PUSH, p.n, 0, dup ? 0 : p.n);
    ember_wire_push_response m = {dup ? 0 : p.n, dup};
    uint8_t out[32];
    size_t n = ember_wire_push_response_encode(&m, out);
    srv_reply_add(resp, grpc_slice_from_copied_buffer((const char *)out, n));
    return 0;
}

int srv_shard_pushpull(srv_worker *w, const uint8_t *req, size_t len, srv_reply *resp,
                       ember_error *err)
{
    ember_wire_pushpull_request r;
    push_plan pp = {0};
    pull_plan pl = {0};
    int dup = 0, rc = ember_wire_pushpull_request_decode(req, len, &r, err->message,
                                                         sizeof err->message);
    if (rc)
        return err->code = rc;
    if (!r.has_push && !r.has_pull)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "PushPull with neither push nor pull");
    if (r.has_push && (rc = push_prepare(&r.push, &pp, err)))
        return rc;
    if (r.has_pull && (rc = pull_prepare(&r.pull, &pl, err))) {
        srv_table_unref(pp.t);
        return rc;
    }
    if (r.has_push && r.has_pull &&
        (double)r.pull.keys.len + r.push.keys.len > 8.0 * (double)srv.cfg.max_keys_per_request) {
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                             "%zu keys in one request, over this server's "
                             "--max-keys-per-request of %llu",
                             (r.pull.keys.len + r.push.keys.len) / 8,
                             (unsigned long long)srv.cfg.max_keys_per_request);
        goto out;
    }
    /* the pull runs after the push is applied: refuse its reserved keys (the one
     * thing the table would refuse in a pull) now, before anything is written */
    for (size_t i = 0; r.has_pull && i < pl.n; i++) {
        uint64_t k;
        memcpy(&k, r.pull.keys.data + 8 * i, 8);
        if (ember_key_is_reserved(k)) {
            rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                 "pull key %llu at index %zu is reserved (keys >= %llu are)",
                                 (unsigned long long)k, i,
                                 (unsigned long long)EMBER_KEY_RESERVED_MIN);
            goto out;
        }
    }
    ember_wire_pushpull_response m = {0};
    ember_wire_off off = {0};
    m.has_push = r.has_push;
    m.has_pull = r.has_pull;
    if (r.has_pull)
        pull_reply_shape(&pl, &m.pull);
    if (r.has_push && (rc = push_run(w, &pp, &dup, err)))
        goto out;
    m.push.applied = dup ? 0 : pp.n;
    m.push.duplicate = dup;
    size_t base, size = ember_wire_pushpull_response_size(&m, &off);
    uint8_t *buf = reply_buf(w, size, off.values, &base, err);
    if (!buf) {
        rc = err->code;
        goto out;
    }
    ember_wire_pushpull_response_encode(&m, buf + base);
    if (r.has_pull) {
        off.values += base;
        off.found += base;
        if ((rc = pull_run(w, &pl, buf, &off, err))) {
            srv_rbuf_drop(buf);
            goto out;
        }
    }
    srv_reply_add(resp, srv_rbuf_slice(buf, base, size));
    srv_metrics_keys(SRV_M_PUSHPULL, pl.n + pp.n, pl.n, dup ? 0 : pp.n);
out:
    srv_table_unref(pp.t);
    srv_table_unref(pl.t);
    return rc;
}

/*
 * shard.c — ember.v1.Shard: Pull, Push, PushPull, through the hand-written codec
 * (proto/wire.h).
 *
 * Every request is validated completely before the table is touched — table,
 * dtype, mode, key count against --max-keys-per-request, every length against
 * the table's dim, the reply's size against --max-message-bytes — and the table
 * itself refuses reserved keys and non-finite gradients before writing. So a
 * refused call changes nothing. Keys and values are copied out of the request
 * into the worker's aligned scratch (the wire puts them at odd offsets); a Pull
 * reply's float32 values are written by the table straight into the outgoing
 * slice, at a 64-byte-aligned offset of a pooled buffer.
 */
#include <stdio.h>
#include <string.h>

#include "proto/wire.h"
#include "server/log.h"
#include "server/rpc.h"
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
    if (!srv_name_valid((const char *)name.data, name.len))
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

/* Runs a validated push. *duplicate = 1 when (client_id, sequence) was seen. */
static int push_run(srv_worker *w, const push_plan *p, int *duplicate, ember_error *err)
{
    const ember_wire_push_request *r = p->req;
    size_t n = p->n, nv = n * p->dim;
    *duplicate = 0;
    uint64_t *keys = srv_scratch_keys(w, n ? n : 1);
    float *vals = srv_scratch_floats(w, nv ? nv : 1);
    uint64_t *scores = r->scores.len ? srv_scratch_scores(w, n) : NULL;
    if (!keys || !vals || (r->scores.len && !scores))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
    ember_wire_keys_copy(r->keys, keys);
    ember_wire_from_wire(r->dtype, r->values.data, nv, vals);
    if (scores)
        ember_wire_keys_copy(r->scores, scores);
    if (r->client_id && !srv_dedup_begin(srv.dedup, r->client_id, r->sequence)) {
        *duplicate = 1;
        atomic_fetch_add_explicit(&p->t->counters.duplicate_pushes, 1, memory_order_relaxed);
        srv_log(SRV_LOG_DEBUG, "duplicate_push", "table=%s client_id=%llu sequence=%llu",
                p->t->name, (unsigned long long)r->client_id,
                (unsigned long long)r->sequence);
        return 0;
    }
    ember_table *t = p->t->table;
    int rc;
    switch (r->mode) {
    case EMBER_WIRE_PUSH_GRADIENTS:
        rc = ember_table_apply_gradients(t, keys, n, vals, scores, err);
        break;
    case EMBER_WIRE_PUSH_ASSIGN:
        rc = ember_table_assign(t, keys, n, vals, NULL, scores, err);
        break;
    case EMBER_WIRE_PUSH_ACCUM:
        rc = ember_table_accum(t, keys, n, vals, NULL, err);
        break;
    default:
        rc = ember_table_insert_or_assign(t, keys, n, vals, scores, err);
        break;
    }
    if (rc) {
        if (r->client_id) /* refused, nothing applied: a corrected retry may go through */
            srv_dedup_abort(srv.dedup, r->client_id, r->sequence);
        return rc;
    }
    atomic_fetch_add_explicit(&p->t->counters.pushes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->t->counters.keys_pushed, n, memory_order_relaxed);
    return 0;
}

/* Runs a validated pull into the reply `m` already encoded at `msg` whose values
 * start at msg + off->values (64-byte aligned) and found at msg + off->found. */
static int pull_run(srv_worker *w, const pull_plan *p, uint8_t *msg, const ember_wire_off *off,
                    ember_error *err)
{
    const ember_wire_pull_request *r = p->req;
    size_t n = p->n, nv = n * p->dim;
    if (!n)
        return 0;
    uint64_t *keys = srv_scratch_keys2(w, n);
    uint64_t *scores = r->scores.len ? srv_scratch_scores(w, n) : NULL;
    float *vals = r->dtype == EMBER_WIRE_F32 ? (float *)(void *)(msg + off->values)
                                             : srv_scratch_floats(w, nv);
    if (!keys || !vals || (r->scores.len && !scores))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
    ember_wire_keys_copy(r->keys, keys);
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
    atomic_fetch_add_explicit(&p->t->counters.pulls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->t->counters.keys_pulled, n, memory_order_relaxed);
    return 0;
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

int srv_shard_pull(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
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
    uint8_t *buf = reply_buf(w, size, off.values, &base, err);
    if (!buf) {
        srv_table_unref(p.t);
        return err->code;
    }
    ember_wire_pull_response_encode(&m, buf + base);
    off.values += base;
    off.found += base;
    rc = pull_run(w, &p, buf, &off, err);
    srv_table_unref(p.t);
    if (rc) {
        srv_rbuf_drop(buf);
        return rc;
    }
    *resp = srv_rbuf_slice(buf, base, size);
    return 0;
}

int srv_shard_push(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
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
    ember_wire_push_response m = {dup ? 0 : p.n, dup};
    uint8_t out[32];
    size_t n = ember_wire_push_response_encode(&m, out);
    *resp = grpc_slice_from_copied_buffer((const char *)out, n);
    return 0;
}

int srv_shard_pushpull(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
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
    *resp = srv_rbuf_slice(buf, base, size);
out:
    srv_table_unref(pp.t);
    srv_table_unref(pl.t);
    return rc;
}

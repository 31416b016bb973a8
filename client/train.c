/*
 * train.c — pull, push, push-pull and their async forms.
 *
 * One "train op" carries a pull part, a push part or both. Before anything is
 * sent: every key is checked (reserved keys refuse the whole call), pull keys are
 * deduplicated, push keys' gradients merged, and both grouped by shard. Each shard
 * then gets one request — Pull, Push, or PushPull when it has both parts — encoded
 * by proto/wire.h straight into a pooled buffer that gRPC sends without a copy;
 * all shards' requests start before any is waited on. Replies are decoded in
 * place (reply.h: from gRPC's slices, without flattening them) and their rows
 * scattered to the caller's order, duplicates included, converting from the wire
 * dtype in the same pass.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "client/reply.h"
#include "proto/wire.h"

enum { EMBER_CALL_TRAIN = 1 };

_Static_assert((int)EMBER_DTYPE_FLOAT32 == (int)EMBER_WIRE_F32 &&
                   (int)EMBER_DTYPE_FLOAT16 == (int)EMBER_WIRE_F16 &&
                   (int)EMBER_DTYPE_BFLOAT16 == (int)EMBER_WIRE_BF16,
               "ember_dtype is the wire's DType");
_Static_assert((int)EMBER_PUSH_GRADIENTS == (int)EMBER_WIRE_PUSH_GRADIENTS &&
                   (int)EMBER_PUSH_ASSIGN == (int)EMBER_WIRE_PUSH_ASSIGN &&
                   (int)EMBER_PUSH_ACCUM == (int)EMBER_WIRE_PUSH_ACCUM &&
                   (int)EMBER_PUSH_INSERT_OR_ASSIGN == (int)EMBER_WIRE_PUSH_INSERT_OR_ASSIGN,
               "ember_push_mode is the wire's PushMode");

typedef struct train_args {
    int has_pull, has_push;
    const char *table;
    const uint64_t *push_keys;
    size_t n_push;
    const float *values;
    int mode;
    const uint64_t *pull_keys;
    size_t n_pull;
    float *out;
    uint32_t dim;
    unsigned flags;
    const uint64_t *pull_scores, *push_scores; /* [n_pull] / [n_push], NULL: none */
    uint8_t *found;                            /* [n_pull], NULL: not asked */
    uint32_t epoch;
    int ack;                                   /* EMBER_ACK_*: the push's */
    uint32_t ack_replicas;
} train_args;

int ember_train_args_check(ember_client *c, const char *table, uint32_t dim, unsigned flags,
                           ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    int rv = ember_table_name_check(table, err);
    if (rv)
        return rv;
    if (dim == 0)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dim 0");
    if (flags & ~(EMBER_PULL_SERVE | EMBER_PULL_FOLLOWER))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown pull flags 0x%x", flags);
    if ((flags & EMBER_PULL_FOLLOWER) && !(flags & EMBER_PULL_SERVE))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "EMBER_PULL_FOLLOWER needs EMBER_PULL_SERVE: a follower "
                               "creates no key");
    return 0;
}

static int check_args(ember_client *c, const train_args *a, ember_error *err)
{
    int rv = ember_train_args_check(c, a->table, a->dim, a->flags, err);
    if (rv)
        return rv;
    if (a->mode < EMBER_PUSH_GRADIENTS || a->mode > EMBER_PUSH_INSERT_OR_ASSIGN)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown push mode %d",
                               a->mode);
    if (a->ack < EMBER_ACK_DEFAULT || a->ack > EMBER_ACK_REPLICATED)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown ack mode %d (EMBER_ACK_DEFAULT, _ASYNC, _REPLICATED)",
                               a->ack);
    if ((a->n_push && (!a->push_keys || !a->values)) || (a->n_pull && (!a->pull_keys || !a->out)))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "NULL keys, values or output with n > 0");
    if (a->pull_scores && (a->flags & EMBER_PULL_SERVE))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "scores are only used by a training pull (EMBER_PULL_INSERT)");
    if (a->push_scores && a->mode == EMBER_PUSH_ACCUM)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "scores are not used by accum pushes");
    size_t most = a->n_push > a->n_pull ? a->n_push : a->n_pull;
    if (most > SIZE_MAX / 16 / a->dim)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%zu keys × dim %u is too large", most, a->dim);
    return 0;
}

static int oom(ember_error *err)
{
    return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
}

/* Most keys in one request: c->chunk_bytes of values on the wire, and at most
 * EMBER_CHUNK_KEYS_MAX keys (well under the servers' default per-request limit). */
#define EMBER_CHUNK_KEYS_MAX 262144u

static size_t chunk_keys(const ember_client *c, uint32_t dim)
{
    size_t row = (size_t)dim * ember_wire_dtype_size((int32_t)c->wire_dtype);
    size_t k = c->chunk_bytes / row;
    if (k < 1)
        k = 1;
    return k < EMBER_CHUNK_KEYS_MAX ? k : EMBER_CHUNK_KEYS_MAX;
}

/* Grouped scores (batch.h) of a built batch: out[g] = the score of the LAST of
 * the caller's keys that is grouped key g, as the table keeps the last score
 * given. 0 or EMBER_RESOURCE_EXHAUSTED. */
static int group_scores(const ember_batch *b, const uint64_t *scores, uint64_t **out,
                        size_t *cap, ember_error *err)
{
    if (b->m > *cap) {
        void *p = realloc(*out, b->m * sizeof **out);
        if (!p)
            return oom(err);
        *out = p;
        *cap = b->m;
    }
    for (size_t i = 0; i < b->n; i++)
        (*out)[b->idx[i]] = scores[i];
    return 0;
}

/* Builds and sends every shard's request. NULL (err filled) if nothing was sent. */
static ember_call *train_begin(ember_client *c, const train_args *a, ember_error *err)
{
    if (check_args(c, a, err) != 0)
        return NULL;
    ember_call *op = ember_call_acquire(c, EMBER_CALL_TRAIN);
    if (!op) {
        oom(err);
        return NULL;
    }
    op->table = a->table;
    op->out = a->out;
    op->dim = a->dim;
    op->flags = a->flags;
    op->mode = a->mode;
    op->n = a->n_pull;
    op->keys = a->has_pull ? a->pull_keys : NULL;
    op->found = a->has_pull ? a->found : NULL;
    op->keep_slices = 1; /* train_finish reads replies from gRPC's slices */

    /* Every check before anything is sent: a refused call changes nothing. */
    ember_batch *pb = &op->pull_b, *ub = &op->push_b;
    const int have_pull = a->has_pull, have_push = a->has_push;
    if (have_pull && ember_batch_build(pb, a->pull_keys, a->n_pull, c->nshards, err) != 0)
        goto fail;
    if (have_push) {
        if (ember_batch_build(ub, a->push_keys, a->n_push, c->nshards, err) != 0)
            goto fail;
        if (a->mode == EMBER_PUSH_GRADIENTS || a->mode == EMBER_PUSH_ACCUM) {
            if (ember_batch_merge(ub, a->values, a->dim, err) != 0)
                goto fail;
        } else {
            /* Writes of embeddings: the last value of a key wins, as if applied in order. */
            for (size_t i = 0; i < a->n_push; i++)
                ub->rows[ub->idx[i]] = a->values + i * a->dim;
        }
    }
    if (have_pull && a->pull_scores && a->n_pull &&
        group_scores(pb, a->pull_scores, &op->pull_scores, &op->pull_scores_cap, err))
        goto fail;
    if (have_push && a->push_scores && a->n_push &&
        group_scores(ub, a->push_scores, &op->push_scores, &op->push_scores_cap, err))
        goto fail;
    if (op->found && a->n_pull && pb->m > op->gfound_cap) {
        void *p = realloc(op->gfound, pb->m);
        if (!p) {
            oom(err);
            goto fail;
        }
        op->gfound = p;
        op->gfound_cap = pb->m;
    }
    if (have_pull && pb->m > op->rowptr_cap) {
        void *p = realloc(op->rowptr, pb->m * sizeof *op->rowptr);
        if (!p) {
            oom(err);
            goto fail;
        }
        op->rowptr = p;
        op->rowptr_cap = pb->m;
    }

    const int32_t dtype = (int32_t)c->wire_dtype;
    const size_t row_bytes = (size_t)a->dim * ember_wire_dtype_size(dtype);
    const size_t chunk = chunk_keys(c, a->dim);
    const ember_wire_bytes table = {(const uint8_t *)a->table, strlen(a->table)};
    for (unsigned s = 0; s < c->nshards; s++) {
        size_t pull_lo = 0, pull_n = 0, push_lo = 0, push_n = 0;
        if (have_pull) {
            pull_lo = pb->shard_off[s];
            pull_n = pb->shard_off[s + 1] - pull_lo;
        }
        if (have_push) {
            push_lo = ub->shard_off[s];
            push_n = ub->shard_off[s + 1] - push_lo;
        }
        /* Big batches go as several requests per shard (under the servers' limits,
         * and in parallel); ember_push_pull never gets here with more than one
         * chunk's worth, so a PushPull's pull always sees all of its push. */
        for (size_t at_pull = 0, at_push = 0; at_pull < pull_n || at_push < push_n;) {
            size_t n_pull = pull_n - at_pull < chunk ? pull_n - at_pull : chunk;
            size_t n_push = push_n - at_push < chunk ? push_n - at_push : chunk;
            size_t p_lo = pull_lo + at_pull, u_lo = push_lo + at_push;
            at_pull += n_pull;
            at_push += n_push;

            ember_wire_pull_request pull;
            memset(&pull, 0, sizeof pull);
            pull.table = table;
            pull.keys.data = n_pull ? (const uint8_t *)(pb->gkeys + p_lo) : NULL;
            pull.keys.len = n_pull * 8;
            pull.insert_missing = !(a->flags & EMBER_PULL_SERVE);
            pull.dtype = dtype;
            pull.dim = a->dim; /* the server refuses a mismatch before creating keys */
            pull.want_found = op->found != NULL;
            if (a->pull_scores && n_pull)
                pull.scores = (ember_wire_bytes){(const uint8_t *)(op->pull_scores + p_lo),
                                                 n_pull * 8};

            ember_wire_push_request push;
            memset(&push, 0, sizeof push);
            push.table = table;
            push.keys.data = n_push ? (const uint8_t *)(ub->gkeys + u_lo) : NULL;
            push.keys.len = n_push * 8;
            push.values.data = NULL; /* a hole: rows are written into the buffer below */
            push.values.len = n_push * row_bytes;
            push.dtype = dtype;
            push.mode = a->mode;
            push.client_id = c->client_id;
            push.epoch = a->epoch;
            push.ack = a->ack;
            push.ack_replicas = a->ack_replicas;
            push.term = atomic_load(&c->shards[s].term);
            if (a->push_scores && n_push)
                push.scores = (ember_wire_bytes){(const uint8_t *)(op->push_scores + u_lo),
                                                 n_push * 8};
            if (n_push)
                push.sequence = atomic_fetch_add(&c->shards[s].seq, 1);

            ember_wire_off off = {0}; /* a pull alone has no values to place */
            ember_shard_call *sc;
            if (n_pull && !n_push) {
                size_t len = ember_wire_pull_request_size(&pull, NULL);
                if (!(sc = ember_call_add(op, s, EMBER_M_PULL, len)))
                    goto fail_oom;
                ember_wire_pull_request_encode(&pull, sc->req_data);
            } else if (n_push && !n_pull) {
                size_t len = ember_wire_push_request_size(&push, &off);
                if (!(sc = ember_call_add(op, s, EMBER_M_PUSH, len)))
                    goto fail_oom;
                ember_wire_push_request_encode(&push, sc->req_data);
            } else {
                ember_wire_pushpull_request pp = {.has_push = 1, .has_pull = 1, .push = push,
                                                  .pull = pull};
                ember_wire_off pull_off;
                size_t len = ember_wire_pushpull_request_size(&pp, &off, &pull_off);
                if (!(sc = ember_call_add(op, s, EMBER_M_PUSHPULL, len)))
                    goto fail_oom;
                ember_wire_pushpull_request_encode(&pp, sc->req_data);
            }
            sc->pull_lo = p_lo;
            sc->n_pull = n_pull;
            sc->follower = !n_push && (a->flags & EMBER_PULL_FOLLOWER);
            sc->push_lo = u_lo;
            sc->n_push = n_push;
            if (n_push) {
                uint8_t *dst = sc->req_data + off.values;
                for (size_t j = 0; j < n_push; j++, dst += row_bytes)
                    ember_wire_to_wire(dtype, ub->rows[u_lo + j], a->dim, dst);
            }
        }
    }
    ember_call_start(op);
    return op;

fail_oom:
    oom(err);
fail:
    ember_call_release(op);
    return NULL;
}

static int bad_reply(ember_call *op, unsigned s, ember_error *err, const char *what,
                     const char *msg)
{
    return ember_call_shard_error(op, s, EMBER_INTERNAL, err, "malformed %s reply: %s", what, msg);
}

/* A call's pull reply: its fields, and where its rows are (contiguous data, or
 * data == NULL and the rows at values_off in the call's received slices). */
typedef struct pull_part {
    uint32_t dim;
    int32_t dtype;
    const uint8_t *data;
    size_t values_off, values_len;
    const uint8_t *found;          /* contiguous found[], or NULL: at found_off */
    size_t found_off, found_len;
} pull_part;

/* A push reply said the shard's leader is at `term`: later pushes carry the
 * highest seen. */
static void term_seen(ember_client *c, unsigned s, uint64_t term)
{
    atomic_uint_fast64_t *t = &c->shards[s].term;
    uint64_t cur = atomic_load(t);
    while (cur < term && !atomic_compare_exchange_weak(t, &cur, term))
        ;
}

/* Decodes shard call sc's reply: straight from gRPC's slices when reply.h's
 * reader takes it, else flattened and decoded by proto/wire.h. Fills *pp and
 * sets *has_pull for a reply with a pull part. */
static int decode_reply(ember_call *op, ember_shard_call *sc, pull_part *pp, int *has_pull,
                        ember_error *err)
{
    ember_client *c = op->c;
    const unsigned s = sc->shard;
    char msg[160];
    *has_pull = 0;
    if (sc->method != EMBER_M_PUSH) {
        ember_reply_pull rp;
        if (ember_reply_pull_parse(sc->recv, sc->method == EMBER_M_PUSHPULL, &rp)) {
            if (rp.push_duplicate)
                atomic_fetch_add(&c->debug_duplicate_acks, 1);
            term_seen(c, s, rp.push_term);
            *pp = (pull_part){.dim = rp.dim, .dtype = rp.dtype, .data = NULL,
                              .values_off = rp.values_off, .values_len = rp.values_len,
                              .found = NULL, .found_off = rp.found_off,
                              .found_len = rp.found_len};
            *has_pull = 1;
            return 0;
        }
    }
    int rv = ember_shard_call_take_reply(sc);
    if (rv != 0)
        return ember_call_shard_error(op, s, rv, err, "cannot copy the reply");
    ember_wire_pull_response pr;
    if (sc->method == EMBER_M_PULL) {
        if (ember_wire_pull_response_decode(sc->resp, sc->resp_len, &pr, msg, sizeof msg))
            return bad_reply(op, s, err, "Pull", msg);
    } else if (sc->method == EMBER_M_PUSH) {
        ember_wire_push_response ur;
        if (ember_wire_push_response_decode(sc->resp, sc->resp_len, &ur, msg, sizeof msg))
            return bad_reply(op, s, err, "Push", msg);
        if (ur.duplicate)
            atomic_fetch_add(&c->debug_duplicate_acks, 1);
        term_seen(c, s, ur.term);
        return 0;
    } else {
        ember_wire_pushpull_response ppr;
        if (ember_wire_pushpull_response_decode(sc->resp, sc->resp_len, &ppr, msg, sizeof msg))
            return bad_reply(op, s, err, "PushPull", msg);
        if (!ppr.has_pull)
            return bad_reply(op, s, err, "PushPull", "no pull part");
        if (ppr.push.duplicate)
            atomic_fetch_add(&c->debug_duplicate_acks, 1);
        term_seen(c, s, ppr.push.term);
        pr = ppr.pull;
    }
    *pp = (pull_part){.dim = pr.dim, .dtype = pr.dtype, .data = pr.values.data,
                      .values_off = 0, .values_len = pr.values.len, .found = pr.found.data,
                      .found_off = 0, .found_len = pr.found.len};
    *has_pull = 1;
    return 0;
}

/* Waits, decodes, scatters. Does not release the op. */
static int train_finish(ember_call *op, ember_error *err)
{
    int rv = ember_call_finish(op, err);
    if (rv != 0)
        return rv;
    ember_batch *pb = &op->pull_b;
    const uint32_t dim = op->dim;
    int32_t dtype = -1;

    /* Scratch for rows split over two slices: at most one per slice boundary. */
    size_t nslices = 0;
    for (size_t ci = 0; ci < op->ncalls; ci++)
        if (op->calls[ci].method != EMBER_M_PUSH)
            nslices += ember_reply_slices(op->calls[ci].recv);
    size_t most_row = (size_t)dim * 4;
    if (nslices * most_row > op->straddle_cap) {
        void *p = realloc(op->straddle, nslices * most_row);
        if (!p)
            return oom(err);
        op->straddle = p;
        op->straddle_cap = nslices * most_row;
    }
    uint8_t *scratch = op->straddle;

    for (size_t ci = 0; ci < op->ncalls; ci++) {
        ember_shard_call *sc = &op->calls[ci];
        const unsigned s = sc->shard;
        pull_part pr;
        int have_pull;
        if ((rv = decode_reply(op, sc, &pr, &have_pull, err)) != 0)
            return rv;
        if (!have_pull)
            continue;

        size_t lo = sc->pull_lo, cnt = sc->n_pull;
        if (pr.dim != dim)
            return ember_call_shard_error(op, s, EMBER_INVALID_ARGUMENT, err,
                                          "table '%s' has dim %u; the call passed dim %u",
                                          op->table, pr.dim, dim);
        size_t dsize = ember_wire_dtype_size(pr.dtype);
        if (dsize == 0)
            return ember_call_shard_error(op, s, EMBER_INTERNAL, err,
                                          "reply values in unknown dtype %d", (int)pr.dtype);
        if (dtype >= 0 && pr.dtype != dtype)
            return ember_call_shard_error(op, s, EMBER_INTERNAL, err,
                                          "reply values in %s, other shards sent %s",
                                          ember_wire_dtype_name(pr.dtype),
                                          ember_wire_dtype_name(dtype));
        dtype = pr.dtype;
        size_t row_bytes = (size_t)dim * dsize;
        if (pr.values_len != cnt * row_bytes)
            return ember_call_shard_error(op, s, EMBER_INTERNAL, err,
                                          "reply has %zu value bytes for %zu keys × dim %u %s",
                                          pr.values_len, cnt, dim, ember_wire_dtype_name(pr.dtype));
        if (op->found && cnt) {
            if (pr.found_len != cnt)
                return ember_call_shard_error(op, s, EMBER_INTERNAL, err,
                                              "reply has %zu found flags for %zu keys",
                                              pr.found_len, cnt);
            if (pr.found)
                memcpy(op->gfound + lo, pr.found, cnt);
            else
                ember_reply_copy(sc->recv, pr.found_off, cnt, op->gfound + lo);
        }
        if (pr.data)
            for (size_t j = 0; j < cnt; j++)
                op->rowptr[lo + j] = pr.data + j * row_bytes;
        else
            ember_reply_rows(sc->recv, pr.values_off, row_bytes, cnt, op->rowptr + lo,
                             &scratch);
    }
    if (op->keys && op->n && dtype >= 0) {
        /* Scatter to the caller's order, converting from the wire dtype; a
         * duplicate key's row is read again. */
        const uint32_t *idx = pb->idx;
        float *out = op->out;
        for (size_t i = 0; i < op->n; i++, out += dim)
            ember_wire_from_wire(dtype, op->rowptr[idx[i]], dim, out);
        if (op->found)
            for (size_t i = 0; i < op->n; i++)
                op->found[i] = op->gfound[idx[i]] != 0;
    }
    return 0;
}

/* train_begin's failures always fill err; callers that pass NULL still need the code. */
static ember_call *begin_or_code(ember_client *c, const train_args *a, ember_error *err, int *code)
{
    ember_error local;
    ember_call *op = train_begin(c, a, err ? err : &local);
    *code = op ? 0 : (err ? err->code : local.code);
    return op;
}

/* A synchronous call: begin, wait, scatter, release. */
static int train_run(ember_client *c, const train_args *a, ember_error *err)
{
    int code;
    ember_call *op = begin_or_code(c, a, err, &code);
    if (!op)
        return code;
    int rv = train_finish(op, err);
    ember_call_release(op);
    return rv;
}

int ember_pull(ember_client *c, const char *table, const uint64_t *keys, size_t n, float *out,
               uint32_t dim, unsigned flags, ember_error *err)
{
    train_args a = {.has_pull = 1, .table = table, .pull_keys = keys, .n_pull = n, .out = out,
                    .dim = dim, .flags = flags};
    return train_run(c, &a, err);
}

void ember_pull_options_init(ember_pull_options *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

void ember_push_options_init(ember_push_options *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

/* The first layouts of the option structs (ember.h, "Growing structs"). */
#define EMBER_PULL_OPTIONS_FIRST_SIZE (offsetof(ember_pull_options, found) + sizeof(uint8_t *))
#define EMBER_PUSH_OPTIONS_FIRST_SIZE (offsetof(ember_push_options, epoch) + sizeof(uint32_t))

int ember_pull_opts(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                    float *out, uint32_t dim, const ember_pull_options *o, ember_error *err)
{
    ember_pull_options opt;
    ember_pull_options_init(&opt);
    if (o) {
        int rv = ember_struct_take(&opt, sizeof opt, o, o->struct_size,
                                   EMBER_PULL_OPTIONS_FIRST_SIZE, "ember_pull_options", err);
        if (rv)
            return rv;
    }
    train_args a = {.has_pull = 1, .table = table, .pull_keys = keys, .n_pull = n, .out = out,
                    .dim = dim, .flags = opt.flags, .pull_scores = opt.scores,
                    .found = opt.found};
    return train_run(c, &a, err);
}

int ember_push_opts(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                    const float *values, uint32_t dim, const ember_push_options *o,
                    ember_error *err)
{
    ember_push_options opt;
    ember_push_options_init(&opt);
    if (o) {
        int rv = ember_struct_take(&opt, sizeof opt, o, o->struct_size,
                                   EMBER_PUSH_OPTIONS_FIRST_SIZE, "ember_push_options", err);
        if (rv)
            return rv;
    }
    train_args a = {.has_push = 1, .table = table, .push_keys = keys, .n_push = n,
                    .values = values, .mode = opt.mode, .dim = dim,
                    .push_scores = opt.scores, .epoch = opt.epoch, .ack = opt.ack,
                    .ack_replicas = opt.ack_replicas};
    return train_run(c, &a, err);
}

int ember_push(ember_client *c, const char *table, const uint64_t *keys, size_t n,
               const float *grads, uint32_t dim, ember_error *err)
{
    return ember_push_mode_values(c, table, keys, n, grads, dim, EMBER_PUSH_GRADIENTS, err);
}

int ember_push_mode_values(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                           const float *values, uint32_t dim, ember_push_mode mode,
                           ember_error *err)
{
    train_args a = {.has_push = 1, .table = table, .push_keys = keys, .n_push = n,
                    .values = values, .mode = (int)mode, .dim = dim};
    return train_run(c, &a, err);
}

int ember_push_pull(ember_client *c, const char *table, const uint64_t *push_keys,
                    size_t n_push, const float *grads, const uint64_t *pull_keys, size_t n_pull,
                    float *out, uint32_t dim, unsigned pull_flags, ember_error *err)
{
    /* More than one request's worth: push, then pull, so that the pull still
     * sees every row the push wrote (chunks of one PushPull could run in any
     * order on the server). Two round trips, the same result. */
    if (c && dim && (n_push > chunk_keys(c, dim) || n_pull > chunk_keys(c, dim))) {
        int rv = ember_push(c, table, push_keys, n_push, grads, dim, err);
        return rv ? rv : ember_pull(c, table, pull_keys, n_pull, out, dim, pull_flags, err);
    }
    train_args a = {.has_pull = 1, .has_push = 1, .table = table, .push_keys = push_keys,
                    .n_push = n_push, .values = grads, .mode = EMBER_PUSH_GRADIENTS,
                    .pull_keys = pull_keys, .n_pull = n_pull, .out = out, .dim = dim,
                    .flags = pull_flags};
    return train_run(c, &a, err);
}

ember_pending *ember_pull_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, float *out, uint32_t dim, unsigned flags,
                                ember_error *err)
{
    train_args a = {.has_pull = 1, .table = table, .pull_keys = keys, .n_pull = n, .out = out,
                    .dim = dim, .flags = flags};
    int code;
    return (ember_pending *)begin_or_code(c, &a, err, &code);
}

ember_pending *ember_push_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, const float *grads, uint32_t dim, ember_error *err)
{
    train_args a = {.has_push = 1, .table = table, .push_keys = keys, .n_push = n,
                    .values = grads, .mode = EMBER_PUSH_GRADIENTS, .dim = dim};
    int code;
    return (ember_pending *)begin_or_code(c, &a, err, &code);
}

int ember_wait(ember_pending *p, ember_error *err)
{
    if (!p)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no pending call");
    ember_call *op = (ember_call *)p;
    int rv = train_finish(op, err);
    ember_call_release(op);
    return rv;
}

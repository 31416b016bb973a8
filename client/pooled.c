/*
 * pooled.c — pooled lookups: ember_pull_pooled and ember_push_pooled (ember.h).
 *
 * A bag's keys may live on several shards. Each shard gets, in one request, its
 * part of every bag that has a key there (bags with none are left out of its
 * request), in the caller's key order, with those keys' weights:
 *
 *  - pull, one shard: the caller's combiner; the server returns the finished
 *    vectors. Several shards: SUM (weighted when weights are given); the client
 *    adds each bag's partial sums in shard order and then divides by the bag's
 *    norm computed over the whole bag (proto/pool.h's ember_pool_norm), so MEAN
 *    and SQRTN use the whole bag's divisor. With one shard a bag's result equals
 *    worker-side pooling in key order bit for bit; over several shards, SUM adds
 *    per-shard partial sums, which may round differently from one key-order sum
 *    (float addition is not associative) — exact wherever the sums are.
 *  - push, one shard: the caller's combiner, the server computes each bag's norm.
 *    Several shards: the combiner plus each bag's norm over the whole bag
 *    (PushRequest.norms) for MEAN/SQRTN, so every shard scales a key's gradient
 *    by the same c_i = w_i / norm: the table ends up as with one shard, bit for
 *    bit (each key's gradient is formed alone, whatever shard it lives on).
 *
 * Each shard's part goes as one request (no chunking): a part over a server's
 * --max-keys-per-request or --max-message-bytes is refused by that server
 * (RESOURCE_EXHAUSTED); split such a batch. Pushes carry (client_id, sequence)
 * and are retried at most once-applied, as ember_push's.
 */
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "proto/pool.h"
#include "proto/wire.h"

enum { EMBER_CALL_POOLED = 3 };

_Static_assert((int)EMBER_COMBINER_SUM == (int)EMBER_WIRE_COMBINER_SUM &&
                   (int)EMBER_COMBINER_MEAN == (int)EMBER_WIRE_COMBINER_MEAN &&
                   (int)EMBER_COMBINER_SQRTN == (int)EMBER_WIRE_COMBINER_SQRTN,
               "ember_combiner is the wire's Combiner");

/* One pooled call's arguments. */
typedef struct pooled_args {
    const char *table;
    const uint64_t *keys;
    size_t n;
    const uint64_t *offsets;
    size_t bags;
    const float *weights;
    int32_t combiner;
    uint32_t dim;
    unsigned flags;
} pooled_args;

/* Every shard's part: keys, weights, offsets, and which of the caller's bags
 * each of its bags is. One allocation; shard s's arrays start at its *_at[s]. */
typedef struct pooled_split {
    unsigned nshards;
    size_t *nk, *nb;       /* [nshards] keys, bags */
    size_t *k_at, *b_at;   /* [nshards] where its keys/weights, bags start */
    uint64_t *keys;        /* [n] */
    float *weights;        /* [n] or NULL */
    uint64_t *offs;        /* [Σ (nb + 1)]: shard s's at b_at[s] + s */
    size_t *bag;           /* [Σ nb]: the caller's bag index */
    float *norms;          /* [Σ nb]: the whole bag's norm */
    void *mem;
} pooled_split;

/* Everything the call's arguments must be, before anything is sent. */
static int check(ember_client *c, const pooled_args *a, ember_error *err)
{
    int rv = ember_train_args_check(c, a->table, a->dim, a->flags, err);
    if (rv)
        return rv;
    if (a->combiner < EMBER_WIRE_COMBINER_SUM || a->combiner > EMBER_WIRE_COMBINER_SQRTN)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "unknown combiner %d (sum = 1, mean = 2, sqrtn = 3)",
                               (int)a->combiner);
    if (!a->offsets || (a->n && !a->keys))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "NULL keys or offsets");
    if (a->bags >= SIZE_MAX / 16 / a->dim || a->n >= SIZE_MAX / 16 / a->dim)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "%zu keys in %zu bags is too large",
                               a->n, a->bags);
    char msg[200];
    ember_wire_bytes offs = {(const uint8_t *)a->offsets, (a->bags + 1) * 8};
    ember_wire_bytes w = {(const uint8_t *)a->weights, a->weights ? a->n * 4 : 0};
    size_t bags;
    if (ember_wire_bags_check(offs, a->n, w, &bags, msg, sizeof msg))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s", msg);
    for (size_t i = 0; i < a->n; i++)
        if (a->keys[i] >= EMBER_KEY_RESERVED_MIN)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "key %zu is 0x%016llx, a reserved value (keys from "
                                   "0xFFFFFFFFFFFFFFFC up are reserved)",
                                   i, (unsigned long long)a->keys[i]);
    return 0;
}

/* Splits the caller's bags over the shards (see the top of this file). */
static int split(ember_client *c, const pooled_args *a, pooled_split *sp, ember_error *err)
{
    unsigned S = c->nshards;
    size_t n = a->n, B = a->bags;
    memset(sp, 0, sizeof *sp);
    sp->nshards = S;
    /* a bag of k keys is on at most k shards, so every shard's bags add up to ≤ n */
    size_t bytes = 6 * S * sizeof(size_t) + n * sizeof(uint64_t) + (n + S) * sizeof(uint64_t) +
                   n * sizeof(size_t) + n * sizeof(uint32_t) + n * sizeof(float) +
                   (a->weights ? n * sizeof(float) : 0) + 64;
    uint8_t *m = calloc(1, bytes);
    if (!m)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
    sp->mem = m;
    /* the 8-byte arrays first, then the 4-byte ones */
    sp->nk = (size_t *)(void *)m;
    sp->nb = sp->nk + S;
    sp->k_at = sp->nb + S;
    sp->b_at = sp->k_at + S;
    size_t *kpos = sp->b_at + S; /* keys placed on shard s so far */
    size_t *bpos = kpos + S;     /* bags placed on shard s so far */
    sp->keys = (uint64_t *)(void *)(bpos + S);
    sp->offs = sp->keys + n;
    sp->bag = (size_t *)(void *)(sp->offs + n + S);
    uint32_t *sh = (uint32_t *)(void *)(sp->bag + n);
    sp->norms = (float *)(void *)(sh + n);
    sp->weights = a->weights ? sp->norms + n : NULL;

    /* count: a shard's bags are those with a key on it */
    for (size_t i = 0; i < n; i++)
        sh[i] = ember_shard_of(a->keys[i], S);
    for (size_t b = 0; b < B; b++)
        for (size_t i = a->offsets[b]; i < a->offsets[b + 1]; i++) {
            unsigned s = sh[i];
            sp->nk[s]++;
            if (bpos[s] != b + 1) { /* bpos: the last bag counted on s, plus one */
                bpos[s] = b + 1;
                sp->nb[s]++;
            }
        }
    for (unsigned s = 1; s < S; s++) {
        sp->k_at[s] = sp->k_at[s - 1] + sp->nk[s - 1];
        sp->b_at[s] = sp->b_at[s - 1] + sp->nb[s - 1];
    }
    /* fill: each shard's keys in the caller's order; each bag, once its keys
     * are placed, closed on every shard that got one of them */
    memset(bpos, 0, S * sizeof *bpos);
    const uint8_t *wts = (const uint8_t *)a->weights;
    for (size_t b = 0; b < B; b++) {
        size_t lo = a->offsets[b], hi = a->offsets[b + 1];
        if (lo == hi)
            continue;
        for (size_t i = lo; i < hi; i++) {
            unsigned s = sh[i];
            size_t k = sp->k_at[s] + kpos[s]++;
            sp->keys[k] = a->keys[i];
            if (sp->weights)
                sp->weights[k] = a->weights[i];
        }
        float norm = ember_pool_norm(a->combiner, wts, lo, hi);
        for (size_t i = lo; i < hi; i++) {
            unsigned s = sh[i];
            size_t j = bpos[s], at = sp->b_at[s];
            if (j && sp->bag[at + j - 1] == b)
                continue; /* closed already */
            sp->bag[at + j] = b;
            sp->norms[at + j] = norm;
            sp->offs[at + s + j + 1] = kpos[s];
            bpos[s] = j + 1;
        }
    }
    return 0;
}

static void split_free(pooled_split *sp) { free(sp->mem); }

/* Adds shard s's request to op; `grads` (push) or NULL (pull). */
static int add_request(ember_client *c, ember_call *op, const pooled_args *a,
                       const pooled_split *sp, unsigned s, const float *grads, ember_error *err)
{
    const int32_t dtype = (int32_t)c->wire_dtype;
    const size_t dsize = ember_wire_dtype_size(dtype), nk = sp->nk[s], nb = sp->nb[s];
    const ember_wire_bytes table = {(const uint8_t *)a->table, strlen(a->table)};
    const ember_wire_bytes keys = {(const uint8_t *)(sp->keys + sp->k_at[s]), nk * 8};
    const ember_wire_bytes offs = {(const uint8_t *)(sp->offs + sp->b_at[s] + s), (nb + 1) * 8};
    const ember_wire_bytes wts = {sp->weights ? (const uint8_t *)(sp->weights + sp->k_at[s])
                                              : NULL,
                                  sp->weights ? nk * 4 : 0};
    const int many = c->nshards > 1;
    ember_shard_call *sc;
    if (!grads) {
        ember_wire_pull_request r;
        memset(&r, 0, sizeof r);
        r.table = table;
        r.keys = keys;
        r.insert_missing = !(a->flags & EMBER_PULL_SERVE);
        r.dtype = dtype;
        r.dim = a->dim;
        r.offsets = offs;
        r.combiner = many ? EMBER_WIRE_COMBINER_SUM : a->combiner;
        r.weights = wts;
        size_t len = ember_wire_pull_request_size(&r, NULL);
        if (!(sc = ember_call_add(op, s, EMBER_M_PULL, len)))
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        ember_wire_pull_request_encode(&r, sc->req_data);
        return 0;
    }
    ember_wire_push_request r;
    memset(&r, 0, sizeof r);
    r.table = table;
    r.keys = keys;
    r.values.data = NULL; /* a hole: the bags' gradients are written below */
    r.values.len = nb * a->dim * dsize;
    r.dtype = dtype;
    r.mode = EMBER_WIRE_PUSH_GRADIENTS;
    r.client_id = c->client_id;
    r.sequence = atomic_fetch_add(&c->shards[s].seq, 1);
    r.offsets = offs;
    r.combiner = a->combiner;
    r.weights = wts;
    if (many && a->combiner != EMBER_WIRE_COMBINER_SUM)
        r.norms = (ember_wire_bytes){(const uint8_t *)(sp->norms + sp->b_at[s]), nb * 4};
    ember_wire_off off;
    size_t len = ember_wire_push_request_size(&r, &off);
    if (!(sc = ember_call_add(op, s, EMBER_M_PUSH, len)))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    ember_wire_push_request_encode(&r, sc->req_data);
    uint8_t *dst = sc->req_data + off.values;
    for (size_t j = 0; j < nb; j++, dst += a->dim * dsize)
        ember_wire_to_wire(dtype, grads + sp->bag[sp->b_at[s] + j] * a->dim, a->dim, dst);
    return 0;
}

/* Adds each shard's partial bags from its reply into out (zeroed by the caller);
 * with one shard the reply's vectors are the result. */
static int gather(ember_call *op, const pooled_args *a, const pooled_split *sp, float *out,
                  ember_error *err)
{
    const uint32_t dim = a->dim;
    float *tmp = malloc(dim * sizeof *tmp);
    if (!tmp)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    int rv = 0;
    /* shard order: calls were added in shard order */
    for (size_t ci = 0; ci < op->ncalls && !rv; ci++) {
        ember_shard_call *sc = &op->calls[ci];
        unsigned s = sc->shard;
        size_t nb = sp->nb[s];
        ember_wire_pull_response pr;
        char msg[160];
        if (ember_wire_pull_response_decode(sc->resp, sc->resp_len, &pr, msg, sizeof msg)) {
            rv = ember_call_shard_error(op, s, EMBER_INTERNAL, err, "malformed Pull reply: %s",
                                        msg);
            break;
        }
        size_t dsize = ember_wire_dtype_size(pr.dtype);
        if (pr.dim != dim) {
            rv = ember_call_shard_error(op, s, EMBER_INVALID_ARGUMENT, err,
                                        "table '%s' has dim %u; the call passed dim %u",
                                        a->table, pr.dim, dim);
        } else if (!dsize || pr.values.len != nb * dim * dsize) {
            rv = ember_call_shard_error(op, s, EMBER_INTERNAL, err,
                                        "reply has %zu value bytes for %zu bags × dim %u",
                                        pr.values.len, nb, dim);
        } else {
            for (size_t j = 0; j < nb; j++) {
                float *o = out + sp->bag[sp->b_at[s] + j] * dim;
                const uint8_t *src = pr.values.data + j * dim * dsize;
                if (sp->nshards == 1) {
                    ember_wire_from_wire(pr.dtype, src, dim, o);
                    continue;
                }
                ember_wire_from_wire(pr.dtype, src, dim, tmp);
                for (uint32_t d = 0; d < dim; d++)
                    o[d] += tmp[d];
            }
        }
    }
    free(tmp);
    return rv;
}

/* One pooled call: grads NULL for a pull into out, else a push. */
static int pooled_call(ember_client *c, const pooled_args *a, float *out, const float *grads,
                       ember_error *err)
{
    int rv = check(c, a, err);
    if (rv)
        return rv;
    pooled_split sp;
    if ((rv = split(c, a, &sp, err)) != 0)
        return rv;
    ember_call *op = ember_call_acquire(c, EMBER_CALL_POOLED);
    if (!op) {
        split_free(&sp);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (unsigned s = 0; s < c->nshards && !rv; s++)
        if (sp.nk[s])
            rv = add_request(c, op, a, &sp, s, grads, err);
    if (rv) { /* nothing was sent */
        ember_call_release(op);
        split_free(&sp);
        return rv;
    }
    float *acc = NULL;
    if (!grads && !(acc = calloc(a->bags ? a->bags * a->dim : 1, sizeof *acc))) {
        ember_call_release(op);
        split_free(&sp);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    ember_call_start(op);
    rv = ember_call_finish(op, err);
    if (!rv && !grads)
        rv = gather(op, a, &sp, acc, err);
    if (!rv && !grads) {
        if (c->nshards > 1) /* the partial sums are added: divide by the whole bag's norm */
            for (size_t b = 0; b < a->bags; b++)
                ember_pool_finish(a->combiner,
                                  ember_pool_norm(a->combiner, (const uint8_t *)a->weights,
                                                  a->offsets[b], a->offsets[b + 1]),
                                  acc + b * a->dim, a->dim);
        memcpy(out, acc, a->bags * a->dim * sizeof *out);
    }
    free(acc);
    ember_call_release(op);
    split_free(&sp);
    return rv;
}

int ember_pull_pooled(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                      const uint64_t *offsets, size_t bags, const float *weights,
                      ember_combiner combiner, float *out, uint32_t dim, unsigned flags,
                      ember_error *err)
{
    pooled_args a = {.table = table, .keys = keys, .n = n, .offsets = offsets, .bags = bags,
                     .weights = weights, .combiner = (int32_t)combiner, .dim = dim,
                     .flags = flags};
    if (!out && bags)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "NULL output");
    return pooled_call(c, &a, out, NULL, err);
}

int ember_push_pooled(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                      const uint64_t *offsets, size_t bags, const float *weights,
                      ember_combiner combiner, const float *grads, uint32_t dim,
                      ember_error *err)
{
    pooled_args a = {.table = table, .keys = keys, .n = n, .offsets = offsets, .bags = bags,
                     .weights = weights, .combiner = (int32_t)combiner, .dim = dim};
    if (!grads && bags)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "NULL gradients");
    static const float none[1] = {0};
    return pooled_call(c, &a, NULL, grads ? grads : none, err);
}

/*
 * fuzz_wire.c — the hand-written Pull/Push codec (proto/wire.h) on any bytes.
 *
 * Every input is given to all six decoders (a request of one kind is a valid
 * message of most others, so one corpus serves them all). Where a decoder
 * accepts it, the target checks what wire.h promises:
 *
 *   - a refusal is EMBER_WIRE_INVALID_ARGUMENT with a reason;
 *   - encode(decoded) has exactly *_size() bytes, the bulk offsets point at the
 *     bulk bytes, and decoding it again gives the same message;
 *   - the encoding is byte-identical to protobuf-c's pack of protobuf-c's unpack
 *     of it (the codec's compatibility claim), except for a table name with a
 *     NUL byte, which protobuf-c's C strings cannot carry;
 *
 * and then does with a decoded request what ember-server's shard.c does with
 * one, on a small CPU table: the same checks (dtype, mode, lengths against the
 * dim, scores), the wire → float32 conversion, the table call of the push's mode
 * or the pull's insert flag, and the reply encoded, decoded and compared. The
 * table must refuse bad keys and values with INVALID_ARGUMENT and nothing else.
 * (shard.c's own checks are static and need a running server, so they are
 * restated here, not linked.)
 */
#include <string.h>

#include "ember/v1/ember.pb-c.h"
#include "proto/pool.h"
#include "proto/wire.h"
#include "server/registry.h"
#include "storage/table.h"
#include "tests/fuzz/fuzz.h"

/* The most keys one input may put in the table (the decoders see any size). */
#define FUZZ_MAX_KEYS 512
#define FUZZ_DIM 4

static int bytes_eq(ember_wire_bytes a, ember_wire_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static int has_nul(ember_wire_bytes b)
{
    return b.len && memchr(b.data, 0, b.len) != NULL;
}

static int pull_req_eq(const ember_wire_pull_request *a, const ember_wire_pull_request *b)
{
    return bytes_eq(a->table, b->table) && bytes_eq(a->keys, b->keys) &&
           a->insert_missing == b->insert_missing && a->dtype == b->dtype &&
           a->want_found == b->want_found && bytes_eq(a->scores, b->scores) && a->dim == b->dim &&
           bytes_eq(a->offsets, b->offsets) && a->combiner == b->combiner &&
           bytes_eq(a->weights, b->weights);
}

static int push_req_eq(const ember_wire_push_request *a, const ember_wire_push_request *b)
{
    return bytes_eq(a->table, b->table) && bytes_eq(a->keys, b->keys) &&
           bytes_eq(a->values, b->values) && a->dtype == b->dtype && a->mode == b->mode &&
           a->client_id == b->client_id && a->sequence == b->sequence &&
           bytes_eq(a->scores, b->scores) && bytes_eq(a->offsets, b->offsets) &&
           a->combiner == b->combiner && bytes_eq(a->weights, b->weights) &&
           bytes_eq(a->norms, b->norms);
}

static int pull_resp_eq(const ember_wire_pull_response *a, const ember_wire_pull_response *b)
{
    return bytes_eq(a->values, b->values) && a->dim == b->dim && a->dtype == b->dtype &&
           bytes_eq(a->found, b->found);
}

/* protobuf-c unpacks our encoding `enc` and packs it back to the same bytes. */
static void same_as_protobuf_c(const ProtobufCMessageDescriptor *d, const uint8_t *enc,
                               size_t n)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, enc);
    FUZZ_CHECK(m, "protobuf-c cannot unpack our %zu-byte %s", n, d->name);
    size_t pn = protobuf_c_message_get_packed_size(m);
    FUZZ_CHECK(pn == n, "%s: protobuf-c packs %zu bytes, we wrote %zu", d->name, pn, n);
    uint8_t *b = malloc(pn ? pn : 1);
    FUZZ_CHECK(b, "out of memory");
    FUZZ_CHECK(protobuf_c_message_pack(m, b) == pn, "%s: pack size", d->name);
    FUZZ_CHECK(memcmp(b, enc, n) == 0, "%s: protobuf-c's bytes differ from ours", d->name);
    free(b);
    protobuf_c_message_free_unpacked(m, NULL);
}

static uint8_t *xmalloc(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    FUZZ_CHECK(p, "out of memory (%zu bytes)", n);
    return p;
}

/* ---- what the server does with a request ---------------------------------- */

/* A fresh small table; its policy and optimizer come from the request so that
 * every optimizer and score path meets fuzzed keys and values. */
static ember_table *small_table(int custom_scores, uint64_t pick)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = FUZZ_DIM;
    c.capacity = 64; /* a few buckets: fuzzed keys collide and evict */
    c.score_policy = custom_scores ? EMBER_SCORE_CUSTOM : (int)(pick % 4);
    c.optim.kind = (int)((pick >> 2) % 4);
    c.nonfinite = (pick >> 4) & 1 ? EMBER_NONFINITE_ZERO : EMBER_NONFINITE_REJECT;
    c.admission.min_count = (pick >> 5) & 1 ? 2 : 0;
    c.admission.sketch_width = 64;
    ember_table *t = NULL;
    ember_error err;
    int rc = ember_table_create(&c, NULL, &t, &err);
    FUZZ_CHECK(rc == 0, "table create: %s", err.message);
    return t;
}

/* The table's answer to fuzzed input: done, or refused as invalid. */
static void table_rc_ok(int rc, const ember_error *err, const char *call)
{
    FUZZ_CHECK(rc == EMBER_OK || rc == EMBER_INVALID_ARGUMENT, "%s returned %s: %s", call,
               ember_status_name(rc), err->message);
}

/* A pooled pull's combining as shard.c does it, over the rows `values` of the
 * request's n keys, when its bags pass the check shard.c makes: every bag is
 * combined, and a bag of finite rows and weights comes out finite or zero. */
static void serve_pooled(const ember_wire_pull_request *r, size_t n, const float *values)
{
    size_t bags;
    if (r->combiner < EMBER_WIRE_COMBINER_SUM || r->combiner > EMBER_WIRE_COMBINER_SQRTN ||
        ember_wire_bags_check(r->offsets, n, r->weights, &bags, NULL, 0) ||
        bags > FUZZ_MAX_KEYS)
        return;
    const uint8_t *w = r->weights.len ? r->weights.data : NULL;
    float out[FUZZ_DIM];
    for (size_t b = 0; b < bags; b++) {
        size_t lo = (size_t)ember_wire_offset(r->offsets, b);
        size_t hi = (size_t)ember_wire_offset(r->offsets, b + 1);
        FUZZ_CHECK(lo <= hi && hi <= n, "bag %zu is [%zu, %zu) of %zu keys", b, lo, hi, n);
        ember_pool_sum(values, FUZZ_DIM, w, lo, hi, out);
        ember_pool_finish(r->combiner, ember_pool_norm(r->combiner, w, lo, hi), out, FUZZ_DIM);
    }
}

static void serve_pull(const ember_wire_pull_request *r)
{
    size_t n = r->keys.len / 8, ds = ember_wire_dtype_size(r->dtype);
    if (!ds || n > FUZZ_MAX_KEYS || (r->dim && r->dim != FUZZ_DIM))
        return;
    if (!ember_table_name_valid((const char *)r->table.data, r->table.len) && r->table.len)
        return;
    if (r->scores.len && (!r->insert_missing || r->scores.len != n * 8))
        return;
    uint64_t *keys = malloc((n ? n : 1) * 8), *scores = NULL;
    float *values = malloc((n ? n : 1) * FUZZ_DIM * sizeof(float));
    uint8_t *found = xmalloc(n);
    FUZZ_CHECK(keys && values, "out of memory");
    ember_wire_keys_copy(r->keys, keys);
    if (r->scores.len) {
        scores = malloc(n * 8);
        FUZZ_CHECK(scores, "out of memory");
        ember_wire_keys_copy(r->scores, scores);
    }
    ember_table *t = small_table(scores != NULL, n ? keys[0] : 0);
    ember_error err;
    int rc = r->insert_missing
                 ? ember_table_find_or_insert(t, keys, n, values, found, scores, &err)
                 : ember_table_find(t, keys, n, values, found, &err);
    table_rc_ok(rc, &err, r->insert_missing ? "find_or_insert" : "find");
    if (rc == 0)
        serve_pooled(r, n, values);
    if (rc == 0) {
        /* The reply as shard.c builds it: values written into a hole. */
        ember_wire_pull_response out = {0}, back;
        ember_wire_off off;
        out.values.len = n * FUZZ_DIM * ds;
        out.dim = FUZZ_DIM;
        out.dtype = r->dtype;
        if (r->want_found) {
            out.found.data = found;
            out.found.len = n;
        }
        size_t len = ember_wire_pull_response_size(&out, &off);
        uint8_t *buf = xmalloc(len);
        FUZZ_CHECK(ember_wire_pull_response_encode(&out, buf) == len, "reply size");
        if (n)
            ember_wire_to_wire(r->dtype, values, n * FUZZ_DIM, buf + off.values);
        FUZZ_CHECK(ember_wire_pull_response_decode(buf, len, &back, NULL, 0) == 0,
                   "our own reply does not decode");
        FUZZ_CHECK(back.values.len == out.values.len && back.dim == FUZZ_DIM &&
                       back.dtype == r->dtype && back.found.len == out.found.len,
                   "reply fields");
        float *again = malloc((n ? n : 1) * FUZZ_DIM * sizeof(float));
        FUZZ_CHECK(again, "out of memory");
        ember_wire_from_wire(r->dtype, back.values.data, n * FUZZ_DIM, again);
        if (r->dtype == EMBER_WIRE_F32)
            FUZZ_CHECK(n == 0 || memcmp(again, values, n * FUZZ_DIM * sizeof(float)) == 0,
                       "float32 values changed on the way");
        free(again);
        free(buf);
    }
    ember_table_destroy(t);
    free(keys);
    free(scores);
    free(values);
    free(found);
}

static void serve_push(const ember_wire_push_request *r)
{
    size_t n = r->keys.len / 8, ds = ember_wire_dtype_size(r->dtype);
    if (!ds || n > FUZZ_MAX_KEYS || r->mode < EMBER_WIRE_PUSH_GRADIENTS ||
        r->mode > EMBER_WIRE_PUSH_INSERT_OR_ASSIGN)
        return;
    if (r->values.len != n * FUZZ_DIM * ds || (r->scores.len && r->scores.len != n * 8))
        return;
    if (!ember_table_name_valid((const char *)r->table.data, r->table.len) && r->table.len)
        return;
    uint64_t *keys = malloc((n ? n : 1) * 8), *scores = NULL;
    float *values = malloc((n ? n : 1) * FUZZ_DIM * sizeof(float));
    uint8_t *found = xmalloc(n);
    FUZZ_CHECK(keys && values, "out of memory");
    ember_wire_keys_copy(r->keys, keys);
    ember_wire_from_wire(r->dtype, r->values.data, n * FUZZ_DIM, values);
    if (r->scores.len) {
        scores = malloc(n * 8);
        FUZZ_CHECK(scores, "out of memory");
        ember_wire_keys_copy(r->scores, scores);
    }
    ember_table *t = small_table(scores != NULL, r->client_id ^ r->sequence);
    ember_error err;
    int rc;
    /* Twice: the second call meets the rows the first one made. */
    for (int pass = 0; pass < 2; pass++) {
        switch (r->mode) {
        case EMBER_WIRE_PUSH_GRADIENTS:
            rc = ember_table_apply_gradients(t, keys, n, values, scores, &err);
            break;
        case EMBER_WIRE_PUSH_ASSIGN:
            rc = ember_table_assign(t, keys, n, values, found, scores, &err);
            break;
        case EMBER_WIRE_PUSH_ACCUM:
            rc = ember_table_accum(t, keys, n, values, found, &err);
            break;
        default:
            rc = ember_table_insert_or_assign(t, keys, n, values, scores, &err);
            break;
        }
        table_rc_ok(rc, &err, "push");
    }
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    FUZZ_CHECK(st.size <= st.capacity, "size %llu over capacity %llu",
               (unsigned long long)st.size, (unsigned long long)st.capacity);
    ember_table_destroy(t);
    free(keys);
    free(scores);
    free(values);
    free(found);
}

/* ---- the decoders ---------------------------------------------------------- */

static void fuzz_pull_request(const uint8_t *data, size_t size)
{
    ember_wire_pull_request m, m2;
    ember_wire_off off;
    char msg[256];
    if (ember_wire_pull_request_decode(data, size, &m, msg, sizeof msg)) {
        FUZZ_CHECK(msg[0], "PullRequest refused without a reason");
        return;
    }
    size_t n = ember_wire_pull_request_size(&m, &off);
    uint8_t *b = xmalloc(n);
    FUZZ_CHECK(ember_wire_pull_request_encode(&m, b) == n, "PullRequest encode size");
    FUZZ_CHECK(!m.keys.len || !memcmp(b + off.keys, m.keys.data, m.keys.len), "keys offset");
    FUZZ_CHECK(!m.scores.len || !memcmp(b + off.scores, m.scores.data, m.scores.len),
               "scores offset");
    FUZZ_CHECK(ember_wire_pull_request_decode(b, n, &m2, msg, sizeof msg) == 0,
               "re-encoded PullRequest refused: %s", msg);
    FUZZ_CHECK(pull_req_eq(&m, &m2), "PullRequest changed by a round trip");
    if (!has_nul(m.table))
        same_as_protobuf_c(&ember__v1__pull_request__descriptor, b, n);
    serve_pull(&m);
    free(b);
}

static void fuzz_push_request(const uint8_t *data, size_t size)
{
    ember_wire_push_request m, m2;
    ember_wire_off off;
    char msg[256];
    if (ember_wire_push_request_decode(data, size, &m, msg, sizeof msg)) {
        FUZZ_CHECK(msg[0], "PushRequest refused without a reason");
        return;
    }
    size_t n = ember_wire_push_request_size(&m, &off);
    uint8_t *b = xmalloc(n);
    FUZZ_CHECK(ember_wire_push_request_encode(&m, b) == n, "PushRequest encode size");
    FUZZ_CHECK(!m.keys.len || !memcmp(b + off.keys, m.keys.data, m.keys.len), "keys offset");
    FUZZ_CHECK(!m.values.len || !memcmp(b + off.values, m.values.data, m.values.len),
               "values offset");
    FUZZ_CHECK(!m.scores.len || !memcmp(b + off.scores, m.scores.data, m.scores.len),
               "scores offset");
    FUZZ_CHECK(ember_wire_push_request_decode(b, n, &m2, msg, sizeof msg) == 0,
               "re-encoded PushRequest refused: %s", msg);
    FUZZ_CHECK(push_req_eq(&m, &m2), "PushRequest changed by a round trip");
    if (!has_nul(m.table))
        same_as_protobuf_c(&ember__v1__push_request__descriptor, b, n);
    serve_push(&m);
    free(b);
}

static void fuzz_pushpull_request(const uint8_t *data, size_t size)
{
    ember_wire_pushpull_request m, m2;
    ember_wire_off push_off, pull_off;
    char msg[256];
    if (ember_wire_pushpull_request_decode(data, size, &m, msg, sizeof msg)) {
        FUZZ_CHECK(msg[0], "PushPullRequest refused without a reason");
        return;
    }
    size_t n = ember_wire_pushpull_request_size(&m, &push_off, &pull_off);
    uint8_t *b = xmalloc(n);
    FUZZ_CHECK(ember_wire_pushpull_request_encode(&m, b) == n, "PushPullRequest encode size");
    if (m.has_push && m.push.keys.len)
        FUZZ_CHECK(!memcmp(b + push_off.keys, m.push.keys.data, m.push.keys.len),
                   "push keys offset");
    if (m.has_pull && m.pull.keys.len)
        FUZZ_CHECK(!memcmp(b + pull_off.keys, m.pull.keys.data, m.pull.keys.len),
                   "pull keys offset");
    FUZZ_CHECK(ember_wire_pushpull_request_decode(b, n, &m2, msg, sizeof msg) == 0,
               "re-encoded PushPullRequest refused: %s", msg);
    FUZZ_CHECK(m.has_push == m2.has_push && m.has_pull == m2.has_pull &&
                   (!m.has_push || push_req_eq(&m.push, &m2.push)) &&
                   (!m.has_pull || pull_req_eq(&m.pull, &m2.pull)),
               "PushPullRequest changed by a round trip");
    if (!has_nul(m.push.table) && !has_nul(m.pull.table))
        same_as_protobuf_c(&ember__v1__push_pull_request__descriptor, b, n);
    if (m.has_push)
        serve_push(&m.push);
    if (m.has_pull)
        serve_pull(&m.pull);
    free(b);
}

/* The replies: the client decodes them. Round trips only. */
static void fuzz_responses(const uint8_t *data, size_t size)
{
    char msg[256];
    ember_wire_pull_response pr, pr2;
    if (ember_wire_pull_response_decode(data, size, &pr, msg, sizeof msg) == 0) {
        ember_wire_off off;
        size_t n = ember_wire_pull_response_size(&pr, &off);
        uint8_t *b = xmalloc(n);
        FUZZ_CHECK(ember_wire_pull_response_encode(&pr, b) == n, "PullResponse size");
        FUZZ_CHECK(!pr.values.len || !memcmp(b + off.values, pr.values.data, pr.values.len),
                   "values offset");
        FUZZ_CHECK(ember_wire_pull_response_decode(b, n, &pr2, NULL, 0) == 0 &&
                       pull_resp_eq(&pr, &pr2),
                   "PullResponse round trip");
        same_as_protobuf_c(&ember__v1__pull_response__descriptor, b, n);
        /* What the client does with the values: convert them. */
        size_t ds = ember_wire_dtype_size(pr.dtype);
        if (ds && pr.values.len % ds == 0 && pr.values.len / ds <= 4096) {
            float v[4096];
            ember_wire_from_wire(pr.dtype, pr.values.data, pr.values.len / ds, v);
        }
        free(b);
    } else {
        FUZZ_CHECK(msg[0], "PullResponse refused without a reason");
    }

    ember_wire_push_response ps, ps2;
    if (ember_wire_push_response_decode(data, size, &ps, msg, sizeof msg) == 0) {
        uint8_t b[32];
        size_t n = ember_wire_push_response_size(&ps);
        FUZZ_CHECK(n <= sizeof b && ember_wire_push_response_encode(&ps, b) == n,
                   "PushResponse size");
        FUZZ_CHECK(ember_wire_push_response_decode(b, n, &ps2, NULL, 0) == 0 &&
                       ps2.applied == ps.applied && ps2.duplicate == ps.duplicate,
                   "PushResponse round trip");
        same_as_protobuf_c(&ember__v1__push_response__descriptor, b, n);
    } else {
        FUZZ_CHECK(msg[0], "PushResponse refused without a reason");
    }

    ember_wire_pushpull_response pp, pp2;
    if (ember_wire_pushpull_response_decode(data, size, &pp, msg, sizeof msg) == 0) {
        ember_wire_off off;
        size_t n = ember_wire_pushpull_response_size(&pp, &off);
        uint8_t *b = xmalloc(n);
        FUZZ_CHECK(ember_wire_pushpull_response_encode(&pp, b) == n, "PushPullResponse size");
        FUZZ_CHECK(ember_wire_pushpull_response_decode(b, n, &pp2, NULL, 0) == 0,
                   "PushPullResponse re-decode");
        FUZZ_CHECK(pp.has_push == pp2.has_push && pp.has_pull == pp2.has_pull &&
                       (!pp.has_push || (pp.push.applied == pp2.push.applied &&
                                         pp.push.duplicate == pp2.push.duplicate)) &&
                       (!pp.has_pull || pull_resp_eq(&pp.pull, &pp2.pull)),
                   "PushPullResponse round trip");
        same_as_protobuf_c(&ember__v1__push_pull_response__descriptor, b, n);
        free(b);
    } else {
        FUZZ_CHECK(msg[0], "PushPullResponse refused without a reason");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_pull_request(data, size);
    fuzz_push_request(data, size);
    fuzz_pushpull_request(data, size);
    fuzz_responses(data, size);
    return 0;
}

/*
 * test_wire.c — proto/wire.c against protobuf-c's generated code, byte for byte:
 * our encoding equals protobuf-c's pack of the same message (so protobuf-c
 * unpacks it to the same values), protobuf-c's pack decodes with ours to the same
 * values, unknown fields are skipped as protobuf-c skips them, and every
 * malformation is refused with INVALID_ARGUMENT and a message. Also the
 * float16/bfloat16 conversions (round to nearest even; the F16C/AVX2 path
 * against the scalar one bit for bit) and encoding with holes.
 */
#include <check.h>
#include <cpuid.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/v1/ember.pb-c.h"
#include "proto/pool.h"
#include "proto/wire.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random bytes kept alive for one test iteration. */
static uint8_t pool[1 << 16];
static size_t pool_used;
static ember_wire_bytes rbytes(size_t len)
{
    ember_wire_bytes b = {pool + pool_used, len};
    ck_assert_uint_le(pool_used + len, sizeof pool);
    for (size_t i = 0; i < len; i++)
        pool[pool_used + i] = (uint8_t)rnd();
    pool_used += len;
    return b;
}
static ember_wire_bytes rname(void)
{
    size_t len = rnd() % 3 ? 1 + rnd() % 20 : 0;
    ember_wire_bytes b = {pool + pool_used, len};
    for (size_t i = 0; i < len; i++)
        pool[pool_used + i] = (uint8_t)('a' + rnd() % 26);
    pool_used += len + 1;
    pool[pool_used - 1] = 0;
    return b;
}
static uint64_t rvarint(void)
{
    switch (rnd() % 4) {
    case 0: return 0;
    case 1: return rnd() % 128;
    case 2: return rnd() % 100000;
    }
    return rnd();
}
static int32_t renum(void)
{
    switch (rnd() % 5) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 2;
    case 3: return (int32_t)(rnd() % 1000);
    }
    return -(int32_t)(rnd() % 1000) - 1; /* negative: 10-byte varints */
}

static void eq_bytes(ember_wire_bytes a, ProtobufCBinaryData b)
{
    ck_assert_uint_eq(a.len, b.len);
    if (a.len)
        ck_assert(memcmp(a.data, b.data, a.len) == 0);
}
static void eq_str(ember_wire_bytes a, const char *s)
{
    ck_assert_uint_eq(a.len, strlen(s));
    if (a.len)
        ck_assert(memcmp(a.data, s, a.len) == 0);
}
static ProtobufCBinaryData pb(ember_wire_bytes b)
{
    ProtobufCBinaryData r = {b.len, (uint8_t *)b.data};
    return r;
}
static char *cstr(ember_wire_bytes b) { return b.len ? (char *)b.data : (char *)""; }

/* Random messages of each kind. */
static ember_wire_pull_request r_pull_req(void)
{
    ember_wire_pull_request m = {0};
    m.table = rname();
    m.keys = rbytes(8 * (rnd() % 3 ? rnd() % 40 : 0));
    m.insert_missing = (int)(rnd() % 2);
    m.dtype = renum();
    m.want_found = (int)(rnd() % 2);
    m.scores = rbytes(8 * (rnd() % 3 ? 0 : rnd() % 40));
    m.dim = (uint32_t)rvarint();
    m.offsets = rbytes(8 * (rnd() % 3 ? 0 : rnd() % 20));
    m.combiner = rnd() % 2 ? renum() : 0;
    m.weights = rbytes(4 * (rnd() % 3 ? 0 : rnd() % 40));
    return m;
}
static ember_wire_pull_response r_pull_resp(void)
{
    ember_wire_pull_response m = {0};
    m.values = rbytes(rnd() % 3 ? rnd() % 700 : 0);
    m.dim = (uint32_t)rvarint();
    m.dtype = renum();
    m.found = rbytes(rnd() % 2 ? rnd() % 50 : 0);
    return m;
}
static ember_wire_push_request r_push_req(void)
{
    ember_wire_push_request m = {0};
    m.table = rname();
    m.keys = rbytes(8 * (rnd() % 3 ? rnd() % 40 : 0));
    m.values = rbytes(rnd() % 3 ? rnd() % 700 : 0);
    m.dtype = renum();
    m.mode = renum();
    m.client_id = rvarint();
    m.sequence = rvarint();
    m.scores = rbytes(8 * (rnd() % 3 ? 0 : rnd() % 40));
    m.epoch = (uint32_t)rvarint();
    m.offsets = rbytes(8 * (rnd() % 3 ? 0 : rnd() % 20));
    m.combiner = rnd() % 2 ? renum() : 0;
    m.weights = rbytes(4 * (rnd() % 3 ? 0 : rnd() % 40));
    m.norms = rbytes(4 * (rnd() % 3 ? 0 : rnd() % 20));
    m.ack = rnd() % 2 ? renum() : 0;
    m.ack_replicas = rnd() % 2 ? (uint32_t)rvarint() : 0;
    m.term = rnd() % 2 ? rvarint() : 0;
    return m;
}
static ember_wire_push_response r_push_resp(void)
{
    ember_wire_push_response m = {rvarint(), (int)(rnd() % 2), rnd() % 2 ? rvarint() : 0};
    return m;
}

/* Ours → protobuf-c structs (for pack) and comparisons (after unpack). */
static void to_pc_pull_req(const ember_wire_pull_request *m, Ember__V1__PullRequest *p)
{
    ember__v1__pull_request__init(p);
    p->table = cstr(m->table);
    p->keys = pb(m->keys);
    p->insert_missing = m->insert_missing;
    p->dtype = (Ember__V1__DType)m->dtype;
    p->want_found = m->want_found;
    p->scores = pb(m->scores);
    p->dim = m->dim;
    p->offsets = pb(m->offsets);
    p->combiner = (Ember__V1__Combiner)m->combiner;
    p->weights = pb(m->weights);
}
static void eq_pull_req(const ember_wire_pull_request *m, const Ember__V1__PullRequest *p)
{
    eq_str(m->table, p->table);
    eq_bytes(m->keys, p->keys);
    ck_assert_int_eq(m->insert_missing, !!p->insert_missing);
    ck_assert_int_eq(m->dtype, (int32_t)p->dtype);
    ck_assert_int_eq(m->want_found, !!p->want_found);
    eq_bytes(m->scores, p->scores);
    ck_assert_uint_eq(m->dim, p->dim);
    eq_bytes(m->offsets, p->offsets);
    ck_assert_int_eq(m->combiner, (int32_t)p->combiner);
    eq_bytes(m->weights, p->weights);
}
static void to_pc_pull_resp(const ember_wire_pull_response *m, Ember__V1__PullResponse *p)
{
    ember__v1__pull_response__init(p);
    p->values = pb(m->values);
    p->dim = m->dim;
    p->dtype = (Ember__V1__DType)m->dtype;
    p->found = pb(m->found);
}
static void eq_pull_resp(const ember_wire_pull_response *m, const Ember__V1__PullResponse *p)
{
    eq_bytes(m->values, p->values);
    ck_assert_uint_eq(m->dim, p->dim);
    ck_assert_int_eq(m->dtype, (int32_t)p->dtype);
    eq_bytes(m->found, p->found);
}
static void to_pc_push_req(const ember_wire_push_request *m, Ember__V1__PushRequest *p)
{
    ember__v1__push_request__init(p);
    p->table = cstr(m->table);
    p->keys = pb(m->keys);
    p->values = pb(m->values);
    p->dtype = (Ember__V1__DType)m->dtype;
    p->mode = (Ember__V1__PushMode)m->mode;
    p->client_id = m->client_id;
    p->sequence = m->sequence;
    p->scores = pb(m->scores);
    p->epoch = m->epoch;
    p->offsets = pb(m->offsets);
    p->combiner = (Ember__V1__Combiner)m->combiner;
    p->weights = pb(m->weights);
    p->norms = pb(m->norms);
    p->ack = (Ember__V1__AckMode)m->ack;
    p->ack_replicas = m->ack_replicas;
    p->term = m->term;
}
static void eq_push_req(const ember_wire_push_request *m, const Ember__V1__PushRequest *p)
{
    eq_str(m->table, p->table);
    eq_bytes(m->keys, p->keys);
    eq_bytes(m->values, p->values);
    ck_assert_int_eq(m->dtype, (int32_t)p->dtype);
    ck_assert_int_eq(m->mode, (int32_t)p->mode);
    ck_assert_uint_eq(m->client_id, p->client_id);
    ck_assert_uint_eq(m->sequence, p->sequence);
    eq_bytes(m->scores, p->scores);
    ck_assert_uint_eq(m->epoch, p->epoch);
    eq_bytes(m->offsets, p->offsets);
    ck_assert_int_eq(m->combiner, (int32_t)p->combiner);
    eq_bytes(m->weights, p->weights);
    eq_bytes(m->norms, p->norms);
    ck_assert_int_eq(m->ack, (int32_t)p->ack);
    ck_assert_uint_eq(m->ack_replicas, p->ack_replicas);
    ck_assert_uint_eq(m->term, p->term);
}
static void to_pc_push_resp(const ember_wire_push_response *m, Ember__V1__PushResponse *p)
{
    ember__v1__push_response__init(p);
    p->applied = m->applied;
    p->duplicate = m->duplicate;
    p->term = m->term;
}
static void eq_push_resp(const ember_wire_push_response *m, const Ember__V1__PushResponse *p)
{
    ck_assert_uint_eq(m->applied, p->applied);
    ck_assert_int_eq(m->duplicate, !!p->duplicate);
    ck_assert_uint_eq(m->term, p->term);
}

/* Encodes with ours, checks size/offset agreement and byte equality with
 * protobuf-c's pack; returns our encoding (caller frees). */
static uint8_t *check_same(size_t ours_size, size_t (*enc)(const void *, uint8_t *),
                           const void *m, const ProtobufCMessage *pc, size_t *len)
{
    uint8_t *a = malloc(ours_size + 1), *b;
    size_t n = enc(m, a), pn = protobuf_c_message_get_packed_size(pc);
    ck_assert_uint_eq(n, ours_size);
    ck_assert_uint_eq(n, pn);
    b = malloc(pn + 1);
    ck_assert_uint_eq(protobuf_c_message_pack(pc, b), pn);
    ck_assert_msg(memcmp(a, b, n) == 0, "our encoding differs from protobuf-c's");
    free(b);
    *len = n;
    return a;
}

/* Type-exact adapters, so tests can take any message's encoder or decoder. */
#define WRAP(name, T)                                                                   \
    static size_t enc_##name(const void *m, uint8_t *b)                                 \
    {                                                                                   \
        return ember_wire_##name##_encode((const T *)m, b);                             \
    }                                                                                   \
    static int dec_##name(const uint8_t *b, size_t n, void *o, char *msg, size_t cap)   \
    {                                                                                   \
        return ember_wire_##name##_decode(b, n, (T *)o, msg, cap);                      \
    }
WRAP(pull_request, ember_wire_pull_request)
WRAP(pull_response, ember_wire_pull_response)
WRAP(push_request, ember_wire_push_request)
WRAP(push_response, ember_wire_push_response)
WRAP(pushpull_request, ember_wire_pushpull_request)
WRAP(pushpull_response, ember_wire_pushpull_response)

/* ---- both directions, random messages ------------------------------------- */

START_TEST(pull_request_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        pool_used = 0;
        ember_wire_pull_request m = r_pull_req(), d;
        Ember__V1__PullRequest p;
        ember_wire_off off;
        size_t len;
        char msg[200];
        to_pc_pull_req(&m, &p);
        uint8_t *a = check_same(ember_wire_pull_request_size(&m, &off),
                                enc_pull_request,
                                &m, &p.base, &len);
        if (m.keys.len)
            ck_assert(memcmp(a + off.keys, m.keys.data, m.keys.len) == 0);
        else
            ck_assert_uint_eq(off.keys, 0);
        if (m.scores.len)
            ck_assert(memcmp(a + off.scores, m.scores.data, m.scores.len) == 0);
        Ember__V1__PullRequest *u = ember__v1__pull_request__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        eq_pull_req(&m, u);
        ck_assert_int_eq(ember_wire_pull_request_decode(a, len, &d, msg, sizeof msg), 0);
        eq_pull_req(&d, u);
        ember__v1__pull_request__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

START_TEST(pull_response_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        pool_used = 0;
        ember_wire_pull_response m = r_pull_resp(), d;
        Ember__V1__PullResponse p;
        ember_wire_off off;
        size_t len;
        to_pc_pull_resp(&m, &p);
        uint8_t *a = check_same(ember_wire_pull_response_size(&m, &off),
                                enc_pull_response,
                                &m, &p.base, &len);
        if (m.values.len)
            ck_assert(memcmp(a + off.values, m.values.data, m.values.len) == 0);
        if (m.found.len)
            ck_assert(memcmp(a + off.found, m.found.data, m.found.len) == 0);
        Ember__V1__PullResponse *u = ember__v1__pull_response__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        eq_pull_resp(&m, u);
        ck_assert_int_eq(ember_wire_pull_response_decode(a, len, &d, NULL, 0), 0);
        eq_pull_resp(&d, u);
        ember__v1__pull_response__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

START_TEST(push_request_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        pool_used = 0;
        ember_wire_push_request m = r_push_req(), d;
        Ember__V1__PushRequest p;
        ember_wire_off off;
        size_t len;
        to_pc_push_req(&m, &p);
        uint8_t *a = check_same(ember_wire_push_request_size(&m, &off),
                                enc_push_request,
                                &m, &p.base, &len);
        if (m.values.len)
            ck_assert(memcmp(a + off.values, m.values.data, m.values.len) == 0);
        if (m.keys.len)
            ck_assert(memcmp(a + off.keys, m.keys.data, m.keys.len) == 0);
        Ember__V1__PushRequest *u = ember__v1__push_request__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        eq_push_req(&m, u);
        ck_assert_int_eq(ember_wire_push_request_decode(a, len, &d, NULL, 0), 0);
        eq_push_req(&d, u);
        ember__v1__push_request__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

START_TEST(push_response_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        ember_wire_push_response m = r_push_resp(), d;
        Ember__V1__PushResponse p;
        size_t len;
        to_pc_push_resp(&m, &p);
        uint8_t *a = check_same(ember_wire_push_response_size(&m),
                                enc_push_response,
                                &m, &p.base, &len);
        Ember__V1__PushResponse *u = ember__v1__push_response__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        eq_push_resp(&m, u);
        ck_assert_int_eq(ember_wire_push_response_decode(a, len, &d, NULL, 0), 0);
        eq_push_resp(&d, u);
        ember__v1__push_response__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

START_TEST(pushpull_request_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        pool_used = 0;
        ember_wire_pushpull_request m = {0}, d;
        Ember__V1__PushPullRequest p = EMBER__V1__PUSH_PULL_REQUEST__INIT;
        Ember__V1__PushRequest ps;
        Ember__V1__PullRequest pl;
        ember_wire_off a_off, b_off;
        size_t len;
        m.has_push = (int)(rnd() % 4 != 0);
        m.has_pull = (int)(rnd() % 4 != 0);
        if (m.has_push) {
            m.push = r_push_req();
            to_pc_push_req(&m.push, &ps);
            p.push = &ps;
        }
        if (m.has_pull) {
            m.pull = r_pull_req();
            to_pc_pull_req(&m.pull, &pl);
            p.pull = &pl;
        }
        uint8_t *a = check_same(
            ember_wire_pushpull_request_size(&m, &a_off, &b_off),
            enc_pushpull_request, &m,
            &p.base, &len);
        if (m.has_push && m.push.values.len)
            ck_assert(memcmp(a + a_off.values, m.push.values.data, m.push.values.len) == 0);
        if (m.has_pull && m.pull.keys.len)
            ck_assert(memcmp(a + b_off.keys, m.pull.keys.data, m.pull.keys.len) == 0);
        Ember__V1__PushPullRequest *u = ember__v1__push_pull_request__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        ck_assert_int_eq(ember_wire_pushpull_request_decode(a, len, &d, NULL, 0), 0);
        ck_assert_int_eq(d.has_push, u->push != NULL);
        ck_assert_int_eq(d.has_pull, u->pull != NULL);
        ck_assert_int_eq(d.has_push, m.has_push);
        ck_assert_int_eq(d.has_pull, m.has_pull);
        if (u->push) {
            eq_push_req(&m.push, u->push);
            eq_push_req(&d.push, u->push);
        }
        if (u->pull) {
            eq_pull_req(&m.pull, u->pull);
            eq_pull_req(&d.pull, u->pull);
        }
        ember__v1__push_pull_request__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

START_TEST(pushpull_response_both_ways)
{
    for (int it = 0; it < 2000; it++) {
        pool_used = 0;
        ember_wire_pushpull_response m = {0}, d;
        Ember__V1__PushPullResponse p = EMBER__V1__PUSH_PULL_RESPONSE__INIT;
        Ember__V1__PushResponse ps;
        Ember__V1__PullResponse pl;
        ember_wire_off b_off;
        size_t len;
        m.has_push = (int)(rnd() % 4 != 0);
        m.has_pull = (int)(rnd() % 4 != 0);
        if (m.has_push) {
            m.push = r_push_resp();
            to_pc_push_resp(&m.push, &ps);
            p.push = &ps;
        }
        if (m.has_pull) {
            m.pull = r_pull_resp();
            to_pc_pull_resp(&m.pull, &pl);
            p.pull = &pl;
        }
        uint8_t *a = check_same(
            ember_wire_pushpull_response_size(&m, &b_off),
            enc_pushpull_response, &m,
            &p.base, &len);
        if (m.has_pull && m.pull.values.len)
            ck_assert(memcmp(a + b_off.values, m.pull.values.data, m.pull.values.len) == 0);
        Ember__V1__PushPullResponse *u = ember__v1__push_pull_response__unpack(NULL, len, a);
        ck_assert_ptr_nonnull(u);
        ck_assert_int_eq(ember_wire_pushpull_response_decode(a, len, &d, NULL, 0), 0);
        ck_assert_int_eq(d.has_push, u->push != NULL);
        ck_assert_int_eq(d.has_pull, u->pull != NULL);
        if (u->push) {
            eq_push_resp(&m.push, u->push);
            eq_push_resp(&d.push, u->push);
        }
        if (u->pull) {
            eq_pull_resp(&m.pull, u->pull);
            eq_pull_resp(&d.pull, u->pull);
        }
        ember__v1__push_pull_response__free_unpacked(u, NULL);
        free(a);
    }
}
END_TEST

/* Empty messages: zero bytes; empty submessages still present. */
START_TEST(empty_messages)
{
    ember_wire_pull_request a = {0};
    ember_wire_push_request b = {0};
    ember_wire_pull_response c = {0};
    ember_wire_push_response e = {0};
    ck_assert_uint_eq(ember_wire_pull_request_size(&a, NULL), 0);
    ck_assert_uint_eq(ember_wire_push_request_size(&b, NULL), 0);
    ck_assert_uint_eq(ember_wire_pull_response_size(&c, NULL), 0);
    ck_assert_uint_eq(ember_wire_push_response_size(&e), 0);
    ck_assert_int_eq(ember_wire_pull_request_decode(NULL, 0, &a, NULL, 0), 0);
    ck_assert_int_eq(ember_wire_push_request_decode((const uint8_t *)"", 0, &b, NULL, 0), 0);
    ck_assert_uint_eq(a.keys.len, 0);

    ember_wire_pushpull_request pp = {0}, dd;
    pp.has_push = pp.has_pull = 1;
    uint8_t buf[8];
    ck_assert_uint_eq(ember_wire_pushpull_request_size(&pp, NULL, NULL), 4);
    ck_assert_uint_eq(ember_wire_pushpull_request_encode(&pp, buf), 4);
    ck_assert(memcmp(buf, "\x0a\x00\x12\x00", 4) == 0);
    ck_assert_int_eq(ember_wire_pushpull_request_decode(buf, 4, &dd, NULL, 0), 0);
    ck_assert(dd.has_push && dd.has_pull);
    Ember__V1__PushPullRequest *u = ember__v1__push_pull_request__unpack(NULL, 4, buf);
    ck_assert(u && u->push && u->pull);
    ember__v1__push_pull_request__free_unpacked(u, NULL);
}
END_TEST

/* ---- unknown fields, repeats, merges -------------------------------------- */

/* Appends one unknown field of each legal wire type with field numbers our
 * messages do not use (small and large). */
static size_t put_unknowns(uint8_t *p)
{
    static const uint8_t u[] = {
        0x78, 0x96, 0x01,                         /* 15 varint 150 */
        0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8,       /* 100 fixed64 */
        0xaa, 0x06, 3, 'a', 'b', 'c',             /* 101 len 3 */
        0xb5, 0x06, 1, 2, 3, 4,                   /* 102 fixed32 */
        0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01,       /* 2^29-1 varint */
    };
    memcpy(p, u, sizeof u);
    return sizeof u;
}

START_TEST(unknown_fields_skipped)
{
    /* PushRequest: unknowns before, between and after the known fields */
    pool_used = 0;
    ember_wire_push_request m = r_push_req(), d;
    m.table.data = (const uint8_t *)"t";
    m.table.len = 1;
    m.client_id = 7;
    uint8_t buf[4096];
    size_t n = put_unknowns(buf);
    n += ember_wire_push_request_encode(&m, buf + n);
    n += put_unknowns(buf + n);
    ck_assert_int_eq(ember_wire_push_request_decode(buf, n, &d, NULL, 0), 0);
    Ember__V1__PushRequest *u = ember__v1__push_request__unpack(NULL, n, buf);
    ck_assert_ptr_nonnull(u);
    eq_push_req(&m, u);
    eq_push_req(&d, u);
    ember__v1__push_request__free_unpacked(u, NULL);

    /* inside a PushPull submessage, and at its top level */
    ember_wire_pushpull_request pp = {0}, dd;
    uint8_t inner[512], *p = buf;
    ember_wire_pull_request pl = {0};
    pl.table.data = (const uint8_t *)"abc";
    pl.table.len = 3;
    pl.dtype = 2;
    size_t k = ember_wire_pull_request_encode(&pl, inner);
    k += put_unknowns(inner + k);
    p += put_unknowns(p);
    *p++ = 0x12;
    *p++ = (uint8_t)k;
    memcpy(p, inner, k);
    p += k;
    ck_assert_int_eq(ember_wire_pushpull_request_decode(buf, (size_t)(p - buf), &pp, NULL, 0), 0);
    ck_assert(!pp.has_push && pp.has_pull);
    ck_assert_int_eq(pp.pull.dtype, 2);
    ck_assert_uint_eq(pp.pull.table.len, 3);
    (void)dd;
}
END_TEST

START_TEST(repeated_fields_last_wins_and_merge)
{
    /* dtype twice, keys twice: last wins, like protobuf-c */
    static const uint8_t a[] = {0x20, 0x01, 0x12, 0x08, 1, 0, 0, 0, 0, 0, 0, 0,
                                0x20, 0x02, 0x12, 0x08, 2, 0, 0, 0, 0, 0, 0, 0};
    ember_wire_pull_request d;
    ck_assert_int_eq(ember_wire_pull_request_decode(a, sizeof a, &d, NULL, 0), 0);
    Ember__V1__PullRequest *u = ember__v1__pull_request__unpack(NULL, sizeof a, a);
    ck_assert_ptr_nonnull(u);
    eq_pull_req(&d, u);
    ck_assert_int_eq(d.dtype, 2);
    ck_assert_uint_eq(d.keys.data[0], 2);
    ember__v1__pull_request__free_unpacked(u, NULL);

    /* push submessage twice: fields merge (client_id from the first, sequence
     * from the second), as the protobuf spec and protoc's C++/Python/Go runtimes
     * do. protobuf-c 1.4 keeps only the last occurrence instead: it must parse
     * the input, but we do not compare with it here. */
    static const uint8_t b[] = {0x0a, 0x02, 0x30, 0x05, 0x0a, 0x02, 0x38, 0x09};
    ember_wire_pushpull_request pp;
    ck_assert_int_eq(ember_wire_pushpull_request_decode(b, sizeof b, &pp, NULL, 0), 0);
    Ember__V1__PushPullRequest *v = ember__v1__push_pull_request__unpack(NULL, sizeof b, b);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(pp.push.client_id, 5);
    ck_assert_uint_eq(pp.push.sequence, 9);
    ck_assert_uint_eq(v->push->sequence, 9);
    ember__v1__push_pull_request__free_unpacked(v, NULL);
}
END_TEST

/* ---- malformed input ------------------------------------------------------ */

typedef int (*decode_fn)(const uint8_t *, size_t, void *, char *, size_t);

/* Ours refuses with INVALID_ARGUMENT and a message; protobuf-c refuses too
 * (unless `pc_accepts`: a rule of ours beyond protobuf, like keys % 8). */
static void refused(decode_fn dec, const ProtobufCMessageDescriptor *desc,
                    const uint8_t *buf, size_t len, int pc_accepts, const char *want)
{
    union { ember_wire_pushpull_request a; ember_wire_pushpull_response b; } out;
    char msg[256];
    ck_assert_int_eq(dec(buf, len, &out, msg, sizeof msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_msg(strstr(msg, want) != NULL, "message '%s' lacks '%s'", msg, want);
    ProtobufCMessage *u = protobuf_c_message_unpack(desc, NULL, len, buf);
    if (pc_accepts)
        ck_assert_ptr_nonnull(u);
    else
        ck_assert_msg(u == NULL, "protobuf-c accepts what we refuse (%s)", want);
    if (u)
        protobuf_c_message_free_unpacked(u, NULL);
}

START_TEST(malformed_refused)
{
    const ProtobufCMessageDescriptor *pull = &ember__v1__pull_request__descriptor,
                                     *push = &ember__v1__push_request__descriptor,
                                     *pp = &ember__v1__push_pull_request__descriptor;
    decode_fn dpull = dec_pull_request,
              dpush = dec_push_request,
              dpp = dec_pushpull_request,
              dpr = dec_pull_response,
              dps = dec_push_response,
              dppr = dec_pushpull_response;

    /* truncated tag varint, truncated value varint */
    refused(dpull, pull, (const uint8_t *)"\x80", 1, 0, "truncated varint");
    refused(dpush, push, (const uint8_t *)"\x30\xff\xff", 3, 0, "truncated varint");
    /* varint of 11 bytes */
    refused(dpush, push,
            (const uint8_t *)"\x30\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, 0,
            "longer than 10");
    /* truncated length varint; length past the end */
    refused(dpull, pull, (const uint8_t *)"\x0a\x80", 2, 0, "truncated varint");
    refused(dpull, pull, (const uint8_t *)"\x0a\x05" "ab", 4, 0, "past the end");
    refused(dpush, push, (const uint8_t *)"\x1a\xff\xff\xff\xff\x0f", 6, 0, "past the end");
    /* field number 0 */
    refused(dpull, pull, (const uint8_t *)"\x00\x01", 2, 0, "field number 0");
    /* groups (3, 4) and reserved wire types (6, 7) */
    refused(dpull, pull, (const uint8_t *)"\x7b\x7c", 2, 0, "wire type 3");
    refused(dpull, pull, (const uint8_t *)"\x7c", 1, 0, "wire type 4");
    refused(dpull, pull, (const uint8_t *)"\x7e", 1, 0, "wire type 6");
    refused(dpush, push, (const uint8_t *)"\x7f", 1, 0, "wire type 7");
    /* truncated unknown fixed32 / fixed64 */
    refused(dpull, pull, (const uint8_t *)"\x7d\x01\x02", 3, 0, "truncated fixed32");
    refused(dpull, pull, (const uint8_t *)"\x79\x01\x02\x03", 4, 0, "truncated fixed64");
    /* wrong wire type for every known field of PullRequest / PushRequest */
    for (uint32_t f = 1; f <= 8; f++) {
        uint8_t b[16];
        int lenfield = f == 1 || f == 2 || f == 6;
        b[0] = (uint8_t)(f << 3 | (lenfield ? 0 : 2));
        b[1] = 0x01;
        b[2] = 'x';
        /* protobuf-c reads a bool from any wire type; we follow the brief (refuse) */
        if (f <= 6)
            refused(dpull, pull, b, 3, f == 3 || f == 5, "wire type");
        lenfield = f == 1 || f == 2 || f == 3 || f == 8;
        b[0] = (uint8_t)(f << 3 | (lenfield ? 5 : 1));
        memset(b + 1, 0, 8);
        refused(dpush, push, b, 9, 0, "wire type");
    }
    /* responses: wrong wire types */
    refused(dpr, &ember__v1__pull_response__descriptor, (const uint8_t *)"\x08\x01", 2, 0,
            "(values)");
    refused(dpr, &ember__v1__pull_response__descriptor, (const uint8_t *)"\x12\x00", 2, 0,
            "(dim)");
    refused(dps, &ember__v1__push_response__descriptor, (const uint8_t *)"\x0a\x00", 2, 0,
            "(applied)");
    refused(dppr, &ember__v1__push_pull_response__descriptor, (const uint8_t *)"\x08\x00", 2,
            0, "(push)");
    /* keys / scores not a multiple of 8: ours only (protobuf-c sees bytes) */
    refused(dpull, pull, (const uint8_t *)"\x12\x07" "1234567", 9, 1, "multiple of 8");
    refused(dpush, push, (const uint8_t *)"\x42\x09" "123456789", 11, 1, "multiple of 8");
    refused(dpush, push, (const uint8_t *)"\x12\x01" "1", 3, 1, "keys");
    /* pooled fields: offsets a multiple of 8, weights and norms of 4; the
     * combiner is a varint */
    refused(dpull, pull, (const uint8_t *)"\x42\x07" "1234567", 9, 1, "offsets");
    refused(dpull, pull, (const uint8_t *)"\x52\x03" "123", 5, 1, "weights");
    refused(dpull, pull, (const uint8_t *)"\x4a\x01" "1", 3, 0, "combiner");
    refused(dpush, push, (const uint8_t *)"\x5a\x04" "1234", 6, 1, "offsets");
    refused(dpush, push, (const uint8_t *)"\x6a\x05" "12345", 7, 1, "weights");
    refused(dpush, push, (const uint8_t *)"\x72\x02" "12", 4, 1, "norms");
    refused(dpush, push, (const uint8_t *)"\x62\x01" "1", 3, 0, "combiner");
    /* inside a submessage: the error names it */
    refused(dpp, pp, (const uint8_t *)"\x0a\x03\x12\x01" "1", 5, 1, "push");
    refused(dpp, pp, (const uint8_t *)"\x12\x02\x0a\x05", 4, 0, "past the end");
    refused(dpp, pp, (const uint8_t *)"\x0a\x05\x30", 3, 0, "past the end");
    /* a submessage whose content ends mid-varint */
    refused(dpp, pp, (const uint8_t *)"\x0a\x02\x30\x80\x30\x01", 6, 0, "truncated");
}
END_TEST

/* ---- pooled lookups: the bags ----------------------------------------------- */

static int bags_of(const uint64_t *offs, size_t noffs, size_t n, const float *w, size_t nw,
                   size_t *bags, char *msg)
{
    ember_wire_bytes o = {(const uint8_t *)offs, noffs * 8};
    ember_wire_bytes wb = {(const uint8_t *)w, nw * 4};
    return ember_wire_bags_check(o, n, wb, bags, msg, 200);
}

START_TEST(bags_checked)
{
    char msg[200];
    size_t bags = 99;
    uint64_t ok[4] = {0, 2, 2, 5}, start1[3] = {1, 2, 5}, dec[4] = {0, 3, 2, 5},
             short_[3] = {0, 2, 4}, only0[1] = {0};
    float w[5] = {1, 2, 0, -1, 0.5f}, wnan[5] = {1, 2, NAN, 0, 0}, winf[5] = {1, 2, 0, 0, -INFINITY};
    ck_assert_int_eq(bags_of(ok, 4, 5, NULL, 0, &bags, msg), 0);
    ck_assert_uint_eq(bags, 3);
    ck_assert_int_eq(bags_of(ok, 4, 5, w, 5, &bags, msg), 0);
    ck_assert_int_eq(bags_of(only0, 1, 0, NULL, 0, &bags, msg), 0); /* no bags, no keys */
    ck_assert_uint_eq(bags, 0);
    ck_assert_int_eq(bags_of(only0, 0, 0, NULL, 0, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "bags + 1"));
    ck_assert_int_eq(bags_of(start1, 3, 5, NULL, 0, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "start at 1"));
    ck_assert_int_eq(bags_of(dec, 4, 5, NULL, 0, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "decrease at bag 1"));
    ck_assert_int_eq(bags_of(short_, 3, 5, NULL, 0, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "last offset is 4"));
    ck_assert_int_eq(bags_of(ok, 4, 5, w, 4, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "4 values for 5 keys"));
    ck_assert_int_eq(bags_of(ok, 4, 5, wnan, 5, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "index 2"));
    ck_assert_int_eq(bags_of(ok, 4, 5, winf, 5, &bags, msg), EMBER_WIRE_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(msg, "index 4"));
    ck_assert_uint_eq(bags, 0);
}
END_TEST

/* The combiner arithmetic (proto/pool.h), on values whose results are exact. */
START_TEST(pool_arithmetic)
{
    float rows[3 * 2] = {1, 2, 3, 4, 5, 6}, out[2];
    float w[3] = {2, 0.5f, -1};
    const uint8_t *wb = (const uint8_t *)w;
    ember_pool_sum(rows, 2, NULL, 0, 3, out);
    ck_assert(out[0] == 9 && out[1] == 12);
    ember_pool_sum(rows, 2, wb, 0, 3, out); /* 2·(1,2) + 0.5·(3,4) − (5,6) */
    ck_assert(out[0] == -1.5f && out[1] == 0);
    ck_assert(ember_pool_norm(EMBER_WIRE_COMBINER_SUM, wb, 0, 3) == 1);
    ck_assert(ember_pool_norm(EMBER_WIRE_COMBINER_MEAN, wb, 0, 3) == 1.5f);
    ck_assert(ember_pool_norm(EMBER_WIRE_COMBINER_MEAN, NULL, 0, 3) == 3);
    ck_assert(ember_pool_norm(EMBER_WIRE_COMBINER_SQRTN, NULL, 0, 4) == 2);
    ck_assert(ember_pool_norm(EMBER_WIRE_COMBINER_SQRTN, wb, 0, 3) == sqrtf(5.25f));
    ember_pool_sum(rows, 2, NULL, 0, 3, out);
    ember_pool_finish(EMBER_WIRE_COMBINER_MEAN, 3, out, 2);
    ck_assert(out[0] == 3 && out[1] == 4);
    ember_pool_finish(EMBER_WIRE_COMBINER_MEAN, 0, out, 2); /* divisor 0: zeros */
    ck_assert(out[0] == 0 && out[1] == 0);
    ember_pool_sum(rows, 2, NULL, 1, 1, out); /* an empty bag */
    ck_assert(out[0] == 0 && out[1] == 0);
    ck_assert(ember_pool_coef(EMBER_WIRE_COMBINER_SUM, 0.5f, 7) == 0.5f);
    ck_assert(ember_pool_coef(EMBER_WIRE_COMBINER_MEAN, 3, 1.5f) == 2);
    ck_assert(ember_pool_coef(EMBER_WIRE_COMBINER_SQRTN, 3, 0) == 0);
}
END_TEST

/* ---- holes --------------------------------------------------------------- */

START_TEST(holes_are_filled_in_place)
{
    /* a PullResponse with values as a hole, filled after encode: same bytes as
     * protobuf-c's pack of the full message */
    float v[3 * 4];
    uint8_t found[3] = {1, 0, 1};
    for (int i = 0; i < 12; i++)
        v[i] = (float)i * 0.5f - 1.0f;
    ember_wire_pull_response m = {{NULL, sizeof v}, 4, 0, {NULL, 3}};
    ember_wire_off off;
    size_t n = ember_wire_pull_response_size(&m, &off);
    uint8_t *buf = malloc(n);
    ck_assert_uint_eq(ember_wire_pull_response_encode(&m, buf), n);
    memcpy(buf + off.values, v, sizeof v);
    memcpy(buf + off.found, found, 3);
    Ember__V1__PullResponse p = EMBER__V1__PULL_RESPONSE__INIT;
    p.values.data = (uint8_t *)v;
    p.values.len = sizeof v;
    p.dim = 4;
    p.found.data = found;
    p.found.len = 3;
    uint8_t ref[256];
    ck_assert_uint_eq(ember__v1__pull_response__pack(&p, ref), n);
    ck_assert(memcmp(ref, buf, n) == 0);
    free(buf);

    /* the same inside a PushPullResponse */
    ember_wire_pushpull_response pp = {1, 1, {12, 0, 0}, m};
    n = ember_wire_pushpull_response_size(&pp, &off);
    buf = malloc(n);
    ck_assert_uint_eq(ember_wire_pushpull_response_encode(&pp, buf), n);
    memcpy(buf + off.values, v, sizeof v);
    memcpy(buf + off.found, found, 3);
    Ember__V1__PushPullResponse q = EMBER__V1__PUSH_PULL_RESPONSE__INIT;
    Ember__V1__PushResponse ps = EMBER__V1__PUSH_RESPONSE__INIT;
    ps.applied = 12;
    q.push = &ps;
    q.pull = &p;
    ck_assert_uint_eq(ember__v1__push_pull_response__pack(&q, ref), n);
    ck_assert(memcmp(ref, buf, n) == 0);
    free(buf);

    /* PushPullRequest: holes in both parts */
    uint64_t keys[2] = {5, 6};
    ember_wire_pushpull_request r = {0};
    ember_wire_off a_off, b_off;
    r.has_push = r.has_pull = 1;
    r.push.keys.len = 16;
    r.push.values.len = 8;
    r.pull.keys.len = 16;
    n = ember_wire_pushpull_request_size(&r, &a_off, &b_off);
    buf = malloc(n);
    ember_wire_pushpull_request_encode(&r, buf);
    memcpy(buf + a_off.keys, keys, 16);
    memcpy(buf + a_off.values, v, 8);
    memcpy(buf + b_off.keys, keys, 16);
    ember_wire_pushpull_request d;
    ck_assert_int_eq(ember_wire_pushpull_request_decode(buf, n, &d, NULL, 0), 0);
    uint64_t got[2];
    ember_wire_keys_copy(d.pull.keys, got);
    ck_assert(got[0] == 5 && got[1] == 6);
    ember_wire_keys_copy(d.push.keys, got);
    ck_assert(got[0] == 5 && got[1] == 6);
    ck_assert(memcmp(d.push.values.data, v, 8) == 0);
    free(buf);
}
END_TEST

/* ---- float16 / bfloat16 --------------------------------------------------- */

static float fbits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

START_TEST(f16_round_trip_and_ties_to_even)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = ember_wire_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            ck_assert(isnan(ember_wire_f16_to_f32(ember_wire_f32_to_f16(f))));
            continue;
        }
        ck_assert_uint_eq(ember_wire_f32_to_f16(f), h); /* exact values are kept */
        /* halfway to the next larger magnitude: ties to even; nudged: nearest */
        uint32_t next = h + 1;
        if ((h & 0x7fffu) >= 0x7bffu) /* max finite, Inf: no finite next */
            continue;
        double a = ember_wire_f16_to_f32((uint16_t)h),
               b = ember_wire_f16_to_f32((uint16_t)next);
        float mid = (float)((a + b) / 2);
        ck_assert((double)mid == (a + b) / 2); /* exact in float */
        uint16_t even = (h & 1) ? (uint16_t)next : (uint16_t)h;
        ck_assert_uint_eq(ember_wire_f32_to_f16(mid), even);
        uint32_t mu;
        memcpy(&mu, &mid, 4);
        if (mid != 0.0f) {
            ck_assert_uint_eq(ember_wire_f32_to_f16(fbits(mu + 1)), next);
            ck_assert_uint_eq(ember_wire_f32_to_f16(fbits(mu - 1)), h);
        }
    }
    ck_assert_uint_eq(ember_wire_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(ember_wire_f32_to_f16(65519.99f), 0x7bff);
    ck_assert_uint_eq(ember_wire_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-1e30f), 0xfc00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(1e-30f), 0);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(ember_wire_f32_to_f16(INFINITY), 0x7c00);
    ck_assert(isnan(ember_wire_f16_to_f32(ember_wire_f32_to_f16(NAN))));
    ck_assert_uint_eq(ember_wire_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(5.9604645e-8f), 0x0001); /* 2^-24 */
    ck_assert_uint_eq(ember_wire_f32_to_f16(2.9802322e-8f), 0x0000); /* 2^-25: tie → 0 */
}
END_TEST

START_TEST(bf16_round_trip_and_ties_to_even)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = ember_wire_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            ck_assert(isnan(ember_wire_bf16_to_f32(ember_wire_f32_to_bf16(f))));
            continue;
        }
        ck_assert_uint_eq(ember_wire_f32_to_bf16(f), h);
        if ((h & 0x7fffu) >= 0x7f7fu)
            continue;
        uint32_t u = h << 16, mid = u + 0x8000u; /* exact halfway in bits */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        ck_assert_uint_eq(ember_wire_f32_to_bf16(fbits(mid)), even);
        ck_assert_uint_eq(ember_wire_f32_to_bf16(fbits(mid + 1)), h + 1);
        ck_assert_uint_eq(ember_wire_f32_to_bf16(fbits(mid - 1)), h);
    }
    ck_assert(isnan(ember_wire_bf16_to_f32(ember_wire_f32_to_bf16(NAN))));
    ck_assert_uint_eq(ember_wire_f32_to_bf16(1.0f), 0x3f80);
}
END_TEST

START_TEST(array_conversions)
{
    float src[5] = {1.0f, -2.5f, 0.333f, 65504.0f, 0.0f}, back[5];
    uint8_t w[20];
    ember_wire_to_wire(EMBER_WIRE_F32, src, 5, w + 1 - 1);
    ember_wire_from_wire(EMBER_WIRE_F32, w, 5, back);
    ck_assert(memcmp(src, back, sizeof src) == 0);
    uint8_t odd[21];
    ember_wire_to_wire(EMBER_WIRE_F16, src, 5, odd + 1); /* unaligned */
    ember_wire_from_wire(EMBER_WIRE_F16, odd + 1, 5, back);
    for (int i = 0; i < 5; i++)
        ck_assert(back[i] == ember_wire_f16_to_f32(ember_wire_f32_to_f16(src[i])));
    ember_wire_to_wire(EMBER_WIRE_BF16, src, 5, odd + 1);
    ember_wire_from_wire(EMBER_WIRE_BF16, odd + 1, 5, back);
    for (int i = 0; i < 5; i++)
        ck_assert(back[i] == ember_wire_bf16_to_f32(ember_wire_f32_to_bf16(src[i])));
    ck_assert_uint_eq(ember_wire_dtype_size(0), 4);
    ck_assert_uint_eq(ember_wire_dtype_size(2), 2);
    ck_assert_uint_eq(ember_wire_dtype_size(3), 0);
    ck_assert_uint_eq(ember_wire_dtype_size(-1), 0);
    ck_assert_str_eq(ember_wire_dtype_name(1), "float16");
}
END_TEST

/* ---- the x86 conversion path against the scalar one, bit for bit ---------- */

/* Both paths over src[0..n) as float32 → dtype → float32, at byte offset 1 (so
 * every load and store is unaligned) and at every tail length 0..17. */
static void paths_agree_to_wire(int32_t dtype, const float *src, size_t n)
{
    uint8_t *a = malloc(2 * n + 1), *b = malloc(2 * n + 1);
    ck_assert(a && b);
    ember_wire_to_wire_on(EMBER_WIRE_CONV_SCALAR, dtype, src, n, a + 1);
    ember_wire_to_wire_on(EMBER_WIRE_CONV_X86, dtype, src, n, b + 1);
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + 1 + 2 * i, b + 1 + 2 * i, 2) != 0) {
            uint32_t u;
            uint16_t x, y;
            memcpy(&u, src + i, 4);
            memcpy(&x, a + 1 + 2 * i, 2);
            memcpy(&y, b + 1 + 2 * i, 2);
            ck_abort_msg("%s of float 0x%08x: scalar 0x%04x, x86 0x%04x",
                         ember_wire_dtype_name(dtype), u, x, y);
        }
    /* the single-value function is the scalar path */
    for (size_t i = 0; i < n; i++) {
        uint16_t h = dtype == EMBER_WIRE_F16 ? ember_wire_f32_to_f16(src[i])
                                             : ember_wire_f32_to_bf16(src[i]), x;
        memcpy(&x, a + 1 + 2 * i, 2);
        ck_assert_uint_eq(h, x);
    }
    for (size_t len = 0; len <= 17 && len <= n; len++) {
        memset(a, 0xEE, 2 * len + 1);
        memset(b, 0xEE, 2 * len + 1);
        ember_wire_to_wire_on(EMBER_WIRE_CONV_SCALAR, dtype, src + 3, len > 3 ? len - 3 : 0, a);
        ember_wire_to_wire_on(EMBER_WIRE_CONV_X86, dtype, src + 3, len > 3 ? len - 3 : 0, b);
        ck_assert(memcmp(a, b, 2 * len + 1) == 0);
    }
    free(a);
    free(b);
}

static void paths_agree_from_wire(int32_t dtype, const uint8_t *src, size_t n)
{
    float *a = malloc(n * 4 + 4), *b = malloc(n * 4 + 4);
    ck_assert(a && b);
    ember_wire_from_wire_on(EMBER_WIRE_CONV_SCALAR, dtype, src, n, a);
    ember_wire_from_wire_on(EMBER_WIRE_CONV_X86, dtype, src, n, b);
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        uint32_t x, y, want;
        memcpy(&h, src + 2 * i, 2);
        memcpy(&x, a + i, 4);
        memcpy(&y, b + i, 4);
        float w = dtype == EMBER_WIRE_F16 ? ember_wire_f16_to_f32(h) : ember_wire_bf16_to_f32(h);
        memcpy(&want, &w, 4);
        ck_assert_msg(x == want && y == want, "%s 0x%04x: want 0x%08x, scalar 0x%08x, x86 0x%08x",
                      ember_wire_dtype_name(dtype), h, want, x, y);
    }
    for (size_t len = 0; len <= 17 && len <= n; len++) {
        memset(a, 0xEE, 4 * len + 4);
        memset(b, 0xEE, 4 * len + 4);
        ember_wire_from_wire_on(EMBER_WIRE_CONV_SCALAR, dtype, src + 1, len / 2, a);
        ember_wire_from_wire_on(EMBER_WIRE_CONV_X86, dtype, src + 1, len / 2, b);
        ck_assert(memcmp(a, b, 4 * len + 4) == 0);
    }
    free(a);
    free(b);
}

START_TEST(x86_conversions_match_scalar_bit_for_bit)
{
    unsigned ra, rb, rc, rd;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __get_cpuid(1, &ra, &rb, &rc, &rd) &&
          (rc >> 29 & 1u)))
        fprintf(stderr, "note: no F16C/AVX2 here; both paths run the scalar code\n");
    else if (!getenv("EMBER_WIRE_SCALAR"))
        ck_assert_int_eq(ember_wire_conv_path(), EMBER_WIRE_CONV_X86);

    for (int d = 0; d < 2; d++) {
        const int32_t dtype = d ? EMBER_WIRE_BF16 : EMBER_WIRE_F16;
        /* Every 16-bit value, read at an odd address, to float32. */
        uint8_t *wire = malloc(2 * 0x10000 + 1);
        ck_assert(wire);
        for (uint32_t h = 0; h < 0x10000; h++) {
            uint16_t v = (uint16_t)h;
            memcpy(wire + 1 + 2 * h, &v, 2);
        }
        paths_agree_from_wire(dtype, wire + 1, 0x10000);
        free(wire);

        /* float32 → dtype: every representable value, the exact ties between
         * neighbours and one bit either side of each tie, NaNs with each single
         * payload bit (signalling and quiet, both signs), overflow and
         * underflow edges, and a sweep of all 2^32 bit patterns with a prime
         * stride. */
        size_t cap = 4 * 0x10000 + 256 + (UINT64_C(1) << 32) / 4093 + 16, n = 0;
        uint32_t *u = malloc(cap * 4);
        ck_assert(u);
        for (uint32_t h = 0; h < 0x10000; h++) {
            float f = dtype == EMBER_WIRE_F16 ? ember_wire_f16_to_f32((uint16_t)h)
                                              : ember_wire_bf16_to_f32((uint16_t)h);
            memcpy(&u[n++], &f, 4);
            if (isnan(f) || isinf(f))
                continue;
            uint32_t next = (h + 1) & 0xffffu;
            float g = dtype == EMBER_WIRE_F16 ? ember_wire_f16_to_f32((uint16_t)next)
                                              : ember_wire_bf16_to_f32((uint16_t)next);
            if (isnan(g) || (next & 0x7fffu) == 0)
                continue;
            float mid = (float)(((double)f + (double)g) / 2); /* exact: one more bit */
            uint32_t mu;
            memcpy(&mu, &mid, 4);
            u[n++] = mu;
            u[n++] = mu + 1;
            u[n++] = mu - 1;
        }
        for (unsigned bit = 0; bit < 23; bit++)
            for (uint32_t sign = 0; sign <= 1; sign++) {
                u[n++] = sign << 31 | 0x7f800000u | 1u << bit;
                u[n++] = sign << 31 | 0x7fc00000u | 1u << bit;
                u[n++] = sign << 31 | 0x7f800000u | (0x7fffffu >> bit);
            }
        static const uint32_t edges[] = {
            0x477fefffu, 0x477ff000u, 0x477ff001u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
            0x33000000u, 0x33000001u, 0x32ffffffu, 0x387fffffu, 0x38800000u, 0x00000001u,
            0x807fffffu, 0x80000000u, 0x7f7f8000u, 0x7f7f7fffu, 0xff7f8000u};
        for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
            u[n++] = edges[i];
        for (uint64_t x = 0; x < (UINT64_C(1) << 32); x += 4093)
            u[n++] = (uint32_t)x;
        ck_assert_uint_le(n, cap);
        paths_agree_to_wire(dtype, (const float *)(const void *)u, n);
        free(u);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, pull_request_both_ways);
    tcase_add_test(tc, bags_checked);
    tcase_add_test(tc, pool_arithmetic);
    tcase_add_test(tc, pull_response_both_ways);
    tcase_add_test(tc, push_request_both_ways);
    tcase_add_test(tc, push_response_both_ways);
    tcase_add_test(tc, pushpull_request_both_ways);
    tcase_add_test(tc, pushpull_response_both_ways);
    tcase_add_test(tc, empty_messages);
    tcase_add_test(tc, unknown_fields_skipped);
    tcase_add_test(tc, repeated_fields_last_wins_and_merge);
    tcase_add_test(tc, malformed_refused);
    tcase_add_test(tc, holes_are_filled_in_place);
    tcase_add_test(tc, f16_round_trip_and_ties_to_even);
    tcase_add_test(tc, bf16_round_trip_and_ties_to_even);
    tcase_add_test(tc, array_conversions);
    tcase_add_test(tc, x86_conversions_match_scalar_bit_for_bit);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_server.c — ember-server end to end, through a raw gRPC client (harness.h):
 * health, Pull/Push/PushPull round trips with exact values, every bad request
 * (right code, a message, the table unchanged), at-most-once pushes, deadlines,
 * unknown methods, the port already taken, SIGTERM, and every Admin call.
 *
 * Runs without forking (CK_NOFORK): one shared server for most tests, started in
 * main(); tests that need their own server start one. Servers run on the backend
 * of $EMBER_TEST_BACKEND (cpu when unset; ctest's gpu.server sets gpu).
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"

#define SHARD "/ember.v1.Shard/"
#define ADMIN "/ember.v1.Admin/"

static eh_server S;     /* the shared server */
static eh_client *C;    /* its client */

/* ---- helpers ------------------------------------------------------------- */

static uint8_t *pk(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

/* Calls an Admin method with a protobuf-c request; returns the status code. */
static int admin(eh_client *c, const char *method, const ProtobufCMessage *req, eh_result *r)
{
    size_t len;
    uint8_t *b = pk(req, &len);
    char path[128];
    snprintf(path, sizeof path, ADMIN "%s", method);
    ck_assert_int_eq(eh_unary(c, path, b, len, 0, r), 0);
    free(b);
    return r->code;
}

/* ServerInfo, unpacked (free with ember__v1__server_info_response__free_unpacked);
 * fails the test if the call does. */
static Ember__V1__ServerInfoResponse *server_info(eh_client *c)
{
    Ember__V1__ServerInfoRequest q = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    eh_result r;
    ck_assert_int_eq(admin(c, "ServerInfo", &q.base, &r), 0);
    Ember__V1__ServerInfoResponse *si =
        ember__v1__server_info_response__unpack(NULL, r.len, r.data);
    ck_assert_ptr_nonnull(si);
    eh_result_free(&r);
    return si;
}

static int create_on(eh_client *c, const char *name, uint32_t dim, uint64_t cap, int optim,
                     float lr, int init_kind, float init_a, int if_not_exists, eh_result *r)
{
    Ember__V1__CreateTableRequest q = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    Ember__V1__OptimizerConfig o = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    Ember__V1__InitializerConfig in = EMBER__V1__INITIALIZER_CONFIG__INIT;
    q.name = (char *)name;
    q.config = &cfg;
    q.if_not_exists = if_not_exists;
    cfg.dim = dim;
    cfg.capacity = cap;
    cfg.optimizer = &o;
    cfg.initializer = &in;
    o.kind = (Ember__V1__Optimizer)optim;
    o.lr = lr;
    in.kind = (Ember__V1__Initializer)init_kind;
    in.a = init_a;
    return admin(c, "CreateTable", &q.base, r);
}

/* A table with SGD of `lr` and zeros init; fails the test otherwise. */
static void create_sgd(const char *name, uint32_t dim, float lr)
{
    eh_result r;
    ck_assert_msg(create_on(C, name, dim, 4096, 0, lr, 0, 0, 0, &r) == 0, "create %s: %s",
                  name, r.message);
    eh_result_free(&r);
}

static void drop(const char *name)
{
    Ember__V1__DropTableRequest q = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    eh_result r;
    q.name = (char *)name;
    q.if_exists = 1;
    ck_assert_int_eq(admin(C, "DropTable", &q.base, &r), 0);
    eh_result_free(&r);
}

/* Pull through the wire codec; on OK fills out[n*dim] (float32) and found[n]. */
static int pull_dt(eh_client *c, const char *table, const uint64_t *keys, size_t n, int dtype,
                   int insert, float *out, uint8_t *found, eh_result *r)
{
    ember_wire_pull_request q = {0};
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.insert_missing = insert;
    q.dtype = dtype;
    q.want_found = found != NULL;
    size_t len = ember_wire_pull_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "Pull", b, len, 0, r), 0);
    free(b);
    if (r->code)
        return r->code;
    ember_wire_pull_response m;
    char msg[256];
    ck_assert_int_eq(ember_wire_pull_response_decode(r->data, r->len, &m, msg, sizeof msg), 0);
    ck_assert_int_eq(m.dtype, dtype);
    size_t nv = m.dim ? m.values.len / ember_wire_dtype_size(dtype) : 0;
    ck_assert_uint_eq(nv, n * m.dim);
    if (out)
        ember_wire_from_wire(dtype, m.values.data, nv, out);
    if (found) {
        ck_assert_uint_eq(m.found.len, n);
        memcpy(found, m.found.data, n);
    }
    return 0;
}

static int pull(const char *table, const uint64_t *keys, size_t n, int insert, float *out,
                eh_result *r)
{
    return pull_dt(C, table, keys, n, EMBER_WIRE_F32, insert, out, NULL, r);
}

/* Push of float32 values (converted to `dtype`); *dup gets duplicate. */
static int push_full(eh_client *c, const char *table, const uint64_t *keys, size_t n,
                     const float *vals, size_t nv, int dtype, int mode, uint64_t client,
                     uint64_t seq, int *dup, eh_result *r)
{
    ember_wire_push_request q = {0};
    uint8_t *vb = malloc(nv * 4 + 1);
    ember_wire_to_wire(dtype == 0 || dtype == 1 || dtype == 2 ? dtype : 0, vals, nv, vb);
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.values.data = vb;
    q.values.len = nv * (ember_wire_dtype_size(dtype) ? ember_wire_dtype_size(dtype) : 4);
    q.dtype = dtype;
    q.mode = mode;
    q.client_id = client;
    q.sequence = seq;
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_push_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "Push", b, len, 0, r), 0);
    free(b);
    free(vb);
    if (r->code)
        return r->code;
    ember_wire_push_response m;
    ck_assert_int_eq(ember_wire_push_response_decode(r->data, r->len, &m, NULL, 0), 0);
    if (dup)
        *dup = m.duplicate;
    if (!m.duplicate)
        ck_assert_uint_eq(m.applied, n);
    return 0;
}

static int push(const char *table, const uint64_t *keys, size_t n, const float *grads,
                size_t nv, eh_result *r)
{
    return push_full(C, table, keys, n, grads, nv, 0, 0, 0, 0, NULL, r);
}

/* Everything Export says about a table (full rows), as one byte string: equal
 * snapshots mean an unchanged table (export order is fixed for fixed content). */
typedef struct snap {
    uint8_t *b;
    size_t len;
} snap;

static void snap_add(void *ud, const uint8_t *d, size_t l)
{
    snap *s = ud;
    s->b = realloc(s->b, s->len + l + 1);
    memcpy(s->b + s->len, d, l);
    s->len += l;
}

static snap snapshot_on(eh_client *c, const char *table)
{
    snap s = {NULL, 0};
    Ember__V1__ExportRequest q = EMBER__V1__EXPORT_REQUEST__INIT;
    eh_result r;
    size_t len;
    q.table = (char *)table;
    q.full_rows = 1;
    uint8_t *b = pk(&q.base, &len);
    ck_assert_int_eq(eh_server_stream(c, ADMIN "Export", b, len, snap_add, &s, &r), 0);
    ck_assert_msg(r.code == 0, "export %s: %s", table, r.message);
    free(b);
    return s;
}

static void snap_same(snap a, snap b)
{
    ck_assert_uint_eq(a.len, b.len);
    ck_assert(a.len == 0 || memcmp(a.b, b.b, a.len) == 0);
    free(a.b);
    free(b.b);
}

static void expect(eh_result *r, int code, const char *substr)
{
    ck_assert_msg(r->code == code, "want code %d, got %d (%s)", code, r->code, r->message);
    ck_assert_msg(r->message[0] != '\0', "code %d without a message", code);
    if (substr)
        ck_assert_msg(strstr(r->message, substr), "message '%s' lacks '%s'", r->message,
                      substr);
    eh_result_free(r);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(health_serving)
{
    ck_assert_int_eq(eh_health_serving(C, 5000), 1);
    /* an unknown service name: NOT_FOUND, as the health protocol says */
    eh_result r;
    ck_assert_int_eq(eh_unary(C, "/grpc.health.v1.Health/Check", "\x0a\x03" "foo", 5, 0, &r), 0);
    expect(&r, 5, "foo");
}
END_TEST

START_TEST(push_pull_round_trip)
{
    const uint32_t dim = 4;
    uint64_t keys[3] = {1, 2, 3000000000000ull};
    float v[12], g[12];
    uint8_t found[3];
    eh_result r;
    create_sgd("rt", dim, 0.5f);
    /* first pull creates zeros rows */
    ck_assert_int_eq(pull_dt(C, "rt", keys, 3, 0, 1, v, found, &r), 0);
    eh_result_free(&r);
    for (int i = 0; i < 12; i++)
        ck_assert(v[i] == 0.0f);
    ck_assert(found[0] == 0 && found[1] == 0 && found[2] == 0);
    for (int i = 0; i < 12; i++)
        g[i] = (float)(i + 1) * 0.25f;
    ck_assert_int_eq(push("rt", keys, 3, g, 12, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull_dt(C, "rt", keys, 3, 0, 1, v, found, &r), 0);
    eh_result_free(&r);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(v[i] == -0.5f * g[i], "v[%d] = %g, want %g", i, v[i], -0.5f * g[i]);
    ck_assert(found[0] == 1 && found[1] == 1 && found[2] == 1);
    /* float16 / bfloat16 replies: these values are exact in both */
    float h[12];
    ck_assert_int_eq(pull_dt(C, "rt", keys, 3, EMBER_WIRE_F16, 0, h, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(h, v, sizeof v) == 0);
    ck_assert_int_eq(pull_dt(C, "rt", keys, 3, EMBER_WIRE_BF16, 0, h, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(h, v, sizeof v) == 0);
    /* float16 gradients; a missing key with find: zeros, found = 0, not stored */
    ck_assert_int_eq(push_full(C, "rt", keys, 3, g, 12, EMBER_WIRE_F16, 0, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("rt", keys, 3, 0, v, &r), 0);
    eh_result_free(&r);
    for (int i = 0; i < 12; i++)
        ck_assert(v[i] == -1.0f * g[i]);
    uint64_t missing = 99;
    ck_assert_int_eq(pull_dt(C, "rt", &missing, 1, 0, 0, v, found, &r), 0);
    eh_result_free(&r);
    ck_assert(found[0] == 0 && v[0] == 0.0f);
    /* assign / accum / insert_or_assign modes */
    float e[4] = {1, 2, 3, 4};
    ck_assert_int_eq(push_full(C, "rt", &missing, 1, e, 4, 0, EMBER_WIRE_PUSH_INSERT_OR_ASSIGN, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(push_full(C, "rt", &missing, 1, e, 4, 0, EMBER_WIRE_PUSH_ACCUM, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("rt", &missing, 1, 0, v, &r), 0);
    eh_result_free(&r);
    for (int i = 0; i < 4; i++)
        ck_assert(v[i] == 2.0f * e[i]);
    ck_assert_int_eq(push_full(C, "rt", &missing, 1, e, 4, 0, EMBER_WIRE_PUSH_ASSIGN, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("rt", &missing, 1, 0, v, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v, e, sizeof e) == 0);
    /* an empty pull is fine */
    ck_assert_int_eq(pull("rt", keys, 0, 1, v, &r), 0);
    eh_result_free(&r);
    drop("rt");
}
END_TEST

START_TEST(pushpull_round_trip)
{
    uint64_t keys[2] = {10, 11};
    float g[4] = {1, 2, 3, 4}, v[4];
    eh_result r;
    create_sgd("pp", 2, 1.0f);
    ember_wire_pushpull_request q = {0};
    q.has_push = q.has_pull = 1;
    q.push.table.data = q.pull.table.data = (const uint8_t *)"pp";
    q.push.table.len = q.pull.table.len = 2;
    q.push.keys.data = q.pull.keys.data = (const uint8_t *)keys;
    q.push.keys.len = q.pull.keys.len = 16;
    q.push.values.data = (const uint8_t *)g;
    q.push.values.len = 16;
    q.pull.insert_missing = 1;
    q.pull.want_found = 1;
    size_t len = ember_wire_pushpull_request_size(&q, NULL, NULL);
    uint8_t *b = malloc(len);
    ember_wire_pushpull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(C, SHARD "PushPull", b, len, 0, &r), 0);
    ck_assert_msg(r.code == 0, "%s", r.message);
    ember_wire_pushpull_response m;
    ck_assert_int_eq(ember_wire_pushpull_response_decode(r.data, r.len, &m, NULL, 0), 0);
    ck_assert(m.has_push && m.has_pull);
    ck_assert_uint_eq(m.push.applied, 2);
    ck_assert_uint_eq(m.pull.dim, 2);
    ck_assert_uint_eq(m.pull.values.len, 16);
    memcpy(v, m.pull.values.data, 16);
    for (int i = 0; i < 4; i++)
        ck_assert(v[i] == -g[i]); /* the pull sees the push */
    ck_assert(m.pull.found.len == 2 && m.pull.found.data[0] == 1);
    eh_result_free(&r);

    /* a reserved key in the pull part: refused before the push is applied */
    snap before = snapshot_on(C, "pp");
    uint64_t bad[2] = {10, UINT64_MAX};
    q.pull.keys.data = (const uint8_t *)bad;
    ember_wire_pushpull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(C, SHARD "PushPull", b, len, 0, &r), 0);
    expect(&r, 3, "reserved");
    snap_same(before, snapshot_on(C, "pp"));
    free(b);
    drop("pp");
}
END_TEST

START_TEST(bad_requests_change_nothing)
{
    const uint32_t dim = 4;
    uint64_t keys[2] = {5, 6};
    float g[8] = {1, 1, 1, 1, 2, 2, 2, 2}, v[8];
    eh_result r;
    create_sgd("bad", dim, 0.1f);
    ck_assert_int_eq(push("bad", keys, 2, g, 8, &r), 0);
    eh_result_free(&r);
    snap before = snapshot_on(C, "bad");

    /* unknown table */
    ck_assert_int_eq(push("nosuch", keys, 2, g, 8, &r), 5);
    expect(&r, 5, "nosuch");
    ck_assert_int_eq(pull("nosuch", keys, 2, 1, v, &r), 5);
    expect(&r, 5, "nosuch");
    /* a table name outside [a-z0-9_.-] */
    ck_assert_int_eq(pull("Bad!", keys, 2, 1, v, &r), 3);
    expect(&r, 3, "Bad!");
    /* values length ≠ n × dim × 4 */
    ck_assert_int_eq(push("bad", keys, 2, g, 7, &r), 3);
    expect(&r, 3, "values");
    /* unknown dtype (push and pull), unknown push mode */
    ck_assert_int_eq(push_full(C, "bad", keys, 2, g, 8, 7, 0, 0, 0, NULL, &r), 3);
    expect(&r, 3, "dtype");
    ck_assert_int_eq(pull_dt(C, "bad", keys, 2, 9, 1, NULL, NULL, &r), 3);
    expect(&r, 3, "dtype");
    ck_assert_int_eq(push_full(C, "bad", keys, 2, g, 8, 0, 9, 0, 0, NULL, &r), 3);
    expect(&r, 3, "mode");
    /* reserved keys: push, and a pull that would insert */
    uint64_t rk[2] = {5, 0xFFFFFFFFFFFFFFFEull};
    ck_assert_int_eq(push("bad", rk, 2, g, 8, &r), 3);
    expect(&r, 3, "reserved");
    ck_assert_int_eq(pull("bad", rk, 2, 1, v, &r), 3);
    expect(&r, 3, "reserved");
    /* non-finite gradient */
    float nan_g[8] = {1, 1, 1, 1, 2, NAN, 2, 2};
    ck_assert_int_eq(push("bad", keys, 2, nan_g, 8, &r), 3);
    expect(&r, 3, NULL);
    /* keys bytes not a multiple of 8, and malformed protobuf */
    ck_assert_int_eq(eh_unary(C, SHARD "Push", "\x0a\x03" "bad" "\x12\x05" "12345", 12, 0, &r), 0);
    expect(&r, 3, "multiple of 8");
    ck_assert_int_eq(eh_unary(C, SHARD "Pull", "\x0a\x7f" "bad", 5, 0, &r), 0);
    expect(&r, 3, "past the end");
    ck_assert_int_eq(eh_unary(C, SHARD "PushPull", "\x0a\x01\x08", 3, 0, &r), 0);
    expect(&r, 3, "wire type");
    ck_assert_int_eq(eh_unary(C, SHARD "PushPull", "\x0a\x02\x30\x80", 4, 0, &r), 0);
    expect(&r, 3, "truncated");
    ck_assert_int_eq(eh_unary(C, ADMIN "CreateTable", "\x0a\xff\xff", 3, 0, &r), 0);
    expect(&r, 3, "malformed");
    ck_assert_int_eq(eh_unary(C, ADMIN "ClearTable", "", 0, 0, &r), 0); /* no such method */
    expect(&r, 12, "ClearTable");
    /* an expired deadline: not executed */
    ck_assert_int_eq(push_full(C, "bad", keys, 2, g, 8, 0, 0, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    snap after_one = snapshot_on(C, "bad");
    {
        ember_wire_push_request q = {0};
        q.table.data = (const uint8_t *)"bad";
        q.table.len = 3;
        q.keys.data = (const uint8_t *)keys;
        q.keys.len = 16;
        q.values.data = (const uint8_t *)g;
        q.values.len = 32;
        uint8_t b[128];
        size_t len = ember_wire_push_request_encode(&q, b);
        ck_assert_int_eq(eh_unary(C, SHARD "Push", b, len, -1000, &r), 0);
        ck_assert_int_eq(r.code, 4);
        eh_result_free(&r);
    }
    snap_same(after_one, snapshot_on(C, "bad"));
    free(before.b);
    drop("bad");
}
END_TEST

START_TEST(unknown_method_unimplemented)
{
    eh_result r;
    ck_assert_int_eq(eh_unary(C, "/no.such.Service/Method", "x", 1, 0, &r), 0);
    expect(&r, 12, "/no.such.Service/Method");
    ck_assert_int_eq(eh_unary(C, SHARD "Pul", "", 0, 0, &r), 0);
    expect(&r, 12, NULL);
}
END_TEST

START_TEST(limits_resource_exhausted)
{
    eh_server s;
    const char *flags[] = {"--threads=1", "--max-keys-per-request=64",
                           "--max-message-bytes=65536", "--log-level=warn", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    ck_assert_int_eq(create_on(c, "lim", 8, 4096, 0, 0.1f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    uint64_t keys[200];
    static float g[200 * 8 * 2];
    for (int i = 0; i < 200; i++)
        keys[i] = (uint64_t)i + 1;
    ck_assert_int_eq(push_full(c, "lim", keys, 64, g, 64 * 8, 0, 0, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    snap before = snapshot_on(c, "lim");
    /* 65 keys: over the key cap, which the message names */
    ck_assert_int_eq(push_full(c, "lim", keys, 65, g, 65 * 8, 0, 0, 0, 0, NULL, &r), 8);
    expect(&r, 8, "max-keys-per-request of 64");
    ck_assert_int_eq(pull_dt(c, "lim", keys, 65, 0, 1, NULL, NULL, &r), 8);
    expect(&r, 8, "64");
    /* a message over 64 KiB: gRPC's own receive limit, RESOURCE_EXHAUSTED */
    ck_assert_int_eq(push_full(c, "lim", keys, 200, g, 200 * 8 * 2, 0, 0, 0, 0, NULL, &r), 8);
    expect(&r, 8, NULL);
    snap_same(before, snapshot_on(c, "lim"));
    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
}
END_TEST

static int describe_code(eh_client *c, const char *table)
{
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    q.name = (char *)table;
    eh_result r;
    int code = admin(c, "DescribeTable", &q.base, &r);
    eh_result_free(&r);
    return code;
}

/* --max-table-host-bytes / --max-table-hbm-bytes: a table over either is refused
 * before anything is allocated, by CreateTable and by Load, naming the cap;
 * nothing is created, and a table within them is served as usual. */
START_TEST(limits_table_memory)
{
    char dir[] = "/tmp/ember-it-cap-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    eh_server s, s2;
    const char *flags[] = {"--threads=2", "--max-table-host-bytes=1M", "--max-table-hbm-bytes=1M",
                           "--log-level=warn", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    /* ~240 KiB: within both caps */
    ck_assert_int_eq(create_on(c, "small", 8, 4096, 0, 0.5f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    /* 1M keys of dim 64: ~280 MiB, refused (the gpu backend's device cap is checked
     * first, the cpu backend's total) */
    ck_assert_int_eq(create_on(c, "big", 64, 1 << 20, 0, 0.5f, 0, 0, 0, &r), 8);
    expect(&r, 8, "--max-table-");
    expect(&r, 8, "1048576");
    ck_assert_int_eq(describe_code(c, "big"), 5);
    Ember__V1__ServerInfoResponse *si = server_info(c);
    ck_assert_uint_eq(si->max_table_host_bytes, 1 << 20);
    ck_assert_uint_eq(si->max_table_hbm_bytes, 1 << 20);
    ck_assert_uint_eq(si->max_tables, 1024);
    ember__v1__server_info_response__free_unpacked(si, NULL);
    uint64_t keys[16];
    float g[16 * 8];
    for (int i = 0; i < 16; i++)
        keys[i] = (uint64_t)i * 7 + 1;
    for (int i = 0; i < 16 * 8; i++)
        g[i] = 1.0f;
    ck_assert_int_eq(push_full(c, "small", keys, 16, g, 16 * 8, 0, 0, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    Ember__V1__SaveRequest sq = EMBER__V1__SAVE_REQUEST__INIT;
    sq.table = "small";
    sq.dir = dir;
    ck_assert_int_eq(admin(c, "Save", &sq.base, &r), 0);
    eh_result_free(&r);

    /* a server with a smaller cap refuses to load it, and holds no table after */
    const char *flags2[] = {"--threads=1", "--max-table-host-bytes=128K", "--max-table-hbm-bytes=128K",
                            "--log-level=warn", NULL};
    ck_assert_int_eq(eh_server_start(&s2, flags2), 0);
    eh_client *c2 = eh_client_open(s2.addr);
    Ember__V1__LoadRequest lq = EMBER__V1__LOAD_REQUEST__INIT;
    lq.table = "small";
    lq.dir = dir;
    lq.create = 1;
    ck_assert_int_eq(admin(c2, "Load", &lq.base, &r), 8);
    expect(&r, 8, "--max-table-");
    ck_assert_int_eq(describe_code(c2, "small"), 5);
    /* ... and the first server, within its caps, loads it back */
    ck_assert_int_eq(admin(c, "Load", &lq.base, &r), 0);
    eh_result_free(&r);
    eh_client_close(c2);
    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s2, SIGTERM, &st), 0);
    eh_server_cleanup(&s2);
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
    char path[300];
    snprintf(path, sizeof path, "%s/small.ckpt", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* --max-concurrent-calls: with the cap's worth of calls held open, the next
 * call is refused RESOURCE_EXHAUSTED naming the cap and changes nothing; Health
 * still answers; once the held calls end, calls run again. The metrics
 * endpoint's ember_live_calls (not itself a call) says when the server holds
 * what the test expects, so nothing here depends on timing. */
START_TEST(limits_concurrent_calls)
{
    eh_server s;
    /* the metrics endpoint shows the calls in progress without being a call */
    const char *flags[] = {"--threads=2", "--max-concurrent-calls=2", "--log-level=info",
                           "--metrics-listen=127.0.0.1:0", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    ck_assert_int_eq(create_on(c, "cc", 4, 1024, 0, 0.5f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    uint64_t keys[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float g[8 * 4];
    for (int i = 0; i < 8 * 4; i++)
        g[i] = 1.0f;
    ck_assert_int_eq(push_full(c, "cc", keys, 8, g, 8 * 4, 0, 0, 0, 0, NULL, &r), 0);
    eh_result_free(&r);
    float v0[8 * 4], v1[8 * 4];
    ck_assert_int_eq(pull_dt(c, "cc", keys, 8, 0, 0, v0, NULL, &r), 0);
    eh_result_free(&r);
    /* a call counts until the server lets go of it, a moment after its reply */
    ck_assert_int_eq(eh_metric_wait(&s, "ember_live_calls", 0, 10000), 0);

    /* two Import streams left open after a first, empty chunk: the server holds
     * two calls in progress, waiting for their next chunks */
    Ember__V1__ImportChunk ch = EMBER__V1__IMPORT_CHUNK__INIT;
    ch.table = "cc";
    size_t chl;
    uint8_t *chb = pk(&ch.base, &chl);
    eh_call *held[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_ptr_nonnull(held[i] = eh_call_open(c, ADMIN "Import", chb, chl));
        ck_assert_int_eq(eh_metric_wait(&s, "ember_live_calls", i + 1, 10000), i + 1);
    }
    free(chb);
    /* the cap's worth in progress: the next calls are refused, naming the flag */
    ck_assert_int_eq(push_full(c, "cc", keys, 8, g, 8 * 4, 0, 0, 0, 0, NULL, &r), 8);
    expect(&r, 8, "--max-concurrent-calls");
    ck_assert_int_eq(pull_dt(c, "cc", keys, 8, 0, 0, NULL, NULL, &r), 8);
    expect(&r, 8, "--max-concurrent-calls");
    ck_assert_int_eq(eh_health_serving(c, 5000), 1); /* exempt */
    for (int i = 0; i < 2; i++)
        eh_call_cancel(held[i]);
    ck_assert_int_eq(eh_metric_wait(&s, "ember_live_calls", 0, 10000), 0);

    /* calls run again, and the refused push changed nothing */
    ck_assert_int_eq(pull_dt(c, "cc", keys, 8, 0, 0, v1, NULL, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v0, v1, sizeof v0) == 0);
    ck_assert_int_eq(eh_metric_wait(&s, "ember_live_calls", 0, 10000), 0);
    Ember__V1__ServerInfoResponse *si = server_info(c);
    ck_assert_uint_eq(si->max_concurrent_calls, 2);
    ck_assert_uint_eq(si->refused_over_capacity, 2); /* the push and the pull */
    ck_assert_uint_eq(si->calls_in_progress, 1);     /* this one */
    ember__v1__server_info_response__free_unpacked(si, NULL);
    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
}
END_TEST

/* Lines of `log` that contain every one of the NULL-terminated substrings. */
static int log_lines_with(const char *log, const char *const *subs)
{
    int n = 0;
    for (const char *l = log; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        int all = 1;
        for (const char *const *s = subs; *s && all; s++) {
            const char *hit = memmem(l, len, *s, strlen(*s));
            all = hit != NULL;
        }
        n += all;
        l += len + (e ? 1 : 0);
    }
    return n;
}

/* --log-format json: every line one JSON object, numbers unquoted; at debug
 * level a refused call is logged once with its reason. */
START_TEST(json_logs_refusals_once_at_debug)
{
    eh_server s;
    const char *flags[] = {"--threads=1", "--log-format=json", "--log-level=debug", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    uint64_t key = 5;
    ck_assert_int_eq(pull_dt(c, "no_such_table", &key, 1, 0, 0, NULL, NULL, &r), 5);
    eh_result_free(&r);
    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    char *log = eh_server_log(&s);
    int lines = 0;
    for (const char *l = log; *l; lines++) {
        const char *e = strchr(l, '\n');
        ck_assert_msg(e, "unterminated line: %s", l);
        ck_assert_msg(!strncmp(l, "{\"ts\":\"", 7) && e[-1] == '}', "not a JSON line: %.*s",
                      (int)(e - l), l);
        l = e + 1;
    }
    ck_assert_int_ge(lines, 4);
    const char *listening[] = {"\"event\":\"listening\"", "\"threads\":1,", NULL};
    ck_assert_int_eq(log_lines_with(log, listening), 1);
    const char *refused[] = {"\"event\":\"call\"", "\"method\":\"Pull\"",
                             "\"code\":\"NOT_FOUND\"", "no_such_table", NULL};
    ck_assert_msg(log_lines_with(log, refused) == 1, "log:\n%s", log);
    free(log);
    eh_server_cleanup(&s);
}
END_TEST

START_TEST(duplicate_push_applied_once)
{
    uint64_t k = 42;
    float g[2] = {1, 1}, v[2];
    int dup;
    eh_result r;
    create_sgd("dup", 2, 1.0f);
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 5, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 0);
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 5, &dup, &r), 0); /* retry */
    eh_result_free(&r);
    ck_assert_int_eq(dup, 1);
    /* out of order: 3 and 4 arrive after 5, each once */
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 3, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 0);
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 4, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 0);
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 3, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 1);
    /* another client with the same sequence is not a duplicate */
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 778, 5, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 0);
    /* a refused push (NaN) does not use up its sequence */
    float bad[2] = {NAN, 1};
    ck_assert_int_eq(push_full(C, "dup", &k, 1, bad, 2, 0, 0, 777, 6, &dup, &r), 3);
    eh_result_free(&r);
    ck_assert_int_eq(push_full(C, "dup", &k, 1, g, 2, 0, 0, 777, 6, &dup, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(dup, 0);
    ck_assert_int_eq(pull("dup", &k, 1, 0, v, &r), 0);
    eh_result_free(&r);
    ck_assert_msg(v[0] == -5.0f && v[1] == -5.0f, "applied %g times", -v[0]); /* 5,3,4,778:5,6 */
    /* the duplicate is counted in the table's stats */
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    q.name = "dup";
    ck_assert_int_eq(admin(C, "DescribeTable", &q.base, &r), 0);
    Ember__V1__DescribeTableResponse *d =
        ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(d->table->stats->duplicate_pushes, 2);
    ck_assert_uint_eq(d->table->stats->pushes, 5);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    eh_result_free(&r);
    drop("dup");
}
END_TEST

START_TEST(second_server_on_taken_port_fails)
{
    char listen[80], *out = NULL;
    snprintf(listen, sizeof listen, "--listen=%s", S.addr);
    const char *args[] = {listen, "--threads=1", NULL};
    int st = eh_run_server_cmd(args, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    ck_assert_msg(strstr(out, "cannot listen"), "output: %s", out);
    free(out);
    ck_assert_int_eq(eh_health_serving(C, 5000), 1); /* the first one is unharmed */
    /* bad settings: exit 2 with a reason (--backend gpu: test_server_backend.c) */
    const char *tpu[] = {"--backend=tpu", NULL};
    st = eh_run_server_cmd(tpu, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "'tpu' is not auto, gpu or cpu"), "output: %s", out);
    free(out);
    const char *help[] = {"--help", NULL};
    st = eh_run_server_cmd(help, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert(strstr(out, "--max-keys-per-request") && strstr(out, "EMBER_LISTEN"));
    free(out);
}
END_TEST

/* Settings from EMBER_* variables; a flag wins over its variable. */
START_TEST(env_settings_and_max_tables)
{
    char *out = NULL;
    setenv("EMBER_LOG_LEVEL", "loud", 1);
    const char *none[] = {"--threads=1", NULL};
    int st = eh_run_server_cmd(none, &out, 20000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_msg(strstr(out, "EMBER_LOG_LEVEL"), "output: %s", out);
    free(out);
    unsetenv("EMBER_LOG_LEVEL");

    eh_server s;
    setenv("EMBER_MAX_TABLES", "1", 1);
    setenv("EMBER_SHARD_INDEX", "7", 1);   /* overridden by the flag below */
    setenv("EMBER_SHARD_COUNT", "9", 1);
    const char *flags[] = {"--threads=1", "--shard-index=2", NULL};
    int rc = eh_server_start(&s, flags);
    unsetenv("EMBER_MAX_TABLES");
    unsetenv("EMBER_SHARD_INDEX");
    unsetenv("EMBER_SHARD_COUNT");
    ck_assert_int_eq(rc, 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    ck_assert_int_eq(create_on(c, "one", 4, 1024, 0, 0.1f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(create_on(c, "two", 4, 1024, 0, 0.1f, 0, 0, 0, &r), 8);
    expect(&r, 8, "max-tables");
    Ember__V1__ServerInfoResponse *si = server_info(c);
    ck_assert_uint_eq(si->shard_index, 2);
    ck_assert_uint_eq(si->shard_count, 9);
    ck_assert_uint_eq(si->threads, 1);
    ember__v1__server_info_response__free_unpacked(si, NULL);
    eh_client_close(c);
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
}
END_TEST

START_TEST(sigterm_exits_zero_and_restart)
{
    eh_server s;
    const char *flags[] = {"--threads=2", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    eh_result r;
    ck_assert_int_eq(create_on(c, "t", 4, 1024, 0, 0.1f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    char *log = eh_server_log(&s);
    ck_assert_msg(strstr(log, "event=stopped"), "log: %s", log);
    free(log);
    /* restart on the same port; SIGKILL; restart again */
    ck_assert_int_eq(eh_server_restart(&s), 0);
    ck_assert_int_eq(eh_server_stop(&s, SIGKILL, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(eh_server_restart(&s), 0);
    /* SIGINT: also a clean stop */
    ck_assert_int_eq(eh_server_stop(&s, SIGINT, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
}
END_TEST

START_TEST(admin_lifecycle)
{
    eh_result r;
    ck_assert_int_eq(create_on(C, "adm", 4, 1024, 1, 0.1f, 1, 0.5f, 0, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(create_on(C, "adm", 4, 1024, 1, 0.1f, 1, 0.5f, 0, &r), 6);
    expect(&r, 6, "adm");
    ck_assert_int_eq(create_on(C, "adm", 4, 1024, 1, 0.1f, 1, 0.5f, 1, &r), 0); /* if_not_exists */
    eh_result_free(&r);
    ck_assert_int_eq(create_on(C, "UPPER", 4, 1024, 0, 0.1f, 0, 0, 0, &r), 3);
    expect(&r, 3, NULL);
    ck_assert_int_eq(create_on(C, "zero", 0, 1024, 0, 0.1f, 0, 0, 0, &r), 3);
    expect(&r, 3, "dim");

    /* describe: config as created (Adagrad, constant 0.5 init) */
    Ember__V1__DescribeTableRequest dq = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    dq.name = "adm";
    ck_assert_int_eq(admin(C, "DescribeTable", &dq.base, &r), 0);
    Ember__V1__DescribeTableResponse *d =
        ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    ck_assert_str_eq(d->table->name, "adm");
    ck_assert_uint_eq(d->table->config->dim, 4);
    ck_assert_int_eq(d->table->config->optimizer->kind, 1);
    ck_assert(d->table->config->initializer->a == 0.5f);
    ck_assert_str_eq(d->table->config->backend, eh_backend_served());
    ck_assert_uint_eq(d->table->stats->size, 0);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    eh_result_free(&r);
    dq.name = "nosuch";
    ck_assert_int_eq(admin(C, "DescribeTable", &dq.base, &r), 5);
    expect(&r, 5, "nosuch");

    /* pull 300 keys, then list / stats */
    uint64_t keys[300];
    static float v[300 * 4];
    for (int i = 0; i < 300; i++)
        keys[i] = (uint64_t)i * 7919 + 1;
    ck_assert_int_eq(pull("adm", keys, 300, 1, v, &r), 0);
    eh_result_free(&r);
    ck_assert(v[0] == 0.5f);
    Ember__V1__ListTablesRequest lq = EMBER__V1__LIST_TABLES_REQUEST__INIT;
    ck_assert_int_eq(admin(C, "ListTables", &lq.base, &r), 0);
    Ember__V1__ListTablesResponse *l = ember__v1__list_tables_response__unpack(NULL, r.len, r.data);
    int seen = 0;
    for (size_t i = 0; i < l->n_tables; i++)
        if (!strcmp(l->tables[i]->name, "adm")) {
            seen = 1;
            ck_assert_uint_eq(l->tables[i]->stats->size, 300);
        }
    ck_assert(seen);
    ember__v1__list_tables_response__free_unpacked(l, NULL);
    eh_result_free(&r);
    Ember__V1__GetStatsRequest sq = EMBER__V1__GET_STATS_REQUEST__INIT;
    sq.table = "adm";
    ck_assert_int_eq(admin(C, "GetStats", &sq.base, &r), 0);
    Ember__V1__GetStatsResponse *gs = ember__v1__get_stats_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(gs->n_tables, 1);
    ck_assert_uint_eq(gs->tables[0]->stats->pulls, 1);
    ck_assert_uint_eq(gs->tables[0]->stats->keys_pulled, 300);
    /* Every slot's row is in one kind of memory or the other: host on the CPU,
     * device on the GPU (no hbm budget is set here). */
    ck_assert_uint_eq(gs->tables[0]->stats->slots_device + gs->tables[0]->stats->slots_host,
                      gs->tables[0]->stats->capacity);
    ck_assert_uint_eq(strcmp(eh_backend_served(), "gpu") ? gs->tables[0]->stats->slots_host
                                                       : gs->tables[0]->stats->slots_device,
                      gs->tables[0]->stats->capacity);
    ck_assert_uint_gt(gs->requests, 0);
    ember__v1__get_stats_response__free_unpacked(gs, NULL);
    eh_result_free(&r);

    /* evict down to 100, then clear */
    Ember__V1__EvictRequest eq = EMBER__V1__EVICT_REQUEST__INIT;
    eq.table = "adm";
    ck_assert_int_eq(admin(C, "Evict", &eq.base, &r), 3); /* says nothing */
    expect(&r, 3, "evict");
    eq.what_case = EMBER__V1__EVICT_REQUEST__WHAT_TO_SIZE;
    eq.to_size = 100;
    ck_assert_int_eq(admin(C, "Evict", &eq.base, &r), 0);
    Ember__V1__EvictResponse *er = ember__v1__evict_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(er->evicted, 200);
    ember__v1__evict_response__free_unpacked(er, NULL);
    eh_result_free(&r);
    Ember__V1__ClearRequest cq = EMBER__V1__CLEAR_REQUEST__INIT;
    cq.table = "adm";
    ck_assert_int_eq(admin(C, "Clear", &cq.base, &r), 0);
    eh_result_free(&r);
    dq.name = "adm";
    ck_assert_int_eq(admin(C, "DescribeTable", &dq.base, &r), 0);
    d = ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(d->table->stats->size, 0);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    eh_result_free(&r);

    /* server info */
    Ember__V1__ServerInfoResponse *si = server_info(C);
    ck_assert_uint_eq(si->shard_index, 1);
    ck_assert_uint_eq(si->shard_count, 3);
    ck_assert_str_eq(si->backend, eh_backend_served());
    ck_assert_uint_eq(si->max_keys_per_request, 1048576);
    ember__v1__server_info_response__free_unpacked(si, NULL);

    /* drop, drop again, drop if_exists */
    Ember__V1__DropTableRequest xq = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    xq.name = "adm";
    ck_assert_int_eq(admin(C, "DropTable", &xq.base, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(admin(C, "DropTable", &xq.base, &r), 5);
    expect(&r, 5, "adm");
    xq.if_exists = 1;
    ck_assert_int_eq(admin(C, "DropTable", &xq.base, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("adm", keys, 1, 1, v, &r), 5);
    expect(&r, 5, NULL);
}
END_TEST

START_TEST(save_load_round_trip)
{
    char dir[] = "/tmp/ember-it-ckpt-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    eh_result r;
    uint64_t keys[50];
    float g[50 * 3], v[50 * 3], w[50 * 3];
    for (int i = 0; i < 50; i++)
        keys[i] = (uint64_t)i * 31 + 3;
    for (int i = 0; i < 150; i++)
        g[i] = (float)(i % 7) - 3.0f;
    create_sgd("ck", 3, 0.25f);
    ck_assert_int_eq(push("ck", keys, 50, g, 150, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("ck", keys, 50, 0, v, &r), 0);
    eh_result_free(&r);

    Ember__V1__SaveRequest sq = EMBER__V1__SAVE_REQUEST__INIT;
    sq.table = "ck";
    sq.dir = dir;
    ck_assert_int_eq(admin(C, "Save", &sq.base, &r), 0);
    Ember__V1__SaveResponse *sr = ember__v1__save_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(sr->n_files, 1);
    ck_assert_uint_eq(sr->rows, 50);
    ck_assert(strstr(sr->files[0], "/ck.ckpt"));
    ember__v1__save_response__free_unpacked(sr, NULL);
    eh_result_free(&r);
    /* no dir and no --checkpoint-dir: FAILED_PRECONDITION */
    sq.dir = "";
    ck_assert_int_eq(admin(C, "Save", &sq.base, &r), 9);
    expect(&r, 9, "checkpoint-dir");

    /* clear, load back into the existing table */
    Ember__V1__ClearRequest cq = EMBER__V1__CLEAR_REQUEST__INIT;
    cq.table = "ck";
    ck_assert_int_eq(admin(C, "Clear", &cq.base, &r), 0);
    eh_result_free(&r);
    Ember__V1__LoadRequest lq = EMBER__V1__LOAD_REQUEST__INIT;
    lq.table = "ck";
    lq.dir = dir;
    ck_assert_int_eq(admin(C, "Load", &lq.base, &r), 0);
    Ember__V1__LoadResponse *lr = ember__v1__load_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(lr->rows, 50);
    ember__v1__load_response__free_unpacked(lr, NULL);
    eh_result_free(&r);
    ck_assert_int_eq(pull("ck", keys, 50, 0, w, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v, w, sizeof v) == 0);

    /* drop, then load without create: NOT_FOUND; with create: back, same rows */
    drop("ck");
    ck_assert_int_eq(admin(C, "Load", &lq.base, &r), 5);
    expect(&r, 5, "create");
    lq.create = 1;
    lq.table = ""; /* every table in the dir */
    ck_assert_int_eq(admin(C, "Load", &lq.base, &r), 0);
    lr = ember__v1__load_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(lr->n_tables, 1);
    ck_assert_str_eq(lr->tables[0], "ck");
    ember__v1__load_response__free_unpacked(lr, NULL);
    eh_result_free(&r);
    memset(w, 0, sizeof w);
    ck_assert_int_eq(pull("ck", keys, 50, 0, w, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v, w, sizeof v) == 0);

    /* a damaged file: DATA_LOSS, the table unchanged */
    char path[256];
    snprintf(path, sizeof path, "%s/ck.ckpt", dir);
    FILE *f = fopen(path, "r+b");
    fseek(f, 300, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    snap before = snapshot_on(C, "ck");
    lq.table = "ck";
    ck_assert_int_eq(admin(C, "Load", &lq.base, &r), 15);
    expect(&r, 15, NULL);
    snap_same(before, snapshot_on(C, "ck"));
    unlink(path);
    rmdir(dir);
    drop("ck");
}
END_TEST

static void chunk_keep(void *ud, const uint8_t *d, size_t l)
{
    snap *s = ud; /* messages one after another, each prefixed by its length */
    s->b = realloc(s->b, s->len + l + 8);
    memcpy(s->b + s->len, &l, 8);
    memcpy(s->b + s->len + 8, d, l);
    s->len += l + 8;
}

START_TEST(export_import_streams)
{
    eh_result r;
    enum { N = 1000, D = 2 };
    static uint64_t keys[N];
    static float g[N * D], v[N * D], w[N * D];
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)i * 104729 + 11;
    for (int i = 0; i < N * D; i++)
        g[i] = (float)(i % 13) * 0.5f;
    ck_assert_int_eq(create_on(C, "src", D, 8192, 1, 0.1f, 0, 0, 0, &r), 0); /* Adagrad */
    eh_result_free(&r);
    ck_assert_int_eq(create_on(C, "dst", D, 8192, 1, 0.1f, 0, 0, 0, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(push("src", keys, N, g, N * D, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("src", keys, N, 0, v, &r), 0);
    eh_result_free(&r);

    /* export full rows, 128 per message */
    Ember__V1__ExportRequest q = EMBER__V1__EXPORT_REQUEST__INIT;
    q.table = "src";
    q.full_rows = 1;
    q.rows_per_message = 128;
    size_t len;
    uint8_t *b = pk(&q.base, &len);
    snap s = {NULL, 0};
    ck_assert_int_eq(eh_server_stream(C, ADMIN "Export", b, len, chunk_keep, &s, &r), 0);
    free(b);
    ck_assert_msg(r.code == 0, "%s", r.message);
    ck_assert_uint_gt(r.messages, 1);
    /* turn every ExportChunk into an ImportChunk for "dst" */
    size_t nmsg = r.messages, total = 0, off = 0;
    void **msgs = calloc(nmsg, sizeof *msgs);
    size_t *lens = calloc(nmsg, sizeof *lens);
    for (size_t i = 0; i < nmsg; i++) {
        size_t l;
        memcpy(&l, s.b + off, 8);
        Ember__V1__ExportChunk *ch = ember__v1__export_chunk__unpack(NULL, l, s.b + off + 8);
        ck_assert_ptr_nonnull(ch);
        ck_assert_uint_eq(ch->row_floats, 2 * D); /* Adagrad: embedding + accumulator */
        total += ch->keys.len / 8;
        Ember__V1__ImportChunk ic = EMBER__V1__IMPORT_CHUNK__INIT;
        ic.table = i == 0 ? "dst" : "";
        ic.keys = ch->keys;
        ic.values = ch->values;
        ic.scores = ch->scores;
        ic.versions = ch->versions;
        ic.row_floats = ch->row_floats;
        msgs[i] = pk(&ic.base, &lens[i]);
        ember__v1__export_chunk__free_unpacked(ch, NULL);
        off += l + 8;
    }
    ck_assert_uint_eq(total, N);
    ck_assert_int_eq(eh_client_stream(C, ADMIN "Import", (const void *const *)msgs, lens, nmsg, &r), 0);
    ck_assert_msg(r.code == 0, "import: %s", r.message);
    Ember__V1__ImportResponse *ir = ember__v1__import_response__unpack(NULL, r.len, r.data);
    ck_assert_uint_eq(ir->rows, N);
    ember__v1__import_response__free_unpacked(ir, NULL);
    eh_result_free(&r);
    ck_assert_int_eq(pull("dst", keys, N, 0, w, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v, w, sizeof v) == 0);
    /* the optimizer state came along: one more identical push keeps them equal */
    ck_assert_int_eq(push("src", keys, N, g, N * D, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(push("dst", keys, N, g, N * D, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("src", keys, N, 0, v, &r), 0);
    eh_result_free(&r);
    ck_assert_int_eq(pull("dst", keys, N, 0, w, &r), 0);
    eh_result_free(&r);
    ck_assert(memcmp(v, w, sizeof v) == 0);

    /* an import into a missing table, and one with the wrong row width */
    Ember__V1__ImportChunk bad = EMBER__V1__IMPORT_CHUNK__INIT;
    bad.table = "nosuch";
    size_t bl;
    uint8_t *bb = pk(&bad.base, &bl);
    const void *one[1] = {bb};
    ck_assert_int_eq(eh_client_stream(C, ADMIN "Import", one, &bl, 1, &r), 0);
    expect(&r, 5, "nosuch");
    free(bb);
    bad.table = "dst";
    bad.row_floats = 3;
    bb = pk(&bad.base, &bl);
    one[0] = bb;
    ck_assert_int_eq(eh_client_stream(C, ADMIN "Import", one, &bl, 1, &r), 0);
    expect(&r, 3, "floats");
    free(bb);
    /* export of a missing table */
    q.table = "nosuch";
    b = pk(&q.base, &len);
    ck_assert_int_eq(eh_server_stream(C, ADMIN "Export", b, len, NULL, NULL, &r), 0);
    expect(&r, 5, "nosuch");
    free(b);

    for (size_t i = 0; i < nmsg; i++)
        free(msgs[i]);
    free(msgs);
    free(lens);
    free(s.b);
    drop("src");
    drop("dst");
}
END_TEST

/* Several clients at once, each on its own keys: every push lands exactly once. */
typedef struct worker_arg {
    int id;
    int ok;
} worker_arg;

static void *client_thread(void *p)
{
    worker_arg *a = p;
    eh_client *c = eh_client_open(S.addr);
    eh_result r;
    uint64_t keys[64];
    float g[64 * 4];
    for (int i = 0; i < 64; i++)
        keys[i] = (uint64_t)a->id * 1000 + (uint64_t)i;
    for (int i = 0; i < 64 * 4; i++)
        g[i] = 1.0f;
    a->ok = 1;
    for (int it = 0; it < 50; it++) {
        if (push_full(c, "conc", keys, 64, g, 64 * 4, 0, 0, 0, 0, NULL, &r) != 0)
            a->ok = 0;
        eh_result_free(&r);
    }
    eh_client_close(c);
    return NULL;
}

START_TEST(concurrent_clients)
{
    create_sgd("conc", 4, 1.0f);
    pthread_t th[4];
    worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].id = i;
        pthread_create(&th[i], NULL, client_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert(a[i].ok);
    }
    eh_result r;
    uint64_t keys[4] = {0, 1063, 2000, 3063};
    float v[16];
    ck_assert_int_eq(pull("conc", keys, 4, 0, v, &r), 0);
    eh_result_free(&r);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(v[i] == -50.0f, "v[%d] = %g", i, v[i]);
    drop("conc");
}
END_TEST

int main(void)
{
    /* labelled shard 1 of 3 (messages and ServerInfo name it), fed keys of every
     * shard by hand: ownership is test_ownership.c's */
    const char *flags[] = {"--threads=2", "--shard-index=1", "--shard-count=3",
                           "--key-ownership=off", "--log-level=info", NULL};
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_server"))
        return EH_EXIT_SKIP;
    if (eh_server_start(&S, flags)) {
        fprintf(stderr, "cannot start the shared server\n");
        return 1;
    }
    C = eh_client_open(S.addr);

    Suite *s = suite_create("server");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, health_serving);
    tcase_add_test(tc, push_pull_round_trip);
    tcase_add_test(tc, pushpull_round_trip);
    tcase_add_test(tc, bad_requests_change_nothing);
    tcase_add_test(tc, unknown_method_unimplemented);
    tcase_add_test(tc, limits_resource_exhausted);
    tcase_add_test(tc, limits_table_memory);
    tcase_add_test(tc, limits_concurrent_calls);
    tcase_add_test(tc, json_logs_refusals_once_at_debug);
    tcase_add_test(tc, duplicate_push_applied_once);
    tcase_add_test(tc, second_server_on_taken_port_fails);
    tcase_add_test(tc, env_settings_and_max_tables);
    tcase_add_test(tc, sigterm_exits_zero_and_restart);
    tcase_add_test(tc, admin_lifecycle);
    tcase_add_test(tc, save_load_round_trip);
    tcase_add_test(tc, export_import_streams);
    tcase_add_test(tc, concurrent_clients);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    eh_client_close(C);
    int st = 0;
    if (eh_server_stop(&S, SIGTERM, &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "shared server did not stop cleanly (status %d)\n", st);
        failed++;
    }
    if (failed) {
        char *log = eh_server_log(&S);
        fprintf(stderr, "---- shared server log ----\n%s\n", log);
        free(log);
    }
    eh_server_cleanup(&S);
    return failed ? 1 : 0;
}

/* test_client_fake.c — libember end to end against in-process fake shards.
 *
 * Each fake is a tiny gRPC server (one thread, one call at a time) holding a dim-4
 * table with SGD lr 0.5 and zeros init, that also records what the client sent:
 * whether a request carried a key twice, a key of another shard, or a (client_id,
 * sequence) already seen. Knobs make it fail the next calls with UNAVAILABLE or
 * answer late. This tests the client's own behaviour — dedup on the wire,
 * partitioning, scatter with duplicates, merging, retries, deadlines,
 * at-most-once resends, wire dtypes, option parsing, admin fan-out — with no
 * dependency on ember-server; tests/integration/test_client.c runs the real one.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "client/debug.h"
#include "client/internal.h"
#include "client/rpc.h"
#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "proto/wire.h"

#define FDIM 4
#define FCAP 4096 /* keys per fake */
#define FLR 0.5f

typedef struct fake {
    int index, nshards;
    int port;
    char addr[64];
    grpc_server *srv;
    grpc_completion_queue *cq;
    pthread_t thread;
    pthread_mutex_t mu;
    uint32_t dim; /* reported dim */
    /* table: open addressing, key → row */
    uint64_t keys[FCAP];
    int used[FCAP];
    float rows[FCAP][FDIM];
    size_t size;
    /* at-most-once */
    uint64_t seen_client[1024], seen_seq[1024];
    size_t nseen;
    /* observations */
    atomic_int pulls, pushes, pushpulls, calls, dup_keys_in_request, foreign_keys, duplicates,
        creates, describes;
    atomic_size_t keys_pulled, keys_pushed;
    atomic_int last_dtype;
    atomic_uint_fast64_t last_push_term; /* the term the last push carried */
    /* knobs */
    atomic_uint_fast64_t term;  /* the leader term push replies say */
    atomic_int fail_next;  /* answer UNAVAILABLE to this many calls */
    atomic_int delay_ms;   /* sleep before answering */
} fake;

static size_t slot_of(fake *f, uint64_t k, int insert)
{
    size_t s = (size_t)((k * UINT64_C(0x9e3779b97f4a7c15)) >> 52) % FCAP;
    for (;;) {
        if (!f->used[s]) {
            if (!insert)
                return (size_t)-1;
            f->used[s] = 1;
            f->keys[s] = k;
            memset(f->rows[s], 0, sizeof f->rows[s]);
            f->size++;
            return s;
        }
        if (f->keys[s] == k)
            return s;
        s = (s + 1) % FCAP;
    }
}

/* Checks a request's keys: each at most once, each this shard's. */
static void observe_keys(fake *f, const uint64_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ember_shard_of(k[i], (unsigned)f->nshards) != (unsigned)f->index)
            atomic_fetch_add(&f->foreign_keys, 1);
        for (size_t j = 0; j < i; j++)
            if (k[j] == k[i])
                atomic_fetch_add(&f->dup_keys_in_request, 1);
    }
}

typedef struct reply {
    int code;
    const char *msg;
    uint8_t *buf;
    size_t len;
} reply;

static void do_pull(fake *f, const ember_wire_pull_request *rq, ember_wire_pull_response *rs,
                    float **vals)
{
    size_t n = rq->keys.len / 8;
    uint64_t *k = malloc((n + 1) * 8);
    ember_wire_keys_copy(rq->keys, k);
    observe_keys(f, k, n);
    atomic_fetch_add(&f->keys_pulled, n);
    atomic_store(&f->last_dtype, rq->dtype);
    *vals = calloc(n * FDIM + 1, sizeof(float));
    for (size_t i = 0; i < n; i++) {
        size_t s = slot_of(f, k[i], rq->insert_missing);
        if (s != (size_t)-1)
            memcpy(*vals + i * FDIM, f->rows[s], sizeof f->rows[s]);
    }
    free(k);
    rs->dim = f->dim;
    rs->dtype = rq->dtype;
    rs->values.data = NULL;
    rs->values.len = n * (f->dim == FDIM ? FDIM : f->dim) * ember_wire_dtype_size(rq->dtype);
}

/* 1: applied; 0: a duplicate. */
static int do_push(fake *f, const ember_wire_push_request *rq)
{
    for (size_t i = 0; i < f->nseen; i++)
        if (f->seen_client[i] == rq->client_id && f->seen_seq[i] == rq->sequence) {
            atomic_fetch_add(&f->duplicates, 1);
            return 0;
        }
    if (f->nseen < 1024) {
        f->seen_client[f->nseen] = rq->client_id;
        f->seen_seq[f->nseen++] = rq->sequence;
    }
    size_t n = rq->keys.len / 8;
    uint64_t *k = malloc((n + 1) * 8);
    float *g = malloc((n * FDIM + 1) * sizeof(float));
    ember_wire_keys_copy(rq->keys, k);
    observe_keys(f, k, n);
    atomic_fetch_add(&f->keys_pushed, n);
    atomic_store(&f->last_dtype, rq->dtype);
    ember_wire_from_wire(rq->dtype, rq->values.data, n * FDIM, g);
    for (size_t i = 0; i < n; i++) {
        size_t s = slot_of(f, k[i], 1);
        for (int d = 0; d < FDIM; d++)
            f->rows[s][d] -= FLR * g[i * FDIM + d];
    }
    free(k);
    free(g);
    return 1;
}

static void fill_values(const fake *f, uint8_t *dst, const float *vals, size_t n, int32_t dtype)
{
    if (f->dim != FDIM)
        return; /* a wrong-dim reply: the bytes do not matter */
    ember_wire_to_wire(dtype, vals, n * FDIM, dst);
}

static reply handle(fake *f, const char *method, const uint8_t *p, size_t len)
{
    reply r = {0, NULL, NULL, 0};
    atomic_fetch_add(&f->calls, 1);
    int d = atomic_load(&f->delay_ms);
    if (d > 0)
        usleep((useconds_t)d * 1000);
    if (atomic_load(&f->fail_next) > 0) {
        atomic_fetch_sub(&f->fail_next, 1);
        r.code = GRPC_STATUS_UNAVAILABLE;
        r.msg = "fake: unavailable";
        return r;
    }
    pthread_mutex_lock(&f->mu);
    if (strcmp(method, "/ember.v1.Shard/Pull") == 0) {
        atomic_fetch_add(&f->pulls, 1);
        ember_wire_pull_request rq;
        ember_wire_pull_response rs;
        memset(&rs, 0, sizeof rs);
        float *vals;
        ck_assert_int_eq(ember_wire_pull_request_decode(p, len, &rq, NULL, 0), 0);
        do_pull(f, &rq, &rs, &vals);
        ember_wire_off off;
        r.len = ember_wire_pull_response_size(&rs, &off);
        r.buf = malloc(r.len + 1);
        ember_wire_pull_response_encode(&rs, r.buf);
        fill_values(f, r.buf + off.values, vals, rq.keys.len / 8, rq.dtype);
        free(vals);
    } else if (strcmp(method, "/ember.v1.Shard/Push") == 0) {
        atomic_fetch_add(&f->pushes, 1);
        ember_wire_push_request rq;
        ck_assert_int_eq(ember_wire_push_request_decode(p, len, &rq, NULL, 0), 0);
        ember_wire_push_response rs = {.applied = rq.keys.len / 8, .term = atomic_load(&f->term)};
        atomic_store(&f->last_push_term, rq.term);
        rs.duplicate = !do_push(f, &rq);
        r.len = ember_wire_push_response_size(&rs);
        r.buf = malloc(r.len + 1);
        ember_wire_push_response_encode(&rs, r.buf);
    } else if (strcmp(method, "/ember.v1.Shard/PushPull") == 0) {
        atomic_fetch_add(&f->pushpulls, 1);
        ember_wire_pushpull_request rq;
        ck_assert_int_eq(ember_wire_pushpull_request_decode(p, len, &rq, NULL, 0), 0);
        ck_assert(rq.has_push && rq.has_pull);
        ember_wire_pushpull_response rs;
        memset(&rs, 0, sizeof rs);
        rs.has_push = rs.has_pull = 1;
        rs.push.applied = rq.push.keys.len / 8;
        rs.push.term = atomic_load(&f->term);
        atomic_store(&f->last_push_term, rq.push.term);
        rs.push.duplicate = !do_push(f, &rq.push);
        float *vals;
        do_pull(f, &rq.pull, &rs.pull, &vals);
        ember_wire_off off;
        r.len = ember_wire_pushpull_response_size(&rs, &off);
        r.buf = malloc(r.len + 1);
        ember_wire_pushpull_response_encode(&rs, r.buf);
        fill_values(f, r.buf + off.values, vals, rq.pull.keys.len / 8, rq.pull.dtype);
        free(vals);
    } else if (strcmp(method, "/ember.v1.Admin/CreateTable") == 0) {
        atomic_fetch_add(&f->creates, 1);
        Ember__V1__CreateTableRequest *rq = ember__v1__create_table_request__unpack(NULL, len, p);
        ck_assert_ptr_nonnull(rq);
        ck_assert_str_eq(rq->name, "emb");
        ck_assert_uint_eq(rq->config->dim, 4);
        ck_assert_uint_eq(rq->config->capacity, 1000);
        ck_assert_int_eq(rq->config->optimizer->kind, EMBER__V1__OPTIMIZER__OPTIMIZER_ADAM);
        ck_assert_float_eq(rq->config->optimizer->beta2, 0.999f);
        ck_assert(rq->if_not_exists);
        ember__v1__create_table_request__free_unpacked(rq, NULL);
        Ember__V1__CreateTableResponse rs = EMBER__V1__CREATE_TABLE_RESPONSE__INIT;
        Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
        Ember__V1__TableInfo ti = EMBER__V1__TABLE_INFO__INIT;
        cfg.dim = f->dim; /* the table that exists (or was just made) */
        ti.name = "emb";
        ti.config = &cfg;
        rs.table = &ti;
        r.len = ember__v1__create_table_response__get_packed_size(&rs);
        r.buf = malloc(r.len + 1);
        ember__v1__create_table_response__pack(&rs, r.buf);
    } else if (strcmp(method, "/ember.v1.Admin/DescribeTable") == 0) {
        atomic_fetch_add(&f->describes, 1);
        Ember__V1__DescribeTableRequest *rq =
            ember__v1__describe_table_request__unpack(NULL, len, p);
        ck_assert_ptr_nonnull(rq);
        int known = strcmp(rq->name, "emb") == 0;
        ember__v1__describe_table_request__free_unpacked(rq, NULL);
        if (!known) {
            r.code = GRPC_STATUS_NOT_FOUND;
            r.msg = "no table 'nope'";
        } else {
            Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
            cfg.dim = f->dim;
            Ember__V1__TableStats st = EMBER__V1__TABLE_STATS__INIT;
            st.size = f->size;
            st.capacity = FCAP;
            st.evictions = 1;
            st.version = 10 + (uint64_t)f->index;
            Ember__V1__TableInfo ti = EMBER__V1__TABLE_INFO__INIT;
            ti.name = "emb";
            ti.config = &cfg;
            ti.stats = &st;
            Ember__V1__DescribeTableResponse rs = EMBER__V1__DESCRIBE_TABLE_RESPONSE__INIT;
            rs.table = &ti;
            r.len = ember__v1__describe_table_response__get_packed_size(&rs);
            r.buf = malloc(r.len + 1);
            ember__v1__describe_table_response__pack(&rs, r.buf);
        }
    } else {
        r.code = GRPC_STATUS_UNIMPLEMENTED;
        r.msg = "fake: unknown method";
    }
    pthread_mutex_unlock(&f->mu);
    return r;
}

enum { TAG_NEW = 1, TAG_RECV, TAG_SEND, TAG_SHUT };

static int wait_tag(fake *f, intptr_t tag)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(f->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return -1;
        if ((intptr_t)ev.tag == tag)
            return ev.success;
    }
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    for (;;) {
        grpc_call *call = NULL;
        grpc_call_details det;
        grpc_metadata_array md;
        grpc_call_details_init(&det);
        grpc_metadata_array_init(&md);
        grpc_server_request_call(f->srv, &call, &det, &md, f->cq, f->cq, (void *)TAG_NEW);
        int ok = wait_tag(f, TAG_NEW);
        if (ok != 1) {
            grpc_call_details_destroy(&det);
            grpc_metadata_array_destroy(&md);
            break;
        }
        char method[128];
        size_t ml = GRPC_SLICE_LENGTH(det.method);
        if (ml >= sizeof method)
            ml = sizeof method - 1;
        memcpy(method, GRPC_SLICE_START_PTR(det.method), ml);
        method[ml] = '\0';

        grpc_byte_buffer *bb = NULL;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &bb;
        grpc_call_start_batch(call, &op, 1, (void *)TAG_RECV, NULL);
        wait_tag(f, TAG_RECV);
        uint8_t *req;
        size_t len;
        ck_assert_int_eq(ember_rpc_buffer_copy(bb, &req, &len), 0);
        if (bb)
            grpc_byte_buffer_destroy(bb);
        reply r = handle(f, method, req, len);
        free(req);

        grpc_slice details = grpc_slice_from_copied_string(r.msg ? r.msg : "");
        grpc_byte_buffer *out = NULL;
        int cancelled = 0;
        grpc_op ops[4];
        memset(ops, 0, sizeof ops);
        size_t nops = 0;
        ops[nops++].op = GRPC_OP_SEND_INITIAL_METADATA;
        if (r.code == 0) {
            grpc_slice s = grpc_slice_from_copied_buffer((const char *)r.buf, r.len);
            out = grpc_raw_byte_buffer_create(&s, 1);
            grpc_slice_unref(s);
            ops[nops].op = GRPC_OP_SEND_MESSAGE;
            ops[nops++].data.send_message.send_message = out;
        }
        ops[nops].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[nops].data.send_status_from_server.status = (grpc_status_code)r.code;
        ops[nops++].data.send_status_from_server.status_details = &details;
        ops[nops].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[nops++].data.recv_close_on_server.cancelled = &cancelled;
        grpc_call_start_batch(call, ops, nops, (void *)TAG_SEND, NULL);
        wait_tag(f, TAG_SEND);
        if (out)
            grpc_byte_buffer_destroy(out);
        grpc_slice_unref(details);
        free(r.buf);
        grpc_call_unref(call);
        grpc_call_details_destroy(&det);
        grpc_metadata_array_destroy(&md);
    }
    return NULL;
}

static fake *fake_start(int index, int nshards)
{
    fake *f = calloc(1, sizeof *f);
    f->index = index;
    f->nshards = nshards;
    f->dim = FDIM;
    pthread_mutex_init(&f->mu, NULL);
    grpc_init();
    grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    grpc_channel_args args = {.num_args = 1, .args = &arg};
    f->srv = grpc_server_create(&args, NULL);
    f->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(f->srv, f->cq, NULL);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    f->port = grpc_server_add_http2_port(f->srv, "127.0.0.1:0", cr);
    grpc_server_credentials_release(cr);
    ck_assert_int_gt(f->port, 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
    grpc_server_start(f->srv);
    pthread_create(&f->thread, NULL, fake_main, f);
    return f;
}

static void fake_stop(fake *f)
{
    grpc_server_shutdown_and_notify(f->srv, f->cq, (void *)TAG_SHUT);
    grpc_server_cancel_all_calls(f->srv);
    pthread_join(f->thread, NULL);
    /* The pending TAG_NEW failed; TAG_SHUT may still be queued. */
    grpc_server_destroy(f->srv);
    grpc_completion_queue_shutdown(f->cq);
    while (grpc_completion_queue_next(f->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(f->cq);
    pthread_mutex_destroy(&f->mu);
    free(f);
    grpc_shutdown();
}

/* A cluster of n fakes and a client over them. */
typedef struct cluster {
    int n;
    fake *f[4];
    ember_client *c;
} cluster;

static void cluster_start(cluster *cl, int n, const ember_client_options *extra)
{
    cl->n = n;
    char list[512] = "";
    for (int i = 0; i < n; i++) {
        cl->f[i] = fake_start(i, n);
        if (i)
            strcat(list, ",");
        strcat(list, cl->f[i]->addr);
    }
    ember_client_options o;
    if (extra)
        o = *extra;
    else
        ember_client_options_init(&o);
    o.shards = list;
    ember_error e;
    cl->c = ember_client_open(&o, &e);
    ck_assert_msg(cl->c != NULL, "open: %s", e.message);
    ck_assert_uint_eq(ember_client_shard_count(cl->c), (unsigned)n);
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(ember_client_shard_address(cl->c, (unsigned)i), cl->f[i]->addr);
}

static void cluster_stop(cluster *cl)
{
    ember_client_close(cl->c);
    for (int i = 0; i < cl->n; i++)
        fake_stop(cl->f[i]);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int total(cluster *cl, size_t field_off)
{
    int t = 0;
    for (int i = 0; i < cl->n; i++)
        t += atomic_load((atomic_int *)((char *)cl->f[i] + field_off));
    return t;
}
#define TOTAL(cl, field) total(cl, offsetof(fake, field))

/* A fake's table size and reported dim, read and set under its lock: the fake's
 * thread uses them under it, and the order that a finished call gives (through
 * gRPC) is invisible to ThreadSanitizer. */
static size_t fake_size(fake *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->size;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void fake_set_dim(fake *f, uint32_t dim)
{
    pthread_mutex_lock(&f->mu);
    f->dim = dim;
    pthread_mutex_unlock(&f->mu);
}

static void assert_clean_wire(cluster *cl)
{
    ck_assert_int_eq(TOTAL(cl, dup_keys_in_request), 0);
    ck_assert_int_eq(TOTAL(cl, foreign_keys), 0);
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(pull_push_roundtrip_dups)
{
    cluster cl;
    cluster_start(&cl, 3, NULL);
    enum { N = 600 };
    uint64_t keys[N];
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)(i % 200) * 7919 + 3; /* 200 distinct keys, each 3 times */
    float out[N * FDIM];
    ember_error e;
    for (int i = 0; i < N * FDIM; i++)
        out[i] = 99;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, N, out, FDIM, EMBER_PULL_INSERT, &e), 0);
    for (int i = 0; i < N * FDIM; i++)
        ck_assert_float_eq(out[i], 0);
    /* Each distinct key went over the wire once, to its own shard. */
    size_t pulled = 0;
    for (int i = 0; i < 3; i++)
        pulled += atomic_load(&cl.f[i]->keys_pulled);
    ck_assert_uint_eq(pulled, 200);
    ck_assert_int_eq(TOTAL(&cl, pulls), 3); /* one request per shard */
    assert_clean_wire(&cl);

    /* Push: grads (i+1)/8 per element; merged sums then applied with lr 0.5. */
    float grads[N * FDIM];
    for (int i = 0; i < N * FDIM; i++)
        grads[i] = (float)((i % 37) + 1) / 8.0f;
    ck_assert_int_eq(ember_push(cl.c, "emb", keys, N, grads, FDIM, &e), 0);
    size_t pushed = 0;
    for (int i = 0; i < 3; i++)
        pushed += atomic_load(&cl.f[i]->keys_pushed);
    ck_assert_uint_eq(pushed, 200);
    assert_clean_wire(&cl);

    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, N, out, FDIM, 0, &e), 0);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < FDIM; d++) {
            double want = 0;
            for (int j = 0; j < N; j++)
                if (keys[j] == keys[i])
                    want -= 0.5 * grads[j * FDIM + d];
            ck_assert_msg(out[i * FDIM + d] == (float)want, "key %d dim %d: %g want %g", i, d,
                          out[i * FDIM + d], want);
        }
    /* Empty calls are fine and send nothing. */
    int calls = TOTAL(&cl, calls);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 0, out, FDIM, 0, &e), 0);
    ck_assert_int_eq(ember_push(cl.c, "emb", NULL, 0, NULL, FDIM, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, calls), calls);
    cluster_stop(&cl);
}
END_TEST

/* Replication: the leader term a shard's push replies say is carried by the
 * client's later pushes to that shard (and PushPulls), never lowered. */
START_TEST(pushes_carry_the_term_replies_said)
{
    cluster cl;
    cluster_start(&cl, 1, NULL);
    uint64_t k[2] = {11, 12};
    float g[2 * FDIM] = {0}, out[2 * FDIM];
    ember_error e;
    ck_assert_int_eq(ember_push(cl.c, "emb", k, 2, g, FDIM, &e), 0);
    ck_assert_uint_eq(atomic_load(&cl.f[0]->last_push_term), 0);
    atomic_store(&cl.f[0]->term, 5);
    ck_assert_int_eq(ember_push(cl.c, "emb", k, 2, g, FDIM, &e), 0); /* says 5 */
    ck_assert_uint_eq(atomic_load(&cl.f[0]->last_push_term), 0);
    ck_assert_int_eq(ember_push(cl.c, "emb", k, 2, g, FDIM, &e), 0);
    ck_assert_uint_eq(atomic_load(&cl.f[0]->last_push_term), 5);
    atomic_store(&cl.f[0]->term, 3); /* an older one does not lower it */
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", k, 2, g, k, 2, out, FDIM, 0, &e), 0);
    ck_assert_uint_eq(atomic_load(&cl.f[0]->last_push_term), 5);
    atomic_store(&cl.f[0]->term, 9);
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", k, 2, g, k, 2, out, FDIM, 0, &e), 0);
    ck_assert_int_eq(ember_push(cl.c, "emb", k, 2, g, FDIM, &e), 0);
    ck_assert_uint_eq(atomic_load(&cl.f[0]->last_push_term), 9);
    cluster_stop(&cl);
}
END_TEST

START_TEST(serve_flag_does_not_insert)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    uint64_t keys[3] = {1, 2, 3};
    float out[3 * FDIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 3, out, FDIM, EMBER_PULL_SERVE, &e), 0);
    ck_assert_uint_eq(fake_size(cl.f[0]) + fake_size(cl.f[1]), 0);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 3, out, FDIM, EMBER_PULL_INSERT, &e), 0);
    ck_assert_uint_eq(fake_size(cl.f[0]) + fake_size(cl.f[1]), 3);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 3, out, FDIM, 7, &e), EMBER_INVALID_ARGUMENT);
    cluster_stop(&cl);
}
END_TEST

START_TEST(wire_dtypes)
{
    for (int dt = 1; dt <= 2; dt++) {
        ember_client_options o;
        ember_client_options_init(&o);
        o.wire_dtype = (ember_dtype)dt;
        cluster cl;
        cluster_start(&cl, 2, &o);
        uint64_t keys[50];
        float g[50 * FDIM], out[50 * FDIM];
        for (int i = 0; i < 50; i++)
            keys[i] = (uint64_t)i * 13;
        for (int i = 0; i < 50 * FDIM; i++)
            g[i] = (float)(i % 9 - 4) * 0.25f; /* exact in both 16-bit types */
        ember_error e;
        ck_assert_int_eq(ember_push(cl.c, "emb", keys, 50, g, FDIM, &e), 0);
        ck_assert_int_eq(atomic_load(&cl.f[0]->last_dtype), dt);
        ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 50, out, FDIM, 0, &e), 0);
        ck_assert_int_eq(atomic_load(&cl.f[1]->last_dtype), dt);
        for (int i = 0; i < 50 * FDIM; i++)
            ck_assert_float_eq(out[i], -0.5f * g[i]);
        /* A value that is not representable comes back rounded, not garbled. */
        float one[FDIM] = {1.0f / 3, 1000.1f, -1e-3f, 3.0e4f};
        uint64_t k = 999;
        ck_assert_int_eq(ember_push(cl.c, "emb", &k, 1, one, FDIM, &e), 0);
        ck_assert_int_eq(ember_pull(cl.c, "emb", &k, 1, out, FDIM, 0, &e), 0);
        /* Two roundings (gradient out, row back): within 2 units in the last place. */
        for (int d = 0; d < FDIM; d++) {
            float want = -0.5f * one[d];
            float tol = fabsf(want) * (dt == EMBER_DTYPE_FLOAT16 ? 1.0f / 512 : 1.0f / 64);
            ck_assert_msg(fabsf(out[d] - want) <= tol, "dtype %d: %g vs %g", dt, out[d], want);
        }
        ck_assert(out[0] != -0.5f / 3); /* it did go through 16 bits */
        cluster_stop(&cl);
    }
}
END_TEST

START_TEST(dim_mismatch_names_table_dim)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    fake_set_dim(cl.f[1], 8);
    uint64_t keys[20];
    for (int i = 0; i < 20; i++)
        keys[i] = (uint64_t)i;
    float out[20 * FDIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 20, out, FDIM, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.shard, 1);
    ck_assert_msg(strstr(e.message, "dim 8") && strstr(e.message, "emb"), "%s", e.message);
    char want[96];
    snprintf(want, sizeof want, "shard 1 (%s): ", cl.f[1]->addr);
    ck_assert_msg(strncmp(e.message, want, strlen(want)) == 0, "%s", e.message);
    cluster_stop(&cl);
}
END_TEST

START_TEST(reserved_key_refused_before_sending)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    uint64_t keys[3] = {1, UINT64_C(0xFFFFFFFFFFFFFFFE), 3};
    float v[3 * FDIM] = {0};
    ember_error e;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 3, v, FDIM, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_push(cl.c, "emb", keys, 3, v, FDIM, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", keys, 1, v, keys, 3, v, FDIM, 0, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_null(ember_pull_async(cl.c, "emb", keys, 3, v, FDIM, 0, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "reserved"));
    ck_assert_int_eq(TOTAL(&cl, calls), 0);
    /* Bad arguments too. */
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 1, v, 0, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull(cl.c, "", keys, 1, v, FDIM, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull(cl.c, NULL, keys, 1, v, FDIM, 0, NULL), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull(cl.c, "emb", NULL, 1, v, FDIM, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_push_mode_values(cl.c, "emb", keys, 1, v, FDIM, 9, &e),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_pull(NULL, "emb", keys, 1, v, FDIM, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_wait(NULL, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(TOTAL(&cl, calls), 0);
    cluster_stop(&cl);
}
END_TEST

START_TEST(retries_unavailable_then_succeeds)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    atomic_store(&cl.f[1]->fail_next, 2);
    uint64_t keys[40];
    for (int i = 0; i < 40; i++)
        keys[i] = (uint64_t)i;
    float out[40 * FDIM];
    ember_error e;
    double t0 = now_ms();
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 40, out, FDIM, 0, &e), 0);
    double dt = now_ms() - t0;
    ck_assert_int_eq(atomic_load(&cl.f[1]->calls), 3);
    ck_assert_int_eq(atomic_load(&cl.f[0]->calls), 1);
    ck_assert_msg(dt >= 140, "backoff 50+100 ms, took %.0f", dt);

    /* A push is retried too, and applied once. */
    float g[40 * FDIM];
    for (int i = 0; i < 40 * FDIM; i++)
        g[i] = 1;
    atomic_store(&cl.f[0]->fail_next, 1);
    ck_assert_int_eq(ember_push(cl.c, "emb", keys, 40, g, FDIM, &e), 0);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 40, out, FDIM, 0, &e), 0);
    for (int i = 0; i < 40 * FDIM; i++)
        ck_assert_float_eq(out[i], -0.5f);

    /* Always unavailable: gives up with the shard's message, after 1 + 5 tries. */
    atomic_store(&cl.f[0]->fail_next, 1000);
    int before = atomic_load(&cl.f[0]->calls);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 40, out, FDIM, 0, &e), EMBER_UNAVAILABLE);
    ck_assert_int_eq(e.shard, 0);
    ck_assert_int_eq(atomic_load(&cl.f[0]->calls) - before, 6);
    char want[96];
    snprintf(want, sizeof want, "shard 0 (%s): fake: unavailable", cl.f[0]->addr);
    ck_assert_msg(strncmp(e.message, want, strlen(want)) == 0, "%s", e.message);
    atomic_store(&cl.f[0]->fail_next, 0);
    cluster_stop(&cl);
}
END_TEST

START_TEST(retries_stop_at_the_deadline)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.timeout_ms = 300;
    o.max_retries = 50;
    cluster cl;
    cluster_start(&cl, 1, &o);
    atomic_store(&cl.f[0]->fail_next, 1000);
    uint64_t k = 5;
    float out[FDIM];
    ember_error e;
    double t0 = now_ms();
    ck_assert_int_eq(ember_pull(cl.c, "emb", &k, 1, out, FDIM, 0, &e), EMBER_UNAVAILABLE);
    double dt = now_ms() - t0;
    ck_assert_msg(dt < 300, "took %.0f ms with a 300 ms deadline", dt);
    /* 50, 100: the third backoff (200) would end past the deadline. */
    ck_assert_int_eq(atomic_load(&cl.f[0]->calls), 3);
    atomic_store(&cl.f[0]->fail_next, 0);
    cluster_stop(&cl);
}
END_TEST

START_TEST(deadline_exceeded_on_slow_shard)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.timeout_ms = 300;
    cluster cl;
    cluster_start(&cl, 2, &o);
    atomic_store(&cl.f[1]->delay_ms, 1500);
    uint64_t keys[10];
    for (int i = 0; i < 10; i++)
        keys[i] = (uint64_t)i;
    float out[10 * FDIM];
    ember_error e;
    double t0 = now_ms();
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 10, out, FDIM, 0, &e),
                     EMBER_DEADLINE_EXCEEDED);
    double dt = now_ms() - t0;
    ck_assert_msg(dt < 600, "took %.0f ms with a 300 ms deadline", dt);
    ck_assert_int_eq(e.shard, 1);
    atomic_store(&cl.f[1]->delay_ms, 0);
    cluster_stop(&cl);
}
END_TEST

START_TEST(down_shard_is_unavailable_quickly)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.timeout_ms = 2000;
    o.shards = "127.0.0.1:1";
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_ptr_nonnull(c);
    uint64_t k = 5;
    float out[FDIM];
    double t0 = now_ms();
    int rv = ember_pull(c, "emb", &k, 1, out, FDIM, 0, &e);
    double dt = now_ms() - t0;
    ck_assert_msg(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED, "rv %d", rv);
    ck_assert_msg(dt < 2100, "took %.0f ms", dt);
    ck_assert_int_eq(e.shard, 0);
    ck_assert_ptr_nonnull(strstr(e.message, "shard 0 (127.0.0.1:1): "));
    ember_client_close(c);
}
END_TEST

START_TEST(at_most_once_resend)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    ember_client_debug_resend_pushes(cl.c, 1);
    uint64_t keys[30];
    float g[30 * FDIM], out[30 * FDIM];
    for (int i = 0; i < 30; i++)
        keys[i] = (uint64_t)i * 101;
    for (int i = 0; i < 30 * FDIM; i++)
        g[i] = 2;
    ember_error e;
    for (int step = 0; step < 3; step++)
        ck_assert_int_eq(ember_push(cl.c, "emb", keys, 30, g, FDIM, &e), 0);
    /* Every push went twice; the second was acknowledged as a duplicate. */
    ck_assert_int_eq(TOTAL(&cl, pushes), 12);
    ck_assert_int_eq(TOTAL(&cl, duplicates), 6);
    ck_assert_uint_eq(ember_client_debug_duplicate_acks(cl.c), 6);
    ember_client_debug_resend_pushes(cl.c, 0);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 30, out, FDIM, 0, &e), 0);
    for (int i = 0; i < 30 * FDIM; i++)
        ck_assert_float_eq(out[i], -3.0f); /* 3 pushes × 2 × 0.5 */
    cluster_stop(&cl);
}
END_TEST

START_TEST(async_and_push_pull)
{
    cluster cl;
    cluster_start(&cl, 3, NULL);
    enum { N = 64 };
    uint64_t a[N], b[N];
    float ga[N * FDIM], oa[N * FDIM], ob[N * FDIM];
    for (int i = 0; i < N; i++) {
        a[i] = (uint64_t)i;
        b[i] = (uint64_t)(i % 16) + 1000;
    }
    for (int i = 0; i < N * FDIM; i++)
        ga[i] = 1;
    ember_error e;
    /* Two async calls in flight at once. */
    ember_pending *pa = ember_pull_async(cl.c, "emb", a, N, oa, FDIM, 0, &e);
    ember_pending *pb = ember_pull_async(cl.c, "emb", b, N, ob, FDIM, 0, &e);
    ck_assert_ptr_nonnull(pa);
    ck_assert_ptr_nonnull(pb);
    ck_assert_int_eq(ember_wait(pb, &e), 0);
    ck_assert_int_eq(ember_wait(pa, &e), 0);
    ember_pending *pp = ember_push_async(cl.c, "emb", a, N, ga, FDIM, &e);
    ck_assert_ptr_nonnull(pp);
    ck_assert_int_eq(ember_wait(pp, &e), 0);

    /* push a again, pull b ∪ a in one round trip per shard. */
    uint64_t both[2 * N];
    memcpy(both, a, sizeof a);
    memcpy(both + N, b, sizeof b);
    float ob2[2 * N * FDIM];
    int before = TOTAL(&cl, calls);
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", a, N, ga, both, 2 * N, ob2, FDIM, 0, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, calls) - before, 3);
    ck_assert_int_eq(TOTAL(&cl, pushpulls), 3);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < FDIM; d++) {
            ck_assert_float_eq(ob2[i * FDIM + d], -1.0f);
            ck_assert_float_eq(ob2[(N + i) * FDIM + d], 0.0f);
        }
    /* Push to some shards, pull from others: Push and Pull requests, not PushPull. */
    uint64_t pk = 5, qk[2] = {70000, 70001};
    before = TOTAL(&cl, pushpulls);
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", &pk, 1, ga, NULL, 0, NULL, FDIM, 0, &e), 0);
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", NULL, 0, NULL, qk, 2, ob, FDIM, 0, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, pushpulls), before);
    assert_clean_wire(&cl);
    cluster_stop(&cl);
}
END_TEST

typedef struct worker_arg {
    ember_client *c;
    int id;
    int rv;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    uint64_t keys[100];
    float g[100 * FDIM], out[100 * FDIM];
    for (int i = 0; i < 100; i++)
        keys[i] = (uint64_t)(i % 50); /* shared keys, duplicates within a call */
    for (int i = 0; i < 100 * FDIM; i++)
        g[i] = 0.25f;
    ember_error e;
    for (int step = 0; step < 20 && w->rv == 0; step++) {
        w->rv = ember_push(w->c, "emb", keys, 100, g, FDIM, &e);
        if (w->rv == 0)
            w->rv = ember_pull(w->c, "emb", keys, 100, out, FDIM, 0, &e);
    }
    return NULL;
}

START_TEST(threads_share_a_client)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    pthread_t t[4];
    worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_arg){cl.c, i, 0};
        pthread_create(&t[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].rv, 0);
    }
    uint64_t keys[50];
    float out[50 * FDIM];
    for (int i = 0; i < 50; i++)
        keys[i] = (uint64_t)i;
    ember_error e;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 50, out, FDIM, 0, &e), 0);
    /* 4 threads × 20 pushes × 2 occurrences × 0.25 × lr 0.5 = 20 */
    for (int i = 0; i < 50 * FDIM; i++)
        ck_assert_float_eq(out[i], -20.0f);
    ck_assert_int_eq(TOTAL(&cl, duplicates), 0);
    cluster_stop(&cl);
}
END_TEST

START_TEST(admin_fan_out)
{
    cluster cl;
    cluster_start(&cl, 3, NULL);
    ember_table_spec s;
    ember_table_spec_init(&s);
    ember_error e;
    ck_assert_int_eq(ember_create_table(cl.c, "emb", &s, 1, &e), EMBER_INVALID_ARGUMENT);
    s.dim = 4;
    s.capacity_per_shard = 1000;
    s.optimizer.kind = EMBER_OPTIM_ADAM;
    ck_assert_int_eq(ember_create_table(cl.c, "emb", &s, 1, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, creates), 3);
    /* An existing table of another dim is not "fine" even with if_not_exists. */
    fake_set_dim(cl.f[1], 16);
    ck_assert_int_eq(ember_create_table(cl.c, "emb", &s, 1, &e), EMBER_ALREADY_EXISTS);
    ck_assert_int_eq(e.shard, 1);
    ck_assert_msg(strstr(e.message, "dim 16, not 4") != NULL, "%s", e.message);
    fake_set_dim(cl.f[1], FDIM);

    uint64_t keys[30];
    float out[30 * FDIM];
    for (int i = 0; i < 30; i++)
        keys[i] = (uint64_t)i;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 30, out, FDIM, 0, &e), 0);
    ember_table_info info;
    ck_assert_int_eq(ember_describe_table(cl.c, "emb", &info, &e), 0);
    ck_assert_str_eq(info.name, "emb");
    ck_assert_uint_eq(info.dim, 4);
    ck_assert_uint_eq(info.size, 30);
    ck_assert_uint_eq(info.capacity, 3 * FCAP);
    ck_assert_uint_eq(info.evictions, 3);
    ck_assert_uint_eq(info.version_max, 12);
    ck_assert(info.load_factor > 30.0 / (3 * FCAP) - 1e-9 && info.load_factor < 30.0 / (3 * FCAP) + 1e-9);

    ck_assert_int_eq(ember_describe_table(cl.c, "nope", &info, &e), EMBER_NOT_FOUND);
    ck_assert_int_eq(e.shard, 0);
    ck_assert_ptr_nonnull(strstr(e.message, "no table 'nope'"));
    /* Describe is retried on UNAVAILABLE. */
    atomic_store(&cl.f[2]->fail_next, 1);
    ck_assert_int_eq(ember_describe_table(cl.c, "emb", &info, &e), 0);
    /* Create is not (a retry could land twice). */
    atomic_store(&cl.f[2]->fail_next, 1);
    ck_assert_int_eq(ember_create_table(cl.c, "emb", &s, 1, &e), EMBER_UNAVAILABLE);
    ck_assert_int_eq(e.shard, 2);
    /* Unknown on the fake: UNIMPLEMENTED comes back with the shard. */
    ck_assert_int_eq(ember_drop_table(cl.c, "emb", 1, &e), EMBER_UNIMPLEMENTED);
    cluster_stop(&cl);
}
END_TEST

START_TEST(options_and_environment)
{
    ember_error e;
    ember_client_options o;
    ember_client_options_init(&o);
    unsetenv("EMBER_SHARDS");
    unsetenv("EMBER_SHARD_PATTERN");
    unsetenv("EMBER_SHARD_COUNT");
    unsetenv("TF_CONFIG"); /* test_client_shards.c covers it */
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "EMBER_SHARDS"));

    setenv("EMBER_SHARDS", "a:1, b:2 ,c:3", 1);
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(ember_client_shard_count(c), 3);
    ck_assert_str_eq(ember_client_shard_address(c, 1), "b:2");
    ck_assert_ptr_null(ember_client_shard_address(c, 3));
    ck_assert_uint_ne(ember_client_id(c), 0);
    ember_client_close(c);

    /* Options win over the environment. */
    o.shards = "x:9";
    o.client_id = 77;
    c = ember_client_open(&o, &e);
    ck_assert_uint_eq(ember_client_shard_count(c), 1);
    ck_assert_uint_eq(ember_client_id(c), 77);
    ember_client_close(c);
    o.shards = NULL;
    o.client_id = 0;

    /* A StatefulSet pattern. */
    o.shard_pattern = "ember-{i}.ember.ns.svc:7070";
    o.shard_count = 3;
    c = ember_client_open(&o, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(ember_client_shard_address(c, 2), "ember-2.ember.ns.svc:7070");
    ember_client_close(c);
    o.shard_pattern = NULL;
    o.shard_count = 0;
    unsetenv("EMBER_SHARDS");
    setenv("EMBER_SHARD_PATTERN", "w{i}-{i}:80", 1);
    ck_assert_ptr_null(ember_client_open(&o, &e)); /* no count */
    ck_assert_ptr_nonnull(strstr(e.message, "EMBER_SHARD_COUNT"));
    setenv("EMBER_SHARD_COUNT", "12", 1);
    c = ember_client_open(&o, &e);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(ember_client_shard_count(c), 12);
    ck_assert_str_eq(ember_client_shard_address(c, 11), "w11-11:80");
    ember_client_close(c);
    unsetenv("EMBER_SHARD_PATTERN");
    unsetenv("EMBER_SHARD_COUNT");

    static const char *const bad[] = {"a:1,,b:2", "a:1,a:1", "nope", "a:1,b", ",", "h:99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.shards = bad[i];
        ck_assert_msg(ember_client_open(&o, &e) == NULL, "accepted %s", bad[i]);
        ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    }
    o.shards = "a:1";
    o.wire_dtype = (ember_dtype)5;
    ck_assert_ptr_null(ember_client_open(&o, &e));
    o.shard_pattern = NULL;
    o.wire_dtype = EMBER_DTYPE_FLOAT32;
    o.shards = NULL;
    o.shard_pattern = "no-index:1";
    o.shard_count = 2;
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "{i}"));
    ember_client_close(NULL);
    ck_assert_str_eq(ember_code_name(EMBER_UNAVAILABLE), "UNAVAILABLE");
    ck_assert_str_eq(ember_code_name(99), "UNKNOWN");
}
END_TEST

START_TEST(several_channels_per_shard)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.channels_per_shard = 3;
    cluster cl;
    cluster_start(&cl, 2, &o);
    uint64_t keys[10];
    float out[10 * FDIM];
    for (int i = 0; i < 10; i++)
        keys[i] = (uint64_t)i;
    ember_error e;
    for (int r = 0; r < 6; r++)
        ck_assert_int_eq(ember_pull(cl.c, "emb", keys, 10, out, FDIM, 0, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, pulls), 12);
    cluster_stop(&cl);
}
END_TEST

/* Regression: replies small enough for gRPC to inline in the slice struct were
 * read through a pointer into a stack copy of that struct (garbage once the stack
 * was reused; seen as "malformed PushResponse" under concurrent pushes). */
static void __attribute__((noinline)) scribble_stack(void)
{
    volatile unsigned char buf[16384];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = 0xAA;
}

START_TEST(small_reply_not_read_from_stack)
{
    grpc_init();
    for (size_t len = 1; len <= 64; len++) {
        uint8_t want[64];
        for (size_t i = 0; i < len; i++)
            want[i] = (uint8_t)(0x10 + i);
        /* Small copied slices are inlined: their bytes live in the slice struct. */
        grpc_slice sl = grpc_slice_from_copied_buffer((const char *)want, len);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        ember_shard_call sc;
        memset(&sc, 0, sizeof sc);
        sc.recv = bb;
        ck_assert_int_eq(ember_shard_call_take_reply(&sc), 0);
        scribble_stack();
        ck_assert_uint_eq(sc.resp_len, len);
        ck_assert_msg(memcmp(sc.resp, want, len) == 0, "reply of %zu bytes garbled", len);
        grpc_byte_buffer_destroy(bb);
        free(sc.resp_copy);
    }
    grpc_shutdown();
}
END_TEST

/* Big batches go as several requests per shard; rows still land in caller order,
 * each chunk of a push has its own sequence, and a push-pull too big for one
 * request becomes a push, then a pull, that sees it. */
START_TEST(big_batches_are_chunked)
{
    cluster cl;
    cluster_start(&cl, 2, NULL);
    ember_client_debug_chunk_bytes(cl.c, 16 * FDIM * sizeof(float)); /* 16 keys a request */
    enum { N = 1000 };
    static uint64_t keys[N];
    static float g[N * FDIM], out[N * FDIM];
    for (int i = 0; i < N; i++)
        keys[i] = (uint64_t)(i % 400) * 3 + 1; /* 400 distinct */
    for (int i = 0; i < N * FDIM; i++)
        g[i] = (float)(i % 7) / 4.0f;
    ember_error e;
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, N, out, FDIM, 0, &e), 0);
    int per[2] = {0, 0};
    for (int k = 0; k < 400; k++)
        per[ember_shard_of(keys[k], 2)]++;
    int want_calls = (per[0] + 15) / 16 + (per[1] + 15) / 16;
    ck_assert_int_eq(TOTAL(&cl, pulls), want_calls);
    ck_assert_int_eq(ember_push(cl.c, "emb", keys, N, g, FDIM, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, pushes), want_calls);
    ck_assert_int_eq(TOTAL(&cl, duplicates), 0);
    assert_clean_wire(&cl);
    ck_assert_int_eq(ember_pull(cl.c, "emb", keys, N, out, FDIM, 0, &e), 0);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < FDIM; d++) {
            float want = 0;
            for (int j = i % 400; j < N; j += 400)
                want -= 0.5f * g[j * FDIM + d];
            ck_assert_float_eq(out[i * FDIM + d], want);
        }
    /* Push-pull over the chunk size: no PushPull requests, and the pull sees the push. */
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", keys, N, g, keys, N, out, FDIM, 0, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, pushpulls), 0);
    for (int i = 0; i < N; i++) {
        float want = 0;
        for (int j = i % 400; j < N; j += 400)
            want -= 2 * 0.5f * g[j * FDIM];
        ck_assert_float_eq(out[i * FDIM], want);
    }
    /* A small push-pull is still one PushPull per shard. */
    ck_assert_int_eq(ember_push_pull(cl.c, "emb", keys, 10, g, keys, 10, out, FDIM, 0, &e), 0);
    ck_assert_int_eq(TOTAL(&cl, pushpulls), 2);
    cluster_stop(&cl);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_fake");
    TCase *tc = tcase_create("fake");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pull_push_roundtrip_dups);
    tcase_add_test(tc, serve_flag_does_not_insert);
    tcase_add_test(tc, pushes_carry_the_term_replies_said);
    tcase_add_test(tc, wire_dtypes);
    tcase_add_test(tc, dim_mismatch_names_table_dim);
    tcase_add_test(tc, reserved_key_refused_before_sending);
    tcase_add_test(tc, retries_unavailable_then_succeeds);
    tcase_add_test(tc, retries_stop_at_the_deadline);
    tcase_add_test(tc, deadline_exceeded_on_slow_shard);
    tcase_add_test(tc, down_shard_is_unavailable_quickly);
    tcase_add_test(tc, at_most_once_resend);
    tcase_add_test(tc, async_and_push_pull);
    tcase_add_test(tc, threads_share_a_client);
    tcase_add_test(tc, admin_fan_out);
    tcase_add_test(tc, options_and_environment);
    tcase_add_test(tc, several_channels_per_shard);
    tcase_add_test(tc, small_reply_not_read_from_stack);
    tcase_add_test(tc, big_batches_are_chunked);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

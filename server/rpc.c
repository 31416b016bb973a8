/* rpc.c — completion queues, workers, call lifecycle, buffer pools (rpc.h). */
#include "server/rpc.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/auth.h"
#include "server/log.h"
#include "server/metrics.h"
#include "proto/cq_order.h"
#include "proto/slices.h"
#include "server/repl.h"
#include "server/server.h"

/* The transport's own state; the server's is the core's (`srv`). */
static struct {
    grpc_server *server;
    /* One completion queue that every worker thread polls: gRPC binds each
     * connection to one registered queue, so with a queue per thread all calls
     * of one connection (one client) would run on one thread. */
    grpc_completion_queue *cq;
    void *methods[SRV_M_COUNT];     /* srv_methods[m] as registered with gRPC */
    srv_worker *workers;
    pthread_mutex_t mu;             /* guards shutdown_seen; signals cv */
    pthread_cond_t cv;
    int shutdown_seen;
} rpc;

enum { ST_REQUESTED = 1, ST_STEP = 2, ST_FINISH = 3 };

/* ---- response buffer pool ------------------------------------------------ */

#define RBUF_HDR 64u
#define POOL_KEEP 4u

typedef struct rbuf {
    srv_pool *pool;
    size_t cap;
    struct rbuf *next;
    atomic_uint refs; /* slices of it still held, + the holder's own */
} rbuf;

struct srv_pool {
    pthread_mutex_t mu;
    rbuf *free;
    unsigned nfree;
};

static rbuf *rbuf_of(uint8_t *data) { return (rbuf *)(void *)(data - RBUF_HDR); }

uint8_t *srv_rbuf_get(srv_worker *w, size_t len)
{
    srv_pool *p = w->pool;
    rbuf *b = NULL, **pp;
    pthread_mutex_lock(&p->mu);
    for (pp = &p->free; *pp; pp = &(*pp)->next)
        if ((*pp)->cap >= len) {
            b = *pp;
            *pp = b->next;
            p->nfree--;
            break;
        }
    pthread_mutex_unlock(&p->mu);
    if (!b) {
        size_t cap = 65536;
        while (cap < len)
            cap <<= 1;
        b = aligned_alloc(64, RBUF_HDR + cap);
        if (!b)
            return NULL;
        b->pool = p;
        b->cap = cap;
    }
    b->next = NULL;
    atomic_store_explicit(&b->refs, 1, memory_order_relaxed);
    return (uint8_t *)b + RBUF_HDR;
}

void srv_rbuf_ref(uint8_t *buf, unsigned k)
{
    atomic_fetch_add_explicit(&rbuf_of(buf)->refs, k, memory_order_relaxed);
}

/* gRPC's destroy callback: may run on any thread. Drops one reference; with the
 * last, keeps a few buffers, the largest, and frees the rest. */
static void rbuf_release(void *data)
{
    rbuf *b = rbuf_of(data), *victim = NULL;
    srv_pool *p = b->pool;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->nfree < POOL_KEEP) {
        b->next = p->free;
        p->free = b;
        p->nfree++;
    } else {
        /* replace the smallest kept buffer if this one is larger */
        rbuf **small = &p->free;
        for (rbuf **pp = &p->free; *pp; pp = &(*pp)->next)
            if ((*pp)->cap < (*small)->cap)
                small = pp;
        if ((*small)->cap < b->cap) {
            victim = *small;
            b->next = victim->next;
            *small = b;
        } else {
            victim = b;
        }
    }
    pthread_mutex_unlock(&p->mu);
    free(victim);
}

grpc_slice srv_rbuf_slice(uint8_t *buf, size_t off, size_t len)
{
    return grpc_slice_new_with_user_data(buf + off, len, rbuf_release, buf);
}

void srv_rbuf_drop(uint8_t *buf)
{
    if (buf)
        rbuf_release(buf);
}

/* ---- scratch ------------------------------------------------------------- */

void *srv_scratch_grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap && *p)
        return *p;
    size_t c = *cap ? *cap : 4096;
    while (c < n)
        c *= 2;
    void *q = aligned_alloc(64, (c * elem + 63) / 64 * 64);
    if (!q)
        return NULL;
    free(*p);
    *p = q;
    *cap = c;
    return q;
}

static void *grow(void **p, size_t *cap, size_t n, size_t elem)
{
    return srv_scratch_grow(p, cap, n, elem);
}

uint64_t *srv_scratch_keys(srv_worker *w, size_t n)
{
    return grow((void **)&w->keys, &w->keys_cap, n, 8);
}
uint64_t *srv_scratch_keys2(srv_worker *w, size_t n)
{
    return grow((void **)&w->keys2, &w->keys2_cap, n, 8);
}
uint64_t *srv_scratch_scores(srv_worker *w, size_t n)
{
    return grow((void **)&w->scores, &w->scores_cap, n, 8);
}
float *srv_scratch_floats(srv_worker *w, size_t n)
{
    return grow((void **)&w->floats, &w->floats_cap, n, 4);
}

/* Where the bytes of the length-delimited field at `path` (field numbers, each
 * but the last a submessage, ending with 0) start in the message held by `sb`,
 * its last occurrence as protobuf's "last one wins" has it; SIZE_MAX when it is
 * not there or the framing is malformed (the decoder then says what is wrong:
 * this scan only picks where the request lands in memory, never what it means).
 * Reads tags and lengths only: a few bytes per field. */
static size_t field_at(const grpc_slice_buffer *sb, const uint8_t *path)
{
    ember_slices c;
    size_t hit = SIZE_MAX;
    ember_slices_init(&c, sb);
    for (; *path; path++) {
        size_t len = 0;
        hit = SIZE_MAX;
        while (c.pos < c.end) {
            uint32_t f;
            int wt;
            uint64_t v;
            size_t n;
            if (!ember_slices_tag(&c, &f, &wt))
                return SIZE_MAX;
            int ok = wt == 0   ? ember_slices_varint(&c, &v)
                     : wt == 1 ? ember_slices_skip(&c, 8)
                     : wt == 5 ? ember_slices_skip(&c, 4)
                     : wt == 2 ? ember_slices_len(&c, &n)
                               : 0;
            if (!ok)
                return SIZE_MAX;
            if (wt == 2) {
                if (f == *path) {
                    hit = c.pos;
                    len = n;
                }
                ember_slices_skip(&c, n); /* n fits: ember_slices_len checked it */
            }
        }
        if (hit == SIZE_MAX)
            return SIZE_MAX;
        if (path[1]) { /* descend into the submessage */
            ember_slices_init(&c, sb);
            ember_slices_skip(&c, hit);
            c.end = hit + len;
        }
    }
    return hit;
}

int srv_payload_bytes(srv_worker *w, grpc_byte_buffer *bb, const uint8_t *align,
                      const uint8_t **out, size_t *len, ember_error *err)
{
    static const uint8_t empty[1];
    *out = empty;
    *len = 0;
    if (!bb)
        return 0;
    const grpc_slice_buffer *sb = ember_slices_raw(bb);
    if (sb) {
        if (sb->count == 1) {
            *out = GRPC_SLICE_START_PTR(sb->slices[0]);
            *len = GRPC_SLICE_LENGTH(sb->slices[0]);
            return 0;
        }
        /* Gathered once, placed so the bulk field lands 64-byte aligned: the
         * handler then reads it where it lies, with no second copy. */
        size_t at = align && *align ? field_at(sb, align) : SIZE_MAX;
        size_t shift = at == SIZE_MAX ? 0 : (64 - at % 64) % 64;
        if (!grow((void **)&w->flat, &w->flat_cap, sb->length + shift, 1))
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                                   "out of memory for a %zu-byte request", sb->length);
        uint8_t *dst = w->flat + shift;
        for (size_t i = 0; i < sb->count; i++) {
            size_t l = GRPC_SLICE_LENGTH(sb->slices[i]);
            memcpy(dst, GRPC_SLICE_START_PTR(sb->slices[i]), l);
            dst += l;
        }
        *out = sb->length ? w->flat + shift : empty;
        *len = sb->length;
        return 0;
    }
    /* compressed: gRPC's reader inflates it */
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "cannot read the request");
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    size_t n = GRPC_SLICE_LENGTH(all);
    if (n && !grow((void **)&w->flat, &w->flat_cap, n, 1)) {
        grpc_slice_unref(all);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "out of memory for a %zu-byte request", n);
    }
    if (n)
        memcpy(w->flat, GRPC_SLICE_START_PTR(all), n);
    grpc_slice_unref(all);
    *out = n ? w->flat : empty;
    *len = n;
    return 0;
}

/* ---- calls --------------------------------------------------------------- */

static void request(srv_worker *w, srv_method m);

static void call_destroy(srv_call *c, int matched)
{
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    if (c->send)
        grpc_byte_buffer_destroy(c->send);
    if (c->stream && c->stream_free)
        c->stream_free(c->stream);
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->busy)
        atomic_fetch_sub(&srv.busy_calls, 1);
    free(c);
    if (matched && atomic_fetch_sub(&srv.live_calls, 1) == 1 && atomic_load(&srv.stopping)) {
        pthread_mutex_lock(&rpc.mu);
        pthread_cond_broadcast(&rpc.cv);
        pthread_mutex_unlock(&rpc.mu);
    }
}

static const char *method_name(const srv_call *c) { return srv_method_name(c->method); }

static void start_batch(srv_call *c, grpc_op *ops, size_t n)
{
    grpc_call *call = c->call;
    ember_cq_release(c); /* from here, c may be another worker's */
    grpc_call_error e = grpc_call_start_batch(call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        /* our own bug (two batches of one kind at once): log, drop the call */
        srv_log(SRV_LOG_ERROR, "batch_failed", "method=%s grpc_call_error=%d", method_name(c),
                (int)e);
        call_destroy(c, 1);
    }
}

void srv_reply_add(srv_reply *r, grpc_slice s)
{
    if (r->n < SRV_REPLY_SLICES)
        r->s[r->n++] = s;
    else /* our own bug: a reply shaped with more slices than there is room for */
        grpc_slice_unref(s);
}

void srv_reply_discard(srv_reply *r)
{
    for (unsigned i = 0; i < r->n; i++)
        grpc_slice_unref(r->s[i]);
    r->n = 0;
}

void srv_call_finish(srv_call *c, int code, const char *msg, grpc_slice *resp)
{
    srv_reply r = {.n = 0};
    if (resp)
        srv_reply_add(&r, *resp);
    srv_call_finish_reply(c, code, msg, resp ? &r : NULL);
}

void srv_call_finish_reply(srv_call *c, int code, const char *msg, srv_reply *resp)
{
    if (c->repl_need && code == EMBER_OK && srv_repl_park(c, resp))
        return; /* answered once followers have it (repl.h) */
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    c->state = ST_FINISH;
    c->status = code;
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "");
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->sent_initial_md = 1;
    }
    if (resp && resp->n) {
        if (code == EMBER_OK) {
            c->send = grpc_raw_byte_buffer_create(resp->s, resp->n);
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = c->send;
            n++;
        }
        srv_reply_discard(resp); /* the byte buffer took its own references */
    }
    grpc_slice details = grpc_slice_from_copied_string(c->msg);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n].data.send_status_from_server.status_details = code ? &details : NULL;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    atomic_fetch_add_explicit(&srv.requests, 1, memory_order_relaxed);
    if (code)
        atomic_fetch_add_explicit(&srv.errors, 1, memory_order_relaxed);
    /* counted here, before the status goes out, rather than when the batch
     * completes: a client that has its reply then finds its call in a scrape */
    srv_metrics_call(c->method, code, &c->started);
    start_batch(c, ops, n);
    grpc_slice_unref(details); /* the server copied it in start_batch */
}

void srv_call_drop_request(srv_call *c)
{
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
}

int srv_call_expired(const srv_call *c)
{
    return gpr_time_cmp(gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC),
                        gpr_now(GPR_CLOCK_MONOTONIC)) < 0;
}

void srv_call_send(srv_call *c, grpc_slice msg)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    c->state = ST_STEP;
    if (!c->sent_initial_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    c->send = grpc_raw_byte_buffer_create(&msg, 1);
    grpc_slice_unref(msg);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->send;
    n++;
    start_batch(c, ops, n);
}

void srv_call_recv(srv_call *c)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    c->state = ST_STEP;
    if (c->recv) {
        grpc_byte_buffer_destroy(c->recv);
        c->recv = NULL;
    }
    if (!c->sent_initial_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &c->recv;
    n++;
    start_batch(c, ops, n);
}

static void request(srv_worker *w, srv_method m)
{
    srv_call *c = calloc(1, sizeof *c);
    grpc_call_error e;
    if (!c) {
        srv_log(SRV_LOG_ERROR, "out_of_memory", "where=request");
        return;
    }
    c->method = m;
    c->w = w;
    c->state = ST_REQUESTED;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    ember_cq_release(c);
    if (m == SRV_M_UNKNOWN)
        e = grpc_server_request_call(rpc.server, &c->call, &c->details, &c->md, w->cq, w->cq, c);
    else
        e = grpc_server_request_registered_call(rpc.server, rpc.methods[m], &c->call,
                                                &c->deadline, &c->md,
                                                srv_methods[m].payload ? &c->payload : NULL,
                                                w->cq, w->cq, c);
    if (e != GRPC_CALL_OK)
        call_destroy(c, 0); /* shutting down */
}

static void on_matched(srv_worker *w, srv_call *c)
{
    ember_error err;
    atomic_fetch_add(&srv.live_calls, 1);
    clock_gettime(CLOCK_MONOTONIC, &c->started);
    if (!atomic_load(&srv.stopping))
        request(w, c->method);
    if (c->method == SRV_M_UNKNOWN) {
        char msg[EMBER_ERROR_MSG_MAX];
        grpc_slice m = c->details.method;
        snprintf(msg, sizeof msg, "unknown method %.*s", (int)GRPC_SLICE_LENGTH(m),
                 (const char *)GRPC_SLICE_START_PTR(m));
        srv_call_finish(c, EMBER_UNIMPLEMENTED, msg, NULL);
        return;
    }
    const srv_method_desc *d = &srv_methods[c->method];
    if (d->capped) {
        /* Every call in progress holds its request, its reply and perhaps a
         * stream's buffers: past the cap, refuse before reading anything. Health
         * is uncapped, so an overloaded shard is not also declared dead. */
        c->busy = 1;
        long busy = atomic_fetch_add(&srv.busy_calls, 1) + 1;
        if (busy > (long)srv.cfg.max_concurrent_calls) {
            char bmsg[160];
            atomic_fetch_add_explicit(&srv.refused_busy, 1, memory_order_relaxed);
            snprintf(bmsg, sizeof bmsg,
                     "%u calls already in progress on this shard (--max-concurrent-calls); "
                     "retry later",
                     srv.cfg.max_concurrent_calls);
            srv_call_finish(c, EMBER_RESOURCE_EXHAUSTED, bmsg, NULL);
            return;
        }
    }
    {
        /* before anything of the request is looked at: a refused call does nothing */
        char amsg[EMBER_ERROR_MSG_MAX];
        int code = srv_auth_check_call(c->call, &c->md, d->path, d->role, &c->role, amsg,
                                       sizeof amsg);
        if (code) {
            c->logged = 1; /* auth.c logged it, with the identity */
            srv_call_finish(c, code, amsg, NULL);
            return;
        }
    }
    if (srv_call_expired(c)) {
        srv_call_finish(c, EMBER_DEADLINE_EXCEEDED, "deadline expired before the call ran",
                        NULL);
        return;
    }
    if (srv_follow_role_id() != SRV_REPL_LEADER && srv_method_writes(c->method)) {
        /* a follower's tables change only from its leader (repl.h) */
        srv_follow_refuse(d->name, &err);
        srv_call_finish(c, err.code, err.message, NULL);
        return;
    }
    const uint8_t *req;
    size_t len;
    /* a method whose payload is not read with the call (a client stream) has none */
    if (srv_payload_bytes(w, c->payload, d->align, &req, &len, &err)) {
        srv_call_finish(c, err.code, err.message, NULL);
        return;
    }
    if (d->call || d->shard) {
        (d->call ? d->call : d->shard)(w, c, req, len);
        return;
    }
    ember_error_clear(&err);
    grpc_slice resp;
    int rc = d->unary(w, req, len, &resp, &err);
    /* the request is no longer needed: give its memory back before sending */
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    srv_call_finish(c, rc, rc ? err.message : NULL, rc ? NULL : &resp);
}

static void on_finished(srv_call *c)
{
    if (srv_log_level() >= SRV_LOG_DEBUG && !c->logged) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double ms = (double)(now.tv_sec - c->started.tv_sec) * 1e3 +
                    (double)(now.tv_nsec - c->started.tv_nsec) / 1e6;
        char q[300];
        srv_log(SRV_LOG_DEBUG, "call", "method=%s code=%s ms=%.3f cancelled=%d msg=%s",
                method_name(c), ember_status_name(c->status), ms, c->cancelled,
                srv_log_q(q, sizeof q, c->msg));
    }
    call_destroy(c, 1);
}

static int shutdown_tag;

static void *worker_main(void *arg)
{
    srv_worker *w = arg;
    ember_error err;
    /* the gpu backend's device is per thread: set it before any table is touched */
    if (srv_backend_thread_init(&srv.backend, &err)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "worker_device_failed", "worker=%u gpu=%d reason=%s", w->index,
                srv.backend.gpu, srv_log_q(q, sizeof q, err.message));
    }
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        ember_cq_acquire(ev.tag);
        if (ev.tag == &shutdown_tag) {
            pthread_mutex_lock(&rpc.mu);
            rpc.shutdown_seen = 1;
            pthread_cond_broadcast(&rpc.cv);
            pthread_mutex_unlock(&rpc.mu);
            continue;
        }
        srv_call *c = ev.tag;
        switch (c->state) {
        case ST_REQUESTED:
            if (ev.success)
                on_matched(w, c);
            else
                call_destroy(c, 0); /* the server is shutting down */
            break;
        case ST_STEP:
            if (c->send) {
                grpc_byte_buffer_destroy(c->send);
                c->send = NULL;
            }
            c->step(w, c, ev.success);
            break;
        case ST_FINISH:
            on_finished(c);
            break;
        }
    }
    return NULL;
}

/* ---- start / stop -------------------------------------------------------- */

static void workers_free(void)
{
    for (unsigned i = 0; i < srv.cfg.threads; i++) {
        srv_worker *w = &rpc.workers[i];
        w->cq = NULL; /* rpc.cq, destroyed below */
        free(w->flat);
        free(w->keys);
        free(w->keys2);
        free(w->scores);
        free(w->floats);
        free(w->co_layer);
        free(w->co_map);
        free(w->co_side_keys);
        free(w->co_side_floats);
        free(w->pool_floats);
        free(w->co_starts);
        /* w->pool stays: slices released late by gRPC may still return to it */
    }
    if (rpc.cq)
        grpc_completion_queue_destroy(rpc.cq);
    rpc.cq = NULL;
}

int srv_rpc_start(char *msg, size_t cap)
{
    pthread_mutex_init(&rpc.mu, NULL);
    pthread_cond_init(&rpc.cv, NULL);
    clock_gettime(CLOCK_MONOTONIC, &srv.started);
    atomic_store_explicit(&srv.started_set, 1, memory_order_release);
    grpc_init();

    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)srv.cfg.max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)srv.cfg.max_message_bytes;
    /* gRPC sets SO_REUSEPORT by default: a second server on a taken port would
     * start silently and steal connections. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    grpc_channel_args ca = {3, args};
    rpc.server = grpc_server_create(&ca, NULL);
    for (int m = 0; m < SRV_M_COUNT; m++)
        rpc.methods[m] = grpc_server_register_method(
            rpc.server, srv_methods[m].path, NULL,
            srv_methods[m].payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                               : GRPC_SRM_PAYLOAD_NONE,
            0);
    rpc.workers = calloc(srv.cfg.threads, sizeof *rpc.workers);
    if (!rpc.workers) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    rpc.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(rpc.server, rpc.cq, NULL);
    for (unsigned i = 0; i < srv.cfg.threads; i++) {
        srv_worker *w = &rpc.workers[i];
        w->index = i;
        w->cq = rpc.cq;
        w->pool = calloc(1, sizeof *w->pool);
        if (!w->pool) {
            snprintf(msg, cap, "out of memory");
            return -1;
        }
        pthread_mutex_init(&w->pool->mu, NULL);
    }
    grpc_server_credentials *creds = srv_auth_server_credentials(&srv.cfg, msg, cap);
    int port = 0;
    if (creds) {
        port = grpc_server_add_http2_port(rpc.server, srv.cfg.listen, creds);
        grpc_server_credentials_release(creds);
        if (port <= 0)
            snprintf(msg, cap,
                     "cannot listen on %s: the address is in use by another process or is "
                     "not a valid HOST:PORT%s",
                     srv.cfg.listen, *srv.cfg.tls_cert ? ", or the TLS certificate or key is "
                                                         "not valid PEM" : "");
    }
    if (port <= 0) {
        grpc_server_destroy(rpc.server);
        grpc_completion_queue_shutdown(rpc.cq);
        while (grpc_completion_queue_next(rpc.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        workers_free();
        grpc_shutdown();
        return -1;
    }
    grpc_server_start(rpc.server);
    for (unsigned i = 0; i < srv.cfg.threads; i++) {
        for (int m = 0; m <= SRV_M_UNKNOWN; m++) {
            int k = m == SRV_M_UNKNOWN ? 1 : srv_methods[m].requests;
            for (int j = 0; j < k; j++)
                request(&rpc.workers[i], (srv_method)m);
        }
    }
    for (unsigned i = 0; i < srv.cfg.threads; i++) {
        int e = pthread_create(&rpc.workers[i].thread, NULL, worker_main, &rpc.workers[i]);
        if (e) {
            snprintf(msg, cap, "cannot start worker threads: %s", strerror(e));
            return -1;
        }
    }
    char host[256];
    snprintf(host, sizeof host, "%s", srv.cfg.listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    srv_log(SRV_LOG_INFO, "listening",
            "addr=%s:%d threads=%u backend=%s shard=%u/%u max_keys_per_request=%llu "
            "max_message_bytes=%llu max_concurrent_calls=%u max_table_host_bytes=%llu "
            "max_table_hbm_bytes=%llu coalesce=%s coalesce_max_keys=%llu coalesce_queue_keys=%llu "
            "tls=%s auth=%s key_ownership=%s",
            host, port, srv.cfg.threads, srv.backend.name, srv.cfg.shard_index,
            srv.cfg.shard_count, (unsigned long long)srv.cfg.max_keys_per_request,
            (unsigned long long)srv.cfg.max_message_bytes, srv.cfg.max_concurrent_calls,
            (unsigned long long)srv.cfg.max_table_host_bytes,
            (unsigned long long)srv.cfg.max_table_hbm_bytes,
            srv.cfg.coalesce == SRV_COALESCE_ON    ? "on"
            : srv.cfg.coalesce == SRV_COALESCE_OFF ? "off"
                                                   : "auto",
            (unsigned long long)srv.cfg.coalesce_max_keys,
            (unsigned long long)srv.cfg.coalesce_queue_keys,
            !*srv.cfg.tls_cert ? "off" : *srv.cfg.tls_client_ca ? "mutual" : "on",
            srv_auth_enabled() ? "on" : "off",
            srv.cfg.shard_count <= 1 || srv.cfg.key_ownership_off ? "off" : "check");
    if (srv.cfg.coalesce_wait_us)
        srv_log(SRV_LOG_WARN, "obsolete_flag",
                "flag=--coalesce-wait-us value=%u reason=\"ignored: a batch is whatever piled "
                "up while its table was busy, and never waits for more\"",
                srv.cfg.coalesce_wait_us);
    return 0;
}

static int wait_until(int (*cond)(void), unsigned ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int ok = 1;
    pthread_mutex_lock(&rpc.mu);
    while (!cond())
        if (pthread_cond_timedwait(&rpc.cv, &rpc.mu, &dl) == ETIMEDOUT) {
            ok = cond();
            break;
        }
    pthread_mutex_unlock(&rpc.mu);
    return ok;
}

static int shutdown_done(void) { return rpc.shutdown_seen; }
static int no_live_calls(void) { return atomic_load(&srv.live_calls) == 0; }

void srv_rpc_stop(unsigned grace_ms)
{
    atomic_store(&srv.stopping, 1);
    grpc_server_shutdown_and_notify(rpc.server, rpc.cq, &shutdown_tag);
    if (!wait_until(shutdown_done, grace_ms)) {
        srv_log(SRV_LOG_WARN, "shutdown_grace_expired", "live_calls=%ld grace_ms=%u",
                atomic_load(&srv.live_calls), grace_ms);
        grpc_server_cancel_all_calls(rpc.server);
        while (!wait_until(shutdown_done, 1000))
            ;
    }
    while (!wait_until(no_live_calls, 1000))
        ;
    grpc_server_destroy(rpc.server);
    grpc_completion_queue_shutdown(rpc.cq); /* every worker's next then sees SHUTDOWN */
    for (unsigned i = 0; i < srv.cfg.threads; i++)
        pthread_join(rpc.workers[i].thread, NULL);
    workers_free();
    grpc_shutdown();
}

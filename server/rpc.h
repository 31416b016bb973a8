/*
 * rpc.h — the transport of ember-server: the gRPC plumbing, for the handlers
 * and main.
 *
 * Threads: `--threads N` workers, all polling one completion queue (gRPC binds a
 * connection to one registered queue; with a queue per thread, all the calls of
 * one client would run on one thread). Every worker keeps requests outstanding
 * for every registered method (payload read at request time,
 * GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER), and one for unregistered methods
 * (answered UNIMPLEMENTED). Each completion is handled by whichever worker takes
 * it, with that worker's buffers: no thread per connection, and no locking of
 * call state, since a call has one batch in flight at a time.
 *
 * Memory: each worker owns scratch buffers (the flattened request, aligned keys,
 * floats) that grow to the largest request seen and are reused, and a small pool
 * of 64-byte-aligned response buffers that go out as gRPC slices without a copy
 * and come back to the pool when gRPC releases them (reference-counted: the
 * replies of a coalesced Pull batch are slices of one buffer).
 *
 * Coalescing (coalesce.h): a call that finds its table busy writes its keys and
 * values into a batch of the table's queue and its worker goes back to the
 * completion queue; the worker running the queue answers it later
 * (srv_call_finish_reply from another thread). No worker waits on the table.
 *
 * Methods: the transport registers every row of the method table (server.h),
 * refuses what the core's rules refuse (over --max-concurrent-calls, auth.h, an
 * expired deadline) and runs the row's handler. The server's state is the core's
 * (`srv`); what is the transport's own (the gRPC server, the completion queue,
 * the workers) stays in rpc.c.
 */
#ifndef EMBER_SRV_RPC_H
#define EMBER_SRV_RPC_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdint.h>

#include "server/server.h"
#include "storage/status.h"

typedef struct srv_pool srv_pool;

/* A worker thread and what it reuses across calls. Only its thread touches it,
 * except the pool (gRPC may release a response slice on any thread). */
struct srv_worker {
    unsigned index;
    pthread_t thread;
    grpc_completion_queue *cq;
    uint8_t *flat;      /* a request's bytes when they came in several slices */
    size_t flat_cap;
    uint64_t *keys;     /* aligned keys */
    size_t keys_cap;    /* in keys */
    uint64_t *keys2;    /* PushPull's pull keys, Import's scores */
    size_t keys2_cap;
    uint64_t *scores;
    size_t scores_cap;
    float *floats;      /* aligned values (converted from/to the wire) */
    size_t floats_cap;  /* in floats */
    /* a gradient batch this worker runs: its layers (srv_co_layers) */
    uint32_t *co_layer;  /* per key: its layer (srv_co_layers) */
    size_t co_layer_cap;
    void *co_map;        /* srv_co_slot[co_map_cap] */
    size_t co_map_cap;
    uint64_t *co_side_keys; /* keys and gradients of layers ≥ 1 */
    size_t co_side_keys_cap;
    float *co_side_floats;
    size_t co_side_floats_cap;
    size_t *co_starts;   /* each member's first key */
    size_t co_starts_cap;
    /* a pooled pull's bag vectors (other dtypes) or a pooled push's per-key
     * gradients (shard.c) */
    float *pool_floats;
    size_t pool_floats_cap;
    srv_pool *pool;
};

/* A streaming method's next step: `ok` says whether the last batch succeeded. */
typedef void (*srv_step_fn)(srv_worker *w, srv_call *c, int ok);

struct srv_call {
    srv_method method;
    int state;
    srv_worker *w;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details;      /* unregistered calls only */
    grpc_metadata_array md;
    grpc_byte_buffer *payload;      /* the request (registered unary/server-stream) */
    grpc_byte_buffer *recv;         /* srv_call_recv's message; NULL at end of stream */
    grpc_byte_buffer *send;         /* in flight */
    int sent_initial_md;
    int cancelled;                  /* from RECV_CLOSE_ON_SERVER */
    int busy;                       /* counted in srv.busy_calls */
    int logged;                     /* its refusal was logged already (auth.c) */
    int role;                       /* SRV_ROLE_* the caller proved (ADMIN: auth off) */
    int status;
    char msg[EMBER_ERROR_MSG_MAX];
    srv_step_fn step;               /* streaming calls */
    void *stream;                   /* streaming state, freed by stream_free */
    void (*stream_free)(void *);
    struct timespec started;
    /* a Shard handler's state for a call it answers later, from a table queue's
     * runner (shard.c): lives as long as the call, costs no allocation */
    _Alignas(16) unsigned char job[160];
    /* a replicated push (repl.h): its OK answer waits for this many followers
     * to hold table repl_table at the table's version after it; 0: answered at once */
    uint32_t repl_need;
    char repl_table[EMBER_TABLE_NAME_MAX + 1];
};

/* Starts gRPC, binds cfg.listen and starts the workers. Returns 0, or -1 with a
 * reason in msg (the port is taken, a bad address). */
int srv_rpc_start(char *msg, size_t cap);
/* Graceful stop: no new calls; in-flight calls get `grace_ms` to finish before
 * they are cancelled; then workers are joined and gRPC shut down. */
void srv_rpc_stop(unsigned grace_ms);

/* ---- for handlers -------------------------------------------------------- */

/* The request's bytes, contiguous: the one slice itself when it came in one,
 * else gathered into the worker's flat buffer — once, and placed so that the
 * bytes of the field at `align` (field numbers from the top message down, ending
 * with 0; NULL or empty: none) start 64-byte aligned, so a handler can read its
 * floats in place. RESOURCE_EXHAUSTED on no memory. */
int srv_payload_bytes(srv_worker *w, grpc_byte_buffer *bb, const uint8_t *align,
                      const uint8_t **out, size_t *len, ember_error *err);

/* Grow-only scratch: pointers stay valid until the next grow of the same one.
 * NULL on no memory. */
uint64_t *srv_scratch_keys(srv_worker *w, size_t n);
uint64_t *srv_scratch_keys2(srv_worker *w, size_t n);
uint64_t *srv_scratch_scores(srv_worker *w, size_t n);
float *srv_scratch_floats(srv_worker *w, size_t n);

/* Grow-only scratch of `n` elements of `elem` bytes at *p (capacity *cap), 64-byte
 * aligned; contents are not kept across a grow. NULL on no memory. */
void *srv_scratch_grow(void **p, size_t *cap, size_t n, size_t elem);

/* A pooled response buffer of at least `len` bytes, 64-byte aligned, holding one
 * reference; srv_rbuf_ref adds `k` more. srv_rbuf_slice hands [off, off+len) of it
 * to gRPC with one reference (released when gRPC lets go of the slice);
 * srv_rbuf_drop releases one. The buffer returns to its pool with the last. */
uint8_t *srv_rbuf_get(srv_worker *w, size_t len);
void srv_rbuf_ref(uint8_t *buf, unsigned k);
grpc_slice srv_rbuf_slice(uint8_t *buf, size_t off, size_t len);
void srv_rbuf_drop(uint8_t *buf);

/* A unary reply in up to SRV_REPLY_SLICES slices, sent as one message. */
#define SRV_REPLY_SLICES 6
struct srv_reply {
    grpc_slice s[SRV_REPLY_SLICES];
    unsigned n;
};
/* Appends a slice (ownership passes to the reply). */
void srv_reply_add(srv_reply *r, grpc_slice s);
/* Unrefs every slice (a reply not sent). */
void srv_reply_discard(srv_reply *r);

/* Ends a call: sends `resp` (if not NULL; ownership passes) when code is OK,
 * then the status. The call is freed when the batch completes. May be called
 * from a thread other than the workers' (Admin/Save's answer, on the
 * checkpointer thread) for a call that has no batch in flight. */
void srv_call_finish(srv_call *c, int code, const char *msg, grpc_slice *resp);
/* The same with a reply in slices (NULL or empty: no message). */
void srv_call_finish_reply(srv_call *c, int code, const char *msg, srv_reply *resp);
/* Lets go of a call's request now, before its reply is built (the payload
 * otherwise lives until the call ends). */
void srv_call_drop_request(srv_call *c);
/* Whether the call's deadline has passed. */
int srv_call_expired(const srv_call *c);
/* Streaming: sends one message (ownership passes) / receives one into c->recv;
 * c->step runs when it completes. */
void srv_call_send(srv_call *c, grpc_slice msg);
void srv_call_recv(srv_call *c);

#endif

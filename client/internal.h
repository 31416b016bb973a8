/*
 * internal.h — libember's insides, shared by client.c (handle, shards, calls),
 * train.c (pull/push) and admin.c (table admin). Not installed.
 *
 * The call machinery: an ember_call is one library call (a pull, a push, an admin
 * fan-out; `op` in the code, as its shard calls are `sc`). It holds its requests
 * — one per shard, or several for a big batch — (ember_call_add), starts them all
 * at once on the client's completion queue (ember_call_start), and
 * ember_call_finish waits for every shard, retrying those that answered
 * UNAVAILABLE with exponential backoff inside the call's deadline. A poller
 * thread per client drives gRPC's network progress and wakes the waiting thread,
 * so an async pull keeps moving while the worker computes.
 *
 * Calls and their buffers are pooled per client; requests are written into
 * pooled, reference-counted buffers that gRPC sends without copying (released
 * when gRPC drops its slice, which may be after the call ended).
 *
 * Locking: c->pool_mu guards the call free list; op->mu guards op->outstanding
 * and the shard calls' completion flags (written by the poller thread);
 * everything else in a call belongs to the thread that started it.
 */
#ifndef EMBER_CLIENT_INTERNAL_H
#define EMBER_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "client/batch.h"
#include "ember/ember.h"

/* Methods the call machinery calls. */
typedef enum ember_method {
    EMBER_M_PULL, EMBER_M_PUSH, EMBER_M_PUSHPULL,
    EMBER_M_CREATE, EMBER_M_DROP, EMBER_M_DESCRIBE, EMBER_M_SAVE, EMBER_M_LOAD,
    EMBER_M_LIST, EMBER_M_ALTER, EMBER_M_ERASE, EMBER_M_SET_EPOCH, EMBER_M_INFO,
    EMBER_M_COUNT
} ember_method;

typedef struct ember_reqpool ember_reqpool;
typedef struct ember_reqbuf ember_reqbuf;

typedef struct ember_shard {
    char *addr;                  /* as the list gave it: "h1:p" or "h1:p|h2:p|..." */
    /* Replication: the shard's replicas ("leader|followers"), channels to each
     * (ch[r * nch + k]), and the one calls go to (its leader, as last learned). */
    char **replica;
    unsigned nreplicas;
    atomic_uint leader;
    grpc_channel **ch;
    unsigned nch;                /* channels per replica */
    atomic_uint rr;              /* round robin over ch */
    atomic_uint_fast64_t seq;    /* next push sequence number */
    /* Retry budget: 1 while the shard is known unavailable (noticed once). */
    atomic_int down;
    atomic_int_fast64_t down_since_ms; /* monotonic ms of the first failure */
    atomic_int_fast64_t up_ms;   /* when it was last said to be back */
    /* Replication: the highest leader term its push replies said, sent with
     * every later push so that a stale leader behind the address fences
     * itself (README "Replication and failover"). */
    atomic_uint_fast64_t term;
} ember_shard;

struct ember_client {
    unsigned nshards;
    ember_shard *shards;
    const char *shard_source;    /* where the list came from: a static string */
    unsigned timeout_ms, max_retries;
    unsigned retry_budget_ms;    /* 0: max_retries within one deadline */
    void (*notice)(void *, unsigned, const char *, int, const char *);
    void *notice_arg;            /* notice NULL: stderr unless notice_quiet */
    int notice_quiet;
    /* ember_client_cancel: waits notice it within EMBER_CANCEL_POLL_MS. Calls
     * between ember_call_finish and ember_call_release are counted in `active`
     * so ember_client_close can wait for them (on active_cv, under active_mu,
     * signalled by the last one out once cancelled is set). */
    atomic_int cancelled;
    atomic_uint active;
    pthread_mutex_t active_mu;
    pthread_cond_t active_cv;
    ember_dtype wire_dtype;
    uint64_t client_id;
    grpc_slice methods[EMBER_M_COUNT];

    grpc_completion_queue *cq;
    pthread_t poller;

    pthread_mutex_t pool_mu;
    struct ember_call *free_ops;
    unsigned nfree_ops;
    ember_reqpool *reqpool;

    size_t chunk_bytes;          /* most value bytes in one request (train.c) */

    /* test hooks (ember_client_debug_*) */
    atomic_int debug_resend_pushes;
    atomic_uint_fast64_t debug_duplicate_acks;
};

typedef struct ember_shard_call {
    struct ember_call *op;
    unsigned shard;
    ember_method method;
    ember_reqbuf *req;
    uint8_t *req_data;           /* write the encoded request here */
    size_t req_len;
    /* train.c: the grouped keys this call carries (batch.h) */
    size_t pull_lo, n_pull, push_lo, n_push;
    unsigned attempts;
    int64_t attempt_ms;          /* monotonic start of the current attempt */
    int resend;                  /* debug: send once more after success */
    int failed_over;             /* resent once to a new leader (replicas) */
    int follower;                /* a serving pull that may go to a follower */

    /* one attempt */
    grpc_call *call;
    grpc_metadata_array imd, tmd;
    grpc_byte_buffer *recv;
    grpc_status_code status;
    grpc_slice details;
    int finished;                /* set by the poller under op->mu */

    /* result */
    int code;
    const uint8_t *resp;         /* contiguous reply: into recv, or resp_copy */
    size_t resp_len;
    uint8_t *resp_copy;
    size_t resp_copy_cap;
    char msg[400];               /* status details of a failure */
} ember_shard_call;

typedef struct ember_call {
    ember_client *c;
    struct ember_call *next;     /* free list */
    int kind;                    /* EMBER_CALL_* in train.c / admin.c */
    int retry;                   /* retry UNAVAILABLE */
    int keep_slices;             /* 1: ember_call_finish leaves replies in sc->recv
                                  * unflattened (train.c reads them, reply.h) */
    gpr_timespec deadline;       /* of the current attempts */
    unsigned timeout_ms;
    int64_t start_ms;            /* monotonic, at ember_call_start */
    int counted;                 /* in c->active (ember_call_finish) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int outstanding;

    ember_shard_call *calls;     /* [ncalls]: any number per shard, in the order added */
    size_t ncalls, cap_calls;

    /* the caller's arguments and the call's working set (train.c) */
    const char *table;
    const uint64_t *keys;
    size_t n;
    float *out;
    uint32_t dim;
    unsigned flags;
    int mode;
    ember_batch pull_b, push_b;
    const uint8_t **rowptr;      /* [pull_b.m] reply row of each grouped key */
    size_t rowptr_cap;
    uint8_t *straddle;           /* copies of reply rows split over two slices */
    size_t straddle_cap;
    /* scores and found flags (ember_pull_options / ember_push_options), in
     * grouped order: [pull_b.m] / [push_b.m]; found is the caller's [n] */
    uint64_t *pull_scores, *push_scores;
    size_t pull_scores_cap, push_scores_cap;
    uint8_t *gfound;             /* [pull_b.m] each grouped key's found flag */
    size_t gfound_cap;
    uint8_t *found;              /* the caller's found[n], NULL: not asked */
} ember_call;

/* Takes a call from the pool (or makes one); NULL when out of memory. */
ember_call *ember_call_acquire(ember_client *c, int kind);
/* Returns a call to the pool; every shard call started must have finished. */
void ember_call_release(ember_call *op);
/* Adds a call of `method` to shard `s` with a request buffer of `len` bytes
 * (sc->req_data), into which the caller writes the encoded message. Calls must
 * all be added before ember_call_start; the returned pointer is valid until the
 * next ember_call_add. NULL when out of memory. */
ember_shard_call *ember_call_add(ember_call *op, unsigned s, ember_method method, size_t len);
/* Starts every call, all before any is waited on. The deadline is
 * op->timeout_ms from now. */
void ember_call_start(ember_call *op);
/* Waits for every call (retrying UNAVAILABLE when op->retry, within the
 * deadline, or within c->retry_budget_ms, retrying an attempt's
 * DEADLINE_EXCEEDED too) and returns 0, or the status of the failing call with the lowest
 * shard index, with "shard i (host:port): message" in err. Replies stay readable
 * in op->calls[i].resp (op->calls[i].recv only, when op->keep_slices) until
 * ember_call_release. */
int ember_call_finish(ember_call *op, ember_error *err);
/* Points sc->resp/resp_len at sc->recv's bytes: in place when gRPC handed over
 * one uncompressed slice, else copied into sc's reusable buffer. Returns 0 or
 * EMBER_RESOURCE_EXHAUSTED / EMBER_INTERNAL. (Internal; exposed for a test.) */
int ember_shard_call_take_reply(ember_shard_call *sc);
/* Fills err for shard s's failure: "shard s (addr): <msg>"; returns code. */
int ember_call_shard_error(ember_call *op, unsigned s, int code, ember_error *err,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Copies a caller's growable public struct (ember.h, "Growing structs") into
 * `dst`, which holds the defaults: the first src_size bytes (first_size when
 * src_size is 0), the rest left at the defaults. INVALID_ARGUMENT, naming
 * `what`, when src_size is below first_size or above dst_size. */
int ember_struct_take(void *dst, size_t dst_size, const void *src, uint32_t src_size,
                      size_t first_size, const char *what, ember_error *err);

/* Checks that a table name is there and at most EMBER_TABLE_NAME_MAX long;
 * the servers check the characters (ember_table_name_valid). */
int ember_table_name_check(const char *name, ember_error *err);

/* What every pull and push checks of its arguments first: a client, a table
 * name (ember_table_name_check), dim > 0, known pull flags. INVALID_ARGUMENT. */
int ember_train_args_check(ember_client *c, const char *table, uint32_t dim, unsigned flags,
                           ember_error *err);

#endif /* EMBER_CLIENT_INTERNAL_H */

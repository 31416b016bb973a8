/*
 * server.h — the core of ember-server: the server's state and its method table.
 *
 * One deliberate global (`srv`), like Redis's `server`: the settings, the backend,
 * the table registry and the counters that every handler, the checkpointer and the
 * metrics read. main.c fills it before anything starts.
 *
 * One method table (`srv_methods`), like Redis's command table: each row is
 * everything the server knows about one RPC (its gRPC path, its name in logs and
 * metrics, the role it needs, how the transport reads it, its handler, its
 * metrics). The transport (rpc.h) registers and dispatches through it, auth
 * (auth.h) takes each call's role from it, metrics (metrics.h) labels by it; a
 * method is added by adding its row here and its handler.
 *
 * The layers, from the bottom: this core (with config, backend, registry, dedup,
 * log); the transport (rpc.h); the handlers (shard.c, admin.c) and the
 * persistence (ckpt.h), which depend on the core and on the transport, never on
 * each other's internals. The handlers' prototypes are here, with the table that
 * names them, so the transport needs no handler header.
 *
 * Thread-safety: the table is constant; srv's settings, backend, registry and dedup
 * are set before the workers start and read-only afterwards (the registry and
 * dedup lock inside), the counters are atomics.
 */
#ifndef EMBER_SRV_SERVER_H
#define EMBER_SRV_SERVER_H

#include <grpc/slice.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "server/backend.h"
#include "server/config.h"
#include "server/dedup.h"
#include "server/registry.h"
#include "storage/status.h"

/* ---- the state ------------------------------------------------------------ */

typedef struct srv_state {
    srv_config cfg;
    srv_backend backend;            /* what cfg.backend chose (set before start) */
    srv_registry *registry;
    srv_dedup *dedup;
    atomic_long live_calls;         /* matched and not yet destroyed */
    atomic_long busy_calls;         /* the same, uncapped methods excluded:
                                       --max-concurrent-calls */
    atomic_uint_fast64_t refused_busy; /* calls refused over --max-concurrent-calls */
    atomic_int stopping;            /* shutdown has begun */
    atomic_uint_fast64_t requests, errors;
    struct timespec started;        /* CLOCK_MONOTONIC, set as the port opens */
    atomic_int started_set;         /* released once `started` is written: the
                                       metrics endpoint serves before that */
} srv_state;

extern srv_state srv;

/* Seconds since the server started. */
uint64_t srv_uptime_s(void);

/* Ownership: on a shard started with --shard-count N > 1, every key must map to
 * this --shard-index (ember_shard_of, proto/shard_map.h: the function the
 * clients route with). Checks the n little-endian uint64 keys at `keys` (any
 * alignment); reserved keys are skipped (they are refused as reserved). Returns
 * 0, or FAILED_PRECONDITION naming the first key that is not this shard's, its
 * shard and this one (the message carries EMBER_NOT_OWNER_MARK), `what`
 * prefixed. A server with the default count of 1 owns every key, and so does
 * one started with --key-ownership off. */
int srv_check_owner(const uint8_t *keys, size_t n, const char *what, ember_error *err);

/* ---- the methods ---------------------------------------------------------- */

typedef enum srv_method {
    SRV_M_PULL,
    SRV_M_PUSH,
    SRV_M_PUSHPULL,
    SRV_M_ERASE,
    SRV_M_CREATE,
    SRV_M_DROP,
    SRV_M_LIST,
    SRV_M_DESCRIBE,
    SRV_M_STATS,
    SRV_M_SAVE,
    SRV_M_LOAD,
    SRV_M_EVICT,
    SRV_M_CLEAR,
    SRV_M_ALTER,
    SRV_M_SET_EPOCH,
    SRV_M_INFO,
    SRV_M_EXPORT,
    SRV_M_IMPORT,
    SRV_M_PROMOTE,
    SRV_M_FOLLOW,
    SRV_M_HEALTH,
    SRV_M_COUNT,
    SRV_M_UNKNOWN = SRV_M_COUNT, /* a path not in the table: UNIMPLEMENTED */
} srv_method;

/* The roles, each allowed what the ones below it are (auth.h): a reader may
 * Pull without inserting (serving), a worker may also insert and push, an admin
 * may also call Admin. */
enum { SRV_ROLE_NONE = 0, SRV_ROLE_READER = 1, SRV_ROLE_WORKER = 2, SRV_ROLE_ADMIN = 3 };

/* The name of a role ("reader", "worker", "admin", "none"); static. */
const char *srv_role_name(int role);

/* The transport's types (rpc.h): a worker thread, a call, a reply in slices. */
typedef struct srv_worker srv_worker;
typedef struct srv_call srv_call;
typedef struct srv_reply srv_reply;

/* Handlers. A unary handler returns a status; on OK it sets *resp (owned by the
 * caller afterwards), else fills err. A call handler owns the call: it finishes
 * it (at once, after a stream, or from another thread) through rpc.h; the Shard
 * handlers are call handlers, since a call that finds its table busy is answered
 * by whichever worker runs the table's queue (coalesce.h). `req` is the request's
 * bytes (empty for a method whose payload is not read with the call), valid
 * until the handler returns. */
typedef int (*srv_unary_fn)(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                            ember_error *err);
typedef void (*srv_call_fn)(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);

/* A row of the method table. Exactly one of shard, unary and call is set. */
typedef struct srv_method_desc {
    const char *path;    /* the gRPC path, "/ember.v1.Shard/Pull" */
    const char *name;    /* in logs and metrics labels, "Pull" */
    int role;            /* SRV_ROLE_* a call needs when authentication is on */
    int payload;         /* 1: the request is read with the call; 0: the handler reads */
    int requests;        /* requests each worker keeps outstanding for it */
    int capped;          /* 1: counts against --max-concurrent-calls */
    int keys_metric;     /* its row of the keys histograms (metrics.c), -1: none */
    uint8_t align[3];    /* the bulk field a gathered request is aligned for
                            (srv_payload_bytes): field numbers, 0-terminated */
    srv_call_fn shard;   /* a Shard method's */
    srv_unary_fn unary;
    srv_call_fn call;
} srv_method_desc;

/* Rows of the keys histograms: the Shard methods that carry keys. */
#define SRV_KEYS_METRICS 4

extern const srv_method_desc srv_methods[SRV_M_COUNT];

/* A method's name as the method table has it ("Pull", "CreateTable",
 * "Health.Check"); "unknown" for SRV_M_UNKNOWN. The string is static. */
const char *srv_method_name(srv_method m);

/* 1 for a method that writes tables (Push, PushPull, Erase, and the Admin
 * methods that create, drop, load, evict, clear, alter, set an epoch or
 * import): what a follower refuses (repl.h). A Pull with insert_missing is
 * refused by its handler. */
int srv_method_writes(srv_method m);

/* The method whose gRPC path is `path`; SRV_M_UNKNOWN when none is. */
srv_method srv_method_of_path(const char *path);

/* ---- the handlers (shard.c, admin.c), named by the table ------------------ */

void srv_shard_pull(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);
void srv_shard_push(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);
/* The table `name` with a reference (srv_table_unref it), after checking the
 * name: INVALID_ARGUMENT (none, or not [a-z0-9_.-]{1,64}), NOT_FOUND (admin.c). */
int srv_table_by_name(const char *name, srv_table **out, ember_error *err);
/* Shard.Erase (erase.c). */
void srv_shard_erase(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);
void srv_shard_pushpull(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);

int srv_admin_create(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err);
int srv_admin_drop(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err);
int srv_admin_list(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err);
int srv_admin_describe(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                       ember_error *err);
int srv_admin_stats(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err);
int srv_admin_load(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err);
int srv_admin_alter(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err);
int srv_admin_evict(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err);
int srv_admin_set_epoch(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                        ember_error *err);
int srv_admin_clear(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err);
int srv_admin_info(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err);
int srv_admin_health(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err);
/* Replication's role changes (repl.h). */
int srv_admin_promote(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                      ember_error *err);
int srv_admin_follow(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err);
/* Admin/Save: finished at once on bad input, else answered later from the
 * checkpointer thread (ckpt.h) when the save ends. */
void srv_admin_save_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);
/* Streams: begin the call's first batch or finish it. */
void srv_admin_export_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);
void srv_admin_import_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len);

#endif

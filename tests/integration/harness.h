/*
 * harness.h — integration-test fixture: real `ember-server` processes on
 * loopback, and a raw gRPC client to call them.
 *
 * Servers: eh_server_start() picks a free 127.0.0.1 port, starts the binary
 * ($EMBER_SERVER_BIN, else the compile definition of that name) with
 * --backend=<eh_backend()> and the given extra flags (a --backend among them
 * wins), its stderr going to a log file, and waits until
 * grpc.health.v1.Health/Check answers SERVING. eh_server_stop() sends SIGTERM
 * or SIGKILL and reaps it; eh_server_restart() starts it again on the same
 * port with the same flags. The process half (ports, spawn, wait, stop) is
 * tests/lib/server_proc.h, which rpc_bench links too.
 *
 * Calls: eh_client is one channel and one completion queue, for one thread at a
 * time. eh_unary() sends one request's bytes and returns the status code,
 * message and reply bytes; eh_server_stream()/eh_client_stream() do the same for
 * Export-like and Import-like methods. Opening a client calls grpc_init() and
 * closing it grpc_shutdown() (reference-counted), so it works inside Check's
 * forked tests.
 *
 * Functions return 0 on success, -1 on a harness failure (a message on stderr);
 * a gRPC error status is a result, not a failure.
 */
#ifndef EMBER_IT_HARNESS_H
#define EMBER_IT_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "server_proc.h" /* sp_free_port, sp_spawn, sp_stop, ... */

#define EH_MAX_FLAGS 32

/* The backend servers are started on: $EMBER_TEST_BACKEND, "cpu" when unset
 * (so tests are the same on a machine with a GPU); "" passes no --backend (the
 * server's default, or $EMBER_BACKEND). */
const char *eh_backend(void);
/* What such a server reports serving: "cpu" or "gpu" (auto resolved here). */
const char *eh_backend_served(void);
/* GPUs visible to this process: 0 where none is, or in a build without CUDA. */
int eh_gpu_count(void);
/* For a test's main(): 1, after a "SKIPPED" line on stderr naming `test`, when
 * servers are to run on gpu but no GPU is visible; the test then exits 77,
 * which ctest counts as skipped (SKIP_RETURN_CODE 77). */
int eh_skip_without_gpu(const char *test);
#define EH_EXIT_SKIP 77

typedef struct eh_server {
    pid_t pid;               /* 0 when not running */
    int port;
    char addr[64];           /* "127.0.0.1:<port>" */
    char log_path[256];      /* the server's stderr */
    int nflags;
    char *flags[EH_MAX_FLAGS];
} eh_server;

/* Starts a server with `flags` (NULL-terminated; may be NULL). Waits up to 20 s
 * for SERVING. */
int eh_server_start(eh_server *s, const char *const *flags);
/* Same as eh_server_start but on a given port (0 = pick one). */
int eh_server_start_on(eh_server *s, int port, const char *const *flags);
/* Sends `sig` (SIGTERM, SIGKILL, ...), waits up to 30 s for the exit and returns
 * the wait status in *wstatus (may be NULL). */
int eh_server_stop(eh_server *s, int sig, int *wstatus);
/* Starts the stopped server again, same port and flags. */
int eh_server_restart(eh_server *s);
/* Stops (SIGKILL) if running, removes the log, frees the flags. */
void eh_server_cleanup(eh_server *s);
/* A new empty directory /tmp/ember-<what>.XXXXXX (malloc'ed; free it), or NULL. */
char *eh_tmpdir(const char *what);
/* Removes dir and everything in it: 0, or -1. */
int eh_rm_rf(const char *dir);
/* The log so far (malloc'ed, NUL-terminated; free it). */
char *eh_server_log(const eh_server *s);

/* Runs `ember-server args...` (NULL-terminated) to completion, with stderr and
 * stdout captured into *output (malloc'ed). Returns the wait status. */
int eh_run_server_cmd(const char *const *args, char **output, int timeout_ms);

typedef struct eh_client eh_client;

typedef struct eh_result {
    int code;              /* gRPC status */
    char message[1024];
    uint8_t *data;         /* the reply (unary / client stream); malloc'ed */
    size_t len;
    size_t messages;       /* server stream: messages received */
} eh_result;

eh_client *eh_client_open(const char *addr);
void eh_client_close(eh_client *c);

/* One unary call. deadline_ms > 0: relative deadline; < 0: a deadline already
 * in the past; 0: 30 s. */
int eh_unary(eh_client *c, const char *method, const void *req, size_t len, int deadline_ms,
             eh_result *out);
/* A server-streaming call: on_msg runs for each reply message. */
int eh_server_stream(eh_client *c, const char *method, const void *req, size_t len,
                     void (*on_msg)(void *ud, const uint8_t *data, size_t len), void *ud,
                     eh_result *out);
/* A client-streaming call: sends n messages, then half-closes. */
int eh_client_stream(eh_client *c, const char *method, const void *const *msgs,
                     const size_t *lens, size_t n, eh_result *out);
void eh_result_free(eh_result *r);

/* A client-streaming call left open: started, its initial metadata and one
 * message (`msg`, `len` bytes) sent, not half-closed, so the server holds it in
 * progress waiting for the next (a message, not headers alone: gRPC's client
 * may hold back the headers of a stream that has nothing else to send). NULL on
 * a harness failure. eh_call_cancel cancels and frees it. No batch stays
 * pending on the client's queue, so the client's other calls work meanwhile. */
typedef struct eh_call eh_call;
eh_call *eh_call_open(eh_client *c, const char *method, const void *msg, size_t len);
void eh_call_cancel(eh_call *call);

/* The port of a server started with --metrics-listen=127.0.0.1:0, from its last
 * event=metrics_listening log line (logged at info; a restart logs another); 0
 * if there is none. */
int eh_metrics_port(const eh_server *s);
/* `METHOD path HTTP/1.0` to 127.0.0.1:port: the whole reply, status line and
 * headers included, into *reply (malloc'ed, NUL-terminated). 0, or -1 when no
 * connection or no memory. */
int eh_http(int port, const char *method, const char *path, char **reply);

/* The value of the sample `series` (e.g. "ember_live_calls") in the /metrics of
 * a server started with --metrics-listen=127.0.0.1:0 (the port is read from its
 * log); -1 when the endpoint or the sample cannot be read. A scrape is plain
 * HTTP, not a gRPC call: it changes no call count. */
double eh_metric(const eh_server *s, const char *series);
/* Polls eh_metric every 10 ms until it equals `want`, for up to timeout_ms;
 * returns the last value read. */
double eh_metric_wait(const eh_server *s, const char *series, double want, int timeout_ms);

/* Health/Check: 1 when SERVING. */
int eh_health_serving(eh_client *c, int deadline_ms);

/* Every row of `table` at `addr` ("host:port"), from a full-row Admin/Export,
 * sorted by key, as bytes: per row its key, score and version (uint64 each)
 * and its floats; so two servers hold the same rows exactly when the bytes are
 * equal. *out (malloc'ed; free it), *len, *rows. Returns the Export's status
 * (0; NOT_FOUND for no such table), or -1 on a harness failure. */
int eh_table_rows(const char *addr, const char *table, uint8_t **out, size_t *len,
                  size_t *rows);
/* Waits up to timeout_s until servers a and b hold exactly the same rows of
 * `table` (replication: a leader and its follower). 1 when they do (*rows, may
 * be NULL: how many), 0 when not by then (both row counts on stderr). */
int eh_tables_converge(const char *a, const char *b, const char *table, int timeout_s,
                       size_t *rows);

#endif

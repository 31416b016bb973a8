/*
 * server_proc.h — ember-server processes for tests and benchmarks: a free
 * loopback port, the binary to run, a child started with its output in a log,
 * the wait until it answers grpc.health.v1.Health/Check SERVING, the stop and
 * its exit status. Written once for the integration harness
 * (tests/integration/harness.h), the soak test and rpc_bench.
 *
 * It links gRPC's C core only (for the health check), never storage/, cuda/ or
 * server/: rpc_bench, which links only the public libember, links it too.
 *
 * Functions are for one thread at a time (the spawn and wait calls may run on
 * several threads for different children). They report on stderr only where
 * said.
 */
#ifndef EMBER_SERVER_PROC_H
#define EMBER_SERVER_PROC_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A free TCP port on 127.0.0.1 (bound and released: a small race, which the
 * callers retry on another port), or -1. */
int sp_free_port(void);

/* 1 if `path` is a regular file this process may execute. */
int sp_is_executable(const char *path);
/* `prog` found beside this program (a packed copy travels next to it: 1) or
 * in $PATH (2), its path into out; 0 if neither. */
int sp_find_program(const char *prog, char *out, size_t cap);
/* The ember-server binary to run: `given` (a command-line flag) when not
 * NULL, else $EMBER_SERVER_BIN when set, else `built` (the build's own) when
 * executable, else an ember-server beside this program, else one in $PATH,
 * else `built`. *from (may be NULL) says which: "--server",
 * "$EMBER_SERVER_BIN", "this build's", "beside this program", "$PATH" or "not
 * found". The string returned is `given`, the environment's, `built` or a
 * static buffer. */
const char *sp_server_bin(const char *given, const char *built, const char **from);

/* sp_spawn flags. */
enum {
    SP_LOG_TRUNCATE = 1, /* truncate the log (default: append to it) */
    SP_OWN_GROUP = 2,    /* its own process group, so that a signal to the caller's
                          * group (^C, timeout(1)) is for the caller, which then stops
                          * it in order; and killed (SIGKILL) when the caller dies */
    SP_STDERR_NULL = 4,  /* stderr to /dev/null, only stdout to the log */
};

/* Starts argv[0] with argv (NULL-terminated), its stdout and stderr in
 * `log_path` ("/dev/null" for none), the signal mask cleared, and the "K=V"
 * strings of env (NULL-terminated, may be NULL) added to its environment. A
 * binary that cannot run exits 127 (the reason in the log). Returns the pid,
 * or -1 when fork failed (errno). */
pid_t sp_spawn(const char *const *argv, const char *const *env, const char *log_path, int flags);

/* Whether child `pid` has exited: 1 (reaped, its wait status in *wstatus, which
 * may be NULL), 0 while it runs, -1 when it is not a child of this process. */
int sp_exited(pid_t pid, int *wstatus);
/* Waits up to timeout_s for child `pid` to exit: 0 (reaped, *wstatus set), or
 * -1 when it still runs (or is no child). */
int sp_wait_exit(pid_t pid, double timeout_s, int *wstatus);
/* Sends `sig` to child `pid` and waits up to timeout_s for it to exit; if it
 * has not, SIGKILL and reap. 0 when it exited in time, 1 when it had to be
 * killed, -1 when it is no child; *wstatus (may be NULL): the wait status. */
int sp_stop(pid_t pid, int sig, double timeout_s, int *wstatus);

/* Waits until the server on 127.0.0.1:port answers Health/Check SERVING: first
 * until the port accepts a connection (a gRPC channel that fails to connect
 * backs off for about a second), then by health checks. 0 when serving; -1
 * when child `pid` exited meanwhile (reaped, *wstatus set; may be NULL); -2
 * when timeout_s ran out (it still runs). */
int sp_wait_serving(pid_t pid, int port, double timeout_s, int *wstatus);
/* One Health/Check of the server at `addr` ("host:port") over an insecure
 * channel: 1 when SERVING, 0 otherwise. */
int sp_health_serving(const char *addr, int deadline_ms);
/* 1 if a Health/Check reply's bytes say SERVING (HealthCheckResponse{status =
 * SERVING}: field 1, varint 1). */
int sp_health_reply_serving(const uint8_t *data, size_t len);

/* Fills ops[0..3) with the receive half of a client call: the initial
 * metadata into md, one message into *recv (NULL when none comes), the status
 * into tmd, st and details. */
void sp_recv_ops(grpc_op *ops, grpc_metadata_array *md, grpc_byte_buffer **recv,
                 grpc_metadata_array *tmd, grpc_status_code *st, grpc_slice *details);

/* Raw gRPC calls, as the health check and the integration harness make them.
 *
 * sp_unary: one unary call of `method` on channel ch, its events on cq (used
 * by one thread at a time; other events that come meanwhile are dropped):
 * sends `len` bytes of req and waits until the call ends or `deadline`
 * passes. 0 with *code the gRPC status, its message in msg (msg_cap bytes,
 * NUL-terminated; msg may be NULL) and the reply in *data (malloc'ed, NULL
 * when none; free it) and *data_len; -1 when the call could not be started. */
int sp_unary(grpc_channel *ch, grpc_completion_queue *cq, const char *method, const void *req,
             size_t len, gpr_timespec deadline, int *code, char *msg, size_t msg_cap,
             uint8_t **data, size_t *data_len);
/* A received message's bytes, flattened into *data (malloc'ed; NULL, 0 for no
 * message). */
void sp_flatten(grpc_byte_buffer *bb, uint8_t **data, size_t *len);
/* A status message into msg (cap bytes, NUL-terminated, cut if longer); unrefs
 * `details`. */
void sp_status_message(grpc_slice details, char *msg, size_t cap);

/* Runs argv to completion (killed after timeout_s), its stdout, and its stderr
 * unless flags has SP_STDERR_NULL, into *output (malloc'ed, NUL-terminated;
 * may be NULL). flags as sp_spawn's (SP_LOG_TRUNCATE is implied). Returns the
 * wait status, or -1 when it could not be started. */
int sp_run(const char *const *argv, int flags, double timeout_s, char **output);

/* The whole file (malloc'ed, NUL-terminated); "" when it cannot be read, NULL
 * only without memory. */
char *sp_read_file(const char *path);
/* The last 4 KiB of the file at `path`, framed, on stderr (nothing if it
 * cannot be read). */
void sp_print_log_tail(const char *path);

/* Monotonic seconds, and a sleep that resumes after signals. */
double sp_now_s(void);
void sp_sleep_s(double s);

#endif

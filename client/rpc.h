/*
 * rpc.h — a small helper over gRPC C core for libember's admin calls and emberctl.
 *
 * Channels are plain `grpc_channel *`s: open one per "host:port" target, call
 * methods on it by their full gRPC path ("/ember.v1.Admin/ListTables"), close it.
 * Messages go in and come out as serialized protobuf bytes; encode and decode them
 * with the protoc-c code in ember_proto (ember/v1/ember.pb-c.h) or proto/wire.h.
 *
 * Every call has a deadline (timeout_ms; ≤ 0 means EMBER_RPC_DEFAULT_TIMEOUT_MS).
 * Calls return the gRPC status code (0 = OK; the ember_status codes of
 * <ember/types.h> are the same numbers, checked in rpc.c) and, on failure, fill
 * the optional `ember_error *` with that code, shard -1 and the status message
 * ("<CODE_NAME>: <details>" when the peer sent none). A message that cannot be
 * handed over (out of memory) is EMBER_RESOURCE_EXHAUSTED.
 *
 * Unary and stream calls pluck on a private completion queue, so they make their
 * own network progress in the calling thread and need no poller thread.
 *
 * Thread-safety: a channel may be shared by any number of threads; each call and
 * each stream belongs to the thread that uses it. gRPC is initialised by
 * ember_rpc_channel_open (grpc_init is reference-counted) and released by
 * ember_rpc_channel_close; hold a channel open, or call grpc_init yourself, for as
 * long as you use gRPC.
 */
#ifndef EMBER_CLIENT_RPC_H
#define EMBER_CLIENT_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "ember/ember.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_RPC_DEFAULT_TIMEOUT_MS 10000

typedef struct ember_rpc_channel_options {
    /* Largest message received, bytes. 0: unlimited (gRPC's own default is 4 MiB,
     * too small for a 65,536 × dim 64 pull). */
    int max_receive_bytes;
    /* 1: a TCP connection of this channel's own (GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL).
     * Channels to one target with equal args otherwise share one connection; open
     * several with this set to spread calls over several connections. */
    int own_connection;
    /* Longest wait between reconnection attempts to a down server, ms (0: 1,000).
     * gRPC's default grows to 120 s, which would keep a restarted shard unused
     * long after it is back. */
    int max_reconnect_backoff_ms;
    /* TLS, when tls_ca or tls_cert is set: PEM file paths of the CA that signed
     * the server's certificate (NULL: gRPC's default roots), and of this client's
     * certificate and key for mutual TLS (both or neither). tls_server_name, when
     * set, is the name the server's certificate must carry instead of the
     * target's host. */
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
    /* Sent as `authorization: Bearer <token>` with every call (NULL: none). Over
     * plaintext too, where a NetworkPolicy is the only protection: prefer TLS. */
    const char *token;
} ember_rpc_channel_options;

/* Fills `o` with the defaults above (all 0). */
void ember_rpc_channel_options_init(ember_rpc_channel_options *o);

/* Checks that `target` is "host:port" (host may be a name, IPv4, or [IPv6]; port
 * 1..65535), or a gRPC URI with a scheme gRPC resolves ("dns:", "ipv4:",
 * "ipv6:", "unix:", "unix-abstract:"), which is passed through unchecked.
 * Returns 0 or EMBER_INVALID_ARGUMENT naming the target. */
int ember_rpc_target_check(const char *target, ember_error *err);

/* Opens a channel to `target` (checked as above; NULL options: defaults),
 * plaintext or TLS as the options say. Connects lazily: a down server, or one
 * whose TLS handshake fails, shows as UNAVAILABLE on the first call. Returns
 * NULL and fills `err`: INVALID_ARGUMENT for a bad target, a TLS file that
 * cannot be read, a certificate without its key.
 * Close with ember_rpc_channel_close. */
grpc_channel *ember_rpc_channel_open(const char *target,
                                     const ember_rpc_channel_options *o, ember_error *err);

/* Reads a token file into tok[0..cap) (NUL-terminated, trailing whitespace
 * dropped). Returns 0, or INVALID_ARGUMENT (unreadable, empty, too long). */
int ember_rpc_read_token(const char *path, char *tok, size_t cap, ember_error *err);

/* Destroys the channel (calls still in flight on it are cancelled) and releases
 * this channel's reference to gRPC. NULL is a no-op. */
void ember_rpc_channel_close(grpc_channel *ch);

/* The absolute deadline `timeout_ms` from now (≤ 0: the default), on gRPC's
 * monotonic clock, for grpc_channel_create_call. */
gpr_timespec ember_rpc_deadline(int timeout_ms);

/* One unary call: sends req[0..req_len) to `method` ("/ember.v1.Admin/ListTables")
 * and waits for the reply or the deadline. On OK, *resp is a malloc'ed copy of the
 * reply (free() it; NULL when the reply is empty) and *resp_len its length; on
 * failure *resp is NULL and *resp_len 0.
 * Returns the gRPC status: OK, DEADLINE_EXCEEDED, UNAVAILABLE (server down or
 * unreachable), UNIMPLEMENTED (unknown method), or whatever the server sent. */
int ember_rpc_unary(grpc_channel *ch, const char *method, const void *req, size_t req_len,
                    int timeout_ms, uint8_t **resp, size_t *resp_len, ember_error *err);

/* ---- server stream (Admin/Export) ------------------------------------------ */

typedef struct ember_rpc_stream ember_rpc_stream;

/* Starts a server-streaming call: sends the one request and half-closes. The
 * deadline covers the whole stream. Returns NULL and fills `err` if the call
 * cannot start (RESOURCE_EXHAUSTED, INTERNAL); a server error shows on the first
 * ember_rpc_stream_read instead. */
ember_rpc_stream *ember_rpc_stream_open(grpc_channel *ch, const char *method, const void *req,
                                        size_t req_len, int timeout_ms, ember_error *err);

/* Reads the next message. Returns 0 with *msg a malloc'ed message (free() it) and
 * *len its length (an empty message: *msg non-NULL, *len 0); 0 with *msg NULL at
 * the end of a stream that finished OK; otherwise the call's gRPC status (the
 * stream is then over; further reads return the same status). */
int ember_rpc_stream_read(ember_rpc_stream *s, uint8_t **msg, size_t *len, ember_error *err);

/* Ends the stream, cancelling the call if the server has not finished it, and
 * frees it. NULL is a no-op. */
void ember_rpc_stream_close(ember_rpc_stream *s);

/* ---- client stream (Admin/Import) ------------------------------------------ */

typedef struct ember_rpc_upload ember_rpc_upload;

/* Starts a client-streaming call to `method`; the deadline covers the whole call.
 * Returns NULL and fills `err` if it cannot start. */
ember_rpc_upload *ember_rpc_upload_open(grpc_channel *ch, const char *method, int timeout_ms,
                                        ember_error *err);

/* Sends one message (copied; the buffer is the caller's again on return). Returns
 * 0, or the call's status when the server has already ended it (then call
 * ember_rpc_upload_finish for the status message). */
int ember_rpc_upload_write(ember_rpc_upload *u, const void *msg, size_t len, ember_error *err);

/* Half-closes, waits for the server's single reply and status, and frees `u`.
 * Same return and *resp rules as ember_rpc_unary. */
int ember_rpc_upload_finish(ember_rpc_upload *u, uint8_t **resp, size_t *resp_len,
                            ember_error *err);

/* ---- shared by the library's own async calls -------------------------------- */

/* Copies a received byte buffer into one malloc'ed block (*out NULL when empty).
 * Returns 0 or EMBER_RESOURCE_EXHAUSTED. Does not destroy `bb`. */
int ember_rpc_buffer_copy(grpc_byte_buffer *bb, uint8_t **out, size_t *len);

/* Fills `err` from a finished call's status and details ("<CODE>: ..." when the
 * details are empty); `prefix` (may be NULL) goes in front, e.g. "shard 1
 * (h:p): ". Returns `code`. */
int ember_rpc_status_error(ember_error *err, int shard, const char *prefix,
                           grpc_status_code code, grpc_slice details);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CLIENT_RPC_H */

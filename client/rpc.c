/*
 * rpc.c — channels, unary calls and streams over gRPC C core (see rpc.h).
 *
 * Each call here owns a private pluck completion queue: the calling thread drives
 * the network while it waits, so callers need no poller thread, and a call can
 * never be starved by other work queued on a shared queue.
 */
#include "client/rpc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/string_util.h>
#include <grpc/support/time.h>

/* ember_status (<ember/types.h>) is gRPC's status codes by number: the library
 * and the servers hand one for the other without translation. */
#define EMBER_SAME_AS_GRPC(name) \
    _Static_assert((int)EMBER_##name == (int)GRPC_STATUS_##name, "EMBER_" #name " is gRPC's")
EMBER_SAME_AS_GRPC(OK);
EMBER_SAME_AS_GRPC(CANCELLED);
EMBER_SAME_AS_GRPC(UNKNOWN);
EMBER_SAME_AS_GRPC(INVALID_ARGUMENT);
EMBER_SAME_AS_GRPC(DEADLINE_EXCEEDED);
EMBER_SAME_AS_GRPC(NOT_FOUND);
EMBER_SAME_AS_GRPC(ALREADY_EXISTS);
EMBER_SAME_AS_GRPC(PERMISSION_DENIED);
EMBER_SAME_AS_GRPC(RESOURCE_EXHAUSTED);
EMBER_SAME_AS_GRPC(FAILED_PRECONDITION);
EMBER_SAME_AS_GRPC(ABORTED);
EMBER_SAME_AS_GRPC(OUT_OF_RANGE);
EMBER_SAME_AS_GRPC(UNIMPLEMENTED);
EMBER_SAME_AS_GRPC(INTERNAL);
EMBER_SAME_AS_GRPC(UNAVAILABLE);
EMBER_SAME_AS_GRPC(DATA_LOSS);
EMBER_SAME_AS_GRPC(UNAUTHENTICATED);

void ember_rpc_channel_options_init(ember_rpc_channel_options *o)
{
    memset(o, 0, sizeof *o);
}

static int port_ok(const char *p)
{
    if (!*p || strlen(p) > 5)
        return 0;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return 0;
    long v = strtol(p, NULL, 10);
    return v >= 1 && v <= 65535;
}

int ember_rpc_target_check(const char *target, ember_error *err)
{
    static const char *const schemes[] = {"dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:"};
    if (!target || !*target)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "empty shard address");
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(target, schemes[i], strlen(schemes[i])) == 0)
            return 0;
    const char *colon;
    int host_ok;
    if (target[0] == '[') {
        const char *close = strchr(target, ']');
        colon = close ? close + 1 : NULL;
        host_ok = close && close > target + 1 && *colon == ':';
    } else {
        colon = strrchr(target, ':');
        host_ok = colon && colon > target && memchr(target, ':', (size_t)(colon - target)) == NULL;
        for (const char *q = target; host_ok && q < colon; q++)
            if (isspace((unsigned char)*q) || *q == '/' || *q == ',')
                host_ok = 0;
    }
    if (!host_ok || !port_ok(colon + 1))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "bad shard address '%s': want host:port (port 1..65535)",
                               target);
    return 0;
}

/* Reads a PEM file whole (malloc'ed, NUL-terminated). NULL and err on failure. */
static char *read_pem(const char *path, const char *what, ember_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s %s: %s", what, path,
                        strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20;
    char *p = malloc(cap);
    size_t n = p ? fread(p, 1, cap, f) : 0;
    int bad = !p || ferror(f) || n >= cap;
    fclose(f);
    if (bad) {
        if (p)
            memset(p, 0, cap);
        free(p);
        ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s %s: unreadable or over 1 MiB",
                        what, path);
        return NULL;
    }
    p[n] = '\0';
    return p;
}

static void free_secret(char *p)
{
    if (p) {
        memset(p, 0, strlen(p));
        free(p);
    }
}

/* The token as call credentials: a synchronous plugin that adds the header to
 * every call. Security level NONE so that it works over plaintext channels too
 * (gRPC's own access-token credentials refuse those). */
static int token_get_metadata(void *state, grpc_auth_metadata_context ctx,
                              grpc_credentials_plugin_metadata_cb cb, void *user_data,
                              grpc_metadata md[GRPC_METADATA_CREDENTIALS_PLUGIN_SYNC_MAX],
                              size_t *n, grpc_status_code *status, const char **details)
{
    (void)ctx, (void)cb, (void)user_data;
    md[0].key = grpc_slice_from_static_string("authorization");
    md[0].value = grpc_slice_from_copied_string(state);
    *n = 1;
    *status = GRPC_STATUS_OK;
    *details = NULL;
    return 1;
}

static char *token_debug(void *state)
{
    (void)state;
    return gpr_strdup("ember bearer token");
}

static void token_destroy(void *state) { free_secret(state); }

static grpc_channel_credentials *channel_credentials(const ember_rpc_channel_options *o,
                                                     ember_error *err)
{
    grpc_channel_credentials *ch;
    if (!!o->tls_cert != !!o->tls_key) {
        ember_error_set(err, EMBER_INVALID_ARGUMENT,
                        "a TLS client certificate needs its key, and a key its certificate");
        return NULL;
    }
    if (o->tls_ca || o->tls_cert) {
        char *ca = NULL, *cert = NULL, *key = NULL;
        if ((o->tls_ca && !(ca = read_pem(o->tls_ca, "TLS CA", err))) ||
            (o->tls_cert && !(cert = read_pem(o->tls_cert, "TLS certificate", err))) ||
            (o->tls_key && !(key = read_pem(o->tls_key, "TLS key", err)))) {
            free(ca);
            free(cert);
            free_secret(key);
            return NULL;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        ch = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
        free(ca);
        free(cert);
        free_secret(key);
    } else {
        ch = grpc_insecure_credentials_create();
    }
    if (!ch) {
        ember_error_set(err, EMBER_INVALID_ARGUMENT, "gRPC refused the TLS files");
        return NULL;
    }
    if (!o->token || !*o->token)
        return ch;
    size_t tl = strlen(o->token);
    char *hdr = malloc(tl + 8);
    if (!hdr) {
        grpc_channel_credentials_release(ch);
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    memcpy(hdr, "Bearer ", 7);
    memcpy(hdr + 7, o->token, tl + 1);
    grpc_metadata_credentials_plugin plugin = {.get_metadata = token_get_metadata,
                                               .debug_string = token_debug,
                                               .destroy = token_destroy,
                                               .state = hdr,
                                               .type = "ember_token"};
    grpc_call_credentials *call =
        grpc_metadata_credentials_create_from_plugin(plugin, GRPC_SECURITY_NONE, NULL);
    grpc_channel_credentials *both = grpc_composite_channel_credentials_create(ch, call, NULL);
    grpc_call_credentials_release(call);
    grpc_channel_credentials_release(ch);
    if (!both)
        ember_error_set(err, EMBER_INTERNAL, "cannot combine the token with the channel");
    return both;
}

grpc_channel *ember_rpc_channel_open(const char *target, const ember_rpc_channel_options *o,
                                     ember_error *err)
{
    ember_rpc_channel_options def;
    if (!o) {
        ember_rpc_channel_options_init(&def);
        o = &def;
    }
    if (ember_rpc_target_check(target, err) != 0)
        return NULL;

    int backoff_max = o->max_reconnect_backoff_ms > 0 ? o->max_reconnect_backoff_ms : 1000;
    int backoff_initial = backoff_max < 100 ? backoff_max : 100;
    grpc_arg args[5];
    size_t nargs = 0;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[nargs++].value.integer = o->max_receive_bytes > 0 ? o->max_receive_bytes : -1;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[nargs++].value.integer = backoff_max;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[nargs++].value.integer = backoff_initial;
    if (o->own_connection) {
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        args[nargs++].value.integer = 1;
    }
    if (o->tls_server_name && *o->tls_server_name) {
        args[nargs].type = GRPC_ARG_STRING;
        args[nargs].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[nargs++].value.string = (char *)o->tls_server_name;
    }
    grpc_channel_args cargs = {.num_args = nargs, .args = args};

    grpc_init();
    grpc_channel_credentials *creds = channel_credentials(o, err);
    if (!creds) {
        grpc_shutdown();
        return NULL;
    }
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (!ch) {
        grpc_shutdown();
        ember_error_set(err, EMBER_INTERNAL, "cannot create a channel to '%s'", target);
    }
    return ch;
}

int ember_rpc_read_token(const char *path, char *tok, size_t cap, ember_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "token file %s: %s", path,
                               strerror(errno));
    size_t n = fread(tok, 1, cap, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n >= cap) {
        memset(tok, 0, cap);
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "token file %s: unreadable or over %zu bytes", path, cap - 1);
    }
    while (n && strchr(" \t\r\n", tok[n - 1]))
        n--;
    tok[n] = '\0';
    if (!n)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "token file %s is empty",
                               path);
    return 0;
}

void ember_rpc_channel_close(grpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch);
    grpc_shutdown();
}

gpr_timespec ember_rpc_deadline(int timeout_ms)
{
    if (timeout_ms <= 0)
        timeout_ms = EMBER_RPC_DEFAULT_TIMEOUT_MS;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int ember_rpc_buffer_copy(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!bb)
        return 0;
    size_t n = grpc_byte_buffer_length(bb);
    if (n == 0)
        return 0;
    uint8_t *p = malloc(n);
    if (!p)
        return EMBER_RESOURCE_EXHAUSTED;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) {
        free(p);
        return EMBER_INTERNAL;
    }
    size_t at = 0;
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&rd, &s)) {
        size_t sl = GRPC_SLICE_LENGTH(s);
        if (at + sl <= n)
            memcpy(p + at, GRPC_SLICE_START_PTR(s), sl);
        at += sl;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    if (at != n) { /* a compressed buffer would decompress to another length */
        free(p);
        return EMBER_INTERNAL;
    }
    *out = p;
    *len = n;
    return 0;
}

int ember_rpc_status_error(ember_error *err, int shard, const char *prefix,
                           grpc_status_code code, grpc_slice details)
{
    if (code == GRPC_STATUS_OK) {
        ember_error_clear(err);
        return 0;
    }
    size_t dl = GRPC_SLICE_LENGTH(details);
    if (dl > 400)
        dl = 400;
    if (dl)
        ember_error_set(err, (int)code, "%s%.*s", prefix ? prefix : "", (int)dl,
                        (const char *)GRPC_SLICE_START_PTR(details));
    else
        ember_error_set(err, (int)code, "%s%s", prefix ? prefix : "",
                        ember_status_name((int)code));
    if (err)
        err->shard = shard;
    return (int)code;
}

/* A call on a private pluck queue. */
typedef struct rpc_call {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    int have_status;
} rpc_call;

static int rpc_call_start(rpc_call *rc, grpc_channel *ch, const char *method, int timeout_ms,
                          ember_error *err)
{
    memset(rc, 0, sizeof *rc);
    rc->details = grpc_empty_slice();
    grpc_metadata_array_init(&rc->initial_md);
    grpc_metadata_array_init(&rc->trailing_md);
    rc->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!rc->cq)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "no completion queue");
    grpc_slice m = grpc_slice_from_copied_string(method);
    rc->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, rc->cq, m, NULL,
                                        ember_rpc_deadline(timeout_ms), NULL);
    grpc_slice_unref(m);
    if (!rc->call) {
        grpc_completion_queue_shutdown(rc->cq);
        grpc_completion_queue_destroy(rc->cq);
        rc->cq = NULL;
        return ember_error_set(err, EMBER_INTERNAL, "cannot create call %s", method);
    }
    return 0;
}

/* Runs one batch and waits for it. Returns the batch's success flag. */
static int rpc_call_batch(rpc_call *rc, grpc_op *ops, size_t n, void *tag)
{
    if (grpc_call_start_batch(rc->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return 0;
    grpc_event ev = grpc_completion_queue_pluck(rc->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void rpc_call_recv_status(rpc_call *rc)
{
    if (rc->have_status)
        return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &rc->trailing_md;
    op.data.recv_status_on_client.status = &rc->status;
    op.data.recv_status_on_client.status_details = &rc->details;
    if (!rpc_call_batch(rc, &op, 1, (void *)rc)) {
        rc->status = GRPC_STATUS_INTERNAL;
        grpc_slice_unref(rc->details);
        rc->details = grpc_slice_from_static_string("lost the call's status");
    }
    rc->have_status = 1;
}

static void rpc_call_end(rpc_call *rc)
{
    if (rc->call) {
        if (!rc->have_status)
            grpc_call_cancel(rc->call, NULL);
        grpc_call_unref(rc->call);
    }
    grpc_metadata_array_destroy(&rc->initial_md);
    grpc_metadata_array_destroy(&rc->trailing_md);
    grpc_slice_unref(rc->details);
    if (rc->cq) {
        grpc_completion_queue_shutdown(rc->cq);
        grpc_completion_queue_destroy(rc->cq);
    }
}

static grpc_byte_buffer *make_buffer(const void *p, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

int ember_rpc_unary(grpc_channel *ch, const char *method, const void *req, size_t req_len,
                    int timeout_ms, uint8_t **resp, size_t *resp_len, ember_error *err)
{
    *resp = NULL;
    *resp_len = 0;
    rpc_call rc;
    int rv = rpc_call_start(&rc, ch, method, timeout_ms, err);
    if (rv != 0)
        return rv;

    grpc_byte_buffer *send = make_buffer(req ? req : "", req_len);
    grpc_byte_buffer *recv = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &rc.initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &rc.trailing_md;
    ops[5].data.recv_status_on_client.status = &rc.status;
    ops[5].data.recv_status_on_client.status_details = &rc.details;
    if (grpc_call_start_batch(rc.call, ops, 6, (void *)&rc, NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(send);
        rpc_call_end(&rc);
        return ember_error_set(err, EMBER_INTERNAL, "cannot start call %s", method);
    }
    /* The batch always completes: at the latest when the deadline cancels the call. */
    grpc_completion_queue_pluck(rc.cq, (void *)&rc, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    rc.have_status = 1;
    grpc_byte_buffer_destroy(send);

    rv = ember_rpc_status_error(err, -1, NULL, rc.status, rc.details);
    if (rv == 0 && ember_rpc_buffer_copy(recv, resp, resp_len) != 0)
        rv = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                             "cannot copy the %zu-byte reply of %s",
                             grpc_byte_buffer_length(recv), method);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    rpc_call_end(&rc);
    return rv;
}

/* ---- server stream ----------------------------------------------------------- */

struct ember_rpc_stream {
    rpc_call rc;
    int done;
    int code;
    ember_error last;
};

ember_rpc_stream *ember_rpc_stream_open(grpc_channel *ch, const char *method, const void *req,
                                        size_t req_len, int timeout_ms, ember_error *err)
{
    ember_rpc_stream *s = calloc(1, sizeof *s);
    if (!s) {
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (rpc_call_start(&s->rc, ch, method, timeout_ms, err) != 0) {
        free(s);
        return NULL;
    }
    grpc_byte_buffer *send = make_buffer(req ? req : "", req_len);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->rc.initial_md;
    /* A failed batch (server down) is not an error here: the status, read on the
     * first ember_rpc_stream_read, says what happened. */
    rpc_call_batch(&s->rc, ops, 4, (void *)s);
    grpc_byte_buffer_destroy(send);
    return s;
}

int ember_rpc_stream_read(ember_rpc_stream *s, uint8_t **msg, size_t *len, ember_error *err)
{
    *msg = NULL;
    *len = 0;
    if (!s->done) {
        grpc_byte_buffer *recv = NULL;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &recv;
        if (rpc_call_batch(&s->rc, &op, 1, (void *)s) && recv) {
            int rv = ember_rpc_buffer_copy(recv, msg, len);
            grpc_byte_buffer_destroy(recv);
            if (rv != 0)
                return ember_error_set(err, rv, "cannot copy a stream message");
            if (!*msg) { /* an empty message is still a message */
                *msg = malloc(1);
                if (!*msg)
                    return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                                           "out of memory");
            }
            return 0;
        }
        if (recv)
            grpc_byte_buffer_destroy(recv);
        rpc_call_recv_status(&s->rc);
        s->done = 1;
        s->code = ember_rpc_status_error(&s->last, -1, NULL, s->rc.status, s->rc.details);
    }
    if (err)
        *err = s->last;
    return s->code;
}

void ember_rpc_stream_close(ember_rpc_stream *s)
{
    if (!s)
        return;
    rpc_call_end(&s->rc);
    free(s);
}

/* ---- client stream ----------------------------------------------------------- */

struct ember_rpc_upload {
    rpc_call rc;
    int broken; /* a write failed: the server has ended the call */
};

ember_rpc_upload *ember_rpc_upload_open(grpc_channel *ch, const char *method, int timeout_ms,
                                        ember_error *err)
{
    ember_rpc_upload *u = calloc(1, sizeof *u);
    if (!u) {
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (rpc_call_start(&u->rc, ch, method, timeout_ms, err) != 0) {
        free(u);
        return NULL;
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    if (!rpc_call_batch(&u->rc, &op, 1, (void *)u))
        u->broken = 1;
    return u;
}

int ember_rpc_upload_write(ember_rpc_upload *u, const void *msg, size_t len, ember_error *err)
{
    if (!u->broken) {
        grpc_byte_buffer *send = make_buffer(msg ? msg : "", len);
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = send;
        int ok = rpc_call_batch(&u->rc, &op, 1, (void *)u);
        grpc_byte_buffer_destroy(send);
        if (ok)
            return 0;
        u->broken = 1;
    }
    rpc_call_recv_status(&u->rc);
    int code = ember_rpc_status_error(err, -1, NULL, u->rc.status, u->rc.details);
    return code ? code : ember_error_set(err, EMBER_UNKNOWN,
                                         "the server ended the upload early");
}

int ember_rpc_upload_finish(ember_rpc_upload *u, uint8_t **resp, size_t *resp_len,
                            ember_error *err)
{
    *resp = NULL;
    *resp_len = 0;
    grpc_byte_buffer *recv = NULL;
    if (!u->broken) {
        grpc_op ops[3];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[1].data.recv_initial_metadata.recv_initial_metadata = &u->rc.initial_md;
        ops[2].op = GRPC_OP_RECV_MESSAGE;
        ops[2].data.recv_message.recv_message = &recv;
        rpc_call_batch(&u->rc, ops, 3, (void *)u);
    }
    rpc_call_recv_status(&u->rc);
    int rv = ember_rpc_status_error(err, -1, NULL, u->rc.status, u->rc.details);
    if (rv == 0 && ember_rpc_buffer_copy(recv, resp, resp_len) != 0)
        rv = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "cannot copy the reply");
    if (recv)
        grpc_byte_buffer_destroy(recv);
    rpc_call_end(&u->rc);
    free(u);
    return rv;
}

/*
 * shards.c — emberctl's shard list and fan-out (see ctl.h).
 *
 * An admin call goes to every selected shard at once, one thread per shard, so a
 * command against N shards takes as long as the slowest shard, not the sum, and
 * a shard that is down costs one deadline, not one per shard in front of it.
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "client/rpc.h"

int ctl_shards_parse(ctl *c, const char *list, int only)
{
    char *copy;
    unsigned n = 1;

    c->shards = NULL;
    c->n = c->count = 0;
    if (!list || !*list) {
        fprintf(stderr, "emberctl: no shards: give --shards host:port,... or set EMBER_SHARDS\n");
        return CTL_EXIT_USAGE;
    }
    for (const char *p = list; *p; p++)
        n += *p == ',';
    copy = strdup(list);
    c->shards = calloc(n, sizeof *c->shards);
    if (!copy || !c->shards) {
        fprintf(stderr, "emberctl: out of memory\n");
        goto fail;
    }
    /* Every entry counts, empty ones too: the position in the list is the shard
     * index, so "a,,b" is refused rather than read as two shards. */
    for (char *tok = copy, *next; tok; tok = next) {
        ember_error err;
        next = strchr(tok, ',');
        if (next)
            *next++ = '\0';
        while (*tok == ' ')
            tok++;
        for (size_t l = strlen(tok); l && tok[l - 1] == ' '; l--)
            tok[l - 1] = '\0';
        if (ember_rpc_target_check(tok, &err) != 0) {
            fprintf(stderr, "emberctl: shard %u in '%s': %s\n", c->count, list, err.message);
            goto fail;
        }
        c->shards[c->count].index = c->count;
        if (!(c->shards[c->count++].address = strdup(tok))) {
            fprintf(stderr, "emberctl: out of memory\n");
            goto fail;
        }
    }
    free(copy);
    c->n = c->count;
    if (only >= 0) {
        if ((unsigned)only >= c->count) {
            fprintf(stderr, "emberctl: --shard %d: the list has %u shard%s (0..%u)\n", only,
                    c->count, c->count == 1 ? "" : "s", c->count - 1);
            ctl_shards_close(c);
            return CTL_EXIT_USAGE;
        }
        /* Keep only the chosen one, at the front; free the others' addresses. */
        ctl_shard keep = c->shards[only];
        for (unsigned i = 0; i < c->count; i++)
            if (i != (unsigned)only)
                free(c->shards[i].address);
        c->shards[0] = keep;
        c->n = 1;
    }
    return 0;

fail:
    free(copy);
    c->n = c->count;
    ctl_shards_close(c);
    return CTL_EXIT_USAGE;
}

int ctl_shards_open(ctl *c)
{
    ember_rpc_channel_options o;
    ember_rpc_channel_options_init(&o);
    o.tls_ca = c->tls_ca;
    o.tls_cert = c->tls_cert;
    o.tls_key = c->tls_key;
    o.tls_server_name = c->tls_server_name;
    char token[4096];
    ember_error err;
    o.token = getenv("EMBER_TOKEN");
    if (c->token_file && *c->token_file) {
        if (ember_rpc_read_token(c->token_file, token, sizeof token, &err)) {
            fprintf(stderr, "emberctl: %s\n", err.message);
            return CTL_EXIT_USAGE;
        }
        o.token = token;
    }
    int rc = 0;
    for (unsigned i = 0; i < c->n && !rc; i++) {
        c->shards[i].ch = ember_rpc_channel_open(c->shards[i].address, &o, &err);
        if (!c->shards[i].ch) {
            fprintf(stderr, "emberctl: %s\n", err.message);
            rc = CTL_EXIT_USAGE;
        }
    }
    memset(token, 0, sizeof token); /* the channels hold their own copies */
    return rc;
}

void ctl_shards_close(ctl *c)
{
    if (!c->shards)
        return;
    for (unsigned i = 0; i < c->n; i++) {
        ember_rpc_channel_close(c->shards[i].ch);
        free(c->shards[i].address);
    }
    free(c->shards);
    c->shards = NULL;
    c->n = c->count = 0;
}

/* ---- calls ------------------------------------------------------------------- */

static void reply_fail(ctl_reply *r, int code, const char *message)
{
    r->code = code;
    snprintf(r->message, sizeof r->message, "%s", message);
}

/* One shard's call, the request already packed; r is zeroed, its shard set. */
static void call_packed(const ctl *c, const ctl_shard *s, const char *method, const uint8_t *req,
                        size_t len, const ProtobufCMessageDescriptor *reply_type, int timeout_ms,
                        ctl_reply *r)
{
    ember_error err;
    uint8_t *resp = NULL;
    size_t resp_len = 0;

    int code = ember_rpc_unary(s->ch, method, req, len, timeout_ms > 0 ? timeout_ms : c->timeout_ms,
                               &resp, &resp_len, &err);
    if (code != 0) {
        reply_fail(r, code, err.message);
        return;
    }
    /* An empty reply (every field at its default) decodes from zero bytes. */
    static const uint8_t empty;
    r->msg = protobuf_c_message_unpack(reply_type, NULL, resp_len, resp ? resp : &empty);
    free(resp);
    if (!r->msg)
        reply_fail(r, EMBER_INTERNAL, "the reply does not decode as the expected message");
}

static uint8_t *pack(const ProtobufCMessage *req, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(req, buf);
    return buf;
}

typedef struct fan_job {
    const ctl *c;
    const char *method;
    const uint8_t *req;
    size_t len;
    const ProtobufCMessageDescriptor *reply_type;
    int timeout_ms;
    ctl_reply *r;
    unsigned shard;
} fan_job;

static void *fan_thread(void *arg)
{
    fan_job *j = arg;
    call_packed(j->c, &j->c->shards[j->shard], j->method, j->req, j->len, j->reply_type,
                j->timeout_ms, j->r);
    return NULL;
}

unsigned ctl_call(const ctl *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_type, int timeout_ms,
                  ctl_reply *replies)
{
    size_t len;
    uint8_t *buf = pack(req, &len);
    fan_job *jobs = calloc(c->n, sizeof *jobs);
    pthread_t *threads = calloc(c->n, sizeof *threads);
    unsigned failed = 0;

    for (unsigned i = 0; i < c->n; i++) {
        memset(&replies[i], 0, sizeof replies[i]);
        replies[i].shard = &c->shards[i];
    }
    if (!buf || !jobs || !threads) {
        for (unsigned i = 0; i < c->n; i++)
            reply_fail(&replies[i], EMBER_RESOURCE_EXHAUSTED, "out of memory");
        failed = c->n;
        goto out;
    }
    for (unsigned i = 0; i < c->n; i++) {
        jobs[i] = (fan_job){c, method, buf, len, reply_type, timeout_ms, &replies[i], i};
        /* The last shard runs here; so does any whose thread cannot start. */
        if (i + 1 == c->n || pthread_create(&threads[i], NULL, fan_thread, &jobs[i]) != 0) {
            fan_thread(&jobs[i]);
            jobs[i].r = NULL;
        }
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (jobs[i].r)
            pthread_join(threads[i], NULL);
        failed += replies[i].code != 0;
    }
out:
    free(buf);
    free(jobs);
    free(threads);
    return failed;
}

void ctl_replies_free(ctl_reply *replies, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (replies[i].msg)
            protobuf_c_message_free_unpacked(replies[i].msg, NULL);
        replies[i].msg = NULL;
    }
}

int ctl_report(const ctl_reply *replies, unsigned n)
{
    int rc = CTL_EXIT_OK;
    for (unsigned i = 0; i < n; i++) {
        const ctl_reply *r = &replies[i];
        if (r->code == 0)
            continue;
        const char *name = ember_code_name(r->code);
        /* rpc.h puts the code name in the message when the server sent none. */
        if (strcmp(r->message, name) == 0 || r->message[0] == '\0')
            fprintf(stderr, "emberctl: shard %u (%s): %s\n", r->shard->index, r->shard->address,
                    name);
        else
            fprintf(stderr, "emberctl: shard %u (%s): %s: %s\n", r->shard->index,
                    r->shard->address, name, r->message);
        rc = CTL_EXIT_RPC;
    }
    return rc;
}

/*
 * wire.c — the hot-path protobuf codec (contract in wire.h).
 *
 * Each message has a hand-written field switch; the helpers below are the
 * protobuf wire format (varints, tags, length-delimited fields) and nothing more.
 */
#include "proto/wire.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EMBER_WIRE_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* ---- reading ------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *start, *p, *end;
    char *msg;
    size_t cap;
    const char *what; /* message name for errors */
} rd;

__attribute__((format(printf, 2, 3))) static int rd_fail(rd *r, const char *fmt, ...)
{
    if (r->msg && r->cap) {
        int k = snprintf(r->msg, r->cap, "malformed %s at byte %zu: ", r->what,
                         (size_t)(r->p - r->start));
        if (k >= 0 && (size_t)k < r->cap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->msg + k, r->cap - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return EMBER_WIRE_INVALID_ARGUMENT;
}

static int rd_varint(rd *r, uint64_t *v)
{
    uint64_t x = 0;
    *v = 0; /* defined on failure too (gcc -O3 cannot see that callers stop) */
    for (unsigned i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return rd_fail(r, "truncated varint");
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return rd_fail(r, "varint longer than 10 bytes");
}

/* Reads a tag; checks the field number and wire type are legal at all. */
static int rd_tag(rd *r, uint32_t *field, int *wt)
{
    uint64_t t;
    if (rd_varint(r, &t))
        return EMBER_WIRE_INVALID_ARGUMENT;
    *wt = (int)(t & 7);
    uint64_t f = t >> 3;
    if (f == 0 || f > 0x1fffffff)
        return rd_fail(r, "field number %llu", (unsigned long long)f);
    if (*wt != WT_VARINT && *wt != WT_I64 && *wt != WT_LEN && *wt != WT_I32)
        return rd_fail(r, "field %llu has unsupported wire type %d", (unsigned long long)f,
                       *wt);
    *field = (uint32_t)f;
    return 0;
}

static int rd_len(rd *r, ember_wire_bytes *b)
{
    uint64_t n;
    if (rd_varint(r, &n))
        return EMBER_WIRE_INVALID_ARGUMENT;
    if (n > (uint64_t)(r->end - r->p))
        return rd_fail(r, "length %llu runs past the end (%zu bytes left)",
                       (unsigned long long)n, (size_t)(r->end - r->p));
    b->data = r->p;
    b->len = (size_t)n;
    r->p += n;
    return 0;
}

static int rd_skip(rd *r, int wt)
{
    uint64_t v;
    ember_wire_bytes b;
    switch (wt) {
    case WT_VARINT:
        return rd_varint(r, &v);
    case WT_LEN:
        return rd_len(r, &b);
    case WT_I64:
    case WT_I32: {
        size_t n = wt == WT_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n)
            return rd_fail(r, "truncated fixed%zu field", n * 8);
        r->p += n;
        return 0;
    }
    }
    return rd_fail(r, "wire type %d", wt);
}

static int rd_want(rd *r, uint32_t field, const char *name, int wt, int want)
{
    if (wt == want)
        return 0;
    return rd_fail(r, "field %u (%s) has wire type %d, expected %d", field, name, wt, want);
}

/* The known field kinds of these messages. */
static int rd_u64(rd *r, uint32_t f, const char *name, int wt, uint64_t *out)
{
    if (rd_want(r, f, name, wt, WT_VARINT))
        return EMBER_WIRE_INVALID_ARGUMENT;
    return rd_varint(r, out);
}

static int rd_u32(rd *r, uint32_t f, const char *name, int wt, uint32_t *out)
{
    uint64_t v;
    if (rd_u64(r, f, name, wt, &v))
        return EMBER_WIRE_INVALID_ARGUMENT;
    *out = (uint32_t)v; /* protobuf truncates a too-wide varint to the field's width */
    return 0;
}

static int rd_i32(rd *r, uint32_t f, const char *name, int wt, int32_t *out)
{
    uint32_t v;
    if (rd_u32(r, f, name, wt, &v))
        return EMBER_WIRE_INVALID_ARGUMENT;
    memcpy(out, &v, sizeof v);
    return 0;
}

static int rd_bool(rd *r, uint32_t f, const char *name, int wt, int *out)
{
    uint64_t v;
    if (rd_u64(r, f, name, wt, &v))
        return EMBER_WIRE_INVALID_ARGUMENT;
    *out = v != 0;
    return 0;
}

static int rd_bytes(rd *r, uint32_t f, const char *name, int wt, ember_wire_bytes *out)
{
    if (rd_want(r, f, name, wt, WT_LEN))
        return EMBER_WIRE_INVALID_ARGUMENT;
    return rd_len(r, out);
}

/* A bytes field of packed `width`-byte values (`type` names them): its length
 * must be a multiple of width. */
static int rd_packed(rd *r, uint32_t f, const char *name, int wt, ember_wire_bytes *out,
                     size_t width, const char *type)
{
    if (rd_bytes(r, f, name, wt, out))
        return EMBER_WIRE_INVALID_ARGUMENT;
    if (out->len % width)
        return rd_fail(r, "%s is %zu bytes, not a multiple of %zu (%s each)", name, out->len,
                       width, type);
    return 0;
}

static int rd_u64s(rd *r, uint32_t f, const char *name, int wt, ember_wire_bytes *out)
{
    return rd_packed(r, f, name, wt, out, 8, "uint64");
}

static int rd_f32s(rd *r, uint32_t f, const char *name, int wt, ember_wire_bytes *out)
{
    return rd_packed(r, f, name, wt, out, 4, "float32");
}

static void rd_init(rd *r, const uint8_t *buf, size_t len, char *msg, size_t cap,
                    const char *what)
{
    r->start = r->p = buf;
    r->end = buf + len;
    r->msg = msg;
    r->cap = cap;
    r->what = what;
    if (msg && cap)
        msg[0] = '\0';
}

/* Each *_fields() decodes r->p..r->end on top of *m (no reset: a repeated
 * submessage merges, as protobuf demands). */
static int pull_request_fields(rd *r, ember_wire_pull_request *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1: rc = rd_bytes(r, f, "table", wt, &m->table); break;
        case 2: rc = rd_u64s(r, f, "keys", wt, &m->keys); break;
        case 3: rc = rd_bool(r, f, "insert_missing", wt, &m->insert_missing); break;
        case 4: rc = rd_i32(r, f, "dtype", wt, &m->dtype); break;
        case 5: rc = rd_bool(r, f, "want_found", wt, &m->want_found); break;
        case 6: rc = rd_u64s(r, f, "scores", wt, &m->scores); break;
        case 7: rc = rd_u32(r, f, "dim", wt, &m->dim); break;
        case 8: rc = rd_u64s(r, f, "offsets", wt, &m->offsets); break;
        case 9: rc = rd_i32(r, f, "combiner", wt, &m->combiner); break;
        case 10: rc = rd_f32s(r, f, "weights", wt, &m->weights); break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int pull_response_fields(rd *r, ember_wire_pull_response *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1: rc = rd_bytes(r, f, "values", wt, &m->values); break;
        case 2: rc = rd_u32(r, f, "dim", wt, &m->dim); break;
        case 3: rc = rd_i32(r, f, "dtype", wt, &m->dtype); break;
        case 4: rc = rd_bytes(r, f, "found", wt, &m->found); break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int push_request_fields(rd *r, ember_wire_push_request *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1: rc = rd_bytes(r, f, "table", wt, &m->table); break;
        case 2: rc = rd_u64s(r, f, "keys", wt, &m->keys); break;
        case 3: rc = rd_bytes(r, f, "values", wt, &m->values); break;
        case 4: rc = rd_i32(r, f, "dtype", wt, &m->dtype); break;
        case 5: rc = rd_i32(r, f, "mode", wt, &m->mode); break;
        case 6: rc = rd_u64(r, f, "client_id", wt, &m->client_id); break;
        case 7: rc = rd_u64(r, f, "sequence", wt, &m->sequence); break;
        case 8: rc = rd_u64s(r, f, "scores", wt, &m->scores); break;
        case 9: rc = rd_u32(r, f, "epoch", wt, &m->epoch); break;
        case 11: rc = rd_u64s(r, f, "offsets", wt, &m->offsets); break;
        case 12: rc = rd_i32(r, f, "combiner", wt, &m->combiner); break;
        case 13: rc = rd_f32s(r, f, "weights", wt, &m->weights); break;
        case 14: rc = rd_f32s(r, f, "norms", wt, &m->norms); break;
        case 70: rc = rd_i32(r, f, "ack", wt, &m->ack); break;
        case 71: rc = rd_u32(r, f, "ack_replicas", wt, &m->ack_replicas); break;
        case 72: rc = rd_u64(r, f, "term", wt, &m->term); break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int push_response_fields(rd *r, ember_wire_push_response *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1: rc = rd_u64(r, f, "applied", wt, &m->applied); break;
        case 2: rc = rd_bool(r, f, "duplicate", wt, &m->duplicate); break;
        case 70: rc = rd_u64(r, f, "term", wt, &m->term); break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Decodes a length-delimited submessage with `fn` in a reader over its bytes,
 * with errors reported at offsets of the outer message. */
#define RD_SUB(r, f, name, wt, fn, dst)                                                  \
    do {                                                                                \
        ember_wire_bytes sub_ = {NULL, 0};                                              \
        if (rd_bytes((r), (f), (name), (wt), &sub_))                                    \
            return EMBER_WIRE_INVALID_ARGUMENT;                                         \
        rd s_ = *(r);                                                                   \
        s_.p = sub_.data;                                                               \
        s_.end = sub_.data + sub_.len;                                                  \
        s_.what = (name);                                                               \
        if (fn(&s_, (dst)))                                                             \
            return EMBER_WIRE_INVALID_ARGUMENT;                                         \
    } while (0)

static int pushpull_request_fields(rd *r, ember_wire_pushpull_request *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1:
            RD_SUB(r, f, "push", wt, push_request_fields, &m->push);
            m->has_push = 1;
            break;
        case 2:
            RD_SUB(r, f, "pull", wt, pull_request_fields, &m->pull);
            m->has_pull = 1;
            break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int pushpull_response_fields(rd *r, ember_wire_pushpull_response *m)
{
    while (r->p < r->end) {
        uint32_t f;
        int wt, rc = 0;
        if (rd_tag(r, &f, &wt))
            return EMBER_WIRE_INVALID_ARGUMENT;
        switch (f) {
        case 1:
            RD_SUB(r, f, "push", wt, push_response_fields, &m->push);
            m->has_push = 1;
            break;
        case 2:
            RD_SUB(r, f, "pull", wt, pull_response_fields, &m->pull);
            m->has_pull = 1;
            break;
        default: rc = rd_skip(r, wt); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

#define DECODER(name, type, what)                                                       \
    int ember_wire_##name##_decode(const uint8_t *buf, size_t len, type *out, char *msg, \
                                   size_t msg_cap)                                      \
    {                                                                                   \
        rd r;                                                                           \
        memset(out, 0, sizeof *out);                                                    \
        rd_init(&r, buf, len, msg, msg_cap, what);                                      \
        if (!buf && len)                                                                \
            return rd_fail(&r, "NULL buffer");                                          \
        return name##_fields(&r, out);                                                  \
    }

DECODER(pull_request, ember_wire_pull_request, "PullRequest")
DECODER(pull_response, ember_wire_pull_response, "PullResponse")
DECODER(push_request, ember_wire_push_request, "PushRequest")
DECODER(push_response, ember_wire_push_response, "PushResponse")
DECODER(pushpull_request, ember_wire_pushpull_request, "PushPullRequest")
DECODER(pushpull_response, ember_wire_pushpull_response, "PushPullResponse")

/* ---- writing ------------------------------------------------------------- */

static size_t vsz(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Field sizes: 0 when proto3 omits the field (default value). Field numbers here
 * are < 16, so every tag is one byte */
static size_t sz_varint(uint64_t v) { return v ? 1 + vsz(v) : 0; }
static size_t sz_i32(int32_t v) { return v ? 1 + vsz((uint64_t)(int64_t)v) : 0; }
static size_t sz_bytes(size_t len) { return len ? 1 + vsz(len) + len : 0; }
static size_t sz_sub(size_t len) { return 1 + vsz(len) + len; }

/* A varint field numbered 16 or more (a tag of two bytes or more). */
static size_t sz_field(uint32_t f, uint64_t v) { return v ? vsz((uint64_t)f << 3) + vsz(v) : 0; }

static uint8_t *put_field(uint8_t *p, uint32_t f, uint64_t v)
{
    if (!v)
        return p;
    p = put_varint(p, (uint64_t)f << 3 | WT_VARINT);
    return put_varint(p, v);
}

static uint8_t *put_uint(uint8_t *p, uint32_t f, uint64_t v)
{
    if (!v)
        return p;
    *p++ = (uint8_t)(f << 3 | WT_VARINT);
    return put_varint(p, v);
}

/* int32 (enums): negative values are sign-extended to 10 bytes, as protobuf does. */
static uint8_t *put_i32(uint8_t *p, uint32_t f, int32_t v)
{
    return put_uint(p, f, (uint64_t)(int64_t)v);
}

/* Writes a bytes field; returns where its data starts in *at (NULL if omitted). */
static uint8_t *put_bytes(uint8_t *p, uint32_t f, ember_wire_bytes b, uint8_t **at)
{
    *at = NULL;
    if (!b.len)
        return p;
    *p++ = (uint8_t)(f << 3 | WT_LEN);
    p = put_varint(p, b.len);
    *at = p;
    if (b.data)
        memcpy(p, b.data, b.len);
    return p + b.len;
}

static uint8_t *put_sub_header(uint8_t *p, uint32_t f, size_t len)
{
    *p++ = (uint8_t)(f << 3 | WT_LEN);
    return put_varint(p, len);
}

/* Offset of a bytes field's data: `pos` is where the field starts. */
static size_t off_bytes(size_t pos, size_t len) { return len ? pos + 1 + vsz(len) : 0; }

static void off_shift(ember_wire_off *o, size_t by)
{
    if (o->keys) o->keys += by;
    if (o->values) o->values += by;
    if (o->scores) o->scores += by;
    if (o->found) o->found += by;
}

size_t ember_wire_pull_request_size(const ember_wire_pull_request *m, ember_wire_off *off)
{
    size_t n = sz_bytes(m->table.len);
    ember_wire_off o = {0};
    o.keys = off_bytes(n, m->keys.len);
    n += sz_bytes(m->keys.len);
    n += sz_varint((uint64_t)(m->insert_missing != 0));
    n += sz_i32(m->dtype);
    n += sz_varint((uint64_t)(m->want_found != 0));
    o.scores = off_bytes(n, m->scores.len);
    n += sz_bytes(m->scores.len);
    n += sz_varint(m->dim);
    n += sz_bytes(m->offsets.len);
    n += sz_i32(m->combiner);
    n += sz_bytes(m->weights.len);
    if (off)
        *off = o;
    return n;
}

size_t ember_wire_pull_request_encode(const ember_wire_pull_request *m, uint8_t *buf)
{
    uint8_t *p = buf, *at;
    p = put_bytes(p, 1, m->table, &at);
    p = put_bytes(p, 2, m->keys, &at);
    p = put_uint(p, 3, m->insert_missing != 0);
    p = put_i32(p, 4, m->dtype);
    p = put_uint(p, 5, m->want_found != 0);
    p = put_bytes(p, 6, m->scores, &at);
    p = put_uint(p, 7, m->dim);
    p = put_bytes(p, 8, m->offsets, &at);
    p = put_i32(p, 9, m->combiner);
    p = put_bytes(p, 10, m->weights, &at);
    return (size_t)(p - buf);
}

size_t ember_wire_pull_response_size(const ember_wire_pull_response *m, ember_wire_off *off)
{
    size_t n = 0;
    ember_wire_off o = {0};
    o.values = off_bytes(n, m->values.len);
    n += sz_bytes(m->values.len);
    n += sz_varint(m->dim);
    n += sz_i32(m->dtype);
    o.found = off_bytes(n, m->found.len);
    n += sz_bytes(m->found.len);
    if (off)
        *off = o;
    return n;
}

size_t ember_wire_pull_response_encode(const ember_wire_pull_response *m, uint8_t *buf)
{
    uint8_t *p = buf, *at;
    p = put_bytes(p, 1, m->values, &at);
    p = put_uint(p, 2, m->dim);
    p = put_i32(p, 3, m->dtype);
    p = put_bytes(p, 4, m->found, &at);
    return (size_t)(p - buf);
}

size_t ember_wire_push_request_size(const ember_wire_push_request *m, ember_wire_off *off)
{
    size_t n = sz_bytes(m->table.len);
    ember_wire_off o = {0};
    o.keys = off_bytes(n, m->keys.len);
    n += sz_bytes(m->keys.len);
    o.values = off_bytes(n, m->values.len);
    n += sz_bytes(m->values.len);
    n += sz_i32(m->dtype);
    n += sz_i32(m->mode);
    n += sz_varint(m->client_id);
    n += sz_varint(m->sequence);
    o.scores = off_bytes(n, m->scores.len);
    n += sz_bytes(m->scores.len);
    n += sz_varint(m->epoch);
    n += sz_bytes(m->offsets.len);
    n += sz_i32(m->combiner);
    n += sz_bytes(m->weights.len);
    n += sz_bytes(m->norms.len);
    n += sz_field(70, (uint64_t)(int64_t)m->ack);
    n += sz_field(71, m->ack_replicas);
    n += sz_field(72, m->term);
    if (off)
        *off = o;
    return n;
}

size_t ember_wire_push_request_encode(const ember_wire_push_request *m, uint8_t *buf)
{
    uint8_t *p = buf, *at;
    p = put_bytes(p, 1, m->table, &at);
    p = put_bytes(p, 2, m->keys, &at);
    p = put_bytes(p, 3, m->values, &at);
    p = put_i32(p, 4, m->dtype);
    p = put_i32(p, 5, m->mode);
    p = put_uint(p, 6, m->client_id);
    p = put_uint(p, 7, m->sequence);
    p = put_bytes(p, 8, m->scores, &at);
    p = put_uint(p, 9, m->epoch);
    p = put_bytes(p, 11, m->offsets, &at);
    p = put_i32(p, 12, m->combiner);
    p = put_bytes(p, 13, m->weights, &at);
    p = put_bytes(p, 14, m->norms, &at);
    p = put_field(p, 70, (uint64_t)(int64_t)m->ack);
    p = put_field(p, 71, m->ack_replicas);
    p = put_field(p, 72, m->term);
    return (size_t)(p - buf);
}

size_t ember_wire_push_response_size(const ember_wire_push_response *m)
{
    return sz_varint(m->applied) + sz_varint((uint64_t)(m->duplicate != 0)) +
           sz_field(70, m->term);
}

size_t ember_wire_push_response_encode(const ember_wire_push_response *m, uint8_t *buf)
{
    uint8_t *p = buf;
    p = put_uint(p, 1, m->applied);
    p = put_uint(p, 2, m->duplicate != 0);
    p = put_field(p, 70, m->term);
    return (size_t)(p - buf);
}

size_t ember_wire_pushpull_request_size(const ember_wire_pushpull_request *m,
                                        ember_wire_off *push_off, ember_wire_off *pull_off)
{
    size_t n = 0;
    ember_wire_off a = {0}, b = {0};
    if (m->has_push) {
        size_t s = ember_wire_push_request_size(&m->push, &a);
        off_shift(&a, n + 1 + vsz(s));
        n += sz_sub(s);
    }
    if (m->has_pull) {
        size_t s = ember_wire_pull_request_size(&m->pull, &b);
        off_shift(&b, n + 1 + vsz(s));
        n += sz_sub(s);
    }
    if (push_off)
        *push_off = a;
    if (pull_off)
        *pull_off = b;
    return n;
}

size_t ember_wire_pushpull_request_encode(const ember_wire_pushpull_request *m,
                                          uint8_t *buf)
{
    uint8_t *p = buf;
    if (m->has_push) {
        p = put_sub_header(p, 1, ember_wire_push_request_size(&m->push, NULL));
        p += ember_wire_push_request_encode(&m->push, p);
    }
    if (m->has_pull) {
        p = put_sub_header(p, 2, ember_wire_pull_request_size(&m->pull, NULL));
        p += ember_wire_pull_request_encode(&m->pull, p);
    }
    return (size_t)(p - buf);
}

size_t ember_wire_pushpull_response_size(const ember_wire_pushpull_response *m,
                                         ember_wire_off *pull_off)
{
    size_t n = 0;
    ember_wire_off b = {0};
    if (m->has_push)
        n += sz_sub(ember_wire_push_response_size(&m->push));
    if (m->has_pull) {
        size_t s = ember_wire_pull_response_size(&m->pull, &b);
        off_shift(&b, n + 1 + vsz(s));
        n += sz_sub(s);
    }
    if (pull_off)
        *pull_off = b;
    return n;
}

size_t ember_wire_pushpull_response_encode(const ember_wire_pushpull_response *m,
                                           uint8_t *buf)
{
    uint8_t *p = buf;
    if (m->has_push) {
        p = put_sub_header(p, 1, ember_wire_push_response_size(&m->push));
        p += ember_wire_push_response_encode(&m->push, p);
    }
    if (m->has_pull) {
        p = put_sub_header(p, 2, ember_wire_pull_response_size(&m->pull, NULL));
        p += ember_wire_pull_response_encode(&m->pull, p);
    }
    return (size_t)(p - buf);
}

/* ---- pooled lookups: the bags ---------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int bags_fail(char *msg, size_t cap,
                                                           const char *fmt, ...)
{
    if (msg && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, cap, fmt, ap);
        va_end(ap);
    }
    return EMBER_WIRE_INVALID_ARGUMENT;
}

uint64_t ember_wire_offset(ember_wire_bytes offsets, size_t i)
{
    uint64_t v;
    memcpy(&v, offsets.data + 8 * i, 8);
    return v;
}

int ember_wire_bags_check(ember_wire_bytes offsets, size_t n, ember_wire_bytes weights,
                          size_t *bags, char *msg, size_t msg_cap)
{
    *bags = 0;
    if (offsets.len < 8 || offsets.len % 8)
        return bags_fail(msg, msg_cap,
                         "offsets are %zu bytes: a pooled call needs bags + 1 uint64 offsets",
                         offsets.len);
    size_t m = offsets.len / 8 - 1;
    uint64_t prev = ember_wire_offset(offsets, 0);
    if (prev != 0)
        return bags_fail(msg, msg_cap, "offsets start at %llu, not 0", (unsigned long long)prev);
    for (size_t b = 1; b <= m; b++) {
        uint64_t o = ember_wire_offset(offsets, b);
        if (o < prev)
            return bags_fail(msg, msg_cap, "offsets decrease at bag %zu (%llu after %llu)", b - 1,
                             (unsigned long long)o, (unsigned long long)prev);
        prev = o;
    }
    if (prev != n)
        return bags_fail(msg, msg_cap, "the last offset is %llu, but the call has %zu keys",
                         (unsigned long long)prev, n);
    if (weights.len && weights.len != n * 4)
        return bags_fail(msg, msg_cap, "weights hold %zu values for %zu keys", weights.len / 4,
                         n);
    for (size_t i = 0; i < weights.len / 4; i++) {
        uint32_t u;
        memcpy(&u, weights.data + 4 * i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return bags_fail(msg, msg_cap, "weight of key index %zu is not finite (NaN or Inf)",
                             i);
    }
    *bags = m;
    return EMBER_WIRE_OK;
}

const char *ember_wire_combiner_name(int32_t combiner)
{
    switch (combiner) {
    case EMBER_WIRE_COMBINER_NONE: return "none";
    case EMBER_WIRE_COMBINER_SUM: return "sum";
    case EMBER_WIRE_COMBINER_MEAN: return "mean";
    case EMBER_WIRE_COMBINER_SQRTN: return "sqrtn";
    }
    return "unknown";
}

/* ---- values -------------------------------------------------------------- */

size_t ember_wire_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case EMBER_WIRE_F32: return 4;
    case EMBER_WIRE_F16:
    case EMBER_WIRE_BF16: return 2;
    }
    return 0;
}

const char *ember_wire_dtype_name(int32_t dtype)
{
    switch (dtype) {
    case EMBER_WIRE_F32: return "float32";
    case EMBER_WIRE_F16: return "float16";
    case EMBER_WIRE_BF16: return "bfloat16";
    }
    return "unknown";
}

void ember_wire_keys_copy(ember_wire_bytes keys, uint64_t *dst)
{
    if (keys.len)
        memcpy(dst, keys.data, keys.len - keys.len % 8);
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ember_wire_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, make it quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ember_wire_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t ember_wire_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds to ≥ 65520: overflow (or Inf) */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: float16 subnormal or zero */
        if (a < 0x33000000u) /* below half the smallest subnormal (2^-25): ±0 */
            return sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 + 1: value = m × 2^(e-150), unit 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias the exponent (127 → 15) and round the mantissa to 10 bits */
    uint32_t r = a - 0x38000000u; /* exponent - 112 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

float ember_wire_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return u2f(sign | 0x7f800000u | (m << 13));
    if (e)
        return u2f(sign | ((e + 112u) << 23) | (m << 13));
    /* zero or subnormal: m × 2^-24 exactly */
    float v = (float)m * (1.0f / 16777216.0f);
    return u2f(sign | f2u(v));
}

/* ---- array conversions: scalar and x86 (F16C / AVX2) ------------------------
 *
 * The x86 path must give the scalar path's bits for every input (test_wire.c
 * checks all 65,536 half and bfloat values, the rounding ties around each, and
 * NaN payloads). Where the hardware differs it is patched lane by lane:
 * vcvtph2ps quiets a signalling NaN (sets the float's quiet bit), while
 * ember_wire_f16_to_f32 keeps the half's payload exactly, so NaN lanes are
 * rebuilt from their bits. float32 → float16 needs no patch: vcvtps2ph with
 * round-to-nearest-even overflows to Inf at 65,520, makes subnormals exactly,
 * and turns a NaN into sign | 0x7e00 | top 10 payload bits, as the scalar code
 * does. bfloat16 has no conversion instruction before AVX-512; the AVX2 code is
 * the scalar code's integer arithmetic, eight lanes at a time. */

static void to_wire_scalar(int32_t dtype, const float *src, size_t n, uint8_t *dst)
{
    size_t i;
    switch (dtype) {
    case EMBER_WIRE_F16:
        for (i = 0; i < n; i++) {
            uint16_t h = ember_wire_f32_to_f16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return;
    case EMBER_WIRE_BF16:
        for (i = 0; i < n; i++) {
            uint16_t h = ember_wire_f32_to_bf16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return;
    }
}

static void from_wire_scalar(int32_t dtype, const uint8_t *src, size_t n, float *dst)
{
    size_t i;
    uint16_t h;
    switch (dtype) {
    case EMBER_WIRE_F16:
        for (i = 0; i < n; i++) {
            memcpy(&h, src + 2 * i, 2);
            dst[i] = ember_wire_f16_to_f32(h);
        }
        return;
    case EMBER_WIRE_BF16:
        for (i = 0; i < n; i++) {
            memcpy(&h, src + 2 * i, 2);
            dst[i] = ember_wire_bf16_to_f32(h);
        }
        return;
    }
}

#ifdef EMBER_WIRE_HAVE_X86
#define X86_TARGET __attribute__((target("f16c,avx2")))

X86_TARGET static void f32_to_f16_x86(const float *src, size_t n, uint8_t *dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(dst + 2 * i), h);
    }
    to_wire_scalar(EMBER_WIRE_F16, src + i, n - i, dst + 2 * i);
}

X86_TARGET static void f16_to_f32_x86(const uint8_t *src, size_t n, float *dst)
{
    const __m256i mag = _mm256_set1_epi32(0x7fff), inf = _mm256_set1_epi32(0x7c00),
                  sgn = _mm256_set1_epi32(0x8000), man = _mm256_set1_epi32(0x3ff),
                  exp = _mm256_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        __m256 f = _mm256_cvtph_ps(h);
        __m256i w = _mm256_cvtepu16_epi32(h);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(w, mag), inf);
        __m256i bits = _mm256_or_si256(
            _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, sgn), 16), exp),
            _mm256_slli_epi32(_mm256_and_si256(w, man), 13));
        f = _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), _mm256_castsi256_ps(nan));
        _mm256_storeu_ps(dst + i, f);
    }
    from_wire_scalar(EMBER_WIRE_F16, src + 2 * i, n - i, dst + i);
}

/* Eight floats → eight bfloat16 in the low 16 bits of each 32-bit lane. */
X86_TARGET static inline __m256i bf16_lanes(__m256i u)
{
    const __m256i one = _mm256_set1_epi32(1), rnd = _mm256_set1_epi32(0x7fff),
                  abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  quiet = _mm256_set1_epi32(0x40);
    __m256i hi = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(rnd, _mm256_and_si256(hi, one))), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
    return _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), nan);
}

X86_TARGET static void f32_to_bf16_x86(const float *src, size_t n, uint8_t *dst)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = bf16_lanes(_mm256_loadu_si256((const __m256i *)(const void *)(src + i)));
        __m256i b = bf16_lanes(_mm256_loadu_si256((const __m256i *)(const void *)(src + i + 8)));
        /* packus works within 128-bit halves: a0 b0 | a1 b1 → a0 a1 b0 b1 */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(void *)(dst + 2 * i), p);
    }
    to_wire_scalar(EMBER_WIRE_BF16, src + i, n - i, dst + 2 * i);
}

X86_TARGET static void bf16_to_f32_x86(const uint8_t *src, size_t n, float *dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    from_wire_scalar(EMBER_WIRE_BF16, src + 2 * i, n - i, dst + i);
}
#endif /* EMBER_WIRE_HAVE_X86 */

/* Whether this CPU has the x86 path; asked once per process, since CPUID is slow
 * (under a hypervisor it traps: microseconds). A race only repeats the question. */
static int cpu_has_x86_path(void)
{
#ifdef EMBER_WIRE_HAVE_X86
    static _Atomic int has = -1;
    int h = atomic_load_explicit(&has, memory_order_relaxed);
    if (h < 0) {
        /* avx2 through the compiler (it checks the OS saves the YMM registers);
         * F16C (CPUID.1:ECX bit 29) by hand, since not every compiler knows its
         * name. */
        unsigned a, b, c, d;
        __builtin_cpu_init();
        h = __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1u);
        atomic_store_explicit(&has, h, memory_order_relaxed);
    }
    return h;
#else
    return 0;
#endif
}

int ember_wire_conv_path(void)
{
    /* Decided once per process: the environment is read at the first conversion. */
    static _Atomic int path = -1;
    int p = atomic_load_explicit(&path, memory_order_relaxed);
    if (p < 0) {
        const char *env = getenv("EMBER_WIRE_SCALAR");
        int force_scalar = env && *env && strcmp(env, "0") != 0;
        p = !force_scalar && cpu_has_x86_path() ? EMBER_WIRE_CONV_X86 : EMBER_WIRE_CONV_SCALAR;
        atomic_store_explicit(&path, p, memory_order_relaxed);
    }
    return p;
}

/* Runs `path`, which the caller has checked the CPU has. */
static void to_wire_path(int path, int32_t dtype, const float *src, size_t n, uint8_t *dst)
{
    if (!n) /* src/dst may be NULL then */
        return;
    if (dtype == EMBER_WIRE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
#ifdef EMBER_WIRE_HAVE_X86
    if (path == EMBER_WIRE_CONV_X86 && dtype == EMBER_WIRE_F16) {
        f32_to_f16_x86(src, n, dst);
        return;
    }
    if (path == EMBER_WIRE_CONV_X86 && dtype == EMBER_WIRE_BF16) {
        f32_to_bf16_x86(src, n, dst);
        return;
    }
#endif
    (void)path;
    to_wire_scalar(dtype, src, n, dst);
}

static void from_wire_path(int path, int32_t dtype, const uint8_t *src, size_t n, float *dst)
{
    if (!n) /* src/dst may be NULL then */
        return;
    if (dtype == EMBER_WIRE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
#ifdef EMBER_WIRE_HAVE_X86
    if (path == EMBER_WIRE_CONV_X86 && dtype == EMBER_WIRE_F16) {
        f16_to_f32_x86(src, n, dst);
        return;
    }
    if (path == EMBER_WIRE_CONV_X86 && dtype == EMBER_WIRE_BF16) {
        bf16_to_f32_x86(src, n, dst);
        return;
    }
#endif
    (void)path;
    from_wire_scalar(dtype, src, n, dst);
}

static int usable(int path)
{
    return path == EMBER_WIRE_CONV_X86 && cpu_has_x86_path() ? path : EMBER_WIRE_CONV_SCALAR;
}

void ember_wire_to_wire_on(int path, int32_t dtype, const float *src, size_t n, uint8_t *dst)
{
    to_wire_path(usable(path), dtype, src, n, dst);
}

void ember_wire_from_wire_on(int path, int32_t dtype, const uint8_t *src, size_t n, float *dst)
{
    from_wire_path(usable(path), dtype, src, n, dst);
}

void ember_wire_to_wire(int32_t dtype, const float *src, size_t n, uint8_t *dst)
{
    to_wire_path(ember_wire_conv_path(), dtype, src, n, dst);
}

void ember_wire_from_wire(int32_t dtype, const uint8_t *src, size_t n, float *dst)
{
    from_wire_path(ember_wire_conv_path(), dtype, src, n, dst);
}

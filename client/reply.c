/* reply.c — Pull/PushPull replies parsed across gRPC's slices (see reply.h). */
#include "client/reply.h"

#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice_buffer.h>

#include "proto/wire.h"

/* A cursor over the slices of a raw, uncompressed byte buffer. pos counts bytes
 * from the start of the message; end bounds the current (sub)message. */
typedef struct seg {
    const grpc_slice *s;
    size_t ns, i;
    const uint8_t *p, *e;
    size_t pos, end;
} seg;

static const grpc_slice_buffer *raw_slices(const grpc_byte_buffer *bb)
{
    if (!bb || bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE)
        return NULL;
    return &bb->data.raw.slice_buffer;
}

static void seg_init(seg *r, const grpc_slice_buffer *sb)
{
    r->s = sb->slices;
    r->ns = sb->count;
    r->i = 0;
    r->pos = 0;
    r->end = sb->length;
    /* Through the array, never a copy: a small slice's bytes live in the struct. */
    r->p = r->ns ? GRPC_SLICE_START_PTR(r->s[0]) : NULL;
    r->e = r->ns ? r->p + GRPC_SLICE_LENGTH(r->s[0]) : NULL;
}

/* Moves to the next slice that has bytes; only called while bytes remain. */
static void seg_next(seg *r)
{
    while (r->p == r->e && r->i + 1 < r->ns) {
        r->i++;
        r->p = GRPC_SLICE_START_PTR(r->s[r->i]);
        r->e = r->p + GRPC_SLICE_LENGTH(r->s[r->i]);
    }
}

static int seg_byte(seg *r, uint8_t *b)
{
    if (r->pos >= r->end)
        return 0;
    seg_next(r);
    *b = *r->p++;
    r->pos++;
    return 1;
}

/* Moves n bytes on, copying them to dst unless dst is NULL. */
static int seg_copy(seg *r, uint8_t *dst, size_t n)
{
    if (n > r->end - r->pos)
        return 0;
    r->pos += n;
    while (n) {
        seg_next(r);
        size_t a = (size_t)(r->e - r->p);
        if (a > n)
            a = n;
        if (dst) {
            memcpy(dst, r->p, a);
            dst += a;
        }
        r->p += a;
        n -= a;
    }
    return 1;
}

static int seg_skip(seg *r, size_t n) { return seg_copy(r, NULL, n); }

/* As wire.c's rd_varint: at most 10 bytes. */
static int seg_varint(seg *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        uint8_t b;
        if (!seg_byte(r, &b))
            return 0;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* A tag with the wire type `want` (0 varint, 2 length-delimited). */
static int seg_tag(seg *r, uint32_t *field, int *wt)
{
    uint64_t t;
    if (!seg_varint(r, &t) || (t >> 3) == 0 || (t >> 3) > 0x1fffffff)
        return 0;
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    return 1;
}

static int seg_len(seg *r, size_t *len)
{
    uint64_t n;
    if (!seg_varint(r, &n) || n > r->end - r->pos)
        return 0;
    *len = (size_t)n;
    return 1;
}

/* PullResponse fields from r->pos to r->end. */
static int pull_fields(seg *r, ember_reply_pull *m)
{
    while (r->pos < r->end) {
        uint32_t f;
        int wt;
        uint64_t v;
        size_t len;
        if (!seg_tag(r, &f, &wt))
            return 0;
        switch (f) {
        case 1: /* values */
            if (wt != 2 || !seg_len(r, &len))
                return 0;
            m->values_off = r->pos;
            m->values_len = len;
            if (!seg_skip(r, len))
                return 0;
            break;
        case 2: /* dim: uint32, a wider varint truncated as protobuf does */
            if (wt != 0 || !seg_varint(r, &v))
                return 0;
            m->dim = (uint32_t)v;
            break;
        case 3: { /* dtype: int32 */
            if (wt != 0 || !seg_varint(r, &v))
                return 0;
            uint32_t u = (uint32_t)v;
            memcpy(&m->dtype, &u, sizeof u);
            break;
        }
        case 4: /* found: not asked for, but legal */
            if (wt != 2 || !seg_len(r, &len) || !seg_skip(r, len))
                return 0;
            break;
        default:
            return 0; /* unknown fields: left to the full decoder */
        }
    }
    return 1;
}

int ember_reply_pull_parse(const grpc_byte_buffer *bb, int pushpull, ember_reply_pull *out)
{
    memset(out, 0, sizeof *out);
    const grpc_slice_buffer *sb = raw_slices(bb);
    if (!sb)
        return 0;
    seg r;
    seg_init(&r, sb);
    if (!pushpull)
        return pull_fields(&r, out);

    int have_push = 0, have_pull = 0;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        size_t len;
        /* A repeated submessage merges: left to the full decoder. */
        if (!seg_tag(&r, &f, &wt) || wt != 2 || !seg_len(&r, &len))
            return 0;
        if (f == 1 && !have_push) {
            uint8_t buf[64]; /* a PushResponse is two varints: ≤ 13 bytes */
            ember_wire_push_response pr;
            if (len > sizeof buf || !seg_copy(&r, buf, len) ||
                ember_wire_push_response_decode(buf, len, &pr, NULL, 0) != EMBER_WIRE_OK)
                return 0;
            out->push_duplicate = pr.duplicate;
            have_push = 1;
        } else if (f == 2 && !have_pull) {
            size_t end = r.end;
            r.end = r.pos + len;
            if (!pull_fields(&r, out))
                return 0;
            r.end = end;
            have_pull = 1;
        } else {
            return 0;
        }
    }
    return have_pull;
}

size_t ember_reply_slices(const grpc_byte_buffer *bb)
{
    const grpc_slice_buffer *sb = raw_slices(bb);
    return sb ? sb->count : 0;
}

size_t ember_reply_rows(const grpc_byte_buffer *bb, size_t off, size_t row_bytes, size_t cnt,
                        const uint8_t **rows, uint8_t **scratch)
{
    const grpc_slice_buffer *sb = raw_slices(bb);
    if (!sb || !cnt)
        return 0;
    seg r;
    seg_init(&r, sb);
    seg_skip(&r, off);
    size_t copied = 0;
    for (size_t j = 0; j < cnt; j++) {
        seg_next(&r);
        if ((size_t)(r.e - r.p) >= row_bytes) {
            rows[j] = r.p;
            r.p += row_bytes;
            r.pos += row_bytes;
        } else {
            seg_copy(&r, *scratch, row_bytes);
            rows[j] = *scratch;
            *scratch += row_bytes;
            copied++;
        }
    }
    return copied;
}

/*
 * slices.h — a read cursor over the bytes of a gRPC slice buffer, to read a
 * message's protobuf framing where gRPC received it instead of flattening it
 * first: the server finds the bulk field of a request it is about to gather
 * (server/rpc.c), the client locates a reply's rows (client/reply.c).
 *
 * The cursor reads tags, varints and lengths byte by byte across slice
 * boundaries and moves over (or copies out) runs of bytes; `pos` counts bytes
 * from the start of the message and `end` bounds what may be read (a caller
 * narrows it to read a submessage). Every read checks `end`: malformed framing
 * makes a function return 0, never read past the buffer.
 *
 * Header-only (static inline: a few instructions per framing byte), gRPC's
 * slice types only, no allocation. Thread-safety: a cursor is its caller's; the
 * buffer must not change while it is read.
 */
#ifndef EMBER_PROTO_SLICES_H
#define EMBER_PROTO_SLICES_H

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ember_slices {
    const grpc_slice *s;
    size_t ns, i;         /* slices, and the one being read */
    const uint8_t *p, *e; /* the unread bytes of slice i */
    size_t pos, end;      /* bytes passed; the bound of what may be read */
} ember_slices;

/* A byte buffer's slices when they are the message as sent (raw, not
 * compressed); NULL otherwise (then read it through grpc_byte_buffer_reader). */
static inline const grpc_slice_buffer *ember_slices_raw(const grpc_byte_buffer *bb)
{
    if (!bb || bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE)
        return NULL;
    return &bb->data.raw.slice_buffer;
}

static inline void ember_slices_init(ember_slices *r, const grpc_slice_buffer *sb)
{
    r->s = sb->slices;
    r->ns = sb->count;
    r->i = 0;
    r->pos = 0;
    r->end = sb->length;
    /* through the array, never a copy: a small slice's bytes live in the struct */
    r->p = r->ns ? GRPC_SLICE_START_PTR(r->s[0]) : NULL;
    r->e = r->ns ? r->p + GRPC_SLICE_LENGTH(r->s[0]) : NULL;
}

/* Moves to the next slice that has bytes; call only while bytes remain. */
static inline void ember_slices_next(ember_slices *r)
{
    while (r->p == r->e && r->i + 1 < r->ns) {
        r->i++;
        r->p = GRPC_SLICE_START_PTR(r->s[r->i]);
        r->e = r->p + GRPC_SLICE_LENGTH(r->s[r->i]);
    }
}

static inline int ember_slices_byte(ember_slices *r, uint8_t *b)
{
    if (r->pos >= r->end)
        return 0;
    ember_slices_next(r);
    *b = *r->p++;
    r->pos++;
    return 1;
}

/* Moves n bytes on, copying them to dst unless dst is NULL. */
static inline int ember_slices_copy(ember_slices *r, uint8_t *dst, size_t n)
{
    if (n > r->end - r->pos)
        return 0;
    r->pos += n;
    while (n) {
        ember_slices_next(r);
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

static inline int ember_slices_skip(ember_slices *r, size_t n)
{
    return ember_slices_copy(r, NULL, n);
}

/* A varint of at most 10 bytes, as proto/wire.c reads them. */
static inline int ember_slices_varint(ember_slices *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        uint8_t b;
        if (!ember_slices_byte(r, &b))
            return 0;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* A tag: its field number (1 .. 2^29 - 1) and wire type. */
static inline int ember_slices_tag(ember_slices *r, uint32_t *field, int *wt)
{
    uint64_t t;
    if (!ember_slices_varint(r, &t) || (t >> 3) == 0 || (t >> 3) > 0x1fffffff)
        return 0;
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    return 1;
}

/* A length-delimited field's length, which must fit before `end`. */
static inline int ember_slices_len(ember_slices *r, size_t *len)
{
    uint64_t n;
    if (!ember_slices_varint(r, &n) || n > r->end - r->pos)
        return 0;
    *len = (size_t)n;
    return 1;
}

#endif

/* reply.c — Pull/PushPull replies parsed across gRPC's slices (see reply.h). */
#include "client/reply.h"

#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice_buffer.h>

#include "proto/slices.h"
#include "proto/wire.h"

/* PullResponse fields from r->pos to r->end. */
static int pull_fields(ember_slices *r, ember_reply_pull *m)
{
    while (r->pos < r->end) {
        uint32_t f;
        int wt;
        uint64_t v;
        size_t len;
        if (!ember_slices_tag(r, &f, &wt))
            return 0;
        switch (f) {
        case 1: /* values */
            if (wt != 2 || !ember_slices_len(r, &len))
                return 0;
            m->values_off = r->pos;
            m->values_len = len;
            if (!ember_slices_skip(r, len))
                return 0;
            break;
        case 2: /* dim: uint32, a wider varint truncated as protobuf does */
            if (wt != 0 || !ember_slices_varint(r, &v))
                return 0;
            m->dim = (uint32_t)v;
            break;
        case 3: { /* dtype: int32 */
            if (wt != 0 || !ember_slices_varint(r, &v))
                return 0;
            uint32_t u = (uint32_t)v;
            memcpy(&m->dtype, &u, sizeof u);
            break;
        }
        case 4: /* found */
            if (wt != 2 || !ember_slices_len(r, &len))
                return 0;
            m->found_off = r->pos;
            m->found_len = len;
            if (!ember_slices_skip(r, len))
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
    const grpc_slice_buffer *sb = ember_slices_raw(bb);
    if (!sb)
        return 0;
    ember_slices r;
    ember_slices_init(&r, sb);
    if (!pushpull)
        return pull_fields(&r, out);

    int have_push = 0, have_pull = 0;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        size_t len;
        /* A repeated submessage merges: left to the full decoder. */
        if (!ember_slices_tag(&r, &f, &wt) || wt != 2 || !ember_slices_len(&r, &len))
            return 0;
        if (f == 1 && !have_push) {
            uint8_t buf[64]; /* a PushResponse is three varints: ≤ 25 bytes */
            ember_wire_push_response pr;
            if (len > sizeof buf || !ember_slices_copy(&r, buf, len) ||
                ember_wire_push_response_decode(buf, len, &pr, NULL, 0) != EMBER_WIRE_OK)
                return 0;
            out->push_duplicate = pr.duplicate;
            out->push_term = pr.term;
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

void ember_reply_copy(const grpc_byte_buffer *bb, size_t off, size_t len, uint8_t *dst)
{
    const grpc_slice_buffer *sb = ember_slices_raw(bb);
    ember_slices r;
    ember_slices_init(&r, sb);
    if (ember_slices_skip(&r, off))
        ember_slices_copy(&r, dst, len);
}

size_t ember_reply_slices(const grpc_byte_buffer *bb)
{
    const grpc_slice_buffer *sb = ember_slices_raw(bb);
    return sb ? sb->count : 0;
}

size_t ember_reply_rows(const grpc_byte_buffer *bb, size_t off, size_t row_bytes, size_t cnt,
                        const uint8_t **rows, uint8_t **scratch)
{
    const grpc_slice_buffer *sb = ember_slices_raw(bb);
    if (!sb || !cnt)
        return 0;
    ember_slices r;
    ember_slices_init(&r, sb);
    ember_slices_skip(&r, off);
    size_t copied = 0;
    for (size_t j = 0; j < cnt; j++) {
        ember_slices_next(&r);
        if ((size_t)(r.e - r.p) >= row_bytes) {
            rows[j] = r.p;
            r.p += row_bytes;
            r.pos += row_bytes;
        } else {
            ember_slices_copy(&r, *scratch, row_bytes);
            rows[j] = *scratch;
            *scratch += row_bytes;
            copied++;
        }
    }
    return copied;
}

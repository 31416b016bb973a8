/*
 * reply.h — a Pull or PushPull reply read where gRPC received it. A big reply
 * arrives as many slices; rather than flattening it into one buffer (a copy of
 * every row) and then copying each row again into the caller's order, the
 * message's few framing bytes are parsed across the slices and each value row
 * is located in place. Only a row that straddles two slices is copied, into
 * scratch (at most one row per slice boundary).
 *
 * This reader takes the messages the servers send; anything else (compression,
 * unknown or repeated fields, a malformed message) it declines, and the caller
 * flattens the reply (ember_shard_call_take_reply) and decodes it with
 * proto/wire.h, whose verdict and error message are then the same as ever.
 *
 * Thread-safety: pure functions over a byte buffer nobody is writing.
 */
#ifndef EMBER_CLIENT_REPLY_H
#define EMBER_CLIENT_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

/* What a PullResponse (or a PushPullResponse's pull part) says. */
typedef struct ember_reply_pull {
    uint32_t dim;
    int32_t dtype;
    size_t values_off, values_len; /* the values' bytes: offsets into the message */
    size_t found_off, found_len;   /* found[] (want_found): offsets; len 0 if absent */
    int push_duplicate;            /* PushPull: the push part's `duplicate` */
    uint64_t push_term;            /* PushPull: the push part's `term` */
} ember_reply_pull;

/* Parses bb as a PullResponse (pushpull 0) or a PushPullResponse with a pull part
 * (pushpull 1), with proto/wire.h's decoding rules (absent fields 0, the last of
 * a repeated scalar wins). Returns 1 and fills *out, or 0 when it declines (see
 * above). */
int ember_reply_pull_parse(const grpc_byte_buffer *bb, int pushpull, ember_reply_pull *out);

/* Copies len bytes at message offset off (inside the message) to dst. */
void ember_reply_copy(const grpc_byte_buffer *bb, size_t off, size_t len, uint8_t *dst);

/* Slices in bb: one more than the most rows ember_reply_rows may copy. */
size_t ember_reply_slices(const grpc_byte_buffer *bb);

/* For j < cnt, points rows[j] at the row_bytes bytes at message offset
 * off + j × row_bytes: into bb's slices, or, for a row split over two slices, at
 * a copy in *scratch, which then advances by row_bytes. The range must lie in
 * the message (ember_reply_pull_parse checked values_off/values_len). Returns
 * the number of rows copied. The pointers live as long as bb. */
size_t ember_reply_rows(const grpc_byte_buffer *bb, size_t off, size_t row_bytes, size_t cnt,
                        const uint8_t **rows, uint8_t **scratch);

#endif /* EMBER_CLIENT_REPLY_H */

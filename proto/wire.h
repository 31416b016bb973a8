/*
 * wire.h — a hand-written protobuf codec for the hot ember.v1 messages:
 * PullRequest, PullResponse, PushRequest, PushResponse, PushPullRequest and
 * PushPullResponse (proto/ember/v1/ember.proto), byte-compatible with what protoc
 * generates from that file (tests/unit/test_wire.c checks it against protobuf-c).
 *
 * Why: protobuf-c's generic pack/unpack copies every bulk field and costs ~4× the
 * throughput of reading and writing them in place (docs/GRPC-NOTES.md). Here:
 *
 *  - decode reads one contiguous buffer; `bytes`/`string` fields become spans that
 *    point INTO that buffer (no copy, no allocation). The buffer must outlive the
 *    decoded struct. Bulk data sits at arbitrary offsets: read keys and floats
 *    with memcpy (ember_wire_keys_copy), never through a cast pointer.
 *  - encode is two steps: *_size() gives the exact encoded length and, optionally,
 *    where each bulk field's bytes will sit (ember_wire_off); *_encode() writes the
 *    message into a caller buffer of that length. A bulk span with data == NULL
 *    and len > 0 is a HOLE: the encoder writes its tag and length but not its
 *    bytes, and the caller fills buf + off.<field> afterwards (so a table can
 *    write its rows straight into the outgoing gRPC slice). Spans with data copy.
 *
 * Encoding follows proto3 and protoc's output: fields in field-number order,
 * default values (0, false, empty) omitted, minimal varints, so our encoding of a
 * message is byte-identical to protobuf-c's pack of the same message. Submessages
 * of PushPull* are written when has_push / has_pull is set (even if empty).
 *
 * Decoding follows protobuf's rules: fields in any order, a repeated scalar or
 * bytes field's last occurrence wins, repeated submessages merge (the protobuf
 * spec, as protoc's C++/Python/Go runtimes do; protobuf-c 1.4 keeps only the last
 * one), unknown fields
 * (wire types 0, 1, 2, 5) are skipped, enum values outside the enum are kept
 * as-is (the caller validates). Malformed input — a truncated varint or a varint
 * over 10 bytes, a length past the end, field number 0, wire type 3/4/6/7, a
 * known field with the wrong wire type (protobuf-c accepts any wire type for a
 * bool; we do not), keys, scores or offsets whose length is not a
 * multiple of 8, weights or norms whose length is not a multiple of 4 — returns EMBER_WIRE_INVALID_ARGUMENT with a message naming the
 * field and byte offset; *out is then unspecified.
 *
 * Dependencies: libc only (no gRPC, no protobuf-c, no storage/): the client links
 * it too. Status codes are gRPC's numbers. Little-endian hosts only, like the
 * checkpoint format.
 *
 * Thread-safety: every function is pure (ember_wire_conv_path reads the
 * environment once); use any of them from any thread.
 */
#ifndef EMBER_WIRE_H
#define EMBER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_WIRE_OK 0
#define EMBER_WIRE_INVALID_ARGUMENT 3 /* gRPC's INVALID_ARGUMENT */

/* Field values of ember.v1.DType and ember.v1.PushMode. */
enum { EMBER_WIRE_F32 = 0, EMBER_WIRE_F16 = 1, EMBER_WIRE_BF16 = 2 };
enum {
    EMBER_WIRE_PUSH_GRADIENTS = 0,
    EMBER_WIRE_PUSH_ASSIGN = 1,
    EMBER_WIRE_PUSH_ACCUM = 2,
    EMBER_WIRE_PUSH_INSERT_OR_ASSIGN = 3,
};

/* Field values of ember.v1.AckMode (replication). */
enum { EMBER_WIRE_ACK_DEFAULT = 0, EMBER_WIRE_ACK_ASYNC = 1, EMBER_WIRE_ACK_REPLICATED = 2 };

/* Field values of ember.v1.Combiner (pooled lookups; the arithmetic is in
 * proto/pool.h). */
enum {
    EMBER_WIRE_COMBINER_NONE = 0,
    EMBER_WIRE_COMBINER_SUM = 1,
    EMBER_WIRE_COMBINER_MEAN = 2,
    EMBER_WIRE_COMBINER_SQRTN = 3,
};

/* A `bytes` or `string` field: len bytes at data (not NUL-terminated). On encode,
 * data == NULL with len > 0 is a hole (see above). */
typedef struct ember_wire_bytes {
    const uint8_t *data;
    size_t len;
} ember_wire_bytes;

/* Where an encoded message's bulk bytes start (offsets from the start of the
 * message); 0 for a field that is not written (a real offset is never 0). */
typedef struct ember_wire_off {
    size_t keys, values, scores, found;
} ember_wire_off;

typedef struct ember_wire_pull_request {
    ember_wire_bytes table;  /* 1 */
    ember_wire_bytes keys;   /* 2: n × uint64 LE (decode checks len % 8 == 0) */
    int insert_missing;      /* 3 */
    int32_t dtype;           /* 4: of the reply's values */
    int want_found;          /* 5 */
    ember_wire_bytes scores; /* 6: empty or n × uint64 LE (len % 8 == 0) */
    uint32_t dim;            /* 7: expected table dim, 0 = unchecked */
    ember_wire_bytes offsets; /* 8: empty or (bags+1) × uint64 LE (len % 8 == 0) */
    int32_t combiner;        /* 9: EMBER_WIRE_COMBINER_* */
    ember_wire_bytes weights; /* 10: empty or n × float32 LE (len % 4 == 0) */
} ember_wire_pull_request;

typedef struct ember_wire_pull_response {
    ember_wire_bytes values; /* 1: n × dim in dtype */
    uint32_t dim;            /* 2 */
    int32_t dtype;           /* 3 */
    ember_wire_bytes found;  /* 4: n bytes, 1 = existed */
} ember_wire_pull_response;

typedef struct ember_wire_push_request {
    ember_wire_bytes table;  /* 1 */
    ember_wire_bytes keys;   /* 2: n × uint64 LE (len % 8 == 0) */
    ember_wire_bytes values; /* 3: n × dim in dtype */
    int32_t dtype;           /* 4 */
    int32_t mode;            /* 5: EMBER_WIRE_PUSH_* */
    uint64_t client_id;      /* 6: 0 = no at-most-once */
    uint64_t sequence;       /* 7 */
    ember_wire_bytes scores; /* 8: empty or n × uint64 LE (len % 8 == 0) */
    uint32_t epoch;          /* 9: 0 = the table's; above it raises it (ember.proto) */
    ember_wire_bytes offsets; /* 11: as the pull's */
    int32_t combiner;        /* 12 */
    ember_wire_bytes weights; /* 13: empty or n × float32 LE (len % 4 == 0) */
    ember_wire_bytes norms;  /* 14: empty or bags × float32 LE (len % 4 == 0) */
    int32_t ack;             /* 70: EMBER_WIRE_ACK_* */
    uint32_t ack_replicas;   /* 71: 0 = the table's */
    uint64_t term;           /* 72: the highest leader term the caller saw */
} ember_wire_push_request;

typedef struct ember_wire_push_response {
    uint64_t applied; /* 1 */
    int duplicate;    /* 2 */
    uint64_t term;    /* 70: the leader's term */
} ember_wire_push_response;

typedef struct ember_wire_pushpull_request {
    int has_push, has_pull; /* decode: 1 when the field was present */
    ember_wire_push_request push; /* 1 */
    ember_wire_pull_request pull; /* 2 */
} ember_wire_pushpull_request;

typedef struct ember_wire_pushpull_response {
    int has_push, has_pull;
    ember_wire_push_response push; /* 1 */
    ember_wire_pull_response pull; /* 2 */
} ember_wire_pushpull_response;

/* Decoders: parse buf[0..len) into *out (zeroed first). Returns EMBER_WIRE_OK or
 * EMBER_WIRE_INVALID_ARGUMENT with a NUL-terminated reason in msg[0..msg_cap)
 * (msg may be NULL). Spans in *out point into buf. */
int ember_wire_pull_request_decode(const uint8_t *buf, size_t len,
                                   ember_wire_pull_request *out, char *msg, size_t msg_cap);
int ember_wire_pull_response_decode(const uint8_t *buf, size_t len,
                                    ember_wire_pull_response *out, char *msg, size_t msg_cap);
int ember_wire_push_request_decode(const uint8_t *buf, size_t len,
                                   ember_wire_push_request *out, char *msg, size_t msg_cap);
int ember_wire_push_response_decode(const uint8_t *buf, size_t len,
                                    ember_wire_push_response *out, char *msg, size_t msg_cap);
int ember_wire_pushpull_request_decode(const uint8_t *buf, size_t len,
                                       ember_wire_pushpull_request *out, char *msg,
                                       size_t msg_cap);
int ember_wire_pushpull_response_decode(const uint8_t *buf, size_t len,
                                        ember_wire_pushpull_response *out, char *msg,
                                        size_t msg_cap);

/* Sizes: the exact encoded length; *off (may be NULL) gets the bulk offsets. For
 * PushPull*, push_off / pull_off are offsets from the start of the WHOLE message. */
size_t ember_wire_pull_request_size(const ember_wire_pull_request *m, ember_wire_off *off);
size_t ember_wire_pull_response_size(const ember_wire_pull_response *m, ember_wire_off *off);
size_t ember_wire_push_request_size(const ember_wire_push_request *m, ember_wire_off *off);
size_t ember_wire_push_response_size(const ember_wire_push_response *m);
size_t ember_wire_pushpull_request_size(const ember_wire_pushpull_request *m,
                                        ember_wire_off *push_off, ember_wire_off *pull_off);
size_t ember_wire_pushpull_response_size(const ember_wire_pushpull_response *m,
                                         ember_wire_off *pull_off);

/* Encoders: write the message into buf, which must hold *_size(m) bytes; return
 * the bytes written (== *_size(m)). Holes are left unwritten. */
size_t ember_wire_pull_request_encode(const ember_wire_pull_request *m, uint8_t *buf);
size_t ember_wire_pull_response_encode(const ember_wire_pull_response *m, uint8_t *buf);
size_t ember_wire_push_request_encode(const ember_wire_push_request *m, uint8_t *buf);
size_t ember_wire_push_response_encode(const ember_wire_push_response *m, uint8_t *buf);
size_t ember_wire_pushpull_request_encode(const ember_wire_pushpull_request *m, uint8_t *buf);
size_t ember_wire_pushpull_response_encode(const ember_wire_pushpull_response *m,
                                           uint8_t *buf);

/* The bags of a pooled request with n keys: checks that `offsets` is
 * (bags+1) uint64 LE starting at 0, never decreasing and ending at n, and that
 * `weights` is empty or n finite float32 LE. Sets *bags. Returns EMBER_WIRE_OK or
 * EMBER_WIRE_INVALID_ARGUMENT with the reason in msg (may be NULL). Server and
 * client run this same check. */
int ember_wire_bags_check(ember_wire_bytes offsets, size_t n, ember_wire_bytes weights,
                          size_t *bags, char *msg, size_t msg_cap);
/* offsets[i] of a checked offsets field. */
uint64_t ember_wire_offset(ember_wire_bytes offsets, size_t i);
/* "none", "sum", "mean", "sqrtn"; "unknown" otherwise. Static string. */
const char *ember_wire_combiner_name(int32_t combiner);

/* Bytes per value of a dtype: 4, 2, 2; 0 for an unknown dtype. */
size_t ember_wire_dtype_size(int32_t dtype);
/* "float32", "float16", "bfloat16"; "unknown" otherwise. Static string. */
const char *ember_wire_dtype_name(int32_t dtype);

/* keys.len / 8 keys (LE uint64) copied to an aligned array. */
void ember_wire_keys_copy(ember_wire_bytes keys, uint64_t *dst);

/* Value conversions between float32 arrays and the wire's little-endian bytes.
 * float32 → float16/bfloat16 rounds to nearest, ties to even; overflow gives
 * ±Inf (float16), NaN stays NaN (quiet, sign kept). dst/src byte pointers may
 * be unaligned. `from_wire` reads n values of dtype into dst floats; `to_wire`
 * writes n floats as dtype. Unknown dtypes are the caller's to refuse. */
void ember_wire_to_wire(int32_t dtype, const float *src, size_t n, uint8_t *dst);
void ember_wire_from_wire(int32_t dtype, const uint8_t *src, size_t n, float *dst);

/* Which code the two calls above run for float16/bfloat16:
 * EMBER_WIRE_CONV_X86 (F16C for float16, AVX2 for bfloat16) when the CPU has
 * both, else EMBER_WIRE_CONV_SCALAR. The environment variable EMBER_WIRE_SCALAR
 * set to anything but "" or "0" forces the scalar code. Decided at the first
 * call and fixed for the process. Both paths give the same bits for every input
 * (test_wire.c). */
#define EMBER_WIRE_CONV_SCALAR 0
#define EMBER_WIRE_CONV_X86 1
int ember_wire_conv_path(void);
/* The same conversions on a chosen path (tests, benchmarks); a path the CPU
 * lacks runs the scalar code. */
void ember_wire_to_wire_on(int path, int32_t dtype, const float *src, size_t n, uint8_t *dst);
void ember_wire_from_wire_on(int path, int32_t dtype, const uint8_t *src, size_t n, float *dst);

uint16_t ember_wire_f32_to_f16(float f);
float ember_wire_f16_to_f32(uint16_t h);
uint16_t ember_wire_f32_to_bf16(float f);
float ember_wire_bf16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_WIRE_H */

/*
 * test_payload.c — server/rpc.c's srv_payload_bytes on its own, with real gRPC
 * byte buffers and no server: a request that came in one slice is read where it
 * lies; one that came in several is gathered once, byte for byte, and placed so
 * that the bulk field its method names (a Push's values, a PushPull's push's
 * values, a Pull's keys) starts 64-byte aligned, wherever the slices were cut and
 * however long the fields before it are; malformed framing is gathered all the
 * same (the decoder, not this, refuses it); compressed buffers are inflated.
 */
#include <check.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "server/rpc.h"
#include "server/server.h"
#include "test_util.h"

/* The message's bytes as a byte buffer of slices cut every `cut` bytes. */
static grpc_byte_buffer *sliced(const uint8_t *b, size_t len, size_t cut)
{
    size_t n = (len + cut - 1) / cut;
    grpc_slice *s = malloc((n ? n : 1) * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        size_t l = len - i * cut < cut ? len - i * cut : cut;
        s[i] = grpc_slice_from_copied_buffer((const char *)b + i * cut, l);
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, n);
    for (size_t i = 0; i < n; i++)
        grpc_slice_unref(s[i]);
    free(s);
    return bb;
}

/* A Push of n keys × dim 4 float32 to a table whose name is `name_len` long. */
static uint8_t *push_msg(size_t name_len, size_t n, size_t *len)
{
    static char name[80];
    uint64_t *keys = malloc(n * 8 + 8);
    float *vals = malloc(n * 16 + 16);
    memset(name, 'a', sizeof name);
    for (size_t i = 0; i < n; i++)
        keys[i] = i * 3 + 1;
    for (size_t i = 0; i < n * 4; i++)
        vals[i] = (float)i * 0.5f;
    ember_wire_push_request q = {0};
    q.table.data = (const uint8_t *)name;
    q.table.len = name_len;
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.values.data = (const uint8_t *)vals;
    q.values.len = n * 16;
    q.client_id = 7;
    q.sequence = 300;
    *len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(*len);
    ember_wire_push_request_encode(&q, b);
    free(keys);
    free(vals);
    return b;
}

static srv_worker *worker(void) { return calloc(1, sizeof(srv_worker)); }

static void worker_free(srv_worker *w)
{
    free(w->flat);
    free(w);
}

START_TEST(one_slice_is_read_in_place)
{
    size_t len;
    uint8_t *b = push_msg(5, 100, &len);
    grpc_byte_buffer *bb = sliced(b, len, len);
    srv_worker *w = worker();
    const uint8_t *out;
    size_t got;
    ember_error err;
    ck_assert_int_eq(srv_payload_bytes(w, bb, srv_methods[SRV_M_PUSH].align, &out, &got, &err),
                     0);
    ck_assert_uint_eq(got, len);
    ck_assert_ptr_eq(out, GRPC_SLICE_START_PTR(bb->data.raw.slice_buffer.slices[0]));
    ck_assert_ptr_null(w->flat); /* nothing gathered */
    grpc_byte_buffer_destroy(bb);
    worker_free(w);
    free(b);
}
END_TEST

START_TEST(slices_gathered_with_the_bulk_field_aligned)
{
    srv_worker *w = worker();
    size_t cuts[] = {1, 3, 7, 64, 100, 4093};
    for (size_t name_len = 1; name_len <= 70; name_len += 3)
        for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
            size_t len;
            uint8_t *b = push_msg(name_len, 777, &len);
            grpc_byte_buffer *bb = sliced(b, len, cuts[c]);
            const uint8_t *out;
            size_t got;
            ember_error err;
            ck_assert_int_eq(
                srv_payload_bytes(w, bb, srv_methods[SRV_M_PUSH].align, &out, &got, &err), 0);
            ck_assert_uint_eq(got, len);
            ck_assert_msg(!memcmp(out, b, len), "name %zu cut %zu: bytes differ", name_len,
                          cuts[c]);
            ember_wire_push_request r;
            char msg[200];
            ck_assert_int_eq(ember_wire_push_request_decode(out, got, &r, msg, sizeof msg), 0);
            ck_assert_msg((uintptr_t)r.values.data % 64 == 0, "name %zu cut %zu: values at %p",
                          name_len, cuts[c], (const void *)r.values.data);
            ck_assert_uint_eq(r.sequence, 300);
            grpc_byte_buffer_destroy(bb);
            free(b);
        }
    worker_free(w);
}
END_TEST

START_TEST(pushpull_and_pull_fields_aligned)
{
    srv_worker *w = worker();
    uint64_t keys[513], pkeys[40];
    float g[40 * 4];
    for (size_t i = 0; i < 513; i++)
        keys[i] = i + 10;
    for (size_t i = 0; i < 40; i++)
        pkeys[i] = i;
    for (size_t i = 0; i < 160; i++)
        g[i] = (float)i;
    for (size_t name_len = 1; name_len < 20; name_len += 5) {
        ember_wire_pushpull_request q = {0};
        q.has_push = q.has_pull = 1;
        q.push.table.data = q.pull.table.data = (const uint8_t *)"tttttttttttttttttttt";
        q.push.table.len = q.pull.table.len = name_len;
        q.push.keys.data = (const uint8_t *)pkeys;
        q.push.keys.len = sizeof pkeys;
        q.push.values.data = (const uint8_t *)g;
        q.push.values.len = sizeof g;
        q.pull.keys.data = (const uint8_t *)keys;
        q.pull.keys.len = sizeof keys;
        size_t len = ember_wire_pushpull_request_size(&q, NULL, NULL);
        uint8_t *b = malloc(len);
        ember_wire_pushpull_request_encode(&q, b);
        grpc_byte_buffer *bb = sliced(b, len, 50);
        const uint8_t *out;
        size_t got;
        ember_error err;
        ck_assert_int_eq(
            srv_payload_bytes(w, bb, srv_methods[SRV_M_PUSHPULL].align, &out, &got, &err), 0);
        ck_assert(!memcmp(out, b, len));
        ember_wire_pushpull_request r;
        char msg[200];
        ck_assert_int_eq(ember_wire_pushpull_request_decode(out, got, &r, msg, sizeof msg), 0);
        ck_assert_uint_eq((uintptr_t)r.push.values.data % 64, 0);
        grpc_byte_buffer_destroy(bb);
        /* the Pull alone: its keys */
        len = ember_wire_pull_request_size(&q.pull, NULL);
        b = realloc(b, len);
        ember_wire_pull_request_encode(&q.pull, b);
        bb = sliced(b, len, 33);
        ck_assert_int_eq(srv_payload_bytes(w, bb, srv_methods[SRV_M_PULL].align, &out, &got, &err),
                         0);
        ember_wire_pull_request pr;
        ck_assert_int_eq(ember_wire_pull_request_decode(out, got, &pr, msg, sizeof msg), 0);
        ck_assert_uint_eq((uintptr_t)pr.keys.data % 64, 0);
        grpc_byte_buffer_destroy(bb);
        free(b);
    }
    worker_free(w);
}
END_TEST

START_TEST(malformed_framing_gathered_as_is)
{
    /* a length past the end, a truncated varint, wire type 7: no alignment to
     * find, the bytes come back unchanged for the decoder to refuse */
    const uint8_t bad[][6] = {{0x1a, 0x7f, 1, 2, 3, 4},
                              {0x0a, 0x01, 'x', 0x1a, 0xff, 0xff},
                              {0x0f, 0, 0, 0, 0, 0}};
    srv_worker *w = worker();
    for (size_t i = 0; i < 3; i++) {
        grpc_byte_buffer *bb = sliced(bad[i], 6, 2);
        const uint8_t *out;
        size_t got;
        ember_error err;
        ck_assert_int_eq(srv_payload_bytes(w, bb, srv_methods[SRV_M_PUSH].align, &out, &got, &err),
                         0);
        ck_assert_uint_eq(got, 6);
        ck_assert(!memcmp(out, bad[i], 6));
        ember_wire_push_request r;
        char msg[200];
        ck_assert_int_ne(ember_wire_push_request_decode(out, got, &r, msg, sizeof msg), 0);
        grpc_byte_buffer_destroy(bb);
    }
    worker_free(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("payload");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, one_slice_is_read_in_place);
    tcase_add_test(tc, slices_gathered_with_the_bulk_field_aligned);
    tcase_add_test(tc, pushpull_and_pull_fields_aligned);
    tcase_add_test(tc, malformed_framing_gathered_as_is);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

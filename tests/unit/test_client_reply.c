/* test_client_reply.c — client/reply.h: Pull and PushPull replies read across
 * gRPC's slices. Every message is cut into slices many ways (single bytes,
 * inlined small slices, empty ones, rows split anywhere) and must give what
 * proto/wire.h's decoder gives for the flat bytes, row for row; and whatever the
 * reader accepts, mutated or not, the flat decoder must accept with the same
 * fields (the reader may decline more, never accept differently). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include "client/reply.h"
#include "proto/wire.h"

static uint64_t rng = 12345;
static uint64_t rnd(void)
{
    uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* buf[0..len) as slices: cut mode 0 one slice, 1 single bytes, 2 random sizes
 * (some empty), k ≥ 3 slices of k bytes. */
static grpc_byte_buffer *cut(const uint8_t *buf, size_t len, size_t mode)
{
    grpc_slice *s = malloc((2 * len + 2) * sizeof *s);
    size_t ns = 0, at = 0;
    if (mode == 0) {
        s[ns++] = grpc_slice_from_copied_buffer((const char *)buf, len);
        at = len;
    }
    while (at < len) {
        size_t k = mode == 1 ? 1 : mode == 2 ? (size_t)(rnd() % 40) : mode;
        if (k > len - at)
            k = len - at;
        s[ns++] = grpc_slice_from_copied_buffer((const char *)buf + at, k);
        at += k;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, ns);
    for (size_t i = 0; i < ns; i++)
        grpc_slice_unref(s[i]);
    free(s);
    return bb;
}

/* A PullResponse (or PushPull with one) of n rows × dim of dtype, random values,
 * and (when dup is set) n found flags. */
static uint8_t *make_reply(int pushpull, int32_t dtype, size_t n, uint32_t dim, int dup,
                           size_t *len)
{
    size_t vb = n * dim * ember_wire_dtype_size(dtype);
    uint8_t *vals = malloc(vb + 1);
    for (size_t i = 0; i < vb; i++)
        vals[i] = (uint8_t)rnd();
    uint8_t *found = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        found[i] = (uint8_t)(rnd() & 1);
    ember_wire_pull_response pr = {.values = {vals, vb}, .dim = dim, .dtype = dtype,
                                   .found = {found, dup ? n : 0}};
    uint8_t *buf;
    if (pushpull) {
        ember_wire_pushpull_response m = {.has_push = 1, .has_pull = 1,
                                          .push = {.applied = n, .duplicate = dup}, .pull = pr};
        *len = ember_wire_pushpull_response_size(&m, NULL);
        buf = malloc(*len + 1);
        ember_wire_pushpull_response_encode(&m, buf);
    } else {
        *len = ember_wire_pull_response_size(&pr, NULL);
        buf = malloc(*len + 1);
        ember_wire_pull_response_encode(&pr, buf);
    }
    free(vals);
    free(found);
    return buf;
}

/* The flat decoder's view: 1 and *pr when it accepts. */
static int flat(const uint8_t *buf, size_t len, int pushpull, ember_wire_pull_response *pr,
                int *dup)
{
    *dup = 0;
    if (!pushpull)
        return ember_wire_pull_response_decode(buf, len, pr, NULL, 0) == 0;
    ember_wire_pushpull_response m;
    if (ember_wire_pushpull_response_decode(buf, len, &m, NULL, 0) != 0 || !m.has_pull)
        return 0;
    *pr = m.pull;
    *dup = m.push.duplicate;
    return 1;
}

/* If the reader accepts bb (the bytes buf[0..len)), it agrees with the flat decoder,
 * and every row it points at holds the flat message's bytes. */
static int check_same(const uint8_t *buf, size_t len, grpc_byte_buffer *bb, int pushpull)
{
    ember_reply_pull rp;
    if (!ember_reply_pull_parse(bb, pushpull, &rp))
        return 0;
    ember_wire_pull_response pr;
    int dup;
    ck_assert_msg(flat(buf, len, pushpull, &pr, &dup), "reader accepted what wire.h refuses");
    ck_assert_uint_eq(rp.dim, pr.dim);
    ck_assert_int_eq(rp.dtype, pr.dtype);
    ck_assert_int_eq(rp.push_duplicate, dup);
    ck_assert_uint_eq(rp.values_len, pr.values.len);
    if (pr.values.len)
        ck_assert_uint_eq(rp.values_off, (size_t)(pr.values.data - buf));
    ck_assert_uint_eq(rp.found_len, pr.found.len);
    if (pr.found.len) { /* found[] read back across the slices */
        ck_assert_uint_eq(rp.found_off, (size_t)(pr.found.data - buf));
        uint8_t *f = malloc(pr.found.len);
        ember_reply_copy(bb, rp.found_off, rp.found_len, f);
        ck_assert(memcmp(f, pr.found.data, pr.found.len) == 0);
        free(f);
    }
    size_t ds = ember_wire_dtype_size(pr.dtype);
    if (ds && pr.dim && pr.values.len % (pr.dim * ds) == 0) {
        size_t rb = pr.dim * ds, n = pr.values.len / rb;
        const uint8_t **rows = malloc((n + 1) * sizeof *rows);
        size_t ns = ember_reply_slices(bb);
        uint8_t *scratch = malloc(ns * rb + 1), *sp = scratch;
        size_t copied = ember_reply_rows(bb, rp.values_off, rb, n, rows, &sp);
        ck_assert_uint_le(copied, ns ? ns - 1 : 0);
        ck_assert_uint_eq((size_t)(sp - scratch), copied * rb);
        for (size_t j = 0; j < n; j++)
            ck_assert_msg(memcmp(rows[j], pr.values.data + j * rb, rb) == 0, "row %zu", j);
        free(rows);
        free(scratch);
    }
    return 1;
}

START_TEST(rows_across_any_cut)
{
    grpc_init();
    static const size_t modes[] = {0, 1, 2, 2, 2, 3, 5, 7, 13, 64, 100, 255, 256, 257, 4096};
    for (int pushpull = 0; pushpull <= 1; pushpull++)
        for (int32_t dtype = 0; dtype <= 2; dtype++)
            for (size_t n = 0; n <= 40; n += 13)
                for (uint32_t dim = 1; dim <= 9; dim += 4) {
                    size_t len;
                    uint8_t *buf = make_reply(pushpull, dtype, n, dim, (int)(n & 1), &len);
                    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
                        grpc_byte_buffer *bb = cut(buf, len, modes[m]);
                        ck_assert_msg(check_same(buf, len, bb, pushpull),
                                      "declined a plain reply (pushpull %d, cut %zu)",
                                      pushpull, modes[m]);
                        grpc_byte_buffer_destroy(bb);
                    }
                    free(buf);
                }
    grpc_shutdown();
}
END_TEST

/* What the reader leaves to the flat decoder: a compressed buffer, unknown
 * fields, a repeated submessage, a PushPull without its pull part, no buffer. */
START_TEST(declines_what_it_does_not_take)
{
    grpc_init();
    ember_reply_pull rp;
    ck_assert_int_eq(ember_reply_pull_parse(NULL, 0, &rp), 0);
    size_t len;
    uint8_t *buf = make_reply(0, 0, 3, 2, 0, &len);
    uint8_t *x = malloc(len + 4);
    memcpy(x, buf, len);
    x[len] = 0x48; /* field 9, varint */
    x[len + 1] = 0x01;
    grpc_byte_buffer *bb = cut(x, len + 2, 0);
    ck_assert_int_eq(ember_reply_pull_parse(bb, 0, &rp), 0);
    grpc_byte_buffer_destroy(bb);

    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
    bb = grpc_raw_compressed_byte_buffer_create(&s, 1, GRPC_COMPRESS_GZIP);
    grpc_slice_unref(s);
    ck_assert_int_eq(ember_reply_pull_parse(bb, 0, &rp), 0);
    grpc_byte_buffer_destroy(bb);
    free(buf);
    free(x);

    buf = make_reply(1, 0, 2, 2, 0, &len);
    x = malloc(2 * len);
    memcpy(x, buf, len);
    memcpy(x + len, buf, len); /* both parts twice: protobuf merges them */
    bb = cut(x, 2 * len, 0);
    ck_assert_int_eq(ember_reply_pull_parse(bb, 1, &rp), 0);
    grpc_byte_buffer_destroy(bb);
    ember_wire_pushpull_response only_push = {.has_push = 1, .push = {.applied = 1}};
    size_t pl = ember_wire_pushpull_response_encode(&only_push, x);
    bb = cut(x, pl, 0);
    ck_assert_int_eq(ember_reply_pull_parse(bb, 1, &rp), 0);
    grpc_byte_buffer_destroy(bb);
    free(buf);
    free(x);
    grpc_shutdown();
}
END_TEST

/* Mutated and truncated replies, cut at random: never accepted differently. */
START_TEST(mutations_never_disagree)
{
    grpc_init();
    size_t accepted = 0;
    for (int round = 0; round < 4000; round++) {
        int pushpull = round & 1;
        size_t len;
        uint8_t *buf = make_reply(pushpull, (int32_t)(rnd() % 3), rnd() % 6, 1 + rnd() % 4,
                                  (int)(rnd() & 1), &len);
        size_t flips = rnd() % 4;
        for (size_t f = 0; f < flips && len; f++)
            buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        if (rnd() % 4 == 0 && len)
            len = rnd() % len;
        grpc_byte_buffer *bb = cut(buf, len, rnd() % 3 ? 2 : 1 + rnd() % 8);
        accepted += (size_t)check_same(buf, len, bb, pushpull);
        grpc_byte_buffer_destroy(bb);
        free(buf);
    }
    ck_assert_uint_gt(accepted, 500); /* the mutations left enough valid ones */
    grpc_shutdown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_reply");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rows_across_any_cut);
    tcase_add_test(tc, declines_what_it_does_not_take);
    tcase_add_test(tc, mutations_never_disagree);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

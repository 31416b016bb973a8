/* test_client_dtype.c — the float16 / bfloat16 wire conversions the client sends
 * and receives with (proto/wire.h), checked against a reference written from the
 * formats' definitions: every 16-bit value, every rounding midpoint (ties to
 * even), overflow to infinity, underflow through the subnormals, NaN. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 by definition: (-1)^s × 2^(e-15) × 1.m, subnormals 2^-14 × 0.m. */
static double half_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

START_TEST(f16_every_value)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ember_wire_f16_to_f32((uint16_t)h);
        double want = half_ref((uint16_t)h);
        if (isnan(want)) {
            ck_assert_msg(isnan(f), "0x%04x", h);
            ck_assert_int_eq(signbit(f) != 0, (h >> 15) != 0);
            uint16_t back = ember_wire_f32_to_f16(f);
            ck_assert_msg((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "NaN 0x%04x → 0x%04x", h,
                          back);
            ck_assert_int_eq(back >> 15, h >> 15);
            continue;
        }
        ck_assert_msg((double)f == want && !signbit(f) == !signbit(want), "0x%04x: %g want %g", h,
                      f, want);
        ck_assert_msg(ember_wire_f32_to_f16(f) == h, "round trip 0x%04x → 0x%04x", h,
                      ember_wire_f32_to_f16(f));
    }
}
END_TEST

START_TEST(f16_rounds_to_nearest_even)
{
    for (uint32_t h = 0; h < 0x7bff; h++) { /* every pair of neighbours, both signs */
        for (int neg = 0; neg < 2; neg++) {
            uint16_t sign = neg ? 0x8000 : 0;
            float lo = (float)half_ref((uint16_t)h), hi = (float)half_ref((uint16_t)(h + 1));
            float mid = (lo + hi) / 2; /* exact: 11 significant bits + 1 fit in 24 */
            ck_assert((double)mid == (half_ref((uint16_t)h) + half_ref((uint16_t)(h + 1))) / 2);
            if (neg) {
                lo = -lo;
                hi = -hi;
                mid = -mid;
            }
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            ck_assert_msg(ember_wire_f32_to_f16(mid) == (sign | even), "tie above 0x%04x", h);
            float toward_lo = nextafterf(mid, lo), toward_hi = nextafterf(mid, hi);
            ck_assert_msg(ember_wire_f32_to_f16(toward_lo) == (sign | h), "below mid 0x%04x", h);
            ck_assert_msg(ember_wire_f32_to_f16(toward_hi) == (sign | (h + 1)), "above mid 0x%04x",
                          h);
        }
    }
}
END_TEST

START_TEST(f16_edges)
{
    ck_assert_uint_eq(ember_wire_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(ember_wire_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
    ck_assert_uint_eq(ember_wire_f32_to_f16(65520.0f), 0x7c00); /* tie, to even: Inf */
    ck_assert_uint_eq(ember_wire_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-1e10f), 0xfc00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(FLT_MAX), 0x7c00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(ember_wire_f32_to_f16(0.0f), 0x0000);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-0.0f), 0x8000);
    /* Below the smallest subnormal 2^-24: half of it ties to 0, more rounds up. */
    ck_assert_uint_eq(ember_wire_f32_to_f16(ldexpf(1, -24)), 0x0001);
    ck_assert_uint_eq(ember_wire_f32_to_f16(ldexpf(1, -25)), 0x0000);
    ck_assert_uint_eq(ember_wire_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
    ck_assert_uint_eq(ember_wire_f32_to_f16(-ldexpf(1, -26)), 0x8000);
    ck_assert_uint_eq(ember_wire_f32_to_f16(FLT_MIN), 0x0000);
    ck_assert_uint_eq(ember_wire_f32_to_f16(ldexpf(3, -25)), 0x0002); /* 1.5 ulp: tie to even */
    /* The subnormal/normal boundary rounds into the normals. */
    ck_assert_uint_eq(ember_wire_f32_to_f16(nextafterf(ldexpf(1, -14), 0)), 0x0400);
    uint16_t q = ember_wire_f32_to_f16(NAN);
    ck_assert((q & 0x7c00) == 0x7c00 && (q & 0x3ff));
    q = ember_wire_f32_to_f16(float_of(0xff800001u)); /* signalling NaN, negative */
    ck_assert((q & 0x7c00) == 0x7c00 && (q & 0x3ff) && (q & 0x8000));
}
END_TEST

START_TEST(bf16_every_value)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ember_wire_bf16_to_f32((uint16_t)h);
        int nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (nan) {
            ck_assert(isnan(f));
            uint16_t back = ember_wire_f32_to_bf16(f);
            ck_assert_msg((back & 0x7f80) == 0x7f80 && (back & 0x7f), "NaN 0x%04x → 0x%04x", h,
                          back);
            ck_assert_int_eq(back >> 15, h >> 15);
            continue;
        }
        ck_assert_uint_eq(bits_of(f), h << 16);
        ck_assert_uint_eq(ember_wire_f32_to_bf16(f), h);
        /* Midpoints and their neighbours, from the bit patterns (bf16 is float32's
         * top half, so the neighbour above is h + 1 for every finite h). */
        if ((h & 0x7fff) < 0x7f80) {
            uint32_t mid = (h << 16) | 0x8000;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            ck_assert_msg(ember_wire_f32_to_bf16(float_of(mid)) == even, "tie 0x%04x", h);
            ck_assert_uint_eq(ember_wire_f32_to_bf16(float_of(mid - 1)), h);
            ck_assert_uint_eq(ember_wire_f32_to_bf16(float_of(mid + 1)), h + 1);
        }
    }
    ck_assert_uint_eq(ember_wire_f32_to_bf16(FLT_MAX), 0x7f80); /* rounds up to Inf */
    ck_assert_uint_eq(ember_wire_f32_to_bf16(-INFINITY), 0xff80);
    uint16_t q = ember_wire_f32_to_bf16(float_of(0x7f800001u)); /* NaN whose top half is Inf */
    ck_assert((q & 0x7f80) == 0x7f80 && (q & 0x7f));
    q = ember_wire_f32_to_bf16(float_of(0xffffffffu));
    ck_assert((q & 0x7f80) == 0x7f80 && (q & 0x7f) && (q & 0x8000));
}
END_TEST

START_TEST(arrays_unaligned)
{
    float src[37], back[37];
    for (int i = 0; i < 37; i++)
        src[i] = (float)(i - 18) * 0.375f; /* exact in every dtype */
    static const int32_t dtypes[3] = {EMBER_WIRE_F32, EMBER_WIRE_F16, EMBER_WIRE_BF16};
    uint8_t buf[1 + 37 * 4];
    for (int d = 0; d < 3; d++) {
        size_t sz = ember_wire_dtype_size(dtypes[d]);
        ck_assert_uint_eq(sz, d == 0 ? 4 : 2);
        ember_wire_to_wire(dtypes[d], src, 37, buf + 1); /* odd address, as in a message */
        memset(back, 0, sizeof back);
        ember_wire_from_wire(dtypes[d], buf + 1, 37, back);
        for (int i = 0; i < 37; i++)
            ck_assert_float_eq(back[i], src[i]);
    }
    ck_assert_uint_eq(ember_wire_dtype_size(7), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_dtype");
    TCase *tc = tcase_create("dtype");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, f16_every_value);
    tcase_add_test(tc, f16_rounds_to_nearest_even);
    tcase_add_test(tc, f16_edges);
    tcase_add_test(tc, bf16_every_value);
    tcase_add_test(tc, arrays_unaligned);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

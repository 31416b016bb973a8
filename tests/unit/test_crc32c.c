/* test_crc32c.c — CRC-32C: published check values, both code paths against a
 * bit-at-a-time reference, chaining, and first use from many threads. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "storage/crc32c.h"
#include "test_util.h"

/* The definition, one bit at a time: what both fast paths must equal. */
static uint32_t crc_ref(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* Deterministic pseudo-random bytes (splitmix64). */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (seed += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        p[i] = (uint8_t)(z ^ (z >> 31));
    }
}

static void check_both(const void *buf, size_t len, uint32_t want)
{
    ck_assert_uint_eq(ember_crc32c(buf, len), want);
    ck_assert_uint_eq(ember_crc32c_extend_portable(0, buf, len), want);
    ck_assert_uint_eq(crc_ref(0, buf, len), want);
}

START_TEST(check_value)
{
    check_both("123456789", 9, 0xE3069283u);
    check_both("", 0, 0u);
    check_both(NULL, 0, 0u);
    check_both("a", 1, 0xC1D04330u);
}
END_TEST

/* RFC 3720 (iSCSI) appendix B.4. */
START_TEST(rfc3720_vectors)
{
    uint8_t b[48];
    memset(b, 0, 32);
    check_both(b, 32, 0x8A9136AAu);
    memset(b, 0xff, 32);
    check_both(b, 32, 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    check_both(b, 32, 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    check_both(b, 32, 0x113FDB5Cu);
    static const uint8_t read_pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    check_both(read_pdu, sizeof read_pdu, 0xD9963A56u);
}
END_TEST

/* Every start alignment and every length up to 64: covers the byte head, the
 * 8-byte body and the byte tail of both paths in all their combinations. */
START_TEST(unaligned_short_lengths)
{
    uint8_t buf[64 + 16];
    fill_random(buf, sizeof buf, 1);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 64; len++) {
            uint32_t want = crc_ref(0, buf + off, len);
            ck_assert_msg(ember_crc32c(buf + off, len) == want, "off %zu len %zu", off, len);
            ck_assert_msg(ember_crc32c_extend_portable(0, buf + off, len) == want,
                          "portable off %zu len %zu", off, len);
        }
}
END_TEST

START_TEST(long_buffer_paths_agree)
{
    static uint8_t buf[(1 << 20) + 3];
    fill_random(buf, sizeof buf, 2);
    uint32_t want = crc_ref(0, buf + 3, sizeof buf - 3);
    ck_assert_uint_eq(ember_crc32c(buf + 3, sizeof buf - 3), want);
    ck_assert_uint_eq(ember_crc32c_extend_portable(0, buf + 3, sizeof buf - 3), want);
}
END_TEST

/* extend(crc(a), b) == crc(a ‖ b) at every split, on both paths. */
START_TEST(extend_chains)
{
    uint8_t buf[100];
    fill_random(buf, sizeof buf, 3);
    uint32_t whole = crc_ref(0, buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut++) {
        uint32_t a = ember_crc32c(buf, cut);
        ck_assert_uint_eq(ember_crc32c_extend(a, buf + cut, sizeof buf - cut), whole);
        uint32_t p = ember_crc32c_extend_portable(0, buf, cut);
        ck_assert_uint_eq(ember_crc32c_extend_portable(p, buf + cut, sizeof buf - cut), whole);
    }
}
END_TEST

START_TEST(detects_single_bit_flips)
{
    uint8_t buf[256];
    fill_random(buf, sizeof buf, 4);
    uint32_t base = ember_crc32c(buf, sizeof buf);
    for (size_t bit = 0; bit < sizeof buf * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_uint_ne(ember_crc32c(buf, sizeof buf), base);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}
END_TEST

#if defined(__x86_64__)
START_TEST(hardware_path_on_x86)
{
    /* Every x86-64 machine this project targets has SSE4.2 (2008 on). */
    ck_assert_int_eq(ember_crc32c_hw_available(), 1);
}
END_TEST
#endif

typedef struct race_arg {
    const uint8_t *buf;
    size_t len;
    uint32_t got;
} race_arg;

static void *race_portable(void *p)
{
    race_arg *a = p;
    a->got = ember_crc32c_extend_portable(0, a->buf, a->len);
    return NULL;
}

/* Check forks each test, so this is the process's first use of the portable
 * tables: many threads racing to it must all see them whole. */
START_TEST(portable_first_use_from_threads)
{
    enum { THREADS = 8 };
    static uint8_t buf[4096];
    fill_random(buf, sizeof buf, 5);
    uint32_t want = crc_ref(0, buf, sizeof buf);
    pthread_t th[THREADS];
    race_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (race_arg){buf, sizeof buf, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_portable, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_uint_eq(a[i].got, want);
    }
}
END_TEST

static Suite *crc32c_suite(void)
{
    Suite *s = suite_create("crc32c");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, check_value);
    tcase_add_test(tc, rfc3720_vectors);
    tcase_add_test(tc, unaligned_short_lengths);
    tcase_add_test(tc, long_buffer_paths_agree);
    tcase_add_test(tc, extend_chains);
    tcase_add_test(tc, detects_single_bit_flips);
#if defined(__x86_64__)
    tcase_add_test(tc, hardware_path_on_x86);
#endif
    tcase_add_test(tc, portable_first_use_from_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(crc32c_suite());
}

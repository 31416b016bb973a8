/* test_client_batch.c — the client's key handling without a server: the pinned
 * key→shard function and how little of the key space moves when a shard is
 * added; dedup, shard grouping and caller-order mapping; gradient merging. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "client/batch.h"
#include "ember/ember.h"
#include "proto/shard_map.h"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Checks every invariant of a build against the keys it came from (plain ifs:
 * a Check assertion per element would dominate the run time). */
#define REQUIRE(cond) \
    do { \
        if (!(cond)) \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond); \
    } while (0)

/* Values from an independent (Python) implementation of the documented function.
 * They must never change: every client, the servers' checkpoint import and the
 * resharding tool agree on where a key lives. */
START_TEST(shard_of_pinned)
{
    static const uint64_t keys[8] = {0, 1, 2, 42, 12345, 0xdeadbeef, UINT64_C(1) << 40,
                                     UINT64_C(0xFFFFFFFFFFFFFFFB)};
    static const struct {
        unsigned n;
        unsigned want[8];
    } cases[] = {
        {2, {0, 1, 0, 1, 1, 0, 0, 0}},
        {3, {0, 2, 0, 1, 1, 0, 0, 0}},
        {7, {6, 4, 6, 5, 6, 6, 3, 3}},
        {16, {15, 15, 13, 9, 6, 6, 11, 3}},
        {1000, {567, 751, 820, 428, 835, 304, 705, 672}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int k = 0; k < 8; k++)
            ck_assert_msg(ember_shard_of(keys[k], cases[c].n) == cases[c].want[k],
                          "shard_of(%llu, %u) = %u, want %u", (unsigned long long)keys[k],
                          cases[c].n, ember_shard_of(keys[k], cases[c].n), cases[c].want[k]);
    ck_assert_uint_eq(ember_shard_of(42, 0), 0);
    ck_assert_uint_eq(ember_shard_of(42, 1), 0);
}
END_TEST

/* N → N+1 shards: about 1/(N+1) of the keys move, all of them to the new shard;
 * and every shard gets about 1/N of the keys. */
/* The server's ownership check (proto/shard_map.h): the blocked computation
 * finds exactly the first key that ember_shard_of does not map to `self`, for
 * every count, self and length (lanes left over at the end included). */
START_TEST(shard_first_other_is_shard_of)
{
    enum { N = 4099 };
    uint64_t *keys = malloc(N * sizeof *keys);
    uint64_t seed = 99;
    for (size_t i = 0; i < N; i++)
        keys[i] = splitmix(&seed);
    const unsigned counts[] = {1, 2, 3, 5, 8, 13, 64, 100, 1000};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        unsigned n = counts[c];
        for (unsigned self = 0; self < n && self < 4; self++) {
            /* keys of self only, then one of another shard at each position */
            size_t own = 0;
            for (size_t i = 0; i < N; i++)
                if (ember_shard_of(keys[i], n) == self)
                    keys[own++] = keys[i];
            ck_assert_uint_eq(ember_shard_first_other((const uint8_t *)keys, own, n, self),
                              own);
            if (n == 1)
                continue;
            uint64_t other = 0;
            for (uint64_t k = 1; !other; k++)
                if (ember_shard_of(k, n) != self)
                    other = k;
            for (size_t at = 0; at < 20 && at < own; at++) {
                size_t pos = at < 10 ? at : own - 1 - (at - 10);
                uint64_t keep = keys[pos];
                keys[pos] = other;
                for (size_t len = pos + 1; len <= pos + 9 && len <= own; len++)
                    ck_assert_uint_eq(
                        ember_shard_first_other((const uint8_t *)keys, len, n, self), pos);
                keys[pos] = keep;
            }
            for (size_t i = 0; i < N; i++) /* fresh keys for the next self */
                keys[i] = splitmix(&seed);
        }
    }
    /* unaligned keys */
    uint8_t *raw = malloc(8 * 64 + 1);
    for (size_t i = 0; i < 64; i++) {
        uint64_t k = 1000 + i;
        memcpy(raw + 1 + 8 * i, &k, 8);
    }
    size_t want = 64;
    for (size_t i = 0; i < 64 && want == 64; i++)
        if (ember_shard_of(1000 + i, 3) != 2)
            want = i;
    ck_assert_uint_eq(ember_shard_first_other(raw + 1, 64, 3, 2), want);
    ck_assert_uint_eq(ember_shard_first_other(raw + 1, 64, 1, 1), 0); /* no shard 1 of 1 */
    free(raw);
    free(keys);
}
END_TEST

START_TEST(shard_of_moves_little)
{
    const size_t nkeys = 200000;
    for (unsigned n = 1; n <= 12; n++) {
        size_t moved = 0, per[13] = {0};
        uint64_t seed = 7 * n;
        for (size_t i = 0; i < nkeys; i++) {
            uint64_t k = splitmix(&seed) % UINT64_C(0xFFFFFFFFFFFFFFFC);
            unsigned a = ember_shard_of(k, n), b = ember_shard_of(k, n + 1);
            REQUIRE(a < n && b < n + 1);
            per[a]++;
            if (a != b) {
                REQUIRE(b == n); /* only ever to the new shard */
                moved++;
            }
        }
        double frac = (double)moved / nkeys, want = 1.0 / (n + 1);
        ck_assert_msg(frac > want * 0.95 && frac < want * 1.05, "n=%u moved %.4f, want %.4f", n,
                      frac, want);
        for (unsigned s = 0; s < n; s++) {
            double share = (double)per[s] / nkeys;
            ck_assert_msg(share > 0.95 / n && share < 1.05 / n, "n=%u shard %u has %.4f", n, s,
                          share);
        }
    }
    /* Sequential keys (ids from a counter) spread too. */
    size_t per[4] = {0};
    for (uint64_t k = 0; k < 40000; k++)
        per[ember_shard_of(k, 4)]++;
    for (int s = 0; s < 4; s++)
        ck_assert_msg(per[s] > 9500 && per[s] < 10500, "shard %d has %zu of 40000", s, per[s]);
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void check_build(const ember_batch *b, const uint64_t *keys, size_t n, unsigned nshards)
{
    REQUIRE(b->n == n);
    REQUIRE(b->shard_off[0] == 0);
    REQUIRE(b->shard_off[nshards] == b->m);
    for (unsigned s = 0; s < nshards; s++) {
        REQUIRE(b->shard_off[s] <= b->shard_off[s + 1]);
        for (size_t g = b->shard_off[s]; g < b->shard_off[s + 1]; g++)
            REQUIRE(ember_shard_of(b->gkeys[g], nshards) == s);
        /* Within a shard, first-occurrence order. */
        for (size_t g = b->shard_off[s] + 1; g < b->shard_off[s + 1]; g++)
            REQUIRE(b->gfirst[g - 1] < b->gfirst[g]);
    }
    /* The unique keys are exactly the distinct caller keys. */
    uint64_t *u = malloc((b->m + 1) * sizeof *u), *k = malloc((n + 1) * sizeof *k);
    memcpy(u, b->gkeys, b->m * sizeof *u);
    memcpy(k, keys, n * sizeof *k);
    qsort(u, b->m, sizeof *u, cmp_u64);
    qsort(k, n, sizeof *k, cmp_u64);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || k[i] != k[i - 1])
            REQUIRE(distinct < b->m && u[distinct++] == k[i]);
    REQUIRE(distinct == b->m);
    free(u);
    free(k);
    size_t total = 0;
    for (size_t g = 0; g < b->m; g++) {
        REQUIRE(keys[b->gfirst[g]] == b->gkeys[g]);
        total += b->gcount[g];
    }
    REQUIRE(total == n);
    for (size_t i = 0; i < n; i++) {
        REQUIRE(b->idx[i] < b->m);
        REQUIRE(b->gkeys[b->idx[i]] == keys[i]);
        REQUIRE(b->gfirst[b->idx[i]] <= i);
    }
}

START_TEST(dedup_small)
{
    const uint64_t keys[] = {5, 9, 5, 5, 1, 9, 77, 0};
    ember_batch b;
    ember_batch_init(&b);
    ck_assert_int_eq(ember_batch_build(&b, keys, 8, 3, NULL), 0);
    ck_assert_uint_eq(b.m, 5);
    check_build(&b, keys, 8, 3);
    ck_assert_uint_eq(b.gcount[b.idx[0]], 3);
    ck_assert_uint_eq(b.gcount[b.idx[1]], 2);
    ck_assert_uint_eq(b.gcount[b.idx[4]], 1);
    ck_assert_uint_eq(b.idx[0], b.idx[2]);
    ck_assert_uint_eq(b.idx[0], b.idx[3]);
    ck_assert_uint_eq(b.idx[1], b.idx[5]);

    /* Empty, one shard, all equal: the same buffers reused. */
    ck_assert_int_eq(ember_batch_build(&b, keys, 0, 3, NULL), 0);
    ck_assert_uint_eq(b.m, 0);
    const uint64_t same[5] = {3, 3, 3, 3, 3};
    ck_assert_int_eq(ember_batch_build(&b, same, 5, 1, NULL), 0);
    ck_assert_uint_eq(b.m, 1);
    check_build(&b, same, 5, 1);
    ember_batch_free(&b);
}
END_TEST

START_TEST(dedup_random_reused)
{
    ember_batch b;
    ember_batch_init(&b);
    uint64_t seed = 99;
    for (int round = 0; round < 40; round++) {
        size_t n = 1 + splitmix(&seed) % 20000;
        unsigned nshards = 1 + (unsigned)(splitmix(&seed) % 9);
        uint64_t range = round % 3 == 0 ? 50 : (round % 3 == 1 ? n : UINT64_C(1) << 62);
        uint64_t *keys = malloc(n * sizeof *keys);
        for (size_t i = 0; i < n; i++)
            keys[i] = splitmix(&seed) % range;
        ck_assert_int_eq(ember_batch_build(&b, keys, n, nshards, NULL), 0);
        check_build(&b, keys, n, nshards);
        if (range == 50)
            ck_assert_uint_le(b.m, 50);
        free(keys);
    }
    ember_batch_free(&b);
}
END_TEST

START_TEST(reserved_keys_refused)
{
    ember_batch b;
    ember_batch_init(&b);
    for (uint64_t r = UINT64_C(0xFFFFFFFFFFFFFFFC); r != 0; r++) {
        const uint64_t keys[] = {1, 2, r, 4};
        ember_error e;
        ck_assert_int_eq(ember_batch_build(&b, keys, 4, 2, &e), EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(e.message, "key 2"));
        ck_assert_ptr_nonnull(strstr(e.message, "reserved"));
    }
    const uint64_t ok[] = {UINT64_C(0xFFFFFFFFFFFFFFFB)};
    ck_assert_int_eq(ember_batch_build(&b, ok, 1, 2, NULL), 0);
    ember_batch_free(&b);
}
END_TEST

/* The map is not cleared between builds: a build refused half-way (a reserved
 * key after some keys were entered) and the generation counter wrapping must
 * leave nothing behind for the next build to see. */
START_TEST(map_reuse_after_refusal_and_wrap)
{
    ember_batch b;
    ember_batch_init(&b);
    uint64_t keys[300];
    for (unsigned shards = 1; shards <= 3; shards++) {
        for (size_t i = 0; i < 300; i++)
            keys[i] = i % 100;
        keys[250] = UINT64_C(0xFFFFFFFFFFFFFFFF);
        ember_error e;
        ck_assert_int_eq(ember_batch_build(&b, keys, 300, shards, &e), EMBER_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(e.message, "key 250"));
        keys[250] = 7;
        for (size_t i = 0; i < 300; i++)
            keys[i] += 50; /* half the keys were in the refused build's map */
        ck_assert_int_eq(ember_batch_build(&b, keys, 300, shards, NULL), 0);
        check_build(&b, keys, 300, shards);
        ck_assert_uint_eq(b.m, 100);
        b.b_gen = UINT32_MAX; /* the next build wraps to generation 0 */
        ck_assert_int_eq(ember_batch_build(&b, keys + 100, 200, shards, NULL), 0);
        check_build(&b, keys + 100, 200, shards);
        ck_assert_uint_eq(b.m, 100);
        ck_assert_int_eq(ember_batch_build(&b, keys, 300, shards, NULL), 0);
        check_build(&b, keys, 300, shards);
        ck_assert_uint_eq(b.m, 100);
    }
    ember_batch_free(&b);
}
END_TEST

START_TEST(merge_sums_in_caller_order)
{
    const uint32_t dim = 3;
    const uint64_t keys[] = {10, 20, 10, 30, 10, 20};
    float grads[6 * 3];
    for (int i = 0; i < 18; i++)
        grads[i] = (float)(i + 1) * 0.5f;
    ember_batch b;
    ember_batch_init(&b);
    ck_assert_int_eq(ember_batch_build(&b, keys, 6, 2, NULL), 0);
    ck_assert_int_eq(ember_batch_merge(&b, grads, dim, NULL), 0);
    for (size_t g = 0; g < b.m; g++) {
        float want[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++)
            if (keys[i] == b.gkeys[g])
                for (uint32_t d = 0; d < dim; d++)
                    want[d] += grads[i * dim + d];
        for (uint32_t d = 0; d < dim; d++)
            ck_assert_float_eq(b.rows[g][d], want[d]);
    }
    /* A key seen once is sent straight from the caller's array. */
    ck_assert_ptr_eq(b.rows[b.idx[3]], grads + 3 * dim);

    /* No duplicates: every row is the caller's. */
    const uint64_t uniq[] = {1, 2, 3};
    ck_assert_int_eq(ember_batch_build(&b, uniq, 3, 2, NULL), 0);
    ck_assert_int_eq(ember_batch_merge(&b, grads, dim, NULL), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(b.rows[b.idx[i]], grads + i * dim);
    ember_batch_free(&b);
}
END_TEST

/* Many duplicates, random: the merged sum equals a float64 sum to float precision,
 * and exactly the float sum taken in caller order. */
START_TEST(merge_random)
{
    const uint32_t dim = 8;
    const size_t n = 5000;
    uint64_t seed = 5;
    uint64_t *keys = malloc(n * sizeof *keys);
    float *grads = malloc(n * dim * sizeof *grads);
    for (size_t i = 0; i < n; i++) {
        keys[i] = splitmix(&seed) % 300;
        for (uint32_t d = 0; d < dim; d++)
            grads[i * dim + d] = (float)((int64_t)(splitmix(&seed) % 2001) - 1000) / 256.0f;
    }
    ember_batch b;
    ember_batch_init(&b);
    ck_assert_int_eq(ember_batch_build(&b, keys, n, 4, NULL), 0);
    ck_assert_int_eq(ember_batch_merge(&b, grads, dim, NULL), 0);
    float *want = calloc(b.m * dim, sizeof *want);
    int *seen = calloc(b.m, sizeof *seen);
    for (size_t i = 0; i < n; i++) {
        size_t g = b.idx[i];
        for (uint32_t d = 0; d < dim; d++)
            want[g * dim + d] = seen[g] ? want[g * dim + d] + grads[i * dim + d] : grads[i * dim + d];
        seen[g] = 1;
    }
    for (size_t g = 0; g < b.m; g++)
        for (uint32_t d = 0; d < dim; d++)
            ck_assert_float_eq(b.rows[g][d], want[g * dim + d]);
    free(want);
    free(seen);
    free(keys);
    free(grads);
    ember_batch_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_batch");
    TCase *tc = tcase_create("batch");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, shard_of_pinned);
    tcase_add_test(tc, shard_of_moves_little);
    tcase_add_test(tc, shard_first_other_is_shard_of);
    tcase_add_test(tc, dedup_small);
    tcase_add_test(tc, dedup_random_reused);
    tcase_add_test(tc, reserved_keys_refused);
    tcase_add_test(tc, map_reuse_after_refusal_and_wrap);
    tcase_add_test(tc, merge_sums_in_caller_order);
    tcase_add_test(tc, merge_random);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

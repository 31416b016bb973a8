/*
 * test_dedup.c — server/dedup.c: the at-most-once window per client: duplicates,
 * out-of-order sequences, the window's edge, aborts, and forgetting the least
 * recently seen client when the table of clients is full.
 */
#include <check.h>

#include "server/dedup.h"
#include "test_util.h"

START_TEST(duplicates_and_out_of_order)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 10), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 10), 0);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 8), 1);  /* late, new */
    ck_assert_int_eq(srv_dedup_begin(d, 1, 9), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 8), 0);
    ck_assert_int_eq(srv_dedup_begin(d, 2, 10), 1); /* another client */
    ck_assert_int_eq(srv_dedup_begin(d, 1, 0), 1);  /* sequence 0 is a sequence */
    ck_assert_int_eq(srv_dedup_begin(d, 1, 0), 0);
    ck_assert_uint_eq(srv_dedup_clients(d), 2);
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(window_edge)
{
    srv_dedup *d = srv_dedup_create(0);
    uint64_t hi = 5000;
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi), 1);
    /* the last SRV_DEDUP_WINDOW sequences are remembered exactly */
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi - (SRV_DEDUP_WINDOW - 1)), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi - (SRV_DEDUP_WINDOW - 1)), 0);
    /* older than the window: cannot tell, so treated as seen (never applied twice) */
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi - SRV_DEDUP_WINDOW), 0);
    /* sliding up clears the bits it passes over */
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi + 10), 1);
    for (uint64_t s = hi + 1; s < hi + 10; s++)
        ck_assert_int_eq(srv_dedup_begin(d, 7, s), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi), 0);
    /* a jump past the whole window forgets everything below it */
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi + 100000), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi + 100000 - 1), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 7, hi + 10), 0); /* too old now */
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(abort_unmarks)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 3, 1), 1);
    srv_dedup_abort(d, 3, 1);
    ck_assert_int_eq(srv_dedup_begin(d, 3, 1), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 3, 1), 0);
    srv_dedup_abort(d, 99, 1); /* unknown client: nothing */
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(least_recently_seen_client_forgotten)
{
    srv_dedup *d = srv_dedup_create(4);
    for (uint64_t c = 1; c <= 4; c++)
        ck_assert_int_eq(srv_dedup_begin(d, c, 1), 1);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 2), 1); /* client 1 seen again: 2 is oldest */
    ck_assert_int_eq(srv_dedup_begin(d, 5, 1), 1); /* evicts client 2 */
    ck_assert_uint_eq(srv_dedup_clients(d), 4);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 1), 0); /* still remembered */
    ck_assert_int_eq(srv_dedup_begin(d, 2, 1), 1); /* forgotten: applied again */
    srv_dedup_destroy(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dedup");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, duplicates_and_out_of_order);
    tcase_add_test(tc, window_edge);
    tcase_add_test(tc, abort_unmarks);
    tcase_add_test(tc, least_recently_seen_client_forgotten);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

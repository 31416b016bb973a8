/*
 * test_dedup.c — server/dedup.c: the at-most-once window per client: duplicates,
 * out-of-order sequences, the window's edge, aborts, and forgetting the least
 * recently seen client when the table of clients is full; a retry of a push
 * still being applied waits for it, and a client with such a push is kept.
 */
#define _GNU_SOURCE /* usleep */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "server/dedup.h"
#include "test_util.h"

/* A push that is admitted and then applied at once: begin, and end when new. */
static int begin_end(srv_dedup *d, uint64_t client, uint64_t seq)
{
    int fresh = srv_dedup_begin(d, client, seq);
    if (fresh)
        srv_dedup_end(d, client, seq);
    return fresh;
}

START_TEST(duplicates_and_out_of_order)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(begin_end(d, 1, 10), 1);
    ck_assert_int_eq(begin_end(d, 1, 10), 0);
    ck_assert_int_eq(begin_end(d, 1, 8), 1);  /* late, new */
    ck_assert_int_eq(begin_end(d, 1, 9), 1);
    ck_assert_int_eq(begin_end(d, 1, 8), 0);
    ck_assert_int_eq(begin_end(d, 2, 10), 1); /* another client */
    ck_assert_int_eq(begin_end(d, 1, 0), 1);  /* sequence 0 is a sequence */
    ck_assert_int_eq(begin_end(d, 1, 0), 0);
    ck_assert_uint_eq(srv_dedup_clients(d), 2);
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(window_edge)
{
    srv_dedup *d = srv_dedup_create(0);
    uint64_t hi = 5000;
    ck_assert_int_eq(begin_end(d, 7, hi), 1);
    /* the last SRV_DEDUP_WINDOW sequences are remembered exactly */
    ck_assert_int_eq(begin_end(d, 7, hi - (SRV_DEDUP_WINDOW - 1)), 1);
    ck_assert_int_eq(begin_end(d, 7, hi - (SRV_DEDUP_WINDOW - 1)), 0);
    /* older than the window: cannot tell, so treated as seen (never applied twice) */
    ck_assert_int_eq(begin_end(d, 7, hi - SRV_DEDUP_WINDOW), 0);
    /* sliding up clears the bits it passes over */
    ck_assert_int_eq(begin_end(d, 7, hi + 10), 1);
    for (uint64_t s = hi + 1; s < hi + 10; s++)
        ck_assert_int_eq(begin_end(d, 7, s), 1);
    ck_assert_int_eq(begin_end(d, 7, hi), 0);
    /* a jump past the whole window forgets everything below it */
    ck_assert_int_eq(begin_end(d, 7, hi + 100000), 1);
    ck_assert_int_eq(begin_end(d, 7, hi + 100000 - 1), 1);
    ck_assert_int_eq(begin_end(d, 7, hi + 10), 0); /* too old now */
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(abort_unmarks)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 3, 1), 1);
    srv_dedup_abort(d, 3, 1);
    ck_assert_int_eq(begin_end(d, 3, 1), 1);
    ck_assert_int_eq(begin_end(d, 3, 1), 0);
    srv_dedup_abort(d, 99, 1); /* unknown client: nothing */
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(least_recently_seen_client_forgotten)
{
    srv_dedup *d = srv_dedup_create(4);
    for (uint64_t c = 1; c <= 4; c++)
        ck_assert_int_eq(begin_end(d, c, 1), 1);
    ck_assert_int_eq(begin_end(d, 1, 2), 1); /* client 1 seen again: 2 is oldest */
    ck_assert_int_eq(begin_end(d, 5, 1), 1); /* evicts client 2 */
    ck_assert_uint_eq(srv_dedup_clients(d), 4);
    ck_assert_int_eq(begin_end(d, 1, 1), 0); /* still remembered */
    ck_assert_int_eq(begin_end(d, 2, 1), 1); /* forgotten: applied again */
    srv_dedup_destroy(d);
}
END_TEST

typedef struct retry {
    srv_dedup *d;
    uint64_t client, seq;
    atomic_int done;  /* 0 while srv_dedup_begin waits */
    int result;
} retry;

static void *retry_main(void *p)
{
    retry *r = p;
    r->result = srv_dedup_begin(r->d, r->client, r->seq);
    atomic_store(&r->done, 1);
    return NULL;
}

/* 1 if the retry is still waiting after a while (it may not have started yet, so
 * only "still waiting" is meaningful; "done" would fail the test below). */
static int still_waiting(retry *r)
{
    usleep(50000);
    return !atomic_load(&r->done);
}

/* The race a coalesced batch widened: a retry of a push still queued or running
 * must not be answered "duplicate" before the push is in the table. */
START_TEST(retry_waits_for_pending_original)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 10), 1); /* the original, being applied */
    retry r = {d, 1, 10, 0, -1};
    pthread_t t;
    pthread_create(&t, NULL, retry_main, &r);
    ck_assert(still_waiting(&r));
    ck_assert_int_eq(begin_end(d, 1, 11), 1); /* other pushes of the client go on */
    ck_assert_int_eq(begin_end(d, 2, 10), 1);
    ck_assert(still_waiting(&r));
    srv_dedup_end(d, 1, 10); /* applied: the retry is a duplicate */
    pthread_join(t, NULL);
    ck_assert_int_eq(r.result, 0);

    /* an original that was refused: the waiting retry goes through instead */
    ck_assert_int_eq(srv_dedup_begin(d, 1, 20), 1);
    retry r2 = {d, 1, 20, 0, -1};
    pthread_create(&t, NULL, retry_main, &r2);
    ck_assert(still_waiting(&r2));
    srv_dedup_abort(d, 1, 20);
    pthread_join(t, NULL);
    ck_assert_int_eq(r2.result, 1); /* now pending for the retry */
    srv_dedup_end(d, 1, 20);
    ck_assert_int_eq(begin_end(d, 1, 20), 0);
    srv_dedup_destroy(d);
}
END_TEST

/* A waiting retry whose pair the window slides past is a duplicate (never
 * applied twice), and is woken by the slide. */
START_TEST(window_slide_wakes_retry_as_duplicate)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 4, 100), 1);
    retry r = {d, 4, 100, 0, -1};
    pthread_t t;
    pthread_create(&t, NULL, retry_main, &r);
    ck_assert(still_waiting(&r));
    ck_assert_int_eq(begin_end(d, 4, 100 + SRV_DEDUP_WINDOW), 1);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.result, 0);
    srv_dedup_end(d, 4, 100); /* the original ends outside the window: nothing */
    srv_dedup_destroy(d);
}
END_TEST

START_TEST(client_with_pending_push_not_forgotten)
{
    srv_dedup *d = srv_dedup_create(2);
    ck_assert_int_eq(srv_dedup_begin(d, 1, 1), 1); /* pending */
    ck_assert_int_eq(begin_end(d, 2, 1), 1);
    ck_assert_int_eq(begin_end(d, 3, 1), 1); /* full: evicts 2, not 1 (oldest, pending) */
    ck_assert_uint_eq(srv_dedup_clients(d), 2);
    srv_dedup_end(d, 1, 1);
    ck_assert_int_eq(begin_end(d, 1, 1), 0); /* still remembered */
    ck_assert_int_eq(begin_end(d, 2, 1), 1); /* forgotten */
    srv_dedup_destroy(d);
}
END_TEST

/* The window saved at a cut: ended pairs are in it; a pair pending at the cut
 * is in it iff the write that applied it ran before the cut; an aborted one
 * and one begun after the cut are not. Restored into a fresh window, the pairs
 * in it are duplicates and the others are new. */
START_TEST(window_captured_at_a_cut_and_restored)
{
    srv_dedup *d = srv_dedup_create(0);
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    uint64_t key = 7;
    float row[4] = {1, 1, 1, 1};
    ck_assert_int_eq(srv_dedup_begin(d, 5, 1), 1);
    srv_dedup_end(d, 5, 1);                          /* ended before the cut: in */
    ck_assert_int_eq(srv_dedup_begin(d, 5, 2), 1);   /* pending, written before: in */
    ck_assert_int_eq(ember_table_insert_or_assign(t, &key, 1, row, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(srv_dedup_begin(d, 5, 3), 1);   /* pending, written after: out */
    ck_assert_int_eq(srv_dedup_begin(d, 5, 4), 1);   /* pending, aborted: out */
    ck_assert_int_eq(srv_dedup_begin(d, 6, 9), 1);   /* another client, ended: in */
    srv_dedup_end(d, 6, 9);
    ember_table_snapshot *s = NULL;
    ck_assert_int_eq(ember_table_snapshot_begin(t, NULL, NULL, &s, NULL), EMBER_OK);
    srv_dedup_capture *c = srv_dedup_capture_begin(d, ember_table_snapshot_cut_epoch(s));
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(srv_dedup_capture_begin(d, 1)); /* one at a time */
    srv_dedup_end(d, 5, 2); /* its write (above) was before the cut */
    ck_assert_int_eq(ember_table_insert_or_assign(t, &key, 1, row, NULL, NULL), EMBER_OK);
    srv_dedup_end(d, 5, 3);
    srv_dedup_abort(d, 5, 4);
    ck_assert_int_eq(srv_dedup_begin(d, 5, 5), 1); /* after the cut: out */
    srv_dedup_end(d, 5, 5);
    uint8_t *buf = NULL;
    size_t len = 0, left = 9, clients = 0;
    ck_assert_int_eq(srv_dedup_capture_finish(d, c, 1000, &buf, &len, &left), 0);
    ck_assert_uint_eq(left, 0);
    ember_table_snapshot_end(s);

    srv_dedup *r = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_restore(r, buf, len - 1, &clients), -1);
    ck_assert_int_eq(srv_dedup_restore(r, buf, len, &clients), 0);
    ck_assert_uint_eq(clients, 2);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 1), 0);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 2), 0);
    ck_assert_int_eq(srv_dedup_begin(r, 6, 9), 0);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 3), 1);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 4), 1);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 5), 1);
    free(buf);
    srv_dedup_destroy(r);
    srv_dedup_destroy(d);
    ember_table_destroy(t);
}
END_TEST

/* A pair still pending when the save ends is left out, counted. */
START_TEST(window_leaves_out_a_pair_still_pending)
{
    srv_dedup *d = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_begin(d, 5, 1), 1);
    srv_dedup_capture *c = srv_dedup_capture_begin(d, UINT64_MAX);
    uint8_t *buf = NULL;
    size_t len = 0, left = 0, clients = 0;
    ck_assert_int_eq(srv_dedup_capture_finish(d, c, 10, &buf, &len, &left), 0);
    ck_assert_uint_eq(left, 1);
    srv_dedup_end(d, 5, 1);
    srv_dedup *r = srv_dedup_create(0);
    ck_assert_int_eq(srv_dedup_restore(r, buf, len, &clients), 0);
    ck_assert_int_eq(srv_dedup_begin(r, 5, 1), 1);
    free(buf);
    srv_dedup_destroy(r);
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
    tcase_add_test(tc, retry_waits_for_pending_original);
    tcase_add_test(tc, window_slide_wakes_retry_as_duplicate);
    tcase_add_test(tc, client_with_pending_push_not_forgotten);
    tcase_add_test(tc, window_captured_at_a_cut_and_restored);
    tcase_add_test(tc, window_leaves_out_a_pair_still_pending);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

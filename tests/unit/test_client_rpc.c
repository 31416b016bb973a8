/* test_client_rpc.c — client/rpc.h without a server: target checking, and that
 * calls to a closed port end in UNAVAILABLE quickly and within their deadline. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>

#include "client/rpc.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(target_check)
{
    static const char *const good[] = {"localhost:7070", "10.0.0.1:1", "[::1]:65535",
                                       "ember-0.ember.ns.svc.cluster.local:7070",
                                       "unix:/tmp/sock", "dns:///h:1", "ipv4:127.0.0.1:5"};
    static const char *const bad[] = {"", "localhost", "localhost:", ":7070", "h:0",
                                      "h:65536", "h:70x", "h:123456", "a:b:1", "[::1]",
                                      "[]:1", "h o:1", "a,b:1"};
    ember_error e;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(ember_rpc_target_check(good[i], &e) == 0, "refused %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(ember_rpc_target_check(bad[i], &e) == EMBER_INVALID_ARGUMENT,
                      "accepted '%s'", bad[i]);
        ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    }
    ck_assert_int_eq(ember_rpc_target_check(NULL, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_null(ember_rpc_channel_open("nohost", NULL, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "nohost"));
}
END_TEST

START_TEST(unary_closed_port)
{
    ember_error e;
    grpc_channel *ch = ember_rpc_channel_open("127.0.0.1:1", NULL, &e);
    ck_assert_ptr_nonnull(ch);
    uint8_t *resp = (uint8_t *)1;
    size_t len = 7;
    double t0 = now_ms();
    int rv = ember_rpc_unary(ch, "/ember.v1.Admin/ListTables", "", 0, 2000, &resp, &len, &e);
    double dt = now_ms() - t0;
    ck_assert_msg(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED, "rv %d", rv);
    ck_assert_int_eq(e.code, rv);
    ck_assert_int_eq(e.shard, -1);
    ck_assert_ptr_null(resp);
    ck_assert_uint_eq(len, 0);
    ck_assert_msg(dt < 2500, "took %.0f ms", dt);

    ember_rpc_stream *s = ember_rpc_stream_open(ch, "/ember.v1.Admin/Export", "", 0, 2000, &e);
    ck_assert_ptr_nonnull(s);
    rv = ember_rpc_stream_read(s, &resp, &len, &e);
    ck_assert_msg(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED, "rv %d", rv);
    ck_assert_int_eq(ember_rpc_stream_read(s, &resp, &len, &e), rv);
    ember_rpc_stream_close(s);

    ember_rpc_upload *u = ember_rpc_upload_open(ch, "/ember.v1.Admin/Import", 2000, &e);
    ck_assert_ptr_nonnull(u);
    ember_rpc_upload_write(u, "x", 1, &e);
    rv = ember_rpc_upload_finish(u, &resp, &len, &e);
    ck_assert_msg(rv == EMBER_UNAVAILABLE || rv == EMBER_DEADLINE_EXCEEDED, "rv %d", rv);
    ember_rpc_channel_close(ch);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_rpc");
    TCase *tc = tcase_create("rpc");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, target_check);
    tcase_add_test(tc, unary_closed_port);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

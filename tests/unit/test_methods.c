/*
 * test_methods.c — server/server.c's method table on its own, no gRPC: every row
 * is whole (a path under its service, a name, one handler of the kind its service
 * serves), the role of each row is the one its service needs, paths and names
 * are unique and found again, and the keys-histogram rows are the Shard methods,
 * each its own.
 */
#include <check.h>
#include <string.h>

#include "server/server.h"
#include "test_util.h"

START_TEST(every_row_whole)
{
    for (int m = 0; m < SRV_M_COUNT; m++) {
        const srv_method_desc *d = &srv_methods[m];
        ck_assert_msg(d->path && d->path[0] == '/', "row %d: path", m);
        ck_assert_msg(d->name && *d->name, "row %d: name", m);
        ck_assert_str_eq(srv_method_name((srv_method)m), d->name);
        ck_assert_msg(!!d->shard + !!d->unary + !!d->call == 1, "%s: one handler", d->name);
        ck_assert_msg(d->requests >= 1, "%s: requests kept outstanding", d->name);
        /* Shard methods reply in slices; the others through protobuf-c */
        int shard = !strncmp(d->path, "/ember.v1.Shard/", 16);
        ck_assert_msg(!!d->shard == shard, "%s: a Shard handler iff a Shard method", d->name);
        /* only Health is left open past --max-concurrent-calls */
        ck_assert_int_eq(d->capped, m != SRV_M_HEALTH);
        /* only a client stream reads its own payload */
        ck_assert_int_eq(d->payload, m != SRV_M_IMPORT);
    }
    ck_assert_str_eq(srv_method_name(SRV_M_UNKNOWN), "unknown");
}
END_TEST

START_TEST(roles_by_service)
{
    for (int m = 0; m < SRV_M_COUNT; m++) {
        const srv_method_desc *d = &srv_methods[m];
        /* Pull is the readers' (serving; its handler refuses their inserts) */
        int want = !strncmp(d->path, "/grpc.health.v1.Health/", 23) ? SRV_ROLE_NONE
                   : !strcmp(d->path, "/ember.v1.Shard/Pull")         ? SRV_ROLE_READER
                   : !strncmp(d->path, "/ember.v1.Shard/", 16)      ? SRV_ROLE_WORKER
                                                                    : SRV_ROLE_ADMIN;
        ck_assert_msg(d->role == want, "%s: role %d, want %d", d->name, d->role, want);
    }
}
END_TEST

START_TEST(paths_and_names_unique)
{
    for (int m = 0; m < SRV_M_COUNT; m++) {
        ck_assert_int_eq(srv_method_of_path(srv_methods[m].path), m);
        for (int k = m + 1; k < SRV_M_COUNT; k++) {
            ck_assert_str_ne(srv_methods[m].path, srv_methods[k].path);
            ck_assert_str_ne(srv_methods[m].name, srv_methods[k].name);
        }
    }
    ck_assert_int_eq(srv_method_of_path("/ember.v1.Shard/Nope"), SRV_M_UNKNOWN);
    ck_assert_int_eq(srv_method_of_path(""), SRV_M_UNKNOWN);
}
END_TEST

START_TEST(keys_metrics_are_the_shard_methods)
{
    int seen[SRV_KEYS_METRICS] = {0};
    for (int m = 0; m < SRV_M_COUNT; m++) {
        int k = srv_methods[m].keys_metric;
        ck_assert_msg(k >= -1 && k < SRV_KEYS_METRICS, "%s: keys_metric %d", srv_methods[m].name,
                      k);
        ck_assert_int_eq(k >= 0, srv_methods[m].shard != NULL);
        if (k >= 0)
            seen[k]++;
    }
    for (int k = 0; k < SRV_KEYS_METRICS; k++)
        ck_assert_int_eq(seen[k], 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("methods");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, every_row_whole);
    tcase_add_test(tc, roles_by_service);
    tcase_add_test(tc, paths_and_names_unique);
    tcase_add_test(tc, keys_metrics_are_the_shard_methods);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

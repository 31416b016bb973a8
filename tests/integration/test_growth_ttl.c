/*
 * test_growth_ttl.c — online growth and time to live through real ember-server
 * processes (harness.h) and libember: a growing table holds every key a fixed one
 * of its final size holds, keeps its size and settings across a restart, and a
 * TTL table loses exactly the rows not written within its TTL; bad settings are
 * refused and change nothing.
 *
 * Runs without forking (CK_FORK=no, set by CMake): gRPC state does not survive
 * Check's fork.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"

#define NSHARDS 2
#define DIM 8

static eh_server S[NSHARDS];
static char shard_list[256];
static char tmpdir[128];

static ember_client *open_client(void)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shard_list;
    o.timeout_ms = 20000;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

static void spec_of(ember_table_spec *s, uint64_t capacity, uint64_t max_capacity,
                    uint64_t ttl)
{
    ember_table_spec_init(s);
    s->dim = DIM;
    s->capacity_per_shard = capacity;
    s->max_capacity_per_shard = max_capacity;
    s->ttl_seconds = ttl;
    s->initializer.kind = EMBER_INIT_ZEROS;
}

static void create(ember_client *c, const char *name, uint64_t capacity, uint64_t max_capacity,
                   uint64_t ttl)
{
    ember_table_spec s;
    spec_of(&s, capacity, max_capacity, ttl);
    ember_error e;
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

static uint64_t key_at(uint64_t i)
{
    return i * UINT64_C(0x9E3779B97F4A7C15) >> 4;
}

static float value_of(uint64_t key, int d)
{
    return (float)(key % 1000) + (float)d / 8.0f;
}

/* Writes keys [first, first + n) with their values (insert_or_assign). */
static void write_keys(ember_client *c, const char *table, uint64_t first, size_t n)
{
    uint64_t *k = malloc(n * sizeof *k);
    float *v = malloc(n * DIM * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        k[i] = key_at(first + i);
        for (int d = 0; d < DIM; d++)
            v[i * DIM + d] = value_of(k[i], d);
    }
    ember_error e;
    ck_assert_msg(ember_push_mode_values(c, table, k, n, v, DIM, EMBER_PUSH_INSERT_OR_ASSIGN, &e) ==
                      0,
                  "push: %s", e.message);
    free(k);
    free(v);
}

/* How many of keys [first, first + n) hold their written values (a missing key
 * reads as its zero initial row, which no written value is: value_of ≥ 1/8 in
 * some column), read as `flags` says (EMBER_PULL_SERVE creates nothing). */
static size_t pulled(ember_client *c, const char *table, uint64_t first, size_t n,
                     unsigned flags)
{
    uint64_t *k = malloc(n * sizeof *k);
    float *v = malloc(n * DIM * sizeof *v);
    for (size_t i = 0; i < n; i++)
        k[i] = key_at(first + i);
    ember_error e;
    ck_assert_msg(ember_pull(c, table, k, n, v, DIM, flags, &e) == 0, "pull: %s", e.message);
    size_t held = 0;
    for (size_t i = 0; i < n; i++) {
        int same = 1;
        for (int d = 0; d < DIM; d++)
            same &= v[i * DIM + d] == value_of(k[i], d);
        held += (size_t)same;
    }
    free(k);
    free(v);
    return held;
}

static size_t holding(ember_client *c, const char *table, uint64_t first, size_t n)
{
    return pulled(c, table, first, n, EMBER_PULL_SERVE);
}

/* DescribeTable on one shard, raw. */
static Ember__V1__TableInfo *describe_on(int shard, const char *name, int *code)
{
    eh_client *cl = eh_client_open(S[shard].addr);
    ck_assert_ptr_nonnull(cl);
    Ember__V1__DescribeTableRequest req = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    req.name = (char *)name;
    uint8_t buf[256];
    size_t len = ember__v1__describe_table_request__pack(&req, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, "/ember.v1.Admin/DescribeTable", buf, len, 0, &r), 0);
    eh_client_close(cl);
    *code = r.code;
    Ember__V1__TableInfo *info = NULL;
    if (r.code == 0) {
        Ember__V1__DescribeTableResponse *resp =
            ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
        ck_assert_ptr_nonnull(resp);
        info = resp->table;
        resp->table = NULL;
        ember__v1__describe_table_response__free_unpacked(resp, NULL);
    }
    eh_result_free(&r);
    return info;
}

static Ember__V1__TableInfo *describe_ok(int shard, const char *name)
{
    int code;
    Ember__V1__TableInfo *t = describe_on(shard, name, &code);
    ck_assert_msg(code == 0 && t && t->config && t->stats, "describe %s on %d: %d", name, shard,
                  code);
    return t;
}

static void info_free(Ember__V1__TableInfo *t)
{
    if (t)
        protobuf_c_message_free_unpacked(&t->base, NULL);
}

/* SIGTERM every shard (each saves its checkpoint) and start it again. */
static void restart_all(void)
{
    for (int s = 0; s < NSHARDS; s++) {
        int ws;
        ck_assert_int_eq(eh_server_stop(&S[s], SIGTERM, &ws), 0);
        ck_assert_int_eq(eh_server_restart(&S[s]), 0);
    }
}

/* ---- growth ------------------------------------------------------------------------ */

/* 6,000 keys into 2 shards of 256 slots that may grow to 8,192: every key kept,
 * nothing evicted, exactly as a table made at 8,192; the same after the servers
 * restart from their checkpoints, at the grown size. */
START_TEST(growing_table_keeps_every_key)
{
    ember_client *c = open_client();
    create(c, "grow", 256, 8192, 0);
    create(c, "fixed_small", 256, 0, 0);
    enum { N = 6000 };
    for (uint64_t i = 0; i < N; i += 500) {
        write_keys(c, "grow", i, 500);
        write_keys(c, "fixed_small", i, 500);
    }
    ck_assert_uint_eq(holding(c, "grow", 0, N), N);
    ck_assert_uint_lt(holding(c, "fixed_small", 0, N), 600); /* a cache of 2 × 256 */
    ember_table_info info;
    ember_error e;
    ck_assert_int_eq(ember_describe_table(c, "grow", &info, &e), 0);
    ck_assert_uint_eq(info.size, N);
    ck_assert_uint_eq(info.evictions, 0);
    ck_assert_uint_ge(info.capacity, N);
    ck_assert(info.load_factor <= 0.75);
    for (int s = 0; s < NSHARDS; s++) {
        Ember__V1__TableInfo *t = describe_ok(s, "grow");
        ck_assert_uint_eq(t->config->max_capacity, 8192);
        ck_assert_float_eq(t->config->max_load_factor, 0.75f);
        ck_assert_uint_ge(t->stats->grows, 3);
        ck_assert_uint_eq(t->stats->grow_failures, 0);
        ck_assert_uint_eq(t->config->capacity, t->stats->capacity);
        info_free(t);
    }

    /* restart from the SIGTERM checkpoints: the grown size and the settings stay */
    uint64_t cap_before = info.capacity;
    ember_client_close(c);
    restart_all();
    c = open_client();
    ck_assert_uint_eq(holding(c, "grow", 0, N), N);
    ck_assert_int_eq(ember_describe_table(c, "grow", &info, &e), 0);
    ck_assert_uint_eq(info.size, N);
    ck_assert_uint_eq(info.capacity, cap_before);
    for (int s = 0; s < NSHARDS; s++) {
        Ember__V1__TableInfo *t = describe_ok(s, "grow");
        ck_assert_uint_eq(t->config->max_capacity, 8192);
        info_free(t);
    }
    /* and it grows on from there, to its maximum, then serves as a cache */
    write_keys(c, "grow", N, 20000);
    ck_assert_int_eq(ember_describe_table(c, "grow", &info, &e), 0);
    ck_assert_uint_eq(info.capacity, 2 * 8192);
    ck_assert_uint_le(info.size, 2 * 8192);
    ck_assert_uint_gt(info.evictions, 0);
    ck_assert_int_eq(ember_drop_table(c, "grow", 0, &e), 0);
    ck_assert_int_eq(ember_drop_table(c, "fixed_small", 0, &e), 0);
    ember_client_close(c);
}
END_TEST

/* ---- time to live ------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t expired_total(ember_client *c, const char *name)
{
    uint64_t n = 0;
    for (int s = 0; s < NSHARDS; s++) {
        Ember__V1__TableInfo *t = describe_ok(s, name);
        n += t->stats->expired;
        info_free(t);
    }
    (void)c;
    return n;
}

/* Keys written once go when their TTL passes; keys written again and again stay;
 * reading a key does not keep it. */
START_TEST(ttl_removes_exactly_the_stale_rows)
{
    ember_client *c = open_client();
    create(c, "ttl", 1 << 14, 0, 2);
    enum { STALE = 300, READ = 200, FRESH = 300 };
    write_keys(c, "ttl", 0, STALE);
    write_keys(c, "ttl", 10000, READ);
    double t0 = now_s();
    uint64_t gone = 0;
    /* keep FRESH written, and READ read by training pulls for most of the TTL
     * (had reads counted, READ would outlive STALE by over a second; reads stop
     * before READ can expire, so no pull creates it again), until the stale and
     * the read-only keys are gone (or 30 s: a failure) */
    while (now_s() - t0 < 30.0) {
        write_keys(c, "ttl", 20000, FRESH);
        ck_assert_uint_eq(holding(c, "ttl", 20000, FRESH), FRESH);
        if (now_s() - t0 < 1.5)
            ck_assert_uint_eq(pulled(c, "ttl", 10000, READ, EMBER_PULL_INSERT), READ);
        gone = expired_total(c, "ttl");
        if (gone >= STALE + READ)
            break;
        usleep(100 * 1000);
    }
    ck_assert_uint_eq(gone, STALE + READ);
    ck_assert_uint_eq(holding(c, "ttl", 0, STALE), 0);
    ck_assert_uint_eq(holding(c, "ttl", 10000, READ), 0);
    ck_assert_uint_eq(holding(c, "ttl", 20000, FRESH), FRESH);
    ember_table_info info;
    ember_error e;
    ck_assert_int_eq(ember_describe_table(c, "ttl", &info, &e), 0);
    ck_assert_uint_eq(info.size, FRESH);
    /* the metrics endpoint counts them too */
    double m = 0;
    for (int s = 0; s < NSHARDS; s++)
        m += eh_metric(&S[s], "ember_table_expired_total{table=\"ttl\"}");
    ck_assert(m == (double)(STALE + READ));

    /* TTL off: rows written once now stay past the old TTL */
    ck_assert_int_eq(ember_set_ttl(c, "ttl", 0, &e), 0);
    write_keys(c, "ttl", 30000, 100);
    sleep(3);
    ck_assert_uint_eq(holding(c, "ttl", 30000, 100), 100);
    for (int s = 0; s < NSHARDS; s++) {
        Ember__V1__TableInfo *t = describe_ok(s, "ttl");
        ck_assert_uint_eq(t->config->ttl_seconds, 0);
        info_free(t);
    }
    ck_assert_int_eq(ember_drop_table(c, "ttl", 0, &e), 0);
    ember_client_close(c);
}
END_TEST

/* A TTL set later (AlterTable) and the epoch are kept in the checkpoint across a
 * restart. */
START_TEST(ttl_set_later_survives_restart)
{
    ember_client *c = open_client();
    create(c, "later", 1 << 12, 0, 0);
    write_keys(c, "later", 0, 50);
    ember_error e;
    ck_assert_int_eq(ember_set_ttl(c, "later", 7 * 86400, &e), 0);
    ck_assert_int_eq(ember_set_epoch(c, "later", 42, &e), 0);
    ember_client_close(c);
    restart_all();
    c = open_client();
    for (int s = 0; s < NSHARDS; s++) {
        Ember__V1__TableInfo *t = describe_ok(s, "later");
        ck_assert_uint_eq(t->config->ttl_seconds, 7 * 86400);
        ck_assert_uint_eq(t->stats->epoch, 42); /* the checkpoint kept the epoch too */
        info_free(t);
    }
    ck_assert_uint_eq(holding(c, "later", 0, 50), 50);
    ck_assert_int_eq(ember_drop_table(c, "later", 0, &e), 0);
    ember_client_close(c);
}
END_TEST

/* ---- refusals --------------------------------------------------------------------- */

START_TEST(bad_settings_refused_and_nothing_changes)
{
    ember_client *c = open_client();
    ember_error e;
    ember_table_spec s;
    spec_of(&s, 1024, 0, UINT64_MAX); /* a negative TTL sent as unsigned */
    ck_assert_int_eq(ember_create_table(c, "bad", &s, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "ttl_seconds"));
    spec_of(&s, 1024, 4096, 0);
    s.max_load_factor = 2.0f;
    ck_assert_int_eq(ember_create_table(c, "bad", &s, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "max_load_factor"));
    ember_table_info info;
    ck_assert_int_eq(ember_describe_table(c, "bad", &info, &e), EMBER_NOT_FOUND);

    ck_assert_int_eq(ember_set_ttl(c, "nosuch", 60, &e), EMBER_NOT_FOUND);
    create(c, "keep", 1024, 0, 60);
    ck_assert_int_eq(ember_set_ttl(c, "keep", UINT64_MAX, &e), EMBER_INVALID_ARGUMENT);
    for (int i = 0; i < NSHARDS; i++) {
        Ember__V1__TableInfo *t = describe_ok(i, "keep");
        ck_assert_uint_eq(t->config->ttl_seconds, 60);
        info_free(t);
    }
    /* AlterTable that sets nothing is refused, not silently accepted */
    eh_client *cl = eh_client_open(S[0].addr);
    Ember__V1__AlterTableRequest req = EMBER__V1__ALTER_TABLE_REQUEST__INIT;
    req.name = "keep";
    uint8_t buf[64];
    size_t len = ember__v1__alter_table_request__pack(&req, buf);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, "/ember.v1.Admin/AlterTable", buf, len, 0, &r), 0);
    ck_assert_int_eq(r.code, EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(r.message, "set_ttl"));
    eh_result_free(&r);
    eh_client_close(cl);
    ck_assert_int_eq(ember_drop_table(c, "keep", 0, &e), 0);
    ember_client_close(c);
}
END_TEST

int main(void)
{
    if (eh_skip_without_gpu("growth_ttl"))
        return EH_EXIT_SKIP;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ember-growth-ttl-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    size_t off = 0;
    for (int i = 0; i < NSHARDS; i++) {
        char dir[192], dflag[256], idx[32], cnt[32];
        snprintf(dir, sizeof dir, "%s/s%d", tmpdir, i);
        snprintf(dflag, sizeof dflag, "--checkpoint-dir=%s", dir);
        snprintf(idx, sizeof idx, "--shard-index=%d", i);
        snprintf(cnt, sizeof cnt, "--shard-count=%d", NSHARDS);
        const char *flags[] = {dflag, idx, cnt, "--ttl-sweep-interval=50ms",
                               "--metrics-listen=127.0.0.1:0", NULL};
        if (eh_server_start(&S[i], flags))
            return 1;
        off += (size_t)snprintf(shard_list + off, sizeof shard_list - off, "%s%s",
                                i ? "," : "", S[i].addr);
    }
    Suite *s = suite_create("growth_ttl");
    TCase *tc = tcase_create("growth_ttl");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, growing_table_keeps_every_key);
    tcase_add_test(tc, ttl_removes_exactly_the_stale_rows);
    tcase_add_test(tc, ttl_set_later_survives_restart);
    tcase_add_test(tc, bad_settings_refused_and_nothing_changes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (int i = 0; i < NSHARDS; i++)
        eh_server_cleanup(&S[i]);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return failed ? 1 : 0;
}

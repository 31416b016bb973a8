/*
 * test_server_backend.c — which table backend ember-server serves: --backend
 * auto|gpu|cpu (and EMBER_BACKEND), --gpu, --hbm-bytes, and what ServerInfo,
 * DescribeTable and the log say about it.
 *
 * Runs everywhere and checks what this machine allows: without a GPU (or in a
 * build without CUDA) --backend gpu must fail at start, with a reason, and auto
 * must serve cpu; with one, auto serves gpu, tables live on it, and --gpu past
 * the last device fails at start.
 *
 * Every server here names its backend itself (or, where the default is under
 * test, none: EMBER_TEST_BACKEND=""), so $EMBER_TEST_BACKEND does not matter.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"

static int NGPU;    /* GPUs visible here */

/* ---- helpers ------------------------------------------------------------- */

static int admin(eh_client *c, const char *method, const ProtobufCMessage *req, eh_result *r)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *b = malloc(len + 1);
    char path[128];
    protobuf_c_message_pack(req, b);
    snprintf(path, sizeof path, "/ember.v1.Admin/%s", method);
    ck_assert_int_eq(eh_unary(c, path, b, len, 0, r), 0);
    free(b);
    return r->code;
}

/* Creates `name` (dim 4, SGD lr 1, zeros) on `backend` ("" = the server's) with
 * `hbm_bytes`; returns the status, r->message on failure. */
static int create(eh_client *c, const char *name, const char *backend, uint64_t hbm_bytes,
                  eh_result *r)
{
    Ember__V1__CreateTableRequest q = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    Ember__V1__OptimizerConfig o = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    Ember__V1__InitializerConfig in = EMBER__V1__INITIALIZER_CONFIG__INIT;
    q.name = (char *)name;
    q.config = &cfg;
    cfg.dim = 4;
    cfg.capacity = 4096;
    cfg.optimizer = &o;
    cfg.initializer = &in;
    cfg.backend = (char *)backend;
    cfg.hbm_bytes = hbm_bytes;
    o.lr = 1.0f;
    in.kind = EMBER__V1__INITIALIZER__INIT_ZEROS;
    return admin(c, "CreateTable", &q.base, r);
}

static Ember__V1__TableInfo *describe(eh_client *c, const char *name,
                                      Ember__V1__DescribeTableResponse **resp)
{
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    eh_result r;
    q.name = (char *)name;
    ck_assert_int_eq(admin(c, "DescribeTable", &q.base, &r), 0);
    *resp = ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    eh_result_free(&r);
    ck_assert_ptr_nonnull(*resp);
    return (*resp)->table;
}

static Ember__V1__ServerInfoResponse *server_info(eh_client *c)
{
    Ember__V1__ServerInfoRequest q = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    eh_result r;
    ck_assert_int_eq(admin(c, "ServerInfo", &q.base, &r), 0);
    Ember__V1__ServerInfoResponse *si = ember__v1__server_info_response__unpack(NULL, r.len, r.data);
    eh_result_free(&r);
    ck_assert_ptr_nonnull(si);
    return si;
}

/* Pushes gradient g to keys 1..3 of `table` (SGD lr 1, zeros) and pulls them
 * back: -g exactly, whatever the backend. */
static void round_trip(eh_client *c, const char *table)
{
    uint64_t keys[3] = {1, 2, 3000000000000ull};
    float g[12], v[12];
    for (int i = 0; i < 12; i++)
        g[i] = 0.25f * (float)(i + 1);
    ember_wire_push_request q = {0};
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = sizeof keys;
    q.values.data = (const uint8_t *)g;
    q.values.len = sizeof g;
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len);
    ember_wire_push_request_encode(&q, b);
    eh_result r;
    ck_assert_int_eq(eh_unary(c, "/ember.v1.Shard/Push", b, len, 0, &r), 0);
    ck_assert_msg(r.code == 0, "push to %s: %s", table, r.message);
    eh_result_free(&r);
    free(b);

    ember_wire_pull_request p = {0};
    p.table.data = (const uint8_t *)table;
    p.table.len = strlen(table);
    p.keys.data = (const uint8_t *)keys;
    p.keys.len = sizeof keys;
    len = ember_wire_pull_request_size(&p, NULL);
    b = malloc(len);
    ember_wire_pull_request_encode(&p, b);
    ck_assert_int_eq(eh_unary(c, "/ember.v1.Shard/Pull", b, len, 0, &r), 0);
    ck_assert_msg(r.code == 0, "pull from %s: %s", table, r.message);
    free(b);
    ember_wire_pull_response m;
    ck_assert_int_eq(ember_wire_pull_response_decode(r.data, r.len, &m, NULL, 0), 0);
    ck_assert_uint_eq(m.values.len, sizeof v);
    ember_wire_from_wire(EMBER_WIRE_F32, m.values.data, 12, v);
    eh_result_free(&r);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(v[i] == -g[i], "%s: v[%d] = %g, want %g", table, i, v[i], -g[i]);
}

static void stop(eh_server *s)
{
    int st;
    ck_assert_int_eq(eh_server_stop(s, SIGTERM, &st), 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    eh_server_cleanup(s);
}

/* Runs a server that must fail at start; returns its output (free it). */
static char *must_fail(const char *const *args, int want_exit)
{
    char *out = NULL;
    int st = eh_run_server_cmd(args, &out, 20000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == want_exit,
                  "status %d (want exit %d); output: %s", st, want_exit, out);
    return out;
}

/* ---- tests --------------------------------------------------------------- */

/* No GPU here: --backend gpu (flag or EMBER_BACKEND) stops at start, exit 1, and
 * says why. With GPUs: --gpu past the last one does. Names not in auto|gpu|cpu
 * are bad settings (exit 2) everywhere. */
START_TEST(gpu_without_gpu_fails_at_start)
{
    char *out;
    const char *bad[] = {"--listen=127.0.0.1:0", "--backend=tpu", NULL};
    out = must_fail(bad, 2);
    ck_assert_msg(strstr(out, "'tpu' is not auto, gpu or cpu"), "output: %s", out);
    free(out);

    if (NGPU == 0) {
        const char *gpu[] = {"--listen=127.0.0.1:0", "--threads=1", "--backend=gpu", NULL};
        out = must_fail(gpu, 1);
        ck_assert_msg(strstr(out, "backend gpu: ") &&
                          (strstr(out, "no GPU is visible") || strstr(out, "without CUDA")),
                      "output: %s", out);
        ck_assert_msg(strstr(out, "event=start_failed"), "output: %s", out);
        ck_assert_msg(!strstr(out, "event=listening"), "output: %s", out);
        free(out);
        /* the same from the environment */
        setenv("EMBER_BACKEND", "gpu", 1);
        const char *env[] = {"--listen=127.0.0.1:0", "--threads=1", NULL};
        out = must_fail(env, 1);
        unsetenv("EMBER_BACKEND");
        ck_assert_msg(strstr(out, "backend gpu: "), "output: %s", out);
        free(out);
    } else {
        char gpu[32];
        snprintf(gpu, sizeof gpu, "--gpu=%d", NGPU);
        const char *args[] = {"--listen=127.0.0.1:0", "--threads=1", "--backend=gpu", gpu,
                              NULL};
        out = must_fail(args, 1);
        ck_assert_msg(strstr(out, "no such GPU"), "output: %s", out);
        free(out);
    }
}
END_TEST

/* auto, given as a flag, as EMBER_BACKEND, or left to the default, serves gpu
 * where a GPU is visible and cpu elsewhere; ServerInfo, the log and new tables
 * say which. A table asking for gpu on a cpu server is refused
 * (FAILED_PRECONDITION); one asking for cpu is served anywhere. */
START_TEST(auto_serves_what_is_there)
{
    const char *want = NGPU > 0 ? "gpu" : "cpu";
    const char *saved = getenv("EMBER_TEST_BACKEND");
    char *keep = saved ? strdup(saved) : NULL;
    for (int how = 0; how < 3; how++) {
        eh_server s;
        const char *flag[] = {"--threads=2", "--backend=auto", NULL};
        const char *none[] = {"--threads=2", NULL};
        setenv("EMBER_TEST_BACKEND", "", 1); /* the harness adds no --backend */
        if (how == 1)
            setenv("EMBER_BACKEND", "auto", 1);
        int rc = eh_server_start(&s, how == 0 ? flag : none);
        unsetenv("EMBER_BACKEND");
        if (keep)
            setenv("EMBER_TEST_BACKEND", keep, 1);
        else
            unsetenv("EMBER_TEST_BACKEND");
        ck_assert_int_eq(rc, 0);

        eh_client *c = eh_client_open(s.addr);
        Ember__V1__ServerInfoResponse *si = server_info(c);
        ck_assert_msg(!strcmp(si->backend, want), "way %d: serves %s, want %s", how,
                      si->backend, want);
        if (NGPU > 0) {
            ck_assert_msg(si->device[0], "no device name on gpu");
            ck_assert_uint_gt(si->device_memory_bytes, 0);
        } else {
            ck_assert_str_eq(si->device, "");
            ck_assert_uint_eq(si->device_memory_bytes, 0);
        }
        ember__v1__server_info_response__free_unpacked(si, NULL);
        char *log = eh_server_log(&s), line[64];
        snprintf(line, sizeof line, "event=backend backend=%s asked=auto", want);
        ck_assert_msg(strstr(log, line), "log lacks '%s': %s", line, log);
        snprintf(line, sizeof line, "backend=%s shard=", want);
        ck_assert_msg(strstr(log, line), "listening line lacks '%s': %s", line, log);
        free(log);

        eh_result r;
        ck_assert_msg(create(c, "dflt", "", 0, &r) == 0, "create: %s", r.message);
        eh_result_free(&r);
        Ember__V1__DescribeTableResponse *d;
        ck_assert_str_eq(describe(c, "dflt", &d)->config->backend, want);
        ember__v1__describe_table_response__free_unpacked(d, NULL);
        round_trip(c, "dflt");

        ck_assert_msg(create(c, "oncpu", "cpu", 0, &r) == 0, "create: %s", r.message);
        eh_result_free(&r);
        ck_assert_str_eq(describe(c, "oncpu", &d)->config->backend, "cpu");
        ember__v1__describe_table_response__free_unpacked(d, NULL);
        round_trip(c, "oncpu");

        ck_assert_int_eq(create(c, "bad", "tpu", 0, &r), 3);
        ck_assert_msg(strstr(r.message, "tpu"), "message: %s", r.message);
        eh_result_free(&r);
        if (NGPU == 0) {
            ck_assert_int_eq(create(c, "ongpu", "gpu", 0, &r), 9);
            ck_assert_msg(strstr(r.message, "cpu tables only"), "message: %s", r.message);
            eh_result_free(&r);
        }
        eh_client_close(c);
        stop(&s);
    }
    free(keep);
}
END_TEST

/* --backend cpu serves cpu even where a GPU is visible; --gpu and --hbm-bytes
 * are then ignored, and ServerInfo names no device. */
START_TEST(cpu_is_cpu_everywhere)
{
    eh_server s;
    const char *flags[] = {"--threads=1", "--backend=cpu", "--gpu=7", "--hbm-bytes=1M", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    Ember__V1__ServerInfoResponse *si = server_info(c);
    ck_assert_str_eq(si->backend, "cpu");
    ck_assert_str_eq(si->device, "");
    ember__v1__server_info_response__free_unpacked(si, NULL);
    eh_result r;
    ck_assert_msg(create(c, "t", "", 0, &r) == 0, "create: %s", r.message);
    eh_result_free(&r);
    Ember__V1__DescribeTableResponse *d;
    Ember__V1__TableInfo *ti = describe(c, "t", &d);
    ck_assert_str_eq(ti->config->backend, "cpu");
    ck_assert_uint_eq(ti->config->hbm_bytes, 0);
    ck_assert_uint_eq(ti->stats->bytes_device, 0);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    round_trip(c, "t");
    eh_client_close(c);
    stop(&s);
}
END_TEST

/* With a GPU: --backend gpu --hbm-bytes serves tables on the device, each with
 * the server's budget unless its config sets one; ServerInfo names the device.
 * Without one, nothing to check here (gpu_without_gpu_fails_at_start is). */
START_TEST(gpu_serves_with_hbm_budget)
{
    if (NGPU == 0)
        return;
    eh_server s;
    const char *flags[] = {"--threads=2", "--backend=gpu", "--gpu=0", "--hbm-bytes=1M", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    eh_client *c = eh_client_open(s.addr);
    Ember__V1__ServerInfoResponse *si = server_info(c);
    ck_assert_str_eq(si->backend, "gpu");
    ck_assert_msg(si->device[0], "no device name");
    ck_assert_uint_gt(si->device_memory_bytes, 0);
    ck_assert_uint_eq(si->hbm_bytes, 1u << 20);
    ember__v1__server_info_response__free_unpacked(si, NULL);
    char *log = eh_server_log(&s);
    ck_assert_msg(strstr(log, "event=backend backend=gpu asked=gpu gpu=0 device="), "log: %s",
                  log);
    free(log);

    eh_result r;
    Ember__V1__DescribeTableResponse *d;
    Ember__V1__TableInfo *ti;
    ck_assert_msg(create(c, "dflt", "", 0, &r) == 0, "create: %s", r.message);
    eh_result_free(&r);
    ti = describe(c, "dflt", &d);
    ck_assert_str_eq(ti->config->backend, "gpu");
    ck_assert_uint_eq(ti->config->hbm_bytes, 1u << 20);
    ck_assert_uint_gt(ti->stats->bytes_device, 0);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    round_trip(c, "dflt");

    /* its own budget: one bucket's rows at most in device memory, the rest on the host */
    ck_assert_msg(create(c, "hybrid", "gpu", 4096, &r) == 0, "create: %s", r.message);
    eh_result_free(&r);
    ti = describe(c, "hybrid", &d);
    ck_assert_str_eq(ti->config->backend, "gpu");
    ck_assert_uint_eq(ti->config->hbm_bytes, 4096);
    ck_assert_uint_gt(ti->stats->bytes_host, 4096 * 4 * 4 / 2);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    round_trip(c, "hybrid");

    ck_assert_msg(create(c, "oncpu", "cpu", 0, &r) == 0, "create: %s", r.message);
    eh_result_free(&r);
    ti = describe(c, "oncpu", &d);
    ck_assert_str_eq(ti->config->backend, "cpu");
    ck_assert_uint_eq(ti->config->hbm_bytes, 0);
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    round_trip(c, "oncpu");
    eh_client_close(c);
    stop(&s);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    unsetenv("EMBER_BACKEND"); /* each test sets what it tests */
    NGPU = eh_gpu_count();
    fprintf(stderr, "test_server_backend: %d GPU(s) visible\n", NGPU);

    Suite *s = suite_create("server_backend");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, gpu_without_gpu_fails_at_start);
    tcase_add_test(tc, auto_serves_what_is_there);
    tcase_add_test(tc, cpu_is_cpu_everywhere);
    tcase_add_test(tc, gpu_serves_with_hbm_budget);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

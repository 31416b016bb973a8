/*
 * test_metrics.c — ember-server's Prometheus endpoint (--metrics-listen, server/
 * metrics.h) end to end: real calls through a raw gRPC client (harness.h), then
 * GET /metrics over a plain TCP socket, with exact values for the calls made
 * (by method and code, keys pulled and pushed, keys per call, the table's rows,
 * its checkpoint), histograms that agree with the call counts, and a text that
 * parses as the exposition format. Also: other paths are 404, a server without
 * the flag listens on its gRPC port only, and a taken metrics port stops the
 * start with exit 1.
 *
 * Runs without forking (CK_NOFORK); each test starts its own server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"

#define SHARD "/ember.v1.Shard/"
#define ADMIN "/ember.v1.Admin/"

/* ---- calls --------------------------------------------------------------- */

static int admin(eh_client *c, const char *method, const ProtobufCMessage *req, eh_result *r)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *b = malloc(len + 1);
    protobuf_c_message_pack(req, b);
    char path[128];
    snprintf(path, sizeof path, ADMIN "%s", method);
    ck_assert_int_eq(eh_unary(c, path, b, len, 0, r), 0);
    free(b);
    return r->code;
}

static void create(eh_client *c, const char *name, uint32_t dim)
{
    Ember__V1__CreateTableRequest q = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    Ember__V1__OptimizerConfig o = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    Ember__V1__InitializerConfig in = EMBER__V1__INITIALIZER_CONFIG__INIT;
    eh_result r;
    q.name = (char *)name;
    q.config = &cfg;
    cfg.dim = dim;
    cfg.capacity = 4096;
    cfg.optimizer = &o;
    cfg.initializer = &in;
    o.lr = 0.1f;
    ck_assert_msg(admin(c, "CreateTable", &q.base, &r) == 0, "create: %s", r.message);
    eh_result_free(&r);
}

/* A pull of keys[0..n) expecting `dim` (0: any); returns the status code. */
static int pull(eh_client *c, const char *table, const uint64_t *keys, size_t n, uint32_t dim)
{
    ember_wire_pull_request q = {0};
    eh_result r;
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.dim = dim;
    size_t len = ember_wire_pull_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "Pull", b, len, 0, &r), 0);
    free(b);
    eh_result_free(&r);
    return r.code;
}

/* An insert_or_assign push of keys[0..n) with zeros of `dim`. */
static void push_fill(ember_wire_push_request *q, const char *table, const uint64_t *keys,
                      size_t n, const float *vals, uint32_t dim)
{
    memset(q, 0, sizeof *q);
    q->table.data = (const uint8_t *)table;
    q->table.len = strlen(table);
    q->keys.data = (const uint8_t *)keys;
    q->keys.len = n * 8;
    q->values.data = (const uint8_t *)vals;
    q->values.len = n * dim * 4;
    q->mode = EMBER_WIRE_PUSH_INSERT_OR_ASSIGN;
}

static int push(eh_client *c, const char *table, const uint64_t *keys, size_t n, uint32_t dim)
{
    static const float zeros[4096];
    ember_wire_push_request q;
    eh_result r;
    push_fill(&q, table, keys, n, zeros, dim);
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_push_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "Push", b, len, 0, &r), 0);
    free(b);
    eh_result_free(&r);
    return r.code;
}

static int pushpull(eh_client *c, const char *table, const uint64_t *push_keys, size_t np,
                    const uint64_t *pull_keys, size_t nl, uint32_t dim)
{
    static const float zeros[4096];
    ember_wire_pushpull_request q = {0};
    eh_result r;
    q.has_push = q.has_pull = 1;
    push_fill(&q.push, table, push_keys, np, zeros, dim);
    q.pull.table = q.push.table;
    q.pull.keys.data = (const uint8_t *)pull_keys;
    q.pull.keys.len = nl * 8;
    size_t len = ember_wire_pushpull_request_size(&q, NULL, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pushpull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "PushPull", b, len, 0, &r), 0);
    free(b);
    eh_result_free(&r);
    return r.code;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* `METHOD path` to the metrics port: the status code, and the body into *body
 * (malloc'ed, NUL-terminated) when body is not NULL; a 200 with a body must say
 * it is the exposition format. -1: no connection. */
static int http(int port, const char *method, const char *path, char **body)
{
    char *buf;
    if (eh_http(port, method, path, &buf))
        return -1;
    int code = 0;
    ck_assert_msg(sscanf(buf, "HTTP/1.%*d %d", &code) == 1, "reply: %.200s", buf);
    char *sep = strstr(buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(sep);
    if (body) {
        if (code == 200)
            ck_assert_msg(strcasestr(buf, "\r\nContent-Type: text/plain; version=0.0.4") &&
                              strcasestr(buf, "\r\nContent-Type:") < sep,
                          "headers: %.*s", (int)(sep - buf), buf);
        *body = strdup(sep + 4);
    }
    free(buf);
    return code;
}

/* Not inlined: GCC 12's -Wdangling-pointer at -O3 otherwise mistakes the text
 * for a pointer into this frame's `body` (a false positive). */
__attribute__((noinline)) static char *scrape(int port)
{
    char *body = NULL;
    ck_assert_int_eq(http(port, "GET", "/metrics", &body), 200);
    return body;
}

/* ---- the exposition format ------------------------------------------------ */

/* The value of the sample whose name and labels are exactly `series` (as in
 * `name{a="b"}`, labels in the server's order); -1 when there is none. */
static double value(const char *text, const char *series)
{
    size_t l = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, series, l) && p[l] == ' ')
            return strtod(p + l + 1, NULL);
    return -1;
}

static int is_name(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

/* Checks `text` line by line as Prometheus' text format 0.0.4 reads it: HELP and
 * TYPE comments before their family's samples, each family's samples together,
 * names and labels well formed, values numbers, no series twice, counters named
 * *_total, histograms with le labels ending at +Inf. Fails the test otherwise;
 * returns the number of samples. */
static size_t check_format(const char *text)
{
    enum { MAXF = 256, MAXS = 8192 };
    char fams[MAXF][128], types[MAXF][16];
    size_t nf = 0, ns = 0;
    char **series = calloc(MAXS, sizeof *series);
    const char *cur = NULL; /* the family whose samples are being read */
    int line_no = 0;
    ck_assert_msg(*text && text[strlen(text) - 1] == '\n', "the text ends with a newline");
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t l = (size_t)(e - p);
        char line[1024];
        ck_assert_msg(l < sizeof line, "line %d too long", line_no);
        memcpy(line, p, l);
        line[l] = '\0';
        p = e + 1;
        line_no++;
        if (line[0] == '#') {
            char kind[8], name[128], rest[512];
            ck_assert_msg(sscanf(line, "# %7s %127s %511[^\n]", kind, name, rest) == 3,
                          "comment line %d: %s", line_no, line);
            ck_assert_msg(is_name(name, strlen(name)), "line %d: name %s", line_no, name);
            if (!strcmp(kind, "TYPE")) {
                ck_assert_msg(!strcmp(rest, "counter") || !strcmp(rest, "gauge") ||
                                  !strcmp(rest, "histogram"),
                              "line %d: type %s", line_no, rest);
                for (size_t i = 0; i < nf; i++)
                    ck_assert_msg(strcmp(fams[i], name), "line %d: %s typed twice", line_no, name);
                ck_assert(nf < MAXF);
                snprintf(fams[nf], sizeof fams[nf], "%s", name);
                snprintf(types[nf], sizeof types[nf], "%.15s", rest);
                nf++;
                cur = fams[nf - 1];
                if (!strcmp(rest, "counter"))
                    ck_assert_msg(strlen(name) > 6 && !strcmp(name + strlen(name) - 6, "_total"),
                                  "counter %s ends in _total", name);
            } else {
                ck_assert_msg(!strcmp(kind, "HELP"), "line %d: %s", line_no, line);
            }
            continue;
        }
        ck_assert_msg(l > 0, "line %d is empty", line_no);
        /* name{labels} value */
        size_t nl = strcspn(line, "{ ");
        ck_assert_msg(is_name(line, nl), "line %d: name in %s", line_no, line);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)nl, line);
        const char *q = line + nl;
        char le[32] = "";
        if (*q == '{') {
            q++;
            while (*q != '}') {
                size_t ln = strcspn(q, "=");
                ck_assert_msg(is_name(q, ln) && q[ln] == '=' && q[ln + 1] == '"',
                              "line %d: label in %s", line_no, line);
                int is_le = ln == 2 && !strncmp(q, "le", 2);
                q += ln + 2;
                char v[256];
                size_t k = 0;
                for (; *q && *q != '"'; q++) {
                    if (*q == '\\') {
                        q++;
                        ck_assert_msg(*q == '\\' || *q == '"' || *q == 'n',
                                      "line %d: escape in %s", line_no, line);
                    }
                    if (k < sizeof v - 1)
                        v[k++] = *q;
                }
                v[k] = '\0';
                ck_assert_msg(*q == '"', "line %d: unterminated label in %s", line_no, line);
                q++;
                if (is_le)
                    snprintf(le, sizeof le, "%.31s", v);
                ck_assert_msg(*q == ',' || *q == '}', "line %d: after a label in %s", line_no,
                              line);
                if (*q == ',')
                    q++;
            }
            q++;
        }
        ck_assert_msg(*q == ' ', "line %d: no value in %s", line_no, line);
        char *end;
        strtod(q + 1, &end);
        ck_assert_msg(end != q + 1 && *end == '\0', "line %d: value in %s", line_no, line);
        /* the family: the name itself, or a histogram's name before a suffix */
        ck_assert_msg(cur, "line %d: %s before any TYPE", line_no, line);
        size_t fl = strlen(cur);
        const char *type = types[nf - 1];
        int ok = !strcmp(name, cur);
        if (!strcmp(type, "histogram")) {
            const char *suf = name + fl;
            ok = !strncmp(name, cur, fl) &&
                 (!strcmp(suf, "_bucket") || !strcmp(suf, "_sum") || !strcmp(suf, "_count"));
            if (ok && !strcmp(suf, "_bucket"))
                ck_assert_msg(*le, "line %d: a bucket without le: %s", line_no, line);
        }
        ck_assert_msg(ok, "line %d: sample %s is not of the family %s above it (TYPE %s)",
                      line_no, name, cur, type);
        /* no series twice */
        size_t sl = (size_t)(q - line);
        for (size_t i = 0; i < ns; i++)
            ck_assert_msg(strncmp(series[i], line, sl) || series[i][sl] != '\0',
                          "line %d: series %.*s twice", line_no, (int)sl, line);
        ck_assert(ns < MAXS);
        series[ns++] = strndup(line, sl);
    }
    for (size_t i = 0; i < ns; i++)
        free(series[i]);
    free(series);
    return ns;
}

static const char *const methods[] = {
    "Pull",       "Push",     "PushPull",   "CreateTable", "DropTable", "ListTables",
    "DescribeTable", "GetStats", "Save",    "Load",        "Evict",     "Clear",
    "ServerInfo", "Export",   "Import",     "Health.Check",
};
static const char *const codes[] = {
    "OK",           "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS",    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",    "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",       "DATA_LOSS",
    "UNAUTHENTICATED",
};
#define N_METHODS (sizeof methods / sizeof methods[0])
#define N_CODES (sizeof codes / sizeof codes[0])

static double requests(const char *text, const char *method, const char *code)
{
    char s[160];
    snprintf(s, sizeof s, "ember_requests_total{method=\"%s\",code=\"%s\"}", method, code);
    double v = value(text, s);
    return v < 0 ? 0 : v;
}

/* Every method's latency histogram counts its calls: _count = +Inf bucket = the
 * sum of its ember_requests_total; buckets never decrease. */
static void check_histograms(const char *text)
{
    for (size_t m = 0; m < N_METHODS; m++) {
        double calls = 0;
        for (size_t c = 0; c < N_CODES; c++)
            calls += requests(text, methods[m], codes[c]);
        char s[160];
        snprintf(s, sizeof s, "ember_request_duration_seconds_count{method=\"%s\"}", methods[m]);
        ck_assert_msg(value(text, s) == calls, "%s = %g, calls %g", s, value(text, s), calls);
        snprintf(s, sizeof s, "ember_request_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"}",
                 methods[m]);
        ck_assert_msg(value(text, s) == calls, "%s = %g, calls %g", s, value(text, s), calls);
        snprintf(s, sizeof s, "ember_request_duration_seconds_bucket{method=\"%s\",le=\"",
                 methods[m]);
        double prev = 0;
        size_t buckets = 0;
        for (const char *p = strstr(text, s); p; p = strstr(p + 1, s)) {
            double v = strtod(strchr(p, ' ') + 1, NULL);
            ck_assert_msg(v >= prev, "%s buckets decrease", methods[m]);
            prev = v;
            buckets++;
        }
        ck_assert_uint_ge(buckets, 10);
    }
}

/* ---- tests --------------------------------------------------------------- */

static void start_with_metrics(eh_server *s, const char *extra)
{
    /* labelled shard 1 of 2 (the build_info labels), fed keys of both shards by
     * hand: ownership is test_ownership.c's */
    const char *flags[] = {"--threads=2", "--metrics-listen=127.0.0.1:0", "--shard-index=1",
                           "--shard-count=2", "--key-ownership=off", extra, NULL};
    ck_assert_int_eq(eh_server_start(s, flags), 0);
}

static double realtime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(calls_counted_exactly)
{
    eh_server s;
    start_with_metrics(&s, NULL);
    int port = eh_metrics_port(&s);
    ck_assert_msg(port > 0, "no event=metrics_listening in the log");
    eh_client *c = eh_client_open(s.addr);

    /* before any call of the test: every method's OK series is there at 0 */
    char *t0 = scrape(port);
    check_format(t0);
    ck_assert(value(t0, "ember_requests_total{method=\"Pull\",code=\"OK\"}") == 0);
    ck_assert(value(t0, "ember_tables") == 0);
    char info[160];
    snprintf(info, sizeof info, "backend=\"%s\",shard_index=\"1\",shard_count=\"2\"} 1\n",
             eh_backend_served());
    ck_assert_msg(strstr(t0, "\nember_build_info{version=\"") && strstr(t0, info),
                  "build info: %s", t0);
    double health0 = requests(t0, "Health.Check", "OK");
    ck_assert(health0 >= 1); /* the harness's wait for SERVING */
    free(t0);

    const uint32_t dim = 4;
    uint64_t keys[10], more[3] = {100, 101, 102};
    for (int i = 0; i < 10; i++)
        keys[i] = (uint64_t)i * 7 + 1;
    create(c, "m", dim);
    ck_assert_int_eq(push(c, "m", keys, 10, dim), 0);
    ck_assert_int_eq(pull(c, "m", keys, 7, 0), 0);
    ck_assert_int_eq(pull(c, "m", keys + 3, 7, dim), 0);
    ck_assert_int_eq(pushpull(c, "m", more, 3, keys, 5, dim), 0);
    ck_assert_int_eq(pull(c, "m", keys, 2, dim * 2), 3);   /* bad dim: INVALID_ARGUMENT */
    ck_assert_int_eq(pull(c, "nope", keys, 2, 0), 5);      /* unknown table: NOT_FOUND */
    ck_assert_int_eq(push(c, "nope", keys, 2, dim), 5);
    eh_result r;
    ck_assert_int_eq(eh_unary(c, SHARD "Nope", "", 0, 0, &r), 0);
    ck_assert_int_eq(r.code, 12);                          /* UNIMPLEMENTED */
    eh_result_free(&r);
    /* a save into a dir of the test's: the table's checkpoint figures */
    char dir[] = "/tmp/ember-metrics-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    Ember__V1__SaveRequest sq = EMBER__V1__SAVE_REQUEST__INIT;
    sq.table = (char *)"m";
    sq.dir = dir;
    /* the wall clock itself, not time(): that may read a coarse clock a tick
     * behind the server's, so a save ending just past a second looked late */
    double before = realtime_s();
    ck_assert_msg(admin(c, "Save", &sq.base, &r) == 0, "save: %s", r.message);
    eh_result_free(&r);
    double after = realtime_s() + 1;

    char *t = scrape(port);
    size_t samples = check_format(t);
    ck_assert_uint_gt(samples, 100);
    ck_assert(requests(t, "CreateTable", "OK") == 1);
    ck_assert(requests(t, "Push", "OK") == 1);
    ck_assert(requests(t, "Push", "NOT_FOUND") == 1);
    ck_assert(requests(t, "Pull", "OK") == 2);
    ck_assert(requests(t, "Pull", "INVALID_ARGUMENT") == 1);
    ck_assert(requests(t, "Pull", "NOT_FOUND") == 1);
    ck_assert(requests(t, "PushPull", "OK") == 1);
    ck_assert(requests(t, "Save", "OK") == 1);
    ck_assert(requests(t, "Health.Check", "OK") == health0); /* scrapes are not calls */
    ck_assert(value(t, "ember_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}") == 1);
    ck_assert(value(t, "ember_requests_total{method=\"Pull\",code=\"ALREADY_EXISTS\"}") == -1);
    check_histograms(t);
    /* keys: pulled 7 + 7 + 5, pushed 10 + 3 (refused calls count none) */
    ck_assert(value(t, "ember_keys_pulled_total") == 19);
    ck_assert(value(t, "ember_keys_pushed_total") == 13);
    ck_assert(value(t, "ember_request_keys_count{method=\"Pull\"}") == 2);
    ck_assert(value(t, "ember_request_keys_sum{method=\"Pull\"}") == 14);
    ck_assert(value(t, "ember_request_keys_bucket{method=\"Pull\",le=\"4\"}") == 0);
    ck_assert(value(t, "ember_request_keys_bucket{method=\"Pull\",le=\"16\"}") == 2);
    ck_assert(value(t, "ember_request_keys_count{method=\"Push\"}") == 1);
    ck_assert(value(t, "ember_request_keys_sum{method=\"Push\"}") == 10);
    ck_assert(value(t, "ember_request_keys_count{method=\"PushPull\"}") == 1);
    ck_assert(value(t, "ember_request_keys_sum{method=\"PushPull\"}") == 8);
    /* the table */
    ck_assert(value(t, "ember_tables") == 1);
    ck_assert(value(t, "ember_table_rows{table=\"m\"}") == 13);
    double cap = value(t, "ember_table_capacity_rows{table=\"m\"}");
    ck_assert(cap >= 4096);
    double lf = value(t, "ember_table_load_factor{table=\"m\"}");
    ck_assert_msg(lf > 0 && fabs(lf - 13 / cap) < 1e-6, "load factor %g", lf);
    ck_assert(value(t, "ember_table_memory_bytes{table=\"m\",memory=\"host\"}") > 0);
    if (!strcmp(eh_backend_served(), "cpu"))
        ck_assert(value(t, "ember_table_memory_bytes{table=\"m\",memory=\"device\"}") == 0);
    ck_assert(value(t, "ember_table_keys_pulled_total{table=\"m\"}") == 19);
    ck_assert(value(t, "ember_table_keys_pushed_total{table=\"m\"}") == 13);
    ck_assert(value(t, "ember_table_pulls_total{table=\"m\"}") == 3);
    ck_assert(value(t, "ember_table_pushes_total{table=\"m\"}") == 2);
    ck_assert(value(t, "ember_table_evictions_total{table=\"m\"}") == 0);
    ck_assert(value(t, "ember_table_admission_drops_total{table=\"m\"}") == 0);
    ck_assert(value(t, "ember_checkpoint_saves_total{table=\"m\",result=\"ok\"}") == 1);
    ck_assert(value(t, "ember_checkpoint_saves_total{table=\"m\",result=\"failed\"}") == 0);
    double ts = value(t, "ember_checkpoint_last_save_timestamp_seconds{table=\"m\"}");
    ck_assert_msg(ts >= before - 1 && ts <= after, "saved at %f, not in [%f, %f]", ts, before,
                  after);
    double age = value(t, "ember_checkpoint_last_save_age_seconds{table=\"m\"}");
    ck_assert_msg(age >= 0 && age < 60, "age %g", age);
    ck_assert(value(t, "ember_checkpoint_last_save_duration_seconds{table=\"m\"}") >= 0);
    /* a call counts until the server lets go of it, a moment after its reply:
     * the Save above may still be there in this scrape, not for long */
    ck_assert(value(t, "ember_live_calls") <= 1);
    ck_assert(eh_metric_wait(&s, "ember_live_calls", 0, 10000) == 0);
    ck_assert(value(t, "ember_uptime_seconds") > 0);
    ck_assert(value(t, "ember_resident_memory_bytes") > 1e6);
    free(t);

    /* a dropped table leaves the per-table families; the process totals stay */
    Ember__V1__DropTableRequest dq = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    dq.name = (char *)"m";
    ck_assert_int_eq(admin(c, "DropTable", &dq.base, &r), 0);
    eh_result_free(&r);
    t = scrape(port);
    check_format(t);
    ck_assert(value(t, "ember_tables") == 0);
    ck_assert(value(t, "ember_table_rows{table=\"m\"}") == -1);
    ck_assert(value(t, "ember_keys_pulled_total") == 19);
    ck_assert(requests(t, "DropTable", "OK") == 1);
    free(t);

    eh_client_close(c);
    int st;
    ck_assert_int_eq(eh_server_stop(&s, SIGTERM, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    eh_server_cleanup(&s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(other_paths_not_found)
{
    eh_server s;
    start_with_metrics(&s, NULL);
    int port = eh_metrics_port(&s);
    ck_assert_int_gt(port, 0);
    char *body = NULL;
    ck_assert_int_eq(http(port, "GET", "/", &body), 404);
    free(body);
    ck_assert_int_eq(http(port, "GET", "/metricsx", NULL), 404);
    ck_assert_int_eq(http(port, "GET", "/metrics/", NULL), 404);
    ck_assert_int_eq(http(port, "POST", "/metrics", NULL), 405);
    ck_assert_int_eq(http(port, "HEAD", "/metrics", NULL), 200);
    /* many scrapes, one after another: connections are closed, none leak */
    for (int i = 0; i < 50; i++)
        free(scrape(port));
    eh_server_stop(&s, SIGTERM, NULL);
    eh_server_cleanup(&s);
}
END_TEST

/* TCP ports process `pid` listens on (from /proc/net/tcp{,6} and its fds). */
static int listening_ports(pid_t pid, int *ports, int cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    unsigned long inodes[1024];
    int ni = 0, n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && ni < 1024) {
        char fp[320], target[128];
        snprintf(fp, sizeof fp, "%s/%s", path, e->d_name);
        ssize_t l = readlink(fp, target, sizeof target - 1);
        if (l <= 0)
            continue;
        target[l] = '\0';
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) == 1)
            inodes[ni++] = ino;
    }
    closedir(d);
    const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(tables[k], "r");
        if (!f)
            continue;
        char line[512];
        if (!fgets(line, sizeof line, f)) {
            fclose(f);
            continue;
        }
        while (fgets(line, sizeof line, f)) {
            char local[64];
            unsigned st;
            unsigned long ino;
            if (sscanf(line, "%*d: %63s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &ino) != 3 ||
                st != 0x0A)
                continue;
            for (int i = 0; i < ni; i++)
                if (inodes[i] == ino && n < cap)
                    ports[n++] = (int)strtol(strrchr(local, ':') + 1, NULL, 16);
        }
        fclose(f);
    }
    return n;
}

START_TEST(no_flag_no_port)
{
    eh_server s;
    const char *flags[] = {"--threads=1", NULL};
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    int ports[8];
    int n = listening_ports(s.pid, ports, 8);
    ck_assert_msg(n == 1 && ports[0] == s.port, "%d ports, the first %d", n, n ? ports[0] : 0);
    ck_assert_int_eq(eh_metrics_port(&s), 0);
    eh_server_stop(&s, SIGTERM, NULL);
    eh_server_cleanup(&s);

    /* with it: two, the gRPC one and the logged metrics one */
    start_with_metrics(&s, NULL);
    n = listening_ports(s.pid, ports, 8);
    int mp = eh_metrics_port(&s);
    ck_assert_int_eq(n, 2);
    ck_assert((ports[0] == s.port && ports[1] == mp) || (ports[1] == s.port && ports[0] == mp));
    eh_server_stop(&s, SIGTERM, NULL);
    eh_server_cleanup(&s);
}
END_TEST

START_TEST(taken_port_exits_1)
{
    /* a port someone listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    char listen_flag[64], metrics_flag[64], *out = NULL;
    snprintf(listen_flag, sizeof listen_flag, "--listen=127.0.0.1:%d", sp_free_port());
    snprintf(metrics_flag, sizeof metrics_flag, "--metrics-listen=127.0.0.1:%d",
             ntohs(a.sin_port));
    const char *args[] = {listen_flag, metrics_flag, "--threads=1", "--backend=cpu", NULL};
    int st = eh_run_server_cmd(args, &out, 20000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d: %s", st, out);
    ck_assert_msg(strstr(out, "cannot listen for metrics on 127.0.0.1:") &&
                      strstr(out, "event=start_failed"),
                  "output: %s", out);
    ck_assert_msg(!strstr(out, "event=listening"), "the gRPC port opened: %s", out);
    free(out);
    close(fd);

    /* not a HOST:PORT, a host that does not resolve: exit 1 with the reason */
    const char *bad[] = {listen_flag, "--metrics-listen=127.0.0.1:http", "--backend=cpu", NULL};
    st = eh_run_server_cmd(bad, &out, 20000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(out, "is not HOST:PORT"),
                  "status %d: %s", st, out);
    free(out);
    const char *host[] = {listen_flag, "--metrics-listen=no-such-host.invalid:9090",
                          "--backend=cpu", NULL};
    st = eh_run_server_cmd(host, &out, 20000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(out, "cannot resolve"),
                  "status %d: %s", st, out);
    free(out);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_metrics"))
        return EH_EXIT_SKIP;
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, calls_counted_exactly);
    tcase_add_test(tc, other_paths_not_found);
    tcase_add_test(tc, no_flag_no_port);
    tcase_add_test(tc, taken_port_exits_1);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

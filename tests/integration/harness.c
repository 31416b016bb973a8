/* harness.c — real ember-server processes and a raw gRPC client (harness.h). */
#define _GNU_SOURCE
#include "harness.h"
#include "ember/v1/ember.pb-c.h"
#include "server_proc.h"

#include <arpa/inet.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef EMBER_HAVE_CUDA
#include "cuda/device.h"
#endif

#ifndef EMBER_SERVER_BIN
#error "EMBER_SERVER_BIN must name the ember-server binary"
#endif

/* $EMBER_SERVER_BIN where set (programs carried to another machine), else the
 * binary this test was built with. */
static const char *server_bin(void)
{
    return sp_server_bin(NULL, EMBER_SERVER_BIN, NULL);
}

const char *eh_backend(void)
{
    const char *b = getenv("EMBER_TEST_BACKEND");
    return b ? b : "cpu";
}

int eh_gpu_count(void)
{
#ifdef EMBER_HAVE_CUDA
    int n = 0;
    ember_error err;
    if (ember_cuda_device_count(&n, &err)) {
        fprintf(stderr, "harness: cannot count CUDA devices: %s\n", err.message);
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

const char *eh_backend_served(void)
{
    const char *b = eh_backend();
    if (!*b)
        b = getenv("EMBER_BACKEND") ? getenv("EMBER_BACKEND") : "auto";
    if (!strcmp(b, "auto"))
        return eh_gpu_count() > 0 ? "gpu" : "cpu";
    return b;
}

int eh_skip_without_gpu(const char *test)
{
    if (strcmp(eh_backend_served(), "gpu") || eh_gpu_count() > 0)
        return 0;
    fprintf(stderr, "%s: SKIPPED: servers on the gpu backend, but no GPU is visible%s\n", test,
#ifdef EMBER_HAVE_CUDA
            ""
#else
            " (built without CUDA)"
#endif
    );
    return 1;
}

/* Starts s's server and waits until it serves: 0 serving, -1 could not start,
 * 1 started but never served (it is killed again). */
static int spawn_serving(eh_server *s)
{
    char listen[80], backend[48];
    const char *argv[EH_MAX_FLAGS + 8];
    int k = 0;
    snprintf(listen, sizeof listen, "--listen=%s", s->addr);
    argv[k++] = server_bin();
    argv[k++] = listen;
    if (*eh_backend()) {
        snprintf(backend, sizeof backend, "--backend=%.32s", eh_backend());
        argv[k++] = backend;
    }
    for (int i = 0; i < s->nflags; i++)
        argv[k++] = s->flags[i];
    argv[k] = NULL;
    s->pid = sp_spawn(argv, NULL, s->log_path, 0);
    if (s->pid < 0) {
        s->pid = 0;
        return -1;
    }
    int rc = sp_wait_serving(s->pid, s->port, 20.0, NULL);
    if (rc == 0)
        return 0;
    if (rc == -2)
        sp_stop(s->pid, SIGKILL, 30.0, NULL);
    s->pid = 0;
    return 1;
}

int eh_server_start_on(eh_server *s, int port, const char *const *flags)
{
    static int seq;
    memset(s, 0, sizeof *s);
    for (int i = 0; flags && flags[i] && i < EH_MAX_FLAGS; i++)
        s->flags[s->nflags++] = strdup(flags[i]);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(s->log_path, sizeof s->log_path, "%s/ember-it-%d-%d.log", tmp, (int)getpid(),
             seq++);
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = port ? port : sp_free_port();
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        int rc = spawn_serving(s);
        if (rc <= 0)
            return rc;
        if (port)
            break; /* a fixed port that failed: do not retry elsewhere */
    }
    char *log = eh_server_log(s);
    fprintf(stderr, "harness: ember-server did not start; its log:\n%s\n", log ? log : "");
    free(log);
    return -1;
}

int eh_server_start(eh_server *s, const char *const *flags)
{
    return eh_server_start_on(s, 0, flags);
}

int eh_server_stop(eh_server *s, int sig, int *wstatus)
{
    if (!s->pid)
        return -1;
    int rc = sp_stop(s->pid, sig, 30.0, wstatus);
    if (rc > 0)
        fprintf(stderr, "harness: server %d ignored signal %d for 30 s; killed\n", (int)s->pid,
                sig);
    s->pid = 0;
    return rc ? -1 : 0;
}

int eh_server_restart(eh_server *s)
{
    if (s->pid)
        return -1;
    /* the port may linger for a moment after a kill: retry a few times */
    for (int attempt = 0; attempt < 50; attempt++) {
        int rc = spawn_serving(s);
        if (rc <= 0)
            return rc;
        sp_sleep_s(0.1);
    }
    return -1;
}

void eh_server_cleanup(eh_server *s)
{
    if (s->pid) {
        sp_stop(s->pid, SIGKILL, 30.0, NULL);
        s->pid = 0;
    }
    if (s->log_path[0] && !getenv("EMBER_IT_KEEP_LOGS"))
        unlink(s->log_path);
    for (int i = 0; i < s->nflags; i++)
        free(s->flags[i]);
    s->nflags = 0;
}

char *eh_server_log(const eh_server *s) { return sp_read_file(s->log_path); }

int eh_run_server_cmd(const char *const *args, char **output, int timeout_ms)
{
    const char *argv[EH_MAX_FLAGS + 2];
    int k = 0;
    argv[k++] = server_bin();
    for (int i = 0; args && args[i] && k < EH_MAX_FLAGS + 1; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    return sp_run(argv, 0, timeout_ms / 1000.0, output);
}

/* ---- client -------------------------------------------------------------- */

struct eh_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
};

eh_client *eh_client_open(const char *addr)
{
    eh_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    grpc_init();
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = -1;
    /* a fresh connection per client: tests want independent channels */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[1].value.integer = 1;
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(addr, cr, &ca);
    grpc_channel_credentials_release(cr);
    c->cq = grpc_completion_queue_create_for_next(NULL);
    return c;
}

void eh_client_close(eh_client *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    free(c);
    grpc_shutdown();
}

static int run_batch(eh_client *c, grpc_call *call, grpc_op *ops, size_t n)
{
    static int tag;
    if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "harness: grpc_call_start_batch failed\n");
        return -1;
    }
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == &tag)
            return ev.success ? 0 : 1;
    }
}

/* deadline_ms > 0: that long from now; < 0: that long ago; 0: 30 s. */
static gpr_timespec deadline_of(int deadline_ms)
{
    if (deadline_ms == 0)
        deadline_ms = 30000;
    if (deadline_ms > 0)
        return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                            gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    return gpr_time_sub(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(-deadline_ms, GPR_TIMESPAN));
}

static grpc_call *new_call(eh_client *c, const char *method, int deadline_ms)
{
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m,
                                               NULL, deadline_of(deadline_ms), NULL);
    grpc_slice_unref(m);
    return call;
}

static void status_into(eh_result *out, grpc_status_code st, grpc_slice details)
{
    out->code = (int)st;
    sp_status_message(details, out->message, sizeof out->message);
}

int eh_unary(eh_client *c, const char *method, const void *req, size_t len, int deadline_ms,
             eh_result *out)
{
    memset(out, 0, sizeof *out);
    return sp_unary(c->ch, c->cq, method, req, len, deadline_of(deadline_ms), &out->code,
                    out->message, sizeof out->message, &out->data, &out->len);
}

int eh_server_stream(eh_client *c, const char *method, const void *req, size_t len,
                     void (*on_msg)(void *ud, const uint8_t *data, size_t len), void *ud,
                     eh_result *out)
{
    memset(out, 0, sizeof *out);
    grpc_call *call = new_call(c, method, 0);
    grpc_slice s = grpc_slice_from_copied_buffer(req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_metadata_array md, tmd;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&tmd);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    int rc = run_batch(c, call, ops, 4) < 0 ? -1 : 0;
    while (!rc) {
        grpc_byte_buffer *recv = NULL;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &recv;
        if (run_batch(c, call, ops, 1) != 0 || !recv)
            break;
        uint8_t *d;
        size_t l;
        sp_flatten(recv, &d, &l);
        grpc_byte_buffer_destroy(recv);
        out->messages++;
        if (on_msg)
            on_msg(ud, d, l);
        free(d);
    }
    if (!rc) {
        grpc_status_code st;
        grpc_slice details = grpc_empty_slice();
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.trailing_metadata = &tmd;
        ops[0].data.recv_status_on_client.status = &st;
        ops[0].data.recv_status_on_client.status_details = &details;
        rc = run_batch(c, call, ops, 1) < 0 ? -1 : 0;
        if (!rc)
            status_into(out, st, details);
    }
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&tmd);
    grpc_call_unref(call);
    return rc;
}

int eh_client_stream(eh_client *c, const char *method, const void *const *msgs,
                     const size_t *lens, size_t n, eh_result *out)
{
    memset(out, 0, sizeof *out);
    grpc_call *call = new_call(c, method, 0);
    grpc_metadata_array md, tmd;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&tmd);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    int rc = run_batch(c, call, ops, 1) < 0 ? -1 : 0;
    for (size_t i = 0; !rc && i < n; i++) {
        grpc_slice s = grpc_slice_from_copied_buffer(msgs[i], lens[i]);
        grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_MESSAGE;
        ops[0].data.send_message.send_message = send;
        int r = run_batch(c, call, ops, 1);
        grpc_byte_buffer_destroy(send);
        if (r < 0)
            rc = -1;
        if (r)
            break; /* the server ended the call early: read its status */
    }
    if (!rc) {
        grpc_byte_buffer *recv = NULL;
        grpc_status_code st;
        grpc_slice details = grpc_empty_slice();
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        sp_recv_ops(ops + 1, &md, &recv, &tmd, &st, &details);
        rc = run_batch(c, call, ops, 4) < 0 ? -1 : 0;
        if (!rc) {
            status_into(out, st, details);
            sp_flatten(recv, &out->data, &out->len);
        }
        if (recv)
            grpc_byte_buffer_destroy(recv);
    }
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&tmd);
    grpc_call_unref(call);
    return rc;
}

struct eh_call {
    grpc_call *call;
};

eh_call *eh_call_open(eh_client *c, const char *method, const void *msg, size_t len)
{
    eh_call *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->call = new_call(c, method, 0);
    grpc_slice s = grpc_slice_from_copied_buffer(msg, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    int rc = run_batch(c, k->call, ops, 2);
    grpc_byte_buffer_destroy(send);
    if (rc != 0) {
        eh_call_cancel(k);
        return NULL;
    }
    return k;
}

void eh_call_cancel(eh_call *k)
{
    if (!k)
        return;
    grpc_call_cancel(k->call, NULL);
    grpc_call_unref(k->call);
    free(k);
}

void eh_result_free(eh_result *r)
{
    free(r->data);
    r->data = NULL;
    r->len = 0;
}

int eh_health_serving(eh_client *c, int deadline_ms)
{
    eh_result r;
    if (eh_unary(c, "/grpc.health.v1.Health/Check", "", 0, deadline_ms, &r))
        return -1;
    int ok = r.code == 0 && sp_health_reply_serving(r.data, r.len);
    eh_result_free(&r);
    return ok;
}

int eh_metrics_port(const eh_server *s)
{
    static const char tag[] = "event=metrics_listening addr=127.0.0.1:";
    char *log = eh_server_log(s);
    /* the last: a restarted server appends to its log, on a new port */
    const char *m = NULL;
    for (const char *at = log; at && (at = strstr(at, tag)) != NULL; at++)
        m = at;
    int port = m ? atoi(m + strlen(tag)) : 0;
    free(log);
    return port;
}

int eh_http(int port, const char *method, const char *path, char **reply)
{
    *reply = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method,
                     path);
    if (n <= 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ssize_t got;
    while (buf && (got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (cap - len < 2) {
            char *b = realloc(buf, cap *= 2);
            if (!b)
                free(buf);
            buf = b;
        }
    }
    close(fd);
    if (!buf)
        return -1;
    buf[len] = '\0';
    *reply = buf;
    return 0;
}

double eh_metric(const eh_server *s, const char *series)
{
    char *buf;
    int port = eh_metrics_port(s);
    if (port <= 0 || eh_http(port, "GET", "/metrics", &buf))
        return -1;
    double v = -1;
    size_t n = strlen(series);
    for (const char *l = strstr(buf, "\r\n\r\n"); l; l = strchr(l + 1, '\n'))
        if (!strncmp(l + 1, series, n) && l[1 + n] == ' ') {
            v = strtod(l + 2 + n, NULL);
            break;
        }
    free(buf);
    return v;
}

double eh_metric_wait(const eh_server *s, const char *series, double want, int timeout_ms)
{
    double v = eh_metric(s, series);
    for (int waited = 0; v != want && waited < timeout_ms; waited += 10) {
        usleep(10000);
        v = eh_metric(s, series);
    }
    return v;
}

/* ---- what a server holds ------------------------------------------------- */

typedef struct eh_row {
    uint64_t key, score, version;
    size_t off; /* into the floats */
} eh_row;

typedef struct eh_rows {
    eh_row *r;
    size_t n, cap;
    float *f;
    size_t nf, fcap;
    uint32_t rf;
    int bad;
} eh_rows;

static void rows_msg(void *ud, const uint8_t *d, size_t len)
{
    eh_rows *g = ud;
    Ember__V1__ExportChunk *ch = ember__v1__export_chunk__unpack(NULL, len, d);
    if (!ch) {
        g->bad = 1;
        return;
    }
    size_t n = ch->keys.len / 8;
    g->rf = ch->row_floats;
    for (size_t i = 0; i < n && !g->bad; i++) {
        if (g->n == g->cap) {
            g->cap = g->cap ? 2 * g->cap : 1024;
            eh_row *r = realloc(g->r, g->cap * sizeof *r);
            if (!r) {
                g->bad = 1;
                break;
            }
            g->r = r;
        }
        if (g->nf + ch->row_floats > g->fcap) {
            size_t cap = g->fcap ? 2 * g->fcap : 65536;
            while (cap < g->nf + ch->row_floats)
                cap *= 2;
            float *f = realloc(g->f, cap * sizeof *f);
            if (!f) {
                g->bad = 1;
                break;
            }
            g->f = f;
            g->fcap = cap;
        }
        eh_row *r = &g->r[g->n++];
        memcpy(&r->key, ch->keys.data + 8 * i, 8);
        memcpy(&r->score, ch->scores.data + 8 * i, 8);
        memcpy(&r->version, ch->versions.data + 8 * i, 8);
        r->off = g->nf;
        memcpy(g->f + g->nf, ch->values.data + (size_t)4 * ch->row_floats * i,
               (size_t)4 * ch->row_floats);
        g->nf += ch->row_floats;
    }
    ember__v1__export_chunk__free_unpacked(ch, NULL);
}

static int row_by_key(const void *a, const void *b)
{
    uint64_t x = ((const eh_row *)a)->key, y = ((const eh_row *)b)->key;
    return x < y ? -1 : x > y;
}

int eh_table_rows(const char *addr, const char *table, uint8_t **out, size_t *len,
                  size_t *rows)
{
    eh_rows g = {0};
    Ember__V1__ExportRequest q = EMBER__V1__EXPORT_REQUEST__INIT;
    q.table = (char *)table;
    q.full_rows = 1;
    uint8_t b[256];
    *out = NULL;
    *len = *rows = 0;
    if (ember__v1__export_request__get_packed_size(&q) > sizeof b)
        return -1;
    size_t blen = ember__v1__export_request__pack(&q, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    int rc = cl ? eh_server_stream(cl, "/ember.v1.Admin/Export", b, blen, rows_msg, &g, &r) : -1;
    if (cl)
        eh_client_close(cl);
    if (rc || g.bad) {
        if (!rc)
            eh_result_free(&r);
        free(g.r);
        free(g.f);
        return -1;
    }
    int code = r.code;
    eh_result_free(&r);
    if (g.n)
        qsort(g.r, g.n, sizeof *g.r, row_by_key);
    size_t each = 24 + 4 * (size_t)g.rf;
    uint8_t *o = malloc(g.n * each + 1);
    if (!o) {
        free(g.r);
        free(g.f);
        return -1;
    }
    for (size_t i = 0; i < g.n; i++) {
        uint8_t *p = o + i * each;
        memcpy(p, &g.r[i].key, 8);
        memcpy(p + 8, &g.r[i].score, 8);
        memcpy(p + 16, &g.r[i].version, 8);
        memcpy(p + 24, g.f + g.r[i].off, 4 * (size_t)g.rf);
    }
    *out = o;
    *len = g.n * each;
    *rows = g.n;
    free(g.r);
    free(g.f);
    return code;
}

int eh_tables_converge(const char *a, const char *b, const char *table, int timeout_s,
                       size_t *rows)
{
    size_t ra = 0, rb = 0;
    int ca = 0, cb = 0;
    for (int i = 0; i <= timeout_s * 10; i++) {
        uint8_t *x = NULL, *y = NULL;
        size_t lx = 0, ly = 0;
        ca = eh_table_rows(a, table, &x, &lx, &ra);
        cb = eh_table_rows(b, table, &y, &ly, &rb);
        int same = ca == 0 && cb == 0 && lx == ly && !memcmp(x, y, lx);
        free(x);
        free(y);
        if (same) {
            if (rows)
                *rows = ra;
            return 1;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "%s: %zu rows of %s (status %d); %s: %zu rows (status %d)\n", a, ra, table,
            ca, b, rb, cb);
    return 0;
}

char *eh_tmpdir(const char *what)
{
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "/tmp/ember-%s.XXXXXX", what);
    char *d = mkdtemp(tmpl);
    if (!d) {
        perror("mkdtemp");
        return NULL;
    }
    return strdup(d);
}

int eh_rm_rf(const char *dir)
{
    char cmd[512];
    if (snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir) >= (int)sizeof cmd)
        return -1;
    return system(cmd) == 0 ? 0 : -1;
}

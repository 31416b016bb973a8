/* server_proc.c — ember-server processes for tests and benchmarks (server_proc.h). */
#define _GNU_SOURCE
#include "server_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double sp_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sp_sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int sp_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- which binary ------------------------------------------------------------ */

int sp_is_executable(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int beside_self(const char *prog, char *out, size_t cap)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 0;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    int w = snprintf(out, cap, "%s/%s", self, prog);
    return w > 0 && (size_t)w < cap && sp_is_executable(out);
}

static int path_lookup(const char *prog, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(out, cap, "%.*s/%s", (int)len, path, prog);
        if (sp_is_executable(out))
            return 1;
        path += len + (colon ? 1 : 0);
    }
    return 0;
}

int sp_find_program(const char *prog, char *out, size_t cap)
{
    if (beside_self(prog, out, cap))
        return 1;
    return path_lookup(prog, out, cap) ? 2 : 0;
}

const char *sp_server_bin(const char *given, const char *built, const char **from)
{
    static char found[4096];
    const char *env = getenv("EMBER_SERVER_BIN"), *how, *bin;
    if (given) {
        bin = given;
        how = "--server";
    } else if (env && *env) {
        bin = env;
        how = "$EMBER_SERVER_BIN";
    } else if (sp_is_executable(built)) {
        bin = built;
        how = "this build's";
    } else {
        int where = sp_find_program("ember-server", found, sizeof found);
        bin = where ? found : built;
        how = where == 1 ? "beside this program" : where == 2 ? "$PATH" : "not found";
    }
    if (from)
        *from = how;
    return bin;
}

/* ---- children ---------------------------------------------------------------- */

pid_t sp_spawn(const char *const *argv, const char *const *env, const char *log_path, int flags)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (flags & SP_OWN_GROUP) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1); /* the caller died before the line above */
    }
    int fd = open(log_path, O_WRONLY | O_CREAT | (flags & SP_LOG_TRUNCATE ? O_TRUNC : O_APPEND),
                  0644);
    if (fd >= 0) {
        dup2(fd, 1);
        if (flags & SP_STDERR_NULL) {
            int dn = open("/dev/null", O_WRONLY);
            if (dn >= 0)
                dup2(dn, 2);
        } else {
            dup2(fd, 2);
        }
        close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int sp_exited(pid_t pid, int *wstatus)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0)
        return 0;
    if (r != pid)
        return -1;
    if (wstatus)
        *wstatus = st;
    return 1;
}

int sp_wait_exit(pid_t pid, double timeout_s, int *wstatus)
{
    double end = sp_now_s() + timeout_s;
    for (;;) {
        int r = sp_exited(pid, wstatus);
        if (r)
            return r > 0 ? 0 : -1;
        if (sp_now_s() > end)
            return -1;
        sp_sleep_s(0.01);
    }
}

int sp_stop(pid_t pid, int sig, double timeout_s, int *wstatus)
{
    int st = 0;
    if (pid <= 0 || kill(pid, sig) != 0)
        return -1;
    if (sp_wait_exit(pid, timeout_s, &st) == 0) {
        if (wstatus)
            *wstatus = st;
        return 0;
    }
    kill(pid, SIGKILL);
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    if (wstatus)
        *wstatus = st;
    return 1;
}

int sp_run(const char *const *argv, int flags, double timeout_s, char **output)
{
    static int seq;
    char path[256];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/ember-sp-%d-%d.out", tmp, (int)getpid(), seq++);
    if (output)
        *output = NULL;
    pid_t pid = sp_spawn(argv, NULL, path, flags | SP_LOG_TRUNCATE);
    int st = -1;
    if (pid > 0 && sp_wait_exit(pid, timeout_s, &st) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    if (output)
        *output = sp_read_file(path);
    unlink(path);
    return pid > 0 ? st : -1;
}

/* ---- serving ------------------------------------------------------------------ */

static int port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int sp_health_reply_serving(const uint8_t *data, size_t len)
{
    return len == 2 && data[0] == 0x08 && data[1] == 0x01;
}

void sp_flatten(grpc_byte_buffer *bb, uint8_t **data, size_t *len)
{
    grpc_byte_buffer_reader rd;
    *data = NULL;
    *len = 0;
    if (!bb || !grpc_byte_buffer_reader_init(&rd, bb))
        return;
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    *len = GRPC_SLICE_LENGTH(s);
    *data = malloc(*len ? *len : 1);
    if (*data && *len)
        memcpy(*data, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
}

void sp_status_message(grpc_slice details, char *msg, size_t cap)
{
    if (msg && cap) {
        size_t l = GRPC_SLICE_LENGTH(details);
        if (l >= cap)
            l = cap - 1;
        memcpy(msg, GRPC_SLICE_START_PTR(details), l);
        msg[l] = '\0';
    }
    grpc_slice_unref(details);
}

void sp_recv_ops(grpc_op *ops, grpc_metadata_array *md, grpc_byte_buffer **recv,
                 grpc_metadata_array *tmd, grpc_status_code *st, grpc_slice *details)
{
    memset(ops, 0, 3 * sizeof *ops);
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = md;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = recv;
    ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[2].data.recv_status_on_client.trailing_metadata = tmd;
    ops[2].data.recv_status_on_client.status = st;
    ops[2].data.recv_status_on_client.status_details = details;
}

int sp_unary(grpc_channel *ch, grpc_completion_queue *cq, const char *method, const void *req,
             size_t len, gpr_timespec deadline, int *code, char *msg, size_t msg_cap,
             uint8_t **data, size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                               deadline, NULL);
    grpc_slice_unref(m);
    grpc_slice s = grpc_slice_from_copied_buffer(req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
    grpc_slice_unref(s);
    grpc_metadata_array md, tmd;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&tmd);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    sp_recv_ops(ops + 3, &md, &recv, &tmd, &st, &details);
    int tag, rc = -1;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK) {
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                       NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &tag)
                break;
        }
        rc = 0;
        *code = (int)st;
        sp_status_message(details, msg, msg_cap);
        sp_flatten(recv, data, data_len);
    } else {
        fprintf(stderr, "server_proc: grpc_call_start_batch failed\n");
        grpc_slice_unref(details);
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&tmd);
    grpc_call_unref(call);
    return rc;
}

/* One Health/Check on channel ch: 1 SERVING, 0 not. */
static int health_call(grpc_channel *ch, grpc_completion_queue *cq, int deadline_ms)
{
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                   gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    int code = -1;
    uint8_t *data;
    size_t len;
    if (sp_unary(ch, cq, "/grpc.health.v1.Health/Check", "", 0, dl, &code, NULL, 0, &data,
                 &len))
        return 0;
    int serving = code == GRPC_STATUS_OK && sp_health_reply_serving(data, len);
    free(data);
    return serving;
}

typedef struct health_channel {
    grpc_channel *ch;
    grpc_completion_queue *cq;
} health_channel;

static void health_open(health_channel *h, const char *addr)
{
    grpc_init();
    /* a connection of its own, not one shared with the caller's channels */
    grpc_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.type = GRPC_ARG_INTEGER;
    arg.key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    arg.value.integer = 1;
    grpc_channel_args ca = {1, &arg};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    h->ch = grpc_channel_create(addr, cr, &ca);
    grpc_channel_credentials_release(cr);
    h->cq = grpc_completion_queue_create_for_next(NULL);
}

static void health_close(health_channel *h)
{
    grpc_channel_destroy(h->ch);
    grpc_completion_queue_shutdown(h->cq);
    while (grpc_completion_queue_next(h->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(h->cq);
    grpc_shutdown();
}

int sp_health_serving(const char *addr, int deadline_ms)
{
    health_channel h;
    health_open(&h, addr);
    int ok = health_call(h.ch, h.cq, deadline_ms);
    health_close(&h);
    return ok;
}

int sp_wait_serving(pid_t pid, int port, double timeout_s, int *wstatus)
{
    double end = sp_now_s() + timeout_s;
    while (sp_now_s() < end && !port_accepts(port)) {
        if (sp_exited(pid, wstatus) == 1)
            return -1;
        sp_sleep_s(0.01);
    }
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    health_channel h;
    health_open(&h, addr);
    int rc = -2;
    while (sp_now_s() < end) {
        if (sp_exited(pid, wstatus) == 1) {
            rc = -1;
            break;
        }
        if (health_call(h.ch, h.cq, 500)) {
            rc = 0;
            break;
        }
        sp_sleep_s(0.02);
    }
    health_close(&h);
    return rc;
}

/* ---- logs --------------------------------------------------------------------- */

char *sp_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    if (b)
        b[got] = '\0';
    fclose(f);
    return b;
}

void sp_print_log_tail(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    char buf[4096];
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    fprintf(stderr, "---- %s (tail) ----\n%s\n----\n", path, buf);
}

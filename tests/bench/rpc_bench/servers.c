/* servers.c — the processes rpc_bench runs: its ember-servers, one set per
 * backend (started, watched and stopped through tests/lib/server_proc.h), the
 * CPU time they use, and iperf3 for the TCP loopback ceiling. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rpc_bench/rpc_bench.h"
#include "server_proc.h"

backend g_backends[MAX_BACKENDS];
int g_nbackends;
char g_gpu_why[256];
ceiling g_ceiling = {{{-1.0, -1.0}, {-1.0, -1.0}}};
char g_iperf_version[64];
static volatile pid_t g_iperf_pid;

/* For a second signal: SIGKILL to every child, at once (async-signal-safe). */
void kill_children(void)
{
    for (int b = 0; b < g_nbackends; b++)
        for (unsigned i = 0; i < g_backends[b].nservers; i++)
            if (g_backends[b].servers[i].pid > 0)
                kill(g_backends[b].servers[i].pid, SIGKILL);
    if (g_iperf_pid > 0)
        kill(g_iperf_pid, SIGKILL);
}

/* TCP sockets in state `state` (0x0A listening, 0x01 established) whose local
 * port is `local` (when > 0) or whose remote port is one of remote[0..n), read
 * from /proc/net/tcp{,6}: how many. */
static int tcp_count(unsigned state, int local, const int *remote, int n)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int count = 0;
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char line[512];
        if (!fp)
            continue;
        while (fgets(line, sizeof line, fp)) {
            unsigned lport, rport, st;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x", &lport, &rport,
                       &st) != 3 || st != state)
                continue;
            count += local > 0 && (int)lport == local;
            for (int i = 0; i < n; i++)
                count += (int)rport == remote[i];
        }
        fclose(fp);
    }
    return count;
}

/* Whether something listens on TCP `port`, without connecting: a connection
 * would be iperf3 -1's one and only client. */
static int tcp_listening(int port)
{
    return tcp_count(0x0A, port, NULL, 0) > 0;
}

/* Established TCP connections whose remote port is one of backend b's shards':
 * how many connections the clients really use. */
int tcp_conns_to_shards(const backend *bk)
{
    return tcp_count(0x01, 0, bk->ports, bk->nports);
}

/* 1 if the log at `path` says the server could not listen (its port was
 * taken: another port may do). */
static int log_says_port_taken(const char *path)
{
    FILE *lf = fopen(path, "r");
    char line[512];
    int taken = 0;
    while (lf && fgets(line, sizeof line, lf))
        taken |= strstr(line, "cannot listen") != NULL || strstr(line, "in use") != NULL;
    if (lf)
        fclose(lf);
    return taken;
}

/* Starts server idx of backend bk on a free loopback port and waits until it
 * answers SERVING. 0, or -1 with the reason in bk->why_down (the server's log
 * tail printed). */
int server_start(const bench_opts *o, backend *bk, server *s, unsigned idx,
                 const char *replica_of)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = sp_free_port();
        if (s->port <= 0)
            continue;
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        snprintf(s->log_path, sizeof s->log_path, "/tmp/rpc_bench.%d.%s.server%u%s.log",
                 (int)getpid(), bk->name, idx, replica_of ? "-follower" : "");
        char threads[16], sidx[16], scount[16];
        snprintf(threads, sizeof threads, "%u", o->server_threads);
        snprintf(sidx, sizeof sidx, "%u", idx);
        snprintf(scount, sizeof scount, "%u", o->servers);
        const char *argv[16 + MAX_SERVER_ARGS];
        int ac = 0;
        argv[ac++] = o->server_bin;
        argv[ac++] = "--listen";
        argv[ac++] = s->addr;
        argv[ac++] = "--threads";
        argv[ac++] = threads;
        argv[ac++] = "--shard-index";
        argv[ac++] = sidx;
        argv[ac++] = "--shard-count";
        argv[ac++] = scount;
        argv[ac++] = "--log-level";
        argv[ac++] = "warn";
        argv[ac++] = "--backend";
        argv[ac++] = bk->name;
        if (replica_of) { /* a follower of shard idx (--followers) */
            argv[ac++] = "--replica-of";
            argv[ac++] = replica_of;
        }
        for (int i = 0; i < o->n_server_args; i++)
            argv[ac++] = o->server_args[i];
        argv[ac] = NULL;
        /* its own process group: a signal to ours (timeout(1), ^C) is for this
         * program, which then stops the servers in order; if this program
         * dies, the kernel kills them */
        pid_t pid = sp_spawn(argv, NULL, s->log_path, SP_LOG_TRUNCATE | SP_OWN_GROUP);
        if (pid < 0) {
            snprintf(bk->why_down, sizeof bk->why_down, "fork: %s", strerror(errno));
            return -1;
        }
        s->pid = pid;
        int st = 0;
        /* 30 s: a GPU server creates its CUDA context first */
        int rc = sp_wait_serving(pid, s->port, 30.0, &st);
        if (rc == 0)
            return 0;
        if (rc == -1) {
            s->pid = 0;
            snprintf(bk->why_down, sizeof bk->why_down,
                     "%s server %u (%s) exited at start (%s %d; its log is printed)", bk->name,
                     idx, s->addr, WIFEXITED(st) ? "exit" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            fprintf(stderr, "rpc_bench: %s\n", bk->why_down);
            sp_print_log_tail(s->log_path);
            /* exit 127: no binary; any other exit is the server refusing (no GPU
             * for --backend gpu, say): trying another port is no use unless the
             * port was taken, which its log would say */
            if (WIFEXITED(st) && WEXITSTATUS(st) != 0 && !log_says_port_taken(s->log_path))
                return -1;
            continue; /* perhaps the port was taken: another one */
        }
        snprintf(bk->why_down, sizeof bk->why_down,
                 "%s server %u (%s) did not answer SERVING within 30 s", bk->name, idx, s->addr);
        fprintf(stderr, "rpc_bench: %s\n", bk->why_down);
        sp_stop(s->pid, SIGKILL, 30.0, NULL);
        s->pid = 0;
        sp_print_log_tail(s->log_path);
        return -1;
    }
    return -1;
}

/* Whether every server of bk still runs; a dead one is reaped, reported with
 * its log, and takes the backend down. */
int backend_alive(backend *bk)
{
    int alive = 1;
    for (unsigned i = 0; i < bk->nservers; i++) {
        server *s = &bk->servers[i];
        int st = 0;
        if (s->pid <= 0 || sp_exited(s->pid, &st) != 1)
            continue;
        s->pid = 0;
        alive = 0;
        bk->server_failed = 1;
        snprintf(bk->why_down, sizeof bk->why_down, "%s server %u (%s) died (%s %d)", bk->name,
                 i, s->addr, WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        fprintf(stderr, "rpc_bench: %s; its log:\n", bk->why_down);
        sp_print_log_tail(s->log_path);
    }
    if (!alive)
        bk->up = 0;
    return alive;
}

/* SIGTERM, then SIGKILL after 20 s; prints how it ended. Returns 0 on exit 0. */
int server_stop(server *s, const char *bk, unsigned idx)
{
    if (s->pid <= 0)
        return 0;
    int st = 0, rc = 0;
    if (sp_stop(s->pid, SIGTERM, 20.0, &st) != 0) {
        printf("%s server %u (%s): did not exit within 20 s of SIGTERM; killed\n", bk, idx,
               s->addr);
        rc = -1;
    } else if (WIFEXITED(st)) {
        printf("%s server %u (%s): SIGTERM, exit %d\n", bk, idx, s->addr, WEXITSTATUS(st));
        rc = WEXITSTATUS(st) ? -1 : 0;
    } else {
        printf("%s server %u (%s): SIGTERM, killed by signal %d\n", bk, idx, s->addr,
               WTERMSIG(st));
        rc = -1;
    }
    if (rc)
        sp_print_log_tail(s->log_path);
    else
        unlink(s->log_path);
    s->pid = 0;
    return rc;
}

/* CPU seconds (user + system) of a process, from /proc/<pid>/stat. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0.0;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');   /* the command may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0.0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* CPU seconds of backend b's servers (b = -1: of every backend but `except`). */
double servers_cpu_s(int b, int except)
{
    double s = 0.0;
    for (int k = 0; k < g_nbackends; k++) {
        if (b >= 0 ? k != b : k == except)
            continue;
        for (unsigned i = 0; i < g_backends[k].nservers; i++)
            if (g_backends[k].servers[i].pid > 0)
                s += proc_cpu_s(g_backends[k].servers[i].pid);
    }
    return s;
}

/* end.sum_received.bits_per_second of iperf3's JSON, or -1. */
static double iperf_parse(const char *json)
{
    const char *p = strstr(json, "\"sum_received\"");
    if (!p)
        return -1.0;
    p = strstr(p, "\"bits_per_second\"");
    if (!p)
        return -1.0;
    p = strchr(p + 17, ':');
    if (!p)
        return -1.0;
    char *end;
    double v = strtod(p + 1, &end);
    return end == p + 1 ? -1.0 : v;
}

/* start.version of iperf3's JSON ("iperf 3.12"), into out; "" if absent. */
static void iperf_version(const char *json, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = strstr(json, "\"version\"");
    if (!p || !(p = strchr(p + 9, '"')))
        return;
    const char *q = strchr(p + 1, '"');
    if (q)
        snprintf(out, cap, "%.*s", (int)(q - p - 1), p + 1);
}

/* Loopback TCP bytes/s with `streams` parallel streams, or -1 (why in `why`). */
static double iperf_measure(const char *bin, int streams, double secs, char *why, size_t cap)
{
    int port = sp_free_port();
    char sport[16], st[32], sp[16];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(st, sizeof st, "%g", secs);
    snprintf(sp, sizeof sp, "%d", streams);
    const char *srv[] = {bin, "-s", "-1", "-p", sport, NULL};
    pid_t pid = sp_spawn(srv, NULL, "/dev/null", SP_OWN_GROUP);
    if (pid < 0) {
        snprintf(why, cap, "fork: %s", strerror(errno));
        return -1.0;
    }
    g_iperf_pid = pid;
    double end = sp_now_s() + 10.0;
    while (!tcp_listening(port) && sp_now_s() < end && sp_exited(pid, NULL) == 0)
        sp_sleep_s(0.02);
    const char *argv[] = {bin, "-c", "127.0.0.1", "-p", sport, "-t", st, "-P", sp, "-J", NULL};
    char *out = NULL;
    double bps = -1.0;
    int status = sp_run(argv, SP_STDERR_NULL | SP_OWN_GROUP, secs + 30.0, &out);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, cap, "iperf3 client failed (status %d)", status);
    } else if ((bps = iperf_parse(out ? out : "")) < 0) {
        snprintf(why, cap, "no end.sum_received.bits_per_second in iperf3's JSON");
    } else if (!g_iperf_version[0]) {
        iperf_version(out, g_iperf_version, sizeof g_iperf_version);
    }
    free(out);
    if (sp_wait_exit(pid, 5.0, NULL) != 0)
        sp_stop(pid, SIGKILL, 5.0, NULL);
    g_iperf_pid = 0;
    return bps > 0 ? bps / 8.0 : -1.0;
}

static void measure_ceiling_into(const bench_opts *o, int when)
{
    const int streams[2] = {1, o->iperf_streams};
    const char *tag = when ? "end" : "start";
    if (o->no_iperf) {
        if (!when)
            printf("loopback ceiling: skipped (--no-iperf)\n");
        return;
    }
    if (!o->iperf_bin) {
        if (!when)
            printf("loopback ceiling: NOT MEASURED: iperf3 was not found (--iperf PATH, "
                   "$EMBER_IPERF3_BIN, beside this program, or $PATH; Debian package iperf3, "
                   "which deploy/install-deps.sh installs): going on without it\n");
        return;
    }
    for (int k = 0; k < 2; k++) {
        char why[256] = "";
        if (g_stop)
            return;
        double b = iperf_measure(o->iperf_bin, streams[k], o->iperf_seconds, why, sizeof why);
        g_ceiling.bps[when][k] = b;
        if (b > 0)
            printf("loopback ceiling (%s of run): iperf3 -c 127.0.0.1 -t %g -P %d: %.3f GB/s "
                   "(%.2f Gbit/s)%s%s\n",
                   tag, o->iperf_seconds, streams[k], b / 1e9, b * 8 / 1e9,
                   g_iperf_version[0] ? "  " : "", g_iperf_version);
        else
            printf("loopback ceiling (%s of run), %d stream(s): not measured: %s\n", tag,
                   streams[k], why);
    }
}

void measure_ceiling(ctx *x, int when)
{
    measure_ceiling_into(x->o, when);
    for (int k = 0; k < 2; k++) {
        double b = g_ceiling.bps[0][k] > g_ceiling.bps[1][k] ? g_ceiling.bps[0][k]
                                                             : g_ceiling.bps[1][k];
        if (k == 0)
            x->ceiling1 = b;
        else
            x->ceilingN = b;
    }
}

/*
 * rpc_bench.c — pull, push and push+pull through libember against real
 * ember-server processes, on the CPU and the GPU table backend side by side,
 * next to the TCP loopback ceiling measured in the same run (iperf3), in the
 * units of docs/BENCHMARKS.md.
 *
 * Setup
 *   - Backends: --backends cpu,gpu (default cpu, and gpu too where this
 *     program was built with CUDA and a GPU is visible; a gpu request it
 *     cannot honour is said and skipped). Per backend it starts its own
 *     servers (--servers N, default 1) with `--backend <b>` and runs the same
 *     measurements against each, one shape after the other on every backend
 *     (interleaved, so that a slow minute of the machine hits both alike), and
 *     prints them side by side with the ratio gpu/cpu. A backend whose server
 *     dies, or whose calls time out or keep failing, is dropped for the rest
 *     of the run (said, with the server's log) and the others go on.
 *   - Servers: from the ember-server binary given by --server PATH, else
 *     $EMBER_SERVER_BIN, else the one this was built with, else an
 *     ember-server beside this program (a packed copy), else $PATH; on free
 *     127.0.0.1 ports with --threads T (default 2; --issue5: half the online
 *     cores), plus --server-args; waited for until each answers, and stopped
 *     with SIGTERM at the end (their exit status is printed). --shards
 *     host:port,... uses running servers instead (one backend, "given"); its
 *     tables (rpcb_*) are dropped and re-created.
 *   - Tables: per dim, one table per optimizer that a chosen op uses (pull
 *     reads the SGD table, or with --issue5 the Adam one; push-adagrad and
 *     push+pull the Adagrad one; push-sgd SGD; push-adam Adam), capacity per
 *     shard --capacity (default 2 × universe / shards), pre-filled untimed with
 *     every key of the universe (--universe, default 1,048,576) by inserting
 *     pulls, so timed calls find their keys (pulls create none, pushes update
 *     rows).
 *   - Keys: ranks of the universe, scrambled by a bijective mixer (splitmix64's
 *     finaliser). "uniform": each request holds n distinct uniform ranks (a
 *     partial Fisher–Yates shuffle); "zipf": n distinct ranks drawn from
 *     Zipf(s = --zipf, 1.05) without replacement (duplicates redrawn), so hot
 *     keys are in most requests but never twice in one — the headline shapes
 *     ("4,096 distinct keys"); "zipf-dup": Zipf with duplicates (libember dedups
 *     pulls and merges pushes; keys/s still counts the caller's keys). A set of
 *     request batches is drawn once per (n, distribution) and cycled.
 *   - Calls: "CxD" = C clients (threads, each with its own ember_client, opened
 *     for the measurement), each keeping D calls in flight: pulls and pushes through
 *     ember_pull_async/ember_push_async with D outstanding, waited on in order;
 *     push+pull has no async form, so its D calls in flight are D threads
 *     sharing the client, each calling ember_push_pull. push+pull pushes
 *     gradients for one batch and pulls the next (a training step), n keys each.
 *     ember_clients of one process share one TCP connection per shard unless
 *     --channels > 1, which gives every client that many of its own (calls
 *     round-robin over them); the connections really used are counted.
 *   - Timing: per measurement a warm-up (--warmup s), then --reps runs of
 *     --seconds each: every thread issues calls until the run's time is up and
 *     waits for what it has in flight; a run's figure is the keys of all
 *     completed calls over the time from the first thread's start to the last
 *     one's end. min/median/max over the runs. --budget S: measurements that
 *     would start after S seconds of measuring are skipped (said), so a run
 *     always ends with its summary; a first SIGINT/SIGTERM does the same, a
 *     second one kills everything.
 *
 * --issue5: the matrix of issue 5 ("GPU shard servers"): ops pull and
 * push-adam on an Adam table, 4,096 and 65,536 distinct uniform keys per call,
 * dim 64 and 128, 1, 4 and 16 clients each on its own 2 connections with 2 calls
 * in flight (1x2, 4x2, 16x2), 2 × 1 s per point after 0.5 s warm-up, 2 M keys
 * per table, the 8-stream loopback ceiling, then the issue's three targets with
 * met/MISSED. About 3 minutes on a 16-core machine with both backends;
 * --quick (0.3 s per point, 256 Ki keys per table) about 35 s. Any option
 * given beside it wins.
 *
 * Units: keys/s are the caller's keys per second (10^6 = M); payload GB/s
 * counts value bytes only (n × dim × 4 per pull or push; push+pull moves both:
 * 2 × n × dim × 4), 10^9 bytes = 1 GB; latency per call from issue to its wait
 * returning, p50/p99 (nearest rank) over every call of the timed runs. CPU:
 * seconds of CPU per second of wall time of the servers (utime + stime from
 * /proc/<pid>/stat, before and after the timed runs, warm-up excluded) and of
 * this process (client threads, pollers), so 100% = one core busy; and the same
 * CPU time per key moved ("ns/key", server + client; the server's also as
 * "s/M keys" = CPU seconds per million keys), which other load on a shared
 * machine disturbs far less than keys/s: compare versions by it.
 *
 * The loopback ceiling: `iperf3 -s -1` and `iperf3 -c 127.0.0.1 -t S -J [-P N]`,
 * end.sum_received.bits_per_second, for 1 and N streams (--iperf-streams,
 * default 4; --issue5: 8), before the servers start and again after they
 * stopped; pull payload is printed as a % of the larger figure of each (this
 * machine may be shared: one moment's ceiling may be low). iperf3 is --iperf
 * PATH, else $EMBER_IPERF3_BIN, else one beside this program, else $PATH;
 * without it the run says so and goes on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_keys.h"
#include "ember/ember.h"

#ifndef EMBER_SERVER_BIN
#define EMBER_SERVER_BIN "ember-server"
#endif

#ifdef EMBER_BENCH_GPU
int rpc_bench_gpu_count(char *why, size_t cap);   /* rpc_bench_gpu.c */
#endif

/* ---- what can be measured -------------------------------------------------- */

enum { OP_PULL, OP_PUSH_ADAGRAD, OP_PUSH_SGD, OP_PUSH_ADAM, OP_PUSHPULL, OP_COUNT };
static const char *const op_cli[OP_COUNT] = {"pull", "push-adagrad", "push-sgd", "push-adam",
                                             "pushpull"};
static const char *const op_label[OP_COUNT] = {"pull", "push(adagrad)", "push(sgd)",
                                               "push(adam)", "push+pull(adagrad)"};
/* what runs when --ops is not given (push-adam is issue 5's, opt-in elsewhere) */
static const int op_default[OP_COUNT] = {1, 1, 1, 0, 1};

enum { DIST_UNIFORM, DIST_ZIPF, DIST_ZIPF_DUP, DIST_COUNT };
static const char *const dist_names[DIST_COUNT] = {"uniform", "zipf", "zipf-dup"};

enum { TAB_SGD, TAB_ADAGRAD, TAB_ADAM, TAB_COUNT };
static const char *const tab_names[TAB_COUNT] = {"sgd", "adagrad", "adam"};
static const char *const tab_labels[TAB_COUNT] = {"SGD", "Adagrad", "Adam"};

/* table backends a started server can be given (--backend of ember-server) */
enum { BK_CPU, BK_GPU, BK_KINDS };
static const char *const bk_names[BK_KINDS] = {"cpu", "gpu"};

#define MAX_LIST 16
#define MAX_SERVERS 16
#define MAX_THREADS 256
#define MAX_BACKENDS BK_KINDS
#define MAX_SERVER_ARGS 16

typedef struct conc {
    unsigned clients, depth;
} conc;

typedef struct bench_opts {
    const char *server_bin;
    const char *server_bin_from;  /* how server_bin was chosen */
    const char *iperf_bin;        /* NULL: not found */
    const char *shards;          /* given servers, or NULL: start our own */
    unsigned servers, server_threads, channels;
    int backends[BK_KINDS];      /* asked for (--backends), or the default */
    int backends_given;
    char *server_args[MAX_SERVER_ARGS];
    int n_server_args;
    int ops[OP_COUNT];
    int pull_tab;                /* TAB_*: the table pulls read */
    size_t keys[MAX_LIST];
    int n_keys;
    uint32_t dims[MAX_LIST];
    int n_dims;
    int dists[DIST_COUNT];
    conc concs[MAX_LIST];
    int n_concs;
    double seconds, warmup;
    int reps;
    uint64_t universe, capacity;
    double zipf_s;
    uint64_t seed;
    const char *csv;
    int quick, issue5, latency, no_iperf;
    double iperf_seconds;
    int iperf_streams;           /* the multi-stream ceiling's streams */
    double budget_s;             /* 0: none */
    unsigned timeout_ms;
} bench_opts;

typedef struct bench_result {
    int backend;                 /* index into g_backends */
    int op, dist, failed;
    size_t n;
    uint32_t dim;
    conc cc;
    double kps_min, kps_med, kps_max;
    double gbps_med;             /* payload at the median */
    double p50_us, p99_us;
    uint64_t calls;
    double srv_cpu, cli_cpu;     /* cores busy, over the timed runs */
    double srv_ns, cli_ns;       /* CPU ns per key over the timed runs (robust to noise) */
    double idle_cpu;             /* cores busy in the other backends' (idle) servers */
    int conns;                   /* TCP connections to the shards after the warm-up */
} bench_result;

static volatile sig_atomic_t g_stop;

/* ---- time, random numbers, keys ------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "rpc_bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* ---- request batches --------------------------------------------------------- */

typedef struct keyset {
    size_t n;
    int dist;
    size_t nb;                   /* batches */
    uint64_t *keys;              /* nb × n */
    double distinct_frac;        /* distinct keys / n, averaged over batches */
} keyset;

static keyset *g_keysets[MAX_LIST * DIST_COUNT];
static int g_n_keysets;

static const keyset *keyset_get(const bench_opts *o, size_t n, int dist)
{
    for (int i = 0; i < g_n_keysets; i++)
        if (g_keysets[i]->n == n && g_keysets[i]->dist == dist)
            return g_keysets[i];
    keyset *ks = xmalloc(sizeof *ks);
    uint64_t U = o->universe;
    size_t nb = (size_t)((UINT64_C(1) << 21) / n);
    if (nb < 16)
        nb = 16;
    if (nb > 4096)
        nb = 4096;
    ks->n = n;
    ks->dist = dist;
    ks->nb = nb;
    ks->keys = xmalloc(nb * n * sizeof *ks->keys);
    bench_rng r = {o->seed ^ (n * 1315423911u) ^ ((uint64_t)dist << 40)};
    double t0 = now_s();
    size_t distinct_sum = 0;
    uint32_t *stamp = calloc(U, sizeof *stamp);     /* batch number + 1 that took the rank */
    uint64_t *perm = NULL;
    bench_zipf z;
    if (!stamp) {
        fprintf(stderr, "rpc_bench: out of memory\n");
        exit(1);
    }
    if (dist == DIST_UNIFORM) {
        perm = xmalloc(U * sizeof *perm);
        for (uint64_t i = 0; i < U; i++)
            perm[i] = i;
    } else {
        zipf_init(&z, U, o->zipf_s);
    }
    for (size_t b = 0; b < nb; b++) {
        uint64_t *k = ks->keys + b * n;
        size_t distinct = 0;
        if (dist == DIST_UNIFORM) {
            /* partial Fisher–Yates: n distinct ranks */
            for (size_t i = 0; i < n; i++) {
                uint64_t j = i + rng_below(&r, U - i);
                uint64_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
                k[i] = bench_key(perm[i]);
            }
            distinct = n;
        } else {
            for (size_t i = 0; i < n;) {
                uint64_t rank = zipf_draw(&z, &r);
                int fresh = stamp[rank] != (uint32_t)(b + 1);
                if (dist == DIST_ZIPF && !fresh)
                    continue;
                stamp[rank] = (uint32_t)(b + 1);
                distinct += fresh;
                k[i++] = bench_key(rank);
            }
        }
        distinct_sum += distinct;
    }
    free(stamp);
    free(perm);
    ks->distinct_frac = (double)distinct_sum / (double)(nb * n);
    printf("keys: %zu batches of %zu %s keys drawn from a universe of %llu in %.2f s "
           "(%.1f%% distinct within a request)\n",
           nb, n, dist_names[dist], (unsigned long long)U, now_s() - t0,
           100.0 * ks->distinct_frac);
    fflush(stdout);
    g_keysets[g_n_keysets++] = ks;
    return ks;
}

/* ---- processes: servers, iperf3 --------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char addr[64];
    char log_path[160];
} server;

/* One backend's servers and how it fares. */
typedef struct backend {
    const char *name;            /* "cpu", "gpu", or "given" (--shards) */
    int kind;                    /* BK_*, or -1 for given servers */
    server servers[MAX_SERVERS];
    unsigned nservers;
    char shards[MAX_SERVERS * 64 + 1];
    int ports[MAX_SERVERS * 4];  /* the shards' ports, to count connections to them */
    int nports;
    int up;                      /* serving: its measurements run */
    int failures;                /* failed measurements */
    int server_failed;           /* a server died, or would not start or stop cleanly */
    char why_down[256];          /* why it is not (or no longer) up */
} backend;

static backend g_backends[MAX_BACKENDS];
static int g_nbackends;
static char g_gpu_why[256];      /* why the gpu backend is not run, when it is not */
static volatile pid_t g_iperf_pid;
static volatile sig_atomic_t g_signals;

static void kill_children(void)
{
    for (int b = 0; b < g_nbackends; b++)
        for (unsigned i = 0; i < g_backends[b].nservers; i++)
            if (g_backends[b].servers[i].pid > 0)
                kill(g_backends[b].servers[i].pid, SIGKILL);
    if (g_iperf_pid > 0)
        kill(g_iperf_pid, SIGKILL);
}

/* The first signal stops measuring (the run then stops its servers and prints
 * what it has); the second kills the servers and exits at once. */
static void on_signal(int sig)
{
    (void)sig;
    if (g_signals++ == 0) {
        g_stop = 1;
        return;
    }
    kill_children();
    _exit(130);
}

/* A free TCP port on 127.0.0.1 (bound and released: a small race, retried by
 * the callers). */
static int free_port(void)
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

static int tcp_connects(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Whether something listens on TCP `port` (from /proc/net/tcp{,6}, without
 * connecting: a connection would be iperf3 -1's one and only client). */
static int tcp_listening(int port)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char line[512];
        if (!fp)
            continue;
        while (fgets(line, sizeof line, fp)) {
            unsigned lport, st;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2 &&
                (int)lport == port && st == 0x0A) {
                fclose(fp);
                return 1;
            }
        }
        fclose(fp);
    }
    return 0;
}

/* Established TCP connections whose remote port is one of backend b's shards'
 * (from /proc/net/tcp{,6}): how many connections the clients really use. */
static int tcp_conns_to_shards(const backend *bk)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int count = 0;
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char line[512];
        if (!fp)
            continue;
        while (fgets(line, sizeof line, fp)) {
            unsigned rport, st;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%*x %*[0-9A-Fa-f]:%x %x", &rport, &st) != 2 ||
                st != 0x01)
                continue;
            for (int i = 0; i < bk->nports; i++)
                if ((int)rport == bk->ports[i])
                    count++;
        }
        fclose(fp);
    }
    return count;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits up to `secs` for pid to exit; its wait status, or -1 when it did not. */
static int wait_exit(pid_t pid, double secs)
{
    double end = now_s() + secs;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0)
            return -1;
        if (now_s() > end)
            return -1;
        sleep_s(0.01);
    }
}

static void print_log_tail(const char *path)
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

/* Starts server idx of backend bk on a free loopback port and waits until it
 * accepts connections. 0, or -1 with the reason in bk->why_down (the server's
 * log tail printed). */
static int server_start(const bench_opts *o, backend *bk, unsigned idx)
{
    server *s = &bk->servers[idx];
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = free_port();
        if (s->port <= 0)
            continue;
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        snprintf(s->log_path, sizeof s->log_path, "/tmp/rpc_bench.%d.%s.server%u.log",
                 (int)getpid(), bk->name, idx);
        char threads[16], sidx[16], scount[16];
        snprintf(threads, sizeof threads, "%u", o->server_threads);
        snprintf(sidx, sizeof sidx, "%u", idx);
        snprintf(scount, sizeof scount, "%u", o->servers);
        char *argv[16 + MAX_SERVER_ARGS];
        int ac = 0;
        argv[ac++] = (char *)o->server_bin;
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
        argv[ac++] = (char *)bk->name;
        for (int i = 0; i < o->n_server_args; i++)
            argv[ac++] = o->server_args[i];
        argv[ac] = NULL;
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
            snprintf(bk->why_down, sizeof bk->why_down, "fork: %s", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            /* its own process group: a signal to ours (timeout(1), ^C) is for
             * this program, which then stops the servers in order; if this
             * program dies, the kernel kills them */
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(1);   /* this program died before the line above */
            int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execv(o->server_bin, argv);
            fprintf(stderr, "rpc_bench: cannot run %s: %s\n", o->server_bin, strerror(errno));
            _exit(127);
        }
        s->pid = pid;
        double end = now_s() + 30.0;   /* a GPU server creates its CUDA context first */
        while (now_s() < end) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                s->pid = 0;
                snprintf(bk->why_down, sizeof bk->why_down,
                         "%s server %u (%s) exited at start (%s %d; its log is printed)", bk->name,
                         idx, s->addr, WIFEXITED(st) ? "exit" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                fprintf(stderr, "rpc_bench: %s\n", bk->why_down);
                print_log_tail(s->log_path);
                /* exit 127: no binary; any other exit is the server refusing
                 * (no GPU for --backend gpu, say): trying another port is no
                 * use unless the port was taken, which its log would say */
                if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
                    FILE *lf = fopen(s->log_path, "r");
                    char line[512];
                    int port_taken = 0;
                    while (lf && fgets(line, sizeof line, lf))
                        port_taken |= strstr(line, "cannot listen") != NULL ||
                                      strstr(line, "in use") != NULL;
                    if (lf)
                        fclose(lf);
                    if (!port_taken)
                        return -1;
                }
                break;   /* perhaps the port was taken: another one */
            }
            if (tcp_connects(s->port))
                return 0;
            sleep_s(0.02);
        }
        if (s->pid > 0) {
            snprintf(bk->why_down, sizeof bk->why_down,
                     "%s server %u (%s) did not listen within 30 s", bk->name, idx, s->addr);
            fprintf(stderr, "rpc_bench: %s\n", bk->why_down);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
            print_log_tail(s->log_path);
            return -1;
        }
    }
    return -1;
}

/* Whether every server of bk still runs; a dead one is reaped, reported with
 * its log, and takes the backend down. */
static int backend_alive(backend *bk)
{
    int alive = 1;
    for (unsigned i = 0; i < bk->nservers; i++) {
        server *s = &bk->servers[i];
        int st;
        if (s->pid <= 0 || waitpid(s->pid, &st, WNOHANG) != s->pid)
            continue;
        s->pid = 0;
        alive = 0;
        bk->server_failed = 1;
        snprintf(bk->why_down, sizeof bk->why_down, "%s server %u (%s) died (%s %d)", bk->name,
                 i, s->addr, WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        fprintf(stderr, "rpc_bench: %s; its log:\n", bk->why_down);
        print_log_tail(s->log_path);
    }
    if (!alive)
        bk->up = 0;
    return alive;
}

/* SIGTERM, then SIGKILL after 20 s; prints how it ended. Returns 0 on exit 0. */
static int server_stop(server *s, const char *bk, unsigned idx)
{
    if (s->pid <= 0)
        return 0;
    kill(s->pid, SIGTERM);
    int st = wait_exit(s->pid, 20.0);
    int rc = 0;
    if (st == -1) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
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
        print_log_tail(s->log_path);
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

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* CPU seconds of backend b's servers (b = -1: of every backend but `except`). */
static double servers_cpu_s(int b, int except)
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

static int is_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* `prog` looked up in $PATH, into out; 1 if found. */
static int path_lookup(const char *prog, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(out, cap, "%.*s/%s", (int)len, path, prog);
        if (is_executable(out))
            return 1;
        path += len + (colon ? 1 : 0);
    }
    return 0;
}

/* `prog` in this program's own folder (a packed copy travels beside it), into
 * out; 1 if found. */
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
    return w > 0 && (size_t)w < cap && is_executable(out);
}

/* Runs argv with stdout into a malloc'ed string (stderr to /dev/null); its wait
 * status, or -1. */
static int run_capture(char *const argv[], char **out, double timeout_s)
{
    int p[2];
    *out = NULL;
    if (pipe(p) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        int dn = open("/dev/null", O_WRONLY);
        if (dn >= 0)
            dup2(dn, 2);
        close(p[0]);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    double end = now_s() + timeout_s;
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        ssize_t r = read(p[0], buf + len, cap - len - 1);
        if (r > 0) {
            len += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno != EAGAIN && errno != EINTR)
            break;
        if (now_s() > end) {
            kill(pid, SIGKILL);
            break;
        }
        sleep_s(0.01);
    }
    close(p[0]);
    buf[len] = '\0';
    *out = buf;
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
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

static char g_iperf_version[64];

/* Loopback TCP bytes/s with `streams` parallel streams, or -1 (why in `why`). */
static double iperf_measure(const char *bin, int streams, double secs, char *why, size_t cap)
{
    int port = free_port();
    char sport[16], st[32], sp[16];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(st, sizeof st, "%g", secs);
    snprintf(sp, sizeof sp, "%d", streams);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, cap, "fork: %s", strerror(errno));
        return -1.0;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int dn = open("/dev/null", O_WRONLY);
        if (dn >= 0) {
            dup2(dn, 1);
            dup2(dn, 2);
        }
        execl(bin, bin, "-s", "-1", "-p", sport, (char *)NULL);
        _exit(127);
    }
    g_iperf_pid = pid;
    double end = now_s() + 10.0;
    while (!tcp_listening(port) && now_s() < end && waitpid(pid, NULL, WNOHANG) == 0)
        sleep_s(0.02);
    char *argv[] = {(char *)bin, "-c", "127.0.0.1", "-p", sport, "-t", st, "-P", sp, "-J", NULL};
    char *out = NULL;
    double bps = -1.0;
    int status = run_capture(argv, &out, secs + 30.0);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, cap, "iperf3 client failed (status %d)", status);
    } else if ((bps = iperf_parse(out)) < 0) {
        snprintf(why, cap, "no end.sum_received.bits_per_second in iperf3's JSON");
    } else if (!g_iperf_version[0]) {
        iperf_version(out, g_iperf_version, sizeof g_iperf_version);
    }
    free(out);
    if (wait_exit(pid, 5.0) == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    g_iperf_pid = 0;
    return bps > 0 ? bps / 8.0 : -1.0;
}

/* The loopback ceiling at the start (when = 0) or the end (1) of the run, with
 * 1 and --iperf-streams streams; the figures used for "% of loopback" are the
 * larger of the two, so that a noisy moment of a shared machine cannot make
 * ember look closer to the ceiling. */
typedef struct ceiling {
    double bps[2][2];            /* [when][1 stream, N streams], bytes/s; -1 unknown */
} ceiling;

static ceiling g_ceiling = {{{-1.0, -1.0}, {-1.0, -1.0}}};

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

/* ---- measuring -------------------------------------------------------------- */

typedef struct cell {
    int op;
    size_t n;
    uint32_t dim;
    const keyset *ks;
    const char *table;
    const float *grads;          /* n × dim */
    double seconds;
} cell;

typedef struct worker {
    const cell *c;
    ember_client *cl;
    unsigned depth;              /* calls kept in flight by this thread */
    size_t next_batch;
    float **out;                 /* [depth] n × dim each */
    pthread_barrier_t *bar;
    /* results of one run */
    double t0, t1;
    uint64_t calls, keys;
    double *lat;                 /* seconds per call */
    size_t nlat, lat_cap;
    int rc;
    ember_error err;
} worker;

static void lat_push(worker *w, double s)
{
    if (w->nlat == w->lat_cap) {
        w->lat_cap = w->lat_cap ? 2 * w->lat_cap : 4096;
        double *p = realloc(w->lat, w->lat_cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "rpc_bench: out of memory\n");
            exit(1);
        }
        w->lat = p;
    }
    w->lat[w->nlat++] = s;
}

static const uint64_t *batch_keys(worker *w)
{
    const keyset *ks = w->c->ks;
    const uint64_t *k = ks->keys + (w->next_batch % ks->nb) * ks->n;
    w->next_batch++;
    return k;
}

static ember_pending *issue_async(worker *w, unsigned slot)
{
    const cell *c = w->c;
    const uint64_t *k = batch_keys(w);
    if (c->op == OP_PULL)
        return ember_pull_async(w->cl, c->table, k, c->n, w->out[slot], c->dim,
                                EMBER_PULL_INSERT, &w->err);
    return ember_push_async(w->cl, c->table, k, c->n, c->grads, c->dim, &w->err);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const cell *c = w->c;
    pthread_barrier_wait(w->bar);
    double t0 = now_s(), stop = t0 + c->seconds;
    w->t0 = t0;
    w->calls = w->keys = 0;
    w->rc = 0;
    if (c->op == OP_PUSHPULL) {
        /* synchronous: one call in flight per thread */
        while (now_s() < stop && !g_stop) {
            const uint64_t *pk = batch_keys(w), *lk = batch_keys(w);
            double ti = now_s();
            int rc = ember_push_pull(w->cl, c->table, pk, c->n, c->grads, lk, c->n, w->out[0],
                                     c->dim, EMBER_PULL_INSERT, &w->err);
            if (rc) {
                w->rc = rc;
                break;
            }
            lat_push(w, now_s() - ti);
            w->calls++;
            w->keys += c->n;
        }
    } else {
        ember_pending *pend[64];
        double tiss[64];
        unsigned head = 0, count = 0, depth = w->depth;
        for (;;) {
            if (!w->rc && !g_stop && now_s() < stop) {
                while (count < depth) {
                    unsigned slot = (head + count) % depth;
                    tiss[slot] = now_s();
                    pend[slot] = issue_async(w, slot);
                    if (!pend[slot]) {
                        w->rc = w->err.code ? w->err.code : EMBER_UNKNOWN;
                        break;
                    }
                    count++;
                }
            }
            if (count == 0)
                break;
            ember_error e;
            int rc = ember_wait(pend[head], &e);
            double t = now_s();
            if (rc) {
                if (!w->rc) {
                    w->rc = rc;
                    w->err = e;
                }
            } else {
                lat_push(w, t - tiss[head]);
                w->calls++;
                w->keys += c->n;
            }
            head = (head + 1) % depth;
            count--;
        }
    }
    w->t1 = now_s();
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats3(double *v, int n, double *mn, double *med, double *mx)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *mn = v[0];
    *mx = v[n - 1];
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Nearest-rank percentile of sorted v[n]. */
static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0.0;
    size_t r = (size_t)ceil(p * (double)n);
    if (r < 1)
        r = 1;
    if (r > n)
        r = n;
    return v[r - 1];
}

static double payload_bytes_per_key(int op, uint32_t dim)
{
    return (op == OP_PUSHPULL ? 2.0 : 1.0) * 4.0 * dim;
}

typedef struct ctx {
    const bench_opts *o;
    ember_client *clients[MAX_THREADS];   /* the measurement's, opened and closed by it */
    double ceiling1, ceilingN;            /* bytes/s, -1 when unknown */
    bench_result *res;
    size_t nres, res_cap;
    int failures;
    double t_start;                       /* when measuring began (for --budget) */
    int budget_hit;
} ctx;

static void measure_ceiling(ctx *x, int when)
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

/* A client of `shards`, or NULL with the reason in err. */
static ember_client *try_open_client(const bench_opts *o, const char *shards, ember_error *err)
{
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = shards;
    co.timeout_ms = o->timeout_ms;
    co.channels_per_shard = o->channels;
    return ember_client_open(&co, err);
}

static ember_client *open_client(const bench_opts *o, const char *shards)
{
    ember_error err;
    ember_client *cl = try_open_client(o, shards, &err);
    if (!cl) {
        /* only bad options get here (connections are made lazily) */
        fprintf(stderr, "rpc_bench: ember_client_open(%s): %s: %s\n", shards,
                ember_code_name(err.code), err.message);
        exit(1);
    }
    return cl;
}

/* "= 41.0% of 1-stream, 30.2% of 8-stream loopback" for pulls, or "". */
static void ceiling_note(const ctx *x, const bench_result *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (r->op != OP_PULL || (x->ceiling1 <= 0 && x->ceilingN <= 0))
        return;
    size_t len = 0;
    len += (size_t)snprintf(buf + len, cap - len, " =");
    if (x->ceiling1 > 0)
        len += (size_t)snprintf(buf + len, cap - len, " %.1f%% of 1-stream%s",
                                100.0 * r->gbps_med * 1e9 / x->ceiling1,
                                x->ceilingN > 0 ? "," : "");
    if (x->ceilingN > 0 && len < cap)
        snprintf(buf + len, cap - len, " %.1f%% of %d-stream", 100.0 * r->gbps_med * 1e9 /
                 x->ceilingN, x->o->iperf_streams);
    if (strlen(buf) + 10 < cap)
        strcat(buf, " loopback");
}

static void print_result(const ctx *x, const bench_result *r)
{
    const char *bk = g_backends[r->backend].name;
    if (r->failed) {
        printf("%-3s %-18s n %6zu dim %3u %-8s %2ux%-2u: FAILED\n", bk, op_label[r->op], r->n,
               r->dim, dist_names[r->dist], r->cc.clients, r->cc.depth);
        fflush(stdout);
        return;
    }
    char ceil_s[96];
    ceiling_note(x, r, ceil_s, sizeof ceil_s);
    printf("%-3s %-18s n %6zu dim %3u %-8s %2u client(s) x %2u in flight: %8.3f M keys/s "
           "[min %.3f max %.3f]  %6.3f GB/s payload%s  p50 %8.1f us  p99 %8.1f us  "
           "%llu calls  cpu: server %3.0f%% client %3.0f%% = %.0f + %.0f ns/key (server "
           "%.3f s/M keys)  tcp conns %d\n",
           bk, op_label[r->op], r->n, r->dim, dist_names[r->dist], r->cc.clients, r->cc.depth,
           r->kps_med / 1e6, r->kps_min / 1e6, r->kps_max / 1e6, r->gbps_med, ceil_s,
           r->p50_us, r->p99_us, (unsigned long long)r->calls, 100.0 * r->srv_cpu,
           100.0 * r->cli_cpu, r->srv_ns, r->cli_ns, r->srv_ns / 1e3, r->conns);
    if (r->idle_cpu > 0.05)
        printf("    note: the other backend's servers, idle, used %.0f%% of a core meanwhile\n",
               100.0 * r->idle_cpu);
    fflush(stdout);
}

/* One phase (warm-up or a timed run) on every thread; keys/s, or -1 on failure. */
static double run_phase(worker *ws, unsigned nthr, pthread_barrier_t *bar, ember_error *err,
                        int *rc_out)
{
    pthread_t tids[MAX_THREADS];
    for (unsigned i = 0; i < nthr; i++) {
        ws[i].bar = bar;
        if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "rpc_bench: cannot start a thread\n");
            exit(1);
        }
    }
    for (unsigned i = 0; i < nthr; i++)
        pthread_join(tids[i], NULL);
    double t0 = HUGE_VAL, t1 = -HUGE_VAL;
    uint64_t keys = 0;
    *rc_out = 0;
    for (unsigned i = 0; i < nthr; i++) {
        if (ws[i].t0 < t0)
            t0 = ws[i].t0;
        if (ws[i].t1 > t1)
            t1 = ws[i].t1;
        keys += ws[i].keys;
        if (ws[i].rc && !*rc_out) {
            *rc_out = ws[i].rc;
            *err = ws[i].err;
        }
    }
    if (*rc_out)
        return -1.0;
    return (double)keys / (t1 - t0);
}

/* One measurement of cell c0 on backend b: warm-up, timed runs, the result
 * printed and recorded. A failure that says the backend cannot serve on (its
 * server died, a call ran into its deadline or found nobody listening, or a
 * third failure) takes the backend down for the rest of the run. */
static void measure(ctx *x, const cell *c0, int dist, conc cc, int b)
{
    const bench_opts *o = x->o;
    backend *bk = &g_backends[b];
    cell c = *c0;
    bench_result r;
    memset(&r, 0, sizeof r);
    r.backend = b;
    r.op = c.op;
    r.dist = dist;
    r.n = c.n;
    r.dim = c.dim;
    r.cc = cc;

    /* threads: async ops have one per client keeping `depth` in flight; push+pull
     * has `depth` threads per client, one call each */
    unsigned per_client = c.op == OP_PUSHPULL ? cc.depth : 1;
    unsigned nthr = cc.clients * per_client;
    /* its own clients, so that the connections it counts are its own */
    for (unsigned i = 0; i < cc.clients; i++)
        x->clients[i] = open_client(o, bk->shards);
    worker *ws = calloc(nthr, sizeof *ws);
    if (!ws)
        exit(1);
    unsigned depth = c.op == OP_PUSHPULL ? 1 : cc.depth;
    for (unsigned i = 0; i < nthr; i++) {
        worker *w = &ws[i];
        w->c = &c;
        w->cl = x->clients[i / per_client];
        w->depth = depth;
        w->next_batch = (size_t)i * c.ks->nb / nthr;
        w->out = xmalloc(depth * sizeof *w->out);
        /* pushes return no rows: no buffers (16 clients x 2 x 65,536 x 128 floats
         * would be 1 GiB to allocate and touch per measurement) */
        int pulls = c.op == OP_PULL || c.op == OP_PUSHPULL;
        for (unsigned d = 0; d < depth; d++) {
            w->out[d] = pulls ? xmalloc(c.n * c.dim * sizeof(float)) : NULL;
            if (pulls)
                memset(w->out[d], 0, c.n * c.dim * sizeof(float));
        }
    }
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, nthr);
    ember_error err;
    memset(&err, 0, sizeof err);
    int rc = 0;
    double kps[64];
    int reps = o->reps > 64 ? 64 : o->reps;

    c.seconds = o->warmup;
    if (o->warmup > 0)
        run_phase(ws, nthr, &bar, &err, &rc);
    for (unsigned i = 0; i < nthr; i++)
        ws[i].nlat = 0;
    r.conns = tcp_conns_to_shards(bk);
    double cpu_s0 = servers_cpu_s(b, -1), cpu_i0 = servers_cpu_s(-1, b);
    double cpu_c0 = self_cpu_s(), wall0 = now_s();
    c.seconds = o->seconds;
    for (int rep = 0; rep < reps && !rc; rep++)
        kps[rep] = run_phase(ws, nthr, &bar, &err, &rc);
    double wall = now_s() - wall0;
    double d_srv = servers_cpu_s(b, -1) - cpu_s0, d_cli = self_cpu_s() - cpu_c0;
    r.srv_cpu = d_srv / wall;
    r.cli_cpu = d_cli / wall;
    r.idle_cpu = (servers_cpu_s(-1, b) - cpu_i0) / wall;
    int interrupted = g_stop && !rc;
    if (rc) {
        r.failed = 1;
        x->failures++;
        bk->failures++;
        fprintf(stderr, "rpc_bench: %s %s n %zu dim %u %s %ux%u: %s: %s\n", bk->name,
                op_label[c.op], c.n, c.dim, dist_names[dist], cc.clients, cc.depth,
                ember_code_name(rc), err.message);
        if (backend_alive(bk) &&
            (rc == EMBER_DEADLINE_EXCEEDED || rc == EMBER_UNAVAILABLE || bk->failures >= 3)) {
            snprintf(bk->why_down, sizeof bk->why_down, "%s after %d failed measurement(s)",
                     ember_code_name(rc), bk->failures);
            bk->up = 0;
        }
        if (!bk->up)
            printf("backend %s is DOWN (%s): its remaining measurements are skipped\n",
                   bk->name, bk->why_down);
    } else if (!interrupted) {
        stats3(kps, reps, &r.kps_min, &r.kps_med, &r.kps_max);
        r.gbps_med = r.kps_med * payload_bytes_per_key(c.op, c.dim) / 1e9;
        size_t nl = 0;
        for (unsigned i = 0; i < nthr; i++)
            nl += ws[i].nlat;
        double *all = xmalloc(nl * sizeof *all);
        size_t k = 0;
        for (unsigned i = 0; i < nthr; i++) {
            memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof *all);
            k += ws[i].nlat;
        }
        qsort(all, nl, sizeof *all, cmp_double);
        r.p50_us = 1e6 * pct(all, nl, 0.50);
        r.p99_us = 1e6 * pct(all, nl, 0.99);
        r.calls = nl;
        free(all);
        double keys = (double)nl * (double)c.n;
        if (keys > 0) {
            r.srv_ns = 1e9 * d_srv / keys;
            r.cli_ns = 1e9 * d_cli / keys;
        }
    }
    pthread_barrier_destroy(&bar);
    for (unsigned i = 0; i < nthr; i++) {
        for (unsigned d = 0; d < depth; d++)
            free(ws[i].out[d]);
        free(ws[i].out);
        free(ws[i].lat);
    }
    free(ws);
    for (unsigned i = 0; i < cc.clients; i++) {
        ember_client_close(x->clients[i]);
        x->clients[i] = NULL;
    }
    if (interrupted) {
        printf("%s %s n %zu dim %u %ux%u: interrupted, not recorded\n", bk->name,
               op_label[c.op], c.n, c.dim, cc.clients, cc.depth);
        return;
    }
    print_result(x, &r);
    if (x->nres == x->res_cap) {
        x->res_cap = x->res_cap ? 2 * x->res_cap : 64;
        x->res = realloc(x->res, x->res_cap * sizeof *x->res);
        if (!x->res)
            exit(1);
    }
    x->res[x->nres++] = r;
}

/* ---- tables ------------------------------------------------------------------ */

static void table_name(char *buf, size_t cap, int tab, uint32_t dim)
{
    snprintf(buf, cap, "rpcb_%s_%u", tab_names[tab], dim);
}

/* The table op reads or updates. */
static int op_table(const bench_opts *o, int op)
{
    switch (op) {
    case OP_PULL: return o->pull_tab;
    case OP_PUSH_SGD: return TAB_SGD;
    case OP_PUSH_ADAM: return TAB_ADAM;
    default: return TAB_ADAGRAD;   /* push-adagrad, push+pull */
    }
}

static void tables_needed(const bench_opts *o, int need[TAB_COUNT])
{
    memset(need, 0, TAB_COUNT * sizeof *need);
    for (int op = 0; op < OP_COUNT; op++)
        if (o->ops[op])
            need[op_table(o, op)] = 1;
}

/* Takes backend bk down: a table call failed on it. */
static void backend_down(backend *bk, const char *what, int rc, const ember_error *err)
{
    snprintf(bk->why_down, sizeof bk->why_down, "%s: %s: %.160s", what, ember_code_name(rc),
             err->message);
    fprintf(stderr, "rpc_bench: %s: %s\n", bk->name, bk->why_down);
    bk->up = 0;
    bk->server_failed = 1;
    backend_alive(bk);
    printf("backend %s is DOWN (%s): its remaining measurements are skipped\n", bk->name,
           bk->why_down);
}

/* Creates the tables the chosen ops use, at `dim`, on backend bk's servers and
 * fills each with every key of the universe. 0, or -1 with bk taken down. */
static int create_tables(ctx *x, backend *bk, uint32_t dim)
{
    const bench_opts *o = x->o;
    ember_error err;
    ember_client *cl = try_open_client(o, bk->shards, &err);
    if (!cl) {
        backend_down(bk, "client open", err.code, &err);
        return -1;
    }
    unsigned nshards = ember_client_shard_count(cl);
    int need[TAB_COUNT];
    tables_needed(o, need);
    int rc = 0;
    for (int tab = 0; tab < TAB_COUNT && !rc && !g_stop; tab++) {
        if (!need[tab])
            continue;
        char name[64];
        table_name(name, sizeof name, tab, dim);
        ember_table_spec s;
        ember_table_spec_init(&s);
        s.dim = dim;
        s.capacity_per_shard = o->capacity ? o->capacity : 2 * o->universe / nshards + 1024;
        s.seed = o->seed;
        s.optimizer.kind = tab == TAB_SGD ? EMBER_OPTIM_SGD
                           : tab == TAB_ADAM ? EMBER_OPTIM_ADAM : EMBER_OPTIM_ADAGRAD;
        s.optimizer.lr = tab == TAB_ADAM ? 0.001f : 0.01f;
        /* the server's default: the backend it was started with */
        s.backend = NULL;
        if ((rc = ember_drop_table(cl, name, 1, &err)) != 0) {
            backend_down(bk, "drop table", rc, &err);
            break;
        }
        if ((rc = ember_create_table(cl, name, &s, 0, &err)) != 0) {
            backend_down(bk, "create table", rc, &err);
            break;
        }
        /* pre-fill: every key of the universe, by inserting pulls, PREFILL_DEPTH in
         * flight so that every server thread inserts (one at a time, 2 M keys take
         * tens of seconds on a CPU table: new rows are initialised and touched) */
        enum { PREFILL_DEPTH = 8 };
        double t0 = now_s();
        size_t chunk = 65536;
        uint64_t *keys = xmalloc(PREFILL_DEPTH * chunk * sizeof *keys);
        float *out = xmalloc(PREFILL_DEPTH * chunk * dim * sizeof *out);
        ember_pending *pend[PREFILL_DEPTH];
        unsigned head = 0, count = 0;
        uint64_t next = 0;
        while (next < o->universe || count) {
            if (!rc && next < o->universe && count < PREFILL_DEPTH) {
                unsigned slot = (head + count) % PREFILL_DEPTH;
                size_t m = o->universe - next < chunk ? (size_t)(o->universe - next) : chunk;
                uint64_t *k = keys + slot * chunk;
                for (size_t i = 0; i < m; i++)
                    k[i] = bench_key(next + i);
                pend[slot] = ember_pull_async(cl, name, k, m, out + slot * chunk * dim, dim,
                                              EMBER_PULL_INSERT, &err);
                if (!pend[slot]) {
                    rc = err.code ? err.code : EMBER_UNKNOWN;
                    backend_down(bk, "pre-fill pull", rc, &err);
                    continue;
                }
                next += m;
                count++;
                continue;
            }
            if (!count)
                break;   /* failed: nothing left in flight */
            ember_error e;
            int prc = ember_wait(pend[head], &e);
            if (prc && !rc) {
                rc = prc;
                backend_down(bk, "pre-fill pull", rc, &e);
            }
            head = (head + 1) % PREFILL_DEPTH;
            count--;
        }
        free(keys);
        free(out);
        if (rc)
            break;
        ember_table_info info;
        if ((rc = ember_describe_table(cl, name, &info, &err)) != 0) {
            backend_down(bk, "describe table", rc, &err);
            break;
        }
        printf("%s table %s: dim %u, %s, capacity %llu over %u shard(s), filled with %llu keys "
               "in %.2f s: size %llu, load factor %.3f, evictions %llu\n",
               bk->name, name, dim, tab_labels[tab], (unsigned long long)info.capacity, nshards,
               (unsigned long long)o->universe, now_s() - t0, (unsigned long long)info.size,
               info.load_factor, (unsigned long long)info.evictions);
        fflush(stdout);
    }
    ember_client_close(cl);
    return rc ? -1 : 0;
}

static void drop_tables(ctx *x, backend *bk, uint32_t dim)
{
    ember_error err;
    ember_client *cl = try_open_client(x->o, bk->shards, &err);
    if (!cl)
        return;
    int need[TAB_COUNT];
    tables_needed(x->o, need);
    for (int tab = 0; tab < TAB_COUNT; tab++) {
        if (!need[tab])
            continue;
        char name[64];
        table_name(name, sizeof name, tab, dim);
        int rc = ember_drop_table(cl, name, 1, &err);
        if (rc)
            fprintf(stderr, "rpc_bench: %s: drop %s: %s: %s\n", bk->name, name,
                    ember_code_name(rc), err.message);
    }
    ember_client_close(cl);
}

/* ---- summary, CSV --------------------------------------------------------------- */

static const bench_result *find_res(const ctx *x, int b, int op, size_t n, uint32_t dim,
                                    int dist, unsigned clients, unsigned max_depth)
{
    const bench_result *best = NULL;
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        if (r->failed || r->backend != b || r->op != op || r->n != n || r->dim != dim ||
            r->dist != dist || r->cc.clients != clients || r->cc.depth > max_depth)
            continue;
        if (!best || r->kps_med > best->kps_med)
            best = r;
    }
    return best;
}

/* Backend b's result of the same shape as r (any backend), or NULL. */
static const bench_result *same_shape(const ctx *x, int b, const bench_result *r)
{
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *q = &x->res[i];
        if (!q->failed && q->backend == b && q->op == r->op && q->n == r->n &&
            q->dim == r->dim && q->dist == r->dist && q->cc.clients == r->cc.clients &&
            q->cc.depth == r->cc.depth)
            return q;
    }
    return NULL;
}

/* Whether an earlier result than res[i] has res[i]'s shape (to list each once). */
static int shape_seen_before(const ctx *x, size_t i)
{
    const bench_result *r = &x->res[i];
    for (size_t k = 0; k < i; k++) {
        const bench_result *q = &x->res[k];
        if (q->op == r->op && q->n == r->n && q->dim == r->dim && q->dist == r->dist &&
            q->cc.clients == r->cc.clients && q->cc.depth == r->cc.depth)
            return 1;
    }
    return 0;
}

static int backend_of_kind(int kind)
{
    for (int b = 0; b < g_nbackends; b++)
        if (g_backends[b].kind == kind)
            return b;
    return -1;
}

static double pct_of(double gbps, double ceiling)
{
    return ceiling > 0 ? 100.0 * gbps * 1e9 / ceiling : NAN;
}

/* Every shape, each backend's keys/s and server CPU per key side by side, and
 * with two backends the ratio second/first (gpu/cpu). */
static void print_side_by_side(const ctx *x)
{
    const bench_opts *o = x->o;
    int nb = g_nbackends;
    printf("\nper backend: M keys/s (median), server CPU seconds per million keys, pulls' "
           "payload as %% of the %d-stream loopback ceiling\n", o->iperf_streams);
    printf("%-13s %6s %4s %-8s %5s |", "op", "keys", "dim", "dist", "CxD");
    for (int b = 0; b < nb; b++)
        printf(" %7s Mk/s", g_backends[b].name);
    if (nb == 2)
        printf(" %5s/%-3s", g_backends[1].name, g_backends[0].name);
    printf(" |");
    for (int b = 0; b < nb; b++)
        printf(" %4s s/Mk", g_backends[b].name);
    if (nb == 2)
        printf(" %5s/%-3s", g_backends[1].name, g_backends[0].name);
    printf(" |");
    for (int b = 0; b < nb; b++)
        printf(" %4s %%ceil", g_backends[b].name);
    printf("\n");
    for (size_t i = 0; i < x->nres; i++) {
        if (shape_seen_before(x, i))
            continue;
        const bench_result *r = &x->res[i];
        const bench_result *pr[MAX_BACKENDS];
        char cd[16];
        snprintf(cd, sizeof cd, "%ux%u", r->cc.clients, r->cc.depth);
        printf("%-13s %6zu %4u %-8s %5s |", op_label[r->op], r->n, r->dim, dist_names[r->dist],
               cd);
        for (int b = 0; b < nb; b++) {
            pr[b] = same_shape(x, b, r);
            if (pr[b])
                printf(" %12.3f", pr[b]->kps_med / 1e6);
            else
                printf(" %12s", "-");
        }
        if (nb == 2) {
            if (pr[0] && pr[1] && pr[0]->kps_med > 0)
                printf(" %9.2f", pr[1]->kps_med / pr[0]->kps_med);
            else
                printf(" %9s", "-");
        }
        printf(" |");
        for (int b = 0; b < nb; b++) {
            if (pr[b])
                printf(" %9.3f", pr[b]->srv_ns / 1e3);
            else
                printf(" %9s", "-");
        }
        if (nb == 2) {
            if (pr[0] && pr[1] && pr[0]->srv_ns > 0)
                printf(" %9.2f", pr[1]->srv_ns / pr[0]->srv_ns);
            else
                printf(" %9s", "-");
        }
        printf(" |");
        for (int b = 0; b < nb; b++) {
            if (pr[b] && r->op == OP_PULL && x->ceilingN > 0)
                printf(" %9.1f", pct_of(pr[b]->gbps_med, x->ceilingN));
            else
                printf(" %9s", "-");
        }
        printf("\n");
    }
}

static const char *verdict(int total, int measured, int missed)
{
    if (!measured)
        return "NOT MEASURED";
    if (missed)
        return "MISSED";
    return measured == total ? "met" : "met where measured (INCOMPLETE)";
}

/* Issue 5's three targets, for the cpu and gpu backends of this run. */
static void print_issue5_targets(const ctx *x)
{
    const bench_opts *o = x->o;
    int bc = backend_of_kind(BK_CPU), bg = backend_of_kind(BK_GPU);
    printf("\ntargets (issue 5, GPU shard servers), this run:\n");
    if (bc < 0 || bg < 0)
        printf("  both backends are needed (--backends cpu,gpu); this run has %s%s%s\n",
               bc < 0 && bg < 0 ? "neither" : bc < 0 ? "no cpu backend" : "no gpu backend",
               bg < 0 && g_gpu_why[0] ? ": gpu: " : "", bg < 0 ? g_gpu_why : "");
    for (int b = 0; b < g_nbackends; b++)
        if (!g_backends[b].up && g_backends[b].why_down[0])
            printf("  note: backend %s went down: %s\n", g_backends[b].name,
                   g_backends[b].why_down);

    /* (1) gpu keys/s >= cpu keys/s at every shape */
    int total = 0, measured = 0, missed = 0;
    double worst = HUGE_VAL;
    const bench_result *worst_r = NULL;
    for (size_t i = 0; bc >= 0 && bg >= 0 && i < x->nres; i++) {
        const bench_result *c = &x->res[i];
        if (c->backend != bc || c->failed)
            continue;
        total++;
        const bench_result *g = same_shape(x, bg, c);
        if (!g)
            continue;
        measured++;
        double ratio = c->kps_med > 0 ? g->kps_med / c->kps_med : HUGE_VAL;
        if (ratio < 1.0)
            missed++;
        if (ratio < worst) {
            worst = ratio;
            worst_r = c;
        }
    }
    printf("  (1) gpu keys/s >= cpu keys/s at every shape: %d of %d shape(s) compared, %d below",
           measured, total, missed);
    if (worst_r)
        printf("; lowest gpu/cpu %.2f (%s %zu x %u %ux%u)", worst, op_label[worst_r->op],
               worst_r->n, worst_r->dim, worst_r->cc.clients, worst_r->cc.depth);
    printf(": %s\n", verdict(total, measured, missed));

    /* (2) gpu server CPU per key <= 1/3 of cpu's, Adam pushes at dim 128 */
    total = measured = missed = 0;
    worst = -HUGE_VAL;
    worst_r = NULL;
    for (size_t i = 0; bc >= 0 && bg >= 0 && i < x->nres; i++) {
        const bench_result *c = &x->res[i];
        if (c->backend != bc || c->failed || c->op != OP_PUSH_ADAM || c->dim != 128)
            continue;
        total++;
        const bench_result *g = same_shape(x, bg, c);
        if (!g || c->srv_ns <= 0)
            continue;
        measured++;
        double ratio = g->srv_ns / c->srv_ns;
        if (ratio > 1.0 / 3.0)
            missed++;
        if (ratio > worst) {
            worst = ratio;
            worst_r = c;
        }
    }
    printf("  (2) gpu server CPU per key <= 1/3 of cpu's for Adam pushes at dim 128: %d of %d "
           "shape(s) compared, %d over",
           measured, total, missed);
    if (worst_r) {
        const bench_result *g = same_shape(x, bg, worst_r);
        printf("; highest gpu/cpu %.2f (%s %zu x %u %ux%u: %.3f vs %.3f s/M keys)", worst,
               op_label[worst_r->op], worst_r->n, worst_r->dim, worst_r->cc.clients,
               worst_r->cc.depth, g->srv_ns / 1e3, worst_r->srv_ns / 1e3);
    }
    printf(": %s\n", verdict(total, measured, missed));

    /* (3) 16 clients, pulls 4,096 x 64 >= 80% of the 8-stream ceiling */
    printf("  (3) 16 clients, pull 4,096 x 64 >= 80%% of the %d-stream loopback ceiling", 
           o->iperf_streams);
    if (x->ceilingN > 0)
        printf(" (%.3f GB/s)", x->ceilingN / 1e9);
    printf(":");
    for (int b = 0; b < g_nbackends; b++) {
        const bench_result *r = find_res(x, b, OP_PULL, 4096, 64, DIST_UNIFORM, 16, 64);
        if (r && x->ceilingN > 0)
            printf(" %s %.3f GB/s = %.1f%% (16x%u);", g_backends[b].name, r->gbps_med,
                   pct_of(r->gbps_med, x->ceilingN), r->cc.depth);
        else if (r)
            printf(" %s %.3f GB/s (16x%u);", g_backends[b].name, r->gbps_med, r->cc.depth);
        else
            printf(" %s not measured;", g_backends[b].name);
    }
    const bench_result *g3 = bg >= 0 ? find_res(x, bg, OP_PULL, 4096, 64, DIST_UNIFORM, 16, 64)
                                     : NULL;
    if (!g3)
        printf(" gpu: NOT MEASURED\n");
    else if (x->ceilingN <= 0)
        printf(" NOT MEASURED (no loopback ceiling in this run)\n");
    else
        printf(" gpu: %s%s\n", pct_of(g3->gbps_med, x->ceilingN) >= 80.0 ? "met" : "MISSED",
               o->iperf_streams != 8 ? " (but the issue's ceiling is 8 streams)" : "");
    printf("  reference (docs/BENCHMARKS.md, lent H200, 16 cores): loopback 4.6 GB/s with 1 "
           "stream, 6.4 GB/s with 8; plain gRPC, no table, 16 clients: 6.2 GB/s\n");
}

/* Issue 3's targets (one client), per backend. */
static void print_issue3_targets(const ctx *x)
{
    printf("\ntargets (docs/BENCHMARKS.md, issue 3), one client, up to 4 calls in flight, "
           "uniform distinct keys:\n");
    for (int bi = 0; bi < g_nbackends; bi++) {
        const char *bn = g_backends[bi].name;
        const bench_result *p = find_res(x, bi, OP_PULL, 4096, 64, DIST_UNIFORM, 1, 4);
        const bench_result *u = find_res(x, bi, OP_PUSH_ADAGRAD, 4096, 64, DIST_UNIFORM, 1, 4);
        const bench_result *b = find_res(x, bi, OP_PULL, 65536, 64, DIST_UNIFORM, 1, 4);
        if (p)
            printf("  %-3s pull 4,096 x 64:          %.2f M keys/s (1x%u)  target >= 6 M: %s\n",
                   bn, p->kps_med / 1e6, p->cc.depth, p->kps_med >= 6e6 ? "met" : "NOT met");
        else
            printf("  %-3s pull 4,096 x 64:          not measured in this run\n", bn);
        if (u)
            printf("  %-3s push(adagrad) 4,096 x 64: %.2f M keys/s (1x%u)  target >= 5 M: %s\n",
                   bn, u->kps_med / 1e6, u->cc.depth, u->kps_med >= 5e6 ? "met" : "NOT met");
        else
            printf("  %-3s push(adagrad) 4,096 x 64: not measured in this run\n", bn);
        if (b && x->ceiling1 > 0) {
            double f = b->gbps_med * 1e9 / x->ceiling1;
            printf("  %-3s pull 65,536 x 64:         %.3f GB/s = %.1f%% of the 1-stream "
                   "loopback ceiling (1x%u)  target >= 60%%: %s\n",
                   bn, b->gbps_med, 100.0 * f, b->cc.depth, f >= 0.6 ? "met" : "NOT met");
        } else if (b) {
            printf("  %-3s pull 65,536 x 64:         %.3f GB/s (1x%u); no loopback ceiling to "
                   "compare\n", bn, b->gbps_med, b->cc.depth);
        } else {
            printf("  %-3s pull 65,536 x 64:         not measured in this run\n", bn);
        }
    }
    printf("  reference (same kind of machine): ps-lite 5.7 M pull / 4.5 M push; "
           "iperf3 1 stream ~2.73 GB/s\n");
}

static void print_summary(const ctx *x)
{
    const bench_opts *o = x->o;
    printf("\nsummary: median of %d run(s) of %.2f s after %.2f s warm-up; keys/s in M (10^6); "
           "payload = value bytes, GB = 10^9 B; latency per call; cpu = cores busy (100%% = one), "
           "srv s/Mk = the servers' CPU seconds per million keys\n",
           o->reps, o->seconds, o->warmup);
    if (x->ceiling1 > 0 || x->ceilingN > 0)
        printf("TCP loopback ceiling (iperf3%s%s, this run; start / end, the larger is used): "
               "1 stream %.2f / %.2f GB/s, %d streams %.2f / %.2f GB/s\n",
               g_iperf_version[0] ? ", " : "", g_iperf_version, g_ceiling.bps[0][0] / 1e9,
               g_ceiling.bps[1][0] / 1e9, o->iperf_streams, g_ceiling.bps[0][1] / 1e9,
               g_ceiling.bps[1][1] / 1e9);
    else
        printf("TCP loopback ceiling: NOT MEASURED in this run\n");
    for (int b = 0; b < g_nbackends; b++)
        if (!g_backends[b].up && g_backends[b].why_down[0])
            printf("backend %s: DOWN or skipped: %s\n", g_backends[b].name,
                   g_backends[b].why_down);
    if (x->budget_hit)
        printf("budget: measuring stopped after --budget %.0f s; later measurements were "
               "skipped\n", o->budget_s);

    char ceil_n[16];
    snprintf(ceil_n, sizeof ceil_n, "%%ceil%d", o->iperf_streams);
    printf("\n%-5s %-18s %6s %4s %-8s %5s %10s %19s %8s %7s %7s %10s %10s %5s %5s %8s %8s %8s "
           "%5s\n",
           "back", "op", "keys", "dim", "dist", "CxD", "M keys/s", "[min - max]", "GB/s",
           "%ceil1", ceil_n, "p50 us", "p99 us", "srv%", "cli%", "srv ns/k", "cli ns/k",
           "srv s/Mk", "conns");
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        char cd[16];
        snprintf(cd, sizeof cd, "%ux%u", r->cc.clients, r->cc.depth);
        if (r->failed) {
            printf("%-5s %-18s %6zu %4u %-8s %5s %10s\n", g_backends[r->backend].name,
                   op_label[r->op], r->n, r->dim, dist_names[r->dist], cd, "FAILED");
            continue;
        }
        char rng[48], ce1[16] = "-", ceN[16] = "-";
        snprintf(rng, sizeof rng, "[%.3f - %.3f]", r->kps_min / 1e6, r->kps_max / 1e6);
        if (x->ceiling1 > 0 && r->op == OP_PULL)
            snprintf(ce1, sizeof ce1, "%.1f", pct_of(r->gbps_med, x->ceiling1));
        if (x->ceilingN > 0 && r->op == OP_PULL)
            snprintf(ceN, sizeof ceN, "%.1f", pct_of(r->gbps_med, x->ceilingN));
        printf("%-5s %-18s %6zu %4u %-8s %5s %10.3f %19s %8.3f %7s %7s %10.1f %10.1f %5.0f "
               "%5.0f %8.0f %8.0f %8.3f %5d\n",
               g_backends[r->backend].name, op_label[r->op], r->n, r->dim, dist_names[r->dist],
               cd, r->kps_med / 1e6, rng, r->gbps_med, ce1, ceN, r->p50_us, r->p99_us,
               100.0 * r->srv_cpu, 100.0 * r->cli_cpu, r->srv_ns, r->cli_ns, r->srv_ns / 1e3,
               r->conns);
    }
    if (x->nres && (g_nbackends > 1 || o->issue5))
        print_side_by_side(x);
    if (o->issue5 || (backend_of_kind(BK_CPU) >= 0 && backend_of_kind(BK_GPU) >= 0))
        print_issue5_targets(x);
    if (!o->issue5)
        print_issue3_targets(x);
}

static void write_csv(const ctx *x)
{
    const bench_opts *o = x->o;
    FILE *fp = fopen(o->csv, "w");
    if (!fp) {
        fprintf(stderr, "rpc_bench: cannot write %s: %s\n", o->csv, strerror(errno));
        return;
    }
    fprintf(fp, "backend,op,keys,dim,dist,clients,in_flight,channels,servers,server_threads,"
                "reps,seconds,mkeys_s_min,mkeys_s_median,mkeys_s_max,payload_gb_s,"
                "pct_loopback_1stream,pct_loopback_nstream,p50_us,p99_us,calls,server_cpu,"
                "client_cpu,server_ns_per_key,client_ns_per_key,server_cpu_s_per_mkey,"
                "loopback_1stream_gb_s,loopback_nstream_gb_s,loopback_streams,tcp_conns,"
                "failed\n");
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        int pull = r->op == OP_PULL;
        fprintf(fp, "%s,%s,%zu,%u,%s,%u,%u,%u,%u,%u,%d,%g,%.4f,%.4f,%.4f,%.4f,%.2f,%.2f,%.1f,"
                    "%.1f,%llu,%.3f,%.3f,%.1f,%.1f,%.4f,%.4f,%.4f,%d,%d,%d\n",
                g_backends[r->backend].name, op_cli[r->op], r->n, r->dim, dist_names[r->dist],
                r->cc.clients, r->cc.depth, o->channels, o->shards ? 0 : o->servers,
                o->shards ? 0 : o->server_threads, o->reps, o->seconds, r->kps_min / 1e6,
                r->kps_med / 1e6, r->kps_max / 1e6, r->gbps_med,
                pull ? pct_of(r->gbps_med, x->ceiling1) : NAN,
                pull ? pct_of(r->gbps_med, x->ceilingN) : NAN, r->p50_us, r->p99_us,
                (unsigned long long)r->calls, r->srv_cpu, r->cli_cpu, r->srv_ns, r->cli_ns,
                r->srv_ns / 1e3, x->ceiling1 > 0 ? x->ceiling1 / 1e9 : NAN,
                x->ceilingN > 0 ? x->ceilingN / 1e9 : NAN, o->iperf_streams, r->conns,
                r->failed);
    }
    fclose(fp);
    printf("csv: %s\n", o->csv);
}

/* ---- options ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rpc_bench [options]\n"
            "Pull, push and push+pull through libember against ember-server on loopback, on\n"
            "the cpu and gpu table backends side by side, next to the TCP loopback ceiling\n"
            "(iperf3). See the comment atop rpc_bench.c.\n\n"
            "  --issue5             issue 5's matrix and targets (GPU shard servers); other\n"
            "                       options given beside it win\n"
            "  --quick              short run (with --issue5: every shape, briefly)\n"
            "  --backends LIST      cpu,gpu: a set of servers per backend, the same\n"
            "                       measurements on each (default cpu, and gpu too where a\n"
            "                       GPU is visible%s)\n"
            "  --server PATH        ember-server binary (default $EMBER_SERVER_BIN, else\n"
            "                       %s, else beside this program, else $PATH)\n"
            "  --server-args 'A B'  more flags for every started server (space-separated)\n"
            "  --shards H:P,...     use running servers instead of starting any\n"
            "  --servers N          servers to start per backend (default 1)\n"
            "  --threads N          --threads of each started server (default 2; --issue5:\n"
            "                       half the online cores, at least 2)\n"
            "  --channels N         connections per shard per client; > 1 gives each client\n"
            "                       its own (default 1: shared; --issue5: 2)\n"
            "  --ops LIST           pull,push-adagrad,push-sgd,push-adam,pushpull (default all\n"
            "                       but push-adam; --issue5: pull,push-adam)\n"
            "  --keys LIST          keys per request (default 4096,65536)\n"
            "  --latency            also 1 key per request\n"
            "  --dims LIST          (default 64,128)\n"
            "  --dists LIST         uniform,zipf,zipf-dup (default uniform,zipf; --issue5: "
            "uniform)\n"
            "  --conc LIST          CxD: C clients, D calls in flight each (default "
            "1x1,1x4,4x1;\n"
            "                       --issue5: 1x2,4x2,16x2)\n"
            "  --seconds S          each timed run (default 2; --issue5: 1)\n"
            "  --warmup S           before each measurement (default 0.5)\n"
            "  --reps N             timed runs per measurement (default 3; --issue5: 2)\n"
            "  --universe N         keys in the tables (default 1048576; --issue5: 2097152)\n"
            "  --capacity N         table capacity per shard (default 2 x universe / shards)\n"
            "  --zipf S             Zipf exponent (default 1.05)\n"
            "  --seed N             (default 42)\n"
            "  --timeout-ms N       deadline of each call (default 60000; --issue5: 20000)\n"
            "  --budget S           skip measurements that would start after S s of measuring\n"
            "                       (default none; --issue5: 210, with --quick 90)\n"
            "  --iperf PATH         iperf3 binary (default $EMBER_IPERF3_BIN, else beside this\n"
            "                       program, else $PATH)\n"
            "  --iperf-seconds S    length of each iperf3 run (default 3; --issue5: 2)\n"
            "  --iperf-streams N    streams of the multi-stream ceiling (default 4; --issue5: 8)\n"
            "  --no-iperf           skip the loopback ceiling\n"
            "  --csv FILE           one row per measurement\n"
            "  --help\n",
#ifdef EMBER_BENCH_GPU
            "",
#else
            "; this build has no CUDA, so gpu is skipped",
#endif
            EMBER_SERVER_BIN);
}

static int parse_list(const char *s, const char *const *names, int count, int *flags,
                      const char *what)
{
    memset(flags, 0, (size_t)count * sizeof *flags);
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int i;
        for (i = 0; i < count; i++)
            if (!strcmp(t, names[i]))
                break;
        if (i == count) {
            fprintf(stderr, "rpc_bench: unknown %s '%s'\n", what, t);
            free(dup);
            return -1;
        }
        flags[i] = 1;
    }
    free(dup);
    return 0;
}

static int parse_sizes(const char *s, size_t *out, int *n)
{
    char *dup = strdup(s), *save = NULL;
    *n = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long long v = strtoull(t, &end, 10);
        if (*end || v == 0 || *n == MAX_LIST) {
            free(dup);
            return -1;
        }
        out[(*n)++] = (size_t)v;
    }
    free(dup);
    return *n ? 0 : -1;
}

static int parse_concs(const char *s, conc *out, int *n)
{
    char *dup = strdup(s), *save = NULL;
    *n = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned c, d;
        char tail;
        if (sscanf(t, "%ux%u%c", &c, &d, &tail) != 2 || !c || !d || d > 64 || c > 64 ||
            c * d > MAX_THREADS || *n == MAX_LIST) {
            free(dup);
            return -1;
        }
        out[*n].clients = c;
        out[*n].depth = d;
        (*n)++;
    }
    free(dup);
    return *n ? 0 : -1;
}

static void parse_opts(bench_opts *o, int argc, char **argv)
{
    enum {
        O_SERVER = 256, O_SHARDS, O_SERVERS, O_THREADS, O_CHANNELS, O_OPS, O_KEYS, O_LATENCY,
        O_DIMS, O_DISTS, O_CONC, O_SECONDS, O_WARMUP, O_REPS, O_UNIVERSE, O_CAPACITY, O_ZIPF,
        O_SEED, O_TIMEOUT, O_IPERF_S, O_NO_IPERF, O_CSV, O_QUICK, O_HELP, O_BACKENDS,
        O_ISSUE5, O_SERVER_ARGS, O_BUDGET, O_IPERF, O_IPERF_STREAMS
    };
    static const struct option lo[] = {
        {"server", 1, 0, O_SERVER},     {"shards", 1, 0, O_SHARDS},
        {"servers", 1, 0, O_SERVERS},   {"threads", 1, 0, O_THREADS},
        {"channels", 1, 0, O_CHANNELS}, {"ops", 1, 0, O_OPS},
        {"keys", 1, 0, O_KEYS},         {"latency", 0, 0, O_LATENCY},
        {"dims", 1, 0, O_DIMS},         {"dists", 1, 0, O_DISTS},
        {"conc", 1, 0, O_CONC},         {"seconds", 1, 0, O_SECONDS},
        {"warmup", 1, 0, O_WARMUP},     {"reps", 1, 0, O_REPS},
        {"universe", 1, 0, O_UNIVERSE}, {"capacity", 1, 0, O_CAPACITY},
        {"zipf", 1, 0, O_ZIPF},         {"seed", 1, 0, O_SEED},
        {"timeout-ms", 1, 0, O_TIMEOUT}, {"iperf-seconds", 1, 0, O_IPERF_S},
        {"no-iperf", 0, 0, O_NO_IPERF}, {"csv", 1, 0, O_CSV},
        {"quick", 0, 0, O_QUICK},       {"help", 0, 0, O_HELP},
        {"backends", 1, 0, O_BACKENDS}, {"issue5", 0, 0, O_ISSUE5},
        {"server-args", 1, 0, O_SERVER_ARGS}, {"budget", 1, 0, O_BUDGET},
        {"iperf", 1, 0, O_IPERF},       {"iperf-streams", 1, 0, O_IPERF_STREAMS},
        {0, 0, 0, 0},
    };
    int given_keys = 0, given_dims = 0, given_dists = 0, given_ops = 0, given_conc = 0;
    int given_seconds = 0, given_warmup = 0, given_reps = 0, given_universe = 0;
    int given_iperf = 0, given_threads = 0, given_channels = 0, given_timeout = 0;
    int given_budget = 0, given_streams = 0;
    const char *server_flag = NULL, *iperf_flag = NULL;

    memset(o, 0, sizeof *o);
    o->servers = 1;
    o->server_threads = 2;
    o->channels = 1;
    o->seconds = 2.0;
    o->warmup = 0.5;
    o->reps = 3;
    o->universe = 1u << 20;
    o->zipf_s = 1.05;
    o->seed = 42;
    o->timeout_ms = 60000;
    o->iperf_seconds = 3.0;
    o->iperf_streams = 4;
    o->pull_tab = TAB_SGD;
    for (int i = 0; i < OP_COUNT; i++)
        o->ops[i] = op_default[i];
    o->keys[0] = 4096;
    o->keys[1] = 65536;
    o->n_keys = 2;
    o->dims[0] = 64;
    o->dims[1] = 128;
    o->n_dims = 2;
    o->dists[DIST_UNIFORM] = o->dists[DIST_ZIPF] = 1;
    o->concs[0] = (conc){1, 1};
    o->concs[1] = (conc){1, 4};
    o->concs[2] = (conc){4, 1};
    o->n_concs = 3;

    int c;
    size_t tmp[MAX_LIST];
    int nt;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_SERVER: server_flag = optarg; break;
        case O_SHARDS: o->shards = optarg; break;
        case O_SERVERS:
            o->servers = (unsigned)atoi(optarg);
            if (o->servers < 1 || o->servers > MAX_SERVERS)
                goto bad;
            break;
        case O_THREADS:
            o->server_threads = (unsigned)atoi(optarg);
            if (o->server_threads < 1)
                goto bad;
            given_threads = 1;
            break;
        case O_CHANNELS:
            o->channels = (unsigned)atoi(optarg);
            if (o->channels < 1 || o->channels > 64)
                goto bad;
            given_channels = 1;
            break;
        case O_OPS:
            if (parse_list(optarg, op_cli, OP_COUNT, o->ops, "op"))
                exit(2);
            given_ops = 1;
            break;
        case O_KEYS:
            if (parse_sizes(optarg, o->keys, &o->n_keys))
                goto bad;
            given_keys = 1;
            break;
        case O_LATENCY: o->latency = 1; break;
        case O_DIMS:
            if (parse_sizes(optarg, tmp, &nt))
                goto bad;
            for (int i = 0; i < nt; i++)
                o->dims[i] = (uint32_t)tmp[i];
            o->n_dims = nt;
            given_dims = 1;
            break;
        case O_DISTS:
            if (parse_list(optarg, dist_names, DIST_COUNT, o->dists, "distribution"))
                exit(2);
            given_dists = 1;
            break;
        case O_CONC:
            if (parse_concs(optarg, o->concs, &o->n_concs))
                goto bad;
            given_conc = 1;
            break;
        case O_SECONDS: o->seconds = atof(optarg); given_seconds = 1; break;
        case O_WARMUP: o->warmup = atof(optarg); given_warmup = 1; break;
        case O_REPS: o->reps = atoi(optarg); given_reps = 1; break;
        case O_UNIVERSE:
            o->universe = strtoull(optarg, NULL, 10);
            given_universe = 1;
            break;
        case O_CAPACITY: o->capacity = strtoull(optarg, NULL, 10); break;
        case O_ZIPF: o->zipf_s = atof(optarg); break;
        case O_SEED: o->seed = strtoull(optarg, NULL, 10); break;
        case O_TIMEOUT: o->timeout_ms = (unsigned)atoi(optarg); given_timeout = 1; break;
        case O_IPERF_S: o->iperf_seconds = atof(optarg); given_iperf = 1; break;
        case O_IPERF_STREAMS:
            o->iperf_streams = atoi(optarg);
            if (o->iperf_streams < 2 || o->iperf_streams > 128)
                goto bad;
            given_streams = 1;
            break;
        case O_IPERF: iperf_flag = optarg; break;
        case O_NO_IPERF: o->no_iperf = 1; break;
        case O_CSV: o->csv = optarg; break;
        case O_QUICK: o->quick = 1; break;
        case O_ISSUE5: o->issue5 = 1; break;
        case O_BUDGET:
            o->budget_s = atof(optarg);
            if (o->budget_s < 0)
                goto bad;
            given_budget = 1;
            break;
        case O_BACKENDS:
            if (parse_list(optarg, bk_names, BK_KINDS, o->backends, "backend"))
                exit(2);
            o->backends_given = 1;
            break;
        case O_SERVER_ARGS: {
            char *dup = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(dup, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                if (o->n_server_args == MAX_SERVER_ARGS) {
                    fprintf(stderr, "rpc_bench: over %d --server-args\n", MAX_SERVER_ARGS);
                    exit(2);
                }
                o->server_args[o->n_server_args++] = t;
            }
            break;   /* dup lives as long as the run: the args point into it */
        }
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rpc_bench: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (o->issue5) {
        /* issue 5: pull and Adam push on an Adam table, 1/4/16 clients each on its
         * own connections (channels > 1 is what gives a client its own) with 2
         * calls in flight, a realistic table, short points: ~3 minutes with both
         * backends on 16 cores */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (!given_ops) {
            memset(o->ops, 0, sizeof o->ops);
            o->ops[OP_PULL] = o->ops[OP_PUSH_ADAM] = 1;
        }
        o->pull_tab = TAB_ADAM;
        if (!given_keys) {
            o->keys[0] = 4096;
            o->keys[1] = 65536;
            o->n_keys = 2;
        }
        if (!given_dims) {
            o->dims[0] = 64;
            o->dims[1] = 128;
            o->n_dims = 2;
        }
        if (!given_dists) {
            memset(o->dists, 0, sizeof o->dists);
            o->dists[DIST_UNIFORM] = 1;
        }
        if (!given_conc) {
            o->concs[0] = (conc){1, 2};
            o->concs[1] = (conc){4, 2};
            o->concs[2] = (conc){16, 2};
            o->n_concs = 3;
        }
        if (!given_channels)
            o->channels = 2;
        if (!given_threads)
            o->server_threads = cores >= 4 ? (unsigned)(cores / 2) : 2;
        if (!given_timeout)
            o->timeout_ms = 20000;
        if (!given_streams)
            o->iperf_streams = 8;
        if (!given_seconds)
            o->seconds = o->quick ? 0.3 : 1.0;
        if (!given_warmup)
            o->warmup = o->quick ? 0.15 : 0.5;
        if (!given_reps)
            o->reps = o->quick ? 1 : 2;
        if (!given_universe)
            o->universe = o->quick ? UINT64_C(1) << 18 : UINT64_C(1) << 21;
        if (!given_iperf)
            o->iperf_seconds = o->quick ? 1.0 : 2.0;
        if (!given_budget)
            o->budget_s = o->quick ? 90.0 : 210.0;
    } else if (o->quick) {
        /* one shape, every op and both kinds of concurrency, briefly */
        if (!given_keys) {
            o->keys[0] = 4096;
            o->n_keys = 1;
        }
        if (!given_dims) {
            o->dims[0] = 64;
            o->n_dims = 1;
        }
        if (!given_dists) {
            memset(o->dists, 0, sizeof o->dists);
            o->dists[DIST_UNIFORM] = 1;
        }
        if (!given_conc) {
            o->concs[0] = (conc){1, 4};
            o->concs[1] = (conc){2, 1};
            o->n_concs = 2;
        }
        if (!given_seconds)
            o->seconds = 0.3;
        if (!given_warmup)
            o->warmup = 0.1;
        if (!given_reps)
            o->reps = 1;
        if (!given_universe)
            o->universe = 65536;
        if (!given_iperf)
            o->iperf_seconds = 1.0;
    }
    if (o->latency && o->n_keys < MAX_LIST) {
        int have = 0;
        for (int i = 0; i < o->n_keys; i++)
            have |= o->keys[i] == 1;
        if (!have) {
            memmove(o->keys + 1, o->keys, (size_t)o->n_keys * sizeof *o->keys);
            o->keys[0] = 1;
            o->n_keys++;
        }
    }
    if (o->seconds <= 0 || o->warmup < 0 || o->reps < 1 || o->universe < 1 ||
        o->iperf_seconds <= 0)
        goto bad;
    int any_op = 0;
    for (int i = 0; i < OP_COUNT; i++)
        any_op |= o->ops[i];
    if (!any_op)
        goto bad;
    for (int i = 0; i < o->n_keys; i++) {
        /* distinct keys need a universe at least as large as a request */
        if (o->keys[i] > o->universe) {
            fprintf(stderr, "rpc_bench: %zu keys per request > universe %llu\n", o->keys[i],
                    (unsigned long long)o->universe);
            exit(2);
        }
    }

    /* the server binary: flag, environment, this build's, a packed copy beside
     * this program, $PATH */
    static char found[4096];
    const char *env = getenv("EMBER_SERVER_BIN");
    if (server_flag) {
        o->server_bin = server_flag;
        o->server_bin_from = "--server";
    } else if (env && *env) {
        o->server_bin = env;
        o->server_bin_from = "$EMBER_SERVER_BIN";
    } else if (is_executable(EMBER_SERVER_BIN)) {
        o->server_bin = EMBER_SERVER_BIN;
        o->server_bin_from = "this build's";
    } else if (beside_self("ember-server", found, sizeof found)) {
        o->server_bin = found;
        o->server_bin_from = "beside rpc_bench";
    } else if (path_lookup("ember-server", found, sizeof found)) {
        o->server_bin = found;
        o->server_bin_from = "$PATH";
    } else {
        o->server_bin = EMBER_SERVER_BIN;
        o->server_bin_from = "not found";
    }
    if (!o->shards && !is_executable(o->server_bin)) {
        fprintf(stderr, "rpc_bench: no ember-server to start: '%s' (%s) is not an executable "
                        "file; give --server PATH or EMBER_SERVER_BIN\n",
                o->server_bin, o->server_bin_from);
        exit(2);
    }

    static char iperf_found[4096];
    const char *ienv = getenv("EMBER_IPERF3_BIN");
    if (iperf_flag)
        o->iperf_bin = is_executable(iperf_flag) ? iperf_flag : NULL;
    else if (ienv && *ienv)
        o->iperf_bin = is_executable(ienv) ? ienv : NULL;
    else if (beside_self("iperf3", iperf_found, sizeof iperf_found) ||
             path_lookup("iperf3", iperf_found, sizeof iperf_found))
        o->iperf_bin = iperf_found;
    if ((iperf_flag || (ienv && *ienv)) && !o->iperf_bin)
        fprintf(stderr, "rpc_bench: iperf3 '%s' is not an executable file\n",
                iperf_flag ? iperf_flag : ienv);
    return;
bad:
    fprintf(stderr, "rpc_bench: bad option value (see --help)\n");
    exit(2);
}

/* Which backends to run: --backends, else cpu and, where a GPU is visible, gpu.
 * A gpu request this program cannot check is said and skipped. */
static void choose_backends(bench_opts *o)
{
    char *why = g_gpu_why;
    size_t whycap = sizeof g_gpu_why;
    int ngpu = -1;
#ifdef EMBER_BENCH_GPU
    ngpu = rpc_bench_gpu_count(why, whycap);
#else
    snprintf(why, whycap, "this rpc_bench was built without CUDA (EMBER_HAVE_CUDA off), "
                              "so it cannot see or use a GPU");
#endif
    if (!o->backends[BK_GPU] && o->backends_given)
        snprintf(why, whycap, "not asked for (--backends)");
    if (!o->backends_given) {
        o->backends[BK_CPU] = 1;
        o->backends[BK_GPU] = ngpu > 0;
        if (ngpu > 0)
            printf("backends: cpu,gpu (default: %d GPU(s) visible)\n", ngpu);
        else
            printf("backends: cpu (default; gpu not run: %s)\n", why);
        return;
    }
    if (o->backends[BK_GPU] && ngpu <= 0) {
        printf("backends: gpu was asked for but is SKIPPED: %s\n", why);
        o->backends[BK_GPU] = 0;
    }
}

/* ---- main --------------------------------------------------------------------- */

/* Whether the next measurement may start: not stopped, not over --budget. */
static int may_measure(ctx *x)
{
    if (g_stop)
        return 0;
    if (x->o->budget_s > 0 && now_s() - x->t_start > x->o->budget_s) {
        if (!x->budget_hit)
            printf("budget: %.0f s of measuring spent (--budget): the remaining measurements "
                   "are skipped\n", x->o->budget_s);
        x->budget_hit = 1;
        return 0;
    }
    return 1;
}

/* Ports of a "host:port,..." list, into bk->ports. */
static void parse_ports(backend *bk, const char *shards)
{
    for (const char *p = shards; *p && bk->nports < MAX_SERVERS * 4;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == ':')
                colon = q;
        if (colon)
            bk->ports[bk->nports++] = atoi(colon + 1);
        p = comma ? comma + 1 : end;
    }
}

int main(int argc, char **argv)
{
    bench_opts o;
    parse_opts(&o, argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    ctx x;
    memset(&x, 0, sizeof x);
    x.o = &o;
    x.ceiling1 = x.ceilingN = -1.0;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned max_threads = 0;
    for (int i = 0; i < o.n_concs; i++) {
        unsigned t = o.concs[i].clients * (o.ops[OP_PUSHPULL] ? o.concs[i].depth : 1);
        if (t > max_threads)
            max_threads = t;
    }
    printf("rpc_bench: libember %s; %ld online core(s) on this machine%s\n", EMBER_CLIENT_VERSION,
           cores, o.issue5 ? (o.quick ? "; preset --issue5 --quick" : "; preset --issue5") : "");

    /* backends */
    if (o.shards) {
        if (o.backends_given)
            printf("backends: --backends is for servers this program starts; --shards given, "
                   "so their own backend is measured (\"given\")\n");
        backend *bk = &g_backends[g_nbackends++];
        bk->name = "given";
        bk->kind = -1;
        snprintf(bk->shards, sizeof bk->shards, "%s", o.shards);
        parse_ports(bk, bk->shards);
        bk->up = 1;
    } else {
        choose_backends(&o);
        for (int k = 0; k < BK_KINDS; k++) {
            if (!o.backends[k])
                continue;
            backend *bk = &g_backends[g_nbackends++];
            bk->name = bk_names[k];
            bk->kind = k;
        }
        if (!g_nbackends) {
            printf("rpc_bench: no backend left to measure\n");
            return 77;
        }
    }

    /* the loopback ceiling, before the servers start (and again at the end) */
    measure_ceiling(&x, 0);

    /* servers: one set per backend, all up for the whole run */
    int rc = 0;
    if (o.shards) {
        printf("servers: given (%s); their threads and cores are theirs to say\n", o.shards);
    } else {
        for (int b = 0; b < g_nbackends && !g_stop; b++) {
            backend *bk = &g_backends[b];
            bk->shards[0] = '\0';
            bk->up = 1;
            for (unsigned i = 0; i < o.servers; i++) {
                if (server_start(&o, bk, i) != 0) {
                    bk->up = 0;
                    bk->server_failed = 1;
                    rc = 1;
                    break;
                }
                bk->nservers = i + 1;
                bk->ports[bk->nports++] = bk->servers[i].port;
                if (i)
                    strcat(bk->shards, ",");
                strcat(bk->shards, bk->servers[i].addr);
            }
            if (bk->up)
                printf("servers (%s backend): %u x ember-server --backend %s --threads %u%s%s "
                       "on %s\n",
                       bk->name, o.servers, bk->name, o.server_threads,
                       o.n_server_args ? " + --server-args" : "", "", bk->shards);
            else
                printf("servers (%s backend): NOT STARTED: %s; the %s backend is skipped\n",
                       bk->name, bk->why_down, bk->name);
        }
        printf("server binary: %s (%s)\n", o.server_bin, o.server_bin_from);
        printf("note: servers (%u thread(s) each) and this client (up to %u calling thread(s) + "
               "one gRPC poller per client) share this machine's %ld core(s); figures include "
               "that contention%s\n",
               o.server_threads, max_threads, cores,
               g_nbackends > 1 ? "; the backend not being measured sits idle" : "");
    }

    unsigned max_clients = 0;
    for (int i = 0; i < o.n_concs; i++)
        if (o.concs[i].clients > max_clients)
            max_clients = o.concs[i].clients;
    printf("clients: up to %u ember_client(s) per measurement, opened for it; channels_per_shard "
           "%u%s; deadline %u ms\n",
           max_clients, o.channels,
           o.channels > 1 ? " (each client its own connections, calls round-robin over them)"
                          : " (the clients of this process share one connection per shard)",
           o.timeout_ms);

    /* gradients: small, so that values stay finite however long it runs */
    size_t max_n = 0;
    uint32_t max_dim = 0;
    for (int i = 0; i < o.n_keys; i++)
        if (o.keys[i] > max_n)
            max_n = o.keys[i];
    for (int i = 0; i < o.n_dims; i++)
        if (o.dims[i] > max_dim)
            max_dim = o.dims[i];
    float *grads = xmalloc(max_n * max_dim * sizeof *grads);
    {
        bench_rng r = {o.seed};
        for (size_t i = 0; i < max_n * max_dim; i++)
            grads[i] = (float)((rng_unit(&r) - 0.5) * 2e-3);
    }

    printf("measuring: %.2f s warm-up, then %d x %.2f s per measurement%s", o.warmup, o.reps,
           o.seconds, g_nbackends > 1 ? "; each shape on every backend in turn" : "");
    if (o.budget_s > 0)
        printf("; budget %.0f s", o.budget_s);
    printf("\n\n");
    x.t_start = now_s();
    for (int di = 0; di < o.n_dims && may_measure(&x); di++) {
        uint32_t dim = o.dims[di];
        int any_up = 0;
        for (int b = 0; b < g_nbackends; b++)
            if (g_backends[b].up && create_tables(&x, &g_backends[b], dim) == 0)
                any_up = 1;
        for (int op = 0; op < OP_COUNT && any_up; op++) {
            if (!o.ops[op])
                continue;
            for (int ki = 0; ki < o.n_keys; ki++) {
                for (int d = 0; d < DIST_COUNT; d++) {
                    if (!o.dists[d])
                        continue;
                    /* 1 key: latency only, uniform */
                    if (o.keys[ki] == 1 && d != DIST_UNIFORM)
                        continue;
                    cell c;
                    char tname[64];
                    memset(&c, 0, sizeof c);
                    c.op = op;
                    c.n = o.keys[ki];
                    c.dim = dim;
                    c.ks = keyset_get(&o, c.n, d);
                    table_name(tname, sizeof tname, op_table(&o, op), dim);
                    c.table = tname;
                    c.grads = grads;
                    for (int ci = 0; ci < o.n_concs; ci++) {
                        size_t first = x.nres;
                        for (int b = 0; b < g_nbackends; b++)
                            if (g_backends[b].up && may_measure(&x))
                                measure(&x, &c, d, o.concs[ci], b);
                        /* two backends measured: the ratio, at once */
                        if (x.nres == first + 2 && !x.res[first].failed &&
                            !x.res[first + 1].failed && x.res[first].kps_med > 0 &&
                            x.res[first].srv_ns > 0)
                            printf("    %s/%s: keys/s x%.2f, server CPU per key x%.2f\n",
                                   g_backends[x.res[first + 1].backend].name,
                                   g_backends[x.res[first].backend].name,
                                   x.res[first + 1].kps_med / x.res[first].kps_med,
                                   x.res[first + 1].srv_ns / x.res[first].srv_ns);
                    }
                }
            }
        }
        for (int b = 0; b < g_nbackends; b++)
            if (g_backends[b].up)
                drop_tables(&x, &g_backends[b], dim);
    }
    if (g_stop)
        printf("\nstopped by a signal: the servers stop, then the summary of what was measured "
               "(a second signal kills everything at once)\n");

    if (x.failures)
        rc = 1;
    for (int b = 0; b < g_nbackends; b++) {
        backend *bk = &g_backends[b];
        if (bk->server_failed)
            rc = 1;
        for (unsigned i = 0; i < bk->nservers; i++)
            if (server_stop(&bk->servers[i], bk->name, i) != 0)
                rc = 1;
    }

    if (!g_stop)
        measure_ceiling(&x, 1);

    print_summary(&x);
    if (o.csv)
        write_csv(&x);
    if (x.failures)
        printf("\n%d measurement(s) FAILED\n", x.failures);
    free(grads);
    for (int i = 0; i < g_n_keysets; i++) {
        free(g_keysets[i]->keys);
        free(g_keysets[i]);
    }
    free(x.res);
    return rc;
}

/*
 * rpc_bench.c — pull, push and push+pull through libember against real
 * ember-server processes, next to the TCP loopback ceiling measured in the same
 * run (iperf3), in the units of docs/BENCHMARKS.md.
 *
 * Setup
 *   - Servers: by default it starts its own (--servers N, default 1) from the
 *     ember-server binary (EMBER_SERVER_BIN, a compile definition, or --server
 *     PATH) on free 127.0.0.1 ports with --threads T (default 2), waits until
 *     each answers, and stops them with SIGTERM at the end (their exit status is
 *     printed). --shards host:port,... uses running servers instead; its tables
 *     (rpcb_*) are dropped and re-created.
 *   - Tables: per dim, one SGD and one Adagrad table (capacity per shard
 *     --capacity, default 2 × universe / shards), pre-filled untimed with every
 *     key of the universe (--universe, default 1,048,576) by inserting pulls, so
 *     timed calls find their keys (pulls create none, pushes update rows).
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
 *   - Timing: per measurement a warm-up (--warmup s), then --reps runs of
 *     --seconds each: every thread issues calls until the run's time is up and
 *     waits for what it has in flight; a run's figure is the keys of all
 *     completed calls over the time from the first thread's start to the last
 *     one's end. min/median/max over the runs.
 *
 * Units: keys/s are the caller's keys per second (10^6 = M); payload GB/s
 * counts value bytes only (n × dim × 4 per pull or push; push+pull moves both:
 * 2 × n × dim × 4), 10^9 bytes = 1 GB; latency per call from issue to its wait
 * returning, p50/p99 (nearest rank) over every call of the timed runs. CPU:
 * seconds of CPU per second of wall time of the servers (from /proc) and of this
 * process (client threads, pollers), so 100% = one core busy; and the same CPU
 * time per key moved ("ns/key", server + client), which other load on a shared
 * machine disturbs far less than keys/s: compare versions by it.
 *
 * The loopback ceiling: `iperf3 -s -1` and `iperf3 -c 127.0.0.1 -t S -J [-P 4]`,
 * end.sum_received.bits_per_second, for 1 and 4 streams, before the servers
 * start and again after they stopped; pull payload is printed as a % of the
 * larger 1-stream figure (this machine is shared: one moment's ceiling may be
 * low). Without iperf3 it says so and goes on.
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

/* ---- what can be measured -------------------------------------------------- */

enum { OP_PULL, OP_PUSH_ADAGRAD, OP_PUSH_SGD, OP_PUSHPULL, OP_COUNT };
static const char *const op_cli[OP_COUNT] = {"pull", "push-adagrad", "push-sgd", "pushpull"};
static const char *const op_label[OP_COUNT] = {"pull", "push(adagrad)", "push(sgd)",
                                               "push+pull(adagrad)"};

enum { DIST_UNIFORM, DIST_ZIPF, DIST_ZIPF_DUP, DIST_COUNT };
static const char *const dist_names[DIST_COUNT] = {"uniform", "zipf", "zipf-dup"};

enum { TAB_SGD, TAB_ADAGRAD, TAB_COUNT };

#define MAX_LIST 16
#define MAX_SERVERS 16
#define MAX_THREADS 256

typedef struct conc {
    unsigned clients, depth;
} conc;

typedef struct bench_opts {
    const char *server_bin;
    const char *shards;          /* given servers, or NULL: start our own */
    unsigned servers, server_threads, channels;
    int ops[OP_COUNT];
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
    int quick, latency, no_iperf;
    double iperf_seconds;
    unsigned timeout_ms;
} bench_opts;

typedef struct bench_result {
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
    char log_path[128];
} server;

static server g_servers[MAX_SERVERS];
static unsigned g_nservers;
static pid_t g_iperf_pid;

static void kill_children(void)
{
    for (unsigned i = 0; i < g_nservers; i++)
        if (g_servers[i].pid > 0)
            kill(g_servers[i].pid, SIGKILL);
    if (g_iperf_pid > 0)
        kill(g_iperf_pid, SIGKILL);
}

static void on_signal(int sig)
{
    (void)sig;
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

/* Established TCP connections whose remote port is one of the shards' (from
 * /proc/net/tcp{,6}): how many connections the clients really use. */
static int g_shard_ports[MAX_SERVERS * 4];
static int g_n_shard_ports;

static int tcp_conns_to_shards(void)
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
            for (int i = 0; i < g_n_shard_ports; i++)
                if ((int)rport == g_shard_ports[i])
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

static int server_start(const bench_opts *o, server *s, unsigned idx)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = free_port();
        if (s->port <= 0)
            continue;
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        snprintf(s->log_path, sizeof s->log_path, "/tmp/rpc_bench.%d.server%u.log", (int)getpid(),
                 idx);
        char threads[16], sidx[16], scount[16];
        snprintf(threads, sizeof threads, "%u", o->server_threads);
        snprintf(sidx, sizeof sidx, "%u", idx);
        snprintf(scount, sizeof scount, "%u", o->servers);
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "rpc_bench: fork: %s\n", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execl(o->server_bin, o->server_bin, "--listen", s->addr, "--threads", threads,
                  "--shard-index", sidx, "--shard-count", scount, "--log-level", "warn",
                  (char *)NULL);
            fprintf(stderr, "rpc_bench: cannot run %s: %s\n", o->server_bin, strerror(errno));
            _exit(127);
        }
        s->pid = pid;
        double end = now_s() + 20.0;
        while (now_s() < end) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                s->pid = 0;
                fprintf(stderr, "rpc_bench: server %u (%s) exited at start (status %d)\n", idx,
                        s->addr, WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
                print_log_tail(s->log_path);
                if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
                    return -1;
                break;   /* perhaps the port was taken: another one */
            }
            if (tcp_connects(s->port))
                return 0;
            sleep_s(0.02);
        }
        if (s->pid > 0) {
            fprintf(stderr, "rpc_bench: server %u (%s) did not listen within 20 s\n", idx,
                    s->addr);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
            print_log_tail(s->log_path);
            return -1;
        }
    }
    return -1;
}

/* SIGTERM, then SIGKILL after 20 s; prints how it ended. Returns 0 on exit 0. */
static int server_stop(server *s, unsigned idx)
{
    if (s->pid <= 0)
        return 0;
    kill(s->pid, SIGTERM);
    int st = wait_exit(s->pid, 20.0);
    int rc = 0;
    if (st == -1) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        printf("server %u (%s): did not exit within 20 s of SIGTERM; killed\n", idx, s->addr);
        rc = -1;
    } else if (WIFEXITED(st)) {
        printf("server %u (%s): SIGTERM, exit %d\n", idx, s->addr, WEXITSTATUS(st));
        rc = WEXITSTATUS(st) ? -1 : 0;
    } else {
        printf("server %u (%s): SIGTERM, killed by signal %d\n", idx, s->addr, WTERMSIG(st));
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

static double servers_cpu_s(void)
{
    double s = 0.0;
    for (unsigned i = 0; i < g_nservers; i++)
        if (g_servers[i].pid > 0)
            s += proc_cpu_s(g_servers[i].pid);
    return s;
}

static int in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4096];
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, prog);
        if (access(buf, X_OK) == 0)
            return 1;
        path += len + (colon ? 1 : 0);
    }
    return 0;
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

/* Loopback TCP bytes/s with `streams` parallel streams, or -1 (why in `why`). */
static double iperf_measure(int streams, double secs, char *why, size_t cap)
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
        execlp("iperf3", "iperf3", "-s", "-1", "-p", sport, (char *)NULL);
        _exit(127);
    }
    g_iperf_pid = pid;
    double end = now_s() + 10.0;
    while (!tcp_listening(port) && now_s() < end && waitpid(pid, NULL, WNOHANG) == 0)
        sleep_s(0.02);
    char *argv[] = {"iperf3", "-c", "127.0.0.1", "-p", sport, "-t", st, "-P", sp, "-J", NULL};
    char *out = NULL;
    double bps = -1.0;
    int status = run_capture(argv, &out, secs + 30.0);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, cap, "iperf3 client failed (status %d)", status);
    } else if ((bps = iperf_parse(out)) < 0) {
        snprintf(why, cap, "no end.sum_received.bits_per_second in iperf3's JSON");
    }
    free(out);
    if (wait_exit(pid, 5.0) == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    g_iperf_pid = 0;
    return bps > 0 ? bps / 8.0 : -1.0;
}

/* The loopback ceiling at the start (when = 0) or the end (1) of the run; the
 * figures used for "% of loopback" are the larger of the two, so that a noisy
 * moment of this shared machine cannot make ember look closer to the ceiling. */
typedef struct ceiling {
    double bps[2][2];            /* [when][1 stream, 4 streams], bytes/s; -1 unknown */
} ceiling;

static ceiling g_ceiling = {{{-1.0, -1.0}, {-1.0, -1.0}}};

static void measure_ceiling_into(const bench_opts *o, int when)
{
    static const int streams[2] = {1, 4};
    const char *tag = when ? "end" : "start";
    if (o->no_iperf) {
        if (!when)
            printf("loopback ceiling: skipped (--no-iperf)\n");
        return;
    }
    if (!in_path("iperf3")) {
        if (!when)
            printf("loopback ceiling: iperf3 is not installed (Debian package iperf3, which "
                   "deploy/install-deps.sh installs): going on without it\n");
        return;
    }
    for (int k = 0; k < 2; k++) {
        char why[256] = "";
        double b = iperf_measure(streams[k], o->iperf_seconds, why, sizeof why);
        g_ceiling.bps[when][k] = b;
        if (b > 0)
            printf("loopback ceiling (%s of run): iperf3 -c 127.0.0.1 -t %g -P %d: %.3f GB/s "
                   "(%.2f Gbit/s)\n",
                   tag, o->iperf_seconds, streams[k], b / 1e9, b * 8 / 1e9);
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
                        w->rc = w->err.code ? w->err.code : EMBER_E_UNKNOWN;
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
    const char *shards;                   /* the client's shard list */
    ember_client *clients[MAX_THREADS];   /* the measurement's, opened and closed by it */
    double ceiling1, ceiling4;            /* bytes/s, -1 when unknown */
    bench_result *res;
    size_t nres, res_cap;
    int failures;
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
            x->ceiling4 = b;
    }
}

static ember_client *open_client(const bench_opts *o, const char *shards)
{
    ember_client_options co;
    ember_error err;
    ember_client_options_init(&co);
    co.shards = shards;
    co.timeout_ms = o->timeout_ms;
    co.channels_per_shard = o->channels;
    ember_client *cl = ember_client_open(&co, &err);
    if (!cl) {
        fprintf(stderr, "rpc_bench: ember_client_open(%s): %s: %s\n", shards,
                ember_code_name(err.code), err.message);
        exit(1);
    }
    return cl;
}

static void print_result(const ctx *x, const bench_result *r)
{
    if (r->failed) {
        printf("%-18s n %6zu dim %3u %-8s %2ux%-2u: FAILED\n", op_label[r->op], r->n, r->dim,
               dist_names[r->dist], r->cc.clients, r->cc.depth);
        fflush(stdout);
        return;
    }
    char ceil_s[64] = "";
    if (r->op == OP_PULL && x->ceiling1 > 0)
        snprintf(ceil_s, sizeof ceil_s, " = %5.1f%% of loopback", 100.0 * r->gbps_med * 1e9 / x->ceiling1);
    printf("%-18s n %6zu dim %3u %-8s %2u client(s) x %2u in flight: %8.3f M keys/s "
           "[min %.3f max %.3f]  %6.3f GB/s payload%s  p50 %8.1f us  p99 %8.1f us  "
           "%llu calls  cpu: server %3.0f%% client %3.0f%% = %.0f + %.0f ns/key  tcp conns %d\n",
           op_label[r->op], r->n, r->dim, dist_names[r->dist], r->cc.clients, r->cc.depth,
           r->kps_med / 1e6, r->kps_min / 1e6, r->kps_max / 1e6, r->gbps_med, ceil_s,
           r->p50_us, r->p99_us, (unsigned long long)r->calls, 100.0 * r->srv_cpu,
           100.0 * r->cli_cpu, r->srv_ns, r->cli_ns, r->conns);
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

static void measure(ctx *x, const cell *c0, int dist, conc cc)
{
    const bench_opts *o = x->o;
    cell c = *c0;
    bench_result r;
    memset(&r, 0, sizeof r);
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
        x->clients[i] = open_client(o, x->shards);
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
        for (unsigned d = 0; d < depth; d++) {
            w->out[d] = xmalloc(c.n * c.dim * sizeof(float));
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
    r.conns = tcp_conns_to_shards();
    double cpu_s0 = servers_cpu_s(), cpu_c0 = self_cpu_s(), wall0 = now_s();
    c.seconds = o->seconds;
    for (int rep = 0; rep < reps && !rc; rep++)
        kps[rep] = run_phase(ws, nthr, &bar, &err, &rc);
    double wall = now_s() - wall0;
    double d_srv = servers_cpu_s() - cpu_s0, d_cli = self_cpu_s() - cpu_c0;
    r.srv_cpu = d_srv / wall;
    r.cli_cpu = d_cli / wall;
    if (rc) {
        r.failed = 1;
        x->failures++;
        fprintf(stderr, "rpc_bench: %s n %zu dim %u %s %ux%u: %s: %s\n", op_label[c.op], c.n,
                c.dim, dist_names[dist], cc.clients, cc.depth, ember_code_name(rc), err.message);
    } else {
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
    snprintf(buf, cap, "rpcb_%s_%u", tab == TAB_SGD ? "sgd" : "adagrad", dim);
}

static void die_rc(const char *what, int rc, const ember_error *err)
{
    fprintf(stderr, "rpc_bench: %s: %s: %s\n", what, ember_code_name(rc), err->message);
    kill_children();
    exit(1);
}

static void create_tables(ctx *x, uint32_t dim)
{
    const bench_opts *o = x->o;
    ember_client *cl = open_client(o, x->shards);
    unsigned nshards = ember_client_shard_count(cl);
    for (int tab = 0; tab < TAB_COUNT; tab++) {
        char name[64];
        ember_error err;
        table_name(name, sizeof name, tab, dim);
        ember_table_spec s;
        ember_table_spec_init(&s);
        s.dim = dim;
        s.capacity_per_shard = o->capacity ? o->capacity : 2 * o->universe / nshards + 1024;
        s.seed = o->seed;
        s.optimizer.kind = tab == TAB_SGD ? EMBER_OPT_SGD : EMBER_OPT_ADAGRAD;
        s.optimizer.lr = 0.01f;
        int rc = ember_drop_table(cl, name, 1, &err);
        if (rc)
            die_rc("drop table", rc, &err);
        rc = ember_create_table(cl, name, &s, 0, &err);
        if (rc)
            die_rc("create table", rc, &err);
        /* pre-fill: every key of the universe, by inserting pulls */
        double t0 = now_s();
        size_t chunk = 65536;
        uint64_t *keys = xmalloc(chunk * sizeof *keys);
        float *out = xmalloc(chunk * dim * sizeof *out);
        for (uint64_t r = 0; r < o->universe; r += chunk) {
            size_t m = o->universe - r < chunk ? (size_t)(o->universe - r) : chunk;
            for (size_t i = 0; i < m; i++)
                keys[i] = bench_key(r + i);
            rc = ember_pull(cl, name, keys, m, out, dim, EMBER_PULL_INSERT, &err);
            if (rc)
                die_rc("pre-fill pull", rc, &err);
        }
        free(keys);
        free(out);
        ember_table_info info;
        rc = ember_describe_table(cl, name, &info, &err);
        if (rc)
            die_rc("describe table", rc, &err);
        printf("table %s: dim %u, %s, capacity %llu over %u shard(s), filled with %llu keys in "
               "%.2f s: size %llu, load factor %.3f, evictions %llu\n",
               name, dim, tab == TAB_SGD ? "SGD" : "Adagrad", (unsigned long long)info.capacity,
               nshards, (unsigned long long)o->universe, now_s() - t0,
               (unsigned long long)info.size, info.load_factor,
               (unsigned long long)info.evictions);
        fflush(stdout);
    }
    ember_client_close(cl);
}

static void drop_tables(ctx *x, uint32_t dim)
{
    ember_client *cl = open_client(x->o, x->shards);
    for (int tab = 0; tab < TAB_COUNT; tab++) {
        char name[64];
        ember_error err;
        table_name(name, sizeof name, tab, dim);
        int rc = ember_drop_table(cl, name, 1, &err);
        if (rc)
            fprintf(stderr, "rpc_bench: drop %s: %s: %s\n", name, ember_code_name(rc), err.message);
    }
    ember_client_close(cl);
}

/* ---- summary, CSV --------------------------------------------------------------- */

static const bench_result *find_res(const ctx *x, int op, size_t n, uint32_t dim, int dist,
                                    unsigned clients, unsigned max_depth)
{
    const bench_result *best = NULL;
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        if (r->failed || r->op != op || r->n != n || r->dim != dim || r->dist != dist ||
            r->cc.clients != clients || r->cc.depth > max_depth)
            continue;
        if (!best || r->kps_med > best->kps_med)
            best = r;
    }
    return best;
}

static void print_summary(const ctx *x)
{
    const bench_opts *o = x->o;
    printf("\nsummary: median of %d run(s) of %.2f s after %.2f s warm-up; keys/s in M (10^6); "
           "payload = value bytes, GB = 10^9 B; latency per call; cpu = cores busy (100%% = one)\n",
           o->reps, o->seconds, o->warmup);
    if (x->ceiling1 > 0 || x->ceiling4 > 0)
        printf("TCP loopback ceiling (iperf3, this run; start / end, the larger is used): "
               "1 stream %.2f / %.2f GB/s, 4 streams %.2f / %.2f GB/s\n",
               g_ceiling.bps[0][0] / 1e9, g_ceiling.bps[1][0] / 1e9, g_ceiling.bps[0][1] / 1e9,
               g_ceiling.bps[1][1] / 1e9);
    else
        printf("TCP loopback ceiling: not measured in this run\n");
    printf("\n%-18s %6s %4s %-8s %5s %10s %19s %8s %7s %10s %10s %5s %5s %8s %8s %5s\n", "op",
           "keys", "dim", "dist", "CxD", "M keys/s", "[min - max]", "GB/s", "%ceil", "p50 us",
           "p99 us", "srv%", "cli%", "srv ns/k", "cli ns/k", "conns");
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        char cd[16];
        snprintf(cd, sizeof cd, "%ux%u", r->cc.clients, r->cc.depth);
        if (r->failed) {
            printf("%-18s %6zu %4u %-8s %5s %10s\n", op_label[r->op], r->n, r->dim,
                   dist_names[r->dist], cd, "FAILED");
            continue;
        }
        char rng[32], ce[16] = "-";
        snprintf(rng, sizeof rng, "[%.3f - %.3f]", r->kps_min / 1e6, r->kps_max / 1e6);
        if (x->ceiling1 > 0 && r->op == OP_PULL)
            snprintf(ce, sizeof ce, "%.1f", 100.0 * r->gbps_med * 1e9 / x->ceiling1);
        printf("%-18s %6zu %4u %-8s %5s %10.3f %19s %8.3f %7s %10.1f %10.1f %5.0f %5.0f %8.0f %8.0f "
               "%5d\n",
               op_label[r->op], r->n, r->dim, dist_names[r->dist], cd, r->kps_med / 1e6, rng,
               r->gbps_med, ce, r->p50_us, r->p99_us, 100.0 * r->srv_cpu, 100.0 * r->cli_cpu,
               r->srv_ns, r->cli_ns, r->conns);
    }

    /* the issue's targets */
    printf("\ntargets (docs/BENCHMARKS.md, issue 3), one client, up to 4 calls in flight, "
           "uniform distinct keys:\n");
    const bench_result *p = find_res(x, OP_PULL, 4096, 64, DIST_UNIFORM, 1, 4);
    const bench_result *u = find_res(x, OP_PUSH_ADAGRAD, 4096, 64, DIST_UNIFORM, 1, 4);
    const bench_result *b = find_res(x, OP_PULL, 65536, 64, DIST_UNIFORM, 1, 4);
    if (p)
        printf("  pull 4,096 x 64:          %.2f M keys/s (1x%u)  target >= 6 M: %s\n",
               p->kps_med / 1e6, p->cc.depth, p->kps_med >= 6e6 ? "met" : "NOT met");
    else
        printf("  pull 4,096 x 64:          not measured in this run\n");
    if (u)
        printf("  push(adagrad) 4,096 x 64: %.2f M keys/s (1x%u)  target >= 5 M: %s\n",
               u->kps_med / 1e6, u->cc.depth, u->kps_med >= 5e6 ? "met" : "NOT met");
    else
        printf("  push(adagrad) 4,096 x 64: not measured in this run\n");
    if (b && x->ceiling1 > 0) {
        double f = b->gbps_med * 1e9 / x->ceiling1;
        printf("  pull 65,536 x 64:         %.3f GB/s = %.1f%% of the 1-stream loopback ceiling "
               "(1x%u)  target >= 60%%: %s\n",
               b->gbps_med, 100.0 * f, b->cc.depth, f >= 0.6 ? "met" : "NOT met");
    } else if (b) {
        printf("  pull 65,536 x 64:         %.3f GB/s (1x%u); no loopback ceiling to compare\n",
               b->gbps_med, b->cc.depth);
    } else {
        printf("  pull 65,536 x 64:         not measured in this run\n");
    }
    printf("  reference (same kind of machine): ps-lite 5.7 M pull / 4.5 M push; "
           "iperf3 1 stream ~2.73 GB/s\n");
}

static void write_csv(const ctx *x)
{
    const bench_opts *o = x->o;
    FILE *fp = fopen(o->csv, "w");
    if (!fp) {
        fprintf(stderr, "rpc_bench: cannot write %s: %s\n", o->csv, strerror(errno));
        return;
    }
    fprintf(fp, "op,keys,dim,dist,clients,in_flight,servers,server_threads,reps,seconds,"
                "mkeys_s_min,mkeys_s_median,mkeys_s_max,payload_gb_s,pct_loopback_1stream,"
                "p50_us,p99_us,calls,server_cpu,client_cpu,server_ns_per_key,client_ns_per_key,"
                "loopback_1stream_gb_s,"
                "loopback_4stream_gb_s,tcp_conns,failed\n");
    for (size_t i = 0; i < x->nres; i++) {
        const bench_result *r = &x->res[i];
        double pc = x->ceiling1 > 0 && r->op == OP_PULL ? 100.0 * r->gbps_med * 1e9 / x->ceiling1
                                                       : NAN;
        fprintf(fp, "%s,%zu,%u,%s,%u,%u,%u,%u,%d,%g,%.4f,%.4f,%.4f,%.4f,%.2f,%.1f,%.1f,%llu,"
                    "%.3f,%.3f,%.1f,%.1f,%.4f,%.4f,%d,%d\n",
                op_cli[r->op], r->n, r->dim, dist_names[r->dist], r->cc.clients, r->cc.depth,
                o->shards ? 0 : o->servers, o->shards ? 0 : o->server_threads, o->reps,
                o->seconds, r->kps_min / 1e6, r->kps_med / 1e6, r->kps_max / 1e6, r->gbps_med,
                pc, r->p50_us, r->p99_us, (unsigned long long)r->calls, r->srv_cpu, r->cli_cpu,
                r->srv_ns, r->cli_ns, x->ceiling1 > 0 ? x->ceiling1 / 1e9 : NAN,
                x->ceiling4 > 0 ? x->ceiling4 / 1e9 : NAN, r->conns, r->failed);
    }
    fclose(fp);
    printf("csv: %s\n", o->csv);
}

/* ---- options ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rpc_bench [options]\n"
            "Pull, push and push+pull through libember against ember-server on loopback,\n"
            "next to the TCP loopback ceiling (iperf3). See the comment atop rpc_bench.c.\n\n"
            "  --server PATH        ember-server binary (default %s)\n"
            "  --shards H:P,...     use running servers instead of starting any\n"
            "  --servers N          servers to start (default 1)\n"
            "  --threads N          --threads of each started server (default 2)\n"
            "  --channels N         connections per shard per client (default 1)\n"
            "  --ops LIST           pull,push-adagrad,push-sgd,pushpull (default all)\n"
            "  --keys LIST          keys per request (default 4096,65536)\n"
            "  --latency            also 1 key per request\n"
            "  --dims LIST          (default 64,128)\n"
            "  --dists LIST         uniform,zipf,zipf-dup (default uniform,zipf)\n"
            "  --conc LIST          CxD: C clients, D calls in flight each (default 1x1,1x4,4x1)\n"
            "  --seconds S          each timed run (default 2)\n"
            "  --warmup S           before each measurement (default 0.5)\n"
            "  --reps N             timed runs per measurement (default 3)\n"
            "  --universe N         keys in the tables (default 1048576)\n"
            "  --capacity N         table capacity per shard (default 2 x universe / shards)\n"
            "  --zipf S             Zipf exponent (default 1.05)\n"
            "  --seed N             (default 42)\n"
            "  --timeout-ms N       deadline of each call (default 60000)\n"
            "  --iperf-seconds S    length of each iperf3 run (default 3)\n"
            "  --no-iperf           skip the loopback ceiling\n"
            "  --csv FILE           one row per measurement\n"
            "  --quick              tiny run for the smoke test\n"
            "  --help\n",
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
        O_SEED, O_TIMEOUT, O_IPERF_S, O_NO_IPERF, O_CSV, O_QUICK, O_HELP
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
        {0, 0, 0, 0},
    };
    int given_keys = 0, given_dims = 0, given_dists = 0, given_ops = 0, given_conc = 0;
    int given_seconds = 0, given_warmup = 0, given_reps = 0, given_universe = 0;
    int given_iperf = 0;

    memset(o, 0, sizeof *o);
    o->server_bin = EMBER_SERVER_BIN;
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
    for (int i = 0; i < OP_COUNT; i++)
        o->ops[i] = 1;
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
        case O_SERVER: o->server_bin = optarg; break;
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
            break;
        case O_CHANNELS:
            o->channels = (unsigned)atoi(optarg);
            if (o->channels < 1)
                goto bad;
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
        case O_TIMEOUT: o->timeout_ms = (unsigned)atoi(optarg); break;
        case O_IPERF_S: o->iperf_seconds = atof(optarg); given_iperf = 1; break;
        case O_NO_IPERF: o->no_iperf = 1; break;
        case O_CSV: o->csv = optarg; break;
        case O_QUICK: o->quick = 1; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rpc_bench: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (o->quick) {
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
    (void)given_ops;
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
    for (int i = 0; i < o->n_keys; i++) {
        /* distinct keys need a universe at least as large as a request */
        if (o->keys[i] > o->universe) {
            fprintf(stderr, "rpc_bench: %zu keys per request > universe %llu\n", o->keys[i],
                    (unsigned long long)o->universe);
            exit(2);
        }
    }
    return;
bad:
    fprintf(stderr, "rpc_bench: bad option value (see --help)\n");
    exit(2);
}

/* ---- main --------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bench_opts o;
    parse_opts(&o, argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    ctx x;
    memset(&x, 0, sizeof x);
    x.o = &o;
    x.ceiling1 = x.ceiling4 = -1.0;

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
    printf("rpc_bench: libember %s; %ld online core(s) on this machine\n", EMBER_CLIENT_VERSION,
           cores);

    /* the loopback ceiling, before the servers start (and again at the end) */
    measure_ceiling(&x, 0);

    /* servers */
    char shards[MAX_SERVERS * 64 + 1];
    if (o.shards) {
        snprintf(shards, sizeof shards, "%s", o.shards);
        for (const char *p = shards; *p && g_n_shard_ports < MAX_SERVERS * 4;) {
            const char *comma = strchr(p, ',');
            const char *end = comma ? comma : p + strlen(p);
            const char *colon = NULL;
            for (const char *q = p; q < end; q++)
                if (*q == ':')
                    colon = q;
            if (colon)
                g_shard_ports[g_n_shard_ports++] = atoi(colon + 1);
            p = comma ? comma + 1 : end;
        }
        printf("servers: given (%s); their threads and cores are theirs to say\n", shards);
    } else {
        shards[0] = '\0';
        for (unsigned i = 0; i < o.servers; i++) {
            if (server_start(&o, &g_servers[i], i) != 0) {
                kill_children();
                return 1;
            }
            g_nservers = i + 1;
            g_shard_ports[g_n_shard_ports++] = g_servers[i].port;
            if (i)
                strcat(shards, ",");
            strcat(shards, g_servers[i].addr);
        }
        printf("servers: %u x ember-server --threads %u on %s (%s)\n", o.servers,
               o.server_threads, shards, o.server_bin);
        printf("note: servers (%u thread(s) each) and this client (up to %u calling thread(s) + "
               "one gRPC poller per client) share this machine's %ld core(s); figures include "
               "that contention\n",
               o.server_threads, max_threads, cores);
    }

    unsigned max_clients = 0;
    for (int i = 0; i < o.n_concs; i++)
        if (o.concs[i].clients > max_clients)
            max_clients = o.concs[i].clients;
    x.shards = shards;
    printf("clients: up to %u ember_client(s) per measurement, opened for it; channels_per_shard "
           "%u%s; deadline %u ms\n",
           max_clients, o.channels,
           o.channels > 1 ? " (own connections)"
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

    printf("measuring: %.2f s warm-up, then %d x %.2f s per measurement\n\n", o.warmup, o.reps,
           o.seconds);
    for (int di = 0; di < o.n_dims && !g_stop; di++) {
        uint32_t dim = o.dims[di];
        create_tables(&x, dim);
        for (int op = 0; op < OP_COUNT; op++) {
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
                    table_name(tname, sizeof tname,
                               op == OP_PULL || op == OP_PUSH_SGD ? TAB_SGD : TAB_ADAGRAD, dim);
                    c.table = tname;
                    c.grads = grads;
                    for (int ci = 0; ci < o.n_concs; ci++)
                        measure(&x, &c, d, o.concs[ci]);
                }
            }
        }
        drop_tables(&x, dim);
    }

    int rc = x.failures ? 1 : 0;
    for (unsigned i = 0; i < g_nservers; i++)
        if (server_stop(&g_servers[i], i) != 0)
            rc = 1;

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

/*
 * rpc_bench.h — what the parts of rpc_bench share: the options (options.c), the
 * processes it runs, ember-server and iperf3 (servers.c), the measurements
 * (runs.c), the report (report.c) and main.c's loop over shapes.
 *
 * rpc_bench — pull, push and push+pull through libember against real
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
 *     127.0.0.1 ports with --threads T (default 2; --matrix gpu-vs-cpu: half
 *     the online cores), plus --server-args; waited for until each answers
 *     SERVING (tests/lib/server_proc.h), and stopped with SIGTERM at the end
 *     (their exit status is printed). --shards
 *     host:port,... uses running servers instead (one backend, "given"); its
 *     tables (rpcb_*) are dropped and re-created.
 *   - Tables: per dim, one table per optimizer that a chosen op uses (pull
 *     reads the SGD table, or with --matrix gpu-vs-cpu the Adam one;
 *     push-adagrad and push+pull the Adagrad one; push-sgd SGD; push-adam
 *     Adam), capacity per shard --capacity (default 2 × universe / shards),
 *     pre-filled untimed with every key of the universe (--universe, default
 *     1,048,576) by inserting pulls, so timed calls find their keys (pulls
 *     create none, pushes update rows).
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
 * --followers N (0..4): each started server gets N followers (ember-server
 * --replica-of it), which tail it during the run and are stopped with it;
 * --ack async|replicated: the tables' acknowledgement (README "Replication and
 * failover"): replicated pushes are answered once one follower holds
 * them. Push keys/s with --followers 0, 1 --ack async and 1 --ack replicated
 * are the cost of each mode.
 *
 * --pooled: pooled lookups (pooled.c): ember_pull_pooled / ember_push_pooled
 * (combiner MEAN) against pooling on the worker (ember_pull, then averaging
 * each bag; a bag's gradient expanded to its keys, then ember_push), for bags
 * of --bag-sizes (default 1,10,100) at each --keys and --dims, with the bytes
 * of each call's messages beside keys/s. Uses the pull table and push-adagrad's.
 *
 * --matrix gpu-vs-cpu: GPU shard servers against CPU ones: ops pull and
 * push-adam on an Adam table, 4,096 and 65,536 distinct uniform keys per call,
 * dim 64 and 128, 1, 4 and 16 clients each on its own 2 connections with 2 calls
 * in flight (1x2, 4x2, 16x2), 2 × 1 s per point after 0.5 s warm-up, 2 M keys
 * per table, the 8-stream loopback ceiling, then its three targets with
 * met/MISSED (gpu keys/s >= cpu's at every shape; gpu server CPU per key <= 1/3
 * of cpu's for Adam pushes at dim 128; 16 clients pulling 4,096 x 64 at >= 80%
 * of the 8-stream ceiling). About 3 minutes on a 16-core machine with both backends;
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
 * default 4; --matrix gpu-vs-cpu: 8), before the servers start and again after they
 * stopped; pull payload is printed as a % of the larger figure of each (this
 * machine may be shared: one moment's ceiling may be low). iperf3 is --iperf
 * PATH, else $EMBER_IPERF3_BIN, else one beside this program, else $PATH;
 * without it the run says so and goes on.
 *
 * docs/BENCHMARKS.md says how to run it, what it is compared with, and the
 * latest figures.
 */
#ifndef EMBER_RPC_BENCH_H
#define EMBER_RPC_BENCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ember/ember.h"

#ifndef EMBER_SERVER_BIN
#define EMBER_SERVER_BIN "ember-server"
#endif

/* ---- what can be measured -------------------------------------------------- */

enum { OP_PULL, OP_PUSH_ADAGRAD, OP_PUSH_SGD, OP_PUSH_ADAM, OP_PUSHPULL, OP_COUNT };
extern const char *const op_cli[OP_COUNT];   /* as --ops names them */
extern const char *const op_label[OP_COUNT]; /* as the output names them */

enum { DIST_UNIFORM, DIST_ZIPF, DIST_ZIPF_DUP, DIST_COUNT };
extern const char *const dist_names[DIST_COUNT];

enum { TAB_SGD, TAB_ADAGRAD, TAB_ADAM, TAB_COUNT };
extern const char *const tab_names[TAB_COUNT];
extern const char *const tab_labels[TAB_COUNT];

/* table backends a started server can be given (--backend of ember-server) */
enum { BK_CPU, BK_GPU, BK_KINDS };
extern const char *const bk_names[BK_KINDS];

/* named matrices (--matrix NAME): a purpose's shapes and defaults */
enum { MATRIX_NONE, MATRIX_GPU_VS_CPU, MATRIX_COUNT };
extern const char *const matrix_names[MATRIX_COUNT];

#define MAX_LIST 16
#define MAX_SERVERS 16
#define MAX_THREADS 256
#define MAX_BACKENDS BK_KINDS
#define MAX_SERVER_ARGS 16
#define MAX_FOLLOWERS 4

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
    int wire_dtype;              /* ember_dtype of the clients' values on the wire */
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
    int matrix;                  /* MATRIX_*: --matrix, or MATRIX_NONE */
    int quick, latency, no_iperf;
    double iperf_seconds;
    int iperf_streams;           /* the multi-stream ceiling's streams */
    double budget_s;             /* 0: none */
    unsigned timeout_ms;
    int pooled;                  /* --pooled: server- against worker-side pooling */
    size_t bag_sizes[MAX_LIST];  /* --bag-sizes */
    int n_bag_sizes;
    unsigned followers;          /* --followers: per started server, tailing it */
    int ack;                     /* --ack: the tables' EMBER_ACK_* */
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

/* ---- request batches --------------------------------------------------------- */

typedef struct keyset {
    size_t n;
    int dist;
    size_t nb;                   /* batches */
    uint64_t *keys;              /* nb × n */
    double distinct_frac;        /* distinct keys / n, averaged over batches */
} keyset;

/* ---- processes: servers, iperf3 --------------------------------------------- */

/* One measurement's shape: op, keys per call, dim, the key batches, its table. */
typedef struct cell {
    int op;
    size_t n;
    uint32_t dim;
    const keyset *ks;
    const char *table;
    const float *grads;          /* n × dim */
    double seconds;
} cell;

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
    server followers[MAX_SERVERS * MAX_FOLLOWERS]; /* --followers per server, in order */
    unsigned nfollowers;
    char shards[MAX_SERVERS * 64 + 1];
    int ports[MAX_SERVERS * 4];  /* the shards' ports, to count connections to them */
    int nports;
    int up;                      /* serving: its measurements run */
    int failures;                /* failed measurements */
    int server_failed;           /* a server died, or would not start or stop cleanly */
    char why_down[256];          /* why it is not (or no longer) up */
} backend;

/* The loopback ceiling at the start (when = 0) or the end (1) of the run, with
 * 1 and --iperf-streams streams; the figures used for "% of loopback" are the
 * larger of the two, so that a noisy moment of a shared machine cannot make
 * ember look closer to the ceiling. */
typedef struct ceiling {
    double bps[2][2];            /* [when][1 stream, N streams], bytes/s; -1 unknown */
} ceiling;

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

/* ---- shared state ------------------------------------------------------------ */

extern volatile sig_atomic_t g_stop;    /* a signal asked to stop measuring */
extern backend g_backends[MAX_BACKENDS];
extern int g_nbackends;
extern char g_gpu_why[256];            /* why the gpu backend is not run, when it is not */
extern ceiling g_ceiling;
extern char g_iperf_version[64];

/* ---- options.c ---------------------------------------------------------------- */

/* Parses the command line into o (exits 2 on a bad one, 0 after --help). */
void parse_opts(bench_opts *o, int argc, char **argv);
/* Which backends to run: --backends, else cpu and, where a GPU is visible, gpu.
 * A gpu request this program cannot check is said and skipped. */
void choose_backends(bench_opts *o);
#ifdef EMBER_BENCH_GPU
int rpc_bench_gpu_count(char *why, size_t cap);   /* gpu.c */
#endif

/* ---- servers.c ---------------------------------------------------------------- */

void kill_children(void);
/* Starts server `s` (shard idx of bk); a follower of replica_of when not NULL. */
int server_start(const bench_opts *o, backend *bk, server *s, unsigned idx,
                 const char *replica_of);
int backend_alive(backend *bk);
int server_stop(server *s, const char *bk, unsigned idx);
int tcp_conns_to_shards(const backend *bk);
double self_cpu_s(void);
double servers_cpu_s(int b, int except);
void measure_ceiling(ctx *x, int when);

/* ---- runs.c ------------------------------------------------------------------- */

void *xmalloc(size_t n);
const keyset *keyset_get(const bench_opts *o, size_t n, int dist);
void keysets_free(void);
void table_name(char *buf, size_t cap, int tab, uint32_t dim);
int op_table(const bench_opts *o, int op);
int create_tables(ctx *x, backend *bk, uint32_t dim);
void drop_tables(ctx *x, backend *bk, uint32_t dim);
void measure(ctx *x, const cell *c0, int dist, conc cc, int b);

/* ---- pooled.c ----------------------------------------------------------------- */

/* --pooled: one shape (n keys in bags of `bag`, dim) on backend b, printed. */
void measure_pooled(ctx *x, size_t n, size_t bag, uint32_t dim, int b);

/* ---- report.c ----------------------------------------------------------------- */

void print_result(const ctx *x, const bench_result *r);
void print_summary(const ctx *x);
void write_csv(const ctx *x);

#endif

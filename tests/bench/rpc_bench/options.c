/* options.c — rpc_bench's command line: the options, their defaults, the named
 * matrices (--matrix), which ember-server and iperf3 to run, and which backends. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc_bench/rpc_bench.h"
#include "server_proc.h"

const char *const op_cli[OP_COUNT] = {"pull", "push-adagrad", "push-sgd", "push-adam",
                                      "pushpull"};
const char *const op_label[OP_COUNT] = {"pull", "push(adagrad)", "push(sgd)", "push(adam)",
                                        "push+pull(adagrad)"};
const char *const dist_names[DIST_COUNT] = {"uniform", "zipf", "zipf-dup"};
const char *const tab_names[TAB_COUNT] = {"sgd", "adagrad", "adam"};
const char *const tab_labels[TAB_COUNT] = {"SGD", "Adagrad", "Adam"};
const char *const bk_names[BK_KINDS] = {"cpu", "gpu"};
const char *const matrix_names[MATRIX_COUNT] = {"none", "gpu-vs-cpu"};

/* what runs when --ops is not given (push-adam is the gpu-vs-cpu matrix's,
 * opt-in elsewhere) */
static const int op_default[OP_COUNT] = {1, 1, 1, 0, 1};


/* ---- options ------------------------------------------------------------------ */

static const char *preset_args(int matrix, int quick, char *buf, size_t cap);

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rpc_bench [options]\n"
            "Pull, push and push+pull through libember against ember-server on loopback, on\n"
            "the cpu and gpu table backends side by side, next to the TCP loopback ceiling\n"
            "(iperf3). See tests/bench/rpc_bench/rpc_bench.h and docs/BENCHMARKS.md.\n\n"
            "  --matrix NAME        a named set of shapes, defaults and targets (below);\n"
            "                       options given beside it win\n"
            "  --quick              short run (with --matrix: every shape, briefly)\n"
            "  --backends LIST      cpu,gpu: a set of servers per backend, the same\n"
            "                       measurements on each (default cpu, and gpu too where a\n"
            "                       GPU is visible%s)\n"
            "  --server PATH        ember-server binary (default $EMBER_SERVER_BIN, else\n"
            "                       %s, else beside this program, else $PATH)\n"
            "  --server-args 'A B'  more flags for every started server (space-separated)\n"
            "  --shards H:P,...     use running servers instead of starting any\n"
            "  --servers N          servers to start per backend (default 1)\n"
            "  --threads N          --threads of each started server (default 2)\n"
            "  --channels N         connections per shard per client; > 1 gives each client\n"
            "                       its own (default 1: shared)\n"
            "  --ops LIST           pull,push-adagrad,push-sgd,push-adam,pushpull (default all\n"
            "                       but push-adam)\n"
            "  --pull-table T       the table pulls read: sgd, adagrad or adam (default sgd)\n"
            "  --wire-dtype T       float32, float16 or bfloat16: the clients' wire_dtype\n"
            "                       (default float32; payload GB/s counts wire bytes)\n"
            "  --keys LIST          keys per request (default 4096,65536)\n"
            "  --latency            also 1 key per request\n"
            "  --dims LIST          (default 64,128)\n"
            "  --dists LIST         uniform,zipf,zipf-dup (default uniform,zipf)\n"
            "  --conc LIST          CxD: C clients, D calls in flight each (default\n"
            "                       1x1,1x4,4x1)\n"
            "  --seconds S          each timed run (default 2)\n"
            "  --warmup S           before each measurement (default 0.5)\n"
            "  --reps N             timed runs per measurement (default 3)\n"
            "  --universe N         keys in the tables (default 1048576)\n"
            "  --capacity N         table capacity per shard (default 2 x universe / shards)\n"
            "  --zipf S             Zipf exponent (default 1.05)\n"
            "  --seed N             (default 42)\n"
            "  --timeout-ms N       deadline of each call (default 60000)\n"
            "  --budget S           skip measurements that would start after S s of measuring\n"
            "                       (default none)\n"
            "  --iperf PATH         iperf3 binary (default $EMBER_IPERF3_BIN, else beside this\n"
            "                       program, else $PATH)\n"
            "  --iperf-seconds S    length of each iperf3 run (default 3)\n"
            "  --iperf-streams N    streams of the multi-stream ceiling (default 4)\n"
            "  --no-iperf           skip the loopback ceiling\n"
            "  --csv FILE           one row per measurement\n"
            "  --pooled             server-side pooling (ember_pull_pooled/ember_push_pooled,\n"
            "                       mean) against worker-side pooling, bytes and keys/s\n"
            "  --bag-sizes LIST     with --pooled: ids per bag (default 1,10,100)\n"
            "  --followers N        followers (--replica-of) per started server, 0..4 (default 0)\n"
            "  --ack MODE           the tables' acknowledgement: async or replicated (default\n"
            "                       async; replicated needs --followers 1 or more)\n"
            "  --help\n\n"
            "What --quick and each matrix stand for (on this machine):\n",
#ifdef EMBER_BENCH_GPU
            "",
#else
            "; this build has no CUDA, so gpu is skipped",
#endif
            EMBER_SERVER_BIN);
    char buf[512];
    fprintf(out, "  --quick: %s\n", preset_args(MATRIX_NONE, 1, buf, sizeof buf));
    for (int m = MATRIX_NONE + 1; m < MATRIX_COUNT; m++) {
        fprintf(out, "  --matrix %s: %s\n", matrix_names[m], preset_args(m, 0, buf, sizeof buf));
        fprintf(out, "  --matrix %s --quick: %s\n", matrix_names[m],
                preset_args(m, 1, buf, sizeof buf));
    }
    fprintf(out, "  gpu-vs-cpu: GPU shard servers against CPU ones, with its three targets\n");
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

/* The options a --matrix or --quick stands for, parsed before the command
 * line's own (so that those win), into buf; NULL when neither is given. */
static const char *preset_args(int matrix, int quick, char *buf, size_t cap)
{
    if (matrix == MATRIX_GPU_VS_CPU) {
        /* GPU shard servers against CPU ones: pull and Adam push on an Adam
         * table, 1/4/16 clients each on its own connections (channels > 1 is
         * what gives a client its own) with 2 calls in flight, server threads
         * half the cores, a realistic table, short points: ~3 minutes with both
         * backends on 16 cores */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(buf, cap,
                 "--ops pull,push-adam --pull-table adam --keys 4096,65536 --dims 64,128 "
                 "--dists uniform --conc 1x2,4x2,16x2 --channels 2 --threads %ld "
                 "--timeout-ms 20000 --iperf-streams 8 %s",
                 cores >= 4 ? cores / 2 : 2,
                 quick ? "--seconds 0.3 --warmup 0.15 --reps 1 --universe 262144 "
                         "--iperf-seconds 1 --budget 90"
                       : "--seconds 1 --warmup 0.5 --reps 2 --universe 2097152 "
                         "--iperf-seconds 2 --budget 210");
        return buf;
    }
    if (quick) {
        /* one shape, every op and both kinds of concurrency, briefly */
        snprintf(buf, cap, "--keys 4096 --dims 64 --dists uniform --conc 1x4,2x1 --seconds 0.3 "
                           "--warmup 0.1 --reps 1 --universe 65536 --iperf-seconds 1");
        return buf;
    }
    return NULL;
}

static void set_defaults(bench_opts *o)
{
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
    o->bag_sizes[0] = 1;
    o->bag_sizes[1] = 10;
    o->bag_sizes[2] = 100;
    o->n_bag_sizes = 3;
}

/* The binaries' flags, which parse_opts resolves after parsing. */
typedef struct bin_flags {
    const char *server, *iperf;
} bin_flags;

/* Parses argv's options into o, over what o holds (exits 2 on a bad one, 0
 * after --help). */
static void parse_args(bench_opts *o, bin_flags *bf, int argc, char **argv)
{
    enum {
        O_SERVER = 256, O_SHARDS, O_SERVERS, O_THREADS, O_CHANNELS, O_OPS, O_KEYS, O_LATENCY,
        O_DIMS, O_DISTS, O_CONC, O_SECONDS, O_WARMUP, O_REPS, O_UNIVERSE, O_CAPACITY, O_ZIPF,
        O_SEED, O_TIMEOUT, O_IPERF_S, O_NO_IPERF, O_CSV, O_QUICK, O_HELP, O_BACKENDS,
        O_MATRIX, O_SERVER_ARGS, O_BUDGET, O_IPERF, O_IPERF_STREAMS, O_PULL_TABLE,
        O_WIRE_DTYPE,
        O_POOLED,
        O_BAG_SIZES, O_FOLLOWERS, O_ACK
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
        {"backends", 1, 0, O_BACKENDS}, {"matrix", 1, 0, O_MATRIX},
        {"server-args", 1, 0, O_SERVER_ARGS}, {"budget", 1, 0, O_BUDGET},
        {"iperf", 1, 0, O_IPERF},       {"iperf-streams", 1, 0, O_IPERF_STREAMS},
        {"pull-table", 1, 0, O_PULL_TABLE},
        {"wire-dtype", 1, 0, O_WIRE_DTYPE},
        {"pooled", 0, 0, O_POOLED},     {"bag-sizes", 1, 0, O_BAG_SIZES},
        {"followers", 1, 0, O_FOLLOWERS}, {"ack", 1, 0, O_ACK},
        {0, 0, 0, 0},
    };
    int c, m[MATRIX_COUNT], tab[TAB_COUNT];
    size_t tmp[MAX_LIST];
    int nt;
    optind = 0; /* glibc: start over (this runs more than once) */
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_SERVER: bf->server = optarg; break;
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
            if (o->channels < 1 || o->channels > 64)
                goto bad;
            break;
        case O_OPS:
            if (parse_list(optarg, op_cli, OP_COUNT, o->ops, "op"))
                exit(2);
            break;
        case O_KEYS:
            if (parse_sizes(optarg, o->keys, &o->n_keys))
                goto bad;
            break;
        case O_LATENCY: o->latency = 1; break;
        case O_DIMS:
            if (parse_sizes(optarg, tmp, &nt))
                goto bad;
            for (int i = 0; i < nt; i++)
                o->dims[i] = (uint32_t)tmp[i];
            o->n_dims = nt;
            break;
        case O_DISTS:
            if (parse_list(optarg, dist_names, DIST_COUNT, o->dists, "distribution"))
                exit(2);
            break;
        case O_CONC:
            if (parse_concs(optarg, o->concs, &o->n_concs))
                goto bad;
            break;
        case O_SECONDS: o->seconds = atof(optarg); break;
        case O_WARMUP: o->warmup = atof(optarg); break;
        case O_REPS: o->reps = atoi(optarg); break;
        case O_UNIVERSE: o->universe = strtoull(optarg, NULL, 10); break;
        case O_CAPACITY: o->capacity = strtoull(optarg, NULL, 10); break;
        case O_ZIPF: o->zipf_s = atof(optarg); break;
        case O_SEED: o->seed = strtoull(optarg, NULL, 10); break;
        case O_TIMEOUT: o->timeout_ms = (unsigned)atoi(optarg); break;
        case O_IPERF_S: o->iperf_seconds = atof(optarg); break;
        case O_IPERF_STREAMS:
            o->iperf_streams = atoi(optarg);
            if (o->iperf_streams < 2 || o->iperf_streams > 128)
                goto bad;
            break;
        case O_IPERF: bf->iperf = optarg; break;
        case O_NO_IPERF: o->no_iperf = 1; break;
        case O_CSV: o->csv = optarg; break;
        case O_POOLED: o->pooled = 1; break;
        case O_BAG_SIZES:
            if (parse_sizes(optarg, o->bag_sizes, &o->n_bag_sizes))
                goto bad;
            break;
        case O_FOLLOWERS:
            o->followers = (unsigned)atoi(optarg);
            if (o->followers > MAX_FOLLOWERS)
                goto bad;
            break;
        case O_ACK:
            if (!strcmp(optarg, "async"))
                o->ack = EMBER_ACK_ASYNC;
            else if (!strcmp(optarg, "replicated"))
                o->ack = EMBER_ACK_REPLICATED;
            else
                goto bad;
            break;
        case O_QUICK: o->quick = 1; break;
        case O_MATRIX:
            if (parse_list(optarg, matrix_names, MATRIX_COUNT, m, "matrix"))
                exit(2);
            o->matrix = MATRIX_NONE;
            for (int i = 0; i < MATRIX_COUNT; i++)
                if (m[i])
                    o->matrix = i;
            break;
        case O_WIRE_DTYPE: {
            static const char *const dt[] = {"float32", "float16", "bfloat16"};
            int i = 0;
            while (i < 3 && strcmp(optarg, dt[i]) != 0)
                i++;
            if (i == 3)
                goto bad;
            o->wire_dtype = i; /* ember_dtype's values */
            break;
        }
        case O_PULL_TABLE:
            if (parse_list(optarg, tab_names, TAB_COUNT, tab, "table"))
                exit(2);
            for (int i = 0; i < TAB_COUNT; i++)
                if (tab[i])
                    o->pull_tab = i;
            break;
        case O_BUDGET:
            o->budget_s = atof(optarg);
            if (o->budget_s < 0)
                goto bad;
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
    return;
bad:
    fprintf(stderr, "rpc_bench: bad option value (see --help)\n");
    exit(2);
}

void parse_opts(bench_opts *o, int argc, char **argv)
{
    bin_flags bf = {NULL, NULL};
    set_defaults(o);
    parse_args(o, &bf, argc, argv);
    /* a matrix or --quick: its options first, then the command line's again */
    static char preset[512];
    if (preset_args(o->matrix, o->quick, preset, sizeof preset)) {
        char *pv[64] = {argv[0]}, *save = NULL;
        int pc = 1;
        for (char *t = strtok_r(preset, " ", &save); t && pc < 63;
             t = strtok_r(NULL, " ", &save))
            pv[pc++] = t;
        pv[pc] = NULL;
        set_defaults(o);
        bf = (bin_flags){NULL, NULL};
        parse_args(o, &bf, pc, pv);
        parse_args(o, &bf, argc, argv);
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
    if (o->pooled) /* its tables: the pull table and push-adagrad's */
        for (int i = 0; i < OP_COUNT; i++)
            o->ops[i] = i == OP_PULL || i == OP_PUSH_ADAGRAD;
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
    o->server_bin = sp_server_bin(bf.server, EMBER_SERVER_BIN, &o->server_bin_from);
    if (!o->shards && !sp_is_executable(o->server_bin)) {
        fprintf(stderr, "rpc_bench: no ember-server to start: '%s' (%s) is not an executable "
                        "file; give --server PATH or EMBER_SERVER_BIN\n",
                o->server_bin, o->server_bin_from);
        exit(2);
    }

    static char iperf_found[4096];
    const char *ienv = getenv("EMBER_IPERF3_BIN");
    if (bf.iperf)
        o->iperf_bin = sp_is_executable(bf.iperf) ? bf.iperf : NULL;
    else if (ienv && *ienv)
        o->iperf_bin = sp_is_executable(ienv) ? ienv : NULL;
    else if (sp_find_program("iperf3", iperf_found, sizeof iperf_found))
        o->iperf_bin = iperf_found;
    if ((bf.iperf || (ienv && *ienv)) && !o->iperf_bin)
        fprintf(stderr, "rpc_bench: iperf3 '%s' is not an executable file\n",
                bf.iperf ? bf.iperf : ienv);
    return;
bad:
    fprintf(stderr, "rpc_bench: bad option value (see --help)\n");
    exit(2);
}

/* Which backends to run: --backends, else cpu and, where a GPU is visible, gpu.
 * A gpu request this program cannot check is said and skipped. */
void choose_backends(bench_opts *o)
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

/* main.c — rpc_bench's run: backends and their servers, the loopback ceiling,
 * every shape measured on every backend in turn, the servers stopped, the
 * report. What it measures and how: rpc_bench.h; how to run it and the
 * figures: docs/BENCHMARKS.md. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_keys.h"
#include "rpc_bench/rpc_bench.h"
#include "server_proc.h"

volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_signals;

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

/* ---- main --------------------------------------------------------------------- */

/* Whether the next measurement may start: not stopped, not over --budget. */
static int may_measure(ctx *x)
{
    if (g_stop)
        return 0;
    if (x->o->budget_s > 0 && sp_now_s() - x->t_start > x->o->budget_s) {
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
    printf("rpc_bench: libember %s; %ld online core(s) on this machine", EMBER_CLIENT_VERSION,
           cores);
    if (o.matrix != MATRIX_NONE)
        printf("; matrix %s%s", matrix_names[o.matrix], o.quick ? " --quick" : "");
    printf("\n");

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
                if (server_start(&o, bk, &bk->servers[i], i, NULL) != 0) {
                    bk->up = 0;
                    bk->server_failed = 1;
                    rc = 1;
                    break;
                }
                bk->nservers = i + 1;
                bk->ports[bk->nports++] = bk->servers[i].port;
                for (unsigned k = 0; k < o.followers && bk->up; k++) {
                    server *f = &bk->followers[bk->nfollowers];
                    if (server_start(&o, bk, f, i, bk->servers[i].addr) != 0) {
                        bk->up = 0;
                        bk->server_failed = 1;
                        rc = 1;
                    } else {
                        bk->nfollowers++;
                    }
                }
                if (!bk->up)
                    break;
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
           "%u%s; deadline %u ms; wire dtype %s\n",
           max_clients, o.channels,
           o.channels > 1 ? " (each client its own connections, calls round-robin over them)"
                          : " (the clients of this process share one connection per shard)",
           o.timeout_ms,
           o.wire_dtype == 1 ? "float16" : o.wire_dtype == 2 ? "bfloat16" : "float32");

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
    x.t_start = sp_now_s();
    for (int di = 0; di < o.n_dims && may_measure(&x); di++) {
        uint32_t dim = o.dims[di];
        int any_up = 0;
        for (int b = 0; b < g_nbackends; b++)
            if (g_backends[b].up && create_tables(&x, &g_backends[b], dim) == 0)
                any_up = 1;
        if (o.pooled && any_up) {
            printf("pooled lookups, dim %u:\n", dim);
            for (int ki = 0; ki < o.n_keys; ki++)
                for (int bi = 0; bi < o.n_bag_sizes; bi++)
                    for (int b = 0; b < g_nbackends; b++)
                        if (g_backends[b].up && may_measure(&x))
                            measure_pooled(&x, o.keys[ki], o.bag_sizes[bi], dim, b);
        }
        for (int op = 0; op < OP_COUNT && any_up && !o.pooled; op++) {
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
        for (unsigned i = 0; i < bk->nfollowers; i++) /* before their leaders */
            if (server_stop(&bk->followers[i], "follower", i) != 0)
                rc = 1;
        for (unsigned i = 0; i < bk->nservers; i++)
            if (server_stop(&bk->servers[i], bk->name, i) != 0)
                rc = 1;
    }

    if (!g_stop)
        measure_ceiling(&x, 1);

    if (!o.pooled) /* --pooled printed its own figures as it went */
        print_summary(&x);
    if (o.csv)
        write_csv(&x);
    if (x.failures)
        printf("\n%d measurement(s) FAILED\n", x.failures);
    free(grads);
    keysets_free();
    free(x.res);
    return rc;
}

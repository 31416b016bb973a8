/* report.c — what rpc_bench prints: one line per measurement, the summary
 * table, the backends side by side, the targets of the shapes measured, and
 * the CSV. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rpc_bench/rpc_bench.h"

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

void print_result(const ctx *x, const bench_result *r)
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

static double pct_of(double gbps, double ceiling_bps)
{
    return ceiling_bps > 0 ? 100.0 * gbps * 1e9 / ceiling_bps : NAN;
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

/* The gpu-vs-cpu matrix's three targets, for the cpu and gpu backends of this
 * run: gpu keys/s >= cpu's at every shape; gpu server CPU per key <= 1/3 of
 * cpu's for Adam pushes at dim 128; 16 clients pulling 4,096 x 64 at >= 80% of
 * the 8-stream loopback ceiling. */
static void print_gpu_vs_cpu_targets(const ctx *x)
{
    const bench_opts *o = x->o;
    int bc = backend_of_kind(BK_CPU), bg = backend_of_kind(BK_GPU);
    printf("\ntargets (matrix gpu-vs-cpu: GPU shard servers against CPU ones), this run:\n");
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
               o->iperf_streams != 8 ? " (but the target's ceiling is 8 streams)" : "");
    printf("  reference (docs/BENCHMARKS.md, lent H200, 16 cores): loopback 4.6 GB/s with 1 "
           "stream, 6.4 GB/s with 8; plain gRPC, no table, 16 clients: 6.2 GB/s\n");
}

/* The one-client targets (docs/BENCHMARKS.md), per backend: pull 4,096 x 64
 * >= 6 M keys/s, push(adagrad) 4,096 x 64 >= 5 M keys/s, pull 65,536 x 64 >=
 * 60% of the 1-stream loopback ceiling; one client, up to 4 calls in flight. */
static void print_one_client_targets(const ctx *x)
{
    printf("\ntargets (docs/BENCHMARKS.md), one client, up to 4 calls in flight, "
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
    printf("  reference (docs/BENCHMARKS.md, same kind of machine): ps-lite is compared side "
           "by side as paired ratios; iperf3 1 stream ~2.73 GB/s\n");
}

void print_summary(const ctx *x)
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
    int gpu_vs_cpu = o->matrix == MATRIX_GPU_VS_CPU;
    if (x->nres && (g_nbackends > 1 || gpu_vs_cpu))
        print_side_by_side(x);
    if (gpu_vs_cpu || (backend_of_kind(BK_CPU) >= 0 && backend_of_kind(BK_GPU) >= 0))
        print_gpu_vs_cpu_targets(x);
    if (!gpu_vs_cpu)
        print_one_client_targets(x);
}

void write_csv(const ctx *x)
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

/*
 * watch.c — `emberctl stats --watch`: GetStats every interval, shown with the
 * per-second rates of the traffic counters between refreshes (see ctl.h).
 *
 * A rate is computed per shard, from that shard's previous answer: the counters'
 * deltas over the time between the two answers (each answer timed at the middle
 * of its fan-out). A shard seen for the first time, one whose server restarted
 * (its uptime went back) or whose counter went back (the table was dropped and
 * made again) has no rate this refresh; "all" sums the rates of the shards that
 * have one. Counter totals are summed as plain `stats` sums them.
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ember/v1/ember.pb-c.h"

#define ADMIN "/ember.v1.Admin/"
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The counters that get rates: their names in --json and their columns. */
enum { W_PULLS, W_PUSHES, W_KEYS_PULLED, W_KEYS_PUSHED, W_NRATES };
static const char *const rate_names[W_NRATES] = {"pulls", "pushes", "keys_pulled",
                                                 "keys_pushed"};

/* The one mutable global of emberctl: a signal handler can write nothing else.
 * It stops the watch after the refresh in progress. */
static volatile sig_atomic_t watch_stop;

static void on_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

/* One table on one shard as last seen (name "" : the server's own counters). */
typedef struct w_seen {
    char *name;
    unsigned shard;
    uint64_t v[W_NRATES];
    uint64_t uptime;
    double t;
} w_seen;

typedef struct watch {
    const ctl *c;
    double interval;
    w_seen *seen;
    size_t n_seen, cap_seen;
    ctl_reply *last_error;   /* [c->n]: each shard's last failure (code 0: it answered) */
    unsigned char *answered; /* [c->n]: the shard answered at least once */
} watch;

/* ---- rates ------------------------------------------------------------------------- */

/* Per-second rates of v[0..k) for `name` on `shard` since it was last seen, into
 * rate[] (NaN where there is none), and remembers v. Returns 1 when rates were
 * computed, 0 when not (first sighting, restart, a counter went back, out of
 * memory). */
static int w_rates(watch *w, const char *name, unsigned shard, const uint64_t *v, unsigned k,
                   uint64_t uptime, double t, double *rate)
{
    w_seen *s = NULL;
    for (size_t i = 0; i < w->n_seen && !s; i++)
        if (w->seen[i].shard == shard && strcmp(w->seen[i].name, name) == 0)
            s = &w->seen[i];
    int ok = s && uptime >= s->uptime && t > s->t;
    for (unsigned i = 0; ok && i < k; i++)
        ok = v[i] >= s->v[i];
    for (unsigned i = 0; i < k; i++)
        rate[i] = ok ? (double)(v[i] - s->v[i]) / (t - s->t) : NAN;
    if (!s) {
        if (w->n_seen == w->cap_seen) {
            size_t cap = w->cap_seen ? 2 * w->cap_seen : 16;
            w_seen *ns = realloc(w->seen, cap * sizeof *ns);
            if (!ns)
                return 0;
            w->seen = ns;
            w->cap_seen = cap;
        }
        s = &w->seen[w->n_seen];
        memset(s, 0, sizeof *s);
        if (!(s->name = strdup(name)))
            return 0;
        s->shard = shard;
        w->n_seen++;
    }
    memcpy(s->v, v, k * sizeof *v);
    s->uptime = uptime;
    s->t = t;
    return ok;
}

static void table_counters(const Ember__V1__TableStats *s, uint64_t *v)
{
    v[W_PULLS] = s->pulls;
    v[W_PUSHES] = s->pushes;
    v[W_KEYS_PULLED] = s->keys_pulled;
    v[W_KEYS_PUSHED] = s->keys_pushed;
}

/* ---- one refresh, gathered ------------------------------------------------------------ */

/* A table with its stats and rates on each shard that answered. */
typedef struct w_table {
    const char *name;
    const Ember__V1__TableStats **on;  /* [c->n], NULL where absent or failed */
    double (*rate)[W_NRATES];          /* [c->n], NaN where none */
    Ember__V1__TableStats total;
    double total_rate[W_NRATES];       /* the sum of the shards' rates; NaN: none had one */
} w_table;

typedef struct w_refresh {
    unsigned number;
    double t, elapsed;                 /* elapsed: since the previous refresh; NaN on the first */
    struct timespec wall;
    w_table *tables;
    size_t n_tables;
    double *req_rate;                  /* [c->n]: requests per second per server */
} w_refresh;

static int w_table_cmp(const void *a, const void *b)
{
    return strcmp(((const w_table *)a)->name, ((const w_table *)b)->name);
}

static void w_refresh_free(w_refresh *f)
{
    for (size_t i = 0; i < f->n_tables; i++) {
        free(f->tables[i].on);
        free(f->tables[i].rate);
    }
    free(f->tables);
    free(f->req_rate);
    memset(f, 0, sizeof *f);
}

/* Groups the replies' tables by name (sorted) and computes the rates. Returns 0,
 * or -1 out of memory. */
static int w_gather(watch *w, const ctl_reply *r, w_refresh *f)
{
    const ctl *c = w->c;
    size_t cap = 0;
    if (!(f->req_rate = calloc(c->n, sizeof *f->req_rate)))
        return -1;
    for (unsigned s = 0; s < c->n; s++) {
        f->req_rate[s] = NAN;
        if (r[s].code != 0)
            continue;
        const Ember__V1__GetStatsResponse *g = (const Ember__V1__GetStatsResponse *)r[s].msg;
        uint64_t v[W_NRATES] = {g->requests};
        double rate[W_NRATES];
        w_rates(w, "", s, v, 1, g->uptime_seconds, f->t, rate);
        f->req_rate[s] = rate[0];
        for (size_t k = 0; k < g->n_tables; k++) {
            const Ember__V1__TableInfo *ti = g->tables[k];
            size_t i = 0;
            while (i < f->n_tables && strcmp(f->tables[i].name, ti->name) != 0)
                i++;
            if (i == f->n_tables) {
                if (f->n_tables == cap) {
                    size_t ncap = cap ? 2 * cap : 8;
                    w_table *nt = realloc(f->tables, ncap * sizeof *nt);
                    if (!nt)
                        return -1;
                    f->tables = nt;
                    cap = ncap;
                }
                static const Ember__V1__TableStats zero = EMBER__V1__TABLE_STATS__INIT;
                w_table *t = &f->tables[f->n_tables++];
                memset(t, 0, sizeof *t);
                t->name = ti->name;
                t->total = zero;
                t->on = calloc(c->n, sizeof *t->on);
                t->rate = calloc(c->n, sizeof *t->rate);
                if (!t->on || !t->rate)
                    return -1;
                for (unsigned x = 0; x < c->n; x++)
                    for (unsigned q = 0; q < W_NRATES; q++)
                        t->rate[x][q] = NAN;
            }
            w_table *t = &f->tables[i];
            if (!ti->stats)
                continue;
            t->on[s] = ti->stats;
            ctl_stats_add(&t->total, ti->stats);
            table_counters(ti->stats, v);
            w_rates(w, ti->name, s, v, W_NRATES, g->uptime_seconds, f->t, t->rate[s]);
        }
    }
    for (size_t i = 0; i < f->n_tables; i++) {
        w_table *t = &f->tables[i];
        for (unsigned q = 0; q < W_NRATES; q++) {
            t->total_rate[q] = NAN;
            for (unsigned s = 0; s < c->n; s++)
                if (!isnan(t->rate[s][q]))
                    t->total_rate[q] = (isnan(t->total_rate[q]) ? 0 : t->total_rate[q]) +
                                       t->rate[s][q];
        }
    }
    if (f->n_tables)
        qsort(f->tables, f->n_tables, sizeof *f->tables, w_table_cmp);
    return 0;
}

/* ---- output ---------------------------------------------------------------------------- */

/* "-" for no rate; one decimal below 100 a second, whole counts above. */
static char *fmt_rate(char *buf, size_t n, double r)
{
    if (isnan(r))
        snprintf(buf, n, "-");
    else if (r < 100)
        snprintf(buf, n, "%.1f", r);
    else
        ctl_fmt_count(buf, n, (uint64_t)llround(r));
    return buf;
}

static void json_rates(ctl_json *j, const double *rate)
{
    ctl_json_object(j, "rates_per_second");
    for (unsigned q = 0; q < W_NRATES; q++)
        ctl_json_double(j, rate_names[q], rate[q]);
    ctl_json_end_object(j);
}

/* One JSON object on one line: the `stats --json` document, plus the refresh's
 * number, time, interval and elapsed time, and rates. */
static void print_json(const watch *w, const ctl_reply *r, const w_refresh *f)
{
    const ctl *c = w->c;
    ctl_json j;
    char when[64];
    struct tm tm;
    gmtime_r(&f->wall.tv_sec, &tm);
    size_t len = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + len, sizeof when - len, ".%03ldZ", f->wall.tv_nsec / 1000000);

    ctl_json_init(&j, stdout);
    ctl_json_object(&j, NULL);
    ctl_json_u64(&j, "refresh", f->number);
    ctl_json_str(&j, "time", when);
    ctl_json_float(&j, "interval_seconds", (float)w->interval);
    ctl_json_double(&j, "elapsed_seconds", f->elapsed);
    ctl_json_array(&j, "tables");
    for (size_t k = 0; k < f->n_tables; k++) {
        const w_table *t = &f->tables[k];
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "name", t->name);
        ctl_json_stats(&j, "total", &t->total);
        json_rates(&j, t->total_rate);
        ctl_json_array(&j, "shards");
        for (unsigned i = 0; i < c->n; i++) {
            if (!t->on[i])
                continue;
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_stats(&j, "stats", t->on[i]);
            json_rates(&j, t->rate[i]);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_end_object(&j);
    }
    ctl_json_end_array(&j);
    ctl_json_stats_servers(&j, c, r, f->req_rate);
    ctl_json_errors(&j, r, c->n);
    ctl_json_end_object(&j);
    ctl_json_finish(&j);
}

static void print_table(const ctl *c, const ctl_reply *r, const w_table *t)
{
    static const char *const head[] = {
        ">SHARD",  "ADDRESS",      ">SIZE",        ">LOAD",    ">PULLS",
        ">PUSHES", ">KEYS PULLED", ">KEYS PUSHED", ">PULLS/S", ">PUSHES/S",
        ">KEYS PULLED/S", ">KEYS PUSHED/S"};
    ctl_table tb;
    char b[4][32];
    unsigned present = 0;
    for (unsigned i = 0; i < c->n; i++)
        present += t->on[i] != NULL;
    ctl_table_init(&tb, COUNT(head), head);
    for (unsigned i = 0; i <= c->n; i++) {
        const Ember__V1__TableStats *s = &t->total;
        const double *rate = t->total_rate;
        if (i < c->n) {
            if (!t->on[i])
                continue;
            s = t->on[i];
            rate = t->rate[i];
            ctl_table_add(&tb, "%u", r[i].shard->index);
            ctl_table_add(&tb, "%s", r[i].shard->address);
        } else {
            if (present < 2)
                break;
            ctl_table_add(&tb, "all");
            ctl_table_add(&tb, "%s", "");
        }
        ctl_table_add(&tb, "%s", ctl_fmt_count(b[0], sizeof b[0], s->size));
        ctl_table_add(&tb, "%.3f", s->load_factor);
        ctl_table_add(&tb, "%s", ctl_fmt_count(b[0], sizeof b[0], s->pulls));
        ctl_table_add(&tb, "%s", ctl_fmt_count(b[1], sizeof b[1], s->pushes));
        ctl_table_add(&tb, "%s", ctl_fmt_count(b[2], sizeof b[2], s->keys_pulled));
        ctl_table_add(&tb, "%s", ctl_fmt_count(b[3], sizeof b[3], s->keys_pushed));
        for (unsigned q = 0; q < W_NRATES; q++)
            ctl_table_add(&tb, "%s", fmt_rate(b[q], sizeof b[q], rate[q]));
    }
    ctl_table_print(&tb, stdout, 2);
}

/* The refresh for people: a header (the screen cleared first on a terminal, a
 * timestamp line otherwise), a table per table, and the servers, failed ones
 * with their error. */
static void print_human(const watch *w, const ctl_args *a, const ctl_reply *r,
                        const w_refresh *f, int tty)
{
    const ctl *c = w->c;
    char when[64], b[4][32];
    struct tm tm;
    localtime_r(&f->wall.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
    if (tty)
        printf("\033[H\033[2J"
               "every %gs: emberctl stats%s%s, %u shard%s    %s\n\n",
               w->interval, a->n_pos ? " " : "", a->n_pos ? a->pos[0] : "", c->n,
               c->n == 1 ? "" : "s", when);
    else
        printf("--- %s  refresh %u, every %gs ---\n", when, f->number, w->interval);
    for (size_t k = 0; k < f->n_tables; k++) {
        printf("table %s\n", f->tables[k].name);
        print_table(c, r, &f->tables[k]);
        printf("\n");
    }
    if (f->n_tables == 0 && a->n_pos == 0)
        printf("no tables\n\n");
    static const char *const head[] = {">SHARD",  "ADDRESS", ">REQUESTS", ">REQUESTS/S",
                                       ">ERRORS", ">UPTIME", "STATUS"};
    ctl_table t;
    ctl_table_init(&t, COUNT(head), head);
    for (unsigned i = 0; i < c->n; i++) {
        ctl_table_add(&t, "%u", r[i].shard->index);
        ctl_table_add(&t, "%s", r[i].shard->address);
        if (r[i].code != 0) {
            for (int k = 0; k < 4; k++)
                ctl_table_add(&t, "-");
            ctl_table_add(&t, "%s: %s", ember_code_name(r[i].code), r[i].message);
            continue;
        }
        const Ember__V1__GetStatsResponse *s = (const Ember__V1__GetStatsResponse *)r[i].msg;
        ctl_table_add(&t, "%s", ctl_fmt_count(b[0], sizeof b[0], s->requests));
        ctl_table_add(&t, "%s", fmt_rate(b[1], sizeof b[1], f->req_rate[i]));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[2], sizeof b[2], s->errors));
        ctl_table_add(&t, "%s", ctl_fmt_duration(b[3], sizeof b[3], s->uptime_seconds));
        ctl_table_add(&t, "ok");
    }
    printf("servers\n");
    ctl_table_print(&t, stdout, 2);
    if (!tty)
        printf("\n");
    fflush(stdout);
}

/* ---- the loop ---------------------------------------------------------------------------- */

/* "2", "0.5": seconds in 0.1..86400. -1 after a usage message. */
static int parse_seconds(const ctl_args *a, const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || end == s || *end || errno || !isfinite(v) || *s == ' ') {
        ctl_usage_error(a, "%s '%s': not a number of seconds (put TABLE before %s)", opt, s,
                        opt);
        return -1;
    }
    if (v < 0.1 || v > 86400) {
        ctl_usage_error(a, "%s %s: the interval must be 0.1..86400 seconds", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Sleeps until `until` on ctl_now()'s clock, or until a signal stops the watch. */
static void sleep_until(double until)
{
    for (double left; !watch_stop && (left = until - ctl_now()) > 0;) {
        double d = left < 0.1 ? left : 0.1;  /* wakes to see a signal another thread took */
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int ctl_stats_watch(ctl *c, const ctl_args *a)
{
    Ember__V1__GetStatsRequest req = EMBER__V1__GET_STATS_REQUEST__INIT;
    const char *ws = ctl_opt(a, "--watch"), *cs = ctl_opt(a, "--count");
    watch w = {.c = c, .interval = 2};
    uint64_t count = 0;
    int rc = CTL_EXIT_OK;

    if (!ws)
        return ctl_usage_error(a, "--count needs --watch");
    if (*ws && parse_seconds(a, "--watch", ws, &w.interval) != 0)
        return CTL_EXIT_USAGE;
    if (cs && ctl_parse_u64(a, "--count", cs, 1, UINT32_MAX, &count) != 0)
        return CTL_EXIT_USAGE;
    if (a->n_pos > 0)
        req.table = (char *)a->pos[0];

    ctl_reply *r = calloc(c->n ? c->n : 1, sizeof *r);
    w.last_error = calloc(c->n ? c->n : 1, sizeof *w.last_error);
    w.answered = calloc(c->n ? c->n : 1, 1);
    if (!r || !w.last_error || !w.answered) {
        fprintf(stderr, "emberctl: out of memory\n");
        rc = CTL_EXIT_RPC;
        goto out;
    }
    /* SA_RESETHAND: a second ^C during a slow refresh ends emberctl at once. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    watch_stop = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int tty = !c->json && isatty(STDOUT_FILENO);
    double next = ctl_now(), prev_t = NAN;
    for (unsigned number = 1;; number++) {
        w_refresh f = {.number = number};
        double t0 = ctl_now();
        ctl_call(c, ADMIN "GetStats", &req.base, &ember__v1__get_stats_response__descriptor, 0,
                 r);
        f.t = (t0 + ctl_now()) / 2;
        f.elapsed = f.t - prev_t;  /* NaN on the first */
        prev_t = f.t;
        clock_gettime(CLOCK_REALTIME, &f.wall);
        for (unsigned i = 0; i < c->n; i++) {
            if (r[i].code == 0) {
                w.answered[i] = 1;
            } else {
                w.last_error[i] = r[i];
                w.last_error[i].msg = NULL;
            }
        }
        if (w_gather(&w, r, &f) != 0) {
            fprintf(stderr, "emberctl: out of memory\n");
            w_refresh_free(&f);
            rc = CTL_EXIT_RPC;
            goto out;
        }
        if (c->json)
            print_json(&w, r, &f);
        else
            print_human(&w, a, r, &f, tty);
        w_refresh_free(&f);
        ctl_replies_free(r, c->n);
        if ((count && number >= count) || watch_stop)
            break;
        /* On the interval's ticks; a refresh slower than the interval is not
         * made up for by a burst of quick ones. */
        next += w.interval;
        if (next < ctl_now())
            next = ctl_now();
        sleep_until(next);
        if (watch_stop)
            break;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    for (unsigned i = 0; i < c->n; i++)
        if (w.answered[i])
            w.last_error[i].code = 0;
    rc = ctl_report(w.last_error, c->n);
out:
    for (size_t i = 0; i < w.n_seen; i++)
        free(w.seen[i].name);
    free(w.seen);
    free(w.last_error);
    free(w.answered);
    free(r);
    return rc;
}

/* metrics.c — counters, the exposition text, and the HTTP endpoint (metrics.h). */
#include "server/metrics.h"
#include "server/repl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/log.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0"
#endif

/* gRPC's status codes: OK (0) .. UNAUTHENTICATED (16). */
#define N_CODES 17

/* Latency buckets, 50 µs to 10 s: a pull of a few keys on an idle shard is tens
 * of µs, a Save or an Import of a large table seconds. */
static const uint64_t lat_le_ns[] = {
    50000,    100000,    250000,    500000,     1000000,    2500000,
    5000000,  10000000,  25000000,  50000000,   100000000,  250000000,
    500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u,
};
static const char *const lat_le[] = {
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",  "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",
};
#define N_LAT (sizeof lat_le_ns / sizeof lat_le_ns[0])

/* Keys per Shard call, powers of 4 up to the default --max-keys-per-request. */
static const uint64_t keys_le[] = {1,    4,     16,    64,     256,    1024,
                                   4096, 16384, 65536, 262144, 1048576};
#define N_KEYS (sizeof keys_le / sizeof keys_le[0])

/* Counted per bucket (not cumulative: one add per observation); the last slot
 * is +Inf. Made cumulative when rendered. */
typedef struct lat_hist {
    atomic_uint_fast64_t mh_bucket[N_LAT + 1];
    atomic_uint_fast64_t mh_sum_ns;
} lat_hist;

typedef struct keys_hist {
    atomic_uint_fast64_t mk_bucket[N_KEYS + 1];
    atomic_uint_fast64_t mk_sum;
} keys_hist;

/* One per process, like `srv`. SRV_M_UNKNOWN (unregistered methods) has a row. */
static struct {
    atomic_uint_fast64_t calls[SRV_M_COUNT + 1][N_CODES];
    lat_hist lat[SRV_M_COUNT + 1];
    keys_hist keys[SRV_KEYS_METRICS]; /* by the method table's keys_metric */
    atomic_uint_fast64_t keys_pulled, keys_pushed;
    struct MHD_Daemon *daemon;
} mx;

/* ---- hooks --------------------------------------------------------------- */

static void add(atomic_uint_fast64_t *a, uint64_t v)
{
    atomic_fetch_add_explicit(a, v, memory_order_relaxed);
}

void srv_metrics_call(srv_method m, int code, const struct timespec *started)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)(now.tv_sec - started->tv_sec) * 1000000000 +
                 (now.tv_nsec - started->tv_nsec);
    uint64_t d = ns > 0 ? (uint64_t)ns : 0;
    if ((unsigned)m > SRV_M_UNKNOWN)
        m = SRV_M_UNKNOWN;
    if (code < 0 || code >= N_CODES)
        code = EMBER_UNKNOWN;
    size_t b = 0;
    while (b < N_LAT && d > lat_le_ns[b])
        b++;
    add(&mx.calls[m][code], 1);
    add(&mx.lat[m].mh_bucket[b], 1);
    add(&mx.lat[m].mh_sum_ns, d);
}

void srv_metrics_keys(srv_method m, uint64_t keys, uint64_t pulled, uint64_t pushed)
{
    int k = (unsigned)m < SRV_M_COUNT ? srv_methods[m].keys_metric : -1;
    if (k < 0)
        return;
    size_t b = 0;
    while (b < N_KEYS && keys > keys_le[b])
        b++;
    add(&mx.keys[k].mk_bucket[b], 1);
    add(&mx.keys[k].mk_sum, keys);
    if (pulled)
        add(&mx.keys_pulled, pulled);
    if (pushed)
        add(&mx.keys_pushed, pushed);
}

/* ---- the text ------------------------------------------------------------ */

/* A growing string; `oom` sticks after a failed grow (later appends do nothing). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        if (b->oom)
            return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
}

/* A label value, escaped as the format asks (\\, \", \n). Table names cannot
 * hold those, but the text must stay parseable whatever a name becomes. */
static void sb_label(sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *s);
    }
}

static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t get(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double real_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void render_process(sbuf *b)
{
    /* srv.started is set as the gRPC port opens, just after this endpoint's */
    double up = !atomic_load_explicit(&srv.started_set, memory_order_acquire) ? 0
                : mono_s() - ((double)srv.started.tv_sec + (double)srv.started.tv_nsec / 1e9);
    family(b, "ember_build_info", "gauge",
           "Always 1; the labels say the version, the backend served and the shard.");
    sb_printf(b,
              "ember_build_info{version=\"%s\",backend=\"%s\",shard_index=\"%u\","
              "shard_count=\"%u\"} 1\n",
              EMBER_VERSION, srv.backend.name, srv.cfg.shard_index, srv.cfg.shard_count);
    family(b, "ember_start_time_seconds", "gauge",
           "When the server started, in seconds since the Unix epoch.");
    sb_printf(b, "ember_start_time_seconds %.3f\n", real_s() - up);
    family(b, "ember_uptime_seconds", "gauge", "Seconds since the server started.");
    sb_printf(b, "ember_uptime_seconds %.3f\n", up);
    family(b, "ember_live_calls", "gauge", "Calls in progress (matched, not yet ended).");
    sb_printf(b, "ember_live_calls %ld\n", atomic_load(&srv.live_calls));

    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    family(b, "ember_resident_memory_bytes", "gauge",
           "Host memory the process holds (resident set size).");
    sb_printf(b, "ember_resident_memory_bytes %lld\n", (long long)rss * sysconf(_SC_PAGESIZE));
    if (srv.backend.gpu >= 0) {
        family(b, "ember_device_memory_bytes", "gauge",
               "The GPU's global memory, total and free now (gpu backend only).");
        sb_printf(b, "ember_device_memory_bytes{gpu=\"%d\",state=\"total\"} %llu\n",
                  srv.backend.gpu, (unsigned long long)srv.backend.device_memory);
        sb_printf(b, "ember_device_memory_bytes{gpu=\"%d\",state=\"free\"} %llu\n",
                  srv.backend.gpu, (unsigned long long)srv_backend_memory_free(&srv.backend));
    }
}

/* Replication (repl.h): the role, a follower's lag, a leader's followers and
 * its replicated pushes. */
static void render_replication(sbuf *b)
{
    uint64_t lag_v, lag_ms, parked, acked, failed;
    srv_follow_lag(&lag_v, &lag_ms);
    srv_repl_counts(&parked, &acked, &failed);
    srv_repl_follower fl[SRV_REPL_MAX_FOLLOWERS];
    size_t nf = srv_repl_followers(fl, SRV_REPL_MAX_FOLLOWERS);
    family(b, "ember_replication_follower", "gauge",
           "1 on a follower (--replica-of), 0 on a leader.");
    sb_printf(b, "ember_replication_follower %d\n", srv_follow_active());
    family(b, "ember_replication_fenced", "gauge",
           "1 on a leader that learned of a newer leader's term (it refuses writes).");
    sb_printf(b, "ember_replication_fenced %d\n", srv_follow_role_id() == SRV_REPL_FENCED);
    family(b, "ember_replication_term", "gauge", "The leader term this server is at.");
    sb_printf(b, "ember_replication_term %llu\n", (unsigned long long)srv_follow_term());
    family(b, "ember_replication_lag_versions", "gauge",
           "A follower's table versions behind its leader, summed over tables (0 on a leader).");
    sb_printf(b, "ember_replication_lag_versions %llu\n", (unsigned long long)lag_v);
    family(b, "ember_replication_lag_seconds", "gauge",
           "A follower's age of its newest complete copy of every table (0 on a leader).");
    sb_printf(b, "ember_replication_lag_seconds %.3f\n", (double)lag_ms / 1e3);
    family(b, "ember_replication_followers", "gauge",
           "A leader's followers with a progress request in the last minute.");
    sb_printf(b, "ember_replication_followers %zu\n", nf);
    family(b, "ember_replication_follower_lag_versions", "gauge",
           "A leader's view of each follower: versions behind, summed over tables.");
    for (size_t i = 0; i < nf; i++) {
        sb_printf(b, "ember_replication_follower_lag_versions{follower=\"");
        sb_label(b, fl[i].addr);
        sb_printf(b, "\",id=\"");
        sb_label(b, fl[i].id);
        sb_printf(b, "\"} %llu\n", (unsigned long long)fl[i].lag_versions);
    }
    family(b, "ember_replicated_pushes_waiting", "gauge",
           "Replicated pushes applied and waiting for their followers now.");
    sb_printf(b, "ember_replicated_pushes_waiting %llu\n", (unsigned long long)parked);
    family(b, "ember_replicated_pushes_total", "counter",
           "Replicated pushes answered: acknowledged (ok) or not (failed: too few "
           "followers had them in time).");
    sb_printf(b, "ember_replicated_pushes_total{result=\"ok\"} %llu\n", (unsigned long long)acked);
    sb_printf(b, "ember_replicated_pushes_total{result=\"failed\"} %llu\n",
              (unsigned long long)failed);
}

static void render_calls(sbuf *b)
{
    family(b, "ember_requests_total", "counter",
           "Calls ended, by method and gRPC status code (refused ones included).");
    for (int m = 0; m <= SRV_M_UNKNOWN; m++)
        for (int code = 0; code < N_CODES; code++) {
            uint64_t v = get(&mx.calls[m][code]);
            /* OK of every method from the start, so rates have a first sample;
             * other codes once they happen */
            if (!v && (code || m == SRV_M_UNKNOWN))
                continue;
            sb_printf(b, "ember_requests_total{method=\"%s\",code=\"%s\"} %llu\n",
                      srv_method_name((srv_method)m), ember_status_name(code),
                      (unsigned long long)v);
        }

    family(b, "ember_request_duration_seconds", "histogram",
           "Time from a call's arrival to its status being sent, by method.");
    for (int m = 0; m <= SRV_M_UNKNOWN; m++) {
        const lat_hist *h = &mx.lat[m];
        uint64_t n[N_LAT + 1], total = 0;
        for (size_t i = 0; i <= N_LAT; i++)
            total += n[i] = get(&h->mh_bucket[i]);
        if (m == SRV_M_UNKNOWN && !total)
            continue;
        const char *name = srv_method_name((srv_method)m);
        uint64_t cum = 0;
        for (size_t i = 0; i < N_LAT; i++) {
            cum += n[i];
            sb_printf(b, "ember_request_duration_seconds_bucket{method=\"%s\",le=\"%s\"} %llu\n",
                      name, lat_le[i], (unsigned long long)cum);
        }
        sb_printf(b, "ember_request_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"} %llu\n",
                  name, (unsigned long long)total);
        sb_printf(b, "ember_request_duration_seconds_sum{method=\"%s\"} %.9f\n", name,
                  (double)get(&h->mh_sum_ns) / 1e9);
        sb_printf(b, "ember_request_duration_seconds_count{method=\"%s\"} %llu\n", name,
                  (unsigned long long)total);
    }

    family(b, "ember_request_keys", "histogram",
           "Keys per Pull, Push, PushPull and Erase served (a PushPull's pull and push "
           "keys together): the batch sizes clients send.");
    for (int m = 0; m < SRV_M_COUNT; m++) {
        if (srv_methods[m].keys_metric < 0)
            continue;
        const keys_hist *h = &mx.keys[srv_methods[m].keys_metric];
        const char *name = srv_methods[m].name;
        uint64_t cum = 0;
        for (size_t i = 0; i < N_KEYS; i++) {
            cum += get(&h->mk_bucket[i]);
            sb_printf(b, "ember_request_keys_bucket{method=\"%s\",le=\"%llu\"} %llu\n", name,
                      (unsigned long long)keys_le[i], (unsigned long long)cum);
        }
        cum += get(&h->mk_bucket[N_KEYS]);
        sb_printf(b, "ember_request_keys_bucket{method=\"%s\",le=\"+Inf\"} %llu\n", name,
                  (unsigned long long)cum);
        sb_printf(b, "ember_request_keys_sum{method=\"%s\"} %llu\n", name,
                  (unsigned long long)get(&h->mk_sum));
        sb_printf(b, "ember_request_keys_count{method=\"%s\"} %llu\n", name,
                  (unsigned long long)cum);
    }
    family(b, "ember_keys_pulled_total", "counter",
           "Keys pulled by Pull and PushPull, every table (dropped ones included).");
    sb_printf(b, "ember_keys_pulled_total %llu\n", (unsigned long long)get(&mx.keys_pulled));
    family(b, "ember_keys_pushed_total", "counter",
           "Keys pushed and applied by Push and PushPull (duplicates not), every table.");
    sb_printf(b, "ember_keys_pushed_total %llu\n", (unsigned long long)get(&mx.keys_pushed));
}

/* One table's figures, read once per scrape so that every family shows the same
 * moment of it. */
typedef struct table_row {
    const srv_table *t;
    ember_table_stats s;
} table_row;

/* A per-table family whose value is an integer field of the row (or of its
 * counters), emitted for every table. */
#define TABLE_FAMILY(fam, type, help, expr)                                            \
    do {                                                                               \
        family(b, fam, type, help);                                                    \
        for (size_t i = 0; i < n; i++) {                                               \
            const table_row *r = &rows[i];                                             \
            sb_printf(b, fam "{table=\"");                                             \
            sb_label(b, r->t->name);                                                   \
            sb_printf(b, "\"} %llu\n", (unsigned long long)(expr));                    \
        }                                                                              \
    } while (0)

static void table_sample(sbuf *b, const char *name, const srv_table *t, const char *more,
                         const char *fmt_value, double v)
{
    sb_printf(b, "%s{table=\"", name);
    sb_label(b, t->name);
    sb_printf(b, "\"%s} ", more);
    sb_printf(b, fmt_value, v);
    sb_printf(b, "\n");
}

static void render_tables(sbuf *b, const table_row *rows, size_t n)
{
    family(b, "ember_tables", "gauge", "Tables on this shard.");
    sb_printf(b, "ember_tables %zu\n", n);
    TABLE_FAMILY("ember_table_rows", "gauge", "Keys stored.", r->s.size);
    TABLE_FAMILY("ember_table_capacity_rows", "gauge", "Slots: the most keys the table holds.",
                 r->s.capacity);
    family(b, "ember_table_load_factor", "gauge", "Rows / capacity.");
    for (size_t i = 0; i < n; i++)
        table_sample(b, "ember_table_load_factor", rows[i].t, "", "%.6f", rows[i].s.load_factor);
    family(b, "ember_table_memory_bytes", "gauge",
           "Memory the table holds, in host memory and in device memory (HBM).");
    for (size_t i = 0; i < n; i++) {
        table_sample(b, "ember_table_memory_bytes", rows[i].t, ",memory=\"host\"", "%.0f",
                     (double)rows[i].s.bytes_host);
        table_sample(b, "ember_table_memory_bytes", rows[i].t, ",memory=\"device\"", "%.0f",
                     (double)rows[i].s.bytes_device);
    }
    family(b, "ember_table_slots", "gauge",
           "Slots whose rows live in device memory and in host memory.");
    for (size_t i = 0; i < n; i++) {
        table_sample(b, "ember_table_slots", rows[i].t, ",memory=\"host\"", "%.0f",
                     (double)rows[i].s.slots_host);
        table_sample(b, "ember_table_slots", rows[i].t, ",memory=\"device\"", "%.0f",
                     (double)rows[i].s.slots_device);
    }
    TABLE_FAMILY("ember_table_evictions_total", "counter",
                 "Keys pushed out of full buckets by inserts.", r->s.evictions);
    TABLE_FAMILY("ember_table_evicted_total", "counter",
                 "Keys removed by Evict calls and by TTL.", r->s.evicted);
    TABLE_FAMILY("ember_table_expired_total", "counter",
                 "Keys removed because their TTL passed (ttl_seconds tables).", r->s.expired);
    TABLE_FAMILY("ember_table_grows_total", "counter",
                 "Doublings of the table by online growth (max_capacity tables).", r->s.grows);
    TABLE_FAMILY("ember_table_grow_failures_total", "counter",
                 "Doublings that found no memory (the table serves on at its size).",
                 r->s.grow_failures);
    family(b, "ember_table_grow_pause_seconds", "gauge",
           "How long the last doubling held calls on the table back.");
    for (size_t i = 0; i < n; i++)
        table_sample(b, "ember_table_grow_pause_seconds", rows[i].t, "", "%.6f",
                     (double)rows[i].s.grow_pause_ns / 1e9);
    TABLE_FAMILY("ember_table_insert_refused_total", "counter",
                 "New keys refused: their score was below a full bucket's (CUSTOM policy).",
                 r->s.insert_refused);
    TABLE_FAMILY("ember_table_admission_drops_total", "counter",
                 "Pushes and inserts dropped because the key was not yet admitted.",
                 r->s.admission_drops);
    TABLE_FAMILY("ember_table_nonfinite_zeroed_total", "counter",
                 "NaN/Inf inputs replaced by 0 (zero_nonfinite tables).", r->s.nonfinite_zeroed);
#define CNT(f) get(&r->t->counters.f)
    TABLE_FAMILY("ember_table_pulls_total", "counter", "Pulls served (empty ones not).",
                 CNT(pulls));
    TABLE_FAMILY("ember_table_pushes_total", "counter", "Pushes applied.", CNT(pushes));
    TABLE_FAMILY("ember_table_keys_pulled_total", "counter", "Keys pulled.", CNT(keys_pulled));
    TABLE_FAMILY("ember_table_keys_pushed_total", "counter", "Keys pushed and applied.",
                 CNT(keys_pushed));
    TABLE_FAMILY("ember_table_duplicate_pushes_total", "counter",
                 "Pushes answered as duplicates (a retry already applied), not applied again.",
                 CNT(duplicate_pushes));
    TABLE_FAMILY("ember_table_erased_total", "counter",
                 "Keys removed by Erase calls (keys that existed).", CNT(erased));
    TABLE_FAMILY("ember_table_duplicate_erases_total", "counter",
                 "Erases answered as duplicates (a retry already applied), not applied again.",
                 CNT(duplicate_erases));
    TABLE_FAMILY("ember_table_epoch", "gauge",
                 "The table's epoch: the high 32 bits of EPOCH_LRU/EPOCH_LFU scores.",
                 ember_table_epoch(r->t->table));
    TABLE_FAMILY("ember_table_coalesced_batches_total", "counter",
                 "Table calls that served two calls or more (--coalesce).", CNT(co_batches));
    TABLE_FAMILY("ember_table_coalesced_calls_total", "counter",
                 "Calls served by coalesced batches.", CNT(co_calls));
    TABLE_FAMILY("ember_table_coalesced_keys_total", "counter",
                 "Keys of calls served by coalesced batches.", CNT(co_keys));
    TABLE_FAMILY("ember_table_coalesced_split_calls_total", "counter",
                 "Extra table calls of gradient batches whose members pushed the same keys.",
                 CNT(co_split_calls));

    /* checkpoints: a table this process has not saved yet has no timestamp, age
     * or duration (alert on their absence as well as on the age) */
    family(b, "ember_checkpoint_saves_total", "counter",
           "Checkpoint saves of the table by this process, by result (ok, failed).");
    for (size_t i = 0; i < n; i++) {
        table_sample(b, "ember_checkpoint_saves_total", rows[i].t, ",result=\"ok\"", "%.0f",
                     (double)get(&rows[i].t->counters.ckpt_saves));
        table_sample(b, "ember_checkpoint_saves_total", rows[i].t, ",result=\"failed\"", "%.0f",
                     (double)get(&rows[i].t->counters.ckpt_failures));
    }
    double now = real_s();
    family(b, "ember_checkpoint_last_save_timestamp_seconds", "gauge",
           "When the table's last successful checkpoint save ended (Unix seconds).");
    for (size_t i = 0; i < n; i++) {
        uint64_t ms = get(&rows[i].t->counters.ckpt_saved_ms);
        if (ms)
            table_sample(b, "ember_checkpoint_last_save_timestamp_seconds", rows[i].t, "",
                         "%.3f", (double)ms / 1e3);
    }
    family(b, "ember_checkpoint_last_save_age_seconds", "gauge",
           "Seconds since the table's last successful checkpoint save ended: at most "
           "what a crash now would take back.");
    for (size_t i = 0; i < n; i++) {
        uint64_t ms = get(&rows[i].t->counters.ckpt_saved_ms);
        double age = now - (double)ms / 1e3;
        if (ms)
            table_sample(b, "ember_checkpoint_last_save_age_seconds", rows[i].t, "", "%.3f",
                         age > 0 ? age : 0);
    }
    family(b, "ember_checkpoint_last_save_duration_seconds", "gauge",
           "How long the table's last successful checkpoint save took.");
    for (size_t i = 0; i < n; i++)
        if (get(&rows[i].t->counters.ckpt_saved_ms))
            table_sample(b, "ember_checkpoint_last_save_duration_seconds", rows[i].t, "",
                         "%.3f", (double)get(&rows[i].t->counters.ckpt_save_ms) / 1e3);
#undef CNT
}

int srv_metrics_render(char **out, size_t *len)
{
    sbuf b = {malloc(16384), 0, 16384, 0};
    if (!b.p)
        return -1;
    b.p[0] = '\0';
    render_process(&b);
    render_calls(&b);
    render_replication(&b);
    size_t n = 0;
    srv_table **list = srv_registry_list(srv.registry, &n);
    table_row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!list || !rows) {
        b.oom = 1;
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].t = list[i];
        ember_table_stats_get(list[i]->table, &rows[i].s);
    }
    render_tables(&b, rows, n);
    free(rows);
    if (list)
        srv_registry_list_free(list, n);
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- HTTP ---------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *body,
                             size_t len, const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    char *body = strdup(text);
    if (!body)
        return MHD_NO;
    return reply(conn, status, body, strlen(body), "text/plain; charset=utf-8");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)con_cls;
    /* a request body (none is expected) is consumed and ignored */
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics"))
        return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: metrics are at /metrics\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    /* a gpu table's stats read its device: this thread's device must be set */
    static __thread int device_set;
    if (!device_set) {
        ember_error err;
        device_set = 1;
        if (srv_backend_thread_init(&srv.backend, &err)) {
            char q[600];
            srv_log(SRV_LOG_ERROR, "metrics_device_failed", "gpu=%d reason=%s",
                    srv.backend.gpu, srv_log_q(q, sizeof q, err.message));
        }
    }
    char *text;
    size_t len;
    if (srv_metrics_render(&text, &len))
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(conn, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char m[512], q[600];
    vsnprintf(m, sizeof m, fmt, ap);
    size_t l = strlen(m);
    while (l && (m[l - 1] == '\n' || m[l - 1] == '\r'))
        m[--l] = '\0';
    srv_log(SRV_LOG_WARN, "metrics_http_error", "reason=%s", srv_log_q(q, sizeof q, m));
}

/* Binds and listens on HOST:PORT ("[v6]:PORT" too; an empty host is every
 * address); the address bound in addr[cap]. Returns the socket, or -1 with the
 * reason in msg. */
static int listen_on(const char *spec, char *addr, size_t acap, char *msg, size_t cap)
{
    char host[256];
    snprintf(host, sizeof host, "%s", spec);
    char *colon = strrchr(host, ':');
    const char *port = colon ? colon + 1 : "";
    char *end;
    unsigned long p = strtoul(port, &end, 10);
    if (!colon || !*port || *end || p > 65535) {
        snprintf(msg, cap, "--metrics-listen %s is not HOST:PORT", spec);
        return -1;
    }
    *colon = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int e = getaddrinfo(*h ? h : NULL, port, &hints, &ai);
    if (e) {
        snprintf(msg, cap, "--metrics-listen %s: cannot resolve '%s': %s", spec, h,
                 gai_strerror(e));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    int one = 1;
    /* SO_REUSEADDR (rebinding over TIME_WAIT after a restart) but never
     * SO_REUSEPORT: a port another process listens on must fail here */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 16)) {
        snprintf(msg, cap,
                 "cannot listen for metrics on %s: %s (the address is in use by another "
                 "process, or is not this host's)",
                 spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int bound = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
            bound = ntohs(s6->sin6_port);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
            bound = ntohs(s4->sin_port);
        }
    }
    snprintf(addr, acap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, bound);
    return fd;
}

int srv_metrics_start(char *msg, size_t cap)
{
    if (!*srv.cfg.metrics_listen)
        return 0;
    char addr[INET6_ADDRSTRLEN + 16];
    int fd = listen_on(srv.cfg.metrics_listen, addr, sizeof addr, msg, cap);
    if (fd < 0)
        return -1;
    /* scrapes are rare and small: a few connections at once, idle ones closed */
    mx.daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
                                 NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                                 NULL, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)8,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!mx.daemon) {
        close(fd);
        snprintf(msg, cap, "cannot start the metrics HTTP server on %s",
                 srv.cfg.metrics_listen);
        return -1;
    }
    srv_log(SRV_LOG_INFO, "metrics_listening", "addr=%s path=/metrics", addr);
    return 0;
}

void srv_metrics_stop(void)
{
    if (!mx.daemon)
        return;
    MHD_stop_daemon(mx.daemon); /* closes the listening socket too */
    mx.daemon = NULL;
}

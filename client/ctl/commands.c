/*
 * commands.c — emberctl's subcommands (see ctl.h).
 *
 * Each command builds one Admin (or health) request, sends it to every selected
 * shard at once (ctl_call), prints what came back — an aligned table, or with
 * --json one document with the same facts plus an "errors" list — and returns
 * the exit status: 1 when any shard failed, each failure also on stderr.
 * Per-table figures are shown per shard and summed over shards ("all").
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ember/v1/ember.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define ADMIN "/ember.v1.Admin/"

/* ---- names of enums -------------------------------------------------------------- */

static const char *const optimizer_names[] = {"sgd", "adagrad", "adam", "ftrl"};
static const char *const initializer_names[] = {"zeros", "constant", "uniform", "normal",
                                                "truncated_normal"};
static const char *const score_names[] = {"lru", "lfu", "epoch_lru", "epoch_lfu", "custom"};
static const char *const health_names[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                                           "SERVICE_UNKNOWN"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *enum_name(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "unknown";
}

/* Index of `s` in names ('-' and '_' alike, case ignored), or -1. */
static int enum_lookup(const char *const *names, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (; k < len && names[i][k]; k++) {
            char a = s[k] == '-' ? '_' : s[k];
            if (a >= 'A' && a <= 'Z')
                a = (char)(a - 'A' + 'a');
            if (a != names[i][k])
                break;
        }
        if (k == len && names[i][k] == '\0')
            return (int)i;
    }
    return -1;
}

/* "shards": [{shard, address}, ...] of the shards that answered OK. */
static void json_ok_shards(ctl_json *j, const ctl *c, const ctl_reply *r)
{
    ctl_json_array(j, "shards");
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        ctl_json_object(j, NULL);
        ctl_json_shard(j, r[i].shard);
        ctl_json_end_object(j);
    }
    ctl_json_end_array(j);
}

/* ---- table configs ------------------------------------------------------------------ */

static void json_config(ctl_json *j, const char *key, const Ember__V1__TableConfig *cfg)
{
    ctl_json_object(j, key);
    if (cfg) {
        const Ember__V1__OptimizerConfig *o = cfg->optimizer;
        const Ember__V1__InitializerConfig *in = cfg->initializer;
        ctl_json_u64(j, "dim", cfg->dim);
        ctl_json_u64(j, "capacity", cfg->capacity);
        ctl_json_str(j, "scores", enum_name(score_names, COUNT(score_names), cfg->score_policy));
        ctl_json_u64(j, "seed", cfg->seed);
        ctl_json_object(j, "optimizer");
        if (o) {
            ctl_json_str(j, "kind", enum_name(optimizer_names, COUNT(optimizer_names), o->kind));
            ctl_json_float(j, "lr", o->lr);
            ctl_json_float(j, "eps", o->eps);
            ctl_json_float(j, "initial_accumulator", o->initial_accumulator);
            ctl_json_float(j, "beta1", o->beta1);
            ctl_json_float(j, "beta2", o->beta2);
            ctl_json_float(j, "weight_decay", o->weight_decay);
            ctl_json_float(j, "l1", o->l1);
            ctl_json_float(j, "l2", o->l2);
            ctl_json_float(j, "lr_power", o->lr_power);
            ctl_json_float(j, "beta", o->beta);
        }
        ctl_json_end_object(j);
        ctl_json_object(j, "initializer");
        if (in) {
            ctl_json_str(j, "kind",
                         enum_name(initializer_names, COUNT(initializer_names), in->kind));
            ctl_json_float(j, "a", in->a);
            ctl_json_float(j, "b", in->b);
        }
        ctl_json_end_object(j);
        ctl_json_u64(j, "admission_min_count", cfg->admission_min_count);
        ctl_json_u64(j, "admission_sketch_width", cfg->admission_sketch_width);
        ctl_json_bool(j, "zero_nonfinite", cfg->zero_nonfinite);
        ctl_json_str(j, "backend", cfg->backend);
        ctl_json_u64(j, "hbm_bytes", cfg->hbm_bytes);
        ctl_json_u64(j, "max_capacity", cfg->max_capacity);
        ctl_json_float(j, "max_load_factor", cfg->max_load_factor);
        ctl_json_u64(j, "ttl_seconds", cfg->ttl_seconds);
        ctl_json_str(j, "ack", cfg->ack == EMBER__V1__ACK_MODE__ACK_REPLICATED ? "replicated"
                                                                               : "async");
        ctl_json_u64(j, "ack_replicas", cfg->ack_replicas);
    }
    ctl_json_end_object(j);
}

/* "adagrad lr 0.05" and the hyper-parameters that matter for the kind. */
static char *fmt_optimizer(char *buf, size_t n, const Ember__V1__OptimizerConfig *o)
{
    if (!o) {
        snprintf(buf, n, "?");
        return buf;
    }
    const char *name = enum_name(optimizer_names, COUNT(optimizer_names), o->kind);
    switch (o->kind) {
    case EMBER__V1__OPTIMIZER__OPTIMIZER_ADAGRAD:
        snprintf(buf, n, "%s lr %g, eps %g, initial accumulator %g", name, o->lr, o->eps,
                 o->initial_accumulator);
        break;
    case EMBER__V1__OPTIMIZER__OPTIMIZER_ADAM:
        snprintf(buf, n, "%s lr %g, beta1 %g, beta2 %g, eps %g, weight decay %g", name, o->lr,
                 o->beta1, o->beta2, o->eps, o->weight_decay);
        break;
    case EMBER__V1__OPTIMIZER__OPTIMIZER_FTRL:
        snprintf(buf, n, "%s lr %g, l1 %g, l2 %g, lr power %g, beta %g, initial accumulator %g",
                 name, o->lr, o->l1, o->l2, o->lr_power, o->beta, o->initial_accumulator);
        break;
    default:
        snprintf(buf, n, "%s lr %g", name, o->lr);
    }
    return buf;
}

static char *fmt_initializer(char *buf, size_t n, const Ember__V1__InitializerConfig *in)
{
    int kind = in ? (int)in->kind : 0;
    const char *name = enum_name(initializer_names, COUNT(initializer_names), kind);
    if (!in || kind == EMBER__V1__INITIALIZER__INIT_ZEROS)
        snprintf(buf, n, "%s", name);
    else if (kind == EMBER__V1__INITIALIZER__INIT_CONSTANT)
        snprintf(buf, n, "%s %g", name, in->a);
    else if (kind == EMBER__V1__INITIALIZER__INIT_UNIFORM)
        snprintf(buf, n, "%s [%g, %g)", name, in->a, in->b);
    else
        snprintf(buf, n, "%s mean %g, stddev %g", name, in->a, in->b);
    return buf;
}

/* Two shards' configs are the same when they pack to the same bytes. */
static int config_equal(const Ember__V1__TableConfig *a, const Ember__V1__TableConfig *b)
{
    if (!a || !b)
        return a == b;
    size_t la = protobuf_c_message_get_packed_size(&a->base);
    size_t lb = protobuf_c_message_get_packed_size(&b->base);
    if (la != lb)
        return 0;
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    int eq = pa && pb;
    if (eq) {
        protobuf_c_message_pack(&a->base, pa);
        protobuf_c_message_pack(&b->base, pb);
        eq = memcmp(pa, pb, la) == 0;
    }
    free(pa);
    free(pb);
    return eq;
}

/* ---- shared plumbing ------------------------------------------------------------------ */

ctl_reply *ctl_replies_new(const ctl *c)
{
    ctl_reply *r = calloc(c->n ? c->n : 1, sizeof *r);
    if (!r)
        fprintf(stderr, "emberctl: out of memory\n");
    return r;
}

int ctl_finish(const ctl *c, ctl_json *j, ctl_reply *r)
{
    if (c->json) {
        ctl_json_errors(j, r, c->n);
        ctl_json_end_object(j);
        ctl_json_finish(j);
    }
    fflush(stdout);
    int rc = ctl_report(r, c->n);
    ctl_replies_free(r, c->n);
    free(r);
    return rc;
}

static unsigned ok_count(const ctl *c, const ctl_reply *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->n; i++)
        n += r[i].code == 0;
    return n;
}

/* ---- tables gathered from several shards ----------------------------------------------- */

/* One table name with its info on each selected shard (NULL where absent). */
typedef struct gathered {
    const char *name;
    const Ember__V1__TableInfo **on;   /* c->n entries */
    unsigned present;
    Ember__V1__TableStats total;
} gathered;

static int gathered_cmp(const void *a, const void *b)
{
    return strcmp(((const gathered *)a)->name, ((const gathered *)b)->name);
}

/* Groups the TableInfos of every shard's reply by name, sorted by name. `list`
 * gives a reply's tables. Returns the groups (free with gathered_free) and their
 * count in *n, or NULL with *n = 0 (none, or out of memory). */
static gathered *gather(const ctl *c, const ctl_reply *r,
                        Ember__V1__TableInfo **(*list)(const ProtobufCMessage *, size_t *),
                        size_t *n)
{
    gathered *g = NULL;
    size_t cap = 0;
    *n = 0;
    for (unsigned s = 0; s < c->n; s++) {
        size_t nt = 0;
        if (r[s].code != 0)
            continue;
        Ember__V1__TableInfo **t = list(r[s].msg, &nt);
        for (size_t k = 0; k < nt; k++) {
            size_t i = 0;
            while (i < *n && strcmp(g[i].name, t[k]->name) != 0)
                i++;
            if (i == *n) {
                if (*n == cap) {
                    size_t ncap = cap ? 2 * cap : 8;
                    gathered *ng = realloc(g, ncap * sizeof *g);
                    if (!ng)
                        goto oom;
                    g = ng;
                    cap = ncap;
                }
                static const Ember__V1__TableStats zero = EMBER__V1__TABLE_STATS__INIT;
                g[i].name = t[k]->name;
                g[i].on = calloc(c->n, sizeof *g[i].on);
                g[i].present = 0;
                g[i].total = zero;
                if (!g[i].on)
                    goto oom;
                (*n)++;
            }
            g[i].on[s] = t[k];
            g[i].present++;
            ctl_stats_add(&g[i].total, t[k]->stats);
        }
    }
    if (*n)
        qsort(g, *n, sizeof *g, gathered_cmp);
    return g;
oom:
    fprintf(stderr, "emberctl: out of memory\n");
    for (size_t i = 0; i < *n; i++)
        free(g[i].on);
    free(g);
    *n = 0;
    return NULL;
}

static void gathered_free(gathered *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(g[i].on);
    free(g);
}

static Ember__V1__TableInfo **list_of_list(const ProtobufCMessage *m, size_t *n)
{
    const Ember__V1__ListTablesResponse *r = (const Ember__V1__ListTablesResponse *)m;
    *n = r->n_tables;
    return r->tables;
}

static Ember__V1__TableInfo **list_of_stats(const ProtobufCMessage *m, size_t *n)
{
    const Ember__V1__GetStatsResponse *r = (const Ember__V1__GetStatsResponse *)m;
    *n = r->n_tables;
    return r->tables;
}

/* The first shard's info of a gathered table (every entry has one). */
static const Ember__V1__TableInfo *first_info(const ctl *c, const gathered *g)
{
    for (unsigned s = 0; s < c->n; s++)
        if (g->on[s])
            return g->on[s];
    return NULL;
}

/* ---- tables ------------------------------------------------------------------------------ */

static int cmd_tables(ctl *c, const ctl_args *a)
{
    (void)a;
    Ember__V1__ListTablesRequest req = EMBER__V1__LIST_TABLES_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    size_t n;
    char b1[32], b2[32], b3[128];

    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "ListTables", &req.base, &ember__v1__list_tables_response__descriptor, 0,
             r);
    gathered *g = gather(c, r, list_of_list, &n);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_array(&j, "tables");
        for (size_t i = 0; i < n; i++) {
            const Ember__V1__TableInfo *t = first_info(c, &g[i]);
            ctl_json_object(&j, NULL);
            ctl_json_str(&j, "name", g[i].name);
            ctl_json_u64(&j, "dim", t->config ? t->config->dim : 0);
            ctl_json_str(&j, "optimizer",
                         enum_name(optimizer_names, COUNT(optimizer_names),
                                   t->config && t->config->optimizer ? (int)t->config->optimizer->kind : -1));
            ctl_json_str(&j, "backend", t->config ? t->config->backend : "");
            ctl_json_u64(&j, "size", g[i].total.size);
            ctl_json_u64(&j, "capacity", g[i].total.capacity);
            ctl_json_double(&j, "load_factor", g[i].total.load_factor);
            ctl_json_u64(&j, "shards", g[i].present);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
    } else if (ok_count(c, r) > 0) {
        static const char *const head[] = {"NAME", ">DIM", "OPTIMIZER", "BACKEND", ">SIZE",
                                           ">CAPACITY", ">LOAD", ">SHARDS"};
        ctl_table t;
        ctl_table_init(&t, COUNT(head), head);
        for (size_t i = 0; i < n; i++) {
            const Ember__V1__TableInfo *ti = first_info(c, &g[i]);
            const Ember__V1__TableConfig *cfg = ti->config;
            ctl_table_add(&t, "%s", g[i].name);
            ctl_table_add(&t, "%" PRIu32, cfg ? cfg->dim : 0);
            ctl_table_add(&t, "%s", enum_name(optimizer_names, COUNT(optimizer_names),
                                              cfg && cfg->optimizer ? (int)cfg->optimizer->kind : -1));
            ctl_table_add(&t, "%s", cfg && *cfg->backend ? cfg->backend : "-");
            ctl_table_add(&t, "%s", ctl_fmt_count(b1, sizeof b1, g[i].total.size));
            ctl_table_add(&t, "%s", ctl_fmt_count(b2, sizeof b2, g[i].total.capacity));
            ctl_table_add(&t, "%.3f", g[i].total.load_factor);
            snprintf(b3, sizeof b3, "%u/%u", g[i].present, c->n);
            ctl_table_add(&t, "%s", b3);
        }
        if (n > 0)
            ctl_table_print(&t, stdout, 0);
        else
            printf("no tables on %u shard%s\n", ok_count(c, r), ok_count(c, r) == 1 ? "" : "s");
        ctl_table_free(&t);
    }
    gathered_free(g, n);
    return ctl_finish(c, &j, r);
}

/* ---- create --------------------------------------------------------------------------------- */

static const ctl_optdef create_opts[] = {
    {"--dim", "N", "floats per row, 1..4096 (required)"},
    {"--capacity", "N", "keys per shard; K, M, G: 2^10, 2^20, 2^30 (required)"},
    {"--optimizer", "NAME", "sgd, adagrad, adam or ftrl (default sgd)"},
    {"--lr", "X", "learning rate (default 0.01)"},
    {"--eps", "X", "adagrad/adam epsilon (default 1e-8)"},
    {"--initial-accumulator", "X", "adagrad accumulator / ftrl n at start (default 0.1)"},
    {"--beta1", "X", "adam (default 0.9)"},
    {"--beta2", "X", "adam (default 0.999)"},
    {"--weight-decay", "X", "adam, decoupled (default 0)"},
    {"--l1", "X", "ftrl (default 0)"},
    {"--l2", "X", "ftrl (default 0)"},
    {"--lr-power", "X", "ftrl, <= 0 (default -0.5)"},
    {"--beta", "X", "ftrl (default 0)"},
    {"--initializer", "SPEC", "zeros, constant:V, uniform:LO,HI, normal:MEAN,STD,\n"
                              "                           truncated_normal:MEAN,STD "
                              "(default uniform:-0.01,0.01)"},
    {"--scores", "POLICY", "eviction scores: lru, lfu, epoch_lru, epoch_lfu, custom "
                           "(default lru)"},
    {"--admission", "N", "store a key from its N-th sighting (default 0: off)"},
    {"--admission-width", "N", "counters per admission sketch row (default: the server's)"},
    {"--seed", "N", "initializer seed (default 0)"},
    {"--backend", "NAME", "cpu or gpu (default: the server's)"},
    {"--hbm-bytes", "N", "gpu: bytes of rows in device memory, the rest in pinned host\n"
                         "                           memory; K, M, G (default: the server's)"},
    {"--max-capacity", "N", "online growth: the table doubles while serving, up to this\n"
                            "                           many keys per shard; K, M, G (default: fixed size)"},
    {"--max-load-factor", "X", "growth threshold in [0.1, 1] (default 0.75)"},
    {"--ttl", "DURATION", "time to live: rows not written for this long are removed;\n"
                          "                           e.g. 7d, 12h, 90m, 30s (default: off)"},
    {"--zero-nonfinite", NULL, "replace NaN/Inf gradients by 0 instead of refusing them"},
    {"--ack", "MODE", "pushes' acknowledgement: async (answered once applied on the\n"
                      "                           leader) or replicated[:N] (once N followers hold it\n"
                      "                           too; N default 1) (default async; README\n"
                      "                           \"Replication and failover\")"},
    {"--if-not-exists", NULL, "a table of that name already there is not an error"},
    {NULL, NULL, NULL},
};

/* "7d", "12h", "90m", "30s", "45" (seconds), "0" → seconds. */
static int parse_seconds(const ctl_args *a, const char *opt, const char *s, uint64_t *out)
{
    char num[32];
    size_t len = strlen(s);
    uint64_t unit = 1, v;
    if (len == 0 || len >= sizeof num)
        return ctl_usage_error(a, "%s: '%s' is not a duration (e.g. 7d, 12h, 90m, 30s)", opt, s);
    memcpy(num, s, len + 1);
    switch (num[len - 1]) {
    case 's': unit = 1; num[--len] = '\0'; break;
    case 'm': unit = 60; num[--len] = '\0'; break;
    case 'h': unit = 3600; num[--len] = '\0'; break;
    case 'd': unit = 86400; num[--len] = '\0'; break;
    default: break;
    }
    if (len == 0 || strspn(num, "0123456789") != len)
        return ctl_usage_error(a, "%s: '%s' is not a duration (e.g. 7d, 12h, 90m, 30s)", opt, s);
    if (ctl_parse_u64(a, opt, num, 0, UINT64_MAX / unit, &v) != 0)
        return CTL_EXIT_USAGE;
    *out = v * unit;
    return 0;
}

/* "uniform:-0.01,0.01" → kind, a, b. */
static int parse_initializer(const ctl_args *a, const char *s, Ember__V1__InitializerConfig *in)
{
    const char *colon = strchr(s, ':');
    size_t len = colon ? (size_t)(colon - s) : strlen(s);
    int kind = enum_lookup(initializer_names, COUNT(initializer_names), s, len);
    int want = kind == EMBER__V1__INITIALIZER__INIT_ZEROS       ? 0
               : kind == EMBER__V1__INITIALIZER__INIT_CONSTANT ? 1
                                                                : 2;
    float v[2] = {0, 0};
    int got = 0;
    if (kind < 0)
        return ctl_usage_error(a, "--initializer '%s': unknown kind (zeros, constant, uniform, "
                                  "normal, truncated_normal)", s);
    if (colon) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", colon + 1);
        for (char *tok = buf, *next; tok && got < 3; tok = next, got++) {
            next = strchr(tok, ',');
            if (next)
                *next++ = '\0';
            if (got < 2 && ctl_parse_float(a, "--initializer", tok, &v[got]) != 0)
                return CTL_EXIT_USAGE;
        }
    }
    if (got != want)
        return ctl_usage_error(a, "--initializer '%s': %.*s takes %s", s, (int)len, s,
                               want == 0 ? "no value" : want == 1 ? "one value (constant:V)"
                                                                  : "two values (KIND:A,B)");
    in->kind = (Ember__V1__Initializer)kind;
    in->a = v[0];
    in->b = v[1];
    return 0;
}

/* An acknowledgement mode as emberctl takes it: async, replicated or
 * replicated:N (1..32 followers; replicated alone: the server's default of 1).
 * 0, or a usage error naming `what`. */
static int parse_ack(const ctl_args *a, const char *what, const char *v,
                     Ember__V1__AckMode *ack, uint32_t *replicas)
{
    uint64_t u = 0;
    if (!strcmp(v, "async")) {
        *ack = EMBER__V1__ACK_MODE__ACK_ASYNC;
        *replicas = 0;
        return 0;
    }
    if (strncmp(v, "replicated", 10) || (v[10] && v[10] != ':'))
        return ctl_usage_error(a, "%s '%s': want async, replicated or replicated:N", what, v);
    if (v[10] && ctl_parse_u64(a, what, v + 11, 1, 32, &u) != 0)
        return -1;
    *ack = EMBER__V1__ACK_MODE__ACK_REPLICATED;
    *replicas = (uint32_t)u;
    return 0;
}

static int cmd_create(ctl *c, const ctl_args *a)
{
    Ember__V1__CreateTableRequest req = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    Ember__V1__OptimizerConfig opt = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    Ember__V1__InitializerConfig init = EMBER__V1__INITIALIZER_CONFIG__INIT;
    const char *v;
    uint64_t u;
    ctl_json j;
    char b1[32], b2[256], b3[128];

    /* The storage layer's defaults (ember_table_config_init): proto3 sends zeros
     * for whatever is not set, and lr 0 is no optimizer. */
    opt.kind = EMBER__V1__OPTIMIZER__OPTIMIZER_SGD;
    opt.lr = 0.01f;
    opt.eps = 1e-8f;
    opt.initial_accumulator = 0.1f;
    opt.beta1 = 0.9f;
    opt.beta2 = 0.999f;
    opt.lr_power = -0.5f;
    init.kind = EMBER__V1__INITIALIZER__INIT_UNIFORM;
    init.a = -0.01f;
    init.b = 0.01f;
    cfg.optimizer = &opt;
    cfg.initializer = &init;
    req.name = (char *)a->pos[0];
    req.config = &cfg;
    req.if_not_exists = ctl_opt(a, "--if-not-exists") != NULL;

    if (!(v = ctl_opt(a, "--dim")))
        return ctl_usage_error(a, "--dim is required");
    if (ctl_parse_u64(a, "--dim", v, 1, 4096, &u) != 0)
        return CTL_EXIT_USAGE;
    cfg.dim = (uint32_t)u;
    if (!(v = ctl_opt(a, "--capacity")))
        return ctl_usage_error(a, "--capacity is required (keys per shard)");
    if (ctl_parse_u64(a, "--capacity", v, 1, UINT64_C(1) << 40, &cfg.capacity) != 0)
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--optimizer"))) {
        int k = enum_lookup(optimizer_names, COUNT(optimizer_names), v, strlen(v));
        if (k < 0)
            return ctl_usage_error(a, "--optimizer '%s': want sgd, adagrad, adam or ftrl", v);
        opt.kind = (Ember__V1__Optimizer)k;
    }
    static const struct { const char *opt; size_t off; } floats[] = {
        {"--lr", offsetof(Ember__V1__OptimizerConfig, lr)},
        {"--eps", offsetof(Ember__V1__OptimizerConfig, eps)},
        {"--initial-accumulator", offsetof(Ember__V1__OptimizerConfig, initial_accumulator)},
        {"--beta1", offsetof(Ember__V1__OptimizerConfig, beta1)},
        {"--beta2", offsetof(Ember__V1__OptimizerConfig, beta2)},
        {"--weight-decay", offsetof(Ember__V1__OptimizerConfig, weight_decay)},
        {"--l1", offsetof(Ember__V1__OptimizerConfig, l1)},
        {"--l2", offsetof(Ember__V1__OptimizerConfig, l2)},
        {"--lr-power", offsetof(Ember__V1__OptimizerConfig, lr_power)},
        {"--beta", offsetof(Ember__V1__OptimizerConfig, beta)},
    };
    for (size_t i = 0; i < COUNT(floats); i++)
        if ((v = ctl_opt(a, floats[i].opt)) &&
            ctl_parse_float(a, floats[i].opt, v, (float *)((char *)&opt + floats[i].off)) != 0)
            return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--initializer")) && parse_initializer(a, v, &init) != 0)
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--scores"))) {
        int k = enum_lookup(score_names, COUNT(score_names), v, strlen(v));
        if (k < 0)
            return ctl_usage_error(a, "--scores '%s': want lru, lfu, epoch_lru, epoch_lfu or "
                                      "custom", v);
        cfg.score_policy = (Ember__V1__ScorePolicy)k;
    }
    if ((v = ctl_opt(a, "--admission"))) {
        if (ctl_parse_u64(a, "--admission", v, 0, UINT32_MAX, &u) != 0)
            return CTL_EXIT_USAGE;
        cfg.admission_min_count = (uint32_t)u;
    }
    if ((v = ctl_opt(a, "--admission-width"))) {
        if (ctl_parse_u64(a, "--admission-width", v, 1, UINT32_MAX, &u) != 0)
            return CTL_EXIT_USAGE;
        cfg.admission_sketch_width = (uint32_t)u;
    }
    if ((v = ctl_opt(a, "--seed")) && ctl_parse_u64(a, "--seed", v, 0, UINT64_MAX, &cfg.seed))
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--backend")))
        cfg.backend = (char *)v;
    if ((v = ctl_opt(a, "--hbm-bytes")) &&
        ctl_parse_u64(a, "--hbm-bytes", v, 0, UINT64_MAX, &cfg.hbm_bytes) != 0)
        return CTL_EXIT_USAGE;
    cfg.zero_nonfinite = ctl_opt(a, "--zero-nonfinite") != NULL;
    if ((v = ctl_opt(a, "--max-capacity")) &&
        ctl_parse_u64(a, "--max-capacity", v, 1, UINT64_C(1) << 40, &cfg.max_capacity) != 0)
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--max-load-factor")) &&
        ctl_parse_float(a, "--max-load-factor", v, &cfg.max_load_factor) != 0)
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--ttl")) && parse_seconds(a, "--ttl", v, &cfg.ttl_seconds) != 0)
        return CTL_EXIT_USAGE;
    if ((v = ctl_opt(a, "--ack")) &&
        parse_ack(a, "--ack", v, &cfg.ack, &cfg.ack_replicas) != 0)
        return CTL_EXIT_USAGE;

    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "CreateTable", &req.base, &ember__v1__create_table_response__descriptor,
             0, r);
    unsigned ok = ok_count(c, r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.name);
        json_config(&j, "config", &cfg);
        json_ok_shards(&j, c, r);
    } else if (ok > 0) {
        printf("table %s %s on %u of %u shard%s: dim %" PRIu32 ", capacity %s per shard, %s, "
               "initializer %s, scores %s\n",
               req.name, req.if_not_exists ? "is there" : "created", ok, c->n,
               c->n == 1 ? "" : "s", cfg.dim, ctl_fmt_count(b1, sizeof b1, cfg.capacity),
               fmt_optimizer(b2, sizeof b2, &opt), fmt_initializer(b3, sizeof b3, &init),
               score_names[cfg.score_policy]);
    }
    return ctl_finish(c, &j, r);
}

/* ---- drop, clear ------------------------------------------------------------------------------- */

static const ctl_optdef drop_opts[] = {
    {"--if-exists", NULL, "a table that is not there is not an error"},
    {NULL, NULL, NULL},
};

static int cmd_drop(ctl *c, const ctl_args *a)
{
    Ember__V1__DropTableRequest req = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    unsigned dropped = 0;

    if (!r)
        return CTL_EXIT_RPC;
    req.name = (char *)a->pos[0];
    req.if_exists = ctl_opt(a, "--if-exists") != NULL;
    ctl_call(c, ADMIN "DropTable", &req.base, &ember__v1__drop_table_response__descriptor, 0, r);
    for (unsigned i = 0; i < c->n; i++)
        if (r[i].code == 0)
            dropped += ((Ember__V1__DropTableResponse *)r[i].msg)->dropped;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.name);
        ctl_json_array(&j, "shards");
        for (unsigned i = 0; i < c->n; i++) {
            if (r[i].code != 0)
                continue;
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_bool(&j, "dropped", ((Ember__V1__DropTableResponse *)r[i].msg)->dropped);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
    } else if (ok_count(c, r) > 0) {
        printf("table %s dropped on %u of %u shard%s\n", req.name, dropped, c->n,
               c->n == 1 ? "" : "s");
    }
    return ctl_finish(c, &j, r);
}

static int cmd_clear(ctl *c, const ctl_args *a)
{
    Ember__V1__ClearRequest req = EMBER__V1__CLEAR_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;

    if (!r)
        return CTL_EXIT_RPC;
    req.table = (char *)a->pos[0];
    ctl_call(c, ADMIN "Clear", &req.base, &ember__v1__clear_response__descriptor, 0, r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.table);
        json_ok_shards(&j, c, r);
    } else if (ok_count(c, r) > 0) {
        printf("table %s cleared on %u of %u shard%s\n", req.table, ok_count(c, r), c->n,
               c->n == 1 ? "" : "s");
    }
    return ctl_finish(c, &j, r);
}

/* ---- ttl ---------------------------------------------------------------------------------------- */

static int cmd_ttl(ctl *c, const ctl_args *a)
{
    Ember__V1__AlterTableRequest req = EMBER__V1__ALTER_TABLE_REQUEST__INIT;
    ctl_json j;
    char b[64];
    req.name = (char *)a->pos[0];
    req.set_ttl = 1;
    if (parse_seconds(a, "DURATION", a->pos[1], &req.ttl_seconds) != 0)
        return CTL_EXIT_USAGE;
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "AlterTable", &req.base, &ember__v1__alter_table_response__descriptor, 0,
             r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.name);
        ctl_json_u64(&j, "ttl_seconds", req.ttl_seconds);
        json_ok_shards(&j, c, r);
    } else if (ok_count(c, r) > 0) {
        printf("table %s: ttl %s on %u of %u shard%s\n", req.name,
               req.ttl_seconds ? ctl_fmt_duration(b, sizeof b, req.ttl_seconds) : "off",
               ok_count(c, r), c->n, c->n == 1 ? "" : "s");
    }
    return ctl_finish(c, &j, r);
}

/* ---- describe, stats ---------------------------------------------------------------------------- */

static int cmd_describe(ctl *c, const ctl_args *a)
{
    Ember__V1__DescribeTableRequest req = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    Ember__V1__TableStats total = EMBER__V1__TABLE_STATS__INIT;
    const Ember__V1__TableInfo *first = NULL;
    unsigned first_shard = 0;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    char b[6][256];

    if (!r)
        return CTL_EXIT_RPC;
    req.name = (char *)a->pos[0];
    ctl_call(c, ADMIN "DescribeTable", &req.base, &ember__v1__describe_table_response__descriptor,
             0, r);
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__TableInfo *t;
        if (r[i].code != 0 || !(t = ((Ember__V1__DescribeTableResponse *)r[i].msg)->table))
            continue;
        ctl_stats_add(&total, t->stats);
        if (!first) {
            first = t;
            first_shard = r[i].shard->index;
        } else if (!config_equal(first->config, t->config)) {
            fprintf(stderr, "emberctl: warning: table %s on shard %u has another config than "
                            "on shard %u\n", req.name, r[i].shard->index, first_shard);
        }
    }
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "name", req.name);
        json_config(&j, "config", first ? first->config : NULL);
        ctl_json_stats(&j, "total", &total);
        ctl_json_array(&j, "shards");
        for (unsigned i = 0; i < c->n; i++) {
            const Ember__V1__TableInfo *t;
            if (r[i].code != 0 || !(t = ((Ember__V1__DescribeTableResponse *)r[i].msg)->table))
                continue;
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_stats(&j, "stats", t->stats);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
    } else if (first && first->config) {
        const Ember__V1__TableConfig *cfg = first->config;
        printf("table %s\n", req.name);
        printf("  dim          %" PRIu32 "\n", cfg->dim);
        printf("  capacity     %s keys per shard\n", ctl_fmt_count(b[0], sizeof b[0], cfg->capacity));
        printf("  optimizer    %s\n", fmt_optimizer(b[1], sizeof b[1], cfg->optimizer));
        printf("  initializer  %s, seed %" PRIu64 "\n",
               fmt_initializer(b[2], sizeof b[2], cfg->initializer), cfg->seed);
        printf("  scores       %s\n", enum_name(score_names, COUNT(score_names), cfg->score_policy));
        if (cfg->admission_min_count > 1)
            printf("  admission    from the %" PRIu32 "th sighting (sketch width %" PRIu32 ")\n",
                   cfg->admission_min_count, cfg->admission_sketch_width);
        else
            printf("  admission    off\n");
        printf("  non-finite   %s\n", cfg->zero_nonfinite ? "zeroed and counted" : "refused");
        printf("  backend      %s\n", *cfg->backend ? cfg->backend : "the server's default");
        if (cfg->max_capacity)
            printf("  growth       doubles up to %s keys per shard at load factor %.2f\n",
                   ctl_fmt_count(b[3], sizeof b[3], cfg->max_capacity),
                   (double)cfg->max_load_factor);
        else
            printf("  growth       off (fixed size)\n");
        if (cfg->ttl_seconds)
            printf("  ttl          %s (rows not written for that long are removed)\n",
                   ctl_fmt_duration(b[4], sizeof b[4], cfg->ttl_seconds));
        else
            printf("  ttl          off\n");
        if (cfg->ack == EMBER__V1__ACK_MODE__ACK_REPLICATED)
            printf("  ack          replicated (a push is answered once %" PRIu32
                   " follower%s hold it)\n",
                   cfg->ack_replicas ? cfg->ack_replicas : 1,
                   cfg->ack_replicas > 1 ? "s" : "");
        else
            printf("  ack          async (a push is answered once applied on the leader)\n");
        printf("\n");

        static const char *const head[] = {">SHARD", "ADDRESS", ">SIZE", ">CAPACITY", ">LOAD",
                                           ">VERSION", ">EVICTIONS", ">EVICTED", ">HOST MEM",
                                           ">DEVICE MEM"};
        ctl_table t;
        ctl_table_init(&t, COUNT(head), head);
        for (unsigned i = 0; i <= c->n; i++) {
            const Ember__V1__TableStats *s = &total;
            if (i < c->n) {
                const Ember__V1__TableInfo *ti;
                if (r[i].code != 0 ||
                    !(ti = ((Ember__V1__DescribeTableResponse *)r[i].msg)->table) || !ti->stats)
                    continue;
                s = ti->stats;
                ctl_table_add(&t, "%u", r[i].shard->index);
                ctl_table_add(&t, "%s", r[i].shard->address);
            } else {
                if (ok_count(c, r) < 2)
                    break;
                ctl_table_add(&t, "all");
                ctl_table_add(&t, "%s", "");
            }
            ctl_table_add(&t, "%s", ctl_fmt_count(b[0], sizeof b[0], s->size));
            ctl_table_add(&t, "%s", ctl_fmt_count(b[1], sizeof b[1], s->capacity));
            ctl_table_add(&t, "%.3f", s->load_factor);
            ctl_table_add(&t, "%" PRIu64, s->version);
            ctl_table_add(&t, "%s", ctl_fmt_count(b[2], sizeof b[2], s->evictions));
            ctl_table_add(&t, "%s", ctl_fmt_count(b[3], sizeof b[3], s->evicted));
            ctl_table_add(&t, "%s", ctl_fmt_bytes(b[4], sizeof b[4], s->bytes_host));
            ctl_table_add(&t, "%s", ctl_fmt_bytes(b[5], sizeof b[5], s->bytes_device));
        }
        ctl_table_print(&t, stdout, 2);
    }
    return ctl_finish(c, &j, r);
}

static void print_stats_table(const ctl *c, const ctl_reply *r, const gathered *g)
{
    static const char *const head[] = {">SHARD", "ADDRESS", ">SIZE", ">LOAD", ">PULLS",
                                       ">PUSHES", ">KEYS PULLED", ">KEYS PUSHED", ">EVICTIONS",
                                       ">ADMISSION DROPS", ">DUP PUSHES", ">ERASED", ">EPOCH"};
    ctl_table t;
    char b[9][32];
    ctl_table_init(&t, COUNT(head), head);
    for (unsigned i = 0; i <= c->n; i++) {
        const Ember__V1__TableStats *s = &g->total;
        if (i < c->n) {
            if (!g->on[i] || !g->on[i]->stats)
                continue;
            s = g->on[i]->stats;
            ctl_table_add(&t, "%u", r[i].shard->index);
            ctl_table_add(&t, "%s", r[i].shard->address);
        } else {
            if (g->present < 2)
                break;
            ctl_table_add(&t, "all");
            ctl_table_add(&t, "%s", "");
        }
        ctl_table_add(&t, "%s", ctl_fmt_count(b[0], sizeof b[0], s->size));
        ctl_table_add(&t, "%.3f", s->load_factor);
        ctl_table_add(&t, "%s", ctl_fmt_count(b[1], sizeof b[1], s->pulls));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[2], sizeof b[2], s->pushes));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[3], sizeof b[3], s->keys_pulled));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[4], sizeof b[4], s->keys_pushed));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[5], sizeof b[5], s->evictions));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[6], sizeof b[6], s->admission_drops));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[7], sizeof b[7], s->duplicate_pushes));
        ctl_table_add(&t, "%s", ctl_fmt_count(b[8], sizeof b[8], s->erased));
        ctl_table_add(&t, "%u", (unsigned)s->epoch);
    }
    ctl_table_print(&t, stdout, 2);
}

static const ctl_optdef stats_opts[] = {
    {"--watch", "[SECONDS]", "refresh every SECONDS (default 2; 0.5 works), with rates"},
    {"--count", "N", "with --watch: stop after N refreshes (default: at SIGINT/SIGTERM)"},
    {NULL, NULL, NULL},
};

static int cmd_stats(ctl *c, const ctl_args *a)
{
    Ember__V1__GetStatsRequest req = EMBER__V1__GET_STATS_REQUEST__INIT;
    if (ctl_opt(a, "--watch") || ctl_opt(a, "--count"))
        return ctl_stats_watch(c, a);
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    size_t n;
    uint64_t requests = 0, errors = 0;
    char b[3][32];

    if (!r)
        return CTL_EXIT_RPC;
    if (a->n_pos > 0)
        req.table = (char *)a->pos[0];
    ctl_call(c, ADMIN "GetStats", &req.base, &ember__v1__get_stats_response__descriptor, 0, r);
    gathered *g = gather(c, r, list_of_stats, &n);
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        const Ember__V1__GetStatsResponse *s = (const Ember__V1__GetStatsResponse *)r[i].msg;
        requests += s->requests;
        errors += s->errors;
    }
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_array(&j, "tables");
        for (size_t k = 0; k < n; k++) {
            ctl_json_object(&j, NULL);
            ctl_json_str(&j, "name", g[k].name);
            ctl_json_stats(&j, "total", &g[k].total);
            ctl_json_array(&j, "shards");
            for (unsigned i = 0; i < c->n; i++) {
                if (!g[k].on[i])
                    continue;
                ctl_json_object(&j, NULL);
                ctl_json_shard(&j, r[i].shard);
                ctl_json_stats(&j, "stats", g[k].on[i]->stats);
                ctl_json_end_object(&j);
            }
            ctl_json_end_array(&j);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_stats_servers(&j, c, r, NULL);
    } else if (ok_count(c, r) > 0) {
        for (size_t k = 0; k < n; k++) {
            printf("table %s\n", g[k].name);
            print_stats_table(c, r, &g[k]);
            printf("\n");
        }
        if (n == 0 && a->n_pos == 0)
            printf("no tables\n\n");
        static const char *const head[] = {">SHARD", "ADDRESS", ">REQUESTS", ">ERRORS",
                                           ">UPTIME"};
        ctl_table t;
        ctl_table_init(&t, COUNT(head), head);
        for (unsigned i = 0; i < c->n; i++) {
            if (r[i].code != 0)
                continue;
            const Ember__V1__GetStatsResponse *s = (const Ember__V1__GetStatsResponse *)r[i].msg;
            ctl_table_add(&t, "%u", r[i].shard->index);
            ctl_table_add(&t, "%s", r[i].shard->address);
            ctl_table_add(&t, "%s", ctl_fmt_count(b[0], sizeof b[0], s->requests));
            ctl_table_add(&t, "%s", ctl_fmt_count(b[1], sizeof b[1], s->errors));
            ctl_table_add(&t, "%s", ctl_fmt_duration(b[2], sizeof b[2], s->uptime_seconds));
        }
        printf("servers\n");
        ctl_table_print(&t, stdout, 2);
    }
    gathered_free(g, n);
    return ctl_finish(c, &j, r);
}

/* ---- save, load ----------------------------------------------------------------------------------- */

static const ctl_optdef save_opts[] = {
    {"--dir", "DIR", "directory on each server (default: its --checkpoint-dir)"},
    {"--all-shards", NULL, "a save set: every table of every shard, into DIR/sets/NAME, then a manifest"},
    {"--set", "NAME", "the set's name with --all-shards (default: the UTC time, YYYYMMDDTHHMMSSZ)"},
    {"--manifest", "FILE", "the manifest --all-shards writes (default: ember-save-manifest.json)"},
    {NULL, NULL, NULL},
};

static const ctl_optdef load_opts[] = {
    {"--dir", "DIR", "directory on each server (default: its --checkpoint-dir)"},
    {"--create", NULL, "create tables that do not exist, from the checkpoint's config"},
    {"--manifest", "FILE", "load the save set a manifest names on every shard (implies --create)"},
    {NULL, NULL, NULL},
};

/* A Save or Load running on its own thread while the main one draws progress. */
typedef struct watched {
    const ctl *c;
    const char *method;
    const ProtobufCMessage *req;
    const ProtobufCMessageDescriptor *type;
    ctl_reply *r;
    atomic_int done;
} watched;

static void *watched_main(void *arg)
{
    watched *w = arg;
    ctl_call(w->c, w->method, w->req, w->type, 0, w->r);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Sums what the shards' ServerInfo say of their running `op` ("save", "load").
 * Save and Load reply only when done, so this is how the line learns anything
 * before that: every shard publishes its save or load's rows after each chunk
 * (ember.proto, ServerInfoResponse.progress_*). */
static void poll_progress(const ctl *c, const char *op, ctl_reply *info, uint64_t *rows,
                          uint64_t *total)
{
    Ember__V1__ServerInfoRequest req = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    *rows = *total = 0;
    ctl_call(c, ADMIN "ServerInfo", &req.base, &ember__v1__server_info_response__descriptor,
             2000, info);
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__ServerInfoResponse *s = (const void *)info[i].msg;
        if (info[i].code == 0 && s && !strcmp(s->progress_op, op)) {
            *rows += s->progress_rows;
            *total += s->progress_rows_total;
        }
    }
    ctl_replies_free(info, c->n);
}

/* ctl_call of a Save or Load with a progress line on a terminal ("save emb:
 * 1,234 / 5,678 rows (21.7%), 40,000 rows/s, ETA 3s"), polled from ServerInfo
 * every 250 ms; the last state drawn is the replies' rows. Without a terminal
 * (or with --json) a plain ctl_call. */
static void call_with_progress(const ctl *c, const char *method, const char *op,
                               const char *table, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *type, ctl_reply *r,
                               uint64_t (*rows_of)(const ProtobufCMessage *))
{
    char what[96];
    ctl_progress p;
    snprintf(what, sizeof what, "%s %s", op, table && *table ? table : "(every table)");
    ctl_progress_start(&p, what, 0);
    p.no_bytes = 1;
    watched w = {c, method, req, type, r, 0};
    pthread_t th;
    ctl_reply *info = p.on && !c->json ? ctl_replies_new(c) : NULL;
    if (!info || pthread_create(&th, NULL, watched_main, &w) != 0) {
        free(info);
        ctl_call(c, method, req, type, 0, r);
        return;
    }
    while (!atomic_load(&w.done)) {
        for (int k = 0; k < 25 && !atomic_load(&w.done); k++)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        if (atomic_load(&w.done))
            break;
        uint64_t rows, total;
        poll_progress(c, op, info, &rows, &total);
        p.total_rows = total;
        ctl_progress_update(&p, rows, 0);
    }
    pthread_join(th, NULL);
    free(info);
    uint64_t done = 0;
    for (unsigned i = 0; i < c->n; i++)
        if (r[i].code == 0 && r[i].msg)
            done += rows_of(r[i].msg);
    p.total_rows = done;
    p.rows = done;
    ctl_progress_end(&p);
}

static uint64_t save_rows(const ProtobufCMessage *m)
{
    return ((const Ember__V1__SaveResponse *)(const void *)m)->rows;
}

static uint64_t load_rows(const ProtobufCMessage *m)
{
    return ((const Ember__V1__LoadResponse *)(const void *)m)->rows;
}

#define MANIFEST_DEFAULT "ember-save-manifest.json"

/* save --all-shards: every shard saves every table into its fresh DIR/sets/NAME;
 * only once all have, the manifest naming them replaces the previous one. */
static int cmd_save_set(ctl *c, const ctl_args *a)
{
    Ember__V1__SaveRequest req = EMBER__V1__SAVE_REQUEST__INIT;
    const char *path = ctl_opt(a, "--manifest") ? ctl_opt(a, "--manifest") : MANIFEST_DEFAULT;
    char set[80], err[600], b[32];
    if (a->n_pos > 0)
        return ctl_usage_error(a, "--all-shards saves every table: give no TABLE");
    if (c->n != c->count)
        return ctl_usage_error(a, "--all-shards saves every shard: give no --shard");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (ctl_opt(a, "--set")) {
        snprintf(set, sizeof set, "%s", ctl_opt(a, "--set"));
    } else {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        strftime(set, sizeof set, "%Y%m%dT%H%M%SZ", &tm);
    }
    req.set = set;
    if (ctl_opt(a, "--dir"))
        req.dir = (char *)ctl_opt(a, "--dir");
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    call_with_progress(c, ADMIN "Save", "save", NULL, &req.base,
                       &ember__v1__save_response__descriptor, r, save_rows);
    ctl_manifest m = {set, (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec, c->count,
                      calloc(c->n, sizeof(ctl_manifest_shard)), c->n};
    int failed = ok_count(c, r) != c->n, wrote = 0;
    uint64_t rows = 0;
    for (unsigned i = 0; !failed && m.shards && i < c->n; i++) {
        const Ember__V1__SaveResponse *s = (const Ember__V1__SaveResponse *)r[i].msg;
        ctl_manifest_shard *ms = &m.shards[i];
        ms->index = r[i].shard->index;
        ms->address = r[i].shard->address;
        ms->dir = s->dir;
        ms->window = s->window;
        ms->n = s->n_tables < s->n_cuts ? s->n_tables : s->n_cuts;
        ms->tables = calloc(ms->n ? ms->n : 1, sizeof *ms->tables);
        for (size_t t = 0; ms->tables && t < ms->n; t++)
            ms->tables[t] = (ctl_manifest_table){s->tables[t], s->cuts[t]};
        failed |= !ms->tables || !*s->dir; /* a server without set support */
        rows += s->rows;
    }
    if (!failed && m.shards)
        wrote = ctl_manifest_write(path, &m, err, sizeof err) == 0;
    else
        snprintf(err, sizeof err, "a shard did not save the set");
    for (unsigned i = 0; m.shards && i < c->n; i++)
        free(m.shards[i].tables);
    free(m.shards);
    ctl_json j;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "set", set);
        ctl_json_str(&j, "manifest", path);
        ctl_json_bool(&j, "manifest_written", wrote);
        ctl_json_u64(&j, "rows", rows);
    } else if (wrote) {
        printf("save set %s: %s rows on %u shard%s; manifest %s\n", set,
               ctl_fmt_count(b, sizeof b, rows), c->n, c->n == 1 ? "" : "s", path);
    }
    if (!wrote)
        fprintf(stderr,
                "emberctl save: manifest %s not written (%s): the previous manifest, if any, "
                "still names a complete set\n",
                path, err);
    int rc = ctl_finish(c, &j, r);
    return rc ? rc : wrote ? CTL_EXIT_OK : CTL_EXIT_RPC;
}

/* One pass of load --manifest over every shard: `check` only (LoadRequest
 * check_only), or the load itself; the rows loaded are added to *rows. */
static void load_set_pass(const ctl *c, const ctl_manifest *m, ctl_reply *r, int check,
                          uint64_t *rows)
{
    for (unsigned i = 0; i < c->n; i++) {
        const ctl_manifest_shard *ms = &m->shards[i];
        Ember__V1__LoadRequest req = EMBER__V1__LOAD_REQUEST__INIT;
        char **names = calloc(ms->n ? ms->n : 1, sizeof *names);
        uint64_t *cuts = calloc(ms->n ? ms->n : 1, sizeof *cuts);
        for (size_t t = 0; names && cuts && t < ms->n; t++) {
            names[t] = ms->tables[t].name;
            cuts[t] = ms->tables[t].cut;
        }
        req.dir = ms->dir;
        req.create = 1;
        req.check_only = check;
        req.n_expect_tables = req.n_expect_cuts = names && cuts ? ms->n : 0;
        req.expect_tables = names;
        req.expect_cuts = cuts;
        ctl one = *c;
        one.shards = &c->shards[i];
        one.n = 1;
        ctl_call(&one, ADMIN "Load", &req.base, &ember__v1__load_response__descriptor, 0, &r[i]);
        free(names);
        free(cuts);
        if (r[i].code == 0 && !check)
            *rows += ((const Ember__V1__LoadResponse *)r[i].msg)->rows;
    }
}

/* load --manifest: each shard loads the set's directory the manifest names for
 * it, checked against the manifest's tables and cuts before anything loads. */
static int cmd_load_set(ctl *c, const ctl_args *a)
{
    ctl_manifest m;
    char err[700], b[32];
    const char *path = ctl_opt(a, "--manifest");
    if (a->n_pos > 0 || ctl_opt(a, "--dir"))
        return ctl_usage_error(a, "--manifest loads every table from its set: give no TABLE "
                                  "or --dir");
    if (ctl_manifest_read(path, &m, err, sizeof err)) {
        fprintf(stderr, "emberctl load: %s\n", err);
        return CTL_EXIT_RPC;
    }
    if (m.shard_count != c->count || c->n != c->count) {
        fprintf(stderr,
                "emberctl load: %s holds a set of %u shard(s); give the whole list of %u "
                "shard(s) and no --shard\n",
                path, m.shard_count, m.shard_count);
        ctl_manifest_free(&m);
        return CTL_EXIT_USAGE;
    }
    ctl_reply *r = ctl_replies_new(c);
    if (!r) {
        ctl_manifest_free(&m);
        return CTL_EXIT_RPC;
    }
    /* every shard checks its part first: a set that does not match on one shard
     * is loaded on none */
    uint64_t rows = 0;
    load_set_pass(c, &m, r, 1, &rows);
    if (ok_count(c, r) == c->n) {
        ctl_replies_free(r, c->n);
        load_set_pass(c, &m, r, 0, &rows);
    }
    ctl_json j;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "set", m.set);
        ctl_json_u64(&j, "rows", rows);
    } else if (ok_count(c, r) == c->n) {
        printf("save set %s: %s rows loaded on %u shard%s\n", m.set,
               ctl_fmt_count(b, sizeof b, rows), c->n, c->n == 1 ? "" : "s");
    }
    ctl_manifest_free(&m);
    return ctl_finish(c, &j, r);
}

static int cmd_save(ctl *c, const ctl_args *a)
{
    Ember__V1__SaveRequest req = EMBER__V1__SAVE_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    uint64_t rows = 0;
    char b[32];

    if (!r)
        return CTL_EXIT_RPC;
    if (ctl_opt(a, "--all-shards")) {
        free(r);
        return cmd_save_set(c, a);
    }
    if (ctl_opt(a, "--set") || ctl_opt(a, "--manifest")) {
        free(r);
        return ctl_usage_error(a, "--set and --manifest go with --all-shards");
    }
    if (a->n_pos > 0)
        req.table = (char *)a->pos[0];
    if (ctl_opt(a, "--dir"))
        req.dir = (char *)ctl_opt(a, "--dir");
    call_with_progress(c, ADMIN "Save", "save", req.table, &req.base,
                       &ember__v1__save_response__descriptor, r, save_rows);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        const Ember__V1__SaveResponse *s = (const Ember__V1__SaveResponse *)r[i].msg;
        rows += s->rows;
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_u64(&j, "rows", s->rows);
            ctl_json_array(&j, "files");
            for (size_t f = 0; f < s->n_files; f++)
                ctl_json_str(&j, NULL, s->files[f]);
            ctl_json_end_array(&j);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): %s rows in %zu file%s\n", r[i].shard->index,
                   r[i].shard->address, ctl_fmt_count(b, sizeof b, s->rows), s->n_files,
                   s->n_files == 1 ? "" : "s");
            for (size_t f = 0; f < s->n_files; f++)
                printf("  %s\n", s->files[f]);
        }
    }
    if (c->json) {
        ctl_json_end_array(&j);
        ctl_json_u64(&j, "rows", rows);
    }
    return ctl_finish(c, &j, r);
}

static int cmd_load(ctl *c, const ctl_args *a)
{
    Ember__V1__LoadRequest req = EMBER__V1__LOAD_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    uint64_t rows = 0;
    char b[32];

    if (!r)
        return CTL_EXIT_RPC;
    if (ctl_opt(a, "--manifest")) {
        free(r);
        return cmd_load_set(c, a);
    }
    if (a->n_pos > 0)
        req.table = (char *)a->pos[0];
    if (ctl_opt(a, "--dir"))
        req.dir = (char *)ctl_opt(a, "--dir");
    req.create = ctl_opt(a, "--create") != NULL;
    call_with_progress(c, ADMIN "Load", "load", req.table, &req.base,
                       &ember__v1__load_response__descriptor, r, load_rows);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        const Ember__V1__LoadResponse *s = (const Ember__V1__LoadResponse *)r[i].msg;
        rows += s->rows;
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_u64(&j, "rows", s->rows);
            ctl_json_array(&j, "tables");
            for (size_t k = 0; k < s->n_tables; k++)
                ctl_json_str(&j, NULL, s->tables[k]);
            ctl_json_end_array(&j);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): %s rows into", r[i].shard->index, r[i].shard->address,
                   ctl_fmt_count(b, sizeof b, s->rows));
            for (size_t k = 0; k < s->n_tables; k++)
                printf("%s %s", k ? "," : "", s->tables[k]);
            printf("%s\n", s->n_tables ? "" : " no table");
        }
    }
    if (c->json) {
        ctl_json_end_array(&j);
        ctl_json_u64(&j, "rows", rows);
    }
    return ctl_finish(c, &j, r);
}

/* ---- evict -------------------------------------------------------------------------------------------- */

static const ctl_optdef evict_opts[] = {
    {"--below-score", "S", "erase keys whose score is below S"},
    {"--to-size", "N", "erase the lowest-scored keys until each shard holds at most N"},
    {NULL, NULL, NULL},
};

static const ctl_optdef erase_opts[] = {
    {"--file", "PATH", "read the keys from PATH, one per line ('-': stdin)"},
    {NULL, NULL, NULL},
};

static int cmd_evict(ctl *c, const ctl_args *a)
{
    Ember__V1__EvictRequest req = EMBER__V1__EVICT_REQUEST__INIT;
    const char *below = ctl_opt(a, "--below-score"), *to = ctl_opt(a, "--to-size");
    ctl_json j;
    uint64_t total = 0;
    char b[32];

    req.table = (char *)a->pos[0];
    if (!below == !to)
        return ctl_usage_error(a, "give one of --below-score S and --to-size N");
    if (below) {
        req.what_case = EMBER__V1__EVICT_REQUEST__WHAT_BELOW_SCORE;
        if (ctl_parse_u64(a, "--below-score", below, 0, UINT64_MAX, &req.below_score) != 0)
            return CTL_EXIT_USAGE;
    } else {
        req.what_case = EMBER__V1__EVICT_REQUEST__WHAT_TO_SIZE;
        if (ctl_parse_u64(a, "--to-size", to, 0, UINT64_MAX, &req.to_size) != 0)
            return CTL_EXIT_USAGE;
    }
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "Evict", &req.base, &ember__v1__evict_response__descriptor, 0, r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.table);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        uint64_t e = ((const Ember__V1__EvictResponse *)r[i].msg)->evicted;
        total += e;
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_u64(&j, "evicted", e);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): %s keys evicted\n", r[i].shard->index, r[i].shard->address,
                   ctl_fmt_count(b, sizeof b, e));
        }
    }
    if (c->json) {
        ctl_json_end_array(&j);
        ctl_json_u64(&j, "evicted", total);
    } else if (ok_count(c, r) > 1) {
        printf("all: %s keys evicted from %s\n", ctl_fmt_count(b, sizeof b, total), req.table);
    }
    return ctl_finish(c, &j, r);
}

/* ---- health, info --------------------------------------------------------------------------------------- */

static const ctl_optdef health_opts[] = {
    {"--wait", "SECONDS", "ask again until every shard serves, for at most SECONDS"},
    {NULL, NULL, NULL},
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int serving(const ctl_reply *r)
{
    return r->code == 0 && ((const Grpc__Health__V1__HealthCheckResponse *)r->msg)->status ==
                               GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static int cmd_health(ctl *c, const ctl_args *a)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    uint64_t wait_s = 0;
    const char *v = ctl_opt(a, "--wait");
    ctl_json j;
    unsigned up;

    if (v && ctl_parse_u64(a, "--wait", v, 0, 86400, &wait_s) != 0)
        return CTL_EXIT_USAGE;
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    double deadline = now_s() + (double)wait_s;
    for (;;) {
        /* While waiting, no single try may outlive the wait. */
        double left = deadline - now_s();
        int timeout = wait_s && left * 1000 < c->timeout_ms ? (int)(left * 1000) + 1 : 0;
        ctl_call(c, "/grpc.health.v1.Health/Check", &req.base,
                 &grpc__health__v1__health_check_response__descriptor, timeout, r);
        up = 0;
        for (unsigned i = 0; i < c->n; i++)
            up += serving(&r[i]);
        if (up == c->n || now_s() + 0.2 >= deadline)
            break;
        ctl_replies_free(r, c->n);
        nanosleep(&(struct timespec){.tv_nsec = 200000000}, NULL);
    }
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_bool(&j, "serving", up == c->n);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        const char *status = r[i].code == 0
            ? enum_name(health_names, COUNT(health_names),
                        ((const Grpc__Health__V1__HealthCheckResponse *)r[i].msg)->status)
            : ember_code_name(r[i].code);
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_str(&j, "status", status);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): %s\n", r[i].shard->index, r[i].shard->address, status);
        }
    }
    if (c->json)
        ctl_json_end_array(&j);
    int rc = ctl_finish(c, &j, r);
    /* A shard that answers but does not serve fails the check too. */
    return rc == CTL_EXIT_OK && up < c->n ? CTL_EXIT_RPC : rc;
}

static int cmd_info(ctl *c, const ctl_args *a)
{
    (void)a;
    Ember__V1__ServerInfoRequest req = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    ctl_reply *r = ctl_replies_new(c);
    ctl_json j;
    ctl_table t;
    char b[3][32];

    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "ServerInfo", &req.base, &ember__v1__server_info_response__descriptor, 0,
             r);
    static const char *const head[] = {">SHARD", "ADDRESS", "VERSION", ">INDEX", "BACKEND",
                                       ">THREADS", ">CALLS", ">MAX KEYS", ">MAX MESSAGE",
                                       ">MAX TABLE", ">UPTIME", "CHECKPOINT DIR", "ROLE"};
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_array(&j, "shards");
    } else {
        ctl_table_init(&t, COUNT(head), head);
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        const Ember__V1__ServerInfoResponse *s = (const Ember__V1__ServerInfoResponse *)r[i].msg;
        /* The list's order is the key→shard map: a server in the wrong place, or
         * one started for another shard count, serves the wrong keys. */
        if (s->shard_index != r[i].shard->index || s->shard_count != c->count)
            fprintf(stderr, "emberctl: warning: %s is shard %" PRIu32 " of %" PRIu32
                            " but stands at position %u of %u in the shard list\n",
                    r[i].shard->address, s->shard_index, s->shard_count, r[i].shard->index,
                    c->count);
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_str(&j, "version", s->version);
            ctl_json_u64(&j, "shard_index", s->shard_index);
            ctl_json_u64(&j, "shard_count", s->shard_count);
            ctl_json_str(&j, "backend", s->backend);
            ctl_json_str(&j, "device", s->device);
            ctl_json_u64(&j, "device_memory_bytes", s->device_memory_bytes);
            ctl_json_u64(&j, "device_memory_free_bytes", s->device_memory_free_bytes);
            ctl_json_u64(&j, "hbm_bytes", s->hbm_bytes);
            ctl_json_u64(&j, "threads", s->threads);
            ctl_json_u64(&j, "max_keys_per_request", s->max_keys_per_request);
            ctl_json_u64(&j, "max_message_bytes", s->max_message_bytes);
            ctl_json_u64(&j, "uptime_seconds", s->uptime_seconds);
            ctl_json_str(&j, "listen", s->listen);
            ctl_json_str(&j, "checkpoint_dir", s->checkpoint_dir);
            ctl_json_str(&j, "tls", *s->tls ? s->tls : "off");
            ctl_json_bool(&j, "auth", s->auth);
            ctl_json_u64(&j, "refused_unauthenticated", s->refused_unauthenticated);
            ctl_json_u64(&j, "refused_permission_denied", s->refused_permission_denied);
            ctl_json_u64(&j, "max_tables", s->max_tables);
            ctl_json_u64(&j, "max_concurrent_calls", s->max_concurrent_calls);
            ctl_json_u64(&j, "max_table_host_bytes", s->max_table_host_bytes);
            ctl_json_u64(&j, "max_table_hbm_bytes", s->max_table_hbm_bytes);
            ctl_json_u64(&j, "calls_in_progress", s->calls_in_progress);
            ctl_json_u64(&j, "refused_over_capacity", s->refused_over_capacity);
            ctl_json_bool(&j, "key_ownership_checked", s->key_ownership_checked);
            ctl_json_str(&j, "progress_op", s->progress_op);
            ctl_json_str(&j, "progress_table", s->progress_table);
            ctl_json_u64(&j, "progress_rows", s->progress_rows);
            ctl_json_u64(&j, "progress_rows_total", s->progress_rows_total);
            ctl_json_str(&j, "role", s->role);
            ctl_json_str(&j, "leader", s->leader);
            ctl_json_u64(&j, "lag_versions", s->lag_versions);
            ctl_json_u64(&j, "lag_ms", s->lag_ms);
            ctl_json_array(&j, "followers");
            for (size_t f = 0; f < s->n_followers; f++) {
                ctl_json_object(&j, NULL);
                ctl_json_str(&j, "id", s->followers[f]->id);
                ctl_json_str(&j, "addr", s->followers[f]->addr);
                ctl_json_u64(&j, "lag_versions", s->followers[f]->lag_versions);
                ctl_json_u64(&j, "last_seen_ms", s->followers[f]->last_seen_ms);
                ctl_json_end_object(&j);
            }
            ctl_json_end_array(&j);
            ctl_json_end_object(&j);
        } else {
            ctl_table_add(&t, "%u", r[i].shard->index);
            ctl_table_add(&t, "%s", r[i].shard->address);
            ctl_table_add(&t, "%s", s->version);
            ctl_table_add(&t, "%" PRIu32 "/%" PRIu32, s->shard_index, s->shard_count);
            if (*s->device)      /* gpu: which device, its memory and what is free */
                ctl_table_add(&t, "%s (%s, %s, %s free)", s->backend, s->device,
                              ctl_fmt_bytes(b[1], sizeof b[1], s->device_memory_bytes),
                              ctl_fmt_bytes(b[2], sizeof b[2], s->device_memory_free_bytes));
            else
                ctl_table_add(&t, "%s", s->backend);
            ctl_table_add(&t, "%" PRIu32, s->threads);
            /* in progress (this call included) of --max-concurrent-calls */
            ctl_table_add(&t, "%" PRIu64 "/%" PRIu32, s->calls_in_progress,
                          s->max_concurrent_calls);
            ctl_table_add(&t, "%s", ctl_fmt_count(b[0], sizeof b[0], s->max_keys_per_request));
            ctl_table_add(&t, "%s", ctl_fmt_bytes(b[1], sizeof b[1], s->max_message_bytes));
            if (s->max_table_host_bytes)
                ctl_table_add(&t, "%s", ctl_fmt_bytes(b[1], sizeof b[1], s->max_table_host_bytes));
            else
                ctl_table_add(&t, "-");
            ctl_table_add(&t, "%s", ctl_fmt_duration(b[0], sizeof b[0], s->uptime_seconds));
            ctl_table_add(&t, "%s", *s->checkpoint_dir ? s->checkpoint_dir : "-");
            /* leader (and its followers) or follower (of whom, how far behind) */
            if (!strcmp(s->role, "follower"))
                ctl_table_add(&t, "follower of %s, %" PRIu64 " versions / %" PRIu64 " ms behind",
                              s->leader, s->lag_versions, s->lag_ms);
            else if (s->n_followers)
                ctl_table_add(&t, "%s, %zu follower%s", *s->role ? s->role : "leader",
                              s->n_followers, s->n_followers == 1 ? "" : "s");
            else
                ctl_table_add(&t, "%s", *s->role ? s->role : "leader");
        }
    }
    if (c->json)
        ctl_json_end_array(&j);
    else if (ok_count(c, r) > 0)
        ctl_table_print(&t, stdout, 0);
    else
        ctl_table_free(&t);
    return ctl_finish(c, &j, r);
}

/* ---- ack ---------------------------------------------------------------------------------------- */

static int cmd_ack(ctl *c, const ctl_args *a)
{
    Ember__V1__AlterTableRequest req = EMBER__V1__ALTER_TABLE_REQUEST__INIT;
    ctl_json j;
    const char *v = a->pos[1];
    req.name = (char *)a->pos[0];
    req.set_ack = 1;
    if (parse_ack(a, "MODE", v, &req.ack, &req.ack_replicas) != 0)
        return CTL_EXIT_USAGE;
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "AlterTable", &req.base, &ember__v1__alter_table_response__descriptor, 0,
             r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.name);
        ctl_json_str(&j, "ack", req.ack == EMBER__V1__ACK_MODE__ACK_REPLICATED ? "replicated"
                                                                               : "async");
        ctl_json_u64(&j, "ack_replicas", req.ack_replicas);
        json_ok_shards(&j, c, r);
    } else if (ok_count(c, r) > 0) {
        printf("table %s: ack %s on %u of %u shard%s\n", req.name, v, ok_count(c, r), c->n,
               c->n == 1 ? "" : "s");
    }
    return ctl_finish(c, &j, r);
}

/* ---- promote, follow (replication) ------------------------------------------------------------ */

static const ctl_optdef promote_opts[] = {
    {"--force", NULL, "promote even when it knows itself behind its leader (the writes it\n"
                      "                           lacks are lost)"},
    {"--max-lag-versions", "N", "refuse when more than N versions behind (default 1000)"},
    {"--advertise", "H:P", "the address the old leader reaches the new one at, told to it\n"
                           "                           until it follows (default ADDR; none: -)"},
    {NULL, NULL, NULL},
};

static int cmd_promote(ctl *c, const ctl_args *a)
{
    Ember__V1__PromoteRequest req = EMBER__V1__PROMOTE_REQUEST__INIT;
    const char *v;
    ctl_json j;
    req.force = ctl_opt(a, "--force") != NULL;
    if ((v = ctl_opt(a, "--max-lag-versions")) &&
        ctl_parse_u64(a, "--max-lag-versions", v, 1, UINT64_MAX, &req.max_lag_versions) != 0)
        return CTL_EXIT_USAGE;
    v = ctl_opt(a, "--advertise");
    req.advertise = (char *)(!v ? a->pos[0] : strcmp(v, "-") ? v : "");
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "Promote", &req.base, &ember__v1__promote_response__descriptor, 0, r);
    const Ember__V1__PromoteResponse *p = (const Ember__V1__PromoteResponse *)r[0].msg;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        if (!r[0].code) {
            ctl_json_str(&j, "address", a->pos[0]);
            ctl_json_u64(&j, "term", p->term);
            ctl_json_u64(&j, "lag_versions", p->lag_versions);
            ctl_json_str(&j, "previous_leader", p->previous_leader);
        }
    } else if (!r[0].code) {
        printf("%s is the leader at term %" PRIu64 " (it followed %s, %" PRIu64
               " versions behind)%s\n",
               a->pos[0], p->term, p->previous_leader, p->lag_versions,
               *req.advertise ? "; the old leader is told to follow it when it answers" : "");
    }
    return ctl_finish(c, &j, r);
}

static const ctl_optdef follow_opts[] = {
    {"--leader", "H:P", "the leader to follow (required)"},
    {"--term", "N", "its term (default: asked of the leader)"},
    {NULL, NULL, NULL},
};

static int cmd_follow(ctl *c, const ctl_args *a)
{
    Ember__V1__FollowRequest req = EMBER__V1__FOLLOW_REQUEST__INIT;
    const char *v;
    ctl_json j;
    req.leader = (char *)ctl_opt(a, "--leader");
    if (!req.leader)
        return ctl_usage_error(a, "--leader H:P is required");
    if ((v = ctl_opt(a, "--term"))) {
        if (ctl_parse_u64(a, "--term", v, 0, UINT64_MAX, &req.term) != 0)
            return CTL_EXIT_USAGE;
    } else { /* the leader's own term */
        ctl lc = *c;
        lc.shards = NULL;
        lc.n = 0;
        int rc = ctl_shards_parse(&lc, req.leader, -1);
        if (rc == 0)
            rc = ctl_shards_open(&lc);
        if (rc != 0)
            return rc;
        Ember__V1__ServerInfoRequest iq = EMBER__V1__SERVER_INFO_REQUEST__INIT;
        ctl_reply *ir = ctl_replies_new(&lc);
        if (!ir) {
            ctl_shards_close(&lc);
            return CTL_EXIT_RPC;
        }
        ctl_call(&lc, ADMIN "ServerInfo", &iq.base,
                 &ember__v1__server_info_response__descriptor, 0, ir);
        const Ember__V1__ServerInfoResponse *s = (const Ember__V1__ServerInfoResponse *)ir[0].msg;
        if (!ir[0].code && strcmp(s->role, "leader"))
            fprintf(stderr, "emberctl: %s is %s, not a leader\n", req.leader, s->role);
        int bad = ir[0].code || strcmp(s->role, "leader");
        if (!bad)
            req.term = s->term;
        rc = ctl_report(ir, lc.n);
        ctl_replies_free(ir, lc.n);
        ctl_shards_close(&lc);
        if (bad)
            return rc ? rc : CTL_EXIT_RPC;
    }
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, ADMIN "Follow", &req.base, &ember__v1__follow_response__descriptor, 0, r);
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        if (!r[0].code) {
            ctl_json_str(&j, "address", a->pos[0]);
            ctl_json_str(&j, "leader", req.leader);
            ctl_json_u64(&j, "term", ((const Ember__V1__FollowResponse *)r[0].msg)->term);
        }
    } else if (!r[0].code) {
        printf("%s follows %s at term %" PRIu64 ": its tables are copied from the leader again\n",
               a->pos[0], req.leader, ((const Ember__V1__FollowResponse *)r[0].msg)->term);
    }
    return ctl_finish(c, &j, r);
}

/* ---- the table of commands ---------------------------------------------------------------------------- */

const ctl_cmd ctl_commands[] = {
    {"tables", "", 0, 0, "list the tables, summed over shards", NULL, NULL, cmd_tables, 0},
    {"create", "NAME", 1, 1, "create a table on every shard",
     "NAME: [a-z0-9_.-], 1..64 characters. --capacity is per shard: a table spread\n"
     "over N shards holds up to N × capacity keys; a full table keeps working as a\n"
     "cache, evicting the lowest-scored key of a full bucket.\n",
     create_opts, cmd_create, 0},
    {"drop", "NAME", 1, 1, "drop a table on every shard, with its rows", NULL, drop_opts,
     cmd_drop, 0},
    {"describe", "NAME", 1, 1, "a table's config, and its size and memory per shard", NULL,
     NULL, cmd_describe, 0},
    {"stats", "[TABLE]", 0, 1, "traffic and size per table (all or one) per shard, and summed; --watch: live",
     "--watch asks again every SECONDS until SIGINT or SIGTERM (exit 0), or --count\n"
     "refreshes, adding per-second rates of pulls, pushes, keys pulled and keys\n"
     "pushed since the previous refresh ('-' on the first, and for a shard that\n"
     "restarted or missed it; 'all' sums the shards' rates). On a terminal the\n"
     "screen is redrawn; otherwise each refresh follows a '--- time ---' line, and\n"
     "with --json each is one JSON object on one line. Give TABLE before --watch\n"
     "(the argument after --watch is its interval). A shard that fails a refresh is\n"
     "shown failed in that refresh and asked again in the next; the exit status is\n"
     "1 when some shard never answered. A down shard costs one --timeout-ms per\n"
     "refresh.\n",
     stats_opts, cmd_stats, 0},
    {"save", "[TABLE]", 0, 1, "checkpoint a table (default: every table) on every shard",
     "Each server writes one file per table into DIR (default: its --checkpoint-dir);\n"
     "the previous checkpoint stays whole until the new one is complete. Each file\n"
     "is its table at one moment (its cut); a save of every table takes one cut for\n"
     "all of a shard's tables and saves its at-most-once window beside them.\n"
     "--all-shards: a save set. Every shard saves every table into the fresh\n"
     "DIR/sets/NAME (never over an earlier set); once all have, the manifest (JSON:\n"
     "each shard's dir and each table's cut) is written to FILE whole (temp file,\n"
     "fsync, rename). A shard that fails leaves FILE as it was: the previous\n"
     "manifest still names a complete set. Restore with load --manifest FILE.\n",
     save_opts, cmd_save, 0},
    {"load", "[TABLE]", 0, 1, "restore a table (default: every table found) from checkpoints",
     "The table's rows are replaced by the checkpoint's; a corrupt file is refused\n"
     "whole (DATA_LOSS) and leaves the table as it was. Loading every table of a dir\n"
     "also restores the at-most-once window saved with them.\n"
     "--manifest FILE: every shard loads the set FILE names for it, creating tables\n"
     "as needed; a shard whose set dir does not hold exactly the manifest's tables\n"
     "at their cuts refuses before loading anything (FAILED_PRECONDITION). Tables\n"
     "made after the save are left as they are.\n",
     load_opts, cmd_load, 0},
    {"evict", "NAME", 1, 1, "erase keys below a score, or down to a size per shard",
     "Scores are the table's eviction scores (lru: server clock in ns; lfu: hits;\n"
     "epoch_*: epoch in the high 32 bits; custom: the client's).\n",
     evict_opts, cmd_evict, 0},
    {"clear", "NAME", 1, 1, "erase every key of a table on every shard (the table stays)", NULL,
     NULL, cmd_clear, 0},
    {"ttl", "NAME DURATION", 2, 2, "set a table's time to live on every shard (0: off)",
     "DURATION: 7d, 12h, 90m, 30s or a number of seconds. Rows not written (pushed,\n"
     "assigned, created) for that long are removed by each server in the background\n"
     "(ember-server --ttl-sweep-interval); reads do not keep a row alive.\n",
     NULL, cmd_ttl, 0},
    {"erase", "TABLE [KEY...]", 1, CTL_MAX_POSITIONAL, "erase keys (decimal or 0x hex) from a table",
     "Each key goes to the shard the key→shard function picks among --shards (give\n"
     "the whole list, in order). --file reads keys one per line ('-': stdin; blank\n"
     "lines and # comments skipped). A reserved key refuses the whole call before\n"
     "anything is sent; a shard refuses its whole part for an unknown table. Prints\n"
     "how many keys existed and were erased on each shard.\n",
     erase_opts, ctl_cmd_erase, 0},
    {"epoch", "TABLE EPOCH", 2, 2, "set a table's epoch on every shard (epoch_lru/epoch_lfu)",
     "EPOCH (0..4294967295) becomes the high 32 bits of every later access's score,\n"
     "so keys not touched since an older epoch are evicted first. Lowering it is\n"
     "allowed (a rollback). Checkpoints keep the epoch.\n",
     NULL, ctl_cmd_epoch, 0},
    {"health", "", 0, 0, "grpc.health.v1 status of every shard",
     "Exit status 0 only when every shard answers SERVING.\n", health_opts, cmd_health, 0},
    {"info", "", 0, 0, "each server's version, shard index, backend, limits and uptime",
     "Warns when a server's shard index or count disagrees with its place in the list.\n",
     NULL, cmd_info, 0},
    {"ack", "NAME MODE", 2, 2, "set a table's push acknowledgement on every shard",
     "MODE: async (a push is answered once applied on the leader) or replicated[:N]\n"
     "(once N followers hold it too; N default 1). README \"Replication and failover\".\n",
     NULL, cmd_ack, 0},
    {"promote", "ADDR", 1, 1, "make the follower at ADDR the leader, at a new term",
     "Refused while it knows itself more than --max-lag-versions behind its leader,\n"
     "unless --force. The old leader, told (every second until it answers) to\n"
     "follow the new one, refuses writes from then on and copies its rows; so does\n"
     "any leader that sees a push carrying the newer term. README \"Replication and\n"
     "failover\".\n",
     promote_opts, cmd_promote, CTL_CMD_ADDR},
    {"follow", "ADDR", 1, 1, "make the server at ADDR a follower of --leader",
     "Its tables are dropped and copied from the leader again; writes to it are\n"
     "refused meanwhile. Refused when --term is older than the server's own.\n",
     follow_opts, cmd_follow, CTL_CMD_ADDR},
    {"export", "TABLE FILE", 2, 2, "write a table's rows (all, or a delta) to one file",
     "FILE is written whole or not at all (a temp file renamed at the end). It records\n"
     "each shard's table version when its export began: give the file to the next\n"
     "export as --after-version-file to get the rows written since (a delta; rows\n"
     "written during an export may come again in the next delta, none are missed).\n"
     "--full-rows keeps the optimizer state, which import needs for tables that\n"
     "have some (all but sgd).\n",
     ctl_export_opts, ctl_cmd_export, 0},
    {"import", "TABLE FILE", 2, 2, "stream an export file's rows into a table on every shard",
     "Each row goes to the shard the key→shard function picks among --shards, so a\n"
     "file exported from N shards imports into any M. Rows keep their scores and\n"
     "versions and replace rows of the same key. The file is checked whole before\n"
     "any row is sent; a failure half-way leaves the rows sent (importing again is\n"
     "safe). With --shard I, only shard I's rows are sent.\n",
     ctl_import_opts, ctl_cmd_import, 0},
    {"reshard", "", 0, 0, "turn N shards' checkpoints into checkpoints for M shards (offline)",
     "Reads the checkpoints of one table saved by N shards (all of them) and writes\n"
     "DIR/shard-<i>/<table>.ckpt for M new shards, each key's row (embedding,\n"
     "optimizer state, score, version) in the shard the key→shard function picks.\n"
     "Mixed tables, dims or shard counts, a missing shard and damaged files are\n"
     "refused before any output is put in place. Start new shard i with\n"
     "--checkpoint-dir DIR/shard-<i>, or load it with\n"
     "'emberctl load TABLE --dir DIR/shard-<i> --create'.\n",
     ctl_reshard_opts, ctl_cmd_reshard, CTL_CMD_OFFLINE},
    {NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, 0},
};

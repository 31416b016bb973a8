/*
 * client.c — the ember_client handle: shard list, channels, the poller thread,
 * and the per-call machinery every pull, push and admin call runs on
 * (internal.h).
 */
#define _GNU_SOURCE /* strndup, clock_gettime, nanosleep, getrandom */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>

#include "client/internal.h"
#include "proto/cq_order.h"
#include "proto/shard_map.h"
#include "client/rpc.h"
#include "client/tfconfig.h"

#define EMBER_DEFAULT_TIMEOUT_MS 10000u
#define EMBER_DEFAULT_RETRIES 5u
#define EMBER_BACKOFF_FIRST_MS 50
/* With a retry budget: the longest wait between two attempts (before jitter),
 * and how often a waiting call looks for ember_client_cancel. */
#define EMBER_BACKOFF_CAP_MS 2000
#define EMBER_CANCEL_POLL_MS 100
#define EMBER_RETRY_BUDGET_MAX_MS (7 * 24 * 3600 * 1000) /* a week; fits an int */
#define EMBER_MAX_SHARDS 65536u
#define EMBER_MAX_REPLICAS 8u     /* addresses of one shard: "leader|follower|..." */
#define EMBER_LEADER_ASK_MS 1000  /* each replica's health check when the leader moved */
#define EMBER_MAX_CHANNELS 64u
#define EMBER_POOL_OPS 32u    /* ops kept for reuse */
#define EMBER_POOL_BUFS 128u  /* request buffers kept for reuse */
/* Value bytes per request before a shard's part of a call is split: far below
 * the servers' message limit (256 MiB by default), and no smaller than the
 * largest shape we benchmark (65,536 × dim 64 float32 = 16 MiB), where 4 MiB
 * chunks measured no faster on this 2-core machine. */
#define EMBER_CHUNK_BYTES (16u << 20)

static const char *const method_paths[EMBER_M_COUNT] = {
    [EMBER_M_PULL] = "/ember.v1.Shard/Pull",
    [EMBER_M_PUSH] = "/ember.v1.Shard/Push",
    [EMBER_M_PUSHPULL] = "/ember.v1.Shard/PushPull",
    [EMBER_M_CREATE] = "/ember.v1.Admin/CreateTable",
    [EMBER_M_DROP] = "/ember.v1.Admin/DropTable",
    [EMBER_M_DESCRIBE] = "/ember.v1.Admin/DescribeTable",
    [EMBER_M_SAVE] = "/ember.v1.Admin/Save",
    [EMBER_M_LOAD] = "/ember.v1.Admin/Load",
    [EMBER_M_LIST] = "/ember.v1.Admin/ListTables",
    [EMBER_M_ALTER] = "/ember.v1.Admin/AlterTable",
    [EMBER_M_ERASE] = "/ember.v1.Shard/Erase",
    [EMBER_M_SET_EPOCH] = "/ember.v1.Admin/SetEpoch",
    [EMBER_M_INFO] = "/ember.v1.Admin/ServerInfo",
};

/* The exported name of <ember/types.h>'s table, for callers that bind by symbol. */
const char *ember_code_name(int code)
{
    return ember_status_name(code);
}

/* ---- request buffers -------------------------------------------------------- */

struct ember_reqbuf {
    ember_reqpool *pool;
    ember_reqbuf *next;
    atomic_int refs;
    size_t cap;
    uint8_t *data;
};

/* Outlives the client while gRPC still holds request slices: one reference for
 * the client, one per buffer handed out. */
struct ember_reqpool {
    pthread_mutex_t mu;
    ember_reqbuf *free;
    unsigned nfree;
    int closed;
    atomic_int refs;
};

static void reqpool_unref(ember_reqpool *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    while (p->free) {
        ember_reqbuf *b = p->free;
        p->free = b->next;
        free(b->data);
        free(b);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static ember_reqbuf *reqbuf_get(ember_reqpool *p, size_t len)
{
    ember_reqbuf *b = NULL;
    pthread_mutex_lock(&p->mu);
    /* Prefer a buffer that is big enough; else take any and grow it. */
    ember_reqbuf **pp = &p->free, **fit = NULL;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->cap >= len) {
            fit = pp;
            break;
        }
    if (!fit && p->free)
        fit = &p->free;
    if (fit) {
        b = *fit;
        *fit = b->next;
        p->nfree--;
    }
    pthread_mutex_unlock(&p->mu);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b)
            return NULL;
        b->pool = p;
    }
    if (b->cap < len || !b->data) {
        size_t cap = len < 256 ? 256 : len + len / 8;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            free(b->data);
            free(b);
            return NULL;
        }
        b->data = d;
        b->cap = cap;
    }
    atomic_store(&b->refs, 1);
    atomic_fetch_add(&p->refs, 1);
    b->next = NULL;
    return b;
}

static void reqbuf_put(ember_reqbuf *b)
{
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    ember_reqpool *p = b->pool;
    pthread_mutex_lock(&p->mu);
    if (!p->closed && p->nfree < EMBER_POOL_BUFS) {
        b->next = p->free;
        p->free = b;
        p->nfree++;
        b = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (b) {
        free(b->data);
        free(b);
    }
    reqpool_unref(p);
}

static void reqbuf_slice_done(void *ud)
{
    reqbuf_put(ud);
}

/* ---- options and shard lists ------------------------------------------------ */

/* Names shard s (if err is not NULL) as the one that failed with `code`, which
 * ember_error_set has just recorded; returns code. */
static int shard_failed(ember_error *err, unsigned s, int code)
{
    if (err)
        err->shard = (int)s;
    return code;
}

/* ember_client_options as libember 0.1 laid it out: the least a caller's
 * struct_size may say (ember.h, "Growing structs"), and all that
 * ember_client_options_init@EMBER_1 fills. */
#define EMBER_OPTIONS_FIRST_SIZE \
    (offsetof(ember_client_options, token_file) + sizeof(const char *))

/* ember_client_options_init@@EMBER_1.1 fills the whole struct; @EMBER_1, which
 * programs linked before the retry budget call, fills only the first layout
 * (as admin.c's ember_table_spec_init does). */
void ember_client_options_init_v1_1(ember_client_options *o);
void ember_client_options_init_v1_0(ember_client_options *o);
__asm__(".symver ember_client_options_init_v1_1,ember_client_options_init@@EMBER_1.1");
__asm__(".symver ember_client_options_init_v1_0,ember_client_options_init@EMBER_1");

void ember_client_options_init_v1_1(ember_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->retry_budget_ms = EMBER_RETRY_BUDGET_DEFAULT;
}

void ember_client_options_init_v1_0(ember_client_options *o)
{
    ember_client_options full;
    ember_client_options_init_v1_1(&full);
    full.struct_size = (uint32_t)EMBER_OPTIONS_FIRST_SIZE;
    memcpy(o, &full, EMBER_OPTIONS_FIRST_SIZE);
}

/* The retry budget in ms: the option, else EMBER_RETRY_BUDGET (seconds), else
 * the default. INVALID_ARGUMENT for a negative option or a bad variable. */
static int retry_budget(const ember_client_options *o, unsigned *ms, ember_error *err)
{
    if (o->retry_budget_ms >= 0) {
        if (o->retry_budget_ms > EMBER_RETRY_BUDGET_MAX_MS)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "retry_budget_ms %d: at most %d (a week)",
                                   o->retry_budget_ms, EMBER_RETRY_BUDGET_MAX_MS);
        *ms = (unsigned)o->retry_budget_ms;
        return 0;
    }
    if (o->retry_budget_ms != EMBER_RETRY_BUDGET_DEFAULT)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "retry_budget_ms %d: 0 (no budget), a positive number of ms, "
                               "or EMBER_RETRY_BUDGET_DEFAULT (-1)",
                               o->retry_budget_ms);
    const char *env = getenv("EMBER_RETRY_BUDGET");
    if (!env || !*env) {
        *ms = EMBER_RETRY_BUDGET_DEFAULT_MS;
        return 0;
    }
    char *end;
    errno = 0;
    double sec = strtod(env, &end);
    if (errno || end == env || *end || !(sec >= 0) || sec * 1000 > EMBER_RETRY_BUDGET_MAX_MS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "EMBER_RETRY_BUDGET is '%s': seconds from 0 (no budget) to "
                               "604800",
                               env);
    *ms = (unsigned)(sec * 1000 + 0.5);
    return 0;
}

int ember_struct_take(void *dst, size_t dst_size, const void *src, uint32_t src_size,
                      size_t first_size, const char *what, ember_error *err)
{
    size_t n = src_size ? src_size : first_size;
    if (n < first_size || n > dst_size)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s.struct_size is %u; this libember reads %zu to %zu bytes "
                               "(fill the struct with its init function first)",
                               what, (unsigned)src_size, first_size, dst_size);
    memcpy(dst, src, n);
    return 0;
}

static int parse_count(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > EMBER_MAX_SHARDS)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static void free_addrs(char **a, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

/* "a:1, b:2" → addresses. */
static int split_list(const char *list, const char *source, char ***out, unsigned *nout,
                      ember_error *err)
{
    unsigned cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    char **a = calloc(cap, sizeof *a);
    if (!a)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    unsigned n = 0;
    const char *p = list;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *s = p, *t = e;
        while (s < t && (*s == ' ' || *s == '\t'))
            s++;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (s == t) {
            free_addrs(a, n);
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "%s: empty shard address in '%s'", source, list);
        }
        a[n] = strndup(s, (size_t)(t - s));
        if (!a[n]) {
            free_addrs(a, n);
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        }
        n++;
        if (!*e)
            break;
        p = e + 1;
    }
    if (n > EMBER_MAX_SHARDS) {
        free_addrs(a, n);
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s: %u shards, at most %u", source, n, EMBER_MAX_SHARDS);
    }
    *out = a;
    *nout = n;
    return 0;
}

/* ember_rpc_target_check of every replica address of "h1:p|h2:p|...". */
static int replicas_check(const char *addr, ember_error *err)
{
    for (const char *p = addr;;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char one[512];
        if (len >= sizeof one)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT, "address '%.80s...' too long", p);
        memcpy(one, p, len);
        one[len] = '\0';
        int rc = ember_rpc_target_check(one, err);
        if (rc || !e)
            return rc;
        p = e + 1;
    }
}

/* A shard's address "h1:p|h2:p|...": its replicas, the first the leader
 * until a call learns otherwise (README "Replication and failover"). */
static int split_replicas(const char *addr, unsigned s, char ***out, unsigned *nout,
                          ember_error *err)
{
    unsigned cap = 1;
    for (const char *p = addr; *p; p++)
        cap += *p == '|';
    if (cap > EMBER_MAX_REPLICAS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "shard %u: %u replicas in '%.200s', at most %u", s, cap, addr,
                               EMBER_MAX_REPLICAS);
    char **a = calloc(cap, sizeof *a);
    if (!a)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    unsigned n = 0;
    for (const char *p = addr;;) {
        const char *e = strchr(p, '|');
        if (!e)
            e = p + strlen(p);
        if (e == p) {
            free_addrs(a, n);
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "shard %u: an empty replica address in '%.200s'", s, addr);
        }
        if (!(a[n++] = strndup(p, (size_t)(e - p)))) {
            free_addrs(a, n);
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        }
        if (!*e)
            break;
        p = e + 1;
    }
    *out = a;
    *nout = n;
    return 0;
}

/* "ember-{i}.svc:7070" × count → addresses. */
static int expand_pattern(const char *pat, unsigned count, const char *source, char ***out,
                          unsigned *nout, ember_error *err)
{
    if (!strstr(pat, "{i}"))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%s: shard pattern '%s' has no {i}", source, pat);
    char **a = calloc(count, sizeof *a);
    if (!a)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    for (unsigned i = 0; i < count; i++) {
        char num[16];
        int nl = snprintf(num, sizeof num, "%u", i);
        size_t len = 0;
        for (const char *p = pat; *p;)
            if (strncmp(p, "{i}", 3) == 0) {
                len += (size_t)nl;
                p += 3;
            } else {
                len++;
                p++;
            }
        char *s = malloc(len + 1), *w = s;
        if (!s) {
            free_addrs(a, i);
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        }
        for (const char *p = pat; *p;)
            if (strncmp(p, "{i}", 3) == 0) {
                memcpy(w, num, (size_t)nl);
                w += nl;
                p += 3;
            } else {
                *w++ = *p++;
            }
        *w = '\0';
        a[i] = s;
    }
    *out = a;
    *nout = count;
    return 0;
}

/* A pattern's addresses: the count from options.shard_count, else
 * EMBER_SHARD_COUNT. */
static int resolve_pattern(const ember_client_options *o, const char *pat, const char *pat_src,
                           char ***addrs, unsigned *n, ember_error *err)
{
    unsigned count = o->shard_count;
    if (count == 0) {
        const char *env_count = getenv("EMBER_SHARD_COUNT");
        if (!env_count || parse_count(env_count, &count) != 0)
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "%s given but no shard count (options.shard_count or "
                                   "EMBER_SHARD_COUNT, 1..%u; EMBER_SHARD_COUNT is '%s')",
                                   pat_src, EMBER_MAX_SHARDS,
                                   env_count ? env_count : "unset");
    }
    if (count > EMBER_MAX_SHARDS)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "%u shards, at most %u", count, EMBER_MAX_SHARDS);
    return expand_pattern(pat, count, pat_src, addrs, n, err);
}

/* Where the shards come from, the first that is set (ember.h): options.shards,
 * options.shard_pattern, EMBER_SHARDS, TF_CONFIG's cluster.ps,
 * EMBER_SHARD_PATTERN. What the caller says beats the environment; of the
 * environment, ember's own variable beats the generic TensorFlow one, so a job
 * that carries both can point its workers elsewhere without editing its cluster
 * spec; and a listed cluster beats a pattern. *source is a static string. */
static int resolve_shards(const ember_client_options *o, char ***addrs, unsigned *n,
                          const char **source, ember_error *err)
{
    if (o->shards && *o->shards) {
        *source = "options.shards";
        return split_list(o->shards, *source, addrs, n, err);
    }
    if (o->shard_pattern && *o->shard_pattern) {
        *source = "options.shard_pattern";
        return resolve_pattern(o, o->shard_pattern, *source, addrs, n, err);
    }
    const char *env_list = getenv("EMBER_SHARDS");
    if (env_list && *env_list) {
        *source = "EMBER_SHARDS";
        return split_list(env_list, *source, addrs, n, err);
    }
    const char *tf = getenv("TF_CONFIG");
    if (tf && *tf) {
        int rv = ember_tfconfig_ps(tf, addrs, n, err);
        if (rv != 0)
            return rv;
        if (*n > EMBER_MAX_SHARDS) {
            free_addrs(*addrs, *n);
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "TF_CONFIG: %u ps tasks, at most %u", *n,
                                   EMBER_MAX_SHARDS);
        }
        if (*n > 0) {
            *source = "TF_CONFIG";
            return 0;
        }
        /* A cluster without parameter servers: not ours, look further. */
    }
    const char *pat = getenv("EMBER_SHARD_PATTERN");
    if (pat && *pat) {
        *source = "EMBER_SHARD_PATTERN";
        return resolve_pattern(o, pat, *source, addrs, n, err);
    }
    return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                           "no shards: set options.shards or EMBER_SHARDS "
                           "(host:port,...), TF_CONFIG with a cluster.ps list%s, or a "
                           "pattern with {i} and a count (options.shard_pattern/"
                           "shard_count or EMBER_SHARD_PATTERN/EMBER_SHARD_COUNT)",
                           tf && *tf ? " (TF_CONFIG is set but lists no ps tasks)" : "");
}

static uint64_t random_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
            ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
    }
    return v ? v : 1;
}

/* The first sequence number of a shard: microseconds since the epoch. A client
 * that restarts with the same client_id then continues above every sequence it
 * used before (no client sends a million pushes a second to one shard), so the
 * servers never mistake its new pushes for old retries. */
static uint64_t first_sequence(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u + 1;
}

/* ---- open / close --------------------------------------------------------------- */

static void *poller_main(void *arg)
{
    ember_client *c = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        ember_cq_acquire(ev.tag);
        ember_shard_call *sc = ev.tag;
        ember_call *op = sc->op;
        pthread_mutex_lock(&op->mu);
        sc->finished = 1;
        if (--op->outstanding == 0)
            pthread_cond_broadcast(&op->cv);
        /* The op may be reused as soon as this unlock lets its waiter go. */
        pthread_mutex_unlock(&op->mu);
    }
    return NULL;
}

static void op_destroy(ember_call *op);

static void client_free(ember_client *c)
{
    if (c->shards) {
        for (unsigned s = 0; s < c->nshards; s++) {
            for (unsigned k = 0; c->shards[s].ch && k < c->shards[s].nch * c->shards[s].nreplicas;
                 k++)
                ember_rpc_channel_close(c->shards[s].ch[k]);
            free(c->shards[s].ch);
            free(c->shards[s].addr);
            free_addrs(c->shards[s].replica, c->shards[s].nreplicas);
        }
        free(c->shards);
    }
    while (c->free_ops) {
        ember_call *op = c->free_ops;
        c->free_ops = op->next;
        op_destroy(op);
    }
    if (c->reqpool) {
        pthread_mutex_lock(&c->reqpool->mu);
        c->reqpool->closed = 1;
        pthread_mutex_unlock(&c->reqpool->mu);
        reqpool_unref(c->reqpool);
    }
    pthread_mutex_destroy(&c->pool_mu);
    pthread_mutex_destroy(&c->active_mu);
    pthread_cond_destroy(&c->active_cv);
    free(c);
}

ember_client *ember_client_open(const ember_client_options *caller_opts, ember_error *err)
{
    ember_client_options o;
    ember_client_options_init_v1_1(&o);
    ember_error_clear(err);
    if (caller_opts && ember_struct_take(&o, sizeof o, caller_opts, caller_opts->struct_size,
                                         EMBER_OPTIONS_FIRST_SIZE, "ember_client_options",
                                         err) != 0)
        return NULL;
    const ember_client_options *opts = &o;
    if (opts->wire_dtype != EMBER_DTYPE_FLOAT32 && opts->wire_dtype != EMBER_DTYPE_FLOAT16 &&
        opts->wire_dtype != EMBER_DTYPE_BFLOAT16) {
        ember_error_set(err, EMBER_INVALID_ARGUMENT, "unknown wire_dtype %d",
                        (int)opts->wire_dtype);
        return NULL;
    }
    unsigned budget_ms = 0;
    if (retry_budget(opts, &budget_ms, err) != 0)
        return NULL;
    unsigned nch = opts->channels_per_shard ? opts->channels_per_shard : 1;
    if (nch > EMBER_MAX_CHANNELS) {
        ember_error_set(err, EMBER_INVALID_ARGUMENT,
                        "channels_per_shard %u: at most %u", nch, EMBER_MAX_CHANNELS);
        return NULL;
    }
    char **addrs = NULL;
    unsigned n = 0;
    const char *source = NULL;
    if (resolve_shards(opts, &addrs, &n, &source, err) != 0)
        return NULL;
    for (unsigned i = 0; i < n; i++) {
        ember_error e;
        if (replicas_check(addrs[i], &e) != 0) {
            shard_failed(err, i, ember_error_set(err, EMBER_INVALID_ARGUMENT, "shard %u: %s", i,
                                                 e.message));
            free_addrs(addrs, n);
            return NULL;
        }
        for (unsigned j = 0; j < i; j++)
            if (strcmp(addrs[i], addrs[j]) == 0) {
                shard_failed(err, i, ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                                     "shards %u and %u are both %s", j, i,
                                                     addrs[i]));
                free_addrs(addrs, n);
                return NULL;
            }
    }

    ember_client *c = calloc(1, sizeof *c);
    if (!c) {
        free_addrs(addrs, n);
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->pool_mu, NULL);
    pthread_mutex_init(&c->active_mu, NULL);
    pthread_cond_init(&c->active_cv, NULL);
    c->retry_budget_ms = budget_ms;
    c->notice = opts->shard_notice;
    c->notice_arg = opts->shard_notice_arg;
    const char *quiet = getenv("EMBER_RETRY_QUIET");
    c->notice_quiet = quiet && *quiet && strcmp(quiet, "0") != 0;
    c->nshards = n;
    c->shard_source = source;
    c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : EMBER_DEFAULT_TIMEOUT_MS;
    c->max_retries = opts->max_retries ? opts->max_retries : EMBER_DEFAULT_RETRIES;
    c->wire_dtype = opts->wire_dtype;
    c->client_id = opts->client_id ? opts->client_id : random_id();
    c->chunk_bytes = EMBER_CHUNK_BYTES;
    for (int m = 0; m < EMBER_M_COUNT; m++)
        c->methods[m] = grpc_slice_from_static_string(method_paths[m]);

    c->reqpool = calloc(1, sizeof *c->reqpool);
    c->shards = calloc(n, sizeof *c->shards);
    if (!c->reqpool || !c->shards) {
        free_addrs(addrs, n);
        client_free(c);
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->reqpool->mu, NULL);
    atomic_init(&c->reqpool->refs, 1);

    ember_rpc_channel_options co;
    ember_rpc_channel_options_init(&co);
    co.own_connection = nch > 1;
    co.tls_ca = opts->tls_ca ? opts->tls_ca : getenv("EMBER_TLS_CA");
    co.tls_cert = opts->tls_cert ? opts->tls_cert : getenv("EMBER_TLS_CERT");
    co.tls_key = opts->tls_key ? opts->tls_key : getenv("EMBER_TLS_KEY");
    co.tls_server_name =
        opts->tls_server_name ? opts->tls_server_name : getenv("EMBER_TLS_SERVER_NAME");
    char token[4096];
    co.token = opts->token ? opts->token : getenv("EMBER_TOKEN");
    const char *token_file = opts->token_file ? opts->token_file : getenv("EMBER_TOKEN_FILE");
    if (!co.token && token_file && *token_file) {
        if (ember_rpc_read_token(token_file, token, sizeof token, err)) {
            free_addrs(addrs, n);
            return NULL;
        }
        co.token = token;
    }
    uint64_t seq0 = first_sequence();
    for (unsigned s = 0; s < n; s++) {
        ember_shard *sh = &c->shards[s];
        sh->addr = addrs[s];
        addrs[s] = NULL;
        atomic_init(&sh->rr, 0);
        atomic_init(&sh->seq, seq0);
        atomic_init(&sh->down, 0);
        atomic_init(&sh->down_since_ms, 0);
        atomic_init(&sh->up_ms, 0);
        atomic_init(&sh->leader, 0);
        if (split_replicas(sh->addr, s, &sh->replica, &sh->nreplicas, err)) {
            free_addrs(addrs, n);
            client_free(c);
            return NULL;
        }
        sh->ch = calloc((size_t)nch * sh->nreplicas, sizeof *sh->ch);
        if (!sh->ch) {
            free_addrs(addrs, n);
            client_free(c);
            ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            return NULL;
        }
        sh->nch = nch;
        for (unsigned k = 0; k < nch * sh->nreplicas; k++) {
            sh->ch[k] = ember_rpc_channel_open(sh->replica[k / nch], &co, err);
            if (!sh->ch[k]) {
                free_addrs(addrs, n);
                client_free(c);
                return NULL;
            }
        }
    }
    free_addrs(addrs, n);
    memset(token, 0, sizeof token); /* the channels hold their own copies */

    grpc_init(); /* for the completion queue; released in ember_client_close */
    c->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&c->poller, NULL, poller_main, c) != 0) {
        grpc_completion_queue_shutdown(c->cq);
        grpc_completion_queue_destroy(c->cq);
        grpc_shutdown();
        client_free(c);
        ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "cannot start a thread");
        return NULL;
    }
    return c;
}

/* EMBER_CANCEL_POLL_MS from now on `clk`: how long a wait sleeps before it
 * looks at c->cancelled (or c->active) again. */
static struct timespec poll_deadline(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    ts.tv_nsec += EMBER_CANCEL_POLL_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void ember_client_cancel(ember_client *c)
{
    if (c)
        atomic_store(&c->cancelled, 1);
}

void ember_client_close(ember_client *c)
{
    if (!c)
        return;
    /* Calls waiting in other threads see the flag within EMBER_CANCEL_POLL_MS,
     * cancel their attempts and return; wait for them to let go of c. */
    ember_client_cancel(c);
    pthread_mutex_lock(&c->active_mu);
    while (atomic_load(&c->active) > 0) {
        struct timespec ts = poll_deadline(CLOCK_REALTIME);
        pthread_cond_timedwait(&c->active_cv, &c->active_mu, &ts);
    }
    pthread_mutex_unlock(&c->active_mu);
    /* Channels first (nothing is in flight: async calls were waited on), then the
     * queue, whose shutdown ends the poller. */
    for (unsigned s = 0; s < c->nshards; s++) {
        for (unsigned k = 0; k < c->shards[s].nch * c->shards[s].nreplicas; k++)
            ember_rpc_channel_close(c->shards[s].ch[k]);
        c->shards[s].nch = 0;
    }
    grpc_completion_queue_shutdown(c->cq);
    pthread_join(c->poller, NULL);
    grpc_completion_queue_destroy(c->cq);
    client_free(c);
    grpc_shutdown();
}

unsigned ember_client_shard_count(const ember_client *c)
{
    return c ? c->nshards : 0;
}

const char *ember_client_shard_address(const ember_client *c, unsigned i)
{
    return c && i < c->nshards ? c->shards[i].addr : NULL;
}

uint64_t ember_client_id(const ember_client *c)
{
    return c ? c->client_id : 0;
}

const char *ember_client_shard_source(const ember_client *c)
{
    return c ? c->shard_source : NULL;
}

/* ---- test hooks (declared in client/debug.h) --------------------------------- */

void ember_client_debug_resend_pushes(ember_client *c, int on)
{
    atomic_store(&c->debug_resend_pushes, on);
}

void ember_client_debug_chunk_bytes(ember_client *c, size_t bytes)
{
    c->chunk_bytes = bytes ? bytes : EMBER_CHUNK_BYTES;
}

uint64_t ember_client_debug_duplicate_acks(const ember_client *c)
{
    return atomic_load(&((ember_client *)c)->debug_duplicate_acks);
}

/* ---- ops -------------------------------------------------------------------- */

static void op_destroy(ember_call *op)
{
    for (size_t i = 0; i < op->cap_calls; i++)
        free(op->calls[i].resp_copy);
    free(op->calls);
    ember_batch_free(&op->pull_b);
    ember_batch_free(&op->push_b);
    free(op->rowptr);
    free(op->straddle);
    free(op->pull_scores);
    free(op->push_scores);
    free(op->gfound);
    pthread_mutex_destroy(&op->mu);
    pthread_cond_destroy(&op->cv);
    free(op);
}

ember_call *ember_call_acquire(ember_client *c, int kind)
{
    pthread_mutex_lock(&c->pool_mu);
    ember_call *op = c->free_ops;
    if (op) {
        c->free_ops = op->next;
        c->nfree_ops--;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (!op) {
        op = calloc(1, sizeof *op);
        if (!op)
            return NULL;
        op->c = c;
        pthread_mutex_init(&op->mu, NULL);
        pthread_condattr_t ca; /* timed waits on the monotonic clock */
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&op->cv, &ca);
        pthread_condattr_destroy(&ca);
        ember_batch_init(&op->pull_b);
        ember_batch_init(&op->push_b);
    }
    op->next = NULL;
    op->kind = kind;
    op->retry = 1;
    op->keep_slices = 0;
    op->timeout_ms = c->timeout_ms;
    op->counted = 0;
    op->outstanding = 0;
    op->ncalls = 0;
    return op;
}

static void call_clear_result(ember_shard_call *sc)
{
    if (sc->recv) {
        grpc_byte_buffer_destroy(sc->recv);
        sc->recv = NULL;
    }
    sc->resp = NULL;
    sc->resp_len = 0;
}

void ember_call_release(ember_call *op)
{
    if (!op)
        return;
    ember_client *c = op->c;
    for (size_t i = 0; i < op->ncalls; i++) {
        ember_shard_call *sc = &op->calls[i];
        call_clear_result(sc);
        reqbuf_put(sc->req);
        sc->req = NULL;
    }
    op->ncalls = 0;
    int counted = op->counted;
    op->counted = 0;
    pthread_mutex_lock(&c->pool_mu);
    if (c->nfree_ops < EMBER_POOL_OPS) {
        op->next = c->free_ops;
        c->free_ops = op;
        c->nfree_ops++;
        op = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (op)
        op_destroy(op);
    /* Last, and touching nothing of c after the decrement outside active_mu:
     * ember_client_close may free c as soon as it reads 0. No lock on the
     * common path; close polls, so a decrement that missed the cancel wakes
     * nobody and is still seen. */
    if (counted) {
        if (!atomic_load(&c->cancelled)) {
            atomic_fetch_sub(&c->active, 1);
        } else {
            pthread_mutex_lock(&c->active_mu);
            atomic_fetch_sub(&c->active, 1);
            pthread_cond_broadcast(&c->active_cv);
            pthread_mutex_unlock(&c->active_mu);
        }
    }
}

ember_shard_call *ember_call_add(ember_call *op, unsigned s, ember_method method, size_t len)
{
    if (op->ncalls == op->cap_calls) {
        size_t cap = op->cap_calls ? 2 * op->cap_calls : (op->c->nshards < 4 ? 4 : op->c->nshards);
        ember_shard_call *p = realloc(op->calls, cap * sizeof *p);
        if (!p)
            return NULL;
        memset(p + op->cap_calls, 0, (cap - op->cap_calls) * sizeof *p);
        op->calls = p;
        op->cap_calls = cap;
    }
    ember_shard_call *sc = &op->calls[op->ncalls];
    sc->req = reqbuf_get(op->c->reqpool, len ? len : 1);
    if (!sc->req)
        return NULL;
    op->ncalls++;
    sc->op = op;
    sc->shard = s;
    sc->method = method;
    sc->req_len = len;
    sc->req_data = sc->req->data;
    sc->attempts = 0;
    sc->resend = 0;
    sc->failed_over = 0;
    sc->follower = 0;
    sc->call = NULL;
    sc->recv = NULL;
    sc->code = 0;
    sc->resp = NULL;
    sc->resp_len = 0;
    sc->msg[0] = '\0';
    sc->pull_lo = sc->n_pull = sc->push_lo = sc->n_push = 0;
    return sc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts one attempt of shard call sc. Returns 1 if a completion will come. */
static int call_start(ember_call *op, ember_shard_call *sc)
{
    ember_client *c = op->c;
    ember_shard *sh = &c->shards[sc->shard];
    unsigned rr = atomic_fetch_add(&sh->rr, 1), r = atomic_load(&sh->leader);
    if (sc->follower && sh->nreplicas > 1) /* one of the others, round robin */
        r = (r + 1 + (rr / sh->nch) % (sh->nreplicas - 1)) % sh->nreplicas;
    grpc_channel *ch = sh->ch[r * sh->nch + rr % sh->nch];
    sc->attempts++;
    sc->attempt_ms = now_ms();
    sc->finished = 0;
    sc->recv = NULL;
    sc->status = GRPC_STATUS_OK;
    sc->details = grpc_empty_slice();
    grpc_metadata_array_init(&sc->imd);
    grpc_metadata_array_init(&sc->tmd);
    sc->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                        c->methods[sc->method], NULL, op->deadline, NULL);
    if (!sc->call)
        goto fail;

    /* gRPC sends straight from the pooled buffer and releases it when done. */
    atomic_fetch_add(&sc->req->refs, 1);
    grpc_slice body = grpc_slice_new_with_user_data(sc->req->data, sc->req_len,
                                                    reqbuf_slice_done, sc->req);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &sc->imd;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &sc->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &sc->tmd;
    ops[5].data.recv_status_on_client.status = &sc->status;
    ops[5].data.recv_status_on_client.status_details = &sc->details;
    pthread_mutex_lock(&op->mu);
    op->outstanding++;
    pthread_mutex_unlock(&op->mu);
    grpc_call *call = sc->call;
    ember_cq_release(sc);
    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, sc, NULL);
    /* The byte buffer is ours to destroy; the slices it sends are gRPC's. */
    grpc_byte_buffer_destroy(send);
    if (ce == GRPC_CALL_OK)
        return 1;
    pthread_mutex_lock(&op->mu);
    op->outstanding--;
    pthread_mutex_unlock(&op->mu);
    grpc_call_unref(sc->call);
    sc->call = NULL;
fail:
    grpc_metadata_array_destroy(&sc->imd);
    grpc_metadata_array_destroy(&sc->tmd);
    sc->code = EMBER_INTERNAL;
    snprintf(sc->msg, sizeof sc->msg, "cannot start a call to %s", method_paths[sc->method]);
    sc->finished = 1;
    return 0;
}

/* Ends an attempt: keeps status, details (in sc->msg) and the reply buffer. */
static void call_end(ember_shard_call *sc)
{
    if (sc->call) {
        grpc_call_unref(sc->call);
        sc->call = NULL;
        grpc_metadata_array_destroy(&sc->imd);
        grpc_metadata_array_destroy(&sc->tmd);
    }
    sc->code = (int)sc->status;
    size_t dl = GRPC_SLICE_LENGTH(sc->details);
    if (dl >= sizeof sc->msg)
        dl = sizeof sc->msg - 1;
    memcpy(sc->msg, GRPC_SLICE_START_PTR(sc->details), dl);
    sc->msg[dl] = '\0';
    grpc_slice_unref(sc->details);
    sc->details = grpc_empty_slice();
}

void ember_call_start(ember_call *op)
{
    op->start_ms = now_ms();
    op->deadline = ember_rpc_deadline((int)op->timeout_ms);
    for (size_t i = 0; i < op->ncalls; i++)
        call_start(op, &op->calls[i]);
}

/* Waits for the attempts in flight. Once the client is cancelled, cancels
 * them (each then completes with CANCELLED at once). The waits are bounded so
 * that a cancel is seen within EMBER_CANCEL_POLL_MS. */
static void wait_outstanding(ember_call *op)
{
    int cancelled_calls = 0;
    pthread_mutex_lock(&op->mu);
    while (op->outstanding > 0) {
        if (!cancelled_calls && atomic_load(&op->c->cancelled)) {
            cancelled_calls = 1;
            pthread_mutex_unlock(&op->mu);
            /* sc->call belongs to this thread; the poller only sets flags. */
            for (size_t i = 0; i < op->ncalls; i++)
                if (op->calls[i].call)
                    grpc_call_cancel(op->calls[i].call, NULL);
            pthread_mutex_lock(&op->mu);
            continue;
        }
        struct timespec ts = poll_deadline(CLOCK_MONOTONIC);
        pthread_cond_timedwait(&op->cv, &op->mu, &ts);
    }
    pthread_mutex_unlock(&op->mu);
}

static int64_t ms_until(gpr_timespec deadline)
{
    gpr_timespec d = gpr_time_sub(deadline, gpr_now(GPR_CLOCK_MONOTONIC));
    return (int64_t)d.tv_sec * 1000 + d.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Sleeps ms, in slices, until then or until c is cancelled. Returns 1 when
 * cancelled. */
static int nap(ember_client *c, int64_t ms)
{
    int64_t until = now_ms() + ms;
    for (;;) {
        if (atomic_load(&c->cancelled))
            return 1;
        int64_t left = until - now_ms();
        if (left <= 0)
            return 0;
        sleep_ms(left < EMBER_CANCEL_POLL_MS ? left : EMBER_CANCEL_POLL_MS);
    }
}

/* Equal jitter: half the backoff, plus up to as much again at random, so that
 * the workers of a job that lost the same shard do not retry in step. */
static int64_t jittered(int64_t backoff, uint64_t *rng)
{
    uint64_t z = (*rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return backoff / 2 + (int64_t)(z % (uint64_t)(backoff / 2 + 1));
}

/* Tells the caller (options.shard_notice) or stderr of a shard's change. */
static void notice(ember_client *c, unsigned s, int available, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void notice(ember_client *c, unsigned s, int available, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (c->notice)
        c->notice(c->notice_arg, s, c->shards[s].addr, available, line);
    else if (!c->notice_quiet)
        fprintf(stderr, "ember: %s\n", line);
}

/* Shard s failed a call that will be retried within the budget: said once. */
static void shard_down(ember_client *c, const ember_shard_call *sc)
{
    ember_shard *sh = &c->shards[sc->shard];
    /* An attempt that started before the shard was last seen back failed on the
     * old connection: no news. */
    if (sc->attempt_ms < (int64_t)atomic_load(&sh->up_ms))
        return;
    if (atomic_load(&sh->down) || atomic_exchange(&sh->down, 1))
        return;
    atomic_store(&sh->down_since_ms, now_ms());
    notice(c, sc->shard, 0, "shard %u (%s) unavailable (%s: %.200s); retrying for up to %.1f s",
           sc->shard, sh->addr, ember_status_name(sc->code), sc->msg,
           c->retry_budget_ms / 1000.0);
}

/* Shard s answered: if it was down, say it is back. */
static void shard_up(ember_client *c, unsigned s)
{
    ember_shard *sh = &c->shards[s];
    if (!atomic_load(&sh->down) || !atomic_exchange(&sh->down, 0))
        return;
    atomic_store(&sh->up_ms, now_ms());
    notice(c, s, 1, "shard %u (%s) is back after %.1f s", s, sh->addr,
           (now_ms() - (int64_t)atomic_load(&sh->down_since_ms)) / 1000.0);
}

/* Counts op in c->active until ember_call_release (ember_client_close waits
 * for the count to fall to 0). */
static void count_active(ember_call *op)
{
    if (!op->counted) {
        atomic_fetch_add(&op->c->active, 1);
        op->counted = 1;
    }
}

/* Makes the reply contiguous: in place when gRPC handed over one uncompressed
 * slice, else copied into the call's reusable buffer. */
int ember_shard_call_take_reply(ember_shard_call *sc)
{
    grpc_byte_buffer *bb = sc->recv;
    sc->resp = NULL;
    sc->resp_len = 0;
    if (!bb)
        return 0;
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        /* Through a pointer: a small reply is inlined in the slice struct itself,
         * and a copy of the struct would leave us pointing at the stack. */
        const grpc_slice *s = &bb->data.raw.slice_buffer.slices[0];
        sc->resp = GRPC_SLICE_START_PTR(*s);
        sc->resp_len = GRPC_SLICE_LENGTH(*s);
        return 0;
    }
    size_t n = grpc_byte_buffer_length(bb);
    if (n > sc->resp_copy_cap) {
        uint8_t *p = realloc(sc->resp_copy, n);
        if (!p)
            return EMBER_RESOURCE_EXHAUSTED;
        sc->resp_copy = p;
        sc->resp_copy_cap = n;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return EMBER_INTERNAL;
    size_t at = 0;
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&rd, &s)) {
        size_t sl = GRPC_SLICE_LENGTH(s);
        if (at + sl <= n)
            memcpy(sc->resp_copy + at, GRPC_SLICE_START_PTR(s), sl);
        at += sl;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    if (at != n)
        return EMBER_INTERNAL;
    sc->resp = sc->resp_copy;
    sc->resp_len = n;
    return 0;
}

int ember_call_shard_error(ember_call *op, unsigned s, int code, ember_error *err,
                           const char *fmt, ...)
{
    if (!err)
        return code;
    char body[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    return shard_failed(err, s,
                        ember_error_set(err, code, "shard %u (%s): %s", s, op->c->shards[s].addr,
                                        body));
}

/* A shard refused a key as another shard's (server/shard.c): the client's list
 * and the servers' --shard-index disagree. Says how, from every shard's
 * ServerInfo (ember_check_shards), with the shard's own refusal after it. */
static int not_owner(ember_call *op, const ember_shard_call *bad, ember_error *err)
{
    ember_error why;
    int rc = ember_check_shards(op->c, &why);
    if (rc == EMBER_FAILED_PRECONDITION) {
        ember_call_shard_error(op, bad->shard, EMBER_FAILED_PRECONDITION, err, "%s", bad->msg);
        if (err) {
            char tail[EMBER_ERROR_MSG_MAX];
            snprintf(tail, sizeof tail, "%s", err->message);
            ember_error_set(err, EMBER_FAILED_PRECONDITION, "%s [%s]", why.message, tail);
        }
        return EMBER_FAILED_PRECONDITION;
    }
    return ember_call_shard_error(op, bad->shard, EMBER_FAILED_PRECONDITION, err,
                                  "%s (the shard list may be out of order; checking it with "
                                  "ServerInfo %s)",
                                  bad->msg, rc ? "failed" : "found every shard in its place");
}

/* Whether a finished attempt may be tried again. With a budget, an attempt
 * that passed its own deadline (a stopped or overloaded shard) is retried
 * too: pushes carry their sequence number, so a shard that applied the first
 * attempt acknowledges the second as a duplicate. */
/* Replicas: which of shard s's answers the health service "ember.v1.Leader"
 * SERVING now (a follower and a fenced old leader answer NOT_SERVING, a dead or
 * frozen one not at all). Its calls go there from now on; 1 when that moved
 * them. Health needs no credentials, so a worker's token is enough. */
static int leader_moved(ember_client *c, unsigned s)
{
    ember_shard *sh = &c->shards[s];
    /* HealthCheckRequest{service = "ember.v1.Leader"} */
    static const uint8_t ask[] = "\x0a\x0f" "ember.v1.Leader";
    unsigned cur = atomic_load(&sh->leader);
    for (unsigned k = 1; k <= sh->nreplicas; k++) {
        unsigned r = (cur + k) % sh->nreplicas; /* the others first, the current last */
        uint8_t *resp = NULL;
        size_t len = 0;
        ember_error e;
        int rc = ember_rpc_unary(sh->ch[r * sh->nch], "/grpc.health.v1.Health/Check", ask,
                                 sizeof ask - 1, EMBER_LEADER_ASK_MS, &resp, &len, &e);
        /* HealthCheckResponse{status = SERVING}: field 1, varint 1 */
        int serving = !rc && len == 2 && resp[0] == 0x08 && resp[1] == 0x01;
        free(resp);
        if (!serving)
            continue;
        if (r == cur)
            return 0;
        atomic_store(&sh->leader, r);
        notice(c, s, 1, "shard %u (%s): the leader is now %s", s, sh->addr, sh->replica[r]);
        return 1;
    }
    return 0;
}

/* A failed call of a shard with replicas that its leader may have moved from:
 * the leader said "not the leader", or did not answer. */
static int may_have_moved(const ember_call *op, const ember_shard_call *sc)
{
    const ember_shard *sh = &op->c->shards[sc->shard];
    if (sh->nreplicas < 2 || sc->failed_over || sc->follower || !op->retry)
        return 0;
    return sc->code == EMBER_UNAVAILABLE || sc->code == EMBER_DEADLINE_EXCEEDED ||
           (sc->code == EMBER_FAILED_PRECONDITION && strstr(sc->msg, "not the leader"));
}

static int retryable(const ember_call *op, const ember_shard_call *sc, int budget)
{
    if (!op->retry)
        return 0;
    if (budget)
        return sc->code == EMBER_UNAVAILABLE || sc->code == EMBER_DEADLINE_EXCEEDED;
    return sc->code == EMBER_UNAVAILABLE && sc->attempts <= op->c->max_retries;
}

int ember_call_finish(ember_call *op, ember_error *err)
{
    ember_client *c = op->c;
    const size_t n = op->ncalls;
    int64_t backoff = EMBER_BACKOFF_FIRST_MS;
    const int budget = op->retry && c->retry_budget_ms > 0;
    uint64_t rng = (uint64_t)op->start_ms ^ (uint64_t)(uintptr_t)op ^ c->client_id;
    count_active(op);
    for (;;) {
        wait_outstanding(op);
        int again = 0, resend = 0, moved = 0;
        const int cancelled = atomic_load(&c->cancelled);
        for (size_t i = 0; i < n; i++) {
            ember_shard_call *sc = &op->calls[i];
            if (!sc->call)
                continue;
            call_end(sc);
            if (cancelled) {
                /* what the cancel cut short; a shard's own answer stands */
                if (sc->code == EMBER_CANCELLED || retryable(op, sc, budget)) {
                    sc->code = EMBER_CANCELLED;
                    snprintf(sc->msg, sizeof sc->msg, "client cancelled");
                }
            } else if (may_have_moved(op, sc) && leader_moved(c, sc->shard)) {
                /* resent once to the new leader, with its sequence number: a
                 * push it copied from the old one is a duplicate there (README
                 * "Replication and failover") */
                call_clear_result(sc);
                sc->resend = 1;
                sc->failed_over = 1;
                moved++;
            } else if (retryable(op, sc, budget)) {
                if (budget)
                    shard_down(c, sc);
                call_clear_result(sc);
                sc->resend = 1;
                again++;
            } else if (sc->code == 0 && sc->attempts == 1 &&
                       (sc->method == EMBER_M_PUSH || sc->method == EMBER_M_PUSHPULL ||
                        sc->method == EMBER_M_ERASE) &&
                       atomic_load(&c->debug_resend_pushes)) {
                /* Test hook: as if the ack had been lost and the push retried. */
                call_clear_result(sc);
                sc->resend = 1;
                resend++;
                shard_up(c, sc->shard);
            } else {
                shard_up(c, sc->shard); /* it answered, well or not */
            }
        }
        if (cancelled)
            break;
        if (!again && !resend && !moved)
            break;
        if (moved) {
            /* the new leader gets an attempt of its own, at once */
            op->deadline = ember_rpc_deadline((int)op->timeout_ms);
        } else if (again && budget) {
            /* Retry until the budget has passed, each attempt with its own
             * deadline; the last one starts no earlier than the budget's end. */
            /* +1: both clock readings are truncated to the ms, and the call
             * must not fail before the whole budget has passed. */
            int64_t left = op->start_ms + c->retry_budget_ms + 1 - now_ms();
            int stop = left <= 0;
            if (!stop) {
                int64_t wait = jittered(backoff, &rng);
                stop = nap(c, wait < left ? wait : left);
                backoff = backoff * 2 < EMBER_BACKOFF_CAP_MS ? backoff * 2 : EMBER_BACKOFF_CAP_MS;
                if (stop)
                    for (size_t i = 0; i < n; i++)
                        if (op->calls[i].resend) {
                            op->calls[i].code = EMBER_CANCELLED;
                            snprintf(op->calls[i].msg, sizeof op->calls[i].msg,
                                     "client cancelled while retrying");
                        }
            }
            if (stop) {
                for (size_t i = 0; i < n; i++)
                    op->calls[i].resend = 0;
                break;
            }
            op->deadline = ember_rpc_deadline((int)op->timeout_ms);
        } else if (again) {
            int64_t left = ms_until(op->deadline);
            if (backoff >= left) {
                /* No retry may outlive the deadline: report what we have. */
                for (size_t i = 0; i < n; i++)
                    op->calls[i].resend = 0;
                break;
            }
            sleep_ms(backoff);
            backoff *= 2;
        }
        for (size_t i = 0; i < n; i++) {
            ember_shard_call *sc = &op->calls[i];
            if (sc->resend) {
                sc->resend = 0;
                call_start(op, sc);
            }
        }
    }

    /* Report the failure of the lowest shard (of its first call). */
    ember_shard_call *bad = NULL;
    for (size_t i = 0; i < n; i++) {
        ember_shard_call *sc = &op->calls[i];
        if (sc->code == 0 && !op->keep_slices && ember_shard_call_take_reply(sc) != 0) {
            sc->code = EMBER_RESOURCE_EXHAUSTED;
            snprintf(sc->msg, sizeof sc->msg, "cannot copy the reply");
        }
        if (sc->code != 0 && (!bad || sc->shard < bad->shard))
            bad = sc;
    }
    if (!bad) {
        ember_error_clear(err);
        return 0;
    }
    const char *msg = bad->msg[0] ? bad->msg : ember_status_name(bad->code);
    if (bad->code == EMBER_FAILED_PRECONDITION && strstr(msg, EMBER_NOT_OWNER_MARK) &&
        (bad->method == EMBER_M_PULL || bad->method == EMBER_M_PUSH ||
         bad->method == EMBER_M_PUSHPULL))
        return not_owner(op, bad, err);
    if (bad->attempts > 1 && budget)
        return ember_call_shard_error(op, bad->shard, bad->code, err,
                                      "%s (%u attempts over %.1f s; retry budget %.1f s)", msg,
                                      bad->attempts, (now_ms() - op->start_ms) / 1000.0,
                                      c->retry_budget_ms / 1000.0);
    if (bad->attempts > 1)
        return ember_call_shard_error(op, bad->shard, bad->code, err, "%s (%u attempts)", msg,
                                      bad->attempts);
    return ember_call_shard_error(op, bad->shard, bad->code, err, "%s", msg);
}

int ember_table_name_check(const char *name, ember_error *err)
{
    if (!name || !*name)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no table name");
    size_t len = strnlen(name, EMBER_TABLE_NAME_MAX + 1);
    if (len > EMBER_TABLE_NAME_MAX)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "table name '%.*s...' is longer than %d characters",
                               EMBER_TABLE_NAME_MAX, name, EMBER_TABLE_NAME_MAX);
    return 0;
}

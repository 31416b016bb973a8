/*
 * admin.c — ember.v1.Admin and grpc.health.v1.Health/Check, through protobuf-c's
 * generated code (not the hot path).
 *
 * TableConfig on the wire → ember_table_config: an absent `optimizer` or
 * `initializer` means ember's defaults (SGD lr 0.01, uniform(-0.01, 0.01)); a
 * present optimizer's hyper-parameters left at 0 take their defaults too (lr
 * 0.01, eps 1e-8, initial_accumulator 0.1, beta1 0.9, beta2 0.999, lr_power
 * -0.5); an initializer of uniform/normal with a = b = 0 takes the default
 * bounds (-0.01, 0.01) / (mean 0, stddev 0.01).
 *
 * Save/Load: one file per table, <dir>/<table>.ckpt (the layout and the saves
 * are in ckpt.h), labelled with this shard's index and count. Save runs on the
 * checkpointer thread. A Load into an existing table fills a fresh table of the
 * same config and swaps it in (registry replace), so calls still running on the
 * old one never see a half-loaded table. Import is all-or-nothing per chunk, not
 * per stream.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ember/v1/ember.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "server/ckpt.h"
#include "server/auth.h"
#include "server/log.h"
#include "server/repl.h"
#include "server/rpc.h"
#include "server/server.h"
#include "server/table_config.h"
#include "storage/checkpoint.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0"
#endif

/* ---- helpers ------------------------------------------------------------- */

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, const uint8_t *req,
                               size_t len, ember_error *err)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, req);
    if (!m)
        ember_error_set(err, EMBER_INVALID_ARGUMENT, "malformed %s (%zu bytes)", d->name, len);
    return m;
}

static grpc_slice pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    return s;
}

int srv_table_by_name(const char *name, srv_table **out, ember_error *err)
{
    size_t len = name ? strlen(name) : 0;
    *out = NULL;
    if (!len)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no table name given");
    if (!ember_table_name_valid(name, len))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "table name '%.80s' is not [a-z0-9_.-]{1,64}", name);
    *out = srv_registry_get(srv.registry, name, len);
    if (!*out)
        return ember_error_set(err, EMBER_NOT_FOUND, "no table '%s' on shard %u", name,
                               srv.cfg.shard_index);
    return 0;
}

/* A TableInfo and everything it points to, in one allocation. */
typedef struct info_box {
    Ember__V1__TableInfo info;
    Ember__V1__TableConfig cfg;
    Ember__V1__OptimizerConfig opt;
    Ember__V1__InitializerConfig init;
    Ember__V1__TableStats stats;
    char name[EMBER_TABLE_NAME_MAX + 1];
    char backend[16];
} info_box;

static void info_fill(info_box *b, srv_table *t)
{
    const ember_table_config *c = ember_table_config_of(t->table);
    ember_table_stats s;
    ember__v1__table_info__init(&b->info);
    ember__v1__table_config__init(&b->cfg);
    ember__v1__optimizer_config__init(&b->opt);
    ember__v1__initializer_config__init(&b->init);
    ember__v1__table_stats__init(&b->stats);
    snprintf(b->name, sizeof b->name, "%s", t->name);
    snprintf(b->backend, sizeof b->backend, "%s",
             ember_table_backend_name(ember_table_backend_of(t->table)));
    b->info.name = b->name;
    b->info.config = &b->cfg;
    b->info.stats = &b->stats;
    b->cfg.dim = c->dim;
    /* the capacity in effect: the one asked for, rounded up to whole buckets */
    ember_table_stats_get(t->table, &s);
    b->cfg.capacity = s.capacity;
    b->cfg.score_policy = (Ember__V1__ScorePolicy)c->score_policy;
    b->cfg.seed = c->seed;
    b->cfg.optimizer = &b->opt;
    b->cfg.initializer = &b->init;
    b->cfg.admission_min_count = c->admission.min_count;
    b->cfg.admission_sketch_width = c->admission.sketch_width;
    b->cfg.zero_nonfinite = c->nonfinite == EMBER_NONFINITE_ZERO;
    b->cfg.backend = b->backend;
    b->cfg.hbm_bytes = c->hbm_bytes;
    b->cfg.max_capacity = c->max_capacity > c->capacity ? ember_table_config_max_slots(c) : 0;
    b->cfg.max_load_factor = c->max_capacity > c->capacity
                                 ? (c->max_load_factor > 0.0f ? c->max_load_factor
                                                              : EMBER_GROW_LOAD_FACTOR_DEFAULT)
                                 : 0.0f;
    b->cfg.ttl_seconds = ember_table_ttl(t->table);
    b->cfg.ack = (Ember__V1__AckMode)atomic_load(&t->ack);
    b->cfg.ack_replicas = atomic_load(&t->ack_replicas);
    b->info.uid = t->uid;
    b->opt.kind = (Ember__V1__Optimizer)c->optim.kind;
    b->opt.lr = c->optim.lr;
    b->opt.eps = c->optim.eps;
    b->opt.initial_accumulator = c->optim.initial_accumulator;
    b->opt.beta1 = c->optim.beta1;
    b->opt.beta2 = c->optim.beta2;
    b->opt.weight_decay = c->optim.weight_decay;
    b->opt.l1 = c->optim.l1;
    b->opt.l2 = c->optim.l2;
    b->opt.lr_power = c->optim.lr_power;
    b->opt.beta = c->optim.beta;
    b->init.kind = (Ember__V1__Initializer)c->init.kind;
    b->init.a = c->init.a;
    b->init.b = c->init.b;
    b->stats.size = s.size;
    b->stats.capacity = s.capacity;
    b->stats.load_factor = s.load_factor;
    b->stats.version = s.version;
    b->stats.evictions = s.evictions;
    b->stats.evicted = s.evicted;
    b->stats.insert_refused = s.insert_refused;
    b->stats.admission_drops = s.admission_drops;
    b->stats.nonfinite_zeroed = s.nonfinite_zeroed;
    b->stats.bytes_host = s.bytes_host;
    b->stats.bytes_device = s.bytes_device;
    b->stats.slots_device = s.slots_device;
    b->stats.slots_host = s.slots_host;
    b->stats.grows = s.grows;
    b->stats.expired = s.expired;
    b->stats.grow_pause_ns = s.grow_pause_ns;
    b->stats.grow_failures = s.grow_failures;
    b->stats.pulls = atomic_load_explicit(&t->counters.pulls, memory_order_relaxed);
    b->stats.pushes = atomic_load_explicit(&t->counters.pushes, memory_order_relaxed);
    b->stats.keys_pulled = atomic_load_explicit(&t->counters.keys_pulled, memory_order_relaxed);
    b->stats.keys_pushed = atomic_load_explicit(&t->counters.keys_pushed, memory_order_relaxed);
    b->stats.duplicate_pushes =
        atomic_load_explicit(&t->counters.duplicate_pushes, memory_order_relaxed);
    b->stats.erased = atomic_load_explicit(&t->counters.erased, memory_order_relaxed);
    b->stats.epoch = ember_table_epoch(t->table);
#define CO(f, g) b->stats.f = atomic_load_explicit(&t->counters.g, memory_order_relaxed)
    CO(coalesced_batches, co_batches);
    CO(coalesced_calls, co_calls);
    CO(coalesced_keys, co_keys);
    CO(coalesced_max_keys, co_max_keys);
    CO(coalesced_max_calls, co_max_calls);
    CO(coalesced_split_calls, co_split_calls);
#undef CO
}

/* TableInfo for `n` tables: the array of pointers protobuf-c wants, backed by
 * boxes; one free() for both. */
static Ember__V1__TableInfo **infos(srv_table **list, size_t n)
{
    size_t k = n ? n : 1;
    Ember__V1__TableInfo **ptrs = malloc(k * sizeof *ptrs + k * sizeof(info_box));
    if (!ptrs)
        return NULL;
    info_box *boxes = (info_box *)(void *)(ptrs + k);
    for (size_t i = 0; i < n; i++) {
        info_fill(&boxes[i], list[i]);
        ptrs[i] = &boxes[i].info;
    }
    return ptrs;
}

/* ---- table lifecycle ----------------------------------------------------- */

int srv_admin_create(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err)
{
    (void)w;
    Ember__V1__CreateTableRequest *r =
        (void *)unpack(&ember__v1__create_table_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    ember_table_config c;
    const ember_table_backend *be = NULL;
    ember_table *t = NULL;
    srv_table *st = NULL;
    size_t nl = strlen(r->name);
    int rc = 0;
    if (!ember_table_name_valid(r->name, nl)) {
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "table name '%.80s' is not [a-z0-9_.-]{1,64}", r->name);
        goto out;
    }
    if ((st = srv_registry_get(srv.registry, r->name, nl)) != NULL) {
        if (!r->if_not_exists)
            rc = ember_error_set(err, EMBER_ALREADY_EXISTS, "table '%s' already exists",
                                 r->name);
        goto reply;
    }
    if (r->config && ((unsigned)r->config->ack > EMBER__V1__ACK_MODE__ACK_REPLICATED ||
                      r->config->ack_replicas > SRV_REPL_MAX_FOLLOWERS)) {
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "ack %d / ack_replicas %u: ack is 0 (default), 1 (async) or 2 "
                             "(replicated), ack_replicas at most %d",
                             (int)r->config->ack, r->config->ack_replicas,
                             SRV_REPL_MAX_FOLLOWERS);
        goto out;
    }
    if ((rc = srv_table_config_from_proto(r->config, &c, err)) ||
        (rc = srv_backend_for_table(&srv.backend, r->config->backend, r->config->hbm_bytes,
                                    &be, &c.hbm_bytes, err)) ||
        (rc = srv_table_within_caps(&c, be, srv.cfg.max_table_host_bytes, srv.cfg.max_table_hbm_bytes,
                                    err)) ||
        (rc = ember_table_create(&c, be, &t, err)))
        goto out;
    /* what was asked, not what was chosen: a checkpoint of the table then
     * follows a changed server default (backend.h) */
    ember_ckpt_placement asked = {"", r->config->hbm_bytes};
    snprintf(asked.backend, sizeof asked.backend, "%s",
             r->config->backend ? r->config->backend : "");
    rc = srv_registry_add(srv.registry, r->name, t, &asked, &st, err);
    if (rc) {
        ember_table_destroy(t);
        if (rc == EMBER_ALREADY_EXISTS && r->if_not_exists && st) {
            rc = 0;
            goto reply;
        }
        goto out;
    }
    st = srv_registry_get(srv.registry, r->name, nl);
    if (!st) {
        rc = ember_error_set(err, EMBER_ABORTED, "table '%s' was dropped while created", r->name);
        goto out;
    }
    atomic_store(&st->ack, (int)r->config->ack);
    atomic_store(&st->ack_replicas, r->config->ack_replicas);
    srv_ckpt_ack_keep(st);
    srv_log(SRV_LOG_INFO, "table_created",
            "table=%s dim=%u capacity=%llu max_capacity=%llu optimizer=%d backend=%s "
            "hbm_bytes=%llu ttl_seconds=%llu",
            r->name, c.dim, (unsigned long long)c.capacity,
            (unsigned long long)ember_table_config_max_slots(&c), c.optim.kind,
            ember_table_backend_name(be), (unsigned long long)c.hbm_bytes,
            (unsigned long long)c.ttl_seconds);
reply:
    if (!rc) {
        info_box b;
        Ember__V1__CreateTableResponse out = EMBER__V1__CREATE_TABLE_RESPONSE__INIT;
        info_fill(&b, st);
        out.table = &b.info;
        *resp = pack(&out.base);
    }
out:
    srv_table_unref(st);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_drop(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err)
{
    (void)w;
    Ember__V1__DropTableRequest *r =
        (void *)unpack(&ember__v1__drop_table_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    Ember__V1__DropTableResponse out = EMBER__V1__DROP_TABLE_RESPONSE__INIT;
    int rc = srv_registry_drop(srv.registry, r->name, err);
    if (!rc) {
        out.dropped = 1;
        srv_log(SRV_LOG_INFO, "table_dropped", "table=%s", r->name);
        /* not restored at the next start: its checkpoint goes to history/ */
        srv_ckpt_retire(r->name);
    } else if (rc == EMBER_NOT_FOUND && r->if_exists) {
        rc = 0;
    }
    if (!rc)
        *resp = pack(&out.base);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_list(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err)
{
    (void)w;
    ProtobufCMessage *r = unpack(&ember__v1__list_tables_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    protobuf_c_message_free_unpacked(r, NULL);
    size_t n;
    srv_table **list = srv_registry_list(srv.registry, &n);
    Ember__V1__TableInfo **ti = list ? infos(list, n) : NULL;
    if (!ti) {
        srv_registry_list_free(list, n);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    Ember__V1__ListTablesResponse out = EMBER__V1__LIST_TABLES_RESPONSE__INIT;
    out.n_tables = n;
    out.tables = ti;
    *resp = pack(&out.base);
    free(ti);
    srv_registry_list_free(list, n);
    return 0;
}

int srv_admin_describe(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                       ember_error *err)
{
    (void)w;
    Ember__V1__DescribeTableRequest *r =
        (void *)unpack(&ember__v1__describe_table_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table *t;
    int rc = srv_table_by_name(r->name, &t, err);
    if (!rc) {
        info_box b;
        Ember__V1__DescribeTableResponse out = EMBER__V1__DESCRIBE_TABLE_RESPONSE__INIT;
        info_fill(&b, t);
        out.table = &b.info;
        *resp = pack(&out.base);
        srv_table_unref(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_stats(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err)
{
    (void)w;
    Ember__V1__GetStatsRequest *r =
        (void *)unpack(&ember__v1__get_stats_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table **list = NULL;
    size_t n = 0;
    int rc = 0;
    if (r->table[0]) {
        srv_table *t;
        if ((rc = srv_table_by_name(r->table, &t, err)))
            goto out;
        list = malloc(sizeof *list);
        if (!list) {
            srv_table_unref(t);
            rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        list[0] = t;
        n = 1;
    } else {
        list = srv_registry_list(srv.registry, &n);
    }
    Ember__V1__TableInfo **ti = list ? infos(list, n) : NULL;
    if (!ti) {
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        Ember__V1__GetStatsResponse out = EMBER__V1__GET_STATS_RESPONSE__INIT;
        out.n_tables = n;
        out.tables = ti;
        out.requests = atomic_load(&srv.requests);
        out.errors = atomic_load(&srv.errors);
        out.uptime_seconds = srv_uptime_s();
        *resp = pack(&out.base);
        free(ti);
    }
    srv_registry_list_free(list, n);
out:
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* ---- checkpoints --------------------------------------------------------- */

static int ckpt_dir(const char *given, const char **dir, ember_error *err)
{
    *dir = given && *given ? given : srv.cfg.checkpoint_dir;
    if (!**dir)
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "no dir given and the server has no --checkpoint-dir");
    if (strlen(*dir) > SRV_PATH_MAX - 80)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    return 0;
}

/* A save set's name: one path component of [A-Za-z0-9._-] that does not begin
 * with a dot, for a save of every table. */
static int set_name_check(const char *set, const char *table, ember_error *err)
{
    size_t l = strlen(set);
    int ok = l >= 1 && l <= SRV_CKPT_SET_NAME_MAX && set[0] != '.';
    for (size_t i = 0; ok && i < l; i++) {
        char ch = set[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == '-';
    }
    if (!ok)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "save set name '%.80s' is not [A-Za-z0-9_-][A-Za-z0-9._-]{0,63}",
                               set);
    if (*table)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "a save set holds every table: give no table with set '%s'", set);
    return 0;
}

/* Admin/Save's answer, on the checkpointer thread when the save of call `arg`
 * ends: a SaveResponse naming the files written, or the error. */
static void save_done(void *arg, int rc, const ember_error *err, const srv_ckpt_saved *saved)
{
    srv_call *c = arg;
    if (rc) {
        srv_call_finish(c, rc, err->message, NULL);
        return;
    }
    Ember__V1__SaveResponse out = EMBER__V1__SAVE_RESPONSE__INIT;
    out.n_files = saved->n;
    out.files = saved->files;
    out.rows = saved->rows;
    out.dir = (char *)saved->dir;
    out.n_tables = saved->n;
    out.tables = saved->tables;
    out.n_cuts = saved->n;
    out.cuts = (uint64_t *)saved->cuts;
    out.window = saved->window;
    grpc_slice s = pack(&out.base);
    srv_call_finish(c, EMBER_OK, NULL, &s);
}

/* Admin/Save: checked here, run by the checkpointer thread (ckpt.h), which
 * answers the call when the save ends (save_done): a save never holds a worker,
 * so Pull and Push go on while it runs, even with --threads 1. */
void srv_admin_save_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    (void)w;
    ember_error err;
    const char *dir;
    Ember__V1__SaveRequest *r = (void *)unpack(&ember__v1__save_request__descriptor, req, len,
                                               &err);
    if (!r) {
        srv_call_finish(c, err.code, err.message, NULL);
        return;
    }
    int rc = ckpt_dir(r->dir, &dir, &err);
    if (!rc && r->set[0])
        rc = set_name_check(r->set, r->table, &err);
    if (!rc && r->table[0]) {
        srv_table *t;
        if (!(rc = srv_table_by_name(r->table, &t, &err)))
            srv_table_unref(t);
    }
    if (!rc)
        rc = srv_ckpt_queue_save(r->table, r->dir, r->set, save_done, c, &err);
    if (rc)
        srv_call_finish(c, rc, err.message, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* A manifest's expectation (LoadRequest.expect_*) is well formed and names as
 * many tables as the dir holds. */
static int load_expect_check(const Ember__V1__LoadRequest *r, size_t found, ember_error *err)
{
    if (r->n_expect_tables != r->n_expect_cuts)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "expect_tables (%zu) and expect_cuts (%zu) differ in length",
                               r->n_expect_tables, r->n_expect_cuts);
    if (r->table[0])
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "expect_tables is for a load of every table: give no table");
    if (found != r->n_expect_tables)
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "the dir holds %zu table(s), the manifest names %zu", found,
                               r->n_expect_tables);
    return 0;
}

/* The file of `name` is the one the manifest names: its cut is the one recorded. */
static int load_expect_match(const Ember__V1__LoadRequest *r, const char *dir, const char *name,
                             const ember_ckpt_meta *meta, ember_error *err)
{
    for (size_t i = 0; i < r->n_expect_tables; i++)
        if (!strcmp(r->expect_tables[i], name)) {
            if (r->expect_cuts[i] == meta->version)
                return 0;
            return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                                   "table '%s' in %s is at cut %llu, the manifest says %llu",
                                   name, dir, (unsigned long long)meta->version,
                                   (unsigned long long)r->expect_cuts[i]);
        }
    return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                           "table '%s' in %s is not in the manifest", name, dir);
}

int srv_admin_load(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err)
{
    (void)w;
    Ember__V1__LoadRequest *r = (void *)unpack(&ember__v1__load_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    const char *dir;
    char **names = NULL;
    size_t n = 0;
    uint64_t rows = 0;
    int rc = ckpt_dir(r->dir, &dir, err);
    if (rc)
        goto out;
    if (r->table[0]) {
        if (!ember_table_name_valid(r->table, strlen(r->table))) {
            rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                 "table name '%.80s' is not [a-z0-9_.-]{1,64}", r->table);
            goto out;
        }
        names = calloc(1, sizeof *names);
        if (!names || !(names[0] = strdup(r->table))) {
            rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        n = 1;
    } else {
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t cap = 0;
        if (!d) {
            rc = ember_error_set(err, errno == ENOENT ? EMBER_NOT_FOUND : EMBER_INTERNAL,
                                 "cannot open %s: %s", dir, strerror(errno));
            goto out;
        }
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l <= 5 || strcmp(e->d_name + l - 5, ".ckpt") ||
                !ember_table_name_valid(e->d_name, l - 5))
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **q = realloc(names, cap * sizeof *names);
                if (!q)
                    break;
                names = q;
            }
            names[n] = strndup(e->d_name, l - 5);
            if (names[n])
                n++;
        }
        closedir(d);
    }
    char **loaded = calloc(n ? n : 1, sizeof *loaded);
    uint64_t *cuts = calloc(n ? n : 1, sizeof *cuts);
    if (!loaded || !cuts) {
        free(loaded);
        free(cuts);
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (r->n_expect_tables || r->n_expect_cuts)
        rc = load_expect_check(r, n, err);
    /* check every header before loading any file, so a damaged one refuses all */
    for (size_t i = 0; i < n && !rc; i++) {
        char path[SRV_PATH_MAX + 160];
        ember_ckpt_meta meta;
        if (!(rc = srv_ckpt_resolve(dir, names[i], path, sizeof path, err)))
            rc = ember_ckpt_read_meta(path, &meta, err);
        if (!rc && r->n_expect_tables)
            rc = load_expect_match(r, dir, names[i], &meta, err);
    }
    size_t k = 0;
    for (size_t i = 0; i < n && !rc && !r->check_only; i++) {
        char path[SRV_PATH_MAX + 160];
        ember_ckpt_meta meta;
        int created = 0;
        if (!(rc = srv_ckpt_resolve(dir, names[i], path, sizeof path, err)))
            rc = srv_ckpt_load_file(path, names[i], r->create, "load", &meta, &created, err);
        if (!rc) {
            cuts[k] = meta.version;
            loaded[k++] = names[i];
            rows += meta.rows;
            srv_log(SRV_LOG_INFO, "table_loaded",
                    "table=%s file=%s rows=%llu version=%llu created=%d", names[i], path,
                    (unsigned long long)meta.rows, (unsigned long long)meta.version, created);
        } else if (k) {
            size_t l = strlen(err->message);
            snprintf(err->message + l, sizeof err->message - l,
                     " (%zu table(s) loaded before this one)", k);
        }
    }
    if (!rc && !r->table[0] && !r->check_only)
        srv_ckpt_window_apply(dir, loaded, cuts, k, "load");
    free(cuts);
    if (!rc) {
        Ember__V1__LoadResponse out = EMBER__V1__LOAD_RESPONSE__INIT;
        out.n_tables = k;
        out.tables = loaded;
        out.rows = rows;
        *resp = pack(&out.base);
    }
    free(loaded);
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* ---- maintenance --------------------------------------------------------- */

int srv_admin_evict(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err)
{
    (void)w;
    Ember__V1__EvictRequest *r =
        (void *)unpack(&ember__v1__evict_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table *t = NULL;
    uint64_t evicted = 0;
    int rc = srv_table_by_name(r->table, &t, err);
    if (!rc) {
        if (r->what_case == EMBER__V1__EVICT_REQUEST__WHAT_BELOW_SCORE)
            rc = ember_table_evict_below(t->table, r->below_score, &evicted, err);
        else if (r->what_case == EMBER__V1__EVICT_REQUEST__WHAT_TO_SIZE)
            rc = ember_table_evict_to_size(t->table, r->to_size, &evicted, err);
        else
            rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                 "say what to evict: below_score or to_size");
    }
    if (!rc) {
        Ember__V1__EvictResponse out = EMBER__V1__EVICT_RESPONSE__INIT;
        out.evicted = evicted;
        *resp = pack(&out.base);
        srv_log(SRV_LOG_INFO, "table_evicted", "table=%s evicted=%llu", t->name,
                (unsigned long long)evicted);
    }
    srv_table_unref(t);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_alter(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err)
{
    (void)w;
    Ember__V1__AlterTableRequest *r =
        (void *)unpack(&ember__v1__alter_table_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table *t = NULL;
    int rc = srv_table_by_name(r->name, &t, err);
    if (!rc && !r->set_ttl && !r->set_ack)
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "AlterTable changes nothing: say what to set (set_ttl, set_ack)");
    if (!rc && r->set_ack &&
        ((unsigned)r->ack > EMBER__V1__ACK_MODE__ACK_REPLICATED ||
         r->ack_replicas > SRV_REPL_MAX_FOLLOWERS))
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT,
                             "ack %d / ack_replicas %u: ack is 0 (default), 1 (async) or 2 "
                             "(replicated), ack_replicas at most %d",
                             (int)r->ack, r->ack_replicas, SRV_REPL_MAX_FOLLOWERS);
    if (!rc && r->set_ttl)
        rc = ember_table_set_ttl(t->table, r->ttl_seconds, err);
    if (!rc && r->set_ack) {
        atomic_store(&t->ack, (int)r->ack);
        atomic_store(&t->ack_replicas, r->ack_replicas);
        srv_ckpt_ack_keep(t);
    }
    if (!rc) {
        srv_log(SRV_LOG_INFO, "table_altered", "table=%s ttl_seconds=%llu ack=%d ack_replicas=%u",
                t->name, (unsigned long long)ember_table_ttl(t->table), atomic_load(&t->ack),
                atomic_load(&t->ack_replicas));
        info_box b;
        Ember__V1__AlterTableResponse out = EMBER__V1__ALTER_TABLE_RESPONSE__INIT;
        info_fill(&b, t);
        out.table = &b.info;
        *resp = pack(&out.base);
    }
    srv_table_unref(t);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_set_epoch(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                        ember_error *err)
{
    (void)w;
    Ember__V1__SetEpochRequest *r =
        (void *)unpack(&ember__v1__set_epoch_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table *t = NULL;
    int rc = srv_table_by_name(r->table, &t, err);
    if (!rc) {
        Ember__V1__SetEpochResponse out = EMBER__V1__SET_EPOCH_RESPONSE__INIT;
        out.previous = ember_table_epoch(t->table);
        ember_table_set_epoch(t->table, r->epoch);
        *resp = pack(&out.base);
        srv_log(SRV_LOG_INFO, "table_epoch", "table=%s epoch=%u previous=%u", t->name,
                (unsigned)r->epoch, (unsigned)out.previous);
    }
    srv_table_unref(t);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_clear(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                    ember_error *err)
{
    (void)w;
    Ember__V1__ClearRequest *r =
        (void *)unpack(&ember__v1__clear_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    srv_table *t = NULL;
    int rc = srv_table_by_name(r->table, &t, err);
    if (!rc)
        rc = ember_table_clear(t->table, err);
    if (!rc) {
        atomic_fetch_add(&t->counters.clears, 1);
        Ember__V1__ClearResponse out = EMBER__V1__CLEAR_RESPONSE__INIT;
        *resp = pack(&out.base);
        srv_log(SRV_LOG_INFO, "table_cleared", "table=%s", t->name);
    }
    srv_table_unref(t);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_info(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                   ember_error *err)
{
    (void)w;
    ProtobufCMessage *r = unpack(&ember__v1__server_info_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    protobuf_c_message_free_unpacked(r, NULL);
    Ember__V1__ServerInfoResponse out = EMBER__V1__SERVER_INFO_RESPONSE__INIT;
    out.version = (char *)EMBER_VERSION;
    out.shard_index = srv.cfg.shard_index;
    out.shard_count = srv.cfg.shard_count;
    out.backend = srv.backend.name;
    out.device = srv.backend.device;
    out.device_memory_bytes = srv.backend.device_memory;
    out.device_memory_free_bytes = srv_backend_memory_free(&srv.backend);
    out.tls = (char *)(!*srv.cfg.tls_cert ? "off" : *srv.cfg.tls_client_ca ? "mutual" : "on");
    out.auth = srv_auth_enabled();
    srv_auth_counts(&out.refused_unauthenticated, &out.refused_permission_denied);
    char pop[16], ptable[EMBER_TABLE_NAME_MAX + 1];
    srv_ckpt_progress_get(pop, sizeof pop, ptable, sizeof ptable, &out.progress_rows,
                          &out.progress_rows_total);
    out.progress_op = pop;
    out.progress_table = ptable;
    out.key_ownership_checked = srv.cfg.shard_count > 1 && !srv.cfg.key_ownership_off;
    out.max_tables = srv.cfg.max_tables;
    out.max_concurrent_calls = srv.cfg.max_concurrent_calls;
    out.max_table_host_bytes = srv.cfg.max_table_host_bytes;
    out.max_table_hbm_bytes = srv.cfg.max_table_hbm_bytes;
    out.calls_in_progress = (uint64_t)atomic_load(&srv.busy_calls);
    out.refused_over_capacity = atomic_load(&srv.refused_busy);
    out.hbm_bytes = srv.backend.hbm_bytes;
    out.threads = srv.cfg.threads;
    out.max_keys_per_request = srv.cfg.max_keys_per_request;
    out.max_message_bytes = srv.cfg.max_message_bytes;
    out.uptime_seconds = srv_uptime_s();
    out.listen = srv.cfg.listen;
    out.checkpoint_dir = srv.cfg.checkpoint_dir;
    char leader[256];
    srv_follow_leader(leader, sizeof leader);
    out.role = (char *)srv_follow_role();
    out.term = srv_follow_term();
    out.leader = leader;
    srv_follow_lag(&out.lag_versions, &out.lag_ms);
    srv_repl_follower fl[SRV_REPL_MAX_FOLLOWERS];
    Ember__V1__FollowerInfo fi[SRV_REPL_MAX_FOLLOWERS], *fp[SRV_REPL_MAX_FOLLOWERS];
    out.n_followers = srv_repl_followers(fl, SRV_REPL_MAX_FOLLOWERS);
    for (size_t i = 0; i < out.n_followers; i++) {
        ember__v1__follower_info__init(&fi[i]);
        fi[i].id = fl[i].id;
        fi[i].addr = fl[i].addr;
        fi[i].lag_versions = fl[i].lag_versions;
        fi[i].last_seen_ms = fl[i].last_seen_ms;
        fp[i] = &fi[i];
    }
    out.followers = fp;
    *resp = pack(&out.base);
    return 0;
}

int srv_admin_promote(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                      ember_error *err)
{
    (void)w;
    Ember__V1__PromoteRequest *r =
        (void *)unpack(&ember__v1__promote_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    Ember__V1__PromoteResponse out = EMBER__V1__PROMOTE_RESPONSE__INIT;
    char previous[256] = "";
    int rc = srv_follow_promote(r->force, r->max_lag_versions, r->advertise, &out.term,
                                &out.lag_versions, previous, sizeof previous, err);
    if (!rc) {
        out.previous_leader = previous;
        *resp = pack(&out.base);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_follow(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err)
{
    (void)w;
    Ember__V1__FollowRequest *r =
        (void *)unpack(&ember__v1__follow_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    Ember__V1__FollowResponse out = EMBER__V1__FOLLOW_RESPONSE__INIT;
    int rc = srv_follow_follow(r->leader, r->term, &out.term, err);
    if (!rc)
        *resp = pack(&out.base);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int srv_admin_health(srv_worker *w, const uint8_t *req, size_t len, grpc_slice *resp,
                     ember_error *err)
{
    (void)w;
    Grpc__Health__V1__HealthCheckRequest *r =
        (void *)unpack(&grpc__health__v1__health_check_request__descriptor, req, len, err);
    if (!r)
        return err->code;
    int rc = 0;
    const char *s = r->service;
    int leader = !strcmp(s, "ember.v1.Leader");
    if (*s && strcmp(s, "ember.v1.Shard") && strcmp(s, "ember.v1.Admin") && !leader) {
        rc = ember_error_set(err, EMBER_NOT_FOUND, "unknown service '%.80s'", s);
    } else {
        Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        /* "ember.v1.Leader": SERVING only where writes are taken (README
         * "Replication and failover"), for a Service that routes to the leader */
        out.status = atomic_load(&srv.stopping) ||
                             (leader && srv_follow_role_id() != SRV_REPL_LEADER)
                         ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        *resp = pack(&out.base);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* ---- Export: a server stream --------------------------------------------- */

/* Largest Export message the server builds (less where --max-message-bytes is). */
#define EXPORT_MESSAGE_BYTES (16u << 20)

typedef struct export_state {
    srv_table *t;
    ember_export_filter f;
    uint64_t cursor, end, table_version, stable_version, table_size, table_uid, table_removed;
    int keys_only;
    int dedup;                /* a follower's delta: its first chunk carries pairs */
    uint64_t dedup_after;
    size_t max_rows;
    uint32_t row_floats;
    uint64_t *keys, *scores, *versions;
    float *rows;
    int sent_any;
} export_state;

static void export_free(void *p)
{
    export_state *s = p;
    srv_table_unref(s->t);
    free(s->keys);
    free(s->scores);
    free(s->versions);
    free(s->rows);
    free(s);
}

static void export_step(srv_worker *w, srv_call *c, int ok)
{
    (void)w;
    export_state *s = c->stream;
    ember_error err;
    size_t n = 0;
    if (!ok) {
        srv_call_finish(c, EMBER_CANCELLED, "the client went away during Export", NULL);
        return;
    }
    while (s->cursor != s->end && n == 0)
        if (ember_table_export(s->t->table, &s->f, &s->cursor, s->max_rows, s->keys, s->rows,
                               s->scores, s->versions, &n, &err)) {
            srv_call_finish(c, err.code, err.message, NULL);
            return;
        }
    if (n == 0 && s->sent_any) {
        srv_call_finish(c, EMBER_OK, NULL, NULL);
        return;
    }
    Ember__V1__ExportChunk ch = EMBER__V1__EXPORT_CHUNK__INIT;
    ch.keys.data = (uint8_t *)s->keys;
    ch.keys.len = n * 8;
    ch.values.data = (uint8_t *)s->rows;
    ch.values.len = s->keys_only ? 0 : n * s->row_floats * 4;
    ch.scores.data = (uint8_t *)s->scores;
    ch.scores.len = n * 8;
    ch.versions.data = (uint8_t *)s->versions;
    ch.versions.len = n * 8;
    ch.row_floats = s->row_floats;
    ch.table_version = s->table_version;
    ch.stable_version = s->stable_version;
    ch.table_size = s->table_size;
    ch.table_uid = s->table_uid;
    ch.table_removed = s->table_removed;
    ch.term = srv_follow_term();
    uint64_t *dc = NULL, *ds = NULL;
    if (s->dedup && !s->sent_any) { /* the pairs applied after the follower's place */
        size_t cap = 8192, np = 0;
        dc = malloc(cap * 8);
        ds = malloc(cap * 8);
        if (dc && ds) {
            srv_repl_dedup_since(s->dedup_after, dc, ds, cap, &np, &ch.dedup_next,
                                 &ch.dedup_lost);
            ch.dedup_clients = (ProtobufCBinaryData){np * 8, (uint8_t *)dc};
            ch.dedup_sequences = (ProtobufCBinaryData){np * 8, (uint8_t *)ds};
        } else {
            ch.dedup_next = s->dedup_after; /* none this time */
        }
    }
    s->sent_any = 1;
    srv_call_send(c, pack(&ch.base));
    free(dc);
    free(ds);
}

/* The export begins: what it reports is read now (the stable version before
 * anything is scanned), then its first batch. */
static void export_begin(srv_call *c)
{
    export_state *s = c->stream;
    ember_table *t = s->t->table;
    s->stable_version = ember_table_stable_version(t);
    s->end = ember_table_export_end(t);
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    s->table_version = st.version;
    s->table_size = st.size;
    s->table_removed = st.evictions + st.evicted + atomic_load(&s->t->counters.erased) +
                       atomic_load(&s->t->counters.clears);
    export_step(NULL, c, 1);
}

void srv_admin_export_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    (void)w;
    ember_error err;
    Ember__V1__ExportRequest *r =
        (void *)unpack(&ember__v1__export_request__descriptor, req, len, &err);
    if (!r) {
        srv_call_finish(c, err.code, err.message, NULL);
        return;
    }
    export_state *s = calloc(1, sizeof *s);
    srv_table *t = NULL;
    int rc = srv_table_by_name(r->table, &t, &err);
    if (rc || !s) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        srv_table_unref(t);
        free(s);
        srv_call_finish(c, rc ? err.code : EMBER_RESOURCE_EXHAUSTED,
                        rc ? err.message : "out of memory", NULL);
        return;
    }
    s->t = t;
    /* a follower's progress request acknowledges what it holds (repl.h); read
     * before the export begins, the stable version covers every write this
     * export may miss no part of */
    if (r->follower_id && *r->follower_id) {
        srv_repl_progress(r->follower_id, r->follower_addr, t->name, r->after_version);
        srv_repl_dedup_progress(r->follower_id, r->dedup_after);
        s->dedup = 1;
        s->dedup_after = r->dedup_after;
    }
    s->table_uid = t->uid;
    s->keys_only = r->keys_only;
    s->f.min_score = r->min_score;
    s->f.after_version = r->after_version;
    s->f.full_rows = r->full_rows && !r->keys_only;
    s->row_floats = r->full_rows ? ember_table_row_floats(t->table) : ember_table_dim(t->table);
    uint32_t wait_ms = r->after_version && ember_table_version(t->table) <= r->after_version
                           ? r->wait_ms : 0;
    /* rows per message: asked (default 1024), at least a bucket (export returns
     * whole buckets), and within EXPORT_MESSAGE_BYTES and --max-message-bytes: a
     * stream's buffers are sized by it, so an asked-for billion rows per message
     * cannot make every open Export hold a quarter-GiB */
    size_t row_bytes = (size_t)s->row_floats * 4 + 24;
    size_t want = r->rows_per_message ? r->rows_per_message : 1024;
    size_t budget = srv.cfg.max_message_bytes - 1024;
    if (budget > EXPORT_MESSAGE_BYTES)
        budget = EXPORT_MESSAGE_BYTES;
    size_t fit = budget / row_bytes;
    if (want > fit)
        want = fit;
    if (want < EMBER_BUCKET_SLOTS)
        want = EMBER_BUCKET_SLOTS;
    s->max_rows = want;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    s->keys = malloc(want * 8);
    s->scores = malloc(want * 8);
    s->versions = malloc(want * 8);
    s->rows = malloc(want * s->row_floats * 4);
    c->stream = s;
    c->stream_free = export_free;
    c->step = export_step;
    if (!s->keys || !s->scores || !s->versions || !s->rows) {
        srv_call_finish(c, EMBER_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    if (wait_ms) /* a follower's long poll: nothing newer yet (repl.h) */
        srv_repl_hold_export(c, t, wait_ms, export_begin);
    else
        export_begin(c);
}

/* ---- Import: a client stream --------------------------------------------- */

typedef struct import_state {
    srv_table *t;
    uint64_t rows;
    int any_shard; /* the first chunk's any_shard: ownership not checked */
} import_state;

static void import_free(void *p)
{
    import_state *s = p;
    srv_table_unref(s->t);
    free(s);
}

static int import_chunk(srv_worker *w, import_state *s, const Ember__V1__ImportChunk *ch,
                        ember_error *err)
{
    int rc;
    if (!s->t) {
        if ((rc = srv_table_by_name(ch->table, &s->t, err)))
            return rc;
        s->any_shard = ch->any_shard;
        if (s->any_shard)
            srv_log(SRV_LOG_INFO, "import_any_shard",
                    "table=%s shard=%u count=%u: rows of other shards accepted", s->t->name,
                    srv.cfg.shard_index, srv.cfg.shard_count);
    } else if (ch->table[0] && strcmp(ch->table, s->t->name)) {
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "chunk names table '%.80s' in an import to '%s'", ch->table,
                               s->t->name);
    }
    ember_table *t = s->t->table;
    uint32_t rf = ember_table_row_floats(t);
    if (ch->row_floats && ch->row_floats != rf)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "rows of %u floats for table '%s' whose rows have %u",
                               ch->row_floats, s->t->name, rf);
    if (ch->keys.len % 8)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "keys are %zu bytes, not a multiple of 8", ch->keys.len);
    size_t n = ch->keys.len / 8;
    if (n > srv.cfg.max_keys_per_request)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "%zu keys in one chunk, over --max-keys-per-request of %llu", n,
                               (unsigned long long)srv.cfg.max_keys_per_request);
    if (ch->values.len != n * rf * 4)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "values are %zu bytes; %zu rows of %u float32 need %zu",
                               ch->values.len, n, rf, n * rf * 4);
    if ((ch->scores.len && ch->scores.len != n * 8) ||
        (ch->versions.len && ch->versions.len != n * 8))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "scores/versions must be empty or hold %zu uint64", n);
    if (!n)
        return 0;
    if (!s->any_shard &&
        (rc = srv_check_owner(ch->keys.data, n, "import (any_shard is not set): ", err)))
        return rc;
    uint64_t *keys = srv_scratch_keys(w, n), *scores = srv_scratch_scores(w, n),
             *versions = srv_scratch_keys2(w, n);
    float *rows = srv_scratch_floats(w, n * rf);
    if (!keys || !scores || !versions || !rows)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(keys, ch->keys.data, n * 8);
    memcpy(rows, ch->values.data, n * rf * 4);
    if (ch->scores.len)
        memcpy(scores, ch->scores.data, n * 8);
    else
        memset(scores, 0, n * 8);
    if (ch->versions.len)
        memcpy(versions, ch->versions.data, n * 8);
    else
        memset(versions, 0, n * 8);
    if ((rc = ember_table_import(t, keys, n, rows, scores, versions, err)))
        return rc;
    s->rows += n;
    return 0;
}

static void import_step(srv_worker *w, srv_call *c, int ok)
{
    import_state *s = c->stream;
    ember_error err;
    if (!ok) {
        srv_call_finish(c, EMBER_CANCELLED, "the client went away during Import", NULL);
        return;
    }
    if (!c->recv) { /* end of the client's stream */
        if (!s->t) {
            srv_call_finish(c, EMBER_INVALID_ARGUMENT, "an empty Import stream names no table",
                            NULL);
            return;
        }
        Ember__V1__ImportResponse out = EMBER__V1__IMPORT_RESPONSE__INIT;
        out.rows = s->rows;
        grpc_slice r = pack(&out.base);
        srv_log(SRV_LOG_INFO, "table_imported", "table=%s rows=%llu", s->t->name,
                (unsigned long long)s->rows);
        srv_call_finish(c, EMBER_OK, NULL, &r);
        return;
    }
    const uint8_t *b;
    size_t len;
    Ember__V1__ImportChunk *ch = NULL;
    int rc = srv_payload_bytes(w, c->recv, NULL, &b, &len, &err);
    if (!rc) {
        ch = (void *)unpack(&ember__v1__import_chunk__descriptor, b, len, &err);
        rc = ch ? import_chunk(w, s, ch, &err) : err.code;
    }
    if (ch)
        protobuf_c_message_free_unpacked(&ch->base, NULL);
    if (rc) {
        srv_call_finish(c, rc, err.message, NULL);
        return;
    }
    srv_call_recv(c);
}

void srv_admin_import_start(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    (void)w;
    (void)req; /* a client stream: its messages come through srv_call_recv */
    (void)len;
    import_state *s = calloc(1, sizeof *s);
    if (!s) {
        srv_call_finish(c, EMBER_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    c->stream = s;
    c->stream_free = import_free;
    c->step = import_step;
    srv_call_recv(c);
}

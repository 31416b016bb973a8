/*
 * admin.c — table administration fanned out to every shard through the Admin
 * service (protoc-c messages: these calls are rare and small).
 *
 * All shards' requests start at once on the call machinery of internal.h; the
 * first failing shard (lowest index) is reported. Only DescribeTable and
 * ListTables are retried on UNAVAILABLE: a retried create or drop whose first
 * try did land would come back ALREADY_EXISTS / NOT_FOUND, and save/load are too
 * heavy to repeat blindly.
 * A fan-out that fails half-way is not undone: create with if_not_exists (or
 * drop with if_exists) again to converge.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "ember/v1/ember.pb-c.h"

enum { EMBER_CALL_ADMIN = 2 };

/* A table spec's kinds (<ember/types.h>) go on the wire as they are. */
#define EMBER_SAME_ON_WIRE(ours, wire) \
    _Static_assert((int)(ours) == (int)(wire), #ours " is " #wire)
EMBER_SAME_ON_WIRE(EMBER_OPTIM_SGD, EMBER__V1__OPTIMIZER__OPTIMIZER_SGD);
EMBER_SAME_ON_WIRE(EMBER_OPTIM_ADAGRAD, EMBER__V1__OPTIMIZER__OPTIMIZER_ADAGRAD);
EMBER_SAME_ON_WIRE(EMBER_OPTIM_ADAM, EMBER__V1__OPTIMIZER__OPTIMIZER_ADAM);
EMBER_SAME_ON_WIRE(EMBER_OPTIM_FTRL, EMBER__V1__OPTIMIZER__OPTIMIZER_FTRL);
EMBER_SAME_ON_WIRE(EMBER_INIT_ZEROS, EMBER__V1__INITIALIZER__INIT_ZEROS);
EMBER_SAME_ON_WIRE(EMBER_INIT_CONSTANT, EMBER__V1__INITIALIZER__INIT_CONSTANT);
EMBER_SAME_ON_WIRE(EMBER_INIT_UNIFORM, EMBER__V1__INITIALIZER__INIT_UNIFORM);
EMBER_SAME_ON_WIRE(EMBER_INIT_NORMAL, EMBER__V1__INITIALIZER__INIT_NORMAL);
EMBER_SAME_ON_WIRE(EMBER_INIT_TRUNCATED_NORMAL, EMBER__V1__INITIALIZER__INIT_TRUNCATED_NORMAL);
EMBER_SAME_ON_WIRE(EMBER_SCORE_LRU, EMBER__V1__SCORE_POLICY__SCORE_LRU);
EMBER_SAME_ON_WIRE(EMBER_SCORE_LFU, EMBER__V1__SCORE_POLICY__SCORE_LFU);
EMBER_SAME_ON_WIRE(EMBER_SCORE_EPOCH_LRU, EMBER__V1__SCORE_POLICY__SCORE_EPOCH_LRU);
EMBER_SAME_ON_WIRE(EMBER_SCORE_EPOCH_LFU, EMBER__V1__SCORE_POLICY__SCORE_EPOCH_LFU);
EMBER_SAME_ON_WIRE(EMBER_SCORE_CUSTOM, EMBER__V1__SCORE_POLICY__SCORE_CUSTOM);

/* ember_table_spec as libember 0.1 laid it out: the least a caller's struct_size
 * may say (ember.h, "Growing structs"). */
#define EMBER_TABLE_SPEC_FIRST_SIZE (offsetof(ember_table_spec, backend) + sizeof(const char *))

/* ember_table_spec_init, two versions (libember.map): EMBER_1.1, the default
 * that programs link against now, fills the struct as this header has it;
 * EMBER_1, kept for programs linked before ABI 1.1's fields were added, fills
 * only the first layout, the size their struct has: it writes no byte past the
 * struct it knows. The names carry the versions, so a static link sees one
 * ember_table_spec_init (the default). */
void ember_table_spec_init_v1_1(ember_table_spec *s);
void ember_table_spec_init_v1_0(ember_table_spec *s);
__asm__(".symver ember_table_spec_init_v1_1,ember_table_spec_init@@EMBER_1.1");
__asm__(".symver ember_table_spec_init_v1_0,ember_table_spec_init@EMBER_1");

void ember_table_spec_init_v1_1(ember_table_spec *s)
{
    memset(s, 0, sizeof *s);
    s->struct_size = sizeof *s;
    EMBER_TABLE_DEFAULTS(s, optimizer, initializer);
}

void ember_table_spec_init_v1_0(ember_table_spec *s)
{
    ember_table_spec full;
    ember_table_spec_init_v1_1(&full);
    full.struct_size = (uint32_t)EMBER_TABLE_SPEC_FIRST_SIZE;
    memcpy(s, &full, EMBER_TABLE_SPEC_FIRST_SIZE);
}

/* Sends the same request to every shard and waits. On success the op holds each
 * shard's reply (release it); on failure it is released and NULL returned. */
static ember_call *fan_out(ember_client *c, ember_method method, const ProtobufCMessage *req,
                           int retry, int *code, ember_error *err)
{
    ember_call *op = ember_call_acquire(c, EMBER_CALL_ADMIN);
    if (!op) {
        *code = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    op->retry = retry;
    size_t len = protobuf_c_message_get_packed_size(req);
    /* One call per shard, added in shard order: op->calls[s] is shard s's. */
    for (unsigned s = 0; s < c->nshards; s++) {
        ember_shard_call *sc = ember_call_add(op, s, method, len);
        if (!sc) {
            ember_call_release(op);
            *code = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            return NULL;
        }
        protobuf_c_message_pack(req, sc->req_data);
    }
    ember_call_start(op);
    *code = ember_call_finish(op, err);
    if (*code != 0) {
        ember_call_release(op);
        return NULL;
    }
    return op;
}

static int bad_reply(ember_call *op, unsigned s, const char *what, ember_error *err)
{
    int rv = ember_call_shard_error(op, s, EMBER_INTERNAL, err, "malformed %s reply", what);
    ember_call_release(op);
    return rv;
}

static int check_client_table(ember_client *c, const char *name, ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    return ember_table_name_check(name, err);
}

int ember_create_table(ember_client *c, const char *name, const ember_table_spec *caller_spec,
                       int if_not_exists, ember_error *err)
{
    int rv = check_client_table(c, name, err);
    if (rv)
        return rv;
    if (!caller_spec)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no table spec");
    ember_table_spec spec;
    ember_table_spec_init_v1_1(&spec);
    rv = ember_struct_take(&spec, sizeof spec, caller_spec, caller_spec->struct_size,
                           EMBER_TABLE_SPEC_FIRST_SIZE, "ember_table_spec", err);
    if (rv)
        return rv;
    const ember_table_spec *s = &spec;
    if (s->dim == 0 || s->capacity_per_shard == 0)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "table '%s': dim and capacity_per_shard must be set "
                               "(dim %u, capacity %llu)",
                               name, s->dim, (unsigned long long)s->capacity_per_shard);

    Ember__V1__OptimizerConfig opt = EMBER__V1__OPTIMIZER_CONFIG__INIT;
    opt.kind = (Ember__V1__Optimizer)s->optimizer.kind;
    opt.lr = s->optimizer.lr;
    opt.eps = s->optimizer.eps;
    opt.initial_accumulator = s->optimizer.initial_accumulator;
    opt.beta1 = s->optimizer.beta1;
    opt.beta2 = s->optimizer.beta2;
    opt.weight_decay = s->optimizer.weight_decay;
    opt.l1 = s->optimizer.l1;
    opt.l2 = s->optimizer.l2;
    opt.lr_power = s->optimizer.lr_power;
    opt.beta = s->optimizer.beta;
    Ember__V1__InitializerConfig init = EMBER__V1__INITIALIZER_CONFIG__INIT;
    init.kind = (Ember__V1__Initializer)s->initializer.kind;
    init.a = s->initializer.a;
    init.b = s->initializer.b;
    Ember__V1__TableConfig cfg = EMBER__V1__TABLE_CONFIG__INIT;
    cfg.dim = s->dim;
    cfg.capacity = s->capacity_per_shard;
    cfg.score_policy = (Ember__V1__ScorePolicy)s->score_policy;
    cfg.seed = s->seed;
    cfg.optimizer = &opt;
    cfg.initializer = &init;
    cfg.admission_min_count = s->admission_min_count;
    cfg.admission_sketch_width = s->admission_sketch_width;
    cfg.zero_nonfinite = s->zero_nonfinite != 0;
    cfg.backend = (char *)(s->backend ? s->backend : "");
    cfg.hbm_bytes = s->hbm_bytes;
    cfg.max_capacity = s->max_capacity_per_shard;
    cfg.max_load_factor = s->max_load_factor;
    cfg.ttl_seconds = s->ttl_seconds;
    cfg.ack = (Ember__V1__AckMode)s->ack;
    cfg.ack_replicas = s->ack_replicas;
    Ember__V1__CreateTableRequest req = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    req.name = (char *)name;
    req.config = &cfg;
    req.if_not_exists = if_not_exists != 0;

    ember_call *op = fan_out(c, EMBER_M_CREATE, &req.base, 0, &rv, err);
    if (!op)
        return rv;
    /* if_not_exists accepts any existing table of that name; one of another dim
     * would fail every pull later, so say so now. */
    for (unsigned i = 0; i < c->nshards && rv == 0; i++) {
        Ember__V1__CreateTableResponse *r = ember__v1__create_table_response__unpack(
            NULL, op->calls[i].resp_len, op->calls[i].resp);
        if (!r) {
            rv = ember_call_shard_error(op, i, EMBER_INTERNAL, err,
                                        "malformed CreateTable reply");
            break;
        }
        if (r->table && r->table->config && r->table->config->dim != s->dim)
            rv = ember_call_shard_error(op, i, EMBER_ALREADY_EXISTS, err,
                                        "table '%s' already exists with dim %u, not %u", name,
                                        r->table->config->dim, s->dim);
        ember__v1__create_table_response__free_unpacked(r, NULL);
    }
    ember_call_release(op);
    return rv;
}

int ember_set_ttl(ember_client *c, const char *name, uint64_t ttl_seconds, ember_error *err)
{
    int rv = check_client_table(c, name, err);
    if (rv)
        return rv;
    Ember__V1__AlterTableRequest req = EMBER__V1__ALTER_TABLE_REQUEST__INIT;
    req.name = (char *)name;
    req.set_ttl = 1;
    req.ttl_seconds = ttl_seconds;
    /* setting a value is idempotent: retried on UNAVAILABLE */
    ember_call *op = fan_out(c, EMBER_M_ALTER, &req.base, 1, &rv, err);
    if (op)
        ember_call_release(op);
    return rv;
}

int ember_drop_table(ember_client *c, const char *name, int if_exists, ember_error *err)
{
    int rv = check_client_table(c, name, err);
    if (rv)
        return rv;
    Ember__V1__DropTableRequest req = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    req.name = (char *)name;
    req.if_exists = if_exists != 0;
    ember_call *op = fan_out(c, EMBER_M_DROP, &req.base, 0, &rv, err);
    if (op)
        ember_call_release(op);
    return rv;
}

int ember_describe_table(ember_client *c, const char *name, ember_table_info *out,
                         ember_error *err)
{
    int rv = check_client_table(c, name, err);
    if (rv)
        return rv;
    if (!out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no output");
    Ember__V1__DescribeTableRequest req = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    req.name = (char *)name;
    ember_call *op = fan_out(c, EMBER_M_DESCRIBE, &req.base, 1, &rv, err);
    if (!op)
        return rv;

    ember_table_info info;
    memset(&info, 0, sizeof info);
    snprintf(info.name, sizeof info.name, "%s", name);
    for (unsigned s = 0; s < c->nshards; s++) {
        Ember__V1__DescribeTableResponse *r = ember__v1__describe_table_response__unpack(
            NULL, op->calls[s].resp_len, op->calls[s].resp);
        if (!r)
            return bad_reply(op, s, "DescribeTable", err);
        if (!r->table || !r->table->config || !r->table->stats) {
            ember__v1__describe_table_response__free_unpacked(r, NULL);
            return bad_reply(op, s, "DescribeTable", err);
        }
        uint32_t dim = r->table->config->dim;
        const Ember__V1__TableStats *st = r->table->stats;
        if (s > 0 && dim != info.dim) {
            ember__v1__describe_table_response__free_unpacked(r, NULL);
            rv = ember_call_shard_error(op, s, EMBER_FAILED_PRECONDITION, err,
                                        "table '%s' has dim %u here but %u on shard 0", name, dim,
                                        info.dim);
            ember_call_release(op);
            return rv;
        }
        info.dim = dim;
        info.size += st->size;
        info.capacity += st->capacity;
        info.evictions += st->evictions;
        info.admission_drops += st->admission_drops;
        if (st->version > info.version_max)
            info.version_max = st->version;
        ember__v1__describe_table_response__free_unpacked(r, NULL);
    }
    info.load_factor = info.capacity ? (double)info.size / (double)info.capacity : 0.0;
    ember_call_release(op);
    *out = info;
    return 0;
}

int ember_check_shards(ember_client *c, ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    int rv;
    Ember__V1__ServerInfoRequest req = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    ember_call *op = fan_out(c, EMBER_M_INFO, &req.base, 1, &rv, err);
    if (!op)
        return rv;
    char list[EMBER_ERROR_MSG_MAX] = "";
    size_t at = 0;
    unsigned wrong = 0;
    for (unsigned s = 0; s < c->nshards; s++) {
        Ember__V1__ServerInfoResponse *r = ember__v1__server_info_response__unpack(
            NULL, op->calls[s].resp_len, op->calls[s].resp);
        if (!r)
            return bad_reply(op, s, "ServerInfo", err);
        /* a server started without --shard-count (1) checks no key: not wrong */
        if (r->shard_count > 1 && (r->shard_index != s || r->shard_count != c->nshards)) {
            int k = snprintf(list + at, sizeof list - at, "%s%s (position %u) is shard %u of %u",
                             wrong ? ", " : "", c->shards[s].addr, s, r->shard_index,
                             r->shard_count);
            if (k > 0)
                at = at + (size_t)k < sizeof list ? at + (size_t)k : sizeof list - 1;
            wrong++;
        }
        ember__v1__server_info_response__free_unpacked(r, NULL);
    }
    ember_call_release(op);
    if (!wrong) {
        ember_error_clear(err);
        return 0;
    }
    return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                           "the shard list (%u addresses, from %s) is out of order or of "
                           "another length: %s; list the servers by their --shard-index",
                           c->nshards, c->shard_source, list);
}

static int info_by_name(const void *a, const void *b)
{
    return strcmp(((const ember_table_info *)a)->name, ((const ember_table_info *)b)->name);
}

int ember_list_tables(ember_client *c, ember_table_info *out, size_t cap, size_t *count,
                      ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    if (!count || (cap && !out))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no output");
    Ember__V1__ListTablesRequest req = EMBER__V1__LIST_TABLES_REQUEST__INIT;
    int rv;
    ember_call *op = fan_out(c, EMBER_M_LIST, &req.base, 1, &rv, err);
    if (!op)
        return rv;

    /* The union over shards, found by name: a handful of tables per server, so
     * a linear search per entry is cheaper than anything cleverer. */
    ember_table_info *all = NULL;
    size_t n = 0, ncap = 0;
    for (unsigned s = 0; s < c->nshards; s++) {
        Ember__V1__ListTablesResponse *r = ember__v1__list_tables_response__unpack(
            NULL, op->calls[s].resp_len, op->calls[s].resp);
        if (!r) {
            free(all);
            return bad_reply(op, s, "ListTables", err);
        }
        for (size_t k = 0; k < r->n_tables; k++) {
            const Ember__V1__TableInfo *t = r->tables[k];
            if (!t || !t->name || !t->config || !t->stats || strlen(t->name) > 64) {
                ember__v1__list_tables_response__free_unpacked(r, NULL);
                free(all);
                return bad_reply(op, s, "ListTables", err);
            }
            ember_table_info *e = NULL;
            for (size_t i = 0; i < n && !e; i++)
                if (strcmp(all[i].name, t->name) == 0)
                    e = &all[i];
            if (e && e->dim != t->config->dim) {
                rv = ember_call_shard_error(op, s, EMBER_FAILED_PRECONDITION, err,
                                            "table '%s' has dim %u here but %u on another shard",
                                            t->name, t->config->dim, e->dim);
                ember__v1__list_tables_response__free_unpacked(r, NULL);
                free(all);
                ember_call_release(op);
                return rv;
            }
            if (!e) {
                if (n == ncap) {
                    size_t nc = ncap ? 2 * ncap : 16;
                    ember_table_info *a = realloc(all, nc * sizeof *a);
                    if (!a) {
                        ember__v1__list_tables_response__free_unpacked(r, NULL);
                        free(all);
                        ember_call_release(op);
                        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                                               "out of memory");
                    }
                    all = a;
                    ncap = nc;
                }
                e = &all[n++];
                memset(e, 0, sizeof *e);
                snprintf(e->name, sizeof e->name, "%s", t->name);
                e->dim = t->config->dim;
            }
            const Ember__V1__TableStats *st = t->stats;
            e->size += st->size;
            e->capacity += st->capacity;
            e->evictions += st->evictions;
            e->admission_drops += st->admission_drops;
            if (st->version > e->version_max)
                e->version_max = st->version;
        }
        ember__v1__list_tables_response__free_unpacked(r, NULL);
    }
    ember_call_release(op);
    if (n > 1)
        qsort(all, n, sizeof *all, info_by_name);
    for (size_t i = 0; i < n; i++) {
        all[i].load_factor =
            all[i].capacity ? (double)all[i].size / (double)all[i].capacity : 0.0;
        if (i < cap)
            out[i] = all[i];
    }
    free(all);
    *count = n;
    ember_error_clear(err);
    return 0;
}

static int check_dir(ember_client *c, const char *table, ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    return table ? ember_table_name_check(table, err) : 0;
}

int ember_save(ember_client *c, const char *table, const char *dir, ember_error *err)
{
    int rv = check_dir(c, table, err);
    if (rv)
        return rv;
    Ember__V1__SaveRequest req = EMBER__V1__SAVE_REQUEST__INIT;
    req.table = (char *)(table ? table : "");
    req.dir = (char *)(dir ? dir : "");
    ember_call *op = fan_out(c, EMBER_M_SAVE, &req.base, 0, &rv, err);
    if (op)
        ember_call_release(op);
    return rv;
}

int ember_load(ember_client *c, const char *table, const char *dir, ember_error *err)
{
    int rv = check_dir(c, table, err);
    if (rv)
        return rv;
    Ember__V1__LoadRequest req = EMBER__V1__LOAD_REQUEST__INIT;
    req.table = (char *)(table ? table : "");
    req.dir = (char *)(dir ? dir : "");
    req.create = 1;
    ember_call *op = fan_out(c, EMBER_M_LOAD, &req.base, 0, &rv, err);
    if (op)
        ember_call_release(op);
    return rv;
}

/*
 * transfer.c — emberctl export, import and reshard: rows between a table's
 * shards and one file, and checkpoints from N shards to M (see ctl.h, reshard.h).
 *
 * export streams Admin/Export from each selected shard in turn into one export
 * file (xfile.c); the file is renamed into place only when every shard's stream
 * ended OK, so a failed export leaves no file. import checks the whole file
 * first, then routes each row to the shard ember_shard_of picks among the
 * --shards list (libember's key→shard function) and streams it there with
 * Admin/Import: a file exported from N shards imports into any M.
 *
 * Both draw a progress line on stderr when it is a terminal; --json prints the
 * totals as one document.
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/rpc.h"
#include "ember/v1/ember.pb-c.h"
#include "reshard.h"

#define ADMIN "/ember.v1.Admin/"
#define DEFAULT_DEADLINE_S 86400
/* rows asked per Export message; the server lowers it to fit its message limit */
#define EXPORT_ROWS_PER_MESSAGE 8192
/* most bytes of rows in one Import message */
#define IMPORT_BATCH_BYTES (4u << 20)

static const char *const optimizer_names[] = {"sgd", "adagrad", "adam", "ftrl"};

static const char *optimizer_name(uint32_t k)
{
    return k < sizeof optimizer_names / sizeof optimizer_names[0] ? optimizer_names[k]
                                                                  : "unknown";
}

/* ---- shared -------------------------------------------------------------------------- */

static void json_shard(ctl_json *j, const ctl_shard *s)
{
    ctl_json_u64(j, "shard", s->index);
    ctl_json_str(j, "address", s->address);
}

/* A failure of the command itself (not of a shard): on stderr, and in --json as
 * {"error": {...}}. Returns CTL_EXIT_RPC. */
static int fail_whole(const ctl *c, const char *cmd, int code, const char *message)
{
    fprintf(stderr, "emberctl %s: %s\n", cmd, message);
    if (c->json) {
        ctl_json j;
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_object(&j, "error");
        ctl_json_str(&j, "code", ember_code_name(code));
        ctl_json_str(&j, "message", message);
        ctl_json_end_object(&j);
        ctl_json_end_object(&j);
        ctl_json_finish(&j);
    }
    return CTL_EXIT_RPC;
}

/* Shards' failures: on stderr, and in --json as {"errors": [...]}. */
static int fail_shards(const ctl *c, ctl_reply *r)
{
    if (c->json) {
        ctl_json j;
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_errors(&j, r, c->n);
        ctl_json_end_object(&j);
        ctl_json_finish(&j);
    }
    fflush(stdout);
    return ctl_report(r, c->n);
}

static int deadline_ms(const ctl_args *a, int *ms)
{
    uint64_t s = DEFAULT_DEADLINE_S;
    const char *v = ctl_opt(a, "--deadline");
    if (v && ctl_parse_u64(a, "--deadline", v, 1, 2000000, &s) != 0)
        return CTL_EXIT_USAGE;
    *ms = (int)(s * 1000);
    return 0;
}

/* DescribeTable on every selected shard; r[c->n] holds the replies. The table
 * must be on every shard with one dim. Returns 0 or the exit status (reported). */
static int describe_all(const ctl *c, const char *table, ctl_reply *r)
{
    Ember__V1__DescribeTableRequest req = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    req.name = (char *)table;
    if (ctl_call(c, ADMIN "DescribeTable", &req.base,
                 &ember__v1__describe_table_response__descriptor, 0, r) > 0)
        return fail_shards(c, r);
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__DescribeTableResponse *d = (const void *)r[i].msg;
        if (!d->table || !d->table->config) {
            r[i].code = EMBER_INTERNAL;
            snprintf(r[i].message, sizeof r[i].message, "DescribeTable sent no config");
            return fail_shards(c, r);
        }
    }
    return 0;
}

static const Ember__V1__TableConfig *config_of(const ctl_reply *r)
{
    return ((const Ember__V1__DescribeTableResponse *)r->msg)->table->config;
}

/* ---- export --------------------------------------------------------------------------- */

const ctl_optdef ctl_export_opts[] = {
    {"--after-version", "V", "only rows written after version V on every shard (a delta)"},
    {"--after-version-file", "PREV", "only rows written since the export PREV began, per shard"},
    {"--min-score", "S", "only rows whose score is at least S"},
    {"--full-rows", NULL, "embedding and optimizer state (default: the embedding only)"},
    {"--deadline", "SECONDS", "of each shard's stream (default 86400)"},
    {NULL, NULL, NULL},
};

/* The after_version of each selected shard: --after-version, or the table
 * version PREV recorded for that shard. */
static int after_versions(const ctl *c, const ctl_args *a, const char *table, uint64_t *after)
{
    const char *v = ctl_opt(a, "--after-version"), *prev = ctl_opt(a, "--after-version-file");
    uint64_t all = 0;
    if (v && prev)
        return ctl_usage_error(a, "give --after-version or --after-version-file, not both");
    if (v && ctl_parse_u64(a, "--after-version", v, 0, UINT64_MAX, &all) != 0)
        return CTL_EXIT_USAGE;
    for (unsigned i = 0; i < c->n; i++)
        after[i] = all;
    if (!prev)
        return 0;
    ctl_xheader h;
    ember_error err;
    char m[700];
    if (ctl_xheader_read(prev, &h, &err) != 0)
        return fail_whole(c, "export", err.code, err.message);
    int rc = 0;
    if (strcmp(h.table, table)) {
        snprintf(m, sizeof m, "%s is an export of table '%s', not '%s'", prev, h.table, table);
        rc = fail_whole(c, "export", EMBER_INVALID_ARGUMENT, m);
    } else if (h.shard_count != c->count) {
        snprintf(m, sizeof m, "%s was exported from %u shards, the list has %u: versions are "
                 "per shard", prev, h.shard_count, c->count);
        rc = fail_whole(c, "export", EMBER_INVALID_ARGUMENT, m);
    }
    for (unsigned i = 0; !rc && i < c->n; i++) {
        unsigned k = 0;
        while (k < h.n_shards && h.shards[k].index != c->shards[i].index)
            k++;
        if (k == h.n_shards) {
            snprintf(m, sizeof m, "%s holds no export of shard %u", prev, c->shards[i].index);
            rc = fail_whole(c, "export", EMBER_INVALID_ARGUMENT, m);
        } else {
            after[i] = h.shards[k].table_version;
        }
    }
    ctl_xheader_free(&h);
    return rc;
}

typedef struct export_run {
    ctl_xwriter *w;
    ctl_xheader *h;
    ctl_progress *p;
    uint64_t rows;           /* all shards so far */
} export_run;

/* One shard's stream into the file. Returns 0, or its status with r filled. */
static int export_shard(const ctl *c, unsigned i, const Ember__V1__ExportRequest *q, int ms,
                        export_run *x, ctl_reply *r)
{
    ember_error err;
    uint8_t *req, *msg;
    size_t len = protobuf_c_message_get_packed_size(&q->base), mlen;
    ctl_xshard *e = &x->h->shards[i];
    int code = 0, first = 1;
    if (!(req = malloc(len + 1)))
        return r->code = EMBER_RESOURCE_EXHAUSTED;
    protobuf_c_message_pack(&q->base, req);
    ember_rpc_stream *s = ember_rpc_stream_open(c->shards[i].ch, ADMIN "Export", req, len, ms,
                                                &err);
    free(req);
    if (!s) {
        r->code = err.code;
        snprintf(r->message, sizeof r->message, "%s", err.message);
        return r->code;
    }
    while (!(code = ember_rpc_stream_read(s, &msg, &mlen, &err)) && msg) {
        Ember__V1__ExportChunk *ch = ember__v1__export_chunk__unpack(NULL, mlen, msg);
        free(msg);
        size_t n = ch ? ch->keys.len / 8 : 0;
        if (!ch || ch->keys.len % 8 || ch->scores.len != 8 * n || ch->versions.len != 8 * n ||
            !ch->row_floats || ch->values.len != (size_t)4 * n * ch->row_floats) {
            if (ch)
                ember__v1__export_chunk__free_unpacked(ch, NULL);
            code = ember_error_set(&err, EMBER_INTERNAL,
                                   "an Export message of inconsistent lengths");
            break;
        }
        if (first)
            e->table_version = ch->table_version;
        first = 0;
        for (size_t k = 0; k < n; k++) {
            uint64_t ver;
            memcpy(&ver, ch->versions.data + 8 * k, 8);
            if (ver > e->max_version)
                e->max_version = ver;
        }
        /* the writer only copies these bytes out: no alignment needed */
        code = ctl_xwriter_chunk(x->w, n, (const uint64_t *)(const void *)ch->keys.data,
                                 (const uint64_t *)(const void *)ch->scores.data,
                                 (const uint64_t *)(const void *)ch->versions.data,
                                 (const float *)(const void *)ch->values.data, ch->row_floats,
                                 &err);
        ember__v1__export_chunk__free_unpacked(ch, NULL);
        if (code)
            break;
        e->rows += n;
        x->rows += n;
        ctl_progress_update(x->p, x->rows, ctl_xwriter_bytes(x->w));
    }
    ember_rpc_stream_close(s);
    if (code) {
        r->code = code;
        snprintf(r->message, sizeof r->message, "%s", err.message);
    }
    return code;
}

int ctl_cmd_export(ctl *c, const ctl_args *a)
{
    const char *table = a->pos[0], *file = a->pos[1];
    Ember__V1__ExportRequest q = EMBER__V1__EXPORT_REQUEST__INIT;
    ctl_xheader h;
    ctl_reply *r = calloc(c->n, sizeof *r);
    uint64_t *after = calloc(c->n, sizeof *after);
    int ms, rc;
    char what[128];

    memset(&h, 0, sizeof h);
    if (!r || !after) {
        free(r);
        free(after);
        return fail_whole(c, "export", EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    const char *v = ctl_opt(a, "--min-score");
    if ((v && ctl_parse_u64(a, "--min-score", v, 0, UINT64_MAX, &q.min_score) != 0) ||
        deadline_ms(a, &ms) != 0) {
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    if ((rc = after_versions(c, a, table, after)) || (rc = describe_all(c, table, r)))
        goto out;
    const Ember__V1__TableConfig *cfg = config_of(&r[0]);
    uint64_t size = 0;
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__TableInfo *t = ((const Ember__V1__DescribeTableResponse *)r[i].msg)->table;
        const Ember__V1__TableConfig *ti = t->config;
        uint32_t k0 = cfg->optimizer ? (uint32_t)cfg->optimizer->kind : 0,
                 ki = ti->optimizer ? (uint32_t)ti->optimizer->kind : 0;
        if (ti->dim != cfg->dim || ki != k0) {
            char m[300];
            snprintf(m, sizeof m, "table '%s' is dim %u, %s on shard %u but dim %u, %s on "
                     "shard %u: one file cannot hold both", table, cfg->dim, optimizer_name(k0),
                     c->shards[0].index, ti->dim, optimizer_name(ki), c->shards[i].index);
            rc = fail_whole(c, "export", EMBER_FAILED_PRECONDITION, m);
            goto out;
        }
        size += t->stats ? t->stats->size : 0;
    }

    /* The header: what is known now; counts and versions as the streams end. */
    snprintf(h.table, sizeof h.table, "%s", table);
    h.dim = cfg->dim;
    h.full_rows = ctl_opt(a, "--full-rows") != NULL;
    h.row_floats = h.full_rows ? 0 : cfg->dim;  /* full rows: the first message says */
    h.optimizer = cfg->optimizer ? (uint32_t)cfg->optimizer->kind : 0;
    h.shard_count = c->count;
    h.n_shards = c->n;
    h.min_score = q.min_score;
    h.shards = calloc(c->n, sizeof *h.shards);
    h.config_len = protobuf_c_message_get_packed_size(&cfg->base);
    h.config = malloc(h.config_len + 1);
    if (!h.shards || !h.config) {
        rc = fail_whole(c, "export", EMBER_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    protobuf_c_message_pack(&cfg->base, h.config);
    int filtered = q.min_score != 0;
    for (unsigned i = 0; i < c->n; i++) {
        h.shards[i].index = c->shards[i].index;
        h.shards[i].after_version = after[i];
        filtered |= after[i] != 0;
    }

    ember_error err;
    ctl_progress p;
    export_run x = {NULL, &h, &p, 0};
    if (ctl_xwriter_open(file, &h, &x.w, &err) != 0) {
        rc = fail_whole(c, "export", err.code, err.message);
        goto out;
    }
    for (unsigned i = 0; i < c->n; i++)
        ctl_replies_free(&r[i], 1);  /* the configs are packed into h; r now for streams */
    snprintf(what, sizeof what, "export %s", table);
    ctl_progress_start(&p, what, filtered ? 0 : size);
    double t0 = ctl_now();
    q.table = (char *)table;
    q.full_rows = h.full_rows;
    q.rows_per_message = EXPORT_ROWS_PER_MESSAGE;
    int failed = 0;
    for (unsigned i = 0; i < c->n && !failed; i++) {
        q.after_version = after[i];
        failed = export_shard(c, i, &q, ms, &x, &r[i]) != 0;
    }
    ctl_progress_end(&p);
    if (failed) {
        ctl_xwriter_abort(x.w);
        rc = fail_shards(c, r);
        goto out;
    }
    uint64_t bytes = ctl_xwriter_bytes(x.w);
    if (ctl_xwriter_commit(x.w, &h, &err) != 0) {
        rc = fail_whole(c, "export", err.code, err.message);
        goto out;
    }
    double dt = ctl_now() - t0;
    char b1[32], b2[32];
    if (c->json) {
        ctl_json j;
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", table);
        ctl_json_str(&j, "file", file);
        ctl_json_u64(&j, "rows", h.rows);
        ctl_json_u64(&j, "bytes", bytes);
        ctl_json_double(&j, "seconds", dt);
        ctl_json_bool(&j, "full_rows", h.full_rows);
        ctl_json_u64(&j, "row_floats", h.row_floats);
        ctl_json_u64(&j, "shard_count", h.shard_count);
        ctl_json_array(&j, "shards");
        for (unsigned i = 0; i < c->n; i++) {
            ctl_json_object(&j, NULL);
            json_shard(&j, &c->shards[i]);
            ctl_json_u64(&j, "rows", h.shards[i].rows);
            ctl_json_u64(&j, "after_version", h.shards[i].after_version);
            ctl_json_u64(&j, "table_version", h.shards[i].table_version);
            ctl_json_u64(&j, "max_version", h.shards[i].max_version);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_errors(&j, r, c->n);
        ctl_json_end_object(&j);
        ctl_json_finish(&j);
    } else {
        for (unsigned i = 0; i < c->n; i++)
            printf("shard %u (%s): %s rows, table version %" PRIu64 "\n", c->shards[i].index,
                   c->shards[i].address, ctl_fmt_count(b1, sizeof b1, h.shards[i].rows),
                   h.shards[i].table_version);
        printf("exported %s rows of %s (%s) to %s in %.1fs\n", ctl_fmt_count(b1, sizeof b1, h.rows),
               table, ctl_fmt_bytes(b2, sizeof b2, bytes), file, dt);
    }
    rc = CTL_EXIT_OK;
out:
    ctl_replies_free(r, c->n);
    free(r);
    free(after);
    ctl_xheader_free(&h);
    return rc;
}

/* ---- import ----------------------------------------------------------------------------- */

const ctl_optdef ctl_import_opts[] = {
    {"--create", NULL, "create the table where missing, with the exported table's config"},
    {"--capacity", "N", "with --create: keys per shard (default: the export's, more when the\n"
                        "                           rows go to fewer shards than they came from)"},
    {"--deadline", "SECONDS", "of each shard's stream (default 86400)"},
    {"--any-shard", NULL, "let each server take rows whose key is another shard's (a deliberate\n"
                          "                           import into one shard; servers started with\n"
                          "                           --shard-count > 1 refuse them otherwise)"},
    {NULL, NULL, NULL},
};

/* One destination shard: its upload and the rows waiting to go. */
typedef struct dest {
    ember_rpc_upload *up;
    size_t batch;            /* rows per message */
    size_t n;                /* rows waiting */
    uint64_t *keys, *scores, *versions;
    float *rows;
    uint64_t sent, acked;
} dest;

typedef struct import_run {
    const ctl *c;
    const char *table;
    uint32_t rf;
    int ms;
    dest *d;                 /* [c->n] */
    ctl_reply *r;            /* [c->n] */
    int any_shard;           /* --any-shard: ImportChunk.any_shard */
} import_run;

/* Sends shard i's waiting rows as one Import message (opening its stream first
 * if needed). Returns 0 or the status, with r[i] filled. */
static int import_flush(import_run *x, unsigned i)
{
    dest *d = &x->d[i];
    ember_error err;
    if (!d->n)
        return 0;
    if (!d->up && !(d->up = ember_rpc_upload_open(x->c->shards[i].ch, ADMIN "Import", x->ms,
                                                  &err))) {
        x->r[i].code = err.code;
        snprintf(x->r[i].message, sizeof x->r[i].message, "%s", err.message);
        return err.code;
    }
    Ember__V1__ImportChunk ch = EMBER__V1__IMPORT_CHUNK__INIT;
    ch.table = (char *)x->table;
    ch.keys.data = (uint8_t *)d->keys;
    ch.keys.len = 8 * d->n;
    ch.scores.data = (uint8_t *)d->scores;
    ch.scores.len = 8 * d->n;
    ch.versions.data = (uint8_t *)d->versions;
    ch.versions.len = 8 * d->n;
    ch.values.data = (uint8_t *)d->rows;
    ch.values.len = (size_t)4 * d->n * x->rf;
    ch.row_floats = x->rf;
    ch.any_shard = x->any_shard != 0;
    size_t len = protobuf_c_message_get_packed_size(&ch.base);
    uint8_t *buf = malloc(len);
    int code = buf ? 0 : ember_error_set(&err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    if (buf) {
        protobuf_c_message_pack(&ch.base, buf);
        code = ember_rpc_upload_write(d->up, buf, len, &err);
        free(buf);
    }
    if (code) {
        /* the server ended the call: its status says why */
        uint8_t *resp;
        size_t rlen;
        ember_rpc_upload_finish(d->up, &resp, &rlen, &err);
        free(resp);
        d->up = NULL;
        x->r[i].code = err.code ? err.code : code;
        snprintf(x->r[i].message, sizeof x->r[i].message, "%s", err.message);
        return x->r[i].code;
    }
    d->sent += d->n;
    d->n = 0;
    return 0;
}

/* Half-closes shard i's stream and reads how many rows it imported. */
static int import_finish(import_run *x, unsigned i)
{
    dest *d = &x->d[i];
    ember_error err;
    uint8_t *resp;
    size_t len;
    if (!d->up)
        return 0;
    int code = ember_rpc_upload_finish(d->up, &resp, &len, &err);
    d->up = NULL;
    if (!code) {
        static const uint8_t empty;
        Ember__V1__ImportResponse *ir = ember__v1__import_response__unpack(NULL, len,
                                                                            resp ? resp : &empty);
        if (ir) {
            d->acked = ir->rows;
            ember__v1__import_response__free_unpacked(ir, NULL);
        } else {
            code = ember_error_set(&err, EMBER_INTERNAL,
                                   "the Import reply does not decode");
        }
    }
    free(resp);
    if (!code && d->acked != d->sent)
        code = ember_error_set(&err, EMBER_INTERNAL,
                               "the server imported %" PRIu64 " rows of %" PRIu64 " sent",
                               d->acked, d->sent);
    if (code && !x->r[i].code) {
        x->r[i].code = code;
        snprintf(x->r[i].message, sizeof x->r[i].message, "%s", err.message);
    }
    return code;
}

/* --create: the exported table's config on every selected shard (if missing). */
static int import_create(const ctl *c, const ctl_args *a, const char *table, const ctl_xheader *h,
                         ctl_reply *r)
{
    Ember__V1__TableConfig *cfg = ember__v1__table_config__unpack(NULL, h->config_len, h->config);
    if (!cfg)
        return fail_whole(c, "import", EMBER_DATA_LOSS,
                          "the file's table config does not decode: create the table first");
    Ember__V1__CreateTableRequest req = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
    const char *v = ctl_opt(a, "--capacity");
    char *backend = cfg->backend;
    uint64_t cap = cfg->capacity;
    if (v && ctl_parse_u64(a, "--capacity", v, 1, UINT64_C(1) << 40, &cap) != 0) {
        ember__v1__table_config__free_unpacked(cfg, NULL);
        return CTL_EXIT_USAGE;
    }
    /* the same rows over fewer shards need more room on each */
    if (!v && c->count < h->shard_count && cap <= (UINT64_C(1) << 40) / h->shard_count)
        cap = (cap * h->shard_count + c->count - 1) / c->count;
    cfg->capacity = cap;
    cfg->backend = (char *)"";    /* each server's own --backend */
    req.name = (char *)table;
    req.config = cfg;
    req.if_not_exists = 1;
    unsigned failed = ctl_call(c, ADMIN "CreateTable", &req.base,
                               &ember__v1__create_table_response__descriptor, 0, r);
    cfg->backend = backend;
    ember__v1__table_config__free_unpacked(cfg, NULL);
    if (failed)
        return fail_shards(c, r);
    ctl_replies_free(r, c->n);
    return 0;
}

/* The table on every selected shard must take the file's rows. */
static int import_check(const ctl *c, const char *table, const char *file, const ctl_xheader *h,
                        const ctl_reply *r)
{
    char m[700];
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__TableConfig *cfg = config_of(&r[i]);
        uint32_t kind = cfg->optimizer ? (uint32_t)cfg->optimizer->kind : 0;
        if (cfg->dim != h->dim)
            snprintf(m, sizeof m, "%s holds rows of dim %u; table '%s' on shard %u has dim %u",
                     file, h->dim, table, c->shards[i].index, cfg->dim);
        else if (h->full_rows && kind != h->optimizer)
            snprintf(m, sizeof m, "%s holds %s optimizer state; table '%s' on shard %u uses %s",
                     file, optimizer_name(h->optimizer), table, c->shards[i].index,
                     optimizer_name(kind));
        else if (!h->full_rows && kind != 0)
            snprintf(m, sizeof m, "%s holds embeddings only (exported without --full-rows); "
                     "table '%s' uses %s, whose rows need optimizer state: export with "
                     "--full-rows", file, table, optimizer_name(kind));
        else
            continue;
        return fail_whole(c, "import", EMBER_FAILED_PRECONDITION, m);
    }
    return 0;
}

/* ServerInfo's limits give each shard's rows per Import message. */
static int import_batches(const ctl *c, uint32_t rf, dest *d, ctl_reply *r)
{
    Ember__V1__ServerInfoRequest req = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    if (ctl_call(c, ADMIN "ServerInfo", &req.base, &ember__v1__server_info_response__descriptor,
                 0, r) > 0)
        return fail_shards(c, r);
    size_t row = 24u + 4u * (size_t)rf;
    for (unsigned i = 0; i < c->n; i++) {
        const Ember__V1__ServerInfoResponse *s = (const void *)r[i].msg;
        uint64_t n = IMPORT_BATCH_BYTES / row;
        if (s->max_message_bytes > 4096 && (s->max_message_bytes - 4096) / row < n)
            n = (s->max_message_bytes - 4096) / row;
        if (s->max_keys_per_request && s->max_keys_per_request < n)
            n = s->max_keys_per_request;
        d[i].batch = n ? (size_t)n : 1;
        d[i].keys = malloc(d[i].batch * 8);
        d[i].scores = malloc(d[i].batch * 8);
        d[i].versions = malloc(d[i].batch * 8);
        d[i].rows = malloc(d[i].batch * row);
        if (!d[i].keys || !d[i].scores || !d[i].versions || !d[i].rows)
            return fail_whole(c, "import", EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    ctl_replies_free(r, c->n);
    return 0;
}

int ctl_cmd_import(ctl *c, const ctl_args *a)
{
    const char *table = a->pos[0], *file = a->pos[1];
    ctl_xheader h;
    ctl_xreader *rd = NULL;
    ember_error err;
    ctl_reply *r = calloc(c->n, sizeof *r);
    dest *d = calloc(c->n, sizeof *d);
    int *pos = calloc(c->count, sizeof *pos);
    int ms, rc;
    char what[128], b1[32], b2[32];

    memset(&h, 0, sizeof h);
    if (!r || !d || !pos) {
        rc = fail_whole(c, "import", EMBER_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = deadline_ms(a, &ms)))
        goto out;
    if (ctl_opt(a, "--capacity") && !ctl_opt(a, "--create")) {
        rc = ctl_usage_error(a, "--capacity goes with --create");
        goto out;
    }
    for (unsigned i = 0; i < c->count; i++)
        pos[i] = -1;
    for (unsigned i = 0; i < c->n; i++) {
        pos[c->shards[i].index] = (int)i;
        r[i].shard = &c->shards[i];
    }
    /* The whole file is checked here, before anything is sent. */
    if (ctl_xreader_open(file, &rd, &h, &err) != 0) {
        rc = fail_whole(c, "import", err.code, err.message);
        goto out;
    }
    if ((ctl_opt(a, "--create") && (rc = import_create(c, a, table, &h, r))) ||
        (rc = describe_all(c, table, r)) || (rc = import_check(c, table, file, &h, r)))
        goto out;
    ctl_replies_free(r, c->n);
    if ((rc = import_batches(c, h.row_floats, d, r)))
        goto out;

    import_run x = {c, table, h.row_floats, ms, d, r, ctl_opt(a, "--any-shard") != NULL};
    ctl_progress p;
    snprintf(what, sizeof what, "import %s", table);
    ctl_progress_start(&p, what, h.rows);
    double t0 = ctl_now();
    uint64_t done = 0, skipped = 0;
    int failed = 0;
    size_t rowb = (size_t)4 * h.row_floats;
    for (;;) {
        ctl_xchunk ch;
        if (ctl_xreader_next(rd, &ch, &err) != 0) {
            ctl_progress_end(&p);
            rc = fail_whole(c, "import", err.code, err.message);
            failed = -1;
            break;
        }
        if (!ch.n)
            break;
        for (size_t k = 0; k < ch.n && !failed; k++) {
            uint64_t key;
            memcpy(&key, &ch.keys[k], 8);
            int i = pos[ember_shard_of(key, c->count)];
            if (i < 0) {      /* another shard's row, with --shard */
                skipped++;
                continue;
            }
            dest *t = &d[i];
            t->keys[t->n] = key;
            memcpy(&t->scores[t->n], &ch.scores[k], 8);
            memcpy(&t->versions[t->n], &ch.versions[k], 8);
            memcpy(t->rows + t->n * h.row_floats, ch.rows + k * h.row_floats, rowb);
            if (++t->n == t->batch)
                failed = import_flush(&x, (unsigned)i) != 0;
        }
        if (failed)
            break;
        done += ch.n;
        ctl_progress_update(&p, done, ctl_xreader_offset(rd));
    }
    for (unsigned i = 0; i < c->n && !failed; i++)
        failed = import_flush(&x, i) != 0;
    /* Close every stream, also after a failure: what was sent is imported. */
    for (unsigned i = 0; i < c->n; i++)
        failed |= import_finish(&x, i) != 0;
    if (failed < 0)
        goto out;      /* the file changed under us: reported above */
    ctl_progress_end(&p);
    double dt = ctl_now() - t0;
    uint64_t imported = 0;
    for (unsigned i = 0; i < c->n; i++)
        imported += d[i].acked;
    if (c->json) {
        ctl_json j;
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", table);
        ctl_json_str(&j, "file", file);
        ctl_json_u64(&j, "rows", imported);
        ctl_json_u64(&j, "file_rows", h.rows);
        ctl_json_u64(&j, "skipped", skipped);
        ctl_json_u64(&j, "bytes", ctl_xreader_offset(rd));
        ctl_json_double(&j, "seconds", dt);
        ctl_json_array(&j, "shards");
        for (unsigned i = 0; i < c->n; i++) {
            ctl_json_object(&j, NULL);
            json_shard(&j, &c->shards[i]);
            ctl_json_u64(&j, "rows", d[i].acked);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_errors(&j, r, c->n);
        ctl_json_end_object(&j);
        ctl_json_finish(&j);
    } else {
        for (unsigned i = 0; i < c->n; i++)
            if (!r[i].code)
                printf("shard %u (%s): %s rows\n", c->shards[i].index, c->shards[i].address,
                       ctl_fmt_count(b1, sizeof b1, d[i].acked));
        printf("imported %s rows of %s (%s) into %s", ctl_fmt_count(b1, sizeof b1, imported),
               file, ctl_fmt_bytes(b2, sizeof b2, ctl_xreader_offset(rd)), table);
        if (skipped)
            printf(", %s rows of other shards skipped", ctl_fmt_count(b2, sizeof b2, skipped));
        printf(" in %.1fs\n", dt);
    }
    fflush(stdout);
    rc = ctl_report(r, c->n);
    if (rc)
        fprintf(stderr, "emberctl import: stopped; the rows already sent stay imported (running "
                        "the import again is safe)\n");
out:
    for (unsigned i = 0; d && i < c->n; i++) {
        if (d[i].up) {
            uint8_t *resp;
            size_t len;
            ember_rpc_upload_finish(d[i].up, &resp, &len, NULL);
            free(resp);
        }
        free(d[i].keys);
        free(d[i].scores);
        free(d[i].versions);
        free(d[i].rows);
    }
    ctl_xreader_close(rd);
    ctl_xheader_free(&h);
    if (r)
        ctl_replies_free(r, c->n);
    free(r);
    free(d);
    free(pos);
    return rc;
}

/* ---- reshard ---------------------------------------------------------------------------- */

const ctl_optdef ctl_reshard_opts[] = {
    {"--from", "PATHS", "the N shards' checkpoints: files, directories or glob patterns,\n"
                        "                           comma-separated (required)"},
    {"--to-count", "M", "shards to write checkpoints for (required)"},
    {"--out", "DIR", "writes DIR/shard-<i>/<table>.ckpt for i in 0..M-1 (required)"},
    {"--table", "NAME", "the table, where a directory holds several"},
    {"--capacity", "N", "keys per new shard (default: the old total spread over M,\n"
                        "                           never less than an old shard's)"},
    {NULL, NULL, NULL},
};

static void reshard_progress(void *ud, uint64_t rows, uint64_t total, uint64_t bytes)
{
    ctl_progress *p = ud;
    p->total_rows = total;
    ctl_progress_update(p, rows, bytes);
}

int ctl_cmd_reshard(ctl *c, const ctl_args *a)
{
    const char *from = ctl_opt(a, "--from"), *to = ctl_opt(a, "--to-count");
    const char *out = ctl_opt(a, "--out"), *v;
    ctl_reshard_job j;
    ctl_reshard_result res;
    uint64_t m;
    char msg[1024], b1[32];

    memset(&j, 0, sizeof j);
    if (!from || !*from)
        return ctl_usage_error(a, "--from is required (the old shards' checkpoints)");
    if (!to)
        return ctl_usage_error(a, "--to-count is required");
    if (ctl_parse_u64(a, "--to-count", to, 1, 65536, &m) != 0)
        return CTL_EXIT_USAGE;
    if (!out || !*out)
        return ctl_usage_error(a, "--out is required");
    if ((v = ctl_opt(a, "--capacity")) &&
        ctl_parse_u64(a, "--capacity", v, 1, UINT64_C(1) << 40, &j.capacity) != 0)
        return CTL_EXIT_USAGE;
    /* --from a,b,c: split on commas */
    char *list = strdup(from);
    const char **paths = calloc(strlen(from) / 2 + 2, sizeof *paths);
    if (!list || !paths) {
        free(list);
        free(paths);
        return fail_whole(c, "reshard", EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (char *tok = list, *next; tok; tok = next) {
        if ((next = strchr(tok, ',')))
            *next++ = '\0';
        if (*tok)
            paths[j.n_from++] = tok;
    }
    ctl_progress p;
    ctl_progress_start(&p, "reshard", 0);
    j.from = paths;
    j.table = ctl_opt(a, "--table");
    j.to_count = (uint32_t)m;
    j.out_dir = out;
    j.shard_of = ember_shard_of;
    j.progress = reshard_progress;
    j.progress_ud = &p;
    int code = ctl_reshard_run(&j, &res, msg, sizeof msg);
    ctl_progress_end(&p);
    int rc = CTL_EXIT_OK;
    if (code) {
        rc = fail_whole(c, "reshard", code, msg);
    } else if (c->json) {
        ctl_json js;
        ctl_json_init(&js, stdout);
        ctl_json_object(&js, NULL);
        ctl_json_str(&js, "table", res.table);
        ctl_json_u64(&js, "dim", res.dim);
        ctl_json_str(&js, "optimizer", optimizer_name(res.optimizer));
        ctl_json_u64(&js, "from_count", res.from_count);
        ctl_json_u64(&js, "to_count", res.to_count);
        ctl_json_u64(&js, "rows", res.rows);
        ctl_json_u64(&js, "version", res.version);
        ctl_json_u64(&js, "capacity", res.capacity);
        ctl_json_u64(&js, "misplaced", res.misplaced);
        ctl_json_array(&js, "inputs");
        for (uint32_t i = 0; i < res.from_count; i++)
            ctl_json_str(&js, NULL, res.inputs[i]);
        ctl_json_end_array(&js);
        ctl_json_array(&js, "outputs");
        for (uint32_t i = 0; i < res.to_count; i++) {
            ctl_json_object(&js, NULL);
            ctl_json_u64(&js, "shard", i);
            ctl_json_str(&js, "file", res.outputs[i]);
            ctl_json_u64(&js, "rows", res.rows_out[i]);
            ctl_json_end_object(&js);
        }
        ctl_json_end_array(&js);
        ctl_json_end_object(&js);
        ctl_json_finish(&js);
    } else {
        for (uint32_t i = 0; i < res.to_count; i++)
            printf("shard %u of %u: %s rows  %s\n", i, res.to_count,
                   ctl_fmt_count(b1, sizeof b1, res.rows_out[i]), res.outputs[i]);
        printf("resharded %s rows of %s (dim %u, %s) from %u shards to %u\n",
               ctl_fmt_count(b1, sizeof b1, res.rows), res.table, res.dim,
               optimizer_name(res.optimizer), res.from_count, res.to_count);
    }
    /* Rows in a shard that does not own them: that shard's server was started
     * with another index or count. They are routed right all the same. */
    if (!code && res.misplaced)
        fprintf(stderr, "emberctl reshard: warning: %s rows were in a shard that does not own "
                        "them (a server started with the wrong --shard-index or count?)\n",
                ctl_fmt_count(b1, sizeof b1, res.misplaced));
    ctl_reshard_result_free(&res);
    free(list);
    free(paths);
    return rc;
}

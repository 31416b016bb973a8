/*
 * make_seeds.c — writes the seed corpora of the fuzz targets, valid messages
 * and files of every kind each target reads (plus a few that the server must
 * refuse), so that fuzzing starts deep in each decoder rather than at its first
 * length check.
 *
 * The committed files under tests/assets/fuzz/ are what the targets and the
 * replay tests use; this program documents how they were made and remakes them
 * after a change to proto/ember/v1/ember.proto or the checkpoint format.
 * tests/fuzz/build.sh builds it; from the repository root:
 *
 *   build-fuzz/make_seeds tests/assets/fuzz
 *
 * writes tests/assets/fuzz/wire/ (PullRequest, PushRequest, PushPullRequest and
 * their replies, encoded by proto/wire.h), tests/assets/fuzz/admin/ (byte 0 the
 * message type as fuzz_admin.c numbers them, then the message packed by
 * protobuf-c) and tests/assets/fuzz/ckpt/ (checkpoints of every optimizer from
 * ember_ckpt_save, and one re-chunked into small chunks). The checkpoint
 * fixtures in tests/assets/ckpt are seeds too (tests/fuzz/run.sh adds them).
 * Contents are deterministic except the checkpoints' creation times.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ember/v1/ember.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proto/wire.h"
#include "storage/checkpoint.h"
#include "storage/crc32c.h"

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "make_seeds: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void put(const char *dir, const char *name, const uint8_t *b, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, dir);
    if (mkdir(path, 0755) && errno != EEXIST)
        die(path);
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(b, 1, n, f) != n) || fclose(f))
        die(path);
}

/* ---- wire ------------------------------------------------------------------- */

static ember_wire_bytes span(const void *p, size_t n)
{
    ember_wire_bytes b = {p, n};
    return b;
}

static ember_wire_bytes str(const char *s) { return span(s, strlen(s)); }

static const uint64_t keys4[4] = {1, 2, 1000003, UINT64_C(0xFFFFFFFFFFFFFFFB)};
static const uint64_t scores4[4] = {10, 20, 30, 40};

/* n keys × dim 4 of dtype, values 0.5, 1, 1.5, ... (NaN at [nan_at] if ≥ 0). */
static uint8_t *values_of(int32_t dtype, size_t n, int nan_at)
{
    float v[4 * 4];
    for (size_t i = 0; i < n * 4; i++)
        v[i] = 0.5f * (float)(i + 1);
    if (nan_at >= 0)
        v[nan_at] = __builtin_nanf("");
    uint8_t *b = malloc(n * 4 * 4 + 1);
    if (!b)
        die("malloc");
    ember_wire_to_wire(dtype, v, n * 4, b);
    return b;
}

static void put_pull(const char *name, const ember_wire_pull_request *m)
{
    size_t n = ember_wire_pull_request_size(m, NULL);
    uint8_t *b = malloc(n + 1);
    if (!b)
        die("malloc");
    ember_wire_pull_request_encode(m, b);
    put("wire", name, b, n);
    free(b);
}

static void put_push(const char *name, const ember_wire_push_request *m)
{
    size_t n = ember_wire_push_request_size(m, NULL);
    uint8_t *b = malloc(n + 1);
    if (!b)
        die("malloc");
    ember_wire_push_request_encode(m, b);
    put("wire", name, b, n);
    free(b);
}

static void wire_seeds(void)
{
    ember_wire_pull_request q = {0};
    q.table = str("emb");
    q.keys = span(keys4, 3 * 8);
    put_pull("pull_serve.bin", &q);
    q.insert_missing = 1;
    q.want_found = 1;
    q.dim = 4;
    put_pull("pull_insert_found_dim.bin", &q);
    q.dtype = EMBER_WIRE_F16;
    put_pull("pull_f16.bin", &q);
    q.dtype = EMBER_WIRE_BF16;
    q.keys = span(keys4, 4 * 8);
    q.scores = span(scores4, 4 * 8);
    put_pull("pull_bf16_scores.bin", &q);
    ember_wire_pull_request e = {0};
    e.table = str("emb");
    put_pull("pull_empty.bin", &e);
    e.dim = 8;
    e.dtype = 7;
    e.keys = span(keys4, 8);
    put_pull("pull_bad_dim_dtype.bin", &e);
    /* pooled: keys {1, 2}, {3} weighted, mean; and the matching push */
    static const uint64_t offs3[3] = {0, 2, 3};
    static const float w3[3] = {1, 0.5f, 2}, norms2[2] = {1.5f, 2};
    ember_wire_pull_request pq = {0};
    pq.table = str("emb");
    pq.keys = span(keys4, 3 * 8);
    pq.insert_missing = 1;
    pq.offsets = span(offs3, sizeof offs3);
    pq.combiner = EMBER_WIRE_COMBINER_MEAN;
    pq.weights = span(w3, sizeof w3);
    put_pull("pull_pooled_mean.bin", &pq);
    ember_wire_push_request pu = {0};
    uint8_t *pv = values_of(EMBER_WIRE_F32, 2, -1);
    pu.table = str("emb");
    pu.keys = span(keys4, 3 * 8);
    pu.values = span(pv, 2 * 4 * 4);
    pu.offsets = span(offs3, sizeof offs3);
    pu.combiner = EMBER_WIRE_COMBINER_MEAN;
    pu.weights = span(w3, sizeof w3);
    pu.norms = span(norms2, sizeof norms2);
    put_push("push_pooled_mean.bin", &pu);
    free(pv);

    static const char *mode_names[] = {"gradients", "assign", "accum", "insert_or_assign"};
    static const char *dtype_names[] = {"f32", "f16", "bf16"};
    for (int32_t mode = 0; mode < 4; mode++)
        for (int32_t dt = 0; dt < 3; dt++) {
            ember_wire_push_request p = {0};
            uint8_t *v = values_of(dt, 3, -1);
            p.table = str("emb");
            p.keys = span(keys4, 3 * 8);
            p.values = span(v, 3 * 4 * ember_wire_dtype_size(dt));
            p.dtype = dt;
            p.mode = mode;
            p.client_id = 0x1234567890abcdefu;
            p.sequence = (uint64_t)(mode * 3 + dt + 1);
            if (mode == EMBER_WIRE_PUSH_INSERT_OR_ASSIGN)
                p.scores = span(scores4, 3 * 8);
            char name[64];
            snprintf(name, sizeof name, "push_%s_%s.bin", mode_names[mode], dtype_names[dt]);
            put_push(name, &p);
            free(v);
        }
    {
        ember_wire_push_request p = {0};
        uint8_t *v = values_of(EMBER_WIRE_F32, 2, 5);
        p.table = str("emb");
        p.keys = span(keys4, 2 * 8);
        p.values = span(v, 2 * 4 * 4);
        put_push("push_nan.bin", &p);
        uint64_t reserved[2] = {7, UINT64_C(0xFFFFFFFFFFFFFFFE)};
        p.keys = span(reserved, 16);
        p.values = span(v, 2 * 4 * 4 - 4); /* a value short, too */
        put_push("push_reserved_short.bin", &p);
        free(v);
    }

    uint8_t *v = values_of(EMBER_WIRE_F32, 2, -1);
    ember_wire_pushpull_request pp = {0};
    pp.has_push = pp.has_pull = 1;
    pp.push.table = pp.pull.table = str("emb");
    pp.push.keys = span(keys4, 16);
    pp.push.values = span(v, 32);
    pp.push.client_id = 99;
    pp.push.sequence = 1;
    pp.pull.keys = span(keys4 + 1, 24);
    pp.pull.insert_missing = 1;
    pp.pull.want_found = 1;
    for (int which = 0; which < 3; which++) {
        ember_wire_pushpull_request m = pp;
        m.has_push = which != 2;
        m.has_pull = which != 1;
        size_t n = ember_wire_pushpull_request_size(&m, NULL, NULL);
        uint8_t *b = malloc(n + 1);
        if (!b)
            die("malloc");
        ember_wire_pushpull_request_encode(&m, b);
        static const char *names[] = {"pushpull_both.bin", "pushpull_push_only.bin",
                                      "pushpull_pull_only.bin"};
        put("wire", names[which], b, n);
        free(b);
    }

    /* Replies (what the client decodes). */
    uint8_t found[3] = {1, 0, 1}, buf[256];
    ember_wire_pull_response pr = {0};
    pr.values = span(v, 32);
    pr.dim = 4;
    pr.found = span(found, 2);
    size_t n = ember_wire_pull_response_encode(&pr, buf);
    put("wire", "pull_response.bin", buf, n);
    ember_wire_push_response ps = {7, 1, 0};
    n = ember_wire_push_response_encode(&ps, buf);
    put("wire", "push_response.bin", buf, n);
    ember_wire_pushpull_response ppr = {1, 1, ps, pr};
    n = ember_wire_pushpull_response_encode(&ppr, buf);
    put("wire", "pushpull_response.bin", buf, n);
    free(v);
}

/* ---- admin ------------------------------------------------------------------ */

/* fuzz_admin.c's numbering of the message types. */
enum {
    A_CREATE, A_DROP, A_LIST, A_DESCRIBE, A_STATS, A_SAVE, A_LOAD, A_EVICT, A_CLEAR,
    A_INFO, A_EXPORT, A_IMPORT, A_HEALTH,
};

static void put_admin(const char *name, int kind, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n + 1);
    if (!b)
        die("malloc");
    b[0] = (uint8_t)kind;
    protobuf_c_message_pack(m, b + 1);
    put("admin", name, b, n + 1);
    free(b);
}

static void admin_seeds(void)
{
    static const char *opt_names[] = {"sgd", "adagrad", "adam", "ftrl"};
    for (int o = 0; o < 4; o++) {
        Ember__V1__CreateTableRequest r = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
        Ember__V1__TableConfig c = EMBER__V1__TABLE_CONFIG__INIT;
        Ember__V1__OptimizerConfig oc = EMBER__V1__OPTIMIZER_CONFIG__INIT;
        Ember__V1__InitializerConfig ic = EMBER__V1__INITIALIZER_CONFIG__INIT;
        r.name = "emb";
        r.config = &c;
        r.if_not_exists = o & 1;
        c.dim = 8;
        c.capacity = 1024;
        c.score_policy = (Ember__V1__ScorePolicy)o;
        c.seed = 42;
        c.optimizer = &oc;
        c.initializer = &ic;
        c.backend = "cpu";
        oc.kind = (Ember__V1__Optimizer)o;
        oc.lr = 0.05f;
        oc.weight_decay = o == 2 ? 0.01f : 0.0f;
        oc.l1 = o == 3 ? 0.1f : 0.0f;
        ic.kind = (Ember__V1__Initializer)(o + 1);
        ic.a = o == 0 ? 0.25f : 0.0f;
        if (o == 1) {
            c.admission_min_count = 2;
            c.admission_sketch_width = 1024;
        }
        c.zero_nonfinite = o == 3;
        char name[64];
        snprintf(name, sizeof name, "create_%s.bin", opt_names[o]);
        put_admin(name, A_CREATE, &r.base);
    }
    {
        Ember__V1__CreateTableRequest r = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
        Ember__V1__TableConfig c = EMBER__V1__TABLE_CONFIG__INIT;
        r.name = "Bad Name!";
        r.config = &c;
        c.dim = 0;
        c.capacity = UINT64_MAX;
        put_admin("create_invalid.bin", A_CREATE, &r.base);
    }
    Ember__V1__DropTableRequest drop = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    drop.name = "emb";
    drop.if_exists = 1;
    put_admin("drop.bin", A_DROP, &drop.base);
    Ember__V1__ListTablesRequest list = EMBER__V1__LIST_TABLES_REQUEST__INIT;
    put_admin("list.bin", A_LIST, &list.base);
    Ember__V1__DescribeTableRequest desc = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    desc.name = "emb";
    put_admin("describe.bin", A_DESCRIBE, &desc.base);
    Ember__V1__GetStatsRequest stats = EMBER__V1__GET_STATS_REQUEST__INIT;
    stats.table = "emb";
    put_admin("stats.bin", A_STATS, &stats.base);
    Ember__V1__SaveRequest save = EMBER__V1__SAVE_REQUEST__INIT;
    save.table = "emb";
    save.dir = "/var/lib/ember/ckpt";
    put_admin("save.bin", A_SAVE, &save.base);
    Ember__V1__LoadRequest load = EMBER__V1__LOAD_REQUEST__INIT;
    load.dir = "/var/lib/ember/ckpt";
    load.create = 1;
    put_admin("load.bin", A_LOAD, &load.base);
    Ember__V1__EvictRequest ev = EMBER__V1__EVICT_REQUEST__INIT;
    ev.table = "emb";
    ev.what_case = EMBER__V1__EVICT_REQUEST__WHAT_BELOW_SCORE;
    ev.below_score = 1u << 20;
    put_admin("evict_below.bin", A_EVICT, &ev.base);
    ev.what_case = EMBER__V1__EVICT_REQUEST__WHAT_TO_SIZE;
    ev.to_size = 10;
    put_admin("evict_to_size.bin", A_EVICT, &ev.base);
    Ember__V1__ClearRequest clr = EMBER__V1__CLEAR_REQUEST__INIT;
    clr.table = "emb";
    put_admin("clear.bin", A_CLEAR, &clr.base);
    Ember__V1__ServerInfoRequest info = EMBER__V1__SERVER_INFO_REQUEST__INIT;
    put_admin("info.bin", A_INFO, &info.base);
    Ember__V1__ExportRequest ex = EMBER__V1__EXPORT_REQUEST__INIT;
    ex.table = "emb";
    ex.min_score = 1;
    ex.after_version = 3;
    ex.full_rows = 1;
    ex.rows_per_message = 16;
    put_admin("export.bin", A_EXPORT, &ex.base);

    uint64_t keys[3] = {5, 6, 70}, sc[3] = {1, 2, 3}, ver[3] = {4, 5, 6};
    float rows[3 * 4];
    for (int i = 0; i < 12; i++)
        rows[i] = (float)i - 5.5f;
    Ember__V1__ImportChunk im = EMBER__V1__IMPORT_CHUNK__INIT;
    im.table = "emb";
    im.keys.data = (uint8_t *)keys;
    im.keys.len = sizeof keys;
    im.values.data = (uint8_t *)rows;
    im.values.len = sizeof rows;
    im.scores.data = (uint8_t *)sc;
    im.scores.len = sizeof sc;
    im.versions.data = (uint8_t *)ver;
    im.versions.len = sizeof ver;
    im.row_floats = 4;
    put_admin("import.bin", A_IMPORT, &im.base);
    im.scores.len = im.versions.len = 0;
    im.row_floats = 0;
    put_admin("import_no_scores.bin", A_IMPORT, &im.base);

    Grpc__Health__V1__HealthCheckRequest h = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    h.service = "ember.v1.Shard";
    put_admin("health.bin", A_HEALTH, &h.base);
}

/* ---- checkpoints ------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len)
        die(path);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void wr32(uint8_t *b, uint32_t v) { memcpy(b, &v, 4); }
static void wr64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }

/* The one-chunk checkpoint b[n] (rows of rf floats) rewritten in chunks of at
 * most `per` rows, with every CRC and count redone (checkpoint.h's layout). */
static uint8_t *rechunk(const uint8_t *b, size_t n, uint32_t rf, uint32_t per, size_t *out_n)
{
    enum { HDR = 268 }; /* format version 3's header; the chunk's count follows */
    uint32_t rows;
    memcpy(&rows, b + HDR + 4, 4);
    const uint8_t *keys = b + HDR + 8, *scores = keys + 8 * rows, *vers = scores + 8 * rows,
                  *data = vers + 8 * rows;
    uint32_t chunks = (rows + per - 1) / per;
    size_t cap = n + chunks * 12 + 64;
    uint8_t *o = calloc(1, cap);
    if (!o)
        die("calloc");
    memcpy(o, b, HDR);
    wr32(o + 188, per);
    wr32(o + HDR - 4, ember_crc32c(o, HDR - 4));
    size_t off = HDR;
    for (uint32_t c = 0; c < chunks; c++) {
        uint32_t first = c * per, k = rows - first < per ? rows - first : per;
        size_t start = off;
        wr32(o + off, 0x4B4E4843u);
        wr32(o + off + 4, k);
        off += 8;
        memcpy(o + off, keys + 8 * first, 8 * k), off += 8 * k;
        memcpy(o + off, scores + 8 * first, 8 * k), off += 8 * k;
        memcpy(o + off, vers + 8 * first, 8 * k), off += 8 * k;
        memcpy(o + off, data + 4 * (size_t)rf * first, 4 * (size_t)rf * k);
        off += 4 * (size_t)rf * k;
        wr32(o + off, ember_crc32c(o + start, off - start));
        off += 4;
    }
    memcpy(o + off, "EMBREND", 8);
    wr64(o + off + 8, rows);
    wr64(o + off + 16, chunks);
    wr32(o + off + 24, ember_crc32c(o + off, 24));
    *out_n = off + 28;
    return o;
}

static void ckpt_seeds(void)
{
    static const char *opt_names[] = {"sgd", "adagrad", "adam", "ftrl"};
    char tmp[] = "/tmp/ember-seeds-XXXXXX";
    if (!mkdtemp(tmp))
        die("mkdtemp");
    for (int o = 0; o < 4; o++) {
        ember_table_config c;
        ember_table_config_init(&c);
        c.dim = o == 2 ? 3 : 4;
        c.capacity = 256;
        c.optim.kind = o;
        c.score_policy = o;
        c.seed = 1;
        ember_table *t;
        ember_error err;
        if (ember_table_create(&c, NULL, &t, &err)) {
            fprintf(stderr, "make_seeds: %s\n", err.message);
            exit(1);
        }
        uint64_t keys[20];
        float g[20 * 4];
        for (int i = 0; i < 20; i++)
            keys[i] = (uint64_t)i * 7919 + 1;
        for (int i = 0; i < 20 * 4; i++)
            g[i] = (float)(i % 5) - 2.0f;
        int n = o == 3 ? 20 : 5; /* ftrl: one file with more rows, re-chunked below */
        if (ember_table_apply_gradients(t, keys, (size_t)n, g, NULL, &err)) {
            fprintf(stderr, "make_seeds: %s\n", err.message);
            exit(1);
        }
        char path[256], name[64];
        snprintf(path, sizeof path, "%s/%s.ckpt", tmp, opt_names[o]);
        if (ember_ckpt_save(t, path, o ? "emb" : "", (uint32_t)o, 4, NULL, NULL, &err)) {
            fprintf(stderr, "make_seeds: %s\n", err.message);
            exit(1);
        }
        size_t len;
        uint8_t *b = slurp(path, &len);
        snprintf(name, sizeof name, "%s.ckpt", opt_names[o]);
        put("ckpt", name, b, len);
        if (o == 3) {
            size_t rl;
            uint8_t *r = rechunk(b, len, ember_table_row_floats(t), 6, &rl);
            put("ckpt", "ftrl_chunks_of_6.ckpt", r, rl);
            free(r);
        }
        free(b);
        unlink(path);
        ember_table_destroy(t);
    }
    rmdir(tmp);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR   (DIR: tests/assets/fuzz)\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) && errno != EEXIST)
        die(root);
    wire_seeds();
    admin_seeds();
    ckpt_seeds();
    return 0;
}

/*
 * test_emberctl_transfer.c — emberctl export, import and reshard against real
 * ember-server processes on loopback (harness.h), run as a user would run them.
 *
 * What a shard holds is read straight from the server (a raw Admin/Export of full
 * rows, per shard), never through emberctl, and compared exactly: every key's
 * embedding, optimizer slots, score and version, and the shard it sits on
 * against ember_shard_of. Export files are parsed here from the documented
 * format (client/ctl/ctl.h).
 *
 *   export 2 shards → import 3 shards, then a delta since the first export
 *   export without optimizer state, for an sgd table
 *   reshard 2 shards' checkpoints → 3, loaded into fresh servers
 *   refusals: missing, damaged, truncated files; wrong table, dim, optimizer,
 *   shard count; a missing shard; no file left behind by a failed run
 *   the progress line: none when stderr is not a terminal, drawn when it is
 *
 * Runs without forking (CK_FORK=no, set by CMake); tests share the clusters
 * started in main() and run in order.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"

#define ADMIN "/ember.v1.Admin/"
#define DIM 8
#define MAXRF 32
#define NKEYS 3000

static char tmpdir[128];

/* ---- clusters ------------------------------------------------------------------ */

typedef struct cluster {
    unsigned n;
    eh_server s[4];
    char list[512];
} cluster;

static cluster SRC, DST;  /* 2 shards, 3 shards */

static int cluster_start(cluster *c, unsigned n, const char *tag)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    for (unsigned i = 0; i < n; i++) {
        char idx[32], cnt[32], dir[256], mk[300];
        snprintf(idx, sizeof idx, "--shard-index=%u", i);
        snprintf(cnt, sizeof cnt, "--shard-count=%u", n);
        snprintf(dir, sizeof dir, "--checkpoint-dir=%s/%s%u", tmpdir, tag, i);
        snprintf(mk, sizeof mk, "%s/%s%u", tmpdir, tag, i);
        mkdir(mk, 0755);
        const char *flags[] = {"--threads=2", idx, cnt, dir, NULL};
        if (eh_server_start(&c->s[i], flags)) {
            fprintf(stderr, "cannot start %s shard %u\n", tag, i);
            return -1;
        }
        if (i)
            strcat(c->list, ",");
        strcat(c->list, c->s[i].addr);
    }
    return 0;
}

static void cluster_stop(cluster *c)
{
    for (unsigned i = 0; i < c->n; i++)
        eh_server_cleanup(&c->s[i]);
    c->n = 0;
}

static ember_client *client_of(const cluster *c)
{
    ember_client_options o;
    ember_error e;
    ember_client_options_init(&o);
    o.shards = c->list;
    ember_client *cl = ember_client_open(&o, &e);
    ck_assert_msg(cl != NULL, "open: %s", e.message);
    return cl;
}

/* ---- emberctl ------------------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    size_t len = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
    }
    b = calloc(1, len + 1);
    if (f && len && fread(b, 1, len, f) != len)
        b[0] = '\0';
    if (f)
        fclose(f);
    return b;
}

static char *OUT, *ERR;   /* the last run's stdout and stderr */

/* Runs `emberctl ARGS` (a shell line, printf-style); returns its exit status. */
__attribute__((format(printf, 1, 2)))
static int ctl(const char *fmt, ...)
{
    char args[4096], cmd[5000], o[200], e[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(o, sizeof o, "%s/ctl.out", tmpdir);
    snprintf(e, sizeof e, "%s/ctl.err", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", EMBERCTL_BIN, args, o, e);
    int st = system(cmd);
    free(OUT);
    free(ERR);
    OUT = slurp(o);
    ERR = slurp(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#define CTL_OK(...)                                                                       \
    do {                                                                                  \
        int rc_ = ctl(__VA_ARGS__);                                                       \
        ck_assert_msg(rc_ == 0, "emberctl exited %d\nstdout: %s\nstderr: %s", rc_, OUT, ERR); \
    } while (0)

/* emberctl must fail with `rc` and say `what` on stderr. */
#define CTL_FAILS(rc, what, ...)                                                           \
    do {                                                                                   \
        int rc_ = ctl(__VA_ARGS__);                                                        \
        ck_assert_msg(rc_ == (rc), "emberctl exited %d, want %d\nstdout: %s\nstderr: %s", rc_, \
                      (rc), OUT, ERR);                                                     \
        ck_assert_msg(strstr(ERR, (what)) != NULL, "'%s' not in stderr: %s", (what), ERR);  \
    } while (0)

static int exists(const char *fmt, ...)
{
    char p[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- rows: as a server holds them, and as an export file holds them ---------------- */

typedef struct row {
    uint64_t key, score, version;
    unsigned shard;
    uint32_t rf;
    float v[MAXRF];
} row;

typedef struct rows {
    row *r;
    size_t n, cap;
} rows;

static void rows_add(rows *s, uint64_t key, uint64_t score, uint64_t version, unsigned shard,
                     const void *v, uint32_t rf)
{
    ck_assert_uint_le(rf, MAXRF);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->r = realloc(s->r, s->cap * sizeof *s->r);
    }
    row *r = &s->r[s->n++];
    memset(r, 0, sizeof *r);
    r->key = key;
    r->score = score;
    r->version = version;
    r->shard = shard;
    r->rf = rf;
    memcpy(r->v, v, 4 * rf);
}

static int by_key(const void *a, const void *b)
{
    uint64_t x = ((const row *)a)->key, y = ((const row *)b)->key;
    return (x > y) - (x < y);
}

static void rows_sort(rows *s)
{
    if (s->n)
        qsort(s->r, s->n, sizeof *s->r, by_key);
}

static const row *rows_find(const rows *s, uint64_t key)
{
    row k = {.key = key};
    return s->n ? bsearch(&k, s->r, s->n, sizeof *s->r, by_key) : NULL;
}

static void rows_free(rows *s)
{
    free(s->r);
    memset(s, 0, sizeof *s);
}

typedef struct snap_ctx {
    rows *out;
    unsigned shard;
} snap_ctx;

static void snap_msg(void *ud, const uint8_t *d, size_t len)
{
    snap_ctx *x = ud;
    Ember__V1__ExportChunk *ch = ember__v1__export_chunk__unpack(NULL, len, d);
    ck_assert(ch != NULL);
    size_t n = ch->keys.len / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t k, s, v;
        memcpy(&k, ch->keys.data + 8 * i, 8);
        memcpy(&s, ch->scores.data + 8 * i, 8);
        memcpy(&v, ch->versions.data + 8 * i, 8);
        rows_add(x->out, k, s, v, x->shard, ch->values.data + (size_t)4 * ch->row_floats * i,
                 ch->row_floats);
    }
    ember__v1__export_chunk__free_unpacked(ch, NULL);
}

/* Every row of `table` on every shard of c (full rows), straight from the servers. */
static rows snapshot(const cluster *c, const char *table)
{
    rows s = {NULL, 0, 0};
    for (unsigned i = 0; i < c->n; i++) {
        Ember__V1__ExportRequest q = EMBER__V1__EXPORT_REQUEST__INIT;
        q.table = (char *)table;
        q.full_rows = 1;
        size_t len = ember__v1__export_request__get_packed_size(&q);
        uint8_t *b = malloc(len + 1);
        ember__v1__export_request__pack(&q, b);
        eh_client *cl = eh_client_open(c->s[i].addr);
        eh_result r;
        snap_ctx x = {&s, i};
        ck_assert_int_eq(eh_server_stream(cl, ADMIN "Export", b, len, snap_msg, &x, &r), 0);
        ck_assert_msg(r.code == 0, "export %s from shard %u: %s", table, i, r.message);
        eh_result_free(&r);
        eh_client_close(cl);
        free(b);
    }
    rows_sort(&s);
    return s;
}

static uint32_t le32(const uint8_t *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return v;
}

/* The rows of an export file, parsed from the documented layout. *full: flag bit 0. */
static rows parse_export(const char *path, int *full)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "no export file %s", path);
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(size);
    ck_assert_uint_eq(fread(b, 1, size, f), size);
    fclose(f);
    ck_assert(memcmp(b, "EMBREXPT", 8) == 0);
    ck_assert_uint_eq(le32(b + 8), 1);
    size_t o = le32(b + 12);
    uint32_t rf = le32(b + 20);
    if (full)
        *full = (int)(le32(b + 24) & 1);
    uint64_t rows_hdr;
    memcpy(&rows_hdr, b + 124, 8);
    rows s = {NULL, 0, 0};
    while (o + 8 <= size && memcmp(b + o, "EMBXEND", 8) != 0) {
        ck_assert_uint_eq(le32(b + o), 0x4B4E4843u);
        size_t n = le32(b + o + 4);
        const uint8_t *k = b + o + 8, *sc = k + 8 * n, *ve = sc + 8 * n, *v = ve + 8 * n;
        for (size_t i = 0; i < n; i++) {
            uint64_t key, score, version;
            memcpy(&key, k + 8 * i, 8);
            memcpy(&score, sc + 8 * i, 8);
            memcpy(&version, ve + 8 * i, 8);
            rows_add(&s, key, score, version, 0, v + (size_t)4 * rf * i, rf);
        }
        o += 8 + n * (24 + 4 * (size_t)rf) + 4;
    }
    ck_assert_uint_eq(o + 28, size);
    ck_assert_uint_eq(s.n, rows_hdr);
    free(b);
    rows_sort(&s);
    return s;
}

/* a == b row for row (key, score, version, every float bit for bit); with
 * shards > 0, every row of b sits on the shard ember_shard_of gives its key. */
static void rows_same(const rows *a, const rows *b, unsigned shards, const char *what)
{
    ck_assert_msg(a->n == b->n, "%s: %zu rows, want %zu", what, b->n, a->n);
    for (size_t i = 0; i < a->n; i++) {
        const row *x = &a->r[i], *y = &b->r[i];
        ck_assert_msg(x->key == y->key, "%s: row %zu has key %llu, want %llu", what, i,
                      (unsigned long long)y->key, (unsigned long long)x->key);
        ck_assert_msg(x->score == y->score && x->version == y->version && x->rf == y->rf &&
                          memcmp(x->v, y->v, 4 * x->rf) == 0,
                      "%s: key %llu differs", what, (unsigned long long)x->key);
        if (shards)
            ck_assert_msg(y->shard == ember_shard_of(y->key, shards),
                          "%s: key %llu on shard %u, belongs on %u", what,
                          (unsigned long long)y->key, y->shard, ember_shard_of(y->key, shards));
    }
}

/* ---- data ------------------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (x ^ (x >> 31)) >> 2; /* never a reserved key */
}

/* `emb` is pinned to the cpu backend (the servers' own here): its checkpoints
 * then carry a placement that reshard must pass on. */
static void make_table(const cluster *c, const char *name, uint32_t dim, int optim)
{
    ember_client *cl = client_of(c);
    ember_table_spec s;
    ember_error e;
    ember_table_spec_init(&s);
    if (!strcmp(name, "emb"))
        s.backend = "cpu";
    s.dim = dim;
    s.capacity_per_shard = 1 << 14;
    s.optimizer.kind = optim;
    s.optimizer.lr = 0.05f;
    ck_assert_msg(ember_create_table(cl, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
    ember_client_close(cl);
}

/* Pushes a gradient step to keys mix(lo..hi-1) (creating the missing ones). */
static void push_keys(const cluster *c, const char *table, uint32_t dim, uint64_t lo,
                      uint64_t hi, uint64_t step, uint64_t every)
{
    ember_client *cl = client_of(c);
    size_t n = 0;
    uint64_t *keys = malloc((hi - lo) * sizeof *keys);
    float *g = malloc((hi - lo) * dim * sizeof *g);
    for (uint64_t i = lo; i < hi; i += every) {
        keys[n] = mix(i);
        for (uint32_t d = 0; d < dim; d++)
            g[n * dim + d] = (float)((int)((i * 7 + d * 3 + step * 5) % 11) - 5) / 16.0f;
        n++;
    }
    ember_error e;
    ck_assert_msg(ember_push(cl, table, keys, n, g, dim, &e) == 0, "push: %s", e.message);
    free(keys);
    free(g);
    ember_client_close(cl);
}

/* ---- export → import, delta ---------------------------------------------------------- */

START_TEST(export_2_import_3_then_delta)
{
    make_table(&SRC, "emb", DIM, EMBER_OPTIM_ADAGRAD);
    push_keys(&SRC, "emb", DIM, 0, NKEYS, 0, 1);
    push_keys(&SRC, "emb", DIM, 0, NKEYS, 1, 2);
    rows src = snapshot(&SRC, "emb");
    ck_assert_uint_eq(src.n, NKEYS);

    /* export: the file holds exactly what the shards hold; not a terminal, no progress */
    CTL_OK("--shards %s export emb %s/full.exp --full-rows --json", SRC.list, tmpdir);
    ck_assert_msg(ERR[0] == '\0', "stderr not empty: %s", ERR);
    ck_assert_msg(strstr(OUT, "\"rows\":3000") != NULL, "%s", OUT);
    int full = 0;
    char path[256];
    rows file, tmp;
    snprintf(path, sizeof path, "%s/full.exp", tmpdir);
    file = parse_export(path, &full);
    ck_assert_int_eq(full, 1);
    rows_same(&src, &file, 0, "export file");
    rows_free(&file);

    /* import into 3 shards: every row equal, on the shard the client would ask */
    CTL_OK("--shards %s import emb %s/full.exp --create --json", DST.list, tmpdir);
    ck_assert_msg(ERR[0] == '\0', "stderr not empty: %s", ERR);
    ck_assert_msg(strstr(OUT, "\"rows\":3000") != NULL, "%s", OUT);
    tmp = snapshot(&DST, "emb");
    rows_same(&src, &tmp, 3, "3 shards after import");
    rows_free(&tmp);

    /* the same through libember: serving pulls on the 3 shards see the rows */
    ember_client *cl = client_of(&DST);
    uint64_t *keys = malloc(src.n * sizeof *keys);
    float *out = malloc(src.n * DIM * sizeof *out);
    ember_error e;
    for (size_t i = 0; i < src.n; i++)
        keys[i] = src.r[i].key;
    ck_assert_msg(ember_pull(cl, "emb", keys, src.n, out, DIM, EMBER_PULL_SERVE, &e) == 0,
                  "pull: %s", e.message);
    for (size_t i = 0; i < src.n; i++)
        ck_assert_msg(memcmp(out + i * DIM, src.r[i].v, DIM * 4) == 0, "pulled key %llu differs",
                      (unsigned long long)keys[i]);
    ember_client_close(cl);
    free(keys);
    free(out);
    rows_free(&src);

    /* a delta: 300 old keys and 100 new ones pushed since the full export */
    push_keys(&SRC, "emb", DIM, 0, NKEYS, 2, 10);
    push_keys(&SRC, "emb", DIM, NKEYS, NKEYS + 100, 2, 1);
    src = snapshot(&SRC, "emb");
    CTL_OK("--shards %s export emb %s/delta1.exp --full-rows --after-version-file %s/full.exp "
           "--json", SRC.list, tmpdir, tmpdir);
    snprintf(path, sizeof path, "%s/delta1.exp", tmpdir);
    file = parse_export(path, NULL);
    ck_assert_uint_eq(file.n, 400);
    for (size_t i = 0; i < file.n; i++) {
        const row *x = &file.r[i], *y = rows_find(&src, x->key);
        ck_assert(y != NULL);
        ck_assert(x->version == y->version && memcmp(x->v, y->v, 4 * x->rf) == 0);
    }
    for (uint64_t i = 0; i < NKEYS + 100; i++)
        ck_assert_msg(!rows_find(&file, mix(i)) == !(i % 10 == 0 || i >= NKEYS),
                      "key #%llu %s the delta", (unsigned long long)i,
                      rows_find(&file, mix(i)) ? "wrongly in" : "missing from");
    rows_free(&file);

    /* chained: nothing written since delta1, so the next delta is empty */
    CTL_OK("--shards %s export emb %s/delta2.exp --full-rows --after-version-file %s/delta1.exp",
           SRC.list, tmpdir, tmpdir);
    snprintf(path, sizeof path, "%s/delta2.exp", tmpdir);
    file = parse_export(path, NULL);
    ck_assert_uint_eq(file.n, 0);
    rows_free(&file);

    /* full + delta imported = the source now */
    CTL_OK("--shards %s import emb %s/delta1.exp", DST.list, tmpdir);
    tmp = snapshot(&DST, "emb");
    rows_same(&src, &tmp, 3, "3 shards after the delta");
    rows_free(&tmp);
    rows_free(&src);
}
END_TEST

/* An sgd table's rows are its embeddings: an export without --full-rows imports. */
START_TEST(embeddings_only_sgd)
{
    make_table(&SRC, "plain", 4, EMBER_OPTIM_SGD);
    push_keys(&SRC, "plain", 4, 0, 500, 0, 1);
    rows src = snapshot(&SRC, "plain");
    CTL_OK("--shards %s export plain %s/plain.exp", SRC.list, tmpdir);
    char path[256];
    int full = 1;
    snprintf(path, sizeof path, "%s/plain.exp", tmpdir);
    rows file = parse_export(path, &full);
    ck_assert_int_eq(full, 0);
    rows_same(&src, &file, 0, "embeddings-only file");
    rows_free(&file);
    CTL_OK("--shards %s import plain %s/plain.exp --create", DST.list, tmpdir);
    rows dst = snapshot(&DST, "plain");
    rows_same(&src, &dst, 3, "sgd rows on 3 shards");
    rows_free(&dst);
    rows_free(&src);
}
END_TEST

/* ---- refusals of export and import ------------------------------------------------------ */

/* Copies src to dst; flips one byte at `at` (from the end when negative), or
 * truncates to `keep` bytes (keep ≥ 0). */
static void damaged_copy(const char *src, const char *dst, long at, long keep)
{
    FILE *f = fopen(src, "rb");
    ck_assert(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)size);
    ck_assert_uint_eq(fread(b, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    if (keep < 0)
        b[at < 0 ? size + at : at] ^= 0x40;
    f = fopen(dst, "wb");
    ck_assert(f != NULL);
    size_t w = (size_t)(keep >= 0 ? keep : size);
    ck_assert_uint_eq(fwrite(b, 1, w, f), w);
    fclose(f);
    free(b);
}

START_TEST(export_import_refusals)
{
    char full[256], bad[256];
    snprintf(full, sizeof full, "%s/full.exp", tmpdir);

    /* export */
    CTL_FAILS(1, "NOT_FOUND", "--shards %s export nope %s/nope.exp", SRC.list, tmpdir);
    ck_assert_msg(!exists("%s/nope.exp", tmpdir), "a failed export left a file");
    CTL_FAILS(2, "not both", "--shards %s export emb %s/x.exp --after-version 3 "
              "--after-version-file %s", SRC.list, tmpdir, full);
    CTL_FAILS(1, "no such file", "--shards %s export emb %s/x.exp --after-version-file %s/none",
              SRC.list, tmpdir, tmpdir);
    CTL_FAILS(1, "versions are per shard", "--shards %s export emb %s/x.exp "
              "--after-version-file %s", DST.list, tmpdir, full);
    CTL_FAILS(1, "not 'plain'", "--shards %s export plain %s/x.exp --after-version-file %s",
              SRC.list, tmpdir, full);
    CTL_FAILS(2, "missing", "--shards %s export emb", SRC.list);

    /* import: the target must exist (or --create) and fit the rows */
    ck_assert_int_eq(ctl("--shards %s create victim --dim %d --capacity 4096 --optimizer adagrad",
                         DST.list, DIM), 0);
    ck_assert_int_eq(ctl("--shards %s create dim4 --dim 4 --capacity 4096 --optimizer adagrad",
                         DST.list), 0);
    ck_assert_int_eq(ctl("--shards %s create adam8 --dim %d --capacity 4096 --optimizer adam",
                         DST.list, DIM), 0);
    CTL_FAILS(1, "no such file", "--shards %s import victim %s/none.exp", DST.list, tmpdir);
    CTL_FAILS(1, "NOT_FOUND", "--shards %s import absent %s", DST.list, full);
    CTL_FAILS(1, "has dim 4", "--shards %s import dim4 %s", DST.list, full);
    CTL_FAILS(1, "adagrad optimizer state", "--shards %s import adam8 %s", DST.list, full);
    CTL_OK("--shards %s export emb %s/emb-only.exp", SRC.list, tmpdir);
    CTL_FAILS(1, "embeddings only", "--shards %s import victim %s/emb-only.exp", DST.list, tmpdir);

    /* damaged files are refused whole: nothing reaches the table */
    snprintf(bad, sizeof bad, "%s/flipped.exp", tmpdir);
    damaged_copy(full, bad, -200, -1);  /* inside the last chunk's rows */
    CTL_FAILS(1, "CRC mismatch", "--shards %s import victim %s", DST.list, bad);
    snprintf(bad, sizeof bad, "%s/truncated.exp", tmpdir);
    damaged_copy(full, bad, 0, 5000);
    CTL_FAILS(1, "truncated", "--shards %s import victim %s", DST.list, bad);
    snprintf(bad, sizeof bad, "%s/header.exp", tmpdir);
    damaged_copy(full, bad, 20, -1);
    CTL_FAILS(1, "header CRC mismatch", "--shards %s import victim %s", DST.list, bad);
    CTL_OK("--shards %s describe victim --json", DST.list);
    ck_assert_msg(strstr(OUT, "\"total\":{\"size\":0,") != NULL, "rows went in: %s", OUT);

    /* a checkpoint is not an export file */
    ck_assert_int_eq(ctl("--shards %s save emb --shard 0 --dir %s", SRC.list, tmpdir), 0);
    CTL_FAILS(1, "a checkpoint, not an export file", "--shards %s import victim %s/emb.ckpt",
              DST.list, tmpdir);
}
END_TEST

/* ---- reshard --------------------------------------------------------------------------- */

/* The placement backend in the header of the checkpoint at `path` (format
 * version 3, checkpoint.h: 16 bytes at offset 224). */
static void placement_of(const char *path, char out[17])
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t h[268];
    ck_assert_uint_eq(fread(h, 1, sizeof h, f), sizeof h);
    fclose(f);
    ck_assert_uint_eq(h[8], 3); /* format version */
    memcpy(out, h + 224, 16);
    out[16] = '\0';
}

/* The checkpoint of `table` that a server saved into dir. */
static void ckpt_in(const char *dir, const char *table, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.ckpt", dir, table);
    ck_assert_msg(exists("%s", out), "no checkpoint %s", out);
}

START_TEST(reshard_2_to_3_and_load)
{
    /* each source server saves into its own --checkpoint-dir (tmp/src0, tmp/src1) */
    CTL_OK("--shards %s save emb", SRC.list);
    rows src = snapshot(&SRC, "emb");
    CTL_OK("reshard --from '%s/src*' --table emb --to-count 3 --out %s/re --json", tmpdir, tmpdir);
    char want[400];
    snprintf(want, sizeof want, "\"rows\":%zu,", src.n);
    ck_assert_msg(strstr(OUT, want) && strstr(OUT, "\"misplaced\":0"), "%s", OUT);
    for (unsigned i = 0; i < 3; i++)
        ck_assert_msg(exists("%s/re/shard-%u/emb.ckpt", tmpdir, i), "no output for shard %u", i);
    /* the table asked for the cpu: so do its resharded checkpoints */
    char p[400], backend[17];
    snprintf(p, sizeof p, "%s/src0/emb.ckpt", tmpdir);
    placement_of(p, backend);
    ck_assert_str_eq(backend, "cpu");
    for (unsigned i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/re/shard-%u/emb.ckpt", tmpdir, i);
        placement_of(p, backend);
        ck_assert_str_eq(backend, "cpu");
    }

    /* fresh servers, each loading the file of its own index */
    cluster re;
    ck_assert_int_eq(cluster_start(&re, 3, "re-srv"), 0);
    for (unsigned i = 0; i < 3; i++)
        CTL_OK("--shards %s --shard %u load emb --dir %s/re/shard-%u --create", re.list, i,
               tmpdir, i);
    /* and a file loaded into the wrong shard is refused */
    CTL_FAILS(1, "expected shard 1 of 3", "--shards %s --shard 1 load emb --dir %s/re/shard-0",
              re.list, tmpdir);
    rows got = snapshot(&re, "emb");
    rows_same(&src, &got, 3, "resharded checkpoints");
    rows_free(&got);

    /* back, 3 → 2, from explicit files: each key returns to its original shard */
    CTL_OK("reshard --from %s/re/shard-0/emb.ckpt,%s/re/shard-1/emb.ckpt,%s/re/shard-2/emb.ckpt "
           "--to-count 2 --out %s/back --json", tmpdir, tmpdir, tmpdir, tmpdir);
    cluster_stop(&re);
    ck_assert_msg(strstr(OUT, "\"misplaced\":0"), "%s", OUT);
    size_t per[2] = {0, 0};
    for (size_t i = 0; i < src.n; i++)
        per[src.r[i].shard]++;
    for (unsigned i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "{\"shard\":%u,\"file\":\"%s/back/shard-%u/emb.ckpt\","
                 "\"rows\":%zu}", i, tmpdir, i, per[i]);
        ck_assert_msg(strstr(OUT, want), "'%s' not in %s", want, OUT);
    }

    /* directories holding one table's checkpoint need no --table; 2 → 1 */
    CTL_OK("reshard --from %s/src0,%s/src1 --to-count 1 --out %s/one --json", tmpdir, tmpdir,
           tmpdir);
    snprintf(want, sizeof want, "{\"shard\":0,\"file\":\"%s/one/shard-0/emb.ckpt\","
             "\"rows\":%zu}", tmpdir, src.n);
    ck_assert_msg(strstr(OUT, want), "'%s' not in %s", want, OUT);
    rows_free(&src);
}
END_TEST

START_TEST(reshard_refusals)
{
    char c0[512], c1[512], dir[300];
    snprintf(dir, sizeof dir, "%s/src0", tmpdir);
    ckpt_in(dir, "emb", c0, sizeof c0);
    snprintf(dir, sizeof dir, "%s/src1", tmpdir);
    ckpt_in(dir, "emb", c1, sizeof c1);

    CTL_FAILS(2, "--from is required", "reshard --to-count 3 --out %s/r", tmpdir);
    CTL_FAILS(2, "--to-count", "reshard --from %s --to-count 0 --out %s/r", c0, tmpdir);
    CTL_FAILS(1, "no such file", "reshard --from %s,%s/none.ckpt --to-count 3 --out %s/r", c0,
              tmpdir, tmpdir);
    CTL_FAILS(1, "matches no file", "reshard --from '%s/none*' --to-count 3 --out %s/r", tmpdir,
              tmpdir);
    CTL_FAILS(1, "shard 1 is missing", "reshard --from %s --to-count 3 --out %s/r", c0, tmpdir);
    CTL_FAILS(1, "both hold shard 0", "reshard --from %s,%s --to-count 3 --out %s/r", c0, c0,
              tmpdir);
    CTL_FAILS(1, "an export file", "reshard --from %s,%s/full.exp --to-count 3 --out %s/r", c0,
              tmpdir, tmpdir);
    /* another table; another dim and shard count (a 3-shard save of a dim-4 table) */
    CTL_OK("--shards %s save plain --shard 1 --dir %s/other", SRC.list, tmpdir);
    CTL_FAILS(1, "mixed tables", "reshard --from %s,%s/other/plain.ckpt --to-count 3 --out %s/r",
              c0, tmpdir, tmpdir);
    CTL_FAILS(1, "holds table 'plain', not 'emb'", "reshard --table emb --from "
              "%s/other/plain.ckpt --to-count 3 --out %s/r", tmpdir, tmpdir);
    CTL_OK("--shards %s --shard 1 save plain --dir %s/dst1", DST.list, tmpdir);
    CTL_FAILS(1, "mixed shard counts", "reshard --from %s/other/plain.ckpt,%s/dst1/plain.ckpt "
              "--to-count 3 --out %s/r", tmpdir, tmpdir, tmpdir);
    CTL_OK("--shards %s --shard 0 drop plain", DST.list);
    CTL_OK("--shards %s --shard 0 create plain --dim 8 --capacity 1024", DST.list);
    CTL_OK("--shards %s --shard 0 save plain --dir %s/dst0", DST.list, tmpdir);
    CTL_FAILS(1, "mixed row layouts", "reshard --from %s/dst0/plain.ckpt,%s/dst1/plain.ckpt "
              "--to-count 3 --out %s/r", tmpdir, tmpdir, tmpdir);
    /* a directory with two tables' checkpoints needs --table */
    CTL_OK("--shards %s --shard 0 save --dir %s/two", SRC.list, tmpdir);
    CTL_FAILS(1, "--table", "reshard --from %s/two,%s --to-count 3 --out %s/r", tmpdir, c1,
              tmpdir);

    /* a damaged input, found after the other was read: nothing is left behind */
    char bad[300];
    mkdir(strcat(strcpy(bad, tmpdir), "/bad"), 0755);
    strcat(bad, "/emb1.ckpt");
    damaged_copy(c1, bad, -100, -1);
    CTL_FAILS(1, "CRC mismatch", "reshard --from %s,%s --to-count 3 --out %s/r", c0, bad, tmpdir);
    damaged_copy(c1, bad, 0, 1000);
    CTL_FAILS(1, "truncated", "reshard --from %s,%s --to-count 3 --out %s/r", c0, bad, tmpdir);
    for (unsigned i = 0; i < 3; i++) {
        char d[300];
        snprintf(d, sizeof d, "%s/r/shard-%u", tmpdir, i);
        DIR *dd = opendir(d);
        if (!dd)
            continue;
        struct dirent *e;
        while ((e = readdir(dd)))
            ck_assert_msg(e->d_name[0] == '.', "a failed reshard left %s/%s", d, e->d_name);
        closedir(dd);
    }
}
END_TEST

/* ---- progress ---------------------------------------------------------------------------- */

START_TEST(progress_on_a_terminal)
{
    if (access("/usr/bin/script", X_OK) != 0) {
        fprintf(stderr, "progress_on_a_terminal: no /usr/bin/script, skipped\n");
        return;
    }
    char cmd[2048], out[300];
    snprintf(out, sizeof out, "%s/tty.out", tmpdir);
    snprintf(cmd, sizeof cmd, "/usr/bin/script -qec \"'%s' --shards %s export emb %s/tty.exp\" "
             "/dev/null >'%s' 2>&1 </dev/null", EMBERCTL_BIN, SRC.list, tmpdir, out);
    ck_assert_int_eq(system(cmd), 0);
    char *text = slurp(out);
    ck_assert_msg(strstr(text, "\rexport emb: ") && strstr(text, " rows (100.0%), "),
                  "no progress line: %s", text);
    free(text);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ember-it-ctl-transfer-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    if (cluster_start(&SRC, 2, "src") || cluster_start(&DST, 3, "dst"))
        return 1;
    Suite *s = suite_create("emberctl_transfer");
    TCase *tc = tcase_create("transfer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, export_2_import_3_then_delta);
    tcase_add_test(tc, embeddings_only_sgd);
    tcase_add_test(tc, export_import_refusals);
    tcase_add_test(tc, reshard_2_to_3_and_load);
    tcase_add_test(tc, reshard_refusals);
    tcase_add_test(tc, progress_on_a_terminal);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    cluster_stop(&SRC);
    cluster_stop(&DST);
    free(OUT);
    free(ERR);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

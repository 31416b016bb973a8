/* test_checkpoint.c — checkpoint save/load: round trips for every optimizer,
 * the committed fixtures (contents and byte layout), refusal of damaged or
 * foreign files with the table left exactly as it was, atomic replacement, and
 * saving beside a writer. */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/checkpoint.h"
#include "storage/crc32c.h"
#include "test_util.h"

#ifndef EMBER_ASSETS_DIR
#error "EMBER_ASSETS_DIR must name tests/assets"
#endif
#define FIXTURE(name) EMBER_ASSETS_DIR "/ckpt/" name

/* ---- helpers ---------------------------------------------------------------- */

static size_t read_file(const char *path, uint8_t **out)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(*out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return (size_t)n;
}

static void write_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Applies `rounds` of small random gradients to keys first..first+n-1. */
static void train(ember_table *t, uint64_t first, size_t n, int rounds, uint64_t seed)
{
    enum { BATCH = 1000 };
    uint32_t dim = ember_table_dim(t);
    uint64_t keys[BATCH];
    float *g = malloc((size_t)BATCH * dim * sizeof *g);
    for (int r = 0; r < rounds; r++)
        for (size_t at = 0; at < n; at += BATCH) {
            size_t m = n - at < BATCH ? n - at : BATCH;
            for (size_t i = 0; i < m; i++)
                keys[i] = first + at + i;
            for (size_t i = 0; i < m * dim; i++)
                g[i] = (float)((splitmix(&seed) >> 40) / 16777216.0 - 0.5);
            ck_assert_int_eq(ember_table_apply_gradients(t, keys, m, g, NULL, NULL), EMBER_OK);
        }
    free(g);
}

static uint64_t table_version(const ember_table *t)
{
    ember_table_stats st;
    ember_table_stats_get(t, &st);
    return st.version;
}

static ember_table *table_like(const ember_table *t)
{
    ember_table *u = NULL;
    ember_error err;
    ck_assert_msg(ember_table_create(ember_table_config_of(t), NULL, &u, &err) == EMBER_OK,
                  "%s", err.message);
    return u;
}

static int config_equal(const ember_table_config *a, const ember_table_config *b)
{
    const ember_optim_config *x = &a->optim, *y = &b->optim;
    return a->dim == b->dim && a->capacity == b->capacity &&
           a->score_policy == b->score_policy && a->seed == b->seed && x->kind == y->kind &&
           x->lr == y->lr && x->eps == y->eps &&
           x->initial_accumulator == y->initial_accumulator && x->beta1 == y->beta1 &&
           x->beta2 == y->beta2 && x->weight_decay == y->weight_decay && x->l1 == y->l1 &&
           x->l2 == y->l2 && x->lr_power == y->lr_power && x->beta == y->beta &&
           a->init.kind == b->init.kind && a->init.a == b->init.a &&
           a->init.b == b->init.b && a->admission.min_count == b->admission.min_count &&
           a->admission.sketch_width == b->admission.sketch_width &&
           a->nonfinite == b->nonfinite;
}

/* The table the fixtures were saved from (make_fixtures.c), with some rows of
 * its own so that a refused load has something to disturb. */
static ember_table *fixture_shaped_table(void)
{
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(t, 500, 50, 2, 9);
    return t;
}

/* Loading `path` into t fails with `code`, mentions `path` and `what`, and
 * leaves t exactly as it was. */
static void expect_refused(ember_table *t, const char *path, const ember_ckpt_expect *ex,
                           int code, const char *what)
{
    tu_snapshot before, after;
    ember_error err;
    uint64_t v = table_version(t);
    tu_snapshot_take(t, &before);
    int rc = ember_ckpt_load(t, path, ex, NULL, &err);
    ck_assert_msg(rc == code, "%s: got %s (%s), want %s", path, ember_status_name(rc),
                  rc ? err.message : "", ember_status_name(code));
    ck_assert_msg(strstr(err.message, path) != NULL, "message names the file: %s", err.message);
    ck_assert_msg(strstr(err.message, what) != NULL, "message says '%s': %s", what,
                  err.message);
    tu_snapshot_take(t, &after);
    ck_assert_msg(tu_snapshot_equal(&before, &after), "%s: refused load changed the table",
                  path);
    ck_assert_uint_eq(table_version(t), v);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
}

/* ---- round trips ------------------------------------------------------------ */

static void round_trip(int optim)
{
    tdir d;
    char path[512];
    ember_error err;
    ember_ckpt_meta saved, read, loaded;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", path);
    ember_table *t = tu_table(8, 1 << 15, optim, EMBER_SCORE_LFU, EMBER_INIT_UNIFORM);
    train(t, 1, 10000, 3, (uint64_t)optim + 1); /* 10,000 rows: several chunks */
    uint64_t before_ns = (uint64_t)time(NULL) * 1000000000u;
    ck_assert_msg(ember_ckpt_save(t, path, "emb_user", 2, 3, NULL, &saved, &err) == EMBER_OK,
                  "%s", err.message);
    ck_assert_uint_eq(saved.rows, 10000);
    ck_assert_uint_eq(saved.version, table_version(t));
    ck_assert_uint_ge(saved.created_ns, before_ns - 1000000000u);
    ck_assert_str_eq(saved.table_name, "emb_user");
    ck_assert_int_eq(tdir_count(&d, ""), 1);

    ck_assert_int_eq(ember_ckpt_read_meta(path, &read, &err), EMBER_OK);
    ck_assert_str_eq(read.table_name, "emb_user");
    ck_assert_uint_eq(read.shard_index, 2);
    ck_assert_uint_eq(read.shard_count, 3);
    ck_assert_uint_eq(read.rows, 10000);
    ck_assert_uint_eq(read.version, saved.version);
    ck_assert_uint_eq(read.created_ns, saved.created_ns);
    ck_assert(config_equal(&read.config, ember_table_config_of(t)));

    ember_table *u = table_like(t);
    ember_ckpt_expect ex = {2, 3, "emb_user"};
    ck_assert_msg(ember_ckpt_load(u, path, &ex, &loaded, &err) == EMBER_OK, "%s", err.message);
    ck_assert_uint_eq(loaded.rows, 10000);
    tu_snapshot a, b;
    tu_snapshot_take(t, &a);
    tu_snapshot_take(u, &b);
    ck_assert_uint_eq(b.n, 10000);
    ck_assert_msg(tu_snapshot_equal(&a, &b), "rows, scores or versions differ after load");
    /* The last write stored rows, so the largest row version is the table's. */
    ck_assert_uint_eq(table_version(u), saved.version);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
    ember_table_destroy(t);
    ember_table_destroy(u);
    tdir_remove(&d);
}

/* What a progress callback saw: every report, in order. */
typedef struct seen {
    uint64_t done[64], total[64];
    int n;
} seen;

static void record(void *arg, uint64_t done, uint64_t total)
{
    seen *s = arg;
    if (s->n < 64) {
        s->done[s->n] = done;
        s->total[s->n] = total;
    }
    s->n++;
}

/* Reports start at 0, grow by whole chunks, end at every row, against the
 * table's size (save) or the file's rows (load). */
static void expect_progress(const seen *s, uint64_t rows)
{
    ck_assert_int_ge(s->n, 3); /* 0, then 10,000 rows in chunks of at most 4,096 */
    ck_assert_int_le(s->n, 64);
    ck_assert_uint_eq(s->done[0], 0);
    for (int i = 0; i < s->n; i++) {
        ck_assert_uint_eq(s->total[i], rows);
        if (i)
            ck_assert_uint_gt(s->done[i], s->done[i - 1]);
    }
    ck_assert_uint_eq(s->done[s->n - 1], rows);
}

START_TEST(save_and_load_report_progress)
{
    tdir d;
    char path[512];
    ember_error err;
    tdir_make(&d);
    tdir_file(&d, "p.ckpt", path);
    ember_table *t = tu_table(4, 1 << 15, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_UNIFORM);
    train(t, 1, 10000, 1, 7);
    seen s = {0};
    const ember_ckpt_progress p = {record, &s};
    ck_assert_msg(ember_ckpt_save_progress(t, path, "p", 0, 1, NULL, &p, NULL, &err) == 0,
                  "%s", err.message);
    expect_progress(&s, 10000);
    ember_table *u = table_like(t);
    seen l = {0};
    const ember_ckpt_progress q = {record, &l};
    ck_assert_msg(ember_ckpt_load_progress(u, path, NULL, &q, NULL, &err) == 0, "%s",
                  err.message);
    expect_progress(&l, 10000);
    ck_assert_uint_eq(ember_table_size(u), 10000);
    /* a refused load reports nothing: its check pass runs before the table is touched */
    seen r = {0};
    const ember_ckpt_progress rq = {record, &r};
    ember_ckpt_expect other = {1, 2, NULL};
    ck_assert_int_eq(ember_ckpt_load_progress(u, path, &other, &rq, NULL, &err),
                     EMBER_FAILED_PRECONDITION);
    ck_assert_int_eq(r.n, 0);
    ember_table_destroy(t);
    ember_table_destroy(u);
    tdir_remove(&d);
}
END_TEST

START_TEST(round_trip_sgd) { round_trip(EMBER_OPTIM_SGD); }
END_TEST
START_TEST(round_trip_adagrad) { round_trip(EMBER_OPTIM_ADAGRAD); }
END_TEST
START_TEST(round_trip_adam) { round_trip(EMBER_OPTIM_ADAM); }
END_TEST
START_TEST(round_trip_ftrl) { round_trip(EMBER_OPTIM_FTRL); }
END_TEST

START_TEST(load_replaces_existing_rows)
{
    tdir d;
    char path[512];
    ember_error err;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", path);
    ember_table *t = tu_table(4, 4096, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU, EMBER_INIT_NORMAL);
    ember_table *u = tu_table(4, 4096, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU, EMBER_INIT_NORMAL);
    train(t, 100, 300, 2, 1);
    train(u, 250, 300, 4, 2); /* overlaps keys 250..399, and has 400..549 of its own */
    ck_assert_int_eq(ember_ckpt_save(t, path, NULL, 0, 1, NULL, NULL, &err), EMBER_OK);
    ck_assert_msg(ember_ckpt_load(u, path, NULL, NULL, &err) == EMBER_OK, "%s", err.message);
    tu_snapshot a, b;
    tu_snapshot_take(t, &a);
    tu_snapshot_take(u, &b);
    ck_assert_msg(tu_snapshot_equal(&a, &b), "load must replace, not merge");
    ck_assert_int_eq(tu_snapshot_find(&b, 450), -1);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
    ember_table_destroy(t);
    ember_table_destroy(u);
    tdir_remove(&d);
}
END_TEST

START_TEST(empty_table_round_trip)
{
    tdir d;
    char path[512];
    ember_ckpt_meta m;
    struct stat st;
    tdir_make(&d);
    tdir_file(&d, "empty.ckpt", path);
    ember_table *t = tu_table(16, 1024, EMBER_OPTIM_FTRL, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    ck_assert_int_eq(ember_ckpt_save(t, path, "e", 0, 1, NULL, &m, NULL), EMBER_OK);
    ck_assert_uint_eq(m.rows, 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 268 + 28); /* header + footer, no chunk */
    ember_table *u = table_like(t);
    train(u, 1, 100, 1, 3);
    ck_assert_int_eq(ember_ckpt_load(u, path, NULL, &m, NULL), EMBER_OK);
    ck_assert_uint_eq(ember_table_size(u), 0);
    ember_table_destroy(t);
    ember_table_destroy(u);
    tdir_remove(&d);
}
END_TEST

/* Regression: a checkpoint whose last writes stored no row (a training pull of
 * keys that all existed) restored a version below the saved one, so later writes
 * could reuse versions that a delta export had already handed out. */
START_TEST(load_restores_version_past_last_row_write)
{
    tdir d;
    char path[512];
    ember_ckpt_meta m;
    tdir_make(&d);
    tdir_file(&d, "v.ckpt", path);
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(t, 1, 10, 1, 5);
    uint64_t keys[2] = {1, 2};
    float out[8];
    for (int i = 0; i < 3; i++) /* versions move on, no row is written */
        ck_assert_int_eq(ember_table_find_or_insert(t, keys, 2, out, NULL, NULL, NULL), EMBER_OK);
    ck_assert_int_eq(ember_ckpt_save(t, path, "v", 0, 1, NULL, &m, NULL), EMBER_OK);
    ember_table *u = table_like(t);
    ck_assert_int_eq(ember_ckpt_load(u, path, NULL, NULL, NULL), EMBER_OK);
    ck_assert_uint_eq(table_version(u), table_version(t));
    ck_assert_uint_eq(table_version(u), m.version);
    ember_table_destroy(t);
    ember_table_destroy(u);
    tdir_remove(&d);
}
END_TEST

/* ---- atomic replacement ----------------------------------------------------- */

START_TEST(no_temp_file_left_after_save)
{
    tdir d;
    char path[512];
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", path);
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(t, 1, 200, 1, 4);
    for (int i = 0; i < 3; i++) { /* the first creates, the others replace */
        ck_assert_int_eq(ember_ckpt_save(t, path, NULL, 0, 1, NULL, NULL, NULL), EMBER_OK);
        ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
        ck_assert_int_eq(tdir_count(&d, ""), 1);
        train(t, 1, 200, 1, 5 + (uint64_t)i);
    }
    ember_table_destroy(t);
    tdir_remove(&d);
}
END_TEST

/* A save that fails part-way (a row overflowed to Inf) removes its temp file
 * and leaves the previous checkpoint byte for byte. */
START_TEST(failed_save_keeps_previous_file)
{
    tdir d;
    char path[512];
    ember_error err;
    uint8_t *before, *after;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", path);
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = 2;
    c.capacity = 1024;
    c.optim.lr = 3e38f;
    ember_table *t;
    ck_assert_int_eq(ember_table_create(&c, NULL, &t, NULL), EMBER_OK);
    uint64_t key = 77;
    float g[2] = {3e38f, 0.0f};
    ck_assert_int_eq(ember_ckpt_save(t, path, NULL, 0, 1, NULL, NULL, NULL), EMBER_OK);
    size_t n = read_file(path, &before);
    ck_assert_int_eq(ember_table_apply_gradients(t, &key, 1, g, NULL, NULL), EMBER_OK);
    int rc = ember_ckpt_save(t, path, NULL, 0, 1, NULL, NULL, &err);
    ck_assert_int_eq(rc, EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(err.message, "key 77") != NULL, "%s", err.message);
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
    ck_assert_uint_eq(read_file(path, &after), n);
    ck_assert_mem_eq(before, after, n);
    free(before);
    free(after);
    ember_table_destroy(t);
    tdir_remove(&d);
}
END_TEST

START_TEST(save_refuses_bad_arguments)
{
    tdir d;
    char path[512], name[80];
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", path);
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    memset(name, 'a', 65);
    name[65] = '\0';
    ck_assert_int_eq(ember_ckpt_save(t, path, name, 0, 1, NULL, NULL, NULL),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_ckpt_save(t, path, "x", 1, 1, NULL, NULL, NULL), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_ckpt_save(t, path, "x", 0, 0, NULL, NULL, NULL), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_ckpt_save(NULL, path, "x", 0, 1, NULL, NULL, NULL),
                     EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(tdir_count(&d, ""), 0);
    name[64] = '\0'; /* exactly 64 bytes is allowed */
    ck_assert_int_eq(ember_ckpt_save(t, path, name, 0, 1, NULL, NULL, NULL), EMBER_OK);
    ember_ckpt_meta m;
    ck_assert_int_eq(ember_ckpt_read_meta(path, &m, NULL), EMBER_OK);
    ck_assert_str_eq(m.table_name, name);
    ember_table_destroy(t);
    tdir_remove(&d);
}
END_TEST

START_TEST(save_into_missing_directory)
{
    ember_error err;
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    int rc = ember_ckpt_save(t, "/nonexistent-ember-dir/t.ckpt", NULL, 0, 1, NULL, NULL, &err);
    ck_assert_int_eq(rc, EMBER_INTERNAL);
    ck_assert_msg(strstr(err.message, "No such file") != NULL, "%s", err.message);
    ember_table_destroy(t);
}
END_TEST

/* ---- fixtures ---------------------------------------------------------------- */

/* What make_fixtures.c put in valid.ckpt. */
static const uint64_t fix_keys[4] = {1, 2, 1000003, UINT64_C(0xFFFFFFFFFFFFFFFB)};

static float fixture_value(uint32_t i, uint32_t j)
{
    return j < 4 ? (float)(i + 1) + (float)j / 8.0f : 0.5f * (float)(i + 1) + (float)(j - 4);
}

/* Loads a valid fixture (any format version) and checks every field and row;
 * `backend` and `hbm_bytes` are the placement it must carry, `v3` whether it
 * carries growth and TTL (format version 3 on). */
static void load_known_rows(const char *path, const char *backend, uint64_t hbm_bytes, int v3)
{
    ember_table *t = fixture_shaped_table();
    ember_ckpt_meta m;
    ember_error err;
    ember_ckpt_expect ex = {1, 4, "fixture"};
    ember_table_set_epoch(t, 9);
    ck_assert_msg(ember_ckpt_load(t, path, &ex, &m, &err) == EMBER_OK, "%s", err.message);
    ck_assert_str_eq(m.placement.backend, backend);
    ck_assert_uint_eq(m.placement.hbm_bytes, hbm_bytes);
    ck_assert_uint_eq(m.config.hbm_bytes, 0);
    ck_assert_str_eq(m.table_name, "fixture");
    ck_assert_uint_eq(m.shard_index, 1);
    ck_assert_uint_eq(m.shard_count, 4);
    ck_assert_uint_eq(m.rows, 4);
    ck_assert_uint_eq(m.version, 14);
    ck_assert_uint_eq(m.config.dim, 4);
    ck_assert_uint_eq(m.config.capacity, 1024);
    ck_assert_int_eq(m.config.score_policy, EMBER_SCORE_CUSTOM);
    ck_assert_uint_eq(m.config.seed, 7);
    ck_assert_int_eq(m.config.optim.kind, EMBER_OPTIM_ADAGRAD);
    ck_assert_float_eq(m.config.optim.lr, 0.05f);
    ck_assert_float_eq(m.config.optim.initial_accumulator, 0.1f);
    ck_assert_int_eq(m.config.init.kind, EMBER_INIT_NORMAL);
    ck_assert_float_eq(m.config.init.b, 0.02f);
    ck_assert_int_eq(m.config.nonfinite, EMBER_NONFINITE_ZERO);
    ck_assert_uint_eq(m.config.max_capacity, v3 ? 4096 : 0);
    ck_assert_float_eq(m.config.max_load_factor, v3 ? 0.5f : 0.0f);
    ck_assert_uint_eq(m.config.ttl_seconds, v3 ? 3600 : 0);
    ck_assert_uint_eq(m.epoch, v3 ? 5 : 0);
    /* a file of format 3 sets the table's epoch; older ones leave it */
    ck_assert_uint_eq(ember_table_epoch(t), v3 ? 5 : 9);

    tu_snapshot s;
    tu_snapshot_take(t, &s);
    ck_assert_uint_eq(s.n, 4);
    for (uint32_t i = 0; i < 4; i++) {
        long at = tu_snapshot_find(&s, fix_keys[i]);
        ck_assert_int_ge(at, 0);
        ck_assert_uint_eq(s.scores[at], 100u * (i + 1));
        ck_assert_uint_eq(s.versions[at], 11u + i);
        for (uint32_t j = 0; j < 8; j++)
            ck_assert_float_eq(s.rows[(size_t)at * 8 + j], fixture_value(i, j));
    }
    ck_assert_uint_eq(table_version(t), 14);
    tu_snapshot_free(&s);
    ember_table_destroy(t);
}

START_TEST(valid_fixture_loads_known_rows)
{
    load_known_rows(FIXTURE("valid.ckpt"), "gpu", UINT64_C(1) << 20, 1);
}
END_TEST

/* Files of format version 2 (before growth and TTL) still load, fixed-size and
 * without TTL. */
START_TEST(version_2_fixture_still_loads)
{
    load_known_rows(FIXTURE("valid_v2.ckpt"), "gpu", UINT64_C(1) << 20, 0);
}
END_TEST

/* Files of format version 1 (before placement) still load, placed by default. */
START_TEST(version_1_fixture_still_loads)
{
    load_known_rows(FIXTURE("valid_v1.ckpt"), "", 0, 0);
}
END_TEST

/* Placement goes into the file as given and comes back; one a reader would
 * refuse is refused at save, with the previous file kept. */
START_TEST(placement_round_trip_and_refusals)
{
    tdir d;
    char path[512];
    tdir_make(&d);
    tdir_file(&d, "p.ckpt", path);
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(t, 1, 10, 1, 1);
    ember_ckpt_placement p = {"cpu", 12345};
    ember_ckpt_meta m;
    ember_error err;
    ck_assert_int_eq(ember_ckpt_save(t, path, "p", 0, 1, &p, NULL, &err), EMBER_OK);
    ck_assert_int_eq(ember_ckpt_read_meta(path, &m, &err), EMBER_OK);
    ck_assert_str_eq(m.placement.backend, "cpu");
    ck_assert_uint_eq(m.placement.hbm_bytes, 12345);
    static const char *const bad[] = {"g p u", "tab\t", "\x7f"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p.backend, sizeof p.backend, "%s", bad[i]);
        ck_assert_int_eq(ember_ckpt_save(t, path, "p", 0, 1, &p, NULL, &err),
                         EMBER_INVALID_ARGUMENT);
        ck_assert(strstr(err.message, "placement"));
    }
    memset(p.backend, 'x', sizeof p.backend); /* no NUL within 16 bytes */
    ck_assert_int_eq(ember_ckpt_save(t, path, "p", 0, 1, &p, NULL, &err), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(ember_ckpt_read_meta(path, &m, &err), EMBER_OK);
    ck_assert_str_eq(m.placement.backend, "cpu"); /* the first file, untouched */
    ck_assert_int_eq(ember_ckpt_save(t, path, "p", 0, 1, NULL, NULL, &err), EMBER_OK);
    ck_assert_int_eq(ember_ckpt_read_meta(path, &m, &err), EMBER_OK);
    ck_assert_str_eq(m.placement.backend, "");
    ck_assert_uint_eq(m.placement.hbm_bytes, 0);
    ember_table_destroy(t);
    unlink(path);
    tdir_remove(&d);
}
END_TEST

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The documented byte layout (checkpoint.h), read without the library: a change
 * to the format shows here even if reader and writer change together. */
START_TEST(valid_fixture_byte_layout)
{
    uint8_t *b;
    size_t n = read_file(FIXTURE("valid.ckpt"), &b);
    ck_assert_uint_eq(n, 268 + 8 + 4 * (24 + 8 * 4) + 4 + 28);
    ck_assert_mem_eq(b, "EMBRCKPT", 8);
    ck_assert_uint_eq(le32(b + 8), 3);
    ck_assert_uint_eq(le32(b + 12), 268);
    ck_assert_uint_eq(le32(b + 16), 4);              /* dim */
    ck_assert_uint_eq(le64(b + 20), 1024);           /* capacity */
    ck_assert_uint_eq(le64(b + 32), 7);              /* seed */
    ck_assert_uint_eq(le32(b + 40), EMBER_OPTIM_ADAGRAD);
    ck_assert_uint_eq(le32(b + 108), 7);             /* name length */
    ck_assert_mem_eq(b + 112, "fixture", 7);
    ck_assert_uint_eq(le32(b + 176), 1);             /* shard index */
    ck_assert_uint_eq(le32(b + 180), 4);             /* shard count */
    ck_assert_uint_eq(le32(b + 184), 8);             /* row floats */
    ck_assert_uint_eq(le64(b + 192), 14);            /* version */
    ck_assert_uint_eq(le64(b + 208), 4);             /* rows */
    ck_assert_uint_eq(le64(b + 216), 1 << 20);       /* placement: hbm_bytes */
    ck_assert_mem_eq(b + 224, "gpu\0\0\0\0\0\0\0\0\0\0\0\0\0", 16); /* backend */
    ck_assert_uint_eq(le64(b + 240), 4096);          /* max_capacity */
    float lf;
    memcpy(&lf, b + 248, 4);
    ck_assert_float_eq(lf, 0.5f);                    /* max_load_factor */
    ck_assert_uint_eq(le64(b + 252), 3600);          /* ttl_seconds */
    ck_assert_uint_eq(le32(b + 260), 5);             /* epoch */
    ck_assert_uint_eq(le32(b + 264), ember_crc32c(b, 264));
    const uint8_t *c = b + 268, *f = b + n - 28;
    ck_assert_mem_eq(c, "CHNK", 4);
    ck_assert_uint_eq(le32(c + 4), 4);
    size_t chunk_len = 8 + 4 * (24 + 8 * 4);
    ck_assert_uint_eq(le32(c + chunk_len), ember_crc32c(c, chunk_len));
    ck_assert_mem_eq(f, "EMBREND\0", 8);
    ck_assert_uint_eq(le64(f + 8), 4);
    ck_assert_uint_eq(le64(f + 16), 1);
    ck_assert_uint_eq(le32(f + 24), ember_crc32c(f, 24));
    free(b);
}
END_TEST

START_TEST(empty_fixture_loads_nothing)
{
    ember_table *t = fixture_shaped_table();
    ember_ckpt_meta m;
    ck_assert_int_eq(ember_ckpt_load(t, FIXTURE("empty.ckpt"), NULL, &m, NULL), EMBER_OK);
    ck_assert_uint_eq(m.rows, 0);
    ck_assert_uint_eq(ember_table_size(t), 0);
    ember_table_destroy(t);
}
END_TEST

START_TEST(damaged_fixtures_refused)
{
    static const struct {
        const char *file, *what;
    } cases[] = {
        {FIXTURE("flipped_byte.ckpt"), "CRC mismatch"},
        {FIXTURE("truncated.ckpt"), "truncated"},
        {FIXTURE("wrong_magic.ckpt"), "bad magic"},
        {FIXTURE("wrong_version.ckpt"), "format version 4"},
        {FIXTURE("bad_header_crc.ckpt"), "header CRC"},
        {FIXTURE("trailing_garbage.ckpt"), "after the footer"},
    };
    ember_table *t = fixture_shaped_table();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(t, cases[i].file, NULL, EMBER_DATA_LOSS, cases[i].what);
    ember_table_destroy(t);
}
END_TEST

START_TEST(wrong_dim_refused)
{
    ember_table *t = fixture_shaped_table();
    expect_refused(t, FIXTURE("wrong_dim.ckpt"), NULL, EMBER_FAILED_PRECONDITION, "dim 8");
    ember_table_destroy(t);
}
END_TEST

START_TEST(wrong_shard_or_name_refused)
{
    ember_table *t = fixture_shaped_table();
    ember_ckpt_expect other_index = {0, 4, NULL}, other_count = {1, 2, NULL};
    ember_ckpt_expect other_name = {1, 4, "user_emb"};
    expect_refused(t, FIXTURE("valid.ckpt"), &other_index, EMBER_FAILED_PRECONDITION,
                   "shard 1 of 4");
    expect_refused(t, FIXTURE("valid.ckpt"), &other_count, EMBER_FAILED_PRECONDITION,
                   "shard 1 of 4");
    expect_refused(t, FIXTURE("valid.ckpt"), &other_name, EMBER_FAILED_PRECONDITION,
                   "table 'fixture'");
    ember_table_destroy(t);
}
END_TEST

START_TEST(other_optimizer_refused)
{
    /* Same dim as the fixture, another row layout (Adam: 2·dim + 1 slots). */
    ember_table *t = tu_table(4, 1024, EMBER_OPTIM_ADAM, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(t, 1, 20, 1, 6);
    expect_refused(t, FIXTURE("valid.ckpt"), NULL, EMBER_FAILED_PRECONDITION, "optimizer 1");
    ember_table_destroy(t);
    /* Same optimizer kind in a table too small for the file's rows. */
    tdir d;
    char path[512];
    tdir_make(&d);
    tdir_file(&d, "big.ckpt", path);
    ember_table *big = tu_table(4, 4096, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(big, 1, 1000, 1, 7);
    ck_assert_int_eq(ember_ckpt_save(big, path, NULL, 0, 1, NULL, NULL, NULL), EMBER_OK);
    ember_table *small = tu_table(4, 128, EMBER_OPTIM_SGD, EMBER_SCORE_LRU, EMBER_INIT_ZEROS);
    train(small, 1, 10, 1, 8);
    expect_refused(small, path, NULL, EMBER_FAILED_PRECONDITION, "capacity");
    ember_table_destroy(big);
    ember_table_destroy(small);
    tdir_remove(&d);
}
END_TEST

START_TEST(missing_file_not_found)
{
    ember_table *t = fixture_shaped_table();
    ember_ckpt_meta m;
    expect_refused(t, FIXTURE("no_such.ckpt"), NULL, EMBER_NOT_FOUND, "no such file");
    ck_assert_int_eq(ember_ckpt_read_meta(FIXTURE("no_such.ckpt"), &m, NULL), EMBER_NOT_FOUND);
    ember_table_destroy(t);
}
END_TEST

START_TEST(read_meta_checks_header_only)
{
    ember_ckpt_meta m;
    ember_error err;
    /* The header is intact in these: read_meta accepts them, load would not. */
    ck_assert_int_eq(ember_ckpt_read_meta(FIXTURE("flipped_byte.ckpt"), &m, NULL), EMBER_OK);
    ck_assert_int_eq(ember_ckpt_read_meta(FIXTURE("truncated.ckpt"), &m, NULL), EMBER_OK);
    ck_assert_uint_eq(m.rows, 4);
    ck_assert_int_eq(ember_ckpt_read_meta(FIXTURE("bad_header_crc.ckpt"), &m, &err),
                     EMBER_DATA_LOSS);
    ck_assert_int_eq(ember_ckpt_read_meta(FIXTURE("wrong_magic.ckpt"), &m, &err),
                     EMBER_DATA_LOSS);
    ck_assert_int_eq(ember_ckpt_read_meta(EMBER_ASSETS_DIR "/ckpt", &m, &err),
                     EMBER_INVALID_ARGUMENT);
}
END_TEST

/* Every single-byte flip and every truncation of the valid fixture is refused
 * with DATA_LOSS and leaves the table alone: nothing in the file is unguarded. */
START_TEST(every_flip_and_cut_refused)
{
    tdir d;
    char path[512];
    uint8_t *b;
    size_t n = read_file(FIXTURE("valid.ckpt"), &b);
    tdir_make(&d);
    tdir_file(&d, "x.ckpt", path);
    ember_table *t = fixture_shaped_table();
    tu_snapshot before, after;
    tu_snapshot_take(t, &before);
    for (size_t i = 0; i < n; i++) {
        b[i] ^= 0x01;
        write_file(path, b, n);
        b[i] ^= 0x01;
        int rc = ember_ckpt_load(t, path, NULL, NULL, NULL);
        ck_assert_msg(rc == EMBER_DATA_LOSS, "flip at %zu: %s", i, ember_status_name(rc));
    }
    for (size_t len = 0; len < n; len++) {
        write_file(path, b, len);
        int rc = ember_ckpt_load(t, path, NULL, NULL, NULL);
        ck_assert_msg(rc == EMBER_DATA_LOSS, "cut at %zu: %s", len, ember_status_name(rc));
    }
    tu_snapshot_take(t, &after);
    ck_assert(tu_snapshot_equal(&before, &after));
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    free(b);
    ember_table_destroy(t);
    tdir_remove(&d);
}
END_TEST

/* ---- saving beside a writer -------------------------------------------------- */

typedef struct writer_arg {
    ember_table *t;
    atomic_int stop;
    uint64_t key_range;
    long batches;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    uint32_t dim = ember_table_dim(a->t);
    uint64_t keys[256], seed = 99;
    float g[256 * 16];
    while (!atomic_load(&a->stop)) {
        for (int i = 0; i < 256; i++)
            keys[i] = splitmix(&seed) % a->key_range;
        for (uint32_t i = 0; i < 256 * dim; i++)
            g[i] = 0.001f;
        if (ember_table_apply_gradients(a->t, keys, 256, g, NULL, NULL) != EMBER_OK)
            break;
        a->batches++;
    }
    return NULL;
}

START_TEST(save_while_training)
{
    tdir d;
    char path[512];
    ember_error err;
    tdir_make(&d);
    tdir_file(&d, "live.ckpt", path);
    ember_table *t = tu_table(16, 1 << 16, EMBER_OPTIM_ADAGRAD, EMBER_SCORE_LRU,
                              EMBER_INIT_UNIFORM);
    train(t, 0, 20000, 1, 10);
    writer_arg a = {.t = t, .key_range = 40000};
    atomic_init(&a.stop, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, writer_main, &a), 0);
    for (int i = 0; i < 4; i++) {
        ember_ckpt_meta m;
        uint64_t lo = ember_table_size(t);
        ck_assert_msg(ember_ckpt_save(t, path, "live", 0, 1, NULL, &m, &err) == EMBER_OK, "%s",
                      err.message);
        uint64_t hi = ember_table_size(t);
        /* Keys are only added (no erase, no eviction at this load factor). The
         * size counter moves once per call, at its end, so a call in flight may
         * have stored up to a batch (256) of keys it does not count yet. */
        ck_assert_uint_ge(m.rows, lo);
        ck_assert_uint_le(m.rows, hi + 256);
        ember_table *u = table_like(t);
        ck_assert_msg(ember_ckpt_load(u, path, NULL, &m, &err) == EMBER_OK, "%s", err.message);
        ck_assert_uint_eq(ember_table_size(u), m.rows);
        ck_assert_uint_le(table_version(u), m.version);
        ember_table_destroy(u);
    }
    atomic_store(&a.stop, 1);
    pthread_join(th, NULL);
    ck_assert_int_gt(a.batches, 0);
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
    ember_table_destroy(t);
    tdir_remove(&d);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *rt = tcase_create("round_trip");
    tcase_add_test(rt, round_trip_sgd);
    tcase_add_test(rt, save_and_load_report_progress);
    tcase_add_test(rt, round_trip_adagrad);
    tcase_add_test(rt, round_trip_adam);
    tcase_add_test(rt, round_trip_ftrl);
    tcase_add_test(rt, load_replaces_existing_rows);
    tcase_add_test(rt, empty_table_round_trip);
    tcase_add_test(rt, load_restores_version_past_last_row_write);
    tcase_add_test(rt, save_while_training);
    suite_add_tcase(s, rt);
    TCase *at = tcase_create("atomic_save");
    tcase_add_test(at, no_temp_file_left_after_save);
    tcase_add_test(at, failed_save_keeps_previous_file);
    tcase_add_test(at, save_refuses_bad_arguments);
    tcase_add_test(at, save_into_missing_directory);
    suite_add_tcase(s, at);
    TCase *fx = tcase_create("fixtures");
    tcase_add_test(fx, valid_fixture_loads_known_rows);
    tcase_add_test(fx, version_1_fixture_still_loads);
    tcase_add_test(fx, version_2_fixture_still_loads);
    tcase_add_test(rt, placement_round_trip_and_refusals);
    tcase_add_test(fx, valid_fixture_byte_layout);
    tcase_add_test(fx, empty_fixture_loads_nothing);
    tcase_add_test(fx, damaged_fixtures_refused);
    tcase_add_test(fx, wrong_dim_refused);
    tcase_add_test(fx, wrong_shard_or_name_refused);
    tcase_add_test(fx, other_optimizer_refused);
    tcase_add_test(fx, missing_file_not_found);
    tcase_add_test(fx, read_meta_checks_header_only);
    tcase_add_test(fx, every_flip_and_cut_refused);
    suite_add_tcase(s, fx);
    return s;
}

int main(void)
{
    return tu_run(checkpoint_suite());
}

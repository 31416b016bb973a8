/*
 * test_save_set.c — point-in-time saves and cluster-wide save sets against real
 * ember-server processes (README "Checkpoints").
 *
 * What must hold:
 *  - a save taken while pushes run is the table at its cut: two pushers each
 *    write their own keys, every push one step (INSERT_OR_ASSIGN of the step's
 *    value to all their keys, one request, one write). In the file, each
 *    pusher's keys hold one step, the same for all of them, no row is newer
 *    than the cut, and the step lies between the last one acknowledged before
 *    the Save was sent and the last one sent before its reply; the rows that no
 *    push touches are as they were. A fresh server loading the file serves
 *    exactly those rows;
 *  - a save of every table saves the at-most-once window at its cut, and a fresh
 *    server's Load of the dir restores it: a push in the files is a duplicate,
 *    one after the cut applies; a damaged window is not restored (logged), the
 *    tables still load;
 *  - emberctl save --all-shards writes a set per shard and a manifest;
 *    emberctl load --manifest brings both shards back to it; a manifest whose
 *    cut does not match, a set name used twice or malformed are refused and
 *    change nothing;
 *  - Admin/Save and Admin/Load refuse a set with a table, a set name that is not
 *    one path component, and a manifest expectation that is malformed
 *    (INVALID_ARGUMENT), creating nothing;
 *  - emberctl killed (kill -9) at any moment of a save --all-shards, or a shard
 *    killed during one, leaves a manifest that names a complete set: loading
 *    it gives that set's rows, and never a mix.
 *
 * Runs without forking (CK_FORK=no, set by CMake).
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"
#include "storage/checkpoint.h"

#define DIM 8
#define PUSH_KEYS 20000   /* per pusher */
#define BALLAST 200000    /* rows no push touches: a save takes a while */


static ember_client *open_client(const char *shards)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shards;
    o.timeout_ms = 60000;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

static void create_table(ember_client *c, const char *name, uint64_t capacity)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = capacity;
    s.optimizer.kind = EMBER_OPTIM_SGD;
    s.optimizer.lr = 1.0f;
    s.initializer.kind = EMBER_INIT_ZEROS;
    ember_error e;
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

/* Keys [from, from + n) set to value v (INSERT_OR_ASSIGN through libember). */
static void assign_range(ember_client *c, const char *table, uint64_t from, size_t n, float v)
{
    uint64_t *keys = malloc(n * sizeof *keys);
    float *vals = malloc(n * DIM * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        keys[i] = from + i;
    for (size_t i = 0; i < n * DIM; i++)
        vals[i] = v;
    ember_error e;
    ck_assert_msg(ember_push_mode_values(c, table, keys, n, vals, DIM,
                                         EMBER_PUSH_INSERT_OR_ASSIGN, &e) == 0,
                  "assign: %s", e.message);
    free(keys);
    free(vals);
}

/* Every row of keys [from, from + n) equals v. */
static void expect_range(ember_client *c, const char *table, uint64_t from, size_t n, float v)
{
    uint64_t *keys = malloc(n * sizeof *keys);
    float *rows = malloc(n * DIM * sizeof *rows);
    for (size_t i = 0; i < n; i++)
        keys[i] = from + i;
    ember_error e;
    ck_assert_msg(ember_pull(c, table, keys, n, rows, DIM, EMBER_PULL_SERVE, &e) == 0,
                  "pull: %s", e.message);
    for (size_t i = 0; i < n * DIM; i++)
        ck_assert_msg(rows[i] == v, "key %llu holds %g, expected %g",
                      (unsigned long long)keys[i / DIM], (double)rows[i], (double)v);
    free(keys);
    free(rows);
}

/* ---- a save under pushes is the table at its cut ---------------------------- */

typedef struct pusher {
    const char *addr;
    uint64_t first;            /* its keys: [first, first + PUSH_KEYS) */
    _Atomic uint32_t sent;     /* step being sent (or last sent) */
    _Atomic uint32_t acked;    /* last step acknowledged */
    _Atomic int *stop;
    int failed;
} pusher;

static void *push_main(void *arg)
{
    pusher *p = arg;
    eh_client *ec = eh_client_open(p->addr);
    uint64_t *keys = malloc(PUSH_KEYS * sizeof *keys);
    float *vals = malloc(PUSH_KEYS * DIM * sizeof *vals);
    for (size_t i = 0; i < PUSH_KEYS; i++)
        keys[i] = p->first + i;
    for (uint32_t step = 1; !atomic_load(p->stop); step++) {
        for (size_t i = 0; i < PUSH_KEYS * DIM; i++)
            vals[i] = (float)step;
        ember_wire_push_request q;
        memset(&q, 0, sizeof q);
        q.table.data = (const uint8_t *)"cut";
        q.table.len = 3;
        q.keys.data = (const uint8_t *)keys;
        q.keys.len = PUSH_KEYS * 8;
        q.values.data = (const uint8_t *)vals;
        q.values.len = PUSH_KEYS * DIM * 4;
        q.dtype = EMBER_WIRE_F32;
        q.mode = EMBER_WIRE_PUSH_INSERT_OR_ASSIGN;
        size_t len = ember_wire_push_request_size(&q, NULL);
        uint8_t *b = malloc(len);
        ember_wire_push_request_encode(&q, b);
        atomic_store(&p->sent, step);
        eh_result r;
        int rc = eh_unary(ec, "/ember.v1.Shard/Push", b, len, 30000, &r);
        free(b);
        if (rc || r.code) {
            p->failed = 1;
            if (!rc)
                eh_result_free(&r);
            break;
        }
        eh_result_free(&r);
        atomic_store(&p->acked, step);
    }
    free(keys);
    free(vals);
    eh_client_close(ec);
    return NULL;
}

/* What the file of one save holds of the pushers' keys: each pusher's one step
 * (-1: its keys hold different steps), the rows newer than the cut, ballast
 * rows not as written, and the rows in all. */
typedef struct file_view {
    long step[2];
    uint64_t cut, newer, ballast_bad, rows, pusher_rows[2];
} file_view;

static void read_file(const char *path, file_view *v)
{
    ember_ckpt_reader *r = NULL;
    ember_ckpt_meta m;
    ember_error err;
    memset(v, 0, sizeof *v);
    v->step[0] = v->step[1] = -2; /* none seen yet */
    ck_assert_msg(ember_ckpt_reader_open(path, &r, &m, &err) == 0, "%s", err.message);
    v->cut = m.version;
    uint32_t rf = ember_ckpt_reader_row_floats(r);
    for (;;) {
        size_t n;
        const uint64_t *keys, *scores, *versions;
        const float *rows;
        ck_assert_int_eq(ember_ckpt_reader_next(r, &n, &keys, &scores, &versions, &rows, &err),
                         0);
        if (!n)
            break;
        for (size_t i = 0; i < n; i++) {
            const float *row = rows + i * rf;
            v->rows++;
            v->newer += versions[i] > m.version;
            if (keys[i] >= 1000000) { /* ballast: 1,000,000 + i holds i % 1000 */
                v->ballast_bad += row[0] != (float)((keys[i] - 1000000) % 1000);
                continue;
            }
            int h = keys[i] >= PUSH_KEYS;
            v->pusher_rows[h]++;
            long s = (long)row[0];
            for (unsigned d = 1; d < DIM; d++)
                if (row[d] != row[0])
                    s = -1;
            if (v->step[h] == -2)
                v->step[h] = s;
            else if (v->step[h] != s)
                v->step[h] = -1;
        }
    }
    ember_ckpt_reader_close(r);
}

START_TEST(save_under_pushes_is_the_table_at_its_cut)
{
    char *dir = eh_tmpdir("saveset"), cdir[400], bdir[400];
    ck_assert_ptr_nonnull(dir);
    snprintf(cdir, sizeof cdir, "%s/a", dir);
    snprintf(bdir, sizeof bdir, "%s/b", dir);
    const char *flags[] = {"--checkpoint-dir", cdir, "--threads", "4", NULL};
    eh_server s;
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    ember_client *c = open_client(s.addr);
    create_table(c, "cut", 1 << 20);
    for (uint64_t b = 0; b < BALLAST; b += 10000) {
        uint64_t keys[10000];
        static float vals[10000 * DIM];
        for (size_t i = 0; i < 10000; i++) {
            keys[i] = 1000000 + b + i;
            for (unsigned d = 0; d < DIM; d++)
                vals[i * DIM + d] = (float)((b + i) % 1000);
        }
        ember_error e;
        ck_assert_int_eq(ember_push_mode_values(c, "cut", keys, 10000, vals, DIM,
                                                EMBER_PUSH_INSERT_OR_ASSIGN, &e),
                         0);
    }
    _Atomic int stop = 0;
    pusher p[2];
    pthread_t th[2];
    for (int h = 0; h < 2; h++) {
        p[h] = (pusher){.addr = s.addr, .first = (uint64_t)h * PUSH_KEYS, .stop = &stop};
        ck_assert_int_eq(pthread_create(&th[h], NULL, push_main, &p[h]), 0);
    }
    while (atomic_load(&p[0].acked) < 3 || atomic_load(&p[1].acked) < 3)
        usleep(1000);
    char path[600];
    snprintf(path, sizeof path, "%s/cut.ckpt", cdir);
    int overlapped = 0, saves = 0;
    file_view v;
    uint32_t lo[2], hi[2];
    while (saves < 30 && overlapped < 3) {
        for (int h = 0; h < 2; h++)
            lo[h] = atomic_load(&p[h].acked);
        ember_error e;
        ck_assert_msg(ember_save(c, NULL, NULL, &e) == 0, "save: %s", e.message);
        for (int h = 0; h < 2; h++)
            hi[h] = atomic_load(&p[h].sent);
        int during = atomic_load(&p[0].acked) > lo[0] || atomic_load(&p[1].acked) > lo[1];
        saves++;
        read_file(path, &v);
        ck_assert_uint_eq(v.newer, 0);
        ck_assert_uint_eq(v.ballast_bad, 0);
        ck_assert_uint_eq(v.rows, BALLAST + 2 * PUSH_KEYS);
        for (int h = 0; h < 2; h++) {
            ck_assert_uint_eq(v.pusher_rows[h], PUSH_KEYS);
            ck_assert_msg(v.step[h] >= 0, "save %d: pusher %d's keys hold different steps",
                          saves, h);
            ck_assert_msg(v.step[h] >= lo[h] && v.step[h] <= hi[h],
                          "save %d: pusher %d at step %ld, outside [%u, %u]", saves, h,
                          v.step[h], lo[h], hi[h]);
        }
        overlapped += during;
    }
    atomic_store(&stop, 1);
    for (int h = 0; h < 2; h++) {
        pthread_join(th[h], NULL);
        ck_assert_int_eq(p[h].failed, 0);
    }
    /* pushes were acknowledged while saves ran (or the test showed little) */
    ck_assert_int_gt(overlapped, 0);

    /* a fresh server loading the last file serves exactly its rows */
    const char *bflags[] = {"--checkpoint-dir", bdir, NULL};
    eh_server s2;
    ck_assert_int_eq(eh_server_start(&s2, bflags), 0);
    ember_client *c2 = open_client(s2.addr);
    ember_error e;
    ck_assert_msg(ember_load(c2, NULL, cdir, &e) == 0, "load: %s", e.message);
    for (int h = 0; h < 2; h++)
        expect_range(c2, "cut", (uint64_t)h * PUSH_KEYS, PUSH_KEYS, (float)v.step[h]);
    ember_table_info ti;
    ck_assert_int_eq(ember_describe_table(c2, "cut", &ti, &e), 0);
    ck_assert_uint_eq(ti.size, BALLAST + 2 * PUSH_KEYS);
    ember_client_close(c2);
    ember_client_close(c);
    eh_server_cleanup(&s2);
    eh_server_cleanup(&s);
    ck_assert_int_eq(eh_rm_rf(dir), 0);
    free(dir);
}
END_TEST

/* ---- the at-most-once window travels with a Load -------------------------- */

/* One push of value v to key k with (client, seq): its code; *dup the reply's. */
static int push_once(const char *addr, uint64_t k, float v, uint64_t client, uint64_t seq,
                     int *dup)
{
    float vals[DIM];
    for (unsigned d = 0; d < DIM; d++)
        vals[d] = v;
    ember_wire_push_request q;
    memset(&q, 0, sizeof q);
    q.table.data = (const uint8_t *)"w";
    q.table.len = 1;
    q.keys.data = (const uint8_t *)&k;
    q.keys.len = 8;
    q.values.data = (const uint8_t *)vals;
    q.values.len = sizeof vals;
    q.dtype = EMBER_WIRE_F32;
    q.mode = EMBER_WIRE_PUSH_ACCUM;
    q.client_id = client;
    q.sequence = seq;
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len);
    ember_wire_push_request_encode(&q, b);
    eh_client *ec = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(ec, "/ember.v1.Shard/Push", b, len, 30000, &r), 0);
    int code = r.code;
    if (!code) {
        ember_wire_push_response m;
        ck_assert_int_eq(ember_wire_push_response_decode(r.data, r.len, &m, NULL, 0), 0);
        *dup = m.duplicate;
    }
    eh_result_free(&r);
    eh_client_close(ec);
    free(b);
    return code;
}

/* A save of every table saves the window at its cut; a fresh server's Load of
 * that dir restores it: a push in the files is a duplicate there, one after the
 * cut applies. */
START_TEST(load_restores_the_window_saved_with_the_tables)
{
    char *dir = eh_tmpdir("saveset"), adir[400], bdir[400];
    ck_assert_ptr_nonnull(dir);
    snprintf(adir, sizeof adir, "%s/a", dir);
    snprintf(bdir, sizeof bdir, "%s/b", dir);
    const char *af[] = {"--checkpoint-dir", adir, NULL}, *bf[] = {"--checkpoint-dir", bdir, NULL};
    eh_server a, b;
    ck_assert_int_eq(eh_server_start(&a, af), 0);
    ember_client *ca = open_client(a.addr);
    create_table(ca, "w", 1024);
    assign_range(ca, "w", 7, 1, 0.0f);
    int dup = -1;
    ck_assert_int_eq(push_once(a.addr, 7, 1.0f, 0xabc, 1, &dup), 0);
    ck_assert_int_eq(dup, 0);
    ember_error e;
    ck_assert_msg(ember_save(ca, NULL, NULL, &e) == 0, "%s", e.message);
    ck_assert_int_eq(push_once(a.addr, 7, 10.0f, 0xabc, 2, &dup), 0); /* after the cut */
    ck_assert_int_eq(eh_server_start(&b, bf), 0);
    ember_client *cb = open_client(b.addr);
    ck_assert_msg(ember_load(cb, NULL, adir, &e) == 0, "load: %s", e.message);
    expect_range(cb, "w", 7, 1, 1.0f);
    ck_assert_int_eq(push_once(b.addr, 7, 1.0f, 0xabc, 1, &dup), 0);
    ck_assert_int_eq(dup, 1); /* in the file: a duplicate */
    expect_range(cb, "w", 7, 1, 1.0f);
    ck_assert_int_eq(push_once(b.addr, 7, 10.0f, 0xabc, 2, &dup), 0);
    ck_assert_int_eq(dup, 0); /* after the cut: applied */
    expect_range(cb, "w", 7, 1, 11.0f);
    char *log = eh_server_log(&b);
    ck_assert_msg(strstr(log, "dedup_window_restored"), "%s", log);
    free(log);

    /* a damaged window is not restored (the tables still load): the push applies */
    char wpath[500], cmd[1200];
    snprintf(wpath, sizeof wpath, "%s/dedup.window", adir);
    snprintf(cmd, sizeof cmd,
             "printf '\\377' | dd of=%s bs=1 seek=30 conv=notrunc status=none", wpath);
    ck_assert_int_eq(system(cmd), 0);
    eh_server c3;
    char cdir[400];
    snprintf(cdir, sizeof cdir, "%s/c", dir);
    const char *cf[] = {"--checkpoint-dir", cdir, NULL};
    ck_assert_int_eq(eh_server_start(&c3, cf), 0);
    ember_client *cc = open_client(c3.addr);
    ck_assert_msg(ember_load(cc, NULL, adir, &e) == 0, "load: %s", e.message);
    ck_assert_int_eq(push_once(c3.addr, 7, 1.0f, 0xabc, 1, &dup), 0);
    ck_assert_int_eq(dup, 0);
    expect_range(cc, "w", 7, 1, 2.0f);
    log = eh_server_log(&c3);
    ck_assert_msg(strstr(log, "dedup_window_not_restored") && strstr(log, "damaged"), "%s", log);
    free(log);
    ember_client_close(cc);
    eh_server_cleanup(&c3);
    ember_client_close(cb);
    ember_client_close(ca);
    eh_server_cleanup(&b);
    eh_server_cleanup(&a);
    ck_assert_int_eq(eh_rm_rf(dir), 0);
    free(dir);
}
END_TEST

/* ---- save sets and manifests ---------------------------------------------- */

typedef struct cluster {
    char *dir;
    eh_server sv[2];
    char list[160];
    ember_client *c;
} cluster;

static void cluster_start(cluster *k)
{
    k->dir = eh_tmpdir("saveset");
    ck_assert_ptr_nonnull(k->dir);
    char d[2][300], idx[2][8];
    for (int i = 0; i < 2; i++) {
        snprintf(idx[i], sizeof idx[i], "%d", i);
        snprintf(d[i], sizeof d[i], "%s/s%d", k->dir, i);
        const char *flags[] = {"--shard-index", idx[i], "--shard-count", "2",
                               "--checkpoint-dir", d[i], NULL};
        ck_assert_int_eq(eh_server_start(&k->sv[i], flags), 0);
    }
    snprintf(k->list, sizeof k->list, "%s,%s", k->sv[0].addr, k->sv[1].addr);
    k->c = open_client(k->list);
}

static void cluster_stop(cluster *k)
{
    ember_client_close(k->c);
    for (int i = 0; i < 2; i++)
        eh_server_cleanup(&k->sv[i]);
    ck_assert_int_eq(eh_rm_rf(k->dir), 0);
    free(k->dir);
}

/* Runs emberctl with the cluster's shards; its exit status, output in out. */
static int ctl(const cluster *k, char *out, size_t cap, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s --shards %s %s 2>&1", EMBERCTL_BIN, k->list, args);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The "set" a manifest names ("" when the file is missing). */
static void manifest_set(const char *path, char *set, size_t cap)
{
    FILE *f = fopen(path, "r");
    set[0] = '\0';
    if (!f)
        return;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strstr(buf, "\"set\":");
    ck_assert_ptr_nonnull(p);
    p = strchr(p + 6, '"');
    ck_assert_ptr_nonnull(p);
    char *q = strchr(p + 1, '"');
    ck_assert_ptr_nonnull(q);
    snprintf(set, cap, "%.*s", (int)(q - p - 1), p + 1);
}

#define KEYS 4000

START_TEST(save_set_manifest_and_load)
{
    cluster k;
    cluster_start(&k);
    create_table(k.c, "emb", 65536);
    create_table(k.c, "side", 4096);
    assign_range(k.c, "emb", 0, KEYS, 1.0f);
    assign_range(k.c, "side", 0, 100, 10.0f);
    char out[8192], man[400], args[1200];
    snprintf(man, sizeof man, "%s/manifest.json", k.dir);
    snprintf(args, sizeof args, "save --all-shards --set one --manifest %s", man);
    ck_assert_msg(ctl(&k, out, sizeof out, args) == 0, "%s", out);
    ck_assert_msg(strstr(out, "save set one"), "%s", out);
    char set[80];
    manifest_set(man, set, sizeof set);
    ck_assert_str_eq(set, "one");
    /* the set's dirs hold the tables and the window */
    char p[600];
    snprintf(p, sizeof p, "%s/s1/sets/one/emb.ckpt", k.dir);
    ck_assert_int_eq(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/s0/sets/one/dedup.window", k.dir);
    ck_assert_int_eq(access(p, R_OK), 0);

    assign_range(k.c, "emb", 0, KEYS, 2.0f);
    assign_range(k.c, "side", 0, 100, 20.0f);
    /* a set name used twice, or malformed: refused, the manifest untouched */
    ck_assert_int_ne(ctl(&k, out, sizeof out, args), 0);
    ck_assert_msg(strstr(out, "ALREADY_EXISTS"), "%s", out);
    snprintf(args, sizeof args, "save --all-shards --set ../x --manifest %s", man);
    ck_assert_int_ne(ctl(&k, out, sizeof out, args), 0);
    ck_assert_msg(strstr(out, "INVALID_ARGUMENT"), "%s", out);
    manifest_set(man, set, sizeof set);
    ck_assert_str_eq(set, "one");
    expect_range(k.c, "emb", 0, KEYS, 2.0f);

    /* load --manifest: both shards back to set one */
    snprintf(args, sizeof args, "load --manifest %s", man);
    ck_assert_msg(ctl(&k, out, sizeof out, args) == 0, "%s", out);
    expect_range(k.c, "emb", 0, KEYS, 1.0f);
    expect_range(k.c, "side", 0, 100, 10.0f);

    /* a manifest whose cut is not the file's: refused before anything loads */
    assign_range(k.c, "emb", 0, KEYS, 3.0f);
    char bad[400], cmd[1400];
    snprintf(bad, sizeof bad, "%s/bad.json", k.dir);
    snprintf(cmd, sizeof cmd,
             "sed -E '0,/\"cut\": *[0-9]+/s//\"cut\": 99999999/' %s > %s", man, bad);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "load --manifest %s", bad);
    ck_assert_int_ne(ctl(&k, out, sizeof out, args), 0);
    ck_assert_msg(strstr(out, "FAILED_PRECONDITION"), "%s", out);
    expect_range(k.c, "emb", 0, KEYS, 3.0f);
    /* not a manifest at all */
    snprintf(cmd, sizeof cmd, "echo '{\"format\": \"x\"}' > %s", bad);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_ne(ctl(&k, out, sizeof out, args), 0);
    ck_assert_msg(strstr(out, "not an ember-save-manifest"), "%s", out);
    cluster_stop(&k);
}
END_TEST

/* One Admin call with a protobuf-c request: its status code and message. */
static int admin_call(const char *addr, const char *method, const ProtobufCMessage *req,
                      char *msg, size_t cap)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *b = malloc(len + 1);
    protobuf_c_message_pack(req, b);
    eh_client *ec = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(ec, method, b, len, 30000, &r), 0);
    int code = r.code;
    snprintf(msg, cap, "%.*s", (int)(cap - 1), r.message);
    eh_result_free(&r);
    eh_client_close(ec);
    free(b);
    return code;
}

START_TEST(bad_set_requests_are_refused)
{
    char *dir = eh_tmpdir("saveset"), cdir[400], msg[1100], p[600];
    ck_assert_ptr_nonnull(dir);
    snprintf(cdir, sizeof cdir, "%s/a", dir);
    const char *flags[] = {"--checkpoint-dir", cdir, NULL};
    eh_server s;
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    ember_client *c = open_client(s.addr);
    create_table(c, "t", 1024);
    static const char *const bad_names[] = {"", ".hidden", "a/b", "..", "x y",
        "0123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        Ember__V1__SaveRequest q = EMBER__V1__SAVE_REQUEST__INIT;
        q.set = (char *)bad_names[i];
        if (!*bad_names[i]) { /* a set with a table */
            q.set = (char *)"ok";
            q.table = (char *)"t";
        }
        ck_assert_int_eq(admin_call(s.addr, "/ember.v1.Admin/Save", &q.base, msg, sizeof msg),
                         EMBER_INVALID_ARGUMENT);
        ck_assert_msg(strstr(msg, "set"), "%s", msg);
    }
    snprintf(p, sizeof p, "%s/sets", cdir);
    ck_assert_int_ne(access(p, F_OK), 0); /* nothing made */

    Ember__V1__LoadRequest l = EMBER__V1__LOAD_REQUEST__INIT;
    char *names[1] = {(char *)"t"};
    uint64_t cuts[2] = {1, 2};
    l.n_expect_tables = 1;
    l.expect_tables = names;
    l.n_expect_cuts = 2;
    l.expect_cuts = cuts;
    ember_error e;
    ck_assert_int_eq(ember_save(c, NULL, NULL, &e), 0);
    assign_range(c, "t", 0, 10, 5.0f);
    ck_assert_int_eq(admin_call(s.addr, "/ember.v1.Admin/Load", &l.base, msg, sizeof msg),
                     EMBER_INVALID_ARGUMENT);
    l.n_expect_cuts = 1;
    l.table = (char *)"t";
    ck_assert_int_eq(admin_call(s.addr, "/ember.v1.Admin/Load", &l.base, msg, sizeof msg),
                     EMBER_INVALID_ARGUMENT);
    /* check_only loads nothing, even when everything matches but the cut */
    l.table = (char *)"";
    l.check_only = 1;
    ck_assert_int_eq(admin_call(s.addr, "/ember.v1.Admin/Load", &l.base, msg, sizeof msg),
                     EMBER_FAILED_PRECONDITION);
    expect_range(c, "t", 0, 10, 5.0f);
    ember_client_close(c);
    eh_server_cleanup(&s);
    ck_assert_int_eq(eh_rm_rf(dir), 0);
    free(dir);
}
END_TEST

/* emberctl or a shard killed during save --all-shards: the manifest at its path
 * always names a complete set, and loading it gives that set's rows. */
START_TEST(crash_during_save_set_leaves_a_usable_manifest)
{
    cluster k;
    cluster_start(&k);
    create_table(k.c, "emb", 1 << 20);
    assign_range(k.c, "emb", 0, KEYS, 1.0f);
    for (uint64_t b = 0; b < 200000; b += 20000) /* a save that takes a moment */
        assign_range(k.c, "emb", 1000000 + b, 20000, 5.0f);
    char out[8192], man[400], args[1200], set[80];
    snprintf(man, sizeof man, "%s/manifest.json", k.dir);
    snprintf(args, sizeof args, "save --all-shards --set base --manifest %s", man);
    ck_assert_msg(ctl(&k, out, sizeof out, args) == 0, "%s", out);
    assign_range(k.c, "emb", 0, KEYS, 2.0f); /* the sets after "base" hold 2 */

    /* emberctl killed at various moments */
    static const int delays_us[] = {0, 2000, 10000, 30000, 80000, 200000, 600000};
    for (unsigned i = 0; i < sizeof delays_us / sizeof *delays_us; i++) {
        char name[32], sv[160];
        snprintf(name, sizeof name, "k%u", i);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            snprintf(sv, sizeof sv, "%s", k.list);
            execl(EMBERCTL_BIN, EMBERCTL_BIN, "--shards", sv, "save", "--all-shards", "--set",
                  name, "--manifest", man, (char *)NULL);
            _exit(127);
        }
        usleep((useconds_t)delays_us[i]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        manifest_set(man, set, sizeof set);
        ck_assert_msg(!strcmp(set, "base") || !strcmp(set, name), "manifest names '%s'", set);
    }
    /* whatever it names loads whole: base holds 1, the later sets 2 */
    manifest_set(man, set, sizeof set);
    snprintf(args, sizeof args, "load --manifest %s", man);
    assign_range(k.c, "emb", 0, KEYS, 9.0f);
    ck_assert_msg(ctl(&k, out, sizeof out, args) == 0, "%s", out);
    expect_range(k.c, "emb", 0, KEYS, strcmp(set, "base") ? 2.0f : 1.0f);

    /* a shard killed (kill -9) during a save set */
    char before[80];
    manifest_set(man, before, sizeof before);
    assign_range(k.c, "emb", 0, KEYS, 4.0f);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl(EMBERCTL_BIN, EMBERCTL_BIN, "--shards", k.list, "--timeout-ms", "20000", "save",
              "--all-shards", "--set", "shardkill", "--manifest", man, (char *)NULL);
        _exit(127);
    }
    usleep(5000);
    ck_assert_int_eq(eh_server_stop(&k.sv[1], SIGKILL, NULL), 0);
    int st;
    waitpid(pid, &st, 0);
    manifest_set(man, set, sizeof set);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        ck_assert_str_eq(set, "shardkill"); /* it had finished before the kill */
    else
        ck_assert_str_eq(set, before);      /* not written: the previous one stands */
    ck_assert_int_eq(eh_server_restart(&k.sv[1]), 0);
    snprintf(args, sizeof args, "load --manifest %s", man);
    ck_assert_msg(ctl(&k, out, sizeof out, args) == 0, "%s", out);
    expect_range(k.c, "emb", 0, KEYS,
                 !strcmp(set, "shardkill") ? 4.0f : !strcmp(set, "base") ? 1.0f : 2.0f);
    cluster_stop(&k);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("save_set");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, save_under_pushes_is_the_table_at_its_cut);
    tcase_add_test(tc, load_restores_the_window_saved_with_the_tables);
    tcase_add_test(tc, save_set_manifest_and_load);
    tcase_add_test(tc, bad_set_requests_are_refused);
    tcase_add_test(tc, crash_during_save_set_leaves_a_usable_manifest);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

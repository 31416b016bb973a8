/*
 * test_ownership.c — issue 17's shard ownership, placement from workers and
 * progress of long saves and loads, against real ember-server processes:
 *
 *   - two servers started as shard 0 and shard 1 of 2: libember with the list in
 *     order works and ember_check_shards agrees; the list reversed (or too
 *     short) fails loudly, the message naming which address claims which
 *     index, and changes nothing;
 *   - a raw Pull, Push or PushPull holding one key of the other shard is refused
 *     whole (FAILED_PRECONDITION naming the key, its shard and this one) and
 *     writes nothing; an Import of such rows is refused unless any_shard, the
 *     named escape hatch; a server started without --shard-count takes any key;
 *   - a table created through libember with backend "cpu" and hbm_bytes: the
 *     server reports cpu, and its checkpoint records the hbm_bytes asked for; a
 *     "gpu" table on this CPU-only server is FAILED_PRECONDITION and creates
 *     nothing;
 *   - Save, Load and the restore at start log checkpoint_progress lines
 *     (--progress-interval-ms 0: after every chunk), and `emberctl save`/`load`
 *     on a terminal draw a progress line ending at the rows saved.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"
#include "proto/wire.h"
#include "test_durability_file.h"

#define ADMIN "/ember.v1.Admin/"
#define SHARD "/ember.v1.Shard/"

static char tmpdir[200];
static eh_server S[2];    /* shard 0 of 2, shard 1 of 2 */
static char dirs[2][290]; /* their --checkpoint-dir */
static uint64_t K0, K1;   /* a key of shard 0, one of shard 1 */

static ember_client *open_list(const char *list)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = list;
    o.timeout_ms = 5000;
    o.max_retries = 1;
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open %s: %s", list, e.message);
    return c;
}

static ember_client *open_in_order(void)
{
    char list[200];
    snprintf(list, sizeof list, "%s,%s", S[0].addr, S[1].addr);
    return open_list(list);
}

static int create(ember_client *c, const char *name, const char *backend, uint64_t hbm,
                  ember_error *e)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = 4;
    s.capacity_per_shard = 16384;
    s.backend = backend;
    s.hbm_bytes = hbm;
    s.initializer.kind = EMBER_INIT_ZEROS;
    return ember_create_table(c, name, &s, 0, e);
}

static int unary(eh_client *c, const char *path, const ProtobufCMessage *req, eh_result *r)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *b = malloc(len + 1);
    protobuf_c_message_pack(req, b);
    ck_assert_int_eq(eh_unary(c, path, b, len, 0, r), 0);
    free(b);
    return r->code;
}

/* The table's size on one server (DescribeTable), or -1 when it has none. */
static long long size_on(int i, const char *table)
{
    eh_client *c = eh_client_open(S[i].addr);
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    q.name = (char *)table;
    eh_result r;
    long long n = -1;
    if (unary(c, ADMIN "DescribeTable", &q.base, &r) == 0) {
        Ember__V1__DescribeTableResponse *d =
            ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
        ck_assert_ptr_nonnull(d);
        n = (long long)d->table->stats->size;
        ember__v1__describe_table_response__free_unpacked(d, NULL);
    }
    eh_result_free(&r);
    eh_client_close(c);
    return n;
}

/* A raw Pull of keys on server i; found[] filled on OK. */
static int raw_pull(int i, const char *table, const uint64_t *keys, size_t n, int insert,
                    uint8_t *found, eh_result *r)
{
    eh_client *c = eh_client_open(S[i].addr);
    ember_wire_pull_request q = {0};
    q.table.data = (const uint8_t *)table;
    q.table.len = strlen(table);
    q.keys.data = (const uint8_t *)keys;
    q.keys.len = n * 8;
    q.insert_missing = insert;
    q.want_found = 1;
    size_t len = ember_wire_pull_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_pull_request_encode(&q, b);
    ck_assert_int_eq(eh_unary(c, SHARD "Pull", b, len, 0, r), 0);
    free(b);
    if (!r->code && found) {
        ember_wire_pull_response m;
        char msg[256];
        ck_assert_int_eq(ember_wire_pull_response_decode(r->data, r->len, &m, msg, sizeof msg),
                         0);
        ck_assert_uint_eq(m.found.len, n);
        memcpy(found, m.found.data, n);
    }
    eh_client_close(c);
    return r->code;
}

/* Whether server i holds `key` in `table` (a serving pull's found[]). */
static int holds(int i, const char *table, uint64_t key)
{
    eh_result r;
    uint8_t f = 2;
    ck_assert_msg(raw_pull(i, table, &key, 1, 0, &f, &r) == 0, "pull: %s", r.message);
    eh_result_free(&r);
    return f;
}

static void write_rows(int i, const char *table, const uint64_t *keys, size_t n,
                       eh_result *r)
{
    eh_client *c = eh_client_open(S[i].addr);
    Ember__V1__PushRequest q = EMBER__V1__PUSH_REQUEST__INIT;
    float v[16] = {0};
    q.table = (char *)table;
    q.keys.data = (uint8_t *)keys;
    q.keys.len = n * 8;
    q.values.data = (uint8_t *)v;
    q.values.len = n * 4 * sizeof(float);
    q.mode = EMBER__V1__PUSH_MODE__PUSH_INSERT_OR_ASSIGN;
    unary(c, SHARD "Push", &q.base, r);
    eh_client_close(c);
}

/* ---- ownership ------------------------------------------------------------ */

START_TEST(list_in_order_works)
{
    ember_client *c = open_in_order();
    ember_error e;
    ck_assert_msg(ember_check_shards(c, &e) == 0, "check: %s", e.message);
    ck_assert_msg(create(c, "own", NULL, 0, &e) == 0, "create: %s", e.message);
    uint64_t keys[200];
    float out[800], g[800];
    for (int i = 0; i < 200; i++)
        keys[i] = 1000 + (uint64_t)i;
    for (int i = 0; i < 800; i++)
        g[i] = 1.0f;
    ck_assert_msg(ember_pull(c, "own", keys, 200, out, 4, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    ck_assert_msg(ember_push(c, "own", keys, 200, g, 4, &e) == 0, "%s", e.message);
    /* each server holds exactly its keys */
    ck_assert_int_eq(size_on(0, "own") + size_on(1, "own"), 200);
    for (int i = 0; i < 200; i += 17)
        ck_assert_int_eq(holds((int)ember_shard_of(keys[i], 2), "own", keys[i]), 1);
    ember_client_close(c);

    /* emberctl info says which index each server is and that it checks keys */
    char cmd[1024], outp[300];
    snprintf(outp, sizeof outp, "%s/info.json", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' --json --shards %s,%s info >'%s' 2>&1", EMBERCTL_BIN,
             S[0].addr, S[1].addr, outp);
    ck_assert_int_eq(system(cmd), 0);
    char *text = sp_read_file(outp);
    ck_assert_msg(strstr(text, "\"shard_index\":1,\"shard_count\":2") &&
                      strstr(text, "\"key_ownership_checked\":true"),
                  "%s", text);
    free(text);
}
END_TEST

START_TEST(list_out_of_order_fails_loudly_and_changes_nothing)
{
    ember_client *good = open_in_order();
    ember_error e;
    ck_assert_msg(create(good, "mis", NULL, 0, &e) == 0, "create: %s", e.message);
    char list[200], want[200];
    snprintf(list, sizeof list, "%s,%s", S[1].addr, S[0].addr);
    ember_client *c = open_list(list);

    int rc = ember_check_shards(c, &e);
    snprintf(want, sizeof want, "%s (position 0) is shard 1 of 2", S[1].addr);
    ck_assert_msg(rc == EMBER_FAILED_PRECONDITION && strstr(e.message, "out of order") &&
                      strstr(e.message, want),
                  "check: %d %s", rc, e.message);

    uint64_t keys[64];
    float out[256], g[256];
    for (int i = 0; i < 64; i++)
        keys[i] = 5000 + (uint64_t)i;
    for (int i = 0; i < 256; i++)
        g[i] = 1.0f;
    rc = ember_pull(c, "mis", keys, 64, out, 4, EMBER_PULL_INSERT, &e);
    ck_assert_msg(rc == EMBER_FAILED_PRECONDITION && strstr(e.message, "out of order") &&
                      strstr(e.message, want) && strstr(e.message, "belongs to shard"),
                  "pull: %d %s", rc, e.message);
    rc = ember_push(c, "mis", keys, 64, g, 4, &e);
    ck_assert_msg(rc == EMBER_FAILED_PRECONDITION && strstr(e.message, "out of order"),
                  "push: %d %s", rc, e.message);
    ck_assert_int_eq(size_on(0, "mis"), 0);
    ck_assert_int_eq(size_on(1, "mis"), 0);
    ember_client_close(c);

    /* a list of another length: shard 0 alone, its keys of shard 1 refused */
    c = open_list(S[0].addr);
    rc = ember_pull(c, "mis", keys, 64, out, 4, EMBER_PULL_INSERT, &e);
    snprintf(want, sizeof want, "%s (position 0) is shard 0 of 2", S[0].addr);
    ck_assert_msg(rc == EMBER_FAILED_PRECONDITION && strstr(e.message, "another length") &&
                      strstr(e.message, want),
                  "short list pull: %d %s", rc, e.message);
    ck_assert_int_eq(size_on(0, "mis"), 0);
    ember_client_close(c);
    ember_client_close(good);
}
END_TEST

START_TEST(raw_key_of_another_shard_refused_whole)
{
    ember_client *good = open_in_order();
    ember_error e;
    ck_assert_msg(create(good, "raw", NULL, 0, &e) == 0, "create: %s", e.message);
    ember_client_close(good);
    char want[160];
    snprintf(want, sizeof want, "key %llu belongs to shard 1, not to this shard 0 of 2",
             (unsigned long long)K1);

    uint64_t both[2] = {K0, K1};
    eh_result r;
    write_rows(0, "raw", both, 2, &r);
    ck_assert_msg(r.code == EMBER_FAILED_PRECONDITION && strstr(r.message, want),
                  "push: %d %s", r.code, r.message);
    eh_result_free(&r);
    ck_assert_int_eq(raw_pull(0, "raw", both, 2, 1, NULL, &r), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(r.message, want), "pull: %s", r.message);
    eh_result_free(&r);

    /* PushPull: its own key pushed, the other shard's pulled: refused whole */
    eh_client *c = eh_client_open(S[0].addr);
    Ember__V1__PushPullRequest pp = EMBER__V1__PUSH_PULL_REQUEST__INIT;
    Ember__V1__PushRequest push = EMBER__V1__PUSH_REQUEST__INIT;
    Ember__V1__PullRequest pull = EMBER__V1__PULL_REQUEST__INIT;
    float v[4] = {1, 2, 3, 4};
    push.table = pull.table = "raw";
    push.keys.data = (uint8_t *)&K0;
    push.keys.len = 8;
    push.values.data = (uint8_t *)v;
    push.values.len = sizeof v;
    push.mode = EMBER__V1__PUSH_MODE__PUSH_INSERT_OR_ASSIGN;
    pull.keys.data = (uint8_t *)&K1;
    pull.keys.len = 8;
    pp.push = &push;
    pp.pull = &pull;
    ck_assert_int_eq(unary(c, SHARD "PushPull", &pp.base, &r), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(r.message, want), "pushpull: %s", r.message);
    eh_result_free(&r);
    eh_client_close(c);

    ck_assert_int_eq(size_on(0, "raw"), 0);
    ck_assert_int_eq(holds(0, "raw", K0), 0);
    /* its own key alone goes through */
    write_rows(0, "raw", &K0, 1, &r);
    ck_assert_msg(r.code == 0, "own key: %s", r.message);
    eh_result_free(&r);
    ck_assert_int_eq(holds(0, "raw", K0), 1);
}
END_TEST

/* An Import of one row keyed `key` into `table` on server i. */
static int import_row(int i, const char *table, uint64_t key, int any_shard, eh_result *r)
{
    eh_client *c = eh_client_open(S[i].addr);
    Ember__V1__ImportChunk ch = EMBER__V1__IMPORT_CHUNK__INIT;
    float row[4] = {7, 7, 7, 7}; /* SGD: the row is the embedding */
    ch.table = (char *)table;
    ch.keys.data = (uint8_t *)&key;
    ch.keys.len = 8;
    ch.values.data = (uint8_t *)row;
    ch.values.len = sizeof row;
    ch.row_floats = 4;
    ch.any_shard = any_shard;
    size_t len = protobuf_c_message_get_packed_size(&ch.base);
    uint8_t *b = malloc(len);
    protobuf_c_message_pack(&ch.base, b);
    const void *msgs[1] = {b};
    ck_assert_int_eq(eh_client_stream(c, ADMIN "Import", msgs, &len, 1, r), 0);
    free(b);
    eh_client_close(c);
    return r->code;
}

START_TEST(import_of_another_shards_rows_needs_any_shard)
{
    ember_client *good = open_in_order();
    ember_error e;
    ck_assert_msg(create(good, "imp", NULL, 0, &e) == 0, "create: %s", e.message);
    ember_client_close(good);
    eh_result r;
    ck_assert_int_eq(import_row(0, "imp", K1, 0, &r), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(r.message, "any_shard") && strstr(r.message, "belongs to shard 1"),
                  "%s", r.message);
    eh_result_free(&r);
    ck_assert_int_eq(size_on(0, "imp"), 0);
    ck_assert_msg(import_row(0, "imp", K1, 1, &r) == 0, "any_shard: %s", r.message);
    eh_result_free(&r);
    /* there now, though no pull may reach it (the key is shard 1's): export
     * (emberctl export, reshard) moves it on */
    ck_assert_int_eq(size_on(0, "imp"), 1);
    char *log = eh_server_log(&S[0]);
    ck_assert_ptr_nonnull(strstr(log, "event=import_any_shard table=imp"));
    free(log);
}
END_TEST

START_TEST(server_without_shard_count_takes_any_key)
{
    eh_server solo = {0};
    const char *flags[] = {"--threads=2", NULL};
    ck_assert_int_eq(eh_server_start(&solo, flags), 0);
    ember_client *c = open_list(solo.addr);
    ember_error e;
    ck_assert_msg(create(c, "any", NULL, 0, &e) == 0, "create: %s", e.message);
    uint64_t both[2] = {K0, K1};
    float out[8];
    ck_assert_msg(ember_pull(c, "any", both, 2, out, 4, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    ck_assert_msg(ember_check_shards(c, &e) == 0, "%s", e.message);
    ember_client_close(c);
    /* and one labelled 0 of 2 but with --key-ownership off takes them too */
    eh_server off = {0};
    const char *f2[] = {"--threads=2", "--shard-index=0", "--shard-count=2",
                        "--key-ownership=off", NULL};
    ck_assert_int_eq(eh_server_start(&off, f2), 0);
    char *log = eh_server_log(&off);
    ck_assert_ptr_nonnull(strstr(log, "key_ownership=off"));
    free(log);
    c = open_list(off.addr);
    ck_assert_msg(create(c, "any", NULL, 0, &e) == 0, "create: %s", e.message);
    ck_assert_msg(ember_pull(c, "any", both, 2, out, 4, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    ember_client_close(c);
    eh_server_cleanup(&off);
    eh_server_cleanup(&solo);
}
END_TEST

START_TEST(bad_ownership_and_progress_flags_stop_the_start)
{
    char *out = NULL;
    const char *a1[] = {"--key-ownership", "maybe", NULL};
    int st = eh_run_server_cmd(a1, &out, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(out, "not check or off"),
                  "--key-ownership maybe: %s", out);
    free(out);
    const char *a2[] = {"--progress-interval-ms", "soon", NULL};
    st = eh_run_server_cmd(a2, &out, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(out, "not a non-negative"),
                  "--progress-interval-ms soon: %s", out);
    free(out);
}
END_TEST

/* ---- placement ------------------------------------------------------------ */

START_TEST(placement_from_libember)
{
    ember_client *c = open_in_order();
    ember_error e;
    ck_assert_msg(create(c, "placed", "cpu", 1u << 20, &e) == 0, "create: %s", e.message);
    eh_client *raw = eh_client_open(S[1].addr);
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    q.name = "placed";
    eh_result r;
    ck_assert_int_eq(unary(raw, ADMIN "DescribeTable", &q.base, &r), 0);
    Ember__V1__DescribeTableResponse *d =
        ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d->table->config->backend, "cpu");
    ck_assert_uint_eq(d->table->config->hbm_bytes, 0); /* in effect: cpu rows are on the host */
    ember__v1__describe_table_response__free_unpacked(d, NULL);
    eh_result_free(&r);
    eh_client_close(raw);
    /* what was asked travels with the table: its checkpoint's placement */
    ck_assert_msg(ember_save(c, "placed", NULL, &e) == 0, "save: %s", e.message);
    for (int i = 0; i < 2; i++) {
        char path[640], be[32], msg[256];
        uint64_t hbm = 0;
        snprintf(path, sizeof path, "%s/placed.ckpt", dirs[i]);
        ck_assert_msg(dur_ckpt_placement(path, be, sizeof be, &hbm, msg, sizeof msg) == 0,
                      "%s", msg);
        ck_assert_str_eq(be, "cpu");
        ck_assert_uint_eq(hbm, 1u << 20);
    }

    int rc;
    if (strcmp(eh_backend_served(), "gpu")) { /* servers that serve cpu tables only */
        rc = create(c, "ongpu", "gpu", 0, &e);
        ck_assert_msg(rc == EMBER_FAILED_PRECONDITION && strstr(e.message, "cpu tables only"),
                      "gpu: %d %s", rc, e.message);
        ck_assert_int_eq(size_on(0, "ongpu"), -1);
        ck_assert_int_eq(size_on(1, "ongpu"), -1);
    }
    rc = create(c, "badbe", "tpu", 0, &e);
    ck_assert_msg(rc == EMBER_INVALID_ARGUMENT, "tpu: %d %s", rc, e.message);
    ck_assert_int_eq(size_on(0, "badbe"), -1);
    ember_client_close(c);
}
END_TEST

/* ---- progress ------------------------------------------------------------- */

START_TEST(save_load_restore_report_progress)
{
    ember_client *c = open_in_order();
    ember_error e;
    ck_assert_msg(create(c, "big", NULL, 0, &e) == 0, "create: %s", e.message);
    enum { N = 20000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    float *out = malloc((size_t)N * 4 * sizeof *out);
    for (int i = 0; i < N; i++)
        keys[i] = 100000 + (uint64_t)i;
    ck_assert_msg(ember_pull(c, "big", keys, N, out, 4, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    ck_assert_msg(ember_save(c, "big", NULL, &e) == 0, "save: %s", e.message);
    ck_assert_msg(ember_load(c, "big", NULL, &e) == 0, "load: %s", e.message);
    long long n0 = size_on(0, "big");
    char want[200];
    for (int op = 0; op < 2; op++) {
        char *log = eh_server_log(&S[0]);
        snprintf(want, sizeof want,
                 "event=checkpoint_progress op=%s table=big rows=%lld total=%lld pct=100.0 ",
                 op ? "load" : "save", n0, n0);
        ck_assert_msg(strstr(log, want), "no '%s' in the log:\n%s", want, log);
        ck_assert_ptr_nonnull(strstr(log, "rows_per_s="));
        ck_assert_ptr_nonnull(strstr(log, "eta_s="));
        free(log);
    }

    /* emberctl save and load on a terminal draw a line ending at the rows done */
    if (access("/usr/bin/script", X_OK) == 0) {
        char cmd[2048], outp[400];
        snprintf(outp, sizeof outp, "%s/tty.out", tmpdir);
        for (int op = 0; op < 2; op++) {
            snprintf(cmd, sizeof cmd,
                     "/usr/bin/script -qec \"'%s' --shards %s,%s %s big\" /dev/null >'%s' 2>&1 "
                     "</dev/null",
                     EMBERCTL_BIN, S[0].addr, S[1].addr, op ? "load" : "save", outp);
            ck_assert_int_eq(system(cmd), 0);
            char *text = sp_read_file(outp);
            snprintf(want, sizeof want, "\r%s big: 20,000 / 20,000 rows (100.0%%)",
                     op ? "load" : "save");
            ck_assert_msg(strstr(text, want), "no progress line '%s': %s", want + 1, text);
            free(text);
        }
        /* not a terminal: no progress line */
        snprintf(cmd, sizeof cmd, "'%s' --shards %s,%s save big >'%s' 2>&1 </dev/null",
                 EMBERCTL_BIN, S[0].addr, S[1].addr, outp);
        ck_assert_int_eq(system(cmd), 0);
        char *text = sp_read_file(outp);
        ck_assert_msg(!strchr(text, '\r'), "progress without a terminal: %s", text);
        free(text);
    } else {
        fprintf(stderr, "emberctl progress: no /usr/bin/script, skipped\n");
    }

    /* the restore at start */
    ck_assert_int_eq(eh_server_stop(&S[0], SIGTERM, NULL), 0);
    ck_assert_int_eq(eh_server_restart(&S[0]), 0);
    char *log = eh_server_log(&S[0]);
    snprintf(want, sizeof want, "event=checkpoint_progress op=restore table=big rows=%lld", n0);
    ck_assert_msg(strstr(log, want), "no '%s' in the log:\n%s", want, log);
    free(log);
    ck_assert_int_eq(size_on(0, "big"), n0);
    free(keys);
    free(out);
    ember_client_close(c);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ember-it-ownership-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        char idx[32], dirflag[640];
        snprintf(dirs[i], sizeof dirs[i], "%s/ckpt%d", tmpdir, i);
        snprintf(idx, sizeof idx, "--shard-index=%d", i);
        snprintf(dirflag, sizeof dirflag, "--checkpoint-dir=%s", dirs[i]);
        const char *flags[] = {"--threads=2", idx, "--shard-count=2", dirflag,
                               "--progress-interval-ms=0", "--checkpoint-on-exit=off", NULL};
        if (eh_server_start(&S[i], flags))
            return 1;
    }
    for (uint64_t k = 1; !K0 || !K1; k++)
        *(ember_shard_of(k, 2) ? &K1 : &K0) = k;
    Suite *s = suite_create("ownership");
    TCase *tc = tcase_create("ownership");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, list_in_order_works);
    tcase_add_test(tc, list_out_of_order_fails_loudly_and_changes_nothing);
    tcase_add_test(tc, raw_key_of_another_shard_refused_whole);
    tcase_add_test(tc, import_of_another_shards_rows_needs_any_shard);
    tcase_add_test(tc, server_without_shard_count_takes_any_key);
    tcase_add_test(tc, bad_ownership_and_progress_flags_stop_the_start);
    tcase_add_test(tc, placement_from_libember);
    tcase_add_test(tc, save_load_restore_report_progress);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (int i = 0; i < 2; i++)
        eh_server_cleanup(&S[i]);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    (void)!system(cmd);
    return failed ? 1 : 0;
}

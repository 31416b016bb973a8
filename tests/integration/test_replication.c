/*
 * test_replication.c — followers and replicated acknowledgements through real
 * ember-server processes (harness.h) and libember (README "Replication and
 * failover"):
 *
 *   - a follower (--replica-of) copies a leader's tables and rows and tails its
 *     writes: once the load stops it holds exactly the leader's rows (keys,
 *     embeddings, optimizer state, scores, versions), tables created and
 *     dropped on the leader included; it refuses writes ("not the leader"),
 *     serves pulls without insert, and says what it is (ServerInfo, health
 *     "ember.v1.Leader", /metrics);
 *   - a follower killed with SIGKILL under a push load catches up after its
 *     restart;
 *   - rows removed on the leader by TTL, Erase, Clear and eviction leave the
 *     follower too;
 *   - a replicated push is answered only once the follower holds it (each
 *     acknowledged push is read back from the follower at once), is refused
 *     before being applied when no follower is attached, and fails — never OK —
 *     when the follower stops answering; bad ack settings are refused.
 *
 * Convergence is waited for (up to WAIT_S), and the test asserts on the rows,
 * never on how long anything took.
 *
 * Runs without forking (CK_FORK=no, set by CMake): gRPC state does not survive
 * Check's fork.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "proto/wire.h"

#define DIM 8
#define WAIT_S 30
#define ADMIN "/ember.v1.Admin/"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ember_client *client_to(const char *addr, int timeout_ms)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = addr;
    o.timeout_ms = timeout_ms;
    o.retry_budget_ms = 0; /* what a test asserts is each call's own status */
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open %s: %s", addr, e.message);
    return c;
}

static void create(ember_client *c, const char *name, uint64_t capacity, uint64_t ttl, int ack)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = capacity;
    s.ttl_seconds = ttl;
    s.optimizer.kind = EMBER_OPTIM_ADAGRAD; /* optimizer state must travel too */
    s.ack = ack;
    ember_error e;
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

static void push_random(ember_client *c, const char *table, size_t n, uint64_t key_range)
{
    uint64_t keys[512];
    float g[512 * DIM];
    ck_assert(n <= 512);
    for (size_t i = 0; i < n; i++) {
        keys[i] = 1 + rnd() % key_range;
        for (int j = 0; j < DIM; j++)
            g[i * DIM + j] = (float)((int)(rnd() % 200) - 100) / 1000.0f;
    }
    ember_error e;
    ck_assert_msg(ember_push(c, table, keys, n, g, DIM, &e) == 0, "push: %s", e.message);
}

/* ---- what a server holds: every row of a table, canonical bytes ---------- */

typedef struct snap {
    uint8_t *b;
    size_t len, rows;
    int code;
} snap;

/* Every row of `table` at `addr`, as bytes (harness.h eh_table_rows). */
static snap snapshot(const char *addr, const char *table)
{
    snap s = {0};
    s.code = eh_table_rows(addr, table, &s.b, &s.len, &s.rows);
    ck_assert_int_ge(s.code, 0);
    return s;
}

/* Waits (up to WAIT_S) until the follower holds exactly the leader's rows of
 * `table`; asserts it does. Returns the rows. */
static size_t converged(const eh_server *leader, const eh_server *follower, const char *table)
{
    size_t rows = 0;
    ck_assert_msg(eh_tables_converge(leader->addr, follower->addr, table, WAIT_S, &rows),
                  "follower %s of %s did not converge on table %s", follower->addr,
                  leader->addr, table);
    return rows;
}

/* Waits until the follower has no table `table` (Export NOT_FOUND). */
static void gone_on(const eh_server *s, const char *table)
{
    int code = 0;
    for (int i = 0; i < WAIT_S * 10 && code != EMBER_NOT_FOUND; i++) {
        snap x = snapshot(s->addr, table);
        code = x.code;
        free(x.b);
        if (code != EMBER_NOT_FOUND)
            sleep_ms(100);
    }
    ck_assert_int_eq(code, EMBER_NOT_FOUND);
}

static Ember__V1__ServerInfoResponse *server_info(const char *addr)
{
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, ADMIN "ServerInfo", "", 0, 0, &r), 0);
    ck_assert_int_eq(r.code, 0);
    Ember__V1__ServerInfoResponse *m = ember__v1__server_info_response__unpack(NULL, r.len, r.data);
    ck_assert(m != NULL);
    eh_result_free(&r);
    eh_client_close(cl);
    return m;
}

/* Health/Check of `service`: the status (1 SERVING, 2 NOT_SERVING), -code on error. */
static int health(const char *addr, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    q.service = (char *)service;
    uint8_t b[128];
    size_t len = grpc__health__v1__health_check_request__pack(&q, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, "/grpc.health.v1.Health/Check", b, len, 0, &r), 0);
    int st = -r.code;
    if (!r.code) {
        Grpc__Health__V1__HealthCheckResponse *m =
            grpc__health__v1__health_check_response__unpack(NULL, r.len, r.data);
        st = m ? (int)m->status : -1;
        grpc__health__v1__health_check_response__free_unpacked(m, NULL);
    }
    eh_result_free(&r);
    eh_client_close(cl);
    return st;
}

static void start_leader(eh_server *l)
{
    const char *flags[] = {"--threads=4", "--ttl-sweep-interval=100ms",
                           "--metrics-listen=127.0.0.1:0", NULL};
    ck_assert_int_eq(eh_server_start(l, flags), 0);
}

static void start_follower(eh_server *f, const eh_server *l)
{
    char of[96];
    snprintf(of, sizeof of, "--replica-of=%s", l->addr);
    const char *flags[] = {"--threads=4", of, "--metrics-listen=127.0.0.1:0", NULL};
    ck_assert_int_eq(eh_server_start(f, flags), 0);
}

/* ---- a follower copies, tails and refuses writes --------------------------- */

START_TEST(follower_copies_tails_and_refuses)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    create(c, "t1", 8192, 0, EMBER_ACK_DEFAULT);
    for (int i = 0; i < 10; i++) /* rows before the follower starts: its bootstrap */
        push_random(c, "t1", 200, 4000);
    start_follower(&F, &L);
    for (int i = 0; i < 60; i++) {
        push_random(c, "t1", 256, 6000);
        if (i == 20)
            create(c, "t2", 1024, 0, EMBER_ACK_DEFAULT);
        if (i > 20)
            push_random(c, "t2", 64, 800);
        if (i % 10 == 5) {
            uint64_t k[50];
            for (int j = 0; j < 50; j++)
                k[j] = 1 + rnd() % 6000;
            ember_error e;
            ck_assert_int_eq(ember_erase(c, "t1", k, 50, NULL, &e), 0);
        }
    }
    ck_assert_uint_gt(converged(&L, &F, "t1"), 1000);
    ck_assert_uint_gt(converged(&L, &F, "t2"), 100);

    /* what each says it is */
    Ember__V1__ServerInfoResponse *fi = server_info(F.addr), *li = server_info(L.addr);
    ck_assert_str_eq(fi->role, "follower");
    ck_assert_str_eq(fi->leader, L.addr);
    ck_assert_str_eq(li->role, "leader");
    ck_assert_uint_eq(li->n_followers, 1);
    ck_assert_str_eq(li->followers[0]->addr, F.addr);
    ember__v1__server_info_response__free_unpacked(fi, NULL);
    ember__v1__server_info_response__free_unpacked(li, NULL);
    ck_assert_int_eq(health(L.addr, "ember.v1.Leader"), 1);
    ck_assert_int_eq(health(F.addr, "ember.v1.Leader"), 2);
    ck_assert_int_eq(health(F.addr, ""), 1);
    ck_assert_int_eq(health(F.addr, "ember.v1.Shard"), 1);
    ck_assert(eh_metric(&F, "ember_replication_follower") == 1.0);
    ck_assert(eh_metric(&L, "ember_replication_follower") == 0.0);
    ck_assert(eh_metric(&L, "ember_replication_followers") == 1.0);
    ck_assert(eh_metric(&F, "ember_replication_lag_versions") >= 0.0);

    /* the follower serves reads (the leader's rows) and refuses every write */
    ember_client *fc = client_to(F.addr, 5000);
    uint64_t keys[64];
    float lv[64 * DIM], fv[64 * DIM], g[64 * DIM] = {0};
    uint8_t lf[64], ff[64];
    for (int i = 0; i < 64; i++)
        keys[i] = 1 + rnd() % 6000;
    ember_pull_options po;
    ember_pull_options_init(&po);
    po.flags = EMBER_PULL_SERVE;
    ember_error e;
    po.found = lf;
    ck_assert_int_eq(ember_pull_opts(c, "t1", keys, 64, lv, DIM, &po, &e), 0);
    po.found = ff;
    ck_assert_int_eq(ember_pull_opts(fc, "t1", keys, 64, fv, DIM, &po, &e), 0);
    ck_assert(!memcmp(lf, ff, sizeof lf));
    ck_assert(!memcmp(lv, fv, sizeof lv));
    ck_assert_int_eq(ember_push(fc, "t1", keys, 64, g, DIM, &e), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(e.message, "not the leader") != NULL, "%s", e.message);
    ck_assert_int_eq(ember_pull(fc, "t1", keys, 64, fv, DIM, EMBER_PULL_INSERT, &e),
                     EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(e.message, "not the leader") != NULL, "%s", e.message);
    ck_assert_int_eq(ember_erase(fc, "t1", keys, 4, NULL, &e), EMBER_FAILED_PRECONDITION);
    ck_assert_int_eq(ember_drop_table(fc, "t1", 0, &e), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(e.message, "not the leader") != NULL, "%s", e.message);
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = 64;
    ck_assert_int_eq(ember_create_table(fc, "t9", &s, 0, &e), EMBER_FAILED_PRECONDITION);
    ck_assert_int_eq(ember_set_ttl(fc, "t1", 5, &e), EMBER_FAILED_PRECONDITION);
    /* nothing of those refusals reached the follower's copy */
    converged(&L, &F, "t1");
    gone_on(&F, "t9");

    /* a table dropped on the leader goes; one made again is copied again */
    ck_assert_int_eq(ember_drop_table(c, "t2", 0, &e), 0);
    gone_on(&F, "t2");
    create(c, "t2", 512, 0, EMBER_ACK_DEFAULT);
    push_random(c, "t2", 100, 300);
    ck_assert_uint_gt(converged(&L, &F, "t2"), 50);

    ember_client_close(fc);
    ember_client_close(c);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* ---- kill -9 of a follower under load, and its catch-up ------------------------ */

typedef struct loader {
    const char *addr;
    atomic_int stop;
    atomic_ulong pushes;
} loader;

static void *load_main(void *arg)
{
    loader *ld = arg;
    ember_client *c = client_to(ld->addr, 20000);
    uint64_t x = 0x1234567ull;
    uint64_t keys[256];
    float g[256 * DIM];
    while (!atomic_load(&ld->stop)) {
        for (int i = 0; i < 256; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            keys[i] = 1 + (x >> 33) % 20000;
            for (int j = 0; j < DIM; j++)
                g[i * DIM + j] = 0.001f * (float)((int)(x >> 40 & 63) - 32);
        }
        ember_error e;
        ck_assert_msg(ember_push(c, "k", keys, 256, g, DIM, &e) == 0, "push: %s", e.message);
        atomic_fetch_add(&ld->pushes, 1);
    }
    ember_client_close(c);
    return NULL;
}

START_TEST(follower_killed_catches_up)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    create(c, "k", 32768, 0, EMBER_ACK_DEFAULT);
    start_follower(&F, &L);
    loader ld = {.addr = L.addr};
    pthread_t th;
    pthread_create(&th, NULL, load_main, &ld);
    while (atomic_load(&ld.pushes) < 50)
        sleep_ms(10);
    int ws;
    ck_assert_int_eq(eh_server_stop(&F, SIGKILL, &ws), 0);
    unsigned long at_kill = atomic_load(&ld.pushes);
    while (atomic_load(&ld.pushes) < at_kill + 50) /* the leader moves on while it is down */
        sleep_ms(10);
    ck_assert_int_eq(eh_server_restart(&F), 0);
    unsigned long at_restart = atomic_load(&ld.pushes);
    while (atomic_load(&ld.pushes) < at_restart + 50) /* and while it catches up */
        sleep_ms(10);
    atomic_store(&ld.stop, 1);
    pthread_join(th, NULL);
    ck_assert_uint_gt(converged(&L, &F, "k"), 5000);
    ember_client_close(c);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* ---- removals reach the follower: TTL, Erase, Clear, eviction ------------------ */

static uint64_t size_of(const char *addr, const char *table)
{
    snap s = snapshot(addr, table);
    free(s.b);
    return s.rows;
}

START_TEST(removals_converge)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    start_follower(&F, &L);
    ember_client *c = client_to(L.addr, 20000);
    ember_error e;

    /* TTL: the leader's sweeper removes the rows; the follower's own stands aside */
    create(c, "ttl", 4096, 1, EMBER_ACK_DEFAULT);
    for (int i = 0; i < 4; i++)
        push_random(c, "ttl", 250, 100000);
    ck_assert_uint_gt(converged(&L, &F, "ttl"), 900);
    for (int i = 0; i < WAIT_S * 10 && size_of(L.addr, "ttl"); i++)
        sleep_ms(100);
    ck_assert_uint_eq(size_of(L.addr, "ttl"), 0);
    ck_assert_uint_eq(converged(&L, &F, "ttl"), 0);

    /* Erase and Clear */
    create(c, "ec", 4096, 0, EMBER_ACK_DEFAULT);
    for (int i = 0; i < 4; i++)
        push_random(c, "ec", 250, 100000);
    uint64_t k[100];
    for (int i = 0; i < 100; i++)
        k[i] = 1 + rnd() % 100000;
    ck_assert_int_eq(ember_erase(c, "ec", k, 100, NULL, &e), 0);
    size_t rows = converged(&L, &F, "ec");
    ck_assert_uint_gt(rows, 800);
    eh_client *ac = eh_client_open(L.addr);
    Ember__V1__ClearRequest cq = EMBER__V1__CLEAR_REQUEST__INIT;
    cq.table = (char *)"ec";
    uint8_t b[64];
    size_t len = ember__v1__clear_request__pack(&cq, b);
    eh_result r;
    ck_assert_int_eq(eh_unary(ac, ADMIN "Clear", b, len, 0, &r), 0);
    ck_assert_int_eq(r.code, 0);
    eh_result_free(&r);
    eh_client_close(ac);
    ck_assert_uint_eq(converged(&L, &F, "ec"), 0);
    push_random(c, "ec", 100, 1000); /* and rows written after the Clear */
    ck_assert_uint_gt(converged(&L, &F, "ec"), 50);

    /* eviction: a small table under far more keys than it holds */
    create(c, "ev", 256, 0, EMBER_ACK_DEFAULT);
    for (int i = 0; i < 40; i++)
        push_random(c, "ev", 500, 1000000);
    ck_assert_uint_gt(converged(&L, &F, "ev"), 100);

    ember_client_close(c);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* DescribeTable's ack and ack_replicas of `table` on `addr`. */
static int ack_of(const char *addr, const char *table, uint32_t *replicas)
{
    Ember__V1__DescribeTableRequest q = EMBER__V1__DESCRIBE_TABLE_REQUEST__INIT;
    q.name = (char *)table;
    uint8_t b[64];
    size_t len = ember__v1__describe_table_request__pack(&q, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, ADMIN "DescribeTable", b, len, 0, &r), 0);
    ck_assert_msg(r.code == 0, "describe %s: %s", table, r.message);
    Ember__V1__DescribeTableResponse *m =
        ember__v1__describe_table_response__unpack(NULL, r.len, r.data);
    ck_assert(m && m->table && m->table->config);
    int ack = (int)m->table->config->ack;
    *replicas = m->table->config->ack_replicas;
    ember__v1__describe_table_response__free_unpacked(m, NULL);
    eh_result_free(&r);
    eh_client_close(cl);
    return ack;
}

/* ---- replicated acknowledgements -------------------------------------------- */

static int push_assign(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                       const float *v, int ack, uint32_t replicas, ember_error *e)
{
    ember_push_options o;
    ember_push_options_init(&o);
    o.mode = EMBER_PUSH_INSERT_OR_ASSIGN;
    o.ack = ack;
    o.ack_replicas = replicas;
    return ember_push_opts(c, table, keys, n, v, DIM, &o, e);
}

/* 1 when every key is on `addr` with exactly the values `v`. */
static int holds(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                 const float *v)
{
    float out[64 * DIM];
    uint8_t found[64];
    ember_pull_options po;
    ember_pull_options_init(&po);
    po.flags = EMBER_PULL_SERVE;
    po.found = found;
    ember_error e;
    ck_assert(n <= 64);
    ck_assert_msg(ember_pull_opts(c, table, keys, n, out, DIM, &po, &e) == 0, "pull: %s",
                  e.message);
    for (size_t i = 0; i < n; i++)
        if (!found[i])
            return 0;
    return !memcmp(out, v, n * DIM * sizeof *v);
}

static void fill(uint64_t *keys, float *v, size_t n, uint64_t base)
{
    for (size_t i = 0; i < n; i++) {
        keys[i] = base + i;
        for (int j = 0; j < DIM; j++)
            v[i * DIM + j] = (float)(base + i) + 0.125f * (float)j;
    }
}

/* A replicated push of 32 keys to table "r", tried again while it is refused
 * UNAVAILABLE before being applied (no follower attached yet); asserts it is
 * acknowledged within WAIT_S. */
static void push_once_attached(ember_client *c, const uint64_t *keys, const float *v)
{
    ember_error e;
    int rc = EMBER_UNAVAILABLE;
    for (int i = 0; i < WAIT_S * 20 && rc == EMBER_UNAVAILABLE; i++) {
        rc = push_assign(c, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e);
        if (rc == EMBER_UNAVAILABLE)
            sleep_ms(50);
    }
    ck_assert_msg(rc == 0, "replicated push: %s", e.message);
}

typedef struct rloader {
    const char *leader;
    const char *follower;
    unsigned id;
    unsigned ok;
    unsigned lost; /* acknowledged, then not found on the follower */
} rloader;

static void *replicated_main(void *arg)
{
    rloader *ld = arg;
    ember_client *c = client_to(ld->leader, 20000), *fc = client_to(ld->follower, 20000);
    uint64_t keys[32];
    float v[32 * DIM];
    for (unsigned i = 0; i < 60; i++) {
        ember_error e;
        fill(keys, v, 32, 1000000u * (ld->id + 1) + 32u * i);
        int rc = push_assign(c, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e);
        ck_assert_msg(rc == 0, "replicated push: %s", e.message);
        ld->ok++;
        if (!holds(fc, "r", keys, 32, v))
            ld->lost++;
    }
    ember_client_close(c);
    ember_client_close(fc);
    return NULL;
}

START_TEST(replicated_pushes_wait_for_the_follower)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    ember_error e;
    uint64_t keys[32];
    float v[32 * DIM];

    /* bad settings are refused and change nothing */
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = 1024;
    s.ack = 7;
    ck_assert_int_eq(ember_create_table(c, "bad", &s, 0, &e), EMBER_INVALID_ARGUMENT);
    s.ack = EMBER_ACK_REPLICATED;
    s.ack_replicas = 1000;
    ck_assert_int_eq(ember_create_table(c, "bad", &s, 0, &e), EMBER_INVALID_ARGUMENT);
    gone_on(&L, "bad");

    create(c, "r", 1 << 16, 0, EMBER_ACK_REPLICATED);
    create(c, "a", 1024, 0, EMBER_ACK_DEFAULT);
    /* emberctl create --ack: replicated:N is kept; a bad mode is a usage error */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --shards %s create ectl --dim 4 --capacity 64 --ack sometimes"
             " > /dev/null 2>&1", EMBERCTL_BIN, L.addr);
    ck_assert_int_eq(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s --shards %s create ectl --dim 4 --capacity 64 --ack "
             "replicated:2 > /dev/null", EMBERCTL_BIN, L.addr);
    ck_assert_int_eq(system(cmd), 0);
    uint32_t n;
    ck_assert_int_eq(ack_of(L.addr, "ectl", &n), EMBER__V1__ACK_MODE__ACK_REPLICATED);
    ck_assert_uint_eq(n, 2);
    {
        /* emberctl ack (AlterTable set_ack) changes it; bad modes change nothing */
        snprintf(cmd, sizeof cmd, "%s --shards %s ack ectl sometimes > /dev/null 2>&1",
                 EMBERCTL_BIN, L.addr);
        ck_assert_int_eq(WEXITSTATUS(system(cmd)), 2);
        Ember__V1__AlterTableRequest aq = EMBER__V1__ALTER_TABLE_REQUEST__INIT;
        aq.name = (char *)"ectl";
        aq.set_ack = 1;
        aq.ack = (Ember__V1__AckMode)9;
        uint8_t b[64];
        size_t len = ember__v1__alter_table_request__pack(&aq, b);
        eh_client *cl = eh_client_open(L.addr);
        eh_result r;
        ck_assert_int_eq(eh_unary(cl, ADMIN "AlterTable", b, len, 0, &r), 0);
        ck_assert_int_eq(r.code, EMBER_INVALID_ARGUMENT);
        eh_result_free(&r);
        eh_client_close(cl);
        ck_assert_int_eq(ack_of(L.addr, "ectl", &n), EMBER__V1__ACK_MODE__ACK_REPLICATED);
        snprintf(cmd, sizeof cmd, "%s --shards %s ack ectl async > /dev/null", EMBERCTL_BIN,
                 L.addr);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_eq(ack_of(L.addr, "ectl", &n), EMBER__V1__ACK_MODE__ACK_ASYNC);
    }
    fill(keys, v, 32, 1);
    ck_assert_int_eq(push_assign(c, "r", keys, 32, v, 9, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(push_assign(c, "r", keys, 32, v, EMBER_ACK_REPLICATED, 99, &e),
                     EMBER_INVALID_ARGUMENT);
    /* no follower: refused before anything is applied */
    ck_assert_int_eq(push_assign(c, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e),
                     EMBER_UNAVAILABLE);
    ck_assert_msg(strstr(e.message, "nothing applied") != NULL, "%s", e.message);
    ck_assert_int_eq(push_assign(c, "a", keys, 32, v, EMBER_ACK_REPLICATED, 0, &e),
                     EMBER_UNAVAILABLE);
    ck_assert_uint_eq(size_of(L.addr, "r"), 0);
    ck_assert_uint_eq(size_of(L.addr, "a"), 0);
    /* async on the replicated table, per call: applied at once */
    ck_assert_int_eq(push_assign(c, "r", keys, 32, v, EMBER_ACK_ASYNC, 0, &e), 0);
    ck_assert_uint_eq(size_of(L.addr, "r"), 32);

    start_follower(&F, &L);
    ember_client *fc = client_to(F.addr, 20000);
    /* until the follower is attached, pushes are refused unapplied (safe to retry) */
    fill(keys, v, 32, 100);
    push_once_attached(c, keys, v);
    int rc;
    ck_assert(holds(fc, "r", keys, 32, v));

    /* each acknowledged push is on the follower the moment it is answered */
    unsigned lost = 0;
    for (unsigned i = 0; i < 100; i++) {
        fill(keys, v, 32, 10000 + 32 * i);
        ck_assert_msg(push_assign(c, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e) == 0, "%s",
                      e.message);
        lost += !holds(fc, "r", keys, 32, v);
    }
    ck_assert_uint_eq(lost, 0);
    /* the same from the async table, asked per call */
    for (unsigned i = 0; i < 20; i++) {
        fill(keys, v, 32, 50000 + 32 * i);
        ck_assert_int_eq(push_assign(c, "a", keys, 32, v, EMBER_ACK_REPLICATED, 1, &e), 0);
        lost += !holds(fc, "a", keys, 32, v);
    }
    ck_assert_uint_eq(lost, 0);
    /* concurrent replicated pushes (coalescing or not): none answered early */
    rloader lds[4];
    pthread_t th[4];
    for (unsigned i = 0; i < 4; i++) {
        lds[i] = (rloader){L.addr, F.addr, i, 0, 0};
        pthread_create(&th[i], NULL, replicated_main, &lds[i]);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_uint_eq(lds[i].ok, 60);
        ck_assert_uint_eq(lds[i].lost, 0);
    }
    /* more followers than there are: refused, nothing applied */
    fill(keys, v, 32, 900000);
    ck_assert_int_eq(push_assign(c, "r", keys, 32, v, EMBER_ACK_REPLICATED, 2, &e),
                     EMBER_UNAVAILABLE);
    ck_assert(!holds(c, "r", keys, 1, v));

    /* a follower that stops answering: the push is applied but never
     * acknowledged (DEADLINE_EXCEEDED), then refused once it is not attached */
    ck_assert_int_eq(kill(F.pid, SIGSTOP), 0);
    ember_client *quick = client_to(L.addr, 1000);
    fill(keys, v, 32, 800000);
    rc = push_assign(quick, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e);
    ck_assert_msg(rc == EMBER_DEADLINE_EXCEEDED || rc == EMBER_UNAVAILABLE, "rc %d: %s", rc,
                  e.message);
    sleep_ms(3500); /* past the attachment window: a refusal, no longer a wait */
    fill(keys, v, 32, 810000);
    ck_assert_int_eq(push_assign(quick, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e),
                     EMBER_UNAVAILABLE);
    ck_assert(!holds(c, "r", keys, 1, v));
    ck_assert(eh_metric(&L, "ember_replicated_pushes_total{result=\"failed\"}") >= 1.0);
    ck_assert_int_eq(kill(F.pid, SIGCONT), 0);
    /* back: acknowledged again, and on the follower */
    fill(keys, v, 32, 820000);
    push_once_attached(c, keys, v);
    ck_assert(holds(fc, "r", keys, 32, v));
    converged(&L, &F, "r");
    ember_client_close(quick);
    ember_client_close(fc);
    ember_client_close(c);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* ---- failover: promote, terms, fencing ------------------------------------- */

static uint64_t promote(const char *addr, int force, const char *advertise, int *code,
                        char *msg, size_t cap)
{
    Ember__V1__PromoteRequest q = EMBER__V1__PROMOTE_REQUEST__INIT;
    q.force = force;
    q.advertise = (char *)(advertise ? advertise : "");
    uint8_t b[512];
    size_t len = ember__v1__promote_request__pack(&q, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, ADMIN "Promote", b, len, 0, &r), 0);
    *code = r.code;
    snprintf(msg, cap, "%s", r.message);
    uint64_t term = 0;
    if (!r.code) {
        Ember__V1__PromoteResponse *m = ember__v1__promote_response__unpack(NULL, r.len, r.data);
        ck_assert(m != NULL);
        term = m->term;
        ember__v1__promote_response__free_unpacked(m, NULL);
    }
    eh_result_free(&r);
    eh_client_close(cl);
    return term;
}

static int follow_call(const char *addr, const char *leader, uint64_t term, char *msg, size_t cap)
{
    Ember__V1__FollowRequest q = EMBER__V1__FOLLOW_REQUEST__INIT;
    q.leader = (char *)leader;
    q.term = term;
    uint8_t b[512];
    size_t len = ember__v1__follow_request__pack(&q, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, ADMIN "Follow", b, len, 0, &r), 0);
    int code = r.code;
    snprintf(msg, cap, "%s", r.message);
    eh_result_free(&r);
    eh_client_close(cl);
    return code;
}

/* Waits until the server's ServerInfo says `role`; asserts it does. */
static void role_is(const char *addr, const char *role)
{
    char got[32] = "";
    for (int i = 0; i < WAIT_S * 10; i++) {
        Ember__V1__ServerInfoResponse *m = server_info(addr);
        snprintf(got, sizeof got, "%s", m->role);
        ember__v1__server_info_response__free_unpacked(m, NULL);
        if (!strcmp(got, role))
            return;
        sleep_ms(100);
    }
    ck_abort_msg("%s is %s, not %s", addr, got, role);
}

static uint64_t term_of(const char *addr)
{
    Ember__V1__ServerInfoResponse *m = server_info(addr);
    uint64_t t = m->term;
    ember__v1__server_info_response__free_unpacked(m, NULL);
    return t;
}

/* A raw Push of one key carrying `term`, (client, seq) and `mode` with every
 * value `x`: its status; *dup (may be NULL): the reply's duplicate flag. */
static int raw_push_full(const char *addr, const char *table, uint64_t key, uint64_t term,
                         uint64_t client, uint64_t seq, int mode, int ack, float x, int *dup,
                         char *msg, size_t cap)
{
    float v[DIM];
    for (int j = 0; j < DIM; j++)
        v[j] = x;
    ember_wire_push_request m;
    memset(&m, 0, sizeof m);
    m.table = (ember_wire_bytes){(const uint8_t *)table, strlen(table)};
    m.keys = (ember_wire_bytes){(const uint8_t *)&key, 8};
    m.values = (ember_wire_bytes){(const uint8_t *)v, sizeof v};
    m.mode = mode;
    m.term = term;
    m.client_id = client;
    m.sequence = seq;
    m.ack = ack;
    uint8_t b[256];
    size_t len = ember_wire_push_request_encode(&m, b);
    eh_client *cl = eh_client_open(addr);
    eh_result r;
    ck_assert_int_eq(eh_unary(cl, "/ember.v1.Shard/Push", b, len, 0, &r), 0);
    int code = r.code;
    snprintf(msg, cap, "%s", r.message);
    if (!code) { /* the reply carries the leader's term */
        ember_wire_push_response pr;
        char em[128];
        ck_assert_int_eq(ember_wire_push_response_decode(r.data, r.len, &pr, em, sizeof em), 0);
        ck_assert_uint_eq(pr.term, term_of(addr));
        if (dup)
            *dup = pr.duplicate;
    }
    eh_result_free(&r);
    eh_client_close(cl);
    return code;
}

/* A raw Push of one key (INSERT_OR_ASSIGN, zeros) carrying `term`: its status. */
static int raw_push(const char *addr, const char *table, uint64_t key, uint64_t term, char *msg,
                    size_t cap)
{
    return raw_push_full(addr, table, key, term, 0, 0, EMBER_WIRE_PUSH_INSERT_OR_ASSIGN, 0,
                         0.0f, NULL, msg, cap);
}

typedef struct acked {
    const char *leader;
    unsigned id;
    atomic_int stop;
    atomic_uint n_ok;
    unsigned ok[4096]; /* batches acknowledged */
} acked;

#define FBATCH 16
static void *acked_main(void *arg)
{
    acked *ld = arg;
    ember_client *c = client_to(ld->leader, 2000);
    uint64_t keys[FBATCH];
    float v[FBATCH * DIM];
    for (unsigned i = 0; i < 4096 && !atomic_load(&ld->stop); i++) {
        ember_error e;
        uint64_t base = 10000000ull * (ld->id + 1) + FBATCH * (uint64_t)i;
        for (unsigned k = 0; k < FBATCH; k++) {
            keys[k] = base + k;
            for (int j = 0; j < DIM; j++)
                v[k * DIM + j] = (float)(base + k) * 0.5f + (float)j;
        }
        if (push_assign(c, "r", keys, FBATCH, v, EMBER_ACK_DEFAULT, 0, &e) == 0)
            ld->ok[atomic_fetch_add(&ld->n_ok, 1)] = i;
        else
            sleep_ms(20); /* the leader is gone: keep trying, never counting */
    }
    ember_client_close(c);
    return NULL;
}

START_TEST(leader_killed_promoted_no_acknowledged_push_lost)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    create(c, "r", 1 << 17, 0, EMBER_ACK_REPLICATED);
    start_follower(&F, &L);
    uint64_t keys[32];
    float v[32 * DIM];
    fill(keys, v, 32, 100);
    push_once_attached(c, keys, v);
    ember_client_close(c);
    /* pushes with their (client_id, sequence), acknowledged replicated: +1 each */
    char msg[1024];
    int dup = -1;
    for (uint64_t q = 1; q <= 20; q++) {
        ck_assert_int_eq(raw_push_full(L.addr, "r", 100, 0, 4242, q, EMBER_WIRE_PUSH_ACCUM,
                                       EMBER_WIRE_ACK_DEFAULT, 1.0f, &dup, msg, sizeof msg), 0);
        ck_assert_int_eq(dup, 0);
    }

    acked lds[2];
    pthread_t th[2];
    for (unsigned i = 0; i < 2; i++) {
        memset(&lds[i], 0, sizeof lds[i]);
        lds[i].leader = L.addr;
        lds[i].id = i;
        pthread_create(&th[i], NULL, acked_main, &lds[i]);
    }
    while (atomic_load(&lds[0].n_ok) + atomic_load(&lds[1].n_ok) < 100)
        sleep_ms(5);
    int ws;
    ck_assert_int_eq(eh_server_stop(&L, SIGKILL, &ws), 0); /* under the load */
    sleep_ms(300);
    atomic_store(&lds[0].stop, 1);
    atomic_store(&lds[1].stop, 1);
    for (unsigned i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    int code;
    uint64_t term = promote(F.addr, 0, NULL, &code, msg, sizeof msg);
    ck_assert_msg(code == 0, "promote: %s", msg);
    ck_assert_uint_eq(term, 2);
    role_is(F.addr, "leader");
    ck_assert_uint_eq(term_of(F.addr), 2);
    ck_assert_int_eq(health(F.addr, "ember.v1.Leader"), 1);

    /* every acknowledged push is on the new leader, with its values */
    ember_client *nc = client_to(F.addr, 20000);
    unsigned checked = 0, lost = 0;
    for (unsigned t = 0; t < 2; t++)
        for (unsigned k = 0; k < lds[t].n_ok; k++) {
            uint64_t base = 10000000ull * (t + 1) + FBATCH * (uint64_t)lds[t].ok[k];
            uint64_t kk[FBATCH];
            float vv[FBATCH * DIM];
            for (unsigned q = 0; q < FBATCH; q++) {
                kk[q] = base + q;
                for (int j = 0; j < DIM; j++)
                    vv[q * DIM + j] = (float)(base + q) * 0.5f + (float)j;
            }
            lost += !holds(nc, "r", kk, FBATCH, vv);
            checked++;
        }
    ck_assert_uint_ge(checked, 100);
    ck_assert_uint_eq(lost, 0);
    ember_error e;
    /* the pushes resent to the new leader with their pairs are duplicates there:
     * key 100 holds its value + 20, not + 40 */
    float before[DIM], after[DIM];
    uint64_t k100 = 100;
    ck_assert_int_eq(ember_pull(nc, "r", &k100, 1, before, DIM, EMBER_PULL_SERVE, &e), 0);
    for (uint64_t q = 1; q <= 20; q++) {
        dup = -1;
        /* async: the new leader has no follower yet */
        ck_assert_int_eq(raw_push_full(F.addr, "r", 100, 0, 4242, q, EMBER_WIRE_PUSH_ACCUM,
                                       EMBER_WIRE_ACK_ASYNC, 1.0f, &dup, msg, sizeof msg), 0);
        ck_assert_int_eq(dup, 1);
    }
    ck_assert_int_eq(ember_pull(nc, "r", &k100, 1, after, DIM, EMBER_PULL_SERVE, &e), 0);
    ck_assert(!memcmp(before, after, sizeof before));
    ck_assert(before[0] == 100.0f + 20.0f); /* fill(): key 100's first value is 100 */
    /* no follower now: a replicated push is refused unapplied; async goes */
    fill(keys, v, 32, 7000000);
    ck_assert_int_eq(push_assign(nc, "r", keys, 32, v, EMBER_ACK_DEFAULT, 0, &e),
                     EMBER_UNAVAILABLE);
    ck_assert_int_eq(push_assign(nc, "r", keys, 32, v, EMBER_ACK_ASYNC, 0, &e), 0);
    ck_assert(holds(nc, "r", keys, 32, v));
    /* promoting a leader again is refused */
    promote(F.addr, 1, NULL, &code, msg, sizeof msg);
    ck_assert_int_eq(code, EMBER_FAILED_PRECONDITION);
    ember_client_close(nc);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

START_TEST(partitioned_leader_is_fenced_and_follows)
{
    eh_server L = {0}, F = {0}, M = {0};
    char msg[1024];
    int code;
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    create(c, "p", 4096, 0, EMBER_ACK_DEFAULT);
    start_follower(&F, &L);
    push_random(c, "p", 300, 5000);
    converged(&L, &F, "p");

    /* bad requests change nothing */
    promote(F.addr, 0, "no-port", &code, msg, sizeof msg);
    ck_assert_int_eq(code, EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(follow_call(F.addr, "", 9, msg, sizeof msg), EMBER_INVALID_ARGUMENT);
    role_is(F.addr, "follower");

    /* the leader is cut off (stopped) while its follower is promoted */
    ck_assert_int_eq(kill(L.pid, SIGSTOP), 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s promote %s > /dev/null", EMBERCTL_BIN, F.addr);
    ck_assert_int_eq(system(cmd), 0);
    role_is(F.addr, "leader");
    ember_client *fc = client_to(F.addr, 20000);
    push_random(fc, "p", 200, 9000); /* the new leader takes writes */
    ck_assert_int_eq(kill(L.pid, SIGCONT), 0);
    /* the old leader hears of the new term, stops taking writes and follows */
    role_is(L.addr, "follower");
    ck_assert_uint_eq(term_of(L.addr), 2);
    Ember__V1__ServerInfoResponse *li = server_info(L.addr);
    ck_assert_str_eq(li->leader, F.addr);
    ember__v1__server_info_response__free_unpacked(li, NULL);
    ck_assert_int_eq(raw_push(L.addr, "p", 42, 0, msg, sizeof msg), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(msg, "not the leader") != NULL, "%s", msg);
    ck_assert_int_eq(health(L.addr, "ember.v1.Leader"), 2);
    converged(&F, &L, "p"); /* and holds the new leader's rows, none of its own */
    /* a stale Follow (an older term) is refused */
    ck_assert_int_eq(follow_call(F.addr, L.addr, 1, msg, sizeof msg), EMBER_FAILED_PRECONDITION);
    role_is(F.addr, "leader");

    /* a push carrying a newer term fences a leader on the spot */
    start_leader(&M);
    ember_client *mc = client_to(M.addr, 20000);
    create(mc, "p", 4096, 0, EMBER_ACK_DEFAULT);
    ck_assert_int_eq(raw_push(M.addr, "p", 1, 1, msg, sizeof msg), 0);
    ck_assert_int_eq(raw_push(M.addr, "p", 2, 7, msg, sizeof msg), EMBER_FAILED_PRECONDITION);
    ck_assert_msg(strstr(msg, "not the leader") != NULL, "%s", msg);
    role_is(M.addr, "fenced");
    ck_assert_uint_eq(term_of(M.addr), 7);
    ck_assert_int_eq(raw_push(M.addr, "p", 3, 0, msg, sizeof msg), EMBER_FAILED_PRECONDITION);
    ck_assert_int_eq(health(M.addr, "ember.v1.Leader"), 2);
    promote(M.addr, 1, NULL, &code, msg, sizeof msg); /* fenced: follows first */
    ck_assert_int_eq(code, EMBER_FAILED_PRECONDITION);
    /* emberctl follow: below its term 7, refused; with the term, it follows */
    snprintf(cmd, sizeof cmd, "%s follow %s --leader %s > /dev/null 2>&1", EMBERCTL_BIN,
             M.addr, F.addr);
    ck_assert_int_ne(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s follow %s --leader %s --term 7 > /dev/null", EMBERCTL_BIN,
             M.addr, F.addr);
    ck_assert_int_eq(system(cmd), 0);
    role_is(M.addr, "follower");
    converged(&F, &M, "p");

    ember_client_close(mc);
    ember_client_close(fc);
    ember_client_close(c);
    eh_server_cleanup(&M);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* ---- libember: a shard given as its replicas ("leader|follower") ------------- */

static double pulls_served(const eh_server *s)
{
    double v = eh_metric(s, "ember_requests_total{method=\"Pull\",code=\"OK\"}");
    return v < 0 ? 0 : v;
}

START_TEST(client_finds_the_leader_among_replicas)
{
    eh_server L = {0}, F = {0};
    start_leader(&L);
    ember_client *c = client_to(L.addr, 20000);
    create(c, "c", 4096, 0, EMBER_ACK_DEFAULT);
    start_follower(&F, &L);
    ember_error e;
    char spec[160];
    /* malformed replica lists are refused at open */
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = "127.0.0.1:1||127.0.0.1:2";
    ck_assert(ember_client_open(&o, &e) == NULL);
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    o.shards = "127.0.0.1:1|nonsense";
    ck_assert(ember_client_open(&o, &e) == NULL);
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);

    /* the follower first: "not the leader", the leader found, the push resent there */
    snprintf(spec, sizeof spec, "%s|%s", F.addr, L.addr);
    ember_client *a = client_to(spec, 5000);
    uint64_t keys[32];
    float v[32 * DIM], out[32 * DIM];
    fill(keys, v, 32, 500);
    ck_assert_msg(push_assign(a, "c", keys, 32, v, EMBER_ACK_ASYNC, 0, &e) == 0, "%s", e.message);
    ck_assert(holds(c, "c", keys, 32, v));
    converged(&L, &F, "c");
    /* reads from the follower when asked, and only serving ones */
    double before = pulls_served(&F);
    ck_assert_int_eq(ember_pull(a, "c", keys, 32, out, DIM,
                                EMBER_PULL_SERVE | EMBER_PULL_FOLLOWER, &e), 0);
    ck_assert(!memcmp(out, v, sizeof v));
    ck_assert(pulls_served(&F) == before + 1);
    ck_assert_int_eq(ember_pull(a, "c", keys, 32, out, DIM, EMBER_PULL_FOLLOWER, &e),
                     EMBER_INVALID_ARGUMENT);

    /* the leader dies, the follower is promoted: the next push finds it */
    int ws;
    ck_assert_int_eq(eh_server_stop(&L, SIGKILL, &ws), 0);
    int code;
    char msg[1024];
    promote(F.addr, 0, NULL, &code, msg, sizeof msg);
    ck_assert_msg(code == 0, "promote: %s", msg);
    fill(keys, v, 32, 900);
    ck_assert_msg(push_assign(a, "c", keys, 32, v, EMBER_ACK_ASYNC, 0, &e) == 0, "%s", e.message);
    ember_client *fc = client_to(F.addr, 5000);
    ck_assert(holds(fc, "c", keys, 32, v));
    ember_client_close(fc);
    ember_client_close(a);
    ember_client_close(c);
    eh_server_cleanup(&F);
    eh_server_cleanup(&L);
}
END_TEST

/* ---- the acknowledgement setting outlives a restart -------------------------- */

static void sigterm_restart(eh_server *l)
{
    int ws;
    ck_assert_int_eq(eh_server_stop(l, SIGTERM, &ws), 0);
    ck_assert_int_eq(eh_server_restart(l), 0);
}

START_TEST(ack_setting_survives_restart)
{
    char *dir = eh_tmpdir("repl"), dflag[64], cmd[512];
    ck_assert_ptr_nonnull(dir);
    snprintf(dflag, sizeof dflag, "--checkpoint-dir=%s", dir);
    const char *flags[] = {dflag, NULL};
    eh_server L = {0};
    ck_assert_int_eq(eh_server_start(&L, flags), 0);
    ember_client *c = client_to(L.addr, 20000);
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = 1024;
    s.ack = EMBER_ACK_REPLICATED;
    s.ack_replicas = 2;
    ember_error e;
    ck_assert_int_eq(ember_create_table(c, "kept", &s, 0, &e), 0);
    ck_assert_int_eq(ember_create_table(c, "altered", &s, 0, &e), 0);
    create(c, "plain", 1024, 0, EMBER_ACK_DEFAULT);
    snprintf(cmd, sizeof cmd, "%s --shards %s ack altered async > /dev/null", EMBERCTL_BIN,
             L.addr);
    ck_assert_int_eq(system(cmd), 0);
    ember_client_close(c);

    /* restored from the exit save: each table has the setting it was given */
    sigterm_restart(&L);
    uint32_t n;
    ck_assert_int_eq(ack_of(L.addr, "kept", &n), EMBER__V1__ACK_MODE__ACK_REPLICATED);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ack_of(L.addr, "altered", &n), EMBER__V1__ACK_MODE__ACK_ASYNC);
    ck_assert_int_eq(ack_of(L.addr, "plain", &n), 0);

    /* a table dropped and made again under its name does not inherit it */
    c = client_to(L.addr, 20000);
    ck_assert_int_eq(ember_drop_table(c, "kept", 0, &e), 0);
    create(c, "kept", 1024, 0, EMBER_ACK_DEFAULT);
    ember_client_close(c);
    sigterm_restart(&L);
    ck_assert_int_eq(ack_of(L.addr, "kept", &n), 0);
    eh_server_cleanup(&L);
    ck_assert_int_eq(eh_rm_rf(dir), 0);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("replication");
    TCase *tc = tcase_create("replication");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, follower_copies_tails_and_refuses);
    tcase_add_test(tc, follower_killed_catches_up);
    tcase_add_test(tc, removals_converge);
    tcase_add_test(tc, replicated_pushes_wait_for_the_follower);
    tcase_add_test(tc, leader_killed_promoted_no_acknowledged_push_lost);
    tcase_add_test(tc, partitioned_leader_is_fenced_and_follows);
    tcase_add_test(tc, client_finds_the_leader_among_replicas);
    tcase_add_test(tc, ack_setting_survives_restart);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/*
 * test_retry_budget.c — libember's retry budget (ember.h, retry_budget_ms;
 * README "Failures") against real ember-server processes on loopback.
 *
 * What must hold:
 *  - a shard that never comes back: the call fails UNAVAILABLE naming the shard
 *    and the budget, and not before the budget has passed; the caller is told
 *    once that the shard is down, and never that it is back;
 *  - a shard killed and restarted within the budget (kill -9, same port and
 *    checkpoint dir): the waiting call succeeds with the checkpoint's rows; the
 *    caller hears "down" once and "back" once;
 *  - a stopped shard (SIGSTOP: it accepts connections but does not answer):
 *    each attempt ends at its own deadline (timeout_ms) and is retried within
 *    the budget; after SIGCONT the push succeeds and is applied exactly once
 *    (the shard's dedup window saw every attempt);
 *  - a push retried across a restart (same client id and sequence, as the
 *    library resends it): a duplicate when the checkpoint holds the first
 *    (a save of every table saves the dedup window at the tables' cut, and the
 *    restart restores it); a push acknowledged after the last checkpoint is
 *    lost (README "Durability"), and its retry applies it again (it is not in
 *    the saved window either); after a save of one table only (no window
 *    saved), a push the checkpoint holds applies again when retried;
 *  - an answer other than UNAVAILABLE (NOT_FOUND) is not retried;
 *  - closing or cancelling a client while a call waits out the budget returns
 *    it promptly with CANCELLED (sync and async);
 *  - bad budgets are refused (INVALID_ARGUMENT): a negative option other than
 *    the default, a malformed EMBER_RETRY_BUDGET; EMBER_RETRY_BUDGET sets it.
 * Elapsed times are checked only from below (the budget) or against bounds
 * many times the expected duration.
 *
 * Runs without forking (CK_FORK=no, set by CMake).
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ember/ember.h"
#include "harness.h"
#include "proto/wire.h"

#define DIM 4

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What options.shard_notice heard. */
typedef struct notices {
    pthread_mutex_t mu;
    int down[2], up[2];
    char last[2][600], last_down[2][600];
} notices;

static void on_notice(void *arg, unsigned shard, const char *address, int available,
                      const char *message)
{
    notices *n = arg;
    (void)address;
    if (shard > 1)
        return;
    pthread_mutex_lock(&n->mu);
    if (available)
        n->up[shard]++;
    else
        n->down[shard]++;
    snprintf(n->last[shard], sizeof n->last[shard], "%s", message);
    if (!available)
        snprintf(n->last_down[shard], sizeof n->last_down[shard], "%s", message);
    pthread_mutex_unlock(&n->mu);
}

static ember_client *open_budget(const char *shards, int budget_ms, unsigned timeout_ms,
                                 notices *n)
{
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = shards;
    o.timeout_ms = timeout_ms;
    o.retry_budget_ms = budget_ms;
    if (n) {
        memset(n, 0, sizeof *n);
        pthread_mutex_init(&n->mu, NULL);
        o.shard_notice = on_notice;
        o.shard_notice_arg = n;
    }
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

/* An SGD table with lr 1 and zero rows: a pushed gradient g leaves -g. */
static void create_sgd(ember_client *c, const char *name)
{
    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = DIM;
    s.capacity_per_shard = 1024;
    s.optimizer.kind = EMBER_OPTIM_SGD;
    s.optimizer.lr = 1.0f;
    s.initializer.kind = EMBER_INIT_ZEROS;
    ember_error e;
    ember_drop_table(c, name, 1, &e);
    ck_assert_msg(ember_create_table(c, name, &s, 0, &e) == 0, "create %s: %s", name, e.message);
}

/* A key that ember_shard_of maps to shard `s` of `n`. */
static uint64_t key_on(unsigned s, unsigned n)
{
    for (uint64_t k = 1;; k++)
        if (ember_shard_of(k, n) == s)
            return k;
}


/* Two shards, each with a checkpoint dir under a temporary one, a client with
 * the given budget (ms) and 2 s attempts, its notices, and an SGD table. */
typedef struct pair {
    char *dir;
    eh_server sv[2];
    char list[160];
    notices n;
    ember_client *c;
    uint64_t keys[2]; /* one on each shard */
} pair;

static void pair_start(pair *p, int budget_ms, const char *table)
{
    p->dir = eh_tmpdir("retry");
    ck_assert_ptr_nonnull(p->dir);
    char d[2][300], idx[2][8];
    for (int i = 0; i < 2; i++) {
        snprintf(idx[i], sizeof idx[i], "%d", i);
        snprintf(d[i], sizeof d[i], "%s/s%d", p->dir, i);
        const char *flags[] = {"--shard-index", idx[i], "--shard-count", "2", "--threads", "2",
                               "--checkpoint-dir", d[i], NULL};
        ck_assert_int_eq(eh_server_start(&p->sv[i], flags), 0);
    }
    snprintf(p->list, sizeof p->list, "%s,%s", p->sv[0].addr, p->sv[1].addr);
    p->c = open_budget(p->list, budget_ms, 2000, &p->n);
    create_sgd(p->c, table);
    p->keys[0] = key_on(0, 2);
    p->keys[1] = key_on(1, 2);
}

static void pair_stop(pair *p)
{
    ember_client_close(p->c);
    for (int i = 0; i < 2; i++)
        eh_server_cleanup(&p->sv[i]);
    ck_assert_int_eq(eh_rm_rf(p->dir), 0);
    free(p->dir);
}

/* ---- a shard that never comes back ---------------------------------------- */

START_TEST(never_returns_fails_after_budget)
{
    pair p;
    pair_start(&p, 1500, "gone");
    ember_client *c = p.c;
    eh_server *sv = p.sv;
    const notices *n = &p.n;
    const uint64_t *keys = p.keys;
    float rows[2 * DIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "gone", keys, 2, rows, DIM, EMBER_PULL_INSERT, &e), 0);

    ck_assert_int_eq(eh_server_stop(&sv[1], SIGKILL, NULL), 0);
    double t0 = now_s();
    int rv = ember_pull(c, "gone", keys, 2, rows, DIM, 0, &e);
    double took = now_s() - t0;
    ck_assert_int_eq(rv, EMBER_UNAVAILABLE);
    ck_assert_int_eq(e.shard, 1);
    ck_assert_msg(strstr(e.message, sv[1].addr) && strstr(e.message, "shard 1") &&
                      strstr(e.message, "retry budget 1.5 s"),
                  "%s", e.message);
    ck_assert_msg(took >= 1.5, "failed after %.3f s, before the 1.5 s budget", took);
    ck_assert_msg(took < 30, "failed after %.1f s", took);
    /* a push too, and an async pull's wait */
    float g[2 * DIM] = {0};
    t0 = now_s();
    ck_assert_int_eq(ember_push(c, "gone", keys, 2, g, DIM, &e), EMBER_UNAVAILABLE);
    ck_assert_msg(now_s() - t0 >= 1.5, "push failed before the budget");
    ck_assert_int_eq(e.shard, 1);
    ember_pending *pp = ember_pull_async(c, "gone", keys, 2, rows, DIM, 0, &e);
    ck_assert_ptr_nonnull(pp);
    ck_assert_int_eq(ember_wait(pp, &e), EMBER_UNAVAILABLE);
    ck_assert_int_eq(e.shard, 1);
    ck_assert_msg(strstr(e.message, "retry budget 1.5 s"), "%s", e.message);
    /* told once, never "back"; shard 0 never mentioned */
    ck_assert_int_eq(n->down[1], 1);
    ck_assert_int_eq(n->up[1], 0);
    ck_assert_int_eq(n->down[0] + n->up[0], 0);
    ck_assert_msg(strstr(n->last[1], "unavailable") && strstr(n->last[1], sv[1].addr), "%s",
                  n->last[1]);
    /* shard 0 alone still answers at once */
    ck_assert_int_eq(ember_pull(c, "gone", keys, 1, rows, DIM, 0, &e), 0);
    pair_stop(&p);
}
END_TEST

START_TEST(other_errors_not_retried)
{
    eh_server s;
    ck_assert_int_eq(eh_server_start(&s, NULL), 0);
    notices n;
    ember_client *c = open_budget(s.addr, 30000, 2000, &n);
    uint64_t k = 1;
    float row[DIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "no_such_table", &k, 1, row, DIM, 0, &e), EMBER_NOT_FOUND);
    ck_assert_msg(!strstr(e.message, "attempts"), "retried: %s", e.message);
    ck_assert_int_eq(n.down[0], 0);
    ember_client_close(c);
    eh_server_cleanup(&s);
}
END_TEST

/* ---- a shard that comes back within the budget ---------------------------- */

typedef struct restarter {
    eh_server *s;
    double after_s;
    int rc;
} restarter;

static void *restart_main(void *arg)
{
    restarter *r = arg;
    usleep((useconds_t)(r->after_s * 1e6));
    r->rc = eh_server_restart(r->s);
    return NULL;
}

START_TEST(kill_and_restart_within_budget)
{
    pair p;
    pair_start(&p, 30000, "back");
    ember_client *c = p.c;
    eh_server *sv = p.sv;
    const notices *n = &p.n;
    const uint64_t *keys = p.keys;
    float g[2 * DIM], rows[2 * DIM];
    for (int i = 0; i < 2 * DIM; i++)
        g[i] = (float)(i + 1);
    ember_error e;
    ck_assert_int_eq(ember_push(c, "back", keys, 2, g, DIM, &e), 0);
    ck_assert_int_eq(ember_save(c, "back", NULL, &e), 0);

    ck_assert_int_eq(eh_server_stop(&sv[1], SIGKILL, NULL), 0);
    restarter r = {.s = &sv[1], .after_s = 1.0, .rc = -1};
    pthread_t t;
    pthread_create(&t, NULL, restart_main, &r);
    ck_assert_msg(ember_pull(c, "back", keys, 2, rows, DIM, 0, &e) == 0, "%s", e.message);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.rc, 0);
    for (int i = 0; i < 2 * DIM; i++)
        ck_assert_float_eq(rows[i], -g[i]); /* shard 1's row from the checkpoint */
    ck_assert_int_eq(n->down[1], 1);
    ck_assert_int_eq(n->up[1], 1);
    ck_assert_msg(strstr(n->last[1], "is back after"), "%s", n->last[1]);
    ck_assert_int_eq(n->down[0] + n->up[0], 0);
    char *log = eh_server_log(&sv[1]);
    ck_assert_msg(strstr(log, "event=restored table=back"), "no restore in the log");
    free(log);

    /* An async pull started while the shard is down, waited on after it is back. */
    ck_assert_int_eq(eh_server_stop(&sv[1], SIGKILL, NULL), 0);
    ember_pending *pp = ember_pull_async(c, "back", keys, 2, rows, DIM, 0, &e);
    ck_assert_ptr_nonnull(pp);
    r.rc = -1;
    pthread_create(&t, NULL, restart_main, &r);
    ck_assert_msg(ember_wait(pp, &e) == 0, "%s", e.message);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_float_eq(rows[DIM], -g[DIM]);
    ck_assert_int_eq(n->down[1], 2);
    ck_assert_int_eq(n->up[1], 2);
    pair_stop(&p);
}
END_TEST

/* ---- a stopped shard ---------------------------------------------------------- */

typedef struct continuer {
    pid_t pid;
    double after_s;
} continuer;

static void *continue_main(void *arg)
{
    continuer *k = arg;
    usleep((useconds_t)(k->after_s * 1e6));
    kill(k->pid, SIGCONT);
    return NULL;
}

/* SIGSTOP, and waits until the process is stopped ('T' in /proc/<pid>/stat):
 * the signal is delivered after kill() returns. */
static void stop_process(pid_t pid)
{
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        const char *close_paren = strrchr(buf, ')');
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'T')
            return;
        usleep(1000);
    }
    ck_abort_msg("process %d did not stop", (int)pid);
}

START_TEST(sigstop_bounded_by_attempt_deadline)
{
    eh_server s;
    ck_assert_int_eq(eh_server_start(&s, NULL), 0);
    notices n;
    /* 400 ms attempts, a 30 s budget: attempts time out and are retried. */
    ember_client *c = open_budget(s.addr, 30000, 400, &n);
    create_sgd(c, "stopped");
    uint64_t k = 5;
    float g[DIM] = {1, 2, 3, 4}, row[DIM];
    ember_error e;
    ck_assert_int_eq(ember_pull(c, "stopped", &k, 1, row, DIM, EMBER_PULL_INSERT, &e), 0);

    stop_process(s.pid);
    continuer k2 = {.pid = s.pid, .after_s = 2.0};
    pthread_t t;
    pthread_create(&t, NULL, continue_main, &k2);
    double t0 = now_s();
    ck_assert_msg(ember_push(c, "stopped", &k, 1, g, DIM, &e) == 0, "%s", e.message);
    double took = now_s() - t0;
    pthread_join(t, NULL);
    /* The push outlived several 400 ms attempts: it was retried, not failed. */
    ck_assert_msg(took >= 1.5, "push returned after %.2f s, before the SIGCONT", took);
    ck_assert_int_eq(n.down[0], 1);
    ck_assert_msg(strstr(n.last_down[0], "DEADLINE_EXCEEDED"), "%s", n.last_down[0]);
    ck_assert_int_eq(n.up[0], 1);
    /* Every attempt reached the shard after SIGCONT; it applied one. */
    ck_assert_int_eq(ember_pull(c, "stopped", &k, 1, row, DIM, 0, &e), 0);
    for (int i = 0; i < DIM; i++)
        ck_assert_float_eq(row[i], -g[i]);

    /* Budget 0: the old behaviour, a stopped shard fails at the call's deadline. */
    ember_client *c0 = open_budget(s.addr, 0, 400, NULL);
    stop_process(s.pid);
    ck_assert_int_eq(ember_pull(c0, "stopped", &k, 1, row, DIM, 0, &e),
                     EMBER_DEADLINE_EXCEEDED);
    ck_assert_int_eq(kill(s.pid, SIGCONT), 0);
    ember_client_close(c0);
    ember_client_close(c);
    eh_server_cleanup(&s);
}
END_TEST

/* ---- at most once across a restart: the dedup window saved at the cut ------ */

/* One push of gradient 1 to key k as libember sends it: client id, sequence. */
static int raw_push(eh_client *ec, uint64_t k, uint64_t client, uint64_t seq, int *dup)
{
    float g[DIM] = {1, 1, 1, 1};
    ember_wire_push_request q = {0};
    q.table.data = (const uint8_t *)"dedup";
    q.table.len = 5;
    q.keys.data = (const uint8_t *)&k;
    q.keys.len = 8;
    q.values.data = (const uint8_t *)g;
    q.values.len = sizeof g;
    q.dtype = EMBER_WIRE_F32;
    q.client_id = client;
    q.sequence = seq;
    size_t len = ember_wire_push_request_size(&q, NULL);
    uint8_t *b = malloc(len + 1);
    ember_wire_push_request_encode(&q, b);
    eh_result r;
    ck_assert_int_eq(eh_unary(ec, "/ember.v1.Shard/Push", b, len, 0, &r), 0);
    free(b);
    int code = r.code;
    if (code == 0) {
        ember_wire_push_response m;
        ck_assert_int_eq(ember_wire_push_response_decode(r.data, r.len, &m, NULL, 0), 0);
        *dup = m.duplicate;
    }
    eh_result_free(&r);
    return code;
}

static float row0(ember_client *c, uint64_t k)
{
    float row[DIM];
    ember_error e;
    ck_assert_msg(ember_pull(c, "dedup", &k, 1, row, DIM, 0, &e) == 0, "%s", e.message);
    return row[0];
}

START_TEST(push_retried_across_restart)
{
    char *dir = eh_tmpdir("retry");
    ck_assert_ptr_nonnull(dir);
    const char *flags[] = {"--checkpoint-dir", dir, NULL};
    eh_server s;
    ck_assert_int_eq(eh_server_start(&s, flags), 0);
    ember_client *c = open_budget(s.addr, 20000, 2000, NULL);
    create_sgd(c, "dedup");
    eh_client *ec = eh_client_open(s.addr);
    const uint64_t k = 9, client = 0x5eed;
    int dup = -1;
    ck_assert_int_eq(raw_push(ec, k, client, 100, &dup), 0);
    ck_assert_int_eq(dup, 0);
    ck_assert_float_eq(row0(c, k), -1.0f);
    /* the same push again (its reply lost): a duplicate, not applied */
    ck_assert_int_eq(raw_push(ec, k, client, 100, &dup), 0);
    ck_assert_int_eq(dup, 1);
    ck_assert_float_eq(row0(c, k), -1.0f);

    ember_error e;
    ck_assert_int_eq(ember_save(c, NULL, NULL, &e), 0); /* every table: the window too */
    /* acknowledged after the last checkpoint: lost by a crash */
    ck_assert_int_eq(raw_push(ec, k, client, 101, &dup), 0);
    ck_assert_float_eq(row0(c, k), -2.0f);

    ck_assert_int_eq(eh_server_stop(&s, SIGKILL, NULL), 0);
    ck_assert_int_eq(eh_server_restart(&s), 0);
    ck_assert_float_eq(row0(c, k), -1.0f); /* the checkpoint's row: push 101 is lost */
    /* push 100 resent across the restart: in the saved window, a duplicate */
    ck_assert_int_eq(raw_push(ec, k, client, 100, &dup), 0);
    ck_assert_int_eq(dup, 1);
    ck_assert_float_eq(row0(c, k), -1.0f);
    /* push 101 resent: after the cut, in neither the file nor the window: applied */
    ck_assert_int_eq(raw_push(ec, k, client, 101, &dup), 0);
    ck_assert_int_eq(dup, 0);
    ck_assert_float_eq(row0(c, k), -2.0f);
    /* and the restarted shard's window works as before */
    ck_assert_int_eq(raw_push(ec, k, client, 101, &dup), 0);
    ck_assert_int_eq(dup, 1);
    ck_assert_float_eq(row0(c, k), -2.0f);

    /* a save of one table saves no window: the restored window is the one saved
     * with every table, which no longer matches this table's file */
    ck_assert_int_eq(raw_push(ec, k, client, 102, &dup), 0);
    ck_assert_float_eq(row0(c, k), -3.0f);
    ck_assert_int_eq(ember_save(c, "dedup", NULL, &e), 0);
    ck_assert_int_eq(eh_server_stop(&s, SIGKILL, NULL), 0);
    ck_assert_int_eq(eh_server_restart(&s), 0);
    ck_assert_float_eq(row0(c, k), -3.0f);
    ck_assert_int_eq(raw_push(ec, k, client, 102, &dup), 0);
    ck_assert_int_eq(dup, 0); /* applied twice, as before windows were saved */
    ck_assert_float_eq(row0(c, k), -4.0f);
    eh_client_close(ec);
    ember_client_close(c);
    eh_server_cleanup(&s);
    ck_assert_int_eq(eh_rm_rf(dir), 0);
    free(dir);
}
END_TEST

/* ---- closing or cancelling a client while a call waits -------------------- */

typedef struct waiter {
    ember_client *c;
    int rc;
    ember_error e;
} waiter;

static void *pull_main(void *arg)
{
    waiter *w = arg;
    uint64_t k = 1;
    float row[DIM];
    w->rc = ember_pull(w->c, "t", &k, 1, row, DIM, 0, &w->e);
    /* w->c is not touched again: it is being closed */
    return NULL;
}

static void *cancel_main(void *arg)
{
    usleep(300000);
    ember_client_cancel(arg);
    return NULL;
}

START_TEST(close_while_waiting_returns_promptly)
{
    int port = sp_free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port); /* nobody listens */
    ember_client *c = open_budget(addr, 60000, 2000, NULL);
    waiter w = {.c = c, .rc = -1};
    pthread_t t;
    pthread_create(&t, NULL, pull_main, &w);
    usleep(500000);
    double t0 = now_s();
    ember_client_close(c); /* waits for the pull to let go */
    double took = now_s() - t0;
    pthread_join(t, NULL);
    ck_assert_int_eq(w.rc, EMBER_CANCELLED);
    ck_assert_msg(strstr(w.e.message, "cancelled"), "%s", w.e.message);
    ck_assert_msg(took < 20, "close took %.1f s of a 60 s budget", took);

    /* an async pull's wait, cancelled from another thread */
    c = open_budget(addr, 60000, 2000, NULL);
    uint64_t k = 1;
    float row[DIM];
    ember_error e;
    ember_pending *p = ember_pull_async(c, "t", &k, 1, row, DIM, 0, &e);
    ck_assert_ptr_nonnull(p);
    pthread_create(&t, NULL, cancel_main, c);
    t0 = now_s();
    ck_assert_int_eq(ember_wait(p, &e), EMBER_CANCELLED);
    ck_assert_msg(now_s() - t0 < 20, "the wait outlived the cancel");
    pthread_join(t, NULL);
    /* later calls are cancelled at once */
    ck_assert_int_eq(ember_pull(c, "t", &k, 1, row, DIM, 0, &e), EMBER_CANCELLED);
    ember_client_close(c);
}
END_TEST

/* ---- options and EMBER_RETRY_BUDGET ---------------------------------------- */

START_TEST(budget_options_checked)
{
    ember_client_options o;
    ember_client_options_init(&o);
    ck_assert_int_eq(o.retry_budget_ms, EMBER_RETRY_BUDGET_DEFAULT);
    o.shards = "127.0.0.1:1";
    ember_error e;
    o.retry_budget_ms = -2;
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(e.message, "retry_budget_ms -2"), "%s", e.message);
    o.retry_budget_ms = EMBER_RETRY_BUDGET_DEFAULT;
    const char *bad[] = {"abc", "-1", "1e9", "5s", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("EMBER_RETRY_BUDGET", bad[i], 1);
        ck_assert_ptr_null(ember_client_open(&o, &e));
        ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
        ck_assert_msg(strstr(e.message, "EMBER_RETRY_BUDGET"), "%s", e.message);
    }
    /* the variable sets the default budget; an explicit option beats it */
    int port = sp_free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    o.shards = addr;
    setenv("EMBER_RETRY_BUDGET", "0.7", 1);
    setenv("EMBER_RETRY_QUIET", "1", 1); /* read at open */
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_ptr_nonnull(c);
    uint64_t k = 1;
    float row[DIM];
    double t0 = now_s();
    ck_assert_int_eq(ember_pull(c, "t", &k, 1, row, DIM, 0, &e), EMBER_UNAVAILABLE);
    ck_assert_msg(now_s() - t0 >= 0.7, "failed before the 0.7 s budget");
    ck_assert_msg(strstr(e.message, "retry budget 0.7 s"), "%s", e.message);
    ember_client_close(c);
    o.retry_budget_ms = 0;
    c = ember_client_open(&o, &e);
    ck_assert_int_eq(ember_pull(c, "t", &k, 1, row, DIM, 0, &e), EMBER_UNAVAILABLE);
    ck_assert_msg(!strstr(e.message, "retry budget"), "%s", e.message);
    ember_client_close(c);
    setenv("EMBER_RETRY_BUDGET", "0", 1);
    unsetenv("EMBER_RETRY_QUIET");
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (eh_skip_without_gpu("test_retry_budget"))
        return EH_EXIT_SKIP;
    Suite *s = suite_create("retry_budget");
    TCase *tc = tcase_create("retry_budget");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, budget_options_checked);
    tcase_add_test(tc, other_errors_not_retried);
    tcase_add_test(tc, never_returns_fails_after_budget);
    tcase_add_test(tc, kill_and_restart_within_budget);
    tcase_add_test(tc, sigstop_bounded_by_attempt_deadline);
    tcase_add_test(tc, push_retried_across_restart);
    tcase_add_test(tc, close_while_waiting_returns_promptly);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

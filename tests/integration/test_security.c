/*
 * test_security.c — TLS, mutual TLS and the worker/admin roles against real
 * ember-server processes, through libember (issue 7, "Security").
 *
 * Certificates are made at test time with `openssl` in a temporary directory: a
 * CA, a server certificate for 127.0.0.1/localhost, client certificates with
 * CNs worker-1, admin-1 and stranger, and a second, unrelated CA. Servers are
 * started here (not by the harness, whose readiness probe speaks plaintext): the
 * test waits for their "event=listening" log line.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/rpc.h"
#include "ember/ember.h"
#include "ember/v1/ember.pb-c.h"
#include "harness.h"

static char dir[256];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "command failed (%d): %s", rc, cmd);
}

static const char *path(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* ca NAME; cert NAME CN CA [SAN] */
static void make_ca(const char *name)
{
    sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
       "-keyout %s.key -out %s.pem -days 2 -subj /CN=%s >/dev/null 2>&1",
       dir, name, name, name);
}

static void make_cert(const char *name, const char *cn, const char *ca, const char *san)
{
    sh("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
       "-keyout %s.key -out %s.csr -subj /CN=%s >/dev/null 2>&1 && "
       "printf 'subjectAltName=%s\\n' > %s.ext && "
       "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days 2 "
       "-extfile %s.ext -out %s.pem >/dev/null 2>&1",
       dir, name, name, cn, san, name, name, ca, ca, name, name);
}

static void setup_certs(void)
{
    if (dir[0])
        return;
    snprintf(dir, sizeof dir, "%s/ember-test-security.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    make_ca("ca");
    make_ca("wrongca");
    make_cert("server", "ember-server", "ca", "IP:127.0.0.1,DNS:localhost");
    make_cert("worker", "worker-1", "ca", "DNS:worker-1.jobs");
    make_cert("admin", "admin-1", "ca", "DNS:admin-1.ops");
    make_cert("stranger", "stranger", "ca", "DNS:stranger");
    make_cert("wrongclient", "admin-1", "wrongca", "DNS:admin-1.ops");
    sh("printf 'w0rker-secret\\n' > %s/worker.token && printf 'adm1n-secret' > %s/admin.token",
       dir, dir);
    sh("printf 'not-the-token\\n' > %s/bad.token", dir);
}

typedef struct srv {
    pid_t pid;
    char addr[64];
    char log[512];
} srv;

/* Starts ember-server with `flags` (NULL-terminated) and env "K=V" pairs. */
static void start(srv *s, const char *const *flags, const char *const *env)
{
    int port = sp_free_port();
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", port);
    snprintf(s->log, sizeof s->log, "%s/server-%d.log", dir, port);
    const char *argv[48];
    int n = 0;
    argv[n++] = EMBER_SERVER_BIN;
    argv[n++] = "--listen";
    argv[n++] = s->addr;
    argv[n++] = "--threads";
    argv[n++] = "2";
    argv[n++] = "--backend";
    argv[n++] = "cpu";
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    for (int i = 0; flags && flags[i] && n < 46; i++)
        argv[n++] = flags[i];
    argv[n] = NULL;
    /* its own group, killed with this test: a failed check leaves no server behind */
    s->pid = sp_spawn(argv, env, s->log, SP_LOG_TRUNCATE | SP_OWN_GROUP);
    ck_assert_int_ge(s->pid, 0);
    for (int i = 0; i < 200; i++) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "grep -qs event=listening %s", s->log);
        if (system(cmd) == 0)
            return;
        if (sp_exited(s->pid, NULL) == 1) {
            s->pid = 0;
            break;
        }
        usleep(50000);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cat %s >&2", s->log);
    (void)!system(cmd);
    ck_abort_msg("ember-server did not start");
}

static void stop(srv *s)
{
    if (s->pid > 0)
        sp_stop(s->pid, SIGKILL, 30.0, NULL);
    s->pid = 0;
}

static int log_has(const srv *s, const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -q -- '%s' %s", what, s->log);
    return system(cmd) == 0;
}

/* Lines of the server's log holding `what`. */
static int log_count(const srv *s, const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -c -- '%s' %s", what, s->log);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

typedef struct copts {
    const char *ca, *cert, *key, *token, *token_file;
} copts;

static ember_client *open_client(const srv *s, copts o)
{
    ember_client_options co;
    ember_client_options_init(&co);
    co.shards = s->addr;
    co.timeout_ms = 3000;
    co.max_retries = 1;
    co.tls_ca = o.ca;
    co.tls_cert = o.cert;
    co.tls_key = o.key;
    co.token = o.token;
    co.token_file = o.token_file;
    ember_error e;
    ember_client *c = ember_client_open(&co, &e);
    ck_assert_msg(c != NULL, "open: %s", e.message);
    return c;
}

/* Creates table t (if missing) and does a pull and a push: returns the first
 * failing status. */
static int create(ember_client *c, const char *t, ember_error *e)
{
    ember_table_spec spec;
    ember_table_spec_init(&spec);
    spec.dim = 4;
    spec.capacity_per_shard = 1024;
    return ember_create_table(c, t, &spec, 1, e);
}

static int pull_push(ember_client *c, const char *t, ember_error *e)
{
    uint64_t keys[3] = {1, 2, 3};
    float out[12], g[12];
    for (int i = 0; i < 12; i++)
        g[i] = 0.5f;
    int rc = ember_pull(c, t, keys, 3, out, 4, EMBER_PULL_INSERT, e);
    if (!rc)
        rc = ember_push(c, t, keys, 3, g, 4, e);
    return rc;
}

static int table_exists(ember_client *c, const char *t)
{
    ember_table_info info;
    ember_error e;
    return ember_describe_table(c, t, &info, &e) == 0;
}

START_TEST(tls_serves_and_refuses_plaintext_and_wrong_ca)
{
    setup_certs();
    srv s = {0};
    const char *flags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                           NULL};
    start(&s, flags, NULL);
    ck_assert(log_has(&s, "tls=on"));
    ember_error e;

    ember_client *c = open_client(&s, (copts){.ca = path("ca.pem")});
    ck_assert_msg(create(c, "t", &e) == 0, "TLS create: %s", e.message);
    ck_assert_msg(pull_push(c, "t", &e) == 0, "TLS pull/push: %s", e.message);
    ember_client_close(c);

    c = open_client(&s, (copts){0}); /* plaintext to a TLS listener */
    int rc = pull_push(c, "t", &e);
    ck_assert_msg(rc == EMBER_UNAVAILABLE, "plaintext: %d %s", rc, e.message);
    ember_client_close(c);

    c = open_client(&s, (copts){.ca = path("wrongca.pem")});
    rc = pull_push(c, "t", &e);
    ck_assert_msg(rc == EMBER_UNAVAILABLE, "wrong CA: %d %s", rc, e.message);
    ember_client_close(c);
    stop(&s);
}
END_TEST

START_TEST(mtls_requires_a_client_certificate_of_the_ca)
{
    setup_certs();
    srv s = {0};
    const char *flags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                           "--tls-client-ca", path("ca.pem"), NULL};
    start(&s, flags, NULL);
    ck_assert(log_has(&s, "tls=mutual"));
    ember_error e;

    ember_client *c = open_client(&s, (copts){.ca = path("ca.pem")}); /* no client cert */
    int rc = create(c, "t", &e);
    ck_assert_msg(rc == EMBER_UNAVAILABLE, "no client cert: %d %s", rc, e.message);
    ember_client_close(c);

    c = open_client(&s, (copts){.ca = path("ca.pem"), .cert = path("wrongclient.pem"),
                                .key = path("wrongclient.key")});
    rc = create(c, "t", &e);
    ck_assert_msg(rc == EMBER_UNAVAILABLE, "client cert of another CA: %d %s", rc, e.message);
    ember_client_close(c);

    c = open_client(&s, (copts){.ca = path("ca.pem"), .cert = path("worker.pem"),
                                .key = path("worker.key")});
    ck_assert_msg(create(c, "t", &e) == 0, "mTLS create: %s", e.message);
    ck_assert_msg(pull_push(c, "t", &e) == 0, "mTLS pull/push: %s", e.message);
    ember_client_close(c);
    stop(&s);
}
END_TEST

/* The ServerInfo refusal counters, asked with the admin token. */
static void refusals(const srv *s, uint64_t *unauth, uint64_t *denied)
{
    ember_rpc_channel_options o;
    ember_rpc_channel_options_init(&o);
    o.token = "adm1n-secret";
    ember_error e;
    grpc_channel *ch = ember_rpc_channel_open(s->addr, &o, &e);
    ck_assert_ptr_nonnull(ch);
    uint8_t *resp = NULL;
    size_t len = 0;
    int rc = ember_rpc_unary(ch, "/ember.v1.Admin/ServerInfo", "", 0, 3000, &resp, &len, &e);
    ck_assert_msg(rc == 0, "ServerInfo: %s", e.message);
    Ember__V1__ServerInfoResponse *r = ember__v1__server_info_response__unpack(NULL, len, resp);
    ck_assert_ptr_nonnull(r);
    ck_assert(r->auth);
    *unauth = r->refused_unauthenticated;
    *denied = r->refused_permission_denied;
    ember__v1__server_info_response__free_unpacked(r, NULL);
    free(resp);
    ember_rpc_channel_close(ch);
}

START_TEST(worker_token_cannot_drop_admin_token_can)
{
    setup_certs();
    srv s = {0};
    const char *flags[] = {"--worker-token-file", path("worker.token"), NULL};
    const char *env[] = {"EMBER_ADMIN_TOKEN=adm1n-secret", NULL};
    start(&s, flags, env);
    ck_assert(log_has(&s, "auth=on"));
    ember_error e;

    ember_client *admin = open_client(&s, (copts){.token_file = path("admin.token")});
    ck_assert_msg(create(admin, "t", &e) == 0, "admin create: %s", e.message);

    ember_client *worker = open_client(&s, (copts){.token = "w0rker-secret"});
    ck_assert_msg(pull_push(worker, "t", &e) == 0, "worker pull/push: %s", e.message);
    int rc = ember_drop_table(worker, "t", 0, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED, "worker drop: %d %s", rc, e.message);
    ck_assert(table_exists(admin, "t"));
    rc = create(worker, "u", &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED, "worker create: %d %s", rc, e.message);

    ember_client *none = open_client(&s, (copts){0});
    rc = pull_push(none, "t", &e);
    ck_assert_msg(rc == EMBER_UNAUTHENTICATED, "no token pull: %d %s", rc, e.message);
    rc = ember_drop_table(none, "t", 0, &e);
    ck_assert_msg(rc == EMBER_UNAUTHENTICATED, "no token drop: %d %s", rc, e.message);
    ember_client_close(none);

    ember_client *bad = open_client(&s, (copts){.token_file = path("bad.token")});
    rc = pull_push(bad, "t", &e);
    ck_assert_msg(rc == EMBER_UNAUTHENTICATED, "wrong token: %d %s", rc, e.message);
    ember_client_close(bad);
    ck_assert(table_exists(admin, "t"));

    /* probes need no credentials */
    eh_client *probe = eh_client_open(s.addr);
    ck_assert_int_eq(eh_health_serving(probe, 3000), 1);
    eh_client_close(probe);

    uint64_t unauth, denied;
    refusals(&s, &unauth, &denied);
    ck_assert_uint_ge(unauth, 3);
    ck_assert_uint_eq(denied, 2);
    ck_assert(log_has(&s, "event=refused method=/ember.v1.Admin/DropTable code=PERMISSION_DENIED"));
    /* each refusal logged once (at debug), not again as a call line */
    ck_assert_int_eq(log_count(&s, "code=PERMISSION_DENIED"), 2);

    ck_assert_msg(pull_push(admin, "t", &e) == 0, "admin pull/push: %s", e.message);
    ck_assert_msg(ember_drop_table(admin, "t", 0, &e) == 0, "admin drop: %s", e.message);
    ck_assert(!table_exists(admin, "t"));
    ember_client_close(worker);
    ember_client_close(admin);
    stop(&s);
}
END_TEST

/* The reader role (issue 17): an inference client's token may pull with the
 * serving flag and nothing else; each refusal is PERMISSION_DENIED naming the
 * role needed, and changes nothing. */
START_TEST(reader_token_serves_only)
{
    setup_certs();
    sh("printf 'r3ader-secret\\n' > %s/reader.token", dir);
    srv s = {0};
    const char *flags[] = {"--worker-token-file", path("worker.token"), "--admin-token-file",
                           path("admin.token"), "--reader-token-file", path("reader.token"),
                           NULL};
    start(&s, flags, NULL);
    ember_error e;
    ember_client *admin = open_client(&s, (copts){.token = "adm1n-secret"});
    ck_assert_msg(create(admin, "t", &e) == 0, "admin create: %s", e.message);
    uint64_t keys[2] = {11, 12};
    float rows[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ck_assert_msg(ember_push_mode_values(admin, "t", keys, 2, rows, 4,
                                         EMBER_PUSH_INSERT_OR_ASSIGN, &e) == 0,
                  "admin write: %s", e.message);

    ember_client *reader = open_client(&s, (copts){.token_file = path("reader.token")});
    float out[8] = {0};
    ck_assert_msg(ember_pull(reader, "t", keys, 2, out, 4, EMBER_PULL_SERVE, &e) == 0,
                  "reader serving pull: %s", e.message);
    ck_assert_mem_eq(out, rows, sizeof rows);
    uint64_t missing = 99;
    ck_assert_msg(ember_pull(reader, "t", &missing, 1, out, 4, EMBER_PULL_SERVE, &e) == 0,
                  "reader serving pull of a missing key: %s", e.message);

    int rc = ember_pull(reader, "t", &missing, 1, out, 4, EMBER_PULL_INSERT, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED && strstr(e.message, "insert_missing") &&
                      strstr(e.message, "needs the worker role") &&
                      strstr(e.message, "reader role"),
                  "reader inserting pull: %d %s", rc, e.message);
    float g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    rc = ember_push(reader, "t", keys, 2, g, 4, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED && strstr(e.message, "needs the worker role"),
                  "reader push: %d %s", rc, e.message);
    rc = ember_push_pull(reader, "t", keys, 2, g, keys, 2, out, 4, EMBER_PULL_SERVE, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED, "reader push_pull: %d %s", rc, e.message);
    rc = ember_drop_table(reader, "t", 0, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED && strstr(e.message, "needs the admin role"),
                  "reader drop: %d %s", rc, e.message);

    /* nothing changed: two rows, as written */
    ember_table_info info;
    ck_assert_msg(ember_describe_table(admin, "t", &info, &e) == 0, "%s", e.message);
    ck_assert_uint_eq(info.size, 2);
    ck_assert_msg(ember_pull(admin, "t", keys, 2, out, 4, EMBER_PULL_SERVE, &e) == 0, "%s",
                  e.message);
    ck_assert_mem_eq(out, rows, sizeof rows);
    uint64_t unauth, denied;
    refusals(&s, &unauth, &denied);
    ck_assert_uint_eq(denied, 4);

    /* the worker still inserts */
    ember_client *worker = open_client(&s, (copts){.token = "w0rker-secret"});
    ck_assert_msg(ember_pull(worker, "t", &missing, 1, out, 4, EMBER_PULL_INSERT, &e) == 0,
                  "worker inserting pull: %s", e.message);
    ember_client_close(worker);
    ember_client_close(reader);
    ember_client_close(admin);
    stop(&s);

    /* a reader token equal to a writer's would let a reader write: refused at start */
    char *outp = NULL;
    const char *a[] = {"--listen", "127.0.0.1:0", "--backend", "cpu", "--worker-token-file",
                       path("worker.token"), "--reader-token-file", path("worker.token"), NULL};
    int st = eh_run_server_cmd(a, &outp, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0 && strstr(outp, "reader token"),
                  "same reader and worker token: %s", outp);
    free(outp);
}
END_TEST

START_TEST(mtls_identity_decides_the_role)
{
    setup_certs();
    srv s = {0};
    const char *flags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                           "--tls-client-ca", path("ca.pem"), "--worker-identities",
                           "worker-1, other", "--admin-identities", "admin-1.ops", NULL};
    start(&s, flags, NULL);
    ember_error e;
    copts base = {.ca = path("ca.pem")};

    copts a = base;
    a.cert = path("admin.pem"), a.key = path("admin.key"); /* listed by its SAN */
    ember_client *admin = open_client(&s, a);
    ck_assert_msg(create(admin, "t", &e) == 0, "admin create: %s", e.message);

    copts w = base;
    w.cert = path("worker.pem"), w.key = path("worker.key"); /* listed by its CN */
    ember_client *worker = open_client(&s, w);
    ck_assert_msg(pull_push(worker, "t", &e) == 0, "worker pull/push: %s", e.message);
    int rc = ember_drop_table(worker, "t", 0, &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED, "worker drop: %d %s", rc, e.message);
    ck_assert(table_exists(admin, "t"));

    copts x = base;
    x.cert = path("stranger.pem"), x.key = path("stranger.key"); /* valid, not listed */
    ember_client *stranger = open_client(&s, x);
    rc = pull_push(stranger, "t", &e);
    ck_assert_msg(rc == EMBER_UNAUTHENTICATED, "stranger: %d %s", rc, e.message);
    ember_client_close(stranger);

    ck_assert_msg(ember_drop_table(admin, "t", 0, &e) == 0, "admin drop: %s", e.message);
    ember_client_close(worker);
    ember_client_close(admin);
    stop(&s);
}
END_TEST

/* A certificate listed in --reader-identities serves, and only that. */
START_TEST(mtls_reader_identity_serves_only)
{
    setup_certs();
    srv s = {0};
    ember_error e;
    int rc;
    copts base = {.ca = path("ca.pem")};
    copts a = base;
    a.cert = path("admin.pem"), a.key = path("admin.key");
    copts x = base;
    x.cert = path("stranger.pem"), x.key = path("stranger.key");
    ember_client *admin;
    const char *rflags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                            "--tls-client-ca", path("ca.pem"), "--admin-identities",
                            "admin-1.ops", "--reader-identities", "stranger", NULL};
    start(&s, rflags, NULL);
    admin = open_client(&s, a);
    ck_assert_msg(create(admin, "t", &e) == 0, "admin create: %s", e.message);
    uint64_t k = 5;
    float row[4];
    ck_assert_msg(ember_pull(admin, "t", &k, 1, row, 4, EMBER_PULL_INSERT, &e) == 0, "%s",
                  e.message);
    ember_client *reader = open_client(&s, x);
    ck_assert_msg(ember_pull(reader, "t", &k, 1, row, 4, EMBER_PULL_SERVE, &e) == 0,
                  "listed reader serving pull: %s", e.message);
    rc = pull_push(reader, "t", &e);
    ck_assert_msg(rc == EMBER_PERMISSION_DENIED && strstr(e.message, "reader role"),
                  "listed reader training pull: %d %s", rc, e.message);
    ember_client_close(reader);
    ember_client_close(admin);
    stop(&s);
}
END_TEST

/* Runs emberctl with `args` (a shell fragment); its stdout+stderr into out. */
static int ctl(char *out, size_t cap, const char *env, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", env, EMBERCTL_BIN, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(tokens_over_mutual_tls_with_emberctl)
{
    setup_certs();
    srv s = {0};
    const char *flags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                           "--tls-client-ca", path("ca.pem"), "--worker-token-file",
                           path("worker.token"), "--admin-token-file", path("admin.token"),
                           NULL};
    start(&s, flags, NULL);
    ember_error e;
    /* libember: TLS, a client certificate and a token at once; the token decides */
    ember_client *w = open_client(&s, (copts){.ca = path("ca.pem"), .cert = path("admin.pem"),
                                              .key = path("admin.key"),
                                              .token = "w0rker-secret"});
    ck_assert_int_eq(create(w, "t", &e), EMBER_PERMISSION_DENIED);
    ember_client_close(w);

    char out[8192], tls[2048], env[2048];
    snprintf(tls, sizeof tls, "--shards %s --tls-ca %s --tls-cert %s --tls-key %s", s.addr,
             path("ca.pem"), path("stranger.pem"), path("stranger.key"));
    char args[4096];
    snprintf(args, sizeof args, "%s --token-file %s create t --dim 4 --capacity 1024", tls,
             path("admin.token"));
    int rc = ctl(out, sizeof out, "", args);
    ck_assert_msg(rc == 0, "emberctl create as admin: %d %s", rc, out);
    snprintf(args, sizeof args, "%s --token-file %s drop t", tls, path("worker.token"));
    rc = ctl(out, sizeof out, "", args);
    ck_assert_msg(rc == 1 && strstr(out, "PERMISSION_DENIED"), "emberctl drop as worker: %d %s",
                  rc, out);
    snprintf(args, sizeof args, "%s tables", tls);
    rc = ctl(out, sizeof out, "", args);
    ck_assert_msg(rc == 1 && strstr(out, "UNAUTHENTICATED"), "emberctl without token: %d %s",
                  rc, out);
    snprintf(args, sizeof args, "--shards %s tables", s.addr);
    rc = ctl(out, sizeof out, "", args);
    ck_assert_msg(rc == 1 && strstr(out, "UNAVAILABLE"), "emberctl plaintext: %d %s", rc, out);
    /* the same from the environment */
    snprintf(env, sizeof env,
             "EMBER_TLS_CA=%s EMBER_TLS_CERT=%s EMBER_TLS_KEY=%s EMBER_TOKEN=adm1n-secret",
             path("ca.pem"), path("worker.pem"), path("worker.key"));
    snprintf(args, sizeof args, "--shards %s drop t", s.addr);
    rc = ctl(out, sizeof out, env, args);
    ck_assert_msg(rc == 0, "emberctl drop as admin from the environment: %d %s", rc, out);
    snprintf(args, sizeof args, "--shards %s --json info", s.addr);
    rc = ctl(out, sizeof out, env, args);
    ck_assert_msg(rc == 0 && strstr(out, "\"tls\":\"mutual\"") &&
                      strstr(out, "\"refused_permission_denied\":2") &&
                      strstr(out, "\"refused_unauthenticated\":1"),
                  "emberctl info: %d %s", rc, out);
    stop(&s);
}
END_TEST

/* A follower reaches a mutual-TLS leader with --replica-tls-ca and its own
 * certificate, which the leader's --admin-identities names; it copies the
 * leader's rows and serves them over its own TLS. A follower whose certificate
 * the leader does not list copies nothing. */
START_TEST(follower_over_mutual_tls)
{
    setup_certs();
    srv l = {0}, f = {0}, x = {0};
    const char *lflags[] = {"--tls-cert", path("server.pem"), "--tls-key", path("server.key"),
                            "--tls-client-ca", path("ca.pem"), "--admin-identities",
                            "admin-1.ops, ember-server", NULL};
    start(&l, lflags, NULL);
    copts a = {.ca = path("ca.pem"), .cert = path("admin.pem"), .key = path("admin.key")};
    ember_client *admin = open_client(&l, a);
    ember_error e;
    ck_assert_msg(create(admin, "rt", &e) == 0, "create: %s", e.message);
    ck_assert_msg(pull_push(admin, "rt", &e) == 0, "pull/push: %s", e.message);

    char of[96];
    snprintf(of, sizeof of, "--replica-of=%s", l.addr);
    const char *fflags[] = {"--tls-cert",       path("server.pem"), "--tls-key",
                            path("server.key"), "--tls-client-ca", path("ca.pem"),
                            "--admin-identities", "admin-1.ops", "--replica-tls-ca",
                            path("ca.pem"),     of,                NULL};
    start(&f, fflags, NULL);
    ember_client *fa = open_client(&f, a);
    uint64_t keys[3] = {1, 2, 3};
    float lv[12], fv[12];
    uint8_t found[3] = {0, 0, 0};
    ember_pull_options po;
    ember_pull_options_init(&po);
    po.flags = EMBER_PULL_SERVE;
    ck_assert_int_eq(ember_pull_opts(admin, "rt", keys, 3, lv, 4, &po, &e), 0);
    po.found = found;
    int copied = 0;
    for (int i = 0; i < 200 && !copied; i++) {
        int rc = ember_pull_opts(fa, "rt", keys, 3, fv, 4, &po, &e);
        copied = rc == 0 && found[0] && found[1] && found[2] && !memcmp(lv, fv, sizeof lv);
        if (!copied)
            usleep(50000);
    }
    ck_assert_msg(copied, "the follower over TLS did not copy the leader's rows");
    ck_assert(log_has(&f, "event=leader_reachable"));

    /* a follower the leader does not name as admin: refused, copies nothing */
    const char *xflags[] = {"--tls-cert",       path("stranger.pem"), "--tls-key",
                            path("stranger.key"), "--replica-tls-ca", path("ca.pem"),
                            of,                 NULL};
    start(&x, xflags, NULL);
    for (int i = 0; i < 100 && !log_has(&x, "event=leader_unreachable"); i++)
        usleep(50000);
    ck_assert(log_has(&x, "event=leader_unreachable"));
    ck_assert(!log_has(&x, "event=follower_table_created"));
    ember_client_close(fa);
    ember_client_close(admin);
    stop(&x);
    stop(&f);
    stop(&l);
}
END_TEST

START_TEST(bad_security_settings_stop_the_start)
{
    setup_certs();
    char *out = NULL;
    const char *a1[] = {"--tls-cert", path("server.pem"), NULL};
    int st = eh_run_server_cmd(a1, &out, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "cert without key: %s", out);
    ck_assert_ptr_nonnull(strstr(out, "--tls-key"));
    free(out);
    const char *a2[] = {"--listen", "127.0.0.1:0", "--backend", "cpu",
                        "--worker-token-file", path("missing.token"), NULL};
    st = eh_run_server_cmd(a2, &out, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "missing token file: %s", out);
    ck_assert_ptr_nonnull(strstr(out, "missing.token"));
    free(out);
    const char *a3[] = {"--admin-identities", "admin-1", NULL};
    st = eh_run_server_cmd(a3, &out, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "identities without mTLS: %s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("security");
    TCase *tc = tcase_create("security");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tls_serves_and_refuses_plaintext_and_wrong_ca);
    tcase_add_test(tc, mtls_requires_a_client_certificate_of_the_ca);
    tcase_add_test(tc, worker_token_cannot_drop_admin_token_can);
    tcase_add_test(tc, mtls_identity_decides_the_role);
    tcase_add_test(tc, reader_token_serves_only);
    tcase_add_test(tc, mtls_reader_identity_serves_only);
    tcase_add_test(tc, tokens_over_mutual_tls_with_emberctl);
    tcase_add_test(tc, bad_security_settings_stop_the_start);
    tcase_add_test(tc, follower_over_mutual_tls);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (dir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        (void)!system(cmd);
    }
    return failed ? 1 : 0;
}

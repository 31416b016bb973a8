/*
 * test_auth.c — server/auth.c without a network: tokens read from files and the
 * environment, the constant-time compare, which role a method needs, identity
 * lists, and the status srv_auth_check_role gives each kind of bearer metadata.
 * (Certificates and real calls are integration.security's.)
 *
 * auth.c keeps its settings in one process-wide struct; Check runs each test in
 * its own process, and every test sets up what it uses, so they do not leak.
 */
#define _POSIX_C_SOURCE 200809L

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/log.h"
#include "storage/status.h"
#include "test_util.h"

#define SHARD_PULL "/ember.v1.Shard/Pull"
#define ADMIN_DROP "/ember.v1.Admin/DropTable"
#define HEALTH "/grpc.health.v1.Health/Check"

/* srv_auth_setup keeps pointers into its config: one that outlives each test. */
static srv_config cfg;
static char files[4][256];
static int n_files;

static void reset(void)
{
    memset(&cfg, 0, sizeof cfg);
    unsetenv("EMBER_WORKER_TOKEN");
    unsetenv("EMBER_ADMIN_TOKEN");
}

/* A temp file holding `len` bytes of `text`; its path (removed at teardown). */
static const char *temp_file(const char *text, size_t len)
{
    ck_assert_int_lt(n_files, 4);
    char *path = files[n_files++];
    snprintf(path, sizeof files[0], "%s/ember-test-auth.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void teardown(void)
{
    for (int i = 0; i < n_files; i++)
        unlink(files[i]);
    n_files = 0;
}

static int setup_ok(void)
{
    char msg[512] = "";
    int rc = srv_auth_setup(&cfg, msg, sizeof msg);
    ck_assert_msg(rc == 0, "srv_auth_setup: %s", msg);
    return rc;
}

/* srv_auth_setup's failure message (it must fail). */
static const char *setup_fails(void)
{
    static char msg[512];
    msg[0] = '\0';
    ck_assert_int_eq(srv_auth_setup(&cfg, msg, sizeof msg), -1);
    ck_assert(msg[0] != '\0');
    return msg;
}

/* srv_auth_check_role of `method`, needing the role srv_auth_required_role
 * gives it, with an authorization value (NULL: no such
 * metadata), after any `other` metadata. No certificate: the call is NULL, which
 * only the certificate path (no token and an identity list) would touch. */
static int check_auth(const char *method, const char *authorization)
{
    grpc_metadata m[2];
    grpc_metadata_array md = {.count = 0, .capacity = 2, .metadata = m};
    memset(m, 0, sizeof m);
    m[md.count].key = grpc_slice_from_static_string("x-request-id");
    m[md.count++].value = grpc_slice_from_static_string("42");
    if (authorization) {
        m[md.count].key = grpc_slice_from_static_string("authorization");
        m[md.count++].value = grpc_slice_from_copied_string(authorization);
    }
    char msg[512] = "";
    int rc = srv_auth_check_role(NULL, &md, method, srv_auth_required_role(method), msg,
                                 sizeof msg);
    ck_assert_msg((rc == 0) == (msg[0] == '\0'), "rc %d, msg '%s'", rc, msg);
    if (authorization)
        grpc_slice_unref(m[1].value);
    return rc;
}

/* Both roles by token, from files. */
static void two_tokens(void)
{
    reset();
    snprintf(cfg.worker_token_file, sizeof cfg.worker_token_file, "%s",
             temp_file("w-secret\n", 9));
    snprintf(cfg.admin_token_file, sizeof cfg.admin_token_file, "%s",
             temp_file("a-secret\r\n", 10));
    setup_ok();
    ck_assert_int_eq(srv_auth_enabled(), 1);
}

/* ---- tokens: files and the environment ----------------------------------------------- */

START_TEST(token_file_trailing_newline_stripped)
{
    two_tokens();
    /* the file's "\n" / "\r\n" is not part of the token */
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer w-secret"), 0);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer a-secret"), 0);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer w-secret\n"), EMBER_UNAUTHENTICATED);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer a-secret\r\n"), EMBER_UNAUTHENTICATED);
}
END_TEST

START_TEST(token_from_environment)
{
    reset();
    setenv("EMBER_WORKER_TOKEN", "env-worker \t\n", 1);  /* trailing blanks stripped too */
    setenv("EMBER_ADMIN_TOKEN", "env-admin", 1);
    setup_ok();
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer env-worker"), 0);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer env-admin"), 0);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer env-worker"), EMBER_PERMISSION_DENIED);
}
END_TEST

START_TEST(token_file_beats_environment)
{
    reset();
    setenv("EMBER_WORKER_TOKEN", "from-env", 1);
    snprintf(cfg.worker_token_file, sizeof cfg.worker_token_file, "%s",
             temp_file("from-file", 9));
    setup_ok();
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer from-file"), 0);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer from-env"), EMBER_UNAUTHENTICATED);
}
END_TEST

START_TEST(token_file_missing_refused_by_name)
{
    reset();
    snprintf(cfg.admin_token_file, sizeof cfg.admin_token_file, "/nonexistent/ember-admin.tok");
    const char *msg = setup_fails();
    ck_assert_msg(strstr(msg, "admin token") && strstr(msg, "/nonexistent/ember-admin.tok"),
                  "%s", msg);
}
END_TEST

START_TEST(token_file_empty_refused)
{
    static const char *const bodies[] = {"", "\n", " \r\n\t"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        reset();
        const char *path = temp_file(bodies[i], strlen(bodies[i]));
        snprintf(cfg.worker_token_file, sizeof cfg.worker_token_file, "%s", path);
        const char *msg = setup_fails();
        ck_assert_msg(strstr(msg, "worker token") && strstr(msg, path) && strstr(msg, "empty"),
                      "%s", msg);
        teardown();
    }
}
END_TEST

START_TEST(token_env_empty_refused)
{
    reset();
    setenv("EMBER_ADMIN_TOKEN", "\n", 1);
    const char *msg = setup_fails();
    ck_assert_msg(strstr(msg, "EMBER_ADMIN_TOKEN") && strstr(msg, "empty"), "%s", msg);
}
END_TEST

START_TEST(token_file_too_long_refused)
{
    reset();
    size_t n = 5000;
    char *big = malloc(n);
    memset(big, 'x', n);
    snprintf(cfg.worker_token_file, sizeof cfg.worker_token_file, "%s", temp_file(big, n));
    free(big);
    const char *msg = setup_fails();
    ck_assert_msg(strstr(msg, "larger than"), "%s", msg);
}
END_TEST

START_TEST(same_token_for_both_roles_refused)
{
    reset();
    snprintf(cfg.worker_token_file, sizeof cfg.worker_token_file, "%s", temp_file("same\n", 5));
    setenv("EMBER_ADMIN_TOKEN", "same", 1);  /* the same after stripping */
    const char *msg = setup_fails();
    ck_assert_msg(strstr(msg, "the same"), "%s", msg);
}
END_TEST

START_TEST(nothing_set_is_off)
{
    reset();
    setup_ok();
    ck_assert_int_eq(srv_auth_enabled(), 0);
    /* off: everything runs, with or without credentials */
    ck_assert_int_eq(check_auth(ADMIN_DROP, NULL), 0);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer anything"), 0);
    ck_assert_int_eq(check_auth("/x.Unknown/Method", "Basic Zm9v"), 0);
}
END_TEST

/* ---- the constant-time compare ----------------------------------------------------------- */

/* Exact-size copies, so that a sanitizer build catches any read past an end. */
static int equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *x = malloc(la ? la : 1), *y = malloc(lb ? lb : 1);
    memcpy(x, a, la);
    memcpy(y, b, lb);
    int r = srv_auth_equal(x, la, y, lb);
    free(x);
    free(y);
    return r;
}

START_TEST(equal_compare)
{
    ck_assert_int_eq(equal("secret", "secret"), 1);
    ck_assert_int_eq(equal("secret", "secreT"), 0);   /* last byte */
    ck_assert_int_eq(equal("secret", "Secret"), 0);   /* first byte */
    ck_assert_int_eq(equal("secret", "secre"), 0);    /* a prefix */
    ck_assert_int_eq(equal("secre", "secret"), 0);
    ck_assert_int_eq(equal("ab", "abab"), 0);         /* b wraps over a: still unequal */
    ck_assert_int_eq(equal("abab", "ab"), 0);
    ck_assert_int_eq(equal("", "secret"), 0);         /* an unset token matches nothing */
    ck_assert_int_eq(equal("secret", ""), 0);
    ck_assert_int_eq(equal("", ""), 0);               /* not even another unset one */
    /* bytes, not C strings: an embedded NUL counts */
    ck_assert_int_eq(srv_auth_equal("a\0b", 3, "a\0c", 3), 0);
    ck_assert_int_eq(srv_auth_equal("a\0b", 3, "a\0b", 3), 1);
}
END_TEST

/* ---- roles of methods ----------------------------------------------------------------------- */

START_TEST(method_roles)
{
    ck_assert_int_eq(srv_auth_required_role(HEALTH), SRV_ROLE_NONE);
    ck_assert_int_eq(srv_auth_required_role("/grpc.health.v1.Health/Watch"), SRV_ROLE_NONE);
    ck_assert_int_eq(srv_auth_required_role(SHARD_PULL), SRV_ROLE_READER); /* serving pulls */
    ck_assert_int_eq(srv_auth_required_role("/ember.v1.Shard/Push"), SRV_ROLE_WORKER);
    ck_assert_int_eq(srv_auth_required_role("/ember.v1.Shard/PushPull"), SRV_ROLE_WORKER);
    ck_assert_int_eq(srv_auth_required_role(ADMIN_DROP), SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role("/ember.v1.Admin/GetStats"), SRV_ROLE_ADMIN);
    /* anything else needs the most: unknown services, look-alike prefixes */
    ck_assert_int_eq(srv_auth_required_role("/ember.v1.ShardX/Pull"), SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role("/ember.v1.Shard"), SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role("ember.v1.Shard/Pull"), SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role("/grpc.health.v1.HealthX/Check"), SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role("/grpc.reflection.v1.ServerReflection/Info"),
                     SRV_ROLE_ADMIN);
    ck_assert_int_eq(srv_auth_required_role(""), SRV_ROLE_ADMIN);
}
END_TEST

/* ---- identity lists ----------------------------------------------------------------------------- */

static int listed(const char *list, const char *name)
{
    return srv_auth_listed(list, name, strlen(name));
}

START_TEST(identity_lists)
{
    ck_assert_int_eq(listed("trainer", "trainer"), 1);
    ck_assert_int_eq(listed("a,trainer,b", "trainer"), 1);
    ck_assert_int_eq(listed("a, trainer ,b", "trainer"), 1);      /* spaces trimmed */
    ck_assert_int_eq(listed("  trainer  ", "trainer"), 1);
    ck_assert_int_eq(listed(",,a,,,trainer,", "trainer"), 1);     /* empty entries skipped */
    ck_assert_int_eq(listed("a,b", "trainer"), 0);
    ck_assert_int_eq(listed("trainer-2", "trainer"), 0);          /* no prefixes */
    ck_assert_int_eq(listed("trainer", "trainer-2"), 0);
    ck_assert_int_eq(listed("train", "trainer"), 0);
    ck_assert_int_eq(listed("Trainer", "trainer"), 0);            /* case matters */
    ck_assert_int_eq(listed("ml worker,b", "ml worker"), 1);      /* inner spaces kept */
    ck_assert_int_eq(listed("ml worker", "mlworker"), 0);
    ck_assert_int_eq(listed("", "trainer"), 0);
    ck_assert_int_eq(listed(" , ,", ""), 0);                      /* empty never listed */
    ck_assert_int_eq(listed("a,,b", ""), 0);
    ck_assert_int_eq(listed("", ""), 0);
    /* a name is bytes with a length (a certificate's), not a C string */
    ck_assert_int_eq(srv_auth_listed("a,trainer", "trainerXYZ", 7), 1);
    ck_assert_int_eq(srv_auth_listed("a,train", "trainer", 7), 0);
}
END_TEST

/* ---- which status each call gets ------------------------------------------------------------------ */

START_TEST(codes_by_role_and_method)
{
    two_tokens();
    /* the worker: Shard yes, Admin and unknown methods denied (it proved a role) */
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer w-secret"), 0);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer w-secret"), EMBER_PERMISSION_DENIED);
    ck_assert_int_eq(check_auth("/x.Unknown/M", "Bearer w-secret"), EMBER_PERMISSION_DENIED);
    /* the admin: everything */
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer a-secret"), 0);
    ck_assert_int_eq(check_auth(ADMIN_DROP, "Bearer a-secret"), 0);
    ck_assert_int_eq(check_auth("/x.Unknown/M", "Bearer a-secret"), 0);
    /* Health: open to all, even a wrong or malformed credential */
    ck_assert_int_eq(check_auth(HEALTH, NULL), 0);
    ck_assert_int_eq(check_auth(HEALTH, "Bearer wrong"), 0);
    ck_assert_int_eq(check_auth(HEALTH, "Basic Zm9v"), 0);
}
END_TEST

START_TEST(unauthenticated_cases)
{
    two_tokens();
    static const char *const bad[] = {
        NULL,                   /* no credential, no certificate lists */
        "Bearer wrong",         /* a wrong token */
        "Bearer w-secre",       /* a prefix of the worker's */
        "Bearer w-secret2",     /* the worker's and more */
        "Bearer  w-secret",     /* the space is part of the token */
        "Bearer ",              /* nothing after the scheme */
        "Bearer",
        "",
        "Basic dy1zZWNyZXQ=",   /* another scheme */
        "w-secret",             /* no scheme */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(check_auth(SHARD_PULL, bad[i]) == EMBER_UNAUTHENTICATED, "'%s' on Shard",
                      bad[i] ? bad[i] : "(none)");
        /* unauthenticated comes first: not PERMISSION_DENIED on Admin either */
        ck_assert_msg(check_auth(ADMIN_DROP, bad[i]) == EMBER_UNAUTHENTICATED, "'%s' on Admin",
                      bad[i] ? bad[i] : "(none)");
    }
    /* the scheme's case does not matter (RFC 7235) */
    ck_assert_int_eq(check_auth(SHARD_PULL, "bearer w-secret"), 0);
    ck_assert_int_eq(check_auth(SHARD_PULL, "BEARER w-secret"), 0);
}
END_TEST

START_TEST(only_one_role_configured)
{
    /* admin token only: no worker role exists, and an empty token proves nothing */
    reset();
    setenv("EMBER_ADMIN_TOKEN", "a-only", 1);
    setup_ok();
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer a-only"), 0);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer "), EMBER_UNAUTHENTICATED);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer x"), EMBER_UNAUTHENTICATED);
}
END_TEST

START_TEST(identity_lists_alone_turn_auth_on)
{
    /* identities only: a bearer token is checked as a token, with no fall back to
     * the certificate, and none is valid */
    reset();
    snprintf(cfg.worker_identities, sizeof cfg.worker_identities, "trainer");
    setup_ok();
    ck_assert_int_eq(srv_auth_enabled(), 1);
    ck_assert_int_eq(check_auth(SHARD_PULL, "Bearer trainer"), EMBER_UNAUTHENTICATED);
    ck_assert_int_eq(check_auth(HEALTH, NULL), 0);
}
END_TEST

START_TEST(refusals_counted)
{
    two_tokens();
    uint64_t u0, d0, u1, d1;
    srv_auth_counts(&u0, &d0);
    check_auth(SHARD_PULL, NULL);
    check_auth(SHARD_PULL, "Bearer wrong");
    check_auth(ADMIN_DROP, "Basic x");
    check_auth(ADMIN_DROP, "Bearer w-secret");
    check_auth(SHARD_PULL, "Bearer w-secret");  /* allowed: not counted */
    check_auth(HEALTH, NULL);                   /* open: not counted */
    srv_auth_counts(&u1, &d1);
    ck_assert_uint_eq(u1 - u0, 3);
    ck_assert_uint_eq(d1 - d0, 1);
}
END_TEST

START_TEST(refusal_log_never_holds_the_token)
{
    two_tokens();
    srv_log_set_level(SRV_LOG_DEBUG);
    const char *path = temp_file("", 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *f = freopen(path, "w", stderr);
    ck_assert_ptr_nonnull(f);
    check_auth(SHARD_PULL, "Bearer guessed-token-xyz");
    check_auth(ADMIN_DROP, "Bearer w-secret");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char log[4096] = "";
    FILE *in = fopen(path, "r");
    ck_assert_ptr_nonnull(in);
    size_t n = fread(log, 1, sizeof log - 1, in);
    fclose(in);
    log[n] = '\0';
    ck_assert_msg(strstr(log, "refused") && strstr(log, "UNAUTHENTICATED") &&
                      strstr(log, "PERMISSION_DENIED") && strstr(log, "worker-token"),
                  "%s", log);
    ck_assert_msg(!strstr(log, "guessed-token-xyz") && !strstr(log, "w-secret"), "%s", log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, token_file_trailing_newline_stripped);
    tcase_add_test(tc, token_from_environment);
    tcase_add_test(tc, token_file_beats_environment);
    tcase_add_test(tc, token_file_missing_refused_by_name);
    tcase_add_test(tc, token_file_empty_refused);
    tcase_add_test(tc, token_env_empty_refused);
    tcase_add_test(tc, token_file_too_long_refused);
    tcase_add_test(tc, same_token_for_both_roles_refused);
    tcase_add_test(tc, nothing_set_is_off);
    tcase_add_test(tc, equal_compare);
    tcase_add_test(tc, method_roles);
    tcase_add_test(tc, identity_lists);
    tcase_add_test(tc, codes_by_role_and_method);
    tcase_add_test(tc, unauthenticated_cases);
    tcase_add_test(tc, only_one_role_configured);
    tcase_add_test(tc, identity_lists_alone_turn_auth_on);
    tcase_add_test(tc, refusals_counted);
    tcase_add_test(tc, refusal_log_never_holds_the_token);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

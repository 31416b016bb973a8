/* test_client_shards.c — where libember finds its shards (ember.h,
 * ember_client_options.shards): the TF_CONFIG reader (client/tfconfig.h) on
 * good, odd and broken documents, and the precedence of options.shards >
 * options.shard_pattern > EMBER_SHARDS > TF_CONFIG > EMBER_SHARD_PATTERN through
 * ember_client_open. Connections are lazy, so no server is needed: the test
 * reads back the shard list and its source. */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/tfconfig.h"
#include "ember/ember.h"

static void free_list(char **a, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

/* Parses `json`, expects success and exactly the `want` addresses. */
static void expect_ps(const char *json, const char *const *want, unsigned nwant)
{
    char **a = (char **)1;
    unsigned n = 99;
    ember_error e;
    int rv = ember_tfconfig_ps(json, &a, &n, &e);
    ck_assert_msg(rv == 0, "refused %s: %s", json, e.message);
    ck_assert_msg(n == nwant, "%s: %u addresses, want %u", json, n, nwant);
    if (nwant == 0)
        ck_assert_ptr_null(a);
    for (unsigned i = 0; i < n; i++)
        ck_assert_str_eq(a[i], want[i]);
    free_list(a, n);
}

static void expect_bad(const char *json, const char *needle)
{
    char **a = (char **)1;
    unsigned n = 99;
    ember_error e;
    int rv = ember_tfconfig_ps(json, &a, &n, &e);
    ck_assert_msg(rv == EMBER_INVALID_ARGUMENT, "accepted %s (rv %d)", json, rv);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(a);
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(e.message, "TF_CONFIG") != NULL, "message: %s", e.message);
    if (needle)
        ck_assert_msg(strstr(e.message, needle) != NULL, "'%s' not in: %s", needle, e.message);
}

START_TEST(tfconfig_reads_cluster_ps_in_order)
{
    static const char *const two[] = {"ps0.job.svc:2222", "ps1.job.svc:2222"};
    expect_ps("{\"cluster\": {\"chief\": [\"c:1\"], \"worker\": [\"w0:1\", \"w1:1\"],"
              " \"ps\": [\"ps0.job.svc:2222\", \"ps1.job.svc:2222\"]},"
              " \"task\": {\"type\": \"worker\", \"index\": 1}, \"environment\": \"cloud\"}",
              two, 2);
    /* Key order does not matter; whitespace of every kind; other value types. */
    expect_ps("\n\t{ \"task\" : {\"type\":\"ps\",\"index\":0,\"x\":[1,-2.5e3,true,false,null,{}]},"
              "\r\n\"cluster\":{\"ps\":[ \"ps0.job.svc:2222\" ,\"ps1.job.svc:2222\" ],"
              "\"worker\":[]} } \n",
              two, 2);
    static const char *const v6[] = {"[::1]:7070", "10.0.0.2:7070", "unix:/tmp/s"};
    expect_ps("{\"cluster\":{\"ps\":[\"[::1]:7070\",\"10.0.0.2:7070\",\"unix:/tmp/s\"]}}", v6, 3);
}
END_TEST

START_TEST(tfconfig_without_ps_names_no_shards)
{
    expect_ps("{}", NULL, 0);
    expect_ps("{\"task\": {\"type\": \"worker\", \"index\": 0}}", NULL, 0);
    expect_ps("{\"cluster\": {\"worker\": [\"w:1\"]}}", NULL, 0);
    expect_ps("{\"cluster\": {\"ps\": []}}", NULL, 0);
    /* "ps" outside cluster is not the ps job. */
    expect_ps("{\"ps\": [\"a:1\"], \"task\": {\"cluster\": {\"ps\": [\"b:1\"]}}}", NULL, 0);
}
END_TEST

START_TEST(tfconfig_last_key_wins)
{
    static const char *const b[] = {"b:1"};
    expect_ps("{\"cluster\":{\"ps\":[\"a:1\",\"a:2\"],\"ps\":[\"b:1\"]}}", b, 1);
    /* A second cluster replaces the first, ps list and all. */
    expect_ps("{\"cluster\":{\"ps\":[\"a:1\"]},\"cluster\":{\"worker\":[\"w:1\"]}}", NULL, 0);
    expect_ps("{\"cluster\":{\"ps\":[\"a:1\"]},\"cluster\":{\"ps\":[\"b:1\"]}}", b, 1);
}
END_TEST

START_TEST(tfconfig_unescapes_strings)
{
    /* \/ is "/", \u0041 is "A", and a surrogate pair is one 4-byte character. */
    static const char *const want[] = {"dns:///A.svc:1", "h\xc3\xa9:2", "x\xf0\x9f\x98\x80:3"};
    expect_ps("{\"cl\\u0075ster\":{\"ps\":[\"dns:\\/\\/\\/\\u0041.svc:1\",\"h\\u00e9:2\","
              "\"x\\ud83d\\ude00:3\"]}}",
              want, 3);
}
END_TEST

START_TEST(tfconfig_refuses_malformed_documents)
{
    expect_bad("", "not a JSON object");
    expect_bad("   ", "not a JSON object");
    expect_bad("[\"a:1\"]", "not a JSON object");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1\"]}", "expected ',' or '}'");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1\",]}}", "non-string");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1\" \"b:1\"]}}", "expected ',' or ']'");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1]}}", "unterminated string");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1\"]}} x", "trailing");
    expect_bad("{'cluster': {}}", "expected a string");
    expect_bad("{\"cluster\" {}}", "expected ':'");
    expect_bad("{\"a\": tru}", "not JSON");
    expect_bad("{\"a\": 01}", "expected ',' or '}'");
    expect_bad("{\"a\": 1.}", "malformed number");
    expect_bad("{\"a\": -}", "malformed number");
    expect_bad("{\"a\": \"x\\q\"}", "bad escape");
    expect_bad("{\"a\": \"x\\u12\"}", "bad escape");
    expect_bad("{\"a\": \"\\ud800x\"}", "bad escape");   /* lone high surrogate */
    expect_bad("{\"a\": \"\\udc00\"}", "bad escape");    /* lone low surrogate */
    expect_bad("{\"a\": \"tab\there\"}", "control character");
    expect_bad("{\"a\": ", "unexpected end");
    /* cluster.ps must be a list of non-empty strings. */
    expect_bad("{\"cluster\": [\"a:1\"]}", "cluster is not an object");
    expect_bad("{\"cluster\": {\"ps\": \"a:1\"}}", "cluster.ps is not a list");
    expect_bad("{\"cluster\": {\"ps\": {\"0\": \"a:1\"}}}", "map of task indices");
    expect_bad("{\"cluster\": {\"ps\": [\"a:1\", 2]}}", "non-string");
    expect_bad("{\"cluster\": {\"ps\": [\"\"]}}", "empty address");
    expect_bad("{\"cluster\": {\"ps\": [\"a\\u0000b:1\"]}}", "bad escape");
    /* Deep nesting is refused, not a stack overflow. */
    char deep[400];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 100; i++)
        deep[k++] = '[';
    deep[k] = '\0';
    expect_bad(deep, "nested too deep");
    /* The message gives the byte offset of the fault. */
    char **a;
    unsigned n;
    ember_error e;
    ember_tfconfig_ps("{\"cluster\": 7}", &a, &n, &e);
    ck_assert_ptr_nonnull(strstr(e.message, "at byte 12"));
    ck_assert_int_eq(ember_tfconfig_ps(NULL, &a, &n, &e), EMBER_INVALID_ARGUMENT);
    /* err may be NULL. */
    ck_assert_int_eq(ember_tfconfig_ps("{", &a, &n, NULL), EMBER_INVALID_ARGUMENT);
}
END_TEST

/* ---- precedence through ember_client_open ---------------------------------- */

static void clear_env(void)
{
    unsetenv("EMBER_SHARDS");
    unsetenv("EMBER_SHARD_PATTERN");
    unsetenv("EMBER_SHARD_COUNT");
    unsetenv("TF_CONFIG");
}

/* Opens with `o`, expects `source` and the comma-joined `addrs`. */
static void expect_open(const ember_client_options *o, const char *source, const char *addrs)
{
    ember_error e;
    ember_client *c = ember_client_open(o, &e);
    ck_assert_msg(c != NULL, "open failed: %s", e.message);
    ck_assert_str_eq(ember_client_shard_source(c), source);
    char got[512] = "";
    for (unsigned i = 0; i < ember_client_shard_count(c); i++) {
        if (i)
            strcat(got, ",");
        strcat(got, ember_client_shard_address(c, i));
    }
    ck_assert_str_eq(got, addrs);
    ember_client_close(c);
}

static const char tf_two[] =
    "{\"cluster\":{\"worker\":[\"w:1\"],\"ps\":[\"ps0:2222\",\"ps1:2222\"]},"
    "\"task\":{\"type\":\"worker\",\"index\":0}}";

START_TEST(precedence_options_then_ember_shards_then_tf_config_then_pattern)
{
    clear_env();
    ember_client_options o;
    ember_client_options_init(&o);
    setenv("EMBER_SHARD_PATTERN", "ember-{i}.ember:7070", 1);
    setenv("EMBER_SHARD_COUNT", "3", 1);
    expect_open(&o, "EMBER_SHARD_PATTERN", "ember-0.ember:7070,ember-1.ember:7070,ember-2.ember:7070");

    setenv("TF_CONFIG", tf_two, 1);
    expect_open(&o, "TF_CONFIG", "ps0:2222,ps1:2222");

    setenv("EMBER_SHARDS", "e0:1,e1:1,e2:1", 1);
    expect_open(&o, "EMBER_SHARDS", "e0:1,e1:1,e2:1");

    o.shard_pattern = "opt-{i}:9";
    o.shard_count = 2;
    expect_open(&o, "options.shard_pattern", "opt-0:9,opt-1:9");

    o.shards = "x:1";
    expect_open(&o, "options.shards", "x:1");

    /* An empty variable counts as unset. */
    o.shards = NULL;
    o.shard_pattern = NULL;
    o.shard_count = 0;
    setenv("EMBER_SHARDS", "", 1);
    expect_open(&o, "TF_CONFIG", "ps0:2222,ps1:2222");
    setenv("TF_CONFIG", "", 1);
    expect_open(&o, "EMBER_SHARD_PATTERN", "ember-0.ember:7070,ember-1.ember:7070,ember-2.ember:7070");
    clear_env();
}
END_TEST

START_TEST(tf_config_without_ps_falls_through)
{
    clear_env();
    ember_client_options o;
    ember_client_options_init(&o);
    ember_error e;
    /* A worker-only cluster (e.g. MultiWorkerMirroredStrategy) names no shards. */
    setenv("TF_CONFIG", "{\"cluster\":{\"worker\":[\"w0:1\",\"w1:1\"]},\"task\":{\"type\":"
                        "\"worker\",\"index\":0}}", 1);
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(e.message, "TF_CONFIG is set but lists no ps tasks"), "%s", e.message);
    setenv("EMBER_SHARD_PATTERN", "s{i}:1", 1);
    o.shard_count = 2;
    expect_open(&o, "EMBER_SHARD_PATTERN", "s0:1,s1:1");
    clear_env();
}
END_TEST

START_TEST(tf_config_errors_fail_the_open)
{
    clear_env();
    ember_client_options o;
    ember_client_options_init(&o);
    ember_error e;
    /* Malformed: the open fails, naming TF_CONFIG, rather than guessing. */
    setenv("TF_CONFIG", "{\"cluster\":{\"ps\":[\"a:1\"]", 1);
    setenv("EMBER_SHARD_PATTERN", "s{i}:1", 1);
    setenv("EMBER_SHARD_COUNT", "2", 1);
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.message, "TF_CONFIG"));
    /* ... but only when it is the source in use: EMBER_SHARDS wins unread. */
    setenv("EMBER_SHARDS", "a:1", 1);
    expect_open(&o, "EMBER_SHARDS", "a:1");
    unsetenv("EMBER_SHARDS");
    /* Addresses are checked as any list's are: repeated, malformed. */
    setenv("TF_CONFIG", "{\"cluster\":{\"ps\":[\"a:1\",\"a:1\"]}}", 1);
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.shard, 1);
    setenv("TF_CONFIG", "{\"cluster\":{\"ps\":[\"a:1\",\"nohost\"]}}", 1);
    ck_assert_ptr_null(ember_client_open(&o, &e));
    ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
    ck_assert_int_eq(e.shard, 1);
    clear_env();
}
END_TEST

START_TEST(shard_source_of_null_client)
{
    ck_assert_ptr_null(ember_client_shard_source(NULL));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_shards");
    TCase *tc = tcase_create("shards");
    tcase_add_test(tc, tfconfig_reads_cluster_ps_in_order);
    tcase_add_test(tc, tfconfig_without_ps_names_no_shards);
    tcase_add_test(tc, tfconfig_last_key_wins);
    tcase_add_test(tc, tfconfig_unescapes_strings);
    tcase_add_test(tc, tfconfig_refuses_malformed_documents);
    tcase_add_test(tc, precedence_options_then_ember_shards_then_tf_config_then_pattern);
    tcase_add_test(tc, tf_config_without_ps_falls_through);
    tcase_add_test(tc, tf_config_errors_fail_the_open);
    tcase_add_test(tc, shard_source_of_null_client);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

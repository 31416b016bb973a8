/* test_client_shared.c — links against libember.so (not .a): every function of
 * ember.h must be exported (client/libember.map), and the shared library must
 * work on its own. A function missing from the map fails this link. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ember/ember.h"

/* Looks up both versions of the init function `name`, runs its EMBER_1 one on
 * buf[size] (first filled with 0xab) and checks that it wrote nothing past
 * `first`, the struct's first layout; *v11 gets the EMBER_1.1 one. 0 or 1. */
static int first_layout_only(const char *name, void *buf, size_t size, size_t first,
                             void (**v11)(void *))
{
    void (*v1)(void *) = (void (*)(void *))dlvsym(RTLD_DEFAULT, name, "EMBER_1");
    *v11 = (void (*)(void *))dlvsym(RTLD_DEFAULT, name, "EMBER_1.1");
    if (!v1 || !*v11) {
        fprintf(stderr, "%s@EMBER_1 or @EMBER_1.1 missing\n", name);
        return 1;
    }
    memset(buf, 0xab, size);
    v1(buf);
    const unsigned char *tail = (const unsigned char *)buf + first;
    for (size_t i = 0; i < size - first; i++)
        if (tail[i] != 0xab) {
            fprintf(stderr, "%s@EMBER_1 wrote past byte %zu\n", name, first);
            return 1;
        }
    return 0;
}

/* ember_table_spec_init@EMBER_1, as a program linked before hbm_bytes calls it:
 * it must fill no byte past the first layout's end (backend), and set
 * struct_size to that size. The default version fills all. 0 or 1. */
static int spec_init_versions(void)
{
    size_t first = offsetof(ember_table_spec, backend) + sizeof(const char *);
    ember_table_spec s;
    void (*v11)(void *);
    if (first_layout_only("ember_table_spec_init", &s, sizeof s, first, &v11))
        return 1;
    if (s.struct_size != first || s.dim != 0 || s.optimizer.lr <= 0.0f) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1: struct_size %u, lr %g\n",
                s.struct_size, (double)s.optimizer.lr);
        return 1;
    }
    memset(&s, 0xab, sizeof s);
    v11(&s);
    if (s.struct_size != sizeof s || s.hbm_bytes != 0 || s.backend != NULL) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1.1: struct_size %u\n", s.struct_size);
        return 1;
    }
    return 0;
}

/* ember_client_options_init@EMBER_1, as a program linked before the retry
 * budget calls it: it fills no byte past token_file, and its struct_size opens
 * a client (which takes the default budget for the fields past it). The
 * default version fills all, the budget at EMBER_RETRY_BUDGET_DEFAULT. */
static int options_init_versions(void)
{
    size_t first = offsetof(ember_client_options, token_file) + sizeof(const char *);
    ember_client_options o;
    void (*v11)(void *);
    if (first_layout_only("ember_client_options_init", &o, sizeof o, first, &v11))
        return 1;
    if (o.struct_size != first || o.shards != NULL || o.timeout_ms != 0) {
        fprintf(stderr, "ember_client_options_init@EMBER_1: struct_size %u\n", o.struct_size);
        return 1;
    }
    o.shards = "127.0.0.1:1";
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    if (!c) {
        fprintf(stderr, "open with the first layout: %s\n", e.message);
        return 1;
    }
    ember_client_close(c);
    memset(&o, 0xab, sizeof o);
    v11(&o);
    if (o.struct_size != sizeof o || o.retry_budget_ms != EMBER_RETRY_BUDGET_DEFAULT ||
        o.shard_notice != NULL || o.shard_notice_arg != NULL) {
        fprintf(stderr, "ember_client_options_init@EMBER_1.1: struct_size %u, budget %d\n",
                o.struct_size, o.retry_budget_ms);
        return 1;
    }
    return 0;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    void (*const fns[])(void) = {
        (void (*)(void))ember_code_name,       (void (*)(void))ember_client_options_init,
        (void (*)(void))ember_client_open,     (void (*)(void))ember_client_close,
        (void (*)(void))ember_client_shard_count, (void (*)(void))ember_client_id,
        (void (*)(void))ember_client_shard_address, (void (*)(void))ember_shard_of,
        (void (*)(void))ember_pull,            (void (*)(void))ember_push,
        (void (*)(void))ember_push_mode_values, (void (*)(void))ember_push_pull,
        (void (*)(void))ember_pull_async,      (void (*)(void))ember_push_async,
        (void (*)(void))ember_wait,            (void (*)(void))ember_table_spec_init,
        (void (*)(void))ember_create_table,    (void (*)(void))ember_drop_table,
        (void (*)(void))ember_describe_table,  (void (*)(void))ember_save,
        (void (*)(void))ember_load,            (void (*)(void))ember_client_shard_source,
        (void (*)(void))ember_list_tables,     (void (*)(void))ember_set_ttl,
        (void (*)(void))ember_check_shards,    (void (*)(void))ember_client_cancel,
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!fns[i])
            return 1;
    if (spec_init_versions() || options_init_versions())
        return 1;
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = "127.0.0.1:1";
    o.timeout_ms = 300;
    o.retry_budget_ms = 0; /* the old retries, whatever EMBER_RETRY_BUDGET says */
    ember_error e;
    ember_client *c = ember_client_open(&o, &e);
    if (!c) {
        fprintf(stderr, "open: %s\n", e.message);
        return 1;
    }
    uint64_t k = 1;
    float v[2];
    int rv = ember_pull(c, "t", &k, 1, v, 2, 0, &e);
    ember_client_close(c);
    if (rv != EMBER_UNAVAILABLE && rv != EMBER_DEADLINE_EXCEEDED) {
        fprintf(stderr, "pull from a closed port: %d %s\n", rv, e.message);
        return 1;
    }
    /* With a budget: retried until it has passed, then UNAVAILABLE naming the
     * shard and the budget. */
    o.retry_budget_ms = 600;
    c = ember_client_open(&o, &e);
    if (!c) {
        fprintf(stderr, "open: %s\n", e.message);
        return 1;
    }
    double t0 = seconds();
    int rv2 = ember_pull(c, "t", &k, 1, v, 2, 0, &e);
    double took = seconds() - t0;
    ember_client_close(c);
    if (rv2 != EMBER_UNAVAILABLE || e.shard != 0 || took < 0.6 ||
        !strstr(e.message, "127.0.0.1:1") || !strstr(e.message, "retry budget 0.6 s")) {
        fprintf(stderr, "pull to a closed port, budget 0.6 s: %d after %.2f s: %s\n", rv2,
                took, e.message);
        return 1;
    }
    printf("libember.so: %zu functions, pull to a closed port: %s; with a 0.6 s budget: "
           "%s\n",
           sizeof fns / sizeof fns[0], ember_code_name(rv), e.message);
    return 0;
}

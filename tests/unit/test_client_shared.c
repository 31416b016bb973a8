/* test_client_shared.c — links against libember.so (not .a): every function of
 * ember.h must be exported (client/libember.map), and the shared library must
 * work on its own. A function missing from the map fails this link. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/ember.h"

/* ember_table_spec_init@EMBER_1, as a program linked before hbm_bytes calls it:
 * it must fill no byte past the first layout's end (backend), and set
 * struct_size to that size. The default version fills all. 0 or 1. */
static int spec_init_versions(void)
{
    typedef void (*init_fn)(ember_table_spec *);
    init_fn v1 = (init_fn)dlvsym(RTLD_DEFAULT, "ember_table_spec_init", "EMBER_1");
    init_fn v11 = (init_fn)dlvsym(RTLD_DEFAULT, "ember_table_spec_init", "EMBER_1.1");
    if (!v1 || !v11) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1 or @EMBER_1.1 missing\n");
        return 1;
    }
    size_t first = offsetof(ember_table_spec, backend) + sizeof(const char *);
    ember_table_spec s;
    memset(&s, 0xab, sizeof s);
    v1(&s);
    const unsigned char *tail = (const unsigned char *)&s + first;
    for (size_t i = 0; i < sizeof s - first; i++)
        if (tail[i] != 0xab) {
            fprintf(stderr, "ember_table_spec_init@EMBER_1 wrote past byte %zu\n", first);
            return 1;
        }
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
        (void (*)(void))ember_check_shards,
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!fns[i])
            return 1;
    if (spec_init_versions())
        return 1;
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = "127.0.0.1:1";
    o.timeout_ms = 300;
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
    printf("libember.so: %zu functions, pull to a closed port: %s\n",
           sizeof fns / sizeof fns[0], ember_code_name(rv));
    return 0;
}

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
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!fns[i])
            return 1;
    /* A program linked against ABI 1 (ember.h before ember_table_spec grew) gets
     * the init of its layout: it writes no byte past the struct it knows. */
    void (*init_1)(ember_table_spec *) =
        (void (*)(ember_table_spec *))dlvsym(RTLD_DEFAULT, "ember_table_spec_init", "EMBER_1");
    void (*init_1_1)(ember_table_spec *) =
        (void (*)(ember_table_spec *))dlvsym(RTLD_DEFAULT, "ember_table_spec_init", "EMBER_1.1");
    size_t first = offsetof(ember_table_spec, backend) + sizeof(const char *);
    unsigned char buf[sizeof(ember_table_spec) + 16];
    if (!init_1 || !init_1_1) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1 or @EMBER_1.1 is not exported\n");
        return 1;
    }
    memset(buf, 0xAB, sizeof buf);
    init_1((ember_table_spec *)(void *)buf);
    for (size_t i = first; i < sizeof buf; i++)
        if (buf[i] != 0xAB) {
            fprintf(stderr, "ember_table_spec_init@EMBER_1 wrote byte %zu (its struct has %zu)\n",
                    i, first);
            return 1;
        }
    if (((ember_table_spec *)(void *)buf)->struct_size != first) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1 set struct_size %u, not %zu\n",
                ((ember_table_spec *)(void *)buf)->struct_size, first);
        return 1;
    }
    memset(buf, 0xAB, sizeof buf);
    init_1_1((ember_table_spec *)(void *)buf);
    if (((ember_table_spec *)(void *)buf)->struct_size != sizeof(ember_table_spec) ||
        buf[sizeof(ember_table_spec)] != 0xAB) {
        fprintf(stderr, "ember_table_spec_init@EMBER_1.1 filled the wrong size\n");
        return 1;
    }
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

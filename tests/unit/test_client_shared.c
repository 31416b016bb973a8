/* test_client_shared.c — links against libember.so (not .a): every function of
 * ember.h must be exported (client/libember.map), and the shared library must
 * work on its own. A function missing from the map fails this link. */
#include <stdio.h>
#include <stdlib.h>

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
        (void (*)(void))ember_list_tables,
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!fns[i])
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

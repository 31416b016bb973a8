/* test_client_types.c — the vocabulary libember shares with storage
 * (<ember/types.h>) and the growable public structs, without a server: storage's
 * headers and ember.h in one file, one status-name table, one error record, and
 * struct_size as ember.h's "Growing structs" promises. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ember/ember.h"
#include "storage/hash.h"
#include "storage/init.h"
#include "storage/optim.h"
#include "storage/score.h"
#include "storage/status.h"

/* Nothing listens here: opening connects lazily, and every call below is
 * refused before anything is sent. */
#define NOWHERE "127.0.0.1:1"

START_TEST(one_vocabulary_for_both_layers)
{
    /* storage's math takes the enums libember's callers write */
    ck_assert_uint_eq(ember_optim_slot_floats(EMBER_OPTIM_ADAM, 4), 9);
    ck_assert_uint_eq(ember_optim_slot_floats(EMBER_OPTIM_SGD, 4), 0);
    ck_assert(ember_key_is_reserved(EMBER_KEY_RESERVED_MIN));
    ck_assert(!ember_key_is_reserved(EMBER_KEY_RESERVED_MIN - 1));
    ember_score_ctx sc = {.policy = EMBER_SCORE_LFU, .now_ns = 5, .epoch = 0};
    ck_assert_uint_eq(ember_score_next(&sc, 0, 1, 3, 0, 0), 3);
    ember_init_config ic = {.kind = EMBER_INIT_CONSTANT, .a = 0.5f, .b = 0};
    ck_assert_int_eq(ic.kind, 1);

    /* one name table: the exported ember_code_name is ember_status_name */
    for (int code = -1; code <= 17; code++)
        ck_assert_str_eq(ember_code_name(code), ember_status_name(code));
    ck_assert_str_eq(ember_status_name(EMBER_UNAUTHENTICATED), "UNAUTHENTICATED");

    /* one error record: set and clear leave no shard named */
    ember_error e;
    e.shard = 7;
    ck_assert_int_eq(ember_error_set(&e, EMBER_NOT_FOUND, "table %s", "t"), EMBER_NOT_FOUND);
    ck_assert_int_eq(e.code, EMBER_NOT_FOUND);
    ck_assert_int_eq(e.shard, -1);
    ck_assert_str_eq(e.message, "table t");
    ember_error_clear(&e);
    ck_assert_int_eq(e.code, EMBER_OK);
    ck_assert_int_eq(e.shard, -1);
    ck_assert_str_eq(e.message, "");
    ck_assert_int_eq(ember_error_set(NULL, EMBER_INTERNAL, "x"), EMBER_INTERNAL);
}
END_TEST

START_TEST(init_functions_set_struct_size)
{
    ember_client_options o;
    memset(&o, 0xab, sizeof o);
    ember_client_options_init(&o);
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ember_table_spec s;
    memset(&s, 0xab, sizeof s);
    ember_table_spec_init(&s);
    ck_assert_uint_eq(s.struct_size, sizeof s);
    ck_assert_int_eq(s.score_policy, EMBER_SCORE_LRU);
    ck_assert_int_eq(s.optimizer.kind, EMBER_OPTIM_SGD);
    ck_assert_int_eq(s.initializer.kind, EMBER_INIT_UNIFORM);
}
END_TEST

/* A client of one shard that is never reached. */
static ember_client *open_nowhere(void)
{
    ember_error e;
    ember_client_options o;
    ember_client_options_init(&o);
    o.shards = NOWHERE;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "%s", e.message);
    return c;
}

START_TEST(client_options_struct_size)
{
    ember_error e;
    ember_client_options o;
    ember_client_close(open_nowhere());

    /* a zeroed struct that no init touched reads as the first layout */
    memset(&o, 0, sizeof o);
    o.shards = NOWHERE;
    ember_client *c = ember_client_open(&o, &e);
    ck_assert_msg(c != NULL, "%s", e.message);
    ck_assert_str_eq(ember_client_shard_source(c), "options.shards");
    ember_client_close(c);

    /* a struct from a newer header, or a size no layout had: refused */
    const uint32_t bad[] = {(uint32_t)sizeof o + 8, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.struct_size = bad[i];
        ck_assert_ptr_null(ember_client_open(&o, &e));
        ck_assert_int_eq(e.code, EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(e.shard, -1);
        ck_assert_msg(strstr(e.message, "ember_client_options.struct_size"), "%s", e.message);
    }
}
END_TEST

START_TEST(table_spec_struct_size)
{
    ember_error e;
    ember_client *c = open_nowhere();

    ember_table_spec s;
    ember_table_spec_init(&s);
    s.dim = 8;
    s.capacity_per_shard = 1024;
    const uint32_t bad[] = {(uint32_t)sizeof s + 8, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s.struct_size = bad[i];
        ck_assert_int_eq(ember_create_table(c, "t", &s, 0, &e), EMBER_INVALID_ARGUMENT);
        ck_assert_int_eq(e.shard, -1);
        ck_assert_msg(strstr(e.message, "ember_table_spec.struct_size"), "%s", e.message);
    }

    /* zeroed: read as the first layout, whose dim 0 is what gets refused */
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(ember_create_table(c, "t", &s, 0, &e), EMBER_INVALID_ARGUMENT);
    ck_assert_msg(strstr(e.message, "dim and capacity_per_shard must be set"), "%s", e.message);
    ember_client_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("client_types");
    TCase *tc = tcase_create("types");
    tcase_add_test(tc, one_vocabulary_for_both_layers);
    tcase_add_test(tc, init_functions_set_struct_size);
    tcase_add_test(tc, client_options_struct_size);
    tcase_add_test(tc, table_spec_struct_size);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_table_caps.c — server/table_config.c's per-table memory caps
 * (--max-table-host-bytes, --max-table-hbm-bytes) on what ember_table_footprint
 * says a table will hold: each cap bounds its own kind of memory, to the byte,
 * and the refusal names the cap. The GPU backend's footprint is arithmetic, so
 * where CUDA is built its hybrid split is checked here too, without a GPU.
 */
#include <check.h>
#include <string.h>

#include "server/backend.h"
#include "storage/table.h"
#ifdef EMBER_HAVE_CUDA
#include "cuda/gpu_table.h"
#endif
#include "test_util.h"

static ember_table_config config(uint32_t dim, uint64_t capacity, uint64_t hbm_bytes)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = capacity;
    c.optim.kind = EMBER_OPTIM_ADAM;
    c.hbm_bytes = hbm_bytes;
    return c;
}

static void expect_refused(const ember_table_config *c, const ember_table_backend *be,
                           uint64_t host_cap, uint64_t hbm_cap, const char *flag)
{
    ember_error err;
    ck_assert_int_eq(srv_table_within_caps(c, be, host_cap, hbm_cap, &err),
                     EMBER_RESOURCE_EXHAUSTED);
    ck_assert_msg(strstr(err.message, flag), "'%s' lacks %s", err.message, flag);
}

START_TEST(cpu_table_host_cap_to_the_byte)
{
    ember_table_config c = config(8, 4096, 0);
    uint64_t host = 0, device = 1;
    ember_error err;
    ck_assert_int_eq(ember_table_footprint(&c, NULL, &host, &device, &err), EMBER_OK);
    ck_assert_uint_eq(device, 0);
    ck_assert_int_eq(srv_table_within_caps(&c, NULL, host, 0, &err), EMBER_OK);
    ck_assert_int_eq(srv_table_within_caps(&c, NULL, 0, 0, &err), EMBER_OK); /* no caps */
    expect_refused(&c, NULL, host - 1, 0, "--max-table-host-bytes");
    /* a cpu table holds no device memory: any hbm cap passes */
    ck_assert_int_eq(srv_table_within_caps(&c, NULL, 0, 1, &err), EMBER_OK);
}
END_TEST

START_TEST(bad_config_is_invalid_argument)
{
    ember_table_config c = config(0, 4096, 0);
    ember_error err;
    ck_assert_int_eq(srv_table_within_caps(&c, NULL, 1, 1, &err), EMBER_INVALID_ARGUMENT);
}
END_TEST

#ifdef EMBER_HAVE_CUDA
/* A hybrid table: rows past hbm_bytes live in pinned host memory, so the host
 * cap sees them and the hbm cap does not. */
START_TEST(gpu_hybrid_table_split_between_caps)
{
    const ember_table_backend *gpu = ember_table_gpu_backend();
    ember_table_config all = config(64, 1 << 16, 0), hybrid = config(64, 1 << 16, 1 << 20);
    uint64_t h_all, d_all, h_hyb, d_hyb;
    ember_error err;
    ck_assert_int_eq(ember_table_footprint(&all, gpu, &h_all, &d_all, &err), EMBER_OK);
    ck_assert_int_eq(ember_table_footprint(&hybrid, gpu, &h_hyb, &d_hyb, &err), EMBER_OK);
    /* the same rows, moved: what leaves the device arrives on the host */
    ck_assert_uint_gt(h_hyb, h_all);
    ck_assert_uint_lt(d_hyb, d_all);
    ck_assert_uint_eq(h_hyb - h_all, d_all - d_hyb);
    ck_assert_int_eq(srv_table_within_caps(&hybrid, gpu, h_hyb, d_hyb, &err), EMBER_OK);
    expect_refused(&hybrid, gpu, h_hyb - 1, 0, "--max-table-host-bytes");
    expect_refused(&hybrid, gpu, 0, d_hyb - 1, "--max-table-hbm-bytes");
    /* all in HBM: over a device cap the hybrid one fits */
    expect_refused(&all, gpu, 0, d_hyb, "--max-table-hbm-bytes");
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("table_caps");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, cpu_table_host_cap_to_the_byte);
    tcase_add_test(tc, bad_config_is_invalid_argument);
#ifdef EMBER_HAVE_CUDA
    tcase_add_test(tc, gpu_hybrid_table_split_between_caps);
#endif
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_cuda_device.c — cuda/device.h: device discovery never fails for want of a
 * GPU, and describes what it finds. Runs everywhere; the describe checks of a
 * real device run only where one is visible.
 */
#include <check.h>
#include <string.h>

#include "cuda/device.h"
#include "test_util.h"

START_TEST(count_is_ok_with_or_without_gpu)
{
    ember_error err;
    int n = -1;
    ck_assert_msg(ember_cuda_device_count(&n, &err) == EMBER_OK, "%s", err.message);
    ck_assert_int_ge(n, 0);
    ck_assert_int_eq(ember_cuda_device_count(NULL, &err), EMBER_INVALID_ARGUMENT);
}
END_TEST

START_TEST(describe_refuses_devices_that_are_not_there)
{
    ember_error err;
    char name[64];
    uint64_t total = 0;
    int n = 0;
    ck_assert_int_eq(ember_cuda_device_count(&n, &err), EMBER_OK);
    ck_assert_int_eq(ember_cuda_device_describe(-1, name, sizeof name, &total, NULL, &err),
                     EMBER_NOT_FOUND);
    ck_assert_int_eq(ember_cuda_device_describe(n, name, sizeof name, &total, NULL, &err),
                     EMBER_NOT_FOUND);
    ck_assert_int_eq(ember_cuda_device_describe(0, name, 0, NULL, NULL, &err),
                     EMBER_INVALID_ARGUMENT);
}
END_TEST

START_TEST(describe_a_visible_device)
{
    ember_error err;
    char name[8];
    uint64_t total = 0, free_b = 0;
    int n = 0;
    ck_assert_int_eq(ember_cuda_device_count(&n, &err), EMBER_OK);
    if (n == 0)
        return; /* nothing to describe here */
    /* a short buffer: truncated, still terminated */
    memset(name, 'x', sizeof name);
    ck_assert_msg(ember_cuda_device_describe(0, name, sizeof name, &total, &free_b, &err) ==
                      EMBER_OK, "%s", err.message);
    ck_assert_uint_lt(strlen(name), sizeof name);
    ck_assert_uint_gt(strlen(name), 0);
    ck_assert_uint_gt(total, 0);
    ck_assert_uint_gt(free_b, 0);
    ck_assert_uint_le(free_b, total);
    ck_assert_int_eq(ember_cuda_device_describe(0, NULL, 0, NULL, NULL, &err), EMBER_OK);
}
END_TEST

static Suite *cuda_device_suite(void)
{
    Suite *s = suite_create("cuda_device");
    TCase *tc = tcase_create("device");
    tcase_add_test(tc, count_is_ok_with_or_without_gpu);
    tcase_add_test(tc, describe_refuses_devices_that_are_not_there);
    tcase_add_test(tc, describe_a_visible_device);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(cuda_device_suite());
}

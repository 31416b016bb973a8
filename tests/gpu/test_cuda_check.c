/*
 * test_cuda_check.c — EMBER_CUDA_CHECK (cuda/cuda_check.h): how CUDA errors become
 * ember statuses. It only formats error codes, so it runs with or without a GPU.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "test_util.h"

/* Runs `e` through the macro the way library code does. */
static int check_error(cudaError_t e, ember_error *err, int *line)
{
    *line = __LINE__ + 1;
    return EMBER_CUDA_CHECK(e, err);
}

START_TEST(success_is_ok_and_leaves_err_alone)
{
    ember_error err;
    int line;
    ember_error_set(&err, EMBER_ABORTED, "before");
    ck_assert_int_eq(check_error(cudaSuccess, &err, &line), EMBER_OK);
    ck_assert_int_eq(err.code, EMBER_ABORTED);
    ck_assert_str_eq(err.message, "before");
}
END_TEST

START_TEST(out_of_memory_is_resource_exhausted)
{
    ember_error err;
    int line;
    char where[64];
    ck_assert_int_eq(check_error(cudaErrorMemoryAllocation, &err, &line),
                     EMBER_RESOURCE_EXHAUSTED);
    ck_assert_int_eq(err.code, EMBER_RESOURCE_EXHAUSTED);
    ck_assert_msg(strncmp(err.message, "cudaErrorMemoryAllocation", 25) == 0, "%s",
                  err.message);
    /* file:line of the check, the path cut to its last two components */
    snprintf(where, sizeof where, " at gpu/test_cuda_check.c:%d", line);
    ck_assert_msg(strstr(err.message, where) != NULL, "'%s' lacks '%s'", err.message, where);
}
END_TEST

START_TEST(no_gpu_is_unavailable)
{
    static const cudaError_t none[] = {cudaErrorNoDevice, cudaErrorInsufficientDriver,
                                       cudaErrorStubLibrary};
    ember_error err;
    int line;
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        ck_assert_int_eq(check_error(none[i], &err, &line), EMBER_UNAVAILABLE);
        ck_assert_msg(strstr(err.message, cudaGetErrorName(none[i])) == err.message, "%s",
                      err.message);
    }
}
END_TEST

START_TEST(other_errors_are_internal)
{
    static const cudaError_t other[] = {cudaErrorInvalidValue, cudaErrorIllegalAddress,
                                        cudaErrorLaunchFailure, cudaErrorNoKernelImageForDevice,
                                        cudaErrorUnknown};
    ember_error err;
    int line;
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        ck_assert_int_eq(check_error(other[i], &err, &line), EMBER_INTERNAL);
        ck_assert_int_eq(err.code, EMBER_INTERNAL);
        ck_assert_msg(strstr(err.message, cudaGetErrorName(other[i])) == err.message, "%s",
                      err.message);
    }
}
END_TEST

START_TEST(null_err_still_returns_the_status)
{
    ck_assert_int_eq(EMBER_CUDA_CHECK(cudaErrorMemoryAllocation, NULL), EMBER_RESOURCE_EXHAUSTED);
    ck_assert_int_eq(EMBER_CUDA_CHECK(cudaErrorInvalidValue, NULL), EMBER_INTERNAL);
}
END_TEST

/* A real runtime call: succeeds where a GPU is, and says UNAVAILABLE (not
 * INTERNAL) where there is none or no driver. */
START_TEST(real_call_without_gpu_is_unavailable)
{
    ember_error err;
    void *p = NULL;
    int n = 0;
    int rc = EMBER_CUDA_CHECK(cudaMalloc(&p, 4096), &err);
    cudaError_t counted = cudaGetDeviceCount(&n);
    if (counted == cudaSuccess && n > 0) {
        ck_assert_msg(rc == EMBER_OK, "%s", err.message);
        ck_assert_int_eq(EMBER_CUDA_CHECK(cudaFree(p), &err), EMBER_OK);
    } else {
        ck_assert_msg(rc == EMBER_UNAVAILABLE, "rc %d: %s", rc, err.message);
    }
}
END_TEST

static Suite *cuda_check_suite(void)
{
    Suite *s = suite_create("cuda_check");
    TCase *tc = tcase_create("map");
    tcase_add_test(tc, success_is_ok_and_leaves_err_alone);
    tcase_add_test(tc, out_of_memory_is_resource_exhausted);
    tcase_add_test(tc, no_gpu_is_unavailable);
    tcase_add_test(tc, other_errors_are_internal);
    tcase_add_test(tc, null_err_still_returns_the_status);
    tcase_add_test(tc, real_call_without_gpu_is_unavailable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(cuda_check_suite());
}

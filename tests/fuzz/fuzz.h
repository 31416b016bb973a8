/*
 * fuzz.h — what the fuzz targets in tests/fuzz share.
 *
 * Each target is one LLVMFuzzerTestOneInput(). tests/fuzz/build.sh links it with
 * libFuzzer (clang -fsanitize=fuzzer,address,undefined) for fuzzing; the main
 * CMake build links it with replay.c instead (any compiler), which runs it over
 * the committed seed corpus and past crashes as a unit test.
 *
 * A target fails by FUZZ_CHECK, which prints what broke and aborts: libFuzzer
 * (and the replay test) then report the input. A decoder that refuses bad input
 * with a status is doing its job; a check fails only when a documented property
 * does not hold (a re-encoding that differs, a status outside the contract).
 */
#ifndef EMBER_FUZZ_H
#define EMBER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                          \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif /* EMBER_FUZZ_H */

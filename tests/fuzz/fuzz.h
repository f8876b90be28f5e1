/*
 * fuzz.h - fuzz targets for every decoder that reads bytes from outside.
 *
 * Each tests/fuzz/fuzz_*.c defines LLVMFuzzerTestOneInput and a seed (a valid
 * input). Built two ways:
 *   - default (any compiler): with standalone.c, a deterministic mutation
 *     driver run by ctest (under ASan+UBSan in CI): seeds, bit flips,
 *     truncations, splices and random bytes, FEDC_FUZZ_ITERS times (5000);
 *   - -DFEDC_LIBFUZZER=ON with clang: real coverage-guided libFuzzer binaries.
 */
#ifndef FEDC_FUZZ_H
#define FEDC_FUZZ_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* A valid input for the target (malloc'd; the driver frees it). */
void fuzz_seed(uint8_t **data, size_t *size);

#endif

/*
 * fuzz.h - fuzz targets for every decoder that reads bytes from outside.
 *
 * Each tests/fuzz/fuzz_*.c defines LLVMFuzzerTestOneInput and a seed (a valid
 * input). Built two ways:
 *   - default (any compiler): with standalone.c, a deterministic mutation
 *     driver run by ctest (under ASan+UBSan in CI): the target's regression
 *     inputs (tests/fuzz/corpus/<target>/), then the seed, bit flips,
 *     truncations, splices and random bytes, FEDC_FUZZ_ITERS times (default
 *     fuzz_iters: 5000 unless the target sets fewer because one input costs
 *     milliseconds);
 *   - -DFEDC_LIBFUZZER=ON with clang: real coverage-guided libFuzzer binaries
 *     (tests/fuzz/README.md: how to run them, and what each one covers).
 */
#ifndef FEDC_FUZZ_H
#define FEDC_FUZZ_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* A valid input for the target (malloc'd; the driver frees it). */
void fuzz_seed(uint8_t **data, size_t *size);
/* Mutations the standalone driver runs; a target may define its own
 * (standalone.c has the weak default). */
extern const long fuzz_iters;

#endif

/*
 * test_rng.c - common/rng.c gives the same stream on every architecture
 * (rng.h's promise: a simulation is reproducible bit for bit): known-answer
 * values of fc_rng_u64, fc_rng_below (including bounds past 2^32, where the
 * 128-bit product matters) and a shuffle, computed on x86-64; the same
 * numbers must come out on arm64 and armhf (CI runs this under qemu). And
 * the portable 64x64->128 multiply (armhf has no 128-bit type) against
 * known products and, where the compiler has one, the 128-bit type.
 */
#include <stdint.h>

#include "common/rng.h"
#include "tests/unit/check.h"

static void test_known_stream(void) {
  static const uint64_t u64s[] = {0x3049a2f8973040e9ull, 0xe023199f2154e8a3ull, 0x85dc18bd2eefe509ull,
                                  0x2a5efe533f4649adull};
  static const uint64_t bounds[] = {2, 3, 10, 1000, 60000, (1ull << 32) + 1, (1ull << 63) + 12345, UINT64_MAX};
  static const uint64_t below[] = {1ull, 2ull, 6ull, 273ull, 54496ull, 1391819333ull, 7212614527670679645ull,
                                   14029089160163861842ull};
  static const uint32_t shuffled[] = {2, 5, 9, 0, 7, 8, 3, 4, 1, 6};
  fc_rng r;
  fc_rng_seed(&r, 20240526);
  for (int i = 0; i < 4; i++) CHECK(fc_rng_u64(&r) == u64s[i]);
  for (int i = 0; i < 8; i++) CHECK(fc_rng_below(&r, bounds[i]) == below[i]);
  uint32_t a[10];
  for (uint32_t i = 0; i < 10; i++) a[i] = i;
  fc_rng_shuffle_u32(&r, a, 10);
  for (int i = 0; i < 10; i++) CHECK_EQ_INT(a[i], shuffled[i]);
  CHECK(fc_rng_below(&r, 1) == 0 && fc_rng_below(&r, 0) == 0);
}

static void test_mul_portable(void) {
  uint64_t hi, lo;
  fc_mul_u64_portable(UINT64_MAX, UINT64_MAX, &hi, &lo); /* (2^64-1)^2 = 2^128 - 2^65 + 1 */
  CHECK(hi == 0xfffffffffffffffeull && lo == 1);
  fc_mul_u64_portable(1ull << 32, 1ull << 32, &hi, &lo);
  CHECK(hi == 1 && lo == 0);
  fc_mul_u64_portable(0xffffffffull, 0xffffffffull, &hi, &lo);
  CHECK(hi == 0 && lo == 0xfffffffe00000001ull);
  /* Carries out of the middle column: 0xffffffff_ffffffff * 0x1_00000001. */
  fc_mul_u64_portable(UINT64_MAX, 0x100000001ull, &hi, &lo);
  CHECK(hi == 0x100000000ull && lo == 0xfffffffeffffffffull);
  fc_mul_u64_portable(0x123456789abcdef0ull, 0, &hi, &lo);
  CHECK(hi == 0 && lo == 0);
#ifdef __SIZEOF_INT128__
  fc_rng r;
  fc_rng_seed(&r, 7);
  int bad = 0;
  for (int i = 0; i < 100000; i++) {
    uint64_t a = fc_rng_u64(&r), b = fc_rng_u64(&r);
    if (i % 3 == 0) a >>= (unsigned)(i % 64); /* small and large operands */
    unsigned __int128 m = (unsigned __int128)a * b;
    fc_mul_u64_portable(a, b, &hi, &lo);
    bad += hi != (uint64_t)(m >> 64) || lo != (uint64_t)m;
  }
  CHECK_EQ_INT(bad, 0);
#endif
}

int main(void) {
  test_known_stream();
  test_mul_portable();
  return CHECK_DONE();
}

/*
 * rng.h - a small deterministic PRNG for data partitioning, shuffling and
 * weight init: xoshiro256** (Blackman & Vigna 2018) seeded via splitmix64.
 *
 * Not for secrets: mask seeds and keys come from crypto/. The point here is
 * that a given seed yields the same stream on every platform and build, so a
 * simulation (partition + init + shuffles) is reproducible bit for bit. Every
 * draw below consumes a fixed, documented number of u64s except the
 * rejection samplers (fc_rng_below, fc_rng_gamma), which are still
 * deterministic given the seed.
 */
#ifndef FEDC_COMMON_RNG_H
#define FEDC_COMMON_RNG_H

#include <stdint.h>

typedef struct fc_rng {
  uint64_t s[4];
} fc_rng;

/* Seed the state from one u64 (any value, including 0). */
void fc_rng_seed(fc_rng *r, uint64_t seed);
uint64_t fc_rng_u64(fc_rng *r);
/* The same step as fc_rng_u64, inline for per-element loops (SecAgg's
 * stochastic rounding draws one per model entry). */
static inline uint64_t fc_rng_next(fc_rng *r) {
  uint64_t *s = r->s;
  uint64_t x = s[1] * 5, t = s[1] << 17;
  uint64_t result = ((x << 7) | (x >> 57)) * 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return result;
}
/* fc_rng_uniform_double, inline: [0, 1) with 53 random bits, one step. */
static inline double fc_rng_next_double(fc_rng *r) { return (double)(fc_rng_next(r) >> 11) * 0x1.0p-53; }
/* Uniform float in [0, 1) with 24 random bits. */
float fc_rng_uniform(fc_rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double fc_rng_uniform_double(fc_rng *r);
/* Uniform integer in [0, bound) without modulo bias (Lemire 2019); bound >= 1. */
uint64_t fc_rng_below(fc_rng *r, uint64_t bound);
/* Standard normal N(0, 1) (Box-Muller, two u64 per draw, no cached state). */
double fc_rng_normal(fc_rng *r);
/* Gamma(shape, 1) for shape > 0 (Marsaglia & Tsang 2000; shape < 1 via the
 * Gamma(shape+1) * U^(1/shape) boost). May return 0 for tiny shapes. */
double fc_rng_gamma(fc_rng *r, double shape);
/* The full 128-bit product of a and b, without a 128-bit type (for tests:
 * fc_rng_below uses the compiler's 128-bit type where there is one). */
void fc_mul_u64_portable(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo);
/* Fisher-Yates shuffle of a u32 array. */
void fc_rng_shuffle_u32(fc_rng *r, uint32_t *a, uint32_t n);

#endif

/*
 * rng.c - xoshiro256** with splitmix64 seeding, and the samplers built on it.
 * See rng.h for why fedc carries its own generator instead of rand(3).
 *
 * Invariant: the state is never all zero (splitmix64 output of four
 * consecutive counters cannot all be zero), so the stream never sticks.
 */
#include "common/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fc_rng_seed(fc_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t fc_rng_u64(fc_rng *r) { return fc_rng_next(r); }

float fc_rng_uniform(fc_rng *r) { return (float)(fc_rng_u64(r) >> 40) * 0x1.0p-24f; }

double fc_rng_uniform_double(fc_rng *r) { return fc_rng_next_double(r); }

/* The 128-bit product a * b as (high, low) 64-bit halves. A compiler with
 * a 128-bit type does it in one or two instructions; the portable form
 * (schoolbook on 32-bit halves) is for targets without one (armhf) and is
 * exact, so both give the same stream (test_rng.c holds them together). */
void fc_mul_u64_portable(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo) {
  uint64_t a_lo = (uint32_t)a, a_hi = a >> 32, b_lo = (uint32_t)b, b_hi = b >> 32;
  uint64_t ll = a_lo * b_lo, lh = a_lo * b_hi, hl = a_hi * b_lo, hh = a_hi * b_hi;
  /* The middle column: at most 3 * (2^32 - 1), no overflow in 64 bits. */
  uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
  *lo = (mid << 32) | (uint32_t)ll;
  *hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

static inline void mul_u64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo) {
#if defined(__SIZEOF_INT128__) && !defined(FEDC_RNG_PORTABLE)
  unsigned __int128 m = (unsigned __int128)a * b;
  *hi = (uint64_t)(m >> 64);
  *lo = (uint64_t)m;
#else
  fc_mul_u64_portable(a, b, hi, lo);
#endif
}

uint64_t fc_rng_below(fc_rng *r, uint64_t bound) {
  if (bound <= 1) return 0;
  /* Lemire's multiply-shift with rejection of the biased low region. */
  uint64_t hi, low;
  mul_u64(fc_rng_u64(r), bound, &hi, &low);
  if (low < bound) {
    uint64_t threshold = -bound % bound;
    while (low < threshold) mul_u64(fc_rng_u64(r), bound, &hi, &low);
  }
  return hi;
}

double fc_rng_normal(fc_rng *r) {
  /* 1 - U is in (0, 1], so the log is finite. */
  double u1 = 1.0 - fc_rng_uniform_double(r), u2 = fc_rng_uniform_double(r);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) /* 2 pi */;
}

double fc_rng_gamma(fc_rng *r, double shape) {
  if (!(shape > 0.0)) return 0.0;
  if (shape < 1.0) {
    /* Marsaglia & Tsang, section 6: Gamma(a) = Gamma(a+1) * U^(1/a). */
    double u = 1.0 - fc_rng_uniform_double(r);
    return fc_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
  }
  double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = fc_rng_normal(r);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    double u = 1.0 - fc_rng_uniform_double(r);
    if (u < 1.0 - 0.0331 * (x * x) * (x * x)) return d * v;
    if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
  }
}

void fc_rng_shuffle_u32(fc_rng *r, uint32_t *a, uint32_t n) {
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = (uint32_t)fc_rng_below(r, i);
    uint32_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

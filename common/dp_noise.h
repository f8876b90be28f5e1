/*
 * dp_noise.h - Gaussian noise for DP-FedAvg (McMahan et al. 2018), from a
 * cryptographically seeded generator: AES-128-CTR keystream under a fresh
 * 128-bit key from the OS per call, 53-bit uniforms, Box-Muller pairs in
 * double precision. (Floating-point samplers leak through their low bits in
 * principle - Mironov 2012 for Laplace; the discrete Gaussian of Canonne et
 * al. 2020 avoids that and is what distributed DP under secure aggregation
 * uses.) No I/O besides the OS randomness.
 */
#ifndef FEDC_DP_NOISE_H
#define FEDC_DP_NOISE_H

#include <stddef.h>
#include <stdint.h>

/* x[i] += N(0, sigma^2), i < n. key: 16 bytes, or NULL for a fresh random key. */
int fc_dp_add_gaussian(float *x, size_t n, double sigma, const uint8_t *key);

/* x[i] += N_Z(0, sigma^2) mod 2^32, i < n: the discrete Gaussian (Canonne,
 * Kamath and Steinke 2020, Algorithm 3: rejection from the discrete
 * Laplace of Algorithm 2 with t = floor(sigma) + 1), for distributed DP
 * under secure aggregation (Kairouz, Liu and Steinke 2021). The discrete
 * Laplace's magnitude is drawn as the geometric floor(-t ln u) it equals,
 * and the acceptance compares a 53-bit uniform with a double-precision
 * exponential: the paper's exact rational arithmetic is not used, so the
 * sampled distribution differs from the ideal by the rounding of log() and
 * exp() (about 1e-16 relative) and in tails past 36 t, which never pass
 * the acceptance step.
 * sigma >= 1. key as above. */
int fc_dp_add_discrete_gaussian(uint32_t *x, size_t n, double sigma, const uint8_t *key);

#endif

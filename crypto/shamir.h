/*
 * shamir.h - Shamir secret sharing (Shamir 1979) of 32-byte secrets, t-of-n,
 * for SecAgg's self-mask seeds and mask keys (Bonawitz et al. 2017, round 1).
 *
 * Field: GF(2^16) with the irreducible polynomial x^16 + x^12 + x^3 + x + 1
 * (0x1100B). A 32-byte secret is 16 limbs of 16 bits; each limb is shared with
 * its own random polynomial of degree t-1 evaluated at the same points, so a
 * share is also 32 bytes. Share points x are 1..65535, so up to 65,535 shares
 * (FCP does the same with 31-bit limbs mod 2^31-1). Arithmetic is constant
 * time: multiplication is a fixed 16-step shift-and-conditional-xor with masks,
 * inversion is exponentiation by 2^16-2; no table lookups.
 *
 * Errors (never crashes): t < 1, t > n, x == 0, duplicate x, fewer than t
 * shares given: FEDC_ERR_INVALID.
 */
#ifndef FEDC_CRYPTO_SHAMIR_H
#define FEDC_CRYPTO_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#define FC_SHAMIR_SECRET_LEN 32
#define FC_SHAMIR_MAX_SHARES 65535

/* Split secret into n shares for points xs[0..n-1] (distinct, non-zero);
 * shares[i] is the share for xs[i]. Coefficients come from fc_random_bytes
 * and are wiped. */
int fc_shamir_split(const uint8_t secret[FC_SHAMIR_SECRET_LEN], uint32_t t, const uint16_t *xs, size_t n,
                    uint8_t (*shares)[FC_SHAMIR_SECRET_LEN]);
/* Combine m >= t shares (uses the first t) into secret. */
int fc_shamir_combine(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                      uint8_t secret[FC_SHAMIR_SECRET_LEN]);

/* Field operations, exposed for tests. */
uint16_t fc_gf16_mul(uint16_t a, uint16_t b);
uint16_t fc_gf16_inv(uint16_t a); /* inv(0) = 0 */

#endif

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
 * inversion is exponentiation by 2^16-2; no table lookups on share values
 * (fc_shamir_combine_check looks up logarithms of the public points only).
 * The error-correcting steps of fc_shamir_decode are not constant time; they
 * run only on inconsistent shares (shamir_decode.c says why that is fine).
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

/* fc_shamir_combine, then every further share checked against the
 * polynomial through the first t: off[i] = 1 (i >= t) where share i is not on
 * it, 0 elsewhere; *noff counts the 1s. All m points must be distinct and
 * non-zero. Cost: combine's, plus t (m - t) multiply-adds on the 16 limbs. */
int fc_shamir_combine_check(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                            uint8_t secret[FC_SHAMIR_SECRET_LEN], uint8_t *off, size_t *noff);

/*
 * Robust reconstruction (shamir_decode.c): the m shares are a Reed-Solomon
 * codeword of length m and dimension t with some values wrong; the secret
 * is rebuilt when the right ones can be told apart, and the wrong ones are
 * named when that is decided. `check` (may be NULL) says whether a candidate
 * secret is the right one (a commitment, a public key): 1 yes, 0 no.
 *
 * Outcomes (FEDC_OK):
 *   FC_SHAMIR_CLEAN         all m shares lie on one polynomial whose secret checks
 *   FC_SHAMIR_CORRECTED     the shares flagged in bad[] are off the polynomial
 *                           all the others lie on, which is the only one
 *                           within the decoding radius (at most (m - t) / 2
 *                           off), or, below that radius, the only one any
 *                           t-subset yields whose secret checks
 *   FC_SHAMIR_UNATTRIBUTED  a t-subset's secret checks, but whether another
 *                           polynomial also does was not decided (the subset
 *                           search was cut off, or found two): the secret is
 *                           right, nobody is named
 * FEDC_ERR_REJECTED: no candidate secret checks (more wrong shares than can
 * be told apart, or a check that no share set meets); rep->agree says all m
 * shares lie on one polynomial all the same (m > t): the check itself, not a
 * share, is what disagrees. FEDC_ERR_INVALID for bad arguments (as combine,
 * and all m points distinct), FEDC_ERR_NOMEM.
 *
 * Soundness of the names: the dealt polynomial lies on every right share,
 * and two polynomials of degree < t that each lie on (m + t) / 2 of the m
 * shares are the same. So a share named wrong is wrong whenever at most
 * (m - t) / 2 shares are wrong (the radius), and, for names from the subset
 * search, whenever at least t are right (the dealt polynomial is then the one
 * found). Past both bounds, wrong shares crafted together could move the
 * polynomial without moving its secret and get right shares named.
 */
enum { FC_SHAMIR_CLEAN = 1, FC_SHAMIR_CORRECTED = 2, FC_SHAMIR_UNATTRIBUTED = 3 };
enum { FC_SHAMIR_BY_FIRST = 1, FC_SHAMIR_BY_DECODER = 2, FC_SHAMIR_BY_SUBSETS = 3 };

typedef int (*fc_shamir_check_fn)(void *arg, const uint8_t secret[FC_SHAMIR_SECRET_LEN]);

typedef struct fc_shamir_report {
  int outcome;      /* FC_SHAMIR_CLEAN / CORRECTED / UNATTRIBUTED */
  int by;           /* what decided it: the first t shares, the decoder, or the subset search */
  size_t nbad;      /* shares flagged in bad[] (CORRECTED only) */
  uint64_t subsets; /* t-subsets the search combined */
  int agree;        /* REJECTED: all m shares lie on one polynomial, whose secret fails the check */
} fc_shamir_report;

/* Work the subset search may do per call: each t-subset looked at counts t,
 * each one combined t^2 + 16 t (fc_shamir_combine's multiplications). 2^22
 * is some tens of milliseconds on one core: e.g. all 4,368 5-subsets of 16
 * shares, or the t + 1 subsets of t + 1 shares for t up to ~2,000. */
#define FC_SHAMIR_SUBSET_WORK (1u << 22)

/* m >= t shares at distinct non-zero points. bad (m bytes, may be NULL)
 * receives 1 for the shares named wrong (CORRECTED), 0 for the rest. */
int fc_shamir_decode(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                     fc_shamir_check_fn check, void *arg, uint8_t secret[FC_SHAMIR_SECRET_LEN], uint8_t *bad,
                     fc_shamir_report *rep);

/* Field operations, exposed for tests. */
uint16_t fc_gf16_mul(uint16_t a, uint16_t b);
uint16_t fc_gf16_inv(uint16_t a); /* inv(0) = 0 */

#endif

/*
 * test_shamir_decode.c - robust Shamir reconstruction (crypto/shamir_decode.c):
 * the decoder against polynomials built here with errors injected at chosen
 * points, at the correction limit floor((m - t) / 2) and one past it, beside
 * the plain combine (which uses the first t and is wrong as soon as one of
 * them is); the subset search past the limit; and that no right share is ever
 * named: not by colluding shares that keep the secret, not for an owner whose
 * commitment does not match its shares.
 *
 * The test's own choices (points, error positions and values) come from a
 * seeded xorshift generator, printed, so a failure can be replayed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "crypto/sa_crypto.h"
#include "crypto/shamir.h"
#include "fedc/error.h"

typedef uint8_t share_t[FC_SHAMIR_SECRET_LEN];

static uint64_t rng_state;

static uint64_t rng_next(void) {
  uint64_t x = rng_state; /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static uint32_t rng_below(uint32_t n) { return (uint32_t)(rng_next() % n); }

static void random_distinct_points(uint16_t *xs, size_t n) {
  static uint16_t pool[65535];
  for (uint32_t i = 0; i < 65535; i++) pool[i] = (uint16_t)(i + 1);
  for (size_t i = 0; i < n; i++) {
    uint32_t j = (uint32_t)i + rng_below(65535 - (uint32_t)i);
    uint16_t tmp = pool[i];
    pool[i] = pool[j];
    pool[j] = tmp;
    xs[i] = pool[i];
  }
}

/* The check a SecAgg owner's commitment plays: is it this secret? */
static int is_secret(void *arg, const uint8_t s[FC_SHAMIR_SECRET_LEN]) {
  return memcmp(arg, s, FC_SHAMIR_SECRET_LEN) == 0;
}

/* Flag `e` distinct positions of [lo, m). */
static void pick(size_t m, size_t e, size_t lo, uint8_t *flag) {
  memset(flag, 0, m);
  for (size_t k = 0; k < e;) {
    size_t i = lo + rng_below((uint32_t)(m - lo));
    if (!flag[i]) {
      flag[i] = 1;
      k++;
    }
  }
}

/* Make share i wrong: a non-zero change in one limb (one_limb) or in all bytes. */
static void damage(uint8_t *share, int one_limb) {
  if (one_limb) {
    int k = (int)rng_below(16);
    uint16_t d = (uint16_t)(1 + rng_below(65535));
    share[2 * k] ^= (uint8_t)(d >> 8);
    share[2 * k + 1] ^= (uint8_t)d;
    return;
  }
  for (int b = 0; b < FC_SHAMIR_SECRET_LEN; b++) share[b] ^= (uint8_t)(1 + rng_below(255));
}

/* ---- a known polynomial, built here ------------------------------------------------ */

/* Limb k of the polynomial f_k(x) = c0 + c1 x + c2 x^2 with c_j = 0x1000 (j+1) + 0x11 k;
 * f_k(0) = c0 = 0x1000 + 0x11 k is the secret. t = 3, m = 7 at points 3, 5, ..., 15:
 * errors at x = 5 and x = 11 (the limit, 2) are corrected and located;
 * the plain combine over the first 3 (which include x = 5) is wrong. */
static void test_known_vector(void) {
  enum { M = 7, T = 3 };
  uint16_t xs[M];
  share_t sh[M];
  uint8_t want[32], out[32], bad[M];
  for (int i = 0; i < M; i++) xs[i] = (uint16_t)(3 + 2 * i);
  for (int k = 0; k < 16; k++) {
    uint16_t c[T];
    for (int j = 0; j < T; j++) c[j] = (uint16_t)(0x1000 * (j + 1) + 0x11 * k);
    want[2 * k] = (uint8_t)(c[0] >> 8);
    want[2 * k + 1] = (uint8_t)c[0];
    for (int i = 0; i < M; i++) {
      uint16_t y = c[2]; /* Horner */
      y = (uint16_t)(fc_gf16_mul(y, xs[i]) ^ c[1]);
      y = (uint16_t)(fc_gf16_mul(y, xs[i]) ^ c[0]);
      sh[i][2 * k] = (uint8_t)(y >> 8);
      sh[i][2 * k + 1] = (uint8_t)y;
    }
  }
  fc_shamir_report rep;
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, NULL, NULL, out, bad, &rep), FEDC_OK);
  CHECK_EQ_INT(rep.outcome, FC_SHAMIR_CLEAN);
  CHECK(memcmp(out, want, 32) == 0);
  sh[1][0] ^= 0x80;  /* x = 5: among the first t */
  sh[4][31] ^= 0x01; /* x = 11 */
  CHECK_EQ_INT(fc_shamir_combine(xs, (const share_t *)sh, M, T, out), FEDC_OK);
  CHECK(memcmp(out, want, 32) != 0);
  memset(out, 0, 32);
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, NULL, NULL, out, bad, &rep), FEDC_OK);
  CHECK_EQ_INT(rep.outcome, FC_SHAMIR_CORRECTED);
  CHECK_EQ_INT(rep.by, FC_SHAMIR_BY_DECODER);
  CHECK_EQ_INT(rep.nbad, 2);
  CHECK(memcmp(out, want, 32) == 0);
  uint8_t want_bad[M] = {0, 1, 0, 0, 1, 0, 0};
  CHECK(memcmp(bad, want_bad, M) == 0);
}

/* ---- random polynomials at the limit and one past it ------------------------------- */

static void test_limit(void) {
  static const uint32_t cases[][2] = {{3, 1}, {5, 3}, {6, 4}, {7, 3}, {9, 5}, {12, 5}, {17, 9},
                                      {31, 16}, {40, 10}, {64, 33}, {101, 51}, {200, 100}};
  int wrong_secret = 0, wrong_names = 0, runs = 0, plain_wrong = 0, past_refused = 0, past_runs = 0;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint32_t m = cases[c][0], t = cases[c][1], e = (m - t) / 2;
    uint16_t *xs = malloc(m * sizeof *xs);
    share_t *sh = malloc(m * sizeof *sh), *dam = malloc(m * sizeof *dam);
    uint8_t *flag = malloc(m), *bad = malloc(m), secret[32], out[32];
    CHECK(xs && sh && dam && flag && bad);
    if (!(xs && sh && dam && flag && bad)) return;
    for (int trial = 0; trial < 6; trial++) {
      random_distinct_points(xs, m);
      CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
      CHECK_EQ_INT(fc_shamir_split(secret, t, xs, m, sh), FEDC_OK);
      /* Errors at the limit: anywhere (trial 0-2), or all among the first t
       * (3-5); in one limb only (odd trials) or in every byte. */
      memcpy(dam, sh, m * sizeof *sh);
      pick(m, e, 0, flag);
      if (trial >= 3 && e <= t) {
        memset(flag, 0, m);
        for (uint32_t k = 0; k < e; k++) flag[k] = 1;
      }
      for (uint32_t i = 0; i < m; i++)
        if (flag[i]) damage(dam[i], trial & 1);
      fc_shamir_report rep;
      memset(out, 0, 32);
      int rc = fc_shamir_decode(xs, (const share_t *)dam, m, t, NULL, NULL, out, bad, &rep);
      runs++;
      CHECK_EQ_INT(rc, FEDC_OK);
      CHECK_EQ_INT(rep.nbad, e);
      CHECK_EQ_INT(rep.outcome, e ? FC_SHAMIR_CORRECTED : FC_SHAMIR_CLEAN);
      wrong_secret += memcmp(out, secret, 32) != 0;
      wrong_names += memcmp(bad, flag, m) != 0;
      /* The same with the check: nothing changes. */
      rc = fc_shamir_decode(xs, (const share_t *)dam, m, t, is_secret, secret, out, bad, &rep);
      CHECK_EQ_INT(rc, FEDC_OK);
      wrong_names += memcmp(bad, flag, m) != 0;
      /* The plain combine is right only when the first t are. */
      int first_clean = 1;
      for (uint32_t i = 0; i < t; i++) first_clean &= !flag[i];
      CHECK_EQ_INT(fc_shamir_combine(xs, (const share_t *)dam, m, t, out), FEDC_OK);
      if (first_clean) {
        CHECK(memcmp(out, secret, 32) == 0);
      } else {
        plain_wrong++;
        CHECK(memcmp(out, secret, 32) != 0);
      }

      /* One past the limit, without a check: refused, never a wrong secret
       * or a right share named. */
      if (e + 1 > m - 1) continue;
      memcpy(dam, sh, m * sizeof *sh);
      pick(m, e + 1, 0, flag);
      for (uint32_t i = 0; i < m; i++)
        if (flag[i]) damage(dam[i], trial & 1);
      past_runs++;
      rc = fc_shamir_decode(xs, (const share_t *)dam, m, t, NULL, NULL, out, bad, &rep);
      past_refused += rc == FEDC_ERR_REJECTED;
      CHECK_EQ_INT(rc, FEDC_ERR_REJECTED);
      /* With the check, the subset search where it fits the work bound: the
       * secret is rebuilt from any t right shares; names only if decided. */
      rc = fc_shamir_decode(xs, (const share_t *)dam, m, t, is_secret, secret, out, bad, &rep);
      if (rc == FEDC_OK) {
        CHECK(memcmp(out, secret, 32) == 0);
        if (rep.outcome == FC_SHAMIR_CORRECTED) CHECK(memcmp(bad, flag, m) == 0);
        for (uint32_t i = 0; i < m; i++) wrong_names += bad[i] && !flag[i];
      } else {
        CHECK_EQ_INT(rc, FEDC_ERR_REJECTED);
      }
      if (m - t <= 4 && m <= 12) { /* small: the search covers every subset */
        CHECK_EQ_INT(rc, FEDC_OK);
        CHECK_EQ_INT(rep.outcome, FC_SHAMIR_CORRECTED);
        CHECK_EQ_INT(rep.by, FC_SHAMIR_BY_SUBSETS);
      }
    }
    free(xs);
    free(sh);
    free(dam);
    free(flag);
    free(bad);
  }
  printf("  %d decodes at the limit: %d wrong secrets, %d wrong names (plain combine wrong in %d); "
         "one past: %d of %d refused\n",
         runs, wrong_secret, wrong_names, plain_wrong, past_refused, past_runs);
  CHECK_EQ_INT(wrong_secret, 0);
  CHECK_EQ_INT(wrong_names, 0);
  CHECK(plain_wrong > 0);
}

/* m = t + 1: one wrong share is seen (not on the polynomial of the others)
 * but the radius is 0; the search over the t + 1 subsets finds the only
 * one whose secret checks and names the share left out. */
static void test_detect_only(void) {
  for (uint32_t t = 2; t <= 6; t++) {
    uint32_t m = t + 1;
    uint16_t xs[7];
    share_t sh[7];
    uint8_t secret[32], out[32], bad[7];
    random_distinct_points(xs, m);
    CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
    CHECK_EQ_INT(fc_shamir_split(secret, t, xs, m, sh), FEDC_OK);
    uint32_t wrong = rng_below(m);
    sh[wrong][5] ^= 0x40;
    fc_shamir_report rep;
    CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, m, t, NULL, NULL, out, bad, &rep), FEDC_ERR_REJECTED);
    CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, m, t, is_secret, secret, out, bad, &rep), FEDC_OK);
    CHECK(memcmp(out, secret, 32) == 0);
    CHECK_EQ_INT(rep.outcome, FC_SHAMIR_CORRECTED);
    CHECK_EQ_INT(rep.by, FC_SHAMIR_BY_SUBSETS);
    CHECK_EQ_INT(rep.nbad, 1);
    CHECK_EQ_INT(bad[wrong], 1);
  }
}

/* Colluders past the radius move the polynomial but keep its secret: their
 * shares are f + h with h(0) = 0 and h(x_a) = 0 at one right share's point,
 * so the shifted polynomial lies on their 3 shares and that right one (4 of
 * 7), the dealt one on the other 4 right shares. Neither is within the
 * radius (5 of 7 needed, t = 3); both secrets check: the secret is rebuilt,
 * nobody is named. */
static void test_colluders_name_nobody(void) {
  enum { M = 7, T = 3 };
  uint16_t xs[M];
  share_t sh[M];
  uint8_t secret[32], out[32], bad[M];
  random_distinct_points(xs, M);
  CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
  CHECK_EQ_INT(fc_shamir_split(secret, T, xs, M, sh), FEDC_OK);
  /* h(x) = c x (x + x_a), degree 2 < t, zero at 0 and at x_a = xs[3]. */
  uint16_t xa = xs[3], c = 0x1234;
  int colluders[3] = {0, 5, 6};
  for (int q = 0; q < 3; q++) {
    uint16_t x = xs[colluders[q]], h = fc_gf16_mul(c, fc_gf16_mul(x, (uint16_t)(x ^ xa)));
    for (int k = 0; k < 16; k++) { /* the same shift in every limb */
      sh[colluders[q]][2 * k] ^= (uint8_t)(h >> 8);
      sh[colluders[q]][2 * k + 1] ^= (uint8_t)h;
    }
  }
  fc_shamir_report rep;
  memset(bad, 0xEE, sizeof bad);
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_OK);
  CHECK(memcmp(out, secret, 32) == 0);
  CHECK_EQ_INT(rep.outcome, FC_SHAMIR_UNATTRIBUTED);
  int named = 0;
  for (int i = 0; i < M; i++) named += bad[i] != 0;
  CHECK_EQ_INT(named, 0);
}

/* An owner whose commitment does not match the shares it dealt: all shares
 * agree, the check fails: refused, rep.agree, nobody named. */
static void test_owner_check_fails(void) {
  enum { M = 6, T = 4 };
  uint16_t xs[M];
  share_t sh[M];
  uint8_t secret[32], other[32], out[32], bad[M];
  random_distinct_points(xs, M);
  CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
  memcpy(other, secret, 32);
  other[0] ^= 1;
  CHECK_EQ_INT(fc_shamir_split(secret, T, xs, M, sh), FEDC_OK);
  fc_shamir_report rep;
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, other, out, bad, &rep), FEDC_ERR_REJECTED);
  CHECK_EQ_INT(rep.agree, 1);
  /* Bad arguments: a duplicate point anywhere (not only in the first t). */
  xs[5] = xs[4];
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, NULL, NULL, out, bad, &rep), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, T - 1, T, NULL, NULL, out, bad, &rep), FEDC_ERR_INVALID);
}

/* Past the radius with many subsets (C(40, 30) ~ 8.5e8): the search stops
 * at its work bound. A wrong share among the first t: refused (the secret
 * cannot be told); all wrong shares after them: the first t's secret checks
 * and is kept, unattributed. */
static void test_work_bound(void) {
  enum { M = 40, T = 30 };
  uint16_t xs[M];
  share_t sh[M];
  uint8_t secret[32], out[32], bad[M];
  random_distinct_points(xs, M);
  CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
  CHECK_EQ_INT(fc_shamir_split(secret, T, xs, M, sh), FEDC_OK);
  for (int i = M - 6; i < M; i++) damage(sh[i], 0); /* 6 > (40 - 30) / 2 */
  fc_shamir_report rep;
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_OK);
  CHECK_EQ_INT(rep.outcome, FC_SHAMIR_UNATTRIBUTED);
  CHECK(memcmp(out, secret, 32) == 0);
  CHECK((uint64_t)rep.subsets * (T * T + 16 * T) <= FC_SHAMIR_SUBSET_WORK);
  damage(sh[0], 0);
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_ERR_REJECTED);
  CHECK((uint64_t)rep.subsets * (T * T + 16 * T) <= FC_SHAMIR_SUBSET_WORK);
  printf("  past the radius, C(40,30) subsets: %llu combined before the work bound\n",
         (unsigned long long)rep.subsets);
}

/* What robustness costs: Bell et al.'s 33%/33% parameters at 1,000 clients
 * (k = 286, t = 150; m = 287 shares of one secret). Printed, not asserted. */
static double secs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_cost(void) {
  enum { M = 287, T = 150, REPS = 20 };
  static uint16_t xs[M];
  static share_t sh[M];
  uint8_t secret[32], out[32], bad[M];
  random_distinct_points(xs, M);
  CHECK_EQ_INT(fc_random_bytes(secret, 32), FEDC_OK);
  CHECK_EQ_INT(fc_shamir_split(secret, T, xs, M, sh), FEDC_OK);
  fc_shamir_report rep;
  double t0 = secs();
  for (int r = 0; r < REPS; r++) CHECK_EQ_INT(fc_shamir_combine(xs, (const share_t *)sh, M, T, out), FEDC_OK);
  double t1 = secs();
  for (int r = 0; r < REPS; r++)
    CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_OK);
  double t2 = secs();
  damage(sh[M - 1], 0); /* after the first t: still the first step */
  for (int r = 0; r < REPS; r++)
    CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_OK);
  double t3 = secs();
  damage(sh[0], 0); /* among the first t: the decoder */
  CHECK_EQ_INT(fc_shamir_decode(xs, (const share_t *)sh, M, T, is_secret, secret, out, bad, &rep), FEDC_OK);
  double t4 = secs();
  CHECK_EQ_INT(rep.by, FC_SHAMIR_BY_DECODER);
  CHECK_EQ_INT(rep.nbad, 2);
  CHECK(memcmp(out, secret, 32) == 0);
  printf("  m = %d, t = %d: combine %.3f ms, decode clean %.3f ms, one bad share after the first t %.3f ms, "
         "among them (Gao) %.1f ms\n",
         M, T, (t1 - t0) * 1e3 / REPS, (t2 - t1) * 1e3 / REPS, (t3 - t2) * 1e3 / REPS, (t4 - t3) * 1e3);
}

int main(void) {
  rng_state = (uint64_t)time(NULL) | 1;
  printf("  seed %llu\n", (unsigned long long)rng_state);
  test_known_vector();
  test_limit();
  test_detect_only();
  test_colluders_name_nobody();
  test_owner_check_fails();
  test_work_bound();
  test_cost();
  return CHECK_DONE();
}

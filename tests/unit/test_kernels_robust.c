/*
 * test_kernels_robust.c - the robust-aggregation kernels (kernels/robust.h)
 * against their plain-C references on random inputs, ties, identical
 * updates, extreme but finite values, odd and even n down to the smallest,
 * dimensions that do not fill the last block, a row stride above d, n past
 * the sorting network's limit (the quickselect path), and
 * 1 and 3 threads; the Gram-matrix distances against direct sums, with
 * identical updates exactly 0 apart and nearly equal large updates keeping
 * their small distance (the cancellation guard), and extreme values (up to
 * 3.4e38, whose float squares overflow) exact to double rounding (the
 * overflow guard: without it two such updates were NaN apart).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"
#include "fedc/error.h"
#include "kernels/robust.h"

enum { RANDOM, TIES, IDENTICAL, EXTREME };

static void fill(float *X, size_t n, size_t d, size_t ld, int kind, fc_rng *rng) {
  for (size_t r = 0; r < n; r++)
    for (size_t c = 0; c < ld; c++) {
      float v;
      double u = fc_rng_uniform_double(rng);
      switch (kind) {
      case TIES: v = (float)(int)(u * 4) - 1.5f; break;                      /* 4 values */
      case IDENTICAL: v = (float)sin((double)c); break;                     /* every row the same */
      case EXTREME: v = (float)((u < 0.5 ? -1 : 1) * 3.4 * pow(10, 38 * u)); break; /* up to 3.4e38 */
      default: v = (float)(u * 2 - 1);
      }
      X[r * ld + c] = c < d ? v : NAN; /* past d: never read */
    }
}

static int close_rel(float a, float b, double tol) {
  return a == b || fabs((double)a - b) <= tol * fmax(fabs((double)a), fabs((double)b));
}

int main(void) {
  /* Every kernel path this CPU can run: AVX-512, AVX2, and the SSE baseline
   * (kernels/robust.c reads FEDC_KERNEL_ISA at each call). */
  static const char *const isas[] = {"", "avx2", "base"};
  for (size_t ii = 0; ii < sizeof isas / sizeof *isas; ii++) {
    setenv("FEDC_KERNEL_ISA", isas[ii], 1);
    fc_rng rng;
    fc_rng_seed(&rng, 7);
    const size_t ns[] = {1, 2, 3, 4, 7, 10, 16, 17, 33, 100, 1100}; /* 1100: past the sorting network, quickselect */
    const size_t ds[] = {1, 63, 64, 130, 1000};
    size_t checks = 0;
    for (int kind = RANDOM; kind <= EXTREME; kind++)
      for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
        for (size_t di = 0; di < sizeof ds / sizeof *ds; di++) {
          size_t n = ns[ni], d = ds[di], ld = d + (di % 2) * 5;
          if (n > 100 && d > 64) continue; /* the large-n path: a few blocks are enough */
          float *X = malloc(n * ld * sizeof *X), *a = malloc(d * sizeof *a), *b = malloc(d * sizeof *b);
          fill(X, n, d, ld, kind, &rng);
          for (int threads = 1; threads <= 3; threads += 2) {
            CHECK_EQ_INT(fc_k_median(X, n, d, ld, a, threads), FEDC_OK);
            fc_kref_median(X, n, d, ld, b);
            int same = memcmp(a, b, d * sizeof *a) == 0;
            if (!same) printf("  median differs: kind %d n %zu d %zu\n", kind, n, d);
            CHECK(same);
            for (size_t trim = 0; 2 * trim < n; trim += 1 + n / 4) {
              CHECK_EQ_INT(fc_k_trimmed_mean(X, n, d, ld, trim, a, threads), FEDC_OK);
              fc_kref_trimmed_mean(X, n, d, ld, trim, b);
              int ok = 1;
              for (size_t c = 0; c < d; c++) ok &= close_rel(a[c], b[c], 1e-6);
              if (!ok) printf("  trimmed mean differs: kind %d n %zu d %zu trim %zu\n", kind, n, d, trim);
              CHECK(ok);
            }
            for (size_t keep = 1; keep <= n; keep += 1 + n / 3) {
              CHECK_EQ_INT(fc_k_median_window(X, n, d, ld, keep, a, threads), FEDC_OK);
              fc_kref_median_window(X, n, d, ld, keep, b);
              int ok = 1;
              for (size_t c = 0; c < d; c++) ok &= close_rel(a[c], b[c], 1e-6);
              if (!ok) printf("  median window differs: kind %d n %zu d %zu keep %zu\n", kind, n, d, keep);
              CHECK(ok);
            }
            checks++;
          }
          if (kind == IDENTICAL)
            for (size_t c = 0; c < d; c++) CHECK(a[c] == X[c]); /* the window of identical rows is the row */
          if (n <= 10) {
            double *D = malloc(n * n * sizeof *D), *R = malloc(n * n * sizeof *R);
            CHECK_EQ_INT(fc_k_sqdist(X, n, d, ld, D), FEDC_OK);
            fc_kref_sqdist(X, n, d, ld, R);
            int ok = 1;
            for (size_t i = 0; i < n * n; i++) ok &= fabs(D[i] - R[i]) <= 5e-5 * fmax(R[i], 1e-30) || D[i] == R[i];
            if (kind == IDENTICAL)
              for (size_t i = 0; i < n * n; i++) ok &= D[i] == 0;
            if (!ok)
              for (size_t i = 0; i < n * n; i++)
                if (D[i] != R[i])
                  printf("  sqdist kind %d n %zu d %zu [%zu]: %.17g vs %.17g\n", kind, n, d, i, D[i], R[i]);
            CHECK(ok);
            free(D);
            free(R);
          }
          free(X);
          free(a);
          free(b);
        }
    printf("  %zu kernel comparisons (kernel paths capped at '%s')\n", checks, isas[ii]);
  }
  unsetenv("FEDC_KERNEL_ISA");
  /* Cancellation: rows of norm ~1e4 that differ by 1e-3 in one coordinate. */
  size_t n = 4, d = 100000;
  float *X = malloc(n * d * sizeof *X);
  for (size_t c = 0; c < d; c++) X[c] = 30.0f + (float)(c % 13);
  for (size_t r = 1; r < n; r++) memcpy(X + r * d, X, d * sizeof *X);
  X[1 * d + 5] += 1e-3f * (float)fabsf(X[5]) / 30.0f;
  X[2 * d + 7] -= 0.5f;
  double D[16], R[16];
  CHECK_EQ_INT(fc_k_sqdist(X, n, d, d, D), FEDC_OK);
  fc_kref_sqdist(X, n, d, d, R);
  printf("  near-duplicates: d01 %.6g (direct %.6g), d02 %.6g (direct %.6g), d03 %g\n", D[1], R[1], D[2], R[2], D[3]);
  for (int i = 0; i < 16; i++) CHECK(fabs(D[i] - R[i]) <= 1e-9 * fmax(R[i], 1e-30) || D[i] == R[i]);
  CHECK(D[3] == 0 && D[1] > 0);
  /* Refusals. */
  float o[1];
  CHECK_EQ_INT(fc_k_trimmed_mean(X, 4, 1, 1, 2, o, 1), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_k_median_window(X, 4, 1, 1, 5, o, 1), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_k_median(X, 0, 1, 1, o, 1), FEDC_ERR_INVALID);
  free(X);
  return CHECK_DONE();
}

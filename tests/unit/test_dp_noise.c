/*
 * test_dp_noise.c - the DP-FedAvg noise (coordinator/dp_noise.h): a million
 * draws have the Gaussian's mean, variance and tails (|x| > 3 sigma and
 * > 4 sigma) within a few standard errors; the noise is added (not written)
 * to the vector, odd lengths are filled, a fixed key repeats and fresh keys
 * differ.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/dp_noise.h"
#include "fedc/error.h"

int main(void) {
  enum { N = 1000001 }; /* odd: the last Box-Muller pair is half used */
  const double sigma = 2.0;
  float *x = calloc(N, sizeof *x);
  CHECK_EQ_INT(fc_dp_add_gaussian(x, N, sigma, NULL), FEDC_OK);
  double sum = 0, ss = 0;
  size_t over3 = 0, over4 = 0;
  for (size_t i = 0; i < N; i++) {
    sum += x[i];
    ss += (double)x[i] * x[i];
    over3 += fabs(x[i]) > 3 * sigma;
    over4 += fabs(x[i]) > 4 * sigma;
  }
  double mean = sum / N, var = ss / N - mean * mean;
  double p3 = erfc(3 / M_SQRT2), p4 = erfc(4 / M_SQRT2);
  printf("  mean %.5f, variance %.4f (want 4), P(|x|>3s) %.5f (want %.5f), P(|x|>4s) %.6f (want %.6f)\n", mean, var,
         (double)over3 / N, p3, (double)over4 / N, p4);
  CHECK(fabs(mean) < 5 * sigma / sqrt(N));
  CHECK(fabs(var - sigma * sigma) < 5 * sigma * sigma * sqrt(2.0 / N));
  CHECK(fabs((double)over3 / N - p3) < 5 * sqrt(p3 / N));
  CHECK(fabs((double)over4 / N - p4) < 5 * sqrt(p4 / N) + 1e-6);
  CHECK(x[N - 1] != 0.0f);
  /* Added to what is there; a fixed key repeats, another differs. */
  uint8_t key[16] = {1, 2, 3};
  float a[5] = {10, 10, 10, 10, 10}, b[5] = {0}, c[5] = {0};
  CHECK_EQ_INT(fc_dp_add_gaussian(a, 5, 1.0, key), FEDC_OK);
  CHECK_EQ_INT(fc_dp_add_gaussian(b, 5, 1.0, key), FEDC_OK);
  for (int i = 0; i < 5; i++) CHECK(fabsf(a[i] - 10.0f - b[i]) < 1e-5f);
  key[0] = 9;
  CHECK_EQ_INT(fc_dp_add_gaussian(c, 5, 1.0, key), FEDC_OK);
  CHECK(memcmp(b, c, sizeof b) != 0);
  free(x);
  return CHECK_DONE();
}

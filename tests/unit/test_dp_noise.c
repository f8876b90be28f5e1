/*
 * test_dp_noise.c - the DP-FedAvg noise (common/dp_noise.h): a million
 * draws have the Gaussian's mean, variance and tails (|x| > 3 sigma and
 * > 4 sigma) within a few standard errors; the noise is added (not written)
 * to the vector, odd lengths are filled, a fixed key repeats and fresh keys
 * differ.
 *
 * The discrete Gaussian (fc_dp_add_discrete_gaussian): at sigma 3 the
 * frequency of every value in -9..9 matches the pmf exp(-x^2/(2 sigma^2)) / Z
 * within 5 standard errors; at sigma 1e6 (the size distributed DP uses) the
 * mean, variance and tails match; the noise wraps mod 2^32; sigma < 1 is
 * refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/dp_noise.h"
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

  /* Discrete Gaussian, small sigma: the pmf value by value. */
  enum { M = 1000000 };
  uint32_t *q = calloc(M, sizeof *q);
  const double s3 = 3.0;
  CHECK_EQ_INT(fc_dp_add_discrete_gaussian(q, M, s3, NULL), FEDC_OK);
  double z = 0;
  for (int v = -60; v <= 60; v++) z += exp(-(double)v * v / (2 * s3 * s3));
  size_t count[19] = {0};
  double dsum = 0, dss = 0;
  for (size_t i = 0; i < M; i++) {
    int32_t v = (int32_t)q[i];
    dsum += v;
    dss += (double)v * v;
    if (v >= -9 && v <= 9) count[v + 9]++;
  }
  int pmf_ok = 1;
  for (int v = -9; v <= 9; v++) {
    double p = exp(-(double)v * v / (2 * s3 * s3)) / z, got = (double)count[v + 9] / M;
    if (fabs(got - p) > 5 * sqrt(p * (1 - p) / M) + 1e-6) {
      printf("  value %d: frequency %.6f, pmf %.6f\n", v, got, p);
      pmf_ok = 0;
    }
  }
  CHECK(pmf_ok);
  double dmean = dsum / M, dvar = dss / M - dmean * dmean;
  printf("  discrete, sigma 3: mean %.5f, variance %.4f (want 9)\n", dmean, dvar);
  CHECK(fabs(dmean) < 5 * s3 / sqrt(M));
  CHECK(fabs(dvar - 9) < 5 * 9 * sqrt(2.0 / M));
  /* Large sigma: moments and tails. */
  const double big = 1e6;
  memset(q, 0, M * sizeof *q);
  CHECK_EQ_INT(fc_dp_add_discrete_gaussian(q, M, big, NULL), FEDC_OK);
  dsum = dss = 0;
  size_t o3 = 0, neg = 0;
  for (size_t i = 0; i < M; i++) {
    int32_t v = (int32_t)q[i]; /* wrapped mod 2^32: negatives read back */
    dsum += v;
    dss += (double)v * v;
    o3 += fabs((double)v) > 3 * big;
    neg += v < 0;
  }
  dmean = dsum / M;
  dvar = dss / M - dmean * dmean;
  double p3d = erfc(3 / M_SQRT2);
  printf("  discrete, sigma 1e6: mean %.1f, std %.1f, P(|x|>3s) %.5f (want %.5f), negative %.4f\n", dmean, sqrt(dvar),
         (double)o3 / M, p3d, (double)neg / M);
  CHECK(fabs(dmean) < 5 * big / sqrt(M));
  CHECK(fabs(dvar / (big * big) - 1) < 5 * sqrt(2.0 / M));
  CHECK(fabs((double)o3 / M - p3d) < 5 * sqrt(p3d / M));
  CHECK(fabs((double)neg / M - 0.5) < 0.005);
  /* Added mod 2^32 to what is there; sigma below 1 refused. */
  uint32_t w[3] = {5, 5, 5};
  CHECK_EQ_INT(fc_dp_add_discrete_gaussian(w, 3, 1e9, key), FEDC_OK);
  uint32_t w0[3] = {0, 0, 0};
  CHECK_EQ_INT(fc_dp_add_discrete_gaussian(w0, 3, 1e9, key), FEDC_OK);
  for (int i = 0; i < 3; i++) CHECK(w[i] - 5u == w0[i]);
  CHECK_EQ_INT(fc_dp_add_discrete_gaussian(w, 3, 0.5, NULL), FEDC_ERR_INVALID);
  free(q);
  return CHECK_DONE();
}

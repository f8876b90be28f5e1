/*
 * test_dp_distributed.c - distributed DP under secure aggregation: the
 * client pipeline's quantize -> noise stages (client/pipeline.h) with the
 * parameters the coordinator derives (fc_sa_dp_scale), summed as the
 * unmasked sum would be (masks cancel; test_secagg checks that exactly).
 *   - the integer sensitivity: a quantized update of norm C has norm at most
 *     C s + sqrt(dim) (what the noise is scaled to);
 *   - the worst-case noisy sum cannot wrap 32 bits;
 *   - the decoded sum's error is the noise of n clients: mean 0, std
 *     sqrt(n) sigma / s within 5%, i.e. noise multiplier z sqrt(n / m);
 *   - adaptive clipping's bit decodes to the centred count with noise
 *     sigma_b sqrt(n / m) (over 400 trials);
 *   - parameters that would void the guarantee or wrap are refused.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/pipeline.h"
#include "common/rng.h"
#include "fedc/error.h"
#include "secagg/secagg.h"

static fc_sa_params params(uint32_t n, uint32_t m, uint64_t dim, float clip, double z, double sb) {
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = 1;
  p.n = n;
  p.k = n - 1;
  p.t = n / 2 + 1;
  p.min_survivors = m; /* the survivors the noise is calibrated for */
  p.max_weight = 1;
  p.clip = clip;
  p.dim = dim;
  p.scale = fc_sa_dp_scale(n, m, clip, dim, z, &p.dp_sigma);
  if (sb > 0) {
    p.bit_scale = FC_DP_BIT_SCALE;
    p.dp_bit_sigma = 2.0 * sb * FC_DP_BIT_SCALE / sqrt((double)m);
  }
  return p;
}

/* A random vector of L2 norm r. */
static void random_update(fc_rng *rng, float *x, uint64_t dim, double r) {
  double ss = 0;
  for (uint64_t i = 0; i < dim; i++) {
    x[i] = (float)(fc_rng_uniform_double(rng) - 0.5);
    ss += (double)x[i] * x[i];
  }
  for (uint64_t i = 0; i < dim; i++) x[i] = (float)(x[i] * r / sqrt(ss));
}

int main(void) {
  const uint32_t n = 20, m = 14;
  const uint64_t dim = 4000;
  const float C = 1.0f;
  const double z = 1.0, sb = 1.0;
  char why[300];
  fc_sa_params p = params(n, m, dim, C, z, sb);
  CHECK(p.scale > 0);
  CHECK_EQ_INT(fc_sa_params_check(&p, why, sizeof why), FEDC_OK);
  double delta_int = C * p.scale + sqrt((double)dim);
  /* Any m survivors carry noise multiplier z; n carry z sqrt(n / m). */
  CHECK(fabs(sqrt((double)m) * p.dp_sigma / delta_int - z) < 1e-9);
  /* The worst case cannot wrap: n inputs at +C in one coordinate, 8 std of noise. */
  CHECK((double)n * (C * p.scale + 1) + 8 * sqrt((double)n) * p.dp_sigma < 2147483647.0);
  CHECK_EQ_INT((int)fc_sa_entries(&p), (int)(dim + 2));

  fc_rng rng;
  fc_rng_seed(&rng, 42);
  float *x = malloc(dim * sizeof *x);
  double *exact = calloc(dim, sizeof *exact);
  uint32_t *q = malloc(fc_sa_entries(&p) * sizeof *q), *sum = calloc(fc_sa_entries(&p), sizeof *sum);
  /* Sensitivity in the integer domain: ||q(x)|| <= C s + sqrt(dim). */
  random_update(&rng, x, dim, C * (1 - 1e-6));
  CHECK_EQ_INT(fc_stage_quantize(x, 1, 1, &p, NULL, q), FEDC_OK);
  double qn = 0;
  for (uint64_t i = 0; i < dim; i++) qn += (double)(int32_t)q[i] * (int32_t)q[i];
  printf("  quantized norm %.1f <= C s + sqrt(dim) = %.1f (C s = %.1f)\n", sqrt(qn), delta_int, C * p.scale);
  CHECK(sqrt(qn) <= delta_int);
  CHECK_EQ_INT((int)q[dim], 1);                        /* the weight */
  CHECK_EQ_INT((int32_t)q[dim + 1], FC_DP_BIT_SCALE); /* unclipped: +S */

  /* n clients: quantize, add noise, sum. */
  int unclipped = 0;
  for (uint32_t u = 0; u < n; u++) {
    random_update(&rng, x, dim, C * fc_rng_uniform_double(&rng));
    for (uint64_t i = 0; i < dim; i++) exact[i] += x[i];
    int b = u % 3 == 0;
    unclipped += b;
    CHECK_EQ_INT(fc_stage_quantize(x, 5, b, &p, NULL, q), FEDC_OK);
    CHECK_EQ_INT(fc_stage_dp_noise(q, &p), FEDC_OK);
    for (uint64_t i = 0; i < fc_sa_entries(&p); i++) sum[i] += q[i];
  }
  float *avg = malloc(dim * sizeof *avg);
  uint64_t W = 0;
  CHECK_EQ_INT(fc_sa_dequantize(sum, dim, fc_sa_params_scale(&p), n, avg, &W), FEDC_OK);
  CHECK_EQ_INT((int)W, (int)n); /* uniform weights, exact */
  double em = 0, ev = 0;
  for (uint64_t i = 0; i < dim; i++) em += (double)avg[i] * n - exact[i];
  em /= (double)dim;
  for (uint64_t i = 0; i < dim; i++) {
    double e = (double)avg[i] * n - exact[i] - em;
    ev += e * e;
  }
  double est = sqrt(ev / (double)(dim - 1)), want = sqrt((double)n) * p.dp_sigma / p.scale;
  printf("  decoded sum error: mean %.3g, std %.5g (want %.5g = z sqrt(n/m) C (1 + sqrt(dim)/(C s)))\n", em, est, want);
  CHECK(fabs(est / want - 1) < 0.05);
  CHECK(fabs(em) < 5 * want / sqrt((double)dim));

  /* The bit: 400 trials of n clients' bits with noise. */
  fc_sa_params pb = params(n, m, 1, C, z, sb);
  double bs = 0, bss = 0;
  const int trials = 400;
  for (int r = 0; r < trials; r++) {
    uint32_t s = 0;
    float zero = 0;
    for (uint32_t u = 0; u < n; u++) {
      CHECK_EQ_INT(fc_stage_quantize(&zero, 1, u % 3 == 0, &pb, NULL, q), FEDC_OK);
      CHECK_EQ_INT(fc_stage_dp_noise(q, &pb), FEDC_OK);
      s += q[2];
    }
    double centred = (double)(int32_t)s / (2.0 * FC_DP_BIT_SCALE) - ((double)unclipped - 0.5 * n);
    bs += centred;
    bss += centred * centred;
  }
  double bmean = bs / trials, bstd = sqrt(bss / trials - bmean * bmean), bwant = sb * sqrt((double)n / m);
  printf("  clipping bit: noise mean %.3f, std %.3f (want %.3f)\n", bmean, bstd, bwant);
  CHECK(fabs(bstd / bwant - 1) < 0.15);
  CHECK(fabs(bmean) < 5 * bwant / sqrt((double)trials));

  /* Refusals. */
  fc_sa_params bad = p;
  bad.max_weight = 2;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "uniform weights") != NULL);
  bad = p;
  bad.dp_sigma = 5;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  bad = p;
  bad.scale *= 2; /* the worst-case sum would wrap */
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  bad = p;
  bad.dp_bit_sigma = 1;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  bad = p;
  bad.dp_sigma = NAN;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  /* Noise without the survivor count it was calibrated for, or a count the cohort cannot reach. */
  bad = p;
  bad.min_survivors = 1;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "calibrated") != NULL);
  bad = p;
  bad.min_survivors = n + 1;
  CHECK_EQ_INT(fc_sa_params_check(&bad, why, sizeof why), FEDC_ERR_INVALID);
  /* A clip and noise that leave no room at all. */
  double sg = 0;
  CHECK(fc_sa_dp_scale(n, m, C, (uint64_t)1 << 62, z, &sg) == 0);
  /* The session id covers the noise: another sigma, another session. */
  const char *names[20];
  for (uint32_t u = 0; u < n; u++) names[u] = "x";
  uint8_t id1[FC_SA_SESSION_LEN], id2[FC_SA_SESSION_LEN];
  CHECK_EQ_INT(fc_sa_session_id(&p, names, id1), FEDC_OK);
  bad = p;
  bad.dp_sigma *= 0.5;
  CHECK_EQ_INT(fc_sa_session_id(&bad, names, id2), FEDC_OK);
  CHECK(memcmp(id1, id2, sizeof id1) != 0);
  /* ... and the survivor floor: a client told another m shares no session. */
  bad = p;
  bad.min_survivors = m + 1;
  CHECK_EQ_INT(fc_sa_session_id(&bad, names, id2), FEDC_OK);
  CHECK(memcmp(id1, id2, sizeof id1) != 0);
  free(x);
  free(exact);
  free(q);
  free(sum);
  free(avg);
  return CHECK_DONE();
}

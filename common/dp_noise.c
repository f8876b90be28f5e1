/*
 * dp_noise.c - Gaussian noise from AES-CTR randomness (dp_noise.h).
 */
#include "common/dp_noise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/sa_crypto.h"
#include "fedc/error.h"

#define BATCH 4096 /* u64 words of keystream at a time */

int fc_dp_add_gaussian(float *x, size_t n, double sigma, const uint8_t *key) {
  uint8_t k[16], iv[16] = {0};
  if (key) memcpy(k, key, sizeof k);
  else if (fc_random_bytes(k, sizeof k) != FEDC_OK)
    return FEDC_ERR_CRYPTO;
  fc_ctr ctr;
  int rc = fc_ctr_init(&ctr, k, iv);
  fc_wipe(k, sizeof k);
  if (rc != FEDC_OK) return rc;
  uint64_t *w = malloc(BATCH * sizeof *w);
  if (!w) {
    fc_ctr_free(&ctr);
    return FEDC_ERR_NOMEM;
  }
  size_t avail = 0, at = 0;
  for (size_t i = 0; i < n && rc == FEDC_OK; i += 2) {
    if (avail - at < 2) {
      if ((rc = fc_ctr_keystream(&ctr, (uint8_t *)w, BATCH * sizeof *w)) != FEDC_OK) break;
      avail = BATCH;
      at = 0;
    }
    /* u1 in (0, 1], u2 in [0, 1): 53 random bits each. */
    double u1 = ((w[at++] >> 11) + 1) * 0x1p-53, u2 = (w[at++] >> 11) * 0x1p-53;
    double r = sigma * sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * u2;
    x[i] += (float)(r * cos(t));
    if (i + 1 < n) x[i + 1] += (float)(r * sin(t));
  }
  fc_wipe(w, BATCH * sizeof *w);
  free(w);
  fc_ctr_free(&ctr);
  return rc;
}

/* 53-bit uniforms from the AES-CTR keystream, refilled in batches. */
typedef struct dg_src {
  fc_ctr ctr;
  uint64_t *w;
  size_t avail, at;
} dg_src;

static int dg_u64(dg_src *s, uint64_t *out) {
  if (s->at == s->avail) {
    int rc = fc_ctr_keystream(&s->ctr, (uint8_t *)s->w, BATCH * sizeof *s->w);
    if (rc != FEDC_OK) return rc;
    s->avail = BATCH;
    s->at = 0;
  }
  *out = s->w[s->at++];
  return FEDC_OK;
}

/* One draw of N_Z(0, sigma^2), t = floor(sigma) + 1 (CKS 2020, Algorithm 3). */
static int dg_sample(dg_src *s, double sigma, uint64_t t, int64_t *out) {
  double s2 = sigma * sigma, shift = s2 / (double)t, td = (double)t;
  for (;;) {
    uint64_t r[3];
    for (int i = 0; i < 3; i++) {
      int rc = dg_u64(s, &r[i]);
      if (rc != FEDC_OK) return rc;
    }
    /* Algorithm 2's discrete Laplace (scale t): its X = U + t V, U kept with
     * chance exp(-U/t) and V ~ Geometric(1 - e^-1), has P(X = x) proportional
     * to exp(-x/t): the geometric distribution, drawn here in one step as
     * floor(-t ln u), u uniform on (0, 1]. Then a random sign, with -0 refused
     * so 0 is not drawn twice as often. */
    double u = ((double)(r[0] >> 11) + 1.0) * 0x1p-53;
    double x = floor(-td * log(u));
    int neg = (int)(r[1] & 1);
    if (neg && x == 0) continue;
    double y = neg ? -x : x;
    /* Algorithm 3: accept with chance exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). */
    double d = x - shift;
    if ((double)(r[2] >> 11) * 0x1p-53 < exp(-d * d / (2.0 * s2))) {
      *out = (int64_t)y;
      return FEDC_OK;
    }
  }
}

int fc_dp_add_discrete_gaussian(uint32_t *x, size_t n, double sigma, const uint8_t *key) {
  if (!(sigma >= 1) || !(sigma < 0x1p52)) return FEDC_ERR_INVALID;
  uint8_t k[16], iv[16] = {0};
  if (key) memcpy(k, key, sizeof k);
  else if (fc_random_bytes(k, sizeof k) != FEDC_OK)
    return FEDC_ERR_CRYPTO;
  dg_src s;
  memset(&s, 0, sizeof s);
  int rc = fc_ctr_init(&s.ctr, k, iv);
  fc_wipe(k, sizeof k);
  if (rc != FEDC_OK) return rc;
  if (!(s.w = malloc(BATCH * sizeof *s.w))) {
    fc_ctr_free(&s.ctr);
    return FEDC_ERR_NOMEM;
  }
  uint64_t t = (uint64_t)floor(sigma) + 1;
  for (size_t i = 0; i < n && rc == FEDC_OK; i++) {
    int64_t y = 0;
    if ((rc = dg_sample(&s, sigma, t, &y)) == FEDC_OK) x[i] += (uint32_t)y; /* two's complement: mod 2^32 */
  }
  fc_wipe(s.w, BATCH * sizeof *s.w);
  free(s.w);
  fc_ctr_free(&s.ctr);
  return rc;
}

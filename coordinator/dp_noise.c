/*
 * dp_noise.c - Gaussian noise from AES-CTR randomness (dp_noise.h).
 */
#include "coordinator/dp_noise.h"

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

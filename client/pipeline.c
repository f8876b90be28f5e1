/*
 * pipeline.c - the stages of the client's update pipeline (pipeline.h).
 */
#include "client/pipeline.h"
#include "common/quant.h"

#include "common/blas.h"
#include "common/dp_noise.h"
#include "common/tensor.h"
#include "crypto/sa_crypto.h"
#include "fedc/client.h"
#include "fedc/error.h"

/* The two vector kernels below are the portable ones (blas_portable.c), not
 * fc_saxpy/fc_sscal: they were the client library's only BLAS calls, and
 * through them libfedc-client.so loaded OpenBLAS, libgfortran and
 * libquadmath, which cost an embedding program 2.3 MiB of RSS and a thread
 * (docs/results.md, "Footprint"). One pass over memory gains nothing from
 * BLAS, and both are exact elementwise (x * -1 + y, x * a): same bits. */
int fc_stage_delta(float *out, const float *global, size_t n, int kind) {
  if (kind == FEDC_OUTPUT_WEIGHTS) fc_port_saxpy((int)n, -1.0f, global, 1, out, 1);
  return fc_all_finite(out, n, NULL) ? FEDC_OK : FEDC_ERR_NONFINITE;
}

/* Scale the delta to L2 norm <= clip (Abadi et al. 2016 / McMahan et al. 2018
 * "DP-FedAvg" per-client clipping). */
double fc_stage_clip(float *delta, size_t n, float clip, double *norm_out) {
  double norm = fc_l2_norm(delta, n), scale = 1.0;
  if (clip > 0 && norm > clip) {
    /* Aim a hair under the bound so float rounding cannot push it over. */
    scale = (double)clip / norm * (1.0 - 1e-6);
    fc_port_sscal((int)n, (float)scale, delta, 1);
    norm = fc_l2_norm(delta, n);
  }
  *norm_out = norm;
  return scale;
}

int fc_stage_quantize(const float *delta, uint64_t examples, int unclipped, const fc_sa_params *p,
                      const uint64_t *seed_in, uint32_t *out) {
  if (!examples) return FEDC_ERR_INVALID;
  uint64_t w = examples < p->max_weight ? examples : p->max_weight;
  uint64_t seed;
  int rc = seed_in ? FEDC_OK : fc_random_bytes(&seed, sizeof seed);
  if (rc != FEDC_OK) return rc;
  if (seed_in) seed = *seed_in ^ 0x5ec4a9900d1e5ull;
  fc_rng rng;
  fc_rng_seed(&rng, seed);
  fc_sa_quantize(delta, p->dim, w, fc_sa_params_scale(p), &rng, out);
  fc_wipe(&rng, sizeof rng);
  if (p->quant_bits) {
    /* Narrow ring: with the range at the clip, |x_i| <= ||x|| <= clip puts
     * each value in [-L, L] and the clamp only catches float rounding of the
     * clip itself; with a narrower quant_range the operator chose to clamp
     * the rare larger values (a bias, docs/design.md) for a finer step. */
    int32_t L = (int32_t)((1u << (p->quant_bits - 1)) - 1);
    for (uint64_t i = 0; i < p->dim; i++) {
      int32_t v = (int32_t)out[i];
      out[i] = (uint32_t)(v > L ? L : v < -L ? -L : v);
    }
  }
  /* Adaptive clipping's bit, centred: +bit_scale if unclipped, else -bit_scale. */
  if (p->bit_scale) out[p->dim + 1] = unclipped ? p->bit_scale : (uint32_t)-(int64_t)p->bit_scale;
  return FEDC_OK;
}

int fc_stage_compress(const float *delta, uint64_t n, uint32_t bits, uint32_t block, uint8_t *out) {
  uint64_t seed;
  int rc = fc_random_bytes(&seed, sizeof seed);
  if (rc != FEDC_OK) return rc;
  fc_rng rng;
  fc_rng_seed(&rng, seed);
  rc = fc_q_encode(delta, n, bits, block, &rng, out);
  fc_wipe(&rng, sizeof rng);
  return rc;
}

/* The distributed discrete Gaussian (Kairouz, Liu and Steinke 2021, Algorithm
 * 1, the client's step): our share of the noise on every model coordinate
 * (and on the clipping bit), in the integer domain, after quantization and
 * before masking. The weight is left exact: it is 1 per survivor and the
 * coordinator learns the survivors anyway. Each call draws a fresh key. */
int fc_stage_dp_noise(uint32_t *q, const fc_sa_params *p) {
  if (!(p->dp_sigma > 0)) return FEDC_OK;
  int rc = fc_dp_add_discrete_gaussian(q, (size_t)p->dim, p->dp_sigma, NULL);
  if (rc == FEDC_OK && p->bit_scale) rc = fc_dp_add_discrete_gaussian(q + p->dim + 1, 1, p->dp_bit_sigma, NULL);
  return rc;
}

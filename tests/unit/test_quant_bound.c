/*
 * test_quant_bound.c - a quantized upload is bounded by the clip norm
 * (upload_check.h: fc_upload_quant_scales_check, fc_upload_quant_clip),
 * through coord_codec_begin/feed/end and fc_upload_values_check in the
 * order coord_upload.c runs them.
 *
 * The hole it closes (a hostile review, 2026-12-06): the rounding slack
 * sqrt(sum_blocks m scale^2) came from the client's own scales, so code 1
 * at the largest scale (clip / L) in every block passed with an L2 norm of
 * clip x sqrt(n) / L (63x the clip for the built-in MLP at 4 bits).
 *   - every block at the largest scale: refused by the scales' bound;
 *   - one block at the largest scale, the rest 0 (passes the bound, and the
 *     slack: norm clip x sqrt(m) / L, 4.6x the clip at 4 bits in blocks of
 *     1024): folded at FC_QUANT_RADIUS_MAX (1.05) x the clip;
 *   - honest encodings of clipped vectors: never refused, and folded as
 *     decoded (the bound leaves room for the rounding's variance), so the
 *     quantization stays unbiased.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/quant.h"
#include "common/rng.h"
#include "coordinator/agg_slots.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/upload_check.h"
#include "fedc/error.h"

typedef struct result {
  int scales_rc, values_rc, scaled;
  double l2_decoded, l2_folded;
} result;

/* Decode payload p through the coordinator's codec into a FedAvg slot and
 * run the checks coord_upload.c runs; the folded copy of the update in out
 * (dim floats) when accepted. */
static result check_payload(uint32_t bits, uint64_t dim, uint32_t block, double clip, const uint8_t *p, float *out) {
  result res = {-1, -1, 0, 0, 0};
  fc_coord *c = calloc(1, sizeof *c);
  c->cfg.upload_bits = bits;
  c->cfg.upload_block = block;
  fc_agg *agg;
  CHECK(fc_agg_fedavg_create(dim, 1, &agg) == FEDC_OK);
  fc_agg_update *u;
  CHECK(agg->ops->update_begin(agg, 0, &u) == FEDC_OK);
  Fedc__V1__UpdateMeta meta = FEDC__V1__UPDATE_META__INIT;
  meta.upload_bits = bits;
  meta.upload_block = block;
  fc_model_spec mspec = {0};
  const fc_model_spec *want = &mspec;
  uint64_t want_bytes = 0;
  coord_codec *k;
  char why[400];
  CHECK(coord_codec_begin(c, &meta, 0, dim, clip, &want, &want_bytes, &k, why, sizeof why) == FEDC_OK);
  CHECK(want_bytes == fc_q_payload_bytes(dim, bits, block));
  CHECK(coord_codec_feed(k, agg, u, p, want_bytes, why, sizeof why) == FEDC_OK);
  double slack, top;
  CHECK(coord_codec_end(k, &slack, &top, why, sizeof why) == FEDC_OK);
  res.scales_rc = fc_upload_quant_scales_check(clip, top, why, sizeof why);
  if (res.scales_rc != FEDC_OK) CHECK(strstr(why, "block scales allow an L2 norm") != NULL);
  fc_upload_rules r = {clip, 1000, 0};
  fc_agg_check chk;
  double w;
  res.values_rc = fc_upload_values_check(agg, u, &r, 100, slack, &chk, &w, why, sizeof why);
  res.l2_decoded = chk.l2;
  if (res.values_rc == FEDC_OK) {
    double before = fc_upload_quant_clip((float *)u->buf, dim, clip, slack, &chk);
    res.scaled = before >= 0;
    if (res.scaled) CHECK(fabs(before - res.l2_decoded) < 1e-12);
    double s = 0;
    for (uint64_t i = 0; i < dim; i++) s += (double)((float *)u->buf)[i] * ((float *)u->buf)[i];
    res.l2_folded = sqrt(s);
    CHECK(fabs(res.l2_folded - chk.l2) <= 1e-6 * (1 + chk.l2)); /* chk follows the scaling */
    if (out) memcpy(out, u->buf, dim * sizeof(float));
  }
  coord_codec_free(k);
  agg->ops->update_abort(agg, u);
  agg->ops->destroy(agg);
  free(c);
  return res;
}

/* Code +1 at scale clip / L in the first `nbig` blocks, 0 elsewhere. */
static uint8_t *forge(uint32_t bits, uint64_t dim, uint32_t block, double clip, uint64_t nbig) {
  int32_t L = fc_q_levels(bits);
  uint8_t *p = calloc(1, fc_q_payload_bytes(dim, bits, block)), *o = p;
  float s = (float)(clip / L);
  uint64_t b = 0;
  for (uint64_t first = 0; first < dim; first += block, b++) {
    uint64_t m = dim - first < block ? dim - first : block;
    float sc = b < nbig ? s : 0.0f;
    memcpy(o, &sc, 4);
    o += 4;
    for (uint64_t i = 0; i < m && b < nbig; i++) {
      if (bits == 8)
        o[i] = 1;
      else
        o[i / 2] |= (uint8_t)(1u << (4 * (i % 2)));
    }
    o += (m * bits + 7) / 8;
  }
  return p;
}

static void test_forged(void) {
  const uint64_t dim = 199210; /* the built-in MLP */
  const double clip = 10;
  for (uint32_t bits = 4; bits <= 8; bits += 4) {
    /* Every block at the largest scale: the review's 63x (4 bits) / 3.5x (8). */
    uint8_t *p = forge(bits, dim, 1024, clip, UINT64_MAX);
    result r = check_payload(bits, dim, 1024, clip, p, NULL);
    CHECK(r.scales_rc == FEDC_ERR_INVALID);
    free(p);
    /* One block: within the scales' bound and the rounding slack, so the
     * values pass; folded at the clip, not clip x sqrt(1024) / L. */
    p = forge(bits, dim, 1024, clip, 1);
    r = check_payload(bits, dim, 1024, clip, p, NULL);
    CHECK(r.scales_rc == FEDC_OK);
    CHECK(r.values_rc == FEDC_OK);
    CHECK(r.l2_folded <= clip * FC_QUANT_RADIUS_MAX);
    if (bits == 4) { /* clip x sqrt(1024) / 7 = 4.6x the clip, folded at 1.05 x the clip */
      CHECK(r.l2_decoded > 4 * clip);
      CHECK(r.l2_folded > clip * FC_QUANT_RADIUS_MAX * (1 - 1e-5));
    } else { /* sqrt(1024) / 127: within the clip whatever the codes, folded as decoded */
      CHECK(r.l2_decoded < clip);
      CHECK(fabs(r.l2_folded - r.l2_decoded) <= 1e-6 * r.l2_decoded);
    }
    printf("  %u bits, one forged block: decoded %.3f, folded %.6f (clip %g)\n", bits, r.l2_decoded, r.l2_folded,
           clip);
    free(p);
  }
}

/* 60 honest encodings of clipped vectors (8 and 4 bits, blocks of 256 and
 * 1024; a quarter at half the clip, the rest at it): never refused, never
 * past FC_QUANT_RADIUS_MAX x the clip. Returns the mean of <folded, x> /
 * ||x||^2 (1 when unbiased) and counts those scaled down. spikes: a value
 * of up to 20x the others every 997 (a block's scale set by one value,
 * so its rounding is coarse). */
static double honest_gain(int spikes, int *scaled) {
  const uint64_t dim = 5000;
  const double clip = 1;
  fc_rng rng;
  fc_rng_seed(&rng, 42);
  float *x = malloc(dim * sizeof *x), *folded = malloc(dim * sizeof *folded);
  double gain = 0;
  *scaled = 0;
  for (int t = 0; t < 60; t++) {
    uint32_t bits = t % 2 ? 4 : 8, block = t % 3 ? 256 : 1024;
    double s = 0;
    for (uint64_t i = 0; i < dim; i++) {
      double v = fc_rng_uniform_double(&rng) + fc_rng_uniform_double(&rng) + fc_rng_uniform_double(&rng) - 1.5 +
                 (spikes && i % 997 == 0 ? 20 * fc_rng_uniform_double(&rng) : 0);
      x[i] = (float)v;
      s += v * v;
    }
    double target = t % 4 == 0 ? 0.5 * clip : clip * (1 - 1e-6); /* as the client clips */
    for (uint64_t i = 0; i < dim; i++) x[i] = (float)(x[i] * (target / sqrt(s)));
    uint8_t *p = malloc(fc_q_payload_bytes(dim, bits, block));
    CHECK(fc_q_encode(x, dim, bits, block, &rng, p) == FEDC_OK);
    result r = check_payload(bits, dim, block, clip, p, folded);
    CHECK(r.scales_rc == FEDC_OK);
    CHECK(r.values_rc == FEDC_OK);
    CHECK(r.l2_folded <= clip * FC_QUANT_RADIUS_MAX);
    double dot = 0, xx = 0;
    for (uint64_t i = 0; i < dim; i++) dot += (double)folded[i] * x[i], xx += (double)x[i] * x[i];
    gain += dot / xx;
    if (r.scaled) {
      (*scaled)++;
    } else { /* folded exactly as decoded */
      float *dec = malloc(dim * sizeof *dec);
      char why[200];
      CHECK(fc_q_decode(p, fc_q_payload_bytes(dim, bits, block), dim, bits, block, clip, dec, why, sizeof why) ==
            FEDC_OK);
      CHECK(memcmp(dec, folded, dim * sizeof *dec) == 0);
      free(dec);
    }
    free(p);
  }
  free(x);
  free(folded);
  return gain / 60;
}

static void test_honest(void) {
  int scaled_smooth, scaled_spiky;
  double smooth = honest_gain(0, &scaled_smooth), spiky = honest_gain(1, &scaled_spiky);
  printf("  60 honest encodings each: smooth values %d scaled down, mean gain %.4f; spiky values %d scaled down, mean "
         "gain %.4f\n",
         scaled_smooth, smooth, scaled_spiky, spiky);
  /* Smooth values: the bound leaves room for the rounding; unbiased within
   * the rounding's own noise (projecting onto the clip itself: 0.98). */
  CHECK(scaled_smooth <= 10);
  CHECK(fabs(smooth - 1) < 0.005);
  /* Spiky values at 4 bits round coarsely: past 1.05 x the clip they are
   * shrunk (documented: 8 bits or smaller blocks where the clip binds). */
  CHECK(spiky > 0.85 && spiky <= 1.0 + 0.005);
}

int main(void) {
  test_forged();
  test_honest();
  return CHECK_DONE();
}

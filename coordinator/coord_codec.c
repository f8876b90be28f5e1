/*
 * coord_codec.c - the coordinator's side of compressed uploads (protocol
 * 1.9), kept out of coordinator.c's upload handler, which calls it at
 * begin, for each accepted chunk, at the end and when the upload goes.
 *
 * Owns: the operator's encoding policy (upload_bits, upload_block; the
 * coordinator decides, the client follows the task), the expected wire spec
 * of a compressed payload, and two streaming decoders between the chunk
 * receiver (which still hashes and frames the bytes as they came, so the
 * digest and the audit cover the bytes received) and the aggregator:
 *   - quantized plaintext (common/quant.h): each block's scale and codes are
 *     validated as it completes and its floats go straight to update_chunk,
 *     so the aggregator's own checks (NaN/Inf, L2 norm, max |value|) see the
 *     dequantized update as they see a float32 one; no float copy of the
 *     update is held.
 *   - narrow-ring masked vectors (secagg/ring.c): ring_bits/8-byte words
 *     widened to u32 for the SecAgg fold (mod 2^32; the sum is reduced mod
 *     2^ring_bits after unmasking).
 * May call: common/quant.h, secagg/secagg.h, the aggregator's update_chunk.
 */
#include "coordinator/coord_codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/quant.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"

#define WIDEN_WORDS 2048 /* u32 words folded per update_chunk call */

struct coord_codec {
  int ring;          /* 1: narrow-ring masked vector; 0: quantized plaintext */
  fc_model_spec spec; /* the wire payload's */
  fc_q_dec q;
  uint32_t wbytes;   /* ring: bytes per word */
  uint8_t carry[4];  /* ring: a word split across chunks */
  size_t have;
  uint64_t word;     /* ring: next word index */
  uint32_t *words;
  fc_agg *agg;       /* the fold target, for the sink */
  fc_agg_update *u;
};

int coord_codec_config_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  if (cfg->upload_bits != 32 && cfg->upload_bits != 8 && cfg->upload_bits != 4) {
    snprintf(err, errlen, "upload_bits must be 32 (float32), 8 or 4, not %u", cfg->upload_bits);
    return FEDC_ERR_INVALID;
  }
  if (!(cfg->secagg_range >= 0 && isfinite(cfg->secagg_range))) {
    snprintf(err, errlen, "secagg_range must be finite and >= 0 (0 = the clip norm)");
    return FEDC_ERR_INVALID;
  }
  if (cfg->upload_bits == 32) return FEDC_OK;
  if (!fc_q_supported(cfg->upload_bits, cfg->upload_block)) {
    snprintf(err, errlen, "upload_block must be even and in %u..%u values, not %u", FC_Q_BLOCK_MIN, FC_Q_BLOCK_MAX,
             cfg->upload_block);
    return FEDC_ERR_INVALID;
  }
  if (cfg->dp_noise_multiplier > 0) {
    snprintf(err, errlen, "upload_bits %u with differential privacy: the quantization would add to a client's "
                          "sensitivity; use upload_bits 32", cfg->upload_bits);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

void coord_codec_task(const fc_coord *c, Fedc__V1__Task *t) {
  if (c->cfg.upload_bits == 32 || c->cfg.engine.secagg) return; /* SecAgg: SecAggParams.quant_bits instead */
  t->upload_bits = c->cfg.upload_bits;
  t->upload_block = c->cfg.upload_block;
}

static int fold_values(void *ctx, uint64_t first, const float *v, size_t n) {
  coord_codec *k = ctx;
  return k->agg->ops->update_chunk(k->agg, k->u, first * sizeof(float), v, n * sizeof(float));
}

int coord_codec_begin(const fc_coord *c, const Fedc__V1__UpdateMeta *meta, int masked, uint64_t dim, double clip,
                      const fc_model_spec **want, uint64_t *want_bytes, coord_codec **out, char *why,
                      size_t whylen) {
  *out = NULL;
  const fc_model_spec *w = *want;
  if (masked) {
    if (w->n != 1 || w->t[0].dtype != FC_DTYPE_U8) return FEDC_OK; /* the 32-bit ring: folds as it is */
    uint64_t bytes = fc_tensor_numel(&w->t[0]);
    /* Narrow ring: dim coordinates and the weight, ring_bits/8 bytes each. */
    if (bytes % (dim + 1) || bytes / (dim + 1) < 1 || bytes / (dim + 1) > 4) {
      snprintf(why, whylen, "masked vector of %llu bytes does not hold %llu words", (unsigned long long)bytes,
               (unsigned long long)(dim + 1));
      return FEDC_ERR_INTERNAL;
    }
    coord_codec *k = calloc(1, sizeof *k);
    if (!k || !(k->words = malloc(WIDEN_WORDS * sizeof *k->words))) {
      free(k);
      return FEDC_ERR_NOMEM;
    }
    k->ring = 1;
    k->wbytes = (uint32_t)(bytes / (dim + 1));
    *out = k;
    return FEDC_OK;
  }
  uint32_t bits = meta->upload_bits ? meta->upload_bits : 32, block = meta->upload_block;
  uint32_t want_bits = c->cfg.engine.secagg ? 32 : c->cfg.upload_bits;
  if (bits != want_bits || (bits != 32 && block != c->cfg.upload_block)) {
    if (want_bits == 32)
      snprintf(why, whylen, "update is %u-bit in blocks of %u: this coordinator takes float32 updates", bits, block);
    else
      snprintf(why, whylen, "update is %s: this coordinator requires %u-bit updates in blocks of %u (Task.upload_bits)",
               bits == 32 ? "float32" : "quantized differently", want_bits, c->cfg.upload_block);
    return FEDC_ERR_INVALID;
  }
  if (bits == 32) return FEDC_OK;
  coord_codec *k = calloc(1, sizeof *k);
  if (!k) return FEDC_ERR_NOMEM;
  /* No decoded value may exceed the clip (|x_i| <= ||x||); without clipping
   * the aggregator's max |value| x weight check still bounds it at the end. */
  int rc = fc_q_dec_init(&k->q, dim, bits, block, clip > 0 ? clip * (1 + 1e-4) : FC_AGG_MAX_WEIGHTED_ABS);
  if (rc != FEDC_OK) {
    free(k);
    snprintf(why, whylen, "cannot decode %u-bit updates in blocks of %u", bits, block);
    return rc;
  }
  uint64_t bytes = fc_q_payload_bytes(dim, bits, block);
  char name[16];
  snprintf(name, sizeof name, "update.q%u", bits);
  fc_model_spec_add(&k->spec, name, 1, &bytes);
  k->spec.t[0].dtype = FC_DTYPE_U8;
  *want = &k->spec;
  *want_bytes = bytes;
  *out = k;
  return FEDC_OK;
}

static int widen_feed(coord_codec *k, const uint8_t *p, size_t len) {
  int rc = FEDC_OK;
  size_t n = 0;
  while (len > 0 && rc == FEDC_OK) {
    size_t take = k->wbytes - k->have < len ? k->wbytes - k->have : len;
    memcpy(k->carry + k->have, p, take);
    k->have += take;
    p += take;
    len -= take;
    if (k->have < k->wbytes) break;
    fc_sa_ring_unpack(k->carry, 1, k->wbytes * 8, &k->words[n++]);
    k->have = 0;
    if (n == WIDEN_WORDS || len < k->wbytes) {
      rc = k->agg->ops->update_chunk(k->agg, k->u, k->word * 4, k->words, n * 4);
      k->word += n;
      n = 0;
    }
  }
  if (rc == FEDC_OK && n) {
    rc = k->agg->ops->update_chunk(k->agg, k->u, k->word * 4, k->words, n * 4);
    k->word += n;
  }
  return rc;
}

int coord_codec_feed(coord_codec *k, fc_agg *agg, fc_agg_update *u, const void *data, size_t len, char *why,
                     size_t whylen) {
  k->agg = agg;
  k->u = u;
  if (k->ring) {
    int rc = widen_feed(k, data, len);
    if (rc != FEDC_OK) snprintf(why, whylen, "cannot fold the masked input: %s", fedc_strerror(rc));
    return rc;
  }
  return fc_q_dec_feed(&k->q, data, len, fold_values, k, why, whylen);
}

int coord_codec_end(coord_codec *k, double *norm_slack, double *top_norm, char *why, size_t whylen) {
  *norm_slack = 0;
  *top_norm = 0;
  if (k->ring) return FEDC_OK; /* the chunk receiver counted every byte */
  int rc = fc_q_dec_end(&k->q, why, whylen);
  /* Each decoded value is within one step (its block's scale) of the
   * clipped value, so ||decoded|| <= clip + sqrt(sum_blocks m scale^2).
   * The scales are the client's word: upload_check.c bounds them by
   * top_norm (fc_upload_quant_scales_check) and scales the decoded update
   * onto its bound (fc_upload_quant_clip). */
  if (rc == FEDC_OK) {
    *norm_slack = sqrt(k->q.err2);
    *top_norm = sqrt(k->q.top2);
  }
  return rc;
}

void coord_codec_free(coord_codec *k) {
  if (!k) return;
  fc_q_dec_free(&k->q);
  free(k->words);
  free(k);
}

/*
 * upload_check.c - the value checks of one plaintext update (upload_check.h),
 * shared by the coordinator's UploadUpdate and an aggregator's.
 *
 * Invariant: a refusal names the first rule broken, in one line, and leaves
 * the slot as it was (the caller aborts it).
 */
#include "coordinator/upload_check.h"

#include <math.h>
#include <stdio.h>

#include "common/tensor.h"
#include "fedc/error.h"

int fc_upload_meta_check(uint64_t examples, double loss, int masked, char *why, size_t whylen) {
  if (examples == 0 && !masked) {
    snprintf(why, whylen, "update reports 0 examples");
    return FEDC_ERR_INVALID;
  }
  /* A loss is a mean of non-negative per-example losses; the bound keeps
   * the round's mean loss meaningful whatever one client reports. */
  if (!(loss >= 0 && loss <= FC_MAX_TRAIN_LOSS)) {
    snprintf(why, whylen, "update reports train_loss %g: must be finite and in [0, %g]", loss, FC_MAX_TRAIN_LOSS);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

double fc_upload_weight(const fc_upload_rules *r, uint64_t examples) {
  if (r->uniform) return 1; /* DP: uniform weights bound one client's effect by the clip */
  return (double)(examples < r->max_weight ? examples : r->max_weight);
}

int fc_upload_values_check(fc_agg *a, fc_agg_update *u, const fc_upload_rules *r, uint64_t examples, double slack,
                           fc_agg_check *chk, double *weight, char *why, size_t whylen) {
  if (a->ops->update_check(a, u, chk) != FEDC_OK) {
    snprintf(why, whylen, "update has a NaN/Inf value at parameter %zu", chk->bad_index);
    return FEDC_ERR_INVALID;
  }
  /* The clip norm is announced in the task (it changes between rounds only);
   * allow float rounding of the client's own clipping (relative 1e-4). */
  if (r->clip > 0 && chk->l2 > r->clip * (1.0 + 1e-4) + slack) {
    snprintf(why, whylen, "update L2 norm %.6g exceeds the clip norm %.6g", chk->l2, r->clip);
    return FEDC_ERR_INVALID;
  }
  double w = fc_upload_weight(r, examples);
  /* Even with clipping off, one update must not overflow the aggregate and
   * so abandon the round for everyone else. */
  if (chk->amax * w > FC_AGG_MAX_WEIGHTED_ABS) {
    snprintf(why, whylen, "update too large: max |value| %.3g x weight %.0f exceeds %.0e", chk->amax, w,
             FC_AGG_MAX_WEIGHTED_ABS);
    return FEDC_ERR_INVALID;
  }
  *weight = w;
  return FEDC_OK;
}

int fc_upload_quant_scales_check(double clip, double top_norm, char *why, size_t whylen) {
  if (clip > 0 && !(top_norm <= clip * (1.0 + 1e-4))) {
    snprintf(why, whylen,
             "quantized update's block scales allow an L2 norm of %.6g, past the clip norm %.6g (a block's scale x "
             "levels must be its largest |value|)",
             top_norm, clip);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* x *= f in float, the new sum of squares in double. */
static double scale_sumsq(float *x, size_t n, double f) {
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    x[i] = (float)(x[i] * f);
    s += (double)x[i] * x[i];
  }
  return s;
}

double fc_upload_quant_clip(float *x, size_t n, double clip, double slack, fc_agg_check *chk) {
  if (!(clip > 0)) return -1;
  double radius = clip * fmin(sqrt(1.0 + slack * slack / (4.0 * clip * clip)), FC_QUANT_RADIUS_MAX);
  if (!(chk->l2 > radius)) return -1;
  double before = chk->l2, f = radius / before;
  double s = scale_sumsq(x, n, f);
  /* float rounding of the product may leave it a hair over: shrink once more */
  if (sqrt(s) > radius) s = scale_sumsq(x, n, radius / sqrt(s) * (1.0 - 1e-7));
  chk->l2 = sqrt(s);
  chk->amax *= f;
  return before;
}

/*
 * dp_clip.c - adaptive clipping's clip update and its range (dp_clip.h).
 *
 * Why a range: the geometric update has no memory of where it started, so
 * one client that reports "clipped" every round adds -1/m to the noisy
 * fraction (m the expected cohort) round after round, and under secure
 * aggregation, where the bit is one masked coordinate the coordinator cannot
 * check, it can saturate the fraction and move the clip by the full step
 * exp(eta max(gamma, 1 - gamma)) every round (security review, issue 20,
 * finding 9: 1 -> 1.65 in 5 rounds at eta 0.2). The range caps the drift at
 * a factor the operator chose (10 either way by default: Andrew et al.'s
 * experiments start a decade or more from the norm they settle at, and our
 * own runs moved 0.1 -> 0.26, docs/results.md).
 */
#include "coordinator/dp_clip.h"

#include <math.h>
#include <stdio.h>

#include "fedc/error.h"

int fc_dp_clip_range(double start, double cfg_min, double cfg_max, double *lo, double *hi, char *err, size_t errlen) {
  const char *bad = NULL;
  if (!(cfg_min == 0 || (cfg_min >= FC_DP_CLIP_FLOOR && cfg_min <= FC_DP_CLIP_CEIL)))
    bad = "dp_clip_min must be 0 (start / 10) or in [1e-6, 1e6]";
  else if (!(cfg_max == 0 || (cfg_max >= FC_DP_CLIP_FLOOR && cfg_max <= FC_DP_CLIP_CEIL)))
    bad = "dp_clip_max must be 0 (start x 10) or in [1e-6, 1e6]";
  if (bad) {
    snprintf(err, errlen, "%s", bad);
    return FEDC_ERR_INVALID;
  }
  double l = cfg_min > 0 ? cfg_min : fmax(start / FC_DP_CLIP_SPAN, FC_DP_CLIP_FLOOR);
  double h = cfg_max > 0 ? cfg_max : fmin(start * FC_DP_CLIP_SPAN, FC_DP_CLIP_CEIL);
  /* Compared as the float the clip is kept in: --dp-clip 0.1 --dp-clip-max 0.1
   * is a range of one value, though (double)0.1f > 0.1. */
  if (!((float)l <= (float)start && (float)start <= (float)h)) {
    snprintf(err, errlen,
             "adaptive clipping starts at clip %g, outside its range [%g, %g] (dp_clip_min, dp_clip_max; 0 = a "
             "factor 10 either side of the start, within [1e-6, 1e6])",
             start, l, h);
    return FEDC_ERR_INVALID;
  }
  *lo = l;
  *hi = h;
  return FEDC_OK;
}

double fc_dp_clip_next(double clip, double centred, double expected, double gamma, double eta, double lo, double hi,
                       double *fraction) {
  double b = centred / expected + 0.5;
  /* A fraction is in [0, 1] (a NaN, which no count should give, reads as
   * gamma: no move). */
  if (!(b >= 0)) b = isnan(b) ? gamma : 0;
  if (b > 1) b = 1;
  double next = clip * exp(-eta * (b - gamma));
  if (!(next >= lo)) next = lo;
  if (next > hi) next = hi;
  if (fraction) *fraction = b;
  return next;
}

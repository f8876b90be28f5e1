/*
 * dp_clip.h - adaptive clipping's clip update (Andrew et al. 2021, Algorithm 1
 * with the geometric update) and the operator's range that bounds it.
 *
 * One round: b = noisy centred count of unclipped updates / expected cohort
 * + 1/2, clamped to [0, 1] (a fraction), then C <- C exp(-eta (b - gamma)),
 * clamped to [lo, hi]. Both clamps are post-processing of the noised count:
 * no privacy cost. The clamp on b bounds one round's step to a factor
 * exp(eta max(gamma, 1 - gamma)) whatever the count says; the range bounds
 * where any number of rounds can take the clip, so a client that votes one
 * way every round (or, under secure aggregation, puts any value in its
 * masked bit) cannot push it past hi or below lo.
 *
 * No I/O, no state: the coordinator keeps the clip (coord_dp.c,
 * dp_privatize) and checks the range at start (cfg_check).
 */
#ifndef FEDC_COORD_DP_CLIP_H
#define FEDC_COORD_DP_CLIP_H

#include <stddef.h>

/* Outer limits of any range: a usable float norm. */
#define FC_DP_CLIP_FLOOR 1e-6
#define FC_DP_CLIP_CEIL 1e6
/* The default range is [start / FC_DP_CLIP_SPAN, start x FC_DP_CLIP_SPAN]. */
#define FC_DP_CLIP_SPAN 10.0

/* The range for a clip starting at `start`, from the configured bounds
 * cfg_min, cfg_max (0 = the default, within the outer limits). FEDC_OK with
 * *lo <= start <= *hi, else FEDC_ERR_INVALID and a one-line reason in err
 * (a bound negative, NaN or outside [1e-6, 1e6], min above max, or the start
 * outside the range). *lo and *hi are written only on success. */
int fc_dp_clip_range(double start, double cfg_min, double cfg_max, double *lo, double *hi, char *err, size_t errlen);

/* The next round's clip from this round's clip, the noisy centred count
 * (sum of b_i - 1/2 plus noise), the expected cohort (> 0), the target
 * quantile gamma in (0, 1), the learning rate eta > 0 and the range
 * [lo, hi]. *fraction (may be NULL) gets the clamped b. */
double fc_dp_clip_next(double clip, double centred, double expected, double gamma, double eta, double lo, double hi,
                       double *fraction);

#endif

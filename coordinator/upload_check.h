/*
 * upload_check.h - the checks every plaintext update passes before it is
 * folded, wherever it is folded: the coordinator's UploadUpdate
 * (coord_upload.c) and an aggregator's (aggr_upload.c, issue 23). One copy,
 * so an update an aggregator accepts is exactly one the coordinator would
 * have accepted.
 *
 * Pure: no locks, no I/O. May call: aggregate.h (the slot's value check).
 */
#ifndef FEDC_COORD_UPLOAD_CHECK_H
#define FEDC_COORD_UPLOAD_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/aggregate.h"

typedef struct fc_upload_rules {
  double clip;         /* the task's L2 bound (0 = none) */
  uint64_t max_weight; /* FedAvg weight cap per update (max_example_weight) */
  int uniform;         /* differential privacy: every weight is 1 */
} fc_upload_rules;

/* UpdateMeta before any byte: a plaintext update reports examples > 0, and
 * its loss is finite in [0, FC_MAX_TRAIN_LOSS]. FEDC_OK or FEDC_ERR_INVALID
 * with one line in why. */
int fc_upload_meta_check(uint64_t examples, double loss, int masked, char *why, size_t whylen);

/* The weight an update of `examples` folds with under r. */
double fc_upload_weight(const fc_upload_rules *r, uint64_t examples);

/* A whole update in its staging slot u of a: NaN/Inf, the clip (relative
 * 1e-4 for the client's own float rounding, plus `slack` for quantization),
 * and the overflow bound FC_AGG_MAX_WEIGHTED_ABS of max|value| x weight.
 * FEDC_OK with *chk and *weight, else FEDC_ERR_INVALID with one line in why. */
int fc_upload_values_check(fc_agg *a, fc_agg_update *u, const fc_upload_rules *r, uint64_t examples, double slack,
                           fc_agg_check *chk, double *weight, char *why, size_t whylen);

/* A quantized update (common/quant.h), decoded into x (n floats): the
 * slack above comes from block scales the client chose, so on their own
 * they let a client send code 1 at the largest scale everywhere and pass
 * with clip x sqrt(n) / L. Before fc_upload_values_check: refuse scales no
 * clipped update has (top_norm, coord_codec_end's, above the clip; an
 * honest block's scale x L is its largest |value|). After it: scale x onto
 * the ball of radius clip x min(sqrt(1 + slack^2 / (4 clip^2)),
 * FC_QUANT_RADIUS_MAX) when its norm is past that (a forged code pattern
 * within the scales, or rounding). The rounding's variance is at most
 * slack^2 / 4, so an honest update at the clip decodes to about that
 * radius and is rarely shrunk (the rounding stays unbiased; projecting
 * onto the clip itself shrank honest 4-bit updates at the clip to 0.83-0.98
 * of their length, a second review measured), while a forged one is held
 * to FC_QUANT_RADIUS_MAX x the clip. chk's l2 and amax follow; returns the
 * norm as decoded if it was scaled, else -1. */
#define FC_QUANT_RADIUS_MAX 1.05
int fc_upload_quant_scales_check(double clip, double top_norm, char *why, size_t whylen);
double fc_upload_quant_clip(float *x, size_t n, double clip, double slack, fc_agg_check *chk);

#endif

/*
 * pipeline.h - the client's update pipeline, one function per stage:
 *
 *   delta -> clip -> quantize -> (noise) -> mask -> upload
 *
 * delta and clip run for every update; with secure aggregation the clipped
 * delta is quantized (fc_stage_quantize), masked by the SecAgg client core
 * (client/secagg_client_masked.c) and uploaded as a u32 vector; without it
 * the float delta is uploaded as it is. Differential-privacy noise is added
 * by the coordinator (central DP), or, under secure aggregation, by each
 * client after quantize (fc_stage_dp_noise, distributed DP).
 * The stages are pure functions of their inputs; the runtime
 * (client/runtime.c, runtime_secagg.c) strings them together.
 */
#ifndef FEDC_CLIENT_PIPELINE_H
#define FEDC_CLIENT_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "secagg/secagg.h"

/* out = trained - global when the trainer returned weights (kind
 * FEDC_OUTPUT_WEIGHTS); FEDC_ERR_NONFINITE if anything is NaN/Inf. */
int fc_stage_delta(float *out, const float *global, size_t n, int kind);
/* Scale delta to L2 norm <= clip. Returns the scale applied; *norm_out the norm after. */
double fc_stage_clip(float *delta, size_t n, float clip, double *norm_out);
/* Weighted, stochastically rounded integers for secure aggregation:
 * out[0..dim) from w * delta, out[dim] = w, w = min(examples, max_weight),
 * and out[dim + 1] = +-bit_scale (unclipped or not) if p->bit_scale.
 * FEDC_ERR_INVALID for examples == 0; FEDC_ERR_CRYPTO if no randomness. */
int fc_stage_quantize(const float *delta, uint64_t examples, int unclipped, const fc_sa_params *p,
                      const uint64_t *seed, uint32_t *out);
/* Plaintext compressed upload (protocol 1.9): the clipped delta, b-bit codes
 * in blocks (common/quant.h, fc_q_payload_bytes bytes in out), rounding
 * seeded from the system's CSPRNG. */
int fc_stage_compress(const float *delta, uint64_t n, uint32_t bits, uint32_t block, uint8_t *out);
/* Distributed DP: add this client's discrete Gaussian noise (p->dp_sigma on
 * the model coordinates, p->dp_bit_sigma on the clipping bit) to a quantized
 * input of fc_sa_entries(p) entries. No-op without DP. */
int fc_stage_dp_noise(uint32_t *q, const fc_sa_params *p);

#endif

/*
 * coord_codec.h - the coordinator's decoding of compressed uploads (protocol
 * 1.9): quantized plaintext updates (common/quant.h) and masked vectors in
 * a narrow SecAgg ring (secagg/ring.c). See coord_codec.c.
 */
#ifndef FEDC_COORD_CODEC_H
#define FEDC_COORD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"
#include "coordinator/aggregate.h"
#include "coordinator/coordinator.h"
#include "fedc/v1/fedc.pb-c.h"

typedef struct coord_codec coord_codec;

/* The protocol minor that brought compressed uploads (transport.h): older
 * clients are refused at check-in when upload_bits is not 32. */
#define COORD_CODEC_MINOR 9

/* Operator settings: upload_bits 32, 8 or 4; upload_block in the codec's
 * range; no compressed plaintext uploads under central DP (the rounding
 * would add to one client's sensitivity). 0 or FEDC_ERR_INVALID with why. */
int coord_codec_config_check(const fc_coord_cfg *cfg, char *err, size_t errlen);

/* The encoding the coordinator requires of plaintext updates (Task fields). */
void coord_codec_task(const fc_coord *c, Fedc__V1__Task *t);

/* An upload begins. *want is the spec the receiver expects (the model's, or
 * the masked vector's from coord_sa_masked_begin) and *want_bytes its size;
 * for a compressed upload both are replaced by the wire payload's (the
 * spec then points into *out, which stays valid until coord_codec_free).
 * *out is NULL when the payload folds as it is (float32, u32 masked).
 * dim: model parameters; clip: the clip norm in force (0 = none).
 * FEDC_ERR_INVALID with why when the client's declared encoding is not the
 * coordinator's. */
int coord_codec_begin(const fc_coord *c, const Fedc__V1__UpdateMeta *meta, int masked, uint64_t dim,
                      double clip, const fc_model_spec **want, uint64_t *want_bytes, coord_codec **out, char *why,
                      size_t whylen);
/* Bytes that arrived (already accepted by the chunk receiver, in order):
 * decoded, validated and folded into the update with agg's update_chunk. */
int coord_codec_feed(coord_codec *k, fc_agg *agg, fc_agg_update *u, const void *data, size_t len, char *why,
                     size_t whylen);
/* The stream ended: every block arrived. *norm_slack: how far rounding may
 * have moved the decoded update's L2 norm past the client's clip (0 for
 * the narrow ring, checked on the sum instead); *top_norm: sqrt of the sum
 * over blocks of (scale x L)^2, at most the clipped update's norm for an
 * honest encoder (fc_upload_quant_bound). */
int coord_codec_end(coord_codec *k, double *norm_slack, double *top_norm, char *why, size_t whylen);
void coord_codec_free(coord_codec *k);

#endif

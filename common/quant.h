/*
 * quant.h - compressed plaintext uploads: unbiased stochastic quantization
 * of a float32 update into b-bit codes with one float32 scale per block of
 * values. Encoder (client) and streaming decoder (coordinator) live here
 * once, below both (ARCHITECTURE.md).
 *
 * Scheme: QSGD (Alistarh et al., NeurIPS 2017) with a per-block max-abs
 * scale instead of one norm per vector, as in the "probabilistic
 * quantization" of Konecny et al. 2016 ("Federated Learning: Strategies for
 * Improving Communication Efficiency", section 3.2) applied block by block.
 * For a block of values x_1..x_m with a = max |x_i|, L = 2^(b-1) - 1 and
 * s = a / L (rounded up to a float32 so |x_i| / s <= L), each value is sent
 * as the integer code q_i in [-L, L] with
 *     q_i = floor(x_i / s) + 1 with probability frac(x_i / s), else floor(x_i / s)
 * so E[q_i s] = x_i exactly (unbiased) and |q_i s - x_i| < s (error bound).
 * The symmetric range leaves one code unused (-2^(b-1)): the decoder refuses it.
 *
 * Payload (one DTYPE_U8 tensor named "update.q<b>", little-endian):
 *   | per block, nblocks = ceil(dim / block) times      |
 *   |   scale  | float32 | finite, >= 0, scale * L <= max_abs |
 *   |   codes  | ceil(m * b / 8) bytes; b = 8: int8 each; b = 4: two's-
 *   |          | complement nibbles, low nibble first; an unused high nibble
 *   |          | of the last byte is 0; m = block, or what is left in the last |
 * Blocks are self-contained, so the coordinator decodes each as it arrives
 * and folds the floats straight into its accumulator (no float32 copy of
 * the update is ever held).
 */
#ifndef FEDC_COMMON_QUANT_H
#define FEDC_COMMON_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

#define FC_Q_BLOCK_MIN 16u
#define FC_Q_BLOCK_MAX 65536u
#define FC_Q_BLOCK_DEFAULT 1024u

/* 1 if bits (8 or 4; 32 = float32, not a quantized encoding) and block are a
 * supported encoding: bits in {4, 8}, block in [FC_Q_BLOCK_MIN, FC_Q_BLOCK_MAX]
 * and a multiple of 2. */
int fc_q_supported(uint32_t bits, uint32_t block);
/* Largest code magnitude: 2^(b-1) - 1. */
static inline int32_t fc_q_levels(uint32_t bits) { return (int32_t)((1u << (bits - 1)) - 1); }
/* Bytes of the payload for dim values (0 if the encoding is unsupported or dim is 0). */
uint64_t fc_q_payload_bytes(uint64_t dim, uint32_t bits, uint32_t block);

/* Encode dim values x (all finite) into out (fc_q_payload_bytes bytes).
 * rng: the rounding's randomness (needs no secrecy, only no bias).
 * FEDC_ERR_INVALID on an unsupported encoding or a non-finite value. */
int fc_q_encode(const float *x, uint64_t dim, uint32_t bits, uint32_t block, fc_rng *rng, uint8_t *out);

/* The decoded values of one block are handed to the sink: values[0..n) are
 * coordinates first..first+n. A non-zero return stops the decoder with it. */
typedef int (*fc_q_sink)(void *ctx, uint64_t first, const float *values, size_t n);

/* Streaming decoder. Feed the payload in any slices; each completed block is
 * validated and handed to the sink. Errors are FEDC_ERR_INVALID with one
 * line in why; after an error every call fails. */
typedef struct fc_q_dec {
  uint64_t dim, blocks, done; /* blocks decoded so far */
  uint32_t bits, block;
  double max_abs;             /* largest scale * L accepted */
  double err2;                /* sum over blocks of m * scale^2: ||decoded - original||^2 < err2 */
  double top2;                /* sum over blocks of (scale * L)^2: an honest encoder's scale * L is its
                               * block's max |x|, so top2 <= ||x||^2 (coord_codec_end's bound) */
  uint8_t *buf;               /* one block's bytes */
  size_t have;
  float *vals;
  int failed;
} fc_q_dec;
/* max_abs: no decoded value may exceed it in magnitude (the clip norm when
 * clipping is on: each |x_i| <= ||x||). FEDC_ERR_INVALID (unsupported
 * encoding, max_abs not > 0) or FEDC_ERR_NOMEM. */
int fc_q_dec_init(fc_q_dec *d, uint64_t dim, uint32_t bits, uint32_t block, double max_abs);
int fc_q_dec_feed(fc_q_dec *d, const void *data, size_t len, fc_q_sink sink, void *ctx, char *why, size_t whylen);
/* The payload ended: FEDC_ERR_INVALID unless every block arrived whole. */
int fc_q_dec_end(fc_q_dec *d, char *why, size_t whylen);
void fc_q_dec_free(fc_q_dec *d);

/* Whole-buffer decode into out (dim floats); for tests and tools. */
int fc_q_decode(const void *payload, size_t len, uint64_t dim, uint32_t bits, uint32_t block, double max_abs,
                float *out, char *why, size_t whylen);

#endif

/*
 * quant.c - block quantization of plaintext updates (quant.h): the client's
 * encoder and the coordinator's streaming decoder.
 *
 * Invariants: a decoded value is code * scale with |code| <= L and
 * 0 <= scale * L <= max_abs, so nothing the decoder emits is non-finite or
 * larger than the caller's bound; a block is emitted only once all its bytes
 * arrived and validated, so a refused payload has folded at most the blocks
 * before the bad one (the caller aborts the whole update then).
 */
#include "common/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

int fc_q_supported(uint32_t bits, uint32_t block) {
  return (bits == 8 || bits == 4) && block >= FC_Q_BLOCK_MIN && block <= FC_Q_BLOCK_MAX && block % 2 == 0;
}

static uint64_t codes_bytes(uint64_t m, uint32_t bits) { return (m * bits + 7) / 8; }

uint64_t fc_q_payload_bytes(uint64_t dim, uint32_t bits, uint32_t block) {
  if (!fc_q_supported(bits, block) || dim == 0) return 0;
  uint64_t full = dim / block, rest = dim % block;
  return full * (4 + codes_bytes(block, bits)) + (rest ? 4 + codes_bytes(rest, bits) : 0);
}

static void put_f32(uint8_t *p, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

static float get_f32(const uint8_t *p) {
  uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

int fc_q_encode(const float *x, uint64_t dim, uint32_t bits, uint32_t block, fc_rng *rng, uint8_t *out) {
  if (!fc_q_supported(bits, block) || dim == 0) return FEDC_ERR_INVALID;
  const int32_t L = fc_q_levels(bits);
  uint8_t *o = out;
  for (uint64_t first = 0; first < dim; first += block) {
    uint64_t m = dim - first < block ? dim - first : block;
    const float *v = x + first;
    float amax = 0;
    for (uint64_t i = 0; i < m; i++) {
      if (!isfinite(v[i])) return FEDC_ERR_INVALID;
      float a = fabsf(v[i]);
      if (a > amax) amax = a;
    }
    /* The scale as sent (float32), rounded up so every |x| / scale <= L:
     * the rounding below then never needs a clamp, which would bias it. */
    float scale = amax / (float)L;
    while ((double)scale * L < (double)amax) scale = nextafterf(scale, INFINITY);
    put_f32(o, scale);
    o += 4;
    memset(o, 0, codes_bytes(m, bits));
    for (uint64_t i = 0; i < m; i++) {
      int32_t q = 0;
      if (scale > 0) {
        double r = (double)v[i] / (double)scale;
        double f = floor(r);
        q = (int32_t)f + (fc_rng_uniform_double(rng) < r - f ? 1 : 0);
        if (q > L) q = L; /* only when r == L exactly and the draw is < 0: cannot happen, kept for safety */
        if (q < -L) q = -L;
      }
      if (bits == 8)
        o[i] = (uint8_t)(int8_t)q;
      else
        o[i / 2] |= (uint8_t)(((uint32_t)q & 0xFu) << (4 * (i % 2)));
    }
    o += codes_bytes(m, bits);
  }
  return FEDC_OK;
}

int fc_q_dec_init(fc_q_dec *d, uint64_t dim, uint32_t bits, uint32_t block, double max_abs) {
  memset(d, 0, sizeof *d);
  if (!fc_q_supported(bits, block) || dim == 0 || !(max_abs > 0)) return FEDC_ERR_INVALID;
  d->dim = dim;
  d->bits = bits;
  d->block = block;
  d->blocks = (dim + block - 1) / block;
  d->max_abs = max_abs;
  d->buf = malloc(4 + codes_bytes(block, bits));
  d->vals = malloc((size_t)block * sizeof *d->vals);
  if (!d->buf || !d->vals) {
    fc_q_dec_free(d);
    return FEDC_ERR_NOMEM;
  }
  return FEDC_OK;
}

void fc_q_dec_free(fc_q_dec *d) {
  free(d->buf);
  free(d->vals);
  d->buf = NULL;
  d->vals = NULL;
}

/* Validate and decode the block in d->buf (m values) into d->vals. */
static int decode_block(fc_q_dec *d, uint64_t m, char *why, size_t whylen) {
  const int32_t L = fc_q_levels(d->bits);
  float scale = get_f32(d->buf);
  const uint8_t *c = d->buf + 4;
  if (!isfinite(scale) || scale < 0 || (double)scale * L > d->max_abs) {
    snprintf(why, whylen, "quantized block %llu has scale %g: must be finite and in [0, %g]",
             (unsigned long long)d->done, (double)scale, d->max_abs / L);
    return FEDC_ERR_INVALID;
  }
  for (uint64_t i = 0; i < m; i++) {
    int32_t q;
    if (d->bits == 8) {
      q = (int8_t)c[i];
    } else {
      uint32_t nib = (c[i / 2] >> (4 * (i % 2))) & 0xFu;
      q = nib >= 8 ? (int32_t)nib - 16 : (int32_t)nib;
    }
    if (q < -L || q > L) {
      snprintf(why, whylen, "quantized block %llu: code %d at value %llu is outside [-%d, %d]",
               (unsigned long long)d->done, q, (unsigned long long)(d->done * d->block + i), L, L);
      return FEDC_ERR_INVALID;
    }
    d->vals[i] = (float)q * scale;
  }
  if (d->bits == 4 && m % 2 && (c[m / 2] >> 4) != 0) {
    snprintf(why, whylen, "quantized block %llu: padding nibble is not 0", (unsigned long long)d->done);
    return FEDC_ERR_INVALID;
  }
  d->err2 += (double)m * (double)scale * (double)scale;
  d->top2 += (double)scale * L * ((double)scale * L);
  return FEDC_OK;
}

int fc_q_dec_feed(fc_q_dec *d, const void *data, size_t len, fc_q_sink sink, void *ctx, char *why, size_t whylen) {
  const uint8_t *p = data;
  int rc = FEDC_OK;
  if (d->failed) {
    snprintf(why, whylen, "quantized payload already refused");
    return FEDC_ERR_INVALID;
  }
  while (len > 0) {
    if (d->done >= d->blocks) {
      snprintf(why, whylen, "quantized payload longer than its %llu blocks", (unsigned long long)d->blocks);
      rc = FEDC_ERR_INVALID;
      goto out;
    }
    uint64_t first = d->done * d->block;
    uint64_t m = d->dim - first < d->block ? d->dim - first : d->block;
    size_t need = (size_t)(4 + codes_bytes(m, d->bits));
    size_t take = need - d->have < len ? need - d->have : len;
    memcpy(d->buf + d->have, p, take);
    d->have += take;
    p += take;
    len -= take;
    if (d->have < need) break;
    if ((rc = decode_block(d, m, why, whylen)) != FEDC_OK) goto out;
    if (sink && (rc = sink(ctx, first, d->vals, (size_t)m)) != FEDC_OK) {
      snprintf(why, whylen, "cannot fold quantized block %llu: %s", (unsigned long long)d->done, fedc_strerror(rc));
      goto out;
    }
    d->done++;
    d->have = 0;
  }
out:
  if (rc != FEDC_OK) d->failed = 1;
  return rc;
}

int fc_q_dec_end(fc_q_dec *d, char *why, size_t whylen) {
  if (d->failed || d->done != d->blocks || d->have) {
    snprintf(why, whylen, "quantized payload ended after %llu of %llu blocks", (unsigned long long)d->done,
             (unsigned long long)d->blocks);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

typedef struct copy_sink {
  float *out;
} copy_sink;

static int copy_values(void *ctx, uint64_t first, const float *v, size_t n) {
  memcpy(((copy_sink *)ctx)->out + first, v, n * sizeof *v);
  return FEDC_OK;
}

int fc_q_decode(const void *payload, size_t len, uint64_t dim, uint32_t bits, uint32_t block, double max_abs,
                float *out, char *why, size_t whylen) {
  fc_q_dec d;
  int rc = fc_q_dec_init(&d, dim, bits, block, max_abs);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "unsupported encoding: %u bits, blocks of %u", bits, block);
    return rc;
  }
  copy_sink cs = {out};
  if (len != fc_q_payload_bytes(dim, bits, block)) {
    snprintf(why, whylen, "quantized payload of %zu bytes: %llu values in blocks of %u need %llu", len,
             (unsigned long long)dim, block, (unsigned long long)fc_q_payload_bytes(dim, bits, block));
    rc = FEDC_ERR_INVALID;
    goto out;
  }
  if ((rc = fc_q_dec_feed(&d, payload, len, copy_values, &cs, why, whylen)) != FEDC_OK) goto out;
  rc = fc_q_dec_end(&d, why, whylen);
out:
  fc_q_dec_free(&d);
  return rc;
}

/*
 * test_quant.c - common/quant.c, the block quantizer of compressed plaintext
 * uploads: unbiasedness (mean of many draws, fixed seed, a Hoeffding bound),
 * the per-value error bound, streaming decode equal to whole decode, and the
 * refusals a coordinator relies on: NaN/negative/too-large scales, codes out
 * of range, a non-zero padding nibble, a payload with a block missing or
 * extra bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/quant.h"
#include "fedc/error.h"
#include "tests/unit/check.h"

/* E[decode(encode(x))] = x. One block of 64 values whose max |x| is fixed,
 * so the scale s is the same in every draw; each decoded value lies in
 * [x - s, x + s] (width 2s, in fact within one step of width s), so by
 * Hoeffding the mean of N draws is off by more than t with probability at
 * most 2 exp(-2 N t^2 / s^2); t = 6 s / (2 sqrt N) gives 2 exp(-18) = 3e-8
 * per value. Rounding to nearest instead would be off by up to s / 2. */
static void test_unbiased(uint32_t bits) {
  enum { DIM = 64, N = 20000 };
  float x[DIM], y[DIM];
  double sum[DIM] = {0};
  for (int i = 0; i < DIM; i++) x[i] = (float)sin(0.37 * i + 0.1) * 0.03f;
  x[5] = 0.05f; /* the max: fixes the scale */
  uint64_t pb = fc_q_payload_bytes(DIM, bits, DIM);
  uint8_t *p = malloc(pb);
  fc_rng r;
  fc_rng_seed(&r, 26);
  char why[200];
  for (int d = 0; d < N; d++) {
    CHECK(fc_q_encode(x, DIM, bits, DIM, &r, p) == FEDC_OK);
    CHECK(fc_q_decode(p, pb, DIM, bits, DIM, 1.0, y, why, sizeof why) == FEDC_OK);
    for (int i = 0; i < DIM; i++) sum[i] += y[i];
  }
  double s = 0.05 / fc_q_levels(bits), t = 6 * s / (2 * sqrt((double)N));
  int off = 0;
  double worst = 0;
  for (int i = 0; i < DIM; i++) {
    double e = fabs(sum[i] / N - x[i]);
    if (e > worst) worst = e;
    off += e > t;
  }
  if (off) fprintf(stderr, "bits %u: %d means off by more than %g (worst %g)\n", bits, off, t, worst);
  CHECK_EQ_INT(off, 0);
  free(p);
}

/* Each decoded value is within one step (its block's scale) of the input;
 * dims that leave a partial last block, odd for 4-bit nibbles. */
static void test_roundtrip(uint32_t bits, uint64_t dim, uint32_t block) {
  float *x = malloc(dim * sizeof *x), *y = malloc(dim * sizeof *y);
  fc_rng r;
  fc_rng_seed(&r, 7);
  for (uint64_t i = 0; i < dim; i++) x[i] = (float)(fc_rng_normal(&r) * (i % 3 == 0 ? 1e-3 : 0.2));
  x[dim / 2] = 0; /* a zero block edge case is covered by the next block of zeros */
  uint64_t pb = fc_q_payload_bytes(dim, bits, block);
  uint8_t *p = malloc(pb);
  char why[200];
  CHECK(fc_q_encode(x, dim, bits, block, &r, p) == FEDC_OK);
  CHECK(fc_q_decode(p, pb, dim, bits, block, 100.0, y, why, sizeof why) == FEDC_OK);
  int bad = 0;
  for (uint64_t first = 0; first < dim; first += block) {
    uint64_t m = dim - first < block ? dim - first : block;
    double amax = 0;
    for (uint64_t i = 0; i < m; i++) amax = fmax(amax, fabs(x[first + i]));
    double s = amax / fc_q_levels(bits) * (1 + 1e-6);
    for (uint64_t i = 0; i < m; i++) bad += !(fabs(y[first + i] - x[first + i]) <= s);
  }
  CHECK_EQ_INT(bad, 0);
  free(x);
  free(y);
  free(p);
}

/* A block of zeros encodes to scale 0 and decodes to zeros. */
static void test_zeros(void) {
  float x[40] = {0}, y[40];
  uint8_t p[64];
  fc_rng r;
  fc_rng_seed(&r, 1);
  char why[200];
  CHECK(fc_q_payload_bytes(40, 4, 32) == 4 + 16 + 4 + 4);
  CHECK(fc_q_encode(x, 40, 4, 32, &r, p) == FEDC_OK);
  CHECK(fc_q_decode(p, 28, 40, 4, 32, 1.0, y, why, sizeof why) == FEDC_OK);
  for (int i = 0; i < 40; i++) CHECK(y[i] == 0);
}

static uint64_t folded;
static int count_sink(void *ctx, uint64_t first, const float *v, size_t n) {
  (void)ctx;
  (void)v;
  if (first != folded) return FEDC_ERR_INVALID;
  folded += n;
  return FEDC_OK;
}

/* Fed in 1..7-byte slices the decoder hands every block over, in order. */
static void test_streaming(void) {
  enum { DIM = 1001 };
  float x[DIM];
  for (int i = 0; i < DIM; i++) x[i] = (float)i / DIM - 0.5f;
  uint64_t pb = fc_q_payload_bytes(DIM, 4, 64);
  uint8_t *p = malloc(pb);
  fc_rng r;
  fc_rng_seed(&r, 3);
  CHECK(fc_q_encode(x, DIM, 4, 64, &r, p) == FEDC_OK);
  fc_q_dec d;
  char why[200];
  CHECK(fc_q_dec_init(&d, DIM, 4, 64, 1.0) == FEDC_OK);
  folded = 0;
  int rc = FEDC_OK;
  for (uint64_t at = 0; at < pb && rc == FEDC_OK;) {
    size_t n = (size_t)(1 + at % 7);
    if (n > pb - at) n = (size_t)(pb - at);
    rc = fc_q_dec_feed(&d, p + at, n, count_sink, NULL, why, sizeof why);
    at += n;
  }
  CHECK(rc == FEDC_OK);
  CHECK(fc_q_dec_end(&d, why, sizeof why) == FEDC_OK);
  CHECK_EQ_INT(folded, DIM);
  CHECK(d.err2 > 0);
  fc_q_dec_free(&d);
  free(p);
}

static void put_scale(uint8_t *p, float f) { memcpy(p, &f, 4); } /* little-endian hosts only (as the test data) */

/* Every malformed payload is refused with a reason; nothing is emitted past the bad block. */
static void test_refusals(void) {
  enum { DIM = 100, BLOCK = 32 };
  float x[DIM], y[DIM];
  for (int i = 0; i < DIM; i++) x[i] = 0.01f * (float)(i % 17) - 0.08f;
  fc_rng r;
  fc_rng_seed(&r, 5);
  char why[200];
  for (uint32_t bits = 4; bits <= 8; bits += 4) {
    uint64_t pb = fc_q_payload_bytes(DIM, bits, BLOCK);
    uint8_t *good = malloc(pb + 8), *p = malloc(pb + 8);
    CHECK(fc_q_encode(x, DIM, bits, BLOCK, &r, good) == FEDC_OK);
    CHECK(fc_q_decode(good, pb, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_OK);
    size_t blk = 4 + (size_t)(BLOCK * bits / 8); /* bytes of a full block */
    /* NaN, infinite and negative scales. */
    const float bad_scales[] = {NAN, INFINITY, -0.001f};
    for (int k = 0; k < 3; k++) {
      memcpy(p, good, pb);
      put_scale(p + blk, bad_scales[k]);
      why[0] = 0;
      CHECK(fc_q_decode(p, pb, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
      CHECK(strstr(why, "scale") != NULL);
    }
    /* A scale whose codes could reach past max_abs. */
    memcpy(p, good, pb);
    put_scale(p, 0.2f / (float)fc_q_levels(bits) * 1.01f);
    CHECK(fc_q_decode(p, pb, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
    /* The unused code -2^(b-1). */
    memcpy(p, good, pb);
    if (bits == 8)
      p[blk + 4 + 3] = 0x80;
    else
      p[blk + 4 + 3] = (uint8_t)((p[blk + 4 + 3] & 0x0F) | 0x80);
    why[0] = 0;
    CHECK(fc_q_decode(p, pb, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
    CHECK(strstr(why, "outside") != NULL);
    /* Wrong length: a block short, one byte short, one byte over. */
    CHECK(fc_q_decode(good, pb - blk, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
    CHECK(fc_q_decode(good, pb - 1, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
    CHECK(fc_q_decode(good, pb + 1, DIM, bits, BLOCK, 0.2, y, why, sizeof why) == FEDC_ERR_INVALID);
    /* Streaming: a payload that stops a block early fails at the end; an extra block fails in feed. */
    fc_q_dec d;
    CHECK(fc_q_dec_init(&d, DIM, bits, BLOCK, 0.2) == FEDC_OK);
    CHECK(fc_q_dec_feed(&d, good, pb - blk, NULL, NULL, why, sizeof why) == FEDC_OK);
    CHECK(fc_q_dec_end(&d, why, sizeof why) == FEDC_ERR_INVALID);
    CHECK(strstr(why, "blocks") != NULL);
    fc_q_dec_free(&d);
    CHECK(fc_q_dec_init(&d, DIM, bits, BLOCK, 0.2) == FEDC_OK);
    memcpy(p, good, pb);
    memcpy(p + pb, good, 8);
    CHECK(fc_q_dec_feed(&d, p, pb + 8, NULL, NULL, why, sizeof why) == FEDC_ERR_INVALID);
    fc_q_dec_free(&d);
    free(good);
    free(p);
  }
  /* 4-bit: a non-zero padding nibble in an odd-sized last block. */
  {
    float z[33];
    for (int i = 0; i < 33; i++) z[i] = 0.001f * i;
    uint64_t pb = fc_q_payload_bytes(33, 4, 32);
    uint8_t p[64];
    CHECK(pb == 4 + 16 + 4 + 1);
    CHECK(fc_q_encode(z, 33, 4, 32, &r, p) == FEDC_OK);
    CHECK(fc_q_decode(p, pb, 33, 4, 32, 1.0, y, why, sizeof why) == FEDC_OK);
    p[pb - 1] |= 0x10;
    CHECK(fc_q_decode(p, pb, 33, 4, 32, 1.0, y, why, sizeof why) == FEDC_ERR_INVALID);
  }
  /* Unsupported encodings. */
  CHECK(!fc_q_supported(16, 1024) && !fc_q_supported(8, 8) && !fc_q_supported(8, 1u << 20) && fc_q_supported(8, 256));
  CHECK(fc_q_payload_bytes(10, 3, 64) == 0);
  float nan_in[16] = {NAN};
  uint8_t out[64];
  CHECK(fc_q_encode(nan_in, 16, 8, 16, &r, out) == FEDC_ERR_INVALID);
}

int main(void) {
  test_unbiased(8);
  test_unbiased(4);
  test_roundtrip(8, 10007, 1024);
  test_roundtrip(4, 10007, 256);
  test_roundtrip(4, 999, 16);
  test_zeros();
  test_streaming();
  test_refusals();
  return CHECK_DONE();
}

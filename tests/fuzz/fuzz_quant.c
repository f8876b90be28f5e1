/*
 * fuzz_quant.c - the coordinator's decoder of quantized updates
 * (common/quant.c) on any bytes: the first two bytes choose the encoding
 * (8 or 4 bits), block size and value count, the rest is the payload, fed
 * in slices whose sizes come from the data. Whatever it accepts must decode
 * to finite values within the bound it was given.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/quant.h"
#include "fedc/error.h"
#include "fuzz.h"

static int check_values(void *ctx, uint64_t first, const float *v, size_t n) {
  (void)first;
  double bound = *(const double *)ctx;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i]) || fabs(v[i]) > bound) abort();
  return FEDC_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint32_t bits = data[0] & 1 ? 4 : 8;
  uint32_t block = 16u << (data[0] >> 1 & 3);          /* 16..128 */
  uint64_t dim = 1 + (uint64_t)data[1] * 3;            /* 1..766 */
  double bound = 0.5;
  data += 2;
  size -= 2;
  fc_q_dec d;
  if (fc_q_dec_init(&d, dim, bits, block, bound) != FEDC_OK) return 0;
  char why[200];
  int rc = FEDC_OK;
  size_t at = 0;
  while (at < size && rc == FEDC_OK) {
    size_t n = 1 + data[at] % 97;
    if (n > size - at) n = size - at;
    rc = fc_q_dec_feed(&d, data + at, n, check_values, &bound, why, sizeof why);
    at += n;
  }
  if (rc == FEDC_OK) (void)fc_q_dec_end(&d, why, sizeof why);
  fc_q_dec_free(&d);
  return 0;
}

/* 8-bit, blocks of 16, 31 values within the bound: a payload the decoder accepts whole. */
void fuzz_seed(uint8_t **data, size_t *size) {
  float x[31];
  for (int i = 0; i < 31; i++) x[i] = 0.4f * sinf((float)i);
  uint64_t bytes = fc_q_payload_bytes(31, 8, 16);
  *size = 2 + (size_t)bytes;
  *data = malloc(*size);
  (*data)[0] = 0;
  (*data)[1] = 10;
  fc_rng r;
  fc_rng_seed(&r, 1);
  if (fc_q_encode(x, 31, 8, 16, &r, *data + 2) != FEDC_OK) abort();
}

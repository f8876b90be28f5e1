/*
 * ring.c - the narrow ring of secure aggregation (protocol 1.9, secagg.h):
 * which ring a round uses, and moving the masked vector between its u32
 * working form and its ring_bits-wide wire form.
 *
 * Both sides work mod 2^32 as before (quantize, the one mask expansion,
 * the coordinator's fold and unmasking) and only the wire carries the low
 * ring_bits of each word: arithmetic mod 2^32 reduced mod 2^w is arithmetic
 * mod 2^w, because 2^w divides 2^32. So the masks are, in effect, generated
 * in Z_{2^w} (the low w bits of each PRG word), cancel there, and nothing
 * of the mask expansion is duplicated for the narrow case.
 *
 * Ring width rule: n inputs in [-L, L] sum into [-nL, nL], which needs
 * ceil(log2(2nL + 1)) bits, about ceil(log2(n (2^b - 1))); the width is
 * that rounded up to whole bytes (8..32), and no narrower than the weights'
 * sum n needs. E.g. b = 8: 16 bits up to n = 258, 24 up to 66052.
 */
#include <string.h>

#include "secagg/secagg.h"

uint32_t fc_sa_ring_bits(uint32_t n, uint32_t quant_bits) {
  if (quant_bits < 2 || quant_bits > 16 || n == 0) return 0;
  uint64_t L = (1ull << (quant_bits - 1)) - 1;
  for (uint32_t w = 8; w <= 32; w += 8)
    if ((uint64_t)n * L <= (1ull << (w - 1)) - 1 && (uint64_t)n <= (1ull << w) - 1) return w;
  return 0;
}

uint64_t fc_sa_wire_bytes(const fc_sa_params *p) {
  uint64_t bytes = p->quant_bits && p->ring_bits ? p->ring_bits / 8 : 4;
  return fc_sa_entries(p) * bytes;
}

void fc_sa_ring_pack(const uint32_t *v, uint64_t n, uint32_t ring_bits, uint8_t *out) {
  uint32_t wb = ring_bits / 8;
  for (uint64_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < wb; j++) out[i * wb + j] = (uint8_t)(v[i] >> (8 * j));
}

void fc_sa_ring_unpack(const uint8_t *in, uint64_t n, uint32_t ring_bits, uint32_t *out) {
  uint32_t wb = ring_bits / 8;
  for (uint64_t i = 0; i < n; i++) {
    uint32_t w = 0;
    for (uint32_t j = 0; j < wb; j++) w |= (uint32_t)in[i * wb + j] << (8 * j);
    out[i] = w;
  }
}

void fc_sa_ring_reduce(uint32_t *sum, uint64_t dim, uint32_t ring_bits) {
  if (ring_bits == 0 || ring_bits >= 32) return;
  uint32_t mask = (1u << ring_bits) - 1, sign = 1u << (ring_bits - 1);
  for (uint64_t i = 0; i < dim; i++) {
    uint32_t v = sum[i] & mask;
    sum[i] = (v ^ sign) - sign; /* sign-extend: two's complement in ring_bits */
  }
  sum[dim] &= mask;
}

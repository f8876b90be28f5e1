/*
 * test_sa_ring.c - the narrow SecAgg ring (secagg/ring.c, protocol 1.9):
 * the ring-width rule (known answers at the edges), packing and the sign
 * extension of the unmasked sum, masks that cancel mod 2^w when only the
 * low w bits of each masked word travel, whole rounds through the real
 * client and coordinator cores (tests/support/sa_harness.c) with dropouts
 * whose unmasked sum equals the survivors' quantized sum exactly, and the
 * refusal of a ring the cohort's sum could wrap in (by the coordinator core
 * and by every client).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/secagg_client.h"
#include "coordinator/secagg_server.h"
#include "fedc/error.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

static char pki[256], root[256];

static void test_ring_rule(void) {
  /* n L <= 2^(w-1) - 1, L = 2^(b-1) - 1, w in whole bytes. */
  CHECK_EQ_INT(fc_sa_ring_bits(10, 8), 16);
  CHECK_EQ_INT(fc_sa_ring_bits(258, 8), 16);   /* 258 x 127 = 32766 */
  CHECK_EQ_INT(fc_sa_ring_bits(259, 8), 24);   /* 32893 > 32767 */
  CHECK_EQ_INT(fc_sa_ring_bits(3, 4), 8);      /* 3 x 7 = 21 */
  CHECK_EQ_INT(fc_sa_ring_bits(18, 4), 8);     /* 126 */
  CHECK_EQ_INT(fc_sa_ring_bits(19, 4), 16);    /* 133 */
  CHECK_EQ_INT(fc_sa_ring_bits(10000, 8), 24); /* 1,270,000 < 2^23 */
  CHECK_EQ_INT(fc_sa_ring_bits(10000, 16), 32);
  CHECK_EQ_INT(fc_sa_ring_bits(10, 17), 0);
  CHECK_EQ_INT(fc_sa_ring_bits(10, 1), 0);
}

static void test_pack_reduce(void) {
  uint32_t v[4] = {0x12345678u, 0xFFFFFFFFu, 0x00018000u, 3}, w[4];
  uint8_t b[8];
  fc_sa_ring_pack(v, 4, 16, b);
  CHECK(b[0] == 0x78 && b[1] == 0x56 && b[2] == 0xFF && b[3] == 0xFF && b[4] == 0x00 && b[5] == 0x80);
  fc_sa_ring_unpack(b, 4, 16, w);
  CHECK(w[0] == 0x5678 && w[1] == 0xFFFF && w[2] == 0x8000 && w[3] == 3);
  /* Sign extension of the coordinates, the weight (last) only masked. */
  uint32_t s[4] = {0x0001FFFFu, 0x7FFF, 0xABCD8000u, 0x10005};
  fc_sa_ring_reduce(s, 3, 16);
  CHECK((int32_t)s[0] == -1 && (int32_t)s[1] == 32767 && (int32_t)s[2] == -32768 && s[3] == 5);
  uint8_t b3[3];
  uint32_t one = 0x00ABCDEFu, back;
  fc_sa_ring_pack(&one, 1, 24, b3);
  fc_sa_ring_unpack(b3, 1, 24, &back);
  CHECK(back == one);
}

/* Two inputs with a pairwise mask (+PRG on one, -PRG on the other) and a
 * self mask: sent as their low 16 bits, summed mod 2^32, the masks removed
 * mod 2^32 and the sum reduced: the plain sum comes back. */
static void test_masks_cancel(void) {
  enum { N = 3000 };
  uint32_t *a = malloc(N * 4), *b = malloc(N * 4), *sum = calloc(N + 1, 4);
  uint8_t *wire = malloc(N * 2);
  fc_sa_mask_term pair[1], self[1];
  for (int i = 0; i < FC_SA_KEY_LEN; i++) pair[0].key[i] = (uint8_t)i, self[0].key[i] = (uint8_t)(7 * i + 1);
  for (int i = 0; i < N; i++) a[i] = (uint32_t)(i % 200 - 100), b[i] = (uint32_t)(50 - i % 101);
  pair[0].sign = 1;
  CHECK(fc_sa_mask_apply(NULL, a, 0, N, pair, 1, NULL) == FEDC_OK);
  self[0].sign = 1;
  CHECK(fc_sa_mask_apply(NULL, a, 0, N, self, 1, NULL) == FEDC_OK);
  pair[0].sign = -1;
  CHECK(fc_sa_mask_apply(NULL, b, 0, N, pair, 1, NULL) == FEDC_OK);
  int hidden = 0;
  for (int i = 0; i < N; i++) hidden += (a[i] & 0xFFFF) != (uint32_t)(i % 200 - 100) % 65536u;
  CHECK(hidden > N * 9 / 10);
  uint32_t *w = malloc(N * 4);
  fc_sa_ring_pack(a, N, 16, wire);
  fc_sa_ring_unpack(wire, N, 16, w);
  for (int i = 0; i < N; i++) sum[i] += w[i];
  fc_sa_ring_pack(b, N, 16, wire);
  fc_sa_ring_unpack(wire, N, 16, w);
  for (int i = 0; i < N; i++) sum[i] += w[i];
  self[0].sign = -1;
  CHECK(fc_sa_mask_apply(NULL, sum, 0, N, self, 1, NULL) == FEDC_OK);
  sum[N] = 2;
  fc_sa_ring_reduce(sum, N, 16);
  int bad = 0;
  for (int i = 0; i < N; i++) bad += (int32_t)sum[i] != (i % 200 - 100) + (50 - i % 101);
  CHECK_EQ_INT(bad, 0);
  free(a);
  free(b);
  free(sum);
  free(wire);
  free(w);
}

static sa_harness_cfg narrow(uint32_t n, uint32_t k, uint32_t t, uint32_t bits, uint64_t seed) {
  sa_harness_cfg c;
  memset(&c, 0, sizeof c);
  c.n = n;
  c.k = k;
  c.t = t;
  c.dim = 1001;
  c.max_weight = 1;
  c.clip = 2.0f;
  c.seed = seed;
  c.round = 9;
  c.pki_dir = pki;
  c.threads = 2;
  c.quant_bits = bits;
  return c;
}

/* Whole rounds with dropouts: the unmasked sum in the narrow ring equals the
 * survivors' quantized sum bit for bit, the decoded mean is within the
 * quantization bound, and each client sent ring_bits/32 of the 32-bit bytes. */
static void test_rounds(void) {
  struct {
    uint32_t n, k, t, bits, ring;
    double drop;
  } cases[] = {
      {10, 9, 6, 8, 16, 0.1},
      {20, 8, 5, 8, 16, 0.05},
      {5, 4, 3, 4, 8, 0.0},
      {10, 9, 6, 16, 24, 0.1}, /* 16-bit inputs: 10 x 32767 needs the 24-bit ring */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sa_harness_cfg c = narrow(cases[i].n, cases[i].k, cases[i].t, cases[i].bits, 11 + i);
    for (int s = FC_SA_SHARE_KEYS; s <= FC_SA_UNMASK; s++) c.drop[s] = cases[i].drop;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    printf("  n=%u %u-bit inputs, %u-bit ring: %s exact=%d err %.3g (bound %.3g), %llu bytes up\n", c.n, c.quant_bits,
           fc_sa_ring_bits(c.n, c.quant_bits), r.completed ? "completed" : r.why, r.exact, r.max_abs_err, r.err_bound,
           (unsigned long long)r.bytes_up_per_client);
    CHECK_EQ_INT(fc_sa_ring_bits(c.n, c.quant_bits), cases[i].ring);
    CHECK(r.completed && r.exact);
    CHECK(r.max_abs_err <= r.err_bound);
    CHECK_EQ_INT(r.client_aborts, 0);
  }
  /* A range narrower than the clip (a finer step): still exact, and the
   * decoded mean closer to the float one than with the clip as the range. */
  sa_harness_cfg c = narrow(10, 9, 6, 8, 40);
  sa_harness_result wide, fine;
  CHECK_EQ_INT(sa_harness_run(&c, &wide), FEDC_OK);
  c.quant_range = 0.5f; /* the updates' coordinates stay well inside it */
  CHECK_EQ_INT(sa_harness_run(&c, &fine), FEDC_OK);
  printf("  range clip: err %.3g; range 0.5: err %.3g (bound %.3g)\n", wide.max_abs_err, fine.max_abs_err,
         fine.err_bound);
  CHECK(fine.completed && fine.exact && fine.max_abs_err <= fine.err_bound && fine.max_abs_err < wide.max_abs_err);
}

/* A ring the cohort's sum could wrap in: the coordinator core will not
 * create the session, and a client told to use it refuses (it checks the
 * same rule from the round's parameters). */
static void test_refuse_wrap(void) {
  sa_harness_cfg c = narrow(10, 9, 6, 8, 3);
  c.ring_bits = 8; /* 10 x 127 needs 12 bits: 16 */
  sa_harness_result r;
  CHECK(sa_harness_run(&c, &r) != FEDC_OK);
  CHECK(strstr(r.why, "can wrap") != NULL);
  printf("  refused: %s\n", r.why);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.n = 259;
  p.k = 16;
  p.t = 9;
  p.max_weight = 1;
  p.clip = 1;
  p.dim = 10;
  p.quant_bits = 8;
  p.ring_bits = 16;
  char why[200] = "";
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_ERR_INVALID && strstr(why, "24 bits"));
  p.ring_bits = 24;
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_OK);
  p.quant_range = 2; /* past the clip */
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_ERR_INVALID);
  p.quant_range = 0;
  p.ring_bits = 20; /* not whole bytes */
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_ERR_INVALID);
  p.ring_bits = 24;
  p.max_weight = 5; /* the narrow ring counts weights of 1 */
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_ERR_INVALID);
  p.max_weight = 1;
  p.quant_bits = 0; /* a ring without its input width */
  CHECK(fc_sa_params_check(&p, why, sizeof why) == FEDC_ERR_INVALID);
  /* The session id binds the ring: a client on another ring is in another session. */
  p.quant_bits = 8;
  const char *names[259];
  char nb[259][8];
  for (int i = 0; i < 259; i++) snprintf(nb[i], sizeof nb[i], "c%d", i), names[i] = nb[i];
  uint8_t s1[32], s2[32];
  CHECK(fc_sa_session_id(&p, names, s1) == FEDC_OK);
  p.ring_bits = 32;
  CHECK(fc_sa_session_id(&p, names, s2) == FEDC_OK);
  CHECK(memcmp(s1, s2, 32) != 0);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-saring-test-XXXXXX");
  if (!mkdtemp(root)) return 2;
  snprintf(pki, sizeof pki, "%s/pki", root);
  if (sa_harness_pki(pki, 20) != FEDC_OK) return 2;
  test_ring_rule();
  test_pack_reduce();
  test_masks_cancel();
  test_rounds();
  test_refuse_wrap();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}

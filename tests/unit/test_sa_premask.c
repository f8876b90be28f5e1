/*
 * test_sa_premask.c - masking ahead of time (fc_sa_client_premask, the
 * runtime's order since issue 27): each client adds its self mask and the
 * pairwise mask of every neighbour whose keys it verified right after
 * sending its shares, then, once the shares are in, takes out the masks of
 * neighbours that sent none. Through the in-process harness (real cores,
 * real crypto):
 *   - the unmasked sum is bit for bit the sum of the survivors' quantized
 *     vectors, with clients vanishing before their shares (their neighbours
 *     premasked with them and must take those masks out: left in, the sum is
 *     off) and at every other stage, on sparse and complete graphs;
 *   - premask before the client's shares went out changes nothing
 *     (FEDC_ERR_PROTOCOL, the vector untouched).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/secagg_client.h"
#include "common/fileutil.h"
#include "fedc/error.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

static char root[256], pki[300];

static sa_harness_cfg base(uint32_t n, uint32_t k, uint32_t t, uint64_t seed) {
  sa_harness_cfg c;
  memset(&c, 0, sizeof c);
  c.n = n;
  c.k = k;
  c.t = t;
  c.dim = 1001;
  c.max_weight = 1000;
  c.clip = 2.0f;
  c.seed = seed;
  c.round = 9;
  c.pki_dir = pki;
  c.threads = 2;
  c.premask = 1;
  return c;
}

static void test_exact_with_dropouts(void) {
  struct {
    uint32_t n, k, t;
    double drop[6];
  } cases[] = {
      {10, 6, 5, {0, 0, 0.2, 0, 0, 0}},              /* vanish before the shares only */
      {20, 12, 7, {0, 0.02, 0.1, 0.05, 0.02, 0.02}}, /* and at every stage */
      {12, 11, 7, {0, 0, 0.15, 0.1, 0.05, 0}},       /* the complete graph */
  };
  int shares_drop_seen = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (uint64_t seed = 1; seed <= 4; seed++) {
      sa_harness_cfg c = base(cases[i].n, cases[i].k, cases[i].t, 700 + seed * 13 + i);
      memcpy(c.drop, cases[i].drop, sizeof c.drop);
      sa_harness_result r;
      CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
      printf("  n=%u k=%u t=%u seed %llu: remaining %u/%u/%u/%u/%u %s\n", c.n, c.k, c.t, (unsigned long long)seed,
             r.remaining[0], r.remaining[1], r.remaining[2], r.remaining[3], r.remaining[4],
             r.completed ? (r.exact ? "exact" : "NOT EXACT") : r.why);
      if (!r.completed) {
        CHECK(strstr(r.why, "threshold") || strstr(r.why, "shares arrived"));
        continue;
      }
      CHECK(r.exact);
      CHECK(r.max_abs_err <= r.err_bound);
      CHECK_EQ_INT(r.client_aborts, 0);
      if (r.remaining[1] < r.remaining[0]) shares_drop_seen++;
    }
  }
  /* Rounds that completed after someone vanished before its shares. */
  CHECK(shares_drop_seen >= 3);
}

static void test_misuse(void) {
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.n = 3;
  p.k = 2;
  p.t = 2;
  p.dim = 4;
  p.max_weight = 10;
  p.clip = 1;
  p.round = 1;
  const char *names[3] = {"c00001", "c00002", "c00003"};
  const char *files[3] = {"ca.crt", "client-c00001.crt", "client-c00001.key"};
  char *pem[3] = {NULL, NULL, NULL}, path[400];
  for (int i = 0; i < 3; i++) {
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", pki, files[i]);
    CHECK_EQ_INT(fc_read_file(path, 1 << 16, &pem[i], &len), FEDC_OK);
  }
  fc_sa_client_cfg cc;
  memset(&cc, 0, sizeof cc);
  cc.params = p;
  cc.names = names;
  cc.index = 1;
  cc.ca_pem = pem[0];
  cc.cert_pem = pem[1];
  cc.key_pem = pem[2];
  fc_sa_client *sc = NULL;
  char why[256];
  if (pem[0] && pem[1] && pem[2]) CHECK_EQ_INT(fc_sa_client_create(&cc, &sc, why, sizeof why), FEDC_OK);
  if (sc) {
    uint32_t vec[5] = {1, 2, 3, 4, 5};
    CHECK_EQ_INT(fc_sa_client_premask(sc, vec), FEDC_ERR_PROTOCOL); /* before its shares: refused, */
    CHECK_EQ_INT(fc_sa_client_state(sc), FC_SAC_ADVERTISE);          /* nothing changed */
    CHECK(vec[0] == 1 && vec[4] == 5);
  }
  fc_sa_client_destroy(sc);
  for (int i = 0; i < 3; i++) free(pem[i]);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-sa-premask-XXXXXX");
  if (!mkdtemp(root)) return 2;
  snprintf(pki, sizeof pki, "%s/pki", root);
  if (sa_harness_pki(pki, 20) != 0) return 2;
  test_exact_with_dropouts();
  test_misuse();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}

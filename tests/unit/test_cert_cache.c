/*
 * test_cert_cache.c - verified certificates kept across uses
 * (crypto/cert_cache.h), and their use in secure aggregation:
 *   - a certificate is parsed and chain-checked once; the same bytes again
 *     are a hit; another certificate of the same name (a second one from the
 *     same CA, or one from a foreign CA) is another key, checked from scratch
 *     (and a foreign one refused every time: failures are not kept);
 *   - the signature check uses the entry's own key (a second certificate of
 *     the same name does not verify the first one's signatures);
 *   - a cached entry past its chain's notAfter is refused on lookup;
 *   - eviction keeps what callers hold;
 *   - a SecAgg round whose clients and coordinator share one cache (as a
 *     runtime keeps it across rounds) verifies each member's certificate
 *     once: a second round verifies none; a coordinator that forwards
 *     another certificate for a neighbour whose certificate is cached is
 *     caught (the cache is keyed by bytes, never by cohort index).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "crypto/cert_cache.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

static char root[256];

static char *slurp(const char *dir, const char *file) {
  char path[600], *buf = NULL;
  size_t len = 0;
  snprintf(path, sizeof path, "%s/%s", dir, file);
  if (fc_read_file(path, 1 << 20, &buf, &len) != FEDC_OK) return NULL;
  return buf;
}

static void test_cache(void) {
  char ca1[300], ca2[300], second[300], shortd[300], err[300];
  snprintf(ca1, sizeof ca1, "%s/ca1", root);
  snprintf(ca2, sizeof ca2, "%s/ca2", root);       /* a foreign CA of the same federation name */
  snprintf(second, sizeof second, "%s/second", root); /* ca1's second certificate of client a */
  snprintf(shortd, sizeof shortd, "%s/short", root);
  CHECK_EQ_INT(fc_pki_init(ca1, "cc-test", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_init(ca2, "cc-test", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  const char *names[] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; i++) CHECK_EQ_INT(fc_pki_issue(ca1, "client", names[i], NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(ca1, "client", "a", second, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(ca2, "client", "a", NULL, 30, err, sizeof err), FEDC_OK);
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  o.ca_dir = ca1;
  o.out_dir = shortd;
  o.role = "client";
  o.name = "e";
  o.not_after_offset_sec = 2; /* expires while cached */
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);

  char *ca = slurp(ca1, "ca.crt"), *foreign_ca = slurp(ca2, "ca.crt");
  char *a1 = slurp(ca1, "client-a.crt"), *a1key = slurp(ca1, "client-a.key"), *a2 = slurp(second, "client-a.crt");
  char *af = slurp(ca2, "client-a.crt"), *e = slurp(shortd, "client-e.crt");
  char *bcd[3] = {slurp(ca1, "client-b.crt"), slurp(ca1, "client-c.crt"), slurp(ca1, "client-d.crt")};
  CHECK(ca && foreign_ca && a1 && a1key && a2 && af && e && bcd[0] && bcd[1] && bcd[2]);
  if (!ca || !foreign_ca || !a1 || !a1key || !a2 || !af || !e || !bcd[0] || !bcd[1] || !bcd[2]) return;

  fc_cert_cache *c = NULL;
  CHECK_EQ_INT(fc_cert_cache_create(ca, strlen(ca), 3, &c, err, sizeof err), FEDC_OK);
  CHECK(fc_cert_cache_same_ca(c, ca, strlen(ca)));
  CHECK(!fc_cert_cache_same_ca(c, foreign_ca, strlen(foreign_ca)));

  /* First sight: parsed and verified; then a hit, the same entry. */
  fc_cert *x1 = NULL, *x1b = NULL, *x2 = NULL, *xf = NULL;
  CHECK_EQ_INT(fc_cert_cache_get(c, a1, strlen(a1), &x1, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_cert_cache_verifications(c), 1);
  CHECK_EQ_INT(fc_cert_cache_get(c, a1, strlen(a1), &x1b, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_cert_cache_verifications(c), 1);
  CHECK_EQ_INT(fc_cert_cache_hits(c), 1);
  CHECK(x1 == x1b);
  const char *fed = NULL, *role = NULL, *name = NULL;
  CHECK_EQ_INT(fc_cert_identity(x1, &fed, &role, &name), FEDC_OK);
  CHECK(fed && role && name && !strcmp(fed, "cc-test") && !strcmp(role, "client") && !strcmp(name, "a"));
  uint8_t fp1[32], fp2[32];
  CHECK_EQ_INT(fc_pki_cert_sha256_pem(a1, strlen(a1), fp1), FEDC_OK);
  CHECK_EQ_INT(fc_pki_cert_sha256_pem(a2, strlen(a2), fp2), FEDC_OK);
  CHECK(memcmp(fc_cert_sha256(x1), fp1, 32) == 0);

  /* Another certificate of the same name, same CA: checked from scratch. */
  CHECK_EQ_INT(fc_cert_cache_get(c, a2, strlen(a2), &x2, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_cert_cache_verifications(c), 2);
  CHECK(x2 != x1 && memcmp(fc_cert_sha256(x2), fp2, 32) == 0 && memcmp(fp1, fp2, 32) != 0);
  CHECK_EQ_INT(fc_cert_identity(x2, NULL, NULL, &name), FEDC_OK);
  CHECK(!strcmp(name, "a"));
  /* Signatures follow the entry's own key. */
  const uint8_t msg[] = "advertise";
  uint8_t sig[FC_SIG_MAX];
  size_t sl = sizeof sig;
  CHECK_EQ_INT(fc_sign_pem(a1key, strlen(a1key), msg, sizeof msg, sig, &sl), FEDC_OK);
  CHECK_EQ_INT(fc_cert_verify(x1, msg, sizeof msg, sig, sl), FEDC_OK);
  CHECK_EQ_INT(fc_cert_verify(x2, msg, sizeof msg, sig, sl), FEDC_ERR_CRYPTO);
  CHECK_EQ_INT(fc_cert_verify(x1, msg, sizeof msg - 1, sig, sl), FEDC_ERR_CRYPTO);
  CHECK_EQ_INT(fc_cert_verify(x1, msg, sizeof msg, sig, 0), FEDC_ERR_CRYPTO);

  /* A foreign CA's certificate of the same name: refused, and again at full cost. */
  size_t before = fc_cert_cache_size(c);
  err[0] = '\0';
  CHECK_EQ_INT(fc_cert_cache_get(c, af, strlen(af), &xf, err, sizeof err), FEDC_ERR_TLS);
  CHECK(strstr(err, "does not verify") != NULL);
  CHECK_EQ_INT(fc_cert_cache_get(c, af, strlen(af), &xf, err, sizeof err), FEDC_ERR_TLS);
  CHECK_EQ_INT(fc_cert_cache_verifications(c), 4);
  CHECK_EQ_INT(fc_cert_cache_size(c), before);
  CHECK(xf == NULL);
  CHECK_EQ_INT(fc_cert_cache_get(c, "junk", 4, &xf, err, sizeof err), FEDC_ERR_FORMAT);

  /* Eviction (cap 3): what callers hold survives it, and the cache. */
  fc_cert_release(x1b);
  fc_cert_release(x2);
  for (int i = 0; i < 3; i++) {
    fc_cert *y = NULL;
    CHECK_EQ_INT(fc_cert_cache_get(c, bcd[i], strlen(bcd[i]), &y, err, sizeof err), FEDC_OK);
    fc_cert_release(y);
  }
  CHECK(fc_cert_cache_size(c) <= 3);
  CHECK_EQ_INT(fc_cert_verify(x1, msg, sizeof msg, sig, sl), FEDC_OK);

  /* Expired since it was cached: refused on the lookup that finds it. */
  fc_cert *xe = NULL;
  CHECK_EQ_INT(fc_cert_cache_get(c, e, strlen(e), &xe, err, sizeof err), FEDC_OK);
  fc_cert_release(xe);
  xe = NULL;
  uint64_t verified = fc_cert_cache_verifications(c);
  sleep(3);
  err[0] = '\0';
  CHECK_EQ_INT(fc_cert_cache_get(c, e, strlen(e), &xe, err, sizeof err), FEDC_ERR_CERT_EXPIRED);
  CHECK(strstr(err, "expired") != NULL && xe == NULL);
  CHECK_EQ_INT(fc_cert_cache_verifications(c), verified); /* found in the cache, and refused there */

  fc_cert_cache_destroy(c);
  CHECK_EQ_INT(fc_cert_verify(x1, msg, sizeof msg, sig, sl), FEDC_OK); /* a held entry outlives its cache */
  fc_cert_release(x1);
  /* A CA that is not PEM. */
  CHECK_EQ_INT(fc_cert_cache_create("nope", 4, 8, &c, err, sizeof err), FEDC_ERR_FORMAT);
  fc_wipe(a1key, strlen(a1key));
  free(a1key);
  char *all[] = {ca, foreign_ca, a1, a2, af, e, bcd[0], bcd[1], bcd[2]};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* ---- the SecAgg cores with one cache for everyone ---- */

typedef struct swap_cert {
  const char *pem; /* put in place of the first forwarded neighbour certificate of client 1 */
  int done;
} swap_cert;

static void swap_poll(void *ctx, int stage, uint32_t index, Fedc__V1__SecAggPollResponse *r) {
  swap_cert *s = ctx;
  if (stage != FC_SA_SHARE_KEYS || index != 1 || !r->n_neighbor_keys) return;
  free(r->neighbor_keys[0]->certificate);
  r->neighbor_keys[0]->certificate = strdup(s->pem);
  s->done = 1;
}

static void test_secagg_rounds(void) {
  char pki[300], err[300], other[300], foreign[300];
  snprintf(pki, sizeof pki, "%s/pki", root);
  snprintf(other, sizeof other, "%s/pki-second", root);
  snprintf(foreign, sizeof foreign, "%s/pki-foreign", root);
  CHECK_EQ_INT(sa_harness_pki(pki, 6), FEDC_OK);
  char *ca = slurp(pki, "ca.crt");
  CHECK(ca != NULL);
  if (!ca) return;
  fc_cert_cache *cache = NULL;
  CHECK_EQ_INT(fc_cert_cache_create(ca, strlen(ca), 64, &cache, err, sizeof err), FEDC_OK);
  if (!cache) return;

  sa_harness_cfg c;
  memset(&c, 0, sizeof c);
  c.n = 6;
  c.k = 5;
  c.t = 4;
  c.dim = 101;
  c.max_weight = 100;
  c.clip = 1.0f;
  c.round = 1;
  c.pki_dir = pki;
  c.threads = 1;
  c.cert_cache = cache;
  sa_harness_result r;
  /* Round 1: 6 members, each checked by the coordinator and its 5
   * neighbours: 36 lookups, 6 verifications. */
  for (uint64_t round = 1; round <= 2; round++) {
    c.round = round;
    c.seed = 40 + round;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(r.completed && r.exact);
    CHECK_EQ_INT(fc_cert_cache_verifications(cache), 6); /* round 2 verifies none */
    CHECK_EQ_INT(fc_cert_cache_hits(cache), 30 * round + 6 * (round - 1));
  }

  /* Round 3: the coordinator forwards, for client 1's first neighbour (its
   * certificate cached), another certificate of the same name. From our CA
   * it verifies as the new certificate it is, and the keys signed under the
   * real one do not; from a foreign CA it does not verify. Either way client
   * 1 aborts and says which. */
  CHECK_EQ_INT(fc_pki_init(foreign, "secagg-test", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  const char *want[2] = {"not signed by its certificate", "does not verify"};
  for (int v = 0; v < 2; v++) {
    /* At k = n - 1 client 1's first neighbour (ascending) is c00002. */
    const char *dir = v ? foreign : other;
    CHECK_EQ_INT(fc_pki_issue(v ? foreign : pki, "client", "c00002", v ? NULL : other, 30, err, sizeof err), FEDC_OK);
    swap_cert s;
    memset(&s, 0, sizeof s);
    c.round = 3 + (uint64_t)v;
    c.seed = 50 + (uint64_t)v;
    c.tamper_poll = swap_poll;
    c.ctx = &s;
    char *pem = slurp(dir, "client-c00002.crt");
    CHECK(pem != NULL);
    if (!pem) break;
    s.pem = pem;
    uint64_t verified = fc_cert_cache_verifications(cache);
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(s.done);
    CHECK(r.client_aborts >= 1 && strncmp(r.client_why, "client 1: ", 10) == 0 && strstr(r.client_why, want[v]));
    CHECK_EQ_INT(fc_cert_cache_verifications(cache), verified + 1); /* the swapped-in certificate, checked */
    printf("  %s\n", r.client_why);
    free(pem);
  }
  c.tamper_poll = NULL;
  c.ctx = NULL;
  fc_cert_cache_destroy(cache);
  free(ca);
}

/* A chain valid past 2038 (CA and leaf for 30 and 25 years): the cache keeps
 * its window in 64 bits, so a hit is served where time_t has 32 (armhf, run
 * under qemu in CI); a window kept in time_t there ended in the past and
 * refused every hit as expired. */
static void test_far_window(void) {
  char dir[300], err[300];
  snprintf(dir, sizeof dir, "%s/far", root);
  CHECK_EQ_INT(fc_pki_init(dir, "cc-far", NULL, 0, 30 * 365, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(dir, "client", "far", NULL, 25 * 365, err, sizeof err), FEDC_OK);
  char *ca = slurp(dir, "ca.crt"), *cert = slurp(dir, "client-far.crt");
  fc_cert_cache *cache = NULL;
  CHECK(ca && cert);
  if (!ca || !cert ||
      fc_cert_cache_create(ca, strlen(ca), 4, &cache, err, sizeof err) != FEDC_OK) {
    free(ca);
    free(cert);
    return;
  }
  for (int i = 0; i < 3; i++) {
    fc_cert *x = NULL;
    int rc = fc_cert_cache_get(cache, cert, strlen(cert), &x, err, sizeof err);
    CHECK_EQ_INT(rc, FEDC_OK);
    if (rc != FEDC_OK) fprintf(stderr, "  far window, lookup %d: %s\n", i, err);
    fc_cert_release(x);
  }
  CHECK_EQ_INT((int)fc_cert_cache_verifications(cache), 1);
  CHECK_EQ_INT((int)fc_cert_cache_hits(cache), 2);
  fc_cert_cache_destroy(cache);
  free(ca);
  free(cert);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-cert-cache-XXXXXX");
  if (!mkdtemp(root)) return 2;
  test_cache();
  test_secagg_rounds();
  test_far_window();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}

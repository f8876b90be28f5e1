/*
 * test_update_sig.c - a client's signature over its update
 * (crypto/update_sig.h, protocol 1.17):
 *   - a claim signed with client a's key verifies with a's certificate;
 *   - changing any one signed field (federation, client, round, version,
 *     examples, loss, unclipped, one bit of the update's or the model's
 *     SHA-256) fails it;
 *   - another client's certificate (b) does not verify a's claim, nor does
 *     a's certificate stand for a claim naming b; a certificate of another
 *     role (the coordinator's) names no client;
 *   - signing as a certificate's holder (fc_update_sign_pem) names its
 *     federation and, unless told another, its client;
 *   - the same key on both EC and Ed25519 PKIs;
 *   - bad inputs: no name, an over-long name, an empty or oversized signature.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "crypto/cert_cache.h"
#include "crypto/pki.h"
#include "crypto/update_sig.h"
#include "fedc/error.h"

static char root[256];

static char *slurp(const char *dir, const char *file, size_t *len) {
  char path[600], *buf = NULL;
  snprintf(path, sizeof path, "%s/%s", dir, file);
  if (fc_read_file(path, 1 << 20, &buf, len) != FEDC_OK) return NULL;
  return buf;
}

static fc_cert *cert_of(fc_cert_cache *cc, const char *dir, const char *file) {
  size_t len = 0;
  char *pem = slurp(dir, file, &len), err[300];
  fc_cert *x = NULL;
  CHECK(pem != NULL);
  if (pem) CHECK_EQ_INT(fc_cert_cache_get(cc, pem, len, &x, err, sizeof err), FEDC_OK);
  free(pem);
  return x;
}

static void run(const char *keytype) {
  char dir[300], err[300], why[300];
  snprintf(dir, sizeof dir, "%s/%s", root, keytype);
  CHECK_EQ_INT(fc_pki_init(dir, "us-test", NULL, 0, 30, keytype, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(dir, "client", "a", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(dir, "client", "b", NULL, 30, err, sizeof err), FEDC_OK);
  size_t calen = 0, klen = 0;
  char *ca = slurp(dir, "ca.crt", &calen), *key = slurp(dir, "client-a.key", &klen);
  CHECK(ca != NULL && key != NULL);
  if (!ca || !key) return;
  fc_cert_cache *cc = NULL;
  CHECK_EQ_INT(fc_cert_cache_create(ca, calen, 16, &cc, err, sizeof err), FEDC_OK);
  fc_cert *xa = cert_of(cc, dir, "client-a.crt"), *xb = cert_of(cc, dir, "client-b.crt"),
          *xc = cert_of(cc, dir, "coordinator.crt");
  uint8_t sha[32], msha[32], sig[FC_UPDATE_SIG_MAX];
  for (int i = 0; i < 32; i++) sha[i] = (uint8_t)(i * 7 + 1), msha[i] = (uint8_t)(i * 3 + 2);
  fc_update_claim cl = {"us-test", "a", 12, 11, 600, 0.25f, 1, sha, msha};
  size_t siglen = sizeof sig;
  CHECK_EQ_INT(fc_update_sign(key, klen, &cl, sig, &siglen), FEDC_OK);
  CHECK(siglen > 0 && siglen <= FC_UPDATE_SIG_MAX);
  CHECK_EQ_INT(fc_update_verify(xa, &cl, sig, siglen, why, sizeof why), FEDC_OK);
  /* As the holder of a's certificate signs: federation and name from it. */
  size_t certlen = 0;
  char *cert = slurp(dir, "client-a.crt", &certlen);
  uint8_t sig2[FC_UPDATE_SIG_MAX];
  size_t sig2len = sizeof sig2;
  fc_update_claim own = cl;
  own.federation = NULL;
  own.client = NULL;
  CHECK_EQ_INT(fc_update_sign_pem(cert, certlen, key, klen, own, sig2, &sig2len), FEDC_OK);
  CHECK_EQ_INT(fc_update_verify(xa, &cl, sig2, sig2len, why, sizeof why), FEDC_OK);
  own.client = "b"; /* a's key over a claim naming b: a's certificate does not stand for it */
  sig2len = sizeof sig2;
  CHECK_EQ_INT(fc_update_sign_pem(cert, certlen, key, klen, own, sig2, &sig2len), FEDC_OK);
  fc_update_claim asb0 = cl;
  asb0.client = "b";
  CHECK_EQ_INT(fc_update_verify(xa, &asb0, sig2, sig2len, why, sizeof why), FEDC_ERR_REJECTED);
  CHECK(fc_update_sign_pem("not a certificate", 17, key, klen, own, sig2, &sig2len) != FEDC_OK);
  free(cert);
  /* Each signed field, changed alone, fails the signature. */
  for (int f = 0; f < 9; f++) {
    fc_update_claim t = cl;
    uint8_t sha2[32], msha2[32];
    memcpy(sha2, sha, 32);
    memcpy(msha2, msha, 32);
    switch (f) {
    case 0: t.round++; break;
    case 1: t.model_version--; break;
    case 2: t.num_examples = 6000; break;
    case 3: t.train_loss = 0.26f; break;
    case 4: t.unclipped = 0; break;
    case 5: sha2[31] ^= 1; t.sha256 = sha2; break;
    case 6: t.federation = "us-tesu"; break; /* also not the certificate's federation */
    case 7: t.client = "b"; break;           /* also not the certificate's name */
    case 8: msha2[0] ^= 0x80; t.model_sha256 = msha2; break;
    }
    CHECK_EQ_INT(fc_update_verify(xa, &t, sig, siglen, why, sizeof why), FEDC_ERR_REJECTED);
  }
  /* Another client's certificate; a certificate of another role. */
  CHECK_EQ_INT(fc_update_verify(xb, &cl, sig, siglen, why, sizeof why), FEDC_ERR_REJECTED);
  CHECK(strstr(why, "not client a's") != NULL);
  fc_update_claim asb = cl;
  asb.client = "b";
  CHECK_EQ_INT(fc_update_verify(xb, &asb, sig, siglen, why, sizeof why), FEDC_ERR_REJECTED);
  CHECK(strstr(why, "does not verify") != NULL);
  CHECK_EQ_INT(fc_update_verify(xc, &cl, sig, siglen, why, sizeof why), FEDC_ERR_REJECTED);
  /* Bad inputs. */
  CHECK_EQ_INT(fc_update_verify(xa, &cl, sig, 0, why, sizeof why), FEDC_ERR_REJECTED);
  CHECK_EQ_INT(fc_update_verify(xa, &cl, sig, FC_UPDATE_SIG_MAX + 1, why, sizeof why), FEDC_ERR_REJECTED);
  uint8_t d[32];
  fc_update_claim none = cl;
  none.client = "";
  CHECK_EQ_INT(fc_update_claim_digest(&none, d), FEDC_ERR_INVALID);
  char longname[600];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  none.client = longname;
  CHECK_EQ_INT(fc_update_claim_digest(&none, d), FEDC_ERR_INVALID);
  size_t small = 4;
  CHECK(fc_update_sign(key, klen, &cl, sig, &small) != FEDC_OK); /* no room for the signature */
  fc_cert_release(xa);
  fc_cert_release(xb);
  fc_cert_release(xc);
  fc_cert_cache_destroy(cc);
  free(ca);
  free(key);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-update-sig-XXXXXX");
  if (!mkdtemp(root)) return 2;
  run("ec");
  run("ed25519");
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}

/*
 * update_sig.c - a client's signature over its update (update_sig.h).
 */
#include "crypto/update_sig.h"

#include <stdio.h>
#include <string.h>

#include "crypto/cert_cache.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h" /* fc_sign_pem */
#include "crypto/sha256.h"
#include "fedc/error.h"

#define TAG "fedc-update-v1"

static size_t put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
  return (size_t)n;
}

int fc_update_claim_digest(const fc_update_claim *cl, uint8_t out[32]) {
  uint8_t buf[512];
  size_t fl = cl->federation ? strlen(cl->federation) : 0, nl = cl->client ? strlen(cl->client) : 0, k = 0;
  if (!fl || !nl || !cl->sha256 || !cl->model_sha256 || sizeof TAG + fl + nl + 2 + 8 * 3 + 4 + 1 + 64 > sizeof buf)
    return FEDC_ERR_INVALID;
  memcpy(buf, TAG, sizeof TAG); /* with its 0x00 */
  k = sizeof TAG;
  memcpy(buf + k, cl->federation, fl + 1);
  k += fl + 1;
  memcpy(buf + k, cl->client, nl + 1);
  k += nl + 1;
  k += put_le(buf + k, cl->round, 8);
  k += put_le(buf + k, cl->model_version, 8);
  k += put_le(buf + k, cl->num_examples, 8);
  uint32_t lb;
  memcpy(&lb, &cl->train_loss, 4);
  k += put_le(buf + k, lb, 4);
  buf[k++] = cl->unclipped ? 1 : 0;
  memcpy(buf + k, cl->sha256, 32);
  k += 32;
  memcpy(buf + k, cl->model_sha256, 32);
  k += 32;
  return fc_sha256(buf, k, out);
}

int fc_update_sign(const char *key_pem, size_t key_len, const fc_update_claim *cl, uint8_t *sig, size_t *sig_len) {
  uint8_t d[32];
  int rc = fc_update_claim_digest(cl, d);
  return rc == FEDC_OK ? fc_sign_pem(key_pem, key_len, d, sizeof d, sig, sig_len) : rc;
}

int fc_update_sign_pem(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len, fc_update_claim cl,
                       uint8_t *sig, size_t *sig_len) {
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  int rc = fc_pki_identity_from_pem(cert_pem, cert_len, fed, sizeof fed, role, sizeof role, name, sizeof name);
  if (rc != FEDC_OK) return rc;
  cl.federation = fed;
  if (!cl.client) cl.client = name;
  return fc_update_sign(key_pem, key_len, &cl, sig, sig_len);
}

int fc_update_verify(const fc_cert *x, const fc_update_claim *cl, const uint8_t *sig, size_t sig_len, char *why,
                     size_t whylen) {
  const char *fed = NULL, *role = NULL, *name = NULL;
  uint8_t d[32];
  if (fc_cert_identity(x, &fed, &role, &name) != FEDC_OK || strcmp(fed, cl->federation) != 0 ||
      strcmp(role, "client") != 0 || strcmp(name, cl->client) != 0) {
    snprintf(why, whylen, "the signing certificate is not client %.64s's of federation %.64s", cl->client,
             cl->federation);
    return FEDC_ERR_REJECTED;
  }
  if (fc_update_claim_digest(cl, d) != FEDC_OK || !sig_len || sig_len > FC_UPDATE_SIG_MAX ||
      fc_cert_verify(x, d, sizeof d, sig, sig_len) != FEDC_OK) {
    snprintf(why, whylen, "client %.64s's signature over the update does not verify", cl->client);
    return FEDC_ERR_REJECTED;
  }
  return FEDC_OK;
}

/*
 * secagg_client_advertise.c - round 0, "AdvertiseKeys" (Bonawitz et al. 2017,
 * Fig. 4): two fresh X25519 key pairs, c_u for encrypting shares and s_u for
 * agreeing pairwise masks, both public keys signed with the private key of
 * this client's mTLS certificate over the session id, so a coordinator cannot
 * substitute keys or replay them into another round. The certificate travels
 * along for the neighbours to verify.
 */
#include <stdlib.h>
#include <string.h>

#include "client/secagg_client_int.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

int fc_sa_client_advertise(fc_sa_client *c, Fedc__V1__SecAggSubmitRequest *out) {
  int rc = sa_client_expect(c, FC_SAC_ADVERTISE, "advertise");
  if (rc != FEDC_OK) return rc;
  if ((rc = fc_x25519_keygen(c->enc_sk, c->enc_pk)) != FEDC_OK ||
      (rc = fc_x25519_keygen(c->mask_sk, c->mask_pk)) != FEDC_OK ||
      (rc = fc_x25519_key_new(c->enc_sk, &c->enc_key)) != FEDC_OK ||
      (rc = fc_x25519_key_new(c->mask_sk, &c->mask_key)) != FEDC_OK)
    return sa_client_fail(c, rc, "secure aggregation: key generation failed");
  uint8_t msg[FC_SA_ADV_MSG_LEN], sig[FC_SIG_MAX];
  size_t siglen = sizeof sig;
  fc_sa_advertise_msg(c->session, c->me, c->enc_pk, c->mask_pk, msg);
  if ((rc = sa_client_sign(c, msg, sizeof msg, sig, &siglen)) != FEDC_OK)
    return sa_client_fail(c, rc, "secure aggregation: cannot sign keys with our certificate's key");
  Fedc__V1__SecAggSubmitRequest z = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  *out = z;
  out->round = c->p.round;
  out->stage = FEDC__V1__SEC_AGG_STAGE__SA_ADVERTISE;
  Fedc__V1__SecAggKeys *k = malloc(sizeof *k);
  if (!k) return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  fedc__v1__sec_agg_keys__init(k);
  out->keys = k;
  k->index = c->me;
  k->enc_pk.data = sa_dupbytes(c->enc_pk, 32);
  k->enc_pk.len = 32;
  k->mask_pk.data = sa_dupbytes(c->mask_pk, 32);
  k->mask_pk.len = 32;
  k->signature.data = sa_dupbytes(sig, siglen);
  k->signature.len = siglen;
  size_t cl = strlen(c->cert_pem) + 1;
  if ((k->certificate = malloc(cl))) memcpy(k->certificate, c->cert_pem, cl);
  if (!k->enc_pk.data || !k->mask_pk.data || !k->signature.data || !k->certificate) {
    fc_sa_submit_clear(out);
    return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  }
  c->state = FC_SAC_KEYS;
  return FEDC_OK;
}

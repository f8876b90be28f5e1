/*
 * secagg_client_share.c - round 1, "ShareKeys" (Bonawitz et al. 2017, Fig. 4;
 * on the neighbour graph of Bell et al. 2020). Input: the keys of the
 * neighbours that advertised, as the coordinator forwards them. Each must be
 * a neighbour in the graph drawn from the published seed, listed once, with
 * a certificate that chains to the federation CA and names that cohort
 * member, and a valid signature over this session's advertise message:
 * anything else means the coordinator (or a peer) is lying and we abort.
 *
 * Then: draw the self-mask seed b_u, Shamir-share b_u and s_u^SK t-of-(m+1)
 * among the m neighbours that advertised and ourselves (share point = the
 * index; Bonawitz et al. share among all of U1, u included), and encrypt
 * each neighbour's pair with AES-256-GCM under a key derived from
 * X25519(c_u^SK, c_v^PK) for the direction u -> v, with session, sender and
 * recipient as associated data. A commitment to b_u goes along so the
 * coordinator can tell a correct reconstruction from bad shares.
 */
#include <stdlib.h>
#include <string.h>

#include "client/secagg_client_int.h"
#include "crypto/sa_crypto.h"
#include "crypto/shamir.h"
#include "fedc/error.h"

static int check_keys(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in) {
  if (in->n_neighbor_keys > c->npeers)
    return sa_client_fail(c, FEDC_ERR_PROTOCOL, "coordinator forwarded %zu keys for %u neighbours",
                          in->n_neighbor_keys, c->npeers);
  for (size_t i = 0; i < in->n_neighbor_keys; i++) {
    const Fedc__V1__SecAggKeys *k = in->neighbor_keys[i];
    sa_peer *p = sa_client_peer(c, k->index);
    if (!p)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "coordinator forwarded keys of %u, not our neighbour in this round's graph",
                            k->index);
    if (p->have_keys) return sa_client_fail(c, FEDC_ERR_PROTOCOL, "keys of neighbour %u forwarded twice", k->index);
    if (k->enc_pk.len != 32 || k->mask_pk.len != 32 || !k->certificate || k->signature.len == 0 ||
        k->signature.len > FC_SIG_MAX)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "malformed keys of neighbour %u", k->index);
    if (memcmp(k->enc_pk.data, k->mask_pk.data, 32) == 0)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "neighbour %u uses one key for both purposes", k->index);
    fc_cert *cert = NULL;
    int rc = sa_client_check_cert(c, k->certificate, strlen(k->certificate), k->index, &cert);
    if (rc != FEDC_OK) return rc;
    uint8_t msg[FC_SA_ADV_MSG_LEN];
    fc_sa_advertise_msg(c->session, k->index, k->enc_pk.data, k->mask_pk.data, msg);
    if (fc_cert_verify(cert, msg, sizeof msg, k->signature.data, k->signature.len) != FEDC_OK) {
      fc_cert_release(cert);
      return sa_client_fail(c, FEDC_ERR_CRYPTO,
                            "keys of neighbour %u are not signed by its certificate for this session: substituted or replayed",
                            k->index);
    }
    memcpy(p->enc_pk, k->enc_pk.data, 32);
    memcpy(p->mask_pk, k->mask_pk.data, 32);
    p->cert = cert; /* its round-3 signature is checked with the same key */
    p->have_keys = 1;
  }
  return FEDC_OK;
}

int fc_sa_client_share_keys(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in,
                            Fedc__V1__SecAggSubmitRequest *out) {
  int rc = sa_client_expect(c, FC_SAC_KEYS, "share keys");
  if (rc != FEDC_OK) return rc;
  if ((rc = sa_client_ready(c, in, "shares")) != FEDC_OK) return rc;
  if ((rc = check_keys(c, in)) != FEDC_OK) return rc;
  /* Share points: our neighbours that advertised, and ourselves (last). */
  uint32_t m = 0;
  for (uint32_t i = 0; i < c->npeers; i++) m += c->peers[i].have_keys;
  if (m + 1 < c->p.t)
    return sa_client_fail(c, FEDC_ERR_REJECTED, "only %u of %u neighbours advertised keys; threshold is %u", m,
                          c->npeers, c->p.t);
  m++;
  uint16_t *xs = malloc(m * sizeof *xs);
  uint8_t(*bsh)[32] = malloc((size_t)m * 32), (*ssh)[32] = malloc((size_t)m * 32);
  Fedc__V1__SecAggShare **shares = calloc(m, sizeof *shares);
  Fedc__V1__SecAggSubmitRequest z = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  *out = z;
  if (!xs || !bsh || !ssh || !shares) {
    rc = sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
    goto out;
  }
  out->shares = shares;
  shares = NULL;
  for (uint32_t i = 0, j = 0; i < c->npeers; i++)
    if (c->peers[i].have_keys) xs[j++] = (uint16_t)c->peers[i].index;
  xs[m - 1] = (uint16_t)c->me;
  if ((rc = fc_random_bytes(c->seed, 32)) != FEDC_OK || (rc = fc_shamir_split(c->seed, c->p.t, xs, m, bsh)) != FEDC_OK ||
      (rc = fc_shamir_split(c->mask_sk, c->p.t, xs, m, ssh)) != FEDC_OK) {
    rc = sa_client_fail(c, rc, "secure aggregation: secret sharing failed");
    goto out;
  }
  memcpy(c->own_seed_share, bsh[m - 1], 32); /* ours of s_u^SK is never needed: we are not dropped if we answer */
  for (uint32_t j = 0; j + 1 < m; j++) {
    sa_peer *p = sa_client_peer(c, xs[j]);
    uint8_t dh[32], key[32], pt[FC_SA_SHARE_PT_LEN], aad[FC_SA_AAD_LEN], nonce[FC_GCM_NONCE_LEN];
    Fedc__V1__SecAggShare *s = malloc(sizeof *s);
    if (!s) {
      rc = sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
      goto out;
    }
    fedc__v1__sec_agg_share__init(s);
    out->shares[out->n_shares++] = s;
    s->from = c->me;
    s->to = p->index;
    s->nonce.data = malloc(FC_GCM_NONCE_LEN);
    s->ciphertext.data = malloc(FC_SA_SHARE_CT_LEN);
    if (!s->nonce.data || !s->ciphertext.data) {
      rc = sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
      goto out;
    }
    s->nonce.len = FC_GCM_NONCE_LEN;
    s->ciphertext.len = FC_SA_SHARE_CT_LEN;
    pt[0] = (uint8_t)(c->me >> 24), pt[1] = (uint8_t)(c->me >> 16), pt[2] = (uint8_t)(c->me >> 8), pt[3] = (uint8_t)c->me;
    pt[4] = (uint8_t)(p->index >> 24), pt[5] = (uint8_t)(p->index >> 16), pt[6] = (uint8_t)(p->index >> 8),
    pt[7] = (uint8_t)p->index;
    memcpy(pt + 8, bsh[j], 32);
    memcpy(pt + 40, ssh[j], 32);
    fc_sa_share_aad(c->session, c->me, p->index, aad);
    /* One agreement for both directions: our key to it now, its key to us
     * for the masked stage (secagg_client_masked.c). */
    rc = fc_x25519_key_agree(c->enc_key, p->enc_pk, dh);
    if (rc == FEDC_OK) rc = fc_sa_share_key(c->session, c->p.round, dh, c->me, p->index, key);
    if (rc == FEDC_OK) rc = fc_sa_share_key(c->session, c->p.round, dh, p->index, c->me, p->share_key_in);
    if (rc == FEDC_OK) rc = fc_random_bytes(nonce, sizeof nonce);
    if (rc == FEDC_OK)
      rc = fc_gcm_seal(key, nonce, aad, sizeof aad, pt, sizeof pt, s->ciphertext.data,
                       s->ciphertext.data + FC_SA_SHARE_PT_LEN);
    memcpy(s->nonce.data, nonce, sizeof nonce);
    fc_wipe(dh, sizeof dh);
    fc_wipe(key, sizeof key);
    fc_wipe(pt, sizeof pt);
    if (rc != FEDC_OK) {
      rc = sa_client_fail(c, rc, "secure aggregation: cannot encrypt the share for %u", p->index);
      goto out;
    }
  }
  out->round = c->p.round;
  out->stage = FEDC__V1__SEC_AGG_STAGE__SA_SHARE_KEYS;
  out->seed_commitment.data = malloc(32);
  if (!out->seed_commitment.data ||
      (rc = fc_sa_seed_commitment(c->session, c->me, c->seed, out->seed_commitment.data)) != FEDC_OK) {
    rc = sa_client_fail(c, rc ? rc : FEDC_ERR_NOMEM, "secure aggregation: commitment failed");
    goto out;
  }
  out->seed_commitment.len = 32;
  c->state = FC_SAC_SHARES;
  rc = FEDC_OK;
out:
  if (bsh) fc_wipe(bsh, (size_t)m * 32);
  if (ssh) fc_wipe(ssh, (size_t)m * 32);
  free(bsh);
  free(ssh);
  free(xs);
  free(shares);
  if (rc != FEDC_OK) fc_sa_submit_clear(out);
  return rc;
}

/*
 * secagg_client_masked.c - round 2, "MaskedInputCollection" (Bonawitz et al.
 * 2017, Fig. 4). Input: the share ciphertexts addressed to us. Each must come
 * from a neighbour whose keys we verified, once, addressed to us, and open
 * under the key for that direction with this session as associated data; a
 * tag that fails is a tampered share and aborts the round for us.
 *
 * The neighbours that sent us shares (our view of U2) are the ones we mask
 * with: y_u = q_u + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)  (mod 2^32), where
 * q_u is the quantized, weighted update with the weight as its last entry
 * (fc_sa_quantize, the pipeline stage before this one) and s_uv comes from
 * X25519(s_u^SK, s_v^PK) through HKDF.
 *
 * Ahead of time (fc_sa_client_premask, the runtime's order): right after our
 * shares went out we add PRG(b_u) and the pairwise mask of every neighbour
 * whose keys we verified, while the others are still sharing; once the
 * shares are in, the masks of those that sent none are taken out again (mod
 * 2^32 exactly: the same y_u). That moves k + 1 expansions and k agreements
 * off the path between the masked stage opening and our upload. The
 * premasked vector never leaves us before that.
 */
#include <stdlib.h>
#include <string.h>

#include "client/secagg_client_int.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int fc_sa_client_receive_shares(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in) {
  int rc = sa_client_expect(c, FC_SAC_SHARES, "receive shares");
  if (rc != FEDC_OK) return rc;
  if ((rc = sa_client_ready(c, in, "masked input")) != FEDC_OK) return rc;
  if (in->n_shares > c->npeers)
    return sa_client_fail(c, FEDC_ERR_PROTOCOL, "coordinator forwarded %zu shares for %u neighbours", in->n_shares,
                          c->npeers);
  for (size_t i = 0; i < in->n_shares; i++) {
    const Fedc__V1__SecAggShare *s = in->shares[i];
    sa_peer *p = sa_client_peer(c, s->from);
    if (!p || !p->have_keys)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "share from %u, which is not a neighbour that advertised keys",
                            s->from);
    if (s->to != c->me) return sa_client_fail(c, FEDC_ERR_PROTOCOL, "share from %u addressed to %u, not us", s->from, s->to);
    if (p->have_share) return sa_client_fail(c, FEDC_ERR_PROTOCOL, "two shares from neighbour %u", s->from);
    if (s->nonce.len != FC_GCM_NONCE_LEN || s->ciphertext.len != FC_SA_SHARE_CT_LEN)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "malformed share from %u", s->from);
    uint8_t pt[FC_SA_SHARE_PT_LEN], aad[FC_SA_AAD_LEN];
    fc_sa_share_aad(c->session, s->from, c->me, aad);
    /* The key for s->from -> us, derived when we shared ours (round 1). */
    rc = fc_gcm_open(p->share_key_in, s->nonce.data, aad, sizeof aad, s->ciphertext.data, FC_SA_SHARE_PT_LEN,
                     s->ciphertext.data + FC_SA_SHARE_PT_LEN, pt);
    if (rc != FEDC_OK)
      return sa_client_fail(c, FEDC_ERR_CRYPTO, "share from neighbour %u fails authentication: tampered or replayed",
                            s->from);
    if (get32(pt) != s->from || get32(pt + 4) != c->me) {
      fc_wipe(pt, sizeof pt);
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "share from %u names another sender or recipient inside", s->from);
    }
    memcpy(p->seed_share, pt + 8, 32);
    memcpy(p->key_share, pt + 40, 32);
    fc_wipe(pt, sizeof pt);
    p->have_share = 1;
  }
  uint32_t m = 1; /* ourselves */
  for (uint32_t i = 0; i < c->npeers; i++) m += c->peers[i].have_share;
  if (m < c->p.t)
    return sa_client_fail(c, FEDC_ERR_REJECTED, "only %u neighbours sent shares; threshold is %u", m - 1, c->p.t);
  c->state = FC_SAC_MASK;
  return FEDC_OK;
}

/* The weight (last but the clip bit) must be one this session allows. */
static int weight_ok(fc_sa_client *c, const uint32_t *vec) {
  if (vec[c->p.dim] != 0 && vec[c->p.dim] <= c->p.max_weight) return FEDC_OK;
  return sa_client_fail(c, FEDC_ERR_INVALID, "secure aggregation: weight %u outside 1..%llu", vec[c->p.dim],
                        (unsigned long long)c->p.max_weight);
}

/* The pairwise mask key with neighbour p: HKDF of X25519(s_u, s_v). */
static int pair_key(fc_sa_client *c, const sa_peer *p, uint8_t key[FC_SA_KEY_LEN]) {
  uint8_t dh[32];
  int rc = fc_x25519_key_agree(c->mask_key, p->mask_pk, dh);
  if (rc == FEDC_OK) rc = fc_sa_pair_mask_key(c->session, c->p.round, dh, c->me, p->index, key);
  fc_wipe(dh, sizeof dh);
  return rc;
}

int fc_sa_client_premask(fc_sa_client *c, uint32_t *out) {
  int rc = sa_client_expect(c, FC_SAC_SHARES, "premask");
  if (rc != FEDC_OK) return rc;
  if (c->premasked) return sa_client_fail(c, FEDC_ERR_PROTOCOL, "secure aggregation: premasked twice");
  if ((rc = weight_ok(c, out)) != FEDC_OK) return rc;
  uint32_t nt = 0;
  fc_sa_mask_term *t = malloc((c->npeers + 1) * sizeof *t);
  if (!t) return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  rc = fc_sa_self_mask_key(c->session, c->p.round, c->seed, c->me, t[nt].key);
  t[nt++].sign = 1;
  for (uint32_t i = 0; rc == FEDC_OK && i < c->npeers; i++) {
    sa_peer *p = &c->peers[i];
    if (!p->have_keys) continue; /* never shared to: it cannot share to us either */
    if ((rc = pair_key(c, p, p->mask_key)) != FEDC_OK) break;
    memcpy(t[nt].key, p->mask_key, FC_SA_KEY_LEN);
    t[nt++].sign = fc_sa_pair_sign(c->me, p->index);
    p->premasked = 1;
  }
  if (rc == FEDC_OK) rc = fc_sa_mask_apply(c->prg, out, 0, (size_t)fc_sa_entries(&c->p), t, nt, NULL);
  fc_wipe(t, (c->npeers + 1) * sizeof *t);
  free(t);
  if (rc != FEDC_OK) return sa_client_fail(c, rc, "secure aggregation: masking failed");
  c->premasked = 1;
  return FEDC_OK;
}

int fc_sa_client_mask(fc_sa_client *c, uint32_t *out) {
  int rc = sa_client_expect(c, FC_SAC_MASK, "mask");
  if (rc != FEDC_OK) return rc;
  /* Premasked: the weight was checked then and is masked now. */
  if (!c->premasked && (rc = weight_ok(c, out)) != FEDC_OK) return rc;
  /* y_u = q_u + PRG(b_u) + sum over the neighbours that sent shares of
   * sign(u, v) PRG(s_uv). Premasked, the self mask and every neighbour with
   * keys are in already: take out those that sent no shares. */
  uint32_t nt = 0;
  fc_sa_mask_term *t = malloc((c->npeers + 1) * sizeof *t);
  if (!t) return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  if (!c->premasked) {
    rc = fc_sa_self_mask_key(c->session, c->p.round, c->seed, c->me, t[nt].key);
    t[nt++].sign = 1;
  }
  for (uint32_t i = 0; rc == FEDC_OK && i < c->npeers; i++) {
    const sa_peer *p = &c->peers[i];
    if (c->premasked) {
      if (!p->premasked || p->have_share) continue;
      memcpy(t[nt].key, p->mask_key, FC_SA_KEY_LEN);
      t[nt++].sign = -fc_sa_pair_sign(c->me, p->index);
    } else {
      if (!p->have_share) continue;
      rc = pair_key(c, p, t[nt].key);
      t[nt++].sign = fc_sa_pair_sign(c->me, p->index);
    }
  }
  if (rc == FEDC_OK && nt) rc = fc_sa_mask_apply(c->prg, out, 0, (size_t)fc_sa_entries(&c->p), t, nt, NULL);
  fc_wipe(t, (c->npeers + 1) * sizeof *t);
  free(t);
  if (rc != FEDC_OK) return sa_client_fail(c, rc, "secure aggregation: masking failed");
  c->state = FC_SAC_SURVIVORS;
  return FEDC_OK;
}

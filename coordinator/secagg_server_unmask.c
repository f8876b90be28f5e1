/*
 * secagg_server_unmask.c - the end of the protocol on the coordinator
 * (Bonawitz et al. 2017, Fig. 4, round 4 "Server"): rebuild secrets from the
 * unmask shares and list the masks to take out of the sum.
 *
 * For a survivor v (in U3): b_v from t shares, checked against the
 * commitment v sent with its shares; its self mask PRG(b_v) is subtracted.
 * For v that shared keys but sent no input (U2 \ U3): s_v^SK from t shares,
 * checked by recomputing s_v^PK; each neighbour w in U3 that received v's
 * shares added sign(w, v) PRG(s_wv) for it, which is subtracted again.
 * Pairwise masks between two survivors cancel in the sum by themselves.
 *
 * This only builds the list of (key, sign) terms; expanding them over the
 * model is the heavy part and runs on worker threads in the aggregator
 * (aggregate_secagg.c), off the gRPC threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/secagg_server_int.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "crypto/shamir.h"
#include "fedc/error.h"

static int rebuild(const fc_sa_server *s, uint32_t v, uint8_t secret[32], char *why, size_t wl) {
  const sa_member *m = &s->m[v - 1];
  if (m->nr < s->p.t) {
    snprintf(why, wl, "secure aggregation: only %u of t=%u shares arrived to unmask client %u", m->nr, s->p.t, v);
    return FEDC_ERR_REJECTED;
  }
  if (fc_shamir_combine(m->rxs, (const uint8_t(*)[32])m->rshares, m->nr, s->p.t, secret) != FEDC_OK) {
    snprintf(why, wl, "secure aggregation: shares of client %u do not combine", v);
    return FEDC_ERR_REJECTED;
  }
  return FEDC_OK;
}

int fc_sa_server_unmask_terms(fc_sa_server *s, fc_sa_mask_term **terms, size_t *nterms, char *why, size_t whylen) {
  if (s->aborted || s->stage != 0) {
    snprintf(why, whylen, "secure aggregation: unmasking before the last stage closed");
    return FEDC_ERR_PROTOCOL;
  }
  size_t cap = s->nsurvivors, n = 0;
  for (uint32_t v = 1; v <= s->p.n; v++)
    if (s->m[v - 1].done == FC_SA_SHARE_KEYS) cap += s->p.k;
  fc_sa_mask_term *t = malloc((cap ? cap : 1) * sizeof *t);
  if (!t) {
    snprintf(why, whylen, "secure aggregation: out of memory");
    return FEDC_ERR_NOMEM;
  }
  int rc = FEDC_OK;
  uint8_t secret[32], check[32], dh[32];
  for (uint32_t v = 1; rc == FEDC_OK && v <= s->p.n; v++) {
    const sa_member *m = &s->m[v - 1];
    if (m->done >= FC_SA_MASKED) {
      if ((rc = rebuild(s, v, secret, why, whylen)) != FEDC_OK) break;
      if (fc_sa_seed_commitment(s->session, v, secret, check) != FEDC_OK ||
          !fc_digest_equal(check, m->commitment, 32)) {
        snprintf(why, whylen, "secure aggregation: the shares of client %u's self-mask seed are bad (commitment)", v);
        rc = FEDC_ERR_REJECTED;
        break;
      }
      rc = fc_sa_self_mask_key(s->session, s->p.round, secret, v, t[n].key);
      t[n++].sign = -1;
    } else if (m->done == FC_SA_SHARE_KEYS) {
      /* Dropped after sharing: only needed if a survivor masked with it. */
      uint32_t nn = fc_sa_graph_neighbors(&s->graph, v, s->nbr), users = 0;
      for (uint32_t i = 0; i < nn; i++)
        users += sa_server_is_survivor(s, s->nbr[i]) && sa_server_received_share(s, v, s->nbr[i]);
      if (!users) continue;
      if ((rc = rebuild(s, v, secret, why, whylen)) != FEDC_OK) break;
      if (fc_x25519_public(secret, check) != FEDC_OK || !fc_digest_equal(check, m->keys.mask_pk.data, 32)) {
        snprintf(why, whylen, "secure aggregation: the shares of dropped client %u's mask key are bad", v);
        rc = FEDC_ERR_REJECTED;
        break;
      }
      for (uint32_t i = 0; rc == FEDC_OK && i < nn; i++) {
        uint32_t w = s->nbr[i];
        if (!sa_server_is_survivor(s, w) || !sa_server_received_share(s, v, w)) continue;
        rc = fc_x25519(secret, s->m[w - 1].keys.mask_pk.data, dh);
        if (rc == FEDC_OK) rc = fc_sa_pair_mask_key(s->session, s->p.round, dh, w, v, t[n].key);
        t[n++].sign = -fc_sa_pair_sign(w, v);
      }
      if (rc != FEDC_OK) snprintf(why, whylen, "secure aggregation: key agreement failed for client %u", v);
    }
  }
  fc_wipe(secret, sizeof secret);
  fc_wipe(dh, sizeof dh);
  if (rc != FEDC_OK) {
    fc_wipe(t, (cap ? cap : 1) * sizeof *t);
    free(t);
    return rc;
  }
  *terms = t;
  *nterms = n;
  return FEDC_OK;
}

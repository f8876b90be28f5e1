/*
 * secagg_server_unmask.c - the end of the protocol on the coordinator
 * (Bonawitz et al. 2017, Fig. 4, round 4 "Server"): rebuild secrets from the
 * unmask shares and list the masks to take out of the sum.
 *
 * For a survivor v (in U3): b_v from its unmask shares, checked against
 * the commitment v sent with its shares; its self mask PRG(b_v) is
 * subtracted. For v that shared keys but sent no input (U2 \ U3): s_v^SK,
 * checked by recomputing s_v^PK; each neighbour w in U3 that received v's
 * shares added sign(w, v) PRG(s_wv) for it, which is subtracted again.
 * Pairwise masks between two survivors cancel in the sum by themselves.
 *
 * Robust to bad unmask shares (fc_shamir_decode, crypto/shamir_decode.c):
 * a secret is rebuilt from all the shares that arrived, correcting up to
 * (r - t) / 2 wrong ones of r (more with the check, by a bounded subset
 * search), and the senders whose shares are off the decoded polynomial are
 * counted (bad_sent) for the coordinator to name. The share point is the
 * sender's index, so a wrong share always names the client that submitted
 * it, never v. Senders already named this round go last, so the next secret
 * they sent a share for decodes in the cheap first step. Only when no
 * candidate passes the check (fewer than t consistent shares, or an owner
 * whose own check does not match what it dealt) is the round abandoned.
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

typedef struct owner_check {
  const fc_sa_server *s;
  uint32_t v;
} owner_check;

/* Is this v's secret? b_v: its commitment; s_v^SK: its advertised s_v^PK. */
static int owner_secret_ok(void *arg, const uint8_t secret[FC_SHAMIR_SECRET_LEN]) {
  const owner_check *o = arg;
  const sa_member *m = &o->s->m[o->v - 1];
  uint8_t check[32];
  int ok = sa_server_is_survivor(o->s, o->v)
               ? fc_sa_seed_commitment(o->s->session, o->v, secret, check) == FEDC_OK &&
                     fc_digest_equal(check, m->commitment, 32)
               : fc_x25519_public(secret, check) == FEDC_OK && fc_digest_equal(check, m->keys.mask_pk.data, 32);
  fc_wipe(check, sizeof check);
  return ok;
}

static int rebuild(fc_sa_server *s, uint32_t v, uint8_t secret[32], char *why, size_t wl) {
  const sa_member *m = &s->m[v - 1];
  const char *what = sa_server_is_survivor(s, v) ? "self-mask seed" : "mask key";
  const char *against = sa_server_is_survivor(s, v) ? "its commitment" : "its public key";
  if (m->nr < s->p.t) {
    snprintf(why, wl, "secure aggregation: only %u of t=%u shares arrived to unmask client %u", m->nr, s->p.t, v);
    return FEDC_ERR_REJECTED;
  }
  /* Senders not named yet first (decoded in the cheap first step when they are right). */
  uint32_t r = m->nr;
  uint16_t *xs = malloc(r * sizeof *xs);
  uint8_t(*sh)[32] = malloc((size_t)r * 32), *bad = malloc(r);
  int rc = FEDC_ERR_NOMEM;
  if (!xs || !sh || !bad) {
    snprintf(why, wl, "secure aggregation: out of memory");
    goto out;
  }
  uint32_t at = 0;
  for (int pass = 0; pass < 2; pass++)
    for (uint32_t i = 0; i < r; i++)
      if ((s->m[m->rxs[i] - 1].bad_sent != 0) == pass) {
        xs[at] = m->rxs[i];
        memcpy(sh[at++], m->rshares[i], 32);
      }
  owner_check oc = {s, v};
  fc_shamir_report rep;
  rc = fc_shamir_decode(xs, (const uint8_t(*)[32])sh, r, s->p.t, owner_secret_ok, &oc, secret, bad, &rep);
  if (rc == FEDC_OK) {
    if (rep.outcome == FC_SHAMIR_CORRECTED)
      for (uint32_t i = 0; i < r; i++) s->m[xs[i] - 1].bad_sent += bad[i]; /* the sender, never v */
    if (rep.outcome == FC_SHAMIR_UNATTRIBUTED) s->unattributed++;
  } else if (rc == FEDC_ERR_NOMEM) {
    snprintf(why, wl, "secure aggregation: out of memory");
  } else if (rep.agree) {
    snprintf(why, wl, "secure aggregation: the %u unmask shares of client %u's %s agree with each other but not "
                      "with %s: its shares are bad", r, v, what, against);
    rc = FEDC_ERR_REJECTED;
  } else {
    snprintf(why, wl, "secure aggregation: cannot rebuild client %u's %s: no %u of its %u unmask shares agree with "
                      "%s (too many bad shares)", v, what, s->p.t, r, against);
    rc = FEDC_ERR_REJECTED;
  }
out:
  if (sh) fc_wipe(sh, (size_t)r * 32);
  free(sh);
  free(xs);
  free(bad);
  return rc;
}

uint32_t fc_sa_server_bad_sent(const fc_sa_server *s, uint32_t index) {
  return index >= 1 && index <= s->p.n ? s->m[index - 1].bad_sent : 0;
}

uint32_t fc_sa_server_unattributed(const fc_sa_server *s) { return s->unattributed; }

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
  uint8_t secret[32], dh[32];
  for (uint32_t v = 1; rc == FEDC_OK && v <= s->p.n; v++) {
    const sa_member *m = &s->m[v - 1];
    if (m->done >= FC_SA_MASKED) {
      if ((rc = rebuild(s, v, secret, why, whylen)) != FEDC_OK) break; /* checked against the commitment */
      rc = fc_sa_self_mask_key(s->session, s->p.round, secret, v, t[n].key);
      t[n++].sign = -1;
    } else if (m->done == FC_SA_SHARE_KEYS) {
      /* Dropped after sharing: only needed if a survivor masked with it. */
      uint32_t nn = fc_sa_graph_neighbors(&s->graph, v, s->nbr), users = 0;
      for (uint32_t i = 0; i < nn; i++)
        users += sa_server_is_survivor(s, s->nbr[i]) && sa_server_received_share(s, v, s->nbr[i]);
      if (!users) continue;
      if ((rc = rebuild(s, v, secret, why, whylen)) != FEDC_OK) break; /* checked against s_v^PK */
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

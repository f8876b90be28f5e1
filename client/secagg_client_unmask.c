/*
 * secagg_client_unmask.c - rounds 3 and 4 (Bonawitz et al. 2017, Fig. 4,
 * "ConsistencyCheck" and "Unmasking").
 *
 * Round 3: the coordinator says who sent masked input (U3). We must be in
 * it; every neighbour in it must be one we exchanged shares with (else its
 * mask and ours would not cancel); it must hold at least t clients and at
 * least the session's min_survivors (secagg.h). We sign
 * the session and the list with our certificate's key.
 *
 * Round 4: the coordinator forwards our neighbours' signatures. We go on only
 * if at least t neighbours signed exactly the list we signed, and none sent
 * an invalid signature: a coordinator that told different clients different
 * survivor sets (to learn b_v from some and s_v^SK from others, which would
 * unmask v's input) is caught here. Then one share per neighbour that sent
 * us shares: of b_v if v is in U3, of s_v^SK if it is not. Never both: the
 * choice follows from the one list we signed, and this state is left for
 * good, so no second list can be answered.
 */
#include <stdlib.h>
#include <string.h>

#include "client/secagg_client_int.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static int in_list(const uint32_t *l, size_t n, uint32_t v) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (l[mid] == v) return 1;
    if (l[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

int fc_sa_client_consistency(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in,
                             Fedc__V1__SecAggSubmitRequest *out) {
  int rc = sa_client_expect(c, FC_SAC_SURVIVORS, "consistency check");
  if (rc != FEDC_OK) return rc;
  if ((rc = sa_client_ready(c, in, "consistency check")) != FEDC_OK) return rc;
  size_t n = in->n_survivors;
  if (n < c->p.t || n > c->p.n)
    return sa_client_fail(c, FEDC_ERR_REJECTED, "%zu survivors: below the threshold %u or above the cohort", n, c->p.t);
  /* Fewer masked inputs than the round promised to sum (min_updates; under
   * DP the survivors whose noise shares make up the noise multiplier): we
   * sign nothing, so no unmask share of ours helps unmask that sum. */
  if (n < c->p.min_survivors)
    return sa_client_fail(c, FEDC_ERR_REJECTED, "%zu survivors: fewer than the %u the round needs (min_updates)", n,
                          c->p.min_survivors);
  for (size_t i = 0; i < n; i++) {
    uint32_t v = in->survivors[i];
    if (v < 1 || v > c->p.n || (i && v <= in->survivors[i - 1]))
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "survivor list is not a sorted list of cohort indices");
    sa_peer *p = sa_client_peer(c, v);
    if (p && !p->have_share)
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "survivor %u never sent us shares: our masks would not cancel", v);
  }
  if (!in_list(in->survivors, n, c->me))
    return sa_client_fail(c, FEDC_ERR_PROTOCOL, "the coordinator lists us as dropped after we sent our input");
  uint8_t dig[32], sig[FC_SIG_MAX];
  size_t siglen = sizeof sig;
  if ((rc = fc_sa_survivors_digest(c->session, in->survivors, n, dig)) != FEDC_OK ||
      (rc = sa_client_sign(c, dig, sizeof dig, sig, &siglen)) != FEDC_OK)
    return sa_client_fail(c, rc, "secure aggregation: cannot sign the survivor list");
  if (!(c->survivors = (uint32_t *)sa_dupbytes(in->survivors, n * sizeof *c->survivors)))
    return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  c->nsurvivors = n;
  Fedc__V1__SecAggSubmitRequest z = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  *out = z;
  out->round = c->p.round;
  out->stage = FEDC__V1__SEC_AGG_STAGE__SA_CONSISTENCY;
  if (!(out->survivors_signature.data = sa_dupbytes(sig, siglen)))
    return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  out->survivors_signature.len = siglen;
  c->state = FC_SAC_SIGNATURES;
  return FEDC_OK;
}

int fc_sa_client_unmask(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in, Fedc__V1__SecAggSubmitRequest *out) {
  int rc = sa_client_expect(c, FC_SAC_SIGNATURES, "unmask");
  if (rc != FEDC_OK) return rc;
  if ((rc = sa_client_ready(c, in, "unmask")) != FEDC_OK) return rc;
  uint8_t dig[32];
  if ((rc = fc_sa_survivors_digest(c->session, c->survivors, c->nsurvivors, dig)) != FEDC_OK)
    return sa_client_fail(c, rc, "secure aggregation: digest failed");
  if (in->n_signatures > c->npeers)
    return sa_client_fail(c, FEDC_ERR_PROTOCOL, "%zu signatures for %u neighbours", in->n_signatures, c->npeers);
  uint8_t *seen = calloc(c->npeers ? c->npeers : 1, 1);
  if (!seen) return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  uint32_t valid = 0;
  for (size_t i = 0; i < in->n_signatures; i++) {
    const Fedc__V1__SecAggSignature *s = in->signatures[i];
    sa_peer *p = sa_client_peer(c, s->index);
    if (!p || !p->have_share || !in_list(c->survivors, c->nsurvivors, s->index)) {
      free(seen);
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "signature from %u, not a surviving neighbour", s->index);
    }
    if (seen[p - c->peers]++) {
      free(seen);
      return sa_client_fail(c, FEDC_ERR_PROTOCOL, "two signatures from neighbour %u", s->index);
    }
    /* Its certificate was checked in round 1; only the signature is new. */
    if (fc_cert_verify(p->cert, dig, sizeof dig, s->signature.data, s->signature.len) != FEDC_OK) {
      free(seen);
      return sa_client_fail(c, FEDC_ERR_CRYPTO,
                            "neighbour %u signed a different survivor list: the coordinator is inconsistent", s->index);
    }
    valid++;
  }
  free(seen);
  /* We count ourselves: t signatures over the same list among the neighbourhood. */
  if (valid + 1 < c->p.t)
    return sa_client_fail(c, FEDC_ERR_REJECTED, "only %u neighbours confirmed the survivor list; threshold is %u",
                          valid + 1, c->p.t);
  Fedc__V1__SecAggSubmitRequest z = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  *out = z;
  out->round = c->p.round;
  out->stage = FEDC__V1__SEC_AGG_STAGE__SA_UNMASK;
  if (!(out->unmask = calloc(c->npeers + 1, sizeof *out->unmask)))
    return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  /* Our own share of b_u: we survived. */
  Fedc__V1__SecAggUnmaskShare *own = malloc(sizeof *own);
  if (!own) return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  fedc__v1__sec_agg_unmask_share__init(own);
  out->unmask[out->n_unmask++] = own;
  own->owner = c->me;
  own->self_seed = 1;
  if (!(own->share.data = sa_dupbytes(c->own_seed_share, 32))) {
    fc_sa_submit_clear(out);
    return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
  }
  own->share.len = 32;
  for (uint32_t i = 0; i < c->npeers; i++) {
    const sa_peer *p = &c->peers[i];
    if (!p->have_share) continue;
    Fedc__V1__SecAggUnmaskShare *u = malloc(sizeof *u);
    if (!u) {
      fc_sa_submit_clear(out);
      return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
    }
    fedc__v1__sec_agg_unmask_share__init(u);
    out->unmask[out->n_unmask++] = u;
    u->owner = p->index;
    u->self_seed = in_list(c->survivors, c->nsurvivors, p->index);
    if (!(u->share.data = sa_dupbytes(u->self_seed ? p->seed_share : p->key_share, 32))) {
      fc_sa_submit_clear(out);
      return sa_client_fail(c, FEDC_ERR_NOMEM, "out of memory");
    }
    u->share.len = 32;
  }
  c->state = FC_SAC_DONE;
  return FEDC_OK;
}

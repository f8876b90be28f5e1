/*
 * secagg_client.c - the client side of secure aggregation: creation, the
 * checks every state shares, and teardown (see secagg_client.h). The states
 * themselves are one file each:
 *   secagg_client_advertise.c  round 0  fresh key pairs, signed
 *   secagg_client_share.c      round 1  verify neighbours' keys; Shamir-share b_u and s_u^SK to them
 *   secagg_client_masked.c     round 2  decrypt shares addressed to us; quantize and mask the update
 *   secagg_client_unmask.c     rounds 3-4  sign the survivor set; verify neighbours' signatures;
 *                                          one share per neighbour: b_v if it survived, s_v^SK if not
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/secagg_client_int.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

int sa_client_fail(fc_sa_client *c, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->why, sizeof c->why, fmt, ap);
  va_end(ap);
  c->state = FC_SAC_ABORTED;
  return err;
}

int sa_client_expect(fc_sa_client *c, int state, const char *what) {
  if (c->state == state) return FEDC_OK;
  if (c->state != FC_SAC_ABORTED)
    snprintf(c->why, sizeof c->why, "secure aggregation: %s out of order (state %d)", what, c->state);
  return FEDC_ERR_PROTOCOL;
}

uint8_t *sa_dupbytes(const void *p, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (d) memcpy(d, p, n);
  return d;
}

sa_peer *sa_client_peer(fc_sa_client *c, uint32_t index) {
  uint32_t lo = 0, hi = c->npeers;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (c->peers[mid].index == index) return &c->peers[mid];
    if (c->peers[mid].index < index) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int sa_client_check_cert(fc_sa_client *c, const char *pem, size_t len, uint32_t index, fc_cert **out) {
  char err[300];
  const char *fed, *role, *name;
  fc_cert *x = NULL;
  /* Parsed and chain-checked once per distinct certificate (the cache is
   * keyed by its bytes, not by who sent it); the identity is checked here
   * every time, against this round's cohort. */
  int rc = fc_cert_cache_get(c->certs, pem, len, &x, err, sizeof err);
  if (rc == FEDC_ERR_NOMEM) return sa_client_fail(c, rc, "out of memory");
  if (rc != FEDC_OK)
    return sa_client_fail(c, FEDC_ERR_TLS, "certificate of neighbour %u does not verify: %s", index, err);
  if (fc_cert_identity(x, &fed, &role, &name) != FEDC_OK || strcmp(role, "client") != 0 ||
      strcmp(fed, c->federation) != 0 || strcmp(name, c->names[index - 1]) != 0) {
    fc_cert_release(x);
    return sa_client_fail(c, FEDC_ERR_PROTOCOL, "certificate forwarded for neighbour %u (%s) names someone else",
                          index, c->names[index - 1]);
  }
  *out = x;
  return FEDC_OK;
}

int sa_client_sign(fc_sa_client *c, const uint8_t *msg, size_t len, uint8_t *sig, size_t *siglen) {
  if (!c->sign_key) {
    int rc = fc_sign_key_load(c->key_pem, strlen(c->key_pem), &c->own_sign_key);
    if (rc != FEDC_OK) return rc;
    c->sign_key = c->own_sign_key;
  }
  return fc_sign_key(c->sign_key, msg, len, sig, siglen);
}

int sa_client_ready(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in, const char *stage) {
  if (in && in->status == FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY) return FEDC_OK;
  return sa_client_fail(c, FEDC_ERR_REJECTED, "secure aggregation %s: coordinator ended the round: %s", stage,
                        in && in->reason ? in->reason : "no answer");
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int fc_sa_client_create(const fc_sa_client_cfg *cfg, fc_sa_client **out, char *why, size_t whylen) {
  int rc = fc_sa_params_check(&cfg->params, why, whylen);
  if (rc != FEDC_OK) return rc;
  const fc_sa_params *p = &cfg->params;
  if (cfg->colluders && p->t < fc_sa_min_threshold(p->k, cfg->colluders)) {
    /* fc_sa_params_check enforced the base floor; this is the owner's. */
    snprintf(why, whylen,
             "threshold t=%u with k=%u neighbours: this client tolerates %u colluding neighbours, which needs "
             "2t > k + 1 + %u (t >= %u)",
             p->t, p->k, cfg->colluders, cfg->colluders, fc_sa_min_threshold(p->k, cfg->colluders));
    return FEDC_ERR_INVALID;
  }
  if (cfg->index < 1 || cfg->index > p->n || !cfg->names || !cfg->ca_pem || !cfg->cert_pem || !cfg->key_pem) {
    snprintf(why, whylen, "secure aggregation: index %u outside the cohort of %u", cfg->index, p->n);
    return FEDC_ERR_INVALID;
  }
  fc_sa_client *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  c->p = *p;
  c->me = cfg->index;
  c->prg = cfg->prg ? cfg->prg : &fc_prg_aes_ctr;
  c->sign_key = cfg->sign_key;
  rc = FEDC_ERR_NOMEM;
  if (!(c->names = calloc(p->n, sizeof *c->names))) goto fail;
  for (uint32_t i = 0; i < p->n; i++) {
    if (!cfg->names[i] || !(c->names[i] = dupstr(cfg->names[i]))) goto fail;
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(c->names[i], c->names[j]) == 0) {
        snprintf(why, whylen, "secure aggregation: %s is listed twice in the cohort", c->names[i]);
        rc = FEDC_ERR_PROTOCOL;
        goto fail;
      }
  }
  if (!(c->ca_pem = dupstr(cfg->ca_pem)) || !(c->cert_pem = dupstr(cfg->cert_pem)) ||
      !(c->key_pem = dupstr(cfg->key_pem)))
    goto fail;
  if (cfg->cert_cache && fc_cert_cache_same_ca(cfg->cert_cache, c->ca_pem, strlen(c->ca_pem))) {
    c->certs = cfg->cert_cache;
  } else {
    /* One session's worth: each neighbour's certificate, once. */
    if ((rc = fc_cert_cache_create(c->ca_pem, strlen(c->ca_pem), p->k + 1, &c->own_certs, why, whylen)) != FEDC_OK) {
      if (rc != FEDC_ERR_NOMEM) rc = FEDC_ERR_INVALID;
      goto fail;
    }
    c->certs = c->own_certs;
    rc = FEDC_ERR_NOMEM;
  }
  char role[16], name[72];
  if (fc_pki_identity_from_pem(c->cert_pem, strlen(c->cert_pem), c->federation, sizeof c->federation, role,
                               sizeof role, name, sizeof name) != FEDC_OK ||
      strcmp(name, c->names[c->me - 1]) != 0) {
    snprintf(why, whylen, "secure aggregation: the cohort lists index %u as %s, which is not us", c->me,
             c->names[c->me - 1]);
    rc = FEDC_ERR_PROTOCOL;
    goto fail;
  }
  if ((rc = fc_sa_session_id(p, (const char *const *)c->names, c->session)) != FEDC_OK) goto fail;
  if ((rc = fc_sa_graph_build(p->n, p->k, p->graph_seed, &c->graph)) != FEDC_OK) goto fail;
  uint32_t *nb = malloc(p->k * sizeof *nb);
  if (!nb) {
    rc = FEDC_ERR_NOMEM;
    goto fail;
  }
  c->npeers = fc_sa_graph_neighbors(&c->graph, c->me, nb);
  c->peers = calloc(c->npeers, sizeof *c->peers);
  if (!c->peers) {
    free(nb);
    rc = FEDC_ERR_NOMEM;
    goto fail;
  }
  for (uint32_t i = 0; i < c->npeers; i++) c->peers[i].index = nb[i];
  free(nb);
  c->state = FC_SAC_ADVERTISE;
  *out = c;
  return FEDC_OK;
fail:
  if (rc == FEDC_ERR_NOMEM) snprintf(why, whylen, "secure aggregation: out of memory");
  fc_sa_client_destroy(c);
  return rc;
}

void fc_sa_client_destroy(fc_sa_client *c) {
  if (!c) return;
  for (uint32_t i = 0; c->names && i < c->p.n; i++) free(c->names[i]);
  free(c->names);
  for (uint32_t i = 0; c->peers && i < c->npeers; i++) fc_cert_release(c->peers[i].cert);
  if (c->peers) fc_wipe(c->peers, c->npeers * sizeof *c->peers);
  free(c->peers);
  if (c->key_pem) fc_wipe(c->key_pem, strlen(c->key_pem));
  free(c->key_pem);
  free(c->cert_pem);
  free(c->ca_pem);
  free(c->survivors);
  fc_x25519_key_free(c->enc_key);
  fc_x25519_key_free(c->mask_key);
  fc_sign_key_free(c->own_sign_key);
  fc_cert_cache_destroy(c->own_certs);
  fc_sa_graph_free(&c->graph);
  fc_wipe(c, sizeof *c);
  free(c);
}

int fc_sa_client_state(const fc_sa_client *c) { return c->state; }
const char *fc_sa_client_error(const fc_sa_client *c) { return c->why; }
const uint8_t *fc_sa_client_session(const fc_sa_client *c) { return c->session; }

int fc_sa_client_next_stage(const fc_sa_client *c) {
  switch (c->state) {
  case FC_SAC_KEYS: return FC_SA_SHARE_KEYS;
  case FC_SAC_SHARES: return FC_SA_MASKED;
  case FC_SAC_SURVIVORS: return FC_SA_CONSISTENCY;
  case FC_SAC_SIGNATURES: return FC_SA_UNMASK;
  default: return 0;
  }
}

void fc_sa_submit_clear(Fedc__V1__SecAggSubmitRequest *m) {
  if (!m) return;
  if (m->keys) {
    free(m->keys->enc_pk.data);
    free(m->keys->mask_pk.data);
    free(m->keys->signature.data);
    free(m->keys->certificate);
    free(m->keys);
  }
  for (size_t i = 0; i < m->n_shares; i++) {
    free(m->shares[i]->nonce.data);
    free(m->shares[i]->ciphertext.data);
    free(m->shares[i]);
  }
  free(m->shares);
  free(m->seed_commitment.data);
  free(m->survivors_signature.data);
  for (size_t i = 0; i < m->n_unmask; i++) {
    if (m->unmask[i]->share.data) fc_wipe(m->unmask[i]->share.data, m->unmask[i]->share.len);
    free(m->unmask[i]->share.data);
    free(m->unmask[i]);
  }
  free(m->unmask);
  Fedc__V1__SecAggSubmitRequest z = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  *m = z;
}

/*
 * secagg_server.c - the coordinator side of secure aggregation: who sent what
 * in which stage, what each client is shown, and when a stage may close (see
 * secagg_server.h for the stages). Reconstruction and the list of masks to
 * remove are in secagg_server_unmask.c.
 *
 * Everything a client submits is checked before it is kept, so what is
 * forwarded is well-formed: keys signed by the caller's own TLS certificate
 * (the same certificate, issued by the federation CA for this federation and
 * naming the caller: an honest neighbour would abort the whole round over a
 * certificate it cannot verify, so one that does not pass is refused here,
 * where it costs only its sender), exactly one share to every neighbour that advertised, a signature
 * over this session's survivor list, and in the unmasking only the share the
 * survivor list calls for (b_v for a survivor, s_v^SK for a dropped client,
 * never both for one v). A refused submission changes nothing.
 *
 * Memory: O(n k) for keys, shares and unmask shares (k = neighbours), never
 * O(n x model): masked inputs go straight to the aggregator.
 */
#include "coordinator/secagg_server_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MAX_CERT_PEM 16384

static int refuse(char *why, size_t whylen, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse(char *why, size_t whylen, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (why && whylen) vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  return err;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int fc_sa_server_create(const fc_sa_params *p, const char *const *names, fc_sa_server **out, char *why,
                        size_t whylen) {
  int rc = fc_sa_params_check(p, why, whylen);
  if (rc != FEDC_OK) return rc;
  fc_sa_server *s = calloc(1, sizeof *s);
  if (!s) return FEDC_ERR_NOMEM;
  s->p = *p;
  rc = FEDC_ERR_NOMEM;
  if (!(s->names = calloc(p->n, sizeof *s->names)) || !(s->m = calloc(p->n, sizeof *s->m)) ||
      !(s->nbr = malloc(p->k * sizeof *s->nbr)) || !(s->by_name = malloc(p->n * sizeof *s->by_name)))
    goto fail;
  for (uint32_t i = 0; i < p->n; i++)
    if (!(s->names[i] = dupstr(names[i]))) goto fail;
  /* Insertion into name order: a binary search then finds a member in
   * O(log n) (every call of a round names its caller; the tier's partials
   * name thousands). n is at most FC_SA_MAX_COHORT; built once a round. */
  for (uint32_t i = 0; i < p->n; i++) {
    uint32_t lo = 0, hi = i;
    while (lo < hi) {
      uint32_t mid = lo + (hi - lo) / 2;
      if (strcmp(s->names[s->by_name[mid]], s->names[i]) < 0) lo = mid + 1;
      else hi = mid;
    }
    memmove(s->by_name + lo + 1, s->by_name + lo, (i - lo) * sizeof *s->by_name);
    s->by_name[lo] = i;
  }
  if ((rc = fc_sa_session_id(p, names, s->session)) != FEDC_OK) goto fail;
  if ((rc = fc_sa_graph_build(p->n, p->k, p->graph_seed, &s->graph)) != FEDC_OK) goto fail;
  s->stage = FC_SA_ADVERTISE;
  *out = s;
  return FEDC_OK;
fail:
  refuse(why, whylen, rc, "secure aggregation: cannot set up the session (%s)",
         rc == FEDC_ERR_NOMEM ? "out of memory" : "bad parameters");
  fc_sa_server_destroy(s);
  return rc;
}

static void free_share(Fedc__V1__SecAggShare *x) {
  if (!x) return;
  free(x->nonce.data);
  free(x->ciphertext.data);
  free(x);
}

void fc_sa_server_destroy(fc_sa_server *s) {
  if (!s) return;
  for (uint32_t i = 0; s->m && i < s->p.n; i++) {
    sa_member *m = &s->m[i];
    free(m->keys.enc_pk.data);
    free(m->keys.mask_pk.data);
    free(m->keys.signature.data);
    free(m->keys.certificate);
    fc_cert_release(m->cert);
    free(m->signature.data);
    for (uint32_t j = 0; j < m->ninbox; j++) free_share(m->inbox[j]);
    free(m->inbox);
    if (m->rshares) fc_wipe(m->rshares, (size_t)m->nr * 32);
    free(m->rshares);
    free(m->rxs);
  }
  free(s->m);
  free(s->ca_pem);
  fc_cert_cache_destroy(s->own_certs);
  for (uint32_t i = 0; s->names && i < s->p.n; i++) free(s->names[i]);
  free(s->names);
  free(s->by_name);
  free(s->nbr);
  free(s->survivors);
  fc_sa_graph_free(&s->graph);
  free(s);
}

int fc_sa_server_stage(const fc_sa_server *s) { return s->aborted ? 0 : s->stage; }
const uint8_t *fc_sa_server_session(const fc_sa_server *s) { return s->session; }
const fc_sa_params *fc_sa_server_params(const fc_sa_server *s) { return &s->p; }

int fc_sa_server_set_trust(fc_sa_server *s, const char *ca_pem, const char *federation) {
  char *ca = ca_pem ? dupstr(ca_pem) : NULL;
  if (ca_pem && !ca) return FEDC_ERR_NOMEM;
  /* One session's worth (each member's certificate once); a CA that does
   * not parse leaves none, and every advertisement is then refused by the
   * full check, which says why. */
  fc_cert_cache *own = NULL;
  if (ca && fc_cert_cache_create(ca, strlen(ca), s->p.n, &own, NULL, 0) == FEDC_ERR_NOMEM) {
    free(ca);
    return FEDC_ERR_NOMEM;
  }
  free(s->ca_pem);
  fc_cert_cache_destroy(s->own_certs);
  s->ca_pem = ca;
  s->certs = s->own_certs = own;
  snprintf(s->federation, sizeof s->federation, "%s", federation ? federation : "");
  return FEDC_OK;
}

void fc_sa_server_use_cert_cache(fc_sa_server *s, struct fc_cert_cache *cache) {
  if (cache && s->ca_pem && fc_cert_cache_same_ca(cache, s->ca_pem, strlen(s->ca_pem))) s->certs = cache;
}

const char *const *fc_sa_server_names(const fc_sa_server *s) { return (const char *const *)s->names; }

uint32_t fc_sa_server_index(const fc_sa_server *s, const char *name) {
  uint32_t lo = 0, hi = s->p.n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = strcmp(s->names[s->by_name[mid]], name);
    if (c == 0) return s->by_name[mid] + 1;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

int sa_server_received_share(const fc_sa_server *s, uint32_t from, uint32_t to) {
  const sa_member *m = &s->m[to - 1];
  for (uint32_t j = 0; j < m->ninbox; j++)
    if (m->inbox[j]->from == from) return 1;
  return 0;
}

static int copy_bytes(ProtobufCBinaryData *dst, const ProtobufCBinaryData *src) {
  dst->data = malloc(src->len ? src->len : 1);
  if (!dst->data) return FEDC_ERR_NOMEM;
  memcpy(dst->data, src->data, src->len);
  dst->len = src->len;
  return FEDC_OK;
}

/* ---- round 0: advertise keys ---- */

/* The certificate sent with the keys is the one every neighbour will check
 * (client/secagg_client.c: chain to the CA, federation, cohort name): it must
 * name the caller, be of this federation, chain to its CA, and be the very
 * certificate of the TLS session it arrives over (a certificate of the same
 * name from another CA, or another certificate of the caller's, is refused). */
static int check_advertised_cert(const fc_sa_server *s, uint32_t index, const char *pem, size_t len,
                                 const uint8_t caller_fp[32], fc_cert **out, char *why, size_t wl) {
  char fed[64], role[16], name[72], err[300];
  const char *who = s->names[index - 1];
  uint8_t fp[32];
  fc_cert *x = NULL;
  /* The common case, once per certificate per coordinator: it verifies (or
   * verified in an earlier round) against the CA; then who it names. */
  if (s->certs && fc_cert_cache_get(s->certs, pem, len, &x, NULL, 0) == FEDC_OK) {
    const char *xf, *xr, *xn;
    int rc = FEDC_OK;
    if (fc_cert_identity(x, &xf, &xr, &xn) != FEDC_OK || strcmp(xr, "client") != 0 || strcmp(xn, who) != 0)
      rc = refuse(why, wl, FEDC_ERR_PROTOCOL, "the certificate sent with the keys does not name %s", who);
    else if (strcmp(xf, s->federation) != 0)
      rc = refuse(why, wl, FEDC_ERR_PERMISSION, "the certificate sent with the keys is of another federation "
                  "('%s', this is '%s')", xf, s->federation);
    else if (!caller_fp || !fc_digest_equal(fc_cert_sha256(x), caller_fp, 32))
      rc = refuse(why, wl, FEDC_ERR_PERMISSION, "the certificate sent with the keys is not the caller's: not the "
                  "certificate %s presented on this TLS connection", who);
    if (rc == FEDC_OK) *out = x;
    else fc_cert_release(x);
    return rc;
  }
  /* It does not verify (or there is no CA): the full checks, in their
   * order, say why. */
  if (fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, name, sizeof name) != FEDC_OK ||
      strcmp(role, "client") != 0 || strcmp(name, who) != 0)
    return refuse(why, wl, FEDC_ERR_PROTOCOL, "the certificate sent with the keys does not name %s", who);
  if (!s->ca_pem)
    return refuse(why, wl, FEDC_ERR_PERMISSION, "the coordinator has no federation CA to check the certificate sent "
                                                "with the keys against");
  if (strcmp(fed, s->federation) != 0)
    return refuse(why, wl, FEDC_ERR_PERMISSION, "the certificate sent with the keys is of another federation "
                  "('%s', this is '%s')", fed, s->federation);
  if (fc_pki_verify_pem(s->ca_pem, strlen(s->ca_pem), pem, len, err, sizeof err) != FEDC_OK)
    return refuse(why, wl, FEDC_ERR_PERMISSION, "the certificate sent with the keys is not from the federation CA "
                  "(foreign CA): %s", err);
  if (!caller_fp || fc_pki_cert_sha256_pem(pem, len, fp) != FEDC_OK || !fc_digest_equal(fp, caller_fp, 32))
    return refuse(why, wl, FEDC_ERR_PERMISSION, "the certificate sent with the keys is not the caller's: not the "
                  "certificate %s presented on this TLS connection", who);
  /* It verified here but not through the cache: only a cache that could not
   * take it (out of memory) gets here; refuse rather than keep it unparsed. */
  return refuse(why, wl, FEDC_ERR_NOMEM, "out of memory checking the certificate sent with the keys");
}

static int submit_keys(fc_sa_server *s, uint32_t index, const uint8_t caller_fp[32], const Fedc__V1__SecAggKeys *k,
                       char *why, size_t wl) {
  sa_member *m = &s->m[index - 1];
  if (m->done >= FC_SA_ADVERTISE) return refuse(why, wl, FEDC_ERR_REJECTED, "keys already advertised");
  if (!k || k->index != index || k->enc_pk.len != 32 || k->mask_pk.len != 32 || !k->signature.len ||
      k->signature.len > FC_SIG_MAX || !k->certificate || strlen(k->certificate) > MAX_CERT_PEM)
    return refuse(why, wl, FEDC_ERR_PROTOCOL, "malformed key advertisement");
  size_t cl = strlen(k->certificate);
  fc_cert *cert = NULL;
  int rc = check_advertised_cert(s, index, k->certificate, cl, caller_fp, &cert, why, wl);
  if (rc != FEDC_OK) return rc;
  uint8_t msg[FC_SA_ADV_MSG_LEN];
  fc_sa_advertise_msg(s->session, index, k->enc_pk.data, k->mask_pk.data, msg);
  if (fc_cert_verify(cert, msg, sizeof msg, k->signature.data, k->signature.len) != FEDC_OK) {
    fc_cert_release(cert);
    return refuse(why, wl, FEDC_ERR_PROTOCOL, "key advertisement is not signed for this session");
  }
  fedc__v1__sec_agg_keys__init(&m->keys);
  m->keys.index = index;
  if (copy_bytes(&m->keys.enc_pk, &k->enc_pk) || copy_bytes(&m->keys.mask_pk, &k->mask_pk) ||
      copy_bytes(&m->keys.signature, &k->signature) || !(m->keys.certificate = dupstr(k->certificate))) {
    free(m->keys.enc_pk.data);
    free(m->keys.mask_pk.data);
    free(m->keys.signature.data);
    memset(&m->keys, 0, sizeof m->keys);
    fc_cert_release(cert);
    return refuse(why, wl, FEDC_ERR_NOMEM, "out of memory");
  }
  m->cert = cert;
  m->done = FC_SA_ADVERTISE;
  return FEDC_OK;
}

/* ---- round 1: shares, one to every neighbour that advertised ---- */
static int submit_shares(fc_sa_server *s, uint32_t index, const Fedc__V1__SecAggSubmitRequest *r, char *why,
                         size_t wl) {
  sa_member *m = &s->m[index - 1];
  if (m->done >= FC_SA_SHARE_KEYS) return refuse(why, wl, FEDC_ERR_REJECTED, "shares already sent");
  if (m->done < FC_SA_ADVERTISE) return refuse(why, wl, FEDC_ERR_REJECTED, "dropped: no keys advertised in time");
  uint32_t nn = fc_sa_graph_neighbors(&s->graph, index, s->nbr), want = 0;
  for (uint32_t i = 0; i < nn; i++) want += s->m[s->nbr[i] - 1].done >= FC_SA_ADVERTISE;
  if (r->n_shares != want || r->seed_commitment.len != 32)
    return refuse(why, wl, FEDC_ERR_PROTOCOL, "%zu shares for %u neighbours that advertised keys", r->n_shares, want);
  for (size_t i = 0; i < r->n_shares; i++) {
    const Fedc__V1__SecAggShare *x = r->shares[i];
    if (x->from != index || !fc_sa_graph_adjacent(&s->graph, index, x->to) ||
        s->m[x->to - 1].done < FC_SA_ADVERTISE || x->nonce.len != FC_GCM_NONCE_LEN ||
        x->ciphertext.len != FC_SA_SHARE_CT_LEN)
      return refuse(why, wl, FEDC_ERR_PROTOCOL, "share %zu: wrong sender, recipient or size", i);
    for (size_t j = 0; j < i; j++)
      if (r->shares[j]->to == x->to) return refuse(why, wl, FEDC_ERR_PROTOCOL, "two shares for %u", x->to);
  }
  /* All checked: file them in the recipients' inboxes. */
  for (size_t i = 0; i < r->n_shares; i++) {
    const Fedc__V1__SecAggShare *x = r->shares[i];
    sa_member *to = &s->m[x->to - 1];
    Fedc__V1__SecAggShare *c = malloc(sizeof *c);
    Fedc__V1__SecAggShare **grown = NULL;
    if (c) {
      fedc__v1__sec_agg_share__init(c);
      c->from = x->from;
      c->to = x->to;
    }
    if (!c || copy_bytes(&c->nonce, &x->nonce) || copy_bytes(&c->ciphertext, &x->ciphertext) ||
        !(grown = realloc(to->inbox, (to->ninbox + 1) * sizeof *grown))) {
      free_share(c);
      /* Roll back what this submission filed, so it leaves no trace. */
      for (size_t j = 0; j < i; j++) {
        sa_member *t2 = &s->m[r->shares[j]->to - 1];
        free_share(t2->inbox[--t2->ninbox]);
      }
      return refuse(why, wl, FEDC_ERR_NOMEM, "out of memory");
    }
    to->inbox = grown;
    to->inbox[to->ninbox++] = c;
  }
  memcpy(m->commitment, r->seed_commitment.data, 32);
  m->done = FC_SA_SHARE_KEYS;
  return FEDC_OK;
}

/* ---- round 3: signature over the survivor list ---- */
static int submit_signature(fc_sa_server *s, uint32_t index, const ProtobufCBinaryData *sig, char *why, size_t wl) {
  sa_member *m = &s->m[index - 1];
  if (m->done >= FC_SA_CONSISTENCY) return refuse(why, wl, FEDC_ERR_REJECTED, "survivor list already signed");
  if (m->done < FC_SA_MASKED) return refuse(why, wl, FEDC_ERR_REJECTED, "dropped: no masked input in time");
  if (!sig->len || sig->len > FC_SIG_MAX) return refuse(why, wl, FEDC_ERR_PROTOCOL, "malformed signature");
  uint8_t dig[32];
  if (fc_sa_survivors_digest(s->session, s->survivors, s->nsurvivors, dig) != FEDC_OK ||
      fc_cert_verify(m->cert, dig, sizeof dig, sig->data, sig->len) != FEDC_OK)
    return refuse(why, wl, FEDC_ERR_PROTOCOL, "signature does not cover this session's survivor list");
  if (copy_bytes(&m->signature, sig)) return refuse(why, wl, FEDC_ERR_NOMEM, "out of memory");
  m->done = FC_SA_CONSISTENCY;
  return FEDC_OK;
}

int sa_server_is_survivor(const fc_sa_server *s, uint32_t v) { return s->m[v - 1].done >= FC_SA_MASKED; }

/* ---- round 4: one share per neighbour, of the kind the survivor list says ---- */
static int submit_unmask(fc_sa_server *s, uint32_t index, const Fedc__V1__SecAggSubmitRequest *r, char *why,
                         size_t wl) {
  sa_member *m = &s->m[index - 1];
  if (m->done >= FC_SA_UNMASK) return refuse(why, wl, FEDC_ERR_REJECTED, "unmask shares already sent");
  if (m->done < FC_SA_CONSISTENCY) return refuse(why, wl, FEDC_ERR_REJECTED, "dropped: survivor list not signed in time");
  if (r->n_unmask > s->p.k + 1) return refuse(why, wl, FEDC_ERR_PROTOCOL, "more unmask shares than neighbours");
  /* A survivor that signed holds at least its own share of b: an empty list
   * is malformed, not a way to count as unmasked while sending nothing. */
  if (!r->n_unmask) return refuse(why, wl, FEDC_ERR_PROTOCOL, "malformed unmask message: no shares");
  for (size_t i = 0; i < r->n_unmask; i++) {
    const Fedc__V1__SecAggUnmaskShare *u = r->unmask[i];
    int own = u->owner == index; /* its own share of b: it survived */
    if (u->share.len != 32 ||
        (!own && (!fc_sa_graph_adjacent(&s->graph, index, u->owner) || !sa_server_received_share(s, u->owner, index))))
      return refuse(why, wl, FEDC_ERR_PROTOCOL, "unmask share for %u: not a neighbour that shared with us", u->owner);
    if ((u->self_seed != 0) != sa_server_is_survivor(s, u->owner))
      return refuse(why, wl, FEDC_ERR_PROTOCOL, "unmask share for %u is of the wrong kind for the survivor list",
                    u->owner);
    for (size_t j = 0; j < i; j++)
      if (r->unmask[j]->owner == u->owner) return refuse(why, wl, FEDC_ERR_PROTOCOL, "two shares for %u", u->owner);
  }
  for (size_t i = 0; i < r->n_unmask; i++) {
    const Fedc__V1__SecAggUnmaskShare *u = r->unmask[i];
    sa_member *o = &s->m[u->owner - 1];
    if (o->nr == o->capr) {
      uint32_t cap = o->capr ? o->capr * 2 : 8;
      uint16_t *xs = realloc(o->rxs, cap * sizeof *xs);
      if (xs) o->rxs = xs;
      uint8_t(*sh)[32] = xs ? malloc((size_t)cap * 32) : NULL;
      if (!sh) return refuse(why, wl, FEDC_ERR_NOMEM, "out of memory"); /* partial: counted below */
      if (o->rshares) {
        memcpy(sh, o->rshares, (size_t)o->nr * 32);
        fc_wipe(o->rshares, (size_t)o->nr * 32);
        free(o->rshares);
      }
      o->rshares = sh;
      o->capr = cap;
    }
    o->rxs[o->nr] = (uint16_t)index;
    memcpy(o->rshares[o->nr], u->share.data, 32);
    o->nr++;
  }
  m->done = FC_SA_UNMASK;
  return FEDC_OK;
}

int fc_sa_server_submit(fc_sa_server *s, uint32_t index, const uint8_t caller_cert_sha256[32],
                        const Fedc__V1__SecAggSubmitRequest *r, char *why, size_t whylen) {
  if (s->aborted) return refuse(why, whylen, FEDC_ERR_REJECTED, "round aborted: %s", s->why);
  if (index < 1 || index > s->p.n) return refuse(why, whylen, FEDC_ERR_REJECTED, "not in this round's cohort");
  if (r->round != s->p.round) return refuse(why, whylen, FEDC_ERR_REJECTED, "submission for another round");
  if ((int)r->stage != s->stage)
    return refuse(why, whylen, FEDC_ERR_REJECTED, "%s stage is closed (open: %s)", fc_sa_stage_name((int)r->stage),
                  fc_sa_stage_name(s->stage));
  switch (s->stage) {
  case FC_SA_ADVERTISE: return submit_keys(s, index, caller_cert_sha256, r->keys, why, whylen);
  case FC_SA_SHARE_KEYS: return submit_shares(s, index, r, why, whylen);
  case FC_SA_CONSISTENCY: return submit_signature(s, index, &r->survivors_signature, why, whylen);
  case FC_SA_UNMASK: return submit_unmask(s, index, r, why, whylen);
  default: return refuse(why, whylen, FEDC_ERR_REJECTED, "masked input goes through UploadUpdate");
  }
}

int fc_sa_server_masked_allowed(const fc_sa_server *s, uint32_t index) {
  return !s->aborted && s->stage == FC_SA_MASKED && index >= 1 && index <= s->p.n &&
         s->m[index - 1].done == FC_SA_SHARE_KEYS;
}

void fc_sa_server_masked_done(fc_sa_server *s, uint32_t index) {
  if (fc_sa_server_masked_allowed(s, index)) s->m[index - 1].done = FC_SA_MASKED;
}

static uint32_t count_done(const fc_sa_server *s, int stage) {
  uint32_t c = 0;
  for (uint32_t i = 0; i < s->p.n; i++) c += s->m[i].done >= stage;
  return c;
}

/* Withdrawn members (fc_sa_server_withdraw) the open stage counts out. In
 * the advertise stage: all of them (*all) from what it expects, as the
 * engine stopped expecting each, and those that advertised (before their
 * Leave or after it: *sent_wd) from what was sent. Later: the ones done with
 * the stage before and not with this one, from what it expects. */
static void count_withdrawn(const fc_sa_server *s, uint32_t *all, uint32_t *sent_wd) {
  *all = *sent_wd = 0;
  for (uint32_t i = 0; i < s->p.n; i++) {
    const sa_member *m = &s->m[i];
    if (!m->withdrawn) continue;
    if (s->stage == FC_SA_ADVERTISE) {
      (*all)++;
      *sent_wd += m->done >= FC_SA_ADVERTISE;
    } else if (m->done == s->stage - 1) {
      (*all)++;
    }
  }
}

/* The open stage's messages: those it waits for in all (*expects) and
 * those in (*sent). A withdrawn member's advertisement is in neither: the
 * engine dropped it from the count the advertise stage waits for
 * (expected_advertise), so its advertisement must not stand in for a member
 * still training. Buckets pass their size, less the withdrawn. */
static void stage_counts(const fc_sa_server *s, uint32_t expected_advertise, uint32_t *expects, uint32_t *sent) {
  uint32_t wd, wd_sent;
  count_withdrawn(s, &wd, &wd_sent);
  if (s->stage == FC_SA_ADVERTISE) {
    uint32_t left = s->p.n - wd;
    *expects = expected_advertise < left ? expected_advertise : left;
    *sent = count_done(s, s->stage) - wd_sent;
  } else {
    *expects = count_done(s, s->stage - 1) - wd;
    *sent = count_done(s, s->stage);
  }
}

int fc_sa_server_withdraw(fc_sa_server *s, uint32_t index) {
  if (!s || index < 1 || index > s->p.n) return 0;
  sa_member *m = &s->m[index - 1];
  if (m->withdrawn) return 0; /* said before: nothing new */
  /* Before advertising too: an advertisement sent after the Leave must not
   * count, as the engine stopped expecting it. */
  m->withdrawn = 1;
  /* 1: a member still in the protocol (it advertised and no close dropped
   * it since), whose later stages now go on without it. */
  return !s->aborted && s->stage && m->done >= FC_SA_ADVERTISE && m->done >= s->stage - 1;
}

int fc_sa_server_stage_complete(const fc_sa_server *s, uint32_t expected_advertise) {
  if (s->aborted || !s->stage) return 0;
  uint32_t expects, sent;
  stage_counts(s, expected_advertise, &expects, &sent);
  return sent >= expects;
}

uint32_t fc_sa_server_wait_hint(fc_sa_server *s, uint32_t expected_advertise, uint64_t now_ms) {
  if (s->aborted || !s->stage) return FC_SA_POLL_MS;
  uint32_t before, done;
  stage_counts(s, expected_advertise, &before, &done);
  uint32_t due = before > done ? before - done : 0;
  uint32_t tail = before / 8 > 2 ? before / 8 : 2;
  if (due > tail) return FC_SA_POLL_MS;
  if (s->tail_stage != s->stage) {
    s->tail_stage = s->stage;
    s->tail_since_ms = now_ms;
  }
  return now_ms - s->tail_since_ms < FC_SA_POLL_TAIL_FOR_MS ? FC_SA_POLL_TAIL_MS : FC_SA_POLL_MS;
}

void fc_sa_server_abort(fc_sa_server *s, const char *why) {
  if (s->aborted) return;
  s->aborted = 1;
  snprintf(s->why, sizeof s->why, "%s", why);
}

int fc_sa_server_close_stage(fc_sa_server *s, char *why, size_t whylen) {
  if (s->aborted) return refuse(why, whylen, FEDC_ERR_REJECTED, "%s", s->why);
  if (!s->stage) return refuse(why, whylen, FEDC_ERR_PROTOCOL, "no stage open");
  uint32_t left = count_done(s, s->stage);
  s->remaining[s->stage - 1] = left;
  if (left < s->p.t) {
    char w[256];
    snprintf(w, sizeof w, "secure aggregation: only %u clients left after the %s stage, threshold t=%u", left,
             fc_sa_stage_name(s->stage), s->p.t);
    fc_sa_server_abort(s, w);
    return refuse(why, whylen, FEDC_ERR_REJECTED, "%s", w);
  }
  if (s->stage == FC_SA_MASKED && left < s->p.min_survivors) {
    /* Before any survivor list goes out, so no unmask share is asked for a
     * sum of fewer inputs (under DP: less noise) than the session promised. */
    char w[256];
    snprintf(w, sizeof w, "secure aggregation: only %u masked inputs, fewer than min_updates %u: nothing is unmasked",
             left, s->p.min_survivors);
    fc_sa_server_abort(s, w);
    return refuse(why, whylen, FEDC_ERR_REJECTED, "%s", w);
  }
  if (s->stage == FC_SA_MASKED) {
    /* U3, sorted by index: the list every survivor signs. */
    s->survivors = malloc(left * sizeof *s->survivors);
    if (!s->survivors) {
      fc_sa_server_abort(s, "secure aggregation: out of memory");
      return refuse(why, whylen, FEDC_ERR_REJECTED, "%s", s->why);
    }
    s->nsurvivors = 0;
    for (uint32_t i = 0; i < s->p.n; i++)
      if (s->m[i].done >= FC_SA_MASKED) s->survivors[s->nsurvivors++] = i + 1;
  }
  if (s->stage == FC_SA_UNMASK) {
    s->stage = 0; /* reconstruction checks that every secret has t shares */
    return FEDC_OK;
  }
  s->stage++;
  return FEDC_OK;
}

void fc_sa_server_remaining(const fc_sa_server *s, uint32_t out[5]) { memcpy(out, s->remaining, sizeof s->remaining); }

/* ---- polls ---- */

static void poll_status(Fedc__V1__SecAggPollResponse *out, Fedc__V1__SecAggPollResponse__Status st, const char *why) {
  out->status = st;
  out->reason = (char *)(why ? why : "");
}

void fc_sa_server_poll(fc_sa_server *s, uint32_t index, int stage, Fedc__V1__SecAggPollResponse *out) {
  Fedc__V1__SecAggPollResponse z = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
  *out = z;
  out->reason = (char *)"";
  if (s->aborted) return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED, s->why);
  if (index < 1 || index > s->p.n || stage < FC_SA_SHARE_KEYS || stage > FC_SA_UNMASK)
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED, "not in this round's cohort");
  sa_member *m = &s->m[index - 1];
  if (s->stage && stage > s->stage) {
    out->retry_after_ms = FC_SA_POLL_MS;
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT, "stage not open yet");
  }
  /* The input of `stage` is for those who completed the stage before it. */
  if (m->done < stage - 1)
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED,
                       "dropped: the previous stage closed without our message");
  if (stage != s->stage)
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED, "that stage has closed");
  uint32_t nn = fc_sa_graph_neighbors(&s->graph, index, s->nbr);
  switch (stage) {
  case FC_SA_SHARE_KEYS:
    out->neighbor_keys = calloc(nn ? nn : 1, sizeof *out->neighbor_keys);
    if (!out->neighbor_keys) break;
    for (uint32_t i = 0; i < nn; i++) {
      sa_member *v = &s->m[s->nbr[i] - 1];
      if (v->done >= FC_SA_ADVERTISE) out->neighbor_keys[out->n_neighbor_keys++] = &v->keys;
    }
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY, NULL);
  case FC_SA_MASKED:
    out->shares = m->inbox;
    out->n_shares = m->ninbox;
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY, NULL);
  case FC_SA_CONSISTENCY:
    out->survivors = s->survivors;
    out->n_survivors = s->nsurvivors;
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY, NULL);
  case FC_SA_UNMASK:
    out->signatures = calloc(nn ? nn : 1, sizeof *out->signatures);
    if (!out->signatures) break;
    for (uint32_t i = 0; i < nn; i++) {
      sa_member *v = &s->m[s->nbr[i] - 1];
      if (v->done < FC_SA_CONSISTENCY) continue;
      Fedc__V1__SecAggSignature *g = malloc(sizeof *g);
      if (!g) break;
      fedc__v1__sec_agg_signature__init(g);
      g->index = s->nbr[i];
      g->signature = v->signature;
      out->signatures[out->n_signatures++] = g;
    }
    return poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY, NULL);
  default: break;
  }
  fc_sa_poll_clear(out);
  out->retry_after_ms = 1000;
  poll_status(out, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT, "out of memory");
}

void fc_sa_poll_clear(Fedc__V1__SecAggPollResponse *m) {
  free(m->neighbor_keys);
  for (size_t i = 0; i < m->n_signatures; i++) free(m->signatures[i]);
  free(m->signatures);
  Fedc__V1__SecAggPollResponse z = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
  *m = z;
}

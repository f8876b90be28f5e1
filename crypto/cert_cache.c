/*
 * cert_cache.c - verified certificates, kept parsed (see cert_cache.h for
 * the invariants and why).
 *
 * A chained hash table on the SHA-256 of the PEM bytes; each entry holds the
 * leaf's public key, its SPIFFE identity, its DER fingerprint and the
 * verified chain's validity window, and is reference-counted so a caller (a
 * SecAgg session holding its neighbours) keeps what it looked up while the
 * cache evicts. The CA is parsed once, at creation; each miss parses the
 * presented PEM once and verifies it with fc_pki_verify_x509 (the same
 * strict RFC 5280 check as fc_pki_verify_pem). Negative results are not
 * kept: a certificate that failed fails again at full cost, which only its
 * sender's messages can make us pay.
 */
#include "crypto/cert_cache.h"

#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MAX_CHAIN 16 /* certificates read from one PEM text, as pki.c */

struct fc_cert {
  atomic_uint refs;
  uint8_t key[FC_SHA256_LEN]; /* SHA-256 of the PEM bytes: the cache key */
  uint8_t der_sha[FC_SHA256_LEN];
  EVP_PKEY *pub;
  int has_identity;
  char federation[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  int64_t valid_from, valid_until; /* seconds since the epoch: 64 bits where time_t has 32 (armhf) */
  uint64_t used; /* the cache's clock at the last lookup */
  fc_cert *next; /* bucket chain */
};

struct fc_cert_cache {
  char *ca_pem;
  size_t ca_len;
  STACK_OF(X509) *cas;
  fc_cert **bucket;
  size_t nbuckets, size, cap;
  uint64_t clock, hits, verifications;
};

static void set_err(char *err, size_t errlen, const char *fmt, const char *arg) {
  if (err && errlen) snprintf(err, errlen, fmt, arg);
}

/* Up to MAX_CHAIN certificates from PEM text into a fresh stack. */
static int read_pem_certs(const char *pem, size_t len, STACK_OF(X509) **out) {
  if (!pem || !len || len > INT_MAX) return FEDC_ERR_FORMAT;
  BIO *in = BIO_new_mem_buf(pem, (int)len);
  STACK_OF(X509) *certs = sk_X509_new_null();
  int rc = in && certs ? FEDC_OK : FEDC_ERR_NOMEM;
  X509 *x;
  while (rc == FEDC_OK && sk_X509_num(certs) < MAX_CHAIN && (x = PEM_read_bio_X509(in, NULL, NULL, NULL))) {
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      rc = FEDC_ERR_NOMEM;
    }
  }
  ERR_clear_error(); /* the read that ended the loop queued "no start line" */
  BIO_free(in);
  if (rc == FEDC_OK && sk_X509_num(certs) == 0) rc = FEDC_ERR_FORMAT;
  if (rc != FEDC_OK) {
    sk_X509_pop_free(certs, X509_free);
    return rc;
  }
  *out = certs;
  return FEDC_OK;
}

int fc_cert_cache_create(const char *ca_pem, size_t ca_len, size_t cap, fc_cert_cache **out, char *err,
                         size_t errlen) {
  fc_cert_cache *c = calloc(1, sizeof *c);
  int rc = FEDC_ERR_NOMEM;
  if (!c) goto fail;
  c->cap = cap ? cap : 1;
  c->nbuckets = 16;
  while (c->nbuckets < 2 * c->cap && c->nbuckets < (1u << 20)) c->nbuckets *= 2;
  if (!(c->bucket = calloc(c->nbuckets, sizeof *c->bucket)) || !(c->ca_pem = malloc(ca_len + 1))) goto fail;
  memcpy(c->ca_pem, ca_pem, ca_len);
  c->ca_pem[ca_len] = '\0';
  c->ca_len = ca_len;
  if ((rc = read_pem_certs(ca_pem, ca_len, &c->cas)) != FEDC_OK) {
    set_err(err, errlen, "%s", rc == FEDC_ERR_FORMAT ? "the CA certificate: no PEM certificate found" : "out of memory");
    goto fail;
  }
  *out = c;
  return FEDC_OK;
fail:
  if (rc == FEDC_ERR_NOMEM) set_err(err, errlen, "%s", "out of memory");
  fc_cert_cache_destroy(c);
  return rc;
}

void fc_cert_release(fc_cert *x) {
  if (!x || atomic_fetch_sub(&x->refs, 1) != 1) return;
  EVP_PKEY_free(x->pub);
  free(x);
}

fc_cert *fc_cert_ref(fc_cert *x) {
  if (x) atomic_fetch_add(&x->refs, 1);
  return x;
}

void fc_cert_cache_destroy(fc_cert_cache *c) {
  if (!c) return;
  for (size_t b = 0; c->bucket && b < c->nbuckets; b++)
    for (fc_cert *x = c->bucket[b], *nx; x; x = nx) {
      nx = x->next;
      fc_cert_release(x);
    }
  free(c->bucket);
  sk_X509_pop_free(c->cas, X509_free);
  free(c->ca_pem);
  free(c);
}

int fc_cert_cache_same_ca(const fc_cert_cache *c, const char *ca_pem, size_t ca_len) {
  return c && ca_pem && ca_len == c->ca_len && memcmp(ca_pem, c->ca_pem, ca_len) == 0;
}

uint64_t fc_cert_cache_hits(const fc_cert_cache *c) { return c->hits; }
uint64_t fc_cert_cache_verifications(const fc_cert_cache *c) { return c->verifications; }
size_t fc_cert_cache_size(const fc_cert_cache *c) { return c->size; }

static size_t slot(const fc_cert_cache *c, const uint8_t key[FC_SHA256_LEN]) {
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return (size_t)(h & (c->nbuckets - 1));
}

/* Full: drop the least recently used half of the entries nobody holds. */
static void evict(fc_cert_cache *c) {
  size_t n = 0, drop;
  uint64_t *ages = malloc(c->size * sizeof *ages);
  if (!ages) return;
  for (size_t b = 0; b < c->nbuckets; b++)
    for (fc_cert *x = c->bucket[b]; x; x = x->next)
      if (atomic_load(&x->refs) == 1) ages[n++] = x->used;
  if (!n) {
    free(ages);
    return;
  }
  /* The age below which entries go: the n/2-th smallest (at least one). */
  drop = n / 2 ? n / 2 : 1;
  uint64_t limit = 0;
  for (size_t i = 0; i < drop; i++) { /* partial selection: drop is at most n/2 */
    size_t m = i;
    for (size_t j = i + 1; j < n; j++)
      if (ages[j] < ages[m]) m = j;
    uint64_t t = ages[i];
    ages[i] = ages[m];
    ages[m] = t;
    limit = ages[i];
  }
  free(ages);
  for (size_t b = 0; b < c->nbuckets; b++)
    for (fc_cert **pp = &c->bucket[b]; *pp;) {
      fc_cert *x = *pp;
      if (atomic_load(&x->refs) == 1 && x->used <= limit) {
        *pp = x->next;
        c->size--;
        fc_cert_release(x);
      } else {
        pp = &x->next;
      }
    }
}

/* Parse and verify pem into a new entry (one reference, the caller's). */
static int verify_new(fc_cert_cache *c, const char *pem, size_t len, const uint8_t key[FC_SHA256_LEN], fc_cert **out,
                      char *err, size_t errlen) {
  STACK_OF(X509) *chain = NULL;
  X509 *leaf = NULL;
  fc_cert *x = NULL;
  int rc = read_pem_certs(pem, len, &chain);
  if (rc != FEDC_OK) {
    set_err(err, errlen, "%s", rc == FEDC_ERR_FORMAT ? "the certificate: no PEM certificate found" : "out of memory");
    return rc;
  }
  leaf = sk_X509_shift(chain); /* the rest are untrusted intermediates */
  if (!(x = calloc(1, sizeof *x))) {
    rc = FEDC_ERR_NOMEM;
    set_err(err, errlen, "%s", "out of memory");
    goto out;
  }
  c->verifications++;
  if ((rc = fc_pki_verify_x509(c->cas, leaf, chain, &x->valid_from, &x->valid_until, err, errlen)) != FEDC_OK)
    goto out;
  unsigned int dl = 0;
  EVP_PKEY *pub = X509_get0_pubkey(leaf);
  if (!pub || X509_digest(leaf, EVP_sha256(), x->der_sha, &dl) != 1 || dl != FC_SHA256_LEN) {
    ERR_clear_error();
    rc = FEDC_ERR_CRYPTO;
    set_err(err, errlen, "%s", "the certificate's key or fingerprint cannot be read");
    goto out;
  }
  EVP_PKEY_up_ref(pub);
  x->pub = pub;
  char uri[FC_PKI_URI_MAX];
  x->has_identity = fc_pki_cert_spiffe_uri(leaf, uri, sizeof uri) == FEDC_OK &&
                    fc_pki_identity_from_spiffe(uri, x->federation, sizeof x->federation, x->role, sizeof x->role,
                                                x->name, sizeof x->name) == FEDC_OK;
  memcpy(x->key, key, FC_SHA256_LEN);
  atomic_init(&x->refs, 1);
  *out = x;
  x = NULL;
out:
  if (x) {
    EVP_PKEY_free(x->pub);
    free(x);
  }
  X509_free(leaf);
  sk_X509_pop_free(chain, X509_free);
  return rc;
}

int fc_cert_cache_get(fc_cert_cache *c, const char *pem, size_t len, fc_cert **out, char *err, size_t errlen) {
  uint8_t key[FC_SHA256_LEN];
  if (!c || !pem || !len || !out) return FEDC_ERR_INVALID;
  if (fc_sha256(pem, len, key) != FEDC_OK) {
    set_err(err, errlen, "%s", "cannot hash the certificate");
    return FEDC_ERR_CRYPTO;
  }
  size_t b = slot(c, key);
  fc_cert *x = c->bucket[b];
  while (x && memcmp(x->key, key, sizeof key) != 0) x = x->next;
  int64_t now = (int64_t)time(NULL);
  if (x) {
    /* Verified before; the clock is all that can have changed. Expired at
     * notAfter itself, as OpenSSL's check has it (X509_cmp_time). */
    if (now < x->valid_from || now >= x->valid_until) {
      set_err(err, errlen, "the certificate does not verify against the federation CA: %s",
              now >= x->valid_until ? "certificate has expired" : "certificate is not yet valid");
      return FEDC_ERR_CERT_EXPIRED;
    }
    x->used = ++c->clock;
    c->hits++;
    *out = fc_cert_ref(x);
    return FEDC_OK;
  }
  int rc = verify_new(c, pem, len, key, &x, err, errlen);
  if (rc != FEDC_OK) return rc;
  if (c->size >= c->cap) evict(c);
  x->used = ++c->clock;
  x->next = c->bucket[b];
  c->bucket[b] = fc_cert_ref(x); /* the cache's reference */
  c->size++;
  *out = x;
  return FEDC_OK;
}

int fc_cert_identity(const fc_cert *x, const char **federation, const char **role, const char **name) {
  if (!x || !x->has_identity) return FEDC_ERR_INVALID;
  if (federation) *federation = x->federation;
  if (role) *role = x->role;
  if (name) *name = x->name;
  return FEDC_OK;
}

const uint8_t *fc_cert_sha256(const fc_cert *x) { return x->der_sha; }

int fc_cert_verify(const fc_cert *x, const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len) {
  return x ? fc_verify_key(x->pub, msg, msg_len, sig, sig_len) : FEDC_ERR_INVALID;
}

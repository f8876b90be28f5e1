/*
 * cert_cache.h - certificates verified once against one CA and kept, parsed,
 * for the signatures made with them.
 *
 * Secure aggregation checks every neighbour's certificate (chain to the
 * federation CA, identity) and then two signatures made with its key, every
 * round. Parsing a certificate in OpenSSL 3 costs about twice an ECDSA
 * verification and the chain check once more (callgrind, docs/results.md),
 * so a client that re-parsed the PEM for each use spent most of its
 * secure-aggregation CPU there. Here a certificate is parsed and its chain
 * verified once; later lookups of the same bytes return the same verified
 * entry.
 *
 * Invariants:
 *  - Entries are keyed by the SHA-256 of the exact PEM bytes presented, never
 *    by who presented them: another certificate under the same name or cohort
 *    index is another key, checked from scratch.
 *  - Only certificates that verified are kept. A hit still checks the clock
 *    against the chain's validity window (every certificate of the chain, as
 *    the verification did), so an entry that has expired since is refused
 *    like a fresh certificate would be.
 *  - A cache trusts one CA (its PEM bytes); a caller whose CA changed makes a
 *    new cache (fc_cert_cache_same_ca).
 *  - At most `cap` entries; when full, the least recently used entries no
 *    caller holds are dropped. Entries a caller holds stay valid until
 *    released, even past eviction or cache destruction.
 *  - Not thread-safe: one thread at a time per cache (each client runtime has
 *    its own; the coordinator's is used under its lock).
 */
#ifndef FEDC_CRYPTO_CERT_CACHE_H
#define FEDC_CRYPTO_CERT_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "crypto/pki.h"

typedef struct fc_cert_cache fc_cert_cache;
typedef struct fc_cert fc_cert; /* one verified certificate; reference-counted */

/* A cache for certificates issued under ca_pem (copied). */
int fc_cert_cache_create(const char *ca_pem, size_t ca_len, size_t cap, fc_cert_cache **out, char *err,
                         size_t errlen);
void fc_cert_cache_destroy(fc_cert_cache *c); /* NULL is a no-op */
/* 1 if the cache trusts exactly these CA bytes. */
int fc_cert_cache_same_ca(const fc_cert_cache *c, const char *ca_pem, size_t ca_len);

/* The verified certificate for these PEM bytes (leaf first, then untrusted
 * intermediates, as fc_pki_verify_pem reads them): from the cache if the
 * same bytes verified before and the chain is still within its validity
 * now, else parsed and verified against the CA (and kept if it verifies).
 * *out is a new reference (fc_cert_release). Errors as fc_pki_verify_pem:
 * FEDC_ERR_FORMAT, FEDC_ERR_TLS, FEDC_ERR_CERT_EXPIRED, with a line in err. */
int fc_cert_cache_get(fc_cert_cache *c, const char *pem, size_t len, fc_cert **out, char *err, size_t errlen);

/* Counters: lookups served from the cache, and full verifications. */
uint64_t fc_cert_cache_hits(const fc_cert_cache *c);
uint64_t fc_cert_cache_verifications(const fc_cert_cache *c);
size_t fc_cert_cache_size(const fc_cert_cache *c);

/* The identity of a verified certificate (crypto/pki.h's SPIFFE rule):
 * FEDC_ERR_INVALID if it carries none. Pointers live as long as the reference. */
int fc_cert_identity(const fc_cert *x, const char **federation, const char **role, const char **name);
/* SHA-256 of the leaf's DER: the fingerprint the transport records for a TLS peer. */
const uint8_t *fc_cert_sha256(const fc_cert *x);
/* Verify sig over msg with the certificate's key, as fc_verify_pem does. */
int fc_cert_verify(const fc_cert *x, const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len);
fc_cert *fc_cert_ref(fc_cert *x);  /* another reference to x */
void fc_cert_release(fc_cert *x); /* NULL is a no-op */

#endif

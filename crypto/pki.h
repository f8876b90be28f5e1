/*
 * pki.h - the federation's certificate authority for mutual TLS: create a CA
 * and the coordinator's certificate, issue client/admin/coordinator
 * certificates carrying a SPIFFE ID, verify a certificate against the CA, and
 * read the identity (federation, role, name) back out of a certificate (the
 * transport server applies the same function to the peer's certificate).
 *
 * Identity is the single URI SAN  spiffe://<federation>/<role>/<name>  where
 *   federation  [a-z0-9.-]{1,63}
 *   role        client | admin | coordinator | aggregator | signer (model manifests only)
 *   name        [A-Za-z0-9_.-]{1,64}, not "." or ".."
 * The CA carries spiffe://<federation> (trust domain only); issuing reads the
 * federation from there, so the CA certificate is the one source of truth.
 *
 * All functions return 0 or a fedc_err code; err/errlen (may be NULL/0) receive
 * a one-line human-readable message. Out-parameters are written only on
 * success. Files are never overwritten: an existing target is FEDC_ERR_EXISTS.
 */
#ifndef FEDC_CRYPTO_PKI_H
#define FEDC_CRYPTO_PKI_H

#include <openssl/types.h> /* X509 */
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FC_PKI_FEDERATION_MAX 64 /* 63 chars + NUL */
#define FC_PKI_ROLE_MAX 12       /* "coordinator" + NUL */
#define FC_PKI_NAME_MAX 65       /* 64 chars + NUL */
#define FC_PKI_URI_MAX 256       /* longest valid ID is 9+63+1+11+1+64 = 149 bytes */

#define FC_PKI_DEFAULT_DAYS 365
#define FC_PKI_MAX_DAYS 36500
#define FC_PKI_SKEW_SEC 300 /* notBefore is backdated this much for clock skew */

/* File names inside a PKI directory (see pki.c for the full table). */
#define FC_PKI_CA_KEY "ca.key"
#define FC_PKI_CA_CERT "ca.crt"
#define FC_PKI_COORD_KEY "coordinator.key"
#define FC_PKI_COORD_CERT "coordinator.crt"
#define FC_PKI_SIGNER_KEY "signer-coordinator.key"
#define FC_PKI_SIGNER_CERT "signer-coordinator.crt"
#define FC_PKI_FEDERATION_FILE "federation"

/*
 * Create dir (mode 0700; if it already exists it must be owned by us and not
 * writable by group or others, else FEDC_ERR_INVALID naming it and its mode,
 * the directory left as it was) holding ca.key, ca.crt,
 * coordinator.key, coordinator.crt, signer-coordinator.key/.crt (the
 * coordinator's model-signing key, role signer) and federation. key_type is "ec" (P-256,
 * also when NULL) or "ed25519". sans are extra coordinator SANs beyond
 * DNS:localhost and IP:127.0.0.1: IP literals become IP SANs, anything else
 * must be a valid hostname and becomes a DNS SAN. days in 1..FC_PKI_MAX_DAYS.
 * Refuses with FEDC_ERR_EXISTS, touching nothing, if any target file exists;
 * on any later failure the files created by this call are removed again.
 */
int fc_pki_init(const char *dir, const char *federation, const char *const *sans, size_t nsans, int days,
                const char *key_type, char *err, size_t errlen);

/* Options for fc_pki_issue_ex; fc_pki_issue_opts_init sets the defaults. */
typedef struct fc_pki_issue_opts {
  const char *ca_dir;        /* holds ca.key and ca.crt (required) */
  const char *out_dir;       /* NULL = ca_dir; created 0700 if missing, else ours and not group/world-writable */
  const char *role;          /* "client" | "admin" | "coordinator" */
  const char *name;          /* CN and last SPIFFE path segment */
  const char *key_type;      /* NULL = same algorithm as the CA key */
  const char *const *sans;   /* coordinator only: extra DNS/IP SANs */
  size_t nsans;
  /* Validity relative to now, in seconds. The defaults are -FC_PKI_SKEW_SEC
   * and FC_PKI_DEFAULT_DAYS days. fc_pki_issue_ex accepts any pair with
   * not_before < not_after, so tests can mint expired or future certificates;
   * fc_pki_issue only ever passes days in 1..FC_PKI_MAX_DAYS. */
  long not_before_offset_sec;
  long not_after_offset_sec;
} fc_pki_issue_opts;

void fc_pki_issue_opts_init(fc_pki_issue_opts *o);

/* Write <out_dir>/<role>-<name>.key (0600) and .crt signed by the CA in dir.
 * out_dir (or dir) is created 0700, or used if it exists under the same rule
 * as fc_pki_init's dir. */
int fc_pki_issue(const char *dir, const char *role, const char *name, const char *out_dir, int days, char *err,
                 size_t errlen);
int fc_pki_issue_ex(const fc_pki_issue_opts *o, char *err, size_t errlen);

/* The paths fc_pki_issue writes: <dir>/<role>-<name>.key and .crt. */
int fc_pki_leaf_paths(const char *dir, const char *role, const char *name, char *key_path, size_t klen,
                      char *crt_path, size_t clen);

/*
 * Identity from the first certificate in a PEM buffer: exactly one
 * spiffe:// URI SAN, parsed as fc_pki_identity_from_spiffe does.
 * FEDC_ERR_FORMAT if no certificate parses, FEDC_ERR_INVALID if the SPIFFE
 * SAN is absent, repeated or malformed, FEDC_ERR_TOO_LARGE if an output
 * buffer is too small. Buffers sized FC_PKI_*_MAX always suffice.
 */
int fc_pki_identity_from_pem(const char *cert_pem, size_t len, char *federation, size_t flen, char *role,
                             size_t rlen, char *name, size_t nlen);

/* SHA-256 of the DER of the first certificate in a PEM buffer: the
 * fingerprint the transport server records for a TLS peer (fc_peer's
 * cert_sha256). FEDC_ERR_FORMAT if no certificate parses. */
int fc_pki_cert_sha256_pem(const char *cert_pem, size_t len, uint8_t out[32]);

/* The federation of the first certificate in a PEM buffer holding a CA: its
 * one URI SAN spiffe://<federation>, as issuing reads it. FEDC_ERR_FORMAT if
 * no certificate parses, FEDC_ERR_INVALID if it has no such SAN. */
int fc_pki_ca_federation_pem(const char *ca_pem, size_t len, char fed[FC_PKI_FEDERATION_MAX]);

/*
 * The identity rule, one function for the CA tools and the transport server:
 * the single SPIFFE ID among cert's SANs, copied NUL-terminated into
 * out[outlen]. Only URI SANs count: an ID written in a DNS or e-mail SAN is
 * not an identity. Every URI whose scheme is "spiffe" in any letter case
 * counts, so "SPIFFE://f/admin/a" beside "spiffe://f/client/b" makes the
 * certificate ambiguous (refused) instead of one of them being picked.
 * The URI is returned as written; fc_pki_identity_from_spiffe then parses it
 * strictly (and refuses an upper-case scheme). FEDC_ERR_INVALID if there is
 * no such URI, more than one, a duplicated SAN extension, an embedded NUL or
 * a URI of FC_PKI_URI_MAX bytes or more; FEDC_ERR_TOO_LARGE if it does not
 * fit outlen (FC_PKI_URI_MAX always suffices). out is written only on success.
 */
int fc_pki_cert_spiffe_uri(const X509 *cert, char *out, size_t outlen);

/* Strict parser for "spiffe://<federation>/<role>/<name>"; nothing else. */
int fc_pki_identity_from_spiffe(const char *uri, char *federation, size_t flen, char *role, size_t rlen,
                                char *name, size_t nlen);

/* Name checks used by the parsers above and by the CLI; 1 if valid. */
int fc_pki_federation_ok(const char *federation);
int fc_pki_role_ok(const char *role);
int fc_pki_name_ok(const char *name);

/*
 * Verify cert_pem_path (leaf first; further certificates in the file are
 * treated as untrusted intermediates) against the CA certificate(s) in
 * ca_pem_path. FEDC_ERR_CERT_EXPIRED if a certificate in the chain is expired
 * or not yet valid, FEDC_ERR_TLS for any other verification failure,
 * FEDC_ERR_IO/FORMAT if a file cannot be read or parsed.
 */
int fc_pki_verify(const char *ca_pem_path, const char *cert_pem_path, char *err, size_t errlen);

/* The same for PEM text in memory (a certificate forwarded by a peer). */
int fc_pki_verify_pem(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, char *err,
                      size_t errlen);

/* The same; ignore_time skips the validity dates (a signature made while the
 * certificate was valid, checked after it expired). */
int fc_pki_verify_pem_ex(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, int ignore_time,
                         char *err, size_t errlen);

/* The same check on parsed certificates (crypto/cert_cache.c parses each
 * once): leaf against the CA certificates cas, untrusted intermediates (may
 * be NULL), at the current time. On success valid_from/valid_until (may be
 * NULL) receive the window in which every certificate of the verified chain
 * is valid (the latest notBefore, the earliest notAfter): the result holds
 * while the clock is inside it. Borrows everything. */
struct stack_st_X509; /* STACK_OF(X509) */
int fc_pki_verify_x509(struct stack_st_X509 *cas, X509 *leaf, struct stack_st_X509 *untrusted, int64_t *valid_from,
                       int64_t *valid_until, char *err, size_t errlen);

/* notAfter of the first certificate in cert_path and whether it has passed. */
int fc_pki_cert_expiry(const char *cert_path, time_t *not_after, int *expired_now);

#endif

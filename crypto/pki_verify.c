/*
 * pki_verify.c - verification: a certificate chain against the federation
 * CA (files, PEM in memory or X509 objects; strict X.509, the validity
 * window of the whole chain, the identity it carries) and a certificate's
 * expiry.
 *
 * Owns: no state. May call: pki_file.c (reading certificates, messages) and
 * pki_id.c (the identity of the leaf); never pki.c (issuing).
 */
#include "crypto/pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/keyfile.h"
#include "crypto/sa_crypto.h"
#include "crypto/pki_int.h"
#include "fedc/error.h"


/* ---- verify ----------------------------------------------------------------------------- */

static int verify_chain(STACK_OF(X509) *cas, STACK_OF(X509) *chain, const char *ca_pem_path,
                        const char *cert_pem_path, int ignore_time, char *err, size_t errlen);

int fc_pki_verify(const char *ca_pem_path, const char *cert_pem_path, char *err, size_t errlen) {
  STACK_OF(X509) *cas = NULL, *chain = NULL;
  int rc;
  if ((rc = pki_read_certs(ca_pem_path, &cas, err, errlen)) == FEDC_OK &&
      (rc = pki_read_certs(cert_pem_path, &chain, err, errlen)) == FEDC_OK)
    rc = verify_chain(cas, chain, ca_pem_path, cert_pem_path, 0, err, errlen);
  sk_X509_pop_free(chain, X509_free);
  sk_X509_pop_free(cas, X509_free);
  return rc;
}

int fc_pki_verify_pem(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, char *err,
                      size_t errlen) {
  return fc_pki_verify_pem_ex(ca_pem, ca_len, cert_pem, cert_len, 0, err, errlen);
}

int fc_pki_verify_pem_ex(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, int ignore_time,
                         char *err, size_t errlen) {
  STACK_OF(X509) *cas = NULL, *chain = NULL;
  int rc = FEDC_ERR_INVALID;
  if (ca_len > INT_MAX || cert_len > INT_MAX) return rc;
  BIO *a = BIO_new_mem_buf(ca_pem, (int)ca_len), *b = BIO_new_mem_buf(cert_pem, (int)cert_len);
  if (!a || !b) {
    BIO_free(a);
    BIO_free(b);
    return pki_crypto_fail(err, errlen, "allocating certificate reader");
  }
  rc = pki_read_certs_bio(a, "the CA certificate", &cas, err, errlen);
  if (rc == FEDC_OK) {
    rc = pki_read_certs_bio(b, "the certificate", &chain, err, errlen);
    b = NULL;
  }
  BIO_free(b);
  if (rc == FEDC_OK) rc = verify_chain(cas, chain, "the federation CA", "the certificate", ignore_time, err, errlen);
  sk_X509_pop_free(chain, X509_free);
  sk_X509_pop_free(cas, X509_free);
  return rc;
}

static int verify_leaf(STACK_OF(X509) *cas, X509 *leaf, STACK_OF(X509) *untrusted, const char *ca_pem_path,
                       const char *cert_pem_path, int ignore_time, int64_t *from, int64_t *until, char *err,
                       size_t errlen);

/* Verifies chain's first certificate (shifted off: the rest are untrusted
 * intermediates) against cas. Names are for the error message only. */
static int verify_chain(STACK_OF(X509) *cas, STACK_OF(X509) *chain, const char *ca_pem_path,
                        const char *cert_pem_path, int ignore_time, char *err, size_t errlen) {
  X509 *leaf = sk_X509_shift(chain); /* the rest are untrusted intermediates */
  int rc = verify_leaf(cas, leaf, chain, ca_pem_path, cert_pem_path, ignore_time, NULL, NULL, err, errlen);
  X509_free(leaf);
  return rc;
}

int fc_pki_verify_x509(struct stack_st_X509 *cas, X509 *leaf, struct stack_st_X509 *untrusted, int64_t *valid_from,
                       int64_t *valid_until, char *err, size_t errlen) {
  return verify_leaf(cas, leaf, untrusted, "the federation CA", "the certificate", 0, valid_from, valid_until, err,
                     errlen);
}

/* Seconds since the epoch of t, in 64 bits whatever the width of time_t: a
 * 32-bit time_t (Debian bookworm's armhf) cannot hold a date past 2038, and
 * timegm would overflow there. */
static int asn1_epoch(const ASN1_TIME *epoch, const ASN1_TIME *t, int64_t *out) {
  int days = 0, secs = 0;
  if (ASN1_TIME_diff(&days, &secs, epoch, t) != 1) return 0;
  *out = (int64_t)days * 86400 + secs;
  return 1;
}

/* The validity window shared by every certificate of a verified chain. */
static int chain_window(STACK_OF(X509) *chain, int64_t *from, int64_t *until) {
  int64_t lo = INT64_MIN, hi = INT64_MAX;
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  int rc = epoch ? FEDC_OK : FEDC_ERR_NOMEM;
  for (int i = 0; rc == FEDC_OK && i < sk_X509_num(chain); i++) {
    X509 *x = sk_X509_value(chain, i);
    int64_t b, a;
    if (!asn1_epoch(epoch, X509_get0_notBefore(x), &b) || !asn1_epoch(epoch, X509_get0_notAfter(x), &a)) {
      rc = FEDC_ERR_FORMAT;
      break;
    }
    if (b > lo) lo = b;
    if (a < hi) hi = a;
  }
  ASN1_TIME_free(epoch);
  ERR_clear_error();
  if (rc != FEDC_OK) return rc;
  *from = lo;
  *until = hi;
  return FEDC_OK;
}

/* The check itself: leaf against cas with the untrusted intermediates;
 * from/until (may be NULL) receive the verified chain's common validity
 * window, so a caller that keeps the result can tell when it lapses. */
static int verify_leaf(STACK_OF(X509) *cas, X509 *leaf, STACK_OF(X509) *untrusted, const char *ca_pem_path,
                       const char *cert_pem_path, int ignore_time, int64_t *from, int64_t *until, char *err,
                       size_t errlen) {
  X509_STORE *store = NULL;
  X509_STORE_CTX *ctx = NULL;
  STACK_OF(X509) *chain = untrusted;
  int rc;
  if (!leaf) {
    pki_set_err(err, errlen, "%s: no certificate", cert_pem_path);
    return FEDC_ERR_FORMAT;
  }
  if (!(store = X509_STORE_new()) || !(ctx = X509_STORE_CTX_new())) {
    rc = pki_crypto_fail(err, errlen, "allocating verifier");
    goto out;
  }
  for (int i = 0; i < sk_X509_num(cas); i++) {
    if (X509_STORE_add_cert(store, sk_X509_value(cas, i)) != 1) {
      rc = pki_crypto_fail(err, errlen, "loading CA certificate");
      goto out;
    }
  }
  if (X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) {
    rc = pki_crypto_fail(err, errlen, "initialising verifier");
    goto out;
  }
  /* Strict RFC 5280 checks: what we issue passes them, and a certificate that
   * does not is better caught here than in a peer's TLS stack. */
  X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx),
                              X509_V_FLAG_X509_STRICT | (ignore_time ? X509_V_FLAG_NO_CHECK_TIME : 0));
  /* If the certificate names its role, check its EKU fits it: clients and
   * admins authenticate as TLS clients, the coordinator as a TLS server. */
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  if (pki_cert_identity(leaf, fed, sizeof fed, role, sizeof role, name, sizeof name) == FEDC_OK) {
    if (strcmp(role, "signer") == 0) {
      /* OpenSSL 3.0 has no code-signing purpose: check the EKU by hand. */
      uint32_t xku = X509_get_extended_key_usage(leaf);
      if (!(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) || xku != XKU_CODE_SIGN) {
        pki_set_err(err, errlen, "%s is a signer certificate without exactly the codeSigning extended key usage",
                    cert_pem_path);
        rc = FEDC_ERR_TLS;
        goto out;
      }
    } else {
      X509_STORE_CTX_set_purpose(ctx, strcmp(role, "coordinator") == 0 || strcmp(role, "aggregator") == 0
                                        ? X509_PURPOSE_SSL_SERVER
                                                                        : X509_PURPOSE_SSL_CLIENT);
    }
  }
  if (X509_verify_cert(ctx) == 1) {
    rc = from || until ? chain_window(X509_STORE_CTX_get0_chain(ctx), from, until) : FEDC_OK;
    goto out;
  }
  int e = X509_STORE_CTX_get_error(ctx);
  int depth = X509_STORE_CTX_get_error_depth(ctx);
  rc = (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID) ? FEDC_ERR_CERT_EXPIRED
                                                                                : FEDC_ERR_TLS;
  pki_set_err(err, errlen, "%s does not verify against %s: %s%s", cert_pem_path, ca_pem_path,
              X509_verify_cert_error_string(e), depth == 0 ? "" : " (in its issuer chain)");
  ERR_clear_error();
out:
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return rc;
}

int fc_pki_cert_expiry(const char *cert_path, time_t *not_after, int *expired_now) {
  X509 *cert = NULL;
  int rc = pki_read_one_cert(cert_path, &cert, NULL, 0);
  if (rc) return rc;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
    ERR_clear_error();
    rc = FEDC_ERR_FORMAT;
  } else {
    time_t t = timegm(&tm);
    if (not_after) *not_after = t;
    if (expired_now) *expired_now = time(NULL) > t;
  }
  X509_free(cert);
  return rc;
}

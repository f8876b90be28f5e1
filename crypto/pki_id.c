/*
 * pki_id.c - names and identities: federation, role, name and SAN checks,
 * and the SPIFFE ID of a certificate (exactly one spiffe:// URI SAN, any
 * letter case in the scheme; anything else is refused rather than guessed),
 * its federation and role, a certificate's SHA-256 and a CA's federation.
 *
 * Owns: the identity rule the server (transport/server_auth.c) and the CA
 * tools share. May call: pki_file.c (messages) and OpenSSL only.
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


/* ---- names ---------------------------------------------------------------------- */

int fc_pki_federation_ok(const char *federation) {
  if (!federation) return 0;
  size_t n = strnlen(federation, FC_PKI_FEDERATION_MAX);
  if (n == 0 || n >= FC_PKI_FEDERATION_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = federation[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) return 0;
  }
  return 1;
}

int fc_pki_role_ok(const char *role) {
  return role && (strcmp(role, "client") == 0 || strcmp(role, "admin") == 0 || strcmp(role, "coordinator") == 0 ||
                  strcmp(role, "aggregator") == 0 || strcmp(role, "signer") == 0);
}

int fc_pki_name_ok(const char *name) {
  if (!name) return 0;
  size_t n = strnlen(name, FC_PKI_NAME_MAX);
  if (n == 0 || n >= FC_PKI_NAME_MAX) return 0;
  /* "." and ".." are path segments SPIFFE forbids; they would also make
   * confusing file names. */
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return 0;
  }
  return 1;
}

/* RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], 1..63 each, no
 * leading or trailing hyphen, 253 bytes in all. */
static int hostname_ok(const char *h) {
  size_t n = strnlen(h, 254);
  if (n == 0 || n > 253) return 0;
  size_t label = 0;
  for (size_t i = 0; i <= n; i++) {
    char c = h[i];
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || h[i - 1] == '-') return 0;
      label = 0;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    if (c == '-' && label == 0) return 0;
    label++;
  }
  return 1;
}

/* 1 if s is an IPv4 or IPv6 literal (what a2i_IPADDRESS accepts). */
int pki_is_ip_literal(const char *s) {
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(s);
  ERR_clear_error();
  if (!ip) return 0;
  ASN1_OCTET_STRING_free(ip);
  return 1;
}

int pki_check_sans(const char *const *sans, size_t nsans, char *err, size_t errlen) {
  for (size_t i = 0; i < nsans; i++) {
    if (!sans[i] || (!pki_is_ip_literal(sans[i]) && !hostname_ok(sans[i]))) {
      pki_set_err(err, errlen, "invalid --san \"%s\": expected a host name or an IP address",
                  sans[i] ? sans[i] : "(null)");
      return FEDC_ERR_INVALID;
    }
  }
  return FEDC_OK;
}

int pki_parse_key_type(const char *s, int *out) {
  if (!s || strcmp(s, "ec") == 0) {
    *out = KEY_EC;
    return 1;
  }
  if (strcmp(s, "ed25519") == 0) {
    *out = KEY_ED25519;
    return 1;
  }
  return 0;
}

/* ---- SPIFFE identity -------------------------------------------------------------- */

/* Copy src (length n) into dst[dlen] with a NUL; 0 if it does not fit. */
static int copy_out(char *dst, size_t dlen, const char *src, size_t n) {
  if (!dst || n >= dlen) return 0;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return 1;
}

int fc_pki_identity_from_spiffe(const char *uri, char *federation, size_t flen, char *role, size_t rlen,
                                char *name, size_t nlen) {
  if (!uri) return FEDC_ERR_INVALID;
  size_t total = strnlen(uri, URI_CAP);
  if (total >= URI_CAP || strncmp(uri, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) != 0) return FEDC_ERR_INVALID;
  const char *fed = uri + strlen(SPIFFE_PREFIX);
  const char *slash = strchr(fed, '/');
  if (!slash) return FEDC_ERR_INVALID;
  const char *role_start = slash + 1;
  const char *slash2 = strchr(role_start, '/');
  if (!slash2) return FEDC_ERR_INVALID;
  const char *name_start = slash2 + 1; /* any further '/' fails the name check */

  char fed_buf[FC_PKI_FEDERATION_MAX], role_buf[FC_PKI_ROLE_MAX];
  if (!copy_out(fed_buf, sizeof fed_buf, fed, (size_t)(slash - fed)) || !fc_pki_federation_ok(fed_buf))
    return FEDC_ERR_INVALID;
  if (!copy_out(role_buf, sizeof role_buf, role_start, (size_t)(slash2 - role_start)) ||
      !fc_pki_role_ok(role_buf))
    return FEDC_ERR_INVALID;
  if (!fc_pki_name_ok(name_start)) return FEDC_ERR_INVALID;

  size_t nname = strlen(name_start);
  if (!federation || !role || !name || strlen(fed_buf) >= flen || strlen(role_buf) >= rlen || nname >= nlen)
    return FEDC_ERR_TOO_LARGE;
  copy_out(federation, flen, fed_buf, strlen(fed_buf));
  copy_out(role, rlen, role_buf, strlen(role_buf));
  copy_out(name, nlen, name_start, nname);
  return FEDC_OK;
}

/*
 * The identity rule (pki.h): only URI SANs count, and every URI whose scheme
 * is "spiffe" in any letter case counts, so "SPIFFE://x" next to a valid ID
 * makes the certificate ambiguous rather than being skipped. The transport
 * server calls this too, on the peer certificate gRPC verified, so the CA
 * tools and the server can never disagree about who a certificate names.
 */
int fc_pki_cert_spiffe_uri(const X509 *cert, char *out, size_t outlen) {
  if (!cert || !out || outlen == 0) return FEDC_ERR_INVALID;
  int crit = 0;
  GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
  if (!gens) {
    ERR_clear_error();
    return FEDC_ERR_INVALID; /* absent (crit -1) or duplicated extension (crit -2) */
  }
  const char *uri = NULL;
  int found = 0, uri_len = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    if (g->type != GEN_URI) continue; /* an ID in a DNS or e-mail SAN is not an identity */
    const char *s = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
    int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
    if (n < 7 || strncasecmp(s, "spiffe:", 7) != 0) continue;
    found++;
    uri = s;
    uri_len = n;
  }
  int rc = FEDC_OK;
  if (found != 1 || uri_len >= URI_CAP || memchr(uri, '\0', (size_t)uri_len))
    rc = FEDC_ERR_INVALID;
  else if ((size_t)uri_len >= outlen)
    rc = FEDC_ERR_TOO_LARGE;
  else {
    memcpy(out, uri, (size_t)uri_len);
    out[uri_len] = '\0';
  }
  GENERAL_NAMES_free(gens);
  return rc;
}

int pki_cert_identity(X509 *cert, char *federation, size_t flen, char *role, size_t rlen, char *name,
                      size_t nlen) {
  char uri[URI_CAP];
  int rc = fc_pki_cert_spiffe_uri(cert, uri, sizeof uri);
  if (rc) return rc;
  return fc_pki_identity_from_spiffe(uri, federation, flen, role, rlen, name, nlen);
}

/* The first certificate in a PEM buffer: FEDC_OK, INVALID, NOMEM or FORMAT. */
static int first_cert_pem(const char *pem, size_t len, X509 **out) {
  if (!pem || len == 0 || len > INT_MAX) return FEDC_ERR_INVALID;
  BIO *in = BIO_new_mem_buf(pem, (int)len);
  if (!in) return FEDC_ERR_NOMEM;
  *out = PEM_read_bio_X509(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!*out) {
    ERR_clear_error();
    return FEDC_ERR_FORMAT;
  }
  return FEDC_OK;
}

int fc_pki_identity_from_pem(const char *cert_pem, size_t len, char *federation, size_t flen, char *role,
                             size_t rlen, char *name, size_t nlen) {
  X509 *cert = NULL;
  int rc = first_cert_pem(cert_pem, len, &cert);
  if (rc) return rc;
  rc = pki_cert_identity(cert, federation, flen, role, rlen, name, nlen);
  X509_free(cert);
  return rc;
}

int fc_pki_cert_sha256_pem(const char *cert_pem, size_t len, uint8_t out[32]) {
  X509 *cert = NULL;
  unsigned int n = 0;
  uint8_t fp[32];
  int rc = first_cert_pem(cert_pem, len, &cert);
  if (rc) return rc;
  if (X509_digest(cert, EVP_sha256(), fp, &n) != 1 || n != sizeof fp) {
    ERR_clear_error();
    rc = FEDC_ERR_CRYPTO;
  } else {
    memcpy(out, fp, sizeof fp);
  }
  X509_free(cert);
  return rc;
}

/* The federation a CA certificate is for: its one URI SAN "spiffe://<fed>". */
int pki_ca_federation(X509 *ca, char fed[FC_PKI_FEDERATION_MAX]) {
  char uri[URI_CAP];
  if (fc_pki_cert_spiffe_uri(ca, uri, sizeof uri) != FEDC_OK) return FEDC_ERR_INVALID;
  if (strncmp(uri, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) != 0) return FEDC_ERR_INVALID;
  const char *td = uri + strlen(SPIFFE_PREFIX);
  if (!fc_pki_federation_ok(td)) return FEDC_ERR_INVALID; /* also rejects a path */
  copy_out(fed, FC_PKI_FEDERATION_MAX, td, strlen(td));
  return FEDC_OK;
}

int fc_pki_ca_federation_pem(const char *ca_pem, size_t len, char fed[FC_PKI_FEDERATION_MAX]) {
  X509 *ca = NULL;
  int rc = first_cert_pem(ca_pem, len, &ca);
  if (rc) return rc;
  rc = pki_ca_federation(ca, fed);
  X509_free(ca);
  return rc;
}

/*
 * fuzz_pki_pem.c - certificate -> identity (fc_pki_identity_from_pem and
 * fc_pki_ca_federation_pem, crypto/pki.c) on any certificate: peers'
 * certificates reach it forwarded in SecAgg keys and in signed manifests,
 * before anything has verified them. fuzz_spiffe covers the SPIFFE ID
 * string parser alone; this target covers the PEM and DER decoding and the
 * SAN rule (exactly one spiffe URI SAN, in any letter case) in front of it.
 *
 * Input: a mode byte, then a DER certificate (even mode: wrapped in PEM
 * here, so mutations land in the ASN.1 rather than break the base64) or
 * PEM text (odd mode). Properties: no crash; an accepted identity passes
 * the federation / role / name rules and is refused (TOO_LARGE, not cut)
 * when a buffer is one byte too small.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "crypto/pki.h"
#include "fedc/error.h"
#include "fixture_pki.h"
#include "fuzz.h"

/* PEM text of DER bytes (malloc'd, NUL-terminated). */
static char *pem_of(const uint8_t *der, size_t n, size_t *len) {
  static const char head[] = "-----BEGIN CERTIFICATE-----\n", tail[] = "-----END CERTIFICATE-----\n";
  size_t b64 = 4 * ((n + 2) / 3), lines = b64 / 64 + 1;
  char *p = malloc(sizeof head + b64 + lines + sizeof tail + 1);
  if (!p) abort();
  size_t at = 0;
  memcpy(p, head, sizeof head - 1);
  at += sizeof head - 1;
  for (size_t off = 0; off < n; off += 48) {
    size_t k = n - off < 48 ? n - off : 48;
    at += (size_t)EVP_EncodeBlock((unsigned char *)p + at, der + off, (int)k);
    p[at++] = '\n';
  }
  memcpy(p + at, tail, sizeof tail);
  *len = at + sizeof tail - 1;
  return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t len;
  char *pem;
  if (data[0] & 1) {
    len = size - 1;
    pem = malloc(len + 1);
    if (!pem) abort();
    memcpy(pem, data + 1, len);
    pem[len] = 0;
  } else {
    pem = pem_of(data + 1, size - 1, &len);
  }
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  if (fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, name, sizeof name) == FEDC_OK) {
    if (!fc_pki_federation_ok(fed) || !fc_pki_role_ok(role) || !fc_pki_name_ok(name)) abort();
    char small[FC_PKI_NAME_MAX];
    size_t nl = strlen(name);
    if (fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, small, nl) != FEDC_ERR_TOO_LARGE)
      abort();
  }
  char cafed[FC_PKI_FEDERATION_MAX];
  if (fc_pki_ca_federation_pem(pem, len, cafed) == FEDC_OK && !fc_pki_federation_ok(cafed)) abort();
  free(pem);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  BIO *in = BIO_new_mem_buf(FIX_C1_CERT_PEM, -1);
  X509 *x = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
  unsigned char *der = NULL;
  int n = x ? i2d_X509(x, &der) : -1;
  if (n <= 0) abort();
  *size = (size_t)n + 1;
  *data = malloc(*size);
  (*data)[0] = 0;
  memcpy(*data + 1, der, (size_t)n);
  OPENSSL_free(der);
  X509_free(x);
  BIO_free(in);
}

/*
 * signed.h - a message signed by a federation certificate, and its file form.
 *
 * A signed message is three byte strings: the message, a signature over it
 * (crypto/sa_crypto.h fc_sign_pem: ECDSA P-256 with SHA-256, or Ed25519),
 * and the signer's certificate (PEM). Verifying checks, in this order: the
 * certificate chains to the federation CA (crypto/pki.h, X509_STRICT), its
 * SPIFFE ID names the role the caller requires (model manifests: "signer",
 * whose EKU is codeSigning only), and the signature. The federation and name
 * come back from the certificate, never from the message.
 *
 * File form: three PEM blocks in this order, through OpenSSL's PEM codec
 * (base64, 64-column lines, so the file is plain text):
 *
 *   -----BEGIN FEDC SIGNED MESSAGE-----   the message bytes
 *   -----BEGIN FEDC SIGNATURE-----        the signature
 *   -----BEGIN CERTIFICATE-----           the signer's certificate
 *
 * Another order, a missing block, PEM headers or text after the certificate
 * are FEDC_ERR_FORMAT. Text before a block is skipped, as OpenSSL's PEM
 * reader does for certificate files. The signature covers the message bytes
 * only, so re-encoding never changes what was signed.
 */
#ifndef FEDC_CRYPTO_SIGNED_H
#define FEDC_CRYPTO_SIGNED_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/pki.h"

#define FC_SIGNED_MSG_MAX (64u << 10)  /* a manifest of 32 tensors is about 3 KiB */
#define FC_SIGNED_CERT_MAX (16u << 10) /* one PEM certificate */

typedef struct fc_signed {
  uint8_t *msg;
  size_t msg_len;
  uint8_t *sig;
  size_t sig_len;
  char *cert; /* PEM, NUL-terminated; cert_len excludes the NUL */
  size_t cert_len;
} fc_signed;

/* Sign msg with the key in key_pem; *out owns copies of msg, the signature and
 * cert_pem. FEDC_ERR_TOO_LARGE over the limits above, FEDC_ERR_CRYPTO. */
int fc_signed_make(const char *key_pem, size_t key_len, const char *cert_pem, size_t cert_len, const void *msg,
                   size_t msg_len, fc_signed *out, char *err, size_t errlen);
/* Deep copy of three received byte strings (a wire message), limits checked. */
int fc_signed_copy(const void *msg, size_t msg_len, const void *sig, size_t sig_len, const char *cert,
                   size_t cert_len, fc_signed *out, char *err, size_t errlen);
void fc_signed_free(fc_signed *s);

/* Verify s as described above against the CA certificate(s) in ca_pem,
 * requiring role. federation/name (sized FC_PKI_*_MAX) get the signer's
 * identity. FEDC_ERR_SIGNATURE for every way it can fail to verify (with the
 * reason in err), FEDC_ERR_CERT_EXPIRED for an expired signer. */
int fc_signed_verify(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *role, char *federation,
                     char *name, char *err, size_t errlen);

/* The same without the validity dates (ignore_time). */
int fc_signed_verify_ex(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *role, int ignore_time,
                        char *federation, char *name, char *err, size_t errlen);
/* fc_signed_verify with the signer's certificate looked up in a cache of
 * verified certificates of the federation CA (crypto/cert_cache.h): the
 * same checks in the same order, the same results and errors, but a signer
 * whose certificate verified before costs one signature check instead of
 * two certificate parses and a chain verification. */
struct fc_cert_cache;
int fc_signed_verify_cached(struct fc_cert_cache *certs, const fc_signed *s, const char *role, char *federation,
                            char *name, char *err, size_t errlen);

/* File form: encode into a malloc'd NUL-terminated buffer; decode strictly. */
int fc_signed_encode(const fc_signed *s, char **out, size_t *out_len);
int fc_signed_decode(const char *buf, size_t len, fc_signed *out, char *err, size_t errlen);

#endif

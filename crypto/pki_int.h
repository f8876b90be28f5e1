/*
 * pki_int.h - shared by crypto/pki*.c only (not an interface for other
 * modules): limits, the key types, and the helpers the role files call
 * across, one way: pki.c (CA, issuing) and pki_verify.c -> pki_id.c ->
 * pki_file.c.
 * Each helper keeps its original comment at its definition.
 */
#ifndef FEDC_CRYPTO_PKI_INT_H
#define FEDC_CRYPTO_PKI_INT_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "crypto/pki.h"

#define PATH_CAP 4096
#define URI_CAP FC_PKI_URI_MAX
#define MAX_CHAIN 16  /* certificates read from one PEM file */
#define SPIFFE_PREFIX "spiffe://"

enum key_type { KEY_EC = 1, KEY_ED25519 = 2 };

/* ---- pki_file.c: messages, files ---- */
void pki_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int pki_crypto_fail(char *err, size_t errlen, const char *what);
int pki_path_join(char *out, size_t outlen, const char *dir, const char *file, char *err, size_t errlen);
int pki_refuse_existing(const char *path, char *err, size_t errlen);
int pki_ensure_dir(const char *dir, const char *option, char *err, size_t errlen);
int pki_write_new_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen);
int pki_write_key_file(const char *path, EVP_PKEY *key, char *err, size_t errlen);
int pki_write_cert_file(const char *path, X509 *cert, char *err, size_t errlen);
int pki_read_certs_bio(BIO *in, const char *path, STACK_OF(X509) **out, char *err, size_t errlen);
int pki_read_certs(const char *path, STACK_OF(X509) **out, char *err, size_t errlen);
int pki_read_one_cert(const char *path, X509 **out, char *err, size_t errlen);
int pki_read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen);

/* ---- pki_id.c: names, identities ---- */
int pki_is_ip_literal(const char *s);
int pki_check_sans(const char *const *sans, size_t nsans, char *err, size_t errlen);
int pki_parse_key_type(const char *s, int *out);
int pki_cert_identity(X509 *cert, char *federation, size_t flen, char *role, size_t rlen, char *name,
                      size_t nlen);
int pki_ca_federation(X509 *ca, char fed[FC_PKI_FEDERATION_MAX]);

#endif

/*
 * sha256.h - SHA-256 on OpenSSL's EVP API, one-shot and incremental, plus
 * hex helpers. Every tensor payload and model version is named by its hash.
 */
#ifndef FEDC_CRYPTO_SHA256_H
#define FEDC_CRYPTO_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define FC_SHA256_LEN 32
#define FC_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */

typedef struct fc_sha256_ctx {
  void *md; /* EVP_MD_CTX*, opaque here so callers need no OpenSSL headers */
} fc_sha256_ctx;

/* 0 on success, FEDC_ERR_CRYPTO/NOMEM otherwise. */
int fc_sha256(const void *data, size_t len, uint8_t out[FC_SHA256_LEN]);
int fc_sha256_init(fc_sha256_ctx *c);
int fc_sha256_update(fc_sha256_ctx *c, const void *data, size_t len);
/* Writes the digest and frees the context. */
int fc_sha256_final(fc_sha256_ctx *c, uint8_t out[FC_SHA256_LEN]);
/* Frees without producing a digest; safe on a zeroed or finished context. */
void fc_sha256_free(fc_sha256_ctx *c);

/* Lower-case hex of len bytes into out (2*len+1 bytes). Returns out. */
char *fc_hex(const uint8_t *bytes, size_t len, char *out);
/* Parse exactly 2*len hex digits; 0 on success, FEDC_ERR_FORMAT otherwise. */
int fc_unhex(const char *hex, uint8_t *out, size_t len);
/* Constant-time comparison (CRYPTO_memcmp); 1 if equal. */
int fc_digest_equal(const uint8_t *a, const uint8_t *b, size_t len);

#endif

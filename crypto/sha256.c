/*
 * sha256.c - SHA-256 via EVP. See sha256.h.
 */
#include "crypto/sha256.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "fedc/error.h"

/* SHA-256 fetched from the provider once: EVP_sha256() is fetched again by
 * name on every init (OpenSSL 3's implicit fetch, a locked look-up), which
 * cost as much as hashing a 350-byte audit record. Kept for the process's
 * life (reachable, so no leak report); EVP_sha256() if the fetch failed. */
static EVP_MD *g_md;
static pthread_once_t g_md_once = PTHREAD_ONCE_INIT;

static void fetch_md(void) { g_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

static const EVP_MD *sha256_md(void) {
  pthread_once(&g_md_once, fetch_md);
  return g_md ? g_md : EVP_sha256();
}

int fc_sha256(const void *data, size_t len, uint8_t out[FC_SHA256_LEN]) {
  unsigned int n = 0;
  if (EVP_Digest(data, len, out, &n, sha256_md(), NULL) != 1 || n != FC_SHA256_LEN) return FEDC_ERR_CRYPTO;
  return FEDC_OK;
}

int fc_sha256_init(fc_sha256_ctx *c) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  c->md = NULL;
  if (!md) return FEDC_ERR_NOMEM;
  if (EVP_DigestInit_ex(md, sha256_md(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    return FEDC_ERR_CRYPTO;
  }
  c->md = md;
  return FEDC_OK;
}

int fc_sha256_update(fc_sha256_ctx *c, const void *data, size_t len) {
  if (!c->md) return FEDC_ERR_INVALID;
  return EVP_DigestUpdate((EVP_MD_CTX *)c->md, data, len) == 1 ? FEDC_OK : FEDC_ERR_CRYPTO;
}

int fc_sha256_final(fc_sha256_ctx *c, uint8_t out[FC_SHA256_LEN]) {
  unsigned int n = 0;
  int rc = FEDC_ERR_INVALID;
  if (c->md) rc = (EVP_DigestFinal_ex((EVP_MD_CTX *)c->md, out, &n) == 1 && n == FC_SHA256_LEN) ? FEDC_OK
                                                                                                 : FEDC_ERR_CRYPTO;
  fc_sha256_free(c);
  return rc;
}

void fc_sha256_free(fc_sha256_ctx *c) {
  if (c && c->md) {
    EVP_MD_CTX_free((EVP_MD_CTX *)c->md);
    c->md = NULL;
  }
}

char *fc_hex(const uint8_t *bytes, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[2 * len] = 0;
  return out;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int fc_unhex(const char *hex, uint8_t *out, size_t len) {
  if (strlen(hex) != 2 * len) return FEDC_ERR_FORMAT;
  for (size_t i = 0; i < len; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return FEDC_ERR_FORMAT;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return FEDC_OK;
}

int fc_digest_equal(const uint8_t *a, const uint8_t *b, size_t len) { return CRYPTO_memcmp(a, b, len) == 0; }

/*
 * sa_crypto.c - the secure-aggregation primitives of sa_crypto.h on the
 * OpenSSL 3 EVP API: X25519, HKDF-SHA256, an AES-128-CTR keystream, AES-256-GCM
 * and signatures with a certificate's key (ECDSA P-256/SHA-256, Ed25519).
 *
 * Invariants every function here keeps:
 *  - One exit path (`goto out`) that frees every OpenSSL object and wipes every
 *    local copy of a secret (raw keys, shared secrets, HKDF output, plaintext).
 *  - Out parameters are written only on success. Results are built in locals
 *    and copied at the end; where the result is too big for a local (CTR and
 *    GCM output, which go straight to the caller's buffer) a failure
 *    OPENSSL_cleanse's what was written, so no partial plaintext or keystream
 *    is ever left behind.
 *  - OpenSSL's error queue is cleared on every failure: errors are translated
 *    to fedc_err here, at the module boundary, and an embedding program must
 *    not find our leftovers in its own queue.
 *  - EVP takes int lengths; anything larger is fed in CHUNK-sized pieces, so
 *    size_t lengths are honoured instead of being truncated.
 *  - Nothing here can prompt: PEM reading installs a password callback that
 *    refuses (OpenSSL's default one would read a passphrase from the terminal).
 */
#include "crypto/sa_crypto.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "fedc/error.h"

#define CHUNK (1 << 30)         /* largest piece handed to an int-length EVP call */
#define HKDF_SHA256_MAX (255 * 32) /* RFC 5869: L <= 255 * HashLen */

/* Translate an OpenSSL failure: drop its queued errors, report FEDC_ERR_CRYPTO. */
static int ossl_fail(void) {
  ERR_clear_error();
  return FEDC_ERR_CRYPTO;
}

/* ---- random bytes and wiping ---------------------------------------------------- */

int fc_random_bytes(void *out, size_t len) {
  unsigned char *p = out;
  if (len == 0) return FEDC_OK;
  if (!out) return FEDC_ERR_INVALID;
  while (len > 0) {
    int n = len > CHUNK ? CHUNK : (int)len;
    if (RAND_bytes(p, n) != 1) return ossl_fail();
    p += n;
    len -= (size_t)n;
  }
  return FEDC_OK;
}

void fc_wipe(void *p, size_t len) {
  if (p && len) OPENSSL_cleanse(p, len);
}

/* ---- X25519 (RFC 7748) ---------------------------------------------------------- */

int fc_x25519_public(const uint8_t sk[FC_X25519_LEN], uint8_t pk[FC_X25519_LEN]) {
  int rc = FEDC_ERR_CRYPTO;
  EVP_PKEY *key = NULL;
  uint8_t pub[FC_X25519_LEN];
  size_t publen = sizeof pub;
  if (!sk || !pk) return FEDC_ERR_INVALID;
  key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, FC_X25519_LEN);
  if (!key || EVP_PKEY_get_raw_public_key(key, pub, &publen) != 1 || publen != FC_X25519_LEN) {
    rc = ossl_fail();
    goto out;
  }
  memcpy(pk, pub, FC_X25519_LEN);
  rc = FEDC_OK;
out:
  EVP_PKEY_free(key); /* frees (and cleanses) OpenSSL's copy of sk */
  return rc;
}

/* The private key is 32 uniformly random bytes; RFC 7748 section 5 clamping is
 * applied by every X25519 operation, so storing it unclamped is equivalent. */
int fc_x25519_keygen(uint8_t sk[FC_X25519_LEN], uint8_t pk[FC_X25519_LEN]) {
  uint8_t priv[FC_X25519_LEN], pub[FC_X25519_LEN];
  int rc;
  if (!sk || !pk) return FEDC_ERR_INVALID;
  rc = fc_random_bytes(priv, sizeof priv);
  if (rc == FEDC_OK) rc = fc_x25519_public(priv, pub);
  if (rc == FEDC_OK) {
    memcpy(sk, priv, FC_X25519_LEN);
    memcpy(pk, pub, FC_X25519_LEN);
  }
  fc_wipe(priv, sizeof priv);
  return rc;
}

struct fc_x25519_key {
  EVP_PKEY *key; /* OpenSSL's copy of the private key, cleansed by EVP_PKEY_free */
};

int fc_x25519_key_new(const uint8_t sk[FC_X25519_LEN], fc_x25519_key **out) {
  if (!sk || !out) return FEDC_ERR_INVALID;
  fc_x25519_key *k = malloc(sizeof *k);
  if (!k) return FEDC_ERR_NOMEM;
  if (!(k->key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, FC_X25519_LEN))) {
    free(k);
    return ossl_fail();
  }
  *out = k;
  return FEDC_OK;
}

void fc_x25519_key_free(fc_x25519_key *k) {
  if (!k) return;
  EVP_PKEY_free(k->key);
  free(k);
}

int fc_x25519_key_agree(const fc_x25519_key *k, const uint8_t peer_pk[FC_X25519_LEN], uint8_t out[FC_X25519_LEN]) {
  int rc = FEDC_ERR_CRYPTO;
  EVP_PKEY *peer = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  uint8_t shared[FC_X25519_LEN];
  static const uint8_t zeros[FC_X25519_LEN];
  size_t len = sizeof shared;
  if (!k || !peer_pk || !out) return FEDC_ERR_INVALID;
  peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pk, FC_X25519_LEN);
  if (!peer) goto fail;
  ctx = EVP_PKEY_CTX_new(k->key, NULL);
  if (!ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, peer) != 1 ||
      EVP_PKEY_derive(ctx, shared, &len) != 1 || len != FC_X25519_LEN)
    goto fail;
  /* OpenSSL already refuses an all-zero result (a small-order peer key, RFC 7748
   * section 6.1); checking again here keeps the guarantee ours, in constant time. */
  if (CRYPTO_memcmp(shared, zeros, sizeof shared) == 0) goto fail;
  memcpy(out, shared, FC_X25519_LEN);
  rc = FEDC_OK;
  goto out;
fail:
  rc = ossl_fail();
out:
  fc_wipe(shared, sizeof shared);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  return rc;
}

int fc_x25519(const uint8_t sk[FC_X25519_LEN], const uint8_t peer_pk[FC_X25519_LEN], uint8_t out[FC_X25519_LEN]) {
  if (!sk || !peer_pk || !out) return FEDC_ERR_INVALID;
  fc_x25519_key *k = NULL;
  int rc = fc_x25519_key_new(sk, &k);
  if (rc == FEDC_OK) rc = fc_x25519_key_agree(k, peer_pk, out);
  fc_x25519_key_free(k);
  return rc;
}

/* ---- HKDF-SHA256 (RFC 5869) ------------------------------------------------------ */

int fc_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len, const uint8_t *info,
                   size_t info_len, uint8_t *out, size_t out_len) {
  int rc = FEDC_ERR_CRYPTO;
  EVP_KDF *kdf = NULL;
  EVP_KDF_CTX *kctx = NULL;
  OSSL_PARAM params[5], *p = params;
  uint8_t okm[HKDF_SHA256_MAX]; /* out is written only on success */
  static const uint8_t empty[1];
  if (!out || out_len == 0 || out_len > HKDF_SHA256_MAX) return FEDC_ERR_INVALID;
  if ((salt_len && !salt) || (ikm_len && !ikm) || (info_len && !info)) return FEDC_ERR_INVALID;

  *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
  *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(ikm_len ? ikm : empty), ikm_len);
  /* An absent salt is HashLen zero bytes (RFC 5869 section 2.2); OpenSSL does
   * that when no salt parameter is given. */
  if (salt_len) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
  if (info_len) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
  *p = OSSL_PARAM_construct_end();

  kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
  if (!kctx || EVP_KDF_derive(kctx, okm, out_len, params) != 1) {
    rc = ossl_fail();
    goto out;
  }
  memcpy(out, okm, out_len);
  rc = FEDC_OK;
out:
  fc_wipe(okm, out_len);
  EVP_KDF_CTX_free(kctx); /* cleanses its copies of ikm and the PRK */
  EVP_KDF_free(kdf);
  return rc;
}

/* ---- AES-128-CTR keystream -------------------------------------------------------- */

/*
 * EVP's CTR mode increments the whole 16-byte counter block big-endian (as SP
 * 800-38A) and remembers its position inside a partly used block, so calls of
 * any sizes concatenate into one keystream.
 */
int fc_ctr_init(fc_ctr *c, const uint8_t key[FC_AES128_KEY_LEN], const uint8_t iv[16]) {
  EVP_CIPHER_CTX *ctx;
  if (!c) return FEDC_ERR_INVALID;
  c->ctx = NULL; /* a failed init leaves c safe to pass to fc_ctr_free */
  if (!key || !iv) return FEDC_ERR_INVALID;
  ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return FEDC_ERR_NOMEM;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, iv) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return ossl_fail();
  }
  c->ctx = ctx;
  return FEDC_OK;
}

int fc_ctr_xor(fc_ctr *c, const uint8_t *in, uint8_t *out, size_t len) {
  size_t done = 0;
  if (!c || !c->ctx) return FEDC_ERR_INVALID;
  if (len == 0) return FEDC_OK;
  if (!in || !out) return FEDC_ERR_INVALID;
  while (done < len) {
    int n = len - done > CHUNK ? CHUNK : (int)(len - done), outl = 0;
    if (EVP_EncryptUpdate(c->ctx, out + done, &outl, in + done, n) != 1 || outl != n) {
      /* Not reachable with a valid context; never leave half a result. */
      OPENSSL_cleanse(out, len);
      return ossl_fail();
    }
    done += (size_t)n;
  }
  return FEDC_OK;
}

/* Keystream = encryption of zeros, read from one zero page set that stays
 * in cache (no memset pass over out: mask expansion runs at keystream speed). */
int fc_ctr_keystream(fc_ctr *c, uint8_t *out, size_t len) {
  static const uint8_t zeros[16384];
  if (!c || !c->ctx) return FEDC_ERR_INVALID;
  if (len == 0) return FEDC_OK;
  if (!out) return FEDC_ERR_INVALID;
  for (size_t done = 0; done < len;) {
    size_t n = len - done < sizeof zeros ? len - done : sizeof zeros;
    int rc = fc_ctr_xor(c, zeros, out + done, n);
    if (rc != FEDC_OK) {
      OPENSSL_cleanse(out, len);
      return rc;
    }
    done += n;
  }
  return FEDC_OK;
}

void fc_ctr_free(fc_ctr *c) {
  if (!c) return;
  EVP_CIPHER_CTX_free(c->ctx); /* cleanses the key schedule; NULL is a no-op */
  c->ctx = NULL;
}

/* ---- AES-256-GCM ------------------------------------------------------------------- */

/* Feed aad (out == NULL) or data through EVP_CipherUpdate in int-sized pieces. */
static int gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len) {
  size_t done = 0;
  while (done < len) {
    int n = len - done > CHUNK ? CHUNK : (int)(len - done), outl = 0;
    if (EVP_CipherUpdate(ctx, out ? out + done : NULL, &outl, in + done, n) != 1 || outl != n) return 0;
    done += (size_t)n;
  }
  return 1;
}

static int gcm_args_ok(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                       const uint8_t *in, const uint8_t *out, size_t len, const uint8_t *tag) {
  return key && nonce && tag && (aad || aad_len == 0) && ((in && out) || len == 0);
}

int fc_gcm_seal(const uint8_t key[FC_AES256_KEY_LEN], const uint8_t nonce[FC_GCM_NONCE_LEN], const uint8_t *aad,
                size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct, uint8_t tag[FC_GCM_TAG_LEN]) {
  int rc = FEDC_ERR_CRYPTO, outl = 0;
  EVP_CIPHER_CTX *ctx = NULL;
  uint8_t t[FC_GCM_TAG_LEN];
  if (!gcm_args_ok(key, nonce, aad, aad_len, pt, ct, pt_len, tag)) return FEDC_ERR_INVALID;
  ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return FEDC_ERR_NOMEM;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, FC_GCM_NONCE_LEN, NULL) != 1 ||
      EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 || !gcm_update(ctx, NULL, aad, aad_len) ||
      !gcm_update(ctx, ct, pt, pt_len) || EVP_EncryptFinal_ex(ctx, t, &outl) != 1 || outl != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, FC_GCM_TAG_LEN, t) != 1) {
    if (pt_len) OPENSSL_cleanse(ct, pt_len);
    rc = ossl_fail();
    goto out;
  }
  memcpy(tag, t, FC_GCM_TAG_LEN);
  rc = FEDC_OK;
out:
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

/*
 * The plaintext is decrypted into pt before the tag can be checked (GCM
 * authenticates the ciphertext, which is only complete at the end), so on a
 * tag mismatch pt is cleansed: an attacker's forgery never releases plaintext.
 * EVP compares the tag in constant time. With pt == ct (in place) a failure
 * therefore also destroys the ciphertext.
 */
int fc_gcm_open(const uint8_t key[FC_AES256_KEY_LEN], const uint8_t nonce[FC_GCM_NONCE_LEN], const uint8_t *aad,
                size_t aad_len, const uint8_t *ct, size_t ct_len, const uint8_t tag[FC_GCM_TAG_LEN], uint8_t *pt) {
  int rc = FEDC_ERR_CRYPTO, outl = 0;
  EVP_CIPHER_CTX *ctx = NULL;
  uint8_t t[FC_GCM_TAG_LEN];
  if (!gcm_args_ok(key, nonce, aad, aad_len, ct, pt, ct_len, tag)) return FEDC_ERR_INVALID;
  memcpy(t, tag, sizeof t); /* SET_TAG wants a non-const pointer */
  ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return FEDC_ERR_NOMEM;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, FC_GCM_NONCE_LEN, NULL) != 1 ||
      EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 || !gcm_update(ctx, NULL, aad, aad_len) ||
      !gcm_update(ctx, pt, ct, ct_len) || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, FC_GCM_TAG_LEN, t) != 1 ||
      EVP_DecryptFinal_ex(ctx, NULL, &outl) != 1 || outl != 0) {
    if (ct_len) OPENSSL_cleanse(pt, ct_len);
    rc = ossl_fail();
    goto out;
  }
  rc = FEDC_OK;
out:
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

/* ---- signatures with a certificate's key -------------------------------------------- */

/* Never prompt for a passphrase: an encrypted key is simply unreadable here. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return 0;
}

/*
 * The two signature schemes fedc certificates carry (pki.c issues both):
 * Ed25519 signs the message itself (md NULL, RFC 8032 "pure" Ed25519) and
 * ECDSA on P-256 signs its SHA-256 (DER-encoded signature). Any other key,
 * including EC on another curve, is FEDC_ERR_INVALID rather than being signed
 * with a scheme the verifier would not expect.
 */
static int sig_scheme(EVP_PKEY *key, const EVP_MD **md) {
  if (EVP_PKEY_is_a(key, "ED25519")) {
    *md = NULL;
    return FEDC_OK;
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64];
    size_t glen = 0;
    int nid;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &glen) != 1) return ossl_fail();
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef) nid = EC_curve_nist2nid(group);
    if (nid != NID_X9_62_prime256v1) return FEDC_ERR_INVALID;
    *md = EVP_sha256();
    return FEDC_OK;
  }
  return FEDC_ERR_INVALID;
}

/* Read-only memory BIO over caller text; FEDC_ERR_INVALID if it is empty or huge. */
static int pem_bio(const char *pem, size_t len, BIO **bio) {
  if (!pem || len == 0 || len > INT_MAX) return FEDC_ERR_INVALID;
  *bio = BIO_new_mem_buf(pem, (int)len);
  return *bio ? FEDC_OK : FEDC_ERR_NOMEM;
}

int fc_sign_key_load(const char *key_pem, size_t key_pem_len, EVP_PKEY **out) {
  BIO *bio = NULL;
  const EVP_MD *md = NULL;
  int rc;
  if (!out) return FEDC_ERR_INVALID;
  *out = NULL;
  if ((rc = pem_bio(key_pem, key_pem_len, &bio)) != FEDC_OK) return rc;
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  if (!key) {
    ERR_clear_error();
    return FEDC_ERR_INVALID; /* not a (readable, unencrypted) private key */
  }
  if ((rc = sig_scheme(key, &md)) != FEDC_OK) {
    EVP_PKEY_free(key);
    return rc;
  }
  *out = key;
  return FEDC_OK;
}

void fc_sign_key_free(EVP_PKEY *key) { EVP_PKEY_free(key); /* cleanses the private key */ }

int fc_sign_key(EVP_PKEY *key, const uint8_t *msg, size_t msg_len, uint8_t *sig, size_t *sig_len) {
  int rc;
  EVP_MD_CTX *mctx = NULL;
  const EVP_MD *md = NULL;
  uint8_t s[FC_SIG_MAX];
  size_t slen = sizeof s;
  static const uint8_t empty[1];
  if (!key || !sig || !sig_len || (msg_len && !msg)) return FEDC_ERR_INVALID;
  if ((rc = sig_scheme(key, &md)) != FEDC_OK) return rc;
  if (!(mctx = EVP_MD_CTX_new())) return FEDC_ERR_NOMEM;
  /* One-shot EVP_DigestSign: Ed25519 has no streaming interface. */
  if (EVP_DigestSignInit(mctx, NULL, md, NULL, key) != 1 ||
      EVP_DigestSign(mctx, s, &slen, msg_len ? msg : empty, msg_len) != 1) {
    rc = ossl_fail();
    goto out;
  }
  if (slen > *sig_len) {
    rc = FEDC_ERR_INVALID; /* caller's buffer too small: FC_SIG_MAX always suffices */
    goto out;
  }
  memcpy(sig, s, slen);
  *sig_len = slen;
  rc = FEDC_OK;
out:
  EVP_MD_CTX_free(mctx);
  return rc;
}

int fc_sign_pem(const char *key_pem, size_t key_pem_len, const uint8_t *msg, size_t msg_len, uint8_t *sig,
                size_t *sig_len) {
  EVP_PKEY *key = NULL;
  if (!sig || !sig_len || (msg_len && !msg)) return FEDC_ERR_INVALID;
  int rc = fc_sign_key_load(key_pem, key_pem_len, &key);
  if (rc == FEDC_OK) rc = fc_sign_key(key, msg, msg_len, sig, sig_len);
  fc_sign_key_free(key);
  return rc;
}

/*
 * Checks the signature only. Whether the certificate belongs to the claimed
 * peer and chains to the federation CA is the caller's business (transport
 * and fc_pki_verify); validity dates are not looked at here either.
 */
int fc_verify_key(struct evp_pkey_st *key, const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len) {
  int rc;
  EVP_MD_CTX *mctx = NULL;
  const EVP_MD *md = NULL;
  static const uint8_t empty[1];
  if (!key || (msg_len && !msg) || (sig_len && !sig)) return FEDC_ERR_INVALID;
  if ((rc = sig_scheme(key, &md)) != FEDC_OK) goto out;
  if (sig_len == 0 || sig_len > FC_SIG_MAX) {
    rc = FEDC_ERR_CRYPTO; /* cannot be a valid signature of either scheme */
    goto out;
  }
  mctx = EVP_MD_CTX_new();
  if (!mctx) {
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  /* 1 is valid; 0 is a bad signature and <0 a malformed one: both refused. */
  if (EVP_DigestVerifyInit(mctx, NULL, md, NULL, key) != 1 ||
      EVP_DigestVerify(mctx, sig, sig_len, msg_len ? msg : empty, msg_len) != 1) {
    rc = ossl_fail();
    goto out;
  }
  rc = FEDC_OK;
out:
  EVP_MD_CTX_free(mctx);
  return rc;
}

int fc_verify_pem(const char *cert_pem, size_t cert_pem_len, const uint8_t *msg, size_t msg_len,
                  const uint8_t *sig, size_t sig_len) {
  int rc;
  BIO *bio = NULL;
  X509 *cert = NULL;
  EVP_PKEY *key = NULL; /* owned by cert */
  if ((msg_len && !msg) || (sig_len && !sig)) return FEDC_ERR_INVALID;
  if ((rc = pem_bio(cert_pem, cert_pem_len, &bio)) != FEDC_OK) return rc;
  cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
  key = cert ? X509_get0_pubkey(cert) : NULL;
  if (!key) {
    ERR_clear_error();
    rc = FEDC_ERR_INVALID;
    goto out;
  }
  rc = fc_verify_key(key, msg, msg_len, sig, sig_len);
out:
  X509_free(cert);
  BIO_free(bio);
  return rc;
}

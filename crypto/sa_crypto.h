/*
 * sa_crypto.h - the primitives secure aggregation is built from, on OpenSSL 3
 * (Bonawitz et al. 2017, section 3; Bell et al. 2020). Nothing here knows the
 * protocol: the cores in client/ and coordinator/ decide what to derive, seal
 * and sign, and put round, session and client ids into the info / associated
 * data so no key or ciphertext can be reused in another context.
 *
 *   X25519 (RFC 7748)          key agreement; an all-zero shared secret is an error
 *   HKDF-SHA256 (RFC 5869)     every derived key; never a raw shared secret
 *   AES-128-CTR                the mask PRG's keystream (IV 0, key from HKDF)
 *   AES-256-GCM                shares in transit, with associated data
 *   Ed25519 / ECDSA P-256      signatures with the key of a client's mTLS certificate
 *
 * Every function returns 0 or a fedc_err code (FEDC_ERR_CRYPTO for an OpenSSL
 * failure or a bad signature/tag, FEDC_ERR_INVALID for bad arguments). Out
 * parameters are written only on success. Secrets are wiped with fc_wipe.
 */
#ifndef FEDC_CRYPTO_SA_CRYPTO_H
#define FEDC_CRYPTO_SA_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define FC_X25519_LEN 32
#define FC_AES128_KEY_LEN 16
#define FC_AES256_KEY_LEN 32
#define FC_GCM_NONCE_LEN 12
#define FC_GCM_TAG_LEN 16
#define FC_SIG_MAX 128 /* ECDSA P-256 DER is at most 72 bytes; Ed25519 64 */

/* Cryptographically secure random bytes (RAND_bytes). */
int fc_random_bytes(void *out, size_t len);
/* OPENSSL_cleanse. */
void fc_wipe(void *p, size_t len);

/* Fresh X25519 key pair. */
int fc_x25519_keygen(uint8_t sk[FC_X25519_LEN], uint8_t pk[FC_X25519_LEN]);
/* Public key of a private key. */
int fc_x25519_public(const uint8_t sk[FC_X25519_LEN], uint8_t pk[FC_X25519_LEN]);
/* Shared secret; FEDC_ERR_CRYPTO if it is all zeros (small-order peer key). */
int fc_x25519(const uint8_t sk[FC_X25519_LEN], const uint8_t peer_pk[FC_X25519_LEN], uint8_t out[FC_X25519_LEN]);
/* A private key loaded once for many agreements (fc_x25519 loads it per call,
 * which costs OpenSSL 3 more than the agreement itself: a key-management
 * lookup per EVP_PKEY). Owns a copy of sk, cleansed by free; free(NULL) is a
 * no-op. fc_x25519_key_agree gives what fc_x25519 gives for the same keys. */
typedef struct fc_x25519_key fc_x25519_key;
int fc_x25519_key_new(const uint8_t sk[FC_X25519_LEN], fc_x25519_key **out);
int fc_x25519_key_agree(const fc_x25519_key *k, const uint8_t peer_pk[FC_X25519_LEN], uint8_t out[FC_X25519_LEN]);
void fc_x25519_key_free(fc_x25519_key *k);

/* HKDF-SHA256 extract+expand (RFC 5869); salt may be NULL/0. out_len <= 255*32. */
int fc_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len, const uint8_t *info,
                   size_t info_len, uint8_t *out, size_t out_len);

/* AES-128-CTR keystream stream: a context keeps its counter across calls, so
 * successive fc_ctr_keystream calls produce one continuous keystream. */
typedef struct fc_ctr {
  void *ctx; /* EVP_CIPHER_CTX*, opaque */
} fc_ctr;
/* iv: 16-byte initial counter block (big-endian increment, as SP 800-38A). */
int fc_ctr_init(fc_ctr *c, const uint8_t key[FC_AES128_KEY_LEN], const uint8_t iv[16]);
/* Write len bytes of keystream into out. */
int fc_ctr_keystream(fc_ctr *c, uint8_t *out, size_t len);
/* XOR-encrypt in into out (in == out allowed), continuing the stream. */
int fc_ctr_xor(fc_ctr *c, const uint8_t *in, uint8_t *out, size_t len);
/* Free; safe on a zeroed or already-freed context. */
void fc_ctr_free(fc_ctr *c);

/* AES-256-GCM. seal writes ct (pt_len bytes) and tag; open verifies the tag
 * (FEDC_ERR_CRYPTO on mismatch, pt untouched/cleared) and writes pt. */
int fc_gcm_seal(const uint8_t key[FC_AES256_KEY_LEN], const uint8_t nonce[FC_GCM_NONCE_LEN], const uint8_t *aad,
                size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct, uint8_t tag[FC_GCM_TAG_LEN]);
int fc_gcm_open(const uint8_t key[FC_AES256_KEY_LEN], const uint8_t nonce[FC_GCM_NONCE_LEN], const uint8_t *aad,
                size_t aad_len, const uint8_t *ct, size_t ct_len, const uint8_t tag[FC_GCM_TAG_LEN], uint8_t *pt);

/* Signatures with a certificate's key. The key and certificate are PEM text
 * (as the mTLS files hold them). ECDSA uses SHA-256 (DER signature); Ed25519
 * signs the message itself. *sig_len in: capacity, out: length. */
int fc_sign_pem(const char *key_pem, size_t key_pem_len, const uint8_t *msg, size_t msg_len, uint8_t *sig,
                size_t *sig_len);
/* The same in two steps, for a signer that signs many times with one key:
 * fc_sign_key_load parses key_pem once (FEDC_ERR_INVALID if it is not a
 * readable, unencrypted private key of a scheme above); fc_sign_key signs
 * with it, with the results of fc_sign_pem. Free with fc_sign_key_free
 * (cleanses the key; NULL is a no-op). Parsing is most of fc_sign_pem's
 * cost in OpenSSL 3 (about 0.9 ms against 35 us for a P-256 signature). */
struct evp_pkey_st;
int fc_sign_key_load(const char *key_pem, size_t key_pem_len, struct evp_pkey_st **out);
int fc_sign_key(struct evp_pkey_st *key, const uint8_t *msg, size_t msg_len, uint8_t *sig, size_t *sig_len);
void fc_sign_key_free(struct evp_pkey_st *key);
/* Verify sig over msg with the public key of cert_pem. 0 if valid. */
int fc_verify_pem(const char *cert_pem, size_t cert_pem_len, const uint8_t *msg, size_t msg_len,
                  const uint8_t *sig, size_t sig_len);
/* The same with a public key already parsed (an EVP_PKEY, e.g. from a
 * verified-certificate cache, crypto/cert_cache.h): same schemes, same results. */
int fc_verify_key(struct evp_pkey_st *key, const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len);

#endif

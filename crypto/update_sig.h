/*
 * update_sig.h - a client's signature over its update (protocol 1.17).
 *
 * Through the aggregator tier the leader receives a client's update from an
 * aggregator, not from the client, so mutual TLS no longer tells it whose
 * bytes these are. A relaying aggregator could otherwise substitute an update
 * within the clip, or alter the examples it is weighed by, under an honest
 * client's name (and so get that client flagged or excluded by the anomaly
 * policy). The client signs, with its certificate's key, a digest of what
 * the leader acts on (the claim below); the aggregator forwards signature and
 * certificate; the leader checks the certificate against the federation CA,
 * that it names this client (role client), and the signature. The update's
 * SHA-256 binds the bytes, which the leader hashes as they arrive.
 *
 * The signed message is SHA-256 over the fixed encoding:
 *   "fedc-update-v1" 0x00 federation 0x00 client 0x00 le64(round)
 *   le64(model_version) le64(num_examples) le32(bits of train_loss)
 *   u8(unclipped) sha256[32] model_sha256[32]
 * (the model the update is a delta against, as the task named it: a restored
 * or recreated federation that reuses a round and version number does not
 * reuse the model, so an old signed update cannot be replayed into it)
 * (names are checked identities: no 0x00 inside). ECDSA signs it with
 * SHA-256 again, Ed25519 as it is (fc_sign_pem).
 * May call: crypto/sha256.h, crypto/sa_crypto.h (fc_sign_pem), crypto/cert_cache.h (fc_cert_*),
 * crypto/pki.h (identity from a certificate).
 */
#ifndef FEDC_CRYPTO_UPDATE_SIG_H
#define FEDC_CRYPTO_UPDATE_SIG_H

#include <stddef.h>
#include <stdint.h>

#define FC_UPDATE_SIG_MAX 256          /* ECDSA P-256/P-384 DER or Ed25519: well within */
#define FC_UPDATE_CERT_MAX (16 * 1024) /* the client's certificate chain, PEM: a leaf and a few CAs */

typedef struct fc_update_claim {
  const char *federation, *client;
  uint64_t round, model_version, num_examples;
  float train_loss;
  int unclipped;
  const uint8_t *sha256;       /* 32 bytes: the update's, as its header announces */
  const uint8_t *model_sha256; /* 32 bytes: the task's model (Task.model_sha256) */
} fc_update_claim;

/* The message digest above into out. FEDC_ERR_INVALID if a name is missing or too long. */
int fc_update_claim_digest(const fc_update_claim *cl, uint8_t out[32]);
/* Sign the claim with a PEM private key; *sig_len in: capacity, out: length. */
int fc_update_sign(const char *key_pem, size_t key_len, const fc_update_claim *cl, uint8_t *sig, size_t *sig_len);
/* The same as the holder of cert_pem signs: the claim's federation is the
 * certificate's, and so is its client when cl.client is NULL (as a client
 * signs its own upload). */
int fc_update_sign_pem(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len, fc_update_claim cl,
                       uint8_t *sig, size_t *sig_len);
struct fc_cert;
/* Check sig over the claim with a verified certificate (cert_cache.h), which
 * must name cl->client with role client in cl->federation. FEDC_OK, or
 * FEDC_ERR_REJECTED with one line in why. */
int fc_update_verify(const struct fc_cert *x, const fc_update_claim *cl, const uint8_t *sig, size_t sig_len,
                     char *why, size_t whylen);

#endif

/*
 * secagg_client_int.h - the state shared by the files of the client side of
 * secure aggregation (secagg_client*.c). Not an interface for other modules.
 */
#ifndef FEDC_CLIENT_SECAGG_CLIENT_INT_H
#define FEDC_CLIENT_SECAGG_CLIENT_INT_H

#include "client/secagg_client.h"
#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h"
#include "crypto/shamir.h"

/* What this client knows of one neighbour. */
typedef struct sa_peer {
  uint32_t index;
  int have_keys;  /* advertised, verified (round 0 as forwarded in round 1) */
  int have_share; /* sent us its shares (round 1): we masked with it */
  uint8_t enc_pk[32], mask_pk[32];
  fc_cert *cert; /* verified once in round 1; its key checks the round-3 signature too */
  /* Round 1: the key of its share ciphertext to us (v -> u), derived with
   * ours (u -> v) from the one agreement X25519(c_u, c_v): secret. */
  uint8_t share_key_in[32];
  int premasked;                  /* its pairwise mask is in the premasked vector */
  uint8_t mask_key[FC_SA_KEY_LEN]; /* ... under this key (secret) */
  uint8_t seed_share[32], key_share[32]; /* our shares of its b and s^SK: secret */
} sa_peer;

struct fc_sa_client {
  int state;
  fc_sa_params p;
  uint32_t me;
  char **names;
  uint8_t session[FC_SA_SESSION_LEN];
  fc_sa_graph graph;
  sa_peer *peers; /* my neighbours, ascending index */
  uint32_t npeers;
  char *ca_pem, *cert_pem, *key_pem;
  fc_cert_cache *certs;    /* the caller's (cfg.cert_cache) or own_certs */
  fc_cert_cache *own_certs;
  struct evp_pkey_st *sign_key; /* the caller's (cfg.sign_key) or own_sign_key */
  struct evp_pkey_st *own_sign_key;
  char federation[64];
  const fc_prg_ops *prg;
  /* secrets of this round: wiped on destroy */
  uint8_t enc_sk[32], enc_pk[32], mask_sk[32], mask_pk[32], seed[32];
  fc_x25519_key *enc_key, *mask_key; /* enc_sk and mask_sk, loaded once for the k agreements each */
  /* Our own share of b_u (Bonawitz et al. share among U1 including u itself):
   * sent in the unmasking, so a survivor's seed needs t of its neighbourhood
   * with itself, not t of its neighbours alone. */
  uint8_t own_seed_share[32];
  int premasked;       /* fc_sa_client_premask ran: the self mask and the premasked peers' are in */
  uint32_t *survivors; /* the list signed in round 3 */
  size_t nsurvivors;
  char why[256];
};

/* Move to ABORTED with a reason; returns err. */
int sa_client_fail(fc_sa_client *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Is the call allowed in this state? FEDC_ERR_PROTOCOL (state unchanged) if not. */
int sa_client_expect(fc_sa_client *c, int state, const char *what);
/* malloc'd copy of n bytes (NULL on OOM). */
uint8_t *sa_dupbytes(const void *p, size_t n);
sa_peer *sa_client_peer(fc_sa_client *c, uint32_t index);
/* Check a forwarded certificate: chains to the CA, role client, our
 * federation, the cohort name of `index`. *out: a reference to it. */
int sa_client_check_cert(fc_sa_client *c, const char *pem, size_t len, uint32_t index, fc_cert **out);
/* Sign msg with our certificate's key (parsed once a session at most). */
int sa_client_sign(fc_sa_client *c, const uint8_t *msg, size_t len, uint8_t *sig, size_t *siglen);
/* Poll answer must be READY; otherwise abort with its reason. */
int sa_client_ready(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in, const char *stage);

#endif

/*
 * secagg_client.h - the client side of secure aggregation as an I/O-free
 * state machine (Bonawitz et al. 2017, Fig. 4, active version, with the
 * SecAgg+ neighbour graph of Bell et al. 2020). The runtime feeds it the
 * coordinator's poll answers and sends what it returns; tests drive it with
 * no sockets at all (tests/unit/test_secagg.c).
 *
 *   ADVERTISE --advertise()--> KEYS --share_keys(poll)--> SHARES
 *   --receive_shares(poll)--> MASK --mask(update)--> SURVIVORS
 *   --consistency(poll)--> SIGNATURES --unmask(poll)--> DONE
 * Any validation failure moves to ABORTED with the reason in
 * fc_sa_client_error(); an out-of-order call is FEDC_ERR_PROTOCOL and changes
 * nothing. One file per state: secagg_client_{advertise,share,masked,unmask}.c.
 *
 * A task is refused before anything is sent if its threshold allows a split
 * view (2t <= k + 1 + colluders; secagg.h). Every list from the coordinator
 * is checked: counts, ranges, duplicates,
 * that each entry is a neighbour in the published graph, certificates chain
 * to the federation CA and name the cohort member, signatures and share tags
 * verify under this round's session id, "I am listed as dropped", and that
 * the coordinator never learns both shares of one peer.
 */
#ifndef FEDC_CLIENT_SECAGG_CLIENT_H
#define FEDC_CLIENT_SECAGG_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/v1/fedc.pb-c.h"
#include "secagg/secagg.h"

typedef struct fc_sa_client fc_sa_client;

typedef struct fc_sa_client_cfg {
  fc_sa_params params;
  const char *const *names; /* params.n cohort names, index order */
  uint32_t index;           /* this client, 1..n */
  const char *ca_pem;       /* federation CA (PEM text) */
  const char *cert_pem;     /* this client's certificate (PEM text) */
  const char *key_pem;      /* its private key (PEM text): signs keys and the survivor list */
  /* key_pem already parsed (fc_sign_key_load), kept by the caller across
   * rounds; borrowed, must outlive the session and be the key of key_pem.
   * NULL: the session parses key_pem at its first signature, once. */
  struct evp_pkey_st *sign_key;
  const fc_prg_ops *prg;    /* NULL: AES-128-CTR */
  /* The owner's floor above the one every client keeps (secagg.h,
   * fc_sa_min_threshold): refuse a task unless a coordinator that lies about
   * dropouts would need more than this many of our neighbours colluding with
   * it to unmask one input, 2t > k + 1 + colluders. 0: the base floor. */
  uint32_t colluders;
  /* Certificates already verified against ca_pem (crypto/cert_cache.h),
   * kept by the caller across rounds; borrowed, and must outlive the
   * session. NULL, or a cache of another CA: the session keeps its own. */
  struct fc_cert_cache *cert_cache;
} fc_sa_client_cfg;

enum fc_sa_client_state {
  FC_SAC_ADVERTISE = 0,
  FC_SAC_KEYS,
  FC_SAC_SHARES,
  FC_SAC_MASK,
  FC_SAC_SURVIVORS,
  FC_SAC_SIGNATURES,
  FC_SAC_DONE,
  FC_SAC_ABORTED,
};

int fc_sa_client_create(const fc_sa_client_cfg *cfg, fc_sa_client **out, char *why, size_t whylen);
/* Wipes every secret. Accepts NULL. */
void fc_sa_client_destroy(fc_sa_client *c);
int fc_sa_client_state(const fc_sa_client *c);
/* The stage whose input the client polls for next (FC_SA_*), 0 when none. */
int fc_sa_client_next_stage(const fc_sa_client *c);
const char *fc_sa_client_error(const fc_sa_client *c);
const uint8_t *fc_sa_client_session(const fc_sa_client *c);

/* Each stage returns FEDC_OK and fills *out (release with fc_sa_submit_clear),
 * or an error with the reason in fc_sa_client_error (ABORTED, except
 * FEDC_ERR_PROTOCOL for a call in the wrong state, which changes nothing). */
int fc_sa_client_advertise(fc_sa_client *c, Fedc__V1__SecAggSubmitRequest *out);
int fc_sa_client_share_keys(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in,
                            Fedc__V1__SecAggSubmitRequest *out);
int fc_sa_client_receive_shares(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in);
/* Mask a quantized input in place: vec has fc_sa_entries u32 (fc_sa_quantize's
 * output: the weighted update and the weight). The pipeline's quantize stage
 * runs before and is separate, so tests can compare secure and plaintext
 * sums of the very same quantized vectors. */
int fc_sa_client_mask(fc_sa_client *c, uint32_t *vec);
/* Optional, after share_keys and before receive_shares: mask vec ahead of
 * time with the self mask and the pairwise mask of every neighbour whose
 * keys were verified, while the other clients still share theirs; then
 * fc_sa_client_mask on the same vec only takes out the masks of neighbours
 * that sent no shares (usually none). The result is the same vector, and the
 * work between the masked stage opening and the upload is one expansion per
 * missing neighbour instead of k + 1. */
int fc_sa_client_premask(fc_sa_client *c, uint32_t *vec);
int fc_sa_client_consistency(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in,
                             Fedc__V1__SecAggSubmitRequest *out);
int fc_sa_client_unmask(fc_sa_client *c, const Fedc__V1__SecAggPollResponse *in, Fedc__V1__SecAggSubmitRequest *out);

/* Free what a stage put into a submit request (not the struct itself). */
void fc_sa_submit_clear(Fedc__V1__SecAggSubmitRequest *m);

#endif

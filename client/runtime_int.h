/*
 * runtime_int.h - the client runtime's handle, shared by runtime.c (the
 * check-in loop, model cache, plain uploads) and runtime_secagg.c (the
 * secure-aggregation exchange). Not part of the public API.
 */
#ifndef FEDC_CLIENT_RUNTIME_INT_H
#define FEDC_CLIENT_RUNTIME_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "client/byzantine.h"
#include "common/rng.h"
#include "common/tensor.h"
#include "common/manifest.h"
#include "crypto/sha256.h"
#include "fedc/client.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

struct fedc_client {
  fedc_client_options o;
  char coordinator[256], ca[512], cert[512], key[512], insecure_id[160];
  fedc_trainer trainer;
  fc_channel *ch;
  atomic_int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char last_error[512];
  int create_rc;       /* FEDC_OK, or why fedc_client_create failed (run() returns it) */
  int transport_up;    /* fc_transport_init() was called (destroy balances it) */
  atomic_uint_fast64_t rounds_done; /* read by other threads via fedc_client_rounds_done */
  uint64_t last_round;
  /* cached global model */
  uint64_t cached_version;
  int have_model;
  uint8_t cached_sha[FC_SHA256_LEN];
  /* Signed models (common/manifest.h): the federation CA, our federation
   * (from our certificate) and the newest version whose manifest verified,
   * below which no model is accepted again (a replayed manifest). */
  char *ca_pem;
  size_t ca_len;
  char federation[64];
  fc_manifest_trust trust;
  fc_model_spec spec;
  float *weights;
  uint64_t model_bytes;
  fc_rng jitter;
  uint32_t failures;
  uint32_t tls_failures;
  double sa_drop[6];   /* research dropout injection (fc_client_secagg_drop) */
  fc_rng sa_drop_rng;
  int sa_drop_halt;    /* 1: a dropout halts (blocks until stopped or killed) */
  int unclipped;       /* the round in progress: the clip stage left the update as it was (sent as
                          UpdateMeta.unclipped, Andrew et al. 2021's b_i) */
  fc_byz_cfg byz;      /* research attack (fc_client_byzantine), kind FC_BYZ_NONE normally */
  /* Secure aggregation: neighbours' certificates verified in earlier rounds
   * (crypto/cert_cache.h), so each is parsed and chain-checked once, not once
   * per round; made again when the CA file changes. runtime_secagg.c. */
  struct fc_cert_cache *sa_certs;
};

/* Research only (fedc sim): attack as cfg says (client/byzantine.h). */
void fc_client_byzantine(fedc_client *c, const fc_byz_cfg *cfg);

/* Research only (fedc sim, tests): vanish before stage s's message with chance
 * drop[s]. With halt, the client instead logs "halted before the S stage" and
 * blocks there until stopped, so a test can SIGKILL it at a known stage. */
void fc_client_secagg_drop(fedc_client *c, const double drop[6], uint64_t seed, int halt);

/* Sleep up to ms; 1 if stopped. */
int rt_nap(fedc_client *c, uint32_t ms);
/* One UploadUpdate stream of payload (bytes) with the given spec. */
int rt_upload(fedc_client *c, const Fedc__V1__Task *t, const void *payload, const fc_model_spec *spec,
              uint64_t bytes, int masked, uint64_t examples, double loss, double norm, uint64_t *bytes_out,
              fc_status *st);
int rt_upload_retrying(fedc_client *c, const Fedc__V1__Task *t, const void *payload, const fc_model_spec *spec,
                       uint64_t bytes, int masked, uint64_t examples, double loss, double norm, uint64_t deadline,
                       uint64_t *bytes_out, fc_status *st);
int rt_is_transient(int err);
/* Secure aggregation for task t (runtime_secagg.c): quantize -> mask (the
 * whole SecAgg exchange) -> upload of the clipped delta. FEDC_OK when our
 * masked input was accepted and our part of the unmasking was delivered. */
int rt_secagg_round(fedc_client *c, const Fedc__V1__Task *t, const float *delta, uint64_t examples, double loss,
                    double norm, uint64_t *bytes_out, fc_status *st);

#endif

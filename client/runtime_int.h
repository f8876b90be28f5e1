/*
 * runtime_int.h - the client runtime's handle, shared by runtime.c (the
 * check-in loop and the training round), runtime_transfer.c (model download,
 * uploads), runtime_wait.c (naps and retry waits), runtime_secagg.c (the secure-aggregation exchange),
 * runtime_eval.c (evaluation tasks) and runtime_leave.c. Calls go one way:
 * runtime.c -> runtime_eval.c -> runtime_secagg.c -> runtime_transfer.c ->
 * runtime_wait.c.
 * Not part of the public API.
 */
#ifndef FEDC_CLIENT_RUNTIME_INT_H
#define FEDC_CLIENT_RUNTIME_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "client/byzantine.h"
#include "client/secagg_client.h"
#include "common/rng.h"
#include "common/tensor.h"
#include "common/manifest.h"
#include "crypto/sha256.h"
#include "fedc/client.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

struct rt_payload;

struct fedc_client {
  fedc_client_options o;
  char coordinator[256], ca[512], cert[512], key[512], insecure_id[160];
  fedc_trainer trainer;
  fc_channel *ch;
  /* Aggregator tier (1.14): the channel to the aggregator the last task
   * named (Task.aggregator_address), checked for exactly its identity;
   * replaced under mu when a task names another (runtime_transfer.c). */
  fc_channel *agg_ch;
  char agg_target[256], agg_identity[300];
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
  fedc_tensor_info tinfo[FC_MODEL_MAX_TENSORS]; /* fedc_client_model_tensors (runtime_abi.c) */
  float *weights;
  uint64_t weights_cap; /* bytes allocated at weights (>= model_bytes); the next fetch reuses them */
  uint64_t model_bytes;
  fc_rng jitter;
  uint32_t failures;
  uint32_t tls_failures;
  double sa_drop[6];   /* research dropout injection (fc_client_secagg_drop) */
  fc_rng sa_drop_rng;
  int sa_drop_halt;    /* 1: a dropout halts (blocks until stopped or killed) */
  int unclipped;       /* the round in progress: the clip stage left the update as it was (sent as
                          UpdateMeta.unclipped, Andrew et al. 2021's b_i) */
  int sa_seeded_rounding; /* research (fc_client_secagg_seeded_rounding): rounding from the task's seed */
  fc_byz_cfg byz;      /* research attack (fc_client_byzantine), kind FC_BYZ_NONE normally */
  int reached;         /* a check-in was answered: there is a coordinator to say Leave to */
  int heard_done;      /* the coordinator said DONE: the federation finished, nothing to leave */
  uint64_t last_eval;  /* the last evaluation task's id handled (reported or skipped) */
  /* Secure aggregation: neighbours' certificates verified in earlier rounds
   * (crypto/cert_cache.h), so each is parsed and chain-checked once, not once
   * per round; made again when the CA file changes. runtime_secagg.c. */
  struct fc_cert_cache *sa_certs;
  /* Our signing key as parsed for the last session (fc_sign_key_load) and
   * the SHA-256 of the key file's bytes it came from: reused while the file
   * holds the same bytes, parsed again when it changes. runtime_secagg.c. */
  struct evp_pkey_st *sa_sign_key;
  uint8_t sa_sign_key_sha[32];
};

/* Research only (fedc sim): attack as cfg says (client/byzantine.h). */
void fc_client_byzantine(fedc_client *c, const fc_byz_cfg *cfg);

/* Research only (fedc sim, tests): vanish before stage s's message with chance
 * drop[s]. With halt, the client instead logs "halted before the S stage" and
 * blocks there until stopped, so a test can SIGKILL it at a known stage. */
void fc_client_secagg_drop(fedc_client *c, const double drop[6], uint64_t seed, int halt);

/* Research only (tests, experiments that compare runs bit for bit): draw
 * the secure-aggregation rounding (fc_stage_quantize) from the task's seed
 * instead of fresh randomness. Rounding needs no secrecy, only no bias
 * (secagg.h); a rounding the coordinator can predict leaks nothing of one
 * input the sum does not, but leave it off outside experiments. */
void fc_client_secagg_seeded_rounding(fedc_client *c, int on);

/* runtime_wait.c: sleep up to ms; 1 if stopped. */
int rt_nap(fedc_client *c, uint32_t ms);
/* 1 if the client is stopped or *cancel (may be NULL) is set. */
int rt_ended(fedc_client *c, const atomic_int *cancel);
/* rt_nap that also ends when *cancel (may be NULL) is set: rt_ended after it.
 * Whoever sets *cancel does it under c->mu and broadcasts c->cv. */
int rt_nap_or(fedc_client *c, uint32_t ms, const atomic_int *cancel);
/* Set *flag for rt_nap_or: under c->mu, waking every nap at once. */
void rt_cancel(fedc_client *c, atomic_int *flag);
/* One UploadUpdate stream of payload (bytes, SHA-256 sha) with the given
 * spec, its chunks from start_offset (0, or what UploadOffset said was kept). */
int rt_upload(fedc_client *c, const Fedc__V1__Task *t, const void *payload, struct rt_payload *owner,
              const fc_model_spec *spec, uint64_t bytes, const uint8_t sha[FC_SHA256_LEN], uint64_t start_offset,
              int masked, uint64_t examples, double loss, double norm, uint64_t *bytes_out, fc_status *st);
/* ---- runtime_resume.c: resumable transfers (protocol 1.10) ---- */
/* FetchModel of t's model into *buf (*cap bytes; the caller's kept buffer),
 * resuming a stream cut by the network where it broke off. */
int rt_fetch_resumable(fedc_client *c, const Fedc__V1__Task *t, const uint8_t *want, fc_model_spec *spec,
                       uint8_t **buf, uint64_t *cap, uint64_t *total, uint8_t sha[FC_SHA256_LEN], fc_signed *man,
                       fc_status *st);
/* UploadOffset: how many bytes of this update the coordinator kept from a
 * cut stream (*offset, 0: none, or an older coordinator). Waits, as told and
 * until deadline, while our cut stream still looks open there. */
int rt_upload_offset(fedc_client *c, const Fedc__V1__Task *t, const uint8_t sha[FC_SHA256_LEN], uint64_t bytes,
                     uint64_t deadline, uint64_t *offset);
/* owner: NULL, or the holder of payload (rt_payload_own): then the chunks
 * reference it instead of each being packed into a copy (gRPC may read it
 * after the call: the holder frees it when the last of them lets go). */
int rt_upload_retrying(fedc_client *c, const Fedc__V1__Task *t, const void *payload, struct rt_payload *owner,
                       const fc_model_spec *spec, uint64_t bytes, int masked, uint64_t examples, double loss,
                       double norm, uint64_t deadline, uint64_t *bytes_out, fc_status *st);
/* A malloc'd buffer with a reference count: the runtime holds one, each
 * upload chunk in gRPC's hands another; the last release frees buf.
 * rt_payload_own: NULL if out of memory (buf then still the caller's). */
typedef struct rt_payload {
  atomic_int refs;
  void *buf;
} rt_payload;
rt_payload *rt_payload_own(void *buf);
void rt_payload_release(void *p);
/* The coordinator said when: that long plus up to a quarter more, so the
 * clients it refused together do not come back together. */
uint32_t rt_told_wait(fedc_client *c, uint32_t retry_after_ms);
int rt_is_transient(int err);
/* run() is returning rc (runtime_leave.c): unless the federation finished
 * (DONE) or no coordinator was ever reached, tell the coordinator we leave,
 * best-effort with a short deadline. */
void rt_leave(fedc_client *c, int rc);
/* We give up round `round`'s task and stay (runtime_leave.c, protocol 1.19):
 * the coordinator stops waiting for us in that round. Best-effort. */
void rt_give_up(fedc_client *c, uint64_t round);
/* The client core's configuration for task t's secure aggregation
 * (runtime_secagg.c): the session parameters and the cohort (cfg->names
 * points into t) for a model of dim parameters; the PEM fields are left
 * NULL. FEDC_ERR_PROTOCOL if the task's SecAggParams (t->secagg, non-NULL)
 * are malformed; the core checks the rest (fc_sa_client_create). */
int rt_secagg_cfg(const Fedc__V1__Task *t, uint64_t dim, fc_sa_client_cfg *cfg);
/* Keys first (SecAggParams.keys_first, runtime_secagg.c): rounds 0-1 of
 * task t's SecAgg session started on a thread of their own, to run while the
 * caller trains. NULL if it could not start (said in the log): the whole
 * exchange then runs after training. The caller hands the session to
 * rt_secagg_round, or to rt_secagg_keys_cancel if it will not train (we then
 * drop out after sharing our keys); both join the thread and free it. */
typedef struct rt_sa_session rt_sa_session;
rt_sa_session *rt_secagg_keys_start(fedc_client *c, const Fedc__V1__Task *t);
void rt_secagg_keys_cancel(rt_sa_session *s);
/* Secure aggregation for task t (runtime_secagg.c): quantize -> mask (the
 * whole SecAgg exchange, or with `early` its rounds 2-4) -> upload of the
 * clipped delta. FEDC_OK when our masked input was accepted and our part of
 * the unmasking was delivered. early (may be NULL) is consumed. */
int rt_secagg_round(fedc_client *c, const Fedc__V1__Task *t, rt_sa_session *early, const float *delta,
                    uint64_t examples, double loss, double norm, uint64_t *bytes_out, fc_status *st);
/* The SecAgg exchange around any input (runtime_secagg.c): the session for
 * task t over a vector of dim entries plus the weight; fill writes the
 * unmasked input (fc_sa_entries of the session) before masking, send sends
 * the masked one by `deadline` (unix ms). rt_secagg_round is this with the
 * clipped update; an evaluation task with its statistics (runtime_eval.c). */
typedef struct rt_sa_input {
  uint64_t dim;
  int (*fill)(void *ctx, const fc_sa_params *p, uint32_t *q, fc_status *st);
  int (*send)(void *ctx, const fc_sa_params *p, uint32_t *q, uint64_t deadline, fc_status *st);
  void *ctx;
} rt_sa_input;
int rt_secagg_exchange(fedc_client *c, const Fedc__V1__Task *t, const rt_sa_input *in, fc_status *st);
/* Fetch t's model into the cache (runtime_transfer.c): SHA-256 and signed manifest checked. */
int rt_fetch_model(fedc_client *c, const Fedc__V1__Task *t, fc_status *st);
/* The model's tensors as the trainer callbacks see them (calloc'd; NULL on OOM). */
fedc_tensor_info *rt_tensor_infos(const fedc_client *c);
/* An evaluation task (runtime_eval.c): model, trainer->evaluate_stats, report
 * (masked under secure aggregation). FEDC_OK once accepted, FEDC_ERR_REJECTED
 * (skip it), a transient error, or a permanent one. */
int rt_eval_task(fedc_client *c, const Fedc__V1__Task *t, fc_status *st);
/* Emit an event with the fields the caller filled (runtime_transfer.c). */
void rt_emit(fedc_client *c, const fedc_event *ev);

#endif

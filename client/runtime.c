/*
 * runtime.c - the embeddable client runtime (include/fedc/client.h).
 *
 * Loop: check in -> (WAIT: sleep retry_after) | (DONE: return) |
 * (TRAIN: fetch model if not cached -> verify SHA-256 against the task ->
 * trainer -> update pipeline -> upload). The update pipeline is
 *     delta -> clip -> (noise) -> (quantize, mask) -> upload
 * and today runs its first two stages (pipeline_* below); differential
 * privacy noise and secure-aggregation masking slot in between clip and
 * upload without touching the loop.
 *
 * Failures: transient ones (coordinator unavailable, deadline, busy) back off
 * with full jitter (AWS architecture blog "Exponential Backoff and Jitter")
 * between min_backoff_ms and max_backoff_ms, so a mass reconnect spreads out;
 * permanent ones (TLS, permission, protocol version, a model the trainer says
 * it can never train: FEDC_TRAIN_UNTRAINABLE) end run() with a sentence in
 * last_error. An upload that broke off is retried while the round is open,
 * from the bytes the coordinator kept of it (protocol 1.10, runtime_resume.c;
 * it checks the whole update's SHA-256 at the end), or whole; a cut model
 * download resumes the same way.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "common/manifest.h"
#include "common/quant.h"
#include "common/rng.h"
#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h"
#include "fedc/client.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"
#include "client/pipeline.h"
#include "client/runtime_int.h"

#define MOD "client"

FEDC_API void fedc_client_options_init(fedc_client_options *o) {
  memset(o, 0, sizeof *o);
  o->coordinator = "127.0.0.1:7070";
  o->min_backoff_ms = 200;
  o->max_backoff_ms = 30000;
  o->call_timeout_ms = 120000;
  o->chunk_bytes = FC_CHUNK_DEFAULT;
  o->max_model_bytes = 1ull << 30;
}

static void set_error(fedc_client *c, const char *fmt, const char *detail) {
  snprintf(c->last_error, sizeof c->last_error, fmt, detail);
}

/* The CA that model manifests must chain to, and our federation. */
static int load_trust(fedc_client *c, char *err, size_t errlen) {
  if (!c->ca[0]) return FEDC_OK; /* insecure test mode without a CA: nothing to verify against */
  int rc = fc_read_file(c->ca, 1u << 20, &c->ca_pem, &c->ca_len);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read CA certificate %s: %s", c->ca, fedc_strerror(rc));
    return rc;
  }
  char *pem = NULL;
  size_t len = 0;
  char role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  if (c->cert[0] && fc_read_file(c->cert, 1u << 20, &pem, &len) == FEDC_OK &&
      fc_pki_identity_from_pem(pem, len, c->federation, sizeof c->federation, role, sizeof role, name,
                               sizeof name) != FEDC_OK)
    c->federation[0] = 0;
  free(pem);
  return FEDC_OK;
}

static void trust_init(fedc_client *c) {
  c->trust.ca_pem = c->ca_pem;
  c->trust.ca_len = c->ca_len;
  c->trust.federation = c->federation;
  c->trust.allow_unsigned = c->o.allow_unsigned_models;
  /* The signer of model manifests, verified once (a few signers at most: a
   * rotation brings a new one). Without the cache each model costs two
   * certificate parses and a chain check, about 2 ms of a device's CPU. */
  char why[300];
  if (c->ca_pem && fc_cert_cache_create(c->ca_pem, c->ca_len, 4, &c->trust.certs, why, sizeof why) != FEDC_OK)
    c->trust.certs = NULL; /* verified from the PEM each time instead, which says what is wrong */
}

/* The handle rule (client.h): every failure after allocation still hands
 * the handle out, holding the sentence and the code run() returns, so an
 * embedder has one path for both outcomes (create, run if OK, read
 * last_error, destroy) and never a pointer it must not touch. */
static int create_failed(fedc_client *c, int rc, const char *why, fedc_client **out) {
  set_error(c, "%s", why);
  c->create_rc = rc;
  *out = c;
  return rc;
}

FEDC_API int fedc_client_create(const fedc_client_options *o, const fedc_trainer *trainer, fedc_client **out) {
  if (!out) return FEDC_ERR_INVALID;
  *out = NULL;
  fedc_client *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (!o || !o->coordinator || !trainer || !trainer->train)
    return create_failed(c, FEDC_ERR_INVALID,
                         !o ? "fedc_client_create: no options"
                         : !o->coordinator ? "fedc_client_create: options.coordinator is NULL"
                                           : "fedc_client_create: the trainer needs a train callback",
                         out);
  c->o = *o;
  c->trainer = *trainer;
  snprintf(c->coordinator, sizeof c->coordinator, "%s", o->coordinator);
  snprintf(c->ca, sizeof c->ca, "%s", o->ca ? o->ca : "");
  snprintf(c->cert, sizeof c->cert, "%s", o->cert ? o->cert : "");
  snprintf(c->key, sizeof c->key, "%s", o->key ? o->key : "");
  snprintf(c->insecure_id, sizeof c->insecure_id, "%s", o->insecure_identity ? o->insecure_identity : "");
  if (!c->o.chunk_bytes || c->o.chunk_bytes > FC_CHUNK_MAX) c->o.chunk_bytes = FC_CHUNK_DEFAULT;
  if (!c->o.min_backoff_ms) c->o.min_backoff_ms = 200;
  if (c->o.max_backoff_ms < c->o.min_backoff_ms) c->o.max_backoff_ms = c->o.min_backoff_ms;
  if (c->o.call_timeout_ms <= 0) c->o.call_timeout_ms = 120000;
  if (!c->o.max_model_bytes) c->o.max_model_bytes = 1ull << 30;
  fc_rng_seed(&c->jitter, (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)c);
  fc_transport_init();
  c->transport_up = 1;

  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = c->coordinator;
  co.insecure_for_testing = o->insecure_for_testing;
  co.insecure_identity = c->insecure_id[0] ? c->insecure_id : NULL;
  co.tls.ca = c->ca[0] ? c->ca : NULL;
  co.tls.cert = c->cert[0] ? c->cert : NULL;
  co.tls.key = c->key[0] ? c->key : NULL;
  co.expect_role = "coordinator"; /* not an aggregator's certificate on the coordinator's host */
  char err[400];
  int rc = load_trust(c, err, sizeof err);
  trust_init(c);
  if (rc != FEDC_OK) return create_failed(c, rc, err, out);
  rc = fc_channel_create(&co, &c->ch, err, sizeof err);
  if (rc != FEDC_OK) return create_failed(c, rc, err, out);
  *out = c;
  return FEDC_OK;
}

FEDC_API void fedc_client_destroy(fedc_client *c) {
  if (!c) return;
  fc_channel_destroy(c->ch);
  fc_channel_destroy(c->agg_ch);
  free(c->weights);
  free(c->ca_pem);
  fc_cert_cache_destroy(c->sa_certs);
  fc_cert_cache_destroy(c->trust.certs);
  fc_sign_key_free(c->sa_sign_key);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  if (c->transport_up) fc_transport_shutdown();
  free(c);
}

FEDC_API void fedc_client_stop(fedc_client *c) {
  if (!c) return;
  /* Under mu, so that rt_leave's uncancel (also under mu) comes after it. */
  pthread_mutex_lock(&c->mu);
  atomic_store(&c->stop, 1);
  fc_channel_cancel_all(c->ch); /* a call in flight ends now, not at its deadline */
  if (c->agg_ch) fc_channel_cancel_all(c->agg_ch);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

FEDC_API const char *fedc_client_last_error(const fedc_client *c) {
  return c ? c->last_error : "no client handle (fedc_client_create could not allocate one)";
}
FEDC_API uint64_t fedc_client_rounds_done(const fedc_client *c) {
  return c ? atomic_load((atomic_uint_fast64_t *)&c->rounds_done) : 0;
}

static void emit(fedc_client *c, int kind, uint64_t round, const char *detail) {
  if (!c->o.on_event) return;
  fedc_event ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.round = round;
  ev.model_version = c->cached_version;
  ev.detail = detail;
  c->o.on_event(c->o.event_ctx, &ev);
}

/* Full-jitter exponential backoff. Returns 1 if stopped or out of retries. */
static int backoff(fedc_client *c, const char *what, const fc_status *st) {
  if (atomic_load(&c->stop)) return 1; /* the failure is our own cancel: stopping, not retrying */
  /* A refusal that says when to come back (rate limit, busy) is the server
   * pacing us, not a failure: it does not use up max_retries. */
  if (!st->retry_after_ms) c->failures++;
  if (c->o.max_retries && c->failures > c->o.max_retries) {
    snprintf(c->last_error, sizeof c->last_error, "%s: giving up after %u attempts: %s", what, c->failures - 1,
             st->detail);
    return 1;
  }
  uint64_t cap = (uint64_t)c->o.min_backoff_ms << (c->failures < 16 ? c->failures : 16);
  if (cap > c->o.max_backoff_ms) cap = c->o.max_backoff_ms;
  uint32_t ms = (uint32_t)(c->o.min_backoff_ms / 2 + fc_rng_below(&c->jitter, cap + 1));
  if (st->retry_after_ms) ms = rt_told_wait(c, st->retry_after_ms);
  FC_WARN(MOD, "%s failed (%s); retrying in %u ms", what, st->detail, ms);
  emit(c, FEDC_EVENT_RETRY, 0, st->detail);
  return rt_nap(c, ms);
}

/* Protocol 1.9: the coordinator asked for a quantized update (Task.upload_bits,
 * upload_block): encode the clipped delta (common/quant.h, unbiased) and
 * upload it as one U8 tensor. An encoding this build does not know is
 * refused rather than guessed at. */
static int upload_compressed(fedc_client *c, const Fedc__V1__Task *t, const float *delta, size_t n, uint64_t examples,
                             double loss, double norm, uint64_t *bytes_out, fc_status *st) {
  uint64_t bytes = fc_q_payload_bytes(n, t->upload_bits, t->upload_block);
  if (!bytes) {
    snprintf(st->detail, sizeof st->detail, "the coordinator asks for %u-bit uploads in blocks of %u: not supported",
             t->upload_bits, t->upload_block);
    return FEDC_ERR_REJECTED;
  }
  uint8_t *q = malloc(bytes);
  if (!q) {
    snprintf(st->detail, sizeof st->detail, "out of memory for a %llu-byte compressed update",
             (unsigned long long)bytes);
    return FEDC_ERR_NOMEM;
  }
  int rc = fc_stage_compress(delta, n, t->upload_bits, t->upload_block, q);
  if (rc == FEDC_OK) {
    fc_model_spec qs;
    memset(&qs, 0, sizeof qs);
    char name[16];
    snprintf(name, sizeof name, "update.q%u", t->upload_bits);
    fc_model_spec_add(&qs, name, 1, &bytes);
    qs.t[0].dtype = FC_DTYPE_U8;
    rc = rt_upload_retrying(c, t, q, NULL, &qs, bytes, 0, examples, loss, norm, t->deadline_unix_ms, bytes_out, st);
  } else {
    snprintf(st->detail, sizeof st->detail, "cannot quantize the update");
  }
  free(q);
  return rc;
}

/* The round's task failed on our side before anything was uploaded (the
 * model did not verify or fit, the trainer failed, the update was not
 * finite), and we will not retry it: tell the coordinator at once, before
 * any pacing nap, so the round stops waiting for us (rt_give_up, protocol
 * 1.19). Never after an upload began: a refusal then may be of an update
 * that counts (a lost reply, retried into ALREADY_EXISTS at an aggregator),
 * and giving that round up would drop it (a hostile review's finding). */
static void give_up_if_ours(fedc_client *c, const Fedc__V1__Task *t, int rc) {
  if (rc == FEDC_ERR_TRAINER || rc == FEDC_ERR_NONFINITE || rc == FEDC_ERR_HASH || rc == FEDC_ERR_SIGNATURE)
    rt_give_up(c, t->round);
}

/* One selected round. Returns FEDC_OK (uploaded), FEDC_ERR_REJECTED (refused,
 * move on), a transient error (caller backs off) or a permanent one. */
static int do_round(fedc_client *c, const Fedc__V1__Task *t, fc_status *st) {
  int rc;
  if (!c->have_model || c->cached_version != t->model_version ||
      t->model_sha256.len != FC_SHA256_LEN || !fc_digest_equal(c->cached_sha, t->model_sha256.data, FC_SHA256_LEN)) {
    if ((rc = rt_fetch_model(c, t, st)) != FEDC_OK) {
      give_up_if_ours(c, t, rc);
      return rc;
    }
    double acc = 0, eval_loss = 0;
    if (c->trainer.evaluate && c->o.on_event &&
        c->trainer.evaluate(c->trainer.ctx, c->weights, c->model_bytes / sizeof(float), &acc, &eval_loss) == 0) {
      fedc_event ev;
      memset(&ev, 0, sizeof ev);
      ev.kind = FEDC_EVENT_EVALUATED;
      ev.round = t->round;
      ev.model_version = t->model_version;
      ev.accuracy = acc;
      ev.loss = eval_loss;
      c->o.on_event(c->o.event_ctx, &ev);
    }
  }
  size_t n = c->model_bytes / sizeof(float);
  /* The trainer's output, then the delta in place, then the upload's
   * payload: held through `held`, since gRPC may still read its chunks after
   * the upload call is gone (rt_payload_release frees it at the last). */
  float *out = malloc(c->model_bytes ? c->model_bytes : 1);
  rt_payload *held = out ? rt_payload_own(out) : NULL;
  fedc_tensor_info *ti = rt_tensor_infos(c);
  if (!held || !ti) {
    if (!held) free(out);
    rt_payload_release(held);
    free(ti);
    snprintf(st->detail, sizeof st->detail, "out of memory for a %llu-byte model", (unsigned long long)c->model_bytes);
    return FEDC_ERR_NOMEM;
  }
  memcpy(out, c->weights, c->model_bytes);
  /* Keys first: the SecAgg key stages run beside training (runtime_secagg.c). */
  rt_sa_session *early = t->secagg && t->secagg->keys_first ? rt_secagg_keys_start(c, t) : NULL;
  fedc_train_config tc;
  memset(&tc, 0, sizeof tc);
  tc.round = t->round;
  tc.model_version = t->model_version;
  if (t->hyper) {
    tc.learning_rate = t->hyper->learning_rate;
    tc.local_epochs = t->hyper->local_epochs;
    tc.batch_size = t->hyper->batch_size;
    tc.momentum = t->hyper->momentum;
    tc.seed = t->hyper->seed;
    tc.prox_mu = t->hyper->prox_mu;
  }
  tc.struct_size = sizeof tc; /* the ABI rule in client.h */
  tc.clip_norm = t->clip_norm;
  tc.n_tensors = c->spec.n;
  tc.tensors = ti;
  char terr[300] = "";
  tc.error = terr;
  tc.error_len = sizeof terr;
  int kind = FEDC_OUTPUT_WEIGHTS;
  uint64_t examples = 0;
  double loss = 0, norm = 0, scale = 1;
  uint64_t bytes_out = 0;
  int sending = 0; /* the upload (or the SecAgg stages after training) began */
  int trc = c->trainer.train(c->trainer.ctx, &tc, c->weights, out, n, &kind, &examples, &loss);
  terr[sizeof terr - 1] = 0;
  if (trc == FEDC_TRAIN_UNTRAINABLE) {
    /* Permanent (client.h): run() ends with the trainer's sentence. */
    snprintf(st->detail, sizeof st->detail, "%s", terr[0] ? terr : "the trainer cannot train the coordinator's model");
    rc = FEDC_ERR_SHAPE;
    goto out;
  }
  if (trc != 0 || examples == 0) {
    snprintf(st->detail, sizeof st->detail, "trainer failed in round %llu%s%s", (unsigned long long)t->round,
             terr[0] ? ": " : "", terr);
    rc = FEDC_ERR_TRAINER;
    goto out;
  }
  if (!(loss >= 0 && loss <= FC_MAX_TRAIN_LOSS)) {
    snprintf(st->detail, sizeof st->detail, "trainer reported loss %g in round %llu: must be finite and in [0, %g]",
             loss, (unsigned long long)t->round, FC_MAX_TRAIN_LOSS);
    rc = FEDC_ERR_TRAINER;
    goto out;
  }
  if ((rc = fc_stage_delta(out, c->weights, n, kind)) != FEDC_OK) {
    snprintf(st->detail, sizeof st->detail, "trainer produced NaN/Inf in round %llu: update not sent",
             (unsigned long long)t->round);
    goto out;
  }
  /* Research: an attacker rewrites its delta here (never on a coordinator's word). */
  if (c->byz.kind != FC_BYZ_NONE && fc_byz_apply(&c->byz, t->round, out, n) != FEDC_OK)
    FC_WARN(MOD, "round %llu: the research attack failed; sending the honest update", (unsigned long long)t->round);
  scale = fc_stage_clip(out, n, c->byz.kind != FC_BYZ_NONE && c->byz.unclipped ? 0.0f : t->clip_norm, &norm);
  c->unclipped = scale == 1.0;
  fedc_event ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = FEDC_EVENT_TRAINED;
  ev.round = t->round;
  ev.model_version = t->model_version;
  ev.num_examples = examples;
  ev.loss = loss;
  ev.update_norm = norm;
  ev.clip_scale = scale;
  if (c->o.on_event) c->o.on_event(c->o.event_ctx, &ev);
  sending = 1;
  if (t->secagg) {
    rc = rt_secagg_round(c, t, early, out, examples, loss, norm, &bytes_out, st);
    early = NULL;
  } else if (t->upload_bits && t->upload_bits != 32)
    rc = upload_compressed(c, t, out, n, examples, loss, norm, &bytes_out, st);
  else
    rc = rt_upload_retrying(c, t, out, held, &c->spec, c->model_bytes, 0, examples, loss, norm, t->deadline_unix_ms,
                            &bytes_out, st);
  if (rc == FEDC_OK && c->o.on_event) {
    ev.kind = FEDC_EVENT_UPLOADED;
    ev.bytes_out = bytes_out;
    ev.bytes_in = c->model_bytes;
    c->o.on_event(c->o.event_ctx, &ev);
  }
out:
  rt_secagg_keys_cancel(early); /* we will not train: a dropout after sharing our keys */
  if (rc != FEDC_OK && !sending) give_up_if_ours(c, t, rc);
  rt_payload_release(held);
  free(ti);
  return rc;
}

static int run_rounds(fedc_client *c) {
  c->failures = 0;
  for (;;) {
    if (atomic_load(&c->stop)) {
      set_error(c, "%s", "stopped");
      return FEDC_ERR_STOPPED;
    }
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    req.num_examples = c->o.num_examples_hint;
    req.last_round = c->last_round;
    req.can_evaluate = c->trainer.evaluate_stats != NULL;
    Fedc__V1__DeviceState dev = FEDC__V1__DEVICE_STATE__INIT;
    fedc_device_state ds;
    memset(&ds, 0, sizeof ds);
    if (c->o.device_state && c->o.device_state(c->o.device_state_ctx, &ds) == 0) { /* eligibility (1.8) */
      dev.charging = ds.charging != 0;
      dev.unmetered = ds.unmetered != 0;
      dev.idle = ds.idle != 0;
      dev.battery_percent = ds.battery_percent > 100 ? 100 : ds.battery_percent;
      dev.free_storage_bytes = ds.free_storage_bytes;
      req.device = &dev;
    }
    ProtobufCMessage *m = NULL;
    fc_status st;
    memset(&st, 0, sizeof st);
    int rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor,
                           &m, 30000, &st);
    if (rc != FEDC_OK) {
      /* A TLS verdict seen during a coordinator restart can be a fluke: it
       * is final only when it repeats (3 times in a row). */
      int tls_retry = rc == FEDC_ERR_TLS && ++c->tls_failures < 3;
      /* A check-in request is tiny, so RESOURCE_EXHAUSTED is never "too large"
       * here: the coordinator is busy (per-identity call limit, out of memory,
       * client table full) and says "retry later". */
      int busy = st.code == GRPC_STATUS_RESOURCE_EXHAUSTED;
      if (rt_is_transient(rc) || tls_retry || busy) {
        if (backoff(c, "check-in", &st)) {
          if (!atomic_load(&c->stop)) return rc;
          set_error(c, "%s", "stopped");
          return FEDC_ERR_STOPPED;
        }
        continue;
      }
      set_error(c, "%s", st.detail);
      return rc;
    }
    c->failures = 0;
    c->tls_failures = 0;
    c->reached = 1;
    Fedc__V1__CheckInResponse *resp = (Fedc__V1__CheckInResponse *)m;
    /* At most an hour, like the trailer's: a coordinator cannot park us for days. */
    uint32_t retry = resp->retry_after_ms ? (resp->retry_after_ms < 3600000 ? resp->retry_after_ms : 3600000) : 1000;
    if (resp->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE) {
      protobuf_c_message_free_unpacked(m, NULL);
      c->heard_done = 1;
      emit(c, FEDC_EVENT_DONE, 0, "federation finished");
      return FEDC_OK;
    }
    if (resp->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__TRAIN && resp->task &&
        resp->task->round != c->last_round) {
      emit(c, FEDC_EVENT_TASK, resp->task->round, NULL);
      /* Pace steering (1.8): after the round, come back at the slot the
       * coordinator gave (counted from its answer), not at once. */
      uint64_t slot = resp->next_checkin_after_ms ? fc_now_ms() + (resp->next_checkin_after_ms < 3600000
                                                                        ? resp->next_checkin_after_ms : 3600000) : 0;
      rc = do_round(c, resp->task, &st);
      uint64_t round = resp->task->round;
      protobuf_c_message_free_unpacked(m, NULL);
      uint64_t after = fc_now_ms();
      if (slot > after && (rc == FEDC_OK || !rt_is_transient(rc)) && !(rc == FEDC_OK && c->o.max_rounds &&
                                                                       c->rounds_done + 1 >= c->o.max_rounds))
        rt_nap(c, (uint32_t)(slot - after));
      if (rc == FEDC_OK) {
        c->last_round = round;
        c->rounds_done++;
        if (c->o.max_rounds && c->rounds_done >= c->o.max_rounds) return FEDC_OK;
        continue;
      }
      if (rc == FEDC_ERR_REJECTED || rc == FEDC_ERR_TRAINER || rc == FEDC_ERR_NONFINITE || rc == FEDC_ERR_HASH ||
          rc == FEDC_ERR_TOO_LARGE || rc == FEDC_ERR_NOT_FOUND || rc == FEDC_ERR_SIGNATURE) {
        /* This round is lost for us; the federation goes on (do_round told
         * the coordinator if the failure was ours, before any upload). */
        FC_WARN(MOD, "round %llu: %s", (unsigned long long)round, st.detail);
        emit(c, FEDC_EVENT_REJECTED, round, st.detail);
        c->last_round = round;
        if (rt_nap(c, retry)) continue;
        continue;
      }
      if (rt_is_transient(rc)) {
        if (backoff(c, "round", &st) && !atomic_load(&c->stop)) return rc;
        continue;
      }
      set_error(c, "%s", st.detail);
      return rc;
    }
    if (resp->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__EVALUATE && resp->task && resp->task->eval &&
        c->trainer.evaluate_stats && resp->task->round != c->last_eval) {
      /* Federated evaluation (runtime_eval.c): never changes the model. */
      uint64_t id = resp->task->round;
      rc = rt_eval_task(c, resp->task, &st);
      protobuf_c_message_free_unpacked(m, NULL);
      if (rc == FEDC_OK || rc == FEDC_ERR_REJECTED || rc == FEDC_ERR_TRAINER || rc == FEDC_ERR_HASH ||
          rc == FEDC_ERR_NOT_FOUND || rc == FEDC_ERR_SIGNATURE || rc == FEDC_ERR_TOO_LARGE) {
        if (rc != FEDC_OK) {
          FC_WARN(MOD, "evaluation %llu: %s", (unsigned long long)(id & ~(1ull << 63)), st.detail);
          emit(c, FEDC_EVENT_REJECTED, id & ~(1ull << 63), st.detail);
        }
        c->last_eval = id; /* once per evaluation, reported or not */
        continue;
      }
      if (rt_is_transient(rc)) {
        if (backoff(c, "evaluation", &st) && !atomic_load(&c->stop)) return rc;
        continue;
      }
      set_error(c, "%s", st.detail);
      return rc;
    }
    /* WAIT: for as long as told (pace steering, 1.8), perhaps with why this
     * device is not eligible now. */
    const char *why = resp->not_eligible && resp->not_eligible[0] ? resp->not_eligible : NULL;
    if (why) FC_INFO(MOD, "%s; checking in again in %u ms", why, retry);
    emit(c, FEDC_EVENT_WAITING, 0, why);
    protobuf_c_message_free_unpacked(m, NULL);
    rt_nap(c, retry);
  }
}

FEDC_API int fedc_client_run(fedc_client *c) {
  if (!c) return FEDC_ERR_INVALID;
  if (c->create_rc != FEDC_OK) return c->create_rc; /* create failed; last_error says why */
  int rc = run_rounds(c);
  rt_leave(c, rc);
  return rc;
}

void fc_client_byzantine(fedc_client *c, const fc_byz_cfg *cfg) {
  if (c && cfg) c->byz = *cfg;
}

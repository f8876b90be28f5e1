/*
 * coord_checkin.c - the front door's CheckIn handler (Coordinator/CheckIn):
 * protocol checks, the device state a client reports (eligibility, 1.8),
 * the engine's answer (a task, an evaluation, WAIT with when to come back:
 * pace steering, or WAIT "not eligible: <reason>"), and the eligibility part
 * of Admin Status. Moved out of coordinator.c with eligibility.
 *
 * Owns: translating CheckInRequest.device into fc_device_state (a battery
 * above 100% is refused as INVALID_ARGUMENT, the client keeps its place) and
 * CheckInResponse. May call: the engine (under c->mu), coord_eval.c and
 * coord_secagg.c for the task they pack, the audit log, the logger.
 *
 * The decisions (who is eligible, who is selected, when a waiting device
 * should come back) are the engine's (engine_elig.c, engine_pace.c), where
 * they are unit-tested without sockets; this file only carries them.
 */
#include <grpc/status.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

#define MOD "coordinator"

/* CheckInRequest.device (absent: not reported) as the engine takes it. */
static int device_state(const Fedc__V1__CheckInRequest *req, fc_device_state *d, char *why, size_t n) {
  memset(d, 0, sizeof *d);
  const Fedc__V1__DeviceState *s = req->device;
  if (!s) return FEDC_OK;
  if (s->battery_percent > 100) {
    snprintf(why, n, "device.battery_percent %u is out of range (1..100, 0 = unknown)", s->battery_percent);
    return FEDC_ERR_INVALID;
  }
  d->reported = 1;
  d->charging = s->charging;
  d->unmetered = s->unmetered;
  d->idle = s->idle;
  d->battery_percent = s->battery_percent;
  d->free_storage_bytes = s->free_storage_bytes;
  return FEDC_OK;
}

void coord_elig_status(fc_coord *c, Fedc__V1__EligibilityStatus *out, char *policy, size_t n) {
  fc_elig_counts k;
  fc_pace_info pi;
  fc_elig_policy_text(&c->cfg.engine.elig, policy, n);
  pthread_mutex_lock(&c->mu);
  uint64_t now = fc_now_ms();
  fc_engine_elig_counts(c->engine, now, &k);
  fc_engine_pace_info(c->engine, now, &pi);
  pthread_mutex_unlock(&c->mu);
  out->policy = policy;
  out->seen = k.seen;
  out->eligible = k.eligible;
  out->not_reported = k.by_reason[0];
  out->not_charging = k.by_reason[1];
  out->metered = k.by_reason[2];
  out->not_idle = k.by_reason[3];
  out->low_battery = k.by_reason[4];
  out->low_storage = k.by_reason[5];
  out->pace_steering = pi.active;
  out->pace_target_rate = pi.target_rate;
  out->pace_window_ms = pi.window_ms;
}

void coord_h_checkin(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__CheckInRequest *req = (const Fedc__V1__CheckInRequest *)fc_scall_request(call);
  if (coord_audit_peer(c, call, peer)) return;
  atomic_fetch_add(&c->metrics.checkins, 1);
  if (coord_ha_checkin_held(c, call, peer->name)) return; /* etcd without quorum: retry later */
  int dp_sa = c->cfg.engine.secagg && c->cfg.dp_noise_multiplier > 0;
  unsigned need = c->cfg.engine.secagg ? 5 : c->cfg.dp_adaptive_quantile > 0 ? 3 : 0;
  int compress = c->cfg.upload_bits != 32 && need < COORD_CODEC_MINOR; /* it would send float32, refused */
  if (compress) need = COORD_CODEC_MINOR;
  if (c->tier) need = 14; /* 1.14: it uploads where the task says; an older one would upload here, refused */
  if (peer->proto_minor < need) {
    /* Secure aggregation: before 1.2 it would send its update in the clear;
     * before 1.5 its session id lacks min_survivors and it could never take
     * part. Adaptive clipping: it would not say whether it clipped. */
    char why[200];
    snprintf(why, sizeof why, "this federation runs %s (fedc protocol 1.%u); the client speaks 1.%u: upgrade it",
             c->tier ? "an aggregator tier" : compress ? "compressed uploads" : dp_sa ? "distributed DP"
             : need == 3 ? "adaptive clipping"
                                                                   : "secure aggregation",
             need, peer->proto_minor);
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
    return;
  }
  if (c->sign_key && peer->proto_minor == 4) { /* 1.4 checks manifests, of format 1 only */
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "model manifests are signed in format 2 (fedc protocol "
                    "1.5); the client speaks 1.4 and would refuse every model: upgrade it", NULL);
    return;
  }
  coord_checkin_q q;
  memset(&q, 0, sizeof q);
  char elig_why[320] = "";
  if (device_state(req, &q.dev, elig_why, sizeof elig_why) != FEDC_OK) {
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, elig_why, NULL);
    return;
  }
  snprintf(q.client, sizeof q.client, "%s", peer->name);
  /* Evaluation tasks only to clients that say they can run them (1.7). */
  q.can_eval = c->ev && peer->proto_minor >= 7 && req->can_evaluate;
  q.last_round = req->last_round;
  coord_checkin_answer(c, call, &q, 0, 0);
}

/* The engine's answer to q, packed into the call's response; or, a plain
 * WAIT of a synchronous federation, the call held (coord_ci_park.c) until
 * the engine changes state or until `until` (0: --checkin-hold-ms from now).
 * held: asked again for a held call (no second check-in token). Takes and
 * releases c->mu. */
void coord_checkin_answer(fc_coord *c, fc_scall *call, const coord_checkin_q *q, int held, uint64_t until) {
  if (held && coord_ha_checkin_held(c, call, q->client)) return; /* etcd lost quorum while it was held */
  fc_task_info task;
  uint32_t retry = 0;
  char elig_why[320] = "";
  fc_eval_info etask;
  pthread_mutex_lock(&c->mu);
  uint64_t now = fc_now_ms();
  int act = (held ? fc_engine_checkin_held : fc_engine_checkin_device)(
      c->engine, q->client, &q->dev, q->can_eval, q->last_round, now, &task, &etask, &retry, elig_why,
      sizeof elig_why);
  if (act == FC_CHECKIN_EVAL) {
    coord_eval_answer_locked(c, call, q->client, &etask, retry);
    pthread_mutex_unlock(&c->mu);
    return;
  }
  /* Waiting for a round: held, not told to poll again (no thread, no batch). */
  if (act == FC_CHECKIN_WAIT && retry <= c->cfg.engine.poll_ms &&
      coord_ci_park_locked(c, call, q, until ? until : now + c->cfg.checkin_hold_ms) == FEDC_OK) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  uint64_t gv = c->model->version;
  float clip = c->clip;
  uint64_t model_bytes = c->model->bytes;
  /* A secure-aggregation task points into the session: packed under the lock. */
  int hold = act == FC_CHECKIN_TRAIN && c->nsa;
  if (!hold) pthread_mutex_unlock(&c->mu);
  if (act == FC_CHECKIN_REFUSED) {
    FC_WARN(MOD, "check-in from %s refused: client table full", q->client);
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "coordinator is not accepting new clients", NULL);
    return;
  }
  if (act == FC_CHECKIN_RATE_LIMITED) {
    char why[160];
    snprintf(why, sizeof why, "check-ins too frequent: retry in %u ms", retry);
    FC_WARN(MOD, "check-in from %s refused: over its rate (retry in %u ms)", q->client, retry);
    coord_anomaly_rate_limited(c, q->client);
    fc_scall_finish_retry(call, GRPC_STATUS_RESOURCE_EXHAUSTED, why, retry);
    return;
  }
  Fedc__V1__CheckInResponse resp = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  Fedc__V1__Task t = FEDC__V1__TASK__INIT;
  Fedc__V1__HyperParams hp = FEDC__V1__HYPER_PARAMS__INIT;
  Fedc__V1__SecAggParams sp = FEDC__V1__SEC_AGG_PARAMS__INIT;
  char tier_addr[256], tier_id[300];
  resp.global_version = gv;
  resp.retry_after_ms = retry;
  if (act == FC_CHECKIN_TRAIN && retry > c->cfg.engine.poll_ms) { /* pace steering: its slot after the round */
    resp.next_checkin_after_ms = retry;
    resp.retry_after_ms = c->cfg.engine.poll_ms;
  }
  if (act == FC_CHECKIN_TRAIN) {
    resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__TRAIN;
    hp.learning_rate = c->cfg.learning_rate;
    hp.local_epochs = c->cfg.local_epochs;
    hp.batch_size = c->cfg.batch_size;
    hp.momentum = c->cfg.momentum;
    hp.prox_mu = c->cfg.prox_mu;
    hp.seed = task.client_seed;
    t.round = task.round;
    t.model_version = task.version;
    t.model_sha256.data = task.sha;
    t.model_sha256.len = FC_SHA256_LEN;
    t.hyper = &hp;
    t.clip_norm = clip;
    t.deadline_unix_ms = task.deadline_ms;
    t.model_bytes = model_bytes;
    coord_codec_task(c, &t);
    if (c->tier) { /* the aggregator it uploads to (coord_aggtier.c) */
      if (coord_tier_task(c, q->client, task.round, hold, tier_addr, tier_id) != FEDC_OK) {
        if (hold) pthread_mutex_unlock(&c->mu);
        FC_WARN(MOD, "check-in from %s: no aggregator registered to take its update (round %llu)", q->client,
                (unsigned long long)task.round);
        fc_scall_finish_retry(call, GRPC_STATUS_UNAVAILABLE, "no aggregator is registered to take the update: retry",
                              1000);
        return;
      }
      t.aggregator_address = tier_addr;
      t.aggregator_identity = tier_id;
    }
    if (hold) {
      coord_sa_task(c, q->client, &sp);
      t.secagg = &sp;
    }
    resp.task = &t;
  } else if (act == FC_CHECKIN_DONE) {
    resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE;
  } else {
    resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT;
    if (act == FC_CHECKIN_INELIGIBLE) {
      char text[360];
      snprintf(text, sizeof text, "not eligible: %s", elig_why);
      resp.not_eligible = text;
      FC_DEBUG(MOD, "check-in from %s: %s (retry in %u ms)", q->client, text, retry);
      fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
      return; /* an ineligible device is never given a task: nothing was held */
    }
  }
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  if (hold) pthread_mutex_unlock(&c->mu);
}

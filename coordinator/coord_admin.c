/*
 * coord_admin.c - the Admin service's read and control handlers: Status,
 * Rounds (the history, newest records within the reply limit) and
 * RoundControl (pause, resume, start more rounds; persisted at once).
 * GetModel is in coord_download.c.
 *
 * Runs on the transport's admin pool (no client call can occupy it).
 * May call: engine.h, coord_state.c (history, state), coord_publish.c (the
 * optimizer's text), coord_eval.c (evaluation records), coord_async.c (async
 * status and buffer records), audit.h, coord_ha.c (a replica's election and
 * etcd health), coord_status_ha.c (the replicas and aggregators on etcd).
 */
#include "coordinator/coordinator.h"
#include "coordinator/leader.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/refusals.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/watermark.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"

void coord_h_status(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  coord_audit_peer(c, call, fc_scall_peer(call));
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  uint32_t live = fc_engine_count_live(c->engine, fc_now_ms());
  uint64_t params = fc_model_numel(&c->model->spec);
  char storage_error[sizeof c->store_err], pause_reason[sizeof c->pause_reason];
  snprintf(storage_error, sizeof storage_error, "%s", c->store_blocked ? c->store_err : "");
  snprintf(pause_reason, sizeof pause_reason, "%s", es.paused ? c->pause_reason : "");
  pthread_mutex_unlock(&c->mu);
  Fedc__V1__StatusResponse r = FEDC__V1__STATUS_RESPONSE__INIT;
  r.round_budget = es.budget;
  r.storage_error = storage_error;
  char sopt[80], dp[384] = "";
  coord_sopt_text(c, sopt, sizeof sopt);
  r.server_optimizer = sopt;
  if (c->cfg.dp_noise_multiplier > 0) {
    pthread_mutex_lock(&c->mu);
    char range[64] = "";
    if (c->cfg.dp_adaptive_quantile > 0)
      snprintf(range, sizeof range, " adaptive in [%.4g, %.4g]", c->cfg.dp_clip_min, c->cfg.dp_clip_max);
    snprintf(dp, sizeof dp, "epsilon %.4g at delta %g after %llu rounds (noise %g, rate %g, clip %.4g%s%s%s)%s%s",
             c->dp_eps, c->cfg.dp_delta, (unsigned long long)c->dp_rounds, c->cfg.dp_noise_multiplier,
             c->cfg.engine.cohort_fraction, (double)c->clip, range,
             c->cfg.dp_target_epsilon > 0 ? ", target " : "",
             c->cfg.dp_target_epsilon > 0 ? "set" : "", c->dp_stop[0] ? "; stopped: " : "", c->dp_stop);
    pthread_mutex_unlock(&c->mu);
    r.dp = dp;
    r.dp_epsilon = c->dp_eps;
  }
  r.federation = c->cfg.federation;
  r.state = (char *)fc_engine_state_name(es.state);
  r.round = es.round;
  r.global_version = es.version;
  r.global_sha256.data = es.sha;
  r.global_sha256.len = FC_SHA256_LEN;
  r.clients_known = es.known;
  r.clients_active = live;
  r.updates_received = es.received;
  r.cohort_size = es.selected;
  r.paused = es.paused;
  r.pause_reason = pause_reason;
  r.rounds_completed = es.completed;
  r.rounds_abandoned = es.abandoned;
  r.uptime_ms = fc_now_ms() - c->started_ms;
  r.model_params = params;
  r.protocol_major = FC_PROTOCOL_MAJOR;
  r.protocol_minor = FC_PROTOCOL_MINOR;
  Fedc__V1__ReplicaStatus rs = FEDC__V1__REPLICA_STATUS__INIT;
  fc_leader_info ri;
  void *ha_lists = NULL;
  if (coord_ha_status(c, &rs, &ri)) { /* --etcd: the election, etcd's health */
    r.replica = &rs;
    ha_lists = coord_status_ha(c, &rs); /* the replicas in etcd, the aggregators' load */
  }
  Fedc__V1__EligibilityStatus el = FEDC__V1__ELIGIBILITY_STATUS__INIT;
  char policy[256];
  coord_elig_status(c, &el, policy, sizeof policy);
  r.eligibility = &el;
  Fedc__V1__AsyncStatus as; /* async mode (coord_async.c) */
  uint32_t as_hist[FC_STALE_BUCKETS];
  char as_fn[48];
  if (c->cfg.engine.async) {
    coord_async_status_pb(c, &as, as_hist, as_fn, sizeof as_fn);
    r.async = &as;
  }
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
  free(ha_lists);
}

void coord_h_rounds(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__RoundsRequest *req = (const Fedc__V1__RoundsRequest *)fc_scall_request(call);
  coord_audit_peer(c, call, fc_scall_peer(call));
  pthread_mutex_lock(&c->mu);
  size_t n = c->nrounds, first = 0;
  if (req->limit && req->limit < n) first = n - req->limit;
  /* Cap the reply well under the client's 4 MiB receive limit (~150 B each). */
  if (n - first > 20000) first = n - 20000;
  size_t k = n - first;
  Fedc__V1__RoundRecord *recs = calloc(k ? k : 1, sizeof *recs);
  Fedc__V1__RoundRecord **ptrs = calloc(k ? k : 1, sizeof *ptrs);
  fc_round_stats *copy = calloc(k ? k : 1, sizeof *copy);
  char *(*blamed)[FC_ROUND_BLAMED_MAX] = calloc(k ? k : 1, sizeof *blamed);
  /* Federated evaluation: each record's, and those due or running. */
  Fedc__V1__EvalRecord *evs = calloc(k ? k : 1, sizeof *evs);
  Fedc__V1__EvalMetric(*evm)[FC_EVAL_METRICS_MAX] = calloc(k ? k : 1, sizeof *evm);
  Fedc__V1__EvalMetric *(*evp)[FC_EVAL_METRICS_MAX] = calloc(k ? k : 1, sizeof *evp);
  coord_anomaly_pb *anp = calloc(k ? k : 1, sizeof *anp);
  Fedc__V1__RoundDrift *drp = calloc(k ? k : 1, sizeof *drp);
  Fedc__V1__RoundAsync *asp = calloc(k ? k : 1, sizeof *asp);
  uint64_t ev_next = 0, ev_due = fc_engine_eval_pending_round(c->engine, &ev_next);
  if (recs && ptrs && copy && k) memcpy(copy, c->rounds + first, k * sizeof *copy);
  pthread_mutex_unlock(&c->mu);
  Fedc__V1__RoundsResponse resp = FEDC__V1__ROUNDS_RESPONSE__INIT;
  size_t from = k, bytes = 0;
  if (!recs || !ptrs || !copy || !blamed || !evs || !evm || !evp || !anp || !drp || !asp) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    goto out;
  }
  for (size_t i = 0; i < k; i++) {
    Fedc__V1__RoundRecord *r = &recs[i];
    const fc_round_stats *s = &copy[i];
    fedc__v1__round_record__init(r);
    r->round = s->round;
    r->outcome = s->completed ? "completed" : "abandoned";
    r->version = s->version;
    r->participants = s->participants;
    r->selected = s->selected;
    r->examples = s->examples;
    r->mean_train_loss = (float)s->mean_loss;
    r->bytes_in = s->bytes_in;
    r->bytes_out = s->bytes_out;
    r->started_unix_ms = s->started_ms;
    r->ended_unix_ms = s->ended_ms;
    if (s->completed) {
      r->sha256.data = (uint8_t *)s->sha;
      r->sha256.len = FC_SHA256_LEN;
    }
    r->reason = (char *)s->reason;
    r->dp_epsilon = s->dp_epsilon;
    r->dp_clip = s->dp_clip;
    r->dp_noise = s->dp_noise;
    r->server_optimizer = (char *)s->server_opt;
    if (s->sa_remaining[0]) {
      r->n_secagg_remaining = 5;
      r->secagg_remaining = (uint32_t *)s->sa_remaining;
    }
    r->secagg_blamed_count = s->sa_nblamed;
    r->n_secagg_blamed = s->sa_nblamed < FC_ROUND_BLAMED_MAX ? s->sa_nblamed : FC_ROUND_BLAMED_MAX;
    for (size_t b = 0; b < r->n_secagg_blamed; b++) blamed[i][b] = (char *)s->sa_blamed[b];
    r->secagg_blamed = blamed[i];
    int pending = s->completed && (s->round == ev_due || s->round == ev_next);
    if (s->eval.outcome || pending) {
      coord_eval_pb(&s->eval, pending, &evs[i], evm[i], evp[i]);
      r->eval = &evs[i];
    }
    if (coord_anomaly_round_pb(s, &anp[i])) r->anomaly = &anp[i].m;
    if (coord_drift_round_pb(s, &drp[i])) r->drift = &drp[i];
    if (coord_async_round_pb(s, &asp[i])) r->async = &asp[i];
    ptrs[i] = r;
  }
  /* The newest records that fit well under the 4 MiB receive limit (names
   * and reasons make some records longer than the estimate above). */
  while (from > 0 && (bytes += protobuf_c_message_get_packed_size(&recs[from - 1].base) + 8) < (3u << 20)) from--;
  resp.n_rounds = k - from;
  resp.rounds = ptrs + from;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
out:
  free(recs);
  free(ptrs);
  free(copy);
  free(blamed);
  free(evs);
  free(evm);
  free(evp);
  free(anp);
  free(drp);
  free(asp);
}

void coord_h_round_control(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__RoundControlRequest *req = (const Fedc__V1__RoundControlRequest *)fc_scall_request(call);
  const fc_peer *peer = fc_scall_peer(call);
  coord_audit_peer(c, call, peer);
  const char *action = req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__PAUSE    ? "pause"
                       : req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__RESUME ? "resume"
                       : req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__START  ? "start"
                                                                               : NULL;
  if (action)
    fc_audit_append(c->audit, "admin", json_pack("{s:s,s:s,s:I}", "name", peer->name, "action", action,
                                                 "extra_rounds", (json_int_t)req->extra_rounds));
  pthread_mutex_lock(&c->mu);
  /* An admin's pause or resume replaces a drift hold's reason (coord_drift.c). */
  if (action) c->pause_reason[0] = 0;
  switch (req->op) {
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__PAUSE: fc_engine_pause(c->engine, 1); break;
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__RESUME: fc_engine_pause(c->engine, 0); break;
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__START:
    fc_engine_pause(c->engine, 0);
    if (req->extra_rounds) fc_engine_add_rounds(c->engine, req->extra_rounds);
    break;
  default:
    pthread_mutex_unlock(&c->mu);
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown round control op", NULL);
    return;
  }
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  coord_state_dirty_locked(c); /* pause and budget survive a restart */
  pthread_mutex_unlock(&c->mu);
  coord_store_sync(c);
  char extra[48] = "", budget[48] = "no round budget";
  if (req->extra_rounds) snprintf(extra, sizeof extra, " (%u more rounds)", req->extra_rounds);
  if (es.budget) snprintf(budget, sizeof budget, "round budget %llu", (unsigned long long)es.budget);
  FC_INFO(MOD, "admin %s: %s%s: %s, %s", peer->name, action, extra, es.paused ? "paused" : "not paused", budget);
  Fedc__V1__RoundControlResponse r = FEDC__V1__ROUND_CONTROL_RESPONSE__INIT;
  r.paused = es.paused;
  r.state = (char *)fc_engine_state_name(es.state);
  r.round_budget = es.budget;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
}

/*
 * coord_driver.c - the driver thread: ticks the round engine every 50 ms (or
 * at once when a stage closed), starts and closes rounds and SecAgg stages,
 * publishes through coord_publish.c, records each round, and retries the
 * state directory while it is failing.
 *
 * Owns: the driver thread's loop (started and joined by coordinator.c).
 * May call: engine.h, coord_secagg.c, coord_eval.c, coord_publish.c, coord_drift.c (the hold),
 * coord_dp.c, coord_state.c, coord_upload.c (cancel uploads of a closed
 * round), coord_limits.c (its tick), coord_async.c (the buffer log), audit.h, metrics.h.
 */
#include "coordinator/coordinator.h"

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

/* Under secure aggregation with DP noise the clients keep their training
 * loss to themselves (UpdateMeta.train_loss 0): the coordinator does not
 * know the round's mean. */
static int train_loss_unknown(const fc_coord *c) { return c->cfg.engine.secagg && c->cfg.dp_noise_multiplier > 0; }

static void record_round_locked(fc_coord *c) {
  const fc_round_stats *r = fc_engine_last_round(c->engine);
  fc_metrics_round(&c->metrics, r->completed, r->reason,
                   r->ended_ms > r->started_ms ? (double)(r->ended_ms - r->started_ms) / 1000.0 : 0, r->bytes_in,
                   r->bytes_out);
  if (coord_history_add(c, r) == 0) {
    coord_sa_remaining(c, c->rounds[c->nrounds - 1].sa_remaining);
    coord_sa_blamed_record(c, &c->rounds[c->nrounds - 1]);
    coord_anomaly_record(c, &c->rounds[c->nrounds - 1]);
    coord_drift_published_locked(c, &c->rounds[c->nrounds - 1]); /* under hold: pauses */
    coord_sopt_text(c, c->rounds[c->nrounds - 1].server_opt, sizeof c->rounds[c->nrounds - 1].server_opt);
    if (c->cfg.dp_noise_multiplier > 0) {
      c->rounds[c->nrounds - 1].dp_epsilon = c->dp_eps;
      c->rounds[c->nrounds - 1].dp_clip = c->dp_round_clip;
      c->rounds[c->nrounds - 1].dp_noise = c->dp_round_noise;
    }
    /* Distributed DP: clients send no training loss (client/runtime.c), so
     * the round's mean is unknown, not 0: NaN, which the history writes as
     * null and `fedc rounds` shows as "-". */
    if (train_loss_unknown(c)) c->rounds[c->nrounds - 1].mean_loss = NAN;
    if (c->history_unsaved < c->nrounds) c->history_unsaved++;
  } else {
    FC_ERROR(MOD, "out of memory: round %llu missing from the history", (unsigned long long)r->round);
  }
  coord_state_dirty_locked(c);
}

static uint64_t es_round(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.round;
}

static int es_state(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.state;
}

/* The round a closing stage belongs to: still running, or just abandoned. */
static uint64_t fc_engine_last_round_or_current(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.state == FC_ENG_WAITING || es.state == FC_ENG_DONE ? fc_engine_last_round(c->engine)->round : es.round;
}

void *coord_driver_main(void *arg) {
  fc_coord *c = arg;
  pthread_mutex_lock(&c->stop_mu);
  while (!c->stopping) {
    pthread_mutex_unlock(&c->stop_mu);
    coord_store_retry(c);
    coord_limits_tick(c, fc_now_ms());
    pthread_mutex_lock(&c->mu);
    /* The privacy budget is a hard limit: no round starts past it, whatever
     * an admin does to the round budget. */
    if (c->dp_stop[0]) fc_engine_stop_budget(c->engine);
    coord_anomaly_apply_locked(c, fc_now_ms());
    int act = fc_engine_tick(c->engine, fc_now_ms());
    if (act == FC_TICK_STARTED) {
      c->agg->ops->round_begin(c->agg);
      coord_anomaly_round_begin_locked(c);
      c->dp_unclipped = 0;
      c->dp_sa_centred = 0;
      /* Fixed at the start: the denominator, the noise split and (under
       * secure aggregation) the clients' noise all use this one. */
      c->dp_round_expected = fc_engine_expected_cohort(c->engine);
      c->dp_round_clip = c->clip;
      c->dp_round_noise = 0;
      fc_engine_status es;
      fc_engine_get_status(c->engine, fc_now_ms(), &es);
      if (c->cfg.engine.async) /* a buffer: no cohort (engine_async.c) */
        FC_INFO(MOD, "round %llu: buffer open for %u updates on model v%llu", (unsigned long long)es.round,
                c->cfg.engine.async_buffer, (unsigned long long)es.version);
      else
        FC_INFO(MOD, "round %llu started: %u of %u live clients selected (model v%llu)",
                (unsigned long long)es.round, es.selected, fc_engine_count_live(c->engine, fc_now_ms()),
                (unsigned long long)es.version);
      /* The round id is spent: persisted by coord_store_sync below, after
       * mu is released. An update that counts in between (async: a task of
       * an older buffer) and a crash before the sync reuse the id after the
       * restart; no update is lost or counted twice (the buffer log is kept
       * by version, not by round id). */
      coord_state_dirty_locked(c);
      coord_calib_begin_locked(c); /* before the replay below stages its updates again */
      if (c->cfg.engine.async) coord_async_started_locked(c); /* a restart mid-buffer: its updates again */
      char why[300];
      if (coord_sa_begin(c, why, sizeof why) != FEDC_OK) {
        fc_engine_finalize_failed(c->engine, why, fc_now_ms());
        act = FC_TICK_ABANDON;
      }
    } else if (act == FC_TICK_SA_CLOSE) {
      int was_masked = es_state(c) == FC_ENG_SA_MASKED;
      act = coord_sa_close(c);
      /* Masked inputs still streaming can never count now. */
      if (was_masked || act == FC_TICK_ABANDON) coord_cancel_uploads(c, fc_engine_last_round_or_current(c));
      if (act == FC_TICK_NONE) act = FC_TICK_SA_CLOSE; /* no wait before the next tick */
    } else if (act == FC_TICK_REPLACED) {
      coord_log_replaced(c);
    }
    if (act == FC_TICK_ABANDON) {
      FC_WARN(MOD, "round %llu abandoned: %s", (unsigned long long)fc_engine_last_round(c->engine)->round,
              fc_engine_abandon_reason(c->engine));
      record_round_locked(c);
      coord_cancel_uploads(c, fc_engine_last_round(c->engine)->round);
      coord_sa_end(c);
      coord_anomaly_abandon_locked(c);
    } else if (act == FC_TICK_AGGREGATE && !c->cfg.engine.async) {
      /* Async: uploads belong to tasks, not to the buffer; one still
       * streaming here is overdue and counts in a later buffer. */
      fc_engine_status es;
      fc_engine_get_status(c->engine, fc_now_ms(), &es);
      coord_cancel_uploads(c, es.round);
    }
    coord_sa_park_wake(c, fc_now_ms(), 0); /* a stage opened, a round ended, or a held poll waited long enough */
    coord_ci_again *again = NULL;
    uint32_t nagain = coord_ci_park_take_locked(c, fc_now_ms(), &again); /* a round opened or ended */
    pthread_mutex_unlock(&c->mu);
    for (uint32_t i = 0; i < nagain; i++) /* a task, DONE, or held again */
      coord_checkin_answer(c, again[i].call, &again[i].q, 1, again[i].until_ms);
    free(again);
    /* After the training tick, so an evaluation's cohort is drawn from the
     * clients not in the round that tick started (coord_eval.c). */
    int ev = coord_eval_drive(c);
    if (ev & COORD_EVAL_HELD) { /* a drift hold from federated evaluation: the pause survives a restart */
      pthread_mutex_lock(&c->mu);
      coord_state_dirty_locked(c);
      pthread_mutex_unlock(&c->mu);
    }
    if (ev) coord_store_sync(c);
    if (act == FC_TICK_ABANDON) {
      const fc_round_stats *lr = NULL;
      pthread_mutex_lock(&c->mu);
      lr = fc_engine_last_round(c->engine);
      json_t *f = json_pack("{s:I,s:s}", "round", (json_int_t)lr->round, "reason", fc_engine_abandon_reason(c->engine));
      pthread_mutex_unlock(&c->mu);
      fc_audit_append(c->audit, "round_abandoned", f);
      fc_audit_sync(c->audit); /* once per round */
    }
    if (act == FC_TICK_STARTED || act == FC_TICK_ABANDON) coord_store_sync(c);
    if (act == FC_TICK_AGGREGATE) {
      uint64_t version = 0;
      uint8_t sha[FC_SHA256_LEN];
      char why[300] = "";
      int rc = coord_finalize(c, &version, sha, why, sizeof why);
      pthread_mutex_lock(&c->mu);
      if (rc == FEDC_OK) {
        fc_engine_published(c->engine, version, sha, fc_now_ms());
        coord_dp_check_budget_locked(c);
        const fc_round_stats *r = fc_engine_last_round(c->engine);
        char hex[FC_SHA256_HEX_LEN], loss[32] = "-";
        if (!train_loss_unknown(c)) snprintf(loss, sizeof loss, "%.4f", r->mean_loss);
        FC_INFO(MOD, "round %llu completed: %u updates, %llu examples, loss %s -> model v%llu sha256 %.16s",
                (unsigned long long)r->round, r->participants, (unsigned long long)r->examples, loss,
                (unsigned long long)version, fc_hex(sha, FC_SHA256_LEN, hex));
      } else {
        FC_ERROR(MOD, "finalizing round failed: %s", why);
        fc_audit_append(c->audit, "round_abandoned", json_pack("{s:I,s:s}", "round", (json_int_t)es_round(c), "reason", why));
        fc_engine_finalize_failed(c->engine, why, fc_now_ms());
        /* async: accepted updates are not dropped for a failure that may pass
         * (kept and published again after the backoff) nor by a deposed
         * replica (left to the next leader) */
        if (coord_async_publish_failed(c, rc) || rc == FEDC_ERR_IO) coord_store_failed_locked(c, why);
      }
      record_round_locked(c);
      coord_sa_end(c);
      pthread_mutex_unlock(&c->mu);
      fc_audit_sync(c->audit); /* once per round */
      if (coord_store_sync(c) == FEDC_OK && rc == FEDC_OK) {
        pthread_mutex_lock(&c->mu);
        coord_async_buffer_done(c); /* state.json has the version: the buffer's log is done with */
        if (!c->store_blocked) c->store_backoff_ms = 0;
        pthread_mutex_unlock(&c->mu);
      }
    }
    pthread_mutex_lock(&c->stop_mu);
    if (act == FC_TICK_NONE && !c->stopping) {
      struct timespec ts;
      fc_deadline_after_ms(&ts, 50);
      pthread_cond_timedwait(&c->stop_cv, &c->stop_mu, &ts);
    }
  }
  pthread_mutex_unlock(&c->stop_mu);
  return NULL;
}

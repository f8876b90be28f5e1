/*
 * coord_state.c - the state directory: what survives a restart, and when it
 * is written (state.json, the history lines, retries while the disk fails),
 * and the admin state restored at start.
 *
 * Owns: the state-directory bookkeeping (state_want, history_unsaved,
 * store_blocked and its backoff), under mu; writes under store_mu.
 * Invariant: writes (fsync'd) never run under `mu` (a slow disk must not
 * stall client traffic); under `mu` changes only mark the state dirty.
 * May call: store.h, store_prune.h, engine.h (status), coord_model.c (the
 * history), coord_eval.c (its lines are written after the rounds they
 * evaluate), coord_ha.c (with --etcd: the fence before writing).
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

/* The state directory failed us: stop starting rounds until it works again. */
void coord_store_failed_locked(fc_coord *c, const char *err) {
  uint64_t now = fc_now_ms();
  snprintf(c->store_err, sizeof c->store_err, "%s", err);
  if (!c->store_blocked) {
    /* The backoff keeps growing across rounds that fail the same way (a
     * state.json write may succeed where a model write does not) and starts
     * over only once a round is published. */
    c->store_blocked = 1;
    c->store_backoff_ms = c->store_backoff_ms ? (c->store_backoff_ms * 2 > 60000 ? 60000 : c->store_backoff_ms * 2)
                                              : 1000;
    fc_engine_block(c->engine, 1);
    FC_ERROR(MOD, "%s: no new rounds until the state directory can be written (retrying in %llu ms)", err,
             (unsigned long long)c->store_backoff_ms);
  } else {
    c->store_backoff_ms = c->store_backoff_ms * 2 > 60000 ? 60000 : c->store_backoff_ms * 2;
    FC_WARN(MOD, "%s: still cannot write the state directory (next retry in %llu ms)", err,
            (unsigned long long)c->store_backoff_ms);
  }
  c->store_retry_at = now + c->store_backoff_ms;
}

/*
 * Persisting, outside `mu`. Writes (fsync'd) never run under `mu`: every
 * client handler on the event threads takes it, so a slow or hung disk would
 * stall all traffic. Under `mu`, changes only mark the state dirty (a snapshot
 * with a sequence number) and queue history records; coord_store_sync, under
 * store_mu (one writer at a time), writes the newest snapshot, then the
 * history lines it owes, and takes `mu` only to copy and to account.
 */
void coord_state_dirty_locked(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  int open = es.state != FC_ENG_WAITING && es.state != FC_ENG_DONE;
  fc_store_state *st = &c->state_want;
  memset(st, 0, sizeof *st);
  st->version = es.version;
  memcpy(st->sha, es.sha, FC_SHA256_LEN);
  st->next_round = es.round + (uint64_t)open;
  st->open_round = open ? es.round : 0;
  st->completed = es.completed;
  st->abandoned = es.abandoned;
  st->paused = es.paused;
  if (es.paused) snprintf(st->pause_reason, sizeof st->pause_reason, "%s", c->pause_reason);
  st->budget = es.budget;
  st->config_rounds = c->cfg.engine.rounds;
  c->state_want_seq++;
}

/* --keep-versions: once state.json names `current` on disk, older versions
 * outside the policy go (store_prune.h says why that is safe). A failure
 * costs disk space, not correctness: it is logged, rounds go on. */
static void prune_versions(fc_coord *c, uint64_t current) {
  if (!c->cfg.keep_versions) return;
  fc_prune_stats ps;
  char err[300];
  if (fc_store_prune(c->cfg.state_dir, current, c->cfg.keep_versions, c->cfg.keep_every, &ps, err, sizeof err) !=
      FEDC_OK)
    FC_WARN(MOD, "pruning old model versions: %s", err);
  else if (ps.files)
    FC_DEBUG(MOD, "pruned %llu files (%llu bytes) of model versions before v%llu", (unsigned long long)ps.files,
             (unsigned long long)ps.bytes, (unsigned long long)current);
}

/* Write what is owed: state.json first (a crash before the history line
 * loses that line, never leaves a record of a version the state does not
 * have, see store.h), then the history lines, oldest first. Call without
 * `mu`. On failure the coordinator blocks new rounds (coord_store_failed_locked). */
int coord_store_sync(fc_coord *c) {
  char err[300];
  int rc = FEDC_OK;
  pthread_mutex_lock(&c->store_mu);
  /* A replica on etcd writes the shared state only while it leads (coord_ha.c);
   * what is owed stays owed, and is written by no one if we are deposed. */
  if (c->cfg.leader && (rc = coord_ha_check(c, "writing state.json", err, sizeof err)) != FEDC_OK) {
    pthread_mutex_unlock(&c->store_mu);
    return rc;
  }
  pthread_mutex_lock(&c->mu);
  fc_store_state st = c->state_want;
  uint64_t seq = c->state_want_seq;
  pthread_mutex_unlock(&c->mu);
  if (seq > c->state_written_seq) {
    rc = fc_store_save_state(c->cfg.state_dir, c->cfg.federation, &st, err, sizeof err);
    if (rc == FEDC_OK) c->state_written_seq = seq;
    if (rc == FEDC_OK) prune_versions(c, st.version);
  }
  while (rc == FEDC_OK) {
    fc_round_stats r;
    pthread_mutex_lock(&c->mu);
    int have = c->history_unsaved > 0;
    if (have) r = c->rounds[c->nrounds - c->history_unsaved];
    pthread_mutex_unlock(&c->mu);
    if (!have) break;
    if ((rc = fc_store_append_round(c->cfg.state_dir, &r, err, sizeof err)) != FEDC_OK) break;
    pthread_mutex_lock(&c->mu);
    /* coord_history_add may have moved the window (ROUNDS_KEPT) but not the count
     * of trailing records still owed. */
    if (c->history_unsaved > 0) c->history_unsaved--;
    pthread_mutex_unlock(&c->mu);
  }
  if (rc == FEDC_OK) rc = coord_eval_sync(c, err, sizeof err); /* after the lines of the rounds they evaluate */
  if (rc != FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    coord_store_failed_locked(c, err);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_unlock(&c->store_mu);
  return rc;
}

/* While blocked: retry writing what is owed. Call without `mu`. */
void coord_store_retry(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  int due = c->store_blocked && fc_now_ms() >= c->store_retry_at;
  pthread_mutex_unlock(&c->mu);
  if (!due || coord_store_sync(c) != FEDC_OK) return;
  pthread_mutex_lock(&c->mu);
  c->store_blocked = 0;
  c->store_err[0] = 0;
  fc_engine_block(c->engine, 0);
  pthread_mutex_unlock(&c->mu);
  FC_INFO(MOD, "state directory %s is writable again: rounds resume", c->cfg.state_dir);
}

/* Admin state and counters from state.json (all 0 for a new state), and a
 * record for a round the previous process left open: a crash or a stop
 * mid-round burns that round id, and operators must see no silent gap. */
int coord_restore_admin_state(fc_coord *c, const fc_store_state *st, char *err, size_t errlen) {
  uint64_t budget = c->cfg.engine.rounds, abandoned = st->abandoned;
  if (st->has_budget && st->config_rounds == c->cfg.engine.rounds) {
    budget = st->budget; /* e.g. raised by `fedc round start --rounds N` */
  } else if (st->has_budget && st->budget != c->cfg.engine.rounds) {
    FC_INFO(MOD, "round budget %llu from the configuration replaces the stored %llu (configured before: %llu)",
            (unsigned long long)c->cfg.engine.rounds, (unsigned long long)st->budget,
            (unsigned long long)st->config_rounds);
  }
  if (st->open_round) {
    int recorded = c->nrounds && c->rounds[c->nrounds - 1].round == st->open_round;
    if (!recorded) {
      fc_round_stats r;
      memset(&r, 0, sizeof r);
      r.round = st->open_round;
      r.started_ms = r.ended_ms = fc_now_ms();
      snprintf(r.reason, sizeof r.reason, "%s",
               c->cfg.engine.async ? "coordinator restarted during the buffer: its logged updates carry over to the next"
                                   : "coordinator restarted during the round");
      int rc = fc_store_append_round(c->cfg.state_dir, &r, err, errlen);
      if (rc != FEDC_OK) return rc;
      coord_history_add(c, &r);
      abandoned++;
      FC_WARN(MOD, "round %llu was open when the coordinator stopped: recorded as abandoned",
              (unsigned long long)st->open_round);
    }
  }
  pthread_mutex_lock(&c->mu);
  fc_engine_restore(c->engine, abandoned, st->paused, budget);
  snprintf(c->pause_reason, sizeof c->pause_reason, "%s", st->paused ? st->pause_reason : "");
  coord_state_dirty_locked(c);
  pthread_mutex_unlock(&c->mu);
  int rc = coord_store_sync(c);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "%s", c->store_err);
    return rc;
  }
  if (st->paused && st->pause_reason[0])
    FC_WARN(MOD, "federation is paused (%s): `fedc round resume` continues it", st->pause_reason);
  else if (st->paused)
    FC_WARN(MOD, "federation is paused (by an admin before the restart): `fedc round resume` continues it");
  return FEDC_OK;
}

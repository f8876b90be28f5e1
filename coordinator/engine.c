/*
 * engine.c - the round engine. I/O-free: no sockets, threads or clocks.
 *
 * States and transitions (events in quotes; "tick" carries the time):
 *
 *   WAITING --tick, not paused, budget left, live >= min_clients--> TRAINING
 *       select a cohort: live clients sorted by name, shuffled by
 *       seed+round (reproducible), first k taken. Clients excluded for
 *       repeated offences ("offence": bad secure-aggregation unmask shares)
 *       are neither counted nor taken until their exclusion ends.
 *   TRAINING:
 *       "checkin" by a selected client  -> TRAIN task (marks it picked up)
 *       "checkin" by anyone else        -> WAIT
 *       "upload_begin/commit/abort"     -> counts updates; a commit of the
 *                                          last selected client -> AGGREGATING
 *       tick past pickup deadline       -> clients that never fetched their
 *                                          task are dropped; if too few remain
 *                                          to reach min_updates, replaced (see
 *                                          below); only if none -> ABANDON
 *       "leave" by a member not done    -> dropped (and see below); below
 *                                          min_updates -> ABANDON at next tick
 *       tick past round deadline        -> received >= min_updates ?
 *                                          AGGREGATING : ABANDON
 *   With secure aggregation (cfg.secagg), TRAINING is also the advertise
 *   stage and does not end on uploads: the tick returns SA_CLOSE when the
 *   coordinator said "all in" (sa_ready) or at the round deadline; the
 *   coordinator closes the stage in the SecAgg core (which decides who
 *   dropped) and calls sa_advance (or finalize_failed to abandon):
 *   TRAINING -> SA_SHARE -> SA_MASKED -> SA_CONSISTENCY -> SA_UNMASK
 *   -> AGGREGATING, each later stage with sa_stage_ms to run. Uploads (the
 *   masked inputs) are accepted only in SA_MASKED. With sa_keys_first the
 *   members train during SA_SHARE and SA_MASKED instead, so SA_MASKED runs
 *   until round_ms from the start plus sa_stage_ms.
 *   AGGREGATING --"published"--> WAITING (or DONE when the budget is spent)
 *   AGGREGATING --"finalize_failed"--> ABANDON
 *   ABANDON: the round's updates are discarded (never half-applied), the
 *       round id is burnt, and the next tick selects a fresh cohort -> WAITING.
 *   DONE (check-ins answered DONE, noted for the drain) --"add_rounds"--> WAITING
 *   Any state: "pause" (an admin) or "block" (the coordinator, while its
 *   state directory cannot be written) stops new rounds from starting; a
 *   running round ends normally.
 *
 * Leave and replacement (docs/design.md): a client that said Leave is not
 * live until it checks in again. A member that leaves is replaced by a live
 * client outside the round (drawn from seed, round and draws so far) while
 * the cohort is still picking up or if the round would fall below
 * min_updates, else the cohort shrinks; one that misses pick-up only in the
 * latter case. Only in TRAINING before the deadline, never under Poisson
 * sampling (DP), under SecAgg only while no task (cohort + index: the
 * session) went out; the coordinator then rebuilds the session (tick STARTED).
 *
 * Federated evaluation (engine_eval.c, sharing engine_int.h) runs beside the
 * rounds: a publish may make one due, a check-in may hand out its task
 * (fc_engine_checkin_eval) and a Leave drops its member; it never changes the
 * fields of a training round.
 *
 * Time arithmetic saturates (deadlines of "now + a huge timeout" stay in the
 * future instead of wrapping into the past), and so do the round's counters.
 *
 * Invariants: a round id is used once; a client has at most one upload in
 * progress and one accepted upload per round; uploads are accepted only in
 * TRAINING, for the current round and version, from a selected client that
 * picked up its task, before the round deadline.
 */
#include "coordinator/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "fedc/error.h"

const char *fc_engine_state_name(int s) {
  switch (s) {
  case FC_ENG_WAITING: return "waiting";
  case FC_ENG_TRAINING: return "training";
  case FC_ENG_AGGREGATING: return "aggregating";
  case FC_ENG_DONE: return "done";
  case FC_ENG_SA_SHARE: return "secagg-shares";
  case FC_ENG_SA_MASKED: return "secagg-masked";
  case FC_ENG_SA_CONSISTENCY: return "secagg-consistency";
  case FC_ENG_SA_UNMASK: return "secagg-unmask";
  default: return "?";
  }
}

const char *fc_upload_verdict_text(int v) {
  switch (v) {
  case FC_UP_OK: return "ok";
  case FC_UP_NOT_IN_ROUND: return "client is not in the current round";
  case FC_UP_WRONG_ROUND: return "update is for another round";
  case FC_UP_WRONG_VERSION: return "update is against another model version";
  case FC_UP_DUPLICATE: return "client already uploaded in this round";
  case FC_UP_LATE: return "round deadline passed";
  case FC_UP_BUSY: return "an upload from this client is already in progress";
  case FC_UP_RATE_LIMITED: return "too many upload attempts from this client, retry later";
  case FC_UP_TOO_EARLY: return "secure aggregation: the masked-input stage is not open yet";
  case FC_UP_STALE: return "update is staler than max_staleness";
  case FC_UP_BUFFER_FULL: return "the buffer is full or a version is being published: retry shortly";
  default: return "?";
  }
}

void fc_engine_cfg_defaults(fc_engine_cfg *c) {
  memset(c, 0, sizeof *c);
  c->min_clients = 2;
  c->cohort_size = 10;
  c->cohort_fraction = 0.1;
  c->min_updates = 2;
  c->rounds = 10;
  c->pickup_ms = 30000;
  c->round_ms = 120000;
  c->client_ttl_ms = 30000;
  c->poll_ms = 1000;
  c->seed = 1;
  c->max_clients = 100000;
  c->checkin_rate = 0; /* automatic, from poll_ms */
  c->upload_rate = 0.5;
  c->upload_burst = 10;
  c->stranger_rate = 1;
  c->stranger_burst = 10;
  c->secagg = 0;
  c->sa_stage_ms = 30000;
  c->offence_limit = 2;
  c->offence_exclude_s = 3600;
  c->eval_fraction = 0.1;
  c->eval_min = 2;
  c->eval_ms = 120000;
  c->pace = 1;
  c->pace_min_rate = 1000;
  c->pace_max_ms = 3600000;
  c->async_concurrency = 10;
  c->async_buffer = 5;
  c->max_staleness = 20;
  c->staleness.kind = FC_STALE_POLY;
  c->staleness.a = 0.5;
}

/* ---- lifecycle ----------------------------------------------------------------- */

int fc_engine_create(const fc_engine_cfg *cfg, uint64_t first_round, uint64_t completed, uint64_t version,
                     const uint8_t sha[FC_SHA256_LEN], fc_engine **out) {
  fc_engine *e = calloc(1, sizeof *e);
  if (!e) return FEDC_ERR_NOMEM;
  e->cfg = *cfg;
  if (e->cfg.min_updates < 1) e->cfg.min_updates = 1;
  if (e->cfg.checkin_rate == 0) {
    /* A client checks in once per poll interval while it waits: allow twice
     * that, and bursts (reconnects, a task picked up) of 20 + 4 s' worth. */
    uint32_t poll = e->cfg.poll_ms ? e->cfg.poll_ms : 1000;
    e->cfg.checkin_rate = 2000.0 / poll;
    if (e->cfg.checkin_rate < 2) e->cfg.checkin_rate = 2;
  }
  if (e->cfg.checkin_burst < 1) e->cfg.checkin_burst = 20 + 4 * e->cfg.checkin_rate;
  if (e->cfg.upload_burst < 1) e->cfg.upload_burst = 1;
  if (e->cfg.stranger_burst < 1) e->cfg.stranger_burst = 1;
  if (e->cfg.eval_min < 1) e->cfg.eval_min = 1;
  e->next_round = first_round ? first_round : 1;
  e->completed = completed;
  e->budget = cfg->rounds;
  e->version = version;
  memcpy(e->sha, sha, FC_SHA256_LEN);
  e->state = (e->budget && e->completed >= e->budget) ? FC_ENG_DONE : FC_ENG_WAITING;
  if (eng_grow_slots(e) != FEDC_OK) {
    free(e);
    return FEDC_ERR_NOMEM;
  }
  *out = e;
  return FEDC_OK;
}

void fc_engine_destroy(fc_engine *e) {
  if (!e) return;
  free(e->recs);
  free(e->slots);
  free(e);
}

static uint32_t count_live(const fc_engine *e, uint64_t now) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs; i++) n += eng_is_live(e, &e->recs[i], now);
  return n;
}

static int cmp_rec_name(const void *a, const void *b) {
  return strcmp(((const client_rec *)a)->name, ((const client_rec *)b)->name);
}

static void end_round_stats(fc_engine *e, int completed, uint64_t now) {
  fc_round_stats *s = &e->last;
  memset(s, 0, sizeof *s);
  s->round = e->round;
  s->completed = completed;
  s->selected = e->selected;
  s->participants = e->counted ? e->counted : e->received;
  s->examples = e->examples;
  s->mean_loss = e->received ? e->loss_sum / e->received : 0;
  s->bytes_in = e->bytes_in;
  s->bytes_out = e->bytes_out;
  s->started_ms = e->started_ms;
  s->ended_ms = now;
  s->expected = e->expected;
  if (e->cfg.async) { /* a buffer (engine_async.c) */
    s->async = 1;
    memcpy(s->stale_hist, e->a_hist, sizeof s->stale_hist);
    s->concurrency = e->cfg.async_concurrency;
    s->training = e->a_training;
  }
}

static void abandon(fc_engine *e, const char *why, uint64_t now) {
  end_round_stats(e, 0, now);
  snprintf(e->last.reason, sizeof e->last.reason, "%s", why);
  snprintf(e->abandon_reason, sizeof e->abandon_reason, "%s", why);
  e->abandoned++;
  e->state = FC_ENG_WAITING;
}

/* Select the cohort for a new round (see the file comment). */
static void start_round(fc_engine *e, uint64_t now) {
  /* Sort by name so the choice depends on who is live, not on arrival order. */
  qsort(e->recs, e->nrecs, sizeof *e->recs, cmp_rec_name);
  if (eng_rebuild_slots(e, e->nslots) != FEDC_OK) return; /* the index follows the new order */
  uint32_t *live = malloc((e->nrecs ? e->nrecs : 1) * sizeof *live);
  if (!live) return;
  uint32_t nlive = 0;
  for (uint32_t i = 0; i < e->nrecs; i++)
    if (eng_selectable(e, &e->recs[i], now)) live[nlive++] = i;
  uint32_t k = e->cfg.cohort_size;
  if (!k) k = (uint32_t)(e->cfg.cohort_fraction * eng_pace_base(e, nlive, now) + 0.999999);
  if (k < e->cfg.min_updates) k = e->cfg.min_updates;
  if (k > nlive) k = nlive;
  fc_rng rng;
  e->expected = 0;
  if (e->cfg.poisson) {
    /* Poisson subsampling (what the DP accountant assumes): each live
     * client independently with probability q, from secret randomness. */
    fc_rng_seed(&rng, e->cfg.sample_secret ^ (e->next_round * 0xD1B54A32D192ED03ull));
    k = 0;
    for (uint32_t i = 0; i < nlive; i++)
      if (fc_rng_uniform_double(&rng) < e->cfg.cohort_fraction) live[k++] = live[i];
    e->expected = e->cfg.cohort_fraction * nlive;
  } else {
    fc_rng_seed(&rng, e->cfg.seed * 0x9E3779B97F4A7C15ull + e->next_round);
    fc_rng_shuffle_u32(&rng, live, nlive);
  }
  e->round = e->next_round++;
  for (uint32_t i = 0; i < k; i++) {
    client_rec *r = &e->recs[live[i]];
    r->round = e->round;
    r->rstate = CR_SELECTED;
  }
  free(live);
  e->selected = k;
  e->tasked = e->received = e->uploading = 0;
  e->examples = e->bytes_in = e->bytes_out = 0;
  e->counted = 0;
  e->loss_sum = 0;
  e->started_ms = now;
  e->sa_ready = 0;
  e->lost = e->replaced = e->missed = e->added = 0;
  e->sa_reselect = 0;
  e->pickup_deadline = eng_add_sat(now, e->cfg.pickup_ms);
  e->deadline = eng_add_sat(now, e->cfg.round_ms);
  e->state = FC_ENG_TRAINING;
}

/* ---- replacement (see the file comment) ---------------------------------------- */

static int replace_allowed(const fc_engine *e, uint64_t now) {
  return e->state == FC_ENG_TRAINING && now < e->deadline && !e->cfg.poisson && (!e->cfg.secagg || e->tasked == 0);
}

static int outside_round(const fc_engine *e, const client_rec *r, uint64_t now) {
  return eng_selectable(e, r, now) && (r->round != e->round || r->rstate == CR_NONE);
}

/* Draw a live client outside the round into the cohort (selected, with a
 * pick-up window of its own); NULL if there is none. O(clients). */
static client_rec *add_replacement(fc_engine *e, uint64_t now) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs; i++) n += outside_round(e, &e->recs[i], now);
  if (!n) return NULL;
  fc_rng rng;
  fc_rng_seed(&rng, (e->cfg.seed * 0x9E3779B97F4A7C15ull + e->round) ^ (0xA24BAED4963EE407ull * (e->replaced + 1)));
  uint32_t pick = (uint32_t)fc_rng_below(&rng, n);
  for (uint32_t i = 0; i < e->nrecs; i++) {
    client_rec *r = &e->recs[i];
    if (!outside_round(e, r, now) || pick-- > 0) continue;
    r->round = e->round;
    r->rstate = CR_SELECTED;
    e->selected++;
    e->replaced++;
    uint64_t until = eng_add_sat(now, e->cfg.pickup_ms);
    if (until > e->deadline) until = e->deadline;
    if (until > e->pickup_deadline) e->pickup_deadline = until;
    if (e->cfg.secagg) e->sa_reselect = 1;
    return r;
  }
  return NULL;
}

/* ---- events ---------------------------------------------------------------------- */

static uint64_t client_seed(const fc_engine *e, const char *name) {
  return (e->cfg.seed * 0x9E3779B97F4A7C15ull) ^ (e->round * 0xBF58476D1CE4E5B9ull) ^ eng_hash_name(name);
}

/* The check-in (fc_engine_checkin* in engine_elig.c come here). */
int eng_checkin(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate, uint64_t last_round,
                uint64_t now_ms, fc_task_info *task, fc_eval_info *etask, uint32_t *retry_ms, char *why, size_t whylen,
                int held) {
  client_rec *r = held ? eng_find(e, client) : eng_find_or_add(e, client);
  if (!r && held) { /* forgotten while held (the client table made room): a plain WAIT, it checks in again */
    *retry_ms = e->cfg.poll_ms;
    return FC_CHECKIN_WAIT;
  }
  if (!r) {
    if (eng_stranger_token(e, now_ms)) return FC_CHECKIN_REFUSED;
    *retry_ms = e->retry_ms;
    return FC_CHECKIN_RATE_LIMITED;
  }
  /* A held check-in asked once: answering it again spends no second token. */
  if (!held &&
      !eng_take_token(&r->checkin_tokens, &r->checkin_at, e->cfg.checkin_rate, e->cfg.checkin_burst, now_ms, retry_ms)) {
    e->retry_ms = *retry_ms;
    if (*retry_ms > e->max_retry_ms) e->max_retry_ms = *retry_ms;
    return FC_CHECKIN_RATE_LIMITED;
  }
  /* Asked again for a held call: the client may have gone since (a held
   * call has no batch, so nothing tells us): its liveness and a Leave stand
   * as they were; a client that left is only told to wait. */
  if (held && r->left) {
    *retry_ms = e->cfg.poll_ms;
    return FC_CHECKIN_WAIT;
  }
  if (!held) {
    if (!eng_is_live(e, r, now_ms) || r->last_seen == 0) e->live_dirty = 1;
    r->last_seen = now_ms;
    r->left = 0;
  }
  *retry_ms = e->cfg.poll_ms;
  if (e->cfg.poll_ms > e->max_retry_ms) e->max_retry_ms = e->cfg.poll_ms;
  r->ev_capable = etask && can_evaluate;
  eng_elig_note(e, r, dev, why, whylen);
  /* Ineligible: no task (engine_elig.c), unless it is training in this round already. */
  if (r->inelig && e->state != FC_ENG_DONE &&
      !(e->state == FC_ENG_TRAINING && r->round == e->round && (r->rstate == CR_TASKED || r->rstate == CR_UPLOADING))) {
    *retry_ms = eng_pace_retry(e, r, now_ms);
    return FC_CHECKIN_INELIGIBLE;
  }
  int ev = etask ? eng_eval_checkin(e, r, last_round, now_ms, etask, retry_ms) : 0;
  if (ev) return ev;
  if (e->state == FC_ENG_DONE) {
    r->heard_done = 1;
    return FC_CHECKIN_DONE;
  }
  if (e->cfg.async) return eng_async_checkin(e, r, now_ms, task, retry_ms);
  if (e->sa_reselect && e->state == FC_ENG_TRAINING && r->round == e->round && r->rstate == CR_SELECTED) {
    /* The SecAgg session is being rebuilt for the new cohort: no task yet. */
    *retry_ms = e->cfg.poll_ms < 100 ? e->cfg.poll_ms : 100;
    return FC_CHECKIN_WAIT;
  }
  if (e->state == FC_ENG_TRAINING && r->round == e->round &&
      (r->rstate == CR_SELECTED || r->rstate == CR_TASKED || r->rstate == CR_UPLOADING) && now_ms < e->deadline) {
    if (r->rstate == CR_SELECTED) {
      r->rstate = CR_TASKED;
      e->tasked++;
      *retry_ms = eng_pace_retry(e, r, now_ms); /* its slot after the round (engine_pace.c) */
    } else if (r->next_due > now_ms) {
      *retry_ms = (uint32_t)(r->next_due - now_ms);
    }
    /* A client that reconnects mid-round gets its task again and resumes. */
    task->round = e->round;
    task->version = e->version;
    memcpy(task->sha, e->sha, FC_SHA256_LEN);
    task->deadline_ms = e->deadline;
    task->client_seed = client_seed(e, client);
    return FC_CHECKIN_TRAIN;
  }
  /* Not needed now: when to come back (engine_pace.c); a held re-ask takes
   * no pace slot (the client asked once). */
  *retry_ms = held ? e->cfg.poll_ms : eng_pace_retry(e, r, now_ms);
  return FC_CHECKIN_WAIT;
}

uint32_t fc_engine_retry_ms(const fc_engine *e) { return e->retry_ms; }

static int upload_begin(fc_engine *e, const char *client, uint64_t round, uint64_t version, uint64_t now_ms,
                        int relayed) {
  client_rec *r = eng_find(e, client);
  uint32_t wait = 0;
  if (!r) { /* never checked in: it cannot be in a round */
    if (!relayed && !eng_stranger_token(e, now_ms)) return FC_UP_RATE_LIMITED;
    return e->state == eng_upload_state(e) && round != e->round ? FC_UP_WRONG_ROUND : FC_UP_NOT_IN_ROUND;
  }
  if (!relayed &&
      !eng_take_token(&r->upload_tokens, &r->upload_at, e->cfg.upload_rate, e->cfg.upload_burst, now_ms, &wait)) {
    e->retry_ms = wait;
    return FC_UP_RATE_LIMITED;
  }
  if (relayed && !e->cfg.async && r->left_round == e->round && r->rstate == CR_DROPPED && r->round == e->round &&
      round == e->round &&
      e->state == FC_ENG_TRAINING && version == e->version && now_ms < e->deadline && r->last_done != round) {
    /* Undo fc_engine_leave's drop of a tasked member (a member that never
     * took its task was never assigned an aggregator, so none names it),
     * only when the checks below will take the update: a refused one must
     * leave it dropped, or the round would wait for it again. Keyed on
     * left_round, which a later check-in does not clear: a client restarted
     * after its update reached the aggregator (Leave on SIGTERM, then a
     * check-in) made the leader refuse its aggregator's whole partial, every
     * other member's update with it (a hostile review's finding). */
    r->rstate = CR_TASKED;
    e->tasked++;
    e->selected++;
    if (e->lost) e->lost--;
  }
  r->last_seen = now_ms;
  if (e->cfg.async) return eng_async_upload_begin(e, r, round, version, now_ms);
  if (round && r->last_done == round) return FC_UP_DUPLICATE;
  if (e->state != eng_upload_state(e) || r->round != e->round || r->rstate == CR_NONE || r->rstate == CR_DROPPED) {
    if (r->round == round && r->rstate == CR_DONE) return FC_UP_DUPLICATE;
    if (e->state == eng_upload_state(e) && round != e->round) return FC_UP_WRONG_ROUND;
    if (e->cfg.secagg && eng_running(e->state) && r->round == e->round && round == e->round &&
        e->state < FC_ENG_SA_MASKED)
      return FC_UP_TOO_EARLY;
    return FC_UP_NOT_IN_ROUND;
  }
  if (round != e->round) return FC_UP_WRONG_ROUND;
  if (r->rstate == CR_DONE) return FC_UP_DUPLICATE;
  if (r->rstate == CR_UPLOADING) return FC_UP_BUSY;
  if (r->rstate == CR_SELECTED) return FC_UP_NOT_IN_ROUND; /* never fetched its task */
  if (version != e->version) return FC_UP_WRONG_VERSION;
  if (now_ms >= e->deadline) return FC_UP_LATE;
  r->rstate = CR_UPLOADING;
  e->uploading++;
  return FC_UP_OK;
}

int fc_engine_upload_begin(fc_engine *e, const char *client, uint64_t round, uint64_t version, uint64_t now_ms) {
  return upload_begin(e, client, round, version, now_ms, 0);
}

int fc_engine_upload_begin_relayed(fc_engine *e, const char *client, uint64_t round, uint64_t version,
                                   uint64_t now_ms) {
  return upload_begin(e, client, round, version, now_ms, 1);
}

int fc_engine_upload_commit(fc_engine *e, const char *client, uint64_t round, uint64_t examples, double loss,
                            uint64_t bytes, uint64_t now_ms) {
  client_rec *r = eng_find(e, client);
  if (r && e->cfg.async) return eng_async_upload_commit(e, r, round, examples, loss, bytes, now_ms);
  if (!r || r->round != round || r->rstate != CR_UPLOADING) return FC_UP_NOT_IN_ROUND;
  e->uploading--;
  if (e->state != eng_upload_state(e) || round != e->round || now_ms >= e->deadline) {
    r->rstate = CR_DROPPED;
    return FC_UP_LATE;
  }
  r->rstate = CR_DONE;
  r->last_done = round;
  e->received++;
  e->examples = eng_add_sat(e->examples, examples);
  e->loss_sum += loss;
  e->bytes_in = eng_add_sat(e->bytes_in, bytes);
  return FC_UP_OK;
}

void fc_engine_upload_abort(fc_engine *e, const char *client, uint64_t round, uint64_t now_ms, int client_fault) {
  client_rec *r = eng_find(e, client);
  if (r && e->cfg.async) {
    eng_async_upload_abort(e, r, round, now_ms, client_fault);
    return;
  }
  if (!r || r->round != round || r->rstate != CR_UPLOADING) return;
  e->uploading--;
  if (r->left_round == round && round) {
    /* Taken back by a relayed begin (a member that left after handing its
     * update to an aggregator) whose partial was then refused: dropped again,
     * as fc_engine_leave left it, or the round would wait for it. */
    r->rstate = CR_DROPPED;
    e->tasked--;
    e->selected--;
    e->lost++;
    return;
  }
  r->rstate = CR_TASKED; /* may try again while the round is open */
}

int fc_engine_in_round(fc_engine *e, const char *client) {
  client_rec *r = eng_find(e, client);
  if (r && e->cfg.async) return r->rstate == CR_TASKED || r->rstate == CR_UPLOADING; /* any buffer's task */
  return e->state == FC_ENG_TRAINING && r && r->round == e->round &&
         (r->rstate == CR_SELECTED || r->rstate == CR_TASKED || r->rstate == CR_UPLOADING);
}

void fc_engine_add_bytes_out(fc_engine *e, uint64_t bytes) { e->bytes_out = eng_add_sat(e->bytes_out, bytes); }

/* r stops taking part in the running round (it left, or gave its task up):
 * dropped from the cohort if it had not uploaded, and perhaps replaced;
 * `idle` if there was nothing to drop. */
static int drop_member(fc_engine *e, client_rec *r, uint64_t now_ms, fc_leave_info *info, int idle) {
  if (e->cfg.async) return eng_async_leave(e, r, now_ms, info) ? FC_LEAVE_DROPPED : idle;
  /* After the advertise stage (SecAgg) or once aggregating, the SecAgg core
   * and the deadlines deal with a member that is gone. */
  if (e->state != FC_ENG_TRAINING || r->round != e->round) return idle;
  switch (r->rstate) {
  case CR_SELECTED: break;
  case CR_UPLOADING: /* a stream it goes on with commits nothing: refused as not in the round */
    e->uploading--;
    /* fall through */
  case CR_TASKED: e->tasked--; break;
  default: return idle; /* its update already counts, or it was dropped before */
  }
  info->round = e->round;
  if (r->rstate != CR_SELECTED) r->left_round = e->round; /* it held its task: an aggregator may have its update */
  r->rstate = CR_DROPPED;
  e->selected--;
  e->lost++;
  info->selected = e->selected;
  /* While the cohort is still picking up, a replacement costs the round no
   * time; later only one that keeps the round alive is worth the wait. */
  if ((now_ms < e->pickup_deadline || e->selected < e->cfg.min_updates) && replace_allowed(e, now_ms)) {
    client_rec *n = add_replacement(e, now_ms);
    if (n) {
      snprintf(info->replacement, sizeof info->replacement, "%s", n->name);
      info->selected = e->selected;
      return FC_LEAVE_REPLACED;
    }
  }
  return FC_LEAVE_DROPPED;
}

int fc_engine_leave(fc_engine *e, const char *client, uint64_t now_ms, fc_leave_info *info) {
  memset(info, 0, sizeof *info);
  client_rec *r = eng_find(e, client);
  if (!r) return FC_LEAVE_GONE;
  int was_live = eng_is_live(e, r, now_ms);
  r->left = 1;
  eng_eval_leave(e, r);
  return drop_member(e, r, now_ms, info, was_live ? FC_LEAVE_IDLE : FC_LEAVE_GONE);
}

int fc_engine_give_up(fc_engine *e, const char *client, uint64_t round, uint64_t now_ms, fc_leave_info *info) {
  memset(info, 0, sizeof *info);
  client_rec *r = eng_find(e, client);
  /* Only the task it holds: a give-up of an older round (late, or replayed)
   * must not drop it from the round it has since been picked for. */
  if (!r || !round || r->round != round) return FC_LEAVE_GONE;
  return drop_member(e, r, now_ms, info, FC_LEAVE_IDLE);
}

void fc_engine_last_replacement(const fc_engine *e, uint32_t *missed, uint32_t *added) {
  *missed = e->missed;
  *added = e->added;
}

uint32_t fc_engine_done_pending(const fc_engine *e, uint64_t now_ms, const char **names, uint32_t cap) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs; i++) {
    const client_rec *r = &e->recs[i];
    if (!eng_is_live(e, r, now_ms) || r->heard_done) continue;
    if (n < cap) names[n] = r->name;
    n++;
  }
  return n;
}

uint32_t fc_engine_max_retry_ms(const fc_engine *e) {
  return e->max_retry_ms > e->cfg.poll_ms ? e->max_retry_ms : e->cfg.poll_ms;
}

void eng_forget_done(fc_engine *e) {
  for (uint32_t i = 0; i < e->nrecs; i++) e->recs[i].heard_done = 0;
}

int fc_engine_tick(fc_engine *e, uint64_t now_ms) {
  if (e->cfg.async) return eng_async_tick(e, now_ms);
  switch (e->state) {
  case FC_ENG_WAITING:
    if (e->budget && e->completed >= e->budget) {
      e->state = FC_ENG_DONE;
      return FC_TICK_NONE;
    }
    if (e->paused || e->blocked) return FC_TICK_NONE;
    if (!eng_enough_live(e, now_ms, e->cfg.min_clients > e->cfg.min_updates ? e->cfg.min_clients : e->cfg.min_updates))
      return FC_TICK_NONE;
    start_round(e, now_ms);
    return e->state == FC_ENG_TRAINING ? FC_TICK_STARTED : FC_TICK_NONE;
  case FC_ENG_SA_SHARE:
  case FC_ENG_SA_MASKED:
  case FC_ENG_SA_CONSISTENCY:
  case FC_ENG_SA_UNMASK:
    return e->sa_ready || now_ms >= e->deadline ? FC_TICK_SA_CLOSE : FC_TICK_NONE;
  case FC_ENG_TRAINING: {
    if (e->lost && e->selected < e->cfg.min_updates) {
      char why[160];
      snprintf(why, sizeof why, "only %u of the cohort remain after %u left, none replaceable (min_updates %u)",
               e->selected, e->lost, e->cfg.min_updates);
      abandon(e, why, now_ms);
      return FC_TICK_ABANDON;
    }
    if (e->sa_reselect) { /* the coordinator rebuilds the SecAgg session for the new cohort */
      e->sa_reselect = 0;
      return FC_TICK_STARTED;
    }
    if (!e->cfg.secagg && e->received >= e->selected) {
      e->state = FC_ENG_AGGREGATING;
      return FC_TICK_AGGREGATE;
    }
    if (now_ms >= e->pickup_deadline && e->tasked < e->selected) {
      /* Selected clients that never fetched their task are dropped; if too
       * few are left, replaced (with a new pick-up window) rather than the
       * round abandoned. */
      uint32_t missed = 0, added = 0;
      for (uint32_t i = 0; i < e->nrecs; i++) {
        client_rec *r = &e->recs[i];
        if (r->round == e->round && r->rstate == CR_SELECTED) {
          r->rstate = CR_DROPPED;
          missed++;
        }
      }
      e->selected = e->tasked;
      int may = e->tasked < e->cfg.min_updates && replace_allowed(e, now_ms);
      while (may && added < missed && add_replacement(e, now_ms)) added++;
      if (e->selected < e->cfg.min_updates) {
        char why[160];
        snprintf(why, sizeof why, "only %u of the cohort picked up their task%s (min_updates %u)", e->tasked,
                 !may ? "" : added ? " and too few live clients could replace the rest"
                                   : " and no live client could replace the rest",
                 e->cfg.min_updates);
        abandon(e, why, now_ms);
        return FC_TICK_ABANDON;
      }
      if (added) {
        e->missed = missed;
        e->added = added;
        if (e->sa_reselect) {
          e->sa_reselect = 0;
          return FC_TICK_STARTED;
        }
        return FC_TICK_REPLACED;
      }
      if (!e->cfg.secagg && e->received >= e->selected) {
        e->state = FC_ENG_AGGREGATING;
        return FC_TICK_AGGREGATE;
      }
    }
    if (e->cfg.secagg) return e->sa_ready || now_ms >= e->deadline ? FC_TICK_SA_CLOSE : FC_TICK_NONE;
    /* Uploads still in flight at the deadline are late: their commit fails. */
    if (now_ms >= e->deadline) {
      if (e->received >= e->cfg.min_updates) {
        e->state = FC_ENG_AGGREGATING;
        return FC_TICK_AGGREGATE;
      }
      char why[160];
      snprintf(why, sizeof why, "deadline passed with %u of %u updates (min_updates %u)", e->received, e->selected,
               e->cfg.min_updates);
      abandon(e, why, now_ms);
      return FC_TICK_ABANDON;
    }
    return FC_TICK_NONE;
  }
  case FC_ENG_DONE:
    if (!e->budget || e->completed < e->budget) {
      e->state = FC_ENG_WAITING;
      eng_forget_done(e);
    }
    return FC_TICK_NONE;
  default: return FC_TICK_NONE;
  }
}

const char *fc_engine_abandon_reason(const fc_engine *e) { return e->abandon_reason; }

uint32_t fc_engine_offence(fc_engine *e, const char *client, uint64_t now_ms, uint64_t *until) {
  client_rec *r = eng_find(e, client);
  *until = 0;
  if (!r) return 0;
  if (r->offences < UINT32_MAX) r->offences++;
  if (e->cfg.offence_limit && r->offences >= e->cfg.offence_limit && e->cfg.offence_exclude_s) {
    uint64_t ms = e->cfg.offence_exclude_s > UINT64_MAX / 1000 ? UINT64_MAX : e->cfg.offence_exclude_s * 1000;
    r->excluded_until = eng_add_sat(now_ms, ms);
    *until = r->excluded_until;
  }
  return r->offences;
}

int fc_engine_exclude(fc_engine *e, const char *client, uint64_t until) {
  client_rec *r = eng_find(e, client);
  if (!r) return 0;
  if (until > r->excluded_until) r->excluded_until = until;
  return 1;
}

void fc_engine_sa_ready(fc_engine *e) { e->sa_ready = 1; }

int fc_engine_sa_advance(fc_engine *e, uint64_t now_ms) {
  if (!e->cfg.secagg || !eng_running(e->state) || e->state == FC_ENG_AGGREGATING) return FC_TICK_NONE;
  e->sa_ready = 0;
  if (e->state == FC_ENG_SA_UNMASK) {
    e->state = FC_ENG_AGGREGATING;
    return FC_TICK_AGGREGATE;
  }
  e->state = e->state == FC_ENG_TRAINING ? FC_ENG_SA_SHARE : e->state + 1;
  e->deadline = fc_engine_sa_stage_end(&e->cfg, e->state, e->started_ms, now_ms);
  return FC_TICK_NONE;
}

uint64_t fc_engine_sa_stage_end(const fc_engine_cfg *cfg, int stage, uint64_t started_ms, uint64_t open_ms) {
  uint64_t from = open_ms;
  if (cfg->sa_keys_first && stage == FC_ENG_SA_MASKED) {
    /* Keys first: the members are still training; they have until the
     * round's deadline to finish, as the advertise stage gives them
     * otherwise, and a stage after it to send. */
    uint64_t trained_by = eng_add_sat(started_ms, cfg->round_ms);
    if (trained_by > from) from = trained_by;
  }
  return eng_add_sat(from, cfg->sa_stage_ms);
}

void fc_engine_set_examples(fc_engine *e, uint64_t examples) { e->examples = examples; }

void fc_engine_set_counted(fc_engine *e, uint32_t inputs) { e->counted = inputs; }

uint32_t fc_engine_expected(const fc_engine *e) { return eng_running(e->state) ? e->selected : 0; }

uint32_t fc_engine_cohort(const fc_engine *e, const char **out, uint32_t cap) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs && n < cap; i++) {
    const client_rec *r = &e->recs[i];
    if (r->round == e->round && r->rstate != CR_NONE && r->rstate != CR_DROPPED && eng_running(e->state))
      out[n++] = r->name;
  }
  return n;
}

void fc_engine_published(fc_engine *e, uint64_t version, const uint8_t sha[FC_SHA256_LEN], uint64_t now_ms) {
  end_round_stats(e, 1, now_ms);
  e->last.version = version;
  memcpy(e->last.sha, sha, FC_SHA256_LEN);
  e->version = version;
  memcpy(e->sha, sha, FC_SHA256_LEN);
  e->completed++;
  e->state = (e->budget && e->completed >= e->budget) ? FC_ENG_DONE : FC_ENG_WAITING;
  eng_eval_published(e, now_ms);
}

void fc_engine_finalize_failed(fc_engine *e, const char *why, uint64_t now_ms) { abandon(e, why, now_ms); }

uint32_t fc_engine_count_live(const fc_engine *e, uint64_t now_ms) { return count_live(e, now_ms); }

/* The check-in entry points; all end in eng_checkin above. Without a
 * report (dev NULL) a device is judged as one that said nothing. */
int fc_engine_checkin(fc_engine *e, const char *client, uint64_t now_ms, fc_task_info *task, uint32_t *retry_ms) {
  return fc_engine_checkin_eval(e, client, 0, 0, now_ms, task, NULL, retry_ms);
}

int fc_engine_checkin_eval(fc_engine *e, const char *client, int can_evaluate, uint64_t last_round, uint64_t now_ms,
                           fc_task_info *task, fc_eval_info *etask, uint32_t *retry_ms) {
  return eng_checkin(e, client, NULL, can_evaluate, last_round, now_ms, task, etask, retry_ms, NULL, 0, 0);
}

int fc_engine_checkin_device(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate,
                             uint64_t last_round, uint64_t now_ms, fc_task_info *task, fc_eval_info *etask,
                             uint32_t *retry_ms, char *why, size_t whylen) {
  if (why && whylen) why[0] = '\0';
  return eng_checkin(e, client, dev, can_evaluate, last_round, now_ms, task, etask, retry_ms, why, whylen, 0);
}

int fc_engine_checkin_held(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate,
                           uint64_t last_round, uint64_t now_ms, fc_task_info *task, fc_eval_info *etask,
                           uint32_t *retry_ms, char *why, size_t whylen) {
  if (why && whylen) why[0] = '\0';
  return eng_checkin(e, client, dev, can_evaluate, last_round, now_ms, task, etask, retry_ms, why, whylen, 1);
}

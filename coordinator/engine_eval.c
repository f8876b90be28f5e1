/*
 * engine_eval.c - the round engine's federated evaluation: which model is
 * evaluated when, by whom, and whose results count. I/O-free like engine.c
 * (time comes in as now_ms); the coordinator (coord_eval.c) hands out the
 * tasks, keeps the totals and runs the evaluation's SecAgg instance.
 *
 * States (engine.h, enum fc_eval_state; events in quotes):
 *
 *   IDLE --"published" (every eval_every-th completed round, and the last
 *        of the budget)--> PENDING: evaluate version V, the model of round R
 *   PENDING --tick, not paused or blocked, at least eval_min (and under
 *        secure aggregation 3) clients that can evaluate--> RUNNING
 *        cohort: eval_cohort clients (0: eval_fraction of those that can
 *        evaluate), live, not excluded, not yet told DONE, drawn first from
 *        the clients that are NOT in the running training round (sorted by
 *        name, shuffled by seed and draws so far) and only if too few from
 *        its members (they evaluate once their training part is over)
 *   PENDING --tick, too few such clients for eval_ms--> ABANDON
 *   RUNNING: "checkin" by a member -> EVALUATE task (picked up); a member
 *        that still has a training task it has not picked up, for the same
 *        model, trains first (the model it evaluates is the one it has);
 *        for an older model it evaluates first (a client refuses a model
 *        older than one it verified).
 *        plain: "report" counts; all in -> FINISH; tick past pick-up ->
 *        members that never picked up are dropped (no replacement: an
 *        evaluation has no update to wait for, only fewer examples); past
 *        the deadline (eval_ms from the start) -> FINISH with eval_min, else
 *        ABANDON.
 *        secure aggregation: RUNNING is the advertise stage; SA_CLOSE when
 *        all in or at the deadline, then SA_SHARE .. SA_UNMASK each with
 *        sa_stage_ms (fc_engine_eval_sa_advance), reports only in SA_MASKED;
 *        FINISH after the unmask stage.
 *   FINISHING --"finished"--> IDLE (or PENDING with the one that became due
 *        meanwhile).
 *   "published" while PENDING: the pending one is superseded (SKIPPED; the
 *   new model is the current one now); while RUNNING: the new one waits as
 *   next, superseding an older next.
 *   "leave" by a member that has not reported: dropped.
 *
 * Invariants: an evaluation never touches the training round's fields or
 * the model; a client reports at most once per evaluation, only while it is
 * open, for its id and version; reports take from the client's upload
 * bucket (the rate limit of uploads).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "coordinator/engine_int.h"
#include "secagg/secagg.h"

const char *fc_engine_eval_state_name(int s) {
  switch (s) {
  case FC_EV_IDLE: return "idle";
  case FC_EV_PENDING: return "pending";
  case FC_EV_RUNNING: return "running";
  case FC_EV_SA_SHARE: return "secagg-shares";
  case FC_EV_SA_MASKED: return "secagg-masked";
  case FC_EV_SA_CONSISTENCY: return "secagg-consistency";
  case FC_EV_SA_UNMASK: return "secagg-unmask";
  case FC_EV_FINISHING: return "finishing";
  default: return "?";
  }
}

static int ev_open(const eng_eval *v) { return v->state >= FC_EV_RUNNING && v->state <= FC_EV_SA_UNMASK; }
static int ev_report_state(const fc_engine *e) { return e->cfg.secagg ? FC_EV_SA_MASKED : FC_EV_RUNNING; }

/* The client is in the running evaluation's cohort (any part of it). */
static int ev_in(const fc_engine *e, const client_rec *r) {
  return e->ev.state >= FC_EV_RUNNING && r->ev_round == e->ev.round && r->ev_state != EVR_NONE;
}

/* In the running training round, not dropped from it (under secure
 * aggregation it stays busy after its upload, until the unmasking). */
static int in_training(const fc_engine *e, const client_rec *r) {
  return eng_running(e->state) && r->round == e->round && r->rstate != CR_NONE && r->rstate != CR_DROPPED;
}

void eng_eval_published(fc_engine *e, uint64_t now) {
  eng_eval *v = &e->ev;
  if (!e->cfg.eval_every) return;
  int last = e->state == FC_ENG_DONE;
  if (e->completed % e->cfg.eval_every != 0 && !last) return;
  if (v->state == FC_EV_IDLE || v->state == FC_EV_PENDING) {
    if (v->state == FC_EV_PENDING) { /* superseded before it started */
      v->skipped = 1;
      v->skipped_round = v->round;
      v->skipped_version = v->version;
    }
    v->state = FC_EV_PENDING;
    v->round = e->round;
    v->version = e->version;
    memcpy(v->sha, e->sha, FC_SHA256_LEN);
    v->due_ms = now;
    return;
  }
  if (v->has_next) {
    v->skipped = 1;
    v->skipped_round = v->next_round;
    v->skipped_version = v->next_version;
  }
  v->has_next = 1;
  v->next_round = e->round;
  v->next_version = e->version;
  memcpy(v->next_sha, e->sha, FC_SHA256_LEN);
  v->next_due_ms = now;
}

typedef struct named {
  const char *name;
  uint32_t idx;
} named;

static int cmp_named(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

/* Sort by name (arrival order must not matter), then shuffle by seed and
 * draws so far. */
static int order(fc_engine *e, uint32_t *idx, uint32_t n, uint64_t salt) {
  named *t = malloc((n ? n : 1) * sizeof *t);
  if (!t) return 0;
  for (uint32_t i = 0; i < n; i++) t[i].name = e->recs[idx[i]].name, t[i].idx = idx[i];
  qsort(t, n, sizeof *t, cmp_named);
  for (uint32_t i = 0; i < n; i++) idx[i] = t[i].idx;
  free(t);
  fc_rng rng;
  fc_rng_seed(&rng, (e->cfg.seed * 0x9E3779B97F4A7C15ull) ^ (0xD6E8FEB86659FD93ull * (e->ev.draws + 1)) ^ salt);
  fc_rng_shuffle_u32(&rng, idx, n);
  return 1;
}

static int may_evaluate(const fc_engine *e, const client_rec *r, uint64_t now) {
  return r->ev_capable && !r->heard_done && eng_selectable(e, r, now);
}

/* Draw the cohort (file comment). 1 if one was drawn, 0 if too few clients. */
static int draw(fc_engine *e, uint64_t now) {
  eng_eval *v = &e->ev;
  uint32_t *outside = malloc((e->nrecs ? e->nrecs : 1) * sizeof *outside);
  uint32_t *inside = malloc((e->nrecs ? e->nrecs : 1) * sizeof *inside);
  uint32_t no = 0, ni = 0;
  int drawn = 0;
  if (!outside || !inside) goto out;
  for (uint32_t i = 0; i < e->nrecs; i++) {
    const client_rec *r = &e->recs[i];
    if (!may_evaluate(e, r, now)) continue;
    if (in_training(e, r)) inside[ni++] = i;
    else outside[no++] = i;
  }
  uint32_t avail = no + ni, k = e->cfg.eval_cohort;
  if (!k) k = (uint32_t)(e->cfg.eval_fraction * avail + 0.999999);
  uint32_t need = e->cfg.eval_min ? e->cfg.eval_min : 1;
  if (e->cfg.secagg && need < FC_SA_MIN_COHORT) need = FC_SA_MIN_COHORT;
  if (k < need) k = need;
  if (avail < need) goto out;
  if (k > avail) k = avail;
  if (!order(e, outside, no, 1) || !order(e, inside, ni, 2)) goto out;
  v->draws++;
  v->selected = v->tasked = v->received = v->reporting = 0;
  for (uint32_t j = 0; j < k; j++) {
    client_rec *r = &e->recs[j < no ? outside[j] : inside[j - no]];
    r->ev_round = v->round;
    r->ev_state = EVR_SELECTED;
    v->selected++;
  }
  v->started_ms = now;
  v->deadline = eng_add_sat(now, e->cfg.eval_ms);
  v->pickup_deadline = eng_add_sat(now, e->cfg.pickup_ms);
  if (v->pickup_deadline > v->deadline) v->pickup_deadline = v->deadline;
  v->sa_ready = 0;
  v->reason[0] = 0;
  v->state = FC_EV_RUNNING;
  drawn = 1;
out:
  free(outside);
  free(inside);
  return drawn;
}

static int ev_abandon(fc_engine *e, const char *why) {
  snprintf(e->ev.reason, sizeof e->ev.reason, "%s", why);
  e->ev.state = FC_EV_FINISHING; /* the driver records it and calls finished */
  return FC_EVT_ABANDON;
}

int fc_engine_eval_tick(fc_engine *e, uint64_t now) {
  eng_eval *v = &e->ev;
  char why[160];
  if (v->skipped) {
    v->skipped = 0;
    snprintf(v->reason, sizeof v->reason, "superseded by a newer model before its cohort was drawn");
    return FC_EVT_SKIPPED;
  }
  switch (v->state) {
  case FC_EV_PENDING:
    if (e->paused || e->blocked) return FC_EVT_NONE;
    if (draw(e, now)) return FC_EVT_STARTED;
    if (now < eng_add_sat(v->due_ms, e->cfg.eval_ms)) return FC_EVT_NONE;
    snprintf(why, sizeof why, "too few live clients could evaluate within %llu ms (eval_min %u%s)",
             (unsigned long long)e->cfg.eval_ms, e->cfg.eval_min, e->cfg.secagg ? ", secure aggregation 3" : "");
    v->started_ms = now;
    v->selected = v->tasked = v->received = 0;
    return ev_abandon(e, why);
  case FC_EV_RUNNING:
    if (now >= v->pickup_deadline && v->tasked < v->selected) {
      for (uint32_t i = 0; i < e->nrecs; i++) {
        client_rec *r = &e->recs[i];
        if (r->ev_round == v->round && r->ev_state == EVR_SELECTED) r->ev_state = EVR_DROPPED;
      }
      v->selected = v->tasked;
    }
    if (v->selected < e->cfg.eval_min) {
      snprintf(why, sizeof why, "only %u of the cohort picked up their evaluation task (eval_min %u)", v->selected,
               e->cfg.eval_min);
      return ev_abandon(e, why);
    }
    if (e->cfg.secagg) return v->sa_ready || now >= v->deadline ? FC_EVT_SA_CLOSE : FC_EVT_NONE;
    if (v->received >= v->selected && v->reporting == 0) {
      v->state = FC_EV_FINISHING;
      return FC_EVT_FINISH;
    }
    if (now < v->deadline) return FC_EVT_NONE;
    if (v->received >= e->cfg.eval_min) {
      v->state = FC_EV_FINISHING;
      return FC_EVT_FINISH;
    }
    snprintf(why, sizeof why, "deadline passed with %u of %u results (eval_min %u)", v->received, v->selected,
             e->cfg.eval_min);
    return ev_abandon(e, why);
  case FC_EV_SA_SHARE:
  case FC_EV_SA_MASKED:
  case FC_EV_SA_CONSISTENCY:
  case FC_EV_SA_UNMASK: return v->sa_ready || now >= v->deadline ? FC_EVT_SA_CLOSE : FC_EVT_NONE;
  default: return FC_EVT_NONE;
  }
}

int eng_eval_checkin(fc_engine *e, client_rec *r, uint64_t last_round, uint64_t now, fc_eval_info *task,
                     uint32_t *retry_ms) {
  eng_eval *v = &e->ev;
  int member = ev_open(v) && ev_in(e, r) && now < v->deadline &&
               (r->ev_state == EVR_SELECTED || r->ev_state == EVR_TASKED);
  if (!member && e->state == FC_ENG_DONE && (v->state == FC_EV_PENDING || v->has_next) && may_evaluate(e, r, now)) {
    /* The final model's evaluation (due, or waiting for the one running)
     * draws from those not yet told DONE. */
    *retry_ms = e->cfg.poll_ms < 200 ? e->cfg.poll_ms : 200;
    return FC_CHECKIN_WAIT;
  }
  if (!member) return 0;
  /* Training comes first when the client has a training task to resume
   * (and has not given it up: last_round), or one not yet picked up for the
   * same model; an older model is evaluated first (file comment). */
  if (e->state == FC_ENG_TRAINING && r->round == e->round && now < e->deadline && last_round != e->round &&
      (r->rstate == CR_TASKED || r->rstate == CR_UPLOADING ||
       (r->rstate == CR_SELECTED && v->version == e->version && !e->sa_reselect)))
    return 0;
  if (r->ev_state == EVR_SELECTED) {
    r->ev_state = EVR_TASKED;
    v->tasked++;
  }
  fc_engine_eval_get(e, task);
  return FC_CHECKIN_EVAL;
}

void eng_eval_leave(fc_engine *e, client_rec *r) {
  eng_eval *v = &e->ev;
  if (!ev_open(v) || !ev_in(e, r)) return;
  if (r->ev_state == EVR_SELECTED || r->ev_state == EVR_TASKED || r->ev_state == EVR_REPORTING) {
    if (r->ev_state != EVR_SELECTED) v->tasked--;
    if (r->ev_state == EVR_REPORTING) v->reporting--;
    r->ev_state = EVR_DROPPED;
    v->selected--;
  }
}

void fc_engine_eval_get(const fc_engine *e, fc_eval_info *out) {
  const eng_eval *v = &e->ev;
  memset(out, 0, sizeof *out);
  out->state = v->state;
  out->round = v->round;
  out->version = v->version;
  memcpy(out->sha, v->sha, FC_SHA256_LEN);
  out->started_ms = v->started_ms;
  out->deadline_ms = v->deadline;
  out->selected = v->selected;
  out->tasked = v->tasked;
  out->received = v->received;
}

const char *fc_engine_eval_reason(const fc_engine *e) { return e->ev.reason; }

void fc_engine_eval_skipped(const fc_engine *e, uint64_t *round, uint64_t *version) {
  *round = e->ev.skipped_round;
  *version = e->ev.skipped_version;
}

int fc_engine_eval_report_begin(fc_engine *e, const char *client, uint64_t round, uint64_t version, uint64_t now) {
  eng_eval *v = &e->ev;
  client_rec *r = eng_find(e, client);
  uint32_t wait = 0;
  if (!r) return eng_stranger_token(e, now) ? FC_UP_NOT_IN_ROUND : FC_UP_RATE_LIMITED;
  if (!eng_take_token(&r->upload_tokens, &r->upload_at, e->cfg.upload_rate, e->cfg.upload_burst, now, &wait)) {
    e->retry_ms = wait;
    return FC_UP_RATE_LIMITED;
  }
  int member = ev_in(e, r) && r->ev_round == round;
  if (member && r->ev_state == EVR_DONE) return FC_UP_DUPLICATE;
  if (v->state != ev_report_state(e) || !member || r->ev_state == EVR_DROPPED || r->ev_state == EVR_SELECTED) {
    if (ev_open(v) && round != v->round) return FC_UP_WRONG_ROUND;
    if (member && ev_open(v) && v->state < ev_report_state(e)) return FC_UP_TOO_EARLY;
    return FC_UP_NOT_IN_ROUND;
  }
  if (r->ev_state == EVR_REPORTING) return FC_UP_BUSY;
  if (version != v->version) return FC_UP_WRONG_VERSION;
  if (now >= v->deadline) return FC_UP_LATE;
  r->ev_state = EVR_REPORTING;
  v->reporting++;
  return FC_UP_OK;
}

int fc_engine_eval_report_commit(fc_engine *e, const char *client, uint64_t round, uint64_t now) {
  eng_eval *v = &e->ev;
  client_rec *r = eng_find(e, client);
  if (!r || r->ev_round != round || r->ev_state != EVR_REPORTING || v->round != round) return FC_UP_NOT_IN_ROUND;
  v->reporting--;
  if (v->state != ev_report_state(e) || now >= v->deadline) {
    r->ev_state = EVR_DROPPED;
    return FC_UP_LATE;
  }
  r->ev_state = EVR_DONE;
  v->received++;
  return FC_UP_OK;
}

void fc_engine_eval_report_abort(fc_engine *e, const char *client, uint64_t round) {
  client_rec *r = eng_find(e, client);
  if (!r || r->ev_round != round || r->ev_state != EVR_REPORTING || e->ev.round != round) return;
  e->ev.reporting--;
  r->ev_state = EVR_TASKED;
}

int fc_engine_eval_member(const fc_engine *e, const char *client) {
  client_rec *r = eng_find((fc_engine *)e, client);
  return r && ev_open(&e->ev) && ev_in(e, r) && (r->ev_state == EVR_SELECTED || r->ev_state == EVR_TASKED);
}

uint32_t fc_engine_eval_cohort(const fc_engine *e, const char **out, uint32_t cap) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs && n < cap; i++) {
    const client_rec *r = &e->recs[i];
    if (ev_in(e, r) && r->ev_state != EVR_DROPPED) out[n++] = r->name;
  }
  /* recs are in name order only after a training round started: sort. */
  for (uint32_t i = 1; i < n; i++)
    for (uint32_t j = i; j > 0 && strcmp(out[j - 1], out[j]) > 0; j--) {
      const char *t = out[j];
      out[j] = out[j - 1];
      out[j - 1] = t;
    }
  return n;
}

void fc_engine_eval_sa_ready(fc_engine *e) { e->ev.sa_ready = 1; }

uint32_t fc_engine_eval_expected_n(const fc_engine *e) { return ev_open(&e->ev) ? e->ev.selected : 0; }

int fc_engine_eval_sa_advance(fc_engine *e, uint64_t now) {
  eng_eval *v = &e->ev;
  if (!e->cfg.secagg || !ev_open(v)) return FC_EVT_NONE;
  v->sa_ready = 0;
  if (v->state == FC_EV_SA_UNMASK) {
    v->state = FC_EV_FINISHING;
    return FC_EVT_FINISH;
  }
  v->state = v->state == FC_EV_RUNNING ? FC_EV_SA_SHARE : v->state + 1;
  v->deadline = eng_add_sat(now, e->cfg.sa_stage_ms);
  return FC_EVT_NONE;
}

void fc_engine_eval_finished(fc_engine *e, const char *why, uint64_t now) {
  eng_eval *v = &e->ev;
  if (why) snprintf(v->reason, sizeof v->reason, "%s", why);
  v->state = FC_EV_IDLE;
  v->reporting = 0;
  if (v->has_next) {
    v->has_next = 0;
    v->state = FC_EV_PENDING;
    v->round = v->next_round;
    v->version = v->next_version;
    memcpy(v->sha, v->next_sha, FC_SHA256_LEN);
    v->due_ms = now > v->next_due_ms ? now : v->next_due_ms;
  }
}

int fc_engine_eval_busy(const fc_engine *e) { return e->ev.state != FC_EV_IDLE || e->ev.skipped; }

uint64_t fc_engine_eval_pending_round(const fc_engine *e, uint64_t *next) {
  *next = e->ev.has_next ? e->ev.next_round : 0;
  return e->ev.state != FC_EV_IDLE ? e->ev.round : 0;
}

/*
 * engine_async.c - asynchronous buffered aggregation (FedBuff: Nguyen et al.
 * 2022, "Federated Learning with Buffered Asynchronous Aggregation", AISTATS,
 * Algorithm 1), the round engine's second mode (cfg.async). I/O-free like
 * engine.c: no sockets, threads or clocks.
 *
 * Owns: the async half of the engine's events. engine.c hands over every
 * check-in, upload begin/commit/abort, Leave and tick when cfg.async; the
 * client table, rate limits, eligibility, exclusions and evaluation stay in
 * engine.c / engine_*.c and have already run.
 * May call: engine_int.h only.
 *
 * A "round" is a buffer: round id R is buffer R. States:
 *   WAITING --tick, not paused/blocked, budget left (a new federation's
 *       first buffer: min_clients live)--> TRAINING (buffer R open)
 *   TRAINING: "checkin" -> TRAIN (the current version, a deadline of its own,
 *       now + round_ms) while fewer than async_concurrency clients hold a
 *       task (a_training) and the client has no update in the open buffer;
 *       else WAIT. A client that checks in while holding a task gave it up
 *       (the runtime checks in between tasks only): its slot is freed, and
 *       it waits for the next buffer (a task with the same round id is one
 *       the runtime will not take again). So a buffer in which every live
 *       client's update was refused waits for new clients: it has no
 *       deadline of its own (FedBuff's buffers have none).
 *     "upload_begin" from a task-holder of any earlier buffer: staleness
 *       s = current version - the task's version; s > max_staleness is
 *       refused (STALE; the slot is freed); while received + uploading <
 *       async_buffer it streams, holding a place, else BUFFER_FULL (retry
 *       shortly): so a full buffer is never published with a held upload in
 *       flight, and the update that arrives while a version is being
 *       published waits for the next buffer rather than being cut off. A
 *       place is held for at most hold_ms; past it the upload streams on
 *       overdue, without one, and its client holds none for UNHELD_MS (see
 *       "buffer places").
 *     "upload_commit" -> counted in the open buffer (whatever buffer its
 *       task came from); the coordinator folds it with weight
 *       fc_staleness_weight(s) x its example weight (fc_engine_async_weight,
 *       which also says, before the coordinator logs the update, whether the
 *       commit will count it).
 *     tick: tasks past their deadline free their slots (expired); with
 *       async_buffer updates counted -> AGGREGATING (AGGREGATE).
 *   AGGREGATING --"published"--> WAITING (engine.c; DONE once `rounds`
 *       buffers are published), and the next tick opens the next buffer.
 *   Tasks outlive buffers: a client keeps its slot until it uploads, gives
 *   up, leaves (no task of that buffer again either) or its deadline passes, or (async_slot_ms > 0) until its task
 *   is that old: it is then released (counted in a_released, not
 *   a_training) and its update is still taken under the same rules.
 * Invariants: a_training + a_released counts the records TASKED or
 * UPLOADING, a_released those with r->a_released; uploading + a_overdue
 * counts the records UPLOADING, a_overdue those with r->a_overdue; a client
 * has at most one update in each buffer; received + uploading <=
 * async_buffer while no overdue upload has committed into the buffer, and
 * received + uploading <= fc_async_buffer_rows for live commits (overdue
 * ones may commit past async_buffer: a buffer is published at async_buffer
 * or more; a replayed log written under a larger configuration may hold
 * more, and then no live commit counts until it is published).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/engine_int.h"
#include "fedc/error.h"

/* Staleness scaling s(tau) of each update before it joins the buffer
 * (FedBuff, Algorithm 1: the client's delta is scaled by s(tau) with tau its
 * staleness; the paper's experiments use s(tau) = 1/sqrt(1+tau)). The
 * polynomial (1+tau)^-a and hinge families are FedAsync's (Xie, Koyejo and
 * Gupta 2019, "Asynchronous Federated Optimization", the staleness functions
 * of its Sec. 5 / Remark). */
double fc_staleness_weight(const struct fc_staleness_fn *f, uint64_t s) {
  switch (f->kind) {
  case FC_STALE_CONST: return 1.0;
  case FC_STALE_HINGE: return (double)s <= f->b ? 1.0 : 1.0 / (f->a * ((double)s - f->b) + 1.0);
  default: return pow(1.0 + (double)s, -f->a);
  }
}

static int parse_num(const char *p, double *out) {
  char *end = NULL;
  double v = strtod(p, &end);
  if (end == p || !isfinite(v) || v < 0) return 0;
  *out = v;
  return *end == '\0' || *end == ':' ? (int)(end - p) : 0;
}

int fc_staleness_parse(const char *in, struct fc_staleness_fn *out, char *err, size_t errlen) {
  struct fc_staleness_fn f = {FC_STALE_POLY, 0.5, 0, 0};
  const char *p = NULL;
  char text[64];
  int n;
  /* ",fedbuff": the buffer is divided by its examples, not its weights. */
  size_t len = strlen(in), sl = strlen(",fedbuff");
  if (len >= sizeof text) goto bad;
  memcpy(text, in, len + 1);
  if (len > sl && !strcmp(text + len - sl, ",fedbuff")) {
    f.fedbuff = 1;
    text[len - sl] = '\0';
  }
  if (!strcmp(text, "const")) {
    f.kind = FC_STALE_CONST;
  } else if (!strncmp(text, "poly", 4) && (text[4] == '\0' || text[4] == ':')) {
    p = text + 4;
    if (*p == ':' && (!(n = parse_num(p + 1, &f.a)) || p[1 + n] != '\0' || !(f.a > 0))) goto bad;
  } else if (!strncmp(text, "hinge", 5) && (text[5] == '\0' || text[5] == ':')) {
    f.kind = FC_STALE_HINGE;
    f.a = 10;
    f.b = 4;
    p = text + 5;
    if (*p == ':') {
      if (!(n = parse_num(p + 1, &f.a)) || p[1 + n] != ':' || !(f.a > 0)) goto bad;
      p += 1 + n;
      if (!(n = parse_num(p + 1, &f.b)) || p[1 + n] != '\0') goto bad;
    }
  } else {
    goto bad;
  }
  *out = f;
  return FEDC_OK;
bad:
  snprintf(err, errlen,
           "staleness '%.64s': want const, poly[:A] (A > 0; (1+s)^-A) or hinge[:A:B] (A > 0, B >= 0), each "
           "optionally followed by ,fedbuff",
           in);
  return FEDC_ERR_INVALID;
}

void fc_staleness_text(const struct fc_staleness_fn *f, char *buf, size_t n) {
  const char *sfx = f->fedbuff ? ",fedbuff" : "";
  if (f->kind == FC_STALE_CONST) snprintf(buf, n, "const%s", sfx);
  else if (f->kind == FC_STALE_HINGE) snprintf(buf, n, "hinge:%g:%g%s", f->a, f->b, sfx);
  else snprintf(buf, n, "poly:%g%s", f->a, sfx);
}

int fc_stale_bucket(uint64_t s) {
  if (s < 4) return (int)s;
  if (s < 8) return 4;
  if (s < 16) return 5;
  return 6;
}

const char *fc_stale_bucket_name(int i) {
  static const char *names[FC_STALE_BUCKETS] = {"0", "1", "2", "3", "4-7", "8-15", "16+"};
  return i >= 0 && i < FC_STALE_BUCKETS ? names[i] : "?";
}

/* A client refused BUFFER_FULL comes back this soon: the buffer has room
 * again once a publish (tens of ms) or the uploads in flight end. Every
 * wait here holds a slot and makes the update staler. */
#define FULL_RETRY_MS 50

/* When a client told BUFFER_FULL comes back: FULL_RETRY_MS, or poll_ms if
 * shorter, or when paused or blocked (a store failing: no buffer opens soon). */
static uint32_t full_retry_ms(const fc_engine *e) {
  return e->paused || e->blocked || e->cfg.poll_ms < FULL_RETRY_MS ? e->cfg.poll_ms : FULL_RETRY_MS;
}

/* ---- slots ------------------------------------------------------------------------ */

/* Its task ends: it no longer counts against the concurrency, or among the
 * released tasks if it ran past async_slot_ms. */
static void end_task(fc_engine *e, client_rec *r) {
  if (r->a_released) {
    r->a_released = 0;
    if (e->a_released) e->a_released--;
  } else if (e->a_training) {
    e->a_training--;
    e->a_freed++;
  }
}

/* ---- buffer places ------------------------------------------------------------------ */

/* An upload in progress holds a place in the open buffer: the buffer is not
 * published while it streams, and begins past async_buffer are refused
 * BUFFER_FULL, so an honest update is never cut off by a publish. A place
 * is held for at most async_hold_ms (fixed from the model's size, not
 * measured: a measure a client feeds is one it can stretch). Past it the
 * upload streams on without a place (overdue: not in `uploading`; the
 * buffer publishes without it; it counts in whichever buffer is open when
 * it commits, past the held places up to fc_async_buffer_rows, else it is
 * told BUFFER_FULL and may send again). A client whose upload lost its
 * place (past the hold, aborted or left by the client while holding it),
 * or held it for more than half the hold, holds none for UNHELD_MS after
 * that: its uploads begin overdue (refused BUFFER_FULL at begin when the
 * buffer has no room, never waited for). So one client, honest and slow or
 * hostile and trickling, delays a buffer by at most one hold per UNHELD_MS
 * rather than holding the last place forever by stalling and re-beginning
 * (found by a hostile review). */
#define HOLD_DEFAULT_MS 2000
#define UNHELD_MS 600000

static uint64_t hold_ms(const fc_engine *e) {
  return e->cfg.async_hold_ms ? e->cfg.async_hold_ms : HOLD_DEFAULT_MS;
}

/* Its upload ends (commit, abort, refusal): it no longer holds a place, or
 * no longer counts among the overdue. */
static void end_upload(fc_engine *e, client_rec *r) {
  if (r->a_overdue) {
    r->a_overdue = 0;
    if (e->a_overdue) e->a_overdue--;
  } else if (e->uploading) {
    e->uploading--;
  }
}

/* Its upload gives its place up (or never had one: lost = 0, and the
 * penalty is not extended by an upload that held nothing). */
static void make_overdue(fc_engine *e, client_rec *r, uint64_t now, int lost) {
  if (r->a_overdue) return;
  if (e->uploading) e->uploading--;
  r->a_overdue = 1;
  e->a_overdue++;
  e->a_overdue_total++;
  if (lost) r->a_unheld_until = eng_add_sat(now, UNHELD_MS);
}

static void free_slot(fc_engine *e, client_rec *r) {
  if (r->rstate == CR_UPLOADING) end_upload(e, r);
  r->rstate = CR_DROPPED;
  end_task(e, r);
}

/* It gave a task of the open buffer up (checked in while holding it, or
 * left): no task of that buffer again. A runtime does not take a task of
 * the same round id twice; and after Leave, a new task of the same round id
 * would let the late abort of its old stream, still being cut off, meet the
 * new stream's upload (found by a hostile review). */
static void give_up(fc_engine *e, client_rec *r) {
  if (r->round == e->round) r->a_gaveup = e->round;
  free_slot(e, r);
}

static int holds_task(const client_rec *r) { return r->rstate == CR_TASKED || r->rstate == CR_UPLOADING; }

/* Its task ran past its deadline unfinished (the scan below, or a begin or
 * commit that came LATE): the slot is freed and the client gets no task for
 * round_ms. Without the pause one identity that never uploads, knowing its
 * deadline, took the freed slot straight back, again and again (a hostile
 * review: with C = 1 it held the only slot for an hour); a pause for the
 * whole buffer instead (a buffer has no deadline) stalled the federation
 * for good once every client's task expired together (an outage longer than
 * round_ms: a second review). So a hog holds at most about half the time of
 * one slot, and a fleet that timed out comes back after round_ms. */
static void expired(fc_engine *e, client_rec *r, uint64_t now) {
  free_slot(e, r);
  r->a_barred_until = eng_add_sat(now, e->cfg.round_ms);
  e->a_expired++;
}

/* Tasks past their deadline free their slots; tasks past async_slot_ms stop
 * counting against the concurrency but run on (released: a straggler no
 * longer keeps a fast client from a task; its update is still taken if it
 * comes within max_staleness and the deadline). O(clients): at most every
 * 100 ms, and only while some client holds a task. An upload still
 * streaming past its deadline is cut off by the coordinator (its deadline
 * is the task's), whose abort leaves it TASKED for the next scan. */
static void expire(fc_engine *e, uint64_t now) {
  if ((!e->a_training && !e->a_released) || (now >= e->a_scan_at && now - e->a_scan_at < 100)) return;
  e->a_scan_at = now;
  uint64_t hold = e->uploading ? hold_ms(e) : 0;
  for (uint32_t i = 0; i < e->nrecs; i++) {
    client_rec *r = &e->recs[i];
    if (r->rstate == CR_UPLOADING && now < r->a_up_at) r->a_up_at = now; /* the clock stepped back: once */
    if (r->rstate == CR_UPLOADING && !r->a_overdue && now - r->a_up_at >= hold) make_overdue(e, r, now, 1);
    if (r->rstate == CR_TASKED && now >= r->a_deadline) {
      expired(e, r, now);
    } else if (e->cfg.async_slot_ms && holds_task(r) && !r->a_released && now >= r->a_slot_until) {
      r->a_released = 1;
      if (e->a_training) e->a_training--;
      e->a_freed++;
      e->a_released++;
      e->a_released_total++;
    }
  }
}

void eng_async_open(fc_engine *e, uint64_t now) {
  e->round = e->next_round++;
  e->selected = e->tasked = e->received = 0; /* uploading: those in flight carry over (none, by the buffer rule) */
  e->examples = e->bytes_in = e->bytes_out = 0;
  e->counted = 0;
  e->loss_sum = 0;
  e->started_ms = now;
  e->expected = 0;
  e->lost = e->replaced = e->missed = e->added = 0;
  memset(e->a_hist, 0, sizeof e->a_hist);
  e->deadline = UINT64_MAX; /* a buffer has no deadline: each task has its own */
  e->pickup_deadline = UINT64_MAX;
  e->state = FC_ENG_TRAINING;
}

/* ---- steering waiting clients ------------------------------------------------------ */

/* Every concurrency slot taken: when this client should come back. A fleet
 * polling at poll_ms asks far more often than slots free up (100 clients at
 * 200 ms, C = 17: about 415 check-ins a second for about 18 slots, measured
 * at 2 cores' worth of CPU between the clients' and the coordinator's
 * TLS); pace steering (engine_pace.c, Bonawitz et al. 2019 sec. 2.3) spaces
 * the waiting clients' check-ins at STEER_HEADROOM x the rate slots were
 * freed over the last STEER_WINDOW_MS, so a freed slot waits on average
 * about 1 / (2 x STEER_HEADROOM x that rate) for a taker (6 ms at 18 a
 * second), and the check-ins fall to a few per slot (test_engine_async_steer:
 * headroom 3 cut them 6.7x and the updates counted by 5.6%, 5 by 4.2x and
 * 3%, 8 by 2.7x and 1.3%). Until a window was measured (the first seconds),
 * and while the fleet polling at poll_ms asks less often than that, clients
 * are told poll_ms as before (small fleets never see steering). */
#define STEER_HEADROOM 5.0
#define STEER_WINDOW_MS 2000
#define STEER_MIN_RATE 5.0 /* check-ins a second: never steered below (a fleet whose slots stopped freeing) */

/* Milliseconds from now until `until` (> now), as a retry time. */
static uint32_t ms_until(uint64_t until, uint64_t now) {
  uint64_t left = until - now;
  return left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

static uint32_t steer(fc_engine *e, client_rec *r, uint64_t now) {
  /* Back before the time it was told: told that time again, and the shared
   * schedule does not move. Re-placing it would push the cursor on by a slot
   * per early check-in, and one identity asking faster than the slots' rate
   * would push every honest waiter's slot into the future while freed slots
   * sat idle (a hostile review measured 53% fewer honest updates with one
   * such client at poll_ms 200). */
  if (r->next_due > now) return ms_until(r->next_due, now);
  if (!e->a_rate_at || now < e->a_rate_at) {
    e->a_rate_at = now ? now : 1;
    e->a_freed_mark = e->a_freed;
  } else if (now - e->a_rate_at >= STEER_WINDOW_MS) {
    double freed = (double)(e->a_freed - e->a_freed_mark) * 1000.0 / (double)(now - e->a_rate_at);
    e->a_rate_at = now;
    e->a_freed_mark = e->a_freed;
    e->a_steer_rate = freed > 0 ? fmax(STEER_HEADROOM * freed, STEER_MIN_RATE) : 0;
  }
  double rate = e->cfg.pace ? e->a_steer_rate : 0;
  return rate > 0 ? eng_pace_place(e, r, now, rate) : e->cfg.poll_ms;
}

/* ---- events ----------------------------------------------------------------------- */

int eng_async_checkin(fc_engine *e, client_rec *r, uint64_t now, fc_task_info *task, uint32_t *retry_ms) {
  *retry_ms = e->cfg.poll_ms;
  if (r->rstate == CR_UPLOADING) return FC_CHECKIN_WAIT; /* its update is streaming */
  if (r->rstate == CR_TASKED) give_up(e, r); /* its update was refused, or it restarted */
  /* Not this buffer's task again: a runtime whose update was refused does
   * not take a task of the same round id twice (it would hold the slot). */
  if (r->a_gaveup == e->round) return FC_CHECKIN_WAIT;
  if (r->a_barred_until > now) { /* its last task expired (expired()) */
    *retry_ms = ms_until(r->a_barred_until, now);
    return FC_CHECKIN_WAIT;
  }
  if (e->state != FC_ENG_TRAINING || e->paused || e->blocked || r->excluded_until > now)
    return FC_CHECKIN_WAIT;
  if (r->a_buf == e->round || e->a_training >= e->cfg.async_concurrency) {
    *retry_ms = steer(e, r, now);
    return FC_CHECKIN_WAIT;
  }
  r->round = e->round;
  r->rstate = CR_TASKED;
  r->next_due = 0; /* a time it was told before this task is past */
  r->a_version = e->version;
  r->a_deadline = eng_add_sat(now, e->cfg.round_ms);
  r->a_slot_until = eng_add_sat(now, e->cfg.async_slot_ms);
  r->a_released = 0;
  e->a_training++;
  e->selected++;
  e->tasked++;
  task->round = e->round;
  task->version = e->version;
  memcpy(task->sha, e->sha, FC_SHA256_LEN);
  task->deadline_ms = r->a_deadline;
  task->client_seed = (e->cfg.seed * 0x9E3779B97F4A7C15ull) ^ (e->round * 0xBF58476D1CE4E5B9ull) ^ eng_hash_name(r->name);
  return FC_CHECKIN_TRAIN;
}

int eng_async_upload_begin(fc_engine *e, client_rec *r, uint64_t round, uint64_t version, uint64_t now) {
  if (r->rstate == CR_UPLOADING && r->round == round) return FC_UP_BUSY;
  if (r->rstate != CR_TASKED || r->round != round) {
    if (round && r->last_done == round) return FC_UP_DUPLICATE;
    return r->rstate == CR_TASKED ? FC_UP_WRONG_ROUND : FC_UP_NOT_IN_ROUND;
  }
  if (version != r->a_version || version > e->version) return FC_UP_WRONG_VERSION;
  if (now >= r->a_deadline) {
    expired(e, r, now);
    return FC_UP_LATE;
  }
  if (e->state == FC_ENG_DONE) {
    free_slot(e, r);
    return FC_UP_NOT_IN_ROUND;
  }
  uint64_t s = e->version - version;
  if (s > e->cfg.max_staleness) {
    snprintf(e->a_why, sizeof e->a_why,
             "update trained from version %llu is %llu versions behind the current version %llu (max staleness %u)",
             (unsigned long long)version, (unsigned long long)s, (unsigned long long)e->version,
             e->cfg.max_staleness);
    free_slot(e, r);
    e->a_stale_refused++;
    return FC_UP_STALE;
  }
  /* A client without a hold (its last upload lost its place) streams
   * without one: never waited for. */
  int unheld = now < r->a_unheld_until;
  if (e->state != FC_ENG_TRAINING || e->received + e->uploading >= e->cfg.async_buffer) {
    /* "Come back shortly" is ours, not the client's doing: the attempt's
     * upload token is given back, so waiting out a publish never turns
     * into RATE_LIMITED for an honest client. Only to a client that came
     * back no earlier than it was told (or was never told): one that
     * hammers pays a token per attempt like any other, so a full buffer
     * is no way around the upload rate limit. */
    if (e->cfg.upload_rate > 0 && now >= r->a_full_retry_at && r->upload_tokens + 1 <= e->cfg.upload_burst)
      r->upload_tokens += 1;
    e->retry_ms = full_retry_ms(e);
    r->a_full_retry_at = eng_add_sat(now, e->retry_ms);
    return FC_UP_BUFFER_FULL;
  }
  r->rstate = CR_UPLOADING;
  r->a_stale = s;
  r->a_up_at = now;
  e->uploading++;
  if (unheld) make_overdue(e, r, now, 0);
  return FC_UP_OK;
}

/* What a commit of r's upload for `round` at now gets, the commit and
 * fc_engine_async_weight alike: OK; NOT_IN_ROUND (not uploading that task);
 * LATE (past its deadline, or the federation is done); BUFFER_FULL (no
 * buffer open, or its rows all taken: only an overdue upload meets this, a
 * held one keeps its place and its buffer open; it may send again); STALE
 * (overdue, and now more than max_staleness behind: a held upload's
 * versions cannot move). */
static int commit_verdict(fc_engine *e, const client_rec *r, uint64_t round, uint64_t now) {
  if (r->rstate != CR_UPLOADING || r->round != round) return FC_UP_NOT_IN_ROUND;
  if (now >= r->a_deadline || e->state == FC_ENG_DONE) return FC_UP_LATE;
  if (e->state != FC_ENG_TRAINING) return r->a_overdue ? FC_UP_BUFFER_FULL : FC_UP_LATE;
  /* Overdue: counted past the held places, up to the buffer's rows (a
   * robust rule's; the held uploads' places stay theirs). */
  if (r->a_overdue && e->received + e->uploading >= fc_async_buffer_rows(&e->cfg)) return FC_UP_BUFFER_FULL;
  uint64_t s = e->version - r->a_version;
  if (s > e->cfg.max_staleness) {
    snprintf(e->a_why, sizeof e->a_why,
             "update trained from version %llu is %llu versions behind the current version %llu (max staleness %u; "
             "it streamed past its place in the buffer)",
             (unsigned long long)r->a_version, (unsigned long long)s, (unsigned long long)e->version,
             e->cfg.max_staleness);
    return FC_UP_STALE;
  }
  return FC_UP_OK;
}

int eng_async_upload_commit(fc_engine *e, client_rec *r, uint64_t round, uint64_t examples, double loss,
                            uint64_t bytes, uint64_t now) {
  int v = commit_verdict(e, r, round, now);
  if (v != FC_UP_OK) {
    if (v == FC_UP_BUFFER_FULL) { /* overdue, a version being published: it may send again */
      end_upload(e, r);
      r->rstate = CR_TASKED;
      e->retry_ms = full_retry_ms(e);
    } else if (v == FC_UP_LATE && now >= r->a_deadline) {
      expired(e, r, now); /* frees the slot, its upload's place with it */
    } else if (v != FC_UP_NOT_IN_ROUND) {
      if (v == FC_UP_STALE) e->a_stale_refused++;
      free_slot(e, r);
    }
    return v;
  }
  /* A place held for more than half the hold costs the penalty too: a
   * client that ends each upload just inside its hold would otherwise
   * delay every buffer by a hold (third review); it can still delay each
   * buffer by up to half a hold (fourth review: a limit, documented).
   * Honest slow uploads lose little: they count past the held places. */
  if (!r->a_overdue && now > r->a_up_at && now - r->a_up_at > hold_ms(e) / 2)
    r->a_unheld_until = eng_add_sat(now, UNHELD_MS);
  r->a_stale = e->version - r->a_version; /* the same as at begin unless it was overdue */
  end_upload(e, r);
  r->rstate = CR_DONE;
  end_task(e, r);
  r->last_done = round;
  r->a_buf = e->round;
  e->received++;
  e->examples = eng_add_sat(e->examples, examples);
  e->loss_sum += loss;
  e->bytes_in = eng_add_sat(e->bytes_in, bytes);
  e->a_hist[fc_stale_bucket(r->a_stale)]++;
  return FC_UP_OK;
}

void eng_async_upload_abort(fc_engine *e, client_rec *r, uint64_t round, uint64_t now, int client_fault) {
  if (r->rstate != CR_UPLOADING || r->round != round) return;
  if (client_fault && !r->a_overdue) r->a_unheld_until = eng_add_sat(now, UNHELD_MS); /* it abandoned a place */
  end_upload(e, r);
  r->rstate = CR_TASKED; /* may try again until its deadline */
}

int eng_async_leave(fc_engine *e, client_rec *r, uint64_t now, fc_leave_info *info) {
  if (!holds_task(r)) return 0;
  info->round = r->round;
  if (r->rstate == CR_UPLOADING && !r->a_overdue) r->a_unheld_until = eng_add_sat(now, UNHELD_MS); /* left a place */
  give_up(e, r);
  e->lost++;
  info->selected = e->a_training;
  return 1;
}

int eng_async_tick(fc_engine *e, uint64_t now) {
  expire(e, now);
  switch (e->state) {
  case FC_ENG_WAITING:
    if (e->budget && e->completed >= e->budget) {
      e->state = FC_ENG_DONE;
      return FC_TICK_NONE;
    }
    if (e->paused || e->blocked) return FC_TICK_NONE;
    /* A new federation's first buffer waits for min_clients live clients,
     * as a synchronous round does: a fleet still starting up would
     * otherwise fill the first buffers from the few clients that came
     * first. Not after a restart (no round id left unspent): a buffer log
     * is replayed at once, whoever is back. */
    uint32_t need = fc_engine_async_first_wait(e);
    if (need && !eng_enough_live(e, now, need)) return FC_TICK_NONE;
    eng_async_open(e, now);
    return FC_TICK_STARTED;
  case FC_ENG_TRAINING:
    if (e->received >= e->cfg.async_buffer && !e->uploading) {
      e->state = FC_ENG_AGGREGATING;
      return FC_TICK_AGGREGATE;
    }
    return FC_TICK_NONE;
  case FC_ENG_DONE:
    if (!e->budget || e->completed < e->budget) {
      e->state = FC_ENG_WAITING;
      for (uint32_t i = 0; i < e->nrecs; i++) e->recs[i].heard_done = 0;
    }
    return FC_TICK_NONE;
  default: return FC_TICK_NONE;
  }
}

/* ---- queries and restart ---------------------------------------------------------- */

uint32_t fc_engine_async_first_wait(const fc_engine *e) {
  return e->cfg.async && e->next_round <= 1 ? e->cfg.min_clients : 0; /* no round id spent yet */
}

void fc_engine_async_info(const fc_engine *e, fc_async_info *out) {
  memset(out, 0, sizeof *out);
  if (!e->cfg.async) return;
  out->training = e->a_training;
  out->released = e->a_released;
  out->released_total = e->a_released_total;
  int open = e->state == FC_ENG_TRAINING || e->state == FC_ENG_AGGREGATING;
  out->buffered = open ? e->received : 0;
  out->uploading = e->uploading + e->a_overdue;
  out->overdue = e->a_overdue;
  out->overdue_total = e->a_overdue_total;
  if (open) memcpy(out->hist, e->a_hist, sizeof out->hist);
  out->examples = open ? e->examples : 0;
  out->stale_refused = e->a_stale_refused;
  out->expired = e->a_expired;
}

int fc_engine_async_weight(fc_engine *e, const char *client, uint64_t round, uint64_t now, double *weight,
                           uint64_t *staleness) {
  if (!e->cfg.async) {
    *weight = 1.0;
    *staleness = 0;
    return FC_UP_OK;
  }
  client_rec *r = eng_find(e, client);
  /* The commit's own verdict (commit_verdict), so what the caller logs on
   * OK is what the commit then counts: a stream begun for a task the client
   * has since given up (it left and took a new task) is not UPLOADING for
   * this round, and is never logged. */
  if (!r) return FC_UP_NOT_IN_ROUND;
  int v = commit_verdict(e, r, round, now);
  if (v != FC_UP_OK) return v;
  *staleness = e->version - r->a_version;
  *weight = fc_staleness_weight(&e->cfg.staleness, *staleness);
  return FC_UP_OK;
}

uint64_t fc_engine_task_deadline(fc_engine *e, const char *client) {
  client_rec *r = eng_find(e, client);
  if (!e->cfg.async) return e->deadline;
  return r && holds_task(r) ? r->a_deadline : 0;
}

const char *fc_engine_refusal_detail(const fc_engine *e) { return e->a_why; }

int fc_engine_async_replay_check(fc_engine *e, const char *client) {
  /* No room check: a log written under a larger async_buffer is replayed
   * whole (that buffer publishes with more updates) rather than cut. */
  if (!e->cfg.async || e->state != FC_ENG_TRAINING) return FEDC_ERR_INVALID;
  client_rec *r = eng_find_or_add(e, client);
  if (!r) return FEDC_ERR_NOMEM;
  return r->a_buf == e->round ? FEDC_ERR_INVALID : FEDC_OK; /* once per buffer */
}

int fc_engine_async_replay(fc_engine *e, const char *client, uint64_t examples, double loss, uint64_t staleness,
                           uint64_t bytes) {
  int rc = fc_engine_async_replay_check(e, client);
  if (rc != FEDC_OK) return rc;
  client_rec *r = eng_find(e, client);
  r->a_buf = e->round;
  e->received++;
  e->examples = eng_add_sat(e->examples, examples);
  e->loss_sum += loss;
  e->bytes_in = eng_add_sat(e->bytes_in, bytes);
  e->a_hist[fc_stale_bucket(staleness)]++;
  return FEDC_OK;
}

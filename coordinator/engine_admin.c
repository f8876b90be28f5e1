/*
 * engine_admin.c - the round engine's operator controls and its status:
 * pause, block, the round budget (restore after a restart, stop, add rounds)
 * and the snapshot fc_engine_get_status gives the status and metrics
 * endpoints.
 *
 * I/O-free like the rest of the engine (engine.h): no clock, no threads.
 * Owns: e->paused, e->blocked, e->budget (and DONE <-> WAITING when the
 * budget changes between rounds).
 * May call: eng_forget_done (engine.c) and engine_int.h's inline helpers.
 */
#include <string.h>

#include "coordinator/engine.h"
#include "coordinator/engine_int.h"

void fc_engine_pause(fc_engine *e, int paused) { e->paused = paused; }

void fc_engine_block(fc_engine *e, int blocked) { e->blocked = blocked; }

void fc_engine_restore(fc_engine *e, uint64_t abandoned, int paused, uint64_t budget) {
  e->abandoned = abandoned;
  e->paused = paused;
  e->budget = budget;
  if (e->state == FC_ENG_WAITING || e->state == FC_ENG_DONE)
    e->state = (e->budget && e->completed >= e->budget) ? FC_ENG_DONE : FC_ENG_WAITING;
}

void fc_engine_stop_budget(fc_engine *e) {
  if (!e->completed) { /* a budget of 0 would mean unlimited: pause instead */
    e->paused = 1;
    return;
  }
  e->budget = e->completed;
  if (e->state == FC_ENG_WAITING) e->state = FC_ENG_DONE;
}

double fc_engine_expected_cohort(const fc_engine *e) { return e->expected; }

void fc_engine_add_rounds(fc_engine *e, uint64_t extra) {
  if (!e->budget) return; /* unlimited already */
  if (e->budget < e->completed) e->budget = e->completed;
  e->budget = eng_add_sat(e->budget, extra);
  if (e->state == FC_ENG_DONE) {
    e->state = FC_ENG_WAITING;
    eng_forget_done(e);
  }
}

void fc_engine_get_status(const fc_engine *e, uint64_t now_ms, fc_engine_status *st) {
  memset(st, 0, sizeof *st);
  st->state = e->state;
  st->paused = e->paused;
  st->blocked = e->blocked;
  st->round = eng_running(e->state) ? e->round : e->next_round;
  st->version = e->version;
  memcpy(st->sha, e->sha, FC_SHA256_LEN);
  st->known = e->nrecs;
  st->live = 0; /* O(clients): fc_engine_count_live when wanted */
  st->selected = eng_running(e->state) ? e->selected : 0;
  st->received = eng_running(e->state) ? e->received : 0;
  st->completed = e->completed;
  st->abandoned = e->abandoned;
  st->budget = e->budget;
  st->round_started_ms = e->started_ms;
}

const fc_round_stats *fc_engine_last_round(const fc_engine *e) { return &e->last; }

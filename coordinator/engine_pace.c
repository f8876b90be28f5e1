/*
 * engine_pace.c - pace steering (Bonawitz et al. 2019, "Towards Federated
 * Learning at Scale", sec. 2.3): the coordinator tells each device it does
 * not need now when to check in next, so that a large fleet arrives at the
 * rate the rounds need, spread out, instead of every device polling every
 * poll_ms (a million devices polling each second is a million check-ins per
 * second, almost all of them answered "wait").
 *
 * Formula (docs/design.md, "Pace steering"):
 *   N  = live devices (counted at most once a second of engine time),
 *   s  = the share of them eligible at their last check-in,
 *   k  = the cohort (cohort_size, or cohort_fraction x s x N),
 *   w  = 3/4 of the pick-up window: a device due within it is a candidate
 *        for selection (eng_due), since it hears of its selection in time,
 *   R  = pace_rate if set, else max(pace_min_rate, H x k / (w x s)), H = 2
 *        (twice the cohort due in every selection window: Bonawitz et al.
 *        over-select by 30%; this also covers devices that leave or turn
 *        ineligible between check-ins),
 *   W  = N / R, the window each device is told (at most pace_max_ms).
 * Placement: a cursor walks the schedule one slot (1/R s) per answer; a
 * device gets the next free slot (never sooner than poll_ms) plus a jitter
 * uniform within the slot, so answers given together (a fleet that boots at
 * once) are spread out instead of returning together, and the arrival rate
 * is R whatever the arrival pattern was. While the cursor is less than a
 * poll interval ahead of now + poll_ms (check-ins arrive slower than R: a
 * small fleet, N / R <= poll_ms) the answer is poll_ms exactly, as before.
 * In steady state a fleet of N honouring devices keeps the cursor N / R
 * ahead: each device is told W. A population that shrinks
 * lets the cursor fall back toward now; one that grows pushes it out (W
 * follows N without being told). Past pace_max_ms the cursor stops and the
 * rate exceeds R (status shows the window at its cap).
 *
 * Not steered: members of the running round (engine.c answers them
 * before), DP Poisson sampling (the accountant assumes every live client is
 * sampled at the same rate; a device not due could not be), and the last
 * round of the budget (devices must hear DONE before the coordinator's
 * drain ends). Steered waits are not counted in fc_engine_max_retry_ms.
 *
 * A steered device stays live until client_ttl_ms after it was told to
 * return (eng_is_live), and is a selection candidate only when due
 * (eng_selectable). I/O-free: time comes in as now; jitter is drawn from
 * the engine seed and a counter, so runs are reproducible.
 */
#include "coordinator/engine_int.h"

#include <math.h>
#include <string.h>

#define PACE_HEADROOM 2.0     /* H above */
#define PACE_RECOUNT_MS 1000  /* population count at most this often */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static int pace_allowed(const fc_engine *e) {
  if (!e->cfg.pace || e->cfg.poisson || e->state == FC_ENG_DONE) return 0;
  if (e->budget && e->completed + 1 >= e->budget) return 0; /* the last round: everyone must hear DONE */
  return 1;
}

static void recount(fc_engine *e, uint64_t now) {
  if (e->pace_counted_at && now >= e->pace_counted_at && now - e->pace_counted_at < PACE_RECOUNT_MS) return;
  uint32_t live = 0, elig = 0;
  for (uint32_t i = 0; i < e->nrecs; i++) {
    const client_rec *r = &e->recs[i];
    if (!eng_is_live(e, r, now)) continue;
    live++;
    elig += !r->inelig;
  }
  e->pace_counted_at = now ? now : 1;
  e->pace_pop = live;
  e->pace_share = live ? (double)elig / live : 1.0;
}

/* R above (check-ins per second). */
static double target_rate(const fc_engine *e) {
  double share = e->pace_share > 0.01 ? e->pace_share : 0.01;
  if (e->cfg.pace_rate > 0) return e->cfg.pace_rate;
  double k = e->cfg.cohort_size ? e->cfg.cohort_size : ceil(e->cfg.cohort_fraction * share * e->pace_pop);
  if (k < e->cfg.min_updates) k = e->cfg.min_updates;
  if (k < e->cfg.min_clients) k = e->cfg.min_clients;
  double w_s = (double)(e->cfg.pickup_ms - e->cfg.pickup_ms / 4) / 1000.0;
  if (w_s < 0.001) w_s = 0.001;
  double r = PACE_HEADROOM * k / (w_s * share);
  return r > e->cfg.pace_min_rate ? r : e->cfg.pace_min_rate;
}

/* W above in ms (poll_ms when the population polling at poll_ms stays
 * below the target rate); sets *rate. */
static uint64_t window_ms(fc_engine *e, uint64_t now, double *rate) {
  *rate = 0;
  if (!pace_allowed(e)) return e->cfg.poll_ms;
  recount(e, now);
  double r = target_rate(e);
  *rate = r;
  if (!(r > 0)) return e->cfg.poll_ms;
  double w = 1000.0 * e->pace_pop / r;
  if (w <= e->cfg.poll_ms) return e->cfg.poll_ms;
  return w > (double)e->cfg.pace_max_ms ? e->cfg.pace_max_ms : (uint64_t)w;
}

uint32_t eng_pace_retry(fc_engine *e, client_rec *r, uint64_t now) {
  r->next_due = 0;
  if (!pace_allowed(e)) return e->cfg.poll_ms;
  recount(e, now);
  return eng_pace_place(e, r, now, target_rate(e));
}

uint32_t eng_pace_place(fc_engine *e, client_rec *r, uint64_t now, double rate) {
  r->next_due = 0;
  if (!(rate > 0)) return e->cfg.poll_ms;
  double slot_ms = 1000.0 / rate;
  double lo = (double)now + e->cfg.poll_ms, hi = (double)now + (double)e->cfg.pace_max_ms;
  if (e->pace_cursor < lo) e->pace_cursor = lo;
  if (e->pace_cursor > hi) e->pace_cursor = hi; /* past the cap: the rate exceeds R */
  double at = e->pace_cursor;
  e->pace_cursor += slot_ms;
  /* Within a poll interval of "now + poll_ms", the schedule has room: the
   * device polls as before (a small fleet never sees steering). */
  if (at - lo < e->cfg.poll_ms) return e->cfg.poll_ms;
  uint64_t draw = splitmix64(e->cfg.seed ^ (0xD6E8FEB86659FD93ull * ++e->pace_draws));
  at += slot_ms * ((double)(draw >> 11) * 0x1.0p-53); /* jitter within the slot */
  if (at > hi) at = hi;
  double wait = at - (double)now;
  if (wait > 4294967295.0) wait = 4294967295.0;
  r->next_due = now + (uint64_t)wait;
  return (uint32_t)wait;
}

uint32_t eng_pace_base(fc_engine *e, uint32_t candidates, uint64_t now) {
  double rate;
  if (window_ms(e, now, &rate) <= e->cfg.poll_ms) return candidates; /* not steering: every live device is due */
  double pop = e->pace_share * e->pace_pop;
  return pop > candidates ? (uint32_t)pop : candidates;
}

void fc_engine_pace_info(fc_engine *e, uint64_t now_ms, fc_pace_info *out) {
  memset(out, 0, sizeof *out);
  if (e->cfg.async) { /* waiting clients steered by the slots' rate (engine_async.c) */
    recount(e, now_ms);
    out->population = e->pace_pop;
    out->eligible_share = e->pace_share;
    out->target_rate = e->cfg.pace ? e->a_steer_rate : 0;
    double w = out->target_rate > 0 ? 1000.0 * e->pace_pop / out->target_rate : 0;
    out->window_ms = w > e->cfg.poll_ms ? (uint64_t)w : e->cfg.poll_ms;
    out->active = out->window_ms > e->cfg.poll_ms;
    return;
  }
  double rate;
  out->window_ms = window_ms(e, now_ms, &rate);
  if (!pace_allowed(e)) recount(e, now_ms);
  out->population = e->pace_pop;
  out->eligible_share = e->pace_share;
  out->target_rate = rate;
  /* Steering: the population needs it, or a burst pushed the schedule out. */
  out->active = out->window_ms > e->cfg.poll_ms ||
                (pace_allowed(e) && e->pace_cursor > (double)now_ms + 2.0 * e->cfg.poll_ms);
}

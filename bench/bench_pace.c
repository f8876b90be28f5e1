/*
 * bench_pace.c - pace steering (Bonawitz et al. 2019, sec. 2.3) measured on
 * the I/O-free round engine in-process, with a simulated fleet of N devices
 * (default 1,000,000) and synthetic time; one JSON line per figure.
 *
 * Each device boots at a uniform time in the first boot_s seconds, checks
 * in, and then does what it is told: WAIT (or not eligible, or rate
 * limited) -> check in again after retry_after_ms exactly (as the client
 * runtime does); TRAIN -> train for 30..90 s, upload (begin + commit), check
 * in again at once, or at the slot the answer gave for after the round
 * (next_checkin_after_ms) if that is later. The engine ticks every 250 ms; a round that wants to
 * aggregate is published at once.
 *
 * Two fleets, same engine settings, same run:
 *   steered     pace steering on (the default); simulated for steered_s
 *   fixed_poll  --pace=false: every device polls every poll_ms (the
 *               baseline); simulated for fixed_s (a million check-ins per
 *               simulated second make longer runs slow, and its rate is flat)
 * Figures per fleet:
 *   checkin_rate     check-ins per 1-s window after the boot: p50, p99, max,
 *                    and p99 / the engine's target rate (goal <= 1.2 for the
 *                    steered fleet); also over all windows (boot included)
 *   cohort_fill      per cohort drawn: ms from the round's start to the last
 *                    member's task pick-up (goal: every cohort complete within
 *                    the selection window, pickup_ms), cohorts that never
 *                    completed, rounds completed and abandoned, members that
 *                    missed pick-up
 *   checkins_per_device_hour   the load each device and the coordinator carry
 *
 *   bench_pace [devices=1000000] [steered_s=3600] [fixed_s=20] [boot_s=10]
 *              [cohort=10000] [pickup_ms=20000]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/engine.h"
#include "fedc/error.h"
#include "tests/support/minheap.h"

#define KIND_BIT (1ull << 20)
#define ID_MASK (KIND_BIT - 1)

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t rnd(void) { /* xorshift64*: the fleet's own randomness, not the engine's */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *sorted, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)ceil(p * n) - 1;
  return sorted[i < n ? i : n - 1];
}

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct result {
  double target;
  uint64_t checkins;
  uint32_t p50, p99, max, all_p99, all_max;
  size_t windows;
  uint32_t rounds, abandoned, fill_p50, fill_max, fill_over, missed, selected_min, selected_max, unfilled;
  size_t fills;
  double told_p50_s, seconds;
} result;

static void run(uint32_t n, int pace, uint64_t sim_ms, uint64_t boot_ms, uint32_t cohort, uint64_t pickup_ms,
                result *res) {
  memset(res, 0, sizeof *res);
  double t0 = wall();
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = cohort;
  cfg.cohort_size = cohort;
  cfg.min_updates = cohort / 2;
  cfg.rounds = 0;
  cfg.pickup_ms = pickup_ms;
  cfg.round_ms = 600000;
  cfg.max_clients = n + 1;
  cfg.pace = pace;
  uint8_t sha[FC_SHA256_LEN] = {0};
  fc_engine *e = NULL;
  if (fc_engine_create(&cfg, 1, 0, 0, sha, &e) != FEDC_OK) abort();
  minheap h = {0};
  for (uint32_t i = 0; i < n; i++) minheap_push(&h, ((rnd() % (boot_ms ? boot_ms : 1)) << 21) | i);
  uint64_t *task_round = calloc(n, sizeof *task_round), *task_version = calloc(n, sizeof *task_version);
  uint64_t *after_round = calloc(n, sizeof *after_round);
  if (!after_round) abort();
  size_t nwin = sim_ms / 1000 + 1;
  uint32_t *win = calloc(nwin, sizeof *win);
  uint32_t *fills = calloc(100000, sizeof *fills), *told = malloc(4096 * sizeof *told);
  if (!task_round || !task_version || !win || !fills || !told) abort();
  size_t nfill = 0, ntold = 0;
  uint64_t round = 0, round_start = 0, last_pick = 0, version = 0;
  uint32_t picked = 0, selected = 0;
  int filled = 0;
  char name[16];
  uint64_t next_tick = 0;
  while (h.n) {
    uint64_t ev = h.v[0], now = ev >> 21;
    if (now >= sim_ms) break;
    if (now >= next_tick) { /* the driver's tick (before events at the same time) */
      int t = fc_engine_tick(e, next_tick);
      fc_engine_status st;
      if (t == FC_TICK_STARTED) {
        fc_engine_get_status(e, next_tick, &st);
        round = st.round;
        round_start = next_tick;
        last_pick = next_tick;
        picked = 0;
        filled = 0;
        selected = st.selected;
        if (!res->selected_min || st.selected < res->selected_min) res->selected_min = st.selected;
        if (st.selected > res->selected_max) res->selected_max = st.selected;
      } else if (t == FC_TICK_AGGREGATE || t == FC_TICK_ABANDON) {
        if (!filled && nfill < 100000) { /* ended before every member picked up */
          fills[nfill++] = (uint32_t)(last_pick - round_start);
          res->unfilled++;
        }
        filled = 1;
        if (t == FC_TICK_AGGREGATE) {
          fc_engine_published(e, ++version, sha, next_tick);
          res->rounds++;
        } else {
          res->abandoned++;
        }
      } else if (t == FC_TICK_REPLACED) {
        uint32_t missed, added;
        fc_engine_last_replacement(e, &missed, &added);
        res->missed += missed;
      }
      next_tick += 250;
      continue;
    }
    minheap_pop(&h);
    uint32_t id = (uint32_t)(ev & ID_MASK);
    snprintf(name, sizeof name, "d%07u", id);
    if (ev & KIND_BIT) { /* trained: upload, then check in at once */
      if (fc_engine_upload_begin(e, name, task_round[id], task_version[id], now) == FC_UP_OK)
        fc_engine_upload_commit(e, name, task_round[id], 100, 1.0, 0, now);
      uint64_t back = after_round[id] > now ? after_round[id] : now; /* the slot it was given, if later */
      minheap_push(&h, (back << 21) | id);
      continue;
    }
    win[now / 1000]++;
    res->checkins++;
    fc_task_info task;
    uint32_t retry = 0;
    int a = fc_engine_checkin(e, name, now, &task, &retry);
    if (a == FC_CHECKIN_TRAIN) {
      task_round[id] = task.round;
      task_version[id] = task.version;
      after_round[id] = retry > cfg.poll_ms ? now + retry : 0; /* CheckInResponse.next_checkin_after_ms */
      if (task.round == round && !filled) {
        picked++;
        last_pick = now;
        if (picked >= selected) { /* the cohort is complete: its fill time */
          filled = 1;
          if (nfill < 100000) fills[nfill++] = (uint32_t)(now - round_start);
        }
      }
      minheap_push(&h, ((now + 30000 + rnd() % 60000) << 21) | KIND_BIT | id);
    } else {
      if (now >= boot_ms && ntold < 4096) told[ntold++] = retry;
      minheap_push(&h, ((now + (retry ? retry : 1000)) << 21) | id);
    }
  }
  fc_pace_info pi;
  fc_engine_pace_info(e, sim_ms, &pi);
  res->target = pi.target_rate;
  size_t from = boot_ms / 1000 + (boot_ms % 1000 != 0), nw = sim_ms / 1000;
  uint32_t *s = malloc(nw * sizeof *s);
  memcpy(s, win, nw * sizeof *s);
  qsort(s, nw, sizeof *s, cmp_u32);
  res->all_p99 = pct(s, nw, 0.99);
  res->all_max = nw ? s[nw - 1] : 0;
  res->windows = nw > from ? nw - from : 0;
  memcpy(s, win + from, res->windows * sizeof *s);
  qsort(s, res->windows, sizeof *s, cmp_u32);
  res->p50 = pct(s, res->windows, 0.5);
  res->p99 = pct(s, res->windows, 0.99);
  res->max = res->windows ? s[res->windows - 1] : 0;
  qsort(fills, nfill, sizeof *fills, cmp_u32);
  res->fill_p50 = pct(fills, nfill, 0.5);
  res->fill_max = nfill ? fills[nfill - 1] : 0;
  res->fills = nfill;
  for (size_t i = 0; i < nfill; i++) res->fill_over += fills[i] > pickup_ms;
  qsort(told, ntold, sizeof *told, cmp_u32);
  res->told_p50_s = pct(told, ntold, 0.5) / 1000.0;
  res->seconds = wall() - t0;
  free(s);
  free(told);
  free(fills);
  free(win);
  free(task_round);
  free(task_version);
  free(after_round);
  minheap_free(&h);
  fc_engine_destroy(e);
}

static void print(const char *fleet, uint32_t n, uint64_t sim_ms, uint64_t boot_ms, uint32_t cohort,
                  uint64_t pickup_ms, const result *r, double target) {
  printf("{\"bench\":\"pace\",\"figure\":\"checkin_rate\",\"fleet\":\"%s\",\"devices\":%u,\"simulated_s\":%llu,"
         "\"from_s\":%llu,\"windows\":%zu,\"target_per_s\":%.1f,\"p50_per_s\":%u,\"p99_per_s\":%u,\"max_per_s\":%u,"
         "\"p99_over_target\":%.3f,\"all_windows_p99_per_s\":%u,\"all_windows_max_per_s\":%u}\n",
         fleet, n, (unsigned long long)(sim_ms / 1000), (unsigned long long)(boot_ms / 1000), r->windows, target,
         r->p50, r->p99, r->max, target > 0 ? r->p99 / target : 0, r->all_p99, r->all_max);
  printf("{\"bench\":\"pace\",\"figure\":\"cohort_fill\",\"fleet\":\"%s\",\"cohort\":%u,\"selected_min\":%u,"
         "\"selected_max\":%u,\"selection_window_ms\":%llu,\"rounds_completed\":%u,\"rounds_abandoned\":%u,"
         "\"cohorts_drawn\":%zu,\"fill_ms_p50\":%u,\"fill_ms_max\":%u,\"cohorts_over_window\":%u,"
         "\"cohorts_never_complete\":%u,\"members_missed_pickup\":%u}\n",
         fleet, cohort, r->selected_min, r->selected_max, (unsigned long long)pickup_ms, r->rounds, r->abandoned,
         r->fills, r->fill_p50, r->fill_max, r->fill_over, r->unfilled, r->missed);
  printf("{\"bench\":\"pace\",\"figure\":\"checkins_per_device_hour\",\"fleet\":\"%s\",\"value\":%.2f,"
         "\"told_wait_p50_s\":%.1f,\"checkins\":%llu,\"wall_seconds\":%.1f}\n",
         fleet, (double)r->checkins / n / (sim_ms / 3600000.0), r->told_p50_s, (unsigned long long)r->checkins,
         r->seconds);
  fflush(stdout);
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000;
  uint64_t steered_s = argc > 2 ? strtoull(argv[2], NULL, 10) : 3600;
  uint64_t fixed_s = argc > 3 ? strtoull(argv[3], NULL, 10) : 20;
  uint64_t boot_s = argc > 4 ? strtoull(argv[4], NULL, 10) : 10;
  uint32_t cohort = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 10000;
  uint64_t pickup_ms = argc > 6 ? strtoull(argv[6], NULL, 10) : 20000;
  if (n < 2 || n > ID_MASK || !cohort || cohort > n || !steered_s || !pickup_ms) {
    fprintf(stderr, "bench_pace: devices 2..%llu, cohort 1..devices, durations > 0\n", (unsigned long long)ID_MASK);
    return 2;
  }
  result steered, fixed;
  run(n, 1, steered_s * 1000, boot_s * 1000, cohort, pickup_ms, &steered);
  print("steered", n, steered_s * 1000, boot_s * 1000, cohort, pickup_ms, &steered, steered.target);
  if (fixed_s) {
    run(n, 0, (fixed_s + boot_s) * 1000, boot_s * 1000, cohort, pickup_ms, &fixed);
    /* the same target: what the steered fleet aimed at */
    print("fixed_poll", n, (fixed_s + boot_s) * 1000, boot_s * 1000, cohort, pickup_ms, &fixed, steered.target);
  }
  return 0;
}

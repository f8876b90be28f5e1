/*
 * test_engine_pace.c - pace steering in the round engine (engine_pace.c;
 * Bonawitz et al. 2019, sec. 2.3), in-process with synthetic time: a small
 * fleet polls as before; a burst of check-ins is told slots at the target
 * rate, each within its slot (the jitter bound) and never sooner than the
 * poll interval; the target rate follows the rounds (cohort, pick-up
 * window, eligible share); the window follows the population as it grows
 * and shrinks; only devices due within the selection window are selected,
 * and the cohort they form picks up before the pick-up deadline; steered
 * devices stay live; steering is off under Poisson sampling and in the last
 * round of the budget.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"
#include "tests/support/minheap.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {9};

static fc_engine_cfg base_cfg(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.min_updates = 1;
  cfg.cohort_size = 10;
  cfg.rounds = 0;
  cfg.poll_ms = 1000;
  cfg.pickup_ms = 20000;
  cfg.round_ms = 60000;
  cfg.client_ttl_ms = 5000;
  cfg.max_clients = 1000000;
  cfg.checkin_rate = 1000; /* the rate limit is not under test */
  cfg.checkin_burst = 1000;
  return cfg;
}

static fc_engine *make(const fc_engine_cfg *cfg) {
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static uint32_t wait_of(fc_engine *e, const char *who, uint64_t now, int *act) {
  fc_task_info t;
  uint32_t retry = 0;
  int a = fc_engine_checkin(e, who, now, &t, &retry);
  if (act) *act = a;
  return retry;
}

static void test_small_fleet_unchanged(void) {
  fc_engine_cfg cfg = base_cfg();
  fc_engine *e = make(&cfg);
  for (int i = 0; i < 50; i++) { /* 50 check-ins at once: below the default floor (1000/s) */
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    CHECK_EQ_INT(wait_of(e, n, 0, NULL), 1000);
  }
  fc_pace_info pi;
  fc_engine_pace_info(e, 0, &pi);
  CHECK_EQ_INT(pi.active, 0);
  CHECK_EQ_INT(pi.window_ms, 1000);
  CHECK(fabs(pi.target_rate - 1000.0) < 1e-9);
  fc_engine_destroy(e);
}

/* A burst of 5,000 first check-ins at t = 0, target 100/s: the first
 * poll interval's worth poll as before, then one slot of 10 ms each, the
 * i-th within [start + i x 10 ms, start + (i+1) x 10 ms). */
static void test_burst_spread_at_target(void) {
  fc_engine_cfg cfg = base_cfg();
  cfg.pace_rate = 100;
  fc_engine *e = make(&cfg);
  enum { N = 5000 };
  static uint32_t count[200];
  memset(count, 0, sizeof count);
  int in_slot = 1, at_least_poll = 1;
  for (int i = 0; i < N; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    uint32_t w = wait_of(e, n, 0, NULL);
    at_least_poll &= w >= 1000;
    if (i < 100) {
      in_slot &= w == 1000;
    } else {
      double lo = 1000 + i * 10.0, hi = lo + 10.0;
      in_slot &= w >= lo - 1 && w < hi; /* truncation to whole ms */
    }
    if (w / 1000 < 200) count[w / 1000]++;
  }
  CHECK(in_slot);
  CHECK(at_least_poll);
  uint32_t worst = 0;
  for (int s = 0; s < 200; s++)
    if (count[s] > worst) worst = count[s];
  CHECK(worst <= 101); /* 100/s: a window holds at most one extra at its edge */
  CHECK_EQ_INT(count[1], 100);
  CHECK(count[50] >= 99 && count[50] <= 101);
  fc_pace_info pi;
  fc_engine_pace_info(e, 0, &pi);
  CHECK_EQ_INT(pi.active, 1);
  fc_engine_destroy(e);
}

/* R from the rounds: H x k / (3/4 pick-up x eligible share), floored. */
static void test_target_from_rounds(void) {
  fc_engine_cfg cfg = base_cfg();
  cfg.pace_min_rate = 100; /* below the default floor (1000/s), so the rounds' rate shows */
  cfg.cohort_size = 3000;
  cfg.pickup_ms = 40000; /* w = 30 s: R = 2 x 3000 / 30 = 200/s */
  fc_engine *e = make(&cfg);
  for (int i = 0; i < 10; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    wait_of(e, n, 0, NULL);
  }
  fc_pace_info pi;
  fc_engine_pace_info(e, 0, &pi);
  CHECK(fabs(pi.target_rate - 200.0) < 1e-9);
  CHECK_EQ_INT(pi.window_ms, 1000); /* 10 devices: 50 ms at 200/s, below the poll interval */
  fc_engine_destroy(e);
  cfg.cohort_size = 10; /* 2 x 10 / 30 s < floor */
  e = make(&cfg);
  fc_engine_pace_info(e, 0, &pi);
  CHECK(fabs(pi.target_rate - 100.0) < 1e-9);
  fc_engine_destroy(e);
  /* Half the devices ineligible: twice the rate, so as many eligible ones are due. */
  cfg.cohort_size = 3000;
  cfg.elig.require_charging = 1;
  e = make(&cfg);
  fc_device_state yes = {1, 1, 0, 0, 0, 0}, no = {1, 0, 0, 0, 0, 0};
  for (int i = 0; i < 10; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    fc_task_info t;
    uint32_t r;
    fc_engine_checkin_device(e, n, i % 2 ? &yes : &no, 0, 0, 0, &t, NULL, &r, NULL, 0);
  }
  fc_engine_pace_info(e, 2000, &pi);
  CHECK(fabs(pi.eligible_share - 0.5) < 1e-9);
  CHECK(fabs(pi.target_rate - 400.0) < 1e-9);
  fc_engine_destroy(e);
}

/* A fleet of N honouring devices settles at W = N / R; when half leave the
 * window shrinks toward the new N / R; when it doubles... grows to 3N/2 / R. */
static void test_population_changes(void) {
  fc_engine_cfg cfg = base_cfg();
  cfg.pace_rate = 100;
  cfg.pace_max_ms = 3600000;
  cfg.client_ttl_ms = 5000;
  fc_engine *e = make(&cfg);
  enum { N = 4000 };
  minheap h = {0};
  for (uint64_t i = 0; i < N; i++) minheap_push(&h, (i << 16) | i); /* they arrive over 4 s */
  int joined = 0;
  uint64_t last_wait_a = 0, last_wait_b = 0, last_wait_c = 0;
  while (h.n) {
    uint64_t ev = minheap_pop(&h), now = ev >> 16, id = ev & 0xffff;
    if (now >= 700000) break;
    if (!joined && now >= 400000) { /* N more join over 1 s */
      joined = 1;
      for (uint64_t i = N; i < 2 * N; i++) minheap_push(&h, ((now + (i - N) / 4) << 16) | i);
    }
    if (now >= 200000 && id < N / 2) continue; /* half of the first N left at 200 s */
    char n[16];
    snprintf(n, sizeof n, "d%llu", (unsigned long long)id);
    uint32_t w = wait_of(e, n, now, NULL);
    minheap_push(&h, ((now + w) << 16) | id);
    if (now < 200000) last_wait_a = w;
    else if (now < 400000) last_wait_b = w;
    else last_wait_c = w;
  }
  /* N / R = 40 s; N/2 / R = 20 s; 3N/2 / R = 60 s */
  CHECK(last_wait_a > 38000 && last_wait_a < 42000);
  CHECK(last_wait_b > 18000 && last_wait_b < 22000);
  CHECK(last_wait_c > 55000 && last_wait_c < 65000);
  minheap_free(&h);
  fc_engine_destroy(e);
}

/* Selection takes only devices due within 3/4 of the pick-up window; every
 * member then arrives (as told) before the pick-up deadline. */
static void test_due_devices_fill_cohort(void) {
  fc_engine_cfg cfg = base_cfg();
  cfg.pace_rate = 100;
  cfg.cohort_size = 50;
  cfg.pickup_ms = 8000; /* due within 6 s */
  cfg.client_ttl_ms = 2000;
  fc_engine *e = make(&cfg);
  enum { N = 3000 };
  static uint64_t due[N];
  for (int i = 0; i < N; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    due[i] = wait_of(e, n, 0, NULL);
  }
  /* Slots run to 30 s; at t = 0 those due by 6 s are candidates (about 600),
   * and all are live (steered devices stay live past client_ttl_ms). */
  CHECK_EQ_INT(fc_engine_count_live(e, 1500), N);
  uint32_t live_later = fc_engine_count_live(e, 25000); /* told to come at 23 s or later: about 800 */
  CHECK(live_later >= 799 && live_later <= 801);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  const char *names[64];
  uint32_t k = fc_engine_cohort(e, names, 64);
  CHECK_EQ_INT(k, 50);
  int all_due = 1;
  for (uint32_t j = 0; j < k; j++) all_due &= due[atoi(names[j] + 1)] <= 6001;
  CHECK(all_due);
  /* Everyone checks in when told: all 50 members pick up before the deadline. */
  uint32_t trained = 0;
  int trained_slot = 1;
  uint64_t last_pickup = 0;
  for (uint64_t now = 1; now < 8000; now++)
    for (int i = 0; i < N; i++)
      if (due[i] == now) {
        char n[16];
        snprintf(n, sizeof n, "d%d", i);
        int act;
        uint32_t w = wait_of(e, n, now, &act);
        if (act == FC_CHECKIN_TRAIN) {
          trained_slot &= w > 1000; /* a slot for after the round, not "at once" */
          trained++;
          last_pickup = now;
          due[i] = UINT64_MAX;
        } else {
          due[i] = now + w;
        }
      }
  CHECK_EQ_INT(trained, 50);
  CHECK(trained_slot);
  CHECK(last_pickup < 8000);
  fc_engine_destroy(e);
}

static void test_off_under_poisson_and_last_round(void) {
  fc_engine_cfg cfg = base_cfg();
  cfg.pace_rate = 10;
  cfg.poisson = 1;
  cfg.cohort_size = 0;
  fc_engine *e = make(&cfg);
  int all_poll = 1;
  for (int i = 0; i < 200; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    all_poll &= wait_of(e, n, 0, NULL) == 1000;
  }
  CHECK(all_poll);
  fc_engine_destroy(e);
  cfg = base_cfg();
  cfg.pace_rate = 10;
  cfg.rounds = 1; /* the next round is the last: everyone must hear DONE */
  e = make(&cfg);
  all_poll = 1;
  for (int i = 0; i < 200; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    all_poll &= wait_of(e, n, 0, NULL) == 1000;
  }
  CHECK(all_poll);
  cfg.pace = 0;
  fc_engine_destroy(e);
  cfg.rounds = 0;
  e = make(&cfg);
  all_poll = 1;
  for (int i = 0; i < 200; i++) {
    char n[16];
    snprintf(n, sizeof n, "d%d", i);
    all_poll &= wait_of(e, n, 0, NULL) == 1000;
  }
  CHECK(all_poll);
  fc_engine_destroy(e);
}

int main(void) {
  test_small_fleet_unchanged();
  test_burst_spread_at_target();
  test_target_from_rounds();
  test_population_changes();
  test_due_devices_fill_cohort();
  test_off_under_poisson_and_last_round();
  return CHECK_DONE();
}

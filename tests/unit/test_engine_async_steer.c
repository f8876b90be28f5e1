/*
 * test_engine_async_steer.c - async mode steers waiting clients
 * (engine_async.c, steer()): with every concurrency slot taken, a client
 * is told to come back at a pace set by how fast slots free up, instead
 * of every poll_ms. Synthetic time, the same simulated fleet run with
 * pace steering on and off:
 *   - 100 clients, C = 4, K = 2, tasks of 200 ms, poll_ms 200: steering
 *     cuts the check-ins after the first window by more than 3x, while the
 *     updates counted stay within 10% (slots do not sit idle waiting for a
 *     taker);
 *   - a small fleet (6 clients, C = 4) polls at poll_ms as before: the
 *     rate it asks at is below the steering rate;
 *   - before the first measure (the first 2 s) nobody is steered;
 *   - one client that ignores the time it was told and checks in every
 *     50 ms, uploading at once, costs the honest fleet under 5% of its
 *     updates where slots free slowly (re-placing it on every early
 *     check-in pushed the shared schedule ahead: a hostile review measured
 *     53% fewer);
 *   - a task that expires unfinished (the scan, or a begin that comes
 *     LATE) pauses its holder for round_ms, so it cannot take the freed
 *     slot straight back; a fleet whose tasks all expired (an outage) gets
 *     tasks again after that, not never.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {1, 2, 3};
static const uint8_t SHA1[FC_SHA256_LEN] = {9};

enum { MAXC = 100, TASK_MS = 200, POLL_MS = 200, STEP_MS = 5 };

typedef struct sim_out {
  uint64_t checkins_late; /* check-ins from 4 s on */
  uint64_t uploads;       /* updates counted */
  uint32_t max_retry_late, first_window_max_retry;
} sim_out;

/* An async engine: concurrency conc, buffer buf, task deadline round_ms. */
static fc_engine *async_engine(uint32_t conc, uint32_t buf, uint64_t round_ms, int pace) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 0;
  cfg.async = 1;
  cfg.async_concurrency = conc;
  cfg.async_buffer = buf;
  cfg.max_staleness = 50;
  cfg.rounds = 0;
  cfg.round_ms = round_ms;
  cfg.client_ttl_ms = 100000;
  cfg.poll_ms = POLL_MS;
  cfg.upload_rate = 0;
  cfg.pace = pace;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 1, SHA0, &e), FEDC_OK);
  return e;
}

/* attacker: client 0 checks in every 50 ms whatever it was told, and
 * uploads the moment it has a task. */
static sim_out simulate_with(int pace, uint32_t nclients, uint64_t end_ms, int attacker, uint32_t conc, uint32_t buf,
                             uint64_t task_ms) {
  fc_engine *e = async_engine(conc, buf, 5000 + 2 * task_ms, pace);
  struct {
    char name[16];
    uint64_t next, done_at;
    int has;
    fc_task_info t;
  } c[MAXC];
  memset(c, 0, sizeof c);
  for (uint32_t i = 0; i < nclients; i++) {
    snprintf(c[i].name, sizeof c[i].name, "c%u", i);
    c[i].next = i; /* a fleet that boots within 100 ms */
  }
  sim_out out = {0, 0, 0, 0};
  uint64_t version = 1;
  for (uint64_t now = 0; now < end_ms; now += STEP_MS) {
    if (fc_engine_tick(e, now) == FC_TICK_AGGREGATE) fc_engine_published(e, ++version, SHA1, now);
    for (uint32_t i = 0; i < nclients; i++) {
      if (c[i].has) {
        if (now < c[i].done_at && !(attacker && i == 0)) continue;
        int v = fc_engine_upload_begin(e, c[i].name, c[i].t.round, c[i].t.version, now);
        if (v == FC_UP_BUFFER_FULL) {
          c[i].done_at = now + 50;
          continue;
        }
        if (v == FC_UP_OK && fc_engine_upload_commit(e, c[i].name, c[i].t.round, 10, 0.5, 100, now) == FC_UP_OK &&
            !(attacker && i == 0))
          out.uploads++; /* the honest fleet's */
        c[i].has = 0;
        c[i].next = now; /* checks in again at once, as the runtime does */
      }
      if (c[i].has || now < c[i].next) continue;
      uint32_t retry = 0;
      int a = fc_engine_checkin(e, c[i].name, now, &c[i].t, &retry);
      if (now >= 4000) {
        out.checkins_late++;
        if (retry > out.max_retry_late) out.max_retry_late = retry;
      } else if (now < 1900 && retry > out.first_window_max_retry) {
        out.first_window_max_retry = retry;
      }
      if (a == FC_CHECKIN_TRAIN) {
        c[i].has = 1;
        c[i].done_at = now + task_ms;
      } else {
        c[i].next = now + (attacker && i == 0 ? 50 : retry ? retry : POLL_MS);
      }
    }
  }
  fc_engine_destroy(e);
  return out;
}

static sim_out simulate(int pace, uint32_t nclients, uint64_t end_ms) {
  return simulate_with(pace, nclients, end_ms, 0, 4, 2, TASK_MS);
}

static void test_large_fleet(void) {
  sim_out off = simulate(0, 100, 12000), on = simulate(1, 100, 12000);
  printf("  100 clients, C 4: check-ins from 4 s on %llu steered against %llu polling, updates %llu against %llu, "
         "longest wait told %u ms\n",
         (unsigned long long)on.checkins_late, (unsigned long long)off.checkins_late, (unsigned long long)on.uploads,
         (unsigned long long)off.uploads, on.max_retry_late);
  CHECK(off.checkins_late > 3 * on.checkins_late);
  CHECK(on.uploads * 10 >= off.uploads * 9);
  CHECK(on.max_retry_late > POLL_MS);
  CHECK_EQ_INT((int)off.max_retry_late, POLL_MS);
  CHECK_EQ_INT((int)on.first_window_max_retry, POLL_MS); /* nothing measured yet: poll_ms */
}

static void test_small_fleet(void) {
  sim_out on = simulate(1, 6, 8000);
  CHECK_EQ_INT((int)on.max_retry_late, POLL_MS);
  CHECK(on.uploads > 0);
}

/* Slots that free slowly (C 10, K 5, tasks of 10 s: about one a second, so
 * waiters are spaced at the floor rate of 5 a second) and a client asking
 * 20 times a second, past that rate, for 20 simulated minutes: before the
 * fix the honest fleet counted 959 updates against 1,190 (-19%). */
static void test_early_checkins(void) {
  sim_out honest = simulate_with(1, 100, 1200000, 0, 10, 5, 10000),
          attacked = simulate_with(1, 100, 1200000, 1, 10, 5, 10000);
  printf("  one client checking in every 50 ms: honest updates %llu against %llu without it\n",
         (unsigned long long)attacked.uploads, (unsigned long long)honest.uploads);
  CHECK(attacked.uploads * 100 >= honest.uploads * 95);
}

/* Async, concurrency conc, buffer buf, tasks of 1 s, started (tick 0). */
static fc_engine *small_engine(uint32_t conc, uint32_t buf) {
  fc_engine *e = async_engine(conc, buf, 1000, 1);
  fc_engine_tick(e, 0);
  return e;
}

/* C = 1, one task: its holder never uploads and checks in right after its
 * deadline; the freed slot goes to the other client, not back to it. */
static void test_expired_task(void) {
  fc_engine *e = small_engine(1, 1);
  fc_task_info t;
  uint32_t retry;
  CHECK_EQ_INT(fc_engine_checkin(e, "hog", 10, &t, &retry), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_checkin(e, "honest", 20, &t, &retry), FC_CHECKIN_WAIT);
  fc_engine_tick(e, 1020); /* past the hog's deadline (1010): its slot is freed */
  CHECK_EQ_INT(fc_engine_checkin(e, "hog", 1021, &t, &retry), FC_CHECKIN_WAIT);
  CHECK(retry >= 900); /* paused for round_ms from the expiry */
  CHECK_EQ_INT(fc_engine_checkin(e, "honest", 1100, &t, &retry), FC_CHECKIN_TRAIN);
  /* A begin that comes LATE (before the scan saw the deadline) pauses it too. */
  fc_task_info ht = t;
  CHECK_EQ_INT(fc_engine_upload_begin(e, "honest", ht.round, ht.version, ht.deadline_ms + 1), FC_UP_LATE);
  CHECK_EQ_INT(fc_engine_checkin(e, "honest", ht.deadline_ms + 2, &t, &retry), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_checkin(e, "hog", ht.deadline_ms + 3, &t, &retry), FC_CHECKIN_TRAIN);
  fc_engine_destroy(e);
}

/* C = 2, K = 2: both tasks expire in an outage; both clients get tasks
 * again round_ms later (a pause for the whole buffer never ended). */
static void test_outage(void) {
  fc_engine *e = small_engine(2, 2);
  fc_task_info t;
  uint32_t retry;
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 10, &t, &retry), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_checkin(e, "b", 10, &t, &retry), FC_CHECKIN_TRAIN);
  fc_engine_tick(e, 2500); /* both expired during the outage */
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 2600, &t, &retry), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 3600, &t, &retry), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_checkin(e, "b", 3600, &t, &retry), FC_CHECKIN_TRAIN);
  fc_engine_destroy(e);
}

int main(void) {
  test_large_fleet();
  test_early_checkins();
  test_expired_task();
  test_outage();
  test_small_fleet();
  return CHECK_DONE();
}

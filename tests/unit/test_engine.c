/*
 * test_engine.c - the round engine, driven in-process with synthetic time:
 * cohort selection (size, reproducibility, independence of arrival order),
 * task hand-out and resume, every upload verdict, pickup and round
 * deadlines (abandon vs aggregate), pause, the budget, client table limits,
 * and the exclusion of repeat secure-aggregation offenders from selection.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {1, 2, 3};

static fc_engine_cfg cfg_with(uint32_t cohort, uint32_t min_updates, uint64_t rounds, uint64_t secagg_stage_ms) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 3;
  cfg.cohort_size = cohort;
  cfg.min_updates = min_updates;
  cfg.rounds = rounds;
  cfg.pickup_ms = 1000;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 10000;
  cfg.seed = 42;
  cfg.secagg = secagg_stage_ms > 0;
  if (cfg.secagg) cfg.sa_stage_ms = secagg_stage_ms;
  return cfg;
}

static fc_engine *make_with(uint32_t cohort, uint32_t min_updates, uint64_t rounds, uint64_t secagg_stage_ms) {
  fc_engine_cfg cfg = cfg_with(cohort, min_updates, rounds, secagg_stage_ms);
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static fc_engine *make(uint32_t cohort, uint32_t min_updates, uint64_t rounds) {
  return make_with(cohort, min_updates, rounds, 0);
}

static int checkin(fc_engine *e, const char *who, uint64_t now, fc_task_info *t) {
  uint32_t retry;
  fc_task_info tmp;
  return fc_engine_checkin(e, who, now, t ? t : &tmp, &retry);
}

/* Names of the selected clients, as a bitmask over c0..c9. */
static unsigned selected_mask(fc_engine *e, uint64_t now) {
  unsigned mask = 0;
  for (int i = 0; i < 10; i++) {
    char n[8];
    snprintf(n, sizeof n, "c%d", i);
    if (checkin(e, n, now, NULL) == FC_CHECKIN_TRAIN) mask |= 1u << i;
  }
  return mask;
}

static void test_selection(void) {
  /* Same live set, different arrival order: same cohort. */
  unsigned masks[2];
  for (int order = 0; order < 2; order++) {
    fc_engine *e = make(4, 2, 10);
    for (int i = 0; i < 10; i++) {
      char n[8];
      snprintf(n, sizeof n, "c%d", order ? 9 - i : i);
      CHECK_EQ_INT(checkin(e, n, 100, NULL), FC_CHECKIN_WAIT);
    }
    CHECK_EQ_INT(fc_engine_tick(e, 200), FC_TICK_STARTED);
    masks[order] = selected_mask(e, 300);
    CHECK_EQ_INT(__builtin_popcount(masks[order]), 4);
    fc_engine_destroy(e);
  }
  CHECK_EQ_INT(masks[0], masks[1]);
}

static void test_not_enough_clients(void) {
  fc_engine *e = make(2, 2, 10);
  checkin(e, "a", 0, NULL);
  checkin(e, "b", 0, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 10), FC_TICK_NONE); /* min_clients 3 */
  checkin(e, "c", 20, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_STARTED);
  fc_engine_destroy(e);
  /* Clients that went silent are not live. */
  e = make(2, 2, 10);
  checkin(e, "a", 0, NULL);
  checkin(e, "b", 0, NULL);
  checkin(e, "c", 20000, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 20001), FC_TICK_NONE);
  fc_engine_destroy(e);
}

static void start3(fc_engine *e, uint64_t now) {
  checkin(e, "a", now, NULL);
  checkin(e, "b", now, NULL);
  checkin(e, "c", now, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, now + 1), FC_TICK_STARTED);
}

static void test_full_round_and_verdicts(void) {
  fc_engine *e = make(3, 2, 2);
  start3(e, 0);
  fc_task_info t;
  CHECK_EQ_INT(checkin(e, "a", 10, &t), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(t.round, 1);
  CHECK_EQ_INT(t.version, 0);
  CHECK(memcmp(t.sha, SHA0, FC_SHA256_LEN) == 0);
  /* A reconnecting client gets the same task again. */
  fc_task_info t2;
  CHECK_EQ_INT(checkin(e, "a", 20, &t2), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(t2.round, t.round);
  CHECK_EQ_INT(t2.client_seed, t.client_seed);
  /* Strangers and wrong requests. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "zed", 1, 0, 30), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 2, 0, 30), FC_UP_WRONG_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 5, 30), FC_UP_WRONG_VERSION);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 30), FC_UP_NOT_IN_ROUND); /* never fetched its task */
  /* Upload, a concurrent second stream, abort and retry, commit, duplicate. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 30), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 31), FC_UP_BUSY);
  fc_engine_upload_abort(e, "a", 1, 0, 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 32), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", 1, 100, 0.5, 1000, 40), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 50), FC_UP_DUPLICATE);
  CHECK_EQ_INT(fc_engine_tick(e, 60), FC_TICK_NONE);
  /* b and c finish: aggregate at once, no need to wait for the deadline. */
  CHECK_EQ_INT(checkin(e, "b", 70, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "c", 70, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 80), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", 1, 50, 0.7, 1000, 90), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", 1, 0, 80), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "c", 1, 50, 0.9, 1000, 90), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 100), FC_TICK_AGGREGATE);
  /* While aggregating nobody may upload or get a task. */
  CHECK_EQ_INT(checkin(e, "a", 110, NULL), FC_CHECKIN_WAIT);
  uint8_t sha1[FC_SHA256_LEN] = {9};
  fc_engine_published(e, 1, sha1, 120);
  const fc_round_stats *r = fc_engine_last_round(e);
  CHECK_EQ_INT(r->round, 1);
  CHECK(r->completed);
  CHECK_EQ_INT(r->participants, 3);
  CHECK_EQ_INT(r->examples, 200);
  CHECK(r->mean_loss > 0.69 && r->mean_loss < 0.71);
  /* Round 2 then the budget is spent: DONE. */
  CHECK_EQ_INT(fc_engine_tick(e, 130), FC_TICK_STARTED);
  fc_engine_status st;
  fc_engine_get_status(e, 130, &st);
  CHECK_EQ_INT(st.round, 2);
  CHECK_EQ_INT(st.version, 1);
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(checkin(e, names[i], 140, NULL), FC_CHECKIN_TRAIN);
    CHECK_EQ_INT(fc_engine_upload_begin(e, names[i], 2, 1, 150), FC_UP_OK);
    CHECK_EQ_INT(fc_engine_upload_commit(e, names[i], 2, 10, 0.1, 10, 160), FC_UP_OK);
  }
  CHECK_EQ_INT(fc_engine_tick(e, 170), FC_TICK_AGGREGATE);
  fc_engine_published(e, 2, sha1, 180);
  CHECK_EQ_INT(checkin(e, "a", 190, NULL), FC_CHECKIN_DONE);
  /* A replay of a's last accepted update after its round closed: still a
   * duplicate (not "another round" or "not in round"). */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 2, 1, 195), FC_UP_DUPLICATE);
  /* Admin adds a round: back to work. */
  fc_engine_add_rounds(e, 1);
  CHECK_EQ_INT(fc_engine_tick(e, 200), FC_TICK_STARTED);
  fc_engine_destroy(e);
}

static void test_deadlines(void) {
  /* Nobody picks up: abandoned at the pickup deadline, retried with a new round id. */
  fc_engine *e = make(3, 2, 10);
  start3(e, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 999), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 1002), FC_TICK_ABANDON);
  CHECK(!fc_engine_last_round(e)->completed);
  CHECK(strstr(fc_engine_abandon_reason(e), "picked up") != NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 1003), FC_TICK_STARTED); /* same clients still live */
  fc_engine_status st;
  fc_engine_get_status(e, 1003, &st);
  CHECK_EQ_INT(st.round, 2);
  CHECK_EQ_INT(st.abandoned, 1);
  fc_engine_destroy(e);

  /* Two upload, one never does: aggregate at the round deadline with 2 (min 2);
   * an upload in flight at the deadline is late. */
  e = make(3, 2, 10);
  start3(e, 0);
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, names[i], 10, NULL), FC_CHECKIN_TRAIN);
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(fc_engine_upload_begin(e, names[i], 1, 0, 20), FC_UP_OK);
    CHECK_EQ_INT(fc_engine_upload_commit(e, names[i], 1, 10, 0.1, 10, 30), FC_UP_OK);
  }
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", 1, 0, 4000), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 4999), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 5001), FC_TICK_AGGREGATE);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "c", 1, 10, 0.1, 10, 5002), FC_UP_LATE);
  fc_engine_destroy(e);

  /* Only one of three uploads by the deadline with min_updates 2: abandon,
   * nothing applied. */
  e = make(3, 2, 10);
  start3(e, 0);
  for (int i = 0; i < 3; i++) checkin(e, names[i], 10, NULL);
  fc_engine_upload_begin(e, "a", 1, 0, 20);
  fc_engine_upload_commit(e, "a", 1, 10, 0.1, 10, 30);
  CHECK_EQ_INT(fc_engine_tick(e, 5001), FC_TICK_ABANDON);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 5002), FC_UP_NOT_IN_ROUND);
  fc_engine_get_status(e, 5003, &st);
  CHECK_EQ_INT(st.version, 0);
  fc_engine_destroy(e);
}

static void test_pause_and_limits(void) {
  fc_engine *e = make(3, 2, 10);
  fc_engine_pause(e, 1);
  checkin(e, "a", 0, NULL);
  checkin(e, "b", 0, NULL);
  checkin(e, "c", 0, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_NONE);
  fc_engine_pause(e, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 2), FC_TICK_STARTED);
  fc_engine_destroy(e);

  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.max_clients = 2;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  CHECK_EQ_INT(checkin(e, "a", 0, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "b", 0, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "c", 0, NULL), FC_CHECKIN_REFUSED);
  CHECK_EQ_INT(checkin(e, "a", 1, NULL), FC_CHECKIN_WAIT); /* known clients still served */
  fc_engine_destroy(e);

  /* Many clients: the index grows and every one is found again. */
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 5000;
  cfg.cohort_size = 100;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  for (int i = 0; i < 5000; i++) {
    char n[16];
    snprintf(n, sizeof n, "client-%d", i);
    checkin(e, n, 0, NULL);
  }
  for (int round = 0; round < 20; round++) CHECK_EQ_INT(fc_engine_tick(e, 1), round == 0 ? FC_TICK_STARTED : FC_TICK_NONE);
  fc_engine_status st;
  fc_engine_get_status(e, 1, &st);
  CHECK_EQ_INT(st.known, 5000);
  CHECK_EQ_INT(st.selected, 100);
  int train = 0;
  for (int i = 0; i < 5000; i++) {
    char n[16];
    snprintf(n, sizeof n, "client-%d", i);
    train += checkin(e, n, 2, NULL) == FC_CHECKIN_TRAIN;
  }
  CHECK_EQ_INT(train, 100);
  fc_engine_get_status(e, 2, &st);
  CHECK_EQ_INT(st.known, 5000);
  fc_engine_destroy(e);
}

/* Durations of 2^64-1 ms (issue 6 item 7) used to wrap: every deadline was
 * already past (a round abandoned per tick) and no client was ever live. */
static void test_huge_durations(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.cohort_size = 2;
  cfg.min_updates = 2;
  cfg.pickup_ms = UINT64_MAX;
  cfg.round_ms = UINT64_MAX;
  cfg.client_ttl_ms = UINT64_MAX;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  uint64_t now = 1700000000000ull; /* wall-clock-like engine time */
  checkin(e, "a", now, NULL);
  checkin(e, "b", now, NULL);
  fc_engine_status st;
  fc_engine_get_status(e, now + 1000, &st);
  CHECK_EQ_INT(fc_engine_count_live(e, now + 1000), 2);
  CHECK_EQ_INT(fc_engine_tick(e, now + 1000), FC_TICK_STARTED);
  fc_task_info t;
  CHECK_EQ_INT(checkin(e, "a", now + 2000, &t), FC_CHECKIN_TRAIN);
  CHECK(t.deadline_ms == UINT64_MAX);
  /* Hours later the round is still open, not abandoned. */
  for (uint64_t dt = 3000; dt < 36000000ull; dt *= 3) CHECK_EQ_INT(fc_engine_tick(e, now + dt), FC_TICK_NONE);
  fc_engine_get_status(e, now + 36000000ull, &st);
  CHECK_EQ_INT(st.state, FC_ENG_TRAINING);
  CHECK_EQ_INT(st.abandoned, 0);
  /* Counters saturate instead of wrapping. */
  CHECK_EQ_INT(checkin(e, "b", now + 2000, &t), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", t.round, t.version, now + 3000), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", t.round, UINT64_MAX, 0.5, 10, now + 3000), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", t.round, t.version, now + 3000), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", t.round, 5, 0.5, 10, now + 3000), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, now + 4000), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA0, now + 5000);
  CHECK(fc_engine_last_round(e)->examples == UINT64_MAX);
  fc_engine_add_rounds(e, UINT64_MAX);
  fc_engine_get_status(e, now + 6000, &st);
  CHECK(st.budget == UINT64_MAX);
  fc_engine_destroy(e);
}

/* Admin state restored after a restart, and the coordinator's storage block. */
static void test_restore_and_block(void) {
  fc_engine *e = make(3, 2, 10);
  fc_engine_restore(e, 7, 1, 15);
  fc_engine_status st;
  fc_engine_get_status(e, 0, &st);
  CHECK_EQ_INT(st.abandoned, 7);
  CHECK_EQ_INT(st.paused, 1);
  CHECK_EQ_INT(st.budget, 15);
  checkin(e, "a", 0, NULL);
  checkin(e, "b", 0, NULL);
  checkin(e, "c", 0, NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_NONE); /* still paused */
  fc_engine_pause(e, 0);
  fc_engine_block(e, 1);
  CHECK_EQ_INT(fc_engine_tick(e, 2), FC_TICK_NONE); /* blocked: no round starts */
  fc_engine_get_status(e, 2, &st);
  CHECK_EQ_INT(st.blocked, 1);
  CHECK_EQ_INT(st.paused, 0);
  fc_engine_block(e, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 3), FC_TICK_STARTED);
  fc_engine_destroy(e);
  /* A restored budget already spent: DONE at once; 0 = unlimited. */
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  CHECK_EQ_INT(fc_engine_create(&cfg, 6, 5, 5, SHA0, &e), FEDC_OK);
  fc_engine_restore(e, 0, 0, 5);
  fc_engine_get_status(e, 0, &st);
  CHECK_EQ_INT(st.state, FC_ENG_DONE);
  fc_engine_restore(e, 0, 0, 0);
  fc_engine_get_status(e, 0, &st);
  CHECK_EQ_INT(st.state, FC_ENG_WAITING);
  fc_engine_destroy(e);
}

/* Per-identity rate limits (issue 7): a burst, then one token per 1/rate s,
 * refusals say how long to wait; another identity has its own budget. */
static void test_rate_limits(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.checkin_rate = 10; /* per second */
  cfg.checkin_burst = 3;
  cfg.upload_rate = 1;
  cfg.upload_burst = 2;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  uint32_t retry = 0;
  fc_task_info t;
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(fc_engine_checkin(e, "a", 1000, &t, &retry), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1000, &t, &retry), FC_CHECKIN_RATE_LIMITED);
  CHECK_EQ_INT(retry, 100);
  CHECK_EQ_INT(fc_engine_retry_ms(e), 100);
  CHECK_EQ_INT(fc_engine_checkin(e, "b", 1000, &t, &retry), FC_CHECKIN_WAIT); /* its own bucket */
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1050, &t, &retry), FC_CHECKIN_RATE_LIMITED);
  CHECK_EQ_INT(retry, 50);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1100, &t, &retry), FC_CHECKIN_WAIT);
  /* A refused check-in does not count as seen (liveness). */
  fc_engine_status st;
  fc_engine_get_status(e, 1100, &st);
  CHECK_EQ_INT(st.known, 2);
  /* Upload attempts: 2 at once, then 1 per second, whatever the verdict. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 2000), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 2000), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 2000), FC_UP_RATE_LIMITED);
  CHECK_EQ_INT(fc_engine_retry_ms(e), 1000);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 3000), FC_UP_NOT_IN_ROUND);
  fc_engine_destroy(e);
  /* Automatic check-in rate: twice the poll rate, so a client polling as
   * told is never refused. */
  fc_engine_cfg_defaults(&cfg);
  cfg.poll_ms = 100;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  int refused = 0;
  for (uint64_t now = 1000; now < 61000; now += 100) refused += fc_engine_checkin(e, "a", now, &t, &retry) != FC_CHECKIN_WAIT;
  CHECK_EQ_INT(refused, 0);
  fc_engine_destroy(e);
}

/* Identities without a client record (never checked in, or the table is
 * full) share one bucket (review #20, finding 5: one that never checked in
 * got 500 upload refusals in 0.9 s, each written to the audit log). */
static void test_strangers(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.cohort_size = 2;
  cfg.min_updates = 2;
  cfg.upload_rate = 1;
  cfg.upload_burst = 2;
  cfg.stranger_rate = 1;
  cfg.stranger_burst = 3;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  fc_task_info t;
  uint32_t retry = 0;
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1000, &t, &retry), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_checkin(e, "b", 1000, &t, &retry), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 1000), FC_TICK_STARTED);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1001, &t, &retry), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_checkin(e, "b", 1001, &t, &retry), FC_CHECKIN_TRAIN);
  /* A flood from one stranger: the shared burst, then refusals. */
  int answered = 0, limited = 0;
  for (int i = 0; i < 500; i++) {
    int v = fc_engine_upload_begin(e, "mallory", 1, 0, 1100);
    answered += v == FC_UP_NOT_IN_ROUND;
    limited += v == FC_UP_RATE_LIMITED;
  }
  CHECK_EQ_INT(answered, 3);
  CHECK_EQ_INT(limited, 497);
  CHECK_EQ_INT(fc_engine_retry_ms(e), 1000);
  /* Another stranger shares it; the cohort does not. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "trudy", 1, 0, 1100), FC_UP_RATE_LIMITED);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 1100), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", 1, 10, 0.5, 100, 1200), FC_UP_OK);
  /* A second later, one more. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "trudy", 1, 0, 2100), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "trudy", 1, 0, 2100), FC_UP_RATE_LIMITED);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 2100), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", 1, 10, 0.5, 100, 2200), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2300), FC_TICK_AGGREGATE);
  fc_engine_status st;
  fc_engine_get_status(e, 2300, &st);
  CHECK_EQ_INT(st.known, 2); /* strangers get no record */
  fc_engine_destroy(e);

  /* Check-ins once the table is full share the same bucket. */
  cfg.max_clients = 1;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1000, &t, &retry), FC_CHECKIN_WAIT);
  int refused = 0;
  limited = 0;
  for (int i = 0; i < 100; i++) {
    int v = fc_engine_checkin(e, i % 2 ? "c" : "d", 1000, &t, &retry);
    refused += v == FC_CHECKIN_REFUSED;
    limited += v == FC_CHECKIN_RATE_LIMITED;
  }
  CHECK_EQ_INT(refused, 3);
  CHECK_EQ_INT(limited, 97);
  CHECK_EQ_INT(retry, 1000);
  CHECK_EQ_INT(fc_engine_checkin(e, "a", 1000, &t, &retry), FC_CHECKIN_WAIT); /* its own bucket */
  fc_engine_destroy(e);
}

static int state_of(fc_engine *e) {
  fc_engine_status st;
  fc_engine_get_status(e, 0, &st);
  return st.state;
}

/* Secure aggregation: TRAINING (= advertise) -> SA_SHARE -> SA_MASKED ->
 * SA_CONSISTENCY -> SA_UNMASK -> AGGREGATING, each stage closed by "all in"
 * (sa_ready) or its own deadline; uploads only in SA_MASKED. */
static void test_secagg_stages(void) {
  fc_engine *e = make_with(3, 2, 2, 700);
  start3(e, 0);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, (const char *[]){"a", "b", "c"}[i], 10, NULL), FC_CHECKIN_TRAIN);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_cohort(e, names, 8), 3);
  CHECK_EQ_INT(fc_engine_expected(e), 3);
  /* The advertise stage does not end on uploads, and refuses them as too early. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 20), FC_UP_TOO_EARLY);
  CHECK(strstr(fc_upload_verdict_text(FC_UP_TOO_EARLY), "masked-input stage") != NULL);
  CHECK_EQ_INT(fc_engine_tick(e, 4999), FC_TICK_NONE);
  fc_engine_sa_ready(e); /* everyone advertised: close now */
  CHECK_EQ_INT(fc_engine_tick(e, 100), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 100), FC_TICK_NONE);
  CHECK_EQ_INT(state_of(e), FC_ENG_SA_SHARE);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 120), FC_UP_TOO_EARLY);
  /* The share stage has its own deadline: 100 + 700. */
  CHECK_EQ_INT(fc_engine_tick(e, 799), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 800), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 800), FC_TICK_NONE);
  CHECK_EQ_INT(state_of(e), FC_ENG_SA_MASKED);
  /* Masked inputs: accepted now, even past the round's training deadline. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 900), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", 1, 0, 0.5, 1000, 950), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 960), FC_UP_DUPLICATE);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 960), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", 1, 0, 0.5, 1000, 970), FC_UP_OK);
  /* Everyone but c is in, yet the stage stays open until ready or deadline. */
  CHECK_EQ_INT(fc_engine_tick(e, 1000), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 1500), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 1500), FC_TICK_NONE);
  CHECK_EQ_INT(state_of(e), FC_ENG_SA_CONSISTENCY);
  /* c is too late: the masked stage has closed. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", 1, 0, 1600), FC_UP_NOT_IN_ROUND);
  fc_engine_sa_ready(e);
  CHECK_EQ_INT(fc_engine_tick(e, 1600), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 1600), FC_TICK_NONE);
  CHECK_EQ_INT(state_of(e), FC_ENG_SA_UNMASK);
  fc_engine_sa_ready(e);
  CHECK_EQ_INT(fc_engine_tick(e, 1700), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 1700), FC_TICK_AGGREGATE);
  CHECK_EQ_INT(state_of(e), FC_ENG_AGGREGATING);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 1700), FC_TICK_NONE); /* no stage after aggregating */
  fc_engine_set_examples(e, 250); /* known only once unmasked */
  uint8_t sha1[FC_SHA256_LEN] = {7};
  fc_engine_published(e, 1, sha1, 1800);
  const fc_round_stats *r = fc_engine_last_round(e);
  CHECK_EQ_INT(r->completed, 1);
  CHECK_EQ_INT(r->participants, 2);
  CHECK_EQ_INT(r->examples, 250);
  CHECK_EQ_INT(state_of(e), FC_ENG_WAITING);
  fc_engine_destroy(e);
}

/* Keys first (SecAggParams.keys_first): the members advertise and share
 * while they train, so the advertise and share stages close early; the
 * masked stage then runs until the round's training deadline (round_ms from
 * the start) plus a stage, not a stage from its opening, and a masked input
 * is accepted through all of it. Without keys first the same early close
 * gives the masked stage only its own stage. */
static void test_secagg_keys_first(void) {
  for (int keys_first = 0; keys_first <= 1; keys_first++) {
    fc_engine_cfg cfg = cfg_with(3, 2, 2, 700);
    cfg.sa_keys_first = keys_first;
    fc_engine *e = NULL;
    CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
    start3(e, 0); /* the round starts at 1: trained by 5001 */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, (const char *[]){"a", "b", "c"}[i], 10, NULL), FC_CHECKIN_TRAIN);
    fc_engine_sa_ready(e); /* all advertised at once */
    CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_SA_CLOSE);
    CHECK_EQ_INT(fc_engine_sa_advance(e, 50), FC_TICK_NONE);
    CHECK_EQ_INT(state_of(e), FC_ENG_SA_SHARE);
    /* The share stage keeps its own deadline either way: 50 + 700. */
    CHECK_EQ_INT(fc_engine_tick(e, 749), FC_TICK_NONE);
    fc_engine_sa_ready(e); /* all shared */
    CHECK_EQ_INT(fc_engine_tick(e, 749), FC_TICK_SA_CLOSE);
    CHECK_EQ_INT(fc_engine_sa_advance(e, 749), FC_TICK_NONE);
    CHECK_EQ_INT(state_of(e), FC_ENG_SA_MASKED);
    uint64_t end = keys_first ? 5001 + 700 : 749 + 700;
    CHECK_EQ_INT(fc_engine_tick(e, end - 1), FC_TICK_NONE);
    CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, end - 2), FC_UP_OK);
    CHECK_EQ_INT(fc_engine_upload_commit(e, "a", 1, 0, 0.5, 100, end - 1), FC_UP_OK);
    CHECK_EQ_INT(fc_engine_tick(e, end), FC_TICK_SA_CLOSE);
    CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, end), FC_UP_LATE);
    CHECK_EQ_INT(fc_engine_sa_advance(e, end), FC_TICK_NONE);
    CHECK_EQ_INT(state_of(e), FC_ENG_SA_CONSISTENCY);
    fc_engine_destroy(e);
    /* A share stage that closes after the training deadline: the masked
     * stage gets one stage from then, with or without keys first. */
    CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
    start3(e, 0);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, (const char *[]){"a", "b", "c"}[i], 10, NULL), FC_CHECKIN_TRAIN);
    CHECK_EQ_INT(fc_engine_tick(e, 5001), FC_TICK_SA_CLOSE); /* the advertise stage's deadline */
    CHECK_EQ_INT(fc_engine_sa_advance(e, 5001), FC_TICK_NONE);
    CHECK_EQ_INT(fc_engine_tick(e, 5701), FC_TICK_SA_CLOSE);
    CHECK_EQ_INT(fc_engine_sa_advance(e, 6000), FC_TICK_NONE);
    CHECK_EQ_INT(state_of(e), FC_ENG_SA_MASKED);
    CHECK_EQ_INT(fc_engine_tick(e, 6699), FC_TICK_NONE);
    CHECK_EQ_INT(fc_engine_tick(e, 6700), FC_TICK_SA_CLOSE);
    fc_engine_destroy(e);
  }
}

/* One round at `now` among a..d (all checked in): the cohort as a bitmask
 * (a = 1, b = 2, c = 4, d = 8), 0 if no round started; then abandoned. */
static unsigned round_cohort(fc_engine *e, uint64_t now) {
  const char *all[4] = {"a", "b", "c", "d"};
  for (int i = 0; i < 4; i++) checkin(e, all[i], now, NULL);
  if (fc_engine_tick(e, now + 1) != FC_TICK_STARTED) return 0;
  const char *names[8];
  unsigned mask = 0;
  uint32_t n = fc_engine_cohort(e, names, 8);
  for (uint32_t i = 0; i < n; i++) mask |= 1u << (names[i][0] - 'a');
  fc_engine_finalize_failed(e, "test", now + 2);
  return mask;
}

/* Secure aggregation offences (bad unmask shares): counted per identity; at
 * the limit the identity is left out of selection, and out of the count of
 * clients a round needs, until its exclusion ends. */
static void test_offences(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  CHECK_EQ_INT(cfg.offence_limit, 2);
  CHECK_EQ_INT(cfg.offence_exclude_s, 3600);
  cfg.min_clients = 3;
  cfg.cohort_size = 4;
  cfg.min_updates = 2;
  cfg.rounds = 0;
  cfg.client_ttl_ms = 100000;
  cfg.secagg = 1;
  cfg.offence_exclude_s = 60;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  uint64_t until = 99, now = 1000;
  CHECK_EQ_INT(round_cohort(e, now), 0xF);
  CHECK_EQ_INT(fc_engine_offence(e, "zz", now, &until), 0); /* unknown identity */
  CHECK_EQ_INT(until, 0);
  CHECK_EQ_INT(fc_engine_offence(e, "d", now, &until), 1); /* a first offence: counted only */
  CHECK_EQ_INT(until, 0);
  CHECK_EQ_INT(round_cohort(e, now += 10), 0xF);
  CHECK_EQ_INT(fc_engine_offence(e, "d", now, &until), 2); /* repeated: excluded for 60 s */
  CHECK_EQ_INT(until, now + 60000);
  uint64_t end = until;
  int without_d = 0;
  for (int r = 0; r < 5; r++) without_d += round_cohort(e, now += 1000) == 0x7;
  CHECK_EQ_INT(without_d, 5);
  /* A second excluded identity leaves 2 selectable of 4 live, under min_clients 3: no round. */
  CHECK_EQ_INT(fc_engine_offence(e, "c", now, &until), 1);
  CHECK_EQ_INT(fc_engine_offence(e, "c", now, &until), 2);
  CHECK_EQ_INT(round_cohort(e, now += 1000), 0);
  CHECK_EQ_INT(fc_engine_count_live(e, now), 4); /* still live: only not selectable */
  /* d's exclusion ends first (c's 2 s later): d is back, c still out. */
  CHECK_EQ_INT(round_cohort(e, end), 0xB);
  CHECK_EQ_INT(round_cohort(e, until + 5), 0xF);
  /* Each offence past the limit excludes again. */
  CHECK_EQ_INT(fc_engine_offence(e, "d", until + 10, &until), 3);
  CHECK(until > 0);
  fc_engine_destroy(e);
  /* Limit 0: never excluded; exclusion 0 s: counted only. */
  for (int v = 0; v < 2; v++) {
    cfg.offence_limit = v ? 1 : 0;
    cfg.offence_exclude_s = v ? 0 : 60;
    CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
    CHECK_EQ_INT(round_cohort(e, 1000), 0xF);
    for (int k = 1; k <= 3; k++) CHECK_EQ_INT(fc_engine_offence(e, "d", 1000, &until), k);
    CHECK_EQ_INT(until, 0);
    CHECK_EQ_INT(round_cohort(e, 2000), 0xF);
    fc_engine_destroy(e);
  }
}

/* An update an aggregator took and names in a partial (issue 23): no token
 * charged, so a client that drains its own upload tokens at the leader
 * cannot void the partial; a member that said Leave after handing its update
 * over is taken back, even after checking in again, and the round counts it
 * (reviews of the SecAgg tier, finding 1, and of the tier, 2026-12-06). */
static void test_relayed(void) {
  fc_engine *e = make(3, 2, 2);
  start3(e, 0);
  fc_task_info t;
  uint32_t retry;
  CHECK_EQ_INT(checkin(e, "a", 10, &t), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 10, &t), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "c", 10, &t), FC_CHECKIN_TRAIN);
  /* a drains its upload tokens (wrong round each time). */
  int limited = 0;
  for (int i = 0; i < 50; i++) limited += fc_engine_upload_begin(e, "a", 9, 0, 20) == FC_UP_RATE_LIMITED;
  CHECK(limited > 0);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", 1, 0, 20), FC_UP_RATE_LIMITED);
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "a", 1, 0, 20), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", 1, 10, 0.5, 100, 21), FC_UP_OK);
  /* b leaves (its update already at an aggregator), then its partial arrives. */
  fc_leave_info li;
  CHECK(fc_engine_leave(e, "b", 30, &li) == FC_LEAVE_DROPPED || li.replacement[0] == 0);
  /* ... and checks in again (a restarted fedc client: Leave on SIGTERM, then
   * a check-in): still taken back below (a hostile review found the check-in
   * cleared the mark and its aggregator's whole partial was refused). */
  CHECK_EQ_INT(checkin(e, "b", 35, &t), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 40), FC_UP_NOT_IN_ROUND); /* directly: refused as before */
  /* A relayed update the round refuses (another version) leaves b dropped. */
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "b", 1, 5, 40), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 40), FC_UP_NOT_IN_ROUND);
  /* Taken back, then its partial refused (another update in it failed): dropped again. */
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "b", 1, 0, 40), FC_UP_OK);
  fc_engine_upload_abort(e, "b", 1, 0, 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", 1, 0, 40), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "b", 1, 0, 40), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", 1, 10, 0.5, 100, 41), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "b", 1, 0, 42), FC_UP_DUPLICATE);
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "c", 1, 0, 43), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "c", 1, 10, 0.5, 100, 44), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_AGGREGATE); /* all three in: no wait for the deadline */
  uint8_t sha1[FC_SHA256_LEN] = {9};
  fc_engine_published(e, 1, sha1, 60);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 3);
  /* Relayed begins still need a member of the round (no stranger, no wrong round). */
  CHECK_EQ_INT(fc_engine_upload_begin_relayed(e, "zed", 1, 0, 70), FC_UP_NOT_IN_ROUND);
  (void)retry;
  fc_engine_destroy(e);
}

int main(void) {
  test_relayed();
  test_offences();
  test_secagg_stages();
  test_secagg_keys_first();
  test_rate_limits();
  test_strangers();
  test_huge_durations();
  test_restore_and_block();
  test_selection();
  test_not_enough_clients();
  test_full_round_and_verdicts();
  test_deadlines();
  test_pause_and_limits();
  return CHECK_DONE();
}

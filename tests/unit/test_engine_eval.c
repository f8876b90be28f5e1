/*
 * test_engine_eval.c - federated evaluation in the round engine
 * (coordinator/engine_eval.c), driven in-process with synthetic time: the
 * evaluation cohort is drawn from clients not training in that round where
 * possible (and only from those that can evaluate), training members that
 * make up a short cohort evaluate after their training part, pick-up and
 * result deadlines, dropouts (Leave), the per-identity rate limit on
 * reports, the final model's evaluation holding DONE back, a superseded
 * evaluation, the secure-aggregation stages, and that an evaluation never
 * changes the training round's counts or the model version.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {1, 2, 3};
static const uint8_t SHA1[FC_SHA256_LEN] = {4, 5, 6};

static fc_engine *make_cfg(uint32_t cohort, uint32_t min_updates, uint32_t eval_cohort, uint32_t eval_min,
                           uint64_t rounds, int secagg, double upload_burst) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.cohort_size = cohort;
  cfg.min_updates = min_updates;
  cfg.rounds = rounds;
  cfg.pickup_ms = 1000;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 100000;
  cfg.seed = 7;
  cfg.secagg = secagg;
  cfg.sa_stage_ms = 500;
  cfg.eval_every = 1;
  cfg.eval_cohort = eval_cohort;
  cfg.eval_min = eval_min;
  cfg.eval_ms = 4000;
  cfg.upload_burst = upload_burst;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static fc_engine *make(uint32_t cohort, uint32_t eval_cohort, uint32_t eval_min, uint64_t rounds) {
  return make_cfg(cohort, 1, eval_cohort, eval_min, rounds, 0, 10);
}

static char NAMES[12][8];

static int checkin_ev(fc_engine *e, int who, uint64_t now, fc_eval_info *et) {
  uint32_t retry;
  fc_task_info t;
  fc_eval_info tmp;
  return fc_engine_checkin_eval(e, NAMES[who], 1, 0, now, &t, et ? et : &tmp, &retry);
}

/* Every client 0..n-1 checks in (able to evaluate); returns a bitmask of who got TRAIN and, in *evm, EVAL. */
static unsigned checkin_all(fc_engine *e, int n, uint64_t now, unsigned *evm) {
  unsigned train = 0;
  if (evm) *evm = 0;
  for (int i = 0; i < n; i++) {
    int a = checkin_ev(e, i, now, NULL);
    if (a == FC_CHECKIN_TRAIN) train |= 1u << i;
    if (a == FC_CHECKIN_EVAL && evm) *evm |= 1u << i;
  }
  return train;
}

static void upload(fc_engine *e, int who, uint64_t round, uint64_t now) {
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  CHECK_EQ_INT(fc_engine_upload_begin(e, NAMES[who], round, st.version, now), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, NAMES[who], round, 10, 0.5, 100, now), FC_UP_OK);
}

static void report(fc_engine *e, int who, uint64_t round, uint64_t version, uint64_t now, int want) {
  int v = fc_engine_eval_report_begin(e, NAMES[who], round, version, now);
  CHECK_EQ_INT(v, want);
  if (v == FC_UP_OK) CHECK_EQ_INT(fc_engine_eval_report_commit(e, NAMES[who], round, now), FC_UP_OK);
}

/* A training round from start to publish (version `to`): every selected client uploads. */
static unsigned train_round(fc_engine *e, int n, uint64_t *now, uint64_t to) {
  CHECK_EQ_INT(fc_engine_tick(e, (*now)++), FC_TICK_STARTED);
  fc_engine_status st;
  fc_engine_get_status(e, *now, &st);
  unsigned m = checkin_all(e, n, (*now)++, NULL);
  for (int i = 0; i < n; i++)
    if (m & (1u << i)) upload(e, i, st.round, *now);
  CHECK_EQ_INT(fc_engine_tick(e, (*now)++), FC_TICK_AGGREGATE);
  fc_engine_published(e, to, to == 1 ? SHA1 : SHA0, (*now)++);
  return m;
}

static void test_disjoint_cohort(void) {
  fc_engine *e = make(4, 4, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 10, now++, NULL);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_NONE); /* nothing due before a model is published */
  train_round(e, 10, &now, 1);
  fc_eval_info ei;
  fc_engine_eval_get(e, &ei);
  CHECK_EQ_INT(ei.state, FC_EV_PENDING);
  CHECK_EQ_INT(ei.round, 1);
  CHECK_EQ_INT(ei.version, 1);
  /* The driver's order: the training tick first (round 2 draws its cohort), then the evaluation's. */
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_STARTED);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_STARTED);
  unsigned evm = 0, train = checkin_all(e, 10, now++, &evm);
  CHECK_EQ_INT(__builtin_popcount(train), 4);
  CHECK_EQ_INT(__builtin_popcount(evm), 4);
  CHECK_EQ_INT(train & evm, 0); /* disjoint */
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  uint32_t sel = st.selected, rec = st.received;
  for (int i = 0; i < 10; i++)
    if (evm & (1u << i)) report(e, i, 1, 1, now, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_FINISH);
  fc_engine_get_status(e, now, &st);
  CHECK_EQ_INT(st.selected, sel); /* the training round is untouched */
  CHECK_EQ_INT(st.received, rec);
  CHECK_EQ_INT(st.version, 1);
  CHECK_EQ_INT(st.state, FC_ENG_TRAINING);
  fc_engine_eval_finished(e, NULL, now);
  CHECK(!fc_engine_eval_busy(e));
  fc_engine_destroy(e);
}

static void test_only_capable(void) {
  fc_engine *e = make(2, 3, 1, 10);
  uint64_t now = 100;
  uint32_t retry;
  fc_task_info t;
  fc_eval_info et;
  for (int i = 0; i < 6; i++) /* clients 3..5 speak an older protocol: never asked */
    fc_engine_checkin_eval(e, NAMES[i], i < 3, 0, now, &t, &et, &retry);
  train_round(e, 6, &now, 1); /* the round's cohort may come from all six */
  for (int i = 0; i < 6; i++) fc_engine_checkin_eval(e, NAMES[i], i < 3, 0, now, &t, &et, &retry);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_STARTED);
  const char *names[8];
  uint32_t n = fc_engine_eval_cohort(e, names, 8);
  CHECK_EQ_INT(n, 3);
  for (uint32_t i = 0; i < n; i++) CHECK(strcmp(names[i], NAMES[3]) < 0);
  fc_engine_destroy(e);
}

/* Too few outside the round: the rest comes from its members, who train first. */
static void test_short_cohort_from_training(void) {
  fc_engine *e = make(4, 3, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1);
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_STARTED); /* round 2: 4 of 5 */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_STARTED);
  fc_eval_info ei;
  fc_engine_eval_get(e, &ei);
  CHECK_EQ_INT(ei.selected, 3);
  unsigned evm = 0, train = checkin_all(e, 5, now++, &evm);
  CHECK_EQ_INT(__builtin_popcount(train), 4);
  CHECK_EQ_INT(__builtin_popcount(evm), 1); /* the one outside the round */
  const char *names[8];
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  /* The two training members evaluate once they uploaded. */
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  for (int i = 0; i < 5; i++)
    if (train & (1u << i)) upload(e, i, st.round, now);
  unsigned evm2 = 0;
  CHECK_EQ_INT(checkin_all(e, 5, now++, &evm2), 0);
  CHECK_EQ_INT(__builtin_popcount(evm2 & train), 2);
  fc_engine_destroy(e);
}

/* A member that picked up its training task resumes it at a check-in,
 * unless it says it gave that round up (last_round): then it evaluates. */
static void test_gave_up_training(void) {
  fc_engine *e = make(3, 3, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 3, now++, NULL);
  train_round(e, 3, &now, 1);
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_STARTED); /* round 2: all three */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_STARTED);
  CHECK_EQ_INT(checkin_ev(e, 0, now, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin_ev(e, 0, now + 1, NULL), FC_CHECKIN_TRAIN); /* resumes */
  uint32_t retry;
  fc_task_info t;
  fc_eval_info et;
  CHECK_EQ_INT(fc_engine_checkin_eval(e, NAMES[0], 1, 2, now + 2, &t, &et, &retry), FC_CHECKIN_EVAL);
  CHECK_EQ_INT(et.round, 1);
  fc_engine_destroy(e);
}

static void test_pickup_and_deadline(void) {
  /* Pick-up: one of three picks up, eval_min 2: abandoned at the pick-up deadline. */
  fc_engine *e = make(2, 3, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  int first = names[0][1] - '0';
  CHECK_EQ_INT(checkin_ev(e, first, now + 10, NULL), FC_CHECKIN_EVAL);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 999), FC_EVT_NONE);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 1000), FC_EVT_ABANDON);
  CHECK(strstr(fc_engine_eval_reason(e), "only 1 of the cohort picked up") != NULL);
  fc_engine_eval_finished(e, NULL, now + 1000);
  fc_engine_destroy(e);

  /* Deadline: three pick up, two report in time: FINISH at the deadline; the third is late. */
  e = make(2, 3, 2, 10);
  now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1);
  uint64_t t0 = now;
  CHECK_EQ_INT(fc_engine_eval_tick(e, t0), FC_EVT_STARTED);
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  int who[3];
  for (int i = 0; i < 3; i++) {
    who[i] = names[i][1] - '0';
    CHECK_EQ_INT(checkin_ev(e, who[i], t0 + 10, NULL), FC_CHECKIN_EVAL);
  }
  report(e, who[0], 1, 0, t0 + 20, FC_UP_WRONG_VERSION);
  report(e, who[0], 2, 1, t0 + 20, FC_UP_WRONG_ROUND);
  report(e, who[0], 1, 1, t0 + 20, FC_UP_OK);
  report(e, who[0], 1, 1, t0 + 21, FC_UP_DUPLICATE);
  report(e, who[1], 1, 1, t0 + 30, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, t0 + 3999), FC_EVT_NONE); /* waits for the third */
  CHECK_EQ_INT(fc_engine_eval_tick(e, t0 + 4000), FC_EVT_FINISH);
  report(e, who[2], 1, 1, t0 + 4001, FC_UP_NOT_IN_ROUND);
  fc_eval_info ei;
  fc_engine_eval_get(e, &ei);
  CHECK_EQ_INT(ei.received, 2);
  fc_engine_eval_finished(e, NULL, t0 + 4001);
  fc_engine_destroy(e);

  /* Too few by the deadline: abandoned. */
  e = make(2, 3, 3, 10);
  now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1);
  t0 = now;
  CHECK_EQ_INT(fc_engine_eval_tick(e, t0), FC_EVT_STARTED);
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin_ev(e, names[i][1] - '0', t0 + 10, NULL), FC_CHECKIN_EVAL);
  report(e, names[0][1] - '0', 1, 1, t0 + 20, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, t0 + 4000), FC_EVT_ABANDON);
  CHECK(strstr(fc_engine_eval_reason(e), "deadline passed with 1 of 3 results") != NULL);
  fc_engine_destroy(e);
}

/* Due, but too few clients that can evaluate: it waits eval_ms for them, then is abandoned. */
static void test_too_few_to_draw(void) {
  fc_engine *e = make(2, 3, 3, 10);
  uint64_t now = 100;
  uint32_t retry;
  fc_task_info t;
  fc_eval_info et;
  for (int i = 0; i < 3; i++) fc_engine_checkin_eval(e, NAMES[i], i < 2, 0, now, &t, &et, &retry);
  CHECK_EQ_INT(fc_engine_tick(e, now++), FC_TICK_STARTED);
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  for (int i = 0; i < 3; i++)
    if (fc_engine_checkin_eval(e, NAMES[i], i < 2, 0, now, &t, &et, &retry) == FC_CHECKIN_TRAIN) upload(e, i, st.round, now);
  CHECK_EQ_INT(fc_engine_tick(e, now++), FC_TICK_AGGREGATE);
  uint64_t due = now;
  fc_engine_published(e, 1, SHA1, due);
  CHECK_EQ_INT(fc_engine_eval_tick(e, due + 1), FC_EVT_NONE); /* 2 can evaluate, eval_min 3: waits */
  CHECK_EQ_INT(fc_engine_eval_tick(e, due + 3999), FC_EVT_NONE);
  CHECK_EQ_INT(fc_engine_eval_tick(e, due + 4000), FC_EVT_ABANDON);
  CHECK(strstr(fc_engine_eval_reason(e), "too few live clients could evaluate") != NULL);
  fc_engine_eval_finished(e, NULL, due + 4000);
  CHECK(!fc_engine_eval_busy(e));
  fc_engine_destroy(e);
}

/* A member that leaves is dropped; the rest finish without waiting for it. */
static void test_dropout(void) {
  fc_engine *e = make(2, 3, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  int who[3];
  for (int i = 0; i < 3; i++) who[i] = names[i][1] - '0';
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin_ev(e, who[i], now + 1, NULL), FC_CHECKIN_EVAL);
  fc_leave_info li;
  fc_engine_leave(e, NAMES[who[2]], now + 2, &li);
  CHECK(!fc_engine_eval_member(e, NAMES[who[2]]));
  report(e, who[0], 1, 1, now + 3, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 3), FC_EVT_NONE);
  report(e, who[1], 1, 1, now + 4, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 4), FC_EVT_FINISH);
  report(e, who[2], 1, 1, now + 5, FC_UP_NOT_IN_ROUND);
  fc_engine_destroy(e);
}

/* Reports take from the client's upload bucket: past its burst they are refused with a wait. */
static void test_rate_limit(void) {
  fc_engine *e = make_cfg(2, 1, 3, 2, 10, 0, 3);
  uint64_t now = 100;
  checkin_all(e, 5, now++, NULL);
  train_round(e, 5, &now, 1); /* the cohort's members spent one token each */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  const char *names[8];
  fc_engine_eval_cohort(e, names, 8);
  int w = names[0][1] - '0';
  CHECK_EQ_INT(checkin_ev(e, w, now, NULL), FC_CHECKIN_EVAL);
  int refused = 0;
  for (int i = 0; i < 6; i++) {
    int v = fc_engine_eval_report_begin(e, NAMES[w], 1, 0 /* wrong version: refused, not counted */, now);
    if (v == FC_UP_RATE_LIMITED) refused++;
    else CHECK_EQ_INT(v, FC_UP_WRONG_VERSION);
  }
  CHECK(refused >= 3);
  CHECK(fc_engine_retry_ms(e) > 0);
  fc_engine_destroy(e);
}

/* The final model: DONE is held back from clients that could evaluate until the cohort is drawn. */
static void test_final_model(void) {
  fc_engine *e = make(2, 2, 2, 1);
  uint64_t now = 100;
  checkin_all(e, 4, now++, NULL);
  train_round(e, 4, &now, 1);
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  CHECK_EQ_INT(st.state, FC_ENG_DONE);
  CHECK(fc_engine_eval_busy(e));
  CHECK_EQ_INT(checkin_ev(e, 0, now, NULL), FC_CHECKIN_WAIT); /* not DONE: it may be drawn */
  uint32_t retry;
  fc_task_info t;
  CHECK_EQ_INT(fc_engine_checkin(e, NAMES[3], now, &t, &retry), FC_CHECKIN_DONE); /* cannot evaluate */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  unsigned evm = 0;
  checkin_all(e, 3, now + 1, &evm);
  CHECK_EQ_INT(__builtin_popcount(evm), 2);
  for (int i = 0; i < 3; i++)
    if (!(evm & (1u << i))) CHECK_EQ_INT(checkin_ev(e, i, now + 2, NULL), FC_CHECKIN_DONE);
  for (int i = 0; i < 3; i++)
    if (evm & (1u << i)) report(e, i, 1, 1, now + 3, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 3), FC_EVT_FINISH);
  fc_engine_eval_finished(e, NULL, now + 3);
  CHECK(!fc_engine_eval_busy(e));
  for (int i = 0; i < 3; i++)
    if (evm & (1u << i)) CHECK_EQ_INT(checkin_ev(e, i, now + 4, NULL), FC_CHECKIN_DONE);
  fc_engine_destroy(e);

  /* The last round ends while the previous model's evaluation still runs:
   * its members are held back from DONE once they reported, until the final
   * model's evaluation drew its cohort. */
  e = make(2, 2, 2, 2);
  now = 100;
  checkin_all(e, 2, now++, NULL);
  train_round(e, 2, &now, 1);
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_STARTED); /* round 2 */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now++), FC_EVT_STARTED); /* its members evaluate round 1's model after it */
  fc_engine_get_status(e, now, &st);
  for (int i = 0; i < 2; i++) CHECK_EQ_INT(checkin_ev(e, i, now, NULL), FC_CHECKIN_TRAIN);
  for (int i = 0; i < 2; i++) upload(e, i, st.round, now);
  CHECK_EQ_INT(fc_engine_tick(e, now++), FC_TICK_AGGREGATE);
  fc_engine_published(e, 2, SHA0, now++); /* DONE; round 2's evaluation waits as next */
  for (int i = 0; i < 2; i++) CHECK_EQ_INT(checkin_ev(e, i, now, NULL), FC_CHECKIN_EVAL);
  for (int i = 0; i < 2; i++) report(e, i, 1, 1, now, FC_UP_OK);
  for (int i = 0; i < 2; i++) CHECK_EQ_INT(checkin_ev(e, i, now, NULL), FC_CHECKIN_WAIT); /* not DONE yet */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_FINISH);
  fc_engine_eval_finished(e, NULL, now);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED); /* the final model's, both still there */
  for (int i = 0; i < 2; i++) CHECK_EQ_INT(checkin_ev(e, i, now, NULL), FC_CHECKIN_EVAL);
  fc_engine_destroy(e);
}

/* A pending evaluation superseded by a newer model; one due while another runs waits. */
static void test_superseded_and_queued(void) {
  fc_engine *e = make(2, 2, 2, 10);
  uint64_t now = 100;
  checkin_all(e, 6, now++, NULL);
  train_round(e, 6, &now, 1);
  fc_engine_pause(e, 1); /* evaluations wait while paused: the next publish supersedes round 1's */
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_NONE);
  fc_engine_pause(e, 0);
  train_round(e, 6, &now, 2);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_SKIPPED);
  uint64_t r, v;
  fc_engine_eval_skipped(e, &r, &v);
  CHECK_EQ_INT(r, 1);
  CHECK_EQ_INT(v, 1);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  fc_eval_info ei;
  fc_engine_eval_get(e, &ei);
  CHECK_EQ_INT(ei.round, 2);
  CHECK_EQ_INT(ei.version, 2);
  /* Round 3 completes while round 2's evaluation runs: it waits as next. */
  now += 10;
  train_round(e, 6, &now, 3);
  uint64_t next = 0;
  CHECK_EQ_INT(fc_engine_eval_pending_round(e, &next), 2);
  CHECK_EQ_INT(next, 3);
  CHECK_EQ_INT(fc_engine_eval_tick(e, ei.deadline_ms), FC_EVT_ABANDON); /* nobody reported */
  fc_engine_eval_finished(e, NULL, ei.deadline_ms);
  fc_engine_eval_get(e, &ei);
  CHECK_EQ_INT(ei.state, FC_EV_PENDING);
  CHECK_EQ_INT(ei.round, 3);
  fc_engine_destroy(e);
}

/* Secure aggregation: RUNNING is the advertise stage; reports only in the masked stage. */
static void test_secagg_stages(void) {
  fc_engine *e = make_cfg(3, 3, 3, 2, 10, 1, 10);
  uint64_t now = 100;
  checkin_all(e, 6, now++, NULL);
  /* A SecAgg training round: through its stages to AGGREGATE. */
  CHECK_EQ_INT(fc_engine_tick(e, now++), FC_TICK_STARTED);
  fc_engine_status st;
  fc_engine_get_status(e, now, &st);
  unsigned m = checkin_all(e, 6, now++, NULL);
  fc_engine_sa_ready(e);
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_SA_CLOSE);
  fc_engine_sa_advance(e, now++); /* shares */
  fc_engine_sa_advance(e, now++); /* masked */
  for (int i = 0; i < 6; i++)
    if (m & (1u << i)) upload(e, i, st.round, now);
  fc_engine_sa_advance(e, now++);
  fc_engine_sa_advance(e, now++);
  CHECK_EQ_INT(fc_engine_sa_advance(e, now++), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, now++);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_STARTED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_eval_cohort(e, names, 8), 3);
  int w = names[0][1] - '0';
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin_ev(e, names[i][1] - '0', now, NULL), FC_CHECKIN_EVAL);
  report(e, w, 1, 1, now, FC_UP_TOO_EARLY);
  fc_engine_eval_sa_ready(e);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now), FC_EVT_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_eval_sa_advance(e, now), FC_EVT_NONE); /* shares */
  report(e, w, 1, 1, now, FC_UP_TOO_EARLY);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 499), FC_EVT_NONE);
  CHECK_EQ_INT(fc_engine_eval_tick(e, now + 500), FC_EVT_SA_CLOSE); /* the stage's deadline */
  now += 500;
  CHECK_EQ_INT(fc_engine_eval_sa_advance(e, now), FC_EVT_NONE); /* masked */
  report(e, w, 1, 1, now, FC_UP_OK);
  CHECK_EQ_INT(fc_engine_eval_sa_advance(e, now), FC_EVT_NONE); /* consistency */
  report(e, names[1][1] - '0', 1, 1, now, FC_UP_NOT_IN_ROUND); /* the masked stage closed */
  CHECK_EQ_INT(fc_engine_eval_sa_advance(e, now), FC_EVT_NONE); /* unmask */
  CHECK_EQ_INT(fc_engine_eval_sa_advance(e, now), FC_EVT_FINISH);
  fc_engine_get_status(e, now, &st);
  CHECK_EQ_INT(st.version, 1);
  fc_engine_destroy(e);
}

int main(void) {
  for (int i = 0; i < 12; i++) snprintf(NAMES[i], sizeof NAMES[i], "c%d", i);
  test_disjoint_cohort();
  test_only_capable();
  test_short_cohort_from_training();
  test_gave_up_training();
  test_pickup_and_deadline();
  test_dropout();
  test_too_few_to_draw();
  test_rate_limit();
  test_final_model();
  test_superseded_and_queued();
  test_secagg_stages();
  return CHECK_DONE();
}

/*
 * test_engine_leave.c - the round engine's Leave, replacement and drain
 * bookkeeping (issue 21), in-process with synthetic time:
 *   - a client that leaves is not live (not selected, not counted) until it
 *     checks in again;
 *   - a cohort member that leaves before uploading is dropped and, while the
 *     cohort is picking up, replaced from the live pool (the round completes
 *     with its full cohort, nothing abandoned); later the cohort shrinks, and
 *     a round that cannot reach min_updates any more is abandoned at once;
 *   - a member that misses pick-up is replaced when the round would
 *     otherwise be abandoned, until the pool runs dry;
 *   - never under Poisson sampling; under secure aggregation only while no
 *     task has gone out (the session is rebuilt: tick STARTED), not after;
 *   - DONE: who among the live clients has not heard DONE yet;
 *   - a member that gives its task up (Leave with a round, 1.19) is dropped
 *     as by a Leave but stays live; a give-up of a round it holds no task
 *     of changes nothing.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {1, 2, 3};
static const uint8_t SHA1[FC_SHA256_LEN] = {9};

static fc_engine *make_r(uint32_t cohort, uint32_t min_updates, int secagg, uint64_t rounds) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.cohort_size = cohort;
  cfg.min_updates = min_updates;
  cfg.rounds = rounds;
  cfg.pickup_ms = 1000;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 10000;
  cfg.seed = 7;
  cfg.secagg = secagg;
  cfg.sa_stage_ms = 700;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static fc_engine *make(uint32_t cohort, uint32_t min_updates, int secagg) {
  return make_r(cohort, min_updates, secagg, 5);
}

static int checkin(fc_engine *e, const char *who, uint64_t now) {
  uint32_t retry;
  fc_task_info t;
  return fc_engine_checkin(e, who, now, &t, &retry);
}

static const char *NAMES[] = {"a", "b", "c", "d", "e"};

/* n clients check in at `now`; a round starts at now + 1. */
static void start(fc_engine *e, int n, uint64_t now) {
  for (int i = 0; i < n; i++) CHECK_EQ_INT(checkin(e, NAMES[i], now), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, now + 1), FC_TICK_STARTED);
}

static int in_cohort(fc_engine *e, const char *who) {
  const char *names[8];
  uint32_t n = fc_engine_cohort(e, names, 8);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(names[i], who) == 0) return 1;
  return 0;
}

/* The cohort members among the first n of NAMES, in NAMES order, into m
 * (room for 8); how many. */
static int members(fc_engine *e, int n, const char **m) {
  int k = 0;
  for (int i = 0; i < n && k < 8; i++)
    if (in_cohort(e, NAMES[i])) m[k++] = NAMES[i];
  return k;
}

/* The first client in NAMES that is (in = 1) or is not (in = 0) in the cohort. */
static const char *pick(fc_engine *e, int n, int in) {
  for (int i = 0; i < n; i++)
    if (in_cohort(e, NAMES[i]) == in) return NAMES[i];
  return NULL;
}

/* A member of the cohort other than `not`. */
static const char *other_member(fc_engine *e, const char *not) {
  const char *names[8];
  uint32_t n = fc_engine_cohort(e, names, 8);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(names[i], not) != 0) return names[i];
  return NULL;
}

static void upload(fc_engine *e, const char *who, uint64_t round, uint64_t now) {
  CHECK_EQ_INT(fc_engine_upload_begin(e, who, round, 0, now), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, who, round, 10, 0.5, 100, now), FC_UP_OK);
}

static int state_of(fc_engine *e) {
  fc_engine_status st;
  fc_engine_get_status(e, 0, &st);
  return st.state;
}

static void test_leave_not_live(void) {
  fc_engine *e = make(2, 2, 0);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "nobody", 0, &li), FC_LEAVE_GONE);
  checkin(e, "a", 0);
  checkin(e, "b", 0);
  CHECK_EQ_INT(fc_engine_count_live(e, 10), 2);
  CHECK_EQ_INT(fc_engine_leave(e, "a", 10, &li), FC_LEAVE_IDLE);
  CHECK_EQ_INT(fc_engine_count_live(e, 20), 1);
  CHECK_EQ_INT(fc_engine_leave(e, "a", 20, &li), FC_LEAVE_GONE); /* twice: nothing more to record */
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_NONE);               /* min_clients 2: one live */
  checkin(e, "a", 40);                                               /* back */
  CHECK_EQ_INT(fc_engine_count_live(e, 50), 2);
  CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_STARTED);
  fc_engine_destroy(e);
}

/* Issue 21's case: a cohort of 2 out of 3, one member stops before picking
 * up its task. It is replaced at once; the round completes, full. */
static void test_leave_replaced_while_picking_up(void) {
  fc_engine *e = make(2, 2, 0);
  start(e, 3, 0);
  const char *gone = pick(e, 3, 1), *spare = pick(e, 3, 0);
  const char *stay = other_member(e, gone);
  CHECK_EQ_INT(checkin(e, stay, 10), FC_CHECKIN_TRAIN);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, gone, 20, &li), FC_LEAVE_REPLACED);
  CHECK(strcmp(li.replacement, spare) == 0);
  CHECK_EQ_INT(li.round, 1);
  CHECK_EQ_INT(li.selected, 2);
  CHECK(!in_cohort(e, gone) && in_cohort(e, spare));
  CHECK_EQ_INT(fc_engine_upload_begin(e, gone, 1, 0, 30), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(checkin(e, spare, 40), FC_CHECKIN_TRAIN);
  upload(e, stay, 1, 50);
  CHECK_EQ_INT(fc_engine_tick(e, 60), FC_TICK_NONE); /* waits for the replacement */
  upload(e, spare, 1, 70);
  CHECK_EQ_INT(fc_engine_tick(e, 80), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 90);
  CHECK_EQ_INT(fc_engine_last_round(e)->completed, 1);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 2);
  /* The next round never selects the client that left. */
  CHECK_EQ_INT(checkin(e, stay, 100), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, spare, 100), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 110), FC_TICK_STARTED);
  CHECK(!in_cohort(e, gone));
  fc_engine_status st;
  fc_engine_get_status(e, 110, &st);
  CHECK_EQ_INT(st.abandoned, 0);
  fc_engine_destroy(e);
}

/* After the pick-up deadline a replacement would cost the round a training
 * time: the cohort shrinks instead, and the round ends as soon as the rest
 * are in. Leaving while uploading: the late commit is refused. */
static void test_leave_shrinks_after_pickup(void) {
  fc_engine *e = make(3, 2, 0);
  start(e, 4, 0);
  const char *m[8];
  CHECK_EQ_INT(members(e, 4, m), 3);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, m[i], 10), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 1100), FC_TICK_NONE); /* past pick-up: all had picked up */
  upload(e, m[0], 1, 1200);
  CHECK_EQ_INT(fc_engine_upload_begin(e, m[1], 1, 0, 1300), FC_UP_OK);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, m[1], 1310, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(li.selected, 2);
  CHECK_EQ_INT(fc_engine_upload_commit(e, m[1], 1, 10, 0.5, 100, 1320), FC_UP_NOT_IN_ROUND);
  /* A member whose update already counts leaves: nothing changes for the round. */
  CHECK_EQ_INT(fc_engine_leave(e, m[0], 1330, &li), FC_LEAVE_IDLE);
  upload(e, m[2], 1, 1400);
  CHECK_EQ_INT(fc_engine_tick(e, 1410), FC_TICK_AGGREGATE); /* long before the 5 s deadline */
  fc_engine_published(e, 1, SHA1, 1420);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 2);
  fc_engine_destroy(e);
}

/* No one to replace a member that leaves, and the round cannot reach
 * min_updates any more: abandoned at the next tick, not at a deadline. */
static void test_leave_abandons_when_hopeless(void) {
  fc_engine *e = make(3, 3, 0);
  start(e, 3, 0);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "b", 10, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(fc_engine_tick(e, 20), FC_TICK_ABANDON);
  CHECK(strstr(fc_engine_abandon_reason(e), "left") != NULL);
  /* b is not counted live: no round for a and c alone (3 needed) ... */
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_NONE);
  checkin(e, "b", 40); /* ... until it checks in again */
  CHECK_EQ_INT(fc_engine_tick(e, 41), FC_TICK_STARTED);
  fc_engine_destroy(e);
}

/* A member that misses pick-up: replaced rather than the round abandoned;
 * each replacement gets a pick-up window of its own; when the pool runs dry
 * the round is abandoned. */
static void test_missed_pickup_replaced(void) {
  fc_engine *e = make(2, 2, 0);
  start(e, 4, 0);
  const char *m0 = pick(e, 4, 1);
  CHECK_EQ_INT(checkin(e, m0, 10), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 999), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 1001), FC_TICK_REPLACED);
  uint32_t missed, added;
  fc_engine_last_replacement(e, &missed, &added);
  CHECK_EQ_INT(missed, 1);
  CHECK_EQ_INT(added, 1);
  CHECK_EQ_INT(fc_engine_expected(e), 2);
  /* The replacement misses its window too (1001 + 1000): the last live
   * client replaces it. */
  CHECK_EQ_INT(fc_engine_tick(e, 2000), FC_TICK_NONE);
  CHECK_EQ_INT(fc_engine_tick(e, 2001), FC_TICK_REPLACED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_cohort(e, names, 8), 2);
  const char *last = other_member(e, m0);
  CHECK_EQ_INT(checkin(e, last, 2100), FC_CHECKIN_TRAIN);
  upload(e, m0, 1, 2200);
  upload(e, last, 1, 2300);
  CHECK_EQ_INT(fc_engine_tick(e, 2310), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 2320);
  fc_engine_status st;
  fc_engine_get_status(e, 2320, &st);
  CHECK_EQ_INT(st.abandoned, 0);
  CHECK_EQ_INT(st.completed, 1);
  fc_engine_destroy(e);

  /* Nobody left to draw: abandoned at the third window, naming why. */
  e = make(2, 2, 0);
  start(e, 3, 0);
  m0 = pick(e, 3, 1);
  CHECK_EQ_INT(checkin(e, m0, 10), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 1001), FC_TICK_REPLACED);
  CHECK_EQ_INT(fc_engine_tick(e, 2001), FC_TICK_ABANDON);
  CHECK(strstr(fc_engine_abandon_reason(e), "no live client could replace") != NULL);
  fc_engine_destroy(e);
}

/* Poisson sampling (DP): a member that was not sampled must never join. */
static void test_no_replacement_under_poisson(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 2;
  cfg.cohort_size = 0;
  cfg.cohort_fraction = 0.5;
  cfg.poisson = 1;
  cfg.sample_secret = 12345;
  cfg.min_updates = 1;
  cfg.pickup_ms = 1000;
  cfg.round_ms = 5000;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  start(e, 5, 0);
  const char *m = pick(e, 5, 1);
  CHECK(m != NULL && pick(e, 5, 0) != NULL); /* this secret samples some, not all */
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, m, 10, &li), FC_LEAVE_DROPPED);
  fc_engine_destroy(e);
}

/* Secure aggregation: the task carries the cohort and the client's index,
 * which fix the session. Before any task went out a member is replaced and
 * the session rebuilt (tick STARTED; check-ins wait until then); once one
 * went out the cohort only shrinks, and after the advertise stage the SecAgg
 * core deals with the dropout. */
static void test_secagg_replacement(void) {
  fc_engine *e = make(2, 2, 1);
  start(e, 3, 0);
  const char *gone = pick(e, 3, 1), *spare = pick(e, 3, 0);
  const char *stay = other_member(e, gone);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, gone, 10, &li), FC_LEAVE_REPLACED);
  CHECK(strcmp(li.replacement, spare) == 0);
  CHECK_EQ_INT(checkin(e, stay, 20), FC_CHECKIN_WAIT); /* session being rebuilt */
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_STARTED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_cohort(e, names, 8), 2);
  CHECK(in_cohort(e, stay) && in_cohort(e, spare) && !in_cohort(e, gone));
  CHECK_EQ_INT(checkin(e, stay, 40), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_NONE);
  /* A task went out: the replacement's own leave is not replaced (the
   * remaining member's session names it), the round cannot reach 2. */
  CHECK_EQ_INT(fc_engine_leave(e, spare, 60, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(fc_engine_expected(e), 1);
  CHECK_EQ_INT(fc_engine_tick(e, 70), FC_TICK_ABANDON);
  fc_engine_destroy(e);

  /* A cohort of 3 (min 2): one picked up, one leaves: shrinks to 2, the
   * advertise stage waits for 2 (fc_engine_expected), no session rebuild. */
  e = make(3, 2, 1);
  start(e, 4, 0);
  const char *m[8];
  CHECK_EQ_INT(members(e, 4, m), 3);
  CHECK_EQ_INT(checkin(e, m[0], 10), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_leave(e, m[1], 20, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(fc_engine_expected(e), 2);
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_NONE);
  CHECK_EQ_INT(checkin(e, m[2], 40), FC_CHECKIN_TRAIN);
  /* After the advertise stage: nothing changes in the engine's cohort. */
  fc_engine_sa_ready(e);
  CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_SA_CLOSE);
  CHECK_EQ_INT(fc_engine_sa_advance(e, 50), FC_TICK_NONE);
  CHECK_EQ_INT(state_of(e), FC_ENG_SA_SHARE);
  CHECK_EQ_INT(fc_engine_leave(e, m[2], 60, &li), FC_LEAVE_IDLE);
  CHECK_EQ_INT(fc_engine_expected(e), 2);
  CHECK_EQ_INT(fc_engine_tick(e, 70), FC_TICK_NONE);
  fc_engine_destroy(e);
}

/* DONE: the coordinator's drain waits for the live clients that have not
 * heard DONE; one that left is not waited for; add_rounds forgets. */
static void test_done_pending(void) {
  fc_engine *e = make_r(2, 2, 0, 1);
  start(e, 3, 0);
  const char *m0 = pick(e, 3, 1), *m1 = other_member(e, m0), *idle = pick(e, 3, 0);
  checkin(e, m0, 10);
  checkin(e, m1, 10);
  upload(e, m0, 1, 20);
  upload(e, m1, 1, 20);
  CHECK_EQ_INT(fc_engine_tick(e, 30), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 40);
  CHECK_EQ_INT(state_of(e), FC_ENG_DONE);
  const char *names[4];
  CHECK_EQ_INT(fc_engine_done_pending(e, 50, names, 4), 3);
  CHECK_EQ_INT(checkin(e, m0, 60), FC_CHECKIN_DONE);
  CHECK_EQ_INT(fc_engine_done_pending(e, 70, names, 4), 2);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, m1, 80, &li), FC_LEAVE_IDLE);
  CHECK_EQ_INT(fc_engine_done_pending(e, 90, names, 1), 1);
  CHECK(strcmp(names[0], idle) == 0);
  CHECK_EQ_INT(checkin(e, idle, 100), FC_CHECKIN_DONE);
  CHECK_EQ_INT(fc_engine_done_pending(e, 110, names, 4), 0);
  CHECK_EQ_INT(fc_engine_max_retry_ms(e), 1000); /* the poll interval */
  fc_engine_add_rounds(e, 1);
  CHECK_EQ_INT(fc_engine_done_pending(e, 120, names, 4), 2); /* m0 and idle must hear DONE again */
  /* Past the liveness window nobody is waited for. */
  fc_engine_stop_budget(e);
  CHECK_EQ_INT(fc_engine_done_pending(e, 100 + 10001, names, 4), 0);
  fc_engine_destroy(e);
}

/* Give-up (fc_engine_give_up): only the round the member holds a task of;
 * the round stops waiting for it; it stays live and selectable. */
static void test_give_up(void) {
  fc_engine *e = make(3, 2, 0);
  start(e, 4, 0);
  const char *m[8];
  CHECK_EQ_INT(members(e, 4, m), 3);
  const char *out = pick(e, 4, 0);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(checkin(e, m[i], 10), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 1100), FC_TICK_NONE); /* past pick-up */
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_give_up(e, "nobody", 1, 1200, &li), FC_LEAVE_GONE);
  CHECK_EQ_INT(fc_engine_give_up(e, out, 1, 1200, &li), FC_LEAVE_GONE); /* never picked */
  CHECK_EQ_INT(fc_engine_give_up(e, m[1], 2, 1200, &li), FC_LEAVE_GONE); /* not its round */
  CHECK_EQ_INT(fc_engine_give_up(e, m[1], 0, 1200, &li), FC_LEAVE_GONE);
  upload(e, m[0], 1, 1200);
  CHECK_EQ_INT(fc_engine_give_up(e, m[0], 1, 1250, &li), FC_LEAVE_IDLE); /* its update counts */
  CHECK_EQ_INT(fc_engine_give_up(e, m[1], 1, 1300, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(li.round, 1);
  CHECK_EQ_INT(li.selected, 2);
  CHECK_EQ_INT(fc_engine_give_up(e, m[1], 1, 1310, &li), FC_LEAVE_IDLE); /* twice: nothing more */
  CHECK_EQ_INT(fc_engine_upload_begin(e, m[1], 1, 0, 1320), FC_UP_NOT_IN_ROUND);
  upload(e, m[2], 1, 1400);
  CHECK_EQ_INT(fc_engine_tick(e, 1410), FC_TICK_AGGREGATE); /* long before the 5 s deadline */
  fc_engine_published(e, 1, SHA1, 1420);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 2);
  /* Unlike a Leave, it is still live without checking in again. */
  CHECK_EQ_INT(fc_engine_count_live(e, 1500), 4);
  /* Round 2: the give-up of round 1, replayed, does not touch it. */
  CHECK_EQ_INT(fc_engine_tick(e, 1501), FC_TICK_STARTED);
  const char *m2 = pick(e, 4, 1);
  CHECK(m2 != NULL);
  CHECK_EQ_INT(checkin(e, m2, 1510), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_give_up(e, m2, 1, 1520, &li), FC_LEAVE_GONE);
  CHECK(fc_engine_in_round(e, m2));
  fc_engine_destroy(e);
}

int main(void) {
  test_leave_not_live();
  test_leave_replaced_while_picking_up();
  test_leave_shrinks_after_pickup();
  test_leave_abandons_when_hopeless();
  test_missed_pickup_replaced();
  test_no_replacement_under_poisson();
  test_secagg_replacement();
  test_done_pending();
  test_give_up();
  return CHECK_DONE();
}

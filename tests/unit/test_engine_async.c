/*
 * test_engine_async.c - the round engine's asynchronous buffered mode
 * (engine_async.c, issue 25), in-process with synthetic time:
 *   - staleness weights: const, poly (1/sqrt(1+s) by default), hinge, and
 *     the parser's accepted and refused forms;
 *   - the concurrency cap: at most C clients hold a task; a client whose
 *     update is in the open buffer waits for the next one;
 *   - a buffer is published at K accepted updates, tasks outlive buffers,
 *     and an update from an older version counts with its staleness;
 *   - an update staler than max_staleness is refused with the versions in
 *     its reason, and its slot is freed;
 *   - a client that never returns frees its slot at its task's deadline;
 *   - min_clients gates a new federation's first buffer only;
 *   - async_slot_ms: a task that old gives its slot up but runs on; its
 *     update still counts once, and its end (commit, deadline) is counted
 *     against the released tasks, never the concurrency in use;
 *   - uploads beyond the buffer wait (BUFFER_FULL), none is in flight at close;
 *     waiting as told costs no upload token, hammering a full buffer does;
 *   - a stream begun for a task given up by Leave is not countable after the
 *     client took a new task (so the coordinator never logs it), which is
 *     not one of the buffer whose task it dropped;
 *   - a place in the buffer is held for at most the hold (2 s here): past
 *     it the buffer publishes without the upload, which counts where it
 *     lands (or is told to send again during a publish, or refused if it
 *     became too stale), and its client holds no place for a while;
 *   - restart mid-buffer: updates replayed into a fresh engine count once,
 *     a replayed contributor cannot add a second update to the buffer, and
 *     a pre-restart task is not known (the client retrains).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {1, 2, 3};
static const uint8_t SHA1[FC_SHA256_LEN] = {9};

/* An async engine with async_slot_ms slot_ms (0 = tasks keep their slots). */
static fc_engine *make_slot(uint32_t conc, uint32_t k, uint32_t max_stale, uint64_t version, uint64_t slot_ms) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.async_slot_ms = slot_ms;
  cfg.min_clients = 0; /* buffers open at once (test_min_clients: the first waits) */
  cfg.async = 1;
  cfg.async_concurrency = conc;
  cfg.async_buffer = k;
  cfg.max_staleness = max_stale;
  cfg.rounds = 0;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 100000;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, version, SHA0, &e), FEDC_OK);
  return e;
}

static fc_engine *make(uint32_t conc, uint32_t k, uint32_t max_stale, uint64_t version) {
  return make_slot(conc, k, max_stale, version, 0);
}

static int checkin(fc_engine *e, const char *who, uint64_t now, fc_task_info *t) {
  uint32_t retry;
  fc_task_info tmp;
  return fc_engine_checkin(e, who, now, t ? t : &tmp, &retry);
}

/* who uploads for task t at now: begin + commit. */
static int upload(fc_engine *e, const char *who, const fc_task_info *t, uint64_t now) {
  int v = fc_engine_upload_begin(e, who, t->round, t->version, now);
  if (v != FC_UP_OK) return v;
  return fc_engine_upload_commit(e, who, t->round, 10, 0.5, 100, now);
}

static void publish(fc_engine *e, uint64_t version, uint64_t now) {
  CHECK_EQ_INT(fc_engine_tick(e, now), FC_TICK_AGGREGATE);
  fc_engine_published(e, version, SHA1, now);
  CHECK_EQ_INT(fc_engine_tick(e, now + 1), FC_TICK_STARTED);
}

static void test_weights(void) {
  struct fc_staleness_fn f;
  char err[200], txt[64];
  CHECK_EQ_INT(fc_staleness_parse("poly", &f, err, sizeof err), FEDC_OK);
  CHECK(fabs(fc_staleness_weight(&f, 0) - 1.0) < 1e-12);
  CHECK(fabs(fc_staleness_weight(&f, 3) - 0.5) < 1e-12);       /* 1/sqrt(4) */
  CHECK(fabs(fc_staleness_weight(&f, 8) - 1.0 / 3) < 1e-12);   /* 1/sqrt(9) */
  CHECK_EQ_INT(fc_staleness_parse("poly:1", &f, err, sizeof err), FEDC_OK);
  CHECK(fabs(fc_staleness_weight(&f, 4) - 0.2) < 1e-12);
  CHECK_EQ_INT(fc_staleness_parse("const", &f, err, sizeof err), FEDC_OK);
  CHECK(fc_staleness_weight(&f, 100) == 1.0);
  CHECK_EQ_INT(fc_staleness_parse("hinge", &f, err, sizeof err), FEDC_OK); /* a 10, b 4 */
  CHECK(fc_staleness_weight(&f, 4) == 1.0);
  CHECK(fabs(fc_staleness_weight(&f, 5) - 1.0 / 11) < 1e-12);
  CHECK_EQ_INT(fc_staleness_parse("hinge:2:1", &f, err, sizeof err), FEDC_OK);
  CHECK(fc_staleness_weight(&f, 1) == 1.0);
  CHECK(fabs(fc_staleness_weight(&f, 3) - 0.2) < 1e-12); /* 1/(2*2+1) */
  fc_staleness_text(&f, txt, sizeof txt);
  CHECK(!strcmp(txt, "hinge:2:1"));
  CHECK_EQ_INT(f.fedbuff, 0);
  /* ",fedbuff": the same weights, the buffer divided by its examples */
  CHECK_EQ_INT(fc_staleness_parse("hinge:2:1,fedbuff", &f, err, sizeof err), FEDC_OK);
  CHECK(f.fedbuff == 1 && f.kind == FC_STALE_HINGE && fabs(fc_staleness_weight(&f, 3) - 0.2) < 1e-12);
  fc_staleness_text(&f, txt, sizeof txt);
  CHECK(!strcmp(txt, "hinge:2:1,fedbuff"));
  CHECK_EQ_INT(fc_staleness_parse("poly,fedbuff", &f, err, sizeof err), FEDC_OK);
  fc_staleness_text(&f, txt, sizeof txt);
  CHECK(!strcmp(txt, "poly:0.5,fedbuff"));
  const char *bad[] = {"", "poly:", "poly:0", "poly:-1", "hinge:1", "hinge:1:", "hinge:0:1", "sqrt", "poly:1x",
                       "constant", ",fedbuff", "poly,fedbuffx", "poly,fedbuff,fedbuff", "fedbuff",
                       "poly:0.5,fedbuff0123456789012345678901234567890123456789012345678901234567890123456789"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECK_EQ_INT(fc_staleness_parse(bad[i], &f, err, sizeof err), FEDC_ERR_INVALID);
    CHECK(strstr(err, "staleness") != NULL);
  }
  CHECK_EQ_INT(fc_stale_bucket(0), 0);
  CHECK_EQ_INT(fc_stale_bucket(3), 3);
  CHECK_EQ_INT(fc_stale_bucket(7), 4);
  CHECK_EQ_INT(fc_stale_bucket(15), 5);
  CHECK_EQ_INT(fc_stale_bucket(16), 6);
}

/* C = 2, K = 2: the cap, publish at K, tasks across buffers, staleness. */
static void test_buffer_and_cap(void) {
  fc_engine *e = make(2, 2, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED); /* a buffer opens without waiting for clients */
  fc_task_info ta, tb, tc, tmp;
  CHECK_EQ_INT(checkin(e, "a", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 10, &tb), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "c", 10, &tc), FC_CHECKIN_WAIT); /* 2 training: the cap */
  CHECK_EQ_INT(ta.version, 0);
  CHECK_EQ_INT(ta.deadline_ms, 5010);
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 2);
  CHECK_EQ_INT(upload(e, "a", &ta, 20), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 21), FC_TICK_NONE); /* 1 of K */
  /* a's slot is free; c takes it; a itself waits (its update is in this buffer) */
  CHECK_EQ_INT(checkin(e, "a", 22, &tmp), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "c", 22, &tc), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "c", &tc, 30), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.buffered, 2);
  CHECK_EQ_INT(ai.hist[0], 2);
  CHECK_EQ_INT(ai.examples, 20);
  publish(e, 1, 40); /* K reached: version 1 */
  const fc_round_stats *rs = fc_engine_last_round(e);
  CHECK(rs->async && rs->completed && rs->participants == 2 && rs->examples == 20 && rs->stale_hist[0] == 2);
  CHECK_EQ_INT(rs->round, 1);
  /* b trained from version 0: one version behind, still accepted into buffer 2 */
  uint64_t s = 0;
  double w = 0;
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", tb.round, tb.version, 50), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_async_weight(e, "b", tb.round, 50, &w, &s), FC_UP_OK);
  CHECK(fabs(w - 1 / sqrt(2.0)) < 1e-12);
  CHECK_EQ_INT(s, 1);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", tb.round, 10, 0.5, 100, 50), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", tb.round, 10, 0.5, 100, 51), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", tb.round, tb.version, 52), FC_UP_DUPLICATE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.hist[1], 1);
  CHECK_EQ_INT(ai.buffered, 1);
  CHECK_EQ_INT(ai.examples, 10); /* this buffer's only */
  /* a's new task is from version 1, buffer 2 */
  CHECK_EQ_INT(checkin(e, "a", 60, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(ta.version, 1);
  CHECK_EQ_INT(ta.round, 2);
  /* a checks in again holding its task (its update was refused, or it
   * restarted): the slot is freed and it waits for the next buffer */
  fc_engine_async_info(e, &ai);
  uint32_t before = ai.training;
  CHECK_EQ_INT(checkin(e, "a", 61, &tmp), FC_CHECKIN_WAIT);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, before - 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", ta.round, ta.version, 62), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(checkin(e, "a", 63, &tmp), FC_CHECKIN_WAIT); /* still this buffer: no task with the same round */
  fc_engine_destroy(e);
}

static void test_stale_refused(void) {
  fc_engine *e = make(3, 1, 1, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info tslow, tf;
  CHECK_EQ_INT(checkin(e, "slow", 10, &tslow), FC_CHECKIN_TRAIN); /* from version 0 */
  for (uint64_t v = 1; v <= 2; v++) {
    CHECK_EQ_INT(checkin(e, "fast", 10 * v + 10, &tf), FC_CHECKIN_TRAIN);
    CHECK_EQ_INT(upload(e, "fast", &tf, 10 * v + 11), FC_UP_OK);
    publish(e, v, 10 * v + 12);
  }
  /* version 2 now; slow is 2 behind, the bound 1 */
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "slow", tslow.round, tslow.version, 100), FC_UP_STALE);
  const char *why = fc_engine_refusal_detail(e);
  CHECK(strstr(why, "trained from version 0") && strstr(why, "current version 2") && strstr(why, "max staleness 1"));
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 0); /* its slot is free */
  CHECK_EQ_INT(ai.stale_refused, 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "slow", tslow.round, tslow.version, 101), FC_UP_NOT_IN_ROUND);
  fc_task_info t2;
  CHECK_EQ_INT(checkin(e, "slow", 102, &t2), FC_CHECKIN_TRAIN); /* a fresh task on version 2 */
  CHECK_EQ_INT(t2.version, 2);
  fc_engine_destroy(e);
}

/* A client that never returns: its slot is free after its deadline; an
 * upload beyond the buffer waits; the budget ends the federation. */
static void test_deadline_and_full(void) {
  fc_engine *e = make(2, 1, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ta, tb, tc;
  CHECK_EQ_INT(checkin(e, "gone", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 3000, &tb), FC_CHECKIN_TRAIN); /* deadline 8000 */
  CHECK_EQ_INT(checkin(e, "c", 3000, &tc), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 5009), FC_TICK_NONE);
  CHECK_EQ_INT(checkin(e, "c", 5009, &tc), FC_CHECKIN_WAIT); /* "gone" holds its slot until 5010 */
  /* b begins (K = 1: the buffer is spoken for), a second upload must wait */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "b", tb.round, tb.version, 5009), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 5200), FC_TICK_NONE); /* b in flight: no close; "gone" expired */
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.expired, 1);
  CHECK_EQ_INT(ai.training, 1);
  CHECK_EQ_INT(checkin(e, "c", 5201, &tc), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", tc.round, tc.version, 5202), FC_UP_BUFFER_FULL);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "gone", ta.round, ta.version, 5203), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "b", tb.round, 10, 0.5, 100, 5204), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 5205), FC_TICK_AGGREGATE);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", tc.round, tc.version, 5206), FC_UP_BUFFER_FULL); /* publishing */
  /* waiting out a publish costs no upload tokens (burst 10 at 0.5/s) to a
   * client that comes back when told (retry_ms after): never RATE_LIMITED */
  uint64_t t = 5206;
  for (int i = 0; i < 15; i++) { /* 15 > burst 10 + 3 s of refill at 0.5/s, within c's deadline */
    t += fc_engine_retry_ms(e);
    CHECK_EQ_INT(fc_engine_upload_begin(e, "c", tc.round, tc.version, t), FC_UP_BUFFER_FULL);
  }
  fc_engine_published(e, 1, SHA1, t + 1);
  CHECK_EQ_INT(fc_engine_tick(e, t + 2), FC_TICK_STARTED);
  CHECK_EQ_INT(upload(e, "c", &tc, t + 3), FC_UP_OK); /* it waited and joins the next buffer */
  /* Leave frees a slot */
  fc_task_info td;
  CHECK_EQ_INT(checkin(e, "d", t + 4, &td), FC_CHECKIN_TRAIN);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "d", t + 5, &li), FC_LEAVE_DROPPED);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 0);
  /* an expired task pauses its client for round_ms from the expiry (5200),
   * not for the whole buffer (engine_async.c, expired()) */
  if (t + 6 < 10200) CHECK_EQ_INT(checkin(e, "gone", t + 6, &ta), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "gone", 10200, &ta), FC_CHECKIN_TRAIN);
  fc_engine_destroy(e);
}

/* min_clients gates a new federation's first buffer only: it opens once
 * that many clients are live, and later buffers open at once whoever is
 * live; so does the first buffer after a restart (a round id was spent). */
static void test_min_clients(void) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.async = 1;
  cfg.async_concurrency = 2;
  cfg.async_buffer = 1;
  cfg.min_clients = 2;
  cfg.min_updates = 5; /* a round's, not a buffer's: ignored */
  cfg.rounds = 0;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 100000;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_NONE);
  CHECK_EQ_INT(checkin(e, "a", 10, NULL), FC_CHECKIN_WAIT); /* no buffer yet */
  CHECK_EQ_INT(fc_engine_tick(e, 20), FC_TICK_NONE);        /* 1 of 2 live */
  CHECK_EQ_INT(checkin(e, "b", 30, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 40), FC_TICK_STARTED);
  fc_task_info ta;
  CHECK_EQ_INT(checkin(e, "a", 50, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "a", &ta, 60), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 70), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 80);
  /* b said Leave: one live client, and the next buffer opens anyway */
  fc_leave_info li;
  fc_engine_leave(e, "b", 85, &li);
  CHECK_EQ_INT(fc_engine_tick(e, 90), FC_TICK_STARTED);
  fc_engine_destroy(e);
  CHECK_EQ_INT(fc_engine_create(&cfg, 3, 1, 1, SHA1, &e), FEDC_OK); /* restarted: round 2 was spent */
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_engine_destroy(e);
}

/* --async-slot-ms 1000: a straggler's task stops holding a slot at 1 s
 * and a fast client takes it; the straggler's update still counts (within
 * max staleness), and the ends of released tasks (commit, deadline) leave
 * the concurrency in use alone. */
static void test_slot_release(void) {
  fc_engine *e = make_slot(2, 2, 1, 0, 1000);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ts, t1, t2, t3, t4;
  CHECK_EQ_INT(checkin(e, "slow", 10, &ts), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "f1", 500, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "f2", 600, &t2), FC_CHECKIN_WAIT); /* cap 2 */
  CHECK_EQ_INT(fc_engine_tick(e, 1009), FC_TICK_NONE);
  CHECK_EQ_INT(checkin(e, "f2", 1009, &t2), FC_CHECKIN_WAIT); /* slow's slot until 1010 */
  CHECK_EQ_INT(fc_engine_tick(e, 1110), FC_TICK_NONE);        /* released (f1's runs to 1500) */
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 1);
  CHECK_EQ_INT(ai.released, 1);
  CHECK_EQ_INT(ai.released_total, 1);
  CHECK_EQ_INT(checkin(e, "f2", 1111, &t2), FC_CHECKIN_TRAIN); /* the freed slot */
  CHECK_EQ_INT(upload(e, "f1", &t1, 1120), FC_UP_OK);
  CHECK_EQ_INT(upload(e, "f2", &t2, 1130), FC_UP_OK);
  publish(e, 1, 1140);
  CHECK_EQ_INT(checkin(e, "f3", 1150, &t3), FC_CHECKIN_TRAIN);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 1);
  /* slow, one version behind (max 1), counts; its end is a released task's */
  uint64_t s = 0;
  double w = 0;
  CHECK_EQ_INT(fc_engine_upload_begin(e, "slow", ts.round, ts.version, 1200), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_async_weight(e, "slow", ts.round, 1200, &w, &s), FC_UP_OK);
  CHECK_EQ_INT(s, 1);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "slow", ts.round, 10, 0.5, 100, 1200), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 1); /* f3's */
  CHECK_EQ_INT(ai.released, 0);
  CHECK_EQ_INT(ai.buffered, 1);
  CHECK_EQ_INT(ai.hist[1], 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "slow", ts.round, ts.version, 1201), FC_UP_DUPLICATE);
  /* two tasks released, then past their deadlines (5000 ms): the scan
   * runs with none in training, and expires both */
  CHECK_EQ_INT(checkin(e, "f4", 1160, &t4), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_tick(e, 2200), FC_TICK_NONE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 0);
  CHECK_EQ_INT(ai.released, 2);
  CHECK_EQ_INT(ai.released_total, 3);
  CHECK_EQ_INT(fc_engine_tick(e, 6200), FC_TICK_NONE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.released, 0);
  CHECK_EQ_INT(ai.expired, 2);
  CHECK_EQ_INT(ai.training, 0);
  /* and the cap is whole again */
  CHECK_EQ_INT(checkin(e, "f5", 6201, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "f6", 6201, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "f7", 6201, NULL), FC_CHECKIN_WAIT);
  fc_engine_destroy(e);
}

/* Every way a released task ends counts it off the released tasks, never
 * the concurrency in use: Leave, a stale refusal, giving it up at check-in,
 * and a commit after an aborted stream; released while uploading too. */
static void test_slot_release_paths(void) {
  fc_engine *e = make_slot(4, 1, 1, 0, 1000);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info tl, ts, tg, tu, tf;
  CHECK_EQ_INT(checkin(e, "leaver", 10, &tl), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "stale", 10, &ts), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "giver", 10, &tg), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "up", 10, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "up", tu.round, tu.version, 900), FC_UP_OK); /* K = 1: spoken for */
  CHECK_EQ_INT(fc_engine_tick(e, 1100), FC_TICK_NONE); /* all four released, "up" while uploading */
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 0);
  CHECK_EQ_INT(ai.released, 4);
  fc_engine_upload_abort(e, "up", tu.round, 1105, 1); /* a broken stream: still its task, still released */
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.released, 4);
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "leaver", 1110, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(checkin(e, "giver", 1120, NULL), FC_CHECKIN_WAIT); /* gave its task up */
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.released, 2);
  CHECK_EQ_INT(ai.training, 0);
  CHECK_EQ_INT(upload(e, "up", &tu, 1130), FC_UP_OK);
  publish(e, 1, 1140);
  CHECK_EQ_INT(checkin(e, "f", 1150, &tf), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "f", &tf, 1160), FC_UP_OK);
  publish(e, 2, 1170);
  /* version 2: "stale" trained from 0, max staleness 1 */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "stale", ts.round, ts.version, 1180), FC_UP_STALE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.released, 0);
  CHECK_EQ_INT(ai.training, 0);
  CHECK_EQ_INT(ai.released_total, 4);
  for (int i = 0; i < 4; i++) { /* the cap is whole */
    char n[8];
    snprintf(n, sizeof n, "n%d", i);
    CHECK_EQ_INT(checkin(e, n, 1190, NULL), FC_CHECKIN_TRAIN);
  }
  CHECK_EQ_INT(checkin(e, "n4", 1190, NULL), FC_CHECKIN_WAIT);
  fc_engine_destroy(e);
}

/* A full buffer is no way around the upload rate limit: a client that
 * comes back before the retry time it was told pays a token per attempt
 * (burst 10): RATE_LIMITED within the burst. */
static void test_full_hammer(void) {
  fc_engine *e = make(2, 1, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ta, tb;
  CHECK_EQ_INT(checkin(e, "a", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 10, &tb), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", ta.round, ta.version, 20), FC_UP_OK); /* K = 1: spoken for */
  int full = 0, limited = 0;
  for (int i = 0; i < 40 && !limited; i++) {
    int v = fc_engine_upload_begin(e, "b", tb.round, tb.version, 21);
    full += v == FC_UP_BUFFER_FULL;
    limited = v == FC_UP_RATE_LIMITED;
  }
  CHECK(limited);
  CHECK(full >= 1 && full <= 11); /* the first attempt's token comes back, no later one */
  fc_engine_destroy(e);
}

/* Finding: an upload stream begun for a task the client gave up by Leave
 * (it then checked in again and holds a new task of the same buffer) must
 * not be weighed as countable: the coordinator logs what the verdict lets
 * through, and the commit refuses this one. The client's real update counts. */
static void test_left_stream_not_countable(void) {
  fc_engine *e = make(3, 2, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ta, ta2, tb, tc;
  CHECK_EQ_INT(checkin(e, "a", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", ta.round, ta.version, 20), FC_UP_OK); /* stream A, trickling */
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "a", 30, &li), FC_LEAVE_DROPPED);
  /* No new task in the buffer whose task it dropped (nor a new place to hold). */
  CHECK_EQ_INT(checkin(e, "a", 40, &ta2), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "b", 41, &tb), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "c", 41, &tc), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "b", &tb, 42), FC_UP_OK);
  CHECK_EQ_INT(upload(e, "c", &tc, 43), FC_UP_OK);
  publish(e, 1, 44);
  CHECK_EQ_INT(checkin(e, "a", 46, &ta2), FC_CHECKIN_TRAIN); /* the next buffer */
  CHECK(ta2.round != ta.round);
  double w = -1;
  uint64_t s = 99;
  /* A ends: not countable, so never logged; nothing written to the out-parameters */
  CHECK_EQ_INT(fc_engine_async_weight(e, "a", ta.round, 50, &w, &s), FC_UP_NOT_IN_ROUND);
  CHECK(w == -1 && s == 99);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", ta.round, 10, 0.5, 100, 50), FC_UP_NOT_IN_ROUND);
  fc_engine_upload_abort(e, "a", ta.round, 50, 1); /* A's late abort: no effect on the new task */
  /* its real task's upload: countable, and counted */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", ta2.round, ta2.version, 60), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_async_weight(e, "a", ta2.round, 60, &w, &s), FC_UP_OK);
  CHECK(w == 1.0 && s == 0);
  /* the same verdict the commit gives past the task's deadline */
  CHECK_EQ_INT(fc_engine_async_weight(e, "a", ta2.round, ta2.deadline_ms, &w, &s), FC_UP_LATE);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "a", ta2.round, 10, 0.5, 100, 61), FC_UP_OK);
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.buffered, 1);
  fc_engine_destroy(e);
}

/* A place in the buffer is held for at most 2 s (HOLD_MIN_MS; the hostile
 * review's stall): with K 2, "att" begins the buffer's last upload and
 * trickles. Others are refused BUFFER_FULL until its hold runs out; then
 * the buffer fills and publishes with att still streaming (overdue). att's
 * commit during the publish is told BUFFER_FULL (it may send again); its
 * next begin holds no place (for 10 min after it lost one), so it never
 * blocks a buffer again, and its update counts where it lands, with the
 * staleness it has then. Aborting a held upload also costs the hold. */
static void test_hold_limit(void) {
  fc_engine *e = make(5, 2, 5, 0);
  fc_task_info t1, t2, t3, ta, t4;
  CHECK_EQ_INT(fc_engine_tick(e, 0), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "h1", 1, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "h2", 1, &t2), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "att", 1, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "h1", &t1, 10), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "att", ta.round, ta.version, 12), FC_UP_OK); /* the last place */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "h2", t2.round, t2.version, 14), FC_UP_BUFFER_FULL);
  CHECK_EQ_INT(fc_engine_tick(e, 1000), FC_TICK_NONE); /* waits for att */
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 1 && ai.overdue == 0);
  CHECK_EQ_INT(fc_engine_tick(e, 2100), FC_TICK_NONE); /* att's hold is over */
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 1 && ai.overdue == 1 && ai.overdue_total == 1);
  CHECK_EQ_INT(upload(e, "h2", &t2, 2110), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2120), FC_TICK_AGGREGATE); /* att still streaming */
  double w;
  uint64_t s;
  CHECK_EQ_INT(fc_engine_async_weight(e, "att", ta.round, 2125, &w, &s), FC_UP_BUFFER_FULL);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "att", ta.round, 10, 0.5, 100, 2125), FC_UP_BUFFER_FULL);
  CHECK(fc_engine_retry_ms(e) > 0);
  fc_engine_published(e, 1, SHA1, 2130);
  CHECK_EQ_INT(fc_engine_tick(e, 2131), FC_TICK_STARTED);
  /* It sends again: no place held, so h1 and h3 fill the buffer around it. */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "att", ta.round, ta.version, 2140), FC_UP_OK);
  CHECK_EQ_INT(checkin(e, "h1", 2141, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "h3", 2141, &t3), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "h1", &t1, 2150), FC_UP_OK);
  CHECK_EQ_INT(upload(e, "h3", &t3, 2151), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2152), FC_TICK_AGGREGATE);
  fc_engine_published(e, 2, SHA1, 2153);
  CHECK_EQ_INT(fc_engine_tick(e, 2154), FC_TICK_STARTED);
  /* att's update lands in buffer 3, two versions behind. */
  CHECK_EQ_INT(fc_engine_async_weight(e, "att", ta.round, 2160, &w, &s), FC_UP_OK);
  CHECK(s == 2 && fabs(w - 1 / sqrt(3.0)) < 1e-12);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "att", ta.round, 10, 0.5, 100, 2160), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.buffered == 1 && ai.uploading == 0 && ai.overdue == 0 && ai.overdue_total == 2);
  CHECK_EQ_INT(ai.hist[2], 1);
  /* An abort while holding a place costs the hold: h4's next upload holds none. */
  CHECK_EQ_INT(checkin(e, "h4", 2161, &t4), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "h4", t4.round, t4.version, 2162), FC_UP_OK);
  fc_engine_upload_abort(e, "h4", t4.round, 2163, 1);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "h4", t4.round, t4.version, 2164), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 1 && ai.overdue == 1 && ai.overdue_total == 3);
  fc_engine_destroy(e);
}

/* The reviews of the hold: an overdue commit counts past the held places
 * (a buffer has K + C rows), which keep theirs; the penalty is
 * set when a place is lost (the hold, an abort by the client, Leave) and not
 * extended by uploads that held none; an abort that is not the client's
 * doing costs nothing; a clock step back makes no upload overdue; the hold
 * is async_hold_ms. */
static fc_engine *make_hold(uint32_t conc, uint32_t k, uint64_t hold_ms) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = 0;
  cfg.async = 1;
  cfg.async_concurrency = conc;
  cfg.async_buffer = k;
  cfg.rounds = 0;
  cfg.round_ms = 3600000; /* tasks outlive the 10 min penalty */
  cfg.client_ttl_ms = 7200000;
  cfg.upload_rate = 0;
  cfg.async_hold_ms = hold_ms;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static void test_hold_review(void) {
  fc_engine *e = make_hold(4, 2, 0);
  fc_task_info tu, t1, t2;
  fc_async_info ai;
  CHECK_EQ_INT(fc_engine_tick(e, 0), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "u", 1, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "h1", 1, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "h2", 1, &t2), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 10), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2100), FC_TICK_NONE); /* u overdue: its place is free */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "h1", t1.round, t1.version, 2110), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "h2", t2.round, t2.version, 2111), FC_UP_OK);
  double w;
  uint64_t s;
  /* Both places held: u counts past them (the buffer's rows are K + C),
   * and the held ones keep theirs: the buffer publishes with 3. */
  CHECK_EQ_INT(fc_engine_async_weight(e, "u", tu.round, 2120, &w, &s), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "u", tu.round, 10, 0.5, 100, 2120), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "h1", t1.round, 10, 0.5, 100, 2121), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "h2", t2.round, 10, 0.5, 100, 2122), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.buffered == 3 && ai.uploading == 0 && ai.overdue == 0);
  publish(e, 1, 2130);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 3);
  /* u lost its place at 2100: held none until 602100, however often it
   * uploads meanwhile (an upload without a place does not extend it). */
  CHECK_EQ_INT(checkin(e, "u", 2139, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 2140), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.overdue, 1);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "u", tu.round, 10, 0.5, 100, 2141), FC_UP_OK);
  CHECK_EQ_INT(checkin(e, "h1", 2150, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "h1", &t1, 2151), FC_UP_OK);
  publish(e, 2, 2152);
  CHECK_EQ_INT(checkin(e, "u", 500000, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 500001), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.overdue, 1);
  fc_engine_upload_abort(e, "u", tu.round, 500002, 1); /* held nothing: no new penalty */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 602200), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.overdue == 0 && ai.uploading == 1); /* held again */
  /* The coordinator's own refusal (busy, its log) costs no penalty. */
  fc_engine_upload_abort(e, "u", tu.round, 602300, 0);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 602400), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.overdue == 0 && ai.uploading == 1);
  /* A clock stepped back: no upload is overdue for it. */
  CHECK_EQ_INT(fc_engine_tick(e, 602000), FC_TICK_NONE);
  fc_engine_async_info(e, &ai);
  CHECK(ai.overdue == 0 && ai.uploading == 1);
  /* Leave while holding a place costs the penalty too. */
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_leave(e, "u", 602500, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(checkin(e, "h2", 602510, &t2), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "h2", &t2, 602511), FC_UP_OK);
  CHECK_EQ_INT(checkin(e, "h1", 602512, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "h1", &t1, 602513), FC_UP_OK);
  publish(e, 3, 602514);
  CHECK_EQ_INT(checkin(e, "u", 602520, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 602521), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.overdue == 1 && ai.uploading == 1);
  fc_engine_destroy(e);

  /* A place held past half the hold (here 1 s of 2) costs the penalty,
   * one held briefly does not: a client that ends every upload just
   * inside its hold does not delay every buffer. */
  e = make_hold(2, 1, 2000);
  CHECK_EQ_INT(fc_engine_tick(e, 0), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "q", 1, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "s", 1, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "q", t1.round, t1.version, 10), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "q", t1.round, 10, 0.5, 100, 500), FC_UP_OK);
  publish(e, 1, 501);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "s", tu.round, tu.version, 510), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "s", tu.round, 10, 0.5, 100, 1990), FC_UP_OK);
  publish(e, 2, 1991);
  CHECK_EQ_INT(checkin(e, "q", 2000, &t1), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "s", 2000, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "q", t1.round, t1.version, 2001), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 1 && ai.overdue == 0); /* q held 490 ms: no penalty */
  CHECK_EQ_INT(fc_engine_upload_commit(e, "q", t1.round, 10, 0.5, 100, 2002), FC_UP_OK);
  publish(e, 3, 2003);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "s", tu.round, tu.version, 2010), FC_UP_OK);
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 1 && ai.overdue == 1); /* s held 1480 ms: no place now */
  fc_engine_destroy(e);

  /* async_hold_ms 5000: held at 4.9 s, overdue past 5 s. */
  e = make_hold(2, 1, 5000);
  CHECK_EQ_INT(fc_engine_tick(e, 0), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "u", 1, &tu), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "u", tu.round, tu.version, 100), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 5000), FC_TICK_NONE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.overdue, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 5200), FC_TICK_NONE);
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.overdue, 1);
  fc_engine_destroy(e);
}

/* An overdue upload that is more than max_staleness behind when it commits
 * is refused then (a held one cannot be: its buffer waits for it). */
static void test_overdue_stale(void) {
  fc_engine *e = make(5, 1, 1, 0);
  fc_task_info ta, t1;
  CHECK_EQ_INT(fc_engine_tick(e, 0), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "att", 1, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "att", ta.round, ta.version, 2), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2100), FC_TICK_NONE); /* overdue */
  for (uint64_t v = 1; v <= 2; v++) {
    CHECK_EQ_INT(checkin(e, "h", 2100 + 10 * v, &t1), FC_CHECKIN_TRAIN);
    CHECK_EQ_INT(upload(e, "h", &t1, 2101 + 10 * v), FC_UP_OK);
    publish(e, v, 2102 + 10 * v);
  }
  double w;
  uint64_t s;
  CHECK_EQ_INT(fc_engine_async_weight(e, "att", ta.round, 2200, &w, &s), FC_UP_STALE);
  CHECK(strstr(fc_engine_refusal_detail(e), "2 versions behind") != NULL);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "att", ta.round, 10, 0.5, 100, 2200), FC_UP_STALE);
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK(ai.uploading == 0 && ai.overdue == 0 && ai.stale_refused == 1 && ai.training == 0);
  fc_engine_destroy(e);
}

/* Restart mid-buffer: the coordinator replays its buffer log into a fresh
 * engine. Counted once; the contributors wait; old tasks are unknown. */
static void test_restart(void) {
  fc_engine *e = make(4, 3, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ta, tb, tc;
  CHECK_EQ_INT(checkin(e, "a", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 10, &tb), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "c", 10, &tc), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "a", &ta, 20), FC_UP_OK);
  CHECK_EQ_INT(upload(e, "b", &tb, 21), FC_UP_OK);
  fc_engine_destroy(e); /* crash: 2 of 3 in the buffer, c training */
  e = make(4, 3, 5, 0);
  CHECK_EQ_INT(fc_engine_async_replay(e, "a", 10, 0.5, 0, 100), FEDC_ERR_INVALID); /* no buffer open yet */
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  CHECK_EQ_INT(fc_engine_async_replay(e, "a", 10, 0.5, 0, 100), FEDC_OK);
  CHECK_EQ_INT(fc_engine_async_replay(e, "b", 10, 0.5, 1, 100), FEDC_OK);
  CHECK_EQ_INT(fc_engine_async_replay(e, "b", 10, 0.5, 1, 100), FEDC_ERR_INVALID); /* never twice */
  /* the check before the aggregator takes a replayed update counts nothing */
  CHECK_EQ_INT(fc_engine_async_replay_check(e, "b"), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_engine_async_replay_check(e, "z"), FEDC_OK);
  CHECK_EQ_INT(fc_engine_async_replay_check(e, "z"), FEDC_OK);
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.buffered, 2);
  CHECK_EQ_INT(ai.hist[0], 1);
  CHECK_EQ_INT(ai.hist[1], 1);
  CHECK_EQ_INT(ai.examples, 20); /* the sum ,fedbuff divides by, restored too */
  fc_task_info tmp;
  /* a retried its (already logged) upload: its task is unknown now; it checks in and waits */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "a", ta.round, ta.version, 30), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(checkin(e, "a", 31, &tmp), FC_CHECKIN_WAIT);
  /* c's pre-restart task is unknown too: refused, it retrains and completes the buffer */
  CHECK_EQ_INT(fc_engine_upload_begin(e, "c", tc.round, tc.version, 32), FC_UP_NOT_IN_ROUND);
  CHECK_EQ_INT(checkin(e, "c", 33, &tc), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(upload(e, "c", &tc, 34), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 35), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 36);
  const fc_round_stats *rs = fc_engine_last_round(e);
  CHECK_EQ_INT(rs->participants, 3);
  CHECK_EQ_INT(rs->examples, 30);
  fc_engine_destroy(e);
  /* Restarted with a smaller buffer (K 3 -> 1): all three logged updates
   * count, in one buffer that publishes at once; none is cut. */
  e = make(4, 1, 5, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  CHECK_EQ_INT(fc_engine_async_replay(e, "a", 10, 0.5, 0, 100), FEDC_OK);
  CHECK_EQ_INT(fc_engine_async_replay(e, "b", 10, 0.5, 0, 100), FEDC_OK);
  CHECK_EQ_INT(fc_engine_async_replay(e, "c", 10, 0.5, 0, 100), FEDC_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 2), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA1, 3);
  CHECK_EQ_INT(fc_engine_last_round(e)->participants, 3);
  fc_engine_destroy(e);
}

/* A task given up (Leave with a round, 1.19) frees its slot at once; the
 * client stays live, and gets no task of that buffer again (a runtime does
 * not take a round id twice); a give-up of another round changes nothing. */
static void test_give_up(void) {
  fc_engine *e = make(1, 2, 20, 0);
  CHECK_EQ_INT(fc_engine_tick(e, 1), FC_TICK_STARTED);
  fc_task_info ta, tb;
  CHECK_EQ_INT(checkin(e, "a", 10, &ta), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "b", 11, &tb), FC_CHECKIN_WAIT); /* concurrency 1: a holds the slot */
  fc_leave_info li;
  CHECK_EQ_INT(fc_engine_give_up(e, "a", ta.round + 1, 20, &li), FC_LEAVE_GONE);
  CHECK_EQ_INT(fc_engine_give_up(e, "b", ta.round, 20, &li), FC_LEAVE_GONE); /* holds no task */
  CHECK_EQ_INT(fc_engine_give_up(e, "a", ta.round, 30, &li), FC_LEAVE_DROPPED);
  CHECK_EQ_INT(li.round, ta.round);
  fc_async_info ai;
  fc_engine_async_info(e, &ai);
  CHECK_EQ_INT(ai.training, 0);
  CHECK_EQ_INT(fc_engine_give_up(e, "a", ta.round, 31, &li), FC_LEAVE_IDLE); /* twice: nothing more */
  CHECK_EQ_INT(fc_engine_count_live(e, 40), 2);
  CHECK_EQ_INT(checkin(e, "b", 40, &tb), FC_CHECKIN_TRAIN); /* the freed slot */
  CHECK_EQ_INT(checkin(e, "a", 41, NULL), FC_CHECKIN_WAIT);
  fc_engine_destroy(e);
}

int main(void) {
  test_weights();
  test_buffer_and_cap();
  test_stale_refused();
  test_deadline_and_full();
  test_slot_release();
  test_slot_release_paths();
  test_min_clients();
  test_full_hammer();
  test_left_stream_not_countable();
  test_hold_limit();
  test_hold_review();
  test_overdue_stale();
  test_restart();
  test_give_up();
  return CHECK_DONE();
}

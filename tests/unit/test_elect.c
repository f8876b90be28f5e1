/*
 * test_elect.c - coordinator/elect.c, the election state machine, driven
 * through each row of its table and each failure: a grant that fails, a
 * campaign lost then won, keep-alives that stretch the deadline (and one that
 * answers late and must not), etcd unreachable past the TTL (the leader
 * steps down by its own clock), the lease gone, a fenced write refused, and
 * quorum loss with a hold (the leader suspended, not leading, until a
 * keep-alive lands, the lease is gone or the hold is spent).
 */
#include <string.h>

#include "check.h"
#include "coordinator/elect.h"

static int step(fc_elect *s, int kind, uint64_t now) {
  fc_elect_ev ev = {.kind = kind, .now_ms = now};
  return fc_elect_step(s, &ev);
}

static int granted(fc_elect *s, uint64_t now, int64_t ttl) {
  fc_elect_ev ev = {.kind = FC_EV_LEASE_GRANTED, .now_ms = now, .sent_ms = now, .lease = 0x77, .ttl_s = ttl};
  return fc_elect_step(s, &ev);
}

static int keepalive_ok(fc_elect *s, uint64_t sent, uint64_t now, int64_t ttl) {
  fc_elect_ev ev = {.kind = FC_EV_KEEPALIVE_OK, .now_ms = now, .sent_ms = sent, .ttl_s = ttl};
  return fc_elect_step(s, &ev);
}

static void test_win(void) {
  fc_elect s;
  fc_elect_init(&s, 200);
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1000), FC_ACT_GRANT);
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 1000), FC_ACT_WAIT); /* grant failed: retry after poll_ms */
  CHECK_EQ_INT(fc_elect_next_ms(&s), 1200);
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1100), FC_ACT_WAIT);
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1200), FC_ACT_GRANT);
  CHECK_EQ_INT(granted(&s, 1200, 2), FC_ACT_CAMPAIGN);
  CHECK_EQ_INT(s.state, FC_ELECT_CAMPAIGN);
  fc_elect_ev won = {.kind = FC_EV_WON, .now_ms = 1210, .rev = 42};
  CHECK_EQ_INT(fc_elect_step(&s, &won), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_LEADER);
  CHECK_EQ_INT(s.rev, 42);
  CHECK(fc_elect_is_leader(&s, 1210));
  CHECK_EQ_INT(fc_elect_next_ms(&s), 1200 + 666); /* keep-alive at a third of the TTL after the grant */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1865), FC_ACT_WAIT);
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1866), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(keepalive_ok(&s, 1876, 1880, 2), FC_ACT_WAIT);
  CHECK_EQ_INT(s.deadline_ms, 3876);
  /* an answer to an older request must not pull the deadline back, nor a stale one stretch it */
  CHECK_EQ_INT(keepalive_ok(&s, 1500, 1890, 2), FC_ACT_WAIT);
  CHECK_EQ_INT(s.deadline_ms, 3876);
  CHECK(fc_elect_is_leader(&s, 3875));
  CHECK(!fc_elect_is_leader(&s, 3876));
}

static void test_standby_then_win(void) {
  fc_elect s;
  fc_elect_init(&s, 200);
  granted(&s, 0, 3);
  fc_elect_ev lost = {.kind = FC_EV_LOST, .now_ms = 10, .holder = "replica-a 127.0.0.1:7000"};
  CHECK_EQ_INT(fc_elect_step(&s, &lost), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_STANDBY);
  CHECK(strcmp(s.holder, "replica-a 127.0.0.1:7000") == 0);
  CHECK(!fc_elect_is_leader(&s, 10));
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 210), FC_ACT_CAMPAIGN);
  CHECK_EQ_INT(fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_LOST, .now_ms = 215, .holder = "a"}), FC_ACT_WAIT);
  /* the standby keeps its own lease alive too */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1000), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(keepalive_ok(&s, 1000, 1001, 3), FC_ACT_CAMPAIGN);
  fc_elect_ev won = {.kind = FC_EV_WON, .now_ms = 1002, .rev = 99};
  fc_elect_step(&s, &won);
  CHECK(fc_elect_is_leader(&s, 1002));
  CHECK(s.holder[0] == 0);
}

/* etcd unreachable: no keep-alive lands, the leader steps down at its deadline. */
static void test_unreachable(void) {
  fc_elect s;
  fc_elect_init(&s, 200);
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 666), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 700), FC_ACT_WAIT);
  CHECK_EQ_INT(fc_elect_next_ms(&s), 900); /* retried soon */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 900), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 1999), FC_ACT_WAIT);
  CHECK(fc_elect_is_leader(&s, 1999));
  CHECK_EQ_INT(fc_elect_next_ms(&s), 2000); /* never sleeps past the deadline */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 2000), FC_ACT_STEP_DOWN);
  CHECK_EQ_INT(s.state, FC_ELECT_DEPOSED);
  CHECK(strstr(s.why, "not renewed") != NULL);
  /* terminal: even a keep-alive answered late changes nothing */
  CHECK_EQ_INT(keepalive_ok(&s, 1999, 2100, 2), FC_ACT_STEP_DOWN);
  CHECK(!fc_elect_is_leader(&s, 2100));
}

static void test_lease_gone_and_fence(void) {
  fc_elect s;
  fc_elect_init(&s, 200);
  granted(&s, 0, 5);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 1, .rev = 3});
  CHECK_EQ_INT(step(&s, FC_EV_LEASE_GONE, 10), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "expired") != NULL);

  fc_elect_init(&s, 200);
  granted(&s, 0, 5);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 1, .rev = 3});
  CHECK_EQ_INT(step(&s, FC_EV_FENCE_REFUSED, 10), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "fenced write was refused") != NULL);

  fc_elect_init(&s, 200);
  granted(&s, 0, 5);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 1, .rev = 3});
  CHECK_EQ_INT(step(&s, FC_EV_WRITE_UNKNOWN, 10), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "outcome is unknown") != NULL);

  /* a standby whose lease is gone starts over with a new one */
  fc_elect_init(&s, 200);
  granted(&s, 0, 5);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_LOST, .now_ms = 1, .holder = "x"});
  CHECK_EQ_INT(step(&s, FC_EV_LEASE_GONE, 10), FC_ACT_GRANT);
  CHECK_EQ_INT(s.state, FC_ELECT_INIT);
  CHECK_EQ_INT(s.lease, 0);
  /* and one whose lease ran out unrenewed too; a fence refusal means nothing to it */
  granted(&s, 20, 1);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_LOST, .now_ms = 21, .holder = "x"});
  CHECK_EQ_INT(step(&s, FC_EV_FENCE_REFUSED, 30), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_STANDBY);
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 1020), FC_ACT_GRANT);
  /* events that do not fit the state are ignored */
  CHECK_EQ_INT(fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 1030, .rev = 5}), FC_ACT_GRANT);
  CHECK_EQ_INT(s.state, FC_ELECT_INIT);
  CHECK_EQ_INT(fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_LEASE_GRANTED, .now_ms = 1030, .lease = 0, .ttl_s = 2}),
               FC_ACT_GRANT); /* no lease in the answer */
}

static void test_suspended(void) {
  fc_elect s;
  fc_elect_init(&s, 200);
  s.hold_ms = 10000;
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 666), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 1999), FC_ACT_WAIT);
  CHECK(fc_elect_is_leader(&s, 1999));
  CHECK(!fc_elect_is_suspended(&s, 1999));
  /* past the deadline, before any step: not leading, already suspended */
  CHECK(!fc_elect_is_leader(&s, 2000));
  CHECK(fc_elect_is_suspended(&s, 2000));
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 2000), FC_ACT_KEEPALIVE); /* suspended: tries at once */
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK(!fc_elect_is_leader(&s, 2000));
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 2100), FC_ACT_WAIT);
  CHECK_EQ_INT(fc_elect_next_ms(&s), 2300); /* keeps trying every poll_ms */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 2300), FC_ACT_KEEPALIVE);
  /* a keep-alive lands: not enough (etcd's raft leader renews alone until it notices
   * it lost quorum); a confirming read that fails starts over */
  CHECK_EQ_INT(keepalive_ok(&s, 2300, 2310, 2), FC_ACT_CONFIRM);
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK(!fc_elect_is_leader(&s, 2310));
  CHECK_EQ_INT(fc_elect_next_ms(&s), 0);
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 2900), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK_EQ_INT(step(&s, FC_EV_CONFIRMED, 2950), FC_ACT_WAIT); /* not asked for: ignored */
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  /* quorum is back: renewed and confirmed: leading again, same fencing revision */
  CHECK_EQ_INT(keepalive_ok(&s, 5000, 5005, 2), FC_ACT_CONFIRM);
  CHECK_EQ_INT(step(&s, FC_EV_CONFIRMED, 5010), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_LEADER);
  CHECK_EQ_INT(s.rev, 7);
  CHECK(fc_elect_is_leader(&s, 5010));
  CHECK_EQ_INT(s.deadline_ms, 7000);
  /* suspended again; this time etcd answers that the lease is gone: deposed */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 7000), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK_EQ_INT(step(&s, FC_EV_LEASE_GONE, 7100), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "expired") != NULL);

  /* a keep-alive answered too late to be of use keeps it suspended */
  fc_elect_init(&s, 200);
  s.hold_ms = 10000;
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 2000), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(keepalive_ok(&s, 2000, 4500, 2), FC_ACT_WAIT);
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK_EQ_INT(fc_elect_next_ms(&s), 4500 + 666);
  /* the hold spent: deposed, and never leader again */
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 11999), FC_ACT_WAIT);
  CHECK(fc_elect_is_suspended(&s, 11999));
  CHECK_EQ_INT(fc_elect_next_ms(&s), 12000); /* never sleeps past the hold */
  CHECK_EQ_INT(step(&s, FC_EV_TICK, 12000), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "could not be renewed for 10000 ms") != NULL);
  CHECK(!fc_elect_is_suspended(&s, 12000));
  CHECK_EQ_INT(keepalive_ok(&s, 12000, 12001, 2), FC_ACT_STEP_DOWN);

  /* a fenced write of unknown outcome: suspended at once, and deposed (not leading
   * again) when etcd answers, so that the next leader reads what landed */
  fc_elect_init(&s, 200);
  s.hold_ms = 10000;
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  CHECK_EQ_INT(step(&s, FC_EV_WRITE_UNKNOWN, 100), FC_ACT_KEEPALIVE);
  CHECK_EQ_INT(s.state, FC_ELECT_SUSPENDED);
  CHECK(!fc_elect_is_leader(&s, 100));
  CHECK(fc_elect_is_suspended(&s, 100));
  CHECK_EQ_INT(step(&s, FC_EV_ETCD_ERROR, 200), FC_ACT_WAIT);
  CHECK_EQ_INT(keepalive_ok(&s, 3000, 3005, 2), FC_ACT_CONFIRM);
  CHECK_EQ_INT(step(&s, FC_EV_CONFIRMED, 3010), FC_ACT_STEP_DOWN);
  CHECK(strstr(s.why, "unknown outcome") != NULL);

  /* the confirming read finds the key gone or another's: deposed */
  fc_elect_init(&s, 200);
  s.hold_ms = 10000;
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  step(&s, FC_EV_TICK, 2000);
  CHECK_EQ_INT(keepalive_ok(&s, 2100, 2105, 2), FC_ACT_CONFIRM);
  CHECK_EQ_INT(step(&s, FC_EV_FENCE_REFUSED, 2110), FC_ACT_STEP_DOWN);

  /* a fenced write refused while suspended (it sends none, but the machine must not care) */
  fc_elect_init(&s, 200);
  s.hold_ms = 10000;
  granted(&s, 0, 2);
  fc_elect_step(&s, &(fc_elect_ev){.kind = FC_EV_WON, .now_ms = 5, .rev = 7});
  step(&s, FC_EV_TICK, 2000);
  CHECK_EQ_INT(step(&s, FC_EV_FENCE_REFUSED, 2001), FC_ACT_STEP_DOWN);
}

int main(void) {
  test_win();
  test_suspended();
  test_standby_then_win();
  test_unreachable();
  test_lease_gone_and_fence();
  return CHECK_DONE();
}

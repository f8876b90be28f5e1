/*
 * elect.h - the leader election of coordinator replicas as a pure state
 * machine: etcd's answers (and the clock) in, the next thing to do out. No
 * I/O, no clock of its own, no threads: coordinator/leader.c runs it against
 * etcd, tests/unit/test_elect.c drives it through every failure.
 *
 * The recipe is etcd's own election (clientv3/concurrency): each replica
 * holds a lease; campaigning is a Txn "if the leader key's create_revision is
 * 0, put it (our id) attached to our lease, else read it"; the winner's
 * create_revision is its fencing token: every write that matters is a Txn
 * comparing the key's create_revision with it (leader.c, fc_leader_fenced),
 * so once the key is gone (lease expired) or belongs to another, nothing of
 * ours lands.
 *
 * Safety rule kept here: a replica acts as leader only while its lease is
 * certainly alive by its own clock, i.e. before (send time of the last
 * successful keep-alive) + TTL; past that it steps down even if etcd never
 * said so (etcd unreachable, quorum lost). The fence makes a late write
 * harmless anyway; this makes it rare and bounds how long a cut-off leader
 * keeps clients.
 *
 *   state     event                         -> state     action
 *   INIT      (start, or lease lost)           INIT      GRANT
 *   INIT      LEASE_GRANTED                    CAMPAIGN  CAMPAIGN
 *   CAMPAIGN  WON(rev)                         LEADER    WAIT until the next keep-alive
 *   CAMPAIGN  LOST(holder)                     STANDBY   CAMPAIGN again after poll_ms
 *   STANDBY   (same as CAMPAIGN: it campaigns every poll_ms, keep-alive every TTL/3)
 *   any       KEEPALIVE_OK(sent, ttl)          same      deadline = sent + ttl
 *   LEADER    LEASE_GONE | FENCE_REFUSED       DEPOSED   STEP_DOWN
 *   LEADER    WRITE_UNKNOWN                    DEPOSED   STEP_DOWN (the next leader reads what landed)
 *   LEADER    TICK past the lease deadline     DEPOSED   STEP_DOWN
 *   other     LEASE_GONE, or past deadline     INIT      GRANT (a new lease)
 *   any       ETCD_ERROR                       same      retry after poll_ms (deadline rules apply)
 *   DEPOSED   anything                         DEPOSED   STEP_DOWN (the caller starts a new election)
 */
#ifndef FEDC_COORD_ELECT_H
#define FEDC_COORD_ELECT_H

#include <stdint.h>

enum fc_elect_state { FC_ELECT_INIT = 0, FC_ELECT_CAMPAIGN, FC_ELECT_STANDBY, FC_ELECT_LEADER, FC_ELECT_DEPOSED };
enum fc_elect_event {
  FC_EV_TICK = 0,
  FC_EV_LEASE_GRANTED, /* lease, ttl_s, sent_ms */
  FC_EV_WON,           /* rev: the leader key's create_revision */
  FC_EV_LOST,          /* holder: who leads (copied) */
  FC_EV_KEEPALIVE_OK,  /* ttl_s, sent_ms */
  FC_EV_LEASE_GONE,    /* etcd says our lease has expired or was revoked */
  FC_EV_ETCD_ERROR,    /* a call failed (unreachable, timeout, refused) */
  FC_EV_FENCE_REFUSED, /* a fenced Txn found the key gone or another's */
  FC_EV_WRITE_UNKNOWN  /* a fenced write's outcome is unknown (timeout, unreachable): it may yet apply */
};
enum fc_elect_action { FC_ACT_WAIT = 0, FC_ACT_GRANT, FC_ACT_CAMPAIGN, FC_ACT_KEEPALIVE, FC_ACT_STEP_DOWN };

typedef struct fc_elect_ev {
  int kind;        /* fc_elect_event */
  uint64_t now_ms; /* the lease clock: monotonic, suspend included (leader.c: CLOCK_BOOTTIME) */
  uint64_t sent_ms; /* LEASE_GRANTED / KEEPALIVE_OK: when the request was sent */
  int64_t lease, ttl_s, rev;
  const char *holder;
} fc_elect_ev;

typedef struct fc_elect {
  int state;             /* fc_elect_state */
  uint32_t poll_ms;      /* standby's campaign period, retry period after an error */
  int64_t lease, ttl_s;  /* our lease (0 = none) */
  int64_t rev;           /* LEADER: our key's create_revision (the fencing token) */
  uint64_t deadline_ms;  /* our lease is certainly alive before this */
  uint64_t next_keepalive_ms, next_campaign_ms;
  char holder[128];      /* STANDBY: the leader's id as read from etcd */
  char why[160];         /* DEPOSED: why */
} fc_elect;

void fc_elect_init(fc_elect *s, uint32_t poll_ms);
/* Feeds one event; returns the action to take now (FC_ACT_WAIT: nothing
 * until fc_elect_next_ms). */
int fc_elect_step(fc_elect *s, const fc_elect_ev *ev);
/* When to call fc_elect_step with a TICK next. */
uint64_t fc_elect_next_ms(const fc_elect *s);
/* 1 if this replica may act as leader at now_ms. */
int fc_elect_is_leader(const fc_elect *s, uint64_t now_ms);
const char *fc_elect_state_name(int state);

#endif

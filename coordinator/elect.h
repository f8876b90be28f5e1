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
 * successful keep-alive) + TTL; past that it stops leading even if etcd
 * never said so (etcd unreachable, quorum lost): SUSPENDED (below), or
 * DEPOSED with no hold. The fence makes a late write harmless anyway; this
 * makes it rare, and the hold bounds how long a cut-off leader keeps clients.
 *
 * Quorum loss (the lease cannot be renewed because etcd cannot commit, or
 * cannot be reached): a leader past its deadline does not drop its clients at
 * once. It is SUSPENDED for up to hold_ms: it does not lead (no fenced write
 * is even sent, nothing is published), the coordinator answers check-ins
 * "unavailable, retry in N ms", and it keeps sending keep-alives. A renewed
 * lease and then a linearizable read that finds our key (CONFIRM) mean etcd
 * has quorum again and our lease (with our key on it) lived throughout: no
 * one else can have been elected, so it leads again with the same fencing
 * revision (etcd's new raft leader extends every lease by its TTL when
 * it takes over, so a lease outlives a short quorum loss). LEASE_GONE, a
 * refused fence or hold_ms spent: DEPOSED as before. The bound is for the one
 * case a replica cannot tell from quorum loss, itself cut off from a healthy
 * etcd while another replica leads: it holds its clients at most hold_ms.
 *
 *   state     event                         -> state     action
 *   INIT      (start, or lease lost)           INIT      GRANT
 *   INIT      LEASE_GRANTED                    CAMPAIGN  CAMPAIGN
 *   CAMPAIGN  WON(rev)                         LEADER    WAIT until the next keep-alive
 *   CAMPAIGN  LOST(holder)                     STANDBY   CAMPAIGN again after poll_ms
 *   STANDBY   (same as CAMPAIGN: it campaigns every poll_ms, keep-alive every TTL/3)
 *   any       KEEPALIVE_OK(sent, ttl)          same      deadline = sent + ttl
 *   LEADER    LEASE_GONE | FENCE_REFUSED       DEPOSED   STEP_DOWN
 *   LEADER    WRITE_UNKNOWN (hold_ms = 0)      DEPOSED   STEP_DOWN (the next leader reads what landed)
 *   LEADER    TICK past the lease deadline     SUSPENDED KEEPALIVE (hold_ms > 0; else DEPOSED, STEP_DOWN)
 *   LEADER    WRITE_UNKNOWN (hold_ms > 0)      SUSPENDED KEEPALIVE, marked unsure
 *   SUSPENDED KEEPALIVE_OK(sent, ttl)          SUSPENDED CONFIRM (a renewal alone proves no quorum)
 *   SUSPENDED CONFIRMED                        LEADER    (re-established; same fencing revision)
 *                                              DEPOSED   if unsure (the next leader reads what landed)
 *   SUSPENDED ETCD_ERROR                       same      KEEPALIVE again after poll_ms
 *   SUSPENDED LEASE_GONE | FENCE_REFUSED |     DEPOSED   STEP_DOWN
 *             WRITE_UNKNOWN | hold_ms spent
 *   other     LEASE_GONE, or past deadline     INIT      GRANT (a new lease)
 *   any       ETCD_ERROR                       same      retry after poll_ms (deadline rules apply)
 *   DEPOSED   anything                         DEPOSED   STEP_DOWN (the caller starts a new election)
 */
#ifndef FEDC_COORD_ELECT_H
#define FEDC_COORD_ELECT_H

#include <stdint.h>

enum fc_elect_state {
  FC_ELECT_INIT = 0,
  FC_ELECT_CAMPAIGN,
  FC_ELECT_STANDBY,
  FC_ELECT_LEADER,
  FC_ELECT_DEPOSED,
  FC_ELECT_SUSPENDED /* a leader whose lease etcd cannot renew now (quorum lost): publishes nothing */
};
enum fc_elect_event {
  FC_EV_TICK = 0,
  FC_EV_LEASE_GRANTED, /* lease, ttl_s, sent_ms */
  FC_EV_WON,           /* rev: the leader key's create_revision */
  FC_EV_LOST,          /* holder: who leads (copied) */
  FC_EV_KEEPALIVE_OK,  /* ttl_s, sent_ms */
  FC_EV_LEASE_GONE,    /* etcd says our lease has expired or was revoked */
  FC_EV_ETCD_ERROR,    /* a call failed (unreachable, timeout, refused) */
  FC_EV_FENCE_REFUSED, /* a fenced Txn found the key gone or another's */
  FC_EV_WRITE_UNKNOWN, /* a fenced write's outcome is unknown (timeout, unreachable): it may yet apply */
  FC_EV_CONFIRMED      /* CONFIRM: a linearizable read found the leader key ours (etcd has quorum) */
};
enum fc_elect_action {
  FC_ACT_WAIT = 0,
  FC_ACT_GRANT,
  FC_ACT_CAMPAIGN,
  FC_ACT_KEEPALIVE,
  FC_ACT_STEP_DOWN,
  FC_ACT_CONFIRM /* SUSPENDED: a fenced read-only Txn (linearizable: needs quorum) -> CONFIRMED / FENCE_REFUSED */
};

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
  uint64_t hold_ms;      /* longest a leader stays SUSPENDED before it steps down (0: at once) */
  uint64_t suspended_ms; /* SUSPENDED: since when */
  int confirm;           /* SUSPENDED: the lease was renewed; a CONFIRM is due */
  int unsure;            /* SUSPENDED after a fenced write of unknown outcome: deposed, not LEADER, once etcd answers */
  int64_t lease, ttl_s;  /* our lease (0 = none) */
  int64_t rev;           /* LEADER: our key's create_revision (the fencing token) */
  uint64_t deadline_ms;  /* our lease is certainly alive before this */
  uint64_t next_keepalive_ms, next_campaign_ms;
  char holder[128];      /* STANDBY: the leader's id as read from etcd */
  char why[160];         /* DEPOSED: why */
} fc_elect;

void fc_elect_init(fc_elect *s, uint32_t poll_ms); /* hold_ms = 0: set it after, if wanted */
/* Feeds one event; returns the action to take now (FC_ACT_WAIT: nothing
 * until fc_elect_next_ms). */
int fc_elect_step(fc_elect *s, const fc_elect_ev *ev);
/* When to call fc_elect_step with a TICK next. */
uint64_t fc_elect_next_ms(const fc_elect *s);
/* 1 if this replica may act as leader at now_ms. */
int fc_elect_is_leader(const fc_elect *s, uint64_t now_ms);
/* 1 if SUSPENDED at now_ms (a leader waiting for etcd's quorum; not leading). */
int fc_elect_is_suspended(const fc_elect *s, uint64_t now_ms);
const char *fc_elect_state_name(int state);

#endif

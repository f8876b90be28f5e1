/*
 * leader.h - one coordinator replica's part in the leader election on etcd
 * (`fedc coordinator --etcd ...`): a thread runs the election state machine
 * of elect.h against etcd (lease, campaign, keep-alives); the coordinator
 * asks whether it leads, and makes every write that matters through
 * fc_leader_fenced, a Txn that lands only while our leader key is still ours.
 *
 * Keys under the prefix P (default "/fedc/<federation>"):
 *   | key        | value                                       | written by                 |
 *   |------------|---------------------------------------------|----------------------------|
 *   | P/leader   | "<id>" (replica identity), on our lease     | campaign (create-if-absent)|
 *   | P/model    | {"version","sha256","round"}: the pointer   | publish, fenced            |
 *   | P/aggregators/<name> | "<host:port> <identity>", on the aggregator's lease | `fedc aggregator` |
 *
 * Owns: its etcd handles (one for the election thread, one for fenced writes
 * and reads, each used by one thread at a time), the state machine under
 * `mu`. May call: elect.h, etcd.h, common/log.h. Called by: the CLI
 * (lifecycle), coord_ha.c (publish hook, status).
 */
#ifndef FEDC_COORD_LEADER_H
#define FEDC_COORD_LEADER_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/etcd.h"

typedef struct fc_leader_opts {
  fc_etcd_opts etcd;
  const char *prefix; /* key prefix, e.g. "/fedc/demo" */
  int ttl_s;          /* lease TTL (default 5) */
  const char *id;     /* this replica, as others will see it (e.g. "host pid 127.0.0.1:7070") */
  uint32_t poll_ms;   /* a standby campaigns this often (default 200) */
  uint32_t hold_ms;   /* a leader whose lease etcd cannot renew (quorum lost) stays suspended this long before
                         it steps down (elect.h); 0 = at once */
} fc_leader_opts;

typedef struct fc_leader fc_leader;

typedef struct fc_leader_info {
  char role[16];       /* elect.h state name: "leader", "standby", "campaigning", "deposed", "init" */
  char leader[128];    /* who leads as far as we know ("" unknown) */
  char endpoint[256];  /* etcd endpoint that answered last */
  int etcd_ok;         /* the last etcd call answered */
  uint64_t etcd_last_ok_ms; /* wall clock of the last answer (0 never) */
  char etcd_error[256];     /* the last failure */
  int64_t rev, lease, ttl_s;
} fc_leader_info;

/* Starts the election thread (nothing blocks here but opening channels). */
int fc_leader_start(const fc_leader_opts *o, fc_leader **out, char *err, size_t errlen);
/* Stops the thread; revokes our lease if we still lead (the next replica
 * then wins at once instead of after a TTL). Accepts NULL. */
void fc_leader_stop(fc_leader *l);
/* Waits up to timeout_ms for a change; 1 if we lead now. */
int fc_leader_wait(fc_leader *l, int timeout_ms);
int fc_leader_is_leader(fc_leader *l);
/* 1 while suspended (elect.h: our lease cannot be renewed now, etcd without
 * quorum or unreachable; we publish nothing and wait for it); *retry_ms: when
 * a client should come back (about one keep-alive attempt). */
int fc_leader_suspended(fc_leader *l, uint32_t *retry_ms);
/* 1 once deposed (a terminal state; why in `why`): stop serving. */
int fc_leader_deposed(fc_leader *l, char *why, size_t whylen);
void fc_leader_get_info(fc_leader *l, fc_leader_info *out);
const char *fc_leader_prefix(const fc_leader *l);

/* A Txn of `ops` guarded by "P/leader's create_revision == ours". FEDC_OK if
 * it landed; FEDC_ERR_REJECTED if the guard failed (we are deposed: the state
 * machine steps down); FEDC_ERR_STOPPED if we do not lead by our own clock
 * (nothing sent); etcd's errors otherwise. With ops, a timeout or an
 * unreachable etcd leaves the outcome unknown: we step down as well, so that
 * no other content is written under the same version before the next leader
 * has read what landed. res may be NULL. */
int fc_leader_fenced(fc_leader *l, const fc_etcd_op *ops, size_t nops, fc_etcd_txn_result *res, char *err,
                     size_t errlen);
/* Reads P/<suffix> (linearizable). */
int fc_leader_read(fc_leader *l, const char *suffix, fc_etcd_kv *kv, char *err, size_t errlen);
/* Reads every key under P/<suffix> (linearizable), e.g. the aggregator
 * registry P/aggregators/ (coordinator/agg_tier.h). */
int fc_leader_read_prefix(fc_leader *l, const char *suffix, fc_etcd_entry *out, size_t cap, size_t *n, char *err,
                          size_t errlen);

#endif

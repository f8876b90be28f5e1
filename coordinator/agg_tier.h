/*
 * agg_tier.h - the leader's book of the aggregator tier (issue 23), pure:
 * which aggregators are registered (as read from etcd), which aggregator
 * each selected client of the round uploads to, which of those updates the
 * round has counted, and the checks a partial sum must pass before the
 * leader folds it. No locks, no I/O, no clock: coord_aggtier.c holds it
 * under the coordinator's `mu` and feeds it etcd's registry and the calls.
 *
 * Registry (etcd, under the federation's prefix P, each key on the
 * aggregator's own lease, so it vanishes when the aggregator stops renewing):
 *   | key                  | value                                          |
 *   |----------------------|------------------------------------------------|
 *   | P/aggregators/<name> | "<host:port> spiffe://<fed>/aggregator/<name>" |
 *
 * Invariants: an assignment is stable for its round (a client checking in
 * again hears the same aggregator); an update is counted at most once per
 * round however many partials name it; a partial is taken whole or not at
 * all. May call: common/tensor.h, upload_check.h (the weight rule).
 */
#ifndef FEDC_COORD_AGG_TIER_H
#define FEDC_COORD_AGG_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"
#include "coordinator/upload_check.h"

#define FC_TIER_MAX_MEMBERS 256
#define FC_TIER_MAX_UPDATES 65536 /* updates one partial may name (PartialMeta.updates) */
#define FC_TIER_KEY "aggregators/" /* under the prefix */

typedef struct fc_tier_member {
  char name[65];      /* certificate name: the aggregator is spiffe://<fed>/aggregator/<name> */
  char address[256];  /* host:port its clients upload to */
  char identity[300]; /* spiffe://<fed>/aggregator/<name>: what a client checks */
} fc_tier_member;

typedef struct fc_tier fc_tier;

int fc_tier_create(fc_tier **out);
void fc_tier_destroy(fc_tier *t); /* accepts NULL */

/* One registry entry: key suffix `name` (after P/aggregators/) and its value.
 * FEDC_ERR_INVALID with one line in why: a bad name or address, or an
 * identity that is not spiffe://<federation>/aggregator/<name>. */
int fc_tier_parse_member(const char *name, const char *value, size_t len, const char *federation,
                         fc_tier_member *out, char *why, size_t whylen);

/* Replace the registry with m[0..n) (at most FC_TIER_MAX_MEMBERS kept).
 * Assignments to members that left stay: their clients were told already,
 * their updates are lost with the aggregator (partials from it are refused
 * as unknown from now on). Returns how many members left. */
size_t fc_tier_set_members(fc_tier *t, const fc_tier_member *m, size_t n);
size_t fc_tier_member_count(const fc_tier *t);
const fc_tier_member *fc_tier_member_get(const fc_tier *t, size_t i); /* i < fc_tier_member_count */
int fc_tier_known(const fc_tier *t, const char *name);
/* Clients of the current round assigned to `name` (its load). */
size_t fc_tier_load(const fc_tier *t, const char *name);
/* ... of which the round has not counted an update yet. */
size_t fc_tier_uncounted(const fc_tier *t, const char *name);

/* Load of one registered member, for `fedc status` (ReplicaStatus.aggregators).
 * The counters live as long as the member stays registered: one that leaves
 * and comes back starts from zero. */
typedef struct fc_tier_load_info {
  fc_tier_member m;
  uint64_t round;           /* the round assigned/counted belong to (the book's current one) */
  uint32_t assigned, counted;
  uint64_t partials_accepted, partials_refused, updates_counted;
  uint64_t last_seen_ms;    /* wall clock of its last call (0 none) */
} fc_tier_load_info;
/* A call from member `name` at now_ms (ignored for a name not registered). */
void fc_tier_note_seen(fc_tier *t, const char *name, uint64_t now_ms);
/* A partial from `name` refused (an accepted one counts in fc_tier_mark_counted). */
void fc_tier_note_refused(fc_tier *t, const char *name);
/* One partial stream per aggregator at a time (a second would hold another
 * handler thread and staging slot): FEDC_OK and marked, FEDC_ERR_EXISTS if
 * one is being received, FEDC_ERR_NOT_FOUND if name is not a member. End it
 * whatever its outcome (a member that left meanwhile: nothing to do). */
int fc_tier_partial_begin(fc_tier *t, const char *name);
void fc_tier_partial_end(fc_tier *t, const char *name);
/* The registered members' load, in registry order; returns how many (<= cap). */
size_t fc_tier_loads(const fc_tier *t, fc_tier_load_info *out, size_t cap);

/* The aggregator of `client` in `round`: the one it was given before in this
 * round, else the registered member with the fewest clients of the round
 * (ties: registry order, which makes it round-robin). A new round forgets the
 * last one's assignments. *out is copied; FEDC_ERR_NOT_FOUND if no
 * aggregator is registered, FEDC_ERR_NOMEM. */
int fc_tier_assign(fc_tier *t, uint64_t round, const char *client, fc_tier_member *out);
/* The same, keeping a group together (group >= 0: a secure-aggregation
 * bucket, whose masked inputs are summed apart from the others): the first
 * client of a group goes to the member with the fewest clients, the rest of
 * the group to the same one while it stays registered. */
int fc_tier_assign_group(fc_tier *t, uint64_t round, const char *client, long group, fc_tier_member *out);
/* Clients assigned to aggregator `name` in `round` and not counted yet
 * (pointers into t, valid until the next call that changes t). */
size_t fc_tier_assigned(const fc_tier *t, uint64_t round, const char *name, const char **out, size_t cap);

/* One update a partial names, and the partial itself. */
typedef struct fc_tier_update {
  const char *client;
  uint64_t examples;
  double weight;
  double loss; /* train_loss: fc_upload_meta_check's range, as for a direct upload */
} fc_tier_update;

typedef struct fc_tier_partial {
  const char *aggregator; /* the caller's certificate name */
  uint64_t round, version;
  double total_weight;
  const fc_tier_update *updates;
  size_t n;
  const fc_model_spec *spec; /* the sum's header */
  int masked; /* secure aggregation: masked inputs (a client reports no examples: its weight is in the input) */
} fc_tier_partial;

/* What the leader expects of a partial now. */
typedef struct fc_tier_expect {
  uint64_t round, version;   /* the open round and its model version */
  const fc_model_spec *spec; /* the model's shape */
  fc_upload_rules rules;     /* the weight rule */
} fc_tier_expect;

/* The checks before any byte of the sum is taken, and again before it is
 * folded: the aggregator is registered; round and version are the open
 * ones; 1..FC_TIER_MAX_UPDATES updates; the shape is the model's; every
 * update's client was assigned to this aggregator in this round, is named
 * once and not counted before; its loss is finite in [0, FC_MAX_TRAIN_LOSS]
 * (upload_check.h, as a direct upload's); every weight is what the weight rule gives
 * for its examples and they sum to total_weight. FEDC_OK, or
 * FEDC_ERR_REJECTED (unknown aggregator), FEDC_ERR_SHAPE, FEDC_ERR_INVALID
 * with one line in why. */
int fc_tier_check_partial(const fc_tier *t, const fc_tier_partial *p, const fc_tier_expect *e, char *why,
                          size_t whylen);
/* The sum itself (fc_agg_check of it): finite (the caller's update_check),
 * its L2 norm within clip x total weight (the triangle inequality over
 * clipped updates) and max |value| within FC_AGG_MAX_WEIGHTED_ABS per update. */
int fc_tier_check_sum(double l2, double amax, const fc_tier_partial *p, const fc_upload_rules *r, char *why,
                      size_t whylen);
/* The partial was folded: its updates are counted (and the aggregator's
 * partials_accepted and updates_counted go up). */
void fc_tier_mark_counted(fc_tier *t, const fc_tier_partial *p);

#endif

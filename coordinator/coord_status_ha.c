/*
 * coord_status_ha.c - the distributed part of the Status answer (issue 23):
 * the coordinator replicas registered in etcd (replica_reg.h: read now,
 * through the leader's etcd handle, so the list is etcd's, not a cache) and,
 * with --aggregator-tier, each registered aggregator's load from the
 * leader's book (coord_aggtier.c).
 *
 * Everything the answer points into is one allocation the caller frees after
 * sending. A failed etcd read leaves the list empty and says why
 * (replicas_error); the rest of the status is answered as usual.
 * May call: replica_reg.h, agg_tier.h (types), coord_aggtier.c
 * (coord_tier_loads). Called by: coord_admin.c (Status).
 */
#include "coordinator/coordinator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/agg_tier.h"
#include "coordinator/coord_int.h"
#include "coordinator/replica_reg.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"

typedef struct held {
  fc_replica_entry rep[FC_REPLICA_MAX];
  Fedc__V1__ReplicaMember rm[FC_REPLICA_MAX];
  Fedc__V1__ReplicaMember *rp[FC_REPLICA_MAX];
  fc_tier_load_info li[FC_TIER_MAX_MEMBERS];
  Fedc__V1__AggregatorLoad al[FC_TIER_MAX_MEMBERS];
  Fedc__V1__AggregatorLoad *ap[FC_TIER_MAX_MEMBERS];
  char err[512];
} held;

void *coord_status_ha(fc_coord *c, Fedc__V1__ReplicaStatus *rs) {
  if (!c->cfg.leader) return NULL;
  held *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  size_t n = 0;
  if (fc_replica_list(c->cfg.leader, h->rep, FC_REPLICA_MAX, &n, h->err, sizeof h->err) != FEDC_OK) {
    rs->replicas_error = h->err;
    n = 0;
  }
  for (size_t i = 0; i < n; i++) {
    Fedc__V1__ReplicaMember *m = &h->rm[i];
    fedc__v1__replica_member__init(m);
    m->id = h->rep[i].id;
    m->address = h->rep[i].address;
    m->role = h->rep[i].role;
    m->lease = h->rep[i].lease;
    h->rp[i] = m;
  }
  rs->n_replicas = n;
  rs->replicas = h->rp;
  rs->aggregator_tier = c->tier != NULL;
  size_t k = coord_tier_loads(c, h->li, FC_TIER_MAX_MEMBERS);
  for (size_t i = 0; i < k; i++) {
    const fc_tier_load_info *l = &h->li[i];
    Fedc__V1__AggregatorLoad *a = &h->al[i];
    fedc__v1__aggregator_load__init(a);
    a->name = (char *)l->m.name;
    a->address = (char *)l->m.address;
    a->round = l->round;
    a->assigned = l->assigned;
    a->counted = l->counted;
    a->partials_accepted = l->partials_accepted;
    a->partials_refused = l->partials_refused;
    a->updates_counted = l->updates_counted;
    a->last_seen_unix_ms = l->last_seen_ms;
    h->ap[i] = a;
  }
  rs->n_aggregators = k;
  rs->aggregators = h->ap;
  return h;
}

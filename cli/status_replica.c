/*
 * status_replica.c - `fedc status` lines for a coordinator replica on etcd
 * (status_replica.h): role, leader, etcd's health, the replicas registered
 * in etcd, and with --aggregator-tier each aggregator's load. The strings
 * come from the coordinator: shown escaped.
 * May call: cli_common.h, common/clock.h.
 */
#include "cli/status_replica.h"

#include <stdio.h>

#include "cli/cli_common.h"
#include "common/clock.h"

static const char *s(const char *v) { return v ? v : ""; }

void status_replica_json(json_t *o, const Fedc__V1__ReplicaStatus *r) {
  if (!r) return;
  json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:b,s:s,s:I,s:I,s:I}", "role", s(r->role), "leader", s(r->leader),
                        "etcd_prefix", s(r->etcd_prefix), "etcd_endpoint", s(r->etcd_endpoint), "etcd_ok",
                        (int)r->etcd_ok, "etcd_error", s(r->etcd_error), "etcd_last_ok_ms",
                        (json_int_t)r->etcd_last_ok_ms, "fencing_revision", (json_int_t)r->fencing_revision,
                        "lease_ttl_s", (json_int_t)r->lease_ttl_s);
  if (!j) return;
  json_t *reps = json_array(), *aggs = json_array();
  for (size_t i = 0; reps && i < r->n_replicas; i++) {
    const Fedc__V1__ReplicaMember *m = r->replicas[i];
    json_array_append_new(reps, json_pack("{s:s,s:s,s:s,s:I}", "id", s(m->id), "address", s(m->address), "role",
                                          s(m->role), "lease", (json_int_t)m->lease));
  }
  for (size_t i = 0; aggs && i < r->n_aggregators; i++) {
    const Fedc__V1__AggregatorLoad *a = r->aggregators[i];
    json_array_append_new(aggs, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "name", s(a->name), "address",
                                          s(a->address), "round", (json_int_t)a->round, "assigned",
                                          (json_int_t)a->assigned, "counted", (json_int_t)a->counted,
                                          "partials_accepted", (json_int_t)a->partials_accepted, "partials_refused",
                                          (json_int_t)a->partials_refused, "updates_counted",
                                          (json_int_t)a->updates_counted, "last_seen_unix_ms",
                                          (json_int_t)a->last_seen_unix_ms));
  }
  if (reps) json_object_set_new(j, "replicas", reps);
  json_object_set_new(j, "replicas_error", json_string(s(r->replicas_error)));
  json_object_set_new(j, "aggregator_tier", json_boolean(r->aggregator_tier));
  if (aggs) json_object_set_new(j, "aggregators", aggs);
  json_object_set_new(o, "replica", j);
}

void status_replica_print(const Fedc__V1__ReplicaStatus *r) {
  if (!r) return;
  char b[1024];
  printf("replica:         %s", CLI_SHOWN(b, s(r->role)));
  printf(" (leader: %s)\n", CLI_SHOWN(b, s(r->leader)));
  printf("election:        %s/leader, fencing revision %lld, lease %lld s\n", CLI_SHOWN(b, s(r->etcd_prefix)),
         (long long)r->fencing_revision, (long long)r->lease_ttl_s);
  uint64_t now = fc_now_ms();
  double ago = r->etcd_last_ok_ms && now >= r->etcd_last_ok_ms ? (double)(now - r->etcd_last_ok_ms) / 1000.0 : -1;
  if (r->etcd_ok) printf("etcd:            healthy (%s answered %.1f s ago)\n", CLI_SHOWN(b, s(r->etcd_endpoint)), ago);
  else
    printf("etcd:            UNREACHABLE: %s\n", CLI_SHOWN(b, s(r->etcd_error)));
  if (r->replicas_error && r->replicas_error[0])
    printf("replicas:        not read from etcd: %s\n", CLI_SHOWN(b, r->replicas_error));
  else
    printf("replicas:        %zu registered\n", r->n_replicas);
  for (size_t i = 0; i < r->n_replicas; i++) {
    const Fedc__V1__ReplicaMember *m = r->replicas[i];
    printf("  %-8s %s", CLI_SHOWN(b, s(m->role)), CLI_SHOWN(b, s(m->id)));
    printf(" (address %s)\n", CLI_SHOWN(b, s(m->address)));
  }
  if (!r->aggregator_tier) return;
  printf("aggregators:     %zu registered\n", r->n_aggregators);
  for (size_t i = 0; i < r->n_aggregators; i++) {
    const Fedc__V1__AggregatorLoad *a = r->aggregators[i];
    double seen = a->last_seen_unix_ms && now >= a->last_seen_unix_ms ? (double)(now - a->last_seen_unix_ms) / 1000.0
                                                                       : -1;
    printf("  %s", CLI_SHOWN(b, s(a->name)));
    printf(" at %s: round %llu %u/%u counted; %llu partials (%llu refused), %llu updates; ",
           CLI_SHOWN(b, s(a->address)), (unsigned long long)a->round, a->counted, a->assigned,
           (unsigned long long)a->partials_accepted, (unsigned long long)a->partials_refused,
           (unsigned long long)a->updates_counted);
    if (seen >= 0) printf("seen %.1f s ago\n", seen);
    else
      printf("not seen yet\n");
  }
}

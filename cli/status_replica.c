/*
 * status_replica.c - `fedc status` lines for a coordinator replica on etcd
 * (status_replica.h). The strings come from the coordinator: shown escaped.
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
  if (j) json_object_set_new(o, "replica", j);
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
}

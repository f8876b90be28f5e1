/*
 * cmd_coordinator_ha.c - `fedc coordinator --etcd ...`: one of several
 * coordinator replicas (issue 23). The replica campaigns on etcd
 * (coordinator/leader.h) and, while it stands by, neither listens on the
 * client port nor touches the state directory; once it wins it brings the
 * shared state directory up to etcd's model pointer (fc_coord_ha_reconcile)
 * and starts the coordinator exactly as a restart would, with every write
 * fenced by its election. Suspended (its lease not renewed within the TTL:
 * etcd without quorum), it keeps listening, publishes nothing and tells
 * clients to retry, for up to --etcd-quorum-hold seconds (leader.h). Deposed
 * (lease expired, a fenced write refused, the hold spent without etcd
 * renewing the lease), it stops serving, removes its port file and
 * campaigns again: it returns to standby, it does not exit. A stop signal
 * ends it from any state (a leader revokes its lease on the way out, so the
 * next replica takes over at once).
 *
 * With --metrics-listen, a standby serves /healthz and /readyz there (both
 * 200: a standby is ready to take over; metrics.h, fc_standby_http_start),
 * so the kubelet's probes pass on every replica while only the leader listens
 * on the client port (deploy/k8s-ha: clients list the replicas).
 * Each election has its registration in etcd beside it (P/replicas/<id>
 * on the election's lease, coordinator/replica_reg.h), which the leader lists
 * in `fedc status`; it stops before the election (whose lease revoke takes
 * the key with it).
 *
 * May call: coordinator/leader.h, coordinator/replica_reg.h,
 * coordinator/coordinator.h, coordinator/metrics.h, cli_common.h.
 * Called by: cmd_coordinator.c (which passes its port-file writer).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "cli/cmd_coordinator_int.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/leader.h"
#include "coordinator/metrics.h"
#include "coordinator/replica_reg.h"
#include "fedc/error.h"

#define MOD "coordinator"

/* The election a coordinator of this process runs under; NULL while none
 * runs. Read by the store's commit guard from the coordinator's threads,
 * which fc_coord_stop has joined before it is cleared. */
static _Atomic(fc_leader *) leading;

/* fileutil.h's commit guard: a file of the shared state directory replaces
 * another only while we lead by our own clock. */
static int may_commit(void) {
  fc_leader *l = atomic_load(&leading);
  return l && fc_leader_is_leader(l);
}

int cc_run_replica(settings *s, const fc_model_spec *spec, const float *init, int (*write_port)(const char *, int)) {
  char host[128] = "?", id[128], prefix[256];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
  host[sizeof host - 1] = 0;
  snprintf(id, sizeof id, "%.60s pid %ld %.40s", host, (long)getpid(), s->c.listen);
  if (s->etcd_prefix[0]) snprintf(prefix, sizeof prefix, "%s", s->etcd_prefix);
  else
    snprintf(prefix, sizeof prefix, "/fedc/%s", s->c.federation);
  fc_leader_opts lo;
  memset(&lo, 0, sizeof lo);
  fc_etcd_opts_init(&lo.etcd);
  lo.etcd.endpoints = s->etcd;
  if (s->etcd_ca[0] || s->etcd_cert[0] || s->etcd_key[0]) {
    lo.etcd.tls.ca = s->etcd_ca[0] ? s->etcd_ca : NULL;
    lo.etcd.tls.cert = s->etcd_cert[0] ? s->etcd_cert : NULL;
    lo.etcd.tls.key = s->etcd_key[0] ? s->etcd_key : NULL;
  }
  /* Each etcd call must end inside a lease, or a slow one eats it: one call's
   * attempts take at most FC_ETCD_CALL_BUDGET (2) x this, so a keep-alive sent
   * at TTL/3 (after a timeout on a silent member, retried on the next) still
   * ends by the TTL. */
  lo.etcd.timeout_ms = s->etcd_lease_ttl * 1000 / 3 > 2000 ? 2000 : s->etcd_lease_ttl * 1000 / 3;
  lo.prefix = prefix;
  lo.ttl_s = s->etcd_lease_ttl;
  lo.id = id;
  lo.poll_ms = 200;
  lo.hold_ms = (uint32_t)s->etcd_quorum_hold * 1000;
  char shared[600];
  if (fc_etcd_shared_ca(&lo.etcd, s->c.ca, shared, sizeof shared)) FC_WARN(MOD, "%s", shared);
  fc_atomic_set_commit_guard(may_commit);
  for (;;) {
    fc_leader *l = NULL;
    char err[512], why[200];
    if (fc_leader_start(&lo, &l, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc coordinator: %s\n", err);
      return 2;
    }
    fc_replica_reg *reg = NULL;
    if (fc_replica_reg_start(&lo.etcd, l, id, s->c.listen, &reg, err, sizeof err) != FEDC_OK)
      FC_WARN(MOD, "replica registry: %s (this replica is not listed in fedc status)", err);
    FC_INFO(MOD, "replica \"%s\": campaigning on etcd %s (key %s/leader, lease %d s); standing by until elected", id,
            s->etcd, prefix, s->etcd_lease_ttl);
    fc_standby_http *health = NULL;
    if (s->c.metrics_listen[0] &&
        fc_standby_http_start(s->c.metrics_listen, s->c.metrics_public, (uint32_t)s->c.metrics_conns_per_address,
                              (uint64_t)s->c.metrics_request_ms, &health, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc coordinator: %s\n", err);
      fc_leader_stop(l);
      return 1;
    }
    int sig = 0;
    while (!fc_leader_wait(l, 200))
      if ((sig = cli_stop_wait(0)) > 0) break;
    fc_standby_http_stop(health); /* the coordinator binds the address next */
    if (sig > 0) {
      FC_INFO(MOD, "%s while standing by: exiting", strsignal(sig));
      fc_replica_reg_stop(reg);
    fc_leader_stop(l);
      return 0;
    }
    s->c.leader = l;
    atomic_store(&leading, l);
    fc_coord *coord = NULL;
    int rc = fc_coord_ha_reconcile(&s->c, err, sizeof err);
    if (rc == FEDC_OK) rc = fc_coord_start(&s->c, spec, init, &coord, err, sizeof err);
    if (rc != FEDC_OK) {
      fprintf(stderr, "fedc coordinator: %s\n", err);
      atomic_store(&leading, NULL);
      fc_replica_reg_stop(reg);
    fc_leader_stop(l);
      return 1;
    }
    int port = fc_coord_port(coord);
    FC_INFO(MOD, "leading: serving on port %d", port);
    if (s->port_file[0] && write_port(s->port_file, port) != 0) {
      fprintf(stderr, "fedc coordinator: cannot write port file %s: %s\n", s->port_file, strerror(errno));
      fc_coord_stop(coord, s->grace_ms);
      atomic_store(&leading, NULL);
      fc_replica_reg_stop(reg);
    fc_leader_stop(l);
      return 1;
    }
    int done = 0, lost = 0;
    for (;;) {
      if ((sig = cli_stop_wait(100)) > 0) break;
      if ((lost = fc_leader_deposed(l, why, sizeof why))) break;
      if (s->exit_when_done && fc_coord_done(coord)) {
        sig = fc_coord_drain(coord, s->drain_ms, cli_stop_wait);
        done = 1;
        break;
      }
    }
    /* Deposed: the port goes first (tests and operators read it as "leads"),
     * then the server; nothing it does now can land in etcd. */
    if (s->port_file[0] && (lost || sig > 0 || done)) unlink(s->port_file);
    fc_coord_stop(coord, lost ? 0 : s->grace_ms);
    atomic_store(&leading, NULL);
    s->c.leader = NULL;
    fc_replica_reg_stop(reg);
    fc_leader_stop(l);
    if (!lost) {
      FC_INFO(MOD, "%s: stopped leading and exiting", sig > 0 ? strsignal(sig) : "round budget spent");
      return 0;
    }
    FC_WARN(MOD, "stepped down (%s): back to standby", why);
  }
}

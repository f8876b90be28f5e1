/*
 * aggr_metrics.c - an aggregator's /metrics, /healthz and /readyz (`fedc
 * aggregator --metrics-listen`, issue 23's deployment: the autoscaler scales
 * the tier on the connections each aggregator holds).
 *
 * Exported (Prometheus text; counters since start):
 *   fedc_aggregator_connections_open       client connections open now (the accept guard's count)
 *   fedc_aggregator_connections_accepted_total
 *   fedc_aggregator_connections_refused_total{reason}  full | rate | address
 *   fedc_aggregator_uploads_in_flight      upload streams being received
 *   fedc_aggregator_clients_assigned       the open round's clients the leader assigned here, not counted yet
 *   fedc_aggregator_updates_pending        updates taken and folded, not yet in an accepted partial
 *   fedc_aggregator_round                  the leader's round as last heard
 *   fedc_aggregator_uploads_taken_total
 *   fedc_aggregator_uploads_refused_total{reason}   slow (the transfer rate) | other
 *   fedc_aggregator_partials_total{outcome}         accepted | lost (refused, or never delivered)
 *   fedc_aggregator_updates_counted_total  updates the leader counted from our partials
 *   fedc_aggregator_registered             1 while our etcd registration holds a lease
 *   fedc_aggregator_leader_reachable       1 if the last AggregatorRound call was answered
 *   fedc_aggregator_staging_slots
 * /readyz is 200 "ready" when registered and the leader answered last,
 * else 503 with the reason (the kubelet keeps it out of rollouts' counts).
 *
 * Owns: nothing but the listener (a->http). Reads the counters of aggr_int.h
 * (atomics) and the round state under a->mu. May call: metrics.h
 * (fc_text_http), transport/accept_guard.h. Called by: aggr_node.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/aggr_int.h"
#include "coordinator/metrics.h"
#include "fedc/error.h"
#include "transport/accept_guard.h"

static void gauge(fc_text *b, const char *name, const char *help, unsigned long long v) {
  fc_text_head(b, name, "gauge", help);
  fc_text_put(b, "%s %llu\n", name, v);
}

static void counter(fc_text *b, const char *name, const char *help) { fc_text_head(b, name, "counter", help); }

static char *metrics_text(void *ctx) {
  fc_aggr *a = ctx;
  fc_text b = {malloc(4096), 0, 4096, 0};
  if (!b.p) return NULL;
  b.p[0] = 0;
  fc_accept_guard_stats g;
  memset(&g, 0, sizeof g);
  if (a->guard_started) fc_accept_guard_get_stats(&g);
  pthread_mutex_lock(&a->mu);
  unsigned long long busy = a->nbusy, assigned = a->nassigned, pending = a->npending, round = a->round;
  pthread_mutex_unlock(&a->mu);
  gauge(&b, "fedc_aggregator_connections_open", "Client connections open now.", (unsigned long long)g.open);
  counter(&b, "fedc_aggregator_connections_accepted_total", "Client connections admitted.");
  fc_text_put(&b, "fedc_aggregator_connections_accepted_total %llu\n", (unsigned long long)g.admitted);
  counter(&b, "fedc_aggregator_connections_refused_total", "Connections closed at accept, by cause.");
  fc_text_put(&b, "fedc_aggregator_connections_refused_total{reason=\"full\"} %llu\n", (unsigned long long)g.refused_full);
  fc_text_put(&b, "fedc_aggregator_connections_refused_total{reason=\"rate\"} %llu\n", (unsigned long long)g.refused_rate);
  fc_text_put(&b, "fedc_aggregator_connections_refused_total{reason=\"address\"} %llu\n", (unsigned long long)g.refused_addr);
  gauge(&b, "fedc_aggregator_uploads_in_flight", "Upload streams being received now.", busy);
  gauge(&b, "fedc_aggregator_clients_assigned", "Clients of the open round assigned here and not counted yet.",
        assigned);
  gauge(&b, "fedc_aggregator_updates_pending", "Updates taken and folded, not yet in an accepted partial.", pending);
  gauge(&b, "fedc_aggregator_round", "The leader's round as last heard.", round);
  counter(&b, "fedc_aggregator_uploads_taken_total", "Client updates taken and folded.");
  fc_text_put(&b, "fedc_aggregator_uploads_taken_total %llu\n", (unsigned long long)atomic_load(&a->m_taken));
  counter(&b, "fedc_aggregator_uploads_refused_total", "Client uploads refused, by cause.");
  fc_text_put(&b, "fedc_aggregator_uploads_refused_total{reason=\"slow\"} %llu\n",
      (unsigned long long)atomic_load(&a->m_refused_slow));
  fc_text_put(&b, "fedc_aggregator_uploads_refused_total{reason=\"other\"} %llu\n",
      (unsigned long long)atomic_load(&a->m_refused_other));
  counter(&b, "fedc_aggregator_partials_total", "Partial sums handed to the leader, by outcome.");
  fc_text_put(&b, "fedc_aggregator_partials_total{outcome=\"accepted\"} %llu\n",
      (unsigned long long)atomic_load(&a->m_partials_ok));
  fc_text_put(&b, "fedc_aggregator_partials_total{outcome=\"lost\"} %llu\n",
      (unsigned long long)atomic_load(&a->m_partials_lost));
  counter(&b, "fedc_aggregator_updates_counted_total", "Updates the leader counted from our partials.");
  fc_text_put(&b, "fedc_aggregator_updates_counted_total %llu\n", (unsigned long long)atomic_load(&a->m_counted));
  gauge(&b, "fedc_aggregator_registered", "1 while our etcd registration holds a lease.",
        (unsigned long long)atomic_load(&a->m_registered));
  gauge(&b, "fedc_aggregator_leader_reachable", "1 if the leader answered our last AggregatorRound.",
        (unsigned long long)atomic_load(&a->m_leader_ok));
  gauge(&b, "fedc_aggregator_staging_slots", "Uploads staged at once (memory = slots x model).",
        (unsigned long long)a->cfg.upload_slots);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

static const char *ready_text(void *ctx, int *ok) {
  fc_aggr *a = ctx;
  *ok = 0;
  if (!atomic_load(&a->m_registered)) return "not ready: not registered in etcd\n";
  if (!atomic_load(&a->m_leader_ok)) return "not ready: the leader did not answer\n";
  *ok = 1;
  return "ready\n";
}

int aggr_metrics_start(fc_aggr *a, char *err, size_t errlen) {
  if (!a->cfg.metrics_listen[0]) return FEDC_OK;
  fc_text_http_cfg tc = {a->cfg.metrics_listen, a->cfg.metrics_public, 8, 5000, metrics_text, ready_text, a,
                         "aggregator", 0};
  return fc_text_http_start(&tc, &a->http, err, errlen);
}

int fc_aggr_metrics_port(const fc_aggr *a) { return fc_text_http_port(a->http); }

void aggr_metrics_stop(fc_aggr *a) {
  fc_text_http_stop(a->http);
  a->http = NULL;
}

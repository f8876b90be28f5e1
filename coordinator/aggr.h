/*
 * aggr.h - one aggregator of the aggregator tier (issue 23; `fedc aggregator`,
 * cli/cmd_aggregator.c) as a library: start, port, stop.
 *
 * An aggregator listens for clients' mutual TLS (Coordinator/UploadUpdate
 * only), registers in etcd under a lease of its own (P/aggregators/<name> =
 * "<advertised host:port> spiffe://<fed>/aggregator/<name>", agg_tier.h),
 * learns the open round from the leader (Aggregator/AggregatorRound: model
 * version and shape, clip, submit-by time, the clients assigned to it),
 * takes those clients' updates with the coordinator's checks (shape and
 * SHA-256 in common/chunk.h, NaN/Inf, clip and weight in upload_check.h,
 * one update per client per round, nothing after the submit-by time), folds
 * them into a FedAvg partial sum (aggregate.h), and hands the leader the sum,
 * its weight and per update the client, weight, loss and SHA-256
 * (Aggregator/SubmitPartial) once every assigned client's update is in, or
 * at the submit-by time. Several partials per round are fine: clients are
 * assigned as they check in. Under secure aggregation (1.16) it takes the
 * masked inputs of the leader's masked stage instead and hands over their
 * sums mod 2^32, one partial per SecAgg instance.
 */
#ifndef FEDC_COORD_AGGR_H
#define FEDC_COORD_AGGR_H

#include <stdint.h>

typedef struct fc_aggr_cfg {
  char listen[128];       /* host:port clients connect to ("127.0.0.1:0": a free port) */
  char advertise[256];    /* what the registry says (default: listen's host with the bound port) */
  char coordinator[1024]; /* the coordinator replicas, host:port[,host:port...] */
  char ca[512], cert[512], key[512]; /* our certificate: role aggregator */
  char etcd[1024];        /* etcd endpoints */
  char etcd_prefix[256];  /* default /fedc/<federation> */
  char etcd_ca[512], etcd_cert[512], etcd_key[512];
  int etcd_lease_ttl;     /* seconds (default 5) */
  int upload_slots;       /* staging slots (memory = slots x model; default 4) */
  int threads;            /* pool threads for blocking calls (default 2; uploads are event-driven) */
  int stream_idle_ms;     /* default 30000 */
  char metrics_listen[128]; /* host:port of /metrics, /healthz, /readyz ("" = none) */
  int metrics_public;        /* metrics_listen may be off loopback */
  int max_connections;       /* client connections at once (0 = fd limit - headroom) */
  int connections_per_address; /* ... from one address (default 256) */
  uint64_t min_transfer_bps; /* an upload slower than this after stream_idle_ms is cut off (default 64 KiB/s; 0 = none) */
  uint32_t byzantine_add; /* research (tests): add this to every model word of our masked partial sums (0 = honest) */
} fc_aggr_cfg;

typedef struct fc_aggr fc_aggr;

void fc_aggr_cfg_defaults(fc_aggr_cfg *c);
/* Binds, registers in etcd, starts polling the leader. One line in err. */
int fc_aggr_start(const fc_aggr_cfg *cfg, fc_aggr **out, char *err, size_t errlen);
int fc_aggr_port(const fc_aggr *a);
int fc_aggr_metrics_port(const fc_aggr *a); /* 0 without --metrics-listen */
/* Revokes the lease (the leader drops us at its next registry read), stops
 * serving; a partial not yet submitted is lost (logged). Accepts NULL. */
void fc_aggr_stop(fc_aggr *a);

#endif

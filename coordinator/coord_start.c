/*
 * coord_start.c - what the coordinator checks before its state directory is
 * created or changed. fc_coord_start (coordinator.c) calls these first.
 *
 * Invariant: a start that fails on an input leaves the state directory as
 * it was (absent stays absent). A typo in --pki used to leave a directory
 * with an unsigned v0 that the corrected command then refused, a wrong
 * --federation an empty models/, a port in use a whole new state (issue 21).
 * So every input that can refuse a start is looked at here, in the order an
 * operator would fix them:
 *   1. the TLS files and the listen address: the gRPC server is created and
 *      its address bound (a port in use fails here), but not run; no call can
 *      reach a handler before fc_server_run, which fc_coord_start calls once
 *      the engine exists;
 *   2. the federation of the coordinator's own certificate (a wrong
 *      --federation would otherwise start a server that refuses everyone);
 *   3. the model-signing key (model_sign.c: chain, role, federation);
 *   4. the metrics address, bound the same way;
 *   5. the memory the aggregator needs for the model (coord_start_memory,
 *      once the model's shape is known).
 * Nothing here writes a file. What fc_coord_start reads of an existing state
 * (state.json, the model, its manifest, dp.json) is read before it writes,
 * too; only the explicit --adopt-state signing of the current version may
 * add its manifest before a later check fails.
 *
 * May call: transport (server bind), crypto/pki.c, model_sign.c, metrics.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "coordinator/agg_slots.h"
#include "coordinator/coord_int.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/accept_guard.h"

/* The federation in our own certificate must be the one we serve: callers'
 * certificates are checked against cfg.federation, so a mismatch would start
 * a coordinator that refuses every client. */
static int own_federation(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  char *pem = NULL, fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  size_t len = 0;
  int rc = fc_read_file(cfg->cert, 1u << 20, &pem, &len);
  if (rc == FEDC_OK)
    rc = fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, name, sizeof name);
  free(pem);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "certificate %s carries no spiffe://<federation>/<role>/<name> identity: issue it with "
                          "`fedc pki init`", cfg->cert);
    return rc;
  }
  if (strcmp(fed, cfg->federation) != 0) {
    snprintf(err, errlen, "certificate %s is for federation '%s', this coordinator serves '%s' (--federation)",
             cfg->cert, fed, cfg->federation);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

int coord_start_listen(fc_coord *c, char *err, size_t errlen) {
  const fc_coord_cfg *cfg = &c->cfg;
  fc_server_opts so;
  fc_server_opts_init(&so);
  so.addr = cfg->listen;
  so.tls.ca = cfg->ca;
  so.tls.cert = cfg->cert;
  so.tls.key = cfg->key;
  so.insecure_for_testing = cfg->insecure_for_testing;
  so.federation = cfg->federation;
  so.threads = cfg->threads > 0 ? cfg->threads : 2;
  so.stream_idle_ms = cfg->stream_idle_ms;
  so.keepalive_ms = cfg->keepalive_ms;
  /* gRPC's memory quota: under pressure its reclaimers walk every connection
   * on each allocation. At 256 MiB with 15,000 connections that made a
   * CheckIn cost 3.7 ms of CPU instead of 0.6 (bench_clients): size it for
   * the connections we admit (~100 KiB each measured) plus 256 MiB for
   * streams. */
  so.memory_quota_mib = cfg->grpc_memory_mib > 0
                            ? cfg->grpc_memory_mib
                            : 256 + (int)((int64_t)fc_accept_guard_cap(cfg->fd_headroom, cfg->max_connections) * 128 / 1024);
  so.max_calls_per_peer = cfg->max_calls_per_client;
  so.methods = c->methods;
  so.nmethods = sizeof c->methods / sizeof c->methods[0];
  int rc = fc_server_bind(&so, &c->server, err, errlen);
  if (rc == FEDC_OK && !cfg->insecure_for_testing) rc = own_federation(cfg, err, errlen);
  if (rc == FEDC_OK) rc = coord_sign_init(c, err, errlen);
  if (rc == FEDC_OK && cfg->metrics_listen[0]) rc = coord_http_bind(c, cfg->metrics_listen, err, errlen);
  return rc;
}

void coord_agg_shape(const fc_coord_cfg *cfg, const fc_model_spec *spec, coord_agg_dims *d) {
  fc_robust_cfg rcfg;
  coord_robust_cfg(cfg, &rcfg);
  d->robust = rcfg.kind > FC_AGG_FEDAVG;
  /* Masked vectors: the model, the weight, and adaptive clipping's bit under DP. */
  d->entries = fc_model_numel(spec) + 1 + (cfg->dp_noise_multiplier > 0 && cfg->dp_adaptive_quantile > 0);
  /* Staging slots: --upload-slots, or as many as --upload-memory-mib holds. */
  d->slot_bytes = (uint64_t)(cfg->engine.secagg ? d->entries : fc_model_numel(spec)) * 4;
  if (cfg->reproducible_sum && cfg->agg_tier) d->slot_bytes *= 2; /* a leader's slots take int64 partials */
  d->slots = cfg->upload_slots > 0 ? cfg->upload_slots
                                   : fc_agg_slots_for_budget(cfg->upload_memory_mib << 20, d->slot_bytes);
  /* The engine selects max(cohort, min_updates) clients: a row for each,
   * or under secure aggregation one per bucket. */
  d->rows = cfg->engine.cohort_size > cfg->engine.min_updates ? cfg->engine.cohort_size : cfg->engine.min_updates;
  if (cfg->engine.async) d->rows = fc_async_buffer_rows(&cfg->engine); /* a buffer is what the rule combines */
  d->buckets = cfg->engine.secagg && d->robust ? d->rows / cfg->secagg_bucket : 1;
  if (d->robust && cfg->engine.secagg) d->rows = d->buckets;
}

int coord_start_memory(const fc_coord_cfg *cfg, const fc_model_spec *spec, char *err, size_t errlen) {
  coord_agg_dims d;
  coord_agg_shape(cfg, spec, &d);
  if (!d.robust) return FEDC_OK;
  uint64_t need = fc_robust_arena_bytes(fc_model_numel(spec), d.rows, cfg->engine.secagg ? 1 : d.slots);
  if (cfg->engine.secagg) need += ((uint64_t)d.buckets + (uint64_t)d.slots) * d.entries * sizeof(uint32_t);
  if (need <= cfg->agg_memory_mib * 1048576ull) return FEDC_OK;
  snprintf(err, errlen,
           "aggregator %s keeps the whole %s: %u x %llu parameters (+ staging) = %llu MiB, over agg_memory_mib %llu",
           cfg->aggregator, cfg->engine.secagg ? "set of bucket sums" : "cohort", d.rows,
           (unsigned long long)fc_model_numel(spec), (unsigned long long)(need >> 20),
           (unsigned long long)cfg->agg_memory_mib);
  return FEDC_ERR_INVALID;
}

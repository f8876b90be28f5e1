/*
 * coord_cfg.c - the coordinator's configuration: its defaults and the checks
 * fc_coord_start runs before anything else (what the library refuses
 * whatever its caller checked), and the server optimizer's and robust
 * rule's settings derived from it; and the slow-transfer rule downloads and
 * uploads share (coord_too_slow).
 *
 * Owns: nothing at run time (functions of fc_coord_cfg and the clock).
 * May call: server_opt.h, aggregate.h (robust checks), dp_clip.h, pki.h
 * (federation names); nothing of the coordinator's (secure aggregation's and
 * evaluation's own checks are called by fc_coord_start after these).
 */
#include "coordinator/coordinator.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/drift.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/refusals.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/watermark.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"

void fc_coord_cfg_defaults(fc_coord_cfg *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->federation, sizeof c->federation, "demo");
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:7070");
  snprintf(c->state_dir, sizeof c->state_dir, "fedc-state");
  fc_engine_cfg_defaults(&c->engine);
  c->learning_rate = 0.05f;
  c->local_epochs = 1;
  c->batch_size = 32;
  c->momentum = 0;
  /* One client's influence on a round is bounded by default (see
   * docs/design.md, "Bounding one client"): its update's L2 norm by clip_norm
   * (honest updates of the built-in MLP measure 0.3-2.6) and its FedAvg
   * weight by max_example_weight examples. clip_norm 0 turns clipping off. */
  c->clip_norm = 10.0f;
  c->max_example_weight = 10000;
  c->upload_bits = 32;
  c->upload_block = 1024;
  c->server_lr = 1.0f;
  snprintf(c->server_optimizer, sizeof c->server_optimizer, "sgd");
  c->server_beta1 = 0.9f;
  c->server_beta2 = 0.99f;
  c->server_tau = 1e-3f;
  c->async_cache_mib = 1024;
  c->dp_delta = 1e-5;
  c->dp_clip_lr = 0.2; /* Andrew et al. 2021's eta_C */
  snprintf(c->aggregator, sizeof c->aggregator, "fedavg");
  c->agg_trim = 0.1;
  c->agg_tau = 1.0;
  c->agg_iters = 1;
  c->agg_memory_mib = 4096;
  c->secagg_bucket = 5;
  c->secagg_corrupt = FC_SA_DEFAULT_CORRUPT;
  c->secagg_dropout = FC_SA_DEFAULT_DROPOUT;
  c->audit_log = 1;
  /* A scraper and a probe or two: 8 per address; a request arrives in one
   * packet and its answer is ~10 KiB, so 5 s is far more than any needs. */
  c->metrics_conns_per_address = 8;
  c->metrics_request_ms = 5000;
  c->secagg_poll_rate = 20; /* clients poll SecAgg stages every 100 ms as told */
  c->call_rate = 2;
  c->admin_rate = 20;
  c->audit_max_mib = 1024;
  c->audit_refusal_interval_ms = 60000;
  c->chunk_bytes = FC_CHUNK_DEFAULT;
  c->threads = 2; /* event threads: calls are not tied to threads (transport.h) */
  /* Staging slots come from a memory budget (fc_agg_slots_for_budget): 132
   * for a 1.01M-parameter model, so 100 uploads arriving at once are all
   * staged; 1 for a model of 512 MiB or more. A fixed 4 refused 96 of 100
   * simultaneous uploads (bench/bench_round.sh). */
  c->upload_slots = 0;
  c->upload_memory_mib = 512;
  /* A download pins one chunk message (1 MiB) and its snapshot reference. */
  c->download_slots = 32;
  c->stream_idle_ms = 30000;
  c->checkin_hold_ms = 0; /* opt-in: docs/operations.md "Held check-ins" says what it does not cover yet */
  /* A device reconnects a few times a minute at most; a NAT in front of many
   * may burst. Each connection costs the coordinator a TLS handshake. */
  c->connect_rate = 100;
  c->connect_burst = 1000;
  /* A TLS handshake costs 2-3.5 ms of a core: 500/s is most of one, and a
   * mass reconnect of 15,000 devices (with jittered backoff) takes 30 s. */
  c->connect_rate_total = 500;
  c->min_transfer_bps = 64 * 1024;
  /* Connections without calls are not timed out (no per-connection timer:
   * docs/design.md), so one address, e.g. one certificate holder, may hold
   * at most this many; raise it for many devices behind one NAT. */
  c->connections_per_address = 256;
  c->eval_value_max = 100; /* cross-entropy of a sane classifier stays far below */
  c->watermark_steps = 50; /* docs/results.md, "Watermarking the global model" */
  c->watermark_lr = 0.05f;
  snprintf(c->anomaly_policy, sizeof c->anomaly_policy, "observe");
  c->anomaly_threshold = FC_ANOM_DEFAULT_THRESHOLD;
  c->anomaly_cooldown_s = FC_ANOM_DEFAULT_COOLDOWN_S;
  c->drift_threshold = FC_DRIFT_DEFAULT_THRESHOLD;
  snprintf(c->drift_policy, sizeof c->drift_policy, "flag");
}

/* The server optimizer's settings from the coordinator's. */
int coord_sopt_cfg(const fc_coord_cfg *cfg, fc_sopt_cfg *o, char *err, size_t errlen) {
  int kind = fc_sopt_parse(cfg->server_optimizer);
  if (kind < 0) {
    snprintf(err, errlen, "server_optimizer '%.15s': use sgd, avgm, adagrad, adam or yogi", cfg->server_optimizer);
    return FEDC_ERR_INVALID;
  }
  fc_sopt_cfg_defaults(o, kind);
  o->lr = cfg->server_lr;
  o->beta1 = cfg->server_beta1;
  o->beta2 = cfg->server_beta2;
  o->tau = cfg->server_tau;
  o->nesterov = cfg->server_nesterov;
  o->average = cfg->model_average;
  return fc_sopt_cfg_check(o, err, errlen);
}

void coord_robust_cfg(const fc_coord_cfg *cfg, fc_robust_cfg *r) {
  memset(r, 0, sizeof *r);
  r->kind = fc_robust_parse(cfg->aggregator);
  r->f = cfg->agg_f;
  r->trim = cfg->agg_trim;
  r->m = cfg->agg_m;
  r->tau = cfg->agg_tau;
  r->iters = cfg->agg_iters;
  r->threads = cfg->threads > 0 ? cfg->threads : 2;
}

/* A robust aggregator: its precondition for the configured cohort, what it
 * cannot be combined with yet, and its arena against the memory limit. */
static int robust_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  fc_robust_cfg r;
  coord_robust_cfg(cfg, &r);
  if (r.kind < 0) {
    snprintf(err, errlen, "unknown aggregator '%s' (fedavg, median, trimmed_mean, krum, multikrum, bulyan, "
                          "centered_clip)", cfg->aggregator);
    return FEDC_ERR_INVALID;
  }
  if (r.kind == FC_AGG_FEDAVG) return FEDC_OK;
  char why[200];
  if (cfg->engine.async) { /* the rule combines one buffer of async_buffer updates (coord_async.c) */
    if (fc_robust_check(&r, cfg->engine.async_buffer, why, sizeof why)) {
      snprintf(err, errlen, "aggregator %s over an async buffer of %u updates could never aggregate: %s",
               cfg->aggregator, cfg->engine.async_buffer, why);
      return FEDC_ERR_INVALID;
    }
    if (cfg->engine.staleness.fedbuff) {
      snprintf(err, errlen, "staleness ,fedbuff rescales a weighted mean; aggregator %s ignores the staleness "
               "weights (drop the suffix, or use fedavg)", cfg->aggregator);
      return FEDC_ERR_INVALID;
    }
    return FEDC_OK;
  }
  const char *no = cfg->dp_noise_multiplier > 0 ? "differential privacy"
                   : cfg->engine.cohort_size == 0 ? "a cohort fraction (it needs a fixed cohort: its arena holds "
                                                    "cohort x model)"
                                                  : NULL;
  if (no) {
    snprintf(err, errlen, "aggregator %s cannot be combined with %s", cfg->aggregator, no);
    return FEDC_ERR_INVALID;
  }
  if (cfg->engine.secagg) {
    /* Bucketing: the rule sees one mean per bucket of at least s clients. */
    uint32_t s = cfg->secagg_bucket, nb = cfg->engine.cohort_size / (s ? s : 1);
    if (s < 3 || s > cfg->engine.cohort_size) {
      snprintf(err, errlen, "secagg_bucket %u: secure aggregation with %s runs one instance per bucket of at least "
                            "3 clients, no more than the cohort (%u)", s, cfg->aggregator, cfg->engine.cohort_size);
      return FEDC_ERR_INVALID;
    }
    if (fc_robust_check(&r, nb, why, sizeof why)) {
      snprintf(err, errlen, "a full cohort of %u makes %u secure-aggregation buckets of at least %u, which could "
                            "never be aggregated: %s", cfg->engine.cohort_size, nb, s, why);
      return FEDC_ERR_INVALID;
    }
    if (fc_robust_check(&r, nb - 1, why, sizeof why))
      FC_WARN(MOD, "%u buckets leave no slack: one dropped bucket (a single member can cause that) abandons the "
                   "round: %s", nb, why);
    return FEDC_OK;
  }
  if (fc_robust_check(&r, cfg->engine.cohort_size, why, sizeof why)) {
    snprintf(err, errlen, "a full cohort of %u could never be aggregated: %s", cfg->engine.cohort_size, why);
    return FEDC_ERR_INVALID;
  }
  if (fc_robust_check(&r, cfg->engine.min_updates, why, sizeof why))
    FC_WARN(MOD, "rounds closing with min_updates = %u would be abandoned: %s", cfg->engine.min_updates, why);
  return FEDC_OK;
}

/* --reproducible-sum (aggregate_fedavg.c): integer sums on a grid from the
 * clip and the weight cap; what it cannot hold is refused in one sentence. */
static int reproducible_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  if (!cfg->reproducible_sum) return FEDC_OK;
  const char *no = NULL;
  uint32_t most = cfg->engine.async ? fc_async_buffer_rows(&cfg->engine)
                  : cfg->engine.cohort_size > cfg->engine.min_updates ? cfg->engine.cohort_size
                                                                      : cfg->engine.min_updates;
  if (strcmp(cfg->aggregator, "fedavg") != 0)
    no = "a robust aggregation rule (it applies to the FedAvg sum; robust rules do not sum in arrival order)";
  else if (cfg->engine.secagg)
    no = "secure aggregation (its sums are integers already; what varies is the clients' random rounding)";
  else if (!(cfg->clip_norm > 0))
    no = "clip_norm 0 (the fixed-point grid is sized from the clip norm and max_example_weight)";
  else if (cfg->max_example_weight > (1ull << 30))
    no = "max_example_weight over 2^30 (the total weight is summed on a grid too)";
  else if (fc_fixed_frac_bits(cfg->clip_norm, cfg->max_example_weight) < 0)
    no = "this clip_norm x max_example_weight (over 2^29: the grid would be coarser than 2^-16)";
  else if (cfg->dp_noise_multiplier > 0)
    no = "differential privacy (its noise is random, and Poisson sampling has no cohort bound)";
  else if (cfg->upload_bits != 32)
    no = "compressed uploads (their decoding may pass the clip norm the grid is sized from)";
  else if (!cfg->engine.async && cfg->engine.cohort_size == 0)
    no = "cohort 0 (a fraction of the clients: one round's sum must hold at most 65,536 updates)";
  else if (most > FC_FIXED_MAX_TERMS)
    no = "more than 65,536 updates in one round or buffer (the overflow bound of the 64-bit sums)";
  if (!no) return FEDC_OK;
  snprintf(err, errlen, "--reproducible-sum cannot be combined with %s", no);
  return FEDC_ERR_INVALID;
}

/* What the library refuses whatever its caller checked: each of these would
 * silently change meaning (no federation check, zero weights, no clipping). */
int coord_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  if (!fc_pki_federation_ok(cfg->federation)) {
    snprintf(err, errlen, "invalid federation name '%s' (1-63 of a-z, 0-9, '.', '-')", cfg->federation);
    return FEDC_ERR_INVALID;
  }
  if (cfg->engine.min_updates < 1 || cfg->max_example_weight < 1) {
    snprintf(err, errlen, "min_updates and max_example_weight must be at least 1");
    return FEDC_ERR_INVALID;
  }
  if (!(cfg->clip_norm >= 0 && isfinite(cfg->clip_norm)) || !(cfg->server_lr > 0 && isfinite(cfg->server_lr))) {
    snprintf(err, errlen, "clip_norm must be finite and >= 0, server_lr finite and > 0");
    return FEDC_ERR_INVALID;
  }
  fc_sopt_cfg so;
  if (coord_sopt_cfg(cfg, &so, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (coord_async_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (robust_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (reproducible_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (cfg->dp_noise_multiplier != 0) {
    /* Refuse what would make the reported guarantee void. */
    const char *bad = NULL;
    if (!(cfg->dp_noise_multiplier > 0 && isfinite(cfg->dp_noise_multiplier)))
      bad = "dp_noise_multiplier must be finite and > 0 (0 = off)";
    else if (!(cfg->clip_norm > 0))
      bad = "differential privacy needs clip_norm > 0: it is the sensitivity the noise is scaled to";
    else if (cfg->engine.cohort_size != 0 || !(cfg->engine.cohort_fraction > 0 && cfg->engine.cohort_fraction <= 1))
      bad = "differential privacy needs Poisson subsampling, as the accountant assumes: set cohort 0 and "
            "cohort_fraction to the sampling rate q in (0, 1]";
    else if (cfg->engine.secagg && cfg->engine.min_updates < 2)
      bad = "differential privacy with secure aggregation: min_updates is the fewest survivors whose noise shares "
            "add up to the noise multiplier; it must be at least 2";
    else if (!(cfg->dp_delta > 0 && cfg->dp_delta < 1))
      bad = "dp_delta must be in (0, 1)";
    else if (!(cfg->dp_target_epsilon >= 0 && isfinite(cfg->dp_target_epsilon)))
      bad = "dp_target_epsilon must be finite and >= 0 (0 = no target)";
    else if (!(cfg->dp_adaptive_quantile >= 0 && cfg->dp_adaptive_quantile < 1))
      bad = "dp_adaptive_quantile must be in (0, 1) (0 = a fixed clip)";
    else if (!(cfg->dp_clip_lr > 0 && cfg->dp_clip_lr <= 10))
      bad = "dp_clip_lr must be in (0, 10]";
    else if (!(cfg->dp_count_noise >= 0 && isfinite(cfg->dp_count_noise)))
      bad = "dp_count_noise must be finite and >= 0 (0 = the expected cohort / 20)";
    else if (cfg->dp_count_noise > 0 && !(2 * cfg->dp_count_noise > cfg->dp_noise_multiplier * 1.0001))
      bad = "dp_count_noise sigma_b must exceed dp_noise_multiplier / 2: the update's share of the noise, "
            "(z^-2 - (2 sigma_b)^-2)^-1/2, exists only then (Andrew et al. 2021, Theorem 1)";
    if (bad) {
      snprintf(err, errlen, "%s", bad);
      return FEDC_ERR_INVALID;
    }
    double lo, hi;
    if (cfg->dp_adaptive_quantile > 0 &&
        fc_dp_clip_range(cfg->clip_norm, cfg->dp_clip_min, cfg->dp_clip_max, &lo, &hi, err, errlen) != FEDC_OK)
      return FEDC_ERR_INVALID;
  }
  if ((cfg->dp_clip_min != 0 || cfg->dp_clip_max != 0) && !(cfg->dp_adaptive_quantile > 0)) {
    snprintf(err, errlen, "dp_clip_min and dp_clip_max bound adaptive clipping: they need dp_adaptive_quantile > 0");
    return FEDC_ERR_INVALID;
  }
  if (cfg->dp_adaptive_quantile != 0 && !(cfg->dp_noise_multiplier > 0)) {
    snprintf(err, errlen, "dp_adaptive_quantile is adaptive clipping under differential privacy: it needs "
                          "dp_noise_multiplier > 0");
    return FEDC_ERR_INVALID;
  }
  if (coord_codec_config_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (cfg->engine.secagg && !(cfg->clip_norm > 0)) {
    snprintf(err, errlen, "secure aggregation needs clip_norm > 0: the quantization range comes from it");
    return FEDC_ERR_INVALID;
  }
  if (cfg->engine.secagg && (double)cfg->max_example_weight * FC_SA_MAX_COHORT >= 2147483648.0) {
    snprintf(err, errlen, "secure aggregation needs max_example_weight below %llu (cohorts of up to %d)",
             (unsigned long long)(2147483648.0 / FC_SA_MAX_COHORT), FC_SA_MAX_COHORT);
    return FEDC_ERR_INVALID;
  }
  if (cfg->engine.sa_keys_first && !cfg->engine.secagg) {
    snprintf(err, errlen, "secagg_keys_first orders the stages of secure aggregation: it needs secagg");
    return FEDC_ERR_INVALID;
  }
  if (cfg->engine.secagg && cfg->secagg_t == 1) {
    snprintf(err, errlen, "secagg threshold t must be at least 2 (0 = automatic)");
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* A transfer that holds a staging slot or a snapshot must keep moving: after
 * a grace of stream_idle_ms, min_transfer_bps by fc_rate_guard's two rules,
 * else it is cut off (a peer sending one 1 KiB chunk every 29 s held a
 * staging slot for the whole round). */
int coord_too_slow(const fc_coord *c, fc_rate_guard *g, uint64_t bytes) {
  return fc_rate_guard_too_slow(g, fc_now_ms(), bytes, c->cfg.min_transfer_bps, (uint64_t)c->cfg.stream_idle_ms);
}

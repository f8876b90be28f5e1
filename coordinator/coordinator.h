/*
 * coordinator.h - the coordinator as a library: configuration, start, stop.
 * `fedc coordinator` (cli/cmd_coordinator.c) parses flags and a config file
 * into fc_coord_cfg and calls these; tests embed it the same way.
 */
#ifndef FEDC_COORD_COORDINATOR_H
#define FEDC_COORD_COORDINATOR_H

#include <stdint.h>

#include "common/tensor.h"
#include "coordinator/engine.h"

typedef struct fc_coord_cfg {
  char federation[64];
  char listen[128];
  char ca[512], cert[512], key[512];
  /* Model-signing certificate and key (role signer): every model version's
   * manifest is signed before it is published (common/manifest.h). Empty:
   * versions go out unsigned and clients refuse them by default. */
  char signing_cert[512], signing_key[512];
  /* At-rest encryption of model versions in state_dir (AES-256-GCM): a
   * 32-byte key, from a file outside the state directory. */
  int model_key_set;
  uint8_t model_key[32];
  /* Take the state directory as it is, once: sign its current version if it
   * has no manifest (a state from before signing) and read plaintext model
   * files although model_key is set. Never needed otherwise: without it
   * such a state is refused, since it is also what tampering looks like. */
  int adopt_state;
  int insecure_for_testing;
  char state_dir[512];
  /* Model versions kept in state_dir (store_prune.h): the last keep_versions
   * whole and every keep_every-th older one as model + manifest; 0 = all. */
  uint64_t keep_versions, keep_every;
  fc_engine_cfg engine;
  /* task hyper-parameters announced to clients */
  float learning_rate;
  uint32_t local_epochs;
  uint32_t batch_size;
  float momentum;
  float prox_mu;              /* FedProx mu (Li et al. 2020) sent in every task; 0 = FedAvg */
  float clip_norm;            /* 0 = no clipping */
  uint64_t max_example_weight; /* FedAvg weight cap per client */
  float server_lr;            /* the server optimizer's learning rate (sgd: new = old + server_lr * mean delta) */
  /* Server optimizer (server_opt.h): sgd (default), avgm, adagrad, adam, yogi;
   * beta1 (momentum), beta2, tau as in Reddi et al. 2021, nesterov for avgm. */
  char server_optimizer[16];
  float server_beta1, server_beta2, server_tau;
  int server_nesterov;
  /* Model average (server_opt.h): beta of the moving average of versions
   * kept beside them for evaluation and export (GetModel averaged); 0 = none. */
  float model_average;
  /* Async mode: cached update calibration (calib.h, CA2FL): each buffer's
   * step is the mean of the latest cached update of every client heard from
   * plus the buffer's differences from its clients' cached ones; the cache
   * holds at most async_cache_mib MiB of updates (least recently updated
   * clients evicted past that). */
  int async_calibrate;
  uint64_t async_cache_mib;
  /* Differential privacy (DP-FedAvg, McMahan et al. 2018): noise multiplier z
   * (0 = off); the clip is clip_norm; uniform weights; Poisson subsampling at
   * rate engine.cohort_fraction (engine.cohort_size 0); epsilon at dp_delta;
   * stop before a round that would spend more than dp_target_epsilon (0 = no target). */
  double dp_noise_multiplier, dp_delta, dp_target_epsilon;
  /* Adaptive clipping (Andrew et al. 2021, Algorithm 1 with the geometric
   * update): the clip starts at clip_norm and follows the dp_adaptive_quantile
   * (gamma; 0 = a fixed clip) of the update norms, C <- C exp(-dp_clip_lr (b - gamma)),
   * b the noisy fraction of unclipped updates; the count's noise std
   * dp_count_noise (sigma_b; 0 = the expected cohort / 20, at least z).
   * The clip stays in [dp_clip_min, dp_clip_max] (0 = clip_norm / 10 and
   * clip_norm x 10; coordinator/dp_clip.h), which must hold clip_norm. */
  double dp_adaptive_quantile, dp_clip_lr, dp_count_noise;
  double dp_clip_min, dp_clip_max;
  /* Aggregation rule (aggregate.h): fedavg (default), median, trimmed_mean,
   * krum, multikrum, bulyan, centered_clip; f Byzantine updates tolerated,
   * trim fraction beta, multikrum's m (0 = n - f), centered clipping's tau
   * and iterations. The robust rules keep every update of a round: a fixed
   * cohort of `cohort` clients x the model, at most agg_memory_mib. */
  char aggregator[16];
  uint32_t agg_f, agg_m, agg_iters;
  double agg_trim, agg_tau;
  uint64_t agg_memory_mib;
  uint32_t chunk_bytes;
  int threads;
  int upload_slots;           /* concurrent uploads staged (memory = slots x model); 0 = from upload_memory_mib */
  uint64_t upload_memory_mib; /* staging budget when upload_slots is 0: slots = budget / model, 1..1024 */
  int download_slots;         /* concurrent model downloads (each pins send buffers) */
  int max_calls_per_client;   /* concurrent calls one identity may hold (0 = transport default 4) */
  int stream_idle_ms;
  uint32_t checkin_hold_ms; /* coord_ci_park.c: a waiting check-in is held up to this (0 = not) */
  int fd_headroom;            /* fds kept free (0 = max(64, limit/8)) */
  int max_connections;        /* 0 = fd limit - headroom */
  int keepalive_ms;           /* ping connections without traffic this often (0 = transport default) */
  int grpc_memory_mib;        /* gRPC's buffer memory quota (0 = transport default) */
  int connect_rate;           /* new connections per second per source address (0 = no limit) */
  int connect_burst;          /* ... at once (0 = 10 x rate) */
  int connect_rate_total;     /* new connections per second from all addresses (0 = no limit) */
  int connections_per_address; /* open at once per source address (0 = no limit) */
  uint64_t min_transfer_bps;  /* uploads/downloads slower than this (after stream_idle_ms) are cut off; 0 = none */
  /* Secure aggregation (engine.secagg = 1; engine.sa_stage_ms per stage):
   * neighbours k per client and the Shamir threshold t. Both 0: k and t from
   * Bell et al.'s bounds for each instance (secagg/params.h,
   * fc_sa_params_default) with secagg_corrupt and secagg_dropout. secagg_k 0
   * with secagg_t set, or k >= the instance - 1: the complete graph; secagg_t
   * 0 otherwise is the floor floor((k+1)/2) + 1. With a robust aggregator:
   * one SecAgg instance per random bucket of at least secagg_bucket clients,
   * the rule over the buckets' means (its f counts buckets); buckets with
   * secagg_k 0 use the complete graph. coord_secagg.c has the rule. */
  uint32_t secagg_k, secagg_t, secagg_bucket;
  /* Research (experiments that compare runs bit for bit): draw the buckets
   * from this seed and the round id instead of the CSPRNG (0). Whoever knows
   * it can predict bucket-mates: keep it secret, or leave it 0. */
  uint64_t secagg_bucket_seed;
  double secagg_corrupt, secagg_dropout; /* fractions the default graph is sized for */
  int unmask_threads;         /* mask expansion threads (0 = 2) */
  int audit_log;              /* hash-chained STATE/audit.log (coordinator/audit.h); on by default */
  char metrics_listen[256];   /* host:port of /metrics, /healthz, /readyz (coordinator/metrics.h); "" = off */
  int metrics_public;         /* allow metrics_listen off loopback (":port" = every address) */
  int metrics_conns_per_address; /* metrics connections one address may hold (the newest closes its oldest) */
  int metrics_request_ms;     /* a metrics connection's whole life, however it trickles */
  /* Per-identity call limits (coord_limits.c) for the methods the engine
   * does not limit: per second; bursts of a few seconds' worth. */
  double secagg_poll_rate;    /* SecAggPoll */
  double call_rate;           /* FetchModel, SecAggSubmit */
  double admin_rate;          /* Status, Rounds, RoundControl, GetModel */
  /* The audit log's disk budget (coord_limits.c): past it, or with less
   * than state_min_free_mib free (0 = 4 x the model + 64 MiB), refusals are
   * only counted, one record per audit_refusal_interval_ms for everyone. */
  uint64_t audit_max_mib, state_min_free_mib, audit_refusal_interval_ms;
  /* Federated evaluation (coord_eval.c; engine.eval_* say when and by whom):
   * the bound on a per-example loss or metric value, the examples one
   * client's results count at most (0 = max_example_weight), the named
   * metrics collected (comma-separated, at most 4), and under differential
   * privacy the noise multiplier of the published totals (required then). */
  double eval_value_max;
  uint64_t eval_max_examples;
  char eval_metrics[160];
  double eval_dp_noise;
  /* Watermark (coordinator/watermark.h; WAFFLE, Tekgul et al. 2021): a key
   * file ("" = none). Every new version is fine-tuned on the key's trigger
   * set before it is signed: full-batch SGD steps of watermark_lr until each
   * trigger is learnt, at most watermark_steps per round. */
  char watermark_key[512];
  uint32_t watermark_steps;
  float watermark_lr;
  /* Compressed uploads (protocol 1.9; coord_codec.c): 32 = float32; 8 or 4 =
   * plaintext updates quantized in blocks of upload_block values
   * (common/quant.h), or under secure aggregation b-bit inputs in the
   * narrowest ring the cohort's sum cannot wrap (secagg/ring.c). */
  uint32_t upload_bits;
  uint32_t upload_block;
  float secagg_range; /* narrow ring: a coordinate's range, values clamped into it (0 = the clip) */
  /* Update anomaly detection (coordinator/anomaly.h): observe, flag or
   * exclude identities whose score across rounds reaches the threshold;
   * excluded ones are not selected for anomaly_cooldown_s. A second
   * connection of one identity is refused with refuse_concurrent_identity. */
  char anomaly_policy[16];
  double anomaly_threshold;
  uint64_t anomaly_cooldown_s;
  int refuse_concurrent_identity;
  /* Model drift (coordinator/coord_drift.c, drift.h): an IDX images file
   * ("" = off); each new version's predicted-class distribution on it is
   * compared with the previous published version's by PSI. At or over
   * drift_threshold: "flag" warns, audits and counts; "hold" also pauses the
   * federation after publishing, for an admin's `fedc round resume`. */
  char reference_data[512];
  double drift_threshold;
  char drift_policy[16];
  /* Replicas on etcd (coord_ha.c, leader.h): the election this replica won,
   * set by the caller before fc_coord_start and outliving the coordinator;
   * NULL = one process, no etcd. Every publish and state write is then
   * fenced by it. */
  struct fc_leader *leader;
  /* Aggregator tier (issue 23; coord_aggtier.c): clients upload to the
   * aggregators registered in etcd under the leader's prefix, which hand
   * the leader partial sums (masked sums under secagg). Needs leader. */
  int agg_tier;
  /* FedAvg summed in 64-bit fixed point (aggregate_fedavg.c): the model is
   * the same bits for any arrival order and with or without an aggregator
   * tier, for the same seed. */
  int reproducible_sum;
} fc_coord_cfg;

/* coord_ha.c: before fc_coord_start on a replica that has just won: bring
 * state_dir's state.json up to etcd's model pointer (the previous leader may
 * have moved the pointer and died before writing state.json), or refuse with
 * one line if the two disagree otherwise. */
int fc_coord_ha_reconcile(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* etcd's model pointer P/model, {"version","sha256","round"} (value: len
 * bytes, NUL-terminated): FEDC_ERR_FORMAT with one line if it is not that
 * (coord_ha.c; also read by `fedc ha verify`). */
int fc_coord_ha_parse_pointer(const char *value, size_t len, uint64_t *version, uint8_t sha[32], uint64_t *round,
                              char *err, size_t errlen);

void fc_coord_cfg_defaults(fc_coord_cfg *c);

typedef struct fc_coord fc_coord;

/* Start serving. If the state directory holds a model, it continues from it
 * (init_spec/init_params may then be NULL; a spec mismatch is an error);
 * otherwise init_params becomes version 0. */
int fc_coord_start(const fc_coord_cfg *cfg, const fc_model_spec *init_spec, const float *init_params,
                   fc_coord **out, char *err, size_t errlen);
int fc_coord_port(const fc_coord *c);
/* 1 once the round budget is spent (state DONE). */
int fc_coord_done(fc_coord *c);
/* After fc_coord_done, before fc_coord_stop (coord_drain.c): keep serving
 * until every live client has been answered DONE, at most timeout_ms (0 =
 * fc_coord_drain_auto_ms). wait_stop(ms) (may be NULL) waits up to ms for a
 * stop request and returns > 0 (a signal number) to end the drain early,
 * which is returned; else 0. */
int fc_coord_drain(fc_coord *c, uint32_t timeout_ms, int (*wait_stop)(int ms));
/* The automatic drain timeout: 1.25 x the longest retry_after_ms handed out
 * + 5 s, at most 120 s. */
uint32_t fc_coord_drain_auto_ms(fc_coord *c);
/* Stop accepting, give in-flight calls grace_ms, free everything. Accepts NULL. */
void fc_coord_stop(fc_coord *c, int grace_ms);

#endif

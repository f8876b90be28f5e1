/*
 * cmd_coordinator_opts.c - the options of `fedc coordinator`: one row of
 * cc_options per option (name, type, place in struct settings, help, range
 * or string check), the string checks, storing a value with its one-line
 * refusal (cc_apply), --help (cc_usage) and the defaults.
 *
 * Owns: the table; CC_NOPTS in cmd_coordinator_int.h is its row count (a
 * compile-time constant, so callers size arrays by it without a VLA; the
 * _Static_assert below keeps the two equal).
 * May call: the configuration checks of coordinator/, crypto/pki.c and
 * cli_common; nothing of cmd_coordinator.c or cmd_coordinator_yaml.c (they
 * call down into this file). Rules for values: see cmd_coordinator.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cmd_coordinator_int.h"
#include "common/mlp.h"
#include "common/blas.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/coordinator.h"
#include "coordinator/server_opt.h"
#include "crypto/keyfile.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "transport/transport.h"
#include "fedc/error.h"

static const char *check_federation(const char *v) {
  return fc_pki_federation_ok(v) ? NULL : "use 1-63 of [a-z0-9.-], as for `fedc pki init`";
}

/* Exactly host:port or [v6]:port, port 0..65535 in decimal digits. gRPC
 * would take more (and parse "127.0.0.1:99999" as some other port), which is
 * why this is checked here rather than left to it. */
static const char *check_listen(const char *v) {
  static const char *allowed = "use host:port or [ipv6]:port with a port of 0..65535";
  const char *port;
  if (v[0] == '[') {
    const char *rbracket = strchr(v, ']');
    char host[64];
    struct in6_addr a6;
    size_t n = rbracket ? (size_t)(rbracket - v - 1) : 0;
    if (!rbracket || rbracket[1] != ':' || n == 0 || n >= sizeof host) return allowed;
    memcpy(host, v + 1, n);
    host[n] = '\0';
    if (inet_pton(AF_INET6, host, &a6) != 1) return allowed;
    port = rbracket + 2;
  } else {
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) return allowed;
    for (const char *h = v; h < colon; h++)
      if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || *h == '.' ||
            *h == '-'))
        return allowed; /* includes a second ':' (an IPv6 address without brackets) */
    port = colon + 1;
  }
  size_t digits = strspn(port, "0123456789");
  if (digits == 0 || digits > 5 || port[digits] || strtoul(port, NULL, 10) > 65535) return allowed;
  return NULL;
}

static const char *check_model(const char *v) {
  fc_mlp mlp;
  return fc_mlp_parse(v, &mlp) == 0 ? NULL : "use 784-200-200-10, mlp, logreg or layer sizes like 784-64-10";
}

static const char *check_sopt(const char *v) {
  return fc_sopt_parse(v) >= 0 ? NULL : "use sgd, avgm, adagrad, adam or yogi";
}

static const char *check_agg(const char *v) {
  return fc_robust_parse(v) >= 0 ? NULL : "use fedavg, median, trimmed_mean, krum, multikrum, bulyan or centered_clip";
}

static const char *check_anomaly_policy(const char *v) {
  return fc_anomaly_policy_parse(v) >= 0 ? NULL : "use observe, flag or exclude";
}

static const char *check_drift_policy(const char *v) {
  return strcmp(v, "flag") == 0 || strcmp(v, "hold") == 0 ? NULL : "use flag or hold";
}

static const char *check_log_format(const char *v) {
  return strcmp(v, "text") == 0 || strcmp(v, "json") == 0 ? NULL : "use text or json";
}

static const char *check_mode(const char *v) {
  return strcmp(v, "sync") == 0 || strcmp(v, "async") == 0 ? NULL : "use sync or async";
}

static const char *check_staleness(const char *v) {
  struct fc_staleness_fn f;
  char err[200];
  return fc_staleness_parse(v, &f, err, sizeof err) == 0 ? NULL
                                                          : "use const, poly[:A] (A > 0) or hinge[:A:B] (A > 0, B >= 0), "
                                                            "each optionally followed by ,fedbuff";
}

static const char *check_log(const char *v) {
  return fc_log_parse_level(v) >= 0 ? NULL : "use debug, info, warn or error";
}

#define S(field) offsetof(settings, field)
#define SZ(field) sizeof(((settings *)0)->field)
/* Rows: a string (with an optional check), a number without a range of its
 * own, a number with a range, a boolean. */
#define OPT_STR(n, field, h, chk)                                                                              \
  {.name = n, .type = T_STR, .off = S(field), .size = SZ(field), .help = h, .check = chk}
#define OPT_NUM(n, t, field, h) {.name = n, .type = t, .off = S(field), .help = h}
#define OPT_RANGE(n, t, field, h, lo, hi) {.name = n, .type = t, .off = S(field), .help = h, .min = lo, .max = hi}
#define OPT_BOOL(n, field, h) {.name = n, .type = T_BOOL, .off = S(field), .help = h}

#define HOUR_MS 3600000ull
#define DAY_MS (24 * HOUR_MS)

const copt cc_options[] = {
    OPT_STR("federation", c.federation, "federation name (must match the certificates)", check_federation),
    OPT_STR("listen", c.listen, "address to listen on, host:port or [ipv6]:port (port 0 picks a free one)",
            check_listen),
    OPT_STR("pki", pki,
            "PKI directory: uses ca.crt, coordinator.crt, coordinator.key and, if present, "
            "signer-coordinator.crt/.key",
            NULL),
    OPT_STR("ca", c.ca, "CA certificate (overrides --pki)", NULL),
    OPT_STR("cert", c.cert, "coordinator certificate (overrides --pki)", NULL),
    OPT_STR("key", c.key, "coordinator private key (overrides --pki)", NULL),
    OPT_STR("signing-cert", c.signing_cert, "model-signing certificate, role signer (overrides --pki)", NULL),
    OPT_STR("signing-key", c.signing_key, "model-signing private key (overrides --pki)", NULL),
    OPT_BOOL("adopt-state", c.adopt_state,
             "once, for a state directory from before model signing or encryption: sign its current version and "
             "read its plaintext files as they are (a missing manifest is refused otherwise)"),
    OPT_STR("model-key-file", model_key_file,
            "encrypt model versions at rest: file with a 32-byte key as 64 hex digits (keep it outside --state)",
            NULL),
    OPT_STR("watermark-key", c.watermark_key,
            "watermark every new version (WAFFLE): fine-tune it on a trigger set drawn from this private key "
            "file (64 hex digits, `fedc watermark keygen`; keep it outside --state); built-in MLP models only",
            NULL),
    OPT_RANGE("watermark-steps", T_U32, c.watermark_steps,
              "watermark: full-batch fine-tuning steps per round at most (it stops once every trigger is learnt)", 1,
              100000),
    OPT_NUM("watermark-lr", T_F32, c.watermark_lr, "watermark: learning rate of its fine-tuning steps (> 0)"),
    OPT_STR("anomaly-policy", c.anomaly_policy,
            "update anomaly scores (plaintext rounds): observe (record only), flag (also warn, audit, count) or "
            "exclude (also leave the identity out of selection for --anomaly-cooldown-s)",
            check_anomaly_policy),
    OPT_NUM("anomaly-threshold", T_F64, c.anomaly_threshold,
            "anomaly: an identity's score across rounds (robust z-score, exponentially weighted) that is flagged (> 0)"),
    OPT_RANGE("anomaly-cooldown-s", T_U64, c.anomaly_cooldown_s,
              "anomaly: seconds an excluded identity is left out of selection", 1, 30ull * 24 * 3600),
    OPT_STR("reference-data", c.reference_data,
            "model drift: an IDX images file (e.g. Fashion-MNIST t10k-images-idx3-ubyte.gz); each new version's "
            "predicted-class distribution on it is compared with the previous version's (PSI) before it is "
            "published; built-in MLP models only",
            NULL),
    OPT_NUM("drift-threshold", T_F64, c.drift_threshold,
            "drift: PSI at or over which a version is flagged (>= 0; 0.1 moderate, 0.25 significant: default 0.25)"),
    OPT_STR("drift-policy", c.drift_policy,
            "drift: flag (warn, audit, count) or hold (also pause the federation after publishing, until "
            "`fedc round resume`)",
            check_drift_policy),
    OPT_BOOL("refuse-concurrent-identity", c.refuse_concurrent_identity,
             "refuse a call of an identity from a second connection while its first was active in the last 5 s"),
    OPT_BOOL("insecure-for-testing", c.insecure_for_testing, "no TLS (refused unless --listen is loopback)"),
    OPT_STR("state", c.state_dir, "state directory: model versions, state.json, rounds.jsonl", NULL),
    OPT_NUM("keep-versions", T_U64, c.keep_versions,
            "keep only the last N model versions whole in the state directory, older ones by --keep-every "
            "(0 = keep every version)"),
    OPT_NUM("keep-every", T_U64, c.keep_every,
            "with --keep-versions: also keep every K-th older version's model and manifest (0 = none)"),
    OPT_STR("model", model, "built-in model for a new state: 784-200-200-10, mlp, logreg, sizes", check_model),
    OPT_STR("init-model", init_model,
            "a new state starts from this float32 safetensors file instead (tensor names and shapes from the file; "
            "clients train those tensors by name)",
            NULL),
    OPT_NUM("init-seed", T_U64, init_seed, "seed of the initial weights"),
    OPT_NUM("rounds", T_U64, c.engine.rounds, "round budget: completed rounds before DONE (0 = unlimited)"),
    OPT_NUM("min-clients", T_U32, c.engine.min_clients,
            "live clients needed to start a round (async: to open a new federation's first buffer)"),
    OPT_NUM("cohort", T_U32, c.engine.cohort_size, "clients selected per round (0 = use --cohort-fraction)"),
    OPT_NUM("cohort-fraction", T_F64, c.engine.cohort_fraction, "fraction of live clients selected when --cohort 0"),
    OPT_RANGE("min-updates", T_U32, c.engine.min_updates, "updates needed by the deadline, else the round is retried",
              1, UINT32_MAX),
    OPT_RANGE("pickup-timeout-ms", T_U64, c.engine.pickup_ms,
              "selected clients must fetch their task within this; <= --round-timeout-ms (the default is "
              "lowered to it)",
              100, 30 * DAY_MS),
    OPT_RANGE("round-timeout-ms", T_U64, c.engine.round_ms, "updates must arrive within this of the round start", 100,
              30 * DAY_MS),
    OPT_RANGE("client-ttl-ms", T_U64, c.engine.client_ttl_ms, "a client is live if it checked in within this", 100,
              30 * DAY_MS),
    OPT_RANGE("poll-ms", T_U32, c.engine.poll_ms, "how often waiting clients check in", 10, HOUR_MS),
    OPT_RANGE("checkin-hold-ms", T_U32, c.checkin_hold_ms,
              "hold a waiting client's check-in up to this long and answer it the moment its round opens (no "
              "thread held); 0 = answer at once (it polls again after --poll-ms)",
              0, 20000),
    OPT_NUM("seed", T_U64, c.engine.seed, "cohort selection seed"),
    OPT_NUM("max-clients", T_U32, c.engine.max_clients, "refuse new client identities beyond this many"),
    OPT_NUM("lr", T_F32, c.learning_rate, "client learning rate"),
    OPT_NUM("epochs", T_U32, c.local_epochs, "local epochs per round"),
    OPT_NUM("batch", T_U32, c.batch_size, "client minibatch size"),
    OPT_NUM("momentum", T_F32, c.momentum, "client SGD momentum"),
    OPT_NUM("prox-mu", T_F32, c.prox_mu,
            "FedProx (Li et al. 2020): clients add mu/2 ||w - w_global||^2 to their local loss (0 = FedAvg)"),
    OPT_NUM("clip-norm", T_F32, c.clip_norm, "L2 clip norm of updates (0 = none); larger updates are refused"),
    OPT_NUM("max-example-weight", T_U64, c.max_example_weight, "FedAvg weight cap per client"),
    OPT_NUM("upload-bits", T_U32, c.upload_bits,
            "update encoding clients must use: 32 (float32), 8 or 4 (quantized in blocks; under --secagg the "
            "narrowest ring the cohort cannot wrap)"),
    OPT_NUM("upload-block", T_U32, c.upload_block, "values per quantization block (16..65536, even)"),
    OPT_NUM("secagg-range", T_F32, c.secagg_range,
            "with --secagg --upload-bits 8|4: a coordinate's quantization range, larger values clamped "
            "(0 = the clip norm: no clamping, a coarser step)"),
    OPT_STR("server-optimizer", c.server_optimizer,
            "server optimizer applied to the mean delta: sgd (FedAvg), avgm (FedAvgM), adagrad, adam, yogi "
            "(Reddi et al. 2021)",
            check_sopt),
    OPT_NUM("server-lr", T_F32, c.server_lr, "server learning rate"),
    OPT_STR("aggregator", c.aggregator,
            "aggregation rule: fedavg, or robust: median, trimmed_mean, krum, multikrum, bulyan, centered_clip "
            "(these need a fixed --cohort and keep it whole in memory)",
            check_agg),
    OPT_NUM("agg-f", T_U32, c.agg_f, "robust aggregation: Byzantine updates tolerated, f (krum, multikrum, bulyan)"),
    OPT_NUM("agg-trim", T_F64, c.agg_trim, "trimmed mean: fraction dropped from each end"),
    OPT_NUM("agg-m", T_U32, c.agg_m, "multikrum: updates averaged (0 = n - f)"),
    OPT_NUM("agg-tau", T_F64, c.agg_tau, "centered clipping: radius tau"),
    OPT_NUM("agg-iters", T_U32, c.agg_iters, "centered clipping: iterations"),
    OPT_NUM("agg-memory-mib", T_U64, c.agg_memory_mib, "robust aggregation: largest arena (cohort x model)"),
    OPT_NUM("server-beta1", T_F32, c.server_beta1, "server momentum (avgm) or first-moment decay (adagrad/adam/yogi)"),
    OPT_NUM("server-beta2", T_F32, c.server_beta2, "second-moment decay (adam/yogi)"),
    OPT_NUM("server-tau", T_F32, c.server_tau, "adaptivity tau (adagrad/adam/yogi)"),
    OPT_BOOL("server-nesterov", c.server_nesterov, "Nesterov momentum (avgm)"),
    OPT_NUM("model-average", T_F32, c.model_average,
            "keep a moving average of the versions, a = B a + (1 - B) version, for evaluation and export "
            "(GetModel averaged, `fedc model get --averaged`); B in [0, 1), 0 = none"),
    OPT_NUM("dp-noise-multiplier", T_F64, c.dp_noise_multiplier,
            "differential privacy (DP-FedAvg): Gaussian noise std / clip-norm added to the sum (0 = off); needs "
            "--cohort 0 --cohort-fraction q (Poisson sampling)"),
    OPT_NUM("dp-delta", T_F64, c.dp_delta, "differential privacy: delta of the reported epsilon"),
    OPT_NUM("dp-target-epsilon", T_F64, c.dp_target_epsilon,
            "differential privacy: stop before a round would spend more (0 = no target)"),
    OPT_NUM("dp-clip", T_F32, c.clip_norm,
            "differential privacy: the clip norm C, the same as --clip-norm (with adaptive clipping, where it starts)"),
    OPT_NUM("dp-adaptive-quantile", T_F64, c.dp_adaptive_quantile,
            "differential privacy: adaptive clipping (Andrew et al. 2021) to this quantile of update norms, e.g. 0.5 "
            "(0 = a fixed clip)"),
    OPT_NUM("dp-clip-lr", T_F64, c.dp_clip_lr, "adaptive clipping: the clip's learning rate eta (geometric update)"),
    OPT_NUM("dp-count-noise", T_F64, c.dp_count_noise,
            "adaptive clipping: noise std sigma_b of the unclipped count (0 = expected cohort / 20, at least z)"),
    OPT_NUM("dp-clip-min", T_F64, c.dp_clip_min,
            "adaptive clipping: the clip never goes below this (0 = --dp-clip / 10; at least 1e-6)"),
    OPT_NUM("dp-clip-max", T_F64, c.dp_clip_max,
            "adaptive clipping: the clip never goes above this (0 = --dp-clip x 10; at most 1e6)"),
    OPT_NUM("eval-every", T_U32, c.engine.eval_every,
            "federated evaluation: the model of every N-th completed round, and the last, on a cohort of its own "
            "(0 = off)"),
    OPT_NUM("eval-cohort", T_U32, c.engine.eval_cohort, "clients per evaluation (0 = use --eval-fraction)"),
    OPT_NUM("eval-fraction", T_F64, c.engine.eval_fraction, "fraction of the clients that can evaluate, if --eval-cohort 0"),
    OPT_RANGE("eval-min", T_U32, c.engine.eval_min, "results an evaluation needs, else it is abandoned", 1, UINT32_MAX),
    OPT_RANGE("eval-timeout-ms", T_U64, c.engine.eval_ms, "results (or the advertise stage) within this of its start", 100,
              30 * DAY_MS),
    OPT_NUM("eval-max-examples", T_U64, c.eval_max_examples, "examples one client's results count (0 = --max-example-weight)"),
    OPT_NUM("eval-value-max", T_F64, c.eval_value_max, "bound on an example's loss or metric value (at most 1e6)"),
    OPT_STR("eval-metrics", c.eval_metrics, "named metrics collected, comma-separated (at most 4)", NULL),
    OPT_NUM("eval-dp-noise", T_F64, c.eval_dp_noise,
            "differential privacy: noise multiplier of the evaluation totals (required with --eval-every)"),
    OPT_BOOL("secagg", c.engine.secagg,
             "secure aggregation (SecAgg+): the coordinator learns only the sum of the cohort's clipped updates"),
    OPT_RANGE("secagg-neighbors", T_U32, c.secagg_k,
              "secure aggregation: neighbours per client, k (0 = with --secagg-threshold 0, k and t from Bell et "
              "al.'s bounds for the cohort, --secagg-corrupt, --secagg-dropout and --min-updates, as `fedc "
              "secagg-params`; the cohort - 1 or more = all: the complete graph)",
              0, 10000),
    OPT_RANGE("secagg-threshold", T_U32, c.secagg_t,
              "secure aggregation: Shamir threshold t (0 = automatic: the bounds' t, or with --secagg-neighbors a "
              "majority of each neighbourhood; set alone, it keeps the complete graph)",
              0, 10000),
    OPT_NUM("secagg-corrupt", T_F64, c.secagg_corrupt,
            "secure aggregation: fraction of the cohort the default graph assumes may collude with a coordinator "
            "that lies about dropouts (rounded up to whole clients)"),
    OPT_NUM("secagg-dropout", T_F64, c.secagg_dropout,
            "secure aggregation: fraction of the cohort the default graph assumes may drop out (at least the share "
            "--min-updates lets go)"),
    OPT_STR("metrics-listen", c.metrics_listen,
            "HTTP address for /metrics (Prometheus), /healthz, /readyz, e.g. 127.0.0.1:9464 or :9464 (loopback) "
            "(plain HTTP, no authentication: counts only); off by default",
            NULL),
    OPT_BOOL("metrics-public", c.metrics_public,
             "allow --metrics-listen on an address that is not loopback (:port = every address); let only the "
             "scraper and the kubelet reach it"),
    OPT_RANGE("metrics-connections-per-address", T_INT, c.metrics_conns_per_address,
              "metrics connections one address may hold; a new one closes its oldest", 1, 1024),
    OPT_RANGE("metrics-request-timeout-ms", T_INT, c.metrics_request_ms,
              "a metrics connection is closed this long after it opened, however it trickles", 100, 600000),
    OPT_NUM("secagg-poll-rate", T_F64, c.secagg_poll_rate,
            "SecAggPoll calls per second one identity may make (bursts of 2 s' worth); 0 = no limit"),
    OPT_NUM("call-rate", T_F64, c.call_rate,
            "FetchModel and SecAggSubmit calls per second one identity may make (bursts of 5 s' worth, at least 10); "
            "0 = no limit"),
    OPT_NUM("admin-rate", T_F64, c.admin_rate,
            "admin calls (status, rounds, round control, model get) per second one identity may make (bursts of 5 s' "
            "worth); 0 = no limit"),
    OPT_RANGE("audit-max-mib", T_U64, c.audit_max_mib,
              "audit log disk budget: past it (or below --state-min-free-mib) refusals are only counted, one record "
              "per interval for all identities", 1, 1ull << 30),
    OPT_RANGE("state-min-free-mib", T_U64, c.state_min_free_mib,
              "free space on the state directory the audit log leaves to the store (0 = 4 x the model + 64 MiB)", 0,
              1ull << 30),
    OPT_RANGE("audit-refusal-interval-ms", T_U64, c.audit_refusal_interval_ms,
              "an identity's refusals past its first 4 per interval are audited as one count record per interval",
              1000, DAY_MS),
    OPT_BOOL("audit-log", c.audit_log,
             "hash-chained audit log in the state directory (audit.log; `fedc audit verify`); --audit-log=false: off"),
    OPT_RANGE("secagg-bucket", T_U32, c.secagg_bucket,
              "secure aggregation with a robust aggregator: clients per bucket, at least (one SecAgg instance each; "
              "the rule runs over the buckets' means)", 3, 100000),
    OPT_RANGE("secagg-bucket-seed", T_U64, c.secagg_bucket_seed,
              "research: draw the buckets from this seed and the round id, not the CSPRNG, so runs of one seed "
              "group the same clients (whoever knows it predicts bucket-mates; 0 = CSPRNG)", 0, UINT64_MAX),
    OPT_BOOL("secagg-keys-first", c.engine.sa_keys_first,
             "secure aggregation: clients exchange keys and shares while they train (the key stages hide behind "
             "training); a client that then fails to train is a dropout after sharing, whose masks are rebuilt, "
             "so size --secagg-dropout for training failures too"),
    OPT_RANGE("secagg-stage-ms", T_U64, c.engine.sa_stage_ms,
              "secure aggregation: deadline of each stage after key advertisement", 100, DAY_MS),
    OPT_RANGE("secagg-offence-limit", T_U32, c.engine.offence_limit,
              "secure aggregation: rounds with bad unmask shares after which a client is left out of selection "
              "(0 = never)", 0, 1000000),
    OPT_RANGE("secagg-offence-exclude-s", T_U64, c.engine.offence_exclude_s,
              "secure aggregation: seconds a client at the offence limit is left out of selection (0 = counted "
              "only)", 0, 366 * 24 * 3600),
    OPT_RANGE("unmask-threads", T_INT, c.unmask_threads, "secure aggregation: threads expanding masks (0 = 2)", 0, 64),
    OPT_RANGE("chunk-bytes", T_U32, c.chunk_bytes, "model stream chunk size", 1024, 4u << 20),
    OPT_RANGE("threads", T_INT, c.threads, "event threads serving calls (a slow peer holds none)", 1, 64),
    OPT_RANGE("upload-slots", T_INT, c.upload_slots,
              "concurrent uploads staged (memory = slots x model); 0 = --upload-memory-mib / model size", 0, 1024),
    OPT_RANGE("upload-memory-mib", T_U64, c.upload_memory_mib,
              "memory for staging uploads when --upload-slots is 0: slots = this / model size, 1..1024", 1, 1u << 20),
    OPT_RANGE("download-slots", T_INT, c.download_slots, "concurrent model downloads served", 1, 1024),
    OPT_RANGE("max-calls-per-client", T_INT, c.max_calls_per_client, "concurrent calls one identity may hold; 0 = 4",
              0, 1024),
    OPT_RANGE("stream-idle-ms", T_INT, c.stream_idle_ms, "max wait for one message of a call", 100, HOUR_MS),
    OPT_RANGE("fd-headroom", T_INT, c.fd_headroom, "file descriptors kept free; 0 = max(64, limit/8)", 0, 1 << 20),
    OPT_RANGE("max-connections", T_INT, c.max_connections, "connection cap; 0 = fd limit - headroom", 0, 1 << 20),
    OPT_RANGE("keepalive-ms", T_INT, c.keepalive_ms, "HTTP/2 pings to idle peers this often; 0 = none (kernel TCP keepalive finds dead peers)", 0,
              HOUR_MS),
    OPT_RANGE("grpc-memory-mib", T_INT, c.grpc_memory_mib, "memory quota for gRPC's buffers; 0 = 256 + 128 KiB per admissible connection", 0, 1 << 20),
    OPT_BOOL("require-charging", c.engine.elig.require_charging, "select only devices that say they are charging"),
    OPT_BOOL("require-unmetered", c.engine.elig.require_unmetered,
             "select only devices that say they are on an unmetered network"),
    OPT_BOOL("require-idle", c.engine.elig.require_idle, "select only devices that say they are idle"),
    OPT_RANGE("min-battery", T_U32, c.engine.elig.min_battery_percent,
              "select only devices reporting at least this battery level, percent (0 = no minimum)", 0, 100),
    OPT_NUM("min-free-storage", T_U64, c.engine.elig.min_free_storage_bytes,
            "select only devices reporting at least this much free storage, bytes (0 = no minimum)"),
    OPT_BOOL("allow-unreported", c.engine.elig.allow_unreported,
             "devices that report no state (clients before protocol 1.8) count as eligible under the "
             "requirements above; by default they meet none"),
    OPT_BOOL("pace", c.engine.pace,
             "pace steering: tell waiting devices when to check in so a large fleet arrives at --pace-rate "
             "(--pace=false: every device polls at --poll-ms)"),
    OPT_NUM("pace-rate", T_F64, c.engine.pace_rate,
            "pace steering: check-ins per second wanted (0 = from the rounds: twice the cohort due in every "
            "selection window)"),
    OPT_NUM("pace-min-rate", T_F64, c.engine.pace_min_rate,
            "pace steering: never aim below this many check-ins per second (fleets polling slower are not steered)"),
    OPT_RANGE("pace-max-ms", T_U64, c.engine.pace_max_ms,
              "pace steering: the longest wait a device is told (clients cap at 1 h)", 1000, HOUR_MS),
    OPT_STR("mode", mode,
            "sync: rounds of a selected cohort; async: buffered asynchronous aggregation (FedBuff): clients train "
            "on the current version as they check in, a version every --async-buffer updates",
            check_mode),
    OPT_RANGE("async-concurrency", T_U32, c.engine.async_concurrency,
              "async: clients training at once (each holds its task until it uploads, gives up or --round-timeout-ms)",
              1, 1000000),
    OPT_RANGE("async-slot-ms", T_U64, c.engine.async_slot_ms,
              "async: a task stops counting against --async-concurrency this long after it was handed out, so "
              "stragglers do not hold fast clients' slots; its update is still taken within --max-staleness and "
              "--round-timeout-ms (0 = it counts until it ends)",
              0, HOUR_MS),
    OPT_RANGE("async-buffer", T_U32, c.engine.async_buffer, "async: accepted updates per published version (K)", 1,
              100000),
    OPT_STR("staleness", staleness,
            "async: an update s versions behind weighs w(s) x its examples: const, poly[:A] ((1+s)^-A, default "
            "A 0.5) or hinge[:A:B] (1 up to B, then 1/(A(s-B)+1); default 10:4); the buffer is divided by its "
            "weights, or with a ,fedbuff suffix by its examples (FedBuff: stale buffers move the model less)",
            check_staleness),
    OPT_BOOL("async-calibrate", c.async_calibrate,
             "async: cached update calibration (CA2FL): the coordinator keeps each client's latest update, and a "
             "buffer steps by their mean plus its updates' differences from their clients' cached ones, so clients "
             "outside the buffer still count (FedAvg only; memory: --async-cache-mib)"),
    OPT_RANGE("async-cache-mib", T_U64, c.async_cache_mib,
              "async: the most memory --async-calibrate's cache of client updates takes (MiB; least recently updated "
              "clients evicted past it)",
              1, 1u << 24),
    OPT_RANGE("max-staleness", T_U32, c.engine.max_staleness,
              "async: updates trained more than this many versions ago are refused", 0, 1000000),
    OPT_NUM("checkin-rate", T_F64, c.engine.checkin_rate,
            "check-ins per second one identity may make; 0 = 2 per --poll-ms"),
    OPT_NUM("checkin-burst", T_F64, c.engine.checkin_burst, "check-ins one identity may make at once; 0 = automatic"),
    OPT_NUM("upload-rate", T_F64, c.engine.upload_rate, "upload attempts per second one identity may make; 0 = no limit"),
    OPT_NUM("upload-burst", T_F64, c.engine.upload_burst, "upload attempts one identity may make at once"),
    OPT_NUM("stranger-rate", T_F64, c.engine.stranger_rate,
            "uploads (and check-ins past --max-clients) per second shared by every identity without a client "
            "record; 0 = no limit"),
    OPT_NUM("stranger-burst", T_F64, c.engine.stranger_burst,
            "uploads (and check-ins past --max-clients) at once, shared by every identity without a client record"),
    OPT_RANGE("connect-rate", T_INT, c.connect_rate, "new connections (TLS handshakes) per second per source address; 0 = no limit",
              0, 1000000),
    OPT_NUM("min-transfer-bps", T_U64, c.min_transfer_bps,
            "uploads and downloads averaging less after a grace of stream-idle-ms are cut off; 0 = none"),
    OPT_RANGE("connect-rate-total", T_INT, c.connect_rate_total,
              "new connections (TLS handshakes) per second from all addresses; 0 = no limit", 0, 1000000),
    OPT_RANGE("connections-per-address", T_INT, c.connections_per_address,
              "connections one source address may hold open; 0 = no limit (raise for NATs)", 0, 1 << 20),
    OPT_RANGE("connect-burst", T_INT, c.connect_burst, "new connections at once per source address; 0 = 10 x rate", 0,
              10000000),
    /* Replicas on etcd (issue 23; coordinator/leader.h, docs/operations.md "Running replicas and failing over"). */
    OPT_STR("etcd", etcd,
            "etcd endpoints host:port[,host:port...]: run as one of several replicas; the one holding the etcd "
            "election serves, the others stand by",
            NULL),
    OPT_STR("etcd-prefix", etcd_prefix, "etcd key prefix of this federation (default /fedc/<federation>)", NULL),
    OPT_RANGE("etcd-lease-ttl", T_INT, etcd_lease_ttl,
              "seconds a leader that stops renewing keeps the election (failover takes about this long)", 1, 3600),
    OPT_RANGE("etcd-quorum-hold", T_INT, etcd_quorum_hold,
              "seconds a leader whose lease etcd cannot renew (quorum lost) keeps its clients, telling them to "
              "retry and publishing nothing, before it stands down; 0 = at once",
              0, 86400),
    OPT_STR("etcd-ca", etcd_ca, "CA of etcd's certificates (mutual TLS to etcd; plaintext only on loopback)", NULL),
    OPT_STR("etcd-cert", etcd_cert, "our client certificate for etcd", NULL),
    OPT_STR("etcd-key", etcd_key, "its private key", NULL),
    OPT_BOOL("aggregator-tier", c.agg_tier,
             "with --etcd: clients upload to the aggregators registered in etcd (`fedc aggregator`), which hand "
             "the leader partial sums (FedAvg), masked sums (SecAgg) or, for a robust rule or an anomaly policy "
             "without SecAgg, each update whole"),
    OPT_BOOL("reproducible-sum", c.reproducible_sum,
             "FedAvg sums in 64-bit fixed point on a grid from the clip norm: the same seed gives the same model "
             "bits whatever order uploads arrive in, with or without --aggregator-tier"),
    OPT_STR("port-file", port_file, "write the bound port here once listening (failing to is fatal)", NULL),
    OPT_RANGE("grace-ms", T_INT, grace_ms, "shutdown grace period for in-flight calls", 0, HOUR_MS),
    OPT_RANGE("blas-threads", T_INT, blas_threads, "OpenBLAS threads", 1, 1024),
    OPT_BOOL("exit-when-done", exit_when_done,
             "exit once the round budget is spent, after every live client has heard DONE (--drain-ms)"),
    OPT_RANGE("drain-ms", T_U32, drain_ms,
              "with --exit-when-done: wait at most this long for live clients to hear DONE; 0 = 1.25 x the "
              "longest retry_after handed out + 5 s, at most 120 s",
              0, HOUR_MS),
    OPT_STR("log", log, "log level: debug|info|warn|error", check_log),
    OPT_STR("log-format", log_format,
            "text, or json: one object per line with ts, level, module, msg (and suppressed)", check_log_format),
};
_Static_assert(sizeof cc_options / sizeof cc_options[0] == CC_NOPTS,
               "CC_NOPTS (cmd_coordinator_int.h) must be the number of rows of cc_options");

/* Options by name; '_', '.' and '-' are the same ("server_optimizer" or "dp.noise_multiplier" in YAML are
 * --server-optimizer). */
static int is_sep(char ch) { return ch == '_' || ch == '-' || ch == '.'; }

static int same_key(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (*a != *b && !(is_sep(*a) && is_sep(*b))) return 0;
  return *a == *b;
}

int cc_find_opt(const char *name) {
  for (size_t i = 0; i < CC_NOPTS; i++)
    if (same_key(cc_options[i].name, name)) return (int)i;
  return -1;
}

/* "flag" or "FILE:LINE", for the one-line refusals. */
const char *cc_origin_text(origin o, char *buf, size_t n) {
  if (!o.file) return "flag";
  snprintf(buf, n, "%s:%zu", o.file, o.line);
  return buf;
}

/* A value as it may be shown in a one-line message: control characters
 * (a quoted YAML "\n") become '?', long values are cut. */
const char *cc_shown(const char *v, char *buf, size_t n) {
  size_t i = 0;
  for (; v[i] && i + 4 < n; i++) buf[i] = (unsigned char)v[i] < 0x20 || v[i] == 0x7f ? '?' : v[i];
  if (v[i]) memcpy(buf + i, "...", 3), i += 3;
  buf[i] = '\0';
  return buf;
}

/* The allowed range of a numeric row: "lo..hi", with the unit and the upper
 * bound in hours or days for durations. Empty if the row has no range. */
static void range_text(const copt *o, char *buf, size_t n) {
  buf[0] = '\0';
  if (!o->max) return;
  size_t len = strlen(o->name);
  int ms = len > 3 && strcmp(o->name + len - 3, "-ms") == 0;
  int w = snprintf(buf, n, "%llu..%llu%s", (unsigned long long)o->min, (unsigned long long)o->max, ms ? " ms" : "");
  if (!ms || w < 0 || (size_t)w >= n) return;
  if (o->max % DAY_MS == 0)
    snprintf(buf + w, n - (size_t)w, ", at most %llu days", (unsigned long long)(o->max / DAY_MS));
  else if (o->max % HOUR_MS == 0)
    snprintf(buf + w, n - (size_t)w, ", at most %llu hour%s", (unsigned long long)(o->max / HOUR_MS),
             o->max == HOUR_MS ? "" : "s");
}

/* Store `val` for options[i]; 0, or 2 after printing the refusal. */
int cc_apply(settings *s, int i, const char *val, origin from) {
  const copt *o = &cc_options[i];
  void *p = (char *)s + o->off;
  char *end = NULL;
  char range[96] = "", why[160] = "", where[600], vbuf[96];
  errno = 0;
  switch (o->type) {
  case T_STR: {
    const char *wrong;
    if (strlen(val) >= o->size) {
      snprintf(why, sizeof why, ": at most %zu characters", o->size - 1);
      goto bad;
    }
    if (o->check && (wrong = o->check(val)) != NULL) {
      snprintf(why, sizeof why, ": %s", wrong);
      goto bad;
    }
    strcpy(p, val);
    return 0;
  }
  case T_BOOL:
    if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "yes")) *(int *)p = 1;
    else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "no"))
      *(int *)p = 0;
    else {
      snprintf(why, sizeof why, ": use true or false");
      goto bad;
    }
    return 0;
  case T_U32:
  case T_U64:
  case T_INT: {
    uint64_t lo = o->min, hi = o->max;
    if (!hi) hi = o->type == T_U64 ? UINT64_MAX : o->type == T_U32 ? UINT32_MAX : 1000000000u;
    range_text(o, range, sizeof range);
    if (range[0]) snprintf(why, sizeof why, " (%s)", range);
    /* Digits only: strtoull would also take " 5", "+5" and "-5" (as 2^64-5). */
    if (val[0] < '0' || val[0] > '9') goto bad;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || *end || v < lo || v > hi) goto bad;
    if (o->type == T_U32) *(uint32_t *)p = (uint32_t)v;
    else if (o->type == T_U64)
      *(uint64_t *)p = v;
    else
      *(int *)p = (int)v;
    return 0;
  }
  case T_F32:
  case T_F64: {
    double v = strtod(val, &end);
    if (errno || end == val || *end || !(v >= 0) || v > 1e30) goto bad;
    if ((strcmp(o->name, "cohort-fraction") == 0 || strcmp(o->name, "eval-fraction") == 0) && v > 1) goto bad;
    if ((strcmp(o->name, "secagg-corrupt") == 0 || strcmp(o->name, "secagg-dropout") == 0) && v >= 1) {
      snprintf(why, sizeof why, " (a fraction: at least 0, below 1)");
      goto bad;
    }
    if (o->type == T_F64) *(double *)p = v;
    else
      *(float *)p = (float)v;
    return 0;
  }
  }
bad:
  fprintf(stderr, "fedc coordinator: %s: invalid value '%s' for '%s'%s\n", cc_origin_text(from, where, sizeof where),
          cc_shown(val, vbuf, sizeof vbuf), o->name, why);
  return 2;
}

void cc_usage(FILE *f, const settings *d) {
  fprintf(f, "Usage: fedc coordinator [--config FILE] [options]\n"
             "Run the federation coordinator. Every option may also be a key in the YAML --config file;\n"
             "flags override the file. Values outside the range in parentheses are refused.\n\n"
             "Options (default in brackets):\n");
  for (size_t i = 0; i < CC_NOPTS; i++) {
    const copt *o = &cc_options[i];
    const void *p = (const char *)d + o->off;
    char def[160], range[96];
    switch (o->type) {
    case T_STR: snprintf(def, sizeof def, "%s", (const char *)p); break;
    case T_BOOL: snprintf(def, sizeof def, "%s", *(const int *)p ? "on" : "off"); break;
    case T_U32: snprintf(def, sizeof def, "%u", *(const uint32_t *)p); break;
    case T_U64: snprintf(def, sizeof def, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case T_INT: snprintf(def, sizeof def, "%d", *(const int *)p); break;
    case T_F32: snprintf(def, sizeof def, "%g", (double)*(const float *)p); break;
    case T_F64: snprintf(def, sizeof def, "%g", *(const double *)p); break;
    }
    range_text(o, range, sizeof range);
    fprintf(f, "  --%-22s %s%s%s%s [%s]\n", o->name, o->help, range[0] ? " (" : "", range, range[0] ? ")" : "", def);
  }
  fprintf(f, "  --%-22s %s\n", "config FILE", "YAML file of the options above");
}

void cc_defaults(settings *s) {
  memset(s, 0, sizeof *s);
  fc_coord_cfg_defaults(&s->c);
  snprintf(s->model, sizeof s->model, "784-200-200-10");
  s->init_seed = 1;
  s->grace_ms = 5000;
  s->blas_threads = 1;
  s->etcd_lease_ttl = 5;
  s->etcd_quorum_hold = 60;
  snprintf(s->log, sizeof s->log, "info");
  snprintf(s->log_format, sizeof s->log_format, "text");
  snprintf(s->mode, sizeof s->mode, "sync");
  snprintf(s->staleness, sizeof s->staleness, "poly");
}

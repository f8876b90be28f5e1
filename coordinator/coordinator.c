/*
 * coordinator.c - the coordinator's lifecycle: fc_coord_start (checks, the
 * state read, then the state directory, the engine, the aggregator, the
 * server and the driver thread), fc_coord_stop, and the method table.
 *
 * The roles live in their own files (each header says what it owns and what
 * it may call); coord_int.h holds the shared struct and their prototypes:
 *   coord_cfg.c       defaults and configuration checks
 *   coord_model.c     the global model snapshot and the history in memory
 *   coord_state.c     the state directory (state.json, history lines, retries)
 *   coord_dp.c        DP noise, adaptive clipping, the privacy budget
 *   coord_publish.c   a closed round -> a signed, written, published version
 *   coord_driver.c    the driver thread ticking the engine
 *   coord_ha.c        with --etcd: fenced writes to etcd, the shared audit log, the
 *                     start-up reconcile (leader.h runs the election itself)
 *   coord_checkin.c   CheckIn          coord_download.c  FetchModel, GetModel
 *   coord_upload.c    UploadUpdate     coord_admin.c     Status, Rounds, RoundControl
 *   coord_secagg.c, coord_eval*.c, coord_leave.c, coord_limits.c, coord_drain.c,
 *   coord_start.c, coord_codec.c, coord_resume.c, coord_anomaly.c, metrics.c:
 *   secure aggregation, federated evaluation, Leave, call limits, draining,
 *   start-up checks, compressed uploads, resumable transfers, anomaly scores
 *   and identity misuse, the metrics endpoint.
 * Calls go one way: lifecycle -> driver -> publish -> dp / secagg -> model;
 * handlers -> model / state; nothing calls back into this file.
 *
 * Threads and locks:
 *   - gRPC event threads run the client handlers (admin handlers run on the
 *     transport's admin pool). They never wait for a peer: uploads and
 *     downloads are driven by their streams' events. They take `mu` only for
 *     engine events (short), fold update chunks into a staging slot without
 *     any lock, and commit a verified update (engine commit + saxpy) under
 *     `mu`, so a commit can never land after the round was closed.
 *   - The driver thread ticks the engine every 50 ms, and on AGGREGATE
 *     finalizes the model (average, apply, hash, write) outside `mu`: the
 *     engine is in AGGREGATING, which refuses uploads, so nothing races it.
 *   - The global model is an immutable refcounted snapshot; FetchModel streams
 *     hold a reference, so publishing never waits for slow downloads.
 */
#include "coordinator/coordinator.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blas.h"
#include "common/dp_accountant.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/audit.h"
#include "coordinator/refusals.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "crypto/sa_crypto.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/watermark.h"
#include "coordinator/anomaly.h"
#include "crypto/pki.h"
#include "transport/accept_guard.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"
/* ---- lifecycle -------------------------------------------------------------------- */

#define SMALL_MSG 4096
#define CHUNK_MSG (FC_CHUNK_MAX + 4096)

static void set_method(fc_method *m, const char *path, fc_rpc_kind kind, int role, size_t max_recv,
                       const ProtobufCMessageDescriptor *req, fc_handler h, void *ctx) {
  /* Client methods run on the event threads and never wait; admin methods
   * run on the admin pool (GetModel may read an old version from disk), which
   * no client call can occupy. */
  m->async = role == FC_ROLE_CLIENT;
  m->path = path;
  m->kind = kind;
  m->role = role;
  m->max_recv = max_recv;
  m->unpack_ratio = 0; /* the default; SubmitPartial sets its own below */
  m->request = req;
  m->handler = h;
  m->ctx = ctx;
}

/* The round budget in effect, as `fedc status` reports it: the configured
 * one, or the one an admin set before a restart (coord_restore_admin_state). */
static const char *budget_text(fc_coord *c, char *buf, size_t len) {
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  pthread_mutex_unlock(&c->mu);
  unsigned long long conf = c->cfg.engine.rounds;
  if (!es.budget) snprintf(buf, len, "no round budget");
  else if (es.budget == conf) snprintf(buf, len, "%llu-round budget", conf);
  else
    snprintf(buf, len, "%llu-round budget (%s; rounds configured: %llu)", (unsigned long long)es.budget,
             c->dp_stop[0] ? "privacy budget spent" : "set by `fedc round start` before the restart", conf);
  return buf;
}

int fc_coord_start(const fc_coord_cfg *cfg, const fc_model_spec *init_spec, const float *init_params,
                   fc_coord **out, char *err, size_t errlen) {
  int rc = coord_cfg_check(cfg, err, errlen);
  if (rc == FEDC_OK && coord_sa_cfg_check(cfg, err, errlen) != FEDC_OK) rc = FEDC_ERR_INVALID;
  if (rc == FEDC_OK && coord_eval_cfg_check(cfg, err, errlen) != FEDC_OK) rc = FEDC_ERR_INVALID;
  if (rc == FEDC_OK && coord_tier_cfg_check(cfg, err, errlen) != FEDC_OK) rc = FEDC_ERR_INVALID;
  if (rc != FEDC_OK) return rc;
  fc_coord *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  c->cfg = *cfg;
  c->clip = cfg->clip_norm;
  if (cfg->dp_noise_multiplier > 0 && cfg->dp_adaptive_quantile > 0) /* checked by coord_cfg_check: the resolved range */
    fc_dp_clip_range(cfg->clip_norm, cfg->dp_clip_min, cfg->dp_clip_max, &c->cfg.dp_clip_min, &c->cfg.dp_clip_max,
                     err, errlen);
  c->http_fd = -1;
  memcpy(c->store_key.key, cfg->model_key, sizeof c->store_key.key);
  c->store_key.allow_plain = cfg->adopt_state;
  c->started_ms = fc_now_ms();
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->stop_mu, NULL);
  pthread_cond_init(&c->stop_cv, NULL);
  pthread_mutex_init(&c->dl_mu, NULL);
  pthread_mutex_init(&c->up_mu, NULL);
  pthread_mutex_init(&c->store_mu, NULL);
  if (c->cfg.download_slots <= 0) c->cfg.download_slots = 32;
  if (c->cfg.chunk_bytes < FC_CHUNK_MIN || c->cfg.chunk_bytes > FC_CHUNK_MAX) c->cfg.chunk_bytes = FC_CHUNK_DEFAULT;

  set_method(&c->methods[0], "/fedc.v1.Coordinator/CheckIn", FC_RPC_UNARY, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__check_in_request__descriptor, coord_h_checkin, c);
  set_method(&c->methods[1], "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__fetch_model_request__descriptor, coord_h_fetch_model, c);
  set_method(&c->methods[2], "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, FC_ROLE_CLIENT, CHUNK_MSG,
             &fedc__v1__upload_msg__descriptor, coord_h_upload, c);
  set_method(&c->methods[3], "/fedc.v1.Admin/Status", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__status_request__descriptor, coord_h_status, c);
  set_method(&c->methods[4], "/fedc.v1.Admin/Rounds", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__rounds_request__descriptor, coord_h_rounds, c);
  set_method(&c->methods[5], "/fedc.v1.Admin/RoundControl", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__round_control_request__descriptor, coord_h_round_control, c);
  set_method(&c->methods[6], "/fedc.v1.Admin/GetModel", FC_RPC_SERVER_STREAM, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__get_model_request__descriptor, coord_h_get_model, c);
  set_method(&c->methods[7], "/fedc.v1.Coordinator/SecAggSubmit", FC_RPC_UNARY, FC_ROLE_CLIENT,
             coord_sa_submit_limit(cfg), &fedc__v1__sec_agg_submit_request__descriptor, coord_h_sa_submit_any, c);
  set_method(&c->methods[8], "/fedc.v1.Coordinator/SecAggPoll", FC_RPC_UNARY, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__sec_agg_poll_request__descriptor, coord_h_sa_poll_any, c);
  set_method(&c->methods[9], "/fedc.v1.Coordinator/Leave", FC_RPC_UNARY, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__leave_request__descriptor, coord_h_leave, c);
  set_method(&c->methods[10], "/fedc.v1.Coordinator/ReportEval", FC_RPC_UNARY, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__eval_report__descriptor, coord_h_eval_report, c);
  set_method(&c->methods[11], "/fedc.v1.Coordinator/UploadOffset", FC_RPC_UNARY, FC_ROLE_CLIENT, SMALL_MSG,
             &fedc__v1__upload_offset_request__descriptor, coord_h_upload_offset, c);
  set_method(&c->methods[12], "/fedc.v1.Admin/Clients", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__clients_request__descriptor, coord_h_clients, c);
  /* Aggregator tier (coord_aggtier.c): only aggregators call these, on the
   * blocking pool (they are few); the first partial message carries up to
   * FC_TIER_MAX_UPDATES update records beside its header. */
  set_method(&c->methods[13], "/fedc.v1.Aggregator/AggregatorRound", FC_RPC_UNARY, FC_ROLE_AGGREGATOR, SMALL_MSG,
             &fedc__v1__agg_round_request__descriptor, coord_h_agg_round, c);
  set_method(&c->methods[14], "/fedc.v1.Aggregator/SubmitPartial", FC_RPC_CLIENT_STREAM, FC_ROLE_AGGREGATOR,
             CHUNK_MSG + (16u << 20), &fedc__v1__partial_msg__descriptor, coord_h_agg_partial, c);
  c->methods[14].unpack_ratio = 8; /* a 16 MiB first message unpacks to at most 128 MiB, not 400 (util.c) */

  /* Every input that can refuse the start is checked, and the state read,
   * before the state directory is created or changed (coord_start.c). */
  if ((rc = coord_start_listen(c, err, errlen)) != FEDC_OK) goto fail;
  /* Secure aggregation checks the certificates clients advertise keys under
   * against the federation CA (coord_secagg.c), as the tier checks relayed
   * updates' signers (coord_aggpartial.c); signing may have read it. */
  if (!c->ca_pem && (cfg->engine.secagg || coord_tier_relay(cfg)) && cfg->ca[0] &&
      (rc = fc_read_file(cfg->ca, 1u << 20, &c->ca_pem, &c->ca_len)) != FEDC_OK) {
    snprintf(err, errlen, "cannot read CA certificate %s: %s", cfg->ca, fedc_strerror(rc));
    goto fail;
  }
  fc_store_state st;
  memset(&st, 0, sizeof st);
  rc = fc_store_load_state(cfg->state_dir, cfg->federation, &st, err, errlen);
  fc_model_spec spec;
  float *data = NULL;
  uint8_t sha[FC_SHA256_LEN];
  fc_store_model_info info;
  int resumed = rc == FEDC_OK;
  if (rc == FEDC_OK) {
    if ((rc = fc_store_read_model(cfg->state_dir, coord_model_key(c), st.version, &spec, &data, sha, &info, err,
                                  errlen)) != FEDC_OK)
      goto fail;
    if (!fc_digest_equal(sha, st.sha, FC_SHA256_LEN)) {
      snprintf(err, errlen, "state.json names a different SHA-256 than model v%llu", (unsigned long long)st.version);
      free(data);
      rc = FEDC_ERR_HASH;
      goto fail;
    }
    if (init_spec && !fc_model_spec_equal(init_spec, &spec)) {
      snprintf(err, errlen, "state directory %s holds a model of another shape than configured", cfg->state_dir);
      free(data);
      rc = FEDC_ERR_SHAPE;
      goto fail;
    }
  } else if (rc == FEDC_ERR_NOT_FOUND) {
    if (!init_spec || !init_params) {
      snprintf(err, errlen, "state directory %s is empty and no initial model was given", cfg->state_dir);
      rc = FEDC_ERR_INVALID;
      goto fail;
    }
    if ((rc = fc_model_spec_check(init_spec, err, errlen)) != FEDC_OK) goto fail;
    spec = *init_spec;
    size_t bytes = fc_model_numel(&spec) * sizeof(float);
    if (!(data = malloc(bytes))) {
      rc = FEDC_ERR_NOMEM;
      goto fail;
    }
    memcpy(data, init_params, bytes);
    st.version = 0;
    st.next_round = 1;
  } else {
    goto fail;
  }
  c->model = coord_model_new(st.version, &spec, data); /* owns data */
  if (!c->model) {
    free(data);
    rc = FEDC_ERR_NOMEM;
    goto fail;
  }
  memcpy(sha, c->model->sha, FC_SHA256_LEN);
  memcpy(st.sha, sha, FC_SHA256_LEN);
  if ((rc = coord_start_memory(cfg, &spec, err, errlen)) != FEDC_OK) goto fail;
  if (cfg->watermark_key[0] && (rc = fc_wm_create(cfg->watermark_key, cfg->state_dir, &spec, cfg->watermark_steps,
                                                  cfg->watermark_lr, &c->wm, err, errlen)) != FEDC_OK)
    goto fail;
  if (resumed && (rc = coord_manifest_load(c, c->model, &info, 1, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_anomaly_init(c, fc_model_numel(&spec), err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_drift_init(c, err, errlen)) != FEDC_OK) goto fail;
  fc_sopt_cfg soc;
  coord_sopt_cfg(cfg, &soc, err, errlen); /* checked in coord_cfg_check */
  /* The state file holds the moments and the average, each of the model's
   * size, and is one safetensors file: within its element limit, or no
   * version could ever be saved. */
  uint64_t nvec = (uint64_t)fc_sopt_nstate(soc.kind) + (soc.average > 0);
  if (nvec && fc_model_numel(&spec) > FC_MODEL_MAX_PARAMS / nvec) {
    snprintf(err, errlen, "server optimizer %s%s keeps %llu copies of the model's %llu parameters beside each version, "
             "over the state file's limit of %llu values: use sgd or avgm, or no --model-average",
             fc_sopt_name(soc.kind), soc.average > 0 ? " with --model-average" : "", (unsigned long long)nvec,
             (unsigned long long)fc_model_numel(&spec), (unsigned long long)FC_MODEL_MAX_PARAMS);
    rc = FEDC_ERR_TOO_LARGE;
    goto fail;
  }
  if ((rc = fc_sopt_create(&soc, fc_model_numel(&spec), &c->sopt)) != FEDC_OK) {
    snprintf(err, errlen, "out of memory for the server optimizer state");
    goto fail;
  }
  if (resumed && (rc = coord_sopt_load(c, st.version, c->model->sha, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_avg_init(c, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_calib_start(c, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = fc_store_read_rounds(cfg->state_dir, &c->rounds, &c->nrounds, err, errlen)) != FEDC_OK) goto fail;
  c->caprounds = c->nrounds;
  fc_engine_cfg ecfg = cfg->engine;
  if (cfg->dp_noise_multiplier > 0) {
    /* The budget spent so far: a restart never forgets it. */
    const double *orders;
    c->dp_norders = fc_dp_orders(&orders);
    double *next = malloc(c->dp_norders * sizeof *next);
    if (!next || !(c->dp_rdp = calloc(c->dp_norders, sizeof *c->dp_rdp)) ||
        !(c->dp_round_rdp = malloc(c->dp_norders * sizeof *c->dp_round_rdp))) {
      free(next);
      rc = FEDC_ERR_NOMEM;
      goto fail;
    }
    for (size_t i = 0; i < c->dp_norders; i++)
      c->dp_round_rdp[i] = fc_dp_rdp(cfg->engine.cohort_fraction, cfg->dp_noise_multiplier, orders[i]);
    double saved_clip = 0, eps_one = 0;
    rc = fc_store_read_dp(cfg->state_dir, c->dp_rdp, c->dp_norders, &c->dp_rounds, &saved_clip, err, errlen);
    /* Adaptive clipping resumes where it was (the clip is public: tasks announce it). */
    if (rc == FEDC_OK && cfg->dp_adaptive_quantile > 0 && saved_clip > 0) {
      double lo = c->cfg.dp_clip_min, hi = c->cfg.dp_clip_max, resumed_clip = fmin(fmax(saved_clip, lo), hi);
      if (resumed_clip != saved_clip)
        FC_WARN(MOD, "adaptive clipping: the saved clip %g is outside the range [%g, %g]: resuming at %g", saved_clip,
                lo, hi, resumed_clip);
      c->clip = (float)resumed_clip;
    }
    if (rc == FEDC_ERR_NOT_FOUND && st.completed > 0) {
      snprintf(err, errlen,
               "state directory %s has %llu rounds but no privacy accounting (dp.json): they ran without DP; "
               "start a new state directory to report a guarantee",
               cfg->state_dir, (unsigned long long)st.completed);
      rc = FEDC_ERR_INVALID;
    } else if ((rc == FEDC_OK || rc == FEDC_ERR_NOT_FOUND) && c->dp_rounds == 0 && cfg->dp_target_epsilon > 0 &&
               (eps_one = coord_dp_after_one_round(c, next)) > cfg->dp_target_epsilon) {
      snprintf(err, errlen, "dp_target_epsilon %g is below what a single round spends: epsilon %.4g (delta %g)",
               cfg->dp_target_epsilon, eps_one, cfg->dp_delta);
      rc = FEDC_ERR_INVALID;
    } else if (rc == FEDC_ERR_NOT_FOUND) {
      rc = FEDC_OK;
    }
    free(next);
    if (rc != FEDC_OK) goto fail;
    fc_dp_eps e;
    fc_dp_epsilon_from_rdp(orders, c->dp_rdp, c->dp_norders, cfg->dp_delta, &e);
    c->dp_eps = c->dp_rounds ? e.eps : 0;
    FC_INFO(MOD, "differential privacy: noise %g x clip %g%s, Poisson rate %g; %llu rounds so far, epsilon %.4g at "
                 "delta %g%s",
            cfg->dp_noise_multiplier, (double)c->clip, cfg->dp_adaptive_quantile > 0 ? " (adaptive)" : "",
            cfg->engine.cohort_fraction,
            (unsigned long long)c->dp_rounds, c->dp_eps, cfg->dp_delta, cfg->dp_target_epsilon > 0 ? "" : " (no target)");
    /* Poisson subsampling from secret randomness (not the configured seed). */
    ecfg.poisson = 1;
    if (fc_random_bytes((uint8_t *)&ecfg.sample_secret, sizeof ecfg.sample_secret) != FEDC_OK) {
      snprintf(err, errlen, "no randomness for the DP cohort sampling");
      rc = FEDC_ERR_CRYPTO;
      goto fail;
    }
  }

  /* From here on the state directory is created or written. */
  if ((rc = fc_store_open(cfg->state_dir, err, errlen)) != FEDC_OK) goto fail;
  if (cfg->audit_log && (rc = cfg->leader ? coord_ha_audit_open(c, err, errlen)
                                          : fc_audit_open(cfg->state_dir, &c->audit, err, errlen)) != FEDC_OK)
    goto fail;
  char hex[FC_SHA256_HEX_LEN];
  if (resumed) {
    FC_INFO(MOD, "resuming from %s: model v%llu, next round %llu, %llu rounds completed", cfg->state_dir,
            (unsigned long long)st.version, (unsigned long long)st.next_round, (unsigned long long)st.completed);
  } else {
    /* Signed, then announced naming its manifest, then written (coord_finalize's order). */
    if ((rc = coord_sign_version(c, c->model, 0, NULL, NULL, err, errlen)) == FEDC_OK)
      fc_audit_append(c->audit, "model",
                      coord_audit_manifest(json_pack("{s:I,s:I,s:n,s:s,s:I}", "version", (json_int_t)0, "round",
                                                     (json_int_t)0, "parent", "sha256", fc_hex(sha, FC_SHA256_LEN, hex),
                                                     "parameters", (json_int_t)fc_model_numel(&spec)),
                                           c->model));
    if (rc != FEDC_OK ||
        (rc = fc_store_write_model(cfg->state_dir, coord_model_key(c), 0, 0, &spec, c->model->data, sha, NULL, err,
                                   errlen)) != FEDC_OK ||
        (rc = fc_store_save_state(cfg->state_dir, cfg->federation, &st, err, errlen)) != FEDC_OK)
      goto fail;
    FC_INFO(MOD, "new federation state in %s: model v0 with %llu parameters", cfg->state_dir,
            (unsigned long long)fc_model_numel(&spec));
  }
  fc_audit_append(c->audit, "start", json_pack("{s:s,s:I,s:s,s:s}", "federation", cfg->federation, "version",
                                               (json_int_t)st.version, "sha256", fc_hex(sha, FC_SHA256_LEN, hex),
                                               "aggregator", cfg->aggregator));
  fc_audit_sync(c->audit);
  if (ecfg.async && !ecfg.async_hold_ms) { /* how long an upload holds its buffer place: 2 s, or 1 s per MiB */
    uint64_t per_mib = (fc_model_bytes(&c->model->spec) >> 20) * 1000;
    ecfg.async_hold_ms = per_mib > 2000 ? per_mib : 2000;
  }
  if ((rc = fc_engine_create(&ecfg, st.next_round, st.completed, st.version, st.sha, &c->engine)) != FEDC_OK)
    goto fail;
  if ((rc = coord_restore_admin_state(c, &st, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_eval_init(c, err, errlen)) != FEDC_OK) goto fail;
  if (cfg->dp_noise_multiplier > 0) {
    pthread_mutex_lock(&c->mu);
    coord_dp_check_budget_locked(c);
    pthread_mutex_unlock(&c->mu);
  }
  coord_agg_dims d;
  coord_agg_shape(cfg, &spec, &d);
  c->cfg.upload_slots = d.slots; /* what metrics report */
  FC_INFO(MOD, "upload staging: %d slots of %.1f MiB (%s)", d.slots, (double)d.slot_bytes / 1048576.0,
          cfg->upload_slots > 0 ? "--upload-slots" : "--upload-memory-mib / model size");
  fc_robust_cfg rcfg;
  coord_robust_cfg(cfg, &rcfg);
  if (d.robust && cfg->engine.secagg) {
    rc = fc_agg_robust_create(fc_model_numel(&spec), d.rows, 1, &rcfg, &c->bagg);
    if (rc == FEDC_OK) rc = fc_agg_secagg_create(d.entries, d.buckets, d.slots, &c->agg);
  } else if (d.robust) {
    rc = fc_agg_robust_create(fc_model_numel(&spec), d.rows, d.slots, &rcfg, &c->agg);
  } else {
    int frac = cfg->reproducible_sum ? fc_fixed_frac_bits(cfg->clip_norm, cfg->max_example_weight) : 0;
    rc = cfg->engine.secagg ? fc_agg_secagg_create(d.entries, 1, d.slots, &c->agg)
         : frac > 0         ? fc_agg_fedavg_create_fixed(fc_model_numel(&spec), d.slots, frac, cfg->agg_tier, &c->agg)
                            : fc_agg_fedavg_create(fc_model_numel(&spec), d.slots, &c->agg);
    if (rc == FEDC_OK && frac > 0)
      FC_INFO(MOD, "reproducible sums: int64 on the grid 2^-%d (clip %g x weight cap %llu)", frac,
              (double)cfg->clip_norm, (unsigned long long)cfg->max_example_weight);
  }
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot create aggregator: %s", fedc_strerror(rc));
    goto fail;
  }
  if (cfg->engine.secagg && cfg->secagg_bucket_seed)
    FC_WARN(MOD, "--secagg-bucket-seed is set (research): secure-aggregation buckets are drawn from it, so whoever "
                 "knows it can predict bucket-mates; leave it 0 in production");

  if ((rc = coord_tier_start(c, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_limits_start(c, err, errlen)) != FEDC_OK) goto fail;
  coord_limits_wrap(c, c->methods, sizeof c->methods / sizeof *c->methods); /* before any call is served */
  if ((rc = fc_server_run(c->server, err, errlen)) != FEDC_OK) goto fail;
  fc_accept_guard_cfg gc = {fc_server_port(c->server), cfg->fd_headroom, cfg->max_connections, cfg->connect_rate,
                            cfg->connect_burst, cfg->connect_rate_total, cfg->connections_per_address};
  if ((rc = fc_accept_guard_start(&gc)) != FEDC_OK) {
    snprintf(err, errlen, "cannot start the connection guard: %s", fedc_strerror(rc));
    goto fail;
  }
  c->guard_started = 1;
  if (pthread_create(&c->driver, NULL, coord_driver_main, c) != 0) {
    rc = FEDC_ERR_NOMEM;
    snprintf(err, errlen, "cannot start the round driver thread");
    goto fail;
  }
  c->driver_started = 1;
  if (c->http_fd >= 0 && (rc = coord_http_start(c, err, errlen)) != FEDC_OK) goto fail;
  char budget[160];
  FC_INFO(MOD, "federation '%s' serving on port %d (state %s, %s, cohort %u, min updates %u)", cfg->federation,
          fc_server_port(c->server), cfg->state_dir, budget_text(c, budget, sizeof budget), cfg->engine.cohort_size,
          cfg->engine.min_updates);
  pthread_mutex_lock(&c->mu); /* the driver runs */
  uint32_t first_wait = fc_engine_async_first_wait(c->engine);
  pthread_mutex_unlock(&c->mu);
  if (first_wait) FC_INFO(MOD, "async: the first buffer opens once %u clients are live (--min-clients)", first_wait);
  *out = c;
  return FEDC_OK;
fail:
  fc_coord_stop(c, 0);
  return rc;
}

int fc_coord_port(const fc_coord *c) { return fc_server_port(c->server); }

int fc_coord_done(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  int busy = fc_engine_eval_busy(c->engine); /* the final model's evaluation is part of the run */
  pthread_mutex_unlock(&c->mu);
  return es.state == FC_ENG_DONE && !busy;
}

void fc_coord_stop(fc_coord *c, int grace_ms) {
  if (!c) return;
  /* No new downloads or uploads start (waiters for a slot give up now, not
   * after stream_idle_ms); streams already running get the grace period. */
  pthread_mutex_lock(&c->dl_mu);
  c->closing = 1;
  pthread_mutex_unlock(&c->dl_mu);
  if (c->agg) c->agg->ops->close(c->agg);
  c->sa_abort = 1; /* a mask expansion in progress stops at its next block */
  /* Held SecAgg polls are answered now: the server waits for every parked call. */
  coord_sa_park_close(c);
  coord_ci_park_close(c);
  /* Stop accepting first, let in-flight calls end, then the driver. */
  if (c->server) fc_server_shutdown(c->server, grace_ms);
  if (c->guard_started) fc_accept_guard_stop();
  coord_tier_stop(c); /* no call uses the book any more */
  if (c->driver_started) {
    pthread_mutex_lock(&c->stop_mu);
    c->stopping = 1;
    pthread_cond_signal(&c->stop_cv);
    pthread_mutex_unlock(&c->stop_mu);
    pthread_join(c->driver, NULL);
  }
  fc_server_destroy(c->server);
  if (c->engine) {
    pthread_mutex_lock(&c->mu);
    coord_state_dirty_locked(c);
    pthread_mutex_unlock(&c->mu);
    coord_store_sync(c);
  }
  coord_http_stop(c); /* after the grace period, in which /readyz said 503 */
  coord_limits_stop(c); /* the refusal counts so far, before "stop" */
  if (c->audit) {
    char hex[FC_SHA256_HEX_LEN]; /* start's fields as they are now (no model: start failed) */
    model_ref *m = c->model;
    fc_audit_append(c->audit, "stop", json_pack("{s:s,s:o,s:o,s:s}", "federation", c->cfg.federation, "version",
                                                m ? json_integer((json_int_t)m->version) : json_null(), "sha256",
                                                m ? json_string(fc_hex(m->sha, FC_SHA256_LEN, hex)) : json_null(),
                                                "aggregator", c->cfg.aggregator));
    fc_audit_close(c->audit); /* syncs */
  }
  coord_resume_free(c); /* its slots, before the aggregator goes */
  if (c->agg) c->agg->ops->destroy(c->agg);
  if (c->bagg) c->bagg->ops->destroy(c->bagg);
  fc_sopt_destroy(c->sopt);
  free(c->sopt_backup);
  coord_model_unref(c->avg_model);
  coord_calib_stop(c);
  fc_wm_destroy(c->wm);
  coord_anomaly_free(c);
  coord_drift_free(c);
  coord_async_free(c);
  free(c->dp_rdp);
  free(c->dp_round_rdp);
  coord_sa_end(c);
  coord_eval_free(c);
  coord_sa_free(c);
  coord_sa_park_free(c);
  coord_ci_park_free(c);
  fc_engine_destroy(c->engine);
  coord_model_unref(c->model);
  coord_sign_free(c);
  fc_wipe(c->cfg.model_key, sizeof c->cfg.model_key);
  fc_wipe(c->store_key.key, sizeof c->store_key.key);
  free(c->rounds);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->stop_mu);
  pthread_cond_destroy(&c->stop_cv);
  pthread_mutex_destroy(&c->dl_mu);
  pthread_mutex_destroy(&c->up_mu);
  pthread_mutex_destroy(&c->store_mu);
  free(c);
}

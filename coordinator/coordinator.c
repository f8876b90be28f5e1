/*
 * coordinator.c - the coordinator process: the round engine (engine.c)
 * driven by gRPC handlers and one driver thread, the aggregator, the global
 * model and the state directory.
 *
 * Threads and locks:
 *   - gRPC event threads run the client handlers below (admin handlers run
 *     on the transport's admin pool). They never wait for a peer: uploads and
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
#define ROUNDS_KEPT 100000




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
}

/* ---- model snapshots ------------------------------------------------------------- */

static model_ref *model_new(uint64_t version, const fc_model_spec *spec, float *data) {
  model_ref *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  atomic_init(&m->refs, 1);
  m->version = version;
  m->spec = *spec;
  m->data = data;
  m->bytes = fc_model_numel(spec) * sizeof(float);
  fc_sha256(data, m->bytes, m->sha);
  return m;
}

static void model_unref(model_ref *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
    fc_signed_free(&m->man);
    free(m->data);
    free(m);
  }
}

void coord_model_unref(model_ref *m) { model_unref(m); }

static model_ref *model_get(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  model_ref *m = c->model;
  atomic_fetch_add(&m->refs, 1);
  pthread_mutex_unlock(&c->mu);
  return m;
}

/* ---- round history -------------------------------------------------------------- */

static int history_add(fc_coord *c, const fc_round_stats *r) {
  if (c->nrounds == c->caprounds) {
    if (c->nrounds >= ROUNDS_KEPT) {
      memmove(c->rounds, c->rounds + 1, (c->nrounds - 1) * sizeof *c->rounds);
      c->nrounds--;
    } else {
      size_t n = c->caprounds ? c->caprounds * 2 : 64;
      fc_round_stats *nr = realloc(c->rounds, n * sizeof *nr);
      if (!nr) return -1;
      c->rounds = nr;
      c->caprounds = n;
    }
  }
  c->rounds[c->nrounds++] = *r;
  return 0;
}

/* A federated evaluation into the record of the round whose model it
 * evaluated (the latest of that id; the line itself is owed by coord_eval.c). */
void coord_history_eval_locked(fc_coord *c, uint64_t round, const fc_round_eval *e) {
  for (size_t i = c->nrounds; i > 0; i--)
    if (c->rounds[i - 1].round == round) {
      c->rounds[i - 1].eval = *e;
      return;
    }
}

/* The state directory failed us: stop starting rounds until it works again. */
static void store_failed_locked(fc_coord *c, const char *err) {
  uint64_t now = fc_now_ms();
  snprintf(c->store_err, sizeof c->store_err, "%s", err);
  if (!c->store_blocked) {
    /* The backoff keeps growing across rounds that fail the same way (a
     * state.json write may succeed where a model write does not) and starts
     * over only once a round is published. */
    c->store_blocked = 1;
    c->store_backoff_ms = c->store_backoff_ms ? (c->store_backoff_ms * 2 > 60000 ? 60000 : c->store_backoff_ms * 2)
                                              : 1000;
    fc_engine_block(c->engine, 1);
    FC_ERROR(MOD, "%s: no new rounds until the state directory can be written (retrying in %llu ms)", err,
             (unsigned long long)c->store_backoff_ms);
  } else {
    c->store_backoff_ms = c->store_backoff_ms * 2 > 60000 ? 60000 : c->store_backoff_ms * 2;
    FC_WARN(MOD, "%s: still cannot write the state directory (next retry in %llu ms)", err,
            (unsigned long long)c->store_backoff_ms);
  }
  c->store_retry_at = now + c->store_backoff_ms;
}

/*
 * Persisting, outside `mu`. Writes (fsync'd) never run under `mu`: every
 * client handler on the event threads takes it, so a slow or hung disk would
 * stall all traffic. Under `mu`, changes only mark the state dirty (a snapshot
 * with a sequence number) and queue history records; store_sync, under
 * store_mu (one writer at a time), writes the newest snapshot, then the
 * history lines it owes, and takes `mu` only to copy and to account.
 */
static void state_dirty_locked(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  int open = es.state != FC_ENG_WAITING && es.state != FC_ENG_DONE;
  fc_store_state *st = &c->state_want;
  memset(st, 0, sizeof *st);
  st->version = es.version;
  memcpy(st->sha, es.sha, FC_SHA256_LEN);
  st->next_round = es.round + (uint64_t)open;
  st->open_round = open ? es.round : 0;
  st->completed = es.completed;
  st->abandoned = es.abandoned;
  st->paused = es.paused;
  st->budget = es.budget;
  st->config_rounds = c->cfg.engine.rounds;
  c->state_want_seq++;
}

/* --keep-versions: once state.json names `current` on disk, older versions
 * outside the policy go (store_prune.h says why that is safe). A failure
 * costs disk space, not correctness: it is logged, rounds go on. */
static void prune_versions(fc_coord *c, uint64_t current) {
  if (!c->cfg.keep_versions) return;
  fc_prune_stats ps;
  char err[300];
  if (fc_store_prune(c->cfg.state_dir, current, c->cfg.keep_versions, c->cfg.keep_every, &ps, err, sizeof err) !=
      FEDC_OK)
    FC_WARN(MOD, "pruning old model versions: %s", err);
  else if (ps.files)
    FC_DEBUG(MOD, "pruned %llu files (%llu bytes) of model versions before v%llu", (unsigned long long)ps.files,
             (unsigned long long)ps.bytes, (unsigned long long)current);
}

/* Write what is owed: state.json first (a crash before the history line
 * loses that line, never leaves a record of a version the state does not
 * have, see store.h), then the history lines, oldest first. Call without
 * `mu`. On failure the coordinator blocks new rounds (store_failed_locked). */
static int store_sync(fc_coord *c) {
  char err[300];
  int rc = FEDC_OK;
  pthread_mutex_lock(&c->store_mu);
  pthread_mutex_lock(&c->mu);
  fc_store_state st = c->state_want;
  uint64_t seq = c->state_want_seq;
  pthread_mutex_unlock(&c->mu);
  if (seq > c->state_written_seq) {
    rc = fc_store_save_state(c->cfg.state_dir, c->cfg.federation, &st, err, sizeof err);
    if (rc == FEDC_OK) c->state_written_seq = seq;
    if (rc == FEDC_OK) prune_versions(c, st.version);
  }
  while (rc == FEDC_OK) {
    fc_round_stats r;
    pthread_mutex_lock(&c->mu);
    int have = c->history_unsaved > 0;
    if (have) r = c->rounds[c->nrounds - c->history_unsaved];
    pthread_mutex_unlock(&c->mu);
    if (!have) break;
    if ((rc = fc_store_append_round(c->cfg.state_dir, &r, err, sizeof err)) != FEDC_OK) break;
    pthread_mutex_lock(&c->mu);
    /* history_add may have moved the window (ROUNDS_KEPT) but not the count
     * of trailing records still owed. */
    if (c->history_unsaved > 0) c->history_unsaved--;
    pthread_mutex_unlock(&c->mu);
  }
  if (rc == FEDC_OK) rc = coord_eval_sync(c, err, sizeof err); /* after the lines of the rounds they evaluate */
  if (rc != FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    store_failed_locked(c, err);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_unlock(&c->store_mu);
  return rc;
}

static void sopt_text(const fc_coord *c, char *buf, size_t len);

/* Under secure aggregation with DP noise the clients keep their training
 * loss to themselves (UpdateMeta.train_loss 0): the coordinator does not
 * know the round's mean. */
static int train_loss_unknown(const fc_coord *c) { return c->cfg.engine.secagg && c->cfg.dp_noise_multiplier > 0; }

static void record_round_locked(fc_coord *c) {
  const fc_round_stats *r = fc_engine_last_round(c->engine);
  fc_metrics_round(&c->metrics, r->completed, r->reason,
                   r->ended_ms > r->started_ms ? (double)(r->ended_ms - r->started_ms) / 1000.0 : 0, r->bytes_in,
                   r->bytes_out);
  if (history_add(c, r) == 0) {
    coord_sa_remaining(c, c->rounds[c->nrounds - 1].sa_remaining);
    coord_sa_blamed_record(c, &c->rounds[c->nrounds - 1]);
    coord_anomaly_record(c, &c->rounds[c->nrounds - 1]);
    sopt_text(c, c->rounds[c->nrounds - 1].server_opt, sizeof c->rounds[c->nrounds - 1].server_opt);
    if (c->cfg.dp_noise_multiplier > 0) {
      c->rounds[c->nrounds - 1].dp_epsilon = c->dp_eps;
      c->rounds[c->nrounds - 1].dp_clip = c->dp_round_clip;
      c->rounds[c->nrounds - 1].dp_noise = c->dp_round_noise;
    }
    /* Distributed DP: clients send no training loss (client/runtime.c), so
     * the round's mean is unknown, not 0: NaN, which the history writes as
     * null and `fedc rounds` shows as "-". */
    if (train_loss_unknown(c)) c->rounds[c->nrounds - 1].mean_loss = NAN;
    if (c->history_unsaved < c->nrounds) c->history_unsaved++;
  } else {
    FC_ERROR(MOD, "out of memory: round %llu missing from the history", (unsigned long long)r->round);
  }
  state_dirty_locked(c);
}

/* While blocked: retry writing what is owed. Call without `mu`. */
static void store_retry(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  int due = c->store_blocked && fc_now_ms() >= c->store_retry_at;
  pthread_mutex_unlock(&c->mu);
  if (!due || store_sync(c) != FEDC_OK) return;
  pthread_mutex_lock(&c->mu);
  c->store_blocked = 0;
  c->store_err[0] = 0;
  fc_engine_block(c->engine, 0);
  pthread_mutex_unlock(&c->mu);
  FC_INFO(MOD, "state directory %s is writable again: rounds resume", c->cfg.state_dir);
}

/* ---- driver: ticks the engine, finalizes rounds ----------------------------------- */

/* ---- server optimizer state: a copy taken before each step, put back if
 * the version is not published, and a file beside every version ---- */

static int sopt_save(fc_coord *c) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  size_t n = o->n;
  if (ns && !c->sopt_backup && !(c->sopt_backup = malloc((size_t)ns * n * sizeof(float)))) return FEDC_ERR_NOMEM;
  if (ns >= 1) memcpy(c->sopt_backup, o->m, n * sizeof(float));
  if (ns >= 2) memcpy(c->sopt_backup + n, o->v, n * sizeof(float));
  c->sopt_backup_step = o->step;
  return FEDC_OK;
}

static void sopt_restore(fc_coord *c) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  if (ns >= 1) memcpy(o->m, c->sopt_backup, o->n * sizeof(float));
  if (ns >= 2) memcpy(o->v, c->sopt_backup + o->n, o->n * sizeof(float));
  o->step = c->sopt_backup_step;
}

/* Save the optimizer state beside version `version` (of sha); *has_opt and
 * opt_sha: whether the method keeps state (sgd does not) and the payload's
 * SHA-256, which the version's manifest names. */
static int sopt_write(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], int *has_opt,
                      uint8_t opt_sha[FC_SHA256_LEN], char *why, size_t whylen) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  *has_opt = ns > 0;
  if (!ns) return FEDC_OK;
  return fc_store_write_opt(c->cfg.state_dir, coord_model_key(c), version, sha, fc_sopt_name(o->cfg.kind), o->step,
                            ns, o->m, o->v, o->n, opt_sha, why, whylen);
}

/* At start: the state saved with the current version, if any. A new
 * federation, or one that ran another optimizer (or none) so far, starts
 * from fresh moments, and says so. */
static int sopt_load(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], char *err, size_t errlen) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  if (!ns) return FEDC_OK;
  char why[600];
  uint8_t want[FC_SHA256_LEN], got[FC_SHA256_LEN];
  int rc = fc_store_read_opt(c->cfg.state_dir, coord_model_key(c), version, sha, fc_sopt_name(o->cfg.kind), ns, o->m,
                             o->v, o->n, &o->step, got, why, sizeof why);
  if (rc == FEDC_OK && c->model->man.msg && !c->adopted) {
    /* The next version is computed from this state: it must be the one the
     * signed manifest names, or it could steer what gets signed next. */
    if (!coord_manifest_opt_sha(c->model, want)) {
      FC_WARN(MOD, "server optimizer %s: the state file of model v%llu is not in its signed manifest: ignored, "
                   "starting from fresh state", fc_sopt_name(o->cfg.kind), (unsigned long long)version);
      fc_sopt_reset(o);
      return FEDC_OK;
    }
    if (!fc_digest_equal(want, got, FC_SHA256_LEN)) {
      snprintf(err, errlen, "server optimizer state of model v%llu differs from what its signed manifest names "
                            "(restore models/ from a backup)", (unsigned long long)version);
      return FEDC_ERR_SIGNATURE;
    }
  }
  if (rc == FEDC_OK) {
    FC_INFO(MOD, "server optimizer %s: state of model v%llu loaded (step %llu)", fc_sopt_name(o->cfg.kind),
            (unsigned long long)version, (unsigned long long)o->step);
    return FEDC_OK;
  }
  if (rc == FEDC_ERR_NOT_FOUND || rc == FEDC_ERR_FORMAT) {
    if (version > 0 || rc == FEDC_ERR_FORMAT)
      FC_WARN(MOD, "server optimizer %s starts from fresh state at model v%llu (%s)", fc_sopt_name(o->cfg.kind),
              (unsigned long long)version, rc == FEDC_ERR_NOT_FOUND ? "none saved with it" : why);
    return FEDC_OK;
  }
  snprintf(err, errlen, "server optimizer state: %s", why);
  return rc;
}

/* "adam lr=0.01 beta1=0.9 beta2=0.99 tau=0.001": for status and rounds.jsonl. */
static void sopt_text(const fc_coord *c, char *buf, size_t len) {
  const fc_sopt_cfg *o = &c->sopt->cfg;
  int w = snprintf(buf, len, "%s lr=%g", fc_sopt_name(o->kind), (double)o->lr);
  if (w < 0 || (size_t)w >= len) return;
  if (o->kind == FC_SOPT_AVGM)
    snprintf(buf + w, len - (size_t)w, " beta1=%g%s", (double)o->beta1, o->nesterov ? " nesterov" : "");
  else if (o->kind == FC_SOPT_ADAGRAD)
    snprintf(buf + w, len - (size_t)w, " beta1=%g tau=%g", (double)o->beta1, (double)o->tau);
  else if (o->kind > FC_SOPT_ADAGRAD)
    snprintf(buf + w, len - (size_t)w, " beta1=%g beta2=%g tau=%g", (double)o->beta1, (double)o->beta2, (double)o->tau);
}

/* ---- differential privacy (DP-FedAvg, McMahan et al. 2018, Algorithm 1
 * with the fixed-denominator estimator) ---- */

/* The composed RDP after one more round (rdp + the constant per-round RDP
 * of rate q and noise z, computed once at start) into next; its epsilon. */
static double dp_after_one_round(const fc_coord *c, double *next) {
  const double *orders;
  fc_dp_orders(&orders);
  for (size_t i = 0; i < c->dp_norders; i++) next[i] = c->dp_rdp[i] + c->dp_round_rdp[i];
  fc_dp_eps e;
  fc_dp_epsilon_from_rdp(orders, next, c->dp_norders, c->cfg.dp_delta, &e);
  return e.eps;
}

/* The noise multiplier z split between the update sum (*zu) and, with
 * adaptive clipping, the centred count of unclipped updates (std *sb):
 * Andrew et al. 2021, Theorem 1, z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2.
 * sigma_b is the configured one, else expected / 20 (their section 3.1),
 * never below z, so z_Delta exists and is at most 1.155 z. */
void coord_dp_split(const fc_coord *c, double expected, double *zu, double *sb) {
  double z = c->cfg.dp_noise_multiplier;
  *zu = z;
  *sb = 0;
  if (!(c->cfg.dp_adaptive_quantile > 0)) return;
  if (c->cfg.dp_count_noise > 0) {
    *sb = c->cfg.dp_count_noise; /* cfg_check: 2 sigma_b > z */
  } else {
    *sb = expected / 20.0;
    if (*sb < z) *sb = z;
  }
  *zu = 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4.0 * *sb * *sb));
}

/* delta holds the mean of `count` clipped updates of weight 1: make it
 * (sum + N(0, (z C)^2 I)) / (q N), q N the round's expected cohort, and count
 * the round in the accountant (saved before the version is published).
 *
 * Adaptive clipping (Andrew et al. 2021, Algorithm 1 and Theorem 1): the
 * sum gets noise z_Delta C, z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2, and the
 * count of unclipped updates, centred (sum of b_i - 1/2, sensitivity 1/2),
 * gets N(0, sigma_b^2); together they are one Gaussian mechanism of noise
 * multiplier z, which is what the accountant counts. Then
 * b = noisy centred count / (q N) + 1/2 and C <- C exp(-eta (b - gamma)).
 *
 * Under secure aggregation the clients added the noise (distributed discrete
 * Gaussian, coord_secagg.c): the sum and the centred count arrive noised. */
static int dp_privatize(fc_coord *c, float *delta, size_t n, uint32_t count, char *why, size_t whylen) {
  pthread_mutex_lock(&c->mu);
  double expected = c->dp_round_expected;
  double C = c->clip, unclipped = c->dp_unclipped, sa_centred = c->dp_sa_centred;
  pthread_mutex_unlock(&c->mu);
  if (!(expected > 0)) expected = 1;
  double z = c->cfg.dp_noise_multiplier, zu, sb, newclip = C;
  int adaptive = c->cfg.dp_adaptive_quantile > 0, distributed = c->cfg.engine.secagg;
  coord_dp_split(c, expected, &zu, &sb);
  fc_sscal((int)n, (float)count, delta, 1); /* the sum */
  int rc = FEDC_OK;
  float centred = (float)(unclipped - 0.5 * (double)count);
  if (distributed) centred = (float)sa_centred;
  else rc = fc_dp_add_gaussian(delta, n, zu * C, NULL);
  if (rc == FEDC_OK && adaptive && !distributed) rc = fc_dp_add_gaussian(&centred, 1, sb, NULL);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "cannot draw the privacy noise: %s", fedc_strerror(rc));
    return rc;
  }
  fc_sscal((int)n, (float)(1.0 / expected), delta, 1);
  if (adaptive) {
    /* Post-processing (no privacy cost), both paths: the fraction clamped
     * to [0, 1] bounds one round's step to exp(eta max(gamma, 1 - gamma))
     * however noisy the count or whatever one client put in its masked bit,
     * and the range (resolved at start) bounds where rounds can take it. */
    double b;
    newclip = fc_dp_clip_next(C, centred, expected, c->cfg.dp_adaptive_quantile, c->cfg.dp_clip_lr,
                              c->cfg.dp_clip_min, c->cfg.dp_clip_max, &b);
    FC_INFO(MOD, "adaptive clipping: noisy fraction of unclipped updates %.3f (target %g) over %u: clip %.5g -> %.5g",
            b, c->cfg.dp_adaptive_quantile, count, C, newclip);
  }
  double *next = malloc(c->dp_norders * sizeof *next);
  if (!next) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  double eps = dp_after_one_round(c, next);
  rc = fc_store_write_dp(c->cfg.state_dir, next, c->dp_norders, c->dp_rounds + 1, eps, c->cfg.dp_delta,
                         adaptive ? newclip : 0, why, whylen);
  if (rc == FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    memcpy(c->dp_rdp, next, c->dp_norders * sizeof *next);
    c->dp_rounds++;
    c->dp_eps = eps;
    c->dp_round_noise = z;
    c->clip = (float)newclip;
    pthread_mutex_unlock(&c->mu);
  }
  free(next);
  return rc;
}

/* Before any round: would one more spend more than the target? Then the
 * federation stops (budget = rounds completed) with the reason. */
static void dp_check_budget_locked(fc_coord *c) {
  if (!(c->cfg.dp_noise_multiplier > 0) || !(c->cfg.dp_target_epsilon > 0)) return;
  double *next = malloc(c->dp_norders * sizeof *next);
  if (!next) return;
  double eps_next = dp_after_one_round(c, next);
  free(next);
  if (eps_next <= c->cfg.dp_target_epsilon) return;
  if (c->dp_stop[0]) return; /* said already */
  snprintf(c->dp_stop, sizeof c->dp_stop,
           "privacy budget: epsilon %.4g spent; one more round would reach %.4g > target %g (delta %g)", c->dp_eps,
           eps_next, c->cfg.dp_target_epsilon, c->cfg.dp_delta);
  FC_WARN(MOD, "federation stops: %s", c->dp_stop);
  fc_engine_stop_budget(c->engine);
}

/* The watermark (watermark.h) goes into the new version after the server
 * optimizer's step and before it is hashed and signed: what clients get and
 * what the manifest vouches for is the watermarked model. Post-processing of
 * the aggregate: no client data, no privacy cost. A failed step publishes
 * the version without this round's fine-tuning, with a warning. */
static void coord_watermark(fc_coord *c, float *params, uint64_t version) {
  fc_wm_stats st;
  int rc = fc_wm_embed(c->wm, params, &st);
  if (rc != FEDC_OK)
    FC_WARN(MOD, "watermark: fine-tuning v%llu failed (%s): it goes out without this round's steps",
            (unsigned long long)version, fedc_strerror(rc));
  else
    FC_DEBUG(MOD, "watermark: v%llu: %u steps, triggers right %u -> %u of %d", (unsigned long long)version, st.steps,
             st.before, st.after, FC_WM_TRIGGERS);
}

static int finalize(fc_coord *c, uint64_t *version, uint8_t sha[FC_SHA256_LEN], char *why, size_t whylen) {
  model_ref *old = model_get(c);
  int stepped = 0;
  size_t n = fc_model_numel(&old->spec);
  float *next = malloc(n * sizeof *next), *delta = malloc(n * sizeof *delta);
  uint32_t count = 0;
  int rc = FEDC_ERR_NOMEM;
  if (!next || !delta) {
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  if (c->cfg.engine.secagg) {
    if ((rc = coord_sa_finish(c, delta, &count, why, whylen)) != FEDC_OK) goto out;
  } else if ((rc = c->agg->ops->round_finish(c->agg, delta, &count)) != FEDC_OK) {
    if (fc_robust_parse(c->cfg.aggregator) > FC_AGG_FEDAVG) snprintf(why, whylen, "%s", fc_agg_robust_why(c->agg));
    else snprintf(why, whylen, "aggregator has no committed update");
    goto out;
  }
  coord_anomaly_round(c, delta); /* the combined update, before DP noise and the server step */
  if (c->cfg.dp_noise_multiplier > 0 && (rc = dp_privatize(c, delta, n, count, why, whylen)) != FEDC_OK) goto out;
  memcpy(next, old->data, n * sizeof *next);
  /* The server optimizer's step, undone unless the version is published. */
  if ((rc = sopt_save(c)) != FEDC_OK) {
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  fc_sopt_step(c->sopt, next, delta);
  stepped = 1;
  if (c->wm) coord_watermark(c, next, old->version + 1);
  if (!fc_all_finite(next, n, NULL)) {
    rc = FEDC_ERR_NONFINITE;
    snprintf(why, whylen, "aggregated model has NaN/Inf values");
    goto out;
  }
  model_ref *m = model_new(old->version + 1, &old->spec, next);
  if (!m) {
    rc = FEDC_ERR_NOMEM;
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  next = NULL;
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  pthread_mutex_unlock(&c->mu);
  /* The optimizer state, then the manifest naming it and the model, then
   * the model file: no version reaches state.json without its manifest,
   * which vouches for the state the next version is computed from. */
  uint8_t opt_sha[FC_SHA256_LEN];
  int has_opt = 0, announced = 0;
  if ((rc = sopt_write(c, m->version, m->sha, &has_opt, opt_sha, why, whylen)) == FEDC_OK &&
      (rc = coord_sign_version(c, m, es.round, old->sha, has_opt ? opt_sha : NULL, why, whylen)) == FEDC_OK) {
    char hex[FC_SHA256_HEX_LEN], phex[FC_SHA256_HEX_LEN];
    fc_audit_append(c->audit, "model",
                    coord_audit_manifest(json_pack("{s:I,s:I,s:s,s:s,s:I}", "version", (json_int_t)m->version, "round",
                                                   (json_int_t)es.round, "parent", fc_hex(old->sha, FC_SHA256_LEN, phex),
                                                   "sha256", fc_hex(m->sha, FC_SHA256_LEN, hex), "updates",
                                                   (json_int_t)count),
                                         m));
    announced = 1;
    rc = fc_store_write_model(c->cfg.state_dir, coord_model_key(c), m->version, es.round, &m->spec, m->data, m->sha,
                              old->sha, why, whylen);
  }
  if (rc != FEDC_OK) {
    if (announced) /* a failure before the record needs none: the version was never announced */
      fc_audit_append(c->audit, "model_failed",
                      json_pack("{s:I,s:s}", "version", (json_int_t)m->version, "reason", why));
    model_unref(m);
    goto out;
  }
  stepped = 0; /* kept */
  pthread_mutex_lock(&c->mu);
  model_ref *prev = c->model;
  c->model = m;
  pthread_mutex_unlock(&c->mu);
  model_unref(prev);
  *version = m->version;
  memcpy(sha, m->sha, FC_SHA256_LEN);
  rc = FEDC_OK;
out:
  if (stepped) sopt_restore(c);
  model_unref(old);
  free(next);
  free(delta);
  return rc;
}

static void cancel_uploads(fc_coord *c, uint64_t round);

static uint64_t es_round(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.round;
}

static int es_state(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.state;
}

/* The round a closing stage belongs to: still running, or just abandoned. */
static uint64_t fc_engine_last_round_or_current(fc_coord *c) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  return es.state == FC_ENG_WAITING || es.state == FC_ENG_DONE ? fc_engine_last_round(c->engine)->round : es.round;
}

static void *driver_main(void *arg) {
  fc_coord *c = arg;
  pthread_mutex_lock(&c->stop_mu);
  while (!c->stopping) {
    pthread_mutex_unlock(&c->stop_mu);
    store_retry(c);
    coord_limits_tick(c, fc_now_ms());
    pthread_mutex_lock(&c->mu);
    /* The privacy budget is a hard limit: no round starts past it, whatever
     * an admin does to the round budget. */
    if (c->dp_stop[0]) fc_engine_stop_budget(c->engine);
    coord_anomaly_apply_locked(c, fc_now_ms());
    int act = fc_engine_tick(c->engine, fc_now_ms());
    if (act == FC_TICK_STARTED) {
      c->agg->ops->round_begin(c->agg);
      coord_anomaly_round_begin_locked(c);
      c->dp_unclipped = 0;
      c->dp_sa_centred = 0;
      /* Fixed at the start: the denominator, the noise split and (under
       * secure aggregation) the clients' noise all use this one. */
      c->dp_round_expected = fc_engine_expected_cohort(c->engine);
      c->dp_round_clip = c->clip;
      c->dp_round_noise = 0;
      fc_engine_status es;
      fc_engine_get_status(c->engine, fc_now_ms(), &es);
      FC_INFO(MOD, "round %llu started: %u of %u live clients selected (model v%llu)",
              (unsigned long long)es.round, es.selected, fc_engine_count_live(c->engine, fc_now_ms()),
              (unsigned long long)es.version);
      state_dirty_locked(c); /* the round id is spent: persisted before any update can count */
      char why[300];
      if (coord_sa_begin(c, why, sizeof why) != FEDC_OK) {
        fc_engine_finalize_failed(c->engine, why, fc_now_ms());
        act = FC_TICK_ABANDON;
      }
    } else if (act == FC_TICK_SA_CLOSE) {
      int was_masked = es_state(c) == FC_ENG_SA_MASKED;
      act = coord_sa_close(c);
      /* Masked inputs still streaming can never count now. */
      if (was_masked || act == FC_TICK_ABANDON) cancel_uploads(c, fc_engine_last_round_or_current(c));
      if (act == FC_TICK_NONE) act = FC_TICK_SA_CLOSE; /* no wait before the next tick */
    } else if (act == FC_TICK_REPLACED) {
      coord_log_replaced(c);
    }
    if (act == FC_TICK_ABANDON) {
      FC_WARN(MOD, "round %llu abandoned: %s", (unsigned long long)fc_engine_last_round(c->engine)->round,
              fc_engine_abandon_reason(c->engine));
      record_round_locked(c);
      cancel_uploads(c, fc_engine_last_round(c->engine)->round);
      coord_sa_end(c);
      coord_anomaly_abandon_locked(c);
    } else if (act == FC_TICK_AGGREGATE) {
      fc_engine_status es;
      fc_engine_get_status(c->engine, fc_now_ms(), &es);
      cancel_uploads(c, es.round);
    }
    pthread_mutex_unlock(&c->mu);
    /* After the training tick, so an evaluation's cohort is drawn from the
     * clients not in the round that tick started (coord_eval.c). */
    if (coord_eval_drive(c)) store_sync(c);
    if (act == FC_TICK_ABANDON) {
      const fc_round_stats *lr = NULL;
      pthread_mutex_lock(&c->mu);
      lr = fc_engine_last_round(c->engine);
      json_t *f = json_pack("{s:I,s:s}", "round", (json_int_t)lr->round, "reason", fc_engine_abandon_reason(c->engine));
      pthread_mutex_unlock(&c->mu);
      fc_audit_append(c->audit, "round_abandoned", f);
      fc_audit_sync(c->audit); /* once per round */
    }
    if (act == FC_TICK_STARTED || act == FC_TICK_ABANDON) store_sync(c);
    if (act == FC_TICK_AGGREGATE) {
      uint64_t version = 0;
      uint8_t sha[FC_SHA256_LEN];
      char why[300] = "";
      int rc = finalize(c, &version, sha, why, sizeof why);
      pthread_mutex_lock(&c->mu);
      if (rc == FEDC_OK) {
        fc_engine_published(c->engine, version, sha, fc_now_ms());
        dp_check_budget_locked(c);
        const fc_round_stats *r = fc_engine_last_round(c->engine);
        char hex[FC_SHA256_HEX_LEN], loss[32] = "-";
        if (!train_loss_unknown(c)) snprintf(loss, sizeof loss, "%.4f", r->mean_loss);
        FC_INFO(MOD, "round %llu completed: %u updates, %llu examples, loss %s -> model v%llu sha256 %.16s",
                (unsigned long long)r->round, r->participants, (unsigned long long)r->examples, loss,
                (unsigned long long)version, fc_hex(sha, FC_SHA256_LEN, hex));
      } else {
        FC_ERROR(MOD, "finalizing round failed: %s", why);
        fc_audit_append(c->audit, "round_abandoned", json_pack("{s:I,s:s}", "round", (json_int_t)es_round(c), "reason", why));
        fc_engine_finalize_failed(c->engine, why, fc_now_ms());
        if (rc == FEDC_ERR_IO) store_failed_locked(c, why);
      }
      record_round_locked(c);
      coord_sa_end(c);
      pthread_mutex_unlock(&c->mu);
      fc_audit_sync(c->audit); /* once per round */
      if (store_sync(c) == FEDC_OK && rc == FEDC_OK) {
        pthread_mutex_lock(&c->mu);
        if (!c->store_blocked) c->store_backoff_ms = 0;
        pthread_mutex_unlock(&c->mu);
      }
    }
    pthread_mutex_lock(&c->stop_mu);
    if (act == FC_TICK_NONE && !c->stopping) {
      struct timespec ts;
      fc_deadline_after_ms(&ts, 50);
      pthread_cond_timedwait(&c->stop_cv, &c->stop_mu, &ts);
    }
  }
  pthread_mutex_unlock(&c->stop_mu);
  return NULL;
}

/* ---- Coordinator service ----------------------------------------------------------- */

/* Audit: the first call made with each certificate. */
/* Audits the contact; 1 if the call must be refused as a second concurrent
 * connection of its identity (coord_anomaly.c): the caller then returns. */
int coord_audit_peer(fc_coord *c, fc_scall *call, const fc_peer *peer) {
  if (c->audit) fc_audit_contact(c->audit, peer->name, fc_role_name(peer->role), peer->cert_sha256, peer->addr);
  if (!coord_anomaly_seen(c, peer)) return 0;
  fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
                  "identity already connected from another address (refuse_concurrent_identity)", NULL);
  return 1;
}

/* A transfer that holds a staging slot or a snapshot must keep moving: after
 * a grace of stream_idle_ms it must average min_transfer_bps over the time
 * past the grace, else it is cut off (a peer sending one 1 KiB chunk every
 * 29 s held a staging slot for the whole round). */
static int too_slow(const fc_coord *c, uint64_t started_ms, uint64_t bytes) {
  uint64_t now = fc_now_ms(), grace = (uint64_t)c->cfg.stream_idle_ms;
  if (!c->cfg.min_transfer_bps || now < started_ms + grace) return 0;
  return (double)bytes < (double)c->cfg.min_transfer_bps * (double)(now - started_ms - grace) / 1000.0;
}

/* ---- model downloads (FetchModel, GetModel) ----------------------------------------
 * A download holds a reference to the snapshot it streams and, on the wire,
 * one message at a time: a reader that stops costs memory for one chunk, not a
 * thread, and is cancelled after stream_idle_ms without reading. Limits: one
 * download per identity; at most download_slots at once for callers outside
 * the current cohort, so clients not selected (or an attacker's many
 * identities) can never keep the cohort from fetching the model it must
 * train on: cohort members are not counted against the slots. */
typedef struct download {
  fc_coord *c;
  model_ref *m;
  fc_pb_header *hdr;
  uint64_t next_piece, pieces, skip; /* skip: chunks a resumed download leaves out (coord_resume.c) */
  uint64_t started_ms;
  int counted; /* holds one of the download_slots */
  int eval;    /* the model a federated evaluation evaluates (not the training round's bytes) */
  char who[80];
  struct download *next;
} download;

static void download_end(download *d) {
  if (!d) return;
  fc_coord *c = d->c;
  pthread_mutex_lock(&c->dl_mu);
  for (download **pp = &c->dl_list; *pp; pp = &(*pp)->next)
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  if (d->counted) c->downloads--;
  pthread_mutex_unlock(&c->dl_mu);
  model_unref(d->m);
  free(d->hdr);
  free(d);
}

/* Start a download for the caller, or finish the call with the refusal and
 * return NULL. May read an old version from disk (allow_old: admins only, on
 * their own pool). */
static download *download_begin(fc_coord *c, fc_scall *call, uint64_t version, int latest, int allow_old) {
  const fc_peer *peer = fc_scall_peer(call);
  download *d = calloc(1, sizeof *d);
  if (!d) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return NULL;
  }
  d->c = c;
  snprintf(d->who, sizeof d->who, "%s/%s", fc_role_name(peer->role), peer->name);
  /* Exempt from download_slots: the cohort (it must train) and admins (so
   * clients outside the cohort cannot lock them out of GetModel). */
  int in_cohort = peer->role == FC_ROLE_ADMIN;
  if (peer->role == FC_ROLE_CLIENT) {
    pthread_mutex_lock(&c->mu);
    in_cohort = fc_engine_in_round(c->engine, peer->name) || fc_engine_eval_member(c->engine, peer->name);
    pthread_mutex_unlock(&c->mu);
  }
  const char *refusal = NULL;
  pthread_mutex_lock(&c->dl_mu);
  int dup = 0;
  for (download *x = c->dl_list; x && !dup; x = x->next) dup = strcmp(x->who, d->who) == 0;
  if (c->closing) refusal = "coordinator shutting down, retry";
  else if (dup)
    refusal = "a model download for this identity is already in progress, retry";
  else if (!in_cohort && c->downloads >= c->cfg.download_slots)
    refusal = "coordinator busy: all model download slots taken, retry";
  if (!refusal) {
    d->counted = !in_cohort;
    c->downloads += d->counted;
    d->next = c->dl_list;
    c->dl_list = d;
  }
  pthread_mutex_unlock(&c->dl_mu);
  if (refusal) {
    free(d);
    /* dup: most often the caller's own cut stream, not yet seen to end (no
     * FIN reached us): a resuming client waits as told, keeping its bytes. */
    fc_scall_finish_retry(call, GRPC_STATUS_UNAVAILABLE, refusal, dup ? 1000 : 0);
    return NULL;
  }
  model_ref *m = model_get(c);
  model_ref *em = !latest && version != m->version && peer->role == FC_ROLE_CLIENT
                      ? coord_eval_model(c, peer->name, version)
                      : NULL;
  if (em) { /* an evaluation's model, superseded since it began */
    model_unref(m);
    m = em;
    d->eval = 1;
  }
  if (!latest && version != m->version) {
    char why[200];
    grpc_status_code code = GRPC_STATUS_NOT_FOUND;
    fc_model_spec spec;
    float *data = NULL;
    uint8_t sha[FC_SHA256_LEN];
    char err[300];
    if (!allow_old) {
      code = GRPC_STATUS_FAILED_PRECONDITION;
      snprintf(why, sizeof why, "model version %llu is not the current one (%llu)", (unsigned long long)version,
               (unsigned long long)m->version);
    } else if (version > m->version || fc_store_read_model(c->cfg.state_dir, coord_model_key(c), version, &spec,
                                                           &data, sha, NULL, err, sizeof err) != FEDC_OK) {
      snprintf(why, sizeof why, "no model version %llu (latest is %llu)", (unsigned long long)version,
               (unsigned long long)m->version);
    } else {
      code = GRPC_STATUS_OK;
    }
    model_unref(m);
    m = code == GRPC_STATUS_OK ? model_new(version, &spec, data) : NULL;
    if (code == GRPC_STATUS_OK && !m) {
      free(data);
      code = GRPC_STATUS_RESOURCE_EXHAUSTED;
      snprintf(why, sizeof why, "out of memory");
    } else if (m && coord_manifest_load(c, m, NULL, 0, err, sizeof err) != FEDC_OK) {
      FC_WARN(MOD, "GetModel v%llu: %s", (unsigned long long)version, err);
      model_unref(m);
      m = NULL;
      code = GRPC_STATUS_DATA_LOSS;
      snprintf(why, sizeof why, "model version %llu does not match its signed manifest", (unsigned long long)version);
    }
    if (code != GRPC_STATUS_OK) {
      download_end(d);
      fc_scall_finish(call, code, why, NULL);
      return NULL;
    }
  }
  d->m = m;
  d->pieces = fc_tensor_stream_pieces(m->bytes, c->cfg.chunk_bytes);
  if (!(d->hdr = malloc(sizeof *d->hdr))) {
    download_end(d);
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return NULL;
  }
  fc_pb_header_build(d->hdr, &m->spec, m->bytes, m->sha, c->cfg.chunk_bytes);
  d->started_ms = fc_now_ms();
  return d;
}

typedef struct emit_ctx {
  fc_scall *call;
  int async;
  const fc_signed *man; /* sent with the header; NULL fields: unsigned */
} emit_ctx;

static int emit_stream_msg(void *ctx, const Fedc__V1__TensorHeader *h, const Fedc__V1__TensorChunk *ch) {
  emit_ctx *e = ctx;
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  Fedc__V1__SignedManifest sm = FEDC__V1__SIGNED_MANIFEST__INIT;
  m.header = (Fedc__V1__TensorHeader *)h;
  m.chunk = (Fedc__V1__TensorChunk *)ch;
  if (h && e->man && e->man->msg) {
    sm.manifest.data = e->man->msg;
    sm.manifest.len = e->man->msg_len;
    sm.signature.data = e->man->sig;
    sm.signature.len = e->man->sig_len;
    sm.signer_certificate = e->man->cert;
    m.manifest = &sm;
  }
  int rc = e->async ? fc_scall_send_async(e->call, &m.base) : fc_scall_send(e->call, &m.base);
  return rc == 0 ? FEDC_OK : FEDC_ERR_UNAVAILABLE;
}

/* The whole stream sent: count its bytes into the round, finish OK. */
static void download_done_ok(download *d, fc_scall *call) {
  pthread_mutex_lock(&d->c->mu);
  if (!d->eval) fc_engine_add_bytes_out(d->c->engine, fc_scall_bytes_out(call));
  pthread_mutex_unlock(&d->c->mu);
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, NULL);
}

/* FetchModel, event-driven: one piece each time the previous send completed. */
static void fetch_next(fc_scall *call, void *state) {
  download *d = state;
  if (d->next_piece == 1) d->next_piece += d->skip; /* after the header */
  if (d->next_piece == d->pieces) {
    download_done_ok(d, call);
    return;
  }
  if (too_slow(d->c, d->started_ms, fc_scall_bytes_out(call))) {
    char why[200];
    snprintf(why, sizeof why, "download too slow: %llu bytes read in %.1f s (at least %llu B/s after %.1f s)",
             (unsigned long long)fc_scall_bytes_out(call), (fc_now_ms() - d->started_ms) / 1000.0,
             (unsigned long long)d->c->cfg.min_transfer_bps, d->c->cfg.stream_idle_ms / 1000.0);
    FC_WARN(MOD, "%s: %s", d->who, why);
    fc_scall_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED, why, NULL);
    return;
  }
  emit_ctx e = {call, 1, &d->m->man};
  fc_tensor_stream_piece(d->hdr, d->m->data, d->m->bytes, d->c->cfg.chunk_bytes, d->next_piece++, emit_stream_msg,
                         &e);
}

static void fetch_done(void *state) { download_end(state); }

static void h_fetch_model(fc_scall *call, void *ctx) {
  const Fedc__V1__FetchModelRequest *req = (const Fedc__V1__FetchModelRequest *)fc_scall_request(call);
  if (coord_audit_peer(ctx, call, fc_scall_peer(call))) return;
  download *d = download_begin(ctx, call, req->version, req->latest, 0);
  if (d && coord_fetch_resume(ctx, call, req, d->hdr, &d->skip) == FEDC_OK)
    fc_scall_stream_out(call, fetch_next, fetch_done, d);
  else download_end(d); /* refused: the call is finished */
}

/* GetModel (admins, on their own pool): may read an old version from disk. */
static void h_get_model(fc_scall *call, void *ctx) {
  const Fedc__V1__GetModelRequest *req = (const Fedc__V1__GetModelRequest *)fc_scall_request(call);
  coord_audit_peer(ctx, call, fc_scall_peer(call));
  download *d = download_begin(ctx, call, req->version, req->latest, 1);
  if (!d) return;
  emit_ctx e = {call, 0, &d->m->man};
  int rc = FEDC_OK;
  for (uint64_t i = 0; i < d->pieces && rc == FEDC_OK; i++)
    rc = fc_tensor_stream_piece(d->hdr, d->m->data, d->m->bytes, d->c->cfg.chunk_bytes, i, emit_stream_msg, &e);
  if (rc == FEDC_OK) download_done_ok(d, call);
  /* else the call is gone and already finished (fc_scall_send failed) */
  download_end(d);
}

static grpc_status_code verdict_status(int v) {
  switch (v) {
  case FC_UP_DUPLICATE: return GRPC_STATUS_ALREADY_EXISTS;
  case FC_UP_BUSY: return GRPC_STATUS_ABORTED;
  case FC_UP_LATE: return GRPC_STATUS_DEADLINE_EXCEEDED;
  case FC_UP_RATE_LIMITED: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_FAILED_PRECONDITION;
  }
}

static grpc_status_code err_status(int err) {
  switch (err) {
  case FEDC_ERR_HASH: return GRPC_STATUS_DATA_LOSS;
  case FEDC_ERR_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case FEDC_ERR_TIMEOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
  case FEDC_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

/* ---- UploadUpdate, event-driven ------------------------------------------------------
 * begin (first message: meta + header) -> a chunk per message, folded into a
 * staging slot -> end of stream: hash, NaN/Inf, norm, size, then commit under
 * `mu`. Every refusal settles the engine and the slot BEFORE the client hears
 * the verdict, so a client that retries at once does not find its refused
 * upload still "in progress". */
typedef struct upload {
  fc_coord *c;
  fc_scall *call;
  struct upload *next; /* c->uploads, under up_mu */
  int listed;
  model_ref *m;
  fc_chunk_rx rx;
  fc_agg_update *u;
  int begun; /* the engine counts this upload as in progress */
  int committed; /* under c->mu: folded; cancel_uploads must leave it alone */
  int masked;    /* secure aggregation: a masked input (u32), not a float delta */
  coord_codec *codec; /* compressed upload (coord_codec.c); NULL: folds as it is */
  uint32_t bucket; /* ... for this bucket's sum */
  int unclipped; /* UpdateMeta.unclipped: within the clip before clipping (adaptive clipping) */
  uint64_t round, round_deadline, examples;
  uint64_t started_ms, resumed_from; /* resumed_from: bytes kept from a cut stream (coord_resume.c) */
  double loss;
  Fedc__V1__UpdateMeta meta; /* the first message's: a cut stream's prefix is kept for it */
  char client[65];
} upload;

/* Audit: an accepted or refused update (norm < 0: not known or not ours to
 * know, e.g. a masked input). Written before the update counts. */
static void audit_update(fc_coord *c, const upload *up, const char *outcome, const char *reason, double norm) {
  if (!c->audit) return;
  char hex[FC_SHA256_HEX_LEN];
  json_t *f = json_pack("{s:s,s:I,s:s,s:b}", "client", up->client, "round", (json_int_t)up->round, "outcome", outcome,
                        "masked", up->masked);
  if (!f) return;
  if (up->rx.total) json_object_set_new(f, "sha256", json_string(fc_hex(up->rx.want_sha, FC_SHA256_LEN, hex)));
  if (norm >= 0) json_object_set_new(f, "norm", json_real(norm));
  if (up->resumed_from) json_object_set_new(f, "resumed_from", json_integer((json_int_t)up->resumed_from));
  if (reason) json_object_set_new(f, "reason", json_string(reason));
  fc_audit_append(c->audit, "update", f);
}


/* Settle the engine and the staging slot (refusal or the call gone). */
static void upload_settle(upload *up) {
  fc_coord *c = up->c;
  if (up->u) c->agg->ops->update_abort(c->agg, up->u);
  up->u = NULL;
  if (up->begun) {
    pthread_mutex_lock(&c->mu);
    fc_engine_upload_abort(c->engine, up->client, up->round);
    pthread_mutex_unlock(&c->mu);
  }
  up->begun = 0;
}

static void upload_refuse_retry(upload *up, fc_scall *call, grpc_status_code code, const char *why,
                                uint32_t retry_ms) {
  static const int reason[FC_MREF_N] = {FC_RF_INVALID, FC_RF_PRECONDITION, FC_RF_LATE, FC_RF_OTHER, FC_RF_LIMIT,
                                        FC_RF_OTHER};
  int cls = code == GRPC_STATUS_INVALID_ARGUMENT      ? FC_MREF_INVALID
            : code == GRPC_STATUS_FAILED_PRECONDITION ? FC_MREF_PRECONDITION
            : code == GRPC_STATUS_DEADLINE_EXCEEDED   ? FC_MREF_LATE
            : code == GRPC_STATUS_UNAVAILABLE         ? FC_MREF_BUSY
            : code == GRPC_STATUS_RESOURCE_EXHAUSTED || code == GRPC_STATUS_OUT_OF_RANGE ? FC_MREF_LIMIT
                                                                                          : FC_MREF_OTHER;
  /* "Busy: come back in N ms" (no staging slot free) judges nothing: not
   * audited. The rest: an identity's first few per interval in full, then
   * counts (coord_limits.c), so a flood of refusals cannot fill the disk. */
  if (cls != FC_MREF_BUSY && coord_refusal_note(up->c, up->client, reason[cls]))
    audit_update(up->c, up, "refused", why, -1);
  atomic_fetch_add(&up->c->metrics.uploads_refused[cls], 1);
  upload_settle(up);
  FC_WARN(MOD, "upload from %s rejected: %s", up->client, why);
  fc_scall_finish_retry(call, code, why, retry_ms);
}

static void upload_refuse(upload *up, fc_scall *call, grpc_status_code code, const char *why) {
  upload_refuse_retry(up, call, code, why, 0);
}

static void upload_done(void *state) {
  upload *up = state;
  if (!up) return;
  if (up->begun || up->u) FC_WARN(MOD, "upload from %s broke off after %llu of %llu bytes", up->client,
                                  (unsigned long long)up->rx.received, (unsigned long long)up->rx.total);
  /* The call is gone, not refused: keep what arrived, before it leaves the list (UploadOffset sees either). */
  if (up->begun && up->u && !up->codec) /* a compressed upload starts over (upload_end) */
    coord_upload_keep(up->c, up->client, up->round, &up->meta, up->bucket, &up->rx, &up->u, up->round_deadline, 0, 0);
  if (up->listed) {
    pthread_mutex_lock(&up->c->up_mu);
    for (upload **pp = &up->c->uploads; *pp; pp = &(*pp)->next)
      if (*pp == up) {
        *pp = up->next;
        break;
      }
    pthread_mutex_unlock(&up->c->up_mu);
    atomic_fetch_sub(&up->c->metrics.uploads_in_flight, 1);
  }
  upload_settle(up);
  fc_chunk_rx_free(&up->rx);
  coord_codec_free(up->codec);
  model_unref(up->m);
  free(up);
}

static void upload_chunk(fc_scall *call, void *state, const ProtobufCMessage *msg) {
  upload *up = state;
  fc_coord *c = up->c;
  char why[400];
  const Fedc__V1__UploadMsg *um = (const Fedc__V1__UploadMsg *)msg;
  if (fc_now_ms() >= up->round_deadline) {
    snprintf(why, sizeof why, "round %llu deadline passed during the upload (%llu of %llu bytes)",
             (unsigned long long)up->round, (unsigned long long)up->rx.received, (unsigned long long)up->rx.total);
    upload_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why);
    return;
  }
  if (!um->chunk || um->header || um->meta) {
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, "expected only chunks after the first upload message");
    return;
  }
  if (too_slow(c, up->started_ms, up->rx.received - up->resumed_from)) {
    snprintf(why, sizeof why, "upload too slow: %llu bytes in %.1f s (at least %llu B/s after %.1f s)",
             (unsigned long long)up->rx.received, (fc_now_ms() - up->started_ms) / 1000.0,
             (unsigned long long)c->cfg.min_transfer_bps, c->cfg.stream_idle_ms / 1000.0);
    upload_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why);
    return;
  }
  uint64_t at = up->rx.received;
  /* Only the last chunk may be small: a stream of tiny chunks would cost a
   * message (and an event) per few bytes of the model. */
  if (um->chunk->data.len < FC_CHUNK_MIN && at + um->chunk->data.len < up->rx.total) {
    snprintf(why, sizeof why, "chunk of %zu bytes at offset %llu: chunks before the last must be >= %u bytes",
             um->chunk->data.len, (unsigned long long)at, FC_CHUNK_MIN);
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  int err = fc_chunk_rx_feed(&up->rx, um->chunk->offset, um->chunk->data.data, um->chunk->data.len, why, sizeof why);
  if (err == FEDC_OK && up->codec)
    err = coord_codec_feed(up->codec, c->agg, up->u, um->chunk->data.data, um->chunk->data.len, why, sizeof why);
  else if (err == FEDC_OK)
    err = c->agg->ops->update_chunk(c->agg, up->u, at, um->chunk->data.data, um->chunk->data.len);
  if (err != FEDC_OK) upload_refuse(up, call, err_status(err), why);
}

static void upload_end(fc_scall *call, void *state) {
  upload *up = state;
  fc_coord *c = up->c;
  char why[400];
  /* gRPC ends a call whose link was cut like a stream the client closed early:
   * keep what arrived. Not a compressed upload: its decoder's place in the
   * block stream is not kept, so a cut one starts over (UploadOffset says 0). */
  int err = up->rx.received < up->rx.total && up->u && !up->codec
                ? coord_upload_keep(c, up->client, up->round, &up->meta, up->bucket, &up->rx, &up->u,
                                    up->round_deadline, why, sizeof why)
                : fc_chunk_rx_end(&up->rx, why, sizeof why);
  double slack = 0; /* how far quantization may move the norm past the clip (coord_codec.c) */
  if (err == FEDC_OK && up->codec) err = coord_codec_end(up->codec, &slack, why, sizeof why);
  if (err != FEDC_OK) {
    upload_refuse(up, call, err_status(err), why);
    return;
  }
  fc_agg_check chk;
  if (c->agg->ops->update_check(c->agg, up->u, &chk) != FEDC_OK) {
    snprintf(why, sizeof why, "update has a NaN/Inf value at parameter %zu", chk.bad_index);
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  double l2 = chk.l2;
  /* The clip norm is announced in the task (it changes between rounds only);
   * allow float rounding of the client's own clipping (relative 1e-4). */
  pthread_mutex_lock(&c->mu);
  float clip = c->clip;
  pthread_mutex_unlock(&c->mu);
  if (clip > 0 && l2 > clip * (1.0 + 1e-4) + slack) {
    snprintf(why, sizeof why, "update L2 norm %.6g exceeds the clip norm %.6g", l2, (double)clip);
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  double weight = (double)(up->examples < c->cfg.max_example_weight ? up->examples : c->cfg.max_example_weight);
  if (c->cfg.dp_noise_multiplier > 0) weight = 1; /* DP: uniform weights bound one client's effect by the clip */
  /* Even with clipping off, one update must not overflow the aggregate and
   * so abandon the round for everyone else. */
  if (chk.amax * weight > FC_AGG_MAX_WEIGHTED_ABS) {
    snprintf(why, sizeof why, "update too large: max |value| %.3g x weight %.0f exceeds %.0e", chk.amax, weight,
             FC_AGG_MAX_WEIGHTED_ABS);
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  /* One pass over the update for the anomaly scores, outside the lock. */
  struct fc_anomaly_meas *meas = up->masked ? NULL : coord_anomaly_measure(c, up->u, l2);
  pthread_mutex_lock(&c->mu);
  /* The round record counts the examples that carried weight. */
  int v = fc_engine_upload_commit(c->engine, up->client, up->round, (uint64_t)weight, up->loss,
                                  fc_scall_bytes_in(call), fc_now_ms());
  if (v == FC_UP_OK) {
    audit_update(c, up, "accepted", NULL, up->masked ? -1 : l2); /* before it counts */
    atomic_fetch_add(&c->metrics.uploads_accepted, 1);
    c->agg->ops->update_commit(c->agg, up->u, weight);
    if (up->unclipped && !up->masked) c->dp_unclipped++;
    up->committed = 1; /* its OK is on the way: a closing round must not cancel it */
    if (up->masked) coord_sa_masked_done(c, up->client);
    coord_anomaly_commit_locked(c, up->client, meas);
    meas = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  free(meas);
  up->begun = 0; /* the engine has settled this upload either way */
  if (v != FC_UP_OK) {
    snprintf(why, sizeof why, "update refused: %s", fc_upload_verdict_text(v));
    upload_refuse(up, call, verdict_status(v), why);
    return;
  }
  up->u = NULL; /* committed: the slot went back with it */
  if (up->masked)
    FC_INFO(MOD, "round %llu: masked input from %s accepted (loss %.4f)", (unsigned long long)up->round, up->client,
            up->loss);
  else
    FC_INFO(MOD, "round %llu: update from %s accepted (%llu examples, norm %.4g, loss %.4f)",
            (unsigned long long)up->round, up->client, (unsigned long long)up->examples, l2, up->loss);
  Fedc__V1__UploadResponse resp = FEDC__V1__UPLOAD_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

static void h_upload(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__UploadMsg *first = (const Fedc__V1__UploadMsg *)fc_scall_request(call);
  if (coord_audit_peer(c, call, peer)) return;
  char why[400] = "";
  upload *up = calloc(1, sizeof *up);
  if (!up) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  up->c = c;
  up->m = model_get(c);
  snprintf(up->client, sizeof up->client, "%s", peer->name);
  if (!first->meta || !first->header) {
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, "first upload message must carry meta and header");
    upload_done(up);
    return;
  }
  up->round = first->meta->round;
  up->meta = *first->meta;
  up->examples = first->meta->num_examples;
  up->loss = first->meta->train_loss;
  up->unclipped = first->meta->unclipped;
  fc_engine_status es;
  fc_model_spec masked_spec;
  char sa_why[300] = "";
  int sa_err = FEDC_OK;
  up->masked = first->meta->masked;
  pthread_mutex_lock(&c->mu);
  int v = fc_engine_upload_begin(c->engine, peer->name, up->round, first->meta->model_version, fc_now_ms());
  double clip_now = c->clip;
  uint32_t retry = v == FC_UP_RATE_LIMITED ? fc_engine_retry_ms(c->engine) : 0;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  if (v == FC_UP_OK && c->cfg.engine.secagg) {
    sa_err = up->masked ? coord_sa_masked_begin(c, peer->name, &masked_spec, &up->bucket, sa_why, sizeof sa_why)
                        : FEDC_ERR_REJECTED;
    if (!up->masked) snprintf(sa_why, sizeof sa_why, "this federation runs secure aggregation: send a masked input");
    if (sa_err != FEDC_OK) {
      fc_engine_upload_abort(c->engine, peer->name, up->round);
      v = -1;
    }
  } else if (v == FC_UP_OK && up->masked) {
    sa_err = FEDC_ERR_REJECTED;
    snprintf(sa_why, sizeof sa_why, "this federation does not run secure aggregation: masked input refused");
    fc_engine_upload_abort(c->engine, peer->name, up->round);
    v = -1;
  }
  if (v == FC_UP_OK) {
    /* Listed under `mu`, with the engine's begin: a round closing right
     * after cannot miss it in cancel_uploads. */
    up->call = call;
    pthread_mutex_lock(&c->up_mu);
    up->next = c->uploads;
    c->uploads = up;
    up->listed = 1;
    atomic_fetch_add(&c->metrics.uploads_in_flight, 1);
    pthread_mutex_unlock(&c->up_mu);
  }
  pthread_mutex_unlock(&c->mu);
  /* Past the round's deadline the update can never be committed: stop
   * receiving it then, or a trickling upload would hold a staging slot into
   * later rounds and lock out their uploads. */
  up->round_deadline = es.round_started_ms > UINT64_MAX - c->cfg.engine.round_ms
                           ? UINT64_MAX
                           : es.round_started_ms + c->cfg.engine.round_ms;
  /* A masked input belongs to a later stage with its own deadline: the
   * engine's commit checks it and closing the stage cancels the upload. */
  if (up->masked) up->round_deadline = UINT64_MAX;
  grpc_status_code code = GRPC_STATUS_OK;
  if (v == -1) {
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "%s", sa_why);
  } else if (v != FC_UP_OK) {
    code = verdict_status(v);
    snprintf(why, sizeof why, "update refused: %s (round %llu)", fc_upload_verdict_text(v),
             (unsigned long long)up->round);
  } else {
    up->begun = 1;
    int err;
    const fc_model_spec *want = up->masked ? &masked_spec : &up->m->spec;
    uint64_t want_bytes = up->masked ? fc_model_bytes(&masked_spec) : up->m->bytes;
    if (up->examples == 0 && !up->masked) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
      snprintf(why, sizeof why, "update reports 0 examples");
    } else if (!(up->loss >= 0 && up->loss <= FC_MAX_TRAIN_LOSS)) {
      /* A loss is a mean of non-negative per-example losses; the bound keeps
       * the round's mean loss meaningful whatever one client reports. */
      code = GRPC_STATUS_INVALID_ARGUMENT;
      snprintf(why, sizeof why, "update reports train_loss %g: must be finite and in [0, %g]", up->loss,
               FC_MAX_TRAIN_LOSS);
    } else if ((err = coord_codec_begin(c, first->meta, up->masked, fc_model_numel(&up->m->spec), clip_now, &want,
                                        &want_bytes, &up->codec, why, sizeof why)) != FEDC_OK) {
      code = err_status(err);
    } else if ((code = coord_upload_open(c, &(coord_upload_args){up->client, up->round, first, want, want_bytes,
                                                                   up->bucket},
                                         &up->rx, &up->u, &up->resumed_from, &retry, why, sizeof why))) {
      /* refused: a bad header, busy (no staging slot), or a resume that does not fit (coord_resume.c) */
    } else if (up->masked && fc_agg_secagg_route(c->agg, up->u, up->bucket) != FEDC_OK) {
      code = GRPC_STATUS_INTERNAL;
      snprintf(why, sizeof why, "secure aggregation bucket %u has no sum", up->bucket + 1);
    }
  }
  if (code != GRPC_STATUS_OK) {
    upload_refuse_retry(up, call, code, why, retry);
    upload_done(up);
    return;
  }
  up->started_ms = fc_now_ms();
  fc_scall_stream_in(call, upload_chunk, upload_end, upload_done, up);
}

/* The round closed: uploads still streaming can never be committed. Cancel
 * them now, so their staging slots are free for the next round's uploads
 * (rather than when their next chunk arrives, which a trickling peer can put
 * off for stream_idle_ms). Uploads already committed are sending their OK:
 * left alone (cancelling one told a client whose update counted that it did
 * not). Called with c->mu held, which orders it with the commit. */
static void cancel_uploads(fc_coord *c, uint64_t round) {
  pthread_mutex_lock(&c->up_mu);
  for (upload *up = c->uploads; up; up = up->next)
    if (up->round == round && !up->committed)
      fc_scall_cancel(up->call, GRPC_STATUS_DEADLINE_EXCEEDED, "the round closed during the upload");
  pthread_mutex_unlock(&c->up_mu);
  coord_resume_round_closed(c, round);
}

int coord_upload_streaming(fc_coord *c, const char *client, uint64_t round) {
  int open = 0;
  pthread_mutex_lock(&c->up_mu);
  for (upload *up = c->uploads; up && !open; up = up->next) open = up->round == round && !strcmp(up->client, client);
  pthread_mutex_unlock(&c->up_mu);
  return open;
}

/* ---- Admin service --------------------------------------------------------------- */

static void h_status(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  coord_audit_peer(c, call, fc_scall_peer(call));
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  uint32_t live = fc_engine_count_live(c->engine, fc_now_ms());
  uint64_t params = fc_model_numel(&c->model->spec);
  char storage_error[sizeof c->store_err];
  snprintf(storage_error, sizeof storage_error, "%s", c->store_blocked ? c->store_err : "");
  pthread_mutex_unlock(&c->mu);
  Fedc__V1__StatusResponse r = FEDC__V1__STATUS_RESPONSE__INIT;
  r.round_budget = es.budget;
  r.storage_error = storage_error;
  char sopt[80], dp[384] = "";
  sopt_text(c, sopt, sizeof sopt);
  r.server_optimizer = sopt;
  if (c->cfg.dp_noise_multiplier > 0) {
    pthread_mutex_lock(&c->mu);
    char range[64] = "";
    if (c->cfg.dp_adaptive_quantile > 0)
      snprintf(range, sizeof range, " adaptive in [%.4g, %.4g]", c->cfg.dp_clip_min, c->cfg.dp_clip_max);
    snprintf(dp, sizeof dp, "epsilon %.4g at delta %g after %llu rounds (noise %g, rate %g, clip %.4g%s%s%s)%s%s",
             c->dp_eps, c->cfg.dp_delta, (unsigned long long)c->dp_rounds, c->cfg.dp_noise_multiplier,
             c->cfg.engine.cohort_fraction, (double)c->clip, range,
             c->cfg.dp_target_epsilon > 0 ? ", target " : "",
             c->cfg.dp_target_epsilon > 0 ? "set" : "", c->dp_stop[0] ? "; stopped: " : "", c->dp_stop);
    pthread_mutex_unlock(&c->mu);
    r.dp = dp;
    r.dp_epsilon = c->dp_eps;
  }
  r.federation = c->cfg.federation;
  r.state = (char *)fc_engine_state_name(es.state);
  r.round = es.round;
  r.global_version = es.version;
  r.global_sha256.data = es.sha;
  r.global_sha256.len = FC_SHA256_LEN;
  r.clients_known = es.known;
  r.clients_active = live;
  r.updates_received = es.received;
  r.cohort_size = es.selected;
  r.paused = es.paused;
  r.rounds_completed = es.completed;
  r.rounds_abandoned = es.abandoned;
  r.uptime_ms = fc_now_ms() - c->started_ms;
  r.model_params = params;
  r.protocol_major = FC_PROTOCOL_MAJOR;
  r.protocol_minor = FC_PROTOCOL_MINOR;
  Fedc__V1__EligibilityStatus el = FEDC__V1__ELIGIBILITY_STATUS__INIT;
  char policy[256];
  coord_elig_status(c, &el, policy, sizeof policy);
  r.eligibility = &el;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
}

static void h_rounds(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__RoundsRequest *req = (const Fedc__V1__RoundsRequest *)fc_scall_request(call);
  coord_audit_peer(c, call, fc_scall_peer(call));
  pthread_mutex_lock(&c->mu);
  size_t n = c->nrounds, first = 0;
  if (req->limit && req->limit < n) first = n - req->limit;
  /* Cap the reply well under the client's 4 MiB receive limit (~150 B each). */
  if (n - first > 20000) first = n - 20000;
  size_t k = n - first;
  Fedc__V1__RoundRecord *recs = calloc(k ? k : 1, sizeof *recs);
  Fedc__V1__RoundRecord **ptrs = calloc(k ? k : 1, sizeof *ptrs);
  fc_round_stats *copy = calloc(k ? k : 1, sizeof *copy);
  char *(*blamed)[FC_ROUND_BLAMED_MAX] = calloc(k ? k : 1, sizeof *blamed);
  /* Federated evaluation: each record's, and those due or running. */
  Fedc__V1__EvalRecord *evs = calloc(k ? k : 1, sizeof *evs);
  Fedc__V1__EvalMetric(*evm)[FC_EVAL_METRICS_MAX] = calloc(k ? k : 1, sizeof *evm);
  Fedc__V1__EvalMetric *(*evp)[FC_EVAL_METRICS_MAX] = calloc(k ? k : 1, sizeof *evp);
  coord_anomaly_pb *anp = calloc(k ? k : 1, sizeof *anp);
  uint64_t ev_next = 0, ev_due = fc_engine_eval_pending_round(c->engine, &ev_next);
  if (recs && ptrs && copy && k) memcpy(copy, c->rounds + first, k * sizeof *copy);
  pthread_mutex_unlock(&c->mu);
  if (!recs || !ptrs || !copy || !blamed || !evs || !evm || !evp || !anp) {
    free(anp);
    free(recs);
    free(ptrs);
    free(copy);
    free(blamed);
    free(evs);
    free(evm);
    free(evp);
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  for (size_t i = 0; i < k; i++) {
    Fedc__V1__RoundRecord *r = &recs[i];
    const fc_round_stats *s = &copy[i];
    fedc__v1__round_record__init(r);
    r->round = s->round;
    r->outcome = s->completed ? "completed" : "abandoned";
    r->version = s->version;
    r->participants = s->participants;
    r->selected = s->selected;
    r->examples = s->examples;
    r->mean_train_loss = (float)s->mean_loss;
    r->bytes_in = s->bytes_in;
    r->bytes_out = s->bytes_out;
    r->started_unix_ms = s->started_ms;
    r->ended_unix_ms = s->ended_ms;
    if (s->completed) {
      r->sha256.data = (uint8_t *)s->sha;
      r->sha256.len = FC_SHA256_LEN;
    }
    r->reason = (char *)s->reason;
    r->dp_epsilon = s->dp_epsilon;
    r->dp_clip = s->dp_clip;
    r->dp_noise = s->dp_noise;
    r->server_optimizer = (char *)s->server_opt;
    if (s->sa_remaining[0]) {
      r->n_secagg_remaining = 5;
      r->secagg_remaining = (uint32_t *)s->sa_remaining;
    }
    r->secagg_blamed_count = s->sa_nblamed;
    r->n_secagg_blamed = s->sa_nblamed < FC_ROUND_BLAMED_MAX ? s->sa_nblamed : FC_ROUND_BLAMED_MAX;
    for (size_t b = 0; b < r->n_secagg_blamed; b++) blamed[i][b] = (char *)s->sa_blamed[b];
    r->secagg_blamed = blamed[i];
    int pending = s->completed && (s->round == ev_due || s->round == ev_next);
    if (s->eval.outcome || pending) {
      coord_eval_pb(&s->eval, pending, &evs[i], evm[i], evp[i]);
      r->eval = &evs[i];
    }
    if (coord_anomaly_round_pb(s, &anp[i])) r->anomaly = &anp[i].m;
    ptrs[i] = r;
  }
  /* The newest records that fit well under the 4 MiB receive limit (names
   * and reasons make some records longer than the estimate above). */
  size_t from = k, bytes = 0;
  while (from > 0 && (bytes += protobuf_c_message_get_packed_size(&recs[from - 1].base) + 8) < (3u << 20)) from--;
  Fedc__V1__RoundsResponse resp = FEDC__V1__ROUNDS_RESPONSE__INIT;
  resp.n_rounds = k - from;
  resp.rounds = ptrs + from;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  free(recs);
  free(ptrs);
  free(copy);
  free(blamed);
  free(evs);
  free(evm);
  free(evp);
  free(anp);
}

static void h_round_control(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__RoundControlRequest *req = (const Fedc__V1__RoundControlRequest *)fc_scall_request(call);
  const fc_peer *peer = fc_scall_peer(call);
  coord_audit_peer(c, call, peer);
  const char *action = req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__PAUSE    ? "pause"
                       : req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__RESUME ? "resume"
                       : req->op == FEDC__V1__ROUND_CONTROL_REQUEST__OP__START  ? "start"
                                                                               : NULL;
  if (action)
    fc_audit_append(c->audit, "admin", json_pack("{s:s,s:s,s:I}", "name", peer->name, "action", action,
                                                 "extra_rounds", (json_int_t)req->extra_rounds));
  pthread_mutex_lock(&c->mu);
  switch (req->op) {
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__PAUSE: fc_engine_pause(c->engine, 1); break;
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__RESUME: fc_engine_pause(c->engine, 0); break;
  case FEDC__V1__ROUND_CONTROL_REQUEST__OP__START:
    fc_engine_pause(c->engine, 0);
    if (req->extra_rounds) fc_engine_add_rounds(c->engine, req->extra_rounds);
    break;
  default:
    pthread_mutex_unlock(&c->mu);
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown round control op", NULL);
    return;
  }
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  state_dirty_locked(c); /* pause and budget survive a restart */
  pthread_mutex_unlock(&c->mu);
  store_sync(c);
  char extra[48] = "", budget[48] = "no round budget";
  if (req->extra_rounds) snprintf(extra, sizeof extra, " (%u more rounds)", req->extra_rounds);
  if (es.budget) snprintf(budget, sizeof budget, "round budget %llu", (unsigned long long)es.budget);
  FC_INFO(MOD, "admin %s: %s%s: %s, %s", peer->name, action, extra, es.paused ? "paused" : "not paused", budget);
  Fedc__V1__RoundControlResponse r = FEDC__V1__ROUND_CONTROL_RESPONSE__INIT;
  r.paused = es.paused;
  r.state = (char *)fc_engine_state_name(es.state);
  r.round_budget = es.budget;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
}

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
  m->request = req;
  m->handler = h;
  m->ctx = ctx;
}

/* The server optimizer's settings from the coordinator's. */
static int sopt_cfg(const fc_coord_cfg *cfg, fc_sopt_cfg *o, char *err, size_t errlen) {
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
  const char *no = cfg->dp_noise_multiplier > 0 ? "differential privacy"
                   : cfg->engine.cohort_size == 0 ? "a cohort fraction (it needs a fixed cohort: its arena holds "
                                                    "cohort x model)"
                                                  : NULL;
  if (no) {
    snprintf(err, errlen, "aggregator %s cannot be combined with %s", cfg->aggregator, no);
    return FEDC_ERR_INVALID;
  }
  char why[200];
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

/* What the library refuses whatever its caller checked: each of these would
 * silently change meaning (no federation check, zero weights, no clipping). */
static int cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
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
  if (sopt_cfg(cfg, &so, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (robust_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
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
  if (cfg->engine.secagg && cfg->secagg_t == 1) {
    snprintf(err, errlen, "secagg threshold t must be at least 2 (0 = automatic)");
    return FEDC_ERR_INVALID;
  }
  if (coord_sa_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (coord_eval_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  return FEDC_OK;
}

/* Admin state and counters from state.json (all 0 for a new state), and a
 * record for a round the previous process left open: a crash or a stop
 * mid-round burns that round id, and operators must see no silent gap. */
static int restore_admin_state(fc_coord *c, const fc_store_state *st, char *err, size_t errlen) {
  uint64_t budget = c->cfg.engine.rounds, abandoned = st->abandoned;
  if (st->has_budget && st->config_rounds == c->cfg.engine.rounds) {
    budget = st->budget; /* e.g. raised by `fedc round start --rounds N` */
  } else if (st->has_budget && st->budget != c->cfg.engine.rounds) {
    FC_INFO(MOD, "round budget %llu from the configuration replaces the stored %llu (configured before: %llu)",
            (unsigned long long)c->cfg.engine.rounds, (unsigned long long)st->budget,
            (unsigned long long)st->config_rounds);
  }
  if (st->open_round) {
    int recorded = c->nrounds && c->rounds[c->nrounds - 1].round == st->open_round;
    if (!recorded) {
      fc_round_stats r;
      memset(&r, 0, sizeof r);
      r.round = st->open_round;
      r.started_ms = r.ended_ms = fc_now_ms();
      snprintf(r.reason, sizeof r.reason, "coordinator restarted during the round");
      int rc = fc_store_append_round(c->cfg.state_dir, &r, err, errlen);
      if (rc != FEDC_OK) return rc;
      history_add(c, &r);
      abandoned++;
      FC_WARN(MOD, "round %llu was open when the coordinator stopped: recorded as abandoned",
              (unsigned long long)st->open_round);
    }
  }
  pthread_mutex_lock(&c->mu);
  fc_engine_restore(c->engine, abandoned, st->paused, budget);
  state_dirty_locked(c);
  pthread_mutex_unlock(&c->mu);
  int rc = store_sync(c);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "%s", c->store_err);
    return rc;
  }
  if (st->paused)
    FC_WARN(MOD, "federation is paused (by an admin before the restart): `fedc round resume` continues it");
  return FEDC_OK;
}

/* The round budget in effect, as `fedc status` reports it: the configured
 * one, or the one an admin set before a restart (restore_admin_state). */
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
  int rc = cfg_check(cfg, err, errlen);
  if (rc != FEDC_OK) return rc;
  fc_coord *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  c->cfg = *cfg;
  c->clip = cfg->clip_norm;
  if (cfg->dp_noise_multiplier > 0 && cfg->dp_adaptive_quantile > 0) /* checked by cfg_check: the resolved range */
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
             &fedc__v1__fetch_model_request__descriptor, h_fetch_model, c);
  set_method(&c->methods[2], "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, FC_ROLE_CLIENT, CHUNK_MSG,
             &fedc__v1__upload_msg__descriptor, h_upload, c);
  set_method(&c->methods[3], "/fedc.v1.Admin/Status", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__status_request__descriptor, h_status, c);
  set_method(&c->methods[4], "/fedc.v1.Admin/Rounds", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__rounds_request__descriptor, h_rounds, c);
  set_method(&c->methods[5], "/fedc.v1.Admin/RoundControl", FC_RPC_UNARY, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__round_control_request__descriptor, h_round_control, c);
  set_method(&c->methods[6], "/fedc.v1.Admin/GetModel", FC_RPC_SERVER_STREAM, FC_ROLE_ADMIN, SMALL_MSG,
             &fedc__v1__get_model_request__descriptor, h_get_model, c);
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

  /* Every input that can refuse the start is checked, and the state read,
   * before the state directory is created or changed (coord_start.c). */
  if ((rc = coord_start_listen(c, err, errlen)) != FEDC_OK) goto fail;
  /* Secure aggregation checks the certificates clients advertise keys under
   * against the federation CA (coord_secagg.c); signing may have read it. */
  if (!c->ca_pem && cfg->engine.secagg && cfg->ca[0] &&
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
  c->model = model_new(st.version, &spec, data); /* owns data */
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
  fc_sopt_cfg soc;
  sopt_cfg(cfg, &soc, err, errlen); /* checked in cfg_check */
  if ((rc = fc_sopt_create(&soc, fc_model_numel(&spec), &c->sopt)) != FEDC_OK) {
    snprintf(err, errlen, "out of memory for the server optimizer state");
    goto fail;
  }
  if (resumed && (rc = sopt_load(c, st.version, c->model->sha, err, errlen)) != FEDC_OK) goto fail;
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
               (eps_one = dp_after_one_round(c, next)) > cfg->dp_target_epsilon) {
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
  if (cfg->audit_log && (rc = fc_audit_open(cfg->state_dir, &c->audit, err, errlen)) != FEDC_OK) goto fail;
  char hex[FC_SHA256_HEX_LEN];
  if (resumed) {
    FC_INFO(MOD, "resuming from %s: model v%llu, next round %llu, %llu rounds completed", cfg->state_dir,
            (unsigned long long)st.version, (unsigned long long)st.next_round, (unsigned long long)st.completed);
  } else {
    /* Signed, then announced naming its manifest, then written (finalize's order). */
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
  if ((rc = fc_engine_create(&ecfg, st.next_round, st.completed, st.version, st.sha, &c->engine)) != FEDC_OK)
    goto fail;
  if ((rc = restore_admin_state(c, &st, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = coord_eval_init(c, err, errlen)) != FEDC_OK) goto fail;
  if (cfg->dp_noise_multiplier > 0) {
    pthread_mutex_lock(&c->mu);
    dp_check_budget_locked(c);
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
    rc = cfg->engine.secagg ? fc_agg_secagg_create(d.entries, 1, d.slots, &c->agg)
                            : fc_agg_fedavg_create(fc_model_numel(&spec), d.slots, &c->agg);
  }
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot create aggregator: %s", fedc_strerror(rc));
    goto fail;
  }

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
  if (pthread_create(&c->driver, NULL, driver_main, c) != 0) {
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
  /* Stop accepting first, let in-flight calls end, then the driver. */
  if (c->server) fc_server_shutdown(c->server, grace_ms);
  if (c->guard_started) fc_accept_guard_stop();
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
    state_dirty_locked(c);
    pthread_mutex_unlock(&c->mu);
    store_sync(c);
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
  fc_wm_destroy(c->wm);
  coord_anomaly_free(c);
  free(c->dp_rdp);
  free(c->dp_round_rdp);
  coord_sa_end(c);
  coord_eval_free(c);
  coord_sa_free(c);
  fc_engine_destroy(c->engine);
  model_unref(c->model);
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

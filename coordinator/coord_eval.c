/*
 * coord_eval.c - federated evaluation in the running coordinator: the glue
 * between the engine's evaluation (engine_eval.c: when, and by whom), the
 * wire (EVALUATE tasks at check-in here; ReportEval and the evaluation's own
 * SecAgg messages in coord_eval_report.c) and the round history
 * (rounds.jsonl, Admin Rounds, /metrics).
 *
 * Owns: the running evaluation's pinned model, its totals (plain) or its
 * SecAgg instance and the sum of the masked vectors (secure aggregation),
 * and the evaluation lines owed to rounds.jsonl. May call: the engine and
 * the SecAgg server core under c->mu, the audit log, the store (outside mu,
 * coord_eval_sync), the DP accountant's state in fc_coord. coordinator.c
 * calls it from the driver, h_checkin, model downloads, store_sync and
 * Admin Rounds; its handlers are registered there.
 *
 * Ids: an evaluation task's round is FC_EVAL_ID_BIT | R, R the round whose
 * model it evaluates, so evaluation ids never meet training round ids on the
 * wire (a SecAgg message names its round: the evaluation's session is told
 * apart from the training round's by that alone).
 *
 * Secure aggregation: an evaluation is one SecAgg instance of its own over
 * its cohort, the same protocol cores as training, over the u32 vector of
 * secagg/eval_stats.h (dim 3 + 2 x metrics, weight 1 per client, max_weight
 * 1, min_survivors eval_min >= 2). A report then carries only the masked
 * vector; the coordinator adds it into msum mod 2^32, unmasks the sum after
 * the unmask stage and decodes the cohort's totals: it never holds, logs or
 * stores one client's statistics (a report that also carries plain ones is
 * refused, unread). Plain: reports carry the totals, checked against the
 * task's bounds, and are summed as they arrive.
 *
 * Differential privacy: the published totals get Gaussian noise (std z_e x
 * sqrt(k) x the statistic's per-client bound, k statistics, z_e =
 * eval_dp_noise), a Gaussian mechanism of noise multiplier z_e with
 * sensitivity 1 after scaling, counted in the training's RDP accountant
 * without sampling amplification (q = 1: the evaluation cohort is not
 * Poisson-sampled). An evaluation that would pass dp_target_epsilon is not
 * published.
 */
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/log.h"
#include "common/mlp.h"
#include "coordinator/audit.h"
#include "coordinator/coord_eval_int.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "secagg/eval_stats.h"

#define MOD "eval"

static uint64_t wire_id(uint64_t round) { return FC_EVAL_ID_BIT | round; }

/* ---- configuration ---- */

/* Split cfg's comma-separated names into names[]; 0 or -1 (why in err). */
static int parse_names(const char *list, char names[FC_EVAL_METRICS_MAX][FC_EVAL_NAME_MAX], uint32_t *n, char *err,
                       size_t errlen) {
  *n = 0;
  const char *p = list;
  while (*p) {
    size_t len = strcspn(p, ",");
    char name[FC_EVAL_NAME_MAX + 1];
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, p, len);
    name[len] = 0;
    if (!fc_eval_name_ok(name)) {
      snprintf(err, errlen, "eval_metrics: '%s' is not a metric name (1-31 of A-Z a-z 0-9 _ . -)", name);
      return -1;
    }
    for (uint32_t j = 0; j < *n; j++)
      if (strcmp(names[j], name) == 0) {
        snprintf(err, errlen, "eval_metrics: '%s' is listed twice", name);
        return -1;
      }
    if (*n == FC_EVAL_METRICS_MAX) {
      snprintf(err, errlen, "eval_metrics: at most %d names", FC_EVAL_METRICS_MAX);
      return -1;
    }
    snprintf(names[(*n)++], FC_EVAL_NAME_MAX, "%s", name);
    p += strcspn(p, ",");
    if (*p == ',') p++;
  }
  return 0;
}

int coord_eval_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  const fc_engine_cfg *e = &cfg->engine;
  char names[FC_EVAL_METRICS_MAX][FC_EVAL_NAME_MAX];
  uint32_t n;
  if (parse_names(cfg->eval_metrics, names, &n, err, errlen) != 0) return FEDC_ERR_INVALID;
  const char *bad = NULL;
  uint64_t cap = cfg->eval_max_examples ? cfg->eval_max_examples : cfg->max_example_weight;
  if (!(cfg->eval_value_max > 0 && cfg->eval_value_max <= FC_EVAL_VALUE_MAX))
    bad = "eval_value_max must be in (0, 1e6]: it bounds each example's loss and metric values";
  else if (!(e->eval_fraction > 0 && e->eval_fraction <= 1) && !e->eval_cohort && e->eval_every)
    bad = "eval_fraction must be in (0, 1] when eval_cohort is 0";
  else if (e->eval_every && e->eval_cohort && e->eval_cohort < e->eval_min)
    bad = "eval_cohort must be at least eval_min";
  else if (e->eval_every && e->secagg && e->eval_min < 2)
    bad = "federated evaluation under secure aggregation needs eval_min >= 2: a sum of one client's results is "
          "that client's results";
  else if (e->eval_every && e->secagg && e->eval_cohort && e->eval_cohort < FC_SA_MIN_COHORT)
    bad = "federated evaluation under secure aggregation needs eval_cohort >= 3 (or 0: a fraction)";
  else if (e->eval_every && e->secagg && (double)cap * FC_SA_MAX_COHORT >= 4294967295.0)
    bad = "federated evaluation under secure aggregation needs eval_max_examples x 10,000 clients below 2^32";
  else if (!(cfg->eval_dp_noise >= 0 && isfinite(cfg->eval_dp_noise)))
    bad = "eval_dp_noise must be finite and >= 0";
  else if (cfg->eval_dp_noise > 0 && !(cfg->dp_noise_multiplier > 0))
    bad = "eval_dp_noise is the noise of federated evaluation under differential privacy: it needs "
          "dp_noise_multiplier > 0";
  else if (e->eval_every && cfg->dp_noise_multiplier > 0 && !(cfg->eval_dp_noise > 0))
    bad = "federated evaluation under differential privacy publishes its totals too: set eval_dp_noise (each "
          "evaluation spends epsilon as a Gaussian mechanism without sampling; docs/design.md)";
  if (bad) {
    snprintf(err, errlen, "%s", bad);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

int coord_eval_init(fc_coord *c, char *err, size_t errlen) {
  if (!c->cfg.engine.eval_every) return FEDC_OK;
  struct coord_eval *v = calloc(1, sizeof *v);
  if (!v) {
    snprintf(err, errlen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  parse_names(c->cfg.eval_metrics, v->names, &v->nmetrics, err, errlen); /* checked by coord_eval_cfg_check */
  v->max_examples = c->cfg.eval_max_examples ? c->cfg.eval_max_examples : c->cfg.max_example_weight;
  v->value_max = c->cfg.eval_value_max;
  /* Predicted-class counts for the drift check without a reference set
   * (coord_drift_fed.c): asked for when the model is a built-in MLP, whose
   * output width is the number of classes. */
  fc_mlp mlp;
  char why[200];
  if (!c->drift && fc_mlp_from_spec(&c->model->spec, &mlp, why, sizeof why) == FEDC_OK &&
      mlp.sizes[mlp.nlayers] <= FC_EVAL_CLASSES_MAX)
    v->nclasses = mlp.sizes[mlp.nlayers], c->metrics.drift_fed = 1;
  else if (!c->drift)
    FC_INFO(MOD, "drift: not checked from federated evaluation: the model is not a built-in MLP of at most %d "
                 "classes, so the coordinator cannot ask for predicted-class counts", FC_EVAL_CLASSES_MAX);
  for (size_t i = c->nrounds; i > 0 && !v->have_last; i--) /* /metrics shows the last one across a restart */
    if (c->rounds[i - 1].eval.outcome == 1) {
      v->have_last = 1;
      v->last_round = c->rounds[i - 1].round;
      v->last = c->rounds[i - 1].eval;
      if (v->nclasses && v->last.stats.nclasses == v->nclasses) { /* the drift baseline, as before the restart */
        double total = 0;
        for (uint32_t j = 0; j < v->nclasses; j++) total += v->last.stats.class_count[j];
        for (uint32_t j = 0; total > 0 && j < v->nclasses; j++) v->fd.base[j] = v->last.stats.class_count[j] / total;
        v->fd.have_base = total > 0;
        v->fd.base_version = v->last.version;
      }
    }
  c->ev = v;
  return FEDC_OK;
}

/* The running evaluation's state goes (under mu). */
static void ev_clear(fc_coord *c) {
  struct coord_eval *v = c->ev;
  if (v->model) coord_model_unref(v->model);
  v->model = NULL;
  fc_sa_server_destroy(v->sa);
  v->sa = NULL;
  free(v->msum);
  v->msum = NULL;
  v->nmasked = 0;
  memset(&v->sum, 0, sizeof v->sum);
  free(v->reps);
  v->reps = NULL;
  v->nreps = v->capreps = 0;
}

void coord_eval_free(fc_coord *c) {
  if (!c->ev) return;
  ev_clear(c);
  free(c->ev);
  c->ev = NULL;
}

/* ---- the driver ---- */

/* Under mu: set up what the engine's new cohort needs. */
static int ev_begin(fc_coord *c, const fc_eval_info *ei, char *why, size_t whylen) {
  struct coord_eval *v = c->ev;
  ev_clear(c);
  if (c->model->version != ei->version) {
    snprintf(why, whylen, "the model changed (v%llu) before the evaluation of v%llu began",
             (unsigned long long)c->model->version, (unsigned long long)ei->version);
    return FEDC_ERR_REJECTED;
  }
  v->model = c->model;
  atomic_fetch_add(&v->model->refs, 1);
  v->round = ei->round;
  v->sum.nmetrics = v->nmetrics;
  v->sum.nclasses = v->nclasses;
  memcpy(v->sum.names, v->names, sizeof v->names);
  if (!c->cfg.engine.secagg) {
    /* Room for a report from each cohort member (the engine takes one each). */
    v->capreps = ei->selected ? ei->selected : 1;
    if (!(v->reps = calloc(v->capreps, sizeof *v->reps))) {
      v->capreps = 0;
      snprintf(why, whylen, "out of memory for %u evaluation reports", ei->selected);
      return FEDC_ERR_NOMEM;
    }
    return FEDC_OK;
  }
  uint32_t n = ei->selected;
  const char **names = malloc((n ? n : 1) * sizeof *names);
  if (!names) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  n = fc_engine_eval_cohort(c->engine, names, n);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = wire_id(ei->round);
  p.model_version = ei->version;
  memcpy(p.model_sha, ei->sha, 32);
  p.n = n;
  /* k as for training's instances (coord_secagg.c), t never below the floor 2t > k + 1. */
  uint32_t k = c->cfg.secagg_k;
  if (!k || k + 1 >= n) k = n ? n - 1 : 0;
  else if (k % 2) k = k + 2 >= n ? n - 1 : k + 1;
  uint32_t t = c->cfg.secagg_t > fc_sa_min_threshold(k, 0) ? c->cfg.secagg_t : fc_sa_min_threshold(k, 0);
  p.k = k;
  p.t = t > k ? k : t;
  p.max_weight = 1;
  p.clip = 1.0f; /* unused: the statistics are integers already (eval_stats.h) */
  p.dim = fc_eval_dim(v->nmetrics, v->nclasses);
  p.min_survivors = c->cfg.engine.eval_min;
  int rc = fc_random_bytes(p.graph_seed, sizeof p.graph_seed);
  if (rc == FEDC_OK) rc = fc_sa_server_create(&p, names, &v->sa, why, whylen);
  free(names);
  if (rc == FEDC_OK && (rc = fc_sa_server_set_trust(v->sa, c->ca_pem, c->cfg.federation)) != FEDC_OK)
    snprintf(why, whylen, "out of memory");
  if (rc == FEDC_OK && !(v->msum = calloc(p.dim + 1, sizeof *v->msum))) {
    snprintf(why, whylen, "out of memory");
    rc = FEDC_ERR_NOMEM;
  }
  v->scale = fc_eval_scale(n, v->max_examples, v->value_max);
  v->stage_ms = fc_now_ms();
  if (rc == FEDC_OK && !(v->scale > 0)) {
    snprintf(why, whylen, "no fixed-point scale fits %u clients of %llu examples in 32 bits", n,
             (unsigned long long)v->max_examples);
    rc = FEDC_ERR_INVALID;
  }
  return rc;
}

/* Under mu: the record of an evaluation that ended; owed to rounds.jsonl. */
static void ev_record_locked(fc_coord *c, uint64_t round, const fc_round_eval *e) {
  struct coord_eval *v = c->ev;
  coord_history_eval_locked(c, round, e);
  if (v->nowed == OWED_MAX) {
    FC_WARN(MOD, "evaluation of round %llu: not written to rounds.jsonl (too many owed while the state directory "
                 "cannot be written)", (unsigned long long)v->owed[0].round);
    memmove(v->owed, v->owed + 1, (OWED_MAX - 1) * sizeof *v->owed);
    v->nowed--;
  }
  v->owed[v->nowed].round = round;
  v->owed[v->nowed].ev = *e;
  v->nowed++;
  if (e->outcome == 1) v->completed++;
  else v->abandoned++;
  if (e->outcome == 1) {
    v->have_last = 1;
    v->last_round = round;
    v->last = *e;
  }
}

static void ev_abandon_locked(fc_coord *c, uint64_t round, uint64_t version, const fc_eval_info *ei, const char *why,
                              uint64_t now) {
  fc_round_eval e;
  memset(&e, 0, sizeof e);
  e.outcome = 2;
  e.version = version;
  e.selected = ei ? ei->selected : 0;
  e.started_ms = ei && ei->started_ms ? ei->started_ms : now;
  e.ended_ms = now;
  if (c->ev->sa) fc_sa_server_remaining(c->ev->sa, e.sa_remaining);
  snprintf(e.reason, sizeof e.reason, "%s", why);
  FC_WARN(MOD, "evaluation of round %llu's model (v%llu) abandoned: %s", (unsigned long long)round,
          (unsigned long long)version, why);
  if (c->ev->sa) fc_sa_server_abort(c->ev->sa, why);
  ev_record_locked(c, round, &e);
}

/* Under mu, secure aggregation: rebuild the secrets, unmask the sum and
 * decode the cohort's totals. */
static int ev_unmask_locked(fc_coord *c, fc_eval_stats *out, uint32_t *clients, char *why, size_t whylen) {
  struct coord_eval *v = c->ev;
  fc_sa_mask_term *terms = NULL;
  size_t nterms = 0;
  const fc_sa_params *p = fc_sa_server_params(v->sa);
  int rc = fc_sa_server_unmask_terms(v->sa, &terms, &nterms, why, whylen);
  for (uint32_t i = 1; i <= p->n; i++) { /* bad unmask shares: counted as in training (coord_sa_blame.c) */
    if (!fc_sa_server_bad_sent(v->sa, i)) continue;
    uint64_t until;
    const char *who = fc_sa_server_names(v->sa)[i - 1];
    uint32_t n = fc_engine_offence(c->engine, who, fc_now_ms(), &until);
    FC_WARN(MOD, "evaluation of round %llu: %s sent bad unmask shares (offence %u)", (unsigned long long)v->round, who,
            n);
  }
  if (rc == FEDC_OK) rc = fc_sa_mask_apply(NULL, v->msum, 0, (size_t)p->dim + 1, terms, nterms, &c->sa_abort);
  if (terms) {
    fc_wipe(terms, nterms * sizeof *terms);
    free(terms);
  }
  if (rc != FEDC_OK) {
    if (!why[0]) snprintf(why, whylen, "unmasking failed: %s", fedc_strerror(rc));
    return rc;
  }
  memset(out, 0, sizeof *out);
  memcpy(out->names, v->names, sizeof v->names);
  if (fc_eval_decode(v->msum, v->nmetrics, v->nclasses, v->scale, p->n, v->max_examples, v->value_max, out, clients) != FEDC_OK ||
      *clients != v->nmasked) {
    snprintf(why, whylen, "the unmasked sum is not %u clients' bounded statistics: a client sent a malformed vector",
             v->nmasked);
    return FEDC_ERR_REJECTED;
  }
  return FEDC_OK;
}

/* Differential privacy, outside mu: noise the totals and count the
 * evaluation in the accountant (dp.json first). FEDC_OK, or an error with why
 * (nothing published). */
static int ev_privatize(fc_coord *c, fc_eval_stats *s, double *eps_out, char *why, size_t whylen) {
  double z = c->cfg.eval_dp_noise;
  const fc_coord_cfg *cfg = &c->cfg;
  uint64_t cap = cfg->eval_max_examples ? cfg->eval_max_examples : cfg->max_example_weight;
  /* The class counts are one statistic: a client's vector of them has L2
   * norm <= its examples <= E, so k counts them once, bound E. */
  size_t nstat = (size_t)fc_eval_dim(s->nmetrics, s->nclasses);
  double k = (double)fc_eval_dim(s->nmetrics, 0) + (s->nclasses ? 1 : 0), root = sqrt(k), E = (double)cap,
         V = cfg->eval_value_max;
  double noise[3 + 2 * FC_EVAL_METRICS_MAX + FC_EVAL_CLASSES_MAX] = {0};
  float tmp[3 + 2 * FC_EVAL_METRICS_MAX + FC_EVAL_CLASSES_MAX] = {0};
  /* Per statistic: std z sqrt(k) b_i, b_i its per-client bound. */
  double bound[3 + 2 * FC_EVAL_METRICS_MAX + FC_EVAL_CLASSES_MAX];
  bound[0] = bound[1] = E;
  bound[2] = E * V;
  for (uint32_t j = 0; j < s->nmetrics; j++) bound[3 + 2 * j] = E * V, bound[4 + 2 * j] = E;
  for (uint32_t i = 0; i < s->nclasses; i++) bound[3 + 2 * s->nmetrics + i] = E;
  for (size_t i = 0; i < nstat; i++) {
    int rc = fc_dp_add_gaussian(&tmp[i], 1, z * root * bound[i], NULL);
    if (rc != FEDC_OK) {
      snprintf(why, whylen, "cannot draw the privacy noise: %s", fedc_strerror(rc));
      return rc;
    }
    noise[i] = tmp[i];
  }
  const double *orders;
  fc_dp_orders(&orders);
  double *next = malloc(c->dp_norders * sizeof *next);
  if (!next) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->dp_norders; i++) next[i] = c->dp_rdp[i] + fc_dp_rdp(1.0, z, orders[i]);
  uint64_t rounds = c->dp_rounds;
  double clip = c->cfg.dp_adaptive_quantile > 0 ? c->clip : 0;
  pthread_mutex_unlock(&c->mu);
  fc_dp_eps e;
  fc_dp_epsilon_from_rdp(orders, next, c->dp_norders, cfg->dp_delta, &e);
  int rc = FEDC_OK;
  if (cfg->dp_target_epsilon > 0 && e.eps > cfg->dp_target_epsilon) {
    snprintf(why, whylen, "privacy budget: publishing it would reach epsilon %.4g > target %g", e.eps,
             cfg->dp_target_epsilon);
    rc = FEDC_ERR_REJECTED;
  } else {
    rc = fc_store_write_dp(cfg->state_dir, next, c->dp_norders, rounds, e.eps, cfg->dp_delta, clip, why, whylen);
  }
  if (rc == FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    memcpy(c->dp_rdp, next, c->dp_norders * sizeof *next);
    c->dp_eps = e.eps;
    pthread_mutex_unlock(&c->mu);
    s->examples += noise[0];
    s->correct += noise[1];
    s->loss_sum += noise[2];
    for (uint32_t j = 0; j < s->nmetrics; j++) s->metric_sum[j] += noise[3 + 2 * j], s->metric_examples[j] += noise[4 + 2 * j];
    for (uint32_t i = 0; i < s->nclasses; i++) s->class_count[i] = fmax(s->class_count[i] + noise[3 + 2 * s->nmetrics + i], 0);
    /* Into their ranges (post-processing: no privacy cost), so a mean is
     * never below 0 or an accuracy above 1; with noise far above the totals
     * they say little either way (docs/design.md gives the sizes). */
    if (s->examples < 0) s->examples = 0;
    s->correct = fmin(fmax(s->correct, 0), s->examples);
    if (s->loss_sum < 0) s->loss_sum = 0;
    for (uint32_t j = 0; j < s->nmetrics; j++) {
      s->metric_examples[j] = fmin(fmax(s->metric_examples[j], 0), s->examples);
      if (s->metric_sum[j] < 0) s->metric_sum[j] = 0;
    }
    *eps_out = e.eps;
  }
  free(next);
  return rc;
}

/* FINISH: the totals, noised under DP, into the round's record. Takes mu.
 * 1 if the drift check paused the engine (hold), else 0. */
static int ev_finish(fc_coord *c) {
  struct coord_eval *v = c->ev;
  char why[300] = "";
  fc_round_eval e;
  memset(&e, 0, sizeof e);
  json_t *drift_audit = NULL;
  int held = 0;
  pthread_mutex_lock(&c->mu);
  fc_eval_info ei;
  fc_engine_eval_get(c->engine, &ei);
  uint32_t clients = ei.received;
  int rc = FEDC_OK;
  if (v->sa) rc = ev_unmask_locked(c, &e.stats, &clients, why, sizeof why);
  else { /* no client counts for more than twice the median one (eval_stats.h); under DP the plain sum, whose
          * sensitivity is the task's bound the noise is sized for */
    fc_eval_stats_combine(v->reps, v->nreps, c->cfg.eval_dp_noise > 0 ? 0 : FC_EVAL_CAP_FACTOR, &e.stats);
    e.stats.nmetrics = v->sum.nmetrics;
    e.stats.nclasses = v->sum.nclasses;
    memcpy(e.stats.names, v->sum.names, sizeof v->sum.names);
  }
  if (v->sa) fc_sa_server_remaining(v->sa, e.sa_remaining);
  pthread_mutex_unlock(&c->mu);
  double eps = 0;
  if (rc == FEDC_OK && c->cfg.eval_dp_noise > 0) rc = ev_privatize(c, &e.stats, &eps, why, sizeof why);
  uint64_t now = fc_now_ms();
  pthread_mutex_lock(&c->mu);
  if (rc != FEDC_OK) {
    ev_abandon_locked(c, ei.round, ei.version, &ei, why, now);
    fc_engine_eval_finished(c->engine, why, now);
  } else {
    e.outcome = 1;
    e.version = ei.version;
    e.selected = ei.selected;
    e.clients = clients;
    e.started_ms = ei.started_ms;
    e.ended_ms = now;
    if (c->cfg.eval_dp_noise > 0) e.dp_noise = c->cfg.eval_dp_noise, e.dp_epsilon = eps;
    char acc[32] = "-", loss[32] = "-";
    if (e.stats.examples > 0) {
      snprintf(acc, sizeof acc, "%.2f%%", 100 * e.stats.correct / e.stats.examples);
      snprintf(loss, sizeof loss, "%.4f", e.stats.loss_sum / e.stats.examples);
    }
    FC_INFO(MOD, "evaluation of round %llu's model (v%llu): %u clients, %.0f examples, accuracy %s, loss %s%s%s",
            (unsigned long long)ei.round, (unsigned long long)ei.version, clients, e.stats.examples, acc, loss,
            v->sa ? " (secure aggregation: the cohort's totals)" : "", e.dp_noise > 0 ? " (with DP noise)" : "");
    drift_audit = coord_drift_fed_locked(c, ei.round, &e, &held);
    ev_record_locked(c, ei.round, &e);
    fc_engine_eval_finished(c->engine, NULL, now);
  }
  ev_clear(c);
  pthread_mutex_unlock(&c->mu);
  if (drift_audit) fc_audit_append(c->audit, "drift", drift_audit);
  fc_audit_append(c->audit, "eval", json_pack("{s:I,s:I,s:s,s:i}", "round", (json_int_t)ei.round, "version",
                                              (json_int_t)ei.version, "outcome", rc == FEDC_OK ? "completed" : "abandoned",
                                              "clients", rc == FEDC_OK ? (int)clients : 0));
  return held;
}

int coord_eval_drive(fc_coord *c) {
  if (!c->ev) return 0;
  struct coord_eval *v = c->ev;
  char why[300] = "";
  int owed = 0;
  pthread_mutex_lock(&c->mu);
  uint64_t now = fc_now_ms();
  int act = fc_engine_eval_tick(c->engine, now);
  fc_eval_info ei;
  fc_engine_eval_get(c->engine, &ei);
  switch (act) {
  case FC_EVT_SKIPPED: {
    uint64_t round, version;
    fc_engine_eval_skipped(c->engine, &round, &version);
    ev_abandon_locked(c, round, version, NULL, fc_engine_eval_reason(c->engine), now);
    owed = 1;
    break;
  }
  case FC_EVT_STARTED:
    if (ev_begin(c, &ei, why, sizeof why) != FEDC_OK) {
      ev_abandon_locked(c, ei.round, ei.version, &ei, why, now);
      fc_engine_eval_finished(c->engine, why, now);
      ev_clear(c);
      owed = 1;
      break;
    }
    FC_INFO(MOD, "evaluation of round %llu's model (v%llu) started: %u clients%s", (unsigned long long)ei.round,
            (unsigned long long)ei.version, ei.selected,
            v->sa ? ", secure aggregation of their statistics" : "");
    break;
  case FC_EVT_ABANDON:
    ev_abandon_locked(c, ei.round, ei.version, &ei, fc_engine_eval_reason(c->engine), now);
    fc_engine_eval_finished(c->engine, NULL, now);
    ev_clear(c);
    owed = 1;
    break;
  case FC_EVT_SA_CLOSE: {
    int stage = v->sa ? fc_sa_server_stage(v->sa) : 0;
    if (!v->sa || fc_sa_server_close_stage(v->sa, why, sizeof why) != FEDC_OK) {
      if (!v->sa) snprintf(why, sizeof why, "secure aggregation session missing");
      ev_abandon_locked(c, ei.round, ei.version, &ei, why, now);
      fc_engine_eval_finished(c->engine, NULL, now);
      ev_clear(c);
      owed = 1;
      break;
    }
    uint32_t rem[5];
    fc_sa_server_remaining(v->sa, rem);
    FC_DEBUG(MOD, "evaluation of round %llu: %s stage closed with %u clients", (unsigned long long)ei.round,
             fc_sa_stage_name(stage), stage ? rem[stage - 1] : 0);
    act = fc_engine_eval_sa_advance(c->engine, now);
    break;
  }
  default: break;
  }
  pthread_mutex_unlock(&c->mu);
  if (act == FC_EVT_FINISH) owed = COORD_EVAL_OWED | (ev_finish(c) ? COORD_EVAL_HELD : 0);
  return owed;
}

/* ---- check-ins and downloads ---- */

void coord_eval_answer_locked(fc_coord *c, fc_scall *call, const char *client, const fc_eval_info *task,
                              uint32_t retry_ms) {
  struct coord_eval *v = c->ev;
  Fedc__V1__CheckInResponse resp = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  Fedc__V1__Task t = FEDC__V1__TASK__INIT;
  Fedc__V1__EvalParams ep = FEDC__V1__EVAL_PARAMS__INIT;
  Fedc__V1__SecAggParams sp = FEDC__V1__SEC_AGG_PARAMS__INIT;
  char *names[FC_EVAL_METRICS_MAX];
  if (!v || !v->model) { /* cannot happen: the engine draws only after ev_begin ran */
    fc_scall_finish(call, GRPC_STATUS_UNAVAILABLE, "evaluation not ready, retry", NULL);
    return;
  }
  resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__EVALUATE;
  resp.retry_after_ms = retry_ms;
  resp.global_version = c->model->version;
  t.round = wire_id(task->round);
  t.model_version = task->version;
  t.model_sha256.data = (uint8_t *)task->sha;
  t.model_sha256.len = FC_SHA256_LEN;
  t.deadline_unix_ms = task->deadline_ms;
  t.model_bytes = v->model->bytes;
  ep.max_examples = v->max_examples;
  ep.value_max = v->value_max;
  for (uint32_t j = 0; j < v->nmetrics; j++) names[j] = v->names[j];
  ep.n_metrics = v->nmetrics;
  ep.metrics = names;
  ep.classes = v->nclasses;
  t.eval = &ep;
  if (v->sa) {
    const fc_sa_params *p = fc_sa_server_params(v->sa);
    ep.stat_scale = v->scale;
    sp.index = fc_sa_server_index(v->sa, client);
    sp.n_cohort = p->n;
    sp.cohort = (char **)fc_sa_server_names(v->sa);
    sp.neighbors = p->k;
    sp.threshold = p->t;
    sp.graph_seed.data = (uint8_t *)p->graph_seed;
    sp.graph_seed.len = FC_SA_SEED_LEN;
    sp.max_weight = p->max_weight;
    sp.stage_deadline_ms = c->cfg.engine.sa_stage_ms;
    sp.min_survivors = p->min_survivors;
    t.secagg = &sp;
    t.clip_norm = p->clip;
  }
  resp.task = &t;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

model_ref *coord_eval_model(fc_coord *c, const char *client, uint64_t version) {
  model_ref *m = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->ev && c->ev->model && c->ev->model->version == version && fc_engine_eval_member(c->engine, client)) {
    m = c->ev->model;
    atomic_fetch_add(&m->refs, 1);
  }
  pthread_mutex_unlock(&c->mu);
  return m;
}

/* ---- the history ---- */

int coord_eval_sync(fc_coord *c, char *err, size_t errlen) {
  if (!c->ev) return FEDC_OK;
  for (;;) {
    owed_line line;
    pthread_mutex_lock(&c->mu);
    int have = c->ev->nowed > 0;
    if (have) line = c->ev->owed[0];
    pthread_mutex_unlock(&c->mu);
    if (!have) return FEDC_OK;
    int rc = fc_store_append_eval(c->cfg.state_dir, line.round, &line.ev, err, errlen);
    if (rc != FEDC_OK) return rc;
    pthread_mutex_lock(&c->mu);
    if (c->ev->nowed > 0) {
      memmove(c->ev->owed, c->ev->owed + 1, (c->ev->nowed - 1) * sizeof *c->ev->owed);
      c->ev->nowed--;
    }
    pthread_mutex_unlock(&c->mu);
  }
}

void coord_eval_pb(const fc_round_eval *e, int pending, Fedc__V1__EvalRecord *out, Fedc__V1__EvalMetric *m,
                   Fedc__V1__EvalMetric **mp) {
  fedc__v1__eval_record__init(out);
  if (!e->outcome) {
    out->outcome = pending ? "pending" : "";
    out->accuracy = out->loss = NAN;
    return;
  }
  out->outcome = e->outcome == 1 ? "completed" : "abandoned";
  out->version = e->version;
  out->selected = e->selected;
  out->clients = e->clients;
  out->examples = e->stats.examples;
  out->correct = e->stats.correct;
  out->loss_sum = e->stats.loss_sum;
  out->accuracy = e->outcome == 1 && e->stats.examples > 0 ? e->stats.correct / e->stats.examples : NAN;
  out->loss = e->outcome == 1 && e->stats.examples > 0 ? e->stats.loss_sum / e->stats.examples : NAN;
  out->started_unix_ms = e->started_ms;
  out->ended_unix_ms = e->ended_ms;
  out->reason = (char *)e->reason;
  if (e->sa_remaining[0]) {
    out->n_secagg_remaining = 5;
    out->secagg_remaining = (uint32_t *)e->sa_remaining;
  }
  out->dp_noise = e->dp_noise;
  out->dp_epsilon = e->dp_epsilon;
  for (uint32_t j = 0; j < e->stats.nmetrics && j < FC_EVAL_METRICS_MAX; j++) {
    fedc__v1__eval_metric__init(&m[j]);
    m[j].name = (char *)e->stats.names[j];
    m[j].sum = e->stats.metric_sum[j];
    m[j].examples = (uint64_t)(e->stats.metric_examples[j] > 0 ? e->stats.metric_examples[j] + 0.5 : 0);
    mp[j] = &m[j];
  }
  out->n_metrics = e->stats.nmetrics < FC_EVAL_METRICS_MAX ? e->stats.nmetrics : FC_EVAL_METRICS_MAX;
  out->metrics = mp;
  double classed = 0;
  for (uint32_t i = 0; i < e->stats.nclasses && i < FC_EVAL_CLASSES_MAX; i++) classed += e->stats.class_count[i];
  if (classed > 0) { /* points into e: packed while the caller holds it */
    out->n_class_counts = e->stats.nclasses < FC_EVAL_CLASSES_MAX ? e->stats.nclasses : FC_EVAL_CLASSES_MAX;
    out->class_counts = (double *)e->stats.class_count;
  }
}

char *coord_eval_metrics_text(fc_coord *c) {
  if (!c->ev) return NULL;
  pthread_mutex_lock(&c->mu);
  struct coord_eval *v = c->ev;
  uint64_t done = v->completed, ab = v->abandoned, round = v->last_round;
  int have = v->have_last;
  fc_round_eval last = v->last;
  fc_eval_info ei;
  fc_engine_eval_get(c->engine, &ei);
  pthread_mutex_unlock(&c->mu);
  char *out = malloc(4096);
  if (!out) return NULL;
  size_t n = 0;
#define PUT(...) n += (size_t)snprintf(out + n, n < 4096 ? 4096 - n : 0, __VA_ARGS__)
  PUT("# HELP fedc_eval_state The federated evaluation's state (1 for the current one).\n"
      "# TYPE fedc_eval_state gauge\n");
  for (int s = FC_EV_IDLE; s <= FC_EV_FINISHING; s++)
    PUT("fedc_eval_state{state=\"%s\"} %d\n", fc_engine_eval_state_name(s), ei.state == s);
  PUT("# HELP fedc_evals_total Federated evaluations that ended, by outcome (this process).\n"
      "# TYPE fedc_evals_total counter\n"
      "fedc_evals_total{outcome=\"completed\"} %llu\nfedc_evals_total{outcome=\"abandoned\"} %llu\n",
      (unsigned long long)done, (unsigned long long)ab);
  if (have && last.stats.examples > 0) {
    PUT("# HELP fedc_eval_round The round whose model the last completed evaluation evaluated.\n"
        "# TYPE fedc_eval_round gauge\nfedc_eval_round %llu\n", (unsigned long long)round);
    PUT("# HELP fedc_eval_accuracy Example-weighted accuracy of the last completed federated evaluation.\n"
        "# TYPE fedc_eval_accuracy gauge\nfedc_eval_accuracy %.6f\n", last.stats.correct / last.stats.examples);
    PUT("# HELP fedc_eval_loss Example-weighted mean loss of the last completed federated evaluation.\n"
        "# TYPE fedc_eval_loss gauge\nfedc_eval_loss %.6f\n", last.stats.loss_sum / last.stats.examples);
    PUT("# HELP fedc_eval_examples Examples in the last completed federated evaluation.\n"
        "# TYPE fedc_eval_examples gauge\nfedc_eval_examples %.0f\n", last.stats.examples);
    PUT("# HELP fedc_eval_clients Clients whose results are in the last completed federated evaluation.\n"
        "# TYPE fedc_eval_clients gauge\nfedc_eval_clients %u\n", last.clients);
    if (last.stats.nmetrics)
      PUT("# HELP fedc_eval_metric Example-weighted mean of a named metric in the last completed evaluation.\n"
          "# TYPE fedc_eval_metric gauge\n");
    for (uint32_t j = 0; j < last.stats.nmetrics; j++)
      if (last.stats.metric_examples[j] > 0)
        PUT("fedc_eval_metric{name=\"%s\"} %.6f\n", last.stats.names[j],
            last.stats.metric_sum[j] / last.stats.metric_examples[j]);
  }
#undef PUT
  return out;
}

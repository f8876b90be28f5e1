/*
 * runtime_eval.c - the client's side of federated evaluation (protocol
 * 1.7): an EVALUATE task names a model version; the runtime fetches it
 * (SHA-256 and signed manifest checked, as for training), asks the
 * trainer's evaluate_stats for totals over its held-out data, bounds them as
 * the task says (secagg/eval_stats.h: at most max_examples examples, each
 * loss and metric value in [0, value_max]) and reports them with ReportEval.
 * Under secure aggregation the totals are encoded as the u32 vector of
 * eval_stats.h and only travel masked, through the same SecAgg exchange as a
 * training update (runtime_secagg.c, rt_secagg_exchange). The model is never
 * changed; the round loop (runtime.c) handles each evaluation once.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/runtime_int.h"
#include "common/clock.h"
#include "common/log.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "secagg/eval_stats.h"

#define MOD "client"

static int rejected(fc_status *st, const char *why) {
  st->code = GRPC_STATUS_FAILED_PRECONDITION;
  st->err = FEDC_ERR_REJECTED;
  snprintf(st->detail, sizeof st->detail, "%s", why);
  return FEDC_ERR_REJECTED;
}

/* One ReportEval call, retried while transient or paced, until the deadline. */
static int report(fedc_client *c, const Fedc__V1__EvalReport *req, uint64_t deadline, fc_status *st) {
  for (int attempt = 0;;) {
    ProtobufCMessage *m = NULL;
    int rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/ReportEval", &req->base,
                           &fedc__v1__eval_report_response__descriptor, &m, 30000, st);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    if (rc == FEDC_OK) return FEDC_OK;
    int told = (st->code == GRPC_STATUS_RESOURCE_EXHAUSTED || st->code == GRPC_STATUS_UNAVAILABLE) &&
               st->retry_after_ms > 0;
    if (!(rt_is_transient(rc) || told) || atomic_load(&c->stop)) {
      if (st->code == GRPC_STATUS_FAILED_PRECONDITION || st->code == GRPC_STATUS_INVALID_ARGUMENT ||
          st->code == GRPC_STATUS_ALREADY_EXISTS || st->code == GRPC_STATUS_DEADLINE_EXCEEDED)
        rc = FEDC_ERR_REJECTED; /* this evaluation is lost for us; the federation goes on */
      return rc;
    }
    uint64_t now = fc_now_ms();
    if (now >= deadline || (!told && ++attempt > 8)) return rc;
    uint64_t wait = told ? st->retry_after_ms : (uint64_t)c->o.min_backoff_ms << (attempt < 5 ? attempt : 5);
    if (wait > deadline - now) wait = deadline - now;
    if (rt_nap(c, (uint32_t)wait)) return FEDC_ERR_STOPPED;
  }
}

typedef struct eval_input {
  fedc_client *c;
  const Fedc__V1__Task *t;
  fc_eval_stats *s;
  uint32_t sent[3]; /* examples, correct, fixed-point loss: what our masked vector holds */
} eval_input;

static int eval_fill(void *ctx, const fc_sa_params *p, uint32_t *q, fc_status *st) {
  eval_input *in = ctx;
  double scale = in->t->eval->stat_scale;
  /* The coordinator's scale must keep n clients' sums inside 32 bits (a
   * wrapped sum would be garbage, never a leak: it is masked either way). */
  if (!(scale > 0) || scale > fc_eval_scale(p->n, in->t->eval->max_examples, in->t->eval->value_max) * (1 + 1e-9))
    return rejected(st, "evaluation: the task's fixed-point scale would let the cohort's sum wrap");
  uint64_t seed;
  if (fc_random_bytes((uint8_t *)&seed, sizeof seed) != FEDC_OK) return rejected(st, "evaluation: no randomness");
  fc_rng rng;
  fc_rng_seed(&rng, seed);
  fc_eval_encode(in->s, scale, &rng, q);
  fc_wipe(&rng, sizeof rng);
  in->sent[0] = q[0];
  in->sent[1] = q[1];
  in->sent[2] = q[2];
  return FEDC_OK;
}

static int eval_send(void *ctx, const fc_sa_params *p, uint32_t *q, uint64_t deadline, fc_status *st) {
  eval_input *in = ctx;
  Fedc__V1__EvalReport req = FEDC__V1__EVAL_REPORT__INIT;
  req.round = in->t->round;
  req.model_version = in->t->model_version;
  req.n_masked = (size_t)fc_sa_entries(p);
  req.masked = q;
  return report(in->c, &req, deadline, st);
}

int rt_eval_task(fedc_client *c, const Fedc__V1__Task *t, fc_status *st) {
  const Fedc__V1__EvalParams *ep = t->eval;
  int rc;
  if (!ep->max_examples || !(ep->value_max > 0 && ep->value_max <= FC_EVAL_VALUE_MAX) ||
      ep->n_metrics > FC_EVAL_METRICS_MAX || ep->classes > FC_EVAL_CLASSES_MAX)
    return rejected(st, "evaluation task with malformed parameters");
  for (size_t j = 0; j < ep->n_metrics; j++)
    if (!fc_eval_name_ok(ep->metrics[j])) return rejected(st, "evaluation task names a malformed metric");
  if (!c->have_model || c->cached_version != t->model_version || t->model_sha256.len != FC_SHA256_LEN ||
      !fc_digest_equal(c->cached_sha, t->model_sha256.data, FC_SHA256_LEN)) {
    if ((rc = rt_fetch_model(c, t, st)) != FEDC_OK) return rc;
  }
  fedc_tensor_info *ti = rt_tensor_infos(c);
  fedc_eval_metric metrics[FC_EVAL_METRICS_MAX];
  memset(metrics, 0, sizeof metrics);
  uint64_t classes[FC_EVAL_CLASSES_MAX] = {0};
  if (!ti) {
    snprintf(st->detail, sizeof st->detail, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  uint64_t id = t->round & ~(1ull << 63);
  char terr[300] = "";
  fedc_eval_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.round = id;
  cfg.model_version = t->model_version;
  cfg.max_examples = ep->max_examples;
  cfg.value_max = ep->value_max;
  cfg.n_metrics = ep->n_metrics;
  cfg.metric_names = (const char *const *)ep->metrics;
  cfg.n_tensors = c->spec.n;
  cfg.tensors = ti;
  cfg.error = terr;
  cfg.error_len = sizeof terr;
  cfg.n_classes = ep->classes;
  fedc_eval_result res;
  memset(&res, 0, sizeof res);
  res.metrics = metrics;
  res.class_counts = ep->classes ? classes : NULL;
  int trc = c->trainer.evaluate_stats(c->trainer.ctx, &cfg, c->weights, c->model_bytes / sizeof(float), &res);
  free(ti);
  terr[sizeof terr - 1] = 0;
  if (trc != 0 || !res.num_examples) {
    char why[sizeof terr + 32];
    snprintf(why, sizeof why, "evaluation failed%s%s", terr[0] ? ": " : "", terr);
    return rejected(st, why);
  }
  fc_eval_stats s;
  memset(&s, 0, sizeof s);
  s.examples = (double)res.num_examples;
  s.correct = (double)res.correct;
  s.loss_sum = res.loss_sum;
  s.nmetrics = (uint32_t)ep->n_metrics;
  for (uint32_t j = 0; j < s.nmetrics; j++) {
    snprintf(s.names[j], sizeof s.names[j], "%s", ep->metrics[j]);
    s.metric_sum[j] = metrics[j].sum;
    s.metric_examples[j] = (double)metrics[j].examples;
  }
  s.nclasses = ep->classes;
  uint64_t classed = 0;
  for (uint32_t i = 0; i < s.nclasses; i++) classed += classes[i], s.class_count[i] = (double)classes[i];
  fc_eval_stats_clamp(&s, ep->max_examples, ep->value_max);
  fedc_event ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = FEDC_EVENT_EVAL_REPORTED;
  ev.round = id;
  ev.model_version = t->model_version;
  if (t->secagg) {
    eval_input in = {c, t, &s, {0, 0, 0}};
    rt_sa_input sa = {fc_eval_dim(s.nmetrics, s.nclasses), eval_fill, eval_send, &in};
    rc = rt_secagg_exchange(c, t, &sa, st);
    /* What our (masked) vector held: the cohort's totals add exactly these. */
    ev.num_examples = in.sent[0];
    ev.correct = in.sent[1];
    ev.loss_sum = t->eval->stat_scale > 0 ? in.sent[2] / t->eval->stat_scale : 0;
  } else {
    Fedc__V1__EvalReport req = FEDC__V1__EVAL_REPORT__INIT;
    Fedc__V1__EvalMetric pm[FC_EVAL_METRICS_MAX], *pp[FC_EVAL_METRICS_MAX];
    req.round = t->round;
    req.model_version = t->model_version;
    req.examples = (uint64_t)llround(s.examples);
    req.correct = (uint64_t)llround(s.correct);
    if (req.correct > req.examples) req.correct = req.examples;
    req.loss_sum = s.loss_sum;
    for (uint32_t j = 0; j < s.nmetrics; j++) {
      if (!(s.metric_examples[j] > 0)) continue;
      fedc__v1__eval_metric__init(&pm[req.n_metrics]);
      pm[req.n_metrics].name = s.names[j];
      pm[req.n_metrics].sum = s.metric_sum[j];
      pm[req.n_metrics].examples = (uint64_t)llround(s.metric_examples[j]);
      pp[req.n_metrics] = &pm[req.n_metrics];
      req.n_metrics++;
    }
    req.metrics = pp;
    uint64_t cc[FC_EVAL_CLASSES_MAX];
    if (classed) { /* a trainer that counted nothing sends none: not counted as "all zero" */
      for (uint32_t i = 0; i < s.nclasses; i++) cc[i] = (uint64_t)llround(s.class_count[i]);
      req.n_class_counts = s.nclasses;
      req.class_counts = cc;
    }
    rc = report(c, &req, t->deadline_unix_ms, st);
    ev.num_examples = req.examples;
    ev.correct = req.correct;
    ev.loss_sum = req.loss_sum;
  }
  fc_wipe(&s, sizeof s);
  if (rc != FEDC_OK) return rc;
  ev.accuracy = ev.num_examples ? (double)ev.correct / (double)ev.num_examples : 0;
  ev.loss = ev.num_examples ? ev.loss_sum / (double)ev.num_examples : 0;
  FC_INFO(MOD, "evaluation %llu of model v%llu reported%s", (unsigned long long)id,
          (unsigned long long)t->model_version, t->secagg ? " (masked)" : "");
  rt_emit(c, &ev);
  return FEDC_OK;
}

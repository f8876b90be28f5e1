/*
 * coord_eval_report.c - what clients send for a federated evaluation:
 * ReportEval (plain totals, checked against the task's bounds and summed; or
 * under secure aggregation the masked vector only, added mod 2^32 and never
 * read alone) and the evaluation's SecAgg messages (SecAggSubmit/Poll whose
 * round is an evaluation id, FC_EVAL_ID_BIT; the rest go to the training
 * round's handlers in coord_secagg.c). coord_eval.c says why it is built
 * this way. May call: the engine and the evaluation's SecAgg core under
 * c->mu, the audit log, the logger.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_eval_int.h"
#include "fedc/error.h"

#define MOD "eval"

/* ---- ReportEval ---- */

static grpc_status_code verdict_code(int v) {
  switch (v) {
  case FC_UP_DUPLICATE: return GRPC_STATUS_ALREADY_EXISTS;
  case FC_UP_BUSY: return GRPC_STATUS_ABORTED;
  case FC_UP_LATE: return GRPC_STATUS_DEADLINE_EXCEEDED;
  case FC_UP_RATE_LIMITED: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_FAILED_PRECONDITION;
  }
}

/* Plain: the report's statistics, checked and bounded. FEDC_OK or why. */
static int plain_stats(const struct coord_eval *v, const Fedc__V1__EvalReport *r, fc_eval_stats *s, char *why,
                       size_t whylen) {
  memset(s, 0, sizeof s[0]);
  if (!r->examples) {
    snprintf(why, whylen, "evaluation report with 0 examples");
    return FEDC_ERR_INVALID;
  }
  if (!isfinite(r->loss_sum) || r->loss_sum < 0 || r->correct > r->examples) {
    snprintf(why, whylen, "evaluation report out of range: loss sum %g, %llu correct of %llu", r->loss_sum,
             (unsigned long long)r->correct, (unsigned long long)r->examples);
    return FEDC_ERR_INVALID;
  }
  s->examples = (double)r->examples;
  s->correct = (double)r->correct;
  s->loss_sum = r->loss_sum;
  s->nmetrics = v->nmetrics;
  memcpy(s->names, v->names, sizeof v->names);
  for (size_t i = 0; i < r->n_metrics; i++) {
    const Fedc__V1__EvalMetric *m = r->metrics[i];
    uint32_t j = 0;
    while (j < v->nmetrics && strcmp(v->names[j], m->name ? m->name : "") != 0) j++;
    if (j == v->nmetrics || s->metric_examples[j] > 0 || !isfinite(m->sum) || m->sum < 0) {
      snprintf(why, whylen, "evaluation report: metric %zu is not one the task asked for once, finite and >= 0", i);
      return FEDC_ERR_INVALID;
    }
    s->metric_sum[j] = m->sum;
    s->metric_examples[j] = (double)m->examples;
  }
  if (r->n_class_counts && r->n_class_counts != v->nclasses) {
    snprintf(why, whylen, "evaluation report: %zu predicted-class counts, the task asked for %u", r->n_class_counts,
             v->nclasses);
    return FEDC_ERR_INVALID;
  }
  s->nclasses = v->nclasses;
  for (size_t i = 0; i < r->n_class_counts; i++) s->class_count[i] = (double)r->class_counts[i];
  /* Beyond the task's bounds counts only up to them, as the client itself clamps. */
  fc_eval_stats_clamp(s, v->max_examples, v->value_max);
  return FEDC_OK;
}

/* Under mu: the evaluation's open SecAgg stage has all it waits for: tell the engine. */
static void ev_sa_check(fc_coord *c, const fc_sa_server *s) {
  if (fc_sa_server_stage_complete(s, fc_engine_eval_expected_n(c->engine))) fc_engine_eval_sa_ready(c->engine);
}

void coord_h_eval_report(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__EvalReport *req = (const Fedc__V1__EvalReport *)fc_scall_request(call);
  if (c->audit) fc_audit_contact(c->audit, peer->name, fc_role_name(peer->role), peer->cert_sha256, peer->addr);
  char why[300] = "";
  grpc_status_code code = GRPC_STATUS_OK;
  uint32_t retry = 0;
  uint64_t round = req->round & ~FC_EVAL_ID_BIT;
  fc_eval_stats s;
  int plain_ok = 0;
  pthread_mutex_lock(&c->mu);
  struct coord_eval *v = c->ev;
  /* The engine's verdict first, whatever the request: it takes the token,
   * so the rate limit holds also where no evaluation runs at all. */
  int v_ok = fc_engine_eval_report_begin(c->engine, peer->name, round, req->model_version, fc_now_ms());
  if (v_ok == FC_UP_OK && (!v || !(req->round & FC_EVAL_ID_BIT))) {
    fc_engine_eval_report_abort(c->engine, peer->name, round);
    v_ok = !v ? -1 : -2;
  }
  if (v_ok != FC_UP_OK) {
    code = v_ok == -1 ? GRPC_STATUS_FAILED_PRECONDITION : v_ok == -2 ? GRPC_STATUS_INVALID_ARGUMENT : verdict_code(v_ok);
    if (v_ok == FC_UP_RATE_LIMITED) retry = fc_engine_retry_ms(c->engine);
    snprintf(why, sizeof why, "evaluation report refused: %s",
             v_ok == -1 ? "this federation runs no federated evaluation"
             : v_ok == -2 ? "its round is not an evaluation's id"
                          : fc_upload_verdict_text(v_ok));
  } else if (v->sa) {
    uint32_t idx = fc_sa_server_index(v->sa, peer->name);
    uint64_t want = fc_eval_dim(v->nmetrics, v->nclasses) + 1;
    if (req->examples || req->correct || req->loss_sum != 0 || req->n_metrics || req->n_class_counts) {
      code = GRPC_STATUS_INVALID_ARGUMENT; /* never read, never logged: the values stay unknown */
      snprintf(why, sizeof why, "under secure aggregation an evaluation report carries only the masked vector");
    } else if (req->n_masked != want) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
      snprintf(why, sizeof why, "masked vector of %zu entries, want %llu", req->n_masked, (unsigned long long)want);
    } else if (!idx || !fc_sa_server_masked_allowed(v->sa, idx)) {
      code = GRPC_STATUS_FAILED_PRECONDITION;
      snprintf(why, sizeof why, "masked statistics not expected from %s now", peer->name);
    } else if (fc_engine_eval_report_commit(c->engine, peer->name, round, fc_now_ms()) != FC_UP_OK) {
      code = GRPC_STATUS_DEADLINE_EXCEEDED;
      snprintf(why, sizeof why, "the evaluation's masked stage closed");
    } else {
      for (uint64_t i = 0; i < want; i++) v->msum[i] += req->masked[i];
      v->nmasked++;
      fc_sa_server_masked_done(v->sa, idx);
      ev_sa_check(c, v->sa);
    }
    if (code != GRPC_STATUS_OK && code != GRPC_STATUS_DEADLINE_EXCEEDED)
      fc_engine_eval_report_abort(c->engine, peer->name, round);
  } else if (req->n_masked) {
    code = GRPC_STATUS_INVALID_ARGUMENT;
    snprintf(why, sizeof why, "this federation's evaluation does not run secure aggregation: masked vector refused");
    fc_engine_eval_report_abort(c->engine, peer->name, round);
  } else if (plain_stats(v, req, &s, why, sizeof why) != FEDC_OK) {
    code = GRPC_STATUS_INVALID_ARGUMENT;
    fc_engine_eval_report_abort(c->engine, peer->name, round);
  } else if (v->nreps >= v->capreps) { /* more than the cohort: cannot happen, the engine takes one each */
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "more evaluation reports than the cohort's %u", v->capreps);
    fc_engine_eval_report_abort(c->engine, peer->name, round);
  } else if (fc_engine_eval_report_commit(c->engine, peer->name, round, fc_now_ms()) != FC_UP_OK) {
    code = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(why, sizeof why, "the evaluation closed");
  } else {
    v->reps[v->nreps++] = s;
    plain_ok = 1;
  }
  pthread_mutex_unlock(&c->mu);
  /* Accepted reports always; refusals as updates' are: an identity's first
   * few per interval in full, the rest counted (coord_limits.c). */
  if (c->audit && (code == GRPC_STATUS_OK || coord_refusal_note(c, peer->name, coord_refusal_reason(code)))) {
    json_t *f = json_pack("{s:s,s:I,s:s}", "client", peer->name, "round", (json_int_t)round, "outcome",
                          code == GRPC_STATUS_OK ? "accepted" : "refused");
    if (f && code != GRPC_STATUS_OK) json_object_set_new(f, "reason", json_string(why));
    fc_audit_append(c->audit, "eval_report", f);
  }
  if (code != GRPC_STATUS_OK) {
    FC_WARN(MOD, "evaluation report from %s refused: %s", peer->name, why);
    fc_scall_finish_retry(call, code, why, retry);
    return;
  }
  if (plain_ok)
    FC_INFO(MOD, "evaluation of round %llu: results from %s accepted (%.0f examples, accuracy %.2f%%)",
            (unsigned long long)round, peer->name, s.examples, 100 * s.correct / s.examples);
  else
    FC_INFO(MOD, "evaluation of round %llu: masked statistics from %s accepted", (unsigned long long)round, peer->name);
  Fedc__V1__EvalReportResponse resp = FEDC__V1__EVAL_REPORT_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

/* ---- the evaluation's SecAgg messages ---- */

/* The evaluation's instance if this request names it and the caller is in it (under mu). */
static fc_sa_server *ev_sa_for(fc_coord *c, uint64_t round, const char *client, uint32_t *idx) {
  if (!c->ev || !c->ev->sa || !(round & FC_EVAL_ID_BIT) || fc_sa_server_params(c->ev->sa)->round != round) return NULL;
  *idx = fc_sa_server_index(c->ev->sa, client);
  return *idx ? c->ev->sa : NULL;
}

void coord_eval_sa_withdraw(fc_coord *c, const char *client) {
  if (!c->ev || !c->ev->sa) return;
  uint32_t idx = fc_sa_server_index(c->ev->sa, client);
  if (!idx) return;
  fc_sa_server_withdraw(c->ev->sa, idx);
  ev_sa_check(c, c->ev->sa);
}

void coord_h_sa_submit_any(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__SecAggSubmitRequest *req = (const Fedc__V1__SecAggSubmitRequest *)fc_scall_request(call);
  if (!(req->round & FC_EVAL_ID_BIT)) {
    coord_h_secagg_submit(call, ctx);
    return;
  }
  char why[300] = "";
  uint32_t idx = 0;
  int rc;
  pthread_mutex_lock(&c->mu);
  fc_sa_server *s = ev_sa_for(c, req->round, peer->name, &idx);
  if (!s) {
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "%s is not in a running evaluation of that id", peer->name);
  } else if ((rc = fc_sa_server_submit(s, idx, peer->cert_sha256, req, why, sizeof why)) == FEDC_OK) {
    ev_sa_check(c, s);
  }
  pthread_mutex_unlock(&c->mu);
  if (rc != FEDC_OK) {
    FC_WARN(MOD, "evaluation %s stage message from %s refused: %s", fc_sa_stage_name((int)req->stage), peer->name, why);
    fc_scall_finish(call,
                    rc == FEDC_ERR_REJECTED     ? GRPC_STATUS_FAILED_PRECONDITION
                    : rc == FEDC_ERR_PERMISSION ? GRPC_STATUS_PERMISSION_DENIED
                    : rc == FEDC_ERR_NOMEM      ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                : GRPC_STATUS_INVALID_ARGUMENT,
                    why, NULL);
    return;
  }
  Fedc__V1__SecAggSubmitResponse resp = FEDC__V1__SEC_AGG_SUBMIT_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void coord_h_sa_poll_any(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__SecAggPollRequest *req = (const Fedc__V1__SecAggPollRequest *)fc_scall_request(call);
  if (!(req->round & FC_EVAL_ID_BIT)) {
    coord_h_secagg_poll(call, ctx);
    return;
  }
  Fedc__V1__SecAggPollResponse resp = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
  uint32_t idx = 0;
  pthread_mutex_lock(&c->mu);
  fc_sa_server *s = ev_sa_for(c, req->round, peer->name, &idx);
  if (!s) {
    resp.status = FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED;
    resp.reason = (char *)"that evaluation is over";
  } else {
    fc_sa_server_poll(s, idx, (int)req->stage, &resp);
  }
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base); /* packed under the lock: it points into the session */
  if (s) fc_sa_poll_clear(&resp);
  pthread_mutex_unlock(&c->mu);
}


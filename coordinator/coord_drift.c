/*
 * coord_drift.c - model drift on the coordinator's reference set
 * (--reference-data): each new version's prediction distribution on a fixed
 * set of inputs is compared with the previous published version's by the
 * population stability index (drift.h, the I/O-free arithmetic), before the
 * version is signed and published.
 *
 * When each piece runs:
 *   coordinator start (after the model)  coord_drift_init: the reference set, the
 *                                        current version's distribution as baseline
 *   finalize (driver, no mu)             coord_drift_check: the new version's
 *                                        distribution, PSI, warning and audit "drift"
 *   after publish (driver, under mu)     coord_drift_published_locked: the new
 *                                        baseline, metrics, the round record's dr_*
 *                                        fields, and under "hold" the pause
 *
 * Policy: at or over the threshold, "flag" warns, audits and counts; "hold"
 * does the same and then pauses the engine (as `fedc round pause`, persisted
 * in state.json with the reason) once the version is published: the version
 * is not withheld (it is signed and announced as usual), but no new round
 * starts until an admin's `fedc round resume`. A version that fails to
 * publish leaves the baseline where it was.
 *
 * Invariants: baseline and pending belong to the driver thread (init runs
 * before it starts); only the _locked call touches the engine, metrics and
 * the round record. Built-in MLPs only: the model must be one common/mlp.h
 * runs, and the reference images as wide as its input (refused at start).
 * May call: common/mlp.h, client/data.h (the IDX loader), drift.h, audit.h,
 * engine.h, coord_state.c (coord_state_dirty_locked). Nothing calls back.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/data.h"
#include "common/log.h"
#include "common/mlp.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/drift.h"
#include "fedc/error.h"

#define MOD "coordinator"

typedef struct drift_dist {
  uint64_t version;
  double *cls;  /* predicted-class proportions */
  double *soft; /* mean softmax probabilities */
} drift_dist;

struct coord_drift {
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset ref;
  uint32_t classes;
  uint64_t *counts;
  drift_dist base, next;
  int has_next, hold;
  double psi, psi_soft;
  int tripped;
};

static int dist_alloc(drift_dist *d, uint32_t k) {
  d->cls = calloc(k, sizeof *d->cls);
  d->soft = calloc(k, sizeof *d->soft);
  return d->cls && d->soft ? FEDC_OK : FEDC_ERR_NOMEM;
}

/* The distribution of params on the reference set into *d. */
static int measure(struct coord_drift *g, const float *params, uint64_t version, drift_dist *d) {
  int rc = fc_mlp_predict(&g->mlp, g->ws, params, &g->ref, g->counts, d->soft);
  if (rc != FEDC_OK) return rc;
  fc_drift_normalize_counts(g->counts, g->classes, d->cls);
  for (uint32_t i = 0; i < g->classes; i++) d->soft[i] /= g->ref.n;
  d->version = version;
  return FEDC_OK;
}

static void drift_free(struct coord_drift *g) {
  if (!g) return;
  fc_mlp_ws_destroy(g->ws);
  fc_dataset_free(&g->ref);
  free(g->counts);
  free(g->base.cls);
  free(g->base.soft);
  free(g->next.cls);
  free(g->next.soft);
  free(g);
}

int coord_drift_init(fc_coord *c, char *err, size_t errlen) {
  const fc_coord_cfg *cfg = &c->cfg;
  if (!cfg->reference_data[0]) return FEDC_OK;
  char why[300];
  int rc = FEDC_ERR_NOMEM;
  struct coord_drift *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory for the drift check");
    goto fail;
  }
  if (fc_mlp_from_spec(&c->model->spec, &g->mlp, why, sizeof why) != FEDC_OK) {
    snprintf(err, errlen,
             "--reference-data: drift is measured by running the model, which the coordinator can do only for the "
             "built-in MLP models (--model), not this one: %s",
             why);
    rc = FEDC_ERR_INVALID;
    goto fail;
  }
  if ((rc = fc_idx_load(cfg->reference_data, NULL, &g->ref, why, sizeof why)) != FEDC_OK) {
    snprintf(err, errlen, "--reference-data: %s", why);
    goto fail;
  }
  if (g->ref.dim != g->mlp.sizes[0]) {
    snprintf(err, errlen, "--reference-data %s: images of %u pixels, but the model takes %u inputs",
             cfg->reference_data, g->ref.dim, g->mlp.sizes[0]);
    rc = FEDC_ERR_SHAPE;
    goto fail;
  }
  g->classes = g->mlp.sizes[g->mlp.nlayers];
  g->hold = strcmp(cfg->drift_policy, "hold") == 0;
  rc = FEDC_ERR_NOMEM;
  if (!(g->ws = fc_mlp_ws_create(&g->mlp, 0)) || !(g->counts = calloc(g->classes, sizeof *g->counts)) ||
      dist_alloc(&g->base, g->classes) != FEDC_OK || dist_alloc(&g->next, g->classes) != FEDC_OK) {
    snprintf(err, errlen, "out of memory for the drift check");
    goto fail;
  }
  if ((rc = measure(g, c->model->data, c->model->version, &g->base)) != FEDC_OK) {
    snprintf(err, errlen, "--reference-data: running model v%llu on it failed: %s",
             (unsigned long long)c->model->version, fedc_strerror(rc));
    goto fail;
  }
  FC_INFO(MOD, "drift: %u reference images from %s; PSI threshold %g, policy %s; baseline model v%llu",
          g->ref.n, cfg->reference_data, cfg->drift_threshold, cfg->drift_policy,
          (unsigned long long)c->model->version);
  c->drift = g;
  return FEDC_OK;
fail:
  drift_free(g);
  return rc;
}

void coord_drift_free(fc_coord *c) {
  drift_free(c->drift);
  c->drift = NULL;
}

void coord_drift_check(fc_coord *c, const float *params, uint64_t version, uint64_t round) {
  struct coord_drift *g = c->drift;
  if (!g) return;
  g->has_next = 0;
  int rc = measure(g, params, version, &g->next);
  if (rc != FEDC_OK) {
    FC_WARN(MOD, "drift: running v%llu on the reference set failed (%s): not checked", (unsigned long long)version,
            fedc_strerror(rc));
    return;
  }
  g->psi = fc_drift_psi(g->next.cls, g->base.cls, g->classes, FC_DRIFT_EPS);
  g->psi_soft = fc_drift_psi(g->next.soft, g->base.soft, g->classes, FC_DRIFT_EPS);
  g->tripped = g->psi >= c->cfg.drift_threshold;
  g->has_next = 1;
  if (!g->tripped) {
    FC_DEBUG(MOD, "drift: v%llu against v%llu: PSI %.4f (softmax %.4f)", (unsigned long long)version,
             (unsigned long long)g->base.version, g->psi, g->psi_soft);
    return;
  }
  FC_WARN(MOD, "drift: model v%llu (round %llu) moved its predictions on the reference set: PSI %.4f against v%llu "
               "(threshold %g)%s",
          (unsigned long long)version, (unsigned long long)round, g->psi, (unsigned long long)g->base.version,
          c->cfg.drift_threshold,
          g->hold ? "; it is published, then the federation pauses until `fedc round resume`" : "");
  fc_audit_append(c->audit, "drift",
                  json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:s}", "version", (json_int_t)version, "round",
                            (json_int_t)round, "baseline", (json_int_t)g->base.version, "psi", g->psi,
                            "psi_softmax", g->psi_soft, "threshold", c->cfg.drift_threshold, "action",
                            g->hold ? "hold" : "flag"));
}

void coord_drift_published_locked(fc_coord *c, fc_round_stats *r) {
  struct coord_drift *g = c->drift;
  if (!g || !g->has_next || !r->completed || r->version != g->next.version) return;
  g->has_next = 0;
  r->dr_checked = 1;
  r->dr_psi = g->psi;
  r->dr_psi_softmax = g->psi_soft;
  r->dr_threshold = c->cfg.drift_threshold;
  r->dr_tripped = g->tripped;
  snprintf(r->dr_action, sizeof r->dr_action, "%s", g->tripped ? (g->hold ? "hold" : "flag") : "");
  r->dr_baseline = g->base.version;
  r->dr_examples = g->ref.n;
  c->metrics.drift_checked++;
  c->metrics.drift_tripped += (uint64_t)g->tripped;
  c->metrics.drift_psi = g->psi;
  drift_dist t = g->base; /* the published version is the next one's baseline */
  g->base = g->next;
  g->next = t;
  if (g->tripped && g->hold) {
    snprintf(c->pause_reason, sizeof c->pause_reason,
             "drift hold: model v%llu's predictions on the reference set moved by PSI %.4f against v%llu "
             "(threshold %g); `fedc round resume` continues",
             (unsigned long long)r->version, g->psi, (unsigned long long)r->dr_baseline, c->cfg.drift_threshold);
    fc_engine_pause(c->engine, 1);
    coord_state_dirty_locked(c); /* the pause and its reason survive a restart */
  }
}

int coord_drift_round_pb(const fc_round_stats *s, Fedc__V1__RoundDrift *out) {
  if (!s->dr_checked && s->eval.dr_checked) { /* no reference set: the federated evaluation's check */
    const fc_round_eval *e = &s->eval;
    fedc__v1__round_drift__init(out);
    out->psi = e->dr_psi;
    out->psi_softmax = NAN;
    out->threshold = e->dr_threshold;
    out->tripped = e->dr_tripped != 0;
    out->action = (char *)e->dr_action;
    out->baseline_version = e->dr_baseline;
    out->examples = e->stats.examples > 0 && e->stats.examples < 4294967295.0 ? (uint32_t)e->stats.examples : 0;
    out->source = "federated";
    return 1;
  }
  if (!s->dr_checked) return 0;
  fedc__v1__round_drift__init(out);
  out->source = "reference";
  out->psi = s->dr_psi;
  out->psi_softmax = s->dr_psi_softmax;
  out->threshold = s->dr_threshold;
  out->tripped = s->dr_tripped != 0;
  out->action = (char *)s->dr_action;
  out->baseline_version = s->dr_baseline;
  out->examples = s->dr_examples;
  return 1;
}

/*
 * coord_drift_fed.c - model drift from the federated evaluation when the
 * coordinator has no reference set (issue 24: "the federated evaluation of
 * issue 22 feeds the same check when there is no reference set").
 *
 * What is compared: each completed evaluation's predicted-class totals (the
 * cohort's EvalReport.class_counts, summed; under secure aggregation the
 * unmasked sum, under DP the noised one: counts are a sum, so they travel
 * as the other totals do) as proportions, against those of the previous
 * completed evaluation, by the population stability index of drift.h with
 * --drift-threshold, and --drift-policy as for the reference set: "flag"
 * warns, audits ("drift", source "federated") and counts; "hold" also
 * pauses the engine until `fedc round resume`.
 *
 * Differences from the reference-set check (coord_drift.c), and why:
 *   - it runs after the version is published: an evaluation evaluates a
 *     published model, so "hold" stops the next round rather than this one;
 *   - the two distributions come from different cohorts and different
 *     held-out data, so some PSI is noise of the cohort draw; the threshold
 *     is the operator's (docs/operations.md gives the sizes measured);
 *   - the baseline is the last evaluated version, not the last published
 *     one (with --eval-every N they are N rounds apart).
 * A trainer that does not count predictions (a Python trainer, a custom
 * one) reports none: an evaluation whose class totals are all zero is not
 * checked, said once in the log, and never trips. Only the class counts of
 * the classes the task asked for (EvalParams.classes, from the built-in MLP's
 * output width) exist.
 *
 * Invariants: called under c->mu by coord_eval.c's ev_finish only; the
 * baseline lives in c->ev->fd (coord_eval_int.h). May call: drift.h, the
 * engine (pause), the logger. The audit record is returned, appended by the
 * caller after mu is released; a hold is reported up (coord_eval_drive's
 * COORD_EVAL_HELD) and persisted by the driver, which may call coord_state.c
 * (this file may not: coord_state.c calls coord_eval.c, which calls this).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/coord_eval_int.h"
#include "coordinator/drift.h"

#define MOD "coordinator"

json_t *coord_drift_fed_locked(fc_coord *c, uint64_t round, fc_round_eval *e, int *held) {
  struct coord_eval *v = c->ev;
  if (!v || c->drift || e->outcome != 1 || !v->nclasses) return NULL;
  fed_drift *fd = &v->fd;
  uint32_t k = v->nclasses;
  double cur[FC_EVAL_CLASSES_MAX];
  double total = e->stats.nclasses == k ? fc_drift_normalize_totals(e->stats.class_count, k, cur) : 0;
  if (!(total > 0)) {
    if (!fd->said_uncounted)
      FC_INFO(MOD, "drift: the federated evaluation of v%llu carries no predicted-class counts (its clients' "
                   "trainers do not report them): drift is not checked from federated evaluation while they do not",
              (unsigned long long)e->version);
    fd->said_uncounted = 1;
    return NULL;
  }
  json_t *audit = NULL;
  if (fd->have_base && fd->base_version != e->version) {
    const fc_coord_cfg *cfg = &c->cfg;
    int hold = strcmp(cfg->drift_policy, "hold") == 0;
    e->dr_checked = 1;
    e->dr_psi = fc_drift_psi(cur, fd->base, k, FC_DRIFT_EPS);
    e->dr_threshold = cfg->drift_threshold;
    e->dr_tripped = e->dr_psi >= cfg->drift_threshold;
    e->dr_baseline = fd->base_version;
    snprintf(e->dr_action, sizeof e->dr_action, "%s", e->dr_tripped ? (hold ? "hold" : "flag") : "");
    c->metrics.drift_checked++;
    c->metrics.drift_tripped += (uint64_t)e->dr_tripped;
    c->metrics.drift_psi = e->dr_psi;
    if (!e->dr_tripped) {
      FC_DEBUG(MOD, "drift (federated evaluation): v%llu against v%llu: PSI %.4f", (unsigned long long)e->version,
               (unsigned long long)fd->base_version, e->dr_psi);
    } else {
      FC_WARN(MOD, "drift: model v%llu (round %llu) moved its predictions on the clients' evaluation data: PSI %.4f "
                   "against v%llu (threshold %g; federated evaluation, no reference set)%s",
              (unsigned long long)e->version, (unsigned long long)round, e->dr_psi,
              (unsigned long long)fd->base_version, cfg->drift_threshold,
              hold ? "; the federation pauses until `fedc round resume`" : "");
      audit = json_pack("{s:I,s:I,s:I,s:f,s:f,s:s,s:s,s:f}", "version", (json_int_t)e->version, "round",
                        (json_int_t)round, "baseline", (json_int_t)fd->base_version, "psi", e->dr_psi, "threshold",
                        cfg->drift_threshold, "action", hold ? "hold" : "flag", "source", "federated", "examples",
                        total);
      if (hold) {
        snprintf(c->pause_reason, sizeof c->pause_reason,
                 "drift hold: model v%llu's predictions in the federated evaluation moved by PSI %.4f against v%llu "
                 "(threshold %g); `fedc round resume` continues",
                 (unsigned long long)e->version, e->dr_psi, (unsigned long long)fd->base_version,
                 cfg->drift_threshold);
        fc_engine_pause(c->engine, 1);
        *held = 1; /* the driver persists the pause and its reason (state.json) */
      }
    }
  }
  memcpy(fd->base, cur, k * sizeof cur[0]);
  fd->base_version = e->version;
  fd->have_base = 1;
  return audit;
}

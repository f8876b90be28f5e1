/*
 * store_drift.c - the "drift" object of a round record in rounds.jsonl
 * (store.c writes and reads the rest; coord_drift.c fills the fields), and
 * of a federated evaluation's line (coord_drift_fed.c fills it; then also
 * the evaluation's "class_counts", the cohort's predicted-class totals):
 *
 *   psi            population stability index of the version's predicted-class
 *                  histogram on the reference set against the previous version's
 *   psi_softmax    ... of the mean softmax probabilities
 *   threshold      --drift-threshold in force
 *   tripped        psi >= threshold
 *   action         "flag" | "hold" (tripped only)
 *   baseline       the version compared against
 *   examples       reference images (round record only)
 *   source         "reference" (round record) | "federated" (evaluation line)
 *
 * Absent for rounds not checked (no --reference-data, abandoned rounds), and
 * in an evaluation line unless the federated check ran (no reference set,
 * predicted-class counts reported, a previous evaluation to compare with).
 */
#include <math.h>
#include <stdio.h>

#include "coordinator/store.h"

void fc_store_drift_put(json_t *o, const fc_round_stats *r) {
  if (!o || !r->dr_checked) return;
  json_t *d = json_pack("{s:f,s:f,s:f,s:b,s:I,s:I}", "psi", isfinite(r->dr_psi) ? r->dr_psi : -1.0, "psi_softmax",
                        isfinite(r->dr_psi_softmax) ? r->dr_psi_softmax : -1.0, "threshold", r->dr_threshold,
                        "tripped", r->dr_tripped, "baseline", (json_int_t)r->dr_baseline, "examples",
                        (json_int_t)r->dr_examples);
  if (!d) return;
  if (r->dr_action[0]) json_object_set_new(d, "action", json_string(r->dr_action));
  json_object_set_new(d, "source", json_string("reference"));
  json_object_set_new(o, "drift", d);
}

void fc_store_eval_drift_put(json_t *v, const fc_round_eval *e) {
  double classed = 0;
  for (uint32_t i = 0; i < e->stats.nclasses && i < FC_EVAL_CLASSES_MAX; i++) classed += e->stats.class_count[i];
  if (!v || !(classed > 0)) return;
  json_t *a = json_array();
  for (uint32_t i = 0; a && i < e->stats.nclasses && i < FC_EVAL_CLASSES_MAX; i++)
    json_array_append_new(a, json_real(e->stats.class_count[i]));
  if (a) json_object_set_new(v, "class_counts", a);
  if (!e->dr_checked) return;
  json_t *d = json_pack("{s:f,s:f,s:b,s:I,s:s}", "psi", isfinite(e->dr_psi) ? e->dr_psi : -1.0, "threshold",
                        e->dr_threshold, "tripped", e->dr_tripped, "baseline", (json_int_t)e->dr_baseline, "source",
                        "federated");
  if (!d) return;
  if (e->dr_action[0]) json_object_set_new(d, "action", json_string(e->dr_action));
  json_object_set_new(v, "drift", d);
}

void fc_store_eval_drift_get(const json_t *v, fc_round_eval *e) {
  const json_t *a = json_object_get(v, "class_counts");
  if (json_is_array(a) && json_array_size(a) <= FC_EVAL_CLASSES_MAX) {
    e->stats.nclasses = (uint32_t)json_array_size(a);
    for (uint32_t i = 0; i < e->stats.nclasses; i++) {
      double x = json_number_value(json_array_get(a, i));
      e->stats.class_count[i] = isfinite(x) && x > 0 ? x : 0;
    }
  }
  const json_t *d = json_object_get(v, "drift");
  if (!json_is_object(d) || !json_is_number(json_object_get(d, "psi"))) return;
  e->dr_checked = 1;
  e->dr_psi = json_number_value(json_object_get(d, "psi"));
  e->dr_threshold = json_number_value(json_object_get(d, "threshold"));
  e->dr_tripped = json_is_true(json_object_get(d, "tripped"));
  const char *act = json_string_value(json_object_get(d, "action"));
  snprintf(e->dr_action, sizeof e->dr_action, "%s", act ? act : "");
  json_int_t b = json_integer_value(json_object_get(d, "baseline"));
  e->dr_baseline = b > 0 ? (uint64_t)b : 0;
}

void fc_store_drift_get(const json_t *o, fc_round_stats *r) {
  const json_t *d = json_object_get(o, "drift");
  if (!json_is_object(d) || !json_is_number(json_object_get(d, "psi"))) return;
  r->dr_checked = 1;
  r->dr_psi = json_number_value(json_object_get(d, "psi"));
  r->dr_psi_softmax = json_number_value(json_object_get(d, "psi_softmax"));
  r->dr_threshold = json_number_value(json_object_get(d, "threshold"));
  r->dr_tripped = json_is_true(json_object_get(d, "tripped"));
  const char *a = json_string_value(json_object_get(d, "action"));
  snprintf(r->dr_action, sizeof r->dr_action, "%s", a ? a : "");
  json_int_t b = json_integer_value(json_object_get(d, "baseline")), n = json_integer_value(json_object_get(d, "examples"));
  r->dr_baseline = b > 0 ? (uint64_t)b : 0;
  r->dr_examples = n > 0 && n <= UINT32_MAX ? (uint32_t)n : 0;
}

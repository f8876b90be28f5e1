/*
 * store_drift.c - the "drift" object of a round record in rounds.jsonl
 * (store.c writes and reads the rest; coord_drift.c fills the fields):
 *
 *   psi            population stability index of the version's predicted-class
 *                  histogram on the reference set against the previous version's
 *   psi_softmax    ... of the mean softmax probabilities
 *   threshold      --drift-threshold in force
 *   tripped        psi >= threshold
 *   action         "flag" | "hold" (tripped only)
 *   baseline       the version compared against
 *   examples       reference images
 *
 * Absent for rounds not checked (no --reference-data, abandoned rounds).
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
  json_object_set_new(o, "drift", d);
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

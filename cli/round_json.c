/*
 * round_json.c - the JSON of a round record's anomaly statistics and model
 * drift, as `fedc rounds --json` prints them (cmd_admin.c). Calls nothing of
 * cli/ (cmd_admin.c calls it; cmd_clients.c calls cmd_admin.c).
 */
#include <math.h>
#include <stdint.h>

#include "cli/cli.h"
#include "fedc/v1/fedc.pb-c.h"

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }
static json_t *u64(uint64_t v) { return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v); }

json_t *cli_drift_json(const Fedc__V1__RoundDrift *d) {
  json_t *o = json_object();
  json_object_set_new(o, "psi", num(d->psi));
  json_object_set_new(o, "psi_softmax", num(d->psi_softmax));
  json_object_set_new(o, "threshold", num(d->threshold));
  json_object_set_new(o, "tripped", json_boolean(d->tripped));
  if (d->action && d->action[0]) json_object_set_new(o, "action", json_string(d->action));
  json_object_set_new(o, "baseline", u64(d->baseline_version));
  json_object_set_new(o, "examples", json_integer(d->examples));
  json_object_set_new(o, "source", json_string(d->source && d->source[0] ? d->source : "reference"));
  return o;
}

json_t *cli_anomaly_json(const Fedc__V1__RoundAnomaly *a) {
  json_t *o = json_object(), *fl = json_array();
  for (size_t i = 0; i < a->n_flagged; i++) json_array_append_new(fl, json_string(a->flagged[i]));
  json_object_set_new(o, "inputs", json_integer(a->inputs));
  json_object_set_new(o, "norm", json_pack("[o,o,o]", num(a->norm_min), num(a->norm_median), num(a->norm_max)));
  json_object_set_new(o, "cos_agg", num(a->cos_agg));
  json_object_set_new(o, "cos_prev", num(a->cos_prev));
  json_object_set_new(o, "top", json_pack("{s:s,s:o}", "client", a->top_client ? a->top_client : "", "score",
                                          num(a->top_score)));
  json_object_set_new(o, "flagged", fl);
  json_object_set_new(o, "flagged_count", json_integer(a->flagged_count));
  return o;
}

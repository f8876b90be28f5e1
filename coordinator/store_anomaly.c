/*
 * store_anomaly.c - the "anomaly" object of a round record in rounds.jsonl
 * (store.c writes and reads the rest; coord_anomaly.c fills the fields):
 *
 *   inputs         updates scored
 *   norm           [min, median, max] L2 norm of those updates
 *   cos_agg        median cosine of an update to the round's aggregate
 *   cos_prev       ... to the previous round's aggregate (null: none yet)
 *   top            {"client", "score"}: the highest robust score this round
 *   flagged        identities whose score reached the threshold (first 4)
 *   flagged_count  how many in all (only when more than 4)
 *
 * Absent for rounds without scored inputs (secure aggregation, abandoned).
 */
#include <math.h>
#include <stdio.h>

#include "coordinator/store.h"

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

void fc_store_anomaly_put(json_t *o, const fc_round_stats *r) {
  if (!o || !r->an_inputs) return;
  json_t *a = json_object(), *fl = json_array();
  if (!a || !fl) {
    json_decref(a);
    json_decref(fl);
    return;
  }
  json_object_set_new(a, "inputs", json_integer(r->an_inputs));
  json_object_set_new(a, "norm", json_pack("[f,f,f]", r->an_norm[0], r->an_norm[1], r->an_norm[2]));
  json_object_set_new(a, "cos_agg", num_or_null(r->an_cos_agg));
  json_object_set_new(a, "cos_prev", num_or_null(r->an_cos_prev));
  json_object_set_new(a, "top", json_pack("{s:s,s:f}", "client", r->an_top, "score", r->an_top_score));
  for (uint32_t i = 0; i < r->an_nflagged && i < FC_ROUND_BLAMED_MAX; i++)
    json_array_append_new(fl, json_string(r->an_flagged[i]));
  json_object_set_new(a, "flagged", fl);
  if (r->an_nflagged > FC_ROUND_BLAMED_MAX) json_object_set_new(a, "flagged_count", json_integer(r->an_nflagged));
  json_object_set_new(o, "anomaly", a);
}

static double num(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

void fc_store_anomaly_get(const json_t *o, fc_round_stats *r) {
  const json_t *a = json_object_get(o, "anomaly");
  json_int_t n = json_integer_value(json_object_get(a, "inputs"));
  if (!json_is_object(a) || n <= 0 || n > UINT32_MAX) return;
  r->an_inputs = (uint32_t)n;
  const json_t *nm = json_object_get(a, "norm");
  for (size_t i = 0; i < 3; i++) r->an_norm[i] = json_number_value(json_array_get(nm, i));
  r->an_cos_agg = num(a, "cos_agg");
  r->an_cos_prev = num(a, "cos_prev");
  const json_t *top = json_object_get(a, "top");
  const char *who = json_string_value(json_object_get(top, "client"));
  snprintf(r->an_top, sizeof r->an_top, "%s", who ? who : "");
  r->an_top_score = json_number_value(json_object_get(top, "score"));
  const json_t *fl = json_object_get(a, "flagged");
  r->an_nflagged = 0;
  for (size_t i = 0; json_is_array(fl) && i < json_array_size(fl) && i < FC_ROUND_BLAMED_MAX; i++) {
    const char *name = json_string_value(json_array_get(fl, i));
    if (name) snprintf(r->an_flagged[r->an_nflagged++], sizeof r->an_flagged[0], "%s", name);
  }
  json_int_t cnt = json_integer_value(json_object_get(a, "flagged_count"));
  if (cnt > r->an_nflagged && cnt <= UINT32_MAX) r->an_nflagged = (uint32_t)cnt;
}

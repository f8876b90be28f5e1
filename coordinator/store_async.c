/*
 * store_async.c - the "async" object of a buffer's record in rounds.jsonl
 * (async mode, engine_async.c; store.c writes and reads the rest):
 *
 *   concurrency      clients allowed to train at once
 *   training         clients holding a task when the buffer closed
 *   staleness_hist   its updates 0, 1, 2, 3, 4-7, 8-15, 16+ versions behind
 *
 * Absent for synchronous rounds.
 */
#include <stdint.h>

#include "coordinator/store.h"

void fc_store_async_put(json_t *o, const fc_round_stats *r) {
  if (!o || !r->async) return;
  json_t *a = json_object(), *h = json_array();
  if (!a || !h) {
    json_decref(a);
    json_decref(h);
    return;
  }
  json_object_set_new(a, "concurrency", json_integer(r->concurrency));
  json_object_set_new(a, "training", json_integer(r->training));
  for (int i = 0; i < FC_STALE_BUCKETS; i++) json_array_append_new(h, json_integer(r->stale_hist[i]));
  json_object_set_new(a, "staleness_hist", h);
  json_object_set_new(o, "async", a);
}

static uint32_t u32_of(const json_t *v) {
  json_int_t x = json_integer_value(v);
  return x > 0 && x <= UINT32_MAX ? (uint32_t)x : 0;
}

void fc_store_async_get(const json_t *o, fc_round_stats *r) {
  const json_t *a = json_object_get(o, "async");
  if (!json_is_object(a)) return;
  r->async = 1;
  r->concurrency = u32_of(json_object_get(a, "concurrency"));
  r->training = u32_of(json_object_get(a, "training"));
  const json_t *h = json_object_get(a, "staleness_hist");
  for (size_t i = 0; json_is_array(h) && i < json_array_size(h) && i < FC_STALE_BUCKETS; i++)
    r->stale_hist[i] = u32_of(json_array_get(h, i));
}

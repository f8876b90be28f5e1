/*
 * status_async.c - what `fedc status` and `fedc rounds` show of async mode
 * (status_async.h): clients training of the concurrency cap, the open
 * buffer's fill and staleness histogram, refusals and expired tasks; per
 * buffer record its histogram. Buckets: 0, 1, 2, 3, 4-7, 8-15, 16+ versions.
 */
#include "cli/status_async.h"

#include <stdio.h>

static const char *BUCKETS[] = {"0", "1", "2", "3", "4-7", "8-15", "16+"};
#define NB (sizeof BUCKETS / sizeof BUCKETS[0])

static json_t *hist_json(const uint32_t *h, size_t n) {
  json_t *o = json_object();
  for (size_t i = 0; i < NB; i++) json_object_set_new(o, BUCKETS[i], json_integer(i < n ? h[i] : 0));
  return o;
}

void status_async_json(json_t *o, const Fedc__V1__AsyncStatus *a) {
  if (!a) return;
  json_t *j = json_object();
  json_object_set_new(j, "concurrency", json_integer(a->concurrency));
  json_object_set_new(j, "training", json_integer(a->training));
  json_object_set_new(j, "released", json_integer(a->released));
  json_object_set_new(j, "released_total", json_integer((json_int_t)a->released_total));
  json_object_set_new(j, "slot_ms", json_integer((json_int_t)a->slot_ms));
  json_object_set_new(j, "buffer_size", json_integer(a->buffer_size));
  json_object_set_new(j, "buffered", json_integer(a->buffered));
  json_object_set_new(j, "uploading", json_integer(a->uploading));
  json_object_set_new(j, "overdue", json_integer(a->overdue));
  json_object_set_new(j, "overdue_total", json_integer((json_int_t)a->overdue_total));
  json_object_set_new(j, "staleness_hist", hist_json(a->staleness_histogram, a->n_staleness_histogram));
  json_object_set_new(j, "stale_refused", json_integer((json_int_t)a->stale_refused));
  json_object_set_new(j, "expired", json_integer((json_int_t)a->expired));
  json_object_set_new(j, "staleness", json_string(a->staleness ? a->staleness : ""));
  json_object_set_new(j, "max_staleness", json_integer(a->max_staleness));
  if (a->calib_max_clients) {
    json_t *k = json_object();
    json_object_set_new(k, "cached", json_integer(a->calib_cached));
    json_object_set_new(k, "max_clients", json_integer(a->calib_max_clients));
    json_object_set_new(k, "evicted", json_integer((json_int_t)a->calib_evicted));
    json_object_set_new(j, "calibration", k);
  }
  json_object_set_new(o, "async", j);
}

static void hist_text(const uint32_t *h, size_t n, char *buf, size_t len) {
  size_t at = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < NB && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%u", i ? "/" : "", i < n ? h[i] : 0);
}

void status_async_print(const Fedc__V1__AsyncStatus *a) {
  if (!a) return;
  char h[96];
  hist_text(a->staleness_histogram, a->n_staleness_histogram, h, sizeof h);
  printf("async:           %u of %u clients training; buffer %u of %u (%u uploading)\n", a->training,
         a->concurrency, a->buffered, a->buffer_size, a->uploading);
  if (a->slot_ms)
    printf("slots:           a task gives its slot up after %llu ms: %u running past it now, %llu since start\n",
           (unsigned long long)a->slot_ms, a->released, (unsigned long long)a->released_total);
  printf("staleness:       %s, max %u; open buffer by versions behind 0/1/2/3/4-7/8-15/16+: %s\n",
         a->staleness ? a->staleness : "?", a->max_staleness, h);
  printf("async refusals:  %llu too stale, %llu tasks expired\n", (unsigned long long)a->stale_refused,
         (unsigned long long)a->expired);
  if (a->calib_max_clients)
    printf("calibration:     latest updates of %u clients cached (room for %u; %llu evicted since start)\n",
           a->calib_cached, a->calib_max_clients, (unsigned long long)a->calib_evicted);
  if (a->overdue_total)
    printf("overdue uploads: %u streaming past their hold now (the buffer does not wait), %llu since start\n",
           a->overdue, (unsigned long long)a->overdue_total);
}

json_t *round_async_json(const Fedc__V1__RoundAsync *a) {
  json_t *j = json_object();
  json_object_set_new(j, "concurrency", json_integer(a->concurrency));
  json_object_set_new(j, "training", json_integer(a->training));
  json_object_set_new(j, "staleness_hist", hist_json(a->staleness_histogram, a->n_staleness_histogram));
  return j;
}

const char *round_async_cell(const Fedc__V1__RoundRecord *r, char *buf, size_t len) {
  if (!r->async) return "-";
  hist_text(r->async->staleness_histogram, r->async->n_staleness_histogram, buf, len);
  return buf;
}

/*
 * refusals.c - refusal counts per identity and interval (refusals.h).
 *
 * One interval's identities in an array (at most max_ids, allocated as they
 * come) with an open-addressing index; both are emptied when the interval
 * is flushed, so nothing outlives its interval and memory is bounded by
 * max_ids whatever the number of identities over time. Identities past
 * max_ids share the "*" row.
 */
#include "coordinator/refusals.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

typedef struct row {
  char client[72];
  uint64_t refused, recorded;
  uint64_t by[FC_RF_N];
} row;

struct fc_refusals {
  pthread_mutex_t mu;
  fc_refusals_cfg cfg;
  int detail;
  uint64_t from; /* this interval's start */
  row *rows;
  uint32_t n, cap;
  uint32_t *slots, nslots;
  row others;             /* identities past max_ids */
  uint64_t counted_total;
};

static const char *const names[FC_RF_N] = {"invalid", "precondition", "late", "limit", "other", "calls"};

const char *fc_refusal_reason_name(int r) { return r >= 0 && r < FC_RF_N ? names[r] : "other"; }

static uint32_t hash_name(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

int fc_refusals_create(const fc_refusals_cfg *cfg, uint64_t now_ms, fc_refusals **out) {
  if (!cfg->interval_ms || !cfg->max_ids || cfg->max_ids > (1u << 20)) return FEDC_ERR_INVALID;
  fc_refusals *r = calloc(1, sizeof *r);
  if (!r) return FEDC_ERR_NOMEM;
  r->cfg = *cfg;
  r->detail = 1;
  r->from = now_ms;
  r->nslots = 2;
  while (r->nslots < 2 * cfg->max_ids) r->nslots *= 2;
  if (!(r->slots = malloc((size_t)r->nslots * sizeof *r->slots))) {
    free(r);
    return FEDC_ERR_NOMEM;
  }
  memset(r->slots, 0xff, (size_t)r->nslots * sizeof *r->slots);
  snprintf(r->others.client, sizeof r->others.client, "*");
  pthread_mutex_init(&r->mu, NULL);
  *out = r;
  return FEDC_OK;
}

void fc_refusals_destroy(fc_refusals *r) {
  if (!r) return;
  pthread_mutex_destroy(&r->mu);
  free(r->rows);
  free(r->slots);
  free(r);
}

/* client's row this interval, or NULL (no room: the caller uses `others`). */
static row *find_or_add(fc_refusals *r, const char *client) {
  if (strlen(client) >= sizeof r->rows->client) return NULL;
  uint32_t h = hash_name(client) & (r->nslots - 1);
  for (; r->slots[h] != UINT32_MAX; h = (h + 1) & (r->nslots - 1))
    if (strcmp(r->rows[r->slots[h]].client, client) == 0) return &r->rows[r->slots[h]];
  if (r->n == r->cfg.max_ids) return NULL;
  if (r->n == r->cap) {
    uint32_t cap = r->cap ? r->cap * 2 : 16;
    if (cap > r->cfg.max_ids) cap = r->cfg.max_ids;
    row *nr = realloc(r->rows, (size_t)cap * sizeof *nr);
    if (!nr) return NULL;
    r->rows = nr;
    r->cap = cap;
  }
  row *x = &r->rows[r->n];
  memset(x, 0, sizeof *x);
  strcpy(x->client, client);
  r->slots[h] = r->n++;
  return x;
}

int fc_refusals_note(fc_refusals *r, const char *client, int reason, uint64_t now_ms) {
  (void)now_ms; /* the interval is closed by flush, which the caller runs on its clock */
  if (reason < 0 || reason >= FC_RF_N) reason = FC_RF_OTHER;
  pthread_mutex_lock(&r->mu);
  row *x = find_or_add(r, client);
  if (!x) x = &r->others;
  x->refused++;
  x->by[reason]++;
  int full = r->detail && x != &r->others && reason != FC_RF_CALLS && x->recorded < r->cfg.detailed;
  if (full) x->recorded++;
  else r->counted_total++;
  pthread_mutex_unlock(&r->mu);
  return full;
}

void fc_refusals_set_detail(fc_refusals *r, int on) {
  pthread_mutex_lock(&r->mu);
  r->detail = on != 0;
  pthread_mutex_unlock(&r->mu);
}

static json_t *row_json(const row *x, uint64_t from, uint64_t to) {
  json_t *by = json_object();
  json_t *f = json_pack("{s:s,s:I,s:I,s:I,s:I}", "client", x->client, "from_ms", (json_int_t)from, "to_ms",
                        (json_int_t)to, "refused", (json_int_t)x->refused, "recorded", (json_int_t)x->recorded);
  if (!by || !f) {
    json_decref(by);
    json_decref(f);
    return NULL;
  }
  for (int k = 0; k < FC_RF_N; k++)
    if (x->by[k]) json_object_set_new(by, names[k], json_integer((json_int_t)x->by[k]));
  json_object_set_new(f, "by_reason", by);
  return f;
}

size_t fc_refusals_flush(fc_refusals *r, uint64_t now_ms, int force, fc_refusals_emit emit, void *ctx) {
  pthread_mutex_lock(&r->mu);
  if (!force && now_ms - r->from < r->cfg.interval_ms && now_ms >= r->from) {
    pthread_mutex_unlock(&r->mu);
    return 0;
  }
  /* Take the interval out and start the next one, then emit unlocked (emit
   * writes to the audit log; notes keep coming meanwhile). */
  row *rows = r->rows, others = r->others;
  uint32_t n = r->n;
  uint64_t from = r->from;
  int aggregate = !r->detail;
  r->rows = NULL;
  r->n = r->cap = 0;
  memset(r->slots, 0xff, (size_t)r->nslots * sizeof *r->slots);
  memset(&r->others, 0, sizeof r->others);
  snprintf(r->others.client, sizeof r->others.client, "*");
  r->from = now_ms;
  pthread_mutex_unlock(&r->mu);
  size_t emitted = 0;
  uint64_t ids = 0;
  if (aggregate) { /* detail off: one record for everyone */
    for (uint32_t i = 0; i < n; i++) {
      others.refused += rows[i].refused;
      others.recorded += rows[i].recorded;
      for (int k = 0; k < FC_RF_N; k++) others.by[k] += rows[i].by[k];
    }
    ids = n;
    n = 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (rows[i].refused == rows[i].recorded) continue; /* all of it is on record already */
    json_t *f = row_json(&rows[i], from, now_ms);
    if (f) {
      emit(f, ctx);
      emitted++;
    }
  }
  if (others.refused) {
    json_t *f = row_json(&others, from, now_ms);
    if (f && ids) json_object_set_new(f, "identities", json_integer((json_int_t)ids));
    if (f) {
      emit(f, ctx);
      emitted++;
    }
  }
  free(rows);
  return emitted;
}

uint64_t fc_refusals_counted(fc_refusals *r) {
  pthread_mutex_lock(&r->mu);
  uint64_t n = r->counted_total;
  pthread_mutex_unlock(&r->mu);
  return n;
}

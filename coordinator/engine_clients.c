/*
 * engine_clients.c - the round engine's client table and its token buckets:
 * records by identity (an open-addressing index over a growing array), the
 * per-identity and shared ("stranger") rate limits in engine time, and the
 * count of live clients a round (or a new async federation) waits for.
 *
 * I/O-free like the rest of the engine (engine.h): no clock, no threads.
 * Owns: e->recs, e->slots, the stranger bucket, the live count's memo
 * (live_short, live_counted_at; check-ins set live_dirty).
 * May call: nothing of the engine's (engine.c, engine_async.c and
 * engine_eval.c call it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/engine.h"
#include "coordinator/engine_int.h"
#include "fedc/error.h"

uint32_t eng_hash_name(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

/* (Re)build the index with n slots (a power of two above 2 x nrecs). */
int eng_rebuild_slots(fc_engine *e, uint32_t n) {
  uint32_t *s = malloc(n * sizeof *s);
  if (!s) return FEDC_ERR_NOMEM;
  for (uint32_t i = 0; i < n; i++) s[i] = UINT32_MAX;
  for (uint32_t r = 0; r < e->nrecs; r++) {
    uint32_t h = eng_hash_name(e->recs[r].name) & (n - 1);
    while (s[h] != UINT32_MAX) h = (h + 1) & (n - 1);
    s[h] = r;
  }
  free(e->slots);
  e->slots = s;
  e->nslots = n;
  return FEDC_OK;
}

int eng_grow_slots(fc_engine *e) { return eng_rebuild_slots(e, e->nslots ? e->nslots * 2 : 256); }

client_rec *eng_find(fc_engine *e, const char *name) {
  if (!e->nslots) return NULL;
  uint32_t h = eng_hash_name(name) & (e->nslots - 1);
  while (e->slots[h] != UINT32_MAX) {
    client_rec *r = &e->recs[e->slots[h]];
    if (strcmp(r->name, name) == 0) return r;
    h = (h + 1) & (e->nslots - 1);
  }
  return NULL;
}

client_rec *eng_find_or_add(fc_engine *e, const char *name) {
  client_rec *r = eng_find(e, name);
  if (r) return r;
  if (e->nrecs >= e->cfg.max_clients || strlen(name) >= sizeof r->name) return NULL;
  if ((e->nrecs + 1) * 2 > e->nslots && eng_grow_slots(e) != FEDC_OK) return NULL;
  if (e->nrecs == e->caprecs) {
    uint32_t n = e->caprecs ? e->caprecs * 2 : 128;
    client_rec *nr = realloc(e->recs, n * sizeof *nr);
    if (!nr) return NULL;
    e->recs = nr;
    e->caprecs = n;
  }
  r = &e->recs[e->nrecs];
  memset(r, 0, sizeof *r);
  strcpy(r->name, name);
  uint32_t h = eng_hash_name(name) & (e->nslots - 1);
  while (e->slots[h] != UINT32_MAX) h = (h + 1) & (e->nslots - 1);
  e->slots[h] = e->nrecs++;
  return r;
}

/* A token bucket in engine time (engine_int.h). */
int eng_take_token(double *tokens, uint64_t *at, double rate, double burst, uint64_t now, uint32_t *retry_ms) {
  if (!(rate > 0)) return 1;
  if (*at == 0 || now < *at) {
    *tokens = burst;
  } else {
    *tokens += (double)(now - *at) * rate / 1000.0;
    if (*tokens > burst) *tokens = burst;
  }
  *at = now ? now : 1;
  if (*tokens >= 1) {
    *tokens -= 1;
    return 1;
  }
  double wait = (1 - *tokens) * 1000.0 / rate;
  *retry_ms = (uint32_t)(wait < 1 ? 1 : wait > 3600000 ? 3600000 : wait + 0.999);
  return 0;
}

/* An identity without a record takes from the shared bucket: 1, or 0 with
 * the wait in e->retry_ms. */
int eng_stranger_token(fc_engine *e, uint64_t now) {
  uint32_t wait = 0;
  if (eng_take_token(&e->stranger_tokens, &e->stranger_at, e->cfg.stranger_rate, e->cfg.stranger_burst, now, &wait))
    return 1;
  e->retry_ms = wait;
  return 0;
}

/* Are there enough live clients to start a round? Counting is O(clients):
 * done at most every LIVE_RECOUNT_MS while waiting (it was 2 full scans per
 * 50 ms tick, 15% of an idle coordinator's CPU with 15,000 clients), or at
 * once when a client that was not live checks in. Stops at the threshold. */
#define LIVE_RECOUNT_MS 500

int eng_enough_live(fc_engine *e, uint64_t now, uint32_t need) {
  /* Only "not enough" is remembered: it can only turn by a client becoming
   * live (dirty) or, for a recount, by time. */
  if (e->live_short && !e->live_dirty && now >= e->live_counted_at && now - e->live_counted_at < LIVE_RECOUNT_MS)
    return 0;
  e->live_dirty = 0;
  e->live_counted_at = now;
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->nrecs && n < need; i++) n += eng_selectable(e, &e->recs[i], now);
  e->live_short = n < need;
  return !e->live_short;
}

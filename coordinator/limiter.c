/*
 * limiter.c - per-identity call buckets (limiter.h).
 *
 * Entries live in an array that grows by doubling up to max_ids, indexed by
 * an open-addressing table of twice as many slots. Entries are never removed
 * one by one (that would need tombstones): when the array is full, a sweep
 * keeps only the entries not yet refilled (idle less than `full_ms`, the
 * longest time any class's bucket takes to refill from empty) and rebuilds
 * the index. If the sweep frees nothing, no entry can turn stale before the
 * oldest one does, so the next sweep waits until then; meanwhile identities
 * without an entry use the shared bucket. A bucket's refill is linear in
 * time, so one timestamp per entry serves all its classes.
 */
#include "coordinator/limiter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

typedef struct entry {
  char id[FC_LIMITER_ID_MAX];
  uint64_t at; /* engine time of the last refill */
  double tokens[FC_LIMITER_CLASSES];
} entry;

struct fc_limiter {
  pthread_mutex_t mu;
  fc_limiter_cfg cfg;
  uint64_t full_ms;
  entry *e;
  uint32_t n, cap;
  uint32_t *slots; /* index into e, UINT32_MAX = empty */
  uint32_t nslots;
  uint64_t next_sweep; /* no sweep can free an entry before this */
  entry shared;        /* identities without an entry */
  uint64_t refused[FC_LIMITER_CLASSES];
  uint64_t overflow_calls;
};

static uint32_t hash_id(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

static void refill(const fc_limiter *l, entry *x, uint64_t now) {
  int fresh = x->at == 0 || now < x->at;
  for (int k = 0; k < l->cfg.nclasses; k++) {
    const fc_rate *r = &l->cfg.cls[k];
    if (fresh) {
      x->tokens[k] = r->burst;
    } else {
      x->tokens[k] += (double)(now - x->at) * (r->rate > 0 ? r->rate : 0) / 1000.0;
      if (x->tokens[k] > r->burst) x->tokens[k] = r->burst;
    }
  }
  x->at = now ? now : 1;
}

/* Index the entries into s (nslots, a power of two above 2 x n); it replaces the old index. */
static void index_into(fc_limiter *l, uint32_t *s, uint32_t nslots) {
  for (uint32_t i = 0; i < nslots; i++) s[i] = UINT32_MAX;
  for (uint32_t i = 0; i < l->n; i++) {
    uint32_t h = hash_id(l->e[i].id) & (nslots - 1);
    while (s[h] != UINT32_MAX) h = (h + 1) & (nslots - 1);
    s[h] = i;
  }
  free(l->slots);
  l->slots = s;
  l->nslots = nslots;
}

static int rebuild(fc_limiter *l, uint32_t nslots) {
  uint32_t *s = malloc((size_t)nslots * sizeof *s);
  if (!s) return FEDC_ERR_NOMEM;
  index_into(l, s, nslots);
  return FEDC_OK;
}

int fc_limiter_create(const fc_limiter_cfg *cfg, fc_limiter **out) {
  if (cfg->nclasses < 1 || cfg->nclasses > FC_LIMITER_CLASSES || cfg->max_ids < 1 || cfg->max_ids > (1u << 24))
    return FEDC_ERR_INVALID;
  fc_limiter *l = calloc(1, sizeof *l);
  if (!l) return FEDC_ERR_NOMEM;
  l->cfg = *cfg;
  for (int k = 0; k < cfg->nclasses; k++) {
    fc_rate *r = &l->cfg.cls[k];
    if (r->burst < 1) r->burst = 1;
    uint64_t t = r->rate > 0 ? (uint64_t)(r->burst * 1000.0 / r->rate) + 1 : 0;
    if (t > l->full_ms) l->full_ms = t;
  }
  pthread_mutex_init(&l->mu, NULL);
  if (rebuild(l, 256) != FEDC_OK) {
    fc_limiter_destroy(l);
    return FEDC_ERR_NOMEM;
  }
  *out = l;
  return FEDC_OK;
}

void fc_limiter_destroy(fc_limiter *l) {
  if (!l) return;
  pthread_mutex_destroy(&l->mu);
  free(l->e);
  free(l->slots);
  free(l);
}

static entry *find(fc_limiter *l, const char *id) {
  uint32_t h = hash_id(id) & (l->nslots - 1);
  for (; l->slots[h] != UINT32_MAX; h = (h + 1) & (l->nslots - 1))
    if (strcmp(l->e[l->slots[h]].id, id) == 0) return &l->e[l->slots[h]];
  return NULL;
}

/* Keep the entries not yet refilled (see the file comment). Out of memory
 * for the new index: no sweep (the shared bucket serves meanwhile). */
static void sweep(fc_limiter *l, uint64_t now) {
  uint32_t *s = malloc((size_t)l->nslots * sizeof *s);
  if (!s) return;
  uint32_t kept = 0;
  uint64_t oldest = UINT64_MAX;
  for (uint32_t i = 0; i < l->n; i++) {
    entry *x = &l->e[i];
    if (now >= x->at && now - x->at >= l->full_ms) continue;
    if (x->at < oldest) oldest = x->at;
    if (kept != i) l->e[kept] = *x;
    kept++;
  }
  l->n = kept;
  index_into(l, s, l->nslots);
  l->next_sweep = kept == l->cap && oldest != UINT64_MAX ? oldest + l->full_ms : now;
}

static entry *find_or_add(fc_limiter *l, const char *id, uint64_t now) {
  if (strlen(id) >= FC_LIMITER_ID_MAX) return NULL;
  entry *x = find(l, id);
  if (x) return x;
  if (l->n == l->cap && l->cap < l->cfg.max_ids) {
    uint32_t cap = l->cap ? l->cap * 2 : 64;
    if (cap > l->cfg.max_ids) cap = l->cfg.max_ids;
    entry *ne = realloc(l->e, (size_t)cap * sizeof *ne);
    if (ne) {
      l->e = ne;
      l->cap = cap;
    }
  }
  if (l->n == l->cap && now >= l->next_sweep) sweep(l, now);
  if (l->n == l->cap) return NULL;
  if ((l->n + 1) * 2 > l->nslots && rebuild(l, l->nslots * 2) != FEDC_OK) return NULL;
  x = &l->e[l->n];
  memset(x, 0, sizeof *x);
  strcpy(x->id, id);
  uint32_t h = hash_id(id) & (l->nslots - 1);
  while (l->slots[h] != UINT32_MAX) h = (h + 1) & (l->nslots - 1);
  l->slots[h] = l->n++;
  return x;
}

int fc_limiter_take(fc_limiter *l, const char *id, int cls, uint64_t now_ms, uint32_t *retry_ms) {
  if (cls < 0 || cls >= l->cfg.nclasses) return 1;
  const fc_rate *r = &l->cfg.cls[cls];
  if (!(r->rate > 0)) return 1;
  pthread_mutex_lock(&l->mu);
  entry *x = find_or_add(l, id, now_ms);
  if (!x) {
    x = &l->shared;
    l->overflow_calls++;
  }
  refill(l, x, now_ms);
  int ok = x->tokens[cls] >= 1;
  if (ok) {
    x->tokens[cls] -= 1;
  } else {
    double wait = (1 - x->tokens[cls]) * 1000.0 / r->rate;
    *retry_ms = (uint32_t)(wait < 1 ? 1 : wait > 3600000 ? 3600000 : wait + 0.999);
    l->refused[cls]++;
  }
  pthread_mutex_unlock(&l->mu);
  return ok;
}

void fc_limiter_get_stats(fc_limiter *l, fc_limiter_stats *st) {
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&l->mu);
  st->tracked = l->n;
  memcpy(st->refused, l->refused, sizeof st->refused);
  st->overflow_calls = l->overflow_calls;
  pthread_mutex_unlock(&l->mu);
}

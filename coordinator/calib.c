/*
 * calib.c - cached update calibration (calib.h; CA2FL, Wang et al. 2024).
 *
 * The cache: up to max_clients entries, found by name through a chained
 * hash; each holds the client's latest update h_i and its examples n_i.
 * s = sum n_i h_i and w = sum n_i are kept in double as entries change, and
 * hbar = s / w is refreshed once per published buffer. The entries are also
 * on a list, least recently updated first, so eviction takes its head in
 * O(1) whatever the cache's size.
 */
#include "coordinator/calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "fedc/error.h"

#define NAME_MAX_LEN 72

typedef struct entry {
  char name[NAME_MAX_LEN];
  uint64_t examples;
  int32_t next;         /* hash chain; -1 ends it */
  int32_t older, newer; /* the recency list; -1 ends it */
  float *h;
} entry;

typedef struct staged {
  char name[NAME_MAX_LEN];
  uint64_t examples;
  float *d;
} staged;

struct fc_calib {
  size_t n;
  uint32_t max, count, nbuckets, rows, nstaged;
  uint64_t evicted;
  int32_t oldest, newest; /* the recency list's ends; -1 when empty */
  uint32_t since_rebuild; /* publishes since s and w were last summed afresh */
  entry *e;
  int32_t *bucket;
  staged *st;
  double *s, w;
  float *hbar;
};

static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

int fc_calib_create(size_t n, uint32_t max_clients, uint32_t rows, fc_calib **out) {
  *out = NULL;
  if (n == 0 || max_clients == 0 || rows == 0) return FEDC_ERR_INVALID;
  fc_calib *k = calloc(1, sizeof *k);
  if (!k) return FEDC_ERR_NOMEM;
  k->n = n;
  k->max = max_clients;
  k->rows = rows;
  k->nbuckets = 1;
  while (k->nbuckets < max_clients && k->nbuckets < (1u << 30)) k->nbuckets <<= 1;
  k->e = calloc(max_clients, sizeof *k->e);
  k->bucket = malloc(k->nbuckets * sizeof *k->bucket);
  k->st = calloc(rows, sizeof *k->st);
  k->s = calloc(n, sizeof *k->s);
  k->hbar = calloc(n, sizeof *k->hbar);
  if (!k->e || !k->bucket || !k->st || !k->s || !k->hbar) {
    fc_calib_free(k);
    return FEDC_ERR_NOMEM;
  }
  memset(k->bucket, 0xff, k->nbuckets * sizeof *k->bucket);
  k->oldest = k->newest = -1;
  *out = k;
  return FEDC_OK;
}

void fc_calib_free(fc_calib *k) {
  if (!k) return;
  if (k->e)
    for (uint32_t i = 0; i < k->max; i++) free(k->e[i].h); /* past count: buffers kept for reuse */
  if (k->st)
    for (uint32_t i = 0; i < k->rows; i++) free(k->st[i].d);
  free(k->e);
  free(k->bucket);
  free(k->st);
  free(k->s);
  free(k->hbar);
  free(k);
}

static int32_t find(const fc_calib *k, const char *name) {
  for (int32_t i = k->bucket[name_hash(name) & (k->nbuckets - 1)]; i >= 0; i = k->e[i].next)
    if (strcmp(k->e[i].name, name) == 0) return i;
  return -1;
}

static void unlink_entry(fc_calib *k, int32_t i) {
  int32_t *p = &k->bucket[name_hash(k->e[i].name) & (k->nbuckets - 1)];
  while (*p != i) p = &k->e[*p].next;
  *p = k->e[i].next;
}

static void link_entry(fc_calib *k, int32_t i) {
  uint32_t b = name_hash(k->e[i].name) & (k->nbuckets - 1);
  k->e[i].next = k->bucket[b];
  k->bucket[b] = i;
}

static void lru_unlink(fc_calib *k, int32_t i) {
  entry *e = &k->e[i];
  if (e->older >= 0) k->e[e->older].newer = e->newer;
  else k->oldest = e->newer;
  if (e->newer >= 0) k->e[e->newer].older = e->older;
  else k->newest = e->older;
}

/* i becomes the most recently updated. */
static void lru_push(fc_calib *k, int32_t i) {
  k->e[i].older = k->newest;
  k->e[i].newer = -1;
  if (k->newest >= 0) k->e[k->newest].newer = i;
  else k->oldest = i;
  k->newest = i;
}

/* s += sign * n_i h_i: an entry joining (sign 1) or leaving (-1). */
static void fold(fc_calib *k, const float *h, uint64_t examples, double sign) {
  double f = sign * (double)examples;
  for (size_t j = 0; j < k->n; j++) k->s[j] += f * h[j];
  k->w += f;
}

void fc_calib_begin(fc_calib *k) { k->nstaged = 0; }

void fc_calib_stage(fc_calib *k, const char *client, uint64_t examples, const float *x) {
  staged *st = NULL;
  for (uint32_t j = 0; j < k->nstaged && !st; j++)
    if (strcmp(k->st[j].name, client) == 0) st = &k->st[j];
  if (!st && k->nstaged < k->rows) {
    st = &k->st[k->nstaged];
    if (!st->d) st->d = malloc(k->n * sizeof *st->d);
    if (st->d) k->nstaged++;
    else st = NULL; /* out of memory: calibrated, not cached */
  }
  if (!st) return;
  snprintf(st->name, sizeof st->name, "%s", client);
  st->examples = examples;
  memcpy(st->d, x, k->n * sizeof *x);
}

void fc_calib_calibrate(const fc_calib *k, const char *client, float *x) {
  int32_t i = find(k, client);
  fc_saxpy((int)k->n, -1.0f, i >= 0 ? k->e[i].h : k->hbar, 1, x, 1);
}

void fc_calib_apply(fc_calib *k, const char *client, uint64_t examples, float *x) {
  fc_calib_stage(k, client, examples, x); /* raw, before it is calibrated */
  fc_calib_calibrate(k, client, x);
}

void fc_calib_finish(const fc_calib *k, float *delta) {
  fc_saxpy((int)k->n, 1.0f, k->hbar, 1, delta, 1);
}

/* The entry for a client not cached: a free one, or the least recently
 * updated, evicted. */
static int32_t take_entry(fc_calib *k) {
  if (k->count < k->max) return (int32_t)k->count++;
  int32_t old = k->oldest;
  lru_unlink(k, old);
  unlink_entry(k, old);
  fold(k, k->e[old].h, k->e[old].examples, -1.0);
  k->e[old].examples = 0;
  k->evicted++;
  return old;
}

void fc_calib_forget(fc_calib *k, const char *client) {
  for (uint32_t j = 0; j < k->nstaged; j++)
    if (strcmp(k->st[j].name, client) == 0) { /* swapped with the last staged row */
      staged t = k->st[j];
      k->st[j] = k->st[--k->nstaged];
      k->st[k->nstaged] = t;
      break;
    }
  int32_t i = find(k, client);
  if (i < 0) return;
  unlink_entry(k, i);
  lru_unlink(k, i);
  fold(k, k->e[i].h, k->e[i].examples, -1.0);
  int32_t last = (int32_t)k->count - 1;
  if (i != last) { /* the last entry moves into the hole; its h buffer and the freed one trade places */
    unlink_entry(k, last);
    entry t = k->e[i];
    k->e[i] = k->e[last];
    k->e[last] = t;
    link_entry(k, i);
    entry *m = &k->e[i]; /* its neighbours on the recency list now point at i */
    if (m->older >= 0) k->e[m->older].newer = i;
    else k->oldest = i;
    if (m->newer >= 0) k->e[m->newer].older = i;
    else k->newest = i;
  }
  k->count--;
}

/* s and w again from the entries: adding and removing the same n_i h_i in
 * double leaves rounding behind, which this bounds. */
static void rebuild(fc_calib *k) {
  memset(k->s, 0, k->n * sizeof *k->s);
  k->w = 0;
  for (uint32_t i = 0; i < k->count; i++) fold(k, k->e[i].h, k->e[i].examples, 1.0);
  k->since_rebuild = 0;
}

uint64_t fc_calib_capacity(size_t n, uint32_t rows, uint64_t budget) {
  uint64_t vec = (uint64_t)n * sizeof(float);
  uint64_t fixed = (uint64_t)rows * (vec + sizeof(staged)) + (uint64_t)n * (sizeof(double) + sizeof(float));
  uint64_t per = vec + sizeof(entry) + 2 * sizeof(int32_t) + 32; /* the entry, its buckets, malloc's header */
  return budget > fixed ? (budget - fixed) / per : 0;
}

void fc_calib_published(fc_calib *k) {
  /* The buffer's clients already cached are the most recently used before
   * any newcomer evicts: a newcomer never evicts a client of its own buffer
   * (a review's finding: that client then evicted another in turn). */
  for (uint32_t j = 0; j < k->nstaged; j++) {
    int32_t i = find(k, k->st[j].name);
    if (i >= 0) {
      lru_unlink(k, i);
      lru_push(k, i);
    }
  }
  for (uint32_t j = 0; j < k->nstaged; j++) {
    staged *st = &k->st[j];
    int32_t i = find(k, st->name);
    if (i >= 0) {
      fold(k, k->e[i].h, k->e[i].examples, -1.0);
    } else {
      i = take_entry(k);
      snprintf(k->e[i].name, sizeof k->e[i].name, "%s", st->name);
      link_entry(k, i);
      lru_push(k, i);
    }
    entry *e = &k->e[i];
    /* The staged buffer becomes the entry's and the entry's old one (none
     * for a slot never used; an evicted or forgotten client's for a reused
     * one) the stage's, where the next fc_calib_stage overwrites it: no copy. */
    float *t = e->h;
    e->h = st->d;
    st->d = t;
    e->examples = st->examples;
    fold(k, e->h, e->examples, 1.0);
  }
  k->nstaged = 0;
  if (++k->since_rebuild >= 256) rebuild(k);
  if (k->w > 0) {
    double inv = 1.0 / k->w;
    for (size_t j = 0; j < k->n; j++) k->hbar[j] = (float)(k->s[j] * inv);
  } else {
    memset(k->hbar, 0, k->n * sizeof *k->hbar);
  }
}

void fc_calib_get_info(const fc_calib *k, fc_calib_info *out) {
  out->cached = k->count;
  out->max_clients = k->max;
  out->staged = k->nstaged;
  out->evicted = k->evicted;
  out->weight = k->w > 0 ? (uint64_t)(k->w + 0.5) : 0;
}

/*
 * aggregate_robust.c - the robust aggregators (aggregate.h): coordinate-wise
 * median, coordinate-wise trimmed mean, Krum and Multi-Krum, Bulyan, and
 * centered clipping. Each needs every update of the round at once, so they
 * share one arena of max_updates x n floats. An upload lands in a staging
 * slot (agg_slots.h) as with FedAvg; a committed one is copied into the next
 * arena row under the lock, so rows 0..count-1 are always the round's
 * committed updates and nothing in flight (a late or cancelled upload) ever
 * writes there. round_finish runs the rule on those rows with the kernels of
 * kernels/robust.h. Weights are ignored: every committed update counts once
 * (what the rules' guarantees assume).
 *
 *   median        Yin et al. 2018, coordinate-wise median.
 *   trimmed_mean  Yin et al. 2018: drop floor(beta k) from each end per coordinate.
 *   krum          Blanchard et al. 2017: the update with the least sum of squared
 *                 distances to its k - f - 2 nearest others (needs k >= 2f + 3).
 *   multikrum     the mean of the m best-scored (m = k - f by default).
 *   bulyan        El Mhamdi et al. 2018: theta = k - 2f picked by Krum one at a
 *                 time, then per coordinate the mean of the theta - 2f values
 *                 nearest the median (needs k >= 4f + 3).
 *   centered_clip Karimireddy, He and Jaggi 2021: from the last round's result v,
 *                 `iters` times v += mean_i (x_i - v) min(1, tau / ||x_i - v||).
 *
 * Krum-family order (krum_before): by score; equal scores go to the lower
 * arena row, i.e. the update committed first this round; a score that is not
 * finite (NaN or inf, which fc_k_sqdist's double recomputation should never
 * let through) ranks after every finite one, so it can never be picked ahead
 * of one. tests/unit/test_krum_reference.c holds all three rules to a float64
 * reference of the papers' definitions, extreme values and exact ties included.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "coordinator/agg_slots.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"
#include "kernels/robust.h"

typedef struct robust {
  fc_agg base;
  fc_robust_cfg cfg;
  fc_agg_slots pool; /* staging; pool.mu also guards the arena's rows and count */
  float *arena;      /* max_updates rows of n floats: the committed updates, in rows 0..count-1 */
  uint32_t max_updates;
  uint32_t count;
  float *center; /* centered clipping: the last result (starts at 0) */
  char why[200];
} robust;

static const char *const kind_names[] = {"fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan",
                                         "centered_clip"};

const char *fc_robust_name(int kind) {
  return kind >= 0 && kind < (int)(sizeof kind_names / sizeof *kind_names) ? kind_names[kind] : "?";
}

int fc_robust_parse(const char *name) {
  for (int i = 0; i < (int)(sizeof kind_names / sizeof *kind_names); i++)
    if (strcmp(name, kind_names[i]) == 0) return i;
  return -1;
}

const char *fc_robust_check(const fc_robust_cfg *c, uint32_t k, char *buf, size_t len) {
  uint32_t f = c->f;
  switch (c->kind) {
  case FC_AGG_MEDIAN:
    if (k < 1) snprintf(buf, len, "median needs at least 1 update; this round has 0");
    else return NULL;
    return buf;
  case FC_AGG_TRIMMED: {
    uint32_t t = (uint32_t)floor(c->trim * k);
    if (!(c->trim >= 0 && c->trim < 0.5)) snprintf(buf, len, "trimmed mean needs a trim fraction in [0, 0.5), got %g", c->trim);
    else if (k < 1 || 2 * t >= k)
      snprintf(buf, len, "trimmed mean with beta %g trims %u of %u updates from each end: none would be left", c->trim,
               t, k);
    else return NULL;
    return buf;
  }
  case FC_AGG_KRUM:
  case FC_AGG_MULTIKRUM:
    if (k < 2 * f + 3)
      snprintf(buf, len, "%s with f = %u needs n >= 2f + 3 = %u updates; this round has %u", fc_robust_name(c->kind),
               f, 2 * f + 3, k);
    else if (c->kind == FC_AGG_MULTIKRUM && c->m > k)
      snprintf(buf, len, "multikrum averages m = %u updates; this round has %u", c->m, k);
    else return NULL;
    return buf;
  case FC_AGG_BULYAN:
    if (k < 4 * f + 3)
      snprintf(buf, len, "bulyan with f = %u needs n >= 4f + 3 = %u updates; this round has %u", f, 4 * f + 3, k);
    else return NULL;
    return buf;
  case FC_AGG_CCLIP:
    if (!(c->tau > 0 && isfinite(c->tau)) || c->iters < 1)
      snprintf(buf, len, "centered clipping needs a radius tau > 0 and at least 1 iteration");
    else if (k < 1) snprintf(buf, len, "centered clipping needs at least 1 update; this round has 0");
    else return NULL;
    return buf;
  default: snprintf(buf, len, "unknown aggregator %d", c->kind); return buf;
  }
}

uint64_t fc_robust_arena_bytes(size_t n, uint32_t max_updates, int slots) {
  return ((uint64_t)n * max_updates + (uint64_t)n * (uint64_t)slots) * sizeof(float) +
         3ull * max_updates * max_updates * sizeof(double);
}

static int rb_round_begin(fc_agg *a) {
  robust *r = (robust *)a;
  pthread_mutex_lock(&r->pool.mu);
  r->count = 0;
  pthread_mutex_unlock(&r->pool.mu);
  return FEDC_OK;
}

static int rb_update_begin(fc_agg *a, int timeout_ms, fc_agg_update **out) {
  return fc_agg_slots_acquire(&((robust *)a)->pool, timeout_ms, out);
}

static int rb_update_commit(fc_agg *a, fc_agg_update *u, double weight) {
  robust *r = (robust *)a;
  (void)weight; /* every update counts once */
  int rc = FEDC_OK;
  pthread_mutex_lock(&r->pool.mu);
  if (r->count < r->max_updates) memcpy(r->arena + (size_t)r->count++ * a->n, u->buf, a->n * sizeof(float));
  else rc = FEDC_ERR_TOO_LARGE; /* more updates than the arena has rows: never from the engine's cohort */
  fc_agg_slots_release_locked(&r->pool, u);
  pthread_mutex_unlock(&r->pool.mu);
  return rc;
}

static void rb_update_abort(fc_agg *a, fc_agg_update *u) { fc_agg_slots_release(&((robust *)a)->pool, u); }

/* Does (score a, row ia) rank before (score b, row ib)? Finite before
 * non-finite, then the lower score, then the lower row. A bare `<` would let
 * a NaN in the starting position stand: nothing compares below it. */
static int krum_before(double a, uint32_t ia, double b, uint32_t ib) {
  int fa = isfinite(a), fb = isfinite(b);
  if (fa != fb) return fa;
  if (fa && a != b) return a < b;
  return ia < ib;
}

/* Krum scores of the rows in set[0..m): the sum of the m - f - 2 smallest
 * squared distances to the others in the set (a NaN distance counts as
 * +inf, so it is taken last and makes the score non-finite). */
static void krum_scores(const double *D, size_t k, const uint32_t *set, uint32_t m, uint32_t f, double *score,
                        double *tmp) {
  /* Late in Bulyan's selection fewer than f + 3 remain: the nearest one then. */
  uint32_t nn = m > f + 2 ? m - f - 2 : m > 1 ? 1 : 0;
  for (uint32_t a = 0; a < m; a++) {
    uint32_t t = 0;
    for (uint32_t b = 0; b < m; b++)
      if (b != a) {
        double v = D[(size_t)set[a] * k + set[b]];
        tmp[t++] = isnan(v) ? INFINITY : v;
      }
    /* partial selection sort of the nn smallest (m is small) */
    double s = 0;
    for (uint32_t i = 0; i < nn; i++) {
      uint32_t best = i;
      for (uint32_t j = i + 1; j < t; j++)
        if (tmp[j] < tmp[best]) best = j;
      double v = tmp[best];
      tmp[best] = tmp[i];
      tmp[i] = v;
      s += v;
    }
    score[a] = s;
  }
}

static void swap_rows(float *X, size_t d, size_t i, size_t j, float *tmp, size_t tmplen) {
  if (i == j) return;
  float *a = X + i * d, *b = X + j * d;
  for (size_t o = 0; o < d; o += tmplen) {
    size_t w = o + tmplen <= d ? tmplen : d - o;
    memcpy(tmp, a + o, w * sizeof *tmp);
    memcpy(a + o, b + o, w * sizeof *tmp);
    memcpy(b + o, tmp, w * sizeof *tmp);
  }
}

/* Krum-family selection: indices of the chosen rows (by ascending score)
 * into sel. Bulyan picks one at a time, re-scoring the remaining set. */
static int krum_select(robust *r, uint32_t k, uint32_t want, int iterative, uint32_t *sel) {
  size_t d = r->base.n;
  double *D = malloc((size_t)k * k * sizeof *D), *score = malloc(k * sizeof *score), *tmp = malloc(k * sizeof *tmp);
  uint32_t *set = malloc(k * sizeof *set);
  int rc = FEDC_ERR_NOMEM;
  if (!D || !score || !tmp || !set) goto out;
  if ((rc = fc_k_sqdist(r->arena, k, d, d, D)) != FEDC_OK) goto out;
  for (uint32_t i = 0; i < k; i++) set[i] = i;
  uint32_t m = k;
  for (uint32_t got = 0; got < want;) {
    krum_scores(D, k, set, m, r->cfg.f, score, tmp);
    if (!iterative) {
      /* The `want` best at once. */
      for (uint32_t i = 0; i < want; i++) {
        uint32_t best = i;
        for (uint32_t j = i + 1; j < m; j++)
          if (krum_before(score[j], set[j], score[best], set[best])) best = j;
        double sv = score[best];
        uint32_t iv = set[best];
        score[best] = score[i], set[best] = set[i];
        score[i] = sv, set[i] = iv;
        sel[i] = iv;
      }
      break;
    }
    uint32_t best = 0;
    for (uint32_t j = 1; j < m; j++)
      if (krum_before(score[j], set[j], score[best], set[best])) best = j;
    sel[got++] = set[best];
    set[best] = set[--m];
  }
  rc = FEDC_OK;
out:
  free(D);
  free(score);
  free(tmp);
  free(set);
  return rc;
}

static int rb_round_finish(fc_agg *a, float *delta, uint32_t *count) {
  robust *r = (robust *)a;
  size_t d = a->n;
  pthread_mutex_lock(&r->pool.mu);
  uint32_t k = r->count;
  pthread_mutex_unlock(&r->pool.mu);
  const char *bad = fc_robust_check(&r->cfg, k, r->why, sizeof r->why);
  if (bad || k == 0) {
    if (!bad) snprintf(r->why, sizeof r->why, "no update was committed");
    return FEDC_ERR_INVALID;
  }
  int threads = r->cfg.threads > 0 ? r->cfg.threads : 1, rc = FEDC_OK;
  float *X = r->arena;
  uint32_t f = r->cfg.f;
  switch (r->cfg.kind) {
  case FC_AGG_MEDIAN: rc = fc_k_median(X, k, d, d, delta, threads); break;
  case FC_AGG_TRIMMED: rc = fc_k_trimmed_mean(X, k, d, d, (size_t)floor(r->cfg.trim * k), delta, threads); break;
  case FC_AGG_KRUM:
  case FC_AGG_MULTIKRUM: {
    uint32_t m = r->cfg.kind == FC_AGG_KRUM ? 1 : r->cfg.m ? r->cfg.m : k - f;
    uint32_t *sel = malloc(k * sizeof *sel);
    if (!sel) {
      rc = FEDC_ERR_NOMEM;
      break;
    }
    if ((rc = krum_select(r, k, m, 0, sel)) == FEDC_OK) {
      memset(delta, 0, d * sizeof *delta);
      for (uint32_t i = 0; i < m; i++) fc_saxpy((int)d, 1.0f / (float)m, X + (size_t)sel[i] * d, 1, delta, 1);
    }
    free(sel);
    break;
  }
  case FC_AGG_BULYAN: {
    uint32_t theta = k - 2 * f, beta = theta - 2 * f;
    uint32_t *sel = malloc(k * sizeof *sel);
    float *tmp = malloc(4096 * sizeof *tmp);
    if (!sel || !tmp) {
      free(sel);
      free(tmp);
      rc = FEDC_ERR_NOMEM;
      break;
    }
    if ((rc = krum_select(r, k, theta, 1, sel)) == FEDC_OK) {
      /* Bring the selected rows to the top (sel[i] -> row i), then the
       * coordinate step over those theta rows. */
      uint32_t *pos = malloc(k * sizeof *pos), *at = malloc(k * sizeof *at);
      if (!pos || !at) rc = FEDC_ERR_NOMEM;
      for (uint32_t i = 0; rc == FEDC_OK && i < k; i++) pos[i] = at[i] = i; /* pos: row of update i; at: inverse */
      for (uint32_t i = 0; rc == FEDC_OK && i < theta; i++) {
        uint32_t from = pos[sel[i]];
        swap_rows(X, d, i, from, tmp, 4096);
        uint32_t u = at[i];
        at[from] = u, pos[u] = from;
        at[i] = sel[i], pos[sel[i]] = i;
      }
      free(pos);
      free(at);
      if (rc == FEDC_OK) rc = fc_k_median_window(X, theta, d, d, beta, delta, threads);
    }
    free(sel);
    free(tmp);
    break;
  }
  case FC_AGG_CCLIP: {
    float *v = r->center;
    float *acc = malloc(d * sizeof *acc);
    if (!acc) {
      rc = FEDC_ERR_NOMEM;
      break;
    }
    for (uint32_t it = 0; it < r->cfg.iters; it++) {
      memset(acc, 0, d * sizeof *acc);
      for (uint32_t i = 0; i < k; i++) {
        const float *x = X + (size_t)i * d;
        double ss = 0;
        for (size_t j = 0; j < d; j++) {
          double t = (double)x[j] - v[j];
          ss += t * t;
        }
        double norm = sqrt(ss), s = norm > r->cfg.tau ? r->cfg.tau / norm : 1.0;
        float w = (float)(s / k);
        for (size_t j = 0; j < d; j++) acc[j] += w * (x[j] - v[j]);
      }
      fc_saxpy((int)d, 1.0f, acc, 1, v, 1);
    }
    free(acc);
    memcpy(delta, v, d * sizeof *delta);
    break;
  }
  default: rc = FEDC_ERR_INVALID;
  }
  if (rc == FEDC_OK) *count = k;
  else snprintf(r->why, sizeof r->why, "%s failed: %s", fc_robust_name(r->cfg.kind), fedc_strerror(rc));
  return rc;
}

static void rb_close(fc_agg *a) { fc_agg_slots_close(&((robust *)a)->pool); }

static void rb_destroy(fc_agg *a) {
  robust *r = (robust *)a;
  if (!r) return;
  if (r->pool.slots) fc_agg_slots_destroy(&r->pool);
  free(r->arena);
  free(r->center);
  free(r);
}

static const fc_agg_ops robust_ops = {
    .name = "robust",
    .round_begin = rb_round_begin,
    .update_begin = rb_update_begin,
    .update_chunk = fc_agg_slot_chunk_f32,
    .update_check = fc_agg_slot_check_f32,
    .update_commit = rb_update_commit,
    .update_abort = rb_update_abort,
    .round_finish = rb_round_finish,
    .close = rb_close,
    .destroy = rb_destroy,
};

const char *fc_agg_robust_why(fc_agg *a) { return ((robust *)a)->why; }

int fc_agg_robust_create(size_t n, uint32_t max_updates, int slots, const fc_robust_cfg *cfg, fc_agg **out) {
  if (n == 0 || n > (size_t)INT32_MAX || max_updates < 1 || max_updates > 100000 || slots < 1 || !cfg ||
      cfg->kind <= FC_AGG_FEDAVG || cfg->kind > FC_AGG_CCLIP)
    return FEDC_ERR_INVALID;
  robust *r = calloc(1, sizeof *r);
  if (!r) return FEDC_ERR_NOMEM;
  r->base.ops = &robust_ops;
  r->base.n = n;
  r->cfg = *cfg;
  r->max_updates = max_updates;
  r->arena = malloc((size_t)n * max_updates * sizeof *r->arena);
  r->center = cfg->kind == FC_AGG_CCLIP ? calloc(n, sizeof *r->center) : NULL;
  if (!r->arena || (cfg->kind == FC_AGG_CCLIP && !r->center) ||
      fc_agg_slots_init(&r->pool, slots, n * sizeof(float)) != FEDC_OK) {
    rb_destroy(&r->base);
    return FEDC_ERR_NOMEM;
  }
  *out = &r->base;
  return FEDC_OK;
}

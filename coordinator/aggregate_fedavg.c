/*
 * aggregate_fedavg.c - weighted FedAvg as a streaming accumulation.
 *
 * Why staging buffers: an update is only known good once its last chunk has
 * arrived (SHA-256, NaN/Inf, clip norm), and a bad one must leave no trace.
 * So chunks land in one of `slots` staging buffers; a verified update is
 * folded into the accumulator with one saxpy under the accumulator lock and
 * the slot is reused. Memory is (slots + 1) x model, independent of the
 * number of clients; uploads beyond `slots` wait for a free slot.
 *
 * Accumulation is in float32 through BLAS saxpy (the weights are normalized
 * at the end): for <= thousands of updates the rounding is far below the
 * noise of SGD, and saxpy runs at memory speed.
 *
 * Reproducible mode (`--reproducible-sum`, fc_agg_fedavg_create_fixed): a
 * float sum depends on the order of its terms, and uploads arrive in any
 * order, so two runs of one seed drift apart and an aggregator tier's
 * grouping changes the result. Here each weighted value w * x is rounded
 * once to the grid 2^-F (round half to even) and summed in 64-bit integers:
 * integer addition is associative, so the sum, and the model, are the same
 * bits for any arrival order and any split into partial sums (issue 23's
 * bit-identical test). F comes from the clip norm and the weight cap so no
 * sum can overflow (fc_fixed_frac_bits).
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

typedef struct fedavg {
  fc_agg base;
  fc_agg_slots pool; /* pool.mu also guards acc, total_weight, count */
  float *acc;        /* float mode */
  uint64_t *facc;    /* reproducible mode: two's complement int64 sums (unsigned arithmetic wraps, never UB) */
  int frac_bits;     /* F of the grid 2^-F (reproducible mode), else 0 */
  uint64_t wfix;     /* reproducible mode: the total weight on the grid 2^-FIX_WBITS (a double sum of
                      * staleness-scaled weights would depend on their order) */
  double total_weight;
  uint32_t count;
} fedavg;

/* ---- fixed point ---------------------------------------------------------------------
 * Rounding a double v with |v| < 2^51 to the nearest integer (ties to even)
 * by adding 1.5 x 2^52: the sum's low mantissa bits are the integer. One add
 * and one integer subtract per value, the same on every IEEE-754 machine. */
#define FIX_MAGIC 6755399441055744.0 /* 1.5 x 2^52 */
#define FIX_LIMIT 1125899906842624.0 /* 2^50: what fix_round is given stays below it, with room */

static inline uint64_t fix_round(double v) {
  double t = v + FIX_MAGIC;
  uint64_t b, m;
  const double magic = FIX_MAGIC;
  memcpy(&b, &t, sizeof b);
  memcpy(&m, &magic, sizeof m);
  return b - m; /* the integer, two's complement */
}

int fc_fixed_frac_bits(double clip, uint64_t max_weight) {
  /* |w x_i| <= w ||x|| <= max_weight * clip (1 + 1e-4) for every update the
   * checks accept (upload_check.c); under 2^45 each, 65,536 of them stay
   * under 2^61 (FC_FIXED_MAX_TERMS). */
  if (!(clip > 0) || !isfinite(clip) || max_weight < 1) return -1;
  double bound = clip * (1.0 + 1e-4) * (double)max_weight;
  int f = (int)floor(45.0 - log2(bound));
  if (f > 60) f = 60;
  return f < FC_FIXED_MIN_FRAC_BITS ? -1 : f;
}

#define FIX_WBITS 20 /* weights: 2^-20 (1e-6) of an example; max_example_weight <= 2^30 keeps them < 2^50 */

/* Each |x_i| x scale must be under 2^50 (fix_round's range, with room):
 * the checks before a fold keep accepted updates far below (|w x_i| 2^F <
 * 2^45), so a value past it is refused whole, never folded wrong. */
static int fix_fold(uint64_t *acc, const float *x, size_t n, double scale) {
  for (size_t i = 0; i < n; i++)
    if (!(fabs((double)x[i] * scale) < FIX_LIMIT)) return FEDC_ERR_TOO_LARGE; /* NaN too */
  for (size_t i = 0; i < n; i++) acc[i] += fix_round((double)x[i] * scale);
  return FEDC_OK;
}

static int fix_weight(double w, uint64_t *out) {
  double v = ldexp(w, FIX_WBITS);
  if (!(v >= 0 && v < FIX_LIMIT)) return FEDC_ERR_TOO_LARGE;
  *out = fix_round(v);
  return FEDC_OK;
}

static double fix_value(uint64_t v, int frac_bits) { return ldexp((double)(int64_t)v, -frac_bits); }

static uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; k--) v = v << 8 | p[k];
  return v;
}

static int fa_round_begin(fc_agg *a) {
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  if (f->facc) memset(f->facc, 0, f->base.n * sizeof *f->facc);
  else
    memset(f->acc, 0, f->base.n * sizeof *f->acc);
  f->total_weight = 0;
  f->wfix = 0;
  f->count = 0;
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

static int fa_update_begin(fc_agg *a, int timeout_ms, fc_agg_update **out) {
  return fc_agg_slots_acquire(&((fedavg *)a)->pool, timeout_ms, out);
}

static int fa_update_commit(fc_agg *a, fc_agg_update *u, double weight) {
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  uint64_t wq = 0;
  if (f->facc && (f->count >= FC_FIXED_MAX_TERMS || /* the overflow bound: refused, not wrapped */
                  fix_weight(weight, &wq) != FEDC_OK ||
                  fix_fold(f->facc, u->buf, a->n, ldexp(weight, f->frac_bits)) != FEDC_OK)) {
    fc_agg_slots_release_locked(&f->pool, u);
    pthread_mutex_unlock(&f->pool.mu);
    return FEDC_ERR_TOO_LARGE;
  }
  f->wfix += wq;
  if (!f->facc) fc_saxpy((int)a->n, (float)weight, u->buf, 1, f->acc, 1);
  f->total_weight += weight;
  f->count++;
  fc_agg_slots_release_locked(&f->pool, u);
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

static void fa_update_abort(fc_agg *a, fc_agg_update *u) { fc_agg_slots_release(&((fedavg *)a)->pool, u); }

static int fa_round_finish(fc_agg *a, float *delta, uint32_t *count) {
  fedavg *f = (fedavg *)a;
  int rc = FEDC_OK;
  pthread_mutex_lock(&f->pool.mu);
  if (!f->count || !(f->total_weight > 0)) {
    rc = FEDC_ERR_INVALID;
  } else if (f->facc) {
    double inv = 1.0 / ldexp((double)f->wfix, -FIX_WBITS); /* an integer sum: the same in any order */
    for (size_t i = 0; i < a->n; i++) delta[i] = (float)(fix_value(f->facc[i], f->frac_bits) * inv);
    *count = f->count;
  } else {
    memcpy(delta, f->acc, a->n * sizeof *delta);
    fc_sscal((int)a->n, (float)(1.0 / f->total_weight), delta, 1);
    *count = f->count;
  }
  pthread_mutex_unlock(&f->pool.mu);
  return rc;
}

static void fa_close(fc_agg *a) { fc_agg_slots_close(&((fedavg *)a)->pool); }

static void fa_destroy(fc_agg *a) {
  fedavg *f = (fedavg *)a;
  if (!f) return;
  fc_agg_slots_destroy(&f->pool);
  free(f->acc);
  free(f->facc);
  free(f);
}

static const fc_agg_ops fedavg_ops = {
    .name = "fedavg",
    .round_begin = fa_round_begin,
    .update_begin = fa_update_begin,
    .update_chunk = fc_agg_slot_chunk_f32,
    .update_check = fc_agg_slot_check_f32,
    .update_commit = fa_update_commit,
    .update_abort = fa_update_abort,
    .round_finish = fa_round_finish,
    .close = fa_close,
    .destroy = fa_destroy,
};

static int create(size_t n, int slots, int frac_bits, int wide, fc_agg **out) {
  if (n == 0 || n > (size_t)INT32_MAX || slots < 1) return FEDC_ERR_INVALID;
  if (frac_bits && (frac_bits < FC_FIXED_MIN_FRAC_BITS || frac_bits > 60 || n > FC_FIXED_MAX_PARAMS))
    return FEDC_ERR_INVALID;
  fedavg *f = calloc(1, sizeof *f);
  if (!f) return FEDC_ERR_NOMEM;
  f->base.ops = &fedavg_ops;
  f->base.n = n;
  f->frac_bits = frac_bits;
  int prc = fc_agg_slots_init(&f->pool, slots, n * (wide ? 8 : sizeof(float)));
  if (frac_bits) f->facc = calloc(n, sizeof *f->facc);
  else
    f->acc = calloc(n, sizeof *f->acc);
  if ((!f->acc && !f->facc) || prc != FEDC_OK) {
    fa_destroy(&f->base);
    return FEDC_ERR_NOMEM;
  }
  *out = &f->base;
  return FEDC_OK;
}

int fc_agg_fedavg_create(size_t n, int slots, fc_agg **out) { return create(n, slots, 0, 0, out); }

int fc_agg_fedavg_create_fixed(size_t n, int slots, int frac_bits, int wide_slots, fc_agg **out) {
  return frac_bits > 0 ? create(n, slots, frac_bits, wide_slots, out) : FEDC_ERR_INVALID;
}

int fc_agg_fedavg_frac_bits(const fc_agg *a) {
  return a && a->ops == &fedavg_ops ? ((const fedavg *)a)->frac_bits : 0;
}

void fc_fixed_sum_spec(size_t n, fc_model_spec *out) {
  memset(out, 0, sizeof *out);
  out->n = 1;
  snprintf(out->t[0].name, sizeof out->t[0].name, "fixed_sum");
  out->t[0].dtype = FC_DTYPE_U8;
  out->t[0].ndim = 1;
  out->t[0].shape[0] = (uint64_t)n * 8;
}

/* ---- Aggregator tier (issue 23) ----------------------------------------------------
 * An aggregator folds its clients' updates exactly as above and hands the
 * leader the undivided sum sum_k w_k delta_k with sum_k w_k; the leader folds
 * each partial with coefficient 1 and adds its weight and count, so its
 * round_finish divides the sum over every update of every partial by the sum
 * of their weights: the FedAvg formula of one process over the same updates
 * (float32 sums in another order, so equal up to rounding, not bitwise). */
int fc_agg_fedavg_partial(fc_agg *a, float *sum, double *weight, uint32_t *count) {
  if (!a || a->ops != &fedavg_ops || ((fedavg *)a)->facc) return FEDC_ERR_INVALID;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  memcpy(sum, f->acc, a->n * sizeof *sum);
  *weight = f->total_weight;
  *count = f->count;
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

double fc_agg_fedavg_weight(fc_agg *a) {
  if (!a || a->ops != &fedavg_ops) return 0;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  double w = f->total_weight;
  pthread_mutex_unlock(&f->pool.mu);
  return w;
}

uint32_t fc_agg_fedavg_room(fc_agg *a) {
  if (!a || a->ops != &fedavg_ops) return 0;
  fedavg *f = (fedavg *)a;
  if (!f->facc) return UINT32_MAX;
  pthread_mutex_lock(&f->pool.mu);
  uint32_t room = FC_FIXED_MAX_TERMS - f->count;
  pthread_mutex_unlock(&f->pool.mu);
  return room;
}

int fc_agg_fedavg_commit_partial(fc_agg *a, fc_agg_update *u, double weight, uint32_t count) {
  if (!a || a->ops != &fedavg_ops) return FEDC_ERR_INVALID;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  if (!(weight > 0) || !count) { /* the slot goes back whatever the verdict */
    fc_agg_slots_release_locked(&f->pool, u);
    pthread_mutex_unlock(&f->pool.mu);
    return FEDC_ERR_INVALID;
  }
  uint64_t wq = 0;
  if (f->facc && (count > FC_FIXED_MAX_TERMS - f->count || fix_weight(weight, &wq) != FEDC_OK)) {
    fc_agg_slots_release_locked(&f->pool, u);
    pthread_mutex_unlock(&f->pool.mu);
    return FEDC_ERR_TOO_LARGE;
  }
  f->wfix += wq;
  if (f->facc) {
    const uint8_t *p = u->buf;
    for (size_t i = 0; i < a->n; i++) f->facc[i] += load_le64(p + 8 * i);
  } else {
    fc_saxpy((int)a->n, 1.0f, u->buf, 1, f->acc, 1);
  }
  f->total_weight += weight;
  f->count += count;
  fc_agg_slots_release_locked(&f->pool, u);
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

/* ---- Reproducible partials (issue 23 with --reproducible-sum) ---------------------
 * The aggregator's integer sums go to the leader as they are (8 bytes each,
 * little-endian, one U8 tensor: fc_fixed_sum_spec), so the leader's total is
 * the integer sum of every update whatever the grouping. */
int fc_agg_fedavg_partial_fixed(fc_agg *a, uint8_t *out, double *weight, uint32_t *count) {
  if (!a || a->ops != &fedavg_ops || !((fedavg *)a)->facc) return FEDC_ERR_INVALID;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  for (size_t i = 0; i < a->n; i++)
    for (int k = 0; k < 8; k++) out[8 * i + (size_t)k] = (uint8_t)(f->facc[i] >> (8 * k));
  *weight = f->total_weight;
  *count = f->count;
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

int fc_agg_fedavg_fixed_chunk(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len) {
  fedavg *f = (fedavg *)a;
  uint64_t size = (uint64_t)a->n * 8;
  if (a->ops != &fedavg_ops || !f->facc || f->pool.bytes < size) return FEDC_ERR_INVALID;
  if (offset > size || len > size - offset) return FEDC_ERR_TOO_LARGE;
  memcpy((uint8_t *)u->buf + offset, bytes, len);
  return FEDC_OK;
}

int fc_agg_fedavg_fixed_check(fc_agg *a, fc_agg_update *u, fc_agg_check *out) {
  fedavg *f = (fedavg *)a;
  if (a->ops != &fedavg_ops || !f->facc) return FEDC_ERR_INVALID;
  const uint8_t *p = u->buf;
  double sumsq = 0, amax = 0;
  for (size_t i = 0; i < a->n; i++) {
    double v = fabs(fix_value(load_le64(p + 8 * i), f->frac_bits));
    sumsq += v * v;
    if (v > amax) amax = v;
  }
  out->l2 = sqrt(sumsq);
  out->amax = amax;
  out->bad_index = 0;
  return FEDC_OK;
}

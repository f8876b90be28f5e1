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
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "coordinator/agg_slots.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

typedef struct fedavg {
  fc_agg base;
  fc_agg_slots pool; /* pool.mu also guards acc, total_weight, count */
  float *acc;
  double total_weight;
  uint32_t count;
} fedavg;

static int fa_round_begin(fc_agg *a) {
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  memset(f->acc, 0, f->base.n * sizeof *f->acc);
  f->total_weight = 0;
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
  fc_saxpy((int)a->n, (float)weight, u->buf, 1, f->acc, 1);
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

int fc_agg_fedavg_create(size_t n, int slots, fc_agg **out) {
  if (n == 0 || n > (size_t)INT32_MAX || slots < 1) return FEDC_ERR_INVALID;
  fedavg *f = calloc(1, sizeof *f);
  if (!f) return FEDC_ERR_NOMEM;
  f->base.ops = &fedavg_ops;
  f->base.n = n;
  int prc = fc_agg_slots_init(&f->pool, slots, n * sizeof(float));
  f->acc = calloc(n, sizeof *f->acc);
  if (!f->acc || prc != FEDC_OK) {
    fa_destroy(&f->base);
    return FEDC_ERR_NOMEM;
  }
  *out = &f->base;
  return FEDC_OK;
}

/* ---- Aggregator tier (issue 23) ----------------------------------------------------
 * An aggregator folds its clients' updates exactly as above and hands the
 * leader the undivided sum sum_k w_k delta_k with sum_k w_k; the leader folds
 * each partial with coefficient 1 and adds its weight and count, so its
 * round_finish divides the sum over every update of every partial by the sum
 * of their weights: the FedAvg formula of one process over the same updates
 * (float32 sums in another order, so equal up to rounding, not bitwise). */
int fc_agg_fedavg_partial(fc_agg *a, float *sum, double *weight, uint32_t *count) {
  if (!a || a->ops != &fedavg_ops) return FEDC_ERR_INVALID;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  memcpy(sum, f->acc, a->n * sizeof *sum);
  *weight = f->total_weight;
  *count = f->count;
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

int fc_agg_fedavg_commit_partial(fc_agg *a, fc_agg_update *u, double weight, uint32_t count) {
  if (!a || a->ops != &fedavg_ops || !(weight > 0) || !count) return FEDC_ERR_INVALID;
  fedavg *f = (fedavg *)a;
  pthread_mutex_lock(&f->pool.mu);
  fc_saxpy((int)a->n, 1.0f, u->buf, 1, f->acc, 1);
  f->total_weight += weight;
  f->count += count;
  fc_agg_slots_release_locked(&f->pool, u);
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

/*
 * aggregate_secagg.c - the sum of masked inputs for secure aggregation
 * (Bonawitz et al. 2017, round 2 "Server": z = sum of y_u mod R, R = 2^32),
 * then mask removal on worker threads.
 *
 * Masked vectors are uniformly random to us: there is nothing to check in
 * one (no NaN, no norm: clipping is the client's job, and robustness with
 * secure aggregation is bucketing: one sum per bucket, each its own SecAgg
 * instance, and a robust rule over the buckets' means, coord_secagg.c). As with FedAvg, chunks land in
 * one of `slots` staging buffers and a whole, hash-verified upload is added
 * into the one u32 accumulator, so a broken stream leaves no trace (a
 * half-added masked vector could never be taken out again) and memory is
 * (slots + 1) x model for any cohort size.
 *
 * Unmasking: the coordinator hands the (key, sign) terms from
 * secagg_server_unmask.c to fc_agg_secagg_unmask, which splits the vector
 * into one contiguous range per thread; each thread runs the shared
 * expansion (fc_sa_mask_apply: cache-sized blocks, keys in batches of 32)
 * over its range for all terms. Ranges are disjoint: no locks, no atomics.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/agg_slots.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

typedef struct secagg_sum {
  fc_agg base;       /* base.n: entries (model parameters + 1 for the weight) */
  fc_agg_slots pool; /* pool.mu also guards acc and count */
  uint32_t nbuckets;
  uint32_t **acc;    /* nbuckets sums of entries words, one per SecAgg instance, each made at its first use
                        (an aggregator of the tier holds a few of the round's buckets) and freed at round_begin */
  uint32_t *count;   /* nbuckets */
} secagg_sum;

static int sa_round_begin(fc_agg *a) {
  secagg_sum *f = (secagg_sum *)a;
  pthread_mutex_lock(&f->pool.mu);
  for (uint32_t b = 0; b < f->nbuckets; b++) {
    free(f->acc[b]);
    f->acc[b] = NULL;
  }
  memset(f->count, 0, f->nbuckets * sizeof *f->count);
  pthread_mutex_unlock(&f->pool.mu);
  return FEDC_OK;
}

static int sa_update_begin(fc_agg *a, int timeout_ms, fc_agg_update **out) {
  int rc = fc_agg_slots_acquire(&((secagg_sum *)a)->pool, timeout_ms, out);
  if (rc == FEDC_OK) (*out)->bucket = 0;
  return rc;
}

int fc_agg_secagg_route(fc_agg *a, fc_agg_update *u, uint32_t bucket) {
  if (bucket >= ((secagg_sum *)a)->nbuckets) return FEDC_ERR_INVALID;
  u->bucket = bucket;
  return FEDC_OK;
}

static int sa_update_check(fc_agg *a, fc_agg_update *u, fc_agg_check *out) {
  out->l2 = 0;
  out->amax = 0;
  return FEDC_OK;
}

/* Under pool.mu: bucket b's sum, made (zero) at its first use; NULL if out of memory. */
static uint32_t *acc_of(secagg_sum *f, uint32_t b) {
  if (!f->acc[b]) f->acc[b] = calloc(f->base.n, sizeof *f->acc[b]);
  return f->acc[b];
}

int fc_agg_secagg_commit_partial(fc_agg *a, fc_agg_update *u, uint32_t count) {
  secagg_sum *f = (secagg_sum *)a;
  pthread_mutex_lock(&f->pool.mu);
  const uint32_t *x = u->buf;
  uint32_t *acc = acc_of(f, u->bucket);
  if (acc) {
    for (size_t i = 0; i < a->n; i++) acc[i] += x[i]; /* mod 2^32 */
    f->count[u->bucket] += count;
  }
  fc_agg_slots_release_locked(&f->pool, u);
  pthread_mutex_unlock(&f->pool.mu);
  return acc ? FEDC_OK : FEDC_ERR_NOMEM;
}

static int sa_update_commit(fc_agg *a, fc_agg_update *u, double weight) {
  (void)weight; /* the weight is inside the masked vector */
  return fc_agg_secagg_commit_partial(a, u, 1);
}

static void sa_update_abort(fc_agg *a, fc_agg_update *u) { fc_agg_slots_release(&((secagg_sum *)a)->pool, u); }

static int sa_round_finish(fc_agg *a, float *delta, uint32_t *count) {
  return FEDC_ERR_INVALID; /* masked: fc_agg_secagg_unmask, then fc_sa_dequantize */
}

static void sa_close(fc_agg *a) { fc_agg_slots_close(&((secagg_sum *)a)->pool); }

static void sa_destroy(fc_agg *a) {
  secagg_sum *f = (secagg_sum *)a;
  if (!f) return;
  fc_agg_slots_destroy(&f->pool);
  for (uint32_t b = 0; f->acc && b < f->nbuckets; b++) free(f->acc[b]);
  free(f->acc);
  free(f->count);
  free(f);
}

static const fc_agg_ops secagg_ops = {
    .name = "secagg",
    .round_begin = sa_round_begin,
    .update_begin = sa_update_begin,
    .update_chunk = fc_agg_slot_chunk,
    .update_check = sa_update_check,
    .update_commit = sa_update_commit,
    .update_abort = sa_update_abort,
    .round_finish = sa_round_finish,
    .close = sa_close,
    .destroy = sa_destroy,
};

int fc_agg_secagg_create(size_t entries, uint32_t buckets, int slots, fc_agg **out) {
  if (entries == 0 || entries >= UINT32_MAX || slots < 1 || buckets < 1 || buckets > FC_SA_MAX_COHORT)
    return FEDC_ERR_INVALID;
  secagg_sum *f = calloc(1, sizeof *f);
  if (!f) return FEDC_ERR_NOMEM;
  f->base.ops = &secagg_ops;
  f->base.n = entries;
  f->nbuckets = buckets;
  int prc = fc_agg_slots_init(&f->pool, slots, entries * sizeof(uint32_t));
  f->acc = calloc(buckets, sizeof *f->acc);
  f->count = calloc(buckets, sizeof *f->count);
  if (!f->acc || !f->count || prc != FEDC_OK) {
    sa_destroy(&f->base);
    return FEDC_ERR_NOMEM;
  }
  *out = &f->base;
  return FEDC_OK;
}

uint32_t fc_agg_secagg_count(fc_agg *a, uint32_t bucket) {
  secagg_sum *f = (secagg_sum *)a;
  if (bucket >= f->nbuckets) return 0;
  pthread_mutex_lock(&f->pool.mu);
  uint32_t n = f->count[bucket];
  pthread_mutex_unlock(&f->pool.mu);
  return n;
}

uint32_t *fc_agg_secagg_sum(fc_agg *a, uint32_t bucket, uint32_t *count) {
  secagg_sum *f = (secagg_sum *)a;
  if (bucket >= f->nbuckets) return NULL;
  pthread_mutex_lock(&f->pool.mu);
  if (count) *count = f->count[bucket];
  uint32_t *acc = acc_of(f, bucket);
  pthread_mutex_unlock(&f->pool.mu);
  return acc;
}

typedef struct unmask_job {
  const fc_prg_ops *prg;
  uint32_t *vec;
  uint64_t first;
  size_t len;
  const fc_sa_mask_term *terms;
  size_t nterms;
  const volatile int *abort;
  int rc;
} unmask_job;

static void *unmask_worker(void *arg) {
  unmask_job *j = arg;
  j->rc = fc_sa_mask_apply(j->prg, j->vec + j->first, j->first, j->len, j->terms, j->nterms, j->abort);
  return NULL;
}

int fc_agg_secagg_unmask(fc_agg *a, uint32_t bucket, const fc_prg_ops *prg, const fc_sa_mask_term *terms,
                         size_t nterms, int threads, const volatile int *abort) {
  secagg_sum *f = (secagg_sum *)a;
  if (bucket >= f->nbuckets) return FEDC_ERR_INVALID;
  pthread_mutex_lock(&f->pool.mu);
  uint32_t *acc = acc_of(f, bucket);
  pthread_mutex_unlock(&f->pool.mu);
  if (!acc) return FEDC_ERR_NOMEM;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  unmask_job jobs[64];
  pthread_t tid[64];
  int started[64] = {0};
  /* Ranges start on 16-byte keystream blocks (4 entries) so no block is
   * split; the last range runs to the end whatever the rounding. */
  size_t per = ((a->n + (size_t)threads - 1) / (size_t)threads + 3) & ~(size_t)3;
  int rc = FEDC_OK;
  for (int i = 0; i < threads; i++) {
    size_t lo = per * (size_t)i, hi = i + 1 == threads || lo + per > a->n ? a->n : lo + per;
    if (lo > a->n) lo = a->n;
    jobs[i] = (unmask_job){prg, acc, lo, lo < hi ? hi - lo : 0, terms, nterms, abort, FEDC_OK};
    if (!jobs[i].len) continue;
    if (i + 1 < threads && jobs[i].len && pthread_create(&tid[i], NULL, unmask_worker, &jobs[i]) == 0) {
      started[i] = 1;
    } else {
      unmask_worker(&jobs[i]); /* the last range (or a failed spawn) on this thread */
    }
  }
  for (int i = 0; i < threads; i++) {
    if (started[i]) pthread_join(tid[i], NULL);
    if (jobs[i].rc != FEDC_OK && rc == FEDC_OK) rc = jobs[i].rc;
  }
  return rc;
}

/*
 * coord_sa_finish.c - the end of a secure-aggregation round in the running
 * coordinator: the secrets of every live instance rebuilt (Shamir, under
 * c->mu), the masks removed from each instance's sum (Bonawitz et al. 2017,
 * round 4 "Unmasking"; Bell et al. 2020 for the sparse graphs), the sum
 * decoded, and the result checked before anything is published:
 *   - one instance: weights as the quantization allows, through the
 *     aggregator tier a mean clipped inputs can have (sa_tier_sane), under
 *     distributed DP the survivors the noise needs (sa_dp_check);
 *   - buckets: each bucket's mean checked (sa_bucket_sane) and fed to the
 *     robust rule as one update; a bucket that fails is dropped alone while
 *     the rule can take the buckets left.
 * Split from coord_secagg.c, which owns the sessions and their stages.
 *
 * May call: the SecAgg core (secagg_server.h), the aggregators
 * (aggregate.h, agg_slots.h), the engine's counts, the anomaly detector's
 * bucket hook, and coord_secagg.c's bucket bookkeeping (coord_int.h), with
 * c->mu as each says. Does no I/O but logging.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/agg_slots.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "crypto/sa_crypto.h"
#include "secagg/params.h"
#include "fedc/error.h"

#define MOD "secagg"

/* Where every weight is 1 (distributed DP, buckets, a narrow ring): a sum of weights that
 * is not the number of inputs means a client lied about its weight (and
 * under DP would fake survivors). */
static int sa_weights_one(uint32_t count, uint64_t total, char *why, size_t whylen) {
  if (total == count) return FEDC_OK;
  snprintf(why, whylen, "unmasked weights sum to %llu for %u inputs (each must be 1): a client (or an aggregator of the tier) sent a malformed input",
           (unsigned long long)total, count);
  return FEDC_ERR_REJECTED;
}

/* One bucket's unmasked, decoded mean into `delta`; *count inputs, *total weight. */
static int sa_unmask_one(fc_coord *c, uint32_t b, const fc_sa_params *p, fc_sa_mask_term *terms, size_t nterms,
                         float *delta, uint32_t *count, uint64_t *total, char *why, size_t whylen) {
  uint64_t t0 = fc_now_ms();
  int rc = fc_agg_secagg_unmask(c->agg, b, NULL, terms, nterms, c->cfg.unmask_threads > 0 ? c->cfg.unmask_threads : 2,
                                &c->sa_abort);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "unmasking stopped: %s", fedc_strerror(rc));
    return rc;
  }
  uint32_t *sum = fc_agg_secagg_sum(c->agg, b, count);
  *total = 0;
  fc_sa_ring_reduce(sum, p->dim, p->quant_bits ? p->ring_bits : 0); /* 1.9: the sum lives mod 2^ring_bits */
  if (fc_sa_dequantize(sum, p->dim, fc_sa_params_scale(p), (uint64_t)p->n * p->max_weight, delta, total) != FEDC_OK) {
    snprintf(why, whylen, "unmasked sum is inconsistent (total weight %u): a client (or an aggregator of the tier) sent a malformed input",
             sum[p->dim]);
    return FEDC_ERR_REJECTED;
  }
  if (p->quant_bits && sa_weights_one(*count, *total, why, whylen) != FEDC_OK) /* narrow ring: every weight is 1 */
    return FEDC_ERR_REJECTED;
  char who[32] = "";
  if (c->nsa > 1) snprintf(who, sizeof who, "bucket %u: ", b + 1);
  fc_log(c->nsa == 1 ? FC_LOG_INFO : FC_LOG_DEBUG, MOD,
         "round %llu: %sunmasked %u inputs (%zu masks removed in %llu ms), total weight %llu", (unsigned long long)p->round,
         who, *count, nterms, (unsigned long long)(fc_now_ms() - t0), (unsigned long long)*total);
  return FEDC_OK;
}

/* A bucket's mean must be one a bucket of clipped inputs can have: each
 * weight 1 (so total == count), and ||mean|| <= C plus what stochastic
 * rounding adds (under 1 per coordinate per input: sqrt(dim) / scale on the
 * mean). An input outside the clip (a client that does not run our
 * pipeline can put any value in the field) spoils only its own bucket and is
 * caught here when it pushes the mean past the clip. */
static int sa_bucket_sane(const fc_sa_params *p, const float *mean, uint32_t count, uint64_t total, char *why,
                          size_t whylen) {
  if (sa_weights_one(count, total, why, whylen) != FEDC_OK) return FEDC_ERR_REJECTED;
  fc_agg_check chk;
  if (fc_agg_check_f32(mean, p->dim, &chk) != FEDC_OK) {
    snprintf(why, whylen, "unmasked mean has NaN/Inf");
    return FEDC_ERR_REJECTED;
  }
  double bound = ((double)p->clip + sqrt((double)p->dim) / fc_sa_params_scale(p)) * (1 + 1e-4);
  if (chk.l2 > bound) {
    snprintf(why, whylen, "the mean of its %u inputs has L2 norm %.4g, over the clip %.4g: a client sent an input "
                          "outside the clip", count, chk.l2, (double)p->clip);
    return FEDC_ERR_REJECTED;
  }
  return FEDC_OK;
}

/* Through the aggregator tier (one instance): the unmasked weighted mean
 * must be one that clipped inputs can have, as a bucket's must
 * (sa_bucket_sane): each weight in [1, max_weight], and ||mean|| <= C plus
 * what the rounding adds (each input's rounding moves each coordinate of
 * the sum by < 1: sqrt(dim) x count / (scale x W) on the mean). An
 * aggregator adds its partial sums unseen; one that adds a vector of its own
 * would otherwise publish it (docs/design.md). Under distributed DP the
 * bound widens by the summed noise's norm with a tail no honest round
 * reaches: each of `total` clients adds discrete Gaussian noise of sigma
 * dp_sigma (ring units) to each coordinate, sub-Gaussian with that
 * parameter (Canonne, Kamath, Steinke 2020), so the sum's noise vector has
 * norm <= sigma sqrt(total) (sqrt(dim) + t) but with probability about
 * exp(-t^2 / 2) (Gaussian concentration of the norm, a 1-Lipschitz
 * function); here 1.1 sqrt(dim) + 12, far past that (a hostile review found
 * the check skipped under DP: a lying aggregator's 2^30 per word
 * published). A shift within the noise's own size still passes: DP's noise
 * hides it as it hides an honest update. Not without a clip. */
static int sa_tier_sane(const fc_sa_params *p, const float *mean, uint32_t count, uint64_t total, char *why,
                        size_t whylen) {
  if (total < count || total > (uint64_t)count * p->max_weight) {
    snprintf(why, whylen, "unmasked weights sum to %llu for %u inputs (each in [1, %llu]): a client or an aggregator "
                          "sent a malformed input", (unsigned long long)total, count,
             (unsigned long long)p->max_weight);
    return FEDC_ERR_REJECTED;
  }
  if (!(p->clip > 0)) return FEDC_OK;
  fc_agg_check chk;
  if (fc_agg_check_f32(mean, p->dim, &chk) != FEDC_OK) {
    snprintf(why, whylen, "unmasked mean has NaN/Inf");
    return FEDC_ERR_REJECTED;
  }
  double scale_w = fc_sa_params_scale(p) * (double)total;
  double noise = p->dp_sigma > 0 ? p->dp_sigma * sqrt((double)total) * (1.1 * sqrt((double)p->dim) + 12.0) / scale_w : 0;
  double bound = ((double)p->clip + sqrt((double)p->dim) * count / scale_w + noise) * (1 + 1e-4);
  if (chk.l2 > bound) {
    char plus[80] = "";
    if (noise > 0) snprintf(plus, sizeof plus, " plus the privacy noise's bound %.4g", noise);
    snprintf(why, whylen, "the weighted mean of %u inputs has L2 norm %.4g, over the clip %.4g%s: a client or an "
                          "aggregator sent an input outside the clip", count, chk.l2, (double)p->clip, plus);
    return FEDC_ERR_REJECTED;
  }
  return FEDC_OK;
}

/* Secure aggregation with a robust rule: each live bucket's mean goes into
 * the robust aggregator as one update (unweighted, as the rules are), and
 * its result is the round's delta. A bucket whose secrets cannot be rebuilt,
 * whose sum is malformed or whose mean is impossible is dropped like one that
 * lost its threshold. Runs without c->mu: the driver is the only thread that
 * changes c->sa, c->sa_dead, c->nsa and c->bagg; sa_dead is written under mu. */
static int sa_finish_buckets(fc_coord *c, fc_sa_mask_term **terms, size_t *nterms, const fc_sa_params *ps,
                             float *delta, uint32_t *count, uint64_t *total, char *why, size_t whylen) {
  char bwhy[300];
  size_t dim = ps[0].dim;
  *count = 0;
  *total = 0;
  c->bagg->ops->round_begin(c->bagg);
  for (uint32_t b = 0; b < c->nsa; b++) {
    if (c->sa_dead[b]) continue;
    uint32_t cnt = 0;
    uint64_t tot = 0;
    int rc = sa_unmask_one(c, b, &ps[b], terms[b], nterms[b], delta, &cnt, &tot, bwhy, sizeof bwhy);
    if (rc == FEDC_ERR_STOPPED || rc == FEDC_ERR_NOMEM) {
      snprintf(why, whylen, "%s", bwhy);
      return rc;
    }
    if (rc == FEDC_OK) rc = sa_bucket_sane(&ps[b], delta, cnt, tot, bwhy, sizeof bwhy);
    if (rc != FEDC_OK) {
      pthread_mutex_lock(&c->mu);
      coord_sa_drop_bucket(c, b, FC_SA_UNMASK, bwhy, why, whylen);
      rc = coord_sa_buckets_enough(c, FC_SA_UNMASK, why, whylen);
      pthread_mutex_unlock(&c->mu);
      if (rc != FEDC_OK) return rc;
      continue;
    }
    fc_agg_update *u = NULL;
    fc_agg_check chk;
    if ((rc = c->bagg->ops->update_begin(c->bagg, 1000, &u)) != FEDC_OK) {
      snprintf(why, whylen, "bucket %u's mean could not be staged: %s", b + 1, fedc_strerror(rc));
      return rc;
    }
    if ((rc = c->bagg->ops->update_chunk(c->bagg, u, 0, delta, dim * sizeof *delta)) != FEDC_OK ||
        (rc = c->bagg->ops->update_check(c->bagg, u, &chk)) != FEDC_OK) {
      c->bagg->ops->update_abort(c->bagg, u);
      snprintf(why, whylen, "bucket %u's mean could not be aggregated: %s", b + 1, fedc_strerror(rc));
      return FEDC_ERR_INTERNAL;
    }
    coord_anomaly_bucket(c, u, chk.l2, b); /* each bucket's result is what the coordinator may see */
    if ((rc = c->bagg->ops->update_commit(c->bagg, u, 1.0)) != FEDC_OK) { /* the slot is released either way */
      snprintf(why, whylen, "bucket %u's mean could not be aggregated: %s", b + 1, fedc_strerror(rc));
      return rc;
    }
    *count += cnt;
    *total += tot;
  }
  uint32_t used = 0;
  if (*count < c->cfg.engine.min_updates) {
    snprintf(why, whylen, "secure aggregation buckets: %u masked inputs in the %u buckets left (min_updates %u)",
             *count, coord_sa_live(c), c->cfg.engine.min_updates);
    return FEDC_ERR_REJECTED;
  }
  if (c->bagg->ops->round_finish(c->bagg, delta, &used) != FEDC_OK) {
    snprintf(why, whylen, "secure aggregation buckets: %s", fc_agg_robust_why(c->bagg));
    return FEDC_ERR_REJECTED;
  }
  FC_INFO(MOD, "round %llu: %s over %u bucket means (%u masked inputs, %u of %u buckets)",
          (unsigned long long)ps[0].round, c->cfg.aggregator, used, *count, coord_sa_live(c), c->nsa);
  return FEDC_OK;
}

/* Distributed DP: the round publishes only with the noise it promised. */
static int sa_dp_check(fc_coord *c, const fc_sa_params *p, uint32_t count, uint64_t total, char *why,
                       size_t whylen) {
  if (count < c->cfg.engine.min_updates) {
    snprintf(why, whylen, "%u masked inputs survived; the clients' privacy noise needs %u", count,
             c->cfg.engine.min_updates);
    return FEDC_ERR_REJECTED;
  }
  if (sa_weights_one(count, total, why, whylen) != FEDC_OK) return FEDC_ERR_REJECTED;
  double delta_int = fc_sa_dp_sensitivity(p->clip, fc_sa_params_scale(p), p->dim);
  FC_INFO(MOD, "round %llu: distributed DP: %llu survivors added noise multiplier %.4g to the sum (at least %.4g "
               "needed, from %u survivors)",
          (unsigned long long)p->round, (unsigned long long)total, p->dp_sigma * sqrt((double)total) / delta_int,
          p->dp_sigma * sqrt((double)c->cfg.engine.min_updates) / delta_int, c->cfg.engine.min_updates);
  return FEDC_OK;
}

int coord_sa_finish(fc_coord *c, float *delta, uint32_t *count, char *why, size_t whylen) {
  pthread_mutex_lock(&c->mu);
  uint32_t nb = c->nsa;
  if (!nb) {
    pthread_mutex_unlock(&c->mu);
    snprintf(why, whylen, "secure aggregation session missing");
    return FEDC_ERR_INTERNAL;
  }
  fc_sa_mask_term **terms = calloc(nb, sizeof *terms);
  size_t *nterms = calloc(nb, sizeof *nterms);
  fc_sa_params *ps = calloc(nb, sizeof *ps);
  int rc = terms && nterms && ps ? FEDC_OK : FEDC_ERR_NOMEM;
  if (rc != FEDC_OK) snprintf(why, whylen, "secure aggregation: out of memory");
  /* The secrets of every live bucket, rebuilt under the lock (Shamir). */
  for (uint32_t b = 0; rc == FEDC_OK && b < nb; b++) {
    char bwhy[300];
    ps[b] = *fc_sa_server_params(c->sa[b]);
    if (c->sa_dead[b]) continue;
    int brc = fc_sa_server_unmask_terms(c->sa[b], &terms[b], &nterms[b], bwhy, sizeof bwhy);
    if (brc == FEDC_ERR_NOMEM) {
      rc = brc;
      snprintf(why, whylen, "%s", bwhy);
    } else if (brc != FEDC_OK) {
      /* Bad shares, a secret that fails its check, a key that cannot agree
       * (a member's crafted public key): that bucket alone. */
      coord_sa_drop_bucket(c, b, FC_SA_UNMASK, bwhy, why, whylen);
      rc = coord_sa_buckets_enough(c, FC_SA_UNMASK, why, whylen);
    }
  }
  coord_sa_blame_locked(c); /* who sent bad unmask shares (coord_sa_blame.c) */
  pthread_mutex_unlock(&c->mu);
  uint64_t total = 0;
  if (rc == FEDC_OK && c->bagg) {
    rc = sa_finish_buckets(c, terms, nterms, ps, delta, count, &total, why, whylen);
  } else if (rc == FEDC_OK) {
    const fc_sa_params *p = &ps[0];
    rc = sa_unmask_one(c, 0, p, terms[0], nterms[0], delta, count, &total, why, whylen);
    if (rc == FEDC_OK && c->tier) rc = sa_tier_sane(p, delta, *count, total, why, whylen);
    if (rc == FEDC_OK && p->dp_sigma > 0) rc = sa_dp_check(c, p, *count, total, why, whylen);
  }
  for (uint32_t b = 0; terms && b < nb; b++) {
    if (!terms[b]) continue;
    fc_wipe(terms[b], nterms[b] * sizeof *terms[b]);
    free(terms[b]);
  }
  free(terms);
  free(nterms);
  if (rc == FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    fc_engine_set_examples(c->engine, total);
    if (c->bagg) fc_engine_set_counted(c->engine, *count);
    /* The noisy centred count of unclipped updates (adaptive clipping). */
    if (ps[0].bit_scale) {
      const uint32_t *sum = fc_agg_secagg_sum(c->agg, 0, NULL);
      c->dp_sa_centred = sum ? (double)(int32_t)sum[ps[0].dim + 1] / (2.0 * ps[0].bit_scale) : 0;
    }
    pthread_mutex_unlock(&c->mu);
  }
  free(ps);
  return rc;
}
